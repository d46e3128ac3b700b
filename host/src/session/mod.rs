//! Blocking drivers that run the core's relocation protocol over a real
//! connection: [`run_source`] on the sending host, [`run_dest`] on the
//! receiving one.
//!
//! They follow the call contracts of `relocd_core::protocol::Source` and
//! `Dest` and the journal contract of that module, the same way the core's
//! two-sided test harness does with fake guests, but with a [`Link`] (a
//! `TcpStream`), real time ([`Clock`]), a durable [`JournalSink`] and the
//! guest traits of `relocd_core::guest`.
//!
//! - The source runs on the caller's thread plus one reader thread that
//!   reads the destination's frames (it only sends control messages, so
//!   their bound is fixed: the length is checked against
//!   `MAX_CONTROL_FRAME_LEN` before a byte of the body is read) and hands
//!   them over a channel; the caller's thread polls the machine, carries
//!   out its actions, runs the pre-copy loop batch by batch, honours the
//!   bandwidth cap and checks the `cancel` flag between batches.
//! - The destination runs on the caller's thread: it reads a header,
//!   asks the machine for the current bound, reads the body, and applies
//!   image chunks to the sink through an [`ImageDecoder`].
//!
//! Every outcome leaves the guest where the protocol says: a failure
//! before the commit resumes it at the source (and destroys the partial
//! copy at the destination); an in-doubt end keeps the source's copy
//! suspended and is reported as [`SessionError::InDoubt`].

mod dest;
pub mod image;
mod journal;
mod link;
pub mod pack;
mod source;

use std::fmt;
use std::time::Duration;

use relocd_core::protocol::{self, AbortReason, RefuseReason, Timeouts};

pub use dest::{run_dest, run_dest_with_decoder, DestOptions, DestReport};
pub use image::{
    encode_head, encode_tail, ImageDecoder, ImageEncoder, ImageError, LibxcDecoder, LibxcEncoder,
};
pub use journal::{FileJournal, JournalSink};
pub use link::{Clock, Link};
pub use source::{run_source, run_source_with_encoder, SourceOptions, SourceReport};

/// How often a blocked driver wakes up to look at deadlines and the cancel
/// flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Where a migration is, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Hello and admission.
    Handshake,
    /// A live round (1-based); the guest runs.
    Live(u32),
    /// Stop-and-copy: the guest is suspended.
    Final,
    /// Waiting for the destination's `Prepared` and the commit.
    Committing,
}

/// A progress report from [`run_source`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Where the migration is.
    pub phase: Phase,
    /// Pages to send in the current round.
    pub round_pages: u64,
    /// Pages of the current round already sent.
    pub round_pages_sent: u64,
    /// Pages sent in all rounds.
    pub pages_sent: u64,
    /// Bytes written to the link so far.
    pub bytes_sent: u64,
    /// Pages dirtied during the last finished round.
    pub dirty: u64,
    /// Bandwidth measured over the last finished round, bytes per second.
    pub bandwidth: u64,
    /// Projected stop-and-copy time after the last finished round.
    pub projected_downtime: Duration,
}

/// Why a session did not move the guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The destination refused the guest. The guest runs at the source.
    #[error("the destination refused: {0}")]
    Refused(RefuseReason),
    /// No common protocol version. The guest runs at the source.
    #[error("incompatible protocol versions: we speak {ours}, the peer speaks {theirs}")]
    Incompatible {
        /// Our highest version.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The operator cancelled (the `cancel` flag). The guest runs at the
    /// source.
    #[error("cancelled; the guest keeps running at the source")]
    Cancelled,
    /// The session failed before its point of no return: a cut, a timeout,
    /// bad input, an abort from the peer or the pre-copy policy. At the
    /// source the guest runs again; at the destination the copy is gone.
    #[error("migration aborted: {0}")]
    Aborted(protocol::Error),
    /// The commit was announced but never acknowledged: the guest stays
    /// suspended at the source, "in doubt", until the operator resolves it.
    #[error("migration in doubt (the guest stays suspended here): {0}")]
    InDoubt(protocol::Error),
    /// A local guest operation failed (`what` names it); the session was
    /// aborted because of it.
    #[error("guest operation failed: {what}: {detail}")]
    Guest {
        /// The operation.
        what: &'static str,
        /// The backend's error.
        detail: String,
    },
    /// The migration image could not be built or applied.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The journal could not be written.
    #[error("journal: {0}")]
    Journal(#[source] std::io::Error),
    /// The connection could not be set up (timeouts, clone).
    #[error("connection: {0}")]
    Link(#[source] std::io::Error),
    /// A caller mistake in the drivers' use of the core (a bug).
    #[error("internal: {0}")]
    Internal(String),
}

impl SessionError {
    /// The error for a protocol failure that ended a session.
    pub(crate) fn from_protocol(e: protocol::Error) -> SessionError {
        match e {
            protocol::Error::Refused(r) => SessionError::Refused(r),
            protocol::Error::Incompatible { ours, theirs } => {
                SessionError::Incompatible { ours, theirs }
            }
            protocol::Error::Aborted(AbortReason::Cancelled) => SessionError::Cancelled,
            e => SessionError::Aborted(e),
        }
    }
}

/// Shared settings for both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTimeouts {
    /// The protocol's waits.
    pub protocol: Timeouts,
    /// Longest a write may block (the peer stopped reading).
    pub write: Duration,
}

impl Default for LinkTimeouts {
    fn default() -> Self {
        LinkTimeouts {
            protocol: Timeouts::default(),
            write: Duration::from_secs(30),
        }
    }
}

pub(crate) fn guest_err(what: &'static str, e: impl fmt::Debug) -> SessionError {
    SessionError::Guest {
        what,
        detail: format!("{e:?}"),
    }
}

/// MiB per second for a byte count over a time.
pub(crate) fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return 0.0;
    }
    bytes as f64 / (1024.0 * 1024.0) / s
}
