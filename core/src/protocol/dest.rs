//! The receiving side of a relocation session.

use super::error::{AbortReason, Detail, Error, Limit, Misbehavior, RefuseReason};
use super::msg::{
    self, Features, HelloAck, Msg, VersionRefused, FRAME_HEADER_LEN, MAGIC, MAX_CONTROL_FRAME_LEN,
    MAX_FRAME_LEN, MAX_GUEST_CONFIG_FRAME_LEN, MAX_NAME_LEN, MAX_P2M_SIZE, MAX_VCPUS,
};
use super::{Timeouts, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use crate::guest::{GuestType, SchedParams};
use crate::time::Instant;
use heapless::{Deque, String};

/// The destination's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestConfig {
    /// Features offered.
    pub features: Features,
    /// Timeouts for the waits on the source.
    pub timeouts: Timeouts,
}

impl Default for DestConfig {
    fn default() -> Self {
        DestConfig {
            features: Features::ALL,
            timeouts: Timeouts::default(),
        }
    }
}

/// What the source asks to bring, checked for bounds; the host decides
/// capacity, name conflicts, concurrency and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionRequest {
    /// The session identifier (for the journal).
    pub session: u64,
    /// Domain name, 1 to [`MAX_NAME_LEN`] bytes.
    pub name: String<MAX_NAME_LEN>,
    /// Domain UUID.
    pub uuid: [u8; 16],
    /// Memory the guest needs, in bytes.
    pub memory_bytes: u64,
    /// One more than its highest pfn, 1 to [`MAX_P2M_SIZE`].
    pub p2m_size: u64,
    /// vCPUs, 1 to [`MAX_VCPUS`].
    pub vcpus: u32,
    /// PV or HVM.
    pub guest_type: GuestType,
    /// Live or offline.
    pub live: bool,
    /// Whether the guest's configuration came before the request (its
    /// bytes were [`Payload::GuestConfig`]).
    pub guest_config: bool,
}

/// What a frame carried for the host to keep ([`Dest::handle_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Image bytes: feed them to the stream decoder and the sink guest.
    Image(&'a [u8]),
    /// The guest's configuration (libxl's JSON): keep it for the
    /// admission decision that follows.
    GuestConfig(&'a [u8]),
}

/// How a destination session ended, and what the host must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestOutcome {
    /// The guest runs here (unpaused after the journaled commit). Journal
    /// "done".
    Running,
    /// No copy may run here: destroy the incoming domain if one was
    /// created, and if a commit record was journaled, journal "aborted"
    /// first.
    Discarded(Error),
}

/// What the host must do next for a destination session.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAction {
    /// Decide admission. To admit, create the empty paused domain, then
    /// call [`Dest::handle_admission`] with `Ok(())`; otherwise with the
    /// refusal ([`msg::Refused`]: reason and detail).
    Admit(AdmissionRequest),
    /// The image is complete: check that the stream decoder reached the END
    /// record, finish the guest (`SinkGuest::complete`), then call
    /// [`Dest::handle_image_complete`] with the result. The guest stays
    /// paused.
    CompleteImage,
    /// The source committed. Write the commit record `{session}` and fsync
    /// it, then call [`Dest::handle_journaled`] (or `handle_journal_failed`).
    JournalCommit {
        /// The session to journal.
        session: u64,
    },
    /// Unpause the guest, then call [`Dest::handle_unpaused`] with the
    /// result.
    Unpause,
    /// The session is over; see [`DestOutcome`].
    Finished(DestOutcome),
}

/// Frames the destination queues. A `Refused`'s or `Abort`'s detail is the
/// machine's `out_detail` (a session sends at most one of them, its last
/// frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    HelloAck(HelloAck),
    VersionRefused,
    Admitted,
    Refused(RefuseReason),
    Prepared,
    Committed,
    Abort(AbortReason),
}

/// What the destination knows of an admitted session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receive {
    /// The session identifier.
    pub session: u64,
    /// Live or offline.
    pub live: bool,
    /// Agreed features.
    pub features: Features,
    /// Image chunks received.
    pub chunks: u64,
    /// Image payload bytes received.
    pub bytes: u64,
    /// Last live round reported by the source.
    pub rounds: u32,
    /// Whether the source reported the guest suspended.
    pub suspended: bool,
    /// Whether the guest's configuration arrived (before the admission
    /// request).
    pub guest_config: bool,
    /// The guest's scheduling parameters, if the source sent them
    /// ([`Features::SCHED`]): for the sink before it completes the image.
    pub sched: Option<SchedParams>,
    /// Whether the connection was lost after the commit arrived (the
    /// `Committed` acknowledgement will not reach the source).
    pub link_lost: bool,
    /// When the host admitted the session (`Admitted` queued): the start
    /// of [`Timeouts::transfer`].
    pub admitted_at: Instant,
}

/// The destination's states.
///
/// ```mermaid
/// stateDiagram-v2
///     [*] --> AwaitHello
///     AwaitHello --> AwaitAdmit: Hello (HelloAck queued)
///     AwaitHello --> Finished: no common version (VersionRefused queued) / Discarded
///     AwaitAdmit --> AwaitAdmit: GuestConfig (once, GUEST_CONFIG agreed)
///     AwaitAdmit --> Admitting: Admit / Admit action
///     Admitting --> Receiving: handle_admission Ok (Admitted queued)
///     Admitting --> Finished: handle_admission Err (Refused queued) / Discarded
///     Receiving --> Receiving: Image, RoundEnd, Suspended
///     Receiving --> Finished: no progress for Timeouts::idle, not prepared within Timeouts::transfer (Abort queued) / Discarded
///     Receiving --> Completing: ImageEnd / CompleteImage
///     Completing --> Prepared: handle_image_complete Ok (Prepared queued)
///     Prepared --> Journaling: Commit / JournalCommit
///     Journaling --> Unpausing: handle_journaled / Unpause
///     Unpausing --> Finished: handle_unpaused Ok (Committed queued) / Running
///     AwaitHello --> Finished: abort(), refuse() (Refused queued) / Discarded
///     AwaitAdmit --> Finished: refuse() (Refused queued) / Discarded
///     AwaitAdmit --> Finished: abort(), Abort / Discarded
///     Admitting --> Finished: abort(), Abort / Discarded
///     Receiving --> Finished: failure, Abort, abort() / Discarded
///     Completing --> Finished: failure, Abort / Discarded
///     Prepared --> Finished: failure, timeout, Abort / Discarded (presumed abort)
///     Journaling --> Finished: journal failed (Abort queued) / Discarded
///     Unpausing --> Finished: unpause failed (Abort queued) / Discarded
/// ```
///
/// Link failures in `Journaling` and `Unpausing` do not change the state:
/// the commit decision is already durable at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestState {
    /// Waiting for the hello.
    AwaitHello(Instant),
    /// Waiting for the admission request.
    AwaitAdmit(Instant, Receive),
    /// The host decides admission.
    Admitting(Receive),
    /// The image flows; the deadline is the idle timeout, put off only by
    /// progress (image bytes, `Suspended`). [`Timeouts::transfer`] after
    /// [`Receive::admitted_at`] ends the wait whatever arrives.
    Receiving(Receive, Instant),
    /// The host finishes the image.
    Completing(Receive),
    /// `Prepared` sent; waiting for the commit until the deadline.
    Prepared(Receive, Instant),
    /// The host journals the commit.
    Journaling(Receive),
    /// The host unpauses the guest.
    Unpausing(Receive),
    /// Over.
    Finished(DestOutcome),
}

impl DestState {
    /// A short name for logs and errors.
    pub const fn name(&self) -> &'static str {
        match self {
            DestState::AwaitHello(_) => "AwaitHello",
            DestState::AwaitAdmit(..) => "AwaitAdmit",
            DestState::Admitting(_) => "Admitting",
            DestState::Receiving(..) => "Receiving",
            DestState::Completing(_) => "Completing",
            DestState::Prepared(..) => "Prepared",
            DestState::Journaling(_) => "Journaling",
            DestState::Unpausing(_) => "Unpausing",
            DestState::Finished(_) => "Finished",
        }
    }

    /// Whether the source's commit has been received: from here on this side
    /// runs the guest unless its own journal or unpause fails.
    pub const fn committed(&self) -> bool {
        matches!(
            self,
            DestState::Journaling(_)
                | DestState::Unpausing(_)
                | DestState::Finished(DestOutcome::Running)
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Input<'a> {
    Msg(Msg<'a>),
    /// An image chunk of this many payload bytes (`Msg::Image`, read by
    /// the host itself or decoded from a frame).
    Image(usize),
    Admission(Result<(), msg::Refused<'a>>),
    ImageComplete(Result<(), msg::Abort<'a>>),
    Journaled,
    JournalFailed(&'a str),
    Unpaused(Result<(), &'a str>),
    Abort(msg::Abort<'a>),
    Refuse(msg::Refused<'a>),
}

impl Input<'_> {
    const fn name(&self) -> &'static str {
        match self {
            Input::Msg(m) => m.name(),
            Input::Image(_) => "Image",
            Input::Admission(_) => "handle_admission",
            Input::ImageComplete(_) => "handle_image_complete",
            Input::Journaled => "handle_journaled",
            Input::JournalFailed(_) => "handle_journal_failed",
            Input::Unpaused(_) => "handle_unpaused",
            Input::Abort(_) => "abort",
            Input::Refuse(_) => "refuse",
        }
    }
}

/// The receiving side of a relocation session, as a sans-IO state machine.
///
/// # Call contract
///
/// The host accepts the connection (after its hosts-allow check), creates
/// a `Dest`, and loops until [`DestAction::Finished`]:
///
/// 1. Read 4 header bytes → [`frame_len`](Self::frame_len) (the bound
///    depends on the state: [`MAX_CONTROL_FRAME_LEN`] before admission,
///    [`MAX_FRAME_LEN`] after; [`MAX_GUEST_CONFIG_FRAME_LEN`] while a
///    guest configuration may come) → read that many bytes →
///    [`handle_frame`](Self::handle_frame). When it returns
///    `Ok(Some(Payload::Image(bytes)))`, feed the image bytes to the
///    stream decoder and the sink guest before reading the next frame;
///    keep a `Payload::GuestConfig` for the admission decision.
/// 2. Drain [`poll_action`](Self::poll_action) and carry each out,
///    answering with the matching `handle_*` call.
/// 3. Drain [`poll_transmit`](Self::poll_transmit) into the connection.
/// 4. Report connection failures with
///    [`handle_link_error`](Self::handle_link_error) and wake at
///    [`poll_timeout`](Self::poll_timeout) for
///    [`handle_timeout`](Self::handle_timeout).
///
/// An `Err` from `frame_len`/`handle_frame` has ended the session unless
/// the commit had already arrived (then the machine carries on to
/// `Running`); an `Err` from a host call out of order changes nothing. The
/// session is over only at [`DestAction::Finished`]: keep driving actions
/// until then, even after the connection is gone.
///
/// To turn a connection away before reading anything of it (too many
/// connections awaiting admission), call [`refuse`](Self::refuse) right
/// after [`Dest::new`], drain `poll_transmit` and close: the source reads
/// a typed refusal instead of a cut.
///
/// When the source aborted, the outcome's [`Error::Aborted`] holds its
/// typed reason and [`peer_detail`](Self::peer_detail) the text it gave.
#[derive(Debug)]
pub struct Dest {
    state: DestState,
    config: DestConfig,
    outbox: Deque<Out, 4>,
    actions: Deque<DestAction, 4>,
    /// The detail of the `Refused` or `Abort` we send.
    out_detail: Detail,
    /// The detail of the source's `Abort` that ended the session.
    peer_detail: Detail,
}

impl Dest {
    /// A session on a freshly accepted connection.
    pub fn new(config: DestConfig, now: Instant) -> Self {
        Dest {
            state: DestState::AwaitHello(now + config.timeouts.handshake),
            config,
            outbox: Deque::new(),
            actions: Deque::new(),
            out_detail: Detail::empty(),
            peer_detail: Detail::empty(),
        }
    }

    /// What the source said about the abort that ended the session (its
    /// `Abort` detail; empty when it gave none, or when the session did
    /// not end that way).
    pub fn peer_detail(&self) -> &str {
        self.peer_detail.as_str()
    }

    /// The current state.
    pub fn state(&self) -> &DestState {
        &self.state
    }

    /// The current state's name.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<DestOutcome> {
        match self.state {
            DestState::Finished(o) => Some(o),
            _ => None,
        }
    }

    /// Figures of the admitted session.
    pub fn receive(&self) -> Option<Receive> {
        match self.state {
            DestState::Admitting(r)
            | DestState::Receiving(r, _)
            | DestState::Completing(r)
            | DestState::Prepared(r, _)
            | DestState::Journaling(r)
            | DestState::Unpausing(r) => Some(r),
            _ => None,
        }
    }

    /// The largest frame body accepted in the current state.
    pub fn max_frame_len(&self) -> usize {
        match self.state {
            DestState::Receiving(..) => MAX_FRAME_LEN,
            DestState::AwaitAdmit(_, r)
                if r.features.contains(Features::GUEST_CONFIG) && !r.guest_config =>
            {
                MAX_GUEST_CONFIG_FRAME_LEN
            }
            _ => MAX_CONTROL_FRAME_LEN,
        }
    }

    /// Checks a frame header against the current bound and returns the body
    /// length. On error nothing was allocated and the session has failed
    /// (unless the commit had arrived); the byte stream can no longer be
    /// trusted: close the connection and report
    /// [`handle_link_error`](Self::handle_link_error). The first frame is
    /// checked with [`msg::first_frame_len`]: a peer that is not relocd
    /// ends the session with [`Error::NotRelocd`].
    pub fn frame_len(
        &mut self,
        now: Instant,
        header: [u8; FRAME_HEADER_LEN],
    ) -> Result<usize, Error> {
        let r = match self.state {
            DestState::AwaitHello(_) => msg::first_frame_len(header),
            _ => msg::frame_len(header, self.max_frame_len()),
        };
        r.inspect_err(|e| self.fail(now, *e, true))
    }

    /// The next frame to send, written into `buf` (at least
    /// [`MAX_CONTROL_FRAME_LEN`] + 4 bytes).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        let Some(out) = self.outbox.front().copied() else {
            return Ok(None);
        };
        let m = match out {
            Out::HelloAck(a) => Msg::HelloAck(a),
            Out::VersionRefused => Msg::VersionRefused(VersionRefused {
                min_version: PROTOCOL_VERSION_MIN,
                max_version: PROTOCOL_VERSION,
            }),
            Out::Admitted => Msg::Admitted,
            Out::Refused(reason) => Msg::Refused(msg::Refused {
                reason,
                detail: self.out_detail.as_str(),
            }),
            Out::Prepared => Msg::Prepared,
            Out::Committed => Msg::Committed,
            Out::Abort(reason) => Msg::Abort(msg::Abort {
                reason,
                detail: self.out_detail.as_str(),
            }),
        };
        let n = msg::encode(&m, buf)?;
        self.outbox.pop_front();
        Ok(Some(n))
    }

    /// The next action for the host.
    pub fn poll_action(&mut self) -> Option<DestAction> {
        self.actions.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            DestState::Receiving(r, idle) => Some(idle.min(self.transfer_deadline(&r))),
            DestState::AwaitHello(d) | DestState::AwaitAdmit(d, _) | DestState::Prepared(_, d) => {
                Some(d)
            }
            _ => None,
        }
    }

    /// Time has passed; fails the session if the current wait is over.
    /// While the image flows that is [`Error::TransferTooLong`] once
    /// [`Timeouts::transfer`] has passed since the admission, else
    /// [`Error::NoProgress`] once [`Timeouts::idle`] has passed without
    /// progress; in the other waits [`Error::Timeout`]. The source hears
    /// `Abort` with the reason and the error's text as detail.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.config.timeouts;
        let error = match self.state {
            DestState::Receiving(r, _) if now >= self.transfer_deadline(&r) => {
                Error::TransferTooLong { limit: t.transfer }
            }
            DestState::Receiving(_, idle) if now >= idle => Error::NoProgress { idle: t.idle },
            DestState::Receiving(..) => return,
            _ => match self.poll_timeout() {
                Some(d) if now >= d => Error::Timeout {
                    state: self.state.name(),
                },
                _ => return,
            },
        };
        self.fail(now, error, true);
    }

    /// When an admitted session must have reached `Prepared`.
    fn transfer_deadline(&self, r: &Receive) -> Instant {
        r.admitted_at + self.config.timeouts.transfer
    }

    /// The connection failed.
    pub fn handle_link_error(&mut self, now: Instant) {
        let state = self.state.name();
        self.fail(now, Error::LinkLost { state }, false);
    }

    /// A frame body from the source. Returns what the host must keep: the
    /// image bytes of an image chunk, or the guest's configuration.
    pub fn handle_frame<'a>(
        &mut self,
        now: Instant,
        body: &'a [u8],
    ) -> Result<Option<Payload<'a>>, Error> {
        let m = match msg::decode(body) {
            Ok(m) => m,
            Err(e) => {
                self.fail(now, e, true);
                return Err(e);
            }
        };
        let (image, input) = match m {
            Msg::Image(bytes) => (Some(Payload::Image(bytes)), Input::Image(bytes.len())),
            Msg::GuestConfig(bytes) => (Some(Payload::GuestConfig(bytes)), Input::Msg(m)),
            _ => (None, Input::Msg(m)),
        };
        match self.handle(now, input) {
            Ok(()) => Ok(image),
            Err(e) => {
                self.fail(now, e, true);
                Err(e)
            }
        }
    }

    /// An image chunk whose frame body the host read only as far as its
    /// payload ([`msg::image_payload_offset`]), to read the `len` payload
    /// bytes itself, straight to where they go: the same step as
    /// [`handle_frame`](Self::handle_frame) with that whole frame. On
    /// `Err` the session is over, as there.
    pub fn handle_image(&mut self, now: Instant, len: usize) -> Result<(), Error> {
        self.handle(now, Input::Image(len))
            .inspect_err(|&e| self.fail(now, e, true))
    }

    /// The host's admission decision (after creating the empty paused
    /// domain, when admitting); a refusal goes to the source with its
    /// reason and detail.
    pub fn handle_admission(
        &mut self,
        now: Instant,
        decision: Result<(), msg::Refused<'_>>,
    ) -> Result<(), Error> {
        self.handle(now, Input::Admission(decision))
    }

    /// The image was applied completely (`Ok`) or could not be (`Err`,
    /// with what failed: `msg::Abort::new(DestFailed, "...")`).
    pub fn handle_image_complete(
        &mut self,
        now: Instant,
        result: Result<(), msg::Abort<'_>>,
    ) -> Result<(), Error> {
        self.handle(now, Input::ImageComplete(result))
    }

    /// The commit record is durable.
    pub fn handle_journaled(&mut self, now: Instant) -> Result<(), Error> {
        self.handle(now, Input::Journaled)
    }

    /// The commit record could not be written: the guest is not started.
    /// The source hears `Abort(DestFailed)` with `detail` (e.g. the I/O
    /// error).
    pub fn handle_journal_failed(&mut self, now: Instant, detail: &str) -> Result<(), Error> {
        self.handle(now, Input::JournalFailed(detail))
    }

    /// The guest was unpaused (`Ok`) or could not be (`Err`, with what
    /// the backend said, for the source's `Abort(DestFailed)`).
    pub fn handle_unpaused(&mut self, now: Instant, result: Result<(), &str>) -> Result<(), Error> {
        self.handle(now, Input::Unpaused(result))
    }

    /// Gives up the session before the commit has arrived: a sink failure
    /// while applying the image (`BadImage`, `DestFailed`), or the daemon
    /// shutting down (`Cancelled`). Queues `Abort` (or, before admission,
    /// `Refused(ShuttingDown)`) with the notice's detail and ends in
    /// [`DestOutcome::Discarded`]. Refused once the commit has arrived:
    /// the guest must be started.
    pub fn abort<'d>(
        &mut self,
        now: Instant,
        notice: impl Into<msg::Abort<'d>>,
    ) -> Result<(), Error> {
        self.handle(now, Input::Abort(notice.into()))
    }

    /// Turns the source away before admission: valid before the hello has
    /// been read (a destination with too many connections awaiting
    /// admission answers `Busy` without reading anything) and while the
    /// admission request is awaited. Queues `Refused` with the refusal's
    /// reason and detail and ends in [`DestOutcome::Discarded`]; drain
    /// `poll_transmit`, then close. (Once the request has arrived, answer
    /// it with [`handle_admission`](Self::handle_admission).)
    pub fn refuse<'d>(
        &mut self,
        now: Instant,
        refusal: impl Into<msg::Refused<'d>>,
    ) -> Result<(), Error> {
        self.handle(now, Input::Refuse(refusal.into()))
    }

    fn handle(&mut self, now: Instant, input: Input<'_>) -> Result<(), Error> {
        let state = self.state;
        let next = self.step(now, state, input)?;
        self.state = next;
        if let DestState::Finished(o) = next {
            if !matches!(state, DestState::Finished(_)) {
                self.push_action(DestAction::Finished(o));
            }
        }
        Ok(())
    }

    fn step(
        &mut self,
        now: Instant,
        state: DestState,
        input: Input<'_>,
    ) -> Result<DestState, Error> {
        use DestState as S;
        let t = self.config.timeouts;
        Ok(match (state, input) {
            (S::AwaitHello(d), Input::Msg(Msg::Hello(h))) => {
                if h.magic != MAGIC {
                    return Err(Error::PeerMisbehaved(Misbehavior::BadMagic));
                }
                let common = h.max_version.min(PROTOCOL_VERSION);
                if common < h.min_version.max(PROTOCOL_VERSION_MIN) {
                    self.send(Out::VersionRefused)?;
                    return Ok(S::Finished(DestOutcome::Discarded(Error::Incompatible {
                        ours: PROTOCOL_VERSION,
                        theirs: h.max_version,
                    })));
                }
                let features = h.features.intersect(self.config.features);
                self.send(Out::HelloAck(HelloAck {
                    version: common,
                    features,
                }))?;
                S::AwaitAdmit(
                    d,
                    Receive {
                        features,
                        ..Receive::default()
                    },
                )
            }
            (S::AwaitAdmit(d, mut r), Input::Msg(Msg::GuestConfig(c)))
                if r.features.contains(Features::GUEST_CONFIG) && !r.guest_config =>
            {
                if c.len() > msg::MAX_GUEST_CONFIG_LEN || core::str::from_utf8(c).is_err() {
                    return Err(Error::PeerMisbehaved(Misbehavior::InvalidField));
                }
                r.guest_config = true;
                S::AwaitAdmit(d, r)
            }
            (S::AwaitAdmit(_, mut r), Input::Msg(Msg::Admit(a))) => {
                let req = match check_admit(&a, r.features, r.guest_config) {
                    Ok(req) => req,
                    Err((e, reason)) => {
                        self.out_detail = Detail::from_fmt(format_args!("{e}"));
                        self.send(Out::Refused(reason))?;
                        return Ok(S::Finished(DestOutcome::Discarded(e)));
                    }
                };
                r.session = req.session;
                r.live = req.live;
                self.push_action(DestAction::Admit(req));
                S::Admitting(r)
            }
            (S::Admitting(mut r), Input::Admission(Ok(()))) => {
                self.send(Out::Admitted)?;
                r.admitted_at = now;
                S::Receiving(r, now + t.idle)
            }
            (S::Admitting(_), Input::Admission(Err(refusal)))
            | (S::AwaitHello(_) | S::AwaitAdmit(..), Input::Refuse(refusal)) => {
                self.out_detail = Detail::new(refusal.detail);
                self.send(Out::Refused(refusal.reason))?;
                S::Finished(DestOutcome::Discarded(Error::Refused(refusal.reason)))
            }
            // Progress is what keeps an admitted session (its slot, the
            // memory it was admitted for): image bytes, and `Suspended`,
            // which comes once. An empty chunk and a `RoundEnd` carry
            // nothing (a peer may send round numbers without end), so
            // they leave the idle deadline where it was.
            (S::Receiving(mut r, idle), Input::Image(len)) => {
                r.chunks = r.chunks.saturating_add(1);
                r.bytes = r.bytes.saturating_add(len as u64);
                let idle = if len == 0 { idle } else { now + t.idle };
                S::Receiving(r, idle)
            }
            (S::Receiving(mut r, idle), Input::Msg(Msg::RoundEnd(e)))
                if r.live && !r.suspended && e.round > r.rounds =>
            {
                r.rounds = e.round;
                S::Receiving(r, idle)
            }
            // Once, before the suspend; a weight of 0 is not Xen's.
            (S::Receiving(mut r, idle), Input::Msg(Msg::Sched(p)))
                if r.features.contains(Features::SCHED) && !r.suspended && r.sched.is_none() =>
            {
                if p.weight == 0 {
                    return Err(Error::PeerMisbehaved(Misbehavior::Malformed));
                }
                r.sched = Some(SchedParams {
                    weight: p.weight,
                    cap: p.cap,
                });
                S::Receiving(r, idle)
            }
            (S::Receiving(mut r, _), Input::Msg(Msg::Suspended)) if !r.suspended => {
                r.suspended = true;
                S::Receiving(r, now + t.idle)
            }
            (S::Receiving(r, _), Input::Msg(Msg::ImageEnd(e))) if r.suspended => {
                if e.chunks != r.chunks || e.bytes != r.bytes {
                    return Err(Error::PeerMisbehaved(Misbehavior::ImageMismatch));
                }
                self.push_action(DestAction::CompleteImage);
                S::Completing(r)
            }
            (S::Completing(r), Input::ImageComplete(Ok(()))) => {
                self.send(Out::Prepared)?;
                S::Prepared(r, now + t.commit)
            }
            (S::Completing(_), Input::ImageComplete(Err(n))) => {
                self.out_detail = Detail::new(n.detail);
                self.send(Out::Abort(n.reason))?;
                S::Finished(DestOutcome::Discarded(Error::Aborted(n.reason)))
            }
            (S::Prepared(r, _), Input::Msg(Msg::Commit)) => {
                self.push_action(DestAction::JournalCommit { session: r.session });
                S::Journaling(r)
            }
            (S::Journaling(r), Input::Journaled) => {
                self.push_action(DestAction::Unpause);
                S::Unpausing(r)
            }
            (S::Journaling(_), Input::JournalFailed(detail)) => {
                self.out_detail = Detail::from_fmt(format_args!("journaling the commit: {detail}"));
                self.send(Out::Abort(AbortReason::DestFailed))?;
                S::Finished(DestOutcome::Discarded(Error::Aborted(
                    AbortReason::DestFailed,
                )))
            }
            (S::Unpausing(_), Input::Unpaused(Err(detail))) => {
                self.out_detail = Detail::from_fmt(format_args!("unpausing the guest: {detail}"));
                self.send(Out::Abort(AbortReason::DestFailed))?;
                S::Finished(DestOutcome::Discarded(Error::Aborted(
                    AbortReason::DestFailed,
                )))
            }
            (S::Unpausing(_), Input::Unpaused(Ok(()))) => {
                self.send(Out::Committed)?;
                S::Finished(DestOutcome::Running)
            }
            (
                S::AwaitAdmit(..)
                | S::Admitting(_)
                | S::Receiving(..)
                | S::Completing(_)
                | S::Prepared(..),
                Input::Msg(Msg::Abort(a)),
            ) => {
                self.peer_detail = Detail::new(a.detail);
                S::Finished(DestOutcome::Discarded(Error::Aborted(a.reason)))
            }
            (S::AwaitHello(_) | S::AwaitAdmit(..) | S::Admitting(_), Input::Abort(n)) => {
                self.out_detail = Detail::new(n.detail);
                self.send(Out::Refused(RefuseReason::ShuttingDown))?;
                S::Finished(DestOutcome::Discarded(Error::Aborted(n.reason)))
            }
            (S::Receiving(..) | S::Completing(_) | S::Prepared(..), Input::Abort(n)) => {
                self.out_detail = Detail::new(n.detail);
                self.send(Out::Abort(n.reason))?;
                S::Finished(DestOutcome::Discarded(Error::Aborted(n.reason)))
            }
            (s, i) => {
                return Err(Error::InvalidInState {
                    state: s.name(),
                    input: i.name(),
                })
            }
        })
    }

    /// Ends the session after a failure: the table of the module doc,
    /// destination column. Once the commit has arrived, nothing the link or
    /// the peer does changes the outcome.
    fn fail(&mut self, _now: Instant, error: Error, tell_peer: bool) {
        use DestState as S;
        match &mut self.state {
            S::Finished(_) => {}
            S::Journaling(r) | S::Unpausing(r) => {
                if matches!(error, Error::LinkLost { .. }) {
                    r.link_lost = true;
                }
            }
            s => {
                let talk = tell_peer && !matches!(s, S::AwaitHello(_));
                let reason = match error {
                    Error::Timeout { .. } | Error::NoProgress { .. } => AbortReason::Timeout,
                    Error::TransferTooLong { .. } => AbortReason::TransferTooLong,
                    _ => AbortReason::ProtocolError,
                };
                let outcome = DestOutcome::Discarded(error);
                self.state = S::Finished(outcome);
                self.outbox.clear();
                if talk {
                    self.out_detail = Detail::from_fmt(format_args!("{error}"));
                    let _ = self.outbox.push_back(Out::Abort(reason));
                }
                self.push_action(DestAction::Finished(outcome));
            }
        }
    }

    fn send(&mut self, out: Out) -> Result<(), Error> {
        self.outbox
            .push_back(out)
            .map_err(|_| Error::LimitExceeded(Limit::Backlog))
    }

    fn push_action(&mut self, a: DestAction) {
        let _ = self.actions.push_back(a);
    }
}

/// Bounds and sanity of an admission request; on failure, the error and
/// the reason to send back.
fn check_admit(
    a: &msg::Admit<'_>,
    features: Features,
    guest_config: bool,
) -> Result<AdmissionRequest, (Error, RefuseReason)> {
    let invalid = |e| (e, RefuseReason::Invalid);
    if a.name.len() > MAX_NAME_LEN {
        return Err(invalid(Error::LimitExceeded(Limit::NameTooLong)));
    }
    let name =
        String::try_from(a.name).map_err(|_| invalid(Error::LimitExceeded(Limit::NameTooLong)))?;
    if name.is_empty() || a.vcpus == 0 || a.p2m_size == 0 {
        return Err(invalid(Error::PeerMisbehaved(Misbehavior::InvalidField)));
    }
    if a.vcpus > MAX_VCPUS {
        return Err(invalid(Error::LimitExceeded(Limit::TooManyVcpus)));
    }
    if a.p2m_size > MAX_P2M_SIZE
        || a.memory_bytes > a.p2m_size.saturating_mul(crate::guest::PAGE_SIZE as u64)
    {
        return Err(invalid(Error::LimitExceeded(Limit::GuestTooLarge)));
    }
    let guest_type = match a.guest_type {
        1 => GuestType::Pv,
        2 => GuestType::Hvm,
        _ => {
            return Err((
                Error::PeerMisbehaved(Misbehavior::InvalidField),
                RefuseReason::Unsupported,
            ))
        }
    };
    if a.live && !features.contains(Features::LIVE) {
        return Err((
            Error::PeerMisbehaved(Misbehavior::InvalidField),
            RefuseReason::Unsupported,
        ));
    }
    Ok(AdmissionRequest {
        session: a.session,
        name,
        uuid: a.uuid,
        memory_bytes: a.memory_bytes,
        p2m_size: a.p2m_size,
        vcpus: a.vcpus,
        guest_type,
        live: a.live,
        guest_config,
    })
}
