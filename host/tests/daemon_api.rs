//! The daemon as a library (`Daemon::start`), with a test double for the
//! engine's service: streaming progress, cancellation (by request and by
//! hang-up), and the shutdown hooks.

use relocd::api::{Cancelled, ProgressSink};
use relocd::api::{
    CommandError, DomainInfo, DomainState, ErrorKind, MigrateRequest, Outcome, Phase, Progress,
    Reply, Request, SimCreateRequest, TransferSummary,
};
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::AdmitAll;
use relocd::daemon::{Daemon, DaemonConfig, DaemonParts, Service};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relocd-a-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One domain, in doubt; `migrate` to host "fast" reports three rounds and
/// succeeds; to host "slow" it reports once, then waits until cancelled
/// (telling `cancelled`).
struct FakeService {
    cancelled: Mutex<mpsc::Sender<&'static str>>,
    shutdowns: AtomicUsize,
    stops: AtomicUsize,
}

impl Service for FakeService {
    fn backend_name(&self) -> &str {
        "fake"
    }

    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        Ok(vec![DomainInfo {
            id: 5,
            name: "web1".into(),
            memory_bytes: 512 << 20,
            vcpus: 1,
            state: DomainState::InDoubt,
            steps: None,
        }])
    }

    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let cancelled = |how| {
            self.cancelled.lock().unwrap().send(how).unwrap();
            CommandError::new(ErrorKind::Cancelled, "cancelled; web1 runs here")
        };
        if req.host == "fast" {
            for round in 1..=3 {
                let mut p = Progress::phase(Phase::Precopy);
                p.round = round;
                p.pages_sent = u64::from(round) * 1024;
                progress
                    .report(&p)
                    .map_err(|Cancelled| cancelled("report"))?;
            }
            return Ok(TransferSummary {
                domain: req.domain.clone(),
                rounds: 3,
                pages_sent: 3072,
                bytes_sent: 3072 * 4096,
                ..TransferSummary::default()
            });
        }
        progress
            .report(&Progress::phase(Phase::Connecting))
            .map_err(|Cancelled| cancelled("report"))?;
        // Bounded wait for the client's cancel (not a timing assertion).
        for _ in 0..6000 {
            if progress.is_cancelled() {
                return Err(cancelled("flag"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(CommandError::new(ErrorKind::Internal, "never cancelled"))
    }

    fn shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }

    fn stopped(&self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A service with every default: each command "not implemented".
struct Nothing;

impl Service for Nothing {
    fn backend_name(&self) -> &str {
        "sim"
    }
}

struct Fixture {
    daemon: Daemon,
    service: Arc<FakeService>,
    cancelled: mpsc::Receiver<&'static str>,
    dir: PathBuf,
}

fn start(name: &str) -> Fixture {
    let dir = scratch(name);
    let (tx, cancelled) = mpsc::channel();
    let service = Arc::new(FakeService {
        cancelled: Mutex::new(tx),
        shutdowns: AtomicUsize::new(0),
        stops: AtomicUsize::new(0),
    });
    let daemon = Daemon::start(
        DaemonConfig {
            control: dir.join("relocd.sock"),
            state_dir: dir.join("state"),
            listen: None,
            shutdown_grace: Duration::from_secs(5),
        },
        |journal| {
            assert!(journal.entries().unwrap().is_empty());
            DaemonParts {
                service: service.clone(),
                admission: Arc::new(AdmitAll),
            }
        },
    )
    .unwrap();
    Fixture {
        daemon,
        service,
        cancelled,
        dir,
    }
}

fn migrate(host: &str) -> Request {
    Request::Migrate(MigrateRequest {
        domain: "web1".into(),
        host: host.into(),
        live: true,
        ..MigrateRequest::default()
    })
}

#[test]
fn migrate_streams_progress_then_its_summary() {
    let f = start("stream");
    let mut client = Client::connect(f.daemon.control_path()).unwrap();
    let mut rounds = Vec::new();
    let outcome = client
        .call(&migrate("fast"), |p| {
            rounds.push((p.phase, p.round, p.pages_sent))
        })
        .unwrap();
    assert_eq!(
        rounds,
        [
            (Phase::Precopy, 1, 1024),
            (Phase::Precopy, 2, 2048),
            (Phase::Precopy, 3, 3072)
        ]
    );
    match outcome {
        Outcome::Migrated(s) => assert_eq!(
            (s.domain.as_str(), s.rounds, s.pages_sent),
            ("web1", 3, 3072)
        ),
        other => panic!("{other:?}"),
    }
    // The connection is ready for the next command.
    match client.call(&Request::List, |_| {}).unwrap() {
        Outcome::Domains { domains } => {
            assert_eq!(domains.len(), 1);
            assert_eq!(domains[0].state, DomainState::InDoubt);
        }
        other => panic!("{other:?}"),
    }
    // A backend without a simulator answers sim create with a typed error.
    let err = client
        .call(
            &Request::SimCreate(SimCreateRequest {
                name: "g".into(),
                memory_bytes: 1 << 30,
                ..SimCreateRequest::default()
            }),
            |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Remote(ref e) if e.kind == ErrorKind::NotImplemented && e.message.contains("fake backend")),
        "{err}"
    );
}

#[test]
fn cancel_request_stops_a_running_command() {
    let f = start("cancel");
    let mut client = Client::connect(f.daemon.control_path()).unwrap();
    let mut canceller = client.canceller().unwrap();
    let mut seen = 0;
    let err = client
        .call(&migrate("slow"), |p| {
            assert_eq!(p.phase, Phase::Connecting);
            seen += 1;
            canceller.cancel().unwrap();
        })
        .unwrap_err();
    assert_eq!(seen, 1);
    assert!(
        matches!(err, ClientError::Remote(ref e) if e.kind == ErrorKind::Cancelled),
        "{err}"
    );
    assert_eq!(f.cancelled.recv().unwrap(), "flag");
    // A stray cancel with nothing running does not affect the next command.
    canceller.cancel().unwrap();
    assert!(matches!(
        client.call(&migrate("fast"), |_| {}).unwrap(),
        Outcome::Migrated(_)
    ));
}

#[test]
fn hanging_up_cancels_a_running_command() {
    let f = start("hangup");
    let mut conn = UnixStream::connect(f.daemon.control_path()).unwrap();
    conn.write_all(b"{\"cmd\":\"migrate\",\"domain\":\"web1\",\"host\":\"slow\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(conn.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    let first: Reply = serde_json::from_str(&line).unwrap();
    assert!(matches!(first, Reply::Progress(_)), "{first:?}");
    drop(conn);
    assert_eq!(f.cancelled.recv().unwrap(), "flag");
}

#[test]
fn stop_calls_the_shutdown_hooks_and_removes_the_socket() {
    let f = start("stop");
    let control = f.daemon.control_path().to_owned();
    assert!(control.exists());
    f.daemon.stop();
    assert!(!control.exists());
    assert_eq!(f.service.shutdowns.load(Ordering::SeqCst), 1);
    assert_eq!(f.service.stops.load(Ordering::SeqCst), 1);
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[test]
fn list_binary_shows_in_doubt() {
    let f = start("listbin");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relocd"))
        .arg("list")
        .env("RELOCD_CONTROL", f.daemon.control_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["web1", "5", "512", "1", "in", "doubt"]);
}

#[test]
fn default_operations_are_typed_not_implemented_errors() {
    let dir = scratch("noops");
    let daemon = Daemon::start(
        DaemonConfig {
            control: dir.join("relocd.sock"),
            state_dir: dir.join("state"),
            listen: None,
            shutdown_grace: Duration::from_secs(5),
        },
        |_| DaemonParts {
            service: Arc::new(Nothing),
            admission: Arc::new(AdmitAll),
        },
    )
    .unwrap();
    let mut client = Client::connect(daemon.control_path()).unwrap();
    for req in [
        migrate("hostb"),
        Request::Save(Default::default()),
        Request::Restore(Default::default()),
        Request::Resolve(relocd::api::ResolveRequest {
            domain: "web1".into(),
            action: relocd::api::ResolveAction::Resume,
        }),
    ] {
        let err = client.call(&req, |_| {}).unwrap_err();
        assert!(
            matches!(err, ClientError::Remote(ref e) if e.kind == ErrorKind::NotImplemented && e.message.contains(req.name())),
            "{}: {err}",
            req.name()
        );
    }
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
