//! The trait every doorway implements, and the buffers it carries.
//!
//! Code above this crate talks to Xen through [`Hypervisor`] (and the safe
//! wrappers of [`crate::XenOps`]), never through a doorway's own type, so a
//! fake can stand in for Xen in tests.

use crate::abi::domctl::Domctl;
use crate::abi::sysctl::Sysctl;
use crate::abi::xen::{DomId, MmuUpdate, MmuextOp, XenPfn, PAGE_SIZE};
use crate::error::Error;

/// The data behind one guest handle of a hypercall argument.
#[derive(Debug)]
pub enum BufData<'a> {
    /// Xen only reads it.
    In(&'a [u8]),
    /// Xen only writes it.
    Out(&'a mut [u8]),
    /// Xen reads and writes it.
    InOut(&'a mut [u8]),
}

impl BufData<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            BufData::In(b) => b.len(),
            BufData::Out(b) | BufData::InOut(b) => b.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes as Xen should first see them (`Out` buffers start zeroed,
    /// so `None`).
    pub fn input(&self) -> Option<&[u8]> {
        match self {
            BufData::In(b) => Some(b),
            BufData::InOut(b) => Some(b),
            BufData::Out(_) => None,
        }
    }

    /// Where Xen's output goes, if it has any.
    pub fn output(&mut self) -> Option<&mut [u8]> {
        match self {
            BufData::In(_) => None,
            BufData::Out(b) | BufData::InOut(b) => Some(b),
        }
    }
}

/// A caller's buffer and the guest handle that must point at it.
///
/// `slot` is the byte offset of the `u64` handle inside the argument
/// structure (e.g. [`Domctl::union_offset`] of the payload's field). A
/// doorway copies the data into memory Xen can reach, writes that address
/// into the slot, makes the call, copies any output back and restores the
/// slot, so callers never see or handle raw addresses.
///
/// Each buffer must name a handle slot of the call and be at least as long
/// as the payload's counts say Xen may access (e.g. `pages / 8` bytes for a
/// log-dirty bitmap); otherwise the call fails with `EINVAL` before Xen is
/// reached. Slots left unbound are sent as NULL.
#[derive(Debug)]
pub struct GuestBuf<'a> {
    /// Byte offset of the handle in the argument.
    pub slot: usize,
    /// The data.
    pub data: BufData<'a>,
}

impl<'a> GuestBuf<'a> {
    /// A buffer Xen only reads.
    pub fn input(slot: usize, data: &'a [u8]) -> Self {
        GuestBuf {
            slot,
            data: BufData::In(data),
        }
    }
    /// A buffer Xen only writes.
    pub fn output(slot: usize, data: &'a mut [u8]) -> Self {
        GuestBuf {
            slot,
            data: BufData::Out(data),
        }
    }
    /// A buffer Xen reads and writes.
    pub fn in_out(slot: usize, data: &'a mut [u8]) -> Self {
        GuestBuf {
            slot,
            data: BufData::InOut(data),
        }
    }
}

/// How a foreign mapping may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
}

/// Pages of another domain mapped into this one.
///
/// Each page can fail on its own (a hole in the guest's physmap, a paged-out
/// frame): its error is reported when it is used, never by touching it.
pub trait ForeignPages {
    /// Number of pages asked for.
    fn len(&self) -> usize;

    /// Whether no pages were asked for.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The errno page `i` failed to map with, `None` when it is mapped (an
    /// index out of range is `Some(EINVAL)`).
    fn page_error(&self, i: usize) -> Option<i32>;

    /// Copies page `i` into `dst`.
    fn read_page(&self, i: usize, dst: &mut [u8; PAGE_SIZE]) -> Result<(), Error>;

    /// Copies `src` into page `i` (a [`Prot::ReadWrite`] mapping).
    fn write_page(&mut self, i: usize, src: &[u8; PAGE_SIZE]) -> Result<(), Error>;
}

/// A way into Xen: the raw calls, typed by their argument structures.
///
/// Implemented by the Linux privcmd doorway
/// ([`crate::backend::privcmd::Privcmd`]), the hypercall-page doorway
/// (`backend::hypercall_page::HypercallPage`, feature `page`) and
/// the fake (`crate::fake::FakeXen`, feature `fake`). Use the safe typed
/// wrappers of [`crate::XenOps`], which every `Hypervisor` has.
pub trait Hypervisor {
    /// The foreign mappings this doorway makes.
    type Mapping: ForeignPages;

    /// Issues a domctl. The envelope is read and written back (Xen returns
    /// results in it); `bufs` are the buffers its guest handles point to.
    /// On failure, the envelope holds what Xen wrote back.
    ///
    /// Only the commands whose layout this crate knows are issued (the
    /// others fail with `EOPNOTSUPP`): pause/unpause/destroy,
    /// create/getdomaininfo, max_mem, max_vcpus, resumedomain,
    /// setdomainhandle, get/set_address_size, get/settscinfo, getvcpuinfo,
    /// shadow_op, get/setvcpucontext, get/set_ext_vcpucontext,
    /// getpageframeinfo3, get/setvcpuextstate, get/set_vcpu_msrs and
    /// get/set_cpu_policy.
    fn domctl(&self, domctl: &mut Domctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error>;

    /// Issues a sysctl, as [`Hypervisor::domctl`] (physinfo and
    /// getdomaininfolist).
    fn sysctl(&self, sysctl: &mut Sysctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error>;

    /// Issues `memory_op(cmd, arg)`, where `arg` holds the bytes of the
    /// command's argument structure (read and written back); returns Xen's
    /// non-negative result (maximum_gpfn, current/maximum_reservation,
    /// increase/decrease_reservation, populate_physmap).
    fn memory_op(&self, cmd: u32, arg: &mut [u8], bufs: &mut [GuestBuf<'_>]) -> Result<u64, Error>;

    /// Issues `event_channel_op(cmd, arg)`, where `arg` holds the bytes of
    /// the command's argument structure (read and written back); returns
    /// Xen's non-negative result.
    ///
    /// Only `EVTCHNOP_alloc_unbound` is issued (others fail with
    /// `EOPNOTSUPP`, see [`crate::calls::event_channel_op_handles`]).
    fn event_channel_op(&self, cmd: u32, arg: &mut [u8]) -> Result<u64, Error>;

    /// Issues `grant_table_op(cmd, arg, 1)` on one argument structure,
    /// read and written back, with `bufs` the buffers its guest handles
    /// point to; returns Xen's non-negative result (the operation's own
    /// `status` field is the caller's to read).
    ///
    /// Only `GNTTABOP_setup_table` is issued (others fail with
    /// `EOPNOTSUPP`, see [`crate::calls::grant_table_op_handles`]).
    fn grant_table_op(
        &self,
        cmd: u32,
        arg: &mut [u8],
        bufs: &mut [GuestBuf<'_>],
    ) -> Result<u64, Error>;

    /// Issues `mmuext_op(ops, count, &done, domid)`.
    ///
    /// # Safety
    ///
    /// These operations change page tables and page types. The caller
    /// guarantees that none of them touches the page tables or frames
    /// backing this process's own memory (they must concern only the
    /// foreign domain being built or restored), and that any `vcpumask`
    /// in `arg2` is 0.
    unsafe fn mmuext_op(&self, ops: &[MmuextOp], domid: DomId) -> Result<(), Error>;

    /// Issues `mmu_update(reqs, count, &done, domid)`.
    ///
    /// # Safety
    ///
    /// As for [`Hypervisor::mmuext_op`]: no request may change a mapping or
    /// a machine-to-physical entry of this process's own memory.
    unsafe fn mmu_update(&self, reqs: &[MmuUpdate], domid: DomId) -> Result<(), Error>;

    /// Maps the frames `pfns` of domain `domid`.
    fn map_foreign(
        &self,
        domid: DomId,
        pfns: &[XenPfn],
        prot: Prot,
    ) -> Result<Self::Mapping, Error>;
}
