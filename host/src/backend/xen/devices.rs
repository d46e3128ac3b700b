//! A guest's network interfaces and disks on Xen, as libxl sets them up:
//! the admission checks, the backend and frontend xenstore trees, the
//! hotplug scripts, the teardown.
//!
//! The layout is libxl's (`libxl__device_generic_add`):
//!
//! - backend `/local/domain/0/backend/<vif|vbd>/<domid>/<devid>`, owned by
//!   dom0, readable by the guest, with `frontend`, `frontend-id`,
//!   `online`, `state` and the device's own keys (a vif's `mac`, `bridge`,
//!   `script`, `handle`, `type`; a vbd's `params`, `script`, `mode`,
//!   `dev`, `type`, `device-type`, ...);
//! - frontend `/local/domain/<domid>/device/<vif|vbd>/<devid>`, owned by
//!   the guest, readable by dom0, with `backend`, `backend-id`, `state` and
//!   the device's keys (`handle` and `mac`; `virtual-device`,
//!   `device-type`, `protocol`), a vif's `mtu` read-only to the guest;
//! - libxl's copy of the backend's keys under
//!   `/libxl/<domid>/device/<kind>/<devid>`, with `frontend` and
//!   `backend`, which `xl` reads to take the devices down later.
//!
//! Each device's hotplug script runs as libxl runs it (`libxl_linux.c`),
//! once the backend driver has reached InitWait: `SCRIPT online
//! type_if=vif` / `SCRIPT offline type_if=vif` for a vif, `SCRIPT add` /
//! `SCRIPT remove` for a vbd, with `script`, `XENBUS_TYPE`, `XENBUS_PATH`
//! (`backend/<kind>/<domid>/<devid>`), `XENBUS_BASE_PATH` (`backend`) in
//! the environment, and for a vif `netdev` (its `gatewaydev`) and `vif`
//! (the backend interface's name, `vif<domid>.<devid>` unless the
//! configuration names it). A site's own scripts (the configuration's
//! `script=`) run the same way.
//!
//! Taking a device down (after a migration's commit or a destroying save,
//! or when a half-built copy goes): `online` 0 and `state` Closing, a wait
//! for the backend driver to reach Closed, the script's removal, then the
//! three trees removed.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relocd_hypercall::DomId;

use super::xenstore::{Access, Perm, Transport, Xenstore, XenstoreError};
use crate::devices::{Disk, GuestDevices, Nic};
use crate::engine::Refusal;

/// Xenbus states (`xen/include/public/io/xenbus.h`).
pub mod state {
    /// The toolstack wrote the device.
    pub const INITIALISING: u32 = 1;
    /// The backend driver waits for its frontend (and its hotplug script).
    pub const INIT_WAIT: u32 = 2;
    /// Connected.
    pub const CONNECTED: u32 = 4;
    /// Being taken down.
    pub const CLOSING: u32 = 5;
    /// Down.
    pub const CLOSED: u32 = 6;
}

/// The domain the backends run in: relocd builds devices served by dom0's
/// netback and blkback.
const BACKEND_DOMID: DomId = 0;

/// What the host around the backends offers: where interfaces are found,
/// whether backend drivers answer in xenstore, how long to wait for them.
#[derive(Clone, Debug)]
pub struct DeviceHost {
    /// `/sys/class/net`: a bridge is `<net_root>/<name>/bridge`.
    pub net_root: PathBuf,
    /// Whether to wait for the backend drivers' states (InitWait before a
    /// script runs and before the guest is unpaused, Closed before a
    /// removal). Off only where no driver runs (a fake xenstore).
    pub wait_for_drivers: bool,
    /// The longest wait for a backend driver's state.
    pub state_timeout: Duration,
    /// The longest a hotplug script may run (libxl: 40 s).
    pub script_timeout: Duration,
}

impl Default for DeviceHost {
    fn default() -> Self {
        DeviceHost {
            net_root: PathBuf::from("/sys/class/net"),
            wait_for_drivers: true,
            state_timeout: Duration::from_secs(10),
            script_timeout: Duration::from_secs(40),
        }
    }
}

/// A device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Writing its trees failed.
    #[error("{device}: xenstore: {error}")]
    Store {
        /// `vif 0`, `vbd xvda`.
        device: String,
        /// The store's error.
        error: XenstoreError,
    },
    /// The backend driver did not reach the state in time.
    #[error("{device}: the backend driver did not reach state {want} within {secs} s (state {seen}; is {driver} loaded?)")]
    Driver {
        /// The device.
        device: String,
        /// The state waited for.
        want: u32,
        /// The last state seen (0: none).
        seen: u32,
        /// The wait.
        secs: u64,
        /// `xen-netback` or `xen-blkback`.
        driver: &'static str,
    },
    /// The set-up's thread ended without an answer.
    #[error("the devices' set-up ended without an answer")]
    SetUpLost,
    /// Its hotplug script failed.
    #[error("{device}: hotplug script {script} {action} failed: {why}")]
    Script {
        /// The device.
        device: String,
        /// The script.
        script: String,
        /// `online`, `add`, ...
        action: &'static str,
        /// Its exit status and what it said.
        why: String,
    },
}

/// One device as xenstore and the scripts name it.
#[derive(Clone, Debug)]
struct Dev {
    kind: &'static str,
    devid: u32,
    /// `vif 0`, `vbd xvda`.
    label: String,
    script: String,
    /// The vif's backend interface.
    vif: Option<String>,
    gatewaydev: Option<String>,
}

impl Dev {
    fn backend(&self, domid: DomId) -> String {
        format!(
            "/local/domain/{BACKEND_DOMID}/backend/{}/{domid}/{}",
            self.kind, self.devid
        )
    }

    fn frontend(&self, domid: DomId) -> String {
        format!("/local/domain/{domid}/device/{}/{}", self.kind, self.devid)
    }

    fn libxl(&self, domid: DomId) -> String {
        format!("/libxl/{domid}/device/{}/{}", self.kind, self.devid)
    }

    fn driver(&self) -> &'static str {
        if self.kind == "vif" {
            "xen-netback"
        } else {
            "xen-blkback"
        }
    }
}

fn nic_dev(domid: DomId, n: &Nic) -> Dev {
    Dev {
        kind: "vif",
        devid: n.devid,
        label: format!("vif {}", n.devid),
        script: n.script.clone(),
        vif: Some(
            n.vifname
                .clone()
                .unwrap_or_else(|| format!("vif{domid}.{}", n.devid)),
        ),
        gatewaydev: n.gatewaydev.clone(),
    }
}

fn disk_dev(d: &Disk) -> Dev {
    Dev {
        kind: "vbd",
        devid: d.devid,
        label: format!("vbd {}", d.vdev),
        script: d.script.clone(),
        vif: None,
        gatewaydev: None,
    }
}

/// Whether `path` is a file its owner, group or others may execute.
fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks, before anything is built, that every device of `name` can be
/// set up here: each vif's bridge exists, each vbd's target is there and
/// opens as the guest will use it (read-write or read-only), each hotplug
/// script is there and executable. The refusal names the device and the
/// reason.
pub fn check(host: &DeviceHost, name: &str, devs: &GuestDevices) -> Result<(), Refusal> {
    if !devs.unsupported.is_empty() {
        return Err(Refusal::unsupported_devices(
            name,
            &devs.unsupported,
            "relocd does not recreate (it moves vif and phy vbd devices)",
        ));
    }
    for n in &devs.nics {
        let label = format!("vif {}", n.devid);
        if !host.net_root.join(&n.bridge).join("bridge").is_dir() {
            return Err(Refusal::device(
                name,
                &format!("{label}: bridge {} does not exist here", n.bridge),
            ));
        }
        if !executable(Path::new(&n.script)) {
            return Err(Refusal::device(
                name,
                &format!("{label}: hotplug script {} is missing here", n.script),
            ));
        }
    }
    for d in &devs.disks {
        let label = format!("vbd {}", d.vdev);
        if !executable(Path::new(&d.script)) {
            return Err(Refusal::device(
                name,
                &format!("{label}: hotplug script {} is missing here", d.script),
            ));
        }
        // A site's own script takes targets of its own kind (an iSCSI
        // name, a volume): only Xen's `block` script's are files here.
        if Path::new(&d.script).file_name() != Some("block".as_ref()) {
            continue;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(d.readwrite)
            .open(&d.target);
        match opened {
            Ok(f) => {
                let t = f.metadata().map(|m| m.file_type());
                use std::os::unix::fs::FileTypeExt;
                if !t.is_ok_and(|t| t.is_block_device() || t.is_file()) {
                    return Err(Refusal::device(
                        name,
                        &format!("{label}: {} is neither a block device nor a file", d.target),
                    ));
                }
            }
            Err(e) => {
                return Err(Refusal::device(
                    name,
                    &format!(
                        "{label}: {} cannot be opened {}here: {e}",
                        d.target,
                        if d.readwrite { "read-write " } else { "" }
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn store_err(dev: &Dev) -> impl Fn(XenstoreError) -> DeviceError + '_ {
    move |error| DeviceError::Store {
        device: dev.label.clone(),
        error,
    }
}

/// Writes the backend, frontend and libxl trees of one device.
fn write_trees<T: Transport>(
    xs: &mut Xenstore<T>,
    domid: DomId,
    dev: &Dev,
    back: &[(&str, String)],
    front: &[(&str, String)],
    ro_front: &[(&str, String)],
) -> Result<(), DeviceError> {
    let e = store_err(dev);
    let (bpath, fpath, lpath) = (dev.backend(domid), dev.frontend(domid), dev.libxl(domid));
    let front_perms = [
        Perm {
            domid,
            access: Access::None,
        },
        Perm {
            domid: BACKEND_DOMID,
            access: Access::Read,
        },
    ];
    let back_perms = [
        Perm {
            domid: BACKEND_DOMID,
            access: Access::None,
        },
        Perm {
            domid,
            access: Access::Read,
        },
    ];
    let _ = xs.rm(&lpath);
    xs.write(&format!("{lpath}/frontend"), fpath.as_bytes())
        .map_err(&e)?;
    xs.write(&format!("{lpath}/backend"), bpath.as_bytes())
        .map_err(&e)?;
    let _ = xs.rm(&fpath);
    xs.mkdir(&fpath).map_err(&e)?;
    xs.set_perms(&fpath, &front_perms).map_err(&e)?;
    let mut fwrite = |k: &str, v: &str, perms: &[Perm]| -> Result<(), DeviceError> {
        let p = format!("{fpath}/{k}");
        xs.write(&p, v.as_bytes()).map_err(&e)?;
        xs.set_perms(&p, perms).map_err(&e)
    };
    fwrite("backend", &bpath, &front_perms)?;
    for (k, v) in front {
        fwrite(k, v, &front_perms)?;
    }
    for (k, v) in ro_front {
        fwrite(k, v, &back_perms)?;
    }
    let _ = xs.rm(&bpath);
    xs.mkdir(&bpath).map_err(&e)?;
    xs.set_perms(&bpath, &back_perms).map_err(&e)?;
    xs.write(&format!("{bpath}/frontend"), fpath.as_bytes())
        .map_err(&e)?;
    for (k, v) in back {
        xs.write(&format!("{bpath}/{k}"), v.as_bytes())
            .map_err(&e)?;
        xs.write(&format!("{lpath}/{k}"), v.as_bytes())
            .map_err(&e)?;
    }
    Ok(())
}

fn nic_trees<T: Transport>(
    xs: &mut Xenstore<T>,
    domid: DomId,
    n: &Nic,
) -> Result<Dev, DeviceError> {
    let dev = nic_dev(domid, n);
    let mut back: Vec<(&str, String)> = vec![
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("state", state::INITIALISING.to_string()),
        ("script", n.script.clone()),
        ("mac", n.mac.clone()),
    ];
    if let Some(v) = &n.vifname {
        back.push(("vifname", v.clone()));
    }
    if let Some(ip) = &n.ip {
        back.push(("ip", ip.clone()));
    }
    if let Some(g) = &n.gatewaydev {
        back.push(("gatewaydev", g.clone()));
    }
    if let Some(m) = n.mtu {
        back.push(("mtu", m.to_string()));
    }
    back.extend([
        ("bridge", n.bridge.clone()),
        ("handle", n.devid.to_string()),
        ("type", "vif".into()),
    ]);
    let front = [
        ("backend-id", BACKEND_DOMID.to_string()),
        ("state", state::INITIALISING.to_string()),
        ("handle", n.devid.to_string()),
        ("mac", n.mac.clone()),
    ];
    let ro_front = [("mtu", n.mtu.unwrap_or(1500).to_string())];
    write_trees(xs, domid, &dev, &back, &front, &ro_front)?;
    Ok(dev)
}

fn disk_trees<T: Transport>(
    xs: &mut Xenstore<T>,
    domid: DomId,
    d: &Disk,
) -> Result<Dev, DeviceError> {
    let dev = disk_dev(d);
    let device_type = if d.cdrom { "cdrom" } else { "disk" };
    let mut back: Vec<(&str, String)> = vec![
        ("params", d.target.clone()),
        ("script", d.script.clone()),
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("removable", u8::from(d.removable).to_string()),
        ("bootable", "1".into()),
        ("state", state::INITIALISING.to_string()),
        ("dev", d.vdev.clone()),
        ("type", "phy".into()),
        ("mode", if d.readwrite { "w" } else { "r" }.into()),
        ("device-type", device_type.into()),
    ];
    if d.direct_io_safe {
        back.push(("direct-io-safe", "1".into()));
    }
    back.push(("discard-enable", u8::from(d.discard).to_string()));
    let front = [
        ("backend-id", BACKEND_DOMID.to_string()),
        ("state", state::INITIALISING.to_string()),
        ("virtual-device", d.devid.to_string()),
        ("device-type", device_type.into()),
        ("protocol", "x86_64-abi".into()),
    ];
    write_trees(xs, domid, &dev, &back, &front, &[])?;
    Ok(dev)
}

/// The state a backend's `state` node holds (0: none, or not a number).
fn backend_state<T: Transport>(xs: &mut Xenstore<T>, path: &str) -> u32 {
    xs.read_string(&format!("{path}/state"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the backend's state satisfies `done`; returns the last
/// state seen, or `Err` with it when the wait ran out.
fn wait_state<T: Transport>(
    xs: &mut Xenstore<T>,
    path: &str,
    timeout: Duration,
    done: impl Fn(u32) -> bool,
) -> Result<u32, u32> {
    let until = Instant::now() + timeout;
    loop {
        let s = backend_state(xs, path);
        if done(s) {
            return Ok(s);
        }
        if Instant::now() >= until {
            return Err(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `dev`'s hotplug script for `action` as libxl does, with a
/// deadline; the error carries its exit status and its last words (its
/// standard error, or the `hotplug-error` it wrote).
fn run_script<T: Transport>(
    xs: &mut Xenstore<T>,
    host: &DeviceHost,
    domid: DomId,
    dev: &Dev,
    add: bool,
) -> Result<(), DeviceError> {
    let action: &'static str = match (dev.kind, add) {
        ("vif", true) => "online",
        ("vif", false) => "offline",
        (_, true) => "add",
        (_, false) => "remove",
    };
    let fail = |why: String| DeviceError::Script {
        device: dev.label.clone(),
        script: dev.script.clone(),
        action,
        why,
    };
    let mut cmd = Command::new(&dev.script);
    cmd.arg(action);
    if dev.kind == "vif" {
        cmd.arg("type_if=vif");
    }
    cmd.env("script", &dev.script)
        .env("XENBUS_TYPE", dev.kind)
        .env(
            "XENBUS_PATH",
            format!("backend/{}/{domid}/{}", dev.kind, dev.devid),
        )
        .env("XENBUS_BASE_PATH", "backend");
    if let Some(v) = &dev.vif {
        cmd.env("netdev", dev.gatewaydev.as_deref().unwrap_or(""))
            .env("vif", v);
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    // Its standard error, read aside so a talkative script cannot block.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut out);
        }
        out
    });
    let until = Instant::now() + host.script_timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "still running after {} s; killed",
                    host.script_timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(format!("waiting for it: {e}")),
        }
    };
    let said = reader.join().unwrap_or_default();
    let said = String::from_utf8_lossy(&said);
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => {
            let written = xs
                .read_string(&format!("{}/hotplug-error", dev.backend(domid)))
                .unwrap_or_default();
            let words = if written.is_empty() { last } else { &written };
            Err(fail(format!("{s}: {}", words.trim())))
        }
        Err(why) => Err(fail(why)),
    }
}

/// Builds every device of `devs` for the new, paused domain `domid`:
/// their trees, then, each backend driver at InitWait, its hotplug
/// script. On an error what was built stays for [`remove_all`] (the
/// domain's destruction) to take down.
pub fn add<T: Transport>(
    xs: &mut Xenstore<T>,
    host: &DeviceHost,
    domid: DomId,
    devs: &GuestDevices,
) -> Result<(), DeviceError> {
    let mut built = Vec::new();
    for n in &devs.nics {
        built.push(nic_trees(xs, domid, n)?);
    }
    for d in &devs.disks {
        built.push(disk_trees(xs, domid, d)?);
    }
    for dev in &built {
        if host.wait_for_drivers {
            let path = dev.backend(domid);
            wait_state(xs, &path, host.state_timeout, |s| s >= state::INIT_WAIT).map_err(
                |seen| DeviceError::Driver {
                    device: dev.label.clone(),
                    want: state::INIT_WAIT,
                    seen,
                    secs: host.state_timeout.as_secs(),
                    driver: dev.driver(),
                },
            )?;
        }
        run_script(xs, host, domid, dev, true)?;
        tracing::info!(domid, device = %dev.label, script = %dev.script, "device backend ready");
    }
    Ok(())
}

/// The devices dom0 serves `domid` (its backend directories), as
/// `(kind, devid)`.
pub fn backends<T: Transport>(xs: &mut Xenstore<T>, domid: DomId) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for kind in ["vif", "vbd"] {
        let base = format!("/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}");
        for id in xs.directory(&base).unwrap_or_default() {
            if let Ok(devid) = id.parse() {
                out.push((kind.to_owned(), devid));
            }
        }
    }
    out
}

/// Takes down every device dom0 serves `domid` (the domain is destroyed,
/// or about to be): `online` 0 and Closing, the wait for Closed, the
/// script's removal, the trees removed. Failures are logged: the devices
/// go whatever their scripts say.
pub fn remove_all<T: Transport>(xs: &mut Xenstore<T>, host: &DeviceHost, domid: DomId) {
    let found = backends(xs, domid);
    for (kind, devid) in &found {
        let path = format!("/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}/{devid}");
        let script = xs
            .read_string(&format!("{path}/script"))
            .unwrap_or_default();
        let vifname = xs.read_string(&format!("{path}/vifname")).ok();
        let gatewaydev = xs.read_string(&format!("{path}/gatewaydev")).ok();
        let dev = Dev {
            kind: if kind == "vif" { "vif" } else { "vbd" },
            devid: *devid,
            label: format!("{kind} {devid}"),
            script,
            vif: (kind == "vif").then(|| vifname.unwrap_or_else(|| format!("vif{domid}.{devid}"))),
            gatewaydev,
        };
        let _ = xs.write(&format!("{path}/online"), b"0");
        if backend_state(xs, &path) < state::CLOSING {
            let _ = xs.write(
                &format!("{path}/state"),
                state::CLOSING.to_string().as_bytes(),
            );
        }
        if host.wait_for_drivers {
            // The backend driver closes once its frontend is gone (the
            // domain destroyed) or has closed.
            if let Err(seen) = wait_state(xs, &path, host.state_timeout, |s| {
                s == state::CLOSED || s == 0
            }) {
                tracing::warn!(domid, device = %dev.label, state = seen,
                    "the backend did not close in time; removing it anyway");
            }
        }
        if !dev.script.is_empty() {
            if let Err(e) = run_script(xs, host, domid, &dev, false) {
                tracing::warn!(domid, "{e}");
            }
        }
        for p in [path, dev.frontend(domid), dev.libxl(domid)] {
            let _ = xs.rm(&p);
        }
        tracing::info!(domid, device = %dev.label, "device backend removed");
    }
    for kind in ["vif", "vbd"] {
        let base = format!("/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}");
        if xs.directory(&base).is_ok_and(|d| d.is_empty()) {
            let _ = xs.rm(&base);
        }
    }
}

/// Waits until every device of `domid` has its backend driver at InitWait
/// or beyond: what a guest needs to find before it runs.
pub fn wait_ready<T: Transport>(
    xs: &mut Xenstore<T>,
    host: &DeviceHost,
    domid: DomId,
) -> Result<(), DeviceError> {
    if !host.wait_for_drivers {
        return Ok(());
    }
    for (kind, devid) in backends(xs, domid) {
        let path = format!("/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}/{devid}");
        wait_state(xs, &path, host.state_timeout, |s| s >= state::INIT_WAIT).map_err(|seen| {
            DeviceError::Driver {
                device: format!("{kind} {devid}"),
                want: state::INIT_WAIT,
                seen,
                secs: host.state_timeout.as_secs(),
                driver: if kind == "vif" {
                    "xen-netback"
                } else {
                    "xen-blkback"
                },
            }
        })?;
    }
    Ok(())
}

/// Takes down the backends of domains that no longer exist (a daemon
/// killed while it built or removed a guest's devices leaves them):
/// every `/local/domain/0/backend/{vif,vbd}/<domid>` whose domain
/// `exists` says is gone. Returns the domains swept.
pub fn sweep_orphans<T: Transport>(
    xs: &mut Xenstore<T>,
    host: &DeviceHost,
    exists: impl Fn(DomId) -> bool,
) -> Vec<DomId> {
    let mut gone: Vec<DomId> = Vec::new();
    for kind in ["vif", "vbd"] {
        let base = format!("/local/domain/{BACKEND_DOMID}/backend/{kind}");
        for id in xs.directory(&base).unwrap_or_default() {
            if let Ok(domid) = id.parse::<DomId>() {
                if domid != BACKEND_DOMID && !exists(domid) && !gone.contains(&domid) {
                    gone.push(domid);
                }
            }
        }
    }
    for &domid in &gone {
        tracing::warn!(
            domid,
            "backends of a domain that no longer exists; taking them down"
        );
        // Nothing answers for a dead domain's devices: no wait.
        let quick = DeviceHost {
            wait_for_drivers: false,
            ..host.clone()
        };
        remove_all(xs, &quick, domid);
        let _ = xs.rm(&format!("/libxl/{domid}"));
    }
    gone
}
