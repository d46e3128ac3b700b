//! Test vectors for the Python `re` parser, the DFA and the serialized form.
//! Expected verdicts were checked with CPython 3.11's `re.match`.

use super::PatternErrorKind as K;
use super::*;
use alloc::string::ToString;
use alloc::vec::Vec;

fn is_match(pattern: &str, input: &str) -> bool {
    let (acl, _) = HostsAllow::compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    acl.as_ref().first_match(input) == Some(0)
}

fn refusal(pattern: &str) -> K {
    match HostsAllow::compile(pattern) {
        Err(AclError::Pattern { kind, .. }) => kind,
        Err(e) => panic!("{pattern}: unexpected {e}"),
        Ok(_) => panic!("{pattern}: accepted"),
    }
}

#[track_caller]
fn check(pattern: &str, yes: &[&str], no: &[&str]) {
    for y in yes {
        assert!(is_match(pattern, y), "{pattern} should match {y}");
    }
    for n in no {
        assert!(!is_match(pattern, n), "{pattern} should not match {n}");
    }
}

#[test]
fn literals_and_prefix_semantics() {
    check(
        "host",
        &["host", "hostile", "host.example"],
        &["hos", "ahost", "HOST"],
    );
    check(
        r"host\.example",
        &["host.example", "host.example.org"],
        &["hostxexample"],
    );
    check("(?:)", &["anything", "x"], &[]);
}

#[test]
fn anchors() {
    check(
        "^localhost$",
        &["localhost"],
        &["localhost.localdomain", "xlocalhost"],
    );
    check(r"a\Z", &["a"], &["ab"]);
    check(r"\Aa", &["a", "ab"], &["ba"]);
    check(r"a\b", &["a", "a.b", "a-b"], &["ab", "a_"]);
    check(r"a\B", &["ab", "a_"], &["a", "a.b"]);
    // Python's `$` also matches before a final newline; inputs never hold
    // one, so it is the end of text here.
    check("a$", &["a"], &["ab", "a.b"]);
    check("(?m)a$", &["a"], &["ab"]);
    check("(?m)^a", &["a"], &["ba"]);
}

#[test]
fn classes_and_escapes() {
    check(r"\d+$", &["0", "123"], &["12a", "a"]);
    check(r"\D", &["a", "."], &["1"]);
    check(r"\w+$", &["a_1"], &["a-1"]);
    check(r"\W", &["-", "."], &["a"]);
    check(r"\s", &[], &["a", "-"]);
    check(r"\S", &["a"], &[]);
    check("[a-c]+$", &["abc"], &["abd"]);
    check("[^a-c]", &["d", "."], &["a"]);
    check("[]a]", &["]", "a"], &["b"]);
    check("[^]]", &["a"], &["]"]);
    check("[a-]", &["-", "a"], &["b"]);
    check(r"[\d.]+$", &["10.0.0.1"], &["10.0.0.x"]);
    check(r"\x41\u0042\U00000043\101\0", &[], &["ABCA"]);
    check(r"\x41\u0042\U00000043\101", &["ABCA"], &["ABCB"]);
    check(r"[\x2d]", &["-"], &["a"]);
    check(r"\.", &["."], &["a"]);
    check(r"\-", &["-"], &["a"]);
    check(".", &["a", "."], &[]);
    check("é", &[], &["e", "a"]);
}

#[test]
fn posix_class_lookalike_is_a_python_set() {
    // Python reads `[[:alpha:]]` as the set `[:alph` followed by `]`.
    check(
        "[[:alpha:]]$",
        &["a]", ":]", "[]", "h]"],
        &["b]", "a", "aa"],
    );
}

#[test]
fn braces() {
    check("a{2}$", &["aa"], &["a", "aaa"]);
    check("a{,2}$", &["", "a", "aa"], &["aaa"]);
    check("a{2,}$", &["aa", "aaaa"], &["a"]);
    check("a{,}$", &["", "aaa"], &["b"]);
    check("a{}$", &["a{}"], &["a"]);
    check("a{x}$", &["a{x}"], &["a"]);
    check("a{1,2$", &["a{1,2"], &["a"]);
    check("{", &["{"], &["a"]);
    check("a{1}?$", &["a"], &["aa"]);
    check("(?:ab)+$", &["abab"], &["aba"]);
    check("a*?b", &["aab", "b"], &["a"]);
}

#[test]
fn groups_flags_comments() {
    check("(?P<n>ab)c", &["abc"], &["ab"]);
    check("(?:a|b)c", &["ac", "bc"], &["cc"]);
    check("(ab|cd)$", &["cd"], &["ce"]);
    check("(?i)HOST", &["host", "HoSt"], &["hast"]);
    check("(?i:a)b", &["Ab"], &["AB"]);
    check("(?i)a(?-i:b)", &["Ab"], &["AB"]);
    check("a(?#comment)b", &["ab"], &["a"]);
    check("(?#x)(?i)b", &["B"], &[]);
    check("(?s).", &["a"], &[]);
    check("(?x)a#comment", &["a"], &["b"]);
    check("(?x)a[#]", &["a#"], &["a"]);
    check("(?i)[a-c]+$", &["ABC"], &["ABD"]);
    check("(?i)[^a]", &["b"], &["A", "a"]);
    // Unicode case folding that reaches ASCII (CPython 3.11).
    check("(?i)\u{212a}", &["k", "K"], &["x"]);
    check("(?i)\u{131}", &["i", "I"], &[]);
    check("(?i)[\u{17f}]", &["s", "S"], &[]);
    check("(?i)\u{130}", &["i", "I"], &[]);
    check("(?ai)\u{212a}", &[], &["k", "K"]);
    check("(?a:(?i:\u{212a}))", &[], &["k"]);
}

#[test]
fn python_errors_are_errors() {
    let cases: &[(&str, K)] = &[
        (r"\q", K::BadEscape),
        (r"a\", K::BadEscapeEnd),
        (r"\x4", K::IncompleteEscape),
        (r"\u12", K::IncompleteEscape),
        (r"\U00110000", K::BadEscape),
        (r"\400", K::OctalOutOfRange),
        (r"[\400]", K::OctalOutOfRange),
        (r"\8", K::InvalidGroupReference),
        (r"[\8]", K::BadEscape),
        (r"[\A]", K::BadEscape),
        (r"[\Z]", K::BadEscape),
        ("[a", K::UnterminatedSet),
        ("[]", K::UnterminatedSet),
        ("[a-", K::UnterminatedSet),
        ("[z-a]", K::BadCharacterRange),
        (r"[\d-z]", K::BadCharacterRange),
        ("*a", K::NothingToRepeat),
        ("^*", K::NothingToRepeat),
        (r"\b+", K::NothingToRepeat),
        ("a**", K::MultipleRepeat),
        ("a*??", K::MultipleRepeat),
        ("a{2}{3}", K::MultipleRepeat),
        ("a{3,2}", K::MinRepeatGreaterThanMax),
        ("a{4294967295}", K::RepeatNumberTooLarge),
        ("a)", K::UnbalancedParenthesis),
        ("(a", K::MissingParenthesis),
        ("(?#a", K::UnterminatedComment),
        ("(?Q)", K::UnknownExtension),
        ("(?<n>a)", K::UnknownExtension),
        ("(?Px)", K::UnknownExtension),
        ("(?P<>a)", K::MissingGroupName),
        ("(?P<a", K::UnterminatedName),
        ("(?P<1a>x)", K::BadGroupName),
        ("(?P<a>x)(?P<a>y)", K::GroupNameRedefined),
        ("(?P=a)", K::UnknownGroupName),
        ("(?P<a>(?P=a))", K::OpenGroupReference),
        ("(a\\1)", K::OpenGroupReference),
        ("a(?i)", K::GlobalFlagsNotAtStart),
        ("a|(?i)b", K::GlobalFlagsNotAtStart),
        ("((?i)b)", K::GlobalFlagsNotAtStart),
        ("(?L)a", K::LocaleFlag),
        ("(?au)a", K::IncompatibleFlags),
        ("(?a)(?u)a", K::IncompatibleFlags),
        ("(?iz)a", K::UnknownFlag),
        ("(?-)a", K::MissingFlag),
        ("(?i", K::MissingDashColonParen),
        ("(?-i)", K::MissingColon),
        ("(?-a:x)", K::TurnOffTypeFlag),
        ("(?i-i:x)", K::FlagOnAndOff),
        ("(?", K::UnexpectedEnd),
    ];
    for &(p, k) in cases {
        assert_eq!(refusal(p), k, "{p}");
        assert!(k.is_python_error(), "{p}");
    }
}

#[test]
fn dfa_impossible_constructs_are_refused() {
    let cases: &[(&str, K, usize)] = &[
        (r"(a)\1", K::Backreference, 3),
        ("(?P<x>a)(?P=x)", K::Backreference, 8),
        ("a(?=b)", K::LookAhead, 1),
        ("a(?!b)", K::LookAhead, 1),
        ("(?<=a)b", K::LookBehind, 0),
        ("(?<!a)b", K::LookBehind, 0),
        ("(a)(?(1)b|c)", K::Conditional, 3),
        ("(?>a)", K::AtomicGroup, 0),
        ("a*+", K::PossessiveRepeat, 1),
        ("a++", K::PossessiveRepeat, 1),
        ("a?+", K::PossessiveRepeat, 1),
        ("a{1,2}+", K::PossessiveRepeat, 1),
        (r"\N{DIGIT_ONE}", K::NamedUnicodeEscape, 0),
        ("(?t)a", K::TemplateFlag, 0),
        ("a{1001}", K::RepeatCountTooLarge, 1),
    ];
    for &(p, k, at) in cases {
        let setting = alloc::format!("ok\\.example {p}");
        match HostsAllow::compile(&setting) {
            Err(
                e @ AclError::Pattern {
                    index,
                    start,
                    offset,
                    kind,
                    ..
                },
            ) => {
                assert_eq!((index, start, offset, kind), (1, 12, at, k), "{p}");
                assert!(!k.is_python_error());
                let text = e.with_setting(&setting).to_string();
                assert!(text.contains("pattern 2") && text.contains(p), "{text}");
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    let deep = "(".repeat(100) + &")".repeat(100);
    assert_eq!(refusal(&deep), K::NestingTooDeep);
}

#[test]
fn seed_example_and_decisions() {
    // xend-config.sxp's example: the sxp string '^localhost$ ^localhost\\.localdomain$'.
    let (acl, warnings) = HostsAllow::compile(r"^localhost$ ^localhost\.localdomain$").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let r = acl.as_ref();
    assert_eq!(r.pattern_count(), 2);
    assert_eq!(r.pattern(1), Some(r"^localhost\.localdomain$"));
    assert_eq!(
        r.admit("127.0.0.1", Some("localhost")),
        Decision::Admitted {
            pattern: 0,
            on: MatchedOn::Name
        }
    );
    assert_eq!(
        r.admit("127.0.0.1", Some("localhost.localdomain")),
        Decision::Admitted {
            pattern: 1,
            on: MatchedOn::Name
        }
    );
    assert_eq!(
        r.admit("127.0.0.1", Some("localhost.localdomain.evil")),
        Decision::Refused {
            ip_tried: true,
            name: NameUse::NoMatch
        }
    );
    assert_eq!(
        r.admit("127.0.0.1", None),
        Decision::Refused {
            ip_tried: true,
            name: NameUse::NotGiven
        }
    );
    // Python's `^localhost$` matches "localhost\n" (`$` before a final
    // newline); relocd never feeds such a name to the DFA, which is why `$`
    // can be compiled as end of text.
    assert_eq!(
        r.admit("127.0.0.1", Some("localhost\n")),
        Decision::Refused {
            ip_tried: true,
            name: NameUse::Unusable
        }
    );
    let d = r.admit("127.0.0.1", Some("localhost"));
    assert_eq!(
        r.explain(d).to_string(),
        "admitted: pattern 1 matches the peer's name (`^localhost$`)"
    );
}

#[test]
fn lowest_pattern_wins_and_ip_is_tried() {
    let (acl, _) = HostsAllow::compile(r"^10\.1\. ^10\. ^h ^host$").unwrap();
    assert_eq!(
        acl.admit("10.1.2.3", None),
        Decision::Admitted {
            pattern: 0,
            on: MatchedOn::Ip
        }
    );
    assert_eq!(
        acl.admit("10.2.2.3", None),
        Decision::Admitted {
            pattern: 1,
            on: MatchedOn::Ip
        }
    );
    assert_eq!(
        acl.admit("10.2.2.3", Some("host")),
        Decision::Admitted {
            pattern: 1,
            on: MatchedOn::Ip
        }
    );
    assert_eq!(
        acl.admit("192.0.2.1", Some("host")),
        Decision::Admitted {
            pattern: 2,
            on: MatchedOn::Name
        }
    );
    assert_eq!(acl.as_ref().first_match("host"), Some(2));
    assert!(acl.as_ref().matches("host", 3));
    assert!(!acl.as_ref().matches("hostx", 3));
    assert_eq!(
        acl.admit("192.0.2.1\n", Some("x")),
        Decision::Refused {
            ip_tried: false,
            name: NameUse::NoMatch
        }
    );
}

#[test]
fn empty_setting_admits_all() {
    for s in ["", "   ", "\t"] {
        let (acl, _) = HostsAllow::compile(s).unwrap();
        assert_eq!(acl.admit("192.0.2.1", None), Decision::AdmitAll);
        let bytes = AlignedBytes::copy_from(&acl.to_bytes());
        let r = HostsAllowRef::from_bytes(bytes.as_bytes()).unwrap();
        assert_eq!(r.admit("192.0.2.1", Some("x")), Decision::AdmitAll);
        assert_eq!(r.pattern_count(), 0);
    }
}

#[test]
fn whitespace_warnings() {
    let (acl, w) = HostsAllow::compile("^a$  ^b$").unwrap();
    assert_eq!(acl.patterns().collect::<Vec<_>>(), ["^a$", "^b$"]);
    assert_eq!(w, [Warning::XendEmptyPattern { offset: 3 }]);
    assert!(w[0].to_string().contains("admits every host"));
    let (_, w) = HostsAllow::compile(" ^a$").unwrap();
    assert_eq!(w, [Warning::XendEmptyPattern { offset: 0 }]);
    let (_, w) = HostsAllow::compile("^a$ ").unwrap();
    assert_eq!(w, [Warning::XendEmptyPattern { offset: 3 }]);
    let (acl, w) = HostsAllow::compile("^a$\t^b$").unwrap();
    assert_eq!(acl.patterns().count(), 2);
    assert_eq!(w, [Warning::XendJoinedPatterns { offset: 3 }]);
    let (_, w) = HostsAllow::compile("^a$ ^b$").unwrap();
    assert!(w.is_empty());
}

#[test]
fn unanchored_patterns_are_warned_with_a_checked_example() {
    let (acl, w) = HostsAllow::compile(r"host\.example\.org ^ok$ \d+ .* é a\b").unwrap();
    let r = acl.as_ref();
    assert_eq!(w.len(), 5, "{w:?}");
    match &w[0] {
        Warning::NotAnchoredAtEnd {
            pattern: 0,
            example,
            ..
        } => {
            assert_eq!(example, "host.example.org.evil.example");
            assert_eq!(r.first_match(example), Some(0));
        }
        other => panic!("{other:?}"),
    }
    assert!(w[0]
        .to_string()
        .contains("admits `host.example.org.evil.example`"));
    match &w[1] {
        Warning::NotAnchoredAtEnd {
            pattern: 2,
            example,
            ..
        } => assert!(r.matches(example, 2)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&w[2], Warning::AdmitsAnyHost { pattern: 3, .. }));
    assert!(matches!(&w[3], Warning::MatchesNothing { pattern: 4, .. }));
    match &w[4] {
        Warning::NotAnchoredAtEnd {
            pattern: 5,
            example,
            ..
        } => {
            assert_eq!(example, "a.evil.example");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn serialize_load_decide() {
    let setting = r"^localhost$ ^10\.0\.0\.\d+$ (?i)^node[0-9]+\.cluster\.example$";
    let (acl, _) = HostsAllow::compile(setting).unwrap();
    let bytes = acl.to_bytes();
    let aligned = AlignedBytes::copy_from(&bytes);
    let r = HostsAllowRef::from_bytes(aligned.as_bytes()).unwrap();
    assert_eq!(r.pattern_count(), 3);
    assert_eq!(r.pattern(2), Some("(?i)^node[0-9]+\\.cluster\\.example$"));
    for (ip, name) in [
        ("127.0.0.1", Some("localhost")),
        ("10.0.0.42", None),
        ("10.0.0.42x", None),
        ("192.0.2.7", Some("NODE7.cluster.example")),
        ("192.0.2.7", Some("node7.cluster.example.evil")),
    ] {
        assert_eq!(r.admit(ip, name), acl.admit(ip, name), "{ip} {name:?}");
    }
    assert_eq!(
        r.admit("10.0.0.42", None),
        Decision::Admitted {
            pattern: 1,
            on: MatchedOn::Ip
        }
    );
    assert_eq!(
        r.admit("192.0.2.7", Some("NODE7.cluster.example")),
        Decision::Admitted {
            pattern: 2,
            on: MatchedOn::Name
        }
    );

    // Corruptions are typed errors, never panics.
    assert_eq!(
        HostsAllowRef::from_bytes(&aligned.as_bytes()[..20]).err(),
        Some(LoadError::Truncated)
    );
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert_eq!(
        HostsAllowRef::from_bytes(AlignedBytes::copy_from(&bad).as_bytes()).err(),
        Some(LoadError::BadMagic)
    );
    let mut bad = bytes.clone();
    bad.pop();
    assert_eq!(
        HostsAllowRef::from_bytes(AlignedBytes::copy_from(&bad).as_bytes()).err(),
        Some(LoadError::Truncated)
    );
    let mut bad = bytes.clone();
    bad[12] = 2; // pattern count
    assert_eq!(
        HostsAllowRef::from_bytes(AlignedBytes::copy_from(&bad).as_bytes()).err(),
        Some(LoadError::BadTexts)
    );
    let mut bad = bytes.clone();
    bad[HEADER_LEN + 2] ^= 0xff; // inside the DFA's own label
    assert!(HostsAllowRef::from_bytes(AlignedBytes::copy_from(&bad).as_bytes()).is_err());
    // Misaligned storage is refused, not read.
    let mut shifted = alloc::vec![0u8; 1];
    shifted.extend_from_slice(&bytes);
    let a = AlignedBytes::copy_from(&shifted);
    assert_eq!(
        HostsAllowRef::from_bytes(&a.as_bytes()[1..]).err(),
        Some(LoadError::Misaligned)
    );
    // Every truncation is an error.
    for n in 0..bytes.len() {
        assert!(
            HostsAllowRef::from_bytes(AlignedBytes::copy_from(&bytes[..n]).as_bytes()).is_err()
        );
    }
}

#[test]
fn limits() {
    let many = "a ".repeat(MAX_PATTERNS + 1);
    assert_eq!(
        HostsAllow::compile(&many).err(),
        Some(AclError::TooManyPatterns {
            count: MAX_PATTERNS + 1
        })
    );
    let ok = "a ".repeat(MAX_PATTERNS);
    assert!(HostsAllow::compile(&ok).is_ok());
    // 10^9 NFA states: over the size limit long before it is built.
    assert_eq!(
        HostsAllow::compile("((a{1000}){1000}){1000}").err(),
        Some(AclError::DfaTooLarge)
    );
}

#[test]
fn plausibility() {
    assert!(is_plausible_hostname("host-1.example_x.org"));
    assert!(!is_plausible_hostname(""));
    assert!(!is_plausible_hostname("a b"));
    assert!(!is_plausible_hostname("a\n"));
    assert!(!is_plausible_hostname("é"));
    assert!(is_plausible_address("fe80::1%eth0"));
    assert!(is_plausible_address("192.0.2.1"));
    assert!(!is_plausible_address("192.0.2.1\n"));
}

#[test]
fn unicode_classes_keep_the_dfa_small() {
    // Python's \w, \d, \s and (?i) are Unicode-aware; only their ASCII part
    // can match a plausible input, so the DFA stays small.
    let (acl, _) =
        HostsAllow::compile(r"(?i)^\w+\d*\s?[^\W\d]\.EXAMPLE\.org$ ^\S+\.\D+$ ^(?:\w|\.)+$")
            .unwrap();
    assert!(acl.dfa_len() < 16 * 1024, "{}", acl.dfa_len());
    assert_eq!(
        acl.admit("192.0.2.1", Some("Node7x.example.ORG")),
        Decision::Admitted {
            pattern: 0,
            on: MatchedOn::Name
        }
    );
}

#[test]
fn refusals_explain_themselves() {
    let (acl, _) = HostsAllow::compile(r"^localhost$").unwrap();
    let d = acl.admit("192.0.2.1", Some("bad name"));
    assert_eq!(
        d,
        Decision::Refused {
            ip_tried: true,
            name: NameUse::Unusable
        }
    );
    assert_eq!(
        d.to_string(),
        "refused: no pattern matches the peer's address; its name is not a plausible host name and was not used"
    );
    let d = acl.admit("192.0.2.1", Some("other"));
    assert_eq!(
        d.to_string(),
        "refused: no pattern matches the peer's address or name"
    );
    assert!(!d.is_admitted());
    let e = HostsAllow::compile("^a$ a(?=b)").unwrap_err();
    assert_eq!(
        e.to_string(),
        "hosts-allow pattern 2 (at byte 4 of the setting), at byte 1 of the pattern: look-ahead (?=…)/(?!…) \
         cannot run in a DFA (valid Python, refused by relocd)"
    );
    assert_eq!(
        e.with_setting("^a$ a(?=b)").to_string(),
        "hosts-allow pattern 2 `a(?=b)`, at byte 1: look-ahead (?=…)/(?!…) cannot run in a DFA (valid Python, \
         refused by relocd)"
    );
}
