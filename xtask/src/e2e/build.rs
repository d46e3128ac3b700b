//! Everything a virtual Xen host boots, built from Debian's packages and
//! cached under `target/e2e-cache/`:
//!
//! - `debs/`, `root/`: the packages (`apt-get download`) and their unpacked
//!   tree (`dpkg-deb -x`), redone only when the set of `.deb` files changes;
//! - `out/xen.elf`: Debian's `xen-hypervisor-4.17-amd64`, unzipped (QEMU's
//!   multiboot loader takes the ELF);
//! - `out/xen-shadow.elf`: the same hypervisor rebuilt from Debian's `xen`
//!   source package with `CONFIG_SHADOW_PAGING=y`, which PV log-dirty (and so
//!   live migration) needs and Debian's build leaves out; built once;
//! - `out/vmlinuz`: Debian's 6.1 kernel, for dom0 and for the test guest;
//! - `out/guest.cpio`, `out/dom0.cpio`: the initramfs images, rebuilt on
//!   every run (a second or so) from `xtask/lab/` and the relocd built here.

use super::cpio;
use super::Unavailable;
use crate::{cargo, display, ensure_debian, have, run};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Debian packages the images are made of; the kernel package is added
/// (resolved from `linux-image-amd64`).
const PACKAGES: &[&str] = &[
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenmisc4.17",
    "libxenstore4",
    "libxentoollog1",
    "libxendevicemodel1",
    "libxenhypfs1",
    "libxentoolcore1",
    "libyajl2",
    "libext2fs2",
    "libcom-err2",
    "liblzma5",
    "libuuid1",
    "libzstd1",
    "zlib1g",
    "libncurses6",
    "libtinfo6",
    "libc6",
    "libgcc-s1",
    "busybox-static",
    // Xen's hotplug scripts (/etc/xen/scripts, from xen-utils-common) are
    // bash and take their locks with flock(1), which busybox lacks
    "bash",
    "util-linux",
];

/// The Xen userland dom0 carries (paths in the unpacked tree).
const XEN_BINS: &[&str] = &[
    "usr/lib/xen-4.17/bin/xl",
    "usr/lib/xen-4.17/bin/xenstored",
    "usr/lib/xen-4.17/bin/xenconsoled",
    "usr/lib/xen-4.17/bin/xenconsole",
    "usr/lib/xen-4.17/bin/libxl-save-helper",
    "usr/lib/xen-4.17/bin/xen-init-dom0",
    "usr/lib/xen-4.17/bin/xenstore-control",
    "usr/lib/xen-4.17/bin/xentop",
    "usr/bin/xenstore",
    "usr/bin/xen-detect",
];

/// Other programs dom0 carries from the packages: what Xen's hotplug
/// scripts run that busybox does not have (`ip`, `brctl`, `stat`,
/// `readlink`, `losetup`, `logger`, `expr`, `which` are busybox applets).
const OTHER_BINS: &[&str] = &["bin/bash", "usr/bin/flock"];

/// Xen's hotplug scripts, as xen-utils-common installs them: libxl runs
/// `vif-bridge` and `block` from here when a guest gets a vif or a vbd.
const HOTPLUG_DIR: &str = "etc/xen/scripts";

/// Kernel modules dom0 loads (all in the Debian kernel package); the init
/// script loads them in this order.
const MODULES: &[&str] = &[
    "drivers/xen/xen-evtchn",
    "drivers/xen/xen-privcmd",
    "drivers/xen/xenfs/xenfs",
    "drivers/xen/xen-gntdev",
    "drivers/xen/xen-gntalloc",
    "drivers/net/ethernet/intel/e1000/e1000",
    // the transfer disk (virtio-blk over PCI)
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
    // the guests' network: the bridge xenbr0 and netback's vifN.M ports
    "net/llc/llc",
    "net/802/stp",
    "net/bridge/bridge",
    "drivers/net/xen-netback/xen-netback",
    // the guests' disks: blkback, and loop for `file:` disks
    "drivers/block/xen-blkback/xen-blkback",
    "drivers/block/loop",
];

/// Kernel modules the test guest loads when it has a vif and a vbd
/// (`e2e.dev=1`): netfront (eth0) and blkfront (/dev/xvda).
const GUEST_MODULES: &[&str] = &["drivers/net/xen-netfront", "drivers/block/xen-blkfront"];

const LIB_DIRS: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"];
pub(super) const LDSO: &str = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

/// What the hosts boot.
pub struct Artifacts {
    /// Debian's hypervisor.
    pub xen_stock: PathBuf,
    /// The shadow-paging rebuild, when it was asked for and built.
    pub xen_shadow: Option<PathBuf>,
    /// The dom0 (and guest) kernel.
    pub kernel: PathBuf,
    /// The dom0 initramfs.
    pub dom0_initrd: PathBuf,
    /// Xen's tools from the unpacked `xen-utils-4.17` (the package dom0
    /// runs), for Xen's stream verifier on the host: `bin/verify-stream-v2`
    /// and its `lib/python`.
    pub xen_tools: PathBuf,
    /// How long each build phase took, and whether it came from the cache.
    pub phases: Vec<Phase>,
}

/// One timed build phase.
pub struct Phase {
    /// What was built.
    pub name: &'static str,
    /// Seconds it took.
    pub secs: f64,
    /// Whether the cache had it.
    pub cached: bool,
}

/// Builds (or finds in `cache`) everything; `shadow`: also the rebuilt
/// hypervisor.
pub fn prepare(ws_root: &Path, cache: &Path, shadow: bool) -> Result<Artifacts> {
    let out = cache.join("out");
    fs::create_dir_all(&out)?;
    let mut phases = Vec::new();
    let mut timed = |name, f: &mut dyn FnMut() -> Result<bool>| -> Result<()> {
        let t = Instant::now();
        eprintln!("e2e: building {name}");
        let cached = f()?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "e2e: {name}: {secs:.1} s{}",
            if cached { " (cached)" } else { "" }
        );
        phases.push(Phase { name, secs, cached });
        Ok(())
    };

    let root = cache.join("root");
    timed("debian-packages", &mut || fetch_and_unpack(cache, &root))?;
    let kver = kernel_release(&root)?;
    timed("xen-stock", &mut || {
        let dst = out.join("xen.elf");
        let fresh = is_newer(&dst, &root.join(".stamp"));
        if !fresh {
            let gz = fs::File::open(root.join("boot/xen-4.17-amd64.gz"))?;
            let elf = fs::File::create(&dst)?;
            run(Command::new("gzip").arg("-dc").stdin(gz).stdout(elf))?;
        }
        Ok(fresh)
    })?;
    let mut xen_shadow = None;
    if shadow {
        timed("xen-shadow", &mut || {
            let (path, cached) = build_shadow_xen(cache, &root)?;
            xen_shadow = Some(path);
            Ok(cached)
        })?;
    }
    let relocd = out.join("relocd");
    timed("relocd", &mut || {
        build_relocd(ws_root, &relocd).map(|_| false)
    })?;
    let lab = ws_root.join("xtask/lab");
    let kernel = out.join("vmlinuz");
    let guest_initrd = out.join("guest.cpio");
    let dom0_initrd = out.join("dom0.cpio");
    timed("images", &mut || {
        fs::copy(root.join(format!("boot/vmlinuz-{kver}")), &kernel)?;
        let n = guest_image(&root, &lab, &kver, &guest_initrd)?;
        eprintln!("e2e: guest initramfs {} KiB", n / 1024);
        let certs = lab_certs(&out.join("tls"))?;
        let n = dom0_image(
            &root,
            &lab,
            &kver,
            &kernel,
            &guest_initrd,
            &relocd,
            &certs,
            &dom0_initrd,
        )?;
        eprintln!("e2e: dom0 initramfs {} KiB", n / 1024);
        Ok(false)
    })?;
    Ok(Artifacts {
        xen_stock: out.join("xen.elf"),
        xen_shadow,
        kernel,
        dom0_initrd,
        xen_tools: root.join("usr/lib/xen-4.17"),
        phases,
    })
}

fn is_newer(a: &Path, b: &Path) -> bool {
    let m = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(a), m(b)), (Some(x), Some(y)) if x >= y)
}

/// `apt-get download`s what is not in `debs/` yet, then unpacks all of it
/// into `root` unless `root/.stamp` already lists exactly these files.
/// Returns whether everything came from the cache.
fn fetch_and_unpack(cache: &Path, root: &Path) -> Result<bool> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let kernel_pkg = kernel_package()?;
    let mut wanted: Vec<&str> = PACKAGES.to_vec();
    wanted.push(&kernel_pkg);
    let have_deb = |pkg: &str| -> Result<bool> {
        Ok(fs::read_dir(&debs)?.filter_map(|e| e.ok()).any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")
        }))
    };
    let mut missing = Vec::new();
    for p in &wanted {
        if !have_deb(p)? {
            missing.push(*p);
        }
    }
    if !missing.is_empty() {
        eprintln!("e2e: downloading {} Debian packages", missing.len());
        let download = || {
            run(Command::new("apt-get")
                // root's downloads into a folder _apt cannot write to
                .arg("-oAPT::Sandbox::User=root")
                .arg("download")
                .args(&missing)
                .current_dir(&debs))
        };
        if download().is_err() {
            eprintln!("e2e: apt-get download failed; running apt-get update and trying again");
            apt_update()?;
            download()
                .map_err(|e| Unavailable(format!("cannot download Debian packages: {e:#}")))?;
        }
    }
    let mut files: Vec<String> = fs::read_dir(&debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deb"))
        .filter(|n| wanted.iter().any(|p| n.starts_with(&format!("{p}_"))))
        .collect();
    files.sort();
    let stamp = files.join("\n");
    if fs::read_to_string(root.join(".stamp")).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(missing.is_empty());
    }
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::create_dir_all(root)?;
    for f in &files {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(debs.join(f))
            .arg(root)
            .status()
            .context("dpkg-deb is needed to unpack the packages")?;
        if !status.success() {
            bail!("dpkg-deb -x {f} failed");
        }
    }
    fs::write(root.join(".stamp"), stamp)?;
    eprintln!("e2e: unpacked {} packages", files.len());
    Ok(false)
}

fn apt_update() -> Result<()> {
    run(Command::new("apt-get").args(["update", "-q"]))
        .map_err(|e| Unavailable(format!("apt-get update failed: {e:#}")).into())
}

/// The real kernel package behind the `linux-image-amd64` metapackage.
fn kernel_package() -> Result<String> {
    for attempt in 0..2 {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .output()
            .context("apt-cache is needed to find the kernel package")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let found = text.lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends: ")?.trim();
            dep.strip_prefix("linux-image-")?
                .starts_with(|c: char| c.is_ascii_digit())
                .then(|| dep.to_owned())
        });
        if let Some(pkg) = found {
            return Ok(pkg);
        }
        if attempt == 0 {
            eprintln!("e2e: apt knows no linux-image-amd64; running apt-get update");
            apt_update()?;
        }
    }
    Err(Unavailable("apt cannot resolve linux-image-amd64".into()).into())
}

fn kernel_release(root: &Path) -> Result<String> {
    let mut v: Vec<String> = fs::read_dir(root.join("lib/modules"))
        .context("the kernel package has no lib/modules")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    match v.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in lib/modules, found {v:?}"),
    }
}

/// Rebuilds the hypervisor with shadow paging from Debian's `xen` source
/// package (the newest version the mirror serves), using Debian's own
/// `.config` plus `CONFIG_SHADOW_PAGING=y`. apt's view of the deb-src
/// index is private to the cache: the system's apt sources are not
/// touched.
fn build_shadow_xen(cache: &Path, root: &Path) -> Result<(PathBuf, bool)> {
    let out = cache.join("out/xen-shadow.elf");
    let dir = cache.join("xen-src");
    let stamp = dir.join("built-from");
    if out.is_file() && stamp.is_file() {
        return Ok((out, true));
    }
    ensure_all(&[
        ("flex", "flex"),
        ("bison", "bison"),
        ("gcc", "gcc"),
        ("make", "make"),
        ("python3", "python3"),
        ("dpkg-source", "dpkg-dev"),
        ("xz", "xz-utils"),
    ])
    .map_err(|e| Unavailable(format!("cannot build Xen: {e:#}")))?;
    let apt = dir.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "parts", "prefs"] {
        fs::create_dir_all(apt.join(d))?;
    }
    fs::write(
        apt.join("sources.list"),
        "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian bookworm main\n\
         deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian bookworm-updates main\n\
         deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian-security bookworm-security main\n",
    )?;
    let apt_cmd = |prog: &str| {
        let mut c = Command::new(prog);
        c.arg("-q")
            .arg(format!(
                "-oDir::Etc::SourceList={}",
                apt.join("sources.list").display()
            ))
            .arg(format!(
                "-oDir::Etc::SourceParts={}",
                apt.join("parts").display()
            ))
            .arg(format!(
                "-oDir::Etc::PreferencesParts={}",
                apt.join("prefs").display()
            ))
            .arg(format!(
                "-oDir::State::Lists={}",
                apt.join("lists").display()
            ))
            .arg(format!("-oDir::Cache={}", apt.join("cache").display()))
            .arg("-oAPT::Sandbox::User=root");
        c
    };
    run(apt_cmd("apt-get").arg("update"))
        .map_err(|e| Unavailable(format!("cannot read Debian's source index: {e:#}")))?;
    let listing = apt_cmd("apt-cache")
        .args(["showsrc", "xen"])
        .output()
        .context("apt-cache showsrc xen")?;
    let mut versions: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Version: ").map(|v| v.trim().to_owned()))
        .filter(|v| v.starts_with("4.17"))
        .collect();
    versions.sort_by(|a, b| dpkg_order(b, a));
    versions.dedup();
    let dl = dir.join("download");
    fs::create_dir_all(&dl)?;
    let mut got = None;
    for v in &versions {
        eprintln!("e2e: fetching the source of xen {v}");
        let ok = apt_cmd("apt-get")
            .args(["source", "--download-only", &format!("xen={v}")])
            .current_dir(&dl)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            got = Some(v.clone());
            break;
        }
        eprintln!("e2e: the source of xen {v} cannot be downloaded here; trying an older one");
    }
    let Some(version) = got else {
        return Err(Unavailable(format!(
            "no Xen 4.17 source package can be downloaded (tried {versions:?})"
        ))
        .into());
    };
    // the .dsc name drops the epoch, if any
    let plain = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
    let dsc = dl.join(format!("xen_{plain}.dsc"));
    let src = dir.join("src");
    if src.exists() {
        fs::remove_dir_all(&src)?;
    }
    run(Command::new("dpkg-source")
        .arg("--no-check")
        .arg("-x")
        .arg(&dsc)
        .arg(&src))?;
    let xen = src.join("xen");
    fs::copy(root.join("boot/xen-4.17-amd64.config"), xen.join(".config"))?;
    let config = fs::read_to_string(xen.join(".config"))?;
    let config = config.replace(
        "# CONFIG_SHADOW_PAGING is not set",
        "CONFIG_SHADOW_PAGING=y",
    );
    fs::write(xen.join(".config"), config)?;
    let make = |args: &[&str]| -> Result<()> {
        let log = fs::File::create(dir.join("build.log"))?;
        let mut c = Command::new("make");
        c.args(args)
            .current_dir(&xen)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .stdout(log.try_clone()?)
            .stderr(log);
        eprintln!(
            "e2e: $ {} (output in {})",
            display(&c),
            dir.join("build.log").display()
        );
        let status = c.status()?;
        if !status.success() {
            bail!(
                "`make {}` failed; see {}",
                args.join(" "),
                dir.join("build.log").display()
            );
        }
        Ok(())
    };
    make(&["olddefconfig"])?;
    if !fs::read_to_string(xen.join(".config"))?
        .lines()
        .any(|l| l == "CONFIG_SHADOW_PAGING=y")
    {
        bail!("CONFIG_SHADOW_PAGING=y did not survive `make olddefconfig`");
    }
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    make(&[&jobs, "XEN_VENDORVERSION=-e2e-shadow"])?;
    fs::copy(xen.join("xen"), &out)?;
    fs::write(&stamp, &version)?;
    // the unpacked tree is big; the image and the download are kept
    let _ = fs::remove_dir_all(&src);
    Ok((out, false))
}

/// Installs the packages of the programs that are missing, in one go.
pub fn ensure_all(progs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = progs.iter().filter(|(p, _)| !have(p)).collect();
    match missing.first() {
        None => Ok(()),
        Some((first, _)) => {
            let pkgs: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
            ensure_debian(first, &pkgs)
        }
    }
}

/// Debian version order, from `dpkg --compare-versions`.
fn dpkg_order(a: &str, b: &str) -> std::cmp::Ordering {
    let cmp = |op: &str| {
        Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if cmp("lt") {
        std::cmp::Ordering::Less
    } else if cmp("gt") {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

/// `cargo build --release -p relocd`, the binary stripped of debug info.
fn build_relocd(ws_root: &Path, dst: &Path) -> Result<()> {
    run(cargo()
        .args(["build", "--release", "-p", "relocd"])
        .current_dir(ws_root))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws_root.join("target"));
    let bin = target.join("release/relocd");
    if have("objcopy") {
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&bin)
            .arg(dst))
    } else {
        fs::copy(&bin, dst).map(|_| ()).map_err(Into::into)
    }
}

/// The shared libraries `bins` need, as resolved by the unpacked glibc's
/// own loader (`ld.so --list`) inside `root`: paths relative to `root`.
/// Fails when one is missing or would come from the build machine.
pub(super) fn needed_libs(root: &Path, bins: &[PathBuf]) -> Result<Vec<String>> {
    let path = LIB_DIRS
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut libs = Vec::new();
    for bin in bins {
        let out = Command::new(root.join(LDSO))
            .arg("--list")
            .arg(bin)
            .env("LD_LIBRARY_PATH", &path)
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("ld.so --list {}", bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let errors = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !errors.trim().is_empty() {
            bail!(
                "{} cannot be loaded with dom0's libraries: {}{}",
                bin.display(),
                errors.trim(),
                text.trim()
            );
        }
        for lib in parse_ldso_list(&text).map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))? {
            let rel = Path::new(&lib)
                .strip_prefix(root)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{} would load {lib} from outside dom0's image",
                        bin.display()
                    )
                })?
                .display()
                .to_string();
            if !libs.contains(&rel) {
                libs.push(rel);
            }
        }
    }
    libs.sort();
    Ok(libs)
}

/// The resolved paths in `ld.so --list` output (`name => path (addr)`);
/// an error names a library marked `not found`.
fn parse_ldso_list(text: &str) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once("=>") else {
            continue; // the vDSO and the loader itself
        };
        let rest = rest.trim();
        if rest.starts_with("not found") {
            return Err(format!("{} not found", name.trim()));
        }
        let path = rest.split_whitespace().next().unwrap_or("");
        if !path.starts_with('/') {
            return Err(format!("cannot read the line `{}`", line.trim()));
        }
        v.push(path.to_owned());
    }
    Ok(v)
}

/// Adds busybox and a link per applet.
pub(super) fn add_busybox<W: std::io::Write>(a: &mut cpio::Writer<W>, root: &Path) -> Result<()> {
    let busybox = root.join("bin/busybox");
    a.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
    let out = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        a.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for d in [
        "dev", "proc", "sys", "tmp", "run", "root", "etc", "sbin", "usr/bin", "usr/sbin",
    ] {
        a.dir(d, 0o755)?;
    }
    Ok(())
}

fn script(lab: &Path, rel: &str) -> Result<Vec<u8>> {
    fs::read(lab.join(rel)).with_context(|| format!("cannot read xtask/lab/{rel}"))
}

fn write_image(
    dst: &Path,
    f: impl FnOnce(&mut cpio::Writer<std::io::BufWriter<fs::File>>) -> Result<()>,
) -> Result<u64> {
    let file = std::io::BufWriter::new(fs::File::create(dst)?);
    let mut a = cpio::Writer::new(file);
    f(&mut a)?;
    Ok(a.finish()?.1)
}

/// The test guest's initramfs: busybox, `lab/guest/init` and the
/// frontend modules.
fn guest_image(root: &Path, lab: &Path, kver: &str, dst: &Path) -> Result<u64> {
    write_image(dst, |a| {
        add_busybox(a, root)?;
        a.file("init", 0o755, &script(lab, "guest/init")?)?;
        add_modules(a, root, kver, GUEST_MODULES)
    })
}

/// Adds kernel modules (paths under the kernel's `kernel/` folder, no
/// `.ko`).
fn add_modules<W: std::io::Write>(
    a: &mut cpio::Writer<W>,
    root: &Path,
    kver: &str,
    modules: &[&str],
) -> Result<()> {
    for m in modules {
        let rel = format!("lib/modules/{kver}/kernel/{m}.ko");
        let data = fs::read(root.join(&rel))
            .with_context(|| format!("the kernel package has no {rel}"))?;
        a.file(&rel, 0o644, &data)?;
    }
    Ok(())
}

/// Adds every file of the folder `rel` of the unpacked tree, with its
/// mode (no subfolders: `etc/xen/scripts` has none).
fn add_tree_files<W: std::io::Write>(
    a: &mut cpio::Writer<W>,
    root: &Path,
    rel: &str,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .with_context(|| format!("the packages have no {rel}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        bail!("{rel} is empty in the unpacked packages");
    }
    names.sort();
    for n in names {
        let path = root.join(rel).join(&n);
        let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        a.file(&format!("{rel}/{n}"), mode, &fs::read(&path)?)?;
    }
    Ok(())
}

/// The TLS scenario's certificates (`relocd-migrate-tls`), made anew by
/// each build with openssl in `dir`: a CA, and for each dom0 a key and a
/// certificate for its link address and the name `hostX.e2e` (A
/// 169.254.0.1, B 169.254.0.2), for server and client use. Returned as
/// (name under `/e2e/tls/`, mode, bytes).
fn lab_certs(dir: &Path) -> Result<Vec<(String, u32, Vec<u8>)>> {
    ensure_debian("openssl", &["openssl"])?;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let openssl = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("openssl")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat()
        .into_iter()
        .chain(["-days", "30", "-subj", "/CN=relocd e2e CA"])
        .collect::<Vec<_>>(),
    )?;
    let mut files = vec![("ca.pem".to_owned(), 0o644, fs::read(dir.join("ca.pem"))?)];
    for (h, ip) in [("a", "169.254.0.1"), ("b", "169.254.0.2")] {
        let (key, csr, crt, ext) = (
            format!("{h}.key"),
            format!("{h}.csr"),
            format!("{h}.crt"),
            format!("{h}.ext"),
        );
        fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=IP:{ip},DNS:host{h}.e2e\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 keyUsage=critical,digitalSignature\n\
                 basicConstraints=critical,CA:FALSE\n"
            ),
        )?;
        let subj = format!("/CN=host{h}.e2e");
        openssl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ])?;
        files.push((key.clone(), 0o600, fs::read(dir.join(&key))?));
        files.push((crt.clone(), 0o644, fs::read(dir.join(&crt))?));
    }
    Ok(files)
}

/// dom0's initramfs: busybox, the Xen userland and its libraries, the
/// modules, relocd and its libraries, the lab scripts, the TLS scenario's
/// certificates and the test guest.
#[allow(clippy::too_many_arguments)]
fn dom0_image(
    root: &Path,
    lab: &Path,
    kver: &str,
    kernel: &Path,
    guest_initrd: &Path,
    relocd: &Path,
    certs: &[(String, u32, Vec<u8>)],
    dst: &Path,
) -> Result<u64> {
    let mut bins: Vec<PathBuf> = XEN_BINS
        .iter()
        .chain(OTHER_BINS)
        .map(|b| root.join(b))
        .collect();
    bins.push(relocd.to_path_buf());
    // the relocd domain of the driver-domain scenarios (see super::flask)
    let relocd_domain = dst.with_file_name("relocd-domain.cpio");
    super::flask::domain_image(root, lab, kver, relocd, &relocd_domain)?;
    let mut libs = needed_libs(root, &bins)?;
    // glibc dlopen()s libgcc_s for pthread_cancel: `xl create` aborts without it
    libs.push("lib/x86_64-linux-gnu/libgcc_s.so.1".into());
    libs.sort();
    libs.dedup();
    write_image(dst, |a| {
        add_busybox(a, root)?;
        for b in XEN_BINS.iter().chain(OTHER_BINS) {
            a.file(b, 0o755, &fs::read(root.join(b))?)?;
        }
        add_tree_files(a, root, HOTPLUG_DIR)?;
        // xenstore-read, -write, -ls, ...: the xenstore binary under other
        // names (hard links in the package), so links to it here
        for e in fs::read_dir(root.join("usr/bin"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("xenstore-") && e.file_type()?.is_file() {
                a.symlink(&format!("usr/bin/{name}"), "xenstore")?;
            }
        }
        for l in &libs {
            a.file(l, 0o755, &fs::read(root.join(l))?)?;
        }
        a.file(LDSO, 0o755, &fs::read(root.join(LDSO))?)?;
        a.symlink("lib64/ld-linux-x86-64.so.2", &format!("/{LDSO}"))?;
        add_modules(a, root, kver, MODULES)?;
        a.file(
            "etc/xen/xl.conf",
            0o644,
            &fs::read(root.join("etc/xen/xl.conf"))?,
        )?;
        a.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
        a.file("etc/group", 0o644, b"root:x:0:\n")?;
        a.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")?;
        a.file("etc/nsswitch.conf", 0o644, b"hosts: files\n")?;
        a.file("usr/local/bin/relocd", 0o755, &fs::read(relocd)?)?;
        a.file("init", 0o755, &script(lab, "dom0/init")?)?;
        a.file("e2e/lib.sh", 0o644, &script(lab, "dom0/lib.sh")?)?;
        a.file(
            "e2e/lib-migrate.sh",
            0o644,
            &script(lab, "dom0/lib-migrate.sh")?,
        )?;
        a.file("e2e/lib-dev.sh", 0o644, &script(lab, "dom0/lib-dev.sh")?)?;
        a.file("e2e/cmdloop.sh", 0o644, &script(lab, "dom0/cmdloop.sh")?)?;
        let mut names: Vec<_> = fs::read_dir(lab.join("scenarios"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sh"))
            .collect();
        names.sort();
        for n in names {
            a.file(
                &format!("e2e/scenarios/{n}"),
                0o644,
                &script(lab, &format!("scenarios/{n}"))?,
            )?;
        }
        for (name, mode, data) in certs {
            a.file(&format!("e2e/tls/{name}"), *mode, data)?;
        }
        a.file("e2e/guest/vmlinuz", 0o644, &fs::read(kernel)?)?;
        a.file("e2e/guest/initrd.cpio", 0o644, &fs::read(guest_initrd)?)?;
        for cfg in ["guest.cfg", "guest-dev.cfg"] {
            a.file(
                &format!("e2e/guest/{cfg}"),
                0o644,
                &script(lab, &format!("guest/{cfg}"))?,
            )?;
        }
        super::flask::add_to_dom0(a, root, kver, lab, &relocd_domain)?;
        for d in [
            "var/lib/xen/save",
            "var/log/xen/console",
            "var/lib/xenstored",
        ] {
            a.dir(d, 0o755)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_loader_listing() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd4a5f2000)\n\
                    \tlibxenlight.so.4.17 => /c/root/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17 (0x00007f1c)\n\
                    \tlibc.so.6 => /c/root/lib/x86_64-linux-gnu/libc.so.6 (0x00007f1b)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1d)\n";
        assert_eq!(
            parse_ldso_list(text).unwrap(),
            [
                "/c/root/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17",
                "/c/root/lib/x86_64-linux-gnu/libc.so.6"
            ]
        );
        let missing = "\tlibyajl.so.2 => not found\n";
        assert_eq!(
            parse_ldso_list(missing).unwrap_err(),
            "libyajl.so.2 not found"
        );
    }

    #[test]
    fn debian_version_order_comes_from_dpkg() {
        use std::cmp::Ordering::*;
        assert_eq!(
            dpkg_order("4.17.7+13-g2445b30a44-0+deb12u1", "4.17.5+72-g01140da4e8-1"),
            Greater
        );
        assert_eq!(
            dpkg_order("4.17.5+72-g01140da4e8-1", "4.17.5+72-g01140da4e8-1"),
            Equal
        );
        assert_eq!(dpkg_order("1:4.0", "4.17"), Greater);
    }
}
