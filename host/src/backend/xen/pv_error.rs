//! [`PvSaveError`]: why taking a PV guest out of Xen failed.

use relocd_hypercall::DomId;

/// Why reading a PV guest failed. `Copy`, as the core's guest traits want.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PvSaveError {
    /// A hypercall failed.
    #[error(transparent)]
    Xen(#[from] relocd_hypercall::Error),
    /// Xen refused to map a frame of the guest.
    #[error("mapping {what} of the guest failed (errno {errno})")]
    Map {
        /// What was being mapped.
        what: &'static str,
        /// The errno of the first frame that failed.
        errno: i32,
    },
    /// The guest's p2m could not be read or makes no sense.
    #[error("the guest's p2m: {0}")]
    P2m(&'static str),
    /// A page table names a frame that is not the guest's, with the guest
    /// suspended.
    #[error("page table at pfn {pfn:#x}: {err}")]
    PageTable {
        /// The page table's pfn.
        pfn: u64,
        /// What is wrong with it.
        err: relocd_core::pv::PvError,
    },
    /// A vCPU's state names a frame that is not the guest's.
    #[error("vCPU {vcpu}: {what}")]
    Vcpu {
        /// The vCPU.
        vcpu: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// xenstore failed (the message is in the daemon's log).
    #[error("xenstore: {0}")]
    Store(&'static str),
    /// The guest did not answer the suspend request in time.
    #[error(
        "domain {domid} did not suspend within {secs} s (is its kernel PV-aware and running?)"
    )]
    SuspendTimeout {
        /// The domain.
        domid: DomId,
        /// The wait.
        secs: u64,
    },
    /// The domain shut down for another reason than suspend, or vanished.
    #[error("domain {domid} {what}")]
    Gone {
        /// The domain.
        domid: DomId,
        /// What happened.
        what: &'static str,
    },
    /// A kind of guest relocd does not save.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A call out of order (a caller's mistake).
    #[error("out of order: {0}")]
    Order(&'static str),
}

impl PvSaveError {
    /// Frame `what` of domain `domid` could not be mapped (`errno`, the
    /// frame's own result): a denial by Xen's security policy is Xen's
    /// error, naming the domain and the FLASK permission.
    pub fn map(what: &'static str, errno: i32, domid: DomId) -> Self {
        let e = relocd_hypercall::Error::new(relocd_hypercall::Op::MapForeign, errno).on(domid);
        if e.denied_by_policy() {
            PvSaveError::Xen(e)
        } else {
            PvSaveError::Map { what, errno }
        }
    }
}
