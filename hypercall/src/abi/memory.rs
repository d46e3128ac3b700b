//! `xen/memory.h`: `memory_op` commands and `xen_memory_reservation`.

use super::xen::{DomId, GuestHandle};
use crate::plain::plain_data;

/// `memory_op` commands (`XENMEM_*`).
pub mod cmd {
    /// `XENMEM_increase_reservation`
    pub const INCREASE_RESERVATION: u32 = 0;
    /// `XENMEM_decrease_reservation`
    pub const DECREASE_RESERVATION: u32 = 1;
    /// `XENMEM_maximum_ram_page`
    pub const MAXIMUM_RAM_PAGE: u32 = 2;
    /// `XENMEM_current_reservation`
    pub const CURRENT_RESERVATION: u32 = 3;
    /// `XENMEM_maximum_reservation`
    pub const MAXIMUM_RESERVATION: u32 = 4;
    /// `XENMEM_machphys_mfn_list`
    pub const MACHPHYS_MFN_LIST: u32 = 5;
    /// `XENMEM_populate_physmap`
    pub const POPULATE_PHYSMAP: u32 = 6;
    /// `XENMEM_memory_map`
    pub const MEMORY_MAP: u32 = 9;
    /// `XENMEM_maximum_gpfn`: the argument is a `domid_t`; the result is the
    /// highest GPFN.
    pub const MAXIMUM_GPFN: u32 = 14;

    /// The C name of a command without its `XENMEM_` prefix, for messages.
    pub const fn name(cmd: u32) -> Option<&'static str> {
        Some(match cmd {
            INCREASE_RESERVATION => "increase_reservation",
            DECREASE_RESERVATION => "decrease_reservation",
            MAXIMUM_RAM_PAGE => "maximum_ram_page",
            CURRENT_RESERVATION => "current_reservation",
            MAXIMUM_RESERVATION => "maximum_reservation",
            MACHPHYS_MFN_LIST => "machphys_mfn_list",
            POPULATE_PHYSMAP => "populate_physmap",
            MEMORY_MAP => "memory_map",
            MAXIMUM_GPFN => "maximum_gpfn",
            _ => return None,
        })
    }
}

/// `XENMEMF_*` bits of [`MemoryReservation::mem_flags`].
pub mod memf {
    /// `XENMEMF_populate_on_demand`
    pub const POPULATE_ON_DEMAND: u32 = 1 << 16;
    /// `XENMEMF_exact_node_request`
    pub const EXACT_NODE_REQUEST: u32 = 1 << 17;
    /// `XENMEMF_vnode`
    pub const VNODE: u32 = 1 << 18;
    /// `XENMEMF_address_bits(x)`
    pub const fn address_bits(bits: u32) -> u32 {
        bits & 0xff
    }
    /// `XENMEMF_node(n)`
    pub const fn node(n: u32) -> u32 {
        (n + 1) << 8
    }
}

/// `struct xen_memory_reservation` (`XENMEM_{increase,decrease}_reservation`,
/// `XENMEM_populate_physmap`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReservation {
    /// `xen_pfn_t[nr_extents]`: for populate_physmap, GPFNs in, GMFNs out.
    pub extent_start: GuestHandle,
    /// Number of extents.
    pub nr_extents: u64,
    /// Each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*` ([`memf`]).
    pub mem_flags: u32,
    /// The domain whose reservation changes.
    pub domid: DomId,
    /// Implicit C tail padding.
    pub _pad0: [u16; 3],
}

plain_data! {
    MemoryReservation { extent_start, nr_extents, extent_order, mem_flags, domid, _pad0 }
}

const _: () = assert!(core::mem::size_of::<MemoryReservation>() == 32);
