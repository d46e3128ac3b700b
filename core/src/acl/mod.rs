//! hosts-allow: xend's `xend-relocation-hosts-allow`, as one multi-pattern
//! DFA.
//!
//! xend admitted a peer on its relocation port when any pattern of the
//! space-separated setting `re.match`ed (Python: anchored at the start, not
//! at the end) the peer's FQDN or its IP address text; an empty setting
//! admitted everyone. relocd keeps those semantics:
//!
//! - [`HostsAllow::compile`] (feature `alloc`) parses every pattern with
//!   Python's `re` syntax (CPython 3.11) straight into a `regex-syntax` HIR
//!   (see `pyre`), refuses what a DFA cannot run (back-references,
//!   look-around, conditionals, atomic groups, possessive repeats) and what
//!   Python itself refuses, and builds ONE anchored dense DFA for all
//!   patterns (regex-automata, [`MatchKind::All`](regex_automata::MatchKind)).
//! - [`HostsAllowRef`] decides with no allocator, on a DFA either borrowed
//!   from a [`HostsAllow`] or loaded from bytes ([`HostsAllowRef::from_bytes`],
//!   fully checked), so a driver domain can carry a DFA compiled ahead of
//!   time.
//!
//! # Which pattern admitted
//!
//! The DFA reports every pattern matching at every position (overlapping
//! semantics, `MatchKind::All`); [`HostsAllowRef::admit`] walks the input
//! once and keeps the lowest pattern index whose match ends anywhere in it.
//! So the reported pattern is the first one in setting order that admits
//! the peer. The name is tried before the address, as in
//! `any(p.match(name) or p.match(ip) for p in patterns)`.
//!
//! # Input restriction
//!
//! Only inputs in the host-name / address alphabet are matched: ASCII
//! letters, digits and `.-_` for names ([`is_plausible_hostname`]), plus
//! `:` and `%` for addresses ([`is_plausible_address`]). A name outside it
//! (a resolver can return anything) is not used. Under this restriction the
//! DFA decides exactly as Python does; in particular Python's `$`, which
//! also matches before a final `\n`, equals the end of text, and Unicode
//! classes need only their ASCII part.
//!
//! # xend's traps
//!
//! xend split the setting on single spaces, so a doubled, leading or
//! trailing space made an empty pattern that admitted every host. relocd
//! splits on runs of white space and warns ([`Warning`]); it also warns
//! about each pattern that is not anchored at the end, naming a host it
//! admits that was probably not meant (`host\.example\.org` admits
//! `host.example.org.evil.example`).
//!
//! # Serialized form
//!
//! [`HostsAllow::to_bytes`] writes (all integers little-endian):
//!
//! ```text
//! 0..8    magic  b"RLDACL\0\x01"
//! 8..12   flags  bit 0: admit all (empty setting, no DFA)
//! 12..16  number of patterns
//! 16..20  DFA length in bytes (regex-automata little-endian format)
//! 20..24  length of the pattern texts
//! 24..32  zero
//! 32..    DFA, then the pattern texts joined by '\n'
//! ```
//!
//! The buffer must start at a 4-byte-aligned address; use [`AlignAs`] for a
//! `static`, or `AlignedBytes` (feature `alloc`) to copy into aligned
//! storage.

use core::fmt;

use regex_automata::dfa::{dense::DFA, Automaton};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::Anchored;

/// Aligns bytes for [`HostsAllowRef::from_bytes`], e.g.
/// `static ACL: &AlignAs<[u8], u32> = &AlignAs { _align: [], bytes: *include_bytes!("acl.bin") };`.
pub use regex_automata::util::wire::AlignAs;

#[cfg(feature = "alloc")]
mod compile;
#[cfg(feature = "alloc")]
pub(crate) mod pyre;
#[cfg(feature = "alloc")]
pub use compile::{AlignedBytes, HostsAllow, Warning, Warnings};
#[cfg(feature = "alloc")]
pub use pyre::{MAX_DEPTH, MAX_REPEAT_COUNT};

/// The most patterns a setting may hold.
pub const MAX_PATTERNS: usize = 256;
/// The largest DFA relocd builds, in bytes.
pub const MAX_DFA_BYTES: usize = 8 << 20;

const MAGIC: [u8; 8] = *b"RLDACL\0\x01";
const HEADER_LEN: usize = 32;
const FLAG_ADMIT_ALL: u32 = 1;

/// Bit set in [`ALPHABET`] for bytes of plausible host names.
const NAME: u8 = 1;
/// Bit set in [`ALPHABET`] for bytes of plausible address text.
const ADDR: u8 = 2;
const MAX_NAME_LEN: usize = 253;
const MAX_ADDR_LEN: usize = 64;

/// Per byte: [`NAME`] for `[A-Za-z0-9._-]`, [`ADDR`] for those and `:%`.
static ALPHABET: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_' {
            t[b] = NAME | ADDR;
        } else if c == b':' || c == b'%' {
            t[b] = ADDR;
        }
        b += 1;
    }
    t
};

fn plausible(s: &str, class: u8, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| ALPHABET[usize::from(b)] & class != 0)
}

/// Whether `name` is in the host-name alphabet (`[A-Za-z0-9._-]`, non-empty,
/// at most 253 bytes). Names outside it are not matched (module docs).
pub fn is_plausible_hostname(name: &str) -> bool {
    plausible(name, NAME, MAX_NAME_LEN)
}

/// Whether `ip` is plausible IP address text: non-empty, at most 64 bytes,
/// ASCII letters, digits and `.:%_-` (IPv4, IPv6 with a scope id).
pub fn is_plausible_address(ip: &str) -> bool {
    plausible(ip, ADDR, MAX_ADDR_LEN)
}

/// What a pattern matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedOn {
    /// The peer's FQDN.
    Name,
    /// The peer's IP address text.
    Ip,
}

/// How the peer's name took part in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameUse {
    /// No name was given.
    NotGiven,
    /// A name was given but is not a plausible host name, so it was not used.
    Unusable,
    /// The name was tried and no pattern matched it.
    NoMatch,
}

/// The verdict on one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The setting is empty: every host is admitted (as in xend).
    AdmitAll,
    /// Pattern `pattern` (0-based, in setting order; messages count from 1) is the first that
    /// matches, on the name or on the address.
    Admitted {
        /// Index of the first admitting pattern.
        pattern: usize,
        /// What it matched (the name is tried first).
        on: MatchedOn,
    },
    /// No pattern matches.
    Refused {
        /// Whether the address was plausible and tried.
        ip_tried: bool,
        /// What became of the name.
        name: NameUse,
    },
}

impl Decision {
    /// Whether the peer may connect.
    pub fn is_admitted(&self) -> bool {
        !matches!(self, Decision::Refused { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Decision::AdmitAll => {
                f.write_str("admitted: hosts-allow is empty, every host is admitted")
            }
            Decision::Admitted { pattern, on } => {
                let what = match on {
                    MatchedOn::Name => "name",
                    MatchedOn::Ip => "address",
                };
                write!(
                    f,
                    "admitted: pattern {} matches the peer's {what}",
                    pattern + 1
                )
            }
            Decision::Refused { ip_tried, name } => {
                f.write_str("refused: no pattern matches")?;
                match (ip_tried, name) {
                    (true, NameUse::NoMatch) => f.write_str(" the peer's address or name"),
                    (true, NameUse::NotGiven) => f.write_str(" the peer's address (no name known)"),
                    (true, NameUse::Unusable) => {
                        f.write_str(" the peer's address; its name is not a plausible host name and was not used")
                    }
                    (false, NameUse::NoMatch) => {
                        f.write_str(" the peer's name; its address text is not plausible and was not used")
                    }
                    (false, _) => f.write_str(": neither a plausible address nor a plausible name was given"),
                }
            }
        }
    }
}

/// A [`Decision`] shown with the text of the admitting pattern
/// ([`HostsAllowRef::explain`]).
#[derive(Debug, Clone, Copy)]
pub struct Explained<'a> {
    decision: Decision,
    text: Option<&'a str>,
}

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.decision)?;
        if let Some(text) = self.text {
            write!(f, " (`{text}`)")?;
        }
        Ok(())
    }
}

/// Why a pattern was refused: Python's own reasons (the pattern is not a
/// valid Python regex), constructs Python accepts but a DFA cannot run, and
/// relocd's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternErrorKind {
    // --- Python rejects these too.
    /// `\` then an ASCII letter Python does not know, or a bad code point.
    BadEscape,
    /// A `\` at the end of the pattern.
    BadEscapeEnd,
    /// `\x`, `\u`, `\U` without enough hex digits.
    IncompleteEscape,
    /// Octal escape above `\377`.
    OctalOutOfRange,
    /// `\N` for a group that does not exist.
    InvalidGroupReference,
    /// A reference to a group that is still open.
    OpenGroupReference,
    /// `[` without `]`.
    UnterminatedSet,
    /// A range with a class end or reversed ends.
    BadCharacterRange,
    /// A repeat with nothing (or an anchor) before it.
    NothingToRepeat,
    /// A repeat of a repeat (`a**`).
    MultipleRepeat,
    /// `{m,n}` with `m > n`.
    MinRepeatGreaterThanMax,
    /// A repeat count of 2³²-1 or more.
    RepeatNumberTooLarge,
    /// `)` without `(`.
    UnbalancedParenthesis,
    /// `(` without `)`.
    MissingParenthesis,
    /// `(?#` without `)`.
    UnterminatedComment,
    /// `(?` followed by something unknown.
    UnknownExtension,
    /// `(?P<>` or `(?P=)`.
    MissingGroupName,
    /// A group name without its terminator.
    UnterminatedName,
    /// A group name that is not an identifier.
    BadGroupName,
    /// Two groups with one name.
    GroupNameRedefined,
    /// `(?P=name)` for an unknown name.
    UnknownGroupName,
    /// `(?i)` anywhere but the start of the pattern.
    GlobalFlagsNotAtStart,
    /// `(?L)`: not allowed with str patterns.
    LocaleFlag,
    /// `a` and `u` together.
    IncompatibleFlags,
    /// An unknown inline flag letter.
    UnknownFlag,
    /// `(?-` without a flag.
    MissingFlag,
    /// Inline flags not ended by `-`, `:` or `)`.
    MissingDashColonParen,
    /// `(?-i` not ended by `:`.
    MissingColon,
    /// Turning off `a`, `u` or `L`.
    TurnOffTypeFlag,
    /// A flag both turned on and off.
    FlagOnAndOff,
    /// The pattern ends inside `(?`.
    UnexpectedEnd,
    // --- Python accepts these; a DFA cannot run them.
    /// `\1`, `(?P=name)`.
    Backreference,
    /// `(?=…)`, `(?!…)`.
    LookAhead,
    /// `(?<=…)`, `(?<!…)`.
    LookBehind,
    /// `(?(1)yes|no)`.
    Conditional,
    /// `(?>…)`.
    AtomicGroup,
    /// `*+`, `++`, `?+`, `{m,n}+`.
    PossessiveRepeat,
    // --- relocd's limits.
    /// `\N{name}`: needs the Unicode name table.
    NamedUnicodeEscape,
    /// `(?t)`: deprecated template mode.
    TemplateFlag,
    /// Groups nested deeper than [`MAX_DEPTH`].
    NestingTooDeep,
    /// A repeat count above [`MAX_REPEAT_COUNT`].
    RepeatCountTooLarge,
}

impl PatternErrorKind {
    /// Whether Python's `re.compile` rejects the pattern too (otherwise it
    /// is valid Python that relocd refuses).
    pub fn is_python_error(&self) -> bool {
        use PatternErrorKind::*;
        !matches!(
            self,
            Backreference
                | LookAhead
                | LookBehind
                | Conditional
                | AtomicGroup
                | PossessiveRepeat
                | NamedUnicodeEscape
                | TemplateFlag
                | NestingTooDeep
                | RepeatCountTooLarge
        )
    }

    /// A short description, in Python's words where Python has them.
    pub fn message(&self) -> &'static str {
        use PatternErrorKind::*;
        match self {
            BadEscape => "bad escape",
            BadEscapeEnd => "bad escape (end of pattern)",
            IncompleteEscape => "incomplete escape",
            OctalOutOfRange => "octal escape value outside of range 0-0o377",
            InvalidGroupReference => "invalid group reference",
            OpenGroupReference => "cannot refer to an open group",
            UnterminatedSet => "unterminated character set",
            BadCharacterRange => "bad character range",
            NothingToRepeat => "nothing to repeat",
            MultipleRepeat => "multiple repeat",
            MinRepeatGreaterThanMax => "min repeat greater than max repeat",
            RepeatNumberTooLarge => "the repetition number is too large",
            UnbalancedParenthesis => "unbalanced parenthesis",
            MissingParenthesis => "missing ), unterminated subpattern",
            UnterminatedComment => "missing ), unterminated comment",
            UnknownExtension => "unknown extension",
            MissingGroupName => "missing group name",
            UnterminatedName => "unterminated group name",
            BadGroupName => "bad character in group name",
            GroupNameRedefined => "redefinition of group name",
            UnknownGroupName => "unknown group name",
            GlobalFlagsNotAtStart => "global flags not at the start of the expression",
            LocaleFlag => "bad inline flag: cannot use 'L' flag with a str pattern",
            IncompatibleFlags => "bad inline flag: flags 'a', 'u' and 'L' are incompatible",
            UnknownFlag => "unknown flag",
            MissingFlag => "missing flag",
            MissingDashColonParen => "missing -, : or )",
            MissingColon => "missing :",
            TurnOffTypeFlag => "bad inline flag: cannot turn off flags 'a', 'u' and 'L'",
            FlagOnAndOff => "bad inline flag: flag turned on and off",
            UnexpectedEnd => "unexpected end of pattern",
            Backreference => {
                "back-references cannot run in a DFA (valid Python, refused by relocd)"
            }
            LookAhead => {
                "look-ahead (?=…)/(?!…) cannot run in a DFA (valid Python, refused by relocd)"
            }
            LookBehind => {
                "look-behind (?<=…)/(?<!…) cannot run in a DFA (valid Python, refused by relocd)"
            }
            Conditional => {
                "conditional groups (?(…)…) cannot run in a DFA (valid Python, refused by relocd)"
            }
            AtomicGroup => {
                "atomic groups (?>…) cannot run in a DFA (valid Python, refused by relocd)"
            }
            PossessiveRepeat => {
                "possessive repeats cannot run in a DFA (valid Python, refused by relocd)"
            }
            NamedUnicodeEscape => "\\N{…} named escapes are not supported by relocd",
            TemplateFlag => "the deprecated template flag (?t) is not supported by relocd",
            NestingTooDeep => "groups nested too deeply for relocd",
            RepeatCountTooLarge => "repeat count above relocd's limit of 1000",
        }
    }
}

impl fmt::Display for PatternErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for PatternErrorKind {}

/// Compiling a hosts-allow setting failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclError {
    /// Pattern `index` (0-based), found at bytes `start..start+len` of the
    /// setting, is refused at byte `offset` of the pattern.
    Pattern {
        /// Index of the pattern in the setting.
        index: usize,
        /// Byte offset of the pattern in the setting.
        start: usize,
        /// Length of the pattern in bytes.
        len: usize,
        /// Byte offset of the problem inside the pattern.
        offset: usize,
        /// The reason.
        kind: PatternErrorKind,
    },
    /// More than [`MAX_PATTERNS`] patterns.
    TooManyPatterns {
        /// How many the setting holds.
        count: usize,
    },
    /// The patterns need a DFA larger than [`MAX_DFA_BYTES`] (or the NFA
    /// behind it is too large).
    DfaTooLarge,
}

impl AclError {
    /// The error with the offending pattern's text, taken from the setting
    /// it was compiled from.
    pub fn with_setting<'a>(&'a self, setting: &'a str) -> impl fmt::Display + 'a {
        WithSetting { err: self, setting }
    }
}

struct WithSetting<'a> {
    err: &'a AclError,
    setting: &'a str,
}

impl fmt::Display for WithSetting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.err {
            AclError::Pattern {
                index,
                start,
                len,
                offset,
                kind,
            } => {
                let text = self
                    .setting
                    .get(start..start.saturating_add(len))
                    .unwrap_or("?");
                write!(
                    f,
                    "hosts-allow pattern {} `{text}`, at byte {offset}: {kind}",
                    index + 1
                )
            }
            ref e => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AclError::Pattern { index, start, offset, kind, .. } => write!(
                f,
                "hosts-allow pattern {} (at byte {start} of the setting), at byte {offset} of the pattern: {kind}",
                index + 1
            ),
            AclError::TooManyPatterns { count } => {
                write!(f, "hosts-allow has {count} patterns; relocd accepts at most {MAX_PATTERNS}")
            }
            AclError::DfaTooLarge => {
                write!(f, "hosts-allow patterns need a DFA larger than relocd's limit of {MAX_DFA_BYTES} bytes")
            }
        }
    }
}

impl core::error::Error for AclError {}

/// Loading a serialized hosts-allow DFA failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadError {
    /// Shorter than the header or than the lengths it announces.
    Truncated,
    /// Not a relocd hosts-allow DFA, or another format version.
    BadMagic,
    /// The buffer does not start at a 4-byte-aligned address.
    Misaligned,
    /// The DFA failed regex-automata's checks, is not anchored, or does
    /// not hold the announced number of patterns.
    BadDfa,
    /// The pattern texts are not UTF-8 or not one per pattern.
    BadTexts,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadError::Truncated => "hosts-allow DFA: truncated",
            LoadError::BadMagic => "hosts-allow DFA: bad magic or unsupported version",
            LoadError::Misaligned => "hosts-allow DFA: buffer not 4-byte aligned",
            LoadError::BadDfa => "hosts-allow DFA: the automaton failed validation",
            LoadError::BadTexts => "hosts-allow DFA: bad pattern texts",
        })
    }
}

impl core::error::Error for LoadError {}

/// A compiled hosts-allow setting, borrowed: decides with no allocator.
#[derive(Debug, Clone)]
pub struct HostsAllowRef<'a> {
    dfa: Option<DFA<&'a [u32]>>,
    /// The anchored start state (unused without a DFA).
    start: StateID,
    count: usize,
    texts: &'a str,
}

fn le32(bytes: &[u8], at: usize) -> Result<u32, LoadError> {
    let b = bytes.get(at..at + 4).ok_or(LoadError::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> HostsAllowRef<'a> {
    /// Loads a setting serialized by `HostsAllow::to_bytes`, with
    /// regex-automata's full (checked) validation of the DFA. `bytes` must
    /// start at a 4-byte-aligned address ([`AlignAs`], `AlignedBytes`).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, LoadError> {
        if bytes.len() < HEADER_LEN {
            return Err(LoadError::Truncated);
        }
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(LoadError::BadMagic);
        }
        if bytes.as_ptr().align_offset(4) != 0 {
            return Err(LoadError::Misaligned);
        }
        let flags = le32(bytes, 8)?;
        let count = le32(bytes, 12)? as usize;
        let dfa_len = le32(bytes, 16)? as usize;
        let texts_len = le32(bytes, 20)? as usize;
        let end = HEADER_LEN
            .checked_add(dfa_len)
            .and_then(|e| e.checked_add(texts_len))
            .ok_or(LoadError::Truncated)?;
        if bytes.len() != end {
            return Err(LoadError::Truncated);
        }
        let texts = core::str::from_utf8(&bytes[HEADER_LEN + dfa_len..end])
            .map_err(|_| LoadError::BadTexts)?;
        if flags & !FLAG_ADMIT_ALL != 0 || count > MAX_PATTERNS {
            return Err(LoadError::BadMagic);
        }
        if flags & FLAG_ADMIT_ALL != 0 {
            if count != 0 || dfa_len != 0 || !texts.is_empty() {
                return Err(LoadError::BadDfa);
            }
            return Ok(HostsAllowRef {
                dfa: None,
                start: StateID::ZERO,
                count: 0,
                texts: "",
            });
        }
        if count == 0 || texts.split('\n').count() != count {
            return Err(LoadError::BadTexts);
        }
        let (dfa, read) = DFA::from_bytes(&bytes[HEADER_LEN..HEADER_LEN + dfa_len])
            .map_err(|_| LoadError::BadDfa)?;
        if read != dfa_len || dfa.pattern_len() != count {
            return Err(LoadError::BadDfa);
        }
        let start = Self::start_of(&dfa).ok_or(LoadError::BadDfa)?;
        Ok(HostsAllowRef {
            dfa: Some(dfa),
            start,
            count,
            texts,
        })
    }

    #[cfg(feature = "alloc")]
    pub(crate) fn from_parts(dfa: Option<DFA<&'a [u32]>>, count: usize, texts: &'a str) -> Self {
        // A DFA built by `HostsAllow::compile` always has an anchored start;
        // without one it would decide nothing, so it is dropped (refuse all).
        let start = dfa.as_ref().and_then(Self::start_of);
        let dfa = if start.is_some() { dfa } else { None };
        HostsAllowRef {
            dfa,
            start: start.unwrap_or(StateID::ZERO),
            count,
            texts,
        }
    }

    fn start_of(dfa: &DFA<&'a [u32]>) -> Option<StateID> {
        dfa.start_state(&start::Config::new().anchored(Anchored::Yes))
            .ok()
    }

    /// How many patterns the setting holds (0: empty setting, admit all).
    pub fn pattern_count(&self) -> usize {
        self.count
    }

    /// The text of pattern `index`.
    pub fn pattern(&self, index: usize) -> Option<&'a str> {
        if index >= self.count {
            return None;
        }
        self.texts.split('\n').nth(index)
    }

    /// The lowest pattern whose match ends in `input` (below `limit`):
    /// walks the DFA once, stopping when it dies. With `class` set, also
    /// checks that `input` is plausible ([`ALPHABET`]); an implausible input
    /// matches nothing (when the DFA dies early with no match, the rest is
    /// not checked: the answer is `None` either way).
    #[inline]
    fn lowest(
        dfa: &DFA<&[u32]>,
        start: StateID,
        input: &[u8],
        limit: usize,
        class: u8,
    ) -> Option<usize> {
        let mut best = limit;
        let mut sid = start;
        let note = |sid: StateID, best: &mut usize| {
            for i in 0..dfa.match_len(sid) {
                *best = (*best).min(dfa.match_pattern(sid, i).as_usize());
            }
        };
        let ok = |b: &u8| ALPHABET[usize::from(*b)] & class == class;
        for (i, b) in input.iter().enumerate() {
            if !ok(b) {
                return None;
            }
            sid = dfa.next_state(sid, *b);
            if dfa.is_special_state(sid) {
                if dfa.is_match_state(sid) {
                    note(sid, &mut best);
                } else if dfa.is_dead_state(sid) || dfa.is_quit_state(sid) {
                    let rest = input.get(i + 1..).unwrap_or(&[]);
                    return (best < limit && rest.iter().all(ok)).then_some(best);
                }
            }
        }
        sid = dfa.next_eoi_state(sid);
        if dfa.is_match_state(sid) {
            note(sid, &mut best);
        }
        (best < limit).then_some(best)
    }

    /// The lowest index of a pattern that Python's `re.match` would match
    /// on `input`, i.e. that matches some prefix of it. `None` for an empty
    /// setting. `input` is taken as is; [`admit`](Self::admit) first checks
    /// that it is plausible.
    pub fn first_match(&self, input: &str) -> Option<usize> {
        let dfa = self.dfa.as_ref()?;
        Self::lowest(dfa, self.start, input.as_bytes(), usize::MAX, 0)
    }

    /// Whether pattern `pattern` alone `re.match`es `input`.
    pub fn matches(&self, input: &str, pattern: usize) -> bool {
        let Some(dfa) = self.dfa.as_ref() else {
            return false;
        };
        let mut sid = self.start;
        let has = |sid: StateID| {
            (0..dfa.match_len(sid)).any(|i| dfa.match_pattern(sid, i).as_usize() == pattern)
        };
        for &b in input.as_bytes() {
            sid = dfa.next_state(sid, b);
            if dfa.is_match_state(sid) && has(sid) {
                return true;
            }
            if dfa.is_dead_state(sid) || dfa.is_quit_state(sid) {
                return false;
            }
        }
        sid = dfa.next_eoi_state(sid);
        dfa.is_match_state(sid) && has(sid)
    }

    /// Decides on a peer with address text `ip` and, when known, FQDN
    /// `fqdn`. Implausible inputs are not matched (module docs).
    pub fn admit(&self, ip: &str, fqdn: Option<&str>) -> Decision {
        let Some(dfa) = self.dfa.as_ref() else {
            return Decision::AdmitAll;
        };
        let by_name = match fqdn {
            Some(n) if n.len() <= MAX_NAME_LEN => {
                Self::lowest(dfa, self.start, n.as_bytes(), usize::MAX, NAME)
            }
            _ => None,
        };
        if by_name == Some(0) {
            return Decision::Admitted {
                pattern: 0,
                on: MatchedOn::Name,
            };
        }
        // Only a pattern before the name's can change the verdict.
        let limit = by_name.unwrap_or(usize::MAX);
        let by_ip = match ip.len() {
            1..=MAX_ADDR_LEN => Self::lowest(dfa, self.start, ip.as_bytes(), limit, ADDR),
            _ => None,
        };
        match (by_ip, by_name) {
            (Some(pattern), _) => Decision::Admitted {
                pattern,
                on: MatchedOn::Ip,
            },
            (None, Some(pattern)) => Decision::Admitted {
                pattern,
                on: MatchedOn::Name,
            },
            (None, None) => Decision::Refused {
                ip_tried: is_plausible_address(ip),
                name: match fqdn {
                    None => NameUse::NotGiven,
                    Some(n) if !is_plausible_hostname(n) => NameUse::Unusable,
                    Some(_) => NameUse::NoMatch,
                },
            },
        }
    }

    /// `decision` shown with the admitting pattern's text.
    pub fn explain(&self, decision: Decision) -> Explained<'a> {
        let text = match decision {
            Decision::Admitted { pattern, .. } => self.pattern(pattern),
            _ => None,
        };
        Explained { decision, text }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests;
