//! The session drivers over a real loopback TCP connection, a simulated
//! hypervisor on each side: offline and live migration checked byte for
//! byte against the workload's recomputation, refusals (with the
//! destination's words), a link cut in the middle of the image, a cancel,
//! and peers that are not relocd.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use relocd::backend::sim::{
    DomainState, Drive, GuestSpec, SimError, SimHypervisor, SimSink, SimSource, PAGE_SIZE,
};
use relocd::session::{
    refuse_unread, run_dest, run_source, Clock, DestOptions, DestReport, FileJournal, ImageError,
    JournalSink, Progress, Refusal, SessionError, SourceOptions, SourceReport,
};
use relocd_core::protocol::journal::{RecordKind, Role};
use relocd_core::protocol::{AbortReason, AdmissionRequest, Error, RefuseReason};

const MIB: u64 = 1 << 20;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relocd-session-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn admission(hv: &SimHypervisor, req: &AdmissionRequest) -> Result<SimSink, RefuseReason> {
    hv.create_empty(req.name.as_str(), req.memory_bytes)
        .map(SimSink::new)
        .map_err(|e| match e {
            SimError::NameTaken(_) => RefuseReason::NameTaken,
            SimError::NoCapacity { .. } => RefuseReason::NoCapacity,
            _ => RefuseReason::Invalid,
        })
}

/// A destination on its own thread, accepting one connection.
fn spawn_dest(
    hv: &SimHypervisor,
    dir: &Path,
) -> (SocketAddr, JoinHandle<Result<DestReport, SessionError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hv = hv.clone();
    let journal = dir.join("dest.journal");
    let h = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut j = FileJournal::open(&journal).unwrap();
        run_dest(
            s,
            |req: &AdmissionRequest, _config: Option<&[u8]>| admission(&hv, req),
            &DestOptions::default(),
            &mut j,
            &Clock::new(),
        )
    });
    (addr, h)
}

/// Forwards source → destination until `limit` bytes went through, then
/// closes both connections; destination → source flows freely.
fn spawn_cutting_proxy(dest: SocketAddr, limit: usize) -> (SocketAddr, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (mut from_src, _) = listener.accept().unwrap();
        let mut to_dst = TcpStream::connect(dest).unwrap();
        let (mut back_src, mut back_dst) =
            (from_src.try_clone().unwrap(), to_dst.try_clone().unwrap());
        let back = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = back_dst.read(&mut buf) {
                if n == 0 || back_src.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut passed = 0;
        while passed < limit {
            let want = buf.len().min(limit - passed);
            match from_src.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_dst.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    passed += n;
                }
            }
        }
        let _ = from_src.shutdown(Shutdown::Both);
        let _ = to_dst.shutdown(Shutdown::Both);
        let _ = back.join();
        passed
    });
    (addr, h)
}

struct Run {
    src: Result<SourceReport, SessionError>,
    dst: Result<DestReport, SessionError>,
    progress: Vec<Progress>,
}

fn migrate(
    guest: &relocd::backend::sim::SimGuest,
    to: SocketAddr,
    opts: &SourceOptions,
    dir: &Path,
    dest: JoinHandle<Result<DestReport, SessionError>>,
    cancel_at_first_progress: bool,
) -> Run {
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    migrate_with_journal(guest, to, opts, &mut j, dest, cancel_at_first_progress)
}

fn migrate_with_journal(
    guest: &relocd::backend::sim::SimGuest,
    to: SocketAddr,
    opts: &SourceOptions,
    j: &mut dyn JournalSink,
    dest: JoinHandle<Result<DestReport, SessionError>>,
    cancel_at_first_progress: bool,
) -> Run {
    let link = TcpStream::connect(to).unwrap();
    link.set_nodelay(true).unwrap();
    let cancel = AtomicBool::new(false);
    let mut progress = Vec::new();
    let mut on_progress = |p: Progress| {
        if cancel_at_first_progress {
            cancel.store(true, Ordering::Relaxed);
        }
        progress.push(p);
    };
    let mut src_guest = SimSource::new(guest.clone());
    let src = run_source(
        link,
        &mut src_guest,
        opts,
        j,
        &mut on_progress,
        &cancel,
        &Clock::new(),
    );
    let dst = dest.join().unwrap();
    Run { src, dst, progress }
}

fn kinds(path: &Path, role: Role) -> Vec<RecordKind> {
    FileJournal::read(path)
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.role, role);
            r.kind
        })
        .collect()
}

/// Checks the destination holds exactly the workload's memory at the step
/// its vCPU is at, then that the guest goes on from there.
fn check_moved(
    spec: &GuestSpec,
    src_hv: &SimHypervisor,
    src: &relocd::backend::sim::SimGuest,
    dst_hv: &SimHypervisor,
    floor: u64,
) -> u64 {
    assert!(src_hv.by_name(&spec.name).is_none(), "source still has it");
    assert_eq!(src.state(), DomainState::Destroyed);
    let dst = dst_hv.by_name(&spec.name).expect("destination has it");
    assert_eq!(dst.state(), DomainState::Running);
    dst.pause().unwrap();
    let steps = dst.steps().unwrap();
    assert!(steps >= floor, "steps {steps} < {floor}");
    dst.verify(&spec.expected_memory(steps)).unwrap();
    dst.unpause().unwrap();
    assert_eq!(dst.advance(5), 5);
    assert_eq!(dst.steps(), Some(steps + 5));
    assert_eq!(dst.memory_counter(), Some(steps + 5));
    steps
}

#[test]
fn offline_migration_moves_memory_and_steps() {
    let dir = temp_dir("offline");
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 64 * MIB)
        .unwrap()
        .with_dirty_rate(16 * MIB)
        .unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    g.advance(250);
    let (addr, dest) = spawn_dest(&dst_hv, &dir);
    let run = migrate(
        &g,
        addr,
        &{
            // Packed chunks (`--compress`): the simulator's pages shrink.
            let mut o = SourceOptions::new(7, "web1", false);
            o.features = relocd_core::protocol::Features::ALL;
            o
        },
        &dir,
        dest,
        false,
    );
    let rep = run.src.unwrap();
    let drep = run.dst.unwrap();
    assert_eq!(check_moved(&spec, &src_hv, &g, &dst_hv, 250), 250);
    let pages = spec.nr_pages();
    assert_eq!(rep.rounds, 0);
    assert_eq!(rep.pages_sent, pages);
    assert_eq!(rep.final_pages, pages);
    assert_eq!(rep.guest_bytes, 64 * MIB);
    // The chunks travel packed: the simulator's pages shrink.
    assert!(
        rep.bytes_sent > 0 && rep.bytes_sent < pages * PAGE_SIZE as u64,
        "{rep:?}"
    );
    assert_eq!(drep.pages_applied, pages);
    assert_eq!(drep.image_bytes, rep.image_bytes);
    assert_eq!(drep.name, "web1");
    assert_eq!(
        kinds(&dir.join("source.journal"), Role::Source),
        [RecordKind::Commit, RecordKind::Done]
    );
    assert_eq!(
        kinds(&dir.join("dest.journal"), Role::Dest),
        [RecordKind::Commit, RecordKind::Done]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn live_migration_of_a_dirtying_guest() {
    let dir = temp_dir("live");
    // The source's guest runs in real time and dirties 16 MiB/s while the
    // rounds go; the destination's is stepped by hand after the move.
    let src_hv = SimHypervisor::new(1 << 30, Drive::RealTime);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 64 * MIB)
        .unwrap()
        .with_dirty_rate(16 * MIB)
        .unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    g.advance(100);
    let (addr, dest) = spawn_dest(&dst_hv, &dir);
    let mut opts = SourceOptions::new(8, "web1", true);
    opts.uuid = [3; 16];
    let run = migrate(&g, addr, &opts, &dir, dest, false);
    let rep = run.src.unwrap();
    let drep = run.dst.unwrap();
    check_moved(&spec, &src_hv, &g, &dst_hv, 100);
    assert!(rep.rounds >= 1);
    assert!(rep.pages_sent >= spec.nr_pages());
    assert_eq!(drep.pages_applied, rep.pages_sent);
    assert_eq!(drep.rounds, rep.rounds);
    assert!(drep.live);
    // Progress was reported for every round and ended in the final phase.
    assert!(run.progress.len() as u32 >= rep.rounds);
    let recs = FileJournal::read(&dir.join("source.journal")).unwrap();
    assert!(recs.iter().all(|r| r.session == 8 && r.uuid == [3; 16]));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn refused(
    dst_hv: &SimHypervisor,
    tag: &str,
) -> (Run, SimHypervisor, relocd::backend::sim::SimGuest) {
    let dir = temp_dir(tag);
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 64 * MIB).unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    g.advance(3);
    let (addr, dest) = spawn_dest(dst_hv, &dir);
    let run = migrate(
        &g,
        addr,
        &SourceOptions::new(9, "web1", true),
        &dir,
        dest,
        false,
    );
    // Nothing was journaled on either side.
    assert!(FileJournal::read(&dir.join("source.journal"))
        .unwrap()
        .is_empty());
    assert!(FileJournal::read(&dir.join("dest.journal"))
        .unwrap()
        .is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
    (run, src_hv, g)
}

fn still_at_source(hv: &SimHypervisor, g: &relocd::backend::sim::SimGuest) {
    assert_eq!(hv.by_name("web1").map(|x| x.domid()), Some(g.domid()));
    assert_eq!(g.state(), DomainState::Running);
    assert!(!g.log_dirty_enabled());
    let before = g.steps().unwrap();
    assert_eq!(g.advance(2), 2);
    assert_eq!(g.steps(), Some(before + 2));
}

#[test]
fn refusal_name_taken() {
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let other = dst_hv
        .create(&GuestSpec::new("web1", 16 * MIB).unwrap(), true)
        .unwrap();
    let (run, src_hv, g) = refused(&dst_hv, "taken");
    assert!(
        matches!(&run.src, Err(SessionError::Refused(r)) if r.reason == RefuseReason::NameTaken),
        "{:?}",
        run.src
    );
    assert!(matches!(
        &run.dst,
        Err(SessionError::Refused(r)) if r.reason == RefuseReason::NameTaken
    ));
    assert_eq!(
        run.src.unwrap_err().to_string(),
        "the destination refused: a domain with that name already exists on the destination"
    );
    still_at_source(&src_hv, &g);
    // The destination's own guest is untouched and alone.
    assert_eq!(dst_hv.list().len(), 1);
    assert_eq!(dst_hv.by_name("web1").unwrap().domid(), other.domid());
}

#[test]
fn refusal_no_capacity() {
    let dst_hv = SimHypervisor::new(32 * MIB, Drive::Manual);
    let (run, src_hv, g) = refused(&dst_hv, "capacity");
    assert!(
        matches!(
            &run.src,
            Err(SessionError::Refused(r)) if r.reason == RefuseReason::NoCapacity
        ),
        "{:?}",
        run.src
    );
    still_at_source(&src_hv, &g);
    assert!(dst_hv.list().is_empty());
}

#[test]
fn a_refusal_carries_the_destination_s_words() {
    let dir = temp_dir("words");
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 64 * MIB).unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    let dst_hv = SimHypervisor::new(32 * MIB, Drive::Manual);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (hv, journal) = (dst_hv.clone(), dir.join("dest.journal"));
    let dest = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut j = FileJournal::open(&journal).unwrap();
        run_dest(
            s,
            |req: &AdmissionRequest, _config: Option<&[u8]>| {
                let (need, free) = (req.memory_bytes / MIB, hv.free() / MIB);
                if req.memory_bytes > hv.free() {
                    return Err(Refusal::new(
                        RefuseReason::NoCapacity,
                        format!(
                            "not enough free memory for {} (needs {need} MiB, has {free} MiB)",
                            req.name
                        ),
                    ));
                }
                admission(&hv, req).map_err(Refusal::from)
            },
            &DestOptions::default(),
            &mut j,
            &Clock::new(),
        )
    });
    let run = migrate(
        &g,
        addr,
        &SourceOptions::new(15, "web1", true),
        &dir,
        dest,
        false,
    );
    let words = "not enough free memory for web1 (needs 64 MiB, has 32 MiB)";
    let Err(SessionError::Refused(r)) = &run.src else {
        panic!("{:?}", run.src);
    };
    assert_eq!(r.reason, RefuseReason::NoCapacity);
    assert_eq!(r.detail.as_str(), words);
    assert_eq!(
        run.src.as_ref().unwrap_err().to_string(),
        format!("the destination refused: {words}")
    );
    // The destination reports the refusal it made, words included.
    assert!(
        matches!(&run.dst, Err(SessionError::Refused(d)) if d.detail.as_str() == words),
        "{:?}",
        run.dst
    );
    still_at_source(&src_hv, &g);
    assert!(dst_hv.list().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_busy_destination_refuses_before_reading_the_hello() {
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let g = src_hv
        .create(&GuestSpec::new("web1", 16 * MIB).unwrap(), false)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dest = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        refuse_unread(
            s,
            Refusal::new(RefuseReason::Busy, "busy: 36 connections await admission"),
            std::time::Duration::from_secs(1),
        )
    });
    let dir = temp_dir("busy");
    let link = TcpStream::connect(addr).unwrap();
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    let r = run_source(
        link,
        &mut SimSource::new(g.clone()),
        &SourceOptions::new(16, "web1", true),
        &mut j,
        &mut |_| {},
        &AtomicBool::new(false),
        &Clock::new(),
    );
    dest.join().unwrap().unwrap();
    let Err(SessionError::Refused(refusal)) = &r else {
        panic!("{r:?}");
    };
    assert_eq!(refusal.reason, RefuseReason::Busy);
    assert_eq!(
        r.unwrap_err().to_string(),
        "the destination refused: busy: 36 connections await admission"
    );
    still_at_source(&src_hv, &g);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_peer_that_is_not_relocd_is_named_as_such() {
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let g = src_hv
        .create(&GuestSpec::new("web1", 16 * MIB).unwrap(), false)
        .unwrap();
    // An HTTP server: it reads what it takes for a request and answers
    // 400 (its length prefix would read as 1,213,486,160 bytes).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 12];
        let _ = s.read_exact(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = s.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    let dir = temp_dir("not-relocd");
    let link = TcpStream::connect(addr).unwrap();
    let mut j = FileJournal::open(&dir.join("source.journal")).unwrap();
    let r = run_source(
        link,
        &mut SimSource::new(g.clone()),
        &SourceOptions::new(17, "web1", true),
        &mut j,
        &mut |_| {},
        &AtomicBool::new(false),
        &Clock::new(),
    );
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::NotRelocd {
                    first: [b'H', b'T', b'T', b'P']
                },
                ..
            })
        ),
        "{r:?}"
    );
    let text = r.unwrap_err().to_string();
    assert!(
        text.contains("does not speak relocd's relocation protocol"),
        "{text}"
    );
    // Nothing of ours went after the hello: no Abort to a stranger.
    assert!(server.join().unwrap().is_empty());
    still_at_source(&src_hv, &g);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn link_cut_mid_image_resumes_at_source() {
    // Unpacked chunks with every page in full (no zero-page markers), so
    // the cut lands inside the image; and the default features, whose
    // chunks' pages the destination reads straight into the new domain:
    // the cut lands while it does.
    for (tag, features) in [
        ("cut", relocd_core::protocol::Features::LIVE),
        (
            "cut-in-place",
            SourceOptions::new(10, "web1", false).features,
        ),
    ] {
        cut_mid_image(tag, features);
    }
}

fn cut_mid_image(tag: &str, features: relocd_core::protocol::Features) {
    let dir = temp_dir(tag);
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    // Every page holds data: no zero page is left out of the image.
    let spec = GuestSpec::new("web1", 64 * MIB)
        .unwrap()
        .with_fill(100)
        .unwrap()
        .with_dirty_rate(16 * MIB)
        .unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    g.advance(40);
    let (dest_addr, dest) = spawn_dest(&dst_hv, &dir);
    // Hello, admission, the image header and a bit more than two batches
    // of pages get through; the rest of the image does not.
    let (proxy_addr, proxy) = spawn_cutting_proxy(dest_addr, 9 * MIB as usize);
    // Offline: the guest is suspended when the cut comes, so it must be
    // resumed.
    let mut opts = SourceOptions::new(10, "web1", false);
    opts.features = features;
    let run = migrate(&g, proxy_addr, &opts, &dir, dest, false);
    assert_eq!(proxy.join().unwrap(), 9 * MIB as usize, "{tag}");
    assert!(
        matches!(
            run.src,
            Err(SessionError::Aborted {
                error: Error::LinkLost { .. },
                ..
            })
        ),
        "{tag}: {:?}",
        run.src
    );
    assert!(
        matches!(
            run.dst,
            Err(SessionError::Aborted {
                error: Error::LinkLost { .. },
                ..
            })
        ),
        "{tag}: {:?}",
        run.dst
    );
    still_at_source(&src_hv, &g);
    assert_eq!(g.steps(), Some(42));
    assert!(dst_hv.list().is_empty(), "{tag}: {:?}", dst_hv.list());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cancel_leaves_the_guest_running_at_source() {
    let dir = temp_dir("cancel");
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 64 * MIB).unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    let (addr, dest) = spawn_dest(&dst_hv, &dir);
    // The flag goes up at the first progress report, during round 1.
    let run = migrate(
        &g,
        addr,
        &SourceOptions::new(11, "web1", true),
        &dir,
        dest,
        true,
    );
    assert!(
        matches!(run.src, Err(SessionError::Cancelled)),
        "{:?}",
        run.src
    );
    assert!(
        matches!(
            run.dst,
            Err(SessionError::Cancelled)
                | Err(SessionError::Aborted {
                    error: Error::LinkLost { .. },
                    ..
                })
        ),
        "{:?}",
        run.dst
    );
    assert!(!run.progress.is_empty());
    still_at_source(&src_hv, &g);
    assert!(dst_hv.list().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Raw bytes to a destination; returns its result.
fn feed_dest(bytes: &[u8], dst_hv: &SimHypervisor, tag: &str) -> Result<DestReport, SessionError> {
    let dir = temp_dir(tag);
    let (addr, dest) = spawn_dest(dst_hv, &dir);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    // Whatever the destination answers, then its close.
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let r = dest.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

#[test]
fn bad_input_at_the_destination_is_refused_without_a_domain() {
    use relocd_core::protocol::{Limit, Misbehavior};
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    // A first length prefix of 4 GiB: no relocd sends that, refused
    // before a byte of body is read.
    let r = feed_dest(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3], &dst_hv, "oversize");
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::NotRelocd { .. },
                ..
            })
        ),
        "{r:?}"
    );
    // An HTTP client.
    let r = feed_dest(b"GET / HTTP/1.1\r\n\r\n", &dst_hv, "http");
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::NotRelocd {
                    first: [b'G', b'E', b'T', b' ']
                },
                ..
            })
        ),
        "{r:?}"
    );
    // After a hello, an oversize control frame is just that.
    let mut hello = vec![0, 0, 0, 8, 0, b'R', b'L', b'C', b'D'];
    hello.extend_from_slice(&[
        relocd_core::protocol::PROTOCOL_VERSION_MIN as u8,
        relocd_core::protocol::PROTOCOL_VERSION as u8,
        1,
    ]);
    hello.extend_from_slice(&[0, 0, 2, 0]);
    let r = feed_dest(&hello, &dst_hv, "oversize2");
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::LimitExceeded(Limit::FrameTooLong { len: 512, .. }),
                ..
            })
        ),
        "{r:?}"
    );
    // xm migrate's S-expression.
    let r = feed_dest(b"(receive)", &dst_hv, "xend");
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::PeerMisbehaved(Misbehavior::XendProtocol),
                ..
            })
        ),
        "{r:?}"
    );
    // A well-framed body that is not a message.
    let r = feed_dest(&[0, 0, 0, 4, 0xee, 0xee, 0xee, 0xee], &dst_hv, "garbage");
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::PeerMisbehaved(Misbehavior::Malformed),
                ..
            })
        ),
        "{r:?}"
    );
    assert!(dst_hv.list().is_empty());
}

/// Forwards source → destination freely; destination → source only the
/// first `back_limit` bytes, then swallows the rest (a link that loses
/// the destination's answers).
fn spawn_muting_proxy(dest: SocketAddr, back_limit: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut from_src, _) = listener.accept().unwrap();
        let mut to_dst = TcpStream::connect(dest).unwrap();
        let (mut back_src, mut back_dst) =
            (from_src.try_clone().unwrap(), to_dst.try_clone().unwrap());
        thread::spawn(move || {
            let mut buf = [0u8; 1];
            let mut passed = 0;
            while let Ok(1) = back_dst.read(&mut buf) {
                if passed < back_limit {
                    passed += 1;
                    if back_src.write_all(&buf).is_err() {
                        break;
                    }
                }
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from_src.read(&mut buf) {
            if n == 0 || to_dst.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_dst.shutdown(Shutdown::Both);
    });
    addr
}

#[test]
fn lost_committed_leaves_the_source_in_doubt_and_suspended() {
    let dir = temp_dir("indoubt");
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 16 * MIB)
        .unwrap()
        .with_dirty_rate(4 * MIB)
        .unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    g.advance(20);
    let (dest_addr, dest) = spawn_dest(&dst_hv, &dir);
    // HelloAck (7 bytes), Admitted (5) and Prepared (5) get back to the
    // source; Committed does not.
    let proxy = spawn_muting_proxy(dest_addr, 17);
    let mut opts = SourceOptions::new(12, "web1", false);
    opts.timeouts.protocol.commit = relocd_core::time::Duration::from_millis(500);
    let run = migrate(&g, proxy, &opts, &dir, dest, false);
    assert!(
        matches!(run.src, Err(SessionError::InDoubt(Error::Timeout { .. }))),
        "{:?}",
        run.src
    );
    run.dst.unwrap();
    // The source keeps its copy, suspended; the journal says in doubt.
    assert_eq!(g.state(), DomainState::Paused);
    assert_eq!(g.advance(1), 0);
    assert_eq!(
        kinds(&dir.join("source.journal"), Role::Source),
        [RecordKind::Commit]
    );
    assert_eq!(
        relocd_core::protocol::journal::recover_source(Some(RecordKind::Commit)),
        relocd_core::protocol::journal::SourceRecovery::InDoubt
    );
    // Exactly one copy runs: the destination's, with the right memory.
    let d = dst_hv.by_name("web1").unwrap();
    assert_eq!(d.state(), DomainState::Running);
    d.pause().unwrap();
    assert_eq!(d.steps(), Some(20));
    d.verify(&spec.expected_memory(20)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A journal whose disk is gone.
struct BrokenJournal;

impl JournalSink for BrokenJournal {
    fn record(&mut self, _: &relocd_core::protocol::journal::Record) -> std::io::Result<()> {
        Err(std::io::Error::other("disk gone"))
    }
}

#[test]
fn commit_journal_failure_aborts_before_the_point_of_no_return() {
    let dir = temp_dir("journalfail");
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 16 * MIB).unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    g.advance(5);
    let (addr, dest) = spawn_dest(&dst_hv, &dir);
    let opts = SourceOptions::new(13, "web1", false);
    let run = migrate_with_journal(&g, addr, &opts, &mut BrokenJournal, dest, false);
    assert!(
        matches!(run.src, Err(SessionError::Journal(_))),
        "{:?}",
        run.src
    );
    // The destination was told (Abort) why, and never ran its copy.
    assert!(
        matches!(
            &run.dst,
            Err(SessionError::Aborted {
                error: Error::Aborted(AbortReason::SourceFailed),
                detail,
            }) if detail == "journaling the commit: disk gone"
        ),
        "{:?}",
        run.dst
    );
    still_at_source(&src_hv, &g);
    assert_eq!(g.steps(), Some(7));
    assert!(dst_hv.list().is_empty());
    assert!(FileJournal::read(&dir.join("dest.journal"))
        .unwrap()
        .is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sink whose memory runs out after `left` batches.
struct FailingSink {
    inner: SimSink,
    left: u32,
}

impl relocd_core::guest::SinkGuest for FailingSink {
    type Error = relocd::backend::sim::SimFault;
    fn populate(
        &mut self,
        pfns: &[u64],
        types: &[relocd_core::guest::PageType],
    ) -> Result<(), Self::Error> {
        if self.left == 0 {
            return Err(relocd::backend::sim::SimFault::NoCapacity);
        }
        self.left -= 1;
        self.inner.populate(pfns, types)
    }
    fn write_pages(
        &mut self,
        pfns: &[u64],
        types: &[relocd_core::guest::PageType],
        data: &[u8],
    ) -> Result<(), Self::Error> {
        self.inner.write_pages(pfns, types, data)
    }
    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<(), Self::Error> {
        self.inner.set_vcpu_context(vcpu, blob)
    }
    fn unpause(&mut self) -> Result<(), Self::Error> {
        self.inner.unpause()
    }
    fn destroy(&mut self) -> Result<(), Self::Error> {
        self.inner.destroy()
    }
}

#[test]
fn destination_failure_mid_image_is_reported_to_the_source() {
    let dir = temp_dir("sinkfail");
    let src_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let spec = GuestSpec::new("web1", 64 * MIB).unwrap();
    let g = src_hv.create(&spec, false).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (hv, journal) = (dst_hv.clone(), dir.join("dest.journal"));
    let dest = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut j = FileJournal::open(&journal).unwrap();
        run_dest(
            s,
            |req: &AdmissionRequest, _config: Option<&[u8]>| {
                admission(&hv, req).map(|inner| FailingSink { inner, left: 3 })
            },
            &DestOptions::default(),
            &mut j,
            &Clock::new(),
        )
    });
    let run = migrate(
        &g,
        addr,
        &SourceOptions::new(14, "web1", true),
        &dir,
        dest,
        false,
    );
    assert!(
        matches!(run.dst, Err(SessionError::Image(ImageError::Sink(_)))),
        "{:?}",
        run.dst
    );
    // The source hears the reason and what failed, not just a cut.
    assert!(
        matches!(
            &run.src,
            Err(SessionError::Aborted {
                error: Error::Aborted(AbortReason::DestFailed),
                detail,
            }) if detail == "writing pages: NoCapacity"
        ),
        "{:?}",
        run.src
    );
    assert_eq!(
        run.src.unwrap_err().to_string(),
        "migration aborted by the peer: writing pages: NoCapacity"
    );
    still_at_source(&src_hv, &g);
    assert!(dst_hv.list().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
