//! Control messages and their framing.
//!
//! A frame is `[u32 length, big-endian][body]`; the body is one [`Msg`]
//! encoded with postcard, with nothing after it. The length is checked
//! against the receiver's current bound ([`frame_len`]) before a byte of the
//! body is read, so a peer cannot make the host allocate more than
//! [`MAX_CONTROL_FRAME_LEN`] before admission, or more than
//! [`MAX_FRAME_LEN`] ever.
//!
//! `Refused` and `Abort` carry a typed reason and a short detail text
//! ([`Detail`]: at most [`MAX_DETAIL_LEN`] bytes of UTF-8, no control
//! characters); [`decode`] refuses a detail that breaks either rule as
//! malformed, so a peer cannot make the host print more, or print escapes.
//!
//! Image chunks are the one large message. To spare a copy of up to 4 MiB,
//! the sender writes [`image_header`] and then the payload straight from
//! its record buffer: the two together are byte for byte the postcard
//! encoding of `Msg::Image(payload)`, which the receiver decodes zero-copy.

use super::error::{AbortReason, Detail, Error, Limit, Misbehavior, RefuseReason, MAX_DETAIL_LEN};
use serde::{Deserialize, Serialize};

/// The first four bytes of a hello: `RLCD`.
pub const MAGIC: [u8; 4] = *b"RLCD";

/// Bytes of the frame length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest body of any control message other than an image chunk.
pub const MAX_CONTROL_FRAME_LEN: usize = 256;

// The largest `Refused`/`Abort` (tag, a `u16` varint, the detail's length
// varint and text) is a control frame.
const _: () = assert!(1 + 3 + 2 + MAX_DETAIL_LEN <= MAX_CONTROL_FRAME_LEN);

/// Largest image chunk payload: one `PAGE_DATA` record of
/// [`crate::precopy::MAX_BATCH_SIZE`] pages with room to spare for small
/// records sharing the chunk.
pub const MAX_IMAGE_CHUNK_LEN: usize = 4 * 1024 * 1024 + 64 * 1024;
const _: () = assert!(MAX_IMAGE_CHUNK_LEN >= crate::precopy::MAX_PAGE_DATA_RECORD_LEN);

/// Largest [`Msg::GuestConfig`] payload: libxl's JSON configuration of a
/// guest with a few dozen devices takes a few KiB.
pub const MAX_GUEST_CONFIG_LEN: usize = 64 * 1024;

/// Largest frame body of a [`Msg::GuestConfig`]: the payload with its tag
/// and length varint.
pub const MAX_GUEST_CONFIG_FRAME_LEN: usize = MAX_GUEST_CONFIG_LEN + 16;

/// Largest frame body: an image chunk with its tag and length varint.
pub const MAX_FRAME_LEN: usize = MAX_IMAGE_CHUNK_LEN + 16;
const _: () = assert!(MAX_FRAME_LEN <= u32::MAX as usize);

/// Room [`image_header`] needs: length prefix, tag, length varint.
pub const IMAGE_HEADER_MAX: usize = FRAME_HEADER_LEN + 1 + 10;

/// Longest domain name accepted (bytes of UTF-8).
pub const MAX_NAME_LEN: usize = 64;
/// Most vCPUs a guest may have (Xen's `HVM_MAX_VCPUS` is 128, PV allows
/// more; this bounds what a peer can ask for).
pub const MAX_VCPUS: u32 = 4096;
/// Largest `p2m_size` accepted: 2^36 pages, 256 TiB.
pub const MAX_P2M_SIZE: u64 = 1 << 36;

/// Feature bits of the hello; the session uses the intersection of both
/// sides'. Unknown bits are ignored, which is how new features are added
/// without a version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Features(pub u32);

impl Features {
    /// Live migration: the destination accepts pages sent more than once
    /// and round markers.
    pub const LIVE: Features = Features(1 << 0);
    /// Image chunks may travel packed (a tag octet, then the chunk as it is
    /// or as an LZ4 block with its length; the host's session layer packs
    /// and unpacks, the image inside is unchanged). A destination offers
    /// it; a source asks for it when its user does (`migrate --compress`),
    /// as packing pays on slow links and costs CPU time on fast ones.
    pub const COMPRESS: Features = Features(1 << 1);
    /// The guest's device configuration travels with it: the source may
    /// send one [`Msg::GuestConfig`] (libxl's JSON domain configuration, at
    /// most [`MAX_GUEST_CONFIG_LEN`] bytes) between the hello and the
    /// admission request, and the destination recreates the guest's
    /// network and disk backends from it. A source whose guest has devices
    /// does not migrate it to a destination without this feature.
    pub const GUEST_CONFIG: Features = Features(1 << 2);
    /// All-zero pages may travel as a marker: an image chunk whose pages
    /// are partly zeros goes with a bitmap of them and without their 4 KiB
    /// each (a tag octet before every chunk, as with [`Self::COMPRESS`];
    /// the host's session layer elides and restores the zeros, the image
    /// inside is unchanged). On by default where both ends offer it.
    pub const ZERO_PAGES: Features = Features(1 << 3);
    /// The guest's scheduling parameters travel with it ([`Msg::Sched`]),
    /// so the destination's domain gets its weight and cap (never a
    /// throttle auto-converge applied).
    pub const SCHED: Features = Features(1 << 4);
    /// Everything this version implements.
    pub const ALL: Features = Features(
        Features::LIVE.0
            | Features::COMPRESS.0
            | Features::GUEST_CONFIG.0
            | Features::ZERO_PAGES.0
            | Features::SCHED.0,
    );

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
    /// Bits set in both.
    pub const fn intersect(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }
}

/// Source → destination, first frame. Its encoding is frozen for ever (see
/// "Protocol versioning" in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// Lowest protocol version the source speaks.
    pub min_version: u16,
    /// Highest protocol version the source speaks.
    pub max_version: u16,
    /// The source's feature bits.
    pub features: Features,
}

/// Destination → source: the version and features the session will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    /// The chosen version: the highest both speak.
    pub version: u16,
    /// The intersection of both sides' features.
    pub features: Features,
}

/// Destination → source: no common version. Frozen like [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRefused {
    /// Lowest version the destination speaks.
    pub min_version: u16,
    /// Highest version the destination speaks.
    pub max_version: u16,
}

/// Source → destination: what is coming, for the admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admit<'a> {
    /// The session's identifier, chosen by the source; both journals use it.
    pub session: u64,
    /// The domain's name.
    pub name: &'a str,
    /// The domain's UUID.
    pub uuid: [u8; 16],
    /// Memory the guest needs, in bytes.
    pub memory_bytes: u64,
    /// One more than its highest pfn.
    pub p2m_size: u64,
    /// Its vCPUs.
    pub vcpus: u32,
    /// Xen's domain-header guest type: 1 = x86 PV, 2 = x86 HVM.
    pub guest_type: u32,
    /// Live (pre-copy rounds while it runs) or offline.
    pub live: bool,
}

/// Destination → source: the migration is refused. Its encoding is frozen
/// from version 2 on, so a destination may send it before it has read the
/// hello (busy, shutting down) and any later source can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused<'a> {
    /// Why, as a code.
    pub reason: RefuseReason,
    /// What exactly, for the source's operator (empty: nothing to add);
    /// see [`Detail`].
    pub detail: &'a str,
}

/// Either way: the session is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort<'a> {
    /// Why, as a code.
    pub reason: AbortReason,
    /// What exactly, for the peer's operator (empty: nothing to add); see
    /// [`Detail`].
    pub detail: &'a str,
}

impl<'a> Refused<'a> {
    /// A refusal for `reason` with `detail`. The machines take it as it
    /// is and make the detail valid ([`Detail::new`]) before sending.
    pub const fn new(reason: RefuseReason, detail: &'a str) -> Self {
        Refused { reason, detail }
    }
}

/// A refusal with no detail: the reason's text stands.
impl From<RefuseReason> for Refused<'static> {
    fn from(reason: RefuseReason) -> Self {
        Refused { reason, detail: "" }
    }
}

impl<'a> Abort<'a> {
    /// An abort for `reason` with `detail`. The machines take it as it is
    /// and make the detail valid ([`Detail::new`]) before sending.
    pub const fn new(reason: AbortReason, detail: &'a str) -> Self {
        Abort { reason, detail }
    }
}

/// An abort with no detail: the reason's text stands.
impl From<AbortReason> for Abort<'static> {
    fn from(reason: AbortReason) -> Self {
        Abort { reason, detail: "" }
    }
}

/// Source → destination after each live round: progress, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundEnd {
    /// The round just sent (from 1).
    pub round: u32,
    /// Pages sent in it.
    pub pages: u64,
    /// Pages left dirty after it.
    pub dirty: u64,
}

/// Source → destination: the image is complete; the totals let the
/// destination check that nothing was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEnd {
    /// Image chunks sent.
    pub chunks: u64,
    /// Payload bytes in them.
    pub bytes: u64,
}

/// Source → destination, with [`Features::SCHED`]: the guest's scheduling
/// parameters as it had them before any throttle (Xen's credit and
/// credit2 weight and cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sched {
    /// Relative CPU share, 1 to 65535 (Xen's default 256).
    pub weight: u16,
    /// Ceiling, percent of one physical CPU for the whole domain; 0: none.
    pub cap: u16,
}

/// A control message. Variant order is the wire tag: never reorder, only
/// append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg<'a> {
    /// Tag 0, frozen. S → D.
    Hello(Hello),
    /// Tag 1, frozen. D → S.
    HelloAck(HelloAck),
    /// Tag 2, frozen. D → S.
    VersionRefused(VersionRefused),
    /// S → D.
    #[serde(borrow)]
    Admit(Admit<'a>),
    /// D → S: admitted; an empty paused domain is waiting for the image.
    Admitted,
    /// D → S: refused, with the reason and a detail. Frozen from version 2
    /// on (see [`Refused`]).
    #[serde(borrow)]
    Refused(Refused<'a>),
    /// S → D: a chunk of the migration image (libxc stream bytes, whole
    /// records).
    Image(&'a [u8]),
    /// S → D: end of a live round.
    RoundEnd(RoundEnd),
    /// S → D: the guest is suspended; stop-and-copy has begun.
    Suspended,
    /// S → D: the image is complete.
    ImageEnd(ImageEnd),
    /// D → S: I hold a complete, paused copy and can run it on commit.
    Prepared,
    /// S → D: the commit is journaled at the source; run the guest.
    Commit,
    /// D → S: the guest runs here; destroy yours.
    Committed,
    /// Either way: the session is off, with the reason and a detail. From
    /// the destination, it also promises that its copy will never run.
    #[serde(borrow)]
    Abort(Abort<'a>),
    /// Tag 14. S → D, at most once, right before `Admit`, only when both
    /// offered [`Features::GUEST_CONFIG`]: the guest's device
    /// configuration (libxl's JSON domain configuration, UTF-8, at most
    /// [`MAX_GUEST_CONFIG_LEN`] bytes).
    GuestConfig(&'a [u8]),
    /// Tag 15. S → D, with [`Features::SCHED`], once, while the image
    /// flows and before `Suspended`: the guest's scheduling parameters.
    Sched(Sched),
}

/// The wire tag of `Msg::Image` (its variant index).
const IMAGE_TAG: u8 = 6;

impl Msg<'_> {
    /// The message kind, for logs and errors.
    pub const fn name(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "Hello",
            Msg::HelloAck(_) => "HelloAck",
            Msg::VersionRefused(_) => "VersionRefused",
            Msg::Admit(_) => "Admit",
            Msg::Admitted => "Admitted",
            Msg::Refused(_) => "Refused",
            Msg::Image(_) => "Image",
            Msg::RoundEnd(_) => "RoundEnd",
            Msg::Suspended => "Suspended",
            Msg::ImageEnd(_) => "ImageEnd",
            Msg::Prepared => "Prepared",
            Msg::Commit => "Commit",
            Msg::Committed => "Committed",
            Msg::Abort(_) => "Abort",
            Msg::GuestConfig(_) => "GuestConfig",
            Msg::Sched(_) => "Sched",
        }
    }

    /// The detail text the message carries, if it is a refusal or an abort.
    pub const fn detail(&self) -> Option<&str> {
        match self {
            Msg::Refused(r) => Some(r.detail),
            Msg::Abort(a) => Some(a.detail),
            _ => None,
        }
    }
}

/// Encodes `msg` as a whole frame (length prefix and body) into `out` and
/// returns the frame's length.
///
/// A detail text that [`decode`] would refuse (see [`Detail`]) is not
/// encoded: [`Limit::DetailTooLong`].
pub fn encode(msg: &Msg<'_>, out: &mut [u8]) -> Result<usize, Error> {
    if msg.detail().is_some_and(|d| !Detail::is_valid(d)) {
        return Err(Error::LimitExceeded(Limit::DetailTooLong));
    }
    let too_small = Error::LimitExceeded(Limit::BufferTooSmall {
        needed: out.len().saturating_add(1),
    });
    let Some(body_buf) = out.get_mut(FRAME_HEADER_LEN..) else {
        return Err(too_small);
    };
    let body_len = match postcard::to_slice(msg, body_buf) {
        Ok(b) => b.len(),
        Err(_) => return Err(too_small),
    };
    if body_len > MAX_FRAME_LEN {
        return Err(Error::LimitExceeded(Limit::ChunkTooLong));
    }
    let len = u32::try_from(body_len).map_err(|_| Error::LimitExceeded(Limit::ChunkTooLong))?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(FRAME_HEADER_LEN + body_len)
}

/// Checks a frame's length prefix against `max` (the receiver's current
/// bound) and returns the body length. Recognises a xend-era client, whose
/// first bytes are an S-expression.
pub fn frame_len(header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, Error> {
    if header[0] == b'(' && header[1..].iter().all(|b| b.is_ascii_alphabetic()) {
        return Err(Error::PeerMisbehaved(Misbehavior::XendProtocol));
    }
    let len = u32::from_be_bytes(header);
    let max32 = u32::try_from(max.min(MAX_FRAME_LEN)).unwrap_or(u32::MAX);
    if len > max32 {
        return Err(Error::LimitExceeded(Limit::FrameTooLong {
            len,
            max: max32,
        }));
    }
    if len == 0 {
        return Err(Error::PeerMisbehaved(Misbehavior::Malformed));
    }
    Ok(len as usize)
}

/// Checks the length prefix of the first frame from a peer, before
/// anything else of the session was read: like [`frame_len`] with the
/// control bound, except that a length above it means the peer does not
/// speak relocd's protocol at all ([`Error::NotRelocd`]). Every version's
/// first frame in either direction (`Hello`; `HelloAck`, `VersionRefused`
/// or `Refused`) is a control frame, so an HTTP server's `HTTP/1.1 400`
/// is told apart from an oversize relocd frame by its first four bytes.
pub fn first_frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, Error> {
    match frame_len(header, MAX_CONTROL_FRAME_LEN) {
        Err(Error::LimitExceeded(Limit::FrameTooLong { .. })) => {
            Err(Error::NotRelocd { first: header })
        }
        r => r,
    }
}

/// Decodes a frame body (without its length prefix). Borrowed fields
/// (`Admit::name`, `Image` payload, detail texts) point into `body`. A
/// detail text that is not valid UTF-8, is longer than
/// [`MAX_DETAIL_LEN`] or holds control characters makes the message
/// malformed.
pub fn decode(body: &[u8]) -> Result<Msg<'_>, Error> {
    match postcard::take_from_bytes::<Msg<'_>>(body) {
        Ok((msg, [])) if msg.detail().is_none_or(Detail::is_valid) => Ok(msg),
        _ => Err(Error::PeerMisbehaved(Misbehavior::Malformed)),
    }
}

/// Writes the frame header of an image chunk of `payload_len` bytes into
/// `out` and returns its length; the payload follows it on the wire.
pub fn image_header(payload_len: usize, out: &mut [u8; IMAGE_HEADER_MAX]) -> Result<usize, Error> {
    if payload_len > MAX_IMAGE_CHUNK_LEN {
        return Err(Error::LimitExceeded(Limit::ChunkTooLong));
    }
    let mut varint = [0u8; 10];
    let mut n = 0;
    let mut v = payload_len as u64;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            varint[n] = byte;
            n += 1;
            break;
        }
        varint[n] = byte | 0x80;
        n += 1;
    }
    let body_len = 1 + n + payload_len;
    let len = u32::try_from(body_len).map_err(|_| Error::LimitExceeded(Limit::ChunkTooLong))?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out[FRAME_HEADER_LEN] = IMAGE_TAG;
    out[FRAME_HEADER_LEN + 1..FRAME_HEADER_LEN + 1 + n].copy_from_slice(&varint[..n]);
    Ok(FRAME_HEADER_LEN + 1 + n)
}

/// Reads the start of a frame body, `head`, of a frame whose body is
/// `body_len` bytes: `Some(offset)` when it is an image chunk whose
/// payload begins at `offset` and runs to the body's end, as [`decode`]
/// would read it. Lets a receiver read the payload itself (straight into
/// where it goes) and feed only its length to the state machine. `None`
/// for anything else, including a payload length in a form [`decode`]
/// might judge otherwise (not the shortest varint): such a body is read
/// whole and decoded as usual.
pub fn image_payload_offset(head: &[u8], body_len: usize) -> Option<usize> {
    let (&tag, rest) = head.split_first()?;
    if tag != IMAGE_TAG {
        return None;
    }
    // The length's varint: at most 4 bytes up to MAX_IMAGE_CHUNK_LEN.
    let mut len = 0usize;
    for (i, &b) in rest.iter().take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // The shortest form: no final zero byte after the first.
            if i > 0 && b == 0 {
                return None;
            }
            let offset = 2 + i;
            return (len <= MAX_IMAGE_CHUNK_LEN && offset.checked_add(len) == Some(body_len))
                .then_some(offset);
        }
    }
    None
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn all_messages(payload: &[u8]) -> Vec<Msg<'_>> {
        vec![
            Msg::Hello(Hello {
                magic: MAGIC,
                min_version: 1,
                max_version: 1,
                features: Features::ALL,
            }),
            Msg::HelloAck(HelloAck {
                version: 1,
                features: Features::LIVE,
            }),
            Msg::VersionRefused(VersionRefused {
                min_version: 2,
                max_version: 3,
            }),
            Msg::Admit(Admit {
                session: u64::MAX,
                name: "web1-with-a-name-of-sixty-four-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxx",
                uuid: [0xab; 16],
                memory_bytes: u64::MAX,
                p2m_size: MAX_P2M_SIZE,
                vcpus: MAX_VCPUS,
                guest_type: u32::MAX,
                live: true,
            }),
            Msg::Admitted,
            Msg::Refused(Refused {
                reason: RefuseReason::NameTaken,
                detail: "",
            }),
            Msg::Refused(Refused {
                reason: RefuseReason::Unknown(999),
                detail: LONGEST_DETAIL,
            }),
            Msg::Refused(Refused {
                reason: RefuseReason::Busy,
                detail: "ünïcödé ✓",
            }),
            Msg::Image(payload),
            Msg::RoundEnd(RoundEnd {
                round: 3,
                pages: 1 << 40,
                dirty: 17,
            }),
            Msg::Suspended,
            Msg::ImageEnd(ImageEnd {
                chunks: 12,
                bytes: 1 << 33,
            }),
            Msg::Prepared,
            Msg::Commit,
            Msg::Committed,
            Msg::Abort(Abort {
                reason: AbortReason::Busy,
                detail: "",
            }),
            Msg::Abort(Abort {
                reason: AbortReason::Unknown(u16::MAX),
                detail: LONGEST_DETAIL,
            }),
            Msg::GuestConfig(payload),
            Msg::Sched(Sched {
                weight: 256,
                cap: u16::MAX,
            }),
        ]
    }

    /// A detail of exactly [`MAX_DETAIL_LEN`] bytes, multi-byte characters
    /// included.
    const LONGEST_DETAIL: &str = "writing pages: é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é\
        -é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é-é\
        -é-é-é-é-é-é-é-xxxxx";
    const _: () = assert!(LONGEST_DETAIL.len() == MAX_DETAIL_LEN);

    #[test]
    fn every_message_round_trips() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut buf = vec![0u8; 1024];
        for msg in all_messages(&payload) {
            let n = encode(&msg, &mut buf).unwrap();
            let len = frame_len(buf[..4].try_into().unwrap(), MAX_FRAME_LEN).unwrap();
            assert_eq!(len + 4, n, "{}", msg.name());
            if !matches!(msg, Msg::Image(_) | Msg::GuestConfig(_)) {
                assert!(
                    len <= MAX_CONTROL_FRAME_LEN,
                    "{} is {len} bytes",
                    msg.name()
                );
            }
            assert_eq!(decode(&buf[4..n]).unwrap(), msg);
        }
    }

    #[test]
    fn guest_config_has_tag_14_and_its_own_bound() {
        let cfg = br#"{"c_info":{"name":"web1"}}"#;
        let mut buf = [0u8; 64];
        let n = encode(&Msg::GuestConfig(cfg), &mut buf).unwrap();
        assert_eq!(buf[4], 14);
        assert_eq!(usize::from(buf[5]), cfg.len());
        assert_eq!(decode(&buf[4..n]).unwrap(), Msg::GuestConfig(cfg));
        // The largest one fits its frame bound, and the control bound
        // does not take it.
        let big = vec![b'x'; MAX_GUEST_CONFIG_LEN];
        let mut buf = vec![0u8; MAX_GUEST_CONFIG_FRAME_LEN + 4];
        let n = encode(&Msg::GuestConfig(&big), &mut buf).unwrap();
        let hdr: [u8; 4] = buf[..4].try_into().unwrap();
        assert_eq!(frame_len(hdr, MAX_GUEST_CONFIG_FRAME_LEN).unwrap() + 4, n);
        assert!(frame_len(hdr, MAX_CONTROL_FRAME_LEN).is_err());
    }

    #[test]
    fn sched_is_tag_15() {
        let mut buf = [0u8; 16];
        let n = encode(
            &Msg::Sched(Sched {
                weight: 256,
                cap: 50,
            }),
            &mut buf,
        )
        .unwrap();
        // Tag 15, weight 256 as a varint (0x80 0x02), cap 50.
        assert_eq!(&buf[..n], &[0, 0, 0, 4, 15, 0x80, 0x02, 50]);
    }

    #[test]
    fn frozen_encodings() {
        // The hello and the version refusal must stay readable by every
        // future version: pin their bytes.
        let mut buf = [0u8; 64];
        let hello = Msg::Hello(Hello {
            magic: MAGIC,
            min_version: 1,
            max_version: 1,
            features: Features(1),
        });
        let n = encode(&hello, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0, 8, 0, b'R', b'L', b'C', b'D', 1, 1, 1]);
        let n = encode(
            &Msg::VersionRefused(VersionRefused {
                min_version: 1,
                max_version: 300,
            }),
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0, 4, 2, 1, 0xac, 0x02]);
    }

    #[test]
    fn image_header_matches_postcard() {
        for len in [0usize, 1, 127, 128, 300, 16383, 16384, MAX_IMAGE_CHUNK_LEN] {
            let payload = vec![0x5au8; len];
            let mut whole = vec![0u8; len + 32];
            let n = encode(&Msg::Image(&payload), &mut whole).unwrap();
            let mut hdr = [0u8; IMAGE_HEADER_MAX];
            let h = image_header(len, &mut hdr).unwrap();
            assert_eq!(&hdr[..h], &whole[..h], "len {len}");
            assert_eq!(h + len, n);
            assert_eq!(decode(&whole[4..n]).unwrap(), Msg::Image(&payload));
        }
        let mut hdr = [0u8; IMAGE_HEADER_MAX];
        assert_eq!(
            image_header(MAX_IMAGE_CHUNK_LEN + 1, &mut hdr),
            Err(Error::LimitExceeded(Limit::ChunkTooLong))
        );
    }

    #[test]
    fn an_image_payload_is_found_where_decode_finds_it() {
        // Every image length form, and every other message: the offset is
        // given exactly when decode reads an image, and points at its payload.
        let payloads: Vec<Vec<u8>> = [0usize, 1, 127, 128, 16384, MAX_IMAGE_CHUNK_LEN]
            .iter()
            .map(|&n| vec![0xa5u8; n])
            .collect();
        let mut msgs: Vec<Msg<'_>> = payloads.iter().map(|p| Msg::Image(p)).collect();
        msgs.extend(all_messages(&payloads[1]));
        for m in msgs {
            let mut whole = vec![0u8; MAX_IMAGE_CHUNK_LEN + 64];
            let n = encode(&m, &mut whole).unwrap();
            let body = &whole[4..n];
            let head = &body[..body.len().min(6)];
            match (
                decode(body).unwrap(),
                image_payload_offset(head, body.len()),
            ) {
                (Msg::Image(p), Some(k)) => assert_eq!(&body[k..], p),
                (Msg::Image(_), None) => panic!("an image not found"),
                (other, Some(_)) => panic!("{} taken for an image", other.name()),
                (_, None) => {}
            }
        }
        // The body's length must be the payload's end; a length above the
        // bound, a varint cut short or not in its shortest form: no.
        assert_eq!(image_payload_offset(&[IMAGE_TAG, 3], 5), Some(2));
        assert_eq!(image_payload_offset(&[IMAGE_TAG, 3], 6), None);
        assert_eq!(image_payload_offset(&[IMAGE_TAG, 0x83, 0x00], 6), None);
        assert_eq!(image_payload_offset(&[IMAGE_TAG, 0x80], 2), None);
        assert_eq!(
            image_payload_offset(&[IMAGE_TAG, 0xff, 0xff, 0xff, 0x7f], 1 << 29),
            None
        );
        assert_eq!(image_payload_offset(&[], 0), None);
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert_eq!(
            frame_len([0, 0, 1, 1], MAX_CONTROL_FRAME_LEN),
            Err(Error::LimitExceeded(Limit::FrameTooLong {
                len: 257,
                max: 256
            }))
        );
        assert_eq!(
            frame_len([0xff; 4], usize::MAX),
            Err(Error::LimitExceeded(Limit::FrameTooLong {
                len: u32::MAX,
                max: MAX_FRAME_LEN as u32
            }))
        );
        assert_eq!(
            frame_len(*b"(rec", MAX_FRAME_LEN),
            Err(Error::PeerMisbehaved(Misbehavior::XendProtocol))
        );
        assert_eq!(
            frame_len([0; 4], MAX_FRAME_LEN),
            Err(Error::PeerMisbehaved(Misbehavior::Malformed))
        );
        let malformed = Err(Error::PeerMisbehaved(Misbehavior::Malformed));
        assert_eq!(decode(&[]), malformed);
        assert_eq!(decode(&[200]), malformed); // unknown tag
        assert_eq!(decode(&[4, 0]), malformed); // trailing byte
        assert_eq!(decode(&[6, 5, 1, 2]), malformed); // short image
        assert_eq!(decode(&[3, 1, 0xff]), malformed); // truncated admit
                                                      // A buffer too small to encode into.
        let mut tiny = [0u8; 3];
        assert!(matches!(
            encode(&Msg::Commit, &mut tiny),
            Err(Error::LimitExceeded(Limit::BufferTooSmall { .. }))
        ));
        let mut five = [0u8; 5];
        assert!(matches!(
            encode(
                &Msg::Abort(Abort {
                    reason: AbortReason::Busy,
                    detail: ""
                }),
                &mut five
            ),
            Err(Error::LimitExceeded(Limit::BufferTooSmall { .. }))
        ));
    }

    #[test]
    fn refused_encoding_is_frozen() {
        // A destination may refuse before it reads the hello (busy,
        // shutting down): every source from version 2 on must read these
        // bytes.
        let mut buf = [0u8; 64];
        let n = encode(
            &Msg::Refused(Refused {
                reason: RefuseReason::Busy,
                detail: "busy",
            }),
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0, 7, 5, 8, 4, b'b', b'u', b's', b'y']);
    }

    #[test]
    fn details_are_bounded_plain_text() {
        let mut buf = vec![0u8; 1024];
        // One byte too many: the sender cannot encode it, and a receiver
        // that gets it (from a peer that wrote it by hand) calls it
        // malformed.
        let long = std::format!("{LONGEST_DETAIL}!");
        for m in [
            Msg::Refused(Refused {
                reason: RefuseReason::NoCapacity,
                detail: &long,
            }),
            Msg::Abort(Abort {
                reason: AbortReason::DestFailed,
                detail: "two\nlines",
            }),
            Msg::Abort(Abort {
                reason: AbortReason::DestFailed,
                detail: "\u{1b}[2Jcleared",
            }),
        ] {
            assert_eq!(
                encode(&m, &mut buf),
                Err(Error::LimitExceeded(Limit::DetailTooLong)),
                "{m:?}"
            );
        }
        let malformed = Err(Error::PeerMisbehaved(Misbehavior::Malformed));
        // Tag 5 (Refused), reason 1, then the detail's length and bytes.
        let mut body = vec![5, 1, 0xc9, 0x01];
        body.extend_from_slice(long.as_bytes());
        assert_eq!(long.len(), 201);
        assert_eq!(decode(&body), malformed);
        // The longest allowed still decodes.
        let n = encode(
            &Msg::Refused(Refused {
                reason: RefuseReason::NoCapacity,
                detail: LONGEST_DETAIL,
            }),
            &mut buf,
        )
        .unwrap();
        assert!(n - 4 <= MAX_CONTROL_FRAME_LEN);
        assert!(decode(&buf[4..n]).is_ok());
        // Invalid UTF-8 (a lone continuation byte, a truncated sequence).
        assert_eq!(decode(&[5, 1, 1, 0x80]), malformed);
        assert_eq!(decode(&[13, 4, 2, 0xc3, b'a']), malformed);
        // Control characters: a newline, a terminal escape, DEL.
        assert_eq!(decode(&[13, 4, 3, b'a', b'\n', b'b']), malformed);
        assert_eq!(decode(&[13, 4, 2, 0x1b, b'[']), malformed);
        assert_eq!(decode(&[5, 1, 1, 0x7f]), malformed);
        // A detail longer than what is left of the body.
        assert_eq!(decode(&[13, 4, 5, b'a']), malformed);
        // Plain text with multi-byte characters is fine.
        assert_eq!(
            decode(&[13, 4, 3, 0xc3, 0xa9, b'!']),
            Ok(Msg::Abort(Abort {
                reason: AbortReason::DestFailed,
                detail: "é!"
            }))
        );
    }

    #[test]
    fn detail_truncates_on_a_char_boundary_and_cleans_controls() {
        // Short text stays as it is.
        assert_eq!(Detail::new("no capacity").as_str(), "no capacity");
        assert!(Detail::new("").is_empty());
        // Exactly the bound: kept whole.
        assert_eq!(Detail::new(LONGEST_DETAIL).as_str(), LONGEST_DETAIL);
        // Longer: cut on a character boundary, marked with an ellipsis,
        // never more than the bound.
        for extra in ["x", "é", "✓✓✓", "😀"] {
            for shift in 0..4 {
                let text = std::format!("{}{}{extra}", &"abc"[..shift], LONGEST_DETAIL);
                let d = Detail::new(&text);
                assert!(d.as_str().len() <= MAX_DETAIL_LEN, "{text}");
                assert!(d.as_str().ends_with('…'), "{d}");
                let kept = d.as_str().trim_end_matches('…');
                assert!(text.starts_with(kept), "{d}");
                assert!(Detail::is_valid(d.as_str()));
            }
        }
        // Control characters become spaces.
        assert_eq!(
            Detail::new("disk\nfull\u{1b}[0m\t!").as_str(),
            "disk full [0m !"
        );
        // So do invisible format characters that could make a terminal
        // show other words (a right-to-left override, zero-width ones);
        // such text is not valid on the wire either.
        assert_eq!(
            Detail::new("ok\u{202E}gnirts\u{200B}x\u{FEFF}").as_str(),
            "ok gnirts x "
        );
        assert!(!Detail::is_valid("ok\u{202E}gnirts"));
        assert!(!Detail::is_valid("a\u{2066}b"));
        assert!(Detail::is_valid("needs 129 MiB, has 64 MiB — é ✓"));
        // Formatting stops quietly once the text is full.
        let d = Detail::from_fmt(format_args!("{}", "y".repeat(10_000)));
        assert_eq!(d.as_str().len(), MAX_DETAIL_LEN);
        assert!(Detail::is_valid(d.as_str()));
    }

    #[test]
    fn first_frame_tells_a_stranger_from_relocd() {
        // An HTTP server's answer to our hello.
        assert_eq!(
            first_frame_len(*b"HTTP"),
            Err(Error::NotRelocd { first: *b"HTTP" })
        );
        assert_eq!(
            std::format!("{}", Error::NotRelocd { first: *b"SSH-" }),
            "the peer does not speak relocd's relocation protocol (its first bytes are \"SSH-\")"
        );
        assert_eq!(
            first_frame_len([0xff, 0, 0, 1]),
            Err(Error::NotRelocd {
                first: [0xff, 0, 0, 1]
            })
        );
        // xm's S-expression keeps its own diagnosis.
        assert_eq!(
            first_frame_len(*b"(rec"),
            Err(Error::PeerMisbehaved(Misbehavior::XendProtocol))
        );
        // Any control frame is a plausible start.
        assert_eq!(first_frame_len([0, 0, 1, 0]), Ok(MAX_CONTROL_FRAME_LEN));
        assert_eq!(first_frame_len([0, 0, 0, 8]), Ok(8));
        assert_eq!(
            first_frame_len([0; 4]),
            Err(Error::PeerMisbehaved(Misbehavior::Malformed))
        );
    }

    #[test]
    fn decoding_random_bytes_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (x.rotate_left(i as u32 * 5) >> 3) as u8;
            }
            // Bias the first byte towards valid tags.
            buf[0] %= 16;
            let _ = decode(&buf[..len]);
        }
    }
}
