//! Two real daemons (`Daemon::start` with the migration engine, in this
//! process) on loopback, driven through their management sockets with the
//! CLI's client: offline and live migration checked byte for byte against
//! the workload's recomputation, refusals with clear messages, a wrong
//! protocol version, save → verify-stream-v2 → restore, and bad input from
//! the network that the destination refuses while it stays up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relocd::api::{
    ErrorKind, MigrateRequest, Outcome, PeerReason, Request, RestoreRequest, SaveRequest,
};
use relocd::client::{Client, ClientError};
use relocd::daemon::listener::{PatternAdmission, PendingLimits};
use relocd_core::protocol::msg::{self, Hello, Msg, MAGIC};
use relocd_core::protocol::Features;
use relocd_tests::daemons::{
    check_moved, create, create_filled, eventually, logs, migrate_req, migration, node, running_at,
    scratch, NoNames, Node, NodeSpec,
};

const MIB: u64 = 1 << 20;

/// A daemon `tag` in `dir`, with a plain relocation listener or not.
fn daemon(dir: &Path, tag: &str, listen: bool) -> Node {
    node(
        dir,
        NodeSpec {
            plain: listen,
            ..NodeSpec::new(tag)
        },
    )
}

#[test]
fn offline_then_live_migration_through_the_control_socket() {
    let dir = scratch("moves");
    let a = daemon(&dir, "a", true);
    let b = daemon(&dir, "b", true);
    let spec = create(&a, "web1", 16 * MIB);
    std::thread::sleep(Duration::from_millis(100));

    // Offline, packed (--compress): the simulator's pages shrink on the wire.
    let Request::Migrate(mut packed) = migrate_req("web1", b.addr(), false) else {
        unreachable!()
    };
    packed.compress = true;
    let out = a.call(&Request::Migrate(packed)).unwrap();
    let Outcome::Migrated(s) = out else { panic!() };
    assert_eq!(s.domain, "web1");
    assert_eq!(s.rounds, 1, "offline: the stop-and-copy only");
    assert_eq!(s.pages_sent, 16 * MIB / 4096);
    assert!(s.bytes_sent > 0 && s.bytes_sent < 16 * MIB, "{s:?}");
    check_moved(&spec, &a, &b);

    // And back, live, with progress lines.
    let mut client = Client::connect(b.control()).unwrap();
    let mut lines = 0;
    let out = client
        .call(&migrate_req("web1", a.addr(), true), |_| lines += 1)
        .unwrap();
    let Outcome::Migrated(s) = out else { panic!() };
    assert!(s.rounds >= 2, "{s:?}");
    // Not packed unless asked, but the zero pages (all but the hot set
    // and the pages the workload spread over) travel as markers.
    assert!(s.bytes_sent < 16 * MIB, "{s:?}");
    assert!(s.pages_sent >= 16 * MIB / 4096);
    assert!(s.zero_pages > 0, "{s:?}");
    assert!(lines > 0);
    check_moved(&spec, &b, &a);

    // Offline again with --no-zero-pages: every page goes in full.
    let Request::Migrate(mut full) = migrate_req("web1", b.addr(), false) else {
        unreachable!()
    };
    full.no_zero_pages = true;
    let Outcome::Migrated(s) = a.call(&Request::Migrate(full)).unwrap() else {
        panic!()
    };
    assert_eq!(s.zero_pages, 0, "{s:?}");
    assert_eq!(s.pages_sent, 16 * MIB / 4096);
    assert!(s.bytes_sent > 16 * MIB, "{s:?}");
    check_moved(&spec, &a, &b);
    // Both journals hold only settled sessions.
    for n in [&a, &b] {
        let open = relocd::journal::unresolved(&n.daemon.journal().entries().unwrap());
        assert!(open.is_empty(), "{open:?}");
    }
}

/// A live migration of web1 from `a` to `to` that must be refused
/// ([`daemons::refused`](relocd_tests::daemons::refused)); the
/// destination's typed reason.
fn refused(a: &Node, to: SocketAddr, kind: ErrorKind, needle: &str) -> Option<PeerReason> {
    relocd_tests::daemons::refused(a, &migrate_req("web1", to, true), kind, &[needle]).peer
}

#[test]
fn refusals_have_clear_messages_and_the_guest_stays() {
    let dir = scratch("refusals");
    let a = daemon(&dir, "a", false);
    create(&a, "web1", 16 * MIB);

    let deny = node(
        &dir,
        NodeSpec {
            plain: true,
            admission: Arc::new(PatternAdmission::new(
                NoNames,
                |ip: &str, _: Option<&str>| ip == "10.9.9.9",
            )),
            ..NodeSpec::new("deny")
        },
    );
    refused(&a, deny.addr(), ErrorKind::Refused, "hosts-allow");
    eventually("the refusal is logged", || {
        logs().contains("relocation connection refused")
    });

    let small = node(
        &dir,
        NodeSpec {
            plain: true,
            capacity: 8 * MIB,
            ..NodeSpec::new("small")
        },
    );
    let peer = refused(
        &a,
        small.addr(),
        ErrorKind::Refused,
        "refused web1: not enough free memory for web1 (needs 16 MiB, has 8 MiB)",
    );
    // --json carries the destination's typed reason and its words
    assert_eq!(
        peer,
        Some(PeerReason {
            reason: "no_capacity".into(),
            detail: "not enough free memory for web1 (needs 16 MiB, has 8 MiB)".into(),
        })
    );
    assert!(small.sim.hypervisor().list().is_empty());

    let taken = daemon(&dir, "taken", true);
    create(&taken, "web1", 4 * MIB);
    refused(
        &a,
        taken.addr(),
        ErrorKind::Refused,
        "refused web1: a domain called web1 exists already",
    );
    assert_eq!(taken.sim.hypervisor().list().len(), 1);

    // Nothing listens: the relocation server is off there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    match a.call(&migrate_req("web1", port, true)) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::Network);
            assert!(e.message.contains("connection refused"), "{e:?}");
            assert!(e.message.contains("relocation server"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    running_at(&a, "web1");
}

fn frame(m: &Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let n = msg::encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_be_bytes(h) as usize;
    assert!(len <= 4096);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn wrong_protocol_version_is_refused_and_logged() {
    let dir = scratch("version");
    let b = daemon(&dir, "b", true);
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame(&Msg::Hello(Hello {
        magic: MAGIC,
        min_version: 7,
        max_version: 9,
        features: Features::ALL,
    })))
    .unwrap();
    let body = read_frame(&mut s).expect("an answer");
    match msg::decode(&body).unwrap() {
        Msg::VersionRefused(v) => {
            assert_eq!((v.min_version, v.max_version), (2, 2));
        }
        other => panic!("{other:?}"),
    }
    eventually("the daemon logs the refusal", || {
        let l = logs();
        l.contains("incompatible protocol version") && l.contains("theirs=9")
    });
}

/// Xen's verify-stream-v2 on a file (`-i FILE`: its unbuffered reads of a
/// pipe come back short on records larger than the pipe's buffer).
fn verify_file(file: &Path) {
    let root = relocd_tests::xen_utils::root().expect("verify-stream-v2 must be available");
    let lib = root.join("usr/lib/xen-4.17");
    let out = std::process::Command::new("python3")
        .arg(lib.join("bin/verify-stream-v2"))
        .args(["-v", "--format", "xl", "-i"])
        .arg(file)
        .env("PYTHONPATH", lib.join("lib/python"))
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify-stream-v2 refused: {text}");
    assert!(text.contains("Libxl Record: End"), "{text}");
}

#[test]
fn save_verify_restore_gives_the_same_memory() {
    let dir = scratch("save");
    let a = daemon(&dir, "a", false);
    let b = daemon(&dir, "b", false);
    let spec = create(&a, "db1", 8 * MIB);
    let g = a.sim.hypervisor().by_name("db1").unwrap();
    eventually("some steps", || g.steps().unwrap() > 5);
    let file = dir.join("db1.save");
    let out = a
        .call(&Request::Save(SaveRequest {
            domain: "db1".into(),
            file: file.clone(),
            keep_running: false,
            live: false,
            bandwidth_bytes_per_s: None,
        }))
        .unwrap();
    let Outcome::Saved(s) = out else { panic!() };
    assert_eq!(s.pages_sent, 8 * MIB / 4096);
    let saved_steps = g.steps();
    assert!(
        a.sim.hypervisor().by_name("db1").is_none(),
        "gone after save"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, s.bytes_sent);
    assert!(!dir.join("db1.save.tmp").exists());
    relocd_core::stream::reader::decode_all(
        &bytes,
        relocd_core::stream::reader::Options::STRICT,
        4096,
        |_| {},
    )
    .unwrap();
    verify_file(&file);

    let out = b
        .call(&Request::Restore(RestoreRequest { file: file.clone() }))
        .unwrap();
    let Outcome::Restored(info) = out else {
        panic!()
    };
    assert_eq!(info.name, "db1");
    assert_eq!(info.memory_bytes, 8 * MIB);
    let r = b.sim.hypervisor().by_name("db1").unwrap();
    r.pause().unwrap();
    let steps = r.steps().unwrap();
    assert!(Some(steps) >= saved_steps);
    r.verify(&spec.expected_memory(steps)).unwrap();
    r.unpause().unwrap();
    eventually("it runs on", || r.steps().unwrap() > steps);

    // A damaged file restores nothing and says where.
    std::fs::write(dir.join("bad.save"), &bytes[..bytes.len() / 2]).unwrap();
    let e = a
        .call(&Request::Restore(RestoreRequest {
            file: dir.join("bad.save"),
        }))
        .unwrap_err();
    assert!(e.to_string().contains("incomplete"), "{e}");
    assert!(
        a.sim.hypervisor().list().is_empty(),
        "the half-built copy is gone"
    );
}

#[test]
fn bad_input_from_the_network_is_refused_and_the_daemon_serves_on() {
    let dir = scratch("badinput");
    let a = daemon(&dir, "a", false);
    let b = daemon(&dir, "b", true);
    let hello = frame(&Msg::Hello(Hello {
        magic: MAGIC,
        min_version: 2,
        max_version: 2,
        features: Features::ALL,
    }));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            (0..200u32).map(|i| (i * 37 + 11) as u8).collect(),
        ),
        ("oversize length", vec![0xff, 0xff, 0xff, 0xf0, 1, 2, 3]),
        ("xend's protocol", b"(receive)".to_vec()),
        ("out of order", {
            let mut v = hello.clone();
            v.extend(frame(&Msg::Commit));
            v
        }),
        ("image before admission", {
            let mut v = hello.clone();
            v.extend(frame(&Msg::Image(&[0u8; 16])));
            v
        }),
    ];
    for (what, bytes) in &cases {
        let before = logs().matches("relocation failed").count();
        let mut s = TcpStream::connect(b.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        // The daemon answers (HelloAck, Abort) or not, then hangs up.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        eventually(what, || {
            logs().matches("relocation failed").count() > before
        });
        assert!(b.sim.hypervisor().list().is_empty(), "{what}");
    }
    // It still serves a migration.
    let spec = create(&a, "web1", 8 * MIB);
    a.call(&migrate_req("web1", b.addr(), true)).unwrap();
    check_moved(&spec, &a, &b);
}

#[test]
fn cancel_from_the_client_leaves_the_guest_running_at_the_source() {
    let dir = scratch("cancel");
    let a = daemon(&dir, "a", false);
    let b = daemon(&dir, "b", true);
    create_filled(&a, "web1", 16 * MIB, 100);
    let to = b.addr();
    let mut client = Client::connect(a.control()).unwrap();
    let mut canceller = client.canceller().unwrap();
    let mut sent = false;
    // 16 MiB at 4 MiB/s: the first progress line (a round's end) comes
    // seconds before the end, and the cancel with it.
    let r = client.call(
        &Request::Migrate(MigrateRequest {
            live: true,
            bandwidth_bytes_per_s: Some(4 * MIB),
            ..migration("web1", to)
        }),
        |p| {
            if !sent && p.pages_sent > 0 {
                canceller.cancel().unwrap();
                sent = true;
            }
        },
    );
    match r {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::Cancelled, "{e:?}");
            assert!(e.message.contains("keeps running here"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sent);
    running_at(&a, "web1");
    eventually("the destination drops its copy", || {
        b.sim.hypervisor().list().is_empty()
    });
}

/// `--bandwidth` holds on an offline migration and an offline save too (it
/// once applied to live rounds only): the average rate stays under the cap.
/// An upper bound, so a slow machine cannot make it fail.
#[test]
fn the_bandwidth_cap_holds_offline() {
    let dir = scratch("offline-cap");
    let a = daemon(&dir, "a", false);
    let b = daemon(&dir, "b", true);
    create(&a, "web1", 8 * MIB);
    let cap = 16 * MIB;
    let to = b.addr();
    let Ok(Outcome::Migrated(s)) = a.call(&Request::Migrate(MigrateRequest {
        live: false,
        bandwidth_bytes_per_s: Some(cap),
        ..migration("web1", to)
    })) else {
        panic!("the migration failed")
    };
    let rate = s.bytes_sent as f64 / (s.total_ms / 1000.0);
    assert!(
        rate <= cap as f64 * 1.1,
        "{rate:.0} B/s over a {cap} B/s cap: {s:?}"
    );
    let file = dir.join("web1.save");
    let Ok(Outcome::Saved(s)) = b.call(&Request::Save(SaveRequest {
        domain: "web1".into(),
        file,
        keep_running: true,
        live: false,
        bandwidth_bytes_per_s: Some(cap),
    })) else {
        panic!("the save failed")
    };
    let rate = s.bytes_sent as f64 / (s.total_ms / 1000.0);
    assert!(
        rate <= cap as f64 * 1.1,
        "{rate:.0} B/s over a {cap} B/s cap: {s:?}"
    );
}

#[test]
fn the_demo_runs_and_its_checks_pass() {
    let args = relocd::demo::DemoArgs {
        memory: 16 * MIB,
        dirty_rate: 4 * MIB,
        pattern: relocd::cli::sim::PatternArg::Hot,
        downtime_limit: 300,
        warm_up: 50,
    };
    let out = relocd::cli::Output {
        json: true,
        progress: false,
    };
    relocd::demo::run(&args, &out).unwrap();
}

/// A destination whose connections awaiting admission are all taken (here
/// by idle connections from the source's own address) answers with the
/// protocol's busy refusal, and the source says the host is busy, never
/// that hosts-allow refused it.
#[test]
fn a_host_with_no_room_for_another_connection_is_said_to_be_busy() {
    let dir = scratch("pending-full");
    let a = daemon(&dir, "a", false);
    let b = node(
        &dir,
        NodeSpec {
            plain: true,
            pending: PendingLimits {
                handshake_timeout: Duration::from_secs(60),
                per_address: 1,
            },
            ..NodeSpec::new("b")
        },
    );
    create(&a, "web1", 8 * MIB);
    let to = b.addr();
    // Connected first, so accepted first (the listen queue is in order).
    let _idle = std::net::TcpStream::connect(to).unwrap();
    let peer = refused(
        &a,
        to,
        ErrorKind::Refused,
        &format!("{to} is busy: too many connections awaiting admission"),
    );
    assert_eq!(peer.map(|p| p.reason).as_deref(), Some("busy"));
    assert!(b.sim.hypervisor().list().is_empty());
}

#[test]
fn the_concurrency_limit_refuses_with_the_protocols_reason() {
    let dir = scratch("busy");
    let a = daemon(&dir, "a", false);
    let b = node(
        &dir,
        NodeSpec {
            plain: true,
            max_sessions: 1,
            ..NodeSpec::new("b")
        },
    );
    create(&a, "slow", 16 * MIB);
    create(&a, "web1", 8 * MIB);
    let to = b.addr();
    // One migration holds the only slot (16 MiB at 8 MiB/s)…
    let control = a.control().to_owned();
    let first = std::thread::spawn(move || {
        Client::connect(&control).unwrap().call(
            &Request::Migrate(MigrateRequest {
                live: true,
                bandwidth_bytes_per_s: Some(8 * MIB),
                ..migration("slow", to)
            }),
            |_| {},
        )
    });
    eventually("the first migration is admitted", || {
        b.sim.hypervisor().by_name("slow").is_some()
    });
    // …so the next is refused with the reason, and stays: the host is
    // said to be busy (not refusing this guest or this host).
    let peer = refused(
        &a,
        to,
        ErrorKind::Refused,
        &format!("{to} is busy: too many migrations in progress (at most 1)"),
    );
    assert_eq!(
        peer.map(|p| p.reason).as_deref(),
        Some("too_many_migrations")
    );
    first.join().unwrap().unwrap();
    assert!(b.sim.hypervisor().by_name("slow").is_some());
}
