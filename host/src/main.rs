//! relocd: the daemon and command-line client.

use clap::{Parser, Subcommand};
use relocd::{client, daemon};
use std::path::PathBuf;
use std::process::ExitCode;

/// Live migration of Xen guests: xend's relocation server, reborn.
#[derive(Parser, Debug)]
#[command(name = "relocd", version, about)]
struct Cli {
    /// The daemon's management socket (for `serve` and every client command).
    #[arg(long, global = true, value_name = "SOCKET", env = "RELOCD_CONTROL", default_value = daemon::DEFAULT_CONTROL)]
    control: PathBuf,
    /// Machine-readable output (JSON) for every command.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: the management socket and the relocation listener.
    Serve(daemon::ServeArgs),
    /// List the domains the daemon's backend sees.
    List,
    /// Would the relocation server admit this peer? (hosts-allow, as xend read it)
    CheckHost(relocd::check_host::CheckHostArgs),
    /// Show a migration stream (xl save file, libxl or libxc stream): headers, records, totals.
    Inspect(relocd::inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => {
            daemon::init_logging(cli.json);
            daemon::serve(&cli.control, args).map_err(|e| (e.to_string(), e.kind()))
        }
        // check-host has exit codes of its own (0 admitted, 1 refused, 2 bad config).
        Command::CheckHost(args) => return ExitCode::from(relocd::check_host::run(args, cli.json)),
        // inspect: 0 complete, 1 damaged stream, 2 unreadable input.
        Command::Inspect(args) => return ExitCode::from(relocd::inspect::run(args, cli.json)),
        Command::List => client::list(&cli.control, cli.json)
            .map_err(|e| (e.to_string(), e.to_command_error().kind)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, kind)) => {
            client::report_error(&message, kind, cli.json);
            ExitCode::FAILURE
        }
    }
}
