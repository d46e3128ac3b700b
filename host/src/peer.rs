//! Naming a peer the way the relocation server does before it reads a byte:
//! a reverse lookup of its address, then forward confirmation (the name must
//! resolve back to the same address). A name that does not confirm is not
//! used for hosts-allow: otherwise whoever controls the reverse zone of an
//! address could claim any name (xend's `socket.getfqdn` trusted it).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

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
