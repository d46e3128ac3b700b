//! What is in flight on this host, for `relocd status`: every migration
//! (outgoing and incoming), save and restore has an entry while it runs.
//!
//! A command's entry follows the progress it already reports to its own
//! client ([`Tracking`] sits between the command and its
//! [`ProgressSink`]); an incoming session's follows the pages it writes to
//! the guest it builds ([`Handle::wrote`], from the engine's
//! `TrackedSink`). Reading the registry ([`InFlight::snapshot`]) takes a
//! short lock and never touches a session: no report, no cancel.
//!
//! The dirty rate is the session's own (the pages dirtied in its last
//! finished pre-copy round over that round's length), kept until the next
//! round's. The bandwidth is the session's measurement when it gives one,
//! else the bytes so far over the time elapsed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::api::{Cancelled, Direction, Phase, Progress, ProgressSink, SessionStatus};

/// A measured bandwidth above this (MiB/s) is a round too short to time.
const MAX_CREDIBLE_MIB_S: f64 = 1e7;

/// One entry and what its figures are derived from.
#[derive(Debug)]
struct Entry {
    status: SessionStatus,
    started: Instant,
    /// The bandwidth the session measured (MiB/s), when it gives one.
    measured_mib_s: Option<f64>,
}

#[derive(Debug, Default)]
struct Registry {
    entries: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
}

impl Registry {
    fn with<R>(&self, id: u64, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
            .map(f)
    }
}

/// The registry of sessions in flight (module doc). Cheap to clone; every
/// clone is the same registry.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Registry>);

/// What a new entry says before the first progress report.
#[derive(Clone, Debug)]
pub struct Start {
    /// Which way the guest goes.
    pub direction: Direction,
    /// The guest's name.
    pub domain: String,
    /// The other host, for a migration.
    pub peer: Option<String>,
    /// The file, for a save or restore.
    pub file: Option<PathBuf>,
    /// The stage it starts in.
    pub phase: Phase,
    /// The guest's page count, when known.
    pub pages_total: u64,
}

impl InFlight {
    /// An empty registry.
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// Adds an entry; it goes when the returned ticket is dropped.
    pub fn start(&self, s: Start) -> Ticket {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let status = SessionStatus {
            domain: s.domain,
            direction: s.direction,
            peer: s.peer,
            file: s.file,
            phase: s.phase,
            round: 0,
            pages_sent: 0,
            pages_total: s.pages_total,
            dirty_pages: 0,
            dirty_rate_bytes_per_s: None,
            bytes_sent: 0,
            bandwidth_mib_s: 0.0,
            expected_downtime_ms: None,
            elapsed_ms: 0.0,
        };
        self.0
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Entry {
                    status,
                    started: Instant::now(),
                    measured_mib_s: None,
                },
            );
        Ticket(Handle {
            reg: self.0.clone(),
            id,
        })
    }

    /// Everything in flight now, oldest first.
    pub fn snapshot(&self) -> Vec<SessionStatus> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Vec<SessionStatus> {
        let entries = self
            .0
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries
            .values()
            .map(|e| {
                let mut s = e.status.clone();
                let elapsed = now.saturating_duration_since(e.started).as_secs_f64();
                s.elapsed_ms = elapsed * 1000.0;
                s.bandwidth_mib_s = match e.measured_mib_s {
                    Some(m) => m,
                    None if elapsed > 0.0 => s.bytes_sent as f64 / elapsed / (1024.0 * 1024.0),
                    None => 0.0,
                };
                s
            })
            .collect()
    }

    /// Entries in flight now.
    pub fn len(&self) -> usize {
        self.0
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Updates one entry; does not own it.
#[derive(Clone, Debug)]
pub struct Handle {
    reg: Arc<Registry>,
    id: u64,
}

impl Handle {
    /// Folds a progress report into the entry.
    pub fn report(&self, p: &Progress) {
        self.reg.with(self.id, |e| apply(e, p));
    }

    /// An incoming session wrote `pages` pages (`bytes` of page data) to
    /// its guest.
    pub fn wrote(&self, pages: u64, bytes: u64) {
        self.reg.with(self.id, |e| {
            e.status.pages_sent = e.status.pages_sent.saturating_add(pages);
            e.status.bytes_sent = e.status.bytes_sent.saturating_add(bytes);
        });
    }

    /// The entry's stage changes (an incoming session's image is complete:
    /// committing).
    pub fn phase(&self, phase: Phase) {
        self.reg.with(self.id, |e| e.status.phase = phase);
    }
}

/// An entry's owner: the entry goes when this is dropped.
#[derive(Debug)]
pub struct Ticket(Handle);

impl Ticket {
    /// A handle that updates this entry (it outlives nothing: once the
    /// ticket is dropped its updates do nothing).
    pub fn handle(&self) -> Handle {
        self.0.clone()
    }

    /// Folds a progress report into the entry.
    pub fn report(&self, p: &Progress) {
        self.0.report(p);
    }

    /// A progress sink that forwards to `inner` and keeps this entry up to
    /// date.
    pub fn tracking<'a>(&'a self, inner: &'a mut dyn ProgressSink) -> Tracking<'a> {
        Tracking {
            handle: &self.0,
            inner,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0
            .reg
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0.id);
    }
}

/// A command's progress sink that also updates its entry (module doc).
pub struct Tracking<'a> {
    handle: &'a Handle,
    inner: &'a mut dyn ProgressSink,
}

impl ProgressSink for Tracking<'_> {
    fn report(&mut self, progress: &Progress) -> Result<(), Cancelled> {
        self.handle.report(progress);
        self.inner.report(progress)
    }

    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

/// The entry after report `p`.
fn apply(e: &mut Entry, p: &Progress) {
    let s = &mut e.status;
    if p.dirty_rate_bytes_per_s.is_some() {
        s.dirty_rate_bytes_per_s = p.dirty_rate_bytes_per_s;
    }
    s.phase = p.phase;
    s.round = p.round;
    s.pages_sent = p.pages_sent;
    if p.pages_total > 0 {
        s.pages_total = p.pages_total;
    }
    s.dirty_pages = p.dirty_pages;
    s.bytes_sent = p.bytes_sent;
    s.expected_downtime_ms = p.projected_downtime_ms;
    e.measured_mib_s = (p.bandwidth_mib_s > 0.0 && p.bandwidth_mib_s < MAX_CREDIBLE_MIB_S)
        .then_some(p.bandwidth_mib_s)
        .or(e.measured_mib_s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PAGE: u64 = relocd_core::guest::PAGE_SIZE as u64;

    fn start(reg: &InFlight, direction: Direction) -> Ticket {
        reg.start(Start {
            direction,
            domain: "web1".into(),
            peer: Some("hostb:8002".into()),
            file: None,
            phase: Phase::Connecting,
            pages_total: 1000,
        })
    }

    fn precopy(round: u32, sent: u64, dirty: u64) -> Progress {
        let mut p = Progress::phase(Phase::Precopy);
        p.round = round;
        p.pages_sent = sent;
        p.dirty_pages = dirty;
        p.bytes_sent = sent * PAGE;
        p
    }

    #[test]
    fn an_entry_lives_as_long_as_its_ticket() {
        let reg = InFlight::new();
        assert!(reg.snapshot().is_empty());
        let a = start(&reg, Direction::Outgoing);
        let b = start(&reg, Direction::Save);
        let snap = reg.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].direction, Direction::Outgoing);
        assert_eq!(snap[1].direction, Direction::Save);
        assert_eq!(snap[0].phase, Phase::Connecting);
        drop(a);
        assert_eq!(reg.snapshot().len(), 1);
        let h = b.handle();
        drop(b);
        assert!(reg.is_empty());
        // A handle of a gone entry does nothing.
        h.report(&precopy(1, 10, 0));
        h.wrote(1, PAGE);
        assert!(reg.snapshot().is_empty());
    }

    #[test]
    fn reports_move_phase_round_and_counters() {
        let reg = InFlight::new();
        let t = start(&reg, Direction::Outgoing);
        let t0 = Instant::now();
        t.report(&precopy(1, 100, 0));
        let s = &reg.snapshot_at(t0 + Duration::from_secs(2))[0];
        assert_eq!((s.phase, s.round, s.pages_sent), (Phase::Precopy, 1, 100));
        assert_eq!(s.dirty_rate_bytes_per_s, None);
        // No measured bandwidth: bytes over elapsed.
        let avg = 100.0 * PAGE as f64 / 2.0 / (1024.0 * 1024.0);
        assert!((s.bandwidth_mib_s - avg).abs() < avg * 0.01, "{s:?}");
        let mut p = precopy(2, 1000, 256);
        p.dirty_rate_bytes_per_s = Some(512 * 1024);
        p.bandwidth_mib_s = 64.0;
        p.projected_downtime_ms = Some(16.0);
        t.report(&p);
        let s = &reg.snapshot()[0];
        assert_eq!((s.round, s.pages_sent, s.dirty_pages), (2, 1000, 256));
        assert_eq!(s.dirty_rate_bytes_per_s, Some(512 * 1024));
        assert_eq!(s.expected_downtime_ms, Some(16.0));
        assert_eq!(s.bandwidth_mib_s, 64.0);
        // The stop-and-copy keeps the last round's rate and bandwidth.
        let mut stop = Progress::phase(Phase::StopAndCopy);
        stop.pages_sent = 1200;
        t.report(&stop);
        let s = &reg.snapshot()[0];
        assert_eq!(
            (s.phase, s.round, s.pages_sent),
            (Phase::StopAndCopy, 0, 1200)
        );
        assert_eq!(s.bandwidth_mib_s, 64.0);
        assert_eq!(s.dirty_rate_bytes_per_s, Some(512 * 1024));
        assert_eq!(s.expected_downtime_ms, None);
    }

    #[test]
    fn incoming_counts_pages_written() {
        let reg = InFlight::new();
        let inc = start(&reg, Direction::Incoming);
        let h = inc.handle();
        h.wrote(3, 3 * PAGE);
        h.wrote(2, 2 * PAGE);
        h.phase(Phase::Committing);
        let snap = reg.snapshot();
        assert_eq!(snap[0].pages_sent, 5);
        assert_eq!(snap[0].bytes_sent, 5 * PAGE);
        assert_eq!(snap[0].phase, Phase::Committing);
    }

    #[test]
    fn tracking_forwards_reports_and_cancels() {
        struct Sink(u32, bool);
        impl ProgressSink for Sink {
            fn report(&mut self, _: &Progress) -> Result<(), Cancelled> {
                self.0 += 1;
                if self.1 {
                    Err(Cancelled)
                } else {
                    Ok(())
                }
            }
            fn is_cancelled(&self) -> bool {
                self.1
            }
        }
        let reg = InFlight::new();
        let t = start(&reg, Direction::Outgoing);
        let mut inner = Sink(0, false);
        {
            let mut s = t.tracking(&mut inner);
            assert!(s.report(&precopy(1, 7, 0)).is_ok());
            assert!(!s.is_cancelled());
        }
        assert_eq!(inner.0, 1);
        assert_eq!(reg.snapshot()[0].pages_sent, 7);
        let mut inner = Sink(0, true);
        let mut s = t.tracking(&mut inner);
        assert_eq!(s.report(&precopy(1, 9, 0)), Err(Cancelled));
        assert!(s.is_cancelled());
        // The entry follows even a report the client refused.
        assert_eq!(reg.snapshot()[0].pages_sent, 9);
    }
}
