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
//! | first | image header, domain header, `STATIC_DATA_END` |
//! | one per batch | `PAGE_DATA` (at most 1024 pfns) |
//! | last | `HVM_PARAMS` (empty), `HVM_CONTEXT`, `END` |
//!
//! # vCPU state in `HVM_CONTEXT`
//!
//! Xen's `HVM_CONTEXT` body is the hypervisor's HVM save blob. For the
//! guests relocd builds itself (the simulator's) the body is, per vCPU in
//! ascending order: `u32` vCPU id, `u32` length `n`, `n` bytes of the
//! backend's vCPU context, zero padding to a multiple of 8. The decoder
//! bounds the body to [`MAX_HVM_CONTEXT_LEN`] before keeping any of it.

use relocd_core::guest::{GuestInfo, GuestType, PageType, Pfn, SinkGuest, PAGE_SIZE};
use relocd_core::precopy::drive::apply_batch;
use relocd_core::precopy::MAX_PAGE_DATA_RECORD_LEN;
use relocd_core::stream::domain::{DomainHeaderRepr, DomainType};
use relocd_core::stream::reader::{Decoder, Event, Options};
use relocd_core::stream::writer::{Framing, Sink, StreamWriter, WriteError};
use relocd_core::stream::{PageType as WirePageType, PfnEntry, RecordType};

/// Largest `HVM_CONTEXT` body the decoder accepts (1 MiB).
pub const MAX_HVM_CONTEXT_LEN: usize = 1 << 20;

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
    /// The sink guest refused a batch or a vCPU state.
    #[error("destination guest refused the image ({0})")]
    Sink(&'static str),
}

/// Turns what the source reads from its guest into image chunks. Each
/// method appends whole records to `out` (the caller clears it and sends
/// it as one chunk).
pub trait ImageEncoder {
    /// The headers and static records, before any page.
    fn start(&mut self, info: &GuestInfo, out: &mut Vec<u8>) -> Result<(), ImageError>;
    /// One batch of pages: `types[i]` is the type of `pfns[i]`, `data` the
    /// packed contents of those that have data (`SourceGuest::read_pages`).
    ///
    /// Appends to `out` the bytes of the batch's record(s) that precede the
    /// page contents; the chunk is `out` followed by `data` itself, which
    /// the caller sends from its own buffer, spared a copy.
    fn pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ImageError>;
    /// The vCPU states (index = vCPU id) and the end of the image.
    fn finish(&mut self, vcpus: &[&[u8]], out: &mut Vec<u8>) -> Result<(), ImageError>;
}

/// Applies image chunks, in order, to the guest being built.
pub trait ImageDecoder {
    /// Applies one chunk. After an error the image is unusable.
    fn apply<S: SinkGuest>(&mut self, chunk: &[u8], sink: &mut S) -> Result<(), ImageError>;
    /// Whether the end of the image has been applied.
    fn is_complete(&self) -> bool;
    /// Pages written to the sink so far.
    fn pages_applied(&self) -> u64;
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
}

impl LibxcEncoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        LibxcEncoder::default()
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
        if info.guest_type == GuestType::Pv {
            // PV needs X86_PV_INFO and the p2m frames from the backend;
            // the Xen backend brings them.
            return Err(ImageError::Invalid("PV images are not written yet"));
        }
        let mut w =
            StreamWriter::new(ChunkSink::default(), Framing::Libxc, domain).map_err(werr)?;
        w.static_data_end().map_err(werr)?;
        take(&mut w, out);
        self.writer = Some(w);
        Ok(())
    }

    fn pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
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
        let pages: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
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
    /// Bytes of page contents the current PAGE_DATA record carries.
    data_len: usize,
    /// The current batch was applied straight from the input.
    applied: bool,
    ended: bool,
    failed: bool,
    pages: u64,
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
            data_len: 0,
            applied: false,
            ended: false,
            failed: false,
            pages: 0,
        }
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
                    .map_err(|_| ImageError::Sink("page batch"))?;
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
            Event::Body { data, .. } => {
                if let Some(ctx) = self.ctx.as_mut() {
                    ctx.extend_from_slice(data);
                }
            }
            Event::RecordEnd(info) => match info.libxc_type() {
                Some(RecordType::PageData) if !self.applied => {
                    apply_batch(sink, &self.pfns, &self.types, &self.data)
                        .map_err(|_| ImageError::Sink("page batch"))?;
                    self.pages += self.pfns.len() as u64;
                }
                Some(RecordType::HvmContext) => {
                    let ctx = self.ctx.take().unwrap_or_default();
                    apply_vcpus(&ctx, sink)?;
                }
                _ => {}
            },
            Event::End => self.ended = true,
            _ => {}
        }
        Ok(())
    }
}

/// Splits an `HVM_CONTEXT` body into vCPU states and loads each.
fn apply_vcpus<S: SinkGuest>(mut ctx: &[u8], sink: &mut S) -> Result<(), ImageError> {
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
            .map_err(|_| ImageError::Sink("vCPU state"))?;
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
                let step = self.dec.push(chunk).map_err(ImageError::Stream)?;
                chunk = chunk.get(step.consumed..).unwrap_or_default();
                match step.event {
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

    fn is_complete(&self) -> bool {
        self.ended && !self.failed && self.dec.finish().is_ok()
    }

    fn pages_applied(&self) -> u64 {
        self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Drive, GuestSpec, SimHypervisor, SimSink, SimSource};
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
        image.extend_from_slice(&out);
        let mut chunks = vec![out.clone()];
        let pfns: Vec<u64> = (0..info.p2m_size).collect();
        for batch in pfns.chunks(1024) {
            let mut types = vec![PageType::NOTAB; batch.len()];
            let mut data = vec![0; batch.len() * PAGE_SIZE];
            src.read_pages(batch, &mut types, &mut data).unwrap();
            out.clear();
            enc.pages(batch, &types, &data, &mut out).unwrap();
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

    #[test]
    fn a_page_data_record_larger_than_a_batch_is_refused_before_it_is_gathered() {
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let spec = GuestSpec::new("a", 4 << 20).unwrap();
        let g = hv.create(&spec, true).unwrap();
        let info = SimSource::new(g).info().unwrap();
        let mut head = Vec::new();
        LibxcEncoder::new().start(&info, &mut head).unwrap();
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

    #[test]
    fn vcpu_framing_with_a_huge_length_is_an_error() {
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let dst = hv.create_empty("c", 4 << 20).unwrap();
        let mut sink = SimSink::new(dst);
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&0u32.to_le_bytes());
        ctx.extend_from_slice(&u32::MAX.to_le_bytes());
        ctx.extend_from_slice(&[0; 8]);
        assert!(apply_vcpus(&ctx, &mut sink).is_err());
    }
}
