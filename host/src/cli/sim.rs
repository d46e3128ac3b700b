//! `relocd sim create NAME --memory SIZE [--dirty-rate RATE] [--pattern P]`:
//! a guest in the daemon's simulated hypervisor.

use super::summary::{format_bytes, format_rate, outcome_json};
use super::{call_short, unexpected, Failure, Output, EXIT_STATUS_HELP};
use crate::api::{Outcome, Request, SimCreateRequest};
use crate::backend::sim;
use std::path::Path;

/// `relocd sim …`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Create and start a simulated guest (sim backend only).
    #[command(long_about = CREATE_LONG_ABOUT, after_help = EXIT_STATUS_HELP)]
    Create(SimCreateArgs),
}

impl SimCommand {
    /// The subcommand's `--control`.
    pub fn conn(&self) -> &crate::client::ControlArg {
        match self {
            SimCommand::Create(a) => &a.conn,
        }
    }
}

const CREATE_LONG_ABOUT: &str = "\
Create and start a guest in the daemon's simulated hypervisor (serve \
--backend sim; the xen backend answers \"not implemented\"). Its memory is \
sparse, so a large guest is cheap; its one vCPU runs a deterministic \
workload that writes --dirty-rate bytes a second while it runs, and \
`relocd list --json` shows its step counter (`steps`).

The daemon refuses a name already in use and a guest larger than the \
capacity left (serve --sim-capacity).";

/// The workload's write pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PatternArg {
    /// Writes spread evenly over all of memory.
    Uniform,
    /// 90% of writes go to a hot set of 10% of the pages.
    Hot,
}

impl PatternArg {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PatternArg::Uniform => "uniform",
            PatternArg::Hot => "hot",
        }
    }
}

fn parse_name(text: &str) -> Result<String, String> {
    sim::check_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_memory(text: &str) -> Result<u64, String> {
    sim::parse_memory(text).map_err(|e| e.to_string())
}

fn parse_dirty_rate(text: &str) -> Result<u64, String> {
    let rate = sim::parse_rate(text).map_err(|e| e.to_string())?;
    if rate > sim::MAX_DIRTY_RATE {
        return Err(sim::SpecError::RateTooLarge(rate).to_string());
    }
    Ok(rate)
}

/// `relocd sim create`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct SimCreateArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// The guest's name.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,
    /// Its memory: 1G, 512M, 1GiB (a whole number of 4 KiB pages).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: u64,
    /// How fast its workload writes memory: 64M/s (0: idle).
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = parse_dirty_rate)]
    pub dirty_rate: u64,
    /// Which pages the workload writes.
    #[arg(long, value_enum, default_value = "uniform")]
    pub pattern: PatternArg,
    /// Percentage of its pages that hold data from the start (0-100); the
    /// others are zeros, as most of a freshly booted guest's are.
    #[arg(long, value_name = "PERCENT", default_value = "0", value_parser = parse_fill)]
    pub fill: u8,
}

fn parse_fill(text: &str) -> Result<u8, String> {
    sim::parse_fill(text).map_err(|e| e.to_string())
}

impl SimCreateArgs {
    /// The request.
    pub fn to_request(&self) -> SimCreateRequest {
        SimCreateRequest {
            name: self.name.clone(),
            memory_bytes: self.memory,
            dirty_rate_bytes_per_s: self.dirty_rate,
            pattern: Some(self.pattern.as_str().to_owned()),
            vcpus: None,
            fill_percent: self.fill,
        }
    }
}

/// Runs `relocd sim …`.
pub fn run(control: &Path, cmd: &SimCommand, out: &Output) -> Result<(), Failure> {
    match cmd {
        SimCommand::Create(args) => create(control, args, out),
    }
}

fn create(control: &Path, args: &SimCreateArgs, out: &Output) -> Result<(), Failure> {
    let outcome = call_short(control, &Request::SimCreate(args.to_request()))?;
    let Outcome::Created(domain) = &outcome else {
        return Err(unexpected("sim create", &outcome));
    };
    if out.json {
        out.print_json(&outcome_json(&outcome, &[]));
    } else {
        println!(
            "created {} as domain {}: {}, dirtying {} ({}), {}",
            domain.name,
            domain.id,
            format_bytes(domain.memory_bytes),
            format_rate(args.dirty_rate),
            args.pattern.as_str(),
            domain.state.label()
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
        #[command(subcommand)]
        cmd: SimCommand,
    }

    fn parse(argv: &[&str]) -> Result<SimCreateArgs, String> {
        T::try_parse_from(["sim", "create"].iter().chain(argv.iter()))
            .map(|t| match t.cmd {
                SimCommand::Create(a) => a,
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn create_arguments() {
        let a = parse(&[
            "web1",
            "--memory",
            "1G",
            "--dirty-rate",
            "64M/s",
            "--pattern",
            "hot",
        ])
        .unwrap();
        assert_eq!(
            a.to_request(),
            SimCreateRequest {
                name: "web1".into(),
                memory_bytes: 1 << 30,
                dirty_rate_bytes_per_s: 64 << 20,
                pattern: Some("hot".into()),
                vcpus: None,
                fill_percent: 0,
            }
        );
        let idle = parse(&["db1", "--memory", "256M"]).unwrap().to_request();
        assert_eq!(idle.dirty_rate_bytes_per_s, 0);
        assert_eq!(idle.pattern.as_deref(), Some("uniform"));
    }

    #[test]
    fn bad_create_arguments() {
        let cases: [(&[&str], &str); 6] = [
            (&["web1"], "--memory"),
            (&["web1", "--memory", "1X"], "unknown suffix"),
            (&["web1", "--memory", "1000"], "4 KiB"),
            (&["web1", "--memory", "1G", "--dirty-rate", "fast"], "fast"),
            (
                &["web1", "--memory", "1G", "--dirty-rate", "65G/s"],
                "limit",
            ),
            (&["web1", "--memory", "1G", "--pattern", "zigzag"], "zigzag"),
        ];
        for (argv, needle) in cases {
            let err = parse(argv).unwrap_err();
            assert!(err.contains(needle), "{argv:?}: {err}");
        }
        let long = "x".repeat(65);
        assert!(parse(&[&long, "--memory", "1G"]).is_err());
    }
}
