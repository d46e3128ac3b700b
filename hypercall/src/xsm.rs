//! What Xen's security policy checks: the FLASK permission (`class:perm`)
//! Xen 4.17's FLASK module (`xen/xsm/flask/hooks.c`) asks the AVC for, a
//! operation relocd issues. A denial (`EACCES`) then names what the policy
//! lacks, in the words of `xl dmesg`'s `avc: denied { perm } ... tclass=class`
//! line and of the policy's `allow` rules.

use crate::abi::domctl::cmd as domctl;
use crate::abi::memory::cmd as memory;
use crate::abi::sysctl::cmd as sysctl;
use crate::abi::xen::hypercall;
use crate::error::Op;

/// The permission FLASK checks for `op` (on the domain it acts on, or on
/// Xen itself for a sysctl), or `None` where relocd does not know one (an
/// operation it does not issue) or where it depends on arguments the
/// [`Op`] does not carry; such denials still name the operation.
pub const fn flask_permission(op: Op) -> Option<&'static str> {
    Some(match op {
        Op::Domctl(c) => match c {
            domctl::CREATEDOMAIN => "domain:create",
            domctl::DESTROYDOMAIN => "domain:destroy",
            domctl::PAUSEDOMAIN => "domain:pause",
            domctl::UNPAUSEDOMAIN => "domain:unpause",
            domctl::RESUMEDOMAIN => "domain:resume",
            domctl::GETDOMAININFO => "domain:getdomaininfo",
            domctl::MAX_MEM => "domain:setdomainmaxmem",
            domctl::MAX_VCPUS => "domain:max_vcpus",
            domctl::SETDOMAINHANDLE => "domain:setdomainhandle",
            domctl::GETVCPUINFO => "domain:getvcpuinfo",
            domctl::SETVCPUCONTEXT
            | domctl::SET_EXT_VCPUCONTEXT
            | domctl::SETVCPUEXTSTATE
            | domctl::SET_VCPU_MSRS => "domain:setvcpucontext",
            domctl::GETVCPUCONTEXT
            | domctl::GET_EXT_VCPUCONTEXT
            | domctl::GETVCPUEXTSTATE
            | domctl::GET_VCPU_MSRS => "domain:getvcpucontext",
            domctl::SET_ADDRESS_SIZE => "domain:setaddrsize",
            domctl::GET_ADDRESS_SIZE => "domain:getaddrsize",
            domctl::GETPAGEFRAMEINFO3 => "mmu:pageinfo",
            domctl::GETTSCINFO => "domain2:gettsc",
            domctl::SETTSCINFO => "domain2:settsc",
            domctl::GET_CPU_POLICY => "domain2:get_cpu_policy",
            domctl::SET_CPU_POLICY => "domain2:set_cpu_policy",
            domctl::SETVCPUAFFINITY | domctl::SETNODEAFFINITY => "domain:setaffinity",
            domctl::GETVCPUAFFINITY | domctl::GETNODEAFFINITY => "domain:getaffinity",
            domctl::SUBSCRIBE => "domain:set_misc_info",
            // enable/disable/logdirty by sub-operation; relocd's are
            // log-dirty's (ENABLE_LOGDIRTY, CLEAN, PEEK) and OFF
            domctl::SHADOW_OP => "shadow:logdirty (or shadow:disable to end log-dirty)",
            _ => return None,
        },
        Op::Sysctl(sysctl::PHYSINFO) => "xen:physinfo",
        Op::MemoryOp(c) => match c {
            memory::INCREASE_RESERVATION
            | memory::DECREASE_RESERVATION
            | memory::POPULATE_PHYSMAP => "mmu:adjust",
            memory::MAXIMUM_GPFN | memory::CURRENT_RESERVATION | memory::MAXIMUM_RESERVATION => {
                "mmu:stat"
            }
            memory::MEMORY_MAP => "mmu:memorymap",
            _ => return None,
        },
        Op::MmuextOp => "mmu:mmuext_op (and mmu:pinpage to pin page tables)",
        Op::MmuUpdate => "mmu:updatemp (or mmu:map_write for page-table writes)",
        Op::MapForeign => "mmu:map_read (and mmu:map_write to write)",
        Op::Hypercall(hypercall::EVENT_CHANNEL_OP) => {
            "event:create on the new channel (and event:bind for its remote domain)"
        }
        Op::Hypercall(hypercall::GRANT_TABLE_OP) => "grant:setup",
        _ => return None,
    })
}

/// FLASK's initial SID `domU` (`SECINITSID_DOMU`, fixed by the order of
/// Xen's `xsm/flask/policy/initial_sids`): the label the policy gives a
/// guest by default (`system_u:system_r:domU_t` in Xen's example policy).
/// A toolstack that is not dom0 must name a label when it creates a
/// domain: with `ssidref` 0, Xen gives a domain created by anything but
/// itself `unlabeled_t`. Without FLASK, `ssidref` is ignored.
pub const SECINITSID_DOMU: u32 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operations_of_a_migration_have_their_permissions() {
        let p = |op| flask_permission(op).unwrap_or("none");
        assert_eq!(p(Op::Domctl(domctl::PAUSEDOMAIN)), "domain:pause");
        assert_eq!(p(Op::Domctl(domctl::GETDOMAININFO)), "domain:getdomaininfo");
        assert_eq!(p(Op::Domctl(domctl::GETPAGEFRAMEINFO3)), "mmu:pageinfo");
        assert_eq!(
            p(Op::Domctl(domctl::GETVCPUEXTSTATE)),
            "domain:getvcpucontext"
        );
        assert_eq!(
            p(Op::Domctl(domctl::SET_VCPU_MSRS)),
            "domain:setvcpucontext"
        );
        assert_eq!(p(Op::Domctl(domctl::GETTSCINFO)), "domain2:gettsc");
        assert_eq!(p(Op::MemoryOp(memory::POPULATE_PHYSMAP)), "mmu:adjust");
        assert_eq!(p(Op::MemoryOp(memory::MAXIMUM_GPFN)), "mmu:stat");
        assert_eq!(p(Op::Sysctl(sysctl::PHYSINFO)), "xen:physinfo");
        assert!(p(Op::MapForeign).starts_with("mmu:map_read"));
        assert!(p(Op::Domctl(domctl::SHADOW_OP)).starts_with("shadow:logdirty"));
        // not issued by relocd, so not guessed
        assert_eq!(flask_permission(Op::Domctl(domctl::GDBSX_GUESTMEMIO)), None);
        assert_eq!(flask_permission(Op::AllocBuffer), None);
    }
}
