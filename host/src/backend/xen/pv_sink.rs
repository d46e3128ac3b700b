//! [`PvSink`]: a 64-bit PV guest built on a real Xen from a migration
//! stream, as the core's [`SinkGuest`] (Xen's `restore_ops` for x86 PV, plus
//! what libxl does around them so the guest can live: event channels for
//! its store and console, its grant-table entries for them, its xenstore
//! tree and introduction).
//!
//! | step | Xen |
//! | --- | --- |
//! | `create` | createdomain (paused), max_vcpus (which creates them), max_mem, address size 64, two unbound event channels towards dom0 |
//! | `record` `X86_PV_INFO` | 64-bit, 4 levels, or refused |
//! | `record` policies | kept; applied (set_cpu_policy) when `X86_PV_P2M_FRAMES` ends the static data |
//! | `record` `X86_PV_P2M_FRAMES` | the p2m's size and the pfns of the guest's own p2m pages |
//! | `populate` | populate_physmap for pfns not yet backed: the new machine frames |
//! | `write_pages` | one writable foreign mapping a batch; page tables localised by `relocd_core::pv` (frames they name but the stream has not sent yet are populated first) |
//! | `record` `X86_TSC_INFO` | settscinfo |
//! | `record` `SHARED_INFO` | vCPU info and arch fields copied into the new shared-info page, event channels pending none and all masked |
//! | `record` `X86_PV_VCPU_*` | kept until `complete` |
//! | `complete` | start info rewritten (store and console frames and ports), vCPU state set (cr3, GDT, start info as machine frames), page tables pinned, the guest's p2m written, grant entries 0 and 1 seeded, xenstore tree written and the domain introduced |
//! | `unpause` / `destroy` | unpausedomain / destroydomain and its xenstore tree |
//!
//! Any failure leaves a domain that `destroy` removes; nothing runs until
//! `unpause`.

use std::collections::HashMap;

use relocd_core::guest::{PageType, Pfn, SchedParams, SinkGuest, PAGE_SIZE};
use relocd_core::pv::{self, FrameMap};
use relocd_core::stream::x86::TscInfoRepr;
use relocd_core::stream::x86_pv::{PvInfoRepr, VCPU_HEADER_LEN};
use relocd_core::stream::RecordType;
use relocd_hypercall::abi::domctl::{CreateDomain, TscInfo, VcpuMsr};
use relocd_hypercall::abi::xen::{vgcf, CpuidLeaf, MsrEntry, VcpuGuestContext};
use relocd_hypercall::{DomId, ForeignPages, Hypervisor, PlainData, Prot, XenOps};

use super::xenstore::{Access, Perm, Transport, Xenstore};

/// A hole in the p2m.
const INVALID_MFN: u64 = u64::MAX;
/// Most pfns a stream may announce, relative to the guest's memory: four
/// times its pages plus 1 Mi (holes are cheap, but the map is not free).
const P2M_SLACK: u64 = 1 << 20;
/// What Xen's memory limit adds to a guest's memory (libxl's
/// `LIBXL_MAXMEM_CONSTANT`), KiB.
pub const MAXMEM_SLACK_KIB: u64 = 1024;
/// Highest GDT entry a guest may use (`FIRST_RESERVED_GDT_ENTRY`).
const MAX_GDT_ENTRIES: u64 = 7168;
/// Offsets in `start_info_t` (x86_64).
mod start_info {
    pub const NR_PAGES: usize = 32;
    pub const SHARED_INFO: usize = 40;
    pub const FLAGS: usize = 48;
    pub const STORE_MFN: usize = 56;
    pub const STORE_EVTCHN: usize = 64;
    pub const CONSOLE_MFN: usize = 72;
    pub const CONSOLE_EVTCHN: usize = 80;
}
/// Offsets in `struct shared_info` (x86_64).
mod shinfo {
    pub const VCPU_INFO: usize = 0;
    pub const VCPU_INFO_LEN: usize = 64;
    pub const LEGACY_VCPUS: usize = 32;
    pub const PENDING_SEL: usize = 8;
    pub const EVTCHN_PENDING: usize = 2048;
    pub const EVTCHN_MASK: usize = 2560;
    pub const ARCH: usize = 3088;
    pub const ARCH_LEN: usize = 48;
    pub const FRAME_LIST_LIST: usize = 3096;
}
/// The reserved grant entries (`GNTTAB_RESERVED_CONSOLE`, `_XENSTORE`).
const GNT_CONSOLE: usize = 0;
const GNT_XENSTORE: usize = 1;
/// `GTF_permit_access`.
const GTF_PERMIT_ACCESS: u16 = 1;
/// The domain serving store and console (dom0 here).
const BACKEND_DOMID: DomId = 0;

/// Why building a PV guest failed. `Copy`, as the core's traits want.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PvRestoreError {
    /// A hypercall failed.
    #[error(transparent)]
    Xen(#[from] relocd_hypercall::Error),
    /// Xen refused to map a frame of the new guest.
    #[error("mapping {what} of the new guest failed (errno {errno})")]
    Map {
        /// What was being mapped.
        what: &'static str,
        /// The errno of the frame that failed.
        errno: i32,
    },
    /// The stream does not describe a guest this sink can build.
    #[error("the image: {0}")]
    Image(&'static str),
    /// A page table of the image is unusable.
    #[error("page table at pfn {pfn:#x}: {err}")]
    PageTable {
        /// Its pfn.
        pfn: u64,
        /// What is wrong.
        err: pv::PvError,
    },
    /// A vCPU's state of the image is unusable.
    #[error("vCPU {vcpu}: {what}")]
    Vcpu {
        /// The vCPU.
        vcpu: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// xenstore refused (the message is in the daemon's log).
    #[error("xenstore: {0}")]
    Store(&'static str),
    /// A device's backend is not ready.
    #[error("devices: {0}")]
    Devices(&'static str),
    /// A guest kind this sink does not build.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl PvRestoreError {
    /// Frame `what` of the new domain `domid` could not be mapped
    /// (`errno`): a denial by Xen's security policy is Xen's error, naming
    /// the domain and the FLASK permission.
    fn map(what: &'static str, errno: i32, domid: DomId) -> Self {
        let e = relocd_hypercall::Error::new(relocd_hypercall::Op::MapForeign, errno).on(domid);
        if e.denied_by_policy() {
            PvRestoreError::Xen(e)
        } else {
            PvRestoreError::Map { what, errno }
        }
    }
}

type Result<T> = core::result::Result<T, PvRestoreError>;

/// What the new domain is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvCreate {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Its memory, KiB (libxl's `static-max` and target); Xen lets it have
    /// [`MAXMEM_SLACK_KIB`] more, as libxl does.
    pub max_memkb: u64,
    /// vCPUs.
    pub vcpus: u32,
}

/// One vCPU's records, kept until `complete`.
#[derive(Clone, Debug, Default)]
struct VcpuRecords {
    basic: Option<Vec<u8>>,
    extended: Option<Vec<u8>>,
    xsave: Option<Vec<u8>>,
    msrs: Option<Vec<u8>>,
}

/// The guest's frames as this sink allocated them.
#[derive(Debug, Default)]
struct Frames {
    p2m: Vec<u64>,
    m2p: HashMap<u64, u64>,
}

impl FrameMap for Frames {
    fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        self.m2p.get(&mfn).copied()
    }
    fn pfn_to_mfn(&self, pfn: u64) -> Option<u64> {
        usize::try_from(pfn)
            .ok()
            .and_then(|i| self.p2m.get(i))
            .copied()
            .filter(|&m| m != INVALID_MFN)
    }
}

/// A PV guest being built.
pub struct PvSink<'x, H: Hypervisor> {
    xen: &'x H,
    xs: Xenstore<Box<dyn Transport>>,
    domid: DomId,
    req: PvCreate,
    store_port: u32,
    console_port: u32,
    pv_info: bool,
    cpuid: Option<Vec<u8>>,
    msrs: Option<Vec<u8>>,
    frames: Frames,
    types: Vec<u32>,
    p2m_pfns: Vec<u64>,
    vcpus: Vec<VcpuRecords>,
    store_mfn: u64,
    console_mfn: u64,
    introduced: bool,
    destroyed: bool,
    /// Set once devices were asked for: how to take them down with the
    /// domain, and to wait for their backends before it runs.
    devices: Option<super::devices::DeviceHost>,
    /// Their set-up (trees, backend drivers, hotplug scripts), running
    /// while the image arrives; joined before the guest may run and
    /// before the domain is destroyed.
    setting_up:
        Option<std::thread::JoinHandle<std::result::Result<(), super::devices::DeviceError>>>,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

impl<'x, H: Hypervisor> PvSink<'x, H> {
    /// Creates the empty, paused domain and its store and console event
    /// channels. On failure nothing is left behind.
    pub fn create(xen: &'x H, xs: Xenstore<Box<dyn Transport>>, req: &PvCreate) -> Result<Self> {
        if req.vcpus == 0 || req.vcpus > 128 {
            return Err(PvRestoreError::Image("vCPU count not within 1-128"));
        }
        let cfg = CreateDomain {
            handle: req.uuid,
            max_vcpus: req.vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: 64,
            max_maptrack_frames: 1024,
            grant_opts: 2,
            // the policy's default guest label (domU_t): relocd may run
            // outside dom0, where ssidref 0 would mean unlabeled_t
            ssidref: relocd_hypercall::xsm::SECINITSID_DOMU,
            ..Default::default()
        };
        let domid = xen.create_domain(0, &cfg)?;
        let mut sink = PvSink {
            xen,
            xs,
            domid,
            req: req.clone(),
            store_port: 0,
            console_port: 0,
            pv_info: false,
            cpuid: None,
            msrs: None,
            frames: Frames::default(),
            types: Vec::new(),
            p2m_pfns: Vec::new(),
            vcpus: vec![VcpuRecords::default(); req.vcpus as usize],
            store_mfn: 0,
            console_mfn: 0,
            introduced: false,
            destroyed: false,
            devices: None,
            setting_up: None,
        };
        if let Err(e) = sink.prepare() {
            let _ = sink.destroy();
            return Err(e);
        }
        Ok(sink)
    }

    /// Starts building `devs` for the domain (trees, then each backend
    /// driver at InitWait and its hotplug script; see [`super::devices`])
    /// over the xenstore connection `xs`, while the image arrives: hotplug
    /// scripts take seconds, which neither the admission nor the guest's
    /// downtime should wait for. [`SinkGuest::complete`] waits for them
    /// and fails if they failed; the devices go with the domain if it is
    /// destroyed.
    pub fn add_devices(
        &mut self,
        mut xs: Xenstore<Box<dyn Transport>>,
        host: &super::devices::DeviceHost,
        devs: &crate::devices::GuestDevices,
    ) -> std::io::Result<()> {
        self.devices = Some(host.clone());
        let (host, devs, domid) = (host.clone(), devs.clone(), self.domid);
        let h = std::thread::Builder::new()
            .name(format!("relocd-dev-{domid}"))
            .spawn(move || super::devices::add(&mut xs, &host, domid, &devs))?;
        self.setting_up = Some(h);
        Ok(())
    }

    /// Waits for the devices' set-up, if one runs.
    fn devices_set_up(&mut self) -> std::result::Result<(), super::devices::DeviceError> {
        match self.setting_up.take() {
            None => Ok(()),
            Some(h) => h
                .join()
                .unwrap_or(Err(super::devices::DeviceError::SetUpLost)),
        }
    }

    fn prepare(&mut self) -> Result<()> {
        let (xen, d) = (self.xen, self.domid);
        // Named from the start (as libxl names a domain it builds), so
        // `xl list` shows what it is and a daemon restarted after a kill
        // finds the half-built copy by the name its journal holds.
        let dom = format!("/local/domain/{d}");
        let store = |e| {
            tracing::error!(domid = d, "xenstore: {e}");
            PvRestoreError::Store("naming the new domain")
        };
        self.xs.mkdir(&dom).map_err(store)?;
        self.xs
            .set_perms(
                &dom,
                &[
                    Perm {
                        domid: 0,
                        access: Access::None,
                    },
                    Perm {
                        domid: d,
                        access: Access::Read,
                    },
                ],
            )
            .map_err(store)?;
        self.xs
            .write(&format!("{dom}/name"), self.req.name.as_bytes())
            .map_err(store)?;
        self.xs
            .write(&format!("{dom}/domid"), d.to_string().as_bytes())
            .map_err(store)?;
        // createdomain sizes the vCPU array; max_vcpus creates them.
        xen.set_max_vcpus(d, self.req.vcpus)?;
        xen.set_max_mem(d, self.req.max_memkb.saturating_add(MAXMEM_SLACK_KIB))?;
        xen.set_address_size(d, 64)?;
        self.store_port = xen.evtchn_alloc_unbound(d, BACKEND_DOMID)?;
        self.console_port = xen.evtchn_alloc_unbound(d, BACKEND_DOMID)?;
        Ok(())
    }

    /// The new domain's id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    fn max_pfn(&self) -> Result<u64> {
        match self.frames.p2m.len() {
            0 => Err(PvRestoreError::Image("pages before X86_PV_P2M_FRAMES")),
            n => Ok(n as u64 - 1),
        }
    }

    fn type_of(&self, pfn: u64) -> u32 {
        usize::try_from(pfn)
            .ok()
            .and_then(|i| self.types.get(i))
            .copied()
            .unwrap_or(PageType::XTAB.raw())
    }

    /// Backs `pfns` (not yet backed ones) with new machine frames.
    fn populate_pfns(&mut self, pfns: &[u64]) -> Result<()> {
        let max = self.max_pfn()?;
        let mut want: Vec<u64> = Vec::new();
        for &p in pfns {
            if p > max {
                return Err(PvRestoreError::Image("a pfn beyond the p2m's end"));
            }
            if self.frames.pfn_to_mfn(p).is_none() && !want.contains(&p) {
                want.push(p);
            }
        }
        if want.is_empty() {
            return Ok(());
        }
        let mut mfns = vec![0u64; want.len()];
        let n = self.xen.populate_physmap_pv(self.domid, &want, &mut mfns)?;
        if n != want.len() {
            return Err(PvRestoreError::Image(
                "Xen populated fewer pages than asked (out of memory or beyond max_mem)",
            ));
        }
        for (&p, &m) in want.iter().zip(&mfns) {
            self.frames.p2m[p as usize] = m;
            self.frames.m2p.insert(m, p);
        }
        Ok(())
    }

    fn p2m_frames(&mut self, body: &[u8]) -> Result<()> {
        if !self.pv_info {
            return Err(PvRestoreError::Image(
                "X86_PV_P2M_FRAMES before X86_PV_INFO",
            ));
        }
        if !self.frames.p2m.is_empty() {
            return Err(PvRestoreError::Image("a second X86_PV_P2M_FRAMES"));
        }
        let start = body
            .get(0..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let end = body
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(PvRestoreError::Image("X86_PV_P2M_FRAMES too short"));
        };
        if start != 0 {
            return Err(PvRestoreError::Image(
                "X86_PV_P2M_FRAMES not starting at pfn 0",
            ));
        }
        let size = u64::from(end) + 1;
        let limit = (self.req.max_memkb / 4)
            .saturating_mul(4)
            .saturating_add(P2M_SLACK);
        if size > limit {
            return Err(PvRestoreError::Image(
                "the p2m is far larger than the guest's memory",
            ));
        }
        let need = pv::p2m_frames_record_len(start, end, 8)
            .map_err(|_| PvRestoreError::Image("X86_PV_P2M_FRAMES range"))?;
        if body.len() != need {
            return Err(PvRestoreError::Image(
                "X86_PV_P2M_FRAMES length does not match its range",
            ));
        }
        self.p2m_pfns = body[8..].chunks_exact(8).map(|c| le_u64(c, 0)).collect();
        if self.p2m_pfns.iter().any(|&p| p >= size) {
            return Err(PvRestoreError::Image("a p2m frame beyond the p2m's end"));
        }
        self.frames.p2m = vec![INVALID_MFN; size as usize];
        self.types = vec![PageType::XTAB.raw(); size as usize];
        // The static data is over: the CPU policy applies now.
        if let (Some(c), Some(m)) = (&self.cpuid, &self.msrs) {
            let leaves: Vec<CpuidLeaf> = c
                .chunks_exact(24)
                .filter_map(CpuidLeaf::read_from)
                .collect();
            let msrs: Vec<MsrEntry> = m.chunks_exact(16).filter_map(MsrEntry::read_from).collect();
            self.xen.set_cpu_policy(self.domid, &leaves, &msrs)?;
        }
        Ok(())
    }

    fn shared_info(&mut self, old: &[u8]) -> Result<()> {
        if old.len() != PAGE_SIZE {
            return Err(PvRestoreError::Image("SHARED_INFO is not one page"));
        }
        let info = self.xen.domain_info(self.domid)?;
        let mut map =
            self.xen
                .map_foreign(self.domid, &[info.shared_info_frame], Prot::ReadWrite)?;
        if let Some(errno) = map.page_error(0) {
            return Err(PvRestoreError::map(
                "the shared-info page",
                errno,
                self.domid,
            ));
        }
        let mut page = [0u8; PAGE_SIZE];
        map.read_page(0, &mut page)?;
        let vi =
            shinfo::VCPU_INFO..shinfo::VCPU_INFO + shinfo::LEGACY_VCPUS * shinfo::VCPU_INFO_LEN;
        page[vi.clone()].copy_from_slice(&old[vi]);
        let arch = shinfo::ARCH..shinfo::ARCH + shinfo::ARCH_LEN;
        page[arch.clone()].copy_from_slice(&old[arch]);
        put_u64(&mut page, shinfo::FRAME_LIST_LIST, 0);
        page[shinfo::EVTCHN_PENDING..shinfo::EVTCHN_MASK].fill(0);
        page[shinfo::EVTCHN_MASK..shinfo::EVTCHN_MASK + 512].fill(0xff);
        for v in 0..shinfo::LEGACY_VCPUS {
            put_u64(
                &mut page,
                v * shinfo::VCPU_INFO_LEN + shinfo::PENDING_SEL,
                0,
            );
        }
        map.write_page(0, &page)?;
        Ok(())
    }

    fn vcpu_record(&mut self, kind: RecordType, body: &[u8]) -> Result<()> {
        let id = body
            .get(0..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(PvRestoreError::Image("vCPU record too short"))?;
        let blob = body.get(VCPU_HEADER_LEN..).unwrap_or(&[]).to_vec();
        let slot = self
            .vcpus
            .get_mut(id as usize)
            .ok_or(PvRestoreError::Image(
                "a vCPU record for a vCPU the guest does not have",
            ))?;
        match kind {
            RecordType::X86PvVcpuBasic => {
                if blob.len() != core::mem::size_of::<VcpuGuestContext>() {
                    return Err(PvRestoreError::Vcpu {
                        vcpu: id,
                        what: "basic state of the wrong size for a 64-bit guest",
                    });
                }
                slot.basic = Some(blob);
            }
            RecordType::X86PvVcpuExtended => slot.extended = Some(blob),
            RecordType::X86PvVcpuXsave => slot.xsave = Some(blob),
            RecordType::X86PvVcpuMsrs => {
                if blob.len() % 16 != 0 {
                    return Err(PvRestoreError::Vcpu {
                        vcpu: id,
                        what: "MSR record not a whole number of entries",
                    });
                }
                slot.msrs = Some(blob);
            }
            _ => {}
        }
        Ok(())
    }

    /// A pfn of the image as a machine frame, with the type it must have.
    fn frame_of(&self, pfn: u64, want: Option<u32>, vcpu: u32, what: &'static str) -> Result<u64> {
        let bad = PvRestoreError::Vcpu { vcpu, what };
        if let Some(t) = want {
            if self.type_of(pfn) & PageType::MASK & !PageType::PINNED != t {
                return Err(bad);
            }
        }
        self.frames.pfn_to_mfn(pfn).ok_or(bad)
    }

    /// Start info: the frames and ports of store and console, as libxc's
    /// restorer rewrites them. Returns the start-info mfn.
    fn start_info(&mut self, pfn: u64) -> Result<u64> {
        let mfn = self.frame_of(
            pfn,
            Some(PageType::NOTAB.raw()),
            0,
            "rdx is not the start-info page",
        )?;
        let mut map = self.xen.map_foreign(self.domid, &[mfn], Prot::ReadWrite)?;
        if let Some(errno) = map.page_error(0) {
            return Err(PvRestoreError::map(
                "the start-info page",
                errno,
                self.domid,
            ));
        }
        let mut si = [0u8; PAGE_SIZE];
        map.read_page(0, &mut si)?;
        let store = self.frame_of(
            le_u64(&si, start_info::STORE_MFN),
            None,
            0,
            "the start info's store frame is not the guest's",
        )?;
        let console = self.frame_of(
            le_u64(&si, start_info::CONSOLE_MFN),
            None,
            0,
            "the start info's console frame is not the guest's",
        )?;
        put_u64(&mut si, start_info::STORE_MFN, store);
        put_u32(&mut si, start_info::STORE_EVTCHN, self.store_port);
        put_u64(&mut si, start_info::CONSOLE_MFN, console);
        put_u32(&mut si, start_info::CONSOLE_EVTCHN, self.console_port);
        put_u64(&mut si, start_info::NR_PAGES, self.frames.p2m.len() as u64);
        let info = self.xen.domain_info(self.domid)?;
        put_u64(
            &mut si,
            start_info::SHARED_INFO,
            info.shared_info_frame << 12,
        );
        put_u32(&mut si, start_info::FLAGS, 0);
        map.write_page(0, &si)?;
        self.store_mfn = store;
        self.console_mfn = console;
        Ok(mfn)
    }

    fn set_vcpus(&mut self) -> Result<()> {
        let l4 = PageType::L4TAB.raw();
        for id in 0..self.vcpus.len() as u32 {
            let rec = self.vcpus[id as usize].clone();
            let Some(basic) = rec.basic else {
                if id == 0 {
                    return Err(PvRestoreError::Image("no basic state for vCPU 0"));
                }
                continue;
            };
            let mut ctx = VcpuGuestContext::from_bytes(&basic).ok_or(PvRestoreError::Vcpu {
                vcpu: id,
                what: "basic state of the wrong size",
            })?;
            if id == 0 {
                ctx.user_regs.rdx = self.start_info(ctx.user_regs.rdx)?;
            }
            ctx.flags |= vgcf::ONLINE;
            if ctx.gdt_ents > MAX_GDT_ENTRIES {
                return Err(PvRestoreError::Vcpu {
                    vcpu: id,
                    what: "more GDT entries than a guest may have",
                });
            }
            let frames = ctx.gdt_ents.div_ceil(512) as usize;
            for i in 0..frames {
                ctx.gdt_frames[i] = self.frame_of(
                    ctx.gdt_frames[i],
                    Some(PageType::NOTAB.raw()),
                    id,
                    "a GDT frame is not an ordinary page of the guest",
                )?;
            }
            let cr3_pfn = pv::cr3_to_pfn(ctx.ctrlreg[3]);
            self.frame_of(cr3_pfn, Some(l4), id, "cr3 is not an L4 page table")?;
            ctx.ctrlreg[3] = pv::localise_cr3(ctx.ctrlreg[3], &self.frames).map_err(|_| {
                PvRestoreError::Vcpu {
                    vcpu: id,
                    what: "cr3 is not populated",
                }
            })?;
            if ctx.ctrlreg[1] & 1 != 0 {
                self.frame_of(
                    ctx.ctrlreg[1] >> 12,
                    Some(l4),
                    id,
                    "the user page table is not an L4",
                )?;
            }
            ctx.ctrlreg[1] = pv::localise_user_cr3(ctx.ctrlreg[1], &self.frames).map_err(|_| {
                PvRestoreError::Vcpu {
                    vcpu: id,
                    what: "the user page table is not populated",
                }
            })?;
            self.xen.set_vcpu_context(self.domid, id, &ctx)?;
            if let Some(ext) = &rec.extended {
                self.xen.set_ext_vcpu_context(self.domid, id, ext)?;
            }
            if let Some(xsave) = &rec.xsave {
                let words: Vec<u64> = xsave
                    .chunks(8)
                    .map(|c| le_u64(&[c, &[0; 8]].concat(), 0))
                    .collect();
                self.xen.set_vcpu_extstate(self.domid, id, 0, &words)?;
            }
            if let Some(m) = &rec.msrs {
                let msrs: Vec<VcpuMsr> =
                    m.chunks_exact(16).filter_map(VcpuMsr::read_from).collect();
                self.xen.set_vcpu_msrs(self.domid, id, &msrs)?;
            }
        }
        Ok(())
    }

    fn pin_tables(&mut self) -> Result<()> {
        let mut pins = Vec::new();
        for (pfn, &t) in self.types.iter().enumerate() {
            let ty = PageType::from_raw(t);
            if !ty.is_pinned() {
                continue;
            }
            if let (Some(level), Some(mfn)) = (ty.table_level(), self.frames.pfn_to_mfn(pfn as u64))
            {
                pins.push((level, mfn));
            }
        }
        self.xen.pin_page_tables(self.domid, &pins)?;
        Ok(())
    }

    /// Writes the p2m the guest keeps in its own pages with the new frames.
    fn write_guest_p2m(&mut self) -> Result<()> {
        let mut mfns = Vec::with_capacity(self.p2m_pfns.len());
        for &pfn in &self.p2m_pfns {
            if self.type_of(pfn) != PageType::NOTAB.raw() {
                return Err(PvRestoreError::Image("a p2m frame is not an ordinary page"));
            }
            mfns.push(
                self.frames
                    .pfn_to_mfn(pfn)
                    .ok_or(PvRestoreError::Image("a p2m frame was never sent"))?,
            );
        }
        if mfns.is_empty() {
            return Ok(());
        }
        let mut map = self.xen.map_foreign(self.domid, &mfns, Prot::ReadWrite)?;
        let mut page = [0u8; PAGE_SIZE];
        for i in 0..mfns.len() {
            if let Some(errno) = map.page_error(i) {
                return Err(PvRestoreError::map("a p2m page", errno, self.domid));
            }
            for (k, e) in page.chunks_exact_mut(8).enumerate() {
                let pfn = i * 512 + k;
                let m = self.frames.p2m.get(pfn).copied().unwrap_or(INVALID_MFN);
                e.copy_from_slice(&m.to_le_bytes());
            }
            map.write_page(i, &page)?;
        }
        Ok(())
    }

    /// Grant entries 0 and 1: the console and store rings, for dom0.
    fn seed_grants(&mut self) -> Result<()> {
        let mut frame = [0u64; 1];
        self.xen.grant_table_frames(self.domid, 1, &mut frame)?;
        let mut map = self.xen.map_foreign(self.domid, &frame, Prot::ReadWrite)?;
        if let Some(errno) = map.page_error(0) {
            return Err(PvRestoreError::map("the grant table", errno, self.domid));
        }
        let mut page = [0u8; PAGE_SIZE];
        map.read_page(0, &mut page)?;
        for (slot, mfn) in [
            (GNT_CONSOLE, self.console_mfn),
            (GNT_XENSTORE, self.store_mfn),
        ] {
            let e = &mut page[slot * 8..slot * 8 + 8];
            e[0..2].copy_from_slice(&GTF_PERMIT_ACCESS.to_le_bytes());
            e[2..4].copy_from_slice(&BACKEND_DOMID.to_le_bytes());
            let f =
                u32::try_from(mfn).map_err(|_| PvRestoreError::Image("a ring frame above 2^32"))?;
            e[4..8].copy_from_slice(&f.to_le_bytes());
        }
        map.write_page(0, &page)?;
        Ok(())
    }

    /// The domain's xenstore tree (what libxl writes for a PV guest with a
    /// console and no devices), then the introduction to xenstored.
    fn introduce(&mut self) -> Result<()> {
        let d = self.domid;
        let dom = format!("/local/domain/{d}");
        let uuid = super::libxl::uuid_text(&self.req.uuid);
        let vm = format!("/vm/{uuid}");
        let ro = [
            Perm {
                domid: 0,
                access: Access::None,
            },
            Perm {
                domid: d,
                access: Access::Read,
            },
        ];
        let rw = [Perm {
            domid: d,
            access: Access::None,
        }];
        let store = |e| {
            tracing::error!(domid = d, "xenstore: {e}");
            PvRestoreError::Store("writing the domain's tree")
        };
        let xs = &mut self.xs;
        for (path, perms) in [(&dom, &ro[..]), (&vm, &ro[..])] {
            xs.mkdir(path).map_err(store)?;
            xs.set_perms(path, perms).map_err(store)?;
        }
        let mut entries: Vec<(String, String)> = vec![
            (format!("{vm}/name"), self.req.name.clone()),
            (format!("{vm}/uuid"), uuid.clone()),
            (format!("{dom}/name"), self.req.name.clone()),
            (format!("{dom}/domid"), d.to_string()),
            (format!("{dom}/vm"), vm.clone()),
            (
                format!("{dom}/memory/static-max"),
                self.req.max_memkb.to_string(),
            ),
            (
                format!("{dom}/memory/target"),
                self.req.max_memkb.to_string(),
            ),
            (
                format!("{dom}/console/ring-ref"),
                self.console_mfn.to_string(),
            ),
            (format!("{dom}/console/port"), self.console_port.to_string()),
            (format!("{dom}/console/type"), "xenconsoled".to_owned()),
            (format!("{dom}/console/output"), "pty".to_owned()),
            (format!("{dom}/console/limit"), "1048576".to_owned()),
            (format!("{dom}/store/ring-ref"), self.store_mfn.to_string()),
            (format!("{dom}/store/port"), self.store_port.to_string()),
            (format!("/libxl/{d}/type"), "pv".to_owned()),
        ];
        for v in 0..self.vcpus.len() {
            entries.push((format!("{dom}/cpu/{v}/availability"), "online".to_owned()));
        }
        for (k, v) in &entries {
            xs.write(k, v.as_bytes()).map_err(store)?;
        }
        for leaf in ["device", "control"] {
            let p = format!("{dom}/{leaf}");
            xs.mkdir(&p).map_err(store)?;
            xs.set_perms(&p, &ro).map_err(store)?;
        }
        // What the guest writes itself: its answers to shutdown requests,
        // its drivers' and agents' state.
        for leaf in [
            "control/shutdown",
            "data",
            "drivers",
            "feature",
            "attr",
            "error",
        ] {
            let p = format!("{dom}/{leaf}");
            xs.mkdir(&p).map_err(store)?;
            xs.set_perms(&p, &rw).map_err(store)?;
        }
        xs.introduce(d, self.store_mfn, self.store_port)
            .map_err(|e| {
                tracing::error!(domid = d, "xenstore INTRODUCE: {e}");
                PvRestoreError::Store("introducing the domain")
            })?;
        self.introduced = true;
        Ok(())
    }
}

impl<H: Hypervisor> SinkGuest for PvSink<'_, H> {
    type Error = PvRestoreError;

    fn set_sched_params(&mut self, params: SchedParams) -> Result<()> {
        if !super::sched::set(self.xen, self.domid, params)? {
            tracing::info!(
                domid = self.domid,
                "the new domain's scheduler has no weight or cap; the guest's are not set"
            );
        }
        Ok(())
    }

    fn populate(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<()> {
        let max = self.max_pfn()?;
        let mut want = Vec::with_capacity(pfns.len());
        for (&pfn, &t) in pfns.iter().zip(types) {
            if pfn > max {
                return Err(PvRestoreError::Image("a pfn beyond the p2m's end"));
            }
            self.types[pfn as usize] = t.raw();
            if t != PageType::XTAB && t != PageType::BROKEN {
                want.push(pfn);
            }
        }
        self.populate_pfns(&want)
    }

    fn write_pages(&mut self, pfns: &[Pfn], types: &[PageType], data: &[u8]) -> Result<()> {
        let mut slots: Vec<(u64, PageType)> = Vec::with_capacity(pfns.len());
        for (&pfn, &t) in pfns.iter().zip(types) {
            if t.has_data() {
                slots.push((pfn, t));
            }
        }
        if data.len() != slots.len() * PAGE_SIZE {
            return Err(PvRestoreError::Image(
                "page data does not match the page types",
            ));
        }
        // Frames the page tables name but the stream has not sent yet.
        let p2m_size = self.frames.p2m.len() as u64;
        let mut more = [0u64; 512];
        for (k, &(pfn, t)) in slots.iter().enumerate() {
            if let Some(level) = t.table_level() {
                let page: &[u8; PAGE_SIZE] = data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]
                    .try_into()
                    .map_err(|_| PvRestoreError::Image("page data"))?;
                let n = pv::pfns_to_populate(level, page, &self.frames, p2m_size, &mut more)
                    .map_err(|err| PvRestoreError::PageTable { pfn, err })?;
                let list = more[..n].to_vec();
                self.populate_pfns(&list)?;
            }
        }
        let mut mfns = Vec::with_capacity(slots.len());
        for &(pfn, _) in &slots {
            mfns.push(self.frames.pfn_to_mfn(pfn).ok_or(PvRestoreError::Image(
                "page data for a pfn that was not populated",
            ))?);
        }
        if mfns.is_empty() {
            return Ok(());
        }
        let mut map = self.xen.map_foreign(self.domid, &mfns, Prot::ReadWrite)?;
        let mut table = [0u8; PAGE_SIZE];
        for (k, (&(pfn, t), page)) in slots.iter().zip(data.chunks_exact(PAGE_SIZE)).enumerate() {
            if let Some(errno) = map.page_error(k) {
                return Err(PvRestoreError::map("a page", errno, self.domid));
            }
            let page: &[u8; PAGE_SIZE] = page
                .try_into()
                .map_err(|_| PvRestoreError::Image("page data"))?;
            match t.table_level() {
                // A page table is localised on its way: a copy first.
                Some(level) => {
                    table.copy_from_slice(page);
                    pv::localise_page_table(level, &mut table, &self.frames)
                        .map_err(|err| PvRestoreError::PageTable { pfn, err })?;
                    map.write_page(k, &table)?;
                }
                None => map.write_page(k, page)?,
            }
        }
        Ok(())
    }

    fn record(&mut self, rtype: u32, body: &[u8]) -> Result<()> {
        match RecordType::from(rtype) {
            RecordType::X86PvInfo => {
                let info = PvInfoRepr::parse(body)
                    .map_err(|_| PvRestoreError::Image("X86_PV_INFO unreadable"))?;
                if info.guest_width != 8 || info.pt_levels != 4 {
                    return Err(PvRestoreError::Unsupported(
                        "only 64-bit PV guests with 4-level page tables are restored",
                    ));
                }
                self.pv_info = true;
            }
            RecordType::X86CpuidPolicy => self.cpuid = Some(body.to_vec()),
            RecordType::X86MsrPolicy => self.msrs = Some(body.to_vec()),
            RecordType::X86PvP2mFrames => self.p2m_frames(body)?,
            RecordType::X86TscInfo => {
                let t = TscInfoRepr::parse(body)
                    .map_err(|_| PvRestoreError::Image("X86_TSC_INFO unreadable"))?;
                self.xen.set_tsc_info(
                    self.domid,
                    &TscInfo {
                        tsc_mode: t.mode,
                        gtsc_khz: t.khz,
                        incarnation: t.incarnation,
                        pad: 0,
                        elapsed_nsec: t.nsec,
                    },
                )?;
            }
            RecordType::SharedInfo => self.shared_info(body)?,
            k @ (RecordType::X86PvVcpuBasic
            | RecordType::X86PvVcpuExtended
            | RecordType::X86PvVcpuXsave
            | RecordType::X86PvVcpuMsrs) => self.vcpu_record(k, body)?,
            RecordType::HvmContext | RecordType::HvmParams => {
                return Err(PvRestoreError::Image("an HVM record in a PV image"))
            }
            _ => {}
        }
        Ok(())
    }

    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<()> {
        let _ = (vcpu, blob);
        Err(PvRestoreError::Image(
            "vCPU state of a PV guest comes in X86_PV_VCPU records",
        ))
    }

    fn complete(&mut self) -> Result<()> {
        self.max_pfn()?;
        self.set_vcpus()?;
        self.pin_tables()?;
        self.write_guest_p2m()?;
        self.seed_grants()?;
        self.introduce()?;
        // Its frontends must find their backends waiting when it runs.
        self.devices_set_up().map_err(|e| {
            tracing::error!(domid = self.domid, "{e}");
            PvRestoreError::Devices(match e {
                super::devices::DeviceError::Script { .. } => {
                    "a hotplug script failed (the destination's log says which and why)"
                }
                super::devices::DeviceError::Driver { .. } => {
                    "a backend driver (netback, blkback) did not answer in time"
                }
                _ => "a device could not be set up (the destination's log says which)",
            })
        })?;
        if let Some(host) = &self.devices {
            super::devices::wait_ready(&mut self.xs, host, self.domid).map_err(|e| {
                tracing::error!(domid = self.domid, "{e}");
                PvRestoreError::Devices("a device's backend is not ready (the log says which)")
            })?;
        }
        Ok(())
    }

    fn unpause(&mut self) -> Result<()> {
        self.xen.unpause(self.domid)?;
        Ok(())
    }

    fn destroy(&mut self) -> Result<()> {
        if self.destroyed {
            return Ok(());
        }
        // A set-up still running finishes first: what it built goes too.
        let _ = self.devices_set_up();
        let r = self.xen.destroy(self.domid);
        self.destroyed = true;
        if let Some(host) = self.devices.take() {
            super::devices::remove_all(&mut self.xs, &host, self.domid);
        }
        let vm = format!("/vm/{}", super::libxl::uuid_text(&self.req.uuid));
        super::backend::forget_domain(&mut self.xs, self.domid, Some(vm));
        if self.introduced {
            if let Err(e) = self.xs.release(self.domid) {
                tracing::warn!(domid = self.domid, "xenstore RELEASE: {e}");
            }
        }
        r?;
        Ok(())
    }
}
