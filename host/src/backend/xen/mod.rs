//! relocd on a real Xen: the daemon's Xen backend, a xenstore client, and
//! the `xen-probe` diagnostic.
//!
//! - [`xenstore`]: the xenstore wire protocol over xenstored's socket or
//!   `/dev/xen/xenbus` (no libxenstore).
//! - [`backend`]: [`XenBackend`], a real Xen through `relocd-hypercall`
//!   (`relocd serve --backend xen`); [`hooks`]: its hooks of the engine
//!   ([`crate::engine::Backend`]).
//! - [`probe`]: `relocd xen-probe DOMAIN`: pause, log-dirty and foreign
//!   mapping tried on a running guest.
//! - [`p2m`], [`pv_source`]: a running 64-bit PV guest read out of Xen
//!   (its p2m, its pages with page tables normalised, its vCPUs);
//!   [`pv_sink`]: one built into Xen from a stream.
//! - [`devices`]: a guest's vifs and vbds as libxl sets them up (trees,
//!   hotplug scripts, teardown).
//! - [`libxl`]: libxl's records of domains (the xl configuration a save
//!   file carries).

pub mod backend;
pub mod devices;
pub mod hooks;
pub mod libxl;
pub mod own_domain;
pub mod p2m;
pub mod probe;
pub mod pv_error;
pub mod pv_sink;
pub mod pv_source;
#[cfg(test)]
mod save_tests;
pub mod sched;
#[cfg(test)]
pub(crate) mod test_guest;
#[cfg(test)]
mod tests;
pub mod xenstore;
#[cfg(test)]
mod xsm_tests;

pub use backend::XenBackend;

use relocd_hypercall::backend::privcmd::Privcmd;
use relocd_hypercall::{errno, ErrorKind};

/// Xen could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum XenUnavailable {
    /// No privcmd device: not a Xen dom0 (or the module is not loaded).
    #[error(
        "no Xen here: /dev/xen/privcmd is missing ({0}); run in a Xen dom0 with xen-privcmd loaded"
    )]
    NoXen(relocd_hypercall::Error),
    /// privcmd is there but could not be opened.
    #[error("cannot open Xen's privcmd: {0}")]
    Open(relocd_hypercall::Error),
    /// The domain relocd runs in could not be found.
    #[error("{0}")]
    OwnDomain(own_domain::OwnDomainError),
}

/// Opens `/dev/xen/privcmd`, with a plain message where there is no Xen.
pub fn open_privcmd() -> Result<Privcmd, XenUnavailable> {
    Privcmd::open().map_err(|e| {
        if e.kind() == ErrorKind::NotFound || matches!(e.errno, errno::ENODEV | errno::ENXIO) {
            XenUnavailable::NoXen(e)
        } else {
            XenUnavailable::Open(e)
        }
    })
}

/// `relocd xen-probe DOMAIN`: prints a line a check; the exit status is 0
/// when every check passed, 1 when one failed, 2 when the probe could not
/// start.
pub fn probe_main(domain: &str) -> u8 {
    let xen = match open_privcmd() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("relocd xen-probe: {e}");
            return 2;
        }
    };
    let mut xs = match xenstore::Xenstore::open() {
        Ok(xs) => xs,
        Err(e) => {
            eprintln!("relocd xen-probe: {e}");
            return 2;
        }
    };
    let domid = match probe::resolve_domain(&xen, Some(&mut xs), domain) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("relocd xen-probe: {e}");
            return 2;
        }
    };
    println!(
        "xen-probe: domain {domain} (id {domid}); xenstore through {}",
        xs.via_path()
    );
    let mut wait = || std::thread::sleep(std::time::Duration::from_secs(1));
    match probe::run(&xen, &mut xs, domid, &mut wait) {
        Ok(checks) => {
            for c in &checks {
                println!("{c}");
            }
            let failed = checks.iter().filter(|c| !c.ok).count();
            println!(
                "xen-probe: {} of {} checks passed",
                checks.len() - failed,
                checks.len()
            );
            u8::from(failed > 0)
        }
        Err(e) => {
            eprintln!("relocd xen-probe: {e}");
            2
        }
    }
}
