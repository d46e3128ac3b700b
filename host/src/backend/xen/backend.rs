//! [`XenBackend`]: a real Xen as the engine sees it (its hooks are in
//! [`super::hooks`]): the domains from `XEN_SYSCTL_getdomaininfolist`, their
//! names from xenstore, as `xl list` shows them.

use super::xenstore::{StoreErrno, Transport, Xenstore, XenstoreError};
use crate::api::{DomainInfo, DomainState};
use relocd_hypercall::{DomId, Hypervisor, XenOps};

/// What `xl list` shows for dom0 (and relocd falls back to when xenstore
/// has no name for it).
pub const DOM0_NAME: &str = "Domain-0";

/// Opens a fresh xenstore connection (one a listing: a connection broken
/// by an error is never reused).
pub type StoreConnector =
    Box<dyn Fn() -> Result<Xenstore<Box<dyn Transport>>, XenstoreError> + Send + Sync>;

/// The Xen backend: a hypervisor doorway and a way to reach xenstore.
pub struct XenBackend<H> {
    xen: H,
    store: StoreConnector,
    /// Where libxl keeps its records of domains.
    userdata: std::path::PathBuf,
    /// Where guests' device backends are set up.
    devices: super::devices::DeviceHost,
    /// The domain relocd runs in (see [`XenBackend::in_own_domain`]).
    own: DomId,
}

impl<H: Hypervisor + Send + Sync> XenBackend<H> {
    /// A backend over `xen`, naming domains through xenstore as
    /// [`Xenstore::open`] finds it.
    pub fn new(xen: H) -> Self {
        Self::with_store(xen, Box::new(Xenstore::open))
    }

    /// A backend over `xen` and the xenstore `store` connects to.
    pub fn with_store(xen: H, store: StoreConnector) -> Self {
        XenBackend {
            xen,
            store,
            userdata: std::path::PathBuf::from(super::libxl::LIBXL_USERDATA_DIR),
            devices: super::devices::DeviceHost::default(),
            own: 0,
        }
    }

    /// The same backend, knowing the domain relocd runs in as
    /// [`super::own_domain::find_here`] finds it (what `relocd serve`
    /// does at start-up: relocd may run in a driver domain).
    pub fn in_own_domain(self) -> Result<Self, super::XenUnavailable> {
        let own = super::own_domain::find_here().map_err(super::XenUnavailable::OwnDomain)?;
        tracing::info!("relocd runs in {own}");
        Ok(self.with_own_domid(own.domid))
    }

    /// The same backend, running in domain `domid` (tests; a backend made
    /// by [`XenBackend::with_store`] runs in domain 0, as the fake
    /// hypervisor's caller does).
    pub fn with_own_domid(mut self, domid: DomId) -> Self {
        self.own = domid;
        self
    }

    /// The domain relocd runs in.
    pub fn own_domid(&self) -> DomId {
        self.own
    }

    /// The same backend with guests' devices set up on `host` (tests).
    pub fn with_device_host(mut self, host: super::devices::DeviceHost) -> Self {
        self.devices = host;
        self
    }

    /// Where guests' device backends are set up.
    pub fn device_host(&self) -> &super::devices::DeviceHost {
        &self.devices
    }

    /// The same backend with libxl's records in `dir` (tests).
    pub fn with_userdata(mut self, dir: std::path::PathBuf) -> Self {
        self.userdata = dir;
        self
    }

    /// Where libxl keeps its records of domains.
    pub fn userdata(&self) -> &std::path::Path {
        &self.userdata
    }

    /// A fresh xenstore connection.
    pub fn store(&self) -> Result<Xenstore<Box<dyn Transport>>, XenstoreError> {
        (self.store)()
    }

    /// The hypervisor doorway.
    pub fn hypervisor(&self) -> &H {
        &self.xen
    }

    /// Every domain, or the hypercall's error.
    pub fn try_list(&self) -> Result<Vec<DomainInfo>, relocd_hypercall::Error> {
        let mut raw = Vec::new();
        self.xen.for_each_domain(|d| raw.push(*d))?;
        let mut xs = match (self.store)() {
            Ok(xs) => Some(xs),
            Err(e) => {
                tracing::warn!("domain names unavailable: {e}");
                None
            }
        };
        Ok(raw
            .iter()
            .map(|d| {
                let name = xs.as_mut().and_then(|xs| match domain_name(xs, d.domid) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        if e.store_errno() != Some(StoreErrno::NoEntry) {
                            tracing::warn!(domid = d.domid, "reading the domain's name: {e}");
                        }
                        None
                    }
                });
                domain_info(d, name)
            })
            .collect())
    }
}

/// `/local/domain/<id>/name`.
pub fn domain_name<T: Transport>(
    xs: &mut Xenstore<T>,
    domid: DomId,
) -> Result<String, XenstoreError> {
    xs.read_string(&format!("/local/domain/{domid}/name"))
}

/// Removes what the toolstack keeps of a destroyed domain in xenstore:
/// `/local/domain/<id>`, `/libxl/<id>` and its `/vm/...` node (`vm`, or the
/// one its `vm` entry names, read before anything is removed). Failures
/// are logged, not returned: the domain is gone either way.
pub fn forget_domain<T: Transport>(xs: &mut Xenstore<T>, domid: DomId, vm: Option<String>) {
    let vm = vm.or_else(|| xs.read_string(&format!("/local/domain/{domid}/vm")).ok());
    let paths = [format!("/local/domain/{domid}"), format!("/libxl/{domid}")];
    for p in paths
        .into_iter()
        .chain(vm.filter(|v| v.starts_with("/vm/")))
    {
        if let Err(e) = xs.rm(&p) {
            tracing::warn!(domid, "removing {p} from xenstore: {e}");
        }
    }
}

/// A domain as the daemon reports it: `name` from xenstore (`None`: dom0 is
/// [`DOM0_NAME`], others `(null)` as `xl list` prints a nameless domain).
pub fn domain_info(d: &relocd_hypercall::DomainInfo, name: Option<String>) -> DomainInfo {
    let name = name.unwrap_or_else(|| {
        if d.domid == 0 {
            DOM0_NAME.to_owned()
        } else {
            "(null)".to_owned()
        }
    });
    DomainInfo {
        id: u32::from(d.domid),
        name,
        memory_bytes: d.memory_kib().saturating_mul(1024),
        vcpus: d.online_vcpus,
        state: domain_state(d),
        steps: None,
    }
}

/// The run state, from the most final flag down.
pub fn domain_state(d: &relocd_hypercall::DomainInfo) -> DomainState {
    if d.dying() {
        DomainState::Dying
    } else if d.crashed() {
        DomainState::Crashed
    } else if d.shutdown() {
        DomainState::Shutdown
    } else if d.paused() {
        DomainState::Paused
    } else {
        DomainState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::xen::xenstore::fake::FakeXenstored;
    use crate::engine::Backend as _;
    use relocd_hypercall::fake::{FakeDomain, FakeXen};

    fn backend(entries: &'static [(&'static str, &'static str)]) -> XenBackend<FakeXen> {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 196608, 2));
        x.add_domain(FakeDomain::pv(5, 32768, 1));
        x.add_domain(FakeDomain::pv(9, 256, 3));
        XenBackend::with_store(
            x,
            Box::new(move || {
                Ok(Xenstore::new(
                    Box::new(FakeXenstored::new(entries)) as Box<dyn Transport>
                ))
            }),
        )
    }

    #[test]
    fn lists_every_domain_with_its_xenstore_name() {
        let b = backend(&[
            ("/local/domain/0/name", "Domain-0"),
            ("/local/domain/5/name", "e2e-guest"),
        ]);
        assert_eq!(b.name(), "xen");
        b.hypervisor().pause(9).unwrap();
        let l = b.list().unwrap();
        let got: Vec<_> = l
            .iter()
            .map(|d| {
                (
                    d.id,
                    d.name.as_str(),
                    d.memory_bytes >> 20,
                    d.vcpus,
                    d.state,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "Domain-0", 768, 2, DomainState::Running),
                (5, "e2e-guest", 128, 1, DomainState::Running),
                (9, "(null)", 1, 3, DomainState::Paused),
            ]
        );
    }

    #[test]
    fn without_xenstore_dom0_is_still_domain_0() {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 1));
        x.add_domain(FakeDomain::pv(2, 16, 1));
        let b = XenBackend::with_store(
            x,
            Box::new(|| Err(XenstoreError::BadRequest("no store in this test"))),
        );
        let names: Vec<_> = b.list().unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["Domain-0", "(null)"]);
    }

    #[test]
    fn states_follow_the_flags() {
        use relocd_hypercall::abi::domctl::dominf;
        let mut d = relocd_hypercall::DomainInfo::from(&Default::default());
        assert_eq!(domain_state(&d), DomainState::Running);
        d.flags = dominf::PAUSED;
        assert_eq!(domain_state(&d), DomainState::Paused);
        d.flags = dominf::SHUTDOWN;
        assert_eq!(domain_state(&d), DomainState::Shutdown);
        d.flags = dominf::SHUTDOWN | (3 << dominf::SHUTDOWN_SHIFT);
        assert_eq!(domain_state(&d), DomainState::Crashed);
        d.flags |= dominf::DYING;
        assert_eq!(domain_state(&d), DomainState::Dying);
    }
}
