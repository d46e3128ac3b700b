//! The header `xl save` writes before the libxl stream (`tools/xl/xl.h`).
//!
//! ```text
//! magic[32]          "Xen saved domain, xl format\n \0 \r"
//! byteorder   u32    0x01020304 in the saving host's order
//! mandatory   u32    flags a reader must understand
//! optional    u32    flags a reader may ignore
//! opt_len     u32    octets of optional data that follow
//! optional data:     u32 config length, then the config (JSON with a
//!                    trailing NUL when the JSON flag is set)
//! ```
//!
//! The u32 fields are in the saving host's order; like `xl`, we accept
//! only the order that makes `byteorder` read as 0x01020304 in
//! little-endian (x86).

use super::bytes::{le_u32, set_le_u32};
use super::{need, need_out, Error, ErrorKind, Result};

/// The 32-octet magic (`savefileheader_magic`, no terminating NUL).
pub const MAGIC: [u8; 32] = *b"Xen saved domain, xl format\n \0 \r";
/// `SAVEFILE_BYTEORDER_VALUE`.
pub const BYTEORDER: u32 = 0x0102_0304;
/// `XL_MANDATORY_FLAG_JSON`: the config is libxl JSON.
pub const FLAG_JSON: u32 = 1 << 0;
/// `XL_MANDATORY_FLAG_STREAMv2`: a libxl v2 stream follows.
pub const FLAG_STREAM_V2: u32 = 1 << 1;
/// `XL_MANDATORY_FLAG_ALL`.
pub const FLAGS_KNOWN: u32 = FLAG_JSON | FLAG_STREAM_V2;

/// Byte ranges of the save-file header.
pub mod field {
    use crate::stream::Field;
    /// Magic.
    pub const MAGIC: Field = 0..32;
    /// Byte-order word.
    pub const BYTEORDER: Field = 32..36;
    /// Mandatory flags.
    pub const MANDATORY: Field = 36..40;
    /// Optional flags.
    pub const OPTIONAL: Field = 40..44;
    /// Optional data length.
    pub const OPTIONAL_DATA_LEN: Field = 44..48;
}

/// Length of `struct save_file_header`.
pub const HEADER_LEN: usize = field::OPTIONAL_DATA_LEN.end;
const _: () = assert!(HEADER_LEN == 48);

/// A view of the save-file header.
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
    /// The magic.
    pub fn magic(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MAGIC]
    }
    /// The byte-order word.
    pub fn byteorder(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::BYTEORDER)
    }
    /// Mandatory flags.
    pub fn mandatory_flags(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::MANDATORY)
    }
    /// Optional flags.
    pub fn optional_flags(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::OPTIONAL)
    }
    /// Optional data length.
    pub fn optional_data_len(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::OPTIONAL_DATA_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the magic.
    pub fn set_magic(&mut self) {
        self.buffer.as_mut()[field::MAGIC].copy_from_slice(&MAGIC)
    }
    /// Sets the byte-order word.
    pub fn set_byteorder(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::BYTEORDER, v)
    }
    /// Sets the mandatory flags.
    pub fn set_mandatory_flags(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::MANDATORY, v)
    }
    /// Sets the optional flags.
    pub fn set_optional_flags(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::OPTIONAL, v)
    }
    /// Sets the optional data length.
    pub fn set_optional_data_len(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::OPTIONAL_DATA_LEN, v)
    }
}

/// The meaning of a save-file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Mandatory flags (only known ones are accepted).
    pub mandatory_flags: u32,
    /// Optional flags (unknown ones are kept).
    pub optional_flags: u32,
    /// Octets of optional data after the header.
    pub optional_data_len: u32,
}

impl HeaderRepr {
    /// What `xl save` writes for a config of `config_len` octets (including
    /// its trailing NUL): STREAMv2, JSON if there is a config, optional
    /// data = 4-octet length + config.
    pub const fn for_config(config_len: u32) -> Self {
        HeaderRepr {
            mandatory_flags: if config_len > 0 {
                FLAG_STREAM_V2 | FLAG_JSON
            } else {
                FLAG_STREAM_V2
            },
            optional_flags: 0,
            optional_data_len: config_len.saturating_add(4),
        }
    }
    /// Config in JSON.
    pub const fn json(&self) -> bool {
        self.mandatory_flags & FLAG_JSON != 0
    }
    /// A libxl v2 stream follows.
    pub const fn stream_v2(&self) -> bool {
        self.mandatory_flags & FLAG_STREAM_V2 != 0
    }
    /// Reads a header: magic, byte order and mandatory flags are checked, as
    /// `xl restore` does.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<Self> {
        h.check_len()?;
        if h.magic() != MAGIC {
            return Err(Error::new(0, ErrorKind::BadXlMagic));
        }
        if h.byteorder() != BYTEORDER {
            return Err(Error::new(
                field::BYTEORDER.start as u64,
                ErrorKind::BadXlByteOrder(h.byteorder()),
            ));
        }
        let bad = h.mandatory_flags() & !FLAGS_KNOWN;
        if bad != 0 {
            return Err(Error::new(
                field::MANDATORY.start as u64,
                ErrorKind::UnknownXlMandatoryFlags(bad),
            ));
        }
        Ok(HeaderRepr {
            mandatory_flags: h.mandatory_flags(),
            optional_flags: h.optional_flags(),
            optional_data_len: h.optional_data_len(),
        })
    }
    /// Octets [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) -> Result<()> {
        need_out(h.buffer.as_ref(), HEADER_LEN)?;
        h.set_magic();
        h.set_byteorder(BYTEORDER);
        h.set_mandatory_flags(self.mandatory_flags);
        h.set_optional_flags(self.optional_flags);
        h.set_optional_data_len(self.optional_data_len);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// `xl save` of a domain whose JSON config is "{}\0".
    static BYTES: [u8; 55] = [
        b'X', b'e', b'n', b' ', b's', b'a', b'v', b'e', b'd', b' ', b'd', b'o', b'm', b'a', b'i',
        b'n', b',', b' ', b'x', b'l', b' ', b'f', b'o', b'r', b'm', b'a', b't', b'\n', b' ', 0,
        b' ', b'\r', //
        0x04, 0x03, 0x02, 0x01, // byte order
        0x03, 0x00, 0x00, 0x00, // STREAMv2 | JSON
        0x00, 0x00, 0x00, 0x00, // optional flags
        0x07, 0x00, 0x00, 0x00, // 7 octets of optional data
        0x03, 0x00, 0x00, 0x00, b'{', b'}', 0, // config length 3, "{}\0"
    ];

    #[test]
    fn test_parse_emit() {
        let h = Header::new_checked(&BYTES[..]).unwrap();
        let r = HeaderRepr::parse(&h).unwrap();
        assert_eq!(r, HeaderRepr::for_config(3));
        assert!(r.json() && r.stream_v2());
        let mut out = [0u8; 48];
        r.emit(&mut Header::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out[..], BYTES[..48]);
    }

    #[test]
    fn test_rejects() {
        let mut b = BYTES;
        b[29] = b' ';
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&b[..])).unwrap_err(),
            Error::new(0, ErrorKind::BadXlMagic)
        );
        let mut b = BYTES;
        b[32..36].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&b[..])).unwrap_err(),
            Error::new(32, ErrorKind::BadXlByteOrder(0x04030201))
        );
        let mut b = BYTES;
        b[36] = 0x07;
        assert_eq!(
            HeaderRepr::parse(&Header::new_unchecked(&b[..])).unwrap_err(),
            Error::new(36, ErrorKind::UnknownXlMandatoryFlags(4))
        );
        assert_eq!(
            Header::new_checked(&BYTES[..47]).unwrap_err().kind,
            ErrorKind::Truncated
        );
    }
}
