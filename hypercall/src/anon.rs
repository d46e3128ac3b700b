//! Zero-filled anonymous memory from the kernel, for memory that stands in
//! for a guest's (the simulated hypervisor's): the kernel backs a page
//! only when it is first touched, and may back whole 2 MiB runs with one
//! huge page when asked.
//!
//! It lives here because this is the crate allowed `unsafe`; nothing in
//! it talks to Xen.

use std::io;
use std::ptr::NonNull;

/// An owned private anonymous mapping of `len` bytes, zero-filled; unmapped
/// on drop.
#[derive(Debug)]
pub struct AnonMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the value alone (no alias outlives it),
// like a `Box<[u8]>`; `&` gives shared reads, `&mut` the only writes.
unsafe impl Send for AnonMemory {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for AnonMemory {}

impl AnonMemory {
    /// Maps `len` bytes (`len > 0`) of zeros. `huge`: ask the kernel to
    /// back the aligned 2 MiB runs of it with transparent huge pages
    /// (`MADV_HUGEPAGE`): one fault and one clear per 2 MiB instead of
    /// per 4 KiB, for memory that is written in long runs. A kernel that
    /// refuses the hint maps ordinary pages.
    pub fn new(len: usize, huge: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh private anonymous mapping at an address the
        // kernel picks; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(io::ErrorKind::OutOfMemory)?;
        let mem = AnonMemory { ptr, len };
        if huge {
            // Only a hint: without THP (or with it off) the call fails and
            // ordinary pages serve.
            // SAFETY: the range is exactly the mapping just made, owned
            // by `mem`; the advice changes no contents.
            let _ = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        }
        Ok(mem)
    }

    /// The memory.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by
        // `self`, initialised (the kernel zero-fills it), borrowed shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The memory, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and writable; `&mut self` makes this
        // the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AnonMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, owned by `self` and no longer
        // borrowed; nothing uses it after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_starts_zeroed_and_keeps_what_is_written() {
        for huge in [false, true] {
            let mut m = AnonMemory::new(4 << 20, huge).unwrap();
            assert_eq!(m.as_slice().len(), 4 << 20);
            assert!(m.as_slice().iter().all(|&b| b == 0));
            m.as_mut_slice()[3 << 20] = 7;
            assert_eq!(m.as_slice()[3 << 20], 7);
        }
        assert!(AnonMemory::new(0, false).is_err());
        // More than the address space allows: an error, not an abort.
        assert!(AnonMemory::new(usize::MAX - 4095, false).is_err());
    }
}
