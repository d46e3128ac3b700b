//! `relocd serve`: the daemon (xend's role).
//!
//! It holds the engine, known by one trait ([`Service`]: the commands and
//! the incoming relocations, over whatever backend `serve --backend`
//! chose), and a durable [`Journal`], and serves them on two sockets:
//!
//! - the management socket ([`mgmt`], wire format in [`control`]): a Unix
//!   socket, root only, for the local CLI (`relocd list`, `migrate`, …);
//! - the relocation listener ([`listener`]): TCP, for other hosts, with
//!   hosts-allow decided before a byte is read; and beside it, or instead,
//!   the TLS relocation listener (`xend-relocation-ssl-server`), which
//!   admits only peers with a certificate from the CA ([`crate::tls`]).
//!
//! [`serve`] is the whole `relocd serve` command; [`Daemon::start`] is the
//! same daemon without the config file and the signal handling, for tests
//! and the demo, which run several daemons in one process.
//!
//! Start-up order matters: the management socket is claimed first (so a
//! second daemon on the same socket gives up before it touches the journal
//! or the port), then the journal is opened, then the listener bound.
//! Shutdown runs the other way: stop taking commands, tell the operations to
//! stop, stop accepting relocations and let the sessions end (at most the
//! grace period), let the backend resume any guest it paused, remove the
//! socket.
//!
//! # Plugging in
//!
//! - The engine (or a test double) implements [`Service`]: `migrate`,
//!   `save`, `restore` get a [`ProgressSink`]; each `report` becomes one
//!   `{"reply":"progress",…}` line to the client, and `Err(Cancelled)` (or
//!   `is_cancelled()`) says the client sent `cancel` or hung up. The return
//!   value becomes the final line. Admitted relocation connections go to
//!   [`Service::receive`].
//! - hosts-allow implements [`Admission`] (see
//!   [`listener::PatternAdmission`], which takes any `(ip, fqdn) -> bool`).
//!
//! [`serve`] builds these in one place ([`DaemonParts`]); it is the only
//! place that names a backend.

pub mod listener;
pub mod mgmt;
pub mod systemd;

pub use crate::api::ProgressSink;
pub use crate::backend::sim::SimBackend;
pub use crate::engine::{Service, ShutdownToken};
pub use crate::journal::Journal;
pub use listener::{Admission, AdmissionVerdict, Session, SessionHandler};

use crate::api::{self as control, PingInfo};
use crate::journal::{self, JournalError};
use crate::peer::SystemResolver;
use crate::settings::{self, ConfigFile, SettingsError};
use listener::{AdmitAll, ListenerConfig, PatternAdmission, PendingLimits, RelocationListener};
use mgmt::{ControlContext, ControlError, ControlServer, ControlSocket};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

/// The management socket when `--control` is not given.
pub const DEFAULT_CONTROL: &str = "/run/relocd/relocd.sock";
/// The config file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/xen/xend-config.sxp";
/// The state directory (journal) when `--state-dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/relocd";

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file could not be used.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The management socket could not be set up (or another daemon owns it).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The relocation listener could not be bound.
    #[error("relocation listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// xend-relocation-hosts-allow holds a pattern relocd refuses (the
    /// text names the file, line and setting).
    #[error("{0}")]
    HostsAllow(String),
    /// TLS is asked for and its files cannot be used (the text names the
    /// file, its setting and the problem).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    /// `--backend xen` where Xen cannot be reached.
    #[error(transparent)]
    Xen(#[from] crate::backend::xen::XenUnavailable),
    /// The sim backend's guests (`serve --guests FILE`) could not be read
    /// or created.
    #[error("{}: {message}", .path.display())]
    Guests {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Signal handlers could not be installed, or a thread not started.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// The error's category, for `--json` output.
    pub fn kind(&self) -> control::ErrorKind {
        use control::ErrorKind;
        match self {
            DaemonError::Settings(_)
            | DaemonError::HostsAllow(_)
            | DaemonError::Guests { .. }
            | DaemonError::Tls(_) => ErrorKind::Config,
            DaemonError::Control(ControlError::AlreadyRunning { .. })
            | DaemonError::Journal(JournalError::InUse { .. }) => ErrorKind::Exists,
            DaemonError::Control(
                ControlError::NotASocket { .. } | ControlError::PathTooLong { .. },
            ) => ErrorKind::Config,
            DaemonError::Listen { .. } => ErrorKind::Network,
            DaemonError::Xen(_) => ErrorKind::Config,
            DaemonError::Control(_) | DaemonError::Journal(_) | DaemonError::Os { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

/// The daemon's settings (what is left after the config file and the
/// command line are read).
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The management socket.
    pub control: PathBuf,
    /// The state directory (the journal).
    pub state_dir: PathBuf,
    /// The relocation listener; `None`: do not listen.
    pub listen: Option<ListenerConfig>,
    /// How long shutdown waits for running sessions.
    pub shutdown_grace: Duration,
}

/// What the daemon serves. Built by the caller of [`Daemon::start`] once the
/// journal is open (the engine needs it).
pub struct DaemonParts {
    /// The engine: every command and the incoming relocations.
    pub service: Arc<dyn Service>,
    /// hosts-allow.
    pub admission: Arc<dyn Admission>,
}

/// The TLS relocation listener: where, and with which certificates.
#[derive(Clone, Debug)]
pub struct TlsListen {
    /// Where and how (as the plain listener's).
    pub config: ListenerConfig,
    /// The host's identity and the CA (shared with the engine).
    pub tls: Arc<crate::tls::Tls>,
}

/// The listener's sessions, handed to the engine.
struct ServiceSessions(Arc<dyn Service>);

fn incoming(s: Session) -> crate::engine::Incoming {
    crate::engine::Incoming {
        id: s.id,
        stream: s.stream,
        peer: s.peer,
        shutdown: s.shutdown,
    }
}

impl SessionHandler for ServiceSessions {
    fn handle(&self, session: Session) {
        let _busy = crate::residency::Busy::enter();
        self.0.receive(incoming(session));
    }

    fn busy(&self, session: Session, limit: usize) {
        self.0.busy(incoming(session), limit);
    }
}

/// A running daemon. Stop it with [`Daemon::stop`] (dropping it stops it
/// too).
pub struct Daemon {
    control: Option<ControlServer>,
    control_path: PathBuf,
    listener: Option<RelocationListener>,
    listen_addr: Option<SocketAddr>,
    tls_listener: Option<RelocationListener>,
    tls_listen_addr: Option<SocketAddr>,
    service: Arc<dyn Service>,
    journal: Arc<Journal>,
    shutdown: ShutdownToken,
    grace: Duration,
    stopped: bool,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("control", &self.control_path)
            .field("listen", &self.listen_addr)
            .finish()
    }
}

impl Daemon {
    /// Claims the management socket, opens the journal, calls `parts` with
    /// it, binds the listener and starts serving.
    pub fn start(
        cfg: DaemonConfig,
        parts: impl FnOnce(&Arc<Journal>) -> DaemonParts,
    ) -> Result<Daemon, DaemonError> {
        Daemon::start_with(cfg, PendingLimits::default(), parts)
    }

    /// [`Daemon::start`] with the listener's limits on connections awaiting
    /// admission.
    pub fn start_with(
        cfg: DaemonConfig,
        pending: PendingLimits,
        parts: impl FnOnce(&Arc<Journal>) -> DaemonParts,
    ) -> Result<Daemon, DaemonError> {
        Daemon::start_full(cfg, pending, None, parts)
    }

    /// [`Daemon::start_with`] with a TLS relocation listener as well.
    pub fn start_full(
        cfg: DaemonConfig,
        pending: PendingLimits,
        tls: Option<TlsListen>,
        parts: impl FnOnce(&Arc<Journal>) -> DaemonParts,
    ) -> Result<Daemon, DaemonError> {
        let socket = ControlSocket::claim(&cfg.control)?;
        let journal = Arc::new(Journal::open(&cfg.state_dir)?);
        let entries = journal.entries()?;
        for e in journal::unresolved(&entries) {
            tracing::warn!(
                domain = %e.domain,
                session = %e.session_id,
                role = ?e.role,
                state = ?e.state,
                "journal: a migration was not settled before the daemon stopped"
            );
        }
        let parts = parts(&journal);
        let shutdown = ShutdownToken::new();
        let listener = match cfg.listen {
            Some(lc) => {
                let addr = lc.addr;
                let l = RelocationListener::start_with(
                    lc,
                    pending.clone(),
                    parts.admission.clone(),
                    Arc::new(ServiceSessions(parts.service.clone())),
                    shutdown.clone(),
                )
                .map_err(|source| DaemonError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
                tracing::info!(listen = %l.local_addr(), "relocation listener ready");
                Some(l)
            }
            None => None,
        };
        let tls_listener = match tls {
            Some(t) => {
                let addr = t.config.addr;
                let l = RelocationListener::start_tls(
                    t.config,
                    pending,
                    t.tls,
                    parts.admission.clone(),
                    Arc::new(ServiceSessions(parts.service.clone())),
                    shutdown.clone(),
                )
                .map_err(|source| DaemonError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
                tracing::info!(listen = %l.local_addr(), "TLS relocation listener ready");
                Some(l)
            }
            None => None,
        };
        let tls_listen_addr = tls_listener.as_ref().map(RelocationListener::local_addr);
        let listen_addr = listener.as_ref().map(RelocationListener::local_addr);
        let info = PingInfo {
            protocol: control::PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            backend: parts.service.backend_name().to_owned(),
            listen: listen_addr.map(|a| a.to_string()),
            control: cfg.control.clone(),
            state_dir: cfg.state_dir.clone(),
        };
        let control = ControlServer::start(
            socket,
            ControlContext {
                service: parts.service.clone(),
                info,
                shutdown: shutdown.clone(),
            },
        )
        .map_err(|source| DaemonError::Os {
            what: "starting the management thread",
            source,
        })?;
        Ok(Daemon {
            control: Some(control),
            control_path: cfg.control,
            listener,
            listen_addr,
            tls_listener,
            tls_listen_addr,
            service: parts.service,
            journal,
            shutdown,
            grace: cfg.shutdown_grace,
            stopped: false,
        })
    }

    /// The management socket's path.
    pub fn control_path(&self) -> &Path {
        &self.control_path
    }

    /// The relocation listener's bound address, when listening.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// The TLS relocation listener's bound address, when listening.
    pub fn tls_listen_addr(&self) -> Option<SocketAddr> {
        self.tls_listen_addr
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The token the daemon triggers when it stops.
    pub fn shutdown_token(&self) -> &ShutdownToken {
        &self.shutdown
    }

    /// Stops the daemon in order (see the module doc).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.shutdown.trigger();
        if let Some(control) = self.control.take() {
            control.stop();
        }
        self.service.shutdown();
        let deadline = std::time::Instant::now() + self.grace;
        for listener in [self.listener.take(), self.tls_listener.take()]
            .into_iter()
            .flatten()
        {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !listener.stop(left) {
                tracing::warn!(
                    grace_s = self.grace.as_secs_f64(),
                    "relocation sessions still running after the grace period"
                );
            }
        }
        self.service.stopped();
        tracing::info!("relocd stopped");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The backends `--backend` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The simulated hypervisor (no Xen needed).
    Sim,
    /// Xen, through hypercalls.
    Xen,
}

/// `relocd serve`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub conn: crate::client::ControlArg,
    /// xend's config file (default /etc/xen/xend-config.sxp; when that is
    /// missing, xend's defaults apply).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The hypervisor backend: `sim` (the simulated hypervisor, no Xen
    /// needed) or `xen` (a real Xen, from its dom0: lists its domains,
    /// saves, restores and migrates 64-bit PV guests).
    #[arg(long, value_enum, default_value = "sim")]
    pub backend: BackendKind,
    /// Listen for relocations on ADDR:PORT (a name or an address; IPv6 as
    /// `[ADDR]:PORT`), whatever the config says. Port 0 takes any free port;
    /// the log line "relocation listener ready" says which.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: Option<String>,
    /// Listen for TLS relocations on ADDR:PORT, whatever the config says
    /// (xend-relocation-ssl-server and -ssl-port); the key, certificate and
    /// CA files come from the config. The log line "TLS relocation
    /// listener ready" says where.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub ssl_listen: Option<String>,
    /// Where the journal lives.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Relocation sessions that may run at once; more are refused.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent: u32,
    /// Timeout on every read and write of a relocation session, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub io_timeout: u64,
    /// How long a relocation connection may take to be admitted (the TLS
    /// handshake on the TLS port, hosts-allow decided and the peer's first
    /// message received), in seconds; a peer that says nothing is closed
    /// then, not after --io-timeout.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout: u64,
    /// Relocation connections from one host that may await admission at
    /// once; more from that host are closed at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_pending_per_host: u32,
    /// Longest an incoming migration may take from its admission to a
    /// complete image, in seconds (default 30 minutes); past it the
    /// partial guest is destroyed and its slot and memory released. An
    /// admitted source must also send image bytes at least every
    /// --io-timeout. Raise it for large guests over slow links.
    #[arg(long, value_name = "SECS", default_value_t = crate::engine::DEFAULT_MAX_TRANSFER_TIME.as_secs(), value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub max_transfer_time: u64,
    /// Guest memory the simulated hypervisor offers (sim backend; default:
    /// the memory this host has available when the daemon starts). Admission
    /// counts it; a guest's pages take real memory once written.
    #[arg(long, value_name = "SIZE", value_parser = parse_capacity)]
    pub sim_capacity: Option<u64>,
    /// Guests the simulated hypervisor creates and starts at start-up (sim
    /// backend): one a line, `NAME memory=SIZE [dirty-rate=RATE]
    /// [pattern=uniform|hot] [seed=N]`, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub guests: Option<PathBuf>,
}

/// Checks `--listen`'s form (`ADDR:PORT`, `[V6ADDR]:PORT`); the address is
/// resolved when the daemon starts.
fn parse_listen(text: &str) -> Result<String, String> {
    let form = "--listen takes ADDR:PORT, e.g. 0.0.0.0:8002, 127.0.0.1:41008 or [::1]:8002";
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => (h, p),
        _ => return Err(format!("`{text}` has no address and port: {form}")),
    };
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "`{text}`: an IPv6 address goes in brackets: {form}"
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port (0 to 65535): {form}"))?;
    Ok(text.to_owned())
}

fn parse_capacity(text: &str) -> Result<u64, String> {
    crate::backend::sim::parse_size(text).map_err(|e| e.to_string())
}

/// hosts-allow as the listener applies it: empty admits every peer; else
/// the patterns compiled into one DFA, each peer named by reverse lookup and
/// forward confirmation before it is matched. Load-time warnings are logged.
fn admission_for(
    cfg: &relocd_core::config::RelocationConfig<'_>,
    file: Option<&Path>,
) -> Result<Arc<dyn Admission>, DaemonError> {
    if cfg.hosts_allow.to_owned_string().trim().is_empty() {
        return Ok(Arc::new(AdmitAll));
    }
    let (acl, warnings) =
        settings::compile_hosts_allow(cfg, file).map_err(DaemonError::HostsAllow)?;
    for w in &warnings {
        tracing::warn!("xend-relocation-hosts-allow: {w}");
    }
    Ok(Arc::new(PatternAdmission::new(
        SystemResolver,
        move |ip: &str, fqdn: Option<&str>| acl.admit(ip, fqdn).is_admitted(),
    )))
}

fn resolve_addr(text: &str) -> Result<SocketAddr, DaemonError> {
    let unresolvable = |source| DaemonError::Listen {
        addr: text.to_owned(),
        source,
    };
    text.to_socket_addrs()
        .map_err(unresolvable)?
        .next()
        .ok_or_else(|| {
            unresolvable(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name has no address",
            ))
        })
}

/// Installs the log subscriber (stderr; JSON lines with `json`). The level
/// comes from `RELOCD_LOG` (`error` … `trace`, default `info`). When
/// stderr is the journal's ([`systemd::journal_stream`]), each line starts
/// with its priority and has no timestamp.
pub fn init_logging(json: bool) {
    let level = std::env::var("RELOCD_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false);
    let _ = if json {
        builder.json().try_init()
    } else if systemd::journal_stream() {
        builder
            .event_format(systemd::JournalFormat::new())
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The TLS identity `cfg` asks for: `None` when TLS is neither asked for
/// nor fully configured. Asked for, any problem is an error; not asked
/// for, a problem is warned about (`migrate --ssl` is then refused).
fn load_tls(
    cfg: &relocd_core::config::RelocationConfig<'_>,
) -> Result<Option<Arc<crate::tls::Tls>>, DaemonError> {
    let Some((files, asked)) = settings::tls_files(cfg)? else {
        return Ok(None);
    };
    match crate::tls::Tls::load(files) {
        Ok((tls, warnings)) => {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            Ok(Some(Arc::new(tls)))
        }
        Err(e) if asked => Err(e.into()),
        Err(e) => {
            tracing::warn!("TLS files unusable, so `migrate --ssl` is refused: {e}");
            Ok(None)
        }
    }
}

/// SIGHUP: the TLS files are read again for the connections that follow;
/// running migrations keep the certificates they started with.
fn reread_tls(tls: Option<&crate::tls::Tls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP: no TLS certificates to re-read");
        return;
    };
    match tls.reload() {
        Ok(warnings) => {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            tracing::info!(
                key = %tls.files().key.display(),
                cert = %tls.files().cert.display(),
                ca = %tls.files().ca.display(),
                "SIGHUP: TLS certificates re-read; new connections use them, running \
                 migrations keep theirs"
            );
        }
        Err(e) => tracing::error!("SIGHUP: TLS certificates NOT re-read, those in force stay: {e}"),
    }
}

/// `relocd serve`: reads the config, starts the daemon, and runs until
/// SIGTERM or SIGINT; then stops it cleanly. SIGHUP re-reads the TLS
/// certificates.
pub fn serve(control: &Path, args: &ServeArgs) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // First, so a signal during start-up already means a clean stop.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| {
            DaemonError::Os {
                what: "installing signal handlers",
                source,
            }
        })?;

    let xen = match args.backend {
        BackendKind::Sim => None,
        BackendKind::Xen => Some(Arc::new(
            crate::backend::xen::XenBackend::new(crate::backend::xen::open_privcmd()?)
                .in_own_domain()?,
        )),
    };
    // Read before anything is claimed, so a bad file stops nothing running.
    let guests = match &args.guests {
        Some(path) => {
            let bad = |message: String| DaemonError::Guests {
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            crate::backend::sim::parse_guests_file(&text).map_err(|e| bad(e.to_string()))?
        }
        None => Vec::new(),
    };
    let sim_capacity = args
        .sim_capacity
        .unwrap_or_else(crate::backend::sim::default_sim_capacity);
    if xen.is_none() {
        tracing::info!(
            capacity = %crate::units::format_mib(sim_capacity),
            "simulated hypervisor: guest memory offered (--sim-capacity)"
        );
    }
    let sim = Arc::new(SimBackend::with_capacity(sim_capacity));

    let (config_path, file) = match &args.config {
        Some(path) => (path.clone(), Some(ConfigFile::read(path)?)),
        None => {
            let path = PathBuf::from(DEFAULT_CONFIG);
            match ConfigFile::read(&path) {
                Ok(file) => (path, Some(file)),
                Err(SettingsError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    tracing::info!(config = %path.display(), "config file not found; using xend's defaults");
                    (path, None)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let (cfg, warnings) = match &file {
        Some(f) => f.relocation()?,
        None => Default::default(),
    };
    for w in &warnings {
        tracing::warn!("{w}");
    }

    let listen_addr = match &args.listen {
        Some(text) => Some(resolve_addr(text)?),
        None if cfg.server => Some(resolve_addr(&settings::relocation_listen_text(&cfg))?),
        None => {
            tracing::info!(
                config = %config_path.display(),
                "not listening for relocations in plain TCP: (xend-relocation-server yes) is not set \
                 (set it in the config, or pass --listen ADDR:PORT); \
                 the management socket is served"
            );
            None
        }
    };
    let tls = load_tls(&cfg)?;
    let ssl_listen_addr = match (&args.ssl_listen, &tls) {
        (Some(text), Some(_)) => Some(resolve_addr(text)?),
        (Some(_), None) => {
            return Err(crate::tls::TlsSetupError::NotSet {
                setting: crate::tls::SETTING_CA,
                what: "the CA certificates (PEM) peers' certificates must chain to, with \
                       xend-relocation-server-ssl-key-file and -cert-file",
                asked: "--ssl-listen".to_owned(),
            }
            .into())
        }
        (None, _) if cfg.ssl_server => {
            Some(resolve_addr(&settings::relocation_ssl_listen_text(&cfg))?)
        }
        (None, _) => None,
    };
    let engine_tls = tls.as_ref().map(|t| crate::engine::TlsClient {
        tls: t.clone(),
        by_default: cfg.ssl,
        port: cfg.ssl_port,
    });
    let io_timeout = Duration::from_secs(args.io_timeout);
    let max_sessions = usize::try_from(args.max_concurrent).unwrap_or(usize::MAX);
    let hosts_allow = cfg.hosts_allow.to_owned_string();
    let admission = admission_for(&cfg, file.as_ref().map(|_| config_path.as_path()))?;

    let pending = PendingLimits {
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        per_address: usize::try_from(args.max_pending_per_host).unwrap_or(usize::MAX),
    };
    let listener_config = |addr| ListenerConfig {
        addr,
        max_sessions,
        max_pending: max_sessions.saturating_mul(4).saturating_add(16),
        io_timeout: Some(io_timeout),
    };
    let tls_listen = match (ssl_listen_addr, &tls) {
        (Some(addr), Some(tls)) => Some(TlsListen {
            config: listener_config(addr),
            tls: tls.clone(),
        }),
        _ => None,
    };
    let daemon = Daemon::start_full(
        DaemonConfig {
            control: control.to_owned(),
            state_dir: args.state_dir.clone(),
            listen: listen_addr.map(listener_config),
            shutdown_grace: io_timeout,
        },
        pending,
        tls_listen,
        |journal| {
            let cfg = crate::engine::EngineConfig {
                io_timeout,
                max_transfer_time: Duration::from_secs(args.max_transfer_time),
            };
            // What a killed daemon left half done is settled by Engine::new.
            let service: Arc<dyn Service> = match (&xen, engine_tls) {
                (Some(x), None) => {
                    Arc::new(crate::engine::Engine::new(x.clone(), journal.clone(), cfg))
                }
                (Some(x), Some(t)) => Arc::new(
                    crate::engine::Engine::new(x.clone(), journal.clone(), cfg).with_tls(t),
                ),
                (None, None) => Arc::new(crate::engine::Engine::new(
                    sim.clone(),
                    journal.clone(),
                    cfg,
                )),
                (None, Some(t)) => Arc::new(
                    crate::engine::Engine::new(sim.clone(), journal.clone(), cfg).with_tls(t),
                ),
            };
            DaemonParts { service, admission }
        },
    )?;
    let backend_name = if xen.is_some() { "xen" } else { "sim" };
    if let (Some(path), None) = (&args.guests, &xen) {
        if let Err(e) = sim.create_all(&guests) {
            daemon.stop();
            return Err(DaemonError::Guests {
                path: path.clone(),
                message: e.message,
            });
        }
    }
    // The plain listener's peers are not authenticated by TLS (the TLS
    // listener's all are, by the CA).
    let open = daemon
        .listen_addr()
        .and_then(|a| settings::open_relocation_warning(a, &hosts_allow, false));
    if let Some(warning) = open {
        tracing::warn!("{warning}");
    }
    // Start-up is over (libraries loaded, sockets open): give back the
    // code and read-only data pages it left mapped, and again whenever the
    // daemon falls idle (issue 17; crate::residency).
    crate::residency::trim_logged("start-up");
    crate::residency::enable_idle_trim();
    tracing::info!(
        control = %daemon.control_path().display(),
        listen = %daemon.listen_addr().map_or_else(|| "-".to_owned(), |a| a.to_string()),
        listen_tls = %daemon.tls_listen_addr().map_or_else(|| "-".to_owned(), |a| a.to_string()),
        backend = backend_name,
        pid = std::process::id(),
        "relocd ready"
    );
    // The unit is Type=notify: started once both sockets are up.
    if let Err(e) = systemd::notify("READY=1\nSTATUS=serving") {
        tracing::warn!(error = %e, "could not tell systemd that relocd is ready (NOTIFY_SOCKET)");
    }
    let signal = loop {
        match signals.forever().next() {
            Some(SIGHUP) => reread_tls(tls.as_deref()),
            Some(SIGTERM) => break "SIGTERM",
            Some(SIGINT) => break "SIGINT",
            _ => break "end of signal stream",
        }
    };
    tracing::info!(signal, "stopping");
    let _ = systemd::notify("STOPPING=1");
    daemon.stop();
    Ok(())
}
