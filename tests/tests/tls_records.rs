//! The TLS link's own record layer against stock rustls (a buffered
//! rustls connection at the other end, which seals and opens records its
//! own way): data both ways, byte-exact; key updates both ways (the
//! peer's, which asks for one back, and this side's own at its key
//! limit); close_notify as a clean end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use relocd::tls::{Tls, TlsFiles, TlsStream};
use relocd_tests::tls_certs::{write_files, Ca, Files};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const MIB: usize = 1 << 20;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn ours(f: Files) -> Tls {
    Tls::load(TlsFiles {
        key: f.key,
        cert: f.cert,
        ca: f.ca,
    })
    .unwrap()
    .0
}

fn chain(f: &Files) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let certs = CertificateDer::pem_file_iter(&f.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (certs, PrivateKeyDer::from_pem_file(&f.key).unwrap())
}

fn roots(f: &Files) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&f.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct Setup {
    dir: std::path::PathBuf,
    server: Files,
    client: Files,
}

fn setup(tag: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("relocd-tlsrec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("relocd records CA");
    let server = write_files(&dir, "server", &ca.issue(&["127.0.0.1"]), &[&ca]);
    let client = write_files(&dir, "client", &ca.issue(&["hosta.example.org"]), &[&ca]);
    Setup {
        dir,
        server,
        client,
    }
}

fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads exactly `len` bytes in reads of at most `chunk`.
fn read_len(r: &mut impl Read, len: usize, chunk: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let end = (at + chunk).min(len);
        let n = r.read(&mut got[at..end]).unwrap();
        assert!(n > 0, "EOF after {at} of {len} bytes");
        at += n;
    }
    got
}

#[test]
fn relocd_client_and_a_stock_rustls_server_agree_through_key_updates() {
    let s = setup("client");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (certs, key) = chain(&s.server);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let server = thread::spawn(move || {
        let (tcp, _) = l.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // What the client sent, its own key updated every few records.
        assert!(read_len(&mut tls, 3 * MIB, MIB) == pattern(1, 3 * MIB));
        // This side's key update, asking for one back.
        tls.conn.refresh_traffic_keys().unwrap();
        tls.write_all(&pattern(2, 2 * MIB)).unwrap();
        tls.flush().unwrap();
        // Sealed after the client answered the update.
        assert!(read_len(&mut tls, MIB, 4096) == pattern(3, MIB));
        // Then close_notify: a clean end.
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
    let tcp = TcpStream::connect(addr).unwrap();
    let mut c: TlsStream = ours(s.client)
        .connect(tcp, "127.0.0.1", Duration::from_secs(10))
        .unwrap();
    c.set_send_key_limit(5);
    // Writes of odd sizes: records cross the write calls' slices.
    let out = pattern(1, 3 * MIB);
    for part in out.chunks(100_003) {
        c.write_all(part).unwrap();
    }
    c.flush().unwrap();
    assert!(read_len(&mut c, 2 * MIB, 70_000) == pattern(2, 2 * MIB));
    c.write_all(&pattern(3, MIB)).unwrap();
    c.flush().unwrap();
    c.close_write();
    server.join().unwrap();
    assert!(c.failure().is_none());
    cleanup(&s.dir);
}

#[test]
fn a_stock_rustls_client_and_relocd_server_agree_and_end_cleanly() {
    let s = setup("server");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let tls = ours(s.server.clone());
    let server = thread::spawn(move || {
        let (tcp, _) = l.accept().unwrap();
        let mut c = tls
            .accept(tcp, Instant::now() + Duration::from_secs(10))
            .unwrap();
        c.set_send_key_limit(3);
        let got = read_len(&mut c, 2 * MIB, 3000);
        assert!(got == pattern(4, 2 * MIB));
        c.write_all(&pattern(5, MIB + 17)).unwrap();
        c.flush().unwrap();
        // The client's close_notify: read gives 0, no error.
        let mut b = [0u8; 16];
        assert_eq!(c.read(&mut b).unwrap(), 0);
        assert!(c.failure().is_none());
    });
    let (certs, key) = chain(&s.client);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(&s.client))
        .with_client_auth_cert(certs, key)
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    tls.write_all(&pattern(4, 2 * MIB)).unwrap();
    tls.flush().unwrap();
    assert!(read_len(&mut tls, MIB + 17, MIB) == pattern(5, MIB + 17));
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    server.join().unwrap();
    cleanup(&s.dir);
}
