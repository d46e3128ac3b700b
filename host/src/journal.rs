//! The journal: a durable, append-only record of migration commit points.
//!
//! Each record is one JSON object on one line of `STATE_DIR/journal.jsonl`.
//! [`Journal::record`] returns only after the line has reached the disk
//! (`fdatasync` of the file, and `fsync` of the directory when the file was
//! created), so a record that was announced to the peer survives a crash or a
//! power cut. That is what the commit handshake leans on: the point of no
//! return is journaled *before* it is announced.
//!
//! A crash in the middle of an append leaves a torn last line (a prefix of a
//! record, without its newline). [`Journal::open`] drops it with a warning
//! (the record was never acknowledged, so nobody acted on it) and truncates
//! the file back to the last complete line, so the next record starts on a
//! line of its own. Any *other* unreadable line is corruption and is reported
//! with its line number: relocd does not guess about commit points.

use crate::lock::InstanceLock;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The journal's file name inside the state directory.
pub const FILE_NAME: &str = "journal.jsonl";
/// The longest record line accepted (writing or reading), newline excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// The largest journal file read at start-up.
pub const MAX_FILE: u64 = 256 << 20;

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
    /// record closes the session's earlier ones.
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
    /// The file is larger than [`MAX_FILE`].
    #[error("journal {path}: {size} bytes is more than the {MAX_FILE} bytes relocd reads")]
    TooLarge {
        /// The journal file.
        path: PathBuf,
        /// Its size.
        size: u64,
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
    /// Byte offset where the torn line started (the new file length).
    pub offset: u64,
    /// How many bytes were dropped.
    pub len: u64,
}

struct Appender {
    file: File,
    /// Length of the file after the last complete record.
    len: u64,
    disabled: bool,
}

/// The journal of one daemon (one state directory). Shared between threads:
/// records are appended under a lock, each fully synced before the next.
pub struct Journal {
    path: PathBuf,
    appender: Mutex<Appender>,
    torn: Option<TornTail>,
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
    /// Opens (creating if needed) the journal in `state_dir`, repairing a
    /// torn last line (see [`Journal::torn_tail`]). The directory is created
    /// with mode 0700 when missing. One journal per directory at a time: the
    /// directory's instance lock is held until the journal is dropped.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
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
        let mut file = OpenOptions::new()
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
        let bytes = read_bounded(&mut file, &path)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut torn = None;
        if complete < bytes.len() {
            let offset = complete as u64;
            let len = (bytes.len() - complete) as u64;
            tracing::warn!(
                journal = %path.display(),
                offset,
                len,
                "dropping a torn last record (a write that never completed)"
            );
            file.set_len(offset).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            torn = Some(TornTail { offset, len });
        }
        // Validate what is there now, so corruption is reported at start-up.
        parse_lines(&bytes[..complete], &path)?;
        Ok(Journal {
            appender: Mutex::new(Appender {
                file,
                len: complete as u64,
                disabled: false,
            }),
            path,
            torn,
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

    /// Appends `entry` and returns once it is on disk.
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
        let result = app
            .file
            .write_all(&line)
            .and_then(|()| app.file.sync_data());
        match result {
            Ok(()) => {
                app.len += line.len() as u64;
                Ok(())
            }
            Err(source) => {
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
                Err(JournalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Every record, oldest first, read back from disk. An unterminated last
    /// line (a record being torn right now by a crash elsewhere cannot happen
    /// within one daemon, but a copied file may end so) is ignored with a
    /// warning.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        let mut file = File::open(&self.path).map_err(io_err(&self.path))?;
        let bytes = read_bounded(&mut file, &self.path)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(
                journal = %self.path.display(),
                len = bytes.len() - complete,
                "ignoring a torn last record"
            );
        }
        parse_lines(&bytes[..complete], &self.path)
    }
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

fn read_bounded(file: &mut File, path: &Path) -> Result<Vec<u8>, JournalError> {
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(JournalError::TooLarge {
            path: path.to_owned(),
            size: file.metadata().map_or(bytes.len() as u64, |m| m.len()),
        });
    }
    Ok(bytes)
}

fn parse_lines(bytes: &[u8], path: &Path) -> Result<Vec<JournalEntry>, JournalError> {
    let corrupt = |line: usize, reason: String| JournalError::Corrupt {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut entries = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(corrupt(
                number,
                format!("{} bytes, longer than {MAX_LINE}", line.len()),
            ));
        }
        let entry = serde_json::from_slice(line).map_err(|e| corrupt(number, e.to_string()))?;
        entries.push(entry);
    }
    Ok(entries)
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
