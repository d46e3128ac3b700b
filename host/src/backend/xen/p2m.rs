//! The physical-to-machine map (p2m) of a running 64-bit PV guest, read
//! from the guest's own memory.
//!
//! A PV guest manages its p2m itself; Xen only knows where to find it
//! through the shared-info page (`struct arch_shared_info`):
//!
//! | field | offset in the page | meaning |
//! | --- | --- | --- |
//! | `max_pfn` | 3088 | entries in the p2m (one more than the highest pfn) |
//! | `pfn_to_mfn_frame_list_list` | 3096 | mfn of the tree's root page |
//!
//! The tree has three levels of 512 eight-byte entries a page: the root
//! lists the mfns of the frame-list pages, each frame-list page lists the
//! mfns of 512 p2m pages, and each p2m page holds 512 mfns. Linux keeps the
//! tree in step with its linear (virtually mapped) p2m, whose pages are the
//! same leaves. The leaves' mfns, turned into pfns, are what the stream's
//! `X86_PV_P2M_FRAMES` record carries.
//!
//! An mfn is the guest's when the guest's p2m names it; [`P2m::pfn`]
//! answers from a sorted inverse, so no machine-to-physical table of Xen's
//! has to be mapped.

use relocd_hypercall::{DomId, ForeignPages, Hypervisor, Prot, PAGE_SIZE};

use super::pv_error::PvSaveError;

/// A hole in the p2m (Linux's `INVALID_P2M_ENTRY`).
pub const INVALID_MFN: u64 = u64::MAX;
/// Bits Linux sets in p2m entries that are not plain frames (identity and
/// foreign markers): such entries are treated as holes.
const MARKER_BITS: u64 = 0b11 << 62;
/// Largest mfn accepted from the guest (52-bit physical addresses).
const MAX_MFN: u64 = (1 << 40) - 1;
/// The most p2m entries accepted (1 TiB of guest memory).
pub const MAX_P2M_SIZE: u64 = 1 << 28;
/// Entries in one page of the tree (64-bit guest).
pub const FPP: u64 = (PAGE_SIZE / 8) as u64;
/// Offset of `arch.max_pfn` in the shared-info page.
pub const SHINFO_MAX_PFN: usize = 3088;
/// Offset of `arch.pfn_to_mfn_frame_list_list`.
pub const SHINFO_FRAME_LIST_LIST: usize = 3096;

/// The guest's p2m, copied, with its leaf frames and an inverse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P2m {
    map: Vec<u64>,
    frames: Vec<u64>,
    by_mfn: Vec<(u64, u64)>,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// Maps `mfns` of `domid` and copies out the first `entries` u64 of them.
fn read_entries<H: Hypervisor>(
    xen: &H,
    domid: DomId,
    mfns: &[u64],
    entries: u64,
    what: &'static str,
) -> Result<Vec<u64>, PvSaveError> {
    let map = xen.map_foreign(domid, mfns, Prot::Read)?;
    let mut out = Vec::with_capacity(usize::try_from(entries).unwrap_or(0));
    let mut page = [0u8; PAGE_SIZE];
    for i in 0..mfns.len() {
        if let Some(errno) = map.page_error(i) {
            return Err(PvSaveError::map(what, errno, domid));
        }
        map.read_page(i, &mut page)?;
        for w in page.chunks_exact(8) {
            if out.len() as u64 == entries {
                break;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            out.push(u64::from_le_bytes(b));
        }
    }
    if (out.len() as u64) < entries {
        return Err(PvSaveError::P2m(
            "the tree holds fewer entries than max_pfn says",
        ));
    }
    Ok(out)
}

fn clean(mfn: u64) -> u64 {
    if mfn & MARKER_BITS != 0 || mfn > MAX_MFN {
        INVALID_MFN
    } else {
        mfn
    }
}

impl P2m {
    /// Reads the p2m of `domid` through the tree rooted in its shared-info
    /// page `shinfo`.
    pub fn read<H: Hypervisor>(
        xen: &H,
        domid: DomId,
        shinfo: &[u8; PAGE_SIZE],
    ) -> Result<P2m, PvSaveError> {
        let size = le_u64(shinfo, SHINFO_MAX_PFN);
        let root = le_u64(shinfo, SHINFO_FRAME_LIST_LIST);
        if size == 0 || size > MAX_P2M_SIZE {
            return Err(PvSaveError::P2m("max_pfn in shared info is 0 or too large"));
        }
        if root == 0 || root == INVALID_MFN {
            return Err(PvSaveError::P2m(
                "the guest publishes no p2m frame list (pfn_to_mfn_frame_list_list)",
            ));
        }
        let leaves = size.div_ceil(FPP);
        let lists = leaves.div_ceil(FPP);
        let list_mfns = read_entries(xen, domid, &[root], lists, "the p2m root")?;
        let frames = read_entries(xen, domid, &list_mfns, leaves, "p2m frame lists")?;
        let mut p2m = P2m {
            map: Vec::new(),
            frames,
            by_mfn: Vec::new(),
        };
        p2m.refresh(xen, domid, size)?;
        Ok(p2m)
    }

    /// Copies the leaves again (the guest changes its p2m as it balloons
    /// or maps grants); the frames are the ones read at first. Returns
    /// whether any entry changed.
    pub fn refresh<H: Hypervisor>(
        &mut self,
        xen: &H,
        domid: DomId,
        size: u64,
    ) -> Result<bool, PvSaveError> {
        let map: Vec<u64> = read_entries(xen, domid, &self.frames, size, "p2m pages")?
            .into_iter()
            .map(clean)
            .collect();
        if map == self.map {
            return Ok(false);
        }
        let mut by_mfn: Vec<(u64, u64)> = map
            .iter()
            .enumerate()
            .filter(|(_, &m)| m != INVALID_MFN)
            .map(|(p, &m)| (m, p as u64))
            .collect();
        by_mfn.sort_unstable();
        // An mfn named twice is not the guest's own in a usable way.
        let mut dup = Vec::new();
        for w in by_mfn.windows(2) {
            if w[0].0 == w[1].0 {
                dup.push(w[0].0);
            }
        }
        by_mfn.retain(|(m, _)| dup.binary_search(m).is_err());
        self.map = map;
        self.by_mfn = by_mfn;
        Ok(true)
    }

    /// Entries (`p2m_size`).
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The mfn behind `pfn`, `None` for a hole or a pfn beyond the map.
    pub fn mfn(&self, pfn: u64) -> Option<u64> {
        usize::try_from(pfn)
            .ok()
            .and_then(|i| self.map.get(i))
            .copied()
            .filter(|&m| m != INVALID_MFN)
    }

    /// The pfn the guest maps `mfn` at, `None` when it is not the guest's.
    pub fn pfn(&self, mfn: u64) -> Option<u64> {
        self.by_mfn
            .binary_search_by(|(m, _)| m.cmp(&mfn))
            .ok()
            .and_then(|i| self.by_mfn.get(i))
            .map(|&(_, p)| p)
    }

    /// The mfns of the pages holding the p2m, in pfn order.
    pub fn frames(&self) -> &[u64] {
        &self.frames
    }
}

impl relocd_core::pv::FrameMap for P2m {
    fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        self.pfn(mfn)
    }
    fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        self.mfn(pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relocd_hypercall::fake::{FakeDomain, FakeXen};

    /// A fake PV guest whose p2m maps pfn p to mfn 0x1000 + p (pfn 7 is a
    /// hole), with the tree in frames 0x100 (root), 0x200.. (lists),
    /// 0x300.. (leaves). The fake names frames by their number.
    fn guest(pages: u64) -> (FakeXen, [u8; PAGE_SIZE]) {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(4, 0x1000 + pages, 1));
        let leaves = pages.div_ceil(FPP);
        let lists = leaves.div_ceil(FPP);
        let put = |mfn: u64, words: &[u64]| {
            let mut p = [0u8; PAGE_SIZE];
            for (i, w) in words.iter().enumerate() {
                p[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
            assert!(x.guest_write(4, mfn, 0, &p));
        };
        put(0x100, &(0..lists).map(|l| 0x200 + l).collect::<Vec<_>>());
        for l in 0..lists {
            let ws: Vec<u64> = (l * FPP..((l + 1) * FPP).min(leaves))
                .map(|leaf| 0x300 + leaf)
                .collect();
            put(0x200 + l, &ws);
        }
        for leaf in 0..leaves {
            let ws: Vec<u64> = (leaf * FPP..((leaf + 1) * FPP).min(pages))
                .map(|p| if p == 7 { INVALID_MFN } else { 0x1000 + p })
                .collect();
            put(0x300 + leaf, &ws);
        }
        let mut shinfo = [0u8; PAGE_SIZE];
        shinfo[SHINFO_MAX_PFN..SHINFO_MAX_PFN + 8].copy_from_slice(&pages.to_le_bytes());
        shinfo[SHINFO_FRAME_LIST_LIST..SHINFO_FRAME_LIST_LIST + 8]
            .copy_from_slice(&0x100u64.to_le_bytes());
        (x, shinfo)
    }

    #[test]
    fn reads_the_tree_and_inverts_it() {
        let (x, shinfo) = guest(1500);
        let p2m = P2m::read(&x, 4, &shinfo).unwrap();
        assert_eq!(p2m.size(), 1500);
        assert_eq!(p2m.frames(), &[0x300, 0x301, 0x302]);
        assert_eq!(p2m.mfn(0), Some(0x1000));
        assert_eq!(p2m.mfn(1499), Some(0x1000 + 1499));
        assert_eq!(p2m.mfn(7), None);
        assert_eq!(p2m.mfn(1500), None);
        assert_eq!(p2m.pfn(0x1000 + 600), Some(600));
        assert_eq!(p2m.pfn(0x1007), None);
        assert_eq!(p2m.pfn(0x50), None);
    }

    #[test]
    fn a_missing_tree_or_absurd_size_is_refused() {
        let (x, mut shinfo) = guest(600);
        shinfo[SHINFO_FRAME_LIST_LIST..SHINFO_FRAME_LIST_LIST + 8].fill(0);
        assert!(matches!(
            P2m::read(&x, 4, &shinfo),
            Err(PvSaveError::P2m(_))
        ));
        let (x, mut shinfo) = guest(600);
        shinfo[SHINFO_MAX_PFN..SHINFO_MAX_PFN + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            P2m::read(&x, 4, &shinfo),
            Err(PvSaveError::P2m(_))
        ));
    }

    #[test]
    fn refresh_sees_a_changed_entry() {
        let (x, shinfo) = guest(600);
        let mut p2m = P2m::read(&x, 4, &shinfo).unwrap();
        assert!(!p2m.refresh(&x, 4, 600).unwrap());
        assert!(x.guest_write(4, 0x300, 8, &0x9999u64.to_le_bytes()));
        assert!(p2m.refresh(&x, 4, 600).unwrap());
        assert_eq!(p2m.mfn(1), Some(0x9999));
        assert_eq!(p2m.pfn(0x9999), Some(1));
        assert_eq!(p2m.pfn(0x1001), None);
    }
}
