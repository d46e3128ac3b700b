//! `cargo xtask deb`: the Debian package, `target/debian/relocd_VERSION_ARCH.deb`.
//!
//! ```text
//! cargo xtask deb [--no-lintian]
//! ```
//!
//! Built with Debian's own tools, no debhelper: the release binary
//! (stripped) in `/usr/sbin`; the man pages and shell completions the
//! binary writes from its own command-line definitions (`relocd gen-docs`),
//! the pages gzipped; `packaging/relocd.service` in
//! `/usr/lib/systemd/system`; the example `xend-config.sxp` as
//! documentation (`/usr/share/doc/relocd/examples`: the package never
//! ships `/etc/xen/xend-config.sxp`, so an installed one is never touched);
//! the copyright file (`packaging/copyright`, with the statically linked
//! crates listed from `cargo metadata`); a changelog; the maintainer
//! scripts from `packaging/`. The control file's `Depends` comes from
//! `dpkg-shlibdeps`, `Installed-Size` and `md5sums` from the files.
//! `dpkg-deb --root-owner-group` builds the archive, then `lintian` checks
//! it and any error fails the task.
//!
//! The tools come from Debian's packages (dpkg-dev, binutils, lintian, and
//! man-db and systemd for the package test): installed with apt-get when
//! missing, as root, saying so. `DEBFULLNAME` and `DEBEMAIL` name the
//! maintainer (default: `relocd maintainers <relocd@example.org>`);
//! `SOURCE_DATE_EPOCH` dates the pages and the changelog (default: the
//! last commit's time).

use crate::{cargo, ensure_debian, run};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package's name.
pub const PACKAGE: &str = "relocd";
/// Where the package and its staging tree go, under the workspace root.
pub const OUT_DIR: &str = "target/debian";

/// What `cargo xtask deb` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Run lintian on the package (and fail on its errors).
    pub lintian: bool,
}

/// `cargo xtask deb [--no-lintian]`.
pub fn main(root: &Path, args: &[String]) -> Result<()> {
    let mut opts = Options { lintian: true };
    for a in args {
        match a.as_str() {
            "--no-lintian" => opts.lintian = false,
            other => bail!("cargo xtask deb: unknown argument `{other}` (takes --no-lintian)"),
        }
    }
    let deb = build(root, opts)?;
    println!("{}", deb.display());
    Ok(())
}

/// Installs what building and checking the package needs (module doc).
pub fn ensure_tools(lintian: bool) -> Result<()> {
    ensure_debian("dpkg-deb", &["dpkg"])?;
    ensure_debian("dpkg-shlibdeps", &["dpkg-dev"])?;
    ensure_debian("strip", &["binutils"])?;
    ensure_debian("gzip", &["gzip"])?;
    ensure_debian("md5sum", &["coreutils"])?;
    if lintian {
        ensure_debian("lintian", &["lintian"])?;
    }
    Ok(())
}

/// Builds the package; returns its path.
pub fn build(root: &Path, opts: Options) -> Result<PathBuf> {
    ensure_tools(opts.lintian)?;
    let meta = metadata(root)?;
    let version = debian_version(&meta.version);
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let out = root.join(OUT_DIR);
    let stage = out.join(format!("{PACKAGE}_{version}_{arch}"));
    let gen = out.join("generated");
    for d in [&stage, &gen] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    fs::create_dir_all(&stage)?;
    run(cargo().args(["build", "--release", "-p", PACKAGE]))?;

    let epoch = source_date_epoch(root)?;
    let date = output(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), "+%F"]))?;
    let stamp = output(Command::new("date").args(["-u", "-R", "-d", &format!("@{epoch}")]))?;

    // The binary, stripped.
    let sbin = stage.join("usr/sbin");
    mkdir(&sbin)?;
    let bin = sbin.join(PACKAGE);
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            "-o",
        ])
        .arg(&bin)
        .arg(root.join("target/release").join(PACKAGE)))?;
    set_mode(&bin, 0o755)?;

    // Man pages and completions, written by the binary itself.
    run(Command::new(&bin)
        .arg("gen-docs")
        .arg("--out")
        .arg(&gen)
        .args(["--date", &date]))?;
    let man8 = stage.join("usr/share/man/man8");
    mkdir(&man8)?;
    for page in sorted_files(&gen.join("man8"))? {
        let name = file_name(&page)?;
        gzip_to(&page, &man8.join(format!("{name}.gz")))?;
    }
    let comp = gen.join("completions");
    for (from, to) in [
        (
            "relocd.bash",
            "usr/share/bash-completion/completions/relocd",
        ),
        ("_relocd", "usr/share/zsh/vendor-completions/_relocd"),
        (
            "relocd.fish",
            "usr/share/fish/vendor_completions.d/relocd.fish",
        ),
    ] {
        install(&comp.join(from), &stage.join(to), 0o644)?;
    }

    // The unit.
    install(
        &root.join("packaging/relocd.service"),
        &stage.join("usr/lib/systemd/system/relocd.service"),
        0o644,
    )?;

    // Documentation.
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    install(
        &root.join("host/examples/xend-config.sxp"),
        &doc.join("examples/xend-config.sxp"),
        0o644,
    )?;
    let template = fs::read_to_string(root.join("packaging/copyright"))?;
    let last = date.get(..4).unwrap_or("").to_owned();
    let first = output(
        Command::new("git")
            .args(["log", "--reverse", "--format=%cs"])
            .current_dir(root),
    )
    .ok()
    .and_then(|t| t.get(..4).map(str::to_owned))
    .unwrap_or_else(|| last.clone());
    write(
        &doc.join("copyright"),
        &copyright(&template, &years(&first, &last), &meta.bundled),
        0o644,
    )?;
    let maintainer = maintainer();
    let changes = changelog(&version, &maintainer, &stamp, &commit(root));
    let plain = gen.join("changelog");
    fs::write(&plain, changes)?;
    gzip_to(&plain, &doc.join("changelog.gz"))?;

    // Control area.
    let control_dir = stage.join("DEBIAN");
    mkdir(&control_dir)?;
    for script in ["postinst", "prerm", "postrm"] {
        install(
            &root.join("packaging").join(script),
            &control_dir.join(script),
            0o755,
        )?;
    }
    write(&control_dir.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    let depends = shlib_depends(&out, &bin)?;
    let control = control(&ControlFields {
        version: &version,
        arch: &arch,
        maintainer: &maintainer,
        installed_kib: installed_size_kib(&stage)?,
        depends: &depends,
    });
    write(&control_dir.join("control"), &control, 0o644)?;
    fix_dir_modes(&stage)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    if opts.lintian {
        lintian(&deb)?;
    }
    Ok(deb)
}

/// Runs lintian on `deb`; its errors fail (warnings are shown).
pub fn lintian(deb: &Path) -> Result<()> {
    let mut cmd = Command::new("lintian");
    cmd.args(["--fail-on", "error", "--no-tag-display-limit"])
        .arg(deb);
    eprintln!("xtask: $ {}", crate::display(&cmd));
    let out = cmd.output().context("cannot run lintian")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        eprintln!("lintian: {line}");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    if !out.status.success() || !errors.is_empty() {
        bail!(
            "lintian reports errors on {} ({}):\n{}{}",
            deb.display(),
            out.status,
            errors.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("xtask: lintian: no errors on {}", deb.display());
    Ok(())
}

/// What `cargo metadata` tells about the package.
struct Meta {
    /// relocd's version.
    version: String,
    /// The crates linked into the binary: name → (version, license).
    bundled: BTreeMap<String, (String, String)>,
}

fn metadata(root: &Path) -> Result<Meta> {
    let host = output(Command::new("rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")?;
    let text = output(
        cargo()
            .args(["metadata", "--format-version", "1", "--filter-platform"])
            .arg(&host)
            .current_dir(root),
    )?;
    let v: serde_json::Value = serde_json::from_str(&text).context("cargo metadata's JSON")?;
    parse_metadata(&v)
}

/// The package's version and the crates its binary links (module doc):
/// relocd's normal dependencies, transitively, less the workspace's own
/// crates and the procedural macros (they run at build time only).
fn parse_metadata(v: &serde_json::Value) -> Result<Meta> {
    let packages = v["packages"].as_array().context("no packages")?;
    let by_id: BTreeMap<&str, &serde_json::Value> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let me = packages
        .iter()
        .find(|p| p["name"] == PACKAGE)
        .context("no relocd package in cargo metadata")?;
    let version = me["version"].as_str().context("relocd has no version")?;
    let nodes: BTreeMap<&str, &serde_json::Value> = v["resolve"]["nodes"]
        .as_array()
        .context("no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut todo = vec![me["id"].as_str().context("relocd has no id")?];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if normal {
                if let Some(pkg) = dep["pkg"].as_str() {
                    todo.push(pkg);
                }
            }
        }
    }
    let mut bundled = BTreeMap::new();
    for id in seen {
        let Some(p) = by_id.get(id) else { continue };
        let local = p["source"].is_null();
        let proc_macro = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k == "proc-macro")
        });
        if local || proc_macro {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("?").to_owned();
        let version = p["version"].as_str().unwrap_or("?").to_owned();
        let license = p["license"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| p["license_file"].as_str().map(|f| format!("see {f}")))
            .unwrap_or_else(|| "unknown".to_owned());
        bundled.insert(format!("{name} {version}"), (version, license));
    }
    Ok(Meta {
        version: version.to_owned(),
        bundled,
    })
}

/// A Cargo version as Debian orders it (a pre-release sorts before the
/// release: `1.0.0-rc.1` → `1.0.0~rc.1`).
pub fn debian_version(cargo: &str) -> String {
    // Build metadata (`+…`) does not order versions: dropped.
    let core = cargo.split_once('+').map_or(cargo, |(c, _)| c);
    core.replacen('-', "~", 1)
}

/// The copyright file: `template` with `@YEARS@` replaced by `years` and
/// its `@BUNDLED@` line by one line a crate.
pub fn copyright(
    template: &str,
    years: &str,
    bundled: &BTreeMap<String, (String, String)>,
) -> String {
    let lines: Vec<String> = bundled
        .iter()
        .map(|(name_version, (_, license))| format!(" {name_version}: {license}"))
        .collect();
    template
        .replace("@YEARS@", years)
        .replace("@BUNDLED@", &lines.join("\n"))
}

/// `2026`, or `2025-2026` when the history spans years.
pub fn years(first: &str, last: &str) -> String {
    if first == last || last.is_empty() {
        first.to_owned()
    } else {
        format!("{first}-{last}")
    }
}

/// The maintainer: `DEBFULLNAME <DEBEMAIL>`, else the project's default.
fn maintainer() -> String {
    let name = std::env::var("DEBFULLNAME").unwrap_or_default();
    let mail = std::env::var("DEBEMAIL").unwrap_or_default();
    if !name.trim().is_empty() && !mail.trim().is_empty() {
        format!("{} <{}>", name.trim(), mail.trim())
    } else {
        "relocd maintainers <relocd@example.org>".to_owned()
    }
}

fn commit(root: &Path) -> String {
    output(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(root),
    )
    .unwrap_or_else(|_| "unknown".to_owned())
}

/// `SOURCE_DATE_EPOCH`, else the last commit's time, else now.
fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"));
    }
    let git = output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root),
    );
    match git.ok().and_then(|t| t.trim().parse().ok()) {
        Some(t) => Ok(t),
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()),
    }
}

/// A Debian changelog of one entry.
pub fn changelog(version: &str, maintainer: &str, stamp: &str, commit: &str) -> String {
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Built from the relocd source tree at commit {commit}.\n\n \
         -- {maintainer}  {stamp}\n"
    )
}

/// The control file's variable fields.
pub struct ControlFields<'a> {
    /// The Debian version.
    pub version: &'a str,
    /// The architecture (`amd64`).
    pub arch: &'a str,
    /// `Name <mail>`.
    pub maintainer: &'a str,
    /// The installed files' size, KiB.
    pub installed_kib: u64,
    /// The shared libraries' packages (`dpkg-shlibdeps`).
    pub depends: &'a str,
}

/// The binary package's control file.
pub fn control(f: &ControlFields<'_>) -> String {
    let mut depends = f.depends.trim().to_owned();
    if !depends.is_empty() {
        depends.push_str(", ");
    }
    // The maintainer scripts use deb-systemd-helper and deb-systemd-invoke.
    depends.push_str("init-system-helpers (>= 1.52)");
    format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {size}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: live migration of Xen guests (xend's relocation server)\n \
         relocd moves running Xen guests between hosts, and saves and restores\n \
         them as xl save files. Its daemon listens on xend's relocation port\n \
         (8002), admits peers by xend-relocation-hosts-allow before a byte is\n \
         read, and in dom0 issues the hypercalls itself (privcmd and xenstore;\n \
         no libxc, libxl or xl), for 64-bit PV guests on Xen 4.17.\n \
         .\n \
         The package holds the daemon and its commands (relocd migrate, save,\n \
         restore, status, list, resolve, inspect, check-host), a systemd unit,\n \
         man pages and bash, zsh and fish completions. It never writes\n \
         /etc/xen/xend-config.sxp: an example is in\n \
         /usr/share/doc/relocd/examples.\n",
        version = f.version,
        arch = f.arch,
        maintainer = f.maintainer,
        size = f.installed_kib,
    )
}

/// `dpkg-shlibdeps`' `Depends` for `bin` (it wants a `debian/control`
/// around it; one is made under `out`).
fn shlib_depends(out: &Path, bin: &Path) -> Result<String> {
    let dir = out.join("shlibdeps");
    mkdir(&dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let text = output(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(format!("-e{}", bin.display()))
            .current_dir(&dir),
    )?;
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .unwrap_or("")
        .to_owned();
    if !depends.contains("libc6") {
        bail!(
            "dpkg-shlibdeps found no libc6 dependency for {}: {text}",
            bin.display()
        );
    }
    Ok(depends)
}

/// Every regular file under `stage` outside `DEBIAN`, relative, sorted.
fn payload(stage: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(stage, stage, &mut out)?;
    out.retain(|p| !p.starts_with("DEBIAN"));
    out.sort();
    Ok(out)
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(base, &p, out)?;
        } else {
            out.push(p.strip_prefix(base)?.to_owned());
        }
    }
    Ok(())
}

fn md5sums(stage: &Path) -> Result<String> {
    let files = payload(stage)?;
    let text = output(Command::new("md5sum").args(&files).current_dir(stage))?;
    Ok(format!("{text}\n"))
}

/// The installed size as dpkg counts it: KiB, each file rounded up.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut kib = 0;
    for f in payload(stage)? {
        kib += fs::metadata(stage.join(f))?.len().div_ceil(1024);
    }
    Ok(kib.max(1))
}

fn fix_dir_modes(dir: &Path) -> Result<()> {
    set_mode(dir, 0o755)?;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            fix_dir_modes(&p)?;
        }
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        mkdir(dir)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        mkdir(dir)?;
    }
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    set_mode(to, mode)
}

/// `gzip -9n` of `from` into `to` (no name or time stamp inside, as
/// Debian wants).
fn gzip_to(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        mkdir(dir)?;
    }
    let out = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(from)
        .output()
        .context("cannot run gzip")?;
    if !out.status.success() {
        bail!(
            "gzip {} failed: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(to, out.stdout)?;
    set_mode(to, 0o644)
}

fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> Result<String> {
    Ok(p.file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 name", p.display()))?
        .to_owned())
}

/// A command's standard output, trimmed; its failure with stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", crate::display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            crate::display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_debian_orders_them() {
        assert_eq!(debian_version("0.1.0"), "0.1.0");
        assert_eq!(debian_version("1.0.0-rc.1"), "1.0.0~rc.1");
        assert_eq!(debian_version("1.0.0+build5"), "1.0.0");
    }

    #[test]
    fn control_file_has_the_fields_dpkg_needs() {
        let c = control(&ControlFields {
            version: "0.1.0",
            arch: "amd64",
            maintainer: "A B <a@example.org>",
            installed_kib: 4321,
            depends: "libc6 (>= 2.34), libgcc-s1 (>= 4.2)",
        });
        let fields: Vec<&str> = c
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(':').map(|(k, _)| k))
            .collect();
        assert_eq!(
            fields,
            [
                "Package",
                "Version",
                "Architecture",
                "Maintainer",
                "Installed-Size",
                "Depends",
                "Section",
                "Priority",
                "Description"
            ]
        );
        assert!(c.contains(
            "\nDepends: libc6 (>= 2.34), libgcc-s1 (>= 4.2), init-system-helpers (>= 1.52)\n"
        ));
        assert!(c.contains("\nInstalled-Size: 4321\n"));
        // Every description line after the first is indented; none is empty.
        let desc: Vec<&str> = c
            .lines()
            .skip_while(|l| !l.starts_with("Description:"))
            .collect();
        assert!(desc.len() > 5);
        assert!(desc[1..].iter().all(|l| l.starts_with(' ') && l.len() > 1));
        assert!(c.ends_with('\n'));
    }

    #[test]
    fn copyright_lists_each_crate_on_a_continuation_line() {
        let mut b = BTreeMap::new();
        b.insert(
            "clap 4.6.9".to_owned(),
            ("4.6.9".into(), "MIT OR Apache-2.0".into()),
        );
        b.insert(
            "libc 0.2.1".to_owned(),
            ("0.2.1".into(), "MIT OR Apache-2.0".into()),
        );
        let text = copyright(
            "Comment: crates:\n@BUNDLED@\n\nFiles: *\nCopyright: @YEARS@ us\n",
            &years("2025", "2026"),
            &b,
        );
        assert_eq!(
            text,
            "Comment: crates:\n clap 4.6.9: MIT OR Apache-2.0\n libc 0.2.1: MIT OR Apache-2.0\n\n\
             Files: *\nCopyright: 2025-2026 us\n"
        );
        assert_eq!(years("2026", "2026"), "2026");
    }

    #[test]
    fn changelog_entry_is_debians_format() {
        let c = changelog(
            "0.1.0",
            "A B <a@example.org>",
            "Sun, 06 Dec 2026 11:58:21 +0000",
            "abc",
        );
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], "relocd (0.1.0) unstable; urgency=medium");
        assert_eq!(lines[1], "");
        assert!(lines[2].starts_with("  * "));
        assert_eq!(
            lines[4],
            " -- A B <a@example.org>  Sun, 06 Dec 2026 11:58:21 +0000"
        );
    }

    #[test]
    fn bundled_crates_are_the_linked_ones() {
        let v = serde_json::json!({
            "packages": [
                {"id": "relocd", "name": "relocd", "version": "0.1.0", "source": null, "targets": []},
                {"id": "core", "name": "relocd-core", "version": "0.1.0", "source": null, "targets": []},
                {"id": "clap", "name": "clap", "version": "4.6.9", "source": "registry", "license": "MIT OR Apache-2.0", "targets": [{"kind": ["lib"]}]},
                {"id": "derive", "name": "clap_derive", "version": "4.6.9", "source": "registry", "license": "MIT OR Apache-2.0", "targets": [{"kind": ["proc-macro"]}]},
                {"id": "cc", "name": "cc", "version": "1.0", "source": "registry", "license": "MIT", "targets": [{"kind": ["lib"]}]},
                {"id": "proptest", "name": "proptest", "version": "1.0", "source": "registry", "license": "MIT", "targets": [{"kind": ["lib"]}]},
                {"id": "heapless", "name": "heapless", "version": "0.9", "source": "registry", "license": "MIT OR Apache-2.0", "targets": [{"kind": ["lib"]}]}
            ],
            "resolve": {"nodes": [
                {"id": "relocd", "deps": [
                    {"pkg": "core", "dep_kinds": [{"kind": null}]},
                    {"pkg": "clap", "dep_kinds": [{"kind": null}]},
                    {"pkg": "cc", "dep_kinds": [{"kind": "build"}]},
                    {"pkg": "proptest", "dep_kinds": [{"kind": "dev"}]}
                ]},
                {"id": "core", "deps": [{"pkg": "heapless", "dep_kinds": [{"kind": null}]}]},
                {"id": "clap", "deps": [{"pkg": "derive", "dep_kinds": [{"kind": null}]}]}
            ]}
        });
        let m = parse_metadata(&v).unwrap();
        assert_eq!(m.version, "0.1.0");
        let names: Vec<&str> = m.bundled.keys().map(String::as_str).collect();
        assert_eq!(names, ["clap 4.6.9", "heapless 0.9"]);
    }
}
