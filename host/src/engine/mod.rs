//! The migration engine: the daemon's [`Operations`] (migrate, save,
//! restore, resolve) and its [`SessionHandler`](crate::daemon::SessionHandler) (incoming relocations) over
//! the simulated hypervisor ([`SimBackend`]), the session drivers
//! ([`crate::session`]) and the daemon's durable [`Journal`].
//!
//! - `migrate` connects to `HOST:PORT` (with the I/O timeout), runs
//!   [`run_source`] with the request's settings and turns its progress into
//!   the client's progress lines. Ctrl-C at the client cancels it before its
//!   point of no return (the guest keeps running here). On success the
//!   guest is gone here; when the outcome cannot be known (the peer vanished
//!   after the commit) the guest stays paused, `relocd list` says "in doubt"
//!   and the error says how to settle it.
//! - Incoming sessions run [`run_dest`](crate::session::run_dest) with admission: the daemon's
//!   shutdown, the hypervisor's name and capacity check, then an empty,
//!   paused domain; the listener enforces the concurrency limit and
//!   [`SessionHandler::busy`](crate::daemon::SessionHandler::busy) answers the protocol's refusal. The domain is
//!   unpaused only after the commit, and destroyed on any failure before it.
//! - `save` writes the same stream to a file in xl's save-file framing
//!   (`FILE.tmp`, fsync, rename); `restore` builds a paused domain from such
//!   a file and unpauses it once the stream is complete (the [`file`](mod@file) module).
//! - `resolve` journals the operator's decision, then settles the guest.
//!
//! On start-up ([`Engine::new`]) the journal's open sessions are reconciled
//! ([`journal`] describes the records): a source guest whose commit was
//! journaled without an outcome is paused and reported in doubt; a source
//! guest with only the engine's `prepared` record is resumed; a destination
//! domain with a commit record is unpaused, one without it destroyed.
//!
//! [`Engine::crash`] is a test hook that simulates the daemon's process
//! dying at this instant: the simulated hypervisor (like Xen) keeps its
//! domains, but nothing the engine's sessions would still do (resume,
//! destroy, journal, send) happens.

mod dest;
pub mod file;
pub(crate) mod guard;
pub mod journal;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relocd_core::precopy::PolicyConfig;
use relocd_core::protocol::{AbortReason, Error as ProtoError, Features, Timeouts};

use crate::daemon::backend::{Operations, ProgressSink};
use crate::daemon::control::{
    CommandError, DomainInfo, ErrorKind, MigrateRequest, Phase, Progress, ResolveAction,
    ResolveRequest, RestoreRequest, SaveRequest, TransferSummary,
};
use crate::daemon::journal::{unresolved, CommitState, JournalEntry, Role};
use crate::daemon::{Journal, SimBackend};
use crate::session::{
    self, run_source, Clock, LinkTimeouts, SessionError, SourceOptions, SourceReport,
};
use crate::sim::{DomainState, SimSource};
pub(crate) use dest::{dest_options, journal_put};
use guard::{Crashed, GuardedLink, TrackedSource};
pub(crate) use journal::DaemonJournal;

/// The relocation port when a request names none (xend's default).
pub const DEFAULT_PORT: u16 = 8002;

/// The engine's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Timeout on connecting, on every read and write, and on each of the
    /// protocol's waits.
    pub io_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            io_timeout: Duration::from_secs(30),
        }
    }
}

impl EngineConfig {
    /// The session drivers' timeouts for this configuration.
    pub(crate) fn timeouts(&self) -> LinkTimeouts {
        let t = self.io_timeout.into();
        LinkTimeouts {
            protocol: Timeouts {
                handshake: t,
                idle: t,
                prepare: t,
                commit: t,
            },
            write: self.io_timeout,
        }
    }
}

/// The migration engine (module doc). Share it as both the daemon's
/// `operations` and its `sessions`.
pub struct Engine {
    sim: Arc<SimBackend>,
    journal: Arc<Journal>,
    cfg: EngineConfig,
    next_session: AtomicU64,
    stopping: AtomicBool,
    crashed: Crashed,
    /// Connections of running sessions (shut when the engine crashes).
    links: Mutex<HashMap<u64, TcpStream>>,
    active: AtomicUsize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
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

fn err(kind: ErrorKind, msg: impl Into<String>) -> CommandError {
    CommandError::new(kind, msg)
}

impl Engine {
    /// An engine over `sim` and `journal`; reconciles the journal's open
    /// sessions with the hypervisor first (module doc).
    pub fn new(sim: Arc<SimBackend>, journal: Arc<Journal>, cfg: EngineConfig) -> Engine {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 40);
        let e = Engine {
            sim,
            journal,
            cfg,
            next_session: AtomicU64::new(seed),
            stopping: AtomicBool::new(false),
            crashed: Arc::new(AtomicBool::new(false)),
            links: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
        };
        e.reconcile();
        e
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<SimBackend> {
        &self.sim
    }

    fn session_id(&self) -> u64 {
        // Unique per engine; spread so two daemons rarely pick the same.
        self.next_session
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
    }

    fn register(&self, session: u64, stream: &TcpStream) {
        if let Ok(s) = stream.try_clone() {
            self.links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(session, s);
        }
    }

    fn unregister(&self, session: u64) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // What the dead process had in memory is lost with it.
        for d in self.sim.paused_by_migration() {
            self.sim.clear(d);
        }
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

    /// Applies the journal's open sessions to the hypervisor's guests.
    fn reconcile(&self) {
        let entries = match self.journal.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "journal unreadable; no reconciliation");
                return;
            }
        };
        for e in unresolved(&entries) {
            let guest = self.sim.hypervisor().by_name(&e.domain);
            match (e.role, e.state) {
                (Role::Source, CommitState::Committed) => match guest {
                    Some(g) => {
                        let _ = g.pause();
                        self.sim.mark_in_doubt(g.domid());
                        tracing::warn!(domain = %e.domain, session = %e.session_id,
                            "migration in doubt after a restart: the guest stays paused; \
                             settle it with `relocd resolve {} --resume|--discard`", e.domain);
                    }
                    None => self.close(&e, "in-doubt guest no longer exists"),
                },
                (Role::Source, _) => {
                    if let Some(g) = guest {
                        if g.state() == DomainState::Paused {
                            match g.unpause() {
                                Ok(()) => tracing::info!(domain = %e.domain,
                                    "resumed a guest an unfinished migration had paused"),
                                Err(err) => tracing::error!(domain = %e.domain, error = %err,
                                    "could not resume a guest an unfinished migration had paused"),
                            }
                        }
                    }
                    self.close(&e, "source session without a commit: resumed");
                }
                (Role::Dest, CommitState::Committed) => {
                    if let Some(g) = guest {
                        match g.unpause() {
                            Ok(()) => tracing::info!(domain = %e.domain,
                                "unpaused an incoming guest whose commit was journaled"),
                            Err(err) => tracing::error!(domain = %e.domain, error = %err,
                                "could not unpause an incoming guest whose commit was journaled"),
                        }
                    }
                    self.close(&e, "destination session with a commit: unpaused");
                }
                (Role::Dest, _) => {
                    if let Some(g) = guest {
                        // Only the half-built, never-run copy.
                        if g.state() == DomainState::Paused {
                            let _ = g.destroy();
                            tracing::info!(domain = %e.domain,
                                "destroyed an incoming guest whose migration never committed");
                        }
                    }
                    self.close(&e, "destination session without a commit: destroyed");
                }
            }
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

    fn connect(&self, host: &str, port: u16) -> Result<TcpStream, CommandError> {
        connect(host, port, self.cfg.io_timeout)
    }

    fn migrate_error(&self, domain: &str, to: &str, e: SessionError) -> CommandError {
        migrate_error(domain, to, e)
    }

    fn refuse_in_doubt(&self, domid: crate::sim::Domid, domain: &str) -> Result<(), CommandError> {
        if self.sim.in_doubt().contains(&domid) {
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
}

/// Connects to the relocation server at `host:port` within `io_timeout`,
/// with an error that says what to check.
pub(crate) fn connect(
    host: &str,
    port: u16,
    io_timeout: Duration,
) -> Result<TcpStream, CommandError> {
    let to = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
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

/// The error a failed migration reports to the client.
pub(crate) fn migrate_error(domain: &str, to: &str, e: SessionError) -> CommandError {
    match e {
        SessionError::Refused(r) => err(
            ErrorKind::Refused,
            format!("{to} refused {domain}: {r}; {domain} keeps running here"),
        ),
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
        SessionError::InDoubt(p) => err(
            ErrorKind::Network,
            format!(
                "migration of {domain} to {to} is in doubt ({p}): the commit was sent but \
                 not acknowledged. {domain} stays paused here and `relocd list` shows it \
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
                     host (xend-relocation-hosts-allow) or is not a relocd relocation \
                     server; its log says why. {domain} keeps running here"
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
    if p.phase != session::Phase::Handshake {
        out.projected_downtime_ms = Some(p.projected_downtime.as_secs_f64() * 1000.0);
    }
    out
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
    }
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
    let mut policy = PolicyConfig::default();
    if let Some(ms) = req.downtime_limit_ms {
        policy.downtime_limit = Duration::from_millis(ms).into();
    }
    if let Some(n) = req.max_iters {
        policy.max_rounds = n.max(1);
    }
    policy.abort_if_busy = req.abort_if_busy;
    opts.policy = policy;
    opts.bandwidth_limit = req.bandwidth_bytes_per_s;
    opts.timeouts = cfg.timeouts();
    if req.compress {
        opts.features = Features(opts.features.0 | Features::COMPRESS.0);
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

/// A UUID for a simulated guest (it has none of its own): its name's hash
/// and the session, so both journals name the same thing.
fn sim_uuid(name: &str, session: u64) -> [u8; 16] {
    let h = crate::sim::seed_from_name(name);
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&h.to_be_bytes());
    u[8..].copy_from_slice(&session.to_be_bytes());
    u
}

impl Operations for Engine {
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(err(ErrorKind::ShuttingDown, "the daemon is stopping"));
        }
        let guest = self.sim.find(&req.domain)?;
        let name = guest.name();
        self.refuse_in_doubt(guest.domid(), &name)?;
        let port = req.port.unwrap_or(DEFAULT_PORT);
        let to = target(&req.host, port);
        let _ = progress.report(&Progress::phase(Phase::Connecting));
        let stream = self.connect(&req.host, port)?;
        let _active = Active::new(&self.active);
        let sid = self.session_id();
        self.register(sid, &stream);
        let _ = progress.report(&Progress::phase(Phase::Negotiating));

        let mut opts = source_options(sid, &name, req, &self.cfg);
        opts.uuid = sim_uuid(&name, sid);

        let mut sink = DaemonJournal {
            journal: &self.journal,
            domain: Rc::new(RefCell::new(name.clone())),
            role: Role::Source,
            peer: Some(to.clone()),
            crashed: self.crashed.clone(),
        };
        if let Err(e) = sink.put(sid, CommitState::Prepared) {
            self.unregister(sid);
            return Err(err(ErrorKind::Internal, format!("journal: {e}")));
        }
        let link = GuardedLink {
            stream,
            crashed: self.crashed.clone(),
        };
        let mut src = TrackedSource {
            inner: SimSource::new(guest.clone()),
            backend: self.sim.clone(),
            crashed: self.crashed.clone(),
        };
        let cancel = AtomicBool::new(false);
        let pages_total = guest.nr_pages();
        let stopping = &self.stopping;
        let mut on_progress = |p: session::Progress| {
            if progress.report(&to_progress(&p, pages_total)).is_err()
                || progress.is_cancelled()
                || stopping.load(Ordering::SeqCst)
            {
                cancel.store(true, Ordering::SeqCst);
            }
        };
        tracing::info!(domain = %name, to = %to, live = req.live, session = %journal::session_key(sid), "migration started");
        let r = run_source(
            link,
            &mut src,
            &opts,
            &mut sink,
            &mut on_progress,
            &cancel,
            &Clock::new(),
        );
        self.unregister(sid);
        if self.is_crashed() {
            return Err(err(ErrorKind::Internal, "the daemon died"));
        }
        match r {
            Ok(rep) => {
                self.sim.clear(guest.domid());
                tracing::info!(domain = %name, to = %to, rounds = rep.rounds, downtime_ms = rep.downtime_ms,
                    total_ms = rep.total_ms, "migration done; the guest runs at the destination");
                Ok(summary(&name, &rep))
            }
            Err(SessionError::InDoubt(p)) => {
                self.sim.mark_in_doubt(guest.domid());
                tracing::error!(domain = %name, to = %to, error = %p, "migration in doubt; the guest stays paused");
                Err(self.migrate_error(&name, &to, SessionError::InDoubt(p)))
            }
            Err(e) => {
                // The guest runs here again (the drivers resumed it).
                self.sim.clear(guest.domid());
                let _ = sink.put(sid, CommitState::Resolved);
                tracing::warn!(domain = %name, to = %to, error = %e, "migration failed; the guest runs here");
                Err(self.migrate_error(&name, &to, e))
            }
        }
    }

    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        if req.live {
            return Err(CommandError::not_implemented(
                "save --live with the sim backend (it saves offline; the xen backend saves live)",
            ));
        }
        let guest = self.sim.find(&req.domain)?;
        self.refuse_in_doubt(guest.domid(), &guest.name())?;
        file::save(&self.sim, &guest, req, progress)
    }

    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        file::restore(&self.sim, req, progress)
    }

    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        let guest = self.sim.find(&req.domain)?;
        let name = guest.name();
        if !self.sim.in_doubt().contains(&guest.domid()) {
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
            let r = JournalEntry::now(&e.domain, &e.session_id, e.role, CommitState::Resolved);
            self.journal
                .record(&r)
                .map_err(|e| err(ErrorKind::Internal, format!("journal: {e}")))
        };
        match req.action {
            // The decision is durable before the guest runs again.
            ResolveAction::Resume => {
                for e in &open {
                    record(e)?;
                }
                self.sim.settle(&name, req.action)?;
            }
            ResolveAction::Discard => {
                self.sim.settle(&name, req.action)?;
                for e in &open {
                    record(e)?;
                }
            }
        }
        tracing::info!(domain = %name, action = ?req.action, "in-doubt migration resolved");
        Ok(())
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}
