//! Daemons in the test's process for the daemon tests (`daemon_migrate`,
//! `daemon_tls`, `daemon_keepalive`): [`node`] starts one (`Daemon::start_full`
//! with the migration engine on its own sim backend, on loopback), and the
//! helpers here drive and check it through its management socket with the
//! CLI's client. The log of the whole test binary is captured ([`logs`]).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use relocd::api::{
    CommandError, DomainInfo, DomainState, ErrorKind, MigrateRequest, Outcome, ProgressSink,
    Request, ResolveRequest, RestoreRequest, SaveRequest, SessionStatus, SimCreateRequest,
    TransferSummary,
};
use relocd::backend::sim::{spec_from_request, GuestSpec};
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::{Admission, AdmitAll, ListenerConfig, PendingLimits};
use relocd::daemon::{Daemon, DaemonConfig, DaemonParts, SimBackend, TlsListen};
use relocd::engine::{Engine, EngineConfig, Incoming, Service, TlsClient};
use relocd::peer::Resolver;
use relocd::tls::{Tls, TlsFiles};

use crate::tls_certs::Files;

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

/// Everything logged so far in this test binary (the first call installs
/// the capturing subscriber; [`node`] makes it).
pub fn logs() -> String {
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

/// Waits (bounded: 10 s) until `f` holds; the failure shows the log.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "never: {what}\n--- log ---\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A scratch directory, removed when the test ends (after its daemons,
/// which are declared later and so dropped first).
pub struct Scratch(PathBuf);

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

/// A fresh, empty [`Scratch`] named after the test and this process.
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("relocd-d-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

// ----- a service that counts the connections its engine receives -----

/// The engine, and a count of the relocation connections handed to it: a
/// connection refused before its first relocation message never is.
struct Counting {
    engine: Arc<Engine<SimBackend>>,
    received: Arc<AtomicUsize>,
}

impl Service for Counting {
    fn backend_name(&self) -> &str {
        self.engine.backend_name()
    }
    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        self.engine.list()
    }
    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        self.engine.sim_create(req)
    }
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        self.engine.migrate(req, progress)
    }
    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        self.engine.save(req, progress)
    }
    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        self.engine.restore(req, progress)
    }
    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        self.engine.resolve(req)
    }
    fn status(&self) -> Vec<SessionStatus> {
        self.engine.status()
    }
    fn receive(&self, conn: Incoming) {
        self.received.fetch_add(1, Ordering::SeqCst);
        self.engine.receive(conn);
    }
    fn busy(&self, conn: Incoming, limit: usize) {
        self.received.fetch_add(1, Ordering::SeqCst);
        self.engine.busy(conn, limit);
    }
    fn shutdown(&self) {
        self.engine.shutdown();
    }
    fn stopped(&self) {
        self.engine.stopped();
    }
}

// ----- nodes -----

/// A daemon, its hypervisor, the count of relocation connections its
/// engine got, and its TLS identity (if it has one).
pub struct Node {
    pub daemon: Daemon,
    pub sim: Arc<SimBackend>,
    pub received: Arc<AtomicUsize>,
    pub tls: Option<Arc<Tls>>,
}

impl Node {
    /// Its management socket.
    pub fn control(&self) -> &Path {
        self.daemon.control_path()
    }
    /// One command through the management socket.
    pub fn call(&self, req: &Request) -> Result<Outcome, ClientError> {
        Client::connect(self.control())?.call(req, |_| {})
    }
    /// The plain relocation listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.daemon.listen_addr().expect("plain listener")
    }
    /// The TLS relocation listener's address.
    pub fn tls_addr(&self) -> SocketAddr {
        self.daemon.tls_listen_addr().expect("TLS listener")
    }
}

/// The host's TLS identity from `files` (which must load without warning).
pub fn load(files: &Files) -> Arc<Tls> {
    let (tls, warnings) = Tls::load(TlsFiles {
        key: files.key.clone(),
        cert: files.cert.clone(),
        ca: files.ca.clone(),
    })
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    Arc::new(tls)
}

/// What [`node`] starts.
pub struct NodeSpec<'a> {
    /// The management socket is `TAG.sock` and the state `TAG/` in the
    /// directory.
    pub tag: &'a str,
    /// The sim backend's memory.
    pub capacity: u64,
    /// A plain relocation listener.
    pub plain: bool,
    /// The listeners' migration slots.
    pub max_sessions: usize,
    pub pending: PendingLimits,
    /// Its `io_timeout` is the listeners' too.
    pub engine: EngineConfig,
    /// The host's TLS files (`None`: no TLS at all): the engine's TLS client.
    pub files: Option<&'a Files>,
    /// A TLS relocation listener too (with `files`).
    pub tls_listener: bool,
    pub admission: Arc<dyn Admission>,
}

impl NodeSpec<'_> {
    /// `tag`: 1 GiB, no listener, 2 slots, the default pending limits, a
    /// 5 s io timeout, no TLS, admitting everyone.
    pub fn new(tag: &str) -> NodeSpec<'_> {
        NodeSpec {
            tag,
            capacity: 1 << 30,
            plain: false,
            max_sessions: 2,
            pending: PendingLimits::default(),
            engine: EngineConfig {
                io_timeout: Duration::from_secs(5),
                ..EngineConfig::default()
            },
            files: None,
            tls_listener: false,
            admission: Arc::new(AdmitAll),
        }
    }
}

/// Starts a daemon in `dir` as `spec` says, on loopback.
pub fn node(dir: &Path, spec: NodeSpec<'_>) -> Node {
    let _ = logs();
    let sim = Arc::new(SimBackend::with_capacity(spec.capacity));
    let tls = spec.files.map(load);
    let listener = |addr| ListenerConfig {
        addr,
        max_sessions: spec.max_sessions,
        max_pending: 8,
        io_timeout: Some(spec.engine.io_timeout),
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let received = Arc::new(AtomicUsize::new(0));
    let daemon = Daemon::start_full(
        DaemonConfig {
            control: dir.join(format!("{}.sock", spec.tag)),
            state_dir: dir.join(spec.tag),
            listen: spec.plain.then(|| listener(loopback)),
            shutdown_grace: Duration::from_secs(5),
        },
        spec.pending,
        match (&tls, spec.tls_listener) {
            (Some(t), true) => Some(TlsListen {
                config: listener(loopback),
                tls: t.clone(),
            }),
            _ => None,
        },
        |journal| {
            let mut engine = Engine::new(sim.clone(), journal.clone(), spec.engine);
            if let Some(t) = &tls {
                engine = engine.with_tls(TlsClient {
                    tls: t.clone(),
                    by_default: false,
                    port: 8003,
                });
            }
            DaemonParts {
                service: Arc::new(Counting {
                    engine: Arc::new(engine),
                    received: received.clone(),
                }),
                admission: spec.admission,
            }
        },
    )
    .unwrap();
    Node {
        daemon,
        sim,
        received,
        tls,
    }
}

// ----- guests and migrations -----

/// `relocd sim create NAME` with a hot workload dirtying 4 MiB/s, once it
/// has run a step; its spec, to check its memory with.
pub fn create(n: &Node, name: &str, memory: u64) -> GuestSpec {
    create_filled(n, name, memory, 0)
}

/// [`create`] with `fill` percent of the pages holding data from the start
/// (100: no zero page, so a bandwidth cap paces every page).
pub fn create_filled(n: &Node, name: &str, memory: u64, fill: u8) -> GuestSpec {
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
    // Its counter has gone past the start before anything moves it, so
    // the copy can be seen to go on from where it was.
    let g = n.sim.hypervisor().by_name(name).expect("the new guest");
    eventually("the new guest runs", || g.steps().is_some_and(|s| s > 0));
    spec
}

/// Migrating `name` to `to` (offline, no option: set the rest with
/// `..migration(name, to)`).
pub fn migration(name: &str, to: SocketAddr) -> MigrateRequest {
    MigrateRequest {
        domain: name.into(),
        host: to.ip().to_string(),
        port: Some(to.port()),
        ..MigrateRequest::default()
    }
}

/// `relocd migrate [--live] NAME` to `to`.
pub fn migrate_req(name: &str, to: SocketAddr, live: bool) -> Request {
    Request::Migrate(MigrateRequest {
        live,
        ..migration(name, to)
    })
}

/// `relocd list`: each domain's name and state.
pub fn names(n: &Node) -> Vec<(String, DomainState)> {
    match n.call(&Request::List).unwrap() {
        Outcome::Domains { domains } => domains.into_iter().map(|d| (d.name, d.state)).collect(),
        o => panic!("{o:?}"),
    }
}

/// The guest runs on at `n` (its step counter moves), `relocd list` says
/// so, and no domain there is in doubt.
pub fn running_at(n: &Node, name: &str) {
    let g = n
        .sim
        .hypervisor()
        .by_name(name)
        .expect("still at the source");
    let s = g.steps().unwrap();
    eventually("the guest runs at the source", || g.steps().unwrap() > s);
    let listed = names(n);
    assert!(
        listed.contains(&(name.to_owned(), DomainState::Running)),
        "{listed:?}"
    );
    assert!(
        listed.iter().all(|(_, s)| *s != DomainState::InDoubt),
        "{listed:?}"
    );
}

/// The destination holds exactly the workload's memory at its step count,
/// the counter goes on, and the source no longer has the guest.
pub fn check_moved(spec: &GuestSpec, from: &Node, to: &Node) {
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

/// A migration (`req`) from `a` that must fail with `kind` and a message
/// holding each of `needles` and that the guest keeps running at `a`,
/// which it does ([`running_at`]). The error, for more checks.
pub fn refused(a: &Node, req: &Request, kind: ErrorKind, needles: &[&str]) -> CommandError {
    let e = match a.call(req) {
        Err(ClientError::Remote(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.kind, kind, "{e:?}");
    for n in needles {
        assert!(e.message.contains(n), "{n:?} not in {:?}", e.message);
    }
    assert!(e.message.contains("keeps running here"), "{e:?}");
    let Request::Migrate(m) = req else {
        panic!("not a migration: {req:?}")
    };
    running_at(a, &m.domain);
    e
}

/// No lookups: hosts-allow decides on addresses and certificates only.
pub struct NoNames;

impl Resolver for NoNames {
    fn reverse(&self, _ip: IpAddr) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn forward(&self, _name: &str) -> Result<Vec<IpAddr>, String> {
        Ok(Vec::new())
    }
}
