//! The journal: a durable record of the commit points of the migration
//! sessions that are still open.
//!
//! Each record is one JSON object on one line of `STATE_DIR/journal.jsonl`.
//! [`Journal::record`] returns only after the line has reached the disk
//! (`fdatasync` of the file, and `fsync` of the directory when the file was
//! created or replaced), so a record that was announced to the peer
//! survives a crash or a power cut. That is what the commit handshake leans
//! on: the point of no return is journaled *before* it is announced.
//!
//! # Only what is open
//!
//! A session's records (per session and [`Role`]) matter until its
//! [`CommitState::Resolved`] record; after that nobody reads them again. So
//! the journal is *compacted*: rewritten with the records of the open
//! sessions only (at most one per state), atomically: a temporary file
//! beside it, created exclusively, written and fsynced, renamed over the
//! journal, then the directory fsynced. A crash at any step leaves either
//! the old file or the new one, and each holds every open record. The
//! journal is compacted when it is opened, and while the daemon runs
//! whenever an append takes it past [`COMPACT_AT`] bytes *and* past twice
//! its size after the last compaction. A peer that opens and aborts
//! sessions as fast as it can (two fsynced lines each) makes the file churn;
//! it cannot make it grow, nor make a restarted daemon refuse to start.
//!
//! Opening streams the file one line at a time (each at most [`MAX_LINE`]
//! bytes) and keeps only the records of sessions still open: a journal of
//! any length opens in memory bounded by what is open.
//!
//! # Damage
//!
//! A crash in the middle of an append leaves a torn last line (a prefix of a
//! record, without its newline). [`Journal::open`] drops it with a warning
//! (the record was never acknowledged, so nobody acted on it), so the next
//! record starts on a line of its own. Any *other* unreadable line is
//! corruption and is reported with its line number: relocd does not guess
//! about commit points.

use crate::lock::InstanceLock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The journal's file name inside the state directory.
pub const FILE_NAME: &str = "journal.jsonl";
/// The compaction's temporary file, renamed over [`FILE_NAME`] when
/// complete. One left by a crash is removed at the next compaction.
pub const COMPACT_FILE_NAME: &str = "journal.jsonl.compact";
/// The longest record line accepted (writing or reading), newline excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// A running journal is compacted when an append takes it past this size
/// (and past twice its size after the last compaction). About 2,800
/// sessions' worth of records.
pub const COMPACT_AT: u64 = 1 << 20;
/// The largest journal [`Journal::entries`] returns whole (a compacted one
/// is far smaller).
pub const MAX_FILE: u64 = 16 << 20;

/// Which end of a relocation session wrote a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The host the guest leaves.
    Source,
    /// The host the guest goes to.
    Dest,
}

/// A commit point of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    /// This side holds what it needs to commit (destination: a complete,
    /// paused copy), but has not passed its point of no return.
    Prepared,
    /// This side passed its point of no return.
    Committed,
    /// The session is settled (finished, aborted, or resolved by hand); the
    /// record closes the session's earlier ones, and compaction drops them
    /// all.
    Resolved,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The guest's name.
    pub domain: String,
    /// The relocation session (the same id at both ends).
    pub session_id: String,
    /// Which end wrote it.
    pub role: Role,
    /// The commit point reached.
    pub state: CommitState,
    /// When, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The other end (`host:port`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// A source's: the guest's own scheduling parameters, journaled before
    /// auto-converge first throttles it, so that a daemon killed
    /// mid-throttle has the next one give them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched: Option<JournalSched>,
}

/// A guest's scheduling parameters in a journal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalSched {
    /// Weight.
    pub weight: u16,
    /// Cap (percent of one CPU, 0: none).
    pub cap: u16,
}

impl JournalEntry {
    /// A record stamped with the current time.
    pub fn now(domain: &str, session_id: &str, role: Role, state: CommitState) -> JournalEntry {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        JournalEntry {
            domain: domain.to_owned(),
            session_id: session_id.to_owned(),
            role,
            state,
            ts,
            peer: None,
            sched: None,
        }
    }
}

/// Why the journal could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O error on the journal or its directory.
    #[error("journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line that is not a valid record.
    #[error("journal {path}: line {line} is corrupt: {reason}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Another live daemon uses this state directory.
    #[error(
        "state directory {path} is in use by another relocd; give each daemon its own --state-dir"
    )]
    InUse {
        /// The state directory.
        path: PathBuf,
    },
    /// A record to write is longer than [`MAX_LINE`].
    #[error("journal record of {0} bytes is longer than {MAX_LINE} bytes")]
    RecordTooLong(usize),
    /// An earlier write failed and could not be undone: the file may hold a
    /// partial record, so no more are appended until a restart repairs it.
    #[error("journal {path}: disabled after a failed write that could not be undone")]
    Disabled {
        /// The journal file.
        path: PathBuf,
    },
}

/// What [`Journal::open`] dropped from the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset where the torn line started (the length of the complete
    /// lines before it).
    pub offset: u64,
    /// How many bytes were dropped.
    pub len: u64,
}

/// What a compaction did, for the logs and the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Complete records the old file held.
    pub records_before: u64,
    /// Records kept (those of the sessions still open).
    pub records_after: u64,
    /// The old file's length.
    pub bytes_before: u64,
    /// The new file's length.
    pub bytes_after: u64,
}

struct Appender {
    /// The journal file, open for reading and appending.
    file: File,
    /// Length of the file after the last complete record.
    len: u64,
    /// Length of the file after the last compaction (or at open).
    base: u64,
    /// A compaction's rename is not yet known to be durable (the directory
    /// fsync failed): each append syncs the directory until one succeeds.
    dir_unsynced: bool,
    disabled: bool,
}

/// The journal of one daemon (one state directory). Shared between threads:
/// records are appended under a lock, each fully synced before the next.
pub struct Journal {
    path: PathBuf,
    dir: PathBuf,
    appender: Mutex<Appender>,
    compact_at: u64,
    torn: Option<TornTail>,
    opened: Option<Compaction>,
    _lock: InstanceLock,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `fsync` of a directory, so that a name created in it is durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Creates `dir` (mode 0700) and any missing parents, syncing each parent in
/// which a directory was created. An existing directory is left as it is.
fn create_dir_durable(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `state_dir` and compacts it
    /// (see the module doc), dropping a torn last line (see
    /// [`Journal::torn_tail`]). The directory is created with mode 0700 when
    /// missing. One journal per directory at a time: the directory's
    /// instance lock is held until the journal is dropped.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        Journal::open_with(state_dir, COMPACT_AT)
    }

    /// [`Journal::open`], compacting while running past `compact_at` bytes
    /// instead of [`COMPACT_AT`].
    pub fn open_with(state_dir: &Path, compact_at: u64) -> Result<Journal, JournalError> {
        create_dir_durable(state_dir)?;
        let Some(lock) =
            InstanceLock::acquire("state", state_dir, FILE_NAME).map_err(io_err(state_dir))?
        else {
            return Err(JournalError::InUse {
                path: state_dir.to_owned(),
            });
        };
        let path = state_dir.join(FILE_NAME);
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        if created {
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(state_dir)?;
        }
        // Corruption is reported here, at start-up.
        let scan = scan(&file, &path, false)?;
        if let Some(t) = &scan.torn {
            tracing::warn!(
                journal = %path.display(),
                offset = t.offset,
                len = t.len,
                "dropping a torn last record (a write that never completed)"
            );
        }
        let mut app = Appender {
            file,
            len: scan.complete,
            base: scan.complete,
            dir_unsynced: false,
            disabled: false,
        };
        let mut opened = None;
        if scan.torn.is_some() || scan.records > scan.kept() {
            match replace(&mut app, &path, state_dir, &scan) {
                Ok(done) => {
                    tracing::info!(
                        journal = %path.display(),
                        records_before = done.records_before,
                        records_after = done.records_after,
                        bytes_before = done.bytes_before,
                        bytes_after = done.bytes_after,
                        "journal compacted: only the open sessions' records are kept"
                    );
                    opened = Some(done);
                }
                Err(e) => {
                    // Not fatal: the old file is still the journal. A torn
                    // tail must go, though, so appends start on a new line.
                    tracing::warn!(error = %e, "journal compaction failed; going on with the file as it is");
                    if scan.torn.is_some() {
                        app.file.set_len(scan.complete).map_err(io_err(&path))?;
                        app.file.sync_all().map_err(io_err(&path))?;
                    }
                }
            }
        }
        Ok(Journal {
            appender: Mutex::new(app),
            dir: state_dir.to_owned(),
            path,
            compact_at,
            torn: scan.torn,
            opened,
            _lock: lock,
        })
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The torn last line [`Journal::open`] dropped, if there was one.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// What the compaction at [`Journal::open`] did, when the file held
    /// anything to drop.
    pub fn compacted_at_open(&self) -> Option<Compaction> {
        self.opened
    }

    /// Appends `entry` and returns once it is on disk. May then compact the
    /// journal (see the module doc); a failed compaction is logged, not
    /// returned: the record is safe either way.
    pub fn record(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        if line.len() > MAX_LINE {
            return Err(JournalError::RecordTooLong(line.len()));
        }
        line.push(b'\n');
        let mut app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
        if app.disabled {
            return Err(JournalError::Disabled {
                path: self.path.clone(),
            });
        }
        let mut result = app
            .file
            .write_all(&line)
            .and_then(|()| app.file.sync_data())
            .map_err(io_err(&self.path));
        if result.is_ok() && app.dir_unsynced {
            result = sync_dir(&self.dir);
            app.dir_unsynced = result.is_err();
        }
        if let Err(e) = result {
            // Undo a partial append so later records stay line-aligned.
            let len = app.len;
            if app
                .file
                .set_len(len)
                .and_then(|()| app.file.sync_all())
                .is_err()
            {
                app.disabled = true;
            }
            return Err(e);
        }
        app.len += line.len() as u64;
        if app.len > self.compact_at.max(app.base.saturating_mul(2)) {
            self.compact_locked(&mut app);
        }
        Ok(())
    }

    /// Compacts the journal now (see the module doc). Returns what it did;
    /// `None` when there was nothing to drop.
    pub fn compact(&self) -> Result<Option<Compaction>, JournalError> {
        let mut app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
        if app.disabled {
            return Err(JournalError::Disabled {
                path: self.path.clone(),
            });
        }
        let scan = scan(&app.file, &self.path, false)?;
        if scan.torn.is_none() && scan.records == scan.kept() {
            app.base = app.len;
            return Ok(None);
        }
        replace(&mut app, &self.path, &self.dir, &scan).map(Some)
    }

    fn compact_locked(&self, app: &mut Appender) {
        let result = scan(&app.file, &self.path, false)
            .and_then(|scan| replace(app, &self.path, &self.dir, &scan));
        match result {
            Ok(done) => tracing::debug!(
                journal = %self.path.display(),
                records_before = done.records_before,
                records_after = done.records_after,
                bytes_before = done.bytes_before,
                bytes_after = done.bytes_after,
                "journal compacted"
            ),
            Err(e) => {
                // Try again once the file has doubled.
                app.base = app.len;
                tracing::warn!(error = %e, "journal compaction failed; the journal keeps growing until one succeeds");
            }
        }
    }

    /// Every record in the file, oldest first, read back from disk: the
    /// open sessions' records as of the last compaction and whatever was
    /// appended since, so no more than the compaction threshold allows.
    /// Should the file be larger than [`MAX_FILE`] all the same (compactions
    /// failing, on a full disk), only the open sessions' records are
    /// returned (see the module doc), with a warning: memory stays bounded
    /// and [`unresolved`] finds the same sessions.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        // Under the lock: no append or compaction runs meanwhile.
        let app = self.appender.lock().unwrap_or_else(|p| p.into_inner());
        let size = app.file.metadata().map_err(io_err(&self.path))?.len();
        let whole = size <= MAX_FILE;
        if !whole {
            tracing::warn!(
                journal = %self.path.display(),
                size,
                "journal larger than {MAX_FILE} bytes: reading only the open sessions' records"
            );
        }
        let scan = scan(&app.file, &self.path, whole)?;
        if let Some(t) = scan.torn {
            tracing::warn!(
                journal = %self.path.display(),
                len = t.len,
                "ignoring a torn last record"
            );
        }
        Ok(match scan.all {
            Some(all) => all,
            None => scan.open.into_iter().map(|(e, _)| e).collect(),
        })
    }
}

/// Replaces the journal with the open records of `scan` (see [`rewrite`])
/// and points `app` at the new file.
fn replace(
    app: &mut Appender,
    path: &Path,
    dir: &Path,
    scan: &Scan,
) -> Result<Compaction, JournalError> {
    let bytes_before = app
        .file
        .metadata()
        .map_or(scan.complete, |m| m.len().max(scan.complete));
    let (file, len) = rewrite(path, &scan.open)?;
    // From here the new file is the journal, whatever follows.
    app.file = file;
    app.len = len;
    app.base = len;
    if let Err(e) = sync_dir(dir) {
        tracing::warn!(error = %e, "the compacted journal's rename is not yet durable; each record syncs the directory until it is");
        app.dir_unsynced = true;
    }
    Ok(Compaction {
        records_before: scan.records,
        records_after: scan.kept(),
        bytes_before,
        bytes_after: len,
    })
}

/// Writes `open`'s lines to a temporary file beside `path` (created
/// exclusively, mode 0600), fsyncs it and renames it over `path`. Returns
/// the new file, open for reading and appending, and its length. The caller
/// fsyncs the directory. On an error before the rename, the temporary file
/// is removed and `path` is untouched.
fn rewrite(path: &Path, open: &[(JournalEntry, Vec<u8>)]) -> Result<(File, u64), JournalError> {
    let tmp = path.with_file_name(COMPACT_FILE_NAME);
    // A leftover of a compaction that a crash interrupted before its
    // rename: the instance lock says no one else is writing it.
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(file = %tmp.display(), "removed an unfinished journal compaction"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = (|| {
        let mut w = BufWriter::new(&file);
        let mut len = 0u64;
        for (_, line) in open {
            w.write_all(line)?;
            len += line.len() as u64;
        }
        w.flush()?;
        drop(w);
        file.sync_all()?;
        Ok(len)
    })();
    let len = match written.and_then(|len| std::fs::rename(&tmp, path).map(|()| len)) {
        Ok(len) => len,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
    };
    Ok((file, len))
}

/// For each session and role, the last record, when it is not
/// [`CommitState::Resolved`]: the sessions a restarted daemon must look at.
pub fn unresolved(entries: &[JournalEntry]) -> Vec<JournalEntry> {
    let mut index: std::collections::HashMap<(&str, Role), usize> = Default::default();
    let mut last: Vec<&JournalEntry> = Vec::new();
    for e in entries {
        match index.entry((e.session_id.as_str(), e.role)) {
            std::collections::hash_map::Entry::Occupied(slot) => last[*slot.get()] = e,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(last.len());
                last.push(e);
            }
        }
    }
    last.into_iter()
        .filter(|e| e.state != CommitState::Resolved)
        .cloned()
        .collect()
}

/// The records of the sessions still open, as a scan of the file finds
/// them: per session and role, the records before its `resolved` one, at
/// most one per state (a repeated state replaces the older record). Its
/// size is bounded by the number of open sessions, not by the file's.
#[derive(Default)]
struct OpenSet {
    /// Kept records in file order.
    kept: BTreeMap<u64, Kept>,
    /// For each open session, its roles and the keys in `kept` of their
    /// records.
    by_session: HashMap<String, Vec<(Role, u64)>>,
    next: u64,
}

/// A kept record, as written.
struct Kept {
    state: CommitState,
    /// The line, newline included: a compaction copies records byte for
    /// byte.
    line: Vec<u8>,
    /// Its 1-based line number, for an error.
    number: usize,
}

impl OpenSet {
    /// Takes the next record of the file: `head` read from `line`, line
    /// `number`.
    fn add(&mut self, head: &Head<'_>, line: &[u8], number: usize) {
        let slots = match self.by_session.get_mut(head.session_id.as_ref()) {
            Some(slots) => slots,
            None if head.state == CommitState::Resolved => return,
            None => self
                .by_session
                .entry(head.session_id.clone().into_owned())
                .or_default(),
        };
        let kept = &mut self.kept;
        let resolved = head.state == CommitState::Resolved;
        slots.retain(|&(role, seq)| {
            let drop = role == head.role
                && (resolved || kept.get(&seq).is_some_and(|k| k.state == head.state));
            if drop {
                kept.remove(&seq);
            }
            !drop
        });
        if !resolved {
            slots.push((head.role, self.next));
            kept.insert(
                self.next,
                Kept {
                    state: head.state,
                    line: line.to_vec(),
                    number,
                },
            );
            self.next += 1;
        }
        if slots.is_empty() {
            self.by_session.remove(head.session_id.as_ref());
        }
    }

    /// The kept records, read whole, in file order.
    fn into_records(self, path: &Path) -> Result<Vec<(JournalEntry, Vec<u8>)>, JournalError> {
        self.kept
            .into_values()
            .map(|k| {
                let body = k.line.strip_suffix(b"\n").unwrap_or(&k.line);
                match serde_json::from_slice(body) {
                    Ok(entry) => Ok((entry, k.line)),
                    Err(e) => Err(JournalError::Corrupt {
                        path: path.to_owned(),
                        line: k.number,
                        reason: e.to_string(),
                    }),
                }
            })
            .collect()
    }
}

/// The fields of a record that say whether it closes a session. Every line
/// is read this far; only the records kept are read whole.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    session_id: std::borrow::Cow<'a, str>,
    role: Role,
    state: CommitState,
}

/// What one pass over the journal file found.
struct Scan {
    /// The open sessions' records, in file order, with their lines.
    open: Vec<(JournalEntry, Vec<u8>)>,
    /// Every record, when asked for.
    all: Option<Vec<JournalEntry>>,
    /// Complete records read, open or not.
    records: u64,
    /// Bytes of the complete lines (where a torn tail starts).
    complete: u64,
    /// What followed the last complete line.
    torn: Option<TornTail>,
}

impl Scan {
    fn kept(&self) -> u64 {
        self.open.len() as u64
    }
}

/// Reads `file` from its start, one line at a time, keeping only the open
/// sessions' records (see [`OpenSet`]). A complete line that is not a
/// record, or longer than [`MAX_LINE`], is [`JournalError::Corrupt`]. (The
/// records of closed sessions are checked only as far as [`Head`]: they
/// are dropped anyway.)
fn scan(file: &File, path: &Path, all: bool) -> Result<Scan, JournalError> {
    let corrupt = |line: usize, reason: String| JournalError::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut handle = file;
    handle.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, handle);
    let mut open = OpenSet::default();
    let mut every = Vec::new();
    let (mut records, mut complete, mut torn) = (0u64, 0u64, None);
    let mut line = Vec::with_capacity(1024);
    let mut number = 0usize;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            let mut len = n as u64;
            if n > MAX_LINE {
                // Longer than any record: find where it ends.
                let (rest, ended) = skip_line(&mut reader).map_err(io_err(path))?;
                len += rest;
                if ended {
                    return Err(corrupt(
                        number,
                        format!("{} bytes, longer than {MAX_LINE}", len - 1),
                    ));
                }
            }
            // No newline before the end of the file: a torn append.
            torn = Some(TornTail {
                offset: complete,
                len,
            });
            break;
        }
        let body = &line[..n - 1];
        if !body.is_empty() {
            let head: Head<'_> =
                serde_json::from_slice(body).map_err(|e| corrupt(number, e.to_string()))?;
            records += 1;
            open.add(&head, &line, number);
            if all {
                every.push(
                    serde_json::from_slice(body).map_err(|e| corrupt(number, e.to_string()))?,
                );
            }
        }
        complete += n as u64;
    }
    Ok(Scan {
        open: open.into_records(path)?,
        all: all.then_some(every),
        records,
        complete,
        torn,
    })
}

/// Consumes the rest of a line; returns how many bytes that was (the
/// newline included) and whether a newline ended it (else the file did).
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<(u64, bool)> {
    let mut skipped = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((skipped, false));
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok((skipped + i as u64 + 1, true));
        }
        let len = buf.len();
        reader.consume(len);
        skipped += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("relocd-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(domain: &str, session: &str, role: Role, state: CommitState) -> JournalEntry {
        JournalEntry::now(domain, session, role, state)
    }

    #[test]
    fn write_reopen_read_back() {
        let dir = temp_dir("roundtrip").join("nested/state");
        let journal = Journal::open(&dir).unwrap();
        assert!(journal.entries().unwrap().is_empty());
        let mut a = entry("web1", "s1", Role::Source, CommitState::Prepared);
        a.peer = Some("hostb:8002".into());
        let b = entry("web1", "s1", Role::Source, CommitState::Committed);
        journal.record(&a).unwrap();
        journal.record(&b).unwrap();
        drop(journal);

        let mode = std::fs::metadata(&dir).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(journal.torn_tail(), None);
        assert_eq!(journal.entries().unwrap(), vec![a.clone(), b.clone()]);
        let c = entry("db", "s2", Role::Dest, CommitState::Prepared);
        journal.record(&c).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![a, b, c]);
        let text = std::fs::read_to_string(journal.path()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with('\n'));
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains(r#""role":"source","state":"prepared""#),
            "{text}"
        );
    }

    #[test]
    fn torn_last_line_is_dropped_and_appends_stay_aligned() {
        let dir = temp_dir("torn");
        let journal = Journal::open(&dir).unwrap();
        let a = entry("web1", "s1", Role::Dest, CommitState::Prepared);
        journal.record(&a).unwrap();
        drop(journal);
        let path = dir.join(FILE_NAME);
        let good_len = std::fs::metadata(&path).unwrap().len();
        let torn = br#"{"domain":"web1","session_id":"s1","ro"#;
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(torn).unwrap();
        drop(f);

        let journal = Journal::open(&dir).unwrap();
        assert_eq!(
            journal.torn_tail(),
            Some(&TornTail {
                offset: good_len,
                len: torn.len() as u64
            })
        );
        assert_eq!(journal.entries().unwrap(), vec![a.clone()]);
        let b = entry("web1", "s1", Role::Dest, CommitState::Committed);
        journal.record(&b).unwrap();
        drop(journal);
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(journal.torn_tail(), None);
        assert_eq!(journal.entries().unwrap(), vec![a, b]);
    }

    #[test]
    fn corrupt_middle_line_is_an_error_with_its_number() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let good =
            serde_json::to_string(&entry("a", "s", Role::Source, CommitState::Prepared)).unwrap();
        std::fs::write(dir.join(FILE_NAME), format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = Journal::open(&dir).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 2, .. }),
            "{err}"
        );
        std::fs::write(
            dir.join(FILE_NAME),
            format!("{good}\n{{\"domain\":\"a\",\"session_id\":\"s\",\"role\":\"sideways\",\"state\":\"prepared\",\"ts\":1}}\n"),
        )
        .unwrap();
        assert!(matches!(
            Journal::open(&dir).unwrap_err(),
            JournalError::Corrupt { line: 2, .. }
        ));
    }

    #[test]
    fn one_journal_per_directory_at_a_time() {
        let dir = temp_dir("locked");
        let journal = Journal::open(&dir).unwrap();
        assert!(matches!(
            Journal::open(&dir).unwrap_err(),
            JournalError::InUse { .. }
        ));
        drop(journal);
        Journal::open(&dir).unwrap();
    }

    #[test]
    fn oversize_record_is_refused_before_writing() {
        let dir = temp_dir("oversize");
        let journal = Journal::open(&dir).unwrap();
        let big = entry(
            &"x".repeat(MAX_LINE),
            "s",
            Role::Source,
            CommitState::Prepared,
        );
        assert!(matches!(
            journal.record(&big),
            Err(JournalError::RecordTooLong(_))
        ));
        assert!(journal.entries().unwrap().is_empty());
    }

    /// One line of a closed session's record, the size the daemon writes
    /// (a destination's `prepared` and `resolved`, with the peer).
    fn closed_session(out: &mut impl Write, n: u64) {
        for state in ["prepared", "resolved"] {
            writeln!(
                out,
                r#"{{"domain":"attacker-guest-{n:08}","session_id":"{n:016x}","role":"dest","state":"{state}","ts":1767225600000,"peer":"192.0.2.66:{}"}}"#,
                40000 + n % 20000
            )
            .unwrap();
        }
    }

    /// Issue 13, item 4: a peer that opens and aborts sessions as fast as it
    /// can leaves two lines each. A million of them (more than the 256 MiB
    /// an earlier relocd refused to read) must not stop the daemon: the
    /// journal opens, keeps the open sessions, and shrinks to them.
    #[test]
    fn a_million_closed_sessions_open_and_compact_away() {
        let dir = temp_dir("million");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let open_a = entry("web1", "aaaa", Role::Source, CommitState::Committed);
        let open_b = entry("db", "bbbb", Role::Dest, CommitState::Prepared);
        {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(&path).unwrap());
            for n in 0..1_000_000u64 {
                if n == 10 {
                    serde_json::to_writer(&mut out, &open_a).unwrap();
                    out.write_all(b"\n").unwrap();
                }
                if n == 999_990 {
                    serde_json::to_writer(&mut out, &open_b).unwrap();
                    out.write_all(b"\n").unwrap();
                }
                closed_session(&mut out, n);
            }
            out.flush().unwrap();
        }
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(before > 256 << 20, "{before}");

        let journal = Journal::open(&dir).unwrap();
        assert_eq!(
            journal.entries().unwrap(),
            vec![open_a.clone(), open_b.clone()]
        );
        let done = journal.compacted_at_open().unwrap();
        assert_eq!((done.records_before, done.records_after), (2_000_002, 2));
        let after = std::fs::metadata(&path).unwrap().len();
        assert_eq!(after, done.bytes_after);
        assert!(after < 1024, "{after}");
        assert!(!dir.join(COMPACT_FILE_NAME).exists());
        drop(journal);
        // Nothing left to drop: the second open leaves the file alone.
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(journal.compacted_at_open(), None);
        assert_eq!(journal.entries().unwrap(), vec![open_a, open_b]);
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// While running, closed sessions are compacted away whenever the file
    /// passes the threshold: the file stays bounded, the open ones stay.
    #[test]
    fn running_journal_compacts_past_its_threshold() {
        let dir = temp_dir("running");
        let journal = Journal::open_with(&dir, 4096).unwrap();
        let open = entry("web1", "open", Role::Source, CommitState::Prepared);
        journal.record(&open).unwrap();
        let mut largest = 0;
        for n in 0..500 {
            let id = format!("s{n}");
            journal
                .record(&entry("g", &id, Role::Dest, CommitState::Prepared))
                .unwrap();
            journal
                .record(&entry("g", &id, Role::Dest, CommitState::Resolved))
                .unwrap();
            largest = largest.max(std::fs::metadata(journal.path()).unwrap().len());
        }
        // 500 sessions take ~90 KB of lines; the file never held more than
        // the threshold and a record.
        assert!(largest <= 4096 + 256, "{largest}");
        assert_eq!(unresolved(&journal.entries().unwrap()), vec![open.clone()]);
        assert!(journal.compact().unwrap().is_some());
        assert_eq!(journal.entries().unwrap(), vec![open.clone()]);
        assert_eq!(journal.compact().unwrap(), None);
        let committed = entry("web1", "open", Role::Source, CommitState::Committed);
        journal.record(&committed).unwrap();
        drop(journal);
        let journal = Journal::open_with(&dir, 4096).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![open, committed]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A compaction that a crash interrupted before its rename leaves its
    /// temporary file: the journal is still whole, and the next compaction
    /// replaces the leftover.
    #[test]
    fn leftover_compaction_file_is_replaced() {
        let dir = temp_dir("leftover");
        std::fs::create_dir_all(&dir).unwrap();
        let a = entry("web1", "s1", Role::Source, CommitState::Prepared);
        let mut text = String::new();
        for state in [CommitState::Prepared, CommitState::Resolved] {
            text += &serde_json::to_string(&entry("g", "s0", Role::Dest, state)).unwrap();
            text.push('\n');
        }
        text += &serde_json::to_string(&a).unwrap();
        text.push('\n');
        std::fs::write(dir.join(FILE_NAME), &text).unwrap();
        std::fs::write(dir.join(COMPACT_FILE_NAME), "half a compac").unwrap();
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![a.clone()]);
        assert!(!dir.join(COMPACT_FILE_NAME).exists());
        let text = std::fs::read_to_string(journal.path()).unwrap();
        assert_eq!(text, serde_json::to_string(&a).unwrap() + "\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file past [`MAX_FILE`] (compactions failing) is read for its open
    /// sessions only.
    #[test]
    fn entries_of_an_oversize_file_are_the_open_ones() {
        let dir = temp_dir("oversize-file");
        let journal = Journal::open_with(&dir, u64::MAX).unwrap();
        let open = entry("web1", "open", Role::Source, CommitState::Prepared);
        journal.record(&open).unwrap();
        {
            let mut out = std::io::BufWriter::new(
                OpenOptions::new()
                    .append(true)
                    .open(journal.path())
                    .unwrap(),
            );
            let mut n = 0;
            while out.get_ref().metadata().unwrap().len() <= MAX_FILE {
                closed_session(&mut out, n);
                n += 1;
            }
        }
        assert_eq!(journal.entries().unwrap(), vec![open]);
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlong_line_is_corrupt_unless_it_is_the_torn_tail() {
        let dir = temp_dir("overlong");
        std::fs::create_dir_all(&dir).unwrap();
        let good =
            serde_json::to_string(&entry("a", "s", Role::Source, CommitState::Prepared)).unwrap();
        let long = "x".repeat(MAX_LINE + 10);
        std::fs::write(dir.join(FILE_NAME), format!("{good}\n{long}\n{good}\n")).unwrap();
        assert!(matches!(
            Journal::open(&dir).unwrap_err(),
            JournalError::Corrupt { line: 2, .. }
        ));
        std::fs::write(dir.join(FILE_NAME), format!("{good}\n{long}")).unwrap();
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(
            journal.torn_tail(),
            Some(&TornTail {
                offset: good.len() as u64 + 1,
                len: long.len() as u64
            })
        );
        assert_eq!(journal.entries().unwrap().len(), 1);
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unresolved_keeps_the_last_open_state_per_session() {
        let entries = vec![
            entry("web1", "s1", Role::Source, CommitState::Prepared),
            entry("web1", "s1", Role::Source, CommitState::Committed),
            entry("web1", "s1", Role::Source, CommitState::Resolved),
            entry("db", "s2", Role::Dest, CommitState::Prepared),
            entry("db", "s2", Role::Dest, CommitState::Committed),
            entry("mail", "s3", Role::Source, CommitState::Prepared),
        ];
        let open = unresolved(&entries);
        assert_eq!(open.len(), 2);
        assert_eq!(
            (open[0].domain.as_str(), open[0].state),
            ("db", CommitState::Committed)
        );
        assert_eq!(
            (open[1].domain.as_str(), open[1].state),
            ("mail", CommitState::Prepared)
        );
    }
}
