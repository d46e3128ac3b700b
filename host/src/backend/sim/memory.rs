//! Sparse guest memory: pages that were never written (or were last written
//! with zeros) hold no data and read as zeros.
//!
//! Storage is a table with one slot per chunk of [`CHUNK_PAGES`] pages.
//! A chunk is allocated on its first write as one anonymous mapping (the
//! kernel backs a page only when it is first touched; a memory written in
//! long runs, a migration's destination, asks for huge pages), with a
//! bitmap of the pages that hold data. Chunks of a destroyed domain go to
//! its hypervisor's [`ChunkPool`] and serve its next domains, as a
//! hypervisor reuses its free memory: no new mapping, and no faulting and
//! clearing by the host kernel, the cost of which would otherwise land in
//! the middle of a migration. Pages are stored in place, so writing a
//! page is one copy and no allocation, and a run of pfns is one slice.
//! A 1 GiB guest (262144 pages) costs a table of 16 slots until it is
//! written, and then what it touches.
//!
//! A page whose bit is clear reads as zeros whatever its chunk holds (a
//! pooled chunk holds what its last domain left); it is cleared when it
//! is first written again.

use std::sync::{Mutex, PoisonError, Weak};

use relocd_hypercall::anon::AnonMemory;

use super::PAGE_SIZE;

/// Pages per lazily allocated chunk (64 MiB).
pub const CHUNK_PAGES: usize = 16384;

/// One 4 KiB page.
pub type Page = [u8; PAGE_SIZE];

/// The most freed memory one hypervisor keeps for its next domains.
pub(crate) const POOL_MAX_BYTES: usize = 1 << 30;

/// Chunk memory freed by destroyed domains, kept (at most
/// [`POOL_MAX_BYTES`]) for the next domains of the same hypervisor.
#[derive(Debug, Default)]
pub(crate) struct ChunkPool {
    /// The chunks, and whether each was mapped for huge pages.
    free: Mutex<Vec<(AnonMemory, bool)>>,
}

impl ChunkPool {
    /// A pooled chunk of `len` bytes mapped as `huge` asks, if any.
    fn take(&self, len: usize, huge: bool) -> Option<AnonMemory> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let i = free
            .iter()
            .position(|(m, h)| m.as_slice().len() == len && *h == huge)?;
        Some(free.swap_remove(i).0)
    }

    /// Keeps `mem` for reuse, or unmaps it when the pool is full.
    fn give(&self, mem: AnonMemory, huge: bool) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = free.iter().map(|(m, _)| m.as_slice().len()).sum();
        if held + mem.as_slice().len() <= POOL_MAX_BYTES {
            free.push((mem, huge));
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        let free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.iter().map(|(m, _)| m.as_slice().len()).sum()
    }
}

#[derive(Debug)]
struct Chunk {
    data: AnonMemory,
    /// Bit `i % 64` of word `i / 64`: page `i` of the chunk holds data.
    present: Box<[u64]>,
    count: usize,
}

impl Chunk {
    /// A chunk from `pool` or newly mapped; `None` when the host cannot
    /// map the memory.
    fn new(pages: usize, huge: bool, pool: &Weak<ChunkPool>) -> Option<Self> {
        let len = pages * PAGE_SIZE;
        let data = match pool.upgrade().and_then(|p| p.take(len, huge)) {
            Some(m) => m,
            None => AnonMemory::new(len, huge).ok()?,
        };
        Some(Chunk {
            data,
            present: vec![0; pages.div_ceil(64)].into_boxed_slice(),
            count: 0,
        })
    }

    fn has(&self, i: usize) -> bool {
        self.present
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Marks page `i` as holding data; returns whether it was new.
    fn set(&mut self, i: usize) -> bool {
        let Some(w) = self.present.get_mut(i / 64) else {
            return false;
        };
        let bit = 1 << (i % 64);
        let new = *w & bit == 0;
        *w |= bit;
        self.count += usize::from(new);
        new
    }

    fn page(&self, i: usize) -> Option<&Page> {
        self.data
            .as_slice()
            .get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE)?
            .try_into()
            .ok()
    }

    fn page_mut(&mut self, i: usize) -> Option<&mut Page> {
        self.data
            .as_mut_slice()
            .get_mut(i * PAGE_SIZE..(i + 1) * PAGE_SIZE)?
            .try_into()
            .ok()
    }
}

/// Sparse memory of a fixed number of pages.
#[derive(Debug)]
pub(crate) struct SparseMemory {
    nr_pages: u64,
    chunks: Vec<Option<Chunk>>,
    allocated: u64,
    /// Chunks ask for huge pages.
    huge: bool,
    /// Where chunks come from and go back to.
    pool: Weak<ChunkPool>,
}

fn split(pfn: u64) -> (usize, usize) {
    let chunk = CHUNK_PAGES as u64;
    // Callers check pfn < nr_pages, and the chunk table of nr_pages fits in
    // memory, so both indices fit in usize.
    (
        usize::try_from(pfn / chunk).unwrap_or(usize::MAX),
        usize::try_from(pfn % chunk).unwrap_or(usize::MAX),
    )
}

/// Whether every byte is zero. A page whose first word is not zero is told
/// at once; otherwise an OR over the whole slice with no early exit: the
/// compiler vectorises it, which beats stopping early on the mostly-zero
/// pages this is asked about.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    if data.iter().take(8).any(|&b| b != 0) {
        return false;
    }
    data.iter().fold(0, |acc, &b| acc | b) == 0
}

impl SparseMemory {
    /// A zeroed memory of `nr_pages` pages; `huge`: it will be written in
    /// long runs (a destination's), so its chunks ask for huge pages.
    /// Chunks come from `pool` when it has them, and go back to it.
    pub(crate) fn new(nr_pages: u64, huge: bool, pool: Weak<ChunkPool>) -> Self {
        let nr_chunks = nr_pages.div_ceil(CHUNK_PAGES as u64);
        let nr_chunks = usize::try_from(nr_chunks).unwrap_or(usize::MAX);
        let mut chunks = Vec::new();
        chunks.resize_with(nr_chunks, || None);
        SparseMemory {
            nr_pages,
            chunks,
            allocated: 0,
            huge,
            pool,
        }
    }

    /// The number of pages.
    pub(crate) fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The number of pages that hold data.
    pub(crate) fn allocated_pages(&self) -> u64 {
        self.allocated
    }

    /// The pages chunk `c` has (the last one may be short).
    fn chunk_pages(&self, c: usize) -> usize {
        let start = c as u64 * CHUNK_PAGES as u64;
        let left = self.nr_pages.saturating_sub(start);
        usize::try_from(left.min(CHUNK_PAGES as u64)).unwrap_or(CHUNK_PAGES)
    }

    /// The page at `pfn` if it holds data; `None` when it reads as zeros
    /// (or is out of range).
    pub(crate) fn get(&self, pfn: u64) -> Option<&Page> {
        if pfn >= self.nr_pages {
            return None;
        }
        let (c, p) = split(pfn);
        let chunk = self.chunks.get(c)?.as_ref()?;
        if !chunk.has(p) {
            return None;
        }
        chunk.page(p)
    }

    /// The pages `pfns` as they read, where they are, appended to `runs`:
    /// consecutive pfns stored side by side come as one slice, pages that
    /// hold no data as slices of zeros. `false` (and `runs` as it was)
    /// when a pfn is out of range.
    pub(crate) fn lend<'m>(&'m self, pfns: &[u64], runs: &mut Vec<&'m [u8]>) -> bool {
        use relocd_core::guest::{ZERO_RUN, ZERO_RUN_PAGES};
        let start = runs.len();
        // The run being gathered: `(chunk, first page)` of stored pages or
        // `None` for zeros, and its length in pages.
        let mut cur: Option<(Option<(usize, usize)>, usize)> = None;
        let flush = |cur: Option<(Option<(usize, usize)>, usize)>, runs: &mut Vec<&'m [u8]>| {
            let Some((at, n)) = cur else {
                return true;
            };
            let run = match at {
                Some((c, p)) => self
                    .chunks
                    .get(c)
                    .and_then(Option::as_ref)
                    .and_then(|ch| ch.data.as_slice().get(p * PAGE_SIZE..(p + n) * PAGE_SIZE)),
                None => ZERO_RUN.get(..n * PAGE_SIZE),
            };
            run.map(|r| runs.push(r)).is_some()
        };
        for &pfn in pfns {
            if pfn >= self.nr_pages {
                runs.truncate(start);
                return false;
            }
            let (c, p) = split(pfn);
            let stored = self
                .chunks
                .get(c)
                .and_then(Option::as_ref)
                .is_some_and(|ch| ch.has(p));
            let next = match cur {
                Some((Some((cc, cp)), n)) if stored && cc == c && cp + n == p => {
                    Some((Some((cc, cp)), n + 1))
                }
                Some((None, n)) if !stored && n < ZERO_RUN_PAGES => Some((None, n + 1)),
                _ => {
                    if !flush(cur, runs) {
                        runs.truncate(start);
                        return false;
                    }
                    Some((stored.then_some((c, p)), 1))
                }
            };
            cur = next;
        }
        if !flush(cur, runs) {
            runs.truncate(start);
            return false;
        }
        true
    }

    /// Copies `pfn` into `out` (zeros if it holds no data).
    pub(crate) fn read(&self, pfn: u64, out: &mut [u8]) {
        match self.get(pfn) {
            Some(page) => out.copy_from_slice(page),
            None => out.fill(0),
        }
    }

    /// The page at `pfn` for writing, marked as holding data; `None` when
    /// out of range or when the host cannot back it.
    pub(crate) fn get_mut(&mut self, pfn: u64) -> Option<&mut Page> {
        let (chunk, p, new) = self.mark(pfn)?;
        let page = chunk.page_mut(p)?;
        if new {
            // What a pooled chunk's last domain left there.
            page.fill(0);
        }
        Some(page)
    }

    /// Marks `pfn` as holding data (its chunk allocated if needed):
    /// the chunk, the page's index in it, and whether it is new.
    fn mark(&mut self, pfn: u64) -> Option<(&mut Chunk, usize, bool)> {
        if pfn >= self.nr_pages {
            return None;
        }
        let (c, p) = split(pfn);
        let (pages, huge) = (self.chunk_pages(c), self.huge);
        let slot = self.chunks.get_mut(c)?;
        if slot.is_none() {
            *slot = Some(Chunk::new(pages, huge, &self.pool)?);
        }
        let chunk = slot.as_mut()?;
        let new = chunk.set(p);
        self.allocated += u64::from(new);
        Some((chunk, p, new))
    }

    /// Lends the pages `pfns` for writing, marked as holding data, as
    /// runs of whole pages in order (consecutive pfns of one chunk are one
    /// run), appended to `runs`. What they held before is not cleared: the
    /// borrower writes them whole. `false`, lending nothing, when the pfns
    /// are not ascending (two runs would overlap), one is out of range, or
    /// the host cannot back them; pages already marked then stay marked.
    pub(crate) fn lend_mut<'m>(&'m mut self, pfns: &[u64], runs: &mut Vec<&'m mut [u8]>) -> bool {
        if !pfns.windows(2).all(|w| w[0] < w[1]) {
            return false;
        }
        for &pfn in pfns {
            if self.mark(pfn).is_none() {
                return false;
            }
        }
        let start = runs.len();
        let mut i = 0;
        for (c, slot) in self.chunks.iter_mut().enumerate() {
            let Some(&first) = pfns.get(i) else {
                break;
            };
            if split(first).0 != c {
                continue;
            }
            let Some(chunk) = slot.as_mut() else {
                runs.truncate(start);
                return false;
            };
            // What is left of the chunk after the last run, and the index
            // of its first page.
            let mut rest: &mut [u8] = chunk.data.as_mut_slice();
            let mut at = 0;
            while let Some(&pfn) = pfns.get(i) {
                let (pc, p) = split(pfn);
                if pc != c {
                    break;
                }
                let mut n = 1;
                while pfns.get(i + n) == Some(&(pfn + n as u64)) && split(pfn + n as u64).0 == c {
                    n += 1;
                }
                let taken = std::mem::take(&mut rest);
                let Some((run, tail)) = taken
                    .split_at_mut_checked((p - at) * PAGE_SIZE)
                    .and_then(|(_, r)| r.split_at_mut_checked(n * PAGE_SIZE))
                else {
                    runs.truncate(start);
                    return false;
                };
                runs.push(run);
                rest = tail;
                at = p + n;
                i += n;
            }
        }
        if i != pfns.len() {
            runs.truncate(start);
            return false;
        }
        true
    }

    /// Writes `data` (one page) at `pfn`; a page of zeros is stored as
    /// none ([`discard`](Self::discard)). Returns false when `pfn` is out
    /// of range, `data` is not one page, or the host cannot back it.
    pub(crate) fn write(&mut self, pfn: u64, data: &[u8]) -> bool {
        if pfn >= self.nr_pages || data.len() != PAGE_SIZE {
            return false;
        }
        if is_zero(data) {
            self.discard(pfn);
            return true;
        }
        let Some((chunk, p, _)) = self.mark(pfn) else {
            return false;
        };
        let Some(page) = chunk.page_mut(p) else {
            return false;
        };
        page.copy_from_slice(data);
        true
    }

    /// Makes `pfn` read as zeros: it no longer holds data; a chunk left
    /// without data goes back to the pool.
    pub(crate) fn discard(&mut self, pfn: u64) {
        if pfn >= self.nr_pages {
            return;
        }
        let (c, p) = split(pfn);
        let Some(slot) = self.chunks.get_mut(c) else {
            return;
        };
        let Some(chunk) = slot.as_mut() else {
            return;
        };
        if !chunk.has(p) {
            return;
        }
        if let Some(w) = chunk.present.get_mut(p / 64) {
            *w &= !(1 << (p % 64));
        }
        chunk.count -= 1;
        self.allocated -= 1;
        if chunk.count == 0 {
            if let Some(chunk) = slot.take() {
                self.release(chunk);
            }
        }
    }

    /// Gives a chunk's memory back to the pool (or the host).
    fn release(&self, chunk: Chunk) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give(chunk.data, self.huge);
        }
    }

    /// Frees everything.
    pub(crate) fn clear(&mut self) {
        for chunk in std::mem::take(&mut self.chunks).into_iter().flatten() {
            self.release(chunk);
        }
        self.chunks.shrink_to_fit();
        self.nr_pages = 0;
        self.allocated = 0;
    }
}

impl Drop for SparseMemory {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(byte: u8) -> Vec<u8> {
        vec![byte; PAGE_SIZE]
    }

    #[test]
    fn pages_read_back_and_zeros_take_nothing() {
        // Two chunks and a short third one.
        let nr = 2 * CHUNK_PAGES as u64 + 3;
        let mut m = SparseMemory::new(nr, false, Weak::new());
        let mut out = page(0xee);
        m.read(nr - 1, &mut out);
        assert_eq!(out, page(0));
        assert_eq!(m.chunks.iter().filter(|c| c.is_some()).count(), 0);
        for (pfn, b) in [(0, 1), (CHUNK_PAGES as u64 - 1, 2), (nr - 1, 3)] {
            assert!(m.write(pfn, &page(b)));
        }
        assert_eq!(m.allocated_pages(), 3);
        // The first chunk holds two of them; the second holds nothing.
        assert_eq!(m.chunks.iter().filter(|c| c.is_some()).count(), 2);
        assert!(m.chunks[1].is_none());
        assert_eq!(
            m.chunks[2].as_ref().unwrap().data.as_slice().len(),
            3 * PAGE_SIZE
        );
        m.read(CHUNK_PAGES as u64 - 1, &mut out);
        assert_eq!(out, page(2));
        assert_eq!(m.get(nr - 1).unwrap()[..], page(3)[..]);
        assert!(m.get(1).is_none());
        // Rewriting a page with data does not count it twice.
        assert!(m.write(0, &page(9)));
        assert_eq!(m.allocated_pages(), 3);
        // Out of range or not a page: refused, nothing changes.
        assert!(!m.write(nr, &page(1)));
        assert!(!m.write(5, &page(1)[..100]));
        assert!(m.get_mut(nr).is_none());
        assert_eq!(m.allocated_pages(), 3);
    }

    #[test]
    fn a_zero_page_clears_what_was_there_and_frees_an_empty_chunk() {
        let mut m = SparseMemory::new(CHUNK_PAGES as u64 * 2, true, Weak::new());
        let pfn = CHUNK_PAGES as u64 + 7;
        assert!(m.write(pfn, &page(0x5a)));
        assert!(m.write(pfn + 1, &page(0x5b)));
        assert!(m.write(pfn, &page(0)));
        assert!(m.get(pfn).is_none());
        assert_eq!(m.allocated_pages(), 1);
        // The bytes are gone, not just the bit: marking the page written
        // again shows zeros.
        assert_eq!(m.get_mut(pfn).unwrap()[..], page(0)[..]);
        m.discard(pfn);
        m.discard(pfn + 1);
        assert_eq!(m.allocated_pages(), 0);
        assert!(m.chunks[1].is_none());
        // Discarding what holds nothing is harmless.
        m.discard(pfn);
        m.discard(u64::MAX);
        assert_eq!(m.allocated_pages(), 0);
    }

    /// Lent pages read as copied ones, in as few slices as their storage
    /// allows.
    #[test]
    fn lent_pages_read_as_copies_in_runs() {
        let nr = CHUNK_PAGES as u64 + 40;
        let mut m = SparseMemory::new(nr, false, Weak::new());
        // Stored: 3, 4, 5 (one run), the last page of chunk 0 and the first
        // of chunk 1 (adjacent pfns, two chunks: two runs).
        let stored = [3, 4, 5, CHUNK_PAGES as u64 - 1, CHUNK_PAGES as u64];
        for &pfn in &stored {
            assert!(m.write(pfn, &page(pfn as u8 | 1)));
        }
        // 20 pages without data after pfn 5: zeros in two slices (16 + 4).
        let mut pfns: Vec<u64> = (3..26).collect();
        pfns.extend([CHUNK_PAGES as u64 - 1, CHUNK_PAGES as u64, nr - 1]);
        let mut runs = Vec::new();
        assert!(m.lend(&pfns, &mut runs));
        let lens: Vec<usize> = runs.iter().map(|r| r.len() / PAGE_SIZE).collect();
        assert_eq!(lens, [3, 16, 4, 1, 1, 1]);
        let lent: Vec<u8> = runs.concat();
        let mut copied = vec![0u8; pfns.len() * PAGE_SIZE];
        for (&pfn, out) in pfns.iter().zip(copied.chunks_mut(PAGE_SIZE)) {
            m.read(pfn, out);
        }
        assert!(lent == copied);
        // A pfn out of range: nothing lent, `runs` as it was.
        let mut runs = vec![&b"kept"[..]];
        assert!(!m.lend(&[3, nr], &mut runs));
        assert_eq!(runs, [&b"kept"[..]]);
    }

    /// A chunk a destroyed memory left in the pool serves the next one,
    /// and its old bytes never show.
    #[test]
    fn pages_lent_for_writing_come_in_runs_and_hold_what_was_written() {
        let nr = CHUNK_PAGES as u64 + 40;
        let mut m = SparseMemory::new(nr, false, Weak::new());
        assert!(m.write(7, &page(0x77)));
        // 3..6 (one run, skipping nothing), 7 (already held), 9, then the
        // last page of chunk 0 and the first two of chunk 1 (two runs).
        let last0 = CHUNK_PAGES as u64 - 1;
        let pfns = [3, 4, 5, 6, 7, 9, last0, last0 + 1, last0 + 2];
        let mut runs = Vec::new();
        assert!(m.lend_mut(&pfns, &mut runs));
        let lens: Vec<usize> = runs.iter().map(|r| r.len() / PAGE_SIZE).collect();
        assert_eq!(lens, [5, 1, 1, 2]);
        let mut k = 0;
        for run in &mut runs {
            for p in run.chunks_exact_mut(PAGE_SIZE) {
                p.fill(k + 1);
                k += 1;
            }
        }
        drop(runs);
        for (k, &pfn) in pfns.iter().enumerate() {
            assert_eq!(
                m.get(pfn).map(|p| p.to_vec()),
                Some(page(k as u8 + 1)),
                "pfn {pfn}"
            );
        }
        assert_eq!(m.allocated_pages(), pfns.len() as u64);
        assert!(m.get(8).is_none());
        // Not ascending, a repeat, or out of range: nothing lent.
        for bad in [&[5u64, 4][..], &[4, 4], &[3, nr]] {
            let mut runs = Vec::new();
            assert!(!m.lend_mut(bad, &mut runs), "{bad:?}");
            assert!(runs.is_empty());
        }
    }

    #[test]
    fn pooled_chunks_are_reused_and_read_as_zeros_until_written() {
        use std::sync::Arc;
        let pool = Arc::new(ChunkPool::default());
        let nr = CHUNK_PAGES as u64;
        let mut old = SparseMemory::new(nr, false, Arc::downgrade(&pool));
        for pfn in 0..8 {
            assert!(old.write(pfn, &page(0xaa)));
        }
        drop(old);
        assert_eq!(pool.held_bytes(), CHUNK_PAGES * PAGE_SIZE);
        let mut new = SparseMemory::new(nr, false, Arc::downgrade(&pool));
        assert!(new.write(7, &page(0x11)));
        // The chunk came from the pool.
        assert_eq!(pool.held_bytes(), 0);
        let mut out = page(0xee);
        for pfn in 0..7 {
            assert!(new.get(pfn).is_none());
            new.read(pfn, &mut out);
            assert_eq!(out, page(0));
        }
        let mut runs = Vec::new();
        assert!(new.lend(&[0, 1, 7], &mut runs));
        assert_eq!(runs.concat(), [page(0), page(0), page(0x11)].concat());
        // Written again in place: cleared first.
        new.get_mut(3).unwrap()[0] = 5;
        assert_eq!(new.get(3).unwrap()[1..], page(0)[1..]);
        // A memory of another hugeness does not take it.
        drop(new);
        let mut huge = SparseMemory::new(nr, true, Arc::downgrade(&pool));
        assert!(huge.write(0, &page(1)));
        assert_eq!(pool.held_bytes(), CHUNK_PAGES * PAGE_SIZE);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        use std::sync::Arc;
        let pool = Arc::new(ChunkPool::default());
        let chunks = POOL_MAX_BYTES / (CHUNK_PAGES * PAGE_SIZE) + 1;
        let mut m = SparseMemory::new((chunks * CHUNK_PAGES) as u64, false, Arc::downgrade(&pool));
        for c in 0..chunks {
            assert!(m.write((c * CHUNK_PAGES) as u64, &page(1)));
        }
        drop(m);
        assert_eq!(pool.held_bytes(), POOL_MAX_BYTES);
    }

    #[test]
    fn a_page_written_in_place_holds_data() {
        let mut m = SparseMemory::new(10, false, Weak::new());
        m.get_mut(4).unwrap()[17] = 1;
        assert_eq!(m.allocated_pages(), 1);
        assert_eq!(m.get(4).unwrap()[17], 1);
        m.clear();
        assert_eq!(m.nr_pages(), 0);
        assert!(m.get(4).is_none());
    }
}
