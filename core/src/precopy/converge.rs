//! Auto-converge: when the guest dirties memory faster than the rounds
//! shrink it, take CPU time from it, a little at first and more each
//! round, up to a ceiling (QEMU's and libvirt's `auto-converge`, with a
//! scheduler cap in place of their vCPU sleeps).
//!
//! [`ConvergePolicy`] wraps [`DefaultPolicy`]: without auto-converge it
//! decides exactly as the default policy. With it, after each live round:
//!
//! 1. nothing dirty, or the projected downtime within the limit →
//!    stop-and-copy (as the default policy);
//! 2. the round's dirty set did not shrink to half of what the round sent
//!    (the guest dirtied at least half as many pages as the round copied:
//!    QEMU's trigger) and the throttle is below its ceiling → tighten the
//!    throttle one step and run another round;
//! 3. otherwise the default policy decides, with its round cap and busy
//!    streak counted from the last round that tightened the throttle, so
//!    a throttle that just took hold gets its rounds.
//!
//! The steps: [`ConvergeConfig::initial`] (20 %), then each step halves the
//! CPU time left (20, 60, 80, 90, 95, 98 %); when the round was busy (the
//! guest dirtied at least [`super::BUSY_PERCENT`] % of what the round
//! sent: the link does not keep up at all) a step takes three quarters of
//! the time left, the first one included (80, 95, 99 %), up to
//! [`ConvergeConfig::ceiling`] (99 %). Every round a throttle that does
//! not bite costs a whole copy of the dirty set, so a guest far faster
//! than the link is not eased in. The
//! throttle never loosens during a migration: a guest that converged under
//! it would dirty more without it.
//! The host reads [`ConvergePolicy::throttle`] after each round and tells
//! the guest (`SourceGuest::throttle`).

use super::{Decision, DefaultPolicy, PrecopyPolicy, PrecopyStats};

/// Auto-converge's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergeConfig {
    /// The first throttle, percent of CPU time taken (QEMU's
    /// `cpu-throttle-initial`, 20).
    pub initial: u8,
    /// The highest throttle (QEMU's `max-cpu-throttle`, 99).
    pub ceiling: u8,
}

impl Default for ConvergeConfig {
    fn default() -> Self {
        ConvergeConfig {
            initial: 20,
            ceiling: 99,
        }
    }
}

impl ConvergeConfig {
    /// The throttle after `t`: [`initial`](Self::initial) from 0, then half
    /// of the CPU time left; after a `busy` round three quarters of what
    /// [`initial`](Self::initial) leaves from 0, and of the time left after
    /// that. At most [`ceiling`](Self::ceiling).
    pub fn next(&self, t: u8, busy: bool) -> u8 {
        let ceiling = self.ceiling.min(100);
        let left = 100 - t.min(100);
        let n = if t == 0 && busy {
            100 - (100 - self.initial.clamp(1, 100)) / 4
        } else if t == 0 {
            self.initial.max(1)
        } else if busy {
            100 - left / 4
        } else {
            100 - left / 2
        };
        n.max(t).min(ceiling)
    }
}

/// The default policy, with auto-converge when it is on (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvergePolicy {
    /// The default policy's settings.
    pub base: DefaultPolicy,
    /// Auto-converge's, `None` when it is off.
    pub converge: Option<ConvergeConfig>,
    throttle: u8,
    steps: u32,
    /// The last round that tightened the throttle (0: none).
    changed_at: u32,
}

impl ConvergePolicy {
    /// A policy over `base`, with auto-converge if `converge` is given.
    pub const fn new(base: DefaultPolicy, converge: Option<ConvergeConfig>) -> Self {
        ConvergePolicy {
            base,
            converge,
            throttle: 0,
            steps: 0,
            changed_at: 0,
        }
    }

    /// The throttle now: percent of the guest's CPU time to take (0: none).
    pub fn throttle(&self) -> u8 {
        self.throttle
    }

    /// How many times the throttle was tightened.
    pub fn steps(&self) -> u32 {
        self.steps
    }
}

impl PrecopyPolicy for ConvergePolicy {
    fn decide(&mut self, s: &PrecopyStats) -> Decision {
        let Some(cfg) = self.converge else {
            return self.base.decide(s);
        };
        if s.dirty_count == 0 || s.projected_downtime <= self.base.config.downtime_limit {
            return Decision::StopAndCopy;
        }
        let not_shrinking = u128::from(s.dirty_count) * 2 >= u128::from(s.pages_sent);
        let busy = u128::from(s.dirty_count) * 100
            >= u128::from(s.pages_sent) * u128::from(super::BUSY_PERCENT);
        let next = cfg.next(self.throttle, busy);
        if not_shrinking && next > self.throttle {
            self.throttle = next;
            self.steps += 1;
            self.changed_at = s.round;
            return Decision::ContinuePrecopy;
        }
        let since = s.round.saturating_sub(self.changed_at);
        let relative = PrecopyStats {
            round: since,
            busy_streak: s.busy_streak.min(since),
            ..*s
        };
        self.base.decide(&relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precopy::PolicyConfig;
    use crate::time::Duration;

    fn stats(round: u32, sent: u64, dirty: u64, downtime_ms: u64, busy: u32) -> PrecopyStats {
        PrecopyStats {
            round,
            pages_sent: sent,
            dirty_count: dirty,
            projected_downtime: Duration::from_millis(downtime_ms),
            busy_streak: busy,
            ..PrecopyStats::default()
        }
    }

    #[test]
    fn steps_halve_the_time_left_up_to_the_ceiling() {
        let c = ConvergeConfig::default();
        for (busy, want) in [
            (false, [20, 60, 80, 90, 95, 98, 99, 99]),
            (true, [80, 95, 99, 99, 99, 99, 99, 99]),
        ] {
            let mut t = 0;
            let mut seen = [0u8; 8];
            for s in &mut seen {
                t = c.next(t, busy);
                *s = t;
            }
            assert_eq!(seen, want, "busy {busy}");
        }
        let low = ConvergeConfig {
            initial: 10,
            ceiling: 50,
        };
        assert_eq!(low.next(0, false), 10);
        assert_eq!(low.next(0, true), 50);
        assert_eq!(low.next(10, false), 50);
        assert_eq!(low.next(50, true), 50);
    }

    #[test]
    fn off_it_is_the_default_policy() {
        let base = DefaultPolicy::new(PolicyConfig::default());
        let mut off = ConvergePolicy::new(base, None);
        let mut plain = base;
        for s in [
            stats(1, 1000, 990, 900, 1),
            stats(3, 1000, 990, 900, 3),
            stats(5, 1000, 10, 900, 0),
            stats(2, 1000, 10, 100, 0),
        ] {
            assert_eq!(off.decide(&s), plain.decide(&s));
        }
        assert_eq!(off.throttle(), 0);
    }

    #[test]
    fn a_busy_guest_is_throttled_step_by_step_until_it_converges() {
        let base = DefaultPolicy::new(PolicyConfig::default());
        let mut p = ConvergePolicy::new(base, Some(ConvergeConfig::default()));
        // Rounds that do not shrink (but are not busy): tighten each
        // time, never give up while a step is left, even past the
        // default's 5 rounds and busy streak of 3.
        let mut want = [20, 60, 80, 90, 95, 98, 99].into_iter();
        for round in 1..=7 {
            let d = p.decide(&stats(round, 1000, 800, 5000, round));
            assert_eq!(d, Decision::ContinuePrecopy, "round {round}");
            assert_eq!(Some(p.throttle()), want.next());
        }
        assert_eq!(p.steps(), 7);
        // At the ceiling: the default policy's limits count from round 7.
        assert_eq!(
            p.decide(&stats(8, 1000, 990, 5000, 8)),
            Decision::ContinuePrecopy
        );
        assert_eq!(
            p.decide(&stats(10, 1000, 990, 5000, 10)),
            Decision::StopAndCopy,
            "busy for 3 rounds at the ceiling"
        );
        // Busy rounds (the link does not keep up at all) take bigger steps,
        // from the first.
        let mut b = ConvergePolicy::new(base, Some(ConvergeConfig::default()));
        for (round, want) in [(1, 80), (2, 95), (3, 99)] {
            assert_eq!(
                b.decide(&stats(round, 1000, 990, 5000, round)),
                Decision::ContinuePrecopy
            );
            assert_eq!(b.throttle(), want, "round {round}");
        }
        assert_eq!(p.throttle(), 99);
        // Converged: stop, whatever the throttle.
        let mut q = ConvergePolicy::new(base, Some(ConvergeConfig::default()));
        assert_eq!(
            q.decide(&stats(1, 1000, 800, 5000, 1)),
            Decision::ContinuePrecopy
        );
        assert_eq!(q.decide(&stats(2, 900, 10, 200, 0)), Decision::StopAndCopy);
        assert_eq!(q.throttle(), 20);
    }

    #[test]
    fn a_shrinking_dirty_set_is_left_alone() {
        let base = DefaultPolicy::new(PolicyConfig::default());
        let mut p = ConvergePolicy::new(base, Some(ConvergeConfig::default()));
        // The dirty set halves each round: no throttle.
        let mut dirty = 1000;
        for round in 1..=4 {
            let sent = dirty;
            dirty /= 3;
            assert_eq!(
                p.decide(&stats(round, sent, dirty, 5000, 0)),
                Decision::ContinuePrecopy
            );
        }
        assert_eq!(p.throttle(), 0);
        // The default's round cap still holds when nothing was throttled.
        assert_eq!(p.decide(&stats(5, 30, 10, 5000, 0)), Decision::StopAndCopy);
    }
}
