//! Which calls the safe path accepts, where their guest handles are, and how
//! many bytes Xen may touch behind each.
//!
//! This table is what makes [`Hypervisor::domctl`](crate::Hypervisor::domctl)
//! and friends safe to expose: a doorway only issues a call listed here;
//! every handle slot of that call is either bound to a caller buffer at
//! least as long as Xen may access (checked from the payload's own counts),
//! or set to 0 (NULL: Xen then fails with `EFAULT`). Nothing a caller puts
//! in a payload can make Xen write outside memory the doorway owns.
//!
//! Public so that every doorway applies the same rules.

use crate::abi::domctl::{
    self, CpuPolicy, Domctl, GetPageFrameInfo3, SchedulerOp, ShadowOp, VcpuContext, VcpuExtState,
    VcpuMsr, VcpuMsrs,
};
use crate::abi::evtchn::{self, EvtchnAllocUnbound};
use crate::abi::grant_table::{self, GnttabSetupTable};
use crate::abi::memory::{self, MemoryReservation};
use crate::abi::sysctl::{self, GetDomainInfoList, Sysctl};
use crate::abi::xen::{hypercall, CpuidLeaf, MsrEntry, VcpuGuestContext};
use crate::error::{errno, Error, Op};
use crate::hypervisor::GuestBuf;
use crate::plain::PlainData;
use core::mem::{offset_of, size_of};

/// The handle slots of one call: (byte offset in the argument, bytes Xen may
/// access through it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handles {
    slots: [(usize, u64); 2],
    n: usize,
}

impl Handles {
    const NONE: Handles = Handles {
        slots: [(0, 0); 2],
        n: 0,
    };

    fn one(slot: usize, len: u64) -> Self {
        Handles {
            slots: [(slot, len), (0, 0)],
            n: 1,
        }
    }

    fn two(a: (usize, u64), b: (usize, u64)) -> Self {
        Handles {
            slots: [a, b],
            n: 2,
        }
    }

    /// The slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.slots.iter().take(self.n).copied()
    }

    /// Checks `bufs` against these slots: each buffer names a slot of the
    /// call, once, and is long enough.
    pub fn check(&self, op: Op, bufs: &[GuestBuf<'_>]) -> Result<(), Error> {
        for (i, b) in bufs.iter().enumerate() {
            let need = self
                .iter()
                .find(|&(slot, _)| slot == b.slot)
                .map(|(_, len)| len);
            let dup = bufs
                .get(..i)
                .is_some_and(|prev| prev.iter().any(|p| p.slot == b.slot));
            match need {
                Some(len) if !dup && b.data.len() as u64 >= len => {}
                _ => return Err(Error::new(op, errno::EINVAL)),
            }
        }
        Ok(())
    }

    /// Writes 0 into every slot of `arg` (the doorway's own copy of the
    /// argument), before the bound buffers' addresses are filled in.
    pub fn clear(&self, arg: &mut [u8]) {
        for (slot, _) in self.iter() {
            if let Some(s) = arg.get_mut(slot..slot + 8) {
                s.fill(0);
            }
        }
    }
}

fn times(count: u64, size: usize) -> u64 {
    count.saturating_mul(size as u64)
}

/// The handles of a domctl, or `EOPNOTSUPP` for a command the safe path
/// does not issue.
pub fn domctl_handles(d: &Domctl) -> Result<Handles, Error> {
    use domctl::cmd::*;
    let at = Domctl::union_offset;
    Ok(match d.cmd {
        CREATEDOMAIN | DESTROYDOMAIN | PAUSEDOMAIN | UNPAUSEDOMAIN | GETDOMAININFO | MAX_MEM
        | MAX_VCPUS | RESUMEDOMAIN | SET_ADDRESS_SIZE | GET_ADDRESS_SIZE | GETTSCINFO
        | SETTSCINFO | GETVCPUINFO | SETDOMAINHANDLE | GET_EXT_VCPUCONTEXT
        | SET_EXT_VCPUCONTEXT => Handles::NONE,
        SHADOW_OP => {
            let p: ShadowOp = d.payload();
            Handles::one(at(offset_of!(ShadowOp, dirty_bitmap)), p.pages.div_ceil(8))
        }
        GETVCPUCONTEXT | SETVCPUCONTEXT => Handles::one(
            at(offset_of!(VcpuContext, ctxt)),
            size_of::<VcpuGuestContext>() as u64,
        ),
        GETPAGEFRAMEINFO3 => {
            let p: GetPageFrameInfo3 = d.payload();
            Handles::one(at(offset_of!(GetPageFrameInfo3, array)), times(p.num, 8))
        }
        GETVCPUEXTSTATE | SETVCPUEXTSTATE => {
            let p: VcpuExtState = d.payload();
            Handles::one(at(offset_of!(VcpuExtState, buffer)), p.size)
        }
        GET_VCPU_MSRS | SET_VCPU_MSRS => {
            let p: VcpuMsrs = d.payload();
            Handles::one(
                at(offset_of!(VcpuMsrs, msrs)),
                times(p.msr_count.into(), size_of::<VcpuMsr>()),
            )
        }
        GET_CPU_POLICY | SET_CPU_POLICY => {
            let p: CpuPolicy = d.payload();
            Handles::two(
                (
                    at(offset_of!(CpuPolicy, leaves)),
                    times(p.nr_leaves.into(), size_of::<CpuidLeaf>()),
                ),
                (
                    at(offset_of!(CpuPolicy, msrs)),
                    times(p.nr_msrs.into(), size_of::<MsrEntry>()),
                ),
            )
        }
        // Only the credit/credit2 forms, which carry no handle (the
        // per-vCPU ones point at an array).
        SCHEDULER_OP => {
            let p: SchedulerOp = d.payload();
            match p.cmd {
                domctl::sched::OP_PUTINFO | domctl::sched::OP_GETINFO => Handles::NONE,
                _ => return Err(Error::new(Op::Domctl(SCHEDULER_OP), errno::EOPNOTSUPP)),
            }
        }
        other => return Err(Error::new(Op::Domctl(other), errno::EOPNOTSUPP)),
    })
}

/// The handles of a sysctl, or `EOPNOTSUPP`.
pub fn sysctl_handles(s: &Sysctl) -> Result<Handles, Error> {
    let at = Sysctl::union_offset;
    Ok(match s.cmd {
        sysctl::cmd::PHYSINFO => Handles::NONE,
        sysctl::cmd::GETDOMAININFOLIST => {
            let p: GetDomainInfoList = s.payload();
            let each = size_of::<domctl::GetDomainInfo>();
            Handles::one(
                at(offset_of!(GetDomainInfoList, buffer)),
                times(p.max_domains.into(), each),
            )
        }
        other => return Err(Error::new(Op::Sysctl(other), errno::EOPNOTSUPP)),
    })
}

/// The handles of a memory_op whose argument is `arg`, or `EOPNOTSUPP`
/// (unknown command) / `EINVAL` (argument of the wrong size).
pub fn memory_op_handles(cmd: u32, arg: &[u8]) -> Result<Handles, Error> {
    use memory::cmd::*;
    let op = Op::MemoryOp(cmd);
    let (len, handles) = match cmd {
        MAXIMUM_GPFN | CURRENT_RESERVATION | MAXIMUM_RESERVATION => (2, Handles::NONE),
        INCREASE_RESERVATION | DECREASE_RESERVATION | POPULATE_PHYSMAP => {
            let r = MemoryReservation::read_from(arg).ok_or(Error::new(op, errno::EINVAL))?;
            let bytes = times(r.nr_extents, 8);
            (
                size_of::<MemoryReservation>(),
                Handles::one(offset_of!(MemoryReservation, extent_start), bytes),
            )
        }
        _ => return Err(Error::new(op, errno::EOPNOTSUPP)),
    };
    if arg.len() != len {
        return Err(Error::new(op, errno::EINVAL));
    }
    Ok(handles)
}

/// The domain a memory_op with argument `arg` acts on, when it names one
/// (for [`Error::on`]: a denial then says which domain).
pub fn memory_op_domain(cmd: u32, arg: &[u8]) -> Option<crate::DomId> {
    use memory::cmd::*;
    match cmd {
        MAXIMUM_GPFN | CURRENT_RESERVATION | MAXIMUM_RESERVATION => crate::DomId::read_from(arg),
        INCREASE_RESERVATION | DECREASE_RESERVATION | POPULATE_PHYSMAP => {
            MemoryReservation::read_from(arg).map(|r| r.domid)
        }
        _ => None,
    }
}

/// The domain an `event_channel_op` with argument `arg` acts on
/// (`EVTCHNOP_alloc_unbound`'s `dom`), for [`Error::on`].
pub fn event_channel_op_domain(cmd: u32, arg: &[u8]) -> Option<crate::DomId> {
    match cmd {
        evtchn::cmd::ALLOC_UNBOUND => EvtchnAllocUnbound::read_from(arg).map(|a| a.dom),
        _ => None,
    }
}

/// `e`, noting domain `domid` when there is one.
pub fn on_domain(e: Error, domid: Option<crate::DomId>) -> Error {
    match domid {
        Some(d) => e.on(d),
        None => e,
    }
}

/// The handles of an `event_channel_op` whose argument is `arg`, or
/// `EOPNOTSUPP` (a command not issued) / `EINVAL` (argument of the wrong
/// size). Errors are `Op::Hypercall(EVENT_CHANNEL_OP)`.
///
/// Only `EVTCHNOP_alloc_unbound` is issued: it names the domain it acts on,
/// so a toolstack can allocate a port in the domain it builds. The other
/// commands act on the calling domain's own ports (`EVTCHNOP_close` has no
/// domain field: it would close one of *our* ports, e.g. a backend's), so
/// the safe path does not issue them.
pub fn event_channel_op_handles(cmd: u32, arg: &[u8]) -> Result<Handles, Error> {
    let op = Op::Hypercall(hypercall::EVENT_CHANNEL_OP);
    let len = match cmd {
        evtchn::cmd::ALLOC_UNBOUND => size_of::<EvtchnAllocUnbound>(),
        _ => return Err(Error::new(op, errno::EOPNOTSUPP)),
    };
    if arg.len() != len {
        return Err(Error::new(op, errno::EINVAL));
    }
    Ok(Handles::NONE)
}

/// The handles of a `grant_table_op` with one argument structure `arg`, or
/// `EOPNOTSUPP` / `EINVAL` as [`event_channel_op_handles`]. Errors are
/// `Op::Hypercall(GRANT_TABLE_OP)`.
///
/// Only `GNTTABOP_setup_table` is issued: it reads the argument and writes
/// `nr_frames` frame numbers through `frame_list`, and changes nothing of
/// the calling domain.
pub fn grant_table_op_handles(cmd: u32, arg: &[u8]) -> Result<Handles, Error> {
    let op = Op::Hypercall(hypercall::GRANT_TABLE_OP);
    match cmd {
        grant_table::cmd::SETUP_TABLE => {
            if arg.len() != size_of::<GnttabSetupTable>() {
                return Err(Error::new(op, errno::EINVAL));
            }
            let s = GnttabSetupTable::read_from(arg).ok_or(Error::new(op, errno::EINVAL))?;
            Ok(Handles::one(
                offset_of!(GnttabSetupTable, frame_list),
                times(s.nr_frames.into(), 8),
            ))
        }
        _ => Err(Error::new(op, errno::EOPNOTSUPP)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(pages: u64) -> Domctl {
        let p = ShadowOp {
            op: domctl::shadow::OP_PEEK,
            pages,
            ..Default::default()
        };
        Domctl::with_payload(domctl::cmd::SHADOW_OP, 1, &p)
    }

    const BITMAP: usize = Domctl::union_offset(offset_of!(ShadowOp, dirty_bitmap));

    #[test]
    fn a_bitmap_must_cover_the_pages_asked_for() {
        let h = domctl_handles(&shadow(100)).unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), [(BITMAP, 13)]);
        let op = Op::Domctl(domctl::cmd::SHADOW_OP);
        let mut ok = [0u8; 13];
        assert_eq!(h.check(op, &[GuestBuf::output(BITMAP, &mut ok)]), Ok(()));
        let mut short = [0u8; 12];
        let e = h
            .check(op, &[GuestBuf::output(BITMAP, &mut short)])
            .unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::EINVAL));
    }

    #[test]
    fn buffers_must_name_a_slot_of_the_call_once() {
        let h = domctl_handles(&shadow(8)).unwrap();
        let op = Op::Domctl(domctl::cmd::SHADOW_OP);
        let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
        assert!(h
            .check(op, &[GuestBuf::output(BITMAP + 8, &mut a)])
            .is_err());
        let two = [
            GuestBuf::output(BITMAP, &mut a),
            GuestBuf::output(BITMAP, &mut b),
        ];
        assert!(h.check(op, &two).is_err());
        // A call without handles takes no buffers.
        let none = domctl_handles(&Domctl::new(domctl::cmd::PAUSEDOMAIN, 1)).unwrap();
        assert!(none.check(op, &[GuestBuf::output(BITMAP, &mut a)]).is_err());
        assert_eq!(none.check(op, &[]), Ok(()));
    }

    #[test]
    fn clear_zeroes_every_handle_slot_only() {
        let p = CpuPolicy {
            nr_leaves: 2,
            nr_msrs: 1,
            leaves: 0xdead,
            msrs: 0xbeef,
            err_leaf: 7,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::GET_CPU_POLICY, 3, &p);
        let h = domctl_handles(&d).unwrap();
        assert_eq!(h.iter().map(|(_, len)| len).collect::<Vec<_>>(), [48, 16]);
        h.clear(d.as_bytes_mut());
        let q: CpuPolicy = d.payload();
        assert_eq!((q.leaves, q.msrs, q.nr_leaves, q.err_leaf), (0, 0, 2, 7));
    }

    #[test]
    fn msr_arrays_must_cover_the_count() {
        let p = VcpuMsrs {
            vcpu: 1,
            msr_count: 3,
            msrs: 0,
        };
        let d = Domctl::with_payload(domctl::cmd::GET_VCPU_MSRS, 2, &p);
        let slot = Domctl::union_offset(offset_of!(VcpuMsrs, msrs));
        let h = domctl_handles(&d).unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), [(slot, 48)]);
        let op = Op::Domctl(domctl::cmd::GET_VCPU_MSRS);
        let mut short = [0u8; 47];
        assert!(h.check(op, &[GuestBuf::output(slot, &mut short)]).is_err());
        // The handle left NULL is the count query.
        assert_eq!(h.check(op, &[]), Ok(()));
        let ext = Domctl::new(domctl::cmd::GET_EXT_VCPUCONTEXT, 2);
        assert_eq!(domctl_handles(&ext).unwrap().iter().count(), 0);
    }

    #[test]
    fn the_retired_set_max_evtchn_is_refused() {
        let d = Domctl::new(domctl::cmd::SET_MAX_EVTCHN, 1);
        assert_eq!(domctl_handles(&d).unwrap_err().errno, errno::EOPNOTSUPP);
    }

    #[test]
    fn unknown_commands_are_refused() {
        let e = domctl_handles(&Domctl::new(domctl::cmd::GETHVMCONTEXT, 1)).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Domctl(domctl::cmd::GETHVMCONTEXT), errno::EOPNOTSUPP)
        );
        assert!(sysctl_handles(&Sysctl::new(sysctl::cmd::READCONSOLE)).is_err());
        assert!(memory_op_handles(memory::cmd::MEMORY_MAP, &[]).is_err());
    }

    #[test]
    fn memory_op_arguments_must_have_their_size() {
        assert!(memory_op_handles(memory::cmd::MAXIMUM_GPFN, &[1, 0]).is_ok());
        let e = memory_op_handles(memory::cmd::MAXIMUM_GPFN, &[1, 0, 0, 0]).unwrap_err();
        assert_eq!(e.errno, errno::EINVAL);
        let r = MemoryReservation {
            nr_extents: 3,
            ..Default::default()
        };
        let h = memory_op_handles(memory::cmd::POPULATE_PHYSMAP, r.as_bytes()).unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), [(0, 24)]);
        assert!(memory_op_handles(memory::cmd::POPULATE_PHYSMAP, &r.as_bytes()[..31]).is_err());
    }

    #[test]
    fn only_alloc_unbound_is_an_admitted_event_channel_op() {
        let op = Op::Hypercall(hypercall::EVENT_CHANNEL_OP);
        let a = EvtchnAllocUnbound::default();
        let h = event_channel_op_handles(evtchn::cmd::ALLOC_UNBOUND, a.as_bytes()).unwrap();
        assert_eq!(h.iter().count(), 0);
        let mut b = [0u8; 8];
        assert!(h.check(op, &[GuestBuf::output(0, &mut b)]).is_err());
        let e = event_channel_op_handles(evtchn::cmd::ALLOC_UNBOUND, &[0; 12]).unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::EINVAL));
        // close would act on our own ports, send/bind on ours too.
        for cmd in [
            evtchn::cmd::CLOSE,
            evtchn::cmd::SEND,
            evtchn::cmd::BIND_INTERDOMAIN,
            evtchn::cmd::STATUS,
            99,
        ] {
            let e = event_channel_op_handles(cmd, &[0; 4]).unwrap_err();
            assert_eq!((e.op, e.errno), (op, errno::EOPNOTSUPP), "cmd {cmd}");
        }
    }

    #[test]
    fn setup_table_frame_list_must_cover_nr_frames() {
        let op = Op::Hypercall(hypercall::GRANT_TABLE_OP);
        let s = GnttabSetupTable {
            dom: 5,
            nr_frames: 3,
            ..Default::default()
        };
        let h = grant_table_op_handles(grant_table::cmd::SETUP_TABLE, s.as_bytes()).unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), [(16, 24)]);
        let (mut ok, mut short) = ([0u8; 24], [0u8; 23]);
        assert_eq!(h.check(op, &[GuestBuf::output(16, &mut ok)]), Ok(()));
        let e = h
            .check(op, &[GuestBuf::output(16, &mut short)])
            .unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::EINVAL));
        let e =
            grant_table_op_handles(grant_table::cmd::SETUP_TABLE, &s.as_bytes()[..20]).unwrap_err();
        assert_eq!(e.errno, errno::EINVAL);
        for cmd in [
            grant_table::cmd::MAP_GRANT_REF,
            grant_table::cmd::TRANSFER,
            grant_table::cmd::COPY,
            grant_table::cmd::QUERY_SIZE,
        ] {
            let e = grant_table_op_handles(cmd, s.as_bytes()).unwrap_err();
            assert_eq!((e.op, e.errno), (op, errno::EOPNOTSUPP), "cmd {cmd}");
        }
    }
}
