//! libxl's stream v2: a 16-octet big-endian header, then records framed
//! like libxc's (8-octet header, body padded to 8).
//!
//! ```text
//!  0     1     2     3     4     5     6     7 octet
//! +-------------------------------------------------+
//! | ident "LibxlFmt"                                |
//! +-----------------------+-------------------------+
//! | version               | options                 |
//! +-----------------------+-------------------------+
//! ```

use super::bytes::{be_u32, be_u64, le_u32, set_be_u32, set_be_u64, set_le_u32};
use super::{need, need_out, open_enum, Error, ErrorKind, Result};

/// Byte ranges of the libxl header.
pub mod field {
    use crate::stream::Field;
    /// "LibxlFmt".
    pub const IDENT: Field = 0..8;
    /// Version, 2.
    pub const VERSION: Field = 8..12;
    /// Option bits.
    pub const OPTIONS: Field = 12..16;
}

/// Length of the libxl header.
pub const HEADER_LEN: usize = field::OPTIONS.end;
const _: () = assert!(HEADER_LEN == 16);

/// `RESTORE_STREAM_IDENT`, "LibxlFmt".
pub const IDENT: u64 = 0x4c69_6278_6c46_6d74;
/// `RESTORE_STREAM_VERSION`.
pub const VERSION: u32 = 2;
/// Option bit 0: big-endian.
pub const OPT_BIG_ENDIAN: u32 = 1 << 0;
/// Option bit 1: made by the legacy conversion tool.
pub const OPT_LEGACY: u32 = 1 << 1;
/// Reserved option bits.
pub const OPT_RESERVED: u32 = !(OPT_BIG_ENDIAN | OPT_LEGACY);

/// A view of the libxl header.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }
    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }
    /// Fails with `Truncated` if the buffer is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<()> {
        need(self.buffer.as_ref(), HEADER_LEN)
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The ident field.
    pub fn ident(&self) -> u64 {
        be_u64(self.buffer.as_ref(), field::IDENT)
    }
    /// The version field.
    pub fn version(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::VERSION)
    }
    /// The options field.
    pub fn options(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::OPTIONS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the ident field.
    pub fn set_ident(&mut self, v: u64) {
        set_be_u64(self.buffer.as_mut(), field::IDENT, v)
    }
    /// Sets the version field.
    pub fn set_version(&mut self, v: u32) {
        set_be_u32(self.buffer.as_mut(), field::VERSION, v)
    }
    /// Sets the options field.
    pub fn set_options(&mut self, v: u32) {
        set_be_u32(self.buffer.as_mut(), field::OPTIONS, v)
    }
}

/// The meaning of a libxl header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Option bit 0.
    pub big_endian: bool,
    /// Option bit 1: converted from a legacy stream.
    pub legacy: bool,
}

impl HeaderRepr {
    /// What libxl writes: little-endian, not legacy.
    pub const CURRENT: Self = HeaderRepr {
        big_endian: false,
        legacy: false,
    };
    /// Reads a header: ident and version are checked; reserved option bits
    /// are ignored (the reader's strict mode refuses them).
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<Self> {
        h.check_len()?;
        if h.ident() != IDENT {
            return Err(Error::new(0, ErrorKind::BadLibxlIdent));
        }
        if h.version() != VERSION {
            return Err(Error::new(
                field::VERSION.start as u64,
                ErrorKind::UnsupportedLibxlVersion(h.version()),
            ));
        }
        Ok(HeaderRepr {
            big_endian: h.options() & OPT_BIG_ENDIAN != 0,
            legacy: h.options() & OPT_LEGACY != 0,
        })
    }
    /// Octets [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) -> Result<()> {
        need_out(h.buffer.as_ref(), HEADER_LEN)?;
        h.set_ident(IDENT);
        h.set_version(VERSION);
        let mut o = 0;
        if self.big_endian {
            o |= OPT_BIG_ENDIAN;
        }
        if self.legacy {
            o |= OPT_LEGACY;
        }
        h.set_options(o);
        Ok(())
    }
}

open_enum! {
    /// libxl record types.
    pub enum RecordType(u32) {
        /// Last record.
        End = 0,
        /// A libxc stream follows (body empty).
        LibxcContext = 1,
        /// Emulator xenstore keys and values.
        EmulatorXenstoreData = 2,
        /// Emulator state blob.
        EmulatorContext = 3,
        /// End of a checkpoint.
        CheckpointEnd = 4,
        /// COLO control message.
        CheckpointState = 5,
    }
}

impl RecordType {
    /// Bit 31 of the code is set: a reader may skip the record.
    pub fn is_optional(self) -> bool {
        u32::from(self) & super::record::OPTIONAL != 0
    }
    /// Name as in the spec.
    pub const fn name(self) -> &'static str {
        match self {
            RecordType::End => "END",
            RecordType::LibxcContext => "LIBXC_CONTEXT",
            RecordType::EmulatorXenstoreData => "EMULATOR_XENSTORE_DATA",
            RecordType::EmulatorContext => "EMULATOR_CONTEXT",
            RecordType::CheckpointEnd => "CHECKPOINT_END",
            RecordType::CheckpointState => "CHECKPOINT_STATE",
            RecordType::Unknown(_) => "Reserved",
        }
    }
}

open_enum! {
    /// Emulator ids of the emulator records' sub-header.
    pub enum EmulatorId(u32) {
        /// Unknown (legacy stream).
        Unknown0 = 0,
        /// qemu-traditional.
        QemuTraditional = 1,
        /// qemu-xen (upstream).
        QemuUpstream = 2,
    }
}

/// Length of the emulator sub-header (`libxl__sr_emulator_hdr`).
pub const EMULATOR_HEADER_LEN: usize = 8;

/// The sub-header of EMULATOR_XENSTORE_DATA and EMULATOR_CONTEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatorHeaderRepr {
    /// Which emulator.
    pub id: EmulatorId,
    /// Index of this emulator for the domain.
    pub index: u32,
}

impl EmulatorHeaderRepr {
    /// Reads the sub-header.
    pub fn parse(body: &[u8]) -> Result<Self> {
        need(body, EMULATOR_HEADER_LEN)?;
        Ok(EmulatorHeaderRepr {
            id: le_u32(body, 0..4).into(),
            index: le_u32(body, 4..8),
        })
    }
    /// Octets.
    pub const fn buffer_len(&self) -> usize {
        EMULATOR_HEADER_LEN
    }
    /// Writes the sub-header.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, EMULATOR_HEADER_LEN)?;
        set_le_u32(out, 0..4, self.id.into());
        set_le_u32(out, 4..8, self.index);
        Ok(())
    }
}

/// Body length libxl writes for CHECKPOINT_STATE (`sizeof(uint32_t)`); the
/// record framing pads it to 8.
pub const CHECKPOINT_STATE_LEN: usize = 4;

open_enum! {
    /// CHECKPOINT_STATE control ids (COLO).
    pub enum CheckpointState(u32) {
        /// Primary to secondary: start a new checkpoint.
        New = 0,
        /// Secondary is suspended.
        SvmSuspended = 1,
        /// Secondary is ready.
        SvmReady = 2,
        /// Secondary is resumed.
        SvmResumed = 3,
    }
}

/// Checks EMULATOR_XENSTORE_DATA key/value data (after the sub-header):
/// empty, or NUL-terminated strings in an even number.
pub fn check_xenstore_data(data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if data.last() != Some(&0) {
        return Err(Error::new(data.len() as u64, ErrorKind::BadXenstoreData));
    }
    let strings = data.iter().filter(|&&b| b == 0).count();
    if strings % 2 != 0 {
        return Err(Error::new(0, ErrorKind::BadXenstoreData));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    static BYTES: [u8; 16] = [
        b'L', b'i', b'b', b'x', b'l', b'F', b'm', b't', // ident
        0x00, 0x00, 0x00, 0x02, // version 2
        0x00, 0x00, 0x00, 0x00, // options
    ];

    #[test]
    fn test_header() {
        let h = Header::new_checked(&BYTES[..]).unwrap();
        assert_eq!(h.ident(), 0x4c6962786c466d74);
        let r = HeaderRepr::parse(&h).unwrap();
        assert_eq!(r, HeaderRepr::CURRENT);
        let mut out = [0u8; 16];
        r.emit(&mut Header::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, BYTES);
        let mut legacy = BYTES;
        legacy[15] = 2;
        assert!(
            HeaderRepr::parse(&Header::new_unchecked(&legacy[..]))
                .unwrap()
                .legacy
        );
        let mut v3 = BYTES;
        v3[11] = 3;
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&v3[..])).unwrap_err(),
            Error::new(8, ErrorKind::UnsupportedLibxlVersion(3))
        );
        let mut bad = BYTES;
        bad[0] = b'l';
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&bad[..]))
                .unwrap_err()
                .kind,
            ErrorKind::BadLibxlIdent
        );
    }

    #[test]
    fn test_records() {
        for c in 0..=5 {
            assert!(!matches!(RecordType::from(c), RecordType::Unknown(_)));
        }
        assert_eq!(RecordType::from(6), RecordType::Unknown(6));
        assert!(RecordType::from(0x8000_0006).is_optional());
        let emu = [0x02, 0, 0, 0, 0x01, 0, 0, 0];
        let r = EmulatorHeaderRepr::parse(&emu).unwrap();
        assert_eq!(
            r,
            EmulatorHeaderRepr {
                id: EmulatorId::QemuUpstream,
                index: 1
            }
        );
        let mut out = [0u8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, emu);
        assert_eq!(check_xenstore_data(b"a\0b\0"), Ok(()));
        assert!(check_xenstore_data(b"a\0b").is_err());
        assert!(check_xenstore_data(b"a\0").is_err());
        assert_eq!(CheckpointState::from(3), CheckpointState::SvmResumed);
    }
}
