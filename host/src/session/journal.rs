//! Where the session drivers journal the commit decision: the
//! [`JournalSink`] trait, and [`FileJournal`], a plain append-only file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use relocd_core::protocol::journal::{Record, RecordKind, Role};

/// An append-only journal of session records (see
/// `relocd_core::protocol`'s "Journal contract").
///
/// # Durability contract
///
/// [`record`](Self::record) returns `Ok` only once the record is durable:
/// written and fsynced (or the equivalent for the medium), so that a crash
/// right after the call finds it. The source announces `Commit` to the
/// destination only after this returned `Ok`; an `Err` aborts the session
/// before its point of no return.
pub trait JournalSink {
    /// Appends `record` and makes it durable before returning.
    fn record(&mut self, record: &Record) -> io::Result<()>;
}

impl<J: JournalSink + ?Sized> JournalSink for &mut J {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        (**self).record(record)
    }
}

const TAG: &str = "relocd-session-v1";

/// A journal in one text file, one record per line, fsynced after each
/// append. Simple enough to read by eye:
///
/// ```text
/// relocd-session-v1 00000000000004d2 0707…07 source commit
/// ```
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    file: File,
}

impl FileJournal {
    /// Opens (creating it if needed) the journal at `path` for appending.
    pub fn open(path: &Path) -> io::Result<FileJournal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileJournal {
            path: path.to_owned(),
            file,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every well-formed record of the journal at `path`, in order.
    /// A line that does not parse (a torn last write) is skipped.
    pub fn read(path: &Path) -> io::Result<Vec<Record>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            if let Some(r) = parse_line(&line?) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

fn format_line(r: &Record) -> String {
    let uuid: String = r.uuid.iter().map(|b| format!("{b:02x}")).collect();
    let role = match r.role {
        Role::Source => "source",
        Role::Dest => "dest",
    };
    let kind = match r.kind {
        RecordKind::Commit => "commit",
        RecordKind::Aborted => "aborted",
        RecordKind::Done => "done",
    };
    format!("{TAG} {:016x} {uuid} {role} {kind}\n", r.session)
}

fn parse_line(line: &str) -> Option<Record> {
    let mut it = line.split(' ');
    if it.next()? != TAG {
        return None;
    }
    let session = u64::from_str_radix(it.next()?, 16).ok()?;
    let hex = it.next()?;
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, b) in uuid.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let role = match it.next()? {
        "source" => Role::Source,
        "dest" => Role::Dest,
        _ => return None,
    };
    let kind = match it.next()? {
        "commit" => RecordKind::Commit,
        "aborted" => RecordKind::Aborted,
        "done" => RecordKind::Done,
        _ => return None,
    };
    if it.next().is_some() {
        return None;
    }
    Some(Record {
        session,
        uuid,
        role,
        kind,
    })
}

impl JournalSink for FileJournal {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.file.write_all(format_line(record).as_bytes())?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_torn_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("relocd-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j");
        let _ = std::fs::remove_file(&path);
        let a = Record {
            session: 0x1234,
            uuid: [0xab; 16],
            role: Role::Source,
            kind: RecordKind::Commit,
        };
        let b = Record {
            role: Role::Dest,
            kind: RecordKind::Done,
            ..a
        };
        let mut j = FileJournal::open(&path).unwrap();
        j.record(&a).unwrap();
        j.record(&b).unwrap();
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"relocd-session-v1 12 ab")
            .unwrap();
        assert_eq!(FileJournal::read(&path).unwrap(), vec![a, b]);
        assert_eq!(parse_line(&format_line(&a)[..]), None, "newline kept");
        assert_eq!(parse_line(format_line(&a).trim_end()), Some(a));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
