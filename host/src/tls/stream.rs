//! A TLS connection that behaves as the session's link: it reads and
//! writes with the socket's timeouts, and it can be split between a writer
//! and a reader thread (the source's) with [`TlsStream::try_clone`].
//!
//! After the handshake rustls keeps only the key schedule (its kernel
//! connection, for key updates); the records are sealed and opened here
//! ([`super::record`]), each direction under its own lock, in buffers of
//! bounded size:
//!
//! - A write seals up to [`MAX_WRITE`] bytes of plaintext, gathered from
//!   the caller's slices, into records of up to 16 KiB in one buffer (one
//!   copy), and hands the buffer to the socket in one call, holding the
//!   lock at most the socket's write timeout (the drivers' short write
//!   slice); what the socket did not take stays queued, in order, and goes
//!   first with the next write or with [`std::io::Write::flush`] (which
//!   `write_frame` calls after each frame), so a slow peer costs the
//!   writer the same timeouts as plain TCP.
//! - A read fills a [`READ_BUF`] buffer from the socket (many records a
//!   call) and decrypts the next record straight into the caller's buffer
//!   when that has room for all of it (the session's frame bodies do);
//!   otherwise it opens the record in place and copies the plaintext out.
//!   A record is at most 16 KiB + 261 bytes: a peer cannot make this side
//!   hold more.
//!
//! The peer's key updates are followed (and answered when it asks); this
//! side updates its own sending key before the suite's confidentiality
//! limit. An alert from the peer, or a record that does not open, fails
//! the connection and is kept for the operator's message
//! ([`TlsStream::failure`]).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ConnectionTrafficSecrets, ExtractedSecrets, InvalidMessage};

use super::record::{
    self, Keys, ALERT, APPLICATION_DATA, HANDSHAKE, HEADER_LEN, MAX_PLAIN, MAX_RECORD, OVERHEAD,
};

/// The most plaintext one write call seals (what may wait in memory for a
/// slow peer, per connection).
pub(crate) const MAX_WRITE: usize = 256 * 1024;
/// Ciphertext read from the socket at once (at least one whole record).
pub(crate) const READ_BUF: usize = 256 * 1024;
/// The TLS 1.3 handshake message types that may come after the handshake.
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// rustls's side of the connection after the handshake: the key schedule.
pub(crate) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }

    /// How many records one key may seal (the suite's confidentiality
    /// limit).
    fn limit(&self) -> u64 {
        let suite = match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        };
        suite
            .tls13()
            .map_or(u64::MAX, |s| s.common.confidentiality_limit)
    }
}

/// The sending direction.
struct Tx {
    keys: Keys,
    /// Sealed records; `buf[sent..]` is not in the socket yet.
    buf: Vec<u8>,
    sent: usize,
    /// Records the current key may seal before it is updated.
    limit: u64,
}

/// The receiving direction.
struct Rx {
    keys: Keys,
    /// Ciphertext from the socket: `buf[start..end]` is not opened yet.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The opened record's plaintext not yet read (in `buf`).
    plain: Range<usize>,
    /// Plaintext taken out of the records ahead of a read (by a peek, or
    /// with the handshake): it goes first.
    stash: Vec<u8>,
    stash_pos: usize,
    /// The socket said EOF.
    eof: bool,
    /// The peer's close_notify came: nothing follows.
    closed: bool,
    /// The connection failed (the error is in `failure`).
    broken: bool,
}

struct Inner {
    tx: Mutex<Tx>,
    rx: Mutex<Rx>,
    kernel: Mutex<Kernel>,
    /// The first TLS error this connection met (an alert from the peer,
    /// a record that does not open), for the operator's message.
    failure: Mutex<Option<rustls::Error>>,
    peer_cert: Option<Vec<u8>>,
}

/// One handle on a TLS connection (see the module doc).
pub struct TlsStream {
    tcp: TcpStream,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.tcp.peer_addr().ok())
            .finish()
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// What the handshake left for the record layer.
pub(crate) struct Handover {
    pub(crate) secrets: ExtractedSecrets,
    pub(crate) kernel: Kernel,
    /// Ciphertext read past the handshake.
    pub(crate) rest: Vec<u8>,
    /// Plaintext rustls opened with the handshake's last records.
    pub(crate) plain: Vec<u8>,
    pub(crate) peer_cert: Option<Vec<u8>>,
}

impl TlsStream {
    /// Takes over a connection whose handshake is complete.
    pub(crate) fn new(tcp: TcpStream, h: Handover) -> Result<TlsStream, rustls::Error> {
        let ExtractedSecrets { tx, rx } = h.secrets;
        if h.rest.len() > READ_BUF {
            return Err(rustls::Error::InvalidMessage(
                InvalidMessage::MessageTooLarge,
            ));
        }
        let mut buf = vec![0u8; READ_BUF].into_boxed_slice();
        buf[..h.rest.len()].copy_from_slice(&h.rest);
        let limit = h.kernel.limit();
        Ok(TlsStream {
            tcp,
            inner: Arc::new(Inner {
                tx: Mutex::new(Tx {
                    keys: Keys::new(tx.0, &tx.1)?,
                    buf: Vec::with_capacity(MAX_WRITE + (MAX_WRITE / MAX_PLAIN + 4) * OVERHEAD),
                    sent: 0,
                    limit,
                }),
                rx: Mutex::new(Rx {
                    keys: Keys::new(rx.0, &rx.1)?,
                    buf,
                    start: 0,
                    end: h.rest.len(),
                    plain: 0..0,
                    stash: h.plain,
                    stash_pos: 0,
                    eof: false,
                    closed: false,
                    broken: false,
                }),
                kernel: Mutex::new(h.kernel),
                failure: Mutex::new(None),
                peer_cert: h.peer_cert,
            }),
        })
    }

    /// A second handle on the same connection.
    pub fn try_clone(&self) -> io::Result<TlsStream> {
        Ok(TlsStream {
            tcp: self.tcp.try_clone()?,
            inner: self.inner.clone(),
        })
    }

    /// The TCP connection underneath (timeouts, addresses, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The first TLS error the connection met since the handshake (an alert
    /// the peer sent, a record that did not open), if any.
    pub fn failure(&self) -> Option<rustls::Error> {
        lock(&self.inner.failure).clone()
    }

    /// The DER of the peer's end-entity certificate, when it sent one.
    pub(crate) fn peer_cert_der(&self) -> Option<Vec<u8>> {
        self.inner.peer_cert.clone()
    }

    /// Makes this side update its sending key every `records` records (at
    /// least 2) instead of at the suite's limit (millions of records): for
    /// tests of the key update.
    #[doc(hidden)]
    pub fn set_send_key_limit(&self, records: u64) {
        lock(&self.inner.tx).limit = records.max(2);
    }

    /// A handle that reports [`TlsStream::failure`] after the stream is gone.
    pub fn failure_probe(&self) -> FailureProbe {
        FailureProbe(self.inner.clone())
    }

    /// Records `e` (the first one stays) and makes it an I/O error.
    fn fail(&self, rx: &mut Rx, e: rustls::Error) -> io::Error {
        rx.broken = true;
        {
            let mut f = lock(&self.inner.failure);
            if f.is_none() {
                *f = Some(e.clone());
            }
        }
        // Tell the peer why, if the writer is not busy (a courtesy only).
        let desc = match &e {
            rustls::Error::DecryptError => Some(AlertDescription::BadRecordMac),
            rustls::Error::AlertReceived(_) => None,
            rustls::Error::PeerSentOversizedRecord => Some(AlertDescription::RecordOverflow),
            _ => Some(AlertDescription::UnexpectedMessage),
        };
        if let (Some(d), Ok(mut tx)) = (desc, self.inner.tx.try_lock()) {
            if self.seal_control(&mut tx, ALERT, &[2, u8::from(d)]).is_ok() {
                let _ = self.drain(&mut tx);
            }
        }
        invalid(e)
    }

    /// Sends the close_notify alert, then closes our sending direction.
    pub fn close_write(&self) {
        {
            let mut tx = lock(&self.inner.tx);
            if self.drain(&mut tx).is_ok() && self.seal_control(&mut tx, ALERT, &[1, 0]).is_ok() {
                let _ = self.drain(&mut tx);
            }
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    /// Closes both directions (a reader blocked on another handle wakes).
    pub fn shutdown(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Hands the queued records to the socket; a timeout leaves the rest
    /// queued.
    fn drain(&self, tx: &mut Tx) -> io::Result<()> {
        while tx.sent < tx.buf.len() {
            match (&self.tcp).write(&tx.buf[tx.sent..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "connection closed",
                    ))
                }
                Ok(n) => tx.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        tx.buf.clear();
        tx.sent = 0;
        Ok(())
    }

    /// Updates the sending key when the current one has sealed all it may
    /// (telling the peer first, with the old key).
    fn rekey_if_due(&self, tx: &mut Tx) -> Result<(), rustls::Error> {
        if tx.keys.seq().saturating_add(1) < tx.limit {
            return Ok(());
        }
        self.update_tx(tx, false)
    }

    /// Sends a KeyUpdate (asking the peer to update too, or not) and
    /// moves to the next sending key.
    fn update_tx(&self, tx: &mut Tx, request: bool) -> Result<(), rustls::Error> {
        let start = tx.buf.len();
        tx.buf.extend_from_slice(&[0; HEADER_LEN]);
        tx.buf
            .extend_from_slice(&[KEY_UPDATE, 0, 0, 1, u8::from(request)]);
        record::seal(&mut tx.keys, &mut tx.buf, start, HANDSHAKE)?;
        let (seq, secrets) = lock(&self.inner.kernel).update_tx()?;
        tx.keys = Keys::new(seq, &secrets)?;
        Ok(())
    }

    /// Seals one record of type `typ` holding `body` (an alert) after the
    /// queued ones.
    fn seal_control(&self, tx: &mut Tx, typ: u8, body: &[u8]) -> Result<(), rustls::Error> {
        self.rekey_if_due(tx)?;
        let start = tx.buf.len();
        tx.buf.extend_from_slice(&[0; HEADER_LEN]);
        tx.buf.extend_from_slice(body);
        record::seal(&mut tx.keys, &mut tx.buf, start, typ)
    }

    /// Seals up to [`MAX_WRITE`] bytes of `bufs` into records (each as full
    /// as the bytes allow, however the slices fall); how many it took.
    fn seal_data(&self, tx: &mut Tx, bufs: &[IoSlice<'_>]) -> Result<usize, rustls::Error> {
        let total = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add)
            .min(MAX_WRITE);
        let (mut i, mut off, mut taken) = (0, 0, 0);
        while taken < total {
            self.rekey_if_due(tx)?;
            let n = (total - taken).min(MAX_PLAIN);
            let start = tx.buf.len();
            tx.buf.extend_from_slice(&[0; HEADER_LEN]);
            let mut need = n;
            while need > 0 {
                let Some(b) = bufs.get(i) else { break };
                let part = &b[off..];
                let k = part.len().min(need);
                tx.buf.extend_from_slice(&part[..k]);
                need -= k;
                off += k;
                if off == b.len() {
                    i += 1;
                    off = 0;
                }
            }
            record::seal(&mut tx.keys, &mut tx.buf, start, APPLICATION_DATA)?;
            taken += n - need;
        }
        Ok(taken)
    }

    /// Opens the next whole record waiting in `rx.buf`, if there is one
    /// (`Ok(false)`: none is whole yet). Application data is left in
    /// `rx.plain`; an alert or a key update is acted on.
    fn open_next(&self, rx: &mut Rx) -> io::Result<bool> {
        if rx.end - rx.start < HEADER_LEN {
            return Ok(false);
        }
        let s = rx.start;
        let header = [
            rx.buf[s],
            rx.buf[s + 1],
            rx.buf[s + 2],
            rx.buf[s + 3],
            rx.buf[s + 4],
        ];
        let len = record::record_len(header).map_err(|e| self.fail(rx, e))?;
        if rx.end - s < len {
            return Ok(false);
        }
        rx.start = s + len;
        let opened = record::open(&mut rx.keys, &mut rx.buf[s..s + len]);
        let (typ, r) = opened.map_err(|e| self.fail(rx, e))?;
        let r = s + r.start..s + r.end;
        self.opened(rx, typ, r)?;
        Ok(true)
    }

    /// Opens the next whole record waiting in `rx.buf` straight into `out`
    /// when it holds application data and `out` has room for all of it
    /// (the read's one copy is the decryption): `Ok(Some(n))`, `n` bytes
    /// read. `Ok(None)`: no whole record waits, or `out` is too short; a
    /// record of another type is acted on (`Ok(Some(0))`: read on).
    fn open_direct(&self, rx: &mut Rx, out: &mut [u8]) -> io::Result<Option<usize>> {
        if rx.end - rx.start < HEADER_LEN {
            return Ok(None);
        }
        let s = rx.start;
        let header = [
            rx.buf[s],
            rx.buf[s + 1],
            rx.buf[s + 2],
            rx.buf[s + 3],
            rx.buf[s + 4],
        ];
        let len = record::record_len(header).map_err(|e| self.fail(rx, e))?;
        if rx.end - s < len || out.len() < record::opened_len(len) {
            return Ok(None);
        }
        rx.start = s + len;
        let opened = record::open_into(&mut rx.keys, &rx.buf[s..s + len], out);
        let (typ, n) = opened.map_err(|e| self.fail(rx, e))?;
        if typ == APPLICATION_DATA {
            return Ok(Some(n));
        }
        // Not data (rare): back into the record's place, and acted on.
        let at = s + HEADER_LEN;
        rx.buf[at..at + n].copy_from_slice(&out[..n]);
        self.opened(rx, typ, at..at + n)?;
        Ok(Some(0))
    }

    /// Acts on an opened record of type `typ` whose plaintext is
    /// `rx.buf[r]`.
    fn opened(&self, rx: &mut Rx, typ: u8, r: Range<usize>) -> io::Result<()> {
        match typ {
            APPLICATION_DATA => rx.plain = r,
            ALERT => match rx.buf[r] {
                [_, 0] => rx.closed = true,
                [_, d] => {
                    let e = rustls::Error::AlertReceived(AlertDescription::from(d));
                    return Err(self.fail(rx, e));
                }
                _ => {
                    let e = rustls::Error::InvalidMessage(InvalidMessage::TrailingData("alert"));
                    return Err(self.fail(rx, e));
                }
            },
            HANDSHAKE => self.post_handshake(rx, r)?,
            _ => {
                let e = rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType);
                return Err(self.fail(rx, e));
            }
        }
        Ok(())
    }

    /// The handshake messages a record after the handshake may carry: key
    /// updates (followed, and answered when asked) and session tickets
    /// (handed to rustls; resumption is off, so they go unused). Each must
    /// be whole in its record.
    fn post_handshake(&self, rx: &mut Rx, r: Range<usize>) -> io::Result<()> {
        let mut at = r.start;
        while at < r.end {
            if r.end - at < 4 {
                let e = rustls::Error::InvalidMessage(InvalidMessage::MessageTooShort);
                return Err(self.fail(rx, e));
            }
            let typ = rx.buf[at];
            let len = usize::from(rx.buf[at + 1]) << 16
                | usize::from(rx.buf[at + 2]) << 8
                | usize::from(rx.buf[at + 3]);
            let body = at + 4..at + 4 + len;
            if body.end > r.end {
                let e = rustls::Error::InvalidMessage(InvalidMessage::MessageTooShort);
                return Err(self.fail(rx, e));
            }
            at = body.end;
            let outcome = match (typ, &rx.buf[body]) {
                // A key update ends its record (RFC 8446 §5.1).
                (KEY_UPDATE, &[request @ (0 | 1)]) if at == r.end => {
                    let next = lock(&self.inner.kernel).update_rx();
                    next.and_then(|(seq, s)| Keys::new(seq, &s))
                        .map(|keys| Some((keys, request == 1)))
                }
                (KEY_UPDATE, &[0 | 1]) => Err(rustls::Error::PeerMisbehaved(
                    rustls::PeerMisbehaved::KeyEpochWithPendingFragment,
                )),
                (KEY_UPDATE, _) => Err(rustls::Error::InvalidMessage(
                    InvalidMessage::InvalidKeyUpdate,
                )),
                (NEW_SESSION_TICKET, body) => match &mut *lock(&self.inner.kernel) {
                    Kernel::Client(k) => k.handle_new_session_ticket(body).map(|()| None),
                    Kernel::Server(_) => Err(rustls::Error::InvalidMessage(
                        InvalidMessage::UnexpectedMessage("a session ticket from a client"),
                    )),
                },
                _ => Err(rustls::Error::InvalidMessage(
                    InvalidMessage::UnexpectedMessage("a handshake message after the handshake"),
                )),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some((keys, requested))) => {
                    rx.keys = keys;
                    if requested {
                        // Answered with the next records this side sends;
                        // a peer that asks faster than it reads them is
                        // cut off (what waits for it stays bounded).
                        let mut tx = lock(&self.inner.tx);
                        let r = if tx.buf.len() - tx.sent > MAX_WRITE {
                            Err(rustls::Error::PeerMisbehaved(
                                rustls::PeerMisbehaved::TooManyKeyUpdateRequests,
                            ))
                        } else {
                            self.update_tx(&mut tx, false)
                        };
                        drop(tx);
                        r.map_err(|e| self.fail(rx, e))?;
                    }
                }
                Err(e) => return Err(self.fail(rx, e)),
            }
        }
        Ok(())
    }

    /// One socket read into the free end of `rx.buf` (the unopened part
    /// moved to the front first when a whole record might not fit).
    fn fill(&self, rx: &mut Rx) -> io::Result<()> {
        if rx.start == rx.end {
            rx.start = 0;
            rx.end = 0;
        } else if rx.buf.len() - rx.start < MAX_RECORD {
            rx.buf.copy_within(rx.start..rx.end, 0);
            rx.end -= rx.start;
            rx.start = 0;
        }
        let n = loop {
            match (&self.tcp).read(&mut rx.buf[rx.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        rx.end += n;
        if n == 0 {
            rx.eof = true;
        }
        Ok(())
    }

    fn stashed(rx: &Rx) -> usize {
        rx.stash.len() - rx.stash_pos
    }

    /// Copies into `buf` the start of the plaintext not yet read, reading
    /// once more from the socket when less than `buf.len()` bytes wait;
    /// consumes nothing. `Ok(0)`: the peer closed before sending any.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rx = lock(&self.inner.rx);
        let rx = &mut *rx;
        if rx.broken {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS connection failed",
            ));
        }
        let mut read_once = false;
        loop {
            if !rx.plain.is_empty() {
                // Into the stash, behind what is there (at most one
                // record more than `buf` asks for).
                rx.stash.drain(..rx.stash_pos);
                rx.stash_pos = 0;
                rx.stash.extend_from_slice(&rx.buf[rx.plain.clone()]);
                rx.plain = 0..0;
            }
            if Self::stashed(rx) >= buf.len() || rx.closed {
                break;
            }
            if self.open_next(rx)? {
                continue;
            }
            if rx.eof || (read_once && Self::stashed(rx) > 0) {
                break;
            }
            match self.fill(rx) {
                Ok(()) => read_once = true,
                Err(e) if timed_out(&e) && Self::stashed(rx) > 0 => break,
                Err(e) => return Err(e),
            }
        }
        let avail = &rx.stash[rx.stash_pos..];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        Ok(n)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut rx = lock(&self.inner.rx);
        let rx = &mut *rx;
        if rx.stash_pos < rx.stash.len() {
            let avail = &rx.stash[rx.stash_pos..];
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            rx.stash_pos += n;
            if rx.stash_pos == rx.stash.len() {
                rx.stash = Vec::new();
                rx.stash_pos = 0;
            }
            return Ok(n);
        }
        loop {
            if !rx.plain.is_empty() {
                let n = rx.plain.len().min(buf.len());
                let from = rx.plain.start;
                buf[..n].copy_from_slice(&rx.buf[from..from + n]);
                rx.plain.start += n;
                return Ok(n);
            }
            if rx.broken {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS connection failed",
                ));
            }
            if rx.closed {
                return Ok(0);
            }
            match self.open_direct(rx, buf)? {
                Some(0) => continue,
                Some(n) => return Ok(n),
                None => {}
            }
            if self.open_next(rx)? {
                continue;
            }
            if rx.eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection without a TLS close_notify",
                ));
            }
            self.fill(rx)?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut tx = lock(&self.inner.tx);
        // What an earlier call left goes first; a timeout here accepts
        // nothing of this call.
        self.drain(&mut tx)?;
        let taken = match self.seal_data(&mut tx, bufs) {
            Ok(n) => n,
            Err(e) => {
                let mut f = lock(&self.inner.failure);
                if f.is_none() {
                    *f = Some(e.clone());
                }
                return Err(invalid(e));
            }
        };
        match self.drain(&mut tx) {
            Ok(()) => Ok(taken),
            Err(e) if timed_out(&e) => Ok(taken),
            // The bytes were taken; the next call reports the failure.
            Err(_) if taken > 0 => Ok(taken),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut tx = lock(&self.inner.tx);
        self.drain(&mut tx)
    }
}

/// Reads a TLS stream's failure after the stream was handed on.
#[derive(Clone)]
pub struct FailureProbe(Arc<Inner>);

impl FailureProbe {
    /// As [`TlsStream::failure`].
    pub fn failure(&self) -> Option<rustls::Error> {
        lock(&self.0.failure).clone()
    }
}

impl std::fmt::Debug for FailureProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureProbe").finish()
    }
}
