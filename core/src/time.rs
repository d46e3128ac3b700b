//! The core's own notion of time: an [`Instant`] is a count of nanoseconds
//! since an epoch the caller chooses, and a [`Duration`] is a count of
//! nanoseconds.
//!
//! The core never reads a clock. Every function that needs the time takes
//! `now: Instant` from the caller, and timers are reported back as the
//! `Instant` at which the caller should call again (see
//! `protocol::Source::poll_timeout`). The host typically converts
//! `std::time::Instant::now() - start` into an `Instant`; tests use a
//! simulated counter, which makes every run deterministic.
//!
//! All arithmetic saturates instead of overflowing: time values come from the
//! caller and a wrap-around must never turn into a panic or into a deadline
//! in the past.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A point in time, in nanoseconds since an epoch chosen by the caller.
///
/// Only differences between `Instant`s taken from the same epoch mean
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant { nanos: 0 };

    /// An `Instant` `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant { nanos }
    }

    /// An `Instant` `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            nanos: millis.saturating_mul(NANOS_PER_MILLI),
        }
    }

    /// An `Instant` `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Instant {
            nanos: secs.saturating_mul(NANOS_PER_SEC),
        }
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration {
            nanos: self.nanos.saturating_sub(earlier.nanos),
        }
    }

    /// `self + d`, saturating at the end of time.
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant {
            nanos: self.nanos.saturating_add(d.nanos),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Duration::from_nanos(self.nanos))
    }
}

/// A span of time in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    nanos: u64,
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { nanos: 0 };
    /// The longest representable span (about 584 years).
    pub const MAX: Duration = Duration { nanos: u64::MAX };

    /// `nanos` nanoseconds.
    pub const fn from_nanos(nanos: u64) -> Self {
        Duration { nanos }
    }
    /// `micros` microseconds (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Duration {
            nanos: micros.saturating_mul(NANOS_PER_MICRO),
        }
    }
    /// `millis` milliseconds (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Duration {
            nanos: millis.saturating_mul(NANOS_PER_MILLI),
        }
    }
    /// `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            nanos: secs.saturating_mul(NANOS_PER_SEC),
        }
    }

    /// Whole nanoseconds.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }
    /// Whole microseconds (rounded down).
    pub const fn as_micros(self) -> u64 {
        self.nanos / NANOS_PER_MICRO
    }
    /// Whole milliseconds (rounded down).
    pub const fn as_millis(self) -> u64 {
        self.nanos / NANOS_PER_MILLI
    }
    /// Whole seconds (rounded down).
    pub const fn as_secs(self) -> u64 {
        self.nanos / NANOS_PER_SEC
    }

    /// `self + rhs`, saturating.
    pub const fn saturating_add(self, rhs: Duration) -> Duration {
        Duration {
            nanos: self.nanos.saturating_add(rhs.nanos),
        }
    }
    /// `self - rhs`, zero when `rhs` is longer.
    pub const fn saturating_sub(self, rhs: Duration) -> Duration {
        Duration {
            nanos: self.nanos.saturating_sub(rhs.nanos),
        }
    }

    /// How long it takes to move `bytes` at `bytes_per_sec`, rounded up to
    /// the next nanosecond. A rate of zero means "never": [`Duration::MAX`].
    pub const fn for_bytes_at_rate(bytes: u64, bytes_per_sec: u64) -> Duration {
        if bytes_per_sec == 0 {
            return if bytes == 0 {
                Duration::ZERO
            } else {
                Duration::MAX
            };
        }
        let num = (bytes as u128) * (NANOS_PER_SEC as u128);
        let rate = bytes_per_sec as u128;
        let nanos = num.div_ceil(rate);
        Duration {
            nanos: if nanos > u64::MAX as u128 {
                u64::MAX
            } else {
                nanos as u64
            },
        }
    }

    /// The rate, in bytes per second, at which `bytes` moved in `self`.
    /// A zero-length span gives `u64::MAX` (too fast to measure).
    pub const fn rate_of(self, bytes: u64) -> u64 {
        if self.nanos == 0 {
            return u64::MAX;
        }
        let r = (bytes as u128) * (NANOS_PER_SEC as u128) / (self.nanos as u128);
        if r > u64::MAX as u128 {
            u64::MAX
        } else {
            r as u64
        }
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Duration {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub for Duration {
    type Output = Duration;
    fn sub(self, rhs: Duration) -> Duration {
        self.saturating_sub(rhs)
    }
}

impl From<core::time::Duration> for Duration {
    /// Saturates at [`Duration::MAX`].
    fn from(d: core::time::Duration) -> Self {
        let n = d.as_nanos();
        Duration {
            nanos: if n > u64::MAX as u128 {
                u64::MAX
            } else {
                n as u64
            },
        }
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_nanos(d.nanos)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nanos;
        if n >= NANOS_PER_SEC {
            write!(
                f,
                "{}.{:03}s",
                n / NANOS_PER_SEC,
                (n % NANOS_PER_SEC) / NANOS_PER_MILLI
            )
        } else if n >= NANOS_PER_MILLI {
            write!(
                f,
                "{}.{:03}ms",
                n / NANOS_PER_MILLI,
                (n % NANOS_PER_MILLI) / NANOS_PER_MICRO
            )
        } else {
            write!(f, "{n}ns")
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(u64::MAX - 1);
        assert_eq!((t + Duration::from_secs(1)).as_nanos(), u64::MAX);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_nanos(u64::MAX - 1));
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(
            Duration::from_millis(5) - Duration::from_millis(7),
            Duration::ZERO
        );
    }

    #[test]
    fn rates() {
        // 1 MiB at 1 MiB/s is one second.
        assert_eq!(
            Duration::for_bytes_at_rate(1 << 20, 1 << 20),
            Duration::from_secs(1)
        );
        // Rounded up: 1 byte at 3 B/s is 333_333_334 ns.
        assert_eq!(Duration::for_bytes_at_rate(1, 3).as_nanos(), 333_333_334);
        assert_eq!(Duration::for_bytes_at_rate(1, 0), Duration::MAX);
        assert_eq!(Duration::for_bytes_at_rate(0, 0), Duration::ZERO);
        assert_eq!(Duration::from_millis(500).rate_of(1000), 2000);
        assert_eq!(Duration::ZERO.rate_of(1), u64::MAX);
    }

    #[test]
    fn display() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{}", Duration::from_millis(1500)), "1.500s");
        assert_eq!(format!("{}", Duration::from_micros(2500)), "2.500ms");
        assert_eq!(format!("{}", Duration::from_nanos(12)), "12ns");
    }
}
