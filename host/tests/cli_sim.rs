//! `relocd serve --backend sim` as a process with the client commands run
//! as processes: `sim create`, `list --json` (the guest runs, its step
//! counter moves), refusals (name taken, no capacity), the guests file,
//! and the migration commands answering the daemon's typed errors.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_relocd");
/// Upper bound on waiting for the daemon (a bound against hangs, not a
/// timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// A `relocd serve --backend sim` process.
struct Serve {
    child: Child,
    control: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn spawn(dir: &Scratch, extra: &[&str]) -> Serve {
        let control = dir.path("relocd.sock");
        let config = dir.path("xend-config.sxp");
        std::fs::write(&config, "(xend-relocation-server no)\n").unwrap();
        let mut child = Command::new(BIN)
            .arg("--control")
            .arg(&control)
            .args(["serve", "--backend", "sim", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path("state"))
            .args(extra)
            .env("RELOCD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }
        });
        Serve {
            child,
            control,
            log,
            lines,
        }
    }

    fn start(dir: &Scratch, extra: &[&str]) -> Serve {
        let s = Serve::spawn(dir, extra);
        s.wait_for("relocd ready");
        s
    }

    fn wait_for(&self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line with {text:?}; log so far:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    fn relocd(&self, args: &[&str]) -> Output {
        relocd(&self.control, args)
    }

    fn list(&self) -> Vec<Value> {
        let out = self.relocd(&["list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["domains"].as_array().unwrap().clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relocd(control: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--control")
        .arg(control)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {out:?}"))
}

fn steps_of(domains: &[Value], name: &str) -> u64 {
    let d = domains
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {domains:?}"));
    d["steps"].as_u64().unwrap()
}

#[test]
fn sim_create_then_list_shows_a_running_guest_whose_steps_go_on() {
    let dir = Scratch::new("create");
    let serve = Serve::start(&dir, &["--sim-capacity", "4G"]);

    let out = serve.relocd(&[
        "sim",
        "create",
        "web1",
        "--memory",
        "1G",
        "--dirty-rate",
        "64M/s",
        "--pattern",
        "hot",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.starts_with("created web1 as domain "), "{text}");
    assert!(text.contains("1.0 GiB"), "{text}");
    assert!(text.contains("64.0 MiB/s (hot)"), "{text}");

    let out = serve.relocd(&["sim", "create", "db1", "--memory", "256M", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let created = json(&out);
    assert_eq!(created["kind"], "created");
    assert_eq!(created["name"], "db1");
    assert_eq!(created["memory_bytes"], 256u64 << 20);
    assert_eq!(created["state"], "running");

    let domains = serve.list();
    assert_eq!(domains.len(), 2);
    let web1 = &domains[0];
    assert_eq!(web1["name"], "web1");
    assert_eq!(web1["state"], "running");
    assert_eq!(web1["memory_bytes"], 1u64 << 30);
    assert_eq!(web1["vcpus"], 1);
    let first = steps_of(&domains, "web1");

    // The workload runs in real time: the counter moves on.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = steps_of(&serve.list(), "web1");
        if now > first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "steps stuck at {first} for {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The table shows it too.
    let out = serve.relocd(&["list"]);
    let table = stdout(&out);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("web1 "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[2..], ["1024", "1", "running"]);
}

#[test]
fn name_taken_and_no_capacity_are_clear_refusals() {
    let dir = Scratch::new("refuse");
    let serve = Serve::start(&dir, &["--sim-capacity", "1G"]);
    let ok = serve.relocd(&["sim", "create", "web1", "--memory", "768M"]);
    assert!(ok.status.success(), "{ok:?}");

    let taken = serve.relocd(&["sim", "create", "web1", "--memory", "4K"]);
    assert_eq!(taken.status.code(), Some(1), "{taken:?}");
    assert_eq!(
        stderr(&taken).trim(),
        "relocd: cannot create `web1`: a domain of that name already exists"
    );
    let taken = serve.relocd(&["sim", "create", "web1", "--memory", "4K", "--json"]);
    assert_eq!(taken.status.code(), Some(1));
    assert_eq!(json(&taken)["error"]["kind"], "exists");

    let full = serve.relocd(&["sim", "create", "web2", "--memory", "512M"]);
    assert_eq!(full.status.code(), Some(1), "{full:?}");
    let msg = stderr(&full);
    assert!(
        msg.contains(
            "cannot create web2: not enough free memory for web2 (needs 512 MiB, has 256 MiB)"
        ),
        "{msg}"
    );
    let full = serve.relocd(&["sim", "create", "web2", "--memory", "512M", "--json"]);
    assert_eq!(json(&full)["error"]["kind"], "refused");

    // Nothing was created by the refusals.
    assert_eq!(serve.list().len(), 1);
}

#[test]
fn guests_file_creates_guests_at_start_up() {
    let dir = Scratch::new("guests");
    let file = dir.path("guests");
    std::fs::write(
        &file,
        "# two guests\nweb1 memory=64M dirty-rate=1M/s pattern=hot\ndb1 memory=32M   # idle\n",
    )
    .unwrap();
    let serve = Serve::start(&dir, &["--guests", file.to_str().unwrap()]);
    let domains = serve.list();
    let names: Vec<&str> = domains
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web1", "db1"]);
    assert!(domains.iter().all(|d| d["state"] == "running"));
}

#[test]
fn bad_guests_file_stops_serve_with_the_line() {
    let dir = Scratch::new("badguests");
    let file = dir.path("guests");
    std::fs::write(&file, "web1 memory=64M\nweb2 memory=lots\n").unwrap();
    let mut serve = Serve::spawn(&dir, &["--guests", file.to_str().unwrap()]);
    let status = serve.child.wait().unwrap();
    // a file the command cannot use: 2, as for a bad config
    assert_eq!(status.code(), Some(2));
    let line = serve.wait_for(&format!("relocd: {}: ", file.display()));
    assert!(line.contains("line 2"), "{line}");
    assert!(line.contains("lots"), "{line}");

    // A guests file larger than the capacity: refused after start-up, and
    // the daemon leaves no socket behind.
    std::fs::write(&file, "web1 memory=2G\n").unwrap();
    let mut serve = Serve::spawn(
        &dir,
        &["--guests", file.to_str().unwrap(), "--sim-capacity", "1G"],
    );
    let status = serve.child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let line = serve.wait_for(&format!("relocd: {}: ", file.display()));
    assert!(line.contains("not enough free memory for web1"), "{line}");
    assert!(!serve.control.exists());
}

#[test]
fn migration_commands_get_the_daemons_typed_error() {
    let dir = Scratch::new("typed");
    let serve = Serve::start(&dir, &[]);
    let ok = serve.relocd(&["sim", "create", "web1", "--memory", "64M"]);
    assert!(ok.status.success(), "{ok:?}");
    let save_file = dir.path("web1.save");
    std::fs::write(&save_file, b"not really").unwrap();
    let save_file = save_file.to_str().unwrap();
    // A directory where the file should go: refused before the guest is
    // touched, nothing written.
    let nowhere = dir.path("adir");
    std::fs::create_dir(&nowhere).unwrap();
    let nowhere = nowhere.to_str().unwrap();
    // Each fails, with the daemon's typed error, and leaves the guest running.
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["migrate", "--live", "web1", "127.0.0.1:9"],
            "network",
            "connection refused",
        ),
        (&["save", "web1", nowhere], "bad_request", "is a directory"),
        (&["restore", save_file], "bad_request", "web1.save"),
        (&["resolve", "web1", "--resume"], "refused", "not in doubt"),
    ];
    for (argv, kind, needle) in cases {
        let out = serve.relocd(argv);
        assert_eq!(out.status.code(), Some(1), "{argv:?}: {out:?}");
        let text = stderr(&out);
        assert!(text.starts_with("relocd: "), "{argv:?}: {text}");
        assert!(text.contains(needle), "{argv:?}: {text}");
        assert!(out.stdout.is_empty(), "{argv:?}: {out:?}");
        let mut with_json = argv.to_vec();
        with_json.push("--json");
        let out = serve.relocd(&with_json);
        assert_eq!(out.status.code(), Some(1));
        let v = json(&out);
        assert_eq!(v["error"]["kind"], kind, "{argv:?}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{argv:?}: {v}"
        );
    }
    // The guest was not touched; nothing was written.
    assert_eq!(serve.list()[0]["state"], "running");
    assert!(!dir.path("adir.tmp").exists());
    assert_eq!(std::fs::read_dir(nowhere).unwrap().count(), 0);
}

#[test]
fn no_daemon_is_a_failure_that_names_the_socket() {
    let dir = Scratch::new("nodaemon");
    let control = dir.path("none.sock");
    let out = relocd(&control, &["migrate", "web1", "hostb"]);
    assert_eq!(out.status.code(), Some(1));
    let msg = stderr(&out);
    assert!(msg.contains("cannot reach relocd"), "{msg}");
    assert!(msg.contains(control.to_str().unwrap()), "{msg}");
    let out = relocd(
        &control,
        &["sim", "create", "g", "--memory", "4K", "--json"],
    );
    assert_eq!(json(&out)["error"]["kind"], "network");
}

/// A user who may not use root's management socket is told it is a
/// permission problem and whose socket it is, not "is relocd running?".
#[test]
fn a_user_other_than_root_is_told_the_socket_is_roots() {
    // Only root can run the client as another user here.
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root, to run the client as another user");
        return;
    }
    let dir = Scratch::new("denied");
    let serve = Serve::start(&dir, &[]);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg("--control")
        .arg(&serve.control)
        .args(["list", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs the client as nobody");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "permission_denied", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(msg.contains("root"), "{msg}");
    assert!(!msg.contains("is `relocd serve` running"), "{msg}");
}

#[test]
fn sigterm_stops_serve_with_running_guests() {
    let dir = Scratch::new("sigterm");
    let mut serve = Serve::start(&dir, &[]);
    let ok = serve.relocd(&[
        "sim",
        "create",
        "web1",
        "--memory",
        "64M",
        "--dirty-rate",
        "1M/s",
    ]);
    assert!(ok.status.success(), "{ok:?}");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(serve.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(serve.child.wait().unwrap().success());
    serve.wait_for("relocd stopped");
    assert!(!serve.control.exists());
}

/// `--control` goes before or after the subcommand, and is not offered by
/// the commands that do not talk to the daemon; `--listen` without an
/// address is a usage error (exit 2) that shows the expected form.
#[test]
fn control_placement_and_listen_form() {
    let dir = Scratch::new("control");
    let serve = Serve::start(&dir, &[]);
    let after = Command::new(BIN)
        .args(["list", "--json", "--control"])
        .arg(&serve.control)
        .output()
        .unwrap();
    assert!(after.status.success(), "{after:?}");
    assert!(serve.relocd(&["list"]).status.success());
    for cmd in ["inspect", "check-host", "demo"] {
        let help = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(help.status.success());
        assert!(
            !stdout(&help).contains("--control"),
            "{cmd} --help offers --control"
        );
    }
    let help = Command::new(BIN)
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&help).contains("--control"));
    let bad = Command::new(BIN)
        .args(["serve", "--listen", "41008", "--state-dir"])
        .arg(dir.path("state"))
        .arg("--control")
        .arg(dir.path("x.sock"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(stderr(&bad).contains("ADDR:PORT"), "{}", stderr(&bad));
    assert!(!dir.path("x.sock").exists());
}

/// Issue 13: `serve --max-transfer-time` bounds an admitted session from
/// its admission to a complete image, however it progresses: a hand-made
/// source that sends one real page every 200 ms (progress, within
/// `--io-timeout`) is aborted with the typed reason and the limit in
/// words, and no half-built guest is left.
#[test]
fn max_transfer_time_bounds_an_admitted_session() {
    use relocd::session::{ImageEncoder, LibxcEncoder};
    use relocd_core::guest::{GuestInfo, GuestType, PageType, PAGE_SIZE};
    use relocd_core::protocol::msg::{self, Msg};
    use relocd_core::protocol::{AbortReason, Features, PROTOCOL_VERSION};
    use std::io::{Read, Write};

    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&help).contains("--max-transfer-time"));
    let dir = Scratch::new("transfer");
    let serve = Serve::spawn(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--io-timeout",
            "1",
            "--max-transfer-time",
            "2",
        ],
    );
    let line = serve.wait_for("relocation listener ready");
    let addr = line
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    serve.wait_for("relocd ready");

    let frame = |m: &Msg<'_>| {
        let mut b = vec![0u8; 16 * 1024];
        let n = msg::encode(m, &mut b).unwrap();
        b.truncate(n);
        b
    };
    let read_body = |s: &mut std::net::TcpStream| {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).ok()?;
        let mut body = vec![0u8; msg::frame_len(h, msg::MAX_CONTROL_FRAME_LEN).unwrap()];
        s.read_exact(&mut body).ok()?;
        Some(body)
    };
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(&frame(&Msg::Hello(msg::Hello {
        magic: msg::MAGIC,
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        features: Features::LIVE,
    })))
    .unwrap();
    assert!(matches!(
        msg::decode(&read_body(&mut s).unwrap()),
        Ok(Msg::HelloAck(_))
    ));
    let pages = 1024;
    s.write_all(&frame(&Msg::Admit(msg::Admit {
        session: 77,
        name: "slow1",
        uuid: [7; 16],
        memory_bytes: pages * PAGE_SIZE as u64,
        p2m_size: pages,
        vcpus: 1,
        guest_type: 2,
        live: true,
    })))
    .unwrap();
    assert_eq!(msg::decode(&read_body(&mut s).unwrap()), Ok(Msg::Admitted));
    assert_eq!(serve.list().len(), 1, "the paused, half-built guest");

    // The destination's answer, read as it comes.
    let (tx, rx) = mpsc::channel();
    let mut reader = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = tx.send(read_body(&mut reader));
    });
    let info = GuestInfo {
        guest_type: GuestType::Hvm,
        p2m_size: pages,
        nr_pages: pages,
        vcpus: 1,
    };
    let mut enc = LibxcEncoder::new();
    let mut chunk = Vec::new();
    enc.start(&info, &mut chunk).unwrap();
    enc.static_end(&mut chunk).unwrap();
    let since = Instant::now();
    let answer = loop {
        if let Ok(a) = rx.try_recv() {
            break a;
        }
        assert!(
            since.elapsed() < PATIENCE,
            "still admitted after {PATIENCE:?}"
        );
        let page = [since.elapsed().as_millis() as u8; PAGE_SIZE];
        enc.pages(&[1], &[PageType::NOTAB], &[&page], &mut chunk)
            .unwrap();
        chunk.extend_from_slice(&page);
        let _ = s.write_all(&frame(&Msg::Image(&chunk)));
        chunk.clear();
        std::thread::sleep(Duration::from_millis(200));
    };
    let body = answer.expect("an Abort");
    let Ok(Msg::Abort(a)) = msg::decode(&body) else {
        panic!("{:?}", msg::decode(&body))
    };
    assert_eq!(a.reason, AbortReason::TransferTooLong);
    assert_eq!(a.detail, "took longer than 2 s from admission to prepared");
    let deadline = Instant::now() + PATIENCE;
    while !serve.list().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", serve.list());
        std::thread::sleep(Duration::from_millis(20));
    }
}
