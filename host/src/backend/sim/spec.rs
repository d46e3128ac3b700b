//! Guest specifications: sizes (`1G`), rates (`64M/s`), write patterns, and
//! the guests file that `relocd serve` reads.
//!
//! # Sizes and rates
//!
//! A size is a decimal integer with an optional binary suffix: `K` (2¹⁰),
//! `M` (2²⁰), `G` (2³⁰) or `T` (2⁴⁰), in either case, optionally followed by
//! `iB` or `B` (`1G`, `1GiB`, `512m`, `4096`). A rate is a size with an
//! optional `/s` (`64M/s`, `64M`). Spaces are not allowed inside either.
//!
//! # The guests file
//!
//! One guest a line; `#` starts a comment that runs to the end of the line;
//! blank lines are ignored. A line is a name followed by `key=value` words,
//! separated by spaces or tabs:
//!
//! ```text
//! # name   settings
//! web1     memory=1G dirty-rate=64M/s pattern=hot
//! db1      memory=256M                      # idle: dirty-rate defaults to 0
//! batch1   memory=2G dirty-rate=8M pattern=uniform seed=42
//! ```
//!
//! | key | value | default |
//! | --- | --- | --- |
//! | `memory` | size, a whole number of 4 KiB pages | required |
//! | `dirty-rate` | rate | `0` (idle) |
//! | `pattern` | `uniform` or `hot` | `uniform` |
//! | `seed` | decimal `u64` | derived from the name |
//! | `fill` | percentage of pages holding data from the start (0–100) | `0` |
//!
//! Unknown keys, repeated keys and repeated names are errors that give the
//! line number.

use std::fmt;
use std::str::FromStr;

use super::workload::{ExpectedMemory, Pattern, Workload, DEFAULT_STEP_PERIOD_NS, MAX_DIRTY_RATE};
use super::PAGE_SIZE;

/// The largest guest memory a spec accepts: 1 TiB.
pub const MAX_MEMORY: u64 = 1 << 40;

/// The longest guest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a size, rate, pattern, name, spec or guests-file line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The text was empty.
    #[error("empty value: expected a size such as 1G or 512M")]
    Empty,
    /// The text does not start with a decimal number.
    #[error("`{0}`: expected a decimal number with an optional K, M, G or T suffix (such as 1G)")]
    BadNumber(String),
    /// The text after the number is not a known suffix.
    #[error(
        "`{0}`: unknown suffix (use K, M, G or T, optionally followed by iB; rates may end in /s)"
    )]
    BadSuffix(String),
    /// The value does not fit in 64 bits.
    #[error("`{0}`: too large")]
    Overflow(String),
    /// A memory size that is not a whole number of 4 KiB pages, or is zero.
    #[error("memory {0} bytes: must be a non-zero multiple of 4 KiB")]
    MemoryNotPages(u64),
    /// A memory size above [`MAX_MEMORY`].
    #[error("memory {0} bytes: more than the 1 TiB limit")]
    MemoryTooLarge(u64),
    /// A dirty rate above the workload's limit.
    #[error("dirty rate {0} bytes/s: more than the 64 GiB/s limit")]
    RateTooLarge(u64),
    /// Not `uniform` or `hot`.
    #[error("`{0}`: unknown pattern (use uniform or hot)")]
    BadPattern(String),
    /// A name that is empty, too long, or holds whitespace or control
    /// characters.
    #[error("`{0}`: a guest name must be 1 to 64 bytes with no spaces or control characters")]
    BadName(String),
    /// A fill that is not a whole percentage from 0 to 100.
    #[error("`{0}`: the fill is a percentage from 0 to 100")]
    BadFill(String),
    /// A seed that is not a decimal `u64`.
    #[error("`{0}`: a seed must be a decimal number below 2^64")]
    BadSeed(String),
    /// A guests-file line is wrong; the inner error says how.
    #[error("guests file, line {line}: {error}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: Box<SpecError>,
    },
    /// A word that is not `key=value`.
    #[error("`{0}`: expected key=value")]
    NotKeyValue(String),
    /// A key the guests file does not know.
    #[error("`{0}`: unknown key (known: memory, dirty-rate, pattern, seed, fill)")]
    UnknownKey(String),
    /// A key given twice on one line.
    #[error("`{0}` given twice")]
    RepeatedKey(String),
    /// A line without `memory=`.
    #[error("memory=SIZE is required")]
    MissingMemory,
    /// A name used by an earlier line.
    #[error("guest `{0}` is already defined")]
    DuplicateName(String),
}

/// Parses a size in bytes: `4096`, `64K`, `512M`, `1G`, `1GiB`, `2t`.
pub fn parse_size(text: &str) -> Result<u64, SpecError> {
    if text.is_empty() {
        return Err(SpecError::Empty);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SpecError::BadNumber(text.to_owned()));
    }
    let (number, suffix) = text.split_at(digits);
    let value: u64 = number
        .parse()
        .map_err(|_| SpecError::Overflow(text.to_owned()))?;
    let shift = match suffix {
        "" | "B" | "b" => 0,
        _ => {
            let mut chars = suffix.chars();
            let shift = match chars.next() {
                Some('K' | 'k') => 10,
                Some('M' | 'm') => 20,
                Some('G' | 'g') => 30,
                Some('T' | 't') => 40,
                _ => return Err(SpecError::BadSuffix(text.to_owned())),
            };
            match chars.as_str() {
                "" | "B" | "b" | "iB" | "ib" => shift,
                _ => return Err(SpecError::BadSuffix(text.to_owned())),
            }
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SpecError::Overflow(text.to_owned()))
}

/// Parses a rate in bytes per second: a size with an optional `/s`
/// (`64M/s`, `64M`, `0`).
pub fn parse_rate(text: &str) -> Result<u64, SpecError> {
    let size = text.strip_suffix("/s").unwrap_or(text);
    if size.is_empty() && !text.is_empty() {
        return Err(SpecError::BadNumber(text.to_owned()));
    }
    parse_size(size).map_err(|e| match e {
        // Name the whole text the user typed, `/s` included.
        SpecError::BadNumber(_) => SpecError::BadNumber(text.to_owned()),
        SpecError::BadSuffix(_) => SpecError::BadSuffix(text.to_owned()),
        SpecError::Overflow(_) => SpecError::Overflow(text.to_owned()),
        other => other,
    })
}

/// Parses a fill: a whole percentage from 0 to 100 (`25`, `25%`).
pub fn parse_fill(text: &str) -> Result<u8, SpecError> {
    let digits = text.strip_suffix('%').unwrap_or(text);
    match digits.parse::<u8>() {
        Ok(p) if p <= 100 && !digits.starts_with('+') => Ok(p),
        _ => Err(SpecError::BadFill(text.to_owned())),
    }
}

/// Parses a guest memory size: a size that is a non-zero whole number of
/// pages, at most [`MAX_MEMORY`].
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let bytes = parse_size(text)?;
    check_memory(bytes)?;
    Ok(bytes)
}

/// Checks a guest memory size in bytes (see [`parse_memory`]).
pub fn check_memory(bytes: u64) -> Result<(), SpecError> {
    if bytes == 0 || bytes % PAGE_SIZE as u64 != 0 {
        return Err(SpecError::MemoryNotPages(bytes));
    }
    if bytes > MAX_MEMORY {
        return Err(SpecError::MemoryTooLarge(bytes));
    }
    Ok(())
}

/// Checks a guest name: 1 to [`MAX_NAME_LEN`] bytes, no whitespace, no
/// control characters.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(SpecError::BadName(name.to_owned()));
    }
    Ok(())
}

impl FromStr for Pattern {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        match text {
            "uniform" => Ok(Pattern::Uniform),
            "hot" => Ok(Pattern::Hot),
            _ => Err(SpecError::BadPattern(text.to_owned())),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::Uniform => "uniform",
            Pattern::Hot => "hot",
        })
    }
}

/// Everything needed to create a simulated guest that runs a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// The domain name.
    pub name: String,
    /// Memory in bytes: a non-zero whole number of 4 KiB pages.
    pub memory: u64,
    /// Bytes the workload writes per second of simulated time.
    pub dirty_rate: u64,
    /// Which pages the workload writes.
    pub pattern: Pattern,
    /// The workload's seed: two guests with the same spec and seed hold the
    /// same bytes after the same number of steps.
    pub seed: u64,
    /// Simulated time per workload step, in nanoseconds
    /// ([`DEFAULT_STEP_PERIOD_NS`], 10 ms, unless changed).
    pub step_period_ns: u64,
    /// Percentage of its pages that hold data from the start (`--fill`);
    /// the others are zeros.
    pub fill_percent: u8,
}

impl GuestSpec {
    /// A spec with the given name and memory, idle (dirty rate 0), uniform
    /// pattern, the seed derived from the name ([`seed_from_name`]) and the
    /// default step period. Checks the name and the memory size.
    pub fn new(name: &str, memory: u64) -> Result<Self, SpecError> {
        check_name(name)?;
        check_memory(memory)?;
        Ok(GuestSpec {
            name: name.to_owned(),
            memory,
            dirty_rate: 0,
            pattern: Pattern::Uniform,
            seed: seed_from_name(name),
            step_period_ns: DEFAULT_STEP_PERIOD_NS,
            fill_percent: 0,
        })
    }

    /// Sets the fill: the percentage of pages that hold data from the
    /// start (at most 100).
    pub fn with_fill(mut self, percent: u8) -> Result<Self, SpecError> {
        if percent > 100 {
            return Err(SpecError::BadFill(percent.to_string()));
        }
        self.fill_percent = percent;
        Ok(self)
    }

    /// Sets the dirty rate (bytes per second), checked against the limit.
    pub fn with_dirty_rate(mut self, rate: u64) -> Result<Self, SpecError> {
        if rate > MAX_DIRTY_RATE {
            return Err(SpecError::RateTooLarge(rate));
        }
        self.dirty_rate = rate;
        Ok(self)
    }

    /// Sets the pattern.
    pub fn with_pattern(mut self, pattern: Pattern) -> Self {
        self.pattern = pattern;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Number of 4 KiB pages.
    pub fn nr_pages(&self) -> u64 {
        self.memory / PAGE_SIZE as u64
    }

    /// The workload this spec runs.
    pub fn workload(&self) -> Workload {
        Workload {
            seed: self.seed,
            dirty_rate: self.dirty_rate,
            pattern: self.pattern,
            step_period_ns: self.step_period_ns,
            fill_percent: self.fill_percent,
        }
    }

    /// What a guest of this spec holds after `steps` workload steps,
    /// wherever they ran.
    pub fn expected_memory(&self, steps: u64) -> ExpectedMemory {
        ExpectedMemory::after(self.workload(), self.nr_pages(), steps)
    }
}

/// The default seed for a guest: FNV-1a of its name, so a guest's workload
/// is the same every time it is created under that name.
pub fn seed_from_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Parses one guests-file line that is not blank or a comment (see the
/// module doc). Comments must already be stripped.
fn parse_line(line: &str) -> Result<Option<GuestSpec>, SpecError> {
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    check_name(name)?;
    let (mut memory, mut rate, mut pattern, mut seed, mut fill) = (None, None, None, None, None);
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| SpecError::NotKeyValue(word.to_owned()))?;
        let repeated = match key {
            "memory" => memory.replace(parse_memory(value)?).is_some(),
            "dirty-rate" => rate.replace(parse_rate(value)?).is_some(),
            "pattern" => pattern.replace(value.parse::<Pattern>()?).is_some(),
            "seed" => seed
                .replace(
                    value
                        .parse::<u64>()
                        .map_err(|_| SpecError::BadSeed(value.to_owned()))?,
                )
                .is_some(),
            "fill" => fill.replace(parse_fill(value)?).is_some(),
            _ => return Err(SpecError::UnknownKey(key.to_owned())),
        };
        if repeated {
            return Err(SpecError::RepeatedKey(key.to_owned()));
        }
    }
    let mut spec = GuestSpec::new(name, memory.ok_or(SpecError::MissingMemory)?)?
        .with_dirty_rate(rate.unwrap_or(0))?
        .with_pattern(pattern.unwrap_or(Pattern::Uniform));
    if let Some(seed) = seed {
        spec = spec.with_seed(seed);
    }
    if let Some(fill) = fill {
        spec = spec.with_fill(fill)?;
    }
    Ok(Some(spec))
}

/// Parses a guests file (format in the module doc), in file order.
pub fn parse_guests_file(text: &str) -> Result<Vec<GuestSpec>, SpecError> {
    let mut specs: Vec<GuestSpec> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split_once('#').map_or(raw, |(before, _)| before);
        let at = |error| SpecError::Line {
            line: index + 1,
            error: Box::new(error),
        };
        if let Some(spec) = parse_line(line).map_err(at)? {
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(at(SpecError::DuplicateName(spec.name)));
            }
            specs.push(spec);
        }
    }
    Ok(specs)
}
