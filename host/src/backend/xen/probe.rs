//! `relocd xen-probe DOMAIN`: a diagnostic that exercises, on a running
//! guest, the hypervisor operations the save path needs, and says what each
//! did:
//!
//! 1. `pause`: pause, the domain reports paused; unpause, it no longer does.
//! 2. `logdirty-running`: log-dirty on, CLEAN, let the guest run a while,
//!    PEEK: it dirtied pages.
//! 3. `logdirty-paused`: paused, CLEAN, wait as long, PEEK: no page dirtied.
//! 4. `logdirty-off`: log-dirty off.
//! 5. `foreign-map`: maps the guest's console ring (its frame from xenstore
//!    `console/ring-ref`) and reads the text the guest wrote there.
//! 6. `left-running`: the domain is not paused at the end.
//!
//! Whatever fails, the guest is unpaused and log-dirty turned off on the
//! way out (RAII guards), so the probe leaves the guest as it found it.

use super::xenstore::{Transport, Xenstore};
use relocd_hypercall::{DomId, ForeignPages, Hypervisor, Prot, XenOps, PAGE_SIZE};
use std::fmt::Write as _;
use std::time::Instant;

/// The largest guest (in pages) whose dirty bitmap the probe allocates.
pub const MAX_PROBE_PAGES: u64 = 1 << 24;

/// Offsets in `struct xencons_interface` (Xen's `public/io/console.h`).
mod cons {
    use core::ops::Range;
    pub const OUT: Range<usize> = 1024..3072;
    pub const OUT_PROD: Range<usize> = 3084..3088;
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short name (`pause`, `logdirty-running`, ...).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Its figures.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{status} {:<17} {}", self.name, self.detail)
    }
}

/// The probe could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A hypercall failed before any check ran.
    #[error(transparent)]
    Xen(#[from] relocd_hypercall::Error),
    /// No domain has that name or id.
    #[error("no domain {0}")]
    NoSuchDomain(String),
    /// The domain is not a running guest (dom0, paused, shut down).
    #[error("domain {0} is not a running guest ({1})")]
    NotRunning(DomId, String),
}

/// Unpauses the domain when dropped.
struct Paused<'a, H: Hypervisor> {
    xen: &'a H,
    domid: DomId,
}

impl<'a, H: Hypervisor> Paused<'a, H> {
    fn new(xen: &'a H, domid: DomId) -> Result<Self, relocd_hypercall::Error> {
        xen.pause(domid)?;
        Ok(Paused { xen, domid })
    }

    fn resume(self) -> Result<(), relocd_hypercall::Error> {
        let r = self.xen.unpause(self.domid);
        std::mem::forget(self);
        r
    }
}

impl<H: Hypervisor> Drop for Paused<'_, H> {
    fn drop(&mut self) {
        if let Err(e) = self.xen.unpause(self.domid) {
            tracing::error!(domid = self.domid, "unpausing: {e}");
        }
    }
}

/// Turns log-dirty off when dropped.
struct LogDirty<'a, H: Hypervisor> {
    xen: &'a H,
    domid: DomId,
}

impl<'a, H: Hypervisor> LogDirty<'a, H> {
    fn enable(xen: &'a H, domid: DomId) -> Result<Self, relocd_hypercall::Error> {
        xen.logdirty_enable(domid)?;
        Ok(LogDirty { xen, domid })
    }

    fn disable(self) -> Result<(), relocd_hypercall::Error> {
        let r = self.xen.logdirty_disable(self.domid);
        std::mem::forget(self);
        r
    }
}

impl<H: Hypervisor> Drop for LogDirty<'_, H> {
    fn drop(&mut self) {
        if let Err(e) = self.xen.logdirty_disable(self.domid) {
            tracing::error!(domid = self.domid, "turning log-dirty off: {e}");
        }
    }
}

/// The domain called `name` (a number is an id).
pub fn resolve_domain<H: Hypervisor, T: Transport>(
    xen: &H,
    xs: Option<&mut Xenstore<T>>,
    name: &str,
) -> Result<DomId, ProbeError> {
    if let Ok(id) = name.parse::<DomId>() {
        // a refusal by Xen's security policy is said as such: under FLASK
        // a domain relocd may not see is there all the same
        xen.domain_info(id).map_err(|e| {
            if e.denied_by_policy() {
                ProbeError::Xen(e)
            } else {
                ProbeError::NoSuchDomain(name.to_owned())
            }
        })?;
        return Ok(id);
    }
    let Some(xs) = xs else {
        return Err(ProbeError::NoSuchDomain(name.to_owned()));
    };
    let mut ids = Vec::new();
    xen.for_each_domain(|d| ids.push(d.domid))?;
    ids.into_iter()
        .find(|&id| super::backend::domain_name(xs, id).is_ok_and(|n| n == name))
        .ok_or_else(|| ProbeError::NoSuchDomain(name.to_owned()))
}

fn set_bits(bitmap: &[u8]) -> u64 {
    bitmap.iter().map(|b| u64::from(b.count_ones())).sum()
}

/// FNV-1a, 64 bits: a checksum to compare a page between two reads.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn hex(data: &[u8]) -> String {
    data.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The text the guest wrote to its console ring, oldest first (at most
/// the ring's 2048 bytes), and `out_prod`.
pub fn console_text(page: &[u8; PAGE_SIZE]) -> (String, u32) {
    let out = &page[cons::OUT];
    let mut p = [0u8; 4];
    p.copy_from_slice(&page[cons::OUT_PROD]);
    let prod = u32::from_le_bytes(p);
    let n = (prod as usize).min(out.len());
    let start = (prod as usize).wrapping_sub(n);
    let bytes: Vec<u8> = (0..n)
        .map(|i| out[start.wrapping_add(i) % out.len()])
        .collect();
    (String::from_utf8_lossy(&bytes).into_owned(), prod)
}

/// Runs every check on domain `domid`. `wait` lets the guest run (or not)
/// between two log-dirty reads: a second's sleep in dom0.
pub fn run<H: Hypervisor, T: Transport>(
    xen: &H,
    xs: &mut Xenstore<T>,
    domid: DomId,
    wait: &mut dyn FnMut(),
) -> Result<Vec<Check>, ProbeError> {
    let info = xen.domain_info(domid)?;
    let state = String::from_utf8_lossy(&info.xl_state()).into_owned();
    if domid == 0 || info.paused() || info.shutdown() || info.dying() {
        return Err(ProbeError::NotRunning(domid, state));
    }
    let mut checks = Vec::new();

    checks.push(check("pause", pause_check(xen, domid)));
    match xen.maximum_gpfn(domid).map(|g| g.saturating_add(1)) {
        Ok(pages) => checks.extend(logdirty_checks(xen, domid, pages, wait)),
        Err(e) => checks.push(check("maximum-gpfn", Err(e))),
    }
    checks.push(foreign_map_check(xen, xs, domid));
    checks.push(check(
        "left-running",
        xen.domain_info(domid).map(|i| {
            let s = String::from_utf8_lossy(&i.xl_state()).into_owned();
            (!i.paused(), format!("state {s}"))
        }),
    ));
    Ok(checks)
}

fn check(name: &'static str, r: Result<(bool, String), relocd_hypercall::Error>) -> Check {
    let (ok, detail) = r.unwrap_or_else(|e| (false, e.to_string()));
    Check { name, ok, detail }
}

/// The log-dirty checks on a guest of `pages` pages: enable, dirtied while
/// running, none while paused, disable.
fn logdirty_checks<H: Hypervisor>(
    xen: &H,
    domid: DomId,
    pages: u64,
    wait: &mut dyn FnMut(),
) -> Vec<Check> {
    if pages > MAX_PROBE_PAGES {
        return vec![check(
            "logdirty",
            Ok((false, format!("{pages} pages: more than the probe maps"))),
        )];
    }
    let mut bitmap = vec![0u8; pages.div_ceil(8) as usize];
    match LogDirty::enable(xen, domid) {
        Ok(guard) => vec![
            check(
                "logdirty-running",
                dirty_while_running(xen, domid, &mut bitmap, pages, wait),
            ),
            check(
                "logdirty-paused",
                dirty_while_paused(xen, domid, &mut bitmap, pages, wait),
            ),
            check(
                "logdirty-off",
                guard.disable().map(|()| (true, "disabled".to_owned())),
            ),
        ],
        Err(e) if e.errno == relocd_hypercall::errno::EOPNOTSUPP => vec![Check {
            name: "logdirty-enable",
            ok: false,
            detail: format!(
                "{e}: this hypervisor cannot log-dirty a PV guest \
                 (built without CONFIG_SHADOW_PAGING)"
            ),
        }],
        Err(e) => vec![check("logdirty-enable", Err(e))],
    }
}

fn pause_check<H: Hypervisor>(
    xen: &H,
    domid: DomId,
) -> Result<(bool, String), relocd_hypercall::Error> {
    let t = Instant::now();
    let guard = Paused::new(xen, domid)?;
    let paused = xen.domain_info(domid)?;
    let pause_us = t.elapsed().as_micros();
    let t = Instant::now();
    guard.resume()?;
    let after = xen.domain_info(domid)?;
    let unpause_us = t.elapsed().as_micros();
    let s = |i: &relocd_hypercall::DomainInfo| String::from_utf8_lossy(&i.xl_state()).into_owned();
    Ok((
        paused.paused() && !after.paused(),
        format!(
            "paused: state {} in {pause_us} us; unpaused: state {} in {unpause_us} us",
            s(&paused),
            s(&after)
        ),
    ))
}

fn dirty_while_running<H: Hypervisor>(
    xen: &H,
    domid: DomId,
    bitmap: &mut [u8],
    pages: u64,
    wait: &mut dyn FnMut(),
) -> Result<(bool, String), relocd_hypercall::Error> {
    xen.logdirty_clean(domid, bitmap, pages, false)?;
    let t = Instant::now();
    wait();
    let secs = t.elapsed().as_secs_f64();
    bitmap.fill(0);
    let peek = xen.logdirty_peek(domid, bitmap, pages)?;
    let bits = set_bits(bitmap);
    bitmap.fill(0);
    let clean = xen.logdirty_clean(domid, bitmap, pages, false)?;
    let clean_bits = set_bits(bitmap);
    Ok((
        bits > 0 && clean_bits >= bits,
        format!(
            "{bits} of {pages} pages dirtied in {secs:.2} s running (PEEK dirty_count {}; \
             CLEAN then saw {clean_bits}, dirty_count {})",
            peek.dirty_count, clean.dirty_count
        ),
    ))
}

fn dirty_while_paused<H: Hypervisor>(
    xen: &H,
    domid: DomId,
    bitmap: &mut [u8],
    pages: u64,
    wait: &mut dyn FnMut(),
) -> Result<(bool, String), relocd_hypercall::Error> {
    let guard = Paused::new(xen, domid)?;
    // What was dirtied up to the pause goes; what follows is the test.
    xen.logdirty_clean(domid, bitmap, pages, false)?;
    let t = Instant::now();
    wait();
    let secs = t.elapsed().as_secs_f64();
    bitmap.fill(0);
    let peek = xen.logdirty_peek(domid, bitmap, pages)?;
    let bits = set_bits(bitmap);
    guard.resume()?;
    Ok((
        bits == 0,
        format!(
            "{bits} of {pages} pages dirtied in {secs:.2} s paused (PEEK dirty_count {})",
            peek.dirty_count
        ),
    ))
}

fn foreign_map_check<H: Hypervisor, T: Transport>(
    xen: &H,
    xs: &mut Xenstore<T>,
    domid: DomId,
) -> Check {
    let name = "foreign-map";
    let fail = |detail: String| Check {
        name,
        ok: false,
        detail,
    };
    let path = format!("/local/domain/{domid}/console/ring-ref");
    let frame = match xs.read_string(&path) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(f) => f,
            Err(_) => return fail(format!("{path} is {v:?}, not a frame number")),
        },
        Err(e) => return fail(e.to_string()),
    };
    let map = match xen.map_foreign(domid, &[frame], Prot::Read) {
        Ok(m) => m,
        Err(e) => return fail(format!("frame {frame:#x}: {e}")),
    };
    let mut page = Box::new([0u8; PAGE_SIZE]);
    if let Err(e) = map.read_page(0, &mut page) {
        return fail(format!("frame {frame:#x}: {e}"));
    }
    let (text, prod) = console_text(&page);
    let last_line = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Check {
        name,
        ok: prod > 0 && !last_line.is_empty(),
        detail: format!(
            "frame {frame:#x} (console ring): first bytes {} fnv1a64 {:016x}; \
             out_prod {prod}; last line \"{}\"",
            hex(&page[..16]),
            fnv1a64(&page[..]),
            last_line.escape_debug()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::xen::xenstore::fake::FakeXenstored;
    use relocd_hypercall::fake::{FakeDomain, FakeXen};

    const CONSOLE_PFN: u64 = 20;

    fn setup() -> (FakeXen, Xenstore<FakeXenstored>) {
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(0, 16, 1));
        x.add_domain(FakeDomain::pv(4, 64, 1));
        let xs = Xenstore::new(FakeXenstored::new(&[
            ("/local/domain/4/name", "e2e-guest"),
            ("/local/domain/4/console/ring-ref", "20"),
        ]));
        // the guest writes a line to its console ring
        let line = b"GUEST counter=7 sum=0123\r\n";
        assert!(x.guest_write(4, CONSOLE_PFN, cons::OUT.start, line));
        let prod = (line.len() as u32).to_le_bytes();
        assert!(x.guest_write(4, CONSOLE_PFN, cons::OUT_PROD.start, &prod));
        (x, xs)
    }

    #[test]
    fn every_check_passes_on_a_guest_that_writes_while_it_runs() {
        let (x, mut xs) = setup();
        assert_eq!(resolve_domain(&x, Some(&mut xs), "e2e-guest").unwrap(), 4);
        assert_eq!(resolve_domain(&x, Some(&mut xs), "4").unwrap(), 4);
        assert!(resolve_domain(&x, Some(&mut xs), "nope").is_err());
        let guest = x.clone();
        let mut tick = 0u8;
        let mut wait = || {
            tick += 1;
            // dirties three pages when it can run, none when paused
            for pfn in [1, 2, 3] {
                guest.guest_write(4, pfn, 0, &[tick]);
            }
        };
        let checks = run(&x, &mut xs, 4, &mut wait).unwrap();
        let names: Vec<_> = checks.iter().map(|c| (c.name, c.ok)).collect();
        assert_eq!(
            names,
            [
                ("pause", true),
                ("logdirty-running", true),
                ("logdirty-paused", true),
                ("logdirty-off", true),
                ("foreign-map", true),
                ("left-running", true),
            ],
            "{checks:#?}"
        );
        assert!(
            checks[1].detail.starts_with("3 of 64 pages"),
            "{}",
            checks[1]
        );
        assert!(
            checks[2].detail.starts_with("0 of 64 pages"),
            "{}",
            checks[2]
        );
        assert!(
            checks[4]
                .detail
                .ends_with("last line \"GUEST counter=7 sum=0123\""),
            "{}",
            checks[4]
        );
        let d = x.domain(4).unwrap();
        assert!(!d.logdirty);
        assert_eq!(
            d.info.flags & relocd_hypercall::abi::domctl::dominf::PAUSED,
            0
        );
    }

    #[test]
    fn a_guest_that_dirties_nothing_fails_and_is_left_running() {
        let (x, mut xs) = setup();
        let checks = run(&x, &mut xs, 4, &mut || {}).unwrap();
        let running = checks
            .iter()
            .find(|c| c.name == "logdirty-running")
            .unwrap();
        assert!(!running.ok, "{running}");
        assert!(checks.iter().find(|c| c.name == "left-running").unwrap().ok);
        assert!(!x.domain(4).unwrap().logdirty);
    }

    #[test]
    fn a_failing_hypercall_still_leaves_the_guest_unpaused_and_log_dirty_off() {
        let (x, mut xs) = setup();
        let guest = x.clone();
        let mut calls = 0;
        let mut wait = || {
            calls += 1;
            guest.guest_write(4, 1, 0, b"x");
            // the PEEK while paused fails
            if calls == 2 {
                guest.fail_next(
                    relocd_hypercall::Op::Domctl(relocd_hypercall::abi::domctl::cmd::SHADOW_OP),
                    relocd_hypercall::errno::EINVAL,
                );
            }
        };
        let checks = run(&x, &mut xs, 4, &mut wait).unwrap();
        let paused = checks.iter().find(|c| c.name == "logdirty-paused").unwrap();
        assert!(!paused.ok);
        assert!(paused.detail.contains("EINVAL"), "{paused}");
        let d = x.domain(4).unwrap();
        assert!(!d.logdirty);
        assert_eq!(
            d.info.flags & relocd_hypercall::abi::domctl::dominf::PAUSED,
            0
        );
    }

    #[test]
    fn without_shadow_paging_log_dirty_fails_plainly_and_the_rest_runs() {
        let (x, _xs) = setup();
        x.fail_next(
            relocd_hypercall::Op::Domctl(relocd_hypercall::abi::domctl::cmd::SHADOW_OP),
            relocd_hypercall::errno::EOPNOTSUPP,
        );
        let checks = logdirty_checks(&x, 4, 64, &mut || {});
        assert_eq!(checks.len(), 1, "{checks:#?}");
        assert!(!checks[0].ok);
        assert!(!x.domain(4).unwrap().logdirty);
        let e = checks.iter().find(|c| c.name == "logdirty-enable").unwrap();
        assert!(e.detail.contains("CONFIG_SHADOW_PAGING"), "{e}");
    }

    #[test]
    fn refuses_dom0_and_a_paused_guest() {
        let (x, mut xs) = setup();
        assert!(matches!(
            run(&x, &mut xs, 0, &mut || {}),
            Err(ProbeError::NotRunning(0, _))
        ));
        x.pause(4).unwrap();
        assert!(matches!(
            run(&x, &mut xs, 4, &mut || {}),
            Err(ProbeError::NotRunning(4, _))
        ));
        assert!(
            x.domain(4).unwrap().info.flags & relocd_hypercall::abi::domctl::dominf::PAUSED != 0
        );
    }

    #[test]
    fn console_text_follows_the_ring_around() {
        let mut page = [0u8; PAGE_SIZE];
        let out = cons::OUT.start;
        // 2050 bytes written: the ring wrapped, "ab" sit at its start
        page[out..out + 2048].fill(b'x');
        page[out] = b'a';
        page[out + 1] = b'b';
        page[cons::OUT_PROD].copy_from_slice(&2050u32.to_le_bytes());
        let (text, prod) = console_text(&page);
        assert_eq!(prod, 2050);
        assert_eq!(text.len(), 2048);
        assert!(text.ends_with("xab"));
        assert_eq!(console_text(&[0u8; PAGE_SIZE]).0, "");
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
