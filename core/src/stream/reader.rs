//! A push decoder for whole streams: xl save files, bare libxl streams and
//! bare libxc streams, with bounded memory.
//!
//! The [`Decoder`] holds no more than 48 octets of its own; it never buffers
//! a record. Fixed-size parts (headers, pfn words, HVM params) are gathered
//! into that small accumulator; variable parts (page contents, blobs,
//! the xl config) are handed out as slices of the caller's input, in as
//! many pieces as the caller's reads produced. A 4 GiB image is inspected
//! with whatever buffer the caller reads into.
//!
//! # Call contract
//!
//! Call [`Decoder::push`] with the bytes not yet consumed. It consumes a
//! prefix and returns at most one [`Event`]. When it returns no event it
//! has consumed everything: read more and push again. At end of input
//! call [`Decoder::finish`], which fails with `Truncated` (at the offset
//! where the data ran out) unless the final END was read. After an error
//! the decoder stays failed and returns the same error.
//!
//! ```
//! use relocd_core::stream::reader::{Decoder, Event, Options};
//! # fn run(mut input: &[u8]) -> Result<(), relocd_core::stream::Error> {
//! let mut d = Decoder::new(Options::default());
//! while !input.is_empty() {
//!     let step = d.push(input)?;
//!     input = &input[step.consumed..];
//!     if let Some(Event::Record(r)) = step.event {
//!         let _ = (r.name(), r.length);
//!     }
//! }
//! d.finish()
//! # }
//! ```
//!
//! # Checks
//!
//! What Xen's restorer checks (record lengths per type, PAGE_DATA count and
//! exact length, page types, REC_LENGTH_MAX, unknown mandatory records,
//! X86_PV_INFO combinations, p2m frame counts, one STATIC_DATA_END), the
//! spec's order rules (see [`OrderRule`]), and with [`Options::strict`]
//! checks in the spirit of Xen's `verify-stream-v2` (reserved fields and
//! padding zero, the spec's HVM_PARAMS before HVM_CONTEXT, which the 4.17
//! verifier does not itself enforce, no TOOLSTACK or dirty-pfn records, no
//! unknown records even optional ones, known emulator ids, well-formed
//! xenstore data, exact X86_PV_INFO length).
//!
//! Errors carry the absolute offset of the offending structure or field:
//! the record header for length and order errors (the length field, at
//! `+4`, for length errors), the word for a bad pfn, the byte for bad
//! padding, the end of input for truncation.

use super::domain::{self, DomainHeader, DomainHeaderRepr, DomainType};
use super::image::{self, ImageHeader, ImageHeaderRepr};
use super::libxl::{self, EmulatorHeaderRepr, EmulatorId};
use super::page_data::{self, PfnEntry};
use super::record::{self, RecordType, OPTIONAL};
use super::x86::{self, HvmParam, HvmParamsRepr, TscInfoRepr};
use super::x86_pv::{self, P2mFramesRepr, PvInfoRepr, VcpuHeaderRepr};
use super::xlfile;
use super::{padding_len, Error, ErrorKind, OrderRule, Result, PAGE_SIZE, REC_LENGTH_MAX};

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Also apply `verify-stream-v2`'s checks (see the module doc). Off:
    /// accept what Xen's own restorer accepts, plus the spec's order rules.
    pub strict: bool,
}

impl Options {
    /// The strict settings.
    pub const STRICT: Options = Options { strict: true };
}

/// Which layer a stream starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// An `xl save` file: xl header, then libxl.
    Xl,
    /// A libxl v2 stream (what `xl migrate` sends).
    Libxl,
    /// A bare libxc stream.
    Libxc,
}

/// The layer a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// libxl framing records.
    Libxl,
    /// libxc records.
    Libxc,
}

/// A record header as read, with where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Which layer's record.
    pub layer: Layer,
    /// Raw type code.
    pub rtype: u32,
    /// Body length (without padding).
    pub length: u32,
    /// Absolute offset of the record header.
    pub offset: u64,
    /// An unknown optional record: its body is skipped without events.
    pub skipped: bool,
}

impl RecordInfo {
    /// The spec's name of the type ("Reserved" when unknown).
    pub fn name(&self) -> &'static str {
        match self.layer {
            Layer::Libxc => RecordType::from(self.rtype).name(),
            Layer::Libxl => libxl::RecordType::from(self.rtype).name(),
        }
    }
    /// The libxc type, for libxc records.
    pub fn libxc_type(&self) -> Option<RecordType> {
        (self.layer == Layer::Libxc).then(|| RecordType::from(self.rtype))
    }
    /// Octets the record occupies in the stream, header and padding included.
    pub fn total_len(&self) -> u64 {
        record::HEADER_LEN as u64 + super::padded_len(self.length)
    }
}

/// What a PAGE_DATA record's pfn array holds; reported before its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageDataSummary {
    /// Number of pfns.
    pub count: u32,
    /// How many carry page contents.
    pub data_pages: u32,
    /// Lowest pfn.
    pub min_pfn: u64,
    /// Highest pfn.
    pub max_pfn: u64,
    /// Pfns per type nibble (`XEN_DOMCTL_PFINFO_*` >> 28).
    pub type_counts: [u32; 16],
}

/// One thing the decoder found. Slices borrow the caller's input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The first octets told which layer the stream starts with.
    Detected(StreamKind),
    /// The xl save-file header.
    XlHeader(xlfile::HeaderRepr),
    /// The xl config length (first four octets of the optional data).
    XlConfigLength(u32),
    /// A piece of the xl config; `offset` within the config.
    XlConfig {
        /// Offset of `data` within the config.
        offset: u32,
        /// The octets.
        data: &'a [u8],
    },
    /// The libxl header.
    LibxlHeader(libxl::HeaderRepr),
    /// The libxc image header.
    ImageHeader(ImageHeaderRepr),
    /// The libxc domain header.
    DomainHeader(DomainHeaderRepr),
    /// A v2 stream reached the point where STATIC_DATA_END is inferred
    /// (the first X86_PV_P2M_FRAMES or PAGE_DATA); comes before that
    /// record's [`Event::Record`].
    StaticDataEndInferred,
    /// A record header (either layer).
    Record(RecordInfo),
    /// X86_PV_INFO.
    PvInfo(PvInfoRepr),
    /// Fixed part of X86_PV_P2M_FRAMES.
    P2mFrames(P2mFramesRepr),
    /// One p2m frame pfn.
    P2mFrame {
        /// Position in the record's array.
        index: u32,
        /// The frame's pfn.
        pfn: u64,
    },
    /// Header of a vCPU record; the context follows as [`Event::Body`].
    Vcpu(VcpuHeaderRepr),
    /// X86_TSC_INFO.
    TscInfo(TscInfoRepr),
    /// Fixed part of HVM_PARAMS.
    HvmParams(HvmParamsRepr),
    /// One HVM parameter.
    HvmParam(HvmParam),
    /// PAGE_DATA count.
    PageDataHeader {
        /// Number of pfns.
        count: u32,
    },
    /// One pfn word of PAGE_DATA.
    Pfn {
        /// Position in the pfn array.
        index: u32,
        /// The pfn and its type.
        entry: PfnEntry,
    },
    /// All pfns read and the record length checked; page contents follow.
    PfnsDone(PageDataSummary),
    /// A piece of page contents.
    PageData {
        /// Ordinal among the record's data-carrying pfns.
        page: u32,
        /// Offset within the page.
        offset: u32,
        /// The octets.
        data: &'a [u8],
    },
    /// One pfn of CHECKPOINT_DIRTY_PFN_LIST.
    DirtyPfn(u64),
    /// Emulator sub-header of a libxl emulator record.
    Emulator(EmulatorHeaderRepr),
    /// CHECKPOINT_STATE control id.
    CheckpointState(libxl::CheckpointState),
    /// A piece of an opaque body (vCPU context, shared info, HVM context,
    /// CPU policies, toolstack, emulator data); `offset` within the body.
    Body {
        /// Offset of `data` within the record body.
        offset: u32,
        /// The octets.
        data: &'a [u8],
    },
    /// The record (and its padding) was read.
    RecordEnd(RecordInfo),
    /// The outermost END: the stream is complete.
    End,
}

/// What one [`Decoder::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Step<'a> {
    /// Octets of the input consumed.
    pub consumed: usize,
    /// The event found, if any. `None` means all input was consumed.
    pub event: Option<Event<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixed {
    PageDataHeader,
    Pfn,
    PvInfo,
    P2mHeader,
    P2mFrame,
    Vcpu,
    Tsc,
    HvmParamsHeader,
    HvmParam,
    DirtyPfn,
    Emulator,
    CheckpointState,
}

impl Fixed {
    const fn len(self) -> usize {
        match self {
            Fixed::PageDataHeader => page_data::HEADER_LEN,
            Fixed::Pfn | Fixed::P2mFrame | Fixed::DirtyPfn => 8,
            Fixed::PvInfo => x86_pv::PV_INFO_LEN,
            Fixed::P2mHeader => x86_pv::P2M_HEADER_LEN,
            Fixed::Vcpu => x86_pv::VCPU_HEADER_LEN,
            Fixed::Tsc => x86::TSC_INFO_LEN,
            Fixed::HvmParamsHeader => x86::HVM_PARAMS_HEADER_LEN,
            Fixed::HvmParam => x86::HVM_PARAM_LEN,
            Fixed::Emulator => libxl::EMULATOR_HEADER_LEN,
            Fixed::CheckpointState => libxl::CHECKPOINT_STATE_LEN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Detect,
    XlHeader,
    XlConfigLen,
    XlConfig,
    XlTail,
    LibxlHeader,
    ImageHeader,
    DomainHeader,
    RecHeader(Layer),
    /// A fixed part of the current body.
    Fixed(Fixed),
    /// PfnsDone is due.
    PfnsDone,
    /// Page contents of the current PAGE_DATA.
    Pages,
    /// The rest of the body as Body events.
    Blob,
    /// The rest of the body, silently.
    Skip,
    /// Padding of the current record.
    Padding,
    /// RecordEnd is due.
    RecordEnd,
    Done,
    Failed(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Libxc {
    NotStarted,
    Open,
    AtCheckpoint,
    Ended,
}

/// Per-record progress.
#[derive(Debug, Clone, Copy)]
struct Cur {
    info: RecordInfo,
    /// Body octets consumed.
    body_pos: u32,
    /// Items left in the current item array.
    items_left: u32,
    /// Index of the next item.
    item_index: u32,
    /// PAGE_DATA summary.
    summary: PageDataSummary,
    /// Padding octets left.
    pad_left: u8,
    /// xenstore data: NULs seen, last octet.
    nuls: u32,
    last: u8,
}

const EMPTY_SUMMARY: PageDataSummary = PageDataSummary {
    count: 0,
    data_pages: 0,
    min_pfn: u64::MAX,
    max_pfn: 0,
    type_counts: [0; 16],
};

/// Stream-wide facts the order rules need.
#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u32,
    guest: DomainType,
    pv_width: u8,
    pv_info: bool,
    p2m: bool,
    static_data_end: bool,
    page_data: bool,
    vcpu_in_checkpoint: bool,
    hvm_params: bool,
}

const SEEN0: Seen = Seen {
    version: 0,
    guest: DomainType::Unknown(0),
    pv_width: 0,
    pv_info: false,
    p2m: false,
    static_data_end: false,
    page_data: false,
    vcpu_in_checkpoint: false,
    hvm_params: false,
};

/// The push decoder. See the module doc for the call contract.
#[derive(Debug, Clone)]
pub struct Decoder {
    opts: Options,
    st: St,
    offset: u64,
    acc: [u8; xlfile::HEADER_LEN],
    acc_len: usize,
    kind: Option<StreamKind>,
    xl_opt_left: u32,
    xl_cfg_left: u32,
    xl_cfg_pos: u32,
    libxc: Libxc,
    seen: Seen,
    cur: Cur,
    pending: Option<Event<'static>>,
}

enum Progress<'a> {
    /// Consumed n octets and found an event.
    Event(usize, Event<'a>),
    /// Consumed n octets; call again (state changed).
    Continue(usize),
    /// Consumed all input; need more.
    NeedInput(usize),
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub const fn new(opts: Options) -> Self {
        Decoder {
            opts,
            st: St::Detect,
            offset: 0,
            acc: [0; xlfile::HEADER_LEN],
            acc_len: 0,
            kind: None,
            xl_opt_left: 0,
            xl_cfg_left: 0,
            xl_cfg_pos: 0,
            libxc: Libxc::NotStarted,
            seen: SEEN0,
            cur: Cur {
                info: RecordInfo {
                    layer: Layer::Libxc,
                    rtype: 0,
                    length: 0,
                    offset: 0,
                    skipped: false,
                },
                body_pos: 0,
                items_left: 0,
                item_index: 0,
                summary: EMPTY_SUMMARY,
                pad_left: 0,
                nuls: 0,
                last: 0,
            },
            pending: None,
        }
    }

    /// Octets consumed so far: the absolute offset of the next input octet.
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// What the stream started with, once known.
    pub const fn kind(&self) -> Option<StreamKind> {
        self.kind
    }

    /// The final END was read.
    pub fn is_done(&self) -> bool {
        self.st == St::Done && self.pending.is_none()
    }

    /// The record being read, if inside one.
    pub fn current_record(&self) -> Option<RecordInfo> {
        match self.st {
            St::Fixed(_)
            | St::PfnsDone
            | St::Pages
            | St::Blob
            | St::Skip
            | St::Padding
            | St::RecordEnd => Some(self.cur.info),
            _ => None,
        }
    }

    /// Octets of page contents the current `PAGE_DATA` record has yet to
    /// deliver, when the decoder stands in its page area with no event
    /// held back (`None` elsewhere).
    pub fn page_data_left(&self) -> Option<usize> {
        match self.st {
            St::Pages if self.pending.is_none() => Some(self.body_left() as usize),
            _ => None,
        }
    }

    /// Consumes the rest of the current page area, `n` octets
    /// ([`page_data_left`](Self::page_data_left)), without reading it: for
    /// a host that applied those pages itself (a chunk whose zero pages
    /// travelled as markers). The decoder goes on as if the octets had been
    /// pushed and their events handled. `false`, and nothing changes,
    /// outside a page area or for any other count.
    pub fn skip_page_data(&mut self, n: usize) -> bool {
        if self.page_data_left() != Some(n) {
            return false;
        }
        // n == body_left, a u32.
        self.cur.body_pos += n as u32;
        self.offset += n as u64;
        true
    }

    /// Call at end of input: fails unless the stream is complete.
    pub fn finish(&self) -> Result<()> {
        match self.st {
            St::Failed(e) => Err(e),
            _ if self.is_done() => Ok(()),
            _ => Err(Error::new(self.offset, ErrorKind::Truncated)),
        }
    }

    /// Consumes a prefix of `input` and returns at most one event.
    pub fn push<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>> {
        if let St::Failed(e) = self.st {
            return Err(e);
        }
        if let Some(ev) = self.pending.take() {
            return Ok(Step {
                consumed: 0,
                event: Some(ev),
            });
        }
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            match self.step(rest) {
                Ok(Progress::Event(n, ev)) => {
                    pos += n;
                    self.offset += n as u64;
                    return Ok(Step {
                        consumed: pos,
                        event: Some(ev),
                    });
                }
                Ok(Progress::Continue(n)) => {
                    pos += n;
                    self.offset += n as u64;
                }
                Ok(Progress::NeedInput(n)) => {
                    pos += n;
                    self.offset += n as u64;
                    return Ok(Step {
                        consumed: pos,
                        event: None,
                    });
                }
                Err(e) => {
                    self.st = St::Failed(e);
                    return Err(e);
                }
            }
        }
    }

    fn err(&self, at: u64, kind: ErrorKind) -> Error {
        Error::new(at, kind)
    }

    /// Gathers `want` octets into the accumulator. Returns the octets taken
    /// and whether the accumulator is complete.
    fn fill(&mut self, input: &[u8], want: usize) -> (usize, bool) {
        let have = self.acc_len.min(want);
        let take = (want - have).min(input.len());
        self.acc[have..have + take].copy_from_slice(&input[..take]);
        self.acc_len = have + take;
        (take, self.acc_len == want)
    }

    /// Starts the next fixed part or phase of the current body.
    fn body_left(&self) -> u32 {
        self.cur.info.length - self.cur.body_pos
    }

    fn step<'a>(&mut self, input: &'a [u8]) -> Result<Progress<'a>> {
        match self.st {
            St::Failed(e) => Err(e),
            St::Done => {
                if input.is_empty() {
                    Ok(Progress::NeedInput(0))
                } else {
                    Err(self.err(self.offset, ErrorKind::TrailingData))
                }
            }
            St::Detect => {
                let (n, full) = self.fill(input, 8);
                if !full {
                    return Ok(Progress::NeedInput(n));
                }
                let kind = if self.acc[..8] == xlfile::MAGIC[..8] {
                    self.st = St::XlHeader;
                    StreamKind::Xl
                } else if self.acc[..8] == libxl::IDENT.to_be_bytes() {
                    self.st = St::LibxlHeader;
                    StreamKind::Libxl
                } else if self.acc[..8] == image::MARKER.to_be_bytes() {
                    self.st = St::ImageHeader;
                    StreamKind::Libxc
                } else {
                    return Err(self.err(0, ErrorKind::UnknownFormat));
                };
                self.kind = Some(kind);
                Ok(Progress::Event(n, Event::Detected(kind)))
            }
            St::XlHeader => self.fixed_header(input, xlfile::HEADER_LEN, |d, start| {
                let h = xlfile::Header::new_unchecked(&d.acc[..xlfile::HEADER_LEN]);
                let r = xlfile::HeaderRepr::parse(&h).map_err(|e| e.shifted(start))?;
                if !r.stream_v2() {
                    return Err(Error::new(
                        start + xlfile::field::MANDATORY.start as u64,
                        ErrorKind::LegacyStream,
                    ));
                }
                d.xl_opt_left = r.optional_data_len;
                d.st = if r.optional_data_len == 0 {
                    St::LibxlHeader
                } else {
                    St::XlConfigLen
                };
                Ok(Event::XlHeader(r))
            }),
            St::XlConfigLen => {
                if self.xl_opt_left < 4 {
                    return Err(self.err(self.offset, ErrorKind::XlConfigTruncated));
                }
                let (n, full) = self.fill(input, 4);
                if !full {
                    return Ok(Progress::NeedInput(n));
                }
                self.acc_len = 0;
                let len = u32::from_le_bytes([self.acc[0], self.acc[1], self.acc[2], self.acc[3]]);
                self.xl_opt_left -= 4;
                if len > self.xl_opt_left {
                    return Err(self.err(self.offset + n as u64 - 4, ErrorKind::XlConfigTruncated));
                }
                self.xl_cfg_left = len;
                self.xl_cfg_pos = 0;
                self.xl_opt_left -= len;
                self.st = St::XlConfig;
                Ok(Progress::Event(n, Event::XlConfigLength(len)))
            }
            St::XlConfig => {
                if self.xl_cfg_left == 0 {
                    self.st = St::XlTail;
                    return Ok(Progress::Continue(0));
                }
                if input.is_empty() {
                    return Ok(Progress::NeedInput(0));
                }
                let n = input.len().min(self.xl_cfg_left as usize);
                let ev = Event::XlConfig {
                    offset: self.xl_cfg_pos,
                    data: &input[..n],
                };
                self.xl_cfg_left -= n as u32;
                self.xl_cfg_pos += n as u32;
                Ok(Progress::Event(n, ev))
            }
            St::XlTail => {
                if self.xl_opt_left == 0 {
                    self.st = St::LibxlHeader;
                    return Ok(Progress::Continue(0));
                }
                if input.is_empty() {
                    return Ok(Progress::NeedInput(0));
                }
                let n = input.len().min(self.xl_opt_left as usize);
                self.xl_opt_left -= n as u32;
                Ok(Progress::Continue(n))
            }
            St::LibxlHeader => self.fixed_header(input, libxl::HEADER_LEN, |d, start| {
                let h = libxl::Header::new_unchecked(&d.acc[..libxl::HEADER_LEN]);
                let r = libxl::HeaderRepr::parse(&h).map_err(|e| e.shifted(start))?;
                let opt_at = start + libxl::field::OPTIONS.start as u64;
                if r.big_endian {
                    return Err(Error::new(opt_at, ErrorKind::BigEndian));
                }
                if d.opts.strict && h.options() & libxl::OPT_RESERVED != 0 {
                    return Err(Error::new(opt_at, ErrorKind::ReservedNotZero));
                }
                d.st = St::RecHeader(Layer::Libxl);
                Ok(Event::LibxlHeader(r))
            }),
            St::ImageHeader => self.fixed_header(input, image::HEADER_LEN, |d, start| {
                let h = ImageHeader::new_unchecked(&d.acc[..image::HEADER_LEN]);
                let r = ImageHeaderRepr::parse(&h).map_err(|e| e.shifted(start))?;
                let opt_at = start + image::field::OPTIONS.start as u64;
                if r.big_endian {
                    return Err(Error::new(opt_at, ErrorKind::BigEndian));
                }
                if d.opts.strict && (h.options() & image::OPT_RESERVED != 0 || h.reserved() != 0) {
                    return Err(Error::new(opt_at, ErrorKind::ReservedNotZero));
                }
                d.seen = SEEN0;
                d.seen.version = r.version;
                d.st = St::DomainHeader;
                Ok(Event::ImageHeader(r))
            }),
            St::DomainHeader => self.fixed_header(input, domain::HEADER_LEN, |d, start| {
                let h = DomainHeader::new_unchecked(&d.acc[..domain::HEADER_LEN]);
                let r = DomainHeaderRepr::parse(&h).map_err(|e| e.shifted(start))?;
                if let DomainType::Unknown(t) = r.domain_type {
                    return Err(Error::new(start, ErrorKind::UnsupportedDomainType(t)));
                }
                if r.page_shift != 12 {
                    return Err(Error::new(
                        start + domain::field::PAGE_SHIFT.start as u64,
                        ErrorKind::UnsupportedPageShift(r.page_shift),
                    ));
                }
                if d.opts.strict && h.reserved() != 0 {
                    return Err(Error::new(
                        start + domain::field::RES1.start as u64,
                        ErrorKind::ReservedNotZero,
                    ));
                }
                d.seen.guest = r.domain_type;
                d.st = St::RecHeader(Layer::Libxc);
                Ok(Event::DomainHeader(r))
            }),
            St::RecHeader(layer) => {
                let (n, full) = self.fill(input, record::HEADER_LEN);
                if !full {
                    return Ok(Progress::NeedInput(n));
                }
                self.acc_len = 0;
                let start = self.offset + n as u64 - record::HEADER_LEN as u64;
                let rtype =
                    u32::from_le_bytes([self.acc[0], self.acc[1], self.acc[2], self.acc[3]]);
                let length =
                    u32::from_le_bytes([self.acc[4], self.acc[5], self.acc[6], self.acc[7]]);
                let info = RecordInfo {
                    layer,
                    rtype,
                    length,
                    offset: start,
                    skipped: false,
                };
                let ev = match layer {
                    Layer::Libxc => self.libxc_record(info)?,
                    Layer::Libxl => self.libxl_record(info)?,
                };
                Ok(Progress::Event(n, ev))
            }
            St::Fixed(f) => {
                let want = f.len();
                let (n, full) = self.fill(input, want);
                if !full {
                    return Ok(Progress::NeedInput(n));
                }
                self.acc_len = 0;
                let at = self.offset + n as u64 - want as u64;
                self.cur.body_pos += want as u32;
                let ev = self.fixed_done(f, at)?;
                Ok(Progress::Event(n, ev))
            }
            St::PfnsDone => {
                let s = self.cur.summary;
                let want = page_data::body_len(s.count, s.data_pages);
                if want != Some(self.cur.info.length) {
                    return Err(self.err(
                        self.cur.info.offset + 4,
                        ErrorKind::BadRecordLength(self.cur.info.rtype, self.cur.info.length),
                    ));
                }
                self.cur.item_index = 0;
                self.st = St::Pages;
                Ok(Progress::Event(0, Event::PfnsDone(s)))
            }
            St::Pages => {
                if self.body_left() == 0 {
                    self.end_body();
                    return Ok(Progress::Continue(0));
                }
                if input.is_empty() {
                    return Ok(Progress::NeedInput(0));
                }
                let in_page = (self.cur.body_pos as usize - self.pages_start()) % PAGE_SIZE;
                let n = input.len().min(PAGE_SIZE - in_page);
                let page = ((self.cur.body_pos as usize - self.pages_start()) / PAGE_SIZE) as u32;
                self.cur.body_pos += n as u32;
                Ok(Progress::Event(
                    n,
                    Event::PageData {
                        page,
                        offset: in_page as u32,
                        data: &input[..n],
                    },
                ))
            }
            St::Blob => {
                if self.body_left() == 0 {
                    if self.opts.strict
                        && self.cur.info.layer == Layer::Libxl
                        && self.cur.info.rtype == u32::from(libxl::RecordType::EmulatorXenstoreData)
                        && self.cur.info.length as usize > libxl::EMULATOR_HEADER_LEN
                        && (self.cur.last != 0 || self.cur.nuls % 2 != 0)
                    {
                        return Err(self.err(self.offset, ErrorKind::BadXenstoreData));
                    }
                    self.end_body();
                    return Ok(Progress::Continue(0));
                }
                if input.is_empty() {
                    return Ok(Progress::NeedInput(0));
                }
                let n = input.len().min(self.body_left() as usize);
                let data = &input[..n];
                self.cur.nuls = self
                    .cur
                    .nuls
                    .wrapping_add(data.iter().filter(|&&b| b == 0).count() as u32);
                self.cur.last = data[n - 1];
                let offset = self.cur.body_pos;
                self.cur.body_pos += n as u32;
                Ok(Progress::Event(n, Event::Body { offset, data }))
            }
            St::Skip => {
                if self.body_left() == 0 {
                    self.end_body();
                    return Ok(Progress::Continue(0));
                }
                if input.is_empty() {
                    return Ok(Progress::NeedInput(0));
                }
                let n = input.len().min(self.body_left() as usize);
                self.cur.body_pos += n as u32;
                Ok(Progress::Continue(n))
            }
            St::Padding => {
                if self.cur.pad_left == 0 {
                    self.st = St::RecordEnd;
                    return Ok(Progress::Continue(0));
                }
                if input.is_empty() {
                    return Ok(Progress::NeedInput(0));
                }
                let n = input.len().min(self.cur.pad_left as usize);
                if self.opts.strict {
                    if let Some(i) = input[..n].iter().position(|&b| b != 0) {
                        return Err(self.err(self.offset + i as u64, ErrorKind::PaddingNotZero));
                    }
                }
                self.cur.pad_left -= n as u8;
                Ok(Progress::Continue(n))
            }
            St::RecordEnd => {
                let info = self.cur.info;
                self.after_record(info);
                Ok(Progress::Event(0, Event::RecordEnd(info)))
            }
        }
    }

    /// Body offset where PAGE_DATA contents start.
    fn pages_start(&self) -> usize {
        page_data::HEADER_LEN + 8 * self.cur.summary.count as usize
    }

    fn fixed_header<'a>(
        &mut self,
        input: &'a [u8],
        want: usize,
        done: impl FnOnce(&mut Self, u64) -> Result<Event<'static>>,
    ) -> Result<Progress<'a>> {
        let (n, full) = self.fill(input, want);
        if !full {
            return Ok(Progress::NeedInput(n));
        }
        let start = self.offset + n as u64 - want as u64;
        let ev = done(self, start)?;
        self.acc_len = 0;
        Ok(Progress::Event(n, ev))
    }

    /// Body is read: padding next.
    fn end_body(&mut self) {
        self.cur.pad_left = padding_len(self.cur.info.length) as u8;
        self.st = St::Padding;
    }

    /// Sets up the body phases of a new record, or goes straight to padding.
    fn start_body(&mut self, info: RecordInfo, first: Option<St>) {
        self.cur.info = info;
        self.cur.body_pos = 0;
        self.cur.items_left = 0;
        self.cur.item_index = 0;
        self.cur.summary = EMPTY_SUMMARY;
        self.cur.nuls = 0;
        self.cur.last = 0;
        match first {
            Some(st) => self.st = st,
            None => self.end_body(),
        }
    }

    fn after_record(&mut self, info: RecordInfo) {
        self.st = match (info.layer, info.rtype) {
            (Layer::Libxc, 0) => {
                if self.kind == Some(StreamKind::Libxc) {
                    self.pending = Some(Event::End);
                    St::Done
                } else {
                    self.libxc = Libxc::Ended;
                    St::RecHeader(Layer::Libxl)
                }
            }
            (Layer::Libxc, 0x0e) if self.kind != Some(StreamKind::Libxc) => {
                self.libxc = Libxc::AtCheckpoint;
                St::RecHeader(Layer::Libxl)
            }
            (Layer::Libxc, _) => St::RecHeader(Layer::Libxc),
            (Layer::Libxl, 0) => {
                self.pending = Some(Event::End);
                St::Done
            }
            (Layer::Libxl, 1) => {
                self.libxc = Libxc::Open;
                St::ImageHeader
            }
            (Layer::Libxl, 4) => {
                self.libxc = Libxc::Open;
                St::RecHeader(Layer::Libxc)
            }
            (Layer::Libxl, _) => St::RecHeader(Layer::Libxl),
        };
    }

    fn bad_len(&self, info: RecordInfo) -> Error {
        Error::new(
            info.offset + 4,
            ErrorKind::BadRecordLength(info.rtype, info.length),
        )
    }

    /// Validates a libxc record header and sets up its body.
    fn libxc_record(&mut self, mut info: RecordInfo) -> Result<Event<'static>> {
        use RecordType as T;
        let at = info.offset;
        if info.length > REC_LENGTH_MAX {
            return Err(Error::new(at + 4, ErrorKind::RecordTooLong(info.length)));
        }
        let t = T::from(info.rtype);
        if let T::Unknown(code) = t {
            if code & OPTIONAL == 0 {
                return Err(Error::new(at, ErrorKind::UnknownMandatoryRecord(code)));
            }
            if self.opts.strict {
                return Err(Error::new(at, ErrorKind::UnknownOptionalRecord(code)));
            }
            info.skipped = true;
            self.start_body(info, Some(St::Skip));
            return Ok(Event::Record(info));
        }
        let len = info.length as usize;
        let strict = self.opts.strict;
        let pv = self.seen.guest == DomainType::X86Pv;
        let code = info.rtype;
        let ooo = |r| Err(Error::new(at, ErrorKind::OutOfOrder(r)));

        // Guest type.
        let pv_only = matches!(t, T::X86PvInfo | T::X86PvP2mFrames | T::SharedInfo) || t.is_vcpu();
        let hvm_only = matches!(t, T::HvmContext | T::HvmParams);
        if (pv_only && !pv) || (hvm_only && pv) {
            return Err(Error::new(at, ErrorKind::WrongGuestType(code)));
        }

        // Lengths.
        let len_ok = match t {
            T::End | T::Verify | T::Checkpoint | T::StaticDataEnd => len == 0,
            T::PageData => len >= page_data::HEADER_LEN,
            T::X86PvInfo => len >= x86_pv::PV_INFO_LEN && (!strict || len == x86_pv::PV_INFO_LEN),
            T::X86PvP2mFrames => len >= x86_pv::P2M_HEADER_LEN && len % 8 == 0,
            T::X86PvVcpuBasic => len >= x86_pv::VCPU_HEADER_LEN,
            T::X86PvVcpuExtended => {
                len >= x86_pv::VCPU_HEADER_LEN
                    && len - x86_pv::VCPU_HEADER_LEN <= x86_pv::VCPU_EXTENDED_MAX
            }
            T::X86PvVcpuXsave => {
                len >= x86_pv::VCPU_HEADER_LEN
                    && (len == x86_pv::VCPU_HEADER_LEN
                        || len - x86_pv::VCPU_HEADER_LEN >= x86_pv::VCPU_XSAVE_MIN)
            }
            T::X86PvVcpuMsrs => {
                len >= x86_pv::VCPU_HEADER_LEN
                    && (len - x86_pv::VCPU_HEADER_LEN) % x86_pv::VCPU_MSR_ENTRY_LEN == 0
            }
            T::SharedInfo => len == PAGE_SIZE,
            T::X86TscInfo => len == x86::TSC_INFO_LEN,
            T::HvmContext => len > 0,
            T::HvmParams => len >= x86::HVM_PARAMS_HEADER_LEN,
            T::Toolstack => true,
            T::CheckpointDirtyPfnList => len % 8 == 0,
            T::X86CpuidPolicy => len >= x86::CPUID_LEAF_LEN && len % x86::CPUID_LEAF_LEN == 0,
            T::X86MsrPolicy => len >= x86::MSR_ENTRY_LEN && len % x86::MSR_ENTRY_LEN == 0,
            T::Unknown(_) => true,
        };
        if !len_ok {
            return Err(self.bad_len(info));
        }
        if strict && matches!(t, T::Toolstack | T::CheckpointDirtyPfnList) {
            return Err(Error::new(at, ErrorKind::Deprecated(code)));
        }

        // Static data.
        let v2 = self.seen.version < 3;
        let is_static = matches!(t, T::X86PvInfo | T::X86CpuidPolicy | T::X86MsrPolicy);
        if v2 && matches!(t, T::StaticDataEnd | T::X86CpuidPolicy | T::X86MsrPolicy) {
            return Err(Error::new(at, ErrorKind::NotInVersion2(code)));
        }
        if t == T::StaticDataEnd && self.seen.static_data_end {
            return Err(Error::new(at, ErrorKind::Duplicate(code)));
        }
        if is_static && self.seen.static_data_end {
            return ooo(OrderRule::StaticAfterEnd);
        }
        let mut inferred = false;
        if v2 && !self.seen.static_data_end && matches!(t, T::X86PvP2mFrames | T::PageData) {
            self.seen.static_data_end = true;
            inferred = true;
        }
        let content = matches!(
            t,
            T::PageData
                | T::X86PvP2mFrames
                | T::SharedInfo
                | T::X86TscInfo
                | T::HvmContext
                | T::HvmParams
        ) || t.is_vcpu();
        if !v2 && content && !self.seen.static_data_end {
            return ooo(OrderRule::StaticDataEndFirst);
        }

        // PV order: info, p2m, pages, vCPUs.
        match t {
            T::X86PvInfo if self.seen.pv_info => {
                return Err(Error::new(at, ErrorKind::Duplicate(code)));
            }
            T::X86PvP2mFrames | T::SharedInfo if !self.seen.pv_info => {
                return ooo(OrderRule::PvInfoFirst)
            }
            T::PageData if pv && !self.seen.p2m => return ooo(OrderRule::P2mBeforePages),
            T::PageData if self.seen.vcpu_in_checkpoint => return ooo(OrderRule::PagesAfterVcpus),
            _ if t.is_vcpu() && !self.seen.page_data => return ooo(OrderRule::PagesBeforeVcpus),
            T::HvmContext if strict && !self.seen.hvm_params => {
                return ooo(OrderRule::HvmParamsBeforeContext)
            }
            _ => {}
        }

        // Record it and set up the body.
        let first = match t {
            T::StaticDataEnd => {
                self.seen.static_data_end = true;
                None
            }
            T::X86PvInfo => Some(St::Fixed(Fixed::PvInfo)),
            T::X86PvP2mFrames => {
                self.seen.p2m = true;
                Some(St::Fixed(Fixed::P2mHeader))
            }
            T::PageData => {
                self.seen.page_data = true;
                Some(St::Fixed(Fixed::PageDataHeader))
            }
            T::Checkpoint => {
                self.seen.vcpu_in_checkpoint = false;
                None
            }
            _ if t.is_vcpu() => {
                self.seen.vcpu_in_checkpoint = true;
                Some(St::Fixed(Fixed::Vcpu))
            }
            T::X86TscInfo => Some(St::Fixed(Fixed::Tsc)),
            T::HvmParams => {
                self.seen.hvm_params = true;
                Some(St::Fixed(Fixed::HvmParamsHeader))
            }
            T::CheckpointDirtyPfnList => {
                self.cur.items_left = info.length / 8;
                if info.length == 0 {
                    None
                } else {
                    Some(St::Fixed(Fixed::DirtyPfn))
                }
            }
            T::SharedInfo | T::HvmContext | T::Toolstack | T::X86CpuidPolicy | T::X86MsrPolicy => {
                (len > 0).then_some(St::Blob)
            }
            _ => None,
        };
        let items = self.cur.items_left;
        self.start_body(info, first);
        self.cur.items_left = items;
        if inferred {
            self.pending = Some(Event::Record(info));
            return Ok(Event::StaticDataEndInferred);
        }
        Ok(Event::Record(info))
    }

    /// Validates a libxl record header and sets up its body.
    fn libxl_record(&mut self, mut info: RecordInfo) -> Result<Event<'static>> {
        use libxl::RecordType as T;
        let at = info.offset;
        let t = T::from(info.rtype);
        let len = info.length as usize;
        let first = match t {
            T::Unknown(code) => {
                if code & OPTIONAL == 0 {
                    return Err(Error::new(at, ErrorKind::UnknownMandatoryRecord(code)));
                }
                if self.opts.strict {
                    return Err(Error::new(at, ErrorKind::UnknownOptionalRecord(code)));
                }
                info.skipped = true;
                Some(St::Skip)
            }
            T::End | T::LibxcContext | T::CheckpointEnd if len != 0 => {
                return Err(self.bad_len(info));
            }
            T::End => {
                if self.libxc == Libxc::NotStarted || self.libxc == Libxc::Open {
                    return Err(Error::new(
                        at,
                        ErrorKind::OutOfOrder(OrderRule::LibxcContextMissing),
                    ));
                }
                None
            }
            T::LibxcContext => {
                if self.libxc != Libxc::NotStarted {
                    return Err(Error::new(
                        at,
                        ErrorKind::OutOfOrder(OrderRule::LibxcContextTwice),
                    ));
                }
                None
            }
            T::CheckpointEnd => {
                if self.libxc != Libxc::AtCheckpoint {
                    return Err(Error::new(
                        at,
                        ErrorKind::OutOfOrder(OrderRule::CheckpointEnd),
                    ));
                }
                None
            }
            T::EmulatorXenstoreData | T::EmulatorContext => {
                if len < libxl::EMULATOR_HEADER_LEN {
                    return Err(self.bad_len(info));
                }
                Some(St::Fixed(Fixed::Emulator))
            }
            T::CheckpointState => {
                if len < libxl::CHECKPOINT_STATE_LEN {
                    return Err(self.bad_len(info));
                }
                Some(St::Fixed(Fixed::CheckpointState))
            }
        };
        self.start_body(info, first);
        Ok(Event::Record(info))
    }

    /// Next phase after a fixed part, given what the body still holds.
    fn then_blob(&mut self) {
        if self.body_left() == 0 {
            self.end_body();
        } else {
            self.st = St::Blob;
        }
    }

    /// A fixed part is in the accumulator at absolute offset `at`.
    fn fixed_done(&mut self, f: Fixed, at: u64) -> Result<Event<'static>> {
        let strict = self.opts.strict;
        let info = self.cur.info;
        let b = &self.acc[..f.len()];
        let reserved = |r: core::ops::Range<usize>| b[r].iter().any(|&x| x != 0);
        let ev = match f {
            Fixed::PageDataHeader => {
                let count = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if count == 0 {
                    return Err(Error::new(at, ErrorKind::PageDataCountZero));
                }
                if strict && reserved(4..8) {
                    return Err(Error::new(at + 4, ErrorKind::ReservedNotZero));
                }
                if u64::from(info.length) < page_data::HEADER_LEN as u64 + 8 * u64::from(count) {
                    return Err(self.bad_len(info));
                }
                self.cur.summary.count = count;
                self.cur.items_left = count;
                self.cur.item_index = 0;
                self.st = St::Fixed(Fixed::Pfn);
                Event::PageDataHeader { count }
            }
            Fixed::Pfn => {
                let w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let entry = PfnEntry::from_word(w);
                if !entry.page_type.is_known() {
                    return Err(Error::new(
                        at,
                        ErrorKind::BadPageType(entry.page_type.nibble()),
                    ));
                }
                if strict && PfnEntry::reserved_bits(w) != 0 {
                    return Err(Error::new(at, ErrorKind::ReservedNotZero));
                }
                let s = &mut self.cur.summary;
                s.min_pfn = s.min_pfn.min(entry.pfn);
                s.max_pfn = s.max_pfn.max(entry.pfn);
                let nib = entry.page_type.nibble() as usize & 0xf;
                s.type_counts[nib] = s.type_counts[nib].saturating_add(1);
                if entry.page_type.has_data() {
                    s.data_pages += 1;
                }
                let index = self.cur.item_index;
                self.cur.item_index += 1;
                self.cur.items_left -= 1;
                if self.cur.items_left == 0 {
                    self.st = St::PfnsDone;
                }
                Event::Pfn { index, entry }
            }
            Fixed::PvInfo => {
                let r = PvInfoRepr::parse(b).map_err(|e| e.shifted(at))?;
                if strict && reserved(2..8) {
                    return Err(Error::new(at + 2, ErrorKind::ReservedNotZero));
                }
                self.seen.pv_info = true;
                self.seen.pv_width = r.guest_width;
                self.then_blob();
                Event::PvInfo(r)
            }
            Fixed::P2mHeader => {
                let r = P2mFramesRepr::parse(b).map_err(|e| e.shifted(at))?;
                let fpp = (PAGE_SIZE / self.seen.pv_width.max(1) as usize) as u32;
                let frames = r.frames(fpp);
                if u64::from(info.length) != 8 + 8 * u64::from(frames) {
                    return Err(self.bad_len(info));
                }
                self.cur.items_left = frames;
                self.cur.item_index = 0;
                self.st = St::Fixed(Fixed::P2mFrame);
                Event::P2mFrames(r)
            }
            Fixed::P2mFrame | Fixed::DirtyPfn => {
                let w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let index = self.cur.item_index;
                self.cur.item_index += 1;
                self.cur.items_left -= 1;
                if self.cur.items_left == 0 {
                    self.end_body();
                }
                if f == Fixed::DirtyPfn {
                    Event::DirtyPfn(w)
                } else {
                    Event::P2mFrame { index, pfn: w }
                }
            }
            Fixed::Vcpu => {
                let r = VcpuHeaderRepr::parse(b).map_err(|e| e.shifted(at))?;
                if strict && reserved(4..8) {
                    return Err(Error::new(at + 4, ErrorKind::ReservedNotZero));
                }
                self.then_blob();
                Event::Vcpu(r)
            }
            Fixed::Tsc => {
                let r = TscInfoRepr::parse(b).map_err(|e| e.shifted(at))?;
                if strict && reserved(20..24) {
                    return Err(Error::new(at + 20, ErrorKind::ReservedNotZero));
                }
                self.end_body();
                Event::TscInfo(r)
            }
            Fixed::HvmParamsHeader => {
                let r = HvmParamsRepr::parse(b).map_err(|e| e.shifted(at))?;
                if strict && reserved(4..8) {
                    return Err(Error::new(at + 4, ErrorKind::ReservedNotZero));
                }
                if r.body_len() != u64::from(info.length) {
                    return Err(self.bad_len(info));
                }
                self.cur.items_left = r.count;
                self.cur.item_index = 0;
                if r.count == 0 {
                    self.end_body();
                } else {
                    self.st = St::Fixed(Fixed::HvmParam);
                }
                Event::HvmParams(r)
            }
            Fixed::HvmParam => {
                let p = HvmParam::parse(b).map_err(|e| e.shifted(at))?;
                self.cur.items_left -= 1;
                if self.cur.items_left == 0 {
                    self.end_body();
                }
                Event::HvmParam(p)
            }
            Fixed::Emulator => {
                let r = EmulatorHeaderRepr::parse(b).map_err(|e| e.shifted(at))?;
                if strict {
                    if let EmulatorId::Unknown(id) = r.id {
                        return Err(Error::new(at, ErrorKind::UnknownEmulator(id)));
                    }
                }
                self.then_blob();
                Event::Emulator(r)
            }
            Fixed::CheckpointState => {
                let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.then_blob();
                Event::CheckpointState(id.into())
            }
        };
        Ok(ev)
    }
}

/// Decodes a whole in-memory stream, handing every event to `f`, and
/// checks that it is complete. Feeds the decoder in pieces of at most
/// `chunk` octets (at least 1), to exercise the same path as a reader of a
/// byte stream.
pub fn decode_all(
    input: &[u8],
    opts: Options,
    chunk: usize,
    mut f: impl FnMut(&Event<'_>),
) -> Result<()> {
    let mut d = Decoder::new(opts);
    let chunk = chunk.max(1);
    let mut pos: usize = 0;
    loop {
        let end = input.len().min(pos.saturating_add(chunk));
        let piece = input.get(pos..end).unwrap_or(&[]);
        let step = d.push(piece)?;
        pos += step.consumed;
        if let Some(ev) = &step.event {
            f(ev);
            continue;
        }
        if pos >= input.len() {
            // Drain pending events with empty pushes.
            loop {
                let step = d.push(&[])?;
                match &step.event {
                    Some(ev) => f(ev),
                    None => break,
                }
            }
            return d.finish();
        }
    }
}

/// Running totals over a stream's events, for summaries such as
/// `relocd inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Records of either layer, skipped ones included.
    pub records: u64,
    /// Unknown optional records skipped.
    pub skipped: u64,
    /// libxc records per type code 0x00..=0x12 (others not counted here).
    pub libxc_by_type: [u64; 19],
    /// PAGE_DATA records.
    pub page_data_records: u64,
    /// Pfns per type nibble, over all PAGE_DATA records.
    pub pfns_by_type: [u64; 16],
    /// Pages whose contents were in the stream.
    pub data_pages: u64,
    /// Highest vCPU id seen in a vCPU record, plus one (PV; HVM vCPUs live
    /// inside HVM_CONTEXT).
    pub vcpus: u32,
    /// CHECKPOINT records.
    pub checkpoints: u64,
    /// Octets up to the end of the last record read.
    pub bytes: u64,
}

impl Totals {
    /// Takes one event into account.
    pub fn observe(&mut self, ev: &Event<'_>) {
        match ev {
            Event::Record(r) => {
                self.records += 1;
                if r.skipped {
                    self.skipped += 1;
                }
                if r.layer == Layer::Libxc {
                    if let Some(n) = self.libxc_by_type.get_mut(r.rtype as usize) {
                        *n += 1;
                    }
                    match RecordType::from(r.rtype) {
                        RecordType::PageData => self.page_data_records += 1,
                        RecordType::Checkpoint => self.checkpoints += 1,
                        _ => {}
                    }
                }
            }
            Event::PfnsDone(s) => {
                for (t, n) in self.pfns_by_type.iter_mut().zip(s.type_counts.iter()) {
                    *t += u64::from(*n);
                }
                self.data_pages += u64::from(s.data_pages);
            }
            Event::Vcpu(v) => self.vcpus = self.vcpus.max(v.vcpu_id.saturating_add(1)),
            Event::RecordEnd(r) => self.bytes = self.bytes.max(r.offset + r.total_len()),
            _ => {}
        }
    }
}

/// Error of [`read_stream`]: the source failed, or the stream is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError<E> {
    /// The source failed.
    Io(E),
    /// The stream is malformed (with its offset).
    Stream(Error),
}

impl<E: core::fmt::Debug> core::fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "read: {e:?}"),
            ReadError::Stream(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for ReadError<E> {}

/// Reads a whole stream from `source`, using only `buf` (any size from 1
/// octet; a few hundred KiB reads fast), and hands every event to `f`.
/// Events seen before an error have been handed out already.
pub fn read_stream<R: embedded_io::Read>(
    source: &mut R,
    buf: &mut [u8],
    opts: Options,
    mut f: impl FnMut(&Event<'_>),
) -> core::result::Result<(), ReadError<R::Error>> {
    let mut d = Decoder::new(opts);
    if buf.is_empty() {
        return Err(ReadError::Stream(Error::new(0, ErrorKind::BufferTooSmall)));
    }
    loop {
        let n = source.read(buf).map_err(ReadError::Io)?;
        let mut input = buf.get(..n).unwrap_or(&[]);
        loop {
            let step = d.push(input).map_err(ReadError::Stream)?;
            input = input.get(step.consumed..).unwrap_or(&[]);
            match &step.event {
                Some(ev) => f(ev),
                None => break,
            }
        }
        if n == 0 {
            return d.finish().map_err(ReadError::Stream);
        }
    }
}

#[cfg(test)]
pub(crate) mod test;
