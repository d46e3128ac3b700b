//! TLS against plaintext on loopback, in the same run (release mode:
//! `cargo test --release -p relocd-tests --test tls_bench -- --ignored
//! --nocapture`; `cargo xtask bench` runs it). Not a timed test: each
//! migration's memory is checked, and the figures are printed: the idle
//! 1 GiB guest's (every page data, none zero) throughput over TLS as a fraction of plaintext's (goal at
//! least 0.8), the busy guest's downtime over TLS less plaintext's (goal
//! within 5 ms), each the median of several alternating runs, and the
//! handshake's time.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use relocd::backend::sim::GuestSpec;
use relocd::session::{Conn, SourceOptions, SourceReport};
use relocd::tls::{Tls, TlsFiles};
use relocd_tests::sim_migrate::migrate_over;
use relocd_tests::tls_certs::{write_files, Ca};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Runs of each configuration (alternating plain and TLS).
const RUNS: usize = 5;

struct Pair {
    server: Arc<Tls>,
    client: Arc<Tls>,
}

fn tls_pair(dir: &Path) -> Pair {
    let ca = Ca::new("relocd bench CA");
    let load = |f: relocd_tests::tls_certs::Files| {
        Arc::new(
            Tls::load(TlsFiles {
                key: f.key,
                cert: f.cert,
                ca: f.ca,
            })
            .unwrap()
            .0,
        )
    };
    Pair {
        server: load(write_files(
            dir,
            "server",
            &ca.issue(&["127.0.0.1"]),
            &[&ca],
        )),
        client: load(write_files(
            dir,
            "client",
            &ca.issue(&["hosta.example.org"]),
            &[&ca],
        )),
    }
}

/// A connected pair of links over loopback: (source's, destination's).
fn links(tls: Option<&Pair>) -> (Conn, Conn) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = tls.map(|p| p.server.clone());
    let accept = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        match server {
            Some(t) => Conn::Tls(
                t.accept(s, Instant::now() + std::time::Duration::from_secs(10))
                    .unwrap(),
            ),
            None => Conn::Tcp(s),
        }
    });
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let src = match tls {
        Some(p) => Conn::Tls(
            p.client
                .connect(s, "127.0.0.1", std::time::Duration::from_secs(10))
                .unwrap(),
        ),
        None => Conn::Tcp(s),
    };
    (src, accept.join().unwrap())
}

/// MiB/s of a copy of `bytes` in 4 MiB writes over a link pair (the
/// transport alone, no guest).
fn copy(tls: Option<&Pair>, bytes: u64) -> f64 {
    use std::io::{Read, Write};
    let (mut src, mut dst) = links(tls);
    let rx = thread::spawn(move || {
        let mut buf = vec![0u8; 4 << 20];
        let mut got = 0u64;
        while got < bytes {
            let n = dst.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n as u64;
        }
    });
    let buf = vec![0x5au8; 4 << 20];
    let t = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        src.write_all(&buf).unwrap();
        src.flush().unwrap();
        sent += buf.len() as u64;
    }
    rx.join().unwrap();
    bytes as f64 / MIB as f64 / t.elapsed().as_secs_f64()
}

/// A live migration of `spec` over [`links`] ([`migrate_over`]).
fn migrate_live(tag: &str, spec: &GuestSpec, tls: Option<&Pair>) -> SourceReport {
    let opts = SourceOptions::new(1, &spec.name, true);
    migrate_over(tag, spec, links(tls), &opts)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn line(tag: &str, r: &SourceReport) {
    println!(
        "  {tag}: rounds {} downtime {} ms total {} ms bandwidth {:.0} MiB/s",
        r.rounds, r.downtime_ms, r.total_ms, r.bandwidth_mib_s
    );
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn tls_against_plaintext() {
    let dir = std::env::temp_dir().join(format!("relocd-tlsbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pair = tls_pair(&dir);

    // The handshake: TCP connect, TLS 1.3 with both certificates verified.
    let mut hs = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let (a, b) = links(Some(&pair));
        hs.push(t.elapsed().as_secs_f64() * 1e3);
        drop((a, b));
    }
    let mut tcp = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let (a, b) = links(None);
        tcp.push(t.elapsed().as_secs_f64() * 1e3);
        drop((a, b));
    }
    println!(
        "handshake on loopback (median of 21): TCP connect {:.2} ms, TCP + TLS 1.3 with both \
         certificates verified {:.2} ms",
        median(tcp),
        median(hs)
    );

    let (mut tcp_copy, mut tls_copy) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        tcp_copy.push(copy(None, GIB));
        tls_copy.push(copy(Some(&pair), GIB));
    }
    let (cp, ct) = (median(tcp_copy), median(tls_copy));
    println!(
        "1 GiB copy, the link alone (median of {RUNS}): TCP {cp:.0} MiB/s, TLS {ct:.0} MiB/s, \
         TLS / TCP {:.2}",
        ct / cp
    );

    // Every page holds data: an idle guest of zero pages would send a few
    // MiB of markers and measure latency, not the link's throughput.
    let idle = GuestSpec::new("idle", GIB).unwrap().with_fill(100).unwrap();
    let busy = GuestSpec::new("busy", GIB)
        .unwrap()
        .with_dirty_rate(64 * MIB)
        .unwrap();
    let (mut idle_plain, mut idle_tls, mut busy_plain, mut busy_tls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        println!("run {}:", run + 1);
        // Which goes first alternates, so neither always meets a warmer machine.
        let order = if run % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for tls in order {
            if tls {
                let r = migrate_live("idle-tls", &idle, Some(&pair));
                line("idle 1 GiB, TLS", &r);
                idle_tls.push(r.bandwidth_mib_s);
            } else {
                let r = migrate_live("idle-plain", &idle, None);
                line("idle 1 GiB, plaintext", &r);
                idle_plain.push(r.bandwidth_mib_s);
            }
        }
        let r = migrate_live("busy-plain", &busy, None);
        line("1 GiB dirtying 64 MiB/s, plaintext", &r);
        busy_plain.push(r.downtime_ms as f64);
        let r = migrate_live("busy-tls", &busy, Some(&pair));
        line("1 GiB dirtying 64 MiB/s, TLS", &r);
        busy_tls.push(r.downtime_ms as f64);
    }
    let (ip, it) = (median(idle_plain), median(idle_tls));
    let (bp, bt) = (median(busy_plain), median(busy_tls));
    println!(
        "idle 1 GiB throughput (median of {RUNS}): plaintext {ip:.0} MiB/s, TLS {it:.0} MiB/s, \
         TLS / plaintext {:.2} (goal >= 0.8)",
        it / ip
    );
    println!(
        "1 GiB dirtying 64 MiB/s downtime (median of {RUNS}): plaintext {bp:.0} ms, TLS {bt:.0} \
         ms, TLS - plaintext {:+.0} ms (goal within 5 ms)",
        bt - bp
    );
    let _ = std::fs::remove_dir_all(&dir);
}
