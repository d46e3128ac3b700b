//! Reading `xend-config.sxp` from disk into the core's typed settings, with
//! the file name in every message.

use crate::peer::canonical;
use relocd_core::config::{ConfigError, ConfigWarning, RelocationConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The largest config file relocd reads (a stock xend-config.sxp is ~12 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{path}: {size} bytes is larger than the {MAX_CONFIG_BYTES} bytes relocd reads")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file is not valid UTF-8.
    #[error("{path}: not UTF-8 text ({source})")]
    NotText {
        /// The file.
        path: PathBuf,
        /// Where the bad byte is.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A syntax error or a setting of the wrong type.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The core's error (names the key, line and column).
        #[source]
        source: ConfigError,
    },
}

/// A config file's text, kept so that the settings can borrow from it.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    /// Reads `path` (at most [`MAX_CONFIG_BYTES`]).
    pub fn read(path: &Path) -> Result<ConfigFile, SettingsError> {
        use std::io::Read;
        let read_err = |source| SettingsError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        let size = bytes.len() as u64;
        if size > MAX_CONFIG_BYTES {
            return Err(SettingsError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| SettingsError::NotText {
            path: path.to_owned(),
            source: e.utf8_error(),
        })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            text,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The relocation settings and the warnings worth telling, each already
    /// prefixed with the file name.
    pub fn relocation(&self) -> Result<(RelocationConfig<'_>, Vec<String>), SettingsError> {
        let mut warnings: Vec<ConfigWarning<'_>> = Vec::new();
        let cfg = RelocationConfig::parse(&self.text, &mut warnings).map_err(|source| {
            SettingsError::Config {
                path: self.path.clone(),
                source,
            }
        })?;
        let shown = warnings
            .iter()
            .map(|w| format!("{}: {w}", self.path.display()))
            .collect();
        Ok((cfg, shown))
    }
}

/// Compiles `xend-relocation-hosts-allow` as `cfg` has it; a pattern relocd
/// refuses is an error that names the setting and, when it was read from a
/// file, the file, line and column (as every other config error does).
/// Shared by `relocd serve` and `relocd check-host`.
pub fn compile_hosts_allow(
    cfg: &RelocationConfig<'_>,
    file: Option<&Path>,
) -> Result<(relocd_core::acl::HostsAllow, Vec<String>), String> {
    let setting = cfg.hosts_allow.to_owned_string();
    relocd_core::acl::HostsAllow::compile(&setting)
        .map(|(acl, warnings)| (acl, warnings.iter().map(ToString::to_string).collect()))
        .map_err(|e| {
            let at = match (file, cfg.hosts_allow.pos()) {
                (Some(f), Some(p)) => {
                    format!("{}: line {}, column {}: ", f.display(), p.line, p.column)
                }
                (Some(f), None) => format!("{}: ", f.display()),
                (None, _) => String::new(),
            };
            format!(
                "{at}xend-relocation-hosts-allow: {}",
                e.with_setting(&setting)
            )
        })
}

/// `host:port` for the relocation server of `cfg`, as `relocd serve`
/// binds it: `xend-relocation-address` (empty, xend's default: every
/// interface) and `xend-relocation-port`.
pub fn relocation_listen_text(cfg: &RelocationConfig<'_>) -> String {
    listen_text(cfg, cfg.port)
}

/// `host:port` for the TLS relocation server of `cfg`:
/// `xend-relocation-address` and `xend-relocation-ssl-port` (8003).
pub fn relocation_ssl_listen_text(cfg: &RelocationConfig<'_>) -> String {
    listen_text(cfg, cfg.ssl_port)
}

fn listen_text(cfg: &RelocationConfig<'_>, port: u16) -> String {
    let host = cfg.address.to_owned_string();
    let host = if host.is_empty() {
        "0.0.0.0".to_owned()
    } else {
        host
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The TLS files `cfg` names, and whether TLS is asked for
/// (`xend-relocation-ssl-server` or `xend-relocation-ssl`). Asked for with
/// a file setting missing is an error that names it; not asked for, the
/// files are used when all three are set (for `migrate --ssl`), and
/// `None` is returned otherwise.
pub fn tls_files(
    cfg: &RelocationConfig<'_>,
) -> Result<Option<(crate::tls::TlsFiles, bool)>, crate::tls::TlsSetupError> {
    use crate::tls::{TlsFiles, TlsSetupError, SETTING_CA, SETTING_CERT, SETTING_KEY};
    let asked: Vec<&str> = [
        (cfg.ssl_server, "(xend-relocation-ssl-server yes)"),
        (cfg.ssl, "(xend-relocation-ssl yes)"),
    ]
    .into_iter()
    .filter_map(|(on, text)| on.then_some(text))
    .collect();
    let path =
        |a: Option<relocd_core::sxp::Atom<'_>>| a.map(|a| PathBuf::from(a.to_owned_string()));
    let files = [
        (
            path(cfg.ssl_key_file),
            SETTING_KEY,
            "the host's private key (PEM)",
        ),
        (
            path(cfg.ssl_cert_file),
            SETTING_CERT,
            "the host's certificate (PEM)",
        ),
        (
            path(cfg.ssl_ca_file),
            SETTING_CA,
            "the CA certificates (PEM) peers' certificates must chain to",
        ),
    ];
    if !asked.is_empty() {
        if let Some((_, setting, what)) = files.iter().find(|(p, _, _)| p.is_none()) {
            return Err(TlsSetupError::NotSet {
                setting,
                what,
                asked: asked.join(", "),
            });
        }
    }
    let [(Some(key), ..), (Some(cert), ..), (Some(ca), ..)] = files else {
        return Ok(None);
    };
    Ok(Some((TlsFiles { key, cert, ca }, !asked.is_empty())))
}

/// The one decision on whether a relocation server is open to anyone who
/// can reach it, and the warning that says so (`relocd serve` logs it at
/// start, `relocd check-host` reports it): it listens beyond loopback, its
/// `xend-relocation-hosts-allow` is empty (every host admitted, xend's
/// default), and its peers are not authenticated by TLS with a CA. Then any
/// host that speaks the protocol can start a guest of its choosing here.
///
/// `listen` is the address the server binds; `tls_with_ca` whether every
/// peer must present a certificate from `relocd-relocation-ssl-ca-file`.
pub fn open_relocation_warning(
    listen: SocketAddr,
    hosts_allow: &str,
    tls_with_ca: bool,
) -> Option<String> {
    if canonical(listen.ip()).is_loopback() || !hosts_allow.trim().is_empty() || tls_with_ca {
        return None;
    }
    let reach = if listen.ip().is_unspecified() {
        "on every interface"
    } else {
        "beyond loopback"
    };
    Some(format!(
        "the relocation server on {listen} listens {reach} and admits every host that can \
         reach it (xend-relocation-hosts-allow is empty, and peers are not authenticated by \
         TLS): anyone who can connect can start a guest here. Close it with \
         xend-relocation-hosts-allow (the hosts that may send guests), \
         xend-relocation-address (listen on loopback or an internal address only), or TLS \
         (xend-relocation-ssl-server with relocd-relocation-ssl-ca-file, in place of \
         xend-relocation-server)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, body: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("relocd-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn shipped_example_is_read() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/xend-config.sxp");
        let file = ConfigFile::read(&path).unwrap();
        let (cfg, warnings) = file.relocation().unwrap();
        assert!(cfg.server);
        assert_eq!(cfg.port, 8002);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn wrong_type_names_file_key_and_line() {
        let path = write(
            "bad.sxp",
            b"(dom0-min-mem 196)\n(xend-relocation-port eighty)\n",
        );
        let err = ConfigFile::read(&path).unwrap().relocation().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bad.sxp: line 2"), "{text}");
        assert!(text.contains("xend-relocation-port"), "{text}");
        assert!(text.contains("eighty"), "{text}");
    }

    #[test]
    fn warnings_carry_the_file_name() {
        let path = write(
            "dup.sxp",
            b"(xend-relocation-port 8002)\n(xend-relocation-port 9000)\n",
        );
        let file = ConfigFile::read(&path).unwrap();
        let (cfg, warnings) = file.relocation().unwrap();
        assert_eq!(cfg.port, 8002);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with(&format!("{}:", path.display())));
    }

    #[test]
    fn missing_oversized_and_binary_files_are_errors() {
        let missing = ConfigFile::read(Path::new("/nonexistent/xend-config.sxp")).unwrap_err();
        assert!(matches!(missing, SettingsError::Read { .. }));
        let big = write("big.sxp", &vec![b' '; (MAX_CONFIG_BYTES + 1) as usize]);
        assert!(matches!(
            ConfigFile::read(&big).unwrap_err(),
            SettingsError::TooLarge { .. }
        ));
        let bin = write("bin.sxp", b"(a \xff)");
        assert!(matches!(
            ConfigFile::read(&bin).unwrap_err(),
            SettingsError::NotText { .. }
        ));
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn open_relocation_server_is_warned_about() {
        // xend's defaults: every interface, empty hosts-allow, no TLS.
        let w = open_relocation_warning(addr("0.0.0.0:8002"), "", false).unwrap();
        assert!(w.contains("0.0.0.0:8002 listens on every interface"), "{w}");
        for setting in [
            "xend-relocation-hosts-allow",
            "xend-relocation-address",
            "xend-relocation-ssl-server",
            "relocd-relocation-ssl-ca-file",
        ] {
            assert!(w.contains(setting), "{setting} missing: {w}");
        }
        let w = open_relocation_warning(addr("[2001:db8::1]:8002"), "  ", false).unwrap();
        assert!(w.contains("beyond loopback"), "{w}");
        assert!(open_relocation_warning(addr("[::]:8002"), "", false).is_some());
        assert!(open_relocation_warning(addr("192.0.2.1:8002"), "", false).is_some());
    }

    #[test]
    fn each_setting_that_closes_it_silences_the_warning() {
        assert_eq!(
            open_relocation_warning(addr("0.0.0.0:8002"), "^hostb$", false),
            None
        );
        assert_eq!(
            open_relocation_warning(addr("127.0.0.1:8002"), "", false),
            None
        );
        assert_eq!(open_relocation_warning(addr("[::1]:8002"), "", false), None);
        assert_eq!(
            open_relocation_warning(addr("[::ffff:127.0.0.1]:8002"), "", false),
            None
        );
        assert_eq!(
            open_relocation_warning(addr("0.0.0.0:8003"), "", true),
            None
        );
    }

    #[test]
    fn listen_text_follows_xend_defaults() {
        let text = "(xend-relocation-server yes)";
        let cfg = RelocationConfig::parse(text, &mut |_: ConfigWarning<'_>| {}).unwrap();
        assert_eq!(relocation_listen_text(&cfg), "0.0.0.0:8002");
        let text = "(xend-relocation-address '::1')(xend-relocation-port 9002)";
        let cfg = RelocationConfig::parse(text, &mut |_: ConfigWarning<'_>| {}).unwrap();
        assert_eq!(relocation_listen_text(&cfg), "[::1]:9002");
    }
}
