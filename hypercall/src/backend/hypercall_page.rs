//! The doorway of a bare PV or PVH domain: hypercalls through the
//! hypercall page Xen fills in at boot.
//!
//! **Not available yet.** Every call returns
//! `Error { op: Op::HypercallPage, errno: ENOSYS }` (kind
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)). The module
//! exists so that code generic over [`Hypervisor`] builds for
//! `x86_64-unknown-none`; the real thing needs a hypercall page linked into
//! the image (what `xen-sys` expects from its user), which no relocd build
//! has yet.

use crate::abi::domctl::Domctl;
use crate::abi::sysctl::Sysctl;
use crate::abi::xen::{DomId, MmuUpdate, MmuextOp, XenPfn, PAGE_SIZE};
use crate::error::{errno, Error, Op};
use crate::hypervisor::{ForeignPages, GuestBuf, Hypervisor, Prot};

const UNAVAILABLE: Error = Error::new(Op::HypercallPage, errno::ENOSYS);

/// The hypercall-page doorway (a stub: see the module documentation).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct HypercallPage;

impl HypercallPage {
    /// Would locate the hypercall page; today always fails with `ENOSYS`.
    pub fn open() -> Result<Self, Error> {
        Err(UNAVAILABLE)
    }
}

/// A foreign mapping through the hypercall page; none can exist yet.
#[derive(Debug)]
pub enum NoMapping {}

impl ForeignPages for NoMapping {
    fn len(&self) -> usize {
        match *self {}
    }
    fn page_error(&self, _: usize) -> Option<i32> {
        match *self {}
    }
    fn read_page(&self, _: usize, _: &mut [u8; PAGE_SIZE]) -> Result<(), Error> {
        match *self {}
    }
    fn write_page(&mut self, _: usize, _: &[u8; PAGE_SIZE]) -> Result<(), Error> {
        match *self {}
    }
}

impl Hypervisor for HypercallPage {
    type Mapping = NoMapping;

    fn domctl(&self, _: &mut Domctl, _: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        Err(UNAVAILABLE)
    }
    fn sysctl(&self, _: &mut Sysctl, _: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        Err(UNAVAILABLE)
    }
    fn memory_op(&self, _: u32, _: &mut [u8], _: &mut [GuestBuf<'_>]) -> Result<u64, Error> {
        Err(UNAVAILABLE)
    }
    unsafe fn mmuext_op(&self, _: &[MmuextOp], _: DomId) -> Result<(), Error> {
        Err(UNAVAILABLE)
    }
    unsafe fn mmu_update(&self, _: &[MmuUpdate], _: DomId) -> Result<(), Error> {
        Err(UNAVAILABLE)
    }
    fn map_foreign(&self, _: DomId, _: &[XenPfn], _: Prot) -> Result<NoMapping, Error> {
        Err(UNAVAILABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, XenOps};

    #[test]
    fn every_call_says_unavailable() {
        assert_eq!(
            HypercallPage::open().unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        let e = HypercallPage.pause(1).unwrap_err();
        assert_eq!((e.op, e.errno), (Op::HypercallPage, errno::ENOSYS));
        assert!(e.to_string().contains("not available"), "{e}");
        assert!(HypercallPage.map_foreign(1, &[0], Prot::Read).is_err());
    }
}
