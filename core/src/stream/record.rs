//! The record header shared by the libxc and libxl layers, and libxc's
//! record types.
//!
//! ```text
//!  0     1     2     3     4     5     6     7 octet
//! +-----------------------+-------------------------+
//! | type                  | body_length             |
//! +-----------+-----------+-------------------------+
//! | body...                                         |
//! |           | padding (0 to 7 octets)             |
//! +-----------+-------------------------------------+
//! ```

use super::bytes::{le_u32, set_le_u32};
use super::{need, need_out, open_enum, padding_len, Result};

/// Byte ranges of the record header.
pub mod field {
    use crate::stream::Field;
    /// Record type.
    pub const TYPE: Field = 0..4;
    /// Body length, without padding.
    pub const LENGTH: Field = 4..8;
}

/// Length of the record header (`sizeof(struct xc_sr_rhdr)`).
pub const HEADER_LEN: usize = field::LENGTH.end;
const _: () = assert!(HEADER_LEN == 8);

/// Bit 31 of a record type: the record may be ignored by a reader that does
/// not know it (`REC_TYPE_OPTIONAL`).
pub const OPTIONAL: u32 = 0x8000_0000;

open_enum! {
    /// libxc record types (`REC_TYPE_*`).
    pub enum RecordType(u32) {
        /// Last record of the stream.
        End = 0x00,
        /// Guest pages.
        PageData = 0x01,
        /// PV guest width and page-table levels.
        X86PvInfo = 0x02,
        /// Frames of a PV guest's p2m.
        X86PvP2mFrames = 0x03,
        /// `XEN_DOMCTL_getvcpucontext` blob.
        X86PvVcpuBasic = 0x04,
        /// `XEN_DOMCTL_get_ext_vcpucontext` blob.
        X86PvVcpuExtended = 0x05,
        /// `XEN_DOMCTL_getvcpuextstate` blob.
        X86PvVcpuXsave = 0x06,
        /// The shared info page.
        SharedInfo = 0x07,
        /// `XEN_DOMCTL_gettscinfo`.
        X86TscInfo = 0x08,
        /// `XEN_DOMCTL_gethvmcontext` blob.
        HvmContext = 0x09,
        /// HVM parameters.
        HvmParams = 0x0a,
        /// Deprecated toolstack blob.
        Toolstack = 0x0b,
        /// `XEN_DOMCTL_get_vcpu_msrs` blob.
        X86PvVcpuMsrs = 0x0c,
        /// Memory is sent again for checking.
        Verify = 0x0d,
        /// End of one consistent checkpoint.
        Checkpoint = 0x0e,
        /// Dirty pfns, secondary to primary (COLO back channel).
        CheckpointDirtyPfnList = 0x0f,
        /// End of the static data (v3).
        StaticDataEnd = 0x10,
        /// Array of `xen_cpuid_leaf_t`.
        X86CpuidPolicy = 0x11,
        /// Array of `xen_msr_entry_t`.
        X86MsrPolicy = 0x12,
    }
}

impl RecordType {
    /// Bit 31 of the code is set: a reader may skip the record.
    pub fn is_optional(self) -> bool {
        u32::from(self) & OPTIONAL != 0
    }

    /// Xen's name for the type (`rec_type_to_str`).
    pub const fn name(self) -> &'static str {
        match self {
            RecordType::End => "END",
            RecordType::PageData => "PAGE_DATA",
            RecordType::X86PvInfo => "X86_PV_INFO",
            RecordType::X86PvP2mFrames => "X86_PV_P2M_FRAMES",
            RecordType::X86PvVcpuBasic => "X86_PV_VCPU_BASIC",
            RecordType::X86PvVcpuExtended => "X86_PV_VCPU_EXTENDED",
            RecordType::X86PvVcpuXsave => "X86_PV_VCPU_XSAVE",
            RecordType::SharedInfo => "SHARED_INFO",
            RecordType::X86TscInfo => "X86_TSC_INFO",
            RecordType::HvmContext => "HVM_CONTEXT",
            RecordType::HvmParams => "HVM_PARAMS",
            RecordType::Toolstack => "TOOLSTACK",
            RecordType::X86PvVcpuMsrs => "X86_PV_VCPU_MSRS",
            RecordType::Verify => "VERIFY",
            RecordType::Checkpoint => "CHECKPOINT",
            RecordType::CheckpointDirtyPfnList => "CHECKPOINT_DIRTY_PFN_LIST",
            RecordType::StaticDataEnd => "STATIC_DATA_END",
            RecordType::X86CpuidPolicy => "X86_CPUID_POLICY",
            RecordType::X86MsrPolicy => "X86_MSR_POLICY",
            RecordType::Unknown(_) => "Reserved",
        }
    }

    /// The four vCPU blob records.
    pub const fn is_vcpu(self) -> bool {
        matches!(
            self,
            RecordType::X86PvVcpuBasic
                | RecordType::X86PvVcpuExtended
                | RecordType::X86PvVcpuXsave
                | RecordType::X86PvVcpuMsrs
        )
    }
}

/// A view of a record header.
#[derive(Debug, Clone)]
pub struct RecordHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RecordHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        RecordHeader { buffer }
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
    /// The raw type code.
    pub fn rtype(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::TYPE)
    }
    /// The body length (without padding).
    pub fn length(&self) -> u32 {
        le_u32(self.buffer.as_ref(), field::LENGTH)
    }
    /// The body (without padding), if the buffer holds all of it.
    pub fn body(&self) -> Option<&[u8]> {
        let len = usize::try_from(self.length()).ok()?;
        self.buffer
            .as_ref()
            .get(HEADER_LEN..HEADER_LEN.checked_add(len)?)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RecordHeader<T> {
    /// Sets the type code.
    pub fn set_rtype(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::TYPE, v)
    }
    /// Sets the body length.
    pub fn set_length(&mut self, v: u32) {
        set_le_u32(self.buffer.as_mut(), field::LENGTH, v)
    }
}

/// The meaning of a record header, for either layer (the code is raw; turn
/// it into [`RecordType`] or [`crate::stream::libxl::RecordType`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeaderRepr {
    /// Type code.
    pub rtype: u32,
    /// Body length without padding.
    pub length: u32,
}

impl RecordHeaderRepr {
    /// Reads a header.
    pub fn parse<T: AsRef<[u8]>>(h: &RecordHeader<T>) -> Result<Self> {
        h.check_len()?;
        Ok(RecordHeaderRepr {
            rtype: h.rtype(),
            length: h.length(),
        })
    }
    /// Octets [`Self::emit`] writes (the header only).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Octets of padding after the body.
    pub const fn padding(&self) -> usize {
        padding_len(self.length)
    }
    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut RecordHeader<T>) -> Result<()> {
        need_out(h.buffer.as_ref(), HEADER_LEN)?;
        h.set_rtype(self.rtype);
        h.set_length(self.length);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::stream::ErrorKind;

    /// X86_TSC_INFO header, 24-octet body.
    static BYTES: [u8; 8] = [0x08, 0, 0, 0, 0x18, 0, 0, 0];

    #[test]
    fn test_parse_emit() {
        let r = RecordHeaderRepr::parse(&RecordHeader::new_unchecked(&BYTES[..])).unwrap();
        assert_eq!(
            r,
            RecordHeaderRepr {
                rtype: 8,
                length: 24
            }
        );
        assert_eq!(RecordType::from(r.rtype), RecordType::X86TscInfo);
        let mut out = [0u8; 8];
        r.emit(&mut RecordHeader::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, BYTES);
        let e = RecordHeader::new_checked(&BYTES[..7]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Truncated);
    }

    #[test]
    fn test_codes() {
        // Every code of the spec's table, in order.
        for code in 0..=0x12u32 {
            let t = RecordType::from(code);
            assert!(!matches!(t, RecordType::Unknown(_)), "{code:#x}");
            assert_eq!(u32::from(t), code);
            assert!(!t.is_optional());
        }
        assert_eq!(RecordType::from(0x13), RecordType::Unknown(0x13));
        assert!(RecordType::from(0x8000_0013).is_optional());
        assert!(!RecordType::Unknown(0x13).is_optional());
        assert_eq!(RecordType::X86MsrPolicy.name(), "X86_MSR_POLICY");
    }

    #[test]
    fn test_body_and_padding() {
        let mut buf = [0u8; 16];
        RecordHeaderRepr {
            rtype: 0x12,
            length: 5,
        }
        .emit(&mut RecordHeader::new_unchecked(&mut buf[..]))
        .unwrap();
        let h = RecordHeader::new_unchecked(&buf[..]);
        assert_eq!(h.body().map(|b| b.len()), Some(5));
        assert_eq!(RecordHeaderRepr::parse(&h).unwrap().padding(), 3);
        assert_eq!(RecordHeader::new_unchecked(&buf[..12]).body(), None);
    }
}
