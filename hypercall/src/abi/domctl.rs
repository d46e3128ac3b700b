//! `xen/domctl.h` (interface version 0x15): the `xen_domctl` envelope and
//! the payloads migration needs.
//!
//! The C union `u` is a 128-byte array here ([`Domctl::u`]): payloads are
//! copied in and out with [`Domctl::with_payload`] and [`Domctl::payload`],
//! so the envelope stays plain data whichever member is in use.
//!
//! `XEN_DOMCTL_set_max_evtchn` no longer exists in Xen 4.17: the limit is
//! [`CreateDomain::max_evtchn_port`], fixed when the domain is created
//! ([`cmd::SET_MAX_EVTCHN`] only names the retired number in messages).

use super::xen::{ArchDomainConfig, DomId, DomainHandle, GuestHandle};
use crate::plain::{plain_data, PlainData};
use core::mem::size_of;

/// `XEN_DOMCTL_INTERFACE_VERSION`
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;

/// Domctl command numbers (`XEN_DOMCTL_*`, [`Domctl::cmd`]).
pub mod cmd {
    /// `XEN_DOMCTL_createdomain`
    pub const CREATEDOMAIN: u32 = 1;
    /// `XEN_DOMCTL_destroydomain`
    pub const DESTROYDOMAIN: u32 = 2;
    /// `XEN_DOMCTL_pausedomain`
    pub const PAUSEDOMAIN: u32 = 3;
    /// `XEN_DOMCTL_unpausedomain`
    pub const UNPAUSEDOMAIN: u32 = 4;
    /// `XEN_DOMCTL_getdomaininfo`
    pub const GETDOMAININFO: u32 = 5;
    /// `XEN_DOMCTL_setvcpuaffinity`
    pub const SETVCPUAFFINITY: u32 = 9;
    /// `XEN_DOMCTL_shadow_op`
    pub const SHADOW_OP: u32 = 10;
    /// `XEN_DOMCTL_max_mem`
    pub const MAX_MEM: u32 = 11;
    /// `XEN_DOMCTL_setvcpucontext`
    pub const SETVCPUCONTEXT: u32 = 12;
    /// `XEN_DOMCTL_getvcpucontext`
    pub const GETVCPUCONTEXT: u32 = 13;
    /// `XEN_DOMCTL_getvcpuinfo`
    pub const GETVCPUINFO: u32 = 14;
    /// `XEN_DOMCTL_max_vcpus`
    pub const MAX_VCPUS: u32 = 15;
    /// `XEN_DOMCTL_scheduler_op`
    pub const SCHEDULER_OP: u32 = 16;
    /// `XEN_DOMCTL_setdomainhandle`
    pub const SETDOMAINHANDLE: u32 = 17;
    /// `XEN_DOMCTL_setdebugging`
    pub const SETDEBUGGING: u32 = 18;
    /// `XEN_DOMCTL_irq_permission`
    pub const IRQ_PERMISSION: u32 = 19;
    /// `XEN_DOMCTL_iomem_permission`
    pub const IOMEM_PERMISSION: u32 = 20;
    /// `XEN_DOMCTL_ioport_permission`
    pub const IOPORT_PERMISSION: u32 = 21;
    /// `XEN_DOMCTL_hypercall_init`
    pub const HYPERCALL_INIT: u32 = 22;
    /// `XEN_DOMCTL_settimeoffset`
    pub const SETTIMEOFFSET: u32 = 24;
    /// `XEN_DOMCTL_getvcpuaffinity`
    pub const GETVCPUAFFINITY: u32 = 25;
    /// `XEN_DOMCTL_real_mode_area`
    pub const REAL_MODE_AREA: u32 = 26;
    /// `XEN_DOMCTL_resumedomain`
    pub const RESUMEDOMAIN: u32 = 27;
    /// `XEN_DOMCTL_sendtrigger`
    pub const SENDTRIGGER: u32 = 28;
    /// `XEN_DOMCTL_subscribe`
    pub const SUBSCRIBE: u32 = 29;
    /// `XEN_DOMCTL_gethvmcontext`
    pub const GETHVMCONTEXT: u32 = 33;
    /// `XEN_DOMCTL_sethvmcontext`
    pub const SETHVMCONTEXT: u32 = 34;
    /// `XEN_DOMCTL_set_address_size`
    pub const SET_ADDRESS_SIZE: u32 = 35;
    /// `XEN_DOMCTL_get_address_size`
    pub const GET_ADDRESS_SIZE: u32 = 36;
    /// `XEN_DOMCTL_assign_device`
    pub const ASSIGN_DEVICE: u32 = 37;
    /// `XEN_DOMCTL_bind_pt_irq`
    pub const BIND_PT_IRQ: u32 = 38;
    /// `XEN_DOMCTL_memory_mapping`
    pub const MEMORY_MAPPING: u32 = 39;
    /// `XEN_DOMCTL_ioport_mapping`
    pub const IOPORT_MAPPING: u32 = 40;
    /// `XEN_DOMCTL_set_ext_vcpucontext`
    pub const SET_EXT_VCPUCONTEXT: u32 = 42;
    /// `XEN_DOMCTL_get_ext_vcpucontext`
    pub const GET_EXT_VCPUCONTEXT: u32 = 43;
    /// `XEN_DOMCTL_set_opt_feature`
    pub const SET_OPT_FEATURE: u32 = 44;
    /// `XEN_DOMCTL_test_assign_device`
    pub const TEST_ASSIGN_DEVICE: u32 = 45;
    /// `XEN_DOMCTL_set_target`
    pub const SET_TARGET: u32 = 46;
    /// `XEN_DOMCTL_deassign_device`
    pub const DEASSIGN_DEVICE: u32 = 47;
    /// `XEN_DOMCTL_unbind_pt_irq`
    pub const UNBIND_PT_IRQ: u32 = 48;
    /// `XEN_DOMCTL_get_device_group`
    pub const GET_DEVICE_GROUP: u32 = 50;
    /// `XEN_DOMCTL_debug_op`
    pub const DEBUG_OP: u32 = 54;
    /// `XEN_DOMCTL_gethvmcontext_partial`
    pub const GETHVMCONTEXT_PARTIAL: u32 = 55;
    /// `XEN_DOMCTL_vm_event_op`
    pub const VM_EVENT_OP: u32 = 56;
    /// `XEN_DOMCTL_mem_sharing_op`
    pub const MEM_SHARING_OP: u32 = 57;
    /// `XEN_DOMCTL_gettscinfo`
    pub const GETTSCINFO: u32 = 59;
    /// `XEN_DOMCTL_settscinfo`
    pub const SETTSCINFO: u32 = 60;
    /// `XEN_DOMCTL_getpageframeinfo3`
    pub const GETPAGEFRAMEINFO3: u32 = 61;
    /// `XEN_DOMCTL_setvcpuextstate`
    pub const SETVCPUEXTSTATE: u32 = 62;
    /// `XEN_DOMCTL_getvcpuextstate`
    pub const GETVCPUEXTSTATE: u32 = 63;
    /// `XEN_DOMCTL_set_access_required`
    pub const SET_ACCESS_REQUIRED: u32 = 64;
    /// `XEN_DOMCTL_audit_p2m`
    pub const AUDIT_P2M: u32 = 65;
    /// `XEN_DOMCTL_set_virq_handler`
    pub const SET_VIRQ_HANDLER: u32 = 66;
    /// `XEN_DOMCTL_set_broken_page_p2m`
    pub const SET_BROKEN_PAGE_P2M: u32 = 67;
    /// `XEN_DOMCTL_setnodeaffinity`
    pub const SETNODEAFFINITY: u32 = 68;
    /// `XEN_DOMCTL_getnodeaffinity`
    pub const GETNODEAFFINITY: u32 = 69;
    /// `XEN_DOMCTL_set_max_evtchn`: retired (Xen 4.17 moved the limit
    /// into createdomain); never issued, kept to name the number.
    pub const SET_MAX_EVTCHN: u32 = 70;
    /// `XEN_DOMCTL_cacheflush`
    pub const CACHEFLUSH: u32 = 71;
    /// `XEN_DOMCTL_get_vcpu_msrs`
    pub const GET_VCPU_MSRS: u32 = 72;
    /// `XEN_DOMCTL_set_vcpu_msrs`
    pub const SET_VCPU_MSRS: u32 = 73;
    /// `XEN_DOMCTL_setvnumainfo`
    pub const SETVNUMAINFO: u32 = 74;
    /// `XEN_DOMCTL_psr_cmt_op`
    pub const PSR_CMT_OP: u32 = 75;
    /// `XEN_DOMCTL_monitor_op`
    pub const MONITOR_OP: u32 = 77;
    /// `XEN_DOMCTL_psr_alloc`
    pub const PSR_ALLOC: u32 = 78;
    /// `XEN_DOMCTL_soft_reset`
    pub const SOFT_RESET: u32 = 79;
    /// `XEN_DOMCTL_vuart_op`
    pub const VUART_OP: u32 = 81;
    /// `XEN_DOMCTL_get_cpu_policy`
    pub const GET_CPU_POLICY: u32 = 82;
    /// `XEN_DOMCTL_set_cpu_policy`
    pub const SET_CPU_POLICY: u32 = 83;
    /// `XEN_DOMCTL_vmtrace_op`
    pub const VMTRACE_OP: u32 = 84;
    /// `XEN_DOMCTL_get_paging_mempool_size`
    pub const GET_PAGING_MEMPOOL_SIZE: u32 = 85;
    /// `XEN_DOMCTL_set_paging_mempool_size`
    pub const SET_PAGING_MEMPOOL_SIZE: u32 = 86;
    /// `XEN_DOMCTL_gdbsx_guestmemio`
    pub const GDBSX_GUESTMEMIO: u32 = 1000;
    /// `XEN_DOMCTL_gdbsx_pausevcpu`
    pub const GDBSX_PAUSEVCPU: u32 = 1001;
    /// `XEN_DOMCTL_gdbsx_unpausevcpu`
    pub const GDBSX_UNPAUSEVCPU: u32 = 1002;
    /// `XEN_DOMCTL_gdbsx_domstatus`
    pub const GDBSX_DOMSTATUS: u32 = 1003;

    /// The C name of a command without its `XEN_DOMCTL_` prefix, for
    /// messages.
    pub const fn name(cmd: u32) -> Option<&'static str> {
        Some(match cmd {
            CREATEDOMAIN => "createdomain",
            DESTROYDOMAIN => "destroydomain",
            PAUSEDOMAIN => "pausedomain",
            UNPAUSEDOMAIN => "unpausedomain",
            GETDOMAININFO => "getdomaininfo",
            SETVCPUAFFINITY => "setvcpuaffinity",
            SHADOW_OP => "shadow_op",
            MAX_MEM => "max_mem",
            SETVCPUCONTEXT => "setvcpucontext",
            GETVCPUCONTEXT => "getvcpucontext",
            GETVCPUINFO => "getvcpuinfo",
            MAX_VCPUS => "max_vcpus",
            SCHEDULER_OP => "scheduler_op",
            SETDOMAINHANDLE => "setdomainhandle",
            SETDEBUGGING => "setdebugging",
            IRQ_PERMISSION => "irq_permission",
            IOMEM_PERMISSION => "iomem_permission",
            IOPORT_PERMISSION => "ioport_permission",
            HYPERCALL_INIT => "hypercall_init",
            SETTIMEOFFSET => "settimeoffset",
            GETVCPUAFFINITY => "getvcpuaffinity",
            REAL_MODE_AREA => "real_mode_area",
            RESUMEDOMAIN => "resumedomain",
            SENDTRIGGER => "sendtrigger",
            SUBSCRIBE => "subscribe",
            GETHVMCONTEXT => "gethvmcontext",
            SETHVMCONTEXT => "sethvmcontext",
            SET_ADDRESS_SIZE => "set_address_size",
            GET_ADDRESS_SIZE => "get_address_size",
            ASSIGN_DEVICE => "assign_device",
            BIND_PT_IRQ => "bind_pt_irq",
            MEMORY_MAPPING => "memory_mapping",
            IOPORT_MAPPING => "ioport_mapping",
            SET_EXT_VCPUCONTEXT => "set_ext_vcpucontext",
            GET_EXT_VCPUCONTEXT => "get_ext_vcpucontext",
            SET_OPT_FEATURE => "set_opt_feature",
            TEST_ASSIGN_DEVICE => "test_assign_device",
            SET_TARGET => "set_target",
            DEASSIGN_DEVICE => "deassign_device",
            UNBIND_PT_IRQ => "unbind_pt_irq",
            GET_DEVICE_GROUP => "get_device_group",
            DEBUG_OP => "debug_op",
            GETHVMCONTEXT_PARTIAL => "gethvmcontext_partial",
            VM_EVENT_OP => "vm_event_op",
            MEM_SHARING_OP => "mem_sharing_op",
            GETTSCINFO => "gettscinfo",
            SETTSCINFO => "settscinfo",
            GETPAGEFRAMEINFO3 => "getpageframeinfo3",
            SETVCPUEXTSTATE => "setvcpuextstate",
            GETVCPUEXTSTATE => "getvcpuextstate",
            SET_ACCESS_REQUIRED => "set_access_required",
            AUDIT_P2M => "audit_p2m",
            SET_VIRQ_HANDLER => "set_virq_handler",
            SET_BROKEN_PAGE_P2M => "set_broken_page_p2m",
            SETNODEAFFINITY => "setnodeaffinity",
            GETNODEAFFINITY => "getnodeaffinity",
            SET_MAX_EVTCHN => "set_max_evtchn",
            CACHEFLUSH => "cacheflush",
            GET_VCPU_MSRS => "get_vcpu_msrs",
            SET_VCPU_MSRS => "set_vcpu_msrs",
            SETVNUMAINFO => "setvnumainfo",
            PSR_CMT_OP => "psr_cmt_op",
            MONITOR_OP => "monitor_op",
            PSR_ALLOC => "psr_alloc",
            SOFT_RESET => "soft_reset",
            VUART_OP => "vuart_op",
            GET_CPU_POLICY => "get_cpu_policy",
            SET_CPU_POLICY => "set_cpu_policy",
            VMTRACE_OP => "vmtrace_op",
            GET_PAGING_MEMPOOL_SIZE => "get_paging_mempool_size",
            SET_PAGING_MEMPOOL_SIZE => "set_paging_mempool_size",
            GDBSX_GUESTMEMIO => "gdbsx_guestmemio",
            GDBSX_PAUSEVCPU => "gdbsx_pausevcpu",
            GDBSX_UNPAUSEVCPU => "gdbsx_unpausevcpu",
            GDBSX_DOMSTATUS => "gdbsx_domstatus",
            _ => return None,
        })
    }
}

/// `struct xen_domctl`: the envelope of every domctl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Domctl {
    /// `XEN_DOMCTL_*` ([`cmd`]).
    pub cmd: u32,
    /// [`XEN_DOMCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The target domain (IN/OUT for createdomain).
    pub domain: DomId,
    /// Padding named in C.
    pub _pad: [u16; 3],
    /// The union `u`, as raw bytes (8-byte aligned like the C union).
    pub u: [u64; 16],
}

/// The size of the union `u` in [`Domctl`] and [`super::sysctl::Sysctl`].
pub const UNION_LEN: usize = 128;

/// A structure that can sit in the union of a domctl envelope.
pub trait DomctlPayload: PlainData {
    /// Evaluated where a payload is used: it fits the 128-byte union.
    const FITS: () = assert!(
        size_of::<Self>() <= UNION_LEN,
        "payload larger than the union"
    );
}

impl Domctl {
    /// An envelope for `cmd` on `domain`, with the interface version set and
    /// the union zeroed.
    pub fn new(cmd: u32, domain: DomId) -> Self {
        Domctl {
            cmd,
            interface_version: XEN_DOMCTL_INTERFACE_VERSION,
            domain,
            _pad: [0; 3],
            u: [0; 16],
        }
    }

    /// An envelope carrying `payload` in its union.
    pub fn with_payload<P: DomctlPayload>(cmd: u32, domain: DomId, payload: &P) -> Self {
        let mut d = Self::new(cmd, domain);
        d.set_payload(payload);
        d
    }

    /// Replaces the union's first bytes with `payload` (the rest is zeroed).
    pub fn set_payload<P: DomctlPayload>(&mut self, payload: &P) {
        let () = P::FITS;
        self.u = [0; 16];
        // Cannot fail: FITS proves the payload is no larger than the union.
        let _ = payload.write_to(self.u.as_bytes_mut());
    }

    /// The union read as a `P`.
    pub fn payload<P: DomctlPayload>(&self) -> P {
        let () = P::FITS;
        P::read_from(self.u.as_bytes()).unwrap_or_else(P::zeroed)
    }

    /// The byte offset in the envelope of a field at `offset_in_payload` in
    /// the union: where a guest handle lives, for [`crate::GuestBuf`].
    pub const fn union_offset(offset_in_payload: usize) -> usize {
        core::mem::offset_of!(Domctl, u) + offset_in_payload
    }
}

impl Default for Domctl {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// `XEN_DOMCTL_CDF_*` flags of [`CreateDomain::flags`].
pub mod cdf {
    /// `XEN_DOMCTL_CDF_hvm`
    pub const HVM: u32 = 1 << 0;
    /// `XEN_DOMCTL_CDF_hap`
    pub const HAP: u32 = 1 << 1;
    /// `XEN_DOMCTL_CDF_s3_integrity`
    pub const S3_INTEGRITY: u32 = 1 << 2;
    /// `XEN_DOMCTL_CDF_oos_off`
    pub const OOS_OFF: u32 = 1 << 3;
    /// `XEN_DOMCTL_CDF_xs_domain`
    pub const XS_DOMAIN: u32 = 1 << 4;
    /// `XEN_DOMCTL_CDF_iommu`
    pub const IOMMU: u32 = 1 << 5;
    /// `XEN_DOMCTL_CDF_nested_virt`
    pub const NESTED_VIRT: u32 = 1 << 6;
    /// `XEN_DOMCTL_CDF_vpmu`
    pub const VPMU: u32 = 1 << 7;
}

/// `struct xen_domctl_createdomain` (`XEN_DOMCTL_createdomain`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateDomain {
    /// XSM security id.
    pub ssidref: u32,
    /// UUID.
    pub handle: DomainHandle,
    /// `XEN_DOMCTL_CDF_*` ([`cdf`]).
    pub flags: u32,
    /// `XEN_DOMCTL_IOMMU_*`.
    pub iommu_opts: u32,
    /// Number of vCPUs.
    pub max_vcpus: u32,
    /// Highest event channel port (what `set_max_evtchn` used to set).
    pub max_evtchn_port: u32,
    /// Grant frames; negative for Xen's default.
    pub max_grant_frames: i32,
    /// Maptrack frames; negative for Xen's default.
    pub max_maptrack_frames: i32,
    /// Grant table version in the low 4 bits.
    pub grant_opts: u32,
    /// Per-vCPU trace buffer size in bytes, 0 for none.
    pub vmtrace_size: u32,
    /// CPU pool.
    pub cpupool_id: u32,
    /// x86 configuration.
    pub arch: ArchDomainConfig,
}

/// `XEN_DOMINF_*` bits of [`GetDomainInfo::flags`].
pub mod dominf {
    /// `XEN_DOMINF_dying`
    pub const DYING: u32 = 1 << 0;
    /// `XEN_DOMINF_hvm_guest`
    pub const HVM_GUEST: u32 = 1 << 1;
    /// `XEN_DOMINF_shutdown`
    pub const SHUTDOWN: u32 = 1 << 2;
    /// `XEN_DOMINF_paused`
    pub const PAUSED: u32 = 1 << 3;
    /// `XEN_DOMINF_blocked`
    pub const BLOCKED: u32 = 1 << 4;
    /// `XEN_DOMINF_running`
    pub const RUNNING: u32 = 1 << 5;
    /// `XEN_DOMINF_debugged`
    pub const DEBUGGED: u32 = 1 << 6;
    /// `XEN_DOMINF_xs_domain`
    pub const XS_DOMAIN: u32 = 1 << 7;
    /// `XEN_DOMINF_hap`
    pub const HAP: u32 = 1 << 8;
    /// `XEN_DOMINF_shutdownmask`
    pub const SHUTDOWN_MASK: u32 = 255;
    /// `XEN_DOMINF_shutdownshift`
    pub const SHUTDOWN_SHIFT: u32 = 16;
}

/// `XEN_INVALID_MAX_VCPU_ID`: the domain has no vCPUs.
pub const XEN_INVALID_MAX_VCPU_ID: u32 = !0;

/// `struct xen_domctl_getdomaininfo` (`XEN_DOMCTL_getdomaininfo`, and the
/// elements of `XEN_SYSCTL_getdomaininfolist`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetDomainInfo {
    /// Domain id.
    pub domain: DomId,
    /// Padding named in C.
    pub pad1: u16,
    /// `XEN_DOMINF_*` ([`dominf`]).
    pub flags: u32,
    /// Pages allocated.
    pub tot_pages: u64,
    /// Page limit.
    pub max_pages: u64,
    /// Outstanding claimed pages.
    pub outstanding_pages: u64,
    /// Shared pages.
    pub shr_pages: u64,
    /// Paged-out pages.
    pub paged_pages: u64,
    /// GMFN of the shared-info page.
    pub shared_info_frame: u64,
    /// CPU time used, in ns.
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id in use.
    pub max_vcpu_id: u32,
    /// XSM security id.
    pub ssidref: u32,
    /// UUID.
    pub handle: DomainHandle,
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address width.
    pub gpaddr_bits: u8,
    /// Padding named in C.
    pub pad2: [u8; 7],
    /// x86 configuration.
    pub arch_config: ArchDomainConfig,
}

/// `XEN_DOMCTL_PFINFO_*`: the page type in the top nibble of each
/// `getpageframeinfo3` entry.
pub mod pfinfo {
    /// `XEN_DOMCTL_PFINFO_LTAB_SHIFT`
    pub const LTAB_SHIFT: u32 = 28;
    /// `XEN_DOMCTL_PFINFO_NOTAB`
    pub const NOTAB: u32 = 0x0 << 28;
    /// `XEN_DOMCTL_PFINFO_L1TAB`
    pub const L1TAB: u32 = 0x1 << 28;
    /// `XEN_DOMCTL_PFINFO_L2TAB`
    pub const L2TAB: u32 = 0x2 << 28;
    /// `XEN_DOMCTL_PFINFO_L3TAB`
    pub const L3TAB: u32 = 0x3 << 28;
    /// `XEN_DOMCTL_PFINFO_L4TAB`
    pub const L4TAB: u32 = 0x4 << 28;
    /// `XEN_DOMCTL_PFINFO_LTABTYPE_MASK`
    pub const LTABTYPE_MASK: u32 = 0x7 << 28;
    /// `XEN_DOMCTL_PFINFO_LPINTAB`
    pub const LPINTAB: u32 = 0x1 << 31;
    /// `XEN_DOMCTL_PFINFO_XTAB`: invalid page.
    pub const XTAB: u32 = 0xf << 28;
    /// `XEN_DOMCTL_PFINFO_XALLOC`: allocate-only page.
    pub const XALLOC: u32 = 0xe << 28;
    /// `XEN_DOMCTL_PFINFO_BROKEN`: broken page.
    pub const BROKEN: u32 = 0xd << 28;
    /// `XEN_DOMCTL_PFINFO_LTAB_MASK`
    pub const LTAB_MASK: u32 = 0xf << 28;
}

/// `struct xen_domctl_getpageframeinfo3` (`XEN_DOMCTL_getpageframeinfo3`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetPageFrameInfo3 {
    /// Number of entries in `array`.
    pub num: u64,
    /// `xen_pfn_t[num]`: PFNs in, PFNs with their type bits out.
    pub array: GuestHandle,
}

/// `XEN_DOMCTL_SHADOW_OP_*` and the mode flags of [`ShadowOp`].
pub mod shadow {
    /// `XEN_DOMCTL_SHADOW_OP_OFF`: disable shadow mode (and log-dirty).
    pub const OP_OFF: u32 = 0;
    /// `XEN_DOMCTL_SHADOW_OP_ENABLE`
    pub const OP_ENABLE: u32 = 32;
    /// `XEN_DOMCTL_SHADOW_OP_CLEAN`: return the dirty bitmap and clear it.
    pub const OP_CLEAN: u32 = 11;
    /// `XEN_DOMCTL_SHADOW_OP_PEEK`: return the dirty bitmap, keep it.
    pub const OP_PEEK: u32 = 12;
    /// `XEN_DOMCTL_SHADOW_OP_GET_ALLOCATION`
    pub const OP_GET_ALLOCATION: u32 = 30;
    /// `XEN_DOMCTL_SHADOW_OP_SET_ALLOCATION`
    pub const OP_SET_ALLOCATION: u32 = 31;
    /// `XEN_DOMCTL_SHADOW_OP_ENABLE_TEST`
    pub const OP_ENABLE_TEST: u32 = 1;
    /// `XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY`
    pub const OP_ENABLE_LOGDIRTY: u32 = 2;
    /// `XEN_DOMCTL_SHADOW_ENABLE_REFCOUNT`
    pub const ENABLE_REFCOUNT: u32 = 1 << 1;
    /// `XEN_DOMCTL_SHADOW_ENABLE_LOG_DIRTY`
    pub const ENABLE_LOG_DIRTY: u32 = 1 << 2;
    /// `XEN_DOMCTL_SHADOW_ENABLE_TRANSLATE`
    pub const ENABLE_TRANSLATE: u32 = 1 << 3;
    /// `XEN_DOMCTL_SHADOW_ENABLE_EXTERNAL`
    pub const ENABLE_EXTERNAL: u32 = 1 << 4;
    /// `XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL`: last round; include pages the
    /// hypervisor maps writably.
    pub const LOGDIRTY_FINAL: u32 = 1 << 0;
}

/// `struct xen_domctl_shadow_op_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowOpStats {
    /// Faults since the last CLEAN.
    pub fault_count: u32,
    /// Pages dirtied since the last CLEAN.
    pub dirty_count: u32,
}

/// `struct xen_domctl_shadow_op` (`XEN_DOMCTL_shadow_op`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowOp {
    /// `XEN_DOMCTL_SHADOW_OP_*` ([`shadow`]).
    pub op: u32,
    /// ENABLE: `XEN_DOMCTL_SHADOW_ENABLE_*`; CLEAN/PEEK:
    /// `XEN_DOMCTL_SHADOW_LOGDIRTY_*`.
    pub mode: u32,
    /// Shadow memory in MiB (GET/SET_ALLOCATION).
    pub mb: u32,
    /// Implicit C padding.
    pub _pad0: u32,
    /// `uint8[]` bitmap, one bit per PFN (CLEAN/PEEK).
    pub dirty_bitmap: GuestHandle,
    /// Bits in the bitmap; updated to the guest's size.
    pub pages: u64,
    /// Counters.
    pub stats: ShadowOpStats,
}

/// `struct xen_domctl_max_mem` (`XEN_DOMCTL_max_mem`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxMem {
    /// Limit in KiB.
    pub max_memkb: u64,
}

/// `struct xen_domctl_vcpucontext` (`XEN_DOMCTL_{get,set}vcpucontext`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuContext {
    /// vCPU number.
    pub vcpu: u32,
    /// Implicit C padding.
    pub _pad0: u32,
    /// `vcpu_guest_context_t *` ([`super::xen::VcpuGuestContext`]).
    pub ctxt: GuestHandle,
}

/// `struct xen_domctl_max_vcpus` (`XEN_DOMCTL_max_vcpus`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxVcpus {
    /// Number of vCPUs; must match createdomain's.
    pub max: u32,
}

/// `struct xen_domctl_tsc_info` (`XEN_DOMCTL_{get,set}tscinfo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TscInfo {
    /// TSC mode.
    pub tsc_mode: u32,
    /// Guest TSC frequency in kHz.
    pub gtsc_khz: u32,
    /// Incarnation (bumped on each restore).
    pub incarnation: u32,
    /// Padding named in C.
    pub pad: u32,
    /// Elapsed ns.
    pub elapsed_nsec: u64,
}

/// `struct xen_domctl_address_size` (`XEN_DOMCTL_{set,get}_address_size`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressSize {
    /// 32 or 64 (bits) for a PV guest.
    pub size: u32,
}

/// `struct xen_domctl_cpu_policy` (`XEN_DOMCTL_{get,set}_cpu_policy`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuPolicy {
    /// IN/OUT: entries in / written to `leaves`.
    pub nr_leaves: u32,
    /// IN/OUT: entries in / written to `msrs`.
    pub nr_msrs: u32,
    /// `xen_cpuid_leaf_t[]` ([`super::xen::CpuidLeaf`]).
    pub leaves: GuestHandle,
    /// `xen_msr_entry_t[]` ([`super::xen::MsrEntry`]).
    pub msrs: GuestHandle,
    /// OUT (set only): the leaf auditing objected to.
    pub err_leaf: u32,
    /// OUT (set only): its subleaf.
    pub err_subleaf: u32,
    /// OUT (set only): the MSR auditing objected to.
    pub err_msr: u32,
    /// Implicit C tail padding.
    pub _pad0: u32,
}

/// `struct xen_domctl_vcpuextstate` (`XEN_DOMCTL_{get,set}vcpuextstate`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuExtState {
    /// vCPU number.
    pub vcpu: u32,
    /// Implicit C padding.
    pub _pad0: u32,
    /// GET: xfeature mask (IN/OUT); SET: ignored.
    pub xfeature_mask: u64,
    /// Size of `buffer` in bytes (0 on GET asks for the size).
    pub size: u64,
    /// `uint64[]` buffer.
    pub buffer: GuestHandle,
}

/// `struct xen_domctl_setdomainhandle` (`XEN_DOMCTL_setdomainhandle`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetDomainHandle {
    /// The new UUID.
    pub handle: DomainHandle,
}

/// `struct hvm_vmce_vcpu` (`arch-x86/hvm/save.h`): a vCPU's virtual
/// machine-check state, the tail of [`ExtVcpuContextRaw`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmVmceVcpu {
    /// `MCG_CAP` (the C union's `mcg_cap` aliases it).
    pub caps: u64,
    /// `MCi_CTL2` of bank 0.
    pub mci_ctl2_bank0: u64,
    /// `MCi_CTL2` of bank 1.
    pub mci_ctl2_bank1: u64,
    /// `MCG_EXT_CTL`.
    pub mcg_ext_ctl: u64,
}

/// `struct xen_domctl_ext_vcpucontext`
/// (`XEN_DOMCTL_{get,set}_ext_vcpucontext`), x86 with GNU C: the union of
/// `mcg_cap` and `vmce` is [`ExtVcpuContextRaw::vmce`] (`mcg_cap` is
/// `vmce.caps`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtVcpuContextRaw {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// GET: bytes Xen filled (OUT); SET: bytes valid (IN).
    pub size: u32,
    /// SYSCALL from 32-bit mode: callback address.
    pub syscall32_callback_eip: u64,
    /// SYSENTER callback address.
    pub sysenter_callback_eip: u64,
    /// SYSCALL from 32-bit mode: callback code segment.
    pub syscall32_callback_cs: u16,
    /// SYSENTER callback code segment.
    pub sysenter_callback_cs: u16,
    /// SYSCALL (32-bit) callback masks events.
    pub syscall32_disables_events: u8,
    /// SYSENTER callback masks events.
    pub sysenter_disables_events: u8,
    /// Implicit C padding before the 8-byte aligned union.
    pub _pad0: [u8; 2],
    /// Machine-check state.
    pub vmce: HvmVmceVcpu,
}

/// Scheduler ids and `XEN_DOMCTL_scheduler_op` commands.
pub mod sched {
    /// `XEN_SCHEDULER_CREDIT`
    pub const CREDIT: u32 = 5;
    /// `XEN_SCHEDULER_CREDIT2`
    pub const CREDIT2: u32 = 6;
    /// `XEN_SCHEDULER_ARINC653`
    pub const ARINC653: u32 = 7;
    /// `XEN_SCHEDULER_RTDS`
    pub const RTDS: u32 = 8;
    /// `XEN_SCHEDULER_NULL`
    pub const NULL: u32 = 9;
    /// `XEN_DOMCTL_SCHEDOP_putinfo`
    pub const OP_PUTINFO: u32 = 0;
    /// `XEN_DOMCTL_SCHEDOP_getinfo`
    pub const OP_GETINFO: u32 = 1;
}

/// `struct xen_domctl_sched_credit`, and `struct xen_domctl_sched_credit2`
/// (the same two fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedCredit {
    /// Relative share (1 to 65535; Xen's default 256).
    pub weight: u16,
    /// Ceiling in percent of one CPU for the whole domain (0: none).
    pub cap: u16,
}

/// `struct xen_domctl_scheduler_op` (`XEN_DOMCTL_scheduler_op`). The C
/// union `u` is a 16-byte array here; the credit and credit2 members are
/// its first four bytes ([`SchedulerOp::credit`],
/// [`SchedulerOp::with_credit`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerOp {
    /// `XEN_SCHEDULER_*` ([`sched`]): must be the domain's scheduler.
    pub sched_id: u32,
    /// `XEN_DOMCTL_SCHEDOP_*` ([`sched`]).
    pub cmd: u32,
    /// The union: credit/credit2 parameters, RTDS's, or per-vCPU ones.
    pub u: [u8; 16],
}

impl SchedulerOp {
    /// An operation on the credit or credit2 parameters.
    pub fn with_credit(sched_id: u32, cmd: u32, credit: SchedCredit) -> SchedulerOp {
        let mut u = [0u8; 16];
        u[0..2].copy_from_slice(&credit.weight.to_ne_bytes());
        u[2..4].copy_from_slice(&credit.cap.to_ne_bytes());
        SchedulerOp { sched_id, cmd, u }
    }

    /// The credit or credit2 parameters in the union.
    pub fn credit(&self) -> SchedCredit {
        SchedCredit {
            weight: u16::from_ne_bytes([self.u[0], self.u[1]]),
            cap: u16::from_ne_bytes([self.u[2], self.u[3]]),
        }
    }
}

/// `struct xen_domctl_vcpu_msr`: one MSR of
/// `XEN_DOMCTL_{get,set}_vcpu_msrs` (16 bytes; its bytes are what a
/// stream's `X86_PV_VCPU_MSRS` record carries, [`PlainData::as_bytes`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMsr {
    /// MSR index.
    pub index: u32,
    /// Reserved, must be zero.
    pub reserved: u32,
    /// Value.
    pub value: u64,
}

/// `struct xen_domctl_vcpu_msrs` (`XEN_DOMCTL_{get,set}_vcpu_msrs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMsrs {
    /// The vCPU.
    pub vcpu: u32,
    /// IN: entries in `msrs`; OUT (get): entries Xen wrote or needs.
    pub msr_count: u32,
    /// `xen_domctl_vcpu_msr_t[]` ([`VcpuMsr`]); NULL on get asks for the
    /// maximum count.
    pub msrs: GuestHandle,
}

plain_data! {
    SetDomainHandle { handle }
    HvmVmceVcpu { caps, mci_ctl2_bank0, mci_ctl2_bank1, mcg_ext_ctl }
    ExtVcpuContextRaw {
        vcpu, size, syscall32_callback_eip, sysenter_callback_eip, syscall32_callback_cs,
        sysenter_callback_cs, syscall32_disables_events, sysenter_disables_events, _pad0, vmce
    }
    VcpuMsr { index, reserved, value }
    VcpuMsrs { vcpu, msr_count, msrs }
    SchedCredit { weight, cap }
    SchedulerOp { sched_id, cmd, u }
}

plain_data! {
    Domctl { cmd, interface_version, domain, _pad, u }
    CreateDomain {
        ssidref, handle, flags, iommu_opts, max_vcpus, max_evtchn_port,
        max_grant_frames, max_maptrack_frames, grant_opts, vmtrace_size,
        cpupool_id, arch
    }
    GetDomainInfo {
        domain, pad1, flags, tot_pages, max_pages, outstanding_pages, shr_pages,
        paged_pages, shared_info_frame, cpu_time, nr_online_vcpus, max_vcpu_id,
        ssidref, handle, cpupool, gpaddr_bits, pad2, arch_config
    }
    GetPageFrameInfo3 { num, array }
    ShadowOpStats { fault_count, dirty_count }
    ShadowOp { op, mode, mb, _pad0, dirty_bitmap, pages, stats }
    MaxMem { max_memkb }
    VcpuContext { vcpu, _pad0, ctxt }
    MaxVcpus { max }
    TscInfo { tsc_mode, gtsc_khz, incarnation, pad, elapsed_nsec }
    AddressSize { size }
    CpuPolicy { nr_leaves, nr_msrs, leaves, msrs, err_leaf, err_subleaf, err_msr, _pad0 }
    VcpuExtState { vcpu, _pad0, xfeature_mask, size, buffer }
}

macro_rules! payloads {
    ($($ty:ty = $size:expr;)*) => {$(
        impl DomctlPayload for $ty {}
        const _: () = assert!(size_of::<$ty>() == $size);
    )*};
}
payloads! {
    CreateDomain = 64;
    GetDomainInfo = 112;
    GetPageFrameInfo3 = 16;
    ShadowOp = 40;
    MaxMem = 8;
    VcpuContext = 16;
    MaxVcpus = 4;
    TscInfo = 24;
    AddressSize = 4;
    CpuPolicy = 40;
    VcpuExtState = 32;
    SetDomainHandle = 16;
    ExtVcpuContextRaw = 64;
    VcpuMsrs = 16;
    SchedulerOp = 24;
}
const _: () = assert!(size_of::<HvmVmceVcpu>() == 32);
const _: () = assert!(size_of::<VcpuMsr>() == 16);
const _: () = assert!(size_of::<Domctl>() == 144);
const _: () = assert!(size_of::<ShadowOpStats>() == 8);
const _: () = assert!(size_of::<SchedCredit>() == 4);
