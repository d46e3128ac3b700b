//! The FLASK variant of the lab (issue 16, `docs/driver-domain.md`):
//!
//! - `out/xen-flask.elf`: Xen rebuilt from the same Debian source package
//!   as `xen-shadow.elf`, with shadow paging and with XSM and FLASK
//!   (`CONFIG_XSM=y`, `CONFIG_XSM_FLASK=y`, FLASK the default module, no
//!   built-in policy); a separate image, so the default scenarios keep
//!   booting the shadow one;
//! - `out/xenpolicy-relocd`: Xen's example policy (`tools/flask/policy` of
//!   that source) with the module `xtask/lab/flask/relocd.te` added, built
//!   with Debian's `checkpolicy` and `m4`; rebuilt whenever the module
//!   changes (the policy sources are kept for that); plus the lab's
//!   amendment `xtask/lab/flask/lab.te` (dom0 may map a `nomigrate_t`
//!   guest's console grant while xl builds it, which the example policy
//!   misses);
//! - the relocd domain's initramfs (`out/relocd-domain.cpio`): busybox,
//!   relocd, the modules it needs (privcmd, xenfs, evtchn, gntdev,
//!   netfront) and `xtask/lab/dd/init`; dom0's image carries it with the
//!   domain's xl configuration under `/e2e/dd/`.
//!
//! The FLASK scenarios boot `xen-flask.elf` with `flask=enforcing` and the
//! policy as a second multiboot module (see [`boot_extras`]).

use super::build::ensure_all;
use super::cpio;
use super::Unavailable;
use crate::{display, run};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the FLASK hosts boot besides the kernel and dom0's initramfs.
pub struct FlaskBuild {
    /// Xen with shadow paging, XSM and FLASK.
    pub xen: PathBuf,
    /// The compiled policy (example policy + relocd.te).
    pub policy: PathBuf,
    /// Whether both came from the cache.
    pub cached: bool,
}

/// Xen's command-line words and extra modules of a FLASK host.
pub fn boot_extras(f: &FlaskBuild) -> (Vec<String>, Vec<PathBuf>) {
    (vec!["flask=enforcing".into()], vec![f.policy.clone()])
}

/// The kernel modules of the relocd domain (paths under
/// `lib/modules/KVER/kernel/`, without `.ko`), in load order.
pub const DOMAIN_MODULES: &[&str] = &[
    "drivers/xen/xen-evtchn",
    "drivers/xen/xen-privcmd",
    "drivers/xen/xenfs/xenfs",
    "drivers/xen/xen-gntdev",
    "drivers/net/xen-netfront",
];

/// Builds (or finds) the FLASK hypervisor and the policy, from the source
/// package `xen-src/download/` holds (fetched by the shadow build, which
/// runs first).
pub fn prepare(cache: &Path, lab: &Path) -> Result<FlaskBuild> {
    let out = cache.join("out");
    let xen = out.join("xen-flask.elf");
    let policy = out.join("xenpolicy-relocd");
    let dir = cache.join("xen-flask");
    let module = fs::read(lab.join("flask/relocd.te")).context("xtask/lab/flask/relocd.te")?;
    let amendment = fs::read(lab.join("flask/lab.te")).context("xtask/lab/flask/lab.te")?;
    // the stamp: both modules as compiled
    let modules = [module.clone(), b"\n".to_vec(), amendment.clone()].concat();
    let policy_stamp = dir.join("policy-module.te");
    let xen_cached = xen.is_file() && dir.join("built-from").is_file();
    let policy_cached = policy.is_file() && fs::read(&policy_stamp).ok() == Some(modules.clone());
    if xen_cached && policy_cached {
        return Ok(FlaskBuild {
            xen,
            policy,
            cached: true,
        });
    }
    ensure_all(&[
        ("flex", "flex"),
        ("bison", "bison"),
        ("gcc", "gcc"),
        ("make", "make"),
        ("python3", "python3"),
        ("dpkg-source", "dpkg-dev"),
        ("xz", "xz-utils"),
        ("checkpolicy", "checkpolicy"),
        ("m4", "m4"),
    ])
    .map_err(|e| Unavailable(format!("cannot build Xen with FLASK: {e:#}")))?;
    fs::create_dir_all(&dir)?;
    let policy_src = dir.join("policy-src");
    if !xen_cached || !policy_src.join("tools/flask/policy").is_dir() {
        let dsc = fs::read_dir(cache.join("xen-src/download"))
            .context("the Xen source package was not downloaded (the shadow build fetches it)")?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "dsc"))
            .context("no .dsc in xen-src/download")?;
        let src = dir.join("src");
        if src.exists() {
            fs::remove_dir_all(&src)?;
        }
        run(Command::new("dpkg-source")
            .arg("--no-check")
            .arg("-x")
            .arg(&dsc)
            .arg(&src))?;
        // the policy's sources, kept to rebuild the policy alone
        if policy_src.exists() {
            fs::remove_dir_all(&policy_src)?;
        }
        for rel in ["tools/flask/policy", "xen/xsm/flask/policy"] {
            let to = policy_src.join(rel);
            fs::create_dir_all(to.parent().unwrap_or(&policy_src))?;
            run(Command::new("cp").arg("-a").arg(src.join(rel)).arg(&to))?;
        }
        if !xen_cached {
            build_xen(cache, &src, &dir, &xen)?;
            fs::write(dir.join("built-from"), dsc.display().to_string())?;
        }
        let _ = fs::remove_dir_all(&src);
    }
    build_policy(&policy_src, &module, &amendment, &dir, &policy)?;
    fs::write(&policy_stamp, &modules)?;
    Ok(FlaskBuild {
        xen,
        policy,
        cached: false,
    })
}

/// The lines of Xen's `.config` the FLASK image changes from Debian's.
pub const CONFIG_CHANGES: &[(&str, &str)] = &[
    ("# CONFIG_SHADOW_PAGING is not set", "CONFIG_SHADOW_PAGING=y"),
    (
        "# CONFIG_XSM is not set",
        "CONFIG_XSM=y\nCONFIG_XSM_FLASK=y\n# CONFIG_XSM_FLASK_POLICY is not set\nCONFIG_XSM_FLASK_DEFAULT=y",
    ),
];

/// The lines `make olddefconfig` must leave in place.
const CONFIG_WANTED: &[&str] = &[
    "CONFIG_SHADOW_PAGING=y",
    "CONFIG_XSM=y",
    "CONFIG_XSM_FLASK=y",
    "CONFIG_XSM_FLASK_DEFAULT=y",
];

/// Debian's `.config` with [`CONFIG_CHANGES`]; fails when a line to
/// change is not there (another Debian configuration).
pub fn flask_config(debian: &str) -> Result<String> {
    let mut c = debian.to_owned();
    for (from, to) in CONFIG_CHANGES {
        if !c.lines().any(|l| l == *from) {
            bail!("Debian's Xen .config has no line `{from}`");
        }
        c = c.replace(from, to);
    }
    Ok(c)
}

fn build_xen(cache: &Path, src: &Path, dir: &Path, dst: &Path) -> Result<()> {
    let xen = src.join("xen");
    let debian = fs::read_to_string(cache.join("root/boot/xen-4.17-amd64.config"))?;
    fs::write(xen.join(".config"), flask_config(&debian)?)?;
    let log = dir.join("build.log");
    let make = |args: &[&str]| -> Result<()> {
        let f = fs::File::create(&log)?;
        let mut c = Command::new("make");
        c.args(args)
            .current_dir(&xen)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .stdout(f.try_clone()?)
            .stderr(f);
        eprintln!("e2e: $ {} (output in {})", display(&c), log.display());
        if !c.status()?.success() {
            bail!("`make {}` failed; see {}", args.join(" "), log.display());
        }
        Ok(())
    };
    make(&["olddefconfig"])?;
    let config = fs::read_to_string(xen.join(".config"))?;
    for want in CONFIG_WANTED {
        if !config.lines().any(|l| l == *want) {
            bail!("{want} did not survive `make olddefconfig`");
        }
    }
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    make(&[&jobs, "XEN_VENDORVERSION=-e2e-flask"])?;
    fs::copy(xen.join("xen"), dst)?;
    Ok(())
}

/// Xen's example policy with `module` added as `relocd.te` and the lab's
/// `amendment` as `lab.te`, compiled by the policy's own `Makefile.common`
/// (m4, then checkpolicy).
fn build_policy(
    policy_src: &Path,
    module: &[u8],
    amendment: &[u8],
    dir: &Path,
    dst: &Path,
) -> Result<()> {
    let work = dir.join("policy-build");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    run(Command::new("cp").arg("-a").arg(policy_src).arg(&work))?;
    let pol = work.join("tools/flask/policy");
    fs::write(pol.join("modules/relocd.te"), module)?;
    fs::write(pol.join("modules/lab.te"), amendment)?;
    let mut conf = fs::read_to_string(pol.join("modules/modules.conf"))?;
    conf.push_str(
        "\n# relocd in a driver domain (xtask/lab/flask/relocd.te)\nrelocd = on\n\
         \n# the lab's amendment of the example policy (xtask/lab/flask/lab.te)\nlab = on\n",
    );
    fs::write(pol.join("modules/modules.conf"), conf)?;
    let out = work.join("out");
    fs::create_dir_all(&out)?;
    run(Command::new("make")
        .arg("-f")
        .arg("Makefile.common")
        .arg(format!("FLASK_BUILD_DIR={}", out.display()))
        .arg("XEN_FULLVERSION=relocd")
        .current_dir(&pol)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS"))?;
    fs::copy(out.join("xenpolicy-relocd"), dst)?;
    // what was compiled, for reading the policy's rules back
    let _ = fs::copy(out.join("policy.conf"), dir.join("policy.conf"));
    Ok(())
}

/// The relocd domain's initramfs: busybox, relocd and the C libraries it
/// loads, [`DOMAIN_MODULES`], and `lab/dd/init` as `/init`.
pub fn domain_image(root: &Path, lab: &Path, kver: &str, relocd: &Path, dst: &Path) -> Result<u64> {
    let file = std::io::BufWriter::new(fs::File::create(dst)?);
    let mut a = cpio::Writer::new(file);
    super::build::add_busybox(&mut a, root)?;
    let libs = super::build::needed_libs(root, &[relocd.to_path_buf()])?;
    for l in &libs {
        a.file(l, 0o755, &fs::read(root.join(l))?)?;
    }
    let ldso = super::build::LDSO;
    a.file(ldso, 0o755, &fs::read(root.join(ldso))?)?;
    a.symlink("lib64/ld-linux-x86-64.so.2", &format!("/{ldso}"))?;
    for m in DOMAIN_MODULES {
        let rel = format!("lib/modules/{kver}/kernel/{m}.ko");
        let data = fs::read(root.join(&rel))
            .with_context(|| format!("the kernel package has no {rel}"))?;
        a.file(&rel, 0o644, &data)?;
    }
    a.file("usr/local/bin/relocd", 0o755, &fs::read(relocd)?)?;
    a.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    a.file("etc/group", 0o644, b"root:x:0:\n")?;
    a.file(
        "init",
        0o755,
        &fs::read(lab.join("dd/init")).context("xtask/lab/dd/init")?,
    )?;
    Ok(a.finish()?.1)
}

/// The kernel modules dom0 loads for the relocd domain's vif: the bridge
/// `xenbr0` and netback (`lab/dd/lib-dd.sh` loads them unless dom0 has
/// them already).
pub const DOM0_MODULES: &[&str] = &[
    "net/llc/llc",
    "net/802/stp",
    "net/bridge/bridge",
    "drivers/net/xen-netback/xen-netback",
];

/// What dom0's image carries for the driver-domain scenarios, under
/// `e2e/dd/`: the relocd domain's initramfs, its xl configuration, the
/// vif hotplug script and the scenarios' helpers; and [`DOM0_MODULES`].
pub fn add_to_dom0<W: std::io::Write>(
    a: &mut cpio::Writer<W>,
    root: &Path,
    kver: &str,
    lab: &Path,
    domain_initrd: &Path,
) -> Result<()> {
    for m in DOM0_MODULES {
        let rel = format!("lib/modules/{kver}/kernel/{m}.ko");
        let data = fs::read(root.join(&rel))
            .with_context(|| format!("the kernel package has no {rel}"))?;
        a.file(&rel, 0o644, &data)?;
    }
    a.file("e2e/dd/initrd.cpio", 0o644, &fs::read(domain_initrd)?)?;
    for (name, mode) in [
        ("relocd-domain.cfg", 0o644),
        ("vif-dd", 0o755),
        ("lib-dd.sh", 0o644),
    ] {
        let data =
            fs::read(lab.join("dd").join(name)).with_context(|| format!("xtask/lab/dd/{name}"))?;
        a.file(&format!("e2e/dd/{name}"), mode, &data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flask_config_turns_on_shadow_paging_xsm_and_flask() {
        let debian = "CONFIG_X86_64=y\n# CONFIG_SHADOW_PAGING is not set\n# CONFIG_XSM is not set\nCONFIG_HVM=y\n";
        let c = flask_config(debian).unwrap();
        for want in CONFIG_WANTED {
            assert!(c.lines().any(|l| l == *want), "{want} in {c}");
        }
        assert!(c.contains("# CONFIG_XSM_FLASK_POLICY is not set"));
        assert!(c.contains("CONFIG_HVM=y"));
        assert!(flask_config("CONFIG_SHADOW_PAGING=y\n").is_err());
    }

    #[test]
    fn the_policy_module_and_the_domain_s_files_are_in_the_lab() {
        let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab");
        let te = fs::read_to_string(lab.join("flask/relocd.te")).unwrap();
        for rule in [
            "declare_domain(relocd_t)",
            "create_domain(relocd_t, domU_t)",
            "manage_domain(relocd_t, domU_t)",
            "migrate_domain_out(relocd_t, domU_t)",
        ] {
            assert!(te.contains(rule), "{rule}");
        }
        // nothing over dom0 or the types the module does not cover
        for line in te.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for other in [
                "(relocd_t, dom0_t",
                "(relocd_t, nomigrate_t",
                "relocd_t dom0_t:",
                "relocd_t nomigrate_t",
            ] {
                assert!(!line.contains(other), "{line}");
            }
        }
        for f in ["init", "relocd-domain.cfg", "vif-dd", "lib-dd.sh"] {
            assert!(lab.join("dd").join(f).is_file(), "{f}");
        }
    }
}
