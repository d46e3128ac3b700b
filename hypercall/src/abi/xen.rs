//! `xen/xen.h`, `xen/arch-x86/xen.h` and `xen/arch-x86/xen-x86_64.h`:
//! hypercall numbers, domain ids, MMU operations and the x86_64 PV vCPU
//! context.

use crate::plain::plain_data;

/// `domid_t`.
pub type DomId = u16;

/// `xen_pfn_t` on x86_64 (`unsigned long`).
pub type XenPfn = u64;

/// A guest handle in the tools ABI (`XEN_GUEST_HANDLE_64`): a virtual address
/// in the caller's address space, 0 for none.
pub type GuestHandle = u64;

/// `xen_domain_handle_t`: the domain's UUID.
pub type DomainHandle = [u8; 16];

/// Hypercall numbers (`__HYPERVISOR_*`).
pub mod hypercall {
    /// `__HYPERVISOR_mmu_update`
    pub const MMU_UPDATE: u64 = 1;
    /// `__HYPERVISOR_memory_op`
    pub const MEMORY_OP: u64 = 12;
    /// `__HYPERVISOR_xen_version`
    pub const XEN_VERSION: u64 = 17;
    /// `__HYPERVISOR_grant_table_op`
    pub const GRANT_TABLE_OP: u64 = 20;
    /// `__HYPERVISOR_mmuext_op`
    pub const MMUEXT_OP: u64 = 26;
    /// `__HYPERVISOR_sched_op`
    pub const SCHED_OP: u64 = 29;
    /// `__HYPERVISOR_event_channel_op`
    pub const EVENT_CHANNEL_OP: u64 = 32;
    /// `__HYPERVISOR_hvm_op`
    pub const HVM_OP: u64 = 34;
    /// `__HYPERVISOR_sysctl`
    pub const SYSCTL: u64 = 35;
    /// `__HYPERVISOR_domctl`
    pub const DOMCTL: u64 = 36;
}

/// `DOMID_FIRST_RESERVED`: ids from here up are not ordinary domains.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// `DOMID_SELF`
pub const DOMID_SELF: DomId = 0x7FF0;
/// `DOMID_IO`
pub const DOMID_IO: DomId = 0x7FF1;
/// `DOMID_XEN`
pub const DOMID_XEN: DomId = 0x7FF2;
/// `DOMID_COW`
pub const DOMID_COW: DomId = 0x7FF3;
/// `DOMID_INVALID`
pub const DOMID_INVALID: DomId = 0x7FF4;
/// `DOMID_IDLE`
pub const DOMID_IDLE: DomId = 0x7FFF;

/// Pages are 4 KiB on x86 (`XEN_PAGE_SHIFT` of `xen/io/ring.h`).
pub const PAGE_SHIFT: u32 = 12;
/// The page size on x86.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// `mmu_update` commands (the low two bits of [`MmuUpdate::ptr`]).
pub mod mmu {
    /// `MMU_NORMAL_PT_UPDATE`: checked `*ptr = val`; ptr is a machine address.
    pub const NORMAL_PT_UPDATE: u64 = 0;
    /// `MMU_MACHPHYS_UPDATE`: ptr is the machine address of the frame whose
    /// M2P entry becomes val.
    pub const MACHPHYS_UPDATE: u64 = 1;
    /// `MMU_PT_UPDATE_PRESERVE_AD`
    pub const PT_UPDATE_PRESERVE_AD: u64 = 2;
    /// `MMU_PT_UPDATE_NO_TRANSLATE`
    pub const PT_UPDATE_NO_TRANSLATE: u64 = 3;
}

/// `mmuext_op` commands (`MMUEXT_*`, [`MmuextOp::cmd`]).
pub mod mmuext {
    /// `MMUEXT_PIN_L1_TABLE`
    pub const PIN_L1_TABLE: u32 = 0;
    /// `MMUEXT_PIN_L2_TABLE`
    pub const PIN_L2_TABLE: u32 = 1;
    /// `MMUEXT_PIN_L3_TABLE`
    pub const PIN_L3_TABLE: u32 = 2;
    /// `MMUEXT_PIN_L4_TABLE`
    pub const PIN_L4_TABLE: u32 = 3;
    /// `MMUEXT_UNPIN_TABLE`
    pub const UNPIN_TABLE: u32 = 4;
    /// `MMUEXT_NEW_BASEPTR`
    pub const NEW_BASEPTR: u32 = 5;
    /// `MMUEXT_TLB_FLUSH_LOCAL`
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    /// `MMUEXT_INVLPG_LOCAL`
    pub const INVLPG_LOCAL: u32 = 7;
    /// `MMUEXT_TLB_FLUSH_MULTI`
    pub const TLB_FLUSH_MULTI: u32 = 8;
    /// `MMUEXT_INVLPG_MULTI`
    pub const INVLPG_MULTI: u32 = 9;
    /// `MMUEXT_TLB_FLUSH_ALL`
    pub const TLB_FLUSH_ALL: u32 = 10;
    /// `MMUEXT_INVLPG_ALL`
    pub const INVLPG_ALL: u32 = 11;
    /// `MMUEXT_FLUSH_CACHE`
    pub const FLUSH_CACHE: u32 = 12;
    /// `MMUEXT_SET_LDT`
    pub const SET_LDT: u32 = 13;
    /// `MMUEXT_NEW_USER_BASEPTR`
    pub const NEW_USER_BASEPTR: u32 = 15;
    /// `MMUEXT_CLEAR_PAGE`
    pub const CLEAR_PAGE: u32 = 16;
    /// `MMUEXT_COPY_PAGE`
    pub const COPY_PAGE: u32 = 17;
    /// `MMUEXT_FLUSH_CACHE_GLOBAL`
    pub const FLUSH_CACHE_GLOBAL: u32 = 18;
    /// `MMUEXT_MARK_SUPER`
    pub const MARK_SUPER: u32 = 19;
    /// `MMUEXT_UNMARK_SUPER`
    pub const UNMARK_SUPER: u32 = 20;
}

/// `struct mmu_update`: one page-table or M2P update.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// Machine address of the PTE, with the command ([`mmu`]) in bits 0–1.
    pub ptr: u64,
    /// New contents.
    pub val: u64,
}

/// `struct mmuext_op`: one extended MMU operation.
///
/// The C unions `arg1` (`mfn` / `linear_addr`) and `arg2` (`nr_ents` /
/// `vcpumask` / `src_mfn`) are 8-byte words here; a 32-bit `nr_ents` is
/// the word's value (x86 is little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuextOp {
    /// `MMUEXT_*` ([`mmuext`]).
    pub cmd: u32,
    /// Implicit C padding.
    pub _pad0: u32,
    /// `arg1.mfn` or `arg1.linear_addr`.
    pub arg1: u64,
    /// `arg2.nr_ents`, `arg2.vcpumask` or `arg2.src_mfn`.
    pub arg2: u64,
}

/// `struct trap_info`: one entry of the virtual IDT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    /// Exception vector.
    pub vector: u8,
    /// Bits 0–1: privilege level; bit 2: clear the event-enable flag.
    pub flags: u8,
    /// Code selector.
    pub cs: u16,
    /// Implicit C padding.
    pub _pad0: u32,
    /// Code offset.
    pub address: u64,
}

/// `struct cpu_user_regs` for x86_64 (the 64-bit register names).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Private to Xen.
    pub error_code: u32,
    /// Private to Xen.
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: [u16; 1],
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    /// `rflags.IF == !saved_upcall_mask`.
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    pub fs: u16,
    pub _pad5: [u16; 3],
    pub gs: u16,
    pub _pad6: [u16; 3],
}

/// `VGCF_*` flags of [`VcpuGuestContext::flags`].
pub mod vgcf {
    /// `VGCF_i387_valid`
    pub const I387_VALID: u64 = 1 << 0;
    /// `VGCF_in_kernel`
    pub const IN_KERNEL: u64 = 1 << 2;
    /// `VGCF_failsafe_disables_events`
    pub const FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
    /// `VGCF_syscall_disables_events`
    pub const SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
    /// `VGCF_online`
    pub const ONLINE: u64 = 1 << 5;
}

/// `struct vcpu_guest_context` for a 64-bit PV guest on x86_64: what
/// `XEN_DOMCTL_getvcpucontext` fills and `XEN_DOMCTL_setvcpucontext` takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuGuestContext {
    /// User-level FPU registers (FXSAVE layout).
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*` ([`vgcf`]).
    pub flags: u64,
    /// User-level CPU registers.
    pub user_regs: CpuUserRegs,
    /// Virtual IDT.
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT linear address.
    pub ldt_base: u64,
    /// LDT entries.
    pub ldt_ents: u64,
    /// GDT machine frames.
    pub gdt_frames: [u64; 16],
    /// GDT entries.
    pub gdt_ents: u64,
    /// Virtual TSS SS1.
    pub kernel_ss: u64,
    /// Virtual TSS SP1.
    pub kernel_sp: u64,
    /// CR0–CR7; the user page table of a 64-bit guest is in `ctrlreg[1]`.
    pub ctrlreg: [u64; 8],
    /// DR0–DR7.
    pub debugreg: [u64; 8],
    /// Event callback address.
    pub event_callback_eip: u64,
    /// Failsafe callback address.
    pub failsafe_callback_eip: u64,
    /// SYSCALL callback address.
    pub syscall_callback_eip: u64,
    /// `VMASST_TYPE_*` bitmap.
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// Kernel GS base.
    pub gs_base_kernel: u64,
    /// User GS base.
    pub gs_base_user: u64,
}

/// `struct xen_arch_domainconfig` for x86.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchDomainConfig {
    /// `XEN_X86_EMU_*`; 0 for a PV guest.
    pub emulation_flags: u32,
    /// `XEN_X86_MSR_RELAXED` …
    pub misc_flags: u32,
}

/// `XEN_X86_EMU_*` bits of [`ArchDomainConfig::emulation_flags`].
pub mod x86_emu {
    /// `XEN_X86_EMU_LAPIC`
    pub const LAPIC: u32 = 1 << 0;
    /// `XEN_X86_EMU_HPET`
    pub const HPET: u32 = 1 << 1;
    /// `XEN_X86_EMU_PM`
    pub const PM: u32 = 1 << 2;
    /// `XEN_X86_EMU_RTC`
    pub const RTC: u32 = 1 << 3;
    /// `XEN_X86_EMU_IOAPIC`
    pub const IOAPIC: u32 = 1 << 4;
    /// `XEN_X86_EMU_PIC`
    pub const PIC: u32 = 1 << 5;
    /// `XEN_X86_EMU_VGA`
    pub const VGA: u32 = 1 << 6;
    /// `XEN_X86_EMU_IOMMU`
    pub const IOMMU: u32 = 1 << 7;
    /// `XEN_X86_EMU_PIT`
    pub const PIT: u32 = 1 << 8;
    /// `XEN_X86_EMU_USE_PIRQ`
    pub const USE_PIRQ: u32 = 1 << 9;
    /// `XEN_X86_EMU_VPCI`
    pub const VPCI: u32 = 1 << 10;
    /// `XEN_X86_MSR_RELAXED` (a `misc_flags` bit).
    pub const MSR_RELAXED: u32 = 1 << 0;
}

/// `xen_cpuid_leaf_t`: one CPUID leaf of a CPU policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CpuidLeaf {
    pub leaf: u32,
    /// `XEN_CPUID_NO_SUBLEAF` when the leaf has none.
    pub subleaf: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub d: u32,
}

/// `XEN_CPUID_NO_SUBLEAF`
pub const XEN_CPUID_NO_SUBLEAF: u32 = 0xffff_ffff;

/// `xen_msr_entry_t`: one MSR of a CPU policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrEntry {
    /// MSR index.
    pub idx: u32,
    /// Reserved, must be zero.
    pub flags: u32,
    /// Value.
    pub val: u64,
}

impl Default for VcpuGuestContext {
    fn default() -> Self {
        crate::PlainData::zeroed()
    }
}

impl VcpuGuestContext {
    /// Rebuilds a context from exactly `size_of::<VcpuGuestContext>()`
    /// (5168) bytes, e.g. the body of a stream's `X86_PV_VCPU_BASIC`
    /// record after its vCPU header; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != core::mem::size_of::<Self>() {
            return None;
        }
        crate::PlainData::read_from(bytes)
    }
}

plain_data! {
    MmuUpdate { ptr, val }
    MmuextOp { cmd, _pad0, arg1, arg2 }
    TrapInfo { vector, flags, cs, _pad0, address }
    CpuUserRegs {
        r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi,
        error_code, entry_vector, rip, cs, _pad0, saved_upcall_mask, _pad1,
        rflags, rsp, ss, _pad2, es, _pad3, ds, _pad4, fs, _pad5, gs, _pad6
    }
    VcpuGuestContext {
        fpu_ctxt, flags, user_regs, trap_ctxt, ldt_base, ldt_ents, gdt_frames,
        gdt_ents, kernel_ss, kernel_sp, ctrlreg, debugreg, event_callback_eip,
        failsafe_callback_eip, syscall_callback_eip, vm_assist, fs_base,
        gs_base_kernel, gs_base_user
    }
    ArchDomainConfig { emulation_flags, misc_flags }
    CpuidLeaf { leaf, subleaf, a, b, c, d }
    MsrEntry { idx, flags, val }
}

const _: () = assert!(core::mem::size_of::<MmuUpdate>() == 16);
const _: () = assert!(core::mem::size_of::<MmuextOp>() == 24);
const _: () = assert!(core::mem::size_of::<TrapInfo>() == 16);
const _: () = assert!(core::mem::size_of::<CpuUserRegs>() == 200);
const _: () = assert!(core::mem::size_of::<VcpuGuestContext>() == 5168);
const _: () = assert!(core::mem::size_of::<ArchDomainConfig>() == 8);
const _: () = assert!(core::mem::size_of::<CpuidLeaf>() == 24);
const _: () = assert!(core::mem::size_of::<MsrEntry>() == 16);

/// `SHUTDOWN_*` (`xen/sched.h`): the reason code of a shut-down domain.
pub mod shutdown {
    /// `SHUTDOWN_poweroff`
    pub const POWEROFF: u8 = 0;
    /// `SHUTDOWN_reboot`
    pub const REBOOT: u8 = 1;
    /// `SHUTDOWN_suspend`
    pub const SUSPEND: u8 = 2;
    /// `SHUTDOWN_crash`
    pub const CRASH: u8 = 3;
    /// `SHUTDOWN_watchdog`
    pub const WATCHDOG: u8 = 4;
    /// `SHUTDOWN_soft_reset`
    pub const SOFT_RESET: u8 = 5;
}
