//! The relocation listener: TCP connections from other relocd (or xend)
//! hosts, each admitted or refused before a byte is read from it.
//!
//! For each accepted connection, in order:
//!
//! 1. The pending table: a connection *awaits admission* until it is handed
//!    to [`SessionHandler::handle`]. At most [`ListenerConfig::max_pending`]
//!    do at once, at most [`PendingLimits::per_address`] from one peer
//!    address (so one host cannot take every slot), and each for at most
//!    [`PendingLimits::handshake_timeout`] (a short deadline of its own,
//!    not the session's io timeout): a reaper thread shuts down whatever is
//!    still pending at its deadline. A connection for which there is no
//!    room goes to the one hook that answers it (`answer_pending_full`),
//!    on the accept thread, which never blocks.
//! 2. [`Admission::decide`] on the peer's address (hosts-allow, with reverse
//!    lookup and forward confirmation). A refused peer is logged at WARN
//!    with its address and name and the connection is closed at once:
//!    nothing was read from it and nothing is written to it (DESIGN.md,
//!    invariant 3). The decision runs on the connection's own thread, so it
//!    never stalls the accept loop; [`PatternAdmission`] bounds its lookups
//!    in time and in number.
//! 3. The peer's first frame (a source's `Hello`) must have wholly arrived
//!    before the handshake deadline; it is waited for without being
//!    consumed (the handler reads it). A peer that connects and says
//!    nothing never reaches the handler and never holds a session slot.
//! 4. The concurrency limit: when [`ListenerConfig::max_sessions`] sessions
//!    run already, the connection goes to [`SessionHandler::busy`], which may
//!    write the protocol's refusal; it is still pending meanwhile, so the
//!    handshake deadline bounds the refusal too.
//! 5. Read and write timeouts ([`ListenerConfig::io_timeout`]) are set on the
//!    socket, and the [`Session`] goes to [`SessionHandler::handle`] on the
//!    connection's thread.
//!
//! A TLS listener ([`RelocationListener::start_tls`]) does the TLS handshake
//! first, within the same handshake deadline: the peer must present a
//! certificate that chains to the CA ([`crate::tls`]). A handshake that
//! fails is logged with its reason and the connection closed; nothing of
//! the session was read. Then hosts-allow decides on the peer's address,
//! the names its verified certificate carries (DNS and IP subject
//! alternative names) and its forward-confirmed reverse name
//! ([`Admission::decide_tls`]); the log says which admitted it, or that
//! none did. Steps 3 to 5 follow, on the decrypted stream.

use super::ShutdownToken;
use crate::peer::{canonical, BoundedNaming, LookupLimits, PeerName, Resolver};
use crate::session::Conn;
use crate::tls::{CertNames, Tls};
use relocd_core::protocol::{FRAME_HEADER_LEN, MAX_CONTROL_FRAME_LEN};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
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

    /// Whether `peer` is admitted on its address alone, without a lookup
    /// (cheap, may run on the accept loop). Such a peer may be told that
    /// the server is busy; any other learns nothing. The default: no.
    fn admits_by_address(&self, peer: SocketAddr) -> bool {
        let _ = peer;
        false
    }

    /// Decides on a TLS peer, whose verified certificate carries `names`,
    /// and says what admitted it (for the log). The default decides on the
    /// address alone, as [`Admission::decide`].
    fn decide_tls(&self, peer: SocketAddr, names: &CertNames) -> (AdmissionVerdict, String) {
        let _ = names;
        let verdict = self.decide(peer);
        let how = match &verdict {
            AdmissionVerdict::Admit { .. } => "by the admission policy".to_owned(),
            AdmissionVerdict::Refuse { .. } => String::new(),
        };
        (verdict, how)
    }
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

    fn admits_by_address(&self, _peer: SocketAddr) -> bool {
        true
    }

    fn decide_tls(&self, peer: SocketAddr, _names: &CertNames) -> (AdmissionVerdict, String) {
        (
            self.decide(peer),
            "(hosts-allow is empty: every host with a certificate from the CA)".to_owned(),
        )
    }
}

/// Refuses every peer with a fixed reason (fail closed, when a policy could
/// not be put in place). Peers are still named, for the log line, within
/// the default [`LookupLimits`].
pub struct RefuseAll {
    naming: BoundedNaming,
    reason: String,
}

impl RefuseAll {
    /// Refuses everyone, naming peers with `resolver` and logging `reason`.
    pub fn new(resolver: impl Resolver + Send + Sync + 'static, reason: impl Into<String>) -> Self {
        RefuseAll {
            naming: BoundedNaming::new(resolver, LookupLimits::default()),
            reason: reason.into(),
        }
    }
}

impl Admission for RefuseAll {
    fn decide(&self, peer: SocketAddr) -> AdmissionVerdict {
        AdmissionVerdict::Refuse {
            peer_name: self.naming.name(canonical(peer.ip())),
            reason: self.reason.clone(),
        }
    }
}

/// hosts-allow: names the peer (reverse lookup, forward confirmation), then
/// asks `matcher(ip_text, confirmed_fqdn)`. The IP text is the canonical one
/// (an IPv4-mapped IPv6 peer is matched as its IPv4 address). With the core's
/// matcher: `move |ip, fqdn| hosts_allow.admit(ip, fqdn).is_admitted()`.
///
/// The lookups are bounded ([`BoundedNaming`]): a peer whose lookup does
/// not end within [`LookupLimits::timeout`] is matched on its address only
/// (so a host admitted by name alone is refused, and may try again), and at
/// most [`LookupLimits::max_in_flight`] lookups run at once, whatever the
/// resolver does.
pub struct PatternAdmission<M> {
    naming: BoundedNaming,
    matcher: M,
}

impl<M> PatternAdmission<M>
where
    M: Fn(&str, Option<&str>) -> bool + Send + Sync,
{
    /// Admission by `matcher`, naming peers with `resolver` within the
    /// default [`LookupLimits`].
    pub fn new(resolver: impl Resolver + Send + Sync + 'static, matcher: M) -> Self {
        PatternAdmission::with_limits(resolver, LookupLimits::default(), matcher)
    }

    /// [`PatternAdmission::new`] with the given lookup limits.
    pub fn with_limits(
        resolver: impl Resolver + Send + Sync + 'static,
        limits: LookupLimits,
        matcher: M,
    ) -> Self {
        PatternAdmission {
            naming: BoundedNaming::new(resolver, limits),
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
        let peer_name = self.naming.name(ip);
        if (self.matcher)(&ip.to_string(), peer_name.usable()) {
            AdmissionVerdict::Admit { peer_name }
        } else {
            AdmissionVerdict::Refuse {
                peer_name,
                reason: "matches no xend-relocation-hosts-allow pattern".into(),
            }
        }
    }

    fn admits_by_address(&self, peer: SocketAddr) -> bool {
        (self.matcher)(&canonical(peer.ip()).to_string(), None)
    }

    /// Tries, in order: the peer's address; each DNS name of its verified
    /// certificate (as the host name, with the address); each IP address
    /// of its certificate; its forward-confirmed reverse name (looked up
    /// only when nothing before admitted it).
    fn decide_tls(&self, peer: SocketAddr, names: &CertNames) -> (AdmissionVerdict, String) {
        let ip = canonical(peer.ip());
        let ip_text = ip.to_string();
        let admit = |how: String| {
            (
                AdmissionVerdict::Admit {
                    peer_name: PeerName::None {
                        reason: format!("not looked up: admitted {how}"),
                    },
                },
                how,
            )
        };
        if (self.matcher)(&ip_text, None) {
            return admit(format!("by its address {ip_text}"));
        }
        for dns in &names.dns {
            if (self.matcher)(&ip_text, Some(dns)) {
                return admit(format!("by its certificate's name {dns}"));
            }
        }
        for cert_ip in &names.ip {
            let text = canonical(*cert_ip).to_string();
            if (self.matcher)(&text, None) {
                return admit(format!("by its certificate's address {text}"));
            }
        }
        let peer_name = self.naming.name(ip);
        if let Some(name) = peer_name.usable() {
            if (self.matcher)(&ip_text, Some(name)) {
                let how = format!("by its forward-confirmed reverse name {name}");
                return (AdmissionVerdict::Admit { peer_name }, how);
            }
        }
        let reason = format!(
            "matches no xend-relocation-hosts-allow pattern (tried its address {ip_text}, \
             its certificate's names: {names}, its reverse name: {peer_name})"
        );
        (
            AdmissionVerdict::Refuse { peer_name, reason },
            String::new(),
        )
    }
}

/// An admitted relocation connection, handed to a [`SessionHandler`].
#[derive(Debug)]
pub struct Session {
    /// The daemon-local session number (for logs).
    pub id: u64,
    /// The connection (TCP, or TLS with the handshake done), with read and
    /// write timeouts already set. Nothing of the session has been read
    /// from it.
    pub stream: Conn,
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
    /// Connections that may await admission at once, from all peers (see
    /// [`PendingLimits`] for the limits per peer and in time).
    pub max_pending: usize,
    /// Timeout on every read and write of an admitted session's socket.
    pub io_timeout: Option<Duration>,
}

/// [`PendingLimits::handshake_timeout`] unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// [`PendingLimits::per_address`] unless told otherwise.
pub const DEFAULT_PENDING_PER_ADDRESS: usize = 4;

/// How long, and how many per peer, connections may await admission.
///
/// A connection awaits admission from the moment it is accepted until the
/// listener hands it to [`SessionHandler::handle`]: while hosts-allow is
/// decided, while the peer's first frame (its `Hello`) arrives, and while a
/// [`SessionHandler::busy`] refusal is answered. These limits are what keep
/// a peer that connects and says nothing from holding the slots other
/// hosts need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLimits {
    /// From accept to the peer's first complete frame, and for a busy
    /// refusal: past it the connection is shut down. Separate from (and
    /// much shorter than) the io timeout of an admitted session: a relocd
    /// source sends its `Hello` as soon as it is connected.
    pub handshake_timeout: Duration,
    /// Connections from one peer address that may await admission at once
    /// (IPv6: one /64, what a single host usually holds), so that one host
    /// cannot take every pending slot.
    pub per_address: usize,
}

impl Default for PendingLimits {
    fn default() -> Self {
        PendingLimits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            per_address: DEFAULT_PENDING_PER_ADDRESS,
        }
    }
}

/// Why a connection found no room in the pending table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingFull {
    /// Its address already has [`PendingLimits::per_address`] connections
    /// awaiting admission.
    Address {
        /// The limit.
        limit: usize,
    },
    /// [`ListenerConfig::max_pending`] connections await admission.
    Table {
        /// The limit.
        limit: usize,
    },
}

impl std::fmt::Display for PendingFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PendingFull::Address { limit } => {
                write!(f, "{limit} from this address already")
            }
            PendingFull::Table { limit } => write!(f, "{limit} from all peers already"),
        }
    }
}

/// The key a peer's pending connections are counted under: its address
/// (IPv4, or IPv4-mapped IPv6), or its /64 (IPv6).
fn address_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        v4 => v4,
    }
}

/// A connection awaiting admission.
struct PendingEntry {
    key: IpAddr,
    deadline: Instant,
    /// A handle on the connection, to shut it down at the deadline.
    stream: TcpStream,
    expired: bool,
}

#[derive(Default)]
struct Counts {
    /// Connections awaiting admission, by a number of their own.
    pending: HashMap<u64, PendingEntry>,
    /// How many of them each address key has.
    per_address: HashMap<IpAddr, usize>,
    active: usize,
}

struct Shared {
    counts: Mutex<Counts>,
    /// Notified when a connection ends or is promoted (for `stop`).
    changed: Condvar,
    /// Notified when a connection starts to await admission, and at stop
    /// (for the reaper).
    reaper: Condvar,
    stopping: AtomicBool,
    next_id: AtomicU64,
    next_pending: AtomicU64,
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
    /// Its number in the pending table, until it is promoted.
    pending: Option<u64>,
}

impl Slot {
    /// Enters `stream` in the pending table, when there is room for it.
    fn pending(
        shared: &Arc<Shared>,
        stream: &TcpStream,
        peer: SocketAddr,
        max: usize,
        limits: &PendingLimits,
    ) -> Result<Slot, PendingFull> {
        let key = address_key(peer.ip());
        let mut c = shared.lock();
        if c.per_address.get(&key).copied().unwrap_or(0) >= limits.per_address {
            return Err(PendingFull::Address {
                limit: limits.per_address,
            });
        }
        if c.pending.len() >= max {
            return Err(PendingFull::Table { limit: max });
        }
        // Without a handle the deadline could not be enforced: no room.
        let handle = stream
            .try_clone()
            .map_err(|_| PendingFull::Table { limit: max })?;
        let id = shared.next_pending.fetch_add(1, Ordering::Relaxed);
        c.pending.insert(
            id,
            PendingEntry {
                key,
                deadline: Instant::now() + limits.handshake_timeout,
                stream: handle,
                expired: false,
            },
        );
        *c.per_address.entry(key).or_default() += 1;
        shared.reaper.notify_all();
        Ok(Slot {
            shared: shared.clone(),
            pending: Some(id),
        })
    }

    /// Moves the connection from the pending table to the running sessions,
    /// when fewer than `max` run.
    fn promote(&mut self, max: usize) -> bool {
        let mut c = self.shared.lock();
        if c.active >= max {
            return false;
        }
        if let Some(id) = self.pending.take() {
            Counts::forget(&mut c, id);
        }
        c.active += 1;
        self.shared.changed.notify_all();
        true
    }

    /// The connection's deadline passed (the reaper shut it down).
    fn expired(&self) -> bool {
        let c = self.shared.lock();
        self.pending
            .and_then(|id| c.pending.get(&id))
            .is_some_and(|e| e.expired)
    }
}

impl Counts {
    fn forget(c: &mut Counts, id: u64) {
        if let Some(e) = c.pending.remove(&id) {
            if let Some(n) = c.per_address.get_mut(&e.key) {
                *n -= 1;
                if *n == 0 {
                    c.per_address.remove(&e.key);
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.shared.lock();
        match self.pending {
            Some(id) => Counts::forget(&mut c, id),
            None => c.active -= 1,
        }
        self.shared.changed.notify_all();
    }
}

/// Shuts down each connection still awaiting admission at its deadline
/// (whatever its thread is doing: a name lookup, waiting for the `Hello`,
/// a busy refusal), and every one of them when the listener stops.
fn reaper(shared: Arc<Shared>) {
    let mut c = shared.lock();
    loop {
        let stopping = shared.stopping.load(Ordering::SeqCst);
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for e in c.pending.values_mut().filter(|e| !e.expired) {
            if stopping || e.deadline <= now {
                // The connection's thread says why, when it sees the end.
                let _ = e.stream.shutdown(Shutdown::Both);
                e.expired = true;
            } else {
                next = Some(next.map_or(e.deadline, |n| n.min(e.deadline)));
            }
        }
        if stopping {
            return;
        }
        c = match next {
            Some(at) => {
                shared
                    .reaper
                    .wait_timeout(c, at.saturating_duration_since(now))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.reaper.wait(c).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

/// A running relocation listener.
pub struct RelocationListener {
    local: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RelocationListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelocationListener")
            .field("local", &self.local)
            .finish()
    }
}

impl RelocationListener {
    /// Binds `cfg.addr` and starts accepting on a thread of its own, with
    /// the default [`PendingLimits`].
    pub fn start(
        cfg: ListenerConfig,
        admission: Arc<dyn Admission>,
        handler: Arc<dyn SessionHandler>,
        shutdown: ShutdownToken,
    ) -> io::Result<RelocationListener> {
        RelocationListener::start_with(cfg, PendingLimits::default(), admission, handler, shutdown)
    }

    /// [`RelocationListener::start`] with the given limits on connections
    /// awaiting admission.
    pub fn start_with(
        cfg: ListenerConfig,
        limits: PendingLimits,
        admission: Arc<dyn Admission>,
        handler: Arc<dyn SessionHandler>,
        shutdown: ShutdownToken,
    ) -> io::Result<RelocationListener> {
        RelocationListener::start_inner(cfg, limits, None, admission, handler, shutdown)
    }

    /// [`RelocationListener::start_with`] for TLS: every connection is
    /// admitted only after a TLS handshake in which the peer proved its
    /// certificate (module doc).
    pub fn start_tls(
        cfg: ListenerConfig,
        limits: PendingLimits,
        tls: Arc<Tls>,
        admission: Arc<dyn Admission>,
        handler: Arc<dyn SessionHandler>,
        shutdown: ShutdownToken,
    ) -> io::Result<RelocationListener> {
        RelocationListener::start_inner(cfg, limits, Some(tls), admission, handler, shutdown)
    }

    fn start_inner(
        cfg: ListenerConfig,
        limits: PendingLimits,
        tls: Option<Arc<Tls>>,
        admission: Arc<dyn Admission>,
        handler: Arc<dyn SessionHandler>,
        shutdown: ShutdownToken,
    ) -> io::Result<RelocationListener> {
        let listener = TcpListener::bind(cfg.addr)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
            reaper: Condvar::new(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            next_pending: AtomicU64::new(1),
        });
        let reaper = std::thread::Builder::new()
            .name("relocd-pending".into())
            .spawn({
                let shared = shared.clone();
                move || reaper(shared)
            })?;
        let ctx = Arc::new(Ctx {
            cfg,
            limits,
            tls,
            admission,
            handler,
            shutdown,
            shared: shared.clone(),
            log: LogBudget::default(),
        });
        let thread = std::thread::Builder::new()
            .name("relocd-listen".into())
            .spawn(move || accept_loop(listener, ctx));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let counts = shared.lock();
                shared.stopping.store(true, Ordering::SeqCst);
                shared.reaper.notify_all();
                drop(counts);
                let _ = reaper.join();
                return Err(e);
            }
        };
        Ok(RelocationListener {
            local,
            shared,
            thread: Some(thread),
            reaper: Some(reaper),
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

    /// Connections awaiting admission now.
    pub fn pending_connections(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Stops accepting (the socket is closed; connections still awaiting
    /// admission are shut down), then waits up to `grace` for them and the
    /// running sessions to end. Returns whether they all did.
    pub fn stop(mut self, grace: Duration) -> bool {
        self.stop_accepting();
        let deadline = Instant::now() + grace;
        let mut c = self.shared.lock();
        while c.pending.len() + c.active > 0 {
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
        {
            // Under the lock, so the reaper cannot miss the wake-up between
            // its look at `stopping` and its wait.
            let _counts = self.shared.lock();
            self.shared.stopping.store(true, Ordering::SeqCst);
            self.shared.reaper.notify_all();
        }
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
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

/// At most [`LogBudget::PER_SECOND`] lines a second about refused
/// connections; the others are counted and the count goes with the next
/// line. A flood must not become a flood of the log.
#[derive(Default)]
struct LogBudget {
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl LogBudget {
    const PER_SECOND: u32 = 10;

    /// `Some(suppressed since the last line)` when a line may be written.
    fn take(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (start, lines, suppressed) = &mut *s;
        let now = Instant::now();
        if start.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *start = Some(now);
            *lines = 0;
        }
        if *lines < Self::PER_SECOND {
            *lines += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// A connection that found every waiting place taken. A peer that
/// hosts-allow admits by its address alone is told, with the protocol's
/// typed refusal, that this host is busy (its operator then reads "HOST is
/// busy: too many connections awaiting admission", not a hosts-allow
/// refusal); any other peer is closed unread and learns nothing. Either way
/// a log line names the peer (at most a few a second). On a TLS listener
/// (`plain` false) no peer is told: it has proved nothing yet, and the
/// refusal would have to travel in the clear.
fn answer_pending_full(
    stream: TcpStream,
    peer: SocketAddr,
    full: PendingFull,
    log: &LogBudget,
    admission: &dyn Admission,
    plain: bool,
) {
    let told = plain
        && admission.admits_by_address(peer)
        && crate::session::refuse_unread(
            stream,
            crate::session::Refusal::new(
                relocd_core::protocol::RefuseReason::Busy,
                "too many connections awaiting admission",
            ),
            BUSY_WRITE_TIMEOUT,
        )
        .is_ok();
    if let Some(suppressed) = log.take() {
        tracing::warn!(%peer, limit = %full, suppressed, told_busy = told,
            "relocation connection closed: too many connections awaiting admission");
    }
}

/// How long the accept loop waits to hand a busy refusal to the socket (a
/// fresh connection's buffer takes the few bytes at once).
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// What every connection's thread needs.
struct Ctx {
    cfg: ListenerConfig,
    limits: PendingLimits,
    /// Set for a TLS listener.
    tls: Option<Arc<Tls>>,
    admission: Arc<dyn Admission>,
    handler: Arc<dyn SessionHandler>,
    shutdown: ShutdownToken,
    shared: Arc<Shared>,
    log: LogBudget,
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
        let slot = match Slot::pending(shared, &stream, peer, cfg.max_pending, &ctx.limits) {
            Ok(slot) => slot,
            Err(full) => {
                let plain = ctx.tls.is_none();
                answer_pending_full(stream, peer, full, &ctx.log, &*ctx.admission, plain);
                continue;
            }
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

/// How waiting for the peer's first frame ended.
#[derive(Debug, PartialEq, Eq)]
enum FirstFrame {
    /// It is all there (or its header is one the handler must refuse).
    Ready,
    /// The peer closed the connection first.
    Closed,
    /// The deadline passed (or the reaper shut the connection down).
    TimedOut,
    /// A TLS handshake record (a TLS client on a plain port).
    Tls,
}

/// Waits, until `deadline`, for the peer's first frame (its `Hello`: a
/// frame header and a body of at most `MAX_CONTROL_FRAME_LEN` bytes) to be
/// wholly received, without consuming a byte of it: the handler reads it.
/// A header announcing more than that is `Ready` at once, for the handler
/// to refuse in its own words.
fn await_first_frame(stream: &Conn, deadline: Instant) -> io::Result<FirstFrame> {
    /// How long to wait for more when part of the frame is there: a peek
    /// does not block while any byte is unread.
    const TRICKLE: Duration = Duration::from_millis(20);
    let mut buf = [0u8; FRAME_HEADER_LEN + MAX_CONTROL_FRAME_LEN];
    let mut want = FRAME_HEADER_LEN;
    let mut header_read = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(FirstFrame::TimedOut);
        }
        stream.tcp().set_read_timeout(Some(deadline - now))?;
        let n = match stream.peek(&mut buf[..want]) {
            Ok(0) => return Ok(FirstFrame::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(FirstFrame::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !header_read && n == FRAME_HEADER_LEN {
            header_read = true;
            let mut header = [0u8; FRAME_HEADER_LEN];
            header.copy_from_slice(&buf[..FRAME_HEADER_LEN]);
            if !stream.is_tls() && matches!(header, [0x16, 0x03, 0..=0x04, _]) {
                return Ok(FirstFrame::Tls);
            }
            let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
            if len > MAX_CONTROL_FRAME_LEN {
                return Ok(FirstFrame::Ready);
            }
            want = FRAME_HEADER_LEN + len;
            continue; // the body may be there already
        }
        if n >= want {
            return Ok(FirstFrame::Ready);
        }
        std::thread::sleep(TRICKLE.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The TLS handshake and hosts-allow of a TLS listener's connection: the
/// stream and the peer's name when admitted; `None` when refused (logged).
fn tls_admission(
    tls: &Tls,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    ctx: &Ctx,
) -> Option<(Conn, PeerName)> {
    let started = Instant::now();
    let stream = match tls.accept(tcp, deadline) {
        Ok(s) => s,
        Err(e) => {
            if let Some(suppressed) = ctx.log.take() {
                tracing::warn!(%peer, reason = %e, suppressed,
                    "relocation connection refused: TLS handshake failed");
            }
            return None; // closed; nothing of the session was read
        }
    };
    let names = crate::tls::peer_names(&stream);
    let handshake_ms = started.elapsed().as_secs_f64() * 1e3;
    match ctx.admission.decide_tls(peer, &names) {
        (AdmissionVerdict::Refuse { peer_name, reason }, _) => {
            tracing::warn!(%peer, certificate = %names, name = %peer_name, %reason,
                "relocation connection refused");
            None
        }
        (AdmissionVerdict::Admit { peer_name }, how) => {
            tracing::info!(%peer, certificate = %names, handshake_ms,
                "TLS peer admitted {how}");
            Some((Conn::Tls(stream), peer_name))
        }
    }
}

fn admit_and_run(tcp: TcpStream, peer: SocketAddr, mut slot: Slot, ctx: &Ctx) {
    let (cfg, handler) = (&ctx.cfg, &*ctx.handler);
    let deadline = Instant::now() + ctx.limits.handshake_timeout;
    let (stream, peer_name) = match &ctx.tls {
        Some(tls) => match tls_admission(tls, tcp, peer, deadline, ctx) {
            Some(admitted) => admitted,
            None => return,
        },
        None => match ctx.admission.decide(peer) {
            AdmissionVerdict::Refuse { peer_name, reason } => {
                tracing::warn!(%peer, name = %peer_name, %reason, "relocation connection refused");
                return; // `tcp` drops here: closed, unread.
            }
            AdmissionVerdict::Admit { peer_name } => (Conn::Tcp(tcp), peer_name),
        },
    };
    if ctx.shutdown.is_triggered() {
        tracing::info!(%peer, "daemon stopping; relocation connection closed");
        return;
    }
    let timeout_s = ctx.limits.handshake_timeout.as_secs_f64();
    if slot.expired() {
        tracing::info!(%peer, name = %peer_name, timeout_s,
            "relocation connection closed: admission took longer than the handshake timeout");
        return;
    }
    let first = await_first_frame(&stream, deadline);
    if slot.expired() || matches!(first, Ok(FirstFrame::TimedOut)) {
        tracing::info!(%peer, name = %peer_name, timeout_s,
            "relocation connection closed: no first message within the handshake timeout");
        return;
    }
    match first {
        Ok(FirstFrame::Ready) => {}
        Ok(FirstFrame::Tls) => {
            tracing::warn!(%peer, name = %peer_name,
                "relocation connection refused: the peer speaks TLS, not plain relocd (a \
                 TLS client on the plain relocation port: TLS migrations go to \
                 xend-relocation-ssl-port)");
            return;
        }
        Ok(FirstFrame::Closed | FirstFrame::TimedOut) => {
            tracing::debug!(%peer, "relocation connection closed by the peer before its first message");
            return;
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "relocation connection failed before its first message");
            return;
        }
    }
    if let Err(e) = stream
        .tcp()
        .set_read_timeout(cfg.io_timeout)
        .and_then(|()| stream.tcp().set_write_timeout(cfg.io_timeout))
        .and_then(|()| stream.tcp().set_nodelay(true))
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
        // Still awaiting admission: the reaper shuts the connection down at
        // the handshake deadline, however long the refusal takes.
        handler.busy(session, cfg.max_sessions);
        if slot.expired() {
            tracing::info!(%peer, timeout_s,
                "relocation refusal cut short: the peer took longer than the handshake timeout");
        }
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
    /// has a message, and writes BUSY on `busy` (after reading the first
    /// line, as a protocol handler would).
    struct Recorder {
        seen: Mutex<mpsc::Sender<(String, Option<Duration>)>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl SessionHandler for Recorder {
        fn handle(&self, mut session: Session) {
            let mut buf = [0u8; 5];
            let n = session.stream.read(&mut buf).unwrap_or(0);
            let first = String::from_utf8_lossy(&buf[..n]).into_owned();
            let timeout = session.stream.tcp().read_timeout().unwrap();
            self.seen.lock().unwrap().send((first, timeout)).unwrap();
            let _ = self.release.lock().unwrap().recv();
            let _ = session.stream.write_all(b"DONE\n");
        }

        fn busy(&self, mut session: Session, limit: usize) {
            let mut hello = [0u8; 5];
            let _ = session.stream.read_exact(&mut hello);
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

        // The first session holds the only slot: the second gets "busy"
        // (once it has said something).
        let mut second = TcpStream::connect(listener.local_addr()).unwrap();
        second.write_all(b"HELLO").unwrap();
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

    #[test]
    fn pending_connections_are_counted_per_address_and_per_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        // One host's /64 is one key, whatever address it picks in it.
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
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
