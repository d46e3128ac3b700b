//! Compiling a hosts-allow setting into one multi-pattern dense DFA, and the
//! load-time warnings about xend's traps.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::Hir;

use super::{
    pyre, AclError, Decision, HostsAllowRef, FLAG_ADMIT_ALL, HEADER_LEN, MAGIC, MAX_DFA_BYTES,
    MAX_PATTERNS,
};

/// The warnings from compiling a setting, in setting order.
pub type Warnings = Vec<Warning>;

/// Something in a hosts-allow setting that relocd accepts but that xend
/// read differently, or that probably does not mean what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A leading, trailing or repeated space at byte `offset`: xend split on
    /// single spaces and read an empty pattern there, admitting every host.
    XendEmptyPattern {
        /// Byte offset of the space in the setting.
        offset: usize,
    },
    /// White space other than a space (tab, newline) at byte `offset`: xend
    /// split only on spaces and read it as part of a pattern.
    XendJoinedPatterns {
        /// Byte offset in the setting.
        offset: usize,
    },
    /// The pattern is not anchored at the end: it admits `example`, a name
    /// that merely starts with what the pattern spells.
    NotAnchoredAtEnd {
        /// Index of the pattern.
        pattern: usize,
        /// Its text.
        text: String,
        /// A host name it admits (checked against the DFA).
        example: String,
    },
    /// The pattern matches an empty prefix, so it admits (almost) any host.
    AdmitsAnyHost {
        /// Index of the pattern.
        pattern: usize,
        /// Its text.
        text: String,
        /// A host name it admits (checked against the DFA).
        example: String,
    },
    /// The pattern can never match a plausible host name or address.
    MatchesNothing {
        /// Index of the pattern.
        pattern: usize,
        /// Its text.
        text: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::XendEmptyPattern { offset } => write!(
                f,
                "hosts-allow: leading, trailing or repeated space at byte {offset}; xend split the setting on \
                 single spaces and would have read an empty pattern here, which admits every host \
                 (relocd splits on runs of white space)"
            ),
            Warning::XendJoinedPatterns { offset } => write!(
                f,
                "hosts-allow: white space other than a space at byte {offset}; xend split only on spaces and \
                 would have read it as part of a pattern (relocd separates patterns there)"
            ),
            Warning::NotAnchoredAtEnd { pattern, text, example } => write!(
                f,
                "hosts-allow pattern {} `{text}` is not anchored at the end: re.match only needs a \
                 prefix to match, so it also admits `{example}`; end it with `$` if that is not meant",
                pattern + 1
            ),
            Warning::AdmitsAnyHost { pattern, text, example } => write!(
                f,
                "hosts-allow pattern {} `{text}` matches an empty prefix, so it admits almost any \
                 host, e.g. `{example}`",
                pattern + 1
            ),
            Warning::MatchesNothing { pattern, text } => write!(
                f,
                "hosts-allow pattern {} `{text}` can never match a host name or an address \
                 (ASCII letters, digits and `.-_:%`)",
                pattern + 1
            ),
        }
    }
}

/// A compiled hosts-allow setting, owned. Decide with [`admit`](Self::admit)
/// or [`as_ref`](Self::as_ref); serialize with [`to_bytes`](Self::to_bytes).
#[derive(Debug, Clone)]
pub struct HostsAllow {
    dfa: Option<dense::DFA<Vec<u32>>>,
    count: usize,
    /// The patterns joined by '\n' (patterns never contain white space).
    texts: String,
}

/// The patterns of a setting with their byte offsets: split on runs of any
/// white space. Also the xend warnings about that split.
fn split<'s>(setting: &'s str, warnings: &mut Warnings) -> Vec<(usize, &'s str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in setting.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push((s, &setting[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, &setting[s..]));
    }
    let bytes = setting.as_bytes();
    if !setting.is_empty() {
        let empty_at = if bytes.first() == Some(&b' ') {
            Some(0)
        } else if let Some(i) = setting.find("  ") {
            Some(i)
        } else if bytes.last() == Some(&b' ') {
            Some(setting.len() - 1)
        } else {
            None
        };
        if let Some(offset) = empty_at {
            warnings.push(Warning::XendEmptyPattern { offset });
        }
    }
    if let Some((offset, _)) = setting
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() && c != ' ')
    {
        warnings.push(Warning::XendJoinedPatterns { offset });
    }
    out
}

/// Bytes a plausible name or address is made of, in the order examples are
/// searched (so examples look like host names).
const ALPHABET: &[u8] = b".abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ_:%";
/// Suffixes tried, in order, to build a readable example.
const SUFFIXES: [&str; 3] = [".evil.example", "-evil.example", "evil.example"];
/// Bound on the states visited when looking for examples.
const MAX_LINT_STATES: usize = 100_000;

impl HostsAllow {
    /// Compiles a `xend-relocation-hosts-allow` setting. An empty (or
    /// all-white-space) setting admits every host, as in xend.
    pub fn compile(setting: &str) -> Result<(HostsAllow, Warnings), AclError> {
        let mut warnings = Vec::new();
        let pats = split(setting, &mut warnings);
        if pats.len() > MAX_PATTERNS {
            return Err(AclError::TooManyPatterns { count: pats.len() });
        }
        if pats.is_empty() {
            return Ok((
                HostsAllow {
                    dfa: None,
                    count: 0,
                    texts: String::new(),
                },
                warnings,
            ));
        }
        let mut hirs: Vec<Hir> = Vec::with_capacity(pats.len());
        for (index, &(start, text)) in pats.iter().enumerate() {
            let hir = pyre::parse(text).map_err(|e| AclError::Pattern {
                index,
                start,
                len: text.len(),
                offset: e.offset,
                kind: e.kind,
            })?;
            hirs.push(hir);
        }
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .which_captures(WhichCaptures::None)
                    .nfa_size_limit(Some(MAX_DFA_BYTES)),
            )
            .build_many_from_hir(&hirs)
            .map_err(|_| AclError::DfaTooLarge)?;
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .accelerate(false)
                    .minimize(true)
                    .dfa_size_limit(Some(MAX_DFA_BYTES))
                    .determinize_size_limit(Some(4 * MAX_DFA_BYTES)),
            )
            .build_from_nfa(&nfa)
            .map_err(|_| AclError::DfaTooLarge)?;
        if dfa.write_to_len() > MAX_DFA_BYTES {
            return Err(AclError::DfaTooLarge);
        }
        let mut texts = String::new();
        for (i, (_, t)) in pats.iter().enumerate() {
            if i > 0 {
                texts.push('\n');
            }
            texts.push_str(t);
        }
        let acl = HostsAllow {
            dfa: Some(dfa),
            count: pats.len(),
            texts,
        };
        acl.lint(&mut warnings);
        Ok((acl, warnings))
    }

    /// The borrowed form, which makes the decisions.
    pub fn as_ref(&self) -> HostsAllowRef<'_> {
        HostsAllowRef::from_parts(
            self.dfa.as_ref().map(|d| d.as_ref()),
            self.count,
            &self.texts,
        )
    }

    /// Decides on a peer; see [`HostsAllowRef::admit`].
    pub fn admit(&self, ip: &str, fqdn: Option<&str>) -> Decision {
        self.as_ref().admit(ip, fqdn)
    }

    /// The patterns, in setting order.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.texts.split('\n').take(self.count)
    }

    /// Serializes for [`HostsAllowRef::from_bytes`] (format in the module
    /// docs). Load it from 4-byte-aligned storage ([`AlignedBytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let dfa_len = self.dfa.as_ref().map_or(0, |d| d.write_to_len());
        let mut out = alloc::vec![0u8; HEADER_LEN + dfa_len + self.texts.len()];
        out[..8].copy_from_slice(&MAGIC);
        let flags = if self.dfa.is_none() {
            FLAG_ADMIT_ALL
        } else {
            0
        };
        // All three are bounded by MAX_DFA_BYTES / MAX_PATTERNS and a setting
        // held in memory; the casts cannot truncate in practice, and
        // from_bytes checks the lengths against the buffer.
        out[8..12].copy_from_slice(&flags.to_le_bytes());
        out[12..16].copy_from_slice(&(self.count as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(dfa_len as u32).to_le_bytes());
        out[20..24].copy_from_slice(&(self.texts.len() as u32).to_le_bytes());
        if let Some(dfa) = &self.dfa {
            // The destination has exactly write_to_len() bytes.
            let _ = dfa.write_to_little_endian(&mut out[HEADER_LEN..HEADER_LEN + dfa_len]);
        }
        out[HEADER_LEN + dfa_len..].copy_from_slice(self.texts.as_bytes());
        out
    }

    /// Size of the DFA in bytes (0 for an empty setting).
    pub fn dfa_len(&self) -> usize {
        self.dfa.as_ref().map_or(0, |d| d.write_to_len())
    }

    /// Breadth-first walk of the DFA over [`ALPHABET`]: for every pattern,
    /// the shortest input after which a match of it has already ended
    /// (so any longer input is admitted too), and whether it matches
    /// anything at all.
    fn lint(&self, warnings: &mut Warnings) {
        let Some(dfa) = &self.dfa else { return };
        let Ok(start) = dfa.start_state(&start::Config::new().anchored(Anchored::Yes)) else {
            return;
        };
        let n = self.count;
        // (state, parent index, byte)
        let mut order: Vec<(StateID, usize, u8)> = alloc::vec![(start, usize::MAX, 0)];
        let mut seen: BTreeMap<StateID, ()> = BTreeMap::new();
        seen.insert(start, ());
        let mut prefix: Vec<Option<(usize, u8)>> = alloc::vec![None; n];
        let mut full = alloc::vec![false; n];
        let mut k = 0;
        while k < order.len() && k < MAX_LINT_STATES {
            let (s, _, _) = order[k];
            let eoi = dfa.next_eoi_state(s);
            if dfa.is_match_state(eoi) {
                for i in 0..dfa.match_len(eoi) {
                    if let Some(f) = full.get_mut(dfa.match_pattern(eoi, i).as_usize()) {
                        *f = true;
                    }
                }
            }
            for &b in ALPHABET {
                let t = dfa.next_state(s, b);
                if dfa.is_dead_state(t) || dfa.is_quit_state(t) {
                    continue;
                }
                if dfa.is_match_state(t) {
                    for i in 0..dfa.match_len(t) {
                        if let Some(p @ None) = prefix.get_mut(dfa.match_pattern(t, i).as_usize()) {
                            *p = Some((k, b));
                        }
                    }
                }
                if seen.insert(t, ()).is_none() {
                    order.push((t, k, b));
                }
            }
            k += 1;
        }
        let path = |mut k: usize| {
            let mut v = Vec::new();
            while let Some(&(_, parent, b)) = order.get(k) {
                if parent == usize::MAX {
                    break;
                }
                v.push(b);
                k = parent;
            }
            v.reverse();
            String::from_utf8(v).unwrap_or_default()
        };
        let acl = self.as_ref();
        for (p, text) in self.patterns().enumerate() {
            let text = String::from(text);
            match prefix.get(p).copied().flatten() {
                Some((k, b)) => {
                    let matched = path(k);
                    let mut candidates: Vec<String> = SUFFIXES
                        .iter()
                        .map(|s| alloc::format!("{matched}{s}"))
                        .collect();
                    candidates.push(alloc::format!("{matched}{}evil.example", b as char));
                    let Some(example) =
                        candidates.into_iter().find(|c| matches_pattern(&acl, c, p))
                    else {
                        continue;
                    };
                    if matched.is_empty() {
                        warnings.push(Warning::AdmitsAnyHost {
                            pattern: p,
                            text,
                            example,
                        });
                    } else {
                        warnings.push(Warning::NotAnchoredAtEnd {
                            pattern: p,
                            text,
                            example,
                        });
                    }
                }
                None if !full.get(p).copied().unwrap_or(true) => {
                    warnings.push(Warning::MatchesNothing { pattern: p, text });
                }
                None => {}
            }
        }
    }
}

/// Whether pattern `p` alone `re.match`es `input`.
fn matches_pattern(acl: &HostsAllowRef<'_>, input: &str, p: usize) -> bool {
    acl.matches(input, p)
}

/// A copy of serialized bytes at a 4-byte-aligned address, for
/// [`HostsAllowRef::from_bytes`] (a `Vec<u8>` read from a file has no
/// alignment guarantee).
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into aligned storage.
    pub fn copy_from(bytes: &[u8]) -> AlignedBytes {
        let mut buf = alloc::vec![0u8; bytes.len() + 3];
        let off = buf.as_ptr().align_offset(4).min(3);
        buf[off..off + bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            buf,
            off,
            len: bytes.len(),
        }
    }

    /// The aligned bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
}
