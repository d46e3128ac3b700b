//! The relocation listener: TCP connections from other relocd (or xend)
//! hosts, each admitted or refused before a byte is read from it.
//!
//! For each accepted connection, in order:
//!
//! 1. [`Admission::decide`] on the peer's address (hosts-allow, with reverse
//!    lookup and forward confirmation). A refused peer is logged at WARN
//!    with its address and name and the connection is closed at once:
//!    nothing was read from it and nothing is written to it (DESIGN.md,
//!    invariant 3). The lookups run on the connection's own thread, so a slow
//!    resolver does not stall the accept loop; at most
//!    [`ListenerConfig::max_pending`] connections wait for admission, the
//!    others are closed unread.
//! 2. The concurrency limit: when [`ListenerConfig::max_sessions`] sessions
//!    run already, the connection goes to [`SessionHandler::busy`], which may
//!    write the protocol's refusal.
//! 3. Read and write timeouts ([`ListenerConfig::io_timeout`]) are set on the
//!    socket, and the [`Session`] goes to [`SessionHandler::handle`] on the
//!    connection's thread.

use super::ShutdownToken;
use crate::peer::{canonical, name_peer, PeerName, Resolver};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether a peer may open a relocation session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionVerdict {
    /// Go ahead.
    Admit {
        /// What is known of the peer's name (for the logs and the session).
        peer_name: PeerName,
    },
    /// Close the connection unread.
    Refuse {
        /// What is known of the peer's name (for the log line).
        peer_name: PeerName,
        /// Why, for the log line (never sent to the peer).
        reason: String,
    },
}

impl AdmissionVerdict {
    /// Whether the peer is admitted.
    pub fn is_admitted(&self) -> bool {
        matches!(self, AdmissionVerdict::Admit { .. })
    }
}

/// The admission policy, decided from the peer's address alone (before any
/// byte of the session is read).
pub trait Admission: Send + Sync {
    /// Decides on `peer`. May block (name lookups); runs on the connection's
    /// own thread.
    fn decide(&self, peer: SocketAddr) -> AdmissionVerdict;
}

/// Admits every peer without a lookup: an empty
/// `xend-relocation-hosts-allow`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn decide(&self, _peer: SocketAddr) -> AdmissionVerdict {
        AdmissionVerdict::Admit {
            peer_name: PeerName::None {
                reason: "not looked up: hosts-allow is empty".into(),
            },
        }
    }
}

/// Refuses every peer with a fixed reason (fail closed, when a policy could
/// not be put in place). Peers are still named, for the log line.
pub struct RefuseAll {
    resolver: Box<dyn Resolver + Send + Sync>,
    reason: String,
}

impl RefuseAll {
    /// Refuses everyone, naming peers with `resolver` and logging `reason`.
    pub fn new(resolver: impl Resolver + Send + Sync + 'static, reason: impl Into<String>) -> Self {
        RefuseAll {
            resolver: Box::new(resolver),
            reason: reason.into(),
        }
    }
}

impl Admission for RefuseAll {
    fn decide(&self, peer: SocketAddr) -> AdmissionVerdict {
        AdmissionVerdict::Refuse {
            peer_name: name_peer(self.resolver.as_ref(), canonical(peer.ip())),
            reason: self.reason.clone(),
        }
    }
}

/// hosts-allow: names the peer (reverse lookup, forward confirmation), then
/// asks `matcher(ip_text, confirmed_fqdn)`. The IP text is the canonical one
/// (an IPv4-mapped IPv6 peer is matched as its IPv4 address). With the core's
/// matcher: `move |ip, fqdn| hosts_allow.admit(ip, fqdn).is_admitted()`.
pub struct PatternAdmission<M> {
    resolver: Box<dyn Resolver + Send + Sync>,
    matcher: M,
}

impl<M> PatternAdmission<M>
where
    M: Fn(&str, Option<&str>) -> bool + Send + Sync,
{
    /// Admission by `matcher`, naming peers with `resolver`.
    pub fn new(resolver: impl Resolver + Send + Sync + 'static, matcher: M) -> Self {
        PatternAdmission {
            resolver: Box::new(resolver),
            matcher,
        }
    }
}

impl<M> Admission for PatternAdmission<M>
where
    M: Fn(&str, Option<&str>) -> bool + Send + Sync,
{
    fn decide(&self, peer: SocketAddr) -> AdmissionVerdict {
        let ip = canonical(peer.ip());
        let peer_name = name_peer(self.resolver.as_ref(), ip);
        if (self.matcher)(&ip.to_string(), peer_name.usable()) {
            AdmissionVerdict::Admit { peer_name }
        } else {
            AdmissionVerdict::Refuse {
                peer_name,
                reason: "matches no xend-relocation-hosts-allow pattern".into(),
            }
        }
    }
}

/// An admitted relocation connection, handed to a [`SessionHandler`].
#[derive(Debug)]
pub struct Session {
    /// The daemon-local session number (for logs).
    pub id: u64,
    /// The connection, with read and write timeouts already set. Nothing has
    /// been read from it.
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer's name, as admission found it.
    pub peer_name: PeerName,
    /// The timeout set on every read and write (apply it to clones too).
    pub io_timeout: Option<Duration>,
    /// Triggered when the daemon stops: end the session at the next safe
    /// point.
    pub shutdown: ShutdownToken,
}

/// Runs relocation sessions (the destination side of the protocol).
pub trait SessionHandler: Send + Sync {
    /// Runs one admitted session to its end, on the connection's own thread.
    /// The concurrency slot is released when this returns.
    fn handle(&self, session: Session);

    /// A peer was admitted while `limit` sessions already run. The default
    /// closes the connection; a protocol handler should write its "busy"
    /// refusal first, so the peer's operator sees why.
    fn busy(&self, session: Session, limit: usize) {
        let _ = (session, limit);
    }
}

/// A handler for a daemon without the relocation protocol: it logs and
/// closes each session.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSessions;

impl SessionHandler for NoSessions {
    fn handle(&self, session: Session) {
        tracing::warn!(
            session = session.id,
            peer = %session.peer,
            "relocation protocol is not available in this build; closing"
        );
    }
}

/// The listener's settings.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Where to listen (port 0: any free port; see
    /// [`RelocationListener::local_addr`]).
    pub addr: SocketAddr,
    /// Sessions that may run at once.
    pub max_sessions: usize,
    /// Connections that may wait for admission at once.
    pub max_pending: usize,
    /// Timeout on every read and write of a session's socket.
    pub io_timeout: Option<Duration>,
}

#[derive(Default)]
struct Counts {
    pending: usize,
    active: usize,
}

struct Shared {
    counts: Mutex<Counts>,
    changed: Condvar,
    stopping: AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place in the counts, given back on drop (even when a
/// handler panics).
struct Slot {
    shared: Arc<Shared>,
    active: bool,
}

impl Slot {
    fn pending(shared: &Arc<Shared>, max: usize) -> Option<Slot> {
        let mut c = shared.lock();
        if c.pending >= max {
            return None;
        }
        c.pending += 1;
        Some(Slot {
            shared: shared.clone(),
            active: false,
        })
    }

    fn promote(&mut self, max: usize) -> bool {
        let mut c = self.shared.lock();
        if c.active >= max {
            return false;
        }
        c.pending -= 1;
        c.active += 1;
        self.active = true;
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.shared.lock();
        if self.active {
            c.active -= 1;
        } else {
            c.pending -= 1;
        }
        self.shared.changed.notify_all();
    }
}

/// A running relocation listener.
pub struct RelocationListener {
    local: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RelocationListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelocationListener")
            .field("local", &self.local)
            .finish()
    }
}

impl RelocationListener {
    /// Binds `cfg.addr` and starts accepting on a thread of its own.
    pub fn start(
        cfg: ListenerConfig,
        admission: Arc<dyn Admission>,
        handler: Arc<dyn SessionHandler>,
        shutdown: ShutdownToken,
    ) -> io::Result<RelocationListener> {
        let listener = TcpListener::bind(cfg.addr)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        let thread = std::thread::Builder::new()
            .name("relocd-listen".into())
            .spawn({
                let ctx = Arc::new(Ctx {
                    cfg,
                    admission,
                    handler,
                    shutdown,
                    shared: shared.clone(),
                });
                move || accept_loop(listener, ctx)
            })?;
        Ok(RelocationListener {
            local,
            shared,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sessions running now.
    pub fn active_sessions(&self) -> usize {
        self.shared.lock().active
    }

    /// Stops accepting (the socket is closed), then waits up to `grace` for
    /// the connections in admission and the running sessions to end.
    /// Returns whether they all did.
    pub fn stop(mut self, grace: Duration) -> bool {
        self.stop_accepting();
        let deadline = Instant::now() + grace;
        let mut c = self.shared.lock();
        while c.pending + c.active > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            c = self
                .shared
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    fn stop_accepting(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Wake the blocked accept() with a connection of our own.
        let wake = match self.local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.local.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.local.port())
            }
            _ => self.local,
        };
        match TcpStream::connect_timeout(&wake, Duration::from_secs(5)) {
            Ok(_) => {
                let _ = thread.join();
            }
            Err(e) => {
                tracing::warn!(addr = %wake, error = %e, "could not wake the relocation listener; leaving it");
            }
        }
    }
}

impl Drop for RelocationListener {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

fn is_resource_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What every connection's thread needs.
struct Ctx {
    cfg: ListenerConfig,
    admission: Arc<dyn Admission>,
    handler: Arc<dyn SessionHandler>,
    shutdown: ShutdownToken,
    shared: Arc<Shared>,
}

fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    let (cfg, shared) = (&ctx.cfg, &ctx.shared);
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a relocation connection failed");
                if is_resource_shortage(&e) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let Some(slot) = Slot::pending(shared, cfg.max_pending) else {
            tracing::warn!(%peer, limit = cfg.max_pending, "too many connections awaiting admission; closed unread");
            continue;
        };
        let spawned = std::thread::Builder::new()
            .name("relocd-session".into())
            .spawn({
                let ctx = ctx.clone();
                move || admit_and_run(stream, peer, slot, &ctx)
            });
        if let Err(e) = spawned {
            tracing::warn!(%peer, error = %e, "no thread for a relocation connection; closed unread");
        }
    }
    tracing::debug!("relocation listener stopped");
}

fn admit_and_run(stream: TcpStream, peer: SocketAddr, mut slot: Slot, ctx: &Ctx) {
    let (cfg, handler) = (&ctx.cfg, &*ctx.handler);
    let peer_name = match ctx.admission.decide(peer) {
        AdmissionVerdict::Refuse { peer_name, reason } => {
            tracing::warn!(%peer, name = %peer_name, %reason, "relocation connection refused");
            return; // `stream` drops here: closed, unread.
        }
        AdmissionVerdict::Admit { peer_name } => peer_name,
    };
    if ctx.shutdown.is_triggered() {
        tracing::info!(%peer, "daemon stopping; relocation connection closed");
        return;
    }
    if let Err(e) = stream
        .set_read_timeout(cfg.io_timeout)
        .and_then(|()| stream.set_write_timeout(cfg.io_timeout))
        .and_then(|()| stream.set_nodelay(true))
    {
        tracing::warn!(%peer, error = %e, "setting socket options failed; closed");
        return;
    }
    let session = Session {
        id: ctx.shared.next_id.fetch_add(1, Ordering::Relaxed),
        stream,
        peer,
        peer_name,
        io_timeout: cfg.io_timeout,
        shutdown: ctx.shutdown.clone(),
    };
    if !slot.promote(cfg.max_sessions) {
        tracing::warn!(
            session = session.id,
            %peer,
            name = %session.peer_name,
            limit = cfg.max_sessions,
            "relocation refused: concurrency limit reached"
        );
        handler.busy(session, cfg.max_sessions);
        return;
    }
    let id = session.id;
    tracing::info!(session = id, %peer, name = %session.peer_name, "relocation session admitted");
    handler.handle(session);
    tracing::info!(session = id, %peer, "relocation session ended");
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    /// Records the peers it was asked about; admits per a fixed answer.
    struct Fixed {
        admit: bool,
        asked: Mutex<Vec<SocketAddr>>,
    }

    impl Admission for Fixed {
        fn decide(&self, peer: SocketAddr) -> AdmissionVerdict {
            self.asked.lock().unwrap().push(peer);
            let peer_name = PeerName::Confirmed("peer.example.org".into());
            if self.admit {
                AdmissionVerdict::Admit { peer_name }
            } else {
                AdmissionVerdict::Refuse {
                    peer_name,
                    reason: "test says no".into(),
                }
            }
        }
    }

    /// Sends each session's first line to `seen`, holds it until `release`
    /// has a message, and writes BUSY on `busy`.
    struct Recorder {
        seen: Mutex<mpsc::Sender<(String, Option<Duration>)>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl SessionHandler for Recorder {
        fn handle(&self, mut session: Session) {
            let mut buf = [0u8; 5];
            let n = session.stream.read(&mut buf).unwrap_or(0);
            let first = String::from_utf8_lossy(&buf[..n]).into_owned();
            let timeout = session.stream.read_timeout().unwrap();
            self.seen.lock().unwrap().send((first, timeout)).unwrap();
            let _ = self.release.lock().unwrap().recv();
            let _ = session.stream.write_all(b"DONE\n");
        }

        fn busy(&self, mut session: Session, limit: usize) {
            let _ = writeln!(session.stream, "BUSY {limit}");
        }
    }

    type Seen = mpsc::Receiver<(String, Option<Duration>)>;

    fn start(
        admit: bool,
        max_sessions: usize,
    ) -> (RelocationListener, Arc<Fixed>, Seen, mpsc::Sender<()>) {
        let admission = Arc::new(Fixed {
            admit,
            asked: Mutex::new(Vec::new()),
        });
        let (seen_tx, seen_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let handler = Arc::new(Recorder {
            seen: Mutex::new(seen_tx),
            release: Mutex::new(release_rx),
        });
        let listener = RelocationListener::start(
            ListenerConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                max_sessions,
                max_pending: 8,
                io_timeout: Some(Duration::from_secs(7)),
            },
            admission.clone(),
            handler,
            ShutdownToken::new(),
        )
        .unwrap();
        (listener, admission, seen_rx, release_tx)
    }

    #[test]
    fn refused_peer_is_closed_unread() {
        let (listener, admission, seen, _release) = start(false, 4);
        let mut client = TcpStream::connect(listener.local_addr()).unwrap();
        client.write_all(b"HELLO").unwrap();
        let mut buf = Vec::new();
        // EOF, or a reset because the server closed with our bytes unread.
        match client.read_to_end(&mut buf) {
            Ok(_) => assert!(buf.is_empty(), "{buf:?}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert!(seen.try_recv().is_err(), "the handler must not run");
        assert_eq!(
            *admission.asked.lock().unwrap(),
            vec![client.local_addr().unwrap()]
        );
        assert!(listener.stop(Duration::from_secs(10)));
    }

    #[test]
    fn admitted_session_runs_with_timeouts_and_limit_refuses_extra() {
        let (listener, _admission, seen, release) = start(true, 1);
        let mut first = TcpStream::connect(listener.local_addr()).unwrap();
        first.write_all(b"HELLO").unwrap();
        let (line, timeout) = seen.recv().unwrap();
        assert_eq!(line, "HELLO");
        assert_eq!(timeout, Some(Duration::from_secs(7)));
        assert_eq!(listener.active_sessions(), 1);

        // The first session holds the only slot: the second gets "busy".
        let mut second = TcpStream::connect(listener.local_addr()).unwrap();
        let mut reply = String::new();
        second.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "BUSY 1\n");

        release.send(()).unwrap();
        let mut done = String::new();
        first.read_to_string(&mut done).unwrap();
        assert_eq!(done, "DONE\n");
        assert!(listener.stop(Duration::from_secs(10)));
    }

    #[test]
    fn stop_wakes_a_listener_on_all_interfaces() {
        let listener = RelocationListener::start(
            ListenerConfig {
                addr: "0.0.0.0:0".parse().unwrap(),
                max_sessions: 1,
                max_pending: 1,
                io_timeout: None,
            },
            Arc::new(AdmitAll),
            Arc::new(NoSessions),
            ShutdownToken::new(),
        )
        .unwrap();
        let port = listener.local_addr().port();
        assert!(listener.stop(Duration::from_secs(10)));
        let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn stop_closes_the_socket() {
        let (listener, _admission, _seen, _release) = start(true, 1);
        let addr = listener.local_addr();
        assert!(listener.stop(Duration::from_secs(10)));
        let err = TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    struct Table;

    impl Resolver for Table {
        fn reverse(&self, ip: IpAddr) -> Result<Option<String>, String> {
            Ok((ip == IpAddr::from([192, 0, 2, 1])).then(|| "hosta.example.org".to_string()))
        }
        fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            Ok(if name == "hosta.example.org" {
                vec![IpAddr::from([192, 0, 2, 1])]
            } else {
                Vec::new()
            })
        }
    }

    #[test]
    fn pattern_admission_matches_ip_text_and_confirmed_name() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let admission = PatternAdmission::new(Table, {
            let asked = asked.clone();
            move |ip: &str, name: Option<&str>| {
                asked
                    .lock()
                    .unwrap()
                    .push((ip.to_string(), name.map(str::to_string)));
                name.is_some_and(|n| n.starts_with("hosta."))
            }
        });
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:40000".parse().unwrap();
        assert!(admission.decide(mapped).is_admitted());
        let other: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let verdict = admission.decide(other);
        assert!(matches!(
            verdict,
            AdmissionVerdict::Refuse {
                peer_name: PeerName::None { .. },
                ..
            }
        ));
        assert_eq!(
            *asked.lock().unwrap(),
            vec![
                (
                    "192.0.2.1".to_string(),
                    Some("hosta.example.org".to_string())
                ),
                ("192.0.2.9".to_string(), None),
            ]
        );
    }
}
