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
//!   out its actions, runs the pre-copy loop batch by batch and honours
//!   the bandwidth cap. No wait of it is longer than [`POLL_INTERVAL`]
//!   without a look at the `cancel` flag: waits for the destination, the
//!   cap's pauses, and writes, which block a slice at a time and have one
//!   deadline per frame.
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

use relocd_core::protocol::{self, msg, AbortReason, RefuseReason, Timeouts};

pub use dest::{refuse_unread, run_dest, run_dest_with_decoder, DestOptions, DestReport};
pub use image::{
    encode_head, encode_tail, ImageDecoder, ImageEncoder, ImageError, LibxcDecoder, LibxcEncoder,
};
pub use journal::{FileJournal, JournalSink};
pub use link::{Clock, Conn, Link};
pub use source::{
    run_source, run_source_with_encoder, SourceOptions, SourceReport, PROGRESS_INTERVAL,
};

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
    /// How long the last finished round took (zero before one has).
    pub round_time: Duration,
}

/// Why a session did not move the guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The destination refused the guest: its typed reason and the detail
    /// it gave for the operator (`Display` shows the detail when there is
    /// one, else the reason's text). The guest runs at the source. At the
    /// destination, the refusal its admission returned.
    #[error("the destination refused: {0}")]
    Refused(Refusal),
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
    /// bad input ([`protocol::Error::NotRelocd`]: the peer is not relocd),
    /// an abort from the peer or the pre-copy policy. At the source the
    /// guest runs again; at the destination the copy is gone. `Display`
    /// shows the peer's detail when there is one, else the error.
    #[error("{}", aborted_text(.error, .detail))]
    Aborted {
        /// What ended the session; [`protocol::Error::Aborted`] with the
        /// peer's reason when the peer aborted.
        error: protocol::Error,
        /// What the peer said when it aborted (its `Abort`'s detail, at
        /// most [`protocol::MAX_DETAIL_LEN`] bytes of plain text); empty
        /// when it gave none or the session ended otherwise.
        detail: String,
    },
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
    /// The error for a protocol failure that ended a session, with what
    /// the peer said about it (`Source::peer_detail`/`Dest::peer_detail`).
    pub(crate) fn from_protocol(e: protocol::Error, peer_detail: &str) -> SessionError {
        match e {
            protocol::Error::Refused(reason) => {
                SessionError::Refused(Refusal::new(reason, peer_detail))
            }
            protocol::Error::Incompatible { ours, theirs } => {
                SessionError::Incompatible { ours, theirs }
            }
            protocol::Error::Aborted(AbortReason::Cancelled) => SessionError::Cancelled,
            error @ protocol::Error::Aborted(_) => SessionError::Aborted {
                error,
                detail: peer_detail.to_owned(),
            },
            error => SessionError::Aborted {
                error,
                detail: String::new(),
            },
        }
    }
}

/// `SessionError::Aborted`'s text: the peer's words when it gave some.
fn aborted_text(error: &protocol::Error, detail: &str) -> String {
    match error {
        _ if !detail.is_empty() => format!("migration aborted by the peer: {detail}"),
        // Its own text already says "migration aborted".
        protocol::Error::Aborted(_) => error.to_string(),
        e => format!("migration aborted: {e}"),
    }
}

/// A destination's refusal: the typed reason, for programs, and a short
/// text for the source's operator (`not enough free memory for web1
/// (needs 129 MiB, has 64 MiB)`). The admission callback of [`run_dest`]
/// returns it (or a bare [`RefuseReason`]); the source gets it back in
/// [`SessionError::Refused`].
///
/// On the wire the detail is at most [`protocol::MAX_DETAIL_LEN`] bytes of
/// UTF-8 without control characters: a longer text is cut on a character
/// boundary (ending with `…`), control characters become spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why, as a code.
    pub reason: RefuseReason,
    /// What exactly, in words (empty: the reason's text says it).
    pub detail: String,
}

impl Refusal {
    /// A refusal for `reason`, with `detail` for the source's operator.
    pub fn new(reason: RefuseReason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }

    /// As the core's machines take it.
    pub(crate) fn wire(&self) -> msg::Refused<'_> {
        msg::Refused::new(self.reason, &self.detail)
    }
}

impl From<RefuseReason> for Refusal {
    fn from(reason: RefuseReason) -> Refusal {
        Refusal::new(reason, String::new())
    }
}

/// The detail when there is one, else the reason's text.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            fmt::Display::fmt(&self.reason, f)
        } else {
            f.write_str(&self.detail)
        }
    }
}

/// Shared settings for both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTimeouts {
    /// The protocol's waits.
    pub protocol: Timeouts,
    /// Longest the write of one frame may take (the peer stopped
    /// reading): one deadline per frame, however the peer's reading splits
    /// it into partial writes.
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
