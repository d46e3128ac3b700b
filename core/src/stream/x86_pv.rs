//! Bodies of the x86 PV records: X86_PV_INFO, X86_PV_P2M_FRAMES and the
//! common header of X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS}.

use super::bytes::{le_u32, set_le_u32};
use super::{need, need_out, Error, ErrorKind, Result};

/// Byte ranges of X86_PV_INFO.
pub mod pv_info_field {
    use crate::stream::Field;
    /// Guest width in octets (4 or 8).
    pub const GUEST_WIDTH: usize = 0;
    /// Page-table levels (3 or 4).
    pub const PT_LEVELS: usize = 1;
    /// Reserved, zero.
    pub const RES: Field = 2..8;
}

/// Body length of X86_PV_INFO.
pub const PV_INFO_LEN: usize = pv_info_field::RES.end;
const _: () = assert!(PV_INFO_LEN == 8);

/// X86_PV_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvInfoRepr {
    /// Guest width in octets.
    pub guest_width: u8,
    /// Page-table levels.
    pub pt_levels: u8,
}

impl PvInfoRepr {
    /// 64-bit guest, 4 levels.
    pub const X86_64: Self = PvInfoRepr {
        guest_width: 8,
        pt_levels: 4,
    };
    /// 32-bit (PAE) guest, 3 levels.
    pub const X86_32: Self = PvInfoRepr {
        guest_width: 4,
        pt_levels: 3,
    };

    /// Reads the body; the pair must be 4/3 or 8/4, as Xen's
    /// `valid_x86_pv_info_combination` demands. Longer bodies are accepted
    /// like Xen does (only `length < 8` is refused).
    pub fn parse(body: &[u8]) -> Result<Self> {
        need(body, PV_INFO_LEN)?;
        let r = PvInfoRepr {
            guest_width: body[pv_info_field::GUEST_WIDTH],
            pt_levels: body[pv_info_field::PT_LEVELS],
        };
        if r != Self::X86_64 && r != Self::X86_32 {
            return Err(Error::new(
                0,
                ErrorKind::BadPvInfo(r.guest_width, r.pt_levels),
            ));
        }
        Ok(r)
    }
    /// Body octets.
    pub const fn buffer_len(&self) -> usize {
        PV_INFO_LEN
    }
    /// Writes the body, reserved zeroed.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, PV_INFO_LEN)?;
        out[..PV_INFO_LEN].fill(0);
        out[pv_info_field::GUEST_WIDTH] = self.guest_width;
        out[pv_info_field::PT_LEVELS] = self.pt_levels;
        Ok(())
    }
    /// Pfns per p2m frame: page size over guest width.
    pub const fn frames_per_page(&self, page_size: u32) -> u32 {
        if self.guest_width == 0 {
            0
        } else {
            page_size / self.guest_width as u32
        }
    }
}

/// Byte ranges of the fixed part of X86_PV_P2M_FRAMES.
pub mod p2m_field {
    use crate::stream::Field;
    /// First pfn covered.
    pub const START_PFN: Field = 0..4;
    /// Last pfn covered (inclusive).
    pub const END_PFN: Field = 4..8;
    /// First p2m frame pfn (u64 each).
    pub const FRAMES: usize = 8;
}

/// Length of the fixed part of X86_PV_P2M_FRAMES.
pub const P2M_HEADER_LEN: usize = p2m_field::FRAMES;

/// The fixed part of X86_PV_P2M_FRAMES; the frame pfns (u64 each) follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2mFramesRepr {
    /// First pfn of the range.
    pub start_pfn: u32,
    /// Last pfn of the range (inclusive).
    pub end_pfn: u32,
}

impl P2mFramesRepr {
    /// Reads the fixed part; `start <= end` is checked.
    pub fn parse(body: &[u8]) -> Result<Self> {
        need(body, P2M_HEADER_LEN)?;
        let r = P2mFramesRepr {
            start_pfn: le_u32(body, p2m_field::START_PFN),
            end_pfn: le_u32(body, p2m_field::END_PFN),
        };
        if r.start_pfn > r.end_pfn {
            return Err(Error::new(
                0,
                ErrorKind::BadP2mRange(r.start_pfn, r.end_pfn),
            ));
        }
        Ok(r)
    }
    /// Number of frame pfns that must follow, given pfns per frame
    /// (`end / fpp - start / fpp + 1`, as Xen's restorer computes it).
    pub const fn frames(&self, fpp: u32) -> u32 {
        match (
            self.end_pfn.checked_div(fpp),
            self.start_pfn.checked_div(fpp),
        ) {
            (Some(e), Some(s)) => e.saturating_sub(s).saturating_add(1),
            _ => 0,
        }
    }
    /// Fixed octets.
    pub const fn buffer_len(&self) -> usize {
        P2M_HEADER_LEN
    }
    /// Writes the fixed part.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, P2M_HEADER_LEN)?;
        set_le_u32(out, p2m_field::START_PFN, self.start_pfn);
        set_le_u32(out, p2m_field::END_PFN, self.end_pfn);
        Ok(())
    }
}

/// Byte ranges of the vCPU record header.
pub mod vcpu_field {
    use crate::stream::Field;
    /// vCPU id.
    pub const VCPU_ID: Field = 0..4;
    /// Reserved, zero.
    pub const RES1: Field = 4..8;
    /// Start of the context blob.
    pub const CONTEXT: usize = 8;
}

/// Length of the vCPU record header.
pub const VCPU_HEADER_LEN: usize = vcpu_field::CONTEXT;
const _: () = assert!(VCPU_HEADER_LEN == 8);

/// Xen's restorer refuses X86_PV_VCPU_EXTENDED blobs longer than this.
pub const VCPU_EXTENDED_MAX: usize = 128;
/// Xen's restorer refuses non-empty X86_PV_VCPU_XSAVE blobs shorter than this.
pub const VCPU_XSAVE_MIN: usize = 16;
/// X86_PV_VCPU_MSRS blobs are arrays of `xen_domctl_vcpu_msr_t` (16 octets).
pub const VCPU_MSR_ENTRY_LEN: usize = 16;

/// The header of the four vCPU records; the context blob follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuHeaderRepr {
    /// vCPU id.
    pub vcpu_id: u32,
}

impl VcpuHeaderRepr {
    /// Reads the header.
    pub fn parse(body: &[u8]) -> Result<Self> {
        need(body, VCPU_HEADER_LEN)?;
        Ok(VcpuHeaderRepr {
            vcpu_id: le_u32(body, vcpu_field::VCPU_ID),
        })
    }
    /// Header octets.
    pub const fn buffer_len(&self) -> usize {
        VCPU_HEADER_LEN
    }
    /// Writes the header, reserved zeroed.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, VCPU_HEADER_LEN)?;
        set_le_u32(out, vcpu_field::VCPU_ID, self.vcpu_id);
        set_le_u32(out, vcpu_field::RES1, 0);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_pv_info() {
        let bytes = [0x08, 0x04, 0, 0, 0, 0, 0, 0];
        let r = PvInfoRepr::parse(&bytes).unwrap();
        assert_eq!(r, PvInfoRepr::X86_64);
        let mut out = [0xffu8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
        assert_eq!(r.frames_per_page(4096), 512);
        assert_eq!(
            PvInfoRepr::parse(&[0x04, 0x03, 0, 0, 0, 0, 0, 0]),
            Ok(PvInfoRepr::X86_32)
        );
        assert_eq!(
            PvInfoRepr::parse(&[0x08, 0x03, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .kind,
            ErrorKind::BadPvInfo(8, 3)
        );
        assert_eq!(
            PvInfoRepr::parse(&bytes[..7]).unwrap_err().kind,
            ErrorKind::Truncated
        );
    }

    #[test]
    fn test_p2m() {
        // pfns 0..=0x3ff of a 64-bit guest: two frames, 0x1000 and 0x1001.
        let bytes = [
            0x00, 0x00, 0x00, 0x00, 0xff, 0x03, 0x00, 0x00, //
            0x00, 0x10, 0, 0, 0, 0, 0, 0, //
            0x01, 0x10, 0, 0, 0, 0, 0, 0,
        ];
        let r = P2mFramesRepr::parse(&bytes).unwrap();
        assert_eq!(
            r,
            P2mFramesRepr {
                start_pfn: 0,
                end_pfn: 0x3ff
            }
        );
        assert_eq!(r.frames(512), 2);
        let mut out = [0u8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out[..], bytes[..8]);
        let bad = [2, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(
            P2mFramesRepr::parse(&bad).unwrap_err().kind,
            ErrorKind::BadP2mRange(2, 1)
        );
    }

    #[test]
    fn test_vcpu() {
        let bytes = [0x03, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad];
        let r = VcpuHeaderRepr::parse(&bytes).unwrap();
        assert_eq!(r.vcpu_id, 3);
        let mut out = [0xffu8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out[..], bytes[..8]);
    }
}
