//! The relocation link over TLS, with certificates made here: two daemons
//! in this process (the migration engine on the sim backend), a live
//! migration checked byte for byte, and every refusal the TLS listener or
//! the client must make, each before the destination reads a relocation
//! message (its engine never gets the connection), with the guest running
//! on at its source, the reason in the log and a message that says what
//! to fix. SIGHUP's re-read is checked with a migration running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use relocd::api::{ErrorKind, MigrateRequest, Outcome, Request};
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::{Admission, PatternAdmission};
use relocd_tests::daemons::{
    check_moved, create, eventually, logs, migration, node, refused, running_at, scratch, NoNames,
    Node, NodeSpec, Scratch,
};
use relocd_tests::tls_certs::{write_files, Ca, Files, HostCert};

const MIB: u64 = 1 << 20;

/// `relocd migrate --live [--ssl] NAME` to `to`.
fn migrate(name: &str, to: SocketAddr, ssl: bool) -> Request {
    Request::Migrate(MigrateRequest {
        live: true,
        ssl,
        ..migration(name, to)
    })
}

/// hosts-allow `^hosta\.example\.org$` (not 127.0.0.1's address).
fn hosta_only() -> Arc<dyn Admission> {
    Arc::new(PatternAdmission::new(
        NoNames,
        |ip: &str, name: Option<&str>| ip == "192.0.2.77" || name == Some("hosta.example.org"),
    ))
}

/// A host certificate for loopback from `ca`, with `dns` as its name.
fn host_cert(ca: &Ca, dns: &str) -> HostCert {
    ca.issue(&[dns, "127.0.0.1"])
}

struct World {
    dir: Scratch,
    ca: Ca,
    other_ca: Ca,
}

fn world(name: &str) -> World {
    World {
        dir: scratch(name),
        ca: Ca::new("relocd test CA"),
        other_ca: Ca::new("some other CA"),
    }
}

impl World {
    fn files(&self, tag: &str, host: &HostCert, trusted: &[&Ca]) -> Files {
        write_files(&self.dir, tag, host, trusted)
    }

    /// The destination: both listeners, hosts-allow admitting hosta by
    /// its certificate's name only.
    fn dest(&self, host: &HostCert) -> Node {
        let files = self.files("dest", host, &[&self.ca]);
        node(
            &self.dir,
            NodeSpec {
                files: Some(&files),
                plain: true,
                tls_listener: true,
                admission: hosta_only(),
                ..NodeSpec::new("dest")
            },
        )
    }

    /// A source with `host`'s certificate, trusting `trusted`.
    fn source(&self, tag: &str, host: &HostCert, trusted: &[&Ca]) -> Node {
        let files = self.files(tag, host, trusted);
        node(
            &self.dir,
            NodeSpec {
                files: Some(&files),
                ..NodeSpec::new(tag)
            },
        )
    }
}

#[test]
fn live_migration_over_tls_is_byte_exact_and_admitted_by_certificate_name() {
    let w = world("moves");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    let a = w.source("a", &host_cert(&w.ca, "hosta.example.org"), &[&w.ca]);
    let spec = create(&a, "web1", 16 * MIB);
    std::thread::sleep(Duration::from_millis(100));
    let out = a.call(&migrate("web1", b.tls_addr(), true)).unwrap();
    let Outcome::Migrated(s) = out else {
        panic!("{out:?}")
    };
    assert!(s.rounds >= 2, "{s:?}");
    assert!(s.pages_sent >= 16 * MIB / 4096);
    check_moved(&spec, &a, &b);
    assert_eq!(b.received.load(Ordering::SeqCst), 1);
    eventually("the admission says by what", || {
        logs().contains("TLS peer admitted by its certificate's name hosta.example.org")
    });
    for n in [&a, &b] {
        let open = relocd::journal::unresolved(&n.daemon.journal().entries().unwrap());
        assert!(open.is_empty(), "{open:?}");
    }
}

/// Where a [`Refusal`] goes.
enum Dest {
    /// [`World::dest`]'s TLS port, with this certificate.
    Tls(fn(&World) -> HostCert),
    /// The plain port of a destination without TLS that admits everyone.
    PlainOpen,
}

/// A migration that must be refused before the destination reads a
/// relocation message: the source's certificate (it trusts the test CA),
/// `--ssl` or not, what the refusal says and what the destination logs.
struct Refusal {
    dir: &'static str,
    dest: Dest,
    source: fn(&World) -> HostCert,
    ssl: bool,
    says: &'static [&'static str],
    logged: &'static [&'static str],
}

/// hosta to hostb's TLS port, with `--ssl`.
const REFUSAL: Refusal = Refusal {
    dir: "",
    dest: Dest::Tls(|w| host_cert(&w.ca, "hostb.example.org")),
    source: |w| host_cert(&w.ca, "hosta.example.org"),
    ssl: true,
    says: &[],
    logged: &[],
};

/// Runs `case` ([`refused`]), then waits for each of `case.logged`.
fn check_refusal(case: Refusal) {
    let w = world(case.dir);
    let b = match case.dest {
        Dest::Tls(cert) => w.dest(&cert(&w)),
        Dest::PlainOpen => node(
            &w.dir,
            NodeSpec {
                plain: true,
                ..NodeSpec::new("open")
            },
        ),
    };
    let a = w.source("a", &(case.source)(&w), &[&w.ca]);
    create(&a, "web1", 4 * MIB);
    let to = match case.dest {
        Dest::Tls(_) => b.tls_addr(),
        Dest::PlainOpen => b.addr(),
    };
    refused(
        &a,
        &migrate("web1", to, case.ssl),
        ErrorKind::Refused,
        case.says,
    );
    // Nothing of the session was read at the destination.
    assert_eq!(b.received.load(Ordering::SeqCst), 0, "its engine ran");
    assert!(b.sim.hypervisor().by_name("web1").is_none());
    eventually(&format!("the destination logs {:?}", case.logged), || {
        let l = logs();
        case.logged.iter().all(|n| l.contains(n))
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    check_refusal(Refusal {
        dir: "other-ca",
        source: |w| host_cert(&w.other_ca, "hosta.example.org"),
        says: &[
            "does not trust this host's certificate",
            "relocd-relocation-ssl-ca-file",
            "a.crt",
        ],
        logged: &[
            "TLS handshake failed",
            "its certificate is not signed by a CA in relocd-relocation-ssl-ca-file",
        ],
        ..REFUSAL
    });
}

#[test]
fn an_expired_client_certificate_is_refused() {
    check_refusal(Refusal {
        dir: "expired",
        source: |w| w.ca.issue_expired(&["hosta.example.org"]),
        says: &["has expired", "renew"],
        logged: &["its certificate has expired"],
        ..REFUSAL
    });
}

#[test]
fn a_name_hosts_allow_does_not_admit_is_refused() {
    check_refusal(Refusal {
        dir: "hosts-allow",
        source: |w| host_cert(&w.ca, "hostx.example.org"),
        says: &["xend-relocation-hosts-allow"],
        // With the names it tried.
        logged: &[
            "relocation connection refused",
            "its certificate's names: hostx.example.org, 127.0.0.1",
        ],
        ..REFUSAL
    });
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    check_refusal(Refusal {
        dir: "server-ca",
        dest: Dest::Tls(|w| host_cert(&w.other_ca, "hostb.example.org")),
        says: &[
            "its certificate is not signed by a CA in relocd-relocation-ssl-ca-file",
            "a-ca.pem",
            "add its CA there",
        ],
        // The client's alert.
        logged: &["the peer does not trust this host's certificate"],
        ..REFUSAL
    });
}

#[test]
fn a_server_certificate_for_another_name_is_refused_by_the_client() {
    check_refusal(Refusal {
        dir: "server-name",
        // The destination's certificate does not carry 127.0.0.1.
        dest: Dest::Tls(|w| w.ca.issue(&["hostb.example.org"])),
        says: &["not for the name dialled", "subject alternative names"],
        ..REFUSAL
    });
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_refused() {
    check_refusal(Refusal {
        dir: "plain-on-tls",
        ssl: false,
        says: &["speaks TLS", "--ssl"],
        logged: &["the peer does not speak TLS"],
        ..REFUSAL
    });
}

#[test]
fn a_tls_client_on_the_plain_port_fails_and_never_falls_back() {
    // Not the TLS destination's plain port: hosts-allow there would refuse
    // 127.0.0.1 (not hosta) before TLS could.
    check_refusal(Refusal {
        dir: "tls-on-plain",
        dest: Dest::PlainOpen,
        says: &[
            "during the TLS handshake",
            "not a TLS relocation port",
            "without --ssl",
        ],
        // A TLS client.
        logged: &["the peer speaks TLS, not plain relocd"],
        ..REFUSAL
    });
}

#[test]
fn a_client_without_a_certificate_is_refused_before_any_message() {
    let w = world("no-cert");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    // A TLS client of our own, with no client certificate.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(w.ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(b.tls_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    // A relocd Hello's worth of bytes; the server must not read it.
    let _ = tls.write_all(&[0, 0, 0, 8, 0, b'R', b'L', b'C', b'D', 1, 1, 3]);
    let mut buf = [0u8; 64];
    let got = tls.read(&mut buf);
    match got {
        Err(e) => assert!(
            e.to_string().contains("CertificateRequired"),
            "expected the certificate_required alert: {e}"
        ),
        Ok(n) => panic!("the server answered {n} bytes"),
    }
    eventually("the destination logs why", || {
        logs().contains("the peer presented no certificate")
    });
    assert_eq!(b.received.load(Ordering::SeqCst), 0);
}

use rustls::pki_types::pem::PemObject;

#[test]
fn reloaded_certificates_serve_new_connections_and_running_migrations_go_on() {
    let w = world("reload");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    let a = w.source("a", &host_cert(&w.ca, "hosta.example.org"), &[&w.ca]);
    let spec = create(&a, "web1", 64 * MIB);
    std::thread::sleep(Duration::from_millis(100));
    // A slow live migration (capped), and the re-read in its middle.
    let Request::Migrate(mut req) = migrate("web1", b.tls_addr(), true) else {
        unreachable!()
    };
    req.bandwidth_bytes_per_s = Some(32 * MIB);
    let running = std::thread::spawn({
        let control = a.daemon.control_path().to_owned();
        move || Client::connect(&control)?.call(&Request::Migrate(req), |_| {})
    });
    eventually("the migration runs", || {
        b.received.load(Ordering::SeqCst) == 1
    });
    // The destination's certificate now comes from the other CA.
    let newer = w.other_ca.issue(&["hostb.example.org", "127.0.0.1"]);
    std::fs::write(w.dir.join("dest.key"), &newer.key_pem).unwrap();
    std::fs::write(w.dir.join("dest.crt"), &newer.cert_pem).unwrap();
    b.tls.as_ref().unwrap().reload().unwrap();
    let out = running.join().unwrap().unwrap();
    assert!(matches!(out, Outcome::Migrated(_)), "{out:?}");
    check_moved(&spec, &a, &b);
    // A new connection gets the new certificate, which `a` does not trust.
    create(&a, "web2", 4 * MIB);
    refused_after(
        &a,
        &migrate("web2", b.tls_addr(), true),
        "is not signed by a CA",
    );
    // A broken file leaves the certificates in force.
    std::fs::write(w.dir.join("dest.key"), "not a key").unwrap();
    let e = b.tls.as_ref().unwrap().reload().unwrap_err().to_string();
    assert!(
        e.contains("dest.key") && e.contains("no private key"),
        "{e}"
    );
}

/// As [`refused`] (whatever the error's kind), for a destination whose
/// engine has run before.
fn refused_after(a: &Node, req: &Request, needle: &str) {
    match a.call(req) {
        Err(ClientError::Remote(e)) => assert!(e.message.contains(needle), "{e:?}"),
        other => panic!("{other:?}"),
    }
    let Request::Migrate(m) = req else {
        unreachable!()
    };
    running_at(a, &m.domain);
}

#[test]
fn ssl_without_an_identity_is_refused_not_sent_in_the_clear() {
    let w = world("no-identity");
    let b = w.dest(&host_cert(&w.ca, "hostb.example.org"));
    let a = node(&w.dir, NodeSpec::new("a"));
    create(&a, "web1", 4 * MIB);
    refused_after(&a, &migrate("web1", b.tls_addr(), true), "no TLS identity");
    assert_eq!(b.received.load(Ordering::SeqCst), 0);
}
