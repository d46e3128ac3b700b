//! `relocd status [--watch] [--json]`: the migrations, saves and restores in
//! flight on this host, as the daemon last saw them. It only reads: the
//! commands it shows go on undisturbed (their own clients keep their
//! progress bars and their Ctrl-C).

use super::progress::phase_label;
use super::summary::format_ms;
use super::{unexpected, Failure, Output, EXIT_STATUS_HELP};
use crate::api::{Direction, ErrorKind, Outcome, Phase, Request, SessionStatus};
use crate::client::Client;
use crate::units::{format_count, format_rate};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

const LONG_ABOUT: &str = "\
Show the migrations, saves and restores in flight on this host: for each, the \
domain, the other host (or the file), the direction, the phase and pre-copy \
round, the pages sent and still dirty, the rate at which the guest dirties \
memory (over the last finished pre-copy round), the bandwidth, the downtime a \
stop-and-copy would take now, and the time elapsed.

It only reads what the daemon knows: the commands go on undisturbed, from \
whichever terminal started them. With nothing in flight it says so. \
--watch shows it again every --interval until Ctrl-C; with --json, each look \
is one JSON object on a line of its own: {\"sessions\":[…]}.";

/// `relocd status`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[command(
    about = "Show the migrations, saves and restores in flight on this host",
    long_about = LONG_ABOUT,
    after_help = EXIT_STATUS_HELP
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// Look again every --interval until Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Time between two looks with --watch, in seconds (0.1 to 3600).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
}

/// Parses `--interval`: seconds, with decimals, from 0.1 to 3600.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!(
            "`{text}`: the interval is from 0.1 to 3600 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a person reads when nothing is in flight.
pub const NOTHING: &str =
    "nothing in flight: no migration, save or restore is running on this host";

/// Elapsed time: `4.2 s`, `3 min 07 s`, `1 h 02 min`.
pub fn format_elapsed(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "-".to_owned();
    }
    let secs = ms / 1000.0;
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let whole = secs as u64;
    if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60)
    }
}

fn phase_text(s: &SessionStatus) -> String {
    let label = match (s.direction, s.phase) {
        (Direction::Incoming, Phase::Transfer) => "receiving",
        (Direction::Save, Phase::Transfer) => "writing",
        (Direction::Restore, Phase::Transfer) => "reading",
        (_, p) => phase_label(p),
    };
    if s.round > 0 {
        format!("{label}, round {}", s.round)
    } else {
        label.to_owned()
    }
}

fn whither(s: &SessionStatus) -> String {
    let place = s
        .peer
        .clone()
        .or_else(|| s.file.as_ref().map(|f| f.display().to_string()))
        .unwrap_or_else(|| "?".to_owned());
    match s.direction {
        Direction::Outgoing => format!("migrating to {place}"),
        Direction::Incoming => format!("migrating here from {place}"),
        Direction::Save => format!("saving to {place}"),
        Direction::Restore => format!("restoring from {place}"),
        Direction::Unknown => place,
    }
}

/// The text for people: one block per session, or [`NOTHING`].
pub fn status_text(sessions: &[SessionStatus]) -> String {
    if sessions.is_empty() {
        return format!("{NOTHING}\n");
    }
    let mut out = String::new();
    for (i, s) in sessions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}: {}\n", s.domain, whither(s)));
        let verb = match s.direction {
            Direction::Incoming | Direction::Restore => "written",
            _ => "sent",
        };
        // Pre-copy sends a page again when the guest dirties it: the
        // count may pass the guest's size.
        let mut pages = format!("{} {verb}", format_count(s.pages_sent));
        if matches!(s.direction, Direction::Outgoing | Direction::Save) {
            pages.push_str(&format!(", {} dirty", format_count(s.dirty_pages)));
        }
        if s.pages_total > 0 {
            pages.push_str(&format!(" (the guest has {})", format_count(s.pages_total)));
        }
        let rows = [
            ("phase", phase_text(s)),
            ("pages", pages),
            (
                "dirty rate",
                s.dirty_rate_bytes_per_s
                    .map_or_else(|| "-".to_owned(), format_rate),
            ),
            ("bandwidth", format!("{:.1} MiB/s", s.bandwidth_mib_s)),
            (
                "expected downtime",
                s.expected_downtime_ms
                    .map_or_else(|| "-".to_owned(), format_ms),
            ),
            ("elapsed", format_elapsed(s.elapsed_ms)),
        ];
        for (k, v) in rows {
            out.push_str(&format!("  {:<18} {v}\n", format!("{k}:")));
        }
    }
    out
}

/// Runs `relocd status`.
pub fn run(control: &Path, args: &StatusArgs, out: &Output) -> Result<(), Failure> {
    let mut client = Client::connect(control)?;
    let clear = args.watch && !out.json && std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let outcome = client.call(&Request::Status, |_| {})?;
        let Outcome::Status { sessions } = outcome else {
            return Err(unexpected("status", &outcome));
        };
        let text = if out.json {
            format!("{}\n", serde_json::json!({ "sessions": sessions }))
        } else if clear {
            format!(
                "\x1b[H\x1b[2Jrelocd status, every {} (Ctrl-C to stop)\n\n{}",
                format_ms(args.interval.as_secs_f64() * 1000.0),
                status_text(&sessions)
            )
        } else if args.watch && !first {
            format!("\n{}", status_text(&sessions))
        } else {
            status_text(&sessions)
        };
        first = false;
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush());
        match written {
            Ok(()) => {}
            // The reader went away (`relocd status --watch | head`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => {
                return Err(Failure::new(
                    ErrorKind::Internal,
                    format!("writing the status: {e}"),
                ))
            }
        }
        if !args.watch {
            return Ok(());
        }
        std::thread::sleep(args.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing() -> SessionStatus {
        SessionStatus {
            domain: "web1".into(),
            direction: Direction::Outgoing,
            peer: Some("hostb:8002".into()),
            file: None,
            phase: Phase::Precopy,
            round: 3,
            pages_sent: 300_000,
            pages_total: 262_144,
            dirty_pages: 1024,
            dirty_rate_bytes_per_s: Some(8 << 20),
            bytes_sent: 1 << 30,
            bandwidth_mib_s: 95.25,
            expected_downtime_ms: Some(12.0),
            elapsed_ms: 64_200.0,
        }
    }

    #[test]
    fn a_block_per_session_with_every_figure() {
        let mut save = outgoing();
        save.domain = "db1".into();
        save.direction = Direction::Save;
        save.peer = None;
        save.file = Some("/srv/db1.save".into());
        save.phase = Phase::StopAndCopy;
        save.round = 0;
        save.dirty_rate_bytes_per_s = None;
        save.expected_downtime_ms = None;
        let text = status_text(&[outgoing(), save]);
        let expected = "\
web1: migrating to hostb:8002
  phase:             pre-copy, round 3
  pages:             300,000 sent, 1,024 dirty (the guest has 262,144)
  dirty rate:        8.0 MiB/s
  bandwidth:         95.2 MiB/s
  expected downtime: 12.0 ms
  elapsed:           1 min 04 s

db1: saving to /srv/db1.save
  phase:             stop-and-copy
  pages:             300,000 sent, 1,024 dirty (the guest has 262,144)
  dirty rate:        -
  bandwidth:         95.2 MiB/s
  expected downtime: -
  elapsed:           1 min 04 s
";
        assert_eq!(text, expected);
    }

    #[test]
    fn incoming_and_nothing() {
        let mut s = outgoing();
        s.direction = Direction::Incoming;
        s.peer = Some("10.0.0.1:51234".into());
        s.phase = Phase::Transfer;
        s.round = 0;
        let text = status_text(&[s]);
        assert!(
            text.starts_with(
                "web1: migrating here from 10.0.0.1:51234\n  phase:             receiving\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  pages:             300,000 written (the guest has 262,144)\n"),
            "{text}"
        );
        assert_eq!(status_text(&[]), format!("{NOTHING}\n"));
    }

    #[test]
    fn elapsed_and_interval() {
        assert_eq!(format_elapsed(4210.0), "4.2 s");
        assert_eq!(format_elapsed(187_000.0), "3 min 07 s");
        assert_eq!(format_elapsed(3_720_000.0), "1 h 02 min");
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("4000").is_err());
    }
}
