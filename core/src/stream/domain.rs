//! libxc domain header: 16 octets after the image header, in stream order
//! (little-endian on x86).
//!
//! ```text
//!  0      1     2     3     4     5     6     7 octet
//! +-----------------------+-----------+-------------+
//! | type                  | page_shift| (reserved)  |
//! +-----------------------+-----------+-------------+
//! | xen_major             | xen_minor               |
//! +-----------------------+-------------------------+
//! ```

use super::bytes::{le_u16, le_u32, set_le_u16, set_le_u32};
use super::{need, need_out, open_enum, Result};

/// Byte ranges of the domain header.
pub mod field {
    use crate::stream::Field;
    /// Guest type.
    pub const TYPE: Field = 0..4;
    /// log2 of the page size.
    pub const PAGE_SHIFT: Field = 4..6;
    /// Reserved, zero.
    pub const RES1: Field = 6..8;
    /// Xen major version of the saving host (0: converted legacy stream).
    pub const XEN_MAJOR: Field = 8..12;
    /// Xen minor version.
    pub const XEN_MINOR: Field = 12..16;
}

/// Length of the domain header (`sizeof(struct xc_sr_dhdr)`).
pub const HEADER_LEN: usize = field::XEN_MINOR.end;
const _: () = assert!(HEADER_LEN == 16);

open_enum! {
    /// The guest type of a stream (`DHDR_TYPE_*`). The spec names x86 PV and
    /// x86 HVM; every other value is reserved (no ARM type is defined).
    pub enum DomainType(u32) {
        /// `DHDR_TYPE_X86_PV`.
        X86Pv = 1,
        /// `DHDR_TYPE_X86_HVM`.
        X86Hvm = 2,
    }
}

impl DomainType {
    /// Xen's name for the type.
    pub const fn name(self) -> &'static str {
        match self {
            DomainType::X86Pv => "x86 PV",
            DomainType::X86Hvm => "x86 HVM",
            DomainType::Unknown(_) => "Reserved",
        }
    }
}

/// A view of a domain header.
#[derive(Debug, Clone)]
pub struct DomainHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DomainHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        DomainHeader { buffer }
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
    /// The type field.
    pub fn domain_type(&self) -> DomainType {
        le_u32(self.buffer.as_ref(), field::TYPE).into()
    }
    /// The page_shift field.
    pub fn page_shift(&self) -> u16 {
        le_u16(self.buffer.as_ref(), field::PAGE_SHIFT)
    }
    /// The reserved field.
    pub fn reserved(&self) -> u16 {
        le_u16(self.buffer.as_ref(), field::RES1)
    }
    /// The xen_major field.
    pub fn xen_major(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::XEN_MAJOR)
    }
    /// The xen_minor field.
    pub fn xen_minor(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::XEN_MINOR)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DomainHeader<T> {
    /// Sets the type field.
    pub fn set_domain_type(&mut self, v: DomainType) {
        set_le_u32(self.buffer.as_mut(), field::TYPE, v.into())
    }
    /// Sets the page_shift field.
    pub fn set_page_shift(&mut self, v: u16) {
        set_le_u16(self.buffer.as_mut(), field::PAGE_SHIFT, v)
    }
    /// Sets the reserved field.
    pub fn set_reserved(&mut self, v: u16) {
        set_le_u16(self.buffer.as_mut(), field::RES1, v)
    }
    /// Sets the xen_major field.
    pub fn set_xen_major(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::XEN_MAJOR, v)
    }
    /// Sets the xen_minor field.
    pub fn set_xen_minor(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::XEN_MINOR, v)
    }
}

/// The meaning of a domain header. Parsing keeps unknown types (open enum);
/// the [`crate::stream::reader::Decoder`] refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainHeaderRepr {
    /// Guest type.
    pub domain_type: DomainType,
    /// log2 of the page size (12 on x86).
    pub page_shift: u16,
    /// Xen major version of the saver (0: legacy conversion).
    pub xen_major: u32,
    /// Xen minor version of the saver.
    pub xen_minor: u32,
}

impl DomainHeaderRepr {
    /// Reads a header.
    pub fn parse<T: AsRef<[u8]>>(h: &DomainHeader<T>) -> Result<Self> {
        h.check_len()?;
        Ok(DomainHeaderRepr {
            domain_type: h.domain_type(),
            page_shift: h.page_shift(),
            xen_major: h.xen_major(),
            xen_minor: h.xen_minor(),
        })
    }
    /// Octets [`Self::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes the header, reserved field zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut DomainHeader<T>) -> Result<()> {
        need_out(h.buffer.as_ref(), HEADER_LEN)?;
        h.set_domain_type(self.domain_type);
        h.set_page_shift(self.page_shift);
        h.set_reserved(0);
        h.set_xen_major(self.xen_major);
        h.set_xen_minor(self.xen_minor);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::stream::ErrorKind;

    /// An x86 HVM guest saved by Xen 4.17.
    static BYTES: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, // type: x86 HVM
        0x0c, 0x00, // page_shift 12
        0x00, 0x00, // reserved
        0x04, 0x00, 0x00, 0x00, // xen_major 4
        0x11, 0x00, 0x00, 0x00, // xen_minor 17
    ];

    #[test]
    fn test_parse_emit() {
        let h = DomainHeader::new_checked(&BYTES[..]).unwrap();
        assert_eq!(h.domain_type(), DomainType::X86Hvm);
        let r = DomainHeaderRepr::parse(&h).unwrap();
        assert_eq!(
            r,
            DomainHeaderRepr {
                domain_type: DomainType::X86Hvm,
                page_shift: 12,
                xen_major: 4,
                xen_minor: 17
            }
        );
        let mut out = [0xffu8; 16];
        r.emit(&mut DomainHeader::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, BYTES);
    }

    #[test]
    fn test_open_enum() {
        assert_eq!(DomainType::from(1), DomainType::X86Pv);
        assert_eq!(DomainType::from(7), DomainType::Unknown(7));
        assert_eq!(u32::from(DomainType::Unknown(7)), 7);
        assert_eq!(DomainType::Unknown(3).name(), "Reserved");
        let e = DomainHeader::new_checked(&BYTES[..15]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Truncated);
    }
}
