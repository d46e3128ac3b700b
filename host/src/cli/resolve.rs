//! `relocd resolve DOMAIN --resume|--discard`: settle a guest left in doubt.

use super::{call_short, unexpected, Failure, Output, EXIT_STATUS_HELP};
use crate::api::{Outcome, Request, ResolveAction, ResolveRequest};
use std::path::Path;

const LONG_ABOUT: &str = "\
Settle a guest that `relocd list` shows \"in doubt\": a migration's other host \
vanished at the one instant when this host cannot know whether the guest \
went on there, so the copy here was left paused.

Find out where the guest runs (ask the other host: `relocd list` there), then \
--resume it here if it runs nowhere else, or --discard the copy here if it \
runs there. Resuming a guest that also runs elsewhere runs it twice.

Backends: the sim backend. The xen backend (serve --backend xen) does not \
resolve yet (it answers \"resolve is not implemented\", exit status 1): its \
daemon settles at start-up what a killed one left (an unfinished source is \
resumed, a half-built incoming copy destroyed). An in-doubt guest stays \
suspended and is named in the log: if the other host runs it, xl destroy \
it here; otherwise the copy at the other host is the one to keep.";

/// `relocd resolve`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[command(
    about = "Settle an in-doubt guest: resume it here or discard this copy",
    long_about = LONG_ABOUT,
    after_help = EXIT_STATUS_HELP,
    group(clap::ArgGroup::new("action").required(true).args(["resume", "discard"]))
)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// Let the copy here run (the guest runs nowhere else).
    #[arg(long)]
    pub resume: bool,
    /// Destroy the copy here (the guest runs on the other host).
    #[arg(long)]
    pub discard: bool,
    /// The in-doubt guest.
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
}

impl ResolveArgs {
    /// The request.
    pub fn to_request(&self) -> ResolveRequest {
        ResolveRequest {
            domain: self.domain.clone(),
            action: if self.resume {
                ResolveAction::Resume
            } else {
                ResolveAction::Discard
            },
        }
    }
}

/// Runs `relocd resolve`.
pub fn run(control: &Path, args: &ResolveArgs, out: &Output) -> Result<(), Failure> {
    let outcome = call_short(control, &Request::Resolve(args.to_request()))?;
    let Outcome::Resolved { domain, action } = &outcome else {
        return Err(unexpected("resolve", &outcome));
    };
    if out.json {
        out.print_json(&super::summary::outcome_json(&outcome, &[]));
    } else {
        match action {
            ResolveAction::Resume => println!("{domain}: resumed here"),
            ResolveAction::Discard => println!("{domain}: the copy here was discarded"),
        }
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
        args: ResolveArgs,
    }

    #[test]
    fn exactly_one_action() {
        let t = T::try_parse_from(["resolve", "web1", "--resume"]).unwrap();
        assert_eq!(t.args.to_request().action, ResolveAction::Resume);
        let t = T::try_parse_from(["resolve", "--discard", "web1"]).unwrap();
        assert_eq!(t.args.to_request().action, ResolveAction::Discard);
        let both = T::try_parse_from(["resolve", "web1", "--resume", "--discard"]).unwrap_err();
        assert!(both.to_string().contains("cannot be used with"), "{both}");
        let none = T::try_parse_from(["resolve", "web1"]).unwrap_err();
        assert!(none.to_string().contains("--resume"), "{none}");
    }
}
