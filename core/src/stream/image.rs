//! libxc image header: the first 24 octets of a libxc stream, big-endian.
//!
//! ```text
//!  0     1     2     3     4     5     6     7 octet
//! +-------------------------------------------------+
//! | marker                                          |
//! +-----------------------+-------------------------+
//! | id                    | version                 |
//! +-----------+-----------+-------------------------+
//! | options   | (reserved)                          |
//! +-----------+-------------------------------------+
//! ```

use super::bytes::{be_u16, be_u32, be_u64, set_be_u16, set_be_u32, set_be_u64};
use super::{need, need_out, Error, ErrorKind, Result};

/// Byte ranges of the image header.
pub mod field {
    use crate::stream::Field;
    /// All ones.
    pub const MARKER: Field = 0..8;
    /// "XENF".
    pub const ID: Field = 8..12;
    /// Spec version.
    pub const VERSION: Field = 12..16;
    /// Option bits.
    pub const OPTIONS: Field = 16..18;
    /// Reserved, zero.
    pub const RES1: Field = 18..20;
    /// Reserved, zero.
    pub const RES2: Field = 20..24;
}

/// Length of the image header (`sizeof(struct xc_sr_ihdr)`).
pub const HEADER_LEN: usize = field::RES2.end;
const _: () = assert!(HEADER_LEN == 24);

/// `IHDR_MARKER`.
pub const MARKER: u64 = 0xFFFF_FFFF_FFFF_FFFF;
/// `IHDR_ID`, "XENF".
pub const ID: u32 = 0x5845_4E46;
/// The version Xen's saver writes today.
pub const VERSION_3: u32 = 3;
/// The version before STATIC_DATA_END existed.
pub const VERSION_2: u32 = 2;
/// Option bit 0: the stream is big-endian.
pub const OPT_BIG_ENDIAN: u16 = 1 << 0;
/// Option bits that are reserved.
pub const OPT_RESERVED: u16 = !OPT_BIG_ENDIAN;

/// A view of an image header.
#[derive(Debug, Clone)]
pub struct ImageHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ImageHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        ImageHeader { buffer }
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
    /// The marker field.
    pub fn marker(&self) -> u64 {
        be_u64(self.buffer.as_ref(), field::MARKER)
    }
    /// The id field.
    pub fn id(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::ID)
    }
    /// The version field.
    pub fn version(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::VERSION)
    }
    /// The options field.
    pub fn options(&self) -> u16 {
        be_u16(self.buffer.as_ref(), field::OPTIONS)
    }
    /// Both reserved fields as one value (zero on a well-formed header).
    pub fn reserved(&self) -> u64 {
        let b = self.buffer.as_ref();
        (u64::from(be_u16(b, field::RES1)) << 32) | u64::from(be_u32(b, field::RES2))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ImageHeader<T> {
    /// Sets the marker field.
    pub fn set_marker(&mut self, v: u64) {
        set_be_u64(self.buffer.as_mut(), field::MARKER, v)
    }
    /// Sets the id field.
    pub fn set_id(&mut self, v: u32) {
        set_be_u32(self.buffer.as_mut(), field::ID, v)
    }
    /// Sets the version field.
    pub fn set_version(&mut self, v: u32) {
        set_be_u32(self.buffer.as_mut(), field::VERSION, v)
    }
    /// Sets the options field.
    pub fn set_options(&mut self, v: u16) {
        set_be_u16(self.buffer.as_mut(), field::OPTIONS, v)
    }
    /// Zeroes both reserved fields.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        set_be_u16(b, field::RES1, 0);
        set_be_u32(b, field::RES2, 0);
    }
}

/// The meaning of an image header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeaderRepr {
    /// 2 or 3.
    pub version: u32,
    /// Option bit 0.
    pub big_endian: bool,
}

impl ImageHeaderRepr {
    /// What Xen's saver writes: version 3, little-endian.
    pub const CURRENT: Self = ImageHeaderRepr {
        version: VERSION_3,
        big_endian: false,
    };

    /// Reads a header: marker, id and version 2..=3 are checked; reserved
    /// bits are ignored as the spec asks (the reader's strict mode checks
    /// them). Errors are at the offending field's offset.
    pub fn parse<T: AsRef<[u8]>>(h: &ImageHeader<T>) -> Result<Self> {
        h.check_len()?;
        if h.marker() != MARKER {
            return Err(Error::new(field::MARKER.start as u64, ErrorKind::BadMarker));
        }
        if h.id() != ID {
            return Err(Error::new(
                field::ID.start as u64,
                ErrorKind::BadImageId(h.id()),
            ));
        }
        let version = h.version();
        if !(VERSION_2..=VERSION_3).contains(&version) {
            return Err(Error::new(
                field::VERSION.start as u64,
                ErrorKind::UnsupportedVersion(version),
            ));
        }
        Ok(ImageHeaderRepr {
            version,
            big_endian: h.options() & OPT_BIG_ENDIAN != 0,
        })
    }

    /// Octets [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header, reserved fields zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut ImageHeader<T>) -> Result<()> {
        need_out(h.buffer.as_ref(), HEADER_LEN)?;
        h.set_marker(MARKER);
        h.set_id(ID);
        h.set_version(self.version);
        h.set_options(if self.big_endian { OPT_BIG_ENDIAN } else { 0 });
        h.clear_reserved();
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Xen 4.17's saver: version 3, little-endian.
    static BYTES: [u8; 24] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // marker
        0x58, 0x45, 0x4e, 0x46, // "XENF"
        0x00, 0x00, 0x00, 0x03, // version 3
        0x00, 0x00, // options: little-endian
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn test_deconstruct() {
        let h = ImageHeader::new_checked(&BYTES[..]).unwrap();
        assert_eq!(h.marker(), MARKER);
        assert_eq!(h.id(), 0x58454e46);
        assert_eq!(h.version(), 3);
        assert_eq!(h.options(), 0);
        assert_eq!(h.reserved(), 0);
    }

    #[test]
    fn test_parse_emit() {
        let r = ImageHeaderRepr::parse(&ImageHeader::new_unchecked(&BYTES[..])).unwrap();
        assert_eq!(r, ImageHeaderRepr::CURRENT);
        let mut out = [0xaau8; 24];
        r.emit(&mut ImageHeader::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, BYTES);
    }

    #[test]
    fn test_version_2_and_big_endian() {
        let mut b = BYTES;
        b[15] = 2;
        b[17] = 1;
        let r = ImageHeaderRepr::parse(&ImageHeader::new_unchecked(&b[..])).unwrap();
        assert_eq!(
            r,
            ImageHeaderRepr {
                version: 2,
                big_endian: true
            }
        );
    }

    #[test]
    fn test_rejects() {
        let mut b = BYTES;
        b[3] = 0xfe;
        let e = ImageHeaderRepr::parse(&ImageHeader::new_unchecked(&b[..])).unwrap_err();
        assert_eq!(e, Error::new(0, ErrorKind::BadMarker));
        let mut b = BYTES;
        b[8] = b'Y';
        let e = ImageHeaderRepr::parse(&ImageHeader::new_unchecked(&b[..])).unwrap_err();
        assert_eq!(e, Error::new(8, ErrorKind::BadImageId(0x5945_4e46)));
        let mut b = BYTES;
        b[15] = 4;
        let e = ImageHeaderRepr::parse(&ImageHeader::new_unchecked(&b[..])).unwrap_err();
        assert_eq!(e, Error::new(12, ErrorKind::UnsupportedVersion(4)));
        let e = ImageHeader::new_checked(&BYTES[..23]).unwrap_err();
        assert_eq!(e, Error::new(23, ErrorKind::Truncated));
        let mut small = [0u8; 10];
        let e = ImageHeaderRepr::CURRENT
            .emit(&mut ImageHeader::new_unchecked(&mut small[..]))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BufferTooSmall);
    }
}
