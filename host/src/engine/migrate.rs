//! `relocd migrate`: the sending side, for every backend.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::guard::{GuardedLink, TrackedSource};
use super::journal::{session_key, DaemonJournal};
use super::{
    connect, connect_tls, made_up_uuid, migrate_error, source_options, summary, target, tls_error,
    to_progress, Active, Backend, Engine, DEFAULT_PORT,
};
use crate::api::{
    CommandError, ErrorKind, MigrateRequest, Phase, Progress, ProgressSink, TransferSummary,
};
use crate::devices::GuestDevices;
use crate::journal::{CommitState, JournalEntry, Role};
use crate::session::{self, run_source, Clock, SessionError};

/// The configuration a migration offers the destination (libxl's JSON,
/// without its NUL), and whether the guest needs it: it names devices, or
/// cannot be read (the destination then says what is wrong with it
/// rather than build a guest without devices).
fn guest_config_offer(config: &[u8]) -> Option<(Vec<u8>, bool)> {
    let config = config.strip_suffix(&[0]).unwrap_or(config);
    if config.is_empty() {
        return None;
    }
    let required = GuestDevices::from_libxl_json(config).map_or(true, |d| !d.is_empty());
    Some((config.to_vec(), required))
}

impl<B: Backend> Engine<B> {
    /// Moves a domain to another host (module doc of [`super`]). Blocks
    /// until the session is over; `progress` gets the client's progress
    /// lines, and its cancel stops the migration before its point of no
    /// return.
    pub(crate) fn migrate_out(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let (d, _claim) = self.source_domain(&req.domain, super::Purpose::Migrate)?;
        let name = d.name.clone();
        let src = self.backend.open_source(&d)?;
        let tls = match (&self.tls, req.ssl) {
            (Some(t), ssl) if ssl || t.by_default => Some(t),
            (None, true) => {
                return Err(CommandError::new(
                    ErrorKind::Config,
                    "--ssl: this host has no TLS identity: set \
                     xend-relocation-server-ssl-key-file, xend-relocation-server-ssl-cert-file \
                     and relocd-relocation-ssl-ca-file in its xend-config.sxp and restart \
                     relocd serve",
                ))
            }
            _ => None,
        };
        let port = req.port.unwrap_or(tls.map_or(DEFAULT_PORT, |t| t.port));
        let to = target(&req.host, port);
        let _ = progress.report(&Progress::phase(Phase::Connecting));
        let tcp = connect(&req.host, port, self.cfg.io_timeout)?;
        let (stream, tls_probe) = match tls {
            Some(t) => {
                let s = connect_tls(&t.tls, tcp, &req.host, &to, &name, self.cfg.io_timeout)?;
                let probe = s.failure_probe();
                (session::Conn::Tls(s), Some((t, probe)))
            }
            None => (session::Conn::Tcp(tcp), None),
        };
        let _active = Active::new(&self.active);
        let sid = self.session_id();
        self.register(sid, &stream);
        let _ = progress.report(&Progress::phase(Phase::Negotiating));

        let mut opts = source_options(sid, &name, req, &self.cfg);
        opts.guest_config = guest_config_offer(&self.backend.save_config(&d));
        opts.uuid = if d.uuid == [0; 16] {
            made_up_uuid(&name, sid)
        } else {
            d.uuid
        };
        let mut journal = DaemonJournal {
            journal: &self.journal,
            domain: Rc::new(RefCell::new(name.clone())),
            role: Role::Source,
            peer: Some(to.clone()),
            crashed: self.crashed.clone(),
            stopped: Some(self.stopped.clone()),
        };
        if let Err(e) = journal.put(sid, CommitState::Prepared) {
            self.unregister(sid);
            return Err(CommandError::new(
                ErrorKind::Internal,
                format!("journal: {e}"),
            ));
        }
        let link = GuardedLink {
            stream,
            crashed: self.crashed.clone(),
        };
        let mut src = TrackedSource::new(src, &name, self.stopped.clone(), self.crashed.clone());
        if req.auto_converge {
            let mut prepared = JournalEntry::now(
                &name,
                &session_key(sid),
                Role::Source,
                CommitState::Prepared,
            );
            prepared.peer = Some(to.clone());
            src.sched_journal = Some((self.journal.clone(), prepared));
        }
        let cancel = AtomicBool::new(false);
        let pages_total = d.memory_bytes / relocd_core::guest::PAGE_SIZE as u64;
        let stopping = &self.stopping;
        let mut on_progress = |p: session::Progress| {
            if progress.report(&to_progress(&p, pages_total)).is_err()
                || progress.is_cancelled()
                || stopping.load(Ordering::SeqCst)
            {
                cancel.store(true, Ordering::SeqCst);
            }
        };
        tracing::info!(domain = %name, domid = d.id, to = %to, live = req.live,
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
        self.unregister(sid);
        if self.is_crashed() {
            return Err(CommandError::new(ErrorKind::Internal, "the daemon died"));
        }
        match r {
            Ok(rep) => {
                src.forget();
                tracing::info!(domain = %name, to = %to, rounds = rep.rounds + 1,
                    downtime_ms = rep.downtime_ms, total_ms = rep.total_ms,
                    image_bytes = rep.image_bytes_unpacked, sent_bytes = rep.image_bytes,
                    "migration done; the guest runs at the destination");
                self.backend.saved(&d, true);
                Ok(summary(&name, &rep))
            }
            Err(SessionError::InDoubt(p)) => {
                src.forget();
                self.set_in_doubt(&name, true);
                tracing::error!(domain = %name, to = %to, error = %p,
                    "migration in doubt; the guest stays stopped here");
                Err(migrate_error(&name, &to, SessionError::InDoubt(p)))
            }
            Err(e) => {
                // The guest runs here again (the drivers resumed it).
                src.forget();
                let _ = journal.put(sid, CommitState::Resolved);
                tracing::warn!(domain = %name, to = %to, error = %e,
                    "migration failed; the guest runs here");
                // A TLS alert (the destination refused this host's
                // certificate) says more than the lost link it caused.
                if let Some((t, tls_err)) = tls_probe
                    .as_ref()
                    .and_then(|(t, p)| p.failure().map(|f| (t, f)))
                {
                    return Err(tls_error(&t.tls, &tls_err, &to, &name));
                }
                Err(migrate_error(&name, &to, e))
            }
        }
    }
}
