//! Bodies of the x86 records shared by PV and HVM: X86_TSC_INFO,
//! HVM_PARAMS, and the entry sizes of X86_CPUID_POLICY / X86_MSR_POLICY.

use super::bytes::{le_u32, le_u64, set_le_u32, set_le_u64};
use super::{need, need_out, Result};

/// Byte ranges of X86_TSC_INFO.
pub mod tsc_field {
    use crate::stream::Field;
    /// `TSC_MODE_*`.
    pub const MODE: Field = 0..4;
    /// Frequency in kHz.
    pub const KHZ: Field = 4..8;
    /// Elapsed nanoseconds.
    pub const NSEC: Field = 8..16;
    /// Incarnation.
    pub const INCARNATION: Field = 16..20;
    /// Reserved, zero.
    pub const RES1: Field = 20..24;
}

/// Body length of X86_TSC_INFO.
pub const TSC_INFO_LEN: usize = tsc_field::RES1.end;
const _: () = assert!(TSC_INFO_LEN == 24);

/// X86_TSC_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TscInfoRepr {
    /// TSC mode.
    pub mode: u32,
    /// Frequency in kHz.
    pub khz: u32,
    /// Elapsed nanoseconds.
    pub nsec: u64,
    /// Incarnation.
    pub incarnation: u32,
}

impl TscInfoRepr {
    /// Reads the body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        need(body, TSC_INFO_LEN)?;
        Ok(TscInfoRepr {
            mode: le_u32(body, tsc_field::MODE),
            khz: le_u32(body, tsc_field::KHZ),
            nsec: le_u64(body, tsc_field::NSEC),
            incarnation: le_u32(body, tsc_field::INCARNATION),
        })
    }
    /// Body octets.
    pub const fn buffer_len(&self) -> usize {
        TSC_INFO_LEN
    }
    /// Writes the body, reserved zeroed.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, TSC_INFO_LEN)?;
        set_le_u32(out, tsc_field::MODE, self.mode);
        set_le_u32(out, tsc_field::KHZ, self.khz);
        set_le_u64(out, tsc_field::NSEC, self.nsec);
        set_le_u32(out, tsc_field::INCARNATION, self.incarnation);
        set_le_u32(out, tsc_field::RES1, 0);
        Ok(())
    }
}

/// Byte ranges of the fixed part of HVM_PARAMS.
pub mod hvm_params_field {
    use crate::stream::Field;
    /// Number of entries.
    pub const COUNT: Field = 0..4;
    /// Reserved, zero.
    pub const RES1: Field = 4..8;
    /// First entry (index u64, value u64).
    pub const ENTRIES: usize = 8;
}

/// Length of the fixed part of HVM_PARAMS.
pub const HVM_PARAMS_HEADER_LEN: usize = hvm_params_field::ENTRIES;
/// Length of one HVM_PARAMS entry.
pub const HVM_PARAM_LEN: usize = 16;

/// The fixed part of HVM_PARAMS; `count` entries follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvmParamsRepr {
    /// Number of entries.
    pub count: u32,
}

impl HvmParamsRepr {
    /// Reads the fixed part.
    pub fn parse(body: &[u8]) -> Result<Self> {
        need(body, HVM_PARAMS_HEADER_LEN)?;
        Ok(HvmParamsRepr {
            count: le_u32(body, hvm_params_field::COUNT),
        })
    }
    /// Body length for this count.
    pub const fn body_len(&self) -> u64 {
        HVM_PARAMS_HEADER_LEN as u64 + HVM_PARAM_LEN as u64 * self.count as u64
    }
    /// Fixed octets.
    pub const fn buffer_len(&self) -> usize {
        HVM_PARAMS_HEADER_LEN
    }
    /// Writes the fixed part.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, HVM_PARAMS_HEADER_LEN)?;
        set_le_u32(out, hvm_params_field::COUNT, self.count);
        set_le_u32(out, hvm_params_field::RES1, 0);
        Ok(())
    }
}

/// One HVM parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvmParam {
    /// `HVM_PARAM_*` index.
    pub index: u64,
    /// Its value.
    pub value: u64,
}

impl HvmParam {
    /// Reads an entry.
    pub fn parse(b: &[u8]) -> Result<Self> {
        need(b, HVM_PARAM_LEN)?;
        Ok(HvmParam {
            index: le_u64(b, 0..8),
            value: le_u64(b, 8..16),
        })
    }
    /// Writes an entry.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        need_out(out, HVM_PARAM_LEN)?;
        set_le_u64(out, 0..8, self.index);
        set_le_u64(out, 8..16, self.value);
        Ok(())
    }
}

/// Size of `xen_cpuid_leaf_t` (six u32): X86_CPUID_POLICY is an array of them.
pub const CPUID_LEAF_LEN: usize = 24;
/// Size of `xen_msr_entry_t` (u32 idx, u32 flags, u64 val): X86_MSR_POLICY
/// is an array of them.
pub const MSR_ENTRY_LEN: usize = 16;

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_tsc() {
        let bytes: [u8; 24] = [
            0x00, 0x00, 0x00, 0x00, // mode 0 (default)
            0x40, 0x42, 0x0f, 0x00, // 1 000 000 kHz
            0x00, 0xe4, 0x0b, 0x54, 0x02, 0x00, 0x00, 0x00, // 10 s
            0x02, 0x00, 0x00, 0x00, // incarnation 2
            0x00, 0x00, 0x00, 0x00,
        ];
        let r = TscInfoRepr::parse(&bytes).unwrap();
        assert_eq!(
            r,
            TscInfoRepr {
                mode: 0,
                khz: 1_000_000,
                nsec: 10_000_000_000,
                incarnation: 2
            }
        );
        let mut out = [0xffu8; 24];
        r.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn test_hvm_params() {
        let bytes: [u8; 24] = [
            0x01, 0, 0, 0, 0, 0, 0, 0, // count 1
            0x01, 0, 0, 0, 0, 0, 0, 0, // HVM_PARAM_STORE_PFN
            0x00, 0xf0, 0x0f, 0, 0, 0, 0, 0, // 0xff000
        ];
        let r = HvmParamsRepr::parse(&bytes).unwrap();
        assert_eq!(r.count, 1);
        assert_eq!(r.body_len(), 24);
        let p = HvmParam::parse(&bytes[8..]).unwrap();
        assert_eq!(
            p,
            HvmParam {
                index: 1,
                value: 0xff000
            }
        );
        let mut out = [0xffu8; 24];
        r.emit(&mut out).unwrap();
        p.emit(&mut out[8..]).unwrap();
        assert_eq!(out, bytes);
    }
}
