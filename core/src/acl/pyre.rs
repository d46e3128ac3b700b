//! A parser for Python `re` syntax (CPython 3.11 `re._parser`) that builds a
//! [`regex_syntax::hir::Hir`] directly, never regex text, so every construct
//! means what it means to Python.
//!
//! # The input alphabet is ASCII
//!
//! Peers are matched by their host name or IP address text, and
//! [`HostsAllowRef::admit`](super::HostsAllowRef::admit) only ever feeds the
//! DFA the host-name / address alphabet (see
//! [`is_plausible_hostname`](super::is_plausible_hostname)). So
//! every character class is built as a set of ASCII bytes: a Python class,
//! `\d`, `\w`, `\s`, `.` or a literal is intersected with ASCII, and a
//! non-ASCII literal becomes a class that matches nothing. On ASCII input
//! this is exactly Python's behaviour, and it keeps the DFA small (no Unicode
//! tables, one byte per transition).
//!
//! Case-insensitive matching (`(?i)`) follows `re._compiler`: an input
//! character `y` matches a literal or set `C` when `lower(y)` is in the set
//! of lowered members of `C` plus their "extra cases". Restricted to ASCII
//! inputs, the only non-ASCII pattern characters that can match are
//! U+0130 (İ, lowers to `i`), U+212A (Kelvin sign, lowers to `k`),
//! U+0131 (ı, extra case of `i`) and U+017F (ſ, extra case of `s`); with the
//! ASCII flag (`(?a)`) none of them do. Checked against CPython 3.11's
//! `_sre.unicode_tolower` and `re._casefix._EXTRA_CASES`.
//!
//! # Anchors
//!
//! `^` and `\A` are the start of text; `\Z` is the end of text; `\b` and `\B`
//! are ASCII word boundaries (equal to Python's on ASCII input; `\B` differs
//! from Python only on the empty string, which is never matched). Python's
//! `$` outside multi-line mode matches at the end *or before a final `\n`*;
//! since matched inputs never contain `\n`, it is compiled as end of text.
//! Under `(?m)`, `^`/`$` are the line anchors `StartLF`/`EndLF`, exact.
//!
//! # Refused
//!
//! Constructs a DFA cannot run are refused with the byte offset where they
//! start: back-references (`\1`, `(?P=n)`), look-around, conditionals,
//! atomic groups and possessive repeats. Also refused: `\N{…}` (needs the
//! Unicode name table), the deprecated `(?t)` flag, nesting deeper than
//! [`MAX_DEPTH`] and repeat counts above [`MAX_REPEAT_COUNT`].
//!
//! Group names are checked with Rust's Unicode `is_alphabetic`/
//! `is_alphanumeric`, a close approximation of Python's `str.isidentifier`.

use alloc::{boxed::Box, vec::Vec};
use regex_syntax::hir::{self, Hir, Look};

use super::PatternErrorKind as K;

/// The largest repeat count (`{m,n}`) accepted; larger counts are refused
/// (Python accepts up to 2³²-2) because they blow up the DFA.
pub const MAX_REPEAT_COUNT: u32 = 1000;
/// The deepest group nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Python's `MAXREPEAT`: counts at or above it are an error in Python.
const PY_MAXREPEAT: u64 = 4_294_967_295;

/// A parse failure: the byte offset in the pattern and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PyError {
    pub offset: usize,
    pub kind: K,
}

fn err<T>(offset: usize, kind: K) -> Result<T, PyError> {
    Err(PyError { offset, kind })
}

#[derive(Clone, Copy, Debug)]
struct Flags {
    ignore_case: bool,
    multiline: bool,
    dot_all: bool,
    verbose: bool,
    unicode: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    Ch(char),
    Esc(char),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    At,
    Repeat,
    Other,
}

/// A set of ASCII bytes, bit `b` for byte `b`.
#[derive(Clone, Copy, Default)]
struct Ascii(u128);

const ALL: u128 = u128::MAX;

impl Ascii {
    fn add(&mut self, b: u32) {
        if b < 128 {
            self.0 |= 1u128 << b;
        }
    }
    fn add_range(&mut self, lo: u32, hi: u32) {
        let mut c = lo;
        while c <= hi && c < 128 {
            self.0 |= 1u128 << c;
            c += 1;
        }
    }
    fn has(&self, b: u32) -> bool {
        b < 128 && self.0 & (1u128 << b) != 0
    }
    /// `{ y : lower(y) ∈ self }` for ASCII `y` (`self` holds lowered chars).
    fn unfold(self) -> Ascii {
        let mut out = self;
        for c in u32::from(b'a')..=u32::from(b'z') {
            if self.has(c) {
                out.add(c - 32);
            }
        }
        out
    }
    fn to_hir(self) -> Hir {
        let mut ranges = Vec::new();
        let mut c = 0u32;
        while c < 128 {
            if self.has(c) {
                let lo = c;
                while c + 1 < 128 && self.has(c + 1) {
                    c += 1;
                }
                // Both ends are ASCII, so `from_u32` cannot fail.
                if let (Some(l), Some(h)) = (char::from_u32(lo), char::from_u32(c)) {
                    ranges.push(hir::ClassUnicodeRange::new(l, h));
                }
            }
            c += 1;
        }
        if ranges.is_empty() {
            return Hir::fail();
        }
        Hir::class(hir::Class::Unicode(hir::ClassUnicode::new(ranges)))
    }
}

/// The lowered ASCII characters a pattern character stands for under
/// `(?i)`: `lower(c)` and its extra cases, restricted to ASCII.
fn fold_into(set: &mut Ascii, c: u32, unicode: bool) {
    match c {
        0x41..=0x5a => set.add(c + 32),
        0..=0x7f => set.add(c),
        0x130 | 0x131 if unicode => set.add(u32::from(b'i')),
        0x212a if unicode => set.add(u32::from(b'k')),
        0x17f if unicode => set.add(u32::from(b's')),
        _ => {}
    }
}

fn category(c: char, unicode: bool) -> Ascii {
    let mut s = Ascii::default();
    match c.to_ascii_lowercase() {
        'd' => s.add_range(0x30, 0x39),
        'w' => {
            s.add_range(0x30, 0x39);
            s.add_range(0x41, 0x5a);
            s.add_range(0x61, 0x7a);
            s.add(0x5f);
        }
        _ => {
            s.add_range(0x09, 0x0d);
            s.add(0x20);
            if unicode {
                // str.isspace() is true for the information separators.
                s.add_range(0x1c, 0x1f);
            }
        }
    }
    if c.is_ascii_uppercase() {
        s.0 = !s.0 & ALL;
    }
    s
}

enum Member {
    Lit(u32),
    Cat(Ascii),
}

/// Parses one Python pattern into a `Hir` that matches the same ASCII
/// strings at the same positions (see the module docs).
pub(crate) fn parse(pattern: &str) -> Result<Hir, PyError> {
    let mut p = Parser {
        s: pattern,
        pos: 0,
        flags: Flags {
            ignore_case: false,
            multiline: false,
            dot_all: false,
            verbose: false,
            unicode: true,
        },
        global_ascii: false,
        global_unicode: false,
        closed: Vec::new(),
        names: Vec::new(),
    };
    let flags = p.flags;
    let hir = p.parse_sub(0, flags)?;
    if p.pos < p.s.len() {
        return err(p.pos, K::UnbalancedParenthesis);
    }
    if p.global_ascii && p.global_unicode {
        return err(0, K::IncompatibleFlags);
    }
    Ok(hir)
}

struct Parser<'p> {
    s: &'p str,
    pos: usize,
    /// The global flags (set by `(?…)` at the very start).
    flags: Flags,
    global_ascii: bool,
    global_unicode: bool,
    /// `closed[g-1]`: whether capture group `g` has been closed.
    closed: Vec<bool>,
    names: Vec<(&'p str, usize)>,
}

impl<'p> Parser<'p> {
    /// The next token and its length in bytes.
    fn peek(&self) -> Result<Option<(Tok, usize)>, PyError> {
        let rest = self.s.get(self.pos..).unwrap_or("");
        let mut it = rest.chars();
        match it.next() {
            None => Ok(None),
            Some('\\') => match it.next() {
                None => err(self.pos, K::BadEscapeEnd),
                Some(c) => Ok(Some((Tok::Esc(c), 1 + c.len_utf8()))),
            },
            Some(c) => Ok(Some((Tok::Ch(c), c.len_utf8()))),
        }
    }

    fn next(&mut self) -> Result<Option<Tok>, PyError> {
        Ok(self.peek()?.map(|(t, n)| {
            self.pos += n;
            t
        }))
    }

    fn eat(&mut self, c: char) -> Result<bool, PyError> {
        if let Some((Tok::Ch(x), n)) = self.peek()? {
            if x == c {
                self.pos += n;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Python's `getwhile(n, charset)` for hex/octal digits.
    fn digits(&mut self, max: usize, radix: u32) -> Result<(u32, usize), PyError> {
        let (mut v, mut n) = (0u32, 0usize);
        while n < max {
            match self.peek()? {
                Some((Tok::Ch(c), 1)) if c.is_digit(radix) => {
                    v = v * radix + c.to_digit(radix).unwrap_or(0);
                    self.pos += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        Ok((v, n))
    }

    /// Python's `getuntil(terminator)`: a group name.
    fn name_until(&mut self, term: char) -> Result<&'p str, PyError> {
        let start = self.pos;
        loop {
            let here = self.pos;
            match self.next()? {
                None if here == start => return err(here, K::MissingGroupName),
                None => return err(start, K::UnterminatedName),
                Some(Tok::Ch(c)) if c == term => {
                    if here == start {
                        return err(here, K::MissingGroupName);
                    }
                    let name = self.s.get(start..here).unwrap_or("");
                    if !is_identifier(name) {
                        return err(start, K::BadGroupName);
                    }
                    return Ok(name);
                }
                Some(_) => {}
            }
        }
    }

    fn parse_sub(&mut self, depth: usize, flags: Flags) -> Result<Hir, PyError> {
        if depth > MAX_DEPTH {
            return err(self.pos, K::NestingTooDeep);
        }
        let mut alts = Vec::new();
        loop {
            // At top level, global flags from the first branch apply to all.
            let f = if depth == 0 { self.flags } else { flags };
            let first = depth == 0 && alts.is_empty();
            alts.push(self.parse_seq(depth, f, first)?);
            if !self.eat('|')? {
                break;
            }
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or_else(Hir::empty)
        } else {
            Hir::alternation(alts)
        })
    }

    fn literal(c: u32, f: Flags) -> Hir {
        let mut s = Ascii::default();
        if f.ignore_case {
            fold_into(&mut s, c, f.unicode);
            s.unfold().to_hir()
        } else {
            s.add(c);
            s.to_hir()
        }
    }

    fn parse_seq(&mut self, depth: usize, mut f: Flags, first: bool) -> Result<Hir, PyError> {
        let mut items: Vec<(Kind, Hir)> = Vec::new();
        loop {
            let start = self.pos;
            let tok = match self.peek()? {
                None => break,
                Some((Tok::Ch('|' | ')'), _)) => break,
                Some((t, n)) => {
                    self.pos += n;
                    t
                }
            };
            if f.verbose {
                match tok {
                    Tok::Ch(' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c') => continue,
                    Tok::Ch('#') => {
                        while let Some(t) = self.next()? {
                            if t == Tok::Ch('\n') {
                                break;
                            }
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            match tok {
                Tok::Esc(c) => items.push(self.escape(c, start, f)?),
                Tok::Ch('[') => items.push((Kind::Other, self.set(start, f)?)),
                Tok::Ch(c @ ('*' | '+' | '?' | '{')) => {
                    let (min, max) = match c {
                        '?' => (0, Some(1)),
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => {
                            if matches!(self.peek()?, Some((Tok::Ch('}'), _))) {
                                items.push((Kind::Other, Self::literal('{' as u32, f)));
                                continue;
                            }
                            let here = self.pos;
                            let lo = self.count()?;
                            let hi = if self.eat(',')? { self.count()? } else { lo };
                            if !self.eat('}')? {
                                items.push((Kind::Other, Self::literal('{' as u32, f)));
                                self.pos = here;
                                continue;
                            }
                            let min = lo.unwrap_or(0);
                            if min >= PY_MAXREPEAT || hi.is_some_and(|h| h >= PY_MAXREPEAT) {
                                return err(start, K::RepeatNumberTooLarge);
                            }
                            if hi.is_some_and(|h| h < min) {
                                return err(start, K::MinRepeatGreaterThanMax);
                            }
                            (min, hi)
                        }
                    };
                    match items.last() {
                        None | Some((Kind::At, _)) => return err(start, K::NothingToRepeat),
                        Some((Kind::Repeat, _)) => return err(start, K::MultipleRepeat),
                        Some(_) => {}
                    }
                    let greedy = !self.eat('?')?;
                    if greedy && self.eat('+')? {
                        return err(start, K::PossessiveRepeat);
                    }
                    let cap = u64::from(MAX_REPEAT_COUNT);
                    if min > cap || max.is_some_and(|m| m > cap) {
                        return err(start, K::RepeatCountTooLarge);
                    }
                    let (_, sub) = items.pop().unwrap_or((Kind::Other, Hir::empty()));
                    let rep = Hir::repetition(hir::Repetition {
                        // Both are at most MAX_REPEAT_COUNT here.
                        min: min as u32,
                        max: max.map(|m| m as u32),
                        greedy,
                        sub: Box::new(sub),
                    });
                    items.push((Kind::Repeat, rep));
                }
                Tok::Ch('.') => {
                    let mut s = Ascii(ALL);
                    if !f.dot_all {
                        s.0 &= !(1u128 << b'\n');
                    }
                    items.push((Kind::Other, s.to_hir()));
                }
                Tok::Ch('^') => {
                    let look = if f.multiline {
                        Look::StartLF
                    } else {
                        Look::Start
                    };
                    items.push((Kind::At, Hir::look(look)));
                }
                Tok::Ch('$') => {
                    let look = if f.multiline { Look::EndLF } else { Look::End };
                    items.push((Kind::At, Hir::look(look)));
                }
                Tok::Ch('(') => {
                    if let Some(h) = self.group(start, depth, &mut f, first, items.is_empty())? {
                        items.push((Kind::Other, h));
                    }
                }
                Tok::Ch(c) => items.push((Kind::Other, Self::literal(c as u32, f))),
            }
        }
        Ok(Hir::concat(items.into_iter().map(|(_, h)| h).collect()))
    }

    /// Decimal digits of a `{m,n}` count; `None` when there are none.
    fn count(&mut self) -> Result<Option<u64>, PyError> {
        let mut v: Option<u64> = None;
        while let Some((Tok::Ch(c @ '0'..='9'), _)) = self.peek()? {
            self.pos += 1;
            let d = u64::from(c.to_digit(10).unwrap_or(0));
            v = Some(v.unwrap_or(0).saturating_mul(10).saturating_add(d));
        }
        Ok(v)
    }

    /// After `(`: a group, a comment (`None`) or global flags (`None`).
    fn group(
        &mut self,
        start: usize,
        depth: usize,
        f: &mut Flags,
        first: bool,
        no_items: bool,
    ) -> Result<Option<Hir>, PyError> {
        let mut inner = *f;
        let mut capture = None;
        if self.eat('?')? {
            let Some(tok) = self.next()? else {
                return err(self.pos, K::UnexpectedEnd);
            };
            match tok {
                Tok::Ch('P') => {
                    if self.eat('<')? {
                        let name = self.name_until('>')?;
                        capture = Some(Some(name));
                    } else if self.eat('=')? {
                        let name = self.name_until(')')?;
                        return match self.names.iter().find(|(n, _)| *n == name) {
                            None => err(start, K::UnknownGroupName),
                            Some(&(_, g)) if !self.closed.get(g - 1).copied().unwrap_or(false) => {
                                err(start, K::OpenGroupReference)
                            }
                            Some(_) => err(start, K::Backreference),
                        };
                    } else {
                        return match self.next()? {
                            None => err(self.pos, K::UnexpectedEnd),
                            Some(_) => err(start, K::UnknownExtension),
                        };
                    }
                }
                Tok::Ch(':') => {}
                Tok::Ch('#') => loop {
                    match self.next()? {
                        None => return err(start, K::UnterminatedComment),
                        Some(Tok::Ch(')')) => return Ok(None),
                        Some(_) => {}
                    }
                },
                Tok::Ch('=' | '!') => return err(start, K::LookAhead),
                Tok::Ch('<') => {
                    return match self.next()? {
                        None => err(self.pos, K::UnexpectedEnd),
                        Some(Tok::Ch('=' | '!')) => err(start, K::LookBehind),
                        Some(_) => err(start, K::UnknownExtension),
                    }
                }
                Tok::Ch('(') => return err(start, K::Conditional),
                Tok::Ch('>') => return err(start, K::AtomicGroup),
                Tok::Ch(c) if "iLmsxatu-".contains(c) => {
                    match self.flags_group(c, start, &mut inner)? {
                        true => {}
                        false => {
                            // Global flags.
                            if !first || !no_items {
                                return err(start, K::GlobalFlagsNotAtStart);
                            }
                            *f = inner;
                            self.flags = inner;
                            return Ok(None);
                        }
                    }
                }
                Tok::Ch(_) | Tok::Esc(_) => return err(start, K::UnknownExtension),
            }
        } else {
            capture = Some(None);
        }
        let group = match capture {
            Some(name) => {
                self.closed.push(false);
                let gid = self.closed.len();
                if let Some(name) = name {
                    if self.names.iter().any(|(n, _)| *n == name) {
                        return err(start, K::GroupNameRedefined);
                    }
                    self.names.push((name, gid));
                }
                Some(gid)
            }
            None => None,
        };
        let h = self.parse_sub(depth + 1, inner)?;
        if !self.eat(')')? {
            return err(start, K::MissingParenthesis);
        }
        if let Some(g) = group {
            if let Some(c) = self.closed.get_mut(g - 1) {
                *c = true;
            }
        }
        Ok(Some(h))
    }

    /// Parses inline flags after `(?c`. Returns `true` for scoped flags
    /// (`(?i:`, `(?-i:`; `f` updated, `:` consumed) and `false` for global
    /// flags (`(?i)`; `f` updated, `)` consumed).
    fn flags_group(&mut self, mut c: char, start: usize, f: &mut Flags) -> Result<bool, PyError> {
        let (mut add_a, mut add_u) = (false, false);
        let mut add = *f;
        let mut added = [false; 4]; // i m s x
        if c != '-' {
            loop {
                match c {
                    'L' => return err(start, K::LocaleFlag),
                    't' => return err(start, K::TemplateFlag),
                    'a' => add_a = true,
                    'u' => add_u = true,
                    'i' => added[0] = true,
                    'm' => added[1] = true,
                    's' => added[2] = true,
                    _ => added[3] = true,
                }
                if add_a && add_u {
                    return err(start, K::IncompatibleFlags);
                }
                match self.next()? {
                    None => return err(self.pos, K::MissingDashColonParen),
                    Some(Tok::Ch(x @ (')' | '-' | ':'))) => {
                        c = x;
                        break;
                    }
                    Some(Tok::Ch(x)) if "iLmsxatu".contains(x) => c = x,
                    Some(Tok::Ch(x)) if x.is_alphabetic() => return err(start, K::UnknownFlag),
                    Some(_) => return err(start, K::MissingDashColonParen),
                }
            }
        }
        let apply = |add: &mut Flags, on: [bool; 4], v: bool| {
            if on[0] {
                add.ignore_case = v;
            }
            if on[1] {
                add.multiline = v;
            }
            if on[2] {
                add.dot_all = v;
            }
            if on[3] {
                add.verbose = v;
            }
        };
        apply(&mut add, added, true);
        if add_a {
            add.unicode = false;
        }
        if add_u {
            add.unicode = true;
        }
        if c == ')' {
            self.global_ascii |= add_a;
            self.global_unicode |= add_u;
            *f = add;
            return Ok(false);
        }
        let mut removed = [false; 4];
        if c == '-' {
            let mut x = match self.next()? {
                None => return err(self.pos, K::MissingFlag),
                Some(Tok::Ch(x)) if "iLmsxatu".contains(x) => x,
                Some(Tok::Ch(x)) if x.is_alphabetic() => return err(start, K::UnknownFlag),
                Some(_) => return err(start, K::MissingFlag),
            };
            loop {
                match x {
                    'a' | 'u' | 'L' => return err(start, K::TurnOffTypeFlag),
                    't' => return err(start, K::TemplateFlag),
                    'i' => removed[0] = true,
                    'm' => removed[1] = true,
                    's' => removed[2] = true,
                    _ => removed[3] = true,
                }
                match self.next()? {
                    None => return err(self.pos, K::MissingColon),
                    Some(Tok::Ch(':')) => break,
                    Some(Tok::Ch(y)) if "iLmsxatu".contains(y) => x = y,
                    Some(Tok::Ch(y)) if y.is_alphabetic() => return err(start, K::UnknownFlag),
                    Some(_) => return err(start, K::MissingColon),
                }
            }
        }
        if (0..4).any(|i| added[i] && removed[i]) {
            return err(start, K::FlagOnAndOff);
        }
        apply(&mut add, removed, false);
        *f = add;
        Ok(true)
    }

    /// `\x`, `\u`, `\U` after the letter: the code point.
    fn hex_escape(&mut self, c: char, start: usize) -> Result<u32, PyError> {
        let want = match c {
            'x' => 2,
            'u' => 4,
            _ => 8,
        };
        let (v, n) = self.digits(want, 16)?;
        if n != want {
            return err(start, K::IncompleteEscape);
        }
        if v > 0x10ffff {
            return err(start, K::BadEscape);
        }
        Ok(v)
    }

    /// An escape outside a set (Python's `_escape`).
    fn escape(&mut self, c: char, start: usize, f: Flags) -> Result<(Kind, Hir), PyError> {
        let lit = |v: u32| Ok((Kind::Other, Self::literal(v, f)));
        match c {
            'A' => Ok((Kind::At, Hir::look(Look::Start))),
            'Z' => Ok((Kind::At, Hir::look(Look::End))),
            'b' => Ok((Kind::At, Hir::look(Look::WordAscii))),
            'B' => Ok((Kind::At, Hir::look(Look::WordAsciiNegate))),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => Ok((Kind::Other, category(c, f.unicode).to_hir())),
            'a' => lit(7),
            'f' => lit(12),
            'n' => lit(10),
            'r' => lit(13),
            't' => lit(9),
            'v' => lit(11),
            'x' | 'u' | 'U' => {
                let v = self.hex_escape(c, start)?;
                lit(v)
            }
            'N' => err(start, K::NamedUnicodeEscape),
            '0' => {
                let (v, _) = self.digits(2, 8)?;
                lit(v)
            }
            '1'..='9' => {
                let d1 = c as u32 - '0' as u32;
                let mut group = d1;
                if let Some((Tok::Ch(d2 @ '0'..='9'), _)) = self.peek()? {
                    self.pos += 1;
                    let d2 = d2 as u32 - '0' as u32;
                    group = d1 * 10 + d2;
                    if d1 < 8 && d2 < 8 {
                        if let Some((Tok::Ch(d3 @ '0'..='7'), _)) = self.peek()? {
                            self.pos += 1;
                            let v = d1 * 64 + d2 * 8 + (d3 as u32 - '0' as u32);
                            if v > 0o377 {
                                return err(start, K::OctalOutOfRange);
                            }
                            return lit(v);
                        }
                    }
                }
                let g = group as usize;
                if g <= self.closed.len() {
                    if !self.closed.get(g.wrapping_sub(1)).copied().unwrap_or(false) {
                        return err(start, K::OpenGroupReference);
                    }
                    return err(start, K::Backreference);
                }
                err(start, K::InvalidGroupReference)
            }
            c if c.is_ascii_alphabetic() => err(start, K::BadEscape),
            c => lit(c as u32),
        }
    }

    /// An escape inside a set (Python's `_class_escape`).
    fn class_escape(&mut self, c: char, start: usize, f: Flags) -> Result<Member, PyError> {
        Ok(Member::Lit(match c {
            'a' => 7,
            'b' => 8,
            'f' => 12,
            'n' => 10,
            'r' => 13,
            't' => 9,
            'v' => 11,
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => return Ok(Member::Cat(category(c, f.unicode))),
            'x' | 'u' | 'U' => self.hex_escape(c, start)?,
            'N' => return err(start, K::NamedUnicodeEscape),
            '0'..='7' => {
                let (v, n) = self.digits(2, 8)?;
                let v = (c as u32 - '0' as u32) * 8u32.pow(n as u32) + v;
                if v > 0o377 {
                    return err(start, K::OctalOutOfRange);
                }
                v
            }
            '8' | '9' => return err(start, K::BadEscape),
            c if c.is_ascii_alphabetic() => return err(start, K::BadEscape),
            c => c as u32,
        }))
    }

    /// After `[`: a set (Python's set parsing in `_parse`).
    fn set(&mut self, start: usize, f: Flags) -> Result<Hir, PyError> {
        let negate = self.eat('^')?;
        let mut acc = Ascii::default();
        let mut nonempty = false;
        let add = |acc: &mut Ascii, m: Member| match m {
            Member::Cat(s) => acc.0 |= s.0,
            Member::Lit(v) if f.ignore_case => fold_into(acc, v, f.unicode),
            Member::Lit(v) => acc.add(v),
        };
        loop {
            let here = self.pos;
            let tok = match self.next()? {
                None => return err(start, K::UnterminatedSet),
                Some(Tok::Ch(']')) if nonempty => break,
                Some(t) => t,
            };
            let code1 = match tok {
                Tok::Esc(c) => self.class_escape(c, here, f)?,
                Tok::Ch(c) => Member::Lit(c as u32),
            };
            nonempty = true;
            if self.eat('-')? {
                let there = self.pos;
                let code2 = match self.next()? {
                    None => return err(start, K::UnterminatedSet),
                    Some(Tok::Ch(']')) => {
                        add(&mut acc, code1);
                        add(&mut acc, Member::Lit('-' as u32));
                        break;
                    }
                    Some(Tok::Esc(c)) => self.class_escape(c, there, f)?,
                    Some(Tok::Ch(c)) => Member::Lit(c as u32),
                };
                let (Member::Lit(lo), Member::Lit(hi)) = (code1, code2) else {
                    return err(here, K::BadCharacterRange);
                };
                if hi < lo {
                    return err(here, K::BadCharacterRange);
                }
                if f.ignore_case {
                    for c in lo..=hi.min(0x7f) {
                        fold_into(&mut acc, c, f.unicode);
                    }
                    for c in [0x130, 0x131, 0x17f, 0x212a] {
                        if (lo..=hi).contains(&c) {
                            fold_into(&mut acc, c, f.unicode);
                        }
                    }
                } else {
                    acc.add_range(lo, hi);
                }
            } else {
                add(&mut acc, code1);
            }
        }
        if f.ignore_case {
            // Categories are closed under ASCII case mapping, so unfolding
            // the whole set is exact (module docs).
            acc = acc.unfold();
        }
        if negate {
            acc.0 = !acc.0 & ALL;
        }
        Ok(acc.to_hir())
    }
}

fn is_identifier(name: &str) -> bool {
    let mut it = name.chars();
    match it.next() {
        Some(c) if c == '_' || c.is_alphabetic() => it.all(|c| c == '_' || c.is_alphanumeric()),
        _ => false,
    }
}
