//! Issue 13, item 2, as attacks on a real daemon (`Daemon::start` with the
//! migration engine and the sim backend, on loopback): an admitted peer
//! must make progress to keep its migration slot and the memory it was
//! admitted for.
//!
//! - Keepalives only (empty `Image` chunks, `RoundEnd`s): aborted at the
//!   idle deadline (the io timeout) after admission.
//! - A frame trickled a byte at a time: the same deadline, mid-frame.
//! - Real progress, too slow: aborted at the transfer bound
//!   (`EngineConfig::max_transfer_time`, `serve --max-transfer-time`).
//!
//! After each, `relocd list` shows no half-built guest, both slots and all
//! the capacity can be taken again, and a real migration succeeds. The
//! only timing checked is that each attack ends before a generous
//! watchdog; the times measured are printed (`--nocapture`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use relocd::api::{DomainState, Outcome, Request, SimCreateRequest};
use relocd::client::ClientError;
use relocd::engine::EngineConfig;
use relocd::session::{ImageEncoder, LibxcEncoder};
use relocd_core::guest::{GuestInfo, GuestType, PageType, PAGE_SIZE};
use relocd_core::protocol::msg::{self, Hello, Msg, MAGIC};
use relocd_core::protocol::{AbortReason, Features, RefuseReason, PROTOCOL_VERSION};
use relocd_tests::daemons::{migrate_req, names, node, scratch, Node, NodeSpec};

const MIB: u64 = 1 << 20;
/// The destination's capacity: exactly what two intruders ask for.
const CAPACITY: u64 = 64 * MIB;
/// Its migration slots.
const SLOTS: usize = 2;
/// The io timeout the destinations run with: the idle deadline.
const IO: Duration = Duration::from_secs(1);
/// How long an attack may run before the test calls it a success for the
/// attacker.
const WATCHDOG: Duration = Duration::from_secs(30);

/// A destination with the test's io timeout and `max_transfer_time`.
fn destination(dir: &Path, max_transfer_time: Duration) -> Node {
    let cfg = EngineConfig {
        io_timeout: IO,
        max_transfer_time,
    };
    node(
        dir,
        NodeSpec {
            capacity: CAPACITY,
            plain: true,
            max_sessions: SLOTS,
            engine: cfg,
            ..NodeSpec::new("b")
        },
    )
}

fn frame(m: &Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = msg::encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// One frame body (blocking).
fn read_body(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let len = msg::frame_len(h, msg::MAX_CONTROL_FRAME_LEN).unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// A hand-made source, admitted for `memory` bytes as `name`: both the
/// slot and the memory are held from here.
fn admitted(to: SocketAddr, name: &str, memory: u64) -> TcpStream {
    try_admit(to, name, memory).unwrap_or_else(|r| panic!("{name} refused: {r}"))
}

/// [`admitted`], or the destination's refusal.
fn try_admit(to: SocketAddr, name: &str, memory: u64) -> Result<TcpStream, RefuseReason> {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s.write_all(&frame(&Msg::Hello(Hello {
        magic: MAGIC,
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        features: Features::LIVE,
    })))
    .unwrap();
    let ack = read_body(&mut s).expect("HelloAck");
    assert!(matches!(msg::decode(&ack), Ok(Msg::HelloAck(_))));
    let tag = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    s.write_all(&frame(&Msg::Admit(msg::Admit {
        session: tag,
        name,
        uuid: [tag as u8; 16],
        memory_bytes: memory,
        p2m_size: memory / PAGE_SIZE as u64,
        vcpus: 1,
        guest_type: 2,
        live: true,
    })))
    .unwrap();
    let answer = read_body(&mut s).expect("an answer to Admit");
    match msg::decode(&answer) {
        Ok(Msg::Admitted) => Ok(s),
        Ok(Msg::Refused(r)) => Err(r.reason),
        other => panic!("{name}: {other:?}"),
    }
}

/// How an attack ended: the destination's `Abort` (reason, detail) and
/// how long after the admission it came; `None` if the watchdog passed
/// first (the attacker held the slot).
type Ending = Option<(AbortReason, String, Duration)>;

/// Runs `attack` (one call per step, until it returns `false` or the
/// destination ends the session) on an admitted connection, and reads
/// what the destination says on another thread.
fn held(s: TcpStream, mut attack: impl FnMut(&mut TcpStream, u32) -> bool + Send) -> Ending {
    let since = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut reader = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let end = read_body(&mut reader).map(|b| match msg::decode(&b) {
            Ok(Msg::Abort(a)) => (a.reason, a.detail.to_owned(), since.elapsed()),
            other => panic!("expected an Abort, got {other:?}"),
        });
        let _ = tx.send(end);
    });
    let mut s = s;
    let mut step = 0;
    loop {
        match rx.try_recv() {
            Ok(end) => return end,
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if since.elapsed() > WATCHDOG {
            let _ = s.shutdown(std::net::Shutdown::Both);
            return None;
        }
        step += 1;
        if !attack(&mut s, step) {
            return rx.recv_timeout(WATCHDOG).ok().flatten();
        }
    }
}

/// Keepalives: an empty image chunk and a new round number, five times
/// per idle timeout.
fn keepalive(s: &mut TcpStream, step: u32) -> bool {
    let mut bytes = frame(&Msg::Image(&[]));
    bytes.extend(frame(&Msg::RoundEnd(msg::RoundEnd {
        round: step,
        pages: 0,
        dirty: 0,
    })));
    let ok = s.write_all(&bytes).is_ok();
    std::thread::sleep(IO / 5);
    ok
}

/// Checks that nothing of the attack is left at `b`: no half-built guest
/// in `relocd list`, both slots and all the capacity free (two new
/// sessions admitted for all of it at once), then a real migration from
/// `a` succeeds. (A slot is given back just after the session's guest is
/// destroyed, when its thread ends: a refusal for too many migrations in
/// that instant is retried, within the watchdog.)
fn released(a: &Node, b: &Node, guest: &str) {
    let deadline = Instant::now() + WATCHDOG;
    let gone = || {
        while !names(b).is_empty() || !b.sim.hypervisor().list().is_empty() {
            assert!(Instant::now() < deadline, "left at b: {:?}", names(b));
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let retry = |what: &str, r: RefuseReason| {
        assert_eq!(r, RefuseReason::TooManyMigrations, "{what}");
        assert!(Instant::now() < deadline, "{what}: slots still held");
        std::thread::sleep(Duration::from_millis(20));
    };
    gone();
    loop {
        let x = try_admit(b.addr(), "again0", CAPACITY / 2);
        let y = try_admit(b.addr(), "again1", CAPACITY / 2);
        let both = x.is_ok() && y.is_ok();
        let refusal = x.as_ref().err().or(y.as_ref().err()).copied();
        drop((x, y));
        gone();
        match refusal {
            None if both => break,
            Some(r) => retry("two sessions for all the capacity", r),
            None => unreachable!(),
        }
    }
    let to = b.addr();
    let req = migrate_req(guest, to, false);
    loop {
        match a.call(&req) {
            Ok(Outcome::Migrated(_)) => break,
            Err(ClientError::Remote(e))
                if e.peer
                    .as_ref()
                    .is_some_and(|p| p.reason == "too_many_migrations") =>
            {
                retry(&e.message, RefuseReason::TooManyMigrations)
            }
            other => panic!("migrating {guest} to b: {other:?}"),
        }
    }
    assert_eq!(names(b), [(guest.to_owned(), DomainState::Running)]);
}

/// A source with one guest that needs more than half the destination's
/// capacity: it fits only once both intruders' memory is released.
fn source(dir: &Path, guest: &str) -> Node {
    let a = node(
        dir,
        NodeSpec {
            engine: EngineConfig::default(),
            ..NodeSpec::new("a")
        },
    );
    a.call(&Request::SimCreate(SimCreateRequest {
        name: guest.into(),
        memory_bytes: CAPACITY / 2 + 8 * MIB,
        dirty_rate_bytes_per_s: MIB,
        pattern: None,
        vcpus: None,
        fill_percent: 0,
    }))
    .unwrap();
    a
}

#[test]
fn keepalives_do_not_hold_slots_or_capacity() {
    let dir = scratch("keepalive");
    let b = destination(&dir, EngineConfig::default().max_transfer_time);
    let a = source(&dir, "web1");
    // Two intruders take every slot and all the memory…
    let intruders: Vec<_> = (0..SLOTS)
        .map(|i| admitted(b.addr(), &format!("evil{i}"), CAPACITY / 2))
        .collect();
    assert_eq!(names(&b).len(), SLOTS, "{:?}", names(&b));
    // …and try to keep them with frames that carry nothing.
    let ends: Vec<Ending> = std::thread::scope(|sc| {
        let hs: Vec<_> = intruders
            .into_iter()
            .map(|s| sc.spawn(move || held(s, keepalive)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for end in ends {
        let (reason, detail, after) = end.expect("the attacker held its slot past the watchdog");
        assert_eq!(reason, AbortReason::Timeout, "{detail}");
        assert!(detail.contains("no progress"), "{detail}");
        eprintln!("keepalive-only session held its slot for {after:?} (io timeout {IO:?})");
    }
    released(&a, &b, "web1");
}

#[test]
fn a_frame_trickled_a_byte_at_a_time_does_not_hold_a_slot() {
    let dir = scratch("trickle");
    let b = destination(&dir, EngineConfig::default().max_transfer_time);
    let a = source(&dir, "web1");
    let s = admitted(b.addr(), "evil0", CAPACITY / 2);
    // An image chunk of 4,000 bytes, announced, then sent a byte every
    // 20 ms (80 s for the frame): never silent long enough for a read to
    // time out.
    let body = frame(&Msg::Image(&[0u8; 4000]));
    let end = held(s, |s, step| {
        let i = step as usize - 1;
        if i == 0 {
            return s.write_all(&body[..4]).is_ok();
        }
        let Some(b) = body.get(3 + i) else {
            return false;
        };
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(&[*b]).is_ok()
    });
    let (reason, detail, after) = end.expect("the trickle held its slot past the watchdog");
    assert_eq!(reason, AbortReason::Timeout, "{detail}");
    assert!(detail.contains("no progress"), "{detail}");
    eprintln!("a trickled frame held its slot for {after:?} (io timeout {IO:?})");
    released(&a, &b, "web1");
}

#[test]
fn slow_progress_ends_at_the_transfer_bound() {
    let dir = scratch("slow");
    let limit = Duration::from_secs(3);
    let b = destination(&dir, limit);
    let a = source(&dir, "web1");
    let memory = CAPACITY / 2;
    let s = admitted(b.addr(), "evil0", memory);
    // A valid image that never ends: its head, then page 0 again and
    // again, one page per fifth of the idle timeout: progress each time.
    let info = GuestInfo {
        guest_type: GuestType::Hvm,
        p2m_size: memory / PAGE_SIZE as u64,
        nr_pages: memory / PAGE_SIZE as u64,
        vcpus: 1,
    };
    let mut enc = LibxcEncoder::new();
    let end = held(s, |s, step| {
        let mut chunk = Vec::new();
        if step == 1 {
            enc.start(&info, &mut chunk).unwrap();
            enc.static_end(&mut chunk).unwrap();
        }
        let page = [step as u8; PAGE_SIZE];
        enc.pages(&[0], &[PageType::NOTAB], &[&page], &mut chunk)
            .unwrap();
        chunk.extend_from_slice(&page);
        let ok = s.write_all(&frame(&Msg::Image(&chunk))).is_ok();
        std::thread::sleep(IO / 5);
        ok
    });
    let (reason, detail, after) = end.expect("slow progress held its slot past the watchdog");
    assert_eq!(reason, AbortReason::TransferTooLong, "{detail}");
    assert_eq!(
        detail, "took longer than 3 s from admission to prepared",
        "{detail}"
    );
    eprintln!("a slowly progressing session held its slot for {after:?} (limit {limit:?})");
    released(&a, &b, "web1");
}
