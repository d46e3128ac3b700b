//! relocd under Xen's security policy, on the fake hypervisor: a denial
//! (`EACCES`, what FLASK returns) reaches the user as the policy's refusal,
//! naming the operation, the domain and the FLASK permission, never a bare
//! errno; the guest runs on, unpaused; relocd refuses the domain it runs in
//! and leaves any other (dom0 included, when relocd is not in dom0) to Xen.

use crate::api::{CommandError, ErrorKind, NoProgress, SaveRequest, TransferSummary};
use crate::backend::xen::test_guest::*;
use crate::backend::xen::xenstore::fake::FakeXenstored;
use crate::backend::xen::xenstore::Xenstore;
use crate::engine::Service;
use relocd_hypercall::abi::domctl::cmd;
use relocd_hypercall::{errno, Op, XenOps};

/// Saves the test guest through the engine with relocd in domain `own`,
/// the fake hypervisor to fail `fail` (an operation and its errno).
fn save(
    g: &Guest,
    own: u16,
    tag: &str,
    live: bool,
    fail: Option<(Op, i32)>,
) -> Result<TransferSummary, CommandError> {
    let dir = scratch(&format!("xsm-{tag}"));
    let e = engine(g, &dir, Some(own));
    if let Some((op, errno)) = fail {
        // A lookup is asked twice (for `relocd status`, then for the
        // command); a policy denies both.
        if op == Op::Domctl(cmd::GETDOMAININFO) {
            g.xen.fail_always(op, errno);
        } else {
            g.xen.fail_on(op, errno);
        }
    }
    let r = e.save(
        &SaveRequest {
            domain: DOMID.to_string(),
            file: dir.join("web1.save"),
            keep_running: false,
            live,
            bandwidth_bytes_per_s: None,
        },
        &mut NoProgress,
    );
    g.xen.stop_failing();
    assert!(
        r.is_ok() || !dir.join("web1.save").exists(),
        "a failed save leaves no file"
    );
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn assert_runs_on(g: &Guest) {
    let info = g.xen.domain_info(DOMID).unwrap();
    assert!(
        !info.paused() && !info.shutdown(),
        "the guest runs on, unpaused: {info:?}"
    );
    assert!(!g.xen.domain(DOMID).unwrap().logdirty, "log-dirty is off");
}

/// The message says it is the policy, names operation, domain and
/// permission, and is not the plain errno form.
fn assert_denial(e: &CommandError, op: &str, permission: &str) {
    let m = &e.message;
    let want = format!("denied by Xen's security policy (XSM/FLASK): {op} on domain {DOMID}");
    assert!(m.contains(&want), "{want:?} not in {m:?}");
    assert!(
        m.contains(&format!("(needs FLASK permission {permission}")),
        "{permission} not in {m:?}"
    );
    assert!(!m.contains("failed: EACCES"), "a bare errno: {m:?}");
}

#[test]
fn a_denied_lookup_names_getdomaininfo_and_leaves_the_guest_alone() {
    let g = guest();
    let e = save(
        &g,
        0,
        "lookup",
        false,
        Some((Op::Domctl(cmd::GETDOMAININFO), errno::EACCES)),
    )
    .unwrap_err();
    assert_denial(&e, "domctl getdomaininfo", "domain:getdomaininfo");
    assert_runs_on(&g);
}

#[test]
fn a_denied_log_dirty_stops_a_live_save_and_the_guest_runs_on() {
    let g = guest();
    let e = save(
        &g,
        0,
        "logdirty",
        true,
        Some((Op::Domctl(cmd::SHADOW_OP), errno::EACCES)),
    )
    .unwrap_err();
    assert_denial(&e, "domctl shadow_op", "shadow:logdirty");
    assert_runs_on(&g);
}

#[test]
fn a_denied_foreign_mapping_names_map_read_and_the_guest_is_resumed() {
    let g = guest();
    let e = save(&g, 0, "map", false, Some((Op::MapForeign, errno::EACCES))).unwrap_err();
    assert_denial(&e, "foreign mapping", "mmu:map_read");
    assert_runs_on(&g);
}

#[test]
fn a_denied_page_type_query_after_the_suspend_resumes_the_guest() {
    let g = guest();
    let e = save(
        &g,
        0,
        "pfinfo",
        false,
        Some((Op::Domctl(cmd::GETPAGEFRAMEINFO3), errno::EACCES)),
    )
    .unwrap_err();
    assert_denial(&e, "domctl getpageframeinfo3", "mmu:pageinfo");
    assert_runs_on(&g);
}

#[test]
fn the_default_policy_s_eperm_is_named_too() {
    let g = guest();
    let e = save(
        &g,
        0,
        "eperm",
        false,
        Some((Op::Domctl(cmd::GETDOMAININFO), errno::EPERM)),
    )
    .unwrap_err();
    assert!(
        e.message.contains(
            "denied by Xen's security policy (XSM/FLASK): domctl getdomaininfo on domain 4"
        ),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("only a privileged domain"),
        "{}",
        e.message
    );
    assert_runs_on(&g);
}

#[test]
fn relocd_refuses_the_domain_it_runs_in_whatever_its_id() {
    let g = guest();
    // relocd in domain 4 (a driver domain): domain 4 is itself
    let e = save(&g, DOMID, "self", false, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
    assert!(
        e.message.contains("is the one relocd runs in"),
        "{}",
        e.message
    );
    assert_runs_on(&g);
    // relocd in another domain: domain 4 is a guest like any other
    save(&g, 9, "other", false, None).unwrap();
    assert!(g.xen.domain(DOMID).is_none(), "saved and destroyed");
}

#[test]
fn xenstore_s_eacces_points_at_xenstored_s_privileged_domain() {
    use crate::backend::xen::xenstore::{Header, MsgType};
    let mut f = FakeXenstored::new(&[]);
    let mut reply = Header {
        ty: MsgType::Error,
        req_id: 1,
        tx_id: 0,
        len: 7,
    }
    .emit()
    .to_vec();
    reply.extend_from_slice(b"EACCES\0");
    f.canned.push(reply);
    let mut xs = Xenstore::new(f);
    let e = xs.read_string("/local/domain/3/name").unwrap_err();
    let m = e.to_string();
    assert!(m.contains("EACCES") && m.contains("--priv-domid"), "{m}");
}

#[test]
fn a_guest_relocd_builds_gets_the_policy_s_default_guest_label() {
    use crate::backend::xen::pv_sink::{PvCreate, PvSink};
    let g = guest();
    let req = PvCreate {
        name: "web1-copy".into(),
        uuid: [9; 16],
        max_memkb: 4096,
        vcpus: 1,
    };
    let sink = PvSink::create(&g.xen, connect(&g), &req).unwrap();
    // not 0, which Xen turns into unlabeled_t when the creator is not dom0
    assert_eq!(
        g.xen.domain_info(sink.domid()).unwrap().ssidref,
        relocd_hypercall::xsm::SECINITSID_DOMU
    );
}

#[test]
fn a_denied_createdomain_names_domain_create() {
    use crate::backend::xen::pv_sink::{PvCreate, PvSink};
    let g = guest();
    g.xen.fail_on(Op::Domctl(cmd::CREATEDOMAIN), errno::EACCES);
    let req = PvCreate {
        name: "web1-copy".into(),
        uuid: [9; 16],
        max_memkb: 4096,
        vcpus: 1,
    };
    let e = PvSink::create(&g.xen, connect(&g), &req).err().unwrap();
    let m = e.to_string();
    assert!(
        m.contains("denied by Xen's security policy (XSM/FLASK): domctl createdomain")
            && m.contains("(needs FLASK permission domain:create)"),
        "{m}"
    );
}
