//! Virtual Xen hosts: QEMU processes under TCG, driven through their serial
//! console, which carries Xen's console and dom0's `hvc0` (Xen forwards
//! serial input to dom0).
//!
//! [`Lab`] starts the hosts and is an expect-style runner: one reader thread
//! a host turns QEMU's stdout into timestamped [`Line`]s (also written to
//! the host's log), [`Lab::expect`] waits for a line that matches with a
//! deadline, [`Lab::send`] types a command.
//!
//! No QEMU outlives the harness: each runs under `timeout --foreground -s
//! KILL` (a hard limit; Ctrl-C reaches QEMU too), a guard process kills it
//! when the harness's end of a pipe closes however the harness ends, and
//! dropping the [`Lab`] kills the ones still running.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The serial numbers of the transfer disk and of the shared disk, by
/// which dom0 finds them (`dom0/init` links them as `/dev/e2e-xfer` and
/// `/dev/e2e-shared`).
pub const XFER_SERIAL: &str = "e2e-xfer";
/// See [`XFER_SERIAL`].
pub const SHARED_SERIAL: &str = "e2e-shared";

/// A host's end of the point-to-point link between two hosts: QEMU's
/// `-netdev socket` over 127.0.0.1 (the only network a host ever gets).
#[derive(Clone, Copy, Debug)]
pub enum Link {
    /// Listen on 127.0.0.1:port.
    Listen(u16),
    /// Connect to 127.0.0.1:port.
    Connect(u16),
}

/// How to start one virtual host.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// A short name (`A`, `B`), used in logs and for the MAC address.
    pub name: String,
    /// The Xen multiboot image.
    pub xen: PathBuf,
    /// The dom0 kernel.
    pub kernel: PathBuf,
    /// The dom0 initramfs.
    pub initrd: PathBuf,
    /// Extra dom0 kernel command-line words (`e2e.ip=...`); no commas.
    pub dom0_args: Vec<String>,
    /// QEMU's RAM in MiB.
    pub mem_mib: u32,
    /// dom0's share of it in MiB.
    pub dom0_mib: u32,
    /// The link to another host, if any.
    pub link: Option<Link>,
    /// QEMU's PID file.
    pub pidfile: PathBuf,
    /// A raw image attached as a virtio-blk disk (serial `e2e-xfer`,
    /// `/dev/vda` in dom0, which links it as `/dev/e2e-xfer`), the
    /// way files too big for the console (save images) leave dom0.
    pub xfer: Option<PathBuf>,
    /// A raw image every host of the lab gets as a second virtio-blk disk
    /// (serial `e2e-shared`, `/dev/vdb` in dom0, which links it as
    /// `/dev/e2e-shared`): the shared storage guests' disks live on.
    pub shared: Option<PathBuf>,
    /// Extra words of Xen's command line (`flask=enforcing`).
    pub xen_args: Vec<String>,
    /// Multiboot modules after dom0's initramfs (the FLASK policy).
    pub modules: Vec<PathBuf>,
}

impl HostSpec {
    /// QEMU's arguments. Fails on paths QEMU's multiboot loader would
    /// misread (it splits modules at commas and a module's path from its
    /// command line at the first space).
    pub fn qemu_args(&self) -> Result<Vec<String>> {
        let kernel = plain_path(&self.kernel)?;
        let initrd = plain_path(&self.initrd)?;
        let xen = plain_path(&self.xen)?;
        let mut dom0 = vec!["console=hvc0", "earlyprintk=xen", "quiet", "loglevel=3"];
        dom0.extend(self.dom0_args.iter().map(String::as_str));
        let dom0 = dom0.join(" ");
        if dom0.contains(',') {
            bail!("dom0 command line `{dom0}` has a comma (QEMU would split the module there)");
        }
        let m = self.dom0_mib;
        let xen_cmdline = format!(
            "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all \
             dom0_mem={m}M,max:{m}M dom0_max_vcpus=1 bootscrub=false"
        );
        let xen_cmdline = std::iter::once(xen_cmdline)
            .chain(self.xen_args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut modules = format!("{kernel} {dom0},{initrd}");
        for m in &self.modules {
            modules.push(',');
            modules.push_str(plain_path(m)?);
        }
        let mut a: Vec<String> = [
            "-name",
            &format!("relocd-e2e-{}", self.name),
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "qemu64",
            "-smp",
            "1",
            "-m",
            &self.mem_mib.to_string(),
            "-display",
            "none",
            "-vga",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-chardev",
            "stdio,id=ser0,signal=off",
            "-serial",
            "chardev:ser0",
            "-pidfile",
            plain_path(&self.pidfile)?,
            "-kernel",
            xen,
            "-append",
            &xen_cmdline,
            "-initrd",
            &modules,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Disks are PCI devices in the order given (the transfer disk vda,
        // the shared one vdb); dom0 finds each by its serial anyway.
        if let Some(disk) = &self.xfer {
            // cache=unsafe: dom0's writes reach the file at once, flushes
            // are not waited for (the file is read only after a sync)
            a.extend([
                "-drive".into(),
                format!(
                    "file={},if=none,id=xfer0,format=raw,cache=unsafe",
                    plain_path(disk)?
                ),
                "-device".into(),
                format!("virtio-blk-pci,drive=xfer0,serial={XFER_SERIAL}"),
            ]);
        }
        if let Some(disk) = &self.shared {
            // Both hosts' QEMUs open the file read-write at once: no image
            // lock (file.locking=off, share-rw=on), and cache=none (O_DIRECT
            // on the file), so that no cache of one QEMU can hold back a
            // write from the other's reads
            a.extend([
                "-drive".into(),
                format!(
                    "file={},if=none,id=shared0,format=raw,cache=none,file.locking=off",
                    plain_path(disk)?
                ),
                "-device".into(),
                format!("virtio-blk-pci,drive=shared0,share-rw=on,serial={SHARED_SERIAL}"),
            ]);
        }
        match self.link {
            None => a.extend(["-nic".into(), "none".into()]),
            Some(link) => {
                let (how, last) = match link {
                    Link::Listen(p) => (format!("listen=127.0.0.1:{p}"), 1),
                    Link::Connect(p) => (format!("connect=127.0.0.1:{p}"), 2),
                };
                a.extend([
                    "-netdev".into(),
                    format!("socket,id=link0,{how}"),
                    "-device".into(),
                    format!("e1000,netdev=link0,mac=52:54:00:e2:e0:0{last},romfile="),
                ]);
            }
        }
        Ok(a)
    }
}

fn plain_path(p: &Path) -> Result<&str> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.contains(',') || s.contains(' ') {
        bail!("QEMU cannot take the path `{s}` (it has a comma or a space)");
    }
    Ok(s)
}

/// One console line, with the host it came from and when (seconds since
/// the lab started).
#[derive(Clone, Debug)]
pub struct Line {
    /// Index of the host in the [`Lab`].
    pub host: usize,
    /// Seconds since [`Lab::new`].
    pub at: f64,
    /// The text, without line ending or carriage returns.
    pub text: String,
}

enum Event {
    Line(Line),
    Closed(usize),
}

/// Why [`Lab::expect`] gave up.
#[derive(Debug)]
pub enum Gave {
    /// Nothing matched before the deadline.
    Timeout,
    /// A host's console closed (QEMU exited).
    Closed(String),
}

struct Host {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pidfile: PathBuf,
    closed: bool,
    /// Kills QEMU when its stdin (our end) closes.
    guard: Option<Child>,
}

/// A shell that waits for its stdin to close, then kills the QEMU whose PID
/// is in `pidfile` if that process is still the QEMU started with it.
fn spawn_guard(pidfile: &Path) -> Option<Child> {
    const SCRIPT: &str = r#"read -r _
pid=$(cat "$1" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) exit 0 ;; esac
tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-pidfile $1 " && kill -9 "$pid"
exit 0"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "relocd-e2e-guard"])
        .arg(pidfile)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Running virtual hosts and their consoles.
pub struct Lab {
    start: Instant,
    hosts: Vec<Host>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl Lab {
    /// A lab with no host yet; line times count from now.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Lab {
            start: Instant::now(),
            hosts: Vec::new(),
            tx,
            rx,
        }
    }

    /// Seconds since the lab started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The name of host `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.hosts[i].name
    }

    /// Starts a host; its console goes to `log` (QEMU's stderr beside it).
    /// QEMU is killed at the latest after `hard_limit`.
    pub fn spawn(&mut self, spec: &HostSpec, log: &Path, hard_limit: Duration) -> Result<usize> {
        let args = spec.qemu_args()?;
        let mut logf = BufWriter::new(
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?,
        );
        writeln!(logf, "# {QEMU} {}", args.join(" "))?;
        let stderr = File::create(log.with_extension("stderr"))?;
        let _ = std::fs::remove_file(&spec.pidfile);
        let mut child = Command::new("timeout")
            .args(["--foreground", "-s", "KILL"])
            .args([&hard_limit.as_secs().max(1).to_string(), QEMU])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {QEMU}"))?;
        let guard = spawn_guard(&spec.pidfile);
        let idx = self.hosts.len();
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let tx = self.tx.clone();
        let start = self.start;
        thread::spawn(move || read_console(idx, stdout, logf, start, tx));
        self.hosts.push(Host {
            name: spec.name.clone(),
            child,
            stdin,
            pidfile: spec.pidfile.clone(),
            closed: false,
            guard,
        });
        Ok(idx)
    }

    /// Waits until `matcher` returns `Some` for a line of any host, or the
    /// deadline passes, or a host's console closes. `matcher` sees every
    /// line, so it can also record them.
    pub fn expect<T>(
        &mut self,
        timeout: Duration,
        mut matcher: impl FnMut(&Line) -> Option<T>,
    ) -> Result<T, Gave> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Gave::Timeout);
            }
            match self.rx.recv_timeout(left) {
                Ok(Event::Line(line)) => {
                    if let Some(t) = matcher(&line) {
                        return Ok(t);
                    }
                }
                Ok(Event::Closed(i)) => {
                    self.hosts[i].closed = true;
                    return Err(Gave::Closed(self.hosts[i].name.clone()));
                }
                Err(RecvTimeoutError::Timeout) => return Err(Gave::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Gave::Closed("all hosts".into()))
                }
            }
        }
    }

    /// Types `line` and a newline on host `i`'s console, a few bytes at a
    /// time: Xen keeps only a small ring of serial input for dom0.
    pub fn send(&mut self, i: usize, line: &str) -> Result<()> {
        let host = &mut self.hosts[i];
        let stdin = host.stdin.as_mut().context("console input closed")?;
        let bytes = format!("{line}\n");
        for chunk in bytes.as_bytes().chunks(8) {
            stdin.write_all(chunk)?;
            stdin.flush()?;
            thread::sleep(Duration::from_millis(40));
        }
        Ok(())
    }

    /// Powers every host off (`off` on its console), waits up to `grace`
    /// for QEMU to exit, then kills what is left. Returns how many had to
    /// be killed.
    pub fn shutdown(&mut self, grace: Duration) -> usize {
        for i in 0..self.hosts.len() {
            if !self.hosts[i].closed {
                let _ = self.send(i, "off");
            }
        }
        let deadline = Instant::now() + grace;
        let mut killed = 0;
        for host in &mut self.hosts {
            loop {
                if let Ok(Some(_)) = host.child.try_wait() {
                    host.release_guard();
                    break;
                }
                if Instant::now() >= deadline {
                    host.kill();
                    killed += 1;
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        killed
    }
}

impl Host {
    /// Lets the guard go (QEMU has exited or been killed).
    fn release_guard(&mut self) {
        if let Some(mut g) = self.guard.take() {
            drop(g.stdin.take());
            let _ = g.wait();
            let _ = std::fs::remove_file(&self.pidfile);
        }
    }

    /// Kills QEMU by the PID it wrote, then the `timeout` wrapper.
    fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let pid = pid.trim();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.release_guard();
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // the wrapper, whose KILL timer would end QEMU later anyway
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.release_guard();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if matches!(host.child.try_wait(), Ok(Some(_))) {
                host.release_guard();
            } else {
                host.kill();
            }
        }
    }
}

fn read_console(
    host: usize,
    stdout: impl std::io::Read,
    mut log: BufWriter<File>,
    start: Instant,
    tx: Sender<Event>,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text: String = String::from_utf8_lossy(&buf)
                    .chars()
                    .filter(|&c| c != '\r' && c != '\n')
                    .collect();
                let at = start.elapsed().as_secs_f64();
                let _ = writeln!(log, "[{at:8.2}] {text}");
                let _ = log.flush();
                if tx.send(Event::Line(Line { host, at, text })).is_err() {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Event::Closed(host));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(link: Option<Link>) -> HostSpec {
        HostSpec {
            name: "A".into(),
            xen: "/c/xen.elf".into(),
            kernel: "/c/vmlinuz".into(),
            initrd: "/c/dom0.cpio".into(),
            dom0_args: vec!["e2e.ip=169.254.0.1/16".into()],
            mem_mib: 1536,
            dom0_mib: 768,
            link,
            pidfile: "/c/A.pid".into(),
            xfer: None,
            shared: None,
            xen_args: Vec::new(),
            modules: Vec::new(),
        }
    }

    #[test]
    fn a_flask_host_gets_its_policy_as_a_module_and_enforcing_on_xen_s_line() {
        let mut s = spec(None);
        s.xen_args = vec!["flask=enforcing".into()];
        s.modules = vec!["/c/xenpolicy-relocd".into()];
        let a = s.qemu_args().unwrap();
        let initrd = arg_after(&a, "-initrd")[0];
        assert!(
            initrd.ends_with(",/c/dom0.cpio,/c/xenpolicy-relocd"),
            "{initrd}"
        );
        assert!(arg_after(&a, "-append")[0].ends_with(" flask=enforcing"));
        s.modules = vec!["/c/a,b".into()];
        assert!(s.qemu_args().is_err());
    }

    fn arg_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tcg_and_no_network_without_a_link() {
        let a = spec(None).qemu_args().unwrap();
        assert_eq!(arg_after(&a, "-accel"), ["tcg"]);
        assert_eq!(arg_after(&a, "-cpu"), ["qemu64"]);
        assert_eq!(arg_after(&a, "-m"), ["1536"]);
        assert_eq!(arg_after(&a, "-nic"), ["none"]);
        assert!(arg_after(&a, "-netdev").is_empty());
        assert_eq!(
            arg_after(&a, "-initrd"),
            ["/c/vmlinuz console=hvc0 earlyprintk=xen quiet loglevel=3 \
                 e2e.ip=169.254.0.1/16,/c/dom0.cpio"]
        );
        let xen = arg_after(&a, "-append")[0];
        assert!(xen.contains("dom0_mem=768M,max:768M"), "{xen}");
        assert!(arg_after(&a, "-drive").is_empty());
    }

    #[test]
    fn the_transfer_disk_is_a_raw_virtio_drive() {
        let mut s = spec(None);
        s.xfer = Some("/c/xfer-A.img".into());
        let a = s.qemu_args().unwrap();
        assert_eq!(
            arg_after(&a, "-drive"),
            ["file=/c/xfer-A.img,if=none,id=xfer0,format=raw,cache=unsafe"]
        );
        assert_eq!(
            arg_after(&a, "-device"),
            ["virtio-blk-pci,drive=xfer0,serial=e2e-xfer"]
        );
        s.xfer = Some("/c/x,y.img".into());
        assert!(s.qemu_args().is_err());
    }

    #[test]
    fn the_shared_disk_is_writable_by_both_hosts_without_a_host_cache() {
        let mut s = spec(None);
        s.xfer = Some("/c/xfer-A.img".into());
        s.shared = Some("/c/shared-pair.img".into());
        let a = s.qemu_args().unwrap();
        // the transfer disk first (vda), the shared one second (vdb)
        assert_eq!(
            arg_after(&a, "-drive"),
            [
                "file=/c/xfer-A.img,if=none,id=xfer0,format=raw,cache=unsafe",
                "file=/c/shared-pair.img,if=none,id=shared0,format=raw,cache=none,file.locking=off"
            ]
        );
        assert_eq!(
            arg_after(&a, "-device"),
            [
                "virtio-blk-pci,drive=xfer0,serial=e2e-xfer",
                "virtio-blk-pci,drive=shared0,share-rw=on,serial=e2e-shared"
            ]
        );
        s.shared = Some("/c/a b.img".into());
        assert!(s.qemu_args().is_err());
    }

    #[test]
    fn a_link_is_a_socket_on_loopback_only() {
        for (link, want) in [
            (Link::Listen(5555), "socket,id=link0,listen=127.0.0.1:5555"),
            (
                Link::Connect(5555),
                "socket,id=link0,connect=127.0.0.1:5555",
            ),
        ] {
            let a = spec(Some(link)).qemu_args().unwrap();
            assert_eq!(arg_after(&a, "-netdev"), [want]);
            assert!(arg_after(&a, "-nic").is_empty());
            assert!(!a.iter().any(|x| x.contains("user")), "{a:?}");
        }
    }

    #[test]
    fn refuses_what_multiboot_would_misread() {
        let mut s = spec(None);
        s.dom0_args.push("e2e.x=a,b".into());
        assert!(s.qemu_args().is_err());
        let mut s = spec(None);
        s.initrd = "/my dir/dom0.cpio".into();
        assert!(s.qemu_args().is_err());
        let mut s = spec(None);
        s.kernel = "/a,b/vmlinuz".into();
        assert!(s.qemu_args().is_err());
    }
}
