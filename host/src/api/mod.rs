//! The management socket's wire format: newline-delimited JSON.
//!
//! A client connects to the daemon's Unix socket (mode 0600: root only) and
//! sends one [`Request`] per line. For each request the daemon writes zero
//! or more [`Reply::Progress`] lines, then exactly one final line,
//! [`Reply::Ok`] or [`Reply::Error`]. Only then does the client send its next
//! request on the same connection; the one exception is
//! [`Request::Cancel`], which may be sent while a long command runs and asks
//! it to stop (the command still ends with its final line, typically an
//! error of kind [`ErrorKind::Cancelled`]). Closing the connection while a
//! command runs cancels it too.
//!
//! ```text
//! client → {"cmd":"migrate","domain":"web1","host":"hostb","live":true}
//! daemon ← {"reply":"progress","phase":"precopy","round":1,"pages_sent":1024,...}
//! daemon ← {"reply":"progress","phase":"precopy","round":2,...}
//! daemon ← {"reply":"ok","result":{"kind":"migrated","rounds":4,...}}
//! ```
//!
//! Every line, both ways, is at most [`MAX_LINE`] bytes (newline excluded).
//! A longer request line gets a [`ErrorKind::LineTooLong`] reply and the
//! daemon closes the connection (it cannot find the next request reliably).
//! A line that is not a request gets [`ErrorKind::BadRequest`] and the
//! connection stays usable.
//!
//! Versioning: [`PROTOCOL_VERSION`] is in every [`PingInfo`]. Fields are added
//! with defaults; enums that a client reads have an `unknown` catch-all so an
//! older client can still print what a newer daemon says.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The management protocol's version.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line (request or reply) in bytes, newline excluded.
pub const MAX_LINE: usize = 1 << 20;

/// A request from the CLI to the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon alive, and what is it serving? Answered with
    /// [`Outcome::Pong`].
    Ping,
    /// The domains the backend sees. Answered with [`Outcome::Domains`].
    List,
    /// Move a domain to another host. Streams progress; answered with
    /// [`Outcome::Migrated`].
    Migrate(MigrateRequest),
    /// Write a domain to a file. Streams progress; answered with
    /// [`Outcome::Saved`].
    Save(SaveRequest),
    /// Start a domain from a file. Streams progress; answered with
    /// [`Outcome::Restored`].
    Restore(RestoreRequest),
    /// Settle an in-doubt domain. Answered with [`Outcome::Resolved`].
    Resolve(ResolveRequest),
    /// Create a guest in the simulated hypervisor. Answered with
    /// [`Outcome::Created`].
    SimCreate(SimCreateRequest),
    /// Stop the command running on this connection (see the module doc).
    Cancel,
    /// The migrations, saves and restores in flight on this host, read
    /// without touching them (`relocd status`). Answered with
    /// [`Outcome::Status`].
    Status,
}

impl Request {
    /// The request's name, as on the wire (`"migrate"`, …), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::List => "list",
            Request::Migrate(_) => "migrate",
            Request::Save(_) => "save",
            Request::Restore(_) => "restore",
            Request::Resolve(_) => "resolve",
            Request::SimCreate(_) => "sim_create",
            Request::Cancel => "cancel",
            Request::Status => "status",
        }
    }
}

/// `relocd migrate`'s arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// The domain (name or id).
    pub domain: String,
    /// The destination host (name or address).
    pub host: String,
    /// The destination's relocation port (default: 8002).
    #[serde(default)]
    pub port: Option<u16>,
    /// Live (pre-copy while the guest runs) rather than offline.
    #[serde(default)]
    pub live: bool,
    /// The downtime target of the stop-and-copy, in milliseconds.
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
    /// Bandwidth cap, in bytes per second.
    #[serde(default)]
    pub bandwidth_bytes_per_s: Option<u64>,
    /// The pre-copy round cap.
    #[serde(default)]
    pub max_iters: Option<u32>,
    /// Abort, rather than stop anyway, when the guest dirties memory faster
    /// than the link sends.
    #[serde(default)]
    pub abort_if_busy: bool,
    /// Send the image packed (LZ4) when the destination can unpack it
    /// (`--compress`): fewer bytes on a slow link, more CPU.
    #[serde(default)]
    pub compress: bool,
    /// Send all-zero pages in full, not as markers (`--no-zero-pages`;
    /// markers are the default where the destination takes them): what
    /// the markers save, measured.
    #[serde(default)]
    pub no_zero_pages: bool,
    /// Throttle the guest's vCPUs when its dirty set stops shrinking
    /// (`--auto-converge`), step by step up to a ceiling; its own
    /// scheduling parameters come back on every path.
    #[serde(default)]
    pub auto_converge: bool,
    /// Over TLS (`--ssl`), whatever `xend-relocation-ssl` says; never
    /// falls back to plaintext.
    #[serde(default)]
    pub ssl: bool,
}

/// `relocd save`'s arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SaveRequest {
    /// The domain (name or id).
    pub domain: String,
    /// The file to write, absolute (the daemon's working directory is not
    /// the client's).
    pub file: PathBuf,
    /// Keep the domain running after the save (`-c`).
    #[serde(default)]
    pub keep_running: bool,
    /// Pre-copy rounds while the guest runs, then a short stop-and-copy
    /// (`--live`); otherwise the guest is suspended first.
    #[serde(default)]
    pub live: bool,
    /// Cap on the write rate (live rounds, or the whole of an offline save), bytes per second
    /// (`--bandwidth`).
    #[serde(default)]
    pub bandwidth_bytes_per_s: Option<u64>,
}

/// `relocd restore`'s arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The file to read, absolute.
    pub file: PathBuf,
}

/// How to settle an in-doubt domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveAction {
    /// Keep the copy on this host and let it run.
    Resume,
    /// Destroy the copy on this host.
    Discard,
}

/// `relocd resolve`'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The in-doubt domain.
    pub domain: String,
    /// What to do with it.
    pub action: ResolveAction,
}

/// `relocd sim create`'s arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimCreateRequest {
    /// The new guest's name.
    pub name: String,
    /// Its memory, in bytes.
    pub memory_bytes: u64,
    /// How fast its workload dirties memory, in bytes per second.
    #[serde(default)]
    pub dirty_rate_bytes_per_s: u64,
    /// The workload's write pattern (`uniform`, `hot-set`, …).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Its vCPU count.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Percentage of its pages that hold data from the start (`--fill`);
    /// the others are zeros.
    #[serde(default)]
    pub fill_percent: u8,
}

/// One line from the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// An intermediate report of a long command; more lines follow.
    Progress(Progress),
    /// The command succeeded; this is its last line.
    Ok {
        /// What it produced.
        result: Outcome,
    },
    /// The command failed; this is its last line.
    Error(CommandError),
}

impl Reply {
    /// Whether this line ends the reply to a request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Progress(_))
    }
}

/// What a successful command produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Reply to [`Request::Ping`].
    Pong(PingInfo),
    /// Reply to [`Request::List`].
    Domains {
        /// The domains, in the backend's order.
        domains: Vec<DomainInfo>,
    },
    /// Reply to [`Request::Migrate`].
    Migrated(TransferSummary),
    /// Reply to [`Request::Save`].
    Saved(TransferSummary),
    /// Reply to [`Request::Restore`]: the new domain.
    Restored(DomainInfo),
    /// Reply to [`Request::Resolve`]: the domain afterwards (gone after a
    /// discard).
    Resolved {
        /// The domain's name.
        domain: String,
        /// What was done.
        action: ResolveAction,
    },
    /// Reply to [`Request::SimCreate`]: the new domain.
    Created(DomainInfo),
    /// Reply to [`Request::Status`].
    Status {
        /// What is in flight, oldest first (empty: nothing).
        sessions: Vec<SessionStatus>,
    },
}

/// Which way a guest in flight goes, as `relocd status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// `relocd migrate` from this host.
    Outgoing,
    /// A migration to this host, from the relocation listener.
    Incoming,
    /// `relocd save` to a file.
    Save,
    /// `relocd restore` from a file.
    Restore,
    /// A direction this client does not know.
    #[serde(other)]
    Unknown,
}

impl Direction {
    /// The direction as `relocd status` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
            Direction::Save => "save",
            Direction::Restore => "restore",
            Direction::Unknown => "unknown",
        }
    }
}

/// One migration, save or restore in flight, as the daemon last saw it
/// (from the progress it reports to its own client).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// The guest's name (a restore's, once its file's configuration is
    /// read).
    pub domain: String,
    /// Which way it goes.
    pub direction: Direction,
    /// The other host (`host:port`, or the source's address for an
    /// incoming one); `None` for a save or restore.
    #[serde(default)]
    pub peer: Option<String>,
    /// The file of a save or restore.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The stage it is in.
    pub phase: Phase,
    /// The pre-copy round (1-based; 0 outside pre-copy or not known here).
    #[serde(default)]
    pub round: u32,
    /// Pages sent (or, incoming and restore, written to the guest) so far.
    #[serde(default)]
    pub pages_sent: u64,
    /// The guest's page count.
    #[serde(default)]
    pub pages_total: u64,
    /// Pages dirty, still to send (as the last progress report said).
    #[serde(default)]
    pub dirty_pages: u64,
    /// How fast the guest dirtied memory in the last finished pre-copy
    /// round, bytes per second (`None` before a round has finished).
    #[serde(default)]
    pub dirty_rate_bytes_per_s: Option<u64>,
    /// Bytes sent (or received) so far.
    #[serde(default)]
    pub bytes_sent: u64,
    /// The bandwidth, MiB/s: the one the session measured, else bytes so
    /// far over the time elapsed.
    #[serde(default)]
    pub bandwidth_mib_s: f64,
    /// The downtime a stop-and-copy would take now, in milliseconds (a
    /// live migration or save in pre-copy only).
    #[serde(default)]
    pub expected_downtime_ms: Option<f64>,
    /// Time since the command (or the incoming session) started, in
    /// milliseconds.
    pub elapsed_ms: f64,
}

/// The daemon, as [`Request::Ping`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingInfo {
    /// [`PROTOCOL_VERSION`] of the daemon.
    pub protocol: u32,
    /// The daemon's package version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The backend's name (`sim`, `xen`).
    pub backend: String,
    /// The relocation listener's bound address (`ip:port`), when listening.
    #[serde(default)]
    pub listen: Option<String>,
    /// The management socket's path.
    pub control: PathBuf,
    /// The state directory (the journal's home).
    pub state_dir: PathBuf,
}

/// A domain's run state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Running (or runnable).
    Running,
    /// Paused.
    Paused,
    /// Paused because a migration's outcome is unknown here: the other host
    /// vanished at the commit. Settle it with `relocd resolve`.
    InDoubt,
    /// Being torn down.
    Dying,
    /// Shut down, not yet destroyed.
    Shutdown,
    /// Crashed.
    Crashed,
    /// A state this client does not know.
    #[serde(other)]
    Unknown,
}

impl DomainState {
    /// The state as `relocd list` shows it.
    pub fn label(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::InDoubt => "in doubt",
            DomainState::Dying => "dying",
            DomainState::Shutdown => "shutdown",
            DomainState::Crashed => "crashed",
            DomainState::Unknown => "unknown",
        }
    }
}

/// A domain, as `relocd list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// The domain id.
    pub id: u32,
    /// The domain's name.
    pub name: String,
    /// Its memory, in bytes.
    pub memory_bytes: u64,
    /// Its vCPU count.
    pub vcpus: u32,
    /// Its run state.
    pub state: DomainState,
    /// The simulated guest's workload step counter (sim backend only): it
    /// goes on at the destination after a move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
}

/// A stage of a long command, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Connecting to the peer.
    Connecting,
    /// Hello and version/feature negotiation, admission.
    Negotiating,
    /// Pre-copy rounds while the guest runs.
    Precopy,
    /// The guest is paused; the last pages and the vCPU state go over.
    StopAndCopy,
    /// The commit handshake.
    Committing,
    /// Writing or reading a file, or receiving an incoming image.
    Transfer,
    /// A phase this client does not know.
    #[serde(other)]
    Other,
}

/// A progress report of a long command. Fields a command has no use for stay
/// at their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The stage.
    pub phase: Phase,
    /// The pre-copy round (1-based; 0 outside pre-copy).
    #[serde(default)]
    pub round: u32,
    /// Pages sent so far.
    #[serde(default)]
    pub pages_sent: u64,
    /// The guest's page count (the bar's length).
    #[serde(default)]
    pub pages_total: u64,
    /// Pages dirty, still to send.
    #[serde(default)]
    pub dirty_pages: u64,
    /// Bytes sent so far.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Measured bandwidth, MiB/s.
    #[serde(default)]
    pub bandwidth_mib_s: f64,
    /// The downtime the stop-and-copy would take now, in milliseconds.
    #[serde(default)]
    pub projected_downtime_ms: Option<f64>,
    /// How fast the guest dirtied memory in the last finished pre-copy
    /// round (its dirtied pages over the round's length), bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_rate_bytes_per_s: Option<u64>,
    /// A line for humans.
    #[serde(default)]
    pub message: Option<String>,
}

impl Progress {
    /// A report of `phase` with every counter at zero.
    pub fn phase(phase: Phase) -> Progress {
        Progress {
            phase,
            round: 0,
            pages_sent: 0,
            pages_total: 0,
            dirty_pages: 0,
            bytes_sent: 0,
            bandwidth_mib_s: 0.0,
            projected_downtime_ms: None,
            dirty_rate_bytes_per_s: None,
            message: None,
        }
    }
}

/// The summary of a migration or a save.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferSummary {
    /// The domain.
    pub domain: String,
    /// Pre-copy rounds (including the stop-and-copy).
    pub rounds: u32,
    /// Pages sent.
    pub pages_sent: u64,
    /// Bytes sent (pages and records).
    pub bytes_sent: u64,
    /// How long the guest was paused, in milliseconds.
    pub downtime_ms: f64,
    /// Wall time of the whole command, in milliseconds.
    pub total_ms: f64,
    /// Average bandwidth, MiB/s.
    pub bandwidth_mib_s: f64,
    /// Pages that travelled as a zero-page marker (a migration whose
    /// destination takes them).
    #[serde(default)]
    pub zero_pages: u64,
    /// How far auto-converge throttled the guest: the highest share of its
    /// CPU time taken, percent (0: not throttled).
    #[serde(default)]
    pub throttle_percent: u8,
    /// How many times auto-converge tightened the throttle.
    #[serde(default)]
    pub throttle_steps: u32,
}

/// The category of a failed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line was not a request this daemon understands.
    BadRequest,
    /// The request line exceeded [`MAX_LINE`].
    LineTooLong,
    /// The daemon has no implementation of this command (yet, or with this
    /// backend).
    NotImplemented,
    /// No such domain.
    NotFound,
    /// A name is already in use.
    Exists,
    /// The daemon's configuration (file or options) is unusable.
    Config,
    /// The peer or the backend refused (hosts-allow, capacity, …).
    Refused,
    /// The command was cancelled; nothing changed.
    Cancelled,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The peer could not be reached or the link failed.
    Network,
    /// This user may not do that (the management socket is root's).
    PermissionDenied,
    /// Anything else.
    Internal,
    /// A kind this client does not know.
    #[serde(other)]
    Unknown,
}

/// A failed command: a category and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// The category.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// What the other host said, when it refused or aborted a migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerReason>,
}

/// The other host's typed reason and its words (a refusal or an abort).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReason {
    /// The protocol's reason, in snake case (`no_capacity`, `name_taken`,
    /// `busy`, `dest_failed`, …).
    pub reason: String,
    /// The peer's text (empty: it gave none).
    pub detail: String,
}

impl CommandError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CommandError {
        CommandError {
            kind,
            message: message.into(),
            peer: None,
        }
    }

    /// The same error, with what the other host said.
    pub fn with_peer(mut self, reason: impl Into<String>, detail: impl Into<String>) -> Self {
        self.peer = Some(PeerReason {
            reason: reason.into(),
            detail: detail.into(),
        });
        self
    }

    /// "`what` is not implemented yet" (with this backend).
    pub fn not_implemented(what: &str) -> CommandError {
        CommandError::new(
            ErrorKind::NotImplemented,
            format!("{what} is not implemented yet"),
        )
    }
}

/// Why [`read_line`] returned no line.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line exceeds the limit; the rest of it was not read.
    #[error("line longer than {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one line of at most `limit` bytes (newline excluded) into `buf`
/// (cleared first), never buffering more than `limit + 1` bytes of it.
/// `Ok(false)` at a clean end of stream; a final line without a newline is
/// returned as a line.
pub fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, FrameError> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1),
            None => (available, available.len()),
        };
        if buf.len() + chunk.len() > limit {
            return Err(FrameError::TooLong { limit });
        }
        buf.extend_from_slice(chunk);
        let ended = done > chunk.len();
        reader.consume(done);
        if ended {
            return Ok(true);
        }
    }
}

/// Writes `msg` as one JSON line and flushes.
pub fn write_line(writer: &mut impl Write, msg: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// The client gave up on the command (cancelled, or closed the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled by the client")]
pub struct Cancelled;

/// Where a long command sends its progress. Given by the management socket
/// for the command's duration.
pub trait ProgressSink {
    /// Sends one progress line to the client. `Err(Cancelled)` when the
    /// client cancelled or went away: the command should stop at its next
    /// safe point (a migration before its point of no return leaves the
    /// guest running at the source) and return
    /// [`ErrorKind::Cancelled`].
    fn report(&mut self, progress: &Progress) -> Result<(), Cancelled>;

    /// Whether the client cancelled, without sending anything.
    fn is_cancelled(&self) -> bool;
}

/// A sink that drops reports and is never cancelled (for callers with no
/// client, and tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&mut self, _progress: &Progress) -> Result<(), Cancelled> {
        Ok(())
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn requests_on_the_wire() {
        let cases: [(Request, &str); 4] = [
            (Request::Ping, r#"{"cmd":"ping"}"#),
            (Request::List, r#"{"cmd":"list"}"#),
            (Request::Cancel, r#"{"cmd":"cancel"}"#),
            (
                Request::Resolve(ResolveRequest {
                    domain: "web1".into(),
                    action: ResolveAction::Discard,
                }),
                r#"{"cmd":"resolve","domain":"web1","action":"discard"}"#,
            ),
        ];
        for (req, text) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), text);
            assert_eq!(serde_json::from_str::<Request>(text).unwrap(), req);
        }
        // Optional fields may be left out.
        let m: Request =
            serde_json::from_str(r#"{"cmd":"migrate","domain":"web1","host":"hostb"}"#).unwrap();
        assert_eq!(
            m,
            Request::Migrate(MigrateRequest {
                domain: "web1".into(),
                host: "hostb".into(),
                ..MigrateRequest::default()
            })
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"migrate"}"#).is_err());
    }

    #[test]
    fn replies_on_the_wire() {
        let ok = Reply::Ok {
            result: Outcome::Domains {
                domains: vec![DomainInfo {
                    id: 3,
                    name: "web1".into(),
                    memory_bytes: 1 << 30,
                    vcpus: 2,
                    state: DomainState::InDoubt,
                    steps: None,
                }],
            },
        };
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(
            text,
            r#"{"reply":"ok","result":{"kind":"domains","domains":[{"id":3,"name":"web1","memory_bytes":1073741824,"vcpus":2,"state":"in_doubt"}]}}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), ok);
        assert!(ok.is_final());
        let sim: DomainInfo = serde_json::from_str(
            r#"{"id":1,"name":"g","memory_bytes":0,"vcpus":1,"state":"running","steps":42}"#,
        )
        .unwrap();
        assert_eq!(sim.steps, Some(42));

        let err = Reply::Error(CommandError::not_implemented("migrate"));
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"reply":"error","kind":"not_implemented","message":"migrate is not implemented yet"}"#
        );

        let p: Reply =
            serde_json::from_str(r#"{"reply":"progress","phase":"warp_drive","round":2}"#).unwrap();
        match p {
            Reply::Progress(p) => {
                assert_eq!((p.phase, p.round), (Phase::Other, 2));
            }
            other => panic!("{other:?}"),
        }
        let e: Reply =
            serde_json::from_str(r#"{"reply":"error","kind":"quantum","message":"?"}"#).unwrap();
        assert!(matches!(
            e,
            Reply::Error(CommandError {
                kind: ErrorKind::Unknown,
                ..
            })
        ));
    }

    #[test]
    fn read_line_bounds_and_splits() {
        let mut r = BufReader::with_capacity(4, &b"ab\ncdef\n\nlast"[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf, 8).unwrap());
        assert_eq!(buf, b"ab");
        assert!(read_line(&mut r, &mut buf, 8).unwrap());
        assert_eq!(buf, b"cdef");
        assert!(read_line(&mut r, &mut buf, 8).unwrap());
        assert_eq!(buf, b"");
        assert!(read_line(&mut r, &mut buf, 8).unwrap());
        assert_eq!(buf, b"last");
        assert!(!read_line(&mut r, &mut buf, 8).unwrap());

        let mut r = BufReader::with_capacity(4, &b"12345678\n123456789\n"[..]);
        assert!(read_line(&mut r, &mut buf, 8).unwrap());
        assert_eq!(buf, b"12345678");
        assert!(matches!(
            read_line(&mut r, &mut buf, 8),
            Err(FrameError::TooLong { limit: 8 })
        ));
        assert!(buf.len() <= 8);
    }
}
