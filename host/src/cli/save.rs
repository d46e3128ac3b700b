//! `relocd save [-c] DOMAIN FILE`: write a guest to a file (as `xl save`).

use super::summary::{outcome_json, transfer_text};
use super::{absolute, call_long, unexpected, Failure, LongCommand, Output, EXIT_STATUS_HELP};
use crate::api::{ErrorKind, Outcome, Request, SaveRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};

const LONG_ABOUT: &str = "\
Write a guest to a file (xl save): its memory and vCPU state as a Xen \
migration stream, which `relocd restore` reads back.

As with xl save, the guest is destroyed once the file is complete, unless -c \
keeps it running. A failed or cancelled save leaves it running and removes \
nothing but the partial file.

FILE is replaced only once it is complete: the stream goes to a temporary \
file of relocd's own beside it (never an existing file), which is renamed \
over FILE at the end. A character device or a FIFO is written in place, as \
xl save does (a named pipe another program reads, /dev/null); a \
directory or any other kind of file is refused before the guest is touched.

FILE is written by the daemon: a relative path is taken from this shell's \
directory, and the daemon must be able to write there.

With --live the guest keeps running while its memory is written, in rounds \
that resend the pages it dirtied, and is suspended only for the last of \
them (what xl migrate does to a host); the summary gives the rounds, pages \
and the time it was stopped. Without it the guest is suspended first.

Backends: the sim backend saves its simulated guests, offline or live; the \
xen backend (serve \
--backend xen) saves 64-bit PV guests as a file a stock `xl restore` reads \
(the domain's xl configuration is taken from libxl's record of it in \
/var/lib/xen, or made from what Xen and xenstore say when there is none). \
HVM and 32-bit PV guests are refused.";

/// `relocd save`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[command(about = "Write a guest to a file (xl save)", long_about = LONG_ABOUT, after_help = EXIT_STATUS_HELP)]
pub struct SaveArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// Keep the guest running after the save (a checkpoint), as xl save -c.
    #[arg(short = 'c', long = "keep-running")]
    pub keep_running: bool,
    /// Pre-copy while the guest runs; suspend it only for the last pages.
    #[arg(long)]
    pub live: bool,
    /// Cap on the write rate, bytes per second with binary units (100M/s,
    /// 1G; at least 4K): on the live rounds, and on the whole file of an
    /// offline save; never on a live save's last round.
    #[arg(long, value_name = "RATE", value_parser = super::migrate::parse_bandwidth)]
    pub bandwidth: Option<u64>,
    /// The guest (name or id).
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
    /// The file to write.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

impl SaveArgs {
    /// The request, with FILE made absolute; a failure when FILE's
    /// directory does not exist.
    pub fn to_request(&self) -> Result<SaveRequest, Failure> {
        let file = absolute(&self.file)?;
        if file.as_os_str().to_string_lossy().ends_with('/') || self.file.as_os_str().is_empty() {
            return Err(Failure::usage(format!(
                "{}: FILE must name a file",
                self.file.display()
            )));
        }
        if let Some(dir) = file.parent() {
            if !dir.is_dir() {
                return Err(Failure::new(
                    ErrorKind::NotFound,
                    format!("{}: no such directory", dir.display()),
                ));
            }
        }
        Ok(SaveRequest {
            domain: self.domain.clone(),
            file,
            keep_running: self.keep_running,
            live: self.live,
            bandwidth_bytes_per_s: self.bandwidth,
        })
    }
}

/// Runs `relocd save`.
pub fn run(control: &Path, args: &SaveArgs, out: &Output) -> Result<(), Failure> {
    let req = args.to_request()?;
    let cmd = LongCommand {
        label: format!("save {}", req.domain),
        on_cancel: format!("{} keeps running; no file is left", req.domain),
    };
    let outcome = call_long(control, &Request::Save(req.clone()), &cmd, out)?;
    let Outcome::Saved(summary) = &outcome else {
        return Err(unexpected("save", &outcome));
    };
    if out.json {
        out.print_json(&outcome_json(
            &outcome,
            &[
                ("file", Value::from(req.file.display().to_string())),
                ("keep_running", Value::from(req.keep_running)),
                ("live", Value::from(req.live)),
            ],
        ));
    } else {
        let fate = if req.keep_running {
            "still running"
        } else {
            "destroyed"
        };
        print!(
            "{}",
            transfer_text(
                &format!(
                    "saved {} to {} (the guest is {fate})",
                    summary.domain,
                    req.file.display()
                ),
                summary
            )
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        args: SaveArgs,
    }

    #[test]
    fn save_arguments() {
        let t = T::try_parse_from(["save", "-c", "web1", "web1.save"]).unwrap();
        let req = t.args.to_request().unwrap();
        assert!(req.keep_running);
        assert!(req.file.is_absolute());
        assert!(req.file.ends_with("web1.save"));
        let t = T::try_parse_from(["save", "web1", "/tmp/w.save"]).unwrap();
        assert!(!t.args.to_request().unwrap().keep_running);
        let t = T::try_parse_from(["save", "web1", "/nonexistent-dir/w.save"]).unwrap();
        let e = t.args.to_request().unwrap_err();
        assert_eq!(e.error.kind, ErrorKind::NotFound);
        assert!(e.error.message.contains("/nonexistent-dir"), "{e:?}");
        assert!(T::try_parse_from(["save", "web1"]).is_err());
    }
}
