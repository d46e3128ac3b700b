//! Sparse guest memory: pages that were never written (or were last written
//! with zeros) take no memory and read as zeros.
//!
//! Storage is two levels: a table with one slot per chunk of
//! [`CHUNK_PAGES`] pages, and per chunk, allocated on its first write, one
//! slot per page holding a boxed 4 KiB page or nothing. A 1 GiB guest
//! (262144 pages) costs a 4 KiB table until it is written.

use super::PAGE_SIZE;

/// Pages per lazily allocated chunk.
pub const CHUNK_PAGES: usize = 512;

/// One 4 KiB page.
pub type Page = [u8; PAGE_SIZE];

type Chunk = Box<[Option<Box<Page>>]>;

/// Sparse memory of a fixed number of pages.
#[derive(Debug)]
pub(crate) struct SparseMemory {
    nr_pages: u64,
    chunks: Vec<Option<Chunk>>,
    allocated: u64,
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
    /// A zeroed memory of `nr_pages` pages.
    pub(crate) fn new(nr_pages: u64) -> Self {
        let nr_chunks = nr_pages.div_ceil(CHUNK_PAGES as u64);
        let nr_chunks = usize::try_from(nr_chunks).unwrap_or(usize::MAX);
        let mut chunks = Vec::new();
        chunks.resize_with(nr_chunks, || None);
        SparseMemory {
            nr_pages,
            chunks,
            allocated: 0,
        }
    }

    /// The number of pages.
    pub(crate) fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The number of pages that hold storage.
    pub(crate) fn allocated_pages(&self) -> u64 {
        self.allocated
    }

    /// The stored page at `pfn`, or `None` when it reads as zeros (or is
    /// out of range).
    pub(crate) fn get(&self, pfn: u64) -> Option<&Page> {
        if pfn >= self.nr_pages {
            return None;
        }
        let (c, p) = split(pfn);
        self.chunks.get(c)?.as_ref()?.get(p)?.as_deref()
    }

    /// Copies `pfn` into `out` (zeros if never written).
    pub(crate) fn read(&self, pfn: u64, out: &mut [u8]) {
        match self.get(pfn) {
            Some(page) => out.copy_from_slice(page),
            None => out.fill(0),
        }
    }

    /// The page at `pfn` for writing, allocated (zeroed) if needed; `None`
    /// when out of range.
    pub(crate) fn get_mut(&mut self, pfn: u64) -> Option<&mut Page> {
        if pfn >= self.nr_pages {
            return None;
        }
        let (c, p) = split(pfn);
        let chunk = self.chunks.get_mut(c)?.get_or_insert_with(|| {
            let mut slots = Vec::new();
            slots.resize_with(CHUNK_PAGES, || None);
            slots.into_boxed_slice()
        });
        let slot = chunk.get_mut(p)?;
        if slot.is_none() {
            self.allocated += 1;
        }
        Some(slot.get_or_insert_with(|| Box::new([0; PAGE_SIZE])))
    }

    /// Writes `data` (one page) at `pfn`; a page of zeros frees the
    /// storage instead. Returns false when `pfn` is out of range.
    pub(crate) fn write(&mut self, pfn: u64, data: &[u8]) -> bool {
        if pfn >= self.nr_pages {
            return false;
        }
        if is_zero(data) {
            self.discard(pfn);
            return true;
        }
        let (c, p) = split(pfn);
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let chunk = chunk.get_or_insert_with(|| {
            let mut slots = Vec::new();
            slots.resize_with(CHUNK_PAGES, || None);
            slots.into_boxed_slice()
        });
        let Some(slot) = chunk.get_mut(p) else {
            return false;
        };
        match slot {
            Some(page) => page.copy_from_slice(data),
            None => {
                // A new page is made from the data (one copy), not zeroed
                // first and then overwritten.
                let Ok(page) = Box::<[u8]>::from(data).try_into() else {
                    return false;
                };
                *slot = Some(page);
                self.allocated += 1;
            }
        }
        true
    }

    /// Frees the storage of `pfn`, which then reads as zeros.
    pub(crate) fn discard(&mut self, pfn: u64) {
        let (c, p) = split(pfn);
        let Some(Some(chunk)) = self.chunks.get_mut(c) else {
            return;
        };
        let freed = chunk.get_mut(p).and_then(Option::take).is_some();
        if !freed {
            return;
        }
        self.allocated -= 1;
        if chunk.iter().all(Option::is_none) {
            self.chunks[c] = None;
        }
    }

    /// Frees everything.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.chunks.shrink_to_fit();
        self.nr_pages = 0;
        self.allocated = 0;
    }
}
