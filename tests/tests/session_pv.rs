//! PV images through the session drivers over loopback TCP: a fake PV
//! source that brings its own records (`SourceGuest::stream_records`) and a
//! recording sink. The records must arrive in Xen's saver's order, with the
//! exact bodies, the static and p2m records before any page and the tail
//! records after the last one, and the pages must match; offline and live.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use relocd::session::{
    run_dest, run_source, Clock, DestOptions, DestReport, FileJournal, SessionError, SourceOptions,
};
use relocd_core::guest::{
    GuestInfo, GuestType, PageType, Pfn, RecordPoint, SinkGuest, SourceGuest, PAGE_SIZE,
};
use relocd_core::protocol::{AdmissionRequest, RefuseReason};
use relocd_core::stream::RecordType;

const PAGES: u64 = 1500;
/// An L1 page table (has data) and an unallocated pfn (no data).
const TABLE_PFN: u64 = 3;
const HOLE_PFN: u64 = 5;

fn t(r: RecordType) -> u32 {
    r.into()
}

fn vcpu_body(id: u32, ctx: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(ctx);
    b
}

/// The records a 64-bit PV guest with two vCPUs gives at each point.
fn records(point: RecordPoint) -> Vec<(u32, Vec<u8>)> {
    match point {
        RecordPoint::Static => {
            let cpuid: Vec<u8> = (0..48u8).collect(); // two 24-octet leaves
            let msrs: Vec<u8> = (100..116u8).collect(); // one 16-octet entry
            vec![
                (t(RecordType::X86PvInfo), vec![8, 4, 0, 0, 0, 0, 0, 0]),
                (t(RecordType::X86CpuidPolicy), cpuid),
                (t(RecordType::X86MsrPolicy), msrs),
            ]
        }
        RecordPoint::StartOfStream => {
            // pfns 0..1499 need three p2m frames (512 entries each).
            let mut b = Vec::new();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&((PAGES - 1) as u32).to_le_bytes());
            for f in [0x40u64, 0x41, 0x42] {
                b.extend_from_slice(&f.to_le_bytes());
            }
            vec![(t(RecordType::X86PvP2mFrames), b)]
        }
        RecordPoint::EndOfCheckpoint => {
            let mut tsc = vec![0u8; 24];
            tsc[0] = 1; // mode
            tsc[4..8].copy_from_slice(&2_000_000u32.to_le_bytes());
            tsc[8..16].copy_from_slice(&123_456_789u64.to_le_bytes());
            tsc[16] = 7; // incarnation
            let shared: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7) as u8).collect();
            let basic0: Vec<u8> = (0..5168).map(|i| (i % 251) as u8).collect();
            let basic1: Vec<u8> = (0..5168).map(|i| (i % 13) as u8).collect();
            vec![
                (t(RecordType::X86TscInfo), tsc),
                (t(RecordType::SharedInfo), shared),
                (t(RecordType::X86PvVcpuBasic), vcpu_body(0, &basic0)),
                (t(RecordType::X86PvVcpuExtended), vcpu_body(0, &[9; 80])),
                (t(RecordType::X86PvVcpuXsave), vcpu_body(0, &[3; 64])),
                (t(RecordType::X86PvVcpuMsrs), vcpu_body(0, &[5; 32])),
                (t(RecordType::X86PvVcpuBasic), vcpu_body(1, &basic1)),
            ]
        }
    }
}

fn page(pfn: u64, version: u32) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    p[..8].copy_from_slice(&pfn.to_le_bytes());
    p[8..12].copy_from_slice(&version.to_le_bytes());
    p[PAGE_SIZE - 1] = (pfn % 256) as u8;
    p
}

fn page_type(pfn: u64) -> PageType {
    match pfn {
        TABLE_PFN => PageType::L1TAB,
        HOLE_PFN => PageType::XTAB,
        _ => PageType::NOTAB,
    }
}

/// A PV source: pages whose contents name their pfn and version; while
/// live and running, each dirty-log read finds pfns 10..20 rewritten
/// (for the first two rounds).
struct FakePvSource {
    versions: Vec<u32>,
    live: bool,
    suspended: bool,
    rounds: u32,
    points: Vec<RecordPoint>,
    destroyed: bool,
}

impl FakePvSource {
    fn new() -> Self {
        FakePvSource {
            versions: vec![0; PAGES as usize],
            live: false,
            suspended: false,
            rounds: 0,
            points: Vec::new(),
            destroyed: false,
        }
    }
}

impl SourceGuest for FakePvSource {
    type Error = &'static str;

    fn info(&self) -> Result<GuestInfo, &'static str> {
        Ok(GuestInfo {
            guest_type: GuestType::Pv,
            p2m_size: PAGES,
            nr_pages: PAGES - 1,
            vcpus: 2,
        })
    }
    fn enable_logdirty(&mut self) -> Result<(), &'static str> {
        self.live = true;
        Ok(())
    }
    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, &'static str> {
        bitmap.fill(0);
        if !self.live || self.suspended || self.rounds >= 2 {
            return Ok(0);
        }
        self.rounds += 1;
        for pfn in 10..20u64 {
            self.versions[pfn as usize] += 1;
            bitmap[(pfn / 64) as usize] |= 1 << (pfn % 64);
        }
        Ok(10)
    }
    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, &'static str> {
        let mut n = 0;
        for (i, &pfn) in pfns.iter().enumerate() {
            let ty = page_type(pfn);
            types[i] = ty;
            if ty.has_data() {
                let v = self.versions[pfn as usize];
                data[n * PAGE_SIZE..(n + 1) * PAGE_SIZE].copy_from_slice(&page(pfn, v));
                n += 1;
            }
        }
        Ok(n)
    }
    fn pause(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
    fn suspend(&mut self) -> Result<(), &'static str> {
        self.suspended = true;
        Ok(())
    }
    fn resume(&mut self) -> Result<(), &'static str> {
        self.suspended = false;
        Ok(())
    }
    fn vcpu_context(&mut self, _: u32, _: &mut [u8]) -> Result<usize, &'static str> {
        Err("a PV guest's vCPUs travel as its own records")
    }
    fn destroy(&mut self) -> Result<(), &'static str> {
        self.destroyed = true;
        Ok(())
    }
    fn stream_records(
        &mut self,
        point: RecordPoint,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), &'static str> {
        if point == RecordPoint::EndOfCheckpoint && !self.suspended {
            return Err("tail records asked of a running guest");
        }
        self.points.push(point);
        for (rtype, body) in records(point) {
            out(rtype, &body);
        }
        Ok(())
    }
}

/// What the sink saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Record(u32, Vec<u8>),
    Pages,
    Complete,
    Unpause,
    Destroy,
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    memory: Vec<Option<Vec<u8>>>,
    types: Vec<Option<PageType>>,
}

struct RecordingSink(Arc<Mutex<Log>>);

impl SinkGuest for RecordingSink {
    type Error = &'static str;

    fn populate(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<(), &'static str> {
        let mut l = self.0.lock().unwrap();
        for (&pfn, &ty) in pfns.iter().zip(types) {
            l.types[pfn as usize] = Some(ty);
        }
        Ok(())
    }
    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
    ) -> Result<(), &'static str> {
        let mut l = self.0.lock().unwrap();
        if l.seen.last() != Some(&Seen::Pages) {
            l.seen.push(Seen::Pages);
        }
        let mut k = 0;
        for (&pfn, ty) in pfns.iter().zip(types) {
            if ty.has_data() {
                l.memory[pfn as usize] = Some(data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE].to_vec());
                k += 1;
            }
        }
        Ok(())
    }
    fn set_vcpu_context(&mut self, _: u32, _: &[u8]) -> Result<(), &'static str> {
        Err("a PV image carries no HVM_CONTEXT")
    }
    fn record(&mut self, rtype: u32, body: &[u8]) -> Result<(), &'static str> {
        self.0
            .lock()
            .unwrap()
            .seen
            .push(Seen::Record(rtype, body.to_vec()));
        Ok(())
    }
    fn complete(&mut self) -> Result<(), &'static str> {
        self.0.lock().unwrap().seen.push(Seen::Complete);
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), &'static str> {
        self.0.lock().unwrap().seen.push(Seen::Unpause);
        Ok(())
    }
    fn destroy(&mut self) -> Result<(), &'static str> {
        self.0.lock().unwrap().seen.push(Seen::Destroy);
        Ok(())
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("relocd-session-pv-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The destination's result and the admission it was asked.
type DestEnd = (Result<DestReport, SessionError>, Option<AdmissionRequest>);

fn spawn_dest(log: Arc<Mutex<Log>>, dir: &std::path::Path) -> (SocketAddr, JoinHandle<DestEnd>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let journal = dir.join("dest.journal");
    let h = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut j = FileJournal::open(&journal).unwrap();
        let mut asked = None;
        let r = run_dest(
            s,
            |req: &AdmissionRequest,
             _config: Option<&[u8]>|
             -> Result<RecordingSink, RefuseReason> {
                asked = Some(req.clone());
                let mut l = log.lock().unwrap();
                l.memory = vec![None; req.p2m_size as usize];
                l.types = vec![None; req.p2m_size as usize];
                Ok(RecordingSink(log.clone()))
            },
            &DestOptions::default(),
            &mut j,
            &Clock::new(),
        );
        (r, asked)
    });
    (addr, h)
}

fn run(live: bool, tag: &str) -> (FakePvSource, Arc<Mutex<Log>>, u32) {
    let dir = temp_dir(tag);
    let log = Arc::new(Mutex::new(Log::default()));
    let (addr, dest) = spawn_dest(log.clone(), &dir);
    let mut src = FakePvSource::new();
    let mut sj = FileJournal::open(&dir.join("source.journal")).unwrap();
    let link = TcpStream::connect(addr).unwrap();
    let rep = run_source(
        link,
        &mut src,
        &SourceOptions::new(11, "pv1", live),
        &mut sj,
        &mut |_| {},
        &AtomicBool::new(false),
        &Clock::new(),
    )
    .unwrap();
    let (drep, asked) = dest.join().unwrap();
    let drep = drep.unwrap();
    let asked = asked.unwrap();
    assert_eq!(asked.guest_type, GuestType::Pv);
    assert_eq!(asked.vcpus, 2);
    assert_eq!(drep.image_bytes, rep.image_bytes);
    assert_eq!(drep.pages_applied, rep.pages_sent);
    std::fs::remove_dir_all(&dir).unwrap();
    (src, log, rep.rounds)
}

fn check(src: &FakePvSource, log: &Log) {
    assert!(
        src.destroyed,
        "the source copy is destroyed after the commit"
    );
    assert_eq!(
        src.points,
        [
            RecordPoint::Static,
            RecordPoint::StartOfStream,
            RecordPoint::EndOfCheckpoint
        ]
    );
    let mut want: Vec<Seen> = Vec::new();
    for p in [RecordPoint::Static, RecordPoint::StartOfStream] {
        want.extend(records(p).into_iter().map(|(t, b)| Seen::Record(t, b)));
    }
    want.push(Seen::Pages);
    want.extend(
        records(RecordPoint::EndOfCheckpoint)
            .into_iter()
            .map(|(t, b)| Seen::Record(t, b)),
    );
    want.extend([Seen::Complete, Seen::Unpause]);
    assert_eq!(log.seen.len(), want.len(), "{:?}", log.seen.len());
    for (i, (got, want)) in log.seen.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "event {i}");
    }
    for pfn in 0..PAGES {
        let ty = page_type(pfn);
        assert_eq!(log.types[pfn as usize], Some(ty), "type of pfn {pfn}");
        let got = log.memory[pfn as usize].as_deref();
        if ty.has_data() {
            let v = src.versions[pfn as usize];
            assert_eq!(got, Some(&page(pfn, v)[..]), "contents of pfn {pfn}");
        } else {
            assert_eq!(got, None, "pfn {pfn} has no data");
        }
    }
}

#[test]
fn offline_pv_image_carries_the_guest_records_in_order() {
    let (src, log, rounds) = run(false, "offline");
    assert_eq!(rounds, 0);
    check(&src, &log.lock().unwrap());
}

#[test]
fn live_pv_image_carries_the_guest_records_in_order() {
    let (src, log, rounds) = run(true, "live");
    assert!(rounds >= 1, "{rounds}");
    assert!(src.rounds >= 1);
    assert!(
        src.versions[10] >= 1,
        "pages were rewritten during the rounds"
    );
    check(&src, &log.lock().unwrap());
}
