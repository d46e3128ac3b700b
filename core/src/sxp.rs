//! xend's S-expression ("sxp") reader, zero-copy and allocation-free.
//!
//! xend kept its configuration (`/etc/xen/xend-config.sxp`) in a small Lisp
//! like syntax read by `tools/python/xen/xend/sxp.py`. This module reads the
//! same syntax:
//!
//! - lists `( … )`, nested at most [`MAX_DEPTH`] deep;
//! - bare atoms: a run of characters ended by white space, `#`, `(`, `)` or
//!   one of xend's separators `{}<>[]!;` (a separator may *start* an atom,
//!   exactly as in xend: `a;b` is the two atoms `a` and `;b`);
//! - strings in `'…'` or `"…"` with xend's escapes: `\\ \' \" \a \b \t \n
//!   \v \f \r`, `\xHH` (exactly two hex digits) and octal `\N`, `\NN`,
//!   `\NNN` (value at most 0o377);
//! - `#` comments to the end of the line, anywhere outside a string
//!   (also right after an atom: `yes#comment` is the atom `yes`).
//!
//! # Where we differ from xend, and say so
//!
//! - An unknown escape such as `'\.'`: xend keeps the backslash and *drops*
//!   the next character (its `state_escape` appends `'\\'` and pops), so
//!   `'^host\.example'` reached xend's regex engine as `^host\example`. We
//!   keep both characters (`\.`), which is what the operator meant, and emit
//!   [`WarningKind::UnknownEscape`].
//! - `\xHH` with a letter digit: xend's `state_hex` computes `ord(c) -
//!   ord('A')` for `A`–`F` (and the same for `a`–`f`), i.e. 0–5 instead of
//!   10–15, so `'\x4a'` read as `@` (0x40), not `J`. We decode correctly and
//!   emit [`WarningKind::HexLetterDigit`] with the byte xend produced.
//! - `\x` not followed by two hex digits: xend's `state_hex` reaches a
//!   reference to an undefined name (`len(buf)`) and fails with a
//!   `NameError`; we report [`ErrorKind::BadHexEscape`].
//! - Escapes that produce a byte above 0x7f (`\xff`, `\377`): xend (Python
//!   2) stored a raw byte; our strings are UTF-8 text, so this is
//!   [`ErrorKind::NonAsciiEscape`].
//! - Control characters outside strings and comments are refused
//!   ([`ErrorKind::InvalidCharacter`]); xend refused them only where an atom
//!   would start, and treated Ctrl-D as end of input.
//!
//! # Shape
//!
//! [`Reader`] is a pull parser: each [`Reader::next_event`] returns one
//! [`Event`] (`Open`, `Close`, `Atom`) borrowed from the input. An [`Atom`]
//! is a view of its source text; escapes are validated while reading and
//! decoded lazily: [`Atom::as_plain`], [`Atom::decode_into`] (a caller
//! buffer), [`Atom::chars`], `Display`, or `to_string` under `alloc`.
//! Warnings go to a [`WarningSink`] (a closure, `()`/[`IgnoreWarnings`],
//! or a `Vec` under `alloc`). Under `alloc`, `parse_all` / `parse_one`
//! build owned `Value` trees.
//!
//! Every [`Error`] and [`Warning`] carries a 1-based line and column; the
//! column counts characters (Unicode scalar values), not bytes.
//!
//! The reader never recurses and never panics on any input.
//!
//! ```
//! use relocd_core::sxp::{Event, Reader, Warning};
//!
//! let mut r = Reader::new("(hosts '^a\\.b$ ^c\\.d$') # comment");
//! let mut warnings = 0;
//! let mut sink = |_: Warning| warnings += 1;
//! assert!(matches!(r.next_event(&mut sink), Ok(Some(Event::Open(_)))));
//! let Ok(Some(Event::Atom(key))) = r.next_event(&mut sink) else { panic!() };
//! assert_eq!(key.as_plain(), Some("hosts"));
//! let Ok(Some(Event::Atom(v))) = r.next_event(&mut sink) else { panic!() };
//! let mut buf = [0u8; 64];
//! // `\.` is no escape: kept as typed, with a warning each (xend dropped the dot).
//! assert_eq!(v.decode_into(&mut buf), Ok(r"^a\.b$ ^c\.d$"));
//! assert!(matches!(r.next_event(&mut sink), Ok(Some(Event::Close(_)))));
//! assert_eq!(r.next_event(&mut sink), Ok(None));
//! assert_eq!(warnings, 2);
//! ```

use core::fmt;

/// Deepest list nesting accepted; one more `(` is [`ErrorKind::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// A place in the input: 1-based line and 1-based column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, counting from 1.
    pub line: u32,
    /// Column in characters, counting from 1.
    pub column: u32,
}

impl Pos {
    /// The start of a document: line 1, column 1.
    pub const START: Pos = Pos { line: 1, column: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What went wrong while reading sxp text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// End of input inside a `'…'` or `"…"` string; the position is the
    /// opening quote.
    UnterminatedString,
    /// End of input inside a list; the position is the innermost unclosed
    /// `(`.
    UnterminatedList,
    /// A `)` with no open list.
    UnexpectedClose,
    /// `\x` not followed by two hex digits; the position is the backslash.
    BadHexEscape,
    /// An octal escape above `\377`; the position is the backslash.
    OctalOutOfRange,
    /// An escape that yields a byte above 0x7f, which is not UTF-8 text.
    NonAsciiEscape,
    /// Lists nested deeper than [`MAX_DEPTH`]; the position is the `(` too
    /// many.
    TooDeep,
    /// A character that may not appear outside a string or comment
    /// (a control character, or a non-ASCII character starting an atom).
    InvalidCharacter(char),
    /// The input bytes are not UTF-8 ([`Reader::from_bytes`]).
    InvalidUtf8,
    /// More input after the single expression `parse_one` expected.
    TrailingInput,
    /// `parse_one` found no expression at all.
    Empty,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnterminatedString => f.write_str("string is never closed"),
            ErrorKind::UnterminatedList => f.write_str("list is never closed"),
            ErrorKind::UnexpectedClose => f.write_str("')' without a matching '('"),
            ErrorKind::BadHexEscape => f.write_str("'\\x' must be followed by two hex digits"),
            ErrorKind::OctalOutOfRange => f.write_str("octal escape above \\377"),
            ErrorKind::NonAsciiEscape => {
                f.write_str("escape yields a byte above 0x7f, which is not text")
            }
            ErrorKind::TooDeep => write!(f, "lists nested deeper than {MAX_DEPTH}"),
            ErrorKind::InvalidCharacter(c) => write!(f, "invalid character {c:?}"),
            ErrorKind::InvalidUtf8 => f.write_str("input is not valid UTF-8"),
            ErrorKind::TrailingInput => f.write_str("unexpected input after the expression"),
            ErrorKind::Empty => f.write_str("no expression found"),
        }
    }
}

/// A syntax error with its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where.
    pub pos: Pos,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.kind)
    }
}

impl core::error::Error for Error {}

/// Something xend read differently from us; the text is still accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// `\` followed by a character that is not an escape. We keep both
    /// characters; xend kept the backslash and dropped `ch`.
    UnknownEscape {
        /// The character after the backslash.
        ch: char,
    },
    /// `\xHH` with a letter digit, which xend valued 10 too low.
    HexLetterDigit {
        /// The byte we decoded.
        ours: u8,
        /// The byte xend produced.
        xend: u8,
    },
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::UnknownEscape { ch } => write!(
                f,
                "unknown escape '\\{}': kept as the two characters '\\{}', \
                 but xend read it as a lone '\\' (dropping {:?})",
                ch.escape_debug(),
                ch.escape_debug(),
                ch
            ),
            WarningKind::HexLetterDigit { ours, xend } => write!(
                f,
                "hex escape read as byte 0x{ours:02x}, but xend miscomputed \
                 letter digits and read 0x{xend:02x}"
            ),
        }
    }
}

/// A warning with its position (the backslash of the escape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warning {
    /// What xend would have done differently.
    pub kind: WarningKind,
    /// Where.
    pub pos: Pos,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.kind)
    }
}

/// Receives [`Warning`]s as the reader meets them.
pub trait WarningSink {
    /// Called once per warning, in input order.
    fn warn(&mut self, warning: Warning);
}

impl<F: FnMut(Warning)> WarningSink for F {
    fn warn(&mut self, warning: Warning) {
        self(warning)
    }
}

/// A sink that drops warnings, for callers that have said so explicitly.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreWarnings;

impl WarningSink for IgnoreWarnings {
    fn warn(&mut self, _warning: Warning) {}
}

#[cfg(feature = "alloc")]
impl WarningSink for alloc::vec::Vec<Warning> {
    fn warn(&mut self, warning: Warning) {
        self.push(warning)
    }
}

/// How an atom was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    /// A bare atom: no escapes.
    None,
    /// `'…'`.
    Single,
    /// `"…"`.
    Double,
}

/// An atom: a bare word or a quoted string, as a view of its source.
///
/// Escapes were validated by the [`Reader`]; decoding cannot fail except
/// for a too-small caller buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Atom<'a> {
    raw: &'a str,
    quote: Quote,
    pos: Option<Pos>,
}

/// The caller's buffer in [`Atom::decode_into`] is too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the decoded text needs.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

impl<'a> Atom<'a> {
    /// An atom holding `text` literally, not read from a document (used
    /// for defaults). Its [`pos`](Atom::pos) is `None`.
    pub const fn plain(text: &'a str) -> Atom<'a> {
        Atom {
            raw: text,
            quote: Quote::None,
            pos: None,
        }
    }

    /// The source text: for a quoted string, what lies between the quotes,
    /// escapes undecoded.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// How the atom was written.
    pub fn quote(&self) -> Quote {
        self.quote
    }

    /// Where the atom starts (its opening quote for a string); `None` for
    /// [`Atom::plain`].
    pub fn pos(&self) -> Option<Pos> {
        self.pos
    }

    /// The text itself, borrowed, when it holds no escape.
    pub fn as_plain(&self) -> Option<&'a str> {
        if self.quote == Quote::None || !self.raw.contains('\\') {
            Some(self.raw)
        } else {
            None
        }
    }

    /// The decoded characters.
    pub fn chars(&self) -> DecodedChars<'a> {
        DecodedChars {
            rest: self.raw,
            escapes: self.quote != Quote::None,
        }
    }

    /// Length in bytes of the decoded UTF-8 text.
    pub fn decoded_len(&self) -> usize {
        self.chars().map(char::len_utf8).sum()
    }

    /// Decodes into `buf` and returns the text written there.
    pub fn decode_into<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str, BufferTooSmall> {
        let needed = self.decoded_len();
        let Some(out) = buf.get_mut(..needed) else {
            return Err(BufferTooSmall { needed });
        };
        let mut at = 0;
        for c in self.chars() {
            let n = c.len_utf8();
            // `needed` is the sum of these lengths, so the range is in bounds.
            if let Some(dst) = out.get_mut(at..at + n) {
                c.encode_utf8(dst);
            }
            at += n;
        }
        core::str::from_utf8(out).map_err(|_| BufferTooSmall { needed })
    }

    /// Whether the decoded text equals `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        match self.as_plain() {
            Some(p) => p == s,
            None => self.chars().eq(s.chars()),
        }
    }

    /// Whether the decoded text starts with `prefix`.
    pub fn starts_with(&self, prefix: &str) -> bool {
        let mut mine = self.chars();
        prefix.chars().all(|c| mine.next() == Some(c))
    }

    /// Whether the decoded text is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The decoded text as an owned string.
    #[cfg(feature = "alloc")]
    pub fn to_owned_string(&self) -> alloc::string::String {
        self.chars().collect()
    }
}

impl fmt::Display for Atom<'_> {
    /// Writes the decoded text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_plain() {
            Some(p) => f.write_str(p),
            None => self.chars().try_for_each(|c| fmt::Write::write_char(f, c)),
        }
    }
}

/// Iterator over the decoded characters of an [`Atom`].
#[derive(Clone, Debug)]
pub struct DecodedChars<'a> {
    rest: &'a str,
    escapes: bool,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The single-character escapes of xend's `escapes` table.
fn simple_escape(b: u8) -> Option<char> {
    Some(match b {
        b'a' => '\x07',
        b'b' => '\x08',
        b't' => '\t',
        b'n' => '\n',
        b'v' => '\x0b',
        b'f' => '\x0c',
        b'r' => '\r',
        b'\\' => '\\',
        b'\'' => '\'',
        b'"' => '"',
        _ => return None,
    })
}

/// Length of the octal run (1 to 3 digits) at the start of `s`, and its value.
fn octal_run(s: &[u8]) -> (usize, u32) {
    let mut n = 0;
    let mut v = 0u32;
    while n < 3 {
        match s.get(n) {
            Some(&d @ b'0'..=b'7') => {
                v = v * 8 + u32::from(d - b'0');
                n += 1;
            }
            _ => break,
        }
    }
    (n, v)
}

impl Iterator for DecodedChars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let mut it = self.rest.chars();
        let c = it.next()?;
        if c != '\\' || !self.escapes {
            self.rest = it.as_str();
            return Some(c);
        }
        let after = it.as_str();
        let b = after.as_bytes();
        let (len, out) = match b.first() {
            // A trailing lone backslash cannot come from the reader; keep it.
            None => (0, '\\'),
            Some(&e) => {
                if let Some(d) = simple_escape(e) {
                    (1, d)
                } else if e == b'x' {
                    match (
                        b.get(1).copied().and_then(hex_val),
                        b.get(2).copied().and_then(hex_val),
                    ) {
                        (Some(h), Some(l)) => (3, char::from(h * 16 + l)),
                        _ => (0, '\\'),
                    }
                } else if (b'0'..=b'7').contains(&e) {
                    let (n, v) = octal_run(b);
                    match u8::try_from(v) {
                        Ok(v) => (n, char::from(v)),
                        Err(_) => (0, '\\'),
                    }
                } else {
                    // Unknown escape: the backslash stands for itself and
                    // the next character follows as itself.
                    (0, '\\')
                }
            }
        };
        self.rest = after.get(len..).unwrap_or("");
        Some(out)
    }
}

/// One step of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `(`, at this position.
    Open(Pos),
    /// `)`, at this position.
    Close(Pos),
    /// An atom or string.
    Atom(Atom<'a>),
}

/// Pull reader over sxp text. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    src: &'a str,
    at: usize,
    line: u32,
    column: u32,
    depth: usize,
    opens: [Pos; MAX_DEPTH],
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Ends a bare atom (xend's space class, comment class and separators).
fn ends_atom(b: u8) -> bool {
    is_space(b)
        || matches!(
            b,
            b'#' | b'(' | b')' | b'{' | b'}' | b'<' | b'>' | b'[' | b']' | b'!' | b';'
        )
}

fn is_control(b: u8) -> bool {
    (b < 0x20 && !is_space(b)) || b == 0x7f
}

impl<'a> Reader<'a> {
    /// A reader over `text`, positions starting at line 1, column 1.
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader::with_origin(text, Pos::START)
    }

    /// A reader over `text` that lies at `origin` in a larger document, so
    /// that positions refer to the larger document (see [`Span::reader`]).
    pub fn with_origin(text: &'a str, origin: Pos) -> Reader<'a> {
        Reader {
            src: text,
            at: 0,
            line: origin.line,
            column: origin.column,
            depth: 0,
            opens: [Pos::START; MAX_DEPTH],
        }
    }

    /// A reader over bytes, which must be UTF-8; the error gives the
    /// position of the first bad byte.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Reader<'a>, Error> {
        match core::str::from_utf8(bytes) {
            Ok(s) => Ok(Reader::new(s)),
            Err(e) => {
                let good = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                let mut r = Reader::new(core::str::from_utf8(good).unwrap_or(""));
                while r.peek().is_some() {
                    r.bump();
                }
                Err(r.err(ErrorKind::InvalidUtf8, r.pos()))
            }
        }
    }

    /// The position of the next unread character.
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    /// Byte offset of the next unread character in the input.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// The whole input.
    pub fn source(&self) -> &'a str {
        self.src
    }

    /// Number of lists currently open.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.at).copied()
    }

    /// Advances over one byte, keeping line and column.
    fn bump(&mut self) {
        if let Some(b) = self.peek() {
            self.at += 1;
            if b == b'\n' {
                self.line = self.line.saturating_add(1);
                self.column = 1;
            } else if b & 0xc0 != 0x80 {
                self.column = self.column.saturating_add(1);
            }
        }
    }

    /// Advances over one whole character.
    fn bump_char(&mut self) {
        self.bump();
        while matches!(self.peek(), Some(b) if b & 0xc0 == 0x80) {
            self.bump();
        }
    }

    fn current_char(&self) -> char {
        self.src
            .get(self.at..)
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{fffd}')
    }

    fn err(&self, kind: ErrorKind, pos: Pos) -> Error {
        Error { kind, pos }
    }

    /// Skips white space and comments.
    fn skip_blank(&mut self) {
        while let Some(b) = self.peek() {
            if is_space(b) {
                self.bump();
            } else if b == b'#' {
                while !matches!(self.peek(), None | Some(b'\n')) {
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    /// Reads the next event; `Ok(None)` at the end of a complete document.
    ///
    /// After an error the reader should not be used further.
    pub fn next_event(
        &mut self,
        warnings: &mut impl WarningSink,
    ) -> Result<Option<Event<'a>>, Error> {
        self.skip_blank();
        let pos = self.pos();
        let Some(b) = self.peek() else {
            return match self.depth.checked_sub(1) {
                None => Ok(None),
                Some(top) => {
                    let open = self.opens.get(top).copied().unwrap_or(pos);
                    Err(self.err(ErrorKind::UnterminatedList, open))
                }
            };
        };
        match b {
            b'(' => {
                let Some(slot) = self.opens.get_mut(self.depth) else {
                    return Err(self.err(ErrorKind::TooDeep, pos));
                };
                *slot = pos;
                self.depth += 1;
                self.bump();
                Ok(Some(Event::Open(pos)))
            }
            b')' => {
                let Some(d) = self.depth.checked_sub(1) else {
                    return Err(self.err(ErrorKind::UnexpectedClose, pos));
                };
                self.depth = d;
                self.bump();
                Ok(Some(Event::Close(pos)))
            }
            b'\'' | b'"' => self.string(b, pos, warnings).map(Some),
            _ if is_control(b) || b >= 0x80 => {
                Err(self.err(ErrorKind::InvalidCharacter(self.current_char()), pos))
            }
            _ => {
                let start = self.at;
                // The first character may be a separator, as in xend.
                self.bump();
                while let Some(b) = self.peek() {
                    if ends_atom(b) {
                        break;
                    }
                    if is_control(b) {
                        return Err(
                            self.err(ErrorKind::InvalidCharacter(self.current_char()), self.pos())
                        );
                    }
                    self.bump_char();
                }
                let raw = self.src.get(start..self.at).unwrap_or("");
                Ok(Some(Event::Atom(Atom {
                    raw,
                    quote: Quote::None,
                    pos: Some(pos),
                })))
            }
        }
    }

    fn string(
        &mut self,
        delim: u8,
        open: Pos,
        warnings: &mut impl WarningSink,
    ) -> Result<Event<'a>, Error> {
        self.bump();
        let start = self.at;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err(ErrorKind::UnterminatedString, open));
            };
            if b == delim {
                let raw = self.src.get(start..self.at).unwrap_or("");
                self.bump();
                let quote = if delim == b'"' {
                    Quote::Double
                } else {
                    Quote::Single
                };
                return Ok(Event::Atom(Atom {
                    raw,
                    quote,
                    pos: Some(open),
                }));
            }
            if b != b'\\' {
                self.bump_char();
                continue;
            }
            let esc = self.pos();
            self.bump();
            let Some(e) = self.peek() else {
                return Err(self.err(ErrorKind::UnterminatedString, open));
            };
            if simple_escape(e).is_some() {
                self.bump();
            } else if e == b'x' {
                self.bump();
                let rest = self.src.as_bytes().get(self.at..).unwrap_or(&[]);
                let (Some(h), Some(l)) = (
                    rest.first().copied().and_then(hex_val),
                    rest.get(1).copied().and_then(hex_val),
                ) else {
                    return Err(self.err(ErrorKind::BadHexEscape, esc));
                };
                let ours = h * 16 + l;
                // xend's state_hex: letters count from 0 ('A' -> 0), not 10.
                let xend_digit = |b: u8, v: u8| if b.is_ascii_digit() { v } else { v - 10 };
                let (hb, lb) = (
                    rest.first().copied().unwrap_or(b'0'),
                    rest.get(1).copied().unwrap_or(b'0'),
                );
                let xend = xend_digit(hb, h) * 16 + xend_digit(lb, l);
                if ours > 0x7f {
                    return Err(self.err(ErrorKind::NonAsciiEscape, esc));
                }
                if xend != ours {
                    warnings.warn(Warning {
                        kind: WarningKind::HexLetterDigit { ours, xend },
                        pos: esc,
                    });
                }
                self.bump();
                self.bump();
            } else if (b'0'..=b'7').contains(&e) {
                let rest = self.src.as_bytes().get(self.at..).unwrap_or(&[]);
                let (n, v) = octal_run(rest);
                if v > 0o377 {
                    return Err(self.err(ErrorKind::OctalOutOfRange, esc));
                }
                if v > 0x7f {
                    return Err(self.err(ErrorKind::NonAsciiEscape, esc));
                }
                for _ in 0..n {
                    self.bump();
                }
            } else {
                let ch = self.current_char();
                warnings.warn(Warning {
                    kind: WarningKind::UnknownEscape { ch },
                    pos: esc,
                });
                // The character stays in the text; it is neither the
                // delimiter nor a backslash (both are known escapes).
                self.bump_char();
            }
        }
    }

    /// Having just read an [`Event::Open`] at `open` (byte offset
    /// `offset() - 1`), reads up to and including its matching `)` and
    /// returns the list's source text as a [`Span`].
    pub fn skip_list(
        &mut self,
        open: Pos,
        warnings: &mut impl WarningSink,
    ) -> Result<Span<'a>, Error> {
        let start = self.at.saturating_sub(1);
        let target = self.depth.saturating_sub(1);
        while self.depth > target {
            if self.next_event(warnings)?.is_none() {
                // Unreachable: end of input inside a list is an error.
                break;
            }
        }
        Ok(Span {
            text: self.src.get(start..self.at).unwrap_or(""),
            pos: open,
        })
    }
}

/// A list's source text, `(` to `)`, with its position; read it again with
/// [`Span::reader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<'a> {
    /// The text from `(` to the matching `)`, inclusive.
    pub text: &'a str,
    /// Position of the `(`.
    pub pos: Pos,
}

impl<'a> Span<'a> {
    /// A reader over the list whose positions refer to the whole document.
    pub fn reader(&self) -> Reader<'a> {
        Reader::with_origin(self.text, self.pos)
    }
}

#[cfg(feature = "alloc")]
mod owned {
    use super::{Error, ErrorKind, Event, Reader, WarningSink};
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt;

    /// An owned sxp value.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Value {
        /// A list.
        List(Vec<Value>),
        /// An atom or string, escapes decoded.
        Atom(String),
    }

    impl Value {
        /// The text, if this is an atom.
        pub fn as_atom(&self) -> Option<&str> {
            match self {
                Value::Atom(s) => Some(s),
                Value::List(_) => None,
            }
        }

        /// The items, if this is a list.
        pub fn as_list(&self) -> Option<&[Value]> {
            match self {
                Value::List(v) => Some(v),
                Value::Atom(_) => None,
            }
        }

        /// xend's `sxp.child_value`: in a list `(name (k v) …)`, the first
        /// child list headed by `key` gives its first value.
        pub fn child_value(&self, key: &str) -> Option<&Value> {
            self.as_list()?.iter().skip(1).find_map(|c| {
                let l = c.as_list()?;
                if l.first()?.as_atom()? == key {
                    l.get(1)
                } else {
                    None
                }
            })
        }
    }

    impl fmt::Display for Value {
        /// Writes the value back as sxp, strings single-quoted when needed.
        /// Control characters are written as octal escapes, which xend
        /// also reads correctly (its hex escapes misread letter digits).
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Value::Atom(s) => {
                    let bare = !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-_:/~@".contains(&b));
                    if bare {
                        return f.write_str(s);
                    }
                    f.write_str("'")?;
                    for c in s.chars() {
                        match c {
                            '\\' => f.write_str("\\\\")?,
                            '\'' => f.write_str("\\'")?,
                            '\n' => f.write_str("\\n")?,
                            '\t' => f.write_str("\\t")?,
                            '\r' => f.write_str("\\r")?,
                            c if u32::from(c) < 0x20 || c == '\x7f' => {
                                write!(f, "\\{:03o}", u32::from(c))?
                            }
                            c => fmt::Write::write_char(f, c)?,
                        }
                    }
                    f.write_str("'")
                }
                Value::List(items) => {
                    f.write_str("(")?;
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(" ")?;
                        }
                        v.fmt(f)?;
                    }
                    f.write_str(")")
                }
            }
        }
    }

    /// Reads every top-level value of `text` (xend's `sxp.parse`). Nesting
    /// is bounded by [`super::MAX_DEPTH`]; building uses no recursion.
    pub fn parse_all(text: &str, warnings: &mut impl WarningSink) -> Result<Vec<Value>, Error> {
        let mut r = Reader::new(text);
        let mut stack: Vec<Vec<Value>> = Vec::new();
        let mut top = Vec::new();
        while let Some(ev) = r.next_event(warnings)? {
            match ev {
                Event::Open(_) => stack.push(Vec::new()),
                Event::Atom(a) => {
                    let v = Value::Atom(a.to_owned_string());
                    stack.last_mut().unwrap_or(&mut top).push(v);
                }
                Event::Close(_) => {
                    // The reader balances parens, so the stack is not empty.
                    let items = stack.pop().unwrap_or_default();
                    stack
                        .last_mut()
                        .unwrap_or(&mut top)
                        .push(Value::List(items));
                }
            }
        }
        Ok(top)
    }

    /// Reads exactly one value; more input is [`ErrorKind::TrailingInput`]
    /// at the start of the extra value, none is [`ErrorKind::Empty`].
    pub fn parse_one(text: &str, warnings: &mut impl WarningSink) -> Result<Value, Error> {
        let mut r = Reader::new(text);
        let mut stack: Vec<Vec<Value>> = Vec::new();
        loop {
            let Some(ev) = r.next_event(warnings)? else {
                return Err(Error {
                    kind: ErrorKind::Empty,
                    pos: r.pos(),
                });
            };
            let done = match ev {
                Event::Open(_) => {
                    stack.push(Vec::new());
                    None
                }
                Event::Atom(a) => {
                    let v = Value::Atom(a.to_owned_string());
                    match stack.last_mut() {
                        Some(l) => {
                            l.push(v);
                            None
                        }
                        None => Some(v),
                    }
                }
                Event::Close(_) => {
                    let v = Value::List(stack.pop().unwrap_or_default());
                    match stack.last_mut() {
                        Some(l) => {
                            l.push(v);
                            None
                        }
                        None => Some(v),
                    }
                }
            };
            if let Some(v) = done {
                r.skip_blank();
                if r.peek().is_some() {
                    return Err(Error {
                        kind: ErrorKind::TrailingInput,
                        pos: r.pos(),
                    });
                }
                return Ok(v);
            }
        }
    }
}

#[cfg(feature = "alloc")]
pub use owned::{parse_all, parse_one, Value};

#[cfg(test)]
mod tests;
