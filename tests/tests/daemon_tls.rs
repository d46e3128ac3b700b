//! The relocation link over TLS, with certificates made here: two daemons
//! in this process (the migration engine on the sim backend), a live
//! migration checked byte for byte, and every refusal the TLS listener or
//! the client must make, each before the destination reads a relocation
//! message (its engine never gets the connection), with the guest running
//! on at its source, the reason in the log and a message that says what
//! to fix. SIGHUP's re-read is checked with a migration running.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use relocd::api::{
    CommandError, DomainInfo, DomainState, ErrorKind, MigrateRequest, Outcome, ProgressSink,
    Request, ResolveRequest, RestoreRequest, SaveRequest, SimCreateRequest, TransferSummary,
};
use relocd::backend::sim::{spec_from_request, GuestSpec};
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::{
    Admission, AdmitAll, ListenerConfig, PatternAdmission, PendingLimits,
};
use relocd::daemon::{Daemon, DaemonConfig, DaemonParts, SimBackend, TlsListen};
use relocd::engine::{Engine, EngineConfig, Incoming, Service, TlsClient};
use relocd::peer::Resolver;
use relocd::tls::{Tls, TlsFiles};
use relocd_tests::tls_certs::{write_files, Ca, Files, HostCert};

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

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
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
    let dir = std::env::temp_dir().join(format!("relocd-tls-{}-{name}", std::process::id()));
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

struct Node {
    daemon: Daemon,
    sim: Arc<SimBackend>,
    received: Arc<AtomicUsize>,
    tls: Option<Arc<Tls>>,
}

impl Node {
    fn call(&self, req: &Request) -> Result<Outcome, ClientError> {
        Client::connect(self.daemon.control_path())?.call(req, |_| {})
    }
    fn plain(&self) -> SocketAddr {
        self.daemon.listen_addr().expect("plain listener")
    }
    fn tls_addr(&self) -> SocketAddr {
        self.daemon.tls_listen_addr().expect("TLS listener")
    }
}

fn load(files: &Files) -> Arc<Tls> {
    let (tls, warnings) = Tls::load(TlsFiles {
        key: files.key.clone(),
        cert: files.cert.clone(),
        ca: files.ca.clone(),
    })
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    Arc::new(tls)
}

struct NodeSpec<'a> {
    tag: &'a str,
    /// The host's TLS files (`None`: no TLS at all).
    files: Option<&'a Files>,
    plain: bool,
    tls_listener: bool,
    admission: Arc<dyn Admission>,
}

fn node(dir: &Path, spec: NodeSpec<'_>) -> Node {
    let _ = logs();
    let sim = Arc::new(SimBackend::with_capacity(1 << 30));
    let io = Duration::from_secs(5);
    let tls = spec.files.map(load);
    let listener = |addr| ListenerConfig {
        addr,
        max_sessions: 2,
        max_pending: 8,
        io_timeout: Some(io),
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let received = Arc::new(AtomicUsize::new(0));
    let daemon = Daemon::start_full(
        DaemonConfig {
            control: dir.join(format!("{}.sock", spec.tag)),
            state_dir: dir.join(spec.tag),
            listen: spec.plain.then(|| listener(loopback)),
            shutdown_grace: io,
        },
        PendingLimits::default(),
        match (&tls, spec.tls_listener) {
            (Some(t), true) => Some(TlsListen {
                config: listener(loopback),
                tls: t.clone(),
            }),
            _ => None,
        },
        |journal| {
            let mut engine = Engine::new(
                sim.clone(),
                journal.clone(),
                EngineConfig {
                    io_timeout: io,
                    ..EngineConfig::default()
                },
            );
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

fn create(n: &Node, name: &str, memory: u64) -> GuestSpec {
    let req = SimCreateRequest {
        name: name.into(),
        memory_bytes: memory,
        dirty_rate_bytes_per_s: 4 * MIB,
        pattern: Some("hot".into()),
        vcpus: None,
        fill_percent: 0,
    };
    let spec = spec_from_request(&req).unwrap();
    n.call(&Request::SimCreate(req)).unwrap();
    spec
}

fn migrate(name: &str, to: SocketAddr, ssl: bool) -> Request {
    Request::Migrate(MigrateRequest {
        domain: name.into(),
        host: to.ip().to_string(),
        port: Some(to.port()),
        live: true,
        ssl,
        ..MigrateRequest::default()
    })
}

fn names(n: &Node) -> Vec<(String, DomainState)> {
    match n.call(&Request::List).unwrap() {
        Outcome::Domains { domains } => domains.into_iter().map(|d| (d.name, d.state)).collect(),
        o => panic!("{o:?}"),
    }
}

/// The guest runs on at `n` (its step counter moves) and is not in doubt.
fn running_at(n: &Node, name: &str) {
    let g = n
        .sim
        .hypervisor()
        .by_name(name)
        .expect("still at the source");
    let s = g.steps().unwrap();
    eventually("the guest runs at the source", || g.steps().unwrap() > s);
    assert!(names(n).contains(&(name.to_owned(), DomainState::Running)));
}

/// The destination holds exactly the workload's memory, and runs it.
fn check_moved(spec: &GuestSpec, from: &Node, to: &Node) {
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

/// A migration from `a` that must fail with `kind` and a message holding
/// each of `needles`; the guest runs on at `a`, and `dest`'s engine never
/// got the connection (nothing of the session was read there).
fn refused(a: &Node, req: &Request, dest: &Node, kind: ErrorKind, needles: &[&str]) -> String {
    let message = match a.call(req) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, kind, "{e:?}");
            for n in needles {
                assert!(e.message.contains(n), "{n:?} not in {:?}", e.message);
            }
            assert!(e.message.contains("keeps running here"), "{e:?}");
            e.message
        }
        other => panic!("{other:?}"),
    };
    let Request::Migrate(m) = req else {
        unreachable!()
    };
    running_at(a, &m.domain);
    assert_eq!(
        dest.received.load(Ordering::SeqCst),
        0,
        "the destination's engine ran"
    );
    assert!(dest.sim.hypervisor().by_name(&m.domain).is_none());
    message
}

/// No lookups: hosts-allow decides on addresses and certificates only.
struct NoNames;

impl Resolver for NoNames {
    fn reverse(&self, _ip: IpAddr) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn forward(&self, _name: &str) -> Result<Vec<IpAddr>, String> {
        Ok(Vec::new())
    }
}

/// hosts-allow `^hosta\.example\.org$` (not 127.0.0.1's address).
fn hosta_only() -> Arc<dyn Admission> {
    Arc::new(PatternAdmission::new(
        NoNames,
        |ip: &str, name: Option<&str>| ip == "192.0.2.77" || name == Some("hosta.example.org"),
    ))
}

/// A host certificate for loopback from `ca`, with `dns` as its name.
fn host_cert(ca: &Ca, dns: &str) -> HostCert {
    ca.issue(&[dns, "127.0.0.1"])
}

struct World {
    dir: Scratch,
    ca: Ca,
    other_ca: Ca,
}

fn world(name: &str) -> World {
    World {
        dir: scratch(name),
        ca: Ca::new("relocd test CA"),
        other_ca: Ca::new("some other CA"),
    }
}

impl World {
    fn files(&self, tag: &str, host: &HostCert, trusted: &[&Ca]) -> Files {
        write_files(&self.dir, tag, host, trusted)
    }

    /// The destination: both listeners, hosts-allow admitting hosta by
    /// its certificate's name only.
    fn dest(&self, host: &HostCert) -> Node {
        let files = self.files("dest", host, &[&self.ca]);
        node(
            &self.dir,
            NodeSpec {
                tag: "dest",
                files: Some(&files),
                plain: true,
                tls_listener: true,
                admission: hosta_only(),
            },
        )
    }

    /// A source with `host`'s certificate, trusting `trusted`.
    fn source(&self, tag: &str, host: &HostCert, trusted: &[&Ca]) -> Node {
        let files = self.files(tag, host, trusted);
        node(
            &self.dir,
            NodeSpec {
                tag,
                files: Some(&files),
                plain: false,
                tls_listener: false,
                admission: Arc::new(AdmitAll),
            },
        )
    }
}

#[test]
fn live_migration_over_tls_is_byte_exact_and_admitted_by_certificate_name() {
    let w = world("moves");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    let a = w.source("a", &host_cert(&w.ca, "hosta.example.org"), &[&w.ca]);
    let spec = create(&a, "web1", 16 * MIB);
    std::thread::sleep(Duration::from_millis(100));
    let out = a.call(&migrate("web1", b.tls_addr(), true)).unwrap();
    let Outcome::Migrated(s) = out else {
        panic!("{out:?}")
    };
    assert!(s.rounds >= 2, "{s:?}");
    assert!(s.pages_sent >= 16 * MIB / 4096);
    check_moved(&spec, &a, &b);
    assert_eq!(b.received.load(Ordering::SeqCst), 1);
    eventually("the admission says by what", || {
        logs().contains("TLS peer admitted by its certificate's name hosta.example.org")
    });
    for n in [&a, &b] {
        let open = relocd::journal::unresolved(&n.daemon.journal().entries().unwrap());
        assert!(open.is_empty(), "{open:?}");
    }
}

/// Where a [`Refusal`] goes.
enum Dest {
    /// [`World::dest`]'s TLS port, with this certificate.
    Tls(fn(&World) -> HostCert),
    /// The plain port of a destination without TLS that admits everyone.
    PlainOpen,
}

/// A migration that must be refused before the destination reads a
/// relocation message: the source's certificate (it trusts the test CA),
/// `--ssl` or not, what the refusal says and what the destination logs.
struct Refusal {
    dir: &'static str,
    dest: Dest,
    source: fn(&World) -> HostCert,
    ssl: bool,
    says: &'static [&'static str],
    logged: &'static [&'static str],
}

/// hosta to hostb's TLS port, with `--ssl`.
const REFUSAL: Refusal = Refusal {
    dir: "",
    dest: Dest::Tls(|w| host_cert(&w.ca, "hostb.example.org")),
    source: |w| host_cert(&w.ca, "hosta.example.org"),
    ssl: true,
    says: &[],
    logged: &[],
};

/// Runs `case` ([`refused`]), then waits for each of `case.logged`.
fn check_refusal(case: Refusal) {
    let w = world(case.dir);
    let b = match case.dest {
        Dest::Tls(cert) => w.dest(&cert(&w)),
        Dest::PlainOpen => node(
            &w.dir,
            NodeSpec {
                tag: "open",
                files: None,
                plain: true,
                tls_listener: false,
                admission: Arc::new(AdmitAll),
            },
        ),
    };
    let a = w.source("a", &(case.source)(&w), &[&w.ca]);
    create(&a, "web1", 4 * MIB);
    let to = match case.dest {
        Dest::Tls(_) => b.tls_addr(),
        Dest::PlainOpen => b.plain(),
    };
    refused(
        &a,
        &migrate("web1", to, case.ssl),
        &b,
        ErrorKind::Refused,
        case.says,
    );
    eventually(&format!("the destination logs {:?}", case.logged), || {
        let l = logs();
        case.logged.iter().all(|n| l.contains(n))
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    check_refusal(Refusal {
        dir: "other-ca",
        source: |w| host_cert(&w.other_ca, "hosta.example.org"),
        says: &[
            "does not trust this host's certificate",
            "relocd-relocation-ssl-ca-file",
            "a.crt",
        ],
        logged: &[
            "TLS handshake failed",
            "its certificate is not signed by a CA in relocd-relocation-ssl-ca-file",
        ],
        ..REFUSAL
    });
}

#[test]
fn an_expired_client_certificate_is_refused() {
    check_refusal(Refusal {
        dir: "expired",
        source: |w| w.ca.issue_expired(&["hosta.example.org"]),
        says: &["has expired", "renew"],
        logged: &["its certificate has expired"],
        ..REFUSAL
    });
}

#[test]
fn a_name_hosts_allow_does_not_admit_is_refused() {
    check_refusal(Refusal {
        dir: "hosts-allow",
        source: |w| host_cert(&w.ca, "hostx.example.org"),
        says: &["xend-relocation-hosts-allow"],
        // With the names it tried.
        logged: &[
            "relocation connection refused",
            "its certificate's names: hostx.example.org, 127.0.0.1",
        ],
        ..REFUSAL
    });
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    check_refusal(Refusal {
        dir: "server-ca",
        dest: Dest::Tls(|w| host_cert(&w.other_ca, "hostb.example.org")),
        says: &[
            "its certificate is not signed by a CA in relocd-relocation-ssl-ca-file",
            "a-ca.pem",
            "add its CA there",
        ],
        // The client's alert.
        logged: &["the peer does not trust this host's certificate"],
        ..REFUSAL
    });
}

#[test]
fn a_server_certificate_for_another_name_is_refused_by_the_client() {
    check_refusal(Refusal {
        dir: "server-name",
        // The destination's certificate does not carry 127.0.0.1.
        dest: Dest::Tls(|w| w.ca.issue(&["hostb.example.org"])),
        says: &["not for the name dialled", "subject alternative names"],
        ..REFUSAL
    });
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_refused() {
    check_refusal(Refusal {
        dir: "plain-on-tls",
        ssl: false,
        says: &["speaks TLS", "--ssl"],
        logged: &["the peer does not speak TLS"],
        ..REFUSAL
    });
}

#[test]
fn a_tls_client_on_the_plain_port_fails_and_never_falls_back() {
    // Not the TLS destination's plain port: hosts-allow there would refuse
    // 127.0.0.1 (not hosta) before TLS could.
    check_refusal(Refusal {
        dir: "tls-on-plain",
        dest: Dest::PlainOpen,
        says: &[
            "during the TLS handshake",
            "not a TLS relocation port",
            "without --ssl",
        ],
        // A TLS client.
        logged: &["the peer speaks TLS, not plain relocd"],
        ..REFUSAL
    });
}

#[test]
fn a_client_without_a_certificate_is_refused_before_any_message() {
    let w = world("no-cert");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    // A TLS client of our own, with no client certificate.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(w.ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(b.tls_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    // A relocd Hello's worth of bytes; the server must not read it.
    let _ = tls.write_all(&[0, 0, 0, 8, 0, b'R', b'L', b'C', b'D', 1, 1, 3]);
    let mut buf = [0u8; 64];
    let got = tls.read(&mut buf);
    match got {
        Err(e) => assert!(
            e.to_string().contains("CertificateRequired"),
            "expected the certificate_required alert: {e}"
        ),
        Ok(n) => panic!("the server answered {n} bytes"),
    }
    eventually("the destination logs why", || {
        logs().contains("the peer presented no certificate")
    });
    assert_eq!(b.received.load(Ordering::SeqCst), 0);
}

use rustls::pki_types::pem::PemObject;

#[test]
fn reloaded_certificates_serve_new_connections_and_running_migrations_go_on() {
    let w = world("reload");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    let a = w.source("a", &host_cert(&w.ca, "hosta.example.org"), &[&w.ca]);
    let spec = create(&a, "web1", 64 * MIB);
    std::thread::sleep(Duration::from_millis(100));
    // A slow live migration (capped), and the re-read in its middle.
    let Request::Migrate(mut req) = migrate("web1", b.tls_addr(), true) else {
        unreachable!()
    };
    req.bandwidth_bytes_per_s = Some(32 * MIB);
    let running = std::thread::spawn({
        let control = a.daemon.control_path().to_owned();
        move || Client::connect(&control)?.call(&Request::Migrate(req), |_| {})
    });
    eventually("the migration runs", || {
        b.received.load(Ordering::SeqCst) == 1
    });
    // The destination's certificate now comes from the other CA.
    let newer = w.other_ca.issue(&["hostb.example.org", "127.0.0.1"]);
    std::fs::write(w.dir.join("dest.key"), &newer.key_pem).unwrap();
    std::fs::write(w.dir.join("dest.crt"), &newer.cert_pem).unwrap();
    b.tls.as_ref().unwrap().reload().unwrap();
    let out = running.join().unwrap().unwrap();
    assert!(matches!(out, Outcome::Migrated(_)), "{out:?}");
    check_moved(&spec, &a, &b);
    // A new connection gets the new certificate, which `a` does not trust.
    create(&a, "web2", 4 * MIB);
    refused_after(
        &a,
        &migrate("web2", b.tls_addr(), true),
        "is not signed by a CA",
    );
    // A broken file leaves the certificates in force.
    std::fs::write(w.dir.join("dest.key"), "not a key").unwrap();
    let e = b.tls.as_ref().unwrap().reload().unwrap_err().to_string();
    assert!(
        e.contains("dest.key") && e.contains("no private key"),
        "{e}"
    );
}

/// As [`refused`], for a destination whose engine has run before.
fn refused_after(a: &Node, req: &Request, needle: &str) {
    match a.call(req) {
        Err(ClientError::Remote(e)) => assert!(e.message.contains(needle), "{e:?}"),
        other => panic!("{other:?}"),
    }
    let Request::Migrate(m) = req else {
        unreachable!()
    };
    running_at(a, &m.domain);
}

#[test]
fn ssl_without_an_identity_is_refused_not_sent_in_the_clear() {
    let w = world("no-identity");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    let a = node(
        &w.dir,
        NodeSpec {
            tag: "a",
            files: None,
            plain: false,
            tls_listener: false,
            admission: Arc::new(AdmitAll),
        },
    );
    create(&a, "web1", 4 * MIB);
    refused_after(&a, &migrate("web1", b.tls_addr(), true), "no TLS identity");
    assert_eq!(b.received.load(Ordering::SeqCst), 0);
}
