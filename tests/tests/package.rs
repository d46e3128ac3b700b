//! The Debian package and its systemd unit.
//!
//! - The unit (`packaging/relocd.service`) says what the daemon needs
//!   (readiness, restart, hardening, the state directory) and
//!   `systemd-analyze verify` finds nothing to say about it.
//! - The package `cargo xtask deb` built (`RELOCD_DEB` names it; `cargo
//!   xtask test` builds it and sets it) is unpacked into a scratch root
//!   (`dpkg-deb -x`) and every file is checked: the set of files is exactly
//!   the expected one, the binary runs, the man pages are the ones the
//!   binary writes from its command-line definitions and each renders with
//!   `man -l` without a warning, the completions parse, the example config
//!   is documentation and nothing goes to /etc, the copyright and
//!   changelog, the control file and md5sums, the maintainer scripts; and
//!   lintian reports no error. Without `RELOCD_DEB` that test says it is
//!   skipped and why; a missing `man`, `systemd-analyze` or `lintian` skips
//!   its check with a message, never silently.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("relocd-pkg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unit file's settings: (section, key) → values in order.
fn unit_settings(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        out.entry((section.clone(), k.trim().to_owned()))
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

/// Checks the unit's content: what relocd needs from systemd.
fn check_unit_content(text: &str) {
    let s = unit_settings(text);
    let get = |sec: &str, key: &str| -> Vec<String> {
        s.get(&(sec.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let one = |sec: &str, key: &str| -> String {
        let v = get(sec, key);
        assert_eq!(v.len(), 1, "[{sec}] {key}: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    assert_eq!(one("Service", "Restart"), "on-failure");
    assert!(
        one("Service", "ExecStart").starts_with("/usr/sbin/relocd serve --backend xen"),
        "{text}"
    );
    assert_eq!(one("Service", "NoNewPrivileges"), "yes");
    assert_eq!(one("Service", "ProtectSystem"), "strict");
    assert_eq!(one("Service", "PrivateTmp"), "yes");
    assert_eq!(one("Service", "StateDirectory"), "relocd");
    // The management socket's directory (/run is read-only otherwise).
    assert_eq!(one("Service", "RuntimeDirectory"), "relocd");
    assert_eq!(one("Service", "RuntimeDirectoryMode"), "0700");
    let rw: Vec<String> = get("Service", "ReadWritePaths")
        .iter()
        .flat_map(|v| {
            v.split_whitespace()
                .map(|p| p.trim_start_matches('-').to_owned())
        })
        .collect();
    for need in ["/dev/xen", "/proc/xen", "/run/xenstored", "/var/lib/xen"] {
        assert!(
            rw.iter().any(|p| p == need),
            "ReadWritePaths lacks {need}: {rw:?}"
        );
    }
    // Nothing hides the Xen devices.
    assert!(get("Service", "PrivateDevices").is_empty(), "{text}");
    assert!(get("Service", "DevicePolicy").is_empty(), "{text}");
    assert!(one("Unit", "Documentation").contains("man:relocd(8)"));
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
}

/// `systemd-analyze verify` on `unit` with its ExecStart pointed at
/// `binary` (the unit names /usr/sbin/relocd, which is not installed on
/// the machine running the test), man pages looked up in `manpath`
/// (`None`: not checked). Returns what it said (nothing: accepted), or
/// `None` when systemd-analyze is missing.
fn systemd_verify(unit: &str, binary: &Path, manpath: Option<&Path>, dir: &Path) -> Option<String> {
    if !have("systemd-analyze") {
        eprintln!(
            "SKIPPED: systemd-analyze verify (systemd-analyze is not installed; \
             `cargo xtask test` installs Debian's systemd package)"
        );
        return None;
    }
    let copy = dir.join("relocd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/sbin/relocd", binary.to_str().unwrap()),
    )
    .unwrap();
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    match manpath {
        Some(p) => {
            cmd.env("MANPATH", p);
        }
        None => {
            cmd.arg("--man=no");
        }
    }
    let out = cmd.arg(&copy).output().expect("systemd-analyze");
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn the_unit_file_says_what_the_daemon_needs_and_systemd_accepts_it() {
    let unit = std::fs::read_to_string(repo().join("packaging/relocd.service")).unwrap();
    check_unit_content(&unit);
    let dir = Scratch::new("unit");
    let stub = dir.0.join("relocd-stub");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(said) = systemd_verify(&unit, &stub, None, &dir.0) else {
        return;
    };
    assert_eq!(said.trim(), "", "systemd-analyze verify complains");
    // The check can fail: systemd-analyze speaks up about a bad unit.
    let broken = unit.replace("Type=notify", "Type=notifyy");
    let said = systemd_verify(&broken, &stub, None, &dir.0).unwrap();
    assert!(said.contains("notifyy"), "{said}");
}

/// The package: `RELOCD_DEB`, or `None` with the reason printed.
fn package() -> Option<PathBuf> {
    match std::env::var_os("RELOCD_DEB") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "SKIPPED: the package test (RELOCD_DEB is not set: `cargo xtask deb` builds \
                 target/debian/relocd_VERSION_ARCH.deb, and `cargo xtask test` runs this test \
                 with RELOCD_DEB naming it)"
            );
            None
        }
    }
}

/// Every entry under `root` (relative; directories end with `/`).
fn tree(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
        if p.is_dir() {
            out.insert(format!("{rel}/"));
            tree(root, &p, out);
        } else {
            out.insert(rel);
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn gunzip(p: &Path) -> Vec<u8> {
    ok(Command::new("gzip").arg("-dc").arg(p)).stdout
}

#[test]
fn the_package_installs_every_file_in_its_place() {
    let Some(deb) = package() else { return };
    assert!(deb.is_file(), "{} is not a file", deb.display());
    let version = env!("CARGO_PKG_VERSION");
    let name = deb.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with(&format!("relocd_{version}_")) && name.ends_with(".deb"),
        "{name}"
    );
    let scratch = Scratch::new("root");
    let root = scratch.0.join("root");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = scratch.0.join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));

    // Every entry belongs to root.
    let listing = text(&ok(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not root's: {line}");
    }

    // The man pages are exactly the ones the binary writes.
    let bin = root.join("usr/sbin/relocd");
    let gen = scratch.0.join("generated");
    let man8 = root.join("usr/share/man/man8");
    let packaged_page = String::from_utf8(gunzip(&man8.join("relocd.8.gz"))).unwrap();
    // Its date, to write the same pages.
    let th = packaged_page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect(".TH line")
        .to_owned();
    let date = th.split_whitespace().nth(3).unwrap_or("").to_owned();
    let date = if date.starts_with('"') {
        String::new()
    } else {
        date
    };
    ok(Command::new(&bin)
        .arg("gen-docs")
        .arg("--out")
        .arg(&gen)
        .args(["--date", &date]));
    let mut pages = BTreeSet::new();
    for e in std::fs::read_dir(gen.join("man8")).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_owned();
        let packaged = gunzip(&man8.join(format!("{n}.gz")));
        assert_eq!(
            packaged,
            std::fs::read(&p).unwrap(),
            "{n} differs from what the binary writes"
        );
        pages.insert(n);
    }
    for need in [
        "relocd.8",
        "relocd-serve.8",
        "relocd-migrate.8",
        "relocd-save.8",
        "relocd-restore.8",
        "relocd-status.8",
        "relocd-list.8",
        "relocd-resolve.8",
        "relocd-inspect.8",
        "relocd-check-host.8",
    ] {
        assert!(pages.contains(need), "no {need}: {pages:?}");
    }
    assert!(!pages.contains("relocd-xen-probe.8") && !pages.contains("relocd-gen-docs.8"));

    // The whole tree, exactly.
    let mut expected: BTreeSet<String> = [
        "usr/sbin/relocd",
        "usr/lib/systemd/system/relocd.service",
        "usr/share/bash-completion/completions/relocd",
        "usr/share/zsh/vendor-completions/_relocd",
        "usr/share/fish/vendor_completions.d/relocd.fish",
        "usr/share/doc/relocd/copyright",
        "usr/share/doc/relocd/changelog.gz",
        "usr/share/doc/relocd/examples/xend-config.sxp",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    expected.extend(pages.iter().map(|p| format!("usr/share/man/man8/{p}.gz")));
    let dirs: BTreeSet<String> = expected
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            (1..parts.len())
                .map(|i| format!("{}/", parts[..i].join("/")))
                .collect::<Vec<_>>()
        })
        .collect();
    expected.extend(dirs);
    let mut found = BTreeSet::new();
    tree(&root, &root, &mut found);
    assert_eq!(found, expected, "the package's files");
    for entry in &found {
        let p = root.join(entry.trim_end_matches('/'));
        let want = if entry.ends_with('/') || entry == "usr/sbin/relocd" {
            0o755
        } else {
            0o644
        };
        assert_eq!(mode(&p), want, "{entry}: mode {:o}", mode(&p));
    }
    // Never xend's own config: an installed one stays the administrator's.
    assert!(!found.iter().any(|f| f.starts_with("etc")), "{found:?}");

    // The binary runs and says what it speaks.
    let v = text(&ok(Command::new(&bin).arg("--version")));
    assert!(v.starts_with(&format!("relocd {version}\n")), "{v}");
    assert!(v.contains("relocation protocol: version"), "{v}");
    assert!(v.contains("Xen 4.17"), "{v}");
    if have("readelf") {
        let sections = text(&ok(Command::new("readelf").arg("-S").arg(&bin)));
        assert!(
            !sections.contains(".debug_info"),
            "the binary is not stripped"
        );
    } else {
        eprintln!("SKIPPED: the stripped-binary check (readelf is not installed)");
    }

    // The unit: the project's file, accepted by systemd, its man pages
    // found among the packaged ones.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/relocd.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("packaging/relocd.service")).unwrap()
    );
    check_unit_content(&unit);
    if let Some(said) = systemd_verify(&unit, &bin, Some(&root.join("usr/share/man")), &scratch.0) {
        assert_eq!(said.trim(), "", "systemd-analyze verify complains");
    }

    // Each page renders, without a warning.
    if have("man") {
        for p in &pages {
            let out = Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l"])
                .arg(man8.join(format!("{p}.gz")))
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C.UTF-8")
                .output()
                .expect("man");
            let page = String::from_utf8_lossy(&out.stdout);
            let stem = p.trim_end_matches(".8");
            assert!(out.status.success(), "man -l {p}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stderr), "", "man -l {p} warns");
            assert!(page.contains("NAME"), "{p}:\n{page}");
            assert!(page.contains("SYNOPSIS"), "{p}:\n{page}");
            // NAME gives the page's own name, then its summary (justified).
            let name_line = page
                .lines()
                .skip_while(|l| l.trim() != "NAME")
                .nth(1)
                .unwrap_or("")
                .trim();
            let words: Vec<&str> = name_line.split_whitespace().collect();
            assert!(
                words.len() > 2 && words[0] == stem && words[1] == "-",
                "{p}: NAME is {name_line:?}"
            );
        }
    } else {
        eprintln!("SKIPPED: rendering the man pages (man is not installed; `cargo xtask test` installs man-db)");
    }

    // Completions: they parse, and know the commands.
    let comp = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let bash = "usr/share/bash-completion/completions/relocd";
    ok(Command::new("bash").arg("-n").arg(root.join(bash)));
    assert!(comp(bash).contains("status"));
    let zsh = comp("usr/share/zsh/vendor-completions/_relocd");
    assert!(
        zsh.starts_with("#compdef relocd"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
    assert!(zsh.contains("status"));
    let fish = comp("usr/share/fish/vendor_completions.d/relocd.fish");
    assert!(fish.contains("complete -c relocd"));
    assert!(fish.contains("status"));
    for (shell, file) in [
        ("zsh", "usr/share/zsh/vendor-completions/_relocd"),
        ("fish", "usr/share/fish/vendor_completions.d/relocd.fish"),
    ] {
        if have(shell) {
            ok(Command::new(shell).arg("-n").arg(root.join(file)));
        } else {
            eprintln!("SKIPPED: `{shell} -n` on its completions ({shell} is not installed)");
        }
    }

    // Documentation.
    let doc = root.join("usr/share/doc/relocd");
    assert_eq!(
        std::fs::read(doc.join("examples/xend-config.sxp")).unwrap(),
        std::fs::read(repo().join("host/examples/xend-config.sxp")).unwrap()
    );
    let copyright = std::fs::read_to_string(doc.join("copyright")).unwrap();
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    for need in [
        "\nFiles: *\n",
        "\nLicense: MIT\n",
        "\nLicense: Apache-2.0\n",
        "\n clap ",
        "\n serde_json ",
    ] {
        assert!(copyright.contains(need), "copyright lacks {need:?}");
    }
    assert!(
        !copyright.contains('@'),
        "a placeholder is left: {copyright}"
    );
    let changelog = String::from_utf8(gunzip(&doc.join("changelog.gz"))).unwrap();
    assert!(
        changelog.starts_with(&format!("relocd ({version}) ")),
        "{changelog}"
    );

    // The control area.
    let fields: BTreeMap<String, String> = std::fs::read_to_string(control.join("control"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(fields["Package"], "relocd");
    assert_eq!(fields["Version"], version);
    assert!(name.ends_with(&format!("_{}.deb", fields["Architecture"])));
    assert!(fields["Depends"].contains("libc6"), "{fields:?}");
    assert!(fields["Maintainer"].contains('<'), "{fields:?}");
    assert!(fields["Installed-Size"].parse::<u64>().unwrap() > 0);
    let md5 = std::fs::read_to_string(control.join("md5sums")).unwrap();
    let listed: BTreeSet<String> = md5
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    let files: BTreeSet<String> = found
        .iter()
        .filter(|f| !f.ends_with('/'))
        .cloned()
        .collect();
    assert_eq!(listed, files, "md5sums lists every file");
    let check = Command::new("md5sum")
        .args(["-c", "--quiet"])
        .arg(control.join("md5sums"))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(check.status.success(), "md5sums: {check:?}");
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        assert_eq!(mode(&p), 0o755, "{script}");
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .starts_with("#!/bin/sh\n"));
        ok(Command::new("sh").arg("-n").arg(&p));
    }

    // lintian: no error.
    if have("lintian") {
        let out = Command::new("lintian")
            .args(["--fail-on", "error"])
            .arg(&deb)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !said.lines().any(|l| l.starts_with("E:")),
            "lintian: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("SKIPPED: lintian (not installed; `cargo xtask deb` installs it)");
    }
}
