//! Tests of the simulated hypervisor.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn hv() -> SimHypervisor {
    SimHypervisor::new(64 * GIB, Drive::Manual)
}

fn spec(name: &str, memory: u64, rate: u64, pattern: Pattern) -> GuestSpec {
    GuestSpec::new(name, memory)
        .unwrap()
        .with_dirty_rate(rate)
        .unwrap()
        .with_pattern(pattern)
}

fn bits(bitmap: &[u64]) -> BTreeSet<u64> {
    let mut set = BTreeSet::new();
    for (i, &w) in bitmap.iter().enumerate() {
        for b in 0..64 {
            if w & (1 << b) != 0 {
                set.insert(i as u64 * 64 + b);
            }
        }
    }
    set
}

/// The pfns steps `from..=to` write, counter page included.
fn written_by(guest: &SimGuest, from: u64, to: u64) -> BTreeSet<u64> {
    let w = guest.vcpu_state().unwrap().workload;
    let mut set = BTreeSet::new();
    for k in from..=to {
        set.insert(0);
        w.for_each_target(guest.nr_pages(), k, |pfn| {
            set.insert(pfn);
        });
    }
    set
}

/// Copies every page and the vCPU state of `from` (paused) into `to`.
fn copy_all(from: &SimGuest, to: &SimGuest) {
    let nr = from.nr_pages();
    let mut buf = vec![0; 1024 * PAGE_SIZE];
    let mut start = 0;
    while start < nr {
        let pfns: Vec<u64> = (start..nr.min(start + 1024)).collect();
        let len = pfns.len() * PAGE_SIZE;
        from.read_pages(&pfns, &mut buf[..len]).unwrap();
        to.populate(&pfns).unwrap();
        to.write_pages(&pfns, &buf[..len]).unwrap();
        start += pfns.len() as u64;
    }
    to.set_vcpu_context(&from.vcpu_context().unwrap()).unwrap();
}

// ----- sizes, rates, specs, guests file -----

#[test]
fn sizes() {
    for (text, want) in [
        ("0", 0),
        ("4096", 4096),
        ("4K", 4096),
        ("4k", 4096),
        ("4KiB", 4096),
        ("512M", 512 * MIB),
        ("1G", GIB),
        ("1GiB", GIB),
        ("1GB", GIB),
        ("2t", 2 << 40),
        ("7B", 7),
    ] {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    assert_eq!(parse_size(""), Err(SpecError::Empty));
    assert_eq!(parse_size("G"), Err(SpecError::BadNumber("G".into())));
    assert_eq!(parse_size("-1G"), Err(SpecError::BadNumber("-1G".into())));
    assert_eq!(parse_size(" 1G"), Err(SpecError::BadNumber(" 1G".into())));
    assert_eq!(parse_size("1X"), Err(SpecError::BadSuffix("1X".into())));
    assert_eq!(parse_size("1Gi"), Err(SpecError::BadSuffix("1Gi".into())));
    assert_eq!(parse_size("1 G"), Err(SpecError::BadSuffix("1 G".into())));
    assert_eq!(parse_size("1.5G"), Err(SpecError::BadSuffix("1.5G".into())));
    assert_eq!(
        parse_size("99999999999999999999"),
        Err(SpecError::Overflow("99999999999999999999".into()))
    );
    assert_eq!(
        parse_size("16777216T"),
        Err(SpecError::Overflow("16777216T".into()))
    );
}

#[test]
fn rates_and_memory() {
    assert_eq!(parse_rate("64M/s"), Ok(64 * MIB));
    assert_eq!(parse_rate("64M"), Ok(64 * MIB));
    assert_eq!(parse_rate("0/s"), Ok(0));
    assert_eq!(parse_rate("/s"), Err(SpecError::BadNumber("/s".into())));
    assert_eq!(
        parse_rate("64M/h"),
        Err(SpecError::BadSuffix("64M/h".into()))
    );
    assert_eq!(parse_rate(""), Err(SpecError::Empty));
    assert_eq!(parse_memory("1G"), Ok(GIB));
    assert_eq!(parse_memory("0"), Err(SpecError::MemoryNotPages(0)));
    assert_eq!(parse_memory("4097"), Err(SpecError::MemoryNotPages(4097)));
    assert_eq!(parse_memory("2T"), Err(SpecError::MemoryTooLarge(2 << 40)));
    assert_eq!("hot".parse::<Pattern>(), Ok(Pattern::Hot));
    assert_eq!("uniform".parse::<Pattern>(), Ok(Pattern::Uniform));
    assert_eq!(
        "Hot".parse::<Pattern>(),
        Err(SpecError::BadPattern("Hot".into()))
    );
    assert_eq!(Pattern::Hot.to_string(), "hot");
    let err = parse_rate("64Q/s").unwrap_err().to_string();
    assert!(err.contains("64Q/s") && err.contains("suffix"), "{err}");
    assert_eq!(
        GuestSpec::new("a", GIB)
            .unwrap()
            .with_dirty_rate(MAX_DIRTY_RATE + 1),
        Err(SpecError::RateTooLarge(MAX_DIRTY_RATE + 1))
    );
    assert_eq!(
        GuestSpec::new("a b", GIB),
        Err(SpecError::BadName("a b".into()))
    );
    assert_eq!(
        GuestSpec::new("", GIB),
        Err(SpecError::BadName(String::new()))
    );
    assert!(GuestSpec::new(&"x".repeat(65), GIB).is_err());
}

#[test]
fn guests_file() {
    let text = "\
# name   settings
web1     memory=1G dirty-rate=64M/s pattern=hot

db1\tmemory=256M   # idle
batch1   memory=2G dirty-rate=8M pattern=uniform seed=42
";
    let specs = parse_guests_file(text).unwrap();
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[0], spec("web1", GIB, 64 * MIB, Pattern::Hot));
    assert_eq!(specs[0].seed, seed_from_name("web1"));
    assert_eq!(specs[1], spec("db1", 256 * MIB, 0, Pattern::Uniform));
    assert_eq!(
        specs[2],
        spec("batch1", 2 * GIB, 8 * MIB, Pattern::Uniform).with_seed(42)
    );
    assert_ne!(seed_from_name("web1"), seed_from_name("web2"));
    assert_eq!(parse_guests_file("# nothing\n\n"), Ok(vec![]));

    let line = |line, error| SpecError::Line {
        line,
        error: Box::new(error),
    };
    for (text, want) in [
        ("a\n", line(1, SpecError::MissingMemory)),
        (
            "\na memory\n",
            line(2, SpecError::NotKeyValue("memory".into())),
        ),
        (
            "a memory=1G cpu=2",
            line(1, SpecError::UnknownKey("cpu".into())),
        ),
        (
            "a memory=1G memory=2G",
            line(1, SpecError::RepeatedKey("memory".into())),
        ),
        ("a memory=1Q", line(1, SpecError::BadSuffix("1Q".into()))),
        (
            "a memory=1G pattern=cold",
            line(1, SpecError::BadPattern("cold".into())),
        ),
        (
            "a memory=1G seed=-1",
            line(1, SpecError::BadSeed("-1".into())),
        ),
        (
            "a memory=1G\nb memory=1G\na memory=2G",
            line(3, SpecError::DuplicateName("a".into())),
        ),
    ] {
        assert_eq!(parse_guests_file(text), Err(want), "{text:?}");
    }
    let msg = parse_guests_file("x memory=1G\ny memory=3\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("guests file, line 2:"), "{msg}");
}

// ----- workload -----

#[test]
fn rate_is_met_without_drift() {
    let w = spec("a", GIB, 64 * MIB, Pattern::Uniform).workload();
    // 64 MiB/s = 16384 pages/s = 163.84 pages per 10 ms step.
    assert_eq!(w.pages_through(100), 16384);
    assert_eq!(w.pages_through(1), 163);
    let per_step: BTreeSet<u64> = (1..=100).map(|k| w.pages_in_step(k)).collect();
    assert_eq!(per_step, BTreeSet::from([163, 164]));
    assert_eq!((1..=100).map(|k| w.pages_in_step(k)).sum::<u64>(), 16384);
    assert_eq!(w.pages_in_step(0), 0);
    let idle = spec("a", GIB, 0, Pattern::Uniform).workload();
    assert_eq!(idle.pages_through(1_000_000), 0);
}

#[test]
fn patterns_spread_as_documented() {
    let nr = 10_001; // 10000 workload pages, a hot set of 1000
    let writes = 100_000u64;
    // Hot: ~10000 writes outside the hot set reach ~63 % of the pages, plus
    // the hot set itself; uniform: 100000 writes reach all 10000.
    for (pattern, low, high, reach) in [
        (Pattern::Hot, 0.88, 0.93, 6000),
        (Pattern::Uniform, 0.08, 0.12, 9990),
    ] {
        let w = spec("a", nr * PAGE_SIZE as u64, 0, pattern).workload();
        let mut hot = 0u64;
        let mut seen = BTreeSet::new();
        for i in 0..writes {
            let pfn = w.target(nr, 7, i).unwrap();
            assert!((1..nr).contains(&pfn), "{pfn}");
            seen.insert(pfn);
            if pfn <= 1000 {
                hot += 1;
            }
        }
        let share = hot as f64 / writes as f64;
        assert!(low < share && share < high, "{pattern}: {share}");
        assert!(seen.len() > reach, "{pattern}: {}", seen.len());
    }
    let w = spec("a", PAGE_SIZE as u64, MIB, Pattern::Hot).workload();
    assert_eq!(w.target(1, 1, 0), None);
    assert_eq!(w.target(2, 1, 0), Some(1));
}

#[test]
fn same_spec_same_bytes_and_recomputation_matches() {
    let hv = hv();
    for pattern in [Pattern::Uniform, Pattern::Hot] {
        let s = spec("a", 64 * MIB, 32 * MIB, pattern);
        let a = hv.create(&s, false).unwrap();
        let mut s2 = s.clone();
        s2.name = "b".into();
        let b = hv.create(&s2, false).unwrap();
        assert_eq!(a.advance(250), 250);
        // The same 250 steps in uneven pieces.
        for n in [1, 99, 0, 150] {
            assert_eq!(b.advance(n), n);
        }
        assert_eq!(a.first_difference(&b), Ok(None));
        assert_eq!(a.steps(), Some(250));
        assert_eq!(a.memory_counter(), Some(250));

        let expected = ExpectedMemory::after(s.workload(), s.nr_pages(), 250);
        assert_eq!(a.verify(&expected), Ok(()));
        assert_eq!(a.allocated_pages(), expected.written_pages());
        // One step fewer does not match: the check can fail.
        let behind = ExpectedMemory::after(s.workload(), s.nr_pages(), 249);
        assert!(matches!(
            a.verify(&behind),
            Err(SimError::MemoryDiffers { .. })
        ));
        // A single page, read and recomputed.
        let mut pfn = 0;
        expected.for_each_written(|p| pfn = pfn.max(p));
        let mut got = vec![0; PAGE_SIZE];
        a.read_pages(&[pfn], &mut got).unwrap();
        assert_eq!(
            got[..],
            expected_page(s.workload(), s.nr_pages(), 250, pfn)[..]
        );
        assert_eq!(got[8..16], expected.last_write(pfn).unwrap().to_le_bytes());

        // Another seed gives other bytes.
        let taken = hv.create(&s, false).unwrap_err().to_string();
        assert_eq!(taken, "a domain named `a` already exists");
        let mut s3 = s.clone().with_seed(s.seed + 1);
        s3.name = "c".into();
        let c = hv.create(&s3, false).unwrap();
        c.advance(250);
        assert!(a.first_difference(&c).unwrap().is_some());
        for g in [a, b, c] {
            g.destroy().unwrap();
        }
    }
}

#[test]
fn page_contents_are_a_function_of_seed_step_pfn() {
    let mut a = [0; PAGE_SIZE];
    let mut b = [0; PAGE_SIZE];
    page_contents(1, 2, 3, &mut a);
    page_contents(1, 2, 3, &mut b);
    assert_eq!(a, b);
    for (seed, k, pfn) in [(2, 2, 3), (1, 3, 3), (1, 2, 4)] {
        page_contents(seed, k, pfn, &mut b);
        assert_ne!(a[24..], b[24..]);
    }
    // The payload is not trivially compressible to zeros.
    assert!(a.iter().filter(|&&x| x == 0).count() < 100);
}

// ----- memory cost -----

#[test]
fn a_1_gib_guest_is_cheap() {
    let hv = hv();
    let g = hv
        .create(&spec("big", GIB, 64 * MIB, Pattern::Uniform), true)
        .unwrap();
    assert_eq!(g.nr_pages(), 262_144);
    assert_eq!(g.allocated_pages(), 0);
    // Reading never-written pages gives zeros and allocates nothing.
    let pfns: Vec<u64> = (0..1024).map(|i| i * 256).collect();
    let mut buf = vec![0xff; pfns.len() * PAGE_SIZE];
    g.read_pages(&pfns, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(g.allocated_pages(), 0);
    // Paused: advancing does nothing.
    assert_eq!(g.advance(10), 0);
    assert_eq!(g.allocated_pages(), 0);
    // Running: storage only for the pages written.
    g.unpause().unwrap();
    g.advance(100);
    let expected = ExpectedMemory::after(g.vcpu_state().unwrap().workload, g.nr_pages(), 100);
    assert_eq!(g.allocated_pages(), expected.written_pages());
    assert!(g.allocated_pages() <= 16384 + 1);
    // A destination that receives zero pages stores nothing for them.
    let dest = hv.create_empty("big-in", GIB).unwrap();
    dest.write_pages(&pfns, &buf).unwrap();
    assert_eq!(dest.allocated_pages(), 0);
    assert_eq!(hv.allocated_pages(), g.allocated_pages());
}

// ----- dirty log -----

#[test]
fn dirty_log_reports_exactly_the_pages_written() {
    let hv = hv();
    let g = hv
        .create(&spec("d", 16 * MIB, 16 * MIB, Pattern::Hot), false)
        .unwrap();
    let words = bitmap_words(g.nr_pages());
    assert_eq!(words, 64);
    let mut bitmap = vec![0; words];
    assert_eq!(g.clean_dirty(&mut bitmap), Err(SimError::LogDirtyOff));

    g.advance(5); // before log-dirty: not logged
    g.enable_log_dirty().unwrap();
    assert!(g.log_dirty_enabled());
    assert_eq!(g.clean_dirty(&mut bitmap), Ok(0));
    assert!(bitmap.iter().all(|&w| w == 0));

    g.advance(3);
    let want = written_by(&g, 6, 8);
    // Peek leaves the log; clean empties it.
    let mut peeked = vec![0; words + 3];
    peeked[words..].fill(u64::MAX);
    assert_eq!(g.peek_dirty(&mut peeked), Ok(want.len() as u64));
    assert!(
        peeked[words..].iter().all(|&w| w == u64::MAX),
        "tail untouched"
    );
    assert_eq!(bits(&peeked[..words]), want);
    assert_eq!(g.clean_dirty(&mut bitmap), Ok(want.len() as u64));
    assert_eq!(bits(&bitmap), want);
    assert_eq!(g.clean_dirty(&mut bitmap), Ok(0));

    g.advance(1);
    g.write_pages(&[4000], &[7; PAGE_SIZE]).unwrap();
    let mut want = written_by(&g, 9, 9);
    want.insert(4000);
    assert_eq!(g.clean_dirty(&mut bitmap), Ok(want.len() as u64));
    assert_eq!(bits(&bitmap), want);

    // A paused guest dirties nothing.
    g.pause().unwrap();
    g.advance(10);
    assert_eq!(g.clean_dirty(&mut bitmap), Ok(0));

    let mut short = vec![0; words - 1];
    assert_eq!(
        g.clean_dirty(&mut short),
        Err(SimError::BufferSize {
            expected: words,
            got: words - 1
        })
    );
    g.disable_log_dirty().unwrap();
    assert_eq!(g.peek_dirty(&mut bitmap), Err(SimError::LogDirtyOff));
}

// ----- migration-shaped use -----

#[test]
fn counter_goes_on_after_a_copy() {
    let src_hv = hv();
    let dst_hv = hv();
    let s = spec("web1", 32 * MIB, 64 * MIB, Pattern::Hot);
    let src = src_hv.create(&s, false).unwrap();
    src.advance(40);
    src.pause().unwrap();

    let dst = dst_hv.create_empty("web1", s.memory).unwrap();
    assert_eq!(dst.state(), DomainState::Paused);
    assert_eq!(dst.unpause(), Err(SimError::NoVcpuState));
    copy_all(&src, &dst);
    assert_eq!(dst.first_difference(&src), Ok(None));
    assert_eq!(dst.steps(), Some(40));

    dst.unpause().unwrap();
    src.unpause().unwrap();
    assert_eq!(dst.advance(25), 25);
    assert_eq!(src.advance(25), 25);
    assert_eq!(dst.first_difference(&src), Ok(None));
    assert_eq!(dst.steps(), Some(65));
    assert_eq!(dst.memory_counter(), Some(65));
    let expected = s.expected_memory(65);
    assert_eq!(dst.verify(&expected), Ok(()));
}

#[test]
fn live_precopy_with_the_dirty_log_converges_to_an_identical_copy() {
    let src_hv = hv();
    let dst_hv = hv();
    let s = spec("live", 64 * MIB, 64 * MIB, Pattern::Uniform);
    let src = src_hv.create(&s, false).unwrap();
    src.advance(10);
    let dst = dst_hv.create_empty("live", s.memory).unwrap();
    let nr = src.nr_pages();
    let mut bitmap = vec![0; bitmap_words(nr)];
    let mut buf = vec![0; 1024 * PAGE_SIZE];
    let send = |pfns: &[u64], buf: &mut [u8]| {
        for batch in pfns.chunks(1024) {
            let len = batch.len() * PAGE_SIZE;
            let mut types = vec![PageType::XTAB; batch.len()];
            src.page_types(batch, &mut types).unwrap();
            assert!(types.iter().all(|&t| t == PageType::NOTAB));
            src.read_pages(batch, &mut buf[..len]).unwrap();
            dst.write_pages(batch, &buf[..len]).unwrap();
        }
    };
    src.enable_log_dirty().unwrap();
    // Round 0 sends everything while the guest runs between batches.
    let all: Vec<u64> = (0..nr).collect();
    for batch in all.chunks(4096) {
        send(batch, &mut buf);
        src.advance(1);
    }
    for _round in 0..3 {
        src.clean_dirty(&mut bitmap).unwrap();
        let dirty: Vec<u64> = bits(&bitmap).into_iter().collect();
        assert!(!dirty.is_empty());
        send(&dirty, &mut buf);
        src.advance(2);
    }
    // Stop and copy.
    src.pause().unwrap();
    src.clean_dirty(&mut bitmap).unwrap();
    let dirty: Vec<u64> = bits(&bitmap).into_iter().collect();
    send(&dirty, &mut buf);
    dst.set_vcpu_context(&src.vcpu_context().unwrap()).unwrap();
    let at = src.steps().unwrap();
    src.destroy().unwrap();
    assert_eq!(src_hv.list(), vec![]);

    let expected = ExpectedMemory::after(s.workload(), nr, at);
    assert_eq!(dst.verify(&expected), Ok(()));
    dst.unpause().unwrap();
    dst.advance(5);
    assert_eq!(dst.memory_counter(), Some(at + 5));
    let expected = ExpectedMemory::after(s.workload(), nr, at + 5);
    assert_eq!(dst.verify(&expected), Ok(()));
}

// ----- pause -----

#[test]
fn pause_stops_the_workload_manual() {
    let hv = hv();
    let g = hv
        .create(&spec("p", 8 * MIB, 8 * MIB, Pattern::Uniform), false)
        .unwrap();
    g.advance(3);
    g.pause().unwrap();
    assert_eq!(g.state(), DomainState::Paused);
    let before = ExpectedMemory::after(g.vcpu_state().unwrap().workload, g.nr_pages(), 3);
    assert_eq!(g.advance(100), 0);
    assert_eq!(g.steps(), Some(3));
    assert_eq!(g.verify(&before), Ok(()));
    g.pause().unwrap(); // idempotent
    g.unpause().unwrap();
    g.unpause().unwrap(); // idempotent
    assert_eq!(g.advance(1), 1);
    assert_eq!(g.steps(), Some(4));
}

#[test]
fn pause_stops_the_workload_real_time() {
    let hv = SimHypervisor::new(GIB, Drive::RealTime);
    let mut s = spec("rt", 8 * MIB, 8 * MIB, Pattern::Hot);
    s.step_period_ns = 1_000_000; // 1 ms
    let g = hv.create(&s, false).unwrap();
    let wait_for = |steps: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while g.steps().unwrap() < steps {
            assert!(Instant::now() < deadline, "the workload thread stalled");
            thread::sleep(Duration::from_millis(2));
        }
    };
    wait_for(5);
    g.pause().unwrap();
    let at = g.steps().unwrap();
    thread::sleep(Duration::from_millis(30));
    assert_eq!(g.steps(), Some(at));
    assert_eq!(g.memory_counter(), Some(at));
    let expected = ExpectedMemory::after(s.workload(), s.nr_pages(), at);
    assert_eq!(g.verify(&expected), Ok(()));
    // It resumes from where it stopped.
    g.unpause().unwrap();
    wait_for(at + 5);
    g.destroy().unwrap();
    assert_eq!(g.state(), DomainState::Destroyed);
    assert_eq!(g.advance(1), 0);
}

// ----- hypervisor -----

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<SimHypervisor>();
    send_sync::<SimGuest>();
    // A source read and a workload step on two threads at once.
    let hv = hv();
    let g = hv
        .create(&spec("t", 4 * MIB, 32 * MIB, Pattern::Uniform), false)
        .unwrap();
    let stepper = {
        let g = g.clone();
        thread::spawn(move || g.advance(200))
    };
    let mut buf = vec![0; 64 * PAGE_SIZE];
    let pfns: Vec<u64> = (0..64).collect();
    for _ in 0..50 {
        g.read_pages(&pfns, &mut buf).unwrap();
    }
    assert_eq!(stepper.join().unwrap(), 200);
    let expected = ExpectedMemory::after(g.vcpu_state().unwrap().workload, g.nr_pages(), 200);
    assert_eq!(g.verify(&expected), Ok(()));
}

#[test]
fn admission_domids_names_and_destroy() {
    let hv = SimHypervisor::new(GIB, Drive::Manual);
    let a = hv
        .create(&spec("a", 512 * MIB, 0, Pattern::Uniform), false)
        .unwrap();
    let b = hv.create_empty("b", 256 * MIB).unwrap();
    assert_eq!((a.domid(), b.domid()), (1, 2));
    assert_eq!(hv.used(), 768 * MIB);
    assert_eq!(hv.free(), 256 * MIB);
    assert_eq!(
        hv.check_admission("c", 512 * MIB),
        Err(SimError::NoCapacity {
            needed: 512 * MIB,
            free: 256 * MIB
        })
    );
    assert_eq!(
        hv.create_empty("a", 4096).unwrap_err(),
        SimError::NameTaken("a".into())
    );
    assert!(matches!(
        hv.create_empty("c", 4097),
        Err(SimError::Spec(SpecError::MemoryNotPages(4097)))
    ));
    assert_eq!(hv.check_admission("c", 256 * MIB), Ok(()));
    assert_eq!(hv.lookup("b"), Some(2));
    assert_eq!(hv.by_name("a").unwrap().domid(), 1);
    assert_eq!(hv.get(2).unwrap().name(), "b");

    let list = hv.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "a");
    assert_eq!(list[0].state, DomainState::Running);
    assert_eq!(list[0].steps, Some(0));
    assert_eq!(list[1].state, DomainState::Paused);
    assert_eq!(list[1].steps, None);
    assert_eq!(list[1].memory, 256 * MIB);

    hv.rename(2, "b-incoming").unwrap();
    assert_eq!(hv.lookup("b"), None);
    assert_eq!(b.name(), "b-incoming");
    assert_eq!(hv.rename(2, "a"), Err(SimError::NameTaken("a".into())));

    hv.destroy(1).unwrap();
    assert_eq!(hv.destroy(1), Err(SimError::NoSuchDomain("1".into())));
    assert_eq!(hv.used(), 256 * MIB);
    assert_eq!(a.state(), DomainState::Destroyed);
    assert_eq!(a.pause(), Err(SimError::Destroyed("a".into())));
    assert!(hv.lookup("a").is_none());
    // Domids are not reused at once.
    let c = hv.create_empty("a", 4096).unwrap();
    assert_eq!(c.domid(), 3);
}

/// Pages lent for writing hold what was written, zeros take nothing, a
/// fill that fails leaves them reading zeros, and writes show in the
/// dirty log.
#[test]
fn pages_lent_to_a_sink_hold_what_was_written() {
    let hv = hv();
    let g = hv.create_empty("s", 64 * 4096).unwrap();
    g.write_pages(&[2], &[0x22; PAGE_SIZE]).unwrap();
    g.enable_log_dirty().unwrap();
    let pfns = [1u64, 2, 3, 10];
    // pfn 3 is written zeros.
    let lent = g
        .lend_pages_mut(&pfns, &mut |runs| {
            for (k, p) in runs
                .iter_mut()
                .flat_map(|r| r.chunks_exact_mut(PAGE_SIZE))
                .enumerate()
            {
                p.fill(if k == 2 { 0 } else { k as u8 + 1 });
            }
            true
        })
        .unwrap();
    assert!(lent);
    assert_eq!(g.pages_filled_in_place(), 4);
    let mut out = vec![0u8; pfns.len() * PAGE_SIZE];
    g.read_pages(&pfns, &mut out).unwrap();
    let want: Vec<u8> = [1u8, 2, 0, 4]
        .iter()
        .flat_map(|&b| [b; PAGE_SIZE])
        .collect();
    assert!(out == want);
    assert_eq!(g.allocated_pages(), 3);
    let mut dirty = [0u64; 1];
    assert_eq!(g.clean_dirty(&mut dirty).unwrap(), 4);
    assert_eq!(dirty[0], (1 << 1) | (1 << 2) | (1 << 3) | (1 << 10));
    // A fill that fails: the pages read as zeros, nothing else changes.
    assert!(g.lend_pages_mut(&[1, 5], &mut |_| false).unwrap());
    assert_eq!(g.pages_filled_in_place(), 4);
    g.read_pages(&[1, 5, 2], &mut out[..3 * PAGE_SIZE]).unwrap();
    assert!(out[..2 * PAGE_SIZE].iter().all(|&b| b == 0));
    assert!(out[2 * PAGE_SIZE..3 * PAGE_SIZE].iter().all(|&b| b == 2));
    // Not ascending: not lent, the caller writes them instead.
    assert!(!g.lend_pages_mut(&[4, 3], &mut |_| unreachable!()).unwrap());
    assert!(g.lend_pages_mut(&[64], &mut |_| true).is_err());
}

#[test]
fn sink_checks_its_input() {
    let hv = hv();
    let g = hv.create_empty("s", 64 * 4096).unwrap();
    assert_eq!(
        g.populate(&[0, 64]),
        Err(SimError::PfnOutOfRange {
            pfn: 64,
            nr_pages: 64
        })
    );
    assert_eq!(
        g.write_pages(&[1, 2], &[1; PAGE_SIZE]),
        Err(SimError::BufferSize {
            expected: 2 * PAGE_SIZE,
            got: PAGE_SIZE
        })
    );
    // A refused batch writes nothing.
    assert!(g.write_pages(&[1, 99], &[1; 2 * PAGE_SIZE]).is_err());
    assert_eq!(g.allocated_pages(), 0);
    let mut types = [PageType::NOTAB; 1];
    assert!(g.page_types(&[64], &mut types).is_err());
    assert!(g.read_pages(&[0], &mut [0; 10]).is_err());
    assert_eq!(g.vcpu_state(), Err(SimError::NoVcpuState));

    let good = VcpuState::boot(spec("s", 4096, MIB, Pattern::Hot).workload());
    let mut blob = good.to_bytes();
    assert_eq!(VcpuState::from_bytes(&blob), Ok(good));
    assert_eq!(
        g.set_vcpu_context(&blob[..63]),
        Err(SimError::VcpuState(VcpuStateError::Length(63)))
    );
    blob[12] = 9;
    assert_eq!(
        VcpuState::from_bytes(&blob),
        Err(VcpuStateError::Pattern(9))
    );
    blob[12] = 1;
    blob[63] = 1;
    assert_eq!(VcpuState::from_bytes(&blob), Err(VcpuStateError::Reserved));
    blob[63] = 0;
    blob[0] = b'X';
    assert_eq!(VcpuState::from_bytes(&blob), Err(VcpuStateError::Magic));
    blob[0] = b'R';
    blob[8] = 2;
    assert_eq!(
        VcpuState::from_bytes(&blob),
        Err(VcpuStateError::Version(2))
    );
    blob[8] = 1;
    blob[40..48].fill(0);
    assert!(matches!(
        VcpuState::from_bytes(&blob),
        Err(VcpuStateError::Range { period_ns: 0, .. })
    ));

    g.set_vcpu_state(good).unwrap();
    g.unpause().unwrap();
    assert_eq!(g.set_vcpu_state(good), Err(SimError::NotPaused("s".into())));
}

#[test]
fn fill_writes_a_share_of_pages_that_the_recomputation_knows() {
    let h = hv();
    let s = spec("filled", 16 * MIB, 4 * MIB, Pattern::Uniform)
        .with_fill(25)
        .unwrap();
    let g = h.create(&s, true).unwrap();
    let pages = s.nr_pages();
    // About a quarter of the pages, pfn 0 (the counter page) not among them.
    let filled = g.allocated_pages();
    assert!(
        filled > pages * 22 / 100 && filled < pages * 28 / 100,
        "{filled}"
    );
    assert_eq!(filled, s.expected_memory(0).written_pages());
    assert!(!s.workload().filled(pages, 0));
    g.verify(&s.expected_memory(0)).unwrap();
    // The workload goes on over it; a page it rewrites holds its step.
    g.unpause().unwrap();
    g.advance(30);
    g.verify(&s.expected_memory(30)).unwrap();
    // A guest without the fill is not the same memory.
    let plain = spec("plain", 16 * MIB, 4 * MIB, Pattern::Uniform);
    let p = h.create(&plain, true).unwrap();
    assert_eq!(p.allocated_pages(), 0);
    assert!(matches!(
        p.verify(&s.expected_memory(0)),
        Err(SimError::MemoryDiffers { .. })
    ));
    // 0 and 100 are the ends; the fill travels in the vCPU blob.
    assert_eq!(parse_fill("100"), Ok(100));
    assert_eq!(parse_fill("25%"), Ok(25));
    for bad in ["101", "-1", "", "x", "+5", "2.5"] {
        assert!(parse_fill(bad).is_err(), "{bad}");
    }
    assert!(GuestSpec::new("x", MIB).unwrap().with_fill(101).is_err());
    let blob = g.vcpu_context().unwrap();
    let back = VcpuState::from_bytes(&blob).unwrap();
    assert_eq!(back.workload.fill_percent, 25);
    let mut over = blob;
    over[48] = 101;
    assert!(VcpuState::from_bytes(&over).is_err());
    // The guests file knows it too.
    let specs = parse_guests_file("a memory=1M fill=50\n").unwrap();
    assert_eq!(specs[0].fill_percent, 50);
    assert!(parse_guests_file("a memory=1M fill=500\n").is_err());
}
