//! The receiving side: [`run_dest`].

use std::time::Duration;

use relocd_core::guest::SinkGuest;
use relocd_core::protocol::journal::{Record, RecordKind, Role};
use relocd_core::protocol::{
    AbortReason, AdmissionRequest, Dest, DestAction, DestConfig, DestOutcome, Features,
    RefuseReason, MAX_CONTROL_FRAME_LEN,
};
use relocd_core::time::Instant;

use super::image::{ImageDecoder, LibxcDecoder};
use super::link::{read_full, write_all, Header, Link, ReadEnd};
use super::{guest_err, Clock, JournalSink, SessionError, POLL_INTERVAL};

/// The destination's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestOptions {
    /// Features and protocol timeouts.
    pub config: DestConfig,
    /// Longest a write may block.
    pub write_timeout: Duration,
}

impl Default for DestOptions {
    fn default() -> Self {
        DestOptions {
            config: DestConfig::default(),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// What a received migration amounted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestReport {
    /// The session identifier.
    pub session: u64,
    /// The guest's name.
    pub name: String,
    /// Whether it was live.
    pub live: bool,
    /// The last live round the source reported.
    pub rounds: u32,
    /// Image chunks received.
    pub chunks: u64,
    /// Image bytes received.
    pub image_bytes: u64,
    /// Pages written to the guest (a page sent twice counts twice).
    pub pages_applied: u64,
    /// From the call to the end.
    pub total_ms: u64,
}

/// Receives one guest over `link` with the libxc stream as image
/// ([`LibxcDecoder`]). See [`run_dest_with_decoder`].
pub fn run_dest<L, S, F>(
    link: L,
    admit: F,
    opts: &DestOptions,
    journal: &mut dyn JournalSink,
    clock: &Clock,
) -> Result<DestReport, SessionError>
where
    L: Link,
    S: SinkGuest,
    F: FnMut(&AdmissionRequest) -> Result<S, RefuseReason>,
{
    run_dest_with_decoder(link, admit, &mut LibxcDecoder::new(), opts, journal, clock)
}

/// Receives one guest over a freshly accepted `link` (after the host's
/// hosts-allow check).
///
/// `admit` decides admission: it checks capacity, name conflicts and
/// policy, and either creates the empty, paused domain and returns it as
/// the sink, or returns the reason to refuse. Blocks until the session is
/// over. On `Ok` the guest runs here (journal: `Commit`, then `Done`); on
/// `Err` no copy is left here (the sink was destroyed).
pub fn run_dest_with_decoder<L, S, F, D>(
    mut link: L,
    mut admit: F,
    decoder: &mut D,
    opts: &DestOptions,
    journal: &mut dyn JournalSink,
    clock: &Clock,
) -> Result<DestReport, SessionError>
where
    L: Link,
    S: SinkGuest,
    F: FnMut(&AdmissionRequest) -> Result<S, RefuseReason>,
    D: ImageDecoder,
{
    let started = std::time::Instant::now();
    link.set_read_timeout(Some(POLL_INTERVAL))
        .map_err(SessionError::Link)?;
    link.set_write_timeout(Some(opts.write_timeout))
        .map_err(SessionError::Link)?;
    let mut sm = Dest::new(opts.config, clock.now());
    let mut sink: Option<S> = None;
    let mut req: Option<AdmissionRequest> = None;
    let mut ctl = vec![0u8; MAX_CONTROL_FRAME_LEN + 64];
    let mut body: Vec<u8> = Vec::new();
    let mut unpacked: Vec<u8> = Vec::new();
    let mut link_dead = false;
    let mut commit_journaled = false;
    let mut failure: Option<SessionError> = None;
    let mut last = relocd_core::protocol::Receive::default();
    loop {
        let now = clock.now();
        while let Some(a) = sm.poll_action() {
            let now = clock.now();
            match a {
                DestAction::Admit(r) => {
                    let decision = admit(&r).map(|s| sink = Some(s));
                    req = Some(r);
                    let _ = sm.handle_admission(now, decision);
                }
                DestAction::CompleteImage => {
                    let r = match sink.as_mut() {
                        Some(s) if decoder.is_complete() => s.complete().map_err(|e| {
                            failure = Some(guest_err("complete the image", e));
                            AbortReason::DestFailed
                        }),
                        _ => Err(AbortReason::BadImage),
                    };
                    let _ = sm.handle_image_complete(now, r);
                }
                DestAction::JournalCommit { session } => {
                    let rec = Record {
                        session,
                        uuid: req.as_ref().map_or([0; 16], |r| r.uuid),
                        role: Role::Dest,
                        kind: RecordKind::Commit,
                    };
                    match journal.record(&rec) {
                        Ok(()) => {
                            commit_journaled = true;
                            let _ = sm.handle_journaled(now);
                        }
                        Err(e) => {
                            failure = Some(SessionError::Journal(e));
                            let _ = sm.handle_journal_failed(now);
                        }
                    }
                }
                DestAction::Unpause => {
                    let ok = match sink.as_mut() {
                        Some(s) => s.unpause().map_err(|e| {
                            failure = Some(guest_err("unpause", e));
                        }),
                        None => Err(()),
                    };
                    let _ = sm.handle_unpaused(now, ok.is_ok());
                }
                DestAction::Finished(o) => {
                    // A last answer (Committed, Refused, Abort) if any.
                    flush(&mut sm, &mut link, &mut ctl, &mut link_dead, now);
                    if !link_dead {
                        linger(&mut link);
                    }
                    link.shutdown();
                    let session = req.as_ref().map_or(0, |r| r.session);
                    let uuid = req.as_ref().map_or([0; 16], |r| r.uuid);
                    return match o {
                        DestOutcome::Running => {
                            journal
                                .record(&Record {
                                    session,
                                    uuid,
                                    role: Role::Dest,
                                    kind: RecordKind::Done,
                                })
                                .map_err(SessionError::Journal)?;
                            Ok(DestReport {
                                session,
                                name: req
                                    .as_ref()
                                    .map_or_else(String::new, |r| r.name.as_str().to_owned()),
                                live: last.live,
                                rounds: last.rounds,
                                chunks: last.chunks,
                                image_bytes: last.bytes,
                                pages_applied: decoder.pages_applied(),
                                total_ms: u64::try_from(started.elapsed().as_millis())
                                    .unwrap_or(u64::MAX),
                            })
                        }
                        DestOutcome::Discarded(e) => {
                            let mut journal_err = None;
                            if commit_journaled {
                                journal_err = journal
                                    .record(&Record {
                                        session,
                                        uuid,
                                        role: Role::Dest,
                                        kind: RecordKind::Aborted,
                                    })
                                    .err();
                            }
                            if let Some(mut s) = sink.take() {
                                if let Err(g) = s.destroy() {
                                    failure.get_or_insert(guest_err("destroy the copy", g));
                                }
                            }
                            if let Some(f) = failure {
                                return Err(f);
                            }
                            if let Some(j) = journal_err {
                                return Err(SessionError::Journal(j));
                            }
                            Err(SessionError::from_protocol(e))
                        }
                    };
                }
            }
        }
        if let Some(r) = sm.receive() {
            last = r;
        }
        flush(&mut sm, &mut link, &mut ctl, &mut link_dead, now);
        if link_dead {
            // Only the host's own steps (journal, unpause) or a deadline
            // can move the machine now.
            sm.handle_timeout(clock.now());
            if sm.poll_timeout().is_none() && sm.outcome().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            continue;
        }
        // One frame: header, bound check, body.
        let mut hdr: Header = [0; 4];
        let end = {
            let sm = &mut sm;
            let mut idle = || {
                sm.handle_timeout(clock.now());
                sm.outcome().is_some()
            };
            read_full(&mut link, &mut hdr, &mut idle)
        };
        if !frame_read(end, &mut sm, &mut link, &mut link_dead, clock) {
            continue;
        }
        let now = clock.now();
        let Ok(len) = sm.frame_len(now, hdr) else {
            // The stream is out of step: hang up.
            link.shutdown();
            link_dead = true;
            sm.handle_link_error(now);
            continue;
        };
        body.resize(len, 0);
        let end = {
            let sm = &mut sm;
            let mut idle = || {
                sm.handle_timeout(clock.now());
                sm.outcome().is_some()
            };
            read_full(&mut link, &mut body, &mut idle)
        };
        if !frame_read(end, &mut sm, &mut link, &mut link_dead, clock) {
            continue;
        }
        let now = clock.now();
        if let Ok(Some(image)) = sm.handle_frame(now, &body) {
            let packed = last.features.contains(Features::COMPRESS);
            let r = match (sink.as_mut(), packed) {
                (Some(s), false) => decoder.apply(image, s),
                (Some(s), true) => match super::pack::unpack(image, &mut unpacked) {
                    Ok(chunk) => decoder.apply(chunk, s),
                    Err(e) => {
                        tracing::warn!("{e}");
                        Err(super::ImageError::Invalid(
                            "a packed image chunk is damaged",
                        ))
                    }
                },
                (None, _) => Err(super::ImageError::Order("image before admission")),
            };
            if let Err(e) = r {
                failure.get_or_insert(SessionError::Image(e));
                let reason = match e {
                    super::ImageError::Sink(_) => AbortReason::DestFailed,
                    _ => AbortReason::BadImage,
                };
                let _ = sm.abort(now, reason);
            }
        }
    }
}

/// After a read: `true` if the buffer was filled; otherwise reports the
/// connection's end to the machine.
fn frame_read<L: Link>(
    end: ReadEnd,
    sm: &mut Dest,
    link: &mut L,
    link_dead: &mut bool,
    clock: &Clock,
) -> bool {
    match end {
        ReadEnd::Done => true,
        ReadEnd::Stopped => false,
        ReadEnd::Eof | ReadEnd::Failed => {
            link.shutdown();
            *link_dead = true;
            sm.handle_link_error(clock.now());
            false
        }
    }
}

fn flush<L: Link>(sm: &mut Dest, link: &mut L, ctl: &mut [u8], link_dead: &mut bool, now: Instant) {
    while let Ok(Some(n)) = sm.poll_transmit(ctl) {
        if *link_dead {
            continue;
        }
        if write_all(link, &ctl[..n]).is_err() {
            *link_dead = true;
            sm.handle_link_error(now);
        }
    }
}

/// How long a finished destination keeps reading after its last answer.
const LINGER: Duration = Duration::from_millis(250);

/// Closes our direction and reads (discarding) until the source closes
/// or [`LINGER`] passes: the source then reads our last answer (an
/// `Abort` with its reason) instead of a reset caused by image bytes it
/// had in flight.
fn linger<L: Link>(link: &mut L) {
    link.close_write();
    let until = std::time::Instant::now() + LINGER;
    let mut buf = [0u8; 64 * 1024];
    while std::time::Instant::now() < until {
        match std::io::Read::read(link, &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}
