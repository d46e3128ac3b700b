//! [`XenOperations`]: the daemon's long commands on a real Xen: `save`
//! (offline and `--live`) and `restore` of 64-bit PV guests.
//!
//! Restore reads the file's xl configuration (libxl JSON: `c_info.name`,
//! `c_info.uuid`, `c_info.type` = `pv`, `b_info.max_memkb`,
//! `b_info.max_vcpus`), builds the domain with [`PvSink`] from the libxc
//! stream inside, lets it run once the whole image is in, and leaves
//! libxl's record of it (the same JSON) where `xl` looks, so `xl save` and
//! `xl migrate` work on it too. Any failure destroys the half-built domain.
//!
//! The xl configuration written into the file is libxl's own record of the
//! domain, `/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json` (what `xl
//! save` itself reads back through libxl), so `xl restore` rebuilds the
//! domain as it was created. Where there is none (a domain not made by xl),
//! a minimal one is made from what Xen and xenstore say: name, UUID, type,
//! vCPUs and memory.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use relocd_hypercall::{DomId, Hypervisor, XenOps};

use super::backend::{domain_name, XenBackend};
use super::probe::resolve_domain;
use super::pv_sink::{PvCreate, PvSink};
use super::save::{save, SaveOptions};
use crate::api::ProgressSink;
use crate::api::{
    CommandError, DomainInfo, ErrorKind, Phase, Progress, RestoreRequest, SaveRequest,
    TransferSummary,
};
use crate::daemon::backend::Operations;
use crate::session::{ImageDecoder, LibxcDecoder};
use relocd_core::guest::SinkGuest;

/// Where libxl keeps its per-domain records.
pub const LIBXL_USERDATA_DIR: &str = "/var/lib/xen";
/// The longest xl configuration taken from libxl's record.
pub const MAX_CONFIG_LEN: u64 = 1 << 20;

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
            Ok(n)
                if (n as u64) <= MAX_CONFIG_LEN
                    && serde_json::from_slice::<serde_json::Value>(&out).is_ok() =>
            {
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

/// What restore takes from a file's xl configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreConfig {
    /// The raw JSON (without the trailing NUL).
    pub json: Vec<u8>,
    /// The domain to build.
    pub create: PvCreate,
}

/// A UUID from libxl's text form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(u)
}

/// Reads the xl configuration at the start of a save file (bounded by
/// [`MAX_CONFIG_LEN`]).
pub fn read_restore_config(
    file: &mut std::fs::File,
    path: &Path,
) -> Result<RestoreConfig, CommandError> {
    let bad =
        |m: String| CommandError::new(ErrorKind::BadRequest, format!("{}: {m}", path.display()));
    let cfg = crate::engine::file::read_xl_config(file, path, MAX_CONFIG_LEN)?;
    let v: serde_json::Value = serde_json::from_slice(&cfg).map_err(|e| {
        bad(format!(
            "not an xl save file with a JSON configuration ({e})"
        ))
    })?;
    let text = |p: &str| v.pointer(p).and_then(|n| n.as_str());
    let name =
        text("/c_info/name").ok_or_else(|| bad("the configuration has no c_info.name".into()))?;
    if let Some(t) = text("/c_info/type") {
        if t != "pv" {
            return Err(CommandError::new(
                ErrorKind::Refused,
                format!(
                    "{}: a {t} guest; relocd restores PV guests only",
                    path.display()
                ),
            ));
        }
    }
    let devices: Vec<String> = [
        "disks",
        "nics",
        "pcidevs",
        "vfbs",
        "vkbs",
        "vtpms",
        "p9s",
        "pvcallsifs",
        "vdispls",
        "vsnds",
        "channels",
        "usbctrls",
        "usbdevs",
    ]
    .iter()
    .filter_map(|k| {
        let n = v.get(k).and_then(|a| a.as_array()).map_or(0, Vec::len);
        (n > 0).then(|| format!("{k}: {n}"))
    })
    .collect();
    if !devices.is_empty() {
        return Err(CommandError::new(
            ErrorKind::Refused,
            format!(
                "{}: the saved guest has devices ({}); relocd restore does not create device \
                 backends yet, so it would lose them: use xl restore for this file",
                path.display(),
                devices.join(", ")
            ),
        ));
    }
    let uuid = match text("/c_info/uuid") {
        Some(u) => parse_uuid(u).ok_or_else(|| bad(format!("c_info.uuid {u:?} is not a UUID")))?,
        None => [0; 16],
    };
    let max_memkb = v
        .pointer("/b_info/max_memkb")
        .and_then(|n| n.as_u64())
        .ok_or_else(|| bad("the configuration has no b_info.max_memkb".into()))?;
    let vcpus = v
        .pointer("/b_info/max_vcpus")
        .and_then(|n| n.as_u64())
        .unwrap_or(1);
    let vcpus = u32::try_from(vcpus).map_err(|_| bad("b_info.max_vcpus out of range".into()))?;
    Ok(RestoreConfig {
        json: cfg.clone(),
        create: PvCreate {
            name: name.to_owned(),
            uuid,
            max_memkb,
            vcpus,
        },
    })
}

/// The long commands on Xen.
pub struct XenOperations<H> {
    backend: Arc<XenBackend<H>>,
    userdata: PathBuf,
    busy: Mutex<HashSet<DomId>>,
}

/// Releases a domain's busy mark.
struct Busy<'a> {
    set: &'a Mutex<HashSet<DomId>>,
    domid: DomId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.domid);
    }
}

impl<H: Hypervisor + Send + Sync> XenOperations<H> {
    /// Operations over `backend`, with libxl's records in
    /// [`LIBXL_USERDATA_DIR`].
    pub fn new(backend: Arc<XenBackend<H>>) -> Self {
        Self::with_userdata(backend, PathBuf::from(LIBXL_USERDATA_DIR))
    }

    /// Operations over `backend`, with libxl's records in `dir`.
    pub fn with_userdata(backend: Arc<XenBackend<H>>, dir: PathBuf) -> Self {
        XenOperations {
            backend,
            userdata: dir,
            busy: Mutex::new(HashSet::new()),
        }
    }

    fn claim(&self, domid: DomId, name: &str) -> Result<Busy<'_>, CommandError> {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(domid) {
            return Err(CommandError::new(
                ErrorKind::Exists,
                format!("{name} is being saved or migrated already"),
            ));
        }
        Ok(Busy {
            set: &self.busy,
            domid,
        })
    }
}

impl<H: Hypervisor + Send + Sync> XenOperations<H> {
    fn do_restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        let path = &req.file;
        let open = || {
            std::fs::File::open(path).map_err(|e| {
                CommandError::new(
                    ErrorKind::NotFound,
                    format!("cannot open {}: {e}", path.display()),
                )
            })
        };
        let cfg = read_restore_config(&mut open()?, path)?;
        let name = cfg.create.name.clone();
        if self
            .backend
            .try_list()
            .map_err(|e| CommandError::new(ErrorKind::Internal, e.to_string()))?
            .iter()
            .any(|d| d.name == name)
        {
            return Err(CommandError::new(
                ErrorKind::Exists,
                format!("a domain called {name} exists already"),
            ));
        }
        let xen = self.backend.hypervisor();
        let xs = self
            .backend
            .store()
            .map_err(|e| CommandError::new(ErrorKind::Internal, format!("xenstore: {e}")))?;
        let mut sink = PvSink::create(xen, xs, &cfg.create)
            .map_err(|e| CommandError::new(ErrorKind::Internal, format!("creating {name}: {e}")))?;
        let domid = sink.domid();
        let total = cfg.create.max_memkb / 4;
        let result = (|| {
            let mut f = open()?;
            let mut dec = LibxcDecoder::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut read = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(|e| {
                    CommandError::new(
                        ErrorKind::Internal,
                        format!("reading {}: {e}", path.display()),
                    )
                })?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                dec.apply(&buf[..n], &mut sink).map_err(|e| {
                    CommandError::new(ErrorKind::BadRequest, format!("{}: {e}", path.display()))
                })?;
                let mut p = Progress::phase(Phase::Transfer);
                p.pages_sent = dec.pages_applied().min(total);
                p.pages_total = total;
                p.bytes_sent = read;
                if progress.report(&p).is_err() || progress.is_cancelled() {
                    return Err(CommandError::new(ErrorKind::Cancelled, "restore cancelled"));
                }
            }
            if !dec.is_complete() {
                return Err(CommandError::new(
                    ErrorKind::BadRequest,
                    format!("{}: the stream is incomplete", path.display()),
                ));
            }
            sink.complete().map_err(|e| {
                CommandError::new(ErrorKind::BadRequest, format!("{}: {e}", path.display()))
            })?;
            sink.unpause()
                .map_err(|e| CommandError::new(ErrorKind::Internal, format!("unpause: {e}")))
        })();
        if let Err(e) = result {
            if let Err(d) = sink.destroy() {
                tracing::error!(domid, "destroying the half-built {name}: {d}");
            }
            return Err(e);
        }
        let record = libxl_config_path(&self.userdata, domid, &cfg.create.uuid);
        if let Err(e) = std::fs::write(&record, &cfg.json) {
            tracing::warn!(path = %record.display(), "writing libxl's record: {e}");
        }
        tracing::info!(domain = %name, domid, file = %path.display(), "restored");
        self.backend
            .try_list()
            .ok()
            .and_then(|l| l.into_iter().find(|d| d.id == u32::from(domid)))
            .ok_or_else(|| CommandError::new(ErrorKind::Internal, "the restored guest vanished"))
    }
}

impl<H: Hypervisor + Send + Sync> Operations for XenOperations<H> {
    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        self.do_restore(req, progress)
    }

    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let xen = self.backend.hypervisor();
        let store_err = |e: super::xenstore::XenstoreError| {
            CommandError::new(ErrorKind::Internal, format!("xenstore: {e}"))
        };
        let mut xs = self.backend.store().map_err(store_err)?;
        let domid = resolve_domain(xen, Some(&mut xs), &req.domain)
            .map_err(|e| CommandError::new(ErrorKind::NotFound, e.to_string()))?;
        if domid == 0 {
            return Err(CommandError::new(
                ErrorKind::Refused,
                "domain 0 cannot be saved",
            ));
        }
        let name = domain_name(&mut xs, domid).unwrap_or_else(|_| domid.to_string());
        let _busy = self.claim(domid, &name)?;
        let info = xen
            .domain_info(domid)
            .map_err(|e| CommandError::new(ErrorKind::NotFound, e.to_string()))?;
        let config = xl_config(&self.userdata, domid, &name, &info);
        let opts = SaveOptions {
            live: req.live,
            keep_running: req.keep_running,
            bandwidth: req.bandwidth_bytes_per_s,
            policy: Default::default(),
        };
        let (summary, _) = save(xen, xs, domid, &name, &config, &req.file, &opts, progress)?;
        if !req.keep_running {
            let path = libxl_config_path(&self.userdata, domid, &info.handle);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "removing libxl's record: {e}");
                }
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_round_trip() {
        let u = [0xab; 16];
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
        // not JSON: the made-up one
        std::fs::write(libxl_config_path(&dir, 3, &info.handle), b"{oops").unwrap();
        let got = xl_config(&dir, 3, "web1", &info);
        assert!(String::from_utf8_lossy(&got).contains("\"web1\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn restore_refuses_a_guest_with_devices_and_reads_a_plain_one() {
        use relocd_core::stream::domain::{DomainHeaderRepr, DomainType};
        use relocd_core::stream::writer::{Sink, StreamWriter};
        struct Bytes(Vec<u8>);
        impl Sink for Bytes {
            type Error = core::convert::Infallible;
            fn write_all(&mut self, b: &[u8]) -> Result<(), Self::Error> {
                self.0.extend_from_slice(b);
                Ok(())
            }
        }
        let dir = std::env::temp_dir().join(format!("relocd-rcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, cfg: &str| {
            let mut c = cfg.as_bytes().to_vec();
            c.push(0);
            let d = DomainHeaderRepr {
                domain_type: DomainType::X86Pv,
                page_shift: 12,
                xen_major: 4,
                xen_minor: 17,
            };
            // the headers are enough: the configuration comes first
            let mut sw = StreamWriter::new_xl(Bytes(Vec::new()), &c, d).unwrap();
            let bytes = std::mem::take(&mut sw.sink_mut().0);
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let plain = write(
            "plain.save",
            r#"{"c_info":{"type":"pv","name":"web1","uuid":"12345678-9abc-def0-0123-456789abcdef"},"b_info":{"max_memkb":131072,"max_vcpus":2},"disks":[],"nics":[]}"#,
        );
        let c = read_restore_config(&mut std::fs::File::open(&plain).unwrap(), &plain).unwrap();
        assert_eq!(c.create.name, "web1");
        assert_eq!(c.create.max_memkb, 131072);
        assert_eq!(c.create.vcpus, 2);
        assert_eq!(c.create.uuid[0], 0x12);
        let nic = write(
            "nic.save",
            r#"{"c_info":{"type":"pv","name":"web1"},"b_info":{"max_memkb":131072},"nics":[{"mac":"00:16:3e:00:00:01"}]}"#,
        );
        let e = read_restore_config(&mut std::fs::File::open(&nic).unwrap(), &nic).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.message.contains("nics: 1"), "{e:?}");
        let hvm = write(
            "hvm.save",
            r#"{"c_info":{"type":"hvm","name":"w"},"b_info":{"max_memkb":1024}}"#,
        );
        let e = read_restore_config(&mut std::fs::File::open(&hvm).unwrap(), &hvm).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
