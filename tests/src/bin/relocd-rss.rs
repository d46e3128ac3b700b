//! `cargo xtask bench`, part 3: the resident memory of two real `relocd
//! serve` processes (sim backend), idle and at the peak of a live migration
//! of an idle 1 GiB guest. Sim guest pages that were never written take no
//! memory, so the figures are the daemons' own. "Idle" is 300 ms after the
//! last management request (before the migration, and again after it). `RELOCD_BIN` names the
//! release binary (xtask builds it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    control: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (VmRSS, VmHWM) of `pid`, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn relocd(bin: &Path, control: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--control").arg(control);
    cmd
}

fn start(bin: &Path, dir: &Path, name: &str, listen: Option<u16>) -> Daemon {
    let control = dir.join(format!("{name}.sock"));
    let mut cmd = relocd(bin, &control);
    cmd.args(["serve", "--backend", "sim", "--state-dir"])
        .arg(dir.join(name))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(port) = listen {
        cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    }
    let mut daemon = Daemon {
        child: cmd.spawn().expect("relocd serve starts"),
        control,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = relocd(bin, &daemon.control)
            .arg("list")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return daemon;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
    panic!("relocd serve ({name}) did not answer within 20 s");
}

fn main() {
    let bin = PathBuf::from(std::env::var_os("RELOCD_BIN").expect("RELOCD_BIN: the relocd binary"));
    let dir = std::env::temp_dir().join(format!("relocd-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let src = start(&bin, &dir, "src", None);
    let dst = start(&bin, &dir, "dst", Some(port));
    let created = relocd(&bin, &src.control)
        .args(["sim", "create", "idle1", "--memory", "1G"])
        .stdout(Stdio::null())
        .status()
        .expect("sim create runs");
    assert!(created.success(), "sim create failed");
    std::thread::sleep(Duration::from_millis(300));
    let (src_idle, _) = rss(src.child.id());
    let (dst_idle, _) = rss(dst.child.id());
    let t = Instant::now();
    let out = relocd(&bin, &src.control)
        .args(["--json", "migrate", "--live", "idle1"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("migrate runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "migrate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, src_peak) = rss(src.child.id());
    let (_, dst_peak) = rss(dst.child.id());
    // Idle again: the daemons give back the code pages the migration
    // faulted in once their last piece of work ends (see host/src/residency.rs).
    std::thread::sleep(Duration::from_millis(300));
    let (src_after, _) = rss(src.child.id());
    let (dst_after, _) = rss(dst.child.id());
    println!("\ndaemon memory: two `relocd serve --backend sim` processes, an idle 1 GiB guest moved live");
    println!("  (migration took {:.2} s)", took.as_secs_f64());
    println!("                          idle RSS        peak RSS (VmHWM)   idle RSS after");
    println!(
        "  source daemon        {:>8.1} MiB    {:>8.1} MiB       {:>8.1} MiB",
        src_idle as f64 / 1024.0,
        src_peak as f64 / 1024.0,
        src_after as f64 / 1024.0
    );
    println!(
        "  destination daemon   {:>8.1} MiB    {:>8.1} MiB       {:>8.1} MiB",
        dst_idle as f64 / 1024.0,
        dst_peak as f64 / 1024.0,
        dst_after as f64 / 1024.0
    );
    let idle_ok = src_idle.max(dst_idle) <= 4 * 1024;
    let peak_ok = src_peak.max(dst_peak) <= 32 * 1024;
    println!(
        "  goals: idle <= 4 MiB {}; peak <= 32 MiB {}",
        if idle_ok { "met" } else { "NOT met" },
        if peak_ok { "met" } else { "NOT met" }
    );
    drop(src);
    drop(dst);
    let _ = std::fs::remove_dir_all(&dir);
}
