//! The simulated hypervisor as the engine's [`Backend`] (`relocd serve
//! --backend sim`).
//!
//! [`SimBackend`] wraps a [`SimHypervisor`] whose guests run in real time
//! ([`Drive::RealTime`]): `relocd list` shows their step counters moving
//! (`--json`). `relocd sim create` and the guests file of `serve --guests`
//! create guests through it, with the hypervisor's admission (name,
//! capacity) as typed errors. Its hooks are small: a source is a
//! [`SimSource`] on the guest, a sink a [`SimSink`] on an empty, paused
//! one; settling a named guest is a pause, an unpause or a destroy.

use crate::api::{CommandError, DomainInfo, DomainState, ErrorKind, SimCreateRequest};
use crate::backend::sim::{
    self, Domid, Drive, GuestSpec, Pattern, SimError, SimGuest, SimHypervisor, SimSink, SimSource,
    SpecError,
};
use crate::devices::GuestDevices;
use crate::engine::{Backend, Domain, NewGuest, Refusal, Settle, Settled};
use relocd_core::guest::SchedParams;

/// Guest memory the sim backend offers when `--sim-capacity` is not given
/// and the host's memory cannot be read: 1 GiB.
pub const FALLBACK_SIM_CAPACITY: u64 = 1 << 30;

/// The guest memory the sim backend offers by default: what the host has
/// available now (`MemAvailable` in `/proc/meminfo`). A simulated guest's
/// pages take real memory once written, so the capacity must not promise
/// more than the host can give, or a peer could make the daemon take it.
pub fn default_sim_capacity() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_available(&t))
        .unwrap_or(FALLBACK_SIM_CAPACITY)
}

/// `MemAvailable` (else `MemFree`) of a `/proc/meminfo` text, in bytes,
/// rounded down to whole pages.
fn mem_available(meminfo: &str) -> Option<u64> {
    let field = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    let bytes = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some(bytes - bytes % 4096).filter(|&b| b > 0)
}

/// Every simulated guest has one vCPU.
const SIM_VCPUS: u32 = 1;

/// The simulated hypervisor, served by the daemon.
#[derive(Debug)]
pub struct SimBackend {
    hv: SimHypervisor,
}

impl SimBackend {
    /// A backend over `hv` (its guests keep running as `hv` drives them).
    pub fn new(hv: SimHypervisor) -> SimBackend {
        SimBackend { hv }
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
        self.hv
            .list()
            .into_iter()
            .find(|d| d.domid == domid)
            .map(|d| to_daemon_info(&d))
    }

    /// Every guest as `relocd list` shows it.
    pub fn infos(&self) -> Vec<DomainInfo> {
        self.hv.list().iter().map(to_daemon_info).collect()
    }

    /// The guest a command names, as xl resolves it: a number is a domain
    /// id (and only that), anything else a name. [`ErrorKind::NotFound`]
    /// when there is none.
    pub fn guest(&self, domain: &str) -> Result<SimGuest, CommandError> {
        let found = match domain.parse::<Domid>() {
            Ok(id) => self.hv.get(id),
            Err(_) => self.hv.by_name(domain),
        };
        found.ok_or_else(|| CommandError::new(ErrorKind::NotFound, format!("no domain `{domain}`")))
    }
}

fn to_daemon_info(d: &sim::DomainInfo) -> DomainInfo {
    let state = match d.state {
        sim::DomainState::Running => DomainState::Running,
        sim::DomainState::Paused => DomainState::Paused,
        sim::DomainState::Destroyed => DomainState::Dying,
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
    match e {
        SimError::NameTaken(n) => CommandError::new(
            ErrorKind::Exists,
            format!("cannot create `{n}`: a domain of that name already exists"),
        ),
        SimError::NoCapacity { needed, free } => CommandError::new(
            ErrorKind::Refused,
            format!(
                "cannot create {name}: {} (serve --sim-capacity sets the total, {})",
                Refusal::no_memory(name, needed, free).detail,
                crate::units::format_mib(capacity)
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
        .with_fill(req.fill_percent)
        .map_err(bad)?
        .with_pattern(pattern))
}

/// The xl configuration (libxl JSON, NUL-terminated) a save file carries
/// for a simulated guest: its name, memory and vCPUs; type `hvm`, since its
/// image is HVM-style (no PV records).
pub fn xl_config(name: &str, memory_bytes: u64, vcpus: u32) -> Vec<u8> {
    let v = serde_json::json!({
        "c_info": { "type": "hvm", "name": name },
        "b_info": {
            "max_vcpus": vcpus,
            "max_memkb": memory_bytes / 1024,
            "target_memkb": memory_bytes / 1024,
        },
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(0);
    out
}

fn refusal(name: &str, e: SimError) -> Refusal {
    match e {
        SimError::NameTaken(_) => Refusal::name_taken(name),
        SimError::NoCapacity { needed, free } => Refusal::no_memory(name, needed, free),
        other => Refusal::new(
            relocd_core::protocol::RefuseReason::Invalid,
            format!("cannot build {name}: {other}"),
        ),
    }
}

impl Backend for SimBackend {
    type Source<'a> = SimSource;
    type Sink<'a> = SimSink;

    fn name(&self) -> &'static str {
        "sim"
    }

    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        Ok(self.infos())
    }

    fn find(&self, domain: &str) -> Result<Domain, CommandError> {
        let g = self.guest(domain)?;
        Ok(Domain {
            id: u32::from(g.domid()),
            name: g.name(),
            uuid: [0; 16],
            memory_bytes: g.memory_bytes(),
        })
    }

    fn open_source(&self, d: &Domain) -> Result<SimSource, CommandError> {
        Ok(SimSource::new(self.guest(&d.name)?))
    }

    fn save_config(&self, d: &Domain) -> Vec<u8> {
        xl_config(&d.name, d.memory_bytes, SIM_VCPUS)
    }

    fn admit(&self, g: &NewGuest) -> Result<(), Refusal> {
        // Simulated guests have no devices: one whose configuration names
        // some is refused rather than built without them.
        if let Some(c) = &g.config {
            let devs = GuestDevices::from_libxl_json(c).map_err(|e| {
                Refusal::new(
                    relocd_core::protocol::RefuseReason::Invalid,
                    format!("{}: the guest's configuration: {e}", g.name),
                )
            })?;
            if !devs.is_empty() {
                return Err(Refusal::unsupported_devices(
                    &g.name,
                    &devs.names(),
                    "and the simulated hypervisor has none",
                ));
            }
        }
        self.hv
            .check_admission(&g.name, g.memory_bytes)
            .map_err(|e| refusal(&g.name, e))
    }

    fn create_sink(&self, g: &NewGuest) -> Result<SimSink, Refusal> {
        let guest = self
            .hv
            .create_empty(&g.name, g.memory_bytes)
            .map_err(|e| refusal(&g.name, e))?;
        Ok(SimSink::new(guest))
    }

    fn settle(&self, name: &str, action: Settle) -> Result<Settled, CommandError> {
        let Some(g) = self.hv.by_name(name) else {
            return Ok(Settled::Gone);
        };
        let paused = g.state() == sim::DomainState::Paused;
        let r = match action {
            Settle::Resume | Settle::Start if paused => g.unpause(),
            Settle::Hold if !paused => g.pause(),
            Settle::Discard => g.destroy(),
            Settle::DestroyIncoming if paused => g.destroy(),
            _ => return Ok(Settled::Unchanged),
        };
        r.map_err(|e| {
            CommandError::new(ErrorKind::Internal, format!("{action:?} of `{name}`: {e}"))
        })?;
        Ok(Settled::Done)
    }

    fn restore_sched(&self, name: &str, params: SchedParams) -> Result<Settled, CommandError> {
        let Some(g) = self.hv.by_name(name) else {
            return Ok(Settled::Gone);
        };
        if g.sched() == params {
            return Ok(Settled::Unchanged);
        }
        g.set_sched(params).map_err(|e| {
            CommandError::new(
                ErrorKind::Internal,
                format!("scheduling parameters of `{name}`: {e}"),
            )
        })?;
        Ok(Settled::Done)
    }

    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        self.create(&spec_from_request(req)?)
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
            fill_percent: 0,
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
        let list = b.infos();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].steps, Some(7));
        assert_eq!(list[0].id, u32::from(guest.domid()));
        guest.pause().unwrap();
        assert_eq!(b.infos()[0].state, DomainState::Paused);
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
        assert_eq!(
            full.message,
            "cannot create web2: not enough free memory for web2 (needs 128 MiB, has 64 MiB) \
             (serve --sim-capacity sets the total, 128 MiB)"
        );
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
        assert_eq!(b.infos().len(), 2);
    }

    /// What each settling action does to a running and a paused guest.
    #[test]
    fn settle_pauses_unpauses_or_destroys_by_name() {
        let b = backend(1 << 30);
        for n in ["a", "b", "c", "d"] {
            b.sim_create(&req(n, 1 << 20)).unwrap();
        }
        let guest = |n: &str| b.hypervisor().by_name(n).unwrap();
        let state = |n: &str| guest(n).state();
        assert_eq!(b.settle("a", Settle::Hold).unwrap(), Settled::Done);
        assert_eq!(state("a"), sim::DomainState::Paused);
        assert_eq!(b.settle("a", Settle::Hold).unwrap(), Settled::Unchanged);
        assert_eq!(b.settle("a", Settle::Resume).unwrap(), Settled::Done);
        assert_eq!(state("a"), sim::DomainState::Running);
        // The resumed guest runs its workload again.
        assert_eq!(guest("a").advance(3), 3);
        assert_eq!(b.settle("a", Settle::Resume).unwrap(), Settled::Unchanged);
        // A running guest is never taken for a half-built copy.
        assert_eq!(
            b.settle("b", Settle::DestroyIncoming).unwrap(),
            Settled::Unchanged
        );
        assert_eq!(state("b"), sim::DomainState::Running);
        guest("c").pause().unwrap();
        assert_eq!(
            b.settle("c", Settle::DestroyIncoming).unwrap(),
            Settled::Done
        );
        assert!(b.hypervisor().by_name("c").is_none());
        guest("d").pause().unwrap();
        assert_eq!(b.settle("d", Settle::Start).unwrap(), Settled::Done);
        assert_eq!(state("d"), sim::DomainState::Running);
        assert_eq!(b.settle("d", Settle::Discard).unwrap(), Settled::Done);
        assert!(b.hypervisor().by_name("d").is_none());
        assert_eq!(b.settle("zz", Settle::Resume).unwrap(), Settled::Gone);
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
    fn default_capacity_is_the_hosts_available_memory() {
        let text =
            "MemTotal:       24594412 kB\nMemFree:         1000 kB\nMemAvailable:   20000001 kB\n";
        assert_eq!(mem_available(text), Some(20_000_001 * 1024 / 4096 * 4096));
        assert_eq!(mem_available("MemFree: 8 kB\n"), Some(8192));
        assert_eq!(mem_available("nothing"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
        let here = default_sim_capacity();
        assert!(here > 0 && here % 4096 == 0, "{here}");
        // never the old 64 GiB promise on a host that does not have it
        let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            t.lines().find_map(|l| {
                let kib = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        });
        if let Some(kib) = total {
            assert!(here <= kib * 1024, "{here} over MemTotal {kib} kB");
        }
    }

    #[test]
    fn find_by_name_or_id() {
        let b = backend(1 << 30);
        let a = b.sim_create(&req("a", 1 << 20)).unwrap();
        b.sim_create(&req("b", 1 << 20)).unwrap();
        assert_eq!(b.find("a").unwrap().name, "a");
        assert_eq!(b.find(&a.id.to_string()).unwrap().name, "a");
        assert_eq!(b.find(&a.id.to_string()).unwrap().memory_bytes, 1 << 20);
        assert_eq!(b.find("zz").unwrap_err().kind, ErrorKind::NotFound);
        // A guest named like another's id: the number is the id, as in xl.
        b.sim_create(&req(&a.id.to_string(), 1 << 20)).unwrap();
        assert_eq!(b.find(&a.id.to_string()).unwrap().name, "a");
    }

    /// Admission refuses in the one wording, sizes in MiB, the guest named.
    #[test]
    fn admission_refusals_name_the_guest_and_the_sizes() {
        let b = backend(128 << 20);
        b.sim_create(&req("web1", 64 << 20)).unwrap();
        let g = |name: &str, memory_bytes| NewGuest {
            name: name.into(),
            uuid: [0; 16],
            guest_type: relocd_core::guest::GuestType::Hvm,
            memory_bytes,
            vcpus: 1,
            config: None,
        };
        let r = b.admit(&g("web2", 129 << 20)).unwrap_err();
        assert_eq!(r.reason, relocd_core::protocol::RefuseReason::NoCapacity);
        assert_eq!(
            r.detail,
            "not enough free memory for web2 (needs 129 MiB, has 64 MiB)"
        );
        let r = b.admit(&g("web1", 1 << 20)).unwrap_err();
        assert_eq!(r.reason, relocd_core::protocol::RefuseReason::NameTaken);
        b.admit(&g("web2", 64 << 20)).unwrap();
    }
}
