//! Tests for the relocation settings. What xend does is read from
//! XendRoot.py / XendOptions.py (`set_config`, `get_config_bool`,
//! `get_config_int`) and sxp.py (`child`, `children`, `child_value`).

use super::*;
use crate::sxp::{ErrorKind, IgnoreWarnings, WarningKind};
use std::format;
use std::vec::Vec;

const EXAMPLE: &str = include_str!("../../../host/examples/xend-config.sxp");

fn parse(text: &str) -> Result<(RelocationConfig<'_>, Vec<ConfigWarning<'_>>), ConfigError> {
    let mut ws = Vec::new();
    let cfg = RelocationConfig::parse(text, &mut |w| ws.push(w))?;
    Ok((cfg, ws))
}

fn fail(text: &str) -> ConfigError {
    parse(text).expect_err("must be refused")
}

fn at(line: u32, column: u32) -> Pos {
    Pos { line, column }
}

#[test]
fn defaults_are_xends() {
    for text in ["", "# only a comment\n", "(xend-relocation-port)"] {
        let (cfg, ws) = parse(text).unwrap();
        assert!(ws.is_empty());
        assert_eq!(cfg, RelocationConfig::default());
    }
    let d = RelocationConfig::default();
    assert!(!d.server && !d.ssl_server && !d.ssl);
    assert_eq!((d.port, d.ssl_port), (8002, 8003));
    assert!(d.address.eq_str("") && d.hosts_allow.eq_str(""));
    assert_eq!((d.ssl_key_file, d.ssl_cert_file), (None, None));
}

#[test]
fn example_file_parses() {
    let (cfg, ws) = parse(EXAMPLE).unwrap();
    assert!(ws.is_empty(), "{ws:?}");
    assert!(cfg.server);
    assert_eq!(cfg.port, 8002);
    assert!(cfg.address.eq_str(""));
    // '\\.' is one backslash and a dot, the regex for a literal dot.
    assert_eq!(
        format!("{}", cfg.hosts_allow),
        r"^localhost$ ^localhost\.localdomain$"
    );
    assert!(!cfg.ssl_server && !cfg.ssl);
    // It carries the other stock keys, nested lists included.
    let mut q = IgnoreWarnings;
    let api = get(EXAMPLE, "xen-api-server", &mut q).unwrap().unwrap();
    let Some(Item::List(span)) = api.value else {
        panic!("{api:?}")
    };
    assert_eq!(span.text, "((unix))");
    let mem = get(EXAMPLE, "dom0-min-mem", &mut q).unwrap().unwrap();
    assert!(matches!(mem.value, Some(Item::Atom(a)) if a.eq_str("196")));
}

#[test]
fn all_relocation_keys() {
    let text = "\
(xend-relocation-server Yes)
(xend-relocation-port '8102')
(xend-relocation-address 192.0.2.1)
(xend-relocation-hosts-allow '^a\\\\.b$')
(xend-relocation-ssl-server ON)
(xend-relocation-ssl-port 8103)
(xend-relocation-server-ssl-key-file /etc/xen/k.pem)
(xend-relocation-server-ssl-cert-file \"/etc/xen/c.pem\")
(xend-relocation-ssl t)
";
    let (cfg, ws) = parse(text).unwrap();
    assert!(ws.is_empty());
    assert!(cfg.server && cfg.ssl_server && cfg.ssl);
    assert_eq!((cfg.port, cfg.ssl_port), (8102, 8103));
    assert!(cfg.address.eq_str("192.0.2.1"));
    assert!(cfg.hosts_allow.eq_str(r"^a\.b$"));
    assert_eq!(cfg.hosts_allow.pos(), Some(at(4, 30)));
    assert!(cfg.ssl_key_file.unwrap().eq_str("/etc/xen/k.pem"));
    assert!(cfg.ssl_cert_file.unwrap().eq_str("/etc/xen/c.pem"));
    assert_eq!(cfg.ssl_ca_file, None);
}

#[test]
fn ca_file_is_relocds_own_setting() {
    let (cfg, ws) = parse("(relocd-relocation-ssl-ca-file '/etc/relocd/ca.pem')").unwrap();
    assert!(ws.is_empty());
    assert!(cfg.ssl_ca_file.unwrap().eq_str("/etc/relocd/ca.pem"));
    let (cfg, _) = parse("(relocd-relocation-ssl-ca-file '')").unwrap();
    assert_eq!(
        cfg.ssl_ca_file, None,
        "'' is no file, like the key and cert"
    );
    // Like every relocation key: the first form counts, a list is an error.
    let (cfg, ws) =
        parse("(relocd-relocation-ssl-ca-file /a.pem)(relocd-relocation-ssl-ca-file /b.pem)")
            .unwrap();
    assert!(cfg.ssl_ca_file.unwrap().eq_str("/a.pem"));
    assert_eq!(ws.len(), 1);
    assert!(parse("(relocd-relocation-ssl-ca-file (a b))").is_err());
}

#[test]
fn xends_booleans() {
    // get_config_bool: str(v).lower() in these lists.
    for (word, want) in [
        ("yes", true),
        ("Y", true),
        ("1", true),
        ("on", true),
        ("TRUE", true),
        ("t", true),
        ("no", false),
        ("N", false),
        ("0", false),
        ("Off", false),
        ("false", false),
        ("f", false),
        ("'yes'", true),
    ] {
        let text = format!("(xend-relocation-server {word})");
        assert_eq!(parse(&text).unwrap().0.server, want, "{word}");
    }
}

#[test]
fn wrong_bool_names_key_value_and_place() {
    let e = fail("(dom0-cpus 0)\n(xend-relocation-server   maybe)");
    assert_eq!(e.kind, ConfigErrorKind::ExpectedBool);
    assert_eq!(e.key, Some(KEY_SERVER));
    assert_eq!(e.value.text(), Some("maybe"));
    assert_eq!(e.pos, at(2, 27));
    let msg = format!("{e}");
    assert!(
        msg.starts_with("line 2, column 27: xend-relocation-server: "),
        "{msg}"
    );
    assert!(msg.contains("'maybe'"), "{msg}");
    // Longer than any boolean word, and a list.
    assert_eq!(
        fail("(xend-relocation-ssl yesyes)").kind,
        ConfigErrorKind::ExpectedBool
    );
    let e = fail("(xend-relocation-ssl-server (yes))");
    assert_eq!(
        (e.kind, e.key, e.value.text()),
        (ConfigErrorKind::ExpectedBool, Some(KEY_SSL_SERVER), None)
    );
    assert!(format!("{e}").contains("a list"));
}

#[test]
fn ports() {
    // int(): surrounding blanks and a '+' are fine.
    assert_eq!(
        parse("(xend-relocation-port ' +8010 ')").unwrap().0.port,
        8010
    );
    assert_eq!(parse("(xend-relocation-port 08010)").unwrap().0.port, 8010);
    assert_eq!(parse("(xend-relocation-port 65535)").unwrap().0.port, 65535);

    let e = fail("\n\n  (xend-relocation-port eighty)");
    assert_eq!(
        (e.kind, e.key, e.pos),
        (ConfigErrorKind::ExpectedInt, Some(KEY_PORT), at(3, 25))
    );
    assert_eq!(e.value.text(), Some("eighty"));
    let msg = format!("{e}");
    assert!(
        msg.contains("line 3") && msg.contains("xend-relocation-port") && msg.contains("eighty"),
        "{msg}"
    );

    let e = fail("(xend-relocation-ssl-port 70000)");
    assert_eq!(
        (e.kind, e.key, e.pos),
        (
            ConfigErrorKind::PortOutOfRange,
            Some(KEY_SSL_PORT),
            at(1, 27)
        )
    );
    assert_eq!(e.value.text(), Some("70000"));
    for bad in ["0", "-1", "99999999999999999999999"] {
        let e = fail(&format!("(xend-relocation-port {bad})"));
        assert_eq!(e.kind, ConfigErrorKind::PortOutOfRange, "{bad}");
    }
    for bad in ["''", "0x1f", "80.0", "8_000", "'1 2'", "(8002)"] {
        let e = fail(&format!("(xend-relocation-port {bad})"));
        assert_eq!(e.kind, ConfigErrorKind::ExpectedInt, "{bad}");
    }
}

#[test]
fn long_bad_values_are_cut() {
    let long = "x".repeat(200);
    let e = fail(&format!("(xend-relocation-port {long})"));
    assert!(e.value.is_truncated());
    assert_eq!(e.value.text().map(str::len), Some(BadValue::CAPACITY));
    assert!(format!("{e}").contains("…"));
}

#[test]
fn strings_must_not_be_lists() {
    let e = fail("(xend-relocation-hosts-allow ('^a$'))");
    assert_eq!(
        (e.kind, e.key, e.pos),
        (
            ConfigErrorKind::ExpectedString,
            Some(KEY_HOSTS_ALLOW),
            at(1, 30)
        )
    );
}

#[test]
fn empty_paths_are_none() {
    let (cfg, _) = parse("(xend-relocation-server-ssl-key-file '')").unwrap();
    assert_eq!(cfg.ssl_key_file, None);
}

#[test]
fn duplicates_first_wins_and_warns() {
    // sxp.child returns the first matching child.
    let (cfg, ws) =
        parse("(xend-relocation-port 9000)\n(xend-relocation-port 9001)\n(a 1)\n(a 2)").unwrap();
    assert_eq!(cfg.port, 9000);
    assert_eq!(
        ws,
        [ConfigWarning::DuplicateKey {
            key: KEY_PORT,
            first: at(1, 1),
            ignored: at(2, 1)
        }]
    );
    // The ignored duplicate is not type-checked, as in xend.
    assert!(
        parse("(xend-relocation-server y)(xend-relocation-server maybe)")
            .unwrap()
            .0
            .server
    );
    let mut q = IgnoreWarnings;
    let a = get("(a 1)\n(a 2)", "a", &mut q).unwrap().unwrap();
    assert_eq!(a.pos, at(1, 1));
}

#[test]
fn xend_value_rules() {
    // sxp.children skips an attribute list right after the key.
    let (cfg, ws) = parse("(xend-relocation-port (@ (x 1)) 9100)").unwrap();
    assert_eq!((cfg.port, ws.len()), (9100, 0));
    // Items after the value are ignored, with a warning.
    let (cfg, ws) = parse("(xend-relocation-port 9100 9200)").unwrap();
    assert_eq!(cfg.port, 9100);
    assert_eq!(
        ws,
        [ConfigWarning::ExtraValues {
            key: KEY_PORT,
            pos: at(1, 1)
        }]
    );
    // A top-level atom is not a form.
    let (cfg, ws) = parse("xend-relocation-server yes").unwrap();
    assert!(!cfg.server);
    assert_eq!(ws.len(), 2);
    assert!(
        matches!(ws[0], ConfigWarning::StrayAtom { atom } if atom.eq_str("xend-relocation-server"))
    );
    // Forms headed by a list, and empty forms, are skipped.
    let (cfg, _) = parse("((xend-relocation-port) 1) () (xend-relocation-port 9300)").unwrap();
    assert_eq!(cfg.port, 9300);
    // A quoted key counts like a bare one (sxp compares the strings).
    assert_eq!(parse("('xend-relocation-port' 9400)").unwrap().0.port, 9400);
}

#[test]
fn unknown_escape_in_hosts_allow() {
    let text = "(xend-relocation-hosts-allow '^localhost\\.localdomain$')";
    let (cfg, ws) = parse(text).unwrap();
    // We keep what the operator meant ...
    assert!(cfg.hosts_allow.eq_str(r"^localhost\.localdomain$"));
    // ... and say that xend read '^localhost\localdomain$'.
    assert_eq!(ws.len(), 1);
    let ConfigWarning::Syntax(w) = ws[0] else {
        panic!("{ws:?}")
    };
    assert_eq!(w.kind, WarningKind::UnknownEscape { ch: '.' });
    assert_eq!(w.pos, at(1, 41));
}

#[test]
fn syntax_errors_pass_through() {
    let e = fail("(xend-relocation-server yes)\n(network-script 'network-bridge)");
    assert_eq!(
        e.kind,
        ConfigErrorKind::Syntax(ErrorKind::UnterminatedString)
    );
    assert_eq!((e.key, e.pos), (None, at(2, 17)));
    let e = fail("(a (b)");
    assert_eq!(
        (e.kind, e.pos),
        (
            ConfigErrorKind::Syntax(ErrorKind::UnterminatedList),
            at(1, 1)
        )
    );
    // The whole file is checked, also after the keys we read.
    let e = fail("(xend-relocation-server yes))");
    assert_eq!(
        (e.kind, e.pos),
        (
            ConfigErrorKind::Syntax(ErrorKind::UnexpectedClose),
            at(1, 29)
        )
    );
    let _: &dyn core::error::Error = &e;
}

#[test]
fn relocd_keys_reachable() {
    let text = "(relocd-downtime-ms 300)\n(relocd-peers ((a 1) (b 2)))";
    let mut q = IgnoreWarnings;
    let e = get(text, "relocd-downtime-ms", &mut q).unwrap().unwrap();
    assert!(e.key.starts_with(RELOCD_PREFIX));
    assert!(matches!(e.value, Some(Item::Atom(a)) if a.eq_str("300")));
    let p = get(text, "relocd-peers", &mut q).unwrap().unwrap();
    let Some(Item::List(span)) = p.value else {
        panic!()
    };
    assert_eq!((span.text, span.pos), ("((a 1) (b 2))", at(2, 15)));
    assert_eq!(get(text, "relocd-none", &mut q).unwrap(), None);
    // RelocationConfig ignores them.
    assert_eq!(parse(text).unwrap().0, RelocationConfig::default());
    assert_eq!(p.value.unwrap().pos(), at(2, 15));
}
