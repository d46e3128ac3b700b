//! The Xen backend's saves, through the engine, on the fake hypervisor:
//! the file's records and pages decoded back, the guest's fate, failures.

use std::path::Path;
use std::sync::Arc;

use crate::api::{CommandError, ErrorKind, NoProgress, SaveRequest, TransferSummary};
use crate::engine::Service;
use relocd_core::stream::reader::Layer;
use relocd_core::stream::reader::{Decoder, Event, Options};
use relocd_hypercall::abi::xen::VcpuGuestContext;
use relocd_hypercall::{Op, XenOps};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::backend::xen::test_guest::*;

/// What a saved file holds: libxc record names in order, the last
/// contents of each page, vCPU bodies.
#[derive(Default)]
struct Parsed {
    records: Vec<&'static str>,
    /// Every libxc record that is not pages: type and body.
    others: Vec<(u32, Vec<u8>)>,
    /// The last type each pfn was sent with.
    types: BTreeMap<u64, relocd_core::stream::PageType>,
    pages: BTreeMap<u64, Vec<u8>>,
    vcpus: Vec<(u32, Vec<u8>)>,
    config: Vec<u8>,
}

fn parse(bytes: &[u8]) -> Parsed {
    let mut dec = Decoder::new(Options::default());
    let mut out = Parsed::default();
    let mut input = bytes;
    let mut with_data: Vec<u64> = Vec::new();
    let mut rtype = 0u32;
    let mut body = Vec::new();
    loop {
        let step = dec.push(input).unwrap();
        input = &input[step.consumed..];
        match step.event {
            Some(Event::XlConfig { data, .. }) => out.config.extend_from_slice(data),
            Some(Event::Record(r)) if r.layer == Layer::Libxc => {
                out.records.push(r.name());
                rtype = r.rtype;
                with_data.clear();
                body.clear();
            }
            Some(Event::Pfn { entry, .. }) => {
                out.types.insert(entry.pfn, entry.page_type);
                if entry.page_type.has_data() {
                    with_data.push(entry.pfn)
                }
            }
            Some(Event::PageData { page, offset, data }) => {
                let pfn = with_data[page as usize];
                let e = out.pages.entry(pfn).or_default();
                if offset == 0 {
                    e.clear();
                }
                e.extend_from_slice(data);
            }
            Some(Event::Body { data, .. }) => body.extend_from_slice(data),
            Some(Event::Vcpu(h)) if rtype == 4 => out.vcpus.push((h.vcpu_id, Vec::new())),
            Some(Event::RecordEnd(r)) if r.layer == Layer::Libxc => {
                if r.rtype == 4 {
                    out.vcpus.last_mut().unwrap().1 = body.clone();
                }
                if ![0, 1, 0x10].contains(&r.rtype) {
                    out.others.push((r.rtype, raw_body(bytes, r)));
                }
            }
            Some(Event::End) => {}
            Some(_) => {}
            None if input.is_empty() => break,
            None => {}
        }
    }
    dec.finish().unwrap();
    out
}

/// A record's body, from the file itself.
fn raw_body(bytes: &[u8], r: relocd_core::stream::reader::RecordInfo) -> Vec<u8> {
    let at = r.offset as usize + 8;
    bytes[at..at + r.length as usize].to_vec()
}

fn word(page: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap())
}

/// What `relocd save` asks, as the tests name it.
#[derive(Clone, Debug, Default)]
struct SaveOptions {
    live: bool,
    keep_running: bool,
    bandwidth: Option<u64>,
}

/// Saves the test guest through the engine, with libxl's record of it in
/// a scratch userdata directory beside `file`.
fn run(g: &Guest, file: &Path, opts: &SaveOptions) -> Result<TransferSummary, CommandError> {
    // beside the file's scratch directory, which names the test, so tests
    // running at once never share a journal
    let scratch = file.parent().expect("a file in a scratch directory");
    let dir = scratch.with_extension("state");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = engine(g, &dir, None);
    let r = e.save(
        &SaveRequest {
            domain: DOMID.to_string(),
            file: file.to_owned(),
            keep_running: opts.keep_running,
            live: opts.live,
            bandwidth_bytes_per_s: opts.bandwidth,
        },
        &mut NoProgress,
    );
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The names in `dir` besides `keep`: what a save left behind.
fn leftovers(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

#[test]
fn offline_save_writes_a_pv_stream_and_destroys_the_guest() {
    let g = guest();
    let dir = scratch("offline");
    let file = dir.join("web1.save");
    let s = run(&g, &file, &SaveOptions::default()).unwrap();
    assert_eq!(s.rounds, 1);
    assert_eq!(s.pages_sent, PAGES);
    assert!(g.xen.domain(DOMID).is_none(), "the guest is destroyed");
    assert!(!g
        .store
        .lock()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("/local/domain/4") || k.starts_with("/vm/0000")));
    assert_eq!(leftovers(&dir, "web1.save"), Vec::<String>::new());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(s.bytes_sent, bytes.len() as u64);
    let p = parse(&bytes);
    assert_eq!(p.config, b"{\"c_info\":{\"name\":\"web1\"}}\0");
    let mut names = p.records.clone();
    names.dedup();
    assert_eq!(
        names,
        [
            "X86_PV_INFO",
            "X86_CPUID_POLICY",
            "X86_MSR_POLICY",
            "STATIC_DATA_END",
            "X86_PV_P2M_FRAMES",
            "PAGE_DATA",
            "X86_TSC_INFO",
            "SHARED_INFO",
            "X86_PV_VCPU_BASIC",
            "X86_PV_VCPU_EXTENDED",
            "END"
        ]
    );
    assert_eq!(p.pages.len() as u64, PAGES);
    assert!(p.pages[&10].starts_with(b"hello from pfn 10"));
    // page tables carry pfns; Xen's L4 slots are cleared; the rest kept
    let l4 = &p.pages[&1];
    assert_eq!(word(l4, 0), (2 << 12) | 0x67);
    assert_eq!(word(l4, 5), 0x1234_0000);
    assert_eq!(word(l4, 256), 0);
    assert_eq!(word(&p.pages[&2], 3), (1 << 63) | (3 << 12) | 0x63);
    // the p2m leaves hold mfns, as in the guest
    assert_eq!(word(&p.pages[&596], 7), MFN0 + 7);
    // vCPU 0's cr3 is a pfn
    let (id, basic) = &p.vcpus[0];
    assert_eq!(*id, 0);
    let ctx = VcpuGuestContext::from_bytes(basic).unwrap();
    assert_eq!(ctx.ctrlreg[3], 1 << 12);
    assert_eq!(ctx.user_regs.rdx, 3, "vCPU 0's start-info frame as a pfn");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keep_running_resumes_as_a_cancelled_suspend() {
    let g = guest();
    let dir = scratch("keep");
    let file = dir.join("web1.save");
    let opts = SaveOptions {
        keep_running: true,
        ..Default::default()
    };
    run(&g, &file, &opts).unwrap();
    let d = g.xen.domain(DOMID).expect("the guest is still there");
    let info = g.xen.domain_info(DOMID).unwrap();
    assert!(!info.shutdown() && !info.paused(), "{info:?}");
    assert_eq!(
        d.vcpus[0].user_regs.rax, 1,
        "the suspend hypercall returns 1"
    );
    assert_eq!(
        d.vcpus[0].ctrlreg[3],
        (MFN0 + 1) << 12,
        "its own state is not normalised"
    );
    assert!(!d.logdirty);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn live_save_runs_rounds_and_resends_dirtied_pages() {
    let g = guest();
    let dir = scratch("live");
    let file = dir.join("web1.save");
    // The guest writes before each log-dirty call, so pages are dirtied
    // during the rounds whatever the scheduler does; the last value that
    // made it into each page is what the file must hold.
    let stepped = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    {
        let stepped = stepped.clone();
        let n = std::sync::atomic::AtomicU64::new(1 << 32);
        g.xen.before(
            Op::Domctl(relocd_hypercall::abi::domctl::cmd::SHADOW_OP),
            move |x| {
                for pfn in 80..90 {
                    let v = n.fetch_add(1, Ordering::SeqCst);
                    if x.guest_write(DOMID, MFN0 + pfn, 0, &v.to_le_bytes()) {
                        stepped.lock().unwrap().insert(pfn, v);
                    }
                }
            },
        );
    }
    // and a thread writes other pages at any moment, racing the rounds
    let writer = {
        let x = g.xen.clone();
        let stop = g.stop.clone();
        std::thread::spawn(move || {
            let mut last = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let pfn = 20 + n % 50;
                if x.guest_write(DOMID, MFN0 + pfn, 0, &n.to_le_bytes()) {
                    last.insert(pfn, n);
                }
                n += 1;
                if x.domain_info(DOMID).map_or(true, |i| i.shutdown()) {
                    break;
                }
            }
            last
        })
    };
    // Round 1 capped at 8 MiB/s (~0.3 s for the 600 pages).
    let opts = SaveOptions {
        live: true,
        bandwidth: Some(8 << 20),
        ..Default::default()
    };
    let s = run(&g, &file, &opts).unwrap();
    g.stop.store(true, Ordering::SeqCst);
    let mut last = writer.join().unwrap();
    let stepped = stepped.lock().unwrap().clone();
    assert_eq!(stepped.len(), 10, "the guest wrote before log-dirty began");
    last.extend(stepped);
    assert!(s.rounds >= 2, "{s:?}");
    assert!(
        s.pages_sent >= PAGES + 10,
        "the dirtied pages went again: {s:?}"
    );
    let p = parse(&std::fs::read(&file).unwrap());
    assert_eq!(p.pages.len() as u64, PAGES);
    for (pfn, n) in &last {
        assert_eq!(
            word(&p.pages[pfn], 0),
            *n,
            "pfn {pfn}: the guest's last value"
        );
    }
    assert!(p.records.iter().filter(|r| **r == "PAGE_DATA").count() >= 2);
    assert!(g.xen.domain(DOMID).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failure_mid_save_leaves_the_guest_running_and_no_file() {
    let g = guest();
    let dir = scratch("fail");
    let file = dir.join("web1.save");
    // the first getpageframeinfo3 (the guest is suspended by then) fails
    g.xen.fail_on(
        Op::Domctl(relocd_hypercall::abi::domctl::cmd::GETPAGEFRAMEINFO3),
        5,
    );
    let e = run(&g, &file, &SaveOptions::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e:?}");
    let info = g.xen.domain_info(DOMID).unwrap();
    assert!(!info.shutdown() && !info.paused(), "resumed: {info:?}");
    assert_eq!(g.xen.domain(DOMID).unwrap().vcpus[0].user_regs.rax, 1);
    assert!(!file.exists());
    assert_eq!(leftovers(&dir, "web1.save"), Vec::<String>::new());
    // live: log-dirty is off again
    g.xen.fail_on(
        Op::Domctl(relocd_hypercall::abi::domctl::cmd::GETPAGEFRAMEINFO3),
        5,
    );
    let live = SaveOptions {
        live: true,
        ..Default::default()
    };
    run(&g, &file, &live).unwrap_err();
    let d = g.xen.domain(DOMID).unwrap();
    assert!(!d.logdirty);
    assert!(!g.xen.domain_info(DOMID).unwrap().shutdown());
    // an unwritable place: refused before anything happens to the guest
    let e = run(
        &g,
        Path::new("/nonexistent-dir/x.save"),
        &SaveOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(!g.xen.domain_info(DOMID).unwrap().shutdown());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_dirty_left_on_by_a_killed_save_is_restarted() {
    let g = guest();
    g.xen.logdirty_enable(DOMID).unwrap();
    let dir = scratch("stale");
    let file = dir.join("web1.save");
    let opts = SaveOptions {
        live: true,
        keep_running: true,
        ..Default::default()
    };
    run(&g, &file, &opts).unwrap();
    assert!(!g.xen.domain(DOMID).unwrap().logdirty);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_save_writes_the_sink_builds_again() {
    use crate::backend::xen::pv_sink::{PvCreate, PvSink};
    use relocd_core::guest::{PageType as GuestPageType, SinkGuest};
    use relocd_hypercall::fake::FAKE_MFN_OFFSET;
    let g = guest();
    let dir = scratch("roundtrip");
    let file = dir.join("web1.save");
    let opts = SaveOptions {
        keep_running: true,
        ..Default::default()
    };
    run(&g, &file, &opts).unwrap();
    let p = parse(&std::fs::read(&file).unwrap());
    let x = &g.xen;
    let req = PvCreate {
        name: "web1-copy".into(),
        uuid: [9; 16],
        max_memkb: PAGES * 4 + 1024,
        vcpus: 1,
    };
    let mut sink = PvSink::create(x, connect(&g), &req).unwrap();
    let d = sink.domid();
    assert_ne!(d, DOMID);
    let shinfo_frame = x.domain_info(d).unwrap().shared_info_frame;
    let mfn = |pfn: u64| pfn + FAKE_MFN_OFFSET;
    // static records (PV info, policies, p2m frames) before the pages
    for (t, body) in &p.others {
        if [2, 3, 0x11, 0x12].contains(t) {
            sink.record(*t, body).unwrap();
        }
    }
    for (&pfn, &t) in &p.types {
        let ty = GuestPageType::from_raw(u32::from(t.nibble()) << 28);
        sink.populate(&[pfn], &[ty]).unwrap();
        let data = p.pages.get(&pfn).cloned().unwrap_or_default();
        sink.write_pages(&[pfn], &[ty], &data).unwrap();
    }
    for (t, body) in &p.others {
        if ![2, 3, 0x11, 0x12].contains(t) {
            sink.record(*t, body).unwrap();
        }
    }
    sink.complete().unwrap();
    let nd = x.domain(d).unwrap();
    // page tables hold the new machine frames again
    let l4 = nd.memory.get(&mfn(1)).unwrap();
    assert_eq!(word(&l4[..], 0), (mfn(2) << 12) | 0x67);
    assert_eq!(
        word(&nd.memory.get(&mfn(2)).unwrap()[..], 3),
        (1 << 63) | (mfn(3) << 12) | 0x63
    );
    // vCPU 0 on the new L4, its start info found and rewritten
    assert_eq!(nd.vcpus[0].ctrlreg[3], mfn(1) << 12);
    assert_eq!(nd.vcpus[0].user_regs.rdx, mfn(3));
    let si = nd.memory.get(&mfn(3)).unwrap();
    assert_eq!(word(&si[..], 56 / 8), mfn(10));
    assert_eq!(word(&si[..], 72 / 8), mfn(11));
    let ports = x.unbound_ports(d);
    assert_eq!(ports.len(), 2);
    assert_eq!(
        u64::from(u32::from_le_bytes(si[64..68].try_into().unwrap())),
        u64::from(ports[0].0)
    );
    // the L4 pinned; the guest's p2m names the new frames
    assert!(
        x.pinned_tables(d).contains(&(mfn(1), 4)),
        "{:?}",
        x.pinned_tables(d)
    );
    assert_eq!(word(&nd.memory.get(&mfn(596)).unwrap()[..], 7), mfn(7));
    assert_eq!(
        word(&nd.memory.get(&mfn(597)).unwrap()[..], 599 - 512),
        mfn(599)
    );
    // grant entries for the console and store rings
    let console = nd.grant_entry(0).unwrap();
    assert_eq!(
        (console.flags, console.domid, u64::from(console.frame)),
        (1, 0, mfn(11))
    );
    let store = nd.grant_entry(1).unwrap();
    assert_eq!(u64::from(store.frame), mfn(10));
    // shared info: the guest's vCPU info and arch fields, nothing pending,
    // every channel masked, no p2m tree yet
    let shi = nd.grant_table.get(&shinfo_frame).unwrap();
    assert_eq!(word(&shi[..], 3088 / 8), PAGES, "arch.max_pfn carried over");
    assert_eq!(word(&shi[..], 3096 / 8), 0);
    assert!(shi[2048..2560].iter().all(|&b| b == 0));
    assert!(shi[2560..3072].iter().all(|&b| b == 0xff));
    assert_eq!(nd.tsc.unwrap().gtsc_khz, 2_000_000);
    // xenstore: the tree and the introduction
    let s = g.store.lock().unwrap();
    let get = |k: &str| s.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        get(&format!("/local/domain/{d}/name")).as_deref(),
        Some("web1-copy")
    );
    assert_eq!(
        get(&format!("/local/domain/{d}/console/ring-ref")),
        Some(mfn(11).to_string())
    );
    assert_eq!(
        get(&format!("/local/domain/{d}/store/port")),
        Some(ports[0].0.to_string())
    );
    assert!(s.contains_key(&format!("Introduce:{d}")));
    drop(s);
    // still paused until told
    assert!(x.domain_info(d).unwrap().paused());
    sink.unpause().unwrap();
    assert!(!x.domain_info(d).unwrap().paused());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refused_image_leaves_no_domain() {
    use crate::backend::xen::pv_sink::{PvCreate, PvSink};
    use relocd_core::guest::SinkGuest;
    let g = guest();
    let req = PvCreate {
        name: "bad".into(),
        uuid: [1; 16],
        max_memkb: 4096,
        vcpus: 1,
    };
    let mut sink = PvSink::create(&g.xen, connect(&g), &req).unwrap();
    let d = sink.domid();
    // named from the start, so a restarted daemon can find it
    let name_key = format!("/local/domain/{d}/name");
    assert_eq!(
        g.store.lock().unwrap().get(&name_key).map(Vec::as_slice),
        Some(&b"bad"[..])
    );
    // a 32-bit guest is refused
    let e = sink.record(2, &[4, 3, 0, 0, 0, 0, 0, 0]).unwrap_err();
    assert!(e.to_string().contains("64-bit"), "{e}");
    // pages before the p2m frames are refused
    sink.record(2, &[8, 4, 0, 0, 0, 0, 0, 0]).unwrap();
    assert!(sink
        .populate(&[0], &[relocd_core::guest::PageType::NOTAB])
        .is_err());
    // a p2m far larger than the memory is refused
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(sink.record(3, &body).is_err());
    sink.destroy().unwrap();
    assert!(g.xen.domain(d).is_none());
    assert!(!g.store.lock().unwrap().contains_key(&name_key));
}
