//! Xen's migration stream, byte for byte.
//!
//! Three layers, outermost first:
//!
//! * [`xlfile`]: the header `xl save` puts in front of a save file (32-byte
//!   magic, byte-order word, mandatory/optional flags, the domain config).
//! * [`libxl`]: libxl's stream v2 (`LibxlFmt` header and its records), which
//!   wraps the libxc stream in a `LIBXC_CONTEXT` record.
//! * libxc's stream v2/v3: [`image`] header, [`domain`] header, then
//!   [`record`]s whose bodies are described in [`page_data`], [`x86_pv`] and
//!   [`x86`].
//!
//! Each fixed layout is a zero-copy view over `T: AsRef<[u8]>` with a `mod
//! field` byte-range table, plus an owned `Repr` with `parse`, `emit` and
//! `buffer_len`. [`reader::Decoder`] reads a whole stream incrementally with
//! bounded memory; [`writer`] lays records out the way Xen's saver does.
//!
//! The reference is Xen's `docs/specs/libxc-migration-stream.pandoc`
//! (revision 3), `docs/specs/libxl-migration-stream.pandoc` (revision 2) and
//! `tools/xl/xl.h`; `docs/stream.md` in this repository lists what we
//! implement and the facts the specs leave out.
//!
//! # The length contract
//!
//! As in smoltcp: `new_unchecked` wraps any buffer, and its getters may panic
//! when the buffer is shorter than the layout. `new_checked` (which calls
//! `check_len`) refuses a short buffer with [`ErrorKind::Truncated`]; after
//! it succeeded, no getter or setter of that view panics. Every `Repr::parse`
//! goes through `new_checked`, so parsing untrusted bytes never panics.
//!
//! # Byte order
//!
//! The image header, libxl header and nothing else are big-endian. The
//! domain header and all record fields are in the order the image header
//! names; Xen's own restorer refuses big-endian streams and so does
//! [`reader::Decoder`]; the views here read and write little-endian.

use core::fmt;

pub mod domain;
pub mod image;
pub mod libxl;
pub mod page_data;
pub mod reader;
pub mod record;
pub mod writer;
pub mod x86;
pub mod x86_pv;
pub mod xlfile;

pub use domain::{DomainHeader, DomainHeaderRepr, DomainType};
pub use image::{ImageHeader, ImageHeaderRepr};
pub use page_data::{PageDataHeader, PageType, PfnEntry};
pub use reader::{Decoder, Event, Options, StreamKind};
pub use record::{RecordHeader, RecordHeaderRepr, RecordType};
pub use writer::{Sink, StreamWriter};

/// A byte range inside a fixed layout.
pub type Field = core::ops::Range<usize>;

/// Records are padded so that each one ends on this boundary (`REC_ALIGN`).
pub const REC_ALIGN: usize = 8;

/// The largest record body libxc accepts (`REC_LENGTH_MAX`, 128 MiB).
pub const REC_LENGTH_MAX: u32 = 128 << 20;

/// The only page size x86 streams use (page_shift 12).
pub const PAGE_SIZE: usize = 4096;

/// Xen's saver puts at most this many pfns in one PAGE_DATA record
/// (`MAX_BATCH_SIZE` in `xg_save_restore.h`). Xen's restorer does not
/// enforce it on read and neither do we; our writer keeps to it.
pub const MAX_BATCH_SIZE: usize = 1024;

/// Body length rounded up to the next multiple of [`REC_ALIGN`].
pub const fn padded_len(body_len: u32) -> u64 {
    (body_len as u64 + (REC_ALIGN as u64 - 1)) & !(REC_ALIGN as u64 - 1)
}

/// Number of zero octets that follow a body of `body_len` octets.
pub const fn padding_len(body_len: u32) -> usize {
    (padded_len(body_len) - body_len as u64) as usize
}

/// What is wrong with a stream or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The buffer or stream ends inside a structure.
    Truncated,
    /// A caller's output buffer is too small for what is to be written.
    BufferTooSmall,
    /// The first octets match none of the three stream layers.
    UnknownFormat,
    /// The xl save-file magic is wrong.
    BadXlMagic,
    /// The xl byte-order word is not `0x01020304` in little-endian.
    BadXlByteOrder(u32),
    /// The xl header sets mandatory flags this reader does not know.
    UnknownXlMandatoryFlags(u32),
    /// The xl header's optional data is shorter than the config it announces.
    XlConfigTruncated,
    /// The save file holds a pre-v2 (legacy) stream: no STREAMv2 flag.
    LegacyStream,
    /// The libxl header's ident is not `LibxlFmt`.
    BadLibxlIdent,
    /// The libxl header's version is not 2.
    UnsupportedLibxlVersion(u32),
    /// The image header's marker is not all ones.
    BadMarker,
    /// The image header's id is not `XENF`.
    BadImageId(u32),
    /// The image header's version is neither 2 nor 3.
    UnsupportedVersion(u32),
    /// The stream is big-endian, which Xen's restorer refuses too.
    BigEndian,
    /// A reserved field or bit is not zero (strict mode only).
    ReservedNotZero,
    /// Record padding is not zero (strict mode only).
    PaddingNotZero,
    /// The domain header names a guest type this reader does not know.
    UnsupportedDomainType(u32),
    /// The domain header's page shift is not 12.
    UnsupportedPageShift(u16),
    /// A record body is longer than [`REC_LENGTH_MAX`].
    RecordTooLong(u32),
    /// A mandatory record type this reader does not know.
    UnknownMandatoryRecord(u32),
    /// An optional record type this reader does not know (strict mode
    /// only; otherwise such records are skipped).
    UnknownOptionalRecord(u32),
    /// A record's body length does not fit its type (code, length).
    BadRecordLength(u32, u32),
    /// PAGE_DATA with a count of zero.
    PageDataCountZero,
    /// A pfn word carries a reserved page type (0x5–0x8).
    BadPageType(u8),
    /// X86_PV_INFO holds a width/levels pair Xen does not accept.
    BadPvInfo(u8, u8),
    /// X86_PV_P2M_FRAMES with start pfn above end pfn.
    BadP2mRange(u32, u32),
    /// A record type that does not belong to this guest type.
    WrongGuestType(u32),
    /// A record arrived before one it depends on, or after one that must
    /// follow it.
    OutOfOrder(OrderRule),
    /// A record that may appear once appeared again.
    Duplicate(u32),
    /// A v3-only record in a version 2 stream.
    NotInVersion2(u32),
    /// A record the strict mode refuses (TOOLSTACK, CHECKPOINT_DIRTY_PFN_LIST).
    Deprecated(u32),
    /// A libxl emulator id that is not 0, 1 or 2 (strict mode only).
    UnknownEmulator(u32),
    /// Emulator xenstore data that is not NUL-terminated key/value pairs
    /// (strict mode only).
    BadXenstoreData,
    /// Octets after the final END record.
    TrailingData,
    /// The writer was asked for a record the stream's state forbids.
    WriterState(OrderRule),
}

/// The ordering rule a stream broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderRule {
    /// X86_PV_P2M_FRAMES or SHARED_INFO before X86_PV_INFO.
    PvInfoFirst,
    /// PAGE_DATA (PV) before X86_PV_P2M_FRAMES.
    P2mBeforePages,
    /// A vCPU record before any PAGE_DATA.
    PagesBeforeVcpus,
    /// PAGE_DATA after a vCPU record within one checkpoint.
    PagesAfterVcpus,
    /// HVM_CONTEXT before HVM_PARAMS (strict mode only; Xen's saver itself
    /// writes HVM_CONTEXT first).
    HvmParamsBeforeContext,
    /// Memory or register content before STATIC_DATA_END (v3).
    StaticDataEndFirst,
    /// A static-data record after STATIC_DATA_END.
    StaticAfterEnd,
    /// CHECKPOINT_END outside a checkpoint.
    CheckpointEnd,
    /// libxl END before the libxc stream inside it was read.
    LibxcContextMissing,
    /// A second LIBXC_CONTEXT while a libxc stream is open or after it ended.
    LibxcContextTwice,
    /// Anything after END.
    AfterEnd,
    /// A writer call before the headers were written.
    HeadersFirst,
}

/// A stream error: what is wrong and at which byte.
///
/// `offset` is absolute in the stream for errors from
/// [`reader::Decoder`], and relative to the buffer handed in for errors from
/// a view or `Repr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// Byte offset of the offending structure or field.
    pub offset: u64,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl Error {
    /// An error of `kind` at `offset`.
    pub const fn new(offset: u64, kind: ErrorKind) -> Self {
        Error { offset, kind }
    }

    /// The same error moved by `base` octets.
    pub const fn shifted(self, base: u64) -> Self {
        Error {
            offset: self.offset.saturating_add(base),
            kind: self.kind,
        }
    }
}

impl fmt::Display for OrderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            OrderRule::PvInfoFirst => "X86_PV_INFO must come first",
            OrderRule::P2mBeforePages => "X86_PV_P2M_FRAMES must precede PAGE_DATA",
            OrderRule::PagesBeforeVcpus => "PAGE_DATA must precede vCPU records",
            OrderRule::PagesAfterVcpus => "PAGE_DATA after vCPU records",
            OrderRule::HvmParamsBeforeContext => "HVM_PARAMS must precede HVM_CONTEXT",
            OrderRule::StaticDataEndFirst => "STATIC_DATA_END must precede memory and registers",
            OrderRule::StaticAfterEnd => "static data after STATIC_DATA_END",
            OrderRule::CheckpointEnd => "CHECKPOINT_END outside a checkpoint",
            OrderRule::LibxcContextMissing => "libxl END before the libxc stream",
            OrderRule::LibxcContextTwice => "second LIBXC_CONTEXT",
            OrderRule::AfterEnd => "record after END",
            OrderRule::HeadersFirst => "headers must be written first",
        };
        f.write_str(s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorKind::Truncated => f.write_str("truncated"),
            ErrorKind::BufferTooSmall => f.write_str("output buffer too small"),
            ErrorKind::UnknownFormat => f.write_str("not an xl, libxl or libxc stream"),
            ErrorKind::BadXlMagic => f.write_str("bad xl save-file magic"),
            ErrorKind::BadXlByteOrder(v) => write!(f, "xl byte-order word {v:#010x}"),
            ErrorKind::UnknownXlMandatoryFlags(v) => {
                write!(f, "unknown xl mandatory flags {v:#x}")
            }
            ErrorKind::XlConfigTruncated => f.write_str("xl config longer than optional data"),
            ErrorKind::LegacyStream => f.write_str("legacy (pre-v2) stream"),
            ErrorKind::BadLibxlIdent => f.write_str("bad libxl ident"),
            ErrorKind::UnsupportedLibxlVersion(v) => write!(f, "libxl version {v}"),
            ErrorKind::BadMarker => f.write_str("bad image marker"),
            ErrorKind::BadImageId(v) => write!(f, "bad image id {v:#010x}"),
            ErrorKind::UnsupportedVersion(v) => write!(f, "image version {v}"),
            ErrorKind::BigEndian => f.write_str("big-endian stream"),
            ErrorKind::ReservedNotZero => f.write_str("reserved field not zero"),
            ErrorKind::PaddingNotZero => f.write_str("record padding not zero"),
            ErrorKind::UnsupportedDomainType(v) => write!(f, "domain type {v:#x}"),
            ErrorKind::UnsupportedPageShift(v) => write!(f, "page shift {v}"),
            ErrorKind::RecordTooLong(v) => write!(f, "record length {v:#x} above REC_LENGTH_MAX"),
            ErrorKind::UnknownMandatoryRecord(v) => write!(f, "unknown mandatory record {v:#010x}"),
            ErrorKind::UnknownOptionalRecord(v) => write!(f, "unknown optional record {v:#010x}"),
            ErrorKind::BadRecordLength(t, l) => {
                write!(f, "record {t:#010x} has impossible length {l}")
            }
            ErrorKind::PageDataCountZero => f.write_str("PAGE_DATA count is zero"),
            ErrorKind::BadPageType(v) => write!(f, "reserved page type {v:#x}"),
            ErrorKind::BadPvInfo(w, l) => write!(f, "X86_PV_INFO width {w} levels {l}"),
            ErrorKind::BadP2mRange(s, e) => write!(f, "p2m start {s:#x} above end {e:#x}"),
            ErrorKind::WrongGuestType(v) => write!(f, "record {v:#010x} not for this guest type"),
            ErrorKind::OutOfOrder(r) => write!(f, "out of order: {r}"),
            ErrorKind::Duplicate(v) => write!(f, "duplicate record {v:#010x}"),
            ErrorKind::NotInVersion2(v) => write!(f, "record {v:#010x} in a v2 stream"),
            ErrorKind::Deprecated(v) => write!(f, "record {v:#010x} not expected in a stream"),
            ErrorKind::UnknownEmulator(v) => write!(f, "unknown emulator id {v}"),
            ErrorKind::BadXenstoreData => f.write_str("malformed emulator xenstore data"),
            ErrorKind::TrailingData => f.write_str("data after END"),
            ErrorKind::WriterState(r) => write!(f, "writer: {r}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.kind)
    }
}

impl core::error::Error for Error {}

/// Result of stream operations.
pub type Result<T> = core::result::Result<T, Error>;

/// Defines a wire code as an open enum with a lossless `Unknown` variant.
macro_rules! open_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vm:meta])* $var:ident = $val:expr, )+
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vm])* $var, )+
            /// A code this crate does not name.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v {
                    $( x if x == $val => $name::$var, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                match v {
                    $( $name::$var => $val, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}
pub(crate) use open_enum;

/// Little- and big-endian field access on byte slices. Callers have checked
/// the length (see the module's length contract).
pub(crate) mod bytes {
    use super::Field;

    pub(crate) fn le_u16(b: &[u8], f: Field) -> u16 {
        let mut a = [0u8; 2];
        a.copy_from_slice(&b[f]);
        u16::from_le_bytes(a)
    }
    pub(crate) fn le_u32(b: &[u8], f: Field) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[f]);
        u32::from_le_bytes(a)
    }
    pub(crate) fn le_u64(b: &[u8], f: Field) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[f]);
        u64::from_le_bytes(a)
    }
    pub(crate) fn be_u16(b: &[u8], f: Field) -> u16 {
        let mut a = [0u8; 2];
        a.copy_from_slice(&b[f]);
        u16::from_be_bytes(a)
    }
    pub(crate) fn be_u32(b: &[u8], f: Field) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[f]);
        u32::from_be_bytes(a)
    }
    pub(crate) fn be_u64(b: &[u8], f: Field) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[f]);
        u64::from_be_bytes(a)
    }
    pub(crate) fn set_le_u16(b: &mut [u8], f: Field, v: u16) {
        b[f].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn set_le_u32(b: &mut [u8], f: Field, v: u32) {
        b[f].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn set_le_u64(b: &mut [u8], f: Field, v: u64) {
        b[f].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn set_be_u16(b: &mut [u8], f: Field, v: u16) {
        b[f].copy_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn set_be_u32(b: &mut [u8], f: Field, v: u32) {
        b[f].copy_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn set_be_u64(b: &mut [u8], f: Field, v: u64) {
        b[f].copy_from_slice(&v.to_be_bytes());
    }
}

/// Checks that `buf` holds at least `len` octets.
pub(crate) fn need(buf: &[u8], len: usize) -> Result<()> {
    if buf.len() < len {
        Err(Error::new(buf.len() as u64, ErrorKind::Truncated))
    } else {
        Ok(())
    }
}

/// Checks that an output buffer holds at least `len` octets.
pub(crate) fn need_out(buf: &[u8], len: usize) -> Result<()> {
    if buf.len() < len {
        Err(Error::new(0, ErrorKind::BufferTooSmall))
    } else {
        Ok(())
    }
}
