//! `cargo xtask`: the project's task runner.
//!
//! - `cargo xtask test`  — everything CI checks: fmt, clippy, the bare-metal
//!   build of the core, the Debian package (lintian), the whole test suite
//!   (with the package's own test). Installs what it needs when missing (as
//!   root) and says so.
//! - `cargo xtask bench` — benchmarks, printed side by side as ratios.
//! - `cargo xtask fuzz [SECONDS]` — runs every fuzz target for a set time.
//! - `cargo xtask e2e [--list] [SCENARIO...]` — boots real Xen under QEMU
//!   and runs the named scenarios in dom0 (see `e2e`).
//! - `cargo xtask deb [--no-lintian]` — the Debian package (see `deb`).

mod deb;
mod e2e;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const BARE_TARGET: &str = "x86_64-unknown-none";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        Some("e2e") => e2e::main(&args[1..]),
        Some("deb") => deb::main(&root, &args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print_help();
            Ok(())
        }
        Some(other) => {
            print_help();
            bail!("unknown task `{other}`")
        }
    }
}

fn print_help() {
    eprintln!(
        "cargo xtask TASK\n\n\
         tasks:\n  \
         test            fmt, clippy -D warnings, core for {BARE_TARGET}, the package, cargo test --workspace\n  \
         bench [ARGS]    benchmarks, side by side with their references (ARGS go to the bench binary)\n  \
         fuzz [SECONDS]  run every fuzz target for SECONDS each (default 60; needs nightly + cargo-fuzz)\n  \
         e2e [--list] [SCENARIO...]  boot Xen 4.17 + dom0 under QEMU and run scenarios (logs in target/e2e/)\n  \
         deb [--no-lintian]  the Debian package, target/debian/relocd_VERSION_ARCH.deb (lintian must report no error)"
    );
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Runs a command, echoing it first; fails with the command line if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs Debian packages when a program the tests need is missing.
fn ensure_debian(program: &str, packages: &[&str]) -> Result<()> {
    if have(program) {
        return Ok(());
    }
    if !is_root() || !have("apt-get") {
        bail!(
            "`{program}` is missing and cannot be installed here (needs root and apt-get): \
             install the Debian package(s) {packages:?}"
        );
    }
    eprintln!("xtask: `{program}` is missing; installing {packages:?} with apt-get (as root)");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_rust_target(target: &str) -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the bare-metal target")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("xtask: Rust target {target} is missing; adding it with rustup");
    run(Command::new("rustup").args(["target", "add", target]))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(root: &Path) -> Result<()> {
    ensure_debian("python3", &["python3"])?;
    ensure_rust_target(BARE_TARGET)?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args([
        "build",
        "-p",
        "relocd-core",
        "--no-default-features",
        "--target",
        BARE_TARGET,
    ]))?;
    run(cargo().args([
        "build",
        "-p",
        "relocd-hypercall",
        "--no-default-features",
        "--features",
        "page",
        "--target",
        BARE_TARGET,
    ]))?;
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    // The package (lintian must find no error), then checked by
    // relocd-tests' `package` test, which RELOCD_DEB points at it; man
    // pages rendered with man-db, the unit verified by systemd-analyze.
    let deb = deb::build(root, deb::Options { lintian: true })?;
    ensure_debian("man", &["man-db"])?;
    ensure_debian("systemd-analyze", &["systemd"])?;
    let counts = run_tests(
        cargo()
            .args(["test", "--workspace"])
            .env("RELOCD_DEB", &deb)
            .current_dir(root),
    )?;
    // real Xen under QEMU; skipped with the reason where it cannot run
    // The README's main command, as a newcomer types it (a smaller guest):
    // proves `cargo run` at the top finds the relocd binary and the demo's
    // checks pass.
    run(cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "--",
            "demo",
            "--memory",
            "256M",
        ])
        .current_dir(root))?;
    e2e::from_test()?;
    eprintln!("xtask: all checks passed");
    // One closing line for the whole suite (cargo prints one per binary).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(())
}

/// Totals of every `test result:` line cargo printed.
#[derive(Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test`, passing its output through while adding up the
/// per-binary `test result:` lines.
fn run_tests(cmd: &mut Command) -> Result<TestCounts> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: $ {}", display(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    let mut counts = TestCounts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => counts.passed += n,
                        "failed" => counts.failed += n,
                        "ignored" => counts.ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(counts)
}

fn bench(args: &[String]) -> Result<()> {
    ensure_debian("python3", &["python3"])?;
    run(cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "relocd-tests",
            "--bin",
            "relocd-bench",
            "--",
        ])
        .args(args))?;
    // The migration figures: real sessions over loopback TCP between two
    // simulated hypervisors, in release mode, beside a plain TCP copy.
    run(cargo().args([
        "test",
        "--release",
        "--quiet",
        "-p",
        "relocd-tests",
        "--test",
        "session_bench",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]))?;
    // TLS against plaintext, the same sessions, in the same run.
    run(cargo().args([
        "test",
        "--release",
        "--quiet",
        "-p",
        "relocd-tests",
        "--test",
        "tls_bench",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]))?;
    // The daemons' memory: real `relocd serve` processes.
    run(cargo().args(["build", "--release", "--quiet", "-p", "relocd"]))?;
    let bin = workspace_root().join("target/release/relocd");
    run(cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "relocd-tests",
            "--bin",
            "relocd-rss",
        ])
        .env("RELOCD_BIN", bin))
}

fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s.parse().context("fuzz: SECONDS must be a number")?,
        None => 60,
    };
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").exists() {
        bail!("no fuzz/ crate yet");
    }
    if !have("cargo-fuzz") {
        eprintln!("xtask: cargo-fuzz is missing; installing it with cargo install");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let out = Command::new("cargo")
        .args(["+nightly", "fuzz", "list"])
        .current_dir(root)
        .output()
        .context("cargo +nightly fuzz list")?;
    let targets = String::from_utf8_lossy(&out.stdout).into_owned();
    for target in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        run(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(root))?;
    }
    Ok(())
}
