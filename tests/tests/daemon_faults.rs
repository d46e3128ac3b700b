//! The fault matrix: two daemons (in this process, the migration engine on
//! a simulated hypervisor each) and a proxy between them that parses the
//! relocation protocol's frames (`[u32 BE length][postcard body]`, the tag
//! is the body's first byte) and, after the n-th message of a given kind
//! in either direction (or in the middle of the first page-data chunk):
//!
//! - **cuts** the connection (both sides see it close);
//! - **stalls** it: nothing more is forwarded either way, the sockets stay
//!   open, and both daemons must give up by their I/O timeout (1 s here);
//! - **kills** the source or the destination daemon. A kill is simulated in
//!   process with [`Engine::crash`]: from that instant the engine's sessions
//!   do nothing more (no resume, no destroy, no journal record, no byte
//!   sent) and their sockets close, as when the process dies; the
//!   simulated hypervisor keeps its domains, as Xen does. The daemon is then
//!   dropped and a new one started on the same state directory and
//!   hypervisor, which reconciles the journal. (In-process rather than
//!   SIGKILLed processes: a killed sim daemon would take its hypervisor,
//!   and so the guests, with it.)
//!
//! After each case: exactly one running copy of the guest, or a paused
//! copy at the source that `relocd list` reports "in doubt" and `relocd
//! resolve` settles (`--discard` when the destination runs the guest,
//! `--resume` when it does not); then exactly one copy, running, whose
//! memory matches the workload's recomputation.
//!
//! Each case has its expected outcome ([`expected`]): a fault before
//! `Prepared` must leave the guest at the source, one after `Committed` at
//! the destination; only around the commit may the source be in doubt.
//!
//! Cases: 11 message kinds (7 source → destination: Hello, Admit, Image,
//! RoundEnd, Suspended, ImageEnd, Commit; 4 destination → source:
//! HelloAck, Admitted, Prepared, Committed) and the middle of a page-data
//! chunk, each cut, stalled, with the source killed and with the
//! destination killed: 4 × 12 = 48 cases.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use relocd::api::{
    DomainState, MigrateRequest, Outcome, Request, ResolveAction, ResolveRequest, SimCreateRequest,
};
use relocd::backend::sim::spec_from_request;
use relocd::backend::sim::{self, Drive, GuestSpec, SimHypervisor};
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::{AdmitAll, ListenerConfig};
use relocd::daemon::{Daemon, DaemonConfig, DaemonError, DaemonParts, SimBackend};
use relocd::engine::{Engine, EngineConfig};

const MIB: u64 = 1 << 20;
const IO: Duration = Duration::from_secs(1);
const NAME: &str = "web1";

// Wire tags (the `Msg` variant index).
const HELLO: u8 = 0;
const HELLO_ACK: u8 = 1;
const ADMIT: u8 = 3;
const ADMITTED: u8 = 4;
const IMAGE: u8 = 6;
const ROUND_END: u8 = 7;
const SUSPENDED: u8 = 8;
const IMAGE_END: u8 = 9;
const PREPARED: u8 = 10;
const COMMIT: u8 = 11;
const COMMITTED: u8 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToDest,
    ToSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Cut,
    Stall,
    KillSource,
    KillDest,
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    dir: Dir,
    tag: u8,
    /// Fire in the middle of the frame's body instead of after it.
    mid: bool,
    action: Action,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relocd-f-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Node {
    dir: PathBuf,
    tag: &'static str,
    listen: bool,
    hv: SimHypervisor,
    engine: Arc<Engine<SimBackend>>,
    daemon: Option<Daemon>,
}

impl Node {
    fn start(dir: &Path, tag: &'static str, listen: bool, hv: SimHypervisor) -> Node {
        let sim = Arc::new(SimBackend::new(hv.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut engine = None;
            let r = Daemon::start(
                DaemonConfig {
                    control: dir.join(format!("{tag}.sock")),
                    state_dir: dir.join(tag),
                    listen: listen.then(|| ListenerConfig {
                        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                        max_sessions: 2,
                        max_pending: 8,
                        io_timeout: Some(IO),
                    }),
                    shutdown_grace: Duration::from_secs(5),
                },
                |journal| {
                    let e = Arc::new(Engine::new(
                        sim.clone(),
                        journal.clone(),
                        EngineConfig {
                            io_timeout: IO,
                            ..EngineConfig::default()
                        },
                    ));
                    engine = Some(e.clone());
                    DaemonParts {
                        service: e,
                        admission: Arc::new(AdmitAll),
                    }
                },
            );
            match r {
                Ok(d) => {
                    return Node {
                        dir: dir.to_owned(),
                        tag,
                        listen,
                        hv,
                        engine: engine.unwrap(),
                        daemon: Some(d),
                    }
                }
                // The dead daemon's last thread may still hold the journal.
                Err(DaemonError::Journal(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{tag}: {e}"),
            }
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    fn call(&self, req: &Request) -> Result<Outcome, ClientError> {
        Client::connect(self.daemon().control_path())?.call(req, |_| {})
    }

    /// The daemon died; a new one starts on the same state and hypervisor.
    fn restart(self) -> Node {
        let Node {
            dir,
            tag,
            listen,
            hv,
            engine,
            daemon,
            ..
        } = self;
        drop(daemon);
        drop(engine);
        Node::start(&dir, tag, listen, hv)
    }

    fn state(&self) -> Option<sim::DomainState> {
        self.hv.by_name(NAME).map(|g| g.state())
    }
}

/// Forwards one connection between the source and `dest`, parsing frames;
/// fires `fault` once.
struct Proxy {
    addr: SocketAddr,
    release: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

type Hook = Arc<dyn Fn(Action) + Send + Sync>;

#[expect(clippy::too_many_arguments, reason = "one direction's whole context")]
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    dir: Dir,
    fault: Fault,
    fired: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    hook: Hook,
    others: [TcpStream; 2],
) {
    let fire = |when: &str| {
        if fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = when;
        match fault.action {
            Action::Cut => {
                for s in &others {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            Action::Stall => stalled.store(true, Ordering::SeqCst),
            a => hook(a),
        }
    };
    let mut hdr = [0u8; 4];
    loop {
        if stalled.load(Ordering::SeqCst) {
            break;
        }
        if from.read_exact(&mut hdr).is_err() {
            break;
        }
        let len = u32::from_be_bytes(hdr) as usize;
        let mut body = vec![0u8; len.min(8 << 20)];
        if from.read_exact(&mut body).is_err() {
            break;
        }
        if stalled.load(Ordering::SeqCst) {
            break;
        }
        let hit =
            !fired.load(Ordering::SeqCst) && dir == fault.dir && body.first() == Some(&fault.tag);
        if hit && fault.mid {
            let half = body.len() / 2;
            let _ = to.write_all(&hdr);
            let _ = to.write_all(&body[..half]);
            fire("mid");
            break;
        }
        if to.write_all(&hdr).is_err() || to.write_all(&body).is_err() {
            break;
        }
        if hit {
            fire("after");
            if fault.action != Action::KillSource && fault.action != Action::KillDest {
                break;
            }
        }
    }
    if stalled.load(Ordering::SeqCst) {
        // Hold the connection open, silent, until the test is done.
        while !release.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Proxy {
    fn start(dest: SocketAddr, fault: Fault, hook: Hook) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (r2, f2) = (release.clone(), fired.clone());
        let t = thread::spawn(move || {
            let Ok((src, _)) = l.accept() else { return };
            let Ok(dst) = TcpStream::connect(dest) else {
                return;
            };
            let stalled = Arc::new(AtomicBool::new(false));
            let others = || [src.try_clone().unwrap(), dst.try_clone().unwrap()];
            let (a, b) = (src.try_clone().unwrap(), dst.try_clone().unwrap());
            let (o1, o2) = (others(), others());
            let (s1, r1, f1, h1) = (stalled.clone(), r2.clone(), f2.clone(), hook.clone());
            let up = thread::spawn(move || pump(a, b, Dir::ToDest, fault, f1, s1, r1, h1, o1));
            pump(dst, src, Dir::ToSource, fault, f2, stalled, r2, hook, o2);
            let _ = up.join();
        });
        Proxy {
            addr,
            release,
            fired,
            threads: vec![t],
        }
    }

    fn finish(self) -> bool {
        self.release.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn spec() -> (SimCreateRequest, GuestSpec) {
    let req = SimCreateRequest {
        name: NAME.into(),
        memory_bytes: 8 * MIB,
        dirty_rate_bytes_per_s: 2 * MIB,
        pattern: Some("hot".into()),
        vcpus: None,
        fill_percent: 0,
    };
    let spec = spec_from_request(&req).unwrap();
    (req, spec)
}

/// One case; returns how it ended, for the summary line.
fn run_case(root: &Path, n: usize, fault: Fault) -> String {
    let dir = root.join(format!("case{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = Node::start(
        &dir,
        "a",
        false,
        SimHypervisor::new(1 << 30, Drive::RealTime),
    );
    let mut b = Node::start(
        &dir,
        "b",
        true,
        SimHypervisor::new(1 << 30, Drive::RealTime),
    );
    let (req, spec) = spec();
    a.call(&Request::SimCreate(req)).unwrap();
    thread::sleep(Duration::from_millis(30));

    let killers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let (ea, eb) = (a.engine.clone(), b.engine.clone());
    let k2 = killers.clone();
    let hook: Hook = Arc::new(move |act| {
        let e = if act == Action::KillSource {
            ea.clone()
        } else {
            eb.clone()
        };
        k2.lock().unwrap().push(thread::spawn(move || e.crash()));
    });
    let proxy = Proxy::start(b.daemon().listen_addr().unwrap(), fault, hook);
    let r = a.call(&Request::Migrate(MigrateRequest {
        domain: NAME.into(),
        host: "127.0.0.1".into(),
        port: Some(proxy.addr.port()),
        live: true,
        ..MigrateRequest::default()
    }));
    for k in killers.lock().unwrap().drain(..) {
        k.join().unwrap();
    }
    let ctx = format!("case {n} {fault:?}: migrate said {r:?}");
    let source_died = a.engine.is_crashed();
    if source_died {
        a = a.restart();
    }
    if b.engine.is_crashed() {
        b = b.restart();
    }
    eventually(&ctx, 15, || {
        a.engine.active_sessions() == 0 && b.engine.active_sessions() == 0
    });
    let fired = proxy.finish();
    assert!(fired, "{ctx}: the fault never fired");

    let running = |n: &Node| n.state() == Some(sim::DomainState::Running);
    let (ra, rb) = (running(&a), running(&b));
    assert!(!(ra && rb), "{ctx}: the guest runs on both hosts");
    let outcome;
    if ra || rb {
        outcome = if rb { "moved" } else { "stayed" };
        // The other side holds no copy at all, or only an in-doubt one.
        let other = if ra { &b } else { &a };
        if other.state().is_some() {
            assert!(
                std::ptr::eq(other, &a) && !a.engine.in_doubt().is_empty(),
                "{ctx}: a leftover copy on the other host: {:?}",
                other.state()
            );
        }
    } else {
        outcome = "in doubt";
        assert!(
            b.state().is_none(),
            "{ctx}: a paused copy at the destination"
        );
    }
    // An in-doubt copy is reported by list and settled by resolve.
    let mut resolved = None;
    if !a.engine.in_doubt().is_empty() {
        let Outcome::Domains { domains } = a.call(&Request::List).unwrap() else {
            panic!()
        };
        assert!(
            domains
                .iter()
                .any(|d| d.name == NAME && d.state == DomainState::InDoubt),
            "{ctx}: list does not say in doubt: {domains:?}"
        );
        assert_eq!(a.state(), Some(sim::DomainState::Paused), "{ctx}");
        if !source_died {
            // The operator was told, and how to settle it.
            match &r {
                Err(ClientError::Remote(e)) => {
                    assert!(e.message.contains("in doubt"), "{ctx}");
                    assert!(e.message.contains("relocd resolve web1"), "{ctx}");
                }
                _ => panic!("{ctx}: in doubt without an error"),
            }
        }
        let action = if rb {
            ResolveAction::Discard
        } else {
            ResolveAction::Resume
        };
        a.call(&Request::Resolve(ResolveRequest {
            domain: NAME.into(),
            action,
        }))
        .unwrap_or_else(|e| panic!("{ctx}: resolve: {e}"));
        resolved = Some(action);
    }
    // Now exactly one copy, running, with the workload's memory.
    let copies = [&a, &b].iter().filter(|n| n.state().is_some()).count();
    assert_eq!(copies, 1, "{ctx}");
    let here = if a.state().is_some() { &a } else { &b };
    let g = here.hv.by_name(NAME).unwrap();
    assert_eq!(g.state(), sim::DomainState::Running, "{ctx}");
    g.pause().unwrap();
    let steps = g.steps().unwrap();
    g.verify(&spec.expected_memory(steps))
        .unwrap_or_else(|e| panic!("{ctx}: memory: {e}"));
    g.unpause().unwrap();
    // The journals hold no open session any more.
    for n in [&a, &b] {
        let open = relocd::journal::unresolved(&n.daemon().journal().entries().unwrap());
        assert!(open.is_empty(), "{ctx}: open journal entries {open:?}");
    }
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    match resolved {
        Some(r) => format!("{outcome}, source in doubt, resolve {r:?}"),
        None => outcome.to_owned(),
    }
}

const KINDS: [(Dir, u8, &str); 11] = [
    (Dir::ToDest, HELLO, "Hello"),
    (Dir::ToSource, HELLO_ACK, "HelloAck"),
    (Dir::ToDest, ADMIT, "Admit"),
    (Dir::ToSource, ADMITTED, "Admitted"),
    (Dir::ToDest, IMAGE, "Image"),
    (Dir::ToDest, ROUND_END, "RoundEnd"),
    (Dir::ToDest, SUSPENDED, "Suspended"),
    (Dir::ToDest, IMAGE_END, "ImageEnd"),
    (Dir::ToSource, PREPARED, "Prepared"),
    (Dir::ToDest, COMMIT, "Commit"),
    (Dir::ToSource, COMMITTED, "Committed"),
];

const STAYED: &str = "stayed";
const MOVED: &str = "moved";
/// Commit sent, never answered, the destination never committed.
const DOUBT_RESUME: &str = "in doubt, source in doubt, resolve Resume";
/// Commit sent and journaled at the destination, the answer lost.
const DOUBT_DISCARD: &str = "moved, source in doubt, resolve Discard";

/// How a case may end (the protocol's commit rules, as the core's matrix
/// has them): every fault before `Prepared` leaves the guest at the
/// source, every fault after `Committed` at the destination; around the
/// commit the source may be in doubt, and then resolve picks the copy that
/// committed. Where an in-process kill races the message it follows (the
/// killed engine may or may not have acted on it), each outcome it may
/// have is listed.
fn expected(f: Fault) -> &'static [&'static str] {
    match (f.tag, f.action) {
        (PREPARED, Action::Cut | Action::Stall) => &[DOUBT_RESUME],
        (PREPARED, Action::KillSource) => &[STAYED, DOUBT_RESUME, DOUBT_DISCARD],
        (PREPARED, Action::KillDest) => &[DOUBT_RESUME, DOUBT_DISCARD, MOVED],
        (COMMIT, Action::Cut | Action::Stall) => &[DOUBT_DISCARD],
        (COMMIT, Action::KillSource) => &[DOUBT_DISCARD, MOVED],
        (COMMIT, Action::KillDest) => &[DOUBT_RESUME, DOUBT_DISCARD, MOVED],
        (COMMITTED, Action::KillSource) => &[MOVED, DOUBT_DISCARD],
        (COMMITTED, _) => &[MOVED],
        _ => &[STAYED],
    }
}

fn matrix(tag: &str, actions: &[Action], with_mid: bool) -> usize {
    let root = scratch(tag);
    let count = AtomicUsize::new(0);
    let mut faults = Vec::new();
    for &action in actions {
        for (dir, t, _) in KINDS {
            faults.push(Fault {
                dir,
                tag: t,
                mid: false,
                action,
            });
        }
        if with_mid {
            faults.push(Fault {
                dir: Dir::ToDest,
                tag: IMAGE,
                mid: true,
                action,
            });
        }
    }
    let mut seen = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let o = run_case(&root, i, *f);
        assert!(
            expected(*f).contains(&o.as_str()),
            "case {i} {f:?} ended `{o}`, expected one of {:?}",
            expected(*f)
        );
        count.fetch_add(1, Ordering::SeqCst);
        seen.push(format!("{:?}/{}/{}: {o}", f.action, f.tag, f.mid));
    }
    eprintln!("{tag}: {} cases\n  {}", seen.len(), seen.join("\n  "));
    let _ = std::fs::remove_dir_all(&root);
    count.into_inner()
}

#[test]
fn cut_after_every_message_kind_and_mid_image() {
    assert_eq!(matrix("cut", &[Action::Cut], true), 12);
}

#[test]
fn stall_past_the_timeout_after_every_message_kind_and_mid_image() {
    assert_eq!(matrix("stall", &[Action::Stall], true), 12);
}

#[test]
fn kill_either_daemon_after_every_message_kind_and_mid_image() {
    assert_eq!(
        matrix("kill", &[Action::KillSource, Action::KillDest], true),
        24
    );
}

/// The source's daemon stops (SIGTERM: `Daemon::stop`) while its migration
/// waits for `Committed`, and the destination has committed: the source's
/// copy must not be restarted (it was, once: the guest then ran on both
/// hosts). It stays stopped, in doubt, for `relocd resolve`.
#[test]
fn stopping_the_source_daemon_after_its_commit_does_not_restart_the_guest() {
    let dir = scratch("stop-after-commit");
    let a = Node::start(
        &dir,
        "a",
        false,
        SimHypervisor::new(1 << 30, Drive::RealTime),
    );
    let b = Node::start(
        &dir,
        "b",
        true,
        SimHypervisor::new(1 << 30, Drive::RealTime),
    );
    let (req, _spec) = spec();
    a.call(&Request::SimCreate(req)).unwrap();
    // Commit reaches B; B's answer never reaches A.
    let fault = Fault {
        dir: Dir::ToDest,
        tag: COMMIT,
        mid: false,
        action: Action::Stall,
    };
    let proxy = Proxy::start(b.daemon().listen_addr().unwrap(), fault, Arc::new(|_| {}));
    let sock = a.daemon().control_path().to_owned();
    let port = proxy.addr.port();
    let migrate = thread::spawn(move || {
        Client::connect(&sock).and_then(|mut c| {
            c.call(
                &Request::Migrate(MigrateRequest {
                    domain: NAME.into(),
                    host: "127.0.0.1".into(),
                    port: Some(port),
                    live: true,
                    ..MigrateRequest::default()
                }),
                |_| {},
            )
        })
    });
    eventually("B runs the committed copy", 15, || {
        b.state() == Some(sim::DomainState::Running)
    });
    let hv_a = a.hv.clone();
    let engine_a = a.engine.clone();
    drop(a); // the daemon stops
    let at_a = hv_a.by_name(NAME).map(|g| g.state());
    assert_eq!(
        at_a,
        Some(sim::DomainState::Paused),
        "A's copy must stay stopped (B runs the guest)"
    );
    assert_eq!(b.state(), Some(sim::DomainState::Running));
    // The migration ends in doubt (its daemon stopped, or the answer never
    // came), and says so; A's copy is still stopped.
    match migrate.join().unwrap() {
        Err(ClientError::Remote(e)) => assert!(e.message.contains("in doubt"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(engine_a.in_doubt(), [NAME.to_owned()]);
    assert_eq!(
        hv_a.by_name(NAME).map(|g| g.state()),
        Some(sim::DomainState::Paused)
    );
    proxy.finish();
}
