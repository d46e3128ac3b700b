//! `FakeXen`: an in-memory hypervisor behind [`Hypervisor`], for tests of
//! the safe wrappers and of code above them.
//!
//! It checks calls exactly as a real doorway does (the same table of
//! admitted commands, handle slots and buffer lengths), then acts on a small
//! model: domains with flags, pages, page types, vCPU contexts (basic and
//! extended), vCPU MSRs, an address size, a dirty log, unbound event
//! channels, a grant table and pinned page tables. Like Xen 4.17,
//! `getdomaininfo` answers with the next domain at or above the one asked
//! for. The caller is domain 0 (`DOMID_SELF` names it).

use crate::abi::domctl::{
    self, dominf, pfinfo, shadow, AddressSize, CpuPolicy, Domctl, ExtVcpuContextRaw, GetDomainInfo,
    GetPageFrameInfo3, MaxMem, SchedCredit, SchedulerOp, SetDomainHandle, ShadowOp, TscInfo,
    VcpuContext, VcpuExtState, VcpuMsr, VcpuMsrs, XEN_DOMCTL_INTERFACE_VERSION,
};
use crate::abi::evtchn::{self, EvtchnAllocUnbound};
use crate::abi::grant_table::{self, gntst, GnttabSetupTable, GrantEntryV1};
use crate::abi::memory::{self, MemoryReservation};
use crate::abi::sysctl::{self, GetDomainInfoList, PhysInfo, Sysctl, XEN_SYSCTL_INTERFACE_VERSION};
use crate::abi::xen::{
    mmuext, CpuidLeaf, DomId, MmuUpdate, MmuextOp, MsrEntry, VcpuGuestContext, XenPfn, DOMID_SELF,
    PAGE_SIZE,
};
use crate::calls;
use crate::error::{errno, Error, Op};
use crate::hypervisor::{BufData, ForeignPages, GuestBuf, Hypervisor, Prot};
use crate::plain::PlainData;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The shared-info frame of a domain the fake creates: this plus its id.
pub const FAKE_SHARED_INFO_BASE: u64 = 0x7_0000_0000;

/// The fake MFN of a PFN: an offset that makes mix-ups visible.
pub const FAKE_MFN_OFFSET: u64 = 0x10_0000;

/// Where the fake puts grant-table frames: frame `i` of domain `d` is
/// `FAKE_GRANT_FRAME_BASE + (d << 8) + i`, apart from guest frames.
pub const FAKE_GRANT_FRAME_BASE: u64 = 0x80_0000;

/// The fake's `max_grant_frames` of every domain.
pub const FAKE_MAX_GRANT_FRAMES: u32 = 32;

/// The most MSRs the fake keeps per vCPU: what `get_vcpu_msrs` with a NULL
/// array answers, and the limit `set_vcpu_msrs` enforces.
pub const FAKE_MAX_VCPU_MSRS: u32 = 8;

/// One domain of the fake.
#[derive(Clone, Debug)]
pub struct FakeDomain {
    /// What getdomaininfo reports (`tot_pages` follows `memory`).
    pub info: GetDomainInfo,
    /// Guest pages by PFN.
    pub memory: BTreeMap<XenPfn, Box<[u8; PAGE_SIZE]>>,
    /// Page types (`XEN_DOMCTL_PFINFO_*`) of pages that are not plain.
    pub page_types: BTreeMap<XenPfn, u32>,
    /// Log-dirty enabled.
    pub logdirty: bool,
    /// PFNs dirtied since the last CLEAN.
    pub dirty: BTreeSet<XenPfn>,
    /// What the dirty log records for a write to page `n`: `n -
    /// dirty_offset`. Zero (the page's own number) models an HVM guest or
    /// a PV guest with an identity p2m; a PV test guest whose pfn `p` lives
    /// in frame `base + p` sets `base`, as Xen logs PV pages by pfn.
    pub dirty_offset: u64,
    /// `populate_physmap` keeps a new page at the machine frame it returns
    /// (a PV guest's view: its frames are named by mfn) instead of at the
    /// pfn asked for.
    pub pv_frames: bool,
    /// What settscinfo set last.
    pub tsc: Option<TscInfo>,
    /// One context per vCPU.
    pub vcpus: Vec<VcpuGuestContext>,
    /// One extended context per vCPU (`size` as the guest set it).
    pub ext_vcpus: Vec<ExtVcpuContextRaw>,
    /// Each vCPU's MSRs by index (zero values are not reported, as by Xen).
    pub msrs: Vec<BTreeMap<u32, u64>>,
    /// Address width in bits (`get/set_address_size`).
    pub address_size: u32,
    /// The next port `EVTCHNOP_alloc_unbound` hands out (from 1).
    pub next_port: u32,
    /// Unbound ports: port → the remote domain allowed to bind it.
    pub unbound_ports: BTreeMap<u32, DomId>,
    /// Grant-table frames by frame number (grown by `GNTTABOP_setup_table`;
    /// mapped like guest pages, not counted in `tot_pages`).
    pub grant_table: BTreeMap<XenPfn, Box<[u8; PAGE_SIZE]>>,
    /// Pinned page tables: MFN → level (1–4).
    pub pinned: BTreeMap<u64, u8>,
    /// The domain's scheduler (`XEN_SCHEDULER_*`: credit2, as Xen 4.17's
    /// default) and its credit parameters.
    pub scheduler: u32,
    /// Weight and cap (`XEN_DOMCTL_scheduler_op`).
    pub sched: SchedCredit,
}

impl FakeDomain {
    /// A running 64-bit PV domain with `pages` zeroed pages (PFN 0 up) and
    /// `vcpus` vCPUs.
    pub fn pv(domid: DomId, pages: u64, vcpus: u32) -> Self {
        let info = GetDomainInfo {
            domain: domid,
            flags: dominf::RUNNING,
            max_pages: pages,
            nr_online_vcpus: vcpus,
            max_vcpu_id: vcpus.wrapping_sub(1),
            ..Default::default()
        };
        let memory = (0..pages)
            .map(|p| (p, Box::new([0u8; PAGE_SIZE])))
            .collect();
        let n = vcpus as usize;
        let ext = ExtVcpuContextRaw {
            size: core::mem::size_of::<ExtVcpuContextRaw>() as u32,
            ..Default::default()
        };
        let mut d = FakeDomain {
            info,
            memory,
            page_types: BTreeMap::new(),
            logdirty: false,
            dirty: BTreeSet::new(),
            dirty_offset: 0,
            pv_frames: false,
            tsc: None,
            vcpus: vec![VcpuGuestContext::zeroed(); n],
            ext_vcpus: vec![ext; n],
            msrs: vec![BTreeMap::new(); n],
            address_size: 64,
            next_port: 1,
            unbound_ports: BTreeMap::new(),
            grant_table: BTreeMap::new(),
            pinned: BTreeMap::new(),
            scheduler: domctl::sched::CREDIT2,
            sched: SchedCredit {
                weight: 256,
                cap: 0,
            },
        };
        d.sync();
        d
    }

    fn sync(&mut self) {
        self.info.tot_pages = self.memory.len() as u64;
    }

    fn paused(&self) -> bool {
        self.info.flags & dominf::PAUSED != 0
    }

    fn max_gpfn(&self) -> u64 {
        self.memory.keys().next_back().copied().unwrap_or(0)
    }

    fn page(&self, frame: XenPfn) -> Option<&[u8; PAGE_SIZE]> {
        self.memory
            .get(&frame)
            .or_else(|| self.grant_table.get(&frame))
            .map(|b| &**b)
    }

    fn page_mut(&mut self, frame: XenPfn) -> Option<&mut [u8; PAGE_SIZE]> {
        match self.memory.get_mut(&frame) {
            Some(p) => Some(&mut **p),
            None => self.grant_table.get_mut(&frame).map(|b| &mut **b),
        }
    }

    /// Frame `i` of this domain's grant table.
    pub fn grant_frame(&self, i: u32) -> XenPfn {
        FAKE_GRANT_FRAME_BASE + (u64::from(self.info.domain) << 8) + u64::from(i)
    }

    /// Entry `gref` of the (v1) grant table, `None` beyond its frames.
    pub fn grant_entry(&self, gref: u32) -> Option<GrantEntryV1> {
        let per_frame = (PAGE_SIZE / core::mem::size_of::<GrantEntryV1>()) as u32;
        let page = self.grant_table.get(&self.grant_frame(gref / per_frame))?;
        let at = (gref % per_frame) as usize * core::mem::size_of::<GrantEntryV1>();
        GrantEntryV1::read_from(page.get(at..)?)
    }
}

#[derive(Debug, Default)]
struct State {
    domains: BTreeMap<DomId, FakeDomain>,
    physinfo: PhysInfo,
    calls: Vec<Op>,
    fail_next: Option<Error>,
    fail_on: Option<Error>,
    /// Fails every call of its operation, as a policy denies them all.
    fail_always: Option<Error>,
    /// What runs before each call of an operation: the guest acting
    /// between two of the caller's steps.
    before: Vec<(Op, Hook)>,
}

/// A closure [`FakeXen::before`] runs, given the fake.
#[derive(Clone)]
struct Hook(Arc<dyn Fn(&FakeXen) + Send + Sync>);

impl core::fmt::Debug for Hook {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Hook")
    }
}

/// The fake hypervisor. Cheap to clone: clones share the model.
#[derive(Clone, Debug, Default)]
pub struct FakeXen {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeXen {
    /// A fake with no domains and a small host in physinfo.
    pub fn new() -> Self {
        let fake = FakeXen::default();
        lock(&fake.state).physinfo = PhysInfo {
            threads_per_core: 1,
            cores_per_socket: 2,
            nr_cpus: 2,
            max_cpu_id: 1,
            nr_nodes: 1,
            cpu_khz: 2_000_000,
            capabilities: sysctl::physcap::PV | sysctl::physcap::SHADOW,
            total_pages: 262_144,
            free_pages: 131_072,
            max_mfn: 262_143,
            ..Default::default()
        };
        fake
    }

    /// Adds (or replaces) a domain.
    pub fn add_domain(&self, d: FakeDomain) {
        lock(&self.state).domains.insert(d.info.domain, d);
    }

    /// A copy of a domain's model.
    pub fn domain(&self, domid: DomId) -> Option<FakeDomain> {
        lock(&self.state).domains.get(&domid).cloned()
    }

    /// What the guest does: writes `data` at `offset` of page `pfn` (marked
    /// dirty when log-dirty is on). A paused guest cannot write: `false`.
    pub fn guest_write(&self, domid: DomId, pfn: XenPfn, offset: usize, data: &[u8]) -> bool {
        let mut st = lock(&self.state);
        let Some(d) = st.domains.get_mut(&domid) else {
            return false;
        };
        // A paused or shut-down (suspended) guest runs no code.
        if d.paused() || d.info.flags & dominf::SHUTDOWN != 0 {
            return false;
        }
        let Some(page) = d.memory.get_mut(&pfn) else {
            return false;
        };
        let Some(dst) = offset
            .checked_add(data.len())
            .and_then(|end| page.get_mut(offset..end))
        else {
            return false;
        };
        dst.copy_from_slice(data);
        if d.logdirty {
            d.dirty.insert(pfn.wrapping_sub(d.dirty_offset));
        }
        true
    }

    /// What the guest does: shuts down with `reason` (`SHUTDOWN_*`, e.g.
    /// `SHUTDOWN_suspend`). `false` when there is no such domain.
    pub fn guest_shutdown(&self, domid: DomId, reason: u8) -> bool {
        let mut st = lock(&self.state);
        let Some(d) = st.domains.get_mut(&domid) else {
            return false;
        };
        let code = dominf::SHUTDOWN_MASK << dominf::SHUTDOWN_SHIFT;
        d.info.flags = (d.info.flags & !code & !dominf::RUNNING)
            | dominf::SHUTDOWN
            | (u32::from(reason) << dominf::SHUTDOWN_SHIFT);
        true
    }

    /// Makes `populate_physmap` keep `domid`'s new pages at the machine
    /// frames it returns ([`FakeDomain::pv_frames`]).
    pub fn set_pv_frames(&self, domid: DomId, on: bool) {
        if let Some(d) = lock(&self.state).domains.get_mut(&domid) {
            d.pv_frames = on;
        }
    }

    /// Sets a page's type (as getpageframeinfo3 will report it).
    pub fn set_page_type(&self, domid: DomId, pfn: XenPfn, ty: u32) {
        if let Some(d) = lock(&self.state).domains.get_mut(&domid) {
            d.page_types.insert(pfn, ty);
        }
    }

    /// The unbound event channels `EVTCHNOP_alloc_unbound` made in domain
    /// `domid`: (port, remote domain), by port.
    pub fn unbound_ports(&self, domid: DomId) -> Vec<(u32, DomId)> {
        lock(&self.state)
            .domains
            .get(&domid)
            .map(|d| d.unbound_ports.iter().map(|(&p, &r)| (p, r)).collect())
            .unwrap_or_default()
    }

    /// The page tables pinned in domain `domid`: (MFN, level), by MFN.
    pub fn pinned_tables(&self, domid: DomId) -> Vec<(u64, u8)> {
        lock(&self.state)
            .domains
            .get(&domid)
            .map(|d| d.pinned.iter().map(|(&m, &l)| (m, l)).collect())
            .unwrap_or_default()
    }

    /// Replaces physinfo.
    pub fn set_physinfo(&self, p: PhysInfo) {
        lock(&self.state).physinfo = p;
    }

    /// Makes the next call fail with `errno`, as Xen would.
    pub fn fail_next(&self, op: Op, errno: i32) {
        lock(&self.state).fail_next = Some(Error::new(op, errno));
    }

    /// Makes the next call of `op` (whatever comes before it) fail with
    /// `errno`.
    pub fn fail_on(&self, op: Op, errno: i32) {
        lock(&self.state).fail_on = Some(Error::new(op, errno));
    }

    /// Makes every later call of `op` fail with `errno`, as a security
    /// policy that denies it does (where [`FakeXen::fail_on`] fails the
    /// next one only).
    pub fn fail_always(&self, op: Op, errno: i32) {
        lock(&self.state).fail_always = Some(Error::new(op, errno));
    }

    /// Runs `hook` before every later call of `op`, with the model
    /// unlocked, so it may act as the guest does ([`FakeXen::guest_write`])
    /// at a point of the caller's sequence rather than whenever a thread
    /// happens to be scheduled.
    pub fn before(&self, op: Op, hook: impl Fn(&FakeXen) + Send + Sync + 'static) {
        lock(&self.state).before.push((op, Hook(Arc::new(hook))));
    }

    /// Ends [`FakeXen::fail_always`].
    pub fn stop_failing(&self) {
        lock(&self.state).fail_always = None;
    }

    /// The calls that reached the fake (after the doorway's checks), in
    /// order.
    pub fn calls(&self) -> Vec<Op> {
        lock(&self.state).calls.clone()
    }

    /// [`FakeXen::enter`] for an operation on domain `domid`: a failure
    /// made to happen names it, as a real doorway's does.
    fn enter_on(&self, op: Op, domid: Option<DomId>) -> Result<MutexGuard<'_, State>, Error> {
        self.enter(op).map_err(|e| calls::on_domain(e, domid))
    }

    fn enter(&self, op: Op) -> Result<MutexGuard<'_, State>, Error> {
        let hooks: Vec<Hook> = lock(&self.state)
            .before
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, h)| h.clone())
            .collect();
        for h in hooks {
            (h.0)(self);
        }
        let mut st = lock(&self.state);
        st.calls.push(op);
        if let Some(e) = st.fail_on.filter(|e| e.op == op) {
            st.fail_on = None;
            return Err(e);
        }
        if let Some(e) = st.fail_always.filter(|e| e.op == op) {
            return Err(e);
        }
        match st.fail_next.take() {
            Some(e) => Err(Error::new(op, e.errno)),
            None => Ok(st),
        }
    }
}

fn buf_for<'b, 'a>(bufs: &'b mut [GuestBuf<'a>], slot: usize) -> Option<&'b mut BufData<'a>> {
    bufs.iter_mut()
        .find(|b| b.slot == slot)
        .map(|b| &mut b.data)
}

fn out_bytes<'b>(bufs: &'b mut [GuestBuf<'_>], slot: usize, op: Op) -> Result<&'b mut [u8], Error> {
    // An unbound handle is NULL: Xen's copy to it faults.
    buf_for(bufs, slot)
        .and_then(|d| d.output())
        .ok_or(Error::new(op, errno::EFAULT))
}

fn in_bytes<'b>(bufs: &'b mut [GuestBuf<'_>], slot: usize, op: Op) -> Result<&'b [u8], Error> {
    buf_for(bufs, slot)
        .and_then(|d| d.input())
        .ok_or(Error::new(op, errno::EFAULT))
}

fn domain(st: &mut State, domid: DomId, op: Op) -> Result<&mut FakeDomain, Error> {
    st.domains
        .get_mut(&domid)
        .ok_or(Error::new(op, errno::ESRCH))
}

impl Hypervisor for FakeXen {
    type Mapping = FakeMapping;

    fn domctl(&self, d: &mut Domctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        let op = Op::Domctl(d.cmd);
        calls::domctl_handles(d)?.check(op, bufs)?;
        let mut st = self.enter_on(op, Some(d.domain))?;
        if d.interface_version != XEN_DOMCTL_INTERFACE_VERSION {
            return Err(Error::new(op, errno::EACCES));
        }
        let at = Domctl::union_offset;
        match d.cmd {
            domctl::cmd::GETDOMAININFO => {
                let (id, dom) = st
                    .domains
                    .range(d.domain..)
                    .next()
                    .ok_or(Error::new(op, errno::ESRCH))?;
                d.domain = *id;
                d.set_payload(&dom.info);
            }
            domctl::cmd::CREATEDOMAIN => {
                let cfg: domctl::CreateDomain = d.payload();
                let id = match d.domain {
                    0 => (1..crate::abi::xen::DOMID_FIRST_RESERVED)
                        .find(|id| !st.domains.contains_key(id))
                        .ok_or(Error::new(op, errno::ENOMEM))?,
                    id if st.domains.contains_key(&id) => {
                        return Err(Error::new(op, errno::EEXIST))
                    }
                    id => id,
                };
                let mut dom = FakeDomain::pv(id, 0, cfg.max_vcpus);
                dom.info.flags = dominf::PAUSED;
                dom.info.handle = cfg.handle;
                // the security label asked for, as getdomaininfo shows it
                dom.info.ssidref = cfg.ssidref;
                // A new PV domain: its pages are named by machine frame,
                // and Xen gives it a shared-info page of its own (kept with
                // the other Xen-owned pages it may map).
                dom.pv_frames = cfg.flags & domctl::cdf::HVM == 0;
                let shinfo = FAKE_SHARED_INFO_BASE + u64::from(id);
                dom.info.shared_info_frame = shinfo;
                dom.grant_table.insert(shinfo, Box::new([0; PAGE_SIZE]));
                st.domains.insert(id, dom);
                d.domain = id;
            }
            domctl::cmd::PAUSEDOMAIN => {
                let dom = domain(&mut st, d.domain, op)?;
                dom.info.flags = (dom.info.flags | dominf::PAUSED) & !dominf::RUNNING;
            }
            domctl::cmd::UNPAUSEDOMAIN => {
                let dom = domain(&mut st, d.domain, op)?;
                dom.info.flags = (dom.info.flags & !dominf::PAUSED) | dominf::RUNNING;
            }
            domctl::cmd::DESTROYDOMAIN => {
                st.domains
                    .remove(&d.domain)
                    .ok_or(Error::new(op, errno::ESRCH))?;
            }
            domctl::cmd::SCHEDULER_OP => {
                let p: SchedulerOp = d.payload();
                let dom = domain(&mut st, d.domain, op)?;
                // Xen refuses an id other than the domain's scheduler.
                if p.sched_id != dom.scheduler {
                    return Err(Error::new(op, errno::EINVAL));
                }
                match p.cmd {
                    domctl::sched::OP_GETINFO => {
                        d.set_payload(&SchedulerOp::with_credit(p.sched_id, p.cmd, dom.sched));
                    }
                    domctl::sched::OP_PUTINFO => {
                        let c = p.credit();
                        // Xen leaves a 0 weight alone (credit2 refuses
                        // none); a cap above 100 · vCPUs is refused.
                        if c.weight != 0 {
                            dom.sched.weight = c.weight;
                        }
                        if u32::from(c.cap) > 100 * dom.info.nr_online_vcpus.max(1) {
                            return Err(Error::new(op, errno::EINVAL));
                        }
                        dom.sched.cap = c.cap;
                    }
                    _ => return Err(Error::new(op, errno::EINVAL)),
                }
            }
            domctl::cmd::MAX_MEM => {
                let p: MaxMem = d.payload();
                domain(&mut st, d.domain, op)?.info.max_pages = p.max_memkb / 4;
            }
            domctl::cmd::SHADOW_OP => {
                let mut p: ShadowOp = d.payload();
                let dom = domain(&mut st, d.domain, op)?;
                match p.op {
                    shadow::OP_ENABLE_LOGDIRTY if dom.logdirty => {
                        return Err(Error::new(op, errno::EINVAL))
                    }
                    shadow::OP_ENABLE_LOGDIRTY => dom.logdirty = true,
                    shadow::OP_OFF => {
                        dom.logdirty = false;
                        dom.dirty.clear();
                    }
                    shadow::OP_CLEAN | shadow::OP_PEEK => {
                        if !dom.logdirty {
                            return Err(Error::new(op, errno::EINVAL));
                        }
                        let pages = p.pages.min(dom.max_gpfn() + 1);
                        let bitmap =
                            out_bytes(bufs, at(core::mem::offset_of!(ShadowOp, dirty_bitmap)), op)?;
                        bitmap.fill(0);
                        let mut count = 0u32;
                        for &pfn in dom.dirty.range(..pages) {
                            if let Some(b) = bitmap.get_mut((pfn / 8) as usize) {
                                *b |= 1 << (pfn % 8);
                                count += 1;
                            }
                        }
                        if p.op == shadow::OP_CLEAN {
                            dom.dirty.clear();
                        }
                        p.pages = pages;
                        p.stats.dirty_count = count;
                        d.set_payload(&p);
                    }
                    _ => return Err(Error::new(op, errno::EINVAL)),
                }
            }
            domctl::cmd::GETPAGEFRAMEINFO3 => {
                let p: GetPageFrameInfo3 = d.payload();
                if p.num > crate::PFINFO_BATCH_MAX as u64 {
                    return Err(Error::new(op, errno::E2BIG));
                }
                let dom = domain(&mut st, d.domain, op)?;
                let arr = out_bytes(
                    bufs,
                    at(core::mem::offset_of!(GetPageFrameInfo3, array)),
                    op,
                )?;
                for e in arr.chunks_exact_mut(8).take(p.num as usize) {
                    let pfn = u64::from_ne_bytes(e.try_into().unwrap_or([0; 8]))
                        & !(u64::from(pfinfo::LTAB_MASK));
                    let ty = if dom.memory.contains_key(&pfn) {
                        dom.page_types.get(&pfn).copied().unwrap_or(pfinfo::NOTAB)
                    } else {
                        pfinfo::XTAB
                    };
                    e.copy_from_slice(&(pfn | u64::from(ty)).to_ne_bytes());
                }
            }
            domctl::cmd::GETVCPUCONTEXT | domctl::cmd::SETVCPUCONTEXT => {
                let p: VcpuContext = d.payload();
                let slot = at(core::mem::offset_of!(VcpuContext, ctxt));
                let dom = domain(&mut st, d.domain, op)?;
                let ctxt = dom
                    .vcpus
                    .get_mut(p.vcpu as usize)
                    .ok_or(Error::new(op, errno::ESRCH))?;
                if d.cmd == domctl::cmd::GETVCPUCONTEXT {
                    let _ = ctxt.write_to(out_bytes(bufs, slot, op)?);
                } else {
                    *ctxt = VcpuGuestContext::read_from(in_bytes(bufs, slot, op)?)
                        .ok_or(Error::new(op, errno::EFAULT))?;
                }
            }
            domctl::cmd::GET_ADDRESS_SIZE => {
                let size = domain(&mut st, d.domain, op)?.address_size;
                d.set_payload(&AddressSize { size });
            }
            domctl::cmd::SET_ADDRESS_SIZE => {
                let p: AddressSize = d.payload();
                if p.size != 32 && p.size != 64 {
                    return Err(Error::new(op, errno::EINVAL));
                }
                domain(&mut st, d.domain, op)?.address_size = p.size;
            }
            domctl::cmd::RESUMEDOMAIN => {
                // Clears the shutdown; a toolstack pause stays.
                let dom = domain(&mut st, d.domain, op)?;
                let code = dominf::SHUTDOWN_MASK << dominf::SHUTDOWN_SHIFT;
                let mut flags = dom.info.flags & !code & !dominf::SHUTDOWN;
                if flags & dominf::PAUSED == 0 {
                    flags |= dominf::RUNNING;
                }
                dom.info.flags = flags;
            }
            domctl::cmd::SETDOMAINHANDLE => {
                let p: SetDomainHandle = d.payload();
                domain(&mut st, d.domain, op)?.info.handle = p.handle;
            }
            domctl::cmd::GET_EXT_VCPUCONTEXT | domctl::cmd::SET_EXT_VCPUCONTEXT => {
                let mut p: ExtVcpuContextRaw = d.payload();
                let dom = domain(&mut st, d.domain, op)?;
                let ext = dom
                    .ext_vcpus
                    .get_mut(p.vcpu as usize)
                    .ok_or(Error::new(op, errno::ESRCH))?;
                let full = core::mem::size_of::<ExtVcpuContextRaw>();
                if d.cmd == domctl::cmd::GET_EXT_VCPUCONTEXT {
                    let vcpu = p.vcpu;
                    p = *ext;
                    p.vcpu = vcpu;
                    p.size = full as u32;
                    d.set_payload(&p);
                } else {
                    // As Xen: at least everything before the vMCE state.
                    let size = p.size as usize;
                    if size < core::mem::offset_of!(ExtVcpuContextRaw, vmce) {
                        return Err(Error::new(op, errno::EINVAL));
                    }
                    if let Some(tail) = p.as_bytes_mut().get_mut(size.min(full)..) {
                        tail.fill(0);
                    }
                    *ext = p;
                }
            }
            domctl::cmd::GET_VCPU_MSRS | domctl::cmd::SET_VCPU_MSRS => {
                let mut p: VcpuMsrs = d.payload();
                let slot = at(core::mem::offset_of!(VcpuMsrs, msrs));
                let dom = domain(&mut st, d.domain, op)?;
                let msrs = dom
                    .msrs
                    .get_mut(p.vcpu as usize)
                    .ok_or(Error::new(op, errno::ESRCH))?;
                let each = core::mem::size_of::<VcpuMsr>();
                if d.cmd == domctl::cmd::GET_VCPU_MSRS {
                    let Some(data) = buf_for(bufs, slot) else {
                        // NULL array: the maximum count.
                        p.msr_count = FAKE_MAX_VCPU_MSRS;
                        d.set_payload(&p);
                        return Ok(());
                    };
                    let out = data.output().ok_or(Error::new(op, errno::EFAULT))?;
                    let live: Vec<VcpuMsr> = msrs
                        .iter()
                        .filter(|(_, &v)| v != 0)
                        .map(|(&index, &value)| VcpuMsr {
                            index,
                            reserved: 0,
                            value,
                        })
                        .collect();
                    let fits = live.len() <= p.msr_count as usize;
                    for (m, dst) in live.iter().zip(out.chunks_exact_mut(each)) {
                        let _ = m.write_to(dst);
                    }
                    p.msr_count = live.len() as u32;
                    d.set_payload(&p);
                    if !fits {
                        return Err(Error::new(op, errno::ENOBUFS));
                    }
                } else {
                    if p.msr_count > FAKE_MAX_VCPU_MSRS {
                        return Err(Error::new(op, errno::EINVAL));
                    }
                    let src = in_bytes(bufs, slot, op)?;
                    let given: Vec<VcpuMsr> = src
                        .chunks_exact(each)
                        .take(p.msr_count as usize)
                        .filter_map(VcpuMsr::read_from)
                        .collect();
                    if let Some(bad) = given.iter().position(|m| m.reserved != 0) {
                        p.msr_count = bad as u32;
                        d.set_payload(&p);
                        return Err(Error::new(op, errno::EINVAL));
                    }
                    let mut next = msrs.clone();
                    next.extend(given.iter().map(|m| (m.index, m.value)));
                    if next.len() > FAKE_MAX_VCPU_MSRS as usize {
                        return Err(Error::new(op, errno::EINVAL));
                    }
                    *msrs = next;
                }
            }
            domctl::cmd::GET_CPU_POLICY => {
                // Two CPUID leaves and one MSR: enough to carry through a
                // stream and compare.
                domain(&mut st, d.domain, op)?;
                let mut p: CpuPolicy = d.payload();
                let leaves = [
                    CpuidLeaf {
                        leaf: 0,
                        subleaf: u32::MAX,
                        a: 0xd,
                        b: 0x756e_6547,
                        c: 0x6c65_746e,
                        d: 0x4965_6e69,
                    },
                    CpuidLeaf {
                        leaf: 1,
                        subleaf: u32::MAX,
                        a: 0x663,
                        b: 0,
                        c: 0x8000_0000,
                        d: 0x0781_abfd,
                    },
                ];
                let msrs = [MsrEntry {
                    idx: 0xce,
                    flags: 0,
                    val: 0,
                }];
                if (p.nr_leaves as usize) < leaves.len() || (p.nr_msrs as usize) < msrs.len() {
                    return Err(Error::new(op, errno::ENOBUFS));
                }
                let lslot = at(core::mem::offset_of!(CpuPolicy, leaves));
                let mslot = at(core::mem::offset_of!(CpuPolicy, msrs));
                let out = out_bytes(bufs, lslot, op)?;
                for (l, dst) in leaves
                    .iter()
                    .zip(out.chunks_exact_mut(core::mem::size_of::<CpuidLeaf>()))
                {
                    let _ = l.write_to(dst);
                }
                let out = out_bytes(bufs, mslot, op)?;
                for (m, dst) in msrs
                    .iter()
                    .zip(out.chunks_exact_mut(core::mem::size_of::<MsrEntry>()))
                {
                    let _ = m.write_to(dst);
                }
                p.nr_leaves = leaves.len() as u32;
                p.nr_msrs = msrs.len() as u32;
                d.set_payload(&p);
            }
            domctl::cmd::GETTSCINFO => {
                domain(&mut st, d.domain, op)?;
                d.set_payload(&TscInfo {
                    tsc_mode: 0,
                    gtsc_khz: 2_000_000,
                    incarnation: 1,
                    pad: 0,
                    elapsed_nsec: 123_456_789,
                });
            }
            domctl::cmd::MAX_VCPUS => {
                // As Xen 4.17: only the count createdomain set is accepted
                // (it creates the vCPUs, which the model has already).
                let p: crate::abi::domctl::MaxVcpus = d.payload();
                let dom = domain(&mut st, d.domain, op)?;
                if p.max as usize != dom.vcpus.len() {
                    return Err(Error::new(op, errno::EINVAL));
                }
            }
            domctl::cmd::SET_CPU_POLICY | domctl::cmd::SETVCPUEXTSTATE => {
                // Accepted as given (Xen would audit them).
                domain(&mut st, d.domain, op)?;
            }
            domctl::cmd::SETTSCINFO => {
                let t: TscInfo = d.payload();
                domain(&mut st, d.domain, op)?.tsc = Some(t);
            }
            domctl::cmd::GETVCPUEXTSTATE => {
                // A CPU without XSAVE: no extended state.
                domain(&mut st, d.domain, op)?;
                let mut p: VcpuExtState = d.payload();
                p.xfeature_mask = 0;
                p.size = 0;
                d.set_payload(&p);
            }
            _ => return Err(Error::new(op, errno::ENOSYS)),
        }
        Ok(())
    }

    fn sysctl(&self, s: &mut Sysctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        let op = Op::Sysctl(s.cmd);
        calls::sysctl_handles(s)?.check(op, bufs)?;
        let st = self.enter(op)?;
        if s.interface_version != XEN_SYSCTL_INTERFACE_VERSION {
            return Err(Error::new(op, errno::EACCES));
        }
        match s.cmd {
            sysctl::cmd::PHYSINFO => s.set_payload(&st.physinfo),
            sysctl::cmd::GETDOMAININFOLIST => {
                let mut p: GetDomainInfoList = s.payload();
                let out = out_bytes(
                    bufs,
                    Sysctl::union_offset(core::mem::offset_of!(GetDomainInfoList, buffer)),
                    op,
                )?;
                let mut n = 0u32;
                let slots = out.chunks_exact_mut(core::mem::size_of::<GetDomainInfo>());
                for (dom, slot) in st
                    .domains
                    .range(p.first_domain..)
                    .map(|(_, d)| d)
                    .zip(slots)
                    .take(p.max_domains as usize)
                {
                    let _ = dom.info.write_to(slot);
                    n += 1;
                }
                p.num_domains = n;
                s.set_payload(&p);
            }
            _ => return Err(Error::new(op, errno::ENOSYS)),
        }
        Ok(())
    }

    fn memory_op(&self, cmd: u32, arg: &mut [u8], bufs: &mut [GuestBuf<'_>]) -> Result<u64, Error> {
        let op = Op::MemoryOp(cmd);
        calls::memory_op_handles(cmd, arg)?.check(op, bufs)?;
        let mut st = self.enter_on(op, calls::memory_op_domain(cmd, arg))?;
        match cmd {
            memory::cmd::MAXIMUM_GPFN => {
                let domid = DomId::read_from(arg).ok_or(Error::new(op, errno::EFAULT))?;
                Ok(domain(&mut st, domid, op)?.max_gpfn())
            }
            memory::cmd::POPULATE_PHYSMAP => {
                let r = MemoryReservation::read_from(arg).ok_or(Error::new(op, errno::EFAULT))?;
                if r.extent_order != 0 {
                    return Err(Error::new(op, errno::EINVAL));
                }
                let dom = domain(&mut st, r.domid, op)?;
                let slot = core::mem::offset_of!(MemoryReservation, extent_start);
                let ext = out_bytes(bufs, slot, op)?;
                let mut done = 0u64;
                for e in ext.chunks_exact_mut(8).take(r.nr_extents as usize) {
                    let pfn = u64::from_ne_bytes(e.try_into().unwrap_or([0; 8]));
                    let key = if dom.pv_frames {
                        pfn + FAKE_MFN_OFFSET
                    } else {
                        pfn
                    };
                    dom.memory
                        .entry(key)
                        .or_insert_with(|| Box::new([0; PAGE_SIZE]));
                    e.copy_from_slice(&(pfn + FAKE_MFN_OFFSET).to_ne_bytes());
                    done += 1;
                }
                dom.sync();
                Ok(done)
            }
            _ => Err(Error::new(op, errno::ENOSYS)),
        }
    }

    fn event_channel_op(&self, cmd: u32, arg: &mut [u8]) -> Result<u64, Error> {
        let op = Op::Hypercall(crate::abi::xen::hypercall::EVENT_CHANNEL_OP);
        calls::event_channel_op_handles(cmd, arg)?;
        let mut st = self.enter_on(op, calls::event_channel_op_domain(cmd, arg))?;
        match cmd {
            evtchn::cmd::ALLOC_UNBOUND => {
                let mut a =
                    EvtchnAllocUnbound::read_from(arg).ok_or(Error::new(op, errno::EFAULT))?;
                let self_to_0 = |d: DomId| if d == DOMID_SELF { 0 } else { d };
                let dom = domain(&mut st, self_to_0(a.dom), op)?;
                let port = dom.next_port;
                dom.next_port += 1;
                dom.unbound_ports.insert(port, self_to_0(a.remote_dom));
                a.port = port;
                let _ = a.write_to(arg);
                Ok(0)
            }
            _ => Err(Error::new(op, errno::ENOSYS)),
        }
    }

    fn grant_table_op(
        &self,
        cmd: u32,
        arg: &mut [u8],
        bufs: &mut [GuestBuf<'_>],
    ) -> Result<u64, Error> {
        let op = Op::Hypercall(crate::abi::xen::hypercall::GRANT_TABLE_OP);
        calls::grant_table_op_handles(cmd, arg)?.check(op, bufs)?;
        let mut st = self.enter(op)?;
        if cmd != grant_table::cmd::SETUP_TABLE {
            return Err(Error::new(op, errno::ENOSYS));
        }
        let mut s = GnttabSetupTable::read_from(arg).ok_or(Error::new(op, errno::EFAULT))?;
        let domid = if s.dom == DOMID_SELF { 0 } else { s.dom };
        s.status = match st.domains.get_mut(&domid) {
            None => gntst::BAD_DOMAIN,
            Some(_) if s.nr_frames > FAKE_MAX_GRANT_FRAMES => gntst::GENERAL_ERROR,
            Some(dom) => {
                let frames: Vec<XenPfn> = (0..s.nr_frames).map(|i| dom.grant_frame(i)).collect();
                for &f in &frames {
                    dom.grant_table
                        .entry(f)
                        .or_insert_with(|| Box::new([0; PAGE_SIZE]));
                }
                let slot = core::mem::offset_of!(GnttabSetupTable, frame_list);
                let out = out_bytes(bufs, slot, op)?;
                for (f, dst) in frames.iter().zip(out.chunks_exact_mut(8)) {
                    dst.copy_from_slice(&f.to_ne_bytes());
                }
                gntst::OKAY
            }
        };
        let _ = s.write_to(arg);
        Ok(0)
    }

    unsafe fn mmuext_op(&self, ops: &[MmuextOp], domid: DomId) -> Result<(), Error> {
        let op = Op::MmuextOp;
        let mut st = self.enter_on(op, Some(domid))?;
        // The caller (domain 0) cannot name itself, as in `get_pg_owner`.
        if domid == 0 {
            return Err(Error::new(op, errno::ESRCH));
        }
        let dom = domain(&mut st, domid, op)?;
        for o in ops {
            match o.cmd {
                mmuext::PIN_L1_TABLE..=mmuext::PIN_L4_TABLE => {
                    if dom.pinned.contains_key(&o.arg1) {
                        return Err(Error::new(op, errno::EINVAL));
                    }
                    dom.pinned.insert(o.arg1, (o.cmd + 1) as u8);
                }
                mmuext::UNPIN_TABLE => {
                    dom.pinned
                        .remove(&o.arg1)
                        .ok_or(Error::new(op, errno::EINVAL))?;
                }
                _ => return Err(Error::new(op, errno::ENOSYS)),
            }
        }
        Ok(())
    }

    unsafe fn mmu_update(&self, _reqs: &[MmuUpdate], domid: DomId) -> Result<(), Error> {
        self.enter_on(Op::MmuUpdate, Some(domid)).map(|_| ())
    }

    fn map_foreign(&self, domid: DomId, pfns: &[XenPfn], prot: Prot) -> Result<FakeMapping, Error> {
        let op = Op::MapForeign;
        let mut st = self.enter_on(op, Some(domid))?;
        if pfns.is_empty() {
            return Err(Error::new(op, errno::EINVAL));
        }
        let dom = domain(&mut st, domid, op)?;
        let errs = pfns
            .iter()
            .map(|p| {
                if dom.page(*p).is_some() {
                    0
                } else {
                    -errno::EINVAL
                }
            })
            .collect();
        Ok(FakeMapping {
            state: Arc::clone(&self.state),
            domid,
            pfns: pfns.to_vec(),
            errs,
            prot,
        })
    }
}

/// A foreign mapping of the fake: reads and writes go to the model, so the
/// guest's later writes are seen, as through a real mapping.
#[derive(Debug)]
pub struct FakeMapping {
    state: Arc<Mutex<State>>,
    domid: DomId,
    pfns: Vec<XenPfn>,
    errs: Vec<i32>,
    prot: Prot,
}

impl FakeMapping {
    fn check(&self, i: usize) -> Result<XenPfn, Error> {
        match self.page_error(i) {
            None => self
                .pfns
                .get(i)
                .copied()
                .ok_or(Error::new(Op::MapForeign, errno::EINVAL)),
            Some(e) => Err(Error::new(Op::MapForeign, e)),
        }
    }
}

impl ForeignPages for FakeMapping {
    fn len(&self) -> usize {
        self.pfns.len()
    }

    fn page_error(&self, i: usize) -> Option<i32> {
        match self.errs.get(i) {
            None => Some(errno::EINVAL),
            Some(0) => None,
            Some(&e) => Some(e.wrapping_abs()),
        }
    }

    fn read_page(&self, i: usize, dst: &mut [u8; PAGE_SIZE]) -> Result<(), Error> {
        let pfn = self.check(i)?;
        let st = lock(&self.state);
        let page = st.domains.get(&self.domid).and_then(|d| d.page(pfn));
        let page = page.ok_or(Error::new(Op::MapForeign, errno::EFAULT))?;
        dst.copy_from_slice(page);
        Ok(())
    }

    fn write_page(&mut self, i: usize, src: &[u8; PAGE_SIZE]) -> Result<(), Error> {
        if self.prot != Prot::ReadWrite {
            return Err(Error::new(Op::MapForeign, errno::EACCES));
        }
        let pfn = self.check(i)?;
        let mut st = lock(&self.state);
        let page = st
            .domains
            .get_mut(&self.domid)
            .and_then(|d| d.page_mut(pfn));
        page.ok_or(Error::new(Op::MapForeign, errno::EFAULT))?
            .copy_from_slice(src);
        Ok(())
    }
}
