//! The page-transfer loop of a migration, over caller-provided dirty bitmaps.
//!
//! [`Precopy`] is the bookkeeping half of Xen's `send_memory_live` /
//! `suspend_and_send_dirty` (`tools/libs/guest/xg_sr_save.c`) with the I/O
//! taken out: it walks a dirty bitmap the caller owns, hands out batches of
//! at most [`MAX_BATCH_SIZE`] pfns (one libxc `PAGE_DATA` record each),
//! counts what was sent and when, paces batches under a bandwidth cap, and at
//! the end of each live round asks a [`PrecopyPolicy`] whether to go on.
//!
//! # Driving it
//!
//! ```text
//! live:    guest.enable_logdirty(); set_all(bitmap)
//!          loop {
//!              while n = pc.next_batch(bitmap, pfns) > 0 {
//!                  read pfns[..n], send one PAGE_DATA record of `bytes` bytes
//!                  if let Some(t) = pc.record_batch(now, n, bytes, wire) { wait until t }
//!              }
//!              dirty = guest.clean_dirty(bitmap)
//!              match pc.end_round(now, dirty)? {
//!                  ContinuePrecopy => continue,
//!                  StopAndCopy => break,
//!                  Abort => { guest keeps running; stop }
//!              }
//!          }
//!          guest.suspend(); dirty = guest.clean_dirty(scratch); OR it into bitmap
//!          pc.begin_final(now, count)
//!          while n = pc.next_batch(bitmap, pfns) > 0 { read, send, pc.record_batch(..) }
//!          summary = pc.finish(now)
//! offline: guest.suspend(); set_all(bitmap); pc = Precopy::offline(..);
//!          batches as above; summary = pc.finish(now)
//! ```
//!
//! [`drive`] has these steps as functions over the guest traits.
//!
//! The caller keeps the bitmap and may refill it between rounds as it likes;
//! [`Precopy`] only reads it. After `suspend`, the pages dirtied since the
//! last `clean_dirty` must be merged into the bitmap of pages not yet sent
//! (Xen sends `dirty_count + nr_deferred` there); the core's
//! [`or_into`] does that. The protocol layer (`crate::protocol::Source`) is
//! told about round ends and the suspend by the same caller, which keeps the
//! two machines independent.
//!
//! # Where PAGE_DATA goes
//!
//! Each batch becomes exactly one libxc `PAGE_DATA` record (8-byte record
//! header, 8-byte page-data header, one `u64` per pfn with the page type in
//! bits 60–63, then the packed page contents), and each record travels as
//! one image chunk of the relocation protocol. [`MAX_PAGE_DATA_RECORD_LEN`]
//! bounds that record, and the protocol's frame limit is derived from it.

mod converge;
pub mod drive;
mod policy;
#[cfg(test)]
mod tests;

pub use converge::{ConvergeConfig, ConvergePolicy};
pub use policy::{
    Decision, DefaultPolicy, PolicyConfig, PrecopyPolicy, SimplePolicy, DEFAULT_BUSY_ROUNDS,
    DEFAULT_DOWNTIME_LIMIT, DEFAULT_MAX_ROUNDS,
};

use crate::guest::{Pfn, PAGE_SIZE};
use crate::time::{Duration, Instant};
use core::fmt;

/// Pages per `PAGE_DATA` record: Xen's `MAX_BATCH_SIZE`.
pub const MAX_BATCH_SIZE: usize = 1024;

/// The largest `PAGE_DATA` record a batch can produce: record header (8),
/// page-data header (8), [`MAX_BATCH_SIZE`] pfn entries of 8 bytes, and as
/// many pages.
pub const MAX_PAGE_DATA_RECORD_LEN: usize = 8 + 8 + MAX_BATCH_SIZE * 8 + MAX_BATCH_SIZE * PAGE_SIZE;
const _: () = assert!(MAX_PAGE_DATA_RECORD_LEN == 4_202_512);
const _: () = assert!(MAX_PAGE_DATA_RECORD_LEN % 8 == 0);

/// Bytes one page costs on the wire when projecting downtime: its contents
/// plus its pfn entry.
pub const WIRE_BYTES_PER_PAGE: u64 = PAGE_SIZE as u64 + 8;

/// A round is "busy" when the guest dirtied at least this percentage of
/// the pages the round sent: the link barely keeps up. Counting distinct
/// dirty pages, a guest that out-writes the link saturates just under 100 %
/// (it rewrites the same pages), so "at least as many" alone would miss it.
pub const BUSY_PERCENT: u64 = 90;

/// Words of a dirty bitmap covering `p2m_size` pfns.
pub const fn bitmap_words(p2m_size: u64) -> usize {
    let w = p2m_size.div_ceil(64);
    if w > usize::MAX as u64 {
        usize::MAX
    } else {
        w as usize
    }
}

fn check_bitmap(bitmap: &[u64], p2m_size: u64) -> Result<usize, Error> {
    let needed = bitmap_words(p2m_size);
    if bitmap.len() < needed {
        return Err(Error::BitmapTooShort {
            needed,
            got: bitmap.len(),
        });
    }
    Ok(needed)
}

/// Marks every pfn below `p2m_size` dirty (round 1 sends everything) and
/// clears the bits beyond it. Returns the number of pages marked.
pub fn set_all(bitmap: &mut [u64], p2m_size: u64) -> Result<u64, Error> {
    let needed = check_bitmap(bitmap, p2m_size)?;
    for w in bitmap.iter_mut() {
        *w = 0;
    }
    let (full, rest) = bitmap.split_at_mut(needed);
    let _ = rest;
    for w in full.iter_mut() {
        *w = u64::MAX;
    }
    let tail = p2m_size % 64;
    if tail != 0 {
        if let Some(last) = full.last_mut() {
            *last = (1u64 << tail) - 1;
        }
    }
    Ok(p2m_size)
}

/// Counts the dirty pfns below `p2m_size`.
pub fn count_dirty(bitmap: &[u64], p2m_size: u64) -> Result<u64, Error> {
    let needed = check_bitmap(bitmap, p2m_size)?;
    let mut n: u64 = 0;
    for (i, w) in bitmap.iter().take(needed).enumerate() {
        n += u64::from(masked_word(*w, i, p2m_size).count_ones());
    }
    Ok(n)
}

/// `dst |= src` over the words covering `p2m_size`; returns the number of
/// dirty pfns in `dst` afterwards. Used after `suspend` to add the last
/// dirtied pages to those not yet sent.
pub fn or_into(dst: &mut [u64], src: &[u64], p2m_size: u64) -> Result<u64, Error> {
    let needed = check_bitmap(dst, p2m_size)?;
    check_bitmap(src, p2m_size)?;
    let mut n: u64 = 0;
    for (i, (d, s)) in dst.iter_mut().zip(src.iter()).take(needed).enumerate() {
        *d = masked_word(*d | *s, i, p2m_size);
        n += u64::from(d.count_ones());
    }
    Ok(n)
}

/// Word `i` of a bitmap with the bits at or beyond `p2m_size` cleared.
fn masked_word(w: u64, i: usize, p2m_size: u64) -> u64 {
    let base = (i as u64).saturating_mul(64);
    if base.saturating_add(64) <= p2m_size {
        w
    } else if base >= p2m_size {
        0
    } else {
        w & ((1u64 << (p2m_size - base)) - 1)
    }
}

/// Errors of the pre-copy loop: caller mistakes, never guest or peer input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The bitmap has fewer words than the guest's `p2m_size` needs.
    BitmapTooShort {
        /// Words needed.
        needed: usize,
        /// Words given.
        got: usize,
    },
    /// A method was called in a phase where it means nothing.
    InvalidInPhase {
        /// The phase ([`Phase::name`]).
        phase: &'static str,
        /// The method called.
        input: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BitmapTooShort { needed, got } => {
                write!(f, "dirty bitmap too short: {got} words, {needed} needed")
            }
            Error::InvalidInPhase { phase, input } => {
                write!(f, "pre-copy: {input} is invalid in phase {phase}")
            }
        }
    }
}

impl core::error::Error for Error {}

/// Settings of the loop itself (the policy has its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrecopyConfig {
    /// Cap on the send rate in bytes per second (`--bandwidth`) during live
    /// rounds, and during the one round of an offline transfer; `None` sends
    /// as fast as the link goes. The stop-and-copy round that ends a live
    /// transfer is never capped: the guest stopped for it, and every
    /// millisecond is downtime.
    pub bandwidth_limit: Option<u64>,
}

/// Where the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A live round (1-based); the guest runs.
    Live(u32),
    /// Stop-and-copy has been decided; waiting for the caller to suspend the
    /// guest and call [`Precopy::begin_final`].
    Stopping,
    /// The last round, guest suspended (or an offline migration's only one).
    Final,
    /// Finished: `finish` was called or the policy aborted.
    Done,
}

impl Phase {
    /// A short name for logs.
    pub const fn name(&self) -> &'static str {
        match self {
            Phase::Live(_) => "live",
            Phase::Stopping => "stopping",
            Phase::Final => "final",
            Phase::Done => "done",
        }
    }
}

/// Figures of one finished live round: what the policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrecopyStats {
    /// The round just finished, from 1 (the full first copy).
    pub round: u32,
    /// Pages sent in this round.
    pub pages_sent: u64,
    /// Bytes sent in this round (as reported by the caller: whole records).
    pub bytes_sent: u64,
    /// Pages sent since the start, all rounds.
    pub total_pages_sent: u64,
    /// Bytes sent since the start, all rounds.
    pub total_bytes_sent: u64,
    /// Pages the guest dirtied during this round: the next round's work.
    pub dirty_count: u64,
    /// Wall time of the round, from the caller's instants.
    pub round_time: Duration,
    /// Measured bandwidth over the round, bytes per second (`u64::MAX` when
    /// the round took no measurable time).
    pub bandwidth: u64,
    /// Time to send `dirty_count` pages at `bandwidth`: the downtime a
    /// stop-and-copy now would cost.
    pub projected_downtime: Duration,
    /// Consecutive rounds (ending with this one) in which the guest dirtied
    /// at least [`BUSY_PERCENT`] % as many pages as the round sent.
    pub busy_streak: u32,
    /// The guest's `p2m_size`.
    pub p2m_size: u64,
}

/// A snapshot for progress displays, cheap to take at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Where the loop is.
    pub phase: Phase,
    /// Pages to send in the current round (0 between rounds).
    pub round_pages: u64,
    /// Pages of the current round already sent.
    pub round_pages_sent: u64,
    /// Pages sent since the start.
    pub total_pages_sent: u64,
    /// Bytes sent since the start.
    pub total_bytes_sent: u64,
    /// The figures of the last finished live round, if any.
    pub last_round: Option<PrecopyStats>,
}

/// What a finished transfer amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Live rounds run (0 for an offline migration).
    pub live_rounds: u32,
    /// Pages sent in the final (suspended) round.
    pub final_pages: u64,
    /// Bytes sent in the final round.
    pub final_bytes: u64,
    /// Time from `begin_final` to `finish`: the page part of the downtime.
    pub final_time: Duration,
    /// Pages sent in all.
    pub total_pages_sent: u64,
    /// Bytes sent in all.
    pub total_bytes_sent: u64,
    /// Time from the start to `finish`.
    pub total_time: Duration,
    /// `total_bytes_sent` over `total_time`, bytes per second.
    pub bandwidth: u64,
}

/// The pre-copy loop's state. See the module doc for the call order.
#[derive(Debug)]
pub struct Precopy<P: PrecopyPolicy = DefaultPolicy> {
    policy: P,
    config: PrecopyConfig,
    p2m_size: u64,
    phase: Phase,
    started: Instant,
    round_start: Instant,
    /// Next pfn to look at in the current round.
    cursor: u64,
    round_pages: u64,
    round_sent: u64,
    round_bytes: u64,
    total_pages: u64,
    total_bytes: u64,
    busy_streak: u32,
    live_rounds: u32,
    last: Option<PrecopyStats>,
    /// Earliest instant the next batch may start under the bandwidth cap.
    next_send_at: Instant,
    /// When the previous batch finished.
    last_batch_end: Instant,
    /// Started offline: its one round is capped too.
    offline: bool,
}

impl<P: PrecopyPolicy> Precopy<P> {
    /// Starts a live migration at round 1, which sends every pfn below
    /// `p2m_size` (the caller fills its bitmap with [`set_all`]).
    pub fn live(p2m_size: u64, config: PrecopyConfig, policy: P, now: Instant) -> Self {
        Precopy {
            policy,
            config,
            p2m_size,
            phase: Phase::Live(1),
            started: now,
            round_start: now,
            cursor: 0,
            round_pages: p2m_size,
            round_sent: 0,
            round_bytes: 0,
            total_pages: 0,
            total_bytes: 0,
            busy_streak: 0,
            live_rounds: 0,
            last: None,
            next_send_at: now,
            last_batch_end: now,
            offline: false,
        }
    }

    /// Starts an offline migration: the guest is already suspended and one
    /// final round sends every pfn.
    pub fn offline(p2m_size: u64, config: PrecopyConfig, policy: P, now: Instant) -> Self {
        let mut pc = Self::live(p2m_size, config, policy, now);
        pc.phase = Phase::Final;
        pc.offline = true;
        pc
    }

    /// Where the loop is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The guest's `p2m_size` this loop walks.
    pub fn p2m_size(&self) -> u64 {
        self.p2m_size
    }

    /// The policy, e.g. to read its settings back.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The policy, to change its settings between rounds (a host whose
    /// guest cannot be throttled turns auto-converge off).
    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    /// Fills `out` with the next dirty pfns of the current round, at most
    /// `min(out.len(), MAX_BATCH_SIZE)`, and returns how many. Zero means the
    /// round has no more pages: call [`end_round`](Self::end_round) (live)
    /// or [`finish`](Self::finish) (final).
    pub fn next_batch(&mut self, bitmap: &[u64], out: &mut [Pfn]) -> Result<usize, Error> {
        match self.phase {
            Phase::Live(_) | Phase::Final => {}
            p => {
                return Err(Error::InvalidInPhase {
                    phase: p.name(),
                    input: "next_batch",
                })
            }
        }
        let words = check_bitmap(bitmap, self.p2m_size)?;
        let max = out.len().min(MAX_BATCH_SIZE);
        let mut n = 0;
        while n < max && self.cursor < self.p2m_size {
            let wi = (self.cursor / 64) as usize;
            if wi >= words {
                break;
            }
            let Some(&word) = bitmap.get(wi) else { break };
            let bit = self.cursor % 64;
            let w = masked_word(word, wi, self.p2m_size) >> bit;
            if w == 0 {
                self.cursor = (wi as u64 + 1) * 64;
                continue;
            }
            let skip = u64::from(w.trailing_zeros());
            let pfn = self.cursor + skip;
            if let Some(slot) = out.get_mut(n) {
                *slot = pfn;
            }
            n += 1;
            self.cursor = pfn + 1;
        }
        Ok(n)
    }

    /// Records that a batch of `pages` pages went out, finished at `now`:
    /// `bytes` of the guest's image (what rates and the downtime projection
    /// count) that took `wire` bytes on the link once packed (what a
    /// bandwidth cap books: zero pages and compression leave more of the
    /// cap for the pages that remain). Under a cap in a live round or an
    /// offline transfer, returns the instant before which the next batch
    /// must not start (`None`: go on).
    pub fn record_batch(
        &mut self,
        now: Instant,
        pages: u64,
        bytes: u64,
        wire: u64,
    ) -> Option<Instant> {
        self.round_sent = self.round_sent.saturating_add(pages);
        self.round_bytes = self.round_bytes.saturating_add(bytes);
        self.total_pages = self.total_pages.saturating_add(pages);
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        let cap = match (self.phase, self.config.bandwidth_limit) {
            (Phase::Live(_), Some(cap)) => cap,
            (Phase::Final, Some(cap)) if self.offline => cap,
            _ => return None,
        };
        // Each batch books `bytes / cap` of the link from the moment it was
        // allowed to start: the later of the previous booking's end and the
        // previous batch's end. A slow link thus earns no burst credit.
        let start = self.next_send_at.max(self.last_batch_end);
        self.last_batch_end = now;
        self.next_send_at = start + Duration::for_bytes_at_rate(wire, cap);
        if self.next_send_at > now {
            Some(self.next_send_at)
        } else {
            None
        }
    }

    /// Ends a live round at `now`, with `dirty_count` pages dirtied during
    /// it (what the caller's `clean_dirty` returned; the caller's bitmap now
    /// holds them). Consults the policy and returns its decision; on
    /// `ContinuePrecopy` the next round starts at `now`.
    pub fn end_round(&mut self, now: Instant, dirty_count: u64) -> Result<Decision, Error> {
        let Phase::Live(round) = self.phase else {
            return Err(Error::InvalidInPhase {
                phase: self.phase.name(),
                input: "end_round",
            });
        };
        let round_time = now - self.round_start;
        let bandwidth = round_time.rate_of(self.round_bytes);
        let projected_downtime =
            Duration::for_bytes_at_rate(dirty_count.saturating_mul(WIRE_BYTES_PER_PAGE), bandwidth);
        if dirty_count > 0
            && u128::from(dirty_count) * 100
                >= u128::from(self.round_sent) * u128::from(BUSY_PERCENT)
        {
            self.busy_streak = self.busy_streak.saturating_add(1);
        } else {
            self.busy_streak = 0;
        }
        let stats = PrecopyStats {
            round,
            pages_sent: self.round_sent,
            bytes_sent: self.round_bytes,
            total_pages_sent: self.total_pages,
            total_bytes_sent: self.total_bytes,
            dirty_count,
            round_time,
            bandwidth,
            projected_downtime,
            busy_streak: self.busy_streak,
            p2m_size: self.p2m_size,
        };
        self.last = Some(stats);
        self.live_rounds = round;
        let decision = self.policy.decide(&stats);
        match decision {
            Decision::ContinuePrecopy => {
                self.phase = Phase::Live(round.saturating_add(1));
                self.start_round(now, dirty_count);
            }
            Decision::StopAndCopy => self.phase = Phase::Stopping,
            Decision::Abort => self.phase = Phase::Done,
        }
        Ok(decision)
    }

    /// The guest is suspended: start the final round at `now`, over
    /// `dirty_count` pages (the caller's bitmap, merged with the last dirty
    /// log, see [`or_into`]).
    pub fn begin_final(&mut self, now: Instant, dirty_count: u64) -> Result<(), Error> {
        if self.phase != Phase::Stopping {
            return Err(Error::InvalidInPhase {
                phase: self.phase.name(),
                input: "begin_final",
            });
        }
        self.phase = Phase::Final;
        self.start_round(now, dirty_count);
        Ok(())
    }

    /// The final round's pages are all sent: returns the summary.
    pub fn finish(&mut self, now: Instant) -> Result<Summary, Error> {
        if self.phase != Phase::Final {
            return Err(Error::InvalidInPhase {
                phase: self.phase.name(),
                input: "finish",
            });
        }
        self.phase = Phase::Done;
        let total_time = now - self.started;
        Ok(Summary {
            live_rounds: self.live_rounds,
            final_pages: self.round_sent,
            final_bytes: self.round_bytes,
            final_time: now - self.round_start,
            total_pages_sent: self.total_pages,
            total_bytes_sent: self.total_bytes,
            total_time,
            bandwidth: total_time.rate_of(self.total_bytes),
        })
    }

    /// A snapshot for progress reports.
    pub fn progress(&self) -> Progress {
        Progress {
            phase: self.phase,
            round_pages: self.round_pages,
            round_pages_sent: self.round_sent,
            total_pages_sent: self.total_pages,
            total_bytes_sent: self.total_bytes,
            last_round: self.last,
        }
    }

    fn start_round(&mut self, now: Instant, pages: u64) {
        self.round_start = now;
        self.cursor = 0;
        self.round_pages = pages;
        self.round_sent = 0;
        self.round_bytes = 0;
        self.next_send_at = now;
        self.last_batch_end = now;
    }
}
