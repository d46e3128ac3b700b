//! libxl's records of domains, as the Xen backend reads and writes them.
//!
//! The xl configuration written into the file is libxl's own record of the
//! domain, `/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json` (what `xl
//! save` itself reads back through libxl), so `xl restore` rebuilds the
//! domain as it was created. Where there is none (a domain not made by xl),
//! a minimal one is made from what Xen and xenstore say: name, UUID, type,
//! vCPUs and memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use relocd_hypercall::DomId;

/// Where libxl keeps its per-domain records.
pub const LIBXL_USERDATA_DIR: &str = "/var/lib/xen";
/// The longest xl configuration taken from libxl's record.
pub const MAX_CONFIG_LEN: u64 = crate::engine::file::MAX_CONFIG_LEN;

/// A UUID as libxl prints it.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// libxl's record of domain `domid` (`userdata-d.<domid>.<uuid>.libxl-json`).
pub fn libxl_config_path(dir: &Path, domid: DomId, uuid: &[u8; 16]) -> PathBuf {
    dir.join(format!("userdata-d.{domid}.{}.libxl-json", uuid_text(uuid)))
}

/// Whether `bytes` is one JSON document, with or without the NUL libxl
/// stores after it.
fn is_json(bytes: &[u8]) -> bool {
    let mut b = bytes;
    while let Some(rest) = b.strip_suffix(&[0]) {
        b = rest;
    }
    serde_json::from_slice::<serde_json::Value>(b).is_ok()
}

/// The xl configuration for the file: libxl's record when it is there and
/// readable, else a minimal one. NUL-terminated, as xl writes it.
pub fn xl_config(
    dir: &Path,
    domid: DomId,
    name: &str,
    info: &relocd_hypercall::DomainInfo,
) -> Vec<u8> {
    let path = libxl_config_path(dir, domid, &info.handle);
    let mut out = Vec::new();
    match std::fs::File::open(&path) {
        Ok(f) => match f.take(MAX_CONFIG_LEN + 1).read_to_end(&mut out) {
            Ok(n) if (n as u64) <= MAX_CONFIG_LEN && is_json(&out) => {
                // libxl stores the record with its NUL (`strlen + 1`);
                // the file carries exactly one.
                while out.last() == Some(&0) {
                    out.pop();
                }
                out.push(0);
                return out;
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "libxl's record is too long or not JSON; writing a minimal configuration")
            }
            Err(e) => tracing::warn!(path = %path.display(), "reading libxl's record: {e}"),
        },
        Err(e) => {
            tracing::info!(path = %path.display(), "no libxl record ({e}); writing a minimal configuration")
        }
    }
    let vcpus = info.max_vcpu_id.map_or(1, |m| m + 1);
    let v = serde_json::json!({
        "c_info": { "type": "pv", "name": name, "uuid": uuid_text(&info.handle) },
        "b_info": {
            "max_vcpus": vcpus,
            "max_memkb": info.tot_pages.saturating_mul(4),
            "target_memkb": info.tot_pages.saturating_mul(4),
            "type.pv": {},
        },
    });
    out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_round_trip() {
        let u = [0xab; 16];
        use crate::engine::file::parse_uuid;
        assert_eq!(parse_uuid(&uuid_text(&u)), Some(u));
        assert_eq!(parse_uuid("not-a-uuid"), None);
        assert_eq!(parse_uuid("zz345678-9abc-def0-0123-456789abcdef"), None);
    }

    #[test]
    fn uuid_as_libxl_prints_it() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(uuid_text(&u), "12345678-9abc-def0-0123-456789abcdef");
        assert_eq!(
            libxl_config_path(Path::new("/var/lib/xen"), 7, &u),
            Path::new("/var/lib/xen/userdata-d.7.12345678-9abc-def0-0123-456789abcdef.libxl-json")
        );
    }

    #[test]
    fn config_from_libxl_record_or_made_up() {
        let dir = std::env::temp_dir().join(format!("relocd-xlcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut info = relocd_hypercall::DomainInfo::from(&Default::default());
        info.handle = [7; 16];
        info.max_pages = 32768 + 256;
        info.tot_pages = 32768;
        info.max_vcpu_id = Some(1);
        let made = xl_config(&dir, 3, "web1", &info);
        assert_eq!(made.last(), Some(&0));
        let v: serde_json::Value = serde_json::from_slice(&made[..made.len() - 1]).unwrap();
        assert_eq!(v["c_info"]["name"], "web1");
        assert_eq!(v["c_info"]["type"], "pv");
        assert_eq!(v["b_info"]["max_vcpus"], 2);
        assert_eq!(v["b_info"]["max_memkb"], 131072);
        let rec = br#"{"c_info":{"type":"pv","name":"from-libxl"}}"#;
        std::fs::write(libxl_config_path(&dir, 3, &info.handle), rec).unwrap();
        let got = xl_config(&dir, 3, "web1", &info);
        assert_eq!(&got[..got.len() - 1], rec);
        assert_eq!(got.last(), Some(&0));
        // As libxl stores it: with its NUL (`strlen + 1`); one NUL still.
        let mut stored = rec.to_vec();
        stored.push(0);
        std::fs::write(libxl_config_path(&dir, 3, &info.handle), &stored).unwrap();
        assert_eq!(xl_config(&dir, 3, "web1", &info), stored);
        // not JSON: the made-up one
        std::fs::write(libxl_config_path(&dir, 3, &info.handle), b"{oops").unwrap();
        let got = xl_config(&dir, 3, "web1", &info);
        assert!(String::from_utf8_lossy(&got).contains("\"web1\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
