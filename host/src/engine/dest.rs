//! Incoming relocations: the engine as the daemon's [`SessionHandler`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use relocd_core::protocol::{AdmissionRequest, DestConfig, RefuseReason};

use super::guard::{GuardedLink, TrackedSink};
use super::journal::{session_key, DaemonJournal};
use super::{Active, Engine};
use crate::backend::sim::{SimError, SimSink};
use crate::daemon::listener::{Session, SessionHandler};
use crate::journal::{CommitState, Role};
use crate::session::{run_dest, Clock, DestOptions, SessionError};

/// The destination's options for the engine's settings.
pub(crate) fn dest_options(cfg: &super::EngineConfig) -> DestOptions {
    let t = cfg.timeouts();
    DestOptions {
        config: DestConfig {
            timeouts: t.protocol,
            ..DestConfig::default()
        },
        write_timeout: t.write,
    }
}

impl Engine {
    /// Runs one destination session; `refuse` answers every admission with
    /// that reason (the concurrency limit).
    fn receive(&self, session: Session, refuse: Option<RefuseReason>) {
        let _active = Active::new(&self.active);
        let id = session.id;
        let peer = session.peer;
        let key = u64::MAX - id;
        self.register(key, &session.stream);
        let domain = Rc::new(RefCell::new(String::new()));
        let created: Cell<Option<u64>> = Cell::new(None);
        let mut journal = DaemonJournal {
            journal: &self.journal,
            domain: domain.clone(),
            role: Role::Dest,
            peer: Some(peer.to_string()),
            crashed: self.crashed.clone(),
        };
        let admit = |req: &AdmissionRequest| -> Result<TrackedSink, RefuseReason> {
            let name = req.name.as_str();
            if let Some(r) = refuse {
                return Err(r);
            }
            if self.stopping.load(Ordering::SeqCst) || session.shutdown.is_triggered() {
                return Err(RefuseReason::ShuttingDown);
            }
            let hv = self.sim.hypervisor();
            let refusal = |e: SimError| match e {
                SimError::NameTaken(_) => RefuseReason::NameTaken,
                SimError::NoCapacity { .. } => RefuseReason::NoCapacity,
                _ => RefuseReason::Invalid,
            };
            hv.check_admission(name, req.memory_bytes)
                .map_err(refusal)?;
            let guest = hv.create_empty(name, req.memory_bytes).map_err(refusal)?;
            *domain.borrow_mut() = name.to_owned();
            // Journaled before any byte of the image: a restart destroys it.
            if let Err(e) = journal_put(
                &self.journal,
                name,
                req.session,
                &peer.to_string(),
                &self.crashed,
            ) {
                tracing::error!(error = %e, "journal; refusing the migration");
                let _ = guest.destroy();
                return Err(RefuseReason::NotAllowed);
            }
            created.set(Some(req.session));
            tracing::info!(session = id, %peer, domain = name, memory = req.memory_bytes,
                live = req.live, "relocation admitted; receiving into a paused domain");
            Ok(TrackedSink {
                inner: SimSink::new(guest),
                crashed: self.crashed.clone(),
            })
        };
        let link = GuardedLink {
            stream: session.stream,
            crashed: self.crashed.clone(),
        };
        let r = run_dest(
            link,
            admit,
            &dest_options(&self.cfg),
            &mut journal,
            &Clock::new(),
        );
        self.unregister(key);
        if self.is_crashed() {
            return;
        }
        let name = domain.borrow().clone();
        match r {
            Ok(rep) => tracing::info!(session = id, %peer, domain = %rep.name, rounds = rep.rounds,
                pages = rep.pages_applied, total_ms = rep.total_ms, "relocation received; the guest runs here"),
            Err(e) => {
                if let Some(s) = created.get() {
                    let _ = journal.put(s, CommitState::Resolved);
                }
                match &e {
                    SessionError::Refused(r) => tracing::warn!(session = id, %peer, domain = %name,
                        reason = %r, "relocation refused"),
                    SessionError::Incompatible { ours, theirs } => {
                        tracing::warn!(session = id, %peer,
                        ours, theirs, "relocation refused: incompatible protocol version")
                    }
                    _ => tracing::warn!(session = id, %peer, domain = %name, error = %e,
                        "relocation failed; no copy is left here"),
                }
            }
        }
    }
}

/// Journals an admitted incoming session as `prepared` (before any byte
/// of its image), so a restarted daemon destroys what it left.
pub(crate) fn journal_put(
    journal: &crate::journal::Journal,
    domain: &str,
    session: u64,
    peer: &str,
    crashed: &super::Crashed,
) -> Result<(), String> {
    if crashed.load(Ordering::SeqCst) {
        return Err("the daemon is gone".into());
    }
    let mut e = crate::journal::JournalEntry::now(
        domain,
        &session_key(session),
        Role::Dest,
        CommitState::Prepared,
    );
    e.peer = Some(peer.to_owned());
    journal.record(&e).map_err(|e| e.to_string())
}

impl SessionHandler for Engine {
    fn handle(&self, session: Session) {
        self.receive(session, None);
    }

    fn busy(&self, session: Session, limit: usize) {
        tracing::warn!(session = session.id, peer = %session.peer, limit,
            "refusing a relocation: too many migrations in progress");
        self.receive(session, Some(RefuseReason::TooManyMigrations));
    }
}
