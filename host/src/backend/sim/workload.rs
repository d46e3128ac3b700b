//! The deterministic workload a simulated guest runs, and its vCPU state.
//!
//! A guest's workload advances in numbered steps, 1, 2, 3, …; step `k`
//! does, in this order:
//!
//! 1. writes the *counter page* (pfn 0): [`COUNTER_MAGIC`], then `k`, the
//!    seed and the dirty rate as little-endian `u64`s, the rest zeros
//!    ([`counter_page`]);
//! 2. writes [`Workload::pages_in_step`]`(k)` pages, the `i`-th at the pfn
//!    [`Workload::target`]`(nr_pages, k, i)`, each filled with
//!    [`page_contents`]`(seed, k, pfn)`.
//!
//! Every choice is a pure function of the seed, the step number and the
//! guest's page count, so the memory of a guest after `n` steps does not
//! depend on when, how fast or on which host the steps ran:
//! [`ExpectedMemory`] recomputes it. The state a step needs beyond memory
//! (the step number and the workload's parameters) is the guest's
//! [`VcpuState`], which travels with the guest when it migrates; the
//! destination then goes on at step `n + 1` exactly as the source would
//! have.
//!
//! # Rate
//!
//! A workload dirties `dirty_rate` bytes per second of simulated time, with
//! one step every `step_period_ns`. Steps `1..=k` write
//! `floor(k · dirty_rate · step_period_ns / (4096 · 10⁹))` pages in all
//! (not counting the counter page); step `k` writes the difference from
//! step `k - 1`, so a rate that is not a whole number of pages per step is
//! met on average with no drift.
//!
//! # Patterns
//!
//! Workload pages are pfns `1..nr_pages` (pfn 0 is the counter page).
//! - [`Pattern::Uniform`]: each write picks a pfn uniformly.
//! - [`Pattern::Hot`]: the hot set is the first tenth of the workload pages
//!   (pfns `1..=max(1, (nr_pages - 1) / 10)`); nine writes in ten go to a
//!   pfn picked uniformly in the hot set, one in ten to a pfn picked
//!   uniformly in all workload pages.
//!
//! A guest of one page writes only its counter page.
//!
//! # Fill
//!
//! A workload with a fill of `f` percent starts from a memory in which
//! each workload page whose [`Workload::filled`] holds (about `f` % of
//! them, picked by a hash of the seed and the pfn) has the contents
//! [`page_contents`]`(seed, 0, pfn)`, as if a step 0 had written it; the
//! other pages are zeros, as most of a freshly booted guest's are.

use std::collections::HashMap;

use super::PAGE_SIZE;

/// The default simulated time per step: 10 ms.
pub const DEFAULT_STEP_PERIOD_NS: u64 = 10_000_000;

/// The largest step period a [`VcpuState`] may carry: 1 s.
pub const MAX_STEP_PERIOD_NS: u64 = 1_000_000_000;

/// The largest dirty rate a workload may have: 64 GiB/s.
pub const MAX_DIRTY_RATE: u64 = 64 << 30;

/// The first 8 bytes of the counter page once the workload has run.
pub const COUNTER_MAGIC: [u8; 8] = *b"RELOCSIM";

/// Which pages a workload writes (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Writes spread evenly over all of memory.
    Uniform,
    /// 90 % of writes go to a hot set of 10 % of the pages.
    Hot,
}

impl Pattern {
    /// The code of the pattern in a [`VcpuState`] blob.
    pub fn code(self) -> u32 {
        match self {
            Pattern::Uniform => 0,
            Pattern::Hot => 1,
        }
    }

    /// The pattern with the given blob code, if there is one.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Pattern::Uniform),
            1 => Some(Pattern::Hot),
            _ => None,
        }
    }
}

/// The parameters of a workload: with a page count and a step number they
/// determine every byte it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Seed of every choice the workload makes.
    pub seed: u64,
    /// Bytes written per second of simulated time.
    pub dirty_rate: u64,
    /// Which pages are written.
    pub pattern: Pattern,
    /// Simulated time per step, in nanoseconds (never 0 in a valid
    /// workload).
    pub step_period_ns: u64,
    /// Percentage of the workload pages that hold data before step 1 (the
    /// module doc's "Fill"); at most 100.
    pub fill_percent: u8,
}

/// splitmix64's finaliser: a cheap, well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash3(a: u64, b: u64, c: u64) -> u64 {
    mix(a ^ mix(b ^ mix(c)))
}

impl Workload {
    /// Workload pages written by steps `1..=k` together (counter page not
    /// counted).
    pub fn pages_through(&self, k: u64) -> u64 {
        let bytes = u128::from(k) * u128::from(self.dirty_rate) * u128::from(self.step_period_ns);
        let pages = bytes / (PAGE_SIZE as u128 * 1_000_000_000);
        u64::try_from(pages).unwrap_or(u64::MAX)
    }

    /// Workload pages written by step `k` (counter page not counted); 0 for
    /// step 0, which does not exist.
    pub fn pages_in_step(&self, k: u64) -> u64 {
        if k == 0 {
            return 0;
        }
        self.pages_through(k) - self.pages_through(k - 1)
    }

    /// The pfn of the `i`-th workload write of step `k` in a guest of
    /// `nr_pages` pages; `None` when the guest has no workload pages (one
    /// page only).
    pub fn target(&self, nr_pages: u64, k: u64, i: u64) -> Option<u64> {
        let span = nr_pages.checked_sub(1).filter(|&s| s > 0)?;
        let r = hash3(self.seed, k, i);
        let pick = match self.pattern {
            Pattern::Uniform => r % span,
            Pattern::Hot => {
                let hot = (span / 10).max(1);
                // The low bits choose hot or not, the high bits the page.
                if (r & 0xffff) % 10 == 0 {
                    (r >> 16) % span
                } else {
                    (r >> 16) % hot
                }
            }
        };
        Some(1 + pick)
    }

    /// Calls `f` with each pfn step `k` writes besides the counter page, in
    /// write order (a pfn may come more than once).
    pub fn for_each_target(&self, nr_pages: u64, k: u64, mut f: impl FnMut(u64)) {
        for i in 0..self.pages_in_step(k) {
            match self.target(nr_pages, k, i) {
                Some(pfn) => f(pfn),
                None => return,
            }
        }
    }

    /// Whether `pfn` of a guest of `nr_pages` pages holds data before step
    /// 1 (module doc, "Fill").
    pub fn filled(&self, nr_pages: u64, pfn: u64) -> bool {
        self.fill_percent > 0
            && pfn >= 1
            && pfn < nr_pages
            && hash3(self.seed, 0x6669_6c6c, pfn) % 100 < u64::from(self.fill_percent)
    }

    /// Steps per second of simulated time.
    pub fn steps_per_second(&self) -> f64 {
        1e9 / self.step_period_ns.max(1) as f64
    }
}

/// Fills `out` with what the workload of `seed` writes to `pfn` at step
/// `k`: the pfn, `k` and the seed as little-endian `u64`s, then bytes from
/// a splitmix64 stream seeded by the three.
pub fn page_contents(seed: u64, k: u64, pfn: u64, out: &mut [u8; PAGE_SIZE]) {
    let (head, rest) = out.split_at_mut(24);
    head[0..8].copy_from_slice(&pfn.to_le_bytes());
    head[8..16].copy_from_slice(&k.to_le_bytes());
    head[16..24].copy_from_slice(&seed.to_le_bytes());
    let mut state = hash3(seed, k, pfn ^ 0x5851_f42d_4c95_7f2d);
    for word in rest.chunks_exact_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        word.copy_from_slice(&mix(state).to_le_bytes());
    }
}

/// Fills `out` with the counter page (pfn 0) as step `k` of `workload`
/// leaves it (see the module doc).
pub fn counter_page(workload: &Workload, k: u64, out: &mut [u8; PAGE_SIZE]) {
    out.fill(0);
    out[0..8].copy_from_slice(&COUNTER_MAGIC);
    out[8..16].copy_from_slice(&k.to_le_bytes());
    out[16..24].copy_from_slice(&workload.seed.to_le_bytes());
    out[24..32].copy_from_slice(&workload.dirty_rate.to_le_bytes());
}

/// Reads the step counter out of a counter page: `None` when the page does
/// not start with [`COUNTER_MAGIC`] (the workload never ran).
pub fn read_counter(page: &[u8; PAGE_SIZE]) -> Option<u64> {
    if page[0..8] != COUNTER_MAGIC {
        return None;
    }
    let mut k = [0; 8];
    k.copy_from_slice(&page[8..16]);
    Some(u64::from_le_bytes(k))
}

/// Length of a [`VcpuState`] blob.
pub const VCPU_STATE_LEN: usize = 64;

/// First 8 bytes of a [`VcpuState`] blob.
pub const VCPU_STATE_MAGIC: [u8; 8] = *b"RSIMVCPU";

/// Version of the [`VcpuState`] blob layout.
pub const VCPU_STATE_VERSION: u32 = 1;

/// A simulated guest's only vCPU: where its program is (`step`, the last
/// step run) and what the program is (the workload). This is what
/// migration carries besides memory, in the place Xen's HVM_CONTEXT record
/// carries real registers.
///
/// Blob layout ([`VCPU_STATE_LEN`] bytes, little-endian):
///
/// | bytes | field |
/// | --- | --- |
/// | 0..8 | [`VCPU_STATE_MAGIC`] |
/// | 8..12 | [`VCPU_STATE_VERSION`] |
/// | 12..16 | pattern code ([`Pattern::code`]) |
/// | 16..24 | step |
/// | 24..32 | seed |
/// | 32..40 | dirty rate, bytes/s |
/// | 40..48 | step period, ns |
/// | 48 | fill percentage (0–100) |
/// | 49..64 | reserved, zero |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuState {
    /// The last step run (0: none yet); the next step is `step + 1`.
    pub step: u64,
    /// The program the vCPU runs.
    pub workload: Workload,
}

/// Why a [`VcpuState`] blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VcpuStateError {
    /// The blob is not [`VCPU_STATE_LEN`] bytes long.
    #[error("vCPU state is {0} bytes, expected 64")]
    Length(usize),
    /// The blob does not start with [`VCPU_STATE_MAGIC`].
    #[error("vCPU state does not start with RSIMVCPU")]
    Magic,
    /// A layout version this build does not read.
    #[error("vCPU state version {0}, expected 1")]
    Version(u32),
    /// A pattern code that is not known.
    #[error("vCPU state pattern code {0} is unknown")]
    Pattern(u32),
    /// Step period 0 or above [`MAX_STEP_PERIOD_NS`], dirty rate above
    /// [`MAX_DIRTY_RATE`], or a fill above 100 %.
    #[error("vCPU state workload out of range (step period {period_ns} ns, dirty rate {dirty_rate} B/s)")]
    Range {
        /// The step period found.
        period_ns: u64,
        /// The dirty rate found.
        dirty_rate: u64,
    },
    /// Reserved bytes are not zero.
    #[error("vCPU state reserved bytes are not zero")]
    Reserved,
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

impl VcpuState {
    /// A vCPU about to run step 1 of `workload`.
    pub fn boot(workload: Workload) -> Self {
        VcpuState { step: 0, workload }
    }

    /// The state as a blob (layout on the type).
    pub fn to_bytes(&self) -> [u8; VCPU_STATE_LEN] {
        let mut out = [0; VCPU_STATE_LEN];
        out[0..8].copy_from_slice(&VCPU_STATE_MAGIC);
        out[8..12].copy_from_slice(&VCPU_STATE_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.workload.pattern.code().to_le_bytes());
        out[16..24].copy_from_slice(&self.step.to_le_bytes());
        out[24..32].copy_from_slice(&self.workload.seed.to_le_bytes());
        out[32..40].copy_from_slice(&self.workload.dirty_rate.to_le_bytes());
        out[40..48].copy_from_slice(&self.workload.step_period_ns.to_le_bytes());
        out[48] = self.workload.fill_percent;
        out
    }

    /// Reads a blob, checking every field; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VcpuStateError> {
        if bytes.len() != VCPU_STATE_LEN {
            return Err(VcpuStateError::Length(bytes.len()));
        }
        if bytes[0..8] != VCPU_STATE_MAGIC {
            return Err(VcpuStateError::Magic);
        }
        let version = le_u32(bytes, 8);
        if version != VCPU_STATE_VERSION {
            return Err(VcpuStateError::Version(version));
        }
        let code = le_u32(bytes, 12);
        let pattern = Pattern::from_code(code).ok_or(VcpuStateError::Pattern(code))?;
        if bytes[49..].iter().any(|&b| b != 0) {
            return Err(VcpuStateError::Reserved);
        }
        let state = VcpuState {
            step: le_u64(bytes, 16),
            workload: Workload {
                seed: le_u64(bytes, 24),
                dirty_rate: le_u64(bytes, 32),
                pattern,
                step_period_ns: le_u64(bytes, 40),
                fill_percent: bytes[48],
            },
        };
        state.check()?;
        Ok(state)
    }

    /// Checks the workload's ranges (what [`from_bytes`](Self::from_bytes)
    /// checks beyond the layout).
    pub fn check(&self) -> Result<(), VcpuStateError> {
        let w = &self.workload;
        if w.step_period_ns == 0
            || w.step_period_ns > MAX_STEP_PERIOD_NS
            || w.dirty_rate > MAX_DIRTY_RATE
            || w.fill_percent > 100
        {
            return Err(VcpuStateError::Range {
                period_ns: w.step_period_ns,
                dirty_rate: w.dirty_rate,
            });
        }
        Ok(())
    }
}

/// The memory a guest must hold after a number of steps, recomputed from
/// the workload alone: for each pfn, the last step that wrote it.
///
/// Building it replays the page choices of every step (no page contents),
/// so it costs about what running the workload costs, in a map the size of
/// the set of pages written.
#[derive(Clone, Debug)]
pub struct ExpectedMemory {
    workload: Workload,
    nr_pages: u64,
    steps: u64,
    last_write: HashMap<u64, u64>,
}

impl ExpectedMemory {
    /// What a guest of `nr_pages` pages running `workload` from its
    /// initial memory (zeros, and the fill's pages) holds after `steps`
    /// steps.
    pub fn after(workload: Workload, nr_pages: u64, steps: u64) -> Self {
        let mut last_write = HashMap::new();
        for k in 1..=steps {
            workload.for_each_target(nr_pages, k, |pfn| {
                last_write.insert(pfn, k);
            });
        }
        ExpectedMemory {
            workload,
            nr_pages,
            steps,
            last_write,
        }
    }

    /// The number of steps this memory is after.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The number of pages of the guest.
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// The step that last wrote `pfn` (0: the fill), or `None` if nothing
    /// wrote it (it reads as zeros).
    pub fn last_write(&self, pfn: u64) -> Option<u64> {
        if pfn == 0 {
            return (self.steps > 0).then_some(self.steps);
        }
        match self.last_write.get(&pfn) {
            Some(&k) => Some(k),
            None => self.workload.filled(self.nr_pages, pfn).then_some(0),
        }
    }

    /// Fills `out` with the expected contents of `pfn`.
    pub fn page(&self, pfn: u64, out: &mut [u8; PAGE_SIZE]) {
        match self.last_write(pfn) {
            None => out.fill(0),
            Some(k) if pfn == 0 => counter_page(&self.workload, k, out),
            Some(k) => page_contents(self.workload.seed, k, pfn, out),
        }
    }

    /// Calls `f` with every pfn that holds something other than zeros, in
    /// no particular order.
    pub fn for_each_written(&self, mut f: impl FnMut(u64)) {
        if self.steps > 0 {
            f(0);
        }
        self.last_write.keys().copied().for_each(&mut f);
        if self.workload.fill_percent > 0 {
            for pfn in 1..self.nr_pages {
                if self.workload.filled(self.nr_pages, pfn) && !self.last_write.contains_key(&pfn) {
                    f(pfn);
                }
            }
        }
    }

    /// The number of pages that hold something other than zeros.
    pub fn written_pages(&self) -> u64 {
        let mut n = 0;
        self.for_each_written(|_| n += 1);
        n
    }
}

/// The expected contents of one page of a guest of `nr_pages` pages running
/// `workload`, after `steps` steps. Replays every step: build one
/// [`ExpectedMemory`] to check many pages.
pub fn expected_page(
    workload: Workload,
    nr_pages: u64,
    steps: u64,
    pfn: u64,
) -> Box<[u8; PAGE_SIZE]> {
    let mut out = Box::new([0; PAGE_SIZE]);
    ExpectedMemory::after(workload, nr_pages, steps).page(pfn, &mut out);
    out
}
