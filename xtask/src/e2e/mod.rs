//! `cargo xtask e2e`: relocd against a real Xen.
//!
//! Boots Xen 4.17 with a Linux PV dom0 (Debian's packages) under QEMU's TCG
//! emulation, one or two virtual hosts, and runs named scenarios in dom0
//! through the serial console. Logs go to `target/e2e/`: one console log a
//! host (`host-A.log` for the single host, `pair-A.log` and `pair-B.log` for
//! the two linked ones, `flask-pair-A.log` and `flask-pair-B.log` for the
//! FLASK scenarios' pair), a folder a scenario with its part of the console
//! and the files it collected, and `summary.txt` with the figures.
//!
//! ```text
//! cargo xtask e2e [--list] [--xen stock|shadow] [--keep-going] [SCENARIO...]
//! ```
//!
//! Every host gets a transfer disk (a sparse raw image,
//! `target/e2e/xfer-HOST.img`, virtio-blk `/dev/vda` in dom0, linked as
//! `/dev/e2e-xfer`) for files too
//! big for the console: a script's `e2e_export FILE NAME` writes one there,
//! and after the scenario the harness copies it to the scenario's folder,
//! checks its MD5 and runs Xen's own `verify-stream-v2 -f xl` on each save
//! file (`*.save`): its verdict goes into the summary, and a rejected
//! stream fails the scenario. Accepted save files are deleted afterwards
//! (they are as big as the guest) unless `RELOCD_E2E_KEEP=1`.
//!
//! The hosts of a boot also share one disk (`target/e2e/shared-pair.img`,
//! `shared-host.img` for the single host; 64 MiB, sparse): a second
//! virtio-blk disk on every host, opened by both QEMUs read-write without
//! image locking or a host cache, `/dev/vdb` in dom0, which links it as
//! `/dev/e2e-shared`. The device test guest's vbd lives on it, the stand-in
//! for a pool's SAN. Both kinds of disk are deleted when their hosts power
//! off.
//!
//! Pieces: [`build`] makes the images, [`qemu`] starts hosts and drives
//! their consoles, [`scenario`] lists the scenarios and parses the markers
//! the dom0 scripts (`xtask/lab/`) print.

mod build;
mod cpio;
mod flask;
mod qemu;
mod scenario;

use crate::ensure_debian;
use anyhow::{bail, Context, Result};
use qemu::{Gave, HostSpec, Lab, Link};
use scenario::{Marker, Scenario, XenBuild, SCENARIOS};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// QEMU's RAM for one host, MiB (Xen sees all of it; dom0 gets [`DOM0_MIB`]).
const HOST_MIB: u32 = 1536;
const DOM0_MIB: u32 = 768;
/// From QEMU's start to dom0's toolstack being up (about 10 s here).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// From typing `run NAME` to the script's first marker.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole e2e run, build included, ends within this: `cargo xtask
/// test` must end within 45 minutes and spends about eight of them before
/// the e2e part (a clean clone, cold build). The 24 scenarios without
/// FLASK took 22.3 minutes in a clean-clone CI run (the shadow rebuild
/// included); the FLASK ones add their own Xen build (170 s from an empty
/// cache on a loaded machine) and one pair of hosts (boot, the three
/// scenarios and power-off: 134-200 s). Each scenario's timeout is about
/// twice its measured time, and one that could end past the budget is not
/// started (and fails the run), so the budget leaves room for both.
const RUN_BUDGET: Duration = Duration::from_secs(36 * 60);
/// The transfer disk's size (sparse: only what dom0 writes takes room).
const XFER_BYTES: u64 = 4 << 30;
/// The shared disk's size (sparse): the device guest's vbd, which gets two
/// 4 KiB blocks a second.
const SHARED_BYTES: u64 = 64 << 20;

/// A reason the e2e scenarios cannot run on this machine at all (no QEMU,
/// no Debian mirror, QEMU cannot boot Xen), as opposed to a failure.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

struct Options {
    list: bool,
    xen: Option<XenBuild>,
    keep_going: bool,
    names: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        list: false,
        xen: None,
        keep_going: false,
        names: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" | "-l" => o.list = true,
            "--keep-going" | "-k" => o.keep_going = true,
            "--xen" => {
                o.xen = Some(match it.next().map(String::as_str) {
                    Some("stock") => XenBuild::Any,
                    Some("shadow") => XenBuild::Shadow,
                    other => bail!("--xen takes `stock` or `shadow`, not {other:?}"),
                })
            }
            "-h" | "--help" => {
                print_usage();
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("e2e: unknown option `{s}`"),
            s => o.names.push(s.to_owned()),
        }
    }
    Ok(o)
}

fn print_usage() {
    eprintln!(
        "cargo xtask e2e [--list] [--xen stock|shadow] [--keep-going] [SCENARIO...]\n\n\
         Boots Xen 4.17 + a Linux PV dom0 under QEMU (TCG) and runs the scenarios\n\
         (all when none is named). --xen stock: Debian's hypervisor instead of the\n\
         shadow-paging rebuild (which is then not built). --keep-going: run every\n\
         scenario even after one fails. Logs: target/e2e/."
    );
}

/// `cargo xtask e2e ARGS`.
pub fn main(args: &[String]) -> Result<()> {
    let o = parse_args(args)?;
    if o.list {
        println!("{:<18} {:<5} about", "scenario", "hosts");
        for s in SCENARIOS {
            println!("{:<18} {:<5} {}", s.name, s.hosts, s.about);
        }
        for s in scenario::BY_NAME_ONLY {
            println!("{:<18} {:<5} (when named) {}", s.name, s.hosts, s.about);
        }
        return Ok(());
    }
    let chosen = choose(&o.names)?;
    let summary = run(&chosen, o.xen, o.keep_going)?;
    if summary.failed > 0 {
        bail!(
            "{} of {} e2e scenarios failed (logs in target/e2e/)",
            summary.failed,
            chosen.len()
        );
    }
    Ok(())
}

/// The e2e part of `cargo xtask test`: every scenario, or a plain message
/// saying why they were skipped. `RELOCD_E2E=0` skips them; `RELOCD_E2E=1`
/// (what `.ci/run` sets) turns a skip into a failure.
pub fn from_test() -> Result<()> {
    let mode = std::env::var("RELOCD_E2E").ok();
    let strict = match e2e_mode(mode.as_deref())? {
        None => {
            eprintln!("xtask: e2e scenarios SKIPPED by request (RELOCD_E2E=0)");
            return Ok(());
        }
        Some(strict) => strict,
    };
    let all: Vec<&Scenario> = SCENARIOS.iter().collect();
    settle(strict, run(&all, None, true))
}

/// What `cargo xtask test` makes of an e2e run: every scenario passed, or
/// the failure. The one exception is an [`Unavailable`] (wherever it arose:
/// QEMU missing, a package download or the Xen build failing, dom0 not
/// booting in time), which is a printed skip unless `strict`
/// (`RELOCD_E2E=1`), where it is a failure like any other. A scenario that
/// was not run (the run's budget spent) counts as failed.
fn settle(strict: bool, result: Result<Summary>) -> Result<()> {
    match result {
        Ok(s) if s.failed == 0 => Ok(()),
        Ok(s) => bail!("{} e2e scenarios failed (logs in target/e2e/)", s.failed),
        Err(e) => match e.downcast_ref::<Unavailable>() {
            Some(why) if !strict => {
                eprintln!(
                    "xtask: e2e scenarios SKIPPED: {why}\n\
                     xtask: (RELOCD_E2E=1 makes this a failure; RELOCD_E2E=0 skips them without trying)"
                );
                Ok(())
            }
            Some(_) => Err(e.context(
                "the e2e scenarios could not run here, and RELOCD_E2E=1 makes that a failure",
            )),
            None => Err(e),
        },
    }
}

/// `RELOCD_E2E`: unset or empty: run, skip when impossible (`Some(false)`);
/// `1`: run, a skip is a failure (`Some(true)`); `0`: do not run (`None`).
fn e2e_mode(var: Option<&str>) -> Result<Option<bool>> {
    match var.map(str::trim) {
        None | Some("") => Ok(Some(false)),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(None),
        Some(other) => bail!("RELOCD_E2E is `{other}`; it takes 0 (skip) or 1 (must run)"),
    }
}

fn choose(names: &[String]) -> Result<Vec<&'static Scenario>> {
    if names.is_empty() {
        return Ok(SCENARIOS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            scenario::find(n)
                .with_context(|| format!("no scenario `{n}` (cargo xtask e2e --list shows them)"))
        })
        .collect()
}

/// What a run did.
struct Summary {
    failed: usize,
}

/// The result of one scenario on one boot.
#[derive(Default)]
struct Outcome {
    name: String,
    /// `None`: it did not end (timeout, QEMU exited, not run).
    rc: Option<i32>,
    /// Host seconds from `run NAME` to the end marker.
    secs: f64,
    /// Steps `(host, name, rc, seconds on dom0's clock)`.
    steps: Vec<(String, String, i32, f64)>,
    /// Figures `(host, key, value)`.
    reports: Vec<(String, String, String)>,
    /// `E2E-FAIL` messages.
    fails: Vec<String>,
    /// Why it did not end, or was not run.
    note: String,
    /// Files the scenario wrote onto the transfer disks.
    exports: Vec<Export>,
}

/// A file a scenario exported (`E2E-EXPORT`).
#[derive(Clone, Debug, PartialEq)]
struct Export {
    /// Index of the host whose transfer disk holds it.
    host: usize,
    name: String,
    offset: u64,
    size: u64,
    md5: String,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.rc == Some(0) && self.fails.is_empty()
    }
}

fn run(chosen: &[&'static Scenario], xen: Option<XenBuild>, keep_going: bool) -> Result<Summary> {
    let t0 = Instant::now();
    let ws = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let cache = target.join("e2e-cache");
    let logs = target.join("e2e");
    fs::create_dir_all(&logs)?;

    ensure_debian(qemu::QEMU, &["qemu-system-x86"])
        .map_err(|e| Unavailable(format!("QEMU is missing and cannot be installed: {e:#}")))?;
    build::ensure_all(&[("dpkg-deb", "dpkg"), ("apt-get", "apt"), ("gzip", "gzip")])
        .map_err(|e| Unavailable(format!("{e:#}")))?;

    if xen == Some(XenBuild::Any) {
        if let Some(s) = chosen.iter().find(|s| s.xen != XenBuild::Any) {
            bail!(
                "`{}` needs the shadow-paging hypervisor; drop --xen stock",
                s.name
            );
        }
    }
    let want_shadow = xen != Some(XenBuild::Any);
    let art = build::prepare(&ws, &cache, want_shadow)?;
    let xen_image = match (xen, &art.xen_shadow) {
        (Some(XenBuild::Any), _) => art.xen_stock.clone(),
        (_, Some(p)) => p.clone(),
        (_, None) => bail!("the shadow-paging hypervisor was not built"),
    };
    let mut art = art;
    let flask = if chosen.iter().any(|s| s.xen == XenBuild::Flask) {
        let t = Instant::now();
        eprintln!("e2e: building xen-flask");
        let f = flask::prepare(&cache, &ws.join("xtask/lab"))?;
        art.phases.push(build::Phase {
            name: "xen-flask+policy",
            secs: t.elapsed().as_secs_f64(),
            cached: f.cached,
        });
        Some(f)
    } else {
        None
    };
    let build_secs = t0.elapsed().as_secs_f64();

    let mut report = String::new();
    writeln!(report, "relocd e2e — {}", now_utc())?;
    writeln!(report, "hypervisor: {}", xen_image.display())?;
    if let Some(f) = &flask {
        writeln!(
            report,
            "hypervisor of the FLASK scenarios: {} (flask=enforcing, policy {})",
            f.xen.display(),
            f.policy.display()
        )?;
    }
    for p in &art.phases {
        writeln!(
            report,
            "build {:<16} {:>7.1} s{}",
            p.name,
            p.secs,
            if p.cached { "  (cached)" } else { "" }
        )?;
    }
    writeln!(report, "build total            {build_secs:>7.1} s")?;

    // scenarios on one host share a boot; two-host ones share a pair
    let mut outcomes = Vec::new();
    let mut boots = Vec::new();
    // FLASK scenarios boot their own hosts (the FLASK image, enforcing,
    // the policy module, dom0 set up for the relocd domain); all of them
    // take two hosts, so they share one pair and one boot of its relocd
    // domains
    for (hosts, on_flask) in [(1usize, false), (2, false), (1, true), (2, true)] {
        let group: Vec<&Scenario> = chosen
            .iter()
            .copied()
            .filter(|s| s.hosts == hosts && (s.xen == XenBuild::Flask) == on_flask)
            .collect();
        if group.is_empty() {
            continue;
        }
        let deadline = t0 + RUN_BUDGET;
        let (image, extras) = match (&flask, on_flask) {
            (Some(f), true) => {
                let (xen_args, modules) = flask::boot_extras(f);
                let extras = BootExtras {
                    xen_args,
                    modules,
                    dom0_args: vec!["e2e.driver_domain=1".into()],
                    log_prefix: "flask-",
                };
                (f.xen.clone(), extras)
            }
            _ => (xen_image.clone(), BootExtras::default()),
        };
        let (boot, mut outs) = run_group(
            &group, hosts, &art, &image, &extras, &logs, keep_going, deadline,
        )?;
        boots.push(boot);
        outcomes.append(&mut outs);
    }

    for b in &boots {
        writeln!(report, "{b}")?;
    }
    let mut failed = 0;
    for o in &outcomes {
        if !o.passed() {
            failed += 1;
        }
        let verdict = match (o.passed(), o.rc) {
            (true, _) => "PASS",
            (false, None) => "DID NOT END",
            (false, Some(_)) => "FAIL",
        };
        writeln!(
            report,
            "{verdict:<5} {:<12} {:>7.1} s  {}",
            o.name, o.secs, o.note
        )?;
        for (host, step, rc, secs) in &o.steps {
            writeln!(
                report,
                "        step {host}:{step:<18} rc={rc} {secs:>6.2} s"
            )?;
        }
        for (host, k, v) in &o.reports {
            writeln!(report, "        {host}: {k} = {v}")?;
        }
        for f in &o.fails {
            writeln!(report, "        FAIL: {f}")?;
        }
    }
    writeln!(report, "total {:.1} s", t0.elapsed().as_secs_f64())?;
    fs::write(logs.join("summary.txt"), &report)?;
    eprintln!("\n{report}");
    eprintln!("e2e: logs in {}", logs.display());
    Ok(Summary { failed })
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 for the link (QEMU listens on it).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// What the boot of the hosts showed so far.
struct BootWatch {
    /// When each host's Xen printed its version banner.
    xen_banner: Vec<Option<f64>>,
    /// When each host's dom0 started reading commands.
    ready: Vec<Option<f64>>,
    /// A panic line, if Xen or dom0 panicked.
    fatal: Option<String>,
}

impl BootWatch {
    /// Takes one line; `true` when booting is over (all up, or a panic).
    fn line(&mut self, l: &qemu::Line) -> bool {
        if l.text.contains("Xen version") && self.xen_banner[l.host].is_none() {
            self.xen_banner[l.host] = Some(l.at);
        }
        if l.text.contains("Panic on CPU") || l.text.contains("Kernel panic") {
            self.fatal = Some(l.text.clone());
            return true;
        }
        if let Some(Marker::Listening) = Marker::parse(&l.text) {
            self.ready[l.host] = Some(l.at);
            eprintln!("e2e: host {} ready after {:.1} s", ["A", "B"][l.host], l.at);
        }
        self.ready.iter().all(Option::is_some)
    }
}

/// What a boot adds to the plain one (the FLASK hosts').
#[derive(Default)]
struct BootExtras {
    /// Xen's command-line words.
    xen_args: Vec<String>,
    /// Multiboot modules after dom0's initramfs.
    modules: Vec<PathBuf>,
    /// dom0's command-line words.
    dom0_args: Vec<String>,
    /// Before the hosts' file names (`flask-pair-A.log`), so that they do
    /// not overwrite the plain boot's.
    log_prefix: &'static str,
}

/// Boots `hosts` hosts, runs `group` on them one after another, powers
/// them off. Returns a line about the boot and the outcomes.
#[allow(clippy::too_many_arguments)]
fn run_group(
    group: &[&Scenario],
    hosts: usize,
    art: &build::Artifacts,
    xen: &Path,
    extras: &BootExtras,
    logs: &Path,
    keep_going: bool,
    deadline: Instant,
) -> Result<(String, Vec<Outcome>)> {
    if let Some(first) = group.first() {
        if Instant::now() + BOOT_TIMEOUT + first.timeout > deadline {
            let note = format!(
                "not run: the e2e run's {}-minute budget is spent",
                RUN_BUDGET.as_secs() / 60
            );
            let outs = group
                .iter()
                .map(|s| Outcome {
                    name: s.name.into(),
                    note: note.clone(),
                    ..Default::default()
                })
                .collect();
            return Ok((format!("boot  skipped: {note}"), outs));
        }
    }
    let budget: Duration = group.iter().map(|s| s.timeout + ACK_TIMEOUT * 3).sum();
    let hard = BOOT_TIMEOUT + budget + Duration::from_secs(60);
    let names = ["A", "B"];
    let port = if hosts > 1 { free_port()? } else { 0 };
    // console logs: host-A.log for the single host, pair-A/B.log for two
    let prefix = format!(
        "{}{}",
        extras.log_prefix,
        if hosts > 1 { "pair" } else { "host" }
    );
    let mut lab = Lab::new();
    let xfer: Vec<PathBuf> = names[..hosts]
        .iter()
        .map(|n| logs.join(format!("xfer-{prefix}-{n}.img")))
        .collect();
    // one shared disk for all the hosts of the group, new every boot
    let shared = logs.join(format!("shared-{prefix}.img"));
    let mut disks = xfer.clone();
    disks.push(shared.clone());
    for disk in &disks {
        let f =
            fs::File::create(disk).with_context(|| format!("cannot create {}", disk.display()))?;
        f.set_len(if *disk == shared {
            SHARED_BYTES
        } else {
            XFER_BYTES
        })?;
    }
    let mut watch = BootWatch {
        xen_banner: vec![None; hosts],
        ready: vec![None; hosts],
        fatal: None,
    };
    for (i, name) in names.iter().take(hosts).enumerate() {
        let mut dom0_args = Vec::new();
        let mut link = None;
        if hosts > 1 {
            let me = i + 1;
            let peer = if i == 0 { 2 } else { 1 };
            dom0_args.push(format!("e2e.ip=169.254.0.{me}/16"));
            dom0_args.push(format!("e2e.peer=169.254.0.{peer}"));
            link = Some(if i == 0 {
                Link::Listen(port)
            } else {
                Link::Connect(port)
            });
        } else {
            // no link, but the bridge gets the address (the guests' network)
            dom0_args.push("e2e.ip=169.254.0.1/16".into());
        }
        dom0_args.push(format!("e2e.role={name}"));
        dom0_args.push("e2e.xfer=1".into());
        dom0_args.push("e2e.shared=1".into());
        dom0_args.extend(extras.dom0_args.iter().cloned());
        let spec = HostSpec {
            name: name.to_string(),
            xen: xen.to_path_buf(),
            kernel: art.kernel.clone(),
            initrd: art.dom0_initrd.clone(),
            dom0_args,
            mem_mib: HOST_MIB,
            dom0_mib: DOM0_MIB,
            link,
            pidfile: logs.join(format!("{prefix}-{name}.pid")),
            xfer: Some(xfer[i].clone()),
            shared: Some(shared.clone()),
            xen_args: extras.xen_args.clone(),
            modules: extras.modules.clone(),
        };
        let log = logs.join(format!("{prefix}-{name}.log"));
        eprintln!(
            "e2e: starting host {name} (QEMU/TCG, {HOST_MIB} MiB), console in {}",
            log.display()
        );
        lab.spawn(&spec, &log, hard)?;
        if i == 0 && hosts > 1 {
            // the listening side must be up before the other connects
            let _ = lab.expect(Duration::from_secs(10), |l| {
                watch.line(l);
                Some(())
            });
        }
    }

    // boot: wait for every host's command loop
    let waited = lab.expect(BOOT_TIMEOUT, |l| watch.line(l).then_some(()));
    let BootWatch {
        xen_banner,
        ready,
        fatal,
    } = watch;
    let hostlist = names[..hosts].join("+");
    if let Some(text) = fatal {
        lab.shutdown(Duration::from_secs(1));
        remove_all(&disks);
        return Err(Unavailable(format!(
            "QEMU could not boot Xen here: `{text}` (see the console logs in target/e2e/)"
        ))
        .into());
    }
    if let Err(g) = waited {
        lab.shutdown(Duration::from_secs(1));
        remove_all(&disks);
        let why = match g {
            Gave::Timeout => format!("dom0 was not up after {} s", BOOT_TIMEOUT.as_secs()),
            Gave::Closed(h) => format!("QEMU of host {h} exited during boot"),
        };
        return Err(Unavailable(format!(
            "QEMU could not boot Xen here: {why} (see the console logs in target/e2e/)"
        ))
        .into());
    }
    let mut boot_line = format!("boot  {hostlist}:");
    for i in 0..hosts {
        let _ = write!(
            boot_line,
            " {} Xen banner at {:.1} s, dom0 ready at {:.1} s;",
            names[i],
            xen_banner[i].unwrap_or(f64::NAN),
            ready[i].unwrap_or(f64::NAN)
        );
    }

    let mut outcomes = Vec::new();
    let mut wedged = None::<String>;
    for s in group {
        if wedged.is_none() && Instant::now() + s.timeout > deadline {
            wedged = Some(format!(
                "the e2e run's {}-minute budget is spent",
                RUN_BUDGET.as_secs() / 60
            ));
        }
        if let Some(why) = &wedged {
            outcomes.push(Outcome {
                name: s.name.into(),
                note: format!("not run: {why}"),
                ..Default::default()
            });
            continue;
        }
        let o = run_scenario(&mut lab, s, hosts, logs, &xfer, &art.xen_tools)?;
        eprintln!(
            "e2e: {} {} ({:.1} s) {}",
            s.name,
            if o.passed() { "passed" } else { "FAILED" },
            o.secs,
            o.note
        );
        if o.rc.is_none() {
            wedged = Some(format!("the host did not finish `{}`", s.name));
        } else if !o.passed() && !keep_going {
            wedged = Some(format!("`{}` failed (--keep-going runs the rest)", s.name));
        }
        outcomes.push(o);
    }
    let killed = lab.shutdown(Duration::from_secs(20));
    if killed > 0 {
        eprintln!("e2e: {killed} QEMU did not power off in time and was killed");
    }
    remove_all(&disks);
    Ok((boot_line, outcomes))
}

fn remove_all(files: &[PathBuf]) {
    for f in files {
        let _ = fs::remove_file(f);
    }
}

/// Copies what the scenario exported from the hosts' transfer disks into
/// `dir`, checks each copy's MD5 against dom0's, and has Xen's verifier
/// judge each save file (`*.save`). A bad copy or a rejected stream is a
/// failure of the scenario; the verdicts are figures of its summary.
fn check_exports(out: &mut Outcome, dir: &Path, disks: &[PathBuf], names: &[String], tools: &Path) {
    let keep = std::env::var("RELOCD_E2E_KEEP").is_ok_and(|v| v.trim() == "1");
    for e in std::mem::take(&mut out.exports) {
        let host = &names[e.host];
        let suffix = if names.len() > 1 {
            format!(".{host}")
        } else {
            String::new()
        };
        let file = dir.join(format!("{}{suffix}", e.name));
        let copied = extract(&disks[e.host], e.offset, e.size, &file).and_then(|()| md5sum(&file));
        match copied {
            Ok(sum) if sum.eq_ignore_ascii_case(&e.md5) => out.reports.push((
                host.clone(),
                format!("export_{}", e.name),
                format!("{} bytes, md5 matches dom0's", e.size),
            )),
            Ok(sum) => {
                out.fails.push(format!(
                    "{host}: the copy of {} has md5 {sum}, dom0's file {}",
                    e.name, e.md5
                ));
                continue;
            }
            Err(err) => {
                out.fails.push(format!(
                    "{host}: cannot copy {} off the transfer disk: {err:#}",
                    e.name
                ));
                continue;
            }
        }
        if !e.name.ends_with(".save") {
            continue;
        }
        let t = Instant::now();
        match verify_stream(tools, &file) {
            Ok((rc, output)) => {
                let secs = t.elapsed().as_secs_f64();
                let _ = fs::write(dir.join(format!("{}{suffix}.verify.txt", e.name)), &output);
                let summary = verify_summary(&output);
                let verdict = if rc == Some(0) {
                    "accepted"
                } else {
                    "REJECTED"
                };
                let rc_text = rc.map_or("killed".to_owned(), |c| c.to_string());
                out.reports.push((
                    host.clone(),
                    format!("verify_{}", e.name),
                    format!(
                        "verify-stream-v2 -f xl: rc={rc_text} {verdict} ({summary}) in {secs:.1} s"
                    ),
                ));
                if rc == Some(0) {
                    if !keep {
                        let _ = fs::remove_file(&file);
                    }
                } else {
                    out.fails.push(format!(
                        "{host}: Xen's verify-stream-v2 rejects {}: {}",
                        e.name,
                        last_line(&output)
                    ));
                }
            }
            Err(err) => out.fails.push(format!(
                "{host}: cannot run verify-stream-v2 on {}: {err:#}",
                e.name
            )),
        }
    }
}

/// Copies `size` bytes at `offset` of `disk` into `dst`.
fn extract(disk: &Path, offset: u64, size: u64, dst: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut src = fs::File::open(disk).with_context(|| format!("{}", disk.display()))?;
    let len = src.metadata()?.len();
    if offset.checked_add(size).is_none_or(|end| end > len) {
        bail!("{size} bytes at {offset} do not fit in the {len}-byte disk");
    }
    src.seek(SeekFrom::Start(offset))?;
    let mut out = fs::File::create(dst).with_context(|| format!("{}", dst.display()))?;
    let n = std::io::copy(&mut src.take(size), &mut out)?;
    if n != size {
        bail!("read {n} of {size} bytes");
    }
    Ok(())
}

/// The MD5 of `file` in hex, from the host's `md5sum`.
fn md5sum(file: &Path) -> Result<String> {
    let out = std::process::Command::new("md5sum")
        .arg(file)
        .output()
        .context("cannot run md5sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(sum) if out.status.success() && sum.len() == 32 => Ok(sum.to_owned()),
        _ => bail!("md5sum {} failed", file.display()),
    }
}

/// Runs `verify-stream-v2 -f xl -v -i FILE` from Xen's tools in `tools`
/// (the unpacked `usr/lib/xen-4.17`) with the host's python3: its exit
/// status (`None`: killed) and what it printed (stdout, then stderr).
fn verify_stream(tools: &Path, file: &Path) -> Result<(Option<i32>, String)> {
    let out = std::process::Command::new("python3")
        .arg(tools.join("bin/verify-stream-v2"))
        .args(["-f", "xl", "-v", "-i"])
        .arg(file)
        .env("PYTHONPATH", tools.join("lib/python"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run python3 (Xen's verify-stream-v2 is Python)")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code(), text))
}

/// One line about what `verify-stream-v2 -v` saw: the domain header, the
/// records it listed and how many PAGE_DATA records it squashed.
fn verify_summary(output: &str) -> String {
    let mut header = None;
    let (mut libxc, mut libxl, mut pages) = (0usize, 0usize, 0u64);
    for l in output.lines() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix("Domain Header: ") {
            header = Some(h);
        } else if l.starts_with("Libxc Record: ") {
            libxc += 1;
        } else if l.starts_with("Libxl Record: ") {
            libxl += 1;
        } else if let Some(n) = l
            .strip_prefix("Squashed ")
            .and_then(|r| r.strip_suffix(" Page Data records together"))
        {
            pages += n.parse::<u64>().unwrap_or(0);
        }
    }
    format!(
        "{}; {libxl} libxl + {libxc} libxc records, {pages} PAGE_DATA",
        header.unwrap_or("no domain header")
    )
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
}

/// Collects what one scenario prints: its console lines, markers and files.
struct Recorder<'a> {
    scenario: &'a str,
    dir: PathBuf,
    names: Vec<String>,
    console: String,
    files: Vec<Option<(String, String)>>,
    begun: Vec<bool>,
    /// Which hosts answered BAD-COMMAND since this was last cleared.
    garbled: Vec<bool>,
    ended: Vec<Option<i32>>,
    out: Outcome,
}

impl Recorder<'_> {
    /// Takes one line.
    fn line(&mut self, l: &qemu::Line) {
        let host = &self.names[l.host];
        let _ = writeln!(self.console, "[{:8.2}] {host} {}", l.at, l.text);
        let m = Marker::parse(&l.text);
        if let Some((fname, body)) = &mut self.files[l.host] {
            if m == Some(Marker::FileEnd(fname.as_str())) {
                let suffix = if self.names.len() > 1 {
                    format!(".{host}")
                } else {
                    String::new()
                };
                let _ = fs::write(self.dir.join(format!("{fname}{suffix}")), body.as_bytes());
                self.files[l.host] = None;
            } else {
                body.push_str(&l.text);
                body.push('\n');
            }
            return;
        }
        let out = &mut self.out;
        match m {
            Some(Marker::ScenarioBegin(n)) if n == self.scenario => self.begun[l.host] = true,
            Some(Marker::ScenarioEnd { name, rc, .. }) if name == self.scenario => {
                self.ended[l.host] = Some(rc)
            }
            Some(Marker::StepEnd { name, rc, secs }) => {
                out.steps.push((host.clone(), name.into(), rc, secs))
            }
            Some(Marker::Report { key, value }) => {
                out.reports.push((host.clone(), key.into(), value.into()))
            }
            Some(Marker::Fail(msg)) => out.fails.push(format!("{host}: {msg}")),
            Some(Marker::FileBegin(n)) => self.files[l.host] = Some((n.to_owned(), String::new())),
            Some(Marker::Export {
                name,
                offset,
                size,
                md5,
            }) => out.exports.push(Export {
                host: l.host,
                name: name.into(),
                offset,
                size,
                md5: md5.into(),
            }),
            Some(Marker::BadCommand(_)) => self.garbled[l.host] = true,
            _ => {}
        }
    }

    fn all_begun(&self) -> bool {
        self.begun.iter().all(|b| *b)
    }

    fn all_ended(&self) -> bool {
        self.ended.iter().all(Option::is_some)
    }
}

/// Runs one scenario on every host of the lab and collects its console
/// lines and files into `logs/NAME/`.
fn run_scenario(
    lab: &mut Lab,
    s: &Scenario,
    hosts: usize,
    logs: &Path,
    xfer: &[PathBuf],
    tools: &Path,
) -> Result<Outcome> {
    let dir = logs.join(s.name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let t0 = lab.elapsed();
    let mut rec = Recorder {
        scenario: s.name,
        dir: dir.clone(),
        names: (0..hosts).map(|i| lab.name(i).to_owned()).collect(),
        console: String::new(),
        files: vec![None; hosts],
        begun: vec![false; hosts],
        garbled: vec![false; hosts],
        ended: vec![None; hosts],
        out: Outcome {
            name: s.name.into(),
            ..Default::default()
        },
    };

    // type the command. A host that answers BAD-COMMAND (characters lost
    // on the way) gets it again; one that says nothing gets a bare newline,
    // which ends a command whose newline was lost and is ignored otherwise,
    // so a slow host never runs a scenario twice.
    let cmd = format!("run {}", s.name);
    for i in 0..hosts {
        lab.send(i, &cmd)?;
    }
    let mut tries = 0;
    while !rec.all_begun() {
        tries += 1;
        if tries > 3 {
            rec.out.note = "the command loop never started it".into();
            break;
        }
        rec.garbled.fill(false);
        let r = lab.expect(ACK_TIMEOUT, |l| {
            rec.line(l);
            (rec.garbled.iter().any(|g| *g) || rec.all_begun()).then_some(())
        });
        match r {
            Err(Gave::Closed(h)) => {
                rec.out.note = format!("QEMU of host {h} exited");
                break;
            }
            Err(Gave::Timeout) => {
                for i in 0..hosts {
                    if !rec.begun[i] {
                        lab.send(i, "")?;
                    }
                }
            }
            Ok(()) => {
                for i in 0..hosts {
                    if rec.garbled[i] && !rec.begun[i] {
                        lab.send(i, &cmd)?;
                    }
                }
            }
        }
    }
    if rec.all_begun() {
        let r = lab.expect(s.timeout, |l| {
            rec.line(l);
            rec.all_ended().then_some(())
        });
        match r {
            Ok(()) => {
                let worst = rec.ended.iter().flatten().copied().find(|rc| *rc != 0);
                rec.out.rc = Some(worst.unwrap_or(0));
            }
            Err(Gave::Timeout) => {
                rec.out.note = format!("timed out after {} s", s.timeout.as_secs())
            }
            Err(Gave::Closed(h)) => rec.out.note = format!("QEMU of host {h} exited"),
        }
    }
    rec.out.secs = lab.elapsed() - t0;
    fs::write(dir.join("console.log"), &rec.console)?;
    check_exports(&mut rec.out, &dir, xfer, &rec.names, tools);
    Ok(rec.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_ends_within_the_test_budget() {
        // `cargo xtask test` must end within 45 minutes, about eight of
        // them before e2e starts (a clean clone). No scenario starts past
        // the deadline unless it can end by it; the last one may overrun by
        // its acknowledgements and the hosts' power-off.
        assert!(
            RUN_BUDGET + ACK_TIMEOUT * 3 + Duration::from_secs(20) <= Duration::from_secs(37 * 60)
        );
        // the FLASK scenarios share one pair of FLASK hosts (one boot, one
        // relocd domain a host)
        for s in SCENARIOS.iter().chain(scenario::BY_NAME_ONLY) {
            if s.xen == XenBuild::Flask {
                assert_eq!(s.hosts, 2, "{}", s.name);
            }
        }
        // every scenario fits a run on its own, boot and all
        for s in SCENARIOS.iter().chain(scenario::BY_NAME_ONLY) {
            assert!(BOOT_TIMEOUT + s.timeout < RUN_BUDGET / 2, "{}", s.name);
        }
    }

    #[test]
    fn recorder_keeps_markers_files_and_garbled_commands_per_host() {
        let dir = std::env::temp_dir().join(format!("relocd-e2e-rec-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut rec = Recorder {
            scenario: "guest",
            dir: dir.clone(),
            names: vec!["A".into(), "B".into()],
            console: String::new(),
            files: vec![None, None],
            begun: vec![false, false],
            garbled: vec![false, false],
            ended: vec![None, None],
            out: Outcome::default(),
        };
        let lines = [
            (1, "E2E-BAD-COMMAND 'rn'"),
            (0, "E2E-SCENARIO-BEGIN guest"),
            (0, "E2E-SCENARIO-BEGIN other"),
            (0, "E2E-STEP-END save 0 1.25"),
            (0, "E2E-FILE-BEGIN log.txt"),
            (1, "E2E-SCENARIO-BEGIN guest"),
            (0, "GUEST counter=1 sum=00"),
            (0, "E2E-STEP-END not-a-step 0 1.0"),
            (0, "E2E-FILE-END log.txt"),
            (
                1,
                "E2E-EXPORT b.save 1048576 7 d41d8cd98f00b204e9800998ecf8427e",
            ),
            (1, "E2E-FAIL no peer"),
            (1, "E2E-REPORT k=v"),
            (0, "E2E-SCENARIO-END guest 0 3.00"),
            (1, "E2E-SCENARIO-END guest 1 3.10"),
        ];
        for (i, (host, text)) in lines.iter().enumerate() {
            rec.line(&qemu::Line {
                host: *host,
                at: i as f64,
                text: text.to_string(),
            });
            if i == 0 {
                assert_eq!(rec.garbled, [false, true]);
                assert!(!rec.all_begun());
            }
        }
        assert!(rec.all_begun() && rec.all_ended());
        assert_eq!(rec.ended, [Some(0), Some(1)]);
        assert_eq!(rec.out.steps, [("A".into(), "save".into(), 0, 1.25)]);
        assert_eq!(rec.out.reports, [("B".into(), "k".into(), "v".into())]);
        assert_eq!(rec.out.fails, ["B: no peer"]);
        assert_eq!(
            rec.out.exports,
            [Export {
                host: 1,
                name: "b.save".into(),
                offset: 1 << 20,
                size: 7,
                md5: "d41d8cd98f00b204e9800998ecf8427e".into(),
            }]
        );
        // inside a file, markers are text; with two hosts the host is a suffix
        let file = fs::read_to_string(dir.join("log.txt.A")).unwrap();
        assert_eq!(
            file,
            "GUEST counter=1 sum=00\nE2E-STEP-END not-a-step 0 1.0\n"
        );
        assert_eq!(rec.console.lines().count(), lines.len());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exported_files_are_copied_off_the_disk_and_their_md5_checked() {
        let dir = std::env::temp_dir().join(format!("relocd-e2e-xfer-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("xfer.img");
        let mut bytes = vec![0u8; 3 << 20];
        bytes[1 << 20..(1 << 20) + 3].copy_from_slice(b"abc");
        fs::write(&disk, &bytes).unwrap();
        let export = |name: &str, offset, size, md5: &str| Export {
            host: 0,
            name: name.into(),
            offset,
            size,
            md5: md5.into(),
        };
        let mut out = Outcome {
            exports: vec![
                export("abc.txt", 1 << 20, 3, "900150983cd24fb0d6963f7d28e17f72"),
                export("bad.txt", 1 << 20, 3, "00000000000000000000000000000000"),
                export(
                    "past-end.save",
                    3 << 20,
                    1,
                    "0cc175b9c0f1b6a831c399e269772661",
                ),
            ],
            ..Default::default()
        };
        // no verifier in `tools`: no .save file gets as far as needing one
        check_exports(&mut out, &dir, &[disk], &["A".into()], &dir.join("none"));
        assert_eq!(fs::read(dir.join("abc.txt")).unwrap(), b"abc");
        assert_eq!(
            out.reports,
            [(
                "A".into(),
                "export_abc.txt".into(),
                "3 bytes, md5 matches dom0's".into()
            )]
        );
        assert_eq!(out.fails.len(), 2, "{:?}", out.fails);
        assert!(out.fails[0].contains("bad.txt has md5 900150983cd24fb0d6963f7d28e17f72"));
        assert!(out.fails[1].contains("past-end.save"), "{}", out.fails[1]);
        assert!(out.exports.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summarises_what_the_verifier_printed() {
        let accepted = "Processed xl header\nLibxl Header: little endian\n\
            Libxl Record: Libxc context, length 0\n\
            Libxc Image Header: Version 3, little endian\n\
            Domain Header: x86 PV from Xen 4.17\n\
            Libxc Record: x86 PV info, length 8\n  64bit guest, 4 levels of pagetables\n\
            Libxc Record: x86 PV P2M frames, length 520\n\
            Squashed 32 Page Data records together\n\
            Libxc Record: TSC info, length 24\n\
            Squashed 3 Page Data records together\n\
            Libxc Record: End, length 0\nLibxl Record: End, length 0\n";
        assert_eq!(
            verify_summary(accepted),
            "x86 PV from Xen 4.17; 2 libxl + 4 libxc records, 35 PAGE_DATA"
        );
        let rejected = "Processed xl header\nStream Error:\nTraceback (most recent call last):\n\
            OSError: Stream truncated\n\n";
        assert_eq!(
            verify_summary(rejected),
            "no domain header; 0 libxl + 0 libxc records, 0 PAGE_DATA"
        );
        assert_eq!(last_line(rejected), "OSError: Stream truncated");
        assert_eq!(last_line(""), "(no output)");
    }

    #[test]
    fn relocd_e2e_variable() {
        assert_eq!(e2e_mode(None).unwrap(), Some(false));
        assert_eq!(e2e_mode(Some("")).unwrap(), Some(false));
        assert_eq!(e2e_mode(Some("1")).unwrap(), Some(true));
        assert_eq!(e2e_mode(Some("0")).unwrap(), None);
        assert!(e2e_mode(Some("yes")).is_err());
    }

    #[test]
    fn a_skip_is_a_failure_only_when_strict() {
        let unavailable =
            || -> Result<Summary> { Err(anyhow::Error::new(Unavailable("no QEMU here".into()))) };
        // an Unavailable that picked up context on its way up is still one
        let wrapped = || -> Result<Summary> {
            Err(anyhow::Error::new(Unavailable("no mirror".into())).context("building debs"))
        };
        assert!(settle(false, unavailable()).is_ok());
        assert!(settle(false, wrapped()).is_ok());
        let e = settle(true, unavailable()).unwrap_err();
        assert!(format!("{e:#}").contains("RELOCD_E2E=1"), "{e:#}");
        assert!(format!("{e:#}").contains("no QEMU here"), "{e:#}");
        assert!(settle(true, wrapped()).is_err());
        // any other error, and any failed or not-run scenario, fails either way
        for strict in [false, true] {
            assert!(settle(strict, Err(anyhow::anyhow!("xl crashed"))).is_err());
            assert!(settle(strict, Ok(Summary { failed: 1 })).is_err());
            assert!(settle(strict, Ok(Summary { failed: 0 })).is_ok());
        }
    }

    #[test]
    fn options_and_scenario_choice() {
        let args: Vec<String> = ["--xen", "stock", "-k", "guest", "boot"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse_args(&args).unwrap();
        assert_eq!(o.xen, Some(XenBuild::Any));
        assert!(o.keep_going && !o.list);
        let chosen = choose(&o.names).unwrap();
        assert_eq!(
            chosen.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["guest", "boot"]
        );
        assert_eq!(choose(&[]).unwrap().len(), SCENARIOS.len());
        assert!(choose(&["nope".into()]).is_err());
        assert!(parse_args(&["--xen".into(), "kvm".into()]).is_err());
        assert!(parse_args(&["--frobnicate".into()]).is_err());
    }
}
