//! One simulated domain: sparse memory, one vCPU running the workload, a
//! dirty log, pause and unpause.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::memory::{is_zero, SparseMemory};
use super::workload::{counter_page, page_contents, read_counter, ExpectedMemory, VcpuState};
use super::{DomainState, Domid, Drive, HvShared, PageType, SimError, PAGE_SIZE};
use relocd_core::guest::SchedParams;

/// Most steps a real-time ticker runs at one wake-up to catch up; beyond
/// that the missed time is dropped (the guest's vCPU was "slow").
const MAX_CATCH_UP: u64 = 100;

/// Pages compared per lock in [`SimGuest::first_difference`].
const COMPARE_BATCH: usize = 256;

/// Number of `u64` words a dirty bitmap of `nr_pages` pages needs.
pub fn bitmap_words(nr_pages: u64) -> usize {
    usize::try_from(nr_pages.div_ceil(64)).unwrap_or(usize::MAX)
}

#[derive(Debug)]
pub(crate) struct GuestState {
    pub(crate) name: String,
    pub(crate) run: DomainState,
    vcpu: Option<VcpuState>,
    mem: SparseMemory,
    /// The dirty log while log-dirty mode is on.
    dirty: Option<Vec<u64>>,
    /// Bumped at every unpause and pause so a stale ticker thread stops.
    ticker: u64,
    /// Scheduling parameters: a cap slows the workload (one vCPU: a cap
    /// of `c` percent runs `c` % of its steps).
    sched: SchedParams,
    /// Pages written where they are, lent to the writer
    /// ([`SimGuest::lend_pages_mut`]).
    filled_in_place: u64,
}

fn mark(dirty: &mut Option<Vec<u64>>, pfn: u64) {
    if let Some(bitmap) = dirty {
        let word = usize::try_from(pfn / 64).unwrap_or(usize::MAX);
        if let Some(w) = bitmap.get_mut(word) {
            *w |= 1 << (pfn % 64);
        }
    }
}

impl GuestState {
    /// The share of its steps the vCPU runs under its cap, 1 to 100.
    fn speed_percent(&self) -> u128 {
        match self.sched.cap {
            0 => 100,
            c => u128::from(c.min(100)),
        }
    }

    /// Runs one step of the workload (see `workload`'s module doc).
    fn step(&mut self) {
        let GuestState {
            vcpu, mem, dirty, ..
        } = self;
        let Some(vcpu) = vcpu.as_mut() else {
            return;
        };
        let k = vcpu.step + 1;
        let workload = vcpu.workload;
        let nr_pages = mem.nr_pages();
        if let Some(page) = mem.get_mut(0) {
            counter_page(&workload, k, page);
            mark(dirty, 0);
        }
        workload.for_each_target(nr_pages, k, |pfn| {
            if let Some(page) = mem.get_mut(pfn) {
                page_contents(workload.seed, k, pfn, page);
                mark(dirty, pfn);
            }
        });
        vcpu.step = k;
    }

    fn live(&self) -> Result<(), SimError> {
        if self.run == DomainState::Destroyed {
            return Err(SimError::Destroyed(self.name.clone()));
        }
        Ok(())
    }

    fn check_pfn(&self, pfn: u64) -> Result<(), SimError> {
        if pfn >= self.mem.nr_pages() {
            return Err(SimError::PfnOutOfRange {
                pfn,
                nr_pages: self.mem.nr_pages(),
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct GuestInner {
    domid: Domid,
    nr_pages: u64,
    drive: Drive,
    state: Mutex<GuestState>,
    wake: Condvar,
    hv: Weak<HvShared>,
}

impl GuestInner {
    fn lock(&self) -> MutexGuard<'_, GuestState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle on one simulated domain; clones share the domain.
///
/// The operations map one to one onto what migration asks of a guest:
///
/// | source side | sink (destination) side |
/// | --- | --- |
/// | [`read_pages`](Self::read_pages), [`page_types`](Self::page_types) | [`populate`](Self::populate), [`write_pages`](Self::write_pages) |
/// | [`enable_log_dirty`](Self::enable_log_dirty), [`peek_dirty`](Self::peek_dirty), [`clean_dirty`](Self::clean_dirty), [`disable_log_dirty`](Self::disable_log_dirty) | |
/// | [`pause`](Self::pause), [`vcpu_state`](Self::vcpu_state) / [`vcpu_context`](Self::vcpu_context) | [`set_vcpu_state`](Self::set_vcpu_state) / [`set_vcpu_context`](Self::set_vcpu_context), [`unpause`](Self::unpause), [`destroy`](Self::destroy) |
///
/// Every method takes the domain's lock for its whole duration, so a batch
/// read or write is atomic with respect to workload steps, and once
/// [`pause`](Self::pause) returns no step runs until the next
/// [`unpause`](Self::unpause).
#[derive(Clone, Debug)]
pub struct SimGuest {
    inner: Arc<GuestInner>,
}

impl SimGuest {
    pub(crate) fn new(
        domid: Domid,
        name: String,
        nr_pages: u64,
        vcpu: Option<VcpuState>,
        run: DomainState,
        drive: Drive,
        hv: Weak<HvShared>,
    ) -> Self {
        let pool = hv
            .upgrade()
            .map(|h| Arc::downgrade(&h.pool))
            .unwrap_or_default();
        SimGuest {
            inner: Arc::new(GuestInner {
                domid,
                nr_pages,
                drive,
                state: Mutex::new(GuestState {
                    name,
                    run,
                    // A domain made without a vCPU is a destination: the
                    // migration writes its memory in long runs.
                    mem: SparseMemory::new(nr_pages, vcpu.is_none(), pool),
                    vcpu,
                    dirty: None,
                    ticker: 0,
                    sched: SchedParams::DEFAULT,
                    filled_in_place: 0,
                }),
                wake: Condvar::new(),
                hv,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, GuestState> {
        self.inner.lock()
    }

    /// Marks the domain destroyed and frees its memory (the hypervisor has
    /// already taken it out of its table).
    pub(crate) fn kill(&self) {
        let mut st = self.lock();
        st.run = DomainState::Destroyed;
        st.ticker += 1;
        st.mem.clear();
        st.dirty = None;
        st.vcpu = None;
        self.inner.wake.notify_all();
    }

    /// The domain id.
    pub fn domid(&self) -> Domid {
        self.inner.domid
    }

    /// The current name.
    pub fn name(&self) -> String {
        self.lock().name.clone()
    }

    /// Number of 4 KiB pages (pfns `0..nr_pages`).
    pub fn nr_pages(&self) -> u64 {
        self.inner.nr_pages
    }

    /// Memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.inner.nr_pages * PAGE_SIZE as u64
    }

    /// Running, paused or destroyed.
    pub fn state(&self) -> DomainState {
        self.lock().run
    }

    /// The scheduling parameters (weight, cap) as Xen's credit schedulers
    /// hold them.
    pub fn sched(&self) -> SchedParams {
        self.lock().sched
    }

    /// Sets the scheduling parameters. A cap below 100 (one vCPU) makes
    /// the real-time workload run that share of its steps: a capped guest
    /// dirties memory proportionally slower. [`advance`](Self::advance)
    /// is not capped (it is the tests' explicit clock).
    pub fn set_sched(&self, params: SchedParams) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        st.sched = params;
        self.inner.wake.notify_all();
        Ok(())
    }

    /// Pages that hold storage (written with something other than zeros);
    /// the rest read as zeros and cost nothing.
    pub fn allocated_pages(&self) -> u64 {
        self.lock().mem.allocated_pages()
    }

    /// Pages written in place so far: lent to the writer and filled
    /// ([`lend_pages_mut`](Self::lend_pages_mut)), not copied in.
    pub fn pages_filled_in_place(&self) -> u64 {
        self.lock().filled_in_place
    }

    /// The vCPU's step counter: the last workload step run; `None` for an
    /// empty domain that has no vCPU state yet.
    pub fn steps(&self) -> Option<u64> {
        self.lock().vcpu.map(|v| v.step)
    }

    /// The step counter as the guest's memory holds it (pfn 0), `None` if
    /// the workload has not written it.
    pub fn memory_counter(&self) -> Option<u64> {
        self.lock().mem.get(0).and_then(read_counter)
    }

    /// Runs up to `steps` workload steps now, if the domain is running;
    /// returns how many ran (0 when paused or destroyed). This is the
    /// deterministic way to move a guest on; with [`Drive::RealTime`] a
    /// background thread calls the same code once per step period.
    pub fn advance(&self, steps: u64) -> u64 {
        let mut st = self.lock();
        if st.run != DomainState::Running {
            return 0;
        }
        for _ in 0..steps {
            st.step();
        }
        steps
    }

    /// Writes the workload's fill (its module doc): the initial contents of
    /// the pages [`Workload::filled`] names.
    ///
    /// [`Workload::filled`]: super::Workload::filled
    pub(crate) fn fill(&self, workload: &super::Workload) {
        if workload.fill_percent == 0 {
            return;
        }
        let mut st = self.lock();
        let nr = self.inner.nr_pages;
        for pfn in 1..nr {
            if workload.filled(nr, pfn) {
                if let Some(page) = st.mem.get_mut(pfn) {
                    page_contents(workload.seed, 0, pfn, page);
                }
            }
        }
    }

    // ----- source side -----

    /// Copies the pages `pfns` into `out` (`pfns.len() * 4096` bytes), in
    /// order; never-written pages read as zeros.
    pub fn read_pages(&self, pfns: &[u64], out: &mut [u8]) -> Result<(), SimError> {
        let st = self.lock();
        st.live()?;
        check_batch(pfns.len(), out.len())?;
        for &pfn in pfns {
            st.check_pfn(pfn)?;
        }
        for (&pfn, page) in pfns.iter().zip(out.chunks_exact_mut(PAGE_SIZE)) {
            st.mem.read(pfn, page);
        }
        Ok(())
    }

    /// Calls `f` with the pages `pfns` where they are, in order, as runs
    /// of whole pages (pages that were never written as zeros): what
    /// [`read_pages`](Self::read_pages) would copy. The domain stays locked
    /// while `f` runs: its vCPU waits, and nothing changes the pages.
    pub fn lend_pages(&self, pfns: &[u64], f: &mut dyn FnMut(&[&[u8]])) -> Result<(), SimError> {
        let st = self.lock();
        st.live()?;
        for &pfn in pfns {
            st.check_pfn(pfn)?;
        }
        let mut runs = Vec::with_capacity(pfns.len());
        if !st.mem.lend(pfns, &mut runs) {
            // Every pfn is in range (checked above).
            return Err(SimError::PfnOutOfRange {
                pfn: pfns.iter().copied().max().unwrap_or_default(),
                nr_pages: st.mem.nr_pages(),
            });
        }
        f(&runs);
        Ok(())
    }

    /// Fills `types` with the type of each page of `pfns` (as Xen's
    /// getpageframeinfo3). Every page of a simulated guest is
    /// [`PageType::NOTAB`].
    pub fn page_types(&self, pfns: &[u64], types: &mut [PageType]) -> Result<(), SimError> {
        let st = self.lock();
        st.live()?;
        if pfns.len() != types.len() {
            return Err(SimError::BufferSize {
                expected: pfns.len(),
                got: types.len(),
            });
        }
        for (&pfn, ty) in pfns.iter().zip(types.iter_mut()) {
            st.check_pfn(pfn)?;
            *ty = PageType::NOTAB;
        }
        Ok(())
    }

    /// Turns log-dirty mode on with an empty log (as Xen's
    /// `XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY`); already on: the log is
    /// kept.
    pub fn enable_log_dirty(&self) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        if st.dirty.is_none() {
            st.dirty = Some(vec![0; bitmap_words(self.inner.nr_pages)]);
        }
        Ok(())
    }

    /// Turns log-dirty mode off and drops the log.
    pub fn disable_log_dirty(&self) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        st.dirty = None;
        Ok(())
    }

    /// Whether log-dirty mode is on.
    pub fn log_dirty_enabled(&self) -> bool {
        self.lock().dirty.is_some()
    }

    /// Copies the dirty log (bit `pfn % 64` of word `pfn / 64` set for each
    /// page written since the last clean or enable) into the first
    /// [`bitmap_words`]`(nr_pages)` words of `bitmap`, leaving the log as
    /// it is (`XEN_DOMCTL_SHADOW_OP_PEEK`). Returns the number of dirty
    /// pages.
    pub fn peek_dirty(&self, bitmap: &mut [u64]) -> Result<u64, SimError> {
        self.copy_dirty(bitmap, false)
    }

    /// As [`peek_dirty`](Self::peek_dirty), then empties the log
    /// (`XEN_DOMCTL_SHADOW_OP_CLEAN`): a page written after this call
    /// shows in the next one.
    pub fn clean_dirty(&self, bitmap: &mut [u64]) -> Result<u64, SimError> {
        self.copy_dirty(bitmap, true)
    }

    fn copy_dirty(&self, bitmap: &mut [u64], clean: bool) -> Result<u64, SimError> {
        let mut st = self.lock();
        st.live()?;
        let words = bitmap_words(self.inner.nr_pages);
        let Some(log) = st.dirty.as_mut() else {
            return Err(SimError::LogDirtyOff);
        };
        let Some(dest) = bitmap.get_mut(..words) else {
            return Err(SimError::BufferSize {
                expected: words,
                got: bitmap.len(),
            });
        };
        dest.copy_from_slice(log);
        if clean {
            log.fill(0);
        }
        Ok(dest.iter().map(|w| u64::from(w.count_ones())).sum())
    }

    /// Stops the vCPU: once this returns, no workload step runs until
    /// [`unpause`](Self::unpause). Pausing a paused domain does nothing.
    pub fn pause(&self) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        if st.run == DomainState::Running {
            st.run = DomainState::Paused;
            st.ticker += 1;
            self.inner.wake.notify_all();
        }
        Ok(())
    }

    /// The vCPU state; fails for an empty domain that has none yet.
    pub fn vcpu_state(&self) -> Result<VcpuState, SimError> {
        let st = self.lock();
        st.live()?;
        st.vcpu.ok_or(SimError::NoVcpuState)
    }

    /// The vCPU state as its blob (layout on [`VcpuState`]), as it travels
    /// in the stream's HVM_CONTEXT record.
    pub fn vcpu_context(&self) -> Result<[u8; super::VCPU_STATE_LEN], SimError> {
        Ok(self.vcpu_state()?.to_bytes())
    }

    // ----- sink side -----

    /// Makes `pfns` backed (Xen's populate_physmap). Simulated memory is
    /// always backed, so this only checks the pfns.
    pub fn populate(&self, pfns: &[u64]) -> Result<(), SimError> {
        let st = self.lock();
        st.live()?;
        pfns.iter().try_for_each(|&pfn| st.check_pfn(pfn))
    }

    /// Writes the pages `pfns` from `data` (`pfns.len() * 4096` bytes), in
    /// order. A page of zeros frees its storage. Writes show in the dirty
    /// log when it is on.
    pub fn write_pages(&self, pfns: &[u64], data: &[u8]) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        check_batch(pfns.len(), data.len())?;
        for &pfn in pfns {
            st.check_pfn(pfn)?;
        }
        let GuestState { mem, dirty, .. } = &mut *st;
        for (&pfn, page) in pfns.iter().zip(data.chunks_exact(PAGE_SIZE)) {
            // In range (checked above): false is memory the host could not
            // map.
            if !mem.write(pfn, page) {
                return Err(SimError::NoCapacity {
                    needed: PAGE_SIZE as u64,
                    free: 0,
                });
            }
            mark(dirty, pfn);
        }
        Ok(())
    }

    /// Lends the pages `pfns` (ascending) to `f` to be written whole, as
    /// runs of whole pages in order, where they are; returns whether they
    /// were lent. When `f` returns `true` they hold what it wrote (a page
    /// of zeros frees its storage, as [`write_pages`](Self::write_pages)
    /// does) and show in the dirty log when it is on; when it returns
    /// `false` they read as zeros. `Ok(false)`, without calling `f`, when
    /// the pfns are not ascending or memory cannot be had: write them
    /// instead.
    pub fn lend_pages_mut(
        &self,
        pfns: &[u64],
        f: &mut dyn FnMut(&mut [&mut [u8]]) -> bool,
    ) -> Result<bool, SimError> {
        let mut st = self.lock();
        st.live()?;
        for &pfn in pfns {
            st.check_pfn(pfn)?;
        }
        let GuestState {
            mem,
            dirty,
            filled_in_place,
            ..
        } = &mut *st;
        let mut runs = Vec::with_capacity(pfns.len().min(64));
        let filled = match mem.lend_mut(pfns, &mut runs) {
            true => Some(f(&mut runs)),
            false => None,
        };
        drop(runs);
        if filled == Some(true) {
            *filled_in_place += pfns.len() as u64;
        }
        for &pfn in pfns {
            match filled {
                // Zeros take nothing; a few words tell a page with data.
                Some(true) if mem.get(pfn).is_some_and(|p| !is_zero(p)) => {}
                _ => mem.discard(pfn),
            }
            if filled == Some(true) {
                mark(dirty, pfn);
            }
        }
        Ok(filled.is_some())
    }

    /// Makes the pages `pfns` read as zeros (their storage goes back to
    /// the memory's chunk; nothing is written). Shows in the dirty log
    /// when it is on.
    pub fn zero_pages(&self, pfns: &[u64]) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        for &pfn in pfns {
            st.check_pfn(pfn)?;
        }
        let GuestState { mem, dirty, .. } = &mut *st;
        for &pfn in pfns {
            mem.discard(pfn);
            mark(dirty, pfn);
        }
        Ok(())
    }

    /// Sets the vCPU state; the domain must be paused. The workload goes on
    /// from `state.step + 1` at the next [`unpause`](Self::unpause).
    pub fn set_vcpu_state(&self, state: VcpuState) -> Result<(), SimError> {
        state.check()?;
        let mut st = self.lock();
        st.live()?;
        if st.run != DomainState::Paused {
            return Err(SimError::NotPaused(st.name.clone()));
        }
        st.vcpu = Some(state);
        Ok(())
    }

    /// Sets the vCPU state from its blob (checked, never panics).
    pub fn set_vcpu_context(&self, blob: &[u8]) -> Result<(), SimError> {
        self.set_vcpu_state(VcpuState::from_bytes(blob)?)
    }

    /// Lets the vCPU run: the workload goes on from the vCPU's step
    /// counter (driven by [`advance`](Self::advance), or by a background
    /// thread with [`Drive::RealTime`]). Fails when the domain has no vCPU
    /// state; unpausing a running domain does nothing.
    pub fn unpause(&self) -> Result<(), SimError> {
        let mut st = self.lock();
        st.live()?;
        if st.run == DomainState::Running {
            return Ok(());
        }
        let Some(vcpu) = st.vcpu else {
            return Err(SimError::NoVcpuState);
        };
        st.run = DomainState::Running;
        st.ticker += 1;
        if self.inner.drive == Drive::RealTime {
            let weak = Arc::downgrade(&self.inner);
            let generation = st.ticker;
            let period = Duration::from_nanos(vcpu.workload.step_period_ns);
            let name = format!("sim-{}", self.inner.domid);
            let spawned = thread::Builder::new()
                .name(name)
                .spawn(move || ticker(&weak, generation, period));
            if let Err(e) = spawned {
                st.run = DomainState::Paused;
                return Err(SimError::Thread(e.to_string()));
            }
        }
        Ok(())
    }

    /// Destroys the domain: it leaves the hypervisor, its memory is freed,
    /// and every later operation on any handle fails with
    /// [`SimError::Destroyed`].
    pub fn destroy(&self) -> Result<(), SimError> {
        match self.inner.hv.upgrade() {
            Some(hv) => hv.destroy(self.inner.domid),
            None => {
                self.kill();
                Ok(())
            }
        }
    }

    // ----- checks for tests and the demo -----

    /// Compares this guest's memory with what `expected` says, byte for
    /// byte: `Ok` or the first pfn that differs.
    pub fn verify(&self, expected: &ExpectedMemory) -> Result<(), SimError> {
        let st = self.lock();
        st.live()?;
        if expected.nr_pages() != self.inner.nr_pages {
            return Err(SimError::SizeMismatch {
                ours: self.inner.nr_pages,
                theirs: expected.nr_pages(),
            });
        }
        let mut want = Box::new([0; PAGE_SIZE]);
        for pfn in 0..self.inner.nr_pages {
            let have = st.mem.get(pfn);
            let same = match expected.last_write(pfn) {
                None => have.is_none_or(|page| is_zero(page)),
                Some(_) => {
                    expected.page(pfn, &mut want);
                    match have {
                        Some(page) => page[..] == want[..],
                        None => is_zero(&want[..]),
                    }
                }
            };
            if !same {
                return Err(SimError::MemoryDiffers { pfn });
            }
        }
        Ok(())
    }

    /// The first pfn at which this guest's memory and `other`'s differ, or
    /// `None` when they are byte-identical. Reads both in batches, one
    /// lock at a time, so it is safe to call while either runs (the answer
    /// is then only as good as the moment).
    pub fn first_difference(&self, other: &SimGuest) -> Result<Option<u64>, SimError> {
        let nr = self.nr_pages();
        if other.nr_pages() != nr {
            return Err(SimError::SizeMismatch {
                ours: nr,
                theirs: other.nr_pages(),
            });
        }
        let mut a = vec![0; COMPARE_BATCH * PAGE_SIZE];
        let mut b = vec![0; COMPARE_BATCH * PAGE_SIZE];
        let mut pfns = Vec::with_capacity(COMPARE_BATCH);
        let mut start = 0;
        while start < nr {
            let end = nr.min(start + COMPARE_BATCH as u64);
            pfns.clear();
            pfns.extend(start..end);
            let len = pfns.len() * PAGE_SIZE;
            self.read_pages(&pfns, &mut a[..len])?;
            other.read_pages(&pfns, &mut b[..len])?;
            for ((pa, pb), &pfn) in a[..len]
                .chunks_exact(PAGE_SIZE)
                .zip(b[..len].chunks_exact(PAGE_SIZE))
                .zip(&pfns)
            {
                if pa != pb {
                    return Ok(Some(pfn));
                }
            }
            start = end;
        }
        Ok(None)
    }
}

fn check_batch(pages: usize, bytes: usize) -> Result<(), SimError> {
    let expected = pages.saturating_mul(PAGE_SIZE);
    if bytes != expected {
        return Err(SimError::BufferSize {
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// The real-time driver of one run of a guest (from an unpause to the next
/// pause): one step per `period` of the vCPU's time, which is wall time
/// scaled by its cap ([`SimGuest::set_sched`]). It stops when the guest is
/// paused, destroyed or dropped.
fn ticker(weak: &Weak<GuestInner>, generation: u64, period: Duration) {
    let period_ns = period.as_nanos().max(1);
    let mut last = Instant::now();
    // vCPU time earned and not yet spent on steps, ns.
    let mut owed: u128 = 0;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let mut st = inner.lock();
        if st.run != DomainState::Running || st.ticker != generation {
            return;
        }
        let now = Instant::now();
        let speed = st.speed_percent();
        owed += now.saturating_duration_since(last).as_nanos() * speed / 100;
        last = now;
        let due = owed / period_ns;
        for i in 0..due.min(u128::from(MAX_CATCH_UP)) {
            if i > 0 {
                // The lock is let go between steps, so a migration's reads
                // and dirty-log calls interleave with a catch-up as they
                // would with a real guest's writes.
                drop(st);
                st = inner.lock();
                if st.run != DomainState::Running || st.ticker != generation {
                    return;
                }
            }
            st.step();
        }
        // Time beyond the catch-up limit is lost, not owed.
        owed -= due * period_ns;
        let wall_ns = (period_ns - owed) * 100 / speed;
        let wait = Duration::from_nanos(u64::try_from(wall_ns).unwrap_or(u64::MAX));
        let (st, _) = inner
            .wake
            .wait_timeout(st, wait)
            .unwrap_or_else(PoisonError::into_inner);
        drop(st);
    }
}
