//! Protocol errors and the reasons carried on the wire.

use crate::time::Duration;
use core::fmt;
use heapless::String;
use serde::{Deserialize, Serialize};

/// Why a relocation session failed, on either side.
///
/// Small and `Copy`, like every error of the core; the host adds the peer's
/// address and the domain name when it logs one. Categories nest: the
/// variant says whose fault it is, the payload says what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent something no correct peer sends: undecodable bytes, a
    /// bad magic, counts that do not add up.
    PeerMisbehaved(Misbehavior),
    /// No common protocol version: both sides' (highest) versions.
    Incompatible {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// An input that makes no sense in the current state: a message out of
    /// order from the peer, or a `handle_*` call out of order from the host.
    InvalidInState {
        /// The state's name (`Source::state_name`/`Dest::state_name`).
        state: &'static str,
        /// The message kind or the method called.
        input: &'static str,
    },
    /// A bound was exceeded, checked before any memory was taken.
    LimitExceeded(Limit),
    /// The destination refused the migration.
    Refused(RefuseReason),
    /// The session was aborted, by the peer (received `Abort`) or locally
    /// (cancel, pre-copy policy, guest failure).
    Aborted(AbortReason),
    /// Nothing arrived from the peer in time in this state.
    Timeout {
        /// The state that timed out.
        state: &'static str,
    },
    /// The destination, while the image flows: no image bytes arrived for
    /// this long (frames that carry nothing do not count).
    NoProgress {
        /// The idle timeout that passed.
        idle: Duration,
    },
    /// The destination: the session was admitted this long ago and its
    /// image is still not complete (its limit from admission to
    /// `Prepared`).
    TransferTooLong {
        /// The limit that passed.
        limit: Duration,
    },
    /// The connection failed (EOF, reset, write error) in this state.
    LinkLost {
        /// The state the link was lost in.
        state: &'static str,
    },
    /// The peer's first bytes are not a relocd frame: whatever answers
    /// (an HTTP server, an SSH daemon, ...) does not speak relocd's
    /// relocation protocol. Every version's first frame, in either
    /// direction, is at most [`super::MAX_CONTROL_FRAME_LEN`] bytes, so a
    /// first length above that is not relocd's; nothing of the body was
    /// read.
    NotRelocd {
        /// The four bytes that stood where the first frame's length should.
        first: [u8; 4],
    },
    /// The peer lacks a protocol feature this session needs (a guest with
    /// devices to a destination that cannot take their configuration).
    MissingFeature {
        /// The feature, for people.
        feature: &'static str,
    },
}

/// What exactly the peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Misbehavior {
    /// The frame body does not decode as a control message, or has bytes
    /// left after one.
    Malformed,
    /// The hello does not start with relocd's magic.
    BadMagic,
    /// The first bytes are an S-expression: a xend-era client (`xm migrate`)
    /// speaking the old relocation protocol.
    XendProtocol,
    /// The image totals announced at its end do not match what arrived.
    ImageMismatch,
    /// A field is out of its range (empty name, zero vCPUs, unknown guest
    /// type, a live migration the hello did not negotiate).
    InvalidField,
}

/// Which bound was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// A frame header announced more bytes than this state accepts.
    FrameTooLong {
        /// The announced length.
        len: u32,
        /// The largest length accepted here.
        max: u32,
    },
    /// A caller's buffer cannot hold the frame to be written.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// An image chunk longer than [`super::MAX_IMAGE_CHUNK_LEN`].
    ChunkTooLong,
    /// A domain name longer than [`super::MAX_NAME_LEN`].
    NameTooLong,
    /// More vCPUs than [`super::MAX_VCPUS`].
    TooManyVcpus,
    /// A guest larger than [`super::MAX_P2M_SIZE`] pages.
    GuestTooLarge,
    /// More control frames queued than the outbox holds: the host did not
    /// call `poll_transmit`.
    Backlog,
    /// A detail text to encode is longer than [`MAX_DETAIL_LEN`] bytes or
    /// holds control characters (a [`Detail`] never does).
    DetailTooLong,
    /// A guest configuration over [`super::MAX_GUEST_CONFIG_LEN`] bytes.
    ConfigTooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PeerMisbehaved(m) => write!(f, "peer misbehaved: {m}"),
            Error::Incompatible { ours, theirs } => write!(
                f,
                "incompatible protocol versions: we speak {ours}, the peer speaks {theirs}"
            ),
            Error::InvalidInState { state, input } => {
                write!(f, "{input} is not valid in state {state}")
            }
            Error::LimitExceeded(l) => write!(f, "limit exceeded: {l}"),
            Error::Refused(r) => write!(f, "migration refused: {r}"),
            Error::Aborted(r) => write!(f, "migration aborted: {r}"),
            Error::Timeout { state } => write!(f, "timed out in state {state}"),
            Error::NoProgress { idle } => {
                write!(f, "no progress: no image bytes for {}", Secs(*idle))
            }
            Error::TransferTooLong { limit } => write!(
                f,
                "took longer than {} from admission to prepared",
                Secs(*limit)
            ),
            Error::LinkLost { state } => write!(f, "connection lost in state {state}"),
            Error::MissingFeature { feature } => {
                write!(f, "the peer does not support {feature}")
            }
            Error::NotRelocd { first } if matches!(first, [0x14..=0x17, 0x03, ..]) => write!(
                f,
                "the peer speaks TLS, not plain relocd (its first bytes are a TLS record, \
                 \"{}\"): use the TLS relocation port with TLS (migrate --ssl), or the \
                 plain port without it",
                first.escape_ascii()
            ),
            Error::NotRelocd { first } => write!(
                f,
                "the peer does not speak relocd's relocation protocol \
                 (its first bytes are \"{}\")",
                first.escape_ascii()
            ),
        }
    }
}

impl fmt::Display for Misbehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misbehavior::Malformed => "malformed control message",
            Misbehavior::BadMagic => "bad magic in hello (not a relocd peer)",
            Misbehavior::XendProtocol => {
                "xend's old relocation protocol (xm migrate); relocd speaks its own"
            }
            Misbehavior::ImageMismatch => "image totals do not match the data received",
            Misbehavior::InvalidField => "field out of range",
        })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::FrameTooLong { len, max } => {
                write!(f, "frame of {len} bytes, at most {max} accepted here")
            }
            Limit::BufferTooSmall { needed } => {
                write!(f, "buffer too small, {needed} bytes needed")
            }
            Limit::ChunkTooLong => f.write_str("image chunk too long"),
            Limit::NameTooLong => f.write_str("domain name too long"),
            Limit::TooManyVcpus => f.write_str("too many vCPUs"),
            Limit::GuestTooLarge => f.write_str("guest too large"),
            Limit::Backlog => f.write_str("control frames not drained"),
            Limit::DetailTooLong => f.write_str("detail text too long or not plain text"),
            Limit::ConfigTooLong => f.write_str("guest configuration too long"),
        }
    }
}

/// A timeout for people: `30 s`, `1800 s`, `250 ms`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{} s", ms / 1000)
        } else {
            write!(f, "{ms} ms")
        }
    }
}

impl core::error::Error for Error {}
impl core::error::Error for Misbehavior {}
impl core::error::Error for Limit {}

/// Defines an open `u16` wire enum: known codes plus `Unknown(u16)`, with
/// lossless conversions and serde through the raw code.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr => $text:expr, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "u16", into = "u16")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code this version does not know (kept as is).
            Unknown(u16),
        }

        impl From<u16> for $name {
            fn from(v: u16) -> Self {
                match v {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u16 {
            fn from(v: $name) -> u16 {
                match v {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$variant => f.write_str($text), )+
                    $name::Unknown(c) => write!(f, "unknown reason {c}"),
                }
            }
        }
    };
}

open_enum! {
    /// Why a destination refuses a migration (admission or hello).
    pub enum RefuseReason {
        /// Not enough free memory or vCPUs for the guest.
        NoCapacity = 1 => "no capacity for the guest on the destination",
        /// A domain with that name (or UUID) already exists there.
        NameTaken = 2 => "a domain with that name already exists on the destination",
        /// The destination's concurrent-migration limit is reached.
        TooManyMigrations = 3 => "too many migrations in progress on the destination",
        /// The destination's policy forbids it.
        NotAllowed = 4 => "not allowed by the destination's policy",
        /// The request was malformed or out of bounds.
        Invalid = 5 => "invalid admission request",
        /// The guest type or a requested mode is not supported there.
        Unsupported = 6 => "guest type or mode not supported by the destination",
        /// The destination daemon is shutting down.
        ShuttingDown = 7 => "the destination is shutting down",
        /// Too many connections are waiting for admission at the
        /// destination (a flood, or a burst of migrations); it answered
        /// before reading the hello. Trying again later may succeed.
        Busy = 8 => "the destination is busy: too many connections awaiting admission",
        /// A device of the guest cannot be set up there: a bridge, a
        /// disk or a hotplug script it needs is missing.
        DeviceUnavailable = 9 => "a device of the guest cannot be set up on the destination",
    }
}

open_enum! {
    /// Why a side aborts a session it had started.
    pub enum AbortReason {
        /// The operator cancelled (Ctrl-C).
        Cancelled = 1 => "cancelled",
        /// The guest dirties memory faster than the link sends
        /// (`--abort-if-busy`).
        Busy = 2 => "guest too busy to converge",
        /// The source could not read the guest or its state.
        SourceFailed = 3 => "source-side failure",
        /// The destination could not build, journal or start the guest.
        DestFailed = 4 => "destination-side failure",
        /// The sender stopped hearing from the peer in time.
        Timeout = 5 => "timeout",
        /// The sender received something it could not accept.
        ProtocolError = 6 => "protocol error",
        /// The image did not decode (the stream layer refused it).
        BadImage = 7 => "bad migration image",
        /// The destination's limit from admission to a complete image
        /// (`Timeouts::transfer`) passed.
        TransferTooLong = 8 => "the migration took longer than the destination allows",
        /// The peer lacks a feature the session needs (a guest with
        /// devices, a destination that cannot recreate them).
        Unsupported = 9 => "the peer lacks a feature this guest needs",
    }
}

/// Longest [`Detail`] text: bytes of UTF-8 (about two lines of a terminal).
pub const MAX_DETAIL_LEN: usize = 200;

/// A short human-readable text that goes with a refusal or an abort, for
/// the peer's operator: `not enough free memory for web1 (needs 129 MiB,
/// has 64 MiB)`, `writing pages: ...`.
///
/// At most [`MAX_DETAIL_LEN`] bytes of UTF-8 without control characters,
/// by construction: [`Detail::new`] truncates longer text on a character
/// boundary (ending it with `…`) and turns control characters (newlines,
/// terminal escapes) into spaces. A receiver refuses a detail on the wire
/// that breaks either rule as malformed, so what it shows its operator is
/// always one plain line. Empty means "no detail"; the reason's own text
/// stands then.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Detail(String<MAX_DETAIL_LEN>);

impl Detail {
    /// No detail.
    pub const fn empty() -> Detail {
        Detail(String::new())
    }

    /// `text`, made a valid detail: truncated on a character boundary
    /// (ending with `…`) if longer than [`MAX_DETAIL_LEN`] bytes, control
    /// characters replaced by spaces.
    pub fn new(text: &str) -> Detail {
        Detail::from_fmt(format_args!("{text}"))
    }

    /// The formatted text, made a valid detail as by [`Detail::new`];
    /// formatting stops (without allocating) once the text is full.
    pub fn from_fmt(args: fmt::Arguments<'_>) -> Detail {
        let mut b = Builder {
            text: String::new(),
            full: false,
        };
        // `Builder` never fails; a `Display` impl that does leaves what
        // was written so far, which is still a valid detail.
        let _ = fmt::write(&mut b, args);
        if b.full {
            let room = MAX_DETAIL_LEN - '…'.len_utf8();
            while b.text.len() > room {
                b.text.pop();
            }
            let _ = b.text.push('…');
        }
        Detail(b.text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether there is no detail.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `text` may stand as a detail on the wire: at most
    /// [`MAX_DETAIL_LEN`] bytes, no control characters and no invisible
    /// formatting ones (bidirectional overrides, zero-width characters),
    /// which could make the operator's terminal show other words than
    /// those sent.
    pub fn is_valid(text: &str) -> bool {
        text.len() <= MAX_DETAIL_LEN && !text.chars().any(unprintable)
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A character a detail may not carry: a control character, or one of
/// Unicode's invisible format characters that reorder or hide text (the
/// bidirectional embeddings, overrides and isolates, zero-width spaces and
/// joiners, the byte-order mark, soft hyphen, word joiner).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Gathers a detail text, truncating and cleaning as it goes.
struct Builder {
    text: String<MAX_DETAIL_LEN>,
    full: bool,
}

impl fmt::Write for Builder {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.full {
                break;
            }
            let c = if unprintable(c) { ' ' } else { c };
            if self.text.push(c).is_err() {
                self.full = true;
            }
        }
        Ok(())
    }
}
