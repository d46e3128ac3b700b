//! The source's waits against peers that stop answering or reading: a
//! cancel acts in every state before the point of no return, and a write
//! that makes no headway ends at one deadline per frame.
//!
//! Each session runs on its own thread under a watchdog: the test fails
//! when the session has not returned long before its (long) configured
//! timeouts would end it, instead of asserting on durations.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use relocd::backend::sim::{
    DomainState, Drive, GuestSpec, SimGuest, SimHypervisor, SimSink, SimSource,
};
use relocd::session::{
    run_dest, run_source, Clock, DestOptions, FileJournal, Progress, SessionError, SourceOptions,
    SourceReport,
};
use relocd_core::protocol::{msg, AdmissionRequest, Error, Msg, RefuseReason, PROTOCOL_VERSION};

const MIB: u64 = 1 << 20;

/// How long a session may take before the watchdog calls it stuck; every
/// timeout the sessions here are given is longer.
const WATCHDOG: Duration = Duration::from_secs(20);

/// The sessions' own timeouts: far beyond the watchdog, so only a cancel
/// (or a per-frame deadline, where the test sets a short one) ends them
/// in time.
const LONG: Duration = Duration::from_secs(60);

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relocd-cancel-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn long_timeouts(opts: &mut SourceOptions) {
    let long = relocd_core::time::Duration::from_secs(LONG.as_secs());
    opts.timeouts.protocol.handshake = long;
    opts.timeouts.protocol.idle = long;
    opts.timeouts.protocol.prepare = long;
    opts.timeouts.protocol.commit = long;
    opts.timeouts.write = LONG;
}

/// How the session's cancel flag goes up.
#[derive(Clone, Copy)]
enum Cancel {
    /// Never.
    Never,
    /// From another thread, this long after the start.
    After(Duration),
    /// From the progress callback, at its first call this long after the
    /// start: the way the daemon raises it when its client hangs up
    /// (Ctrl-C), as it learns of that only when it reports progress.
    InProgressAfter(Duration),
}

/// Runs the source for `guest` against `to` on a thread; returns its
/// result, or `None` if the watchdog fired first.
fn run_watched(
    guest: &SimGuest,
    to: SocketAddr,
    opts: SourceOptions,
    cancel: Cancel,
    tag: &str,
) -> Option<Result<SourceReport, SessionError>> {
    let dir = temp_dir(tag);
    let guest = guest.clone();
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let session_flag = Arc::clone(&flag);
    let journal = dir.join("source.journal");
    thread::spawn(move || {
        let started = Instant::now();
        let link = TcpStream::connect(to).unwrap();
        link.set_nodelay(true).unwrap();
        let mut j = FileJournal::open(&journal).unwrap();
        let mut src = SimSource::new(guest);
        let mut on_progress = |_: Progress| {
            if let Cancel::InProgressAfter(d) = cancel {
                if started.elapsed() >= d {
                    session_flag.store(true, Ordering::SeqCst);
                }
            }
        };
        let r = run_source(
            link,
            &mut src,
            &opts,
            &mut j,
            &mut on_progress,
            &session_flag,
            &Clock::new(),
        );
        let _ = tx.send(r);
    });
    if let Cancel::After(d) = cancel {
        thread::sleep(d);
        flag.store(true, Ordering::SeqCst);
    }
    let r = rx.recv_timeout(WATCHDOG).ok();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// A guest on a fresh simulated hypervisor.
fn guest(mib: u64) -> (SimHypervisor, SimGuest) {
    let hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let g = hv
        .create(&GuestSpec::new("web1", mib * MIB).unwrap(), false)
        .unwrap();
    g.advance(3);
    (hv, g)
}

/// The guest runs at the source as before: not paused, not suspended, no
/// dirty log, its vCPU goes on.
fn still_running(hv: &SimHypervisor, g: &SimGuest) {
    assert_eq!(hv.by_name("web1").map(|x| x.domid()), Some(g.domid()));
    assert_eq!(g.state(), DomainState::Running);
    assert!(!g.log_dirty_enabled());
    let before = g.steps().unwrap();
    assert_eq!(g.advance(2), 2);
    assert_eq!(g.steps(), Some(before + 2));
}

/// Reads one whole frame (header and body) from `s`.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(hdr) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

fn write_msg(s: &mut TcpStream, m: &Msg<'_>) {
    let mut buf = [0u8; 512];
    let n = msg::encode(m, &mut buf).unwrap();
    s.write_all(&buf[..n]).unwrap();
}

/// A destination that answers the hello and admits the guest, then hands
/// the connection to `then` (which reads as it likes).
fn admitting_peer(then: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let hello = read_frame(&mut s);
        let Ok(Msg::Hello(h)) = msg::decode(&hello) else {
            panic!("not a hello: {hello:?}");
        };
        write_msg(
            &mut s,
            &Msg::HelloAck(msg::HelloAck {
                version: PROTOCOL_VERSION,
                features: h.features,
            }),
        );
        let admit = read_frame(&mut s);
        assert!(matches!(msg::decode(&admit), Ok(Msg::Admit(_))));
        write_msg(&mut s, &Msg::Admitted);
        then(s);
    });
    addr
}

/// A peer that accepts and then neither reads nor answers, holding the
/// connection open for longer than any test runs.
fn silent_peer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        thread::sleep(LONG * 2);
        drop(s);
    });
    addr
}

#[test]
fn cancel_reaches_a_source_waiting_on_a_silent_peer() {
    let (hv, g) = guest(16);
    let mut opts = SourceOptions::new(21, "web1", true);
    long_timeouts(&mut opts);
    let r = run_watched(
        &g,
        silent_peer(),
        opts,
        Cancel::InProgressAfter(Duration::from_millis(200)),
        "silent",
    )
    .expect("the session did not return after its cancel (watchdog)");
    assert!(matches!(r, Err(SessionError::Cancelled)), "{r:?}");
    still_running(&hv, &g);
}

#[test]
fn cancel_reaches_a_source_blocked_writing_to_a_peer_that_reads_nothing() {
    // Offline: the guest is suspended while its image is written, so the
    // cancel must also resume it.
    let (hv, g) = guest(64);
    let mut opts = SourceOptions::new(22, "web1", false);
    long_timeouts(&mut opts);
    let to = admitting_peer(|s| {
        thread::sleep(LONG * 2);
        drop(s);
    });
    let r = run_watched(
        &g,
        to,
        opts,
        Cancel::After(Duration::from_millis(500)),
        "blocked",
    )
    .expect("the session did not return after its cancel (watchdog)");
    assert!(matches!(r, Err(SessionError::Cancelled)), "{r:?}");
    still_running(&hv, &g);
}

#[test]
fn cancel_reaches_a_source_under_a_bandwidth_cap() {
    let dir = temp_dir("capped-dest");
    let (hv, g) = guest(64);
    let dst_hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    let (dhv, journal) = (dst_hv.clone(), dir.join("dest.journal"));
    let dest = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut j = FileJournal::open(&journal).unwrap();
        run_dest(
            s,
            |req: &AdmissionRequest, _config: Option<&[u8]>| {
                dhv.create_empty(req.name.as_str(), req.memory_bytes)
                    .map(SimSink::new)
                    .map_err(|_| RefuseReason::NoCapacity)
            },
            &DestOptions::default(),
            &mut j,
            &Clock::new(),
        )
    });
    // 1 MiB/s: a batch of 4 MiB books four seconds of the link (whole
    // pages: zero pages as markers would book next to nothing).
    let mut opts = SourceOptions::new(23, "web1", true);
    long_timeouts(&mut opts);
    opts.bandwidth_limit = Some(MIB);
    opts.features = relocd_core::protocol::Features::LIVE;
    let r = run_watched(
        &g,
        to,
        opts,
        Cancel::InProgressAfter(Duration::from_millis(200)),
        "capped",
    )
    .expect("the session did not return after its cancel (watchdog)");
    assert!(matches!(r, Err(SessionError::Cancelled)), "{r:?}");
    still_running(&hv, &g);
    // The destination heard the abort and kept nothing.
    assert!(dest.join().unwrap().is_err());
    assert!(dst_hv.list().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_write_that_trickles_ends_at_one_deadline_per_frame() {
    // The destination admits, then reads 16 KiB every 200 ms: each write
    // call makes a little headway before the write timeout, but no image
    // chunk of up to 4 MiB can get through in 2 s once the socket buffers
    // are full. One deadline per frame ends the session; a timeout that
    // restarts on every partial write never would.
    let (hv, g) = guest(64);
    let mut opts = SourceOptions::new(24, "web1", false);
    long_timeouts(&mut opts);
    opts.timeouts.write = Duration::from_secs(2);
    // Whole 4 MiB chunks: the guest's zero pages go in full, not as
    // markers.
    opts.features = relocd_core::protocol::Features::LIVE;
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = Arc::clone(&stop);
    let to = admitting_peer(move |mut s| {
        let mut buf = vec![0u8; 16 * 1024];
        while !reader_stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(200));
            if matches!(s.read(&mut buf), Ok(0) | Err(_)) {
                return;
            }
        }
    });
    let r = run_watched(&g, to, opts, Cancel::Never, "trickle");
    stop.store(true, Ordering::SeqCst);
    let r = r.expect("the session was still writing long after its frame deadline (watchdog)");
    assert!(
        matches!(
            r,
            Err(SessionError::Aborted {
                error: Error::LinkLost { .. },
                ..
            })
        ),
        "{r:?}"
    );
    still_running(&hv, &g);
}
