//! Linux's `include/uapi/xen/privcmd.h`: the ioctls of `/dev/xen/privcmd`.

use crate::plain::plain_data;

/// `_IOC(_IOC_NONE, 'P', nr, size)`: privcmd's ioctls carry no direction
/// bits.
const fn ioc_none(nr: u32, size: usize) -> u32 {
    // _IOC_NRSHIFT 0, _IOC_TYPESHIFT 8, _IOC_SIZESHIFT 16, _IOC_NONE 0.
    ((size as u32) << 16) | ((b'P' as u32) << 8) | nr
}

/// `struct privcmd_hypercall`: the argument of [`IOCTL_PRIVCMD_HYPERCALL`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivcmdHypercall {
    /// Hypercall number (`__HYPERVISOR_*`).
    pub op: u64,
    /// Its arguments.
    pub arg: [u64; 5],
}

/// `struct privcmd_mmapbatch_v2`: the argument of
/// [`IOCTL_PRIVCMD_MMAPBATCH_V2`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivcmdMmapBatchV2 {
    /// Number of pages.
    pub num: u32,
    /// Target domain.
    pub dom: u16,
    /// Implicit C padding.
    pub _pad0: u16,
    /// Start of the mapping (an `mmap` of the privcmd fd).
    pub addr: u64,
    /// `const xen_pfn_t *`: the frames to map.
    pub arr: u64,
    /// `int *`: per-page results (0 or a negative errno).
    pub err: u64,
}

/// `IOCTL_PRIVCMD_HYPERCALL`:
/// `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))`.
pub const IOCTL_PRIVCMD_HYPERCALL: u32 = ioc_none(0, core::mem::size_of::<PrivcmdHypercall>());

/// `IOCTL_PRIVCMD_MMAPBATCH_V2`:
/// `_IOC(_IOC_NONE, 'P', 4, sizeof(struct privcmd_mmapbatch_v2))`.
pub const IOCTL_PRIVCMD_MMAPBATCH_V2: u32 = ioc_none(4, core::mem::size_of::<PrivcmdMmapBatchV2>());

plain_data! {
    PrivcmdHypercall { op, arg }
    PrivcmdMmapBatchV2 { num, dom, _pad0, addr, arr, err }
}

const _: () = assert!(core::mem::size_of::<PrivcmdHypercall>() == 48);
const _: () = assert!(core::mem::size_of::<PrivcmdMmapBatchV2>() == 32);
const _: () = assert!(IOCTL_PRIVCMD_HYPERCALL == 0x0030_5000);
const _: () = assert!(IOCTL_PRIVCMD_MMAPBATCH_V2 == 0x0020_5004);
