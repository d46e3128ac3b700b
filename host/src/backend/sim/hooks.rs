//! The simulated hypervisor as the daemon's [`Backend`] (`relocd serve
//! --backend sim`).
//!
//! [`SimBackend`] wraps a [`SimHypervisor`] whose guests run in real time
//! ([`Drive::RealTime`]): `relocd list` shows their step counters moving.
//! `relocd sim create` and the guests file of `serve --guests` create
//! guests through it, with the hypervisor's admission (name, capacity) as
//! typed errors.
//!
//! # Guests paused by a migration
//!
//! The migration engine pauses a source guest for its stop-and-copy. If the
//! daemon stops before that migration has passed its point of no return,
//! the guest must run again here. The engine says so with
//! [`SimBackend::mark_paused_by_migration`] when it pauses a guest and
//! [`SimBackend::clear`] once the guest is no longer its to resume (resumed
//! by the engine itself, destroyed after the commit, or handed over).
//! [`Backend::shutdown`] unpauses every guest still marked.
//!
//! A guest whose migration outcome cannot be known here is marked with
//! [`SimBackend::mark_in_doubt`] instead: `relocd list` reports it as
//! [`DomainState::InDoubt`] and shutdown leaves it paused, because
//! resuming it could make it run on two hosts (invariant 1 of the design);
//! `relocd resolve` settles it ([`SimBackend::settle`]).

use crate::api::{
    CommandError, DomainInfo, DomainState, ErrorKind, ResolveAction, SimCreateRequest,
};
use crate::backend::sim::{
    self, Domid, Drive, GuestSpec, Pattern, SimError, SimGuest, SimHypervisor, SpecError,
};
use crate::daemon::backend::Backend;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Guest memory the sim backend offers when `--sim-capacity` is not given:
/// 64 GiB (guest memory is sparse, so this is bookkeeping, not RAM).
pub const DEFAULT_SIM_CAPACITY: u64 = 64 << 30;

/// Every simulated guest has one vCPU.
const SIM_VCPUS: u32 = 1;

#[derive(Debug, Default)]
struct Marks {
    /// Paused by a migration that has not finished: resumed at shutdown.
    paused: BTreeSet<Domid>,
    /// Outcome unknown here: reported in doubt, left paused.
    in_doubt: BTreeSet<Domid>,
}

/// The simulated hypervisor, served by the daemon.
#[derive(Debug)]
pub struct SimBackend {
    hv: SimHypervisor,
    marks: Mutex<Marks>,
}

impl SimBackend {
    /// A backend over `hv` (its guests keep running as `hv` drives them).
    pub fn new(hv: SimHypervisor) -> SimBackend {
        SimBackend {
            hv,
            marks: Mutex::new(Marks::default()),
        }
    }

    /// A backend over a new, empty hypervisor of `capacity` bytes whose
    /// guests run in real time.
    pub fn with_capacity(capacity: u64) -> SimBackend {
        SimBackend::new(SimHypervisor::new(capacity, Drive::RealTime))
    }

    /// The hypervisor (clones share its domains), for the migration engine.
    pub fn hypervisor(&self) -> &SimHypervisor {
        &self.hv
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates and starts a guest from `spec`.
    pub fn create(&self, spec: &GuestSpec) -> Result<DomainInfo, CommandError> {
        let guest = self
            .hv
            .create(spec, false)
            .map_err(|e| create_error(&spec.name, e, self.hv.capacity()))?;
        tracing::info!(
            domain = %spec.name,
            domid = guest.domid(),
            memory = spec.memory,
            dirty_rate = spec.dirty_rate,
            pattern = %spec.pattern,
            "sim guest created"
        );
        Ok(self.info(guest.domid()).unwrap_or_else(|| DomainInfo {
            id: u32::from(guest.domid()),
            name: spec.name.clone(),
            memory_bytes: spec.memory,
            vcpus: SIM_VCPUS,
            state: DomainState::Running,
            steps: guest.steps(),
        }))
    }

    /// Creates and starts every guest of a guests file (see
    /// [`sim::parse_guests_file`]), in order; stops at the first refusal.
    pub fn create_all(&self, specs: &[GuestSpec]) -> Result<Vec<DomainInfo>, CommandError> {
        specs.iter().map(|s| self.create(s)).collect()
    }

    /// One domain as `relocd list` shows it.
    pub fn info(&self, domid: Domid) -> Option<DomainInfo> {
        let marks = self.marks();
        self.hv
            .list()
            .into_iter()
            .find(|d| d.domid == domid)
            .map(|d| to_daemon_info(&d, &marks))
    }

    /// The guest a command names: by name first, then by domain id (as
    /// xm accepts either). [`ErrorKind::NotFound`] when there is none.
    pub fn find(&self, domain: &str) -> Result<SimGuest, CommandError> {
        self.hv
            .by_name(domain)
            .or_else(|| domain.parse::<Domid>().ok().and_then(|id| self.hv.get(id)))
            .ok_or_else(|| CommandError::new(ErrorKind::NotFound, format!("no domain `{domain}`")))
    }

    /// Settles an in-doubt guest (`relocd resolve`): `Resume` lets it run
    /// here, `Discard` destroys it here; either way its mark goes. A guest
    /// that is not in doubt is refused ([`ErrorKind::Refused`]) and left as
    /// it is. The journal record of the decision is the caller's.
    pub fn settle(&self, domain: &str, action: ResolveAction) -> Result<(), CommandError> {
        let guest = self.find(domain)?;
        let domid = guest.domid();
        if !self.marks().in_doubt.contains(&domid) {
            return Err(CommandError::new(
                ErrorKind::Refused,
                format!("`{domain}` is not in doubt; there is nothing to resolve"),
            ));
        }
        let done = match action {
            ResolveAction::Resume => guest.unpause(),
            ResolveAction::Discard => guest.destroy(),
        };
        done.map_err(|e| {
            CommandError::new(ErrorKind::Internal, format!("resolving `{domain}`: {e}"))
        })?;
        self.clear(domid);
        tracing::info!(domain, domid, ?action, "in-doubt guest settled");
        Ok(())
    }

    /// The migration engine paused `domid` for a migration that has not
    /// passed its point of no return: resume it if the daemon stops first.
    pub fn mark_paused_by_migration(&self, domid: Domid) {
        let mut marks = self.marks();
        marks.in_doubt.remove(&domid);
        marks.paused.insert(domid);
    }

    /// `domid`'s migration outcome is unknown here: report it in doubt and
    /// never resume it at shutdown (only `relocd resolve` settles it).
    pub fn mark_in_doubt(&self, domid: Domid) {
        let mut marks = self.marks();
        marks.paused.remove(&domid);
        marks.in_doubt.insert(domid);
    }

    /// Forgets every mark on `domid` (the engine resumed it, destroyed it,
    /// or settled it).
    pub fn clear(&self, domid: Domid) {
        let mut marks = self.marks();
        marks.paused.remove(&domid);
        marks.in_doubt.remove(&domid);
    }

    /// The guests marked paused by a migration, by domid.
    pub fn paused_by_migration(&self) -> Vec<Domid> {
        self.marks().paused.iter().copied().collect()
    }

    /// The guests marked in doubt, by domid.
    pub fn in_doubt(&self) -> Vec<Domid> {
        self.marks().in_doubt.iter().copied().collect()
    }

    /// Unpauses every guest marked paused by a migration and forgets the
    /// marks; returns how many were resumed. Guests already gone are
    /// skipped; in-doubt guests are left as they are.
    pub fn resume_marked(&self) -> usize {
        let domids = std::mem::take(&mut self.marks().paused);
        let mut resumed = 0;
        for domid in domids {
            let Some(guest) = self.hv.get(domid) else {
                continue;
            };
            match guest.unpause() {
                Ok(()) => {
                    resumed += 1;
                    tracing::info!(
                        domain = %guest.name(),
                        domid,
                        "resumed a guest paused by an unfinished migration"
                    );
                }
                Err(e) => tracing::error!(
                    domain = %guest.name(),
                    domid,
                    error = %e,
                    "could not resume a guest paused by an unfinished migration"
                ),
            }
        }
        resumed
    }
}

fn to_daemon_info(d: &sim::DomainInfo, marks: &Marks) -> DomainInfo {
    let state = if marks.in_doubt.contains(&d.domid) {
        DomainState::InDoubt
    } else {
        match d.state {
            sim::DomainState::Running => DomainState::Running,
            sim::DomainState::Paused => DomainState::Paused,
            sim::DomainState::Destroyed => DomainState::Dying,
        }
    };
    DomainInfo {
        id: u32::from(d.domid),
        name: d.name.clone(),
        memory_bytes: d.memory,
        vcpus: SIM_VCPUS,
        state,
        steps: d.steps,
    }
}

/// A create refusal as the daemon's typed error, with a message that says
/// what to change.
fn create_error(name: &str, e: SimError, capacity: u64) -> CommandError {
    use crate::units::format_bytes;
    match e {
        SimError::NameTaken(n) => CommandError::new(
            ErrorKind::Exists,
            format!("cannot create `{n}`: a domain of that name already exists"),
        ),
        SimError::NoCapacity { needed, free } => CommandError::new(
            ErrorKind::Refused,
            format!(
                "cannot create `{name}`: no capacity: it needs {}, {} of {} is free \
                 (serve --sim-capacity sets the total)",
                format_bytes(needed),
                format_bytes(free),
                format_bytes(capacity)
            ),
        ),
        SimError::NoDomid => CommandError::new(
            ErrorKind::Refused,
            format!("cannot create `{name}`: every domain id is in use"),
        ),
        SimError::Spec(s) => CommandError::new(
            ErrorKind::BadRequest,
            format!("cannot create `{name}`: {s}"),
        ),
        other => CommandError::new(
            ErrorKind::Internal,
            format!("cannot create `{name}`: {other}"),
        ),
    }
}

/// The guest spec a `sim_create` request asks for, checked.
pub fn spec_from_request(req: &SimCreateRequest) -> Result<GuestSpec, CommandError> {
    let bad = |e: SpecError| {
        CommandError::new(
            ErrorKind::BadRequest,
            format!("cannot create `{}`: {e}", req.name),
        )
    };
    if let Some(n) = req.vcpus {
        if n != SIM_VCPUS {
            return Err(CommandError::new(
                ErrorKind::BadRequest,
                format!(
                    "cannot create `{}` with {n} vCPUs: simulated guests have one",
                    req.name
                ),
            ));
        }
    }
    let pattern = match req.pattern.as_deref() {
        None => Pattern::Uniform,
        // The wire name the control protocol's doc uses, too.
        Some("hot-set") => Pattern::Hot,
        Some(p) => p.parse().map_err(bad)?,
    };
    Ok(GuestSpec::new(&req.name, req.memory_bytes)
        .map_err(bad)?
        .with_dirty_rate(req.dirty_rate_bytes_per_s)
        .map_err(bad)?
        .with_pattern(pattern))
}

impl Backend for SimBackend {
    fn name(&self) -> &str {
        "sim"
    }

    fn list(&self) -> Vec<DomainInfo> {
        let marks = self.marks();
        self.hv
            .list()
            .iter()
            .map(|d| to_daemon_info(d, &marks))
            .collect()
    }

    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        self.create(&spec_from_request(req)?)
    }

    fn shutdown(&self) {
        let resumed = self.resume_marked();
        let in_doubt = self.in_doubt();
        if !in_doubt.is_empty() {
            tracing::warn!(
                domids = ?in_doubt,
                "guests in doubt stay paused; settle them with `relocd resolve`"
            );
        }
        tracing::debug!(resumed, "sim backend stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(capacity: u64) -> SimBackend {
        SimBackend::new(SimHypervisor::new(capacity, Drive::Manual))
    }

    fn req(name: &str, memory: u64) -> SimCreateRequest {
        SimCreateRequest {
            name: name.into(),
            memory_bytes: memory,
            dirty_rate_bytes_per_s: 4 << 20,
            pattern: Some("hot".into()),
            vcpus: None,
        }
    }

    #[test]
    fn create_lists_running_guest_with_steps() {
        let b = backend(1 << 30);
        let info = b.sim_create(&req("web1", 64 << 20)).unwrap();
        assert_eq!(info.name, "web1");
        assert_eq!(info.state, DomainState::Running);
        assert_eq!(info.memory_bytes, 64 << 20);
        assert_eq!(info.vcpus, 1);
        assert_eq!(info.steps, Some(0));
        let guest = b.hypervisor().by_name("web1").unwrap();
        guest.advance(7);
        let list = b.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].steps, Some(7));
        assert_eq!(list[0].id, u32::from(guest.domid()));
        guest.pause().unwrap();
        assert_eq!(b.list()[0].state, DomainState::Paused);
        assert_eq!(b.name(), "sim");
    }

    #[test]
    fn refusals_are_typed() {
        let b = backend(128 << 20);
        b.sim_create(&req("web1", 64 << 20)).unwrap();
        let taken = b.sim_create(&req("web1", 4096)).unwrap_err();
        assert_eq!(taken.kind, ErrorKind::Exists);
        assert!(taken.message.contains("already exists"), "{taken}");
        let full = b.sim_create(&req("web2", 128 << 20)).unwrap_err();
        assert_eq!(full.kind, ErrorKind::Refused);
        assert!(full.message.contains("no capacity"), "{full}");
        assert!(full.message.contains("64.0 MiB"), "{full}");
        let mut odd = req("web3", 4095);
        assert_eq!(b.sim_create(&odd).unwrap_err().kind, ErrorKind::BadRequest);
        odd.memory_bytes = 4096;
        odd.pattern = Some("zigzag".into());
        let e = b.sim_create(&odd).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("zigzag"), "{e}");
        odd.pattern = Some("hot-set".into());
        odd.vcpus = Some(2);
        assert_eq!(b.sim_create(&odd).unwrap_err().kind, ErrorKind::BadRequest);
        odd.vcpus = Some(1);
        b.sim_create(&odd).unwrap();
        assert_eq!(b.list().len(), 2);
    }

    #[test]
    fn shutdown_resumes_marked_and_keeps_in_doubt_paused() {
        let b = backend(1 << 30);
        let names = ["a", "b", "c", "d"];
        for n in names {
            b.sim_create(&req(n, 1 << 20)).unwrap();
        }
        let guest = |n: &str| b.hypervisor().by_name(n).unwrap();
        // a: paused by a migration that did not finish.
        guest("a").pause().unwrap();
        b.mark_paused_by_migration(guest("a").domid());
        // b: paused, marked, then the engine resumed it and cleared the mark.
        guest("b").pause().unwrap();
        b.mark_paused_by_migration(guest("b").domid());
        guest("b").unpause().unwrap();
        b.clear(guest("b").domid());
        // c: in doubt.
        guest("c").pause().unwrap();
        b.mark_paused_by_migration(guest("c").domid());
        b.mark_in_doubt(guest("c").domid());
        // d: marked, then destroyed after its commit, mark left behind.
        guest("d").pause().unwrap();
        let d = guest("d").domid();
        b.mark_paused_by_migration(d);
        guest("d").destroy().unwrap();

        assert_eq!(b.paused_by_migration().len(), 2);
        let states: Vec<_> = b.list().iter().map(|i| i.state).collect();
        assert_eq!(
            states,
            [
                DomainState::Paused,
                DomainState::Running,
                DomainState::InDoubt
            ]
        );
        b.shutdown();
        assert_eq!(guest("a").state(), sim::DomainState::Running);
        assert_eq!(guest("b").state(), sim::DomainState::Running);
        assert_eq!(guest("c").state(), sim::DomainState::Paused);
        assert!(b.paused_by_migration().is_empty());
        assert_eq!(b.in_doubt(), [guest("c").domid()]);
        // The resumed guest runs its workload again.
        assert_eq!(guest("a").advance(3), 3);
        b.clear(guest("c").domid());
        assert_eq!(b.list()[2].state, DomainState::Paused);
    }

    #[test]
    fn guests_file_creates_in_order_and_stops_at_refusal() {
        let b = backend(1 << 30);
        let specs = sim::parse_guests_file(
            "web1 memory=256M dirty-rate=8M/s pattern=hot\ndb1 memory=128M\n",
        )
        .unwrap();
        let made = b.create_all(&specs).unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(made[1].name, "db1");
        let too_big = sim::parse_guests_file("big memory=1G\n").unwrap();
        assert_eq!(b.create_all(&too_big).unwrap_err().kind, ErrorKind::Refused);
    }

    #[test]
    fn find_by_name_or_id_and_settle_in_doubt() {
        let b = backend(1 << 30);
        let a = b.sim_create(&req("a", 1 << 20)).unwrap();
        b.sim_create(&req("b", 1 << 20)).unwrap();
        assert_eq!(b.find("a").unwrap().name(), "a");
        assert_eq!(b.find(&a.id.to_string()).unwrap().name(), "a");
        assert_eq!(b.find("zz").unwrap_err().kind, ErrorKind::NotFound);

        // Not in doubt: refused, untouched.
        let e = b.settle("a", ResolveAction::Discard).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert_eq!(b.list().len(), 2);

        for n in ["a", "b"] {
            let g = b.find(n).unwrap();
            g.pause().unwrap();
            b.mark_in_doubt(g.domid());
        }
        b.settle("a", ResolveAction::Resume).unwrap();
        assert_eq!(b.find("a").unwrap().state(), sim::DomainState::Running);
        b.settle("b", ResolveAction::Discard).unwrap();
        assert!(b.find("b").is_err());
        let list = b.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, DomainState::Running);
        assert!(b.in_doubt().is_empty());
    }
}
