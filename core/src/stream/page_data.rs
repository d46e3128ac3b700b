//! PAGE_DATA: a count, one 64-bit word per pfn, then the page contents of
//! the pfns whose type carries data.
//!
//! ```text
//!  0     1     2     3     4     5     6     7 octet
//! +-----------------------+-------------------------+
//! | count (C)             | (reserved)              |
//! +-----------------------+-------------------------+
//! | pfn[0] ... pfn[C-1]                             |
//! +-------------------------------------------------+
//! | page_data[0] ... page_data[N-1]                 |
//! +-------------------------------------------------+
//! ```
//!
//! A pfn word holds the pfn in bits 0–51, reserved zeros in bits 52–59 and
//! the `XEN_DOMCTL_PFINFO_*` type in bits 60–63 (Xen's type constants are
//! already shifted by 28 inside a 32-bit word; the stream shifts them 32
//! further).

use super::bytes::{le_u32, le_u64, set_le_u32, set_le_u64};
use super::{need, need_out, Error, ErrorKind, Result, PAGE_SIZE};

/// Byte ranges of the PAGE_DATA header.
pub mod field {
    use crate::stream::Field;
    /// Number of pfn words.
    pub const COUNT: Field = 0..4;
    /// Reserved, zero.
    pub const RES1: Field = 4..8;
    /// First pfn word; word `i` is at `PFN0 + 8 * i`.
    pub const PFN0: usize = 8;
}

/// Length of the fixed part (`sizeof(struct xc_sr_rec_page_data_header)`).
pub const HEADER_LEN: usize = field::PFN0;
const _: () = assert!(HEADER_LEN == 8);

/// Bits of a pfn word that hold the pfn (`PAGE_DATA_PFN_MASK`).
pub const PFN_MASK: u64 = 0x000f_ffff_ffff_ffff;
/// Bits of a pfn word that are reserved.
pub const RESERVED_MASK: u64 = 0x0ff0_0000_0000_0000;
/// Bits of a pfn word that hold the type (`PAGE_DATA_TYPE_MASK`).
pub const TYPE_MASK: u64 = 0xf000_0000_0000_0000;
/// Shift of the type nibble.
pub const TYPE_SHIFT: u32 = 60;
/// The pinned flag within the type nibble (`XEN_DOMCTL_PFINFO_LPINTAB`).
pub const LPINTAB: u8 = 0x8;

/// A `XEN_DOMCTL_PFINFO_*` page type, the top nibble of a pfn word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageType {
    /// 0x0: normal page.
    NoTab,
    /// 0x1–0x4 (level 1–4) and 0x9–0xC (the same, pinned): page-table page.
    PageTable {
        /// 1 to 4.
        level: u8,
        /// The `LPINTAB` bit.
        pinned: bool,
    },
    /// 0xD: broken page, no data.
    Broken,
    /// 0xE: allocate only, no data.
    XAlloc,
    /// 0xF: invalid page, no data.
    XTab,
    /// 0x5–0x8: reserved; a reader must refuse them.
    Reserved(u8),
}

impl PageType {
    /// The type of a nibble (only the low four bits are used).
    pub const fn from_nibble(n: u8) -> Self {
        match n & 0xf {
            0x0 => PageType::NoTab,
            l @ 0x1..=0x4 => PageType::PageTable {
                level: l,
                pinned: false,
            },
            l @ 0x9..=0xc => PageType::PageTable {
                level: l & 0x7,
                pinned: true,
            },
            0xd => PageType::Broken,
            0xe => PageType::XAlloc,
            0xf => PageType::XTab,
            r => PageType::Reserved(r),
        }
    }

    /// The nibble of a type.
    pub const fn nibble(self) -> u8 {
        match self {
            PageType::NoTab => 0,
            PageType::PageTable { level, pinned } => {
                (level & 0x7) | if pinned { LPINTAB } else { 0 }
            }
            PageType::Broken => 0xd,
            PageType::XAlloc => 0xe,
            PageType::XTab => 0xf,
            PageType::Reserved(r) => r & 0xf,
        }
    }

    /// A page of this type is followed by its contents in the record
    /// (`page_type_has_stream_data`): normal and page-table pages, pinned
    /// or not.
    pub const fn has_data(self) -> bool {
        matches!(self, PageType::NoTab | PageType::PageTable { .. })
    }

    /// The type is one of the spec's table (not 0x5–0x8).
    pub const fn is_known(self) -> bool {
        !matches!(self, PageType::Reserved(_))
    }

    /// Xen's short name (`NOTAB`, `L1TAB`, `L1TAB_PIN`, …).
    pub const fn name(self) -> &'static str {
        const NAMES: [&str; 16] = [
            "NOTAB",
            "L1TAB",
            "L2TAB",
            "L3TAB",
            "L4TAB",
            "RESERVED5",
            "RESERVED6",
            "RESERVED7",
            "RESERVED8",
            "L1TAB_PIN",
            "L2TAB_PIN",
            "L3TAB_PIN",
            "L4TAB_PIN",
            "BROKEN",
            "XALLOC",
            "XTAB",
        ];
        NAMES[(self.nibble() & 0xf) as usize]
    }
}

/// One pfn word of a PAGE_DATA record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PfnEntry {
    /// The pfn, at most 52 bits.
    pub pfn: u64,
    /// Its type.
    pub page_type: PageType,
}

impl PfnEntry {
    /// Splits a word; the reserved bits 52–59 are dropped (see
    /// [`Self::reserved_bits`]).
    pub const fn from_word(w: u64) -> Self {
        PfnEntry {
            pfn: w & PFN_MASK,
            page_type: PageType::from_nibble((w >> TYPE_SHIFT) as u8),
        }
    }
    /// The reserved bits of a word.
    pub const fn reserved_bits(w: u64) -> u64 {
        w & RESERVED_MASK
    }
    /// The word (pfn masked to 52 bits, reserved bits zero).
    pub const fn to_word(self) -> u64 {
        (self.pfn & PFN_MASK) | ((self.page_type.nibble() as u64) << TYPE_SHIFT)
    }
}

/// Body length of a PAGE_DATA record with `count` pfns of which `data_pages`
/// carry data; `None` if it does not fit a `u32`.
pub fn body_len(count: u32, data_pages: u32) -> Option<u32> {
    let len = HEADER_LEN as u64 + 8 * u64::from(count) + PAGE_SIZE as u64 * u64::from(data_pages);
    u32::try_from(len).ok()
}

/// A view of a PAGE_DATA body: header and pfn array (the page data may or
/// may not be in the buffer).
#[derive(Debug, Clone)]
pub struct PageDataHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PageDataHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        PageDataHeader { buffer }
    }
    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }
    /// Fails with `Truncated` unless the buffer holds the header and all
    /// `count` pfn words.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(b, HEADER_LEN)?;
        let words = 8usize.saturating_mul(self.count() as usize);
        need(b, HEADER_LEN.saturating_add(words))
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The count field.
    pub fn count(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::COUNT)
    }
    /// The reserved field.
    pub fn reserved(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::RES1)
    }
    /// Raw pfn word `i` (`i < count`).
    pub fn pfn_word(&self, i: usize) -> u64 {
        let at = field::PFN0 + 8 * i;
        le_u64(self.buffer.as_ref(), at..at + 8)
    }
    /// Pfn entry `i` (`i < count`).
    pub fn pfn(&self, i: usize) -> PfnEntry {
        PfnEntry::from_word(self.pfn_word(i))
    }
    /// How many of the pfns carry page data.
    pub fn data_pages(&self) -> u32 {
        (0..self.count() as usize)
            .filter(|&i| self.pfn(i).page_type.has_data())
            .count() as u32
    }
    /// The page data after the pfn array, as far as the buffer holds it.
    pub fn page_data(&self) -> &[u8] {
        let start = HEADER_LEN.saturating_add(8usize.saturating_mul(self.count() as usize));
        self.buffer.as_ref().get(start..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PageDataHeader<T> {
    /// Sets the count field.
    pub fn set_count(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::COUNT, v)
    }
    /// Sets the reserved field.
    pub fn set_reserved(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::RES1, v)
    }
    /// Sets pfn word `i`.
    pub fn set_pfn(&mut self, i: usize, e: PfnEntry) {
        let at = field::PFN0 + 8 * i;
        set_le_u64(self.buffer.as_mut(), at..at + 8, e.to_word())
    }
}

/// Checks a whole PAGE_DATA body the way Xen's restorer does: count at
/// least 1, known page types, and the exact length for the pfns that carry
/// data. Returns the number of data pages. Offsets are within `body`.
pub fn check_body(body: &[u8]) -> Result<u32> {
    let h = PageDataHeader::new_checked(body)?;
    if h.count() == 0 {
        return Err(Error::new(
            field::COUNT.start as u64,
            ErrorKind::PageDataCountZero,
        ));
    }
    for i in 0..h.count() as usize {
        if let PageType::Reserved(n) = h.pfn(i).page_type {
            return Err(Error::new(
                (field::PFN0 + 8 * i) as u64,
                ErrorKind::BadPageType(n),
            ));
        }
    }
    let pages = h.data_pages();
    let want = body_len(h.count(), pages);
    if want != u32::try_from(body.len()).ok() {
        return Err(Error::new(
            0,
            ErrorKind::BadRecordLength(1, u32::try_from(body.len()).unwrap_or(u32::MAX)),
        ));
    }
    Ok(pages)
}

/// Writes a PAGE_DATA header and pfn array into `out`; returns the octets
/// written (`8 + 8 * pfns.len()`).
pub fn emit_header(pfns: &[PfnEntry], out: &mut [u8]) -> Result<usize> {
    let len = HEADER_LEN + 8 * pfns.len();
    need_out(out, len)?;
    let count = u32::try_from(pfns.len()).map_err(|_| Error::new(0, ErrorKind::BufferTooSmall))?;
    let mut h = PageDataHeader::new_unchecked(&mut out[..len]);
    h.set_count(count);
    h.set_reserved(0);
    for (i, e) in pfns.iter().enumerate() {
        h.set_pfn(i, *e);
    }
    Ok(len)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_types() {
        for n in 0u8..16 {
            let t = PageType::from_nibble(n);
            assert_eq!(t.nibble(), n);
            let data = matches!(n, 0..=4 | 9..=12);
            assert_eq!(t.has_data(), data, "{n:#x}");
            assert_eq!(t.is_known(), !matches!(n, 5..=8));
        }
        assert_eq!(
            PageType::from_nibble(0xa),
            PageType::PageTable {
                level: 2,
                pinned: true
            }
        );
        assert_eq!(PageType::from_nibble(0xc).name(), "L4TAB_PIN");
    }

    #[test]
    fn test_word() {
        // L1TAB_PIN at pfn 0x12345: 0x9 in bits 60..63.
        let w = 0x9000_0000_0001_2345u64;
        let e = PfnEntry::from_word(w);
        assert_eq!(e.pfn, 0x12345);
        assert_eq!(
            e.page_type,
            PageType::PageTable {
                level: 1,
                pinned: true
            }
        );
        assert_eq!(e.to_word(), w);
        assert_eq!(
            PfnEntry::reserved_bits(0x0010_0000_0000_0001),
            0x0010_0000_0000_0000
        );
        assert_eq!(PfnEntry::from_word(0x0010_0000_0000_0001).pfn, 1);
    }

    /// Three pfns: a normal page (data), an XTAB (none), an L2 table (data).
    fn vector() -> [u8; 32 + 2 * PAGE_SIZE] {
        let mut v = [0u8; 32 + 2 * PAGE_SIZE];
        v[..32].copy_from_slice(&[
            0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // count 3
            0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // pfn 0x10 NOTAB
            0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, // pfn 0x11 XTAB
            0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, // pfn 0x12 L2TAB
        ]);
        v[32] = 0xaa;
        v[32 + PAGE_SIZE] = 0xbb;
        v
    }

    #[test]
    fn test_deconstruct() {
        let v = vector();
        let h = PageDataHeader::new_checked(&v[..]).unwrap();
        assert_eq!(h.count(), 3);
        assert_eq!(h.pfn(0).pfn, 0x10);
        assert_eq!(h.pfn(1).page_type, PageType::XTab);
        assert_eq!(h.pfn(2).page_type.nibble(), 2);
        assert_eq!(h.data_pages(), 2);
        assert_eq!(h.page_data()[0], 0xaa);
        assert_eq!(check_body(&v), Ok(2));
    }

    #[test]
    fn test_construct() {
        let v = vector();
        let mut out = [0u8; 32];
        let pfns = [
            PfnEntry::from_word(0x10),
            PfnEntry {
                pfn: 0x11,
                page_type: PageType::XTab,
            },
            PfnEntry {
                pfn: 0x12,
                page_type: PageType::PageTable {
                    level: 2,
                    pinned: false,
                },
            },
        ];
        assert_eq!(emit_header(&pfns, &mut out), Ok(32));
        assert_eq!(&out[..], &v[..32]);
        assert_eq!(body_len(3, 2), Some(32 + 8192));
    }

    #[test]
    fn test_rejects() {
        let v = vector();
        assert_eq!(
            check_body(&v[..v.len() - 1]).unwrap_err().kind,
            ErrorKind::BadRecordLength(1, 8223)
        );
        let mut z = v;
        z[0] = 0;
        assert_eq!(
            check_body(&z).unwrap_err(),
            Error::new(0, ErrorKind::PageDataCountZero)
        );
        let mut r = v;
        r[23] = 0x60;
        assert_eq!(
            check_body(&r).unwrap_err(),
            Error::new(16, ErrorKind::BadPageType(6))
        );
        assert_eq!(
            PageDataHeader::new_checked(&v[..31]).unwrap_err().kind,
            ErrorKind::Truncated
        );
        let mut huge = [0u8; 8];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            PageDataHeader::new_checked(&huge[..]).unwrap_err().kind,
            ErrorKind::Truncated
        );
    }
}
