//! A deterministic two-sided harness for the protocol: `Pair` runs a
//! [`Source`] and a [`Dest`] against fake guests and an in-memory link,
//! with a simulated clock, and injects faults (cuts, stalls, kills) at any
//! message.
//!
//! The hosts here are the reference for the real daemon's driving loop:
//! they follow the call contracts of `Source`/`Dest`, the journal contract
//! and the recovery rules of the module doc.

use super::journal::{recover_dest, recover_source, DestRecovery, RecordKind, SourceRecovery};
use super::msg::{self, Hello, Msg, VersionRefused};
use super::*;
use crate::guest::{GuestInfo, GuestType, PageType, Pfn, SinkGuest, SourceGuest, PAGE_SIZE};
use crate::precopy::{
    self, drive, Decision, DefaultPolicy, PolicyConfig, Precopy, PrecopyConfig, MAX_BATCH_SIZE,
};
use crate::time::{Duration, Instant};
use std::collections::VecDeque;
use std::string::String;
use std::vec;
use std::vec::Vec;
use std::{format, println};

// ---------------------------------------------------------------- guests

/// xorshift64: tiny, seeded, deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Suspended,
    Destroyed,
}

const P2M: u64 = 512;
const VCPUS: u32 = 2;

/// A guest's memory and workload. The workload is a function of its
/// state: each step writes `writes` pages chosen by the PRNG, stamping the
/// step number, so the memory after N steps can be recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Machine {
    mem: Vec<u8>,
    steps: u64,
    rng: XorShift,
    writes: u64,
}

impl Machine {
    fn new(seed: u64, writes: u64) -> Self {
        let mut mem = vec![0u8; P2M as usize * PAGE_SIZE];
        for (i, b) in mem.iter_mut().enumerate() {
            *b = (i / PAGE_SIZE) as u8 ^ (i as u8);
        }
        Machine {
            mem,
            steps: 0,
            rng: XorShift(seed | 1),
            writes,
        }
    }

    /// One workload step; returns the pfns written.
    fn step(&mut self, dirty: Option<&mut [u64]>) {
        self.steps += 1;
        let mut dirty = dirty;
        for _ in 0..self.writes {
            let pfn = self.rng.next() % P2M;
            let off = pfn as usize * PAGE_SIZE + (self.steps as usize % (PAGE_SIZE - 8));
            self.mem[off..off + 8].copy_from_slice(&self.steps.to_le_bytes());
            if let Some(d) = dirty.as_deref_mut() {
                d[(pfn / 64) as usize] |= 1 << (pfn % 64);
            }
        }
    }

    fn vcpu_blob(&self, vcpu: u32) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&vcpu.to_le_bytes());
        b[4..12].copy_from_slice(&self.steps.to_le_bytes());
        b[12..].copy_from_slice(&self.rng.0.to_le_bytes());
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FakeError;

struct FakeSource {
    m: Machine,
    run: Run,
    logdirty: Option<Vec<u64>>,
}

impl FakeSource {
    fn tick(&mut self) {
        if self.run == Run::Running {
            self.m.step(self.logdirty.as_deref_mut());
        }
    }
}

impl SourceGuest for FakeSource {
    type Error = FakeError;
    fn info(&self) -> Result<GuestInfo, FakeError> {
        Ok(GuestInfo {
            guest_type: GuestType::Hvm,
            p2m_size: P2M,
            nr_pages: P2M,
            vcpus: VCPUS,
        })
    }
    fn enable_logdirty(&mut self) -> Result<(), FakeError> {
        self.logdirty = Some(vec![0; precopy::bitmap_words(P2M)]);
        Ok(())
    }
    fn disable_logdirty(&mut self) -> Result<(), FakeError> {
        self.logdirty = None;
        Ok(())
    }
    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, FakeError> {
        let log = self.logdirty.as_mut().ok_or(FakeError)?;
        bitmap[..log.len()].copy_from_slice(log);
        log.iter_mut().for_each(|w| *w = 0);
        Ok(precopy::count_dirty(bitmap, P2M).unwrap())
    }
    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, FakeError> {
        for (i, &pfn) in pfns.iter().enumerate() {
            types[i] = PageType::NOTAB;
            let src = &self.m.mem[pfn as usize * PAGE_SIZE..][..PAGE_SIZE];
            data[i * PAGE_SIZE..][..PAGE_SIZE].copy_from_slice(src);
        }
        Ok(pfns.len())
    }
    fn pause(&mut self) -> Result<(), FakeError> {
        self.run = Run::Paused;
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), FakeError> {
        self.run = Run::Running;
        Ok(())
    }
    fn suspend(&mut self) -> Result<(), FakeError> {
        assert_eq!(self.run, Run::Running);
        self.run = Run::Suspended;
        Ok(())
    }
    fn resume(&mut self) -> Result<(), FakeError> {
        assert_ne!(self.run, Run::Destroyed, "resuming a destroyed guest");
        self.run = Run::Running;
        Ok(())
    }
    fn vcpu_context(&mut self, vcpu: u32, buf: &mut [u8]) -> Result<usize, FakeError> {
        assert_eq!(self.run, Run::Suspended);
        let b = self.m.vcpu_blob(vcpu);
        buf[..b.len()].copy_from_slice(&b);
        Ok(b.len())
    }
    fn destroy(&mut self) -> Result<(), FakeError> {
        assert_ne!(self.run, Run::Running, "destroying a running source guest");
        self.run = Run::Destroyed;
        Ok(())
    }
}

struct FakeSink {
    m: Machine,
    populated: Vec<bool>,
    vcpus_set: u32,
    complete: bool,
    run: Run,
}

impl FakeSink {
    fn new() -> Self {
        FakeSink {
            m: Machine {
                mem: vec![0; P2M as usize * PAGE_SIZE],
                steps: 0,
                rng: XorShift(1),
                writes: 3,
            },
            populated: vec![false; P2M as usize],
            vcpus_set: 0,
            complete: false,
            run: Run::Paused,
        }
    }
    fn tick(&mut self) {
        if self.run == Run::Running {
            self.m.step(None);
        }
    }
}

impl SinkGuest for FakeSink {
    type Error = FakeError;
    fn populate(&mut self, pfns: &[Pfn], _types: &[PageType]) -> Result<(), FakeError> {
        for &p in pfns {
            *self.populated.get_mut(p as usize).ok_or(FakeError)? = true;
        }
        Ok(())
    }
    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        _types: &[PageType],
        data: &[u8],
    ) -> Result<(), FakeError> {
        assert_eq!(self.run, Run::Paused);
        for (i, &p) in pfns.iter().enumerate() {
            assert!(self.populated[p as usize]);
            self.m.mem[p as usize * PAGE_SIZE..][..PAGE_SIZE]
                .copy_from_slice(&data[i * PAGE_SIZE..][..PAGE_SIZE]);
        }
        Ok(())
    }
    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<(), FakeError> {
        if blob.len() != 20 || u32::from_le_bytes(blob[..4].try_into().unwrap()) != vcpu {
            return Err(FakeError);
        }
        self.m.steps = u64::from_le_bytes(blob[4..12].try_into().unwrap());
        self.m.rng = XorShift(u64::from_le_bytes(blob[12..20].try_into().unwrap()));
        self.vcpus_set += 1;
        Ok(())
    }
    fn complete(&mut self) -> Result<(), FakeError> {
        if self.vcpus_set != VCPUS {
            return Err(FakeError);
        }
        self.complete = true;
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), FakeError> {
        assert!(self.complete, "unpausing an incomplete copy");
        self.run = Run::Running;
        Ok(())
    }
    fn destroy(&mut self) -> Result<(), FakeError> {
        self.run = Run::Destroyed;
        Ok(())
    }
}

// ---------------------------------------------------------------- image
//
// A stand-in for the libxc stream inside image chunks: one record per
// chunk, `P` pages (count, pfns with types in bits 60-63, packed data),
// `V` vCPU state, `E` end.

fn page_record(pfns: &[Pfn], types: &[PageType], data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(b'P');
    out.extend_from_slice(&(pfns.len() as u32).to_le_bytes());
    for (p, t) in pfns.iter().zip(types) {
        out.extend_from_slice(&(p | (u64::from(t.raw()) << 32)).to_le_bytes());
    }
    out.extend_from_slice(data);
}

#[derive(Default)]
struct ImageReader {
    ended: bool,
    bad: bool,
}

impl ImageReader {
    fn apply(&mut self, chunk: &[u8], sink: &mut FakeSink) {
        let r = (|| -> Option<()> {
            match *chunk.first()? {
                b'P' => {
                    let n = u32::from_le_bytes(chunk.get(1..5)?.try_into().ok()?) as usize;
                    let mut pfns = Vec::new();
                    let mut types = Vec::new();
                    for i in 0..n {
                        let e =
                            u64::from_le_bytes(chunk.get(5 + 8 * i..13 + 8 * i)?.try_into().ok()?);
                        pfns.push(e & ((1 << 52) - 1));
                        types.push(PageType::from_raw((e >> 32) as u32));
                    }
                    let data = chunk.get(5 + 8 * n..)?;
                    drive::apply_batch(sink, &pfns, &types, data).ok()
                }
                b'V' => {
                    let v = u32::from_le_bytes(chunk.get(1..5)?.try_into().ok()?);
                    sink.set_vcpu_context(v, chunk.get(5..)?).ok()
                }
                b'E' => {
                    self.ended = true;
                    Some(())
                }
                _ => None,
            }
        })();
        if r.is_none() {
            self.bad = true;
        }
    }
}

// ---------------------------------------------------------------- link

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Right after `side` hands the frame to the link.
    Sent,
    /// Right after `side` has handled the frame.
    Received,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Connection reset: the trigger frame is delivered (`true`) or lost;
    /// nothing after it goes through; both ends see EOF once drained.
    Cut(bool),
    /// Nothing is delivered any more and no end sees an error.
    Stall,
    /// The daemon on `side` dies (SIGKILL) and restarts from its journal;
    /// its connection is reset.
    Kill,
    /// The frame's body is replaced by 0xff bytes.
    Garbage,
    /// The frame's length prefix is replaced by `u32::MAX`.
    Oversize,
    /// The frame is delivered twice (a message out of order).
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    side: Side,
    when: When,
    kind: &'static str,
    nth: u32,
    what: What,
}

#[derive(Default)]
struct Link {
    to_dst: VecDeque<Vec<u8>>,
    to_src: VecDeque<Vec<u8>>,
    cut: bool,
    stalled: bool,
    sent: Vec<(Side, &'static str)>,
}

impl Link {
    fn queue(&mut self, side: Side) -> &mut VecDeque<Vec<u8>> {
        match side {
            Side::Src => &mut self.to_dst,
            Side::Dst => &mut self.to_src,
        }
    }
    fn inbox(&mut self, side: Side) -> &mut VecDeque<Vec<u8>> {
        match side {
            Side::Src => &mut self.to_src,
            Side::Dst => &mut self.to_dst,
        }
    }
}

fn kind_of(frame: &[u8]) -> &'static str {
    msg::decode(&frame[4..])
        .map(|m| m.name())
        .unwrap_or("Garbage")
}

// ---------------------------------------------------------------- hosts

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Xfer {
    Idle,
    Live,
    Final,
    Done,
}

struct SrcHost {
    sm: Option<Source>,
    guest: FakeSource,
    journal: Vec<RecordKind>,
    pc: Option<Precopy<DefaultPolicy>>,
    policy: PolicyConfig,
    bandwidth: Option<u64>,
    bitmap: Vec<u64>,
    xfer: Xfer,
    next_send: Instant,
    link_reported: bool,
    outcome: Option<SourceOutcome>,
    /// What the destination said about a refusal or abort.
    peer_detail: String,
    recovery: Option<SourceRecovery>,
    batch: usize,
    rounds: Vec<Decision>,
    snapshot: Option<Machine>,
    /// Host faults to inject: the commit journal write fails; the operator
    /// cancels after this many live rounds.
    fail_journal: bool,
    cancel_after_round: Option<u32>,
}

struct DstHost {
    sm: Option<Dest>,
    sink: Option<FakeSink>,
    reader: ImageReader,
    journal: Vec<RecordKind>,
    link_reported: bool,
    outcome: Option<DestOutcome>,
    /// What the source said about an abort.
    peer_detail: String,
    recovery: Option<DestRecovery>,
    admission: Result<(), msg::Refused<'static>>,
    /// Host faults to inject at the destination.
    fail_complete: bool,
    fail_journal: bool,
    fail_unpause: bool,
    /// The sink fails to write this image chunk (1-based).
    fail_chunk: Option<u64>,
    /// The daemon shuts down when asked for admission.
    shutdown_at_admission: bool,
}

struct Pair {
    now: Instant,
    link: Link,
    src: SrcHost,
    dst: DstHost,
    fault: Option<Fault>,
    fired: bool,
    counts: Vec<((Side, When, &'static str), u32)>,
    buf: Vec<u8>,
}

fn guest_desc() -> GuestDesc {
    let info = GuestInfo {
        guest_type: GuestType::Hvm,
        p2m_size: P2M,
        nr_pages: P2M,
        vcpus: VCPUS,
    };
    assert_eq!(
        GuestDesc::new(&"x".repeat(65), [0; 16], info),
        Err(Error::LimitExceeded(Limit::NameTooLong))
    );
    GuestDesc::new("web1", [7; 16], info).unwrap()
}

impl Pair {
    fn new(seed: u64, live: bool) -> Self {
        let now = Instant::from_secs(1000);
        let src_cfg = SourceConfig {
            session: seed,
            live,
            features: Features::ALL,
            timeouts: Timeouts::default(),
            guest: guest_desc(),
            guest_config: None,
        };
        Pair {
            now,
            link: Link::default(),
            src: SrcHost {
                sm: Some(Source::new(src_cfg, now)),
                guest: FakeSource {
                    m: Machine::new(seed, 3),
                    run: Run::Running,
                    logdirty: None,
                },
                journal: Vec::new(),
                pc: None,
                policy: PolicyConfig {
                    downtime_limit: Duration::from_micros(20),
                    ..PolicyConfig::default()
                },
                bandwidth: None,
                bitmap: vec![0; precopy::bitmap_words(P2M)],
                xfer: Xfer::Idle,
                next_send: now,
                link_reported: false,
                outcome: None,
                peer_detail: String::new(),
                recovery: None,
                batch: 100,
                rounds: Vec::new(),
                snapshot: None,
                fail_journal: false,
                cancel_after_round: None,
            },
            dst: DstHost {
                sm: Some(Dest::new(DestConfig::default(), now)),
                sink: None,
                reader: ImageReader::default(),
                journal: Vec::new(),
                link_reported: false,
                outcome: None,
                peer_detail: String::new(),
                recovery: None,
                admission: Ok(()),
                fail_complete: false,
                fail_journal: false,
                fail_unpause: false,
                fail_chunk: None,
                shutdown_at_admission: false,
            },
            fault: None,
            fired: false,
            counts: Vec::new(),
            buf: vec![0; 512],
        }
    }

    fn with_fault(mut self, f: Fault) -> Self {
        self.fault = Some(f);
        self
    }

    /// Counts an event and fires the fault if it matches. Events are
    /// counted per (side, when, kind); frames arrive in order, so the n-th
    /// frame of a kind received is the n-th sent.
    fn event(&mut self, side: Side, when: When, kind: &'static str) {
        let key = (side, when, kind);
        let nth = match self.counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.push((key, 1));
                1
            }
        };
        let Some(f) = self.fault else { return };
        if self.fired || (f.side, f.when, f.kind, f.nth) != (side, when, kind, nth) {
            return;
        }
        self.fired = true;
        match f.what {
            What::Cut(deliver) => {
                if !deliver && when == When::Sent {
                    self.link.queue(side).pop_back();
                }
                self.link.cut = true;
            }
            What::Stall => self.link.stalled = true,
            What::Kill => self.kill(side),
            What::Garbage => {
                if let Some(f) = self.link.queue(side).back_mut() {
                    f[4..].fill(0xff);
                }
            }
            What::Oversize => {
                if let Some(f) = self.link.queue(side).back_mut() {
                    f[..4].copy_from_slice(&u32::MAX.to_be_bytes());
                }
            }
            What::Duplicate => {
                if let Some(f) = self.link.queue(side).back().cloned() {
                    self.link.queue(side).push_back(f);
                }
            }
        }
    }

    fn kill(&mut self, side: Side) {
        self.link.cut = true;
        match side {
            Side::Src => {
                self.src.sm = None;
                self.src.pc = None;
                let r = recover_source(self.src.journal.last().copied());
                self.src.recovery = Some(r);
                match r {
                    SourceRecovery::Resume => {
                        let _ = self.src.guest.disable_logdirty();
                        if self.src.guest.run != Run::Running {
                            self.src.guest.resume().unwrap();
                        }
                    }
                    SourceRecovery::InDoubt => {}
                    SourceRecovery::Destroy => self.src.guest.destroy().unwrap(),
                }
            }
            Side::Dst => {
                self.dst.sm = None;
                let r = recover_dest(self.dst.journal.last().copied());
                self.dst.recovery = Some(r);
                if let Some(sink) = self.dst.sink.as_mut() {
                    match r {
                        DestRecovery::Destroy => sink.destroy().unwrap(),
                        DestRecovery::Unpause => sink.unpause().unwrap(),
                        DestRecovery::Nothing => {}
                    }
                }
            }
        }
    }

    /// Writes a frame; `false` when the connection is known dead (the
    /// write fails), `true` otherwise (a stalled link swallows it).
    fn send(&mut self, side: Side, frame: Vec<u8>) -> bool {
        let kind = kind_of(&frame);
        if self.link.cut {
            return false;
        }
        if self.link.stalled {
            return true;
        }
        self.link.sent.push((side, kind));
        self.link.queue(side).push_back(frame);
        self.event(side, When::Sent, kind);
        true
    }

    /// Advances both sides by one tick; returns whether anything happened.
    fn tick(&mut self) -> bool {
        let mut busy = false;
        busy |= self.src_step();
        busy |= self.dst_step();
        self.src.guest.tick();
        if let Some(s) = self.dst.sink.as_mut() {
            s.tick();
        }
        busy
    }

    fn finished(&self) -> bool {
        let s = self.src.sm.is_none() || self.src.outcome.is_some();
        let d = self.dst.sm.is_none() || self.dst.outcome.is_some();
        s && d
    }

    /// Runs until both sides are finished; time advances 1 ms per busy tick
    /// and jumps to the next deadline when idle.
    fn drive(&mut self) {
        for _ in 0..200_000 {
            if self.finished() {
                // Drain what is left so the last frames are accounted for.
                self.src_step();
                self.dst_step();
                return;
            }
            let busy = self.tick();
            if busy {
                self.now += Duration::from_millis(1);
            } else {
                let pacing =
                    matches!(self.src.xfer, Xfer::Live | Xfer::Final) && self.src.sm.is_some();
                let deadlines = [
                    self.src.sm.as_ref().and_then(|s| s.poll_timeout()),
                    self.dst.sm.as_ref().and_then(|d| d.poll_timeout()),
                    pacing.then_some(self.src.next_send),
                ];
                match deadlines.into_iter().flatten().min() {
                    Some(t) if t > self.now => self.now = t,
                    _ => self.now += Duration::from_millis(1),
                }
            }
        }
        panic!(
            "session did not finish: src {:?} dst {:?}",
            self.src.sm.as_ref().map(|s| s.state_name()),
            self.dst.sm.as_ref().map(|d| d.state_name())
        );
    }

    fn src_step(&mut self) -> bool {
        let now = self.now;
        let Some(mut sm) = self.src.sm.take() else {
            return false;
        };
        let mut busy = false;
        // Actions.
        while let Some(a) = sm.poll_action() {
            busy = true;
            match a {
                SourceAction::StartTransfer { live } => {
                    let cfg = PrecopyConfig {
                        bandwidth_limit: self.src.bandwidth,
                    };
                    let policy = DefaultPolicy::new(self.src.policy);
                    let (g, bm) = (&mut self.src.guest, &mut self.src.bitmap);
                    if live {
                        self.src.pc = Some(drive::start_live(g, bm, cfg, policy, now).unwrap());
                        self.src.xfer = Xfer::Live;
                    } else {
                        self.src.pc = Some(drive::start_offline(g, bm, cfg, policy, now).unwrap());
                        sm.handle_suspended(now).unwrap();
                        self.src.snapshot = Some(self.src.guest.m.clone());
                        self.src.xfer = Xfer::Final;
                    }
                }
                SourceAction::JournalCommit { session } => {
                    assert_eq!(session, sm.session());
                    if self.src.fail_journal {
                        sm.handle_journal_failed(now, "disk gone").unwrap();
                        continue;
                    }
                    self.src.journal.push(RecordKind::Commit);
                    self.src.sm = Some(sm);
                    self.event(Side::Src, When::Sent, "Journal");
                    let Some(s) = self.src.sm.take() else {
                        return true;
                    };
                    sm = s;
                    sm.handle_journaled(now).unwrap();
                }
                SourceAction::SendGuestConfig => {
                    unreachable!("these sessions carry no guest configuration")
                }
                SourceAction::Finished(o) => {
                    self.src.outcome = Some(o);
                    self.src.peer_detail = sm.peer_detail().into();
                    self.src.xfer = Xfer::Done;
                    match o {
                        SourceOutcome::Migrated => {
                            self.src.guest.destroy().unwrap();
                            self.src.journal.push(RecordKind::Done);
                        }
                        SourceOutcome::Aborted(_) => {
                            if self.src.journal.last() == Some(&RecordKind::Commit) {
                                self.src.journal.push(RecordKind::Aborted);
                            }
                            let _ = self.src.guest.disable_logdirty();
                            if self.src.guest.run != Run::Running {
                                self.src.guest.resume().unwrap();
                            }
                        }
                        SourceOutcome::InDoubt(_) => {
                            assert_eq!(self.src.guest.run, Run::Suspended);
                        }
                    }
                }
            }
        }
        // Control frames out.
        while let Some(n) = sm.poll_transmit(&mut self.buf).unwrap() {
            busy = true;
            let f = self.buf[..n].to_vec();
            self.src.sm = Some(sm);
            let ok = self.send(Side::Src, f);
            let Some(s) = self.src.sm.take() else {
                return true;
            };
            sm = s;
            if !ok {
                self.src.link_reported = true;
                sm.handle_transmit_failed(now);
            }
        }
        // Frames in.
        if !self.link.stalled {
            if let Some(frame) = self.link.inbox(Side::Src).pop_front() {
                busy = true;
                let kind = kind_of(&frame);
                let hdr: [u8; 4] = frame[..4].try_into().unwrap();
                if sm.frame_len(now, hdr).is_ok() {
                    let _ = sm.handle_frame(now, &frame[4..]);
                } else {
                    // The stream is out of step: hang up.
                    self.link.cut = true;
                }
                self.src.sm = Some(sm);
                self.event(Side::Src, When::Received, kind);
                let Some(s) = self.src.sm.take() else {
                    return true;
                };
                sm = s;
            } else if self.link.cut && !self.src.link_reported {
                self.src.link_reported = true;
                sm.handle_link_error(now);
                busy = true;
            }
        }
        // Image work: one batch per tick.
        if sm.outcome().is_none()
            && matches!(self.src.xfer, Xfer::Live | Xfer::Final)
            && now >= self.src.next_send
        {
            busy = true;
            self.src.sm = Some(sm);
            self.src_batch();
            let Some(s) = self.src.sm.take() else {
                return true;
            };
            sm = s;
        }
        sm.handle_timeout(now);
        self.src.sm = Some(sm);
        busy
    }

    fn src_chunk(&mut self, payload: &[u8]) -> bool {
        let sm = self.src.sm.as_mut().unwrap();
        let mut hdr = [0u8; IMAGE_HEADER_MAX];
        match sm.image_chunk_header(payload.len(), &mut hdr) {
            Ok(h) => {
                let mut f = hdr[..h].to_vec();
                f.extend_from_slice(payload);
                if !self.send(Side::Src, f) {
                    if let Some(sm) = self.src.sm.as_mut() {
                        self.src.link_reported = true;
                        sm.handle_transmit_failed(self.now);
                    }
                    self.src.xfer = Xfer::Done;
                    return false;
                }
                true
            }
            Err(_) => {
                self.src.xfer = Xfer::Done;
                false
            }
        }
    }

    fn src_batch(&mut self) {
        let now = self.now;
        let size = self.src.batch.min(MAX_BATCH_SIZE);
        let mut pfns = vec![0 as Pfn; size];
        let mut types = vec![PageType::NOTAB; size];
        let mut data = vec![0u8; size * PAGE_SIZE];
        let pc = self.src.pc.as_mut().unwrap();
        let buf = drive::BatchBuf {
            pfns: &mut pfns,
            types: &mut types,
            data: &mut data,
        };
        let batch = drive::read_batch(pc, &mut self.src.guest, &self.src.bitmap, buf).unwrap();
        if let Some(b) = batch {
            let n = b.pfns.len();
            let mut rec = Vec::new();
            page_record(b.pfns, b.types, b.data, &mut rec);
            assert_eq!(rec.len() + 11, b.record_len());
            if self.src_chunk(&rec) {
                if let Some(pc) = self.src.pc.as_mut() {
                    if let Some(t) =
                        pc.record_batch(now, n as u64, rec.len() as u64, rec.len() as u64)
                    {
                        self.src.next_send = t;
                    }
                }
            }
            return;
        }
        match self.src.xfer {
            Xfer::Live => {
                let d = drive::end_live_round(pc, &mut self.src.guest, &mut self.src.bitmap, now)
                    .unwrap();
                let stats = pc.progress().last_round.unwrap();
                self.src.rounds.push(d);
                let sm = self.src.sm.as_mut().unwrap();
                sm.handle_round_end(now, &stats).unwrap();
                if self.src.cancel_after_round == Some(stats.round) {
                    sm.abort(now, AbortReason::Cancelled).unwrap();
                    self.src.xfer = Xfer::Done;
                    return;
                }
                match d {
                    Decision::ContinuePrecopy => {}
                    Decision::StopAndCopy => {
                        let mut last = vec![0u64; self.src.bitmap.len()];
                        let (g, bm) = (&mut self.src.guest, &mut self.src.bitmap);
                        drive::suspend_for_final(pc, g, bm, &mut last, now).unwrap();
                        self.src.snapshot = Some(self.src.guest.m.clone());
                        sm.handle_suspended(now).unwrap();
                        self.src.xfer = Xfer::Final;
                    }
                    Decision::Abort => {
                        sm.abort(now, AbortReason::Busy).unwrap();
                        self.src.xfer = Xfer::Done;
                    }
                }
            }
            Xfer::Final => {
                pc.finish(now).unwrap();
                for v in 0..VCPUS {
                    let mut blob = [0u8; 64];
                    let n = self.src.guest.vcpu_context(v, &mut blob).unwrap();
                    let mut rec = vec![b'V'];
                    rec.extend_from_slice(&v.to_le_bytes());
                    rec.extend_from_slice(&blob[..n]);
                    if !self.src_chunk(&rec) {
                        return;
                    }
                }
                if !self.src_chunk(b"E") {
                    return;
                }
                self.src.xfer = Xfer::Done;
                if let Some(sm) = self.src.sm.as_mut() {
                    sm.handle_image_end(now).unwrap();
                }
            }
            _ => {}
        }
    }

    fn dst_step(&mut self) -> bool {
        let now = self.now;
        let Some(mut sm) = self.dst.sm.take() else {
            return false;
        };
        let mut busy = false;
        if !self.link.stalled {
            if let Some(frame) = self.link.inbox(Side::Dst).pop_front() {
                busy = true;
                let kind = kind_of(&frame);
                let hdr: [u8; 4] = frame[..4].try_into().unwrap();
                if let Ok(len) = sm.frame_len(now, hdr) {
                    assert_eq!(len, frame.len() - 4);
                    if let Ok(Some(Payload::Image(image))) = sm.handle_frame(now, &frame[4..]) {
                        let sink = self.dst.sink.as_mut().expect("image before admission");
                        self.dst.reader.apply(image, sink);
                        let chunks = sm.receive().map(|r| r.chunks);
                        if chunks.is_some() && chunks == self.dst.fail_chunk {
                            self.dst.reader.bad = true;
                        }
                        if self.dst.reader.bad {
                            let n = msg::Abort::new(AbortReason::BadImage, "writing pages: bad");
                            sm.abort(now, n).unwrap();
                        }
                    }
                } else {
                    self.link.cut = true;
                }
                self.dst.sm = Some(sm);
                self.event(Side::Dst, When::Received, kind);
                let Some(s) = self.dst.sm.take() else {
                    return true;
                };
                sm = s;
            } else if self.link.cut && !self.dst.link_reported {
                self.dst.link_reported = true;
                sm.handle_link_error(now);
                busy = true;
            }
        }
        sm.handle_timeout(now);
        while let Some(a) = sm.poll_action() {
            busy = true;
            match a {
                DestAction::Admit(req) => {
                    assert_eq!(req.name.as_str(), "web1");
                    assert_eq!(req.p2m_size, P2M);
                    if self.dst.shutdown_at_admission {
                        sm.abort(now, AbortReason::Cancelled).unwrap();
                        continue;
                    }
                    if self.dst.admission.is_ok() {
                        self.dst.sink = Some(FakeSink::new());
                    }
                    sm.handle_admission(now, self.dst.admission).unwrap();
                }
                DestAction::CompleteImage => {
                    let sink = self.dst.sink.as_mut().unwrap();
                    let r = if self.dst.reader.ended
                        && !self.dst.reader.bad
                        && !self.dst.fail_complete
                        && sink.complete().is_ok()
                    {
                        Ok(())
                    } else {
                        Err(msg::Abort::new(
                            AbortReason::BadImage,
                            "the image did not end",
                        ))
                    };
                    sm.handle_image_complete(now, r).unwrap();
                }
                DestAction::JournalCommit { .. } => {
                    if self.dst.fail_journal {
                        sm.handle_journal_failed(now, "disk gone").unwrap();
                        continue;
                    }
                    self.dst.journal.push(RecordKind::Commit);
                    self.dst.sm = Some(sm);
                    self.event(Side::Dst, When::Sent, "Journal");
                    let Some(s) = self.dst.sm.take() else {
                        return true;
                    };
                    sm = s;
                    sm.handle_journaled(now).unwrap();
                }
                DestAction::Unpause => {
                    if self.dst.fail_unpause {
                        sm.handle_unpaused(now, Err("no memory")).unwrap();
                    } else {
                        self.dst.sink.as_mut().unwrap().unpause().unwrap();
                        sm.handle_unpaused(now, Ok(())).unwrap();
                    }
                }
                DestAction::Finished(o) => {
                    self.dst.outcome = Some(o);
                    self.dst.peer_detail = sm.peer_detail().into();
                    match o {
                        DestOutcome::Running => {
                            assert_eq!(self.dst.sink.as_ref().unwrap().run, Run::Running);
                            self.dst.journal.push(RecordKind::Done);
                        }
                        DestOutcome::Discarded(_) => {
                            if self.dst.journal.last() == Some(&RecordKind::Commit) {
                                self.dst.journal.push(RecordKind::Aborted);
                            }
                            if let Some(s) = self.dst.sink.as_mut() {
                                s.destroy().unwrap();
                            }
                        }
                    }
                }
            }
        }
        while let Some(n) = sm.poll_transmit(&mut self.buf).unwrap() {
            busy = true;
            let f = self.buf[..n].to_vec();
            self.dst.sm = Some(sm);
            let ok = self.send(Side::Dst, f);
            let Some(s) = self.dst.sm.take() else {
                return true;
            };
            sm = s;
            if !ok && !self.dst.link_reported {
                self.dst.link_reported = true;
                sm.handle_link_error(now);
            }
        }
        self.dst.sm = Some(sm);
        busy
    }

    /// The invariant after any single failure: at most one copy runs; if
    /// none runs, the source holds a suspended copy reported in doubt.
    /// Returns a one-word verdict for the case table.
    fn check_invariant(&self) -> &'static str {
        let src_running = self.src.guest.run == Run::Running;
        let dst_running = self
            .dst
            .sink
            .as_ref()
            .is_some_and(|s| s.run == Run::Running);
        let src_in_doubt = matches!(self.src.outcome, Some(SourceOutcome::InDoubt(_)))
            && self.src.recovery.is_none()
            || self.src.recovery == Some(SourceRecovery::InDoubt);
        assert!(!(src_running && dst_running), "guest runs on both hosts");
        if src_in_doubt {
            assert_eq!(
                self.src.guest.run,
                Run::Suspended,
                "in-doubt copy must stay suspended"
            );
        }
        if !src_running && !dst_running {
            assert!(src_in_doubt, "guest runs nowhere and nobody says in doubt");
        }
        // No paused leftovers at the destination.
        if let Some(s) = &self.dst.sink {
            assert!(
                matches!(s.run, Run::Running | Run::Destroyed),
                "destination left a paused copy: {:?}",
                s.run
            );
        }
        if dst_running {
            // The copy that runs is the source's memory at suspension.
            let snap = self.src.snapshot.as_ref().unwrap();
            let d = &self.dst.sink.as_ref().unwrap().m;
            assert!(d.steps >= snap.steps);
        }
        match (src_running, dst_running, src_in_doubt) {
            (true, false, _) => "source",
            (false, true, false) => "destination",
            (false, true, true) => "destination+in-doubt",
            (false, false, true) => "in-doubt",
            _ => unreachable!(),
        }
    }

    /// Settles an in-doubt source as the operator would, by looking at the
    /// destination, and checks that exactly one copy then runs.
    fn resolve(&mut self) {
        let dst_running = self
            .dst
            .sink
            .as_ref()
            .is_some_and(|s| s.run == Run::Running);
        let src_in_doubt = self.src.guest.run == Run::Suspended;
        if src_in_doubt {
            if dst_running {
                self.src.guest.destroy().unwrap();
                self.src.journal.push(journal::Resolution::Discard.record());
            } else {
                self.src.journal.push(journal::Resolution::Resume.record());
                self.src.guest.resume().unwrap();
            }
        }
        let running = usize::from(self.src.guest.run == Run::Running) + usize::from(dst_running);
        assert_eq!(running, 1);
    }
}

// ---------------------------------------------------------------- tests

fn assert_migrated(p: &Pair) {
    assert_eq!(p.src.outcome, Some(SourceOutcome::Migrated));
    assert_eq!(p.dst.outcome, Some(DestOutcome::Running));
    assert_eq!(p.src.guest.run, Run::Destroyed);
    let sink = p.dst.sink.as_ref().unwrap();
    assert_eq!(sink.run, Run::Running);
    assert_eq!(p.src.journal, [RecordKind::Commit, RecordKind::Done]);
    assert_eq!(p.dst.journal, [RecordKind::Commit, RecordKind::Done]);
}

/// Memory check by recomputation: a fresh machine with the same seed, run
/// for the same number of steps, has the destination's memory.
fn assert_memory_recomputes(p: &Pair, seed: u64) {
    let snap = p.src.snapshot.as_ref().unwrap();
    let mut fresh = Machine::new(seed, 3);
    for _ in 0..snap.steps {
        fresh.step(None);
    }
    assert_eq!(&fresh, snap, "source memory is the workload's");
    // Bring the destination's copy back to the moment of the move: it has
    // run on since; replay from its vCPU state instead.
    let sink = p.dst.sink.as_ref().unwrap();
    let mut replay = fresh.clone();
    for _ in snap.steps..sink.m.steps {
        replay.step(None);
    }
    assert_eq!(
        replay.mem, sink.m.mem,
        "destination memory matches recomputation"
    );
    assert_eq!(replay.steps, sink.m.steps);
}

#[test]
fn offline_session() {
    let mut p = Pair::new(42, false);
    p.drive();
    assert_migrated(&p);
    assert!(p.src.rounds.is_empty());
    let kinds: Vec<&str> = p
        .link
        .sent
        .iter()
        .map(|(_, k)| *k)
        .filter(|k| *k != "Image")
        .collect();
    assert_eq!(
        kinds,
        [
            "Hello",
            "HelloAck",
            "Admit",
            "Admitted",
            "Suspended",
            "ImageEnd",
            "Prepared",
            "Commit",
            "Committed"
        ]
    );
    // 512 pages in batches of 100: 6 page chunks, 2 vCPU chunks, END.
    assert_eq!(p.link.sent.iter().filter(|(_, k)| *k == "Image").count(), 9);
    let steps_at_move = p.src.snapshot.as_ref().unwrap().steps;
    let mut p2 = p;
    for _ in 0..10 {
        p2.tick();
    }
    assert!(
        p2.dst.sink.as_ref().unwrap().m.steps > steps_at_move,
        "the step counter goes on"
    );
    assert_memory_recomputes(&p2, 42);
}

#[test]
fn live_session() {
    let mut p = Pair::new(7, true);
    p.drive();
    assert_migrated(&p);
    // The tight downtime limit forces several rounds, ended by the cap.
    assert!(p.src.rounds.len() >= 2, "{:?}", p.src.rounds);
    assert_eq!(p.src.rounds.last(), Some(&Decision::StopAndCopy));
    let rounds = p.link.sent.iter().filter(|(_, k)| *k == "RoundEnd").count();
    assert_eq!(rounds, p.src.rounds.len());
    let steps_at_move = p.src.snapshot.as_ref().unwrap().steps;
    assert!(steps_at_move > 0, "the guest ran during pre-copy");
    assert_memory_recomputes(&p, 7);
    println!(
        "live: {} rounds, {} frames",
        p.src.rounds.len(),
        p.link.sent.len()
    );
}

#[test]
fn live_session_with_bandwidth_cap_and_default_policy() {
    let mut p = Pair::new(9, true);
    p.src.policy = PolicyConfig::default();
    p.src.bandwidth = Some(100 * 4096 * 1000); // ~100 pages per ms
    p.drive();
    assert_migrated(&p);
    // At ~400 MB/s a few dirty pages fit 300 ms easily: one round.
    assert_eq!(p.src.rounds, [Decision::StopAndCopy]);
    assert_memory_recomputes(&p, 9);
}

#[test]
fn busy_guest_aborts_with_abort_if_busy() {
    let mut p = Pair::new(5, true);
    p.src.guest.m.writes = 400; // dirties most of memory every tick
    p.src.policy = PolicyConfig {
        downtime_limit: Duration::from_nanos(1),
        abort_if_busy: true,
        ..PolicyConfig::default()
    };
    p.drive();
    assert_eq!(p.src.rounds.last(), Some(&Decision::Abort));
    assert_eq!(
        p.src.outcome,
        Some(SourceOutcome::Aborted(Error::Aborted(AbortReason::Busy)))
    );
    assert_eq!(
        p.dst.outcome,
        Some(DestOutcome::Discarded(Error::Aborted(AbortReason::Busy)))
    );
    assert_eq!(p.src.guest.run, Run::Running);
    assert_eq!(p.dst.sink.as_ref().unwrap().run, Run::Destroyed);
    assert!(p.src.journal.is_empty());
}

#[test]
fn admission_refusals() {
    for reason in [
        RefuseReason::NoCapacity,
        RefuseReason::NameTaken,
        RefuseReason::TooManyMigrations,
        RefuseReason::NotAllowed,
    ] {
        let mut p = Pair::new(3, true);
        p.dst.admission = Err(msg::Refused::new(reason, "why, in words"));
        p.drive();
        assert_eq!(
            p.src.outcome,
            Some(SourceOutcome::Aborted(Error::Refused(reason)))
        );
        assert_eq!(
            p.dst.outcome,
            Some(DestOutcome::Discarded(Error::Refused(reason)))
        );
        assert_eq!(p.src.guest.run, Run::Running);
        assert!(p.dst.sink.is_none());
        assert_eq!(p.link.sent.last().map(|s| s.1), Some("Refused"));
        // The source's operator reads the destination's words.
        assert_eq!(p.src.peer_detail, "why, in words");
        // The message names the reason.
        let text = format!("{}", Error::Refused(reason));
        assert!(
            text.contains("destination") || text.contains("not allowed"),
            "{text}"
        );
    }
}

fn frame(m: &Msg<'_>) -> Vec<u8> {
    let mut b = vec![0u8; 8192];
    let n = msg::encode(m, &mut b).unwrap();
    b.truncate(n);
    b
}

fn feed_dest(d: &mut Dest, now: Instant, f: &[u8]) -> Result<(), Error> {
    let len = d.frame_len(now, f[..4].try_into().unwrap())?;
    assert_eq!(len, f.len() - 4);
    d.handle_frame(now, &f[4..]).map(|_| ())
}

fn drain(d: &mut Dest) -> Vec<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 512];
    while let Some(n) = d.poll_transmit(&mut b).unwrap() {
        // Refusals and aborts by their reason (their details are checked
        // where they matter).
        out.push(match msg::decode(&b[4..n]).unwrap() {
            Msg::Refused(r) => format!("Refused({:?})", r.reason),
            Msg::Abort(a) => format!("Abort({:?})", a.reason),
            m => format!("{m:?}"),
        });
    }
    out
}

fn new_source(now: Instant) -> Source {
    Source::new(
        SourceConfig {
            session: 1,
            live: true,
            features: Features::ALL,
            timeouts: Timeouts::default(),
            guest: guest_desc(),
            guest_config: None,
        },
        now,
    )
}

#[test]
fn version_refusal_names_both_versions() {
    let now = Instant::ZERO;
    assert_eq!((PROTOCOL_VERSION_MIN, PROTOCOL_VERSION), (2, 2));
    // A future source that only speaks 7..=9.
    let mut d = Dest::new(DestConfig::default(), now);
    let hello = frame(&Msg::Hello(Hello {
        magic: msg::MAGIC,
        min_version: 7,
        max_version: 9,
        features: Features(u32::MAX),
    }));
    feed_dest(&mut d, now, &hello).unwrap();
    assert_eq!(
        d.outcome(),
        Some(DestOutcome::Discarded(Error::Incompatible {
            ours: 2,
            theirs: 9
        }))
    );
    assert_eq!(
        drain(&mut d),
        ["VersionRefused(VersionRefused { min_version: 2, max_version: 2 })"]
    );
    // A source of ours meets a destination that speaks only 3..=4.
    let mut s = new_source(now);
    let vr = frame(&Msg::VersionRefused(VersionRefused {
        min_version: 3,
        max_version: 4,
    }));
    s.handle_frame(now, &vr[4..]).unwrap();
    let e = Error::Incompatible { ours: 2, theirs: 4 };
    assert_eq!(s.outcome(), Some(SourceOutcome::Aborted(e)));
    assert_eq!(
        format!("{e}"),
        "incompatible protocol versions: we speak 2, the peer speaks 4"
    );
    // An older destination acking a version we do not speak.
    let mut s2 = new_source(now);
    let ack = frame(&Msg::HelloAck(msg::HelloAck {
        version: 0,
        features: Features::ALL,
    }));
    assert_eq!(
        s2.handle_frame(now, &ack[4..]),
        Err(Error::Incompatible { ours: 2, theirs: 0 })
    );
    // Live migration without the LIVE feature is refused by the source.
    let mut s3 = new_source(now);
    let ack = frame(&Msg::HelloAck(msg::HelloAck {
        version: PROTOCOL_VERSION,
        features: Features(0),
    }));
    s3.handle_frame(now, &ack[4..]).unwrap();
    assert_eq!(
        s3.outcome(),
        Some(SourceOutcome::Aborted(Error::Refused(
            RefuseReason::Unsupported
        )))
    );
}

/// Version 2 is a clean bump: version 1, whose `Refused` and `Abort` have
/// no detail, is no longer spoken, and either side says so in terms of
/// versions.
#[test]
fn version_1_is_no_longer_spoken() {
    let now = Instant::ZERO;
    // A version-1 source's hello (its bytes are frozen).
    let mut d = Dest::new(DestConfig::default(), now);
    feed_dest(
        &mut d,
        now,
        &[0, 0, 0, 8, 0, b'R', b'L', b'C', b'D', 1, 1, 1],
    )
    .unwrap();
    assert_eq!(
        d.outcome(),
        Some(DestOutcome::Discarded(Error::Incompatible {
            ours: 2,
            theirs: 1
        }))
    );
    assert_eq!(
        drain(&mut d),
        ["VersionRefused(VersionRefused { min_version: 2, max_version: 2 })"]
    );
    // A version-1 destination refuses our hello ...
    let mut s = new_source(now);
    let mut b = [0u8; 64];
    let n = s.poll_transmit(&mut b).unwrap().unwrap();
    assert_eq!(&b[5..n - 1], &[b'R', b'L', b'C', b'D', 2, 2]);
    s.handle_frame(now, &[2, 1, 1]).unwrap();
    assert_eq!(
        s.outcome(),
        Some(SourceOutcome::Aborted(Error::Incompatible {
            ours: 2,
            theirs: 1
        }))
    );
    // ... and one that acks version 1 anyway is not followed.
    let mut s = new_source(now);
    assert_eq!(
        s.handle_frame(now, &[1, 1, 1]),
        Err(Error::Incompatible { ours: 2, theirs: 1 })
    );
}

/// A refusal and an abort carry the other side's words to the operator;
/// a destination may refuse before it reads anything.
#[test]
fn refusals_and_aborts_carry_their_detail() {
    let now = Instant::ZERO;
    // Busy: refused before the hello is read.
    let mut d = Dest::new(DestConfig::default(), now);
    d.refuse(
        now,
        msg::Refused::new(RefuseReason::Busy, "36 connections await admission"),
    )
    .unwrap();
    assert_eq!(
        d.poll_action(),
        Some(DestAction::Finished(DestOutcome::Discarded(
            Error::Refused(RefuseReason::Busy)
        )))
    );
    let mut b = [0u8; 512];
    let n = d.poll_transmit(&mut b).unwrap().unwrap();
    assert_eq!(d.poll_transmit(&mut b).unwrap(), None);
    // The source reads it in place of the HelloAck.
    let mut s = new_source(now);
    while s.poll_transmit(&mut [0u8; 512]).unwrap().is_some() {}
    let len = s.frame_len(now, b[..4].try_into().unwrap()).unwrap();
    assert_eq!(len, n - 4);
    s.handle_frame(now, &b[4..n]).unwrap();
    assert_eq!(
        s.outcome(),
        Some(SourceOutcome::Aborted(Error::Refused(RefuseReason::Busy)))
    );
    assert_eq!(s.peer_detail(), "36 connections await admission");
    // Nothing is sent back to a destination that refused.
    assert_eq!(s.poll_transmit(&mut b).unwrap(), None);
    // A refusal is only for before the admission: not while receiving.
    let mut d = admitted_dest(now);
    assert_eq!(
        d.refuse(now, RefuseReason::Busy),
        Err(Error::InvalidInState {
            state: "Receiving",
            input: "refuse"
        })
    );
    // The source's abort reaches the destination with its words; an
    // over-long text is cut to the bound on a character boundary.
    let mut d = admitted_dest(now);
    let mut s = new_source(now);
    let long = "é".repeat(150);
    s.abort(now, msg::Abort::new(AbortReason::SourceFailed, &long))
        .unwrap();
    // (The hello goes first.)
    s.poll_transmit(&mut b).unwrap().unwrap();
    let n = s.poll_transmit(&mut b).unwrap().unwrap();
    assert!(n - 4 <= MAX_CONTROL_FRAME_LEN);
    feed_dest(&mut d, now, &b[..n]).unwrap();
    assert_eq!(
        d.outcome(),
        Some(DestOutcome::Discarded(Error::Aborted(
            AbortReason::SourceFailed
        )))
    );
    assert!(d.peer_detail().len() <= MAX_DETAIL_LEN);
    assert!(d.peer_detail().ends_with("éé…"), "{}", d.peer_detail());
    // A host failure at the destination names what failed.
    for (fail, detail) in [
        ("journal", "journaling the commit: disk gone"),
        ("unpause", "unpausing the guest: no memory"),
    ] {
        let mut p = Pair::new(41, false);
        if fail == "journal" {
            p.dst.fail_journal = true;
        } else {
            p.dst.fail_unpause = true;
        }
        p.drive();
        assert_eq!(
            p.src.outcome,
            Some(SourceOutcome::Aborted(Error::Aborted(
                AbortReason::DestFailed
            )))
        );
        assert_eq!(p.src.peer_detail, detail);
    }
    // The source's own journal failure tells the destination why.
    let mut p = Pair::new(42, false);
    p.src.fail_journal = true;
    p.drive();
    assert_eq!(
        p.dst.outcome,
        Some(DestOutcome::Discarded(Error::Aborted(
            AbortReason::SourceFailed
        )))
    );
    assert_eq!(p.dst.peer_detail, "journaling the commit: disk gone");
    // A malformed admission request is refused with what was wrong.
    let mut d = Dest::new(DestConfig::default(), now);
    feed_dest(
        &mut d,
        now,
        &frame(&Msg::Hello(Hello {
            magic: msg::MAGIC,
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION,
            features: Features::ALL,
        })),
    )
    .unwrap();
    drain(&mut d);
    let _ = feed_dest(
        &mut d,
        now,
        &frame(&Msg::Admit(msg::Admit {
            vcpus: MAX_VCPUS + 1,
            ..base_admit()
        })),
    );
    let n = d.poll_transmit(&mut b).unwrap().unwrap();
    assert_eq!(
        msg::decode(&b[4..n]),
        Ok(Msg::Refused(msg::Refused {
            reason: RefuseReason::Invalid,
            detail: "limit exceeded: too many vCPUs"
        }))
    );
}

/// A TLS record where a relocd frame should be (a TLS client on the plain
/// port, or a TLS server's alert to a plain client) says what to do.
#[test]
fn a_tls_peer_is_named_as_such() {
    use std::string::ToString;
    for first in [[0x16, 0x03, 0x01, 0x02], [0x15, 0x03, 0x03, 0x00]] {
        let text = Error::NotRelocd { first }.to_string();
        assert!(text.contains("speaks TLS"), "{text}");
        assert!(text.contains("--ssl"), "{text}");
    }
    let text = Error::NotRelocd { first: *b"HTTP" }.to_string();
    assert!(!text.contains("TLS"), "{text}");
}

/// A peer that is not relocd is named as such, on either side, before a
/// byte of its "frame" is read; nothing is sent back to it.
#[test]
fn a_stranger_is_not_an_oversize_frame() {
    let now = Instant::ZERO;
    let mut s = new_source(now);
    while s.poll_transmit(&mut [0u8; 512]).unwrap().is_some() {}
    assert_eq!(
        s.frame_len(now, *b"HTTP"),
        Err(Error::NotRelocd { first: *b"HTTP" })
    );
    assert_eq!(
        s.outcome(),
        Some(SourceOutcome::Aborted(Error::NotRelocd { first: *b"HTTP" }))
    );
    assert_eq!(s.poll_transmit(&mut [0u8; 512]).unwrap(), None);
    let mut d = Dest::new(DestConfig::default(), now);
    assert_eq!(
        d.frame_len(now, *b"GET "),
        Err(Error::NotRelocd { first: *b"GET " })
    );
    assert!(drain(&mut d).is_empty());
    // Past the first frame, an oversize length is what it is.
    let mut s = new_source(now);
    s.handle_frame(
        now,
        &frame(&Msg::HelloAck(msg::HelloAck {
            version: PROTOCOL_VERSION,
            features: Features::ALL,
        }))[4..],
    )
    .unwrap();
    assert_eq!(
        s.frame_len(now, *b"HTTP"),
        Err(Error::LimitExceeded(Limit::FrameTooLong {
            len: u32::from_be_bytes(*b"HTTP"),
            max: 256
        }))
    );
}

fn admitted_dest(now: Instant) -> Dest {
    let mut d = Dest::new(DestConfig::default(), now);
    feed_dest(
        &mut d,
        now,
        &frame(&Msg::Hello(Hello {
            magic: msg::MAGIC,
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION,
            features: Features::ALL,
        })),
    )
    .unwrap();
    feed_dest(
        &mut d,
        now,
        &frame(&Msg::Admit(msg::Admit {
            session: 9,
            name: "web1",
            uuid: [0; 16],
            memory_bytes: 4096,
            p2m_size: 1,
            vcpus: 1,
            guest_type: 2,
            live: true,
        })),
    )
    .unwrap();
    assert!(matches!(d.poll_action(), Some(DestAction::Admit(_))));
    d.handle_admission(now, Ok(())).unwrap();
    drain(&mut d);
    d
}

/// The `Abort` a finished destination queued: its reason and detail.
fn queued_abort(d: &mut Dest) -> (AbortReason, String) {
    let mut b = [0u8; 512];
    let n = d.poll_transmit(&mut b).unwrap().unwrap();
    assert_eq!(d.poll_transmit(&mut b).unwrap(), None);
    match msg::decode(&b[4..n]).unwrap() {
        Msg::Abort(a) => (a.reason, a.detail.into()),
        m => panic!("expected an Abort, got {m:?}"),
    }
}

/// Issue 13, item 2: an admitted peer that sends only frames that carry
/// nothing (empty image chunks, round ends) loses its session at the idle
/// deadline, counted from its last image bytes.
#[test]
fn frames_that_carry_nothing_do_not_keep_a_session() {
    let t = Timeouts::default();
    let start = Instant::ZERO;
    let mut d = admitted_dest(start);
    // Image bytes are progress: they put the deadline off.
    let at = start + Duration::from_secs(20);
    feed_dest(&mut d, at, &frame(&Msg::Image(&[1, 2, 3]))).unwrap();
    let progress = at;
    assert_eq!(d.poll_timeout(), Some(progress + t.idle));
    // Then only keepalives, well within the idle timeout of each other.
    let step = Duration::from_secs(t.idle.as_secs() / 3);
    let mut now = progress;
    let mut round = 0;
    while now + step < progress + t.idle {
        now += step;
        feed_dest(&mut d, now, &frame(&Msg::Image(&[]))).unwrap();
        round += 1;
        feed_dest(
            &mut d,
            now,
            &frame(&Msg::RoundEnd(msg::RoundEnd {
                round,
                pages: 0,
                dirty: 0,
            })),
        )
        .unwrap();
        d.handle_timeout(now);
        assert_eq!(d.state_name(), "Receiving");
        // They were received, and did not move the deadline.
        assert_eq!(d.poll_timeout(), Some(progress + t.idle));
    }
    assert_eq!(d.receive().unwrap().rounds, round);
    d.handle_timeout(progress + t.idle);
    let error = Error::NoProgress { idle: t.idle };
    assert_eq!(
        d.poll_action(),
        Some(DestAction::Finished(DestOutcome::Discarded(error)))
    );
    assert_eq!(
        queued_abort(&mut d),
        (
            AbortReason::Timeout,
            "no progress: no image bytes for 30 s".into()
        )
    );
    // `Suspended` comes once: it is progress, a second one is an error.
    let mut d = admitted_dest(start);
    let at = start + Duration::from_secs(25);
    feed_dest(&mut d, at, &frame(&Msg::Suspended)).unwrap();
    assert_eq!(d.poll_timeout(), Some(at + t.idle));
    assert!(feed_dest(&mut d, at, &frame(&Msg::Suspended)).is_err());
}

/// An image chunk whose payload the host reads itself counts as the same
/// frame decoded whole: chunks and bytes toward `ImageEnd`, progress for
/// the idle deadline; before admission it is refused as the frame is.
#[test]
fn an_image_read_past_the_machine_counts_as_the_frame() {
    let t = Timeouts::default();
    let now = Instant::ZERO;
    let chunk = [7u8; 300];
    let body = &frame(&Msg::Image(&chunk))[4..];
    let offset = msg::image_payload_offset(&body[..6], body.len()).unwrap();
    assert_eq!(body.len() - offset, chunk.len());
    let mut d = admitted_dest(now);
    let at = now + Duration::from_secs(10);
    d.handle_image(at, chunk.len()).unwrap();
    assert_eq!(d.poll_timeout(), Some(at + t.idle));
    feed_dest(&mut d, at, &frame(&Msg::Image(&chunk))).unwrap();
    let r = d.receive().unwrap();
    assert_eq!((r.chunks, r.bytes), (2, 600));
    feed_dest(&mut d, at, &frame(&Msg::Suspended)).unwrap();
    let end = msg::ImageEnd {
        chunks: 2,
        bytes: 600,
    };
    feed_dest(&mut d, at, &frame(&Msg::ImageEnd(end))).unwrap();
    assert_eq!(d.poll_action(), Some(DestAction::CompleteImage));
    // An empty one is no progress; one before admission ends the session.
    let mut d = admitted_dest(now);
    d.handle_image(at, 0).unwrap();
    assert_eq!(d.poll_timeout(), Some(now + t.idle));
    let mut d = Dest::new(DestConfig::default(), now);
    assert_eq!(
        d.handle_image(now, 300),
        Err(Error::InvalidInState {
            state: "AwaitHello",
            input: "Image"
        })
    );
    assert!(matches!(d.outcome(), Some(DestOutcome::Discarded(_))));
}

/// Issue 13, item 2: progress keeps a session only up to its bound from
/// admission to `Prepared` (`Timeouts::transfer`).
#[test]
fn an_admitted_session_must_be_prepared_within_its_bound() {
    let t = Timeouts {
        transfer: Duration::from_secs(100),
        ..Timeouts::default()
    };
    assert_eq!(Timeouts::default().transfer, Duration::from_secs(30 * 60));
    let start = Instant::from_secs(7);
    let mut d = Dest::new(
        DestConfig {
            timeouts: t,
            ..DestConfig::default()
        },
        Instant::ZERO,
    );
    let hello = frame(&Msg::Hello(Hello {
        magic: msg::MAGIC,
        min_version: PROTOCOL_VERSION_MIN,
        max_version: PROTOCOL_VERSION,
        features: Features::ALL,
    }));
    feed_dest(&mut d, Instant::ZERO, &hello).unwrap();
    feed_dest(&mut d, Instant::ZERO, &frame(&Msg::Admit(base_admit()))).unwrap();
    assert!(matches!(d.poll_action(), Some(DestAction::Admit(_))));
    d.handle_admission(start, Ok(())).unwrap();
    drain(&mut d);
    assert_eq!(d.receive().unwrap().admitted_at, start);
    let limit = start + t.transfer;
    // One image byte every 20 s: progress, so the idle deadline never
    // passes; the bound does.
    let mut now = start;
    loop {
        now += Duration::from_secs(20);
        d.handle_timeout(now);
        if d.outcome().is_some() {
            break;
        }
        assert!(now < limit, "still receiving at {now:?}, past the bound");
        feed_dest(&mut d, now, &frame(&Msg::Image(&[0]))).unwrap();
        // The deadline is the nearer of the two.
        assert_eq!(d.poll_timeout(), Some((now + t.idle).min(limit)));
    }
    assert_eq!(now, start + Duration::from_secs(100));
    let error = Error::TransferTooLong { limit: t.transfer };
    assert_eq!(
        d.poll_action(),
        Some(DestAction::Finished(DestOutcome::Discarded(error)))
    );
    assert_eq!(
        queued_abort(&mut d),
        (
            AbortReason::TransferTooLong,
            "took longer than 100 s from admission to prepared".into()
        )
    );
    // The source reads the typed reason (a code of its own on the wire).
    assert_eq!(u16::from(AbortReason::TransferTooLong), 8);
}

#[test]
fn bad_input_is_a_typed_error() {
    let now = Instant::ZERO;
    // Oversize as the first frame: not relocd at all, nothing read.
    let mut d = Dest::new(DestConfig::default(), now);
    assert_eq!(
        d.frame_len(now, 1_000_000u32.to_be_bytes()),
        Err(Error::NotRelocd {
            first: 1_000_000u32.to_be_bytes()
        })
    );
    assert!(matches!(d.outcome(), Some(DestOutcome::Discarded(_))));
    assert!(drain(&mut d).is_empty(), "no answer before the hello");
    // Oversize before admission, after the hello: refused on the header
    // (the bound is the guest configuration's, as the source may send one).
    let mut d = Dest::new(DestConfig::default(), now);
    feed_dest(
        &mut d,
        now,
        &frame(&Msg::Hello(Hello {
            magic: msg::MAGIC,
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION,
            features: Features::ALL,
        })),
    )
    .unwrap();
    drain(&mut d);
    assert_eq!(
        d.frame_len(now, 1_000_000u32.to_be_bytes()),
        Err(Error::LimitExceeded(Limit::FrameTooLong {
            len: 1_000_000,
            max: MAX_GUEST_CONFIG_FRAME_LEN as u32
        }))
    );
    assert!(matches!(d.outcome(), Some(DestOutcome::Discarded(_))));
    assert_eq!(drain(&mut d), ["Abort(ProtocolError)"]);
    // After admission, image-size frames are fine but not more.
    let mut d = admitted_dest(now);
    assert_eq!(d.frame_len(now, 1_000_000u32.to_be_bytes()), Ok(1_000_000));
    assert!(d.frame_len(now, u32::MAX.to_be_bytes()).is_err());
    assert_eq!(drain(&mut d), ["Abort(ProtocolError)"]);
    // xm's old protocol.
    let mut d = Dest::new(DestConfig::default(), now);
    assert_eq!(
        d.frame_len(now, *b"(rec"),
        Err(Error::PeerMisbehaved(Misbehavior::XendProtocol))
    );
    // Bad magic.
    let mut d = Dest::new(DestConfig::default(), now);
    let mut h = frame(&Msg::Hello(Hello {
        magic: *b"XXXX",
        min_version: PROTOCOL_VERSION_MIN,
        max_version: PROTOCOL_VERSION,
        features: Features::ALL,
    }));
    assert_eq!(
        feed_dest(&mut d, now, &h),
        Err(Error::PeerMisbehaved(Misbehavior::BadMagic))
    );
    // Garbage body.
    let mut d = admitted_dest(now);
    h = vec![0, 0, 0, 3, 0xff, 0xff, 0xff];
    assert_eq!(
        feed_dest(&mut d, now, &h),
        Err(Error::PeerMisbehaved(Misbehavior::Malformed))
    );
    assert_eq!(drain(&mut d), ["Abort(ProtocolError)"]);
    // Out of order: Commit before Prepared.
    let mut d = admitted_dest(now);
    assert_eq!(
        feed_dest(&mut d, now, &frame(&Msg::Commit)),
        Err(Error::InvalidInState {
            state: "Receiving",
            input: "Commit"
        })
    );
    assert!(!d.state().committed());
    assert!(matches!(d.outcome(), Some(DestOutcome::Discarded(_))));
    // ImageEnd totals that do not match.
    let mut d = admitted_dest(now);
    feed_dest(&mut d, now, &frame(&Msg::Image(&[1, 2, 3]))).unwrap();
    feed_dest(&mut d, now, &frame(&Msg::Suspended)).unwrap();
    assert_eq!(
        feed_dest(
            &mut d,
            now,
            &frame(&Msg::ImageEnd(msg::ImageEnd {
                chunks: 1,
                bytes: 4
            }))
        ),
        Err(Error::PeerMisbehaved(Misbehavior::ImageMismatch))
    );
    // Admission requests out of bounds are refused with a reason.
    for (admit, reason) in [
        (
            msg::Admit {
                name: "",
                ..base_admit()
            },
            RefuseReason::Invalid,
        ),
        (
            msg::Admit {
                vcpus: MAX_VCPUS + 1,
                ..base_admit()
            },
            RefuseReason::Invalid,
        ),
        (
            msg::Admit {
                p2m_size: MAX_P2M_SIZE + 1,
                ..base_admit()
            },
            RefuseReason::Invalid,
        ),
        (
            msg::Admit {
                name: "a-name-that-is-far-too-long-for-a-xen-domain-because-it-goes-on-and-on",
                ..base_admit()
            },
            RefuseReason::Invalid,
        ),
        (
            msg::Admit {
                guest_type: 3,
                ..base_admit()
            },
            RefuseReason::Unsupported,
        ),
    ] {
        let mut d = Dest::new(DestConfig::default(), now);
        feed_dest(
            &mut d,
            now,
            &frame(&Msg::Hello(Hello {
                magic: msg::MAGIC,
                min_version: PROTOCOL_VERSION_MIN,
                max_version: PROTOCOL_VERSION,
                features: Features::ALL,
            })),
        )
        .unwrap();
        drain(&mut d);
        let _ = feed_dest(&mut d, now, &frame(&Msg::Admit(admit)));
        assert!(d
            .poll_action()
            .is_some_and(|a| matches!(a, DestAction::Finished(_))));
        assert_eq!(drain(&mut d), [format!("Refused({reason:?})")]);
    }
    // Host calls out of order leave the state alone.
    let mut d = admitted_dest(now);
    assert_eq!(
        d.handle_journaled(now),
        Err(Error::InvalidInState {
            state: "Receiving",
            input: "handle_journaled"
        })
    );
    assert_eq!(d.state_name(), "Receiving");
}

fn base_admit() -> msg::Admit<'static> {
    msg::Admit {
        session: 1,
        name: "web1",
        uuid: [0; 16],
        memory_bytes: 4096,
        p2m_size: 1,
        vcpus: 1,
        guest_type: 2,
        live: false,
    }
}

#[test]
fn source_rejects_out_of_order_and_garbage() {
    let now = Instant::ZERO;
    let cfg = SourceConfig {
        session: 1,
        live: false,
        features: Features::ALL,
        timeouts: Timeouts::default(),
        guest: guest_desc(),
        guest_config: None,
    };
    let mut s = Source::new(cfg.clone(), now);
    assert_eq!(
        s.handle_frame(now, &frame(&Msg::Committed)[4..]),
        Err(Error::InvalidInState {
            state: "AwaitHelloAck",
            input: "Committed"
        })
    );
    assert!(matches!(s.outcome(), Some(SourceOutcome::Aborted(_))));
    let mut s = Source::new(cfg.clone(), now);
    assert_eq!(
        s.frame_len(now, [0, 0, 2, 0]),
        Err(Error::NotRelocd {
            first: [0, 0, 2, 0]
        })
    );
    let mut s = Source::new(cfg.clone(), now);
    let ack = frame(&Msg::HelloAck(msg::HelloAck {
        version: PROTOCOL_VERSION,
        features: Features::ALL,
    }));
    s.handle_frame(now, &ack[4..]).unwrap();
    assert_eq!(
        s.frame_len(now, [0, 0, 2, 0]),
        Err(Error::LimitExceeded(Limit::FrameTooLong {
            len: 512,
            max: 256
        }))
    );
    let mut s = Source::new(cfg.clone(), now);
    assert_eq!(
        s.handle_frame(now, &[13, 0xff, 0xff, 0xff, 0xff]),
        Err(Error::PeerMisbehaved(Misbehavior::Malformed))
    );
    // Host misuse: chunks before admission, journaled without prepare.
    let mut s = Source::new(cfg, now);
    let mut hdr = [0u8; IMAGE_HEADER_MAX];
    assert!(matches!(
        s.image_chunk_header(10, &mut hdr),
        Err(Error::InvalidInState { .. })
    ));
    assert!(s.handle_journaled(now).is_err());
    assert_eq!(s.state_name(), "AwaitHelloAck");
    assert!(s.outcome().is_none());
}

#[test]
fn random_frames_never_panic_in_any_state() {
    // Drive a real session and, at every frame boundary, also feed a clone
    // of the receiving machine with random bytes.
    let mut rng = XorShift(0xdead_beef);
    let now = Instant::ZERO;
    for round in 0..400 {
        let mut d = if round % 2 == 0 {
            admitted_dest(now)
        } else {
            Dest::new(DestConfig::default(), now)
        };
        let mut s = Source::new(
            SourceConfig {
                session: 1,
                live: true,
                features: Features::ALL,
                timeouts: Timeouts::default(),
                guest: guest_desc(),
                guest_config: None,
            },
            now,
        );
        for _ in 0..8 {
            let len = (rng.next() % 40) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(b) = body.first_mut() {
                *b %= 16;
            }
            let hdr = (body.len() as u32).to_be_bytes();
            if d.frame_len(now, hdr).is_ok() {
                let _ = d.handle_frame(now, &body);
            }
            if s.frame_len(now, hdr).is_ok() {
                let _ = s.handle_frame(now, &body);
            }
            let mut b = [0u8; 512];
            while let Ok(Some(_)) = d.poll_transmit(&mut b) {}
            while let Ok(Some(_)) = s.poll_transmit(&mut b) {}
            while d.poll_action().is_some() {}
            while s.poll_action().is_some() {}
        }
    }
}

/// Every fault the matrix injects, and the verdicts it produced.
fn fault_matrix(live: bool) -> Vec<(Fault, &'static str)> {
    let mut p = Pair::new(11, live);
    p.drive();
    assert_migrated(&p);
    // The kinds each side sends, in order, once each; and the position of
    // a middle image chunk.
    let mut kinds: Vec<(Side, &'static str)> = Vec::new();
    for &(side, kind) in &p.link.sent {
        if !kinds.contains(&(side, kind)) {
            kinds.push((side, kind));
        }
    }
    let images = p.link.sent.iter().filter(|(_, k)| *k == "Image").count() as u32;
    let mut faults = Vec::new();
    for &(side, kind) in &kinds {
        let nths: Vec<u32> = if kind == "Image" {
            vec![1, images / 2, images]
        } else {
            vec![1]
        };
        let receiver = if side == Side::Src {
            Side::Dst
        } else {
            Side::Src
        };
        for nth in nths {
            for what in [
                What::Cut(true),
                What::Cut(false),
                What::Stall,
                What::Kill,
                What::Garbage,
                What::Oversize,
                What::Duplicate,
            ] {
                faults.push(Fault {
                    side,
                    when: When::Sent,
                    kind,
                    nth,
                    what,
                });
            }
            // The receiver dies right after handling it.
            faults.push(Fault {
                side: receiver,
                when: When::Received,
                kind,
                nth,
                what: What::Kill,
            });
        }
    }
    // Each side dies right after its commit record is durable.
    for side in [Side::Src, Side::Dst] {
        faults.push(Fault {
            side,
            when: When::Sent,
            kind: "Journal",
            nth: 1,
            what: What::Kill,
        });
        faults.push(Fault {
            side,
            when: When::Sent,
            kind: "Journal",
            nth: 1,
            what: What::Cut(true),
        });
    }
    let mut results = Vec::new();
    for f in faults {
        let mut p = Pair::new(11, live).with_fault(f);
        p.drive();
        assert!(p.fired, "fault never fired: {f:?}");
        let verdict = p.check_invariant();
        p.resolve();
        results.push((f, verdict));
    }
    results
}

fn summarize(results: &[(Fault, &'static str)]) -> String {
    let mut out = String::new();
    for (f, v) in results {
        out.push_str(&format!(
            "{:?} {:?} {}#{} {:?} -> {}\n",
            f.side, f.when, f.kind, f.nth, f.what, v
        ));
    }
    out
}

#[test]
fn fault_matrix_live() {
    let r = fault_matrix(true);
    println!("{} cases\n{}", r.len(), summarize(&r));
    check_expected(&r);
}

#[test]
fn fault_matrix_offline() {
    let r = fault_matrix(false);
    println!("{} cases\n{}", r.len(), summarize(&r));
    check_expected(&r);
}

/// Spot checks of the table in the module doc, beyond the invariant.
fn check_expected(r: &[(Fault, &'static str)]) {
    let verdict = |side, when, kind: &str, what| {
        r.iter()
            .find(|(f, _)| {
                f.side == side && f.when == when && f.kind == kind && f.what == what && f.nth == 1
            })
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no case {side:?} {when:?} {kind} {what:?}"))
    };
    // Anything before Prepared: the guest stays at the source.
    for kind in [
        "Hello",
        "HelloAck",
        "Admit",
        "Admitted",
        "Image",
        "Suspended",
        "ImageEnd",
    ] {
        for what in [What::Cut(true), What::Cut(false), What::Stall, What::Kill] {
            let side = if matches!(kind, "HelloAck" | "Admitted") {
                Side::Dst
            } else {
                Side::Src
            };
            assert_eq!(
                verdict(side, When::Sent, kind, what),
                "source",
                "{kind} {what:?}"
            );
        }
    }
    // Prepared lost or delivered, then the link dies: no commit yet.
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Prepared", What::Cut(false)),
        "source"
    );
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Prepared", What::Cut(true)),
        "source"
    );
    // The source dies after journaling the commit: in doubt, nobody runs.
    assert_eq!(
        verdict(Side::Src, When::Sent, "Journal", What::Kill),
        "in-doubt"
    );
    // Cut after the commit is journaled but before Commit left: resumes.
    assert_eq!(
        verdict(Side::Src, When::Sent, "Journal", What::Cut(true)),
        "source"
    );
    // Commit lost: in doubt at the source, discarded at the destination.
    assert_eq!(
        verdict(Side::Src, When::Sent, "Commit", What::Cut(false)),
        "in-doubt"
    );
    assert_eq!(
        verdict(Side::Src, When::Sent, "Commit", What::Stall),
        "in-doubt"
    );
    // Commit delivered: the destination runs it; the source is in doubt.
    assert_eq!(
        verdict(Side::Src, When::Sent, "Commit", What::Cut(true)),
        "destination+in-doubt"
    );
    assert_eq!(
        verdict(Side::Dst, When::Received, "Commit", What::Kill),
        "in-doubt"
    );
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Journal", What::Kill),
        "destination+in-doubt"
    );
    // Bad input before the commit: the guest stays at the source.
    for kind in ["Hello", "Admit", "Image", "ImageEnd"] {
        for what in [What::Garbage, What::Oversize, What::Duplicate] {
            assert_eq!(
                verdict(Side::Src, When::Sent, kind, what),
                "source",
                "{kind} {what:?}"
            );
        }
    }
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Prepared", What::Garbage),
        "source"
    );
    // A broken Commit: the destination presumes abort and says so.
    assert_eq!(
        verdict(Side::Src, When::Sent, "Commit", What::Garbage),
        "source"
    );
    // A duplicate Prepared or Commit is reported and changes nothing.
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Prepared", What::Duplicate),
        "destination"
    );
    assert_eq!(
        verdict(Side::Src, When::Sent, "Commit", What::Duplicate),
        "destination"
    );
    // A broken Committed: in doubt (the destination does run it).
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Committed", What::Garbage),
        "destination+in-doubt"
    );
    // Committed lost: same; delivered: clean.
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Committed", What::Cut(false)),
        "destination+in-doubt"
    );
    assert_eq!(
        verdict(Side::Dst, When::Sent, "Committed", What::Cut(true)),
        "destination"
    );
}

#[test]
fn host_failures_around_the_commit() {
    // The destination cannot finish the image: it aborts, the source resumes.
    let mut p = Pair::new(21, true);
    p.dst.fail_complete = true;
    p.drive();
    assert_eq!(
        p.src.outcome,
        Some(SourceOutcome::Aborted(Error::Aborted(
            AbortReason::BadImage
        )))
    );
    assert_eq!(p.src.guest.run, Run::Running);
    assert!(p.src.journal.is_empty());
    assert_eq!(p.check_invariant(), "source");

    // The source cannot journal its commit: no Commit is ever sent.
    let mut p = Pair::new(22, true);
    p.src.fail_journal = true;
    p.drive();
    assert_eq!(
        p.src.outcome,
        Some(SourceOutcome::Aborted(Error::Aborted(
            AbortReason::SourceFailed
        )))
    );
    assert!(!p.link.sent.iter().any(|(_, k)| *k == "Commit"));
    assert_eq!(p.check_invariant(), "source");

    // The destination cannot journal, or cannot unpause, after the source
    // committed: its Abort lets the source resume even after its commit.
    for unpause in [false, true] {
        let mut p = Pair::new(23, false);
        if unpause {
            p.dst.fail_unpause = true;
        } else {
            p.dst.fail_journal = true;
        }
        p.drive();
        assert_eq!(
            p.src.outcome,
            Some(SourceOutcome::Aborted(Error::Aborted(
                AbortReason::DestFailed
            )))
        );
        assert_eq!(p.src.journal, [RecordKind::Commit, RecordKind::Aborted]);
        assert_eq!(
            p.dst.outcome,
            Some(DestOutcome::Discarded(Error::Aborted(
                AbortReason::DestFailed
            )))
        );
        assert_eq!(p.check_invariant(), "source");
    }
}

#[test]
fn operator_cancel_during_precopy() {
    let mut p = Pair::new(24, true);
    p.src.cancel_after_round = Some(1);
    p.drive();
    assert_eq!(
        p.src.outcome,
        Some(SourceOutcome::Aborted(Error::Aborted(
            AbortReason::Cancelled
        )))
    );
    assert_eq!(
        p.dst.outcome,
        Some(DestOutcome::Discarded(Error::Aborted(
            AbortReason::Cancelled
        )))
    );
    assert_eq!(p.src.guest.run, Run::Running);
    assert!(p.src.guest.logdirty.is_none(), "dirty log stopped");
    assert_eq!(p.check_invariant(), "source");
}

#[test]
fn no_abort_after_the_commit() {
    let now = Instant::ZERO;
    let mut s = Source::new(
        SourceConfig {
            session: 1,
            live: false,
            features: Features::ALL,
            timeouts: Timeouts::default(),
            guest: guest_desc(),
            guest_config: None,
        },
        now,
    );
    let mut b = [0u8; 512];
    let ack = frame(&Msg::HelloAck(msg::HelloAck {
        version: PROTOCOL_VERSION,
        features: Features::ALL,
    }));
    s.handle_frame(now, &ack[4..]).unwrap();
    s.handle_frame(now, &frame(&Msg::Admitted)[4..]).unwrap();
    assert_eq!(
        s.poll_action(),
        Some(SourceAction::StartTransfer { live: false })
    );
    s.handle_suspended(now).unwrap();
    let mut hdr = [0u8; IMAGE_HEADER_MAX];
    while s.poll_transmit(&mut b).unwrap().is_some() {}
    s.image_chunk_header(10, &mut hdr).unwrap();
    s.handle_image_end(now).unwrap();
    s.handle_frame(now, &frame(&Msg::Prepared)[4..]).unwrap();
    assert_eq!(
        s.poll_action(),
        Some(SourceAction::JournalCommit { session: 1 })
    );
    s.handle_journaled(now).unwrap();
    while s.poll_transmit(&mut b).unwrap().is_some() {}
    assert_eq!(s.state_name(), "Committing");
    assert_eq!(
        s.abort(now, AbortReason::Cancelled),
        Err(Error::InvalidInState {
            state: "Committing",
            input: "abort"
        })
    );
    // Stray input keeps the wait going; the deadline ends it in doubt.
    assert!(s.handle_frame(now, &frame(&Msg::Prepared)[4..]).is_err());
    assert_eq!(s.state_name(), "Committing");
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline);
    assert!(matches!(
        s.outcome(),
        Some(SourceOutcome::InDoubt(Error::Timeout {
            state: "Committing"
        }))
    ));
}

#[test]
fn destination_gives_up_mid_image_or_at_shutdown() {
    let mut p = Pair::new(31, true);
    p.dst.fail_chunk = Some(3);
    p.drive();
    assert_eq!(
        p.src.outcome,
        Some(SourceOutcome::Aborted(Error::Aborted(
            AbortReason::BadImage
        )))
    );
    assert_eq!(p.src.peer_detail, "writing pages: bad");
    assert_eq!(p.check_invariant(), "source");
    assert_eq!(p.dst.sink.as_ref().unwrap().run, Run::Destroyed);

    let mut p = Pair::new(32, true);
    p.dst.shutdown_at_admission = true;
    p.drive();
    assert_eq!(
        p.src.outcome,
        Some(SourceOutcome::Aborted(Error::Refused(
            RefuseReason::ShuttingDown
        )))
    );
    assert!(p.dst.sink.is_none());
    assert_eq!(p.check_invariant(), "source");

    // After the commit the destination may not give up.
    let now = Instant::ZERO;
    let mut d = admitted_dest(now);
    feed_dest(&mut d, now, &frame(&Msg::Suspended)).unwrap();
    let end = Msg::ImageEnd(msg::ImageEnd {
        chunks: 0,
        bytes: 0,
    });
    feed_dest(&mut d, now, &frame(&end)).unwrap();
    assert_eq!(d.poll_action(), Some(DestAction::CompleteImage));
    d.handle_image_complete(now, Ok(())).unwrap();
    feed_dest(&mut d, now, &frame(&Msg::Commit)).unwrap();
    assert_eq!(
        d.poll_action(),
        Some(DestAction::JournalCommit { session: 9 })
    );
    assert!(d.state().committed());
    assert_eq!(
        d.abort(now, AbortReason::Cancelled),
        Err(Error::InvalidInState {
            state: "Journaling",
            input: "abort"
        })
    );
    // Nor do the link, the clock or garbage stop it now.
    d.handle_link_error(now);
    d.handle_timeout(Instant::from_secs(1 << 20));
    assert!(feed_dest(&mut d, now, &[0, 0, 0, 1, 0xff]).is_err());
    d.handle_journaled(now).unwrap();
    assert_eq!(d.poll_action(), Some(DestAction::Unpause));
    d.handle_unpaused(now, Ok(())).unwrap();
    assert_eq!(
        d.poll_action(),
        Some(DestAction::Finished(DestOutcome::Running))
    );
}

/// Valid messages in random order, with random host answers: the
/// machines never panic, the destination never asks to unpause unless it
/// sent `Prepared` and then received `Commit`, and the source never sends
/// `Commit` unless it received `Prepared` and the host journaled.
#[test]
fn random_valid_messages_keep_the_commit_rules() {
    let payload = [1u8, 2, 3];
    let msgs: Vec<Msg<'_>> = vec![
        Msg::Hello(Hello {
            magic: msg::MAGIC,
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION,
            features: Features::ALL,
        }),
        Msg::HelloAck(msg::HelloAck {
            version: PROTOCOL_VERSION,
            features: Features::ALL,
        }),
        Msg::Admit(base_admit()),
        Msg::Admitted,
        Msg::Refused(msg::Refused {
            reason: RefuseReason::NoCapacity,
            detail: "needs 64 MiB",
        }),
        Msg::Image(&payload),
        Msg::RoundEnd(msg::RoundEnd {
            round: 1,
            pages: 1,
            dirty: 1,
        }),
        Msg::Suspended,
        Msg::ImageEnd(msg::ImageEnd {
            chunks: 1,
            bytes: 3,
        }),
        Msg::ImageEnd(msg::ImageEnd {
            chunks: 0,
            bytes: 0,
        }),
        Msg::Prepared,
        Msg::Commit,
        Msg::Committed,
        Msg::Abort(msg::Abort {
            reason: AbortReason::Cancelled,
            detail: "",
        }),
    ];
    let frames: Vec<Vec<u8>> = msgs.iter().map(frame).collect();
    let mut rng = XorShift(0x1234_5678);
    let mut b = [0u8; 512];
    let mut unpauses = 0;
    let mut commits = 0;
    for _ in 0..3000 {
        let now = Instant::ZERO;
        let mut d = Dest::new(DestConfig::default(), now);
        let mut s = Source::new(
            SourceConfig {
                session: 1,
                live: rng.next() % 2 == 0,
                features: Features::ALL,
                timeouts: Timeouts::default(),
                guest: guest_desc(),
                guest_config: None,
            },
            now,
        );
        let (mut d_sent_prepared, mut d_got_commit_after) = (false, false);
        let (mut s_got_prepared, mut s_journaled) = (false, false);
        for _ in 0..16 {
            // Half the time the message the destination expects next.
            let guided = rng.next() % 2 == 0;
            let expected = match d.state() {
                DestState::AwaitHello(_) => Some(frames[0].clone()),
                DestState::AwaitAdmit(..) => Some(frames[2].clone()),
                DestState::Receiving(r, _) if !r.suspended => Some(frames[7].clone()),
                DestState::Receiving(r, _) => Some(frame(&Msg::ImageEnd(msg::ImageEnd {
                    chunks: r.chunks,
                    bytes: r.bytes,
                }))),
                DestState::Prepared(..) => Some(frames[11].clone()),
                _ => None,
            };
            let f = match expected {
                Some(e) if guided => e,
                _ => frames[(rng.next() % frames.len() as u64) as usize].clone(),
            };
            let f = &f;
            let kind = kind_of(f);
            // Destination side.
            let was_prepared = matches!(d.state(), DestState::Prepared(..));
            if feed_dest(&mut d, now, f).is_ok() && kind == "Commit" && was_prepared {
                d_got_commit_after = d_sent_prepared;
            }
            while let Some(a) = d.poll_action() {
                let r = rng.next();
                let _ = match a {
                    DestAction::Admit(_) => d.handle_admission(
                        now,
                        if r % 3 == 0 {
                            Err(RefuseReason::NameTaken.into())
                        } else {
                            Ok(())
                        },
                    ),
                    DestAction::CompleteImage => d.handle_image_complete(
                        now,
                        if r % 4 == 0 {
                            Err(AbortReason::BadImage.into())
                        } else {
                            Ok(())
                        },
                    ),
                    DestAction::JournalCommit { .. } => d.handle_journaled(now),
                    DestAction::Unpause => {
                        assert!(d_got_commit_after, "unpause without Prepared then Commit");
                        unpauses += 1;
                        d.handle_unpaused(now, Ok(()))
                    }
                    DestAction::Finished(_) => Ok(()),
                };
            }
            while let Some(n) = d.poll_transmit(&mut b).unwrap() {
                if kind_of(&b[..n]) == "Prepared" {
                    d_sent_prepared = true;
                }
            }
            // Source side, with random host events; half the time the
            // answer it expects.
            let expected = match s.state() {
                SourceState::AwaitHelloAck(_) => Some(&frames[1]),
                SourceState::AwaitAdmission(..) => Some(&frames[3]),
                SourceState::AwaitPrepared(..) => Some(&frames[10]),
                SourceState::Committing { .. } => Some(&frames[12]),
                _ => None,
            };
            let f = match expected {
                Some(e) if rng.next() % 2 == 0 => Some(e),
                None if rng.next() % 2 == 0 => None,
                _ => Some(&frames[(rng.next() % frames.len() as u64) as usize]),
            };
            if let Some(f) = f {
                let kind = kind_of(f);
                if s.frame_len(now, f[..4].try_into().unwrap()).is_ok() {
                    let before = s.state_name();
                    if s.handle_frame(now, &f[4..]).is_ok()
                        && kind == "Prepared"
                        && before == "AwaitPrepared"
                    {
                        s_got_prepared = true;
                    }
                }
            }
            let suspended = s.transfer().is_some_and(|t| t.suspended);
            let _ = match rng.next() % 4 {
                0 if !suspended => s.handle_suspended(now),
                0 | 1 => s.handle_image_end(now),
                2 => s.handle_round_end(
                    now,
                    &precopy::PrecopyStats {
                        round: 1,
                        ..Default::default()
                    },
                ),
                _ => Ok(()),
            };
            while let Some(a) = s.poll_action() {
                if let SourceAction::JournalCommit { .. } = a {
                    assert!(s_got_prepared);
                    s_journaled = true;
                    let _ = s.handle_journaled(now);
                }
            }
            while let Some(n) = s.poll_transmit(&mut b).unwrap() {
                if kind_of(&b[..n]) == "Commit" {
                    assert!(
                        s_got_prepared && s_journaled,
                        "Commit before Prepared and journal"
                    );
                    commits += 1;
                }
            }
        }
    }
    // The random walk reached the interesting states at least sometimes.
    assert!(
        unpauses > 0 && commits > 0,
        "unpauses {unpauses}, commits {commits}"
    );
}

/// The source's frames in order, for the destination.
fn drain_source(s: &mut Source) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = [0u8; 512];
    while let Some(n) = s.poll_transmit(&mut b).unwrap() {
        out.push(b[..n].to_vec());
    }
    out
}

fn config_source(now: Instant, len: usize, required: bool) -> Source {
    Source::new(
        SourceConfig {
            session: 1,
            live: true,
            features: Features::ALL,
            timeouts: Timeouts::default(),
            guest: guest_desc(),
            guest_config: Some(ConfigOffer { len, required }),
        },
        now,
    )
}

/// Source and destination through the hello; returns the destination's
/// `HelloAck` frame after feeding it to the source.
fn hello_between(s: &mut Source, d: &mut Dest, now: Instant) {
    for f in drain_source(s) {
        feed_dest(d, now, &f).unwrap();
    }
    let mut b = [0u8; 512];
    while let Some(n) = d.poll_transmit(&mut b).unwrap() {
        let len = s.frame_len(now, b[..4].try_into().unwrap()).unwrap();
        assert_eq!(len + 4, n);
        s.handle_frame(now, &b[4..n]).unwrap();
    }
}

#[test]
fn the_guest_configuration_goes_between_hello_and_admission() {
    let now = Instant::ZERO;
    let cfg = br#"{"c_info":{"name":"web1"},"nics":[{"devid":0,"bridge":"xenbr0"}]}"#.repeat(100);
    assert!(cfg.len() > MAX_CONTROL_FRAME_LEN);
    let mut s = config_source(now, cfg.len(), true);
    let mut d = Dest::new(DestConfig::default(), now);
    hello_between(&mut s, &mut d, now);
    // The source asks its host to send the configuration, and holds the
    // admission request back until it is written.
    assert_eq!(s.poll_action(), Some(SourceAction::SendGuestConfig));
    assert!(drain_source(&mut s).is_empty());
    assert_eq!(d.max_frame_len(), MAX_GUEST_CONFIG_FRAME_LEN);
    let mut big = vec![0u8; MAX_GUEST_CONFIG_FRAME_LEN + 4];
    let n = msg::encode(&Msg::GuestConfig(&cfg), &mut big).unwrap();
    let len = d.frame_len(now, big[..4].try_into().unwrap()).unwrap();
    assert_eq!(len + 4, n);
    assert_eq!(
        d.handle_frame(now, &big[4..n]),
        Ok(Some(Payload::GuestConfig(&cfg[..])))
    );
    // Once it came, the destination is back to the control bound.
    assert_eq!(d.max_frame_len(), MAX_CONTROL_FRAME_LEN);
    // Admitted before the configuration was sent: out of order.
    assert!(s.handle_frame(now, &frame(&Msg::Admitted)[4..]).is_err());
    let mut s = config_source(now, cfg.len(), true);
    let mut d = Dest::new(DestConfig::default(), now);
    hello_between(&mut s, &mut d, now);
    assert_eq!(s.poll_action(), Some(SourceAction::SendGuestConfig));
    feed_dest(&mut d, now, &big[..n]).unwrap();
    s.handle_guest_config_sent(now).unwrap();
    let admit = drain_source(&mut s);
    assert_eq!(admit.len(), 1);
    assert!(matches!(msg::decode(&admit[0][4..]), Ok(Msg::Admit(_))));
    feed_dest(&mut d, now, &admit[0]).unwrap();
    match d.poll_action() {
        Some(DestAction::Admit(req)) => assert!(req.guest_config),
        other => panic!("{other:?}"),
    }
    // A second call is out of order.
    assert!(s.handle_guest_config_sent(now).is_err());
}

#[test]
fn a_guest_with_devices_does_not_go_where_its_configuration_cannot() {
    let now = Instant::ZERO;
    let older = DestConfig {
        features: Features(Features::LIVE.0 | Features::COMPRESS.0),
        ..DestConfig::default()
    };
    // Required: the source gives up before the admission request, and
    // says why to the destination.
    let mut s = config_source(now, 900, true);
    let mut d = Dest::new(older, now);
    hello_between(&mut s, &mut d, now);
    let e = Error::MissingFeature {
        feature: "guest device configuration (GUEST_CONFIG)",
    };
    assert_eq!(s.outcome(), Some(SourceOutcome::Aborted(e)));
    assert_eq!(
        format!("{e}"),
        "the peer does not support guest device configuration (GUEST_CONFIG)"
    );
    let out = drain_source(&mut s);
    assert_eq!(out.len(), 1);
    match msg::decode(&out[0][4..]) {
        Ok(Msg::Abort(a)) => {
            assert_eq!(a.reason, AbortReason::Unsupported);
            assert!(a.detail.contains("devices"), "{}", a.detail);
        }
        other => panic!("{other:?}"),
    }
    feed_dest(&mut d, now, &out[0]).unwrap();
    assert_eq!(
        d.outcome(),
        Some(DestOutcome::Discarded(Error::Aborted(
            AbortReason::Unsupported
        )))
    );
    // Not required: the admission request goes without it.
    let mut s = config_source(now, 900, false);
    let mut d = Dest::new(older, now);
    hello_between(&mut s, &mut d, now);
    assert_eq!(s.poll_action(), None);
    let admit = drain_source(&mut s);
    feed_dest(&mut d, now, &admit[0]).unwrap();
    match d.poll_action() {
        Some(DestAction::Admit(req)) => assert!(!req.guest_config),
        other => panic!("{other:?}"),
    }
    // Too long to send at all.
    let mut s = config_source(now, MAX_GUEST_CONFIG_LEN + 1, true);
    let mut d = Dest::new(DestConfig::default(), now);
    hello_between(&mut s, &mut d, now);
    assert_eq!(
        s.outcome(),
        Some(SourceOutcome::Aborted(Error::LimitExceeded(
            Limit::ConfigTooLong
        )))
    );
}

#[test]
fn a_destination_takes_one_configuration_only_where_agreed() {
    let now = Instant::ZERO;
    let hello = frame(&Msg::Hello(Hello {
        magic: msg::MAGIC,
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        features: Features::ALL,
    }));
    let cfg = frame(&Msg::GuestConfig(b"{}"));
    // Twice.
    let mut d = Dest::new(DestConfig::default(), now);
    feed_dest(&mut d, now, &hello).unwrap();
    feed_dest(&mut d, now, &cfg).unwrap();
    assert!(feed_dest(&mut d, now, &cfg).is_err());
    assert!(matches!(d.outcome(), Some(DestOutcome::Discarded(_))));
    // Not agreed: the bound is the control one and the message is out of
    // order.
    let mut d = Dest::new(
        DestConfig {
            features: Features::LIVE,
            ..DestConfig::default()
        },
        now,
    );
    feed_dest(&mut d, now, &hello).unwrap();
    assert_eq!(d.max_frame_len(), MAX_CONTROL_FRAME_LEN);
    assert!(feed_dest(&mut d, now, &cfg).is_err());
    // Not UTF-8.
    let mut d = Dest::new(DestConfig::default(), now);
    feed_dest(&mut d, now, &hello).unwrap();
    assert_eq!(
        feed_dest(&mut d, now, &frame(&Msg::GuestConfig(&[0xff, 0xfe]))),
        Err(Error::PeerMisbehaved(Misbehavior::InvalidField))
    );
    // After the admission request: out of order.
    let mut d = admitted_dest(now);
    assert!(feed_dest(&mut d, now, &cfg).is_err());
}

/// `Sched` (feature `SCHED`): taken once while the image flows, kept for
/// the host; a second one, a weight of 0, or one without the feature ends
/// the session; a guest configuration after the admission is out of place.
#[test]
fn sched_is_taken_once_with_its_feature() {
    let now = Instant::ZERO;
    let sched = |weight, cap| frame(&Msg::Sched(msg::Sched { weight, cap }));
    let mut d = admitted_dest(now);
    feed_dest(&mut d, now, &sched(512, 50)).unwrap();
    assert_eq!(
        d.receive().and_then(|r| r.sched),
        Some(crate::guest::SchedParams {
            weight: 512,
            cap: 50
        })
    );
    assert!(feed_dest(&mut d, now, &sched(512, 50)).is_err());
    let mut d = admitted_dest(now);
    assert!(feed_dest(&mut d, now, &sched(0, 0)).is_err());
    let mut d = admitted_dest(now);
    assert!(feed_dest(&mut d, now, &frame(&Msg::GuestConfig(b"{}"))).is_err());
    // After the suspend it is out of place.
    let mut d = admitted_dest(now);
    feed_dest(&mut d, now, &frame(&Msg::Suspended)).unwrap();
    assert!(feed_dest(&mut d, now, &sched(256, 0)).is_err());
    // A session without SCHED: refused at the destination (a source whose
    // session lacks it does not send it: tests/session_converge.rs).
    let mut d = Dest::new(
        DestConfig {
            features: Features(Features::ALL.0 & !Features::SCHED.0),
            ..DestConfig::default()
        },
        now,
    );
    for f in [
        frame(&Msg::Hello(Hello {
            magic: msg::MAGIC,
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION,
            features: Features::ALL,
        })),
        frame(&Msg::Admit(msg::Admit {
            session: 9,
            name: "web1",
            uuid: [0; 16],
            memory_bytes: 4096,
            p2m_size: 1,
            vcpus: 1,
            guest_type: 2,
            live: true,
        })),
    ] {
        feed_dest(&mut d, now, &f).unwrap();
    }
    assert!(matches!(d.poll_action(), Some(DestAction::Admit(_))));
    d.handle_admission(now, Ok(())).unwrap();
    drain(&mut d);
    assert!(feed_dest(&mut d, now, &sched(256, 0)).is_err());
}
