//! The sending side: [`run_source`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use relocd_core::guest::{GuestInfo, PageType, Pfn, SourceGuest, PAGE_SIZE};
use relocd_core::precopy::drive::{self, BatchBuf, DriveError, Pages};
use relocd_core::precopy::{
    ConvergeConfig, ConvergePolicy, Decision, DefaultPolicy, Phase as PcPhase, PolicyConfig,
    Precopy, PrecopyConfig, Summary, MAX_BATCH_SIZE,
};
use relocd_core::protocol::journal::{Record, RecordKind, Role};
use relocd_core::protocol::{
    msg, AbortReason, ConfigOffer, Features, GuestDesc, Source, SourceAction, SourceConfig,
    SourceOutcome, IMAGE_HEADER_MAX, MAX_CONTROL_FRAME_LEN,
};
use relocd_core::time::Instant;

use super::image::{ImageEncoder, LibxcEncoder};
use super::link::{
    read_full, write_frame, Header, Link, ReadEnd, WriteError, WriteFail, WRITE_SLICE,
};
use super::pack::{Forms, PackBufs};
use super::{
    guest_err, mib_per_s, Clock, JournalSink, LinkTimeouts, Phase, Progress, SessionError,
    POLL_INTERVAL,
};

/// What the source is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceOptions {
    /// The session identifier (unique on this host; both journals use it).
    pub session: u64,
    /// Live (pre-copy rounds while the guest runs) or offline.
    pub live: bool,
    /// The domain's name as the destination will know it.
    pub name: String,
    /// The domain's UUID.
    pub uuid: [u8; 16],
    /// The pre-copy stop policy's settings (`--downtime-limit`,
    /// `--max-iters`, `--abort-if-busy`).
    pub policy: PolicyConfig,
    /// Send-rate cap in bytes per second during live rounds
    /// (`--bandwidth`).
    pub bandwidth_limit: Option<u64>,
    /// Protocol and write timeouts (`write`: the longest the write of one
    /// frame may take, however the destination's reading splits it).
    pub timeouts: LinkTimeouts,
    /// Features offered.
    pub features: Features,
    /// The guest's device configuration (libxl's JSON) for the
    /// destination, and whether the guest cannot go without it (it has
    /// devices); see [`relocd_core::protocol::ConfigOffer`].
    pub guest_config: Option<(Vec<u8>, bool)>,
    /// Auto-converge (`--auto-converge`): throttle a guest whose dirty set
    /// stops shrinking; `None` (the default) leaves it alone.
    pub auto_converge: Option<ConvergeConfig>,
}

impl SourceOptions {
    /// Defaults for a session moving `name`.
    pub fn new(session: u64, name: &str, live: bool) -> SourceOptions {
        SourceOptions {
            session,
            live,
            name: name.to_owned(),
            uuid: [0; 16],
            policy: PolicyConfig::default(),
            bandwidth_limit: None,
            timeouts: LinkTimeouts::default(),
            // Packing is the user's choice (`migrate --compress`); zero
            // pages go as markers, the scheduling parameters and the
            // guest's configuration travel, wherever the destination takes
            // them.
            features: Features(
                Features::LIVE.0
                    | Features::GUEST_CONFIG.0
                    | Features::ZERO_PAGES.0
                    | Features::SCHED.0,
            ),
            guest_config: None,
            auto_converge: None,
        }
    }
}

/// What a successful migration amounted to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceReport {
    /// The session identifier.
    pub session: u64,
    /// Whether it was live.
    pub live: bool,
    /// Live pre-copy rounds (0 offline).
    pub rounds: u32,
    /// Pages sent, all rounds (a page sent twice counts twice).
    pub pages_sent: u64,
    /// Pages sent while the guest was suspended.
    pub final_pages: u64,
    /// Bytes written to the connection: every frame, image and control.
    pub bytes_sent: u64,
    /// Bytes of migration image (libxc stream) among them, as sent (packed
    /// when both ends agreed on it).
    pub image_bytes: u64,
    /// The migration image before packing (equal to `image_bytes` when the
    /// chunks went as they are).
    pub image_bytes_unpacked: u64,
    /// Pages that travelled as a zero-page marker (`ZERO_PAGES`), not as
    /// 4 KiB each.
    pub zero_pages: u64,
    /// The guest's memory in bytes.
    pub guest_bytes: u64,
    /// The highest auto-converge throttle applied, percent of the guest's
    /// CPU time taken (0: none).
    pub throttle_percent: u8,
    /// How many times auto-converge tightened the throttle.
    pub throttle_steps: u32,
    /// From the suspend to the destination's `Committed` (its guest runs).
    pub downtime_ms: u64,
    /// From the call to the end.
    pub total_ms: u64,
    /// `bytes_sent` over the time the image flowed (from the admission to
    /// the image's end), MiB/s.
    pub bandwidth_mib_s: f64,
}

/// How many frames the reader thread may queue before it waits.
const READER_QUEUE: usize = 16;

/// What the reader thread hands over.
enum Incoming {
    Frame(Header, Vec<u8>),
    BadHeader(Header),
    Closed,
}

fn reader<L: Link>(mut link: L, tx: SyncSender<Incoming>, stop: Arc<AtomicBool>) {
    loop {
        let mut hdr: Header = [0; 4];
        let mut idle = || stop.load(Ordering::Relaxed);
        match read_full(&mut link, &mut hdr, &mut idle) {
            ReadEnd::Done => {}
            ReadEnd::Stopped => return,
            ReadEnd::Eof | ReadEnd::Failed => {
                let _ = tx.send(Incoming::Closed);
                return;
            }
        }
        // The destination only sends control messages: the bound is fixed
        // and checked before the body is read.
        let Ok(len) = msg::frame_len(hdr, MAX_CONTROL_FRAME_LEN) else {
            let _ = tx.send(Incoming::BadHeader(hdr));
            return;
        };
        let mut body = vec![0; len];
        match read_full(&mut link, &mut body, &mut idle) {
            ReadEnd::Done => {}
            ReadEnd::Stopped => return,
            ReadEnd::Eof | ReadEnd::Failed => {
                let _ = tx.send(Incoming::Closed);
                return;
            }
        }
        if tx.send(Incoming::Frame(hdr, body)).is_err() {
            return;
        }
    }
}

/// How long a failed write waits for the destination's last frames.
const LAST_WORDS: Duration = Duration::from_millis(200);

/// The longest `run_source` goes without calling its `progress` callback:
/// a caller that learns of a cancel only when it reports progress (the
/// daemon, from its client) can raise `cancel` this often, whatever the
/// session waits on.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// The last progress report, repeated when nothing new happened for
/// [`PROGRESS_INTERVAL`].
struct Beat {
    last: Progress,
    at: std::time::Instant,
}

impl Beat {
    fn new() -> Beat {
        Beat {
            last: Progress {
                phase: Phase::Handshake,
                round_pages: 0,
                round_pages_sent: 0,
                pages_sent: 0,
                bytes_sent: 0,
                dirty: 0,
                bandwidth: 0,
                projected_downtime: Duration::ZERO,
                round_time: Duration::ZERO,
            },
            at: std::time::Instant::now(),
        }
    }

    /// Reports `p`.
    fn report(&mut self, p: Progress, progress: &mut dyn FnMut(Progress)) {
        self.last = p;
        self.at = std::time::Instant::now();
        progress(p);
    }

    /// Repeats the last report if it is [`PROGRESS_INTERVAL`] old.
    fn tick(&mut self, progress: &mut dyn FnMut(Progress)) {
        if self.at.elapsed() >= PROGRESS_INTERVAL {
            self.report(self.last, progress);
        }
    }
}

/// Writes one frame to the destination with its own deadline; gives up
/// (`WriteFail::Stopped`) when `cancel` is raised before the commit is
/// journaled, and keeps the progress reports going while it blocks.
#[expect(
    clippy::too_many_arguments,
    reason = "the driver's fields, borrowed apart"
)]
fn send_frame<L: Link>(
    link: &mut L,
    parts: &[&[u8]],
    timeout: Duration,
    cancel: &AtomicBool,
    committed: bool,
    beat: &mut Beat,
    progress: &mut dyn FnMut(Progress),
    bytes_sent: &mut u64,
) -> Result<(), WriteError> {
    let deadline = std::time::Instant::now() + timeout;
    write_frame(link, parts, deadline, &mut || {
        beat.tick(progress);
        !committed && cancel.load(Ordering::Relaxed)
    })?;
    *bytes_sent += parts.iter().map(|p| p.len() as u64).sum::<u64>();
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Xfer {
    Idle,
    Live,
    Final,
    Done,
}

/// Moves `guest` to the destination at the other end of `link`, with the
/// libxc stream as image ([`LibxcEncoder`]). See
/// [`run_source_with_encoder`].
pub fn run_source<L: Link, G: SourceGuest>(
    link: L,
    guest: &mut G,
    opts: &SourceOptions,
    journal: &mut dyn JournalSink,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
    clock: &Clock,
) -> Result<SourceReport, SessionError> {
    run_source_with_encoder(
        link,
        guest,
        &mut LibxcEncoder::new(),
        opts,
        journal,
        progress,
        cancel,
        clock,
    )
}

/// Moves `guest` to the destination at the other end of `link`.
///
/// Blocks until the session is over. On `Ok` the destination runs the
/// guest and the local copy is destroyed (journal: `Commit`, then
/// `Done`). On `Err` the guest runs here again (it was resumed if it had
/// been suspended, and the dirty log is off), except for
/// [`SessionError::InDoubt`], where it stays suspended.
///
/// Setting `cancel` ends the session within about [`POLL_INTERVAL`] in
/// every state before its point of no return (the commit journaled), with
/// [`SessionError::Cancelled`]: every wait (for the destination's
/// answer, the bandwidth cap's pause, a write the destination does not
/// read) looks at it. `progress` is called after every few batches and
/// every round, and at least every [`PROGRESS_INTERVAL`] with the last
/// figures while nothing new happens, so a caller may raise `cancel`
/// from it.
///
/// The write of each frame has one deadline, `opts.timeouts.write`,
/// however the destination's reading splits it: a destination that admits
/// and then stops reading ends the session after that long, with
/// [`SessionError::Aborted`].
#[expect(clippy::too_many_arguments, reason = "the session's whole context")]
pub fn run_source_with_encoder<L: Link, G: SourceGuest>(
    link: L,
    guest: &mut G,
    encoder: &mut dyn ImageEncoder,
    opts: &SourceOptions,
    journal: &mut dyn JournalSink,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
    clock: &Clock,
) -> Result<SourceReport, SessionError> {
    let started = std::time::Instant::now();
    let info = guest.info().map_err(|e| guest_err("info", e))?;
    let desc = GuestDesc::new(&opts.name, opts.uuid, info)
        .map_err(|e| SessionError::Internal(e.to_string()))?;
    link.set_read_timeout(Some(POLL_INTERVAL))
        .map_err(SessionError::Link)?;
    // Each write call waits a slice; the frame's deadline is the option's.
    link.set_write_timeout(Some(WRITE_SLICE))
        .map_err(SessionError::Link)?;
    let rlink = link.try_clone().map_err(SessionError::Link)?;
    // Bounded: a destination that floods control frames while we block on
    // a write cannot make the reader queue without limit; it waits instead.
    let (tx, rx) = mpsc::sync_channel(READER_QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let handle = thread::Builder::new()
        .name("relocd-src-rx".into())
        .spawn(move || reader(rlink, tx, stop2))
        .map_err(SessionError::Link)?;
    let now = clock.now();
    let sm = Source::new(
        SourceConfig {
            session: opts.session,
            live: opts.live,
            features: opts.features,
            timeouts: opts.timeouts.protocol,
            guest: desc,
            guest_config: opts
                .guest_config
                .as_ref()
                .map(|(bytes, required)| ConfigOffer {
                    len: bytes.len(),
                    required: *required,
                }),
        },
        now,
    );
    let mut d = SrcDriver {
        sm,
        link,
        rx,
        guest,
        encoder,
        journal,
        progress,
        beat: Beat::new(),
        cancel,
        clock,
        opts,
        info,
        pc: None,
        bitmap: Vec::new(),
        scratch: Vec::new(),
        pfns: vec![0; MAX_BATCH_SIZE],
        types: vec![PageType::NOTAB; MAX_BATCH_SIZE],
        data: vec![0; MAX_BATCH_SIZE * PAGE_SIZE],
        chunk: Vec::new(),
        pack_bufs: PackBufs::default(),
        zero_pages: 0,
        throttle: 0,
        throttle_steps: 0,
        unpacked_bytes: 0,
        ctl: vec![0; MAX_CONTROL_FRAME_LEN + 64],
        xfer: Xfer::Idle,
        next_send: None,
        link_dead: false,
        link_reported: false,
        logdirty: false,
        suspended: false,
        commit_journaled: false,
        cancelled: false,
        failure: None,
        summary: None,
        bytes_sent: 0,
        image_bytes: 0,
        batches: 0,
        started,
        transfer_start: None,
        transfer_end: None,
        suspend_at: None,
    };
    let r = d.run();
    stop.store(true, Ordering::Relaxed);
    d.link.shutdown();
    // Dropping the driver drops the receiver, so a reader blocked on a full
    // queue wakes with an error and ends before the join.
    drop(d);
    let _ = handle.join();
    r
}

/// Why an image chunk did not go.
enum ChunkFail {
    /// The protocol machine refused the chunk (a bug here).
    Internal(String),
    /// The link failed, timed out, or the operator cancelled mid-write.
    Write(WriteError),
}

/// What writing an image chunk needs of the source driver, borrowed apart
/// from the guest so a batch can be written while the guest lends it.
struct ChunkOut<'x, L: Link> {
    sm: &'x mut Source,
    link: &'x mut L,
    timeout: Duration,
    cancel: &'x AtomicBool,
    committed: bool,
    beat: &'x mut Beat,
    progress: &'x mut dyn FnMut(Progress),
    bytes_sent: &'x mut u64,
}

impl<L: Link> ChunkOut<'_, L> {
    /// Writes one image frame: the machine's chunk header, then `parts`
    /// (`len` bytes, as packed).
    fn write(&mut self, parts: &[&[u8]], len: usize) -> Result<(), ChunkFail> {
        let mut hdr = [0u8; IMAGE_HEADER_MAX];
        let h = self
            .sm
            .image_chunk_header(len, &mut hdr)
            .map_err(|e| ChunkFail::Internal(e.to_string()))?;
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&hdr[..h]);
        all.extend_from_slice(parts);
        send_frame(
            self.link,
            &all,
            self.timeout,
            self.cancel,
            self.committed,
            self.beat,
            &mut *self.progress,
            self.bytes_sent,
        )
        .map_err(ChunkFail::Write)
    }
}

struct SrcDriver<'a, L: Link, G: SourceGuest> {
    sm: Source,
    link: L,
    rx: Receiver<Incoming>,
    guest: &'a mut G,
    encoder: &'a mut dyn ImageEncoder,
    journal: &'a mut dyn JournalSink,
    progress: &'a mut dyn FnMut(Progress),
    beat: Beat,
    cancel: &'a AtomicBool,
    clock: &'a Clock,
    opts: &'a SourceOptions,
    info: GuestInfo,
    pc: Option<Precopy<ConvergePolicy>>,
    bitmap: Vec<u64>,
    scratch: Vec<u64>,
    pfns: Vec<Pfn>,
    types: Vec<PageType>,
    data: Vec<u8>,
    chunk: Vec<u8>,
    /// Room for packing chunks for the link ([`super::pack`]).
    pack_bufs: PackBufs,
    /// Pages that travelled as a zero marker.
    zero_pages: u64,
    /// The throttle the guest runs under (percent taken), and how often
    /// it was tightened.
    throttle: u8,
    throttle_steps: u32,
    /// Image bytes before packing (`image_bytes` counts them as sent).
    unpacked_bytes: u64,
    ctl: Vec<u8>,
    xfer: Xfer,
    next_send: Option<Instant>,
    link_dead: bool,
    link_reported: bool,
    logdirty: bool,
    suspended: bool,
    commit_journaled: bool,
    cancelled: bool,
    /// The local failure that made this side abort, reported instead of
    /// the protocol's view of it.
    failure: Option<SessionError>,
    summary: Option<Summary>,
    bytes_sent: u64,
    image_bytes: u64,
    batches: u64,
    started: std::time::Instant,
    transfer_start: Option<std::time::Instant>,
    transfer_end: Option<std::time::Instant>,
    suspend_at: Option<std::time::Instant>,
}

impl<L: Link, G: SourceGuest> SrcDriver<'_, L, G> {
    fn run(&mut self) -> Result<SourceReport, SessionError> {
        loop {
            let now = self.clock.now();
            self.beat.tick(&mut *self.progress);
            if self.cancel.load(Ordering::Relaxed) && !self.cancelled {
                self.cancelled = true;
                // Refused once the commit is journaled: then it is too late.
                if self.sm.abort(now, AbortReason::Cancelled).is_ok() {
                    self.xfer = Xfer::Done;
                }
            }
            self.flush(now);
            while let Some(a) = self.sm.poll_action() {
                match a {
                    SourceAction::StartTransfer { live } => self.start(now, live),
                    SourceAction::JournalCommit { session } => self.journal_commit(now, session),
                    SourceAction::SendGuestConfig => self.send_guest_config(now),
                    SourceAction::Finished(o) => {
                        // A last Abort, if the machine queued one.
                        self.flush(now);
                        return self.finish(o);
                    }
                }
                self.flush(now);
            }
            // Frames taken here may have queued actions (a journaled
            // commit after `Prepared`): they are taken next, not after a
            // wait for more frames.
            let mut worked = self.drain_incoming(now);
            if matches!(self.xfer, Xfer::Live | Xfer::Final)
                && self.sm.outcome().is_none()
                && self.next_send.is_none_or(|t| now >= t)
            {
                self.step(now);
                worked = true;
            }
            self.sm.handle_timeout(self.clock.now());
            if !worked {
                self.wait();
            }
        }
    }

    /// Blocks until a frame arrives, a deadline passes or the poll
    /// interval ends.
    fn wait(&mut self) {
        let mut wait = POLL_INTERVAL;
        if let Some(t) = self.sm.poll_timeout() {
            wait = wait.min(self.clock.until(t));
        }
        if matches!(self.xfer, Xfer::Live | Xfer::Final) {
            if let Some(t) = self.next_send {
                wait = wait.min(self.clock.until(t));
            }
        }
        if self.link_reported {
            thread::sleep(wait.min(Duration::from_millis(5)));
            return;
        }
        match self.rx.recv_timeout(wait) {
            Ok(inc) => {
                let now = self.clock.now();
                self.incoming(now, inc);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.link_lost(self.clock.now()),
        }
    }

    /// Takes every frame the reader has; whether there was any.
    fn drain_incoming(&mut self, now: Instant) -> bool {
        let mut any = false;
        loop {
            match self.rx.try_recv() {
                Ok(inc) => {
                    self.incoming(now, inc);
                    any = true;
                }
                Err(TryRecvError::Empty) => return any,
                Err(TryRecvError::Disconnected) => {
                    // News the first time only: no spinning on a dead link.
                    let news = !self.link_reported;
                    self.link_lost(now);
                    return any || news;
                }
            }
        }
    }

    fn incoming(&mut self, now: Instant, inc: Incoming) {
        match inc {
            Incoming::Frame(hdr, body) => {
                if self.sm.frame_len(now, hdr).is_ok() {
                    // Errors have moved the machine already (call contract).
                    let _ = self.sm.handle_frame(now, &body);
                } else {
                    self.link.shutdown();
                    self.link_lost(now);
                }
            }
            Incoming::BadHeader(hdr) => {
                let _ = self.sm.frame_len(now, hdr);
                self.link.shutdown();
                self.link_lost(now);
            }
            Incoming::Closed => self.link_lost(now),
        }
    }

    fn link_lost(&mut self, now: Instant) {
        self.link_dead = true;
        if !self.link_reported {
            self.link_reported = true;
            self.sm.handle_link_error(now);
        }
        if self.xfer != Xfer::Idle {
            self.xfer = Xfer::Done;
        }
    }

    /// A write failed (`accepted`: some of the frame may have left). The
    /// destination may have said why before it closed (`Abort`,
    /// `Refused`): take the frames the reader already has, for a moment,
    /// before reporting the cut.
    fn write_failed(&mut self, now: Instant, accepted: bool) {
        self.link_dead = true;
        let until = std::time::Instant::now() + LAST_WORDS;
        while self.sm.outcome().is_none() && !self.link_reported {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Incoming::Frame(h, b)) => self.incoming(now, Incoming::Frame(h, b)),
                _ => break,
            }
        }
        self.link_reported = true;
        if accepted {
            self.sm.handle_link_error(now);
        } else {
            self.sm.handle_transmit_failed(now);
        }
        self.xfer = Xfer::Done;
    }

    /// Writes the guest's configuration frame, then lets the machine
    /// queue the admission request.
    fn send_guest_config(&mut self, now: Instant) {
        let config = self.opts.guest_config.as_ref().map_or(&[][..], |(b, _)| b);
        let mut frame = vec![0u8; config.len() + 32];
        let n = match msg::encode(&msg::Msg::GuestConfig(config), &mut frame) {
            Ok(n) => n,
            Err(e) => {
                self.failure = Some(SessionError::Internal(format!(
                    "encoding the guest's configuration: {e}"
                )));
                let _ = self.sm.abort(now, AbortReason::SourceFailed);
                return;
            }
        };
        if self.link_dead {
            self.sm.handle_link_error(now);
            return;
        }
        match self.send(&[&frame[..n]]) {
            Ok(()) => {
                let _ = self.sm.handle_guest_config_sent(now);
            }
            Err(e) => self.write_error(now, e),
        }
    }

    /// Writes the control frames the machine has queued.
    fn flush(&mut self, now: Instant) {
        loop {
            let n = match self.sm.poll_transmit(&mut self.ctl) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    self.failure = Some(SessionError::Internal(e.to_string()));
                    self.link.shutdown();
                    self.link_lost(now);
                    return;
                }
            };
            if self.link_dead {
                self.sm.handle_transmit_failed(now);
                continue;
            }
            let ctl = std::mem::take(&mut self.ctl);
            let r = self.send(&[&ctl[..n]]);
            self.ctl = ctl;
            if let Err(e) = r {
                self.write_error(now, e);
            }
        }
    }

    /// Writes one frame (see [`send_frame`]).
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), WriteError> {
        send_frame(
            &mut self.link,
            parts,
            self.opts.timeouts.write,
            self.cancel,
            self.commit_journaled,
            &mut self.beat,
            &mut *self.progress,
            &mut self.bytes_sent,
        )
    }

    /// A frame could not be written: the operator cancelled while it
    /// blocked, or the link failed or passed the frame's deadline.
    fn write_error(&mut self, now: Instant, e: WriteError) {
        match e.fail {
            WriteFail::Stopped => self.cancel_in_write(now),
            WriteFail::Io(_) | WriteFail::TimedOut => self.write_failed(now, e.accepted),
        }
    }

    /// The operator cancelled while a write blocked (before the commit
    /// was journaled). Part of a frame may have left, so the byte stream
    /// is out of step: close it (the destination reads a cut and discards
    /// its copy) and end the session as cancelled.
    fn cancel_in_write(&mut self, now: Instant) {
        self.cancelled = true;
        self.link_dead = true;
        self.link.shutdown();
        let _ = self.sm.abort(now, AbortReason::Cancelled);
        if !self.link_reported {
            self.link_reported = true;
            self.sm.handle_link_error(now);
        }
        self.xfer = Xfer::Done;
    }

    /// A local failure: remember it and give up the session, telling the
    /// destination what failed.
    fn local_failure(&mut self, now: Instant, e: SessionError) {
        let text = e.to_string();
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        let _ = self
            .sm
            .abort(now, msg::Abort::new(AbortReason::SourceFailed, &text));
        self.xfer = Xfer::Done;
    }

    fn drive_failure(&mut self, now: Instant, what: &'static str, e: DriveError<G::Error>) {
        let err = match e {
            DriveError::Guest(g) => guest_err(what, g),
            other => SessionError::Internal(format!("{what}: {other}")),
        };
        self.local_failure(now, err);
    }

    fn start(&mut self, now: Instant, live: bool) {
        self.transfer_start = Some(std::time::Instant::now());
        // The guest's own scheduling parameters travel with it.
        match self.guest.sched_params() {
            Ok(Some(p)) => {
                if let Err(e) = self.sm.handle_sched(now, p) {
                    return self.local_failure(now, SessionError::Internal(e.to_string()));
                }
            }
            Ok(None) => {}
            Err(e) => {
                return self.local_failure(now, guest_err("read the scheduling parameters", e))
            }
        }
        let words = self.info.bitmap_words();
        self.bitmap = vec![0; words];
        self.scratch = vec![0; words];
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.clear();
        let head = self.head(&mut chunk);
        if let Err(e) = head {
            self.chunk = chunk;
            self.local_failure(now, e);
            return;
        }
        let sent = self.send_chunk(now, &[&chunk]);
        self.chunk = chunk;
        if !sent {
            return;
        }
        let cfg = PrecopyConfig {
            bandwidth_limit: self.opts.bandwidth_limit,
        };
        let policy = ConvergePolicy::new(
            DefaultPolicy::new(self.opts.policy),
            self.opts.auto_converge,
        );
        if live {
            match drive::start_live(&mut *self.guest, &mut self.bitmap, cfg, policy, now) {
                Ok(pc) => {
                    self.pc = Some(pc);
                    self.logdirty = true;
                    self.xfer = Xfer::Live;
                }
                Err(e) => self.drive_failure(now, "enable log-dirty", e),
            }
        } else {
            match drive::start_offline(&mut *self.guest, &mut self.bitmap, cfg, policy, now) {
                Ok(pc) => {
                    self.pc = Some(pc);
                    self.mark_suspended(now);
                }
                Err(e) => self.drive_failure(now, "suspend", e),
            }
        }
    }

    /// The first chunk: headers, the guest's static records,
    /// `STATIC_DATA_END`, its start-of-stream records.
    fn head(&mut self, chunk: &mut Vec<u8>) -> Result<(), SessionError> {
        super::image::encode_head(&mut *self.encoder, &mut *self.guest, &self.info, chunk)
    }

    /// The last chunk: the vCPU states and the image's end.
    fn tail(&mut self, chunk: &mut Vec<u8>) -> Result<(), SessionError> {
        super::image::encode_tail(&mut *self.encoder, &mut *self.guest, &self.info, chunk)
    }

    fn mark_suspended(&mut self, now: Instant) {
        self.suspended = true;
        self.suspend_at = Some(std::time::Instant::now());
        self.xfer = Xfer::Final;
        if let Err(e) = self.sm.handle_suspended(now) {
            self.failure = Some(SessionError::Internal(e.to_string()));
            self.xfer = Xfer::Done;
        }
        self.flush(now);
    }

    /// The packing forms the session agreed on ([`super::pack`]).
    fn forms(&self) -> Forms {
        let f = self.sm.transfer().map_or(Features(0), |t| t.features);
        Forms {
            lz4: f.contains(Features::COMPRESS),
            zero: f.contains(Features::ZERO_PAGES),
        }
    }

    /// Sends one image chunk without pages (the head or the tail), packed
    /// as the session agreed ([`super::pack::pack_chunk`]). Batches go
    /// with their pages in [`batch`](Self::batch).
    fn send_chunk(&mut self, now: Instant, parts: &[&[u8]]) -> bool {
        self.flush(now);
        if self.link_dead {
            return false;
        }
        let forms = self.forms();
        let raw_len = parts.iter().map(|p| p.len()).sum();
        let mut bufs = std::mem::take(&mut self.pack_bufs);
        let (r, zeros) = super::pack::pack_chunk(forms, parts, &[], &mut bufs, |parts, len| {
            self.split().3.write(parts, len).map(|()| len)
        });
        self.pack_bufs = bufs;
        self.chunk_sent(now, r, raw_len, zeros)
    }

    /// Books a chunk sent (`Ok` with its length on the wire) or handles
    /// its failure; whether it went.
    fn chunk_sent(
        &mut self,
        now: Instant,
        r: Result<usize, ChunkFail>,
        raw_len: usize,
        zeros: usize,
    ) -> bool {
        match r {
            Ok(len) => {
                self.image_bytes += len as u64;
                self.unpacked_bytes += raw_len as u64;
                self.zero_pages += zeros as u64;
                true
            }
            Err(ChunkFail::Internal(e)) => {
                self.local_failure(now, SessionError::Internal(e));
                false
            }
            Err(ChunkFail::Write(mut e)) => {
                // Part of the image may have gone: either way the session
                // is over before its commit.
                e.accepted = true;
                self.write_error(now, e);
                false
            }
        }
    }

    /// The driver split for sending a batch while the guest lends it: the
    /// guest, the encoder, the round's bitmap, and the writer of image
    /// chunks (which borrows only what writing needs).
    fn split(&mut self) -> (&mut G, &mut dyn ImageEncoder, &[u64], ChunkOut<'_, L>) {
        let out = ChunkOut {
            sm: &mut self.sm,
            link: &mut self.link,
            timeout: self.opts.timeouts.write,
            cancel: self.cancel,
            committed: self.commit_journaled,
            beat: &mut self.beat,
            progress: &mut *self.progress,
            bytes_sent: &mut self.bytes_sent,
        };
        (&mut *self.guest, &mut *self.encoder, &self.bitmap, out)
    }

    /// One batch of the current round, or the round's end.
    fn step(&mut self, now: Instant) {
        let Some(mut pc) = self.pc.take() else {
            self.xfer = Xfer::Done;
            return;
        };
        self.step_with(now, &mut pc);
        self.pc = Some(pc);
    }

    fn step_with(&mut self, now: Instant, pc: &mut Precopy<ConvergePolicy>) {
        // The batch buffers leave `self` for the step, so the pages can be
        // sent from where the guest put them.
        let (mut pfns, mut types, mut data) = (
            std::mem::take(&mut self.pfns),
            std::mem::take(&mut self.types),
            std::mem::take(&mut self.data),
        );
        let more = self.batch(now, pc, &mut pfns, &mut types, &mut data);
        (self.pfns, self.types, self.data) = (pfns, types, data);
        if more {
            return;
        }
        match self.xfer {
            Xfer::Live => self.end_round(now, pc),
            Xfer::Final => self.end_image(now, pc),
            _ => {}
        }
    }

    /// Takes the next batch and sends it, from where the guest lends its
    /// pages when it can: `true` when one was handled (sent, or failed and
    /// the session aborted), `false` when the round has no more pages.
    fn batch(
        &mut self,
        now: Instant,
        pc: &mut Precopy<ConvergePolicy>,
        pfns: &mut [Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> bool {
        self.flush(now);
        if self.link_dead {
            return true;
        }
        let forms = self.forms();
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut bufs = std::mem::take(&mut self.pack_bufs);
        let buf = BatchBuf { pfns, types, data };
        // The guest is borrowed for the send: the rest of the driver is
        // reached through the writer alone.
        let (guest, encoder, bitmap, mut out) = self.split();
        let r = drive::send_batch(pc, guest, bitmap, buf, |p: Pages<'_>| {
            chunk.clear();
            if let Err(e) = encoder.pages(p.pfns, p.types, p.runs, &mut chunk) {
                return Err(SessionError::from(e));
            }
            let raw_len = chunk.len() + p.data_len();
            let (r, zeros) =
                super::pack::pack_chunk(forms, &[&chunk], p.runs, &mut bufs, |parts, len| {
                    out.write(parts, len).map(|()| len)
                });
            Ok((p.pfns.len() as u64, r, raw_len, zeros))
        });
        self.chunk = chunk;
        self.pack_bufs = bufs;
        let (n, r, raw_len, zeros) = match r {
            Ok(Some(Ok(sent))) => sent,
            Ok(None) => return false,
            Ok(Some(Err(e))) => {
                self.local_failure(now, e);
                return true;
            }
            Err(e) => {
                self.drive_failure(now, "read pages", e);
                return true;
            }
        };
        let wire = r.as_ref().map_or(0, |&len| len as u64);
        if self.chunk_sent(now, r, raw_len, zeros) {
            self.next_send = pc.record_batch(self.clock.now(), n, raw_len as u64, wire);
            self.batches += 1;
            if self.batches % 8 == 0 {
                self.pc_progress(pc);
            }
        }
        true
    }

    fn pc_progress(&mut self, pc: &Precopy<ConvergePolicy>) {
        let p = pc.progress();
        let phase = match p.phase {
            PcPhase::Live(r) => Phase::Live(r),
            PcPhase::Stopping | PcPhase::Final => Phase::Final,
            PcPhase::Done => Phase::Committing,
        };
        let last = p.last_round.unwrap_or_default();
        self.beat.report(
            Progress {
                phase,
                round_pages: p.round_pages,
                round_pages_sent: p.round_pages_sent,
                pages_sent: p.total_pages_sent,
                bytes_sent: self.bytes_sent,
                dirty: last.dirty_count,
                bandwidth: last.bandwidth,
                projected_downtime: last.projected_downtime.into(),
                round_time: last.round_time.into(),
            },
            &mut *self.progress,
        );
    }

    fn end_round(&mut self, now: Instant, pc: &mut Precopy<ConvergePolicy>) {
        let decision = match drive::end_live_round(pc, &mut *self.guest, &mut self.bitmap, now) {
            Ok(d) => d,
            Err(e) => return self.drive_failure(now, "read the dirty log", e),
        };
        let Some(stats) = pc.progress().last_round else {
            return self.local_failure(now, SessionError::Internal("round without figures".into()));
        };
        self.next_send = None;
        if let Err(e) = self.sm.handle_round_end(now, &stats) {
            self.failure = Some(SessionError::Internal(e.to_string()));
            self.xfer = Xfer::Done;
            return;
        }
        self.pc_progress(pc);
        let want = pc.policy().throttle();
        if want != self.throttle && decision == Decision::ContinuePrecopy {
            match self.guest.throttle(want) {
                Ok(true) => {
                    tracing::info!(
                        throttle = want,
                        round = stats.round,
                        "auto-converge: the guest's dirty set stopped shrinking; throttled"
                    );
                    self.throttle = want;
                    self.throttle_steps = pc.policy().steps();
                }
                Ok(false) => {
                    // Rounds spent on a throttle that cannot be applied
                    // would only delay the stop-and-copy.
                    tracing::warn!(
                        "auto-converge: this guest's scheduler cannot cap it; going on without"
                    );
                    pc.policy_mut().converge = None;
                }
                Err(e) => return self.local_failure(now, guest_err("throttle the guest", e)),
            }
        }
        match decision {
            Decision::ContinuePrecopy => {}
            Decision::StopAndCopy => {
                self.flush(now);
                let r = drive::suspend_for_final(
                    pc,
                    &mut *self.guest,
                    &mut self.bitmap,
                    &mut self.scratch,
                    self.clock.now(),
                );
                match r {
                    Ok(_) => self.mark_suspended(now),
                    Err(e) => {
                        // The suspend itself may have happened.
                        self.suspended = true;
                        self.drive_failure(now, "suspend", e);
                    }
                }
            }
            Decision::Abort => {
                let _ = self.sm.abort(now, AbortReason::Busy);
                self.xfer = Xfer::Done;
            }
        }
    }

    fn end_image(&mut self, now: Instant, pc: &mut Precopy<ConvergePolicy>) {
        match pc.finish(self.clock.now()) {
            Ok(s) => self.summary = Some(s),
            Err(e) => {
                return self.local_failure(now, SessionError::Internal(e.to_string()));
            }
        }
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.clear();
        if let Err(e) = self.tail(&mut chunk) {
            self.chunk = chunk;
            return self.local_failure(now, e);
        }
        let sent = self.send_chunk(now, &[&chunk]);
        self.chunk = chunk;
        if !sent {
            return;
        }
        self.xfer = Xfer::Done;
        self.transfer_end = Some(std::time::Instant::now());
        if let Err(e) = self.sm.handle_image_end(now) {
            self.failure = Some(SessionError::Internal(e.to_string()));
        }
        self.pc_progress(pc);
    }

    fn journal_commit(&mut self, now: Instant, session: u64) {
        let rec = Record {
            session,
            uuid: self.opts.uuid,
            role: Role::Source,
            kind: RecordKind::Commit,
        };
        match self.journal.record(&rec) {
            Ok(()) => {
                self.commit_journaled = true;
                let _ = self.sm.handle_journaled(now);
            }
            Err(e) => {
                let _ = self.sm.handle_journal_failed(now, &e.to_string());
                self.failure = Some(SessionError::Journal(e));
            }
        }
    }

    fn finish(&mut self, outcome: SourceOutcome) -> Result<SourceReport, SessionError> {
        let end = std::time::Instant::now();
        match outcome {
            SourceOutcome::Migrated => {
                let destroyed = self.guest.destroy();
                let rec = Record {
                    session: self.opts.session,
                    uuid: self.opts.uuid,
                    role: Role::Source,
                    kind: RecordKind::Done,
                };
                self.journal.record(&rec).map_err(SessionError::Journal)?;
                destroyed.map_err(|e| guest_err("destroy the local copy", e))?;
                let s = self.summary.unwrap_or(Summary {
                    live_rounds: 0,
                    final_pages: 0,
                    final_bytes: 0,
                    final_time: Default::default(),
                    total_pages_sent: 0,
                    total_bytes_sent: 0,
                    total_time: Default::default(),
                    bandwidth: 0,
                });
                let transfer = match (self.transfer_start, self.transfer_end) {
                    (Some(a), Some(b)) => b.saturating_duration_since(a),
                    _ => end.saturating_duration_since(self.started),
                };
                Ok(SourceReport {
                    session: self.opts.session,
                    live: self.opts.live,
                    rounds: s.live_rounds,
                    pages_sent: s.total_pages_sent,
                    final_pages: s.final_pages,
                    bytes_sent: self.bytes_sent,
                    image_bytes: self.image_bytes,
                    image_bytes_unpacked: self.unpacked_bytes,
                    zero_pages: self.zero_pages,
                    throttle_percent: self.throttle,
                    throttle_steps: self.throttle_steps,
                    guest_bytes: self.info.nr_pages * PAGE_SIZE as u64,
                    downtime_ms: self
                        .suspend_at
                        .map_or(0, |t| millis(end.saturating_duration_since(t))),
                    total_ms: millis(end.saturating_duration_since(self.started)),
                    bandwidth_mib_s: mib_per_s(self.bytes_sent, transfer),
                })
            }
            SourceOutcome::Aborted(e) => {
                let mut journal_err = None;
                if self.commit_journaled {
                    let rec = Record {
                        session: self.opts.session,
                        uuid: self.opts.uuid,
                        role: Role::Source,
                        kind: RecordKind::Aborted,
                    };
                    journal_err = self.journal.record(&rec).err();
                }
                let mut guest_failure = None;
                if self.throttle > 0 {
                    if let Err(g) = self.guest.throttle(0) {
                        guest_failure = Some(guest_err("give the guest its CPU time back", g));
                    }
                }
                if self.logdirty {
                    if let Err(g) = self.guest.disable_logdirty() {
                        guest_failure = Some(guest_err("disable log-dirty", g));
                    }
                }
                if self.suspended {
                    if let Err(g) = self.guest.resume() {
                        guest_failure = Some(guest_err("resume", g));
                    }
                }
                if let Some(f) = self.failure.take() {
                    return Err(f);
                }
                if let Some(j) = journal_err {
                    return Err(SessionError::Journal(j));
                }
                if let Some(g) = guest_failure {
                    return Err(g);
                }
                Err(SessionError::from_protocol(e, self.sm.peer_detail()))
            }
            SourceOutcome::InDoubt(e) => {
                // Stopped here until the operator decides; whichever way,
                // with its own scheduling parameters.
                if self.throttle > 0 {
                    if let Err(g) = self.guest.throttle(0) {
                        tracing::warn!("in doubt: the guest's own scheduling parameters were not restored: {g:?}");
                    }
                }
                Err(SessionError::InDoubt(e))
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
