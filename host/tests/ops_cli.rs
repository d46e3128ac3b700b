//! Operating relocd like a Xen tool, with the binary as a process:
//! `relocd status` (and `--watch --json`) while a bandwidth-capped sim
//! migration runs, at both ends, and with nothing in flight; `--version`;
//! readiness told to systemd through `$NOTIFY_SOCKET`; log lines for the
//! journal under `$JOURNAL_STREAM`, unchanged otherwise; the man pages and
//! completions `gen-docs` writes from the command-line definitions, each
//! page rendered by `man -l`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_relocd");
/// Upper bound on waiting (a bound against hangs, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(90);

/// `relocd --control NAME.sock serve --backend sim --sim-capacity 1G
/// --config NAME.sxp --state-dir NAME-state` in `dir`, the configuration
/// file holding `config`, with no `$NOTIFY_SOCKET`, stdin and stdout
/// null; and its control socket's path.
fn serve_command(dir: &Scratch, name: &str, config: &str) -> (Command, PathBuf) {
    let control = dir.path(&format!("{name}.sock"));
    let config_file = dir.path(&format!("{name}.sxp"));
    std::fs::write(&config_file, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--control")
        .arg(&control)
        .args([
            "serve",
            "--backend",
            "sim",
            "--sim-capacity",
            "1G",
            "--config",
        ])
        .arg(&config_file)
        .arg("--state-dir")
        .arg(dir.path(&format!("{name}-state")))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    (cmd, control)
}

/// A `relocd serve --backend sim` process; killed when dropped.
struct Serve {
    child: Child,
    control: PathBuf,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Serve {
    fn spawn(dir: &Scratch, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Serve {
        let (mut cmd, control) = serve_command(dir, name, "(xend-relocation-server no)\n");
        cmd.args(extra)
            .env_remove("JOURNAL_STREAM")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
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
        Serve {
            child,
            control,
            lines,
            log: Vec::new(),
        }
    }

    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
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

    fn relocd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn status(&self) -> Vec<Value> {
        let out = self.relocd(&["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out:?}"));
        v["sessions"].as_array().expect("sessions").clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address after `listen=` in a log line.
fn listen_addr(line: &str) -> String {
    line.split("listen=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listen= in {line:?}"))
        .to_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

const NOTHING: &str = "nothing in flight: no migration, save or restore is running on this host\n";

#[test]
fn status_follows_a_capped_migration_at_both_ends_and_says_when_nothing_is_in_flight() {
    let dir = Scratch::new("status");
    let mut a = Serve::spawn(&dir, "a", &[], &[]);
    a.wait_for("relocd ready");
    let mut b = Serve::spawn(&dir, "b", &["--listen", "127.0.0.1:0"], &[]);
    let to = listen_addr(&b.wait_for("relocation listener ready"));
    b.wait_for("relocd ready");

    // Nothing in flight: said so, and an empty list in JSON.
    let out = a.relocd(&["status"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), NOTHING);
    assert!(a.status().is_empty());

    let out = a.relocd(&[
        "sim",
        "create",
        "g1",
        "--memory",
        "64M",
        "--dirty-rate",
        "8M/s",
        "--fill",
        "100",
    ]);
    assert!(out.status.success(), "{out:?}");
    // 64 MiB, no zero page (a cap paces the bytes on the wire) at 16 MiB/s, and a downtime target no round can meet: several
    // rounds of a few seconds in all, up to --max-iters.
    let mut migrate = Command::new(BIN)
        .arg("--control")
        .arg(&a.control)
        .args([
            "migrate",
            "--live",
            "--bandwidth",
            "16M/s",
            "--downtime-limit",
            "1",
            "--max-iters",
            "6",
            "g1",
            &to,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `--watch --json` alongside: one JSON object a line.
    let mut watch = Command::new(BIN)
        .arg("--control")
        .arg(&a.control)
        .args(["status", "--watch", "--json", "--interval", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut seen_out: Vec<Value> = Vec::new();
    let mut seen_in: Vec<Value> = Vec::new();
    let mut text_seen = None;
    let deadline = Instant::now() + PATIENCE;
    let migrated = loop {
        if let Some(status) = migrate.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the migration did not end");
        let here = a.status();
        if let Some(s) = here.first() {
            assert_eq!(here.len(), 1, "{here:?}");
            seen_out.push(s.clone());
            if text_seen.is_none() && s["phase"] == "precopy" {
                text_seen = Some(stdout(&a.relocd(&["status"])));
            }
        }
        if let Some(s) = b.status().first() {
            seen_in.push(s.clone());
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    let out = migrate.wait_with_output().unwrap();
    assert!(migrated.success(), "{out:?}");

    // The source's view: its domain, peer and direction, the phase moving
    // from before the pre-copy into it, the round moving, the figures.
    assert!(
        seen_out.len() >= 5,
        "only {} looks: {seen_out:?}",
        seen_out.len()
    );
    for s in &seen_out {
        assert_eq!(s["domain"], "g1");
        assert_eq!(s["direction"], "outgoing");
        assert_eq!(s["peer"], to.as_str());
        assert_eq!(s["pages_total"], 16384);
    }
    let phases: Vec<&str> = seen_out
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    let first_precopy = phases
        .iter()
        .position(|p| *p == "precopy")
        .unwrap_or_else(|| panic!("never in pre-copy: {phases:?}"));
    assert!(
        phases[..first_precopy]
            .iter()
            .all(|p| ["connecting", "negotiating"].contains(p)),
        "{phases:?}"
    );
    let rounds: BTreeSet<u64> = seen_out
        .iter()
        .filter(|s| s["phase"] == "precopy")
        .map(|s| s["round"].as_u64().unwrap())
        .collect();
    assert!(
        rounds.len() >= 2 && rounds.contains(&1),
        "rounds seen: {rounds:?}"
    );
    let rounds_in_order: Vec<u64> = seen_out
        .iter()
        .filter(|s| s["phase"] == "precopy")
        .map(|s| s["round"].as_u64().unwrap())
        .collect();
    assert!(
        rounds_in_order.windows(2).all(|w| w[0] <= w[1]),
        "{rounds_in_order:?}"
    );
    let sent: Vec<u64> = seen_out
        .iter()
        .map(|s| s["pages_sent"].as_u64().unwrap())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    assert!(*sent.last().unwrap() >= 16384, "{sent:?}");
    let elapsed: Vec<f64> = seen_out
        .iter()
        .map(|s| s["elapsed_ms"].as_f64().unwrap())
        .collect();
    assert!(elapsed.windows(2).all(|w| w[0] <= w[1]), "{elapsed:?}");
    // From round 2 on: the last round's dirty rate and a projected downtime.
    let later: Vec<&Value> = seen_out
        .iter()
        .filter(|s| s["phase"] == "precopy" && s["round"].as_u64() >= Some(2))
        .collect();
    assert!(!later.is_empty());
    for s in &later {
        assert!(
            s["dirty_rate_bytes_per_s"].as_u64().is_some_and(|r| r > 0),
            "{s}"
        );
        assert!(s["expected_downtime_ms"].as_f64().is_some(), "{s}");
        assert!(
            s["bandwidth_mib_s"].as_f64().is_some_and(|b| b > 0.0),
            "{s}"
        );
    }

    // The text for people, once in pre-copy.
    let text = text_seen.expect("a look in pre-copy");
    assert!(
        text.starts_with(&format!("g1: migrating to {to}\n")),
        "{text}"
    );
    for row in [
        "phase:",
        "pages:",
        "dirty rate:",
        "bandwidth:",
        "expected downtime:",
        "elapsed:",
    ] {
        assert!(
            text.contains(&format!("\n  {row}")),
            "{row} missing:\n{text}"
        );
    }
    assert!(text.contains("pre-copy, round "), "{text}");

    // The destination's view: incoming, from the source, pages written.
    assert!(!seen_in.is_empty());
    for s in &seen_in {
        assert_eq!(s["domain"], "g1");
        assert_eq!(s["direction"], "incoming");
        assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{s}");
    }
    let written: Vec<u64> = seen_in
        .iter()
        .map(|s| s["pages_sent"].as_u64().unwrap())
        .collect();
    assert!(written.windows(2).all(|w| w[0] <= w[1]), "{written:?}");
    assert!(written.last() > written.first(), "{written:?}");

    // --watch --json: each line parses, and it kept going.
    let watch_out = watch.stdout.take().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status();
    let _ = watch.wait();
    let lines: Vec<String> = BufReader::new(watch_out)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    let mut in_flight = 0;
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        let sessions = v["sessions"].as_array().expect("sessions");
        in_flight += usize::from(!sessions.is_empty());
    }
    assert!(in_flight >= 2, "{lines:?}");

    // Done: nothing in flight at either end; the guest moved.
    assert_eq!(stdout(&a.relocd(&["status"])), NOTHING);
    // B's session ends moments after A's command returns (B still starts
    // the guest and closes its journal after telling A): wait, bounded.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = b.status();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still in flight at B: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list: Value = serde_json::from_slice(&b.relocd(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list["domains"][0]["name"], "g1");

    // A save in flight: its file, its direction.
    let out = a.relocd(&["sim", "create", "g2", "--memory", "48M"]);
    assert!(out.status.success(), "{out:?}");
    let file = dir.path("g2.save");
    let mut save = Command::new(BIN)
        .arg("--control")
        .arg(&a.control)
        .args(["save", "--bandwidth", "16M/s", "g2"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut saw_save = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let saved = loop {
        if let Some(status) = save.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the save did not end");
        saw_save.extend(a.status());
        std::thread::sleep(Duration::from_millis(150));
    };
    assert!(saved.success(), "{:?}", save.wait_with_output());
    assert!(!saw_save.is_empty(), "the save was never seen in flight");
    for s in &saw_save {
        assert_eq!(s["domain"], "g2");
        assert_eq!(s["direction"], "save");
        assert_eq!(s["file"], file.to_str().unwrap());
        assert!(s["peer"].is_null());
    }
    assert!(a.status().is_empty());
}

#[test]
fn status_flags_and_a_missing_daemon() {
    let out = Command::new(BIN)
        .args(["status", "--interval", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--interval without --watch: {out:?}"
    );
    let out = Command::new(BIN)
        .args(["status", "--watch", "--interval", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let dir = Scratch::new("status-none");
    let out = Command::new(BIN)
        .arg("--control")
        .arg(dir.path("nobody.sock"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nobody.sock"));
}

#[test]
fn version_names_the_protocol_range_and_the_xen_abi() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("relocd {}", env!("CARGO_PKG_VERSION")));
    let (min, max) = (
        relocd_core::protocol::PROTOCOL_VERSION_MIN,
        relocd_core::protocol::PROTOCOL_VERSION,
    );
    let range = if min == max {
        format!("relocation protocol: version {max}")
    } else {
        format!("relocation protocol: versions {min} to {max}")
    };
    assert_eq!(lines[1], range);
    assert_eq!(lines[2], "management protocol: version 1");
    assert!(
        lines[3].starts_with(&format!(
            "Xen ABI: Xen 4.17 (domctl interface {:#x}, sysctl interface {:#x})",
            relocd_hypercall::XEN_DOMCTL_INTERFACE_VERSION,
            relocd_hypercall::XEN_SYSCTL_INTERFACE_VERSION
        )),
        "{text}"
    );
    // -V stays one line.
    let short = stdout(&Command::new(BIN).arg("-V").output().unwrap());
    assert_eq!(short, format!("relocd {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn serve_tells_systemd_it_is_ready_once_both_sockets_are_up_and_when_it_stops() {
    let dir = Scratch::new("notify");
    let notify = dir.path("notify");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut serve = Serve::spawn(
        &dir,
        "n",
        &["--listen", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = rx.recv(&mut buf).expect("no READY=1 from relocd serve");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // Told once both are up: the management socket answers and the
    // listener (logged before) accepts connections now.
    let line = serve.wait_for("relocation listener ready");
    std::net::TcpStream::connect(listen_addr(&line)).expect("the listener is up");
    let out = serve.relocd(&["list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    sigterm(&serve.child);
    let n = rx.recv(&mut buf).expect("no STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(serve.child.wait().unwrap().success());

    // Without NOTIFY_SOCKET nothing is sent and serve runs as before.
    let mut plain = Serve::spawn(&dir, "p", &[], &[]);
    plain.wait_for("relocd ready");
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(rx.recv(&mut buf).is_err());
}

/// `serve`'s log when its stderr is the file `log`, with `JOURNAL_STREAM`
/// set to `stream` (`None`: the file's own device and inode).
fn serve_log(dir: &Scratch, name: &str, stream: Option<&str>) -> String {
    use std::os::unix::fs::MetadataExt;
    let log = dir.path(&format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let stream = stream.map_or_else(|| format!("{}:{}", meta.dev(), meta.ino()), str::to_owned);
    // A duplicated setting: a warning at start-up.
    let (mut cmd, control) = serve_command(
        dir,
        name,
        "(xend-relocation-server no)\n(xend-relocation-server no)\n",
    );
    let mut child = cmd
        .env("JOURNAL_STREAM", &stream)
        .env("RELOCD_LOG", "debug")
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("relocd ready")
    {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A debug line: a management request.
    let out = Command::new(BIN)
        .arg("--control")
        .arg(&control)
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success());
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log).unwrap()
}

fn starts_with_timestamp(line: &str) -> bool {
    line.len() > 20
        && line.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && line.as_bytes()[4] == b'-'
}

#[test]
fn logs_for_the_journal_carry_the_priority_and_no_timestamp() {
    let dir = Scratch::new("journal");
    let log = serve_log(&dir, "j", None);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 4, "{log}");
    for l in &lines {
        let prio = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no <N> prefix: {l:?}"));
        assert!(["3", "4", "6", "7"].contains(&prio), "{l:?}");
        let rest = &l[prio.len() + 2..];
        assert!(!starts_with_timestamp(rest), "a timestamp: {l:?}");
        assert!(
            !rest.contains(" INFO ") && !rest.contains(" WARN "),
            "a level: {l:?}"
        );
    }
    let find = |text: &str| {
        lines
            .iter()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in {log}"))
    };
    assert!(find("relocd ready").starts_with("<6>"));
    assert!(find("stopping").starts_with("<6>"));
    assert!(find("management request").starts_with("<7>"));
    assert!(
        lines.iter().any(|l| l.starts_with("<4>")),
        "no warning line: {log}"
    );

    // JOURNAL_STREAM naming another file (inherited from a parent whose
    // stderr went to the journal): the lines stay as on a terminal.
    let log = serve_log(&dir, "t", Some("0:0"));
    for l in log.lines() {
        assert!(starts_with_timestamp(l), "{l:?}");
        assert!(!l.starts_with('<'), "{l:?}");
    }
    assert!(log.contains(" INFO ") && log.contains(" WARN "), "{log}");
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn gen_docs_writes_a_page_per_command_that_man_renders_and_completions() {
    let dir = Scratch::new("docs");
    let out_dir = dir.path("out");
    let out = Command::new(BIN)
        .arg("gen-docs")
        .arg("--out")
        .arg(&out_dir)
        .args(["--date", "2026-01-02"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pages: BTreeSet<String> = std::fs::read_dir(out_dir.join("man8"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // One per visible subcommand of `relocd --help`, and relocd(8).
    let help = stdout(&Command::new(BIN).arg("--help").output().unwrap());
    let mut expected = BTreeSet::from(["relocd.8".to_owned()]);
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let cmd = line.split_whitespace().next().unwrap();
        if cmd != "help" {
            expected.insert(format!("relocd-{cmd}.8"));
        }
    }
    expected.insert("relocd-sim-create.8".into());
    assert!(expected.contains("relocd-status.8"), "{help}");
    assert_eq!(pages, expected);
    let page = std::fs::read_to_string(out_dir.join("man8/relocd-status.8")).unwrap();
    assert!(
        page.lines()
            .any(|l| l.starts_with(".TH RELOCD-STATUS 8 2026-01-02 \"relocd ")),
        "{page}"
    );
    assert!(page.contains("\\-\\-watch"), "{page}");
    let top = std::fs::read_to_string(out_dir.join("man8/relocd.8")).unwrap();
    for section in [
        "FILES",
        "ENVIRONMENT",
        "\"EXIT STATUS\"",
        "VERSIONS",
        "\"SEE ALSO\"",
    ] {
        assert!(top.contains(&format!(".SH {section}\n")), "{section}");
    }
    assert!(top.contains("JOURNAL_STREAM") && top.contains("NOTIFY_SOCKET"));

    if have("man") {
        for p in &pages {
            let out = Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l"])
                .arg(out_dir.join("man8").join(p))
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C.UTF-8")
                .output()
                .unwrap();
            assert!(out.status.success(), "man -l {p}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stderr), "", "man -l {p} warns");
            let text = stdout(&out);
            assert!(
                text.contains("SYNOPSIS") && text.contains("DESCRIPTION"),
                "{p}:\n{text}"
            );
        }
    } else {
        eprintln!("SKIPPED: rendering with man -l (man is not installed; `cargo xtask test` installs man-db)");
    }

    let comp = out_dir.join("completions");
    let bash = comp.join("relocd.bash");
    let text = std::fs::read_to_string(&bash).unwrap();
    assert!(text.contains("status") && text.contains("--watch"), "bash");
    let check = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(check.status.success(), "{check:?}");
    // Bash completes the subcommands from it.
    let script = format!(
        "source {}; COMP_WORDS=(relocd sta); COMP_CWORD=1; COMP_LINE='relocd sta'; COMP_POINT=10; \
         _relocd relocd sta relocd; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let words = stdout(&Command::new("bash").args(["-c", &script]).output().unwrap());
    assert!(words.lines().any(|w| w == "status"), "{words:?}");
    assert!(std::fs::read_to_string(comp.join("_relocd"))
        .unwrap()
        .starts_with("#compdef relocd"));
    assert!(std::fs::read_to_string(comp.join("relocd.fish"))
        .unwrap()
        .contains("complete -c relocd"));
}
