//! The client commands that talk to the daemon (`relocd migrate`, `save`,
//! `restore`, `resolve`, `sim create`): their arguments (checked here, before
//! anything is sent), the request they make, the progress bar, and what they
//! print at the end.
//!
//! Every command prints its result on stdout: a few lines for people, or
//! with `--json` one JSON object (the daemon's outcome, `{"kind":…,…}`), or
//! `{"error":{"kind":…,"message":…}}` on failure. Progress and notes go to
//! stderr. Exit status: [`EXIT_OK`], [`EXIT_FAILURE`], [`EXIT_USAGE`],
//! [`EXIT_CANCELLED`] (see [`EXIT_STATUS_HELP`]).

pub mod migrate;
pub mod progress;
pub mod resolve;
pub mod restore;
pub mod save;
pub mod sim;
pub mod status;
pub mod summary;

use crate::api::{CommandError, ErrorKind, Outcome, Request};
use crate::client::{Client, ClientError};
use progress::ProgressView;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit status of a command that did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit status of a command that failed (the daemon's error, or the daemon
/// could not be reached).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error: bad or conflicting arguments; nothing was
/// sent to the daemon. (clap's own code for usage errors.)
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a command cancelled with Ctrl-C (128 + SIGINT, as shells
/// report it).
pub const EXIT_CANCELLED: u8 = 130;

/// The exit statuses, for `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    the command failed (the daemon's error is printed; with --json, {\"error\":{\"kind\":…,\"message\":…}} on stdout)
  2    usage error: bad or conflicting arguments (nothing was sent to the daemon), or a config file the command cannot use
  130  cancelled with Ctrl-C (a migration or save stops before its point of no return: the guest keeps running here)";

/// A failed command: the typed error to print and the exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong (printed as `relocd: MESSAGE`, or as JSON).
    pub error: CommandError,
    /// The process's exit status.
    pub code: u8,
}

impl Failure {
    /// A failure with [`EXIT_FAILURE`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        // One rule for every command: a configuration it cannot use is a
        // usage error, as check-host has always said.
        let code = if kind == ErrorKind::Config {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        };
        Failure {
            error: CommandError::new(kind, message),
            code,
        }
    }

    /// A usage error ([`EXIT_USAGE`]), found before the daemon was asked.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            error: CommandError::new(ErrorKind::BadRequest, message),
            code: EXIT_USAGE,
        }
    }

    /// Prints the failure: `relocd: MESSAGE` on stderr, or with `json`
    /// `{"error":{"kind":…,"message":…}}` on stdout.
    pub fn report(&self, json: bool) {
        crate::client::report_error(&self.error, json);
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            error: e.to_command_error(),
            code: EXIT_FAILURE,
        }
    }
}

/// Output settings shared by every client command.
#[derive(Clone, Debug)]
pub struct Output {
    /// `--json`: one JSON object on stdout, no progress bar.
    pub json: bool,
    /// Draw the progress bar (stderr is a terminal and not `--json`).
    pub progress: bool,
}

impl Output {
    /// Settings for a command run from a shell: the bar only on a terminal
    /// and never with `json`.
    pub fn detect(json: bool) -> Output {
        use std::io::IsTerminal;
        Output {
            json,
            progress: !json && std::io::stderr().is_terminal(),
        }
    }

    /// Prints one JSON value as a line on stdout.
    pub fn print_json(&self, value: &serde_json::Value) {
        println!("{value}");
    }
}

/// A path made absolute against the client's working directory (the
/// daemon's is not the client's).
pub fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| {
        Failure::usage(format!(
            "{}: cannot make the path absolute: {e}",
            path.display()
        ))
    })
}

/// A request without progress (`resolve`, `sim create`).
pub fn call_short(control: &Path, req: &Request) -> Result<Outcome, Failure> {
    Ok(crate::client::call_once(control, req)?)
}

/// How a long command reacts to Ctrl-C.
#[derive(Clone, Debug)]
pub struct LongCommand {
    /// What the progress bar calls the command (`migrate web1`).
    pub label: String,
    /// What the guest's fate is when the command is cancelled, printed at
    /// the first Ctrl-C and as the final error (`web1 keeps running at the
    /// source`).
    pub on_cancel: String,
}

/// Runs a long request (migrate, save, restore) with the progress bar on
/// stderr and Ctrl-C sending `cancel`.
///
/// The first SIGINT (or SIGTERM) sends `cancel` and says what happens to
/// the guest; the daemon's final reply still decides the outcome (a command
/// past its point of no return finishes). A second one leaves at once
/// with [`EXIT_CANCELLED`]; closing the connection cancels too.
pub fn call_long(
    control: &Path,
    req: &Request,
    cmd: &LongCommand,
    out: &Output,
) -> Result<Outcome, Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut client = Client::connect(control)?;
    let mut canceller = client.canceller()?;
    let mut view = ProgressView::new(&cmd.label, out.progress);
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| {
        Failure::new(
            ErrorKind::Internal,
            format!("cannot install the Ctrl-C handler: {e}"),
        )
    })?;
    let handle = signals.handle();
    let watcher = std::thread::spawn({
        let bar = view.bar().clone();
        let interrupted = interrupted.clone();
        let note = cmd.on_cancel.clone();
        move || {
            for _ in signals.forever() {
                if interrupted.swap(true, Ordering::SeqCst) {
                    bar.abandon();
                    eprintln!("relocd: interrupted again; leaving (the daemon still stops the command: {note})");
                    std::process::exit(i32::from(EXIT_CANCELLED));
                }
                let sent = canceller.cancel();
                bar.suspend(|| match sent {
                    Ok(()) => eprintln!("relocd: cancelling: {note}; waiting for the daemon (Ctrl-C again to leave now)"),
                    Err(e) => eprintln!("relocd: could not send cancel: {e}"),
                });
            }
        }
    });
    let result = client.call(req, |p| view.update(p));
    view.finish();
    handle.close();
    let _ = watcher.join();
    match result {
        Ok(outcome) => {
            if interrupted.load(Ordering::SeqCst) {
                eprintln!("relocd: the cancel came too late: the command had already completed");
            }
            Ok(outcome)
        }
        // The daemon's word on the guest's fate, once.
        Err(ClientError::Remote(e)) if e.kind == ErrorKind::Cancelled => Err(Failure {
            error: e,
            code: EXIT_CANCELLED,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The answer did not match the request (a daemon of another version).
pub fn unexpected(cmd: &str, outcome: &Outcome) -> Failure {
    Failure::new(
        ErrorKind::Internal,
        format!("relocd protocol error: unexpected answer to {cmd}: {outcome:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_fail_with_status_1() {
        let f = Failure::from(ClientError::Remote(CommandError::not_implemented(
            "migrate",
        )));
        assert_eq!(f.code, EXIT_FAILURE);
        assert_eq!(f.error.kind, ErrorKind::NotImplemented);
        assert_eq!(Failure::usage("x").code, EXIT_USAGE);
    }

    #[test]
    fn relative_paths_become_absolute() {
        let p = absolute(Path::new("guest.save")).unwrap();
        assert!(p.is_absolute());
        assert!(p.ends_with("guest.save"));
        assert_eq!(
            absolute(Path::new("/tmp/x")).unwrap(),
            PathBuf::from("/tmp/x")
        );
    }
}
