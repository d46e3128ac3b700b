//! `relocd demo`: relocd's main job on one machine with no Xen and no set-up.
//!
//! It starts two daemons in this process on loopback (temporary management
//! sockets and state directories; the destination listens on
//! `127.0.0.1:0`), creates a simulated guest at the source through its
//! management socket, live-migrates it to the destination with the progress
//! bar, and checks the result:
//!
//! 1. the destination's memory equals, byte for byte, what the workload
//!    must have written after the step count the guest reached;
//! 2. the step counter goes on at the destination;
//! 3. the source no longer has the guest.
//!
//! Then it prints the migration's summary (`--json`: one object with the
//! summary and the checks) and exits non-zero if a check failed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{ErrorKind, MigrateRequest, Outcome, Request, SimCreateRequest};
use crate::backend::sim::spec_from_request;
use crate::backend::sim::DomainState;
use crate::cli::sim::PatternArg;
use crate::cli::summary::{format_bytes, format_rate, outcome_json, transfer_text};
use crate::cli::{call_long, call_short, Failure, LongCommand, Output};
use crate::daemon::listener::{AdmitAll, ListenerConfig};
use crate::daemon::{Daemon, DaemonConfig, DaemonParts, SimBackend};
use crate::engine::{Engine, EngineConfig};

/// `relocd demo`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// The guest's memory.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_memory)]
    pub memory: u64,
    /// How fast its workload dirties memory.
    #[arg(long, value_name = "RATE", default_value = "64M/s", value_parser = parse_rate)]
    pub dirty_rate: u64,
    /// The workload's write pattern.
    #[arg(long, value_enum, default_value = "hot")]
    pub pattern: PatternArg,
    /// The downtime target of the stop-and-copy, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub downtime_limit: u64,
    /// How long the guest runs at the source before the migration, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub warm_up: u64,
}

fn parse_memory(text: &str) -> Result<u64, String> {
    crate::backend::sim::parse_memory(text).map_err(|e| e.to_string())
}

fn parse_rate(text: &str) -> Result<u64, String> {
    crate::backend::sim::parse_rate(text).map_err(|e| e.to_string())
}

const NAME: &str = "demo1";

fn fail(msg: impl Into<String>) -> Failure {
    Failure::new(ErrorKind::Internal, msg)
}

/// One daemon of the demo.
fn start_daemon(dir: &Path, tag: &str, listen: bool) -> Result<(Daemon, Arc<SimBackend>), Failure> {
    let sim = Arc::new(SimBackend::with_capacity(64 << 30));
    let io_timeout = Duration::from_secs(30);
    let cfg = DaemonConfig {
        control: dir.join(format!("{tag}.sock")),
        state_dir: dir.join(tag),
        listen: listen.then(|| ListenerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_sessions: 4,
            max_pending: 16,
            io_timeout: Some(io_timeout),
        }),
        shutdown_grace: io_timeout,
    };
    let daemon = Daemon::start(cfg, |journal| {
        let engine = Arc::new(Engine::new(
            sim.clone(),
            journal.clone(),
            EngineConfig {
                io_timeout,
                ..EngineConfig::default()
            },
        ));
        DaemonParts {
            service: engine,
            admission: Arc::new(AdmitAll),
        }
    })
    .map_err(|e| fail(format!("starting the {tag} daemon: {e}")))?;
    Ok((daemon, sim))
}

/// One check's outcome.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Runs `relocd demo`.
pub fn run(args: &DemoArgs, out: &Output) -> Result<(), Failure> {
    if std::env::var_os("RELOCD_LOG").is_some() {
        crate::daemon::init_logging(out.json);
    }
    let dir = std::env::temp_dir().join(format!("relocd-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let result = run_in(&dir, args, out);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, args: &DemoArgs, out: &Output) -> Result<(), Failure> {
    let (a, a_sim) = start_daemon(dir, "source", false)?;
    let (b, b_sim) = start_daemon(dir, "destination", true)?;
    let to = b
        .listen_addr()
        .ok_or_else(|| fail("the destination does not listen"))?;
    let create = SimCreateRequest {
        name: NAME.into(),
        memory_bytes: args.memory,
        dirty_rate_bytes_per_s: args.dirty_rate,
        pattern: Some(args.pattern.as_str().into()),
        vcpus: None,
        fill_percent: 0,
    };
    let spec = spec_from_request(&create).map_err(|e| Failure {
        error: e,
        code: crate::cli::EXIT_USAGE,
    })?;
    call_short(a.control_path(), &Request::SimCreate(create))?;
    if !out.json {
        eprintln!(
            "relocd demo: source daemon {} → destination daemon {} (listening on {to})",
            a.control_path().display(),
            b.control_path().display()
        );
        eprintln!(
            "relocd demo: guest {NAME}: {} of memory dirtying {} ({} pattern); live migration follows",
            format_bytes(args.memory),
            format_rate(args.dirty_rate),
            args.pattern.as_str()
        );
    }
    std::thread::sleep(Duration::from_millis(args.warm_up));
    let req = MigrateRequest {
        domain: NAME.into(),
        host: to.ip().to_string(),
        port: Some(to.port()),
        live: true,
        downtime_limit_ms: Some(args.downtime_limit),
        ..MigrateRequest::default()
    };
    let cmd = LongCommand {
        label: format!("migrate {NAME} → {to}"),
        on_cancel: format!("{NAME} keeps running at the source"),
    };
    let outcome = call_long(a.control_path(), &Request::Migrate(req), &cmd, out)?;
    let Outcome::Migrated(summary) = &outcome else {
        return Err(crate::cli::unexpected("migrate", &outcome));
    };

    let checks = check(&a_sim, &b_sim, &spec);
    drop(a);
    drop(b);
    let ok = checks.iter().all(|c| c.ok);
    if out.json {
        let list: Vec<Value> = checks
            .iter()
            .map(|c| serde_json::json!({"check": c.name, "ok": c.ok, "detail": c.detail}))
            .collect();
        out.print_json(&outcome_json(
            &outcome,
            &[
                ("host", Value::from(to.to_string())),
                ("live", Value::from(true)),
                ("memory_bytes", Value::from(args.memory)),
                ("dirty_rate_bytes_per_s", Value::from(args.dirty_rate)),
                ("checks", Value::from(list)),
                ("ok", Value::from(ok)),
            ],
        ));
    } else {
        print!(
            "{}",
            transfer_text(&format!("migrated {NAME} to {to} (live)"), summary)
        );
        println!("checks");
        for c in &checks {
            println!(
                "  {} {:<26} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    if ok {
        Ok(())
    } else {
        Err(fail("a check failed"))
    }
}

fn check(a: &SimBackend, b: &SimBackend, spec: &crate::backend::sim::GuestSpec) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(g) = b.hypervisor().by_name(NAME) else {
        checks.push(Check {
            name: "destination has the guest",
            ok: false,
            detail: "not found".into(),
        });
        return checks;
    };
    let running = g.state() == DomainState::Running;
    checks.push(Check {
        name: "destination runs the guest",
        ok: running,
        detail: format!("state {}", g.state().as_str()),
    });
    // Memory: paused, so the step count and the memory are one moment.
    let memory = match g.pause() {
        Ok(()) => {
            let steps = g.steps().unwrap_or(0);
            let r = g.verify(&spec.expected_memory(steps));
            let _ = g.unpause();
            Check {
                name: "memory byte for byte",
                ok: r.is_ok(),
                detail: match r {
                    Ok(()) => format!(
                        "{} pages equal the workload's after step {steps}",
                        g.nr_pages()
                    ),
                    Err(e) => e.to_string(),
                },
            }
        }
        Err(e) => Check {
            name: "memory byte for byte",
            ok: false,
            detail: e.to_string(),
        },
    };
    checks.push(memory);
    let before = g.steps().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = before;
    while after <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = g.steps().unwrap_or(0);
    }
    checks.push(Check {
        name: "step counter goes on",
        ok: after > before,
        detail: format!("step {before} → {after} at the destination"),
    });
    let gone = a.hypervisor().by_name(NAME).is_none();
    checks.push(Check {
        name: "source no longer has it",
        ok: gone,
        detail: if gone {
            "gone from the source's list".into()
        } else {
            "still there".into()
        },
    });
    checks
}
