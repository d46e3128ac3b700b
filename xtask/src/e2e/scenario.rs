//! The scenarios `cargo xtask e2e` knows, and the console markers their
//! scripts print.
//!
//! A scenario is a shell script, `xtask/lab/scenarios/NAME.sh`, run inside
//! dom0 by `xtask/lab/dom0/cmdloop.sh` when the harness types `run NAME` on
//! the host's serial console. Scripts source `/e2e/lib.sh`, whose helpers
//! print the markers parsed by [`Marker::parse`].
//!
//! To add a scenario: write its script, add an entry to [`SCENARIOS`]. A
//! scenario with `hosts: 2` runs the same script on two virtual hosts joined
//! by a link (`-netdev socket` over 127.0.0.1; inside, 169.254.0.1 is role
//! `A` and 169.254.0.2 is role `B`, read with `e2e_arg e2e.role`; the
//! peer's address is `e2e.peer`). `lab/dom0/lib.sh` has the test guest's
//! helpers (`e2e_guest_start`, `e2e_guest_goes_on`) and relocd's daemon
//! (`e2e_relocd_serve`). A file too big for the console (a save image)
//! leaves dom0 with `e2e_export FILE NAME` over the host's transfer disk;
//! the harness checks every exported `*.save` with Xen's `verify-stream-v2`
//! (see the parent module).
//!
//! The default run holds relocd's save of the test guest against xl's:
//! `relocd-save` (offline; exported, verified, `xl restore`d),
//! `relocd-save-live` (`--live` while the guest dirties memory; rounds,
//! pages, downtime), `save-side-by-side` (`xl save -c` and `relocd save` of
//! one guest, times and sizes), `save-faults` (ENOSPC mid-save; the daemon
//! killed during a live save); relocd's restore and migration (helpers in
//! `lab/dom0/lib-migrate.sh`): `relocd-restore` (of an `xl save` file and of
//! relocd's own), `relocd-migrate-remote` (`--live` A to B; relocd's
//! figures and the pause the guest saw, timed on one clock),
//! `relocd-migrate-refused` (B's hosts-allow does not admit A),
//! `relocd-migrate-tls` (the live migration over TLS, certificates made by
//! the lab build),
//! `relocd-migrate-no-memory` (B has too little free memory: its reason
//! reaches A's user), `relocd-migrate-faults` (the link cut mid pre-copy;
//! the destination daemon killed in the stop-and-copy, then in the
//! pre-copy, the phase of each kill asserted) and `relocd-resolve` (the
//! destination daemon ends at the commit, after journaling it and before:
//! the source in doubt, settled with `relocd resolve`). Guests with a vif
//! and a vbd (helpers in `lab/dom0/lib-dev.sh`; a TCP stream from dom0 and
//! numbered blocks on the disk the hosts share are checked through every
//! move): `devices-save-interop` (xl's save restored by relocd and
//! relocd's by xl), `devices-side-by-side` (`xl migrate` A to B, then
//! `relocd migrate --live` B to A, on one guest), `relocd-migrate-devices`
//! and `relocd-devices-faults` (B without the bridge, without the disk,
//! its daemon killed in the stop-and-copy).
//! The FLASK scenarios (relocd in a driver domain,
//! `docs/driver-domain.md`) share one pair of hosts of their own, booted
//! last with the FLASK hypervisor (one relocd domain a host, created as
//! dom0 boots): `flask-boot` (dom0, the relocd domain and a guest under
//! the enforcing policy, on both hosts), `driver-domain-migrate` and
//! `driver-domain-denied` (its checks on A; helpers in
//! `lab/dd/lib-dd.sh`).
//! [`BY_NAME_ONLY`] holds `relocd-auto-converge` (one guest dirtying
//! faster than the link carries, `e2e.hot_mb`: `xl migrate`, `relocd
//! migrate --live` and `--live --auto-converge` side by side, a cancelled
//! auto-converge run, the guest's scheduler cap checked after each; then
//! the bytes of offline moves without and with zero pages and LZ4),
//! `xl-migrate-remote`, whose xl migration
//! `migrate-side-by-side` repeats, `migrate-side-by-side`, whose
//! comparison of xl's and relocd's migration `devices-side-by-side`
//! repeats with a guest that has devices.
//!
//! The whole run has a deadline (`RUN_BUDGET` in the parent module): a
//! scenario whose timeout would end past it is not started and fails as
//! "not run", so every timeout spent still ends the run in time.

use std::time::Duration;

/// Which hypervisor image a scenario needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenBuild {
    /// Debian's `xen-hypervisor-4.17-amd64` as it is, or the rebuild.
    Any,
    /// The rebuild with `CONFIG_SHADOW_PAGING=y` (PV log-dirty, migration).
    Shadow,
    /// The rebuild with shadow paging, XSM and FLASK, booted enforcing
    /// with the example policy and relocd's module (`super::flask`); such
    /// scenarios share boots of their own, with the relocd domain's set-up.
    Flask,
}

/// One named scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The name given on the command line; the script is `NAME.sh`.
    pub name: &'static str,
    /// One line for `--list`.
    pub about: &'static str,
    /// How many virtual Xen hosts it needs (1 or 2).
    pub hosts: usize,
    /// The hypervisor it needs.
    pub xen: XenBuild,
    /// How long its script may run, from `run NAME` to its end marker.
    pub timeout: Duration,
}

/// Every scenario, in the order a plain `cargo xtask e2e` runs them (a
/// host count's group in this order; the two-host ones with the longest
/// timeouts first, so that the short ones at the end still fit the run's
/// deadline when the run took longer, e.g. with the Xen build).
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "boot",
        about: "Xen 4.17 and the PV dom0 are up, xenstored runs, `xl info` and `xl list` answer",
        hosts: 1,
        xen: XenBuild::Any,
        timeout: Duration::from_secs(30),
    },
    Scenario {
        name: "guest",
        about: "the PV test guest counts; xl save + xl restore; it counts on from where it was",
        hosts: 1,
        xen: XenBuild::Any,
        // Measured 31-41 s; 49-63 s with the guest's check after the restore.
        timeout: Duration::from_secs(100),
    },
    Scenario {
        name: "relocd-runs",
        about: "the relocd built here runs in dom0: --version; check-host admits localhost, refuses a mismatch",
        hosts: 1,
        xen: XenBuild::Any,
        timeout: Duration::from_secs(30),
    },
    Scenario {
        name: "relocd-list",
        about: "relocd serve --backend xen: `relocd list` shows what `xl list` shows, the test guest running",
        hosts: 1,
        xen: XenBuild::Any,
        timeout: Duration::from_secs(75),
    },
    Scenario {
        name: "xen-probe",
        about: "relocd xen-probe on the running guest: pause, log-dirty running/paused, a foreign mapping",
        hosts: 1,
        xen: XenBuild::Shadow,
        timeout: Duration::from_secs(75),
    },
    Scenario {
        name: "xl-migrate",
        about: "xl live-migrates the test guest to the same host (PV log-dirty); it counts on",
        hosts: 1,
        xen: XenBuild::Shadow,
        // Measured 30-37 s.
        timeout: Duration::from_secs(100),
    },
    Scenario {
        name: "relocd-save",
        about: "relocd save (offline) of the running guest: gone from xl list; the file passes verify-stream-v2 and relocd inspect; xl restore; it counts on",
        hosts: 1,
        xen: XenBuild::Any,
        // Measured 42-81 s with the guest's check (81 s on a loaded machine).
        timeout: Duration::from_secs(160),
    },
    Scenario {
        name: "relocd-save-live",
        about: "relocd save -c --live --bandwidth 16M, then --live, while the guest dirties memory: rounds, pages, downtime; verify-stream-v2; xl restore; it counts on",
        hosts: 1,
        xen: XenBuild::Shadow,
        // Measured 75-94 s.
        timeout: Duration::from_secs(180),
    },
    Scenario {
        name: "save-side-by-side",
        about: "one guest: xl save -c (time, size), relocd inspect of it, relocd save (time, size), xl restore of relocd's file",
        hosts: 1,
        xen: XenBuild::Any,
        // Measured 51-77 s.
        timeout: Duration::from_secs(150),
    },
    Scenario {
        name: "save-faults",
        about: "relocd save fails on ENOSPC and when its daemon is killed mid-save: the guest runs on; a new daemon saves it",
        hosts: 1,
        xen: XenBuild::Shadow,
        // Measured 75-123 s (the slower on a loaded build machine).
        timeout: Duration::from_secs(240),
    },
    Scenario {
        name: "relocd-restore",
        about: "relocd restore of an xl save file, then relocd save + relocd restore: the guest counts on; relocd list = xl list; xl destroy",
        hosts: 1,
        xen: XenBuild::Any,
        // Measured 57-59 s (four restores, each with the guest's check).
        timeout: Duration::from_secs(140),
    },
    Scenario {
        name: "devices-save-interop",
        about: "the device guest (vif + vbd): xl save -> relocd restore, relocd save -> xl restore; its TCP stream and disk writes go on, dom0 keeps no backend",
        hosts: 1,
        xen: XenBuild::Any,
        // Measured up to relocd's part only (relocd does not restore guests
        // with devices yet): 153-305 s, xl save and restore 4-12 s each on
        // a loaded machine.
        timeout: Duration::from_secs(420),
    },
    Scenario {
        name: "link",
        about: "two hosts: each dom0 reaches the other over the socket link (169.254.0.x)",
        hosts: 2,
        xen: XenBuild::Any,
        timeout: Duration::from_secs(60),
    },
    Scenario {
        name: "devices-side-by-side",
        about: "two hosts, the device guest (vif + vbd) with a TCP stream and disk writes: xl migrate A to B, then relocd migrate --live B to A: times, the guest's pause, the stream's gap",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured up to relocd's part only (relocd does not move guests
        // with devices yet): 258 s on a loaded machine, xl's migration
        // 189 s of it.
        timeout: Duration::from_secs(600),
    },
    Scenario {
        name: "relocd-devices-faults",
        about: "two hosts, the device guest: B without xenbr0, then without the disk: refused naming the device, the guest untouched; B's daemon killed in the stop-and-copy: the guest, its stream and writes go on at A, B keeps nothing",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 166-190 s up to (c), which has not passed yet (relocd
        // refused guests with devices, then B's admission outlasted a 5 s
        // I/O timeout); (c) adds about a minute.
        timeout: Duration::from_secs(420),
    },
    Scenario {
        name: "relocd-migrate-devices",
        about: "two hosts: relocd migrate --live of the device guest A to B: the same TCP connection and the disk writes go on, acknowledged blocks intact, A keeps no backend or vif",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 153 s, passing, with relocd's device support on a
        // loaded machine (the migration itself 70 s).
        timeout: Duration::from_secs(300),
    },
    Scenario {
        name: "relocd-migrate-remote",
        about: "two hosts: relocd migrate --live A to B while the guest dirties memory; it counts on at B; figures and the guest-measured downtime",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 51-68 s (the migration itself 4-8 s).
        timeout: Duration::from_secs(140),
    },
    Scenario {
        name: "relocd-migrate-faults",
        about: "two hosts: the link cut mid pre-copy; B's daemon killed in the stop-and-copy, then in the pre-copy: the guest goes on at A, B keeps no domain",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 141-185 s.
        timeout: Duration::from_secs(300),
    },
    Scenario {
        name: "relocd-resolve",
        about: "two hosts: B's daemon ends at the commit (after journaling it, then before): A is in doubt; relocd resolve --discard, then --resume: exactly one copy runs on",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 78-85 s (three migrations, two daemon restarts).
        timeout: Duration::from_secs(180),
    },
    Scenario {
        name: "relocd-migrate-no-memory",
        about: "two hosts: B has less free memory than the guest needs: relocd migrate exits 1 with B's reason, the guest runs on at A never stopped, B gets no domain",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 40-68 s (the refusal itself under a second).
        timeout: Duration::from_secs(120),
    },
    Scenario {
        name: "relocd-migrate-refused",
        about: "two hosts: B's hosts-allow does not admit A: relocd migrate is refused, the guest counts on at A, B gets no domain",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 23-43 s.
        timeout: Duration::from_secs(80),
    },
    Scenario {
        name: "relocd-migrate-tls",
        about: "two hosts: relocd migrate --live --ssl A to B over TLS, both hosts authenticated by the lab's certificates, A admitted by its certificate's name; it counts on at B",
        hosts: 2,
        xen: XenBuild::Shadow,
        // As relocd-migrate-remote (measured 51-68 s), plus up to a minute
        // for dom0's random pool after boot (TLS needs it).
        timeout: Duration::from_secs(200),
    },
    Scenario {
        name: "flask-boot",
        about: "two FLASK hosts: Xen with FLASK enforcing and relocd's policy module: dom0 boots, the relocd domain is relocd_t, xl create of the test guest (domU_t), it counts",
        hosts: 2,
        xen: XenBuild::Flask,
        // Measured 30-50 s (both hosts at once).
        timeout: Duration::from_secs(100),
    },
    Scenario {
        name: "driver-domain-migrate",
        about: "two FLASK hosts, a relocd domain (relocd_t) on each, no relocd in either dom0: relocd migrate --live from A's relocd domain moves the test guest to B; it counts on",
        hosts: 2,
        xen: XenBuild::Flask,
        // Measured 51-71 s (the migration itself 8-13 s).
        timeout: Duration::from_secs(180),
    },
    Scenario {
        name: "driver-domain-denied",
        about: "two FLASK hosts: from A's relocd domain, saving or migrating dom0 and a nomigrate_t guest fail with the denial named; xl dmesg has the AVC lines; the guest runs on",
        hosts: 2,
        xen: XenBuild::Flask,
        // Measured 30-43 s.
        timeout: Duration::from_secs(120),
    },
];

/// Scenarios that run only when named (slow, experimental, or repeated by a
/// default one). Named ones still share one boot a host count.
pub const BY_NAME_ONLY: &[Scenario] = &[
    Scenario {
        name: "relocd-auto-converge",
        about: "two hosts, one guest dirtying memory faster than the link carries, with a cap of its own: xl migrate, relocd migrate --live, --live --auto-converge (one cancelled while it throttles), offline with zero pages and with --compress: times, rounds, bytes, downtimes, the guest's pause; its cap back where it was",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 379-502 s (xl's move 82-126 s, relocd's live moves
        // 40-51 s each at 3 MiB/s). Not in the default run: tried there, it
        // was not started on a loaded machine, the run's e2e budget (36
        // minutes, for a CI run under 45) spent before its turn. 720 s is the
        // most a scenario may have (one alone, boot included, must fit
        // half the run's budget).
        timeout: Duration::from_secs(720),
    },
    Scenario {
        name: "xl-migrate-remote",
        about: "two hosts: xl live-migrates the test guest from A to B over the link; it counts on",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 78-89 s (the link carries ~1.6 MiB/s).
        timeout: Duration::from_secs(180),
    },
    Scenario {
        name: "migrate-side-by-side",
        about: "two hosts, one guest: xl migrate A to B, then relocd migrate --live B to A: total times and downtimes",
        hosts: 2,
        xen: XenBuild::Shadow,
        // Measured 102-197 s (xl's migration 64-98 s).
        timeout: Duration::from_secs(260),
    },
];

/// The scenario called `name` (in [`SCENARIOS`] or [`BY_NAME_ONLY`]).
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS
        .iter()
        .chain(BY_NAME_ONLY)
        .find(|s| s.name == name)
}

/// A line the dom0 side prints for the harness (see `lab/dom0/lib.sh`).
#[derive(Clone, Debug, PartialEq)]
pub enum Marker<'a> {
    /// dom0's toolstack is up (`E2E-DOM0-READY`).
    Dom0Ready,
    /// The command loop reads the console (`E2E-LISTENING`).
    Listening,
    /// `E2E-SCENARIO-BEGIN name`
    ScenarioBegin(&'a str),
    /// `E2E-SCENARIO-END name rc secs`
    ScenarioEnd { name: &'a str, rc: i32, secs: f64 },
    /// `E2E-STEP-BEGIN name`
    StepBegin(&'a str),
    /// `E2E-STEP-END name rc secs`
    StepEnd { name: &'a str, rc: i32, secs: f64 },
    /// `E2E-REPORT key=value`
    Report { key: &'a str, value: &'a str },
    /// `E2E-FAIL message`
    Fail(&'a str),
    /// `E2E-FILE-BEGIN name`: the lines up to `E2E-FILE-END` are a file.
    FileBegin(&'a str),
    /// `E2E-FILE-END name`
    FileEnd(&'a str),
    /// `E2E-EXPORT name offset size md5`: `size` bytes at byte `offset` of
    /// the host's transfer disk are the file `name`, whose MD5 is `md5`.
    Export {
        name: &'a str,
        offset: u64,
        size: u64,
        md5: &'a str,
    },
    /// `E2E-BAD-COMMAND ...`: the command loop did not understand a line.
    BadCommand(&'a str),
    /// `E2E-WARN ...`
    Warn(&'a str),
    /// Any other `E2E-` line (`E2E-INFO`, ...).
    Other(&'a str),
}

impl<'a> Marker<'a> {
    /// The marker in a console line, if it has one. The marker may follow
    /// other text on the line (a kernel message without its newline, say).
    pub fn parse(line: &'a str) -> Option<Marker<'a>> {
        let at = line.find("E2E-")?;
        let text = line[at + 4..].trim_end();
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        let mut fields = rest.split_whitespace();
        let marker = match word {
            "DOM0-READY" => Marker::Dom0Ready,
            "LISTENING" => Marker::Listening,
            "SCENARIO-BEGIN" => Marker::ScenarioBegin(fields.next()?),
            "SCENARIO-END" => Marker::ScenarioEnd {
                name: fields.next()?,
                rc: fields.next()?.parse().ok()?,
                secs: fields.next()?.parse().ok()?,
            },
            "STEP-BEGIN" => Marker::StepBegin(fields.next()?),
            "STEP-END" => Marker::StepEnd {
                name: fields.next()?,
                rc: fields.next()?.parse().ok()?,
                secs: fields.next()?.parse().ok()?,
            },
            "REPORT" => {
                let (key, value) = rest.split_once('=')?;
                Marker::Report { key, value }
            }
            "FAIL" => Marker::Fail(rest),
            "FILE-BEGIN" => Marker::FileBegin(fields.next()?),
            "FILE-END" => Marker::FileEnd(fields.next()?),
            "EXPORT" => Marker::Export {
                name: fields.next()?,
                offset: fields.next()?.parse().ok()?,
                size: fields.next()?.parse().ok()?,
                md5: fields
                    .next()
                    .filter(|m| m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit()))?,
            },
            "BAD-COMMAND" => Marker::BadCommand(rest),
            "WARN" => Marker::Warn(rest),
            _ => Marker::Other(text),
        };
        Some(marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_marker_the_scripts_print() {
        let cases: &[(&str, Marker)] = &[
            ("E2E-DOM0-READY uptime=4.51", Marker::Dom0Ready),
            ("E2E-LISTENING", Marker::Listening),
            ("E2E-SCENARIO-BEGIN guest", Marker::ScenarioBegin("guest")),
            (
                "E2E-SCENARIO-END guest 0 41.20\r",
                Marker::ScenarioEnd {
                    name: "guest",
                    rc: 0,
                    secs: 41.2,
                },
            ),
            ("E2E-STEP-BEGIN save", Marker::StepBegin("save")),
            (
                "E2E-STEP-END save 1 1.25",
                Marker::StepEnd {
                    name: "save",
                    rc: 1,
                    secs: 1.25,
                },
            ),
            (
                "E2E-REPORT xen_version=4.17.5-e2e-shadow",
                Marker::Report {
                    key: "xen_version",
                    value: "4.17.5-e2e-shadow",
                },
            ),
            (
                "E2E-REPORT note=a=b c",
                Marker::Report {
                    key: "note",
                    value: "a=b c",
                },
            ),
            ("E2E-FAIL xl save failed", Marker::Fail("xl save failed")),
            (
                "E2E-FILE-BEGIN xl-info.txt",
                Marker::FileBegin("xl-info.txt"),
            ),
            ("E2E-FILE-END xl-info.txt", Marker::FileEnd("xl-info.txt")),
            (
                "E2E-EXPORT relocd.save 1048576 134492608 0123456789abcdef0123456789ABCDEF",
                Marker::Export {
                    name: "relocd.save",
                    offset: 1 << 20,
                    size: 134_492_608,
                    md5: "0123456789abcdef0123456789ABCDEF",
                },
            ),
            ("E2E-BAD-COMMAND 'rn'", Marker::BadCommand("'rn'")),
            ("E2E-WARN insmod x failed", Marker::Warn("insmod x failed")),
            ("E2E-INFO guest OK", Marker::Other("INFO guest OK")),
        ];
        for (line, want) in cases {
            assert_eq!(Marker::parse(line).as_ref(), Some(want), "{line}");
        }
    }

    #[test]
    fn finds_a_marker_after_other_text_and_rejects_malformed_ones() {
        assert_eq!(
            Marker::parse("[   12.3] xen: foo E2E-STEP-BEGIN create"),
            Some(Marker::StepBegin("create"))
        );
        assert_eq!(Marker::parse("GUEST counter=3 sum=1234"), None);
        assert_eq!(Marker::parse("E2E-STEP-END save"), None);
        assert_eq!(Marker::parse("E2E-STEP-END save x 1.0"), None);
        assert_eq!(Marker::parse("E2E-SCENARIO-END guest 0"), None);
        assert_eq!(Marker::parse("E2E-REPORT novalue"), None);
        assert_eq!(Marker::parse("E2E-SCENARIO-BEGIN"), None);
        assert_eq!(Marker::parse("E2E-EXPORT a.save 0 10"), None);
        assert_eq!(
            Marker::parse("E2E-EXPORT a.save -1 10 d41d8cd98f00b204e9800998ecf8427e"),
            None
        );
        assert_eq!(
            Marker::parse("E2E-EXPORT a.save 0 10 d41d8cd98f00b204e9800998ecf8427"),
            None
        );
        assert_eq!(
            Marker::parse("E2E-EXPORT a.save 0 10 x41d8cd98f00b204e9800998ecf8427e"),
            None
        );
    }

    #[test]
    fn every_scenario_has_its_script_and_a_unique_name() {
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/scenarios");
        let all: Vec<&Scenario> = SCENARIOS.iter().chain(BY_NAME_ONLY).collect();
        for (i, s) in all.iter().enumerate() {
            assert!(
                lab.join(format!("{}.sh", s.name)).is_file(),
                "no script for {}",
                s.name
            );
            assert!((1..=2).contains(&s.hosts), "{}", s.name);
            assert_eq!(find(s.name).map(|f| f.name), Some(s.name));
            assert!(all[..i].iter().all(|o| o.name != s.name));
        }
        assert!(find("no-such").is_none());
    }
}
