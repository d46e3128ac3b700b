//! A running 64-bit PV guest on the fake hypervisor, for the tests of
//! save, restore and migration: 600 pages whose pfn `p` lives in frame
//! `MFN0 + p`, the p2m tree in its own pages, page tables, a start-info
//! page, and a thread playing its kernel's part in the suspend protocol.

use crate::backend::xen::backend::XenBackend;
use crate::backend::xen::libxl::libxl_config_path;
use crate::backend::xen::p2m::{SHINFO_FRAME_LIST_LIST, SHINFO_MAX_PFN};
use crate::backend::xen::xenstore::fake::FakeXenstored;
use crate::backend::xen::xenstore::{Transport, Xenstore};
use crate::engine::{Engine, EngineConfig};
use crate::journal::Journal;
use relocd_core::guest::PAGE_SIZE;
use relocd_hypercall::abi::domctl::pfinfo;
use relocd_hypercall::abi::xen::vgcf;
use relocd_hypercall::fake::{FakeDomain, FakeXen};
use relocd_hypercall::DomId;
use relocd_hypercall::XenOps;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const DOMID: DomId = 4;
/// Guest pages; pfn p lives in frame MFN0 + p.
pub const PAGES: u64 = 600;
pub const MFN0: u64 = 0x1000;
pub const SHINFO: u64 = 0x10;
/// Frames of the test's page tables (L4 at pfn 1, L3 at pfn 2).
pub const L4_PTE0: u64 = ((MFN0 + 2) << 12) | 0x67;
pub const L3_PTE3: u64 = (1 << 63) | ((MFN0 + 3) << 12) | 0x63;

pub struct Guest {
    pub xen: FakeXen,
    pub store: crate::backend::xen::xenstore::fake::Store,
    pub stop: Arc<AtomicBool>,
    kernel: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(k) = self.kernel.take() {
            let _ = k.join();
        }
    }
}

pub fn put_words(x: &FakeXen, frame: u64, words: &[(usize, u64)]) {
    let mut p = [0u8; PAGE_SIZE];
    for &(i, w) in words {
        p[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    assert!(x.guest_write(DOMID, frame, 0, &p));
}

/// A 64-bit PV guest of 600 pages on the fake: its p2m tree in its own
/// pages (leaves at pfns 596-597, list 598, root 599), an L4 and an L3,
/// vCPU 0 on the L4, text in pfn 10, and a "kernel" thread that answers
/// xenstore's suspend request by shutting the domain down for suspend.
pub fn guest() -> Guest {
    let x = FakeXen::new();
    let mut d = FakeDomain::pv(DOMID, MFN0 + PAGES, 1);
    d.info.shared_info_frame = SHINFO;
    d.dirty_offset = MFN0;
    d.vcpus[0].flags = vgcf::ONLINE | vgcf::IN_KERNEL;
    d.vcpus[0].ctrlreg[3] = (MFN0 + 1) << 12;
    d.vcpus[0].user_regs.rax = 0;
    // a suspending guest leaves its start-info frame in rdx
    d.vcpus[0].user_regs.rdx = MFN0 + 3;
    x.add_domain(d);
    let leaf_pfns = [596u64, 597];
    for (i, &lp) in leaf_pfns.iter().enumerate() {
        let words: Vec<(usize, u64)> = (0..512)
            .map(|k| (k, i as u64 * 512 + k as u64))
            .filter(|&(_, p)| p < PAGES)
            .map(|(k, p)| (k, MFN0 + p))
            .collect();
        put_words(&x, MFN0 + lp, &words);
    }
    put_words(&x, MFN0 + 598, &[(0, MFN0 + 596), (1, MFN0 + 597)]);
    put_words(&x, MFN0 + 599, &[(0, MFN0 + 598)]);
    put_words(
        &x,
        SHINFO,
        &[
            (SHINFO_MAX_PFN / 8, PAGES),
            (SHINFO_FRAME_LIST_LIST / 8, MFN0 + 599),
        ],
    );
    put_words(
        &x,
        MFN0 + 1,
        &[(0, L4_PTE0), (5, 0x1234_0000), (256, 0xdead_0001)],
    );
    put_words(&x, MFN0 + 2, &[(3, L3_PTE3)]);
    // pfn 3: the start-info page, store ring at pfn 10, console at 11
    // (a suspended guest keeps pfns there)
    put_words(&x, MFN0 + 3, &[(56 / 8, 10), (72 / 8, 11)]);
    x.set_page_type(DOMID, MFN0 + 1, pfinfo::L4TAB | pfinfo::LPINTAB);
    x.set_page_type(DOMID, MFN0 + 2, pfinfo::L3TAB);
    assert!(x.guest_write(DOMID, MFN0 + 10, 0, b"hello from pfn 10"));
    let xs = FakeXenstored::new(&[
        ("/local/domain/4/name", "web1"),
        ("/local/domain/4/vm", "/vm/0000"),
        ("/vm/0000/name", "web1"),
    ]);
    let store = xs.store.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = {
        let (x, store, stop) = (x.clone(), store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let asked = store
                    .lock()
                    .unwrap()
                    .get("/local/domain/4/control/shutdown")
                    .is_some_and(|v| v == b"suspend");
                if asked {
                    store
                        .lock()
                        .unwrap()
                        .insert("/local/domain/4/control/shutdown".into(), Vec::new());
                    x.guest_shutdown(DOMID, 2);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    Guest {
        xen: x,
        store,
        stop,
        kernel: Some(kernel),
    }
}

pub fn connect(g: &Guest) -> Xenstore<Box<dyn Transport>> {
    let mut fake = FakeXenstored::new(&[]);
    fake.store = g.store.clone();
    Xenstore::new(Box::new(fake) as Box<dyn Transport>)
}

/// An engine over the test guest's fake hypervisor and store, in domain
/// 0 unless `own` names another, with libxl's record of the guest and the
/// journal in `dir`.
pub fn engine(g: &Guest, dir: &Path, own: Option<u16>) -> Engine<XenBackend<FakeXen>> {
    let info = g.xen.domain_info(DOMID).unwrap();
    std::fs::write(
        libxl_config_path(dir, DOMID, &info.handle),
        b"{\"c_info\":{\"name\":\"web1\"}}",
    )
    .unwrap();
    let store = g.store.clone();
    let mut b = XenBackend::with_store(
        g.xen.clone(),
        Box::new(move || {
            let mut f = FakeXenstored::new(&[]);
            f.store = store.clone();
            Ok(Xenstore::new(Box::new(f) as Box<dyn Transport>))
        }),
    )
    .with_userdata(dir.to_owned());
    if let Some(own) = own {
        b = b.with_own_domid(own);
    }
    let journal = Arc::new(Journal::open(&dir.join("state")).unwrap());
    Engine::new(Arc::new(b), journal, EngineConfig::default())
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("relocd-xsave-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
