//! `relocd check-host`: would the relocation server admit this peer?
//!
//! It decides exactly as the listener does: the same config reading, the
//! same compiled hosts-allow DFA and, unless `--name` is given, the same
//! reverse lookup with forward confirmation.

use crate::daemon::DEFAULT_CONFIG;
use crate::peer::{canonical, name_peer, PeerName, Resolver, SystemResolver};
use crate::settings::{self, ConfigFile, SettingsError};
use relocd_core::acl::{Decision, HostsAllow, MatchedOn};
use relocd_core::config::RelocationConfig;
use serde::Serialize;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Exit code: the peer is admitted.
pub const EXIT_ADMITTED: u8 = 0;
/// Exit code: the peer is refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the config or a pattern is bad (also clap's usage errors).
pub const EXIT_BAD_CONFIG: u8 = 2;

/// Arguments of `relocd check-host`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Exit status: 0 admitted, 1 refused, 2 bad config, pattern or usage.")]
pub struct CheckHostArgs {
    /// The xend-config.sxp to read hosts-allow from [default: /etc/xen/xend-config.sxp;
    /// when that file is missing, xend's default, an empty hosts-allow, admits every host]
    #[arg(long, value_name = "FILE", conflicts_with = "hosts_allow")]
    pub config: Option<PathBuf>,
    /// The hosts-allow patterns themselves (space-separated Python regexes), instead of a config
    #[arg(long, value_name = "PATTERNS")]
    pub hosts_allow: Option<String>,
    /// The peer's IP address
    #[arg(long, value_name = "ADDR")]
    pub ip: IpAddr,
    /// The peer's fully-qualified name; given, no DNS lookup is made
    #[arg(long, value_name = "FQDN")]
    pub name: Option<String>,
}

/// Where the setting came from.
#[derive(Debug, Serialize)]
struct Source {
    /// `config` or `command line`.
    from: &'static str,
    /// The config file, when one was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// Whether that file exists (a missing default file means defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    relocation_server: Option<bool>,
}

/// The whole answer, for `--json`.
#[derive(Debug, Serialize)]
struct Report {
    admitted: bool,
    verdict: &'static str,
    ip: String,
    name: Option<String>,
    name_source: &'static str,
    name_note: Option<String>,
    hosts_allow: String,
    patterns: Vec<String>,
    pattern_index: Option<usize>,
    pattern: Option<String>,
    matched_on: Option<&'static str>,
    reason: String,
    warnings: Vec<String>,
    /// The config's relocation server admits every host that can reach it
    /// (see [`settings::open_relocation_warning`]).
    open_to_any_host: bool,
    source: Source,
}

/// Runs the command; returns the exit code. `out` receives the report,
/// `err` the diagnostics.
pub fn run(args: &CheckHostArgs, json: bool) -> u8 {
    run_with(args, json, &SystemResolver, &mut std::io::stdout())
}

/// [`run`] with a chosen resolver and output, for tests.
pub fn run_with(
    args: &CheckHostArgs,
    json: bool,
    resolver: &dyn Resolver,
    out: &mut dyn std::io::Write,
) -> u8 {
    match decide(args, resolver) {
        Ok(report) => {
            let code = if report.admitted {
                EXIT_ADMITTED
            } else {
                EXIT_REFUSED
            };
            let _ = if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                )
            } else {
                write_text(out, &report)
            };
            code
        }
        Err(message) => {
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "admitted": false, "verdict": "error", "error": message })
                );
            } else {
                eprintln!("relocd check-host: {message}");
            }
            EXIT_BAD_CONFIG
        }
    }
}

/// [`settings::open_relocation_warning`] for the server `relocd serve`
/// would run from `cfg` (its listener is plain TCP). Nothing when the
/// address does not resolve: the daemon would not start then.
fn open_warning(cfg: &RelocationConfig<'_>) -> Option<String> {
    let listen = settings::relocation_listen_text(cfg)
        .to_socket_addrs()
        .ok()?
        .next()?;
    settings::open_relocation_warning(listen, &cfg.hosts_allow.to_owned_string(), false)
}

fn decide(args: &CheckHostArgs, resolver: &dyn Resolver) -> Result<Report, String> {
    let mut warnings = Vec::new();
    let mut open_to_any_host = false;
    let mut compiled = None;
    let (setting, source) = match (&args.hosts_allow, &args.config) {
        (Some(patterns), _) => (
            patterns.clone(),
            Source {
                from: "command line",
                file: None,
                relocation_server: None,
            },
        ),
        (None, config) => {
            let path = config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            match ConfigFile::read(&path) {
                Ok(file) => {
                    let (cfg, config_warnings) = file.relocation().map_err(|e| e.to_string())?;
                    warnings.extend(config_warnings);
                    compiled = Some(settings::compile_hosts_allow(&cfg, Some(&path)).map(|_| ()));
                    if !cfg.server {
                        warnings.push(format!(
                            "{}: (xend-relocation-server yes) is not set: the daemon would not \
                             listen for relocations at all (unless given --listen)",
                            path.display()
                        ));
                    } else if let Some(w) = open_warning(&cfg) {
                        warnings.push(format!("{}: {w}", path.display()));
                        open_to_any_host = true;
                    }
                    (
                        cfg.hosts_allow.to_owned_string(),
                        Source {
                            from: "config",
                            file: Some(path.display().to_string()),
                            relocation_server: Some(cfg.server),
                        },
                    )
                }
                Err(SettingsError::Read { source, .. })
                    if config.is_none() && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    warnings.push(format!(
                        "{} not found: using xend's defaults (empty hosts-allow)",
                        path.display()
                    ));
                    (
                        String::new(),
                        Source {
                            from: "defaults",
                            file: Some(path.display().to_string()),
                            relocation_server: Some(false),
                        },
                    )
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };

    let (acl, acl_warnings) = match &compiled {
        // From a file: the one compile `serve` does too (its errors name the
        // file and the line).
        Some(Err(e)) => return Err(e.clone()),
        Some(Ok(_)) | None => HostsAllow::compile(&setting)
            .map_err(|e| format!("xend-relocation-hosts-allow: {}", e.with_setting(&setting)))?,
    };
    warnings.extend(acl_warnings.iter().map(ToString::to_string));

    let ip = canonical(args.ip);
    let ip_text = ip.to_string();
    let (name, name_source, name_note) = match &args.name {
        Some(name) => (Some(name.clone()), "given", None),
        None => match name_peer(resolver, ip) {
            PeerName::Confirmed(name) => (Some(name), "reverse lookup, forward-confirmed", None),
            unconfirmed @ PeerName::Unconfirmed { .. } => {
                (None, "none", Some(unconfirmed.to_string()))
            }
            none @ PeerName::None { .. } => (None, "none", Some(none.to_string())),
        },
    };

    let decision = acl.admit(&ip_text, name.as_deref());
    let patterns: Vec<String> = acl.patterns().map(str::to_owned).collect();
    let (pattern_index, matched_on) = match decision {
        Decision::Admitted { pattern, on } => (
            Some(pattern),
            Some(match on {
                MatchedOn::Name => "name",
                MatchedOn::Ip => "address",
            }),
        ),
        _ => (None, None),
    };
    let pattern = pattern_index.and_then(|i| patterns.get(i).cloned());
    let reason = match (&decision, &pattern, pattern_index) {
        (Decision::Admitted { .. }, Some(text), Some(i)) => format!(
            "pattern {} of {} '{text}' matches the peer's {}",
            i + 1,
            patterns.len(),
            matched_on.unwrap_or("name")
        ),
        _ => decision.to_string(),
    };
    Ok(Report {
        admitted: decision.is_admitted(),
        verdict: if decision.is_admitted() {
            "admitted"
        } else {
            "refused"
        },
        ip: ip_text,
        name,
        name_source,
        name_note,
        hosts_allow: setting,
        patterns,
        pattern_index,
        pattern,
        matched_on,
        reason,
        warnings,
        open_to_any_host,
        source,
    })
}

fn write_text(out: &mut dyn std::io::Write, r: &Report) -> std::io::Result<()> {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let from = match &r.source.file {
        Some(file) => format!("{} {file}", r.source.from),
        None => r.source.from.to_owned(),
    };
    if r.hosts_allow.trim().is_empty() {
        writeln!(
            out,
            "hosts-allow: empty (from {from}): every host is admitted"
        )?;
    } else {
        writeln!(
            out,
            "hosts-allow: {} pattern(s) (from {from}): {}",
            r.patterns.len(),
            r.patterns
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    match (&r.name, &r.name_note) {
        (Some(name), _) => writeln!(out, "peer: {} named {name} ({})", r.ip, r.name_source)?,
        (None, Some(note)) => writeln!(out, "peer: {}, name: {note}", r.ip)?,
        (None, None) => writeln!(out, "peer: {} (no name)", r.ip)?,
    }
    writeln!(
        out,
        "{}: {}",
        r.verdict,
        r.reason
            .trim_start_matches(r.verdict)
            .trim_start_matches(": ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDns;
    impl Resolver for NoDns {
        fn reverse(&self, _ip: IpAddr) -> Result<Option<String>, String> {
            panic!("no DNS lookup may be made when --name is given")
        }
        fn forward(&self, _name: &str) -> Result<Vec<IpAddr>, String> {
            panic!("no DNS lookup may be made when --name is given")
        }
    }

    struct Lying;
    impl Resolver for Lying {
        fn reverse(&self, _ip: IpAddr) -> Result<Option<String>, String> {
            Ok(Some("localhost".into()))
        }
        fn forward(&self, _name: &str) -> Result<Vec<IpAddr>, String> {
            Ok(vec!["192.0.2.99".parse().unwrap()])
        }
    }

    fn args(
        patterns: Option<&str>,
        config: Option<&str>,
        ip: &str,
        name: Option<&str>,
    ) -> CheckHostArgs {
        CheckHostArgs {
            config: config.map(PathBuf::from),
            hosts_allow: patterns.map(str::to_owned),
            ip: ip.parse().unwrap(),
            name: name.map(str::to_owned),
        }
    }

    fn run_text(a: &CheckHostArgs, resolver: &dyn Resolver) -> (u8, String) {
        let mut out = Vec::new();
        let code = run_with(a, false, resolver, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/xend-config.sxp");

    #[test]
    fn example_config_admits_localhost_by_name_and_says_which_pattern() {
        let (code, out) = run_text(
            &args(None, Some(EXAMPLE), "127.0.0.1", Some("localhost")),
            &NoDns,
        );
        assert_eq!(code, EXIT_ADMITTED, "{out}");
        assert!(
            out.contains("pattern 1 of 2 '^localhost$' matches the peer's name"),
            "{out}"
        );
    }

    #[test]
    fn refusal_says_why() {
        let (code, out) = run_text(
            &args(
                Some("^hosta\\.example\\.org$"),
                None,
                "192.0.2.7",
                Some("evil.example.net"),
            ),
            &NoDns,
        );
        assert_eq!(code, EXIT_REFUSED, "{out}");
        assert!(
            out.contains("refused: no pattern matches the peer's address or name"),
            "{out}"
        );
    }

    #[test]
    fn address_match_and_json() {
        let a = args(
            Some("^10\\.1\\. ^192\\.0\\.2\\.\\d+$"),
            None,
            "192.0.2.7",
            Some("x.example"),
        );
        let mut out = Vec::new();
        assert_eq!(run_with(&a, true, &NoDns, &mut out), EXIT_ADMITTED);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["admitted"], true);
        assert_eq!(v["pattern_index"], 1);
        assert_eq!(v["matched_on"], "address");
        // The unanchored first pattern is warned about with an example.
        assert!(v["warnings"][0].as_str().unwrap().contains("10.1."), "{v}");
    }

    #[test]
    fn unconfirmed_name_is_not_used() {
        let (code, out) = run_text(&args(Some("^localhost$"), None, "192.0.2.66", None), &Lying);
        assert_eq!(code, EXIT_REFUSED, "{out}");
        assert!(out.contains("localhost NOT used"), "{out}");
    }

    #[test]
    fn bad_pattern_and_bad_config_exit_2() {
        let (code, _) = run_text(
            &args(Some("^(a)\\1$"), None, "192.0.2.1", Some("a")),
            &NoDns,
        );
        assert_eq!(code, EXIT_BAD_CONFIG);
        let (code, _) = run_text(
            &args(None, Some("/nonexistent.sxp"), "192.0.2.1", Some("a")),
            &NoDns,
        );
        assert_eq!(code, EXIT_BAD_CONFIG);
        let mut out = Vec::new();
        let a = args(Some("(?<=x)y"), None, "192.0.2.1", Some("a"));
        assert_eq!(run_with(&a, true, &NoDns, &mut out), EXIT_BAD_CONFIG);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["verdict"], "error");
        assert!(v["error"].as_str().unwrap().contains("(?<=x)y"), "{v}");
    }

    #[test]
    fn empty_setting_admits_all() {
        let (code, out) = run_text(&args(Some(""), None, "192.0.2.1", None), &Lying);
        assert_eq!(code, EXIT_ADMITTED, "{out}");
        assert!(out.contains("every host is admitted"), "{out}");
    }

    fn config_file(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("relocd-check-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    fn run_json(a: &CheckHostArgs) -> serde_json::Value {
        let mut out = Vec::new();
        run_with(a, true, &NoDns, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    /// Issue 13, item 5: xend's defaults with the server on (every
    /// interface, empty hosts-allow, no TLS) are reported as open to any
    /// host, with the settings that close it.
    #[test]
    fn open_relocation_server_is_reported() {
        let open = config_file("open.sxp", "(xend-relocation-server yes)\n");
        let v = run_json(&args(
            None,
            Some(open.to_str().unwrap()),
            "192.0.2.1",
            Some("a.example"),
        ));
        assert_eq!(v["open_to_any_host"], true, "{v}");
        let warnings = v["warnings"].as_array().unwrap();
        let w = warnings
            .iter()
            .filter_map(|w| w.as_str())
            .find(|w| w.contains("admits every host"))
            .unwrap_or_else(|| panic!("{v}"));
        assert!(w.starts_with(&format!("{}: ", open.display())), "{w}");
        assert!(w.contains("0.0.0.0:8002"), "{w}");
        for setting in [
            "xend-relocation-hosts-allow",
            "xend-relocation-address",
            "xend-relocation-ssl-server",
            "relocd-relocation-ssl-ca-file",
        ] {
            assert!(w.contains(setting), "{setting}: {w}");
        }

        for (name, body) in [
            (
                "allow.sxp",
                "(xend-relocation-server yes)(xend-relocation-hosts-allow '^hostb$')",
            ),
            (
                "loopback.sxp",
                "(xend-relocation-server yes)(xend-relocation-address 127.0.0.1)",
            ),
            ("off.sxp", "(xend-relocation-server no)"),
        ] {
            let path = config_file(name, body);
            let v = run_json(&args(
                None,
                Some(path.to_str().unwrap()),
                "192.0.2.1",
                Some("a.example"),
            ));
            assert_eq!(v["open_to_any_host"], false, "{name}: {v}");
            assert!(!v.to_string().contains("admits every host"), "{name}: {v}");
        }
    }
}
