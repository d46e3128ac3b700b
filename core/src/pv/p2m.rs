//! The guest's p2m: a slice-backed [`FrameMap`], the X86_PV_P2M_FRAMES
//! body, and the arithmetic of the two ways a PV guest publishes its p2m.
//!
//! A 64-bit PV guest's p2m is an array of mfns indexed by pfn, 512 per
//! page, found by the saver in one of two ways (Xen's `map_p2m`):
//!
//! - the **linear list** (`arch.p2m_cr3` non-zero in shared_info): the
//!   array is mapped at `arch.p2m_vaddr` in the guest's own page tables;
//!   the saver walks those tables from the `p2m_cr3` root, level 4 down to
//!   1, see [`p2m_list_check`] and [`p2m_list_level_range`];
//! - the **3-level tree** (`arch.pfn_to_mfn_frame_list_list`, as Linux
//!   sets it up): one frame-list-list page holding the mfns of frame-list
//!   pages, each holding the mfns of up to 512 p2m leaf pages, each
//!   holding 512 p2m entries. See [`p2m_tree_shape`].
//!
//! The host maps the pages; these functions only say how many and check
//! what was read.

use super::{FrameMap, PvError, INVALID_MFN, PAGE_SHIFT, PAGE_SIZE};

/// A [`FrameMap`] over the guest's p2m and a sorted reverse index.
///
/// `p2m[pfn]` is the mfn of `pfn` ([`INVALID_MFN`] for holes); `by_mfn`
/// holds `(mfn, pfn)` pairs sorted by mfn, as [`fill_by_mfn`] makes them.
/// `mfn_to_pfn` answers only when the p2m agrees (`p2m[pfn] == mfn`), like
/// Xen's `mfn_in_pseudophysmap` does with the m2p.
#[derive(Debug, Clone, Copy)]
pub struct SortedFrames<'a> {
    p2m: &'a [u64],
    by_mfn: &'a [(u64, u64)],
}

impl<'a> SortedFrames<'a> {
    /// Wraps the two slices; `None` if `by_mfn` is not sorted by mfn.
    pub fn new(p2m: &'a [u64], by_mfn: &'a [(u64, u64)]) -> Option<Self> {
        by_mfn
            .is_sorted_by_key(|&(m, _)| m)
            .then_some(SortedFrames { p2m, by_mfn })
    }
    /// The p2m slice.
    pub fn p2m(&self) -> &'a [u64] {
        self.p2m
    }
}

impl FrameMap for SortedFrames<'_> {
    fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        let i = self.by_mfn.binary_search_by_key(&mfn, |&(m, _)| m).ok()?;
        let (_, pfn) = *self.by_mfn.get(i)?;
        (self.pfn_to_mfn(pfn) == Some(mfn)).then_some(pfn)
    }
    fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        let i = usize::try_from(pfn).ok()?;
        self.p2m.get(i).copied().filter(|&m| m != INVALID_MFN)
    }
}

/// Fills `out` with the `(mfn, pfn)` pairs of every populated p2m entry,
/// sorted by mfn, and returns how many were written. `out` needs as many
/// slots as the p2m has populated entries ([`PvError::BufferTooSmall`]
/// otherwise, with `out` partly written).
pub fn fill_by_mfn(p2m: &[u64], out: &mut [(u64, u64)]) -> Result<usize, PvError> {
    let populated = p2m.iter().filter(|&&m| m != INVALID_MFN).count();
    let have = out.len();
    let dst = out.get_mut(..populated).ok_or(PvError::BufferTooSmall {
        need: populated,
        have,
    })?;
    let pairs = (0u64..)
        .zip(p2m)
        .filter(|&(_, &m)| m != INVALID_MFN)
        .map(|(pfn, &m)| (m, pfn));
    for (slot, pair) in dst.iter_mut().zip(pairs) {
        *slot = pair;
    }
    dst.sort_unstable();
    Ok(populated)
}

/// p2m entries per page for a guest width in octets: 512 for 64-bit
/// guests (8), 1024 for 32-bit ones (4).
pub const fn frames_per_page(width: u8) -> Result<u64, PvError> {
    match width {
        4 | 8 => Ok((PAGE_SIZE / width as usize) as u64),
        w => Err(PvError::BadWidth(w)),
    }
}

/// Pages holding a p2m of `p2m_size` entries (Xen's `p2m_frames`,
/// `(max_pfn + fpp) / fpp` with `max_pfn = p2m_size - 1`).
pub const fn p2m_frames(p2m_size: u64, width: u8) -> Result<u64, PvError> {
    match frames_per_page(width) {
        Ok(fpp) => Ok(p2m_size.div_ceil(fpp)),
        Err(e) => Err(e),
    }
}

fn frame_range(start_pfn: u32, end_pfn: u32, width: u8) -> Result<(u64, u64), PvError> {
    let fpp = frames_per_page(width)?;
    if start_pfn > end_pfn {
        return Err(PvError::RangeInverted {
            start: start_pfn.into(),
            end: end_pfn.into(),
        });
    }
    let first = u64::from(start_pfn) / fpp;
    Ok((first, u64::from(end_pfn) / fpp - first + 1))
}

/// Body length of X86_PV_P2M_FRAMES for `start_pfn..=end_pfn`:
/// `8 + 8 * (end / fpp - start / fpp + 1)`, which Xen's receiver demands
/// exactly.
pub fn p2m_frames_record_len(start_pfn: u32, end_pfn: u32, width: u8) -> Result<usize, PvError> {
    let (_, n) = frame_range(start_pfn, end_pfn, width)?;
    // n <= 2^32 / 512 + 1, so this cannot overflow a 64-bit usize; checked
    // anyway for 32-bit hosts.
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(8))
        .and_then(|b| b.checked_add(8))
        .ok_or(PvError::P2mSize(n))
}

/// Writes the X86_PV_P2M_FRAMES body into `out` and returns its length.
///
/// `frame_mfns[k]` is the mfn of the p2m page holding pfns
/// `(start_pfn / fpp + k) * fpp ..`; there must be exactly
/// `end / fpp - start / fpp + 1` of them. Each is written as its pfn
/// through `map` (a frame that is not the guest's is
/// [`PvError::ForeignFrame`] with `slot = k`, saturated to `u16::MAX`).
/// Layout: start_pfn u32, end_pfn u32, then one u64 pfn per frame, all
/// little-endian. `out` may hold garbage on error.
pub fn write_p2m_frames_record(
    start_pfn: u32,
    end_pfn: u32,
    width: u8,
    frame_mfns: &[u64],
    map: &impl FrameMap,
    out: &mut [u8],
) -> Result<usize, PvError> {
    let (_, n) = frame_range(start_pfn, end_pfn, width)?;
    if u64::try_from(frame_mfns.len()).ok() != Some(n) {
        return Err(PvError::FrameCountMismatch {
            expected: n,
            got: frame_mfns.len(),
        });
    }
    let len = p2m_frames_record_len(start_pfn, end_pfn, width)?;
    let have = out.len();
    let body = out
        .get_mut(..len)
        .ok_or(PvError::BufferTooSmall { need: len, have })?;
    let (head, frames) = body.split_at_mut(8);
    head[..4].copy_from_slice(&start_pfn.to_le_bytes());
    head[4..].copy_from_slice(&end_pfn.to_le_bytes());
    for (k, (&mfn, dst)) in frame_mfns
        .iter()
        .zip(frames.chunks_exact_mut(8))
        .enumerate()
    {
        let pfn = map.mfn_to_pfn(mfn).ok_or(PvError::ForeignFrame {
            slot: u16::try_from(k).unwrap_or(u16::MAX),
            mfn,
        })?;
        dst.copy_from_slice(&pfn.to_le_bytes());
    }
    Ok(len)
}

/// How much of the 3-level p2m tree a p2m of a given size uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2mTreeShape {
    /// Entries read from the frame-list-list page, i.e. frame-list pages
    /// to map: `max_pfn / fpp² + 1`.
    pub fll_entries: u64,
    /// Entries read across those frame-list pages, i.e. leaf mfns:
    /// `max_pfn / fpp + 1`.
    pub fl_entries: u64,
    /// p2m leaf pages to map; equal to `fl_entries` (one entry per leaf).
    pub leaf_pages: u64,
}

/// The tree shape for `p2m_size` entries (pfns `0..p2m_size`), as Xen's
/// `map_p2m_tree` computes it. A size of 0, or one needing more
/// frame-list pages than one frame-list-list page can name (`> fpp`),
/// is [`PvError::P2mSize`].
pub fn p2m_tree_shape(p2m_size: u64, width: u8) -> Result<P2mTreeShape, PvError> {
    let fpp = frames_per_page(width)?;
    let max_pfn = p2m_size.checked_sub(1).ok_or(PvError::P2mSize(p2m_size))?;
    let fll_entries = max_pfn / (fpp * fpp) + 1;
    if fll_entries > fpp {
        return Err(PvError::P2mSize(p2m_size));
    }
    let fl_entries = max_pfn / fpp + 1;
    Ok(P2mTreeShape {
        fll_entries,
        fl_entries,
        leaf_pages: fl_entries,
    })
}

/// Xen's shrink of `max_pfn` from the frame-list-list it read: when the
/// trailing entries are all the same mfn they can only point at frame
/// lists of holes, so `max_pfn` is cut to the end of the first of them,
/// `(x + 1) * fpp² - 1` where `x` starts that trailing run. Returns the
/// smaller of that and `max_pfn` (`max_pfn` itself for an empty list).
pub fn p2m_tree_trim_max_pfn(fll: &[u64], max_pfn: u64, width: u8) -> Result<u64, PvError> {
    let fpp = frames_per_page(width)?;
    let mut run_start = None;
    let mut prev = 0u64;
    for (x, &m) in (0u64..).zip(fll) {
        if run_start.is_none() || m != prev {
            prev = m;
            run_start = Some(x);
        }
    }
    Ok(match run_start {
        None => max_pfn,
        Some(x) => (x + 1)
            .saturating_mul(fpp * fpp)
            .saturating_sub(1)
            .min(max_pfn),
    })
}

/// Checks mfns read from the tree (frame-list-list or frame-list entries):
/// each must be non-zero and at most `max_mfn`, as Xen's saver checks.
pub fn validate_tree_mfns(entries: &[u64], max_mfn: u64) -> Result<(), PvError> {
    match entries.iter().position(|&m| m == 0 || m > max_mfn) {
        None => Ok(()),
        Some(index) => Err(PvError::BadTreeMfn {
            index,
            mfn: entries.get(index).copied().unwrap_or(0),
        }),
    }
}

const VADDR_MASK: u64 = 0x0000_ffff_ffff_ffff;

const fn is_canonical(v: u64) -> bool {
    let s = v as i64;
    (s >> 47) == (s >> 63)
}

/// Checks the linear p2m's virtual range for a 64-bit guest and returns its
/// last address: `p2m_vaddr + p2m_frames * 4096 - 1` must not wrap, both
/// ends must be canonical, and the range must not touch Xen's reserved
/// `0xffff_8000_0000_0000..=0xffff_87ff_ffff_ffff` (Xen's `map_p2m_list`).
pub fn p2m_list_check(p2m_vaddr: u64, p2m_frames: u64) -> Result<u64, PvError> {
    let bad = |end| PvError::BadP2mVaddr {
        start: p2m_vaddr,
        end,
    };
    let end = p2m_frames
        .checked_mul(PAGE_SIZE as u64)
        .and_then(|b| b.checked_sub(1))
        .and_then(|b| p2m_vaddr.checked_add(b))
        .ok_or(bad(u64::MAX))?;
    if !is_canonical(p2m_vaddr)
        || !is_canonical(end)
        || (p2m_vaddr <= super::HYPERVISOR_VIRT_END_X86_64
            && end > super::HYPERVISOR_VIRT_START_X86_64)
    {
        return Err(bad(end));
    }
    Ok(end)
}

/// Entry range `(first, last)` to read at `level` (4 down to 1) when
/// walking the linear p2m from `p2m_vaddr` to `p2m_end`, counted from the
/// start of the pages mapped at that level laid end to end (the level-4
/// page alone; then the L3 pages named by the level-4 range; and so on).
/// The level-1 range names the p2m leaf pages themselves.
pub fn p2m_list_level_range(
    p2m_vaddr: u64,
    p2m_end: u64,
    level: u8,
) -> Result<(u64, u64), PvError> {
    if !(1..=4).contains(&level) {
        return Err(PvError::BadLevel(level));
    }
    let shift = u32::from(level) * 9 + PAGE_SHIFT - 9;
    let off = if level == 4 {
        0
    } else {
        let up = shift + 9;
        p2m_vaddr & ((VADDR_MASK >> up) << up)
    };
    let first = (p2m_vaddr.wrapping_sub(off) & VADDR_MASK) >> shift;
    let last = (p2m_end.wrapping_sub(off) & VADDR_MASK) >> shift;
    Ok((first, last))
}
