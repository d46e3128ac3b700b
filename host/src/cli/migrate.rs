//! `relocd migrate [--live] DOMAIN HOST[:PORT]`: move a guest to another
//! host's relocd.

use super::summary::{outcome_json, transfer_text};
use super::{call_long, unexpected, Failure, LongCommand, Output, EXIT_STATUS_HELP};
use crate::api::{MigrateRequest, Outcome, Request};
use serde_json::Value;
use std::net::Ipv6Addr;
use std::path::Path;

/// xend's relocation port, used when neither `HOST:PORT` nor `--port` gives
/// one (the daemon applies it; shown in messages).
pub const DEFAULT_PORT: u16 = 8002;

/// xend's TLS relocation port (`xend-relocation-ssl-port`), the port
/// `--ssl` dials when none is given (shown in messages; the daemon applies
/// its own `xend-relocation-ssl-port`).
pub const DEFAULT_SSL_PORT: u16 = relocd_core::config::DEFAULT_SSL_PORT;

/// The destination as typed: a host name or address and an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Host name or address, IPv6 without brackets.
    pub host: String,
    /// The port, when `HOST:PORT` gave one.
    pub port: Option<u16>,
}

impl Destination {
    /// `host:port` for messages (`[v6]:port` for IPv6).
    pub fn display(&self, port: u16) -> String {
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// Parses a port: 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not a port to connect to (use 1 to 65535)".to_owned()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("`{text}`: a port is a number from 1 to 65535")),
    }
}

/// Parses `HOST`, `HOST:PORT`, `[V6ADDR]`, `[V6ADDR]:PORT` or a bare IPv6
/// address (without a port).
pub fn parse_destination(text: &str) -> Result<Destination, String> {
    if text.is_empty() {
        return Err("the destination host is empty".to_owned());
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!(
            "`{text}`: a host name or address has no spaces or slashes"
        ));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("`{text}`: missing `]` after the IPv6 address"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{addr}` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(parse_port(p)?),
                None => return Err(format!("`{text}`: expected [ADDRESS]:PORT")),
            },
        };
        (addr, port)
    } else {
        match text.matches(':').count() {
            0 => (text, None),
            1 => {
                let (host, port) = text.split_once(':').unwrap_or((text, ""));
                if host.is_empty() {
                    return Err(format!("`{text}`: the host is missing before `:`"));
                }
                (host, Some(parse_port(port)?))
            }
            _ if text.parse::<Ipv6Addr>().is_ok() => (text, None),
            _ => {
                return Err(format!(
                    "`{text}`: write an IPv6 address with a port as [ADDRESS]:PORT"
                ))
            }
        }
    };
    Ok(Destination {
        host: host.to_owned(),
        port,
    })
}

/// The lowest `--bandwidth`: one page a second.
pub const MIN_BANDWIDTH: u64 = 4096;

/// Parses `--bandwidth`: a rate such as `100M/s` or `1G` (bytes per
/// second, binary units), at least one page a second.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    match crate::backend::sim::parse_rate(text) {
        Ok(0) => Err("a bandwidth cap of 0 would send nothing".to_owned()),
        Ok(rate) if rate < MIN_BANDWIDTH => Err(format!(
            "`{text}` is {rate} bytes per second, too low to move one 4 KiB page a \
             second; RATE is in bytes per second with binary units (`100M` is 100 MiB/s, \
             at least `4K`)"
        )),
        Ok(rate) => Ok(rate),
        Err(e) => Err(e.to_string()),
    }
}

const ABOUT: &str = "Move a guest to another host's relocd (xm migrate / xl migrate)";

const LONG_ABOUT: &str = "\
Move a guest to another host's relocd (xm migrate / xl migrate).

Offline (the default): the guest is paused, its memory and vCPU state are \
copied, it starts on HOST and is destroyed here. With --live: pre-copy rounds \
send memory while the guest runs, then a short stop-and-copy. Either way the \
guest is destroyed here only after HOST holds a complete copy and says so; \
any failure before that leaves it running here.

HOST is a name or an address, optionally with :PORT (IPv6: [ADDRESS]:PORT); \
the port defaults to 8002 (xend-relocation-port), or with --ssl to 8003 \
(xend-relocation-ssl-port). HOST's relocd must listen for relocations and \
admit this host (xend-relocation-hosts-allow).

With --ssl (or (xend-relocation-ssl yes) in this host's config) the guest \
travels over TLS, both hosts authenticated: this host presents its \
certificate (xend-relocation-server-ssl-cert-file and -key-file) and checks \
that HOST's certificate chains to a CA in relocd-relocation-ssl-ca-file and \
carries the name or address given as HOST. A HOST without TLS on that port \
is an error; relocd never falls back to plaintext.

Backends: the sim backend (serve --backend sim) migrates its simulated \
guests; the xen backend (serve --backend xen) migrates 64-bit PV guests to \
another Xen host's relocd, which builds the domain itself (its console and \
xenstore connection come back; network and disk devices are not recreated \
yet, so move guests without them).

Ctrl-C sends cancel: a migration before its point of no return stops and \
the guest keeps running here.";

/// `relocd migrate`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[command(about = ABOUT, long_about = LONG_ABOUT, after_help = EXIT_STATUS_HELP)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// Live migration: pre-copy while the guest runs, then stop-and-copy.
    #[arg(short = 'l', long)]
    pub live: bool,
    /// The destination's relocation port (default 8002, or HOST:PORT's).
    #[arg(short = 'p', long, value_name = "PORT", value_parser = parse_port)]
    pub port: Option<u16>,
    /// The stop-and-copy's downtime target in milliseconds (default 300):
    /// pre-copy stops once the dirty pages can be sent within it.
    #[arg(long, value_name = "MS", requires = "live", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub downtime_limit: Option<u64>,
    /// Bandwidth cap on the link, bytes per second with binary units
    /// (100M/s, 1G; at least 4K), counted as sent (zero pages and
    /// compression make room for more pages): on the pre-copy rounds, and
    /// on the whole copy of an offline migration; never on a live
    /// migration's stop-and-copy.
    #[arg(long, value_name = "RATE", value_parser = parse_bandwidth)]
    pub bandwidth: Option<u64>,
    /// At most N pre-copy rounds before the stop-and-copy.
    #[arg(long, value_name = "N", requires = "live", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_iters: Option<u32>,
    /// When the guest dirties memory faster than the link sends, give up
    /// (the guest keeps running here) instead of stopping it anyway.
    #[arg(long, requires = "live")]
    pub abort_if_busy: bool,
    /// Pack the image (LZ4) on the link when the destination can unpack
    /// it: a guest's free memory shrinks to almost nothing, which pays on
    /// links slower than about 1 GiB/s; on faster ones it costs CPU time.
    #[arg(long)]
    pub compress: bool,
    /// Send all-zero pages in full, 4 KiB each, instead of as a marker the
    /// destination writes the zeros for (the default where the destination
    /// takes markers): to measure what the markers save.
    #[arg(long)]
    pub no_zero_pages: bool,
    /// When the guest dirties memory faster than the rounds shrink it,
    /// throttle its vCPUs through the scheduler (20 % of their time
    /// first, then half of what is left each round; three quarters of it,
    /// from the first step, when the link does not keep up at all: 80 %,
    /// 95 %; up to 99 %) until it converges; its own cap and weight come
    /// back on every path, and the destination's domain gets them.
    #[arg(long, requires = "live")]
    pub auto_converge: bool,
    /// Over TLS, both hosts authenticated by certificates from
    /// relocd-relocation-ssl-ca-file; the port defaults to 8003
    /// (xend-relocation-ssl-port). Never falls back to plaintext.
    #[arg(long)]
    pub ssl: bool,
    /// The guest (name or id).
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
    /// The destination host and port.
    #[arg(value_name = "HOST[:PORT]", value_parser = parse_destination,
        help = "Where to: HOST, HOST:PORT or [IPV6]:PORT", long_help = "Where to: HOST, HOST:PORT or [IPV6]:PORT")]
    pub host: Destination,
}

impl MigrateArgs {
    /// The request to send; a usage error when the port is given twice,
    /// differently.
    pub fn to_request(&self) -> Result<MigrateRequest, Failure> {
        let port = match (self.host.port, self.port) {
            (Some(a), Some(b)) if a != b => {
                return Err(Failure::usage(format!(
                    "two ports: {} in HOST and {b} with --port; give one",
                    self.host.display(a)
                )))
            }
            (a, b) => a.or(b),
        };
        Ok(MigrateRequest {
            domain: self.domain.clone(),
            host: self.host.host.clone(),
            port,
            live: self.live,
            downtime_limit_ms: self.downtime_limit,
            bandwidth_bytes_per_s: self.bandwidth,
            max_iters: self.max_iters,
            abort_if_busy: self.abort_if_busy,
            compress: self.compress,
            no_zero_pages: self.no_zero_pages,
            auto_converge: self.auto_converge,
            ssl: self.ssl,
        })
    }
}

/// Runs `relocd migrate`.
pub fn run(control: &Path, args: &MigrateArgs, out: &Output) -> Result<(), Failure> {
    let req = args.to_request()?;
    let default_port = if req.ssl {
        DEFAULT_SSL_PORT
    } else {
        DEFAULT_PORT
    };
    let to = args.host.display(req.port.unwrap_or(default_port));
    let mode = if req.live { "live" } else { "offline" };
    let cmd = LongCommand {
        label: format!("migrate {} → {to}", req.domain),
        on_cancel: format!("{} keeps running at the source", req.domain),
    };
    let outcome = call_long(control, &Request::Migrate(req.clone()), &cmd, out)?;
    let Outcome::Migrated(summary) = &outcome else {
        return Err(unexpected("migrate", &outcome));
    };
    if out.json {
        out.print_json(&outcome_json(
            &outcome,
            &[
                ("host", Value::from(args.host.host.clone())),
                ("port", Value::from(req.port.unwrap_or(default_port))),
                ("ssl", Value::from(req.ssl)),
                ("live", Value::from(req.live)),
                ("auto_converge", Value::from(req.auto_converge)),
            ],
        ));
    } else {
        print!(
            "{}",
            transfer_text(
                &format!("migrated {} to {to} ({mode})", summary.domain),
                summary
            )
        );
        if req.auto_converge && summary.throttle_steps == 0 {
            println!("  throttled   no (its dirty set shrank fast enough)");
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
        args: MigrateArgs,
    }

    fn parse(argv: &[&str]) -> Result<MigrateArgs, String> {
        T::try_parse_from(std::iter::once("migrate").chain(argv.iter().copied()))
            .map(|t| t.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn destinations() {
        let d = |host: &str, port| Destination {
            host: host.into(),
            port,
        };
        assert_eq!(parse_destination("hostb"), Ok(d("hostb", None)));
        assert_eq!(parse_destination("hostb:8003"), Ok(d("hostb", Some(8003))));
        assert_eq!(
            parse_destination("10.0.0.2:8002"),
            Ok(d("10.0.0.2", Some(8002)))
        );
        assert_eq!(parse_destination("[::1]:9000"), Ok(d("::1", Some(9000))));
        assert_eq!(parse_destination("[fe80::1]"), Ok(d("fe80::1", None)));
        assert_eq!(parse_destination("2001:db8::5"), Ok(d("2001:db8::5", None)));
        assert_eq!(d("::1", None).display(8002), "[::1]:8002");
        assert_eq!(d("hostb", None).display(1), "hostb:1");
        for bad in [
            "",
            "hostb:0",
            "hostb:",
            "hostb:65536",
            "hostb:x",
            ":8002",
            "[::1",
            "[::1]8002",
            "[hostb]:1",
            "a:b:c",
            "host b",
            "a/b",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_destination("hostb:0").unwrap_err().contains("port 0"));
    }

    #[test]
    fn xm_and_long_spellings_agree() {
        let short = parse(&["-l", "-p", "8003", "web1", "hostb"]).unwrap();
        let long = parse(&["--live", "--port", "8003", "web1", "hostb"]).unwrap();
        let req = short.to_request().unwrap();
        assert_eq!(req, long.to_request().unwrap());
        assert_eq!(
            req,
            MigrateRequest {
                domain: "web1".into(),
                host: "hostb".into(),
                port: Some(8003),
                live: true,
                ..MigrateRequest::default()
            }
        );
    }

    #[test]
    fn every_option_reaches_the_request() {
        let req = parse(&[
            "--live",
            "--downtime-limit",
            "50",
            "--bandwidth",
            "100M/s",
            "--max-iters",
            "7",
            "--abort-if-busy",
            "--compress",
            "--no-zero-pages",
            "web1",
            "[::1]:9000",
        ])
        .unwrap()
        .to_request()
        .unwrap();
        assert_eq!(req.host, "::1");
        assert_eq!(req.port, Some(9000));
        assert_eq!(req.downtime_limit_ms, Some(50));
        assert_eq!(req.bandwidth_bytes_per_s, Some(100 << 20));
        assert_eq!(req.max_iters, Some(7));
        assert!(req.abort_if_busy);
        assert!(req.compress);
        assert!(req.no_zero_pages);
        let plain = parse(&["web1", "h"]).unwrap().to_request().unwrap();
        assert!(!plain.compress);
        assert!(!plain.no_zero_pages);
        // The same port twice is fine; two different ones are not.
        assert!(parse(&["-p", "9", "web1", "h:9"])
            .unwrap()
            .to_request()
            .is_ok());
        let two = parse(&["-p", "9", "web1", "h:10"])
            .unwrap()
            .to_request()
            .unwrap_err();
        assert_eq!(two.code, super::super::EXIT_USAGE);
        assert!(two.error.message.contains("two ports"), "{:?}", two);
    }

    #[test]
    fn bad_arguments_are_refused_clearly() {
        let cases: [(&[&str], &str); 9] = [
            (&["--bandwidth", "fast", "web1", "h"], "fast"),
            (&["--bandwidth", "0", "web1", "h"], "send nothing"),
            (&["--bandwidth", "16", "web1", "h"], "bytes per second"),
            (&["-p", "0", "web1", "h"], "port 0"),
            (&["--live", "--max-iters", "0", "web1", "h"], "max-iters"),
            (&["--downtime-limit", "50", "web1", "h"], "--live"),
            (&["--abort-if-busy", "web1", "h"], "--live"),
            (&["web1"], "HOST"),
            (&["web1", "h:0"], "port 0"),
        ];
        for (argv, needle) in cases {
            let err = parse(argv).unwrap_err();
            assert!(err.contains(needle), "{argv:?}: {err}");
        }
    }
}
