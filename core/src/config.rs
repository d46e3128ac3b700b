//! The relocation settings of an `xend-config.sxp`, with xend's defaults.
//!
//! # The file, as xend read it
//!
//! The file is a sequence of forms `(key value)`. xend's `set_config`
//! (XendRoot.py, later XendOptions.py) parsed every top-level form and
//! wrapped them as `['xend-config', form, …]`; each setting was then
//! fetched with `sxp.child_value(config, key)`:
//!
//! - the **first** list headed by `key` wins; later duplicates are ignored
//!   (we do the same and emit [`ConfigWarning::DuplicateKey`] for the keys we
//!   interpret);
//! - its value is the first item after the key, skipping an attribute list
//!   `(@ …)` right after the key (sxp's `children`); items after the value
//!   are ignored (we warn: [`ConfigWarning::ExtraValues`]);
//! - `(key)` with no value gives the default;
//! - top-level atoms are not forms and are ignored (we warn).
//!
//! Booleans follow xend's `get_config_bool`: `str(value).lower()` in
//! `yes y 1 on true t` or `no n 0 off false f`, anything else an error.
//! Integers follow `int(value)`: optional surrounding white space and sign,
//! decimal digits. Ports must further be 1–65535 (xend did not check;
//! `int('70000')` would have failed at bind time, and port 0 means "any").
//!
//! Unknown keys (a stock file has dozens: `network-script`,
//! `dom0-min-mem`, `xen-api-server` with nested lists, …) are accepted and
//! ignored. Keys starting with `relocd-` are reserved for relocd; read them
//! (or any key) with [`get`].
//!
//! # No allocator
//!
//! Parsing allocates nothing: string settings are [`Atom`] views into the
//! caller's text that decode escapes lazily (`Display`, `decode_into`,
//! `eq_str`, or `to_owned_string` under `alloc`). Errors are `Copy` and
//! `'static`: the offending value is copied (decoded, cut at
//! [`BadValue::CAPACITY`] bytes) into the error.

//!
//! # Example
//!
//! ```
//! use relocd_core::config::{ConfigWarning, RelocationConfig};
//!
//! let text = "(xend-relocation-server yes)\n\
//!             (xend-relocation-hosts-allow '^localhost$ ^localhost\\\\.localdomain$')";
//! let mut warnings = 0;
//! let cfg = RelocationConfig::parse(text, &mut |_: ConfigWarning<'_>| warnings += 1)?;
//! assert!(cfg.server);
//! assert_eq!(cfg.port, 8002);
//! assert!(cfg.hosts_allow.eq_str(r"^localhost$ ^localhost\.localdomain$"));
//! assert_eq!(warnings, 0);
//! # Ok::<(), relocd_core::config::ConfigError>(())
//! ```

use crate::sxp::{self, Atom, Event, Pos, Reader, Span, WarningSink};
use core::fmt;

/// Key: run the relocation server (bool).
pub const KEY_SERVER: &str = "xend-relocation-server";
/// Key: relocation port (int).
pub const KEY_PORT: &str = "xend-relocation-port";
/// Key: address to listen at (string, `''` = all interfaces).
pub const KEY_ADDRESS: &str = "xend-relocation-address";
/// Key: space-separated regexes of admitted hosts (string, `''` = all).
pub const KEY_HOSTS_ALLOW: &str = "xend-relocation-hosts-allow";
/// Key: run the SSL relocation server (bool).
pub const KEY_SSL_SERVER: &str = "xend-relocation-ssl-server";
/// Key: SSL relocation port (int).
pub const KEY_SSL_PORT: &str = "xend-relocation-ssl-port";
/// Key: server private key file (path).
pub const KEY_SSL_KEY_FILE: &str = "xend-relocation-server-ssl-key-file";
/// Key: server certificate file (path).
pub const KEY_SSL_CERT_FILE: &str = "xend-relocation-server-ssl-cert-file";
/// Key: use SSL when migrating out (bool).
pub const KEY_SSL: &str = "xend-relocation-ssl";
/// Key: the CA bundle peers' certificates must chain to (path; relocd's
/// own, xend never checked peers).
pub const KEY_SSL_CA_FILE: &str = "relocd-relocation-ssl-ca-file";
/// Prefix reserved for relocd's own settings.
pub const RELOCD_PREFIX: &str = "relocd-";

/// Default [`KEY_PORT`], as in xend.
pub const DEFAULT_PORT: u16 = 8002;
/// Default [`KEY_SSL_PORT`], as in xend.
pub const DEFAULT_SSL_PORT: u16 = 8003;

const KEYS: [&str; 10] = [
    KEY_SERVER,
    KEY_PORT,
    KEY_ADDRESS,
    KEY_HOSTS_ALLOW,
    KEY_SSL_SERVER,
    KEY_SSL_PORT,
    KEY_SSL_KEY_FILE,
    KEY_SSL_CERT_FILE,
    KEY_SSL,
    KEY_SSL_CA_FILE,
];

/// The relocation settings. String fields borrow from the parsed text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelocationConfig<'a> {
    /// `xend-relocation-server`, default `no`.
    pub server: bool,
    /// `xend-relocation-port`, default 8002.
    pub port: u16,
    /// `xend-relocation-address`, default `''` (all interfaces).
    pub address: Atom<'a>,
    /// `xend-relocation-hosts-allow`, default `''` (admit all).
    pub hosts_allow: Atom<'a>,
    /// `xend-relocation-ssl-server`, default `no`.
    pub ssl_server: bool,
    /// `xend-relocation-ssl-port`, default 8003.
    pub ssl_port: u16,
    /// `xend-relocation-server-ssl-key-file`; `None` when absent or `''`.
    pub ssl_key_file: Option<Atom<'a>>,
    /// `xend-relocation-server-ssl-cert-file`; `None` when absent or `''`.
    pub ssl_cert_file: Option<Atom<'a>>,
    /// `xend-relocation-ssl`, default `no`.
    pub ssl: bool,
    /// `relocd-relocation-ssl-ca-file`; `None` when absent or `''`.
    pub ssl_ca_file: Option<Atom<'a>>,
}

impl Default for RelocationConfig<'_> {
    /// xend's defaults (what an empty or missing file gives).
    fn default() -> Self {
        RelocationConfig {
            server: false,
            port: DEFAULT_PORT,
            address: Atom::plain(""),
            hosts_allow: Atom::plain(""),
            ssl_server: false,
            ssl_port: DEFAULT_SSL_PORT,
            ssl_key_file: None,
            ssl_cert_file: None,
            ssl: false,
            ssl_ca_file: None,
        }
    }
}

/// The value of a form, as [`get`] returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// An atom or string.
    Atom(Atom<'a>),
    /// A nested list; read it with [`Span::reader`].
    List(Span<'a>),
}

impl Item<'_> {
    /// Where the value starts.
    pub fn pos(&self) -> Pos {
        match self {
            Item::Atom(a) => a.pos().unwrap_or(Pos::START),
            Item::List(s) => s.pos,
        }
    }
}

/// One top-level form `(key value …)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key atom.
    pub key: Atom<'a>,
    /// Position of the form's `(`.
    pub pos: Pos,
    /// The value xend would use; `None` for `(key)`.
    pub value: Option<Item<'a>>,
    /// How many items follow the value (ignored by xend).
    pub extra: usize,
}

/// Something accepted but worth telling the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning<'a> {
    /// A warning from the sxp reader (an escape xend read differently).
    Syntax(sxp::Warning),
    /// A relocation key given again; like xend, the first one counts.
    DuplicateKey {
        /// The key.
        key: &'static str,
        /// The form that counts.
        first: Pos,
        /// The form ignored.
        ignored: Pos,
    },
    /// A form of a key we read has items after its value, ignored.
    ExtraValues {
        /// The key.
        key: &'static str,
        /// The form.
        pos: Pos,
    },
    /// A top-level atom, not a `(key value)` form; ignored.
    StrayAtom {
        /// The atom.
        atom: Atom<'a>,
    },
}

impl fmt::Display for ConfigWarning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::Syntax(w) => w.fmt(f),
            ConfigWarning::DuplicateKey {
                key,
                first,
                ignored,
            } => write!(
                f,
                "{ignored}: duplicate {key} ignored; the first one ({first}) counts, as in xend"
            ),
            ConfigWarning::ExtraValues { key, pos } => {
                write!(f, "{pos}: {key}: items after the first value are ignored")
            }
            ConfigWarning::StrayAtom { atom } => write!(
                f,
                "{}: '{}' is not a (key value) form; ignored",
                atom.pos().unwrap_or(Pos::START),
                atom
            ),
        }
    }
}

/// Receives [`ConfigWarning`]s.
pub trait ConfigWarningSink<'a> {
    /// Called once per warning, in input order.
    fn warn(&mut self, warning: ConfigWarning<'a>);
}

impl<'a, F: FnMut(ConfigWarning<'a>)> ConfigWarningSink<'a> for F {
    fn warn(&mut self, warning: ConfigWarning<'a>) {
        self(warning)
    }
}

impl ConfigWarningSink<'_> for sxp::IgnoreWarnings {
    fn warn(&mut self, _warning: ConfigWarning<'_>) {}
}

#[cfg(feature = "alloc")]
impl<'a> ConfigWarningSink<'a> for alloc::vec::Vec<ConfigWarning<'a>> {
    fn warn(&mut self, warning: ConfigWarning<'a>) {
        self.push(warning)
    }
}

/// Adapts a [`ConfigWarningSink`] to the reader's [`WarningSink`].
struct Syntax<'s, S>(&'s mut S);

impl<'a, S: ConfigWarningSink<'a>> WarningSink for Syntax<'_, S> {
    fn warn(&mut self, warning: sxp::Warning) {
        self.0.warn(ConfigWarning::Syntax(warning))
    }
}

/// A bad value copied into an error: decoded text, cut at
/// [`BadValue::CAPACITY`] bytes, or a list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BadValue {
    buf: [u8; BadValue::CAPACITY],
    len: u8,
    truncated: bool,
    list: bool,
}

impl BadValue {
    /// Bytes kept of a bad value.
    pub const CAPACITY: usize = 48;

    fn none() -> BadValue {
        BadValue {
            buf: [0; BadValue::CAPACITY],
            len: 0,
            truncated: false,
            list: false,
        }
    }

    fn of(item: &Item<'_>) -> BadValue {
        let mut v = BadValue::none();
        match item {
            Item::List(_) => v.list = true,
            Item::Atom(a) => {
                let mut at = 0usize;
                for c in a.chars() {
                    let n = c.len_utf8();
                    match v.buf.get_mut(at..at + n) {
                        Some(dst) => {
                            c.encode_utf8(dst);
                            at += n;
                        }
                        None => {
                            v.truncated = true;
                            break;
                        }
                    }
                }
                v.len = u8::try_from(at).unwrap_or(0);
            }
        }
        v
    }

    /// The (possibly cut) text; `None` when the value was a list.
    pub fn text(&self) -> Option<&str> {
        if self.list {
            return None;
        }
        let bytes = self.buf.get(..usize::from(self.len)).unwrap_or(&[]);
        core::str::from_utf8(bytes).ok()
    }

    /// Whether the text was cut.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            None => f.write_str("a list"),
            Some(t) => {
                write!(f, "'{}", t.escape_debug())?;
                if self.truncated {
                    f.write_str("…")?;
                }
                f.write_str("'")
            }
        }
    }
}

impl fmt::Debug for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What was wrong with a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file is not valid sxp.
    Syntax(sxp::ErrorKind),
    /// Not one of xend's booleans (`yes y 1 on true t`, `no n 0 off false f`).
    ExpectedBool,
    /// Not an integer.
    ExpectedInt,
    /// An integer, but not a port (1–65535).
    PortOutOfRange,
    /// A list where a string was expected.
    ExpectedString,
}

/// A configuration error: the key, the bad value, and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// What was wrong.
    pub kind: ConfigErrorKind,
    /// The key; `None` for syntax errors.
    pub key: Option<&'static str>,
    /// The value (empty for syntax errors).
    pub value: BadValue,
    /// Where: the value, or the syntax error.
    pub pos: Pos,
}

impl From<sxp::Error> for ConfigError {
    fn from(e: sxp::Error) -> Self {
        ConfigError {
            kind: ConfigErrorKind::Syntax(e.kind),
            key: None,
            value: BadValue::none(),
            pos: e.pos,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.unwrap_or("");
        let v = &self.value;
        match self.kind {
            ConfigErrorKind::Syntax(k) => write!(f, "{}: {}", self.pos, k),
            ConfigErrorKind::ExpectedBool => write!(
                f,
                "{}: {key}: expected yes or no (also y/n, on/off, true/false, t/f, 1/0), found {v}",
                self.pos
            ),
            ConfigErrorKind::ExpectedInt => {
                write!(f, "{}: {key}: expected a port number, found {v}", self.pos)
            }
            ConfigErrorKind::PortOutOfRange => {
                write!(f, "{}: {key}: port must be 1 to 65535, found {v}", self.pos)
            }
            ConfigErrorKind::ExpectedString => {
                write!(f, "{}: {key}: expected a string, found {v}", self.pos)
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// Reads the top-level forms of `text` one by one, without allocating.
///
/// Each call of [`Forms::next_form`] yields the next `(key …)` form; empty
/// forms `()` and forms headed by a list are skipped silently (xend never
/// matched them), top-level atoms produce [`ConfigWarning::StrayAtom`].
pub struct Forms<'a> {
    reader: Reader<'a>,
}

impl<'a> Forms<'a> {
    /// Forms of `text`.
    pub fn new(text: &'a str) -> Forms<'a> {
        Forms {
            reader: Reader::new(text),
        }
    }

    /// The next form, or `None` at the end of the text.
    pub fn next_form(
        &mut self,
        warnings: &mut impl ConfigWarningSink<'a>,
    ) -> Result<Option<Entry<'a>>, sxp::Error> {
        let mut sink = Syntax(warnings);
        loop {
            let open = match self.reader.next_event(&mut sink)? {
                None => return Ok(None),
                Some(Event::Atom(atom)) => {
                    sink.0.warn(ConfigWarning::StrayAtom { atom });
                    continue;
                }
                // The reader never yields a `)` at depth 0.
                Some(Event::Close(_)) => continue,
                Some(Event::Open(p)) => p,
            };
            let key = match self.reader.next_event(&mut sink)? {
                Some(Event::Atom(a)) => a,
                Some(Event::Open(p)) => {
                    self.reader.skip_list(p, &mut sink)?;
                    self.finish(&mut sink, open)?;
                    continue;
                }
                _ => continue, // `()`: the form is already closed.
            };
            let mut value = None;
            let mut extra = 0usize;
            let mut first_item = true;
            loop {
                let item = match self.reader.next_event(&mut sink)? {
                    None | Some(Event::Close(_)) => break,
                    Some(Event::Atom(a)) => Item::Atom(a),
                    Some(Event::Open(p)) => Item::List(self.reader.skip_list(p, &mut sink)?),
                };
                // sxp.children skips an attribute list `(@ …)` after the key.
                let is_attr = first_item && matches!(item, Item::List(s) if is_attr_list(&s));
                first_item = false;
                if is_attr {
                    continue;
                }
                if value.is_none() {
                    value = Some(item);
                } else {
                    extra += 1;
                }
            }
            return Ok(Some(Entry {
                key,
                pos: open,
                value,
                extra,
            }));
        }
    }

    /// Reads to the end of the current top-level form.
    fn finish<S: WarningSink>(&mut self, sink: &mut S, open: Pos) -> Result<(), sxp::Error> {
        while self.reader.depth() > 0 {
            if self.reader.next_event(sink)?.is_none() {
                return Err(sxp::Error {
                    kind: sxp::ErrorKind::UnterminatedList,
                    pos: open,
                });
            }
        }
        Ok(())
    }
}

fn is_attr_list(span: &Span<'_>) -> bool {
    let mut r = span.reader();
    let mut quiet = sxp::IgnoreWarnings;
    matches!(r.next_event(&mut quiet), Ok(Some(Event::Open(_))))
        && matches!(r.next_event(&mut quiet), Ok(Some(Event::Atom(a))) if a.eq_str("@"))
}

/// The first form headed by `key`, as xend's `sxp.child` finds it; the
/// whole text is checked for syntax. For `relocd-` keys and any other.
pub fn get<'a>(
    text: &'a str,
    key: &str,
    warnings: &mut impl ConfigWarningSink<'a>,
) -> Result<Option<Entry<'a>>, sxp::Error> {
    let mut forms = Forms::new(text);
    let mut found = None;
    while let Some(e) = forms.next_form(warnings)? {
        if found.is_none() && e.key.eq_str(key) {
            found = Some(e);
        }
    }
    Ok(found)
}

fn wrong(kind: ConfigErrorKind, key: &'static str, item: &Item<'_>) -> ConfigError {
    ConfigError {
        kind,
        key: Some(key),
        value: BadValue::of(item),
        pos: item.pos(),
    }
}

/// xend's `get_config_bool`, case-insensitive.
fn to_bool(key: &'static str, item: &Item<'_>) -> Result<bool, ConfigError> {
    let err = || wrong(ConfigErrorKind::ExpectedBool, key, item);
    let Item::Atom(a) = item else {
        return Err(err());
    };
    let mut buf = [0u8; 5];
    let n = a.decode_into(&mut buf).map_err(|_| err())?.len();
    let s = buf.get_mut(..n).ok_or_else(err)?;
    s.make_ascii_lowercase();
    match &*s {
        b"yes" | b"y" | b"1" | b"on" | b"true" | b"t" => Ok(true),
        b"no" | b"n" | b"0" | b"off" | b"false" | b"f" => Ok(false),
        _ => Err(err()),
    }
}

/// xend's `get_config_int` (Python `int()`), then the port range.
fn to_port(key: &'static str, item: &Item<'_>) -> Result<u16, ConfigError> {
    let not_int = || wrong(ConfigErrorKind::ExpectedInt, key, item);
    let Item::Atom(a) = item else {
        return Err(not_int());
    };
    let mut buf = [0u8; 32];
    let s = a.decode_into(&mut buf).map_err(|_| not_int())?.trim();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_int());
    }
    let mut v: u32 = 0;
    for b in digits.bytes() {
        v = v.saturating_mul(10).saturating_add(u32::from(b - b'0'));
    }
    match u16::try_from(v) {
        Ok(p) if !neg && p != 0 => Ok(p),
        _ => Err(wrong(ConfigErrorKind::PortOutOfRange, key, item)),
    }
}

fn to_string<'a>(key: &'static str, item: &Item<'a>) -> Result<Atom<'a>, ConfigError> {
    match item {
        Item::Atom(a) => Ok(*a),
        Item::List(_) => Err(wrong(ConfigErrorKind::ExpectedString, key, item)),
    }
}

impl<'a> RelocationConfig<'a> {
    /// Reads the relocation settings from the text of an
    /// `xend-config.sxp`. Missing keys take xend's defaults.
    pub fn parse(
        text: &'a str,
        warnings: &mut impl ConfigWarningSink<'a>,
    ) -> Result<RelocationConfig<'a>, ConfigError> {
        let mut cfg = RelocationConfig::default();
        let mut seen: [Option<Pos>; KEYS.len()] = [None; KEYS.len()];
        let mut forms = Forms::new(text);
        while let Some(e) = forms.next_form(warnings)? {
            let Some(i) = KEYS.iter().position(|k| e.key.eq_str(k)) else {
                continue;
            };
            let key = KEYS.get(i).copied().unwrap_or("");
            let Some(slot) = seen.get_mut(i) else {
                continue;
            };
            if let Some(first) = *slot {
                warnings.warn(ConfigWarning::DuplicateKey {
                    key,
                    first,
                    ignored: e.pos,
                });
                continue;
            }
            *slot = Some(e.pos);
            if e.extra > 0 {
                warnings.warn(ConfigWarning::ExtraValues { key, pos: e.pos });
            }
            let Some(v) = e.value else {
                continue; // `(key)`: xend's default.
            };
            match i {
                0 => cfg.server = to_bool(key, &v)?,
                1 => cfg.port = to_port(key, &v)?,
                2 => cfg.address = to_string(key, &v)?,
                3 => cfg.hosts_allow = to_string(key, &v)?,
                4 => cfg.ssl_server = to_bool(key, &v)?,
                5 => cfg.ssl_port = to_port(key, &v)?,
                6 => cfg.ssl_key_file = Some(to_string(key, &v)?).filter(|a| !a.is_empty()),
                7 => cfg.ssl_cert_file = Some(to_string(key, &v)?).filter(|a| !a.is_empty()),
                8 => cfg.ssl = to_bool(key, &v)?,
                _ => cfg.ssl_ca_file = Some(to_string(key, &v)?).filter(|a| !a.is_empty()),
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests;
