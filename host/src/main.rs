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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => {
            daemon::init_logging(cli.json);
            daemon::serve(&cli.control, args).map_err(|e| (e.to_string(), e.kind()))
        }
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
