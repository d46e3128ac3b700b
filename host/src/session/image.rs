//! The migration image inside a session: how the source turns guest pages
//! and vCPU state into image chunks, and how the destination applies
//! chunks to a [`SinkGuest`].
//!
//! Both directions sit behind a small trait ([`ImageEncoder`],
//! [`ImageDecoder`]) so the session drivers do not depend on the layout.
//! The implementation here, [`LibxcEncoder`]/[`LibxcDecoder`], is Xen's
//! libxc migration stream (version 3, little-endian) from
//! `relocd_core::stream`, the same bytes as a save file:
//!
//! | chunk | records |
//! | --- | --- |
//! | first | image header, domain header, the guest's static records, `STATIC_DATA_END`, its start-of-stream records |
//! | one per batch | `PAGE_DATA` (at most 1024 pfns) |
//! | last | HVM-style: `HVM_PARAMS` (empty), `HVM_CONTEXT`, `END`; PV: the guest's end-of-checkpoint records, `END` |
//!
//! # PV images
//!
//! A guest whose `GuestInfo::guest_type` is PV brings its own records
//! (`SourceGuest::stream_records`, Xen's `save_ops`): `X86_PV_INFO` and its
//! CPU policies before `STATIC_DATA_END`, `X86_PV_P2M_FRAMES` after it,
//! and after the last page `X86_TSC_INFO`, `SHARED_INFO` and the
//! `X86_PV_VCPU_*` records, in Xen's saver's order: the same libxc bytes
//! `xen::save` writes into a file. The encoder writes them through the
//! stream writer's typed calls, so the writer's order rules hold. The
//! decoder, on an image whose domain header says PV, hands each record
//! that is neither pages nor the stream's own framing to
//! `SinkGuest::record` (Xen's `restore_ops.process_record`) with its whole
//! body, gathered in a buffer bounded by [`MAX_GUEST_RECORD_LEN`] before
//! any of it is kept.
//!
//! # vCPU state in `HVM_CONTEXT`
//!
//! Xen's `HVM_CONTEXT` body is the hypervisor's HVM save blob. For the
//! guests relocd builds itself (the simulator's) the body is, per vCPU in
//! ascending order: `u32` vCPU id, `u32` length `n`, `n` bytes of the
//! backend's vCPU context, zero padding to a multiple of 8. The decoder
//! bounds the body to [`MAX_HVM_CONTEXT_LEN`] before keeping any of it.

use relocd_core::guest::{
    GuestInfo, GuestType, PageType, Pfn, RecordPoint, SinkGuest, SourceGuest, PAGE_SIZE,
};

use super::pack::Elided;
use super::{guest_err, SessionError};
use relocd_core::precopy::drive::{apply_batch, apply_elided_batch, DriveError, PageSource};
use relocd_core::precopy::MAX_PAGE_DATA_RECORD_LEN;
use relocd_core::stream::domain::{DomainHeaderRepr, DomainType};
use relocd_core::stream::reader::{Decoder, Event, Layer, Options, RecordInfo};
use relocd_core::stream::record::OPTIONAL;
use relocd_core::stream::writer::{Framing, Sink, StreamWriter, WriteError};
use relocd_core::stream::x86::{TscInfoRepr, TSC_INFO_LEN};
use relocd_core::stream::x86_pv::{
    P2mFramesRepr, PvInfoRepr, VcpuHeaderRepr, P2M_HEADER_LEN, PV_INFO_LEN, VCPU_HEADER_LEN,
};
use relocd_core::stream::{PageType as WirePageType, PfnEntry, RecordType};

/// Largest `HVM_CONTEXT` body the decoder accepts (1 MiB).
pub const MAX_HVM_CONTEXT_LEN: usize = 1 << 20;

/// Largest body of a guest-type record (PV: `X86_PV_P2M_FRAMES`, vCPU
/// state, policies) the decoder gathers for `SinkGuest::record` (16 MiB:
/// the p2m frame list of a guest of 2^31 pages, far above any vCPU or
/// policy record). Checked on the record's header, before any of it is
/// kept.
pub const MAX_GUEST_RECORD_LEN: usize = 16 << 20;

/// Why an image could not be written or applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The stream layer refused the bytes or the call.
    #[error("migration stream: {0}")]
    Stream(relocd_core::stream::Error),
    /// A call out of order (e.g. pages before `start`).
    #[error("image call out of order: {0}")]
    Order(&'static str),
    /// The image is well-formed but does not fit this guest (a vCPU record
    /// too large, malformed vCPU framing, more pfns than data).
    #[error("image does not fit the guest: {0}")]
    Invalid(&'static str),
    /// The sink guest refused a batch, a vCPU state or a guest record;
    /// the text names the step ("writing pages"), and
    /// [`ImageDecoder::sink_failure`] holds what the backend said.
    #[error("destination guest refused the image ({0})")]
    Sink(&'static str),
    /// A chunk's pages could not be read from the link.
    #[error("the link failed while a chunk's pages were read")]
    Link,
}

/// Turns what the source reads from its guest into image chunks. Each
/// method appends whole records to `out` (the caller clears it and sends
/// it as one chunk).
///
/// Call order (Xen's saver's): `start` → `record` for each of the guest's
/// [`RecordPoint::Static`] records → `static_end` → `record` for its
/// [`RecordPoint::StartOfStream`] records → `pages` per batch → `record`
/// for its [`RecordPoint::EndOfCheckpoint`] records → `finish`.
///
/// [`RecordPoint::Static`]: relocd_core::guest::RecordPoint::Static
/// [`RecordPoint::StartOfStream`]: relocd_core::guest::RecordPoint::StartOfStream
/// [`RecordPoint::EndOfCheckpoint`]: relocd_core::guest::RecordPoint::EndOfCheckpoint
pub trait ImageEncoder {
    /// The image's headers, before any record.
    fn start(&mut self, info: &GuestInfo, out: &mut Vec<u8>) -> Result<(), ImageError>;
    /// One record of the guest's type (`SourceGuest::stream_records`): raw
    /// type and whole body as on the wire.
    fn record(&mut self, rtype: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), ImageError>;
    /// The end of the static records.
    fn static_end(&mut self, out: &mut Vec<u8>) -> Result<(), ImageError>;
    /// One batch of pages: `types[i]` is the type of `pfns[i]`, `runs` the
    /// contents of those that have data, in order, as runs of whole pages
    /// (`SourceGuest::lend_pages` or `read_pages`).
    ///
    /// Appends to `out` the bytes of the batch's record(s) that precede the
    /// page contents; the chunk is `out` followed by the runs themselves,
    /// which the caller sends from where they are, spared a copy.
    fn pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        runs: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), ImageError>;
    /// The vCPU states from `SourceGuest::vcpu_context` (index = vCPU id;
    /// empty for a guest whose vCPUs travel as its own records) and the
    /// end of the image.
    fn finish(&mut self, vcpus: &[&[u8]], out: &mut Vec<u8>) -> Result<(), ImageError>;
}

/// Applies image chunks, in order, to the guest being built.
pub trait ImageDecoder {
    /// Applies one chunk. After an error the image is unusable.
    fn apply<S: SinkGuest>(&mut self, chunk: &[u8], sink: &mut S) -> Result<(), ImageError>;
    /// Applies one chunk whose zero pages travelled as markers
    /// ([`Elided`]), its other pages coming from `data` (in memory, or
    /// read off the link as they are applied; all of them are taken,
    /// unless the chunk fails). The default rebuilds the chunk and applies
    /// it.
    fn apply_elided<S: SinkGuest>(
        &mut self,
        chunk: Elided<'_>,
        data: &mut dyn PageSource,
        sink: &mut S,
    ) -> Result<(), ImageError> {
        let (mut whole, mut fetched) = (Vec::new(), Vec::new());
        chunk.rebuild(in_memory(data, &mut fetched)?, &mut whole);
        self.apply(&whole, sink)
    }
    /// Whether the end of the image has been applied.
    fn is_complete(&self) -> bool;
    /// Pages written to the sink so far.
    fn pages_applied(&self) -> u64;
    /// What the sink guest said when it refused ([`ImageError::Sink`]):
    /// the backend's error as text, for the abort's detail.
    fn sink_failure(&self) -> Option<&str> {
        None
    }
}

/// A page batch the sink refused: the backend's error as text.
/// All of `data`'s pages in memory: `data`'s own bytes, or read into
/// `buf`.
fn in_memory<'a>(
    data: &'a mut dyn PageSource,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], ImageError> {
    if data.as_slice().is_none() {
        buf.clear();
        buf.resize(data.bytes_left(), 0);
        if !data.fill(&mut [&mut buf[..]]) {
            return Err(ImageError::Link);
        }
        return Ok(buf);
    }
    Ok(data.as_slice().unwrap_or_default())
}

fn batch_failed<E: std::fmt::Debug>(slot: &mut Option<String>, e: DriveError<E>) -> ImageError {
    if let DriveError::NoData = e {
        return ImageError::Link;
    }
    *slot = Some(match e {
        DriveError::Guest(g) => format!("{g:?}"),
        other => other.to_string(),
    });
    ImageError::Sink("writing pages")
}

/// Keeps the backend's error as text and names the step that failed.
fn sink_failed<'s, E: std::fmt::Debug>(
    slot: &'s mut Option<String>,
    step: &'static str,
) -> impl FnOnce(E) -> ImageError + 's {
    move |e| {
        *slot = Some(format!("{e:?}"));
        ImageError::Sink(step)
    }
}

/// The guest's own records at `point`, encoded into `out`.
fn encode_records<G: SourceGuest + ?Sized>(
    encoder: &mut dyn ImageEncoder,
    guest: &mut G,
    point: RecordPoint,
    out: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let mut failed = None;
    let r = guest.stream_records(point, &mut |rtype, body| {
        if failed.is_none() {
            failed = encoder.record(rtype, body, out).err();
        }
    });
    r.map_err(|e| guest_err("the guest's records", e))?;
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// The image's beginning, into `out`: headers, the guest's static
/// records, `STATIC_DATA_END`, its start-of-stream records. The same for
/// a session and a save file.
pub fn encode_head<G: SourceGuest + ?Sized>(
    encoder: &mut dyn ImageEncoder,
    guest: &mut G,
    info: &GuestInfo,
    out: &mut Vec<u8>,
) -> Result<(), SessionError> {
    encoder.start(info, out)?;
    encode_records(encoder, guest, RecordPoint::Static, out)?;
    encoder.static_end(out)?;
    encode_records(encoder, guest, RecordPoint::StartOfStream, out)
}

/// The image's end, into `out`, once the guest is stopped: its vCPU
/// states (a PV guest's own end-of-checkpoint records, or `vcpu_context`
/// per vCPU) and the image's end.
pub fn encode_tail<G: SourceGuest + ?Sized>(
    encoder: &mut dyn ImageEncoder,
    guest: &mut G,
    info: &GuestInfo,
    out: &mut Vec<u8>,
) -> Result<(), SessionError> {
    encode_records(encoder, guest, RecordPoint::EndOfCheckpoint, out)?;
    if info.guest_type == GuestType::Pv {
        encoder.finish(&[], out)?;
        return Ok(());
    }
    let mut blobs = Vec::new();
    for v in 0..info.vcpus {
        let mut buf = vec![0u8; 64 * 1024];
        let n = guest
            .vcpu_context(v, &mut buf)
            .map_err(|e| guest_err("vCPU context", e))?;
        buf.truncate(n);
        blobs.push(buf);
    }
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    encoder.finish(&refs, out)?;
    Ok(())
}

/// A writer's sink that collects bytes for one chunk, keeping at most
/// `keep` bytes (the rest is what the caller sends from its own buffer).
#[derive(Debug)]
struct ChunkSink {
    buf: Vec<u8>,
    keep: usize,
}

impl Default for ChunkSink {
    fn default() -> Self {
        ChunkSink {
            buf: Vec::new(),
            keep: usize::MAX,
        }
    }
}

impl Sink for ChunkSink {
    type Error = core::convert::Infallible;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        let room = self.keep.saturating_sub(self.buf.len());
        let n = buf.len().min(room);
        self.buf.extend_from_slice(&buf[..n]);
        Ok(())
    }
}

fn werr(e: WriteError<core::convert::Infallible>) -> ImageError {
    match e {
        WriteError::Stream(s) => ImageError::Stream(s),
        WriteError::Io(never) => match never {},
    }
}

/// The libxc stream encoder (module doc).
#[derive(Debug, Default)]
pub struct LibxcEncoder {
    writer: Option<StreamWriter<ChunkSink>>,
    entries: Vec<PfnEntry>,
    /// A PV image: the guest's own records carry its vCPUs.
    pv: bool,
    /// An xl save file with this configuration: xl's and libxl's headers
    /// before the libxc stream, libxl's `END` after it.
    xl_config: Option<Vec<u8>>,
}

impl LibxcEncoder {
    /// A fresh encoder of a bare libxc stream (what a session carries).
    pub fn new() -> Self {
        LibxcEncoder::default()
    }

    /// An encoder of a whole xl save file around the libxc stream, with
    /// `config` (libxl JSON, NUL-terminated, as xl writes it): the chunks
    /// together are what `xl restore` reads.
    pub fn xl_file(config: &[u8]) -> Self {
        LibxcEncoder {
            xl_config: Some(config.to_vec()),
            ..LibxcEncoder::default()
        }
    }

    /// Ends the stream in `out` once `finish` has run: in an xl file,
    /// libxl's `END`; nothing in a bare libxc stream.
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let w = self.writer.take().ok_or(ImageError::Order("start first"))?;
        let mut sink = w.finish().map_err(werr)?;
        out.append(&mut sink.buf);
        Ok(())
    }

    fn writer(&mut self) -> Result<&mut StreamWriter<ChunkSink>, ImageError> {
        self.writer.as_mut().ok_or(ImageError::Order("start first"))
    }
}

/// Moves what the writer produced into `out` (no copy when `out` is
/// empty).
fn take(w: &mut StreamWriter<ChunkSink>, out: &mut Vec<u8>) {
    let buf = &mut w.sink_mut().buf;
    if out.is_empty() {
        std::mem::swap(out, buf);
        buf.clear();
    } else {
        out.append(buf);
    }
}

fn wire_type(t: PageType) -> WirePageType {
    WirePageType::from_nibble((t.raw() >> 28) as u8)
}

impl ImageEncoder for LibxcEncoder {
    fn start(&mut self, info: &GuestInfo, out: &mut Vec<u8>) -> Result<(), ImageError> {
        if self.writer.is_some() {
            return Err(ImageError::Order("start twice"));
        }
        let domain = DomainHeaderRepr {
            domain_type: match info.guest_type {
                GuestType::Pv => DomainType::X86Pv,
                GuestType::Hvm => DomainType::X86Hvm,
            },
            page_shift: 12,
            xen_major: 4,
            xen_minor: 17,
        };
        let mut w = match &self.xl_config {
            Some(config) => StreamWriter::new_xl(ChunkSink::default(), config, domain),
            None => StreamWriter::new(ChunkSink::default(), Framing::Libxc, domain),
        }
        .map_err(werr)?;
        take(&mut w, out);
        self.writer = Some(w);
        self.pv = info.guest_type == GuestType::Pv;
        Ok(())
    }

    fn record(&mut self, rtype: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), ImageError> {
        let w = self.writer()?;
        let r = put_record(w, rtype, body);
        if r.is_ok() {
            take(w, out);
        } else {
            w.sink_mut().buf.clear();
        }
        r
    }

    fn static_end(&mut self, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let w = self.writer()?;
        w.static_data_end().map_err(werr)?;
        take(w, out);
        Ok(())
    }

    fn pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        runs: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), ImageError> {
        if types.len() != pfns.len() {
            return Err(ImageError::Invalid("types and pfns differ in length"));
        }
        let mut entries = std::mem::take(&mut self.entries);
        entries.clear();
        entries.extend(pfns.iter().zip(types).map(|(&pfn, &t)| PfnEntry {
            pfn,
            page_type: wire_type(t),
        }));
        let pages: Vec<&[u8]> = runs.iter().flat_map(|r| r.chunks(PAGE_SIZE)).collect();
        let w = self.writer()?;
        // Record header, count, pfn words: everything but the pages, which
        // end the record with no padding (whole pages are 8-aligned).
        let prefix = 16 + 8 * entries.len();
        let sink = w.sink_mut();
        sink.keep = sink.buf.len() + prefix;
        let r = w.page_data(&entries, &pages).map_err(werr);
        w.sink_mut().keep = usize::MAX;
        if r.is_ok() {
            take(w, out);
        } else {
            w.sink_mut().buf.clear();
        }
        self.entries = entries;
        r
    }

    fn finish(&mut self, vcpus: &[&[u8]], out: &mut Vec<u8>) -> Result<(), ImageError> {
        if self.pv {
            if !vcpus.is_empty() {
                return Err(ImageError::Order(
                    "a PV guest's vCPUs travel as its own records",
                ));
            }
            let w = self.writer()?;
            w.end().map_err(werr)?;
            take(w, out);
            return Ok(());
        }
        let mut ctx = Vec::new();
        for (id, blob) in vcpus.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| ImageError::Invalid("too many vCPUs"))?;
            let len = u32::try_from(blob.len()).map_err(|_| ImageError::Invalid("vCPU blob"))?;
            ctx.extend_from_slice(&id.to_le_bytes());
            ctx.extend_from_slice(&len.to_le_bytes());
            ctx.extend_from_slice(blob);
            ctx.resize(ctx.len().next_multiple_of(8), 0);
        }
        if ctx.len() > MAX_HVM_CONTEXT_LEN {
            return Err(ImageError::Invalid(
                "vCPU state larger than HVM_CONTEXT allows",
            ));
        }
        let w = self.writer()?;
        w.hvm_params(&[]).map_err(werr)?;
        w.hvm_context(&ctx).map_err(werr)?;
        w.end().map_err(werr)?;
        take(w, out);
        Ok(())
    }
}

/// Writes one guest-type record through the writer's typed calls, so its
/// order and length rules hold for these records too (and the bytes are
/// those Xen's saver, and `xen::save`, write: an empty policy or vCPU
/// context is elided).
fn put_record(w: &mut StreamWriter<ChunkSink>, rtype: u32, body: &[u8]) -> Result<(), ImageError> {
    let bad = ImageError::Invalid("a guest record's body does not fit its type");
    match RecordType::from(rtype) {
        RecordType::X86PvInfo => {
            let info = PvInfoRepr::parse(body).map_err(|_| bad)?;
            if body.len() != PV_INFO_LEN {
                return Err(bad);
            }
            w.pv_info(info)
        }
        RecordType::X86CpuidPolicy => w.cpuid_policy(body),
        RecordType::X86MsrPolicy => w.msr_policy(body),
        RecordType::X86PvP2mFrames => {
            let r = P2mFramesRepr::parse(body).map_err(|_| bad)?;
            let rest = body.get(P2M_HEADER_LEN..).ok_or(bad)?;
            if rest.len() % 8 != 0 {
                return Err(bad);
            }
            let frames: Vec<u64> = rest
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            w.p2m_frames(r.start_pfn, r.end_pfn, &frames)
        }
        RecordType::X86TscInfo => {
            if body.len() != TSC_INFO_LEN {
                return Err(bad);
            }
            w.tsc_info(TscInfoRepr::parse(body).map_err(|_| bad)?)
        }
        RecordType::SharedInfo => w.shared_info(body),
        kind @ (RecordType::X86PvVcpuBasic
        | RecordType::X86PvVcpuExtended
        | RecordType::X86PvVcpuXsave
        | RecordType::X86PvVcpuMsrs) => {
            let h = VcpuHeaderRepr::parse(body).map_err(|_| bad)?;
            let ctx = body.get(VCPU_HEADER_LEN..).ok_or(bad)?;
            w.vcpu(kind, h.vcpu_id, ctx)
        }
        _ if rtype & OPTIONAL != 0 => w.optional(rtype, body),
        _ => {
            return Err(ImageError::Invalid(
                "a guest record of a type relocd does not write",
            ))
        }
    }
    .map_err(werr)
}

/// The libxc stream decoder (module doc): a [`Decoder`] fed chunk by chunk,
/// with the current `PAGE_DATA` batch and the `HVM_CONTEXT` body gathered
/// in bounded buffers.
#[derive(Debug)]
pub struct LibxcDecoder {
    dec: Decoder,
    pfns: Vec<Pfn>,
    types: Vec<PageType>,
    data: Vec<u8>,
    ctx: Option<Vec<u8>>,
    /// A PV image: its guest-type records go to `SinkGuest::record`.
    pv: bool,
    /// The guest-type record being gathered: its type and body so far.
    rec: Option<(u32, Vec<u8>)>,
    /// Bytes of page contents the current PAGE_DATA record carries.
    data_len: usize,
    /// The current batch was applied straight from the input.
    applied: bool,
    ended: bool,
    failed: bool,
    pages: u64,
    /// The backend's error when the sink refused.
    sink_error: Option<String>,
    /// Room for a zero-elided batch written out for a sink that cannot
    /// clear pages itself.
    rebuild: Vec<u8>,
    /// Room for a chunk's pages read off the link when they cannot go
    /// straight to the sink.
    fetched: Vec<u8>,
}

impl Default for LibxcDecoder {
    fn default() -> Self {
        LibxcDecoder::new()
    }
}

impl LibxcDecoder {
    /// A decoder at the start of an image.
    pub fn new() -> Self {
        LibxcDecoder {
            dec: Decoder::new(Options::default()),
            pfns: Vec::new(),
            types: Vec::new(),
            data: Vec::new(),
            ctx: None,
            pv: false,
            rec: None,
            data_len: 0,
            applied: false,
            ended: false,
            failed: false,
            pages: 0,
            sink_error: None,
            rebuild: Vec::new(),
            fetched: Vec::new(),
        }
    }

    /// Appends to the guest record being gathered, if any, within its
    /// bound.
    fn gather(&mut self, data: &[u8]) -> Result<(), ImageError> {
        if let Some((_, body)) = self.rec.as_mut() {
            if body.len().saturating_add(data.len()) > MAX_GUEST_RECORD_LEN {
                return Err(ImageError::Invalid(
                    "a guest record larger than relocd takes",
                ));
            }
            body.extend_from_slice(data);
        }
        Ok(())
    }

    fn event<S: SinkGuest>(&mut self, ev: Event<'_>, sink: &mut S) -> Result<(), ImageError> {
        match ev {
            Event::PageDataHeader { .. } => {
                self.pfns.clear();
                self.types.clear();
                self.data.clear();
                self.applied = false;
            }
            Event::PfnsDone(summary) => {
                self.data_len = (summary.data_pages as usize).saturating_mul(PAGE_SIZE);
            }
            // The whole page area in one piece (a chunk holds whole
            // records): apply it from the input without gathering it.
            Event::PageData {
                page: 0,
                offset: 0,
                data,
            } if self.data.is_empty() && data.len() == self.data_len => {
                apply_batch(sink, &self.pfns, &self.types, data)
                    .map_err(|e| batch_failed(&mut self.sink_error, e))?;
                self.pages += self.pfns.len() as u64;
                self.applied = true;
            }
            Event::Pfn { entry, .. } => {
                self.pfns.push(entry.pfn);
                self.types.push(PageType::from_raw(
                    u32::from(entry.page_type.nibble()) << 28,
                ));
            }
            Event::PageData { data, .. } => self.data.extend_from_slice(data),
            // A batch is at most MAX_BATCH_SIZE pages (one chunk): a larger
            // PAGE_DATA record would be gathered in memory, so it is refused
            // before any of it is taken (Xen's own limit is 128 MiB).
            Event::Record(info)
                if info.libxc_type() == Some(RecordType::PageData)
                    && usize::try_from(info.length).unwrap_or(usize::MAX)
                        > MAX_PAGE_DATA_RECORD_LEN =>
            {
                return Err(ImageError::Invalid(
                    "PAGE_DATA record larger than one batch of 1024 pages",
                ));
            }
            Event::Record(info) if info.libxc_type() == Some(RecordType::HvmContext) => {
                let len = usize::try_from(info.length).unwrap_or(usize::MAX);
                if len > MAX_HVM_CONTEXT_LEN {
                    return Err(ImageError::Invalid("HVM_CONTEXT too large"));
                }
                self.ctx = Some(Vec::with_capacity(len));
            }
            Event::DomainHeader(d) => self.pv = d.domain_type == DomainType::X86Pv,
            Event::Record(info) if self.pv && is_guest_record(&info) => {
                let len = usize::try_from(info.length).unwrap_or(usize::MAX);
                if len > MAX_GUEST_RECORD_LEN {
                    return Err(ImageError::Invalid(
                        "a guest record larger than relocd takes",
                    ));
                }
                self.rec = Some((info.rtype, Vec::with_capacity(len)));
            }
            // The parts the reader parses itself, written back as they
            // were on the wire (reserved fields are zero in a valid stream).
            Event::PvInfo(r) => {
                let mut b = [0u8; PV_INFO_LEN];
                r.emit(&mut b).map_err(ImageError::Stream)?;
                self.gather(&b)?;
            }
            Event::P2mFrames(r) => {
                let mut b = [0u8; P2M_HEADER_LEN];
                r.emit(&mut b).map_err(ImageError::Stream)?;
                self.gather(&b)?;
            }
            Event::P2mFrame { pfn, .. } => self.gather(&pfn.to_le_bytes())?,
            Event::Vcpu(h) => {
                let mut b = [0u8; VCPU_HEADER_LEN];
                h.emit(&mut b).map_err(ImageError::Stream)?;
                self.gather(&b)?;
            }
            Event::TscInfo(t) => {
                let mut b = [0u8; TSC_INFO_LEN];
                t.emit(&mut b).map_err(ImageError::Stream)?;
                self.gather(&b)?;
            }
            Event::Body { data, .. } => {
                if let Some(ctx) = self.ctx.as_mut() {
                    ctx.extend_from_slice(data);
                } else {
                    self.gather(data)?;
                }
            }
            Event::RecordEnd(info) => match info.libxc_type() {
                Some(RecordType::PageData) if !self.applied => {
                    apply_batch(sink, &self.pfns, &self.types, &self.data)
                        .map_err(|e| batch_failed(&mut self.sink_error, e))?;
                    self.pages += self.pfns.len() as u64;
                }
                Some(RecordType::HvmContext) => {
                    let ctx = self.ctx.take().unwrap_or_default();
                    apply_vcpus(&ctx, sink, &mut self.sink_error)?;
                }
                _ => {
                    if let Some((rtype, body)) = self.rec.take() {
                        if body.len() != info.length as usize {
                            return Err(ImageError::Invalid(
                                "a guest record's body differs from its length",
                            ));
                        }
                        sink.record(rtype, &body).map_err(sink_failed(
                            &mut self.sink_error,
                            "applying a guest record",
                        ))?;
                    }
                }
            },
            Event::End => self.ended = true,
            _ => {}
        }
        Ok(())
    }
}

/// Whether a record belongs to the guest's type (Xen's
/// `restore_ops.process_record`) rather than to the stream itself (pages,
/// framing, checkpoints), which the common code handles.
fn is_guest_record(info: &RecordInfo) -> bool {
    info.layer == Layer::Libxc
        && !matches!(
            RecordType::from(info.rtype),
            RecordType::End
                | RecordType::PageData
                | RecordType::StaticDataEnd
                | RecordType::Verify
                | RecordType::Checkpoint
                | RecordType::CheckpointDirtyPfnList
        )
}

/// Splits an `HVM_CONTEXT` body into vCPU states and loads each.
fn apply_vcpus<S: SinkGuest>(
    mut ctx: &[u8],
    sink: &mut S,
    sink_error: &mut Option<String>,
) -> Result<(), ImageError> {
    let bad = ImageError::Invalid("malformed vCPU framing in HVM_CONTEXT");
    while !ctx.is_empty() {
        let (Some(id), Some(len)) = (ctx.get(0..4), ctx.get(4..8)) else {
            return Err(bad);
        };
        let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(blob) = ctx.get(8..).and_then(|rest| rest.get(..len)) else {
            return Err(bad);
        };
        sink.set_vcpu_context(id, blob)
            .map_err(sink_failed(&mut *sink_error, "loading vCPU state"))?;
        let next = 8usize.saturating_add(len).next_multiple_of(8);
        ctx = ctx.get(next..).unwrap_or_default();
    }
    Ok(())
}

impl ImageDecoder for LibxcDecoder {
    fn apply<S: SinkGuest>(&mut self, mut chunk: &[u8], sink: &mut S) -> Result<(), ImageError> {
        if self.failed {
            return Err(ImageError::Order("image already failed"));
        }
        let r = (|| {
            // No event means all input was consumed; an empty push also
            // drains an event the decoder still holds.
            loop {
                let input = chunk;
                let step = self.dec.push(chunk).map_err(ImageError::Stream)?;
                chunk = chunk.get(step.consumed..).unwrap_or_default();
                match step.event {
                    // The first page of a batch, with the whole page area
                    // in this chunk after it (a chunk holds whole
                    // records): applied from the input, not gathered; the
                    // reader's events for the other pages are skipped.
                    Some(Event::PageData {
                        page: 0,
                        offset: 0,
                        data,
                    }) if !self.applied
                        && self.data.is_empty()
                        && data.as_ptr() == input.as_ptr()
                        && input.len() >= self.data_len =>
                    {
                        let pages = &input[..self.data_len];
                        apply_batch(sink, &self.pfns, &self.types, pages)
                            .map_err(|e| batch_failed(&mut self.sink_error, e))?;
                        self.pages += self.pfns.len() as u64;
                        self.applied = true;
                    }
                    Some(Event::PageData { .. }) if self.applied => {}
                    Some(ev) => self.event(ev, sink)?,
                    None => return Ok(()),
                }
            }
        })();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// The prefix goes through the decoder; when it leaves the decoder at
    /// the start of a `PAGE_DATA` record's page area of exactly the
    /// chunk's pages, the batch is applied from the markers
    /// ([`apply_elided_batch`]: the sink clears the zero pages itself where
    /// it can) and the page area skipped; otherwise the page area is
    /// rebuilt and pushed as usual.
    fn apply_elided<S: SinkGuest>(
        &mut self,
        chunk: Elided<'_>,
        data: &mut dyn PageSource,
        sink: &mut S,
    ) -> Result<(), ImageError> {
        self.apply(chunk.prefix, sink)?;
        let area = chunk.pages * PAGE_SIZE;
        let ready = chunk.pages > 0
            && !self.applied
            && self.data.is_empty()
            && self.data_len == area
            && self.dec.page_data_left() == Some(area);
        if !ready {
            let (mut pages, mut fetched) = (
                std::mem::take(&mut self.rebuild),
                std::mem::take(&mut self.fetched),
            );
            let r = in_memory(data, &mut fetched).and_then(|data| {
                let rest = Elided {
                    prefix: &[],
                    ..chunk
                };
                rest.rebuild(data, &mut pages);
                self.apply(&pages, sink)
            });
            (self.rebuild, self.fetched) = (pages, fetched);
            return r;
        }
        let mut rebuild = std::mem::take(&mut self.rebuild);
        let r = apply_elided_batch(
            sink,
            &self.pfns,
            &self.types,
            chunk.bitmap,
            data,
            &mut rebuild,
        );
        self.rebuild = rebuild;
        if let Err(e) = r {
            self.failed = true;
            return Err(batch_failed(&mut self.sink_error, e));
        }
        self.pages += self.pfns.len() as u64;
        self.applied = true;
        if !self.dec.skip_page_data(area) {
            self.failed = true;
            return Err(ImageError::Order("page area out of step"));
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.ended && !self.failed && self.dec.finish().is_ok()
    }

    fn pages_applied(&self) -> u64 {
        self.pages
    }

    fn sink_failure(&self) -> Option<&str> {
        self.sink_error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sim::{Drive, GuestSpec, SimHypervisor, SimSink, SimSource};
    use relocd_core::guest::SourceGuest;

    #[test]
    fn round_trip_through_the_strict_decoder() {
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let spec = GuestSpec::new("a", 4 << 20)
            .unwrap()
            .with_dirty_rate(1 << 20)
            .unwrap();
        let g = hv.create(&spec, false).unwrap();
        g.advance(30);
        g.pause().unwrap();
        let mut src = SimSource::new(g.clone());
        let info = src.info().unwrap();
        let mut enc = LibxcEncoder::new();
        let mut image = Vec::new();
        let mut out = Vec::new();
        enc.start(&info, &mut out).unwrap();
        enc.static_end(&mut out).unwrap();
        image.extend_from_slice(&out);
        let mut chunks = vec![out.clone()];
        let pfns: Vec<u64> = (0..info.p2m_size).collect();
        for batch in pfns.chunks(1024) {
            let mut types = vec![PageType::NOTAB; batch.len()];
            let mut data = vec![0; batch.len() * PAGE_SIZE];
            src.read_pages(batch, &mut types, &mut data).unwrap();
            out.clear();
            enc.pages(batch, &types, &[&data], &mut out).unwrap();
            assert_eq!(out.len(), 16 + 8 * batch.len());
            out.extend_from_slice(&data);
            image.extend_from_slice(&out);
            chunks.push(out.clone());
        }
        let mut blob = [0; 64];
        let n = src.vcpu_context(0, &mut blob).unwrap();
        out.clear();
        enc.finish(&[&blob[..n]], &mut out).unwrap();
        image.extend_from_slice(&out);
        chunks.push(out.clone());

        // Strict mode: what verify-stream-v2 accepts.
        relocd_core::stream::reader::decode_all(&image, Options::STRICT, 4096, |_| {}).unwrap();

        let there = SimHypervisor::new(1 << 30, Drive::Manual);
        let dst = there.create_empty("a", 4 << 20).unwrap();
        let mut sink = SimSink::new(dst.clone());
        let mut dec = LibxcDecoder::new();
        for c in &chunks {
            assert!(!dec.is_complete());
            dec.apply(c, &mut sink).unwrap();
        }
        assert!(dec.is_complete());
        assert_eq!(dec.pages_applied(), info.p2m_size);
        assert_eq!(dst.steps(), Some(30));
        assert_eq!(g.first_difference(&dst).unwrap(), None);

        // A truncated last chunk never completes; garbage fails.
        let mut dec = LibxcDecoder::new();
        let dst2 = there.create_empty("b", 4 << 20).unwrap();
        let mut sink2 = SimSink::new(dst2);
        dec.apply(&image[..image.len() - 8], &mut sink2).unwrap();
        assert!(!dec.is_complete());
        let mut dec = LibxcDecoder::new();
        assert!(dec.apply(&[0xff; 64], &mut sink2).is_err());
        assert!(!dec.is_complete());
    }

    /// A sim sink that clears zero pages itself only when `cheap` (else
    /// it is written zeros, the default), counting the batches it cleared.
    struct Zeroing {
        sink: SimSink,
        cheap: bool,
        cleared: usize,
    }

    impl SinkGuest for Zeroing {
        type Error = crate::backend::sim::SimFault;
        fn populate(&mut self, p: &[Pfn], t: &[PageType]) -> Result<(), Self::Error> {
            self.sink.populate(p, t)
        }
        fn write_pages(&mut self, p: &[Pfn], t: &[PageType], d: &[u8]) -> Result<(), Self::Error> {
            self.sink.write_pages(p, t, d)
        }
        fn zero_pages(&mut self, p: &[Pfn], t: &[PageType]) -> Result<bool, Self::Error> {
            if !self.cheap {
                return Ok(false);
            }
            self.cleared += 1;
            self.sink.zero_pages(p, t)
        }
        fn set_vcpu_context(&mut self, v: u32, b: &[u8]) -> Result<(), Self::Error> {
            self.sink.set_vcpu_context(v, b)
        }
        fn complete(&mut self) -> Result<(), Self::Error> {
            self.sink.complete()
        }
        fn unpause(&mut self) -> Result<(), Self::Error> {
            self.sink.unpause()
        }
        fn destroy(&mut self) -> Result<(), Self::Error> {
            self.sink.destroy()
        }
    }

    /// Batches whose zero pages travel as markers land byte for byte over
    /// a destination full of garbage, whether the sink clears pages itself
    /// or is written zeros, and also when the marked chunk's prefix runs
    /// into the pages (the page area is then rebuilt).
    #[test]
    fn zero_marked_batches_land_as_whole_ones() {
        use super::super::pack::{self, Forms, Unpacked};
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let spec = GuestSpec::new("a", 8 << 20).unwrap().with_fill(25).unwrap();
        let g = hv.create(&spec, false).unwrap();
        g.advance(5);
        g.pause().unwrap();
        let mut src = SimSource::new(g.clone());
        let info = src.info().unwrap();
        let mut enc = LibxcEncoder::new();
        let mut head = Vec::new();
        enc.start(&info, &mut head).unwrap();
        enc.static_end(&mut head).unwrap();
        // Each batch: (record prefix, its pages).
        let mut batches = Vec::new();
        let pfns: Vec<u64> = (0..info.p2m_size).collect();
        for batch in pfns.chunks(512) {
            let mut types = vec![PageType::NOTAB; batch.len()];
            let mut data = vec![0; batch.len() * PAGE_SIZE];
            src.read_pages(batch, &mut types, &mut data).unwrap();
            let mut prefix = Vec::new();
            enc.pages(batch, &types, &[&data], &mut prefix).unwrap();
            batches.push((prefix, data));
        }
        let mut blob = [0; 64];
        let n = src.vcpu_context(0, &mut blob).unwrap();
        let mut tail = Vec::new();
        enc.finish(&[&blob[..n]], &mut tail).unwrap();
        let zero_only = Forms {
            lz4: false,
            zero: true,
        };
        for (case, (cheap, shift)) in [(true, false), (false, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            let there = SimHypervisor::new(1 << 30, Drive::Manual);
            let dst = there.create_empty("a", 8 << 20).unwrap();
            // Garbage everywhere first.
            let all: Vec<u64> = (0..info.p2m_size).collect();
            dst.write_pages(&all, &vec![0xee; all.len() * PAGE_SIZE])
                .unwrap();
            let mut sink = Zeroing {
                sink: SimSink::new(dst.clone()),
                cheap,
                cleared: 0,
            };
            let mut dec = LibxcDecoder::new();
            let mut apply = |dec: &mut LibxcDecoder, c: Unpacked<'_>| match c {
                Unpacked::Whole(c) => dec.apply(c, &mut sink),
                Unpacked::Elided(e, mut data) => dec.apply_elided(e, &mut data, &mut sink),
            };
            apply(&mut dec, Unpacked::Whole(&head)).unwrap();
            let mut marked = 0;
            for (prefix, data) in &batches {
                // The prefix may run one page into the page area.
                let (prefix, data) = if shift {
                    (
                        [&prefix[..], &data[..PAGE_SIZE]].concat(),
                        &data[PAGE_SIZE..],
                    )
                } else {
                    (prefix.clone(), &data[..])
                };
                let (mut wire, mut b, mut sc) = (Vec::new(), Vec::new(), Vec::new());
                let mut bufs = pack::PackBufs::default();
                let (_, zeros) =
                    pack::pack_chunk(zero_only, &[&prefix], &[data], &mut bufs, |p, _| {
                        wire = p.concat();
                    });
                marked += zeros;
                let c = pack::unpack_elided(&wire, zero_only, &mut b, &mut sc).unwrap();
                apply(&mut dec, c).unwrap();
            }
            apply(&mut dec, Unpacked::Whole(&tail)).unwrap();
            assert!(marked > 0, "case {case}");
            assert!(dec.is_complete(), "case {case}");
            assert_eq!(dec.pages_applied(), info.p2m_size, "case {case}");
            assert_eq!(g.first_difference(&dst).unwrap(), None, "case {case}");
            // Cleared by the sink, unless it cannot or the page area was
            // out of step with the markers (then rebuilt, as sent).
            assert_eq!(
                sink.cleared > 0,
                cheap && !shift,
                "case {case}: {}",
                sink.cleared
            );
        }
    }

    #[test]
    fn a_page_data_record_larger_than_a_batch_is_refused_before_it_is_gathered() {
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let spec = GuestSpec::new("a", 4 << 20).unwrap();
        let g = hv.create(&spec, true).unwrap();
        let info = SimSource::new(g).info().unwrap();
        let mut head = Vec::new();
        let mut enc = LibxcEncoder::new();
        enc.start(&info, &mut head).unwrap();
        enc.static_end(&mut head).unwrap();
        // A PAGE_DATA header claiming 2048 pages' worth of body: within
        // Xen's 128 MiB record limit, above one 1024-page batch.
        let body_len = u32::try_from(8 + 2048 * 8 + 2048 * PAGE_SIZE).unwrap();
        let mut chunk = head.clone();
        chunk.extend_from_slice(&1u32.to_le_bytes()); // REC_TYPE_PAGE_DATA
        chunk.extend_from_slice(&body_len.to_le_bytes());
        chunk.extend_from_slice(&2048u32.to_le_bytes()); // count
        chunk.extend_from_slice(&0u32.to_le_bytes()); // reserved
        let dst = hv.create_empty("b", 4 << 20).unwrap();
        let mut sink = SimSink::new(dst);
        let mut dec = LibxcDecoder::new();
        let err = dec.apply(&chunk, &mut sink).unwrap_err();
        assert!(
            matches!(err, ImageError::Invalid(m) if m.contains("larger than one batch")),
            "{err:?}"
        );
    }

    /// A PV image from the encoder is, byte for byte, what the stream
    /// writer's typed calls write in Xen's saver's order (as `xen::save`
    /// does), and it passes the strict reader.
    #[test]
    fn pv_records_are_written_as_the_saver_writes_them() {
        use relocd_core::stream::x86::TscInfoRepr;
        let info = GuestInfo {
            guest_type: GuestType::Pv,
            p2m_size: 600,
            nr_pages: 600,
            vcpus: 1,
        };
        let cpuid: Vec<u8> = (0..24).collect();
        let tsc = TscInfoRepr {
            mode: 1,
            khz: 1_000_000,
            nsec: 42,
            incarnation: 3,
        };
        let mut tsc_b = [0u8; TSC_INFO_LEN];
        tsc.emit(&mut tsc_b).unwrap();
        let mut p2m = vec![0u8; 8];
        p2m[4..8].copy_from_slice(&599u32.to_le_bytes());
        p2m.extend_from_slice(&0x77u64.to_le_bytes());
        p2m.extend_from_slice(&0x78u64.to_le_bytes());
        let shared = vec![0x5a; PAGE_SIZE];
        let mut basic = vec![0u8; 8];
        basic.extend_from_slice(&[1; 40]);
        let pfns: Vec<Pfn> = (0..600).collect();
        let types = vec![PageType::NOTAB; 600];
        let data = vec![0xc3; 600 * PAGE_SIZE];

        let mut enc = LibxcEncoder::new();
        let mut image = Vec::new();
        let mut out = Vec::new();
        enc.start(&info, &mut out).unwrap();
        enc.record(
            RecordType::X86PvInfo.into(),
            &[8, 4, 0, 0, 0, 0, 0, 0],
            &mut out,
        )
        .unwrap();
        enc.record(RecordType::X86CpuidPolicy.into(), &cpuid, &mut out)
            .unwrap();
        // an empty policy is elided, as the saver does
        enc.record(RecordType::X86MsrPolicy.into(), &[], &mut out)
            .unwrap();
        enc.static_end(&mut out).unwrap();
        enc.record(RecordType::X86PvP2mFrames.into(), &p2m, &mut out)
            .unwrap();
        image.append(&mut out);
        enc.pages(&pfns, &types, &[&data], &mut out).unwrap();
        image.append(&mut out);
        image.extend_from_slice(&data);
        enc.record(RecordType::X86TscInfo.into(), &tsc_b, &mut out)
            .unwrap();
        enc.record(RecordType::SharedInfo.into(), &shared, &mut out)
            .unwrap();
        enc.record(RecordType::X86PvVcpuBasic.into(), &basic, &mut out)
            .unwrap();
        // vCPU state comes as records, not as blobs
        assert!(enc.finish(&[&[1, 2]], &mut Vec::new()).is_err());
        enc.finish(&[], &mut out).unwrap();
        image.append(&mut out);

        let domain = DomainHeaderRepr {
            domain_type: DomainType::X86Pv,
            page_shift: 12,
            xen_major: 4,
            xen_minor: 17,
        };
        let mut w = StreamWriter::new(ChunkSink::default(), Framing::Libxc, domain).unwrap();
        w.pv_info(PvInfoRepr::X86_64).unwrap();
        w.cpuid_policy(&cpuid).unwrap();
        w.msr_policy(&[]).unwrap();
        w.static_data_end().unwrap();
        w.p2m_frames(0, 599, &[0x77, 0x78]).unwrap();
        let entries: Vec<PfnEntry> = pfns
            .iter()
            .map(|&pfn| PfnEntry {
                pfn,
                page_type: WirePageType::from_nibble(0),
            })
            .collect();
        let pages: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        w.page_data(&entries, &pages).unwrap();
        w.tsc_info(tsc).unwrap();
        w.shared_info(&shared).unwrap();
        w.vcpu(RecordType::X86PvVcpuBasic, 0, &[1; 40]).unwrap();
        w.end().unwrap();
        let direct = w.finish().unwrap().buf;
        assert_eq!(image, direct);
        relocd_core::stream::reader::decode_all(&image, Options::STRICT, 4096, |_| {}).unwrap();

        // Records the writer would put out of order are refused.
        let mut enc = LibxcEncoder::new();
        let mut out = Vec::new();
        enc.start(&info, &mut out).unwrap();
        assert!(enc.static_end(&mut out).is_err(), "X86_PV_INFO first");
        assert!(enc
            .record(RecordType::X86PvP2mFrames.into(), &p2m, &mut out)
            .is_err());
        assert!(
            enc.record(0x1234, &[], &mut out).is_err(),
            "unknown mandatory"
        );
    }

    /// The decoder hands a PV image's own records to the sink with their
    /// bodies as written, and refuses one above its bound unread.
    #[test]
    fn pv_records_reach_the_sink_and_are_bounded() {
        #[derive(Default)]
        struct Rec(Vec<(u32, Vec<u8>)>, u64);
        impl SinkGuest for Rec {
            type Error = ();
            fn populate(&mut self, _: &[Pfn], _: &[PageType]) -> Result<(), ()> {
                Ok(())
            }
            fn write_pages(&mut self, p: &[Pfn], _: &[PageType], _: &[u8]) -> Result<(), ()> {
                self.1 += p.len() as u64;
                Ok(())
            }
            fn set_vcpu_context(&mut self, _: u32, _: &[u8]) -> Result<(), ()> {
                Err(())
            }
            fn unpause(&mut self) -> Result<(), ()> {
                Ok(())
            }
            fn destroy(&mut self) -> Result<(), ()> {
                Ok(())
            }
            fn record(&mut self, rtype: u32, body: &[u8]) -> Result<(), ()> {
                self.0.push((rtype, body.to_vec()));
                Ok(())
            }
        }
        let info = GuestInfo {
            guest_type: GuestType::Pv,
            p2m_size: 2,
            nr_pages: 2,
            vcpus: 1,
        };
        let recs: Vec<(u32, Vec<u8>)> = vec![
            (RecordType::X86PvInfo.into(), vec![8, 4, 0, 0, 0, 0, 0, 0]),
            (RecordType::X86MsrPolicy.into(), vec![7; 32]),
            (RecordType::X86PvP2mFrames.into(), {
                let mut b = vec![0u8; 8];
                b[4] = 1;
                b.extend_from_slice(&9u64.to_le_bytes());
                b
            }),
            (RecordType::X86TscInfo.into(), vec![0; 24]),
            (RecordType::X86PvVcpuXsave.into(), {
                let mut b = vec![0u8; 8];
                b.extend_from_slice(&[4; 20]);
                b
            }),
        ];
        let mut enc = LibxcEncoder::new();
        let mut chunks = Vec::new();
        let mut out = Vec::new();
        enc.start(&info, &mut out).unwrap();
        enc.record(recs[0].0, &recs[0].1, &mut out).unwrap();
        enc.record(recs[1].0, &recs[1].1, &mut out).unwrap();
        enc.static_end(&mut out).unwrap();
        enc.record(recs[2].0, &recs[2].1, &mut out).unwrap();
        chunks.push(std::mem::take(&mut out));
        let data = vec![1u8; 2 * PAGE_SIZE];
        enc.pages(&[0, 1], &[PageType::NOTAB; 2], &[&data], &mut out)
            .unwrap();
        out.extend_from_slice(&data);
        chunks.push(std::mem::take(&mut out));
        enc.record(recs[3].0, &recs[3].1, &mut out).unwrap();
        enc.record(recs[4].0, &recs[4].1, &mut out).unwrap();
        enc.finish(&[], &mut out).unwrap();
        chunks.push(std::mem::take(&mut out));
        let mut sink = Rec::default();
        let mut dec = LibxcDecoder::new();
        // byte by byte: bodies are gathered across chunk boundaries
        for c in &chunks {
            for b in c.chunks(7) {
                dec.apply(b, &mut sink).unwrap();
            }
        }
        assert!(dec.is_complete());
        assert_eq!(sink.0, recs);
        assert_eq!(sink.1, 2);

        // A SHARED_INFO header claiming more than the bound.
        let mut head = chunks[0].clone();
        head.extend_from_slice(&u32::from(RecordType::SharedInfo).to_le_bytes());
        let len = u32::try_from(MAX_GUEST_RECORD_LEN + 8).unwrap();
        head.extend_from_slice(&len.to_le_bytes());
        let mut dec = LibxcDecoder::new();
        let e = dec.apply(&head, &mut Rec::default()).unwrap_err();
        assert!(
            matches!(e, ImageError::Invalid(_) | ImageError::Stream(_)),
            "{e:?}"
        );
    }

    #[test]
    fn vcpu_framing_with_a_huge_length_is_an_error() {
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let dst = hv.create_empty("c", 4 << 20).unwrap();
        let mut sink = SimSink::new(dst);
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&0u32.to_le_bytes());
        ctx.extend_from_slice(&u32::MAX.to_le_bytes());
        ctx.extend_from_slice(&[0; 8]);
        assert!(apply_vcpus(&ctx, &mut sink, &mut None).is_err());
    }
}
