//! The doorway of a bare PV or PVH domain: hypercalls through the
//! hypercall page Xen fills in.
//!
//! # When it is used
//!
//! A Linux dom0 or driver domain reaches Xen through `/dev/xen/privcmd`
//! ([`super::privcmd`]). A small driver domain or unikernel that runs
//! relocd's code as (part of) its own kernel has no Linux underneath: it
//! issues hypercalls itself, by calling the stubs Xen writes into its
//! hypercall page. [`HypercallPage`] is that doorway (domctl, sysctl,
//! memory_op, and the admitted event-channel and grant-table operations);
//! it needs neither `std` nor an allocator and builds for
//! `x86_64-unknown-none`.
//!
//! # What the embedding kernel provides
//!
//! - The hypercall page: one page-aligned 4 KiB page of its own memory,
//!   mapped executable, that Xen has filled with transfer stubs (a PV
//!   kernel names it in its `XEN_ELFNOTE_HYPERCALL_PAGE` ELF note; a PVH
//!   kernel asks for it by writing its guest-physical address to the MSR
//!   named by Xen's CPUID leaf `0x4000_0002`, base leaf + 2). Hypercall
//!   `nr`'s stub starts at byte `nr * 32`. [`HypercallPage::from_raw`]
//!   takes its virtual address.
//! - Kernel privilege: hypercalls are only accepted from guest kernel mode.
//! - The privilege for the calls it makes: domctl and sysctl need a control
//!   domain (dom0, or a domain XSM lets do it).
//!
//! # How calls are made
//!
//! In a guest kernel, a guest handle is simply the guest's own virtual
//! address of a buffer, so there are no bounce buffers: the domctl, sysctl
//! memory_op, event_channel_op or grant_table_op argument is passed by its
//! own address, and each handle slot
//! points straight at the caller's [`GuestBuf`]. The same table as for
//! privcmd ([`crate::calls`]) decides which commands may be issued, where
//! their handles are and how long each buffer must be, so the same safety
//! argument holds: only known commands, every slot either NULL or bound to
//! a buffer at least as long as Xen may access. Slots hold the caller's own
//! values again when the call returns; `Out` buffers are zeroed first, as
//! with privcmd. A negative result is `Error { op, errno: -result }`.
//!
//! The stubs follow the x86-64 hypercall ABI: arguments 1–5 in `rdi`,
//! `rsi`, `rdx`, `r10`, `r8`, the result in `rax`; Xen may change every
//! argument register (a debug Xen poisons them), and `rcx`/`r11` are lost
//! to `syscall` in a PV guest. Only `x86_64` has the instruction sequence;
//! on other architectures every hypercall fails with `ENOSYS`.
//!
//! # Not supported yet
//!
//! - [`Hypervisor::map_foreign`], [`Hypervisor::mmu_update`] and
//!   [`Hypervisor::mmuext_op`] fail with `EOPNOTSUPP`
//!   ([`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)): a bare
//!   domain maps foreign frames through its own page tables, which belong
//!   to the embedding kernel, and this crate does not manage them.
//! - 32-bit guests and Arm (whose hypercalls are `hvc`, without a page).

use crate::abi::domctl::{Domctl, XEN_DOMCTL_INTERFACE_VERSION};
use crate::abi::sysctl::{Sysctl, XEN_SYSCTL_INTERFACE_VERSION};
use crate::abi::xen::{hypercall, DomId, MmuUpdate, MmuextOp, XenPfn, PAGE_SIZE};
use crate::calls::{self, Handles};
use crate::error::{errno, Error, Op};
use crate::hypervisor::{BufData, ForeignPages, GuestBuf, Hypervisor, Prot};
use crate::plain::PlainData;
use core::ptr::NonNull;

/// Bytes between two stubs of the hypercall page.
pub const STUB_SIZE: usize = 32;

/// Hypercall numbers the page has a stub for (`0..STUBS`).
pub const STUBS: u64 = (PAGE_SIZE / STUB_SIZE) as u64;

/// The one step that differs between the real page and the tests' fake:
/// issuing hypercall `nr` with `args`, returning `rax` as Xen left it.
trait Issue {
    /// # Safety
    ///
    /// As for [`HypercallPage::hypercall`]; `nr` is below [`STUBS`].
    unsafe fn issue(&self, nr: u64, args: [u64; 5]) -> i64;
}

/// A handle on the hypercall page the embedding kernel set up.
///
/// Copy it freely: it only holds the page's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallPage {
    page: NonNull<u8>,
}

// SAFETY: the page is code Xen wrote once and nobody changes afterwards;
// calling its stubs from any CPU at the same time is how guest kernels use
// it, so the handle may move to and be shared by other threads.
unsafe impl Send for HypercallPage {}
// SAFETY: as for `Send`: `&HypercallPage` only gives the page's address.
unsafe impl Sync for HypercallPage {}

impl HypercallPage {
    /// The doorway through the hypercall page at `page`.
    ///
    /// Fails with `Op::HypercallPage` and `EINVAL` when `page` is null or
    /// not page-aligned (no hypercall page can be there).
    ///
    /// # Safety
    ///
    /// The caller guarantees that:
    /// - `page` is this domain's hypercall page: `PAGE_SIZE` bytes Xen has
    ///   filled with its stubs, mapped executable, never written or
    ///   unmapped for the rest of the program (`'static`);
    /// - the code runs in a PV or PVH guest kernel (ring 0 of an HVM
    ///   container, or the PV kernel's ring), where Xen accepts hypercalls,
    ///   on x86-64 with the 64-bit hypercall ABI;
    /// - every buffer handed to the calls below is mapped at its address in
    ///   the page tables current when the call is made (ordinary kernel
    ///   memory is).
    pub unsafe fn from_raw(page: *const u8) -> Result<Self, Error> {
        let bad = Error::new(Op::HypercallPage, errno::EINVAL);
        if page.addr() % PAGE_SIZE != 0 {
            return Err(bad);
        }
        let page = NonNull::new(page.cast_mut()).ok_or(bad)?;
        Ok(HypercallPage { page })
    }

    /// The hypercall page's address.
    pub fn as_ptr(&self) -> *const u8 {
        self.page.as_ptr()
    }

    /// Issues hypercall `nr` with `args` through its stub, returning Xen's
    /// non-negative result (a negative one is `Error { Op::Hypercall(nr),
    /// -result }`; a number without a stub is `ENOSYS`).
    ///
    /// # Safety
    ///
    /// Xen reads and writes memory at the addresses in the arguments (and
    /// inside the structures they point to), and some hypercalls change
    /// this domain's own page tables, memory or vCPU state. The caller
    /// guarantees that every such address is 0 or the start of memory this
    /// code owns, large enough for all Xen may access for this call, with
    /// no Rust reference to it used while the call runs, and that the call
    /// does nothing that breaks the kernel or the Rust program around it.
    pub unsafe fn hypercall(&self, nr: u64, args: [u64; 5]) -> Result<u64, Error> {
        let op = Op::Hypercall(nr);
        if nr >= STUBS {
            return Err(Error::new(op, errno::ENOSYS));
        }
        // SAFETY: `nr` has a stub; the rest is this function's contract.
        result(op, unsafe { self.issue(nr, args) })
    }
}

impl Issue for HypercallPage {
    #[cfg(target_arch = "x86_64")]
    unsafe fn issue(&self, nr: u64, args: [u64; 5]) -> i64 {
        // `nr < STUBS`, so the stub lies inside the page.
        let stub = self.page.as_ptr().wrapping_add(nr as usize * STUB_SIZE);
        let [a1, a2, a3, a4, a5] = args;
        let ret: i64;
        // SAFETY: `from_raw`'s contract makes `stub` the start of Xen's
        // stub for `nr` in an executable page, and this a guest kernel on
        // x86-64, so the call enters Xen and returns here. The operands
        // follow the 64-bit hypercall ABI: arguments in rdi, rsi, rdx, r10,
        // r8, result in rax; every argument register (and r9, poisoned by a
        // debug Xen) is declared clobbered, as are rcx and r11 (which
        // `syscall` overwrites), and the stub's `call` is allowed to push
        // (no `nostack`, so the stack is aligned and the red zone unused).
        // Memory Xen touches is covered by the caller's contract; the block
        // is not `nomem`, so the compiler assumes it reads and writes memory
        // whose address was handed out.
        unsafe {
            core::arch::asm!(
                "call {stub}",
                stub = in(reg) stub,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                lateout("rax") ret,
                lateout("rcx") _,
                lateout("r9") _,
                lateout("r11") _,
            );
        }
        ret
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn issue(&self, _: u64, _: [u64; 5]) -> i64 {
        -i64::from(errno::ENOSYS)
    }
}

/// Xen's `rax` as a result: negative is `-errno`.
fn result(op: Op, ret: i64) -> Result<u64, Error> {
    if ret >= 0 {
        return Ok(ret as u64);
    }
    let e = ret
        .checked_neg()
        .and_then(|e| i32::try_from(e).ok())
        .unwrap_or(errno::EIO);
    Err(Error::new(op, e))
}

/// One admitted call: what errors are reported as, its number, its
/// arguments, and which argument becomes the argument structure's address.
struct Call {
    op: Op,
    nr: u64,
    args: [u64; 5],
    arg_index: usize,
}

/// Points the handle slots of `arg` at the caller's buffers (the others at
/// NULL), issues the call with `arg`'s address at `args[arg_index]`, and
/// gives the slots back their caller's values.
fn in_place<I: Issue>(
    via: &I,
    call: Call,
    arg: &mut [u8],
    handles: Handles,
    bufs: &mut [GuestBuf<'_>],
) -> Result<u64, Error> {
    let Call {
        op,
        nr,
        mut args,
        arg_index,
    } = call;
    handles.check(op, bufs)?;
    let mut saved = [[0u8; 8]; 2];
    for ((slot, _), keep) in handles.iter().zip(saved.iter_mut()) {
        if let Some(s) = arg.get(slot..slot + 8) {
            keep.copy_from_slice(s);
        }
    }
    handles.clear(arg);
    for b in bufs.iter_mut() {
        let addr = match &mut b.data {
            BufData::In(d) => d.as_ptr().expose_provenance(),
            BufData::Out(d) => {
                d.fill(0);
                d.as_mut_ptr().expose_provenance()
            }
            BufData::InOut(d) => d.as_mut_ptr().expose_provenance(),
        };
        // `check` proved the slot is one of the call's, inside `arg`.
        if let Some(s) = arg.get_mut(b.slot..b.slot + 8) {
            s.copy_from_slice(&(addr as u64).to_ne_bytes());
        }
    }
    if let Some(a) = args.get_mut(arg_index) {
        *a = arg.as_mut_ptr().expose_provenance() as u64;
    }
    // SAFETY: the only addresses in the call are `arg` (the argument
    // structure) and the buffers `bufs`, all borrowed mutably (or, for `In`
    // buffers Xen only reads, shared) for the whole call and not used until
    // it returns. `calls` admitted the command: every handle slot of the
    // argument holds NULL or a buffer at least as long as the payload's
    // counts let Xen access, and the argument is the whole structure Xen
    // reads and writes back. None of the admitted commands changes this
    // domain's own mappings. The hypercall numbers used here all have stubs.
    let ret = unsafe { via.issue(nr, args) };
    for ((slot, _), keep) in handles.iter().zip(saved.iter()) {
        if let Some(s) = arg.get_mut(slot..slot + 8) {
            s.copy_from_slice(keep);
        }
    }
    result(op, ret)
}

fn domctl_via<I: Issue>(
    via: &I,
    domctl: &mut Domctl,
    bufs: &mut [GuestBuf<'_>],
) -> Result<(), Error> {
    let handles = calls::domctl_handles(domctl)?;
    // The layout is this crate's, so the version must be too.
    domctl.interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    let call = Call {
        op: Op::Domctl(domctl.cmd),
        nr: hypercall::DOMCTL,
        args: [0; 5],
        arg_index: 0,
    };
    let domid = domctl.domain;
    in_place(via, call, domctl.as_bytes_mut(), handles, bufs)
        .map(|_| ())
        .map_err(|e| e.on(domid))
}

fn sysctl_via<I: Issue>(
    via: &I,
    sysctl: &mut Sysctl,
    bufs: &mut [GuestBuf<'_>],
) -> Result<(), Error> {
    let handles = calls::sysctl_handles(sysctl)?;
    sysctl.interface_version = XEN_SYSCTL_INTERFACE_VERSION;
    let call = Call {
        op: Op::Sysctl(sysctl.cmd),
        nr: hypercall::SYSCTL,
        args: [0; 5],
        arg_index: 0,
    };
    in_place(via, call, sysctl.as_bytes_mut(), handles, bufs).map(|_| ())
}

fn memory_op_via<I: Issue>(
    via: &I,
    cmd: u32,
    arg: &mut [u8],
    bufs: &mut [GuestBuf<'_>],
) -> Result<u64, Error> {
    let handles = calls::memory_op_handles(cmd, arg)?;
    let call = Call {
        op: Op::MemoryOp(cmd),
        nr: hypercall::MEMORY_OP,
        args: [u64::from(cmd), 0, 0, 0, 0],
        arg_index: 1,
    };
    let domid = calls::memory_op_domain(cmd, arg);
    in_place(via, call, arg, handles, bufs).map_err(|e| calls::on_domain(e, domid))
}

fn event_channel_op_via<I: Issue>(via: &I, cmd: u32, arg: &mut [u8]) -> Result<u64, Error> {
    let handles = calls::event_channel_op_handles(cmd, arg)?;
    let call = Call {
        op: Op::Hypercall(hypercall::EVENT_CHANNEL_OP),
        nr: hypercall::EVENT_CHANNEL_OP,
        args: [u64::from(cmd), 0, 0, 0, 0],
        arg_index: 1,
    };
    let domid = calls::event_channel_op_domain(cmd, arg);
    in_place(via, call, arg, handles, &mut []).map_err(|e| calls::on_domain(e, domid))
}

fn grant_table_op_via<I: Issue>(
    via: &I,
    cmd: u32,
    arg: &mut [u8],
    bufs: &mut [GuestBuf<'_>],
) -> Result<u64, Error> {
    let handles = calls::grant_table_op_handles(cmd, arg)?;
    let call = Call {
        op: Op::Hypercall(hypercall::GRANT_TABLE_OP),
        nr: hypercall::GRANT_TABLE_OP,
        // One argument structure.
        args: [u64::from(cmd), 0, 1, 0, 0],
        arg_index: 1,
    };
    in_place(via, call, arg, handles, bufs)
}

/// What the calls a bare domain cannot make yet fail with.
const fn unsupported(op: Op) -> Error {
    Error::new(op, errno::EOPNOTSUPP)
}

/// A foreign mapping through the hypercall page; none can exist yet (a
/// bare domain maps foreign frames through its own page tables).
#[derive(Debug)]
pub enum NoMapping {}

impl ForeignPages for NoMapping {
    fn len(&self) -> usize {
        match *self {}
    }
    fn page_error(&self, _: usize) -> Option<i32> {
        match *self {}
    }
    fn read_page(&self, _: usize, _: &mut [u8; PAGE_SIZE]) -> Result<(), Error> {
        match *self {}
    }
    fn write_page(&mut self, _: usize, _: &[u8; PAGE_SIZE]) -> Result<(), Error> {
        match *self {}
    }
}

impl Hypervisor for HypercallPage {
    type Mapping = NoMapping;

    fn domctl(&self, domctl: &mut Domctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        domctl_via(self, domctl, bufs)
    }
    fn sysctl(&self, sysctl: &mut Sysctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        sysctl_via(self, sysctl, bufs)
    }
    fn memory_op(&self, cmd: u32, arg: &mut [u8], bufs: &mut [GuestBuf<'_>]) -> Result<u64, Error> {
        memory_op_via(self, cmd, arg, bufs)
    }
    fn event_channel_op(&self, cmd: u32, arg: &mut [u8]) -> Result<u64, Error> {
        event_channel_op_via(self, cmd, arg)
    }
    fn grant_table_op(
        &self,
        cmd: u32,
        arg: &mut [u8],
        bufs: &mut [GuestBuf<'_>],
    ) -> Result<u64, Error> {
        grant_table_op_via(self, cmd, arg, bufs)
    }
    /// Fails with `EOPNOTSUPP`: page tables belong to the embedding kernel.
    unsafe fn mmuext_op(&self, _: &[MmuextOp], _: DomId) -> Result<(), Error> {
        Err(unsupported(Op::MmuextOp))
    }
    /// Fails with `EOPNOTSUPP`: page tables belong to the embedding kernel.
    unsafe fn mmu_update(&self, _: &[MmuUpdate], _: DomId) -> Result<(), Error> {
        Err(unsupported(Op::MmuUpdate))
    }
    /// Fails with `EOPNOTSUPP`: a bare domain maps foreign frames through
    /// its own page tables, which this crate does not manage yet.
    fn map_foreign(&self, _: DomId, _: &[XenPfn], _: Prot) -> Result<NoMapping, Error> {
        Err(unsupported(Op::MapForeign))
    }
}

#[cfg(test)]
mod tests;
