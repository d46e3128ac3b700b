//! Page-table normalisation (save) and localisation (restore) for 64-bit PV
//! guests with 4-level paging, plus the `cr3` conversions.
//!
//! Both directions validate the whole page first and write only when every
//! entry is acceptable: on `Err` or [`Normalised::Deferred`] the page is
//! left exactly as it was given.

use super::{
    FrameMap, PvError, MAX_FRAME, PAGE_PRESENT, PAGE_PSE, PAGE_SHIFT, PAGE_SIZE, PTES_PER_PAGE,
    PTE_FRAME_MASK, XEN_L4_FIRST_SLOT, XEN_L4_LAST_SLOT,
};

/// Whether the guest still runs while its pages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pre-copy: a foreign frame is a race with the guest, the page is
    /// deferred to the paused round.
    Live,
    /// Stop-and-copy: a foreign frame is an error.
    Paused,
}

/// What a rewrite changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Present entries whose frame was rewritten.
    pub rewritten: u16,
    /// Xen L4 slots set to zero (non-zero before).
    pub cleared: u16,
}

/// Outcome of [`normalise_page_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Normalised {
    /// The page was rewritten in place.
    Done(Counts),
    /// Live mode only: entry `slot` names `mfn`, which is not the guest's.
    /// The page is untouched; send its pfn as `XTAB` now and re-send it
    /// once the guest is paused (Xen's deferred pages).
    Deferred {
        /// First offending entry.
        slot: u16,
        /// Its machine frame.
        mfn: u64,
    },
}

fn check_level(level: u8) -> Result<(), PvError> {
    if (1..=4).contains(&level) {
        Ok(())
    } else {
        Err(PvError::BadLevel(level))
    }
}

fn pte_at(page: &[u8; PAGE_SIZE], i: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = page.get(i * 8..i * 8 + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn set_pte(page: &mut [u8; PAGE_SIZE], i: usize, v: u64) {
    if let Some(s) = page.get_mut(i * 8..i * 8 + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn is_xen_slot(level: u8, i: usize) -> bool {
    level == 4 && (XEN_L4_FIRST_SLOT..=XEN_L4_LAST_SLOT).contains(&i)
}

fn frame_of(pte: u64) -> u64 {
    (pte & PTE_FRAME_MASK) >> PAGE_SHIFT
}

/// `pte` with its frame replaced; `None` if `frame` does not fit bits 12..=51.
fn merge(pte: u64, frame: u64) -> Option<u64> {
    (frame <= MAX_FRAME).then_some((pte & !PTE_FRAME_MASK) | (frame << PAGE_SHIFT))
}

/// Entry index as reported in errors (below 512, so it always fits).
fn slot(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

/// Rewrites one page-table page from mfns to pfns for the stream.
///
/// `level` is the table's level (1..=4, from the page's `L?TAB` type).
/// Rules (Xen's `normalise_pagetable` for 4-level guests): in an L4, Xen's
/// slots 256..=271 become 0; entries without the present bit are kept as
/// they are; a present entry above L1 with PSE, or a present entry whose
/// frame the map does not know, is [`Normalised::Deferred`] in
/// [`Mode::Live`] (the guest changed the page under the copy; Xen's saver
/// defers only the second case and fails on the first, a race seen on
/// real guests) and [`PvError::Superpage`] or [`PvError::ForeignFrame`] in
/// [`Mode::Paused`]; every other present entry
/// gets its pfn in bits 12..=51, all other bits kept. The first offending
/// entry is reported and the page is then left untouched.
pub fn normalise_page_table(
    level: u8,
    page: &mut [u8; PAGE_SIZE],
    map: &impl FrameMap,
    mode: Mode,
) -> Result<Normalised, PvError> {
    check_level(level)?;
    // First pass: validate only.
    for i in 0..PTES_PER_PAGE {
        let pte = pte_at(page, i);
        if is_xen_slot(level, i) || pte & PAGE_PRESENT == 0 {
            continue;
        }
        if level > 1 && pte & PAGE_PSE != 0 {
            // Read while the guest runs, a page typed as a table may have
            // been freed and reused for data between the type lookup and
            // the copy: it goes again in the paused round, where a real
            // superpage is refused.
            return match mode {
                Mode::Live => Ok(Normalised::Deferred {
                    slot: slot(i),
                    mfn: frame_of(pte),
                }),
                Mode::Paused => Err(PvError::Superpage {
                    level,
                    slot: slot(i),
                    pte,
                }),
            };
        }
        let mfn = frame_of(pte);
        match map.mfn_to_pfn(mfn) {
            Some(pfn) if pfn <= MAX_FRAME => {}
            Some(pfn) => return Err(PvError::FrameTooLarge(pfn)),
            None => {
                return match mode {
                    Mode::Live => Ok(Normalised::Deferred { slot: slot(i), mfn }),
                    Mode::Paused => Err(PvError::ForeignFrame { slot: slot(i), mfn }),
                }
            }
        }
    }
    // Second pass: rewrite. The lookups are repeated rather than stored
    // (no 4 KiB scratch array on the stack); a map that changes between
    // the passes can at worst leave an entry as it was.
    let mut counts = Counts::default();
    for i in 0..PTES_PER_PAGE {
        let pte = pte_at(page, i);
        if is_xen_slot(level, i) {
            if pte != 0 {
                set_pte(page, i, 0);
                counts.cleared += 1;
            }
            continue;
        }
        if pte & PAGE_PRESENT == 0 {
            continue;
        }
        if let Some(new) = map.mfn_to_pfn(frame_of(pte)).and_then(|p| merge(pte, p)) {
            set_pte(page, i, new);
            counts.rewritten += 1;
        }
    }
    Ok(Normalised::Done(counts))
}

/// Rewrites one page-table page from pfns (as received) to mfns.
///
/// The inverse of [`normalise_page_table`] for a table that came from it:
/// non-present entries are kept, present ones get the mfn of their pfn.
/// Stricter than Xen's `x86_pv_localise_page`: a present entry with PSE
/// above L1 ([`PvError::Superpage`]) or a present entry in Xen's L4 slots
/// ([`PvError::XenSlotPresent`]) is refused (Xen's sender never produces
/// either), and a pfn the map cannot resolve is [`PvError::UnmappedPfn`]
/// (Xen populates such pfns first: call [`pfns_to_populate`], populate,
/// then call this). On error the page is untouched.
pub fn localise_page_table(
    level: u8,
    page: &mut [u8; PAGE_SIZE],
    map: &impl FrameMap,
) -> Result<Counts, PvError> {
    check_level(level)?;
    for i in 0..PTES_PER_PAGE {
        let pte = pte_at(page, i);
        if pte & PAGE_PRESENT == 0 {
            continue;
        }
        if is_xen_slot(level, i) {
            return Err(PvError::XenSlotPresent { slot: slot(i) });
        }
        if level > 1 && pte & PAGE_PSE != 0 {
            return Err(PvError::Superpage {
                level,
                slot: slot(i),
                pte,
            });
        }
        let pfn = frame_of(pte);
        match map.pfn_to_mfn(pfn) {
            Some(mfn) if mfn <= MAX_FRAME => {}
            Some(mfn) => return Err(PvError::FrameTooLarge(mfn)),
            None => return Err(PvError::UnmappedPfn { slot: slot(i), pfn }),
        }
    }
    let mut counts = Counts::default();
    for i in 0..PTES_PER_PAGE {
        let pte = pte_at(page, i);
        if pte & PAGE_PRESENT == 0 {
            continue;
        }
        if let Some(new) = map.pfn_to_mfn(frame_of(pte)).and_then(|m| merge(pte, m)) {
            set_pte(page, i, new);
            counts.rewritten += 1;
        }
    }
    Ok(counts)
}

/// Lists, without duplicates and in entry order, the pfns of present
/// entries that the map cannot resolve yet, so the host can populate them
/// before [`localise_page_table`] (Xen's restorer does the same before it
/// localises). A pfn `>= p2m_size` is [`PvError::UnmappedPfn`]: it cannot
/// be populated. Returns how many pfns were written to `out`.
pub fn pfns_to_populate(
    level: u8,
    page: &[u8; PAGE_SIZE],
    map: &impl FrameMap,
    p2m_size: u64,
    out: &mut [u64],
) -> Result<usize, PvError> {
    check_level(level)?;
    let mut n = 0usize;
    for i in 0..PTES_PER_PAGE {
        let pte = pte_at(page, i);
        if pte & PAGE_PRESENT == 0 || is_xen_slot(level, i) {
            continue;
        }
        let pfn = frame_of(pte);
        if pfn >= p2m_size {
            return Err(PvError::UnmappedPfn { slot: slot(i), pfn });
        }
        if map.pfn_to_mfn(pfn).is_some() {
            continue;
        }
        let seen = out.get(..n).is_some_and(|o| o.contains(&pfn));
        if seen {
            continue;
        }
        let cell = out.get_mut(n).ok_or(PvError::BufferTooSmall {
            need: n + 1,
            have: n,
        })?;
        *cell = pfn;
        n += 1;
    }
    Ok(n)
}

/// The frame in a 64-bit guest's `cr3` (`xen_cr3_to_pfn`: `cr3 >> 12`).
pub const fn cr3_to_pfn(cr3: u64) -> u64 {
    cr3 >> PAGE_SHIFT
}

/// A 64-bit guest's `cr3` for a frame (`xen_pfn_to_cr3`: `pfn << 12`);
/// `None` if the frame does not fit 52 bits of address.
pub const fn pfn_to_cr3(pfn: u64) -> Option<u64> {
    if pfn > MAX_FRAME {
        None
    } else {
        Some(pfn << PAGE_SHIFT)
    }
}

/// Save side: a vCPU's `cr3` (`ctrlreg[3]`) from mfn to pfn. The low 12
/// bits are dropped, as Xen does. A frame that is not the guest's is
/// [`PvError::ForeignFrame`] with slot 0.
pub fn normalise_cr3(cr3: u64, map: &impl FrameMap) -> Result<u64, PvError> {
    let mfn = cr3_to_pfn(cr3);
    let pfn = map
        .mfn_to_pfn(mfn)
        .ok_or(PvError::ForeignFrame { slot: 0, mfn })?;
    pfn_to_cr3(pfn).ok_or(PvError::FrameTooLarge(pfn))
}

/// Restore side: a vCPU's `cr3` from pfn to mfn. An unknown pfn is
/// [`PvError::UnmappedPfn`] with slot 0. (Xen also requires the pfn's type
/// to be L4TAB; that check belongs to the caller, who knows the types.)
pub fn localise_cr3(cr3: u64, map: &impl FrameMap) -> Result<u64, PvError> {
    let pfn = cr3_to_pfn(cr3);
    let mfn = map
        .pfn_to_mfn(pfn)
        .ok_or(PvError::UnmappedPfn { slot: 0, pfn })?;
    pfn_to_cr3(mfn).ok_or(PvError::FrameTooLarge(mfn))
}

/// Save side: a 64-bit vCPU's user page table (`ctrlreg[1]`). Zero (none)
/// stays zero; otherwise the frame `value >> 12` becomes `1 | pfn << 12`
/// (bit 0 tells the receiver that a table is present).
pub fn normalise_user_cr3(value: u64, map: &impl FrameMap) -> Result<u64, PvError> {
    if value == 0 {
        return Ok(0);
    }
    let mfn = value >> PAGE_SHIFT;
    let pfn = map
        .mfn_to_pfn(mfn)
        .ok_or(PvError::ForeignFrame { slot: 0, mfn })?;
    pfn_to_cr3(pfn)
        .map(|v| v | 1)
        .ok_or(PvError::FrameTooLarge(pfn))
}

/// Restore side: `ctrlreg[1]` back to `mfn << 12` when bit 0 is set; left
/// as it is otherwise, as Xen's restorer does.
pub fn localise_user_cr3(value: u64, map: &impl FrameMap) -> Result<u64, PvError> {
    if value & 1 == 0 {
        return Ok(value);
    }
    let pfn = value >> PAGE_SHIFT;
    let mfn = map
        .pfn_to_mfn(pfn)
        .ok_or(PvError::UnmappedPfn { slot: 0, pfn })?;
    pfn_to_cr3(mfn).ok_or(PvError::FrameTooLarge(mfn))
}
