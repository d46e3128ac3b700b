//! Certificates made for a test (rcgen): CAs, and host certificates they
//! sign, written as PEM files for relocd's TLS settings.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate, PEM.
    pub pem: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("CA certificate");
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A host certificate for `names` (DNS names or IP addresses), for
    /// both server and client use, valid now.
    pub fn issue(&self, names: &[&str]) -> HostCert {
        self.issue_valid(names, 2020, 2090)
    }

    /// A host certificate that expired in 2021.
    pub fn issue_expired(&self, names: &[&str]) -> HostCert {
        self.issue_valid(names, 2020, 2021)
    }

    fn issue_valid(&self, names: &[&str], from_year: i32, to_year: i32) -> HostCert {
        let key = KeyPair::generate().expect("host key");
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut p = CertificateParams::new(names.clone()).expect("host params");
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        p.not_before = rcgen::date_time_ymd(from_year, 1, 1);
        p.not_after = rcgen::date_time_ymd(to_year, 1, 1);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .expect("host certificate");
        HostCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A host's certificate and key, PEM.
pub struct HostCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The three files of one host's TLS settings.
#[derive(Clone, Debug)]
pub struct Files {
    /// `xend-relocation-server-ssl-key-file`.
    pub key: PathBuf,
    /// `xend-relocation-server-ssl-cert-file`.
    pub cert: PathBuf,
    /// `relocd-relocation-ssl-ca-file`.
    pub ca: PathBuf,
}

/// Writes `host`'s key (mode 0600) and certificate and `trusted`'s CA
/// certificates as `dir/TAG.key`, `TAG.crt`, `TAG-ca.pem`.
pub fn write_files(dir: &Path, tag: &str, host: &HostCert, trusted: &[&Ca]) -> Files {
    use std::os::unix::fs::PermissionsExt;
    let files = Files {
        key: dir.join(format!("{tag}.key")),
        cert: dir.join(format!("{tag}.crt")),
        ca: dir.join(format!("{tag}-ca.pem")),
    };
    std::fs::write(&files.key, &host.key_pem).expect("write key");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&files.cert, &host.cert_pem).expect("write cert");
    let bundle: String = trusted.iter().map(|c| c.pem.as_str()).collect();
    std::fs::write(&files.ca, bundle).expect("write CA");
    files
}
