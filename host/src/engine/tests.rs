//! The engine over the simulated hypervisor: the daemon's stop restarts the
//! guests a session stopped and leaves the in-doubt ones; save targets
//! (devices, FIFOs, directories, other files); a live save.

use std::sync::Arc;

use super::*;
use crate::api::{NoProgress, RestoreRequest, SaveRequest};
use crate::backend::sim::{self, Drive, GuestSpec, SimBackend, SimHypervisor};

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relocd-eng-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn engine(dir: &std::path::Path, drive: Drive) -> (Engine<SimBackend>, SimHypervisor) {
    let hv = SimHypervisor::new(1 << 30, drive);
    let journal = Arc::new(Journal::open(&dir.join("state")).unwrap());
    let e = Engine::new(
        Arc::new(SimBackend::new(hv.clone())),
        journal,
        EngineConfig::default(),
    );
    (e, hv)
}

fn save_req(domain: &str, file: &std::path::Path) -> SaveRequest {
    SaveRequest {
        domain: domain.into(),
        file: file.to_owned(),
        keep_running: true,
        live: false,
        bandwidth_bytes_per_s: None,
    }
}

#[test]
fn the_daemons_stop_resumes_stopped_guests_and_leaves_in_doubt_ones() {
    let dir = scratch("stop");
    let (e, hv) = engine(&dir, Drive::Manual);
    for name in ["web1", "web2", "web3"] {
        hv.create(&GuestSpec::new(name, 4 << 20).unwrap(), false)
            .unwrap();
    }
    let g = |n: &str| hv.by_name(n).unwrap();
    // web1: stopped by a session that did not finish
    let mut src = guard::TrackedSource::new(
        sim::SimSource::new(g("web1")),
        "web1",
        e.stopped.clone(),
        e.crashed.clone(),
    );
    relocd_core::guest::SourceGuest::suspend(&mut src).unwrap();
    // web2: in doubt
    g("web2").pause().unwrap();
    e.set_in_doubt("web2", true);
    let states: Vec<DomainState> = e.list().unwrap().iter().map(|d| d.state).collect();
    assert_eq!(
        states,
        [
            DomainState::Paused,
            DomainState::InDoubt,
            DomainState::Running
        ]
    );
    e.shutdown();
    e.stopped();
    assert_eq!(g("web1").state(), sim::DomainState::Running);
    // In doubt: only `relocd resolve` may let it run.
    assert_eq!(g("web2").state(), sim::DomainState::Paused);
    assert_eq!(g("web3").state(), sim::DomainState::Running);
    assert_eq!(g("web1").advance(2), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Save never replaces a device, a FIFO or a directory, never touches a
/// file it did not make, and leaves nothing behind on a failure.
#[test]
fn save_targets_are_checked_before_the_guest_is_touched() {
    let dir = scratch("targets");
    let (e, hv) = engine(&dir, Drive::Manual);
    let g = hv
        .create(&GuestSpec::new("g4", 4 << 20).unwrap(), false)
        .unwrap();
    // A user's own `notes.tmp` beside the file survives.
    let notes = dir.join("notes");
    std::fs::write(dir.join("notes.tmp"), b"mine").unwrap();
    e.save(&save_req("g4", &notes), &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(dir.join("notes.tmp")).unwrap(), b"mine");
    let saved = std::fs::read(&notes).unwrap();
    assert!(saved.len() > 4 << 20, "{} bytes", saved.len());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["notes", "notes.tmp", "state"]);
    // A character device is written in place, never replaced.
    e.save(
        &save_req("g4", std::path::Path::new("/dev/null")),
        &mut NoProgress,
    )
    .unwrap();
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &m.file_type()
    ));
    // A directory is refused up front; the guest was not touched.
    let adir = dir.join("adir");
    std::fs::create_dir(&adir).unwrap();
    let err = e.save(&save_req("g4", &adir), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("is a directory"), "{err}");
    assert_eq!(std::fs::read_dir(&adir).unwrap().count(), 0);
    // A socket is neither a file, a device nor a FIFO.
    let sock = dir.join("sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = e.save(&save_req("g4", &sock), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert_eq!(g.state(), sim::DomainState::Running);
    assert!(e.in_doubt().is_empty());
    assert!(unresolved(&e.journal().entries().unwrap()).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A FIFO is streamed into, as `xl save` does; what comes out of it is a
/// save file relocd restores.
#[test]
fn save_streams_into_a_fifo() {
    let dir = scratch("fifo");
    let (e, hv) = engine(&dir, Drive::Manual);
    hv.create(&GuestSpec::new("g5", 4 << 20).unwrap(), false)
        .unwrap();
    let fifo = dir.join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let mut req = save_req("g5", &fifo);
    req.keep_running = false;
    // Until the reader has opened its end, the FIFO is refused as unread
    // (nothing is touched): try again.
    let mut tries = 0;
    let s = loop {
        match e.save(&req, &mut NoProgress) {
            Err(err) if err.message.contains("no program reads") && tries < 500 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => break r.unwrap(),
        }
    };
    // The guest was stopped from the start to the end of the file: that is
    // its downtime (a destroying save once said 0.0 ms).
    assert!(s.downtime_ms > 0.0, "{s:?}");
    assert!(s.downtime_ms <= s.total_ms, "{s:?}");
    assert_eq!(s.rounds, 1, "{s:?}");
    let bytes = reader.join().unwrap();
    let m = std::fs::metadata(&fifo).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
    assert!(hv.by_name("g5").is_none(), "saved and destroyed");
    let file = dir.join("g5.save");
    std::fs::write(&file, bytes).unwrap();
    e.restore(&RestoreRequest { file }, &mut NoProgress)
        .unwrap();
    assert_eq!(hv.by_name("g5").unwrap().state(), sim::DomainState::Running);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `save --live` of a simulated guest that dirties memory: several rounds,
/// and the restored copy holds the workload's memory at the step it was
/// stopped at.
#[test]
fn a_live_save_of_a_busy_sim_guest_restores_byte_for_byte() {
    let dir = scratch("live");
    let (e, hv) = engine(&dir, Drive::RealTime);
    let spec = GuestSpec::new("busy", 32 << 20)
        .unwrap()
        .with_dirty_rate(64 << 20)
        .unwrap();
    hv.create(&spec, false).unwrap();
    let file = dir.join("busy.save");
    let mut req = save_req("busy", &file);
    req.live = true;
    req.keep_running = false;
    // capped, so the guest dirties pages while round 1 is written
    req.bandwidth_bytes_per_s = Some(64 << 20);
    let s = e.save(&req, &mut NoProgress).unwrap();
    assert!(s.rounds >= 2, "{s:?}");
    assert!(s.pages_sent > (32 << 20) / 4096, "{s:?}");
    assert!(hv.by_name("busy").is_none());
    e.restore(&RestoreRequest { file }, &mut NoProgress)
        .unwrap();
    let g = hv.by_name("busy").unwrap();
    g.pause().unwrap();
    let steps = g.steps().unwrap();
    g.verify(&spec.expected_memory(steps)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The progress lines project a downtime only while the guest runs.
#[test]
fn no_downtime_projection_once_the_guest_is_stopped() {
    let p = |phase| session::Progress {
        phase,
        round_pages: 10,
        round_pages_sent: 10,
        pages_sent: 10,
        dirty: 5,
        bytes_sent: 40960,
        bandwidth: 1 << 20,
        projected_downtime: Duration::from_millis(7),
        round_time: Duration::from_millis(500),
    };
    let live = to_progress(&p(session::Phase::Live(2)), 100);
    assert_eq!(live.projected_downtime_ms, Some(7.0));
    // 5 pages dirtied in a round of 500 ms.
    assert_eq!(live.dirty_rate_bytes_per_s, Some(5 * 4096 * 2));
    // Round 1, before any round has finished: nothing to project.
    let mut first = p(session::Phase::Live(1));
    first.round_time = Duration::ZERO;
    let first = to_progress(&first, 100);
    assert_eq!(first.projected_downtime_ms, None);
    assert_eq!(first.dirty_rate_bytes_per_s, None);
    for phase in [
        session::Phase::Handshake,
        session::Phase::Final,
        session::Phase::Committing,
    ] {
        assert_eq!(to_progress(&p(phase), 100).projected_downtime_ms, None);
    }
}

/// Issue 13: an incoming session's handshake has a short deadline of its
/// own (the io timeout when shorter); the source keeps the io timeout
/// (its wait includes the destination's admission); the transfer bound is
/// the operator's.
#[test]
fn the_destination_has_its_own_handshake_deadline_and_the_transfer_bound() {
    use relocd_core::time::Duration as CoreDuration;
    let cfg = EngineConfig::default();
    assert_eq!(cfg.max_transfer_time, Duration::from_secs(30 * 60));
    let d = cfg.dest_timeouts().protocol;
    assert_eq!(d.handshake, CoreDuration::from_secs(10));
    assert_eq!(d.idle, CoreDuration::from_secs(30));
    assert_eq!(d.transfer, CoreDuration::from_secs(30 * 60));
    assert_eq!(
        cfg.timeouts().protocol.handshake,
        CoreDuration::from_secs(30)
    );
    let cfg = EngineConfig {
        io_timeout: Duration::from_secs(3),
        max_transfer_time: Duration::from_secs(7200),
    };
    let d = receive::dest_options(&cfg).config.timeouts;
    assert_eq!(d.handshake, CoreDuration::from_secs(3));
    assert_eq!(d.idle, CoreDuration::from_secs(3));
    assert_eq!(d.transfer, CoreDuration::from_secs(7200));
}

/// A FIFO nobody reads is refused before the guest is touched (an open
/// would wait for ever); a symbolic link keeps pointing at the replaced
/// file, which keeps its mode.
#[test]
fn save_refuses_an_unread_fifo_and_keeps_links_and_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("fifo-link");
    let (e, hv) = engine(&dir, Drive::Manual);
    let g = hv
        .create(&GuestSpec::new("g6", 4 << 20).unwrap(), false)
        .unwrap();
    let fifo = dir.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let err = e.save(&save_req("g6", &fifo), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("no program reads"), "{err}");
    assert_eq!(g.state(), sim::DomainState::Running);
    // FILE a link to an existing file of mode 0640
    let real = dir.join("real.save");
    std::fs::write(&real, b"old").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.join("link.save");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    e.save(&save_req("g6", &link), &mut NoProgress).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let m = std::fs::metadata(&real).unwrap();
    assert!(m.len() > 4 << 20);
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A daemon killed while auto-converge throttles a guest: the next one
/// gives it its own weight and cap back from the journal (and resumes
/// it, as any source session without a commit).
#[test]
fn a_guest_left_throttled_by_a_killed_daemon_gets_its_own_parameters_back() {
    use relocd_core::guest::{SchedParams, SourceGuest};
    let dir = scratch("throttle");
    let hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let journal = Arc::new(Journal::open(&dir.join("state")).unwrap());
    let e = Engine::new(
        Arc::new(SimBackend::new(hv.clone())),
        journal.clone(),
        EngineConfig::default(),
    );
    let g = hv
        .create(&GuestSpec::new("web1", 4 << 20).unwrap(), false)
        .unwrap();
    let own = SchedParams {
        weight: 700,
        cap: 50,
    };
    g.set_sched(own).unwrap();
    let sid = super::journal::session_key(42);
    let prepared = JournalEntry::now("web1", &sid, Role::Source, CommitState::Prepared);
    journal.record(&prepared).unwrap();
    let mut src = guard::TrackedSource::new(
        sim::SimSource::new(g.clone()),
        "web1",
        e.stopped.clone(),
        e.crashed.clone(),
    );
    src.sched_journal = Some((journal.clone(), prepared));
    assert!(src.throttle(80).unwrap());
    assert_eq!(
        g.sched(),
        SchedParams {
            weight: 700,
            cap: 10
        }
    );
    assert!(src.throttle(90).unwrap());
    assert_eq!(g.sched().cap, 5);
    // The daemon dies here: nothing of the session runs again.
    e.crash();
    drop(src);
    drop(e);
    drop(journal);
    assert_eq!(g.sched().cap, 5);
    let journal = Arc::new(Journal::open(&dir.join("state")).unwrap());
    let _next = Engine::new(
        Arc::new(SimBackend::new(hv.clone())),
        journal.clone(),
        EngineConfig::default(),
    );
    assert_eq!(g.sched(), own);
    assert_eq!(g.state(), sim::DomainState::Running);
    assert!(unresolved(&journal.entries().unwrap()).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
