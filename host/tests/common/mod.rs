//! Helpers shared by the host crate's test binaries (each `tests/*.rs` is
//! its own crate and uses a part of this module).
// Not every test binary uses every helper.
#![allow(dead_code)]

use std::path::PathBuf;

/// A scratch directory per test, removed at the end.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory named after the test and this process.
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("relocd-t-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `body` as `xend-config.sxp` in the directory; returns its path.
    pub fn config(&self, body: &str) -> PathBuf {
        let path = self.path("xend-config.sxp");
        std::fs::write(&path, body).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
