//! Writing streams the way Xen's saver lays them out.
//!
//! Two levels:
//!
//! * [`emit_record`] writes one framed record (header, body parts, zeroed
//!   padding) into a caller buffer; [`write_record`] does the same into a
//!   [`Sink`]. They check `REC_LENGTH_MAX` on the padded length, as Xen's
//!   `write_split_record` does.
//! * [`StreamWriter`] writes a whole stream into a [`Sink`] and refuses
//!   calls out of the spec's order (the same rules [`super::reader`]
//!   checks), so what it writes is what Xen's restorer and
//!   `verify-stream-v2` accept.
//!
//! # Record order
//!
//! x86 PV, as Xen's saver (`xg_sr_save_x86_pv.c`) writes it:
//! `pv_info`, `cpuid_policy`, `msr_policy`, `static_data_end`,
//! `p2m_frames`, `page_data`…, `tsc_info`, `shared_info`, then per online
//! vCPU `vcpu(Basic)`, `vcpu(Extended)`, `vcpu(Xsave)`, `vcpu(Msrs)`, then
//! `end`.
//!
//! x86 HVM: `cpuid_policy`, `msr_policy`, `static_data_end`,
//! `page_data`…, `tsc_info`, `hvm_params`, `hvm_context`, `end`. (Xen's
//! saver writes HVM_CONTEXT before HVM_PARAMS; its restorer accepts both,
//! the spec demands PARAMS first, so we write PARAMS first.)
//!
//! In libxl framing, [`StreamWriter::end`] is followed by optional
//! `emulator_xenstore_data` / `emulator_context` and
//! [`StreamWriter::finish`], which writes libxl's END.

use super::domain::{DomainHeader, DomainHeaderRepr, DomainType};
use super::image::{ImageHeader, ImageHeaderRepr};
use super::libxl::{self, EmulatorHeaderRepr};
use super::page_data::{self, PfnEntry};
use super::record::{self, RecordType};
use super::x86::{HvmParam, HvmParamsRepr, TscInfoRepr, HVM_PARAM_LEN};
use super::x86_pv::{P2mFramesRepr, PvInfoRepr, VcpuHeaderRepr};
use super::xlfile;
use super::{padded_len, padding_len, Error, ErrorKind, OrderRule, PAGE_SIZE, REC_LENGTH_MAX};

/// Where encoded bytes go. Every `embedded_io::Write` is a sink.
pub trait Sink {
    /// The sink's error.
    type Error;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error>;
}

impl<W: embedded_io::Write> Sink for W {
    type Error = W::Error;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        embedded_io::Write::write_all(self, buf)
    }
}

/// A writer error: the sink failed, or the stream would be malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError<E> {
    /// The sink failed.
    Io(E),
    /// The call would make a malformed stream; nothing was written.
    Stream(Error),
}

impl<E: core::fmt::Debug> core::fmt::Display for WriteError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WriteError::Io(e) => write!(f, "sink: {e:?}"),
            WriteError::Stream(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for WriteError<E> {}

const ZEROES: [u8; 8] = [0; 8];

/// Sum of the parts' lengths, refused above `REC_LENGTH_MAX` once padded.
fn body_len(parts: &[&[u8]]) -> Result<u32, Error> {
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let len =
        u32::try_from(total).map_err(|_| Error::new(0, ErrorKind::RecordTooLong(u32::MAX)))?;
    if padded_len(len) > u64::from(REC_LENGTH_MAX) {
        return Err(Error::new(0, ErrorKind::RecordTooLong(len)));
    }
    Ok(len)
}

/// Octets a record with a body of `body_len` octets occupies.
pub const fn record_len(body_len: u32) -> u64 {
    record::HEADER_LEN as u64 + padded_len(body_len)
}

/// Writes one record (header, the concatenated `parts`, zero padding) into
/// `out`; returns the octets written.
pub fn emit_record(out: &mut [u8], rtype: u32, parts: &[&[u8]]) -> Result<usize, Error> {
    let len = body_len(parts)?;
    let total = record_len(len) as usize;
    if out.len() < total {
        return Err(Error::new(0, ErrorKind::BufferTooSmall));
    }
    record::RecordHeaderRepr { rtype, length: len }.emit(
        &mut record::RecordHeader::new_unchecked(&mut out[..record::HEADER_LEN]),
    )?;
    let mut pos = record::HEADER_LEN;
    for p in parts {
        out[pos..pos + p.len()].copy_from_slice(p);
        pos += p.len();
    }
    out[pos..total].fill(0);
    Ok(total)
}

/// Writes one record into a sink; returns the octets written.
pub fn write_record<S: Sink + ?Sized>(
    sink: &mut S,
    rtype: u32,
    parts: &[&[u8]],
) -> Result<u64, WriteError<S::Error>> {
    let len = body_len(parts).map_err(WriteError::Stream)?;
    let mut hdr = [0u8; record::HEADER_LEN];
    record::RecordHeaderRepr { rtype, length: len }
        .emit(&mut record::RecordHeader::new_unchecked(&mut hdr[..]))
        .map_err(WriteError::Stream)?;
    sink.write_all(&hdr).map_err(WriteError::Io)?;
    for p in parts {
        if !p.is_empty() {
            sink.write_all(p).map_err(WriteError::Io)?;
        }
    }
    let pad = padding_len(len);
    if pad > 0 {
        sink.write_all(&ZEROES[..pad]).map_err(WriteError::Io)?;
    }
    Ok(record_len(len))
}

/// The framing around the libxc stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A bare libxc stream.
    Libxc,
    /// libxl header and LIBXC_CONTEXT before, libxl END after.
    Libxl,
    /// An xl save file: xl header and config, then libxl framing.
    Xl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Static data records.
    Static,
    /// After STATIC_DATA_END: p2m and memory.
    Memory,
    /// After the first end-of-checkpoint record (TSC, shared info, vCPUs,
    /// HVM state).
    Tail,
    /// libxc END written; libxl emulator records may follow.
    LibxcEnded,
    /// Complete.
    Finished,
}

/// Writes a whole stream in Xen's layout, refusing out-of-order calls.
///
/// Every call either writes one complete record or writes nothing and
/// returns [`WriteError::Stream`] with [`ErrorKind::WriterState`] (order)
/// or a length error.
#[derive(Debug)]
pub struct StreamWriter<S: Sink> {
    sink: S,
    framing: Framing,
    guest: DomainType,
    phase: Phase,
    written: u64,
    pv_info: bool,
    p2m: bool,
    pages: bool,
    vcpus: bool,
    hvm_params: bool,
}

type WResult<T, S> = Result<T, WriteError<<S as Sink>::Error>>;

impl<S: Sink> StreamWriter<S> {
    /// Starts a stream: writes the framing's headers, then the libxc image
    /// header (version 3, little-endian) and `domain`.
    pub fn new(mut sink: S, framing: Framing, domain: DomainHeaderRepr) -> WResult<Self, S> {
        Self::new_with_config(&mut sink, framing, domain, &[])?;
        Ok(Self::with_sink(sink, framing, domain))
    }

    /// Starts an xl save file whose config (libxl JSON, with its trailing
    /// NUL, as `xl save` stores it) is `config`.
    pub fn new_xl(mut sink: S, config: &[u8], domain: DomainHeaderRepr) -> WResult<Self, S> {
        let n = Self::new_with_config(&mut sink, Framing::Xl, domain, config)?;
        let mut w = Self::with_sink(sink, Framing::Xl, domain);
        w.written = n;
        Ok(w)
    }

    fn with_sink(sink: S, framing: Framing, domain: DomainHeaderRepr) -> Self {
        let written = match framing {
            Framing::Libxc => 40,
            Framing::Libxl => 16 + 8 + 40,
            Framing::Xl => 0,
        };
        StreamWriter {
            sink,
            framing,
            guest: domain.domain_type,
            phase: Phase::Static,
            written,
            pv_info: false,
            p2m: false,
            pages: false,
            vcpus: false,
            hvm_params: false,
        }
    }

    fn new_with_config(
        sink: &mut S,
        framing: Framing,
        domain: DomainHeaderRepr,
        config: &[u8],
    ) -> WResult<u64, S> {
        if matches!(domain.domain_type, DomainType::Unknown(_)) || domain.page_shift != 12 {
            let kind = match domain.domain_type {
                DomainType::Unknown(t) => ErrorKind::UnsupportedDomainType(t),
                _ => ErrorKind::UnsupportedPageShift(domain.page_shift),
            };
            return Err(WriteError::Stream(Error::new(0, kind)));
        }
        let mut n = 0u64;
        if framing == Framing::Xl {
            let cfg_len = u32::try_from(config.len())
                .ok()
                .filter(|l| *l <= u32::MAX - 4)
                .ok_or(WriteError::Stream(Error::new(
                    0,
                    ErrorKind::XlConfigTruncated,
                )))?;
            let mut h = [0u8; xlfile::HEADER_LEN];
            xlfile::HeaderRepr::for_config(cfg_len)
                .emit(&mut xlfile::Header::new_unchecked(&mut h[..]))
                .map_err(WriteError::Stream)?;
            sink.write_all(&h).map_err(WriteError::Io)?;
            sink.write_all(&cfg_len.to_le_bytes())
                .map_err(WriteError::Io)?;
            if !config.is_empty() {
                sink.write_all(config).map_err(WriteError::Io)?;
            }
            n += xlfile::HEADER_LEN as u64 + 4 + config.len() as u64;
        }
        if framing != Framing::Libxc {
            let mut h = [0u8; libxl::HEADER_LEN];
            libxl::HeaderRepr::CURRENT
                .emit(&mut libxl::Header::new_unchecked(&mut h[..]))
                .map_err(WriteError::Stream)?;
            sink.write_all(&h).map_err(WriteError::Io)?;
            n += libxl::HEADER_LEN as u64;
            n += write_record(sink, libxl::RecordType::LibxcContext.into(), &[])?;
        }
        let mut h = [0u8; 40];
        ImageHeaderRepr::CURRENT
            .emit(&mut ImageHeader::new_unchecked(&mut h[..24]))
            .map_err(WriteError::Stream)?;
        domain
            .emit(&mut DomainHeader::new_unchecked(&mut h[24..]))
            .map_err(WriteError::Stream)?;
        sink.write_all(&h).map_err(WriteError::Io)?;
        Ok(n + 40)
    }

    /// Octets written so far.
    pub const fn written(&self) -> u64 {
        self.written
    }

    /// The sink, e.g. to flush it.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    fn refuse<T>(&self, rule: OrderRule) -> WResult<T, S> {
        Err(WriteError::Stream(Error::new(
            self.written,
            ErrorKind::WriterState(rule),
        )))
    }

    fn wrong_guest<T>(&self, rtype: RecordType) -> WResult<T, S> {
        Err(WriteError::Stream(Error::new(
            self.written,
            ErrorKind::WrongGuestType(rtype.into()),
        )))
    }

    fn put(&mut self, rtype: u32, parts: &[&[u8]]) -> WResult<(), S> {
        let n = write_record(&mut self.sink, rtype, parts).map_err(|e| match e {
            WriteError::Stream(s) => WriteError::Stream(s.shifted(self.written)),
            io => io,
        })?;
        self.written += n;
        Ok(())
    }

    fn need_libxc(&self) -> WResult<(), S> {
        match self.phase {
            Phase::LibxcEnded | Phase::Finished => self.refuse(OrderRule::AfterEnd),
            _ => Ok(()),
        }
    }

    fn need_static(&self) -> WResult<(), S> {
        self.need_libxc()?;
        if self.phase != Phase::Static {
            return self.refuse(OrderRule::StaticAfterEnd);
        }
        Ok(())
    }

    fn need_content(&self) -> WResult<(), S> {
        self.need_libxc()?;
        if self.phase == Phase::Static {
            return self.refuse(OrderRule::StaticDataEndFirst);
        }
        Ok(())
    }

    fn is_pv(&self) -> bool {
        self.guest == DomainType::X86Pv
    }

    /// X86_PV_INFO (PV, static data, once).
    pub fn pv_info(&mut self, info: PvInfoRepr) -> WResult<(), S> {
        if !self.is_pv() {
            return self.wrong_guest(RecordType::X86PvInfo);
        }
        self.need_static()?;
        if self.pv_info {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::Duplicate(RecordType::X86PvInfo.into()),
            )));
        }
        if PvInfoRepr::parse(&[info.guest_width, info.pt_levels, 0, 0, 0, 0, 0, 0]).is_err() {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadPvInfo(info.guest_width, info.pt_levels),
            )));
        }
        let mut b = [0u8; 8];
        info.emit(&mut b).map_err(WriteError::Stream)?;
        self.put(RecordType::X86PvInfo.into(), &[&b])?;
        self.pv_info = true;
        Ok(())
    }

    /// X86_CPUID_POLICY: an array of 24-octet `xen_cpuid_leaf_t` (static
    /// data). An empty policy is elided, as the spec asks.
    pub fn cpuid_policy(&mut self, leaves: &[u8]) -> WResult<(), S> {
        self.policy(
            RecordType::X86CpuidPolicy,
            leaves,
            super::x86::CPUID_LEAF_LEN,
        )
    }

    /// X86_MSR_POLICY: an array of 16-octet `xen_msr_entry_t` (static
    /// data). An empty policy is elided.
    pub fn msr_policy(&mut self, entries: &[u8]) -> WResult<(), S> {
        self.policy(RecordType::X86MsrPolicy, entries, super::x86::MSR_ENTRY_LEN)
    }

    fn policy(&mut self, t: RecordType, data: &[u8], unit: usize) -> WResult<(), S> {
        self.need_static()?;
        if data.is_empty() {
            return Ok(());
        }
        if data.len() % unit != 0 {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadRecordLength(t.into(), data.len() as u32),
            )));
        }
        self.put(t.into(), &[data])
    }

    /// STATIC_DATA_END. For PV, X86_PV_INFO must have been written.
    pub fn static_data_end(&mut self) -> WResult<(), S> {
        self.need_static()?;
        if self.is_pv() && !self.pv_info {
            return self.refuse(OrderRule::PvInfoFirst);
        }
        self.put(RecordType::StaticDataEnd.into(), &[])?;
        self.phase = Phase::Memory;
        Ok(())
    }

    /// X86_PV_P2M_FRAMES (PV, once, before any PAGE_DATA). `frames` must
    /// hold `end/fpp - start/fpp + 1` pfns for the guest width.
    pub fn p2m_frames(&mut self, start_pfn: u32, end_pfn: u32, frames: &[u64]) -> WResult<(), S> {
        if !self.is_pv() {
            return self.wrong_guest(RecordType::X86PvP2mFrames);
        }
        self.need_content()?;
        if self.p2m {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::Duplicate(RecordType::X86PvP2mFrames.into()),
            )));
        }
        let r = P2mFramesRepr { start_pfn, end_pfn };
        if start_pfn > end_pfn {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadP2mRange(start_pfn, end_pfn),
            )));
        }
        if frames.len() as u64 != u64::from(r.frames(PAGE_SIZE as u32 / 8)) {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadRecordLength(
                    RecordType::X86PvP2mFrames.into(),
                    8 + 8 * frames.len() as u32,
                ),
            )));
        }
        let mut hdr = [0u8; 8];
        r.emit(&mut hdr).map_err(WriteError::Stream)?;
        let total = 8 + 8 * frames.len() as u64;
        if padded_len(u32::try_from(total).unwrap_or(u32::MAX)) > u64::from(REC_LENGTH_MAX) {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::RecordTooLong(total as u32),
            )));
        }
        let mut rh = [0u8; 8];
        record::RecordHeaderRepr {
            rtype: RecordType::X86PvP2mFrames.into(),
            length: total as u32,
        }
        .emit(&mut record::RecordHeader::new_unchecked(&mut rh[..]))
        .map_err(WriteError::Stream)?;
        self.sink.write_all(&rh).map_err(WriteError::Io)?;
        self.sink.write_all(&hdr).map_err(WriteError::Io)?;
        for f in frames {
            self.sink
                .write_all(&f.to_le_bytes())
                .map_err(WriteError::Io)?;
        }
        self.written += record_len(total as u32);
        self.p2m = true;
        Ok(())
    }

    /// PAGE_DATA: `pfns` (1 to [`super::MAX_BATCH_SIZE`]) and one
    /// [`PAGE_SIZE`] slice per pfn whose type carries data, in order.
    pub fn page_data(&mut self, pfns: &[PfnEntry], pages: &[&[u8]]) -> WResult<(), S> {
        self.need_content()?;
        if self.is_pv() && !self.p2m {
            return self.refuse(OrderRule::P2mBeforePages);
        }
        if self.vcpus {
            return self.refuse(OrderRule::PagesAfterVcpus);
        }
        let t: u32 = RecordType::PageData.into();
        if pfns.is_empty() {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::PageDataCountZero,
            )));
        }
        let data = pfns.iter().filter(|e| e.page_type.has_data()).count();
        let bad = pfns.len() > super::MAX_BATCH_SIZE
            || data != pages.len()
            || pages.iter().any(|p| p.len() != PAGE_SIZE);
        if let Some(e) = pfns.iter().find(|e| !e.page_type.is_known()) {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadPageType(e.page_type.nibble()),
            )));
        }
        let len = page_data::body_len(pfns.len() as u32, data as u32);
        let len = match len {
            Some(l) if !bad => l,
            _ => {
                return Err(WriteError::Stream(Error::new(
                    self.written,
                    ErrorKind::BadRecordLength(t, len.unwrap_or(u32::MAX)),
                )))
            }
        };
        let mut rh = [0u8; 16];
        record::RecordHeaderRepr {
            rtype: t,
            length: len,
        }
        .emit(&mut record::RecordHeader::new_unchecked(&mut rh[..8]))
        .map_err(WriteError::Stream)?;
        rh[8..12].copy_from_slice(&(pfns.len() as u32).to_le_bytes());
        self.sink.write_all(&rh).map_err(WriteError::Io)?;
        let mut chunk = [0u8; 256];
        for group in pfns.chunks(chunk.len() / 8) {
            for (i, e) in group.iter().enumerate() {
                chunk[8 * i..8 * i + 8].copy_from_slice(&e.to_word().to_le_bytes());
            }
            self.sink
                .write_all(&chunk[..8 * group.len()])
                .map_err(WriteError::Io)?;
        }
        for p in pages {
            self.sink.write_all(p).map_err(WriteError::Io)?;
        }
        self.written += record_len(len);
        self.pages = true;
        Ok(())
    }

    fn enter_tail(&mut self) {
        self.phase = Phase::Tail;
    }

    /// X86_TSC_INFO.
    pub fn tsc_info(&mut self, tsc: TscInfoRepr) -> WResult<(), S> {
        self.need_content()?;
        let mut b = [0u8; 24];
        tsc.emit(&mut b).map_err(WriteError::Stream)?;
        self.put(RecordType::X86TscInfo.into(), &[&b])?;
        self.enter_tail();
        Ok(())
    }

    /// SHARED_INFO (PV): exactly one page.
    pub fn shared_info(&mut self, page: &[u8]) -> WResult<(), S> {
        if !self.is_pv() {
            return self.wrong_guest(RecordType::SharedInfo);
        }
        self.need_content()?;
        if page.len() != PAGE_SIZE {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadRecordLength(RecordType::SharedInfo.into(), page.len() as u32),
            )));
        }
        self.put(RecordType::SharedInfo.into(), &[page])?;
        self.enter_tail();
        Ok(())
    }

    /// One of the four vCPU records (PV), after the guest's pages. An empty
    /// context is elided, as Xen's saver does. `kind` must be one of
    /// `X86PvVcpu{Basic,Extended,Xsave,Msrs}`.
    pub fn vcpu(&mut self, kind: RecordType, vcpu_id: u32, context: &[u8]) -> WResult<(), S> {
        if !kind.is_vcpu() {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadRecordLength(kind.into(), context.len() as u32),
            )));
        }
        if !self.is_pv() {
            return self.wrong_guest(kind);
        }
        self.need_content()?;
        if !self.pages {
            return self.refuse(OrderRule::PagesBeforeVcpus);
        }
        if context.is_empty() {
            return Ok(());
        }
        let ok = match kind {
            RecordType::X86PvVcpuExtended => context.len() <= super::x86_pv::VCPU_EXTENDED_MAX,
            RecordType::X86PvVcpuXsave => context.len() >= super::x86_pv::VCPU_XSAVE_MIN,
            RecordType::X86PvVcpuMsrs => context.len() % super::x86_pv::VCPU_MSR_ENTRY_LEN == 0,
            _ => true,
        };
        if !ok {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadRecordLength(kind.into(), 8 + context.len() as u32),
            )));
        }
        let mut h = [0u8; 8];
        VcpuHeaderRepr { vcpu_id }
            .emit(&mut h)
            .map_err(WriteError::Stream)?;
        self.put(kind.into(), &[&h, context])?;
        self.vcpus = true;
        self.enter_tail();
        Ok(())
    }

    /// HVM_PARAMS (HVM).
    pub fn hvm_params(&mut self, params: &[HvmParam]) -> WResult<(), S> {
        if self.is_pv() {
            return self.wrong_guest(RecordType::HvmParams);
        }
        self.need_content()?;
        let count = params.len() as u32;
        let len = HvmParamsRepr { count }.body_len();
        let len = u32::try_from(len)
            .ok()
            .filter(|l| padded_len(*l) <= u64::from(REC_LENGTH_MAX))
            .ok_or(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::RecordTooLong(u32::MAX),
            )))?;
        let mut rh = [0u8; 16];
        record::RecordHeaderRepr {
            rtype: RecordType::HvmParams.into(),
            length: len,
        }
        .emit(&mut record::RecordHeader::new_unchecked(&mut rh[..8]))
        .map_err(WriteError::Stream)?;
        HvmParamsRepr { count }
            .emit(&mut rh[8..])
            .map_err(WriteError::Stream)?;
        self.sink.write_all(&rh).map_err(WriteError::Io)?;
        for p in params {
            let mut e = [0u8; HVM_PARAM_LEN];
            p.emit(&mut e).map_err(WriteError::Stream)?;
            self.sink.write_all(&e).map_err(WriteError::Io)?;
        }
        self.written += record_len(len);
        self.hvm_params = true;
        self.enter_tail();
        Ok(())
    }

    /// HVM_CONTEXT (HVM), after HVM_PARAMS.
    pub fn hvm_context(&mut self, context: &[u8]) -> WResult<(), S> {
        if self.is_pv() {
            return self.wrong_guest(RecordType::HvmContext);
        }
        self.need_content()?;
        if !self.hvm_params {
            return self.refuse(OrderRule::HvmParamsBeforeContext);
        }
        if context.is_empty() {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::BadRecordLength(RecordType::HvmContext.into(), 0),
            )));
        }
        self.put(RecordType::HvmContext.into(), &[context])?;
        self.enter_tail();
        Ok(())
    }

    /// VERIFY: the pages that follow are for checking.
    pub fn verify(&mut self) -> WResult<(), S> {
        self.need_content()?;
        if self.vcpus {
            return self.refuse(OrderRule::PagesAfterVcpus);
        }
        self.put(RecordType::Verify.into(), &[])
    }

    /// CHECKPOINT: the records so far are consistent; pages may follow again.
    /// In libxl framing this hands the stream to libxl, as libxc does, and
    /// libxl's CHECKPOINT_END hands it back; both are written here.
    pub fn checkpoint(&mut self) -> WResult<(), S> {
        self.need_content()?;
        self.put(RecordType::Checkpoint.into(), &[])?;
        if self.framing != Framing::Libxc {
            self.put(libxl::RecordType::CheckpointEnd.into(), &[])?;
        }
        self.vcpus = false;
        self.phase = Phase::Memory;
        Ok(())
    }

    /// CHECKPOINT_DIRTY_PFN_LIST (the COLO back channel).
    pub fn checkpoint_dirty_pfn_list(&mut self, pfns: &[u64]) -> WResult<(), S> {
        self.need_libxc()?;
        let len = u32::try_from(pfns.len() * 8)
            .ok()
            .filter(|l| padded_len(*l) <= u64::from(REC_LENGTH_MAX))
            .ok_or(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::RecordTooLong(u32::MAX),
            )))?;
        let mut rh = [0u8; 8];
        record::RecordHeaderRepr {
            rtype: RecordType::CheckpointDirtyPfnList.into(),
            length: len,
        }
        .emit(&mut record::RecordHeader::new_unchecked(&mut rh[..]))
        .map_err(WriteError::Stream)?;
        self.sink.write_all(&rh).map_err(WriteError::Io)?;
        for p in pfns {
            self.sink
                .write_all(&p.to_le_bytes())
                .map_err(WriteError::Io)?;
        }
        self.written += record_len(len);
        Ok(())
    }

    /// TOOLSTACK (deprecated by the spec; strict readers refuse it).
    pub fn toolstack(&mut self, data: &[u8]) -> WResult<(), S> {
        self.need_libxc()?;
        self.put(RecordType::Toolstack.into(), &[data])
    }

    /// Any optional record (bit 31 set): readers that do not know it skip it.
    pub fn optional(&mut self, rtype: u32, body: &[u8]) -> WResult<(), S> {
        self.need_libxc()?;
        if rtype & record::OPTIONAL == 0 {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::UnknownMandatoryRecord(rtype),
            )));
        }
        self.put(rtype, &[body])
    }

    /// The libxc END. For a bare libxc stream this completes it.
    pub fn end(&mut self) -> WResult<(), S> {
        self.need_content()?;
        self.put(RecordType::End.into(), &[])?;
        self.phase = if self.framing == Framing::Libxc {
            Phase::Finished
        } else {
            Phase::LibxcEnded
        };
        Ok(())
    }

    fn need_libxl(&self) -> WResult<(), S> {
        if self.framing == Framing::Libxc {
            return Err(WriteError::Stream(Error::new(
                self.written,
                ErrorKind::WrongGuestType(0),
            )));
        }
        if self.phase != Phase::LibxcEnded {
            return self.refuse(OrderRule::LibxcContextMissing);
        }
        Ok(())
    }

    /// libxl EMULATOR_XENSTORE_DATA: `data` is NUL-terminated key/value
    /// strings, keys relative to the device model's xenstore directory.
    pub fn emulator_xenstore_data(
        &mut self,
        emu: EmulatorHeaderRepr,
        data: &[u8],
    ) -> WResult<(), S> {
        self.need_libxl()?;
        libxl::check_xenstore_data(data)
            .map_err(|e| WriteError::Stream(e.shifted(self.written)))?;
        let mut h = [0u8; 8];
        emu.emit(&mut h).map_err(WriteError::Stream)?;
        self.put(libxl::RecordType::EmulatorXenstoreData.into(), &[&h, data])
    }

    /// libxl EMULATOR_CONTEXT: the device model's saved state.
    pub fn emulator_context(&mut self, emu: EmulatorHeaderRepr, blob: &[u8]) -> WResult<(), S> {
        self.need_libxl()?;
        let mut h = [0u8; 8];
        emu.emit(&mut h).map_err(WriteError::Stream)?;
        self.put(libxl::RecordType::EmulatorContext.into(), &[&h, blob])
    }

    /// Completes the stream (libxl END when framed) and returns the sink.
    pub fn finish(mut self) -> WResult<S, S> {
        match (self.framing, self.phase) {
            (Framing::Libxc, Phase::Finished) => Ok(self.sink),
            (Framing::Libxc, _) => self.refuse(OrderRule::LibxcContextMissing),
            (_, Phase::LibxcEnded) => {
                self.put(libxl::RecordType::End.into(), &[])?;
                self.phase = Phase::Finished;
                Ok(self.sink)
            }
            _ => self.refuse(OrderRule::LibxcContextMissing),
        }
    }
}

#[cfg(test)]
mod test;
