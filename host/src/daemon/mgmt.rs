//! The management socket's server side: claiming the socket path, accepting
//! local clients, and turning each [`Request`] into a call on the engine's
//! [`Service`]. The wire format is in [`crate::api`].

use crate::api::{
    read_line, write_line, CommandError, ErrorKind, FrameError, Outcome, PingInfo, Progress, Reply,
    Request, MAX_LINE,
};
use crate::api::{Cancelled, ProgressSink};
use crate::engine::{Service, ShutdownToken};
use crate::lock::InstanceLock;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Clients served at once; more are told the daemon is busy.
pub const MAX_CLIENTS: usize = 64;
/// The longest path a Unix socket address holds (`sun_path`, with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// How long a reply write may block before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon waits for an existing socket's owner to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the management socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A live daemon holds the socket.
    #[error("relocd is already serving on {path} ({}); stop it or pick another --control",
        .pid.map_or_else(|| "still starting".to_owned(), |p| format!("pid {p}")))]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
        /// The live daemon's pid, when it answered.
        pid: Option<u32>,
    },
    /// Something other than a socket is at the path.
    #[error("{path} exists and is not a socket; not replacing it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The path does not fit in a Unix socket address.
    #[error("{path}: socket path longer than {MAX_SOCKET_PATH} bytes")]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// An OS error while setting up the socket.
    #[error("management socket {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Asks whatever listens on `path` for a `Ping`; the daemon's pid when a
/// relocd answers.
fn probe(path: &Path) -> Option<u32> {
    let stream = UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let mut writer = stream.try_clone().ok()?;
    write_line(&mut writer, &Request::Ping).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    read_line(&mut reader, &mut line, MAX_LINE).ok()?;
    match serde_json::from_slice(&line).ok()? {
        Reply::Ok {
            result: Outcome::Pong(info),
        } => Some(info.pid),
        _ => None,
    }
}

/// The bound management socket, not yet serving. Dropping it removes the
/// socket file (when it is still ours).
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
    /// (device, inode) of the socket file we created, so that only our own
    /// file is removed at the end.
    identity: (u64, u64),
    _lock: InstanceLock,
}

impl ControlSocket {
    /// Claims `path`: creates the directory (mode 0700) when missing, takes
    /// the path's instance lock, refuses if a live relocd holds it or answers
    /// on the socket, replaces a stale socket, and binds a socket of mode
    /// 0600. The socket is bound under a temporary name and renamed into
    /// place, so it is never reachable with wider permissions.
    pub fn claim(path: &Path) -> Result<ControlSocket, ControlError> {
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ControlError::PathTooLong {
                path: path.to_owned(),
            });
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(io_err(path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket path needs a UTF-8 file name",
            )));
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        let lock = InstanceLock::acquire("control", &dir, file_name).map_err(io_err(&dir))?;
        let Some(lock) = lock else {
            return Err(ControlError::AlreadyRunning {
                path: path.to_owned(),
                pid: probe(path),
            });
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ControlError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => {
                // The lock is free, but a daemon in another network
                // namespace (or without the lock) may still answer.
                if let Some(pid) = probe(path) {
                    return Err(ControlError::AlreadyRunning {
                        path: path.to_owned(),
                        pid: Some(pid),
                    });
                }
                tracing::info!(socket = %path.display(), "replacing a stale management socket (no relocd answers on it)");
            }
        }
        let temp = dir.join(format!(".{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let listener = UnixListener::bind(&temp).map_err(io_err(&temp))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            return Err(io_err(path)(e));
        }
        let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
        Ok(ControlSocket {
            path: path.to_owned(),
            listener: Some(listener),
            identity: (meta.dev(), meta.ino()),
            _lock: lock,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the path is still the socket we bound.
    fn is_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if !self.is_ours() {
            tracing::warn!(socket = %self.path.display(), "the management socket was replaced by someone else; leaving it");
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(socket = %self.path.display(), "management socket removed"),
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), error = %e, "could not remove the management socket")
            }
        }
    }
}

/// What the management server answers with.
pub struct ControlContext {
    /// The engine (or a test double).
    pub service: Arc<dyn Service>,
    /// What `Ping` reports.
    pub info: PingInfo,
    /// Triggered when the daemon stops.
    pub shutdown: ShutdownToken,
}

/// The management socket, serving.
pub struct ControlServer {
    socket: Option<ControlSocket>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("socket", &self.socket)
            .finish()
    }
}

impl ControlServer {
    /// Starts serving `socket` on a thread of its own.
    pub fn start(mut socket: ControlSocket, ctx: ControlContext) -> io::Result<ControlServer> {
        let stopping = Arc::new(AtomicBool::new(false));
        let listener = socket
            .listener
            .take()
            .ok_or_else(|| io::Error::other("the management socket is already served"))?;
        let thread = std::thread::Builder::new()
            .name("relocd-control".into())
            .spawn({
                let stopping = stopping.clone();
                move || accept_loop(listener, Arc::new(ctx), stopping)
            })?;
        Ok(ControlServer {
            socket: Some(socket),
            stopping,
            thread: Some(thread),
        })
    }

    /// Stops accepting and removes the socket file (when it is still ours).
    /// Clients already connected finish their current command.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Wake the blocked accept() with a connection of our own.
            if socket.is_ours() && UnixStream::connect(&socket.path).is_ok() {
                let _ = thread.join();
            }
        }
        drop(socket);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn accept_loop(listener: UnixListener, ctx: Arc<ControlContext>, stopping: Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a management connection failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let _ = write_line(
                &mut stream,
                &Reply::Error(CommandError::new(
                    ErrorKind::Refused,
                    format!("the daemon serves {MAX_CLIENTS} clients already"),
                )),
            );
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name("relocd-client".into())
            .spawn({
                let (ctx, clients) = (ctx.clone(), clients.clone());
                move || {
                    let busy = crate::residency::Busy::enter();
                    serve_client(stream, &ctx);
                    clients.fetch_sub(1, Ordering::SeqCst);
                    // The last piece of work: relocd serve trims here.
                    drop(busy);
                }
            });
        if let Err(e) = spawned {
            clients.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "no thread for a management connection");
        }
    }
}

/// Per-connection flags shared by the reader thread and the command.
#[derive(Default)]
struct ConnFlags {
    /// A command is running.
    running: AtomicBool,
    /// `Cancel` arrived while it ran.
    cancel: AtomicBool,
    /// The client closed its end (or a write to it failed): sticky.
    closed: AtomicBool,
}

impl ConnFlags {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst)
    }
}

enum Incoming {
    Request(Request),
    Bad(String),
    TooLong,
}

fn serve_client(stream: UnixStream, ctx: &ControlContext) {
    let flags = Arc::new(ConnFlags::default());
    let (tx, rx) = mpsc::sync_channel::<Incoming>(16);
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "management connection: cannot clone the socket");
            return;
        }
    };
    let reader_thread = std::thread::Builder::new()
        .name("relocd-client-rx".into())
        .spawn({
            let flags = flags.clone();
            move || read_requests(reader, &tx, &flags)
        });
    if reader_thread.is_err() {
        return;
    }
    let mut writer = stream;
    let _ = writer.set_write_timeout(Some(WRITE_TIMEOUT));
    for item in rx {
        let reply = match item {
            Incoming::Request(req) => {
                flags.cancel.store(false, Ordering::SeqCst);
                flags.running.store(true, Ordering::SeqCst);
                let reply = run_request(&req, ctx, &mut writer, &flags);
                flags.running.store(false, Ordering::SeqCst);
                reply
            }
            Incoming::Bad(why) => Reply::Error(CommandError::new(ErrorKind::BadRequest, why)),
            Incoming::TooLong => {
                let _ = write_line(
                    &mut writer,
                    &Reply::Error(CommandError::new(
                        ErrorKind::LineTooLong,
                        format!("request line longer than {MAX_LINE} bytes; closing"),
                    )),
                );
                let _ = writer.shutdown(std::net::Shutdown::Write);
                break;
            }
        };
        if write_line(&mut writer, &reply).is_err() {
            break;
        }
    }
}

/// The reader half: forwards requests to the command loop, handles
/// `Cancel` and the client's going away at once (even while a command runs).
fn read_requests(stream: UnixStream, tx: &mpsc::SyncSender<Incoming>, flags: &ConnFlags) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line, MAX_LINE) {
            Ok(true) => {
                let item = match serde_json::from_slice::<Request>(&line) {
                    Ok(Request::Cancel) => {
                        if flags.running.load(Ordering::SeqCst) {
                            flags.cancel.store(true, Ordering::SeqCst);
                        }
                        continue;
                    }
                    Ok(req) => Incoming::Request(req),
                    Err(e) => Incoming::Bad(format!("not a request: {e}")),
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
            Ok(false) | Err(FrameError::Io(_)) => {
                flags.closed.store(true, Ordering::SeqCst);
                break;
            }
            Err(FrameError::TooLong { .. }) => {
                tracing::warn!(
                    limit = MAX_LINE,
                    "management request line too long; closing the connection"
                );
                let _ = tx.send(Incoming::TooLong);
                // Drain what the client still sends (bounded), so our close
                // does not reset the connection before it reads the reply.
                let mut rest = reader.into_inner();
                let _ = rest.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = io::copy(&mut (&mut rest).take(16 * MAX_LINE as u64), &mut io::sink());
                flags.closed.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// Progress lines of the running command, written on the connection.
struct Sink<'a> {
    writer: &'a mut UnixStream,
    flags: &'a ConnFlags,
}

impl ProgressSink for Sink<'_> {
    fn report(&mut self, progress: &Progress) -> Result<(), Cancelled> {
        if self.flags.cancelled() {
            return Err(Cancelled);
        }
        if write_line(self.writer, &Reply::Progress(progress.clone())).is_err() {
            self.flags.closed.store(true, Ordering::SeqCst);
            return Err(Cancelled);
        }
        Ok(())
    }

    fn is_cancelled(&self) -> bool {
        self.flags.cancelled()
    }
}

fn run_request(
    req: &Request,
    ctx: &ControlContext,
    writer: &mut UnixStream,
    flags: &ConnFlags,
) -> Reply {
    match req {
        Request::Ping | Request::List | Request::Status => {
            tracing::debug!(cmd = req.name(), "management request")
        }
        _ => tracing::info!(cmd = req.name(), "management request"),
    }
    let mut sink = Sink { writer, flags };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch(req, ctx, &mut sink)
    }));
    match result {
        Ok(Ok(result)) => Reply::Ok { result },
        Ok(Err(e)) => {
            tracing::info!(cmd = req.name(), kind = ?e.kind, error = %e.message, "management request failed");
            Reply::Error(e)
        }
        Err(_) => {
            tracing::error!(cmd = req.name(), "management request panicked");
            Reply::Error(CommandError::new(
                ErrorKind::Internal,
                format!("internal error in {}; see the daemon's log", req.name()),
            ))
        }
    }
}

fn dispatch(
    req: &Request,
    ctx: &ControlContext,
    sink: &mut dyn ProgressSink,
) -> Result<Outcome, CommandError> {
    let long = !matches!(req, Request::Ping | Request::List | Request::Status);
    if long && ctx.shutdown.is_triggered() {
        return Err(CommandError::new(
            ErrorKind::ShuttingDown,
            "the daemon is shutting down",
        ));
    }
    match req {
        Request::Ping => Ok(Outcome::Pong(ctx.info.clone())),
        Request::List => ctx
            .service
            .list()
            .map(|domains| Outcome::Domains { domains }),
        // Read-only: answered while the daemon stops too.
        Request::Status => Ok(Outcome::Status {
            sessions: ctx.service.status(),
        }),
        Request::SimCreate(r) => ctx.service.sim_create(r).map(Outcome::Created),
        Request::Migrate(r) => ctx.service.migrate(r, sink).map(Outcome::Migrated),
        Request::Save(r) => ctx.service.save(r, sink).map(Outcome::Saved),
        Request::Restore(r) => ctx.service.restore(r, sink).map(Outcome::Restored),
        Request::Resolve(r) => ctx.service.resolve(r).map(|()| Outcome::Resolved {
            domain: r.domain.clone(),
            action: r.action,
        }),
        Request::Cancel => Err(CommandError::new(
            ErrorKind::BadRequest,
            "no command is running on this connection",
        )),
    }
}
