//! `xen/sysctl.h` (interface version 0x15): the `xen_sysctl` envelope,
//! `getdomaininfolist` and `physinfo`.

use super::domctl::UNION_LEN;
use super::xen::{DomId, GuestHandle};
use crate::plain::{plain_data, PlainData};
use core::mem::size_of;

/// `XEN_SYSCTL_INTERFACE_VERSION`
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x15;

/// Sysctl command numbers (`XEN_SYSCTL_*`, [`Sysctl::cmd`]).
pub mod cmd {
    /// `XEN_SYSCTL_readconsole`
    pub const READCONSOLE: u32 = 1;
    /// `XEN_SYSCTL_tbuf_op`
    pub const TBUF_OP: u32 = 2;
    /// `XEN_SYSCTL_physinfo`
    pub const PHYSINFO: u32 = 3;
    /// `XEN_SYSCTL_sched_id`
    pub const SCHED_ID: u32 = 4;
    /// `XEN_SYSCTL_perfc_op`
    pub const PERFC_OP: u32 = 5;
    /// `XEN_SYSCTL_getdomaininfolist`
    pub const GETDOMAININFOLIST: u32 = 6;
    /// `XEN_SYSCTL_debug_keys`
    pub const DEBUG_KEYS: u32 = 7;
    /// `XEN_SYSCTL_getcpuinfo`
    pub const GETCPUINFO: u32 = 8;
    /// `XEN_SYSCTL_availheap`
    pub const AVAILHEAP: u32 = 9;
    /// `XEN_SYSCTL_get_pmstat`
    pub const GET_PMSTAT: u32 = 10;
    /// `XEN_SYSCTL_cpu_hotplug`
    pub const CPU_HOTPLUG: u32 = 11;
    /// `XEN_SYSCTL_pm_op`
    pub const PM_OP: u32 = 12;
    /// `XEN_SYSCTL_page_offline_op`
    pub const PAGE_OFFLINE_OP: u32 = 14;
    /// `XEN_SYSCTL_lockprof_op`
    pub const LOCKPROF_OP: u32 = 15;
    /// `XEN_SYSCTL_cputopoinfo`
    pub const CPUTOPOINFO: u32 = 16;
    /// `XEN_SYSCTL_numainfo`
    pub const NUMAINFO: u32 = 17;
    /// `XEN_SYSCTL_cpupool_op`
    pub const CPUPOOL_OP: u32 = 18;
    /// `XEN_SYSCTL_scheduler_op`
    pub const SCHEDULER_OP: u32 = 19;
    /// `XEN_SYSCTL_coverage_op`
    pub const COVERAGE_OP: u32 = 20;
    /// `XEN_SYSCTL_psr_cmt_op`
    pub const PSR_CMT_OP: u32 = 21;
    /// `XEN_SYSCTL_pcitopoinfo`
    pub const PCITOPOINFO: u32 = 22;
    /// `XEN_SYSCTL_psr_alloc`
    pub const PSR_ALLOC: u32 = 23;
    /// `XEN_SYSCTL_get_cpu_levelling_caps`
    pub const GET_CPU_LEVELLING_CAPS: u32 = 25;
    /// `XEN_SYSCTL_get_cpu_featureset`
    pub const GET_CPU_FEATURESET: u32 = 26;
    /// `XEN_SYSCTL_livepatch_op`
    pub const LIVEPATCH_OP: u32 = 27;
    /// `XEN_SYSCTL_get_cpu_policy`
    pub const GET_CPU_POLICY: u32 = 29;

    /// The C name of a command without its `XEN_SYSCTL_` prefix, for
    /// messages.
    pub const fn name(cmd: u32) -> Option<&'static str> {
        Some(match cmd {
            READCONSOLE => "readconsole",
            TBUF_OP => "tbuf_op",
            PHYSINFO => "physinfo",
            SCHED_ID => "sched_id",
            PERFC_OP => "perfc_op",
            GETDOMAININFOLIST => "getdomaininfolist",
            DEBUG_KEYS => "debug_keys",
            GETCPUINFO => "getcpuinfo",
            AVAILHEAP => "availheap",
            GET_PMSTAT => "get_pmstat",
            CPU_HOTPLUG => "cpu_hotplug",
            PM_OP => "pm_op",
            PAGE_OFFLINE_OP => "page_offline_op",
            LOCKPROF_OP => "lockprof_op",
            CPUTOPOINFO => "cputopoinfo",
            NUMAINFO => "numainfo",
            CPUPOOL_OP => "cpupool_op",
            SCHEDULER_OP => "scheduler_op",
            COVERAGE_OP => "coverage_op",
            PSR_CMT_OP => "psr_cmt_op",
            PCITOPOINFO => "pcitopoinfo",
            PSR_ALLOC => "psr_alloc",
            GET_CPU_LEVELLING_CAPS => "get_cpu_levelling_caps",
            GET_CPU_FEATURESET => "get_cpu_featureset",
            LIVEPATCH_OP => "livepatch_op",
            GET_CPU_POLICY => "get_cpu_policy",
            _ => return None,
        })
    }
}

/// `struct xen_sysctl`: the envelope of every sysctl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// `XEN_SYSCTL_*` ([`cmd`]).
    pub cmd: u32,
    /// [`XEN_SYSCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The union `u`, as raw bytes (8-byte aligned like the C union).
    pub u: [u64; 16],
}

/// A structure that can sit in the union of a sysctl envelope.
pub trait SysctlPayload: PlainData {
    /// Evaluated where a payload is used: it fits the 128-byte union.
    const FITS: () = assert!(
        size_of::<Self>() <= UNION_LEN,
        "payload larger than the union"
    );
}

impl Sysctl {
    /// An envelope for `cmd`, with the interface version set and the union
    /// zeroed.
    pub fn new(cmd: u32) -> Self {
        Sysctl {
            cmd,
            interface_version: XEN_SYSCTL_INTERFACE_VERSION,
            u: [0; 16],
        }
    }

    /// An envelope carrying `payload` in its union.
    pub fn with_payload<P: SysctlPayload>(cmd: u32, payload: &P) -> Self {
        let mut s = Self::new(cmd);
        s.set_payload(payload);
        s
    }

    /// Replaces the union's first bytes with `payload` (the rest is zeroed).
    pub fn set_payload<P: SysctlPayload>(&mut self, payload: &P) {
        let () = P::FITS;
        self.u = [0; 16];
        // Cannot fail: FITS proves the payload is no larger than the union.
        let _ = payload.write_to(self.u.as_bytes_mut());
    }

    /// The union read as a `P`.
    pub fn payload<P: SysctlPayload>(&self) -> P {
        let () = P::FITS;
        P::read_from(self.u.as_bytes()).unwrap_or_else(P::zeroed)
    }

    /// The byte offset in the envelope of a field at `offset_in_payload` in
    /// the union: where a guest handle lives, for [`crate::GuestBuf`].
    pub const fn union_offset(offset_in_payload: usize) -> usize {
        core::mem::offset_of!(Sysctl, u) + offset_in_payload
    }
}

impl Default for Sysctl {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// `struct xen_sysctl_getdomaininfolist` (`XEN_SYSCTL_getdomaininfolist`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetDomainInfoList {
    /// IN: the first domain id to report.
    pub first_domain: DomId,
    /// Implicit C padding.
    pub _pad0: u16,
    /// IN: entries in `buffer`.
    pub max_domains: u32,
    /// `xen_domctl_getdomaininfo_t[]` ([`super::domctl::GetDomainInfo`]).
    pub buffer: GuestHandle,
    /// OUT: entries written.
    pub num_domains: u32,
    /// Implicit C tail padding.
    pub _pad1: u32,
}

/// `XEN_SYSCTL_PHYSCAP_*` bits of [`PhysInfo::capabilities`].
pub mod physcap {
    /// `XEN_SYSCTL_PHYSCAP_hvm`
    pub const HVM: u32 = 1 << 0;
    /// `XEN_SYSCTL_PHYSCAP_pv`
    pub const PV: u32 = 1 << 1;
    /// `XEN_SYSCTL_PHYSCAP_directio`
    pub const DIRECTIO: u32 = 1 << 2;
    /// `XEN_SYSCTL_PHYSCAP_hap`
    pub const HAP: u32 = 1 << 3;
    /// `XEN_SYSCTL_PHYSCAP_shadow`: shadow paging is built in, which PV
    /// log-dirty (live migration) needs.
    pub const SHADOW: u32 = 1 << 4;
    /// `XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share`
    pub const IOMMU_HAP_PT_SHARE: u32 = 1 << 5;
    /// `XEN_SYSCTL_PHYSCAP_vmtrace`
    pub const VMTRACE: u32 = 1 << 6;
    /// `XEN_SYSCTL_PHYSCAP_vpmu`
    pub const VPMU: u32 = 1 << 7;
    /// `XEN_SYSCTL_PHYSCAP_gnttab_v1`
    pub const GNTTAB_V1: u32 = 1 << 8;
    /// `XEN_SYSCTL_PHYSCAP_gnttab_v2`
    pub const GNTTAB_V2: u32 = 1 << 9;
}

/// `struct xen_sysctl_physinfo` (`XEN_SYSCTL_physinfo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysInfo {
    /// Threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// CPUs online.
    pub nr_cpus: u32,
    /// Largest possible CPU id.
    pub max_cpu_id: u32,
    /// NUMA nodes online.
    pub nr_nodes: u32,
    /// Largest possible node id.
    pub max_node_id: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// `XEN_SYSCTL_PHYSCAP_*` ([`physcap`]).
    pub capabilities: u32,
    /// Architecture-specific capabilities.
    pub arch_capabilities: u32,
    /// Padding named in C.
    pub pad: u32,
    /// Host pages.
    pub total_pages: u64,
    /// Free pages.
    pub free_pages: u64,
    /// Pages awaiting scrubbing.
    pub scrub_pages: u64,
    /// Claimed, not yet allocated pages.
    pub outstanding_pages: u64,
    /// Largest possible MFN.
    pub max_mfn: u64,
    /// Hardware capability words.
    pub hw_cap: [u32; 8],
}

plain_data! {
    Sysctl { cmd, interface_version, u }
    GetDomainInfoList { first_domain, _pad0, max_domains, buffer, num_domains, _pad1 }
    PhysInfo {
        threads_per_core, cores_per_socket, nr_cpus, max_cpu_id, nr_nodes,
        max_node_id, cpu_khz, capabilities, arch_capabilities, pad, total_pages,
        free_pages, scrub_pages, outstanding_pages, max_mfn, hw_cap
    }
}

impl SysctlPayload for GetDomainInfoList {}
impl SysctlPayload for PhysInfo {}

const _: () = assert!(size_of::<Sysctl>() == 136);
const _: () = assert!(size_of::<GetDomainInfoList>() == 24);
const _: () = assert!(size_of::<PhysInfo>() == 112);
