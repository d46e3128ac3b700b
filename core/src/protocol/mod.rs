//! The relocation session between two hosts, as sans-IO state machines:
//! [`Source`] (the sender) and [`Dest`] (the receiver).
//!
//! Neither machine does I/O or reads a clock. The host feeds them frames,
//! host events and the time through `handle_*` methods, and takes frames
//! (`poll_transmit`), actions (`poll_action`) and deadlines (`poll_timeout`)
//! out. See the call contracts on [`Source`] and [`Dest`]. The wire format
//! in prose, for other implementations, is `docs/protocol.md`.
//!
//! # The session
//!
//! ```mermaid
//! sequenceDiagram
//!     participant S as Source (relocd, sender)
//!     participant D as Destination (relocd, receiver)
//!     opt too many connections awaiting admission
//!         D->>S: Refused(Busy, detail) [before reading the hello]
//!     end
//!     S->>D: Hello {magic, min/max version, features}
//!     alt no common version
//!         D->>S: VersionRefused {min, max}
//!     else
//!         D->>S: HelloAck {version, features}
//!     end
//!     S->>D: Admit {session, name, uuid, memory, p2m_size, vcpus, type, live}
//!     alt refused (capacity, name taken, too many migrations, policy)
//!         D->>S: Refused(reason, detail)
//!     else
//!         Note over D: create empty paused domain
//!         D->>S: Admitted
//!     end
//!     loop live rounds (pre-copy, guest runs at S)
//!         S->>D: Image(chunk) x N  [one PAGE_DATA record each]
//!         S->>D: RoundEnd {round, pages, dirty}
//!     end
//!     Note over S: suspend guest (stop-and-copy)
//!     S->>D: Suspended
//!     S->>D: Image(chunk) x N  [last pages, vCPU state, END]
//!     S->>D: ImageEnd {chunks, bytes}
//!     Note over D: image complete, guest paused
//!     D->>S: Prepared
//!     Note over S: journal COMMIT, fsync  (point of no return)
//!     S->>D: Commit
//!     Note over D: journal COMMIT, fsync; unpause
//!     D->>S: Committed
//!     Note over S: destroy local copy; journal DONE
//! ```
//!
//! An offline migration is the same without the live rounds: the source
//! suspends the guest as soon as it is admitted, sends `Suspended`, then the
//! whole image. Either side may send `Abort(reason, detail)` before the
//! commit.
//!
//! # Reasons and details
//!
//! `Refused` and `Abort` carry a typed reason ([`RefuseReason`],
//! [`AbortReason`]) for programs and a short [`Detail`] text for the
//! peer's operator: `not enough free memory for web1 (needs 129 MiB, has
//! 64 MiB)`, `writing pages: ...`. The detail is at most
//! [`MAX_DETAIL_LEN`] bytes of UTF-8 without control characters: the
//! sender truncates on a character boundary and blanks control
//! characters ([`Detail::new`]); the receiver refuses anything else as
//! malformed. The host hands them to the machines as [`msg::Refused`] and
//! [`msg::Abort`] (a reason and a borrowed text, `From` a bare reason);
//! the machines keep the typed reason in their (small, `Copy`) errors and
//! the received text in `Source::peer_detail`/`Dest::peer_detail`.
//!
//! # Framing and bounds
//!
//! Every message is one frame: `[u32 length, big-endian][postcard body]`
//! ([`msg`]). The receiver checks the length against its current bound
//! before reading the body. The first frame from a peer is checked first
//! for being relocd's at all ([`msg::first_frame_len`]): every version's
//! first frame in either direction is a control frame, so a first length
//! above [`MAX_CONTROL_FRAME_LEN`] (an HTTP server's `HTTP/1.1 400` reads
//! as 1,213,486,160 bytes) is [`Error::NotRelocd`], not an oversize frame.
//! Otherwise the bound is [`MAX_CONTROL_FRAME_LEN`] (256 bytes) for every
//! state in which no image chunk can come, [`MAX_FRAME_LEN`] (4 MiB +
//! 64 KiB) while the image flows. Oversize, undecodable, trailing-garbage
//! and out-of-order messages are typed [`Error`]s that end the session by
//! the table below; none panics and none allocates.
//!
//! # Deadlines
//!
//! Every wait has a deadline ([`Timeouts`]). Before admission the
//! destination gives the source [`Timeouts::handshake`] from the
//! connection to the `Admit`. Once admitted, a session holds a slot and
//! the memory it was admitted for, so it must make progress to keep
//! them: the destination's idle deadline ([`Timeouts::idle`]) is put off
//! only by image bytes (and by `Suspended`, which comes once), never by
//! frames that carry nothing (an empty `Image`, a `RoundEnd`); and the
//! whole transfer, from `Admitted` to `Prepared`, is bounded by
//! [`Timeouts::transfer`] however it progresses. Either ends the session
//! with `Abort` (reason `Timeout` or `TransferTooLong`, the detail saying
//! which bound passed) and the destination destroys its partial copy.
//!
//! # The migration image
//!
//! The image is the libxc migration stream (the same bytes as a save
//! file), cut into chunks of whole records. Each pre-copy batch of at most
//! [`crate::precopy::MAX_BATCH_SIZE`] pages is one `PAGE_DATA` record and one
//! chunk, so a chunk never exceeds [`MAX_IMAGE_CHUNK_LEN`]; small records
//! (headers, vCPU state, `END`) may share a chunk. The protocol does not
//! look inside chunks; it counts them, and the totals in `ImageEnd` must
//! match what the destination received.
//!
//! # The commit handshake and invariant 1
//!
//! Invariant 1 of DESIGN.md: a guest is never lost; any failure before the
//! commit leaves it running at the source; no single failure leaves it
//! running on both hosts, or on neither without the operator being told.
//! The handshake is a two-phase commit with the source as coordinator, the
//! decision journaled at the source, and "presumed abort" at the
//! destination. Step by step:
//!
//! 1. **The source keeps its copy until the very end.** It suspends the
//!    guest for stop-and-copy, but destroys it only after receiving
//!    `Committed`, which the destination sends after its guest runs. So
//!    until then a complete copy of the guest exists at the source.
//! 2. **`Prepared` means a complete, paused copy.** The destination sends
//!    it only after `ImageEnd`'s totals matched what arrived and the host
//!    confirmed the image complete ([`DestAction::CompleteImage`]: stream
//!    decoder at `END`, `SinkGuest::complete` done). The guest stays paused.
//! 3. **The point of no return is journaled before it is announced.** On
//!    `Prepared` the source asks the host to journal the commit
//!    ([`SourceAction::JournalCommit`]); only after
//!    [`Source::handle_journaled`] does it queue `Commit`. So if `Commit`
//!    ever left the source, a durable record says so, and a restarted
//!    source knows it may not resume the guest on its own.
//! 4. **The destination unpauses only after `Commit`.** `Commit` is sent
//!    only after step 3, so the destination never runs the guest before the
//!    source has passed its point of no return. It journals the commit too
//!    (so a restarted destination finishes the unpause instead of
//!    destroying a copy the source has given up), then unpauses.
//! 5. **Before `Commit` leaves, every failure resumes at the source.** A
//!    failure in any state up to and including "commit journaled, `Commit`
//!    still in the outbox" ends the source in [`SourceOutcome::Aborted`]:
//!    the outbox is dropped, so `Commit` can no longer leave; the host
//!    journals `Aborted` if it had journaled `Commit`, then resumes. The
//!    destination never saw `Commit`, so it never runs the guest.
//! 6. **Presumed abort at the destination.** Before `Commit` arrives, any
//!    failure at the destination (link loss, timeout in `Prepared`, bad
//!    input, the source's `Abort`) ends it in [`DestOutcome::Discarded`]:
//!    it destroys its copy. That is safe even if the source did commit,
//!    because by step 1 the source still holds a complete copy.
//! 7. **After `Commit` arrives, the destination goes on regardless.** Link
//!    loss and timeouts in `Journaling`/`Unpausing` do not change its
//!    course: the decision is durable at the source. Only its own failure
//!    to journal or to unpause stops it; then it destroys its copy and sends
//!    `Abort`, a promise that its copy will never run, on which the source
//!    may resume even after its commit.
//! 8. **The one in-doubt instant.** Once `Commit` has been handed to the
//!    connection, the source cannot tell, without `Committed` or `Abort`,
//!    whether the destination got it. (If the host knows the write of
//!    `Commit` failed before any byte was accepted, it says so with
//!    [`Source::handle_transmit_failed`] and the session aborts instead.)
//!    Stray or broken input from the destination does not end this wait:
//!    it carries no answer. If the connection or the destination fails, or
//!    the deadline passes, the source ends in [`SourceOutcome::InDoubt`]: it keeps
//!    its copy suspended, and the host lists the domain "in doubt". The
//!    destination either runs the guest (it got `Commit`) or destroyed its
//!    copy (it did not): at most one runs, and the suspended copy at the
//!    source covers the second case. The operator settles it with `relocd
//!    resolve DOMAIN --resume` (destination has no running copy) or
//!    `--discard` (it has), see [`journal::Resolution`].
//! 9. **Crashes are covered by the journals.** A restarted daemon applies
//!    [`journal::recover_source`] / [`journal::recover_dest`] to the last
//!    record of each session: no `Commit` → resume (source) / destroy
//!    (destination); `Commit` alone → in doubt (source) / unpause
//!    (destination).
//!
//! ## Failure point → outcome
//!
//! "Cut" is a dropped connection or a stall past the timeout; "killed" is
//! the daemon dying (SIGKILL) and restarting with its journal.
//!
//! | failure point | source | destination | guest runs on |
//! | --- | --- | --- | --- |
//! | cut before `Admitted`, refusal, version mismatch | Aborted (never paused) | Discarded (nothing or empty domain) | source |
//! | cut, stall, garbage or `Abort` during pre-copy | Aborted: guest kept running | Discarded: partial copy destroyed | source |
//! | garbage, oversize or out-of-order frame before the commit | Aborted (`Abort` sent or received) | Discarded (`Abort` sent or received) | source |
//! | the destination's sink fails mid-image, or it shuts down | Aborted (`Abort`/`Refused` received) | Discarded | source |
//! | cut after `Suspended`, before `Prepared` arrives | Aborted: guest resumed | Discarded | source |
//! | no image bytes for `Timeouts::idle`, or no complete image within `Timeouts::transfer` of admission (destination) | Aborted (`Abort(Timeout)` / `Abort(TransferTooLong)` received) | Discarded, `Abort` sent | source |
//! | image incomplete at the destination | Aborted (`Abort` received) | Discarded, `Abort` sent | source |
//! | source's commit journal fails | Aborted, `Abort` sent | Discarded | source |
//! | cut after the commit is journaled, before `Commit` leaves | Aborted: journals `Aborted`, resumes | Discarded (presumed abort) | source |
//! | cut after `Commit` left, `Commit` lost | **InDoubt**, suspended | Discarded (timeout/cut in `Prepared`) | none: in doubt at source → `resolve --resume` |
//! | cut after `Commit` arrived, before `Committed` arrives | **InDoubt**, suspended | Running | destination: in doubt at source → `resolve --discard` |
//! | destination's commit journal or unpause fails, `Abort` arrives | Aborted: resumes | Discarded, `Abort` sent | source |
//! | the same, `Abort` lost | **InDoubt** | Discarded | none: `resolve --resume` |
//! | stray or broken frame from the destination after `Commit` left | ignored: keeps waiting for `Committed` until its deadline | — | as the next rows |
//! | stray or broken frame at the destination after `Commit` arrived | — | ignored: goes on to Running | destination |
//! | `Committed` arrives | Migrated: copy destroyed | Running | destination |
//! | source killed before its commit record | restart: resume | cut → Discarded | source |
//! | source killed after its commit record | restart: **in doubt** | Running if `Commit` arrived, else Discarded | destination or none: `resolve` |
//! | destination killed before its commit record | cut → Aborted, or **InDoubt** if `Commit` had left | restart: destroy | source, or none: `resolve --resume` |
//! | destination killed after its commit record | cut → **InDoubt** (or Migrated) | restart: unpause | destination: `resolve --discard` |
//!
//! In no row do both run; where neither runs, the source holds a suspended
//! copy and reports it in doubt. The tests in this module cut the link
//! after every message kind on each side, stall it, and kill each side at
//! each step, and check exactly that.
//!
//! # Journal contract
//!
//! The host keeps an append-only journal of [`journal::Record`]s:
//! - source, on [`SourceAction::JournalCommit`]: write `Commit`, fsync, then
//!   [`Source::handle_journaled`];
//! - source, on [`SourceOutcome::Aborted`] after a `Commit` record: write
//!   `Aborted`, fsync, then resume the guest;
//! - source, on [`SourceOutcome::Migrated`]: destroy the guest, then write
//!   `Done`;
//! - destination, on [`DestAction::JournalCommit`]: write `Commit`, fsync,
//!   then [`Dest::handle_journaled`];
//! - destination, on [`DestOutcome::Discarded`] after a `Commit` record:
//!   write `Aborted`, fsync, then destroy; on [`DestOutcome::Running`]:
//!   write `Done`.
//!
//! # Protocol versioning
//!
//! The protocol version is a `u16`; this implementation speaks
//! [`PROTOCOL_VERSION_MIN`]..=[`PROTOCOL_VERSION`]. Rules:
//! - The frame layout, `Hello` (tag 0), `HelloAck` (tag 1) and
//!   `VersionRefused` (tag 2) are frozen for ever, so any two versions can
//!   at least tell each other which versions they speak. Their bytes are
//!   pinned by a test.
//! - From version 2 on, `Refused` (tag 5: reason, detail) is frozen too,
//!   so a destination may refuse before it has read the hello (busy,
//!   shutting down) and any later source can read why. Its bytes are
//!   pinned by a test.
//! - Every version's first frame in either direction is a control frame
//!   (at most [`MAX_CONTROL_FRAME_LEN`] bytes), which is how a peer that
//!   is not relocd is recognised ([`Error::NotRelocd`]).
//! - The source offers a range; the destination picks the highest version
//!   both speak, or answers `VersionRefused` with its own range and closes.
//!   Both sides then report [`Error::Incompatible`] naming our version and
//!   the peer's, so the operator sees e.g. "we speak 1, the peer speaks 2"
//!   on either host.
//! - Optional behaviour is negotiated with [`Features`] bits (the
//!   intersection applies); unknown bits are ignored, so adding a feature
//!   needs no version bump.
//! - Messages are only ever appended to [`Msg`] (the variant index is the
//!   tag), and a message's fields never change within a version; anything
//!   else is a new version.
//! - Reason codes ([`RefuseReason`], [`AbortReason`]) are open: an unknown
//!   code decodes as `Unknown(n)` and is reported, not rejected. Adding a
//!   code needs no version bump.
//!
//! History:
//! - 1: the first version.
//! - 2: `Refused` and `Abort` carry a detail text after the reason;
//!   `Refused` is frozen; the `Busy` refusal. Version 1 is no longer
//!   spoken ([`PROTOCOL_VERSION_MIN`] is 2): its `Refused`/`Abort` lack
//!   the detail and cannot be told apart from a damaged frame, and relocd
//!   hosts are upgraded together. A version-1 peer is answered with
//!   `VersionRefused`, and both operators read "we speak 2, the peer
//!   speaks 1" (or the reverse). A destination's early `Refused(Busy)`
//!   reaches a version-1 source as a malformed frame.

mod dest;
mod error;
pub mod journal;
pub mod msg;
mod source;
#[cfg(test)]
mod tests;

pub use dest::{
    AdmissionRequest, Dest, DestAction, DestConfig, DestOutcome, DestState, Payload, Receive,
};
pub use error::{AbortReason, Detail, Error, Limit, Misbehavior, RefuseReason, MAX_DETAIL_LEN};
pub use msg::{
    Features, Msg, FRAME_HEADER_LEN, IMAGE_HEADER_MAX, MAX_CONTROL_FRAME_LEN, MAX_FRAME_LEN,
    MAX_GUEST_CONFIG_FRAME_LEN, MAX_GUEST_CONFIG_LEN, MAX_IMAGE_CHUNK_LEN, MAX_NAME_LEN,
    MAX_P2M_SIZE, MAX_VCPUS,
};
pub use source::{
    ConfigOffer, GuestDesc, Handshake, Source, SourceAction, SourceConfig, SourceOutcome,
    SourceState, Transfer,
};

use crate::time::Duration;

/// The highest protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// The lowest protocol version this implementation speaks (see "Protocol
/// versioning" in the module doc: version 1 is no longer spoken).
pub const PROTOCOL_VERSION_MIN: u16 = 2;

/// [`Timeouts::transfer`]'s default, in seconds: 30 minutes, generous
/// for a guest of tens of GiB over a gigabit link.
pub const DEFAULT_TRANSFER_SECS: u64 = 30 * 60;

/// How long each side waits for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For `HelloAck`/`Admitted` (source) and `Hello`/`Admit` (destination).
    pub handshake: Duration,
    /// Longest the destination waits for progress while the image flows:
    /// from admission, and again after each image chunk that carries
    /// bytes (and after `Suspended`, once). Frames that carry nothing (an
    /// empty chunk, a `RoundEnd`) arrive but do not put the deadline off,
    /// so a peer cannot hold an admitted session with keepalives.
    pub idle: Duration,
    /// Longest an admitted session may take to reach `Prepared`
    /// (destination), however it progresses: from `Admitted` to a
    /// complete image. Bounds how long a session holds its slot and the
    /// memory it was admitted for; a large guest over a slow link needs
    /// more than the default.
    pub transfer: Duration,
    /// From `ImageEnd` to `Prepared` (source): the destination's final
    /// processing.
    pub prepare: Duration,
    /// From `Prepared` to `Commit` (destination) and from `Commit` to
    /// `Committed` (source).
    pub commit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            transfer: Duration::from_secs(DEFAULT_TRANSFER_SECS),
            prepare: Duration::from_secs(60),
            commit: Duration::from_secs(10),
        }
    }
}
