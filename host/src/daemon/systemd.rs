//! Running under systemd, without libsystemd: readiness told through
//! `$NOTIFY_SOCKET` (a Unix datagram, `sd_notify`'s protocol) and log lines
//! fit for the journal when `$JOURNAL_STREAM` says standard error is
//! connected to it.
//!
//! - [`notify`] sends `READY=1` (the unit is `Type=notify`: systemd counts
//!   relocd started only then, once its management socket and its
//!   relocation listener are up) and `STOPPING=1`. Without
//!   `$NOTIFY_SOCKET` it does nothing.
//! - [`journal_stream`] is true when `$JOURNAL_STREAM` names standard
//!   error's device and inode (the variable is inherited by children whose
//!   stderr may go elsewhere, so the identity is checked, as the
//!   convention asks). Then each log line starts with its syslog priority,
//!   `<3>` error … `<7>` debug ([`JournalFormat`]), which journald
//!   strips and keeps as the entry's priority, and carries no timestamp
//!   (the journal has its own). On a terminal nothing changes.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=…`, newline-separated)
/// to the service manager. `Ok(false)` when there is none
/// (`$NOTIFY_SOCKET` unset).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => {
            notify_to(&socket, state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket`: a path, or an
/// abstract socket's name after `@`.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        Some((b'/', _)) => sock.send_to(state.as_bytes(), socket)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an abstract socket (@name)",
            ))
        }
    };
    if sent != state.len() {
        return Err(io::Error::other("the notification was cut short"));
    }
    Ok(())
}

/// Whether `journal_stream` (`$JOURNAL_STREAM`'s value, `DEVICE:INODE` in
/// decimal) names the file with `dev` and `ino`.
pub fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// Whether standard error is connected to the journal (module doc).
pub fn journal_stream() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => names_stream(value, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// A level's syslog priority, as journald reads it from a `<N>` prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Log lines for the journal: `<N>` then the usual line without its
/// timestamp and level (the priority says it).
#[derive(Debug)]
pub struct JournalFormat {
    inner: format::Format<format::Full, ()>,
}

impl JournalFormat {
    /// The format (module doc).
    pub fn new() -> JournalFormat {
        JournalFormat {
            inner: format::format()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat::new()
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_names_a_device_and_an_inode() {
        assert!(names_stream("8:1234", 8, 1234));
        assert!(names_stream("8:1234\n", 8, 1234));
        assert!(!names_stream("8:1235", 8, 1234));
        assert!(!names_stream("9:1234", 8, 1234));
        assert!(!names_stream("8", 8, 1234));
        assert!(!names_stream("x:y", 8, 1234));
        assert!(!names_stream("", 0, 0));
    }

    #[test]
    fn levels_are_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("relocd-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("relocd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(notify_to(OsStr::new("relative"), "READY=1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
