//! Two real daemons (`Daemon::start` with the migration engine, in this
//! process) on loopback, driven through their management sockets with the
//! CLI's client: offline and live migration checked byte for byte against
//! the workload's recomputation, refusals with clear messages, a wrong
//! protocol version, save → verify-stream-v2 → restore, and bad input from
//! the network that the destination refuses while it stays up.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use relocd::api::{
    DomainState, ErrorKind, MigrateRequest, Outcome, PeerReason, Request, RestoreRequest,
    SaveRequest, SimCreateRequest,
};
use relocd::backend::sim::spec_from_request;
use relocd::backend::sim::GuestSpec;
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::{
    Admission, AdmitAll, ListenerConfig, PatternAdmission, PendingLimits,
};
use relocd::daemon::{Daemon, DaemonConfig, DaemonParts, SimBackend};
use relocd::engine::{Engine, EngineConfig};
use relocd::peer::Resolver;
use relocd_core::protocol::msg::{self, Hello, Msg, MAGIC};
use relocd_core::protocol::Features;

const MIB: u64 = 1 << 20;

// ----- log capture (one subscriber for the whole test binary) -----

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    let buf = LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

// ----- two daemons -----

/// A scratch directory, removed when the test ends (after its daemons,
/// which are declared later and so dropped first).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("relocd-m-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

struct Node {
    daemon: Daemon,
    sim: Arc<SimBackend>,
}

impl Node {
    fn control(&self) -> &Path {
        self.daemon.control_path()
    }
    fn addr(&self) -> SocketAddr {
        self.daemon.listen_addr().expect("listening")
    }
    fn call(&self, req: &Request) -> Result<Outcome, ClientError> {
        Client::connect(self.control())?.call(req, |_| {})
    }
}

fn node(dir: &Path, tag: &str, listen: bool, capacity: u64, admission: Arc<dyn Admission>) -> Node {
    node_with(dir, tag, listen, capacity, admission, 2)
}

fn node_with(
    dir: &Path,
    tag: &str,
    listen: bool,
    capacity: u64,
    admission: Arc<dyn Admission>,
    max_sessions: usize,
) -> Node {
    node_with_pending(
        dir,
        tag,
        listen,
        capacity,
        admission,
        max_sessions,
        PendingLimits::default(),
    )
}

fn node_with_pending(
    dir: &Path,
    tag: &str,
    listen: bool,
    capacity: u64,
    admission: Arc<dyn Admission>,
    max_sessions: usize,
    pending: PendingLimits,
) -> Node {
    let _ = logs();
    let sim = Arc::new(SimBackend::with_capacity(capacity));
    let io = Duration::from_secs(5);
    let daemon = Daemon::start_with(
        DaemonConfig {
            control: dir.join(format!("{tag}.sock")),
            state_dir: dir.join(tag),
            listen: listen.then(|| ListenerConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                max_sessions,
                max_pending: 8,
                io_timeout: Some(io),
            }),
            shutdown_grace: io,
        },
        pending,
        |journal| {
            let engine = Arc::new(Engine::new(
                sim.clone(),
                journal.clone(),
                EngineConfig {
                    io_timeout: io,
                    ..EngineConfig::default()
                },
            ));
            DaemonParts {
                service: engine,
                admission,
            }
        },
    )
    .unwrap();
    Node { daemon, sim }
}

fn create(n: &Node, name: &str, memory: u64) -> GuestSpec {
    create_filled(n, name, memory, 0)
}

/// [`create`] with `fill` percent of the pages holding data from the start
/// (100: no zero page, so a bandwidth cap paces every page).
fn create_filled(n: &Node, name: &str, memory: u64, fill: u8) -> GuestSpec {
    let req = SimCreateRequest {
        name: name.into(),
        memory_bytes: memory,
        dirty_rate_bytes_per_s: 4 * MIB,
        pattern: Some("hot".into()),
        vcpus: None,
        fill_percent: fill,
    };
    let spec = spec_from_request(&req).unwrap();
    n.call(&Request::SimCreate(req)).unwrap();
    spec
}

fn migrate_req(name: &str, to: SocketAddr, live: bool) -> Request {
    Request::Migrate(MigrateRequest {
        domain: name.into(),
        host: to.ip().to_string(),
        port: Some(to.port()),
        live,
        ..MigrateRequest::default()
    })
}

fn names(n: &Node) -> Vec<(String, DomainState)> {
    match n.call(&Request::List).unwrap() {
        Outcome::Domains { domains } => domains.into_iter().map(|d| (d.name, d.state)).collect(),
        o => panic!("{o:?}"),
    }
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The destination holds exactly the workload's memory at its step count,
/// the counter goes on, and the source no longer has the guest.
fn check_moved(spec: &GuestSpec, from: &Node, to: &Node) {
    assert!(
        !names(from).iter().any(|(n, _)| *n == spec.name),
        "the source still lists {}",
        spec.name
    );
    assert!(from.sim.hypervisor().by_name(&spec.name).is_none());
    assert!(names(to).contains(&(spec.name.clone(), DomainState::Running)));
    let g = to.sim.hypervisor().by_name(&spec.name).unwrap();
    g.pause().unwrap();
    let steps = g.steps().unwrap();
    assert!(steps > 0);
    g.verify(&spec.expected_memory(steps)).unwrap();
    g.unpause().unwrap();
    eventually("the step counter goes on", || g.steps().unwrap() > steps);
}

fn running_at(n: &Node, name: &str) {
    let g = n
        .sim
        .hypervisor()
        .by_name(name)
        .expect("still at the source");
    let s = g.steps().unwrap();
    eventually("the guest runs at the source", || g.steps().unwrap() > s);
    let Ok(Outcome::Domains { domains }) = n.call(&Request::List) else {
        panic!("list failed")
    };
    assert!(
        domains.iter().all(|d| d.state != DomainState::InDoubt),
        "{domains:?}"
    );
}

#[test]
fn offline_then_live_migration_through_the_control_socket() {
    let dir = scratch("moves");
    let a = node(&dir, "a", true, 1 << 30, Arc::new(AdmitAll));
    let b = node(&dir, "b", true, 1 << 30, Arc::new(AdmitAll));
    let spec = create(&a, "web1", 16 * MIB);
    std::thread::sleep(Duration::from_millis(100));

    // Offline, packed (--compress): the simulator's pages shrink on the wire.
    let Request::Migrate(mut packed) = migrate_req("web1", b.addr(), false) else {
        unreachable!()
    };
    packed.compress = true;
    let out = a.call(&Request::Migrate(packed)).unwrap();
    let Outcome::Migrated(s) = out else { panic!() };
    assert_eq!(s.domain, "web1");
    assert_eq!(s.rounds, 1, "offline: the stop-and-copy only");
    assert_eq!(s.pages_sent, 16 * MIB / 4096);
    assert!(s.bytes_sent > 0 && s.bytes_sent < 16 * MIB, "{s:?}");
    check_moved(&spec, &a, &b);

    // And back, live, with progress lines.
    let mut client = Client::connect(b.control()).unwrap();
    let mut lines = 0;
    let out = client
        .call(&migrate_req("web1", a.addr(), true), |_| lines += 1)
        .unwrap();
    let Outcome::Migrated(s) = out else { panic!() };
    assert!(s.rounds >= 2, "{s:?}");
    // Not packed unless asked, but the zero pages (all but the hot set
    // and the pages the workload spread over) travel as markers.
    assert!(s.bytes_sent < 16 * MIB, "{s:?}");
    assert!(s.pages_sent >= 16 * MIB / 4096);
    assert!(s.zero_pages > 0, "{s:?}");
    assert!(lines > 0);
    check_moved(&spec, &b, &a);

    // Offline again with --no-zero-pages: every page goes in full.
    let Request::Migrate(mut full) = migrate_req("web1", b.addr(), false) else {
        unreachable!()
    };
    full.no_zero_pages = true;
    let Outcome::Migrated(s) = a.call(&Request::Migrate(full)).unwrap() else {
        panic!()
    };
    assert_eq!(s.zero_pages, 0, "{s:?}");
    assert_eq!(s.pages_sent, 16 * MIB / 4096);
    assert!(s.bytes_sent > 16 * MIB, "{s:?}");
    check_moved(&spec, &a, &b);
    // Both journals hold only settled sessions.
    for n in [&a, &b] {
        let open = relocd::journal::unresolved(&n.daemon.journal().entries().unwrap());
        assert!(open.is_empty(), "{open:?}");
    }
}

struct NoNames;

impl Resolver for NoNames {
    fn reverse(&self, _ip: IpAddr) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn forward(&self, _name: &str) -> Result<Vec<IpAddr>, String> {
        Ok(Vec::new())
    }
}

fn refused(a: &Node, to: SocketAddr, kind: ErrorKind, needle: &str) -> Option<PeerReason> {
    let peer = match a.call(&migrate_req("web1", to, true)) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, kind, "{e:?}");
            assert!(e.message.contains(needle), "{needle:?} not in {e:?}");
            assert!(e.message.contains("keeps running here"), "{e:?}");
            e.peer
        }
        other => panic!("{other:?}"),
    };
    running_at(a, "web1");
    peer
}

#[test]
fn refusals_have_clear_messages_and_the_guest_stays() {
    let dir = scratch("refusals");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    create(&a, "web1", 16 * MIB);

    let deny = node(
        &dir,
        "deny",
        true,
        1 << 30,
        Arc::new(PatternAdmission::new(
            NoNames,
            |ip: &str, _: Option<&str>| ip == "10.9.9.9",
        )),
    );
    refused(&a, deny.addr(), ErrorKind::Refused, "hosts-allow");
    eventually("the refusal is logged", || {
        logs().contains("relocation connection refused")
    });

    let small = node(&dir, "small", true, 8 * MIB, Arc::new(AdmitAll));
    let peer = refused(
        &a,
        small.addr(),
        ErrorKind::Refused,
        "refused web1: not enough free memory for web1 (needs 16 MiB, has 8 MiB)",
    );
    // --json carries the destination's typed reason and its words
    assert_eq!(
        peer,
        Some(PeerReason {
            reason: "no_capacity".into(),
            detail: "not enough free memory for web1 (needs 16 MiB, has 8 MiB)".into(),
        })
    );
    assert!(small.sim.hypervisor().list().is_empty());

    let taken = node(&dir, "taken", true, 1 << 30, Arc::new(AdmitAll));
    create(&taken, "web1", 4 * MIB);
    refused(
        &a,
        taken.addr(),
        ErrorKind::Refused,
        "refused web1: a domain called web1 exists already",
    );
    assert_eq!(taken.sim.hypervisor().list().len(), 1);

    // Nothing listens: the relocation server is off there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    match a.call(&migrate_req("web1", port, true)) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::Network);
            assert!(e.message.contains("connection refused"), "{e:?}");
            assert!(e.message.contains("relocation server"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    running_at(&a, "web1");
}

fn frame(m: &Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let n = msg::encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_be_bytes(h) as usize;
    assert!(len <= 4096);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn wrong_protocol_version_is_refused_and_logged() {
    let dir = scratch("version");
    let b = node(&dir, "b", true, 1 << 30, Arc::new(AdmitAll));
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame(&Msg::Hello(Hello {
        magic: MAGIC,
        min_version: 7,
        max_version: 9,
        features: Features::ALL,
    })))
    .unwrap();
    let body = read_frame(&mut s).expect("an answer");
    match msg::decode(&body).unwrap() {
        Msg::VersionRefused(v) => {
            assert_eq!((v.min_version, v.max_version), (2, 2));
        }
        other => panic!("{other:?}"),
    }
    eventually("the daemon logs the refusal", || {
        let l = logs();
        l.contains("incompatible protocol version") && l.contains("theirs=9")
    });
}

/// Xen's verify-stream-v2 on a file (`-i FILE`: its unbuffered reads of a
/// pipe come back short on records larger than the pipe's buffer).
fn verify_file(file: &Path) {
    let root = relocd_tests::xen_utils::root().expect("verify-stream-v2 must be available");
    let lib = root.join("usr/lib/xen-4.17");
    let out = std::process::Command::new("python3")
        .arg(lib.join("bin/verify-stream-v2"))
        .args(["-v", "--format", "xl", "-i"])
        .arg(file)
        .env("PYTHONPATH", lib.join("lib/python"))
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify-stream-v2 refused: {text}");
    assert!(text.contains("Libxl Record: End"), "{text}");
}

#[test]
fn save_verify_restore_gives_the_same_memory() {
    let dir = scratch("save");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    let b = node(&dir, "b", false, 1 << 30, Arc::new(AdmitAll));
    let spec = create(&a, "db1", 8 * MIB);
    let g = a.sim.hypervisor().by_name("db1").unwrap();
    eventually("some steps", || g.steps().unwrap() > 5);
    let file = dir.join("db1.save");
    let out = a
        .call(&Request::Save(SaveRequest {
            domain: "db1".into(),
            file: file.clone(),
            keep_running: false,
            live: false,
            bandwidth_bytes_per_s: None,
        }))
        .unwrap();
    let Outcome::Saved(s) = out else { panic!() };
    assert_eq!(s.pages_sent, 8 * MIB / 4096);
    let saved_steps = g.steps();
    assert!(
        a.sim.hypervisor().by_name("db1").is_none(),
        "gone after save"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, s.bytes_sent);
    assert!(!dir.join("db1.save.tmp").exists());
    relocd_core::stream::reader::decode_all(
        &bytes,
        relocd_core::stream::reader::Options::STRICT,
        4096,
        |_| {},
    )
    .unwrap();
    verify_file(&file);

    let out = b
        .call(&Request::Restore(RestoreRequest { file: file.clone() }))
        .unwrap();
    let Outcome::Restored(info) = out else {
        panic!()
    };
    assert_eq!(info.name, "db1");
    assert_eq!(info.memory_bytes, 8 * MIB);
    let r = b.sim.hypervisor().by_name("db1").unwrap();
    r.pause().unwrap();
    let steps = r.steps().unwrap();
    assert!(Some(steps) >= saved_steps);
    r.verify(&spec.expected_memory(steps)).unwrap();
    r.unpause().unwrap();
    eventually("it runs on", || r.steps().unwrap() > steps);

    // A damaged file restores nothing and says where.
    std::fs::write(dir.join("bad.save"), &bytes[..bytes.len() / 2]).unwrap();
    let e = a
        .call(&Request::Restore(RestoreRequest {
            file: dir.join("bad.save"),
        }))
        .unwrap_err();
    assert!(e.to_string().contains("incomplete"), "{e}");
    assert!(
        a.sim.hypervisor().list().is_empty(),
        "the half-built copy is gone"
    );
}

#[test]
fn bad_input_from_the_network_is_refused_and_the_daemon_serves_on() {
    let dir = scratch("badinput");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    let b = node(&dir, "b", true, 1 << 30, Arc::new(AdmitAll));
    let hello = frame(&Msg::Hello(Hello {
        magic: MAGIC,
        min_version: 2,
        max_version: 2,
        features: Features::ALL,
    }));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            (0..200u32).map(|i| (i * 37 + 11) as u8).collect(),
        ),
        ("oversize length", vec![0xff, 0xff, 0xff, 0xf0, 1, 2, 3]),
        ("xend's protocol", b"(receive)".to_vec()),
        ("out of order", {
            let mut v = hello.clone();
            v.extend(frame(&Msg::Commit));
            v
        }),
        ("image before admission", {
            let mut v = hello.clone();
            v.extend(frame(&Msg::Image(&[0u8; 16])));
            v
        }),
    ];
    for (what, bytes) in &cases {
        let before = logs().matches("relocation failed").count();
        let mut s = TcpStream::connect(b.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        // The daemon answers (HelloAck, Abort) or not, then hangs up.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        eventually(what, || {
            logs().matches("relocation failed").count() > before
        });
        assert!(b.sim.hypervisor().list().is_empty(), "{what}");
    }
    // It still serves a migration.
    let spec = create(&a, "web1", 8 * MIB);
    a.call(&migrate_req("web1", b.addr(), true)).unwrap();
    check_moved(&spec, &a, &b);
}

#[test]
fn cancel_from_the_client_leaves_the_guest_running_at_the_source() {
    let dir = scratch("cancel");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    let b = node(&dir, "b", true, 1 << 30, Arc::new(AdmitAll));
    create_filled(&a, "web1", 16 * MIB, 100);
    let to = b.addr();
    let mut client = Client::connect(a.control()).unwrap();
    let mut canceller = client.canceller().unwrap();
    let mut sent = false;
    // 16 MiB at 4 MiB/s: the first progress line (a round's end) comes
    // seconds before the end, and the cancel with it.
    let r = client.call(
        &Request::Migrate(MigrateRequest {
            domain: "web1".into(),
            host: to.ip().to_string(),
            port: Some(to.port()),
            live: true,
            bandwidth_bytes_per_s: Some(4 * MIB),
            ..MigrateRequest::default()
        }),
        |p| {
            if !sent && p.pages_sent > 0 {
                canceller.cancel().unwrap();
                sent = true;
            }
        },
    );
    match r {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::Cancelled, "{e:?}");
            assert!(e.message.contains("keeps running here"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sent);
    running_at(&a, "web1");
    eventually("the destination drops its copy", || {
        b.sim.hypervisor().list().is_empty()
    });
}

/// `--bandwidth` holds on an offline migration and an offline save too (it
/// once applied to live rounds only): the average rate stays under the cap.
/// An upper bound, so a slow machine cannot make it fail.
#[test]
fn the_bandwidth_cap_holds_offline() {
    let dir = scratch("offline-cap");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    let b = node(&dir, "b", true, 1 << 30, Arc::new(AdmitAll));
    create(&a, "web1", 8 * MIB);
    let cap = 16 * MIB;
    let to = b.addr();
    let Ok(Outcome::Migrated(s)) = a.call(&Request::Migrate(MigrateRequest {
        domain: "web1".into(),
        host: to.ip().to_string(),
        port: Some(to.port()),
        live: false,
        bandwidth_bytes_per_s: Some(cap),
        ..MigrateRequest::default()
    })) else {
        panic!("the migration failed")
    };
    let rate = s.bytes_sent as f64 / (s.total_ms / 1000.0);
    assert!(
        rate <= cap as f64 * 1.1,
        "{rate:.0} B/s over a {cap} B/s cap: {s:?}"
    );
    let file = dir.join("web1.save");
    let Ok(Outcome::Saved(s)) = b.call(&Request::Save(SaveRequest {
        domain: "web1".into(),
        file,
        keep_running: true,
        live: false,
        bandwidth_bytes_per_s: Some(cap),
    })) else {
        panic!("the save failed")
    };
    let rate = s.bytes_sent as f64 / (s.total_ms / 1000.0);
    assert!(
        rate <= cap as f64 * 1.1,
        "{rate:.0} B/s over a {cap} B/s cap: {s:?}"
    );
}

#[test]
fn the_demo_runs_and_its_checks_pass() {
    let args = relocd::demo::DemoArgs {
        memory: 16 * MIB,
        dirty_rate: 4 * MIB,
        pattern: relocd::cli::sim::PatternArg::Hot,
        downtime_limit: 300,
        warm_up: 50,
    };
    let out = relocd::cli::Output {
        json: true,
        progress: false,
    };
    relocd::demo::run(&args, &out).unwrap();
}

/// A destination whose connections awaiting admission are all taken (here
/// by idle connections from the source's own address) answers with the
/// protocol's busy refusal, and the source says the host is busy, never
/// that hosts-allow refused it.
#[test]
fn a_host_with_no_room_for_another_connection_is_said_to_be_busy() {
    let dir = scratch("pending-full");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    let b = node_with_pending(
        &dir,
        "b",
        true,
        1 << 30,
        Arc::new(AdmitAll),
        2,
        PendingLimits {
            handshake_timeout: Duration::from_secs(60),
            per_address: 1,
        },
    );
    create(&a, "web1", 8 * MIB);
    let to = b.addr();
    // Connected first, so accepted first (the listen queue is in order).
    let _idle = std::net::TcpStream::connect(to).unwrap();
    let peer = refused(
        &a,
        to,
        ErrorKind::Refused,
        &format!("{to} is busy: too many connections awaiting admission"),
    );
    assert_eq!(peer.map(|p| p.reason).as_deref(), Some("busy"));
    assert!(b.sim.hypervisor().list().is_empty());
}

#[test]
fn the_concurrency_limit_refuses_with_the_protocols_reason() {
    let dir = scratch("busy");
    let a = node(&dir, "a", false, 1 << 30, Arc::new(AdmitAll));
    let b = node_with(&dir, "b", true, 1 << 30, Arc::new(AdmitAll), 1);
    create(&a, "slow", 16 * MIB);
    create(&a, "web1", 8 * MIB);
    let to = b.addr();
    // One migration holds the only slot (16 MiB at 8 MiB/s)…
    let control = a.control().to_owned();
    let first = std::thread::spawn(move || {
        Client::connect(&control).unwrap().call(
            &Request::Migrate(MigrateRequest {
                domain: "slow".into(),
                host: to.ip().to_string(),
                port: Some(to.port()),
                live: true,
                bandwidth_bytes_per_s: Some(8 * MIB),
                ..MigrateRequest::default()
            }),
            |_| {},
        )
    });
    eventually("the first migration is admitted", || {
        b.sim.hypervisor().by_name("slow").is_some()
    });
    // …so the next is refused with the reason, and stays: the host is
    // said to be busy (not refusing this guest or this host).
    let peer = refused(
        &a,
        to,
        ErrorKind::Refused,
        &format!("{to} is busy: too many migrations in progress (at most 1)"),
    );
    assert_eq!(
        peer.map(|p| p.reason).as_deref(),
        Some("too_many_migrations")
    );
    first.join().unwrap().unwrap();
    assert!(b.sim.hypervisor().by_name("slow").is_some());
}
