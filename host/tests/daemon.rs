//! `relocd serve` as a process: the management socket, `relocd list`, a
//! second daemon on the same socket, SIGTERM, hosts-allow refusals and bad
//! control input. Each test runs its own daemon with its own socket, state
//! directory and port.

use relocd::api::{ErrorKind, MigrateRequest, Outcome, PingInfo, Reply, Request, MAX_LINE};
use relocd::client::{call_once, Client, ClientError};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_relocd");
/// Upper bound on waiting for a daemon's log line (a bound against hangs,
/// not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// A `relocd serve` process and its log.
struct Daemon {
    child: Child,
    control: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    /// The thread copying stderr into `log`; joined after the process ends
    /// so that its last lines are in the log before anyone reads it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn spawn(control: &Path, args: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("--control")
            .arg(control)
            .arg("serve")
            .args(args)
            .env("RELOCD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }
        });
        Daemon {
            child,
            control: control.to_owned(),
            log,
            lines,
            reader: Some(reader),
        }
    }

    /// Starts a daemon and waits for its "relocd ready" line.
    fn start(control: &Path, args: &[&str]) -> Daemon {
        let d = Daemon::spawn(control, args);
        d.wait_for("relocd ready");
        d
    }

    /// Waits for a log line containing `text`; returns it.
    fn wait_for(&self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line with {text:?}; log so far:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn ping(&self) -> PingInfo {
        match call_once(&self.control, &Request::Ping).unwrap() {
            Outcome::Pong(info) => info,
            other => panic!("{other:?}"),
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relocd(control: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--control")
        .arg(control)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn serve_answers_list_and_stops_cleanly_on_sigterm() {
    let dir = Scratch::new("sigterm");
    let control = dir.path("run/relocd.sock");
    let state = dir.path("state");
    let config = dir.config("(xend-relocation-server no)\n");
    let mut daemon = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );

    // Ping reports the bound port; the port accepts connections.
    let info = daemon.ping();
    assert_eq!(info.pid, daemon.child.id());
    assert_eq!(info.backend, "sim");
    assert_eq!(info.control, control);
    assert_eq!(info.state_dir, state);
    let listen: std::net::SocketAddr = info.listen.as_deref().unwrap().parse().unwrap();
    assert_eq!(listen.ip().to_string(), "127.0.0.1");
    assert_ne!(listen.port(), 0);
    TcpStream::connect(listen).unwrap();

    // Root only: the socket is 0600 and the directory relocd created 0700.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&control), 0o600);
    assert_eq!(mode(control.parent().unwrap()), 0o700);
    assert!(state.join("journal.jsonl").exists());

    let out = relocd(&control, &["list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "domains": [] }));

    let out = relocd(&control, &["list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["Name", "ID", "Mem(MiB)", "VCPUs", "State"]);

    daemon.signal("TERM");
    let status = daemon.wait();
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(!control.exists(), "the socket must be removed");
    assert!(
        TcpStream::connect(listen).is_err(),
        "the port must be closed"
    );
    let log = daemon.log_text();
    assert!(log.contains("stopping signal=\"SIGTERM\""), "{log}");
    assert!(log.contains("relocd stopped"), "{log}");

    // The client now says clearly that no daemon is there.
    let out = relocd(&control, &["list"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach relocd at"), "{err}");
    let out = relocd(&control, &["--json", "list"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "network");
}

#[test]
fn sigint_also_stops_cleanly() {
    let dir = Scratch::new("sigint");
    let control = dir.path("relocd.sock");
    let config = dir.config("");
    let mut daemon = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    daemon.signal("INT");
    assert_eq!(daemon.wait().code(), Some(0));
    assert!(!control.exists());
}

#[test]
fn second_serve_on_the_same_socket_refuses_while_the_first_lives() {
    let dir = Scratch::new("second");
    let control = dir.path("relocd.sock");
    let config = dir.config("");
    let first = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state1").to_str().unwrap(),
        ],
    );
    let out = relocd(
        &control,
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state2").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("already serving on {}", control.display()))
            && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    // It gave up before touching its state directory, and left the first
    // daemon's socket alone.
    assert!(!dir.path("state2").exists());
    assert_eq!(first.ping().pid, first.child.id());
}

#[test]
fn second_serve_on_the_same_state_dir_refuses() {
    let dir = Scratch::new("samestate");
    let config = dir.config("");
    let state = dir.path("state");
    let _first = Daemon::start(
        &dir.path("one.sock"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let second = dir.path("two.sock");
    let out = relocd(
        &second,
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is in use by another relocd"), "{err}");
    assert!(!second.exists(), "the refused daemon removes its socket");
}

#[test]
fn listen_port_in_use_is_an_error_that_leaves_no_socket() {
    let dir = Scratch::new("portbusy");
    let config = dir.config("");
    let control = dir.path("relocd.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = relocd(
        &control,
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
            "--listen",
            &addr,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("relocation listener on {addr}")),
        "{err}"
    );
    assert!(!control.exists());
}

#[test]
fn stale_socket_is_replaced() {
    let dir = Scratch::new("stale");
    let control = dir.path("relocd.sock");
    drop(UnixListener::bind(&control).unwrap()); // the file stays, nobody listens
    assert!(control.exists());
    let config = dir.config("");
    let daemon = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    assert_eq!(daemon.ping().pid, daemon.child.id());
    assert!(daemon
        .log_text()
        .contains("replacing a stale management socket"));
}

#[test]
fn a_daemon_killed_with_sigkill_leaves_nothing_in_the_way() {
    let dir = Scratch::new("sigkill");
    let control = dir.path("relocd.sock");
    let config = dir.config("");
    let state = dir.path("state");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let mut first = Daemon::start(&control, &args);
    first.signal("KILL");
    first.wait();
    assert!(control.exists(), "SIGKILL leaves the socket file behind");
    let second = Daemon::start(&control, &args);
    assert_eq!(second.ping().pid, second.child.id());
}

#[test]
fn a_regular_file_at_the_socket_path_is_not_replaced() {
    let dir = Scratch::new("notsock");
    let control = dir.path("relocd.sock");
    std::fs::write(&control, "precious").unwrap();
    let config = dir.config("");
    let out = relocd(
        &control,
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&control).unwrap(), "precious");
}

#[test]
fn without_relocation_server_it_says_why_and_serves_the_socket() {
    let dir = Scratch::new("noserver");
    let control = dir.path("relocd.sock");
    let config = dir.config("(xend-relocation-port 8002)\n");
    let daemon = Daemon::spawn(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    let line = daemon.wait_for("not listening for relocations");
    assert!(
        line.contains("(xend-relocation-server yes) is not set"),
        "{line}"
    );
    assert!(line.contains(config.to_str().unwrap()), "{line}");
    daemon.wait_for("relocd ready");
    assert_eq!(daemon.ping().listen, None);
}

#[test]
fn xen_backend_without_xen_is_a_clear_error() {
    if std::path::Path::new("/dev/xen/privcmd").exists() {
        eprintln!("this machine has Xen: the no-Xen error cannot be shown here");
        return;
    }
    let dir = Scratch::new("xen");
    let control = dir.path("relocd.sock");
    let out = relocd(
        &control,
        &[
            "serve",
            "--backend",
            "xen",
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no Xen here"), "{err}");
    assert!(err.contains("/dev/xen/privcmd"), "{err}");
    assert!(!control.exists());
    let out = relocd(&control, &["--json", "serve", "--backend", "xen"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "config");
}

#[test]
fn config_warnings_are_printed() {
    let dir = Scratch::new("warn");
    let control = dir.path("relocd.sock");
    let config = dir.config("(xend-relocation-port 8002)\n(xend-relocation-port 9000)\n");
    let daemon = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(config.to_str().unwrap())),
        "{log}"
    );
}

#[test]
fn peer_refused_by_hosts_allow_is_closed_unread() {
    let dir = Scratch::new("refused");
    let control = dir.path("relocd.sock");
    // Neither 127.0.0.1 nor localhost matches.
    let config = dir.config(
        "(xend-relocation-server yes)\n(xend-relocation-hosts-allow '^nowhere\\\\.example$')\n",
    );
    let daemon = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let listen = daemon.ping().listen.unwrap();
    let mut peer = TcpStream::connect(&listen).unwrap();
    let local = peer.local_addr().unwrap();
    peer.write_all(b"relocd hello, please read me").unwrap();
    let mut buf = Vec::new();
    match peer.read_to_end(&mut buf) {
        Ok(_) => assert!(buf.is_empty(), "a refused peer gets no bytes: {buf:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let line = daemon.wait_for("relocation connection refused");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("peer={local}")), "{line}");
    // The peer was named (reverse lookup, forward confirmation) for the log.
    assert!(line.contains("name=localhost"), "{line}");
    // No session was started for it.
    assert!(!daemon.log_text().contains("relocation session admitted"));
}

#[test]
fn control_socket_rejects_bad_input_with_typed_errors() {
    let dir = Scratch::new("badinput");
    let control = dir.path("relocd.sock");
    let config = dir.config("");
    let daemon = Daemon::start(
        &control,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );

    // Not a request, then a command with no implementation yet: typed errors,
    // and the connection stays usable.
    let mut conn = UnixStream::connect(&control).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut reply = |conn: &mut UnixStream, line: &[u8]| -> Reply {
        conn.write_all(line).unwrap();
        let mut text = String::new();
        reader.read_line(&mut text).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let r = reply(&mut conn, b"{\"cmd\":\"reboot\"}\n");
    assert!(
        matches!(r, Reply::Error(ref e) if e.kind == ErrorKind::BadRequest),
        "{r:?}"
    );
    let r = reply(&mut conn, b"\xff\xfe not json\n");
    assert!(
        matches!(r, Reply::Error(ref e) if e.kind == ErrorKind::BadRequest),
        "{r:?}"
    );
    // Deep nesting is refused by the parser's depth limit, not a stack
    // overflow.
    let mut deep = "[".repeat(100_000).into_bytes();
    deep.push(b'\n');
    let r = reply(&mut conn, &deep);
    assert!(
        matches!(r, Reply::Error(ref e) if e.kind == ErrorKind::BadRequest),
        "{r:?}"
    );
    let r = reply(&mut conn, b"{\"cmd\":\"ping\"}\n");
    assert!(
        matches!(
            r,
            Reply::Ok {
                result: Outcome::Pong(_)
            }
        ),
        "{r:?}"
    );
    drop(conn);

    let mut client = Client::connect(&control).unwrap();
    let err = client
        .call(
            &Request::Migrate(MigrateRequest {
                domain: "web1".into(),
                host: "hostb".into(),
                live: true,
                ..MigrateRequest::default()
            }),
            |p| panic!("no progress expected: {p:?}"),
        )
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Remote(ref e) if e.kind == ErrorKind::NotFound),
        "{err}"
    );
    // The same connection carries the next request.
    assert!(matches!(
        client.call(&Request::List, |_| {}).unwrap(),
        Outcome::Domains { .. }
    ));

    // An oversize line: an error reply, then the daemon closes.
    let mut conn = UnixStream::connect(&control).unwrap();
    let mut big = vec![b'x'; MAX_LINE + 1];
    big.push(b'\n');
    conn.write_all(&big).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut text = String::new();
    reader.read_line(&mut text).unwrap();
    let r: Reply = serde_json::from_str(&text).unwrap();
    assert!(
        matches!(r, Reply::Error(ref e) if e.kind == ErrorKind::LineTooLong),
        "{r:?}"
    );
    text.clear();
    assert_eq!(
        reader.read_line(&mut text).unwrap(),
        0,
        "closed after: {text}"
    );

    // The daemon is unharmed.
    assert_eq!(daemon.ping().pid, daemon.child.id());
}

/// A hosts-allow pattern relocd refuses is named with its file and line,
/// as every other config error is, and `serve` and `check-host` exit alike
/// (2: a config the command cannot use).
#[test]
fn a_bad_hosts_allow_names_the_file_and_line_and_exits_like_check_host() {
    let dir = Scratch::new("badacl");
    let control = dir.path("relocd.sock");
    let config = dir.config(
        "# a comment\n(xend-relocation-server yes)\n\
         (xend-relocation-hosts-allow '^(a)\\\\1$')\n",
    );
    let path = config.to_str().unwrap();
    let serve = relocd(
        &control,
        &[
            "serve",
            "--config",
            path,
            "--state-dir",
            dir.path("state").to_str().unwrap(),
        ],
    );
    let check = relocd(
        &control,
        &["check-host", "--config", path, "--ip", "10.0.0.1"],
    );
    for (what, out) in [("serve", &serve), ("check-host", &check)] {
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{path}: line 3, column ")),
            "{what}: {err}"
        );
        assert!(err.contains("xend-relocation-hosts-allow"), "{what}: {err}");
    }
    assert!(!control.exists());
}

/// The `mappings=N` of a "residency trim" log line.
fn trimmed_mappings(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("mappings="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no mappings= in {line:?}"))
}

#[test]
fn daemons_that_dropped_their_code_pages_still_migrate_a_guest() {
    // Both daemons drop their read-only file pages after start-up and again
    // each time they fall idle; code that runs afterwards faults back in. A
    // live migration there and back after those trims must work as ever.
    let dir = Scratch::new("trim");
    let config = dir.config("(xend-relocation-server no)\n");
    let (src_sock, dst_sock) = (dir.path("src.sock"), dir.path("dst.sock"));
    let (src_state, dst_state) = (dir.path("src-state"), dir.path("dst-state"));
    let args = |state: &Path| {
        [
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--state-dir".to_owned(),
            state.to_str().unwrap().to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]
    };
    let (src_args, dst_args) = (args(&src_state), args(&dst_state));
    let src = Daemon::spawn(&src_sock, &src_args.each_ref().map(String::as_str));
    let dst = Daemon::spawn(&dst_sock, &dst_args.each_ref().map(String::as_str));
    for d in [&src, &dst] {
        let line = d.wait_for("residency trim");
        assert!(line.contains("when=\"start-up\""), "{line}");
        assert!(trimmed_mappings(&line) > 0, "nothing was trimmed: {line}");
        d.wait_for("relocd ready");
    }
    let addr = |d: &Daemon| d.ping().listen.unwrap();
    let (src_addr, dst_addr) = (addr(&src), addr(&dst));
    // Each management connection ends in an idle trim.
    src.wait_for("when=\"idle\"");
    dst.wait_for("when=\"idle\"");

    let out = relocd(&src_sock, &["sim", "create", "g1", "--memory", "64M"]);
    assert!(out.status.success(), "{out:?}");
    src.wait_for("when=\"idle\"");
    let out = relocd(&src_sock, &["migrate", "--live", "g1", &dst_addr]);
    assert!(out.status.success(), "{out:?}\n{}", src.log_text());
    // The receiving session's end is an idle point too.
    let line = dst.wait_for("when=\"idle\"");
    assert!(trimmed_mappings(&line) > 0, "{line}");
    let listed = |sock: &Path| {
        let out = relocd(sock, &["list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["domains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&dst_sock), ["g1"]);
    assert!(listed(&src_sock).is_empty());

    // And back, after both have trimmed again.
    src.wait_for("when=\"idle\"");
    dst.wait_for("when=\"idle\"");
    let out = relocd(&dst_sock, &["migrate", "--live", "g1", &src_addr]);
    assert!(out.status.success(), "{out:?}\n{}", dst.log_text());
    assert_eq!(listed(&src_sock), ["g1"]);
    assert!(listed(&dst_sock).is_empty());
}
