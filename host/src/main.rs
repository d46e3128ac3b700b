//! relocd: the daemon and command-line client.

use clap::{Parser, Subcommand};
use relocd::cli::{self, Failure, Output};
use relocd::{client, daemon};
use std::path::PathBuf;
use std::process::ExitCode;

/// Live migration of Xen guests: xend's relocation server, reborn.
#[derive(Parser, Debug)]
#[command(name = "relocd", version, long_version = relocd::version::long(), about, after_help = cli::EXIT_STATUS_HELP)]
struct Cli {
    /// The daemon's management socket (for `serve` and the commands that
    /// talk to it; also accepted after the subcommand).
    #[arg(long, value_name = "SOCKET", env = "RELOCD_CONTROL", default_value = daemon::DEFAULT_CONTROL)]
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
    List(relocd::client::ControlArg),
    /// Would the relocation server admit this peer? (hosts-allow, as xend read it)
    CheckHost(relocd::check_host::CheckHostArgs),
    /// Show a migration stream (xl save file, libxl or libxc stream): headers, records, totals.
    Inspect(relocd::inspect::InspectArgs),
    Migrate(cli::migrate::MigrateArgs),
    Save(cli::save::SaveArgs),
    Restore(cli::restore::RestoreArgs),
    Resolve(cli::resolve::ResolveArgs),
    Status(cli::status::StatusArgs),
    /// Two daemons on loopback, a simulated guest, a live migration with
    /// checks and a summary: relocd's main job with no Xen and no set-up.
    Demo(relocd::demo::DemoArgs),
    /// The simulated hypervisor's own commands (sim backend only).
    #[command(subcommand)]
    Sim(cli::sim::SimCommand),
    /// Diagnostic (dom0): pause, log-dirty and a foreign mapping tried on a
    /// running guest, a line a check; exit 1 if one fails.
    #[command(hide = true)]
    XenProbe {
        /// The guest's name or domain id.
        domain: String,
    },
    /// Writes the man pages and the shell completions (the package build).
    #[command(hide = true)]
    GenDocs {
        /// The directory: man8/ and completions/ are made in it.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The date in the pages' title lines (e.g. the release's).
        #[arg(long, value_name = "DATE", default_value = "")]
        date: String,
    },
}

/// Parses the command line; with `--json`, a usage error is printed as
/// `{"error":{"kind":"bad_request",…}}` on stdout (exit status 2).
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind as K;
            let json = std::env::args_os().skip(1).any(|a| a == "--json");
            let usage = !matches!(e.kind(), K::DisplayHelp | K::DisplayVersion)
                && e.kind() != K::DisplayHelpOnMissingArgumentOrSubcommand;
            if json && usage {
                let text = e.render().to_string();
                // The error's own lines, without clap's usage and hint.
                let message = text
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let message = message.trim_start_matches("error: ").to_owned();
                Failure::usage(message).report(true);
                std::process::exit(i32::from(cli::EXIT_USAGE));
            }
            e.exit()
        }
    }
}

fn main() -> ExitCode {
    let cli = parse();
    let out = Output::detect(cli.json);
    let control = cli.control.as_path();
    let result = match &cli.command {
        Command::Serve(args) => {
            daemon::init_logging(cli.json);
            daemon::serve(args.conn.or(control), args)
                .map_err(|e| Failure::new(e.kind(), e.to_string()))
        }
        Command::List(conn) => client::list(conn.or(control), cli.json).map_err(Failure::from),
        // check-host has exit codes of its own (0 admitted, 1 refused, 2 bad config).
        Command::CheckHost(args) => return ExitCode::from(relocd::check_host::run(args, cli.json)),
        // inspect: 0 complete, 1 damaged stream, 2 unreadable input.
        Command::Inspect(args) => return ExitCode::from(relocd::inspect::run(args, cli.json)),
        Command::Migrate(args) => cli::migrate::run(args.conn.or(control), args, &out),
        Command::Save(args) => cli::save::run(args.conn.or(control), args, &out),
        Command::Restore(args) => cli::restore::run(args.conn.or(control), args, &out),
        Command::Resolve(args) => cli::resolve::run(args.conn.or(control), args, &out),
        Command::Status(args) => cli::status::run(args.conn.or(control), args, &out),
        Command::Sim(cmd) => cli::sim::run(cmd.conn().or(control), cmd, &out),
        Command::Demo(args) => relocd::demo::run(args, &out),
        Command::XenProbe { domain } => {
            return ExitCode::from(relocd::backend::xen::probe_main(domain))
        }
        Command::GenDocs { out, date } => {
            use clap::CommandFactory;
            relocd::docs::generate(Cli::command(), out, date)
                .map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                })
                .map_err(|e| {
                    Failure::new(
                        relocd::api::ErrorKind::Internal,
                        format!("{}: {e}", out.display()),
                    )
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report(cli.json);
            ExitCode::from(failure.code)
        }
    }
}
