//! Giving back the resident pages of read-only file mappings (Linux).
//!
//! The kernel maps an executable's code and read-only data into a process
//! page by page as it is first touched, and with each fault it maps the
//! neighbouring pages that are already in the page cache too ("fault-around",
//! 64 KiB by default). Start-up touches code that never runs again, and
//! fault-around maps far more than was touched; all of it counts in the
//! process's RSS for as long as it lives. [`release_file_pages`] drops this
//! process's mapping of one range's pages (`MADV_DONTNEED`): the page cache
//! keeps them, and a page faults back in (from the cache, or the file) the
//! next time it is used.
//!
//! No `MADV_RANDOM`: on Linux 6.18 it does not stop fault-around (the
//! mapping gets `VM_RAND_READ`, which only turns read-ahead off; pages
//! touched afterwards still come back in whole 64 KiB blocks, measured with
//! `/proc/PID/pagemap`), so it would only slow the refault of a page the
//! page cache has evicted.
//!
//! Which ranges qualify is the caller's policy (relocd's is in
//! `relocd::residency`, from `/proc/self/smaps`); this module holds the
//! `madvise` call and the check that keeps it from destroying data: every
//! page of the range must be a file page (no copy-on-write copy).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The page size these ranges are counted in (x86_64 Linux).
const PAGE: usize = 4096;
/// `/proc/self/pagemap` entries read per call (4 KiB of entries).
const PAGEMAP_BATCH: usize = 512;
/// pagemap entry: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// pagemap entry: the page is swapped out (only anonymous pages swap).
const PM_SWAP: u64 = 1 << 62;
/// pagemap entry: a file page (or shared anonymous memory).
const PM_FILE: u64 = 1 << 61;

/// Why a range was left as it was.
#[derive(Debug)]
pub enum ResidencyError {
    /// The range does not start on a page boundary, is empty, or wraps.
    BadRange {
        /// First byte.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// A page of the range is not a file page: a private copy (written
    /// copy-on-write, e.g. by the dynamic linker's relocations) that
    /// `MADV_DONTNEED` would replace with the file's original bytes.
    NotFilePage {
        /// The page's address.
        addr: usize,
    },
    /// `/proc/self/pagemap` could not be read.
    Pagemap(std::io::Error),
    /// `madvise` refused.
    Madvise {
        /// The kernel's answer.
        source: std::io::Error,
    },
}

impl core::fmt::Display for ResidencyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResidencyError::BadRange { start, len } => {
                write!(f, "{len} bytes at {start:#x} is not a whole-page range")
            }
            ResidencyError::NotFilePage { addr } => {
                write!(f, "the page at {addr:#x} is a private copy, not the file's")
            }
            ResidencyError::Pagemap(e) => write!(f, "reading /proc/self/pagemap: {e}"),
            ResidencyError::Madvise { source } => write!(f, "madvise(MADV_DONTNEED): {source}"),
        }
    }
}

impl std::error::Error for ResidencyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResidencyError::Pagemap(e) | ResidencyError::Madvise { source: e } => Some(e),
            _ => None,
        }
    }
}

/// Whether a pagemap entry describes a page `MADV_DONTNEED` may drop from a
/// private file mapping without changing what the process reads there: not
/// present and not swapped (nothing mapped), or present as a file page.
fn droppable(entry: u64) -> bool {
    if entry & PM_SWAP != 0 {
        return false;
    }
    entry & PM_PRESENT == 0 || entry & PM_FILE != 0
}

/// Checks, page by page, that `start..start + len` holds no private copy.
fn check_file_pages(start: usize, len: usize) -> Result<(), ResidencyError> {
    let pagemap = File::open("/proc/self/pagemap").map_err(ResidencyError::Pagemap)?;
    let first = start / PAGE;
    let pages = len / PAGE;
    let mut buf = [0u8; PAGEMAP_BATCH * 8];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(PAGEMAP_BATCH);
        let offset = ((first + done) as u64) * 8;
        pagemap
            .read_exact_at(&mut buf[..n * 8], offset)
            .map_err(ResidencyError::Pagemap)?;
        for (i, chunk) in buf[..n * 8].chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            if !droppable(u64::from_ne_bytes(bytes)) {
                return Err(ResidencyError::NotFilePage {
                    addr: (first + done + i) * PAGE,
                });
            }
        }
        done += n;
    }
    Ok(())
}

fn madvise_dontneed(start: usize, len: usize) -> Result<(), std::io::Error> {
    // SAFETY: madvise reads no memory of ours; it works on this process's
    // page tables for the range. MADV_DONTNEED is given only by
    // `release_file_pages`, after checking that the range is page-aligned
    // and holds file pages alone, in a mapping its caller found private,
    // file-backed and not writable: dropping such a page loses nothing,
    // because the next access maps the same file page again (the same
    // bytes). An unmapped range makes the call fail with ENOMEM.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Drops this process's mapping of the resident pages of `start..start +
/// len` (`MADV_DONTNEED`); they stay in the page cache and fault back in as
/// they are used.
///
/// For ranges of a **private, file-backed, not writable** mapping, such as
/// an executable's or a shared library's code and read-only data (the
/// caller's part: `/proc/self/smaps` says which). Before dropping anything
/// it reads `/proc/self/pagemap` and refuses with
/// [`ResidencyError::NotFilePage`] if any page is a private copy rather than
/// the file's own page (a read-only-after-relocation segment the dynamic
/// linker wrote is one): dropping a copy would bring back the file's
/// original bytes.
///
/// Not for a mapping another thread may make writable, unmap or replace
/// while this runs (`mprotect`, `munmap`, `dlclose`). A library loaded
/// meanwhile (`dlopen`, e.g. glibc's NSS modules) only adds mappings; its
/// segments are written while still writable, so a caller that skips
/// writable mappings and ones holding anonymous pages skips them, and this
/// check catches a copy made since. relocd unloads no library.
pub fn release_file_pages(start: usize, len: usize) -> Result<(), ResidencyError> {
    if len == 0 || start % PAGE != 0 || len % PAGE != 0 || start.checked_add(len).is_none() {
        return Err(ResidencyError::BadRange { start, len });
    }
    check_file_pages(start, len)?;
    madvise_dontneed(start, len).map_err(|source| ResidencyError::Madvise { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_entries_that_may_be_dropped() {
        assert!(droppable(0), "nothing mapped");
        assert!(droppable(PM_PRESENT | PM_FILE | 0x1234), "a file page");
        assert!(
            !droppable(PM_PRESENT | 0x1234),
            "a private (anonymous) copy"
        );
        assert!(!droppable(PM_SWAP | 0x55), "a swapped-out copy");
        assert!(!droppable(PM_SWAP | PM_FILE), "swapped shared memory");
    }

    #[test]
    fn ranges_must_be_whole_pages() {
        for (start, len) in [
            (0x1001, PAGE),
            (0x1000, 0),
            (0x1000, 100),
            (usize::MAX - 4095, 8192),
        ] {
            assert!(
                matches!(
                    release_file_pages(start, len),
                    Err(ResidencyError::BadRange { .. })
                ),
                "{start:#x}+{len}"
            );
        }
    }

    #[test]
    fn a_written_private_page_is_refused() {
        // Heap memory: present, anonymous. The check must refuse it before
        // MADV_DONTNEED (which would zero it).
        let mut block = vec![0u8; 4 * PAGE];
        let base = block.as_mut_ptr() as usize;
        let page = base.div_ceil(PAGE) * PAGE;
        block[page - base] = 0xA5;
        match release_file_pages(page, PAGE) {
            Err(ResidencyError::NotFilePage { addr }) => assert_eq!(addr, page),
            Err(ResidencyError::Pagemap(e)) => {
                eprintln!("pagemap unreadable here ({e}); the check refuses anyway");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(block[page - base], 0xA5, "the page kept its byte");
    }
}
