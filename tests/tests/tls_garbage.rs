//! Garbage and truncated TLS handshakes on a running TLS relocation
//! listener: random bytes, real ClientHellos cut short or with a byte
//! flipped, record headers announcing more than follows, peers that stop
//! mid-handshake. No panic, no session handed on, the pending table
//! drains, the process's memory stays bounded, and an honest TLS peer is
//! served afterwards. (Its own test binary, so the memory figure is this
//! test's alone.)

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relocd::daemon::listener::{
    AdmitAll, ListenerConfig, PendingLimits, RelocationListener, Session, SessionHandler,
};
use relocd::daemon::ShutdownToken;
use relocd::tls::{Tls, TlsFiles};
use relocd_tests::tls_certs::{write_files, Ca};

/// Echoes the first five bytes of each session back, and counts sessions.
struct Echo(AtomicUsize);

impl SessionHandler for Echo {
    fn handle(&self, mut session: Session) {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 5];
        if session.stream.read_exact(&mut buf).is_ok() {
            let _ = session.stream.write_all(&buf);
            let _ = session.stream.flush();
        }
    }
}

/// xorshift64*: reproducible bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn load(files: &relocd_tests::tls_certs::Files) -> Arc<Tls> {
    Arc::new(
        Tls::load(TlsFiles {
            key: files.key.clone(),
            cert: files.cert.clone(),
            ca: files.ca.clone(),
        })
        .unwrap()
        .0,
    )
}

/// A real ClientHello, as the first flight of a relocd client.
fn client_hello(client: &rustls::ClientConfig) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client.clone()), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// One hostile peer: connect, send `data`, maybe close our side, read
/// what comes back until EOF (bounded).
fn hostile(addr: SocketAddr, data: &[u8], close: bool) -> usize {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(data);
    if close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
        assert!(got < 1 << 20, "the server sends without end");
    }
    got
}

#[test]
fn garbage_and_truncated_handshakes_cost_nothing_lasting() {
    let dir = std::env::temp_dir().join(format!("relocd-tls-garbage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("relocd test CA");
    let server_files = write_files(&dir, "server", &ca.issue(&["127.0.0.1"]), &[&ca]);
    let client_files = write_files(&dir, "client", &ca.issue(&["hosta.example.org"]), &[&ca]);
    let (server_tls, client_tls) = (load(&server_files), load(&client_files));

    let echo = Arc::new(Echo(AtomicUsize::new(0)));
    let listener = RelocationListener::start_tls(
        ListenerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_sessions: 2,
            max_pending: 16,
            io_timeout: Some(Duration::from_secs(5)),
        },
        PendingLimits {
            handshake_timeout: Duration::from_millis(300),
            per_address: 8,
        },
        server_tls,
        Arc::new(AdmitAll),
        echo.clone(),
        ShutdownToken::new(),
    )
    .unwrap();
    let addr = listener.local_addr();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            std::fs::read(&client_files.ca)
                .ok()
                .and_then(|pem| {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::CertificateDer::from_pem_slice(&pem).ok()
                })
                .unwrap()
                .to_vec(),
        ))
        .unwrap();
    let plain_client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let hello = client_hello(&plain_client);
    assert!(hello.len() > 100 && hello[0] == 0x16, "{:?}", &hello[..5]);

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let run = |cases: usize, rng: &mut Rng| {
        for _ in 0..cases {
            let data = match rng.below(6) {
                0 => {
                    let n = rng.below(4096);
                    rng.bytes(n)
                }
                1 => hello[..rng.below(hello.len())].to_vec(),
                2 => {
                    let mut h = hello.clone();
                    let i = rng.below(h.len());
                    h[i] ^= 1 << rng.below(8);
                    h
                }
                3 => {
                    // A record header announcing up to 64 KiB, then less.
                    let mut h = vec![0x16, 0x03, 0x01, rng.next() as u8, rng.next() as u8];
                    let n = rng.below(512);
                    h.extend(rng.bytes(n));
                    h
                }
                4 => {
                    let mut h = hello.clone();
                    let n = rng.below(2048);
                    h.extend(rng.bytes(n));
                    h
                }
                _ => {
                    // Many tiny records.
                    let mut h = Vec::new();
                    for _ in 0..rng.below(200) {
                        h.extend([0x16, 0x03, 0x03, 0x00, 0x01, rng.next() as u8]);
                    }
                    h
                }
            };
            // Mostly closed at once; now and then a peer that stops and waits.
            let close = rng.below(8) != 0;
            hostile(addr, &data, close);
        }
    };
    run(40, &mut rng);
    let before = rss_kib();
    let started = Instant::now();
    run(400, &mut rng);
    let after = rss_kib();
    eprintln!(
        "400 hostile handshakes in {:.1}s; RSS {before} KiB -> {after} KiB",
        started.elapsed().as_secs_f64()
    );
    assert!(
        after < before + 16 * 1024,
        "memory grew from {before} KiB to {after} KiB over 400 hostile handshakes"
    );
    assert_eq!(
        echo.0.load(Ordering::SeqCst),
        0,
        "a hostile peer got a session"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener.pending_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "pending connections never drained"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Still serving: an honest peer's handshake, and its bytes echoed.
    let tcp = TcpStream::connect(addr).unwrap();
    let mut s = client_tls
        .connect(tcp, "127.0.0.1", Duration::from_secs(5))
        .unwrap();
    s.write_all(b"HELLO").unwrap();
    s.flush().unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HELLO");
    assert_eq!(echo.0.load(Ordering::SeqCst), 1);
    assert!(listener.stop(Duration::from_secs(10)));
    let _ = std::fs::remove_dir_all(&dir);
}
