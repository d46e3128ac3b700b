//! `relocd restore FILE`: start a guest from a file `relocd save` wrote.

use super::summary::{format_bytes, outcome_json};
use super::{absolute, call_long, unexpected, Failure, LongCommand, Output, EXIT_STATUS_HELP};
use crate::api::{ErrorKind, Outcome, Request, RestoreRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};

const LONG_ABOUT: &str = "\
Start a guest from a saved file (xl restore): one written by `relocd save` \
or by `xl save`. The guest gets the name it was saved under; that name must \
be free here. It runs only once the whole file is in; a damaged or \
truncated file leaves nothing behind.

FILE is read by the daemon: a relative path is taken from this shell's \
directory.

Backends: the sim backend restores simulated guests; the xen backend (serve \
--backend xen) restores 64-bit PV guests, builds the domain's xenstore \
entries and introduces it, so its console and xenstore connection come back \
(guests with network or disk devices get no backends: they are not \
restored with devices yet).";

/// `relocd restore`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[command(about = "Start a guest from a saved file (xl restore)", long_about = LONG_ABOUT, after_help = EXIT_STATUS_HELP)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// The file `relocd save` wrote.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

impl RestoreArgs {
    /// The request, with FILE made absolute; a failure when it is missing.
    pub fn to_request(&self) -> Result<RestoreRequest, Failure> {
        let file = absolute(&self.file)?;
        if !file.is_file() {
            return Err(Failure::new(
                ErrorKind::NotFound,
                format!("{}: no such file", file.display()),
            ));
        }
        Ok(RestoreRequest { file })
    }
}

/// Runs `relocd restore`.
pub fn run(control: &Path, args: &RestoreArgs, out: &Output) -> Result<(), Failure> {
    let req = args.to_request()?;
    let cmd = LongCommand {
        label: format!("restore {}", req.file.display()),
        on_cancel: "no guest is started from the file".to_owned(),
    };
    let outcome = call_long(control, &Request::Restore(req.clone()), &cmd, out)?;
    let Outcome::Restored(domain) = &outcome else {
        return Err(unexpected("restore", &outcome));
    };
    if out.json {
        out.print_json(&outcome_json(
            &outcome,
            &[("file", Value::from(req.file.display().to_string()))],
        ));
    } else {
        println!(
            "restored {} from {} as domain {} ({}, {})",
            domain.name,
            req.file.display(),
            domain.id,
            format_bytes(domain.memory_bytes),
            domain.state.label()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_refused_before_the_daemon() {
        let e = RestoreArgs {
            conn: Default::default(),
            file: "/nonexistent/web1.save".into(),
        }
        .to_request()
        .unwrap_err();
        assert_eq!(e.error.kind, ErrorKind::NotFound);
        assert!(e.error.message.contains("no such file"), "{e:?}");
        let here = std::env::current_exe().unwrap();
        let req = RestoreArgs {
            conn: Default::default(),
            file: here.clone(),
        }
        .to_request()
        .unwrap();
        assert_eq!(req.file, here);
    }
}
