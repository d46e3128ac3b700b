//! x86-64 PV guest specifics of Xen's migration stream, as pure functions.
//!
//! A PV guest sees machine frames (mfns) directly: its page tables, its
//! `cr3` and its p2m table hold mfns, which mean nothing on another host.
//! The sender therefore rewrites them into guest pfns before they go on the
//! wire ("normalise", Xen's `normalise_pagetable` in
//! `tools/libs/guest/xg_sr_save_x86_pv.c`), and the receiver rewrites pfns
//! back into the mfns it allocated ("localise", `x86_pv_localise_page` in
//! `xg_sr_restore_x86_pv.c`). Xen's stream specification
//! (`docs/specs/libxc-migration-stream.pandoc`) does not describe this
//! rewriting at all; the rules below come from reading Xen 4.17's code.
//!
//! Everything here works on caller-provided slices and needs no allocator.
//! The frame lookups go through [`FrameMap`], which the host implements
//! (or builds as a [`SortedFrames`] over the guest's p2m).
//!
//! # Facts taken from Xen 4.17 (restated, not copied)
//!
//! - A page-table entry is 64 bits, little-endian; 512 fit in a 4 KiB page.
//!   Bit 0 is "present"; bit 7 ([`PAGE_PSE`]) marks a superpage above L1;
//!   bits 12..=51 ([`PTE_FRAME_MASK`]) hold the frame. Xen's `merge_pte`
//!   swaps only those bits, so flags, the available bits 52..=62 and NX
//!   (bit 63) pass through unchanged.
//! - Entries that are not present are copied as they are, even if their
//!   other bits are non-zero (Xen may use them, e.g. for swap entries).
//! - For 64-bit guests only the L4 table holds hypervisor mappings: the
//!   slots covering `HYPERVISOR_VIRT_START_X86_64` (`0xffff_8000_0000_0000`)
//!   to `HYPERVISOR_VIRT_END_X86_64` (`0xffff_87ff_ffff_ffff`), defined in
//!   `xg_sr_common_x86_pv.h`, i.e. slots 256..=271 with the L4 shift of 39.
//!   The sender zeroes them; Xen rebuilds them when the table is pinned on
//!   the destination.
//! - A present entry with the PSE bit in an L2, L3 or L4 table is refused
//!   once the guest is paused (Xen: "Cannot migrate superpage", `E2BIG`).
//!   While it runs, such a page is deferred like one naming a foreign
//!   frame: a page typed as a table when its type was read may have been
//!   freed and refilled with data before it was copied (seen on a real
//!   guest; Xen's saver fails the migration there).
//! - A present entry whose frame is not one of the guest's own
//!   (`mfn_in_pseudophysmap` fails) is a race with the guest while it runs
//!   (Xen returns `EAGAIN`; the saver sends that pfn as `XTAB` in this batch
//!   and re-sends it from its "deferred" set once the guest is paused), and
//!   a hard error (`ERANGE`) once the guest is paused.
//! - `cr3` of a 64-bit guest is the frame shifted left by 12
//!   (`xen_pfn_to_cr3`/`xen_cr3_to_pfn` in `public/arch-x86/xen-x86_64.h`);
//!   the low 12 bits are dropped by the round trip. The guest's user-mode
//!   page table (`ctrlreg[1]`) is sent as `1 | pfn << 12` when non-zero, and
//!   the receiver converts it back only when bit 0 is set.
//! - The p2m is an array of mfns indexed by pfn, `4096 / width` entries per
//!   page (512 for 64-bit guests). X86_PV_P2M_FRAMES carries the pfns of the
//!   pages holding it; Xen's sender always writes `start_pfn = 0` and
//!   `end_pfn = max_pfn`, and the receiver requires the body to be exactly
//!   `8 + 8 * (end / fpp - start / fpp + 1)` octets.
//!
//! See [`pagetable`] for the page-table rules, [`p2m`] for the p2m helpers.

pub mod p2m;
pub mod pagetable;
#[cfg(test)]
mod tests;

use core::fmt;

pub use p2m::{
    fill_by_mfn, frames_per_page, p2m_frames, p2m_frames_record_len, p2m_list_check,
    p2m_list_level_range, p2m_tree_shape, p2m_tree_trim_max_pfn, validate_tree_mfns,
    write_p2m_frames_record, P2mTreeShape, SortedFrames,
};
pub use pagetable::{
    cr3_to_pfn, localise_cr3, localise_page_table, localise_user_cr3, normalise_cr3,
    normalise_page_table, normalise_user_cr3, pfn_to_cr3, pfns_to_populate, Counts, Mode,
    Normalised,
};

/// Page size of x86 guests.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Page-table entries in one page (8 octets each).
pub const PTES_PER_PAGE: usize = PAGE_SIZE / 8;
/// The frame bits of a page-table entry: 12..=51 (Xen's `PTE_FRAME_MASK`).
pub const PTE_FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Present bit of a page-table entry (`_PAGE_PRESENT`).
pub const PAGE_PRESENT: u64 = 0x001;
/// Superpage bit of an L2/L3 entry (`_PAGE_PSE`).
pub const PAGE_PSE: u64 = 0x080;
/// "No frame" in a p2m (`INVALID_MFN`, all ones).
pub const INVALID_MFN: u64 = !0;
/// Largest frame number a page-table entry or `cr3` can hold.
pub const MAX_FRAME: u64 = PTE_FRAME_MASK >> PAGE_SHIFT;

/// First virtual address Xen reserves in a 64-bit PV guest.
pub const HYPERVISOR_VIRT_START_X86_64: u64 = 0xffff_8000_0000_0000;
/// Last virtual address Xen reserves in a 64-bit PV guest (inclusive).
pub const HYPERVISOR_VIRT_END_X86_64: u64 = 0xffff_87ff_ffff_ffff;
/// Shift of the L4 index in a virtual address.
pub const L4_PAGETABLE_SHIFT: u32 = 39;
/// First L4 slot that belongs to Xen in a 64-bit PV guest.
pub const XEN_L4_FIRST_SLOT: usize =
    ((HYPERVISOR_VIRT_START_X86_64 >> L4_PAGETABLE_SHIFT) & 511) as usize;
/// Last L4 slot that belongs to Xen in a 64-bit PV guest (inclusive).
pub const XEN_L4_LAST_SLOT: usize =
    ((HYPERVISOR_VIRT_END_X86_64 >> L4_PAGETABLE_SHIFT) & 511) as usize;
const _: () = assert!(XEN_L4_FIRST_SLOT == 256 && XEN_L4_LAST_SLOT == 271);

/// Lookups between the guest's machine frames and its pfns.
///
/// The host builds this from the guest's p2m (on save) or from the frames
/// it populated (on restore). Both directions answer `None` for anything
/// that is not one of this guest's own frames; an implementation must keep
/// the two consistent (`pfn_to_mfn(mfn_to_pfn(m)?) == Some(m)`), which is
/// what Xen's `mfn_in_pseudophysmap` checks through the m2p and p2m.
pub trait FrameMap {
    /// The guest pfn backed by `mfn`, if `mfn` is one of the guest's frames.
    fn mfn_to_pfn(&self, mfn: u64) -> Option<u64>;
    /// The machine frame backing `pfn`, if `pfn` is in range and populated.
    fn pfn_to_mfn(&self, pfn: u64) -> Option<u64>;
}

impl<T: FrameMap + ?Sized> FrameMap for &T {
    fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        (**self).mfn_to_pfn(mfn)
    }
    fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        (**self).pfn_to_mfn(pfn)
    }
}

/// Errors of the PV helpers. `slot` is the entry index in the page (0..512)
/// or the index in the caller's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PvError {
    /// The page-table level is not 1..=4.
    BadLevel(u8),
    /// The guest width is neither 4 nor 8 octets.
    BadWidth(u8),
    /// A present entry above L1 has the PSE bit: PV superpages cannot migrate.
    Superpage {
        /// Table level (2..=4).
        level: u8,
        /// Entry index.
        slot: u16,
        /// The whole entry.
        pte: u64,
    },
    /// A present entry (or `cr3`, or p2m frame) names a frame that is not the
    /// guest's own, while the guest is paused.
    ForeignFrame {
        /// Entry index (0 for `cr3`).
        slot: u16,
        /// The machine frame found.
        mfn: u64,
    },
    /// A pfn on the restore side is out of range or not populated.
    UnmappedPfn {
        /// Entry index (0 for `cr3`).
        slot: u16,
        /// The pfn found.
        pfn: u64,
    },
    /// A present entry sits in one of Xen's L4 slots on the restore side
    /// (Xen's sender always zeroes them).
    XenSlotPresent {
        /// Entry index (256..=271).
        slot: u16,
    },
    /// A frame number does not fit in a page-table entry or `cr3`.
    FrameTooLarge(u64),
    /// The caller's buffer is too small.
    BufferTooSmall {
        /// Octets or entries needed.
        need: usize,
        /// Octets or entries given.
        have: usize,
    },
    /// The number of p2m frames given does not match the pfn range.
    FrameCountMismatch {
        /// Frames the range needs.
        expected: u64,
        /// Frames given.
        got: usize,
    },
    /// `start_pfn > end_pfn`.
    RangeInverted {
        /// First pfn.
        start: u64,
        /// Last pfn.
        end: u64,
    },
    /// The p2m is too large for a 3-level tree (more than `fpp` frame-list
    /// pages), or empty.
    P2mSize(u64),
    /// A frame-list-list or frame-list entry is 0 or above the host's
    /// largest mfn (Xen's "Bad mfn ... in p2m frame list").
    BadTreeMfn {
        /// Index in the list.
        index: usize,
        /// The value found.
        mfn: u64,
    },
    /// The linear p2m's virtual range is not canonical, wraps, or overlaps
    /// Xen's reserved range.
    BadP2mVaddr {
        /// First virtual address of the list.
        start: u64,
        /// Last virtual address of the list.
        end: u64,
    },
}

impl fmt::Display for PvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PvError::BadLevel(l) => write!(f, "page-table level {l} is not 1..=4"),
            PvError::BadWidth(w) => write!(f, "guest width {w} is neither 4 nor 8"),
            PvError::Superpage { level, slot, pte } => {
                write!(f, "cannot migrate superpage L{level}[{slot}] = {pte:#018x}")
            }
            PvError::ForeignFrame { slot, mfn } => {
                write!(f, "entry {slot}: mfn {mfn:#x} is not the guest's")
            }
            PvError::UnmappedPfn { slot, pfn } => {
                write!(
                    f,
                    "entry {slot}: pfn {pfn:#x} is out of range or unpopulated"
                )
            }
            PvError::XenSlotPresent { slot } => {
                write!(f, "L4 entry {slot} is Xen's but present in the stream")
            }
            PvError::FrameTooLarge(x) => write!(f, "frame {x:#x} does not fit an entry"),
            PvError::BufferTooSmall { need, have } => {
                write!(f, "buffer too small: need {need}, have {have}")
            }
            PvError::FrameCountMismatch { expected, got } => {
                write!(f, "p2m frames: range needs {expected}, got {got}")
            }
            PvError::RangeInverted { start, end } => {
                write!(f, "pfn range inverted: start {start:#x} > end {end:#x}")
            }
            PvError::P2mSize(n) => write!(f, "p2m size {n:#x} unsupported by the p2m tree"),
            PvError::BadTreeMfn { index, mfn } => {
                write!(f, "bad mfn {mfn:#x} at index {index} of the p2m tree")
            }
            PvError::BadP2mVaddr { start, end } => {
                write!(f, "bad linear p2m range {start:#x}-{end:#x}")
            }
        }
    }
}

impl core::error::Error for PvError {}
