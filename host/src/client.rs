//! The CLI's side of the management socket: a blocking [`Client`] and the
//! thin client commands (`relocd list`, …) built on it.

use crate::api::{
    read_line, write_line, CommandError, DomainInfo, ErrorKind, FrameError, Outcome, Progress,
    Reply, Request, MAX_LINE,
};
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// `--control` after a subcommand that talks to the daemon. The same
/// option before the subcommand (`relocd --control SOCKET list`) and
/// `RELOCD_CONTROL` name the socket too; this one wins when both are given.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ControlArg {
    /// The daemon's management socket (default: RELOCD_CONTROL, else
    /// /run/relocd/relocd.sock).
    #[arg(long = "control", value_name = "SOCKET")]
    pub control: Option<std::path::PathBuf>,
}

impl ControlArg {
    /// The socket: this option's, else `outer` (the option before the
    /// subcommand, which carries RELOCD_CONTROL and the default).
    pub fn or<'a>(&'a self, outer: &'a Path) -> &'a Path {
        self.control.as_deref().unwrap_or(outer)
    }
}

/// Why a command could not be done through the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon's socket could not be reached.
    #[error("cannot reach relocd at {path}: {source} (is `relocd serve` running? --control or RELOCD_CONTROL picks the socket)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The socket is there, but this user may not use it.
    #[error(
        "permission denied on relocd's management socket {path}: it is {owner}'s (mode 0600), \
         so only {owner} may run relocd's commands; run this as {owner} (e.g. with sudo)"
    )]
    Denied {
        /// The socket.
        path: PathBuf,
        /// Who owns it (a user name, or `uid N`).
        owner: String,
    },
    /// The connection failed mid-command.
    #[error("connection to relocd failed: {0}")]
    Io(#[from] io::Error),
    /// The daemon said something this client does not understand, or hung
    /// up before its final line.
    #[error("relocd protocol error: {0}")]
    Protocol(String),
    /// The daemon ran the command and it failed.
    #[error("{0}")]
    Remote(CommandError),
}

impl ClientError {
    /// The error as the daemon's typed error (local failures included), for
    /// `--json` output.
    pub fn to_command_error(&self) -> CommandError {
        match self {
            ClientError::Remote(e) => e.clone(),
            ClientError::Connect { .. } | ClientError::Io(_) => {
                CommandError::new(ErrorKind::Network, self.to_string())
            }
            ClientError::Denied { .. } => {
                CommandError::new(ErrorKind::PermissionDenied, self.to_string())
            }
            ClientError::Protocol(_) => CommandError::new(ErrorKind::Internal, self.to_string()),
        }
    }
}

/// Who owns `path`: `root`, a user name from /etc/passwd, or `uid N`.
fn owner_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata(path).map(|m| m.uid()) else {
        return "its owner".to_owned();
    };
    if uid == 0 {
        return "root".to_owned();
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A connection to the daemon's management socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: Vec<u8>,
}

/// Sends `Cancel` for the command a [`Client`] is running, from another
/// thread (a Ctrl-C handler).
#[derive(Debug)]
pub struct Canceller(UnixStream);

impl Canceller {
    /// Asks the daemon to stop the running command. Its final reply still
    /// comes to the [`Client::call`] in progress.
    pub fn cancel(&mut self) -> Result<(), ClientError> {
        write_line(&mut self.0, &Request::Cancel)?;
        Ok(())
    }
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                ClientError::Denied {
                    path: path.to_owned(),
                    owner: owner_of(path),
                }
            } else {
                ClientError::Connect {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            line: Vec::new(),
        })
    }

    /// A handle that cancels the command this client runs.
    pub fn canceller(&self) -> Result<Canceller, ClientError> {
        Ok(Canceller(self.writer.try_clone()?))
    }

    /// Sends `req` and reads its reply: each progress line goes to
    /// `on_progress`, the final line is the result.
    pub fn call(
        &mut self,
        req: &Request,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ClientError> {
        write_line(&mut self.writer, req)?;
        loop {
            match read_line(&mut self.reader, &mut self.line, MAX_LINE) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ClientError::Protocol(format!(
                        "the daemon closed the connection before answering {}",
                        req.name()
                    )))
                }
                Err(FrameError::TooLong { limit }) => {
                    return Err(ClientError::Protocol(format!(
                        "reply line longer than {limit} bytes"
                    )))
                }
                Err(FrameError::Io(e)) => return Err(e.into()),
            }
            let reply: Reply = serde_json::from_slice(&self.line)
                .map_err(|e| ClientError::Protocol(format!("unreadable reply: {e}")))?;
            match reply {
                Reply::Progress(p) => on_progress(&p),
                Reply::Ok { result } => return Ok(result),
                Reply::Error(e) => return Err(ClientError::Remote(e)),
            }
        }
    }
}

/// Connects to `control` and runs one request without progress display.
pub fn call_once(control: &Path, req: &Request) -> Result<Outcome, ClientError> {
    Client::connect(control)?.call(req, |_| {})
}

fn unexpected(cmd: &str, outcome: &Outcome) -> ClientError {
    ClientError::Protocol(format!("unexpected answer to {cmd}: {outcome:?}"))
}

/// Memory in MiB, as xm list shows it.
fn mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

/// `relocd list`'s table: one line per domain, xm's column order.
pub fn format_domains(domains: &[DomainInfo]) -> String {
    let width = domains
        .iter()
        .map(|d| d.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(24);
    let mut out = format!(
        "{:<width$} {:>5} {:>8} {:>5}  {}\n",
        "Name", "ID", "Mem(MiB)", "VCPUs", "State"
    );
    for d in domains {
        out.push_str(&format!(
            "{:<width$} {:>5} {:>8} {:>5}  {}\n",
            d.name,
            d.id,
            mib(d.memory_bytes),
            d.vcpus,
            d.state.label()
        ));
    }
    out
}

/// `relocd list`: asks the daemon for its domains and prints them (a table,
/// or `{"domains":[…]}` with `json`).
pub fn list(control: &Path, json: bool) -> Result<(), ClientError> {
    let outcome = call_once(control, &Request::List)?;
    let Outcome::Domains { domains } = outcome else {
        return Err(unexpected("list", &outcome));
    };
    let mut stdout = io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, &serde_json::json!({ "domains": domains }))
            .map_err(io::Error::from)?;
        writeln!(stdout)?;
    } else {
        stdout.write_all(format_domains(&domains).as_bytes())?;
    }
    Ok(())
}

/// Prints a command's failure: `{"error":{"kind":…,"message":…}}` on stdout
/// with `json`, else `relocd: MESSAGE` on stderr.
pub fn report_error(err: &dyn std::fmt::Display, kind: ErrorKind, json: bool) {
    if json {
        let e = CommandError::new(kind, err.to_string());
        println!("{}", serde_json::json!({ "error": e }));
    } else {
        eprintln!("relocd: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DomainState;

    #[test]
    fn table_has_xm_columns_and_in_doubt() {
        let table = format_domains(&[
            DomainInfo {
                id: 0,
                name: "Domain-0".into(),
                memory_bytes: 2048 << 20,
                vcpus: 4,
                state: DomainState::Running,
                steps: None,
            },
            DomainInfo {
                id: 7,
                name: "web1".into(),
                memory_bytes: 1 << 30,
                vcpus: 2,
                state: DomainState::InDoubt,
                steps: None,
            },
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("Name "), "{table}");
        assert!(lines[0].ends_with("State"), "{table}");
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cols, ["web1", "7", "1024", "2", "in", "doubt"]);
        assert_eq!(format_domains(&[]).lines().count(), 1);
    }

    #[test]
    fn unreachable_daemon_names_the_socket() {
        let err = Client::connect(Path::new("/nonexistent/relocd.sock")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/relocd.sock"), "{text}");
        assert!(text.contains("relocd serve"), "{text}");
        assert_eq!(err.to_command_error().kind, ErrorKind::Network);
    }
}
