//! Hand-made page tables and p2m figures for `pv`.

use super::*;
use proptest::prelude::*;

const NX: u64 = 1 << 63;
const RW: u64 = 0x2;
const USER: u64 = 0x4;
const ACCESSED: u64 = 0x20;
const AVAIL: u64 = 0x7ff << 52;

/// A guest of 64 pfns whose mfn is `0x1000 + 3 * pfn`, with a hole at pfn 5.
fn p2m() -> [u64; 64] {
    let mut p = [0u64; 64];
    for (pfn, m) in p.iter_mut().enumerate() {
        *m = 0x1000 + 3 * pfn as u64;
    }
    p[5] = INVALID_MFN;
    p
}

fn with_map<R>(f: impl FnOnce(&SortedFrames<'_>) -> R) -> R {
    let p = p2m();
    let mut idx = [(0u64, 0u64); 64];
    let n = fill_by_mfn(&p, &mut idx).unwrap();
    assert_eq!(n, 63);
    let map = SortedFrames::new(&p, &idx[..n]).unwrap();
    f(&map)
}

fn page_of(entries: &[(usize, u64)]) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    for &(i, v) in entries {
        page[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    page
}

fn pte(page: &[u8; PAGE_SIZE], i: usize) -> u64 {
    u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap())
}

fn mfn(pfn: u64) -> u64 {
    0x1000 + 3 * pfn
}

#[test]
fn xen_slots_are_256_to_271() {
    assert_eq!((XEN_L4_FIRST_SLOT, XEN_L4_LAST_SLOT), (256, 271));
}

#[test]
fn sorted_frames_lookups() {
    with_map(|m| {
        assert_eq!(m.pfn_to_mfn(7), Some(mfn(7)));
        assert_eq!(m.mfn_to_pfn(mfn(7)), Some(7));
        assert_eq!(m.pfn_to_mfn(5), None, "hole");
        assert_eq!(m.mfn_to_pfn(mfn(5)), None, "hole's old mfn");
        assert_eq!(m.pfn_to_mfn(64), None, "out of range");
        assert_eq!(m.mfn_to_pfn(0x1001), None, "not the guest's");
    });
    assert!(SortedFrames::new(&[], &[(2, 0), (1, 1)]).is_none());
    let mut small = [(0, 0); 3];
    assert_eq!(
        fill_by_mfn(&p2m(), &mut small),
        Err(PvError::BufferTooSmall { need: 63, have: 3 })
    );
}

#[test]
fn mfn_to_pfn_requires_p2m_agreement() {
    // A stale reverse entry (mfn 9 -> pfn 0) that the p2m contradicts.
    let p = [7u64, 8];
    let idx = [(7, 0), (8, 1), (9, 0)];
    let m = SortedFrames::new(&p, &idx).unwrap();
    assert_eq!(m.mfn_to_pfn(9), None);
    assert_eq!(m.mfn_to_pfn(8), Some(1));
}

#[test]
fn normalise_each_level_keeps_flags() {
    with_map(|m| {
        for level in 1..=4u8 {
            let flags = PAGE_PRESENT | RW | USER | ACCESSED | NX | AVAIL;
            let mut page = page_of(&[
                (0, (mfn(1) << 12) | flags),
                (1, (mfn(2) << 12) | PAGE_PRESENT),
                (2, 0xdead_b000 | 0x40), // not present: untouched
                (511, (mfn(63) << 12) | PAGE_PRESENT | RW),
            ]);
            let r = normalise_page_table(level, &mut page, m, Mode::Paused).unwrap();
            assert_eq!(
                r,
                Normalised::Done(Counts {
                    rewritten: 3,
                    cleared: 0
                })
            );
            assert_eq!(pte(&page, 0), (1 << 12) | flags);
            assert_eq!(pte(&page, 1), (2 << 12) | PAGE_PRESENT);
            assert_eq!(pte(&page, 2), 0xdead_b000 | 0x40);
            assert_eq!(pte(&page, 511), (63 << 12) | PAGE_PRESENT | RW);
            assert_eq!(pte(&page, 3), 0);
        }
    });
}

#[test]
fn xen_slots_cleared_in_l4_only() {
    with_map(|m| {
        let xen = (0x1234_5000) | PAGE_PRESENT | RW;
        let entries = [
            (255, (mfn(3) << 12) | PAGE_PRESENT),
            (256, xen),
            (263, 0x42), // non-present junk in a Xen slot also goes
            (271, xen),
            (272, (mfn(4) << 12) | PAGE_PRESENT),
        ];
        let mut l4 = page_of(&entries);
        let r = normalise_page_table(4, &mut l4, m, Mode::Paused).unwrap();
        assert_eq!(
            r,
            Normalised::Done(Counts {
                rewritten: 2,
                cleared: 3
            })
        );
        for i in 256..=271 {
            assert_eq!(pte(&l4, i), 0, "slot {i}");
        }
        assert_eq!(pte(&l4, 255), (3 << 12) | PAGE_PRESENT);
        assert_eq!(pte(&l4, 272), (4 << 12) | PAGE_PRESENT);

        // In an L3 the same slots are ordinary: the foreign frame there
        // is an error, not cleared.
        let mut l3 = page_of(&entries);
        assert_eq!(
            normalise_page_table(3, &mut l3, m, Mode::Paused),
            Err(PvError::ForeignFrame {
                slot: 256,
                mfn: 0x12345
            })
        );
        assert_eq!(l3, page_of(&entries), "untouched on error");
    });
}

#[test]
fn foreign_frame_deferred_live_error_paused() {
    with_map(|m| {
        let entries = [
            (0, (mfn(1) << 12) | PAGE_PRESENT),
            (9, (0x1001 << 12) | PAGE_PRESENT | RW),
        ];
        let mut page = page_of(&entries);
        assert_eq!(
            normalise_page_table(1, &mut page, m, Mode::Live),
            Ok(Normalised::Deferred {
                slot: 9,
                mfn: 0x1001
            })
        );
        assert_eq!(page, page_of(&entries), "untouched when deferred");
        assert_eq!(
            normalise_page_table(1, &mut page, m, Mode::Paused),
            Err(PvError::ForeignFrame {
                slot: 9,
                mfn: 0x1001
            })
        );
        // The hole's former mfn is foreign too.
        let mut page = page_of(&[(4, (mfn(5) << 12) | PAGE_PRESENT)]);
        assert!(matches!(
            normalise_page_table(2, &mut page, m, Mode::Live),
            Ok(Normalised::Deferred { slot: 4, .. })
        ));
    });
}

#[test]
fn superpages_refused_above_l1_once_paused() {
    with_map(|m| {
        let e = (mfn(1) << 12) | PAGE_PRESENT | PAGE_PSE;
        for level in 2..=4u8 {
            let mut page = page_of(&[(3, e)]);
            let before = page;
            assert_eq!(
                normalise_page_table(level, &mut page, m, Mode::Paused),
                Err(PvError::Superpage {
                    level,
                    slot: 3,
                    pte: e
                })
            );
            // While the guest runs, the page may have stopped being a
            // table under the copy: deferred to the paused round, untouched.
            assert_eq!(
                normalise_page_table(level, &mut page, m, Mode::Live),
                Ok(Normalised::Deferred {
                    slot: 3,
                    mfn: mfn(1)
                })
            );
            assert_eq!(page, before);
        }
        // In an L1, bit 7 is PAT: fine.
        let mut page = page_of(&[(3, e)]);
        assert!(normalise_page_table(1, &mut page, m, Mode::Paused).is_ok());
        assert_eq!(pte(&page, 3), (1 << 12) | PAGE_PRESENT | PAGE_PSE);
        // Not present with bit 7: untouched, no error.
        let mut page = page_of(&[(3, e & !PAGE_PRESENT)]);
        assert!(normalise_page_table(2, &mut page, m, Mode::Paused).is_ok());
    });
}

#[test]
fn bad_levels() {
    with_map(|m| {
        let mut page = [0u8; PAGE_SIZE];
        for l in [0u8, 5, 255] {
            assert_eq!(
                normalise_page_table(l, &mut page, m, Mode::Live),
                Err(PvError::BadLevel(l))
            );
            assert_eq!(
                localise_page_table(l, &mut page, m),
                Err(PvError::BadLevel(l))
            );
        }
    });
}

#[test]
fn localise_errors_and_populate_list() {
    with_map(|m| {
        let entries = [
            (0, (1 << 12) | PAGE_PRESENT),
            (1, (5 << 12) | PAGE_PRESENT), // hole
            (2, (5 << 12) | PAGE_PRESENT | RW),
        ];
        let mut page = page_of(&entries);
        assert_eq!(
            localise_page_table(1, &mut page, m),
            Err(PvError::UnmappedPfn { slot: 1, pfn: 5 })
        );
        assert_eq!(page, page_of(&entries));
        let mut out = [0u64; 4];
        assert_eq!(pfns_to_populate(1, &page, m, 64, &mut out), Ok(1));
        assert_eq!(out[0], 5);
        let far = page_of(&[(7, (64 << 12) | PAGE_PRESENT)]);
        assert_eq!(
            pfns_to_populate(1, &far, m, 64, &mut out),
            Err(PvError::UnmappedPfn { slot: 7, pfn: 64 })
        );
        let mut xen = page_of(&[(260, (1 << 12) | PAGE_PRESENT)]);
        assert_eq!(
            localise_page_table(4, &mut xen, m),
            Err(PvError::XenSlotPresent { slot: 260 })
        );
        assert!(localise_page_table(3, &mut xen, m).is_ok());
        assert_eq!(pte(&xen, 260), (mfn(1) << 12) | PAGE_PRESENT);
    });
}

#[test]
fn cr3_conversions() {
    assert_eq!(cr3_to_pfn(0x1234_5678), 0x12345);
    assert_eq!(pfn_to_cr3(0x12345), Some(0x1234_5000));
    assert_eq!(pfn_to_cr3(MAX_FRAME + 1), None);
    with_map(|m| {
        let cr3 = (mfn(9) << 12) | 0x18; // PWT|PCD dropped, as Xen does
        assert_eq!(normalise_cr3(cr3, m), Ok(9 << 12));
        assert_eq!(localise_cr3(9 << 12, m), Ok(mfn(9) << 12));
        assert_eq!(
            normalise_cr3(0x1001 << 12, m),
            Err(PvError::ForeignFrame {
                slot: 0,
                mfn: 0x1001
            })
        );
        assert_eq!(
            localise_cr3(5 << 12, m),
            Err(PvError::UnmappedPfn { slot: 0, pfn: 5 })
        );
        assert_eq!(normalise_user_cr3(0, m), Ok(0));
        assert_eq!(normalise_user_cr3(mfn(9) << 12, m), Ok((9 << 12) | 1));
        assert_eq!(localise_user_cr3((9 << 12) | 1, m), Ok(mfn(9) << 12));
        assert_eq!(localise_user_cr3(9 << 12, m), Ok(9 << 12), "bit 0 clear");
    });
}

#[test]
fn p2m_frame_figures() {
    assert_eq!(frames_per_page(8), Ok(512));
    assert_eq!(frames_per_page(4), Ok(1024));
    assert_eq!(frames_per_page(2), Err(PvError::BadWidth(2)));
    assert_eq!(p2m_frames(0x8000, 8), Ok(64));
    assert_eq!(p2m_frames(0x8001, 8), Ok(65));
    assert_eq!(p2m_frames(0, 8), Ok(0));
    // The 128 MiB guest as Xen's verify.py printed it:
    // "x86 PV P2M frames, length 520, Start pfn 0x0, End 0x7fff".
    assert_eq!(p2m_frames_record_len(0, 0x7fff, 8), Ok(520));
    assert_eq!(p2m_frames_record_len(0, 0, 8), Ok(16));
    assert_eq!(p2m_frames_record_len(0, 511, 8), Ok(16));
    assert_eq!(p2m_frames_record_len(511, 512, 8), Ok(24));
    assert_eq!(p2m_frames_record_len(0, 0x3_ffff, 8), Ok(8 + 8 * 512));
    assert_eq!(p2m_frames_record_len(0, 0x7fff, 4), Ok(8 + 8 * 32));
    assert_eq!(
        p2m_frames_record_len(2, 1, 8),
        Err(PvError::RangeInverted { start: 2, end: 1 })
    );
    for (s, e) in [(0u32, 0x7fffu32), (1000, 5000), (0, u32::MAX)] {
        let fpp = 512usize;
        let want = 8 + 8 * (e as usize / fpp - s as usize / fpp + 1);
        assert_eq!(p2m_frames_record_len(s, e, 8), Ok(want));
    }
}

#[test]
fn p2m_frames_record_body() {
    with_map(|m| {
        // A 64-entry p2m fits one frame, held by pfn 7's mfn.
        let mut out = [0xffu8; 24];
        assert_eq!(
            write_p2m_frames_record(0, 63, 8, &[mfn(7)], m, &mut out),
            Ok(16)
        );
        assert_eq!(
            &out[..16],
            &[0, 0, 0, 0, 63, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(out[16], 0xff, "nothing past the body");
        assert_eq!(
            write_p2m_frames_record(0, 63, 8, &[mfn(7), mfn(8)], m, &mut out),
            Err(PvError::FrameCountMismatch {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            write_p2m_frames_record(0, 512, 8, &[mfn(7), mfn(8)], m, &mut out[..23]),
            Err(PvError::BufferTooSmall { need: 24, have: 23 })
        );
        assert_eq!(
            write_p2m_frames_record(0, 512, 8, &[mfn(7), 0x1001], m, &mut out),
            Err(PvError::ForeignFrame {
                slot: 1,
                mfn: 0x1001
            })
        );
    });
}

#[test]
fn p2m_tree_shapes() {
    assert_eq!(
        p2m_tree_shape(32768, 8),
        Ok(P2mTreeShape {
            fll_entries: 1,
            fl_entries: 64,
            leaf_pages: 64
        })
    );
    assert_eq!(
        p2m_tree_shape(512 * 512 + 1, 8),
        Ok(P2mTreeShape {
            fll_entries: 2,
            fl_entries: 513,
            leaf_pages: 513
        })
    );
    assert_eq!(
        p2m_tree_shape(512 * 512 * 512, 8).map(|s| s.fll_entries),
        Ok(512)
    );
    assert_eq!(
        p2m_tree_shape(512 * 512 * 512 + 1, 8),
        Err(PvError::P2mSize(512 * 512 * 512 + 1))
    );
    assert_eq!(p2m_tree_shape(0, 8), Err(PvError::P2mSize(0)));
    assert_eq!(p2m_tree_shape(u64::MAX, 8), Err(PvError::P2mSize(u64::MAX)));

    // Trailing identical frame-list mfns cut max_pfn (Xen's heuristic).
    assert_eq!(
        p2m_tree_trim_max_pfn(&[10, 11, 12, 12, 12], u64::MAX, 8),
        Ok(3 * 512 * 512 - 1)
    );
    assert_eq!(p2m_tree_trim_max_pfn(&[10, 11], 0x7fff, 8), Ok(0x7fff));
    assert_eq!(p2m_tree_trim_max_pfn(&[], 9, 8), Ok(9));
    assert_eq!(validate_tree_mfns(&[3, 4], 4), Ok(()));
    assert_eq!(
        validate_tree_mfns(&[3, 0], 4),
        Err(PvError::BadTreeMfn { index: 1, mfn: 0 })
    );
    assert_eq!(
        validate_tree_mfns(&[5], 4),
        Err(PvError::BadTreeMfn { index: 0, mfn: 5 })
    );
}

#[test]
fn p2m_linear_list() {
    // Linux puts the linear p2m at 0xffff_c900_0000_0000-ish; use a 64-frame
    // list just below an L3 boundary so it straddles two L2 tables.
    let va = 0xffff_c900_3ffe_0000u64;
    let end = p2m_list_check(va, 64).unwrap();
    assert_eq!(end, va + 64 * 4096 - 1);
    assert_eq!(p2m_list_level_range(va, end, 4), Ok((402, 402)));
    assert_eq!(p2m_list_level_range(va, end, 3), Ok((0, 1)));
    assert_eq!(p2m_list_level_range(va, end, 2), Ok((511, 512)));
    // Two L1 pages laid end to end: entries 480..=511 of the first and
    // 0..=31 of the second.
    assert_eq!(p2m_list_level_range(va, end, 1), Ok((480, 543)));
    assert_eq!(p2m_list_level_range(va, end, 0), Err(PvError::BadLevel(0)));
    // Inside Xen's range, non-canonical, wrapping.
    assert!(p2m_list_check(0xffff_8000_0000_0000, 1).is_err());
    assert!(p2m_list_check(0xffff_7fff_ffff_f000, 2).is_err());
    assert!(p2m_list_check(0x0000_8000_0000_0000, 1).is_err());
    assert!(p2m_list_check(u64::MAX - 4095, 2).is_err());
    assert!(p2m_list_check(0x1000, u64::MAX).is_err());
    assert!(p2m_list_check(0xffff_8800_0000_0000, 1).is_ok());
}

fn arb_pte() -> impl Strategy<Value = u64> {
    // Flags and high bits random; frame from the guest (or a hole) or junk.
    (any::<u64>(), 0u64..80, any::<bool>()).prop_map(|(bits, pfn, present)| {
        let flags = bits & !PTE_FRAME_MASK & !PAGE_PSE;
        let flags = if present {
            flags | PAGE_PRESENT
        } else {
            flags & !PAGE_PRESENT
        };
        let frame = if present && pfn < 64 && pfn != 5 {
            mfn(pfn)
        } else {
            bits & PTE_FRAME_MASK >> 12
        };
        flags | (frame << 12)
    })
}

proptest! {
    #[test]
    fn round_trip(
        level in 1u8..=4,
        clean in any::<bool>(),
        mut ptes in proptest::collection::vec(arb_pte(), 512),
    ) {
        let p = p2m();
        let mut idx = [(0u64, 0u64); 64];
        let n = fill_by_mfn(&p, &mut idx).unwrap();
        let m = SortedFrames::new(&p, &idx[..n]).unwrap();
        if clean {
            // Half the cases hold only the guest's own frames, so the
            // rewrite path runs rather than almost always deferring.
            for v in ptes.iter_mut() {
                if m.mfn_to_pfn((*v & PTE_FRAME_MASK) >> 12).is_none() {
                    *v &= !PAGE_PRESENT;
                }
            }
        }
        let mut page = [0u8; PAGE_SIZE];
        for (i, v) in ptes.iter().enumerate() {
            page[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let orig = page;
        let foreign = ptes.iter().enumerate().any(|(i, &v)| {
            v & PAGE_PRESENT != 0
                && !(level == 4 && (256..=271).contains(&i))
                && m.mfn_to_pfn((v & PTE_FRAME_MASK) >> 12).is_none()
        });
        match normalise_page_table(level, &mut page, &m, Mode::Live) {
            Ok(Normalised::Deferred { .. }) => {
                prop_assert!(foreign);
                prop_assert_eq!(page, orig);
            }
            Ok(Normalised::Done(c)) => {
                prop_assert!(!foreign);
                let present = ptes.iter().enumerate().filter(|&(i, &v)| {
                    v & PAGE_PRESENT != 0 && !(level == 4 && (256..=271).contains(&i))
                });
                prop_assert_eq!(usize::from(c.rewritten), present.count());
                localise_page_table(level, &mut page, &m).unwrap();
                let mut want = orig;
                if level == 4 {
                    want[256 * 8..272 * 8].fill(0);
                }
                prop_assert_eq!(page, want);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
        prop_assert!(!clean || !foreign);
    }

    #[test]
    fn never_panics(level in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), PAGE_SIZE)) {
        let p = p2m();
        let mut idx = [(0u64, 0u64); 64];
        let n = fill_by_mfn(&p, &mut idx).unwrap();
        let m = SortedFrames::new(&p, &idx[..n]).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(&bytes);
        let _ = normalise_page_table(level, &mut page.clone(), &m, Mode::Paused);
        let _ = localise_page_table(level, &mut page, &m);
        let mut out = [0u64; 8];
        let _ = pfns_to_populate(level, &page, &m, u64::MAX, &mut out);
    }
}
