//! `relocd save` and `relocd restore`, for every backend: the guest as an
//! xl save file.
//!
//! The file is what `xl save` writes: xl's header, the domain's
//! configuration (libxl JSON with its trailing NUL, from
//! [`Backend::save_config`]), the libxl v2 stream with its
//! `LIBXC_CONTEXT`, and inside it the same libxc stream a migration sends
//! ([`LibxcEncoder`]: the guest's own records at Xen's `save_ops` points,
//! the pages of every round, the vCPU state), then libxl's `END`.
//!
//! Save runs the page loop of the core (`relocd_core::precopy::drive`):
//! offline, the guest is stopped first and every page is written once;
//! live (`--live`), round 1 writes every page while it runs, the following
//! rounds what it dirtied, until the pre-copy policy says stop; then it is
//! stopped and the rest goes out. `--bandwidth` caps the write rate of the
//! live rounds. The save is journaled as a source session (`prepared`
//! before the guest is touched, `resolved` after), so a daemon killed while
//! the guest is stopped for it has the next one restart it.
//!
//! Where the file goes ([`SaveTarget`]): a regular file (or a new one) is
//! written under a temporary name of relocd's own, created exclusively next
//! to it, fsynced, renamed over `FILE` and the directory fsynced, so a
//! crash or an error never leaves a half-written `FILE` and never touches
//! another file. A character device or a FIFO is written in place, as `xl
//! save` streams into it. A directory, or anything else that is not a
//! regular file, is refused before the guest is touched. On any failure
//! before the file is complete, the temporary file is removed and the
//! guest runs again here; after it, the guest is destroyed, or resumed with
//! `-c`.
//!
//! Restore reads the configuration (bounded), asks the backend to admit and
//! build the empty, paused domain, applies the stream, and lets the guest
//! run only once the stream is complete; on any failure the domain is
//! destroyed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use relocd_core::guest::{GuestType, PageType, SinkGuest, SourceGuest, PAGE_SIZE};
use relocd_core::precopy::drive::{self, BatchBuf, DriveError};
use relocd_core::precopy::{
    Decision, DefaultPolicy, Phase as PcPhase, PolicyConfig, PrecopyConfig, MAX_BATCH_SIZE,
};
use relocd_core::stream::reader::{Decoder, Event, Options};

use super::guard::{TrackedSink, TrackedSource};
use super::{policy, Backend, Engine, NewGuest};
use crate::api::{
    CommandError, DomainInfo, ErrorKind, Phase, Progress, ProgressSink, RestoreRequest,
    SaveRequest, TransferSummary,
};
use crate::journal::{CommitState, JournalEntry, Role};
use crate::session::{
    encode_head, encode_tail, mib_per_s, Clock, ImageDecoder, ImageEncoder, LibxcDecoder,
    LibxcEncoder, SessionError,
};

/// The longest xl configuration a restore reads (1 MiB).
pub const MAX_CONFIG_LEN: u64 = 1 << 20;
/// Read size when restoring.
const READ_CHUNK: usize = 1 << 20;

fn err(kind: ErrorKind, msg: impl Into<String>) -> CommandError {
    CommandError::new(kind, msg)
}

fn session_err(e: SessionError) -> CommandError {
    err(ErrorKind::Internal, e.to_string())
}

/// Where a save writes (module doc).
#[derive(Debug)]
pub enum SaveTarget {
    /// A regular file, new or replaced: written as `tmp`, renamed to
    /// `file`.
    Replace {
        /// The file asked for (the one a symbolic link names: the link
        /// stays).
        file: PathBuf,
        /// The temporary file beside it.
        tmp: PathBuf,
        /// The replaced file's mode and owner, given to the new one.
        keep: Option<(u32, u32, u32)>,
    },
    /// A character device or a FIFO, written in place.
    InPlace(PathBuf),
}

impl SaveTarget {
    /// Decides where a save to `file` writes, before the guest is touched:
    /// refuses a directory and anything else that is neither a regular
    /// file, a character device nor a FIFO, and a missing directory.
    pub fn for_file(file: &Path) -> Result<SaveTarget, CommandError> {
        let refuse = |why: String| {
            err(
                ErrorKind::BadRequest,
                format!("cannot save to {}: {why}", file.display()),
            )
        };
        match std::fs::metadata(file) {
            Ok(m) if m.is_dir() => Err(refuse(
                "it is a directory; name a file (in it, or elsewhere)".into(),
            )),
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_fifo() => {
                Ok(SaveTarget::InPlace(file.to_owned()))
            }
            Ok(m) if !m.is_file() => Err(refuse(
                "it is neither a regular file, a character device nor a FIFO".into(),
            )),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                // Through a symbolic link, the file it names is replaced.
                let real = std::fs::canonicalize(file).map_err(|e| refuse(e.to_string()))?;
                Ok(Self::replace(
                    &real,
                    Some((m.mode() & 0o7777, m.uid(), m.gid())),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = parent(file);
                match std::fs::metadata(dir) {
                    Ok(m) if m.is_dir() => Ok(Self::replace(file, None)),
                    Ok(_) => Err(refuse(format!("{} is not a directory", dir.display()))),
                    Err(e) => Err(refuse(format!("{}: {e}", dir.display()))),
                }
            }
            Err(e) => Err(refuse(e.to_string())),
        }
    }

    fn replace(file: &Path, keep: Option<(u32, u32, u32)>) -> SaveTarget {
        let base = file
            .file_name()
            .map_or_else(|| "save".into(), |n| n.to_string_lossy().into_owned());
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = parent(file).join(format!(
            ".{base}.relocd-{}-{nonce:08x}.partial",
            std::process::id()
        ));
        SaveTarget::Replace {
            file: file.to_owned(),
            tmp,
            keep,
        }
    }

    /// The path written to.
    fn path(&self) -> &Path {
        match self {
            SaveTarget::Replace { tmp, .. } => tmp,
            SaveTarget::InPlace(p) => p,
        }
    }

    /// Opens what is written to: the temporary file created exclusively
    /// (never an existing file), or the device or FIFO.
    ///
    /// A FIFO is opened without waiting for a reader: with none, the save is
    /// refused (an open would wait for ever, past any cancel); the writes
    /// then wait for the reader in short steps ([`Patient`]).
    fn open(&self) -> Result<File, CommandError> {
        let fifo = matches!(self, SaveTarget::InPlace(p)
            if std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()));
        let r = match self {
            SaveTarget::Replace { tmp, .. } => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp),
            SaveTarget::InPlace(p) if fifo => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p),
            SaveTarget::InPlace(p) => OpenOptions::new().write(true).open(p),
        };
        r.map_err(|e| {
            let why = if fifo && e.raw_os_error() == Some(libc::ENXIO) {
                "it is a FIFO that no program reads; start the reader first".to_owned()
            } else {
                e.to_string()
            };
            err(
                ErrorKind::BadRequest,
                format!("cannot save to {}: {why}", self.path().display()),
            )
        })
    }

    /// The file is complete: fsync and rename into place (a regular file),
    /// with the replaced file's mode and owner.
    fn commit(&self, f: File) -> Result<(), CommandError> {
        let SaveTarget::Replace { file, tmp, keep } = self else {
            return Ok(());
        };
        if let Some((mode, uid, gid)) = *keep {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(uid), Some(gid)) {
                tracing::warn!(file = %file.display(), "keeping the file's owner: {e}");
            }
            if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(mode)) {
                tracing::warn!(file = %file.display(), "keeping the file's mode: {e}");
            }
        }
        f.sync_all()
            .map_err(|e| err(ErrorKind::Internal, format!("fsync {}: {e}", tmp.display())))?;
        drop(f);
        std::fs::rename(tmp, file).map_err(|e| {
            err(
                ErrorKind::Internal,
                format!("renaming {} to {}: {e}", tmp.display(), file.display()),
            )
        })?;
        if let Ok(d) = File::open(parent(file)) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// A failed save, once [`open`](Self::open) succeeded: the temporary
    /// file it created goes (nothing else is touched).
    fn discard(&self) {
        if let SaveTarget::Replace { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn parent(file: &Path) -> &Path {
    file.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A writer over a file that may be non-blocking (a FIFO): a write the
/// reader is not ready for waits in short steps, for at most `stall`
/// without progress (a reader that stopped reading fails the save).
struct Patient {
    f: File,
    stall: std::time::Duration,
}

impl Write for Patient {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.f.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if since.elapsed() > self.stall {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the FIFO's reader stopped reading",
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

/// A writer that counts what goes through.
struct Counted<W> {
    w: W,
    bytes: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, parts: &[&[u8]]) -> Result<(), CommandError> {
        for p in parts {
            self.w
                .write_all(p)
                .map_err(|e| err(ErrorKind::Internal, format!("writing the file: {e}")))?;
            self.bytes += p.len() as u64;
        }
        Ok(())
    }
}

/// What the page loop of a save is asked.
#[derive(Clone, Copy, Debug)]
struct ImageOptions {
    live: bool,
    bandwidth: Option<u64>,
    policy: PolicyConfig,
}

/// What the page loop did.
struct Written {
    rounds: u32,
    pages: u64,
    stopped_at: Option<Instant>,
}

fn drive_err<E: std::fmt::Debug + std::fmt::Display>(e: DriveError<E>) -> CommandError {
    match e {
        DriveError::Guest(g) => err(ErrorKind::Internal, format!("the guest: {g}")),
        other => err(ErrorKind::Internal, other.to_string()),
    }
}

/// Writes the whole image of `src` through `encoder` into `out` (module
/// doc). Cancelled when the client cancels or `stopping` is set.
fn write_image<G>(
    src: &mut G,
    encoder: &mut LibxcEncoder,
    out: &mut Counted<impl Write>,
    opts: ImageOptions,
    progress: &mut dyn ProgressSink,
    stopping: &AtomicBool,
) -> Result<Written, CommandError>
where
    G: SourceGuest,
    G::Error: std::fmt::Display,
{
    let info = src
        .info()
        .map_err(|e| err(ErrorKind::Internal, format!("the guest: {e}")))?;
    let mut chunk = Vec::new();
    encode_head(encoder, src, &info, &mut chunk).map_err(session_err)?;
    out.put(&[&chunk])?;
    let clock = Clock::new();
    let words = info.bitmap_words();
    let mut bitmap = vec![0u64; words];
    let mut scratch = vec![0u64; words];
    let cfg = PrecopyConfig {
        bandwidth_limit: opts.bandwidth,
    };
    let policy = DefaultPolicy::new(opts.policy);
    let mut stopped_at = None;
    let mut pc = if opts.live {
        drive::start_live(src, &mut bitmap, cfg, policy, clock.now()).map_err(drive_err)?
    } else {
        stopped_at = Some(Instant::now());
        drive::start_offline(src, &mut bitmap, cfg, policy, clock.now()).map_err(drive_err)?
    };
    let mut pfns = vec![0u64; MAX_BATCH_SIZE];
    let mut types = vec![PageType::NOTAB; MAX_BATCH_SIZE];
    let mut data = vec![0u8; MAX_BATCH_SIZE * PAGE_SIZE];
    let mut batches = 0u64;
    let cancelled = |progress: &mut dyn ProgressSink| {
        progress.is_cancelled() || stopping.load(Ordering::SeqCst)
    };
    loop {
        loop {
            let buf = BatchBuf {
                pfns: &mut pfns,
                types: &mut types,
                data: &mut data,
            };
            // The pages go to the file from where the guest lends them.
            let before = out.bytes;
            let sent = drive::send_batch(&mut pc, src, &bitmap, buf, |b| {
                chunk.clear();
                encoder
                    .pages(b.pfns, b.types, b.runs, &mut chunk)
                    .map_err(|e| session_err(e.into()))?;
                out.put(&[&chunk])?;
                out.put(b.runs)?;
                Ok::<_, CommandError>(b.pfns.len() as u64)
            });
            let Some(n) = sent.map_err(drive_err)?.transpose()? else {
                break;
            };
            let wrote = out.bytes - before;
            if let Some(at) = pc.record_batch(clock.now(), n, wrote, wrote) {
                // Sleep in short steps, so a cancel acts at once.
                while clock.now() < at {
                    if cancelled(progress) {
                        break;
                    }
                    let wait = at.saturating_duration_since(clock.now());
                    let wait = std::time::Duration::from_nanos(wait.as_nanos())
                        .min(std::time::Duration::from_millis(50));
                    std::thread::sleep(wait);
                }
            }
            batches += 1;
            if batches % 8 == 0 {
                let p = pc.progress();
                let mut r = Progress::phase(match pc.phase() {
                    PcPhase::Live(_) => Phase::Precopy,
                    _ => Phase::StopAndCopy,
                });
                r.round = match pc.phase() {
                    PcPhase::Live(n) => n,
                    _ => 0,
                };
                r.pages_sent = p.total_pages_sent;
                r.pages_total = info.p2m_size;
                r.dirty_pages = p.round_pages.saturating_sub(p.round_pages_sent);
                r.bytes_sent = out.bytes;
                r.dirty_rate_bytes_per_s = p
                    .last_round
                    .and_then(|l| super::dirty_rate(l.dirty_count, l.round_time.into()));
                if progress.report(&r).is_err() || cancelled(progress) {
                    return Err(err(ErrorKind::Cancelled, "save cancelled"));
                }
            }
        }
        match pc.phase() {
            PcPhase::Live(round) => {
                match drive::end_live_round(&mut pc, src, &mut bitmap, clock.now())
                    .map_err(drive_err)?
                {
                    Decision::ContinuePrecopy => tracing::debug!(round, "another live round"),
                    Decision::StopAndCopy => {
                        stopped_at = Some(Instant::now());
                        drive::suspend_for_final(
                            &mut pc,
                            src,
                            &mut bitmap,
                            &mut scratch,
                            clock.now(),
                        )
                        .map_err(drive_err)?;
                    }
                    Decision::Abort => {
                        return Err(err(
                            ErrorKind::Refused,
                            "the guest dirties memory faster than the file is written; \
                             save abandoned, the guest keeps running",
                        ))
                    }
                }
            }
            _ => break,
        }
    }
    let summary = pc
        .finish(clock.now())
        .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
    chunk.clear();
    encode_tail(encoder, src, &info, &mut chunk).map_err(session_err)?;
    encoder
        .close(&mut chunk)
        .map_err(|e| session_err(e.into()))?;
    out.put(&[&chunk])?;
    Ok(Written {
        rounds: summary.live_rounds + 1,
        pages: summary.total_pages_sent,
        stopped_at,
    })
}

/// `relocd save` (module doc).
pub(crate) fn save<B: Backend>(
    e: &Engine<B>,
    req: &SaveRequest,
    progress: &mut dyn ProgressSink,
) -> Result<TransferSummary, CommandError> {
    let started = Instant::now();
    let (d, _claim) = e.source_domain(&req.domain, super::Purpose::Save)?;
    // Counted, so a stopping daemon waits for the save to stop.
    let _active = super::Active::new(&e.active);
    let name = d.name.clone();
    let target = SaveTarget::for_file(&req.file)?;
    let config = e.backend.save_config(&d);
    let src = e.backend.open_source(&d)?;
    let mut src = TrackedSource::new(src, &name, e.stopped.clone(), e.crashed.clone());
    let key = format!("save-{:016x}", e.session_id());
    let entry = |state| JournalEntry::now(&name, &key, Role::Source, state);
    e.journal
        .record(&entry(CommitState::Prepared))
        .map_err(|e| err(ErrorKind::Internal, format!("journal: {e}")))?;
    let resolved = || {
        if let Err(err) = e.journal.record(&entry(CommitState::Resolved)) {
            tracing::error!(domain = %name, "journal: {err}");
        }
    };
    let opts = ImageOptions {
        live: req.live,
        bandwidth: req.bandwidth_bytes_per_s,
        policy: policy(None, None, false),
    };
    let f = match target.open() {
        Ok(f) => f,
        Err(failure) => {
            // Nothing was created, and the guest not touched.
            resolved();
            return Err(failure);
        }
    };
    let written = (|| -> Result<(Written, u64), CommandError> {
        let patient = Patient {
            f,
            stall: e.cfg.io_timeout,
        };
        let mut out = Counted {
            w: BufWriter::with_capacity(1 << 20, patient),
            bytes: 0,
        };
        let mut encoder = LibxcEncoder::xl_file(&config);
        let w = write_image(
            &mut src,
            &mut encoder,
            &mut out,
            opts,
            progress,
            &e.stopping,
        )?;
        let f = out
            .w
            .into_inner()
            .map_err(|e| {
                err(
                    ErrorKind::Internal,
                    format!("writing the file: {}", e.error()),
                )
            })?
            .f;
        target.commit(f)?;
        Ok((w, out.bytes))
    })();
    let (w, bytes) = match written {
        Ok(r) => r,
        Err(failure) => {
            target.discard();
            let _ = src.disable_logdirty();
            if src.suspended {
                if let Err(r) = src.resume() {
                    tracing::error!(domain = %name, "resuming after a failed save: {r}");
                    resolved();
                    return Err(err(
                        failure.kind,
                        format!("{}; and resuming the guest failed: {r}", failure.message),
                    ));
                }
            }
            resolved();
            tracing::warn!(domain = %name, file = %req.file.display(), error = %failure.message,
                "save failed; the guest runs here");
            if failure.kind == ErrorKind::Cancelled {
                return Err(err(
                    ErrorKind::Cancelled,
                    format!("save cancelled; {name} keeps running here, no file was written"),
                ));
            }
            return Err(failure);
        }
    };
    // The file is complete: the point of no return.
    let _ = src.disable_logdirty();
    let fate = if req.keep_running {
        src.resume()
    } else {
        src.destroy()
    };
    let downtime = w.stopped_at.map(|t| t.elapsed());
    resolved();
    if let Err(r) = fate {
        return Err(err(
            ErrorKind::Internal,
            format!(
                "{name} is saved in {}, but {} it failed: {r}",
                req.file.display(),
                if req.keep_running {
                    "resuming"
                } else {
                    "destroying"
                }
            ),
        ));
    }
    e.backend.saved(&d, !req.keep_running);
    let total = started.elapsed();
    tracing::info!(domain = %name, file = %req.file.display(), bytes, rounds = w.rounds, "saved");
    Ok(TransferSummary {
        domain: name,
        rounds: w.rounds,
        pages_sent: w.pages,
        bytes_sent: bytes,
        downtime_ms: downtime.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        total_ms: total.as_secs_f64() * 1000.0,
        bandwidth_mib_s: mib_per_s(bytes, total),
        ..TransferSummary::default()
    })
}

/// The xl configuration at the start of a save file, its trailing NULs
/// removed; refused when it announces more than `max` bytes (before any
/// of it is kept).
pub fn read_xl_config(file: &mut File, path: &Path, max: u64) -> Result<Vec<u8>, CommandError> {
    let bad = |m: String| err(ErrorKind::BadRequest, format!("{}: {m}", path.display()));
    let mut dec = Decoder::new(Options::default());
    let mut cfg: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        let n = file.read(&mut buf).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Err(bad("ends before its config".into()));
        }
        let mut input = &buf[..n];
        loop {
            let step = dec.push(input).map_err(|e| bad(e.to_string()))?;
            input = input.get(step.consumed..).unwrap_or_default();
            match step.event {
                Some(Event::XlConfigLength(len)) if u64::from(len) > max => {
                    return Err(bad(format!("config of {len} bytes, more than {max}")))
                }
                Some(Event::XlConfig { data, .. }) => cfg.extend_from_slice(data),
                Some(Event::LibxlHeader(_)) | Some(Event::ImageHeader(_)) => break 'outer,
                Some(_) => {}
                None => break,
            }
        }
    }
    while cfg.last() == Some(&0) {
        cfg.pop();
    }
    Ok(cfg)
}

/// A UUID from libxl's text form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(u)
}

/// The guest a file's xl configuration describes (libxl JSON:
/// `c_info.name`, `c_info.uuid`, `c_info.type`, `b_info.max_memkb`,
/// `b_info.max_vcpus`). A guest with devices is refused.
pub fn guest_of_config(config: &[u8], path: &Path) -> Result<NewGuest, CommandError> {
    let bad = |m: String| err(ErrorKind::BadRequest, format!("{}: {m}", path.display()));
    if config.is_empty() {
        return Err(bad("not an xl save file with a configuration".into()));
    }
    let v: serde_json::Value = serde_json::from_slice(config).map_err(|e| {
        bad(format!(
            "not an xl save file with a JSON configuration ({e})"
        ))
    })?;
    let text = |p: &str| v.pointer(p).and_then(|n| n.as_str());
    let name = text("/c_info/name")
        .ok_or_else(|| bad("the configuration has no c_info.name".into()))?
        .to_owned();
    // No type: xl's default, PV.
    let guest_type = match text("/c_info/type") {
        Some("pv") | None => GuestType::Pv,
        Some(_) => GuestType::Hvm,
    };
    let uuid = match text("/c_info/uuid") {
        Some(u) => parse_uuid(u).ok_or_else(|| bad(format!("c_info.uuid {u:?} is not a UUID")))?,
        None => [0; 16],
    };
    let max_memkb = v
        .pointer("/b_info/max_memkb")
        .and_then(|n| n.as_u64())
        .ok_or_else(|| bad("the configuration has no b_info.max_memkb".into()))?;
    let memory_bytes = max_memkb
        .checked_mul(1024)
        .ok_or_else(|| bad("b_info.max_memkb overflows".into()))?;
    let vcpus = v
        .pointer("/b_info/max_vcpus")
        .and_then(|n| n.as_u64())
        .unwrap_or(1);
    let vcpus = u32::try_from(vcpus).map_err(|_| bad("b_info.max_vcpus out of range".into()))?;
    Ok(NewGuest {
        name,
        uuid,
        guest_type,
        memory_bytes,
        vcpus,
        config: Some(config.strip_suffix(&[0]).unwrap_or(config).to_vec()),
    })
}

/// `relocd restore` (module doc).
pub(crate) fn restore<B: Backend>(
    e: &Engine<B>,
    req: &RestoreRequest,
    progress: &mut dyn ProgressSink,
) -> Result<DomainInfo, CommandError> {
    let path = &req.file;
    let open = || {
        File::open(path).map_err(|e| {
            err(
                ErrorKind::NotFound,
                format!("cannot open {}: {e}", path.display()),
            )
        })
    };
    let config = read_xl_config(&mut open()?, path, MAX_CONFIG_LEN)?;
    let g = guest_of_config(&config, path)?;
    let name = g.name.clone();
    // Held against an incoming migration of the same name meanwhile.
    let _claim = e.claim(&name).map_err(|_| {
        err(
            ErrorKind::Exists,
            format!(
                "cannot restore {}: {name} is being received here",
                path.display()
            ),
        )
    })?;
    let refused = |r: super::Refusal| {
        let mut c = r.into_command_error();
        c.message = format!("cannot restore {}: {}", path.display(), c.message);
        c
    };
    e.backend.admit(&g).map_err(refused)?;
    let sink = e.backend.create_sink(&g).map_err(refused)?;
    let mut sink = TrackedSink {
        inner: sink,
        crashed: e.crashed.clone(),
        status: None,
    };
    let total = g.memory_bytes / PAGE_SIZE as u64;
    let ticket = e.in_flight().start(super::inflight::Start {
        direction: crate::api::Direction::Restore,
        domain: name.clone(),
        peer: None,
        file: Some(path.clone()),
        phase: Phase::Transfer,
        pages_total: total,
    });
    let progress = &mut ticket.tracking(progress);
    let result = (|| {
        let mut f = open()?;
        let mut dec = LibxcDecoder::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut read = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| {
                err(
                    ErrorKind::Internal,
                    format!("reading {}: {e}", path.display()),
                )
            })?;
            if n == 0 {
                break;
            }
            read += n as u64;
            dec.apply(&buf[..n], &mut sink)
                .map_err(|e| err(ErrorKind::BadRequest, format!("{}: {e}", path.display())))?;
            let mut p = Progress::phase(Phase::Transfer);
            p.pages_sent = dec.pages_applied().min(total);
            p.pages_total = total;
            p.bytes_sent = read;
            if progress.report(&p).is_err() || progress.is_cancelled() {
                return Err(err(ErrorKind::Cancelled, "restore cancelled"));
            }
        }
        if !dec.is_complete() {
            return Err(err(
                ErrorKind::BadRequest,
                format!("{}: the stream is incomplete", path.display()),
            ));
        }
        sink.complete()
            .map_err(|e| err(ErrorKind::BadRequest, format!("{}: {e}", path.display())))?;
        sink.unpause()
            .map_err(|e| err(ErrorKind::Internal, format!("unpause: {e}")))
    })();
    if let Err(failure) = result {
        if let Err(d) = sink.destroy() {
            tracing::error!(domain = %name, "destroying the half-built copy: {d}");
        }
        return Err(failure);
    }
    e.backend.restored(&g, &config);
    tracing::info!(domain = %name, file = %path.display(), "restored");
    e.backend
        .list()?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| err(ErrorKind::Internal, "the restored guest vanished"))
}
