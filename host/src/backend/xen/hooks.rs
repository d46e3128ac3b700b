//! Xen's hooks of the engine: [`XenBackend`] as an [`engine::Backend`].
//!
//! - A source is a [`PvSource`] on a 64-bit PV domain found by name or id
//!   through xenstore; domain 0, HVM guests, and (for a migration) devices
//!   other than dom0-served vifs and vbds, or ones libxl's record of the
//!   guest does not describe, are refused before anything is touched.
//! - Admission: PV only, the name free here, enough free memory in Xen
//!   (`XEN_SYSCTL_physinfo`) for the guest and libxl's slack, and every
//!   device of its configuration possible here ([`devices::check`]). The
//!   sink is a new paused domain built by [`PvSink`], its devices with it
//!   ([`devices::add`]); they go with it if it is destroyed.
//! - After a migration's commit or a destroying save the source's device
//!   backends are taken down ([`devices::remove_all`]).
//! - A save file carries libxl's own record of the domain
//!   (`/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json`, what `xl save`
//!   reads), else a minimal configuration; after a destroying save or a
//!   migration the record goes, after a restore it is written, so `xl`
//!   keeps working on the guest.
//! - Settling: a suspended source is resumed as a cancelled suspend (and
//!   log-dirty turned off); an in-doubt one stays suspended; a discarded or
//!   never-run copy is destroyed and its xenstore trees removed.

use std::path::PathBuf;

use relocd_core::guest::{GuestType, SchedParams};
use relocd_core::protocol::RefuseReason;
use relocd_hypercall::{errno, DomId, Hypervisor, XenOps};

use super::backend::{domain_name, forget_domain, XenBackend};
use super::devices;
use super::libxl::{libxl_config_path, xl_config};
use super::probe::resolve_domain;
use super::pv_sink::{PvCreate, PvRestoreError, PvSink, MAXMEM_SLACK_KIB};
use super::pv_source::{resume_suspended, PvSource, SHUTDOWN_SUSPEND};
use super::xenstore::{Transport, Xenstore, XenstoreError};
use crate::api::{CommandError, DomainInfo, ErrorKind};
use crate::devices::GuestDevices;
use crate::engine::{self, Domain, NewGuest, Purpose, Refusal, Settle, Settled};

fn err(kind: ErrorKind, msg: impl Into<String>) -> CommandError {
    CommandError::new(kind, msg)
}

fn store_err(e: XenstoreError) -> CommandError {
    err(ErrorKind::Internal, format!("xenstore: {e}"))
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

/// The devices `g`'s configuration names (none without one); a
/// configuration that cannot be read refuses the guest rather than build
/// it without its devices.
fn guest_devices_of(g: &NewGuest) -> Result<GuestDevices, Refusal> {
    match &g.config {
        None => Ok(GuestDevices::default()),
        Some(c) => GuestDevices::from_libxl_json(c).map_err(|e| {
            Refusal::new(
                RefuseReason::Invalid,
                format!("{}: the guest's configuration: {e}", g.name),
            )
        }),
    }
}

impl<H: Hypervisor + Send + Sync + 'static> XenBackend<H> {
    fn domid_of(&self, d: &Domain) -> Result<DomId, CommandError> {
        DomId::try_from(d.id).map_err(|_| err(ErrorKind::NotFound, "no such domain id"))
    }

    /// The domain called `name` here, with a xenstore connection.
    fn named(&self, name: &str) -> Option<(DomId, Xenstore<Box<dyn Transport>>)> {
        let mut xs = self.store().ok()?;
        let d = resolve_domain(self.hypervisor(), Some(&mut xs), name).ok()?;
        Some((d, xs))
    }

    /// Destroys `domid` and removes what xenstore and libxl keep of it.
    fn destroy_domain(
        &self,
        domid: DomId,
        xs: &mut Xenstore<Box<dyn Transport>>,
    ) -> Result<(), CommandError> {
        let xen = self.hypervisor();
        let uuid = xen.domain_info(domid).ok().map(|i| i.handle);
        let vm = xs.read_string(&format!("/local/domain/{domid}/vm")).ok();
        xen.destroy(domid).map_err(|e| {
            err(
                ErrorKind::Internal,
                format!("destroying domain {domid}: {e}"),
            )
        })?;
        devices::remove_all(xs, self.device_host(), domid);
        forget_domain(xs, domid, vm);
        let _ = xs.release(domid);
        if let Some(u) = uuid {
            let _ = std::fs::remove_file(libxl_config_path(self.userdata(), domid, &u));
        }
        Ok(())
    }

    /// Free memory in Xen, bytes.
    fn free_memory(&self) -> Result<u64, relocd_hypercall::Error> {
        Ok(self
            .hypervisor()
            .physinfo()?
            .free_pages
            .saturating_mul(4096))
    }
}

impl<H: Hypervisor + Send + Sync + 'static> engine::Backend for XenBackend<H> {
    type Source<'a> = PvSource<'a, H>;
    type Sink<'a> = PvSink<'a, H>;

    fn name(&self) -> &'static str {
        "xen"
    }

    fn list(&self) -> Result<Vec<DomainInfo>, CommandError> {
        self.try_list()
            .map_err(|e| err(ErrorKind::Internal, format!("listing domains: {e}")))
    }

    fn find(&self, domain: &str) -> Result<Domain, CommandError> {
        let xen = self.hypervisor();
        let mut xs = self.store().map_err(store_err)?;
        let domid = resolve_domain(xen, Some(&mut xs), domain)
            .map_err(|e| err(ErrorKind::NotFound, e.to_string()))?;
        let name = domain_name(&mut xs, domid).unwrap_or_else(|_| domid.to_string());
        let info = xen
            .domain_info(domid)
            .map_err(|e| err(ErrorKind::NotFound, e.to_string()))?;
        Ok(Domain {
            id: u32::from(domid),
            name,
            uuid: info.handle,
            memory_bytes: info.memory_kib().saturating_mul(1024),
        })
    }

    fn check_source(&self, d: &Domain, purpose: Purpose) -> Result<(), CommandError> {
        // relocd cannot stop the domain it runs in; any other domain, dom0
        // too where relocd runs in a driver domain, is Xen's policy to allow
        if d.id == u32::from(self.own_domid()) {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "domain {} is the one relocd runs in: it cannot be saved or migrated",
                    d.id
                ),
            ));
        }
        let domid = self.domid_of(d)?;
        let info = self
            .hypervisor()
            .domain_info(domid)
            .map_err(|e| err(ErrorKind::NotFound, e.to_string()))?;
        if info.hvm() {
            return Err(err(
                ErrorKind::Refused,
                format!("{} is an HVM guest; relocd moves PV guests", d.name),
            ));
        }
        let mut xs = self.store().map_err(store_err)?;
        let running = guest_devices(&mut xs, domid);
        let other: Vec<String> = running
            .iter()
            .filter(|d| !d.starts_with("vif ") && !d.starts_with("vbd "))
            .cloned()
            .collect();
        if purpose == Purpose::Save {
            // The file carries the guest's configuration; whoever restores
            // it recreates the devices (xl restore every kind).
            return Ok(());
        }
        if !other.is_empty() {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "{} has devices relocd does not move ({}): it moves vif and vbd devices \
                     (PCI passthrough cannot migrate in Xen either); detach them first",
                    d.name,
                    other.join(", ")
                ),
            ));
        }
        if running.is_empty() {
            return Ok(());
        }
        // The destination recreates the devices from libxl's record of
        // the guest: it must describe every one the guest has.
        let config = self.save_config(d);
        let described = GuestDevices::from_libxl_json(&config).map_err(|e| {
            err(
                ErrorKind::Refused,
                format!(
                    "{}: libxl's record of the guest cannot be read: {e}",
                    d.name
                ),
            )
        })?;
        if !described.unsupported.is_empty() {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "{} has devices relocd does not move: {}",
                    d.name,
                    described.unsupported.join(", ")
                ),
            ));
        }
        let missing: Vec<&String> = running
            .iter()
            .filter(|r| {
                let (kind, id) = r.split_once(' ').unwrap_or(("", ""));
                let id: Option<u32> = id.parse().ok();
                match kind {
                    "vif" => !described.nics.iter().any(|n| Some(n.devid) == id),
                    _ => !described.disks.iter().any(|k| Some(k.devid) == id),
                }
            })
            .collect();
        if !missing.is_empty() {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "{}: libxl's record of the guest ({}) does not describe {}; relocd cannot \
                     tell how to recreate {} on the destination",
                    d.name,
                    libxl_config_path(self.userdata(), domid, &d.uuid).display(),
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if missing.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        // Served by dom0's netback and blkback, as relocd rebuilds them.
        let served = devices::backends(&mut xs, domid);
        let foreign: Vec<&String> = running
            .iter()
            .filter(|r| {
                let (kind, id) = r.split_once(' ').unwrap_or(("", ""));
                !served.iter().any(|(k, i)| k == kind && i.to_string() == id)
            })
            .collect();
        if !foreign.is_empty() {
            return Err(err(
                ErrorKind::Refused,
                format!(
                    "{}: {} not served by dom0's netback or blkback (a driver domain, or \
                     QEMU's qdisk); relocd moves devices dom0's kernel serves",
                    d.name,
                    foreign
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ));
        }
        Ok(())
    }

    fn open_source(&self, d: &Domain) -> Result<PvSource<'_, H>, CommandError> {
        let xs = self.store().map_err(store_err)?;
        PvSource::open(self.hypervisor(), xs, self.domid_of(d)?)
            .map_err(|e| err(ErrorKind::Refused, format!("{}: {e}", d.name)))
    }

    fn save_config(&self, d: &Domain) -> Vec<u8> {
        let info = DomId::try_from(d.id)
            .ok()
            .and_then(|id| self.hypervisor().domain_info(id).ok().map(|i| (id, i)));
        match info {
            Some((id, i)) => xl_config(self.userdata(), id, &d.name, &i),
            None => Vec::new(),
        }
    }

    fn saved(&self, d: &Domain, destroyed: bool) {
        if !destroyed {
            return;
        }
        let Ok(domid) = DomId::try_from(d.id) else {
            return;
        };
        // The guest is gone: so go its backends and their scripts' work.
        match self.store() {
            Ok(mut xs) => devices::remove_all(&mut xs, self.device_host(), domid),
            Err(e) => tracing::warn!(domid, "xenstore: {e}; the guest's backends stay"),
        }
        let path = libxl_config_path(self.userdata(), domid, &d.uuid);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "removing libxl's record: {e}");
            }
        }
    }

    fn admit(&self, g: &NewGuest) -> Result<(), Refusal> {
        if g.guest_type != GuestType::Pv {
            return Err(Refusal::new(
                RefuseReason::Unsupported,
                format!(
                    "{} is not a PV guest; relocd on Xen builds PV guests",
                    g.name
                ),
            ));
        }
        let mut xs = self.store().map_err(|e| {
            tracing::error!("xenstore: {e}; refusing");
            Refusal::new(RefuseReason::NotAllowed, format!("xenstore: {e}"))
        })?;
        if resolve_domain(self.hypervisor(), Some(&mut xs), &g.name).is_ok() {
            return Err(Refusal::name_taken(&g.name));
        }
        let devs = guest_devices_of(g)?;
        devices::check(self.device_host(), &g.name, &devs)?;
        let needed = g
            .memory_bytes
            .div_ceil(1024)
            .saturating_add(MAXMEM_SLACK_KIB)
            .saturating_mul(1024);
        match self.free_memory() {
            Ok(free) if free < needed => Err(Refusal::no_memory(&g.name, needed, free)),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!("physinfo: {e}; the domain's creation will tell");
                Ok(())
            }
        }
    }

    fn create_sink(&self, g: &NewGuest) -> Result<PvSink<'_, H>, Refusal> {
        let xs = self
            .store()
            .map_err(|e| Refusal::new(RefuseReason::NotAllowed, format!("xenstore: {e}")))?;
        let create = PvCreate {
            name: g.name.clone(),
            uuid: g.uuid,
            max_memkb: g.memory_bytes.div_ceil(1024),
            vcpus: g.vcpus,
        };
        let devs = guest_devices_of(g)?;
        let mut sink = PvSink::create(self.hypervisor(), xs, &create).map_err(|e| {
            tracing::error!(domain = %g.name, "creating the domain: {e}");
            let reason = match e {
                PvRestoreError::Unsupported(_) => RefuseReason::Unsupported,
                _ => RefuseReason::NoCapacity,
            };
            Refusal::new(reason, format!("cannot create {}: {e}", g.name))
        })?;
        if !devs.is_empty() {
            let started = self.store().map_err(|e| e.to_string()).and_then(|xs| {
                sink.add_devices(xs, self.device_host(), &devs)
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = started {
                tracing::error!(domain = %g.name, "setting up its devices: {e}");
                let _ = relocd_core::guest::SinkGuest::destroy(&mut sink);
                return Err(Refusal::device(
                    &g.name,
                    &format!("setting up its devices: {e}"),
                ));
            }
        }
        Ok(sink)
    }

    fn restored(&self, g: &NewGuest, config: &[u8]) {
        let Some((domid, _)) = self.named(&g.name) else {
            return;
        };
        let record = libxl_config_path(self.userdata(), domid, &g.uuid);
        // As libxl stores it, with its NUL: libxl reads it back as a C
        // string.
        let mut bytes = config.to_vec();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes.push(0);
        if let Err(e) = std::fs::write(&record, &bytes) {
            tracing::warn!(path = %record.display(), "writing libxl's record: {e}");
        }
    }

    fn start_up(&self) {
        let xen = self.hypervisor();
        let own = self.own_domid();
        match self.store() {
            Ok(mut xs) => {
                // Gone means Xen says there is no such domain. The domain
                // relocd runs in is not gone (in a driver domain its own
                // vif is served from dom0), and a lookup the security
                // policy denies says nothing about a domain: its backends
                // stay.
                let swept = devices::sweep_orphans(&mut xs, self.device_host(), |d| {
                    d == own || !matches!(xen.domain_info(d), Err(e) if e.errno == errno::ESRCH)
                });
                if !swept.is_empty() {
                    tracing::info!(?swept, "took down the backends of domains that are gone");
                }
            }
            Err(e) => tracing::warn!("xenstore: {e}; no sweep of orphaned backends"),
        }
    }

    fn settle(&self, name: &str, action: Settle) -> Result<Settled, CommandError> {
        let Some((domid, mut xs)) = self.named(name) else {
            return Ok(Settled::Gone);
        };
        let xen = self.hypervisor();
        let info = xen
            .domain_info(domid)
            .map_err(|e| err(ErrorKind::Internal, format!("domain {domid}: {e}")))?;
        let suspended = info.shutdown() && info.shutdown_reason() == Some(SHUTDOWN_SUSPEND);
        match action {
            Settle::Resume => {
                let _ = xen.logdirty_disable(domid);
                if suspended {
                    resume_suspended(xen, &mut xs, domid)
                        .map_err(|e| err(ErrorKind::Internal, format!("resuming {name}: {e}")))?;
                    Ok(Settled::Done)
                } else if info.paused() && !info.shutdown() {
                    xen.unpause(domid)
                        .map_err(|e| err(ErrorKind::Internal, format!("unpausing {name}: {e}")))?;
                    Ok(Settled::Done)
                } else {
                    Ok(Settled::Unchanged)
                }
            }
            // A suspended guest stays as it is until the operator decides.
            Settle::Hold => Ok(Settled::Unchanged),
            Settle::Discard => {
                self.destroy_domain(domid, &mut xs)?;
                Ok(Settled::Done)
            }
            Settle::Start => {
                xen.unpause(domid)
                    .map_err(|e| err(ErrorKind::Internal, format!("unpausing {name}: {e}")))?;
                Ok(Settled::Done)
            }
            Settle::DestroyIncoming if info.paused() && !info.shutdown() => {
                self.destroy_domain(domid, &mut xs)?;
                Ok(Settled::Done)
            }
            Settle::DestroyIncoming => Ok(Settled::Unchanged),
        }
    }

    fn restore_sched(&self, name: &str, params: SchedParams) -> Result<Settled, CommandError> {
        let Some((domid, _)) = self.named(name) else {
            return Ok(Settled::Gone);
        };
        let xen = self.hypervisor();
        let now = super::sched::get(xen, domid)
            .map_err(|e| err(ErrorKind::Internal, format!("scheduler of {name}: {e}")))?;
        match now {
            Some((_, p)) if p == params => Ok(Settled::Unchanged),
            Some(_) => {
                super::sched::set(xen, domid, params).map_err(|e| {
                    err(
                        ErrorKind::Internal,
                        format!("scheduling parameters of {name}: {e}"),
                    )
                })?;
                Ok(Settled::Done)
            }
            None => Ok(Settled::Unchanged),
        }
    }
}

/// Where libxl keeps its per-domain records, unless told otherwise.
pub fn default_userdata() -> PathBuf {
    PathBuf::from(super::libxl::LIBXL_USERDATA_DIR)
}
