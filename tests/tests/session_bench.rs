//! Figures for the session drivers on loopback (run in release mode:
//! `cargo test --release -p relocd-tests --test session_bench -- --ignored
//! --nocapture`). Not a timed test: it checks the moved memory and prints
//! the figures; the ratios are for `cargo xtask bench`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Instant;

use relocd::backend::sim::{Drive, GuestSpec, SimError, SimHypervisor, SimSink, SimSource};
use relocd::session::{
    run_dest, run_source, Clock, DestOptions, FileJournal, SourceOptions, SourceReport,
};
use relocd_core::protocol::{AdmissionRequest, RefuseReason};
use relocd_core::time::Duration;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// MiB/s of a plain loopback TCP copy of `bytes` in 4 MiB writes.
fn plain_tcp(bytes: u64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let rx = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 4 << 20];
        let mut got = 0u64;
        while got < bytes {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let buf = vec![0x5au8; 4 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).unwrap();
        sent += buf.len() as u64;
    }
    rx.join().unwrap();
    bytes as f64 / MIB as f64 / t.elapsed().as_secs_f64()
}

fn migrate_live(
    tag: &str,
    spec: &GuestSpec,
    downtime_limit_ms: Option<u64>,
    bandwidth: Option<u64>,
) -> SourceReport {
    let dir = std::env::temp_dir().join(format!("relocd-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src_hv = SimHypervisor::new(4 * GIB, Drive::RealTime);
    let dst_hv = SimHypervisor::new(4 * GIB, Drive::Manual);
    let g = src_hv.create(spec, false).unwrap();
    // Let the workload warm up for a simulated second.
    g.advance(100);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (hv, jd) = (dst_hv.clone(), dir.join("dest.journal"));
    let dest = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut j = FileJournal::open(&jd).unwrap();
        run_dest(
            s,
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
    let link = TcpStream::connect(addr).unwrap();
    link.set_nodelay(true).unwrap();
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    let mut opts = SourceOptions::new(1, &spec.name, true);
    if let Some(ms) = downtime_limit_ms {
        opts.policy.downtime_limit = Duration::from_millis(ms);
    }
    opts.bandwidth_limit = bandwidth;
    let rep = run_source(
        link,
        &mut SimSource::new(g),
        &opts,
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
    std::fs::remove_dir_all(&dir).unwrap();
    rep
}

fn print(tag: &str, r: &SourceReport) {
    println!(
        "{tag}: rounds {} pages {} bytes_sent {} ({:.3} x guest) downtime {} ms total {} ms \
         bandwidth {:.0} MiB/s",
        r.rounds,
        r.pages_sent,
        r.bytes_sent,
        r.bytes_sent as f64 / r.guest_bytes as f64,
        r.downtime_ms,
        r.total_ms,
        r.bandwidth_mib_s
    );
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn loopback_figures() {
    let tcp = plain_tcp(GIB);
    println!("plain loopback TCP, 1 GiB: {tcp:.0} MiB/s");
    let idle = GuestSpec::new("idle", GIB).unwrap();
    let r = migrate_live("idle", &idle, None, None);
    print("idle 1 GiB", &r);
    println!(
        "idle 1 GiB throughput / plain TCP: {:.2}",
        r.bandwidth_mib_s / tcp
    );
    let r = migrate_live("capped", &idle, None, Some(512 * MIB));
    print("idle 1 GiB, --bandwidth 512M", &r);
    let busy = GuestSpec::new("busy", GIB)
        .unwrap()
        .with_dirty_rate(64 * MIB)
        .unwrap();
    let r = migrate_live("busy", &busy, None, None);
    print("1 GiB dirtying 64 MiB/s, default policy (300 ms)", &r);
    let r = migrate_live("busy20", &busy, Some(20), None);
    print("1 GiB dirtying 64 MiB/s, --downtime-limit 20", &r);
}
