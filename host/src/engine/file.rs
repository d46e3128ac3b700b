//! `relocd save` and `relocd restore` with the simulated hypervisor: the
//! guest as an xl save file.
//!
//! The file is what `xl save` writes: the xl header, the domain's config
//! (libxl JSON with its trailing NUL: `c_info.name`, `c_info.type`,
//! `b_info.max_memkb`, `b_info.max_vcpus`), the libxl v2 stream with its
//! `LIBXC_CONTEXT`, and inside it the libxc stream the migration sends (an
//! HVM-style image: `PAGE_DATA` batches of 1024 pages, empty `HVM_PARAMS`,
//! the vCPU state in `HVM_CONTEXT`, `END`), then libxl's `END`.
//!
//! Save pauses the guest, writes `FILE.tmp`, fsyncs it, renames it to
//! `FILE` and fsyncs the directory, so a crash or an error never leaves a
//! half-written `FILE`; then the guest is destroyed, or resumed with
//! `keep_running` (`-c`). Restore reads the config (bounded), creates an
//! empty paused domain, applies the stream, and unpauses it only once the
//! stream is complete; on any failure the domain is destroyed.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use relocd_core::guest::{GuestInfo, PageType, SinkGuest, SourceGuest};
use relocd_core::stream::domain::{DomainHeaderRepr, DomainType};
use relocd_core::stream::reader::{Decoder, Event, Options};
use relocd_core::stream::writer::{Sink, StreamWriter, WriteError};
use relocd_core::stream::{PageType as WirePageType, PfnEntry};

use crate::api::ProgressSink;
use crate::api::{
    CommandError, DomainInfo, ErrorKind, Phase, Progress, RestoreRequest, SaveRequest,
    TransferSummary,
};
use crate::backend::sim::SimBackend;
use crate::backend::sim::{SimGuest, SimSink, SimSource, PAGE_SIZE};
use crate::session::{ImageDecoder, LibxcDecoder};

/// Pages per `PAGE_DATA` record (as Xen).
const BATCH: usize = 1024;
/// The longest xl config restore reads.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;
/// Read size when restoring.
const READ_CHUNK: usize = 1 << 20;

fn err(kind: ErrorKind, msg: impl Into<String>) -> CommandError {
    CommandError::new(kind, msg)
}

/// A writer sink that collects one record's bytes at a time.
#[derive(Debug, Default)]
struct Buf(Vec<u8>);

impl Sink for Buf {
    type Error = core::convert::Infallible;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(())
    }
}

fn werr(e: WriteError<core::convert::Infallible>) -> CommandError {
    match e {
        WriteError::Stream(s) => err(ErrorKind::Internal, format!("writing the stream: {s}")),
        WriteError::Io(never) => match never {},
    }
}

/// The xl config (libxl JSON, NUL-terminated) for a simulated guest.
pub fn xl_config(name: &str, memory_bytes: u64, vcpus: u32) -> Vec<u8> {
    let v = serde_json::json!({
        "c_info": { "type": "hvm", "name": name },
        "b_info": {
            "max_vcpus": vcpus,
            "max_memkb": memory_bytes / 1024,
            "target_memkb": memory_bytes / 1024,
        },
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(0);
    out
}

fn tmp_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn report(progress: &mut dyn ProgressSink, sent: u64, total: u64, bytes: u64) -> bool {
    let mut p = Progress::phase(Phase::Transfer);
    p.pages_sent = sent;
    p.pages_total = total;
    p.bytes_sent = bytes;
    progress.report(&p).is_err() || progress.is_cancelled()
}

/// Writes `guest`'s image to `w` (xl framing); `Ok(bytes)`.
fn write_image(
    guest: &SimGuest,
    w: &mut dyn Write,
    progress: &mut dyn ProgressSink,
) -> Result<(u64, u64), CommandError> {
    let io = |e: std::io::Error| err(ErrorKind::Internal, format!("writing: {e}"));
    let mut src = SimSource::new(guest.clone());
    let info: GuestInfo = src
        .info()
        .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
    let domain = DomainHeaderRepr {
        domain_type: DomainType::X86Hvm,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    };
    let cfg = xl_config(&guest.name(), guest.memory_bytes(), info.vcpus);
    let mut sw = StreamWriter::new_xl(Buf::default(), &cfg, domain).map_err(werr)?;
    let mut bytes = 0u64;
    let drain = |sw: &mut StreamWriter<Buf>,
                 w: &mut dyn Write,
                 bytes: &mut u64|
     -> Result<(), CommandError> {
        let b = &mut sw.sink_mut().0;
        w.write_all(b).map_err(io)?;
        *bytes += b.len() as u64;
        b.clear();
        Ok(())
    };
    sw.static_data_end().map_err(werr)?;
    drain(&mut sw, w, &mut bytes)?;
    let total = info.p2m_size;
    let mut pfns = Vec::with_capacity(BATCH);
    let mut types = vec![PageType::NOTAB; BATCH];
    let mut data = vec![0u8; BATCH * PAGE_SIZE];
    let mut entries = Vec::with_capacity(BATCH);
    let mut first = 0u64;
    let mut batches = 0u64;
    while first < total {
        let end = total.min(first + BATCH as u64);
        pfns.clear();
        pfns.extend(first..end);
        let n = pfns.len();
        src.read_pages(&pfns, &mut types[..n], &mut data[..n * PAGE_SIZE])
            .map_err(|e| err(ErrorKind::Internal, format!("reading the guest: {e}")))?;
        entries.clear();
        entries.extend(pfns.iter().zip(&types[..n]).map(|(&pfn, t)| PfnEntry {
            pfn,
            page_type: WirePageType::from_nibble((t.raw() >> 28) as u8),
        }));
        let pages: Vec<&[u8]> = data[..n * PAGE_SIZE].chunks(PAGE_SIZE).collect();
        sw.page_data(&entries, &pages).map_err(werr)?;
        drain(&mut sw, w, &mut bytes)?;
        first = end;
        batches += 1;
        if batches % 16 == 0 && report(progress, first, total, bytes) {
            return Err(err(ErrorKind::Cancelled, "save cancelled"));
        }
    }
    let mut blob = [0u8; 256];
    let n = src
        .vcpu_context(0, &mut blob)
        .map_err(|e| err(ErrorKind::Internal, format!("vCPU state: {e}")))?;
    let mut ctx = Vec::new();
    ctx.extend_from_slice(&0u32.to_le_bytes());
    ctx.extend_from_slice(&(n as u32).to_le_bytes());
    ctx.extend_from_slice(&blob[..n]);
    ctx.resize(ctx.len().next_multiple_of(8), 0);
    sw.hvm_params(&[]).map_err(werr)?;
    sw.hvm_context(&ctx).map_err(werr)?;
    sw.end().map_err(werr)?;
    let mut rest = sw.finish().map_err(werr)?;
    w.write_all(&rest.0).map_err(io)?;
    bytes += rest.0.len() as u64;
    rest.0.clear();
    let _ = report(progress, total, total, bytes);
    Ok((total, bytes))
}

/// `relocd save` (module doc).
pub fn save(
    sim: &SimBackend,
    guest: &SimGuest,
    req: &SaveRequest,
    progress: &mut dyn ProgressSink,
) -> Result<TransferSummary, CommandError> {
    let started = Instant::now();
    let name = guest.name();
    let was_running = guest.state() == crate::backend::sim::DomainState::Running;
    let tmp = tmp_path(&req.file);
    let file = File::create(&tmp).map_err(|e| {
        err(
            ErrorKind::BadRequest,
            format!("cannot create {}: {e}", tmp.display()),
        )
    })?;
    sim.mark_paused_by_migration(guest.domid());
    if let Err(e) = guest.pause() {
        sim.clear(guest.domid());
        let _ = std::fs::remove_file(&tmp);
        return Err(err(ErrorKind::Internal, format!("pausing {name}: {e}")));
    }
    let paused_at = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = write_image(guest, &mut w, progress).and_then(|r| {
        let file = w
            .into_inner()
            .map_err(|e| err(ErrorKind::Internal, format!("writing: {}", e.error())))?;
        file.sync_all()
            .map_err(|e| err(ErrorKind::Internal, format!("fsync: {e}")))?;
        drop(file);
        std::fs::rename(&tmp, &req.file)
            .map_err(|e| err(ErrorKind::Internal, format!("rename: {e}")))?;
        if let Some(dir) = req.file.parent() {
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(r)
    });
    let resume = |g: &SimGuest| {
        if was_running {
            let _ = g.unpause();
        }
        sim.clear(g.domid());
    };
    match result {
        Ok((pages, bytes)) => {
            let downtime = paused_at.elapsed();
            if req.keep_running {
                resume(guest);
            } else {
                sim.clear(guest.domid());
                guest
                    .destroy()
                    .map_err(|e| err(ErrorKind::Internal, format!("destroying {name}: {e}")))?;
            }
            let total = started.elapsed();
            tracing::info!(domain = %name, file = %req.file.display(), bytes, "saved");
            Ok(TransferSummary {
                domain: name,
                rounds: 1,
                pages_sent: pages,
                bytes_sent: bytes,
                downtime_ms: if req.keep_running {
                    downtime.as_secs_f64() * 1000.0
                } else {
                    0.0
                },
                total_ms: total.as_secs_f64() * 1000.0,
                bandwidth_mib_s: crate::session::mib_per_s(bytes, total),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            resume(guest);
            Err(e)
        }
    }
}

/// What restore needs from the config.
struct Config {
    name: String,
    memory: u64,
}

/// The xl configuration at the start of a save file, its trailing NULs
/// removed; refused when it announces more than `max` bytes (before any
/// of it is kept). Shared by the sim and Xen restores.
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

fn read_config(file: &mut File, path: &Path) -> Result<Config, CommandError> {
    let bad = |m: String| err(ErrorKind::BadRequest, format!("{}: {m}", path.display()));
    let cfg = read_xl_config(file, path, MAX_CONFIG_LEN as u64)?;
    if cfg.is_empty() {
        return Err(bad("not an xl save file with a config".into()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&cfg).map_err(|e| bad(format!("config: {e}")))?;
    let name = v
        .pointer("/c_info/name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad("config has no c_info.name".into()))?
        .to_owned();
    let kb = v
        .pointer("/b_info/max_memkb")
        .and_then(|n| n.as_u64())
        .ok_or_else(|| bad("config has no b_info.max_memkb".into()))?;
    let memory = kb
        .checked_mul(1024)
        .ok_or_else(|| bad("memory size overflows".into()))?;
    Ok(Config { name, memory })
}

/// `relocd restore` (module doc).
pub fn restore(
    sim: &SimBackend,
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
    let mut f = open()?;
    let cfg = read_config(&mut f, path)?;
    let hv = sim.hypervisor();
    let guest = hv.create_empty(&cfg.name, cfg.memory).map_err(|e| {
        let kind = match e {
            crate::backend::sim::SimError::NameTaken(_) => ErrorKind::Exists,
            crate::backend::sim::SimError::NoCapacity { .. } => ErrorKind::Refused,
            _ => ErrorKind::BadRequest,
        };
        err(kind, format!("cannot restore `{}`: {e}", cfg.name))
    })?;
    let result = (|| {
        let mut f = open()?;
        let total = guest.nr_pages();
        let mut dec = LibxcDecoder::new();
        let mut sink = SimSink::new(guest.clone());
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
            if report(progress, dec.pages_applied().min(total), total, read) {
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
            .map_err(|e| err(ErrorKind::Internal, format!("unpause: {e}")))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = guest.destroy();
        return Err(e);
    }
    tracing::info!(domain = %cfg.name, file = %path.display(), "restored");
    sim.info(guest.domid())
        .ok_or_else(|| err(ErrorKind::Internal, "the restored guest vanished"))
}
