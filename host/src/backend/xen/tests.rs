//! The engine over the Xen backend, on fake Xen hosts: what it refuses
//! before touching a guest, the receiving side's admission, the start-up
//! settling of a killed daemon's journal, a PV guest moved between two
//! hosts, saves journaled, `relocd resolve` of an in-doubt guest.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use relocd_core::protocol::RefuseReason;
use relocd_hypercall::abi::domctl::{sched, SchedCredit};
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
        no_zero_pages: false,
        auto_converge: false,
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
        config: None,
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
        // Its own weight and cap, to be found on B.
        let own = SchedCredit {
            weight: 512,
            cap: 30,
        };
        g.xen
            .set_sched_credit(test_guest::DOMID, sched::CREDIT2, own)
            .unwrap();
        let mut r = req("web1", port);
        r.live = live;
        r.auto_converge = live;
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
            nd.sched, own,
            "B's domain has the guest's own weight and cap"
        );
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

/// Auto-converge on Xen: a credit2 cap of the throttled share of the
/// guest's own (its weight kept), and its own back with 0 or when the
/// source is dropped.
#[test]
fn a_pv_source_is_capped_through_the_scheduler_and_given_its_own_back() {
    use super::test_guest;
    use crate::engine::Backend as _;
    use relocd_core::guest::{SchedParams, SourceGuest};
    let g = test_guest::guest();
    let b = XenBackend::with_store(g.xen.clone(), store_of(g.store.clone()));
    let sched_of = || g.xen.domain(test_guest::DOMID).unwrap().sched;
    let d = b.find("web1").unwrap();
    let mut src = b.open_source(&d).unwrap();
    assert_eq!(
        src.sched_params().unwrap(),
        Some(SchedParams {
            weight: 256,
            cap: 0
        })
    );
    assert!(src.throttle(20).unwrap());
    assert_eq!(
        sched_of(),
        SchedCredit {
            weight: 256,
            cap: 80
        }
    );
    assert!(src.throttle(90).unwrap());
    assert_eq!(sched_of().cap, 10);
    // What travels is its own, not the throttle.
    assert_eq!(src.sched_params().unwrap().unwrap().cap, 0);
    assert!(src.throttle(0).unwrap());
    assert_eq!(
        sched_of(),
        SchedCredit {
            weight: 256,
            cap: 0
        }
    );
    // A throttle does not outlive the source.
    assert!(src.throttle(60).unwrap());
    assert_eq!(sched_of().cap, 40);
    drop(src);
    assert_eq!(sched_of().cap, 0);
    // The start-up settling's hook, by name.
    g.xen
        .set_sched_credit(
            test_guest::DOMID,
            sched::CREDIT2,
            SchedCredit {
                weight: 256,
                cap: 5,
            },
        )
        .unwrap();
    let own = SchedParams {
        weight: 300,
        cap: 0,
    };
    assert_eq!(
        b.restore_sched("web1", own).unwrap(),
        crate::engine::Settled::Done
    );
    assert_eq!(
        sched_of(),
        SchedCredit {
            weight: 300,
            cap: 0
        }
    );
    // A domain under another scheduler has no weight or cap to set.
    let mut rtds = g.xen.domain(test_guest::DOMID).unwrap();
    rtds.scheduler = sched::RTDS;
    g.xen.add_domain(rtds);
    assert!(src_of(&b).throttle(50).is_ok_and(|t| !t));
}

fn src_of(b: &XenBackend<FakeXen>) -> <XenBackend<FakeXen> as crate::engine::Backend>::Source<'_> {
    use crate::engine::Backend as _;
    b.open_source(&b.find("web1").unwrap()).unwrap()
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

/// Devices relocd cannot recreate from what it knows are refused before
/// anything is touched: vifs and vbds libxl's record does not describe
/// (here there is no record), and kinds it does not move (a vkbd).
#[test]
fn a_guest_with_devices_it_cannot_recreate_is_refused_untouched() {
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
    assert!(
        err.message.contains("does not describe vif 0, vbd 51712")
            || err.message.contains("does not describe vbd 51712, vif 0"),
        "{err:?}"
    );
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
    // A kind relocd does not move.
    store
        .lock()
        .unwrap()
        .insert("/local/domain/5/device/vkbd/0/state".into(), b"4".to_vec());
    let err = e.migrate(&req("web1", 1), &mut NoProgress).unwrap_err();
    assert!(
        err.message
            .contains("devices relocd does not move (vkbd 0)"),
        "{err:?}"
    );
    let i = x.domain_info(5).unwrap();
    assert!(!i.paused() && !i.shutdown());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A hotplug script that records how it was run in `log` (one line a
/// run: its name, arguments and libxl's environment) and exits 0.
fn recording_script(dir: &std::path::Path, name: &str, log: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $* script=$script XENBUS_TYPE=$XENBUS_TYPE \
             XENBUS_PATH=$XENBUS_PATH XENBUS_BASE_PATH=$XENBUS_BASE_PATH vif=$vif \
             netdev=$netdev\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// A host for devices under `dir`: `br-test` is a bridge there, no
/// backend driver answers (the fake xenstore has none).
fn device_host(dir: &std::path::Path, bridges: &[&str]) -> super::devices::DeviceHost {
    let net = dir.join("net");
    for b in bridges {
        std::fs::create_dir_all(net.join(b).join("bridge")).unwrap();
    }
    super::devices::DeviceHost {
        net_root: net,
        wait_for_drivers: false,
        ..Default::default()
    }
}

/// Host B for the device tests: dom0 alone on a fake Xen, its engine
/// (journal and libxl records in `dir`, the bridges `bridges`) receiving
/// one migration on a port of loopback in a thread.
fn receiving_host(
    dir: &std::path::Path,
    bridges: &[&str],
) -> (
    FakeXen,
    super::xenstore::fake::Store,
    u16,
    std::thread::JoinHandle<()>,
) {
    let xb = FakeXen::new();
    xb.add_domain(FakeDomain::pv(0, 16, 1));
    let bstore = FakeXenstored::new(&[("/local/domain/0/name", "Domain-0")])
        .store
        .clone();
    let b = engine(
        XenBackend::with_store(xb.clone(), store_of(bstore.clone()))
            .with_device_host(device_host(dir, bridges)),
        dir,
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (stream, peer) = l.accept().unwrap();
        b.receive(Incoming {
            id: 1,
            stream: crate::session::Conn::Tcp(stream),
            peer,
            shutdown: ShutdownToken::new(),
        });
    });
    (xb, bstore, port, t)
}

/// The test guest with a vif and a vbd, as xl left them on A: frontend
/// and backend trees, and libxl's record naming `vif_script`,
/// `block_script` and the disk `target`.
fn give_devices(
    g: &super::test_guest::Guest,
    userdata: &std::path::Path,
    vif_script: &str,
    block_script: &str,
    target: &std::path::Path,
) {
    use super::test_guest::DOMID;
    let uuid = g.xen.domain_info(DOMID).unwrap().handle;
    let config = serde_json::json!({
        "c_info": {"type": "pv", "name": "web1"},
        "b_info": {"max_memkb": 2400, "max_vcpus": 1},
        "nics": [{"devid": 0, "mac": "00:16:3e:e2:e0:01", "bridge": "br-test",
                  "script": vif_script, "nictype": "vif"}],
        "disks": [{"pdev_path": target.display().to_string(), "vdev": "xvda",
                   "backend": "phy", "format": "raw", "readwrite": 1,
                   "script": block_script}],
    });
    std::fs::write(
        super::libxl::libxl_config_path(userdata, DOMID, &uuid),
        config.to_string(),
    )
    .unwrap();
    let mut s = g.store.lock().unwrap();
    for (k, v) in [
        (format!("/local/domain/{DOMID}/device/vif/0/state"), "4"),
        (format!("/local/domain/{DOMID}/device/vbd/51712/state"), "4"),
        (format!("/local/domain/0/backend/vif/{DOMID}/0/state"), "4"),
        (
            format!("/local/domain/0/backend/vif/{DOMID}/0/script"),
            vif_script,
        ),
        (
            format!("/local/domain/0/backend/vbd/{DOMID}/51712/state"),
            "4",
        ),
        (
            format!("/local/domain/0/backend/vbd/{DOMID}/51712/script"),
            block_script,
        ),
    ] {
        s.insert(k, v.as_bytes().to_vec());
    }
}

#[test]
fn a_guest_moves_with_its_network_and_disk_between_fake_xen_hosts() {
    use super::test_guest::{self, DOMID};
    let g = test_guest::guest();
    let dir_a = scratch("dev-a");
    let dir_b = scratch("dev-b");
    let log_a = dir_a.join("hotplug.log");
    let log_b = dir_b.join("hotplug.log");
    // The same disk both hosts see; each host has its own scripts.
    let disk = dir_a.join("shared.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let vif_a = recording_script(&dir_a, "vif-test", &log_a);
    let blk_a = recording_script(&dir_a, "block", &log_a);
    give_devices(&g, &dir_a, &vif_a, &blk_a, &disk);
    // B runs its own copies of the scripts at the same paths a real pool
    // has them: here, B's scripts are A's paths, logging to B's log once
    // A's part is done, so each run is told apart by its domain.
    let a = engine(
        XenBackend::with_store(g.xen.clone(), store_of(g.store.clone()))
            .with_device_host(device_host(&dir_a, &["br-test"])),
        &dir_a,
    );
    let (xb, bstore, port, t) = receiving_host(&dir_b, &["br-test"]);
    let mut r = req("web1", port);
    r.live = true;
    a.migrate(&r, &mut NoProgress).unwrap();
    t.join().unwrap();
    let mut xs = Xenstore::new(Box::new({
        let mut f = FakeXenstored::new(&[]);
        f.store = bstore.clone();
        f
    }) as Box<dyn Transport>);
    let d = resolve_domain(&xb, Some(&mut xs), "web1").expect("B runs web1");
    let store = bstore.lock().unwrap().clone();
    let get = |k: &str| {
        String::from_utf8(
            store
                .get(k)
                .unwrap_or_else(|| panic!("{k} missing"))
                .clone(),
        )
        .unwrap()
    };
    // libxl's layout on B, backends in dom0, frontends in the guest's tree.
    let vb = format!("/local/domain/0/backend/vif/{d}/0");
    let vf = format!("/local/domain/{d}/device/vif/0");
    assert_eq!(get(&format!("{vb}/frontend")), vf);
    assert_eq!(get(&format!("{vb}/frontend-id")), d.to_string());
    assert_eq!(get(&format!("{vb}/mac")), "00:16:3e:e2:e0:01");
    assert_eq!(get(&format!("{vb}/bridge")), "br-test");
    assert_eq!(get(&format!("{vb}/script")), vif_a);
    assert_eq!(get(&format!("{vb}/state")), "1");
    assert_eq!(get(&format!("{vb}/online")), "1");
    assert_eq!(get(&format!("{vb}/handle")), "0");
    assert_eq!(get(&format!("{vf}/backend")), vb);
    assert_eq!(get(&format!("{vf}/backend-id")), "0");
    assert_eq!(get(&format!("{vf}/mac")), "00:16:3e:e2:e0:01");
    assert_eq!(get(&format!("{vf}/state")), "1");
    assert_eq!(get(&format!("{vf}/mtu")), "1500");
    let bb = format!("/local/domain/0/backend/vbd/{d}/51712");
    let bf = format!("/local/domain/{d}/device/vbd/51712");
    assert_eq!(get(&format!("{bb}/params")), disk.display().to_string());
    assert_eq!(get(&format!("{bb}/mode")), "w");
    assert_eq!(get(&format!("{bb}/type")), "phy");
    assert_eq!(get(&format!("{bb}/dev")), "xvda");
    assert_eq!(get(&format!("{bb}/device-type")), "disk");
    assert_eq!(get(&format!("{bf}/virtual-device")), "51712");
    assert_eq!(get(&format!("{bf}/protocol")), "x86_64-abi");
    assert_eq!(get(&format!("{bf}/backend")), bb);
    // libxl's own copy, which xl reads to take them down.
    assert_eq!(get(&format!("/libxl/{d}/device/vbd/51712/backend")), bb);
    assert_eq!(get(&format!("/libxl/{d}/device/vif/0/frontend")), vf);
    assert_eq!(get(&format!("/libxl/{d}/device/vif/0/bridge")), "br-test");
    // Permissions: the frontend is the guest's, dom0 reads it; the
    // backend is dom0's, the guest reads it; a vif's mtu is read-only to
    // the guest (xenstore's wire form: access letter, domain, NUL).
    let perms = |p: &str| {
        store
            .get(&format!("perms:{p}"))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(perms(&vf), format!("n{d}\0r0\0").into_bytes());
    assert_eq!(
        perms(&format!("{vf}/mac")),
        format!("n{d}\0r0\0").into_bytes()
    );
    assert_eq!(
        perms(&format!("{vf}/mtu")),
        format!("n0\0r{d}\0").into_bytes()
    );
    assert_eq!(perms(&vb), format!("n0\0r{d}\0").into_bytes());
    // The scripts ran as libxl runs them: on B for the new domain, then
    // on A for the old one's removal, after the commit.
    let ran = std::fs::read_to_string(&log_a).unwrap();
    let lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.len(), 4, "{ran}");
    assert_eq!(
        lines[0],
        format!(
            "vif-test online type_if=vif script={vif_a} XENBUS_TYPE=vif \
             XENBUS_PATH=backend/vif/{d}/0 XENBUS_BASE_PATH=backend vif=vif{d}.0 netdev="
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "block add script={blk_a} XENBUS_TYPE=vbd XENBUS_PATH=backend/vbd/{d}/51712 \
             XENBUS_BASE_PATH=backend vif= netdev="
        )
    );
    assert!(
        lines[2].starts_with(&format!(
            "vif-test offline type_if=vif script={vif_a} XENBUS_TYPE=vif \
             XENBUS_PATH=backend/vif/{DOMID}/0"
        )),
        "{ran}"
    );
    assert!(
        lines[3].starts_with(&format!(
            "block remove script={blk_a} XENBUS_TYPE=vbd XENBUS_PATH=backend/vbd/{DOMID}/51712"
        )),
        "{ran}"
    );
    assert!(!log_b.exists());
    // Nothing of the guest is left on A.
    let left: Vec<String> = g
        .store
        .lock()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("perms:") && k.contains(&format!("/{DOMID}")))
        .cloned()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // B keeps libxl's record, devices included, for xl.
    let uuid = xb.domain_info(d).unwrap().handle;
    let rec = std::fs::read(super::libxl::libxl_config_path(&dir_b, d, &uuid)).unwrap();
    assert_eq!(rec.last(), Some(&0), "stored with its NUL, as libxl does");
    let devs = crate::devices::GuestDevices::from_libxl_json(&rec).unwrap();
    assert_eq!(devs.names(), ["vif 0", "vbd xvda"]);
    drop(g);
    std::fs::remove_dir_all(&dir_a).unwrap();
    std::fs::remove_dir_all(&dir_b).unwrap();
}

#[test]
fn a_destination_without_the_bridge_or_the_disk_refuses_before_the_guest_stops() {
    use super::test_guest::{self, DOMID};
    for lack in ["bridge", "disk", "script"] {
        let g = test_guest::guest();
        let dir_a = scratch(&format!("lack-a-{lack}"));
        let dir_b = scratch(&format!("lack-b-{lack}"));
        let log = dir_a.join("hotplug.log");
        let disk = dir_a.join("shared.img");
        std::fs::write(&disk, vec![0u8; 4096]).unwrap();
        let vif = recording_script(&dir_a, "vif-test", &log);
        let blk = recording_script(&dir_a, "block", &log);
        let target = if lack == "disk" {
            dir_a.join("not-there.img")
        } else {
            disk.clone()
        };
        give_devices(&g, &dir_a, &vif, &blk, &target);
        if lack == "script" {
            std::fs::remove_file(&blk).unwrap();
        }
        let a = engine(
            XenBackend::with_store(g.xen.clone(), store_of(g.store.clone())),
            &dir_a,
        );
        let bridges: &[&str] = if lack == "bridge" {
            &["br0"]
        } else {
            &["br-test"]
        };
        let (xb, bstore, port, t) = receiving_host(&dir_b, bridges);
        let mut r = req("web1", port);
        r.live = true;
        let e = a.migrate(&r, &mut NoProgress).unwrap_err();
        t.join().unwrap();
        assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
        let want = match lack {
            "bridge" => "vif 0: bridge br-test does not exist here".to_owned(),
            "disk" => format!("vbd xvda: {} cannot be opened", target.display()),
            _ => format!("vbd xvda: hotplug script {blk} is missing here"),
        };
        assert!(e.message.contains(&want), "{lack}: {e:?}");
        let peer = e.peer.as_ref().expect("B's reason");
        assert_eq!(peer.reason, "device_unavailable");
        // Untouched at A: never paused, its devices as they were, no
        // script run anywhere; nothing on B.
        let i = g.xen.domain_info(DOMID).unwrap();
        assert!(!i.paused() && !i.shutdown(), "{i:?}");
        assert!(g
            .store
            .lock()
            .unwrap()
            .contains_key(&format!("/local/domain/0/backend/vif/{DOMID}/0/state")));
        assert!(!log.exists());
        assert_eq!(domains(&xb), 1);
        assert!(!bstore
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.contains("/backend/")));
        drop(g);
        std::fs::remove_dir_all(&dir_a).unwrap();
        std::fs::remove_dir_all(&dir_b).unwrap();
    }
}

/// A destination that does not take a guest's configuration (an older
/// relocd): the guest with devices is not sent, its operator reads why,
/// and it keeps running, never paused.
#[test]
fn a_guest_with_devices_stays_where_the_destination_cannot_recreate_them() {
    use super::test_guest::{self, DOMID};
    use crate::session::{run_dest, DestOptions, FileJournal};
    use relocd_core::protocol::{DestConfig, Features};
    let g = test_guest::guest();
    let dir = scratch("older-peer");
    let log = dir.join("hotplug.log");
    let disk = dir.join("shared.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let vif = recording_script(&dir, "vif-test", &log);
    let blk = recording_script(&dir, "block", &log);
    give_devices(&g, &dir, &vif, &blk, &disk);
    let a = engine(
        XenBackend::with_store(g.xen.clone(), store_of(g.store.clone())),
        &dir,
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let journal_path = dir.join("dest-journal");
    let t = std::thread::spawn(move || {
        let (stream, _) = l.accept().unwrap();
        let opts = DestOptions {
            config: DestConfig {
                features: Features(Features::LIVE.0 | Features::COMPRESS.0),
                ..DestConfig::default()
            },
            ..DestOptions::default()
        };
        let mut journal = FileJournal::open(&journal_path).unwrap();
        run_dest(
            stream,
            |_, _| -> Result<crate::backend::sim::SimSink, RefuseReason> {
                panic!("the source asked for admission")
            },
            &opts,
            &mut journal,
            &Clock::new(),
        )
    });
    let mut r = req("web1", port);
    r.live = true;
    let e = a.migrate(&r, &mut NoProgress).unwrap_err();
    let dest = t.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
    assert!(
        e.message.contains("cannot recreate them") && e.message.contains("keeps running here"),
        "{e:?}"
    );
    let dest = dest.unwrap_err();
    assert!(dest.to_string().contains("devices"), "{dest}");
    let i = g.xen.domain_info(DOMID).unwrap();
    assert!(!i.paused() && !i.shutdown(), "{i:?}");
    assert!(!log.exists(), "no script ran");
    drop(g);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A daemon killed while it built or took down a guest's devices leaves
/// backends of a domain that is gone: the next one takes them down when it
/// starts, and leaves those of running domains alone.
#[test]
fn start_up_takes_down_the_backends_of_domains_that_are_gone() {
    let dir = scratch("orphans");
    let log = dir.join("hotplug.log");
    let script = recording_script(&dir, "vif-test", &log);
    let x = FakeXen::new();
    x.add_domain(FakeDomain::pv(0, 16, 1));
    x.add_domain(FakeDomain::pv(5, 256, 1));
    let store = FakeXenstored::new(&[
        ("/local/domain/5/name", "web1"),
        ("/local/domain/0/backend/vif/5/0/state", "4"),
        ("/local/domain/0/backend/vif/5/0/script", &script),
        ("/local/domain/0/backend/vif/9/0/state", "2"),
        ("/local/domain/0/backend/vif/9/0/script", &script),
        ("/local/domain/0/backend/vbd/9/51712/state", "2"),
        (
            "/libxl/9/device/vif/0/frontend",
            "/local/domain/9/device/vif/0",
        ),
    ])
    .store
    .clone();
    let b = XenBackend::with_store(x.clone(), store_of(store.clone()))
        .with_device_host(device_host(&dir, &[]));
    let _e = engine(b, &dir);
    let left: Vec<String> = store.lock().unwrap().keys().cloned().collect();
    assert!(
        left.iter()
            .all(|k| !k.contains("/9/") && !k.starts_with("/libxl/9")),
        "{left:?}"
    );
    assert!(left.contains(&"/local/domain/0/backend/vif/5/0/state".to_owned()));
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran.lines().count(), 1, "{ran}");
    assert!(ran.starts_with("vif-test offline type_if=vif"), "{ran}");
    assert!(ran.contains("XENBUS_PATH=backend/vif/9/0"), "{ran}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In a driver domain the sweep leaves alone the backends of the domain
/// relocd runs in (its own vif, served from dom0) and those of domains the
/// security policy will not let it look up: only a domain Xen says does
/// not exist is gone.
#[test]
fn start_up_in_a_driver_domain_keeps_its_own_and_denied_domains_backends() {
    use relocd_hypercall::abi::domctl::cmd;
    use relocd_hypercall::{errno, Op};
    let dir = scratch("orphans-dd");
    let log = dir.join("hotplug.log");
    let script = recording_script(&dir, "vif-test", &log);
    // relocd in domain 1, which the fake does not know (a lookup of it
    // fails as one of a missing domain would)
    let x = FakeXen::new();
    x.add_domain(FakeDomain::pv(0, 16, 1));
    x.add_domain(FakeDomain::pv(5, 256, 1));
    let keys = |ids: &[u16]| -> Vec<(String, String)> {
        ids.iter()
            .flat_map(|d| {
                [
                    (
                        format!("/local/domain/0/backend/vif/{d}/0/state"),
                        "4".into(),
                    ),
                    (
                        format!("/local/domain/0/backend/vif/{d}/0/script"),
                        script.clone(),
                    ),
                ]
            })
            .collect()
    };
    let initial = keys(&[1, 5, 9]);
    let pairs: Vec<(&str, &str)> = initial
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = FakeXenstored::new(&pairs).store.clone();
    let start = |store: &super::xenstore::fake::Store| {
        let b = XenBackend::with_store(x.clone(), store_of(store.clone()))
            .with_device_host(device_host(&dir, &[]))
            .with_own_domid(1);
        drop(engine(b, &dir));
    };
    start(&store);
    let left: Vec<String> = store.lock().unwrap().keys().cloned().collect();
    assert!(left.iter().all(|k| !k.contains("/vif/9/")), "{left:?}");
    for d in [1, 5] {
        assert!(
            left.contains(&format!("/local/domain/0/backend/vif/{d}/0/state")),
            "domain {d}: {left:?}"
        );
    }
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran.lines().count(), 1, "{ran}");
    assert!(ran.contains("XENBUS_PATH=backend/vif/9/0"), "{ran}");

    // every lookup denied, as FLASK denies relocd_t domains of other
    // types: nothing is taken down, not even a domain that is gone
    let pairs: Vec<(String, String)> = keys(&[5, 9]);
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = FakeXenstored::new(&pairs).store.clone();
    x.fail_always(Op::Domctl(cmd::GETDOMAININFO), errno::EACCES);
    start(&store);
    x.stop_failing();
    let left: Vec<String> = store.lock().unwrap().keys().cloned().collect();
    assert_eq!(left.len(), 4, "{left:?}");
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran.lines().count(), 1, "no script ran: {ran}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A hotplug script that fails on the destination fails the migration
/// before its commit: the guest runs on at the source with its devices,
/// the destination keeps nothing, and the source's operator reads the
/// script's own words.
#[test]
fn a_failing_hotplug_script_on_the_destination_leaves_the_guest_where_it_was() {
    use super::test_guest::{self, DOMID};
    use std::os::unix::fs::PermissionsExt;
    let g = test_guest::guest();
    let dir_a = scratch("badscript-a");
    let dir_b = scratch("badscript-b");
    let log = dir_a.join("hotplug.log");
    let disk = dir_a.join("shared.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let vif = recording_script(&dir_a, "vif-test", &log);
    // The block script refuses `add` (as Xen's does for a device another
    // domain has open read-write), and records `remove`.
    let blk = dir_a.join("block");
    std::fs::write(
        &blk,
        format!(
            "#!/bin/sh\necho \"block $*\" >> {}\n\
             [ \"$1\" = add ] && {{ echo 'device in use by domain 3' >&2; exit 1; }}\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&blk, std::fs::Permissions::from_mode(0o755)).unwrap();
    let blk = blk.display().to_string();
    give_devices(&g, &dir_a, &vif, &blk, &disk);
    let a = engine(
        XenBackend::with_store(g.xen.clone(), store_of(g.store.clone())),
        &dir_a,
    );
    let (xb, bstore, port, t) = receiving_host(&dir_b, &["br-test"]);
    let e = a.migrate(&req("web1", port), &mut NoProgress).unwrap_err();
    t.join().unwrap();
    assert!(e.message.contains("a hotplug script failed"), "{e:?}");
    assert!(e.message.contains("keeps running here"), "{e:?}");
    let i = g.xen.domain_info(DOMID).unwrap();
    assert!(!i.shutdown() && !i.paused(), "A runs it again: {i:?}");
    assert!(g
        .store
        .lock()
        .unwrap()
        .contains_key(&format!("/local/domain/0/backend/vbd/{DOMID}/51712/state")));
    assert_eq!(domains(&xb), 1, "B destroyed its copy");
    let left: Vec<String> = bstore
        .lock()
        .unwrap()
        .keys()
        // (the fake keeps a removed node's permissions aside)
        .filter(|k| !k.starts_with("perms:"))
        .filter(|k| k.contains("/backend/") || k.starts_with("/libxl/"))
        .cloned()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let ran = std::fs::read_to_string(&log).unwrap();
    assert!(
        ran.contains("block add") && ran.contains("block remove"),
        "{ran}"
    );
    drop(g);
    std::fs::remove_dir_all(&dir_a).unwrap();
    std::fs::remove_dir_all(&dir_b).unwrap();
}
