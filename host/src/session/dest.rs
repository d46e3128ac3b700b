//! The receiving side: [`run_dest`].

use std::time::Duration;

use relocd_core::guest::SinkGuest;
use relocd_core::precopy::drive::PageSource;
use relocd_core::protocol::journal::{Record, RecordKind, Role};
use relocd_core::protocol::{
    msg, AbortReason, AdmissionRequest, Dest, DestAction, DestConfig, DestOutcome, Features,
    Payload, MAX_CONTROL_FRAME_LEN,
};
use relocd_core::time::Instant;

use super::image::{ImageDecoder, ImageError, LibxcDecoder};
use super::link::{read_full_vectored, write_frame, Header, Link, ReadEnd, WRITE_SLICE};
use super::pack::{Forms, Unpacked};
use super::{guest_err, Clock, JournalSink, Refusal, SessionError, POLL_INTERVAL};

/// The destination's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestOptions {
    /// Features and protocol timeouts.
    pub config: DestConfig,
    /// Longest the write of one frame may take (one deadline per frame,
    /// however the source's reading splits it).
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

/// Turns a connection away before reading anything of it: writes a
/// `Refused` with `refusal` (typically [`RefuseReason::Busy`] with a
/// detail: too many connections awaiting admission), then closes. The
/// source reads the typed refusal and its detail instead of a cut, and
/// says the destination is busy, not that it was not admitted. Nothing is
/// read, so this costs the destination one small write; the write waits
/// at most `write_timeout` (a fresh connection's buffer takes it at once).
///
/// [`RefuseReason::Busy`]: relocd_core::protocol::RefuseReason::Busy
pub fn refuse_unread<L: Link>(
    mut link: L,
    refusal: impl Into<Refusal>,
    write_timeout: Duration,
) -> Result<(), SessionError> {
    link.set_write_timeout(Some(WRITE_SLICE))
        .map_err(SessionError::Link)?;
    let clock = Clock::new();
    let now = clock.now();
    let mut sm = Dest::new(DestConfig::default(), now);
    let refusal: Refusal = refusal.into();
    sm.refuse(now, refusal.wire())
        .map_err(|e| SessionError::Internal(e.to_string()))?;
    let mut ctl = [0u8; MAX_CONTROL_FRAME_LEN + 64];
    let mut written = Ok(());
    while let Some(n) = sm
        .poll_transmit(&mut ctl)
        .map_err(|e| SessionError::Internal(e.to_string()))?
    {
        let deadline = std::time::Instant::now() + write_timeout;
        if let Err(e) = write_frame(&mut link, &[&ctl[..n]], deadline, &mut || false) {
            written = Err(SessionError::Link(match e.fail {
                super::link::WriteFail::Io(e) => e,
                _ => std::io::Error::new(std::io::ErrorKind::TimedOut, "the refusal was not read"),
            }));
            break;
        }
    }
    // Our direction first (the source reads the refusal, then EOF).
    link.close_write();
    link.shutdown();
    written
}

/// Receives one guest over `link` with the libxc stream as image
/// ([`LibxcDecoder`]). See [`run_dest_with_decoder`].
pub fn run_dest<L, S, F, E>(
    link: L,
    admit: F,
    opts: &DestOptions,
    journal: &mut dyn JournalSink,
    clock: &Clock,
) -> Result<DestReport, SessionError>
where
    L: Link,
    S: SinkGuest,
    F: FnMut(&AdmissionRequest, Option<&[u8]>) -> Result<S, E>,
    E: Into<Refusal>,
{
    run_dest_with_decoder(link, admit, &mut LibxcDecoder::new(), opts, journal, clock)
}

/// Receives one guest over a freshly accepted `link` (after the host's
/// hosts-allow check).
///
/// `admit` decides admission from the request and the guest's
/// configuration when the source sent one (libxl's JSON, UTF-8, at most
/// [`relocd_core::protocol::MAX_GUEST_CONFIG_LEN`] bytes): it checks
/// capacity, name conflicts, devices and policy, and either creates the empty, paused domain and returns it as
/// the sink, or returns the refusal: a [`Refusal`] (reason and a detail
/// for the source's operator, e.g. `not enough free memory for web1
/// (needs 129 MiB, has 64 MiB)`) or a bare `RefuseReason`. Blocks until
/// the session is over. On `Ok` the guest runs here (journal: `Commit`,
/// then `Done`); on `Err` no copy is left here (the sink was destroyed).
///
/// A failure here after admission (the sink refuses pages, the journal
/// or the unpause fails) aborts with `DestFailed` and a detail that names
/// what failed (`writing pages: ...`), which the source reports.
pub fn run_dest_with_decoder<L, S, F, D, E>(
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
    F: FnMut(&AdmissionRequest, Option<&[u8]>) -> Result<S, E>,
    E: Into<Refusal>,
    D: ImageDecoder,
{
    let started = std::time::Instant::now();
    link.set_read_timeout(Some(POLL_INTERVAL))
        .map_err(SessionError::Link)?;
    // Each write call waits a slice; the frame's deadline is the option.
    link.set_write_timeout(Some(WRITE_SLICE))
        .map_err(SessionError::Link)?;
    let wt = opts.write_timeout;
    let mut sm = Dest::new(opts.config, clock.now());
    let mut sink: Option<S> = None;
    let mut req: Option<AdmissionRequest> = None;
    let mut ctl = vec![0u8; MAX_CONTROL_FRAME_LEN + 64];
    let mut body: Vec<u8> = Vec::new();
    let mut unpacked: Vec<u8> = Vec::new();
    let mut unpack_scratch: Vec<u8> = Vec::new();
    let mut link_dead = false;
    let mut commit_journaled = false;
    let mut failure: Option<SessionError> = None;
    // Our own refusal, with its detail, to return.
    let mut refused: Option<Refusal> = None;
    // The guest's configuration, when the source sent one.
    let mut guest_config: Option<Vec<u8>> = None;
    let mut last = relocd_core::protocol::Receive::default();
    loop {
        let now = clock.now();
        while let Some(a) = sm.poll_action() {
            let now = clock.now();
            match a {
                DestAction::Admit(r) => {
                    match admit(&r, guest_config.as_deref()) {
                        Ok(s) => sink = Some(s),
                        Err(e) => refused = Some(e.into()),
                    }
                    req = Some(r);
                    let decision = refused.as_ref().map_or(Ok(()), |r| Err(r.wire()));
                    let _ = sm.handle_admission(now, decision);
                }
                DestAction::CompleteImage => {
                    let mut text = String::new();
                    let sched = sm.receive().and_then(|r| r.sched);
                    let result = match sink.as_mut() {
                        Some(s) if decoder.is_complete() => match sched
                            .map_or(Ok(()), |p| s.set_sched_params(p))
                            .map_err(|e| guest_err("set the scheduling parameters", e))
                            .and_then(|()| {
                                s.complete().map_err(|e| guest_err("complete the image", e))
                            }) {
                            Ok(()) => Ok(()),
                            Err(f) => {
                                text = f.to_string();
                                failure = Some(f);
                                Err(AbortReason::DestFailed)
                            }
                        },
                        _ => {
                            text = "the image ended before its END record".into();
                            Err(AbortReason::BadImage)
                        }
                    };
                    let result = result.map_err(|reason| msg::Abort::new(reason, &text));
                    let _ = sm.handle_image_complete(now, result);
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
                            let _ = sm.handle_journal_failed(now, &e.to_string());
                            failure = Some(SessionError::Journal(e));
                        }
                    }
                }
                DestAction::Unpause => {
                    let r = match sink.as_mut() {
                        Some(s) => s.unpause().map_err(|e| format!("{e:?}")),
                        None => Err("no guest".to_owned()),
                    };
                    if let Err(e) = &r {
                        failure = Some(SessionError::Guest {
                            what: "unpause",
                            detail: e.clone(),
                        });
                    }
                    let _ = sm.handle_unpaused(now, r.as_ref().map(|_| ()).map_err(|e| e.as_str()));
                }
                DestAction::Finished(o) => {
                    // A last answer (Committed, Refused, Abort) if any.
                    flush(&mut sm, &mut link, &mut ctl, &mut link_dead, now, wt);
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
                            if let (Some(r), relocd_core::protocol::Error::Refused(_)) =
                                (refused, e)
                            {
                                return Err(SessionError::Refused(r));
                            }
                            Err(SessionError::from_protocol(e, sm.peer_detail()))
                        }
                    };
                }
            }
        }
        if let Some(r) = sm.receive() {
            last = r;
        }
        flush(&mut sm, &mut link, &mut ctl, &mut link_dead, now, wt);
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
        let end = read_in(&mut link, &mut [&mut hdr], &mut sm, clock);
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
        let forms = Forms {
            lz4: last.features.contains(Features::COMPRESS),
            zero: last.features.contains(Features::ZERO_PAGES),
        };
        // The body's start first: a zero-elided image chunk's pages go
        // from the link straight into the guest.
        let start = if sink.is_some() && forms.zero {
            len.min(STREAM_PEEK)
        } else {
            len
        };
        body.resize(start, 0);
        let end = read_in(&mut link, &mut [&mut body], &mut sm, clock);
        if !frame_read(end, &mut sm, &mut link, &mut link_dead, clock) {
            continue;
        }
        let streamed = match streamable_head(&body, len, forms) {
            // (A chunk shorter than what was read first is read whole.)
            Some((payload, head)) if start < len && head >= start => {
                // The rest of the chunk's head: its bitmap and prefix.
                body.resize(head, 0);
                let end = read_in(&mut link, &mut [&mut body[start..]], &mut sm, clock);
                if !frame_read(end, &mut sm, &mut link, &mut link_dead, clock) {
                    continue;
                }
                Some(payload)
            }
            _ => None,
        };
        let now = clock.now();
        let result = if let Some(payload) = streamed {
            if sm.handle_image(now, len - payload).is_err() {
                continue;
            }
            let Some(s) = sink.as_mut() else {
                continue;
            };
            let chunk = &body[payload + 1..];
            let r = match super::pack::read_elided_head(chunk, len - payload - 1) {
                Ok((elided, _)) => {
                    let mut pages = LinkPages {
                        link: &mut link,
                        left: len - body.len(),
                        sm: &mut sm,
                        clock,
                        end: ReadEnd::Done,
                    };
                    let r = decoder.apply_elided(elided, &mut pages, s);
                    let end = pages.end;
                    if !frame_read(end, &mut sm, &mut link, &mut link_dead, clock) {
                        continue;
                    }
                    r
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    Err(ImageError::Invalid("a packed image chunk is damaged"))
                }
            };
            Some(r)
        } else {
            if body.len() < len {
                let at = body.len();
                body.resize(len, 0);
                let end = read_in(&mut link, &mut [&mut body[at..]], &mut sm, clock);
                if !frame_read(end, &mut sm, &mut link, &mut link_dead, clock) {
                    continue;
                }
            }
            let now = clock.now();
            let image = match sm.handle_frame(now, &body) {
                Ok(Some(Payload::Image(image))) => Some(image),
                Ok(Some(Payload::GuestConfig(c))) => {
                    guest_config = Some(c.to_vec());
                    None
                }
                _ => None,
            };
            image.map(|image| match (sink.as_mut(), forms.tagged()) {
                (Some(s), false) => decoder.apply(image, s),
                (Some(s), true) => {
                    // Zero pages stay markers down to the sink, which
                    // clears them itself where it can.
                    match super::pack::unpack_elided(
                        image,
                        forms,
                        &mut unpacked,
                        &mut unpack_scratch,
                    ) {
                        Ok(Unpacked::Whole(chunk)) => decoder.apply(chunk, s),
                        Ok(Unpacked::Elided(chunk, mut data)) => {
                            decoder.apply_elided(chunk, &mut data, s)
                        }
                        Err(e) => {
                            tracing::warn!("{e}");
                            Err(ImageError::Invalid("a packed image chunk is damaged"))
                        }
                    }
                }
                (None, _) => Err(ImageError::Order("image before admission")),
            })
        };
        if let Some(Err(e)) = result {
            let now = clock.now();
            failure.get_or_insert(SessionError::Image(e));
            let (reason, text) = match e {
                // What failed and what the backend said.
                ImageError::Sink(step) => (
                    AbortReason::DestFailed,
                    format!(
                        "{step}: {}",
                        decoder.sink_failure().unwrap_or("the guest refused")
                    ),
                ),
                e => (AbortReason::BadImage, e.to_string()),
            };
            let _ = sm.abort(now, msg::Abort::new(reason, &text));
        }
    }
}

/// Bytes of a frame body read before deciding how to read the rest:
/// the image tag, its length (at most 4 bytes), the chunk's tag and a
/// zero-elided chunk's header.
const STREAM_PEEK: usize = 1 + 4 + 1 + super::pack::ELIDED_HEADER_LEN;

/// When `start`, the beginning of a frame body of `len` bytes, is an
/// image chunk whose pages can be read straight into the guest (a
/// zero-elided chunk, uncompressed): where its payload begins, and how
/// much of the body comes before its pages (all of which is read first).
fn streamable_head(start: &[u8], len: usize, forms: Forms) -> Option<(usize, usize)> {
    let payload = msg::image_payload_offset(start.get(..6)?, len)?;
    if !super::pack::is_elided(*start.get(payload)?, forms) {
        return None;
    }
    let head = super::pack::elided_head_len(start.get(payload + 1..)?)?;
    let end = (payload + 1).checked_add(head)?;
    (end <= len).then_some((payload, end))
}

/// Fills `bufs` from the link, in order; while it waits, the machine's
/// deadlines are kept, and the read stops once the session is over.
fn read_in<L: Link>(link: &mut L, bufs: &mut [&mut [u8]], sm: &mut Dest, clock: &Clock) -> ReadEnd {
    let mut idle = || {
        sm.handle_timeout(clock.now());
        sm.outcome().is_some()
    };
    read_full_vectored(link, bufs, &mut idle)
}

/// The pages of a chunk, read off the link as they are applied.
struct LinkPages<'a, L> {
    link: &'a mut L,
    /// Bytes of the chunk not read yet.
    left: usize,
    sm: &'a mut Dest,
    clock: &'a Clock,
    /// How the last read ended.
    end: ReadEnd,
}

impl<L: Link> PageSource for LinkPages<'_, L> {
    fn bytes_left(&self) -> usize {
        self.left
    }

    fn as_slice(&self) -> Option<&[u8]> {
        None
    }

    fn fill(&mut self, runs: &mut [&mut [u8]]) -> bool {
        let want: usize = runs.iter().map(|r| r.len()).sum();
        if want > self.left {
            return false;
        }
        self.end = read_in(self.link, runs, self.sm, self.clock);
        if !matches!(self.end, ReadEnd::Done) {
            return false;
        }
        self.left -= want;
        true
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

fn flush<L: Link>(
    sm: &mut Dest,
    link: &mut L,
    ctl: &mut [u8],
    link_dead: &mut bool,
    now: Instant,
    write_timeout: Duration,
) {
    while let Ok(Some(n)) = sm.poll_transmit(ctl) {
        if *link_dead {
            continue;
        }
        let deadline = std::time::Instant::now() + write_timeout;
        if write_frame(link, &[&ctl[..n]], deadline, &mut || false).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use relocd_core::guest::PAGE_SIZE;
    use relocd_core::protocol::msg::Msg;

    /// A frame body carrying `payload` as an image chunk.
    fn image_body(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; payload.len() + 64];
        let n = msg::encode(&Msg::Image(payload), &mut b).unwrap();
        b.truncate(n);
        b.split_off(4)
    }

    #[test]
    fn only_an_uncompressed_zero_elided_chunk_is_read_into_the_guest() {
        let zero = Forms {
            lz4: false,
            zero: true,
        };
        // Three pages, the middle one zeros, behind a 24-byte prefix.
        let prefix = [0x11u8; 24];
        let pages = [vec![1u8; PAGE_SIZE], vec![0; PAGE_SIZE], vec![3; PAGE_SIZE]];
        let runs: Vec<&[u8]> = pages.iter().map(|p| &p[..]).collect();
        let mut wire = Vec::new();
        let mut bufs = super::super::pack::PackBufs::default();
        super::super::pack::pack_chunk(zero, &[&prefix], &runs, &mut bufs, |parts, _| {
            wire = parts.concat();
        });
        let body = image_body(&wire);
        let (payload, head) = streamable_head(&body, body.len(), zero).unwrap();
        assert_eq!(&body[payload..], &wire[..]);
        // What follows the head is the two pages with data.
        assert_eq!(&body[head..], &[&pages[0][..], &pages[2][..]].concat()[..]);
        let (e, at) = super::super::pack::read_elided_head(
            &body[payload + 1..head],
            body.len() - payload - 1,
        )
        .unwrap();
        assert_eq!(
            (e.prefix, e.pages, at),
            (&prefix[..], 3, head - payload - 1)
        );
        // The session did not agree on zero pages; another tag; a header
        // that claims more than the frame holds; not an image.
        assert_eq!(streamable_head(&body, body.len(), Forms::default()), None);
        let mut raw = body.clone();
        raw[payload] = 0;
        assert_eq!(streamable_head(&raw, raw.len(), zero), None);
        let mut long = body.clone();
        long[payload + 1..payload + 5].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert_eq!(streamable_head(&long, long.len(), zero), None);
        let mut other = body.clone();
        other[0] = 0;
        assert_eq!(streamable_head(&other, other.len(), zero), None);
        assert_eq!(streamable_head(&body[..4], body.len(), zero), None);
    }
}
