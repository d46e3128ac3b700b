//! Zero pages on the wire (`Features::ZERO_PAGES`): a guest whose pages
//! are mostly zeros (`sim create --fill`) moves over loopback TCP with its
//! zero pages as markers, into a destination whose memory holds garbage
//! (so a zero page that was not written there would show), byte for byte;
//! with LZ4 on top; and with a peer that does not offer the feature, on
//! either side. The pages of zero-elided chunks that are not compressed
//! go from the socket straight into the destination's memory.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use relocd::backend::sim::{
    DomainState, Drive, GuestSpec, SimError, SimGuest, SimHypervisor, SimSink, SimSource, PAGE_SIZE,
};
use relocd::session::{
    run_source, Clock, DestReport, FileJournal, SessionError, SourceOptions, SourceReport,
};
use relocd_core::protocol::{AdmissionRequest, Features, RefuseReason};

const MIB: u64 = 1 << 20;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relocd-zero-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An empty domain whose every page holds garbage: a destination that
/// skipped a zero page would keep it.
fn garbage_domain(hv: &SimHypervisor, req: &AdmissionRequest) -> Result<SimSink, RefuseReason> {
    let g = hv
        .create_empty(req.name.as_str(), req.memory_bytes)
        .map_err(|e| match e {
            SimError::NoCapacity { .. } => RefuseReason::NoCapacity,
            _ => RefuseReason::Invalid,
        })?;
    let pages = g.nr_pages();
    let mut buf = vec![0u8; 1024 * PAGE_SIZE];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) | 1;
    }
    let mut first = 0;
    while first < pages {
        let pfns: Vec<u64> = (first..pages.min(first + 1024)).collect();
        g.write_pages(&pfns, &buf[..pfns.len() * PAGE_SIZE])
            .unwrap();
        first += 1024;
    }
    assert_eq!(g.allocated_pages(), pages);
    Ok(SimSink::new(g))
}

fn spawn_dest(
    hv: &SimHypervisor,
    dir: &Path,
    features: Features,
) -> (SocketAddr, JoinHandle<Result<DestReport, SessionError>>) {
    let hv = hv.clone();
    relocd_tests::sim_dest::spawn_dest(dir, features, move |req| garbage_domain(&hv, req))
}

/// Moves a 64 MiB guest with a 25 % fill (and 20 steps of its workload)
/// live from a source offering `src_features` to a destination offering
/// `dst_features`, checks the copy byte for byte, and returns the source's
/// report, the guest's page count that hold data, and how many pages the
/// destination had written in place (read off the socket into them).
fn move_filled(
    tag: &str,
    src_features: Features,
    dst_features: Features,
) -> (SourceReport, u64, u64) {
    let dir = temp_dir(tag);
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("filled", 64 * MIB)
        .unwrap()
        .with_fill(25)
        .unwrap()
        .with_dirty_rate(16 * MIB)
        .unwrap();
    let g: SimGuest = src_hv.create(&spec, false).unwrap();
    g.advance(20);
    let written = spec.expected_memory(20).written_pages();
    // About a quarter of the pages hold data (the fill, the workload's).
    assert!(
        written > spec.nr_pages() / 5 && written < spec.nr_pages() / 3,
        "{written}"
    );
    g.verify(&spec.expected_memory(20)).unwrap();
    let (addr, dest) = spawn_dest(&dst_hv, &dir, dst_features);
    let mut opts = SourceOptions::new(3, "filled", true);
    opts.features = src_features;
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    let rep = run_source(
        TcpStream::connect(addr).unwrap(),
        &mut SimSource::new(g.clone()),
        &opts,
        &mut j,
        &mut |_| {},
        &AtomicBool::new(false),
        &Clock::new(),
    )
    .unwrap();
    let drep = dest.join().unwrap().unwrap();
    assert_eq!(drep.pages_applied, rep.pages_sent);
    assert_eq!(g.state(), DomainState::Destroyed);
    let d = dst_hv.by_name("filled").unwrap();
    d.pause().unwrap();
    assert_eq!(d.steps(), Some(20));
    d.verify(&spec.expected_memory(20)).unwrap();
    // The zero pages were written as zeros: only the data pages hold
    // storage (the garbage is gone).
    assert_eq!(d.allocated_pages(), written);
    std::fs::remove_dir_all(&dir).unwrap();
    (rep, written, d.pages_filled_in_place())
}

const LIVE_ZERO: Features = Features(Features::LIVE.0 | Features::ZERO_PAGES.0);
const LIVE_LZ4: Features = Features(Features::LIVE.0 | Features::COMPRESS.0);

#[test]
fn zero_pages_travel_as_markers_and_are_written_as_zeros() {
    // The source's default offer: zero pages on, packing off.
    let defaults = SourceOptions::new(1, "x", true).features;
    assert!(defaults.contains(Features::ZERO_PAGES));
    assert!(!defaults.contains(Features::COMPRESS));
    let (rep, written, in_place) = move_filled("default", defaults, Features::ALL);
    let pages = rep.guest_bytes / PAGE_SIZE as u64;
    // Every page with data went from the socket into the guest's memory.
    assert_eq!(in_place, written);
    // Nothing dirtied during the move (manual drive): every page went
    // once, and each that reads as zeros went as a marker.
    assert_eq!(rep.pages_sent, pages);
    assert_eq!(rep.zero_pages, pages - written);
    // The unpacked image is the whole libxc stream; on the wire only the
    // data pages, the pfn words and a bit per page.
    assert!(rep.image_bytes_unpacked > rep.guest_bytes);
    let ratio = rep.bytes_sent as f64 / rep.guest_bytes as f64;
    let data = written as f64 / pages as f64;
    assert!(
        ratio < data + 0.01,
        "{ratio:.3} vs {data:.3} of pages with data"
    );
}

#[test]
fn zero_pages_and_lz4_together() {
    let (rep, written, in_place) = move_filled("both", Features::ALL, Features::ALL);
    let pages = rep.guest_bytes / PAGE_SIZE as u64;
    assert_eq!(rep.zero_pages, pages - written);
    // The data pages are noise: LZ4 keeps what it cannot shrink as it is,
    // and such chunks' pages still go straight into the guest.
    assert!(rep.bytes_sent < rep.guest_bytes / 3, "{rep:?}");
    assert_eq!(in_place, written);
}

#[test]
fn a_peer_without_zero_pages_gets_every_page() {
    // A destination that does not offer it.
    let (rep, _, in_place) = move_filled("old-dest", Features::ALL, LIVE_LZ4);
    assert_eq!((rep.zero_pages, in_place), (0, 0));
    // A source that does not offer it, to a destination that does; no
    // packing at all: every page in full.
    let (rep, _, in_place) = move_filled("old-src", Features::LIVE, Features::ALL);
    assert_eq!((rep.zero_pages, in_place), (0, 0));
    assert!(rep.bytes_sent > rep.guest_bytes, "{rep:?}");
    // Zero pages alone, no LZ4: the tag octet without packing.
    let (rep, written, in_place) = move_filled("zero-only", LIVE_ZERO, LIVE_ZERO);
    assert_eq!(rep.zero_pages, rep.guest_bytes / PAGE_SIZE as u64 - written);
    assert_eq!(in_place, written);
}
