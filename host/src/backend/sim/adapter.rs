//! The simulated hypervisor behind the core's guest traits:
//! [`SimSource`] implements [`SourceGuest`] and [`SimSink`] implements
//! [`SinkGuest`], so the session drivers (`crate::session`) move a
//! [`SimGuest`] exactly as they will move a Xen domain.
//!
//! A simulated guest looks like an HVM guest with one vCPU on the wire:
//! every page is `NOTAB`, `p2m_size` is its page count, and its vCPU state
//! is the [`VcpuState`](super::VcpuState) blob.
//!
//! The traits want a `Copy` error; [`SimFault`] is the kind of a
//! [`SimError`] with its small fields kept (the names are dropped, the
//! caller knows the domain).

use std::fmt;

use relocd_core::guest::{
    FillFn, GuestInfo, GuestType, PageType, Pfn, SchedParams, SinkGuest, SourceGuest,
    PAGE_SIZE as CORE_PAGE_SIZE,
};

use super::{DomainState, SimError, SimGuest, VCPU_STATE_LEN};

const _: () = assert!(CORE_PAGE_SIZE == super::PAGE_SIZE);

/// A [`SimError`] reduced to a `Copy` value, as the guest traits require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimFault {
    /// Not enough capacity.
    NoCapacity,
    /// The name is in use.
    NameTaken,
    /// No such domain.
    NoSuchDomain,
    /// A bad name or size.
    Spec,
    /// No free domid.
    NoDomid,
    /// A pfn beyond the guest.
    PfnOutOfRange {
        /// The pfn asked for.
        pfn: u64,
    },
    /// A caller buffer of the wrong size.
    BufferSize,
    /// The domain was destroyed.
    Destroyed,
    /// The domain must be paused for this.
    NotPaused,
    /// The domain has no vCPU state.
    NoVcpuState,
    /// A bad vCPU state blob.
    VcpuState,
    /// Log-dirty mode is off.
    LogDirtyOff,
    /// A vCPU number other than 0 (simulated guests have one).
    NoSuchVcpu(u32),
    /// A page type that carries no data where data was expected, or the
    /// reverse.
    PageType,
    /// Anything else the simulator reported.
    Other,
}

impl From<&SimError> for SimFault {
    fn from(e: &SimError) -> Self {
        match e {
            SimError::NoCapacity { .. } => SimFault::NoCapacity,
            SimError::NameTaken(_) => SimFault::NameTaken,
            SimError::NoSuchDomain(_) => SimFault::NoSuchDomain,
            SimError::Spec(_) => SimFault::Spec,
            SimError::NoDomid => SimFault::NoDomid,
            SimError::PfnOutOfRange { pfn, .. } => SimFault::PfnOutOfRange { pfn: *pfn },
            SimError::BufferSize { .. } => SimFault::BufferSize,
            SimError::Destroyed(_) => SimFault::Destroyed,
            SimError::NotPaused(_) => SimFault::NotPaused,
            SimError::NoVcpuState => SimFault::NoVcpuState,
            SimError::VcpuState(_) => SimFault::VcpuState,
            SimError::LogDirtyOff => SimFault::LogDirtyOff,
            _ => SimFault::Other,
        }
    }
}

impl From<SimError> for SimFault {
    fn from(e: SimError) -> Self {
        SimFault::from(&e)
    }
}

impl fmt::Display for SimFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimFault::PfnOutOfRange { pfn } => write!(f, "pfn {pfn:#x} out of range"),
            SimFault::NoSuchVcpu(v) => write!(f, "no vCPU {v}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for SimFault {}

fn sim<T>(r: Result<T, SimError>) -> Result<T, SimFault> {
    r.map_err(SimFault::from)
}

/// A simulated guest being migrated away.
#[derive(Clone, Debug)]
pub struct SimSource {
    guest: SimGuest,
    /// Its own scheduling parameters while auto-converge throttles it.
    own_sched: Option<SchedParams>,
}

impl SimSource {
    /// Wraps a guest of a [`SimHypervisor`](super::SimHypervisor).
    pub fn new(guest: SimGuest) -> Self {
        SimSource {
            guest,
            own_sched: None,
        }
    }

    /// The guest.
    pub fn guest(&self) -> &SimGuest {
        &self.guest
    }
}

impl SourceGuest for SimSource {
    type Error = SimFault;

    fn info(&self) -> Result<GuestInfo, SimFault> {
        if self.guest.state() == DomainState::Destroyed {
            return Err(SimFault::Destroyed);
        }
        let nr = self.guest.nr_pages();
        Ok(GuestInfo {
            guest_type: GuestType::Hvm,
            p2m_size: nr,
            nr_pages: nr,
            vcpus: 1,
        })
    }

    fn enable_logdirty(&mut self) -> Result<(), SimFault> {
        // Xen's ENABLE_LOGDIRTY starts with a clean log; the simulator
        // keeps an existing one, so empty it.
        sim(self.guest.disable_log_dirty())?;
        sim(self.guest.enable_log_dirty())
    }

    fn disable_logdirty(&mut self) -> Result<(), SimFault> {
        sim(self.guest.disable_log_dirty())
    }

    fn peek_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, SimFault> {
        sim(self.guest.peek_dirty(bitmap))
    }

    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, SimFault> {
        let n = sim(self.guest.clean_dirty(bitmap))?;
        // The trait says every word is overwritten.
        let words = super::bitmap_words(self.guest.nr_pages());
        if let Some(rest) = bitmap.get_mut(words..) {
            rest.fill(0);
        }
        Ok(n)
    }

    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, SimFault> {
        let n = pfns.len();
        let (Some(types), Some(data)) = (
            types.get_mut(..n),
            data.get_mut(..n.saturating_mul(CORE_PAGE_SIZE)),
        ) else {
            return Err(SimFault::BufferSize);
        };
        sim(self.guest.read_pages(pfns, data))?;
        // Every simulated page is an ordinary one.
        types.fill(PageType::NOTAB);
        Ok(n)
    }

    fn lend_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        f: &mut relocd_core::guest::LendFn<'_>,
    ) -> Result<bool, SimFault> {
        let Some(types) = types.get_mut(..pfns.len()) else {
            return Err(SimFault::BufferSize);
        };
        // Every simulated page is an ordinary one.
        types.fill(PageType::NOTAB);
        let types: &[PageType] = types;
        sim(self.guest.lend_pages(pfns, &mut |runs| f(types, runs)))?;
        Ok(true)
    }

    fn pause(&mut self) -> Result<(), SimFault> {
        sim(self.guest.pause())
    }

    fn unpause(&mut self) -> Result<(), SimFault> {
        sim(self.guest.unpause())
    }

    fn suspend(&mut self) -> Result<(), SimFault> {
        sim(self.guest.pause())
    }

    fn resume(&mut self) -> Result<(), SimFault> {
        sim(self.guest.unpause())
    }

    fn vcpu_context(&mut self, vcpu: u32, buf: &mut [u8]) -> Result<usize, SimFault> {
        if vcpu != 0 {
            return Err(SimFault::NoSuchVcpu(vcpu));
        }
        let blob = sim(self.guest.vcpu_context())?;
        let out = buf.get_mut(..VCPU_STATE_LEN).ok_or(SimFault::BufferSize)?;
        out.copy_from_slice(&blob);
        Ok(VCPU_STATE_LEN)
    }

    fn destroy(&mut self) -> Result<(), SimFault> {
        sim(self.guest.destroy())
    }

    fn sched_params(&mut self) -> Result<Option<SchedParams>, SimFault> {
        Ok(Some(self.own_sched.unwrap_or(self.guest.sched())))
    }

    fn throttle(&mut self, percent: u8) -> Result<bool, SimFault> {
        if percent == 0 {
            if let Some(own) = self.own_sched.take() {
                sim(self.guest.set_sched(own))?;
            }
            return Ok(true);
        }
        let own = *self.own_sched.get_or_insert(self.guest.sched());
        sim(self.guest.set_sched(own.throttled(1, percent)))?;
        Ok(true)
    }
}

/// A simulated domain being built from a migration image (created empty
/// and paused with [`SimHypervisor::create_empty`](super::SimHypervisor::create_empty)).
#[derive(Clone, Debug)]
pub struct SimSink {
    guest: SimGuest,
    vcpu_set: bool,
    /// Scratch for batches that mix pages with and without data.
    pfns: Vec<u64>,
}

impl SimSink {
    /// Wraps an empty, paused domain.
    pub fn new(guest: SimGuest) -> Self {
        SimSink {
            guest,
            vcpu_set: false,
            pfns: Vec::new(),
        }
    }

    /// The domain.
    pub fn guest(&self) -> &SimGuest {
        &self.guest
    }

    /// The domain and the pfns of a batch whose `types` have data.
    fn with_data<'s>(
        &'s mut self,
        pfns: &'s [Pfn],
        types: &[PageType],
    ) -> Result<(&'s SimGuest, &'s [Pfn]), SimFault> {
        if types.len() != pfns.len() {
            return Err(SimFault::BufferSize);
        }
        if types.iter().all(|t| t.has_data()) {
            return Ok((&self.guest, pfns));
        }
        self.pfns.clear();
        self.pfns.extend(
            pfns.iter()
                .zip(types)
                .filter(|(_, t)| t.has_data())
                .map(|(p, _)| *p),
        );
        Ok((&self.guest, &self.pfns))
    }
}

impl SinkGuest for SimSink {
    type Error = SimFault;

    fn set_sched_params(&mut self, params: SchedParams) -> Result<(), SimFault> {
        sim(self.guest.set_sched(params))
    }

    fn populate(&mut self, pfns: &[Pfn], _types: &[PageType]) -> Result<(), SimFault> {
        sim(self.guest.populate(pfns))
    }

    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
    ) -> Result<(), SimFault> {
        // Only the pages that carry data are packed in `data`.
        let (guest, pfns) = self.with_data(pfns, types)?;
        sim(guest.write_pages(pfns, data))
    }

    fn lend_pages_mut(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        f: &mut FillFn<'_>,
    ) -> Result<bool, SimFault> {
        let (guest, pfns) = self.with_data(pfns, types)?;
        sim(guest.lend_pages_mut(pfns, f))
    }

    fn zero_pages(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<bool, SimFault> {
        if types.len() != pfns.len() {
            return Err(SimFault::BufferSize);
        }
        // Sparse memory clears a page by forgetting it.
        sim(self.guest.zero_pages(pfns))?;
        Ok(true)
    }

    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<(), SimFault> {
        if vcpu != 0 {
            return Err(SimFault::NoSuchVcpu(vcpu));
        }
        sim(self.guest.set_vcpu_context(blob))?;
        self.vcpu_set = true;
        Ok(())
    }

    fn complete(&mut self) -> Result<(), SimFault> {
        if !self.vcpu_set {
            return Err(SimFault::NoVcpuState);
        }
        Ok(())
    }

    fn unpause(&mut self) -> Result<(), SimFault> {
        sim(self.guest.unpause())
    }

    fn destroy(&mut self) -> Result<(), SimFault> {
        sim(self.guest.destroy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sim::{Drive, GuestSpec, SimHypervisor};

    #[test]
    fn source_and_sink_through_the_traits() {
        let hv = SimHypervisor::new(1 << 30, Drive::Manual);
        let spec = GuestSpec::new("a", 1 << 20)
            .unwrap()
            .with_dirty_rate(1 << 20)
            .unwrap();
        let g = hv.create(&spec, false).unwrap();
        let mut src = SimSource::new(g.clone());
        let info = src.info().unwrap();
        assert_eq!((info.p2m_size, info.vcpus), (256, 1));
        assert_eq!(info.guest_type, GuestType::Hvm);
        // A fresh log is empty even if one was on; words past the guest
        // are cleared.
        src.enable_logdirty().unwrap();
        g.advance(2);
        src.enable_logdirty().unwrap();
        let mut bm = vec![u64::MAX; 8];
        assert_eq!(src.clean_dirty(&mut bm).unwrap(), 0);
        assert_eq!(bm, vec![0; 8]);
        g.advance(1);
        assert!(src.clean_dirty(&mut bm).unwrap() > 0);
        src.suspend().unwrap();
        let mut blob = [0u8; 64];
        assert_eq!(src.vcpu_context(0, &mut blob).unwrap(), 64);
        assert_eq!(src.vcpu_context(1, &mut blob), Err(SimFault::NoSuchVcpu(1)));
        let mut types = [PageType::XTAB; 3];
        let mut data = vec![0u8; 3 * CORE_PAGE_SIZE];
        assert_eq!(
            src.read_pages(&[0, 1, 2], &mut types, &mut data).unwrap(),
            3
        );
        assert_eq!(types, [PageType::NOTAB; 3]);
        assert_eq!(
            src.read_pages(&[256], &mut types, &mut data),
            Err(SimFault::PfnOutOfRange { pfn: 256 })
        );
        // Lent, the same pages read the same, and the types say so.
        let mut lent = Vec::new();
        let mut types = [PageType::XTAB; 3];
        let ok = src.lend_pages(&[0, 1, 2], &mut types, &mut |t, runs| {
            assert_eq!(t, [PageType::NOTAB; 3]);
            lent = runs.concat();
        });
        assert_eq!(ok, Ok(true));
        assert!(lent == data);
        let mut called = false;
        assert_eq!(
            src.lend_pages(&[1, 256], &mut types, &mut |_, _| called = true),
            Err(SimFault::PfnOutOfRange { pfn: 256 })
        );
        assert!(!called);

        // The sink writes only the pages that carry data.
        let there = SimHypervisor::new(1 << 30, Drive::Manual);
        let d = there.create_empty("a", 1 << 20).unwrap();
        let mut sink = SimSink::new(d.clone());
        assert_eq!(sink.complete(), Err(SimFault::NoVcpuState));
        let pfns = [0, 5, 1];
        let types = [PageType::NOTAB, PageType::XTAB, PageType::NOTAB];
        let packed = [
            &data[..CORE_PAGE_SIZE],
            &data[CORE_PAGE_SIZE..2 * CORE_PAGE_SIZE],
        ]
        .concat();
        sink.populate(&pfns, &types).unwrap();
        sink.write_pages(&pfns, &types, &packed).unwrap();
        sink.set_vcpu_context(0, &blob).unwrap();
        sink.complete().unwrap();
        sink.unpause().unwrap();
        assert_eq!(d.steps(), Some(3));
        assert_eq!(d.memory_counter(), Some(3));
        src.destroy().unwrap();
        assert_eq!(src.info(), Err(SimFault::Destroyed));
    }
}
