//! A TLS connection that behaves as the session's link: it reads and
//! writes with the socket's timeouts, and it can be split between a writer
//! and a reader thread (the source's) with [`TlsStream::try_clone`].
//!
//! The rustls connection sits behind a mutex that is never held during a
//! socket call: the reader reads ciphertext with the lock released, then
//! takes it to decrypt; the writer encrypts under it, then sends the
//! records with it released. Records leave in order because every send
//! holds the `out` lock, taken before the connection's.
//!
//! A write returns once its plaintext is encrypted and handed to the
//! socket as far as the socket takes it within its write timeout; what the
//! socket did not take is sent first by the next write or by
//! [`std::io::Write::flush`] (which `write_frame` calls after each frame),
//! so a slow peer costs the writer the same timeouts as plain TCP.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The most plaintext one write call encrypts (what may wait in memory
/// for a slow peer, per connection).
const MAX_WRITE: usize = 256 * 1024;
/// Ciphertext read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ciphertext waiting for the socket.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    sent: usize,
}

/// The reader's state: plaintext decrypted and not yet read (at most what
/// one socket read decrypts to), and the buffer for ciphertext.
struct In {
    plain: Vec<u8>,
    pos: usize,
    raw: Box<[u8]>,
}

struct Inner {
    conn: Mutex<rustls::Connection>,
    out: Mutex<Out>,
    input: Mutex<In>,
    /// The first TLS error this connection met (an alert from the peer,
    /// a record that does not decrypt), for the operator's message.
    failure: Mutex<Option<rustls::Error>>,
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

impl TlsStream {
    /// Wraps a connection whose handshake is complete.
    pub(crate) fn new(tcp: TcpStream, mut conn: rustls::Connection) -> TlsStream {
        // Our own bound (MAX_WRITE a call) replaces rustls's.
        conn.set_buffer_limit(None);
        TlsStream {
            tcp,
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                out: Mutex::new(Out::default()),
                input: Mutex::new(In {
                    plain: Vec::new(),
                    pos: 0,
                    raw: vec![0u8; READ_CHUNK].into_boxed_slice(),
                }),
                failure: Mutex::new(None),
            }),
        }
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
    /// the peer sent, a record that did not decrypt), if any.
    pub fn failure(&self) -> Option<rustls::Error> {
        lock(&self.inner.failure).clone()
    }

    /// The DER of the peer's end-entity certificate, when it sent one.
    pub(crate) fn peer_cert_der(&self) -> Option<Vec<u8>> {
        let c = lock(&self.inner.conn);
        c.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.to_vec())
    }

    /// A handle that reports [`TlsStream::failure`] after the stream is gone.
    pub fn failure_probe(&self) -> FailureProbe {
        FailureProbe(self.inner.clone())
    }

    fn note(&self, e: &rustls::Error) {
        let mut f = lock(&self.inner.failure);
        if f.is_none() {
            *f = Some(e.clone());
        }
    }

    /// Sends the close_notify alert, then closes our sending direction.
    pub fn close_write(&self) {
        {
            let mut out = lock(&self.inner.out);
            {
                let mut c = lock(&self.inner.conn);
                c.send_close_notify();
                let _ = c.write_tls(&mut out.buf);
            }
            let _ = self.send_pending(&mut out);
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    /// Closes both directions (a reader blocked on another handle wakes).
    pub fn shutdown(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Sends what waits in `out`; a timeout leaves the rest for later.
    fn send_pending(&self, out: &mut Out) -> io::Result<()> {
        while out.sent < out.buf.len() {
            match (&self.tcp).write(&out.buf[out.sent..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "connection closed",
                    ))
                }
                Ok(n) => out.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        out.buf.clear();
        out.sent = 0;
        Ok(())
    }

    /// One socket read, decrypted into `input.plain`. `Ok(false)`: the
    /// peer closed the TCP connection.
    fn fill(&self, input: &mut In) -> io::Result<bool> {
        if input.pos == input.plain.len() {
            input.plain.clear();
            input.pos = 0;
        }
        let n = loop {
            match (&self.tcp).read(&mut input.raw) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let mut c = lock(&self.inner.conn);
        let mut rest = &input.raw[..n];
        loop {
            if n == 0 {
                // Tell rustls of the EOF: its reader says whether it was clean.
                let _ = c.read_tls(&mut rest);
            } else {
                c.read_tls(&mut rest)?;
            }
            if let Err(e) = c.process_new_packets() {
                self.note(&e);
                return Err(invalid(e));
            }
            // Drain what decrypted, so rustls's own buffer never fills.
            let mut reader = c.reader();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(k) => input.plain.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        if input.plain.len() > input.pos {
                            break; // give what arrived first; the error comes next
                        }
                        return Err(e);
                    }
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        Ok(n > 0)
    }

    /// Copies into `buf` the start of the plaintext not yet read, reading
    /// once more from the socket when less than `buf.len()` bytes wait;
    /// consumes nothing. `Ok(0)`: the peer closed before sending any.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut input = lock(&self.inner.input);
        let input = &mut *input;
        if input.plain.len() - input.pos < buf.len() {
            match self.fill(input) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) && input.plain.len() > input.pos => {}
                Err(e) => return Err(e),
            }
        }
        let avail = &input.plain[input.pos..];
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
        let mut input = lock(&self.inner.input);
        let input = &mut *input;
        loop {
            if input.pos < input.plain.len() {
                let avail = &input.plain[input.pos..];
                let n = avail.len().min(buf.len());
                buf[..n].copy_from_slice(&avail[..n]);
                input.pos += n;
                return Ok(n);
            }
            let before = input.plain.len();
            let open = self.fill(input)?;
            if input.plain.len() == before && !open {
                // EOF: clean (close_notify) or not, rustls's reader says.
                let mut c = lock(&self.inner.conn);
                return c.reader().read(buf);
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut out = lock(&self.inner.out);
        // What an earlier call left goes first; a timeout here accepts
        // nothing of this call.
        self.send_pending(&mut out)?;
        let mut taken = 0;
        {
            let mut c = lock(&self.inner.conn);
            let mut w = c.writer();
            for b in bufs {
                let room = MAX_WRITE - taken;
                if room == 0 {
                    break;
                }
                let part = &b[..b.len().min(room)];
                if part.is_empty() {
                    continue;
                }
                let n = w.write(part)?;
                taken += n;
                if n < part.len() {
                    break;
                }
            }
            while c.wants_write() {
                if c.write_tls(&mut out.buf)? == 0 {
                    break;
                }
            }
        }
        match self.send_pending(&mut out) {
            Ok(()) => Ok(taken),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(taken)
            }
            // The bytes were taken; the next call reports the failure.
            Err(_) if taken > 0 => Ok(taken),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut out = lock(&self.inner.out);
        self.send_pending(&mut out)
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
