//! The guest-facing traits that a migration drives: [`SourceGuest`] for the
//! domain being sent and [`SinkGuest`] for the domain being built.
//!
//! They play the role of Xen's `save_ops`/`restore_ops` tables in
//! `tools/libs/guest/xg_sr_common.h`, seen from one level higher: one trait
//! per direction, implemented once by the simulated hypervisor and once by
//! the real Xen backend (domctl `shadow_op` for the dirty log, foreign
//! mappings for page contents, `getvcpucontext`/`setvcpucontext` for vCPU
//! state). Hooks a backend does not need have default methods, instead of
//! Xen's "implement every function, even as a no-op stub".
//!
//! The core never calls a hypervisor itself: the host owns the guest objects
//! and calls these methods when the protocol and pre-copy state machines tell
//! it to. Keeping the calls in traits lets the tests and the host share one
//! driver, and the real backend can be swapped in without touching the loop.
//!
//! Conventions shared by both traits:
//! - A page frame is named by its guest pfn ([`Pfn`]); pages are
//!   [`PAGE_SIZE`] bytes.
//! - Page contents travel *packed*: for a batch `pfns[..n]`, the contents of
//!   the k-th page whose [`PageType::has_data`] is true sit at
//!   `data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]`. That is the layout of the
//!   page area of a libxc `PAGE_DATA` record, so a batch can be read straight
//!   into a record buffer and written straight from one.
//! - Dirty bitmaps are arrays of `u64` words, bit `pfn % 64` of word
//!   `pfn / 64` for `pfn`, as Xen's `XEN_DOMCTL_SHADOW_OP_CLEAN` fills them
//!   on x86-64. Bits at or beyond [`GuestInfo::p2m_size`] are ignored.
//! - Errors are the backend's own `Copy` type; the core only carries them
//!   back to the host.

use core::fmt;

/// A guest page frame number.
pub type Pfn = u64;

/// Bytes in a guest page (x86).
pub const PAGE_SIZE: usize = 4096;
/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

/// Pages in [`ZERO_RUN`].
pub const ZERO_RUN_PAGES: usize = 16;

/// Zeros for up to [`ZERO_RUN_PAGES`] pages, for a backend to lend where
/// pages hold nothing ([`SourceGuest::lend_pages`]): a run lent from here
/// is known to be zeros without being read ([`is_zero_run`]).
pub static ZERO_RUN: [u8; ZERO_RUN_PAGES * PAGE_SIZE] = [0; ZERO_RUN_PAGES * PAGE_SIZE];

/// Whether `run` lies inside [`ZERO_RUN`], told by its address alone:
/// then it is zeros, and nothing needs to read it to know.
pub fn is_zero_run(run: &[u8]) -> bool {
    let base = ZERO_RUN.as_ptr() as usize;
    let at = run.as_ptr() as usize;
    at >= base && at.saturating_add(run.len()) <= base + ZERO_RUN.len()
}

/// The type of a guest page, as Xen's `XEN_DOMCTL_PFINFO_*` values (the
/// upper nibble of a 32-bit word, plus the "pinned" bit).
///
/// This is an open type: any 32-bit value round-trips, and the meaning of
/// values Xen does not define is left to the stream layer to accept or
/// refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageType(u32);

impl PageType {
    /// An ordinary page (`XEN_DOMCTL_PFINFO_NOTAB`).
    pub const NOTAB: PageType = PageType(0);
    /// A level-1 page table (`XEN_DOMCTL_PFINFO_L1TAB`).
    pub const L1TAB: PageType = PageType(0x1 << 28);
    /// A level-2 page table.
    pub const L2TAB: PageType = PageType(0x2 << 28);
    /// A level-3 page table.
    pub const L3TAB: PageType = PageType(0x3 << 28);
    /// A level-4 page table.
    pub const L4TAB: PageType = PageType(0x4 << 28);
    /// Flag: the page table is pinned (`XEN_DOMCTL_PFINFO_LPINTAB`).
    pub const PINNED: u32 = 0x1 << 31;
    /// A broken page (`XEN_DOMCTL_PFINFO_BROKEN`): no data.
    pub const BROKEN: PageType = PageType(0xd << 28);
    /// Allocate only, contents irrelevant (`XEN_DOMCTL_PFINFO_XALLOC`): no data.
    pub const XALLOC: PageType = PageType(0xe << 28);
    /// Not a valid page (`XEN_DOMCTL_PFINFO_XTAB`): no data.
    pub const XTAB: PageType = PageType(0xf << 28);

    /// The mask covering type and pinned bit (`XEN_DOMCTL_PFINFO_LTAB_MASK`).
    pub const MASK: u32 = 0xf << 28;

    /// Wraps a raw `XEN_DOMCTL_PFINFO_*` value (only the top nibble is kept).
    pub const fn from_raw(raw: u32) -> Self {
        PageType(raw & Self::MASK)
    }

    /// The raw `XEN_DOMCTL_PFINFO_*` value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether the page's contents travel in the stream (Xen's
    /// `page_type_has_stream_data`): false for XTAB, XALLOC and BROKEN.
    pub const fn has_data(self) -> bool {
        !matches!(self.0, 0xd000_0000 | 0xe000_0000 | 0xf000_0000)
    }

    /// The page-table level (1–4) if this is a page table, pinned or not.
    pub const fn table_level(self) -> Option<u8> {
        // 0x9..=0xc are pinned L1..L4; 0xd..=0xf (BROKEN, XALLOC, XTAB)
        // land on 5..=7 and are not tables.
        let t = (self.0 >> 28) & 0x7;
        match t {
            1..=4 => Some(t as u8),
            _ => None,
        }
    }

    /// Whether the pinned bit is set on a page table.
    pub const fn is_pinned(self) -> bool {
        self.table_level().is_some() && self.0 & Self::PINNED != 0
    }
}

impl fmt::Display for PageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PageType::NOTAB => f.write_str("NOTAB"),
            PageType::BROKEN => f.write_str("BROKEN"),
            PageType::XALLOC => f.write_str("XALLOC"),
            PageType::XTAB => f.write_str("XTAB"),
            t => match t.table_level() {
                Some(l) if t.is_pinned() => write!(f, "L{l}TAB|PIN"),
                Some(l) => write!(f, "L{l}TAB"),
                None => write!(f, "{:#x}", t.0),
            },
        }
    }
}

/// The kind of guest, which decides the per-type records of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestType {
    /// A paravirtualised guest (Xen's `DHDR_TYPE_X86_PV`).
    Pv,
    /// A hardware-virtualised guest (`DHDR_TYPE_X86_HVM`); also what the
    /// simulated hypervisor's guests look like on the wire.
    Hvm,
}

/// What a source guest looks like, read once before the transfer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestInfo {
    /// PV or HVM.
    pub guest_type: GuestType,
    /// One more than the highest pfn the guest may have (Xen's `p2m_size`):
    /// the length of the dirty bitmap in bits.
    pub p2m_size: u64,
    /// Pages actually allocated to the guest (`tot_pages`).
    pub nr_pages: u64,
    /// Number of vCPUs (`max_vcpu_id + 1`).
    pub vcpus: u32,
}

impl GuestInfo {
    /// Words a dirty bitmap for this guest needs.
    pub const fn bitmap_words(&self) -> usize {
        crate::precopy::bitmap_words(self.p2m_size)
    }
}

/// A guest's scheduling parameters, as Xen's credit and credit2
/// schedulers hold them (`xen_domctl_sched_credit{,2}`): they travel with
/// the guest, so the destination's domain gets the ones it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchedParams {
    /// Relative share of CPU time against other domains (Xen's default
    /// 256; 1 to 65535).
    pub weight: u16,
    /// Ceiling in percent of one physical CPU for the whole domain (0: no
    /// cap; 100 · vCPUs is as good as none).
    pub cap: u16,
}

impl SchedParams {
    /// Xen's defaults: weight 256, no cap.
    pub const DEFAULT: SchedParams = SchedParams {
        weight: 256,
        cap: 0,
    };

    /// The cap that leaves a guest of `vcpus` vCPUs `100 - throttle` % of
    /// the CPU time these parameters give it (auto-converge): never more
    /// than its own cap, never less than 1.
    pub fn throttled(self, vcpus: u32, throttle: u8) -> SchedParams {
        let run = u32::from(100u8.saturating_sub(throttle.min(100)));
        let full = vcpus.max(1).saturating_mul(100);
        let own = if self.cap == 0 {
            full
        } else {
            u32::from(self.cap).min(full)
        };
        let cap = (own.saturating_mul(run) / 100).clamp(1, u32::from(u16::MAX));
        SchedParams {
            weight: self.weight,
            cap: cap as u16,
        }
    }
}

/// What [`SourceGuest::lend_pages`] calls with a lent batch: the page
/// types and the contents of the pages that have data, as runs of whole
/// pages.
pub type LendFn<'f> = dyn FnMut(&[PageType], &[&[u8]]) + 'f;

/// What [`SinkGuest::lend_pages_mut`] calls with a lent batch: the pages
/// to fill, as runs of whole pages in the batch's order. It returns
/// whether it filled them all.
pub type FillFn<'f> = dyn FnMut(&mut [&mut [u8]]) -> bool + 'f;

/// The domain being migrated away, on the sending host.
///
/// Call order during a migration (each hook says when and how often):
/// `info` → live only: `enable_logdirty` → rounds of `lend_pages` (or
/// `read_pages` where the backend does not lend) and `clean_dirty` →
/// `suspend` → `clean_dirty` once more → `lend_pages`/`read_pages` for the
/// last pages → `vcpu_context` per vCPU → then, by the protocol's outcome,
/// `destroy` (migrated), `resume` (aborted), or nothing (in doubt: the guest
/// stays suspended until the operator decides).
pub trait SourceGuest {
    /// The backend's error (a hypercall errno, a simulated fault, …).
    type Error: Copy + fmt::Debug;

    /// Size and shape of the guest. Called once, before admission is asked
    /// of the destination, and again if the host wants fresh figures.
    fn info(&self) -> Result<GuestInfo, Self::Error>;

    /// Starts the dirty log (`XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY`), with
    /// every page initially clean. Called once, before round 1 of a live
    /// migration; never for an offline one.
    fn enable_logdirty(&mut self) -> Result<(), Self::Error>;

    /// Stops the dirty log. Called once when a live migration ends, whatever
    /// the outcome. The default does nothing.
    fn disable_logdirty(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Copies the dirty bitmap into `bitmap` without clearing it
    /// (`XEN_DOMCTL_SHADOW_OP_PEEK`) and returns the number of dirty pages.
    /// Optional: used for progress only. The default reports nothing dirty
    /// and leaves `bitmap` alone.
    fn peek_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, Self::Error> {
        let _ = bitmap;
        Ok(0)
    }

    /// Copies the dirty bitmap into `bitmap`, clears the log
    /// (`XEN_DOMCTL_SHADOW_OP_CLEAN`) and returns the number of dirty pages.
    /// Called once at the end of each pre-copy round and once after
    /// `suspend`. `bitmap` has at least [`GuestInfo::bitmap_words`] words;
    /// the implementation overwrites all of them.
    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, Self::Error>;

    /// Reads a batch of pages: fills `types[i]` with the type of `pfns[i]`
    /// and copies, packed (see the module doc), the contents of every page
    /// that has data into `data`, already normalised for the stream (for PV
    /// page tables: machine frames rewritten as pfns, Xen's
    /// `normalise_page`). Returns the number of pages copied into `data`.
    ///
    /// Called once per batch of at most `precopy::MAX_BATCH_SIZE` pfns.
    /// `types.len() >= pfns.len()` and `data.len() >= pfns.len() * PAGE_SIZE`
    /// hold on every call from the core's drivers.
    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, Self::Error>;

    /// Lends a batch of pages where they are instead of copying them
    /// (see [`read_pages`](Self::read_pages)): fills `types` as
    /// `read_pages` does and calls `f` once, while the pages are lent,
    /// with the types and the contents of every page that has data, in
    /// order, as runs of whole pages (one slice may hold several pages).
    /// The contents are already normalised for the stream. Pages that
    /// hold nothing are best lent from [`ZERO_RUN`]: the sender then
    /// knows them for zeros without reading them.
    ///
    /// Returns `false`, without calling `f`, when the backend cannot lend
    /// this batch (the default): the caller then copies it with
    /// `read_pages`. Same bounds as `read_pages`.
    fn lend_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        f: &mut LendFn<'_>,
    ) -> Result<bool, Self::Error> {
        let _ = (pfns, types, f);
        Ok(false)
    }

    /// Pauses the vCPUs (`XEN_DOMCTL_pausedomain`). Used by an offline
    /// migration before the only round, and by the operator's tools.
    fn pause(&mut self) -> Result<(), Self::Error>;

    /// Undoes [`pause`](Self::pause).
    fn unpause(&mut self) -> Result<(), Self::Error>;

    /// Brings the guest to a state in which it can be copied for the last
    /// time: for PV, asks it to suspend (xenstore `control/shutdown` =
    /// `suspend`) and waits for `SHUTDOWN_suspend`; for HVM or the simulated
    /// hypervisor, a pause is enough. Called once, at stop-and-copy (live) or
    /// at the start (offline). The guest never runs again here unless
    /// [`resume`](Self::resume) is called.
    fn suspend(&mut self) -> Result<(), Self::Error>;

    /// Lets a suspended or paused guest run again after a migration that did
    /// not happen (PV: `xc_domain_resume` in its "cancelled suspend" form).
    /// Called once when the outcome is "aborted", and by `resolve --resume`.
    fn resume(&mut self) -> Result<(), Self::Error>;

    /// Writes the state of vCPU `vcpu` into `buf` as the body of the
    /// stream's per-vCPU record and returns its length. Called once per vCPU
    /// after `suspend`.
    fn vcpu_context(&mut self, vcpu: u32, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// Destroys the domain. Called once, only when the protocol's outcome
    /// says the destination runs the guest (or by `resolve --discard`).
    fn destroy(&mut self) -> Result<(), Self::Error>;

    /// The guest's scheduling parameters as they are now (before any
    /// throttle), to travel with it. Called once, before the transfer.
    /// The default: the backend has none (`None`), nothing travels.
    fn sched_params(&mut self) -> Result<Option<SchedParams>, Self::Error> {
        Ok(None)
    }

    /// Auto-converge: takes `percent` % of its CPU time from the guest
    /// (a scheduler cap of `SchedParams::throttled` of the parameters it
    /// had before the first call), or with 0 gives it back exactly those
    /// parameters. Called at the end of a live round whenever the policy
    /// changes the throttle, and with 0 once when a throttled migration
    /// ends without the guest being destroyed here (failure, cancel, in
    /// doubt). Returns whether the backend throttled (false: it cannot,
    /// and the migration goes on without). The default cannot.
    fn throttle(&mut self, percent: u8) -> Result<bool, Self::Error> {
        let _ = percent;
        Ok(false)
    }

    /// The records of this guest type at `point` of the stream (Xen's
    /// `save_ops.static_data`, `start_of_stream` and `end_of_checkpoint`),
    /// handed one at a time to `out` as (raw record type, whole body as on
    /// the wire: a per-vCPU record's body starts with its vCPU header).
    ///
    /// A PV guest gives `X86_PV_INFO` and its CPUID and MSR policies at
    /// [`RecordPoint::Static`], `X86_PV_P2M_FRAMES` at
    /// [`RecordPoint::StartOfStream`], and `X86_TSC_INFO`, `SHARED_INFO` and
    /// its `X86_PV_VCPU_*` records at [`RecordPoint::EndOfCheckpoint`]
    /// (called after `suspend`; it replaces [`vcpu_context`](Self::vcpu_context)
    /// for such a guest). The default gives none: the guest's vCPUs travel
    /// through `vcpu_context` (the simulator's HVM-style image).
    fn stream_records(
        &mut self,
        point: RecordPoint,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), Self::Error> {
        let _ = (point, out);
        Ok(())
    }
}

/// Where in the stream a guest's own records go (Xen's `save_ops` hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordPoint {
    /// Before `STATIC_DATA_END`.
    Static,
    /// After `STATIC_DATA_END`, before the first page.
    StartOfStream,
    /// After the last page, before `END`; the guest is suspended.
    EndOfCheckpoint,
}

/// The domain being built from a migration image, on the receiving host.
///
/// The host creates it, empty and paused, when it admits the migration.
/// Call order: `populate`/`write_pages` per `PAGE_DATA` record (many times,
/// the same pfn possibly several times as pre-copy resends dirty pages) →
/// `set_vcpu_context` per vCPU → `complete` once → then by the outcome
/// `unpause` (committed) or `destroy` (anything else).
pub trait SinkGuest {
    /// The backend's error.
    type Error: Copy + fmt::Debug;

    /// Makes sure memory backs `pfns` (Xen's `populate_pfns`; XTAB entries
    /// are skipped, XALLOC entries are only allocated). Idempotent: already
    /// populated pfns are left alone. Called once per received batch, before
    /// `write_pages` for the same batch.
    fn populate(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<(), Self::Error>;

    /// Writes the packed contents (module doc) of the pages of a batch that
    /// have data, localising PV page tables (pfns back to machine frames,
    /// Xen's `localise_page`). Called once per received batch.
    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
    ) -> Result<(), Self::Error>;

    /// Makes the pages `pfns` (of a batch already populated, of `types`
    /// that have data) read as zeros: pages that travelled as zero
    /// markers. Returns `false`, doing nothing, when the backend has no
    /// cheaper way than being written pages of zeros (the default): the
    /// caller then writes the whole batch with
    /// [`write_pages`](Self::write_pages), zeros included. A backend never
    /// assumes its memory was handed over zeroed. When it returns `true`,
    /// `write_pages` gets the batch's other pages.
    fn zero_pages(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<bool, Self::Error> {
        let _ = (pfns, types);
        Ok(false)
    }

    /// Lends the pages of a batch (already populated) that have data, by
    /// their `types`, in order, for `f` to fill where they are, so
    /// received pages land in the guest without a copy (read straight off
    /// the link).
    /// When `f` returns `true`, the pages hold what it wrote and the
    /// backend treats them as [`write_pages`](Self::write_pages) would (PV
    /// page tables localised). When it returns `false` the data could not
    /// be had: the pages' contents are unspecified and the caller fails
    /// the migration (the copy is destroyed). Returns `false`, without
    /// calling `f`, when the backend cannot lend this batch (the default):
    /// the caller then uses `write_pages`.
    fn lend_pages_mut(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        f: &mut FillFn<'_>,
    ) -> Result<bool, Self::Error> {
        let _ = (pfns, types, f);
        Ok(false)
    }

    /// Loads a vCPU's state from the stream record body. Called once per
    /// vCPU, after the last page.
    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<(), Self::Error>;

    /// The image is entirely applied (Xen's `stream_complete`: pin page
    /// tables, seed grant tables, write the p2m). The guest stays paused.
    /// Called once; only after it returned `Ok` may the destination tell the
    /// source it is prepared. The default does nothing.
    fn complete(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Lets the guest run. Called once, only after the source's commit has
    /// been received and journaled.
    fn unpause(&mut self) -> Result<(), Self::Error>;

    /// Destroys the partial or prepared copy. Called once on any outcome
    /// other than "committed".
    fn destroy(&mut self) -> Result<(), Self::Error>;

    /// The guest's scheduling parameters from the source (weight, cap),
    /// as it had them before any throttle. Called at most once, before
    /// [`complete`](Self::complete). The default ignores them.
    fn set_sched_params(&mut self, params: SchedParams) -> Result<(), Self::Error> {
        let _ = params;
        Ok(())
    }

    /// A record of the image that is neither pages nor the stream's own
    /// framing (Xen's `restore_ops.process_record`): its raw type and whole
    /// body as on the wire (a per-vCPU record's body starts with its vCPU
    /// header). For a PV guest, in stream order: `X86_PV_INFO`, the CPUID
    /// and MSR policies, `X86_PV_P2M_FRAMES` before any page; then, after
    /// the last page and before [`complete`](Self::complete), `X86_TSC_INFO`,
    /// `SHARED_INFO` and the `X86_PV_VCPU_*` records. The default refuses
    /// nothing and keeps nothing (the simulator's images carry none).
    fn record(&mut self, rtype: u32, body: &[u8]) -> Result<(), Self::Error> {
        let _ = (rtype, body);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn only_the_shared_zeros_are_known_zeros_by_address() {
        assert!(is_zero_run(&ZERO_RUN));
        assert!(is_zero_run(&ZERO_RUN[PAGE_SIZE..3 * PAGE_SIZE]));
        assert!(is_zero_run(&ZERO_RUN[ZERO_RUN.len()..]));
        // Zeros elsewhere are not known: they must be read.
        let elsewhere = [0u8; PAGE_SIZE];
        assert!(!is_zero_run(&elsewhere));
        // Another block of zeros of the same size.
        static OTHER: [u8; ZERO_RUN_PAGES * PAGE_SIZE] = [0; ZERO_RUN_PAGES * PAGE_SIZE];
        assert!(!is_zero_run(&OTHER));
    }

    #[test]
    fn page_types() {
        assert!(PageType::NOTAB.has_data());
        assert!(PageType::L1TAB.has_data());
        assert!(!PageType::XTAB.has_data());
        assert!(!PageType::XALLOC.has_data());
        assert!(!PageType::BROKEN.has_data());
        assert_eq!(PageType::L3TAB.table_level(), Some(3));
        let pinned = PageType::from_raw(PageType::L4TAB.raw() | PageType::PINNED);
        assert_eq!(pinned.table_level(), Some(4));
        assert!(pinned.is_pinned());
        assert!(!PageType::XTAB.is_pinned());
        assert_eq!(PageType::XTAB.table_level(), None);
        assert_eq!(PageType::NOTAB.table_level(), None);
        // Low bits are not part of the type.
        assert_eq!(PageType::from_raw(0x1000_0123), PageType::L1TAB);
    }

    #[test]
    fn throttled_caps() {
        let d = SchedParams::DEFAULT;
        // No cap of its own: a share of all its vCPUs.
        assert_eq!(d.throttled(1, 20).cap, 80);
        assert_eq!(d.throttled(4, 50).cap, 200);
        assert_eq!(d.throttled(2, 99).cap, 2);
        // Never 0 (which would mean no cap) and never above its own cap.
        assert_eq!(d.throttled(1, 100).cap, 1);
        let own = SchedParams {
            weight: 512,
            cap: 50,
        };
        assert_eq!(
            own.throttled(4, 20),
            SchedParams {
                weight: 512,
                cap: 40
            }
        );
        assert_eq!(own.throttled(4, 0).cap, 50);
        let big = SchedParams {
            weight: 256,
            cap: 900,
        };
        assert_eq!(big.throttled(2, 0).cap, 200);
    }
}
