//! Man pages and shell completions, generated from the command line's own
//! definitions (the clap commands `--help` prints), so they cannot drift
//! from it: `relocd gen-docs --out DIR` (hidden; `cargo xtask deb` runs it
//! when it builds the package).
//!
//! - `DIR/man8/relocd.8` and one page per subcommand (`relocd-migrate.8`,
//!   `relocd-sim-create.8`, …; hidden commands have none), section 8 as
//!   the binary is an administrator's (`/usr/sbin`). Each has NAME,
//!   SYNOPSIS, DESCRIPTION, OPTIONS (and SUBCOMMANDS), EXIT STATUS when
//!   the command's help gives one, SEE ALSO; `relocd(8)` and
//!   `relocd-serve(8)` also FILES and ENVIRONMENT, `relocd(8)` the
//!   versions `--version` prints.
//! - `DIR/completions/relocd.bash`, `_relocd` (zsh) and `relocd.fish`.

use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The manual section of every page.
pub const SECTION: &str = "8";

/// The files relocd uses, for FILES.
const FILES: [(&str, &str); 5] = [
    (
        crate::daemon::DEFAULT_CONFIG,
        "xend's configuration: relocd reads its relocation settings \
         (xend-relocation-server, -port, -address, -hosts-allow). The package \
         never writes it; an example is /usr/share/doc/relocd/examples/xend-config.sxp.",
    ),
    (
        crate::daemon::DEFAULT_CONTROL,
        "The management socket (mode 0600: root only), through which every \
         command talks to the daemon.",
    ),
    (
        crate::daemon::DEFAULT_STATE_DIR,
        "The state directory: the journal of migrations and saves, read at \
         start-up to settle what a stopped daemon left.",
    ),
    (
        "relocd.service",
        "The systemd unit that runs relocd serve --backend xen.",
    ),
    (
        "/etc/default/relocd",
        "Read by the unit when present: RELOCD_OPTIONS, more options for relocd serve.",
    ),
];

/// The environment relocd reads, for ENVIRONMENT.
const ENVIRONMENT: [(&str, &str); 4] = [
    (
        "RELOCD_CONTROL",
        "The management socket, when --control is not given.",
    ),
    (
        "RELOCD_LOG",
        "The daemon's log level: error, warn, info (the default), debug or trace.",
    ),
    (
        "NOTIFY_SOCKET",
        "Set by systemd for a Type=notify service: relocd serve sends READY=1 \
         once its management socket and its relocation listener are up, and \
         STOPPING=1 when it stops.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when standard error goes to the journal: each log line \
         then starts with its syslog priority (<3> error, <4> warning, <6> info, \
         <7> debug) and carries no timestamp of its own. On a terminal the lines \
         are unchanged.",
    ),
];

/// relocd(8)'s NAME line (the package description starts with the name).
const ABOUT: &str = "live migration of Xen guests, xend's relocation server reborn";

/// relocd(8)'s DESCRIPTION.
const DESCRIPTION: &str = "\
relocd live-migrates Xen guests between hosts. relocd serve is the daemon: \
it listens for relocations from other hosts on xend's relocation port (8002; \
xend-relocation-hosts-allow decides who may connect, before a byte is read) \
and serves the commands of this host on its management socket, root only. \
In dom0 (serve --backend xen) it saves, restores and live-migrates 64-bit PV \
guests itself, through privcmd and xenstore, with no libxc, libxl or xl; \
serve --backend sim runs the same engine over a simulated hypervisor.

The other commands talk to the daemon: migrate moves a guest to another \
host's relocd, save and restore write and read xl save files, status shows \
what is in flight, list the domains, resolve settles a guest a failure at \
the commit left in doubt. check-host and inspect work alone. Each has a \
page of its own, listed below; every command takes --json.

Under systemd (relocd.service) the daemon tells its readiness once both \
sockets are up, and logs to the journal with each line's priority.";

/// Writes the pages and the completions under `out` (module doc); returns
/// the files written. `date` goes in each page's title line.
pub fn generate(cmd: clap::Command, out: &Path, date: &str) -> io::Result<Vec<PathBuf>> {
    let mut cmd = cmd
        .disable_help_subcommand(true)
        .about(ABOUT)
        .long_about(DESCRIPTION);
    cmd.build();
    let man_dir = out.join(format!("man{SECTION}"));
    let comp_dir = out.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&comp_dir)?;
    let mut written = Vec::new();
    let pages = pages(&cmd);
    let names: Vec<String> = pages.iter().map(page_name).collect();
    for page in &pages {
        let name = page_name(page);
        let path = man_dir.join(format!("{name}.{SECTION}"));
        let mut text = Vec::new();
        render(page, &names, date, &mut text)?;
        std::fs::write(&path, text)?;
        written.push(path);
    }
    let bin = cmd.get_name().to_owned();
    for (shell, file) in [
        (clap_complete::Shell::Bash, format!("{bin}.bash")),
        (clap_complete::Shell::Zsh, format!("_{bin}")),
        (clap_complete::Shell::Fish, format!("{bin}.fish")),
    ] {
        let path = comp_dir.join(file);
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &bin, &mut buf);
        std::fs::write(&path, buf)?;
        written.push(path);
    }
    Ok(written)
}

/// The command and every visible subcommand, depth first.
fn pages(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut out = vec![cmd.clone()];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.extend(pages(sub));
    }
    out
}

/// A page's name: `relocd`, `relocd-migrate`, `relocd-sim-create`.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

fn render(cmd: &clap::Command, all: &[String], date: &str, w: &mut dyn Write) -> io::Result<()> {
    let name = page_name(cmd);
    let top = name == all[0];
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(date)
        .source(format!("relocd {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    let mut roff = Roff::new();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        after_help(&mut roff, &after.to_string());
    }
    if top || name == format!("{}-serve", all[0]) {
        roff.control("SH", ["FILES"]);
        for (path, what) in FILES {
            roff.control("TP", []);
            roff.text([italic(path)]);
            roff.text([roman(what)]);
        }
        roff.control("SH", ["ENVIRONMENT"]);
        for (var, what) in ENVIRONMENT {
            roff.control("TP", []);
            roff.text([bold(var)]);
            roff.text([roman(what)]);
        }
    }
    if top {
        roff.control("SH", ["VERSIONS"]);
        roff.text([roman("relocd --version prints:")]);
        roff.control("PP", []);
        roff.control("nf", []);
        for (i, line) in crate::version::long().lines().enumerate() {
            let prefix = if i == 0 { "relocd " } else { "" };
            roff.text([roman(format!("{prefix}{line}"))]);
        }
        roff.control("fi", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut see: Vec<String> = if top {
        all[1..].iter().map(|n| format!("{n}({SECTION})")).collect()
    } else {
        vec![format!("{}({SECTION})", all[0])]
    };
    see.push("xl(1)".into());
    if top || name.ends_with("-serve") {
        see.push("systemd.service(5)".into());
    }
    roff.text([roman(see.join(", "))]);
    roff.to_writer(w)
}

/// A command's closing help: `Exit status:` and its `  CODE  meaning`
/// lines as EXIT STATUS, anything else as NOTES.
fn after_help(roff: &mut Roff, text: &str) {
    let mut lines = text.lines().peekable();
    let exit = lines
        .peek()
        .is_some_and(|l| l.trim().eq_ignore_ascii_case("exit status:"));
    if exit {
        lines.next();
        roff.control("SH", ["EXIT STATUS"]);
    } else {
        roff.control("SH", ["NOTES"]);
    }
    for line in lines {
        let t = line.trim();
        if t.is_empty() {
            roff.control("PP", []);
            continue;
        }
        match t.split_once(char::is_whitespace) {
            Some((code, rest)) if exit && code.chars().all(|c| c.is_ascii_digit()) => {
                roff.control("TP", []);
                roff.text([bold(code)]);
                roff.text([roman(rest.trim())]);
            }
            _ => {
                roff.text([roman(t)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_lines_become_tagged_paragraphs() {
        let mut roff = Roff::new();
        after_help(&mut roff, crate::cli::EXIT_STATUS_HELP);
        let text = roff.to_roff();
        assert!(text.starts_with(".SH \"EXIT STATUS\"\n"), "{text}");
        assert!(
            text.contains(".TP\n\\fB130\\fR\ncancelled with Ctrl"),
            "{text}"
        );
        let mut roff = Roff::new();
        after_help(&mut roff, "Examples:\n  relocd list");
        assert!(roff.to_roff().starts_with(".SH NOTES\n"));
    }
}
