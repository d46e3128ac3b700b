//! THE migration engine: one flow for each command, for every hypervisor
//! backend ([`Backend`], Xen's `save_ops`/`restore_ops` idea one level up).
//!
//! - `migrate` (the `migrate` module) finds the domain, lets the backend
//!   refuse what it cannot move, opens its source guest, connects to
//!   `HOST:PORT`, journals `prepared` and runs the session driver
//!   ([`run_source`](crate::session::run_source)) with the request's
//!   settings. Ctrl-C at the client cancels it before its point of no
//!   return (the guest keeps running here). On success the guest is gone
//!   here; when the outcome cannot be known (the peer vanished after the
//!   commit) the guest stays stopped, `relocd list` says "in doubt" and the
//!   error says how to settle it.
//! - Incoming sessions (the `receive` module) run
//!   [`run_dest`](crate::session::run_dest) with admission: the daemon's
//!   shutdown, the backend's [`admit`](Backend::admit) (type, name,
//!   memory), then its empty, paused domain. The domain is unpaused only
//!   after the journaled commit, and destroyed on any failure before it.
//! - `save` and `restore` ([`file`](mod@file)) write and read the same
//!   libxc stream in xl's save-file framing; a save is journaled as a
//!   source session, so a daemon killed while the guest is stopped for it
//!   has the next one restart it.
//! - `resolve` journals the operator's decision, then settles the guest.
//!
//! On start-up ([`Engine::new`]) the journal's open sessions are settled
//! (see [`Engine::new`]'s table). The daemon knows the engine by one trait,
//! [`Service`].
//!
//! [`Engine::crash`] is a test hook that simulates the daemon's process
//! dying at this instant: the hypervisor keeps its domains, but nothing the
//! engine's sessions would still do (resume, destroy, journal, send)
//! happens.

pub mod backend;
pub mod file;
pub(crate) mod guard;
pub mod inflight;
pub mod journal;
mod migrate;
mod receive;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use relocd_core::precopy::PolicyConfig;
use relocd_core::protocol::{AbortReason, Error as ProtoError, Features, RefuseReason, Timeouts};

use crate::api::{
    CommandError, DomainInfo, DomainState, ErrorKind, MigrateRequest, Phase, Progress,
    ProgressSink, ResolveAction, ResolveRequest, RestoreRequest, SaveRequest, SessionStatus,
    SimCreateRequest, TransferSummary,
};
use crate::journal::{unresolved, CommitState, Journal, JournalEntry, Role};
use crate::session::{self, LinkTimeouts, SessionError, SourceOptions, SourceReport};
pub use backend::{Backend, Domain, NewGuest, Purpose, Refusal, Settle, Settled};
use guard::{Crashed, Stopped};

/// The relocation port when a request names none (xend's default).
pub const DEFAULT_PORT: u16 = 8002;

/// How this host migrates out over TLS: its identity and trust, whether
/// TLS is the default (`xend-relocation-ssl`), and the port a TLS
/// migration dials when the request names none (`xend-relocation-ssl-port`).
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// The certificates (shared with the TLS listener; SIGHUP re-reads them).
    pub tls: Arc<crate::tls::Tls>,
    /// Every migration uses TLS, not only `migrate --ssl`.
    pub by_default: bool,
    /// The destination port when the request names none.
    pub port: u16,
}

/// The engine's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Timeout on connecting, on every read and write, and on each of the
    /// protocol's waits; at the destination also the longest an admitted
    /// session may go without progress (image bytes), and the handshake
    /// deadline when shorter than [`HANDSHAKE_TIMEOUT`].
    pub io_timeout: Duration,
    /// The longest an incoming migration may take from its admission to a
    /// complete image (`Prepared`), however it progresses: past it the
    /// destination aborts and destroys the partial guest, which releases
    /// its slot and the memory it was admitted for (`relocd serve
    /// --max-transfer-time`).
    pub max_transfer_time: Duration,
}

/// The destination's deadline from a connection to its admission request
/// (hello and `Admit`), when the io timeout is not shorter: what a peer
/// that is not yet admitted may cost, in time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`EngineConfig::max_transfer_time`]'s default: 30 minutes.
pub const DEFAULT_MAX_TRANSFER_TIME: Duration =
    Duration::from_secs(relocd_core::protocol::DEFAULT_TRANSFER_SECS);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            io_timeout: Duration::from_secs(30),
            max_transfer_time: DEFAULT_MAX_TRANSFER_TIME,
        }
    }
}

impl EngineConfig {
    /// The session drivers' timeouts for this configuration, as the
    /// source uses them. (Its handshake wait includes the destination's
    /// admission, creating the domain: it keeps the io timeout.)
    pub(crate) fn timeouts(&self) -> LinkTimeouts {
        let t = self.io_timeout.into();
        LinkTimeouts {
            protocol: Timeouts {
                handshake: t,
                idle: t,
                prepare: t,
                commit: t,
                transfer: self.max_transfer_time.into(),
            },
            write: self.io_timeout,
        }
    }

    /// The timeouts of an incoming session: a handshake deadline of its
    /// own, at most [`HANDSHAKE_TIMEOUT`]; the io timeout for progress;
    /// the transfer bound.
    pub(crate) fn dest_timeouts(&self) -> LinkTimeouts {
        let mut t = self.timeouts();
        t.protocol.handshake = self.io_timeout.min(HANDSHAKE_TIMEOUT).into();
        t
    }
}

/// Set once when the daemon starts to stop; sessions and commands poll it.
#[derive(Clone, Debug, Default)]
pub struct ShutdownToken(Arc<AtomicBool>);

impl ShutdownToken {
    /// A token not yet triggered.
    pub fn new() -> ShutdownToken {
        ShutdownToken::default()
    }

    /// Asks everything holding a clone to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the daemon is stopping.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An admitted relocation connection, handed to [`Service::receive`].
#[derive(Debug)]
pub struct Incoming {
    /// The daemon-local session number (for logs).
    pub id: u64,
    /// The connection (TCP, or TLS with the handshake done), with its
    /// timeouts set; nothing of the session read from it yet.
    pub stream: crate::session::Conn,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Triggered when the daemon stops.
    pub shutdown: ShutdownToken,
}

/// The engine as the daemon sees it: every command of the management
/// socket and every admitted relocation connection. Each method has a
/// default that answers "not implemented" (or closes the connection), so
/// a test double implements only what it needs.
pub trait Service: Send + Sync {
    /// The backend's name (`sim`, `xen`), reported by `Ping`.
    fn backend_name(&self) -> &str;

    /// Every domain, the in-doubt ones marked (`relocd list`).
    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        Ok(Vec::new())
    }

    /// `relocd sim create`.
    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        let _ = req;
        Err(CommandError::not_implemented(&format!(
            "sim create with the {} backend",
            self.backend_name()
        )))
    }

    /// `relocd migrate`.
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let _ = (req, progress);
        Err(CommandError::not_implemented("migrate"))
    }

    /// `relocd save`.
    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let _ = (req, progress);
        Err(CommandError::not_implemented("save"))
    }

    /// `relocd restore`.
    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        let _ = (req, progress);
        Err(CommandError::not_implemented("restore"))
    }

    /// `relocd resolve`.
    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        let _ = req;
        Err(CommandError::not_implemented("resolve"))
    }

    /// The migrations, saves and restores in flight (`relocd status`),
    /// read without touching them. The default: nothing.
    fn status(&self) -> Vec<SessionStatus> {
        Vec::new()
    }

    /// Runs one admitted relocation session to its end (on the
    /// connection's own thread). The default closes it.
    fn receive(&self, conn: Incoming) {
        tracing::warn!(session = conn.id, peer = %conn.peer,
            "no relocation protocol here; closing the connection");
    }

    /// A peer was admitted while `limit` sessions already run: answer with
    /// the protocol's refusal. The default closes the connection.
    fn busy(&self, conn: Incoming, limit: usize) {
        let _ = (conn, limit);
    }

    /// The daemon is stopping: refuse new commands and sessions; running
    /// ones stop at their next safe point.
    fn shutdown(&self) {}

    /// The sessions have ended (or the grace period passed): restart every
    /// guest a session stopped and did not hand over.
    fn stopped(&self) {}
}

/// The migration engine over backend `B` (module doc). Share it as the
/// daemon's [`Service`].
pub struct Engine<B: Backend> {
    backend: Arc<B>,
    journal: Arc<Journal>,
    cfg: EngineConfig,
    next_session: AtomicU64,
    stopping: AtomicBool,
    crashed: Crashed,
    /// Connections of running sessions (shut when the engine crashes).
    links: Mutex<HashMap<u64, TcpStream>>,
    active: AtomicUsize,
    /// Domains a command is moving or saving now: one at a time.
    busy: Mutex<HashSet<String>>,
    /// Source guests whose outcome is unknown here (by name).
    in_doubt: Mutex<BTreeSet<String>>,
    /// Source guests a session stopped and has not handed over (by name).
    stopped: Stopped,
    /// What is in flight, for `relocd status`.
    inflight: inflight::InFlight,
    /// TLS for outgoing migrations, when this host has an identity.
    tls: Option<TlsClient>,
}

impl<B: Backend> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend.name())
            .field("journal", &self.journal.path())
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Counts a running session while it lives.
pub(crate) struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    pub(crate) fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Active(n)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A domain's mark as being moved or saved; released when dropped.
pub(crate) struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> CommandError {
    CommandError::new(kind, msg)
}

/// How long a command waits for another to let go of its domain before it
/// is refused ([`Engine::claim_soon`]).
const CLAIM_WAIT: Duration = Duration::from_secs(2);

impl<B: Backend> Engine<B> {
    /// An engine over `backend` and `journal`. The journal's open sessions
    /// are settled first, the same way for every backend:
    ///
    /// | role, last state | the domain of that name |
    /// | --- | --- |
    /// | source, not committed | [`Settle::Resume`]: runs here again |
    /// | source, committed | [`Settle::Hold`]: stays stopped, "in doubt" until `relocd resolve` |
    /// | destination, committed | [`Settle::Start`]: unpaused |
    /// | destination, not committed | [`Settle::DestroyIncoming`]: the never-run copy destroyed |
    ///
    /// Each settled session gets a `resolved` record, except the in-doubt
    /// ones, which `relocd resolve` closes.
    pub fn new(backend: Arc<B>, journal: Arc<Journal>, cfg: EngineConfig) -> Engine<B> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 40);
        let e = Engine {
            backend,
            journal,
            cfg,
            next_session: AtomicU64::new(seed),
            stopping: AtomicBool::new(false),
            crashed: Arc::new(AtomicBool::new(false)),
            links: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            busy: Mutex::new(HashSet::new()),
            in_doubt: Mutex::new(BTreeSet::new()),
            stopped: Stopped::default(),
            inflight: inflight::InFlight::new(),
            tls: None,
        };
        e.reconcile();
        e.backend.start_up();
        e
    }

    /// The engine with TLS for its outgoing migrations.
    pub fn with_tls(mut self, tls: TlsClient) -> Engine<B> {
        self.tls = Some(tls);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn session_id(&self) -> u64 {
        // Unique per engine; spread so two daemons rarely pick the same.
        self.next_session
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
    }

    fn register(&self, session: u64, stream: &crate::session::Conn) {
        if let Ok(s) = stream.tcp().try_clone() {
            self.links
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(session, s);
        }
    }

    fn unregister(&self, session: u64) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&session);
    }

    /// Test hook: simulates the daemon's process dying now (module doc).
    /// Every session's connection is closed at once and nothing more is
    /// done to guests or the journal by this engine; waits (up to 10 s) for
    /// its session threads to return. The caller then drops the daemon and
    /// starts a new one on the same state directory and hypervisor.
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        for s in self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // What the dead process had in memory is lost with it.
        guard::lock(&self.stopped).clear();
        self.in_doubt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sessions running now (outgoing migrations and incoming ones).
    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Whether [`crash`](Self::crash) was called.
    pub fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// The guests in doubt here, by name.
    pub fn in_doubt(&self) -> Vec<String> {
        self.in_doubt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn set_in_doubt(&self, name: &str, doubt: bool) {
        let mut set = self.in_doubt.lock().unwrap_or_else(PoisonError::into_inner);
        if doubt {
            set.insert(name.to_owned());
        } else {
            set.remove(name);
        }
    }

    fn is_in_doubt(&self, name: &str) -> bool {
        self.in_doubt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// Settles the journal's open sessions (the table on [`Engine::new`]).
    fn reconcile(&self) {
        let entries = match self.journal.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "journal unreadable; no reconciliation");
                return;
            }
        };
        for e in unresolved(&entries) {
            if e.role == Role::Source {
                self.restore_sched(&entries, &e);
            }
            let (action, what) = match (e.role, e.state) {
                (Role::Source, CommitState::Committed) => (Settle::Hold, "in doubt"),
                (Role::Source, _) => (Settle::Resume, "source session without a commit"),
                (Role::Dest, CommitState::Committed) => {
                    (Settle::Start, "destination session with a commit")
                }
                (Role::Dest, _) => (
                    Settle::DestroyIncoming,
                    "destination session without a commit",
                ),
            };
            let outcome = self.backend.settle(&e.domain, action);
            if action == Settle::Hold {
                match outcome {
                    Ok(Settled::Gone) => {
                        self.close(&e, "in-doubt guest no longer exists");
                    }
                    Ok(_) => {
                        self.set_in_doubt(&e.domain, true);
                        tracing::warn!(domain = %e.domain, session = %e.session_id,
                            "migration in doubt after a restart: the guest stays stopped here; \
                             settle it with `relocd resolve {} --resume|--discard`", e.domain);
                    }
                    Err(err) => {
                        self.set_in_doubt(&e.domain, true);
                        tracing::error!(domain = %e.domain, error = %err,
                            "migration in doubt after a restart; holding the guest failed");
                    }
                }
                continue;
            }
            let why = match outcome {
                Ok(Settled::Done) => format!("{what}: {}", settle_done(action)),
                Ok(Settled::Unchanged) => format!("{what}: nothing to do"),
                Ok(Settled::Gone) => format!("{what}: no domain of that name"),
                Err(err) => {
                    tracing::error!(domain = %e.domain, error = %err, "settling {what}");
                    format!("{what}: settling FAILED ({err})")
                }
            };
            self.close(&e, &why);
        }
    }

    /// Gives a guest a killed daemon left throttled its own scheduling
    /// parameters back, from the session's journaled ones.
    fn restore_sched(&self, entries: &[JournalEntry], open: &JournalEntry) {
        let Some(s) = entries
            .iter()
            .filter(|r| r.session_id == open.session_id && r.role == Role::Source)
            .find_map(|r| r.sched)
        else {
            return;
        };
        let params = relocd_core::guest::SchedParams {
            weight: s.weight,
            cap: s.cap,
        };
        match self.backend.restore_sched(&open.domain, params) {
            Ok(Settled::Done) => tracing::info!(domain = %open.domain, weight = s.weight,
                cap = s.cap, "a throttled guest has its own scheduling parameters back"),
            Ok(_) => {}
            Err(err) => tracing::error!(domain = %open.domain, error = %err,
                "could not give a throttled guest its own scheduling parameters back"),
        }
    }

    fn close(&self, e: &JournalEntry, why: &str) {
        let mut r = JournalEntry::now(&e.domain, &e.session_id, e.role, CommitState::Resolved);
        r.peer.clone_from(&e.peer);
        if let Err(err) = self.journal.record(&r) {
            tracing::error!(error = %err, session = %e.session_id, "journal");
        } else {
            tracing::info!(domain = %e.domain, session = %e.session_id, "journal: {why}");
        }
    }

    fn refuse_if_stopping(&self) -> Result<(), CommandError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(err(ErrorKind::ShuttingDown, "the daemon is stopping"));
        }
        Ok(())
    }

    fn refuse_in_doubt(&self, domain: &str) -> Result<(), CommandError> {
        if self.is_in_doubt(domain) {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "`{domain}` is in doubt after a migration; settle it first with \
                     `relocd resolve {domain} --resume|--discard`"
                ),
            ));
        }
        Ok(())
    }

    /// Marks `name` as being moved or saved, or refuses when it is already.
    fn claim(&self, name: &str) -> Result<Claim<'_>, CommandError> {
        let mut set = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if !set.insert(name.to_owned()) {
            return Err(err(
                ErrorKind::Exists,
                format!("{name} is being saved or migrated already"),
            ));
        }
        Ok(Claim {
            set: &self.busy,
            name: name.to_owned(),
        })
    }

    /// [`claim`](Self::claim), waiting up to [`CLAIM_WAIT`] for another
    /// holder to let go: a guest that has just arrived here is still held
    /// by its incoming session for the moments between the source hearing
    /// `Committed` and this side journaling it done, so an operator who
    /// moves it on at once is not refused.
    fn claim_soon(&self, name: &str) -> Result<Claim<'_>, CommandError> {
        let until = std::time::Instant::now() + CLAIM_WAIT;
        loop {
            match self.claim(name) {
                Err(_) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    /// The domain a command names, claimed and checked as a source for
    /// `purpose`: it exists, no other command holds it, it is not in doubt
    /// (checked under the claim, so a command that ends in doubt meanwhile
    /// is seen), the backend can move or save it.
    fn source_domain(
        &self,
        domain: &str,
        purpose: Purpose,
    ) -> Result<(Domain, Claim<'_>), CommandError> {
        self.refuse_if_stopping()?;
        let d = self.backend.find(domain)?;
        let claim = self.claim_soon(&d.name)?;
        self.refuse_in_doubt(&d.name)?;
        self.backend.check_source(&d, purpose)?;
        Ok((d, claim))
    }

    /// The source guests whose commit is journaled without an outcome:
    /// never this host's to restart.
    fn committed_sources(&self) -> BTreeSet<String> {
        match self.journal.entries() {
            Ok(entries) => unresolved(&entries)
                .into_iter()
                .filter(|e| e.role == Role::Source && e.state == CommitState::Committed)
                .map(|e| e.domain)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "journal unreadable");
                BTreeSet::new()
            }
        }
    }
}

impl<B: Backend> Engine<B> {
    /// Registers a command in flight for `relocd status`, under its
    /// domain's name (the request may give an id) and page count.
    fn track_command(&self, mut start: inflight::Start) -> inflight::Ticket {
        if let Ok(d) = self.backend.find(&start.domain) {
            start.domain = d.name;
            start.pages_total = d.memory_bytes / relocd_core::guest::PAGE_SIZE as u64;
        }
        self.inflight.start(start)
    }

    /// What is in flight here (`relocd status`).
    pub fn in_flight(&self) -> &inflight::InFlight {
        &self.inflight
    }
}

fn settle_done(action: Settle) -> &'static str {
    match action {
        Settle::Resume => "the guest runs here again",
        Settle::Hold => "the guest stays stopped",
        Settle::Discard => "the copy here destroyed",
        Settle::Start => "the guest runs",
        Settle::DestroyIncoming => "the half-built domain destroyed",
    }
}

/// Connects to the relocation server at `host:port` within `io_timeout`,
/// with an error that says what to check.
pub(crate) fn connect(
    host: &str,
    port: u16,
    io_timeout: Duration,
) -> Result<TcpStream, CommandError> {
    let to = target(host, port);
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(ErrorKind::Network, format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, io_timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let detail = match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "connection refused: no relocation server listens on {to} \
             (is `relocd serve` running there with (xend-relocation-server yes) \
             or --listen, on that port?)"
        ),
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            format!("no answer from {to} within {:?}", io_timeout)
        }
        Some(e) => format!("{to}: {e}"),
        None => format!("{host} has no address"),
    };
    Err(err(ErrorKind::Network, format!("cannot connect: {detail}")))
}

/// The TLS handshake of an outgoing migration, with an error that says
/// what to fix (the guest has not been touched yet).
pub(crate) fn connect_tls(
    tls: &crate::tls::Tls,
    tcp: TcpStream,
    host: &str,
    to: &str,
    domain: &str,
    io_timeout: Duration,
) -> Result<crate::tls::TlsStream, CommandError> {
    use crate::tls::HandshakeError as H;
    tls.connect(tcp, host, io_timeout).map_err(|e| match e {
        H::Closed => err(
            ErrorKind::Refused,
            format!(
                "{to} closed the connection during the TLS handshake: it is not a TLS \
                 relocation port (the peer's xend-relocation-ssl-port, 8003 unless set, with \
                 (xend-relocation-ssl-server yes)), or it gave up on the handshake (its log \
                 says why); for a plain port, migrate without --ssl, or give the TLS one. \
                 {domain} keeps running here"
            ),
        ),
        H::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => err(
            ErrorKind::Refused,
            format!(
                "{to} reset the connection during the TLS handshake: it is not a TLS \
                 relocation port (the peer's xend-relocation-ssl-port, 8003 unless set); \
                 migrate without --ssl to its plain port, or give the TLS one. \
                 {domain} keeps running here"
            ),
        ),
        H::TimedOut => err(
            ErrorKind::Network,
            format!(
                "no TLS handshake with {to} within {}s: is it a TLS relocation port? \
                 {domain} keeps running here",
                io_timeout.as_secs()
            ),
        ),
        H::Tls(e) => tls_error(tls, &e, to, domain),
        H::Io(e) => err(
            ErrorKind::Network,
            format!("TLS handshake with {to} failed: {e}; {domain} keeps running here"),
        ),
    })
}

/// A migration that TLS ended (at the handshake, or with an alert the
/// destination sent after it, as TLS 1.3 servers judge the client's
/// certificate once the client thinks the handshake is done).
pub(crate) fn tls_error(
    tls: &crate::tls::Tls,
    e: &rustls::Error,
    to: &str,
    domain: &str,
) -> CommandError {
    let files = tls.files();
    let fix = match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => format!(
            "; this host trusts only the CAs in {} (relocd-relocation-ssl-ca-file): give \
             {to} a certificate from one of them, or add its CA there",
            files.ca.display()
        ),
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "; dial {to} by a name or address its certificate carries (its DNS or IP \
             subject alternative names), or reissue it with that name"
        ),
        rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown,
        ) => format!(
            "; this host's certificate is {} ({}): have it issued (or renewed) by a CA \
             in {to}'s relocd-relocation-ssl-ca-file",
            files.cert.display(),
            crate::tls::SETTING_CERT
        ),
        _ => String::new(),
    };
    err(
        ErrorKind::Refused,
        format!(
            "TLS with {to} failed: {}{fix}. {domain} keeps running here",
            crate::tls::describe(e)
        ),
    )
}

/// The error a failed migration reports to the client.
pub(crate) fn migrate_error(domain: &str, to: &str, e: SessionError) -> CommandError {
    match e {
        SessionError::Refused(r)
            if matches!(
                r.reason,
                RefuseReason::Busy | RefuseReason::TooManyMigrations
            ) =>
        {
            err(
                ErrorKind::Refused,
                format!("{to} is busy: {r}; {domain} keeps running here, try again later"),
            )
            .with_peer(refuse_name(r.reason), r.detail)
        }
        SessionError::Refused(r) => err(
            ErrorKind::Refused,
            format!("{to} refused {domain}: {r}; {domain} keeps running here"),
        )
        .with_peer(refuse_name(r.reason), r.detail),
        SessionError::Incompatible { ours, theirs } => err(
            ErrorKind::Refused,
            format!(
                "{to} speaks relocation protocol {theirs}, this host speaks {ours}; \
                 {domain} keeps running here"
            ),
        ),
        SessionError::Cancelled => err(
            ErrorKind::Cancelled,
            format!("migration cancelled; {domain} keeps running here"),
        ),
        SessionError::Aborted {
            error: ProtoError::MissingFeature { .. },
            ..
        } => err(
            ErrorKind::Refused,
            format!(
                "{domain} has devices (network or disk) and the relocd at {to} cannot recreate \
                 them (it does not take a guest's device configuration: upgrade it); \
                 {domain} keeps running here, untouched"
            ),
        ),
        SessionError::InDoubt(p) => err(
            ErrorKind::Network,
            format!(
                "migration of {domain} to {to} is in doubt ({p}): the commit was sent but \
                 not acknowledged. {domain} stays stopped here and `relocd list` shows it \
                 \"in doubt\". If {to} runs {domain}, settle with `relocd resolve {domain} \
                 --discard`; if it does not, `relocd resolve {domain} --resume`"
            ),
        ),
        SessionError::Aborted {
            error:
                ProtoError::LinkLost {
                    state: "AwaitHelloAck" | "AwaitAdmission",
                },
            ..
        } => err(
            ErrorKind::Refused,
            format!(
                "{to} closed the connection before answering: it does not admit this \
                     host (xend-relocation-hosts-allow), had no room for another \
                     connection, or is not a relocd relocation server; its log says which. \
                     {domain} keeps running here"
            ),
        ),
        SessionError::Aborted {
            error: ProtoError::Aborted(AbortReason::Busy),
            ..
        } => err(
            ErrorKind::Refused,
            format!(
                "{domain} dirties memory faster than the link sends (--abort-if-busy); \
                 it keeps running here"
            ),
        ),
        SessionError::Aborted {
            error: p @ ProtoError::NotRelocd { .. },
            ..
        } => err(
            ErrorKind::Refused,
            format!("{to} is not a relocd relocation server: {p}; {domain} keeps running here"),
        ),
        SessionError::Aborted {
            error: p @ ProtoError::Aborted(reason),
            detail,
        } => err(
            ErrorKind::Network,
            if detail.is_empty() {
                format!("migration of {domain} to {to} failed: {p}; {domain} keeps running here")
            } else {
                format!(
                    "migration of {domain} to {to} failed: {to} said: {detail} ({p}); \
                     {domain} keeps running here"
                )
            },
        )
        .with_peer(abort_name(reason), detail),
        SessionError::Aborted { error: p, .. } => err(
            ErrorKind::Network,
            format!("migration of {domain} to {to} failed: {p}; {domain} keeps running here"),
        ),
        other => err(
            ErrorKind::Internal,
            format!("migration of {domain} to {to} failed: {other}; {domain} keeps running here"),
        ),
    }
}

/// A refusal's reason as `--json` names it.
fn refuse_name(r: RefuseReason) -> String {
    match r {
        RefuseReason::NoCapacity => "no_capacity".into(),
        RefuseReason::NameTaken => "name_taken".into(),
        RefuseReason::TooManyMigrations => "too_many_migrations".into(),
        RefuseReason::NotAllowed => "not_allowed".into(),
        RefuseReason::Invalid => "invalid".into(),
        RefuseReason::Unsupported => "unsupported".into(),
        RefuseReason::ShuttingDown => "shutting_down".into(),
        RefuseReason::Busy => "busy".into(),
        RefuseReason::DeviceUnavailable => "device_unavailable".into(),
        RefuseReason::Unknown(n) => format!("unknown_{n}"),
    }
}

/// An abort's reason as `--json` names it.
fn abort_name(r: AbortReason) -> String {
    match r {
        AbortReason::Cancelled => "cancelled".into(),
        AbortReason::Busy => "guest_busy".into(),
        AbortReason::SourceFailed => "source_failed".into(),
        AbortReason::DestFailed => "dest_failed".into(),
        AbortReason::Timeout => "timeout".into(),
        AbortReason::ProtocolError => "protocol_error".into(),
        AbortReason::BadImage => "bad_image".into(),
        AbortReason::TransferTooLong => "transfer_too_long".into(),
        AbortReason::Unsupported => "unsupported".into(),
        AbortReason::Unknown(n) => format!("unknown_{n}"),
    }
}

pub(crate) fn to_progress(p: &session::Progress, pages_total: u64) -> Progress {
    let (phase, round) = match p.phase {
        session::Phase::Handshake => (Phase::Negotiating, 0),
        session::Phase::Live(r) => (Phase::Precopy, r),
        session::Phase::Final => (Phase::StopAndCopy, 0),
        session::Phase::Committing => (Phase::Committing, 0),
    };
    let mut out = Progress::phase(phase);
    out.round = round;
    out.pages_sent = p.pages_sent;
    out.pages_total = pages_total;
    out.dirty_pages = p.dirty;
    out.bytes_sent = p.bytes_sent;
    out.bandwidth_mib_s = p.bandwidth as f64 / (1024.0 * 1024.0);
    // A projection only means something while the guest runs: in the
    // stop-and-copy (or an offline copy) the guest is already stopped.
    // (Before a round has finished there is nothing to project from.)
    if let (session::Phase::Live(_), false) = (p.phase, p.round_time.is_zero()) {
        out.projected_downtime_ms = Some(p.projected_downtime.as_secs_f64() * 1000.0);
    }
    out.dirty_rate_bytes_per_s = dirty_rate(p.dirty, p.round_time);
    out
}

/// `pages` dirtied in `round`, in bytes per second (`None` before a
/// round has finished).
pub(crate) fn dirty_rate(pages: u64, round: Duration) -> Option<u64> {
    let secs = round.as_secs_f64();
    (secs > 0.0)
        .then(|| (pages.saturating_mul(relocd_core::guest::PAGE_SIZE as u64) as f64 / secs) as u64)
}

/// The command's summary of a migration.
pub(crate) fn summary(domain: &str, r: &SourceReport) -> TransferSummary {
    TransferSummary {
        domain: domain.to_owned(),
        rounds: r.rounds + 1,
        pages_sent: r.pages_sent,
        bytes_sent: r.bytes_sent,
        downtime_ms: r.downtime_ms as f64,
        total_ms: r.total_ms as f64,
        bandwidth_mib_s: r.bandwidth_mib_s,
        zero_pages: r.zero_pages,
        throttle_percent: r.throttle_percent,
        throttle_steps: r.throttle_steps,
    }
}

/// The pre-copy policy a request asks for.
pub(crate) fn policy(
    downtime_limit_ms: Option<u64>,
    max_iters: Option<u32>,
    abort_if_busy: bool,
) -> PolicyConfig {
    let mut policy = PolicyConfig::default();
    if let Some(ms) = downtime_limit_ms {
        policy.downtime_limit = Duration::from_millis(ms).into();
    }
    if let Some(n) = max_iters {
        policy.max_rounds = n.max(1);
    }
    policy.abort_if_busy = abort_if_busy;
    policy
}

/// The source's options for `req` (policy, bandwidth, timeouts); the
/// UUID is the caller's.
pub(crate) fn source_options(
    sid: u64,
    name: &str,
    req: &MigrateRequest,
    cfg: &EngineConfig,
) -> SourceOptions {
    let mut opts = SourceOptions::new(sid, name, req.live);
    opts.policy = policy(req.downtime_limit_ms, req.max_iters, req.abort_if_busy);
    opts.bandwidth_limit = req.bandwidth_bytes_per_s;
    opts.timeouts = cfg.timeouts();
    if req.compress {
        opts.features = Features(opts.features.0 | Features::COMPRESS.0);
    }
    if req.no_zero_pages {
        opts.features = Features(opts.features.0 & !Features::ZERO_PAGES.0);
    }
    if req.auto_converge {
        opts.auto_converge = Some(relocd_core::precopy::ConvergeConfig::default());
    }
    opts
}

/// The relocation target as the messages name it.
pub(crate) fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A UUID for a guest that has none of its own (a simulated one): from its
/// name and the session, so both journals name the same thing.
fn made_up_uuid(name: &str, session: u64) -> [u8; 16] {
    // FNV-1a over the name: stable across runs and hosts.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&h.to_be_bytes());
    u[8..].copy_from_slice(&session.to_be_bytes());
    u
}

impl<B: Backend> Service for Engine<B> {
    fn backend_name(&self) -> &str {
        self.backend.name()
    }

    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        let mut all = self.backend.list()?;
        let doubt = self.in_doubt.lock().unwrap_or_else(PoisonError::into_inner);
        for d in &mut all {
            if doubt.contains(&d.name) {
                d.state = DomainState::InDoubt;
            }
        }
        Ok(all)
    }

    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        self.backend.sim_create(req)
    }

    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let ticket = self.track_command(inflight::Start {
            direction: crate::api::Direction::Outgoing,
            domain: req.domain.clone(),
            peer: Some(target(&req.host, req.port.unwrap_or(DEFAULT_PORT))),
            file: None,
            phase: Phase::Connecting,
            pages_total: 0,
        });
        self.migrate_out(req, &mut ticket.tracking(progress))
    }

    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let ticket = self.track_command(inflight::Start {
            direction: crate::api::Direction::Save,
            domain: req.domain.clone(),
            peer: None,
            file: Some(req.file.clone()),
            phase: Phase::Transfer,
            pages_total: 0,
        });
        file::save(self, req, &mut ticket.tracking(progress))
    }

    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        self.refuse_if_stopping()?;
        file::restore(self, req, progress)
    }

    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        let d = self.backend.find(&req.domain)?;
        let name = d.name;
        // One decision at a time: a concurrent --resume and --discard
        // cannot both act.
        let _claim = self.claim(&name)?;
        if !self.is_in_doubt(&name) {
            return Err(err(
                ErrorKind::Refused,
                format!("`{name}` is not in doubt; there is nothing to resolve"),
            ));
        }
        let entries = self
            .journal
            .entries()
            .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        let open: Vec<JournalEntry> = unresolved(&entries)
            .into_iter()
            .filter(|e| e.role == Role::Source && e.domain == name)
            .collect();
        let record = |e: &JournalEntry| {
            let mut r = JournalEntry::now(&e.domain, &e.session_id, e.role, CommitState::Resolved);
            r.peer.clone_from(&e.peer);
            self.journal
                .record(&r)
                .map_err(|e| err(ErrorKind::Internal, format!("journal: {e}")))
        };
        let settle = |action| {
            self.backend.settle(&name, action).map_err(|e| {
                err(
                    e.kind,
                    format!("resolving `{name}`: {}; it stays in doubt", e.message),
                )
            })
        };
        match req.action {
            // The decision is durable before the guest runs again.
            ResolveAction::Resume => {
                for e in &open {
                    record(e)?;
                }
                settle(Settle::Resume)?;
            }
            // The copy here goes first: a crash in between leaves it in
            // doubt, never running twice.
            ResolveAction::Discard => {
                settle(Settle::Discard)?;
                for e in &open {
                    record(e)?;
                }
            }
        }
        self.set_in_doubt(&name, false);
        tracing::info!(domain = %name, action = ?req.action, "in-doubt migration resolved");
        Ok(())
    }

    fn status(&self) -> Vec<SessionStatus> {
        self.inflight.snapshot()
    }

    fn receive(&self, conn: Incoming) {
        self.receive_session(conn, None);
    }

    fn busy(&self, conn: Incoming, limit: usize) {
        tracing::warn!(session = conn.id, peer = %conn.peer, limit,
            "refusing a relocation: too many migrations in progress");
        self.receive_session(
            conn,
            Some(Refusal::new(
                RefuseReason::TooManyMigrations,
                format!("too many migrations in progress (at most {limit})"),
            )),
        );
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) {
        // Outgoing commands saw `stopping` and stop at their next safe
        // point, restarting their guests themselves; wait for them (the
        // daemon's grace), then restart what is still marked.
        let deadline = Instant::now() + self.cfg.io_timeout;
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let committed = self.committed_sources();
        let names: Vec<String> = std::mem::take(&mut *guard::lock(&self.stopped))
            .into_iter()
            .collect();
        for name in names {
            if committed.contains(&name) {
                // The commit was sent: the destination may run it.
                self.set_in_doubt(&name, true);
                continue;
            }
            match self.backend.settle(&name, Settle::Resume) {
                Ok(_) => tracing::info!(domain = %name,
                    "resumed a guest an unfinished migration or save had stopped"),
                Err(e) => tracing::error!(domain = %name, error = %e,
                    "could not resume a guest an unfinished migration or save had stopped"),
            }
        }
        let doubt = self.in_doubt();
        if !doubt.is_empty() {
            tracing::warn!(domains = ?doubt,
                "guests in doubt stay stopped; settle them with `relocd resolve`");
        }
    }
}
