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

use relocd_hypercall::abi::{
    self, domctl::*, evtchn::*, grant_table::*, memory::*, privcmd::*, sysctl::*, xen::*,
};
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
        layout!("struct xen_domctl_setdomainhandle" => SetDomainHandle { "handle" => handle }),
        layout!("struct xen_domctl_sched_credit" => SchedCredit { "weight" => weight, "cap" => cap }),
        layout!("struct xen_domctl_sched_credit2" => SchedCredit { "weight" => weight, "cap" => cap }),
        layout!("struct xen_domctl_scheduler_op" => SchedulerOp {
            "sched_id" => sched_id, "cmd" => cmd, "u" => u,
        }),
        layout!("struct hvm_vmce_vcpu" => HvmVmceVcpu {
            "caps" => caps, "mci_ctl2_bank0" => mci_ctl2_bank0,
            "mci_ctl2_bank1" => mci_ctl2_bank1, "mcg_ext_ctl" => mcg_ext_ctl,
        }),
        layout!("struct xen_domctl_ext_vcpucontext" => ExtVcpuContextRaw {
            "vcpu" => vcpu, "size" => size, "syscall32_callback_eip" => syscall32_callback_eip,
            "sysenter_callback_eip" => sysenter_callback_eip,
            "syscall32_callback_cs" => syscall32_callback_cs,
            "sysenter_callback_cs" => sysenter_callback_cs,
            "syscall32_disables_events" => syscall32_disables_events,
            "sysenter_disables_events" => sysenter_disables_events, "vmce" => vmce,
        } pad { _pad0 }),
        layout!("struct xen_domctl_vcpu_msr" => VcpuMsr {
            "index" => index, "reserved" => reserved, "value" => value,
        }),
        layout!("struct xen_domctl_vcpu_msrs" => VcpuMsrs {
            "vcpu" => vcpu, "msr_count" => msr_count, "msrs" => msrs,
        }),
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
        layout!("struct evtchn_alloc_unbound" => EvtchnAllocUnbound {
            "dom" => dom, "remote_dom" => remote_dom, "port" => port,
        }),
        layout!("struct evtchn_close" => EvtchnClose { "port" => port }),
        layout!("struct gnttab_setup_table" => GnttabSetupTable {
            "dom" => dom, "nr_frames" => nr_frames, "status" => status,
            "frame_list" => frame_list,
        } pad { _pad0, _pad1 }),
        layout!("grant_entry_v1_t" => GrantEntryV1 {
            "flags" => flags, "domid" => domid, "frame" => frame,
        }),
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
        ("IOCTL_PRIVCMD_HYPERCALL", u(IOCTL_PRIVCMD_HYPERCALL)),
        ("IOCTL_PRIVCMD_MMAPBATCH_V2", u(IOCTL_PRIVCMD_MMAPBATCH_V2)),
        ("XEN_X86_MSR_RELAXED", u(abi::xen::x86_emu::MSR_RELAXED)),
        (
            "XEN_DOMCTL_INTERFACE_VERSION",
            u(abi::domctl::XEN_DOMCTL_INTERFACE_VERSION),
        ),
        ("XEN_DOMCTL_createdomain", u(abi::domctl::cmd::CREATEDOMAIN)),
        (
            "XEN_DOMCTL_destroydomain",
            u(abi::domctl::cmd::DESTROYDOMAIN),
        ),
        ("XEN_DOMCTL_pausedomain", u(abi::domctl::cmd::PAUSEDOMAIN)),
        (
            "XEN_DOMCTL_unpausedomain",
            u(abi::domctl::cmd::UNPAUSEDOMAIN),
        ),
        (
            "XEN_DOMCTL_getdomaininfo",
            u(abi::domctl::cmd::GETDOMAININFO),
        ),
        (
            "XEN_DOMCTL_setvcpuaffinity",
            u(abi::domctl::cmd::SETVCPUAFFINITY),
        ),
        ("XEN_DOMCTL_shadow_op", u(abi::domctl::cmd::SHADOW_OP)),
        ("XEN_DOMCTL_max_mem", u(abi::domctl::cmd::MAX_MEM)),
        (
            "XEN_DOMCTL_setvcpucontext",
            u(abi::domctl::cmd::SETVCPUCONTEXT),
        ),
        (
            "XEN_DOMCTL_getvcpucontext",
            u(abi::domctl::cmd::GETVCPUCONTEXT),
        ),
        ("XEN_DOMCTL_getvcpuinfo", u(abi::domctl::cmd::GETVCPUINFO)),
        ("XEN_DOMCTL_max_vcpus", u(abi::domctl::cmd::MAX_VCPUS)),
        ("XEN_DOMCTL_scheduler_op", u(abi::domctl::cmd::SCHEDULER_OP)),
        (
            "XEN_DOMCTL_setdomainhandle",
            u(abi::domctl::cmd::SETDOMAINHANDLE),
        ),
        ("XEN_DOMCTL_setdebugging", u(abi::domctl::cmd::SETDEBUGGING)),
        (
            "XEN_DOMCTL_irq_permission",
            u(abi::domctl::cmd::IRQ_PERMISSION),
        ),
        (
            "XEN_DOMCTL_iomem_permission",
            u(abi::domctl::cmd::IOMEM_PERMISSION),
        ),
        (
            "XEN_DOMCTL_ioport_permission",
            u(abi::domctl::cmd::IOPORT_PERMISSION),
        ),
        (
            "XEN_DOMCTL_hypercall_init",
            u(abi::domctl::cmd::HYPERCALL_INIT),
        ),
        (
            "XEN_DOMCTL_settimeoffset",
            u(abi::domctl::cmd::SETTIMEOFFSET),
        ),
        (
            "XEN_DOMCTL_getvcpuaffinity",
            u(abi::domctl::cmd::GETVCPUAFFINITY),
        ),
        (
            "XEN_DOMCTL_real_mode_area",
            u(abi::domctl::cmd::REAL_MODE_AREA),
        ),
        ("XEN_DOMCTL_resumedomain", u(abi::domctl::cmd::RESUMEDOMAIN)),
        ("XEN_DOMCTL_sendtrigger", u(abi::domctl::cmd::SENDTRIGGER)),
        ("XEN_DOMCTL_subscribe", u(abi::domctl::cmd::SUBSCRIBE)),
        (
            "XEN_DOMCTL_gethvmcontext",
            u(abi::domctl::cmd::GETHVMCONTEXT),
        ),
        (
            "XEN_DOMCTL_sethvmcontext",
            u(abi::domctl::cmd::SETHVMCONTEXT),
        ),
        (
            "XEN_DOMCTL_set_address_size",
            u(abi::domctl::cmd::SET_ADDRESS_SIZE),
        ),
        (
            "XEN_DOMCTL_get_address_size",
            u(abi::domctl::cmd::GET_ADDRESS_SIZE),
        ),
        (
            "XEN_DOMCTL_assign_device",
            u(abi::domctl::cmd::ASSIGN_DEVICE),
        ),
        ("XEN_DOMCTL_bind_pt_irq", u(abi::domctl::cmd::BIND_PT_IRQ)),
        (
            "XEN_DOMCTL_memory_mapping",
            u(abi::domctl::cmd::MEMORY_MAPPING),
        ),
        (
            "XEN_DOMCTL_ioport_mapping",
            u(abi::domctl::cmd::IOPORT_MAPPING),
        ),
        (
            "XEN_DOMCTL_set_ext_vcpucontext",
            u(abi::domctl::cmd::SET_EXT_VCPUCONTEXT),
        ),
        (
            "XEN_DOMCTL_get_ext_vcpucontext",
            u(abi::domctl::cmd::GET_EXT_VCPUCONTEXT),
        ),
        (
            "XEN_DOMCTL_set_opt_feature",
            u(abi::domctl::cmd::SET_OPT_FEATURE),
        ),
        (
            "XEN_DOMCTL_test_assign_device",
            u(abi::domctl::cmd::TEST_ASSIGN_DEVICE),
        ),
        ("XEN_DOMCTL_set_target", u(abi::domctl::cmd::SET_TARGET)),
        (
            "XEN_DOMCTL_deassign_device",
            u(abi::domctl::cmd::DEASSIGN_DEVICE),
        ),
        (
            "XEN_DOMCTL_unbind_pt_irq",
            u(abi::domctl::cmd::UNBIND_PT_IRQ),
        ),
        (
            "XEN_DOMCTL_get_device_group",
            u(abi::domctl::cmd::GET_DEVICE_GROUP),
        ),
        ("XEN_DOMCTL_debug_op", u(abi::domctl::cmd::DEBUG_OP)),
        (
            "XEN_DOMCTL_gethvmcontext_partial",
            u(abi::domctl::cmd::GETHVMCONTEXT_PARTIAL),
        ),
        ("XEN_DOMCTL_vm_event_op", u(abi::domctl::cmd::VM_EVENT_OP)),
        (
            "XEN_DOMCTL_mem_sharing_op",
            u(abi::domctl::cmd::MEM_SHARING_OP),
        ),
        ("XEN_DOMCTL_gettscinfo", u(abi::domctl::cmd::GETTSCINFO)),
        ("XEN_DOMCTL_settscinfo", u(abi::domctl::cmd::SETTSCINFO)),
        (
            "XEN_DOMCTL_getpageframeinfo3",
            u(abi::domctl::cmd::GETPAGEFRAMEINFO3),
        ),
        (
            "XEN_DOMCTL_setvcpuextstate",
            u(abi::domctl::cmd::SETVCPUEXTSTATE),
        ),
        (
            "XEN_DOMCTL_getvcpuextstate",
            u(abi::domctl::cmd::GETVCPUEXTSTATE),
        ),
        (
            "XEN_DOMCTL_set_access_required",
            u(abi::domctl::cmd::SET_ACCESS_REQUIRED),
        ),
        ("XEN_DOMCTL_audit_p2m", u(abi::domctl::cmd::AUDIT_P2M)),
        (
            "XEN_DOMCTL_set_virq_handler",
            u(abi::domctl::cmd::SET_VIRQ_HANDLER),
        ),
        (
            "XEN_DOMCTL_set_broken_page_p2m",
            u(abi::domctl::cmd::SET_BROKEN_PAGE_P2M),
        ),
        (
            "XEN_DOMCTL_setnodeaffinity",
            u(abi::domctl::cmd::SETNODEAFFINITY),
        ),
        (
            "XEN_DOMCTL_getnodeaffinity",
            u(abi::domctl::cmd::GETNODEAFFINITY),
        ),
        ("XEN_DOMCTL_cacheflush", u(abi::domctl::cmd::CACHEFLUSH)),
        (
            "XEN_DOMCTL_get_vcpu_msrs",
            u(abi::domctl::cmd::GET_VCPU_MSRS),
        ),
        (
            "XEN_DOMCTL_set_vcpu_msrs",
            u(abi::domctl::cmd::SET_VCPU_MSRS),
        ),
        ("XEN_DOMCTL_setvnumainfo", u(abi::domctl::cmd::SETVNUMAINFO)),
        ("XEN_DOMCTL_psr_cmt_op", u(abi::domctl::cmd::PSR_CMT_OP)),
        ("XEN_DOMCTL_monitor_op", u(abi::domctl::cmd::MONITOR_OP)),
        ("XEN_DOMCTL_psr_alloc", u(abi::domctl::cmd::PSR_ALLOC)),
        ("XEN_DOMCTL_soft_reset", u(abi::domctl::cmd::SOFT_RESET)),
        ("XEN_DOMCTL_vuart_op", u(abi::domctl::cmd::VUART_OP)),
        (
            "XEN_DOMCTL_get_cpu_policy",
            u(abi::domctl::cmd::GET_CPU_POLICY),
        ),
        (
            "XEN_DOMCTL_set_cpu_policy",
            u(abi::domctl::cmd::SET_CPU_POLICY),
        ),
        ("XEN_DOMCTL_vmtrace_op", u(abi::domctl::cmd::VMTRACE_OP)),
        (
            "XEN_DOMCTL_get_paging_mempool_size",
            u(abi::domctl::cmd::GET_PAGING_MEMPOOL_SIZE),
        ),
        (
            "XEN_DOMCTL_set_paging_mempool_size",
            u(abi::domctl::cmd::SET_PAGING_MEMPOOL_SIZE),
        ),
        (
            "XEN_DOMCTL_gdbsx_guestmemio",
            u(abi::domctl::cmd::GDBSX_GUESTMEMIO),
        ),
        (
            "XEN_DOMCTL_gdbsx_pausevcpu",
            u(abi::domctl::cmd::GDBSX_PAUSEVCPU),
        ),
        (
            "XEN_DOMCTL_gdbsx_unpausevcpu",
            u(abi::domctl::cmd::GDBSX_UNPAUSEVCPU),
        ),
        (
            "XEN_DOMCTL_gdbsx_domstatus",
            u(abi::domctl::cmd::GDBSX_DOMSTATUS),
        ),
        ("XEN_DOMCTL_CDF_hvm", u(abi::domctl::cdf::HVM)),
        ("XEN_DOMCTL_CDF_hap", u(abi::domctl::cdf::HAP)),
        (
            "XEN_DOMCTL_CDF_s3_integrity",
            u(abi::domctl::cdf::S3_INTEGRITY),
        ),
        ("XEN_DOMCTL_CDF_oos_off", u(abi::domctl::cdf::OOS_OFF)),
        ("XEN_DOMCTL_CDF_xs_domain", u(abi::domctl::cdf::XS_DOMAIN)),
        ("XEN_DOMCTL_CDF_iommu", u(abi::domctl::cdf::IOMMU)),
        (
            "XEN_DOMCTL_CDF_nested_virt",
            u(abi::domctl::cdf::NESTED_VIRT),
        ),
        ("XEN_DOMCTL_CDF_vpmu", u(abi::domctl::cdf::VPMU)),
        ("XEN_DOMINF_dying", u(abi::domctl::dominf::DYING)),
        ("XEN_DOMINF_hvm_guest", u(abi::domctl::dominf::HVM_GUEST)),
        ("XEN_DOMINF_shutdown", u(abi::domctl::dominf::SHUTDOWN)),
        ("XEN_DOMINF_paused", u(abi::domctl::dominf::PAUSED)),
        ("XEN_DOMINF_blocked", u(abi::domctl::dominf::BLOCKED)),
        ("XEN_DOMINF_running", u(abi::domctl::dominf::RUNNING)),
        ("XEN_DOMINF_debugged", u(abi::domctl::dominf::DEBUGGED)),
        ("XEN_DOMINF_xs_domain", u(abi::domctl::dominf::XS_DOMAIN)),
        ("XEN_DOMINF_hap", u(abi::domctl::dominf::HAP)),
        (
            "XEN_DOMINF_shutdownmask",
            u(abi::domctl::dominf::SHUTDOWN_MASK),
        ),
        (
            "XEN_DOMINF_shutdownshift",
            u(abi::domctl::dominf::SHUTDOWN_SHIFT),
        ),
        (
            "XEN_INVALID_MAX_VCPU_ID",
            u(abi::domctl::XEN_INVALID_MAX_VCPU_ID),
        ),
        (
            "XEN_DOMCTL_PFINFO_LTAB_SHIFT",
            u(abi::domctl::pfinfo::LTAB_SHIFT),
        ),
        ("XEN_DOMCTL_PFINFO_NOTAB", u(abi::domctl::pfinfo::NOTAB)),
        ("XEN_DOMCTL_PFINFO_L1TAB", u(abi::domctl::pfinfo::L1TAB)),
        ("XEN_DOMCTL_PFINFO_L2TAB", u(abi::domctl::pfinfo::L2TAB)),
        ("XEN_DOMCTL_PFINFO_L3TAB", u(abi::domctl::pfinfo::L3TAB)),
        ("XEN_DOMCTL_PFINFO_L4TAB", u(abi::domctl::pfinfo::L4TAB)),
        (
            "XEN_DOMCTL_PFINFO_LTABTYPE_MASK",
            u(abi::domctl::pfinfo::LTABTYPE_MASK),
        ),
        ("XEN_DOMCTL_PFINFO_LPINTAB", u(abi::domctl::pfinfo::LPINTAB)),
        ("XEN_DOMCTL_PFINFO_XTAB", u(abi::domctl::pfinfo::XTAB)),
        ("XEN_DOMCTL_PFINFO_XALLOC", u(abi::domctl::pfinfo::XALLOC)),
        ("XEN_DOMCTL_PFINFO_BROKEN", u(abi::domctl::pfinfo::BROKEN)),
        (
            "XEN_DOMCTL_PFINFO_LTAB_MASK",
            u(abi::domctl::pfinfo::LTAB_MASK),
        ),
        ("XEN_DOMCTL_SHADOW_OP_OFF", u(abi::domctl::shadow::OP_OFF)),
        (
            "XEN_DOMCTL_SHADOW_OP_ENABLE",
            u(abi::domctl::shadow::OP_ENABLE),
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_CLEAN",
            u(abi::domctl::shadow::OP_CLEAN),
        ),
        ("XEN_DOMCTL_SHADOW_OP_PEEK", u(abi::domctl::shadow::OP_PEEK)),
        (
            "XEN_DOMCTL_SHADOW_OP_GET_ALLOCATION",
            u(abi::domctl::shadow::OP_GET_ALLOCATION),
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_SET_ALLOCATION",
            u(abi::domctl::shadow::OP_SET_ALLOCATION),
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_ENABLE_TEST",
            u(abi::domctl::shadow::OP_ENABLE_TEST),
        ),
        (
            "XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY",
            u(abi::domctl::shadow::OP_ENABLE_LOGDIRTY),
        ),
        ("XEN_SCHEDULER_CREDIT", u(abi::domctl::sched::CREDIT)),
        ("XEN_SCHEDULER_CREDIT2", u(abi::domctl::sched::CREDIT2)),
        ("XEN_SCHEDULER_ARINC653", u(abi::domctl::sched::ARINC653)),
        ("XEN_SCHEDULER_RTDS", u(abi::domctl::sched::RTDS)),
        ("XEN_SCHEDULER_NULL", u(abi::domctl::sched::NULL)),
        (
            "XEN_DOMCTL_SCHEDOP_putinfo",
            u(abi::domctl::sched::OP_PUTINFO),
        ),
        (
            "XEN_DOMCTL_SCHEDOP_getinfo",
            u(abi::domctl::sched::OP_GETINFO),
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_REFCOUNT",
            u(abi::domctl::shadow::ENABLE_REFCOUNT),
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_LOG_DIRTY",
            u(abi::domctl::shadow::ENABLE_LOG_DIRTY),
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_TRANSLATE",
            u(abi::domctl::shadow::ENABLE_TRANSLATE),
        ),
        (
            "XEN_DOMCTL_SHADOW_ENABLE_EXTERNAL",
            u(abi::domctl::shadow::ENABLE_EXTERNAL),
        ),
        (
            "XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL",
            u(abi::domctl::shadow::LOGDIRTY_FINAL),
        ),
        (
            "XEN_SYSCTL_INTERFACE_VERSION",
            u(abi::sysctl::XEN_SYSCTL_INTERFACE_VERSION),
        ),
        ("XEN_SYSCTL_readconsole", u(abi::sysctl::cmd::READCONSOLE)),
        ("XEN_SYSCTL_tbuf_op", u(abi::sysctl::cmd::TBUF_OP)),
        ("XEN_SYSCTL_physinfo", u(abi::sysctl::cmd::PHYSINFO)),
        ("XEN_SYSCTL_sched_id", u(abi::sysctl::cmd::SCHED_ID)),
        ("XEN_SYSCTL_perfc_op", u(abi::sysctl::cmd::PERFC_OP)),
        (
            "XEN_SYSCTL_getdomaininfolist",
            u(abi::sysctl::cmd::GETDOMAININFOLIST),
        ),
        ("XEN_SYSCTL_debug_keys", u(abi::sysctl::cmd::DEBUG_KEYS)),
        ("XEN_SYSCTL_getcpuinfo", u(abi::sysctl::cmd::GETCPUINFO)),
        ("XEN_SYSCTL_availheap", u(abi::sysctl::cmd::AVAILHEAP)),
        ("XEN_SYSCTL_get_pmstat", u(abi::sysctl::cmd::GET_PMSTAT)),
        ("XEN_SYSCTL_cpu_hotplug", u(abi::sysctl::cmd::CPU_HOTPLUG)),
        ("XEN_SYSCTL_pm_op", u(abi::sysctl::cmd::PM_OP)),
        (
            "XEN_SYSCTL_page_offline_op",
            u(abi::sysctl::cmd::PAGE_OFFLINE_OP),
        ),
        ("XEN_SYSCTL_lockprof_op", u(abi::sysctl::cmd::LOCKPROF_OP)),
        ("XEN_SYSCTL_cputopoinfo", u(abi::sysctl::cmd::CPUTOPOINFO)),
        ("XEN_SYSCTL_numainfo", u(abi::sysctl::cmd::NUMAINFO)),
        ("XEN_SYSCTL_cpupool_op", u(abi::sysctl::cmd::CPUPOOL_OP)),
        ("XEN_SYSCTL_scheduler_op", u(abi::sysctl::cmd::SCHEDULER_OP)),
        ("XEN_SYSCTL_coverage_op", u(abi::sysctl::cmd::COVERAGE_OP)),
        ("XEN_SYSCTL_psr_cmt_op", u(abi::sysctl::cmd::PSR_CMT_OP)),
        ("XEN_SYSCTL_pcitopoinfo", u(abi::sysctl::cmd::PCITOPOINFO)),
        ("XEN_SYSCTL_psr_alloc", u(abi::sysctl::cmd::PSR_ALLOC)),
        (
            "XEN_SYSCTL_get_cpu_levelling_caps",
            u(abi::sysctl::cmd::GET_CPU_LEVELLING_CAPS),
        ),
        (
            "XEN_SYSCTL_get_cpu_featureset",
            u(abi::sysctl::cmd::GET_CPU_FEATURESET),
        ),
        ("XEN_SYSCTL_livepatch_op", u(abi::sysctl::cmd::LIVEPATCH_OP)),
        (
            "XEN_SYSCTL_get_cpu_policy",
            u(abi::sysctl::cmd::GET_CPU_POLICY),
        ),
        ("XEN_SYSCTL_PHYSCAP_hvm", u(abi::sysctl::physcap::HVM)),
        ("XEN_SYSCTL_PHYSCAP_pv", u(abi::sysctl::physcap::PV)),
        (
            "XEN_SYSCTL_PHYSCAP_directio",
            u(abi::sysctl::physcap::DIRECTIO),
        ),
        ("XEN_SYSCTL_PHYSCAP_hap", u(abi::sysctl::physcap::HAP)),
        ("XEN_SYSCTL_PHYSCAP_shadow", u(abi::sysctl::physcap::SHADOW)),
        (
            "XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share",
            u(abi::sysctl::physcap::IOMMU_HAP_PT_SHARE),
        ),
        (
            "XEN_SYSCTL_PHYSCAP_vmtrace",
            u(abi::sysctl::physcap::VMTRACE),
        ),
        ("XEN_SYSCTL_PHYSCAP_vpmu", u(abi::sysctl::physcap::VPMU)),
        (
            "XEN_SYSCTL_PHYSCAP_gnttab_v1",
            u(abi::sysctl::physcap::GNTTAB_V1),
        ),
        (
            "XEN_SYSCTL_PHYSCAP_gnttab_v2",
            u(abi::sysctl::physcap::GNTTAB_V2),
        ),
        (
            "XENMEM_increase_reservation",
            u(abi::memory::cmd::INCREASE_RESERVATION),
        ),
        (
            "XENMEM_decrease_reservation",
            u(abi::memory::cmd::DECREASE_RESERVATION),
        ),
        (
            "XENMEM_maximum_ram_page",
            u(abi::memory::cmd::MAXIMUM_RAM_PAGE),
        ),
        (
            "XENMEM_current_reservation",
            u(abi::memory::cmd::CURRENT_RESERVATION),
        ),
        (
            "XENMEM_maximum_reservation",
            u(abi::memory::cmd::MAXIMUM_RESERVATION),
        ),
        (
            "XENMEM_machphys_mfn_list",
            u(abi::memory::cmd::MACHPHYS_MFN_LIST),
        ),
        (
            "XENMEM_populate_physmap",
            u(abi::memory::cmd::POPULATE_PHYSMAP),
        ),
        ("XENMEM_memory_map", u(abi::memory::cmd::MEMORY_MAP)),
        ("XENMEM_maximum_gpfn", u(abi::memory::cmd::MAXIMUM_GPFN)),
        (
            "XENMEMF_populate_on_demand",
            u(abi::memory::memf::POPULATE_ON_DEMAND),
        ),
        (
            "XENMEMF_exact_node_request",
            u(abi::memory::memf::EXACT_NODE_REQUEST),
        ),
        ("XENMEMF_vnode", u(abi::memory::memf::VNODE)),
        (
            "__HYPERVISOR_mmu_update",
            u(abi::xen::hypercall::MMU_UPDATE),
        ),
        ("__HYPERVISOR_memory_op", u(abi::xen::hypercall::MEMORY_OP)),
        (
            "__HYPERVISOR_xen_version",
            u(abi::xen::hypercall::XEN_VERSION),
        ),
        ("__HYPERVISOR_mmuext_op", u(abi::xen::hypercall::MMUEXT_OP)),
        ("__HYPERVISOR_sched_op", u(abi::xen::hypercall::SCHED_OP)),
        (
            "__HYPERVISOR_event_channel_op",
            u(abi::xen::hypercall::EVENT_CHANNEL_OP),
        ),
        ("__HYPERVISOR_hvm_op", u(abi::xen::hypercall::HVM_OP)),
        ("__HYPERVISOR_sysctl", u(abi::xen::hypercall::SYSCTL)),
        ("__HYPERVISOR_domctl", u(abi::xen::hypercall::DOMCTL)),
        ("DOMID_FIRST_RESERVED", u(abi::xen::DOMID_FIRST_RESERVED)),
        ("DOMID_SELF", u(abi::xen::DOMID_SELF)),
        ("DOMID_IO", u(abi::xen::DOMID_IO)),
        ("DOMID_XEN", u(abi::xen::DOMID_XEN)),
        ("DOMID_COW", u(abi::xen::DOMID_COW)),
        ("DOMID_INVALID", u(abi::xen::DOMID_INVALID)),
        ("DOMID_IDLE", u(abi::xen::DOMID_IDLE)),
        ("MMU_NORMAL_PT_UPDATE", u(abi::xen::mmu::NORMAL_PT_UPDATE)),
        ("MMU_MACHPHYS_UPDATE", u(abi::xen::mmu::MACHPHYS_UPDATE)),
        (
            "MMU_PT_UPDATE_PRESERVE_AD",
            u(abi::xen::mmu::PT_UPDATE_PRESERVE_AD),
        ),
        (
            "MMU_PT_UPDATE_NO_TRANSLATE",
            u(abi::xen::mmu::PT_UPDATE_NO_TRANSLATE),
        ),
        ("MMUEXT_PIN_L1_TABLE", u(abi::xen::mmuext::PIN_L1_TABLE)),
        ("MMUEXT_PIN_L2_TABLE", u(abi::xen::mmuext::PIN_L2_TABLE)),
        ("MMUEXT_PIN_L3_TABLE", u(abi::xen::mmuext::PIN_L3_TABLE)),
        ("MMUEXT_PIN_L4_TABLE", u(abi::xen::mmuext::PIN_L4_TABLE)),
        ("MMUEXT_UNPIN_TABLE", u(abi::xen::mmuext::UNPIN_TABLE)),
        ("MMUEXT_NEW_BASEPTR", u(abi::xen::mmuext::NEW_BASEPTR)),
        (
            "MMUEXT_TLB_FLUSH_LOCAL",
            u(abi::xen::mmuext::TLB_FLUSH_LOCAL),
        ),
        ("MMUEXT_INVLPG_LOCAL", u(abi::xen::mmuext::INVLPG_LOCAL)),
        (
            "MMUEXT_TLB_FLUSH_MULTI",
            u(abi::xen::mmuext::TLB_FLUSH_MULTI),
        ),
        ("MMUEXT_INVLPG_MULTI", u(abi::xen::mmuext::INVLPG_MULTI)),
        ("MMUEXT_TLB_FLUSH_ALL", u(abi::xen::mmuext::TLB_FLUSH_ALL)),
        ("MMUEXT_INVLPG_ALL", u(abi::xen::mmuext::INVLPG_ALL)),
        ("MMUEXT_FLUSH_CACHE", u(abi::xen::mmuext::FLUSH_CACHE)),
        ("MMUEXT_SET_LDT", u(abi::xen::mmuext::SET_LDT)),
        (
            "MMUEXT_NEW_USER_BASEPTR",
            u(abi::xen::mmuext::NEW_USER_BASEPTR),
        ),
        ("MMUEXT_CLEAR_PAGE", u(abi::xen::mmuext::CLEAR_PAGE)),
        ("MMUEXT_COPY_PAGE", u(abi::xen::mmuext::COPY_PAGE)),
        (
            "MMUEXT_FLUSH_CACHE_GLOBAL",
            u(abi::xen::mmuext::FLUSH_CACHE_GLOBAL),
        ),
        ("MMUEXT_MARK_SUPER", u(abi::xen::mmuext::MARK_SUPER)),
        ("MMUEXT_UNMARK_SUPER", u(abi::xen::mmuext::UNMARK_SUPER)),
        ("VGCF_i387_valid", u(abi::xen::vgcf::I387_VALID)),
        ("VGCF_in_kernel", u(abi::xen::vgcf::IN_KERNEL)),
        (
            "VGCF_failsafe_disables_events",
            u(abi::xen::vgcf::FAILSAFE_DISABLES_EVENTS),
        ),
        (
            "VGCF_syscall_disables_events",
            u(abi::xen::vgcf::SYSCALL_DISABLES_EVENTS),
        ),
        ("VGCF_online", u(abi::xen::vgcf::ONLINE)),
        ("XEN_X86_EMU_LAPIC", u(abi::xen::x86_emu::LAPIC)),
        ("XEN_X86_EMU_HPET", u(abi::xen::x86_emu::HPET)),
        ("XEN_X86_EMU_PM", u(abi::xen::x86_emu::PM)),
        ("XEN_X86_EMU_RTC", u(abi::xen::x86_emu::RTC)),
        ("XEN_X86_EMU_IOAPIC", u(abi::xen::x86_emu::IOAPIC)),
        ("XEN_X86_EMU_PIC", u(abi::xen::x86_emu::PIC)),
        ("XEN_X86_EMU_VGA", u(abi::xen::x86_emu::VGA)),
        ("XEN_X86_EMU_IOMMU", u(abi::xen::x86_emu::IOMMU)),
        ("XEN_X86_EMU_PIT", u(abi::xen::x86_emu::PIT)),
        ("XEN_X86_EMU_USE_PIRQ", u(abi::xen::x86_emu::USE_PIRQ)),
        ("XEN_X86_EMU_VPCI", u(abi::xen::x86_emu::VPCI)),
        ("XEN_X86_MSR_RELAXED", u(abi::xen::x86_emu::MSR_RELAXED)),
        ("XEN_CPUID_NO_SUBLEAF", u(abi::xen::XEN_CPUID_NO_SUBLEAF)),
        (
            "__HYPERVISOR_grant_table_op",
            abi::xen::hypercall::GRANT_TABLE_OP,
        ),
        (
            "EVTCHNOP_bind_interdomain",
            u(abi::evtchn::cmd::BIND_INTERDOMAIN),
        ),
        ("EVTCHNOP_close", u(abi::evtchn::cmd::CLOSE)),
        ("EVTCHNOP_send", u(abi::evtchn::cmd::SEND)),
        ("EVTCHNOP_status", u(abi::evtchn::cmd::STATUS)),
        ("EVTCHNOP_alloc_unbound", u(abi::evtchn::cmd::ALLOC_UNBOUND)),
        (
            "GNTTABOP_map_grant_ref",
            u(abi::grant_table::cmd::MAP_GRANT_REF),
        ),
        (
            "GNTTABOP_setup_table",
            u(abi::grant_table::cmd::SETUP_TABLE),
        ),
        ("GNTTABOP_transfer", u(abi::grant_table::cmd::TRANSFER)),
        ("GNTTABOP_copy", u(abi::grant_table::cmd::COPY)),
        ("GNTTABOP_query_size", u(abi::grant_table::cmd::QUERY_SIZE)),
        ("GNTTAB_RESERVED_CONSOLE", u(GNTTAB_RESERVED_CONSOLE)),
        ("GNTTAB_RESERVED_XENSTORE", u(GNTTAB_RESERVED_XENSTORE)),
        ("GTF_invalid", u(gtf::INVALID)),
        ("GTF_permit_access", u(gtf::PERMIT_ACCESS)),
        ("GTF_accept_transfer", u(gtf::ACCEPT_TRANSFER)),
        ("GTF_readonly", u(gtf::READONLY)),
        ("GTF_reading", u(gtf::READING)),
        ("GTF_writing", u(gtf::WRITING)),
        ("GNTST_okay", s(gntst::OKAY)),
        ("GNTST_general_error", s(gntst::GENERAL_ERROR)),
        ("GNTST_bad_domain", s(gntst::BAD_DOMAIN)),
        ("GNTST_bad_gntref", s(gntst::BAD_GNTREF)),
        ("GNTST_bad_handle", s(gntst::BAD_HANDLE)),
        ("GNTST_bad_virt_addr", s(gntst::BAD_VIRT_ADDR)),
        ("GNTST_bad_dev_addr", s(gntst::BAD_DEV_ADDR)),
        ("GNTST_no_device_space", s(gntst::NO_DEVICE_SPACE)),
        ("GNTST_permission_denied", s(gntst::PERMISSION_DENIED)),
        ("GNTST_bad_page", s(gntst::BAD_PAGE)),
        ("GNTST_bad_copy_arg", s(gntst::BAD_COPY_ARG)),
        ("GNTST_address_too_big", s(gntst::ADDRESS_TOO_BIG)),
        ("GNTST_eagain", s(gntst::EAGAIN)),
        ("GNTST_no_space", s(gntst::NO_SPACE)),
        ("SHUTDOWN_poweroff", u(abi::xen::shutdown::POWEROFF)),
        ("SHUTDOWN_reboot", u(abi::xen::shutdown::REBOOT)),
        ("SHUTDOWN_suspend", u(abi::xen::shutdown::SUSPEND)),
        ("SHUTDOWN_crash", u(abi::xen::shutdown::CRASH)),
        ("SHUTDOWN_watchdog", u(abi::xen::shutdown::WATCHDOG)),
        ("SHUTDOWN_soft_reset", u(abi::xen::shutdown::SOFT_RESET)),
        (
            "IOCTL_PRIVCMD_HYPERCALL",
            u(abi::privcmd::IOCTL_PRIVCMD_HYPERCALL),
        ),
        (
            "IOCTL_PRIVCMD_MMAPBATCH_V2",
            u(abi::privcmd::IOCTL_PRIVCMD_MMAPBATCH_V2),
        ),
    ]
}

/// A constant of any unsigned width, widened.
fn u<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// A signed constant, as C's `(unsigned long long)` cast prints it.
fn s(v: i16) -> u64 {
    i64::from(v) as u64
}

const HEADERS: &[&str] = &[
    "xen/xen.h",
    "xen/domctl.h",
    "xen/sysctl.h",
    "xen/memory.h",
    "xen/event_channel.h",
    "xen/grant_table.h",
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
