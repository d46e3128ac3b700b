//! Naming a peer the way the relocation server does before it reads a byte:
//! a reverse lookup of its address, then forward confirmation (the name must
//! resolve back to the same address). A name that does not confirm is not
//! used for hosts-allow: otherwise whoever controls the reverse zone of an
//! address could claim any name (xend's `socket.getfqdn` trusted it).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the lookups found for a peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerName {
    /// The reverse name resolves back to the address: usable.
    Confirmed(String),
    /// The reverse lookup gave a name that does not resolve back to the
    /// address (or cannot be resolved): not used.
    Unconfirmed {
        /// The name the reverse lookup claimed.
        name: String,
        /// Why it was not confirmed.
        reason: String,
    },
    /// No reverse name for the address.
    None {
        /// Why (the resolver's message).
        reason: String,
    },
}

impl PeerName {
    /// The name to match hosts-allow against, when there is a usable one.
    pub fn usable(&self) -> Option<&str> {
        match self {
            PeerName::Confirmed(name) => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerName::Confirmed(name) => write!(f, "{name} (reverse lookup, forward-confirmed)"),
            PeerName::Unconfirmed { name, reason } => {
                write!(f, "{name} NOT used: {reason}")
            }
            PeerName::None { reason } => write!(f, "no name: {reason}"),
        }
    }
}

/// The two lookups, behind a trait so tests can supply their own answers.
pub trait Resolver {
    /// Reverse lookup: the name registered for `ip`, if any.
    fn reverse(&self, ip: IpAddr) -> Result<Option<String>, String>;
    /// Forward lookup: every address `name` resolves to.
    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (`getnameinfo`/`getaddrinfo`, so /etc/hosts and DNS
/// as nsswitch.conf says).
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn reverse(&self, ip: IpAddr) -> Result<Option<String>, String> {
        match dns_lookup::getnameinfo(&SocketAddr::new(ip, 0), libc::NI_NAMEREQD) {
            Ok((host, _service)) => Ok(Some(host)),
            Err(e) => match e.kind() {
                dns_lookup::LookupErrorKind::NoName => Ok(None),
                _ => Err(format!("reverse lookup of {ip} failed: {e:?}")),
            },
        }
    }

    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        dns_lookup::lookup_host(name)
            .map(|addrs| addrs.collect())
            .map_err(|e| format!("forward lookup of {name} failed: {e}"))
    }
}

/// Names `ip`: reverse lookup, then forward confirmation.
pub fn name_peer(resolver: &dyn Resolver, ip: IpAddr) -> PeerName {
    let name = match resolver.reverse(ip) {
        Ok(Some(name)) => name,
        Ok(None) => {
            return PeerName::None {
                reason: format!("{ip} has no reverse name"),
            }
        }
        Err(reason) => return PeerName::None { reason },
    };
    match resolver.forward(&name) {
        Ok(addrs) if addrs.iter().any(|a| same_address(*a, ip)) => PeerName::Confirmed(name),
        Ok(addrs) => PeerName::Unconfirmed {
            reason: format!(
                "{name} resolves to {} but not to {ip}",
                if addrs.is_empty() {
                    "nothing".to_string()
                } else {
                    addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            name,
        },
        Err(reason) => PeerName::Unconfirmed { name, reason },
    }
}

/// [`LookupLimits::timeout`] unless told otherwise.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// [`LookupLimits::max_in_flight`] unless told otherwise.
pub const DEFAULT_LOOKUPS_IN_FLIGHT: usize = 8;

/// How long, and how many at once, the listener's name lookups may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupLimits {
    /// For one peer: waiting for a free lookup, the reverse lookup and the
    /// forward confirmation together. Past it the peer has no name (it is
    /// matched on its address only).
    pub timeout: Duration,
    /// Lookups running at once. A lookup that hangs keeps its place until
    /// the resolver gives up (a system resolver cannot be interrupted), so
    /// this bounds the threads a dead or hostile DNS server can hold.
    pub max_in_flight: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            timeout: DEFAULT_LOOKUP_TIMEOUT,
            max_in_flight: DEFAULT_LOOKUPS_IN_FLIGHT,
        }
    }
}

/// [`name_peer`] off the caller's thread, bounded in time and in number
/// (see [`LookupLimits`]): a slow resolver delays only the connection it is
/// asked about, by [`LookupLimits::timeout`] at most. (The reverse zone of
/// an address belongs to whoever holds the address, so a peer can make its
/// own lookups hang.)
pub struct BoundedNaming {
    resolver: Arc<dyn Resolver + Send + Sync>,
    limits: LookupLimits,
    /// Lookups running now.
    in_flight: Arc<(Mutex<usize>, Condvar)>,
}

impl fmt::Debug for BoundedNaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedNaming")
            .field("limits", &self.limits)
            .finish()
    }
}

/// A lookup's place, given back when its thread ends (even by a panic in
/// the resolver).
struct InFlight(Arc<(Mutex<usize>, Condvar)>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let (count, freed) = &*self.0;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        freed.notify_one();
    }
}

impl BoundedNaming {
    /// Names peers with `resolver` within `limits`.
    pub fn new(resolver: impl Resolver + Send + Sync + 'static, limits: LookupLimits) -> Self {
        BoundedNaming {
            resolver: Arc::new(resolver),
            limits,
            in_flight: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// The limits.
    pub fn limits(&self) -> LookupLimits {
        self.limits
    }

    /// Names `ip` (reverse lookup, forward confirmation) on a thread of its
    /// own and waits for it until the timeout; then, or when no lookup place
    /// freed up in time, the peer has no name. Logged.
    pub fn name(&self, ip: IpAddr) -> PeerName {
        let deadline = Instant::now() + self.limits.timeout;
        let timeout_s = self.limits.timeout.as_secs_f64();
        let Some(place) = self.take_place(deadline) else {
            tracing::warn!(peer = %ip, limit = self.limits.max_in_flight, timeout_s,
                "no name lookup for the peer: the others in flight did not end in time; \
                 hosts-allow is matched on its address only");
            return PeerName::None {
                reason: format!(
                    "not looked up: {} lookups were in flight for {timeout_s} s",
                    self.limits.max_in_flight
                ),
            };
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let resolver = self.resolver.clone();
        let spawned = std::thread::Builder::new()
            .name("relocd-lookup".into())
            .spawn(move || {
                let _place = place;
                let _ = tx.send(name_peer(resolver.as_ref(), ip));
            });
        if let Err(e) = spawned {
            return PeerName::None {
                reason: format!("not looked up: no thread for the lookup: {e}"),
            };
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(name) => name,
            Err(_) => {
                tracing::warn!(peer = %ip, timeout_s,
                    "the name lookup of the peer took too long; \
                     hosts-allow is matched on its address only");
                PeerName::None {
                    reason: format!("the name lookup took longer than {timeout_s} s"),
                }
            }
        }
    }

    /// A lookup place, waiting for one until `deadline`.
    fn take_place(&self, deadline: Instant) -> Option<InFlight> {
        let (count, freed) = &*self.in_flight;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= self.limits.max_in_flight {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            n = freed
                .wait_timeout(n, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n += 1;
        Some(InFlight(self.in_flight.clone()))
    }
}

/// Address equality that treats an IPv4-mapped IPv6 address (what a dual
/// stack listener reports for an IPv4 peer) as the IPv4 address.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

/// The IPv4 form of an IPv4-mapped IPv6 address; other addresses unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Table {
        reverse: HashMap<IpAddr, Result<Option<String>, String>>,
        forward: HashMap<String, Result<Vec<IpAddr>, String>>,
    }

    impl Resolver for Table {
        fn reverse(&self, ip: IpAddr) -> Result<Option<String>, String> {
            self.reverse.get(&ip).cloned().unwrap_or(Ok(None))
        }
        fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            self.forward.get(name).cloned().unwrap_or(Ok(Vec::new()))
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table() -> Table {
        let mut reverse = HashMap::new();
        let mut forward = HashMap::new();
        reverse.insert(ip("192.0.2.1"), Ok(Some("hosta.example.org".into())));
        forward.insert(
            "hosta.example.org".into(),
            Ok(vec![ip("2001:db8::1"), ip("192.0.2.1")]),
        );
        // A reverse zone that lies: claims a name that points elsewhere.
        reverse.insert(ip("192.0.2.66"), Ok(Some("trusted.example.org".into())));
        forward.insert("trusted.example.org".into(), Ok(vec![ip("192.0.2.10")]));
        reverse.insert(ip("192.0.2.7"), Ok(Some("gone.example.org".into())));
        forward.insert("gone.example.org".into(), Err("NXDOMAIN".into()));
        reverse.insert(ip("192.0.2.8"), Err("SERVFAIL".into()));
        Table { reverse, forward }
    }

    #[test]
    fn confirmed_name_is_usable() {
        let name = name_peer(&table(), ip("192.0.2.1"));
        assert_eq!(name, PeerName::Confirmed("hosta.example.org".into()));
        assert_eq!(name.usable(), Some("hosta.example.org"));
    }

    #[test]
    fn mapped_ipv6_peer_confirms_against_ipv4() {
        let name = name_peer(&table(), ip("192.0.2.1"));
        assert!(same_address(ip("::ffff:192.0.2.1"), ip("192.0.2.1")));
        assert_eq!(name.usable(), Some("hosta.example.org"));
    }

    #[test]
    fn lying_reverse_zone_is_not_used() {
        let name = name_peer(&table(), ip("192.0.2.66"));
        assert_eq!(name.usable(), None);
        let text = name.to_string();
        assert!(text.contains("trusted.example.org NOT used"), "{text}");
        assert!(text.contains("192.0.2.10"), "{text}");
    }

    #[test]
    fn unresolvable_name_and_no_name() {
        let t = table();
        assert!(matches!(
            name_peer(&t, ip("192.0.2.7")),
            PeerName::Unconfirmed { ref reason, .. } if reason == "NXDOMAIN"
        ));
        assert!(matches!(
            name_peer(&t, ip("192.0.2.9")),
            PeerName::None { .. }
        ));
        assert!(matches!(
            name_peer(&t, ip("192.0.2.8")),
            PeerName::None { ref reason } if reason == "SERVFAIL"
        ));
    }

    #[test]
    fn system_resolver_names_loopback() {
        // /etc/hosts maps 127.0.0.1 to localhost on every Debian machine.
        let name = name_peer(&SystemResolver, ip("127.0.0.1"));
        assert_eq!(name.usable(), Some("localhost"), "{name}");
    }
}
