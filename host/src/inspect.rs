//! `relocd inspect`: shows a migration stream (xl save file, libxl stream or
//! bare libxc stream) to a person, or to a script with `--json`.
//!
//! The input is read through [`relocd_core::stream::Decoder`] in pieces of
//! [`BUF_LEN`] octets; nothing is kept per record, so a 4 GiB image is
//! inspected with the buffer plus a few KiB. In `--json` mode the document
//! is written as the records arrive: the `records` array first, then the
//! headers, the totals and, for a damaged stream, the error.

use relocd_core::stream::page_data::PageType;
use relocd_core::stream::reader::{Decoder, Event, Layer, Options, RecordInfo, StreamKind, Totals};
use relocd_core::stream::{self, RecordType};
use serde_json::{json, Map, Value};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Octets read from the input at a time.
pub const BUF_LEN: usize = 1 << 20;

/// Exit code: the stream is complete and well-formed.
pub const EXIT_OK: u8 = 0;
/// Exit code: the stream is damaged (truncated, malformed, out of order).
pub const EXIT_DAMAGED: u8 = 1;
/// Exit code: the input could not be read or the output not written.
pub const EXIT_IO: u8 = 2;

/// Arguments of `relocd inspect`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Reads an xl save file, a libxl stream (what `xl migrate` sends) or a bare libxc \
stream; which one is told by its first octets. Prints the headers, one line per \
record (byte offset, layer, type, body length; for PAGE_DATA the pfn range and \
the count of pages per type), then totals. With --json, one JSON document with \
`records`, `format`, `headers`, `totals` and, for a damaged stream, \
`error: {offset, reason}`.

Exit status: 0 the stream is complete and well-formed; 1 it is damaged (what was \
read before the damage is still printed, then the byte offset and the reason); 2 \
the input could not be read.")]
pub struct InspectArgs {
    /// The stream to read; `-` reads standard input.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Stricter checks, most of them also made by Xen's verify-stream-v2: reserved fields
    /// and padding zero, no unknown records (even optional ones), no TOOLSTACK records,
    /// HVM_PARAMS before HVM_CONTEXT.
    #[arg(long)]
    pub strict: bool,
}

/// How an inspection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The stream was complete and well-formed.
    Complete,
    /// The stream is damaged; everything before was printed.
    Damaged(stream::Error),
    /// Reading the input failed after `offset` octets, or writing the output
    /// failed.
    Io(io::Error, u64),
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Complete => EXIT_OK,
            Outcome::Damaged(_) => EXIT_DAMAGED,
            Outcome::Io(..) => EXIT_IO,
        }
    }
}

/// Runs `relocd inspect` on the file (or stdin) and stdout; returns the
/// exit code. Errors go to stderr in text mode and into the document with
/// `--json`.
pub fn run(args: &InspectArgs, json: bool) -> u8 {
    let opts = if args.strict {
        Options::STRICT
    } else {
        Options::default()
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let outcome = if args.file.as_os_str() == "-" {
        inspect(&mut io::stdin().lock(), &mut out, json, opts)
    } else {
        match std::fs::File::open(&args.file) {
            Ok(mut f) => inspect(&mut f, &mut out, json, opts),
            Err(e) => {
                eprintln!("relocd inspect: {}: {e}", args.file.display());
                return EXIT_IO;
            }
        }
    };
    let flushed = out.flush();
    match &outcome {
        Outcome::Complete => {}
        Outcome::Damaged(e) if !json => eprintln!("relocd inspect: damaged stream {e}"),
        Outcome::Damaged(_) => {}
        Outcome::Io(e, off) => eprintln!("relocd inspect: after byte {off}: {e}"),
    }
    if flushed.is_err() && matches!(outcome, Outcome::Complete) {
        return EXIT_IO;
    }
    outcome.exit_code()
}

/// Reads a whole stream from `src` and describes it on `out` (text, or one
/// JSON document). Never panics on any input.
pub fn inspect(src: &mut dyn Read, out: &mut dyn Write, json: bool, opts: Options) -> Outcome {
    let mut buf = vec![0u8; BUF_LEN];
    inspect_with(src, &mut buf, out, json, opts)
}

/// [`inspect`] with a caller's read buffer (any length from 1).
pub fn inspect_with(
    src: &mut dyn Read,
    buf: &mut [u8],
    out: &mut dyn Write,
    json: bool,
    opts: Options,
) -> Outcome {
    let mut p = Printer::new(out, json);
    let outcome = drive(src, buf, opts, &mut p);
    let end = match &outcome {
        Ok(o) => p.finish(o),
        Err(e) => {
            let off = p.offset;
            return Outcome::Io(io::Error::new(e.kind(), e.to_string()), off);
        }
    };
    match (outcome, end) {
        (Ok(o), Ok(())) => o,
        (Ok(_), Err(e)) => Outcome::Io(e, p.offset),
        (Err(e), _) => Outcome::Io(e, p.offset),
    }
}

/// Feeds the decoder; `Err` only for failed output.
fn drive(
    src: &mut dyn Read,
    buf: &mut [u8],
    opts: Options,
    p: &mut Printer<'_>,
) -> io::Result<Outcome> {
    let mut d = Decoder::new(opts);
    if buf.is_empty() {
        return Ok(Outcome::Damaged(stream::Error::new(
            0,
            stream::ErrorKind::BufferTooSmall,
        )));
    }
    loop {
        let n = match src.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                p.offset = d.offset();
                return Ok(Outcome::Io(e, d.offset()));
            }
        };
        let mut input = buf.get(..n).unwrap_or(&[]);
        loop {
            let step = match d.push(input) {
                Ok(s) => s,
                Err(e) => {
                    p.offset = d.offset();
                    return Ok(Outcome::Damaged(e));
                }
            };
            input = input.get(step.consumed..).unwrap_or(&[]);
            match &step.event {
                Some(ev) => p.event(ev)?,
                None => break,
            }
        }
        p.offset = d.offset();
        if n == 0 {
            return Ok(match d.finish() {
                Ok(()) => Outcome::Complete,
                Err(e) => Outcome::Damaged(e),
            });
        }
    }
}

/// A record being read: printed when it ends (or when the stream breaks
/// inside it).
struct Pending {
    info: RecordInfo,
    detail: String,
    pages: Option<stream::reader::PageDataSummary>,
}

struct Printer<'o> {
    out: &'o mut dyn Write,
    json: bool,
    kind: Option<StreamKind>,
    headers: Map<String, Value>,
    totals: Totals,
    pending: Option<Pending>,
    first_record: bool,
    header_printed: bool,
    offset: u64,
    /// The image carries its vCPUs in `HVM_CONTEXT` (a blob of the
    /// hypervisor's, not counted) rather than in vCPU records.
    hvm_context: bool,
}

fn kind_name(k: StreamKind) -> &'static str {
    match k {
        StreamKind::Xl => "xl",
        StreamKind::Libxl => "libxl",
        StreamKind::Libxc => "libxc",
    }
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::Libxl => "libxl",
        Layer::Libxc => "libxc",
    }
}

/// Page-type counts as (name, count), non-zero ones only.
fn type_counts<T: Copy + Into<u64>>(counts: &[T; 16]) -> Vec<(&'static str, u64)> {
    (0u8..16)
        .zip(counts.iter())
        .filter(|(_, n)| (**n).into() > 0)
        .map(|(t, n)| (PageType::from_nibble(t).name(), (*n).into()))
        .collect()
}

impl<'o> Printer<'o> {
    fn new(out: &'o mut dyn Write, json: bool) -> Self {
        Printer {
            out,
            json,
            kind: None,
            headers: Map::new(),
            totals: Totals::default(),
            pending: None,
            first_record: true,
            header_printed: false,
            offset: 0,
            hvm_context: false,
        }
    }

    fn header(&mut self, key: &str, text: String, value: Value) -> io::Result<()> {
        if self.json {
            self.headers.insert(key.to_owned(), value);
            Ok(())
        } else {
            writeln!(self.out, "{text}")
        }
    }

    fn event(&mut self, ev: &Event<'_>) -> io::Result<()> {
        self.totals.observe(ev);
        match ev {
            Event::Detected(k) => {
                self.kind = Some(*k);
                if self.json {
                    writeln!(self.out, "{{\"records\": [")?;
                } else {
                    let what = match k {
                        StreamKind::Xl => "xl save file",
                        StreamKind::Libxl => "libxl stream",
                        StreamKind::Libxc => "libxc stream",
                    };
                    writeln!(self.out, "format: {what}")?;
                }
            }
            Event::XlHeader(h) => self.header(
                "xl",
                format!(
                    "xl header: mandatory flags {:#x}, optional flags {:#x}, optional data {} bytes",
                    h.mandatory_flags, h.optional_flags, h.optional_data_len
                ),
                json!({"mandatory_flags": h.mandatory_flags, "optional_flags": h.optional_flags,
                       "optional_data_len": h.optional_data_len}),
            )?,
            Event::XlConfigLength(n) => self.header(
                "xl_config_len",
                format!("xl config: {n} bytes"),
                json!(n),
            )?,
            Event::LibxlHeader(h) => self.header(
                "libxl",
                format!(
                    "libxl header: version 2, {}{}",
                    if h.big_endian { "big-endian" } else { "little-endian" },
                    if h.legacy { ", converted from legacy" } else { "" }
                ),
                json!({"version": 2, "big_endian": h.big_endian, "legacy": h.legacy}),
            )?,
            Event::ImageHeader(h) => self.header(
                "image",
                format!(
                    "image header: version {}, {}",
                    h.version,
                    if h.big_endian { "big-endian" } else { "little-endian" }
                ),
                json!({"version": h.version, "big_endian": h.big_endian}),
            )?,
            Event::DomainHeader(h) => self.header(
                "domain",
                format!(
                    "domain header: {}, page shift {}, saved by Xen {}.{}",
                    h.domain_type.name(),
                    h.page_shift,
                    h.xen_major,
                    h.xen_minor
                ),
                json!({"type": h.domain_type.name(), "page_shift": h.page_shift,
                       "xen_major": h.xen_major, "xen_minor": h.xen_minor}),
            )?,
            Event::StaticDataEndInferred if !self.json => {
                writeln!(self.out, "(v2 stream: STATIC_DATA_END inferred here)")?;
            }
            Event::Record(r) => {
                self.flush_pending(false)?;
                if RecordType::from(r.rtype) == RecordType::HvmContext {
                    self.hvm_context = true;
                }
                self.pending = Some(Pending {
                    info: *r,
                    detail: String::new(),
                    pages: None,
                });
            }
            Event::PvInfo(i) => self.detail(format!(
                "guest width {}, {} levels",
                i.guest_width, i.pt_levels
            )),
            Event::P2mFrames(f) => self.detail(format!(
                "pfns {:#x}-{:#x}",
                f.start_pfn, f.end_pfn
            )),
            Event::Vcpu(v) => self.detail(format!("vcpu {}", v.vcpu_id)),
            Event::TscInfo(t) => self.detail(format!(
                "mode {}, {} kHz, nsec {}, incarnation {}",
                t.mode, t.khz, t.nsec, t.incarnation
            )),
            Event::HvmParams(h) => self.detail(format!("{} params", h.count)),
            Event::Emulator(e) => self.detail(format!(
                "emulator {:?} index {}",
                e.id, e.index
            )),
            Event::CheckpointState(s) => self.detail(format!("{s:?}")),
            Event::PfnsDone(s) => {
                if let Some(p) = &mut self.pending {
                    p.pages = Some(*s);
                }
            }
            Event::RecordEnd(_) => self.flush_pending(false)?,
            _ => {}
        }
        Ok(())
    }

    fn detail(&mut self, text: String) {
        if let Some(p) = &mut self.pending {
            p.detail = text;
        }
    }

    fn flush_pending(&mut self, incomplete: bool) -> io::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let r = p.info;
        if self.json {
            let mut v = json!({
                "offset": r.offset,
                "layer": layer_name(r.layer),
                "type": r.rtype,
                "name": r.name(),
                "length": r.length,
            });
            if r.skipped {
                v["skipped"] = json!(true);
            }
            if !p.detail.is_empty() {
                v["detail"] = json!(p.detail);
            }
            if incomplete {
                v["incomplete"] = json!(true);
            }
            if let Some(s) = p.pages {
                let types: Map<String, Value> = type_counts(&s.type_counts)
                    .into_iter()
                    .map(|(k, n)| (k.to_owned(), json!(n)))
                    .collect();
                v["pages"] = json!({"count": s.count, "data_pages": s.data_pages,
                    "min_pfn": s.min_pfn, "max_pfn": s.max_pfn, "types": types});
            }
            let sep = if self.first_record { "" } else { ",\n" };
            self.first_record = false;
            write!(self.out, "{sep}  {v}")?;
        } else {
            if !self.header_printed {
                self.header_printed = true;
                writeln!(
                    self.out,
                    "{:>12}  {:<5}  {:<26} {:>9}",
                    "OFFSET", "LAYER", "TYPE", "LENGTH"
                )?;
            }
            let name = match (r.layer, r.skipped) {
                (_, true) => format!("{:#010x} (skipped)", r.rtype),
                (Layer::Libxc, _)
                    if matches!(RecordType::from(r.rtype), RecordType::Unknown(_)) =>
                {
                    format!("{:#010x}", r.rtype)
                }
                _ => r.name().to_owned(),
            };
            let mut line = format!(
                "{:>12}  {:<5}  {:<26} {:>9}",
                r.offset,
                layer_name(r.layer),
                name,
                r.length
            );
            if let Some(s) = p.pages {
                line.push_str(&format!(
                    "  pfns {:#x}-{:#x}: {} ({} with data)",
                    s.min_pfn, s.max_pfn, s.count, s.data_pages
                ));
                for (t, n) in type_counts(&s.type_counts) {
                    line.push_str(&format!(" {t} {n}"));
                }
            } else if !p.detail.is_empty() {
                line.push_str("  ");
                line.push_str(&p.detail);
            }
            if incomplete {
                line.push_str("  (incomplete)");
            }
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    /// The vCPUs the image's vCPU records name; `None` when it has none
    /// and carries its vCPU state in `HVM_CONTEXT` instead.
    fn vcpus(&self) -> Option<u32> {
        (self.totals.vcpus > 0 || !self.hvm_context).then_some(self.totals.vcpus)
    }

    fn finish(&mut self, outcome: &Outcome) -> io::Result<()> {
        let incomplete = !matches!(outcome, Outcome::Complete);
        self.flush_pending(incomplete)?;
        let t = self.totals;
        let pages = type_counts(&t.pfns_by_type);
        if self.json {
            if self.kind.is_none() {
                write!(self.out, "{{\"records\": [")?;
            }
            let types: Map<String, Value> = pages
                .iter()
                .map(|(k, n)| ((*k).to_owned(), json!(n)))
                .collect();
            let mut tail = json!({
                "format": self.kind.map(kind_name),
                "headers": Value::Object(std::mem::take(&mut self.headers)),
                "totals": {
                    "records": t.records,
                    "skipped": t.skipped,
                    "page_data_records": t.page_data_records,
                    "pages": types,
                    "data_pages": t.data_pages,
                    "vcpus": self.vcpus(),
                    "checkpoints": t.checkpoints,
                    "bytes": self.offset,
                },
            });
            match outcome {
                Outcome::Damaged(e) => {
                    tail["error"] = json!({"offset": e.offset, "reason": e.kind.to_string()});
                }
                Outcome::Io(e, off) => {
                    tail["error"] = json!({"offset": off, "reason": e.to_string()});
                }
                Outcome::Complete => {}
            }
            // Splice the tail object's members after the records array.
            let tail = tail.to_string();
            let members = tail.get(1..tail.len().saturating_sub(1)).unwrap_or("");
            writeln!(self.out, "\n], {members}}}")?;
        } else {
            writeln!(self.out, "totals:")?;
            writeln!(
                self.out,
                "  records: {} ({} PAGE_DATA, {} skipped)",
                t.records, t.page_data_records, t.skipped
            )?;
            let list: Vec<String> = pages.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let total: u64 = pages.iter().map(|(_, n)| n).sum();
            writeln!(
                self.out,
                "  pages: {total} ({}), {} with data",
                if list.is_empty() {
                    "none".to_owned()
                } else {
                    list.join(", ")
                },
                t.data_pages
            )?;
            match self.vcpus() {
                Some(n) => writeln!(self.out, "  vcpus: {n}")?,
                None => writeln!(self.out, "  vcpus: in HVM_CONTEXT (not counted)")?,
            }
            writeln!(self.out, "  bytes: {}", self.offset)?;
            if let Outcome::Damaged(e) = outcome {
                writeln!(self.out, "error: {e}")?;
            }
        }
        Ok(())
    }
}
