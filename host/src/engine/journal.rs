//! The session drivers' [`JournalSink`] on the daemon's [`Journal`], and the
//! start-up reconciliation that reads it back.
//!
//! | session record | daemon journal state |
//! | --- | --- |
//! | (engine, session start) | `prepared` (source: before the guest can be paused; destination: once the empty domain exists) |
//! | `Commit` | `committed` |
//! | `Aborted`, `Done` | `resolved` |
//!
//! The `prepared` record is the engine's own: it lets a restarted daemon
//! find the guests a dead session left behind (a source guest still paused:
//! resume it; a half-built destination domain: destroy it). After any
//! session that does not end in doubt the engine writes `resolved`, so only
//! open sessions stay in [`unresolved`](crate::journal::unresolved).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use relocd_core::protocol::journal::{Record, RecordKind};

use super::guard::Crashed;
use crate::journal::Journal;
use crate::journal::{CommitState, JournalEntry, Role};
use crate::session::JournalSink;

/// A session identifier as the daemon's journal writes it.
pub fn session_key(session: u64) -> String {
    format!("{session:016x}")
}

/// Writes session records to the daemon's journal (fsynced).
pub(crate) struct DaemonJournal<'a> {
    pub(crate) journal: &'a Journal,
    /// The domain's name (the destination learns it at admission).
    pub(crate) domain: Rc<RefCell<String>>,
    pub(crate) role: Role,
    pub(crate) peer: Option<String>,
    pub(crate) crashed: Crashed,
}

impl DaemonJournal<'_> {
    /// Appends one state for `session`.
    pub(crate) fn put(&self, session: u64, state: CommitState) -> io::Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the daemon is gone"));
        }
        let mut e = JournalEntry::now(
            &self.domain.borrow(),
            &session_key(session),
            self.role,
            state,
        );
        e.peer.clone_from(&self.peer);
        self.journal.record(&e).map_err(io::Error::other)
    }
}

impl JournalSink for DaemonJournal<'_> {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        let state = match record.kind {
            RecordKind::Commit => CommitState::Committed,
            RecordKind::Aborted | RecordKind::Done => CommitState::Resolved,
        };
        self.put(record.session, state)
    }
}
