//! One live migration between two simulated hypervisors in this process,
//! for the benchmarks: `run_dest` in a thread, `run_source` here, over a
//! link pair the caller made (plain TCP: [`tcp_links`]), and the moved
//! memory checked against the workload's recomputation.
//!
//! The two hypervisors are made once per process and serve every
//! migration, as a pair of hosts does one migration after another: each
//! reuses the memory its destroyed domains freed, so a figure does not
//! depend on how fast the host kernel backs fresh memory (on a virtual
//! machine whose freed memory goes back to its host, that swings a run
//! from 0.4 to 3 GiB/s).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::thread;

use relocd::backend::sim::{Drive, GuestSpec, SimError, SimHypervisor, SimSink, SimSource};
use relocd::session::{
    run_dest, run_source, Clock, DestOptions, FileJournal, Link, SourceOptions, SourceReport,
};
use relocd_core::protocol::{AdmissionRequest, RefuseReason};

const GIB: u64 = 1 << 30;

/// A connected loopback TCP pair, `TCP_NODELAY` on both: (source's,
/// destination's).
pub fn tcp_links() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let src = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (dst, _) = l.accept().unwrap();
    src.set_nodelay(true).unwrap();
    dst.set_nodelay(true).unwrap();
    (src, dst)
}

/// The source (real-time) and destination (manually driven) hypervisors,
/// 4 GiB each, shared by every migration of this process.
fn hosts() -> &'static (SimHypervisor, SimHypervisor) {
    static HOSTS: OnceLock<(SimHypervisor, SimHypervisor)> = OnceLock::new();
    HOSTS.get_or_init(|| {
        (
            SimHypervisor::new(4 * GIB, Drive::RealTime),
            SimHypervisor::new(4 * GIB, Drive::Manual),
        )
    })
}

/// Moves `spec`, created on the source hypervisor and warmed up for a
/// simulated second, to the destination over `links` (source's,
/// destination's), the source run with `opts`; panics unless both ends
/// succeed and the destination's memory is the workload's at its step
/// count. The moved guest is destroyed at the end. The source's report.
/// The journals live in a scratch directory named after `tag`, removed at
/// the end.
pub fn migrate_over<L: Link + Send + 'static>(
    tag: &str,
    spec: &GuestSpec,
    links: (L, L),
    opts: &SourceOptions,
) -> SourceReport {
    let dir = std::env::temp_dir().join(format!("relocd-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (src_hv, dst_hv) = hosts();
    let g = src_hv.create(spec, false).unwrap();
    g.advance(100);
    let (src_link, dst_link) = links;
    let (hv, jd) = (dst_hv.clone(), dir.join("dest.journal"));
    let dest = thread::spawn(move || {
        let mut j = FileJournal::open(&jd).unwrap();
        run_dest(
            dst_link,
            |r: &AdmissionRequest, _config: Option<&[u8]>| {
                hv.create_empty(r.name.as_str(), r.memory_bytes)
                    .map(SimSink::new)
                    .map_err(|e| match e {
                        SimError::NoCapacity { .. } => RefuseReason::NoCapacity,
                        _ => RefuseReason::Invalid,
                    })
            },
            &DestOptions::default(),
            &mut j,
            &Clock::new(),
        )
    });
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    let rep = run_source(
        src_link,
        &mut SimSource::new(g),
        opts,
        &mut j,
        &mut |_| {},
        &AtomicBool::new(false),
        &Clock::new(),
    )
    .unwrap();
    dest.join().unwrap().unwrap();
    let d = dst_hv.by_name(&spec.name).unwrap();
    d.pause().unwrap();
    d.verify(&spec.expected_memory(d.steps().unwrap())).unwrap();
    d.destroy().unwrap();
    assert!(src_hv.by_name(&spec.name).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
    rep
}
