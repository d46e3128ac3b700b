//! The devices a guest's configuration names: libxl's JSON domain
//! configuration (what `xl save` files carry and what a migration sends
//! as `GuestConfig`) read into network interfaces and disks, for the
//! admission checks and for the backends that recreate them.
//!
//! Only what relocd recreates is modelled: PV network interfaces (`vif`,
//! netback) and disks served by blkback (`phy`: a block device, or a file
//! through the `block` script's loop device). Any other device kind the
//! configuration lists is named in [`GuestDevices::unsupported`], so the
//! guest is refused with the list rather than built without them. Fields
//! libxl fills in with defaults (bridge `xenbr0`, script `vif-bridge`,
//! devid by position) are filled in the same way.

use serde_json::Value;

/// Where Xen's hotplug scripts live (`libxl__xen_script_dir_path`).
pub const XEN_SCRIPT_DIR: &str = "/etc/xen/scripts";

/// The device lists of libxl's domain configuration relocd does not
/// recreate, with the name a refusal gives them.
const OTHER_DEVICES: &[(&str, &str)] = &[
    ("pcidevs", "pci (PCI passthrough cannot migrate)"),
    ("dtdevs", "dtdev (device-tree passthrough)"),
    ("vfbs", "vfb"),
    ("vkbs", "vkb"),
    ("vtpms", "vtpm"),
    ("p9s", "9pfs"),
    ("pvcallsifs", "pvcalls"),
    ("vdispls", "vdispl"),
    ("vsnds", "vsnd"),
    ("channels", "channel"),
    ("usbctrls", "usbctrl"),
    ("usbdevs", "usbdev"),
    ("virtios", "virtio"),
];

/// A network interface (`vif`) as libxl configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// Its device id (the frontend's `handle`).
    pub devid: u32,
    /// Its MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// The bridge its backend interface joins.
    pub bridge: String,
    /// The hotplug script, as an absolute path.
    pub script: String,
    /// Addresses for the script (`ip=`), if any.
    pub ip: Option<String>,
    /// The gateway device for routed setups (`gatewaydev=`), if any.
    pub gatewaydev: Option<String>,
    /// The backend interface's name, if the configuration sets one.
    pub vifname: Option<String>,
    /// MTU, if not the default 1500.
    pub mtu: Option<u32>,
}

/// A disk (`vbd`) as libxl configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Its device id (`virtual-device`), from the virtual device name.
    pub devid: u32,
    /// The name the guest sees (`xvda`).
    pub vdev: String,
    /// What backs it: a block device or a file (`params`).
    pub target: String,
    /// Writable by the guest.
    pub readwrite: bool,
    /// A CD-ROM rather than a disk.
    pub cdrom: bool,
    /// Removable media.
    pub removable: bool,
    /// Discard passed through.
    pub discard: bool,
    /// The backend may use direct I/O.
    pub direct_io_safe: bool,
    /// The hotplug script, as an absolute path.
    pub script: String,
}

/// The devices a configuration names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestDevices {
    /// Network interfaces.
    pub nics: Vec<Nic>,
    /// Disks.
    pub disks: Vec<Disk>,
    /// Devices relocd does not recreate, named for a refusal
    /// (`vfb 0`, `pci 1`, `vbd xvdb (qdisk backend)`).
    pub unsupported: Vec<String>,
}

/// A configuration that does not say what its devices are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not an object.
    #[error("the guest's configuration is not libxl's JSON: {0}")]
    NotJson(String),
    /// A device entry without something it needs, or with a value out of
    /// range.
    #[error("{device}: {problem}")]
    Device {
        /// The device, as `vif 0` or `vbd xvda`.
        device: String,
        /// What is wrong.
        problem: String,
    },
}

impl GuestDevices {
    /// Reads the devices of libxl's JSON domain configuration (a trailing
    /// NUL, as save files carry, is allowed).
    pub fn from_libxl_json(bytes: &[u8]) -> Result<GuestDevices, ConfigError> {
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::NotJson(e.to_string()))?;
        let Some(top) = v.as_object() else {
            return Err(ConfigError::NotJson("not an object".into()));
        };
        let mut out = GuestDevices::default();
        for (i, n) in list(top.get("nics")).iter().enumerate() {
            out.nics.push(nic(i, n)?);
        }
        for d in list(top.get("disks")) {
            match disk(d)? {
                Ok(disk) => out.disks.push(disk),
                Err(name) => out.unsupported.push(name),
            }
        }
        for (key, name) in OTHER_DEVICES {
            let n = list(top.get(*key)).len();
            for i in 0..n {
                out.unsupported.push(format!("{name} {i}"));
            }
        }
        Ok(out)
    }

    /// Whether the configuration names no device at all.
    pub fn is_empty(&self) -> bool {
        self.nics.is_empty() && self.disks.is_empty() && self.unsupported.is_empty()
    }

    /// Every device, named as refusals and logs name them (`vif 0`,
    /// `vbd xvda`).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .nics
            .iter()
            .map(|n| format!("vif {}", n.devid))
            .collect();
        v.extend(self.disks.iter().map(|d| format!("vbd {}", d.vdev)));
        v.extend(self.unsupported.iter().cloned());
        v
    }
}

fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// libxl's integers and booleans come as numbers, `true`/`false`, or (for
/// its defbools) `"True"`/`"False"`.
fn flag(o: &Value, key: &str, default: bool) -> bool {
    match o.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        _ => default,
    }
}

fn script_path(script: Option<&str>, default: &str) -> String {
    let s = script.unwrap_or(default);
    if s.starts_with('/') {
        s.to_owned()
    } else {
        format!("{XEN_SCRIPT_DIR}/{s}")
    }
}

fn nic(index: usize, n: &Value) -> Result<Nic, ConfigError> {
    let devid = match n.get("devid").and_then(Value::as_i64) {
        Some(d) if d >= 0 => u32::try_from(d).ok(),
        _ => u32::try_from(index).ok(),
    };
    let Some(devid) = devid else {
        return Err(ConfigError::Device {
            device: format!("vif {index}"),
            problem: "device id out of range".into(),
        });
    };
    let name = format!("vif {devid}");
    let bad = |problem: &str| ConfigError::Device {
        device: name.clone(),
        problem: problem.into(),
    };
    let mac = text(n, "mac").ok_or_else(|| bad("no MAC address in the configuration"))?;
    if !is_mac(mac) {
        return Err(bad("its MAC address is not xx:xx:xx:xx:xx:xx"));
    }
    let bridge = text(n, "bridge").unwrap_or("xenbr0");
    if !is_ifname(bridge) {
        return Err(bad("its bridge name is not an interface name"));
    }
    let vifname = text(n, "ifname").map(str::to_owned);
    if vifname.as_deref().is_some_and(|v| !is_ifname(v)) {
        return Err(bad("its vifname is not an interface name"));
    }
    if let Some(t) = text(n, "nictype") {
        if t != "vif" && t != "vif_ioemu" {
            return Err(bad(
                "only PV network interfaces (nictype vif) are recreated",
            ));
        }
    }
    let mtu = match n.get("mtu").and_then(Value::as_u64) {
        None | Some(0) | Some(1500) => None,
        Some(m) => Some(u32::try_from(m).map_err(|_| bad("MTU out of range"))?),
    };
    Ok(Nic {
        devid,
        mac: mac.to_ascii_lowercase(),
        bridge: bridge.to_owned(),
        script: script_path(text(n, "script"), "vif-bridge"),
        ip: text(n, "ip").map(str::to_owned),
        gatewaydev: text(n, "gatewaydev").map(str::to_owned),
        vifname,
        mtu,
    })
}

/// A disk relocd recreates, or the name of one it does not.
fn disk(d: &Value) -> Result<Result<Disk, String>, ConfigError> {
    let Some(vdev) = text(d, "vdev") else {
        return Err(ConfigError::Device {
            device: "vbd".into(),
            problem: "no virtual device name (vdev)".into(),
        });
    };
    let name = format!("vbd {vdev}");
    let Some(devid) = vdev_number(vdev) else {
        return Err(ConfigError::Device {
            device: name,
            problem: "its virtual device name is not one Xen knows (xvda, sda, hda, 51712)".into(),
        });
    };
    let backend = text(d, "backend").unwrap_or("unknown");
    if !matches!(backend, "phy" | "unknown") {
        return Ok(Err(format!("{name} ({backend} backend)")));
    }
    if d.get("backend_domid").and_then(Value::as_u64).unwrap_or(0) != 0
        || text(d, "backend_domname").is_some()
    {
        return Ok(Err(format!("{name} (backend in a driver domain)")));
    }
    let format = text(d, "format").unwrap_or("raw");
    if !matches!(format, "raw" | "unknown" | "empty") {
        return Ok(Err(format!("{name} ({format} image)")));
    }
    let cdrom = flag(d, "is_cdrom", false);
    let target = text(d, "pdev_path").unwrap_or("");
    if target.is_empty() && !cdrom {
        return Err(ConfigError::Device {
            device: name,
            problem: "no target (pdev_path)".into(),
        });
    }
    if target.is_empty() {
        return Ok(Err(format!("{name} (empty CD-ROM drive)")));
    }
    Ok(Ok(Disk {
        devid,
        vdev: vdev.to_owned(),
        target: target.to_owned(),
        readwrite: flag(d, "readwrite", false),
        cdrom,
        removable: flag(d, "removable", false),
        discard: flag(d, "discard_enable", true),
        direct_io_safe: flag(d, "direct_io_safe", false),
        script: script_path(text(d, "script"), "block"),
    }))
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Linux interface name: 1 to 15 bytes, no `/`, whitespace or `:`.
pub fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The device number of a virtual disk name, as Xen's toolstack computes
/// it: `xvdX[N]` (202 major, or the extended form past 15 disks or
/// partitions), `sdX[N]`, `hdX[N]`, or a plain number.
pub fn vdev_number(vdev: &str) -> Option<u32> {
    if let Some(rest) = vdev.strip_prefix("xvd") {
        let (disk, part) = letters_and_partition(rest, (1 << 20) - 1, 255)?;
        return Some(if disk <= 15 && part <= 15 {
            (202 << 8) | (disk << 4) | part
        } else {
            (1 << 28) | (disk << 8) | part
        });
    }
    if let Some(rest) = vdev.strip_prefix("sd") {
        let (disk, part) = letters_and_partition(rest, 15, 15)?;
        return Some((8 << 8) | (disk << 4) | part);
    }
    if let Some(rest) = vdev.strip_prefix("hd") {
        let (disk, part) = letters_and_partition(rest, 3, 63)?;
        let major = if disk < 2 { 3 } else { 22 };
        return Some((major << 8) | ((disk & 1) << 6) | part);
    }
    if !vdev.is_empty() && vdev.bytes().all(|b| b.is_ascii_digit()) {
        return vdev.parse::<u32>().ok().filter(|n| *n <= i32::MAX as u32);
    }
    None
}

/// `a`..`z`, `aa`.. as a base-26 disk index (`a` = 0, `aa` = 26), then an
/// optional partition number without a leading zero.
fn letters_and_partition(s: &str, max_disk: u32, max_part: u32) -> Option<(u32, u32)> {
    let letters = s.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let mut disk: i64 = -1;
    for b in s[..letters].bytes() {
        disk = (disk + 1) * 26 + i64::from(b - b'a');
        if disk > i64::from(max_disk) {
            return None;
        }
    }
    let part = &s[letters..];
    let part = if part.is_empty() {
        0
    } else if part.starts_with('0') || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    } else {
        part.parse::<u32>().ok().filter(|p| *p <= max_part)?
    };
    Some((u32::try_from(disk).ok()?, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_disk_names_number_as_xen_numbers_them() {
        assert_eq!(vdev_number("xvda"), Some(51712));
        assert_eq!(vdev_number("xvdb"), Some(51728));
        assert_eq!(vdev_number("xvda1"), Some(51713));
        assert_eq!(vdev_number("xvdp15"), Some((202 << 8) | (15 << 4) | 15));
        // Past 15 disks: the extended form.
        assert_eq!(vdev_number("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(vdev_number("xvdaa"), Some((1 << 28) | (26 << 8)));
        assert_eq!(vdev_number("sda"), Some(2048));
        assert_eq!(vdev_number("hdc"), Some(22 << 8));
        assert_eq!(vdev_number("hdb1"), Some((3 << 8) | (1 << 6) | 1));
        assert_eq!(vdev_number("51712"), Some(51712));
        for bad in [
            "", "xvd", "xvda01", "xvdA", "vda", "sdq", "xvda256", "-1", "hde",
        ] {
            assert_eq!(vdev_number(bad), None, "{bad}");
        }
    }

    const XL: &str = r#"{
        "c_info": {"type": "pv", "name": "e2e-dev"},
        "b_info": {"max_memkb": 131072},
        "disks": [
            {"pdev_path": "/dev/vdb", "vdev": "xvda", "backend": "phy", "format": "raw",
             "readwrite": 1, "discard_enable": "True"},
            {"pdev_path": "/srv/img/data.raw", "vdev": "xvdb", "format": "raw",
             "script": "block-custom", "removable": 0, "readwrite": 0}
        ],
        "nics": [
            {"devid": 0, "mac": "00:16:3E:E2:E0:01", "bridge": "xenbr0",
             "script": "/etc/xen/scripts/vif-bridge", "nictype": "vif"},
            {"mac": "00:16:3e:e2:e0:02"}
        ]
    }"#;

    #[test]
    fn an_xl_configuration_gives_its_disks_and_interfaces() {
        let mut bytes = XL.as_bytes().to_vec();
        bytes.push(0);
        let d = GuestDevices::from_libxl_json(&bytes).unwrap();
        assert!(d.unsupported.is_empty());
        assert_eq!(d.names(), ["vif 0", "vif 1", "vbd xvda", "vbd xvdb"]);
        assert_eq!(
            d.nics[0],
            Nic {
                devid: 0,
                mac: "00:16:3e:e2:e0:01".into(),
                bridge: "xenbr0".into(),
                script: "/etc/xen/scripts/vif-bridge".into(),
                ip: None,
                gatewaydev: None,
                vifname: None,
                mtu: None,
            }
        );
        // libxl's defaults: devid by position, bridge xenbr0, vif-bridge.
        assert_eq!(d.nics[1].devid, 1);
        assert_eq!(d.nics[1].bridge, "xenbr0");
        assert_eq!(d.nics[1].script, "/etc/xen/scripts/vif-bridge");
        assert_eq!(d.disks[0].devid, 51712);
        assert_eq!(d.disks[0].target, "/dev/vdb");
        assert!(d.disks[0].readwrite && d.disks[0].discard && !d.disks[0].cdrom);
        assert_eq!(d.disks[0].script, "/etc/xen/scripts/block");
        assert_eq!(d.disks[1].script, "/etc/xen/scripts/block-custom");
        assert!(!d.disks[1].readwrite);
    }

    #[test]
    fn devices_relocd_does_not_recreate_are_listed() {
        let cfg = r#"{"c_info":{"name":"g"},
            "disks":[{"pdev_path":"/x.qcow2","vdev":"xvda","backend":"qdisk","format":"qcow2"},
                     {"pdev_path":"/x.raw","vdev":"xvdb","format":"qcow2"},
                     {"vdev":"xvdc","is_cdrom":1,"format":"empty"}],
            "pcidevs":[{"dev":1}], "vfbs":[{}], "vkbs":[{}], "channels":[]}"#;
        let d = GuestDevices::from_libxl_json(cfg.as_bytes()).unwrap();
        assert!(d.disks.is_empty());
        assert_eq!(
            d.unsupported,
            [
                "vbd xvda (qdisk backend)",
                "vbd xvdb (qcow2 image)",
                "vbd xvdc (empty CD-ROM drive)",
                "pci (PCI passthrough cannot migrate) 0",
                "vfb 0",
                "vkb 0"
            ]
        );
        assert!(!d.is_empty());
        let none = GuestDevices::from_libxl_json(br#"{"c_info":{"name":"g"}}"#).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn a_configuration_that_cannot_be_read_is_an_error_not_a_guest_without_devices() {
        for (cfg, what) in [
            (&b"not json"[..], "not libxl's JSON"),
            (b"[1,2]", "not an object"),
            (br#"{"nics":[{"devid":0}]}"#, "vif 0: no MAC"),
            (br#"{"nics":[{"mac":"00:16:3e:00:00"}]}"#, "vif 0: its MAC"),
            (
                br#"{"nics":[{"mac":"00:16:3e:00:00:01","bridge":"a/b"}]}"#,
                "bridge name",
            ),
            (
                br#"{"nics":[{"mac":"00:16:3e:00:00:01","nictype":"ioemu"}]}"#,
                "nictype",
            ),
            (
                br#"{"disks":[{"pdev_path":"/x"}]}"#,
                "no virtual device name",
            ),
            (br#"{"disks":[{"vdev":"vda","pdev_path":"/x"}]}"#, "vbd vda"),
            (br#"{"disks":[{"vdev":"xvda"}]}"#, "vbd xvda: no target"),
        ] {
            let e = GuestDevices::from_libxl_json(cfg).unwrap_err();
            assert!(e.to_string().contains(what), "{e} / {what}");
        }
    }
}
