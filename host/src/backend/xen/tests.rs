//! The engine over the Xen backend, on fake Xen hosts: what it refuses
//! before touching a guest, the receiving side's admission, the start-up
//! settling of a killed daemon's journal, a PV guest moved between two
//! hosts, saves journaled, `relocd resolve` of an in-doubt guest.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use relocd_core::protocol::RefuseReason;
use relocd_hypercall::fake::{FakeDomain, FakeXen};
use relocd_hypercall::XenOps;

use super::backend::{StoreConnector, XenBackend};
use super::probe::resolve_domain;
use super::xenstore::fake::FakeXenstored;
use super::xenstore::{Transport, Xenstore};
use crate::api::{
    DomainState, ErrorKind, MigrateRequest, NoProgress, ResolveAction, ResolveRequest, SaveRequest,
};
use crate::backend::sim::{Drive, GuestSpec, SimHypervisor, SimSource};
use crate::engine::{Engine, EngineConfig, Incoming, Service, ShutdownToken};
use crate::journal::{unresolved, CommitState, Journal, JournalEntry, Role};
use crate::session::{run_source, Clock, SessionError, SourceOptions};

type XenEngine = Engine<XenBackend<FakeXen>>;

fn store_of(store: super::xenstore::fake::Store) -> StoreConnector {
    Box::new(move || {
        let mut f = FakeXenstored::new(&[]);
        f.store = store.clone();
        Ok(Xenstore::new(Box::new(f) as Box<dyn Transport>))
    })
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relocd-xeng-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An engine over `b` with its journal (and libxl's records) in `dir`.
fn engine(b: XenBackend<FakeXen>, dir: &std::path::Path) -> XenEngine {
    let journal = Arc::new(Journal::open(&dir.join("state")).unwrap());
    Engine::new(
        Arc::new(b.with_userdata(dir.to_owned())),
        journal,
        EngineConfig::default(),
    )
}

/// Dom0 and a 1 MiB guest `web1` (domain 5) with no p2m to read.
fn backend() -> (FakeXen, XenBackend<FakeXen>) {
    let x = FakeXen::new();
    x.add_domain(FakeDomain::pv(0, 16, 1));
    x.add_domain(FakeDomain::pv(5, 256, 1));
    let store = FakeXenstored::new(&[("/local/domain/5/name", "web1")])
        .store
        .clone();
    let b = XenBackend::with_store(x.clone(), store_of(store));
    (x, b)
}

fn req(domain: &str, port: u16) -> MigrateRequest {
    MigrateRequest {
        domain: domain.into(),
        host: "127.0.0.1".into(),
        port: Some(port),
        live: false,
        downtime_limit_ms: None,
        bandwidth_bytes_per_s: None,
        max_iters: None,
        abort_if_busy: false,
        compress: false,
        ssl: false,
    }
}

/// How many domains the fake has.
fn domains(x: &FakeXen) -> usize {
    let mut n = 0;
    x.for_each_domain(|_| n += 1).unwrap();
    n
}

/// A connected pair: (the source's end, the destination's accepted end).
fn pair() -> (TcpStream, Incoming) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || l.accept().unwrap());
    let link = TcpStream::connect(addr).unwrap();
    let (stream, peer) = h.join().unwrap();
    (
        link,
        Incoming {
            id: 1,
            stream: crate::session::Conn::Tcp(stream),
            peer,
            shutdown: ShutdownToken::new(),
        },
    )
}

#[test]
fn migrate_refuses_what_it_cannot_move_before_touching_the_guest() {
    let (x, b) = backend();
    let dir = scratch("refuse");
    let e = engine(b, &dir);
    let err = e.migrate(&req("nosuch", 1), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err:?}");
    let err = e.migrate(&req("0", 1), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");
    // web1 has no p2m tree the PV source can read: refused, unpaused,
    // nothing journaled, no connection tried.
    let err = e.migrate(&req("web1", 1), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");
    let info = x.domain_info(5).unwrap();
    assert!(!info.paused() && !info.shutdown());
    assert!(e.journal().entries().unwrap().is_empty());
    e.shutdown();
    let err = e.migrate(&req("web1", 1), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::ShuttingDown);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The receiver refuses a guest that is not PV without journaling or
/// creating anything, and says why.
#[test]
fn receiver_refuses_what_is_not_pv_without_a_trace() {
    let (x, b) = backend();
    let dir = scratch("recv");
    let e = Arc::new(engine(b, &dir));
    let hv = SimHypervisor::new(1 << 30, Drive::Manual);
    let g = hv
        .create(&GuestSpec::new("hvm1", 4 << 20).unwrap(), false)
        .unwrap();
    let (link, conn) = pair();
    let rx = e.clone();
    let t = std::thread::spawn(move || rx.receive(conn));
    let mut src = SimSource::new(g.clone());
    let mut j = crate::session::FileJournal::open(&dir.join("src.journal")).unwrap();
    let r = run_source(
        link,
        &mut src,
        &SourceOptions::new(3, "hvm1", false),
        &mut j,
        &mut |_| {},
        &AtomicBool::new(false),
        &Clock::new(),
    );
    t.join().unwrap();
    match r {
        Err(SessionError::Refused(f)) => {
            assert_eq!(f.reason, RefuseReason::Unsupported);
            assert_eq!(
                f.detail,
                "hvm1 is not a PV guest; relocd on Xen builds PV guests"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.journal().entries().unwrap().is_empty());
    assert_eq!(e.active_sessions(), 0);
    assert_eq!(domains(&x), 2, "nothing was created");
    assert!(g.state() != crate::backend::sim::DomainState::Destroyed);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Admission counts Xen's free memory: a guest larger than it is refused
/// with the sizes, before any domain is created.
#[test]
fn admission_refuses_a_guest_larger_than_free_memory() {
    use crate::engine::{Backend, NewGuest};
    let (x, b) = backend();
    let mut p = x.physinfo().unwrap();
    p.free_pages = 64 * 256; // 64 MiB
    x.set_physinfo(p);
    let g = NewGuest {
        name: "big".into(),
        uuid: [1; 16],
        guest_type: relocd_core::guest::GuestType::Pv,
        memory_bytes: 128 << 20,
        vcpus: 1,
    };
    let r = b.admit(&g).unwrap_err();
    assert_eq!(r.reason, RefuseReason::NoCapacity);
    assert_eq!(
        r.detail,
        "not enough free memory for big (needs 129 MiB, has 64 MiB)"
    );
    let small = NewGuest {
        memory_bytes: 32 << 20,
        ..g.clone()
    };
    b.admit(&small).unwrap();
    let taken = NewGuest {
        name: "web1".into(),
        ..small
    };
    assert_eq!(b.admit(&taken).unwrap_err().reason, RefuseReason::NameTaken);
    assert_eq!(domains(&x), 2, "nothing was created");
}

#[test]
fn start_up_settles_what_a_killed_daemon_left() {
    use relocd_hypercall::abi::xen::vgcf;
    let x = FakeXen::new();
    x.add_domain(FakeDomain::pv(0, 16, 1));
    // 5: a source suspended for a migration that never committed
    let mut web = FakeDomain::pv(5, 16, 1);
    web.vcpus[0].flags = vgcf::ONLINE;
    x.add_domain(web);
    x.guest_shutdown(5, 2);
    x.logdirty_enable(5).unwrap();
    // 6: a half-built incoming copy; 7: an incoming copy whose commit
    // was journaled; 8: a running domain under a name an unfinished
    // incoming session used; 9: a source whose commit was sent, never
    // acknowledged (in doubt)
    for d in [6, 7, 8] {
        x.add_domain(FakeDomain::pv(d, 16, 1));
    }
    let mut doubt = FakeDomain::pv(9, 16, 1);
    doubt.vcpus[0].flags = vgcf::ONLINE;
    x.add_domain(doubt);
    x.guest_shutdown(9, 2);
    x.pause(6).unwrap();
    x.pause(7).unwrap();
    let store = FakeXenstored::new(&[
        ("/local/domain/5/name", "web1"),
        ("/local/domain/6/name", "half"),
        ("/local/domain/7/name", "done"),
        ("/local/domain/8/name", "busy"),
        ("/local/domain/9/name", "doubt"),
    ])
    .store
    .clone();
    let dir = scratch("reconcile");
    {
        let j = Journal::open(&dir.join("state")).unwrap();
        for (dom, role, state) in [
            ("web1", Role::Source, CommitState::Prepared),
            ("half", Role::Dest, CommitState::Prepared),
            ("done", Role::Dest, CommitState::Committed),
            ("busy", Role::Dest, CommitState::Prepared),
            ("doubt", Role::Source, CommitState::Committed),
        ] {
            j.record(&JournalEntry::now(dom, &format!("s-{dom}"), role, state))
                .unwrap();
        }
    }
    let e = engine(XenBackend::with_store(x.clone(), store_of(store)), &dir);
    let i = x.domain_info(5).unwrap();
    assert!(!i.shutdown() && !i.paused(), "the source runs again: {i:?}");
    assert_eq!(x.domain(5).unwrap().vcpus[0].user_regs.rax, 1);
    assert!(!x.domain(5).unwrap().logdirty);
    assert!(x.domain(6).is_none(), "the half-built copy is gone");
    assert!(
        !x.domain_info(7).unwrap().paused(),
        "the committed copy runs"
    );
    assert!(x.domain(8).is_some(), "a running domain is left alone");
    assert!(
        x.domain_info(9).unwrap().shutdown(),
        "in doubt: still suspended"
    );
    let open = unresolved(&e.journal().entries().unwrap());
    assert_eq!(
        open.iter().map(|e| e.domain.as_str()).collect::<Vec<_>>(),
        ["doubt"],
        "only the in-doubt session stays open"
    );
    let listed = e.list().unwrap();
    let state = |n: &str| listed.iter().find(|d| d.name == n).map(|d| d.state);
    assert_eq!(state("doubt"), Some(DomainState::InDoubt));
    assert_eq!(state("web1"), Some(DomainState::Running));
    // a guest in doubt is neither saved nor migrated until resolved
    let err = e.migrate(&req("doubt", 1), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("relocd resolve doubt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `relocd resolve` on Xen: `--resume` resumes the suspended guest as a
/// cancelled suspend, `--discard` destroys it and its xenstore tree; a
/// guest that is not in doubt is refused; either way the journal closes.
#[test]
fn resolve_resumes_or_discards_an_in_doubt_guest() {
    use relocd_hypercall::abi::xen::vgcf;
    for action in [ResolveAction::Resume, ResolveAction::Discard] {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 1));
        let mut d = FakeDomain::pv(9, 16, 1);
        d.vcpus[0].flags = vgcf::ONLINE;
        x.add_domain(d);
        x.guest_shutdown(9, 2);
        x.add_domain(FakeDomain::pv(10, 16, 1));
        let store = FakeXenstored::new(&[
            ("/local/domain/9/name", "web1"),
            ("/local/domain/10/name", "other"),
        ])
        .store
        .clone();
        let dir = scratch(&format!("resolve-{action:?}"));
        Journal::open(&dir.join("state"))
            .unwrap()
            .record(&JournalEntry::now(
                "web1",
                "s1",
                Role::Source,
                CommitState::Committed,
            ))
            .unwrap();
        let e = engine(
            XenBackend::with_store(x.clone(), store_of(store.clone())),
            &dir,
        );
        let not = e
            .resolve(&ResolveRequest {
                domain: "other".into(),
                action,
            })
            .unwrap_err();
        assert_eq!(not.kind, ErrorKind::Refused);
        e.resolve(&ResolveRequest {
            domain: "web1".into(),
            action,
        })
        .unwrap();
        match action {
            ResolveAction::Resume => {
                let i = x.domain_info(9).unwrap();
                assert!(!i.shutdown() && !i.paused(), "{i:?}");
                assert_eq!(x.domain(9).unwrap().vcpus[0].user_regs.rax, 1);
                let listed = e.list().unwrap();
                assert!(listed
                    .iter()
                    .any(|d| d.name == "web1" && d.state == DomainState::Running));
            }
            ResolveAction::Discard => {
                assert!(x.domain(9).is_none());
                assert!(!store
                    .lock()
                    .unwrap()
                    .keys()
                    .any(|k| k.starts_with("/local/domain/9")));
            }
        }
        assert!(unresolved(&e.journal().entries().unwrap()).is_empty());
        assert!(e.in_doubt().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A PV guest moves between two fake Xen hosts through the whole
/// protocol: offline and live, the copy on B runs with the guest's
/// pages, its page tables and vCPU on B's frames, its xenstore tree;
/// A has it no more; both journals are settled.
#[test]
fn a_pv_guest_moves_between_two_fake_xen_hosts() {
    use super::test_guest::{self, MFN0};
    use relocd_hypercall::fake::FAKE_MFN_OFFSET;
    for live in [false, true] {
        let g = test_guest::guest();
        let dir_a = scratch(&format!("pv-a-{live}"));
        let dir_b = scratch(&format!("pv-b-{live}"));
        let a = engine(
            XenBackend::with_store(g.xen.clone(), store_of(g.store.clone())),
            &dir_a,
        );
        let xb = FakeXen::new();
        xb.add_domain(FakeDomain::pv(0, 16, 1));
        let bstore = FakeXenstored::new(&[("/local/domain/0/name", "Domain-0")])
            .store
            .clone();
        let b = Arc::new(engine(
            XenBackend::with_store(xb.clone(), store_of(bstore.clone())),
            &dir_b,
        ));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let rx = b.clone();
        let t = std::thread::spawn(move || {
            let (stream, peer) = l.accept().unwrap();
            rx.receive(Incoming {
                id: 1,
                stream: crate::session::Conn::Tcp(stream),
                peer,
                shutdown: ShutdownToken::new(),
            });
        });
        // every data page holds its own words, to be found again on B
        let data_pfns = 12..596u64;
        for pfn in data_pfns.clone() {
            let mark = format!("pfn {pfn} of web1");
            assert!(g
                .xen
                .guest_write(test_guest::DOMID, MFN0 + pfn, 0, mark.as_bytes()));
            assert!(g
                .xen
                .guest_write(test_guest::DOMID, MFN0 + pfn, 4000, &pfn.to_le_bytes()));
        }
        let mut r = req("web1", port);
        r.live = live;
        let s = a.migrate(&r, &mut NoProgress).unwrap();
        t.join().unwrap();
        assert!(s.pages_sent >= test_guest::PAGES, "{s:?}");
        assert!(
            g.xen.domain(test_guest::DOMID).is_none(),
            "A has it no more"
        );
        let mut xs = Xenstore::new(Box::new({
            let mut f = FakeXenstored::new(&[]);
            f.store = bstore.clone();
            f
        }) as Box<dyn Transport>);
        let d = resolve_domain(&xb, Some(&mut xs), "web1").expect("B runs web1");
        let info = xb.domain_info(d).unwrap();
        assert!(!info.paused() && !info.shutdown(), "{info:?}");
        let nd = xb.domain(d).unwrap();
        let mfn = |pfn: u64| pfn + FAKE_MFN_OFFSET;
        // every data page arrived as it was at A
        for pfn in data_pfns {
            let page = nd.memory.get(&mfn(pfn)).expect("the page is there");
            let mark = format!("pfn {pfn} of web1");
            assert!(page.starts_with(mark.as_bytes()), "pfn {pfn}");
            assert_eq!(&page[4000..4008], &pfn.to_le_bytes(), "pfn {pfn}");
        }
        assert!(nd.memory[&mfn(10)].starts_with(b"hello from pfn 10"));
        assert_eq!(nd.vcpus[0].ctrlreg[3], mfn(1) << 12);
        let l4 = &nd.memory[&mfn(1)];
        assert_eq!(
            u64::from_le_bytes(l4[0..8].try_into().unwrap()),
            (mfn(2) << 12) | 0x67,
            "the L4 names B's frames (A's were {:#x})",
            MFN0 + 2
        );
        assert!(xb.pinned_tables(d).contains(&(mfn(1), 4)));
        assert_eq!(
            xs.read_string(&format!("/local/domain/{d}/name")).unwrap(),
            "web1"
        );
        for e in [&a, &*b] {
            let open = unresolved(&e.journal().entries().unwrap());
            assert!(open.is_empty(), "{open:?}");
        }
        drop(g);
        std::fs::remove_dir_all(&dir_a).unwrap();
        std::fs::remove_dir_all(&dir_b).unwrap();
    }
}

/// A save through the engine leaves a prepared and a resolved record.
#[test]
fn a_save_is_journaled_as_a_source_session() {
    use super::test_guest;
    let g = test_guest::guest();
    let dir = scratch("save-journal");
    let e = engine(
        XenBackend::with_store(g.xen.clone(), store_of(g.store.clone())),
        &dir,
    );
    let file = dir.join("web1.save");
    let req = SaveRequest {
        domain: test_guest::DOMID.to_string(),
        file: file.clone(),
        keep_running: true,
        live: false,
        bandwidth_bytes_per_s: None,
    };
    e.save(&req, &mut NoProgress).unwrap();
    let all = e.journal().entries().unwrap();
    let states: Vec<_> = all
        .iter()
        .map(|e| (e.domain.as_str(), e.role, e.state))
        .collect();
    assert_eq!(
        states,
        [
            ("web1", Role::Source, CommitState::Prepared),
            ("web1", Role::Source, CommitState::Resolved)
        ]
    );
    assert!(file.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_guest_with_devices_is_refused_untouched() {
    let x = FakeXen::new();
    x.add_domain(FakeDomain::pv(0, 16, 1));
    x.add_domain(FakeDomain::pv(5, 256, 1));
    let store = FakeXenstored::new(&[
        ("/local/domain/5/name", "web1"),
        ("/local/domain/5/device/vif/0/state", "4"),
        ("/local/domain/5/device/vbd/51712/state", "4"),
        ("/local/domain/5/device/suspend/event-channel", "7"),
    ])
    .store
    .clone();
    let b = XenBackend::with_store(x.clone(), store_of(store.clone()));
    let mut xs = b.store().unwrap();
    let mut found = super::hooks::guest_devices(&mut xs, 5);
    found.sort();
    assert_eq!(found, ["vbd 51712", "vif 0"]);
    let dir = scratch("devices");
    let e = engine(b, &dir);
    let err = e.migrate(&req("web1", 1), &mut NoProgress).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("vif 0"), "{err:?}");
    let i = x.domain_info(5).unwrap();
    assert!(!i.paused() && !i.shutdown());
    assert!(e.journal().entries().unwrap().is_empty());
    // A save is not refused for the devices (xl restore recreates them
    // from the file's configuration): it goes on to open the guest (which
    // this fake guest, without a p2m, cannot give).
    let save = SaveRequest {
        domain: "web1".into(),
        file: dir.join("web1.save"),
        keep_running: true,
        live: false,
        bandwidth_bytes_per_s: None,
    };
    let err = e.save(&save, &mut NoProgress).unwrap_err();
    assert!(!err.message.contains("devices"), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
