//! The connection under a session, and the clock.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use relocd_core::protocol::FRAME_HEADER_LEN;
use relocd_core::time;

/// A byte stream between the two hosts: [`TcpStream`], or anything that
/// reads and writes with timeouts and can be split for a reader thread.
pub trait Link: Read + Write + Send + Sized + 'static {
    /// A second handle on the same connection (for the source's reader
    /// thread).
    fn try_clone(&self) -> io::Result<Self>;
    /// Sets the read timeout (`None`: block).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Sets the write timeout (`None`: block).
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Closes both directions; a blocked reader on another handle wakes
    /// up with EOF or an error.
    fn shutdown(&self);
    /// Closes our sending direction only (the peer reads EOF after what
    /// was sent).
    fn close_write(&self);
}

impl Link for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
    fn close_write(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Write);
    }
}

/// A relocation connection as the daemon holds it: plain TCP, or TLS
/// over TCP (the handshake done). The protocol inside is the same.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, both ends authenticated.
    Tls(crate::tls::TlsStream),
}

impl Conn {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.tcp(),
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Copies the start of what the peer sent and this side has not read
    /// into `buf`, consuming nothing (a TCP peek; under TLS, the plaintext,
    /// reading once more from the socket when less than `buf` waits).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.peek(buf),
            Conn::Tls(s) => s.peek(buf),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read_vectored(bufs),
            Conn::Tls(s) => s.read_vectored(bufs),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write_vectored(bufs),
            Conn::Tls(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Link for Conn {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Tls(s) => Conn::Tls(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(t)
    }
    fn shutdown(&self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
    fn close_write(&self) {
        match self {
            Conn::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Conn::Tls(s) => s.close_write(),
        }
    }
}

/// The one place where the host's clock meets the core's: core
/// [`time::Instant`]s are nanoseconds since this clock was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    /// Now, as the core counts.
    pub fn now(&self) -> time::Instant {
        self.core(std::time::Instant::now())
    }

    /// A std instant as the core counts (saturating at the epoch).
    pub fn core(&self, t: std::time::Instant) -> time::Instant {
        let d = t.saturating_duration_since(self.epoch);
        time::Instant::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// A core instant as a std instant.
    pub fn std(&self, t: time::Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(t.as_nanos())
    }

    /// How long from now until `t` (zero if past).
    pub fn until(&self, t: time::Instant) -> Duration {
        self.std(t)
            .saturating_duration_since(std::time::Instant::now())
    }
}

/// How a read of a whole buffer ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The buffer is full.
    Done,
    /// The peer closed the connection.
    Eof,
    /// The read failed.
    Failed,
    /// `idle` asked to stop.
    Stopped,
}

/// Fills `buf`, retrying after read timeouts and short reads; after each
/// of them `idle` is called and the read stops if it returns `true`. So a
/// peer that trickles a frame a few bytes at a time does not hold the
/// reader past its deadlines: they are looked at as often as when nothing
/// comes.
pub(crate) fn read_full<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    idle: &mut dyn FnMut() -> bool,
) -> ReadEnd {
    read_full_vectored(r, &mut [buf], idle)
}

/// [`read_full`] over several buffers, filled in order with vectored
/// reads (one system call for many stretches of guest memory when the
/// socket holds them).
pub(crate) fn read_full_vectored<R: Read>(
    r: &mut R,
    bufs: &mut [&mut [u8]],
    idle: &mut dyn FnMut() -> bool,
) -> ReadEnd {
    /// Linux refuses more buffers than this in one call (`UIO_MAXIOV`).
    const MAX_IOV: usize = 1024;
    let mut slices: Vec<IoSliceMut<'_>> = bufs
        .iter_mut()
        .filter(|b| !b.is_empty())
        .map(|b| IoSliceMut::new(b))
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        let n = left.len().min(MAX_IOV);
        match r.read_vectored(&mut left[..n]) {
            Ok(0) => return ReadEnd::Eof,
            Ok(got) => {
                IoSliceMut::advance_slices(&mut left, got);
                if !left.is_empty() && idle() {
                    return ReadEnd::Stopped;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if idle() {
                    return ReadEnd::Stopped;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ReadEnd::Failed,
        }
    }
    ReadEnd::Done
}

/// How long one blocked write call waits before the writer looks at its
/// frame's deadline and its stop condition again: the drivers set it as
/// the link's write timeout.
pub(crate) const WRITE_SLICE: Duration = Duration::from_millis(50);

/// Why a frame could not be written whole.
#[derive(Debug)]
pub(crate) enum WriteFail {
    /// The connection failed.
    Io(io::Error),
    /// The frame's deadline passed: the peer reads too little or nothing.
    TimedOut,
    /// The writer's stop condition asked to give up (a cancel).
    Stopped,
}

/// A failed frame write: why, and whether any byte of the frame was
/// accepted (if so, the byte stream is out of step and must be closed).
#[derive(Debug)]
pub(crate) struct WriteError {
    pub(crate) fail: WriteFail,
    pub(crate) accepted: bool,
}

/// Writes one whole frame, `parts` in order, with vectored writes (one
/// system call for a whole image chunk when the socket takes it).
///
/// The frame has one `deadline`, however the peer's reading splits it
/// into partial writes: a peer that takes a little now and then cannot
/// stretch it (each write call waits at most the link's write timeout,
/// [`WRITE_SLICE`]). Whenever a call blocks or comes back short, `stop`
/// is asked whether to give up ([`WriteFail::Stopped`]).
pub(crate) fn write_frame<W: Write>(
    w: &mut W,
    parts: &[&[u8]],
    deadline: std::time::Instant,
    stop: &mut dyn FnMut() -> bool,
) -> Result<(), WriteError> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    let mut accepted = false;
    let fail = |fail, accepted| Err(WriteError { fail, accepted });
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "connection closed");
                return fail(WriteFail::Io(e), accepted);
            }
            Ok(n) => {
                accepted = true;
                IoSlice::advance_slices(&mut bufs, n);
                if bufs.is_empty() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return fail(WriteFail::Io(e), accepted),
        }
        // Blocked, or short: the peer is slow to read.
        if stop() {
            return fail(WriteFail::Stopped, accepted);
        }
        if std::time::Instant::now() >= deadline {
            return fail(WriteFail::TimedOut, accepted);
        }
    }
    // A link that buffers (TLS records the socket has not taken yet) sends
    // the rest now, under the same deadline; for TCP this does nothing.
    loop {
        match w.flush() {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return fail(WriteFail::Io(e), accepted),
        }
        if stop() {
            return fail(WriteFail::Stopped, accepted);
        }
        if std::time::Instant::now() >= deadline {
            return fail(WriteFail::TimedOut, accepted);
        }
    }
}

/// A frame header's bytes.
pub(crate) type Header = [u8; FRAME_HEADER_LEN];
