//! Give back the code and read-only data pages that start-up and each
//! burst of work leave mapped (issue 17: the daemon's idle RSS).
//!
//! Most of an idle `relocd serve`'s resident memory is not its own data but
//! file pages: relocd's and the C libraries' code and read-only data, mapped
//! in as they were touched, plus their neighbours that the kernel's
//! fault-around (64 KiB per fault) mapped along with them. [`trim`] reads
//! `/proc/self/smaps`, picks the mappings [`selected`] says may be dropped,
//! and hands each to [`relocd_hypercall::residency::release_file_pages`]
//! (`MADV_DONTNEED`). The pages stay in the page cache; what runs again
//! later faults back in as it is used (a minor fault, no disk read while
//! the page cache keeps them).
//!
//! When: `relocd serve` trims once start-up is over, and calls
//! [`enable_idle_trim`]; from then on the daemon trims again each time its
//! last piece of work ends (a management connection, a relocation session:
//! each holds a [`Busy`] while it runs). A request's code faults back in
//! with fault-around, and would otherwise stay mapped for the daemon's
//! lifetime.
//!
//! Safe because only mappings whose every page is the file's own are
//! dropped: private, file-backed, not writable, and with `Anonymous: 0 kB`
//! (no copy-on-write copy; a RELRO segment the dynamic linker relocated has
//! such copies and is skipped). Dropping one of those pages loses nothing:
//! the next access maps the same bytes from the same file. The madvise
//! wrapper checks every page again (`/proc/self/pagemap`) before it drops.
//!
//! Nothing here is fatal: a failure is logged at debug and the mapping is
//! left as it was.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Work in progress (management connections, relocation sessions).
static BUSY: AtomicUsize = AtomicUsize::new(0);
/// Set by `relocd serve`: trim whenever [`BUSY`] falls to zero.
static IDLE_TRIM: AtomicBool = AtomicBool::new(false);
/// One trim at a time (a second one meanwhile would find nothing to do).
static TRIMMING: Mutex<()> = Mutex::new(());

/// A piece of work the daemon is doing; when the last one ends (is
/// dropped) and [`enable_idle_trim`] was called, the daemon [`trim`]s.
#[must_use = "the work lasts as long as the guard"]
#[derive(Debug)]
pub struct Busy(());

impl Busy {
    /// Work starts.
    pub fn enter() -> Busy {
        BUSY.fetch_add(1, Ordering::SeqCst);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if BUSY.fetch_sub(1, Ordering::SeqCst) == 1 && IDLE_TRIM.load(Ordering::SeqCst) {
            trim_logged("idle");
        }
    }
}

/// From now on, trim whenever the last [`Busy`] ends (`relocd serve` only;
/// a daemon embedded in a test process leaves its host's memory alone).
pub fn enable_idle_trim() {
    IDLE_TRIM.store(true, Ordering::SeqCst);
}

/// [`trim`], unless one is running, with its outcome logged at debug.
pub fn trim_logged(when: &'static str) {
    let Ok(_one) = TRIMMING.try_lock() else {
        return;
    };
    let t = std::time::Instant::now();
    let done = trim();
    tracing::debug!(
        when,
        took_us = t.elapsed().as_micros(),
        mappings = done.mappings,
        kib = done.kib,
        skipped = done.skipped,
        "residency trim: read-only file pages dropped"
    );
}

/// `/proc/self/smaps` is read up to this many bytes (relocd's is ~50 KB).
const SMAPS_MAX: u64 = 4 << 20;
/// At most this many mappings are parsed.
const MAPPINGS_MAX: usize = 16 * 1024;

/// One mapping of `/proc/self/smaps`, the fields the trim needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `w` in the permissions.
    pub writable: bool,
    /// `p` (not `s`) in the permissions.
    pub private: bool,
    /// A file is mapped: an inode other than 0 and a path.
    pub file: bool,
    /// The path, or the pseudo-name (`[heap]`), or empty.
    pub name: String,
    /// `Rss:` in KiB.
    pub rss_kib: u64,
    /// `Anonymous:` in KiB; `None` if the kernel did not say.
    pub anonymous_kib: Option<u64>,
}

/// `/proc/self/smaps` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum SmapsError {
    /// Reading failed.
    #[error("reading /proc/self/smaps: {0}")]
    Read(#[from] std::io::Error),
    /// The text is longer than 4 MiB or lists more than 16384 mappings.
    #[error("/proc/self/smaps is larger than expected")]
    TooLarge,
    /// A line is not what the kernel writes.
    #[error("/proc/self/smaps line {line}: {what}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// Parses a mapping's header line: `start-end perms offset dev inode [name]`.
fn header(line: &str) -> Option<Result<Mapping, &'static str>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    // Field lines ("Rss:   12 kB", "VmFlags: rd ex") have a key ending in ':'.
    if range.ends_with(':') {
        return None;
    }
    Some((|| {
        let (start, end) = range.split_once('-').ok_or("no address range")?;
        let start = u64::from_str_radix(start, 16).map_err(|_| "bad start address")?;
        let end = u64::from_str_radix(end, 16).map_err(|_| "bad end address")?;
        if end < start {
            return Err("range ends before it starts");
        }
        let perms = fields.next().ok_or("no permissions")?.as_bytes();
        if perms.len() != 4 {
            return Err("permissions are not 4 letters");
        }
        let _offset = fields.next().ok_or("no offset")?;
        let _dev = fields.next().ok_or("no device")?;
        let inode: u64 = fields
            .next()
            .ok_or("no inode")?
            .parse()
            .map_err(|_| "bad inode")?;
        // The name is the rest of the line (a path may hold spaces).
        let name = line
            .splitn(6, |c: char| c.is_ascii_whitespace())
            .nth(5)
            .unwrap_or("")
            .trim()
            .to_owned();
        Ok(Mapping {
            start,
            end,
            writable: perms[1] == b'w',
            private: perms[3] == b'p',
            file: inode != 0 && name.starts_with('/'),
            name,
            rss_kib: 0,
            anonymous_kib: None,
        })
    })())
}

/// A `Key:   N kB` field's value in KiB.
fn kib(line: &str, key: &str) -> Option<Result<u64, &'static str>> {
    let rest = line.strip_prefix(key)?;
    let number = rest.trim().strip_suffix("kB").map(str::trim);
    Some(number.and_then(|n| n.parse().ok()).ok_or("bad kB value"))
}

/// Parses the text of `/proc/PID/smaps`.
pub fn parse(text: &str) -> Result<Vec<Mapping>, SmapsError> {
    let mut maps: Vec<Mapping> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let malformed = |what| SmapsError::Malformed { line: i + 1, what };
        if let Some(h) = header(line) {
            if maps.len() == MAPPINGS_MAX {
                return Err(SmapsError::TooLarge);
            }
            maps.push(h.map_err(malformed)?);
            continue;
        }
        let Some(current) = maps.last_mut() else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(malformed("a field before any mapping"));
        };
        if let Some(v) = kib(line, "Rss:") {
            current.rss_kib = v.map_err(malformed)?;
        } else if let Some(v) = kib(line, "Anonymous:") {
            current.anonymous_kib = Some(v.map_err(malformed)?);
        }
    }
    Ok(maps)
}

/// Whether `m` may have its resident pages dropped: private, file-backed,
/// not writable, holding no anonymous (copy-on-write) page, and with
/// something resident to give back. A mapping whose `Anonymous:` line is
/// missing is skipped.
pub fn selected(m: &Mapping) -> bool {
    m.private
        && m.file
        && !m.writable
        && m.anonymous_kib == Some(0)
        && m.rss_kib > 0
        && m.end > m.start
}

/// What [`trim`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Mappings whose pages were dropped.
    pub mappings: usize,
    /// Their `Rss:` before, in KiB.
    pub kib: u64,
    /// Mappings selected but left as they were (the reason is logged).
    pub skipped: usize,
}

fn read_smaps() -> Result<String, SmapsError> {
    let file = std::fs::File::open("/proc/self/smaps")?;
    let mut text = String::new();
    file.take(SMAPS_MAX + 1).read_to_string(&mut text)?;
    if text.len() as u64 > SMAPS_MAX {
        return Err(SmapsError::TooLarge);
    }
    Ok(text)
}

/// Drops the resident pages of this process's read-only file mappings (see
/// the module doc). Call once start-up is over (its libraries loaded, its
/// sockets open); never fails: what goes wrong is logged at debug.
pub fn trim() -> Trimmed {
    let mut done = Trimmed::default();
    let maps = match read_smaps().and_then(|t| parse(&t)) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "residency trim skipped");
            return done;
        }
    };
    for m in maps.iter().filter(|m| selected(m)) {
        let (Ok(start), Ok(len)) = (usize::try_from(m.start), usize::try_from(m.end - m.start))
        else {
            done.skipped += 1;
            continue;
        };
        match relocd_hypercall::residency::release_file_pages(start, len) {
            Ok(()) => {
                done.mappings += 1;
                done.kib += m.rss_kib;
            }
            Err(e) => {
                done.skipped += 1;
                tracing::debug!(mapping = %m.name, start = %format_args!("{:#x}", m.start), error = %e,
                    "residency trim: mapping left as it was");
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five mappings as Linux 6.x writes them (fields trimmed to those that
    /// matter plus a few others): code, a relocated RELRO segment, writable
    /// data, the heap, the vDSO, and a path with a space.
    const SMAPS: &str = "\
560a92d8c000-560a92f67000 r--p 00000000 fe:00 5450005                    /usr/bin/relocd
Size:               1900 kB
Rss:                 716 kB
Pss:                 716 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
560a92f67000-560a9350a000 r-xp 001da000 fe:00 5450005                    /usr/bin/relocd
Size:               5772 kB
Rss:                3080 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
560a9350a000-560a93536000 r--p 0077c000 fe:00 5450005                    /usr/bin/relocd
Rss:                 176 kB
Anonymous:           176 kB
560a93536000-560a93539000 rw-p 007a7000 fe:00 5450005                    /usr/bin/relocd
Rss:                  12 kB
Anonymous:            12 kB
560ab8083000-560ab810c000 rw-p 00000000 00:00 0                          [heap]
Rss:                 168 kB
Anonymous:           168 kB
7fd717a6f000-7fd717a71000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7fd71777b000-7fd7177a1000 r--p 00000000 fe:00 326279                     /opt/my libs/libc.so.6
Rss:                 152 kB
Anonymous:             0 kB
7fd717000000-7fd717010000 r--s 00000000 fe:00 326280                     /dev/shm/shared
Rss:                  64 kB
Anonymous:             0 kB
7fd717010000-7fd717020000 r--p 00000000 fe:00 326281                     /usr/lib/untouched.so
Rss:                   0 kB
Anonymous:             0 kB
7fd717020000-7fd717030000 ---p 00000000 00:00 0
Rss:                   0 kB
Anonymous:             0 kB
";

    #[test]
    fn parses_what_the_kernel_writes() {
        let maps = parse(SMAPS).unwrap();
        assert_eq!(maps.len(), 10);
        let text = &maps[1];
        assert_eq!(
            (text.start, text.end, text.rss_kib, text.anonymous_kib),
            (0x560a92f67000, 0x560a9350a000, 3080, Some(0))
        );
        assert!(text.private && text.file && !text.writable);
        assert_eq!(text.name, "/usr/bin/relocd");
        assert_eq!(maps[6].name, "/opt/my libs/libc.so.6");
        assert!(!maps[4].file, "[heap] is not a file");
        assert!(!maps[9].file && maps[9].name.is_empty());
    }

    #[test]
    fn selects_read_only_file_pages_and_skips_the_rest() {
        let maps = parse(SMAPS).unwrap();
        let names: Vec<(u64, &str)> = maps
            .iter()
            .filter(|m| selected(m))
            .map(|m| (m.start, m.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (0x560a92d8c000, "/usr/bin/relocd"),
                (0x560a92f67000, "/usr/bin/relocd"),
                (0x7fd71777b000, "/opt/my libs/libc.so.6"),
            ],
            "read-only data, code, a library's read-only data"
        );
        // And why each other one is skipped:
        assert!(!selected(&maps[2]), "relocated RELRO: anonymous pages");
        assert!(!selected(&maps[3]), "writable data");
        assert!(!selected(&maps[4]), "the heap: no file");
        assert!(!selected(&maps[5]), "the vDSO: no file");
        assert!(!selected(&maps[7]), "a shared mapping");
        assert!(!selected(&maps[8]), "nothing resident");
    }

    #[test]
    fn anonymous_pages_alone_keep_a_mapping() {
        // Read-only, private, file-backed: only the anonymous pages tell
        // a relocated segment from code.
        let mut m = parse(SMAPS).unwrap().swap_remove(0);
        assert!(selected(&m));
        m.anonymous_kib = Some(4);
        assert!(!selected(&m), "one copied page");
        m.anonymous_kib = None;
        assert!(!selected(&m), "no Anonymous: line, no proof");
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        for (text, line) in [
            ("Rss: 4 kB\n", 1),
            ("zz-10 r--p 0 0:0 1 /x\n", 1),
            ("10-zz r--p 0 0:0 1 /x\n", 1),
            ("20-10 r--p 0 0:0 1 /x\n", 1),
            ("10-20 r--p 0 0:0\n", 1),
            ("10-20 rw 0 0:0 1 /x\n", 1),
            ("10-20 r--p 0 0:0 1 /x\nRss: many kB\n", 2),
            ("10-20 r--p 0 0:0 1 /x\nAnonymous: 4 MB\n", 2),
        ] {
            match parse(text) {
                Err(SmapsError::Malformed { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn this_process_can_be_read_and_trimmed() {
        // The test binary's own code is a selected mapping; trimming it
        // must leave the process running this test (it faults back in).
        let maps = parse(&read_smaps().unwrap()).unwrap();
        assert!(maps.iter().any(selected), "no read-only file mapping found");
        let done = trim();
        assert!(done.mappings > 0, "{done:?}");
        // Code runs after the trim: the parser gives the same answer.
        let again = parse(&read_smaps().unwrap()).unwrap();
        assert_eq!(
            again.iter().filter(|m| m.file).count(),
            maps.iter().filter(|m| m.file).count()
        );
    }
}
