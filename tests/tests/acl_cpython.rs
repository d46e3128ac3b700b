//! Differential test of hosts-allow against CPython 3.11's `re.match`, the
//! function xend ran: ≥10,000 (patterns, address, name) cases from a seeded
//! generator, all decided by one python3 process, every verdict compared
//! (admitted or not, and which pattern first admits, on the name or the
//! address). Patterns Python rejects must be rejected by relocd, and
//! patterns relocd rejects as invalid must be invalid for Python.

use relocd_core::acl::{AclError, AlignedBytes, HostsAllow, HostsAllowRef};
use relocd_tests::acl_gen::{generate, python_oracle, verdict};

const SEED: u64 = 0x5eed_2026;

#[test]
fn hosts_allow_agrees_with_cpython() {
    // RELOCD_ACL_SEED=<u64> explores other cases; the default is fixed.
    let seed = std::env::var("RELOCD_ACL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let corpus = generate(seed, 1_500, 8);
    assert!(corpus.cases.len() >= 10_000);
    let oracle = python_oracle(&corpus);
    assert_eq!(oracle.verdicts.len(), corpus.cases.len());

    let mut compiled = Vec::with_capacity(corpus.settings.len());
    let (mut py_invalid, mut refused_valid, mut accepted) = (0, 0, 0);
    for (si, pats) in corpus.settings.iter().enumerate() {
        let text = corpus.setting_text(si);
        let py_ok = &oracle.compiles[si];
        let first_bad = py_ok.iter().position(|ok| !ok);
        match HostsAllow::compile(&text) {
            Ok((acl, _)) => {
                assert_eq!(
                    first_bad, None,
                    "relocd accepts `{text}` but Python rejects pattern {first_bad:?}"
                );
                assert_eq!(acl.patterns().count(), pats.len());
                accepted += 1;
                compiled.push(Some(acl));
            }
            Err(AclError::Pattern { index, kind, .. }) => {
                if kind.is_python_error() {
                    assert!(
                        !py_ok[index],
                        "relocd says pattern {index} of `{text}` is invalid Python ({kind}), Python accepts it"
                    );
                } else {
                    assert!(
                        first_bad.is_none_or(|b| index <= b),
                        "`{text}`: {kind} at {index}"
                    );
                }
                if first_bad.is_some() {
                    py_invalid += 1;
                } else {
                    refused_valid += 1;
                }
                compiled.push(None);
            }
            Err(e) => panic!("`{text}`: {e}"),
        }
    }

    // Decide every case twice: on the compiled DFA and on the serialized one.
    let blobs: Vec<Option<AlignedBytes>> = compiled
        .iter()
        .map(|a| a.as_ref().map(|a| AlignedBytes::copy_from(&a.to_bytes())))
        .collect();
    let (mut compared, mut admitted) = (0usize, 0usize);
    for (case, want) in corpus.cases.iter().zip(&oracle.verdicts) {
        let (Some(acl), Some(want)) = (&compiled[case.setting], want) else {
            continue;
        };
        let blob = blobs[case.setting].as_ref().expect("blob");
        let loaded = HostsAllowRef::from_bytes(blob.as_bytes()).expect("load");
        let name = case.name.as_deref();
        let got = verdict(acl.admit(&case.ip, name));
        assert_eq!(
            got,
            *want,
            "setting `{}` ip {} name {:?}",
            corpus.setting_text(case.setting),
            case.ip,
            case.name
        );
        assert_eq!(verdict(loaded.admit(&case.ip, name)), got);
        compared += 1;
        admitted += usize::from(got.is_some());
    }
    println!(
        "acl_cpython (seed {seed:#x}): {} cases, {compared} verdicts compared ({admitted} admitted, {} refused); \
         {} settings: {accepted} compiled, {py_invalid} invalid in Python (rejected by both), \
         {refused_valid} valid Python refused by relocd",
        corpus.cases.len(),
        compared - admitted,
        corpus.settings.len()
    );
    assert!(compared >= 10_000, "only {compared} verdicts compared");
    assert!(
        admitted >= compared / 5 && compared - admitted >= compared / 5,
        "cases not balanced: {admitted}/{compared}"
    );
    assert!(
        py_invalid >= 20 && refused_valid >= 20,
        "too few refusal cases: {py_invalid} {refused_valid}"
    );
}

/// Short random strings of metacharacters: whatever CPython rejects,
/// relocd rejects; whatever relocd rejects as invalid Python, CPython
/// rejects; nothing panics.
#[test]
fn syntax_errors_agree_with_cpython() {
    use relocd_tests::acl_gen::{Case, Corpus, Rng};
    const ALPHABET: &[u8] = b"()[]{}*+?|\\^$.-aZ09,:<>=!#PiLxu_";
    let mut rng = Rng::new(SEED ^ 0x5157);
    let mut corpus = Corpus::default();
    while corpus.settings.len() < 5_000 {
        let len = 1 + rng.below(8);
        let p: String = (0..len).map(|_| *rng.pick(ALPHABET) as char).collect();
        let setting = corpus.settings.len();
        corpus.settings.push(vec![p]);
        for _ in 0..2 {
            let name = rng.pick(&[
                "a", "Z", "aZ", "a-b", "ax", "P", "0", "_", "a.b", "aaa", "xu", "iL",
            ]);
            let ip = rng.pick(&["10.0.0.1", "::1", "a:0"]);
            corpus.cases.push(Case {
                setting,
                ip: ip.to_string(),
                name: Some(name.to_string()),
            });
        }
    }
    let oracle = python_oracle(&corpus);
    let mut verdicts = 0;
    for (case, want) in corpus.cases.iter().zip(&oracle.verdicts) {
        let (Ok((acl, _)), Some(want)) =
            (HostsAllow::compile(&corpus.settings[case.setting][0]), want)
        else {
            continue;
        };
        let got = verdict(acl.admit(&case.ip, case.name.as_deref()));
        assert_eq!(
            got, *want,
            "`{}` on {:?} {}",
            corpus.settings[case.setting][0], case.name, case.ip
        );
        verdicts += 1;
    }
    let (mut both_reject, mut both_accept, mut dfa_refused) = (0, 0, 0);
    for (pats, ok) in corpus.settings.iter().zip(&oracle.compiles) {
        let p = &pats[0];
        match (HostsAllow::compile(p), ok[0]) {
            (Ok(_), true) => both_accept += 1,
            (Ok(_), false) => panic!("relocd accepts `{p}`, CPython rejects it"),
            (Err(AclError::Pattern { .. }), false) => both_reject += 1,
            (Err(AclError::Pattern { kind, .. }), true) => {
                assert!(
                    !kind.is_python_error(),
                    "relocd says `{p}` is invalid Python ({kind}); CPython accepts it"
                );
                dfa_refused += 1;
            }
            (Err(e), _) => panic!("`{p}`: {e}"),
        }
    }
    println!(
        "acl syntax: {} patterns: {both_accept} accepted by both ({verdicts} verdicts compared), \
         {both_reject} rejected by both, {dfa_refused} valid Python refused (DFA-impossible)",
        corpus.settings.len()
    );
    assert!(
        both_reject > 1000 && both_accept > 500,
        "{both_reject} {both_accept}"
    );
}
