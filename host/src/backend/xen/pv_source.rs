//! [`PvSource`]: a running 64-bit PV guest of a real Xen as the core's
//! [`SourceGuest`], plus the records of the stream that only a PV guest has
//! (Xen's `save_ops` for x86 PV: static data, the p2m frames, the tail).
//!
//! What each hook does on Xen:
//!
//! | hook | Xen |
//! | --- | --- |
//! | `info` | getdomaininfo; the p2m size from the shared-info page |
//! | `enable_logdirty` | shadow_op ENABLE_LOGDIRTY (OFF then again when a killed save left it on) |
//! | `clean_dirty` | shadow_op CLEAN, plus the pages deferred by the round; then the p2m is read again |
//! | `read_pages` | p2m → mfns, getpageframeinfo3, one foreign mapping a batch, page tables normalised by `relocd_core::pv` |
//! | `suspend` | xenstore `control/shutdown` = `suspend`, then waits for Xen's shutdown code `suspend` |
//! | `resume` | a cancelled suspend: vCPU 0's `rax` = 1 (the guest's `HYPERVISOR_suspend` returns 1), resumedomain, xenstore RESUME |
//! | `destroy` | destroydomain and the domain's xenstore entries |
//!
//! A page table read while the guest runs may name a frame that is no
//! longer the guest's (the guest changed it under the copy): the page goes
//! out as `XTAB` in that batch and is added to the next CLEAN's bitmap, so
//! the paused round sends it again; there, such an entry is an error.

use std::time::{Duration, Instant};

use relocd_core::guest::{
    GuestInfo, GuestType, PageType, Pfn, RecordPoint, SchedParams, SourceGuest, PAGE_SIZE,
};
use relocd_core::pv::{self, Mode};
use relocd_core::stream::x86::{TscInfoRepr, TSC_INFO_LEN};
use relocd_core::stream::x86_pv::{PvInfoRepr, PV_INFO_LEN, VCPU_HEADER_LEN};
use relocd_core::stream::RecordType;
use relocd_hypercall::abi::xen::{vgcf, CpuidLeaf, MsrEntry, VcpuGuestContext};
use relocd_hypercall::{
    errno, slice_as_bytes, DomId, ForeignPages, Hypervisor, PlainData, Prot, XenOps,
};

use super::p2m::P2m;
use super::pv_error::PvSaveError;
use super::xenstore::{Transport, Xenstore};

/// Xen's shutdown code for a suspended domain (`SHUTDOWN_suspend`).
pub const SHUTDOWN_SUSPEND: u8 = 2;
/// How long a guest is given to suspend (libxl waits as long).
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(60);
/// CPUID leaves and MSRs room for the policy (Xen 4.17 has well under).
const POLICY_LEAVES: usize = 1024;
const POLICY_MSRS: usize = 256;
/// Largest extended vCPU state accepted (Xen's XSAVE area is ~2.7 KiB on
/// today's CPUs, 64 KiB leaves room for anything).
const MAX_XSAVE: u64 = 64 * 1024;
/// Most MSRs a vCPU record carries.
const MAX_VCPU_MSRS: u32 = 4096;

/// A record of the stream's tail (after the last page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailRecord {
    /// `X86_TSC_INFO`.
    Tsc(TscInfoRepr),
    /// `SHARED_INFO`: the page as Xen keeps it.
    SharedInfo(Box<[u8; PAGE_SIZE]>),
    /// A per-vCPU record (`X86_PV_VCPU_*`): its type, vCPU and body (after
    /// the vCPU header).
    Vcpu(RecordType, u32, Vec<u8>),
}

/// The records before the first page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRecords {
    /// `X86_PV_INFO`.
    pub pv_info: PvInfoRepr,
    /// `X86_CPUID_POLICY` body.
    pub cpuid: Vec<u8>,
    /// `X86_MSR_POLICY` body.
    pub msrs: Vec<u8>,
}

/// Figures of what the source did, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvCounters {
    /// Page tables normalised.
    pub page_tables: u64,
    /// Pages deferred to a later round because they named a frame the
    /// guest no longer had.
    pub deferred: u64,
    /// Times the p2m was found changed on a re-read.
    pub p2m_changes: u64,
    /// The time the suspend request took to be honoured.
    pub suspend_wait: Duration,
}

/// A 64-bit PV guest being read out of Xen.
pub struct PvSource<'x, H: Hypervisor> {
    xen: &'x H,
    xs: Xenstore<Box<dyn Transport>>,
    domid: DomId,
    p2m: P2m,
    tot_pages: u64,
    vcpus: u32,
    logdirty: bool,
    suspended: bool,
    paused: bool,
    deferred: Vec<u64>,
    bytes: Vec<u8>,
    counters: PvCounters,
    /// How long [`SourceGuest::suspend`] waits.
    pub suspend_timeout: Duration,
    /// Its own weight and cap while auto-converge caps it.
    own_sched: Option<SchedParams>,
}

fn shared_info<H: Hypervisor>(
    xen: &H,
    domid: DomId,
    frame: u64,
) -> Result<Box<[u8; PAGE_SIZE]>, PvSaveError> {
    let map = xen.map_foreign(domid, &[frame], Prot::Read)?;
    if let Some(errno) = map.page_error(0) {
        return Err(PvSaveError::map("the shared-info page", errno, domid));
    }
    let mut page = Box::new([0u8; PAGE_SIZE]);
    map.read_page(0, &mut page)?;
    Ok(page)
}

impl<'x, H: Hypervisor> PvSource<'x, H> {
    /// Opens `domid` for reading: checks it is a running 64-bit PV guest,
    /// reads its p2m. Nothing is changed in the guest.
    pub fn open(
        xen: &'x H,
        xs: Xenstore<Box<dyn Transport>>,
        domid: DomId,
    ) -> Result<Self, PvSaveError> {
        let info = xen.domain_info(domid)?;
        if info.hvm() {
            return Err(PvSaveError::Unsupported(
                "HVM guests are not saved by relocd yet (PV only)",
            ));
        }
        if info.dying() || info.shutdown() {
            return Err(PvSaveError::Gone {
                domid,
                what: "is shut down or dying",
            });
        }
        if info.paused() {
            return Err(PvSaveError::Unsupported(
                "the guest is paused: it cannot answer the suspend request; unpause it first",
            ));
        }
        let bits = xen.address_size(domid)?;
        if bits != 64 {
            return Err(PvSaveError::Unsupported(
                "32-bit PV guests are not saved by relocd (64-bit only)",
            ));
        }
        let shinfo = shared_info(xen, domid, info.shared_info_frame)?;
        let p2m = P2m::read(xen, domid, &shinfo)?;
        let words = relocd_core::precopy::bitmap_words(p2m.size());
        Ok(PvSource {
            xen,
            xs,
            domid,
            tot_pages: info.tot_pages,
            vcpus: info.max_vcpu_id.map_or(1, |m| m.saturating_add(1)),
            p2m,
            logdirty: false,
            suspended: false,
            paused: false,
            deferred: vec![0; words],
            bytes: vec![0; words * 8],
            counters: PvCounters::default(),
            suspend_timeout: SUSPEND_TIMEOUT,
            own_sched: None,
        })
    }

    /// The domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Whether the guest is suspended (by [`SourceGuest::suspend`]).
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// Whether log-dirty is on (turned on here).
    pub fn logdirty_on(&self) -> bool {
        self.logdirty
    }

    /// What the source did so far.
    pub fn counters(&self) -> PvCounters {
        self.counters
    }

    /// The p2m as read last.
    pub fn p2m(&self) -> &P2m {
        &self.p2m
    }

    /// `X86_PV_INFO` and the CPUID and MSR policies.
    pub fn static_records(&self) -> Result<StaticRecords, PvSaveError> {
        let mut leaves = vec![CpuidLeaf::zeroed(); POLICY_LEAVES];
        let mut msrs = vec![MsrEntry::zeroed(); POLICY_MSRS];
        let (nl, nm) = self.xen.cpu_policy(self.domid, &mut leaves, &mut msrs)?;
        Ok(StaticRecords {
            pv_info: PvInfoRepr {
                guest_width: 8,
                pt_levels: 4,
            },
            cpuid: slice_as_bytes(leaves.get(..nl).unwrap_or(&[])).to_vec(),
            msrs: slice_as_bytes(msrs.get(..nm).unwrap_or(&[])).to_vec(),
        })
    }

    /// The `X86_PV_P2M_FRAMES` record's content: first and last pfn, and
    /// the pfns of the pages holding the p2m.
    pub fn p2m_frames(&self) -> Result<(u32, u32, Vec<u64>), PvSaveError> {
        let last = self.p2m.size() - 1;
        let end = u32::try_from(last).map_err(|_| PvSaveError::P2m("more than 2^32 pfns"))?;
        let frames = self
            .p2m
            .frames()
            .iter()
            .map(|&m| {
                self.p2m.pfn(m).ok_or(PvSaveError::P2m(
                    "a p2m page is not one of the guest's frames",
                ))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        Ok((0, end, frames))
    }

    /// The tail, read with the guest suspended: TSC, shared info, and per
    /// online vCPU its basic state (frames normalised), extended state,
    /// XSAVE area and MSRs (the last two when there are any).
    pub fn tail_records(&mut self) -> Result<Vec<TailRecord>, PvSaveError> {
        if !self.suspended {
            return Err(PvSaveError::Order(
                "the tail is read from a suspended guest",
            ));
        }
        let info = self.xen.domain_info(self.domid)?;
        let mut out = Vec::new();
        let tsc = self.xen.tsc_info(self.domid)?;
        out.push(TailRecord::Tsc(TscInfoRepr {
            mode: tsc.tsc_mode,
            khz: tsc.gtsc_khz,
            nsec: tsc.elapsed_nsec,
            incarnation: tsc.incarnation,
        }));
        out.push(TailRecord::SharedInfo(shared_info(
            self.xen,
            self.domid,
            info.shared_info_frame,
        )?));
        for vcpu in 0..self.vcpus {
            let mut ctx = self.xen.vcpu_context(self.domid, vcpu)?;
            if ctx.flags & vgcf::ONLINE == 0 {
                continue;
            }
            self.normalise_vcpu(vcpu, &mut ctx)?;
            out.push(TailRecord::Vcpu(
                RecordType::X86PvVcpuBasic,
                vcpu,
                ctx.as_bytes().to_vec(),
            ));
            let ext = self.xen.ext_vcpu_context(self.domid, vcpu)?;
            out.push(TailRecord::Vcpu(
                RecordType::X86PvVcpuExtended,
                vcpu,
                ext.as_bytes().to_vec(),
            ));
            // No XSAVE features in use: no record (as Xen's saver).
            let (mask, size) = self.xen.vcpu_extstate_size(self.domid, vcpu)?;
            if mask != 0 && size > 0 {
                if size > MAX_XSAVE {
                    return Err(PvSaveError::Vcpu {
                        vcpu,
                        what: "extended state larger than 64 KiB",
                    });
                }
                let mut buf = vec![0u64; size.div_ceil(8) as usize];
                let (_, n) = self.xen.vcpu_extstate(self.domid, vcpu, mask, &mut buf)?;
                let mut body = slice_as_bytes(&buf).to_vec();
                body.truncate(usize::try_from(n).unwrap_or(0).min(body.len()));
                out.push(TailRecord::Vcpu(RecordType::X86PvVcpuXsave, vcpu, body));
            }
            let count = self.xen.vcpu_msr_count(self.domid, vcpu)?;
            if count > 0 {
                if count > MAX_VCPU_MSRS {
                    return Err(PvSaveError::Vcpu {
                        vcpu,
                        what: "more than 4096 MSRs",
                    });
                }
                let mut msrs =
                    vec![relocd_hypercall::abi::domctl::VcpuMsr::zeroed(); count as usize];
                let n = self.xen.vcpu_msrs(self.domid, vcpu, &mut msrs)?;
                let msrs = msrs.get(..n).unwrap_or(&[]);
                if !msrs.is_empty() {
                    out.push(TailRecord::Vcpu(
                        RecordType::X86PvVcpuMsrs,
                        vcpu,
                        slice_as_bytes(msrs).to_vec(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// cr3 (kernel and user page tables) and the GDT frames as pfns; for
    /// vCPU 0 also `rdx`, where a suspending guest leaves the machine frame
    /// of its start-info page (the restorer finds it there).
    fn normalise_vcpu(&self, vcpu: u32, ctx: &mut VcpuGuestContext) -> Result<(), PvSaveError> {
        if vcpu == 0 && self.suspended {
            ctx.user_regs.rdx = self.p2m.pfn(ctx.user_regs.rdx).ok_or(PvSaveError::Vcpu {
                vcpu,
                what: "rdx does not hold one of the guest's frames (the start-info page)",
            })?;
        }
        let frames = usize::try_from(ctx.gdt_ents.div_ceil(512)).unwrap_or(usize::MAX);
        if frames > ctx.gdt_frames.len() {
            return Err(PvSaveError::Vcpu {
                vcpu,
                what: "GDT of more than 16 frames",
            });
        }
        for f in ctx.gdt_frames.iter_mut().take(frames) {
            *f = self.p2m.pfn(*f).ok_or(PvSaveError::Vcpu {
                vcpu,
                what: "a GDT frame is not the guest's",
            })?;
        }
        ctx.ctrlreg[3] =
            pv::normalise_cr3(ctx.ctrlreg[3], &self.p2m).map_err(|_| PvSaveError::Vcpu {
                vcpu,
                what: "cr3 is not one of the guest's frames",
            })?;
        ctx.ctrlreg[1] =
            pv::normalise_user_cr3(ctx.ctrlreg[1], &self.p2m).map_err(|_| PvSaveError::Vcpu {
                vcpu,
                what: "the user page table (ctrlreg[1]) is not one of the guest's frames",
            })?;
        Ok(())
    }

    fn mark_deferred(&mut self, pfn: Pfn) {
        if let Some(w) = self.deferred.get_mut((pfn / 64) as usize) {
            *w |= 1 << (pfn % 64);
        }
        self.counters.deferred += 1;
    }

    /// Waits until Xen reports the domain shut down for suspend.
    fn wait_suspended(&mut self, deadline: Instant) -> Result<bool, PvSaveError> {
        let mut pause = Duration::from_micros(200);
        loop {
            let info = match self.xen.domain_info(self.domid) {
                Ok(i) => i,
                Err(e) if e.errno == errno::ESRCH => {
                    return Err(PvSaveError::Gone {
                        domid: self.domid,
                        what: "vanished while suspending",
                    })
                }
                Err(e) => return Err(e.into()),
            };
            if info.shutdown() {
                return match info.shutdown_reason() {
                    Some(SHUTDOWN_SUSPEND) => Ok(true),
                    _ => Err(PvSaveError::Gone {
                        domid: self.domid,
                        what: "shut down (not for suspend) while suspending",
                    }),
                };
            }
            if info.dying() {
                return Err(PvSaveError::Gone {
                    domid: self.domid,
                    what: "is dying",
                });
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    fn store_path(&self, leaf: &str) -> String {
        format!("/local/domain/{}/{leaf}", self.domid)
    }
}

impl<H: Hypervisor> SourceGuest for PvSource<'_, H> {
    type Error = PvSaveError;

    fn stream_records(
        &mut self,
        point: RecordPoint,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), PvSaveError> {
        let bad = |_| PvSaveError::Order("a record body did not fit");
        match point {
            RecordPoint::Static => {
                let st = self.static_records()?;
                let mut b = [0u8; PV_INFO_LEN];
                st.pv_info.emit(&mut b).map_err(bad)?;
                out(RecordType::X86PvInfo.into(), &b);
                out(RecordType::X86CpuidPolicy.into(), &st.cpuid);
                out(RecordType::X86MsrPolicy.into(), &st.msrs);
            }
            RecordPoint::StartOfStream => {
                let (start, end, frames) = self.p2m_frames()?;
                let mut b = Vec::with_capacity(8 + frames.len() * 8);
                b.extend_from_slice(&start.to_le_bytes());
                b.extend_from_slice(&end.to_le_bytes());
                for f in frames {
                    b.extend_from_slice(&f.to_le_bytes());
                }
                out(RecordType::X86PvP2mFrames.into(), &b);
            }
            RecordPoint::EndOfCheckpoint => {
                for rec in self.tail_records()? {
                    match rec {
                        TailRecord::Tsc(t) => {
                            let mut b = [0u8; TSC_INFO_LEN];
                            t.emit(&mut b).map_err(bad)?;
                            out(RecordType::X86TscInfo.into(), &b);
                        }
                        TailRecord::SharedInfo(page) => {
                            out(RecordType::SharedInfo.into(), &page[..])
                        }
                        TailRecord::Vcpu(kind, vcpu, body) => {
                            let mut b = Vec::with_capacity(VCPU_HEADER_LEN + body.len());
                            b.extend_from_slice(&vcpu.to_le_bytes());
                            b.extend_from_slice(&0u32.to_le_bytes());
                            b.extend_from_slice(&body);
                            out(kind.into(), &b);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn info(&self) -> Result<GuestInfo, PvSaveError> {
        Ok(GuestInfo {
            guest_type: GuestType::Pv,
            p2m_size: self.p2m.size(),
            // Pages the stream can carry: those the p2m names (Xen's count
            // may include a few the guest does not map, never more than
            // its p2m can hold on the other side).
            nr_pages: self.tot_pages.min(self.p2m.size()),
            vcpus: self.vcpus,
        })
    }

    fn enable_logdirty(&mut self) -> Result<(), PvSaveError> {
        match self.xen.logdirty_enable(self.domid) {
            Ok(()) => {}
            // Left on by a save that was killed: off, then on again (as
            // Xen's own tools do).
            Err(e) if e.errno == errno::EINVAL || e.errno == errno::EEXIST => {
                tracing::info!(
                    domid = self.domid,
                    "log-dirty was already on; restarting it"
                );
                self.xen.logdirty_disable(self.domid)?;
                self.xen.logdirty_enable(self.domid)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.logdirty = true;
        Ok(())
    }

    fn disable_logdirty(&mut self) -> Result<(), PvSaveError> {
        if self.logdirty {
            self.xen.logdirty_disable(self.domid)?;
            self.logdirty = false;
        }
        Ok(())
    }

    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, PvSaveError> {
        let size = self.p2m.size();
        let words = relocd_core::precopy::bitmap_words(size);
        if bitmap.len() < words {
            return Err(PvSaveError::Order("dirty bitmap shorter than the p2m"));
        }
        self.xen
            .logdirty_clean(self.domid, &mut self.bytes, size, false)?;
        let mut n = 0u64;
        for (i, w) in bitmap.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            if let Some(s) = self.bytes.get(i * 8..i * 8 + 8) {
                b.copy_from_slice(s);
            }
            let d = self.deferred.get_mut(i).map_or(0, core::mem::take);
            *w = u64::from_le_bytes(b) | d;
            if i + 1 == words && size % 64 != 0 {
                *w &= (1u64 << (size % 64)) - 1;
            }
            if i >= words {
                *w = 0;
            }
            n += u64::from(w.count_ones());
        }
        if self.p2m.refresh(self.xen, self.domid, size)? {
            self.counters.p2m_changes += 1;
        }
        Ok(n)
    }

    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, PvSaveError> {
        if types.len() < pfns.len() || data.len() < pfns.len() * PAGE_SIZE {
            return Err(PvSaveError::Order("batch buffers too short"));
        }
        // The frames and their types; holes are XTAB.
        let mut mfns: Vec<u64> = Vec::with_capacity(pfns.len());
        let mut slots: Vec<usize> = Vec::with_capacity(pfns.len());
        for (i, &pfn) in pfns.iter().enumerate() {
            match self.p2m.mfn(pfn) {
                Some(m) => {
                    mfns.push(m);
                    slots.push(i);
                }
                None => types[i] = PageType::XTAB,
            }
        }
        let mut typed = mfns.clone();
        self.xen.page_frame_types(self.domid, &mut typed)?;
        let mut map_mfns = Vec::with_capacity(mfns.len());
        let mut map_slots = Vec::with_capacity(mfns.len());
        for ((&i, &m), &t) in slots.iter().zip(&mfns).zip(&typed) {
            let ty = PageType::from_raw(t as u32);
            types[i] = ty;
            if ty.has_data() {
                map_mfns.push(m);
                map_slots.push(i);
            }
        }
        if map_mfns.is_empty() {
            return Ok(0);
        }
        let mode = if self.suspended {
            Mode::Paused
        } else {
            Mode::Live
        };
        let map = self.xen.map_foreign(self.domid, &map_mfns, Prot::Read)?;
        let mut k = 0usize;
        for (j, &i) in map_slots.iter().enumerate() {
            if let Some(errno) = map.page_error(j) {
                return Err(PvSaveError::map("a page", errno, self.domid));
            }
            // One copy, from the mapping straight to its place in the
            // batch; a page table is normalised there. (The mapping itself
            // is never lent: the guest may be writing to it, which no Rust
            // reference may describe.)
            let page: &mut [u8; PAGE_SIZE] = data
                .get_mut(k * PAGE_SIZE..(k + 1) * PAGE_SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(PvSaveError::Order("batch data buffer too short"))?;
            map.read_page(j, page)?;
            if let Some(level) = types[i].table_level() {
                match pv::normalise_page_table(level, page, &self.p2m, mode) {
                    Ok(pv::Normalised::Done(_)) => self.counters.page_tables += 1,
                    Ok(pv::Normalised::Deferred { .. }) => {
                        types[i] = PageType::XTAB;
                        self.mark_deferred(pfns[i]);
                        continue;
                    }
                    Err(err) => {
                        return Err(PvSaveError::PageTable { pfn: pfns[i], err });
                    }
                }
            }
            k += 1;
        }
        Ok(k)
    }

    fn pause(&mut self) -> Result<(), PvSaveError> {
        self.xen.pause(self.domid)?;
        self.paused = true;
        Ok(())
    }

    fn unpause(&mut self) -> Result<(), PvSaveError> {
        self.xen.unpause(self.domid)?;
        self.paused = false;
        Ok(())
    }

    fn suspend(&mut self) -> Result<(), PvSaveError> {
        if self.suspended {
            return Ok(());
        }
        let started = Instant::now();
        let path = self.store_path("control/shutdown");
        self.xs.write(&path, b"suspend").map_err(|e| {
            tracing::error!(domid = self.domid, "writing {path}: {e}");
            PvSaveError::Store("cannot write the suspend request (control/shutdown)")
        })?;
        let deadline = started + self.suspend_timeout;
        let done = self.wait_suspended(deadline)?;
        if !done {
            // Take the request back; the guest may have acted meanwhile.
            if let Err(e) = self.xs.write(&path, b"") {
                tracing::warn!(domid = self.domid, "clearing {path}: {e}");
            }
            if !self.wait_suspended(Instant::now())? {
                return Err(PvSaveError::SuspendTimeout {
                    domid: self.domid,
                    secs: self.suspend_timeout.as_secs(),
                });
            }
        }
        self.suspended = true;
        self.counters.suspend_wait = started.elapsed();
        if self.p2m.refresh(self.xen, self.domid, self.p2m.size())? {
            self.counters.p2m_changes += 1;
        }
        Ok(())
    }

    fn resume(&mut self) -> Result<(), PvSaveError> {
        if self.suspended {
            resume_suspended(self.xen, &mut self.xs, self.domid)?;
            self.suspended = false;
        }
        if self.paused {
            self.unpause()?;
        }
        Ok(())
    }

    fn vcpu_context(&mut self, vcpu: u32, buf: &mut [u8]) -> Result<usize, PvSaveError> {
        let mut ctx = self.xen.vcpu_context(self.domid, vcpu)?;
        self.normalise_vcpu(vcpu, &mut ctx)?;
        let b = ctx.as_bytes();
        buf.get_mut(..b.len())
            .ok_or(PvSaveError::Order("vCPU buffer too short"))?
            .copy_from_slice(b);
        Ok(b.len())
    }

    fn destroy(&mut self) -> Result<(), PvSaveError> {
        let vm = self.xs.read_string(&self.store_path("vm")).ok();
        self.xen.destroy(self.domid)?;
        self.logdirty = false;
        self.suspended = false;
        self.paused = false;
        // What the toolstack keeps of the domain in xenstore goes with it.
        super::backend::forget_domain(&mut self.xs, self.domid, vm);
        self.own_sched = None;
        Ok(())
    }

    fn sched_params(&mut self) -> Result<Option<SchedParams>, PvSaveError> {
        if let Some(own) = self.own_sched {
            return Ok(Some(own));
        }
        Ok(super::sched::get(self.xen, self.domid)?.map(|(_, p)| p))
    }

    /// A scheduler cap (credit, credit2) of the throttled share of the
    /// guest's own; its own weight and cap back with 0.
    fn throttle(&mut self, percent: u8) -> Result<bool, PvSaveError> {
        if percent == 0 {
            if let Some(own) = self.own_sched {
                super::sched::set(self.xen, self.domid, own)?;
                self.own_sched = None;
            }
            return Ok(true);
        }
        let own = match self.own_sched {
            Some(own) => own,
            None => match super::sched::get(self.xen, self.domid)? {
                Some((_, own)) => own,
                None => return Ok(false),
            },
        };
        self.own_sched = Some(own);
        Ok(super::sched::set(
            self.xen,
            self.domid,
            own.throttled(self.vcpus, percent),
        )?)
    }
}

/// Lets a guest that suspended for a save or a migration that did not
/// happen carry on where it was (a cancelled suspend, `xc_domain_resume`'s
/// cooperative form): its `SCHEDOP_shutdown(suspend)` returns 1, Xen clears
/// the shutdown, xenstored is told it runs again.
pub fn resume_suspended<H: Hypervisor>(
    xen: &H,
    xs: &mut Xenstore<Box<dyn Transport>>,
    domid: DomId,
) -> Result<(), PvSaveError> {
    let mut ctx = xen.vcpu_context(domid, 0)?;
    ctx.user_regs.rax = 1;
    xen.set_vcpu_context(domid, 0, &ctx)?;
    xen.resume_domain(domid)?;
    if let Err(e) = xs.resume_domain(domid) {
        tracing::warn!(domid, "xenstore RESUME: {e}");
    }
    Ok(())
}

impl<H: Hypervisor> Drop for PvSource<'_, H> {
    /// Whatever happened, log-dirty does not outlive the source.
    fn drop(&mut self) {
        // A throttle never outlives the source either.
        if let Some(own) = self.own_sched {
            if let Err(e) = super::sched::set(self.xen, self.domid, own) {
                tracing::warn!(
                    domid = self.domid,
                    "restoring the scheduling parameters: {e}"
                );
            }
        }
        if self.logdirty {
            if let Err(e) = self.xen.logdirty_disable(self.domid) {
                tracing::warn!(domid = self.domid, "turning log-dirty off: {e}");
            }
        }
    }
}
