//! Safe, typed wrappers over [`Hypervisor`]: what migration needs, one
//! method per operation, with Xen's quirks handled in one place.

use crate::abi::domctl::{
    self, dominf, shadow, AddressSize, CpuPolicy, CreateDomain, Domctl, ExtVcpuContextRaw,
    GetDomainInfo, GetPageFrameInfo3, MaxMem, MaxVcpus, SchedCredit, SchedulerOp, SetDomainHandle,
    ShadowOp, TscInfo, VcpuContext, VcpuExtState, VcpuMsr, VcpuMsrs, XEN_INVALID_MAX_VCPU_ID,
};
use crate::abi::evtchn::{self, EvtchnAllocUnbound};
use crate::abi::grant_table::{self, gntst, GnttabSetupTable};
use crate::abi::memory::{self, MemoryReservation};
use crate::abi::sysctl::{self, GetDomainInfoList, PhysInfo, Sysctl};
use crate::abi::xen::{
    hypercall, mmuext, shutdown, CpuidLeaf, DomId, DomainHandle, MmuextOp, MsrEntry,
    VcpuGuestContext, XenPfn, DOMID_FIRST_RESERVED, PAGE_SIZE,
};
use crate::error::{errno, Error, Op};
use crate::hypervisor::{GuestBuf, Hypervisor};
use crate::plain::{slice_as_bytes, slice_as_bytes_mut, PlainData};
use core::mem::offset_of;

/// Xen 4.17 refuses `getpageframeinfo3` batches larger than this (`E2BIG`).
pub const PFINFO_BATCH_MAX: usize = 1024;

/// Domains fetched per `getdomaininfolist` call by
/// [`XenOps::for_each_domain`].
pub const DOMAIN_LIST_BATCH: usize = 32;

/// A domain as `getdomaininfo` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: DomId,
    /// `XEN_DOMINF_*` ([`dominf`]), raw.
    pub flags: u32,
    /// Pages allocated (what `xl list` shows as memory, with
    /// `outstanding_pages`).
    pub tot_pages: u64,
    /// Page limit.
    pub max_pages: u64,
    /// Claimed, not yet allocated pages.
    pub outstanding_pages: u64,
    /// Shared pages.
    pub shr_pages: u64,
    /// Paged-out pages.
    pub paged_pages: u64,
    /// GMFN of the shared-info page.
    pub shared_info_frame: u64,
    /// CPU time used, in ns.
    pub cpu_time_ns: u64,
    /// vCPUs online (`xl list`'s VCPUs column).
    pub online_vcpus: u32,
    /// Highest vCPU id in use; `None` when the domain has no vCPUs.
    pub max_vcpu_id: Option<u32>,
    /// XSM security id.
    pub ssidref: u32,
    /// UUID.
    pub handle: DomainHandle,
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address width.
    pub gpaddr_bits: u8,
}

impl From<&GetDomainInfo> for DomainInfo {
    fn from(r: &GetDomainInfo) -> Self {
        DomainInfo {
            domid: r.domain,
            flags: r.flags,
            tot_pages: r.tot_pages,
            max_pages: r.max_pages,
            outstanding_pages: r.outstanding_pages,
            shr_pages: r.shr_pages,
            paged_pages: r.paged_pages,
            shared_info_frame: r.shared_info_frame,
            cpu_time_ns: r.cpu_time,
            online_vcpus: r.nr_online_vcpus,
            max_vcpu_id: (r.max_vcpu_id != XEN_INVALID_MAX_VCPU_ID).then_some(r.max_vcpu_id),
            ssidref: r.ssidref,
            handle: r.handle,
            cpupool: r.cpupool,
            gpaddr_bits: r.gpaddr_bits,
        }
    }
}

impl DomainInfo {
    fn flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }
    /// Scheduled to die.
    pub fn dying(&self) -> bool {
        self.flag(dominf::DYING)
    }
    /// An HVM (or PVH) guest rather than PV.
    pub fn hvm(&self) -> bool {
        self.flag(dominf::HVM_GUEST)
    }
    /// The guest has shut down.
    pub fn shutdown(&self) -> bool {
        self.flag(dominf::SHUTDOWN)
    }
    /// Paused by the toolstack.
    pub fn paused(&self) -> bool {
        self.flag(dominf::PAUSED)
    }
    /// Blocked waiting for an event.
    pub fn blocked(&self) -> bool {
        self.flag(dominf::BLOCKED)
    }
    /// Running on a CPU.
    pub fn running(&self) -> bool {
        self.flag(dominf::RUNNING)
    }
    /// Being debugged.
    pub fn debugged(&self) -> bool {
        self.flag(dominf::DEBUGGED)
    }
    /// A xenstore domain.
    pub fn xs_domain(&self) -> bool {
        self.flag(dominf::XS_DOMAIN)
    }
    /// Uses hardware-assisted paging.
    pub fn hap(&self) -> bool {
        self.flag(dominf::HAP)
    }
    /// The guest's shutdown code (`SHUTDOWN_*`), when it has shut down.
    pub fn shutdown_reason(&self) -> Option<u8> {
        let code = (self.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK;
        // The mask keeps 8 bits, so the conversion cannot fail.
        self.shutdown()
            .then(|| u8::try_from(code).unwrap_or(u8::MAX))
    }
    /// Shut down with `SHUTDOWN_crash`.
    pub fn crashed(&self) -> bool {
        self.shutdown_reason() == Some(shutdown::CRASH)
    }
    /// Memory in KiB as `xl list` counts it (allocated plus claimed).
    pub fn memory_kib(&self) -> u64 {
        self.tot_pages
            .saturating_add(self.outstanding_pages)
            .saturating_mul(PAGE_SIZE as u64 / 1024)
    }
    /// The six-letter state column of `xl list` (`r`unning, `b`locked,
    /// `p`aused, `s`hutdown, `c`rashed, `d`ying; `-` when not).
    pub fn xl_state(&self) -> [u8; 6] {
        let crashed = self.crashed();
        let pick = |on: bool, c: u8| if on { c } else { b'-' };
        [
            pick(self.running(), b'r'),
            pick(self.blocked(), b'b'),
            pick(self.paused(), b'p'),
            pick(self.shutdown() && !crashed, b's'),
            pick(crashed, b'c'),
            pick(self.dying(), b'd'),
        ]
    }
}

/// What a log-dirty CLEAN or PEEK returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Bits of the bitmap Xen filled (the guest's p2m size, at most the
    /// bitmap's size).
    pub pages: u64,
    /// Faults since the last CLEAN.
    pub fault_count: u32,
    /// Pages dirtied since the last CLEAN.
    pub dirty_count: u32,
}

/// A vCPU's extended context (`struct xen_domctl_ext_vcpucontext`) as
/// `XEN_DOMCTL_get_ext_vcpucontext` filled it.
///
/// [`ExtVcpuContext::as_bytes`] is the body libxc's saver puts in an
/// `X86_PV_VCPU_EXTENDED` record after the 8-byte vCPU header, and what
/// [`XenOps::set_ext_vcpu_context`] takes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtVcpuContext {
    raw: ExtVcpuContextRaw,
}

impl ExtVcpuContext {
    /// Wraps a structure (e.g. one built for a test or a fake).
    pub fn from_raw(raw: ExtVcpuContextRaw) -> Self {
        ExtVcpuContext { raw }
    }

    /// The structure's `size` field: how many of its bytes Xen filled.
    pub fn size(&self) -> u32 {
        self.raw.size
    }

    /// The first [`ExtVcpuContext::size`] bytes of the structure (never
    /// more than the structure's 64 bytes). Empty when Xen reported size 0:
    /// libxc then writes no `X86_PV_VCPU_EXTENDED` record for the vCPU.
    pub fn as_bytes(&self) -> &[u8] {
        let all = PlainData::as_bytes(&self.raw);
        let n = usize::try_from(self.raw.size).map_or(all.len(), |n| n.min(all.len()));
        all.get(..n).unwrap_or(all)
    }

    /// The whole structure, fields typed.
    pub fn raw(&self) -> &ExtVcpuContextRaw {
        &self.raw
    }
}

const SHADOW_BITMAP_SLOT: usize = Domctl::union_offset(offset_of!(ShadowOp, dirty_bitmap));
const PFINFO_SLOT: usize = Domctl::union_offset(offset_of!(GetPageFrameInfo3, array));
const VCPUCTXT_SLOT: usize = Domctl::union_offset(offset_of!(VcpuContext, ctxt));
const DOMLIST_SLOT: usize = Sysctl::union_offset(offset_of!(GetDomainInfoList, buffer));
const POLICY_LEAVES_SLOT: usize = Domctl::union_offset(offset_of!(CpuPolicy, leaves));
const POLICY_MSRS_SLOT: usize = Domctl::union_offset(offset_of!(CpuPolicy, msrs));
const EXTSTATE_SLOT: usize = Domctl::union_offset(offset_of!(VcpuExtState, buffer));
const MSRS_SLOT: usize = Domctl::union_offset(offset_of!(VcpuMsrs, msrs));
const EXTENT_SLOT: usize = offset_of!(MemoryReservation, extent_start);
const FRAME_LIST_SLOT: usize = offset_of!(GnttabSetupTable, frame_list);

/// Page-table pins sent per `mmuext_op` call by [`XenOps::pin_page_tables`].
const PIN_BATCH: usize = 64;

/// The typed operations, for every [`Hypervisor`].
pub trait XenOps: Hypervisor {
    /// `XEN_DOMCTL_getdomaininfo` for exactly `domid`.
    ///
    /// Xen 4.17 answers with the next domain at or above `domid` when
    /// `domid` does not exist; that is turned into `ESRCH` here.
    fn domain_info(&self, domid: DomId) -> Result<DomainInfo, Error> {
        let op = Op::Domctl(domctl::cmd::GETDOMAININFO);
        let mut d = Domctl::new(domctl::cmd::GETDOMAININFO, domid);
        self.domctl(&mut d, &mut [])?;
        let info: GetDomainInfo = d.payload();
        if info.domain != domid {
            return Err(Error::new(op, errno::ESRCH));
        }
        Ok(DomainInfo::from(&info))
    }

    /// `XEN_SYSCTL_getdomaininfolist`: fills `out` with the domains from
    /// `first` up; returns how many were written.
    fn domain_info_list(&self, first: DomId, out: &mut [GetDomainInfo]) -> Result<usize, Error> {
        let op = Op::Sysctl(sysctl::cmd::GETDOMAININFOLIST);
        let max = u32::try_from(out.len()).map_err(|_| Error::new(op, errno::E2BIG))?;
        let arg = GetDomainInfoList {
            first_domain: first,
            max_domains: max,
            ..Default::default()
        };
        let mut s = Sysctl::with_payload(sysctl::cmd::GETDOMAININFOLIST, &arg);
        self.sysctl(
            &mut s,
            &mut [GuestBuf::output(DOMLIST_SLOT, slice_as_bytes_mut(out))],
        )?;
        let n = s.payload::<GetDomainInfoList>().num_domains;
        let n = usize::try_from(n).map_err(|_| Error::new(op, errno::ERANGE))?;
        if n > out.len() {
            return Err(Error::new(op, errno::ERANGE));
        }
        Ok(n)
    }

    /// Every domain, in id order, through `XEN_SYSCTL_getdomaininfolist` in
    /// batches of [`DOMAIN_LIST_BATCH`] (no allocation): what `xl list`
    /// walks. Returns how many domains `f` saw.
    fn for_each_domain(&self, mut f: impl FnMut(&DomainInfo)) -> Result<usize, Error> {
        let mut batch = [GetDomainInfo::default(); DOMAIN_LIST_BATCH];
        let (mut first, mut seen) = (0u16, 0usize);
        loop {
            let n = self.domain_info_list(first, &mut batch)?;
            let got = batch.get(..n).unwrap_or(&[]);
            for raw in got {
                f(&DomainInfo::from(raw));
            }
            seen += got.len();
            // Ids only grow, so a short batch or the last id ends the walk.
            match got.last() {
                Some(last) if n == DOMAIN_LIST_BATCH && last.domain < DOMID_FIRST_RESERVED - 1 => {
                    first = last.domain + 1
                }
                _ => return Ok(seen),
            }
        }
    }

    /// `XEN_SYSCTL_physinfo`.
    fn physinfo(&self) -> Result<PhysInfo, Error> {
        let mut s = Sysctl::new(sysctl::cmd::PHYSINFO);
        self.sysctl(&mut s, &mut [])?;
        Ok(s.payload())
    }

    /// `XEN_DOMCTL_pausedomain`.
    fn pause(&self, domid: DomId) -> Result<(), Error> {
        self.domctl(&mut Domctl::new(domctl::cmd::PAUSEDOMAIN, domid), &mut [])
    }

    /// `XEN_DOMCTL_unpausedomain`.
    fn unpause(&self, domid: DomId) -> Result<(), Error> {
        self.domctl(&mut Domctl::new(domctl::cmd::UNPAUSEDOMAIN, domid), &mut [])
    }

    /// `XEN_DOMCTL_destroydomain`.
    fn destroy(&self, domid: DomId) -> Result<(), Error> {
        self.domctl(&mut Domctl::new(domctl::cmd::DESTROYDOMAIN, domid), &mut [])
    }

    /// `XEN_DOMCTL_createdomain`: creates a paused domain with id `domid`,
    /// or a free id Xen picks when `domid` is 0; returns the id.
    fn create_domain(&self, domid: DomId, config: &CreateDomain) -> Result<DomId, Error> {
        let mut d = Domctl::with_payload(domctl::cmd::CREATEDOMAIN, domid, config);
        self.domctl(&mut d, &mut [])?;
        Ok(d.domain)
    }

    /// `XEN_DOMCTL_get_cpu_policy`: fills `leaves` and `msrs`; returns how
    /// many of each Xen wrote (`ENOBUFS` when an array is too short).
    fn cpu_policy(
        &self,
        domid: DomId,
        leaves: &mut [CpuidLeaf],
        msrs: &mut [MsrEntry],
    ) -> Result<(usize, usize), Error> {
        let op = Op::Domctl(domctl::cmd::GET_CPU_POLICY);
        let too_big = || Error::new(op, errno::E2BIG);
        let p = CpuPolicy {
            nr_leaves: u32::try_from(leaves.len()).map_err(|_| too_big())?,
            nr_msrs: u32::try_from(msrs.len()).map_err(|_| too_big())?,
            ..Default::default()
        };
        let (nl, nm) = (leaves.len(), msrs.len());
        let mut d = Domctl::with_payload(domctl::cmd::GET_CPU_POLICY, domid, &p);
        self.domctl(
            &mut d,
            &mut [
                GuestBuf::output(POLICY_LEAVES_SLOT, slice_as_bytes_mut(leaves)),
                GuestBuf::output(POLICY_MSRS_SLOT, slice_as_bytes_mut(msrs)),
            ],
        )?;
        let r: CpuPolicy = d.payload();
        let (l, m) = (r.nr_leaves as usize, r.nr_msrs as usize);
        if l > nl || m > nm {
            return Err(Error::new(op, errno::ERANGE));
        }
        Ok((l, m))
    }

    /// `XEN_DOMCTL_set_cpu_policy`. When Xen's audit refuses the policy
    /// the error is Xen's; the leaf or MSR it objected to is not kept.
    fn set_cpu_policy(
        &self,
        domid: DomId,
        leaves: &[CpuidLeaf],
        msrs: &[MsrEntry],
    ) -> Result<(), Error> {
        let op = Op::Domctl(domctl::cmd::SET_CPU_POLICY);
        let too_big = || Error::new(op, errno::E2BIG);
        let p = CpuPolicy {
            nr_leaves: u32::try_from(leaves.len()).map_err(|_| too_big())?,
            nr_msrs: u32::try_from(msrs.len()).map_err(|_| too_big())?,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::SET_CPU_POLICY, domid, &p);
        self.domctl(
            &mut d,
            &mut [
                GuestBuf::input(POLICY_LEAVES_SLOT, slice_as_bytes(leaves)),
                GuestBuf::input(POLICY_MSRS_SLOT, slice_as_bytes(msrs)),
            ],
        )
    }

    /// `XEN_DOMCTL_getvcpuextstate` with an empty buffer: the xfeature mask
    /// and the size in bytes of the vCPU's extended state.
    fn vcpu_extstate_size(&self, domid: DomId, vcpu: u32) -> Result<(u64, u64), Error> {
        let p = VcpuExtState {
            vcpu,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::GETVCPUEXTSTATE, domid, &p);
        self.domctl(&mut d, &mut [])?;
        let r: VcpuExtState = d.payload();
        Ok((r.xfeature_mask, r.size))
    }

    /// `XEN_DOMCTL_getvcpuextstate`: the extended state into `buf` (sized
    /// from [`XenOps::vcpu_extstate_size`]); returns the xfeature mask and
    /// the bytes written.
    fn vcpu_extstate(
        &self,
        domid: DomId,
        vcpu: u32,
        mask: u64,
        buf: &mut [u64],
    ) -> Result<(u64, u64), Error> {
        let p = VcpuExtState {
            vcpu,
            xfeature_mask: mask,
            size: (buf.len() * 8) as u64,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::GETVCPUEXTSTATE, domid, &p);
        self.domctl(
            &mut d,
            &mut [GuestBuf::output(EXTSTATE_SLOT, slice_as_bytes_mut(buf))],
        )?;
        let r: VcpuExtState = d.payload();
        Ok((r.xfeature_mask, r.size))
    }

    /// `XEN_DOMCTL_setvcpuextstate`.
    fn set_vcpu_extstate(
        &self,
        domid: DomId,
        vcpu: u32,
        mask: u64,
        buf: &[u64],
    ) -> Result<(), Error> {
        let p = VcpuExtState {
            vcpu,
            xfeature_mask: mask,
            size: (buf.len() * 8) as u64,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::SETVCPUEXTSTATE, domid, &p);
        self.domctl(
            &mut d,
            &mut [GuestBuf::input(EXTSTATE_SLOT, slice_as_bytes(buf))],
        )
    }

    /// `XEN_DOMCTL_scheduler_op` getinfo: the domain's credit or credit2
    /// parameters, with the id of whichever of the two schedulers runs it
    /// (credit2, Xen 4.17's default, is asked first; Xen answers `EINVAL`
    /// for the other). `EINVAL` for a domain under neither.
    fn sched_credit(&self, domid: DomId) -> Result<(u32, SchedCredit), Error> {
        let mut last = Error::new(Op::Domctl(domctl::cmd::SCHEDULER_OP), errno::EINVAL);
        for id in [domctl::sched::CREDIT2, domctl::sched::CREDIT] {
            let p = SchedulerOp::with_credit(id, domctl::sched::OP_GETINFO, SchedCredit::default());
            let mut d = Domctl::with_payload(domctl::cmd::SCHEDULER_OP, domid, &p);
            match self.domctl(&mut d, &mut []) {
                Ok(()) => return Ok((id, d.payload::<SchedulerOp>().credit())),
                Err(e) if e.errno == errno::EINVAL => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// `XEN_DOMCTL_scheduler_op` putinfo: sets the weight and cap of a
    /// domain run by scheduler `sched_id` (credit or credit2). A weight of
    /// 0 leaves the weight as it is.
    fn set_sched_credit(&self, domid: DomId, sched_id: u32, p: SchedCredit) -> Result<(), Error> {
        let op = SchedulerOp::with_credit(sched_id, domctl::sched::OP_PUTINFO, p);
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SCHEDULER_OP, domid, &op),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_max_mem`.
    fn set_max_mem(&self, domid: DomId, max_memkb: u64) -> Result<(), Error> {
        let p = MaxMem { max_memkb };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::MAX_MEM, domid, &p),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_max_vcpus`.
    fn set_max_vcpus(&self, domid: DomId, max: u32) -> Result<(), Error> {
        let p = MaxVcpus { max };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::MAX_VCPUS, domid, &p),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_set_address_size` (bits: 64 for a 64-bit PV guest).
    fn set_address_size(&self, domid: DomId, bits: u32) -> Result<(), Error> {
        let p = AddressSize { size: bits };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SET_ADDRESS_SIZE, domid, &p),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_get_address_size`: the guest's address width in bits
    /// (64 for a 64-bit PV guest, 32 for a 32-bit one).
    fn address_size(&self, domid: DomId) -> Result<u32, Error> {
        let mut d = Domctl::new(domctl::cmd::GET_ADDRESS_SIZE, domid);
        self.domctl(&mut d, &mut [])?;
        Ok(d.payload::<AddressSize>().size)
    }

    /// `XEN_DOMCTL_resumedomain`: lets a domain that shut down for suspend
    /// run again (the source's way back after a failed migration). A
    /// toolstack pause is kept: [`XenOps::unpause`] lifts it.
    fn resume_domain(&self, domid: DomId) -> Result<(), Error> {
        self.domctl(&mut Domctl::new(domctl::cmd::RESUMEDOMAIN, domid), &mut [])
    }

    /// `XEN_DOMCTL_setdomainhandle`: sets the domain's UUID.
    fn set_domain_handle(&self, domid: DomId, handle: [u8; 16]) -> Result<(), Error> {
        let p = SetDomainHandle { handle };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SETDOMAINHANDLE, domid, &p),
            &mut [],
        )
    }

    /// The event-channel limit, which Xen 4.17 no longer lets a toolstack
    /// change: `XEN_DOMCTL_set_max_evtchn` (70) was retired and the limit
    /// is [`CreateDomain::max_evtchn_port`], given at creation. Always
    /// fails with `EOPNOTSUPP` ([`crate::ErrorKind::Unsupported`]) without
    /// reaching Xen; set the limit in [`XenOps::create_domain`]'s config.
    fn set_max_evtchn(&self, domid: DomId, max_port: u32) -> Result<(), Error> {
        let _ = (domid, max_port);
        Err(Error::new(
            Op::Domctl(domctl::cmd::SET_MAX_EVTCHN),
            errno::EOPNOTSUPP,
        ))
    }

    /// `XEN_DOMCTL_get_ext_vcpucontext`: the vCPU's extended context
    /// (SYSCALL32/SYSENTER callbacks, vMCE state), as Xen filled it.
    fn ext_vcpu_context(&self, domid: DomId, vcpu: u32) -> Result<ExtVcpuContext, Error> {
        let p = ExtVcpuContextRaw {
            vcpu,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::GET_EXT_VCPUCONTEXT, domid, &p);
        self.domctl(&mut d, &mut [])?;
        Ok(ExtVcpuContext::from_raw(d.payload()))
    }

    /// `XEN_DOMCTL_set_ext_vcpucontext` from the bytes of an
    /// `X86_PV_VCPU_EXTENDED` record body (or [`ExtVcpuContext::as_bytes`]):
    /// they are copied into the structure as sent, then its `vcpu` is set
    /// to `vcpu`. Refused before Xen is called: more bytes than the
    /// structure's 64 (`E2BIG`), fewer than its 8-byte `vcpu`/`size` head,
    /// or a `size` field claiming more bytes than given (`EINVAL`).
    fn set_ext_vcpu_context(&self, domid: DomId, vcpu: u32, bytes: &[u8]) -> Result<(), Error> {
        let op = Op::Domctl(domctl::cmd::SET_EXT_VCPUCONTEXT);
        let mut raw = ExtVcpuContextRaw::zeroed();
        let dst = raw
            .as_bytes_mut()
            .get_mut(..bytes.len())
            .ok_or(Error::new(op, errno::E2BIG))?;
        dst.copy_from_slice(bytes);
        let head = offset_of!(ExtVcpuContextRaw, syscall32_callback_eip);
        if bytes.len() < head || usize::try_from(raw.size).map_or(true, |n| n > bytes.len()) {
            return Err(Error::new(op, errno::EINVAL));
        }
        raw.vcpu = vcpu;
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SET_EXT_VCPUCONTEXT, domid, &raw),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_get_vcpu_msrs` with a NULL array: the most MSRs Xen may
    /// return for the vCPU (size the array of [`XenOps::vcpu_msrs`] with it).
    fn vcpu_msr_count(&self, domid: DomId, vcpu: u32) -> Result<u32, Error> {
        let p = VcpuMsrs {
            vcpu,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::GET_VCPU_MSRS, domid, &p);
        self.domctl(&mut d, &mut [])?;
        Ok(d.payload::<VcpuMsrs>().msr_count)
    }

    /// `XEN_DOMCTL_get_vcpu_msrs`: the vCPU's MSRs into `out`; returns how
    /// many Xen wrote (it skips MSRs that are zero, so often fewer than
    /// [`XenOps::vcpu_msr_count`]). `ENOBUFS` when `out` is too short; an
    /// empty `out` only suits a vCPU whose count is 0.
    fn vcpu_msrs(&self, domid: DomId, vcpu: u32, out: &mut [VcpuMsr]) -> Result<usize, Error> {
        let op = Op::Domctl(domctl::cmd::GET_VCPU_MSRS);
        if out.is_empty() {
            // A NULL handle would ask for the count, not for MSRs.
            return match self.vcpu_msr_count(domid, vcpu)? {
                0 => Ok(0),
                _ => Err(Error::new(op, errno::ENOBUFS)),
            };
        }
        let p = VcpuMsrs {
            vcpu,
            msr_count: u32::try_from(out.len()).map_err(|_| Error::new(op, errno::E2BIG))?,
            msrs: 0,
        };
        let cap = out.len();
        let mut d = Domctl::with_payload(domctl::cmd::GET_VCPU_MSRS, domid, &p);
        self.domctl(
            &mut d,
            &mut [GuestBuf::output(MSRS_SLOT, slice_as_bytes_mut(out))],
        )?;
        usize::try_from(d.payload::<VcpuMsrs>().msr_count)
            .ok()
            .filter(|&n| n <= cap)
            .ok_or(Error::new(op, errno::ERANGE))
    }

    /// `XEN_DOMCTL_set_vcpu_msrs`: loads `msrs` into the vCPU (Xen refuses
    /// an MSR it does not migrate, or a non-zero `reserved`, with
    /// `EINVAL`). An empty list issues nothing.
    fn set_vcpu_msrs(&self, domid: DomId, vcpu: u32, msrs: &[VcpuMsr]) -> Result<(), Error> {
        let op = Op::Domctl(domctl::cmd::SET_VCPU_MSRS);
        if msrs.is_empty() {
            return Ok(());
        }
        let p = VcpuMsrs {
            vcpu,
            msr_count: u32::try_from(msrs.len()).map_err(|_| Error::new(op, errno::E2BIG))?,
            msrs: 0,
        };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SET_VCPU_MSRS, domid, &p),
            &mut [GuestBuf::input(MSRS_SLOT, slice_as_bytes(msrs))],
        )
    }

    /// `XEN_DOMCTL_gettscinfo`.
    fn tsc_info(&self, domid: DomId) -> Result<TscInfo, Error> {
        let mut d = Domctl::new(domctl::cmd::GETTSCINFO, domid);
        self.domctl(&mut d, &mut [])?;
        Ok(d.payload())
    }

    /// `XEN_DOMCTL_settscinfo`.
    fn set_tsc_info(&self, domid: DomId, info: &TscInfo) -> Result<(), Error> {
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SETTSCINFO, domid, info),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_shadow_op` / `OP_ENABLE_LOGDIRTY`: start logging dirty
    /// pages (needs shadow paging for a PV guest).
    fn logdirty_enable(&self, domid: DomId) -> Result<(), Error> {
        let p = ShadowOp {
            op: shadow::OP_ENABLE_LOGDIRTY,
            ..Default::default()
        };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SHADOW_OP, domid, &p),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_shadow_op` / `OP_OFF`: stop logging dirty pages.
    fn logdirty_disable(&self, domid: DomId) -> Result<(), Error> {
        let p = ShadowOp {
            op: shadow::OP_OFF,
            ..Default::default()
        };
        self.domctl(
            &mut Domctl::with_payload(domctl::cmd::SHADOW_OP, domid, &p),
            &mut [],
        )
    }

    /// `XEN_DOMCTL_shadow_op` / `OP_CLEAN`: the pages dirtied since the last
    /// CLEAN, one bit per PFN (bit `i % 8` of byte `i / 8`), into `bitmap`,
    /// and the log is cleared. `pages` bits are asked for; `bitmap` must
    /// hold them (`EINVAL` otherwise, before Xen is called). `final_round`
    /// sets `XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL`.
    fn logdirty_clean(
        &self,
        domid: DomId,
        bitmap: &mut [u8],
        pages: u64,
        final_round: bool,
    ) -> Result<ShadowStats, Error> {
        shadow_bitmap_op(self, domid, shadow::OP_CLEAN, bitmap, pages, final_round)
    }

    /// `XEN_DOMCTL_shadow_op` / `OP_PEEK`: as [`XenOps::logdirty_clean`],
    /// but the log is kept.
    fn logdirty_peek(
        &self,
        domid: DomId,
        bitmap: &mut [u8],
        pages: u64,
    ) -> Result<ShadowStats, Error> {
        shadow_bitmap_op(self, domid, shadow::OP_PEEK, bitmap, pages, false)
    }

    /// `XEN_DOMCTL_getpageframeinfo3`: replaces each PFN in `pfns` by the
    /// same PFN with its type (`XEN_DOMCTL_PFINFO_*`) in bits 28–31 (split
    /// into batches of [`PFINFO_BATCH_MAX`]).
    fn page_frame_types(&self, domid: DomId, pfns: &mut [XenPfn]) -> Result<(), Error> {
        for chunk in pfns.chunks_mut(PFINFO_BATCH_MAX) {
            let p = GetPageFrameInfo3 {
                num: chunk.len() as u64,
                array: 0,
            };
            let mut d = Domctl::with_payload(domctl::cmd::GETPAGEFRAMEINFO3, domid, &p);
            self.domctl(
                &mut d,
                &mut [GuestBuf::in_out(PFINFO_SLOT, slice_as_bytes_mut(chunk))],
            )?;
        }
        Ok(())
    }

    /// `XEN_DOMCTL_getvcpucontext` for a 64-bit PV guest.
    fn vcpu_context(&self, domid: DomId, vcpu: u32) -> Result<VcpuGuestContext, Error> {
        let mut ctxt = VcpuGuestContext::zeroed();
        let p = VcpuContext {
            vcpu,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::GETVCPUCONTEXT, domid, &p);
        self.domctl(
            &mut d,
            &mut [GuestBuf::output(VCPUCTXT_SLOT, ctxt.as_bytes_mut())],
        )?;
        Ok(ctxt)
    }

    /// `XEN_DOMCTL_setvcpucontext` for a 64-bit PV guest.
    fn set_vcpu_context(
        &self,
        domid: DomId,
        vcpu: u32,
        ctxt: &VcpuGuestContext,
    ) -> Result<(), Error> {
        let p = VcpuContext {
            vcpu,
            ..Default::default()
        };
        let mut d = Domctl::with_payload(domctl::cmd::SETVCPUCONTEXT, domid, &p);
        self.domctl(
            &mut d,
            &mut [GuestBuf::input(VCPUCTXT_SLOT, ctxt.as_bytes())],
        )
    }

    /// `XENMEM_maximum_gpfn`: the highest GPFN the domain has.
    fn maximum_gpfn(&self, domid: DomId) -> Result<XenPfn, Error> {
        let mut arg = domid;
        self.memory_op(memory::cmd::MAXIMUM_GPFN, arg.as_bytes_mut(), &mut [])
    }

    /// `XENMEM_populate_physmap` with order-0 extents: gives the domain a
    /// page at each GPFN of `gpfns` (each replaced by the GMFN Xen
    /// allocated); returns how many extents were populated.
    fn populate_physmap(&self, domid: DomId, gpfns: &mut [XenPfn]) -> Result<usize, Error> {
        let op = Op::MemoryOp(memory::cmd::POPULATE_PHYSMAP);
        let mut r = MemoryReservation {
            nr_extents: gpfns.len() as u64,
            domid,
            ..Default::default()
        };
        let done = self.memory_op(
            memory::cmd::POPULATE_PHYSMAP,
            r.as_bytes_mut(),
            &mut [GuestBuf::in_out(EXTENT_SLOT, slice_as_bytes_mut(gpfns))],
        )?;
        usize::try_from(done)
            .ok()
            .filter(|&n| n <= gpfns.len())
            .ok_or(Error::new(op, errno::ERANGE))
    }

    /// `XENMEM_populate_physmap` for a PV (non-translated) domain, order-0
    /// extents: gives domain `domid` a page at each GPFN of `gpfns` and
    /// writes the machine frame Xen allocated for `gpfns[i]` to
    /// `mfns_out[i]` (Xen hands MFNs back only for non-translated guests;
    /// for an HVM/PVH guest the GPFNs come back). Returns how many extents
    /// were populated: only the first that many entries of `mfns_out` are
    /// frames (Xen stops at the first failure). `mfns_out` shorter than
    /// `gpfns` is `EINVAL`, before Xen is called.
    fn populate_physmap_pv(
        &self,
        domid: DomId,
        gpfns: &[XenPfn],
        mfns_out: &mut [XenPfn],
    ) -> Result<usize, Error> {
        let op = Op::MemoryOp(memory::cmd::POPULATE_PHYSMAP);
        let out = mfns_out
            .get_mut(..gpfns.len())
            .ok_or(Error::new(op, errno::EINVAL))?;
        out.copy_from_slice(gpfns);
        self.populate_physmap(domid, out)
    }

    /// `EVTCHNOP_alloc_unbound`: allocates a fresh event-channel port in
    /// domain `dom` that domain `remote_dom` may bind to (e.g. the console
    /// or xenstore port of a domain being restored, with `remote_dom` the
    /// backend's domain); returns the port.
    ///
    /// Only a privileged caller may name a `dom` other than `DOMID_SELF`.
    /// There is no wrapper for `EVTCHNOP_close`: it closes a port of the
    /// *calling* domain, not of `dom`; ports of a domain being built go
    /// away with the domain.
    fn evtchn_alloc_unbound(&self, dom: DomId, remote_dom: DomId) -> Result<u32, Error> {
        let mut a = EvtchnAllocUnbound {
            dom,
            remote_dom,
            port: 0,
        };
        self.event_channel_op(evtchn::cmd::ALLOC_UNBOUND, a.as_bytes_mut())?;
        Ok(a.port)
    }

    /// `GNTTABOP_setup_table`: the first `nr` frames of domain `dom`'s
    /// (shared, v1) grant table, into `out` (growing the table to `nr`
    /// frames if it is smaller). For a PV domain these are machine frames;
    /// map frame 0 read-write with [`Hypervisor::map_foreign`]`(dom, ..)`
    /// and write [`GrantEntryV1`](crate::abi::grant_table::GrantEntryV1)s
    /// to seed the reserved entries, as libxc's `xc_dom_gnttab_seed` does.
    /// Returns `nr`.
    ///
    /// A toolstack may ask this for another domain: Xen 4.17 looks `dom` up
    /// with `rcu_lock_domain_by_any_id` and lets a control domain through
    /// its XSM check. A status other than `GNTST_okay` is an error of
    /// `Op::Hypercall(20)` with the errno of
    /// [`gntst::to_errno`](crate::abi::grant_table::gntst::to_errno) (e.g.
    /// `ESRCH` for `bad_domain`, `EPERM` for `permission_denied`, `EINVAL`
    /// for more frames than the domain's `max_grant_frames`). `out` shorter
    /// than `nr` is `EINVAL`, before Xen is called.
    fn grant_table_frames(&self, dom: DomId, nr: u32, out: &mut [u64]) -> Result<usize, Error> {
        let op = Op::Hypercall(hypercall::GRANT_TABLE_OP);
        let n = usize::try_from(nr).map_err(|_| Error::new(op, errno::EINVAL))?;
        let out = out.get_mut(..n).ok_or(Error::new(op, errno::EINVAL))?;
        let mut s = GnttabSetupTable {
            dom,
            nr_frames: nr,
            ..Default::default()
        };
        self.grant_table_op(
            grant_table::cmd::SETUP_TABLE,
            s.as_bytes_mut(),
            &mut [GuestBuf::output(FRAME_LIST_SLOT, slice_as_bytes_mut(out))],
        )?;
        match gntst::to_errno(s.status) {
            None => Ok(n),
            Some(e) => Err(Error::new(op, e)),
        }
    }

    /// `MMUEXT_PIN_L<level>_TABLE` on machine frame `mfn` of domain `dom`
    /// (`level` 1 to 4): Xen validates the frame as a page table of that
    /// level and keeps it typed so, as a PV domain's builder or restorer
    /// does for the guest's page tables before it first runs.
    ///
    /// Safe because `dom` is checked: Xen applies the op to frames owned by
    /// `dom` only (`do_mmuext_op` takes `get_pg_owner(dom)` as the owner
    /// and looks `mfn` up in it; validating the table only takes
    /// references on frames `dom` may map, and `get_pg_owner` refuses the
    /// caller's own id), so this process's page tables cannot change. The
    /// ids that would name the caller or Xen's own page owners are refused
    /// with `EINVAL` before Xen is called: 0 (the control domain) and
    /// everything from `DOMID_FIRST_RESERVED` (`DOMID_SELF`, `DOMID_IO`,
    /// `DOMID_XEN`, …) up. A `level` outside 1–4 is `EINVAL` too.
    fn pin_page_table(&self, dom: DomId, level: u8, mfn: u64) -> Result<(), Error> {
        self.pin_page_tables(dom, &[(level, mfn)])
    }

    /// [`XenOps::pin_page_table`] for each `(level, mfn)`, in batches of
    /// 64 (`PIN_BATCH`) per `mmuext_op`; everything is checked before the
    /// first call. On failure, pins of earlier batches (and of the failing
    /// batch before the failing entry) stay.
    fn pin_page_tables(&self, dom: DomId, tables: &[(u8, u64)]) -> Result<(), Error> {
        let bad = Error::new(Op::MmuextOp, errno::EINVAL);
        foreign_pg_owner(dom)?;
        if tables.iter().any(|&(level, _)| !(1..=4).contains(&level)) {
            return Err(bad);
        }
        let mut batch = [MmuextOp::default(); PIN_BATCH];
        for chunk in tables.chunks(PIN_BATCH) {
            for (o, &(level, mfn)) in batch.iter_mut().zip(chunk) {
                *o = MmuextOp {
                    cmd: mmuext::PIN_L1_TABLE + u32::from(level - 1),
                    arg1: mfn,
                    ..Default::default()
                };
            }
            let ops = batch.get(..chunk.len()).ok_or(bad)?;
            // SAFETY: `foreign_pg_owner` proved `dom` is an ordinary domain
            // other than 0, so Xen pins frames owned by `dom` only and
            // refuses our own id: nothing backing this process changes.
            // Every op is a PIN_Ln_TABLE with `arg2` (vcpumask) 0.
            unsafe { self.mmuext_op(ops, dom)? };
        }
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE` on machine frame `mfn` of domain `dom`, with
    /// the checks and safety argument of [`XenOps::pin_page_table`].
    fn unpin_page_table(&self, dom: DomId, mfn: u64) -> Result<(), Error> {
        foreign_pg_owner(dom)?;
        let op = MmuextOp {
            cmd: mmuext::UNPIN_TABLE,
            arg1: mfn,
            ..Default::default()
        };
        // SAFETY: as in `pin_page_tables`: `dom` is an ordinary domain other
        // than 0, so only a frame it owns is unpinned.
        unsafe { self.mmuext_op(&[op], dom) }
    }
}

impl<H: Hypervisor + ?Sized> XenOps for H {}

/// Refuses page owners whose frames could back this process: domain 0 and
/// the reserved ids (`DOMID_SELF` and up), with `EINVAL`.
fn foreign_pg_owner(dom: DomId) -> Result<(), Error> {
    if dom == 0 || dom >= DOMID_FIRST_RESERVED {
        return Err(Error::new(Op::MmuextOp, errno::EINVAL));
    }
    Ok(())
}

fn shadow_bitmap_op<H: Hypervisor + ?Sized>(
    h: &H,
    domid: DomId,
    sop: u32,
    bitmap: &mut [u8],
    pages: u64,
    final_round: bool,
) -> Result<ShadowStats, Error> {
    let op = Op::Domctl(domctl::cmd::SHADOW_OP);
    let bits = (bitmap.len() as u64).saturating_mul(8);
    if pages > bits {
        return Err(Error::new(op, errno::EINVAL));
    }
    // Only the bytes covering `pages` bits are handed to Xen.
    let used = usize::try_from(pages.div_ceil(8)).map_err(|_| Error::new(op, errno::EINVAL))?;
    let bitmap = bitmap
        .get_mut(..used)
        .ok_or(Error::new(op, errno::EINVAL))?;
    let p = ShadowOp {
        op: sop,
        mode: if final_round {
            shadow::LOGDIRTY_FINAL
        } else {
            0
        },
        pages,
        ..Default::default()
    };
    let mut d = Domctl::with_payload(domctl::cmd::SHADOW_OP, domid, &p);
    h.domctl(&mut d, &mut [GuestBuf::output(SHADOW_BITMAP_SLOT, bitmap)])?;
    let r: ShadowOp = d.payload();
    Ok(ShadowStats {
        pages: r.pages,
        fault_count: r.stats.fault_count,
        dirty_count: r.stats.dirty_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::domctl::pfinfo;
    use crate::abi::grant_table::{gtf, GrantEntryV1};
    use crate::abi::xen::{DOMID_IO, DOMID_SELF, DOMID_XEN};
    use crate::fake::{
        FakeDomain, FakeXen, FAKE_GRANT_FRAME_BASE, FAKE_MAX_GRANT_FRAMES, FAKE_MFN_OFFSET,
    };
    use crate::{ErrorKind, ForeignPages, Prot};

    fn fake() -> FakeXen {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 2));
        x.add_domain(FakeDomain::pv(3, 40, 1));
        x.add_domain(FakeDomain::pv(7, 8, 4));
        x
    }

    #[test]
    fn domain_info_is_typed() {
        let x = fake();
        let i = x.domain_info(3).unwrap();
        assert_eq!(
            (i.domid, i.tot_pages, i.online_vcpus, i.max_vcpu_id),
            (3, 40, 1, Some(0))
        );
        assert!(i.running() && !i.paused() && !i.hvm());
        assert_eq!(i.memory_kib(), 160);
        assert_eq!(&i.xl_state(), b"r-----");
        assert_eq!(x.calls(), [Op::Domctl(domctl::cmd::GETDOMAININFO)]);
    }

    #[test]
    fn domain_info_of_a_missing_domain_is_esrch_not_the_next_one() {
        // Xen 4.17 answers for domain 7 when asked for 4.
        let e = fake().domain_info(4).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Domctl(domctl::cmd::GETDOMAININFO), errno::ESRCH)
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(fake().domain_info(8).unwrap_err().errno, errno::ESRCH);
    }

    #[test]
    fn xl_state_and_shutdown_reason() {
        let mut r = GetDomainInfo {
            flags: dominf::SHUTDOWN | dominf::DYING | (3 << 16),
            ..Default::default()
        };
        let i = DomainInfo::from(&r);
        assert_eq!(
            (i.shutdown_reason(), i.crashed()),
            (Some(shutdown::CRASH), true)
        );
        assert_eq!(&i.xl_state(), b"----cd");
        r.flags = dominf::SHUTDOWN | dominf::BLOCKED | dominf::PAUSED;
        assert_eq!(&DomainInfo::from(&r).xl_state(), b"-bps--");
        r.max_vcpu_id = XEN_INVALID_MAX_VCPU_ID;
        assert_eq!(DomainInfo::from(&r).max_vcpu_id, None);
    }

    #[test]
    fn domain_info_list_fills_the_caller_array() {
        let x = fake();
        let mut out = [GetDomainInfo::default(); 2];
        assert_eq!(x.domain_info_list(1, &mut out).unwrap(), 2);
        assert_eq!((out[0].domain, out[1].domain), (3, 7));
        let mut big = [GetDomainInfo::default(); 8];
        assert_eq!(x.domain_info_list(0, &mut big).unwrap(), 3);
        assert_eq!(big[2].tot_pages, 8);
        assert_eq!(x.domain_info_list(0, &mut []).unwrap(), 0);
    }

    #[test]
    fn for_each_domain_walks_every_batch() {
        let x = FakeXen::new();
        let ids: Vec<DomId> = (0..70).map(|i| i * 3).collect();
        for &id in &ids {
            x.add_domain(FakeDomain::pv(id, 1, 1));
        }
        let mut seen = Vec::new();
        assert_eq!(x.for_each_domain(|d| seen.push(d.domid)).unwrap(), 70);
        assert_eq!(seen, ids);
        // 32 + 32 + 6.
        assert_eq!(x.calls().len(), 3);
        let empty = FakeXen::new();
        assert_eq!(empty.for_each_domain(|_| panic!("no domains")).unwrap(), 0);
    }

    #[test]
    fn physinfo_reports_shadow_paging() {
        let p = fake().physinfo().unwrap();
        assert_ne!(p.capabilities & sysctl::physcap::SHADOW, 0);
        assert_eq!(p.nr_cpus, 2);
    }

    #[test]
    fn pause_unpause_destroy() {
        let x = fake();
        x.pause(3).unwrap();
        assert!(x.domain_info(3).unwrap().paused());
        assert!(!x.guest_write(3, 0, 0, b"x"));
        x.unpause(3).unwrap();
        assert!(!x.domain_info(3).unwrap().paused());
        x.destroy(3).unwrap();
        assert_eq!(x.pause(3).unwrap_err().errno, errno::ESRCH);
        x.fail_next(Op::Domctl(0), errno::EPERM);
        let e = x.unpause(7).unwrap_err();
        assert_eq!(
            (e.op, e.kind()),
            (
                Op::Domctl(domctl::cmd::UNPAUSEDOMAIN),
                ErrorKind::PermissionDenied
            )
        );
    }

    #[test]
    fn log_dirty_round_trip() {
        let x = fake();
        let mut bitmap = [0u8; 8];
        // CLEAN before enabling is refused by Xen.
        assert_eq!(
            x.logdirty_clean(3, &mut bitmap, 40, false)
                .unwrap_err()
                .errno,
            errno::EINVAL
        );
        x.logdirty_enable(3).unwrap();
        assert_eq!(x.logdirty_enable(3).unwrap_err().errno, errno::EINVAL);
        assert!(
            x.guest_write(3, 1, 0, b"a")
                && x.guest_write(3, 9, 5, b"b")
                && x.guest_write(3, 39, 0, b"c")
        );
        let s = x.logdirty_peek(3, &mut bitmap, 40).unwrap();
        assert_eq!((s.pages, s.dirty_count), (40, 3));
        assert_eq!(bitmap[..5], [0b10, 0b10, 0, 0, 0x80]);
        let s = x.logdirty_clean(3, &mut bitmap, 40, true).unwrap();
        assert_eq!(s.dirty_count, 3);
        // Cleaned: nothing dirty until the guest writes again.
        let s = x.logdirty_peek(3, &mut bitmap, 40).unwrap();
        assert_eq!((s.dirty_count, bitmap), (0, [0; 8]));
        // Paused: the guest dirties nothing.
        x.pause(3).unwrap();
        assert!(!x.guest_write(3, 2, 0, b"z"));
        assert_eq!(
            x.logdirty_clean(3, &mut bitmap, 40, false)
                .unwrap()
                .dirty_count,
            0
        );
        x.unpause(3).unwrap();
        x.logdirty_disable(3).unwrap();
        assert!(!x.domain(3).unwrap().logdirty);
    }

    #[test]
    fn a_short_bitmap_is_refused_before_xen_is_called() {
        let x = fake();
        let mut bitmap = [0u8; 4];
        let e = x.logdirty_clean(3, &mut bitmap, 40, false).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Domctl(domctl::cmd::SHADOW_OP), errno::EINVAL)
        );
        assert!(x.calls().is_empty());
        // Asking for fewer pages than the bitmap holds is fine.
        x.logdirty_enable(3).unwrap();
        assert_eq!(x.logdirty_peek(3, &mut bitmap, 20).unwrap().pages, 20);
    }

    #[test]
    fn page_types_in_batches_of_1024() {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(5, 3000, 1));
        x.set_page_type(5, 2, pfinfo::L4TAB | pfinfo::LPINTAB);
        x.set_page_type(5, 2500, pfinfo::L1TAB);
        let mut pfns: Vec<XenPfn> = (0..2600).collect();
        pfns.push(9999);
        x.page_frame_types(5, &mut pfns).unwrap();
        let ty = |v: u64| (v as u32) & pfinfo::LTAB_MASK;
        assert_eq!(ty(pfns[2]), pfinfo::L4TAB | pfinfo::LPINTAB);
        assert_eq!(pfns[2] & 0xfff_ffff, 2);
        assert_eq!(ty(pfns[2500]), pfinfo::L1TAB);
        assert_eq!(ty(pfns[0]), pfinfo::NOTAB);
        assert_eq!(ty(pfns[2600]), pfinfo::XTAB);
        assert_eq!(x.calls().len(), 3);
    }

    #[test]
    fn vcpu_context_round_trip() {
        let x = fake();
        let mut c = x.vcpu_context(7, 3).unwrap();
        assert_eq!(c, VcpuGuestContext::zeroed());
        c.user_regs.rip = 0xffff_ffff_8100_0000;
        c.ctrlreg[3] = 0x1234_5000;
        c.trap_ctxt[14].address = 0xdead_beef;
        c.gs_base_user = 42;
        x.set_vcpu_context(7, 3, &c).unwrap();
        assert_eq!(x.vcpu_context(7, 3).unwrap(), c);
        assert_eq!(x.domain(7).unwrap().vcpus[3], c);
        assert_eq!(x.vcpu_context(7, 4).unwrap_err().errno, errno::ESRCH);
    }

    #[test]
    fn maximum_gpfn_and_populate() {
        let x = fake();
        assert_eq!(x.maximum_gpfn(3).unwrap(), 39);
        let mut gpfns = [100, 101, 200];
        assert_eq!(x.populate_physmap(3, &mut gpfns).unwrap(), 3);
        assert_eq!(
            gpfns,
            [
                100 + FAKE_MFN_OFFSET,
                101 + FAKE_MFN_OFFSET,
                200 + FAKE_MFN_OFFSET
            ]
        );
        assert_eq!(x.maximum_gpfn(3).unwrap(), 200);
        assert_eq!(x.domain_info(3).unwrap().tot_pages, 43);
        assert_eq!(
            x.maximum_gpfn(4).unwrap_err().op,
            Op::MemoryOp(memory::cmd::MAXIMUM_GPFN)
        );
    }

    #[test]
    fn foreign_mapping_reads_what_the_guest_wrote() {
        let x = fake();
        assert!(x.guest_write(3, 5, 100, b"hello"));
        let mut m = x.map_foreign(3, &[5, 6, 77], Prot::Read).unwrap();
        assert_eq!(
            (m.len(), m.page_error(0), m.page_error(2)),
            (3, None, Some(errno::EINVAL))
        );
        let mut page = [0u8; PAGE_SIZE];
        m.read_page(0, &mut page).unwrap();
        assert_eq!(&page[100..105], b"hello");
        assert_eq!(m.read_page(2, &mut page).unwrap_err().errno, errno::EINVAL);
        assert_eq!(m.read_page(3, &mut page).unwrap_err().errno, errno::EINVAL);
        assert_eq!(m.write_page(0, &page).unwrap_err().errno, errno::EACCES);
        let mut w = x.map_foreign(3, &[6], Prot::ReadWrite).unwrap();
        w.write_page(0, &[7; PAGE_SIZE]).unwrap();
        assert_eq!(x.domain(3).unwrap().memory[&6][4095], 7);
    }

    #[test]
    fn create_domain_returns_the_new_id() {
        let x = fake();
        let cfg = CreateDomain {
            max_vcpus: 2,
            max_evtchn_port: 1023,
            max_grant_frames: -1,
            ..Default::default()
        };
        let id = x.create_domain(0, &cfg).unwrap();
        assert_eq!(id, 1, "the lowest free id");
        let i = x.domain_info(id).unwrap();
        assert!(i.paused());
        assert_eq!(i.max_vcpu_id, Some(1));
        assert_eq!(x.create_domain(3, &cfg).unwrap_err().errno, errno::EEXIST);
        assert_eq!(x.create_domain(12, &cfg).unwrap(), 12);
    }

    #[test]
    fn policy_and_extstate_buffers_pass_the_doorway_checks() {
        // The fake models the policy and a CPU without XSAVE, and takes the
        // set calls as given: the wrappers bound the right slots with long
        // enough buffers (the doorway checks would refuse them otherwise).
        let x = fake();
        let (mut l, mut m) = ([CpuidLeaf::default(); 4], [MsrEntry::default(); 2]);
        assert_eq!(x.cpu_policy(3, &mut l, &mut m).unwrap(), (2, 1));
        assert_eq!((l[0].leaf, l[1].leaf, m[0].idx), (0, 1, 0xce));
        let (mut short, mut m1) = ([CpuidLeaf::default(); 1], [MsrEntry::default(); 1]);
        assert_eq!(
            x.cpu_policy(3, &mut short, &mut m1).unwrap_err().errno,
            errno::ENOBUFS
        );
        x.set_cpu_policy(3, &l, &m).unwrap();
        assert_eq!(x.vcpu_extstate_size(3, 0).unwrap(), (0, 0));
        let mut buf = [0u64; 64];
        assert_eq!(x.vcpu_extstate(3, 0, 7, &mut buf).unwrap(), (0, 0));
        x.set_vcpu_extstate(3, 0, 7, &buf).unwrap();
        assert_eq!(x.calls().len(), 6);
    }

    #[test]
    fn address_size_resume_and_domain_handle() {
        let x = fake();
        assert_eq!(x.address_size(3).unwrap(), 64);
        x.set_address_size(3, 32).unwrap();
        assert_eq!(x.address_size(3).unwrap(), 32);
        assert_eq!(x.set_address_size(3, 48).unwrap_err().errno, errno::EINVAL);
        assert_eq!(x.address_size(4).unwrap_err().errno, errno::ESRCH);

        assert!(x.guest_shutdown(3, shutdown::SUSPEND));
        let i = x.domain_info(3).unwrap();
        assert_eq!(
            (i.shutdown_reason(), i.running()),
            (Some(shutdown::SUSPEND), false)
        );
        x.resume_domain(3).unwrap();
        let i = x.domain_info(3).unwrap();
        assert_eq!((i.shutdown(), i.running()), (false, true));
        // A toolstack pause outlives the resume.
        x.pause(7).unwrap();
        assert!(x.guest_shutdown(7, shutdown::SUSPEND));
        x.resume_domain(7).unwrap();
        assert_eq!(&x.domain_info(7).unwrap().xl_state(), b"--p---");

        let uuid = *b"0123456789abcdef";
        x.set_domain_handle(3, uuid).unwrap();
        assert_eq!(x.domain_info(3).unwrap().handle, uuid);
        assert_eq!(
            x.calls().last(),
            Some(&Op::Domctl(domctl::cmd::GETDOMAININFO))
        );
        assert!(x
            .calls()
            .contains(&Op::Domctl(domctl::cmd::SETDOMAINHANDLE)));
    }

    #[test]
    fn set_max_evtchn_is_unsupported_without_calling_xen() {
        let x = fake();
        let e = x.set_max_evtchn(3, 1023).unwrap_err();
        assert_eq!(
            (e.op, e.kind()),
            (
                Op::Domctl(domctl::cmd::SET_MAX_EVTCHN),
                ErrorKind::Unsupported
            )
        );
        assert_eq!(
            e.to_string(),
            "domctl set_max_evtchn failed: EOPNOTSUPP (95)"
        );
        assert!(x.calls().is_empty());
    }

    #[test]
    fn ext_vcpu_context_round_trip_through_record_bytes() {
        let x = fake();
        let fresh = x.ext_vcpu_context(7, 2).unwrap();
        assert_eq!((fresh.size(), fresh.as_bytes().len()), (64, 64));
        assert_eq!(fresh.raw().vcpu, 2);
        // Build a source's context and send its bytes to another vCPU.
        let mut raw = *fresh.raw();
        raw.syscall32_callback_eip = 0xffff_8000_0000_1000;
        raw.sysenter_callback_cs = 0xe033;
        raw.syscall32_disables_events = 1;
        raw.vmce.caps = 0x0100_0c09;
        let sent = ExtVcpuContext::from_raw(raw);
        x.set_ext_vcpu_context(7, 3, sent.as_bytes()).unwrap();
        let got = x.ext_vcpu_context(7, 3).unwrap();
        assert_eq!(got.raw().vcpu, 3, "the vcpu field is the target's");
        assert_eq!(&got.as_bytes()[4..], &sent.as_bytes()[4..]);
        assert_eq!(x.domain(7).unwrap().ext_vcpus[3].vmce.caps, 0x0100_0c09);
        assert_eq!(x.ext_vcpu_context(7, 4).unwrap_err().errno, errno::ESRCH);
    }

    #[test]
    fn ext_vcpu_context_bytes_are_bounded() {
        let x = fake();
        let mut raw = ExtVcpuContextRaw {
            size: 40,
            syscall32_callback_eip: 5,
            ..Default::default()
        };
        raw.vmce.caps = 9;
        raw.vmce.mcg_ext_ctl = 7;
        let short = ExtVcpuContext::from_raw(raw);
        // Only `size` bytes go out; Xen keeps what they cover.
        assert_eq!(short.as_bytes().len(), 40);
        x.set_ext_vcpu_context(3, 0, short.as_bytes()).unwrap();
        let kept = x.domain(3).unwrap().ext_vcpus[0];
        assert_eq!((kept.vmce.caps, kept.vmce.mcg_ext_ctl), (9, 0));
        // A size beyond the structure is cut at the structure.
        raw.size = 1000;
        assert_eq!(ExtVcpuContext::from_raw(raw).as_bytes().len(), 64);
        let op = Op::Domctl(domctl::cmd::SET_EXT_VCPUCONTEXT);
        let calls = x.calls().len();
        let e = x.set_ext_vcpu_context(3, 0, &[0; 65]).unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::E2BIG));
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = x.set_ext_vcpu_context(3, 0, &[0; 7]).unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::EINVAL));
        // The size field claims more bytes than were given.
        let e = x
            .set_ext_vcpu_context(3, 0, &ExtVcpuContext::from_raw(raw).as_bytes()[..48])
            .unwrap_err();
        assert_eq!(e.errno, errno::EINVAL);
        assert_eq!(x.calls().len(), calls, "refused before Xen");
        // Xen itself wants at least everything before the vMCE state.
        raw.size = 16;
        let b = ExtVcpuContext::from_raw(raw);
        assert_eq!(
            x.set_ext_vcpu_context(3, 0, b.as_bytes())
                .unwrap_err()
                .errno,
            errno::EINVAL
        );
        assert_eq!(x.calls().len(), calls + 1);
    }

    #[test]
    fn vcpu_msrs_count_then_array() {
        let x = fake();
        let count = x.vcpu_msr_count(7, 1).unwrap();
        assert_eq!(count, crate::fake::FAKE_MAX_VCPU_MSRS);
        let mut out = vec![VcpuMsr::default(); count as usize];
        assert_eq!(x.vcpu_msrs(7, 1, &mut out).unwrap(), 0);
        let set = [
            VcpuMsr {
                index: 0x48,
                reserved: 0,
                value: 1,
            },
            VcpuMsr {
                index: 0xc001_1027,
                reserved: 0,
                value: 0xffff,
            },
            VcpuMsr {
                index: 0x140,
                reserved: 0,
                value: 0,
            },
        ];
        x.set_vcpu_msrs(7, 1, &set).unwrap();
        // Zero-valued MSRs are not reported back, as by Xen.
        let n = x.vcpu_msrs(7, 1, &mut out).unwrap();
        assert_eq!(&out[..n], &[set[0], set[1]]);
        assert_eq!(
            out[0].as_bytes(),
            [0x48, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        // Too short an array: ENOBUFS; empty: the count decides.
        let e = x.vcpu_msrs(7, 1, &mut out[..1]).unwrap_err();
        assert_eq!(
            (e.errno, e.kind()),
            (errno::ENOBUFS, ErrorKind::InvalidInput)
        );
        assert_eq!(
            x.vcpu_msrs(7, 1, &mut []).unwrap_err().errno,
            errno::ENOBUFS
        );
        assert_eq!(
            x.domain(7).unwrap().msrs[0].len(),
            0,
            "other vCPUs untouched"
        );
        assert_eq!(x.vcpu_msr_count(7, 4).unwrap_err().errno, errno::ESRCH);
    }

    #[test]
    fn set_vcpu_msrs_checks() {
        let x = fake();
        let calls = x.calls().len();
        x.set_vcpu_msrs(3, 0, &[]).unwrap();
        assert_eq!(x.calls().len(), calls, "an empty list issues nothing");
        let bad = [VcpuMsr {
            index: 0x48,
            reserved: 1,
            value: 1,
        }];
        let e = x.set_vcpu_msrs(3, 0, &bad).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Domctl(domctl::cmd::SET_VCPU_MSRS), errno::EINVAL)
        );
        let many: Vec<VcpuMsr> = (0..9)
            .map(|i| VcpuMsr {
                index: i,
                reserved: 0,
                value: 1,
            })
            .collect();
        assert_eq!(
            x.set_vcpu_msrs(3, 0, &many).unwrap_err().errno,
            errno::EINVAL
        );
        assert!(x.domain(3).unwrap().msrs[0].is_empty());
    }

    #[test]
    fn vcpu_guest_context_from_exact_bytes() {
        let mut c = VcpuGuestContext::zeroed();
        c.user_regs.rip = 0x1234;
        c.ctrlreg[3] = 0x5000;
        let b = c.as_bytes().to_vec();
        assert_eq!(VcpuGuestContext::from_bytes(&b), Some(c));
        assert_eq!(VcpuGuestContext::from_bytes(&b[..b.len() - 1]), None);
        let mut long = b.clone();
        long.push(0);
        assert_eq!(VcpuGuestContext::from_bytes(&long), None);
    }

    #[test]
    fn other_domctls_pass_their_payloads() {
        let x = fake();
        x.set_max_mem(3, 1024).unwrap();
        // Scheduler parameters: credit2 found by trying, set and read back.
        let (id, c) = x.sched_credit(3).unwrap();
        assert_eq!((id, c.weight, c.cap), (domctl::sched::CREDIT2, 256, 0));
        x.set_sched_credit(3, id, SchedCredit { weight: 0, cap: 40 })
            .unwrap();
        assert_eq!(
            x.sched_credit(3).unwrap().1,
            SchedCredit {
                weight: 256,
                cap: 40
            }
        );
        let wrong = x
            .set_sched_credit(3, domctl::sched::CREDIT, SchedCredit::default())
            .unwrap_err();
        assert_eq!(wrong.errno, errno::EINVAL);
        assert_eq!(x.domain_info(3).unwrap().max_pages, 256);
        // As Xen 4.17: only createdomain's count is accepted.
        let vcpus = x.domain(3).unwrap().vcpus.len() as u32;
        x.set_max_vcpus(3, vcpus).unwrap();
        assert_eq!(
            x.set_max_vcpus(3, vcpus + 1).unwrap_err().errno,
            errno::EINVAL
        );
    }

    #[test]
    fn populate_physmap_pv_gives_the_machine_frames_back() {
        let x = fake();
        let gpfns = [50, 51, 300];
        let mut mfns = [0u64; 4];
        assert_eq!(x.populate_physmap_pv(3, &gpfns, &mut mfns).unwrap(), 3);
        assert_eq!(
            mfns[..3],
            [
                50 + FAKE_MFN_OFFSET,
                51 + FAKE_MFN_OFFSET,
                300 + FAKE_MFN_OFFSET
            ]
        );
        assert_eq!(mfns[3], 0, "past the GPFNs untouched");
        assert_eq!(gpfns, [50, 51, 300]);
        assert_eq!(x.maximum_gpfn(3).unwrap(), 300);
        let calls = x.calls().len();
        let e = x
            .populate_physmap_pv(3, &gpfns, &mut mfns[..2])
            .unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::MemoryOp(memory::cmd::POPULATE_PHYSMAP), errno::EINVAL)
        );
        assert_eq!(x.calls().len(), calls, "refused before Xen");
        assert_eq!(
            x.populate_physmap_pv(4, &gpfns, &mut mfns)
                .unwrap_err()
                .errno,
            errno::ESRCH
        );
    }

    #[test]
    fn alloc_unbound_ports_count_up_per_domain() {
        let x = fake();
        assert_eq!(x.evtchn_alloc_unbound(3, 0).unwrap(), 1);
        assert_eq!(x.evtchn_alloc_unbound(3, 0).unwrap(), 2);
        assert_eq!(x.evtchn_alloc_unbound(7, DOMID_SELF).unwrap(), 1);
        assert_eq!(x.unbound_ports(3), [(1, 0), (2, 0)]);
        assert_eq!(x.unbound_ports(7), [(1, 0)], "DOMID_SELF is the caller");
        let e = x.evtchn_alloc_unbound(4, 0).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::Hypercall(hypercall::EVENT_CHANNEL_OP), errno::ESRCH)
        );
        assert_eq!(e.to_string(), "hypercall 32 failed: ESRCH (3)");
        assert!(x.unbound_ports(4).is_empty());
    }

    #[test]
    fn raw_event_channel_ops_other_than_alloc_unbound_are_refused() {
        let x = fake();
        let mut close = [0u8; 4];
        let e = x
            .event_channel_op(evtchn::cmd::CLOSE, &mut close)
            .unwrap_err();
        assert_eq!(e.errno, errno::EOPNOTSUPP);
        assert!(x.calls().is_empty());
    }

    #[test]
    fn grant_table_frames_then_seed_the_reserved_entries() {
        let x = fake();
        let mut frames = [0u64; 4];
        assert_eq!(x.grant_table_frames(3, 2, &mut frames).unwrap(), 2);
        let g0 = FAKE_GRANT_FRAME_BASE + (3 << 8);
        assert_eq!(frames, [g0, g0 + 1, 0, 0]);
        assert_eq!(x.domain_info(3).unwrap().tot_pages, 40, "Xen's pages");
        // What the restorer does: map frame 0 and write entries 0 and 1.
        let mut m = x.map_foreign(3, &frames[..1], Prot::ReadWrite).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        m.read_page(0, &mut page).unwrap();
        assert_eq!(page, [0; PAGE_SIZE]);
        let console = GrantEntryV1 {
            flags: gtf::PERMIT_ACCESS,
            domid: 0,
            frame: 0x1234,
        };
        let store = GrantEntryV1 {
            frame: 0x1235,
            ..console
        };
        console.write_to(&mut page[..8]).unwrap();
        store.write_to(&mut page[8..16]).unwrap();
        m.write_page(0, &page).unwrap();
        let d = x.domain(3).unwrap();
        assert_eq!(d.grant_entry(0), Some(console));
        assert_eq!(d.grant_entry(1), Some(store));
        assert_eq!(d.grant_entry(2), Some(GrantEntryV1::default()));
        assert_eq!(d.grant_entry(1024), None, "beyond the two frames");
        // Asking again gives the same frames.
        let mut again = [0u64; 1];
        x.grant_table_frames(3, 1, &mut again).unwrap();
        assert_eq!(again[0], g0);
    }

    #[test]
    fn grant_table_status_codes_are_typed_errors() {
        let x = fake();
        let op = Op::Hypercall(hypercall::GRANT_TABLE_OP);
        let mut frames = [0u64; 64];
        let e = x.grant_table_frames(4, 1, &mut frames).unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::ESRCH));
        let e = x
            .grant_table_frames(3, FAKE_MAX_GRANT_FRAMES + 1, &mut frames)
            .unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::EINVAL));
        assert_eq!(x.calls().len(), 2);
        // A short array never reaches Xen.
        let e = x.grant_table_frames(3, 5, &mut frames[..4]).unwrap_err();
        assert_eq!((e.op, e.errno), (op, errno::EINVAL));
        assert_eq!(x.calls().len(), 2);
        assert_eq!(x.grant_table_frames(3, 0, &mut []).unwrap(), 0);
    }

    #[test]
    fn gntst_codes_map_to_errnos() {
        use crate::abi::grant_table::gntst;
        assert_eq!(gntst::to_errno(gntst::OKAY), None);
        let cases = [
            (gntst::GENERAL_ERROR, errno::EINVAL),
            (gntst::BAD_DOMAIN, errno::ESRCH),
            (gntst::PERMISSION_DENIED, errno::EPERM),
            (gntst::BAD_VIRT_ADDR, errno::EFAULT),
            (gntst::NO_SPACE, errno::ENOSPC),
            (gntst::ADDRESS_TOO_BIG, errno::ERANGE),
            (gntst::EAGAIN, errno::EAGAIN),
            (-14, errno::EIO),
            (1, errno::EIO),
        ];
        for (st, e) in cases {
            assert_eq!(gntst::to_errno(st), Some(e), "status {st}");
        }
    }

    #[test]
    fn pin_and_unpin_page_tables_of_a_foreign_domain() {
        let x = fake();
        x.pin_page_table(3, 4, 0x5000).unwrap();
        x.pin_page_tables(3, &[(3, 0x5001), (2, 0x5002), (1, 0x5003)])
            .unwrap();
        assert_eq!(
            x.pinned_tables(3),
            [(0x5000, 4), (0x5001, 3), (0x5002, 2), (0x5003, 1)]
        );
        // Xen refuses a second pin of the same frame.
        let e = x.pin_page_table(3, 1, 0x5003).unwrap_err();
        assert_eq!((e.op, e.errno), (Op::MmuextOp, errno::EINVAL));
        x.unpin_page_table(3, 0x5001).unwrap();
        assert_eq!(
            x.unpin_page_table(3, 0x5001).unwrap_err().errno,
            errno::EINVAL
        );
        assert_eq!(x.pinned_tables(3).len(), 3);
        assert_eq!(x.pin_page_table(4, 1, 1).unwrap_err().errno, errno::ESRCH);
    }

    #[test]
    fn pins_are_batched() {
        let x = fake();
        let tables: Vec<(u8, u64)> = (0..PIN_BATCH as u64 * 2 + 1).map(|m| (1, m)).collect();
        x.pin_page_tables(7, &tables).unwrap();
        assert_eq!(x.pinned_tables(7).len(), tables.len());
        assert_eq!(x.calls(), [Op::MmuextOp; 3]);
        x.pin_page_tables(7, &[]).unwrap();
        assert_eq!(x.calls().len(), 3, "nothing to pin, no call");
    }

    #[test]
    fn pins_of_our_own_or_xens_frames_are_refused_before_xen() {
        let x = fake();
        for dom in [0, DOMID_SELF, DOMID_IO, DOMID_XEN, 0x7fff, u16::MAX] {
            let e = x.pin_page_table(dom, 1, 0x5000).unwrap_err();
            assert_eq!(
                (e.op, e.errno),
                (Op::MmuextOp, errno::EINVAL),
                "dom {dom:#x}"
            );
            assert_eq!(
                x.unpin_page_table(dom, 0x5000).unwrap_err().errno,
                errno::EINVAL
            );
        }
        for level in [0, 5, 255] {
            let e = x
                .pin_page_tables(3, &[(1, 0x10), (level, 0x11)])
                .unwrap_err();
            assert_eq!(e.errno, errno::EINVAL, "level {level}");
        }
        assert!(x.calls().is_empty());
        assert!(
            x.pinned_tables(3).is_empty(),
            "nothing pinned from a bad batch"
        );
    }
}
