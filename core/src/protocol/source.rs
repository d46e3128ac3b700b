//! The sending side of a relocation session.

use super::error::{AbortReason, Detail, Error, Limit, RefuseReason};
use super::msg::{
    self, Admit, Features, Hello, ImageEnd, Msg, RoundEnd, FRAME_HEADER_LEN, IMAGE_HEADER_MAX,
    MAGIC, MAX_CONTROL_FRAME_LEN, MAX_GUEST_CONFIG_LEN, MAX_NAME_LEN,
};
use super::{Timeouts, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use crate::guest::{GuestInfo, GuestType, SchedParams};
use crate::precopy::PrecopyStats;
use crate::time::Instant;
use heapless::{Deque, String};

/// What the source says about the guest it wants to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDesc {
    /// Domain name (at most [`MAX_NAME_LEN`] bytes).
    pub name: String<MAX_NAME_LEN>,
    /// Domain UUID.
    pub uuid: [u8; 16],
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Shape from [`crate::guest::SourceGuest::info`].
    pub info: GuestInfo,
}

impl GuestDesc {
    /// A description from the guest's name, UUID and shape; the memory is
    /// `info.nr_pages` pages. Fails if the name is longer than
    /// [`MAX_NAME_LEN`].
    pub fn new(name: &str, uuid: [u8; 16], info: GuestInfo) -> Result<Self, Error> {
        let name = String::try_from(name).map_err(|_| Error::LimitExceeded(Limit::NameTooLong))?;
        Ok(GuestDesc {
            name,
            uuid,
            memory_bytes: info.nr_pages.saturating_mul(crate::guest::PAGE_SIZE as u64),
            info,
        })
    }
}

/// The source's settings for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// A session identifier unique on this host (the host picks it, e.g.
    /// random); it names the session in both journals.
    pub session: u64,
    /// Live or offline.
    pub live: bool,
    /// Features offered.
    pub features: Features,
    /// Timeouts for the waits on the destination.
    pub timeouts: Timeouts,
    /// The guest.
    pub guest: GuestDesc,
    /// The guest's device configuration the host holds for the
    /// destination, if any ([`Msg::GuestConfig`]).
    pub guest_config: Option<ConfigOffer>,
}

/// The device configuration a source holds for its guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigOffer {
    /// Its length in bytes (at most [`MAX_GUEST_CONFIG_LEN`]).
    pub len: usize,
    /// Whether the guest cannot run without it (it has devices): a
    /// destination without [`Features::GUEST_CONFIG`] is then not used
    /// ([`Error::MissingFeature`]); otherwise the configuration goes only
    /// where it is understood.
    pub required: bool,
}

/// How a source session ended, and what the host must do with its guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceOutcome {
    /// The destination runs the guest. Destroy the local copy (it is
    /// suspended), then journal "done".
    Migrated,
    /// The guest stays here. If a commit record was journaled for this
    /// session, journal "aborted" (fsync) first; then resume the guest if it
    /// was paused or suspended, and stop the dirty log.
    Aborted(Error),
    /// The commit was announced but its acknowledgement never came: the
    /// destination may or may not run the guest. Keep the local copy
    /// suspended, report the domain "in doubt", and wait for the operator's
    /// `resolve --resume|--discard`.
    InDoubt(Error),
}

/// What the host must do next for a source session (from
/// [`Source::poll_action`]).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceAction {
    /// The destination admitted the guest: start sending the image. Live:
    /// enable the dirty log and run pre-copy rounds, calling
    /// [`Source::handle_round_end`] after each and
    /// [`Source::handle_suspended`] once the guest is suspended. Offline:
    /// suspend the guest first (and call `handle_suspended`), then send
    /// every page. In both cases end with [`Source::handle_image_end`].
    StartTransfer {
        /// Whether pre-copy rounds run.
        live: bool,
    },
    /// The destination holds a complete paused copy. Write the commit
    /// record `{session, domain}` to the journal and fsync it, then call
    /// [`Source::handle_journaled`] (or `handle_journal_failed`). This is
    /// the point of no return.
    JournalCommit {
        /// The session to journal.
        session: u64,
    },
    /// Send the guest's configuration: write the frame of
    /// `Msg::GuestConfig(bytes)` ([`msg::encode`] into a buffer of
    /// [`msg::MAX_GUEST_CONFIG_FRAME_LEN`] + 4 bytes), then call
    /// [`Source::handle_guest_config_sent`]; the admission request follows.
    SendGuestConfig,
    /// The session is over; see [`SourceOutcome`].
    Finished(SourceOutcome),
}

/// Control messages the source queues; built into frames in
/// `poll_transmit`. An `Abort`'s detail is the machine's `out_detail` (a
/// session sends at most one `Abort`, its last frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Hello,
    Admit,
    RoundEnd(RoundEnd),
    Suspended,
    ImageEnd(ImageEnd),
    Commit,
    Abort(AbortReason),
    Sched(msg::Sched),
}

/// Data of a session before the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    deadline: Instant,
    /// The host is sending the guest's configuration; `Admit` waits.
    config_pending: bool,
}

/// Data of a session while the image flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transfer {
    /// Protocol version agreed.
    pub version: u16,
    /// Features agreed.
    pub features: Features,
    /// Image chunks sent.
    pub chunks: u64,
    /// Image payload bytes sent.
    pub bytes: u64,
    /// Live rounds reported.
    pub rounds: u32,
    /// Whether the guest has been suspended.
    pub suspended: bool,
}

/// The source's states; each holds what is valid in it.
///
/// ```mermaid
/// stateDiagram-v2
///     [*] --> AwaitHelloAck: new (Hello queued)
///     AwaitHelloAck --> AwaitAdmission: HelloAck (Admit queued, or SendGuestConfig and Admit after handle_guest_config_sent)
///     AwaitHelloAck --> Finished: HelloAck without GUEST_CONFIG for a guest that needs it / Aborted (MissingFeature)
///     AwaitAdmission --> Transferring: Admitted / StartTransfer
///     Transferring --> Transferring: image chunk, handle_round_end, handle_suspended
///     Transferring --> AwaitPrepared: handle_image_end (ImageEnd queued)
///     AwaitPrepared --> Journaling: Prepared / JournalCommit
///     Journaling --> Committing: handle_journaled (Commit queued)
///     Committing --> Finished: Committed / Migrated
///     AwaitHelloAck --> Finished: VersionRefused, failure / Aborted
///     AwaitAdmission --> Finished: Refused, failure / Aborted
///     Transferring --> Finished: failure, abort() / Aborted
///     AwaitPrepared --> Finished: failure, abort() / Aborted
///     Journaling --> Finished: failure, journal failed / Aborted
///     Committing --> Finished: failure before Commit left / Aborted
///     Committing --> Finished: failure after Commit left / InDoubt
///     Committing --> Finished: Abort from destination / Aborted
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Hello sent, waiting for the destination's answer.
    AwaitHelloAck(Handshake),
    /// Admission asked, waiting for the answer.
    AwaitAdmission(Handshake, Transfer),
    /// The host sends the image.
    Transferring(Transfer),
    /// Image sent, waiting for `Prepared`.
    AwaitPrepared(Transfer, Instant),
    /// Waiting for the host to journal the commit.
    Journaling(Transfer),
    /// Commit journaled; `Commit` queued (`sent == false`) or handed to the
    /// host (`sent == true`), waiting for `Committed`.
    Committing {
        /// The transfer's figures.
        transfer: Transfer,
        /// Whether `poll_transmit` has returned the `Commit` frame.
        sent: bool,
        /// When to give up waiting.
        deadline: Instant,
    },
    /// Over.
    Finished(SourceOutcome),
}

impl SourceState {
    /// A short name for logs and errors.
    pub const fn name(&self) -> &'static str {
        match self {
            SourceState::AwaitHelloAck(_) => "AwaitHelloAck",
            SourceState::AwaitAdmission(..) => "AwaitAdmission",
            SourceState::Transferring(_) => "Transferring",
            SourceState::AwaitPrepared(..) => "AwaitPrepared",
            SourceState::Journaling(_) => "Journaling",
            SourceState::Committing { .. } => "Committing",
            SourceState::Finished(_) => "Finished",
        }
    }
}

/// One input to the source state machine.
#[derive(Debug, Clone, Copy)]
enum Input<'a> {
    Msg(Msg<'a>),
    ConfigSent,
    RoundEnd(&'a PrecopyStats),
    Sched(SchedParams),
    Suspended,
    ImageEnd,
    Journaled,
    JournalFailed(&'a str),
    Abort(msg::Abort<'a>),
}

impl Input<'_> {
    const fn name(&self) -> &'static str {
        match self {
            Input::Msg(m) => m.name(),
            Input::ConfigSent => "handle_guest_config_sent",
            Input::RoundEnd(_) => "handle_round_end",
            Input::Sched(_) => "handle_sched",
            Input::Suspended => "handle_suspended",
            Input::ImageEnd => "handle_image_end",
            Input::Journaled => "handle_journaled",
            Input::JournalFailed(_) => "handle_journal_failed",
            Input::Abort(_) => "abort",
        }
    }

    /// Whether the input came from the peer (errors then end the session).
    const fn is_from_peer(&self) -> bool {
        matches!(self, Input::Msg(_))
    }
}

/// The sending side of a relocation session, as a sans-IO state machine.
///
/// # Call contract
///
/// The host owns the connection, the clock, the journal and the guest.
///
/// 1. [`Source::new`] queues the hello. Then, in a loop until
///    [`SourceAction::Finished`] has been returned:
/// 2. Drain [`poll_transmit`](Self::poll_transmit) into the connection
///    (each call yields one whole frame) — always before writing an image
///    chunk, so markers stay in order.
/// 3. Drain [`poll_action`](Self::poll_action) and carry each action out.
/// 4. Read frames from the destination, also during the transfer (it may
///    abort): 4 header bytes → [`frame_len`](Self::frame_len) → body →
///    [`handle_frame`](Self::handle_frame).
/// 5. Report the connection's failure (EOF, reset, read or write timeout)
///    with [`handle_link_error`](Self::handle_link_error) (or
///    [`handle_transmit_failed`](Self::handle_transmit_failed) when the
///    write of the last polled frame failed before any of it was
///    accepted), and wake up at
///    [`poll_timeout`](Self::poll_timeout) to call
///    [`handle_timeout`](Self::handle_timeout).
/// 6. While transferring, send each image chunk as
///    [`image_chunk_header`](Self::image_chunk_header) followed by the
///    payload, and report round ends, the suspend and the image end.
///
/// An `Err` from a `handle_*` method that was caused by the peer or the
/// link has already moved the machine to `Finished`; an `Err` for a host
/// call out of order leaves the state as it was. Either way the session is
/// over only when `poll_action` has returned [`SourceAction::Finished`]:
/// keep draining actions (and `poll_transmit`, for a last `Abort`) until
/// then, and carry out the outcome.
///
/// While the image flows the source waits on nothing, so it has no
/// deadline of its own then: a destination that stops reading shows up as
/// the host's write timeout (one deadline per frame), reported with
/// `handle_link_error`.
///
/// When the destination refused or aborted, the outcome's error holds its
/// typed reason and [`peer_detail`](Self::peer_detail) the text it gave
/// for its operator.
#[derive(Debug)]
pub struct Source {
    state: SourceState,
    config: SourceConfig,
    outbox: Deque<Out, 8>,
    actions: Deque<SourceAction, 4>,
    /// The last frame `poll_transmit` returned.
    last_tx: Option<Out>,
    /// The detail of the `Abort` we send.
    out_detail: Detail,
    /// The detail of the destination's `Refused` or `Abort` that ended
    /// the session.
    peer_detail: Detail,
}

impl Source {
    /// Starts a session at `now`: the hello is queued.
    pub fn new(config: SourceConfig, now: Instant) -> Self {
        let mut outbox = Deque::new();
        let _ = outbox.push_back(Out::Hello);
        Source {
            state: SourceState::AwaitHelloAck(Handshake {
                deadline: now + config.timeouts.handshake,
                config_pending: false,
            }),
            config,
            outbox,
            actions: Deque::new(),
            last_tx: None,
            out_detail: Detail::empty(),
            peer_detail: Detail::empty(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &SourceState {
        &self.state
    }

    /// The current state's name.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// The session identifier.
    pub fn session(&self) -> u64 {
        self.config.session
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<SourceOutcome> {
        match self.state {
            SourceState::Finished(o) => Some(o),
            _ => None,
        }
    }

    /// What the destination said about the refusal or abort that ended
    /// the session (its `Refused` or `Abort` detail; empty when it gave
    /// none, or when the session did not end that way). The outcome's
    /// [`Error::Refused`]/[`Error::Aborted`] holds the typed reason.
    pub fn peer_detail(&self) -> &str {
        self.peer_detail.as_str()
    }

    /// The largest frame body accepted from the destination (it only sends
    /// control messages).
    pub fn max_frame_len(&self) -> usize {
        MAX_CONTROL_FRAME_LEN
    }

    /// Checks a frame header from the destination. On error the session
    /// has failed (or, once `Commit` has left, keeps waiting); either way
    /// the byte stream can no longer be trusted: close the connection and
    /// report [`handle_link_error`](Self::handle_link_error).
    ///
    /// The destination's first frame is checked before its length is
    /// trusted ([`msg::first_frame_len`]): a peer that is not relocd (an
    /// HTTP server answering `HTTP/1.1 400`) ends the session with
    /// [`Error::NotRelocd`], and no `Abort` is sent to it.
    pub fn frame_len(
        &mut self,
        now: Instant,
        header: [u8; FRAME_HEADER_LEN],
    ) -> Result<usize, Error> {
        let r = match self.state {
            SourceState::AwaitHelloAck(_) => msg::first_frame_len(header),
            _ => msg::frame_len(header, self.max_frame_len()),
        };
        r.inspect_err(|e| {
            let stranger = matches!(e, Error::NotRelocd { .. });
            self.fail(now, *e, !stranger)
        })
    }

    /// The next frame to send, written into `buf` (at least
    /// [`MAX_CONTROL_FRAME_LEN`] + 4 bytes); returns its length.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        let Some(out) = self.outbox.front().copied() else {
            return Ok(None);
        };
        let g = &self.config.guest;
        let m = match out {
            Out::Hello => Msg::Hello(Hello {
                magic: MAGIC,
                min_version: PROTOCOL_VERSION_MIN,
                max_version: PROTOCOL_VERSION,
                features: self.config.features,
            }),
            Out::Admit => Msg::Admit(Admit {
                session: self.config.session,
                name: g.name.as_str(),
                uuid: g.uuid,
                memory_bytes: g.memory_bytes,
                p2m_size: g.info.p2m_size,
                vcpus: g.info.vcpus,
                guest_type: match g.info.guest_type {
                    GuestType::Pv => 1,
                    GuestType::Hvm => 2,
                },
                live: self.config.live,
            }),
            Out::RoundEnd(r) => Msg::RoundEnd(r),
            Out::Suspended => Msg::Suspended,
            Out::ImageEnd(e) => Msg::ImageEnd(e),
            Out::Commit => Msg::Commit,
            Out::Sched(p) => Msg::Sched(p),
            Out::Abort(reason) => Msg::Abort(msg::Abort {
                reason,
                detail: self.out_detail.as_str(),
            }),
        };
        let n = msg::encode(&m, buf)?;
        self.outbox.pop_front();
        self.last_tx = Some(out);
        if out == Out::Commit {
            if let SourceState::Committing { sent, .. } = &mut self.state {
                *sent = true;
            }
        }
        Ok(Some(n))
    }

    /// The next action for the host.
    pub fn poll_action(&mut self) -> Option<SourceAction> {
        self.actions.pop_front()
    }

    /// When the host must call [`handle_timeout`](Self::handle_timeout) at
    /// the latest, if the machine is waiting on the destination.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SourceState::AwaitHelloAck(h) | SourceState::AwaitAdmission(h, _) => Some(h.deadline),
            SourceState::AwaitPrepared(_, d) => Some(d),
            SourceState::Committing { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Time has passed; fails the session if the current wait is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.poll_timeout() {
            if now >= d {
                let state = self.state.name();
                self.fail(now, Error::Timeout { state }, true);
            }
        }
    }

    /// The connection failed. Ends the session (the outcome depends on the
    /// state; see the module doc's table).
    pub fn handle_link_error(&mut self, now: Instant) {
        if !matches!(self.state, SourceState::Finished(_)) {
            let state = self.state.name();
            self.fail(now, Error::LinkLost { state }, false);
        }
    }

    /// The last frame returned by [`poll_transmit`](Self::poll_transmit)
    /// could not be written at all: the write failed before the connection
    /// accepted any byte of it. Ends the session like
    /// [`handle_link_error`](Self::handle_link_error), but knowing that
    /// frame never left, so a `Commit` that never left does not put the
    /// session in doubt. If any byte of it may have been accepted, call
    /// `handle_link_error` instead.
    pub fn handle_transmit_failed(&mut self, now: Instant) {
        if self.last_tx == Some(Out::Commit) {
            if let SourceState::Committing { sent, .. } = &mut self.state {
                *sent = false;
            }
        }
        self.handle_link_error(now);
    }

    /// A frame body from the destination.
    pub fn handle_frame(&mut self, now: Instant, body: &[u8]) -> Result<(), Error> {
        let m = match msg::decode(body) {
            Ok(m) => m,
            Err(e) => {
                self.fail(now, e, true);
                return Err(e);
            }
        };
        self.handle(now, Input::Msg(m))
    }

    /// Checks that an image chunk of `payload_len` bytes may be sent now and
    /// writes its frame header into `out`; the host then writes the header
    /// and the payload. Valid while transferring, with no control frame
    /// pending.
    pub fn image_chunk_header(
        &mut self,
        payload_len: usize,
        out: &mut [u8; IMAGE_HEADER_MAX],
    ) -> Result<usize, Error> {
        let SourceState::Transferring(t) = &mut self.state else {
            return Err(Error::InvalidInState {
                state: self.state.name(),
                input: "image_chunk_header",
            });
        };
        if !self.outbox.is_empty() {
            return Err(Error::InvalidInState {
                state: "Transferring (control frames pending)",
                input: "image_chunk_header",
            });
        }
        let n = msg::image_header(payload_len, out)?;
        t.chunks = t.chunks.saturating_add(1);
        t.bytes = t.bytes.saturating_add(payload_len as u64);
        Ok(n)
    }

    /// The frame of the guest's configuration is written (after
    /// [`SourceAction::SendGuestConfig`]); queues the admission request.
    pub fn handle_guest_config_sent(&mut self, now: Instant) -> Result<(), Error> {
        self.handle(now, Input::ConfigSent)
    }

    /// A live round ended with these figures (queues a round marker).
    pub fn handle_round_end(&mut self, now: Instant, stats: &PrecopyStats) -> Result<(), Error> {
        self.handle(now, Input::RoundEnd(stats))
    }

    /// The guest's scheduling parameters (before any throttle): queues
    /// [`Msg::Sched`] when the session agreed on [`Features::SCHED`], and
    /// does nothing otherwise. Once, while transferring, before
    /// [`handle_suspended`](Self::handle_suspended).
    pub fn handle_sched(&mut self, now: Instant, params: SchedParams) -> Result<(), Error> {
        self.handle(now, Input::Sched(params))
    }

    /// The guest is suspended: stop-and-copy has begun.
    pub fn handle_suspended(&mut self, now: Instant) -> Result<(), Error> {
        self.handle(now, Input::Suspended)
    }

    /// The last chunk of the image (the stream's END record included) has
    /// been handed over.
    pub fn handle_image_end(&mut self, now: Instant) -> Result<(), Error> {
        self.handle(now, Input::ImageEnd)
    }

    /// The commit record is durable.
    pub fn handle_journaled(&mut self, now: Instant) -> Result<(), Error> {
        self.handle(now, Input::Journaled)
    }

    /// The commit record could not be made durable: the session aborts
    /// (`SourceFailed`, with `detail`, e.g. the I/O error, for the
    /// destination's log).
    pub fn handle_journal_failed(&mut self, now: Instant, detail: &str) -> Result<(), Error> {
        self.handle(now, Input::JournalFailed(detail))
    }

    /// Gives up the session (operator cancel, pre-copy policy abort, guest
    /// failure) before the point of no return; refused once the commit is
    /// journaled. `notice` is a reason, or a reason with a detail for the
    /// destination ([`msg::Abort::new`]; made valid by [`Detail::new`]).
    pub fn abort<'d>(
        &mut self,
        now: Instant,
        notice: impl Into<msg::Abort<'d>>,
    ) -> Result<(), Error> {
        self.handle(now, Input::Abort(notice.into()))
    }

    fn handle(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let state = self.state;
        match self.step(now, state, input) {
            Ok(next) => {
                self.state = next;
                if let SourceState::Finished(o) = next {
                    if !matches!(state, SourceState::Finished(_)) {
                        self.push_action(SourceAction::Finished(o));
                    }
                }
                Ok(())
            }
            Err(e) => {
                if input.is_from_peer() {
                    self.fail(now, e, true);
                }
                Err(e)
            }
        }
    }

    fn step(
        &mut self,
        now: Instant,
        state: SourceState,
        input: Input<'_>,
    ) -> Result<SourceState, Error> {
        use SourceState as S;
        let t = self.config.timeouts;
        Ok(match (state, input) {
            (S::AwaitHelloAck(h), Input::Msg(Msg::HelloAck(ack))) => {
                if ack.version < PROTOCOL_VERSION_MIN || ack.version > PROTOCOL_VERSION {
                    return Err(Error::Incompatible {
                        ours: PROTOCOL_VERSION,
                        theirs: ack.version,
                    });
                }
                let features = ack.features.intersect(self.config.features);
                if self.config.live && !features.contains(Features::LIVE) {
                    self.send(Out::Abort(AbortReason::ProtocolError))?;
                    return Ok(S::Finished(SourceOutcome::Aborted(Error::Refused(
                        RefuseReason::Unsupported,
                    ))));
                }
                let tr = Transfer {
                    version: ack.version,
                    features,
                    ..Transfer::default()
                };
                match self.config.guest_config {
                    Some(c) if c.len > MAX_GUEST_CONFIG_LEN => {
                        self.out_detail = Detail::empty();
                        self.send(Out::Abort(AbortReason::SourceFailed))?;
                        return Ok(S::Finished(SourceOutcome::Aborted(Error::LimitExceeded(
                            Limit::ConfigTooLong,
                        ))));
                    }
                    Some(c) if features.contains(Features::GUEST_CONFIG) && c.len > 0 => {
                        self.push_action(SourceAction::SendGuestConfig);
                        return Ok(S::AwaitAdmission(
                            Handshake {
                                config_pending: true,
                                ..h
                            },
                            tr,
                        ));
                    }
                    Some(c) if c.required => {
                        self.out_detail = Detail::new(
                            "the guest has devices and this destination cannot take their \
                             configuration",
                        );
                        self.send(Out::Abort(AbortReason::Unsupported))?;
                        return Ok(S::Finished(SourceOutcome::Aborted(Error::MissingFeature {
                            feature: "guest device configuration (GUEST_CONFIG)",
                        })));
                    }
                    _ => {}
                }
                self.send(Out::Admit)?;
                S::AwaitAdmission(h, tr)
            }
            (S::AwaitAdmission(h, tr), Input::ConfigSent) if h.config_pending => {
                self.send(Out::Admit)?;
                S::AwaitAdmission(
                    Handshake {
                        config_pending: false,
                        ..h
                    },
                    tr,
                )
            }
            (S::AwaitHelloAck(_), Input::Msg(Msg::VersionRefused(v))) => {
                S::Finished(SourceOutcome::Aborted(Error::Incompatible {
                    ours: PROTOCOL_VERSION,
                    theirs: v.max_version,
                }))
            }
            (S::AwaitAdmission(h, tr), Input::Msg(Msg::Admitted)) if !h.config_pending => {
                self.push_action(SourceAction::StartTransfer {
                    live: self.config.live,
                });
                S::Transferring(tr)
            }
            (S::AwaitHelloAck(_) | S::AwaitAdmission(..), Input::Msg(Msg::Refused(r))) => {
                self.peer_detail = Detail::new(r.detail);
                S::Finished(SourceOutcome::Aborted(Error::Refused(r.reason)))
            }
            (S::Transferring(mut tr), Input::RoundEnd(s)) if self.config.live && !tr.suspended => {
                tr.rounds = s.round;
                self.send(Out::RoundEnd(RoundEnd {
                    round: s.round,
                    pages: s.pages_sent,
                    dirty: s.dirty_count,
                }))?;
                S::Transferring(tr)
            }
            (S::Transferring(tr), Input::Sched(p)) if !tr.suspended => {
                if tr.features.contains(Features::SCHED) {
                    self.send(Out::Sched(msg::Sched {
                        weight: p.weight,
                        cap: p.cap,
                    }))?;
                }
                S::Transferring(tr)
            }
            (S::Transferring(mut tr), Input::Suspended) if !tr.suspended => {
                tr.suspended = true;
                self.send(Out::Suspended)?;
                S::Transferring(tr)
            }
            (S::Transferring(tr), Input::ImageEnd) if tr.suspended => {
                self.send(Out::ImageEnd(ImageEnd {
                    chunks: tr.chunks,
                    bytes: tr.bytes,
                }))?;
                S::AwaitPrepared(tr, now + t.prepare)
            }
            (S::AwaitPrepared(tr, _), Input::Msg(Msg::Prepared)) => {
                self.push_action(SourceAction::JournalCommit {
                    session: self.config.session,
                });
                S::Journaling(tr)
            }
            (S::Journaling(tr), Input::Journaled) => {
                self.send(Out::Commit)?;
                S::Committing {
                    transfer: tr,
                    sent: false,
                    deadline: now + t.commit,
                }
            }
            (S::Journaling(_), Input::JournalFailed(detail)) => {
                self.out_detail = Detail::from_fmt(format_args!("journaling the commit: {detail}"));
                self.send(Out::Abort(AbortReason::SourceFailed))?;
                S::Finished(SourceOutcome::Aborted(Error::Aborted(
                    AbortReason::SourceFailed,
                )))
            }
            (S::Committing { .. }, Input::Msg(Msg::Committed)) => {
                S::Finished(SourceOutcome::Migrated)
            }
            // The destination promises its copy never runs: safe to resume,
            // even after the commit.
            (s, Input::Msg(Msg::Abort(a))) if !matches!(s, S::Finished(_)) => {
                self.peer_detail = Detail::new(a.detail);
                S::Finished(SourceOutcome::Aborted(Error::Aborted(a.reason)))
            }
            (
                S::AwaitHelloAck(_)
                | S::AwaitAdmission(..)
                | S::Transferring(_)
                | S::AwaitPrepared(..)
                | S::Journaling(_),
                Input::Abort(n),
            ) => {
                self.out_detail = Detail::new(n.detail);
                self.send(Out::Abort(n.reason))?;
                S::Finished(SourceOutcome::Aborted(Error::Aborted(n.reason)))
            }
            (s, i) => return Err(invalid_in_state(s, i)),
        })
    }

    /// Ends the session after a failure in the current state: the table of
    /// the module doc, source column.
    fn fail(&mut self, _now: Instant, error: Error, tell_peer: bool) {
        use SourceState as S;
        let outcome = match self.state {
            S::Finished(_) => return,
            // Once Commit has left, only `Committed`, `Abort`, link loss or
            // the deadline end the wait: a stray or broken message from the
            // destination says nothing about whether it runs the guest.
            S::Committing { sent: true, .. }
                if !matches!(error, Error::LinkLost { .. } | Error::Timeout { .. }) =>
            {
                return
            }
            S::Committing { sent: true, .. } => SourceOutcome::InDoubt(error),
            _ => SourceOutcome::Aborted(error),
        };
        // Before the Commit left, a best-effort Abort spares the destination
        // its timeout. Once it left, say nothing: the destination may have
        // run the guest already.
        if tell_peer && matches!(outcome, SourceOutcome::Aborted(_)) {
            self.outbox.clear();
            let reason = match error {
                Error::Timeout { .. } => AbortReason::Timeout,
                _ => AbortReason::ProtocolError,
            };
            self.out_detail = Detail::from_fmt(format_args!("{error}"));
            let _ = self.outbox.push_back(Out::Abort(reason));
        } else {
            self.outbox.clear();
        }
        self.state = S::Finished(outcome);
        self.push_action(SourceAction::Finished(outcome));
    }

    fn send(&mut self, out: Out) -> Result<(), Error> {
        self.outbox
            .push_back(out)
            .map_err(|_| Error::LimitExceeded(Limit::Backlog))
    }

    fn push_action(&mut self, a: SourceAction) {
        // At most two actions are ever pending (StartTransfer/JournalCommit
        // and Finished); the capacity of four cannot be exceeded.
        let _ = self.actions.push_back(a);
    }

    /// Figures of the transfer so far.
    pub fn transfer(&self) -> Option<Transfer> {
        match self.state {
            SourceState::AwaitAdmission(_, t)
            | SourceState::Transferring(t)
            | SourceState::AwaitPrepared(t, _)
            | SourceState::Journaling(t)
            | SourceState::Committing { transfer: t, .. } => Some(t),
            _ => None,
        }
    }
}

fn invalid_in_state(state: SourceState, input: Input<'_>) -> Error {
    Error::InvalidInState {
        state: state.name(),
        input: input.name(),
    }
}
