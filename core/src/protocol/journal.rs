//! What each side journals, and what a restarted daemon does with it.
//!
//! The journal is the host's (a file in `--state-dir`, fsynced); the core
//! only says which records exist, when they must be durable, and how to
//! read them back after a crash. Records are keyed by the session
//! identifier and carry the domain's UUID so a restarted daemon can find
//! the domain again.

use serde::{Deserialize, Serialize};

/// Which side wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The sending host.
    Source,
    /// The receiving host.
    Dest,
}

/// A journal record's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    /// The commit decision (source: written and fsynced before `Commit` is
    /// sent; destination: before the guest is unpaused).
    Commit,
    /// The session did not move the guest after a commit record was
    /// written (fsynced before the guest is resumed at the source, or
    /// before the copy is destroyed at the destination); also written by
    /// `resolve --resume`.
    Aborted,
    /// The session is settled (source: copy destroyed; destination: guest
    /// running); also written by `resolve --discard`. Needs no fsync.
    Done,
}

/// One journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    /// The session identifier.
    pub session: u64,
    /// The domain's UUID.
    pub uuid: [u8; 16],
    /// Which side.
    pub role: Role,
    /// What happened.
    pub kind: RecordKind,
}

/// What a restarted source daemon does with a domain it was migrating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRecovery {
    /// No commit was ever announced (or it was withdrawn): resume the guest
    /// if it is paused or suspended.
    Resume,
    /// A commit was journaled and may have been announced, with no
    /// acknowledgement recorded: keep the guest paused, list it as "in
    /// doubt", wait for `resolve --resume|--discard`.
    InDoubt,
    /// The migration completed: destroy the local copy if it still exists.
    Destroy,
}

/// What a restarted destination daemon does with an incoming domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestRecovery {
    /// No commit arrived (or it was withdrawn): destroy the incoming copy.
    Destroy,
    /// The commit arrived and was journaled: make sure the guest runs.
    Unpause,
    /// Settled; nothing to do.
    Nothing,
}

/// Recovery at the source from the last record of a session (`None`: no
/// record at all).
pub const fn recover_source(last: Option<RecordKind>) -> SourceRecovery {
    match last {
        None | Some(RecordKind::Aborted) => SourceRecovery::Resume,
        Some(RecordKind::Commit) => SourceRecovery::InDoubt,
        Some(RecordKind::Done) => SourceRecovery::Destroy,
    }
}

/// Recovery at the destination from the last record of a session.
pub const fn recover_dest(last: Option<RecordKind>) -> DestRecovery {
    match last {
        None | Some(RecordKind::Aborted) => DestRecovery::Destroy,
        Some(RecordKind::Commit) => DestRecovery::Unpause,
        Some(RecordKind::Done) => DestRecovery::Nothing,
    }
}

/// The operator's answer to an in-doubt domain (`relocd resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The destination does not run the guest: run it here again. The host
    /// journals [`RecordKind::Aborted`] (fsync), then resumes the guest.
    Resume,
    /// The destination runs the guest: drop the copy here. The host
    /// destroys it, then journals [`RecordKind::Done`].
    Discard,
}

impl Resolution {
    /// The record the host writes for this resolution.
    pub const fn record(self) -> RecordKind {
        match self {
            Resolution::Resume => RecordKind::Aborted,
            Resolution::Discard => RecordKind::Done,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn recovery_tables() {
        assert_eq!(recover_source(None), SourceRecovery::Resume);
        assert_eq!(
            recover_source(Some(RecordKind::Commit)),
            SourceRecovery::InDoubt
        );
        assert_eq!(
            recover_source(Some(RecordKind::Aborted)),
            SourceRecovery::Resume
        );
        assert_eq!(
            recover_source(Some(RecordKind::Done)),
            SourceRecovery::Destroy
        );
        assert_eq!(recover_dest(None), DestRecovery::Destroy);
        assert_eq!(
            recover_dest(Some(RecordKind::Commit)),
            DestRecovery::Unpause
        );
        assert_eq!(
            recover_dest(Some(RecordKind::Aborted)),
            DestRecovery::Destroy
        );
        assert_eq!(recover_dest(Some(RecordKind::Done)), DestRecovery::Nothing);
        assert_eq!(
            recover_source(Some(Resolution::Resume.record())),
            SourceRecovery::Resume
        );
        assert_eq!(
            recover_source(Some(Resolution::Discard.record())),
            SourceRecovery::Destroy
        );
    }
}
