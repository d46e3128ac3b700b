//! The Linux doorway: `/dev/xen/privcmd` and `/dev/xen/hypercall`, as in a
//! dom0 or a Linux driver domain.
//!
//! - [`Privcmd`] opens `/dev/xen/privcmd` once (`O_CLOEXEC`; falling back to
//!   `/proc/xen/privcmd` on old kernels) and owns the descriptor, with
//!   `/dev/xen/hypercall` when the kernel has it.
//! - [`HypercallBuf`] is memory Xen can read and write during a hypercall:
//!   pages from `/dev/xen/hypercall`, or, on kernels without it, anonymous
//!   pages locked in memory and kept out of `fork` (what libxencall does).
//!   Unmapped on drop.
//! - [`ForeignMapping`] maps another domain's frames with
//!   `IOCTL_PRIVCMD_MMAPBATCH_V2`, keeps its per-page errors, and is unmapped
//!   on drop.
//!
//! Hypercalls go through `IOCTL_PRIVCMD_HYPERCALL`. Every argument and
//! every buffer a guest handle points to is first copied into a
//! [`HypercallBuf`] (the kernel refuses, or Xen faults on, ordinary
//! pageable memory), so the typed calls of [`Hypervisor`] take ordinary
//! Rust slices.

use crate::abi::domctl::Domctl;
use crate::abi::privcmd::{
    PrivcmdHypercall, PrivcmdMmapBatchV2, IOCTL_PRIVCMD_HYPERCALL, IOCTL_PRIVCMD_MMAPBATCH_V2,
};
use crate::abi::sysctl::Sysctl;
use crate::abi::xen::{hypercall, DomId, MmuUpdate, MmuextOp, XenPfn, PAGE_SIZE};
use crate::calls::{self, Handles};
use crate::error::{errno, Device, Error, Op};
use crate::hypervisor::{ForeignPages, GuestBuf, Hypervisor, Prot};
use crate::plain::PlainData;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

/// `/dev/xen/privcmd`
pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";
/// `/proc/xen/privcmd`, where kernels before 2.6.38 put it.
pub const PRIVCMD_PROC_PATH: &str = "/proc/xen/privcmd";
/// `/dev/xen/hypercall`
pub const HYPERCALL_BUF_PATH: &str = "/dev/xen/hypercall";

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(errno::EIO)
}

fn open_rw(path: &Path, dev: Device) -> Result<OwnedFd, Error> {
    let op = Op::Open(dev);
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::new(op, errno::EINVAL))?;
    open_cstr(&c, op)
}

fn open_cstr(path: &CStr, op: Op) -> Result<OwnedFd, Error> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open
    // has no other precondition.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::new(op, last_errno()));
    }
    // SAFETY: `fd` was just returned by open, is valid, and nothing else owns
    // it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A hypercall whose argument structure is bounced by [`Privcmd::bounced`].
struct Call {
    /// What errors are reported as.
    op: Op,
    /// Hypercall number.
    nr: u64,
    /// Arguments; `args[arg_index]` becomes the argument's address.
    args: [u64; 5],
    arg_index: usize,
}

/// The privcmd handle: the one open `/dev/xen/privcmd` (and
/// `/dev/xen/hypercall`, when present) of this process.
#[derive(Debug)]
pub struct Privcmd {
    fd: OwnedFd,
    buf_fd: Option<OwnedFd>,
}

impl Privcmd {
    /// Opens `/dev/xen/privcmd` (or `/proc/xen/privcmd` when the former is
    /// missing) and `/dev/xen/hypercall` if the kernel has it.
    ///
    /// Fails with `Op::Open(Device::Privcmd)` and `ENOENT` where there is no
    /// Xen (or the `xen_privcmd` module is not loaded).
    pub fn open() -> Result<Self, Error> {
        let fd = match open_rw(Path::new(PRIVCMD_PATH), Device::Privcmd) {
            Ok(fd) => fd,
            Err(e) if matches!(e.errno, errno::ENOENT | errno::ENXIO | errno::ENODEV) => {
                // Report the modern path's error if the old one fails too.
                open_rw(Path::new(PRIVCMD_PROC_PATH), Device::Privcmd).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        };
        Self::with_buffers(fd, Path::new(HYPERCALL_BUF_PATH))
    }

    /// Opens the given device nodes instead of the standard ones (a test
    /// seam: `/dev/null` stands in for privcmd, and a missing path for a
    /// kernel without `/dev/xen/hypercall`).
    pub fn open_at(privcmd: &Path, hypercall_bufs: &Path) -> Result<Self, Error> {
        let fd = open_rw(privcmd, Device::Privcmd)?;
        Self::with_buffers(fd, hypercall_bufs)
    }

    fn with_buffers(fd: OwnedFd, hypercall_bufs: &Path) -> Result<Self, Error> {
        let buf_fd = match open_rw(hypercall_bufs, Device::HypercallBuffers) {
            Ok(b) => Some(b),
            Err(e) if e.errno == errno::ENOENT => None,
            Err(e) => return Err(e),
        };
        Ok(Privcmd { fd, buf_fd })
    }

    /// Whether hypercall buffers come from `/dev/xen/hypercall` (rather
    /// than locked anonymous memory).
    pub fn has_buffer_device(&self) -> bool {
        self.buf_fd.is_some()
    }

    /// Allocates a zeroed buffer of `len` `T`s that Xen can access during a
    /// hypercall (at least one page).
    pub fn alloc_buf<T: PlainData>(&self, len: usize) -> Result<HypercallBuf<T>, Error> {
        HypercallBuf::new(self.buf_fd.as_ref(), len)
    }

    /// Issues hypercall `nr` with `args` through `IOCTL_PRIVCMD_HYPERCALL`,
    /// returning Xen's non-negative result.
    ///
    /// # Safety
    ///
    /// Xen interprets some arguments as addresses in this process and reads
    /// or writes there, and some hypercalls change this domain's own memory.
    /// The caller guarantees that every address argument, and every address
    /// inside the structures they point to, is 0 or points into a live
    /// [`HypercallBuf`] large enough for everything Xen may access for this
    /// call, that no Rust reference to those bytes is used while the call
    /// runs, and that the call does not change mappings or frames backing
    /// this process's memory.
    pub unsafe fn hypercall(&self, nr: u64, args: [u64; 5]) -> Result<u64, Error> {
        // SAFETY: forwarded from this function's own contract.
        unsafe { self.hypercall_as(Op::Hypercall(nr), nr, args) }
    }

    /// [`Privcmd::hypercall`], with the operation errors are reported as.
    ///
    /// # Safety
    ///
    /// As for [`Privcmd::hypercall`].
    unsafe fn hypercall_as(&self, op: Op, nr: u64, args: [u64; 5]) -> Result<u64, Error> {
        let mut call = PrivcmdHypercall { op: nr, arg: args };
        // SAFETY: the fd is open; `call` is a valid `privcmd_hypercall` that
        // outlives the ioctl (the kernel copies it in); what Xen does with
        // the arguments is covered by the caller's guarantee. The raw
        // syscall is used (not libc's `ioctl`, which truncates the result
        // to `int`) so a 64-bit result such as a GPFN survives.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                self.fd.as_raw_fd(),
                libc::c_ulong::from(IOCTL_PRIVCMD_HYPERCALL),
                &mut call as *mut PrivcmdHypercall,
            )
        };
        if rc < 0 {
            return Err(Error::new(op, last_errno()));
        }
        Ok(rc as u64)
    }

    /// Copies `arg` and `bufs` into hypercall buffers, points the handle
    /// slots at them (every other known slot at NULL), issues the call with
    /// the argument's address at `args[arg_index]`, and copies everything
    /// back (the slots keep the caller's values).
    fn bounced(
        &self,
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
        let mut held = Vec::with_capacity(bufs.len());
        for b in bufs.iter() {
            let mut hb = self.alloc_buf::<u8>(b.data.len())?;
            if let Some(src) = b.data.input() {
                hb.copy_from_slice(src);
            }
            held.push(hb);
        }
        let mut harg = self.alloc_buf::<u8>(arg.len())?;
        harg.copy_from_slice(arg);
        handles.clear(&mut harg);
        for (b, hb) in bufs.iter().zip(&held) {
            // `check` proved the slot is one of the call's, inside `arg`.
            if let Some(s) = harg.get_mut(b.slot..b.slot + 8) {
                s.copy_from_slice(&hb.addr().to_ne_bytes());
            }
        }
        if let Some(a) = args.get_mut(arg_index) {
            *a = harg.addr();
        }
        // SAFETY: the only addresses in the call are `harg` (argument) and
        // the buffers `held`, all live hypercall buffers owned here until
        // after the call, with no Rust reference used meanwhile. `calls`
        // admitted this command: every handle slot of its argument now holds
        // NULL or a buffer at least as long as the payload's counts let Xen
        // access (and buffers are whole pages), and the argument buffer is at
        // least the argument structure's size. None of the admitted
        // commands changes this process's own mappings.
        let res = unsafe { self.hypercall_as(op, nr, args) };
        for (b, hb) in bufs.iter_mut().zip(&held) {
            if let Some(dst) = b.data.output() {
                dst.copy_from_slice(hb);
            }
        }
        let mut saved = [[0u8; 8]; 2];
        for ((slot, _), keep) in handles.iter().zip(saved.iter_mut()) {
            if let Some(s) = arg.get(slot..slot + 8) {
                keep.copy_from_slice(s);
            }
        }
        arg.copy_from_slice(&harg);
        for ((slot, _), keep) in handles.iter().zip(saved.iter()) {
            if let Some(s) = arg.get_mut(slot..slot + 8) {
                s.copy_from_slice(keep);
            }
        }
        res
    }

    /// Issues `mmuext_op` or `mmu_update` on an array of plain requests.
    ///
    /// # Safety
    ///
    /// As for [`Hypervisor::mmuext_op`].
    unsafe fn mmu_batch<T: PlainData>(
        &self,
        op: Op,
        nr: u64,
        reqs: &[T],
        domid: DomId,
    ) -> Result<(), Error> {
        let mut hreqs = self.alloc_buf::<T>(reqs.len())?;
        hreqs.copy_from_slice(reqs);
        let done = self.alloc_buf::<u32>(1)?;
        let args = [
            hreqs.addr(),
            reqs.len() as u64,
            done.addr(),
            u64::from(domid),
            0,
        ];
        // SAFETY: `hreqs` and `done` are live hypercall buffers holding the
        // request array and the done counter Xen writes; the requests' own
        // effects are the caller's responsibility (this function's
        // contract).
        unsafe { self.hypercall_as(op, nr, args) }.map(|_| ())
    }
}

impl Hypervisor for Privcmd {
    type Mapping = ForeignMapping;

    fn domctl(&self, domctl: &mut Domctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        let op = Op::Domctl(domctl.cmd);
        let handles = calls::domctl_handles(domctl)?;
        let call = Call {
            op,
            nr: hypercall::DOMCTL,
            args: [0; 5],
            arg_index: 0,
        };
        let domid = domctl.domain;
        self.bounced(call, domctl.as_bytes_mut(), handles, bufs)
            .map(|_| ())
            .map_err(|e| e.on(domid))
    }

    fn sysctl(&self, sysctl: &mut Sysctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        let op = Op::Sysctl(sysctl.cmd);
        let handles = calls::sysctl_handles(sysctl)?;
        let call = Call {
            op,
            nr: hypercall::SYSCTL,
            args: [0; 5],
            arg_index: 0,
        };
        self.bounced(call, sysctl.as_bytes_mut(), handles, bufs)
            .map(|_| ())
    }

    fn memory_op(&self, cmd: u32, arg: &mut [u8], bufs: &mut [GuestBuf<'_>]) -> Result<u64, Error> {
        let handles = calls::memory_op_handles(cmd, arg)?;
        let args = [u64::from(cmd), 0, 0, 0, 0];
        let call = Call {
            op: Op::MemoryOp(cmd),
            nr: hypercall::MEMORY_OP,
            args,
            arg_index: 1,
        };
        let domid = calls::memory_op_domain(cmd, arg);
        self.bounced(call, arg, handles, bufs)
            .map_err(|e| calls::on_domain(e, domid))
    }

    fn event_channel_op(&self, cmd: u32, arg: &mut [u8]) -> Result<u64, Error> {
        let handles = calls::event_channel_op_handles(cmd, arg)?;
        let call = Call {
            op: Op::Hypercall(hypercall::EVENT_CHANNEL_OP),
            nr: hypercall::EVENT_CHANNEL_OP,
            args: [u64::from(cmd), 0, 0, 0, 0],
            arg_index: 1,
        };
        let domid = calls::event_channel_op_domain(cmd, arg);
        self.bounced(call, arg, handles, &mut [])
            .map_err(|e| calls::on_domain(e, domid))
    }

    fn grant_table_op(
        &self,
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
        self.bounced(call, arg, handles, bufs)
    }

    unsafe fn mmuext_op(&self, ops: &[MmuextOp], domid: DomId) -> Result<(), Error> {
        // SAFETY: forwarded from this method's contract.
        unsafe { self.mmu_batch(Op::MmuextOp, hypercall::MMUEXT_OP, ops, domid) }
            .map_err(|e| e.on(domid))
    }

    unsafe fn mmu_update(&self, reqs: &[MmuUpdate], domid: DomId) -> Result<(), Error> {
        // SAFETY: forwarded from this method's contract.
        unsafe { self.mmu_batch(Op::MmuUpdate, hypercall::MMU_UPDATE, reqs, domid) }
            .map_err(|e| e.on(domid))
    }

    fn map_foreign(
        &self,
        domid: DomId,
        pfns: &[XenPfn],
        prot: Prot,
    ) -> Result<ForeignMapping, Error> {
        ForeignMapping::new(self, domid, pfns, prot).map_err(|e| e.on(domid))
    }
}

/// Memory Xen can access during a hypercall: `len` zero-initialised `T`s
/// on whole, locked pages. Unmapped on drop.
#[derive(Debug)]
pub struct HypercallBuf<T: PlainData> {
    ptr: NonNull<T>,
    len: usize,
    map_len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: the buffer exclusively owns its mapping (like a `Box<[T]>`); it
// can move to another thread when `T` can.
unsafe impl<T: PlainData + Send> Send for HypercallBuf<T> {}
// SAFETY: `&HypercallBuf` only gives `&[T]`, so sharing it is sharing `&[T]`.
unsafe impl<T: PlainData + Sync> Sync for HypercallBuf<T> {}

impl<T: PlainData> HypercallBuf<T> {
    const ALIGN_OK: () = assert!(core::mem::align_of::<T>() <= PAGE_SIZE);

    fn new(dev: Option<&OwnedFd>, len: usize) -> Result<Self, Error> {
        let () = Self::ALIGN_OK;
        let op = Op::AllocBuffer;
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(Error::new(op, errno::ENOMEM))?;
        let map_len = bytes
            .div_ceil(PAGE_SIZE)
            .max(1)
            .checked_mul(PAGE_SIZE)
            .ok_or(Error::new(op, errno::ENOMEM))?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let p = match dev {
            // SAFETY: a fresh shared mapping of the hypercall-buffer device
            // at an address the kernel picks; no existing memory is affected.
            Some(fd) => unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    prot,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            },
            // SAFETY: a fresh private anonymous mapping at an address the
            // kernel picks; no existing memory is affected.
            None => unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED,
                    -1,
                    0,
                )
            },
        };
        if p == libc::MAP_FAILED {
            return Err(Error::new(op, last_errno()));
        }
        let ptr = NonNull::new(p.cast::<T>()).ok_or(Error::new(op, errno::ENOMEM))?;
        let buf = HypercallBuf {
            ptr,
            len,
            map_len,
            _owns: PhantomData,
        };
        if dev.is_none() {
            // Keep the pages out of children: a copy-on-write fault during a
            // hypercall would hand Xen a different page.
            // SAFETY: the range is exactly the mapping just made and owned
            // by `buf`.
            if unsafe { libc::madvise(p, map_len, libc::MADV_DONTFORK) } != 0 {
                return Err(Error::new(op, last_errno()));
            }
        }
        // SAFETY: the mapping is `map_len >= len * size_of::<T>()` writable
        // bytes owned by `buf`; writing zeroes also faults every page in.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, map_len) };
        Ok(buf)
    }

    /// The buffer's address, for a guest handle.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

impl<T: PlainData> Deref for HypercallBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is page-aligned (so aligned for T), valid for `len`
        // initialised `T`s (zeroed at creation; any bytes are valid T), and
        // owned by `self`, which the slice borrows.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: PlainData> DerefMut for HypercallBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and the slice borrows `self` mutably, so it
        // is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: PlainData> Drop for HypercallBuf<T> {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping made in `new`, owned by
        // `self`; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

/// Frames of another domain mapped here with `IOCTL_PRIVCMD_MMAPBATCH_V2`,
/// with the kernel's per-page result. Unmapped on drop.
#[derive(Debug)]
pub struct ForeignMapping {
    base: NonNull<u8>,
    pages: usize,
    errs: Vec<i32>,
    writable: bool,
}

// SAFETY: the mapping is owned exclusively by this value (like a
// `Box<[u8]>`); moving it between threads moves that ownership.
unsafe impl Send for ForeignMapping {}
// SAFETY: `&ForeignMapping` only allows copying bytes out of mapped pages,
// which is as safe from several threads as from one.
unsafe impl Sync for ForeignMapping {}

impl ForeignMapping {
    fn new(pc: &Privcmd, domid: DomId, pfns: &[XenPfn], prot: Prot) -> Result<Self, Error> {
        let op = Op::MapForeign;
        let num = u32::try_from(pfns.len()).map_err(|_| Error::new(op, errno::E2BIG))?;
        if pfns.is_empty() {
            return Err(Error::new(op, errno::EINVAL));
        }
        let len = pfns
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or(Error::new(op, errno::E2BIG))?;
        let writable = prot == Prot::ReadWrite;
        let mprot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of the privcmd device at an address
        // the kernel picks; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                mprot,
                libc::MAP_SHARED,
                pc.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::new(op, last_errno()));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(Error::new(op, errno::ENOMEM))?;
        let mut m = ForeignMapping {
            base,
            pages: pfns.len(),
            errs: vec![0; pfns.len()],
            writable,
        };
        let mut batch = PrivcmdMmapBatchV2 {
            num,
            dom: domid,
            addr: p as u64,
            arr: pfns.as_ptr() as u64,
            err: m.errs.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `batch` describes the mapping just made (owned by `m`,
        // `num` pages), `pfns` (read by the kernel, `num` entries) and
        // `m.errs` (written by the kernel, `num` entries); all outlive the
        // call. The kernel only fills the privcmd mapping it is given.
        let rc = unsafe {
            libc::ioctl(
                pc.fd.as_raw_fd(),
                libc::c_ulong::from(IOCTL_PRIVCMD_MMAPBATCH_V2) as _,
                &mut batch as *mut PrivcmdMmapBatchV2,
            )
        };
        if rc < 0 {
            let e = last_errno();
            // ENOENT: mapped, but some frames are paged out; their entries
            // in `errs` say so. Anything else: nothing usable.
            if e != errno::ENOENT {
                return Err(Error::new(op, e));
            }
        }
        Ok(m)
    }

    /// The per-page results: 0, or the negative errno of a page that is not
    /// mapped.
    pub fn errors(&self) -> &[i32] {
        &self.errs
    }

    fn page_ptr(&self, i: usize) -> Result<*mut u8, Error> {
        match self.page_error(i) {
            None => Ok(self.base.as_ptr().wrapping_add(i * PAGE_SIZE)),
            Some(e) => Err(Error::new(Op::MapForeign, e)),
        }
    }
}

impl ForeignPages for ForeignMapping {
    fn len(&self) -> usize {
        self.pages
    }

    fn page_error(&self, i: usize) -> Option<i32> {
        match self.errs.get(i) {
            None => Some(errno::EINVAL),
            Some(0) => None,
            Some(&e) => Some(e.wrapping_abs()),
        }
    }

    fn read_page(&self, i: usize, dst: &mut [u8; PAGE_SIZE]) -> Result<(), Error> {
        let src = self.page_ptr(i)?;
        // SAFETY: page `i` is in range and mapped (its error is 0), readable,
        // and `dst` is a distinct Rust array; the guest may change the page
        // meanwhile, which can only change the bytes copied.
        unsafe { std::ptr::copy_nonoverlapping(src.cast_const(), dst.as_mut_ptr(), PAGE_SIZE) };
        Ok(())
    }

    fn write_page(&mut self, i: usize, src: &[u8; PAGE_SIZE]) -> Result<(), Error> {
        if !self.writable {
            return Err(Error::new(Op::MapForeign, errno::EACCES));
        }
        let dst = self.page_ptr(i)?;
        // SAFETY: page `i` is in range, mapped and writable (a ReadWrite
        // mapping), owned by `self` (borrowed mutably), and distinct from
        // `src`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, PAGE_SIZE) };
        Ok(())
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping made in `new`, owned by
        // `self`; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.pages * PAGE_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::domctl::{self, ShadowOp};
    use crate::abi::memory;
    use crate::{ErrorKind, XenOps};

    const MISSING: &str = "/nonexistent/xen/hypercall";

    /// `/dev/null` accepts open and mmap-less ioctls with `ENOTTY`: the
    /// whole path up to the kernel runs, and nothing reaches a hypervisor.
    fn null_doorway() -> Privcmd {
        Privcmd::open_at(Path::new("/dev/null"), Path::new(MISSING)).unwrap()
    }

    #[test]
    fn errno_numbers_are_linuxs() {
        let pairs = [
            (errno::EPERM, libc::EPERM),
            (errno::ENOENT, libc::ENOENT),
            (errno::ESRCH, libc::ESRCH),
            (errno::EINTR, libc::EINTR),
            (errno::EIO, libc::EIO),
            (errno::ENXIO, libc::ENXIO),
            (errno::E2BIG, libc::E2BIG),
            (errno::EBADF, libc::EBADF),
            (errno::EAGAIN, libc::EAGAIN),
            (errno::ENOMEM, libc::ENOMEM),
            (errno::EACCES, libc::EACCES),
            (errno::EFAULT, libc::EFAULT),
            (errno::EBUSY, libc::EBUSY),
            (errno::EEXIST, libc::EEXIST),
            (errno::ENODEV, libc::ENODEV),
            (errno::ENOTTY, errno::ENOTTY),
            (errno::EINVAL, libc::EINVAL),
            (errno::ENOSPC, libc::ENOSPC),
            (errno::ERANGE, libc::ERANGE),
            (errno::ENOSYS, libc::ENOSYS),
            (errno::EOPNOTSUPP, libc::EOPNOTSUPP),
            (errno::ENOBUFS, libc::ENOBUFS),
        ];
        for (ours, linux) in pairs {
            assert_eq!(ours, linux, "{:?}", errno::name(ours));
        }
    }

    #[test]
    fn a_missing_privcmd_is_a_clear_typed_error() {
        let e = Privcmd::open_at(Path::new("/nonexistent/xen/privcmd"), Path::new(MISSING))
            .unwrap_err();
        assert_eq!(
            (e.op, e.errno, e.kind()),
            (
                Op::Open(Device::Privcmd),
                errno::ENOENT,
                ErrorKind::NotFound
            )
        );
        assert!(e.to_string().contains("no Xen here"), "{e}");
    }

    #[test]
    fn open_reports_the_standard_path() {
        let present = Path::new(PRIVCMD_PATH).exists() || Path::new(PRIVCMD_PROC_PATH).exists();
        match Privcmd::open() {
            Ok(_) => assert!(present),
            Err(e) => {
                assert_eq!(e.op, Op::Open(Device::Privcmd));
                if !present {
                    assert_eq!(e.errno, errno::ENOENT);
                }
            }
        }
    }

    #[test]
    fn a_broken_hypercall_device_is_an_error_but_a_missing_one_is_not() {
        assert!(!null_doorway().has_buffer_device());
        let e = Privcmd::open_at(Path::new("/dev/null"), Path::new("/dev/null/x")).unwrap_err();
        assert_eq!(e.op, Op::Open(Device::HypercallBuffers));
    }

    #[test]
    fn hypercall_buffers_are_zeroed_page_aligned_and_writable() {
        let pc = null_doorway();
        let mut b = pc.alloc_buf::<u64>(1000).unwrap();
        assert_eq!(b.len(), 1000);
        assert_eq!(b.addr() % PAGE_SIZE as u64, 0);
        assert!(b.iter().all(|&v| v == 0));
        b[999] = u64::MAX;
        assert_eq!(b[999], u64::MAX);
        let empty = pc.alloc_buf::<u8>(0).unwrap();
        assert!(empty.is_empty() && empty.addr() != 0);
        let e = pc.alloc_buf::<u64>(usize::MAX).unwrap_err();
        assert_eq!((e.op, e.errno), (Op::AllocBuffer, errno::ENOMEM));
    }

    #[test]
    fn a_hypercall_reaches_the_ioctl_and_its_errno_comes_back_typed() {
        let pc = null_doorway();
        let e = pc.pause(1).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Domctl(domctl::cmd::PAUSEDOMAIN), errno::ENOTTY)
        );
        let mut bitmap = [0u8; 16];
        let e = pc.logdirty_peek(1, &mut bitmap, 128).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Domctl(domctl::cmd::SHADOW_OP), errno::ENOTTY)
        );
        assert_eq!(
            pc.maximum_gpfn(1).unwrap_err().op,
            Op::MemoryOp(memory::cmd::MAXIMUM_GPFN)
        );
        assert_eq!(pc.physinfo().unwrap_err().errno, errno::ENOTTY);
    }

    #[test]
    fn event_channel_and_grant_table_ops_reach_the_ioctl() {
        use crate::abi::xen::hypercall;
        let pc = null_doorway();
        let e = pc.evtchn_alloc_unbound(3, 0).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Hypercall(hypercall::EVENT_CHANNEL_OP), errno::ENOTTY)
        );
        let mut frames = [7u64; 2];
        let e = pc.grant_table_frames(3, 2, &mut frames).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Hypercall(hypercall::GRANT_TABLE_OP), errno::ENOTTY)
        );
        // The output buffer was bounced back (zeroed: nothing wrote it).
        assert_eq!(frames, [0, 0]);
        // Refused before the kernel: close, and a short frame list.
        let e = pc.event_channel_op(3, &mut [0; 4]).unwrap_err();
        assert_eq!(e.errno, errno::EOPNOTSUPP);
        let e = pc.grant_table_frames(3, 3, &mut frames).unwrap_err();
        assert_eq!(e.errno, errno::EINVAL);
    }

    #[test]
    fn bad_buffers_and_unknown_commands_never_reach_the_kernel() {
        let pc = null_doorway();
        let p = ShadowOp {
            op: domctl::shadow::OP_CLEAN,
            pages: 1 << 20,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::SHADOW_OP, 1, &p);
        let slot = Domctl::union_offset(std::mem::offset_of!(ShadowOp, dirty_bitmap));
        let mut short = [0u8; 64];
        let e = pc
            .domctl(&mut d, &mut [GuestBuf::output(slot, &mut short)])
            .unwrap_err();
        assert_eq!(e.errno, errno::EINVAL);
        let e = pc
            .domctl(&mut Domctl::new(domctl::cmd::GETHVMCONTEXT, 1), &mut [])
            .unwrap_err();
        assert_eq!(e.errno, errno::EOPNOTSUPP);
        let mut too_long = [0u8; 8];
        let e = pc
            .memory_op(memory::cmd::MAXIMUM_GPFN, &mut too_long, &mut [])
            .unwrap_err();
        assert_eq!(e.errno, errno::EINVAL);
    }

    #[test]
    fn the_envelope_keeps_the_callers_handle_values() {
        let pc = null_doorway();
        let p = ShadowOp {
            op: domctl::shadow::OP_PEEK,
            pages: 8,
            dirty_bitmap: 0x1234,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::SHADOW_OP, 1, &p);
        let slot = Domctl::union_offset(std::mem::offset_of!(ShadowOp, dirty_bitmap));
        let mut bitmap = [0xffu8; 1];
        assert!(pc
            .domctl(&mut d, &mut [GuestBuf::output(slot, &mut bitmap)])
            .is_err());
        assert_eq!(d.payload::<ShadowOp>(), p);
        // Output buffers are copied back whatever Xen did: zeroed here.
        assert_eq!(bitmap, [0]);
    }

    #[test]
    fn a_foreign_mapping_that_cannot_be_made_is_an_error() {
        let pc = null_doorway();
        let e = pc.map_foreign(1, &[0, 1], Prot::Read).unwrap_err();
        assert_eq!(e.op, Op::MapForeign);
        assert_eq!(
            pc.map_foreign(1, &[], Prot::Read).unwrap_err().errno,
            errno::EINVAL
        );
    }
}
