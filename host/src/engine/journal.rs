//! The session drivers' [`JournalSink`] on the daemon's [`Journal`], and the
//! test fault points at the commit.
//!
//! | session record | daemon journal state |
//! | --- | --- |
//! | (engine, session start) | `prepared` (source: before the guest can be paused; destination: once the empty domain exists) |
//! | `Commit` | `committed` |
//! | `Aborted`, `Done` | `resolved` |
//!
//! The `prepared` record is the engine's own: it lets a restarted daemon
//! find the guests a dead session left behind (a source guest still
//! stopped: resume it; a half-built destination domain: destroy it). After
//! any session that does not end in doubt the engine writes `resolved`, so
//! only open sessions stay in [`unresolved`](crate::journal::unresolved).
//!
//! # Fault points
//!
//! `RELOCD_FAILPOINT` in the daemon's environment makes a destination end
//! the process abruptly at the commit, the way a crash or a power cut
//! would, so that the end-to-end tests can reach the in-doubt outcomes on
//! real hosts: `dest-exit-before-commit` (the commit arrived, nothing was
//! journaled: the copy here never committed) and `dest-exit-after-commit`
//! (the commit is journaled, the answer never sent: the copy here is the
//! guest). Unset, nothing changes.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use relocd_core::protocol::journal::{Record, RecordKind};

use super::guard::{self, Crashed, Stopped};
use crate::journal::{CommitState, Journal, JournalEntry, Role};
use crate::session::JournalSink;

/// The environment variable naming a fault point (module doc).
pub const FAILPOINT_ENV: &str = "RELOCD_FAILPOINT";

/// The process's exit status at a fault point.
const FAILPOINT_EXIT: i32 = 86;

/// Ends the process at fault point `name` when `RELOCD_FAILPOINT` names it.
fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v.trim() == name) {
        tracing::error!(
            failpoint = name,
            "{FAILPOINT_ENV}: exiting at the fault point"
        );
        std::process::exit(FAILPOINT_EXIT);
    }
}

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
    /// A source's: the engine's marks of the guests it must restart if the
    /// daemon stops. From the journaled commit on, the guest is no longer
    /// this host's to restart (the destination may run it).
    pub(crate) stopped: Option<Stopped>,
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
        let dest_commit = self.role == Role::Dest && state == CommitState::Committed;
        if dest_commit {
            failpoint("dest-exit-before-commit");
        }
        self.put(record.session, state)?;
        if dest_commit {
            failpoint("dest-exit-after-commit");
        }
        if let (Role::Source, CommitState::Committed, Some(stopped)) =
            (self.role, state, &self.stopped)
        {
            guard::lock(stopped).remove(&*self.domain.borrow());
        }
        Ok(())
    }
}
