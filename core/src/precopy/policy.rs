//! When to stop pre-copy: a pure, swappable policy over [`PrecopyStats`].

use super::PrecopyStats;
use crate::time::Duration;

/// What to do after a pre-copy round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Run another live round over the pages dirtied during this one.
    ContinuePrecopy,
    /// Suspend the guest and send what is still dirty (stop-and-copy).
    StopAndCopy,
    /// Give up the migration; the guest keeps running at the source.
    Abort,
}

/// A stop decision for the pre-copy loop.
///
/// `decide` is called once at the end of every live round with that round's
/// figures. It must not do I/O; it may keep state across rounds (`&mut
/// self`). The loop ([`super::Precopy`]) and the protocol are unaware of how
/// the decision is reached, so a host may plug in its own policy (Xen's
/// `precopy_policy` callback, libxl's `libxl__domain_save_precopy_policy`).
pub trait PrecopyPolicy {
    /// The decision after the round described by `stats`.
    fn decide(&mut self, stats: &PrecopyStats) -> Decision;
}

impl<P: PrecopyPolicy + ?Sized> PrecopyPolicy for &mut P {
    fn decide(&mut self, stats: &PrecopyStats) -> Decision {
        (**self).decide(stats)
    }
}

/// Default downtime target: 300 ms (`--downtime-limit`).
pub const DEFAULT_DOWNTIME_LIMIT: Duration = Duration::from_millis(300);
/// Default cap on live rounds, counting the first full copy: 5, Xen's
/// `SPP_MAX_ITERATIONS` in `xg_sr_save.c` (`--max-iters`). xend-era libxc
/// used 29 (`DEF_MAX_ITERS`); a downtime target makes the long tail of
/// rounds unnecessary.
pub const DEFAULT_MAX_ROUNDS: u32 = 5;
/// Default number of consecutive non-converging rounds tolerated: 3.
pub const DEFAULT_BUSY_ROUNDS: u32 = 3;

/// The settings of [`DefaultPolicy`], as the CLI exposes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Stop when the pages still dirty can be sent within this time at the
    /// measured bandwidth (`--downtime-limit`).
    pub downtime_limit: Duration,
    /// Stop (or abort, with `abort_if_busy`) after this many live rounds
    /// (`--max-iters`). At least 1 is enforced.
    pub max_rounds: u32,
    /// Stop (or abort) when the guest dirtied nearly as many pages as the
    /// round sent ([`super::BUSY_PERCENT`]) this many rounds in a row. 0
    /// disables the check.
    pub busy_rounds: u32,
    /// Abort instead of forcing a stop-and-copy whose downtime would exceed
    /// the limit (`--abort-if-busy`, as xl's `--abort_if_busy`).
    pub abort_if_busy: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            downtime_limit: DEFAULT_DOWNTIME_LIMIT,
            max_rounds: DEFAULT_MAX_ROUNDS,
            busy_rounds: DEFAULT_BUSY_ROUNDS,
            abort_if_busy: false,
        }
    }
}

/// relocd's default policy, in this order:
///
/// 1. nothing left dirty, or the projected downtime (dirty pages at the
///    measured bandwidth) within `downtime_limit` → stop-and-copy;
/// 2. the guest out-dirtied the link for `busy_rounds` consecutive rounds →
///    stop-and-copy anyway, or abort with `abort_if_busy`;
/// 3. `max_rounds` reached → the same;
/// 4. otherwise another round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DefaultPolicy {
    /// The settings.
    pub config: PolicyConfig,
}

impl DefaultPolicy {
    /// A policy with these settings.
    pub const fn new(config: PolicyConfig) -> Self {
        DefaultPolicy { config }
    }

    fn give_up(&self) -> Decision {
        if self.config.abort_if_busy {
            Decision::Abort
        } else {
            Decision::StopAndCopy
        }
    }
}

impl PrecopyPolicy for DefaultPolicy {
    fn decide(&mut self, s: &PrecopyStats) -> Decision {
        if s.dirty_count == 0 || s.projected_downtime <= self.config.downtime_limit {
            return Decision::StopAndCopy;
        }
        if self.config.busy_rounds > 0 && s.busy_streak >= self.config.busy_rounds {
            return self.give_up();
        }
        if s.round >= self.config.max_rounds.max(1) {
            return self.give_up();
        }
        Decision::ContinuePrecopy
    }
}

/// Xen's own `simple_precopy_policy`: stop when fewer than `target_dirty`
/// pages are dirty or after `max_rounds` rounds; never abort. Useful to
/// compare against, and as an example of swapping the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimplePolicy {
    /// Xen's `SPP_TARGET_DIRTY_COUNT` (50).
    pub target_dirty: u64,
    /// Xen's `SPP_MAX_ITERATIONS` (5).
    pub max_rounds: u32,
}

impl Default for SimplePolicy {
    fn default() -> Self {
        SimplePolicy {
            target_dirty: 50,
            max_rounds: 5,
        }
    }
}

impl PrecopyPolicy for SimplePolicy {
    fn decide(&mut self, s: &PrecopyStats) -> Decision {
        if s.dirty_count < self.target_dirty || s.round >= self.max_rounds {
            Decision::StopAndCopy
        } else {
            Decision::ContinuePrecopy
        }
    }
}
