//! The ABI mirrors against Xen's own C headers (Debian's `libxen-dev`):
//! a C program built here prints the size of every structure, the offset
//! and size of every field, and the value of every constant; each must
//! equal the Rust side. The Rust side must also tile each structure: its
//! fields, in offset order, cover every byte with no gap, so no C field can
//! hide in a gap.
//!
//! Needs `cc` and `libxen-dev`. When the headers are missing and the test
//! runs as root, it installs `libxen-dev` with apt-get (and says so);
//! otherwise it fails with the command to run. It never skips.

use relocd_hypercall::abi::{self, domctl::*, memory::*, privcmd::*, sysctl::*, xen::*};
use relocd_hypercall::PlainData;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of, size_of_val};
use std::path::Path;
use std::process::Command;

struct Field {
    c: &'static str,
    rust: &'static str,
    offset: usize,
    size: usize,
}

struct Layout {
    c_type: &'static str,
    rust: &'static str,
    size: usize,
    /// Fields that mirror a named C field.
    fields: Vec<Field>,
    /// Rust fields standing for C's implicit padding: (name, offset, size).
    implicit: Vec<(&'static str, usize, usize)>,
}

macro_rules! layout {
    ($cty:literal => $ty:ty { $($cf:literal => $rf:ident),* $(,)? } $(pad { $($pf:ident),* $(,)? })?) => {{
        let z = <$ty as PlainData>::zeroed();
        Layout {
            c_type: $cty,
            rust: stringify!($ty),
            size: size_of::<$ty>(),
            fields: vec![$(Field {
                c: $cf,
                rust: stringify!($rf),
                offset: offset_of!($ty, $rf),
                size: size_of_val(&z.$rf),
            }),*],
            implicit: vec![$($((stringify!($pf), offset_of!($ty, $pf), size_of_val(&z.$pf))),*)?],
        }
    }};
}

fn layouts() -> Vec<Layout> {
    vec![
        layout!("struct xen_domctl" => Domctl {
            "cmd" => cmd, "interface_version" => interface_version, "domain" => domain,
            "_pad" => _pad, "u" => u,
        }),
        layout!("struct xen_domctl_createdomain" => CreateDomain {
            "ssidref" => ssidref, "handle" => handle, "flags" => flags, "iommu_opts" => iommu_opts,
            "max_vcpus" => max_vcpus, "max_evtchn_port" => max_evtchn_port,
            "max_grant_frames" => max_grant_frames, "max_maptrack_frames" => max_maptrack_frames,
            "grant_opts" => grant_opts, "vmtrace_size" => vmtrace_size, "cpupool_id" => cpupool_id,
            "arch" => arch,
        }),
        layout!("struct xen_arch_domainconfig" => ArchDomainConfig {
            "emulation_flags" => emulation_flags, "misc_flags" => misc_flags,
        }),
        layout!("struct xen_domctl_getdomaininfo" => GetDomainInfo {
            "domain" => domain, "pad1" => pad1, "flags" => flags, "tot_pages" => tot_pages,
            "max_pages" => max_pages, "outstanding_pages" => outstanding_pages,
            "shr_pages" => shr_pages, "paged_pages" => paged_pages,
            "shared_info_frame" => shared_info_frame, "cpu_time" => cpu_time,
            "nr_online_vcpus" => nr_online_vcpus, "max_vcpu_id" => max_vcpu_id,
            "ssidref" => ssidref, "handle" => handle, "cpupool" => cpupool,
            "gpaddr_bits" => gpaddr_bits, "pad2" => pad2, "arch_config" => arch_config,
        }),
        layout!("struct xen_domctl_getpageframeinfo3" => GetPageFrameInfo3 {
            "num" => num, "array" => array,
        }),
        layout!("struct xen_domctl_shadow_op_stats" => ShadowOpStats {
            "fault_count" => fault_count, "dirty_count" => dirty_count,
        }),
        layout!("struct xen_domctl_shadow_op" => ShadowOp {
            "op" => op, "mode" => mode, "mb" => mb, "dirty_bitmap" => dirty_bitmap,
            "pages" => pages, "stats" => stats,
        } pad { _pad0 }),
        layout!("struct xen_domctl_max_mem" => MaxMem { "max_memkb" => max_memkb }),
        layout!("struct xen_domctl_vcpucontext" => VcpuContext {
            "vcpu" => vcpu, "ctxt" => ctxt,
        } pad { _pad0 }),
        layout!("struct xen_domctl_max_vcpus" => MaxVcpus { "max" => max }),
        layout!("struct xen_domctl_tsc_info" => TscInfo {
            "tsc_mode" => tsc_mode, "gtsc_khz" => gtsc_khz, "incarnation" => incarnation,
            "pad" => pad, "elapsed_nsec" => elapsed_nsec,
        }),
        layout!("struct xen_domctl_address_size" => AddressSize { "size" => size }),
        layout!("struct xen_domctl_cpu_policy" => CpuPolicy {
            "nr_leaves" => nr_leaves, "nr_msrs" => nr_msrs, "leaves" => leaves, "msrs" => msrs,
            "err_leaf" => err_leaf, "err_subleaf" => err_subleaf, "err_msr" => err_msr,
        } pad { _pad0 }),
        layout!("struct xen_domctl_vcpuextstate" => VcpuExtState {
            "vcpu" => vcpu, "xfeature_mask" => xfeature_mask, "size" => size, "buffer" => buffer,
        } pad { _pad0 }),
        layout!("struct xen_sysctl" => Sysctl {
            "cmd" => cmd, "interface_version" => interface_version, "u" => u,
        }),
        layout!("struct xen_sysctl_getdomaininfolist" => GetDomainInfoList {
            "first_domain" => first_domain, "max_domains" => max_domains, "buffer" => buffer,
            "num_domains" => num_domains,
        } pad { _pad0, _pad1 }),
        layout!("struct xen_sysctl_physinfo" => PhysInfo {
            "threads_per_core" => threads_per_core, "cores_per_socket" => cores_per_socket,
            "nr_cpus" => nr_cpus, "max_cpu_id" => max_cpu_id, "nr_nodes" => nr_nodes,
            "max_node_id" => max_node_id, "cpu_khz" => cpu_khz, "capabilities" => capabilities,
            "arch_capabilities" => arch_capabilities, "pad" => pad, "total_pages" => total_pages,
            "free_pages" => free_pages, "scrub_pages" => scrub_pages,
            "outstanding_pages" => outstanding_pages, "max_mfn" => max_mfn, "hw_cap" => hw_cap,
        }),
        layout!("struct xen_memory_reservation" => MemoryReservation {
            "extent_start" => extent_start, "nr_extents" => nr_extents,
            "extent_order" => extent_order, "mem_flags" => mem_flags, "domid" => domid,
        } pad { _pad0 }),
        layout!("struct mmu_update" => MmuUpdate { "ptr" => ptr, "val" => val }),
        layout!("struct mmuext_op" => MmuextOp {
            "cmd" => cmd, "arg1" => arg1, "arg2" => arg2,
        } pad { _pad0 }),
        layout!("struct trap_info" => TrapInfo {
            "vector" => vector, "flags" => flags, "cs" => cs, "address" => address,
        } pad { _pad0 }),
        layout!("struct cpu_user_regs" => CpuUserRegs {
            "r15" => r15, "r14" => r14, "r13" => r13, "r12" => r12, "rbp" => rbp, "rbx" => rbx,
            "r11" => r11, "r10" => r10, "r9" => r9, "r8" => r8, "rax" => rax, "rcx" => rcx,
            "rdx" => rdx, "rsi" => rsi, "rdi" => rdi, "error_code" => error_code,
            "entry_vector" => entry_vector, "rip" => rip, "cs" => cs, "_pad0" => _pad0,
            "saved_upcall_mask" => saved_upcall_mask, "_pad1" => _pad1, "rflags" => rflags,
            "rsp" => rsp, "ss" => ss, "_pad2" => _pad2, "es" => es, "_pad3" => _pad3,
            "ds" => ds, "_pad4" => _pad4, "fs" => fs, "_pad5" => _pad5, "gs" => gs,
            "_pad6" => _pad6,
        }),
        layout!("struct vcpu_guest_context" => VcpuGuestContext {
            "fpu_ctxt" => fpu_ctxt, "flags" => flags, "user_regs" => user_regs,
            "trap_ctxt" => trap_ctxt, "ldt_base" => ldt_base, "ldt_ents" => ldt_ents,
            "gdt_frames" => gdt_frames, "gdt_ents" => gdt_ents, "kernel_ss" => kernel_ss,
            "kernel_sp" => kernel_sp, "ctrlreg" => ctrlreg, "debugreg" => debugreg,
            "event_callback_eip" => event_callback_eip,
            "failsafe_callback_eip" => failsafe_callback_eip,
            "syscall_callback_eip" => syscall_callback_eip, "vm_assist" => vm_assist,
            "fs_base" => fs_base, "gs_base_kernel" => gs_base_kernel,
            "gs_base_user" => gs_base_user,
        }),
        layout!("xen_cpuid_leaf_t" => CpuidLeaf {
            "leaf" => leaf, "subleaf" => subleaf, "a" => a, "b" => b, "c" => c, "d" => d,
        }),
        layout!("xen_msr_entry_t" => MsrEntry { "idx" => idx, "flags" => flags, "val" => val }),
        layout!("privcmd_hypercall_t" => PrivcmdHypercall { "op" => op, "arg" => arg }),
        layout!("privcmd_mmapbatch_v2_t" => PrivcmdMmapBatchV2 {
            "num" => num, "dom" => dom, "addr" => addr, "arr" => arr, "err" => err,
        } pad { _pad0 }),
    ]
}

/// (C name, Rust value) of every constant mirrored from the headers.
fn constants() -> Vec<(&'static str, u64)> {
    vec![
        ("IOCTL_PRIVCMD_HYPERCALL", IOCTL_PRIVCMD_HYPERCALL as u64),
        (
            "IOCTL_PRIVCMD_MMAPBATCH_V2",
            IOCTL_PRIVCMD_MMAPBATCH_V2 as u64,
        ),
        ("XEN_X86_MSR_RELAXED", abi::xen::x86_emu::MSR_RELAXED as u64),
        (
            "XEN_DOMCTL_INTERFACE_VERSION",
            abi::domctl::XEN_DOMCTL_INTERFACE_VERSION as u64,
        ),
        (
            "XEN_DOMCTL_createdomain",
            abi::domctl::cmd::CREATEDOMAIN as u64,
        ),
        (
            "XEN_DOMCTL_destroydomain",
            abi::domctl::cmd::DESTROYDOMAIN as u64,
        ),
        (
            "XEN_DOMCTL_pausedomain",
            abi::domctl::cmd::PAUSEDOMAIN as u64,
        ),
        (
            "XEN_DOMCTL_unpausedomain",
            abi::domctl::cmd::UNPAUSEDOMAIN as u64,
        ),
        (
            "XEN_DOMCTL_getdomaininfo",
            abi::domctl::cmd::GETDOMAININFO as u64,
        ),
        (
            "XEN_DOMCTL_setvcpuaffinity",
            abi::domctl::cmd::SETVCPUAFFINITY as u64,
        ),
        ("XEN_DOMCTL_shadow_op", abi::domctl::cmd::SHADOW_OP as u64),
        ("XEN_DOMCTL_max_mem", abi::domctl::cmd::MAX_MEM as u64),
        (
            "XEN_DOMCTL_setvcpucontext",
            abi::domctl::cmd::SETVCPUCONTEXT as u64,
        ),
        (
            "XEN_DOMCTL_getvcpucontext",
            abi::domctl::cmd::GETVCPUCONTEXT as u64,
        ),
        (
            "XEN_DOMCTL_getvcpuinfo",
            abi::domctl::cmd::GETVCPUINFO as u64,
        ),
        ("XEN_DOMCTL_max_vcpus", abi::domctl::cmd::MAX_VCPUS as u64),
        (
            "XEN_DOMCTL_scheduler_op",
            abi::domctl::cmd::SCHEDULER_OP as u64,
        ),
        (
            "XEN_DOMCTL_setdomainhandle",
            abi::domctl::cmd::SETDOMAINHANDLE as u64,
        ),
        (
            "XEN_DOMCTL_setdebugging",
            abi::domctl::cmd::SETDEBUGGING as u64,
        ),
        (
            "XEN_DOMCTL_irq_permission",
            abi::domctl::cmd::IRQ_PERMISSION as u64,
        ),
        (
            "XEN_DOMCTL_iomem_permission",
            abi::domctl::cmd::IOMEM_PERMISSION as u64,
        ),
        (
            "XEN_DOMCTL_ioport_permission",
            abi::domctl::cmd::IOPORT_PERMISSION as u64,
        ),
        (
            "XEN_DOMCTL_hypercall_init",
            abi::domctl::cmd::HYPERCALL_INIT as u64,
        ),
        (
            "XEN_DOMCTL_settimeoffset",
            abi::domctl::cmd::SETTIMEOFFSET as u64,
        ),
        (
            "XEN_DOMCTL_getvcpuaffinity",
            abi::domctl::cmd::GETVCPUAFFINITY as u64,
        ),
        (
            "XEN_DOMCTL_real_mode_area",
            abi::domctl::cmd::REAL_MODE_AREA as u64,
        ),
        (
            "XEN_DOMCTL_resumedomain",
            abi::domctl::cmd::RESUMEDOMAIN as u64,
        ),
        (
            "XEN_DOMCTL_sendtrigger",
            abi::domctl::cmd::SENDTRIGGER as u64,
        ),
        ("XEN_DOMCTL_subscribe", abi::domctl::cmd::SUBSCRIBE as u64),
        (
            "XEN_DOMCTL_gethvmcontext",
            abi::domctl::cmd::GETHVMCONTEXT as u64,
        ),
        (
            "XEN_DOMCTL_sethvmcontext",
            abi::domctl::cmd::SETHVMCONTEXT as u64,
        ),
        (
            "XEN_DOMCTL_set_address_size",
            abi::domctl::cmd::SET_ADDRESS_SIZE as u64,
        ),
        (
            "XEN_DOMCTL_get_address_size",
            abi::domctl::cmd::GET_ADDRESS_SIZE as u64,
        ),
        (
            "XEN_DOMCTL_assign_device",
            abi::domctl::cmd::ASSIGN_DEVICE as u64,
        ),
        (
            "XEN_DOMCTL_bind_pt_irq",
            abi::domctl::cmd::BIND_PT_IRQ as u64,
        ),
        (
            "XEN_DOMCTL_memory_mapping",
            abi::domctl::cmd::MEMORY_MAPPING as u64,
        ),
        (
            "XEN_DOMCTL_ioport_mapping",
            abi::domctl::cmd::IOPORT_MAPPING as u64,
        ),
        (
            "XEN_DOMCTL_set_ext_vcpucontext",
            abi::domctl::cmd::SET_EXT_VCPUCONTEXT as u64,
        ),
        (
            "XEN_DOMCTL_get_ext_vcpucontext",
            abi::domctl::cmd::GET_EXT_VCPUCONTEXT as u64,
        ),
        (
            "XEN_DOMCTL_set_opt_feature",
            abi::domctl::cmd::SET_OPT_FEATURE as u64,
        ),
        (
            "XEN_DOMCTL_test_assign_device",
            abi::domctl::cmd::TEST_ASSIGN_DEVICE as u64,
        ),
        ("XEN_DOMCTL_set_target", abi::domctl::cmd::SET_TARGET as u64),
        (
            "XEN_DOMCTL_deassign_device",
            abi::domctl::cmd::DEASSIGN_DEVICE as u64,
        ),
        (
            "XEN_DOMCTL_unbind_pt_irq",
            abi::domctl::cmd::UNBIND_PT_IRQ as u64,
        ),
        (
            "XEN_DOMCTL_get_device_group",
            abi::domctl::cmd::GET_DEVICE_GROUP as u64,
        ),
        ("XEN_DOMCTL_debug_op", abi::domctl::cmd::DEBUG_OP as u64),
        (
            "XEN_DOMCTL_gethvmcontext_partial",
            abi::domctl::cmd::GETHVMCONTEXT_PARTIAL as u64,
        ),
        (
            "XEN_DOMCTL_vm_event_op",
            abi::domctl::cmd::VM_EVENT_OP as u64,
        ),
        (
            "XEN_DOMCTL_mem_sharing_op",
            abi::domctl::cmd::MEM_SHARING_OP as u64,
        ),
        ("XEN_DOMCTL_gettscinfo", abi::domctl::cmd::GETTSCINFO as u64),
        ("XEN_DOMCTL_settscinfo", abi::domctl::cmd::SETTSCINFO as u64),
        (
            "XEN_DOMCTL_getpageframeinfo3",
            abi::domctl::cmd::GETPAGEFRAMEINFO3 as u64,
        ),
        (
            "XEN_DOMCTL_setvcpuextstate",
            abi::domctl::cmd::SETVCPUEXTSTATE as u64,
        ),
        (
            "XEN_DOMCTL_getvcpuextstate",
            abi::domctl::cmd::GETVCPUEXTSTATE as u64,
        ),
        (
            "XEN_DOMCTL_set_access_required",
            abi::domctl::cmd::SET_ACCESS_REQUIRED as u64,
        ),
        ("XEN_DOMCTL_audit_p2m", abi::domctl::cmd::AUDIT_P2M as u64),
        (
            "XEN_DOMCTL_set_virq_handler",
            abi::domctl::cmd::SET_VIRQ_HANDLER as u64,
        ),
        (
            "XEN_DOMCTL_set_broken_page_p2m",
            abi::domctl::cmd::SET_BROKEN_PAGE_P2M as u64,
        ),
        (
            "XEN_DOMCTL_setnodeaffinity",
            abi::domctl::cmd::SETNODEAFFINITY as u64,
        ),
        (
            "XEN_DOMCTL_getnodeaffinity",
            abi::domctl::cmd::GETNODEAFFINITY as u64,
        ),
        ("XEN_DOMCTL_cacheflush", abi::domctl::cmd::CACHEFLUSH as u64),
        (
            "XEN_DOMCTL_get_vcpu_msrs",
            abi::domctl::cmd::GET_VCPU_MSRS as u64,
        ),
        (
            "XEN_DOMCTL_set_vcpu_msrs",
            abi::domctl::cmd::SET_VCPU_MSRS as u64,
        ),
        (
            "XEN_DOMCTL_setvnumainfo",
            abi::domctl::cmd::SETVNUMAINFO as u64,
        ),
        ("XEN_DOMCTL_psr_cmt_op", abi::domctl::cmd::PSR_CMT_OP as u64),
        ("XEN_DOMCTL_monitor_op", abi::domctl::cmd::MONITOR_OP as u64),
        ("XEN_DOMCTL_psr_alloc", abi::domctl::cmd::PSR_ALLOC as u64),
        ("XEN_DOMCTL_soft_reset", abi::domctl::cmd::SOFT_RESET as u64),
        ("XEN_DOMCTL_vuart_op", abi::domctl::cmd::VUART_OP as u64),
        (
            "XEN_DOMCTL_get_cpu_policy",
            abi::domctl::cmd::GET_CPU_POLICY as u64,
        ),
        (
            "XEN_DOMCTL_set_cpu_policy",
            abi::domctl::cmd::SET_CPU_POLICY as u64,
        ),
        ("XEN_DOMCTL_vmtrace_op", abi::domctl::cmd::VMTRACE_OP as u64),
        (
            "XEN_DOMCTL_get_paging_mempool_size",
            abi::domctl::cmd::GET_PAGING_MEMPOOL_SIZE as u64,
        ),
        (
            "XEN_DOMCTL_set_paging_mempool_size",
            abi::domctl::cmd::SET_PAGING_MEMPOOL_SIZE as u64,
        ),
        (
            "XEN_DOMCTL_gdbsx_guestmemio",
            abi::domctl::cmd::GDBSX_GUESTMEMIO as u64,
        ),
        (
            "XEN_DOMCTL_gdbsx_pausevcpu",
            abi::domctl::cmd::GDBSX_PAUSEVCPU as u64,
        ),
        (
            "XEN_DOMCTL_gdbsx_unpausevcpu",
            abi::domctl::cmd::GDBSX_UNPAUSEVCPU as u64,
        ),
        (
            "XEN_DOMCTL_gdbsx_domstatus",
            abi::domctl::cmd::GDBSX_DOMSTATUS as u64,
        ),
        ("XEN_DOMCTL_CDF_hvm", abi::domctl::cdf::HVM as u64),
        ("XEN_DOMCTL_CDF_hap", abi::domctl::cdf::HAP as u64),
        (
            "XEN_DOMCTL_CDF_s3_integrity",
            abi::domctl::cdf::S3_INTEGRITY as u64,
        ),
        ("XEN_DOMCTL_CDF_oos_off", abi::domctl::cdf::OOS_OFF as u64),
        (
            "XEN_DOMCTL_CDF_xs_domain",
            abi::domctl::cdf::XS_DOMAIN as u64,
        ),
        ("XEN_DOMCTL_CDF_iommu", abi::domctl::cdf::IOMMU as u64),
        (
            "XEN_DOMCTL_CDF_nested_virt",
            abi::domctl::cdf::NESTED_VIRT as u64,
        ),
        ("XEN_DOMCTL_CDF_vpmu", abi::domctl::cdf::VPMU as u64),
        ("XEN_DOMINF_dying", abi::domctl::dominf::DYING as u64),
        (
            "XEN_DOMINF_hvm_guest",
            abi::domctl::dominf::HVM_GUEST as u64,
        ),
        ("XEN_DOMINF_shutdown", abi::domctl::dominf::SHUTDOWN as u64),
        ("XEN_DOMINF_paused", abi::domctl::dominf::PAUSED as u64),
        ("XEN_DOMINF_blocked", abi::domctl::dominf::BLOCKED as u64),
        ("XEN_DOMINF_running", abi::domctl::dominf::RUNNING as u64),
        ("XEN_DOMINF_debugged", abi::domctl::dominf::DEBUGGED as u64),
        (
            "XEN_DOMINF_xs_domain",
            abi::domctl::dominf::XS_DOMAIN as u64,
        ),
        ("XEN_DOMINF_hap", abi::domctl::dominf::HAP as u64),
        (
            "XEN_DOMINF_shutdownmask",
            abi::domctl::dominf::SHUTDOWN_MASK as u64,
        ),
        (
            "XEN_DOMINF_shutdownshift",
            abi::domctl::dominf::SHUTDOWN_SHIFT as u64,
        ),
        (
            "XEN_INVALID_MAX_VCPU_ID",
            abi::domctl::XEN_INVALID_MAX_VCPU_ID as u64,
        ),
        (
            "XEN_DOMCTL_PFINFO_LTAB_SHIFT",
            abi::domctl::pfinfo::LTAB_SHIFT as u64,
        ),
        ("XEN_DOMCTL_PFINFO_NOTAB", abi::domctl::pfinfo::NOTAB as u64),
        ("XEN_DOMCTL_PFINFO_L1TAB", abi::domctl::pfinfo::L1TAB as u64),
        ("XEN_DOMCTL_PFINFO_L2TAB", abi::domctl::pfinfo::L2TAB as u64),
        ("XEN_DOMCTL_PFINFO_L3TAB", abi::domctl::pfinfo::L3TAB as u64),
        ("XEN_DOMCTL_PFINFO_L4TAB", abi::domctl::pfinfo::L4TAB as u64),
        (
            "XEN_DOMCTL_PFINFO_LTABTYPE_MASK",
            abi::domctl::pfinfo::LTABTYPE_MASK as u64,
        ),
        (
            "XEN_DOMCTL_PFINFO_LPINTAB",
            abi::domctl::pfinfo::LPINTAB as u64,
        ),
        ("XEN_DOMCTL_PFINFO_XTAB", abi::domctl::pfinfo::XTAB as u64),
        (
            "XEN_DOMCTL_PFINFO_XALLOC",
            abi::domctl::pfinfo::XALLOC as u64,
        ),
        (
            "XEN_DOMCTL_PFINFO_BROKEN",
            abi::domctl::pfinfo::BROKEN as u64,
        ),
        (
            "XEN_DOMCTL_PFINFO_LTAB_MASK",
            abi::domctl::pfinfo::LTAB_MASK as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_OFF",
            abi::domctl::shadow::OP_OFF as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_ENABLE",
            abi::domctl::shadow::OP_ENABLE as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_CLEAN",
            abi::domctl::shadow::OP_CLEAN as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_PEEK",
            abi::domctl::shadow::OP_PEEK as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_GET_ALLOCATION",
            abi::domctl::shadow::OP_GET_ALLOCATION as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_SET_ALLOCATION",
            abi::domctl::shadow::OP_SET_ALLOCATION as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_ENABLE_TEST",
            abi::domctl::shadow::OP_ENABLE_TEST as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY",
            abi::domctl::shadow::OP_ENABLE_LOGDIRTY as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_REFCOUNT",
            abi::domctl::shadow::ENABLE_REFCOUNT as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_LOG_DIRTY",
            abi::domctl::shadow::ENABLE_LOG_DIRTY as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_TRANSLATE",
            abi::domctl::shadow::ENABLE_TRANSLATE as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_EXTERNAL",
            abi::domctl::shadow::ENABLE_EXTERNAL as u64,
        ),
        (
            "XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL",
            abi::domctl::shadow::LOGDIRTY_FINAL as u64,
        ),
        (
            "XEN_SYSCTL_INTERFACE_VERSION",
            abi::sysctl::XEN_SYSCTL_INTERFACE_VERSION as u64,
        ),
        (
            "XEN_SYSCTL_readconsole",
            abi::sysctl::cmd::READCONSOLE as u64,
        ),
        ("XEN_SYSCTL_tbuf_op", abi::sysctl::cmd::TBUF_OP as u64),
        ("XEN_SYSCTL_physinfo", abi::sysctl::cmd::PHYSINFO as u64),
        ("XEN_SYSCTL_sched_id", abi::sysctl::cmd::SCHED_ID as u64),
        ("XEN_SYSCTL_perfc_op", abi::sysctl::cmd::PERFC_OP as u64),
        (
            "XEN_SYSCTL_getdomaininfolist",
            abi::sysctl::cmd::GETDOMAININFOLIST as u64,
        ),
        ("XEN_SYSCTL_debug_keys", abi::sysctl::cmd::DEBUG_KEYS as u64),
        ("XEN_SYSCTL_getcpuinfo", abi::sysctl::cmd::GETCPUINFO as u64),
        ("XEN_SYSCTL_availheap", abi::sysctl::cmd::AVAILHEAP as u64),
        ("XEN_SYSCTL_get_pmstat", abi::sysctl::cmd::GET_PMSTAT as u64),
        (
            "XEN_SYSCTL_cpu_hotplug",
            abi::sysctl::cmd::CPU_HOTPLUG as u64,
        ),
        ("XEN_SYSCTL_pm_op", abi::sysctl::cmd::PM_OP as u64),
        (
            "XEN_SYSCTL_page_offline_op",
            abi::sysctl::cmd::PAGE_OFFLINE_OP as u64,
        ),
        (
            "XEN_SYSCTL_lockprof_op",
            abi::sysctl::cmd::LOCKPROF_OP as u64,
        ),
        (
            "XEN_SYSCTL_cputopoinfo",
            abi::sysctl::cmd::CPUTOPOINFO as u64,
        ),
        ("XEN_SYSCTL_numainfo", abi::sysctl::cmd::NUMAINFO as u64),
        ("XEN_SYSCTL_cpupool_op", abi::sysctl::cmd::CPUPOOL_OP as u64),
        (
            "XEN_SYSCTL_scheduler_op",
            abi::sysctl::cmd::SCHEDULER_OP as u64,
        ),
        (
            "XEN_SYSCTL_coverage_op",
            abi::sysctl::cmd::COVERAGE_OP as u64,
        ),
        ("XEN_SYSCTL_psr_cmt_op", abi::sysctl::cmd::PSR_CMT_OP as u64),
        (
            "XEN_SYSCTL_pcitopoinfo",
            abi::sysctl::cmd::PCITOPOINFO as u64,
        ),
        ("XEN_SYSCTL_psr_alloc", abi::sysctl::cmd::PSR_ALLOC as u64),
        (
            "XEN_SYSCTL_get_cpu_levelling_caps",
            abi::sysctl::cmd::GET_CPU_LEVELLING_CAPS as u64,
        ),
        (
            "XEN_SYSCTL_get_cpu_featureset",
            abi::sysctl::cmd::GET_CPU_FEATURESET as u64,
        ),
        (
            "XEN_SYSCTL_livepatch_op",
            abi::sysctl::cmd::LIVEPATCH_OP as u64,
        ),
        (
            "XEN_SYSCTL_get_cpu_policy",
            abi::sysctl::cmd::GET_CPU_POLICY as u64,
        ),
        ("XEN_SYSCTL_PHYSCAP_hvm", abi::sysctl::physcap::HVM as u64),
        ("XEN_SYSCTL_PHYSCAP_pv", abi::sysctl::physcap::PV as u64),
        (
            "XEN_SYSCTL_PHYSCAP_directio",
            abi::sysctl::physcap::DIRECTIO as u64,
        ),
        ("XEN_SYSCTL_PHYSCAP_hap", abi::sysctl::physcap::HAP as u64),
        (
            "XEN_SYSCTL_PHYSCAP_shadow",
            abi::sysctl::physcap::SHADOW as u64,
        ),
        (
            "XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share",
            abi::sysctl::physcap::IOMMU_HAP_PT_SHARE as u64,
        ),
        (
            "XEN_SYSCTL_PHYSCAP_vmtrace",
            abi::sysctl::physcap::VMTRACE as u64,
        ),
        ("XEN_SYSCTL_PHYSCAP_vpmu", abi::sysctl::physcap::VPMU as u64),
        (
            "XEN_SYSCTL_PHYSCAP_gnttab_v1",
            abi::sysctl::physcap::GNTTAB_V1 as u64,
        ),
        (
            "XEN_SYSCTL_PHYSCAP_gnttab_v2",
            abi::sysctl::physcap::GNTTAB_V2 as u64,
        ),
        (
            "XENMEM_increase_reservation",
            abi::memory::cmd::INCREASE_RESERVATION as u64,
        ),
        (
            "XENMEM_decrease_reservation",
            abi::memory::cmd::DECREASE_RESERVATION as u64,
        ),
        (
            "XENMEM_maximum_ram_page",
            abi::memory::cmd::MAXIMUM_RAM_PAGE as u64,
        ),
        (
            "XENMEM_current_reservation",
            abi::memory::cmd::CURRENT_RESERVATION as u64,
        ),
        (
            "XENMEM_maximum_reservation",
            abi::memory::cmd::MAXIMUM_RESERVATION as u64,
        ),
        (
            "XENMEM_machphys_mfn_list",
            abi::memory::cmd::MACHPHYS_MFN_LIST as u64,
        ),
        (
            "XENMEM_populate_physmap",
            abi::memory::cmd::POPULATE_PHYSMAP as u64,
        ),
        ("XENMEM_memory_map", abi::memory::cmd::MEMORY_MAP as u64),
        ("XENMEM_maximum_gpfn", abi::memory::cmd::MAXIMUM_GPFN as u64),
        (
            "XENMEMF_populate_on_demand",
            abi::memory::memf::POPULATE_ON_DEMAND as u64,
        ),
        (
            "XENMEMF_exact_node_request",
            abi::memory::memf::EXACT_NODE_REQUEST as u64,
        ),
        ("XENMEMF_vnode", abi::memory::memf::VNODE as u64),
        (
            "__HYPERVISOR_mmu_update",
            abi::xen::hypercall::MMU_UPDATE as u64,
        ),
        (
            "__HYPERVISOR_memory_op",
            abi::xen::hypercall::MEMORY_OP as u64,
        ),
        (
            "__HYPERVISOR_xen_version",
            abi::xen::hypercall::XEN_VERSION as u64,
        ),
        (
            "__HYPERVISOR_mmuext_op",
            abi::xen::hypercall::MMUEXT_OP as u64,
        ),
        (
            "__HYPERVISOR_sched_op",
            abi::xen::hypercall::SCHED_OP as u64,
        ),
        (
            "__HYPERVISOR_event_channel_op",
            abi::xen::hypercall::EVENT_CHANNEL_OP as u64,
        ),
        ("__HYPERVISOR_hvm_op", abi::xen::hypercall::HVM_OP as u64),
        ("__HYPERVISOR_sysctl", abi::xen::hypercall::SYSCTL as u64),
        ("__HYPERVISOR_domctl", abi::xen::hypercall::DOMCTL as u64),
        (
            "DOMID_FIRST_RESERVED",
            abi::xen::DOMID_FIRST_RESERVED as u64,
        ),
        ("DOMID_SELF", abi::xen::DOMID_SELF as u64),
        ("DOMID_IO", abi::xen::DOMID_IO as u64),
        ("DOMID_XEN", abi::xen::DOMID_XEN as u64),
        ("DOMID_COW", abi::xen::DOMID_COW as u64),
        ("DOMID_INVALID", abi::xen::DOMID_INVALID as u64),
        ("DOMID_IDLE", abi::xen::DOMID_IDLE as u64),
        (
            "MMU_NORMAL_PT_UPDATE",
            abi::xen::mmu::NORMAL_PT_UPDATE as u64,
        ),
        ("MMU_MACHPHYS_UPDATE", abi::xen::mmu::MACHPHYS_UPDATE as u64),
        (
            "MMU_PT_UPDATE_PRESERVE_AD",
            abi::xen::mmu::PT_UPDATE_PRESERVE_AD as u64,
        ),
        (
            "MMU_PT_UPDATE_NO_TRANSLATE",
            abi::xen::mmu::PT_UPDATE_NO_TRANSLATE as u64,
        ),
        ("MMUEXT_PIN_L1_TABLE", abi::xen::mmuext::PIN_L1_TABLE as u64),
        ("MMUEXT_PIN_L2_TABLE", abi::xen::mmuext::PIN_L2_TABLE as u64),
        ("MMUEXT_PIN_L3_TABLE", abi::xen::mmuext::PIN_L3_TABLE as u64),
        ("MMUEXT_PIN_L4_TABLE", abi::xen::mmuext::PIN_L4_TABLE as u64),
        ("MMUEXT_UNPIN_TABLE", abi::xen::mmuext::UNPIN_TABLE as u64),
        ("MMUEXT_NEW_BASEPTR", abi::xen::mmuext::NEW_BASEPTR as u64),
        (
            "MMUEXT_TLB_FLUSH_LOCAL",
            abi::xen::mmuext::TLB_FLUSH_LOCAL as u64,
        ),
        ("MMUEXT_INVLPG_LOCAL", abi::xen::mmuext::INVLPG_LOCAL as u64),
        (
            "MMUEXT_TLB_FLUSH_MULTI",
            abi::xen::mmuext::TLB_FLUSH_MULTI as u64,
        ),
        ("MMUEXT_INVLPG_MULTI", abi::xen::mmuext::INVLPG_MULTI as u64),
        (
            "MMUEXT_TLB_FLUSH_ALL",
            abi::xen::mmuext::TLB_FLUSH_ALL as u64,
        ),
        ("MMUEXT_INVLPG_ALL", abi::xen::mmuext::INVLPG_ALL as u64),
        ("MMUEXT_FLUSH_CACHE", abi::xen::mmuext::FLUSH_CACHE as u64),
        ("MMUEXT_SET_LDT", abi::xen::mmuext::SET_LDT as u64),
        (
            "MMUEXT_NEW_USER_BASEPTR",
            abi::xen::mmuext::NEW_USER_BASEPTR as u64,
        ),
        ("MMUEXT_CLEAR_PAGE", abi::xen::mmuext::CLEAR_PAGE as u64),
        ("MMUEXT_COPY_PAGE", abi::xen::mmuext::COPY_PAGE as u64),
        (
            "MMUEXT_FLUSH_CACHE_GLOBAL",
            abi::xen::mmuext::FLUSH_CACHE_GLOBAL as u64,
        ),
        ("MMUEXT_MARK_SUPER", abi::xen::mmuext::MARK_SUPER as u64),
        ("MMUEXT_UNMARK_SUPER", abi::xen::mmuext::UNMARK_SUPER as u64),
        ("VGCF_i387_valid", abi::xen::vgcf::I387_VALID as u64),
        ("VGCF_in_kernel", abi::xen::vgcf::IN_KERNEL as u64),
        (
            "VGCF_failsafe_disables_events",
            abi::xen::vgcf::FAILSAFE_DISABLES_EVENTS as u64,
        ),
        (
            "VGCF_syscall_disables_events",
            abi::xen::vgcf::SYSCALL_DISABLES_EVENTS as u64,
        ),
        ("VGCF_online", abi::xen::vgcf::ONLINE as u64),
        ("XEN_X86_EMU_LAPIC", abi::xen::x86_emu::LAPIC as u64),
        ("XEN_X86_EMU_HPET", abi::xen::x86_emu::HPET as u64),
        ("XEN_X86_EMU_PM", abi::xen::x86_emu::PM as u64),
        ("XEN_X86_EMU_RTC", abi::xen::x86_emu::RTC as u64),
        ("XEN_X86_EMU_IOAPIC", abi::xen::x86_emu::IOAPIC as u64),
        ("XEN_X86_EMU_PIC", abi::xen::x86_emu::PIC as u64),
        ("XEN_X86_EMU_VGA", abi::xen::x86_emu::VGA as u64),
        ("XEN_X86_EMU_IOMMU", abi::xen::x86_emu::IOMMU as u64),
        ("XEN_X86_EMU_PIT", abi::xen::x86_emu::PIT as u64),
        ("XEN_X86_EMU_USE_PIRQ", abi::xen::x86_emu::USE_PIRQ as u64),
        ("XEN_X86_EMU_VPCI", abi::xen::x86_emu::VPCI as u64),
        ("XEN_X86_MSR_RELAXED", abi::xen::x86_emu::MSR_RELAXED as u64),
        (
            "XEN_CPUID_NO_SUBLEAF",
            abi::xen::XEN_CPUID_NO_SUBLEAF as u64,
        ),
        ("SHUTDOWN_poweroff", abi::xen::shutdown::POWEROFF as u64),
        ("SHUTDOWN_reboot", abi::xen::shutdown::REBOOT as u64),
        ("SHUTDOWN_suspend", abi::xen::shutdown::SUSPEND as u64),
        ("SHUTDOWN_crash", abi::xen::shutdown::CRASH as u64),
        ("SHUTDOWN_watchdog", abi::xen::shutdown::WATCHDOG as u64),
        ("SHUTDOWN_soft_reset", abi::xen::shutdown::SOFT_RESET as u64),
        (
            "IOCTL_PRIVCMD_HYPERCALL",
            abi::privcmd::IOCTL_PRIVCMD_HYPERCALL as u64,
        ),
        (
            "IOCTL_PRIVCMD_MMAPBATCH_V2",
            abi::privcmd::IOCTL_PRIVCMD_MMAPBATCH_V2 as u64,
        ),
    ]
}

const HEADERS: &[&str] = &[
    "xen/xen.h",
    "xen/domctl.h",
    "xen/sysctl.h",
    "xen/memory.h",
    "xen/sched.h",
    "xen/sys/privcmd.h",
];

/// Makes sure Debian's libxen-dev headers are there: installs them when
/// running as root, fails with instructions otherwise.
fn ensure_headers() {
    let missing = || {
        HEADERS
            .iter()
            .any(|h| !Path::new("/usr/include").join(h).exists())
    };
    if !missing() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if root {
        eprintln!("abi_layout: Xen headers missing; installing libxen-dev with apt-get");
        let ok = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !ok(&["install", "-y", "libxen-dev"]) {
            // A stale package index is the usual cause.
            let _ = ok(&["update"]);
            let _ = ok(&["install", "-y", "libxen-dev"]);
        }
    }
    assert!(
        !missing(),
        "Xen's C headers ({}) are not in /usr/include, and they could not be installed here. \
         Install them with `sudo apt-get install libxen-dev` (Debian/Ubuntu) and run the test again.",
        HEADERS.join(", ")
    );
}

fn c_program(layouts: &[Layout], consts: &[(&str, u64)]) -> String {
    let mut c = String::from(
        "#define __XEN_TOOLS__ 1\n#include <stddef.h>\n#include <stdio.h>\n#include <stdint.h>\n\
         #include <sys/ioctl.h>\n",
    );
    for h in HEADERS {
        let _ = writeln!(c, "#include <{h}>");
    }
    c.push_str("int main(void) {\n");
    for l in layouts {
        let t = l.c_type;
        let _ = writeln!(c, "  printf(\"size {t} %zu\\n\", sizeof({t}));");
        for f in &l.fields {
            let _ = writeln!(
                c,
                "  printf(\"field {t}.{f} %zu %zu\\n\", offsetof({t}, {f}), sizeof((({t} *)0)->{f}));",
                f = f.c
            );
        }
    }
    for (name, _) in consts {
        let _ = writeln!(
            c,
            "  printf(\"const {name} %llu\\n\", (unsigned long long)({name}));"
        );
    }
    c.push_str("  return 0;\n}\n");
    c
}

fn run_c(src: &str) -> BTreeMap<String, Vec<u64>> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("abi_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let (c_file, exe) = (dir.join("layout.c"), dir.join("layout"));
    std::fs::write(&c_file, src).unwrap();
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-o"])
        .arg(&exe)
        .arg(&c_file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `cc` ({e}): install a C compiler (`apt-get install gcc`)")
        });
    assert!(
        out.status.success(),
        "cc failed on {}:\n{}",
        c_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let kind = words.next().unwrap();
        let mut key = String::new();
        // C type names may contain a space ("struct x"): the numbers are the
        // trailing words.
        let rest: Vec<&str> = words.collect();
        let nums: Vec<u64> = rest
            .iter()
            .rev()
            .map_while(|w| w.parse().ok())
            .collect::<Vec<_>>();
        let name_words = rest.len() - nums.len();
        key.push_str(kind);
        key.push(' ');
        key.push_str(&rest[..name_words].join(" "));
        map.insert(key, nums.into_iter().rev().collect());
    }
    map
}

#[test]
fn rust_mirrors_match_the_c_headers() {
    ensure_headers();
    let layouts = layouts();
    let consts = constants();
    let c = run_c(&c_program(&layouts, &consts));
    let mut errors = Vec::new();
    let mut checked = 0;
    for l in &layouts {
        let t = l.c_type;
        let c_size = c[&format!("size {t}")][0] as usize;
        if c_size != l.size {
            errors.push(format!(
                "{}: size {} but C's {t} is {c_size}",
                l.rust, l.size
            ));
        }
        for f in &l.fields {
            let v = &c[&format!("field {t}.{}", f.c)];
            if (v[0] as usize, v[1] as usize) != (f.offset, f.size) {
                errors.push(format!(
                    "{}.{}: offset {} size {}, but C's {t}.{} has offset {} size {}",
                    l.rust, f.rust, f.offset, f.size, f.c, v[0], v[1]
                ));
            }
            checked += 1;
        }
        // The Rust fields tile the structure: no byte unaccounted for.
        let mut spans: Vec<(usize, usize, &str)> = l
            .fields
            .iter()
            .map(|f| (f.offset, f.size, f.rust))
            .collect();
        spans.extend(l.implicit.iter().map(|&(n, o, s)| (o, s, n)));
        spans.sort();
        let mut at = 0;
        for (o, s, n) in spans {
            if o != at {
                errors.push(format!(
                    "{}: field {n} at {o}, expected {at} (a field is missing)",
                    l.rust
                ));
            }
            at = o + s;
        }
        if at != l.size {
            errors.push(format!(
                "{}: fields end at {at}, size is {}",
                l.rust, l.size
            ));
        }
    }
    for (name, v) in &consts {
        let cv = c[&format!("const {name}")][0];
        if cv != *v {
            errors.push(format!("{name}: Rust {v:#x}, C {cv:#x}"));
        }
    }
    assert!(errors.is_empty(), "ABI mismatches:\n{}", errors.join("\n"));
    eprintln!(
        "abi_layout: {} structures, {checked} fields, {} constants match",
        layouts.len(),
        consts.len()
    );
}
