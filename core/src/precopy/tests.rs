//! Pre-copy loop tests: synthetic dirtying and a simulated link, no guest.

use super::*;
use std::vec;
use std::vec::Vec;

#[test]
fn bitmap_helpers() {
    let mut bm = [0u64; 3];
    assert_eq!(set_all(&mut bm, 130), Ok(130));
    assert_eq!(bm, [u64::MAX, u64::MAX, 0b11]);
    assert_eq!(count_dirty(&bm, 130), Ok(130));
    // Bits beyond p2m_size do not count.
    bm[2] = u64::MAX;
    assert_eq!(count_dirty(&bm, 130), Ok(130));
    assert_eq!(
        set_all(&mut bm[..2], 130),
        Err(Error::BitmapTooShort { needed: 3, got: 2 })
    );
    let mut a = [0b1010u64, 0];
    let b = [0b0101u64, 1 << 63];
    assert_eq!(or_into(&mut a, &b, 100), Ok(4));
    assert_eq!(a, [0b1111, 0]);
    assert_eq!(bitmap_words(0), 0);
    assert_eq!(bitmap_words(64), 1);
    assert_eq!(bitmap_words(65), 2);
}

#[test]
fn batches_walk_the_bitmap_in_order() {
    let p2m = 5000u64;
    let mut bm = vec![0u64; bitmap_words(p2m)];
    let dirty: Vec<u64> = (0..p2m).filter(|p| p % 3 == 0 || *p == 4999).collect();
    for &p in &dirty {
        bm[(p / 64) as usize] |= 1 << (p % 64);
    }
    let mut pc = Precopy::live(
        p2m,
        PrecopyConfig::default(),
        DefaultPolicy::default(),
        Instant::ZERO,
    );
    let mut out = [0u64; 2048];
    let mut seen = Vec::new();
    loop {
        let n = pc.next_batch(&bm, &mut out).unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= MAX_BATCH_SIZE, "a batch is one PAGE_DATA record");
        seen.extend_from_slice(&out[..n]);
    }
    assert_eq!(seen, dirty);
    // A smaller caller buffer bounds the batch.
    let mut pc = Precopy::live(
        p2m,
        PrecopyConfig::default(),
        SimplePolicy::default(),
        Instant::ZERO,
    );
    let mut small = [0u64; 7];
    assert_eq!(pc.next_batch(&bm, &mut small), Ok(7));
    assert_eq!(small, [0, 3, 6, 9, 12, 15, 18]);
}

#[test]
fn phase_errors() {
    let mut pc = Precopy::offline(
        64,
        PrecopyConfig::default(),
        SimplePolicy::default(),
        Instant::ZERO,
    );
    assert_eq!(
        pc.end_round(Instant::ZERO, 0),
        Err(Error::InvalidInPhase {
            phase: "final",
            input: "end_round"
        })
    );
    assert!(pc.finish(Instant::from_millis(1)).is_ok());
    let bm = [u64::MAX];
    let mut out = [0u64; 4];
    assert!(matches!(
        pc.next_batch(&bm, &mut out),
        Err(Error::InvalidInPhase { phase: "done", .. })
    ));
}

fn stats(round: u32, sent: u64, dirty: u64, busy: u32, downtime_ms: u64) -> PrecopyStats {
    PrecopyStats {
        round,
        pages_sent: sent,
        dirty_count: dirty,
        busy_streak: busy,
        projected_downtime: Duration::from_millis(downtime_ms),
        ..PrecopyStats::default()
    }
}

#[test]
fn default_policy_rules() {
    let mut p = DefaultPolicy::default();
    assert_eq!(p.decide(&stats(1, 1000, 10, 0, 299)), Decision::StopAndCopy);
    assert_eq!(p.decide(&stats(1, 1000, 10, 0, 300)), Decision::StopAndCopy);
    assert_eq!(
        p.decide(&stats(1, 1000, 10, 0, 301)),
        Decision::ContinuePrecopy
    );
    assert_eq!(p.decide(&stats(2, 1000, 0, 0, 0)), Decision::StopAndCopy);
    assert_eq!(
        p.decide(&stats(3, 10, 20, 2, 900)),
        Decision::ContinuePrecopy
    );
    assert_eq!(p.decide(&stats(4, 10, 20, 3, 900)), Decision::StopAndCopy);
    assert_eq!(p.decide(&stats(5, 10, 5, 0, 900)), Decision::StopAndCopy);
    let mut busy = DefaultPolicy::new(PolicyConfig {
        abort_if_busy: true,
        ..PolicyConfig::default()
    });
    assert_eq!(busy.decide(&stats(4, 10, 20, 3, 900)), Decision::Abort);
    assert_eq!(busy.decide(&stats(5, 10, 5, 0, 900)), Decision::Abort);
    // Even an aborting policy stops when the target is met.
    assert_eq!(busy.decide(&stats(5, 10, 5, 3, 100)), Decision::StopAndCopy);
    let mut xen = SimplePolicy::default();
    assert_eq!(xen.decide(&stats(1, 100, 49, 0, 0)), Decision::StopAndCopy);
    assert_eq!(
        xen.decide(&stats(1, 100, 50, 0, 0)),
        Decision::ContinuePrecopy
    );
    assert_eq!(
        xen.decide(&stats(5, 100, 5000, 0, 0)),
        Decision::StopAndCopy
    );
}

/// A deterministic model: a link of `link` bytes per ms, a guest that
/// dirties `rate` pages per ms spread over a hot set of `hot` pages.
struct Sim {
    p2m: u64,
    link_bytes_per_ms: u64,
    dirty_pages_per_ms: u64,
    hot: u64,
    next_dirty: u64,
}

#[derive(Debug, PartialEq)]
struct Run {
    decision: Decision,
    rounds: u32,
    final_pages: u64,
    total_pages: u64,
    history: Vec<(u32, u64, u64)>,
}

impl Sim {
    fn dirty(&mut self, bm: &mut [u64], pages: u64) {
        for _ in 0..pages {
            let p = self.next_dirty % self.hot;
            bm[(p / 64) as usize] |= 1 << (p % 64);
            self.next_dirty = self
                .next_dirty
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 1;
        }
    }

    fn run<P: PrecopyPolicy>(&mut self, policy: P, cfg: PrecopyConfig) -> Run {
        let page_bytes = WIRE_BYTES_PER_PAGE;
        let mut now = Instant::ZERO;
        let mut bm = vec![0u64; bitmap_words(self.p2m)];
        let mut log = vec![0u64; bitmap_words(self.p2m)];
        set_all(&mut bm, self.p2m).unwrap();
        let mut pc = Precopy::live(self.p2m, cfg, policy, now);
        let mut out = [0u64; MAX_BATCH_SIZE];
        let mut history = Vec::new();
        let decision = loop {
            loop {
                let n = pc.next_batch(&bm, &mut out).unwrap() as u64;
                if n == 0 {
                    break;
                }
                let bytes = n * page_bytes + 16;
                // Sending takes bytes / link ms; the guest dirties meanwhile.
                let ms = bytes.div_ceil(self.link_bytes_per_ms).max(1);
                now += Duration::from_millis(ms);
                self.dirty(&mut log, ms * self.dirty_pages_per_ms);
                if let Some(t) = pc.record_batch(now, n, bytes, bytes) {
                    let wait = t - now;
                    let wait_ms = wait.as_nanos().div_ceil(1_000_000);
                    self.dirty(&mut log, wait_ms * self.dirty_pages_per_ms);
                    now = t;
                }
            }
            // clean_dirty: the log becomes the next round's bitmap.
            bm.copy_from_slice(&log);
            log.iter_mut().for_each(|w| *w = 0);
            let dirty = count_dirty(&bm, self.p2m).unwrap();
            let d = pc.end_round(now, dirty).unwrap();
            let s = pc.progress().last_round.unwrap();
            history.push((s.round, s.pages_sent, s.dirty_count));
            if d != Decision::ContinuePrecopy {
                break d;
            }
        };
        if decision == Decision::Abort {
            return Run {
                decision,
                rounds: pc.progress().last_round.unwrap().round,
                final_pages: 0,
                total_pages: pc.progress().total_pages_sent,
                history,
            };
        }
        let dirty = or_into(&mut bm, &log, self.p2m).unwrap();
        pc.begin_final(now, dirty).unwrap();
        let mut final_pages = 0;
        loop {
            let n = pc.next_batch(&bm, &mut out).unwrap() as u64;
            if n == 0 {
                break;
            }
            final_pages += n;
            now += Duration::from_millis(1);
            assert_eq!(
                pc.record_batch(now, n, n * page_bytes, n * page_bytes),
                None,
                "final round is uncapped"
            );
        }
        let summary = pc.finish(now).unwrap();
        assert_eq!(summary.final_pages, final_pages);
        Run {
            decision,
            rounds: summary.live_rounds,
            final_pages,
            total_pages: summary.total_pages_sent,
            history,
        }
    }
}

#[test]
fn idle_guest_stops_after_one_round() {
    let mut sim = Sim {
        p2m: 8192,
        link_bytes_per_ms: 1 << 20,
        dirty_pages_per_ms: 0,
        hot: 1,
        next_dirty: 0,
    };
    let r = sim.run(DefaultPolicy::default(), PrecopyConfig::default());
    assert_eq!(r.decision, Decision::StopAndCopy);
    assert_eq!(r.rounds, 1);
    assert_eq!(r.final_pages, 0);
    assert_eq!(r.total_pages, 8192);
}

#[test]
fn slow_dirtier_converges_within_downtime_limit() {
    // 1 MiB/ms link (~1 GiB/s), 2 pages/ms dirtied over a hot set of 4096.
    let mut sim = Sim {
        p2m: 65536,
        link_bytes_per_ms: 1 << 20,
        dirty_pages_per_ms: 2,
        hot: 4096,
        next_dirty: 7,
    };
    let r = sim.run(
        DefaultPolicy::new(PolicyConfig {
            downtime_limit: Duration::from_millis(1),
            ..PolicyConfig::default()
        }),
        PrecopyConfig::default(),
    );
    assert_eq!(r.decision, Decision::StopAndCopy);
    assert!(r.rounds >= 2 && r.rounds <= 5, "{r:?}");
    let last = r.history.last().unwrap();
    // Stopped because what remains fits 1 ms at ~1 GiB/s: under ~256 pages.
    assert!(
        last.2 * WIRE_BYTES_PER_PAGE <= (1 << 20) + (1 << 16),
        "{r:?}"
    );
    assert!(
        r.final_pages >= last.2,
        "the final round covers the last log too"
    );
}

#[test]
fn busy_guest_stops_or_aborts_after_three_rounds() {
    // The guest dirties 400 pages/ms, the link sends ~250 pages/ms.
    let mk = || Sim {
        p2m: 16384,
        link_bytes_per_ms: 1 << 20,
        dirty_pages_per_ms: 400,
        hot: 16384,
        next_dirty: 3,
    };
    let strict = PolicyConfig {
        downtime_limit: Duration::from_millis(1),
        max_rounds: 30,
        ..PolicyConfig::default()
    };
    let r = mk().run(DefaultPolicy::new(strict), PrecopyConfig::default());
    assert_eq!(r.decision, Decision::StopAndCopy);
    // Busy from some round on; stopped when the streak hit 3.
    assert!(r.rounds < 30, "{r:?}");
    let busy_rounds = r
        .history
        .iter()
        .rev()
        .take_while(|(_, sent, dirty)| dirty * 100 >= sent * BUSY_PERCENT)
        .count();
    assert_eq!(busy_rounds, 3, "{r:?}");
    let r2 = mk().run(
        DefaultPolicy::new(PolicyConfig {
            abort_if_busy: true,
            ..strict
        }),
        PrecopyConfig::default(),
    );
    assert_eq!(r2.decision, Decision::Abort);
    assert_eq!(r2.rounds, r.rounds);
}

#[test]
fn round_cap_and_swapped_policy() {
    // Dirties just under the link rate: never busy, never under 1 ms.
    let mk = || Sim {
        p2m: 16384,
        link_bytes_per_ms: 1 << 20,
        dirty_pages_per_ms: 150,
        hot: 16384,
        next_dirty: 11,
    };
    let cfg = PolicyConfig {
        downtime_limit: Duration::from_millis(1),
        max_rounds: 4,
        ..PolicyConfig::default()
    };
    let r = mk().run(DefaultPolicy::new(cfg), PrecopyConfig::default());
    assert_eq!((r.decision, r.rounds), (Decision::StopAndCopy, 4), "{r:?}");
    let r = mk().run(
        SimplePolicy {
            target_dirty: 50,
            max_rounds: 2,
        },
        PrecopyConfig::default(),
    );
    assert_eq!((r.decision, r.rounds), (Decision::StopAndCopy, 2));
}

#[test]
fn bandwidth_cap_paces_batches() {
    let cap = 1_000_000u64; // 1 MB/s
    let mut pc = Precopy::live(
        4096,
        PrecopyConfig {
            bandwidth_limit: Some(cap),
        },
        DefaultPolicy::default(),
        Instant::ZERO,
    );
    // 500 kB sent instantly: wait until 0.5 s.
    assert_eq!(
        pc.record_batch(Instant::ZERO, 100, 500_000, 500_000),
        Some(Instant::from_millis(500))
    );
    // Called again at 0.5 s with 250 kB: booked until 0.75 s.
    assert_eq!(
        pc.record_batch(Instant::from_millis(500), 50, 250_000, 250_000),
        Some(Instant::from_millis(750))
    );
    // A slow link needs no pacing: 1 kB at 2 s.
    assert_eq!(pc.record_batch(Instant::from_secs(2), 1, 1000, 1000), None);
    let d = pc.end_round(Instant::from_secs(2), 100).unwrap();
    let s = pc.progress().last_round.unwrap();
    assert_eq!(s.bytes_sent, 751_000);
    assert_eq!(s.bandwidth, 375_500);
    assert_eq!(
        s.projected_downtime,
        Duration::for_bytes_at_rate(100 * WIRE_BYTES_PER_PAGE, 375_500)
    );
    assert_eq!(d, Decision::ContinuePrecopy);
    assert_eq!(pc.phase(), Phase::Live(2));
}

/// A batch that packs small (zero pages, compression) books only what it
/// took on the link; the round's figures still count the guest's bytes.
#[test]
fn bandwidth_cap_books_the_bytes_on_the_wire() {
    let mut pc = Precopy::live(
        4096,
        PrecopyConfig {
            bandwidth_limit: Some(1_000_000),
        },
        DefaultPolicy::default(),
        Instant::ZERO,
    );
    // 400 kB of pages packed into 100 kB: 0.1 s of the link, not 0.4 s
    assert_eq!(
        pc.record_batch(Instant::ZERO, 100, 400_000, 100_000),
        Some(Instant::from_millis(100))
    );
    pc.end_round(Instant::from_secs(1), 0).unwrap();
    let s = pc.progress().last_round.unwrap();
    assert_eq!((s.pages_sent, s.bytes_sent), (100, 400_000));
    assert_eq!(s.bandwidth, 400_000);
}

/// An offline transfer's one round is paced by the cap too; the
/// stop-and-copy that ends a live transfer never is.
#[test]
fn bandwidth_cap_paces_an_offline_round_but_not_a_live_final_one() {
    let config = PrecopyConfig {
        bandwidth_limit: Some(1_000_000),
    };
    let mut off = Precopy::offline(4096, config, DefaultPolicy::default(), Instant::ZERO);
    assert_eq!(off.phase(), Phase::Final);
    assert_eq!(
        off.record_batch(Instant::ZERO, 100, 500_000, 500_000),
        Some(Instant::from_millis(500))
    );
    let mut live = Precopy::live(4096, config, DefaultPolicy::default(), Instant::ZERO);
    let mut t = Instant::ZERO;
    while let Phase::Live(_) = live.phase() {
        t += Duration::from_secs(1);
        let _ = live.end_round(t, 0).unwrap();
    }
    live.begin_final(t, 10).unwrap();
    assert_eq!(live.phase(), Phase::Final);
    assert_eq!(live.record_batch(t, 100, 500_000, 500_000), None);
}

/// A guest whose odd pfns are holes (XTAB), which can be told to lie about
/// how many pages it copied, and lends its pages as [`Lend`] says.
struct Holes {
    lie: bool,
    suspended: bool,
    /// How it lends its pages (from `mem`, page `pfn` at `pfn * PAGE_SIZE`).
    lend: Lend,
    mem: Vec<u8>,
    /// `read_pages` calls.
    copies: usize,
}

impl Holes {
    fn new(lend: Lend, mem: Vec<u8>) -> Self {
        Holes {
            lie: false,
            suspended: false,
            lend,
            mem,
            copies: 0,
        }
    }
}

/// How [`Lender`] lends.
#[derive(Clone, Copy, PartialEq)]
enum Lend {
    /// Not at all: the caller copies.
    Never,
    /// Every page with data, from its own memory.
    Honest,
    /// One page short.
    Short,
    /// Says it lent without calling back.
    Silent,
}

/// `send_batch` hands over lent pages as they are, falls back to a copy
/// for a guest that cannot lend, and catches a lender that miscounts.
#[test]
fn send_batch_sends_lent_pages_or_falls_back_to_a_copy() {
    use drive::*;
    let policy = SimplePolicy {
        target_dirty: 0,
        max_rounds: 2,
    };
    let mut mem = vec![0u8; 10 * PAGE_SIZE];
    for (i, page) in mem.chunks_mut(PAGE_SIZE).enumerate() {
        page.fill(0x40 + i as u8);
    }
    for lend in [Lend::Honest, Lend::Never, Lend::Short, Lend::Silent] {
        let mut g = Holes::new(lend, mem.clone());
        let mut bm = [0u64; 1];
        let mut pc = start_live(
            &mut g,
            &mut bm,
            PrecopyConfig::default(),
            policy,
            Instant::ZERO,
        )
        .unwrap();
        let (mut pfns, mut types, mut data) = (
            [0u64; 4],
            [crate::guest::PageType::NOTAB; 4],
            vec![0u8; 4 * PAGE_SIZE],
        );
        let buf = BatchBuf {
            pfns: &mut pfns,
            types: &mut types,
            data: &mut data,
        };
        let data_ptr = buf.data.as_ptr() as usize;
        let mem_ptr = g.mem.as_ptr() as usize;
        let r = send_batch(&mut pc, &mut g, &bm, buf, |p| {
            assert_eq!(p.pfns, &[0, 1, 2, 3]);
            assert_eq!(p.types[1], crate::guest::PageType::XTAB);
            assert_eq!(p.data_len(), 2 * PAGE_SIZE);
            let first = p.runs[0].as_ptr() as usize;
            let bytes: Vec<u8> = p.runs.iter().flat_map(|r| r.iter().copied()).collect();
            (first, bytes[0], bytes[PAGE_SIZE])
        });
        match lend {
            Lend::Honest => {
                // Sent from the guest's memory (pfn 0), nothing copied.
                assert_eq!(r, Ok(Some((mem_ptr, 0x40, 0x42))));
                assert_eq!(g.copies, 0);
            }
            Lend::Never => {
                // Copied into the caller's buffer: Holes writes the pfn.
                assert_eq!(r, Ok(Some((data_ptr, 0, 2))));
                assert_eq!(g.copies, 1);
            }
            Lend::Short | Lend::Silent => assert_eq!(r, Err(DriveError::BatchMismatch)),
        }
    }
}

impl crate::guest::SourceGuest for Holes {
    type Error = ();
    fn info(&self) -> Result<crate::guest::GuestInfo, ()> {
        Ok(crate::guest::GuestInfo {
            guest_type: crate::guest::GuestType::Pv,
            p2m_size: 10,
            nr_pages: 5,
            vcpus: 1,
        })
    }
    fn enable_logdirty(&mut self) -> Result<(), ()> {
        Ok(())
    }
    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, ()> {
        bitmap[0] = if self.suspended { 0b1000 } else { 0b11 };
        Ok(2)
    }
    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [crate::guest::PageType],
        data: &mut [u8],
    ) -> Result<usize, ()> {
        self.copies += 1;
        let mut k = 0;
        for (i, p) in pfns.iter().enumerate() {
            if p % 2 == 1 {
                types[i] = crate::guest::PageType::XTAB;
            } else {
                types[i] = crate::guest::PageType::NOTAB;
                data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE].fill(*p as u8);
                k += 1;
            }
        }
        Ok(if self.lie { k + 1 } else { k })
    }
    fn lend_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [crate::guest::PageType],
        f: &mut crate::guest::LendFn<'_>,
    ) -> Result<bool, ()> {
        if self.lend == Lend::Never {
            return Ok(false);
        }
        let mut runs: Vec<&[u8]> = Vec::new();
        for (i, &p) in pfns.iter().enumerate() {
            let page = p as usize;
            if p % 2 == 1 {
                types[i] = crate::guest::PageType::XTAB;
            } else {
                types[i] = crate::guest::PageType::NOTAB;
                runs.push(&self.mem[page * PAGE_SIZE..(page + 1) * PAGE_SIZE]);
            }
        }
        match self.lend {
            Lend::Short => {
                runs.pop();
                f(types, &runs)
            }
            Lend::Silent => {}
            _ => f(types, &runs),
        }
        Ok(true)
    }
    fn pause(&mut self) -> Result<(), ()> {
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), ()> {
        Ok(())
    }
    fn suspend(&mut self) -> Result<(), ()> {
        self.suspended = true;
        Ok(())
    }
    fn resume(&mut self) -> Result<(), ()> {
        Ok(())
    }
    fn vcpu_context(&mut self, _: u32, _: &mut [u8]) -> Result<usize, ()> {
        Ok(0)
    }
    fn destroy(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

#[test]
fn drive_steps_over_a_guest() {
    use drive::*;
    let mut g = Holes::new(Lend::Never, Vec::new());
    let mut bm = [0u64; 1];
    let mut pc = start_live(
        &mut g,
        &mut bm,
        PrecopyConfig::default(),
        SimplePolicy {
            target_dirty: 0,
            max_rounds: 2,
        },
        Instant::ZERO,
    )
    .unwrap();
    let (mut pfns, mut types, mut data) = (
        [0u64; 4],
        [crate::guest::PageType::NOTAB; 4],
        vec![0u8; 4 * PAGE_SIZE],
    );
    let b = read_batch(
        &mut pc,
        &mut g,
        &bm,
        BatchBuf {
            pfns: &mut pfns,
            types: &mut types,
            data: &mut data,
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(b.pfns, &[0, 1, 2, 3]);
    assert_eq!(b.types[1], crate::guest::PageType::XTAB);
    // Holes carry no data: two pages, packed.
    assert_eq!(b.data.len(), 2 * PAGE_SIZE);
    assert_eq!((b.data[0], b.data[PAGE_SIZE]), (0, 2));
    assert_eq!(b.record_len(), 16 + 4 * 8 + 2 * PAGE_SIZE);
    let mut count = 4;
    loop {
        let buf = BatchBuf {
            pfns: &mut pfns,
            types: &mut types,
            data: &mut data,
        };
        match read_batch(&mut pc, &mut g, &bm, buf).unwrap() {
            Some(b) => count += b.pfns.len(),
            None => break,
        }
    }
    assert_eq!(count, 10);
    assert_eq!(
        end_live_round(&mut pc, &mut g, &mut bm, Instant::from_millis(5)),
        Ok(Decision::ContinuePrecopy)
    );
    assert_eq!(
        end_live_round(&mut pc, &mut g, &mut bm, Instant::from_millis(6)),
        Ok(Decision::StopAndCopy)
    );
    assert_eq!(pc.phase(), Phase::Stopping);
    // The last log (pfn 3) joins what round 2 left dirty (pfns 0, 1).
    let mut scratch = [0u64; 1];
    assert_eq!(
        suspend_for_final(
            &mut pc,
            &mut g,
            &mut bm,
            &mut scratch,
            Instant::from_millis(7)
        ),
        Ok(3)
    );
    assert_eq!(bm[0], 0b1011);
    // A backend that miscounts is caught.
    g.lie = true;
    let buf = BatchBuf {
        pfns: &mut pfns,
        types: &mut types,
        data: &mut data,
    };
    assert_eq!(
        read_batch(&mut pc, &mut g, &bm, buf),
        Err(DriveError::BatchMismatch)
    );
    // The sink side checks the data length against the types.
    struct Sink;
    impl crate::guest::SinkGuest for Sink {
        type Error = ();
        fn populate(&mut self, _: &[Pfn], _: &[crate::guest::PageType]) -> Result<(), ()> {
            Ok(())
        }
        fn write_pages(
            &mut self,
            _: &[Pfn],
            _: &[crate::guest::PageType],
            _: &[u8],
        ) -> Result<(), ()> {
            Ok(())
        }
        fn set_vcpu_context(&mut self, _: u32, _: &[u8]) -> Result<(), ()> {
            Ok(())
        }
        fn unpause(&mut self) -> Result<(), ()> {
            Ok(())
        }
        fn destroy(&mut self) -> Result<(), ()> {
            Ok(())
        }
    }
    let t = [crate::guest::PageType::NOTAB, crate::guest::PageType::XTAB];
    assert_eq!(apply_batch(&mut Sink, &[0, 1], &t, &[0; PAGE_SIZE]), Ok(()));
    assert_eq!(
        apply_batch(&mut Sink, &[0, 1], &t, &[0; 2 * PAGE_SIZE]),
        Err(DriveError::BatchMismatch)
    );
}

/// A summary table per dirty rate, pinned: any change to the loop or the
/// default policy that moves these figures shows up here.
#[test]
fn summary_table_per_dirty_rate() {
    use std::fmt::Write;
    let mut table = std::string::String::new();
    for rate in [0u64, 10, 50, 100, 200, 250, 400] {
        let mut sim = Sim {
            p2m: 16384,
            link_bytes_per_ms: 1 << 20,
            dirty_pages_per_ms: rate,
            hot: 16384,
            next_dirty: 5,
        };
        let cfg = PolicyConfig {
            downtime_limit: Duration::from_millis(2),
            max_rounds: 8,
            ..PolicyConfig::default()
        };
        let r = sim.run(DefaultPolicy::new(cfg), PrecopyConfig::default());
        writeln!(
            table,
            "rate {rate:>3} p/ms: {:?} after {} rounds, {} pages sent, final {} pages",
            r.decision, r.rounds, r.total_pages, r.final_pages
        )
        .unwrap();
    }
    std::println!("{table}");
    assert_eq!(table, SUMMARY);
}

const SUMMARY: &str = "\
rate   0 p/ms: StopAndCopy after 1 rounds, 16384 pages sent, final 0 pages
rate  10 p/ms: StopAndCopy after 2 rounds, 17205 pages sent, final 40 pages
rate  50 p/ms: StopAndCopy after 3 rounds, 20989 pages sent, final 197 pages
rate 100 p/ms: StopAndCopy after 5 rounds, 27909 pages sent, final 300 pages
rate 200 p/ms: StopAndCopy after 8 rounds, 58034 pages sent, final 2560 pages
rate 250 p/ms: StopAndCopy after 6 rounds, 67317 pages sent, final 6700 pages
rate 400 p/ms: StopAndCopy after 4 rounds, 69930 pages sent, final 12917 pages
";

/// A sink that keeps what it is written, page by page, and can clear pages
/// itself when `cheap_zeros`.
#[cfg(feature = "alloc")]
struct Mem {
    pages: Vec<Option<Vec<u8>>>,
    cheap_zeros: bool,
    writes: usize,
    /// Lends pages to be filled in place (as two runs, split after the
    /// first page, over garbage).
    lends: bool,
    lent: usize,
}

/// Pages that come from a reader, not from memory: what the link is to
/// a destination. Fails its fills once `fail_after` calls were made.
#[cfg(feature = "alloc")]
struct Reader {
    bytes: Vec<u8>,
    at: usize,
    calls: usize,
    fail_after: usize,
}

#[cfg(feature = "alloc")]
impl drive::PageSource for Reader {
    fn bytes_left(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }
    fn fill(&mut self, runs: &mut [&mut [u8]]) -> bool {
        self.calls += 1;
        if self.calls > self.fail_after {
            return false;
        }
        for run in runs.iter_mut() {
            let Some(src) = self.bytes.get(self.at..self.at + run.len()) else {
                return false;
            };
            run.copy_from_slice(src);
            self.at += run.len();
        }
        true
    }
}

#[cfg(feature = "alloc")]
impl crate::guest::SinkGuest for Mem {
    type Error = ();
    fn populate(&mut self, _: &[Pfn], _: &[crate::guest::PageType]) -> Result<(), ()> {
        Ok(())
    }
    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        types: &[crate::guest::PageType],
        data: &[u8],
    ) -> Result<(), ()> {
        self.writes += 1;
        let mut pages = data.chunks_exact(PAGE_SIZE);
        for (&pfn, t) in pfns.iter().zip(types) {
            if t.has_data() {
                self.pages[pfn as usize] = Some(pages.next().ok_or(())?.to_vec());
            }
        }
        Ok(())
    }
    fn lend_pages_mut(
        &mut self,
        pfns: &[Pfn],
        types: &[crate::guest::PageType],
        f: &mut crate::guest::FillFn<'_>,
    ) -> Result<bool, ()> {
        if !self.lends {
            return Ok(false);
        }
        self.lent += 1;
        let with_data: Vec<Pfn> = pfns
            .iter()
            .zip(types)
            .filter(|(_, t)| t.has_data())
            .map(|(&p, _)| p)
            .collect();
        let mut buf = vec![0xdd; with_data.len() * PAGE_SIZE];
        let (a, b) = buf.split_at_mut(PAGE_SIZE.min(with_data.len() * PAGE_SIZE));
        if f(&mut [a, b]) {
            for (&pfn, page) in with_data.iter().zip(buf.chunks_exact(PAGE_SIZE)) {
                self.pages[pfn as usize] = Some(page.to_vec());
            }
        }
        Ok(true)
    }
    fn zero_pages(&mut self, pfns: &[Pfn], types: &[crate::guest::PageType]) -> Result<bool, ()> {
        if !self.cheap_zeros {
            return Ok(false);
        }
        for (&pfn, t) in pfns.iter().zip(types) {
            assert!(t.has_data());
            self.pages[pfn as usize] = Some(vec![0; PAGE_SIZE]);
        }
        Ok(true)
    }
    fn set_vcpu_context(&mut self, _: u32, _: &[u8]) -> Result<(), ()> {
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), ()> {
        Ok(())
    }
    fn destroy(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// A batch whose zero pages came as markers lands as the whole batch
/// would, whether the sink clears pages itself or is written zeros; a
/// bitmap that does not match the data is refused.
#[cfg(feature = "alloc")]
#[test]
fn an_elided_batch_lands_as_the_whole_batch() {
    use crate::guest::PageType;
    use drive::{apply_batch, apply_elided_batch, DriveError};
    // pfn 3 is a hole; 0, 5 and 7 are zeros.
    let pfns: Vec<Pfn> = (0..10).collect();
    let mut types = vec![PageType::NOTAB; 10];
    types[3] = PageType::XTAB;
    let zero_pfns = [0u64, 5, 7];
    let (mut bitmap, mut data, mut whole) = (vec![0u8; 2], Vec::new(), Vec::new());
    let mut k = 0;
    for (&pfn, t) in pfns.iter().zip(&types) {
        if !t.has_data() {
            continue;
        }
        if zero_pfns.contains(&pfn) {
            bitmap[k / 8] |= 1 << (k % 8);
            whole.extend_from_slice(&[0; PAGE_SIZE]);
        } else {
            data.extend_from_slice(&[pfn as u8 + 1; PAGE_SIZE]);
            whole.extend_from_slice(&[pfn as u8 + 1; PAGE_SIZE]);
        }
        k += 1;
    }
    // What the destination held before: garbage everywhere.
    let fresh = |cheap_zeros, lends| Mem {
        pages: vec![Some(vec![0xee; PAGE_SIZE]); 10],
        cheap_zeros,
        writes: 0,
        lends,
        lent: 0,
    };
    let reader = |fail_after| Reader {
        bytes: data.clone(),
        at: 0,
        calls: 0,
        fail_after,
    };
    let mut want = fresh(false, false);
    apply_batch(&mut want, &pfns, &types, &whole).unwrap();
    for cheap in [true, false] {
        for lends in [true, false] {
            let case = alloc::format!("cheap zeros {cheap}, lends {lends}");
            // From memory: one write, lent or not.
            let mut got = fresh(cheap, lends);
            let mut rebuild = Vec::new();
            apply_elided_batch(
                &mut got,
                &pfns,
                &types,
                &bitmap,
                &mut &data[..],
                &mut rebuild,
            )
            .unwrap();
            assert!(got.pages == want.pages, "{case}");
            assert_eq!((got.writes, got.lent), (1, 0), "{case}");
            // From a reader: into the lent pages, in one read, where the
            // sink lends; else one write.
            let mut got = fresh(cheap, lends);
            let mut r = reader(usize::MAX);
            apply_elided_batch(&mut got, &pfns, &types, &bitmap, &mut r, &mut rebuild).unwrap();
            assert!(got.pages == want.pages, "{case}, from a reader");
            let want_counts = if lends { (0, 1) } else { (1, 0) };
            assert_eq!((got.writes, got.lent), want_counts, "{case}, from a reader");
            assert_eq!((r.calls, r.at), (1, data.len()), "{case}");
            // A reader that fails: the batch fails, nothing written.
            let mut got = fresh(cheap, lends);
            assert_eq!(
                apply_elided_batch(
                    &mut got,
                    &pfns,
                    &types,
                    &bitmap,
                    &mut reader(0),
                    &mut rebuild
                ),
                Err(DriveError::NoData),
                "{case}"
            );
            assert_eq!(got.writes, 0);
        }
    }
    // Data one page short, or a bitmap too short: refused, nothing written.
    for (bm, d) in [
        (&bitmap[..], &data[..data.len() - PAGE_SIZE]),
        (&bitmap[..1], &data[..]),
    ] {
        let mut got = fresh(true, true);
        assert_eq!(
            apply_elided_batch(&mut got, &pfns, &types, bm, &mut &d[..], &mut Vec::new()),
            Err(DriveError::BatchMismatch)
        );
        assert_eq!((got.writes, got.lent), (0, 0));
    }
}
