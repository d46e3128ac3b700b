//! Issue 13: a hostile peer on the relocation port must not deny service.
//! Each test runs the attack on loopback against a relocation listener (or
//! a daemon) and asserts what the other hosts still get. Waits are bounded
//! (against hangs), never timed.

use relocd::daemon::listener::{
    AdmitAll, ListenerConfig, PatternAdmission, PendingLimits, RelocationListener, Session,
    SessionHandler,
};
use relocd::daemon::ShutdownToken;
use relocd::peer::{LookupLimits, PeerName, Resolver};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_relocd");

/// Upper bound on any wait (against hangs; not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);
/// The address the attacks come from.
const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// A connection to `to` from `from` (any port).
fn connect_from(from: [u8; 4], to: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SockAddr::from(SocketAddr::from((from, 0))))?;
    socket.connect_timeout(&SockAddr::from(to), PATIENCE)?;
    Ok(socket.into())
}

/// A relocd source's first message: one frame, as the protocol frames it
/// (`[u32 length, big-endian][body]`).
fn hello_frame() -> Vec<u8> {
    let body = b"HELLO from a real source";
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Whether the listener closed `s` (EOF or reset); `false` while it is
/// still open and silent. Non-blocking.
fn closed_by_listener(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let closed = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Asserts that the listener closes `c` (EOF or reset) within
/// [`PATIENCE`]; a read that merely times out fails.
fn assert_closed(c: &mut TcpStream) {
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("the listener wrote {:?}", &b[..n]),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "still open: {e}"
        ),
    }
}

/// The words of the listener's busy refusal.
const BUSY: &[u8] = b"too many connections awaiting admission";

/// Reads what the listener wrote on `c` until it closed it (within
/// [`PATIENCE`]).
fn read_until_closed(c: &mut TcpStream) -> Vec<u8> {
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut all = Vec::new();
    let mut b = [0u8; 512];
    loop {
        match c.read(&mut b) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&b[..n]),
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ),
                    "still open: {e}"
                );
                return all;
            }
        }
    }
}

/// Asserts that the listener told `c` it is busy (the protocol's typed
/// refusal, with its words), then closed it.
fn assert_busy(c: &mut TcpStream) {
    let got = read_until_closed(c);
    assert!(
        got.windows(BUSY.len()).any(|w| w == BUSY),
        "not a busy refusal: {got:?}"
    );
}

/// Asserts that the listener closed `c`, silently or after its busy
/// refusal (nothing else).
fn assert_closed_or_busy(c: &mut TcpStream) {
    let got = read_until_closed(c);
    assert!(
        got.is_empty() || got.windows(BUSY.len()).any(|w| w == BUSY),
        "the listener wrote {got:?}"
    );
}

/// Sends a source's first frame on `c`; returns the handler's whole answer.
fn say_hello(c: &mut TcpStream) -> Vec<u8> {
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(&hello_frame()).unwrap();
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    reply
}

/// What the sessions handed to the handler were.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// `handle`: the peer's address and the body of its first frame.
    Handled(IpAddr, Vec<u8>),
    /// `busy`: the peer's address.
    Busy(IpAddr),
}

/// Reads a session's first frame the way the destination does (blocking, up
/// to the session's io timeout), reports it, answers DONE; `busy` answers
/// BUSY after reading the first frame.
struct Recorder {
    seen: Mutex<mpsc::Sender<Seen>>,
}

fn read_frame(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let len = usize::try_from(u32::from_be_bytes(header))
        .unwrap()
        .min(4096);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(body)
}

impl SessionHandler for Recorder {
    fn handle(&self, mut session: Session) {
        let body = read_frame(&mut session.stream).unwrap_or_default();
        let _ = self
            .seen
            .lock()
            .unwrap()
            .send(Seen::Handled(session.peer.ip(), body));
        let _ = session.stream.write_all(b"DONE");
    }

    fn busy(&self, mut session: Session, _limit: usize) {
        let _ = self
            .seen
            .lock()
            .unwrap()
            .send(Seen::Busy(session.peer.ip()));
        let _ = read_frame(&mut session.stream);
        let _ = session.stream.write_all(b"BUSY");
    }
}

/// The listener as `relocd serve` sets it up for 4 sessions (32 pending,
/// a 30 s io timeout), with a short handshake timeout.
fn listener(limits: PendingLimits) -> (RelocationListener, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let l = RelocationListener::start_with(
        ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_sessions: 4,
            max_pending: 4 * 4 + 16,
            io_timeout: Some(Duration::from_secs(30)),
        },
        limits,
        Arc::new(AdmitAll),
        Arc::new(Recorder {
            seen: Mutex::new(tx),
        }),
        ShutdownToken::new(),
    )
    .unwrap();
    (l, rx)
}

/// Issue 13, item 1: 2,000 idle connections from one address, then 36 that
/// it reopens as fast as they are closed, took every slot a migration
/// needs. Now one address holds at most 4 connections awaiting admission,
/// each for the handshake timeout only, and a real source from another
/// address is admitted and handed to the handler meanwhile.
#[test]
fn idle_flood_from_one_address_leaves_room_for_a_real_source() {
    let (l, seen) = listener(PendingLimits {
        handshake_timeout: Duration::from_millis(300),
        per_address: 4,
    });
    let addr = l.local_addr();

    // 2,000 idle connections, all kept open by the attacker.
    let flood: Vec<TcpStream> = (0..2000)
        .map(|_| connect_from(ATTACKER, addr).unwrap())
        .collect();

    // 36 more, each reopened as soon as the listener closes it.
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let attacker = std::thread::spawn({
        let (stop, reopened) = (stop.clone(), reopened.clone());
        move || {
            let mut conns: Vec<TcpStream> = (0..36)
                .map(|_| connect_from(ATTACKER, addr).unwrap())
                .collect();
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < PATIENCE {
                for c in &mut conns {
                    if closed_by_listener(c) {
                        *c = connect_from(ATTACKER, addr).unwrap();
                        reopened.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            conns
        }
    });
    // Let the attacker go round a few times first.
    let start = Instant::now();
    while reopened.load(Ordering::SeqCst) < 100 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(10));
    }

    // A real source from 127.0.0.1, while the attack goes on.
    let mut source = TcpStream::connect(addr).unwrap();
    assert_eq!(
        say_hello(&mut source),
        b"DONE",
        "the real source was not admitted"
    );
    assert_eq!(
        seen.recv_timeout(PATIENCE).unwrap(),
        Seen::Handled(
            IpAddr::from([127, 0, 0, 1]),
            b"HELLO from a real source".to_vec()
        )
    );

    // The attacker's address holds at most its share of the pending slots.
    assert!(l.pending_connections() <= 4, "{}", l.pending_connections());
    stop.store(true, Ordering::SeqCst);
    let conns = attacker.join().unwrap();
    assert!(reopened.load(Ordering::SeqCst) >= 100);
    // The attacker's connections never reached the handler, not even its
    // busy refusal: they never said anything.
    assert!(seen.try_recv().is_err());
    // Every one of the flood was closed by the listener: at once (told it
    // is busy: hosts-allow admits every address here), or when its
    // handshake timeout passed.
    for mut c in flood {
        assert_closed_or_busy(&mut c);
    }
    drop(conns);
    assert!(l.stop(PATIENCE));
}

/// Past its address's limit a connection is closed at once, while other
/// addresses are still served.
#[test]
fn per_address_limit() {
    let (l, seen) = listener(PendingLimits {
        // Longer than any wait here: only the limit can close a connection.
        handshake_timeout: PATIENCE * 4,
        per_address: 2,
    });
    let addr = l.local_addr();
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| connect_from(ATTACKER, addr).unwrap())
        .collect();
    // Past the limit: told it is busy (an address hosts-allow admits), and
    // closed.
    let mut third = connect_from(ATTACKER, addr).unwrap();
    assert_busy(&mut third);
    assert_eq!(l.pending_connections(), 2);
    let mut other = TcpStream::connect(addr).unwrap();
    assert_eq!(say_hello(&mut other), b"DONE");
    assert!(matches!(
        seen.recv_timeout(PATIENCE).unwrap(),
        Seen::Handled(ip, _) if ip == IpAddr::from([127, 0, 0, 1])
    ));
}

/// A peer that hosts-allow does not admit by its address learns nothing
/// when the waiting places are full: closed, not told it is busy.
#[test]
fn a_peer_not_admitted_by_address_is_not_told_busy() {
    struct NoNames;
    impl Resolver for NoNames {
        fn reverse(&self, _: IpAddr) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn forward(&self, _: &str) -> Result<Vec<IpAddr>, String> {
            Ok(Vec::new())
        }
    }
    let (tx, _seen) = mpsc::channel();
    let l = RelocationListener::start_with(
        ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_sessions: 4,
            max_pending: 32,
            io_timeout: Some(Duration::from_secs(30)),
        },
        PendingLimits {
            handshake_timeout: PATIENCE * 4,
            per_address: 2,
        },
        Arc::new(PatternAdmission::new(
            NoNames,
            |ip: &str, _: Option<&str>| ip == "127.0.0.1",
        )),
        Arc::new(Recorder {
            seen: Mutex::new(tx),
        }),
        ShutdownToken::new(),
    )
    .unwrap();
    let addr = l.local_addr();
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| connect_from(ATTACKER, addr).unwrap())
        .collect();
    let mut third = connect_from(ATTACKER, addr).unwrap();
    assert_closed(&mut third);
}

/// A connection that has said nothing when its handshake timeout passes is
/// closed (not held for the io timeout), which frees its slot.
#[test]
fn silent_connection_is_closed_at_the_handshake_timeout() {
    let (l, seen) = listener(PendingLimits {
        handshake_timeout: Duration::from_millis(200),
        per_address: 1,
    });
    let addr = l.local_addr();
    let mut silent = connect_from(ATTACKER, addr).unwrap();
    assert_closed(&mut silent);
    let start = Instant::now();
    while l.pending_connections() > 0 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its slot is free again: the same address is served.
    let mut again = connect_from(ATTACKER, addr).unwrap();
    assert_eq!(say_hello(&mut again), b"DONE");
    assert_eq!(
        seen.recv_timeout(PATIENCE).unwrap(),
        Seen::Handled(IpAddr::from(ATTACKER), b"HELLO from a real source".to_vec())
    );
    assert!(
        seen.try_recv().is_err(),
        "the silent one reached the handler"
    );
    assert!(l.stop(PATIENCE));
}

/// A peer that says `Hello` while every session slot is taken gets the
/// busy refusal; one that then stalls cannot keep its pending slot past
/// the handshake timeout, even inside the handler's refusal.
#[test]
fn a_stalled_busy_refusal_ends_at_the_handshake_timeout() {
    let (tx, seen) = mpsc::channel();
    /// Holds every session until told; a busy refusal waits for a second
    /// frame that never comes (as a refusal that reads the peer's `Admit`
    /// would).
    struct Holding {
        seen: Mutex<mpsc::Sender<Seen>>,
        release: Mutex<mpsc::Receiver<()>>,
    }
    impl SessionHandler for Holding {
        fn handle(&self, mut session: Session) {
            let body = read_frame(&mut session.stream).unwrap_or_default();
            let _ = self
                .seen
                .lock()
                .unwrap()
                .send(Seen::Handled(session.peer.ip(), body));
            let _ = self.release.lock().unwrap().recv();
        }
        fn busy(&self, mut session: Session, _limit: usize) {
            let _ = read_frame(&mut session.stream);
            let _ = read_frame(&mut session.stream); // never comes
            let _ = self
                .seen
                .lock()
                .unwrap()
                .send(Seen::Busy(session.peer.ip()));
        }
    }
    let (release, release_rx) = mpsc::channel();
    let l = RelocationListener::start_with(
        ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_sessions: 1,
            max_pending: 1,
            // No io timeout at all: only the handshake timeout can end
            // the stalled refusal.
            io_timeout: None,
        },
        PendingLimits {
            handshake_timeout: Duration::from_millis(200),
            per_address: 1,
        },
        Arc::new(AdmitAll),
        Arc::new(Holding {
            seen: Mutex::new(tx),
            release: Mutex::new(release_rx),
        }),
        ShutdownToken::new(),
    )
    .unwrap();
    let addr = l.local_addr();
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(&hello_frame()).unwrap();
    assert!(matches!(
        seen.recv_timeout(PATIENCE).unwrap(),
        Seen::Handled(..)
    ));
    // The only session slot is taken: the next one is refused as busy, and
    // its stall ends at the handshake timeout.
    let mut stalled = connect_from(ATTACKER, addr).unwrap();
    stalled.write_all(&hello_frame()).unwrap();
    assert_eq!(
        seen.recv_timeout(PATIENCE).unwrap(),
        Seen::Busy(IpAddr::from(ATTACKER))
    );
    // Its pending slot is free again: a third peer gets its turn.
    let start = Instant::now();
    while l.pending_connections() > 0 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(l.pending_connections(), 0);
    release.send(()).unwrap();
    drop(first);
    assert!(l.stop(PATIENCE));
}

/// A `relocd serve` process (sim backend) and its log lines.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Serve {
    /// Starts `relocd serve ARGS` in `dir` and waits for "relocd ready".
    fn start(dir: &Scratch, args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .arg("--control")
            .arg(dir.path("relocd.sock"))
            .arg("serve")
            .arg("--state-dir")
            .arg(dir.path("state"))
            .args(args)
            .env("RELOCD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            lines,
            log: Vec::new(),
        };
        serve.wait_for("relocd ready");
        serve
    }

    /// Waits for a log line containing `text`; returns it.
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {text:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The relocation listener's address, from its log line.
    fn listen_addr(&mut self) -> SocketAddr {
        let line = self.wait_for("relocation listener ready");
        let at = line.find("listen=").unwrap() + "listen=".len();
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Scratch, body: &str) -> String {
    dir.config(body).display().to_string()
}

/// `relocd serve --handshake-timeout`: a silent connection is closed after
/// it, with a log line, where the 30 s io timeout held it before.
#[test]
fn serve_closes_a_silent_connection_at_its_handshake_timeout() {
    let dir = Scratch::new("hostile-handshake");
    let cfg = config(&dir, "");
    let mut serve = Serve::start(
        &dir,
        &[
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--io-timeout",
            "3600",
            "--handshake-timeout",
            "1",
        ],
    );
    let addr = serve.listen_addr();
    let mut silent = TcpStream::connect(addr).unwrap();
    assert_closed(&mut silent);
    serve.wait_for("no first message within the handshake timeout");
    assert!(!Path::new(&dir.path("state"))
        .join("journal.jsonl.compact")
        .exists());
}

/// A resolver whose reverse lookups of [`ATTACKER`] hang until released (a
/// reverse zone its owner made slow); 127.0.0.1 is `localhost`.
struct Hanging {
    /// Reverse lookups of the attacker begun.
    begun: Mutex<mpsc::Sender<()>>,
    released: Mutex<bool>,
    release: std::sync::Condvar,
}

impl Resolver for Hanging {
    fn reverse(&self, ip: IpAddr) -> Result<Option<String>, String> {
        if ip != IpAddr::from(ATTACKER) {
            return Ok(Some("localhost".into()));
        }
        let _ = self.begun.lock().unwrap().send(());
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.release.wait(released).unwrap();
        }
        Err("released".into())
    }
    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        Ok(if name == "localhost" {
            vec![IpAddr::from([127, 0, 0, 1])]
        } else {
            Vec::new()
        })
    }
}

/// Issue 13, item 7: a reverse lookup that hangs delays only its own
/// connection, and only for the lookup timeout (the peer is then matched on
/// its address); another peer is looked up and admitted meanwhile; and no
/// more than the allowed lookups run at once, however many connections the
/// slow peer opens.
#[test]
fn a_hanging_reverse_lookup_delays_only_its_own_connection() {
    let (begun_tx, begun) = mpsc::channel();
    let resolver = Arc::new(Hanging {
        begun: Mutex::new(begun_tx),
        released: Mutex::new(false),
        release: std::sync::Condvar::new(),
    });
    struct Shared(Arc<Hanging>);
    impl Resolver for Shared {
        fn reverse(&self, ip: IpAddr) -> Result<Option<String>, String> {
            self.0.reverse(ip)
        }
        fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            self.0.forward(name)
        }
    }
    // hosts-allow: `localhost` by name, the attacker by its address.
    let admission = PatternAdmission::with_limits(
        Shared(resolver.clone()),
        LookupLimits {
            timeout: Duration::from_millis(300),
            max_in_flight: 2,
        },
        |ip: &str, name: Option<&str>| name == Some("localhost") || ip == "127.0.0.2",
    );
    /// Records each handled session's address and name.
    struct Names(Mutex<mpsc::Sender<(IpAddr, PeerName)>>);
    impl SessionHandler for Names {
        fn handle(&self, mut session: Session) {
            let _ = read_frame(&mut session.stream);
            let _ = self
                .0
                .lock()
                .unwrap()
                .send((session.peer.ip(), session.peer_name.clone()));
            let _ = session.stream.write_all(b"DONE");
        }
    }
    let (tx, seen) = mpsc::channel();
    let l = RelocationListener::start_with(
        ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_sessions: 8,
            max_pending: 8,
            io_timeout: Some(Duration::from_secs(30)),
        },
        PendingLimits {
            handshake_timeout: PATIENCE,
            per_address: 4,
        },
        Arc::new(admission),
        Arc::new(Names(Mutex::new(tx))),
        ShutdownToken::new(),
    )
    .unwrap();
    let addr = l.local_addr();

    // The attacker's lookup begins, and hangs.
    let mut first = connect_from(ATTACKER, addr).unwrap();
    first.write_all(&hello_frame()).unwrap();
    begun.recv_timeout(PATIENCE).unwrap();

    // Meanwhile a peer from 127.0.0.1 is looked up, named and admitted.
    let mut other = TcpStream::connect(addr).unwrap();
    assert_eq!(say_hello(&mut other), b"DONE");
    assert_eq!(
        seen.recv_timeout(PATIENCE).unwrap(),
        (
            IpAddr::from([127, 0, 0, 1]),
            PeerName::Confirmed("localhost".into())
        )
    );
    assert!(
        !*resolver.released.lock().unwrap(),
        "the lookup still hangs"
    );

    // The attacker's connection goes on without a name once the lookup
    // timeout passes, and is matched on its address.
    let mut reply = Vec::new();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = first.read_to_end(&mut reply);
    assert_eq!(reply, b"DONE");
    let (ip, name) = seen.recv_timeout(PATIENCE).unwrap();
    assert_eq!(ip, IpAddr::from(ATTACKER));
    assert!(
        matches!(&name, PeerName::None { reason } if reason.contains("took longer")),
        "{name:?}"
    );

    // Three more from the attacker: one more lookup starts (two in
    // flight, the limit); the others wait for a place, get none, and are
    // matched on their address without a lookup.
    let mut more: Vec<TcpStream> = (0..3)
        .map(|_| connect_from(ATTACKER, addr).unwrap())
        .collect();
    for c in &mut more {
        assert_eq!(say_hello(c), b"DONE");
    }
    for _ in 0..3 {
        let (ip, name) = seen.recv_timeout(PATIENCE).unwrap();
        assert_eq!(ip, IpAddr::from(ATTACKER));
        assert!(name.usable().is_none(), "{name:?}");
    }
    begun.recv_timeout(PATIENCE).unwrap();
    assert!(
        begun.try_recv().is_err(),
        "more than two lookups were started"
    );

    *resolver.released.lock().unwrap() = true;
    resolver.release.notify_all();
    assert!(l.stop(PATIENCE));
}

/// The settings that close an open relocation server, as both commands
/// name them.
const CLOSING_SETTINGS: [&str; 4] = [
    "xend-relocation-hosts-allow",
    "xend-relocation-address",
    "xend-relocation-ssl-server",
    "relocd-relocation-ssl-ca-file",
];

/// Issue 13, item 5: with xend's defaults (empty hosts-allow) on every
/// interface and no TLS, any peer can push a guest: `relocd serve` says so
/// at start, naming the settings that close it; on loopback it does not.
#[test]
fn serve_warns_when_anyone_can_push_a_guest() {
    let dir = Scratch::new("hostile-open");
    let cfg = config(&dir, "(xend-relocation-server yes)\n");
    let mut serve = Serve::start(&dir, &["--config", &cfg, "--listen", "0.0.0.0:0"]);
    let line = serve.wait_for("admits every host");
    assert!(line.contains("WARN"), "{line}");
    for setting in CLOSING_SETTINGS {
        assert!(line.contains(setting), "{setting}: {line}");
    }
    drop(serve);

    let dir = Scratch::new("hostile-loopback");
    let cfg = config(&dir, "(xend-relocation-server yes)\n");
    let serve = Serve::start(&dir, &["--config", &cfg, "--listen", "127.0.0.1:0"]);
    // The warning comes before "relocd ready", which `start` waited for.
    assert!(
        !serve.log.iter().any(|l| l.contains("admits every host")),
        "{:?}",
        serve.log
    );
}

/// `relocd check-host` says the same about the same config.
#[test]
fn check_host_warns_when_anyone_can_push_a_guest() {
    let dir = Scratch::new("hostile-check-host");
    let cfg = config(&dir, "(xend-relocation-server yes)\n");
    let out = Command::new(BIN)
        .args(["check-host", "--config", &cfg])
        .args(["--ip", "192.0.2.1", "--name", "hostb.example"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("admits every host"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(line.starts_with("warning: "), "{line}");
    for setting in CLOSING_SETTINGS {
        assert!(line.contains(setting), "{setting}: {line}");
    }
}
