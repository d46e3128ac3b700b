//! A domain's scheduling parameters through `XEN_DOMCTL_scheduler_op`:
//! the credit and credit2 schedulers' weight and cap, read before a
//! migration, set on the new domain, capped and restored by
//! auto-converge. A domain under another scheduler (RTDS, null, ARINC653)
//! has none of these: reading gives `None`, and nothing is set.

use relocd_core::guest::SchedParams;
use relocd_hypercall::abi::domctl::SchedCredit;
use relocd_hypercall::{errno, DomId, Error, Hypervisor, XenOps};

/// The domain's weight and cap and its scheduler's id; `None` when it is
/// run by neither credit nor credit2.
pub fn get<H: Hypervisor>(xen: &H, domid: DomId) -> Result<Option<(u32, SchedParams)>, Error> {
    match xen.sched_credit(domid) {
        Ok((id, c)) => Ok(Some((
            id,
            SchedParams {
                weight: c.weight,
                cap: c.cap,
            },
        ))),
        Err(e) if e.errno == errno::EINVAL => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets the domain's weight and cap; `false` when it is run by neither
/// credit nor credit2 (nothing set).
pub fn set<H: Hypervisor>(xen: &H, domid: DomId, p: SchedParams) -> Result<bool, Error> {
    let Some((id, _)) = get(xen, domid)? else {
        return Ok(false);
    };
    xen.set_sched_credit(
        domid,
        id,
        SchedCredit {
            weight: p.weight,
            cap: p.cap,
        },
    )?;
    Ok(true)
}
