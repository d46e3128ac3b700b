//! Relocation of 64-bit PV guests on a real Xen: [`migrate_pv`] (the
//! sending host) and [`XenReceiver`] (the receiving host's
//! [`SessionHandler`]), bundled with the Xen backend's other commands as
//! [`XenEngine`].
//!
//! They are the sim engine's ([`crate::engine`]) two halves over Xen, and
//! reuse its pieces rather than copying them: the connection and its error
//! messages, the request's pre-copy policy, the session drivers
//! ([`run_source`], [`run_dest`]) with the libxc image (a PV image: the
//! guest's own records from [`PvSource`]'s `stream_records`), the daemon
//! journal's `prepared` → `committed` → `resolved` records, the
//! destination's options.
//!
//! - Sending: the domain is found by name or id through xenstore, a
//!   [`PvSource`] opened on it, and [`run_source`] moves it. On success
//!   the drivers have destroyed it here (after the commit); on a failure
//!   before the commit they resumed it (a cancelled suspend) and turned
//!   log-dirty off. In doubt (the commit was sent, never acknowledged), it
//!   stays suspended here; the error says so.
//! - Receiving: the admission refuses what is not PV, and otherwise asks a
//!   [`PvSinkMaker`] for the empty, paused domain (`PvSink::create`); the
//!   session journals it `prepared` before any of its image is read, and
//!   the drivers unpause it after the journaled commit or destroy it.
//!
//! Not here yet: the start-up reconciliation of the journal's open
//! sessions (the sim engine's `Engine::new` does it for its guests), and
//! `resolve` of an in-doubt Xen guest.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use relocd_core::guest::{GuestType, PageType, Pfn, SinkGuest};
use relocd_core::protocol::{AdmissionRequest, RefuseReason};
use relocd_hypercall::{DomId, Hypervisor, XenOps};

use super::backend::{domain_name, XenBackend};
use super::ops::XenOperations;
use super::probe::resolve_domain;
use super::pv_source::PvSource;
use super::xenstore::{Transport, Xenstore};
use crate::daemon::backend::{Operations, ProgressSink};
use crate::daemon::control::{
    CommandError, DomainInfo, ErrorKind, MigrateRequest, Phase, Progress, ResolveRequest,
    RestoreRequest, SaveRequest, TransferSummary,
};
use crate::daemon::journal::{CommitState, JournalEntry, Role};
use crate::daemon::listener::{Session, SessionHandler};
use crate::daemon::Journal;
use crate::engine::guard::{Crashed, GuardedLink};
use crate::engine::{
    connect, dest_options, journal::session_key, journal_put, migrate_error, source_options,
    summary, target, to_progress, Active, DaemonJournal, EngineConfig, DEFAULT_PORT,
};
use crate::session::{self, run_dest, run_source, Clock, SessionError};

/// What the relocation engine on Xen shares between its sessions: the
/// daemon's journal, the settings, session ids, the stop flag, the
/// domains being moved.
pub struct MigrateEnv {
    journal: Arc<Journal>,
    cfg: EngineConfig,
    next_session: AtomicU64,
    stopping: AtomicBool,
    /// Never set: the Xen engine has no crash test hook, but the guards it
    /// shares with the sim engine take one.
    crashed: Crashed,
    active: AtomicUsize,
    busy: Mutex<HashSet<DomId>>,
}

impl MigrateEnv {
    /// Shared state over the daemon's `journal`.
    pub fn new(journal: Arc<Journal>, cfg: EngineConfig) -> MigrateEnv {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 40);
        MigrateEnv {
            journal,
            cfg,
            next_session: AtomicU64::new(seed),
            stopping: AtomicBool::new(false),
            crashed: Arc::new(AtomicBool::new(false)),
            active: AtomicUsize::new(0),
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// Applies the journal's open sessions to Xen's domains, once, at
    /// start-up (a daemon killed mid-session leaves them):
    ///
    /// | role, last state | the domain of that name |
    /// | --- | --- |
    /// | source, not committed | resumed if suspended (a cancelled suspend), log-dirty off |
    /// | source, committed | left suspended: in doubt, said in the log |
    /// | destination, committed | unpaused |
    /// | destination, not committed | destroyed when still paused (the never-run copy) |
    ///
    /// Each settled session gets a `resolved` record.
    pub fn reconcile<H: Hypervisor + Send + Sync>(&self, backend: &XenBackend<H>) {
        let entries = match self.journal.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "journal unreadable; no reconciliation");
                return;
            }
        };
        let xen = backend.hypervisor();
        for e in crate::daemon::journal::unresolved(&entries) {
            let found = backend.store().ok().and_then(|mut xs| {
                resolve_domain(xen, Some(&mut xs), &e.domain)
                    .ok()
                    .map(|d| (d, xs))
            });
            let why = match (e.role, e.state, found) {
                (Role::Source, CommitState::Committed, _) => {
                    tracing::warn!(domain = %e.domain, session = %e.session_id,
                        "migration in doubt after a restart: the guest stays suspended here;                          if the destination runs it, destroy it here (xl destroy), otherwise                          restore the destination's copy or resume it with xl");
                    continue;
                }
                (Role::Source, _, Some((domid, mut xs))) => {
                    let _ = xen.logdirty_disable(domid);
                    match xen.domain_info(domid) {
                        Ok(i) if i.shutdown() && i.shutdown_reason() == Some(super::pv_source::SHUTDOWN_SUSPEND) => {
                            match super::pv_source::resume_suspended(xen, &mut xs, domid) {
                                Ok(()) => "source session without a commit: the suspended guest resumed",
                                Err(err) => {
                                    tracing::error!(domain = %e.domain, "resuming: {err}");
                                    "source session without a commit: resuming the guest FAILED"
                                }
                            }
                        }
                        _ => "source session without a commit: the guest runs",
                    }
                }
                (Role::Source, _, None) => "source session without a commit: the guest is gone",
                (Role::Dest, CommitState::Committed, Some((domid, _))) => match xen.unpause(domid) {
                    Ok(()) => "destination session with a commit: unpaused",
                    Err(err) => {
                        tracing::error!(domain = %e.domain, "unpausing: {err}");
                        "destination session with a commit: unpausing FAILED"
                    }
                },
                (Role::Dest, _, Some((domid, mut xs))) => match xen.domain_info(domid) {
                    Ok(i) if i.paused() && !i.shutdown() => {
                        let vm = xs.read_string(&format!("/local/domain/{domid}/vm")).ok();
                        let _ = xen.destroy(domid);
                        super::backend::forget_domain(&mut xs, domid, vm);
                        let _ = xs.release(domid);
                        "destination session without a commit: the half-built domain destroyed"
                    }
                    _ => "destination session without a commit: a running domain of that name is left alone",
                },
                (Role::Dest, _, None) => "destination session: no domain of that name",
            };
            let mut r = JournalEntry::now(&e.domain, &e.session_id, e.role, CommitState::Resolved);
            r.peer.clone_from(&e.peer);
            match self.journal.record(&r) {
                Ok(()) => {
                    tracing::info!(domain = %e.domain, session = %e.session_id, "journal: {why}")
                }
                Err(err) => tracing::error!(error = %err, session = %e.session_id, "journal"),
            }
        }
    }

    fn session_id(&self) -> u64 {
        self.next_session
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
    }

    /// Refuses new sessions from now on; running ones go on.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Sessions running now, both directions.
    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn claim(&self, domid: DomId, name: &str) -> Result<Claim<'_>, CommandError> {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(domid) {
            return Err(CommandError::new(
                ErrorKind::Exists,
                format!("{name} is being migrated already"),
            ));
        }
        Ok(Claim { env: self, domid })
    }
}

/// Releases a domain's busy mark.
struct Claim<'a> {
    env: &'a MigrateEnv,
    domid: DomId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.env
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.domid);
    }
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> CommandError {
    CommandError::new(kind, msg)
}

/// The frontend devices a guest has in xenstore (`/local/domain/N/device`):
/// `kind id` for each, the suspend event channel (not a device) left out.
pub fn guest_devices<T: Transport>(xs: &mut Xenstore<T>, domid: DomId) -> Vec<String> {
    let base = format!("/local/domain/{domid}/device");
    let mut out = Vec::new();
    for kind in xs.directory(&base).unwrap_or_default() {
        if kind == "suspend" {
            continue;
        }
        for id in xs.directory(&format!("{base}/{kind}")).unwrap_or_default() {
            out.push(format!("{kind} {id}"));
        }
    }
    out
}

/// `relocd migrate [--live] DOMAIN HOST[:PORT]` of a 64-bit PV guest (module
/// doc). Blocks until the session is over; `progress` gets the client's
/// progress lines, and its cancel stops the migration before its point of
/// no return.
pub fn migrate_pv<H: Hypervisor + Send + Sync>(
    backend: &XenBackend<H>,
    env: &MigrateEnv,
    req: &MigrateRequest,
    progress: &mut dyn ProgressSink,
) -> Result<TransferSummary, CommandError> {
    if env.stopping.load(Ordering::SeqCst) {
        return Err(err(ErrorKind::ShuttingDown, "the daemon is stopping"));
    }
    let xen = backend.hypervisor();
    let store_err =
        |e: super::xenstore::XenstoreError| err(ErrorKind::Internal, format!("xenstore: {e}"));
    let mut xs = backend.store().map_err(store_err)?;
    let domid = resolve_domain(xen, Some(&mut xs), &req.domain)
        .map_err(|e| err(ErrorKind::NotFound, e.to_string()))?;
    if domid == 0 {
        return Err(err(ErrorKind::Refused, "domain 0 cannot be migrated"));
    }
    let name = domain_name(&mut xs, domid).unwrap_or_else(|_| domid.to_string());
    let _claim = env.claim(domid, &name)?;
    let info = xen
        .domain_info(domid)
        .map_err(|e| err(ErrorKind::NotFound, e.to_string()))?;
    if info.hvm() {
        return Err(err(
            ErrorKind::Refused,
            format!("{name} is an HVM guest; relocd migrates PV guests"),
        ));
    }
    let devices = guest_devices(&mut xs, domid);
    if !devices.is_empty() {
        return Err(err(
            ErrorKind::Refused,
            format!(
                "{name} has devices ({}): relocd does not recreate device backends on the \
                 destination yet, so the guest would lose them; detach them first, or move it \
                 with xl (relocd save works: xl restore recreates them)",
                devices.join(", ")
            ),
        ));
    }
    let mut src = PvSource::open(xen, xs, domid)
        .map_err(|e| err(ErrorKind::Refused, format!("{name}: {e}")))?;
    let port = req.port.unwrap_or(DEFAULT_PORT);
    let to = target(&req.host, port);
    let _ = progress.report(&Progress::phase(Phase::Connecting));
    let stream = connect(&req.host, port, env.cfg.io_timeout)?;
    let _active = Active::new(&env.active);
    let sid = env.session_id();
    let _ = progress.report(&Progress::phase(Phase::Negotiating));

    let mut opts = source_options(sid, &name, req, &env.cfg);
    opts.uuid = info.handle;
    let mut journal = DaemonJournal {
        journal: &env.journal,
        domain: Rc::new(RefCell::new(name.clone())),
        role: Role::Source,
        peer: Some(to.clone()),
        crashed: env.crashed.clone(),
    };
    journal
        .put(sid, CommitState::Prepared)
        .map_err(|e| err(ErrorKind::Internal, format!("journal: {e}")))?;
    let link = GuardedLink {
        stream,
        crashed: env.crashed.clone(),
    };
    let cancel = AtomicBool::new(false);
    let pages_total = info.tot_pages;
    let stopping = &env.stopping;
    let mut on_progress = |p: session::Progress| {
        if progress.report(&to_progress(&p, pages_total)).is_err()
            || progress.is_cancelled()
            || stopping.load(Ordering::SeqCst)
        {
            cancel.store(true, Ordering::SeqCst);
        }
    };
    tracing::info!(domain = %name, domid, to = %to, live = req.live,
        session = %session_key(sid), "migration started");
    let r = run_source(
        link,
        &mut src,
        &opts,
        &mut journal,
        &mut on_progress,
        &cancel,
        &Clock::new(),
    );
    match r {
        Ok(rep) => {
            tracing::info!(domain = %name, to = %to, rounds = rep.rounds,
                downtime_ms = rep.downtime_ms, total_ms = rep.total_ms,
                image_bytes = rep.image_bytes_unpacked, sent_bytes = rep.image_bytes,
                "migration done; the guest runs at the destination");
            Ok(summary(&name, &rep))
        }
        Err(SessionError::InDoubt(p)) => {
            tracing::error!(domain = %name, to = %to, error = %p,
                "migration in doubt; the guest stays suspended here");
            Err(migrate_error(&name, &to, SessionError::InDoubt(p)))
        }
        Err(e) => {
            let _ = journal.put(sid, CommitState::Resolved);
            tracing::warn!(domain = %name, to = %to, error = %e,
                "migration failed; the guest runs here");
            Err(migrate_error(&name, &to, e))
        }
    }
}

/// What the receiver asks of the restore side: the empty, paused PV
/// domain an admitted guest is built into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvAdmission {
    /// The guest's name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Its memory, KiB.
    pub max_memkb: u64,
    /// Its vCPUs.
    pub vcpus: u32,
    /// One more than its highest pfn.
    pub p2m_size: u64,
}

/// Creates the sink an incoming PV guest is restored into (the restore
/// side's `PvSink::create`). A trait so the receiver does not depend on
/// how the domain is built, and tests can plug in their own.
pub trait PvSinkMaker<H: Hypervisor>: Send + Sync {
    /// The guest being built, borrowing the hypervisor.
    type Sink<'x>: SinkGuest
    where
        H: 'x;

    /// Creates the empty, paused domain; `Err` refuses the admission.
    fn create<'x>(
        &self,
        xen: &'x H,
        xs: Xenstore<Box<dyn Transport>>,
        req: &PvAdmission,
    ) -> Result<Self::Sink<'x>, RefuseReason>;
}

/// A [`PvSinkMaker`] that refuses every guest ("not supported"): what the
/// receiver uses until PV restore is plugged in.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPvRestore;

/// The sink [`NoPvRestore`] never makes.
#[derive(Debug)]
pub enum NoSink {}

impl SinkGuest for NoSink {
    type Error = ();
    fn populate(&mut self, _: &[Pfn], _: &[PageType]) -> Result<(), ()> {
        match *self {}
    }
    fn write_pages(&mut self, _: &[Pfn], _: &[PageType], _: &[u8]) -> Result<(), ()> {
        match *self {}
    }
    fn set_vcpu_context(&mut self, _: u32, _: &[u8]) -> Result<(), ()> {
        match *self {}
    }
    fn unpause(&mut self) -> Result<(), ()> {
        match *self {}
    }
    fn destroy(&mut self) -> Result<(), ()> {
        match *self {}
    }
}

impl<H: Hypervisor> PvSinkMaker<H> for NoPvRestore {
    type Sink<'x>
        = NoSink
    where
        H: 'x;
    fn create(
        &self,
        _: &H,
        _: Xenstore<Box<dyn Transport>>,
        _: &PvAdmission,
    ) -> Result<NoSink, RefuseReason> {
        Err(RefuseReason::Unsupported)
    }
}

/// The [`PvSinkMaker`] of a Xen host: a new paused domain built by
/// [`PvSink`](super::pv_sink::PvSink).
#[derive(Clone, Copy, Debug, Default)]
pub struct PvRestore;

impl<H: Hypervisor> PvSinkMaker<H> for PvRestore {
    type Sink<'x>
        = super::pv_sink::PvSink<'x, H>
    where
        H: 'x;
    fn create<'x>(
        &self,
        xen: &'x H,
        xs: Xenstore<Box<dyn Transport>>,
        req: &PvAdmission,
    ) -> Result<Self::Sink<'x>, RefuseReason> {
        let create = super::pv_sink::PvCreate {
            name: req.name.clone(),
            uuid: req.uuid,
            max_memkb: req.max_memkb,
            vcpus: req.vcpus,
        };
        super::pv_sink::PvSink::create(xen, xs, &create).map_err(|e| {
            tracing::error!(domain = %req.name, "creating the incoming PV domain: {e}");
            match e {
                super::pv_sink::PvRestoreError::Unsupported(_) => RefuseReason::Unsupported,
                _ => RefuseReason::NoCapacity,
            }
        })
    }
}

/// Incoming relocations on Xen: the daemon's [`SessionHandler`] (module
/// doc).
pub struct XenReceiver<H, M> {
    backend: Arc<XenBackend<H>>,
    env: Arc<MigrateEnv>,
    maker: M,
}

impl<H: Hypervisor + Send + Sync, M: PvSinkMaker<H>> XenReceiver<H, M> {
    /// A receiver building guests with `maker`.
    pub fn new(backend: Arc<XenBackend<H>>, env: Arc<MigrateEnv>, maker: M) -> Self {
        XenReceiver {
            backend,
            env,
            maker,
        }
    }

    fn admit<'x>(
        &'x self,
        req: &AdmissionRequest,
        session: &Session,
    ) -> Result<M::Sink<'x>, RefuseReason> {
        if self.env.stopping.load(Ordering::SeqCst) || session.shutdown.is_triggered() {
            return Err(RefuseReason::ShuttingDown);
        }
        if req.guest_type != GuestType::Pv {
            return Err(RefuseReason::Unsupported);
        }
        let xen = self.backend.hypervisor();
        let mut xs = self.backend.store().map_err(|e| {
            tracing::error!("xenstore: {e}; refusing the migration");
            RefuseReason::NotAllowed
        })?;
        let name = req.name.as_str();
        if resolve_domain(xen, Some(&mut xs), name).is_ok() {
            return Err(RefuseReason::NameTaken);
        }
        let ask = PvAdmission {
            name: name.to_owned(),
            uuid: req.uuid,
            max_memkb: req.memory_bytes.div_ceil(1024),
            vcpus: req.vcpus,
            p2m_size: req.p2m_size,
        };
        self.maker.create(xen, xs, &ask)
    }

    /// Runs one destination session; `refuse` answers every admission with
    /// that reason (the concurrency limit).
    fn receive(&self, session: Session, refuse: Option<RefuseReason>) {
        let env = &*self.env;
        let _active = Active::new(&env.active);
        let (id, peer) = (session.id, session.peer);
        let domain = Rc::new(RefCell::new(String::new()));
        let created: Cell<Option<u64>> = Cell::new(None);
        let mut journal = DaemonJournal {
            journal: &env.journal,
            domain: domain.clone(),
            role: Role::Dest,
            peer: Some(peer.to_string()),
            crashed: env.crashed.clone(),
        };
        let stream = match session.stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(session = id, %peer, "relocation: {e}");
                return;
            }
        };
        let admit = |req: &AdmissionRequest| -> Result<M::Sink<'_>, RefuseReason> {
            if let Some(r) = refuse {
                return Err(r);
            }
            let mut sink = self.admit(req, &session)?;
            let name = req.name.as_str();
            *domain.borrow_mut() = name.to_owned();
            // Journaled before any byte of the image.
            if let Err(e) = journal_put(
                &env.journal,
                name,
                req.session,
                &peer.to_string(),
                &env.crashed,
            ) {
                tracing::error!(error = %e, "journal; refusing the migration");
                let _ = sink.destroy();
                return Err(RefuseReason::NotAllowed);
            }
            created.set(Some(req.session));
            tracing::info!(session = id, %peer, domain = name, memory = req.memory_bytes,
                live = req.live, "relocation admitted; receiving into a paused PV domain");
            Ok(sink)
        };
        let link = GuardedLink {
            stream,
            crashed: env.crashed.clone(),
        };
        let r = run_dest(
            link,
            admit,
            &dest_options(&env.cfg),
            &mut journal,
            &Clock::new(),
        );
        let name = domain.borrow().clone();
        match r {
            Ok(rep) => tracing::info!(session = id, %peer, domain = %rep.name,
                rounds = rep.rounds, pages = rep.pages_applied, total_ms = rep.total_ms,
                "relocation received; the guest runs here"),
            Err(e) => {
                if let Some(s) = created.get() {
                    let _ = journal.put(s, CommitState::Resolved);
                }
                tracing::warn!(session = id, %peer, domain = %name, error = %e,
                    "relocation failed or refused; no copy is left here");
            }
        }
    }
}

impl<H: Hypervisor + Send + Sync, M: PvSinkMaker<H>> SessionHandler for XenReceiver<H, M> {
    fn handle(&self, session: Session) {
        self.receive(session, None);
    }

    fn busy(&self, session: Session, limit: usize) {
        tracing::warn!(session = session.id, peer = %session.peer, limit,
            "refusing a relocation: too many migrations in progress");
        self.receive(session, Some(RefuseReason::TooManyMigrations));
    }
}

/// The Xen backend's long commands with migration: `migrate` is
/// [`migrate_pv`], the others are [`XenOperations`]'.
pub struct XenEngine<H> {
    backend: Arc<XenBackend<H>>,
    env: Arc<MigrateEnv>,
    ops: XenOperations<H>,
}

impl<H: Hypervisor + Send + Sync> XenEngine<H> {
    /// The engine over `backend`, `env` shared with its [`XenReceiver`].
    pub fn new(backend: Arc<XenBackend<H>>, env: Arc<MigrateEnv>, ops: XenOperations<H>) -> Self {
        XenEngine { backend, env, ops }
    }
}

impl<H: Hypervisor + Send + Sync> Operations for XenEngine<H> {
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        migrate_pv(&self.backend, &self.env, req, progress)
    }

    /// A save is journaled as a source session (prepared before the guest
    /// is touched, resolved after), so a daemon killed while the guest is
    /// suspended for it leaves the next one a record to resume it by
    /// ([`MigrateEnv::reconcile`]).
    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let name = self
            .backend
            .store()
            .ok()
            .and_then(|mut xs| {
                let d =
                    resolve_domain(self.backend.hypervisor(), Some(&mut xs), &req.domain).ok()?;
                domain_name(&mut xs, d).ok()
            })
            .unwrap_or_else(|| req.domain.clone());
        let key = format!("save-{:016x}", self.env.session_id());
        let entry = |state| JournalEntry::now(&name, &key, Role::Source, state);
        self.env
            .journal
            .record(&entry(CommitState::Prepared))
            .map_err(|e| CommandError::new(ErrorKind::Internal, format!("journal: {e}")))?;
        let r = self.ops.save(req, progress);
        if let Err(e) = self.env.journal.record(&entry(CommitState::Resolved)) {
            tracing::error!(domain = %name, "journal: {e}");
        }
        r
    }

    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        self.ops.restore(req, progress)
    }

    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        self.ops.resolve(req)
    }

    fn shutdown(&self) {
        self.env.shutdown();
        self.ops.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::backend::NoProgress;
    use crate::daemon::ShutdownToken;
    use crate::session::{run_source, SourceOptions};
    use crate::sim::{Drive, GuestSpec, SimHypervisor, SimSource};
    use crate::xen::xenstore::fake::FakeXenstored;
    use relocd_hypercall::fake::{FakeDomain, FakeXen};
    use std::net::{TcpListener, TcpStream};

    fn backend() -> Arc<XenBackend<FakeXen>> {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 1));
        x.add_domain(FakeDomain::pv(5, 256, 1));
        Arc::new(XenBackend::with_store(
            x,
            Box::new(|| {
                Ok(Xenstore::new(
                    Box::new(FakeXenstored::new(&[("/local/domain/5/name", "web1")]))
                        as Box<dyn Transport>,
                ))
            }),
        ))
    }

    fn env(tag: &str) -> (Arc<MigrateEnv>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("relocd-xmig-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let j = Arc::new(Journal::open(&dir).unwrap());
        (Arc::new(MigrateEnv::new(j, EngineConfig::default())), dir)
    }

    fn req(domain: &str, port: u16) -> MigrateRequest {
        MigrateRequest {
            domain: domain.into(),
            host: "127.0.0.1".into(),
            port: Some(port),
            live: false,
            downtime_limit_ms: None,
            bandwidth_bytes_per_s: None,
            max_iters: None,
            abort_if_busy: false,
            compress: false,
        }
    }

    #[test]
    fn migrate_refuses_what_it_cannot_move_before_touching_the_guest() {
        let b = backend();
        let (env, dir) = env("refuse");
        let e = migrate_pv(&b, &env, &req("nosuch", 1), &mut NoProgress).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
        let e = migrate_pv(&b, &env, &req("0", 1), &mut NoProgress).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
        // web1 has no p2m tree the PV source can read: refused, unpaused,
        // nothing journaled, no connection tried.
        let e = migrate_pv(&b, &env, &req("web1", 1), &mut NoProgress).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
        let info = b.hypervisor().domain_info(5).unwrap();
        assert!(!info.paused() && !info.shutdown());
        assert!(env.journal.entries().unwrap().is_empty());
        env.shutdown();
        let e = migrate_pv(&b, &env, &req("web1", 1), &mut NoProgress).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShuttingDown);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The receiver refuses a guest that is not PV, and with
    /// [`NoPvRestore`] every guest, without journaling or creating anything.
    #[test]
    fn receiver_refuses_without_a_trace() {
        let b = backend();
        let (env, dir) = env("recv");
        let rx = XenReceiver::new(b.clone(), env.clone(), NoPvRestore);
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let spec = GuestSpec::new("hvm1", 4 << 20).unwrap();
        let g = hv.create(&spec, false).unwrap();
        {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let h = std::thread::spawn(move || {
                let (s, peer) = l.accept().unwrap();
                (s, peer)
            });
            let link = TcpStream::connect(addr).unwrap();
            let (stream, peer) = h.join().unwrap();
            let session = Session {
                id: 1,
                stream,
                peer,
                peer_name: crate::peer::PeerName::None {
                    reason: "test".into(),
                },
                io_timeout: None,
                shutdown: ShutdownToken::new(),
            };
            let t = std::thread::spawn(move || rx.handle(session));
            let mut src = SimSource::new(g.clone());
            let mut j = crate::session::FileJournal::open(&dir.join("src.journal")).unwrap();
            let r = run_source(
                link,
                &mut src,
                &SourceOptions::new(3, "hvm1", false),
                &mut j,
                &mut |_| {},
                &AtomicBool::new(false),
                &Clock::new(),
            );
            t.join().unwrap();
            assert!(
                matches!(&r, Err(SessionError::Refused(f)) if f.reason == RefuseReason::Unsupported),
                "{r:?}"
            );
        }
        assert!(env.journal.entries().unwrap().is_empty());
        assert_eq!(env.active_sessions(), 0);
        assert!(g.state() != crate::sim::DomainState::Destroyed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn start_up_settles_what_a_killed_daemon_left() {
        use crate::daemon::journal::JournalEntry;
        use relocd_hypercall::abi::xen::vgcf;
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 1));
        // 5: a source suspended for a migration that never committed
        let mut web = FakeDomain::pv(5, 16, 1);
        web.vcpus[0].flags = vgcf::ONLINE;
        x.add_domain(web);
        x.guest_shutdown(5, 2);
        x.logdirty_enable(5).unwrap();
        // 6: a half-built incoming copy; 7: an incoming copy whose commit
        // was journaled; 8: a running domain under a name an unfinished
        // incoming session used
        for d in [6, 7, 8] {
            x.add_domain(FakeDomain::pv(d, 16, 1));
        }
        x.pause(6).unwrap();
        x.pause(7).unwrap();
        let store = FakeXenstored::new(&[
            ("/local/domain/5/name", "web1"),
            ("/local/domain/6/name", "half"),
            ("/local/domain/7/name", "done"),
            ("/local/domain/8/name", "busy"),
        ])
        .store
        .clone();
        let b = XenBackend::with_store(
            x.clone(),
            Box::new(move || {
                let mut f = FakeXenstored::new(&[]);
                f.store = store.clone();
                Ok(Xenstore::new(Box::new(f) as Box<dyn Transport>))
            }),
        );
        let (env, dir) = env("reconcile");
        for (dom, role, state) in [
            ("web1", Role::Source, CommitState::Prepared),
            ("half", Role::Dest, CommitState::Prepared),
            ("done", Role::Dest, CommitState::Committed),
            ("busy", Role::Dest, CommitState::Prepared),
        ] {
            env.journal
                .record(&JournalEntry::now(dom, &format!("s-{dom}"), role, state))
                .unwrap();
        }
        env.reconcile(&b);
        let i = x.domain_info(5).unwrap();
        assert!(!i.shutdown() && !i.paused(), "the source runs again: {i:?}");
        assert_eq!(x.domain(5).unwrap().vcpus[0].user_regs.rax, 1);
        assert!(!x.domain(5).unwrap().logdirty);
        assert!(x.domain(6).is_none(), "the half-built copy is gone");
        assert!(
            !x.domain_info(7).unwrap().paused(),
            "the committed copy runs"
        );
        assert!(x.domain(8).is_some(), "a running domain is left alone");
        let open = crate::daemon::journal::unresolved(&env.journal.entries().unwrap());
        assert!(open.is_empty(), "{open:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn store_of(store: crate::xen::xenstore::fake::Store) -> crate::xen::backend::StoreConnector {
        Box::new(move || {
            let mut f = FakeXenstored::new(&[]);
            f.store = store.clone();
            Ok(Xenstore::new(Box::new(f) as Box<dyn Transport>))
        })
    }

    /// A PV guest moves between two fake Xen hosts through the whole
    /// protocol: offline and live, the copy on B runs with the guest's
    /// pages, its page tables and vCPU on B's frames, its xenstore tree;
    /// A has it no more; both journals are settled.
    #[test]
    fn a_pv_guest_moves_between_two_fake_xen_hosts() {
        use crate::xen::test_guest::{self, MFN0};
        use relocd_hypercall::fake::FAKE_MFN_OFFSET;
        for live in [false, true] {
            let g = test_guest::guest();
            let a = Arc::new(XenBackend::with_store(
                g.xen.clone(),
                store_of(g.store.clone()),
            ));
            let xb = FakeXen::new();
            xb.add_domain(FakeDomain::pv(0, 16, 1));
            let bstore = FakeXenstored::new(&[("/local/domain/0/name", "Domain-0")])
                .store
                .clone();
            let b = Arc::new(XenBackend::with_store(xb.clone(), store_of(bstore.clone())));
            let (env_a, dir_a) = env(&format!("pv-a-{live}"));
            let (env_b, dir_b) = env(&format!("pv-b-{live}"));
            let rx = XenReceiver::new(b.clone(), env_b.clone(), PvRestore);
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let t = std::thread::spawn(move || {
                let (stream, peer) = l.accept().unwrap();
                rx.handle(Session {
                    id: 1,
                    stream,
                    peer,
                    peer_name: crate::peer::PeerName::None {
                        reason: "test".into(),
                    },
                    io_timeout: None,
                    shutdown: ShutdownToken::new(),
                });
            });
            let mut r = req("web1", port);
            r.live = live;
            let s = migrate_pv(&a, &env_a, &r, &mut NoProgress).unwrap();
            t.join().unwrap();
            assert!(s.pages_sent >= test_guest::PAGES, "{s:?}");
            assert!(
                g.xen.domain(test_guest::DOMID).is_none(),
                "A has it no more"
            );
            let mut xs = b.store().unwrap();
            let d = resolve_domain(&xb, Some(&mut xs), "web1").expect("B runs web1");
            let info = xb.domain_info(d).unwrap();
            assert!(!info.paused() && !info.shutdown(), "{info:?}");
            let nd = xb.domain(d).unwrap();
            let mfn = |pfn: u64| pfn + FAKE_MFN_OFFSET;
            assert!(nd.memory[&mfn(10)].starts_with(b"hello from pfn 10"));
            assert_eq!(nd.vcpus[0].ctrlreg[3], mfn(1) << 12);
            let l4 = &nd.memory[&mfn(1)];
            assert_eq!(
                u64::from_le_bytes(l4[0..8].try_into().unwrap()),
                (mfn(2) << 12) | 0x67,
                "the L4 names B's frames (A's were {:#x})",
                MFN0 + 2
            );
            assert!(xb.pinned_tables(d).contains(&(mfn(1), 4)));
            assert_eq!(
                xs.read_string(&format!("/local/domain/{d}/name")).unwrap(),
                "web1"
            );
            for env in [&env_a, &env_b] {
                let open = crate::daemon::journal::unresolved(&env.journal.entries().unwrap());
                assert!(open.is_empty(), "{open:?}");
            }
            drop(g);
            std::fs::remove_dir_all(&dir_a).unwrap();
            std::fs::remove_dir_all(&dir_b).unwrap();
        }
    }

    /// A save through the engine leaves a prepared and a resolved record.
    #[test]
    fn a_save_is_journaled_as_a_source_session() {
        use crate::xen::test_guest;
        let g = test_guest::guest();
        let b = Arc::new(XenBackend::with_store(
            g.xen.clone(),
            store_of(g.store.clone()),
        ));
        let (env, dir) = env("save-journal");
        let engine = XenEngine::new(b.clone(), env.clone(), XenOperations::new(b.clone()));
        let file = dir.join("web1.save");
        let req = SaveRequest {
            domain: test_guest::DOMID.to_string(),
            file: file.clone(),
            keep_running: true,
            live: false,
            bandwidth_bytes_per_s: None,
        };
        engine.save(&req, &mut NoProgress).unwrap();
        let all = env.journal.entries().unwrap();
        let states: Vec<_> = all
            .iter()
            .map(|e| (e.domain.as_str(), e.role, e.state))
            .collect();
        assert_eq!(
            states,
            [
                ("web1", Role::Source, CommitState::Prepared),
                ("web1", Role::Source, CommitState::Resolved)
            ]
        );
        assert!(file.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_guest_with_devices_is_refused_untouched() {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 1));
        x.add_domain(FakeDomain::pv(5, 256, 1));
        let store = FakeXenstored::new(&[
            ("/local/domain/5/name", "web1"),
            ("/local/domain/5/device/vif/0/state", "4"),
            ("/local/domain/5/device/vbd/51712/state", "4"),
            ("/local/domain/5/device/suspend/event-channel", "7"),
        ])
        .store
        .clone();
        let b = XenBackend::with_store(x.clone(), store_of(store.clone()));
        let mut xs = b.store().unwrap();
        let mut found = guest_devices(&mut xs, 5);
        found.sort();
        assert_eq!(found, ["vbd 51712", "vif 0"]);
        let (env, dir) = env("devices");
        let e = migrate_pv(&b, &env, &req("web1", 1), &mut NoProgress).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.message.contains("vif 0"), "{e:?}");
        let i = x.domain_info(5).unwrap();
        assert!(!i.paused() && !i.shutdown());
        assert!(env.journal.entries().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
