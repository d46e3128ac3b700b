//! `relocd serve` and `relocd migrate --ssl` as processes, with
//! certificates made here: serve refuses to start on TLS files it cannot
//! use (naming the file and the problem), warns about a private key others
//! may read, re-reads the certificates on SIGHUP; a migrate the TLS link
//! refuses exits 1 with what to fix, the guest running on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::Scratch;

#[path = "../../tests/src/tls_certs.rs"]
#[allow(dead_code)]
mod tls_certs;
use tls_certs::{write_files, Ca, Files};

const BIN: &str = env!("CARGO_BIN_EXE_relocd");
/// A bound against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn config_text(files: &Files, extra: &str) -> String {
    format!(
        "(xend-relocation-server-ssl-key-file '{}')\n\
         (xend-relocation-server-ssl-cert-file '{}')\n\
         (relocd-relocation-ssl-ca-file '{}')\n{extra}",
        files.key.display(),
        files.cert.display(),
        files.ca.display()
    )
}

/// A `relocd serve --backend sim` process and its log lines.
struct Serve {
    child: Child,
    control: PathBuf,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    fn spawn(dir: &Scratch, tag: &str, config: &str, extra: &[&str]) -> Serve {
        let control = dir.path(&format!("{tag}.sock"));
        let config_path = dir.path(&format!("{tag}.sxp"));
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(BIN)
            .arg("--control")
            .arg(&control)
            .args(["serve", "--backend", "sim", "--config"])
            .arg(&config_path)
            .arg("--state-dir")
            .arg(dir.path(&format!("{tag}-state")))
            .args(extra)
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
                let _ = tx.send(line);
            }
        });
        Serve {
            child,
            control,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line holding `text`; returns it.
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(text) {
                        return l;
                    }
                }
                Err(_) => panic!("no log line with {text:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address a "… listener ready" line names.
    fn listen_addr(&mut self, what: &str) -> String {
        let line = self.wait_for(what);
        line.split("listen=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
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
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs serve to its end; it must fail at start-up. Returns (code, stderr).
fn serve_fails(dir: &Scratch, config: &str) -> (Option<i32>, String) {
    let mut s = Serve::spawn(dir, "fail", config, &["--listen", "127.0.0.1:0"]);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    while let Ok(l) = s.lines.recv_timeout(Duration::from_secs(5)) {
        text.push_str(&l);
        text.push('\n');
    }
    (status.code(), text)
}

#[test]
fn serve_refuses_tls_files_it_cannot_use_and_names_them() {
    let dir = Scratch::new("serve-tls-refusals");
    let ca = Ca::new("relocd test CA");
    let good = write_files(&dir.path(""), "good", &ca.issue(&["127.0.0.1"]), &[&ca]);
    let other = write_files(&dir.path(""), "other", &ca.issue(&["127.0.0.1"]), &[&ca]);
    std::fs::write(dir.path("garbage.pem"), "not PEM at all\n").unwrap();
    std::fs::create_dir_all(dir.path("a-directory")).unwrap();
    let with = |key: &Path, cert: &Path, ca: &Path| Files {
        key: key.to_owned(),
        cert: cert.to_owned(),
        ca: ca.to_owned(),
    };
    let missing = dir.path("missing.key");
    let garbage = dir.path("garbage.pem");
    let a_dir = dir.path("a-directory");
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!(
                "(xend-relocation-ssl-server yes)\n\
                 (xend-relocation-server-ssl-key-file '{}')\n\
                 (xend-relocation-server-ssl-cert-file '{}')\n",
                good.key.display(),
                good.cert.display()
            ),
            vec![
                "relocd-relocation-ssl-ca-file is not set".into(),
                "(xend-relocation-ssl-server yes)".into(),
            ],
        ),
        (
            config_text(
                &with(&missing, &good.cert, &good.ca),
                "(xend-relocation-ssl-server yes)",
            ),
            vec![format!(
                "{} (xend-relocation-server-ssl-key-file): no such file",
                missing.display()
            )],
        ),
        (
            config_text(
                &with(&good.key, &garbage, &good.ca),
                "(xend-relocation-ssl yes)",
            ),
            vec![
                format!(
                    "{} (xend-relocation-server-ssl-cert-file)",
                    garbage.display()
                ),
                "holds no certificate".into(),
            ],
        ),
        (
            config_text(
                &with(&good.key, &good.cert, &a_dir),
                "(xend-relocation-ssl-server yes)",
            ),
            vec![format!(
                "{} (relocd-relocation-ssl-ca-file): cannot read",
                a_dir.display()
            )],
        ),
        (
            config_text(
                &with(&other.key, &good.cert, &good.ca),
                "(xend-relocation-ssl-server yes)",
            ),
            vec![
                format!(
                    "{} (xend-relocation-server-ssl-key-file) does not match",
                    other.key.display()
                ),
                good.cert.display().to_string(),
            ],
        ),
    ];
    for (config, needles) in cases {
        let (code, text) = serve_fails(&dir, &config);
        assert_eq!(code, Some(2), "{config}\n{text}");
        for n in &needles {
            assert!(
                text.contains(n.as_str()),
                "{n:?} not in:\n{text}\nconfig:\n{config}"
            );
        }
        assert!(!text.contains("relocd ready"), "{text}");
    }
}

#[test]
fn serve_warns_about_a_readable_key_and_rereads_on_sighup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("serve-tls-sighup");
    let ca = Ca::new("relocd test CA");
    let files = write_files(&dir.path(""), "host", &ca.issue(&["127.0.0.1"]), &[&ca]);
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut s = Serve::spawn(
        &dir,
        "host",
        &config_text(&files, ""),
        &["--ssl-listen", "127.0.0.1:0"],
    );
    let warning = s.wait_for("readable by every user");
    assert!(warning.contains("chmod 600"), "{warning}");
    s.listen_addr("TLS relocation listener ready");
    s.wait_for("relocd ready");
    s.signal("-HUP");
    s.wait_for("SIGHUP: TLS certificates re-read");
    // A broken file: the certificates in force stay, and it says so.
    std::fs::write(&files.cert, "garbage").unwrap();
    s.signal("-HUP");
    s.wait_for("SIGHUP: TLS certificates NOT re-read");
    s.signal("-TERM");
    s.wait_for("relocd stopped");
}

#[test]
fn a_refused_tls_migration_exits_1_with_what_to_fix() {
    let dir = Scratch::new("serve-tls-migrate");
    let ca = Ca::new("relocd test CA");
    let other_ca = Ca::new("another CA");
    let b_files = write_files(&dir.path(""), "b", &ca.issue(&["127.0.0.1"]), &[&ca]);
    let a_files = write_files(&dir.path(""), "a", &other_ca.issue(&["127.0.0.1"]), &[&ca]);
    let mut b = Serve::spawn(
        &dir,
        "b",
        &config_text(&b_files, ""),
        &["--listen", "127.0.0.1:0", "--ssl-listen", "127.0.0.1:0"],
    );
    let tls_port = b.listen_addr("TLS relocation listener ready");
    let guests = dir.path("guests");
    std::fs::write(&guests, "web1 memory=8M dirty-rate=1M\n").unwrap();
    let mut a = Serve::spawn(
        &dir,
        "a",
        &config_text(&a_files, ""),
        &["--guests", guests.to_str().unwrap()],
    );
    a.wait_for("relocd ready");

    let out = a.relocd(&["migrate", "--ssl", "--live", "web1", &tls_port]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not trust this host's certificate"),
        "{err}"
    );
    assert!(err.contains("a.crt"), "names the certificate to fix: {err}");
    assert!(err.contains("web1 keeps running here"), "{err}");
    b.wait_for("TLS handshake failed");

    // Without --ssl, to the TLS port: no plaintext is accepted there.
    let out = a.relocd(&["migrate", "--live", "web1", &tls_port]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("speaks TLS") && err.contains("--ssl"), "{err}");

    let list = a.relocd(&["list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("web1"));
}
