//! The marshalling, against a recording stand-in for the stubs.

use super::*;
use crate::abi::domctl::{cmd, shadow, ShadowOp};
use crate::abi::memory;
use crate::abi::sysctl;
use crate::{ErrorKind, XenOps};
use core::mem::offset_of;
use std::cell::RefCell;

const BITMAP: usize = Domctl::union_offset(offset_of!(ShadowOp, dirty_bitmap));

/// Stands in for the hypercall page: records each call and the domctl
/// envelope as Xen would see it, then answers with `xen`.
struct Recorder {
    xen: fn(u64, [u64; 5]) -> i64,
    calls: RefCell<Vec<(u64, [u64; 5])>>,
    domctls: RefCell<Vec<Domctl>>,
}

impl Recorder {
    fn new(xen: fn(u64, [u64; 5]) -> i64) -> Self {
        Recorder {
            xen,
            calls: RefCell::default(),
            domctls: RefCell::default(),
        }
    }
}

/// Reads the domctl envelope at `addr`.
///
/// # Safety
///
/// `addr` is the exposed address of a live `Domctl` not otherwise
/// borrowed during the read.
unsafe fn envelope(addr: u64) -> Domctl {
    let p = core::ptr::with_exposed_provenance::<Domctl>(addr as usize);
    // SAFETY: the caller's contract.
    unsafe { p.read_unaligned() }
}

impl Issue for Recorder {
    unsafe fn issue(&self, nr: u64, args: [u64; 5]) -> i64 {
        self.calls.borrow_mut().push((nr, args));
        if nr == hypercall::DOMCTL {
            // SAFETY: `domctl_via` passes the address of the caller's live
            // envelope as the first argument, unborrowed during the call.
            self.domctls.borrow_mut().push(unsafe { envelope(args[0]) });
        }
        (self.xen)(nr, args)
    }
}

impl Hypervisor for Recorder {
    type Mapping = NoMapping;
    fn domctl(&self, d: &mut Domctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        domctl_via(self, d, bufs)
    }
    fn sysctl(&self, s: &mut Sysctl, bufs: &mut [GuestBuf<'_>]) -> Result<(), Error> {
        sysctl_via(self, s, bufs)
    }
    fn memory_op(&self, cmd: u32, arg: &mut [u8], bufs: &mut [GuestBuf<'_>]) -> Result<u64, Error> {
        memory_op_via(self, cmd, arg, bufs)
    }
    fn event_channel_op(&self, cmd: u32, arg: &mut [u8]) -> Result<u64, Error> {
        event_channel_op_via(self, cmd, arg)
    }
    fn grant_table_op(
        &self,
        cmd: u32,
        arg: &mut [u8],
        bufs: &mut [GuestBuf<'_>],
    ) -> Result<u64, Error> {
        grant_table_op_via(self, cmd, arg, bufs)
    }
    unsafe fn mmuext_op(&self, _: &[MmuextOp], _: DomId) -> Result<(), Error> {
        Err(unsupported(Op::MmuextOp))
    }
    unsafe fn mmu_update(&self, _: &[MmuUpdate], _: DomId) -> Result<(), Error> {
        Err(unsupported(Op::MmuUpdate))
    }
    fn map_foreign(&self, _: DomId, _: &[XenPfn], _: Prot) -> Result<NoMapping, Error> {
        Err(unsupported(Op::MapForeign))
    }
}

fn ok(_: u64, _: [u64; 5]) -> i64 {
    0
}

fn esrch(_: u64, _: [u64; 5]) -> i64 {
    -i64::from(errno::ESRCH)
}

/// Xen's shadow_op PEEK, roughly: refuses a foreign interface version,
/// fills the bitmap through the handle and writes the counters back.
fn peek(nr: u64, args: [u64; 5]) -> i64 {
    assert_eq!(nr, hypercall::DOMCTL);
    let addr = args[0] as usize;
    // SAFETY: the envelope is live and unborrowed during the call.
    let mut d = unsafe { envelope(args[0]) };
    if d.interface_version != XEN_DOMCTL_INTERFACE_VERSION {
        return -i64::from(errno::EACCES);
    }
    let mut p: ShadowOp = d.payload();
    let bitmap = core::ptr::with_exposed_provenance_mut::<u8>(p.dirty_bitmap as usize);
    for i in 0..p.pages.div_ceil(8) as usize {
        // SAFETY: the doorway bound the handle to a caller buffer of at
        // least `pages / 8` bytes, mutably borrowed for the call.
        unsafe { bitmap.add(i).write(0xA5) };
    }
    p.stats.dirty_count = 7;
    d.set_payload(&p);
    // SAFETY: as for the read above; Xen writes the envelope back.
    unsafe { core::ptr::with_exposed_provenance_mut::<Domctl>(addr).write_unaligned(d) };
    0
}

/// `XENMEM_maximum_gpfn`: 256 pages per domid.
fn max_gpfn(nr: u64, args: [u64; 5]) -> i64 {
    assert_eq!((nr, args[0]), (hypercall::MEMORY_OP, 14));
    // SAFETY: the doorway passes the address of the caller's domid.
    let domid =
        unsafe { core::ptr::with_exposed_provenance::<DomId>(args[1] as usize).read_unaligned() };
    i64::from(domid) * 256 - 1
}

#[test]
fn a_domctl_is_passed_by_its_own_address_with_the_version_set() {
    let r = Recorder::new(ok);
    let mut d = Domctl::new(cmd::PAUSEDOMAIN, 5);
    d.interface_version = 3;
    r.domctl(&mut d, &mut []).unwrap();
    let addr = (&d as *const Domctl).addr() as u64;
    assert_eq!(*r.calls.borrow(), [(36, [addr, 0, 0, 0, 0])]);
    let seen = r.domctls.borrow()[0];
    assert_eq!(
        (seen.cmd, seen.domain, seen.interface_version),
        (cmd::PAUSEDOMAIN, 5, 0x15)
    );
    assert_eq!(d.interface_version, 0x15);
}

#[test]
fn handles_point_at_the_caller_buffers_and_are_given_back() {
    let r = Recorder::new(peek);
    let p = ShadowOp {
        op: shadow::OP_PEEK,
        pages: 20,
        dirty_bitmap: 0xdead_beef,
        ..Default::default()
    };
    let mut d = Domctl::with_payload(cmd::SHADOW_OP, 2, &p);
    let mut bitmap = [0u8; 3];
    let at = bitmap.as_ptr().addr() as u64;
    r.domctl(&mut d, &mut [GuestBuf::output(BITMAP, &mut bitmap)])
        .unwrap();
    let seen: ShadowOp = r.domctls.borrow()[0].payload();
    assert_eq!(seen.dirty_bitmap, at);
    assert_eq!(bitmap, [0xA5; 3]);
    let back: ShadowOp = d.payload();
    assert_eq!(
        (back.dirty_bitmap, back.stats.dirty_count),
        (0xdead_beef, 7)
    );
}

#[test]
fn unbound_slots_are_null_and_out_buffers_start_zeroed() {
    let r = Recorder::new(ok);
    let p = ShadowOp {
        op: shadow::OP_PEEK,
        pages: 8,
        dirty_bitmap: 0x1000,
        ..Default::default()
    };
    let mut d = Domctl::with_payload(cmd::SHADOW_OP, 2, &p);
    r.domctl(&mut d, &mut []).unwrap();
    let seen: ShadowOp = r.domctls.borrow()[0].payload();
    assert_eq!(seen.dirty_bitmap, 0);
    let mut bitmap = [0xFFu8; 1];
    r.domctl(&mut d, &mut [GuestBuf::output(BITMAP, &mut bitmap)])
        .unwrap();
    assert_eq!(bitmap, [0]);
    let mut inout = [0xFFu8; 1];
    r.domctl(&mut d, &mut [GuestBuf::in_out(BITMAP, &mut inout)])
        .unwrap();
    assert_eq!(inout, [0xFF]);
}

#[test]
fn log_dirty_works_through_the_typed_wrappers() {
    let r = Recorder::new(peek);
    let mut bitmap = [0u8; 8];
    let stats = r.logdirty_peek(4, &mut bitmap, 16).unwrap();
    assert_eq!(stats.dirty_count, 7);
    assert_eq!(bitmap, [0xA5, 0xA5, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn refused_calls_never_reach_xen() {
    let r = Recorder::new(ok);
    let mut d = Domctl::new(cmd::GETHVMCONTEXT, 1);
    let e = r.domctl(&mut d, &mut []).unwrap_err();
    assert_eq!(
        (e.op, e.errno),
        (Op::Domctl(cmd::GETHVMCONTEXT), errno::EOPNOTSUPP)
    );
    let p = ShadowOp {
        op: shadow::OP_PEEK,
        pages: 100,
        ..Default::default()
    };
    let mut d = Domctl::with_payload(cmd::SHADOW_OP, 1, &p);
    let mut short = [0u8; 12];
    let e = r
        .domctl(&mut d, &mut [GuestBuf::output(BITMAP, &mut short)])
        .unwrap_err();
    assert_eq!(e.errno, errno::EINVAL);
    let mut s = Sysctl::new(sysctl::cmd::READCONSOLE);
    assert!(r.sysctl(&mut s, &mut []).is_err());
    assert!(r
        .memory_op(memory::cmd::MEMORY_MAP, &mut [], &mut [])
        .is_err());
    assert!(r.calls.borrow().is_empty());
}

#[test]
fn negative_results_are_errnos() {
    let r = Recorder::new(esrch);
    let e = r.pause(9).unwrap_err();
    assert_eq!(
        (e.op, e.errno),
        (Op::Domctl(cmd::PAUSEDOMAIN), errno::ESRCH)
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(result(Op::MmuUpdate, 5), Ok(5));
    assert_eq!(result(Op::MmuUpdate, -22).unwrap_err().errno, errno::EINVAL);
    assert_eq!(
        result(Op::MmuUpdate, i64::MIN).unwrap_err().errno,
        errno::EIO
    );
    assert_eq!(
        result(Op::MmuUpdate, -(1 << 40)).unwrap_err().errno,
        errno::EIO
    );
}

#[test]
fn memory_op_passes_the_command_and_the_argument_address() {
    let r = Recorder::new(max_gpfn);
    assert_eq!(r.maximum_gpfn(3).unwrap(), 767);
    let (nr, args) = r.calls.borrow()[0];
    assert_eq!((nr, args[0], args[2]), (12, 14, 0));
}

#[test]
fn sysctl_goes_to_its_number_with_the_version_set() {
    let r = Recorder::new(ok);
    let mut s = Sysctl::new(sysctl::cmd::PHYSINFO);
    s.interface_version = 0;
    r.sysctl(&mut s, &mut []).unwrap();
    let addr = (&s as *const Sysctl).addr() as u64;
    assert_eq!(*r.calls.borrow(), [(35, [addr, 0, 0, 0, 0])]);
    assert_eq!(s.interface_version, XEN_SYSCTL_INTERFACE_VERSION);
}

#[test]
fn the_page_must_be_page_aligned_and_not_null() {
    // SAFETY: both addresses are refused before anything is kept.
    let null = unsafe { HypercallPage::from_raw(core::ptr::null()) };
    assert_eq!(
        null.unwrap_err(),
        Error::new(Op::HypercallPage, errno::EINVAL)
    );
    // SAFETY: as above.
    let odd = unsafe { HypercallPage::from_raw(core::ptr::without_provenance(0x1010)) };
    assert!(odd.is_err());
    assert_eq!(STUBS, 128);
}

/// The asm path itself, on this CPU: a page of hand-written stubs stands in
/// for Xen's (each returns one argument register, or writes into the
/// envelope, then wipes every register Xen may change).
#[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "privcmd"))]
mod stubs_on_this_cpu {
    use super::*;

    /// Wipes rdi, rsi, rdx, r10, r8, r9, rcx, r11, then `ret`.
    const WIPE_RET: [u8; 21] = [
        0x31, 0xff, 0x31, 0xf6, 0x31, 0xd2, 0x45, 0x31, 0xd2, 0x45, 0x31, 0xc0, 0x45, 0x31, 0xc9,
        0x31, 0xc9, 0x45, 0x31, 0xdb, 0xc3,
    ];

    /// The stub bodies (before `WIPE_RET`), by hypercall number.
    fn body(nr: usize) -> &'static [u8] {
        match nr {
            0 => &[0x48, 0x89, 0xf8], // mov rax, rdi
            1 => &[0x48, 0x89, 0xf0], // mov rax, rsi
            2 => &[0x48, 0x89, 0xd0], // mov rax, rdx
            3 => &[0x4c, 0x89, 0xd0], // mov rax, r10
            4 => &[0x4c, 0x89, 0xc0], // mov rax, r8
            // domctl: mov qword [rdi+16], 0x1234; xor eax, eax
            36 => &[0x48, 0xc7, 0x47, 0x10, 0x34, 0x12, 0, 0, 0x31, 0xc0],
            // mov rax, -22
            _ => &[0x48, 0xc7, 0xc0, 0xea, 0xff, 0xff, 0xff],
        }
    }

    /// An executable page of stubs, unmapped on drop.
    struct StubPage(*mut libc::c_void);

    impl StubPage {
        fn new() -> Self {
            // SAFETY: a fresh private anonymous mapping at an address the
            // kernel picks; no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    PAGE_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: `p` is a fresh, writable, page-sized mapping owned
            // here and nothing else refers to it.
            let page = unsafe { core::slice::from_raw_parts_mut(p.cast::<u8>(), PAGE_SIZE) };
            page.fill(0xcc); // int3
            for (nr, stub) in page.chunks_exact_mut(STUB_SIZE).enumerate() {
                let b = body(nr);
                stub[..b.len()].copy_from_slice(b);
                stub[b.len()..b.len() + WIPE_RET.len()].copy_from_slice(&WIPE_RET);
            }
            // SAFETY: `p` is the page mapped above; making it read-only and
            // executable affects nothing else.
            let rc = unsafe { libc::mprotect(p, PAGE_SIZE, libc::PROT_READ | libc::PROT_EXEC) };
            assert_eq!(rc, 0);
            StubPage(p)
        }
    }

    impl Drop for StubPage {
        fn drop(&mut self) {
            // SAFETY: the page was mapped by `new` and no handle on it
            // outlives `self` in these tests.
            unsafe { libc::munmap(self.0, PAGE_SIZE) };
        }
    }

    #[test]
    fn arguments_go_in_the_abi_registers_and_rax_comes_back() {
        let stubs = StubPage::new();
        // SAFETY: the page holds the stubs above, executable and mapped
        // until `stubs` drops at the end of this test; they only read
        // argument registers, write the 8 bytes at rdi+16 (nr 36, given a
        // whole envelope below) and wipe registers the ABI lets Xen change.
        let page = unsafe { HypercallPage::from_raw(stubs.0.cast::<u8>()) }.unwrap();
        let args = [11, 22, 33, 44, 55];
        for (nr, want) in args.iter().enumerate() {
            // SAFETY: stubs 0 to 4 only copy a register into rax.
            let got = unsafe { page.hypercall(nr as u64, args) };
            assert_eq!(got, Ok(*want), "argument {}", nr + 1);
        }
        // SAFETY: stub 5 only sets rax.
        let e = unsafe { page.hypercall(5, args) }.unwrap_err();
        assert_eq!((e.op, e.errno), (Op::Hypercall(5), errno::EINVAL));
        // SAFETY: refused before any stub is called.
        let e = unsafe { page.hypercall(STUBS, args) }.unwrap_err();
        assert_eq!(e.errno, errno::ENOSYS);

        // A domctl whose "Xen" writes its answer into the envelope.
        let mut d = Domctl::new(cmd::GETDOMAININFO, 3);
        page.domctl(&mut d, &mut []).unwrap();
        assert_eq!(d.u[0], 0x1234);
        // memory_op's stub (12) answers -EINVAL.
        let e = page.maximum_gpfn(3).unwrap_err();
        assert_eq!(
            (e.op, e.errno),
            (Op::MemoryOp(memory::cmd::MAXIMUM_GPFN), errno::EINVAL)
        );
        let e = page.map_foreign(3, &[0], Prot::Read).unwrap_err();
        assert_eq!((e.op, e.kind()), (Op::MapForeign, ErrorKind::Unsupported));
        // SAFETY: refused without a hypercall.
        let e = unsafe { page.mmu_update(&[], 3) }.unwrap_err();
        assert_eq!(e.errno, errno::EOPNOTSUPP);
    }
}

/// `EVTCHNOP_alloc_unbound` answering port 9, and `GNTTABOP_setup_table`
/// writing frames 0x700.. through the handle with `GNTST_okay`, checking
/// the count of one structure.
fn evtchn_and_gnttab(nr: u64, args: [u64; 5]) -> i64 {
    use crate::abi::evtchn::EvtchnAllocUnbound;
    use crate::abi::grant_table::GnttabSetupTable;
    match (nr, args[0]) {
        (hypercall::EVENT_CHANNEL_OP, 6) => {
            let p = core::ptr::with_exposed_provenance_mut::<EvtchnAllocUnbound>(args[1] as usize);
            // SAFETY: the doorway passes the caller's live argument, not
            // otherwise borrowed during the call.
            let mut a = unsafe { p.read_unaligned() };
            assert_eq!((a.dom, a.remote_dom), (5, 0));
            a.port = 9;
            // SAFETY: as above.
            unsafe { p.write_unaligned(a) };
            0
        }
        (hypercall::GRANT_TABLE_OP, 2) => {
            assert_eq!(args[2], 1, "one structure");
            let p = core::ptr::with_exposed_provenance_mut::<GnttabSetupTable>(args[1] as usize);
            // SAFETY: as above.
            let mut s = unsafe { p.read_unaligned() };
            let list = core::ptr::with_exposed_provenance_mut::<u64>(s.frame_list as usize);
            for i in 0..s.nr_frames as usize {
                // SAFETY: the doorway bound the handle to a caller buffer of
                // `nr_frames` frames, mutably borrowed for the call.
                unsafe { list.add(i).write_unaligned(0x700 + i as u64) };
            }
            s.status = 0;
            // SAFETY: as above.
            unsafe { p.write_unaligned(s) };
            0
        }
        _ => -i64::from(errno::ENOSYS),
    }
}

#[test]
fn event_channel_and_grant_table_ops_go_through_their_stubs() {
    let r = Recorder::new(evtchn_and_gnttab);
    assert_eq!(r.evtchn_alloc_unbound(5, 0).unwrap(), 9);
    let mut frames = [0u64; 3];
    assert_eq!(r.grant_table_frames(5, 2, &mut frames).unwrap(), 2);
    assert_eq!(frames, [0x700, 0x701, 0]);
    let calls = r.calls.borrow();
    assert_eq!(
        calls.iter().map(|&(nr, a)| (nr, a[0])).collect::<Vec<_>>(),
        [(32, 6), (20, 2)]
    );
    // Refused commands never reach a stub.
    drop(calls);
    let e = r.event_channel_op(3, &mut [0; 4]).unwrap_err();
    assert_eq!(e.errno, errno::EOPNOTSUPP);
    let e = r.grant_table_op(6, &mut [0; 24], &mut []).unwrap_err();
    assert_eq!(e.errno, errno::EOPNOTSUPP);
    assert_eq!(r.calls.borrow().len(), 2);
}

#[test]
fn a_bad_grant_status_is_an_error_with_its_errno() {
    fn bad_domain(nr: u64, args: [u64; 5]) -> i64 {
        assert_eq!(nr, hypercall::GRANT_TABLE_OP);
        // `status` sits at byte 8 of gnttab_setup_table.
        let st = core::ptr::with_exposed_provenance_mut::<i16>(args[1] as usize + 8);
        // SAFETY: the caller's live argument, unborrowed during the call.
        unsafe { st.write_unaligned(-2) };
        0
    }
    let r = Recorder::new(bad_domain);
    let e = r.grant_table_frames(9, 1, &mut [0]).unwrap_err();
    assert_eq!(
        (e.op, e.errno),
        (Op::Hypercall(hypercall::GRANT_TABLE_OP), errno::ESRCH)
    );
}
