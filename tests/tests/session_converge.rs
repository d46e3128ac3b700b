//! Auto-converge over loopback TCP with the simulator in real time: a
//! guest that dirties memory far faster than the capped link sends is
//! throttled step by step (a capped simulated vCPU runs proportionally
//! fewer steps) until its dirty set fits the downtime limit; it arrives
//! byte for byte with its own scheduling parameters, never the throttle;
//! a cancelled throttled migration gives the source its own back.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use relocd::backend::sim::{
    DomainState, Drive, GuestSpec, SimGuest, SimHypervisor, SimSink, SimSource,
};
use relocd::session::{
    run_source, Clock, DestReport, FileJournal, Phase, Progress, SessionError, SourceOptions,
    SourceReport,
};
use relocd_core::guest::SchedParams;
use relocd_core::precopy::ConvergeConfig;
use relocd_core::protocol::{Features, RefuseReason};

const MIB: u64 = 1 << 20;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relocd-conv-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spawn_dest(
    hv: &SimHypervisor,
    dir: &Path,
    features: Features,
) -> (SocketAddr, JoinHandle<Result<DestReport, SessionError>>) {
    let hv = hv.clone();
    relocd_tests::sim_dest::spawn_dest(dir, features, move |req| {
        hv.create_empty(req.name.as_str(), req.memory_bytes)
            .map(SimSink::new)
            .map_err(|_| RefuseReason::NoCapacity)
    })
}

const OWN: SchedParams = SchedParams {
    weight: 512,
    cap: 0,
};

/// An 8 MiB guest writing 64 MiB/s, its own weight 512, running in real
/// time.
fn busy_guest(hv: &SimHypervisor) -> (GuestSpec, SimGuest) {
    let spec = GuestSpec::new("busy", 8 * MIB)
        .unwrap()
        .with_dirty_rate(64 * MIB)
        .unwrap();
    let g = hv.create(&spec, false).unwrap();
    g.set_sched(OWN).unwrap();
    thread::sleep(Duration::from_millis(100));
    (spec, g)
}

/// Moves it over an 8 MiB/s cap; `cancel_in_round`: raise the cancel once
/// a live round of that number is reported.
fn run(
    tag: &str,
    auto_converge: bool,
    dst_features: Features,
    cancel_in_round: Option<u32>,
) -> (
    GuestSpec,
    SimGuest,
    SimHypervisor,
    Result<SourceReport, SessionError>,
) {
    let dir = temp_dir(tag);
    let src_hv = SimHypervisor::new(1 << 30, Drive::RealTime);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::RealTime);
    let (spec, g) = busy_guest(&src_hv);
    let (addr, dest) = spawn_dest(&dst_hv, &dir, dst_features);
    let mut opts = SourceOptions::new(5, "busy", true);
    opts.bandwidth_limit = Some(8 * MIB);
    opts.auto_converge = auto_converge.then(ConvergeConfig::default);
    let cancel = AtomicBool::new(false);
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    let mut src = SimSource::new(g.clone());
    let mut throttled_while_running = false;
    let r = run_source(
        TcpStream::connect(addr).unwrap(),
        &mut src,
        &opts,
        &mut j,
        &mut |p: Progress| {
            if let Phase::Live(round) = p.phase {
                if g.sched().cap != 0 {
                    throttled_while_running = true;
                }
                if cancel_in_round.is_some_and(|c| round >= c) {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        },
        &cancel,
        &Clock::new(),
    );
    let _ = dest.join().unwrap();
    assert_eq!(throttled_while_running, auto_converge, "{r:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    (spec, g, dst_hv, r)
}

#[test]
fn a_busy_guest_is_throttled_until_it_converges_and_arrives_with_its_own_parameters() {
    let (spec, g, dst_hv, r) = run("converge", true, Features::ALL, None);
    let rep = r.unwrap();
    assert!(rep.throttle_percent >= 60, "{rep:?}");
    assert!(rep.throttle_steps >= 2, "{rep:?}");
    assert_eq!(g.state(), DomainState::Destroyed);
    let d = dst_hv.by_name("busy").unwrap();
    // The weight and cap it had, not the throttle.
    assert_eq!(d.sched(), OWN);
    d.pause().unwrap();
    let steps = d.steps().unwrap();
    d.verify(&spec.expected_memory(steps)).unwrap();
}

#[test]
fn without_auto_converge_nothing_is_throttled_and_the_parameters_still_travel() {
    let (_, _, dst_hv, r) = run("plain", false, Features::ALL, None);
    let rep = r.unwrap();
    assert_eq!((rep.throttle_percent, rep.throttle_steps), (0, 0));
    assert_eq!(dst_hv.by_name("busy").unwrap().sched(), OWN);
}

#[test]
fn a_destination_without_sched_keeps_its_defaults() {
    let old = Features(Features::ALL.0 & !Features::SCHED.0);
    let (_, _, dst_hv, r) = run("old-dest", true, old, None);
    r.unwrap();
    assert_eq!(
        dst_hv.by_name("busy").unwrap().sched(),
        SchedParams::DEFAULT
    );
}

#[test]
fn a_cancelled_throttled_migration_gives_the_guest_its_own_parameters_back() {
    let (_, g, dst_hv, r) = run("cancel", true, Features::ALL, Some(3));
    assert!(matches!(r, Err(SessionError::Cancelled)), "{r:?}");
    assert_eq!(g.state(), DomainState::Running);
    assert_eq!(g.sched(), OWN);
    assert!(dst_hv.by_name("busy").is_none());
}
