//! `cargo xtask bench`: relocd's benchmarks, each printed beside its reference.
//!
//! hosts-allow: decisions per second of relocd (the serialized-DFA path:
//! `to_bytes`, aligned copy, `HostsAllowRef::from_bytes`, then `admit`) and
//! of CPython's `re` (one python3 process timing
//! `any(p.match(name) or p.match(ip) for p in compiled)`), on the same
//! generated cases.

use std::hint::black_box;
use std::time::{Duration, Instant};

use relocd_core::acl::{AlignedBytes, HostsAllow, HostsAllowRef};
use relocd_tests::acl_gen::{generate, python_bench, Corpus};

const SEED: u64 = 0x0be7_cac1;
const MIN_TIME: Duration = Duration::from_millis(1500);

/// Keeps the settings relocd compiles and the cases that carry a name.
fn usable(c: Corpus) -> (Corpus, Vec<AlignedBytes>) {
    let mut out = Corpus::default();
    let mut blobs = Vec::new();
    let mut map = vec![None; c.settings.len()];
    for (i, pats) in c.settings.iter().enumerate() {
        if let Ok((acl, _)) = HostsAllow::compile(&pats.join(" ")) {
            map[i] = Some(out.settings.len());
            out.settings.push(pats.clone());
            blobs.push(AlignedBytes::copy_from(&acl.to_bytes()));
        }
    }
    for case in c.cases {
        if let (Some(s), Some(_)) = (map[case.setting], &case.name) {
            out.cases
                .push(relocd_tests::acl_gen::Case { setting: s, ..case });
        }
    }
    (out, blobs)
}

fn bench(title: &str, corpus: &Corpus, blobs: &[AlignedBytes]) {
    let acls: Vec<HostsAllowRef<'_>> = blobs
        .iter()
        .map(|b| HostsAllowRef::from_bytes(b.as_bytes()).expect("load serialized DFA"))
        .collect();
    let cases: Vec<(&HostsAllowRef<'_>, &str, Option<&str>)> = corpus
        .cases
        .iter()
        .map(|c| (&acls[c.setting], c.ip.as_str(), c.name.as_deref()))
        .collect();
    let (mut rounds, mut admitted) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < MIN_TIME {
        admitted = 0;
        for &(acl, ip, name) in &cases {
            admitted +=
                u64::from(black_box(acl.admit(black_box(ip), black_box(name))).is_admitted());
        }
        rounds += 1;
    }
    let ns = start.elapsed().as_nanos() as f64;
    let ours_n = rounds * cases.len() as u64;
    let ours_ns = ns / ours_n as f64;

    let (py_n, py_ns_total, py_admitted) = python_bench(corpus, MIN_TIME.as_nanos() as u64);
    let py_ns = py_ns_total as f64 / py_n as f64;

    println!("hosts-allow: {title}");
    println!(
        "  {} cases over {} settings; admitted per round: relocd {admitted}, CPython {py_admitted}{}",
        cases.len(),
        corpus.settings.len(),
        if admitted == py_admitted { "" } else { "  (MISMATCH)" }
    );
    println!("  {:<28} {:>16} {:>14}", "", "decisions/s", "ns/decision");
    println!(
        "  {:<28} {:>16.0} {:>14.1}",
        "relocd (serialized DFA)",
        1e9 / ours_ns,
        ours_ns
    );
    println!(
        "  {:<28} {:>16.0} {:>14.1}",
        "CPython 3 re.match",
        1e9 / py_ns,
        py_ns
    );
    println!(
        "  {:<28} {:>15.1}x",
        "ratio (relocd / CPython)",
        py_ns / ours_ns
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  goals: < 1 us per decision {}; >= 100x CPython {}",
        verdict(ours_ns < 1000.0),
        verdict(py_ns / ours_ns >= 100.0)
    );
    println!();
}

fn main() {
    let (mixed, blobs) = usable(generate(SEED, 400, 40));
    bench(
        "generated settings (1-4 patterns each, hits and near misses)",
        &mixed,
        &blobs,
    );

    let seed = Corpus {
        settings: vec![vec![
            r"^localhost$".into(),
            r"^localhost\.localdomain$".into(),
        ]],
        cases: Vec::new(),
    };
    let mut seed_cases = Corpus {
        cases: Vec::new(),
        ..seed
    };
    // 250 rounds of the four cases, so the clock is read rarely.
    for (ip, name) in [
        ("127.0.0.1", "localhost"),
        ("192.0.2.10", "node10.cluster.example"),
        ("127.0.0.1", "localhost.localdomain"),
        ("198.51.100.7", "localhost.localdomain.evil.example"),
    ]
    .repeat(250)
    {
        seed_cases.cases.push(relocd_tests::acl_gen::Case {
            setting: 0,
            ip: ip.into(),
            name: Some(name.into()),
        });
    }
    let (seed_cases, blobs) = usable(seed_cases);
    bench(
        "xend-config.sxp's example '^localhost$ ^localhost\\.localdomain$'",
        &seed_cases,
        &blobs,
    );

    // A site-sized list: one pattern per node of a 32-node cluster plus two
    // management subnets, the shape of a real relocation ACL. Python tries
    // the patterns one by one; the DFA walks the input once.
    let mut site: Vec<String> = (1..=32)
        .map(|n| format!(r"^node{n:02}\.cluster\.example\.org$"))
        .collect();
    site.push(r"^10\.1\.2\.\d{1,3}$".into());
    site.push(r"^10\.1\.3\.\d{1,3}$".into());
    let mut site_cases = Corpus {
        settings: vec![site],
        cases: Vec::new(),
    };
    for round in 0..250u32 {
        let node = round % 40 + 1; // nodes 33..40 are not in the list
        for (ip, name) in [
            (
                format!("192.0.2.{}", node),
                format!("node{node:02}.cluster.example.org"),
            ),
            (
                format!("10.1.3.{}", round % 250),
                "mgmt.example.org".to_owned(),
            ),
            (
                "198.51.100.7".to_owned(),
                "node01.cluster.example.org.evil.example".to_owned(),
            ),
            ("203.0.113.9".to_owned(), "unknown.example.net".to_owned()),
        ] {
            site_cases.cases.push(relocd_tests::acl_gen::Case {
                setting: 0,
                ip,
                name: Some(name),
            });
        }
    }
    let (site_cases, blobs) = usable(site_cases);
    bench(
        "a site-sized list: 32 node names and 2 subnets (34 patterns)",
        &site_cases,
        &blobs,
    );
}
