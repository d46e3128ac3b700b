//! The connection under a session, and the clock.

use std::io::{self, IoSlice, Read, Write};
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

/// Fills `buf`, retrying after read timeouts; after each timeout `idle` is
/// called and the read stops if it returns `true`.
pub(crate) fn read_full<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    idle: &mut dyn FnMut() -> bool,
) -> ReadEnd {
    let mut pos = 0;
    while pos < buf.len() {
        match r.read(&mut buf[pos..]) {
            Ok(0) => return ReadEnd::Eof,
            Ok(n) => pos += n,
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

/// Writes all of `buf`; on failure says whether any byte was accepted.
pub(crate) fn write_all<W: Write>(w: &mut W, buf: &[u8]) -> Result<(), (io::Error, bool)> {
    let mut pos = 0;
    while pos < buf.len() {
        match w.write(&buf[pos..]) {
            Ok(0) => {
                return Err((
                    io::Error::new(io::ErrorKind::WriteZero, "connection closed"),
                    pos > 0,
                ))
            }
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, pos > 0)),
        }
    }
    Ok(())
}

/// Writes all of `parts`, in order, with vectored writes (one system call
/// for a whole image chunk when the socket takes it); on failure says
/// whether any byte was accepted.
pub(crate) fn write_all_parts<W: Write>(
    w: &mut W,
    parts: &[&[u8]],
) -> Result<(), (io::Error, bool)> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    let mut accepted = false;
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err((
                    io::Error::new(io::ErrorKind::WriteZero, "connection closed"),
                    accepted,
                ))
            }
            Ok(n) => {
                accepted = true;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, accepted)),
        }
    }
    Ok(())
}

/// A frame header's bytes.
pub(crate) type Header = [u8; FRAME_HEADER_LEN];
