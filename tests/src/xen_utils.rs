//! Xen's own stream verifier (`verify-stream-v2` from Debian's
//! `xen-utils-4.17`), fetched once into `target/xen-utils/` and run as an
//! oracle. It needs no Xen: it is Python over the stream bytes.
//!
//! Resolution order: `$RELOCD_XEN_UTILS` (a folder holding the unpacked
//! package), an installed `/usr/lib/xen-4.17`, then the cache under
//! `target/`, filled with `apt-get download` + `dpkg-deb -x` when missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const PACKAGE: &str = "xen-utils-4.17";
const LIBDIR: &str = "usr/lib/xen-4.17";

/// Where the unpacked package lives, fetching it the first time.
/// Errors say what failed, so a test can report it instead of passing.
pub fn root() -> Result<&'static Path, String> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(locate_or_fetch)
        .as_deref()
        .map_err(Clone::clone)
}

fn workspace_target() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.parent().unwrap_or(&manifest).join("target"))
}

fn has_verifier(root: &Path) -> bool {
    root.join(LIBDIR).join("bin/verify-stream-v2").is_file()
}

fn locate_or_fetch() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("RELOCD_XEN_UTILS") {
        let dir = PathBuf::from(dir);
        return if has_verifier(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "RELOCD_XEN_UTILS={} holds no {LIBDIR}/bin/verify-stream-v2",
                dir.display()
            ))
        };
    }
    if has_verifier(Path::new("/")) {
        return Ok(PathBuf::from("/"));
    }
    let cache = workspace_target().join("xen-utils");
    let root = cache.join("root");
    if has_verifier(&root) {
        return Ok(root);
    }
    fetch_into(&cache, &root)?;
    if has_verifier(&root) {
        Ok(root)
    } else {
        Err(format!(
            "{PACKAGE} unpacked into {} but holds no verify-stream-v2",
            root.display()
        ))
    }
}

fn fetch_into(cache: &Path, root: &Path) -> Result<(), String> {
    eprintln!(
        "relocd-tests: fetching Debian's {PACKAGE} into {} (once) for Xen's stream verifier",
        cache.display()
    );
    // A private download folder per process, so parallel test binaries
    // cannot see each other's half-written files; the unpack is renamed
    // into place atomically.
    let work = cache.join(format!("dl-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", PACKAGE])
            .current_dir(&work)
            .output()
            .map_err(|e| format!("cannot run apt-get download {PACKAGE}: {e}"))
    };
    let mut out = download()?;
    if !out.status.success() {
        // A fresh machine may have no package lists yet.
        eprintln!(
            "relocd-tests: apt-get download failed; running apt-get update (as root) and retrying"
        );
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        out = download()?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get download {PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deb = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {PACKAGE} left no .deb"))?;
    let unpack = work.join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpack)
        .status()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if !status.success() {
        return Err(format!("dpkg-deb -x {} failed", deb.display()));
    }
    if std::fs::rename(&unpack, root).is_err() && !has_verifier(root) {
        return Err(format!(
            "cannot move the unpacked package to {}",
            root.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Xen's verdict on a stream.
#[derive(Debug)]
pub struct Verdict {
    /// True when verify-stream-v2 exited 0.
    pub accepted: bool,
    /// What it printed (stdout then stderr), for the failure message.
    pub output: String,
}

/// Stream formats verify-stream-v2 knows (`--format`).
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// A bare libxc stream (image header first).
    Libxc,
    /// A libxl stream (libxl header, libxc stream inside LIBXC_CONTEXT).
    Libxl,
    /// An xl save file (xl header, then a libxl stream).
    Xl,
}

/// Runs Xen's `verify-stream-v2 -v --format F` on `bytes`.
pub fn verify_stream(bytes: &[u8], format: Format) -> Result<Verdict, String> {
    let root = root()?;
    let lib = root.join(LIBDIR);
    let fmt = match format {
        Format::Libxc => "libxc",
        Format::Libxl => "libxl",
        Format::Xl => "xl",
    };
    // A file, not a pipe: the verifier's reads on a pipe return at most
    // the pipe's buffer, which it takes for a truncated record.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "relocd-verify-{}-{}.bin",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let out = Command::new("python3")
        .arg(lib.join("bin/verify-stream-v2"))
        .args(["-v", "--format", fmt, "-i"])
        .arg(&path)
        .env("PYTHONPATH", lib.join("lib/python"))
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| format!("cannot run python3 verify-stream-v2: {e}"))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Verdict {
        accepted: out.status.success(),
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_rejects_an_empty_stream() {
        let verdict =
            verify_stream(&[], Format::Libxc).expect("verify-stream-v2 must be available");
        assert!(!verdict.accepted, "{}", verdict.output);
        assert!(verdict.output.contains("truncated"), "{}", verdict.output);
    }
}
