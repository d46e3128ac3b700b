//! The simulated hypervisor: relocd's embedded backend when there is no Xen
//! (`--backend sim`, `relocd demo`).
//!
//! - [`SimHypervisor`]: a thread-safe table of domains with domid
//!   allocation, names, a memory capacity that admission checks, create and
//!   destroy.
//! - [`SimGuest`]: one domain. Its memory is sparse (a page never written
//!   reads as zeros and costs nothing, so a 1 GiB guest is cheap); its one
//!   vCPU runs a deterministic [`Workload`] that dirties pages at a set
//!   rate and pattern, only while the domain is running; it has Xen's
//!   log-dirty operations (enable, peek, clean into a caller's bitmap),
//!   pause and unpause, and a vCPU state blob that travels with the guest.
//! - [`ExpectedMemory`]: recomputes, from the workload alone, what every
//!   page must hold after `n` steps, so a test can check a migrated copy
//!   byte for byte.
//! - [`GuestSpec`], [`parse_size`], [`parse_rate`], [`parse_guests_file`]:
//!   `--memory 1G --dirty-rate 64M/s --pattern hot` and the guests file
//!   for `relocd serve`.
//!
//! # Driving the workload
//!
//! [`Drive::Manual`]: steps run only when [`SimGuest::advance`] is called;
//! tests use it for determinism. [`Drive::RealTime`]: each running guest
//! also has a background thread that runs one step per step period (10 ms
//! by default) of wall time; the daemon and the demo use it. Either way the
//! memory after `n` steps is the same.
//!
//! # Migration with the simulator
//!
//! Source: [`SimGuest::enable_log_dirty`], [`SimGuest::read_pages`] in
//! batches, [`SimGuest::clean_dirty`] each round, [`SimGuest::pause`],
//! [`SimGuest::vcpu_context`]. Destination:
//! [`SimHypervisor::create_empty`] (paused, no vCPU state),
//! [`SimGuest::write_pages`], [`SimGuest::set_vcpu_context`],
//! [`SimGuest::unpause`]; the workload goes on at the step after the one
//! the source last ran.
//!
//! ```
//! use relocd::backend::sim::*;
//!
//! let (here, there) = (
//!     SimHypervisor::new(4 << 30, Drive::Manual),
//!     SimHypervisor::new(4 << 30, Drive::Manual),
//! );
//! let spec = GuestSpec::new("web1", parse_memory("1G")?)?
//!     .with_dirty_rate(parse_rate("64M/s")?)?
//!     .with_pattern("hot".parse()?);
//! let src = here.create(&spec, false)?;
//! src.advance(100); // one simulated second
//!
//! // Offline move: pause, copy every page and the vCPU, start there.
//! src.pause()?;
//! let dst = there.create_empty("web1", spec.memory)?;
//! let mut buf = vec![0; 1024 * PAGE_SIZE];
//! for first in (0..src.nr_pages()).step_by(1024) {
//!     let pfns: Vec<u64> = (first..first + 1024).collect();
//!     src.read_pages(&pfns, &mut buf)?;
//!     dst.write_pages(&pfns, &buf)?;
//! }
//! dst.set_vcpu_context(&src.vcpu_context()?)?;
//! src.destroy()?;
//! dst.unpause()?;
//! dst.advance(1);
//!
//! assert_eq!(dst.memory_counter(), Some(101));
//! let expected = ExpectedMemory::after(spec.workload(), spec.nr_pages(), 101);
//! dst.verify(&expected)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod adapter;
mod guest;
mod hooks;
mod memory;
mod spec;
mod workload;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use adapter::{SimFault, SimSink, SimSource};
pub use guest::{bitmap_words, SimGuest};
pub use hooks::{default_sim_capacity, spec_from_request, SimBackend, FALLBACK_SIM_CAPACITY};
pub use memory::{Page, CHUNK_PAGES};
pub use spec::{
    check_memory, check_name, parse_fill, parse_guests_file, parse_memory, parse_rate, parse_size,
    seed_from_name, GuestSpec, SpecError, MAX_MEMORY, MAX_NAME_LEN,
};
pub use workload::{
    counter_page, expected_page, page_contents, read_counter, ExpectedMemory, Pattern, VcpuState,
    VcpuStateError, Workload, COUNTER_MAGIC, DEFAULT_STEP_PERIOD_NS, MAX_DIRTY_RATE,
    MAX_STEP_PERIOD_NS, VCPU_STATE_LEN, VCPU_STATE_MAGIC, VCPU_STATE_VERSION,
};

/// Bytes per guest page.
pub const PAGE_SIZE: usize = 4096;

/// A domain id, as Xen's `domid_t`.
pub type Domid = u16;

/// The first domid Xen reserves (`DOMID_FIRST_RESERVED`); guests get ids
/// from 1 up to this, exclusive (0 is the control domain).
pub const DOMID_FIRST_RESERVED: Domid = 0x7ff0;

/// A page's type as Xen's `XEN_DOMCTL_PFINFO_*` codes (bits 28..32 of a
/// getpageframeinfo3 entry). Open: any code can be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PageType(pub u32);

impl PageType {
    /// An ordinary page (`XEN_DOMCTL_PFINFO_NOTAB`).
    pub const NOTAB: PageType = PageType(0);
    /// A level-1 page table.
    pub const L1TAB: PageType = PageType(0x1 << 28);
    /// A level-2 page table.
    pub const L2TAB: PageType = PageType(0x2 << 28);
    /// A level-3 page table.
    pub const L3TAB: PageType = PageType(0x3 << 28);
    /// A level-4 page table.
    pub const L4TAB: PageType = PageType(0x4 << 28);
    /// A broken page (machine check).
    pub const BROKEN: PageType = PageType(0xd << 28);
    /// Allocated but not to be sent.
    pub const XALLOC: PageType = PageType(0xe << 28);
    /// No page here (invalid pfn).
    pub const XTAB: PageType = PageType(0xf << 28);
}

/// Whether a domain's vCPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DomainState {
    /// The workload runs.
    Running,
    /// Stopped; memory and vCPU state stay as they are.
    Paused,
    /// Gone (seen only through a handle kept after destroy).
    Destroyed,
}

impl DomainState {
    /// `running`, `paused` or `destroyed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a guest's workload is driven (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Drive {
    /// Only [`SimGuest::advance`] runs steps.
    Manual,
    /// A thread per running guest runs one step per step period of wall
    /// time (and [`SimGuest::advance`] still works).
    RealTime,
}

/// What [`SimHypervisor::list`] says about a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: Domid,
    /// Name.
    pub name: String,
    /// Memory in bytes.
    pub memory: u64,
    /// Running or paused.
    pub state: DomainState,
    /// The vCPU's step counter, `None` for an empty domain.
    pub steps: Option<u64>,
    /// Pages that hold storage.
    pub allocated_pages: u64,
}

/// Why a simulator operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Not enough free capacity for the guest's memory.
    #[error("no capacity: {needed} bytes needed, {free} bytes free")]
    NoCapacity {
        /// Bytes asked for.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A domain of that name exists.
    #[error("a domain named `{0}` already exists")]
    NameTaken(String),
    /// No domain of that name or id.
    #[error("no domain `{0}`")]
    NoSuchDomain(String),
    /// A bad name or memory size.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Every domid below [`DOMID_FIRST_RESERVED`] is in use.
    #[error("no free domain id")]
    NoDomid,
    /// A pfn at or beyond the guest's page count.
    #[error("pfn {pfn:#x} out of range (guest has {nr_pages} pages)")]
    PfnOutOfRange {
        /// The pfn asked for.
        pfn: u64,
        /// The guest's page count.
        nr_pages: u64,
    },
    /// A caller buffer of the wrong size (bytes for page batches, entries
    /// for page types, words for bitmaps).
    #[error("buffer of {got}, expected {expected}")]
    BufferSize {
        /// What was needed.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The domain was destroyed.
    #[error("domain `{0}` was destroyed")]
    Destroyed(String),
    /// The operation needs a paused domain.
    #[error("domain `{0}` is not paused")]
    NotPaused(String),
    /// An empty domain has no vCPU state yet (set it before unpausing).
    #[error("domain has no vCPU state")]
    NoVcpuState,
    /// A bad vCPU state blob or workload.
    #[error(transparent)]
    VcpuState(#[from] VcpuStateError),
    /// Peek or clean without log-dirty mode on.
    #[error("log-dirty mode is off")]
    LogDirtyOff,
    /// Comparing guests of different sizes.
    #[error("guest sizes differ: {ours} pages and {theirs} pages")]
    SizeMismatch {
        /// This guest's pages.
        ours: u64,
        /// The other's pages.
        theirs: u64,
    },
    /// A page differs from what was expected.
    #[error("memory differs at pfn {pfn:#x}")]
    MemoryDiffers {
        /// The first differing pfn.
        pfn: u64,
    },
    /// The real-time workload thread could not be started.
    #[error("cannot start the workload thread: {0}")]
    Thread(String),
}

#[derive(Debug)]
struct Table {
    capacity: u64,
    used: u64,
    next_domid: Domid,
    domains: BTreeMap<Domid, SimGuest>,
    names: HashMap<String, Domid>,
}

impl Table {
    fn admit(&self, name: &str, memory: u64) -> Result<(), SimError> {
        check_name(name)?;
        check_memory(memory)?;
        if self.names.contains_key(name) {
            return Err(SimError::NameTaken(name.to_owned()));
        }
        let free = self.capacity.saturating_sub(self.used);
        if memory > free {
            return Err(SimError::NoCapacity {
                needed: memory,
                free,
            });
        }
        Ok(())
    }

    fn alloc_domid(&mut self) -> Result<Domid, SimError> {
        let span = DOMID_FIRST_RESERVED - 1;
        for offset in 0..span {
            let candidate = 1 + (self.next_domid - 1 + offset) % span;
            if !self.domains.contains_key(&candidate) {
                self.next_domid = 1 + candidate % span;
                return Ok(candidate);
            }
        }
        Err(SimError::NoDomid)
    }
}

#[derive(Debug)]
pub(crate) struct HvShared {
    drive: Drive,
    table: Mutex<Table>,
    /// Memory of destroyed domains, for the next ones.
    pub(crate) pool: Arc<memory::ChunkPool>,
}

impl HvShared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn destroy(&self, domid: Domid) -> Result<(), SimError> {
        let guest = {
            let mut table = self.lock();
            let guest = table
                .domains
                .remove(&domid)
                .ok_or_else(|| SimError::NoSuchDomain(domid.to_string()))?;
            table.names.retain(|_, d| *d != domid);
            table.used = table.used.saturating_sub(guest.memory_bytes());
            guest
        };
        guest.kill();
        Ok(())
    }
}

/// A simulated hypervisor: a thread-safe table of domains sharing a memory
/// capacity. Clones share the table.
///
/// Capacity counts each domain's full memory size from its creation (as
/// Xen reserves a guest's memory up front), not the pages it has written.
#[derive(Clone, Debug)]
pub struct SimHypervisor {
    shared: Arc<HvShared>,
}

impl SimHypervisor {
    /// An empty hypervisor with `capacity` bytes of guest memory.
    pub fn new(capacity: u64, drive: Drive) -> Self {
        SimHypervisor {
            shared: Arc::new(HvShared {
                drive,
                pool: Arc::default(),
                table: Mutex::new(Table {
                    capacity,
                    used: 0,
                    next_domid: 1,
                    domains: BTreeMap::new(),
                    names: HashMap::new(),
                }),
            }),
        }
    }

    /// How workloads are driven.
    pub fn drive(&self) -> Drive {
        self.shared.drive
    }

    /// Total guest memory, bytes.
    pub fn capacity(&self) -> u64 {
        self.shared.lock().capacity
    }

    /// Memory of all domains, bytes.
    pub fn used(&self) -> u64 {
        self.shared.lock().used
    }

    /// Capacity not yet used, bytes.
    pub fn free(&self) -> u64 {
        let table = self.shared.lock();
        table.capacity.saturating_sub(table.used)
    }

    /// Whether a domain `name` of `memory` bytes could be created now: a
    /// valid name not in use, a valid size, and enough free capacity.
    pub fn check_admission(&self, name: &str, memory: u64) -> Result<(), SimError> {
        self.shared.lock().admit(name, memory)
    }

    fn insert(
        &self,
        name: &str,
        memory: u64,
        vcpu: Option<VcpuState>,
        run: DomainState,
    ) -> Result<SimGuest, SimError> {
        let mut table = self.shared.lock();
        table.admit(name, memory)?;
        let domid = table.alloc_domid()?;
        let guest = SimGuest::new(
            domid,
            name.to_owned(),
            memory / PAGE_SIZE as u64,
            vcpu,
            DomainState::Paused,
            self.shared.drive,
            Arc::downgrade(&self.shared),
        );
        table.used += memory;
        table.names.insert(name.to_owned(), domid);
        table.domains.insert(domid, guest.clone());
        drop(table);
        if run == DomainState::Running {
            // Started the ordinary way (a thread with Drive::RealTime), with
            // the table lock released.
            guest.unpause()?;
        }
        Ok(guest)
    }

    /// Creates a guest from `spec` with its initial memory (zeros, and
    /// the pages of its fill) and its vCPU at step 0, running (or paused
    /// with `start_paused`).
    pub fn create(&self, spec: &GuestSpec, start_paused: bool) -> Result<SimGuest, SimError> {
        let vcpu = VcpuState::boot(spec.workload());
        vcpu.check()?;
        let guest = self.insert(&spec.name, spec.memory, Some(vcpu), DomainState::Paused)?;
        guest.fill(&spec.workload());
        if !start_paused {
            guest.unpause()?;
        }
        Ok(guest)
    }

    /// Creates an empty, paused domain of `memory` bytes with no vCPU
    /// state: the destination of a migration or restore, to be filled with
    /// [`SimGuest::write_pages`] and [`SimGuest::set_vcpu_state`] before
    /// [`SimGuest::unpause`].
    pub fn create_empty(&self, name: &str, memory: u64) -> Result<SimGuest, SimError> {
        self.insert(name, memory, None, DomainState::Paused)
    }

    /// The domain with this id.
    pub fn get(&self, domid: Domid) -> Option<SimGuest> {
        self.shared.lock().domains.get(&domid).cloned()
    }

    /// The id of the domain with this name.
    pub fn lookup(&self, name: &str) -> Option<Domid> {
        self.shared.lock().names.get(name).copied()
    }

    /// The domain with this name.
    pub fn by_name(&self, name: &str) -> Option<SimGuest> {
        let table = self.shared.lock();
        let domid = table.names.get(name)?;
        table.domains.get(domid).cloned()
    }

    /// Renames a domain (as a migration's destination does when it takes
    /// the guest's real name at commit).
    pub fn rename(&self, domid: Domid, new_name: &str) -> Result<(), SimError> {
        check_name(new_name)?;
        let mut table = self.shared.lock();
        let guest = table
            .domains
            .get(&domid)
            .cloned()
            .ok_or_else(|| SimError::NoSuchDomain(domid.to_string()))?;
        let mut st = guest.lock();
        if st.name == new_name {
            return Ok(());
        }
        if table.names.contains_key(new_name) {
            return Err(SimError::NameTaken(new_name.to_owned()));
        }
        table.names.remove(&st.name);
        table.names.insert(new_name.to_owned(), domid);
        st.name = new_name.to_owned();
        Ok(())
    }

    /// Destroys a domain: removed from the table, its capacity freed, its
    /// memory released.
    pub fn destroy(&self, domid: Domid) -> Result<(), SimError> {
        self.shared.destroy(domid)
    }

    /// Every domain, by domid.
    pub fn list(&self) -> Vec<DomainInfo> {
        let table = self.shared.lock();
        table
            .domains
            .values()
            .map(|guest| {
                let st = guest.lock();
                let name = st.name.clone();
                let state = st.run;
                drop(st);
                DomainInfo {
                    domid: guest.domid(),
                    name,
                    memory: guest.memory_bytes(),
                    state,
                    steps: guest.steps(),
                    allocated_pages: guest.allocated_pages(),
                }
            })
            .collect()
    }

    /// Pages holding storage across all domains.
    pub fn allocated_pages(&self) -> u64 {
        let table = self.shared.lock();
        table.domains.values().map(SimGuest::allocated_pages).sum()
    }
}
