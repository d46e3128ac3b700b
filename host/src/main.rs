//! relocd: the daemon and command-line client.

use clap::Parser;

/// Live migration of Xen guests: xend's relocation server, reborn.
#[derive(Parser, Debug)]
#[command(name = "relocd", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
