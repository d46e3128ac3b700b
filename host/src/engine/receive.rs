//! Incoming relocations: the receiving side, for every backend.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use relocd_core::protocol::{AdmissionRequest, DestConfig, RefuseReason};

use super::guard::{Crashed, GuardedLink, TrackedSink};
use super::journal::{session_key, DaemonJournal};
use super::{Active, Backend, Engine, EngineConfig, Incoming, NewGuest, Refusal};
use crate::journal::{CommitState, Journal, JournalEntry, Role};
use crate::session::{run_dest, Clock, DestOptions, SessionError};

/// The destination's options for the engine's settings.
pub(crate) fn dest_options(cfg: &EngineConfig) -> DestOptions {
    let t = cfg.dest_timeouts();
    DestOptions {
        config: DestConfig {
            timeouts: t.protocol,
            ..DestConfig::default()
        },
        write_timeout: t.write,
    }
}

/// The guest an admission request asks this host to build.
fn new_guest(req: &AdmissionRequest, config: Option<&[u8]>) -> NewGuest {
    NewGuest {
        name: req.name.as_str().to_owned(),
        uuid: req.uuid,
        guest_type: req.guest_type,
        memory_bytes: req.memory_bytes,
        vcpus: req.vcpus,
        config: config.map(<[u8]>::to_vec),
    }
}

/// Journals an admitted incoming session as `prepared` (before any byte
/// of its image), so a restarted daemon destroys what it left.
fn journal_prepared(
    journal: &Journal,
    domain: &str,
    session: u64,
    peer: &str,
    crashed: &Crashed,
) -> Result<(), String> {
    if crashed.load(Ordering::SeqCst) {
        return Err("the daemon is gone".into());
    }
    let mut e = JournalEntry::now(
        domain,
        &session_key(session),
        Role::Dest,
        CommitState::Prepared,
    );
    e.peer = Some(peer.to_owned());
    journal.record(&e).map_err(|e| e.to_string())
}

impl<B: Backend> Engine<B> {
    /// Runs one destination session; `refuse` answers every admission with
    /// that refusal (the concurrency limit).
    pub(crate) fn receive_session(&self, conn: Incoming, refuse: Option<Refusal>) {
        let _active = Active::new(&self.active);
        let Incoming {
            id,
            stream,
            peer,
            shutdown,
        } = conn;
        let key = u64::MAX - id;
        self.register(key, &stream);
        let domain = Rc::new(RefCell::new(String::new()));
        let created: Cell<Option<u64>> = Cell::new(None);
        // The incoming name, held against other sessions and restores of
        // the same name until this session ends.
        let held = RefCell::new(None);
        // Its `relocd status` entry, from its admission to its end.
        let ticket = RefCell::new(None);
        let mut journal = DaemonJournal {
            journal: &self.journal,
            domain: domain.clone(),
            role: Role::Dest,
            peer: Some(peer.to_string()),
            crashed: self.crashed.clone(),
            stopped: None,
        };
        // The guest being built, for the backend once it runs here.
        let building: RefCell<Option<NewGuest>> = RefCell::new(None);
        let admit = |req: &AdmissionRequest,
                     config: Option<&[u8]>|
         -> Result<TrackedSink<B::Sink<'_>>, Refusal> {
            let refusal = |r: Refusal| {
                tracing::warn!(session = id, %peer, domain = %req.name.as_str(),
                    reason = %r.reason, "relocation refused: {r}");
                r
            };
            if let Some(r) = refuse.clone() {
                return Err(refusal(r));
            }
            if self.stopping.load(Ordering::SeqCst) || shutdown.is_triggered() {
                return Err(refusal(RefuseReason::ShuttingDown.into()));
            }
            let g = new_guest(req, config);
            let claim = self.claim(&g.name).map_err(|_| {
                refusal(Refusal::new(
                    RefuseReason::NameTaken,
                    format!("{} is being received, moved or saved here already", g.name),
                ))
            })?;
            self.backend.admit(&g).map_err(refusal)?;
            *held.borrow_mut() = Some(claim);
            let mut sink = self.backend.create_sink(&g).map_err(refusal)?;
            *domain.borrow_mut() = g.name.clone();
            // Journaled before any byte of the image: a restart destroys it.
            if let Err(e) = journal_prepared(
                &self.journal,
                &g.name,
                req.session,
                &peer.to_string(),
                &self.crashed,
            ) {
                tracing::error!(error = %e, "journal; refusing the migration");
                let _ = relocd_core::guest::SinkGuest::destroy(&mut sink);
                return Err(Refusal::new(
                    RefuseReason::NotAllowed,
                    format!("the destination cannot journal the migration: {e}"),
                ));
            }
            created.set(Some(req.session));
            *building.borrow_mut() = Some(g.clone());
            tracing::info!(session = id, %peer, domain = %g.name, memory = g.memory_bytes,
                live = req.live, "relocation admitted; receiving into a paused domain");
            let status = self.in_flight().start(super::inflight::Start {
                direction: crate::api::Direction::Incoming,
                domain: g.name.clone(),
                peer: Some(peer.to_string()),
                file: None,
                phase: crate::api::Phase::Transfer,
                pages_total: g.memory_bytes / relocd_core::guest::PAGE_SIZE as u64,
            });
            let handle = status.handle();
            *ticket.borrow_mut() = Some(status);
            Ok(TrackedSink {
                inner: sink,
                crashed: self.crashed.clone(),
                status: Some(handle),
            })
        };
        let link = GuardedLink {
            stream,
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
            Ok(rep) => {
                tracing::info!(session = id, %peer, domain = %rep.name,
                    rounds = rep.rounds + 1, pages = rep.pages_applied, total_ms = rep.total_ms,
                    "relocation received; the guest runs here");
                if let Some(g) = building.borrow().as_ref() {
                    if let Some(config) = &g.config {
                        self.backend.restored(g, config);
                    }
                }
            }
            Err(e) => {
                if let Some(s) = created.get() {
                    let _ = journal.put(s, CommitState::Resolved);
                }
                match &e {
                    SessionError::Refused(_) => {}
                    SessionError::Incompatible { ours, theirs } => {
                        tracing::warn!(session = id, %peer, ours, theirs,
                            "relocation refused: incompatible protocol version")
                    }
                    _ => tracing::warn!(session = id, %peer, domain = %name, error = %e,
                        "relocation failed; no copy is left here"),
                }
            }
        }
    }
}
