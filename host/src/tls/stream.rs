//! A TLS connection that behaves as the session's link: it reads and
//! writes with the socket's timeouts, and it can be split between a writer
//! and a reader thread (the source's) with [`TlsStream::try_clone`].
//!
//! The rustls connection sits behind a mutex. The reader waits for
//! ciphertext with the lock released (a socket read into a buffer of its
//! own), then takes it to decrypt, straight into the caller's buffer. The
//! writer encrypts under it and hands the records to the socket (one
//! vectored write, no copy), holding it at most the socket's write timeout
//! (the drivers' short write slice); what the socket did not take stays
//! queued in rustls, in order, and goes first with the next write or with
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

/// The reader's state: ciphertext read and not yet given to rustls, and
/// plaintext peeked at and not yet read.
struct In {
    raw: Box<[u8]>,
    raw_pos: usize,
    raw_len: usize,
    plain: Vec<u8>,
    pos: usize,
    /// The socket said EOF (and rustls was told).
    eof: bool,
}

struct Inner {
    conn: Mutex<rustls::Connection>,
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

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// What one attempt to get plaintext out of rustls gave.
enum Plain {
    /// Bytes (or 0: the peer closed cleanly).
    Got(usize),
    /// Nothing decrypted waits.
    Empty,
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
                input: Mutex::new(In {
                    raw: vec![0u8; READ_CHUNK].into_boxed_slice(),
                    raw_pos: 0,
                    raw_len: 0,
                    plain: Vec::new(),
                    pos: 0,
                    eof: false,
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
            let mut c = lock(&self.inner.conn);
            c.send_close_notify();
            let _ = self.send(&mut c);
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    /// Closes both directions (a reader blocked on another handle wakes).
    pub fn shutdown(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Hands the queued records to the socket; a timeout leaves the rest
    /// queued.
    fn send(&self, c: &mut rustls::Connection) -> io::Result<()> {
        while c.wants_write() {
            if c.write_tls(&mut &self.tcp)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed",
                ));
            }
        }
        Ok(())
    }

    /// Plaintext rustls holds, into `buf`.
    fn take_plain(c: &mut rustls::Connection, buf: &mut [u8]) -> io::Result<Plain> {
        match c.reader().read(buf) {
            Ok(n) => Ok(Plain::Got(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Plain::Empty),
            Err(e) => Err(e),
        }
    }

    /// Gives rustls the ciphertext read and not yet given, up to the first
    /// record that decrypts to plaintext (rustls holds only so much of it).
    fn feed(&self, c: &mut rustls::Connection, input: &mut In) -> io::Result<()> {
        while input.raw_pos < input.raw_len {
            let mut rest = &input.raw[input.raw_pos..input.raw_len];
            let before = rest.len();
            c.read_tls(&mut rest)?;
            input.raw_pos += before - rest.len();
            match c.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => break,
                Ok(_) => {}
                Err(e) => {
                    self.note(&e);
                    let _ = self.send(c); // the alert, if rustls queued one
                    return Err(invalid(e));
                }
            }
        }
        Ok(())
    }

    /// One socket read into `input.raw` (the lock released meanwhile);
    /// at EOF rustls is told, and its reader says whether it was clean.
    fn fill(&self, input: &mut In) -> io::Result<()> {
        let n = loop {
            match (&self.tcp).read(&mut input.raw) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        input.raw_pos = 0;
        input.raw_len = n;
        if n == 0 {
            input.eof = true;
            let mut c = lock(&self.inner.conn);
            let _ = c.read_tls(&mut &[][..]);
            if let Err(e) = c.process_new_packets() {
                self.note(&e);
                return Err(invalid(e));
            }
        }
        Ok(())
    }

    /// Copies into `buf` the start of the plaintext not yet read, reading
    /// once more from the socket when less than `buf.len()` bytes wait;
    /// consumes nothing. `Ok(0)`: the peer closed before sending any.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut input = lock(&self.inner.input);
        let input = &mut *input;
        let mut read_once = false;
        while input.plain.len() - input.pos < buf.len() {
            {
                let mut c = lock(&self.inner.conn);
                let mut chunk = [0u8; 4096];
                match Self::take_plain(&mut c, &mut chunk) {
                    Ok(Plain::Got(0)) => break,
                    Ok(Plain::Got(n)) => {
                        input.plain.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    Ok(Plain::Empty) => {}
                    Err(_) if input.plain.len() > input.pos => break,
                    Err(e) => return Err(e),
                }
                if input.raw_pos < input.raw_len {
                    self.feed(&mut c, input)?;
                    continue;
                }
            }
            if input.eof || (read_once && input.plain.len() > input.pos) {
                break;
            }
            match self.fill(input) {
                Ok(()) => read_once = true,
                Err(e) if timed_out(&e) && input.plain.len() > input.pos => break,
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
        if input.pos < input.plain.len() {
            let avail = &input.plain[input.pos..];
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            input.pos += n;
            if input.pos == input.plain.len() {
                input.plain = Vec::new();
                input.pos = 0;
            }
            return Ok(n);
        }
        loop {
            {
                let mut c = lock(&self.inner.conn);
                if let Plain::Got(n) = Self::take_plain(&mut c, buf)? {
                    return Ok(n);
                }
                if input.raw_pos < input.raw_len {
                    self.feed(&mut c, input)?;
                    continue;
                }
                if input.eof {
                    // rustls's reader said neither clean close nor error.
                    return Ok(0);
                }
            }
            self.fill(input)?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut c = lock(&self.inner.conn);
        // What an earlier call left goes first; a timeout here accepts
        // nothing of this call.
        self.send(&mut c)?;
        let mut taken = 0;
        {
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
        }
        match self.send(&mut c) {
            Ok(()) => Ok(taken),
            Err(e) if timed_out(&e) => Ok(taken),
            // The bytes were taken; the next call reports the failure.
            Err(_) if taken > 0 => Ok(taken),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut c = lock(&self.inner.conn);
        self.send(&mut c)
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
