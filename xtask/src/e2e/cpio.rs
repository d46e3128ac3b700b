//! A writer for the `newc` cpio format, the one Linux unpacks as an
//! initramfs. Written here so that building the images needs no `cpio` tool
//! and gives the same bytes for the same inputs (owner root, mtime 0).
//!
//! Layout of one entry: the 6-byte magic `070701`, thirteen 8-digit
//! upper-case hexadecimal fields (inode, mode, uid, gid, nlink, mtime, file
//! size, dev major/minor, rdev major/minor, name size with its NUL, check),
//! the name and a NUL padded to a multiple of 4, then the data padded to a
//! multiple of 4. The archive ends with an entry named `TRAILER!!!`.

use std::collections::BTreeSet;
use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes a `newc` archive entry by entry; parent directories are added
/// (mode 0755) the first time a path below them is written.
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
    dirs: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    /// An empty archive writing to `out`.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            next_ino: 1,
            written: 0,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let path = normalise(path)?;
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, &[])
    }

    /// Adds a regular file with the given contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let path = normalise(path)?;
        self.parents(path)?;
        self.entry(path, S_IFREG | (perm & 0o7777), 1, data)
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = normalise(path)?;
        self.parents(path)?;
        self.entry(path, S_IFLNK | 0o777, 1, target.as_bytes())
    }

    /// Writes the trailer and returns the output and the archive's length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.entry(TRAILER, 0, 1, &[])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !self.dirs.contains(parent) {
                self.dir(parent, 0o755)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let name_len = name.len() as u32 + 1;
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_len, 0];
        let mut header = String::with_capacity(110);
        header.push_str(MAGIC);
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0; 3][..n])
    }
}

/// Archive paths are relative (`bin/sh`, not `/bin/sh`), without `.`/`..`
/// components or empty ones.
fn normalise(path: &str) -> io::Result<&str> {
    let p = path.trim_start_matches('/');
    if p.is_empty()
        || p.ends_with('/')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad archive path `{path}`"),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ino: u32, mode: u32, nlink: u32, size: u32, namesize: u32) -> String {
        format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}\
             {:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            0, 0, 0, 0, 0, 0, 0, 0
        )
    }

    #[test]
    fn one_file_in_a_directory_byte_for_byte() {
        let mut w = Writer::new(Vec::new());
        w.file("/etc/hi", 0o644, b"hello").unwrap();
        let (bytes, len) = w.finish().unwrap();
        assert_eq!(len as usize, bytes.len());

        let mut want = Vec::new();
        // "etc": header (110) + "etc\0" = 114, padded to 116
        want.extend_from_slice(header(1, 0o040755, 2, 0, 4).as_bytes());
        want.extend_from_slice(b"etc\0\0\0");
        // "etc/hi": 110 + 7 = 117 -> 120; data 5 -> 8
        want.extend_from_slice(header(2, 0o100644, 1, 5, 7).as_bytes());
        want.extend_from_slice(b"etc/hi\0\0\0\0");
        want.extend_from_slice(b"hello\0\0\0");
        // trailer: 110 + 11 = 121 -> 124
        want.extend_from_slice(header(0, 0, 1, 0, 11).as_bytes());
        want.extend_from_slice(b"TRAILER!!!\0\0\0\0");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn symlink_holds_its_target_and_parents_come_once() {
        let mut w = Writer::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.symlink("bin/ls", "busybox").unwrap();
        let (bytes, _) = w.finish().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("070701").count(), 4);
        assert!(text.contains(&header(2, 0o120777, 1, 7, 7)));
        assert!(text.contains("bin/sh\0\0\0\0busybox\0"));
    }

    #[test]
    fn refuses_paths_that_would_escape_or_are_empty() {
        let mut w = Writer::new(Vec::new());
        for bad in ["", "/", "a/../b", "a//b", "./a", "a/"] {
            assert!(w.file(bad, 0o644, b"").is_err(), "{bad:?} accepted");
        }
    }
}
