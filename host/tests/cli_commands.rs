//! The client commands (the `relocd` binary) against a daemon started in
//! this process with the sim backend and scripted operations: what goes on
//! the wire, the summaries (text and `--json`), Ctrl-C sending `cancel`,
//! usage errors.

use relocd::api::ProgressSink;
use relocd::api::{
    CommandError, DomainInfo, DomainState, ErrorKind, MigrateRequest, Phase, Progress,
    ResolveAction, ResolveRequest, RestoreRequest, SaveRequest, TransferSummary,
};
use relocd::backend::sim::{Drive, SimHypervisor};
use relocd::daemon::listener::AdmitAll;
use relocd::daemon::{Daemon, DaemonConfig, DaemonParts, Service, SimBackend};
use relocd::engine::Backend as _;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_relocd");
/// A bound against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relocd-cc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Migrate(MigrateRequest),
    Save(SaveRequest),
    Restore(RestoreRequest),
    Resolve(ResolveRequest),
}

/// `migrate` to "slow" says it started, then reports until cancelled; to
/// any other host it reports three rounds and succeeds.
struct ScriptedOps {
    backend: Arc<SimBackend>,
    seen: Mutex<Vec<Seen>>,
    started: Mutex<mpsc::Sender<()>>,
    cancelled: Mutex<mpsc::Sender<()>>,
}

fn summary(domain: &str) -> TransferSummary {
    TransferSummary {
        domain: domain.into(),
        rounds: 3,
        pages_sent: 270_000,
        bytes_sent: 1_107_296_256,
        downtime_ms: 8.5,
        total_ms: 1500.0,
        bandwidth_mib_s: 704.0,
        ..TransferSummary::default()
    }
}

impl Service for ScriptedOps {
    fn backend_name(&self) -> &str {
        "sim"
    }

    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        self.backend.list()
    }

    fn sim_create(&self, req: &relocd::api::SimCreateRequest) -> Result<DomainInfo, CommandError> {
        self.backend.sim_create(req)
    }

    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        self.seen.lock().unwrap().push(Seen::Migrate(req.clone()));
        let cancelled = || {
            CommandError::new(
                ErrorKind::Cancelled,
                "migration cancelled; web1 keeps running here",
            )
        };
        if req.host == "slow" {
            self.started.lock().unwrap().send(()).unwrap();
            let deadline = Instant::now() + PATIENCE;
            let mut round = 0;
            while Instant::now() < deadline {
                round += 1;
                let p = Progress {
                    round,
                    ..Progress::phase(Phase::Precopy)
                };
                if progress.report(&p).is_err() || progress.is_cancelled() {
                    self.cancelled.lock().unwrap().send(()).unwrap();
                    return Err(cancelled());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Err(CommandError::new(ErrorKind::Internal, "never cancelled"));
        }
        for round in 1..=3 {
            let p = Progress {
                round,
                pages_sent: u64::from(round) * 90_000,
                pages_total: 262_144,
                dirty_pages: 1000,
                bandwidth_mib_s: 700.0,
                projected_downtime_ms: Some(9.0),
                ..Progress::phase(Phase::Precopy)
            };
            progress.report(&p).map_err(|_| cancelled())?;
        }
        Ok(summary(&req.domain))
    }

    fn save(
        &self,
        req: &SaveRequest,
        _progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        self.seen.lock().unwrap().push(Seen::Save(req.clone()));
        Ok(summary(&req.domain))
    }

    fn restore(
        &self,
        req: &RestoreRequest,
        _progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        self.seen.lock().unwrap().push(Seen::Restore(req.clone()));
        Ok(DomainInfo {
            id: 9,
            name: "web1".into(),
            memory_bytes: 1 << 30,
            vcpus: 1,
            state: DomainState::Running,
            steps: Some(100),
        })
    }

    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        self.seen.lock().unwrap().push(Seen::Resolve(req.clone()));
        Ok(())
    }
}

struct Setup {
    dir: PathBuf,
    daemon: Option<Daemon>,
    backend: Arc<SimBackend>,
    ops: Arc<ScriptedOps>,
    started: mpsc::Receiver<()>,
    cancelled: mpsc::Receiver<()>,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = scratch(name);
        let backend = Arc::new(SimBackend::new(SimHypervisor::new(8 << 30, Drive::Manual)));
        let (started_tx, started) = mpsc::channel();
        let (cancelled_tx, cancelled) = mpsc::channel();
        let ops = Arc::new(ScriptedOps {
            backend: backend.clone(),
            seen: Mutex::new(Vec::new()),
            started: Mutex::new(started_tx),
            cancelled: Mutex::new(cancelled_tx),
        });
        let daemon = Daemon::start(
            DaemonConfig {
                control: dir.join("relocd.sock"),
                state_dir: dir.join("state"),
                listen: None,
                shutdown_grace: Duration::from_secs(5),
            },
            |_| DaemonParts {
                service: ops.clone(),
                admission: Arc::new(AdmitAll),
            },
        )
        .unwrap();
        Setup {
            dir,
            daemon: Some(daemon),
            backend,
            ops,
            started,
            cancelled,
        }
    }

    fn control(&self) -> PathBuf {
        self.dir.join("relocd.sock")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--control")
            .arg(self.control())
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        cmd
    }

    fn relocd(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn last_seen(&self) -> Seen {
        self.ops.seen.lock().unwrap().last().cloned().unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.daemon.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {out:?}"))
}

#[test]
fn migrate_sends_what_was_typed_and_prints_the_summary() {
    let s = Setup::new("migrate");
    let out = s.relocd(&["migrate", "-l", "-p", "8003", "web1", "fast"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        s.last_seen(),
        Seen::Migrate(MigrateRequest {
            domain: "web1".into(),
            host: "fast".into(),
            port: Some(8003),
            live: true,
            ..MigrateRequest::default()
        })
    );
    assert_eq!(
        text(&out.stdout),
        "migrated web1 to fast:8003 (live)\n  rounds      3\n  pages sent  270,000\n  \
         bytes sent  1.0 GiB (1,107,296,256 bytes)\n  bandwidth   704.0 MiB/s\n  \
         downtime    8.5 ms\n  total time  1.50 s\n"
    );
    // Not a terminal: no progress bar on stderr.
    assert_eq!(text(&out.stderr), "");

    let out = s.relocd(&[
        "migrate",
        "--json",
        "--live",
        "--downtime-limit",
        "30",
        "--bandwidth",
        "1G/s",
        "--max-iters",
        "5",
        "--abort-if-busy",
        "--auto-converge",
        "web1",
        "[::1]:9000",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        s.last_seen(),
        Seen::Migrate(MigrateRequest {
            domain: "web1".into(),
            host: "::1".into(),
            port: Some(9000),
            live: true,
            downtime_limit_ms: Some(30),
            bandwidth_bytes_per_s: Some(1 << 30),
            max_iters: Some(5),
            abort_if_busy: true,
            compress: false,
            no_zero_pages: false,
            auto_converge: true,
            ssl: false,
        })
    );
    assert_eq!(json(&out)["host"], "::1");
    let out = s.relocd(&["migrate", "web1", "[::1]"]);
    let headline = text(&out.stdout).lines().next().unwrap().to_owned();
    assert_eq!(headline, "migrated web1 to [::1]:8002 (offline)");
    // --ssl asks the daemon for TLS; the port it names defaults to 8003.
    let out = s.relocd(&["migrate", "--ssl", "web1", "[::1]"]);
    let Seen::Migrate(req) = s.last_seen() else {
        panic!("not a migrate")
    };
    assert!(req.ssl && req.port.is_none(), "{req:?}");
    let headline = text(&out.stdout).lines().next().unwrap().to_owned();
    assert_eq!(headline, "migrated web1 to [::1]:8003 (offline)");
}

#[test]
fn migrate_json_carries_the_figures() {
    let s = Setup::new("migrate-json");
    let out = s.relocd(&["migrate", "--json", "web1", "fast:8010"]);
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["kind"], "migrated");
    assert_eq!(v["domain"], "web1");
    assert_eq!(v["host"], "fast");
    assert_eq!(v["port"], 8010);
    assert_eq!(v["live"], false);
    assert_eq!(v["rounds"], 3);
    assert_eq!(v["pages_sent"], 270_000);
    assert_eq!(v["bytes_sent"], 1_107_296_256u64);
    assert_eq!(v["downtime_ms"], 8.5);
    assert_eq!(v["total_ms"], 1500.0);
    assert_eq!(v["bandwidth_mib_s"], 704.0);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(text(&out.stdout).lines().count(), 1);
}

#[test]
fn ctrl_c_cancels_and_says_the_guest_stays() {
    let s = Setup::new("cancel");
    for json_flag in [false, true] {
        let mut args = vec!["migrate", "--live", "web1", "slow"];
        if json_flag {
            args.push("--json");
        }
        let child = s
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The client installs its handler before it sends the request, so
        // once the daemon runs the command a SIGINT is the client's.
        s.started.recv_timeout(PATIENCE).unwrap();
        let status = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        s.cancelled.recv_timeout(PATIENCE).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("relocd: cancelling: web1 keeps running at the source"),
            "{err}"
        );
        // The daemon's word on the guest's fate, said once.
        if json_flag {
            let v = json(&out);
            assert_eq!(v["error"]["kind"], "cancelled");
            assert_eq!(
                v["error"]["message"],
                "migration cancelled; web1 keeps running here"
            );
        } else {
            assert!(
                err.lines()
                    .any(|l| l == "relocd: migration cancelled; web1 keeps running here"),
                "{err}"
            );
            assert_eq!(err.matches("keeps running here").count(), 1, "{err}");
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn save_restore_resolve_requests_and_output() {
    let s = Setup::new("save");
    let out = s.relocd(&["save", "web1", "web1.save"]);
    assert!(out.status.success(), "{out:?}");
    let file = s.dir.join("web1.save");
    assert_eq!(
        s.last_seen(),
        Seen::Save(SaveRequest {
            domain: "web1".into(),
            file: file.clone(),
            keep_running: false,
            live: false,
            bandwidth_bytes_per_s: None,
        })
    );
    let out = s.relocd(&["save", "--live", "--bandwidth", "8M", "web1", "web1.save"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        s.last_seen(),
        Seen::Save(SaveRequest {
            domain: "web1".into(),
            file: file.clone(),
            keep_running: false,
            live: true,
            bandwidth_bytes_per_s: Some(8 << 20),
        })
    );
    let first = text(&out.stdout).lines().next().unwrap().to_owned();
    assert_eq!(
        first,
        format!("saved web1 to {} (the guest is destroyed)", file.display())
    );
    let out = s.relocd(&["save", "-c", "--json", "web1", "web1.save"]);
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["kind"], "saved");
    assert_eq!(v["keep_running"], true);
    assert_eq!(v["file"], file.to_str().unwrap());
    for key in [
        "rounds",
        "pages_sent",
        "bytes_sent",
        "downtime_ms",
        "total_ms",
        "bandwidth_mib_s",
    ] {
        assert!(v[key].is_number(), "{key}: {v}");
    }

    std::fs::write(&file, b"x").unwrap();
    let out = s.relocd(&["restore", "web1.save"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        s.last_seen(),
        Seen::Restore(RestoreRequest { file: file.clone() })
    );
    assert_eq!(
        text(&out.stdout),
        format!(
            "restored web1 from {} as domain 9 (1.0 GiB, running)\n",
            file.display()
        )
    );
    let out = s.relocd(&["restore", "--json", "web1.save"]);
    assert_eq!(json(&out)["kind"], "restored");

    let out = s.relocd(&["resolve", "web1", "--discard"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        s.last_seen(),
        Seen::Resolve(ResolveRequest {
            domain: "web1".into(),
            action: ResolveAction::Discard,
        })
    );
    assert_eq!(text(&out.stdout), "web1: the copy here was discarded\n");
    let out = s.relocd(&["resolve", "--json", "--resume", "web1"]);
    let v = json(&out);
    assert_eq!(
        (v["kind"].as_str(), v["action"].as_str()),
        (Some("resolved"), Some("resume"))
    );
}

#[test]
fn usage_errors_exit_2_and_send_nothing() {
    let s = Setup::new("usage");
    let cases: [(&[&str], &str); 9] = [
        (&["migrate", "--bandwidth", "fast", "web1", "h"], "fast"),
        (&["migrate", "-p", "0", "web1", "h"], "port 0"),
        (&["migrate", "web1", "h:0"], "port 0"),
        (&["migrate", "-p", "1", "web1", "h:2"], "two ports"),
        (&["migrate", "--max-iters", "3", "web1", "h"], "--live"),
        (
            &["resolve", "web1", "--resume", "--discard"],
            "cannot be used with",
        ),
        (&["resolve", "web1"], "--resume|--discard"),
        (
            &[
                "sim",
                "create",
                "g",
                "--memory",
                "1G",
                "--dirty-rate",
                "1Q/s",
            ],
            "1Q/s",
        ),
        (&["save", "-c", "web1"], "FILE"),
    ];
    for (argv, needle) in cases {
        let out = s.relocd(argv);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{argv:?}: {err}");
        let mut with_json = argv.to_vec();
        with_json.push("--json");
        let out = s.relocd(&with_json);
        assert_eq!(out.status.code(), Some(2), "{with_json:?}");
        let v = json(&out);
        assert_eq!(v["error"]["kind"], "bad_request", "{with_json:?}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{with_json:?}: {v}"
        );
    }
    assert!(s.ops.seen.lock().unwrap().is_empty());
    assert!(s.backend.infos().is_empty());
    // --help is not an error.
    let out = s.relocd(&["migrate", "--help", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Exit status:"));
}
