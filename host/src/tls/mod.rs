//! TLS on the relocation link (rustls, with the `aws-lc-rs` provider), both
//! ends authenticated.
//!
//! One identity serves both directions: the host's certificate and key
//! (`xend-relocation-server-ssl-cert-file`, `-key-file`, PEM) are its
//! server certificate on `xend-relocation-ssl-port` and its client
//! certificate when it migrates a guest out. Peers must present a
//! certificate that chains to the CA bundle in
//! `relocd-relocation-ssl-ca-file`: the server requires one from every
//! client, and the client checks the server's against the name or address
//! it dialled. Only TLS 1.3 is spoken; sessions are not resumed (each
//! connection is a full handshake, so a certificate re-read takes effect at
//! once).
//!
//! [`Tls::load`] reads and checks the three files (and says which one is
//! wrong, and how); [`Tls::reload`] re-reads them (SIGHUP) for the
//! connections that follow, leaving running ones alone.

mod names;
mod record;
mod stream;

pub use names::{cert_names, CertNames, MAX_NAMES};
pub use stream::{FailureProbe, TlsStream};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// The setting that names the host's private key.
pub const SETTING_KEY: &str = "xend-relocation-server-ssl-key-file";
/// The setting that names the host's certificate.
pub const SETTING_CERT: &str = "xend-relocation-server-ssl-cert-file";
/// The setting that names the CA bundle peers must chain to.
pub const SETTING_CA: &str = "relocd-relocation-ssl-ca-file";

/// The largest key, certificate or CA file read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The three files TLS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The host's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The host's certificate, then any intermediates (PEM).
    pub cert: PathBuf,
    /// The CA certificates peers must chain to (PEM).
    pub ca: PathBuf,
}

/// Why the TLS files cannot be used; the message names the file, its
/// setting and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A setting TLS needs is not set.
    #[error("TLS is asked for ({asked}) but {setting} is not set: set it to {what}")]
    NotSet {
        /// The setting.
        setting: &'static str,
        /// What the file holds.
        what: &'static str,
        /// Which setting asked for TLS.
        asked: String,
    },
    /// A file is missing, unreadable, or holds nothing usable.
    #[error("{} ({setting}): {problem}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Its setting.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The key is not the certificate's.
    #[error(
        "{} ({SETTING_KEY}) does not match the certificate in {} ({SETTING_CERT}): \
         {problem}; give the key the certificate was issued for",
        .key.display(), .cert.display()
    )]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// What rustls found.
        problem: String,
    },
}

/// What one reading of the files gives: a configuration for each side.
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// The host's TLS identity and trust (module doc), shared by the
/// listener and the engine; [`Tls::reload`] swaps it in place.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Configs>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// aws-lc-rs's suites and key exchanges (X25519MLKEM768 first), with
/// AES-128-GCM preferred: the cheapest of them per byte, and a guest's
/// memory is many bytes.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

fn read_pem_file(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsSetupError> {
    use std::io::Read;
    let bad = |problem: String| TlsSetupError::File {
        path: path.to_owned(),
        setting,
        problem,
    };
    let file = std::fs::File::open(path).map_err(|e| {
        bad(match e.kind() {
            io::ErrorKind::NotFound => "no such file".to_owned(),
            io::ErrorKind::PermissionDenied => {
                "permission denied (relocd serve runs as root; check the file's mode)".to_owned()
            }
            _ => format!("cannot open: {e}"),
        })
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(bad(format!(
            "larger than the {MAX_PEM_BYTES} bytes relocd reads"
        )));
    }
    Ok(bytes)
}

fn read_certs(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = read_pem_file(path, setting)?;
    let bad = |problem: String| TlsSetupError::File {
        path: path.to_owned(),
        setting,
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

/// The warning for a private key others than its owner may read.
fn key_mode_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} ({SETTING_KEY}): the private key is readable by {} (mode {:04o}); \
             make it readable by its owner only: chmod 600 {}",
            path.display(),
            if mode & 0o007 != 0 {
                "every user"
            } else {
                "its group"
            },
            mode & 0o7777,
            path.display()
        )
    })
}

fn build(files: &TlsFiles) -> Result<(Configs, Vec<String>), TlsSetupError> {
    let mut warnings = Vec::new();
    let chain = read_certs(&files.cert, SETTING_CERT)?;
    let key_bytes = read_pem_file(&files.key, SETTING_KEY)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsSetupError::File {
        path: files.key.clone(),
        setting: SETTING_KEY,
        problem: format!(
            "holds no private key (expected PEM: -----BEGIN PRIVATE KEY----- or an RSA/EC key): {e}"
        ),
    })?;
    warnings.extend(key_mode_warning(&files.key));
    let cas = read_certs(&files.ca, SETTING_CA)?;
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots.add(ca).map_err(|e| TlsSetupError::File {
            path: files.ca.clone(),
            setting: SETTING_CA,
            problem: format!("certificate {} is not a usable CA certificate: {e}", i + 1),
        })?;
    }
    let roots = Arc::new(roots);
    let provider = provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsSetupError::Mismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
                problem: e.to_string(),
            },
            e => TlsSetupError::File {
                path: files.key.clone(),
                setting: SETTING_KEY,
                problem: format!("the key cannot be used: {e}"),
            },
        })?;
    drop(certified);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsSetupError::File {
        path: files.ca.clone(),
        setting: SETTING_CA,
        problem: format!("cannot verify clients with it: {e}"),
    })?;
    let setup = |e: rustls::Error| TlsSetupError::File {
        path: files.cert.clone(),
        setting: SETTING_CERT,
        problem: e.to_string(),
    };
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(setup)?;
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    // The records are sealed and opened by the stream (stream.rs).
    server.enable_secret_extraction = true;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(setup)?;
    client.resumption = rustls::client::Resumption::disabled();
    client.enable_secret_extraction = true;
    Ok((
        Configs {
            server: Arc::new(server),
            client: Arc::new(client),
        },
        warnings,
    ))
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The deadline passed first.
    TimedOut,
    /// The peer closed the connection during the handshake.
    Closed,
    /// TLS said no (a certificate, an alert, not TLS at all).
    Tls(rustls::Error),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::TimedOut => f.write_str("the TLS handshake timed out"),
            HandshakeError::Closed => {
                f.write_str("the peer closed the connection during the TLS handshake")
            }
            HandshakeError::Tls(e) => write!(f, "{}", describe(e)),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Tls {
    /// Reads and checks the files; the warnings (a key others may read)
    /// are for the log.
    pub fn load(files: TlsFiles) -> Result<(Tls, Vec<String>), TlsSetupError> {
        let (configs, warnings) = build(&files)?;
        Ok((
            Tls {
                files,
                current: RwLock::new(Arc::new(configs)),
            },
            warnings,
        ))
    }

    /// Re-reads the files for the connections that follow; on an error the
    /// configuration in force stays.
    pub fn reload(&self) -> Result<Vec<String>, TlsSetupError> {
        let (configs, warnings) = build(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(configs);
        Ok(warnings)
    }

    /// The files.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn configs(&self) -> Arc<Configs> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The server side of a handshake on an accepted connection, until
    /// `deadline`. The client's certificate is verified against the CA;
    /// its names are [`TlsStream`]'s peer's ([`peer_names`]).
    pub fn accept(&self, tcp: TcpStream, deadline: Instant) -> Result<TlsStream, HandshakeError> {
        let conn = UnbufferedServerConnection::new(self.configs().server.clone())
            .map_err(HandshakeError::Tls)?;
        handshake(tcp, conn, deadline)
    }

    /// The client side of a handshake with the relocation server `host`
    /// (the name or address dialled: the server's certificate must carry
    /// it), within `timeout`.
    pub fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<TlsStream, HandshakeError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            HandshakeError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{host}` is not a host name or address a certificate can carry"),
            ))
        })?;
        let conn = UnbufferedClientConnection::new(self.configs().client.clone(), name)
            .map_err(HandshakeError::Tls)?;
        handshake(tcp, conn, Instant::now() + timeout)
    }
}

/// The largest handshake message rustls takes is 64 KiB; with the records
/// around it, what the handshake may hold of the peer's bytes.
const HANDSHAKE_IN: usize = (1 << 16) + 4 * record::MAX_RECORD;
/// The most this side's own handshake flight may take.
const HANDSHAKE_OUT: usize = 1 << 18;
/// The most application data that may come with the handshake's end.
const HANDSHAKE_PLAIN: usize = 1 << 16;

/// The two sides of rustls's unbuffered connection, as the handshake
/// drives them.
trait Side {
    type Data;
    fn common(&self) -> &rustls::CommonState;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, stream::Kernel), rustls::Error>;
}

/// [`Side`] for one of rustls's unbuffered connections: the same calls on
/// both sides, which rustls gives each its own types (`$data` its
/// connection data, `$kernel` the [`stream::Kernel`] it becomes).
macro_rules! side {
    ($conn:ty, $data:ty, $kernel:ident) => {
        impl Side for $conn {
            type Data = $data;
            fn common(&self) -> &rustls::CommonState {
                self
            }
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn into_kernel(
                self,
            ) -> Result<(rustls::ExtractedSecrets, stream::Kernel), rustls::Error> {
                let (s, k) = self.dangerous_into_kernel_connection()?;
                Ok((s, stream::Kernel::$kernel(k)))
            }
        }
    };
}

side!(UnbufferedClientConnection, ClientConnectionData, Client);
side!(UnbufferedServerConnection, ServerConnectionData, Server);

/// What one step of the handshake asks for.
enum Step {
    /// Go on.
    Next,
    /// More bytes from the peer.
    Read,
    /// rustls would let application data go: done, unless it still waits
    /// for the peer's Finished (a server).
    Traffic,
    /// Application data came: done if the handshake is, so that the
    /// records after it are opened by the stream, not rustls.
    Plain,
    Closed,
    Failed(rustls::Error),
    Io(io::Error),
}

fn io_step(e: io::Error, deadline: Instant) -> Step {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) && Instant::now() < deadline
    {
        // The deadline decides, not one call's timeout.
        return Step::Next;
    }
    Step::Io(e)
}

/// Sets both socket timeouts to what is left until `deadline`.
fn until(tcp: &TcpStream, deadline: Instant) -> Result<(), HandshakeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HandshakeError::TimedOut);
    }
    tcp.set_read_timeout(Some(left))
        .and_then(|()| tcp.set_write_timeout(Some(left)))
        .map_err(HandshakeError::Io)
}

/// Writes all of `out` before `deadline`.
fn send_all(tcp: &TcpStream, out: &[u8], deadline: Instant) -> Result<(), HandshakeError> {
    let mut at = 0;
    while at < out.len() {
        until(tcp, deadline)?;
        match (&*tcp).write(&out[at..]) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(n) => at += n,
            Err(e) => match io_step(e, deadline) {
                Step::Next => {}
                Step::Io(e) => return Err(HandshakeError::Io(e)),
                _ => return Err(HandshakeError::TimedOut),
            },
        }
    }
    Ok(())
}

/// Encodes what rustls has to send after `out` (bounded).
fn encode<D>(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, D>,
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 4096;
    loop {
        if start + room > HANDSHAKE_OUT {
            return Err(rustls::Error::General(
                "the handshake flight is too large".into(),
            ));
        }
        out.resize(start + room, 0);
        match e.encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(rustls::unbuffered::EncodeError::InsufficientSize(s)) => {
                room = s.required_size;
            }
            Err(rustls::unbuffered::EncodeError::AlreadyEncoded) => {
                out.truncate(start);
                return Ok(());
            }
        }
    }
}

/// Drives `conn` through the handshake over `tcp` until `deadline`, then
/// hands the connection's keys to a [`TlsStream`]. An error rustls meets
/// sends its alert to the peer before it is returned.
fn handshake<C: Side>(
    tcp: TcpStream,
    mut conn: C,
    deadline: Instant,
) -> Result<TlsStream, HandshakeError> {
    let (rt, wt) = (
        tcp.read_timeout().map_err(HandshakeError::Io)?,
        tcp.write_timeout().map_err(HandshakeError::Io)?,
    );
    let mut inb = vec![0u8; HANDSHAKE_IN];
    let mut len = 0;
    let mut out = Vec::new();
    let mut plain = Vec::new();
    loop {
        let status = conn.process(&mut inb[..len]);
        let discard = status.discard;
        let step = match status.state {
            Err(e) => Step::Failed(e),
            Ok(ConnectionState::EncodeTlsData(mut e)) => match encode(&mut e, &mut out) {
                Ok(()) => Step::Next,
                Err(e) => Step::Failed(e),
            },
            Ok(ConnectionState::TransmitTlsData(t)) => match send_all(&tcp, &out, deadline) {
                Ok(()) => {
                    out.clear();
                    t.done();
                    Step::Next
                }
                Err(HandshakeError::Io(e)) => Step::Io(e),
                Err(HandshakeError::Closed) => Step::Closed,
                Err(_) => return Err(HandshakeError::TimedOut),
            },
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Step::Traffic,
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                let mut step = Step::Plain;
                while let Some(rec) = r.next_record() {
                    match rec {
                        Ok(rec) if plain.len() + rec.payload.len() <= HANDSHAKE_PLAIN => {
                            plain.extend_from_slice(rec.payload);
                        }
                        Ok(_) => {
                            step = Step::Failed(rustls::Error::General(
                                "too much data with the handshake".into(),
                            ));
                            break;
                        }
                        Err(e) => {
                            step = Step::Failed(e);
                            break;
                        }
                    }
                }
                step
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::Closed,
            Ok(_) => Step::Failed(rustls::Error::General(
                "an unexpected state in the TLS handshake".into(),
            )),
        };
        inb.copy_within(discard..len, 0);
        len -= discard;
        let step = match step {
            Step::Traffic | Step::Plain if !conn.common().is_handshaking() => break,
            Step::Traffic => Step::Read,
            Step::Plain => Step::Next,
            s => s,
        };
        match step {
            Step::Next | Step::Traffic | Step::Plain => {}
            Step::Read => {
                if len == inb.len() {
                    let e = rustls::Error::InvalidMessage(rustls::InvalidMessage::MessageTooLarge);
                    send_alert(&mut conn, &mut inb[..len], &tcp, deadline);
                    return Err(HandshakeError::Tls(e));
                }
                until(&tcp, deadline)?;
                match (&tcp).read(&mut inb[len..]) {
                    Ok(0) => return Err(HandshakeError::Closed),
                    Ok(n) => len += n,
                    Err(e) => match io_step(e, deadline) {
                        Step::Next => {}
                        Step::Io(e) => return Err(HandshakeError::Io(e)),
                        _ => return Err(HandshakeError::TimedOut),
                    },
                }
            }
            Step::Closed => return Err(HandshakeError::Closed),
            Step::Failed(e) => {
                send_alert(&mut conn, &mut inb[..len], &tcp, deadline);
                return Err(HandshakeError::Tls(e));
            }
            Step::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Closed)
            }
            Step::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HandshakeError::TimedOut)
            }
            Step::Io(e) => return Err(HandshakeError::Io(e)),
        }
    }
    tcp.set_read_timeout(rt)
        .and_then(|()| tcp.set_write_timeout(wt))
        .map_err(HandshakeError::Io)?;
    let peer_cert = conn
        .common()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec());
    let (secrets, kernel) = conn.into_kernel().map_err(HandshakeError::Tls)?;
    let rest = inb[..len].to_vec();
    TlsStream::new(
        tcp,
        stream::Handover {
            secrets,
            kernel,
            rest,
            plain,
            peer_cert,
        },
    )
    .map_err(HandshakeError::Tls)
}

/// Sends the alert rustls queued with an error (best effort, within the
/// deadline). rustls hands queued records out before it reads on, so one
/// call gives the alert; it is given the same input (`inb`, which its
/// partial handshake messages point into), and not called again (it would
/// read the bad input again).
fn send_alert<C: Side>(conn: &mut C, inb: &mut [u8], tcp: &TcpStream, deadline: Instant) {
    let mut out = Vec::new();
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = conn.process(inb).state {
        if encode(&mut e, &mut out).is_ok() {
            let _ = send_all(tcp, &out, deadline);
        }
    }
}

/// The names the peer's verified certificate carries (empty before a
/// handshake, or without a certificate).
pub fn peer_names(stream: &TlsStream) -> CertNames {
    stream.with_peer_cert(cert_names).unwrap_or_default()
}

/// A TLS error in words an operator can act on.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::NoCertificatesPresented => "the peer presented no certificate (a relocd client \
             without xend-relocation-server-ssl-cert-file and -key-file?)"
            .to_owned(),
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "its certificate is not signed by a CA in \
                 relocd-relocation-ssl-ca-file"
                .to_owned(),
            C::Expired | C::ExpiredContext { .. } => {
                format!("its certificate has expired ({e})")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("its certificate is not valid yet ({e})")
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("its certificate is not for the name dialled ({e})")
            }
            _ => format!("its certificate is not acceptable ({e})"),
        },
        E::AlertReceived(a) => match a {
            A::CertificateRequired => "the peer requires a client certificate: set \
                 xend-relocation-server-ssl-cert-file and -key-file here"
                .to_owned(),
            A::UnknownCA => "the peer does not trust this host's certificate: it is not \
                 signed by a CA in the peer's relocd-relocation-ssl-ca-file"
                .to_owned(),
            A::CertificateExpired => {
                "the peer says this host's certificate has expired: renew it".to_owned()
            }
            A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
                format!("the peer refused this host's certificate (TLS alert {a:?})")
            }
            A::AccessDenied => "the peer denied access".to_owned(),
            a => format!("the peer ended the handshake (TLS alert {a:?})"),
        },
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the peer does not speak TLS ({e})")
        }
        e => format!("TLS failed: {e}"),
    }
}

impl TlsStream {
    /// Calls `f` with the peer's end-entity certificate, when it sent one.
    pub fn with_peer_cert<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.peer_cert_der().map(|der| f(&der))
    }
}
