//! Instance locks that die with their process: a listening socket in Linux's
//! abstract Unix namespace. Binding a name someone else holds fails with
//! `EADDRINUSE`; the kernel frees the name when the holder exits, however it
//! exits (SIGKILL included), so there is never a stale lock to clean up.
//!
//! The names are keyed on a directory's device and inode numbers and its
//! canonical path, so two spellings of one directory (symlinks, `..`) get
//! the same lock, and a directory made where none was locked never meets
//! the lock of a removed one whose inode number it was given. The
//! abstract namespace belongs to the network namespace: daemons in different
//! network namespaces sharing a file system do not see each other's locks
//! (the management socket's liveness probe still catches that case there).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::Path;

/// Longest abstract name (`sun_path` minus the leading NUL).
const MAX_NAME: usize = 107;

/// How long a lock found held is tried again before it counts as held
/// by a live instance.
const IN_USE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// FNV-1a of `bytes`: a short stand-in for a long name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A held lock; released on drop or process exit.
#[derive(Debug)]
pub struct InstanceLock {
    _socket: UnixListener,
    name: String,
}

impl InstanceLock {
    /// Takes the lock called `what` on directory `dir` (with an optional
    /// `item` inside it, such as a socket's file name). `Ok(None)` when
    /// another live process holds it.
    pub fn acquire(what: &str, dir: &Path, item: &str) -> io::Result<Option<InstanceLock>> {
        let meta = std::fs::metadata(dir)?;
        let path = fnv1a(std::fs::canonicalize(dir)?.as_os_str().as_bytes());
        let key = format!(
            "relocd/{what}/{:x}/{:x}/{path:016x}",
            meta.dev(),
            meta.ino()
        );
        let mut name = format!("{key}/{item}");
        if name.len() > MAX_NAME {
            // Keep it unique but short: the item's bytes folded.
            name = format!("{key}/#{:016x}", fnv1a(item.as_bytes()));
        }
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        // A lock its holder has just let go of can stay bound for a
        // moment: a process the holder's process forked keeps a copy of
        // the socket until it execs (close-on-exec). Only a holder that
        // keeps it past this grace is taken to be alive.
        let until = std::time::Instant::now() + IN_USE_GRACE;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(socket) => {
                    return Ok(Some(InstanceLock {
                        _socket: socket,
                        name,
                    }))
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    if std::time::Instant::now() >= until {
                        return Ok(None);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The lock's abstract name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_dropped_and_keyed_on_the_directory() {
        let dir = std::env::temp_dir().join(format!("relocd-lock-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let first = InstanceLock::acquire("test", &dir, "x").unwrap().unwrap();
        // Another spelling of the same directory.
        let alias = dir.join("sub/..");
        assert!(InstanceLock::acquire("test", &alias, "x")
            .unwrap()
            .is_none());
        // Other items and other kinds of lock are independent.
        let other = InstanceLock::acquire("test", &dir, "y").unwrap().unwrap();
        let kind = InstanceLock::acquire("other", &dir, "x").unwrap().unwrap();
        drop(first);
        assert!(InstanceLock::acquire("test", &alias, "x")
            .unwrap()
            .is_some());
        let long = "z".repeat(200);
        let a = InstanceLock::acquire("test", &dir, &long).unwrap().unwrap();
        assert!(a.name().len() <= MAX_NAME);
        assert!(InstanceLock::acquire("test", &dir, &long)
            .unwrap()
            .is_none());
        drop((other, kind, a));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A copy of the lock's socket that outlives its holder for a moment
    /// (a forked child that has not exec'd yet) delays the next instance;
    /// it does not turn it away.
    #[test]
    fn a_lock_a_child_still_holds_for_a_moment_is_taken_after_it() {
        let dir = std::env::temp_dir().join(format!("relocd-lock-fork-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = InstanceLock::acquire("test", &dir, "x").unwrap().unwrap();
        let copy = held._socket.try_clone().unwrap();
        drop(held);
        let child = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(copy);
        });
        assert!(InstanceLock::acquire("test", &dir, "x").unwrap().is_some());
        child.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory removed while its lock is held, and another made at
    /// another path with the same inode number: the two locks are
    /// different (tests that remove their scratch directory before the
    /// engine holding it is gone made the next test's journal "in use").
    #[test]
    fn a_new_directory_given_a_removed_one_s_inode_is_not_locked() {
        let base = std::env::temp_dir().join(format!("relocd-lock-reuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let old = base.join("old");
        std::fs::create_dir(&old).unwrap();
        let ino = std::fs::metadata(&old).unwrap().ino();
        let held = InstanceLock::acquire("test", &old, "x").unwrap().unwrap();
        std::fs::remove_dir(&old).unwrap();
        // File systems hand a freed inode number out again soon; make
        // directories until one gets it (or give up: then nothing to show).
        let mut reused = None;
        for i in 0..2000 {
            let d = base.join(format!("new{i}"));
            std::fs::create_dir(&d).unwrap();
            if std::fs::metadata(&d).unwrap().ino() == ino {
                reused = Some(d);
                break;
            }
        }
        if let Some(d) = reused {
            assert!(
                InstanceLock::acquire("test", &d, "x").unwrap().is_some(),
                "{} took {}'s lock",
                d.display(),
                old.display()
            );
        } else {
            eprintln!("inode {ino} was not handed out again here: the case is not shown");
        }
        drop(held);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
