//! Test vectors for the sxp reader. Where we state what xend does, it is
//! read from xend's `sxp.py` (`escapes`, `state_escape`, `state_hex`,
//! `state_octal`, `state_atom`).

use super::*;
use std::string::String;
use std::vec::Vec;

/// A compact rendering of the events: `(`, `)`, atoms decoded in `[…]`.
fn render(text: &str) -> Result<(String, Vec<Warning>), Error> {
    let mut r = Reader::new(text);
    let mut ws = Vec::new();
    let mut out = String::new();
    while let Some(ev) = r.next_event(&mut |w| ws.push(w))? {
        match ev {
            Event::Open(_) => out.push('('),
            Event::Close(_) => out.push(')'),
            Event::Atom(a) => {
                out.push('[');
                out.extend(a.chars());
                out.push(']');
            }
        }
    }
    Ok((out, ws))
}

fn ok(text: &str) -> String {
    let (s, ws) = render(text).expect("parses");
    assert!(ws.is_empty(), "unexpected warnings {ws:?}");
    s
}

fn err(text: &str) -> (ErrorKind, u32, u32) {
    let e = render(text).expect_err("must fail");
    (e.kind, e.pos.line, e.pos.column)
}

fn first_atom(text: &str) -> Atom<'_> {
    let mut r = Reader::new(text);
    match r.next_event(&mut IgnoreWarnings) {
        Ok(Some(Event::Atom(a))) => a,
        other => panic!("not an atom: {other:?}"),
    }
}

#[test]
fn lists_atoms_and_positions() {
    assert_eq!(ok("(a (b c) ())"), "([a]([b][c])())");
    let mut r = Reader::new("\n  (key  'v')");
    let mut q = IgnoreWarnings;
    assert_eq!(
        r.next_event(&mut q),
        Ok(Some(Event::Open(Pos { line: 2, column: 3 })))
    );
    let Ok(Some(Event::Atom(k))) = r.next_event(&mut q) else {
        panic!()
    };
    assert_eq!(
        (k.raw(), k.quote(), k.pos()),
        ("key", Quote::None, Some(Pos { line: 2, column: 4 }))
    );
    let Ok(Some(Event::Atom(v))) = r.next_event(&mut q) else {
        panic!()
    };
    assert_eq!(
        (v.raw(), v.quote(), v.pos()),
        ("v", Quote::Single, Some(Pos { line: 2, column: 9 }))
    );
    assert_eq!(
        r.next_event(&mut q),
        Ok(Some(Event::Close(Pos {
            line: 2,
            column: 12
        })))
    );
    assert_eq!(r.next_event(&mut q), Ok(None));
}

#[test]
fn columns_count_characters() {
    // 'é' is two bytes but one column.
    assert_eq!(err("'é' )"), (ErrorKind::UnexpectedClose, 1, 5));
}

#[test]
fn comments_anywhere() {
    assert_eq!(ok("# head\n(a # mid\n b)# tail"), "([a][b])");
    // '#' ends a bare atom (xend's state_atom treats it as a terminator).
    assert_eq!(ok("(server yes#no\n)"), "([server][yes])");
    // ... and so runs to the end of the line, eating a ')' as xend did.
    assert_eq!(err("(server yes#no)"), (ErrorKind::UnterminatedList, 1, 1));
    // Inside a string it is text.
    assert_eq!(ok("('a#b')"), "([a#b])");
    // A comment at end of input without a newline.
    assert_eq!(ok("(a)#"), "([a])");
}

#[test]
fn separators_as_in_xend() {
    // xend: a separator ends an atom and may begin the next one.
    assert_eq!(ok("a;b"), "[a][;b]");
    assert_eq!(ok("x[y]"), "[x][[y][]]");
    // Quotes inside a bare atom are plain characters.
    assert_eq!(ok("ab'c'"), "[ab'c']");
    // '(' ends an atom.
    assert_eq!(ok("(a(b))"), "([a]([b]))");
}

#[test]
fn every_simple_escape() {
    // xend's `escapes` table: a b t n v f r \ ' "
    assert_eq!(
        ok(r#"'\a\b\t\n\v\f\r\\\'\"'"#),
        "[\x07\x08\t\n\x0b\x0c\r\\'\"]"
    );
    assert_eq!(
        ok(r#""\a\b\t\n\v\f\r\\\'\"""#),
        "[\x07\x08\t\n\x0b\x0c\r\\'\"]"
    );
    // The other quote needs no escape.
    assert_eq!(ok(r#"("it's" 'say "hi"')"#), "([it's][say \"hi\"])");
}

#[test]
fn hex_escapes() {
    // Digits only: xend computes these right ('\x41' -> 'A').
    assert_eq!(ok(r"'\x41\x21\x00'"), "[A!\0]");
    // Exactly two digits; the third is text.
    assert_eq!(ok(r"'\x411'"), "[A1]");
}

#[test]
fn hex_letter_digit_warns_with_xends_byte() {
    // xend's state_hex does ord(c) - ord('a') for 'a'..'f', so '\x4a'
    // became 4*16 + 0 = 0x40 ('@'); we read 0x4a ('J') and warn.
    let (s, ws) = render(r"  '\x4a\x4F'").unwrap();
    assert_eq!(s, "[JO]");
    assert_eq!(
        ws,
        [
            Warning {
                kind: WarningKind::HexLetterDigit {
                    ours: 0x4a,
                    xend: 0x40
                },
                pos: Pos { line: 1, column: 4 }
            },
            Warning {
                kind: WarningKind::HexLetterDigit {
                    ours: 0x4f,
                    xend: 0x45
                },
                pos: Pos { line: 1, column: 8 }
            },
        ]
    );
}

#[test]
fn bad_hex_escapes() {
    // xend fails here too (a NameError in state_hex).
    assert_eq!(err(r"(a '\xg0')"), (ErrorKind::BadHexEscape, 1, 5));
    assert_eq!(err("\n  '\\x4'"), (ErrorKind::BadHexEscape, 2, 4));
    assert_eq!(err(r"'\x"), (ErrorKind::BadHexEscape, 1, 2));
    assert_eq!(err(r"'ab\xff'"), (ErrorKind::NonAsciiEscape, 1, 4));
}

#[test]
fn octal_escapes() {
    // xend's state_octal: one to three digits 0-7, value at most 0xff.
    assert_eq!(ok(r"'\101\0\12x\1018'"), "[A\0\nxA8]");
    assert_eq!(ok(r"'\7'"), "[\x07]");
    assert_eq!(err(r"'\400'"), (ErrorKind::OctalOutOfRange, 1, 2));
    assert_eq!(err(r"'\377'"), (ErrorKind::NonAsciiEscape, 1, 2));
}

#[test]
fn unknown_escape_kept_and_warned() {
    // xend: `self.state.parent.buf += '\\'` then pop, dropping the '.', so
    // '^localhost\.localdomain$' reached xend as '^localhost\localdomain$'.
    let (s, ws) = render("(h\n '^a\\.b$')").unwrap();
    assert_eq!(s, "([h][^a\\.b$])");
    assert_eq!(
        ws,
        [Warning {
            kind: WarningKind::UnknownEscape { ch: '.' },
            pos: Pos { line: 2, column: 5 }
        }]
    );
    // '\8' is not octal: unknown, kept.
    let (s, ws) = render(r"'\8\é'").unwrap();
    assert_eq!(s, "[\\8\\é]");
    assert_eq!(ws.len(), 2);
    assert_eq!(ws[1].kind, WarningKind::UnknownEscape { ch: 'é' });
    // The doubled form is what xend needed, and reads without warning.
    assert_eq!(ok(r"'^a\\.b$'"), "[^a\\.b$]");
    // The message says what xend did.
    let text = std::format!("{}", ws[0]);
    assert!(text.contains("xend read it as a lone '\\'"), "{text}");
}

#[test]
fn unterminated_string() {
    assert_eq!(err("(a\n  'abc"), (ErrorKind::UnterminatedString, 2, 3));
    assert_eq!(err("\"ab\\"), (ErrorKind::UnterminatedString, 1, 1));
    assert_eq!(err("'\\'"), (ErrorKind::UnterminatedString, 1, 1));
}

#[test]
fn unbalanced_parens() {
    assert_eq!(err("(a (b c)\n(d"), (ErrorKind::UnterminatedList, 2, 1));
    assert_eq!(err("(a (b"), (ErrorKind::UnterminatedList, 1, 4));
    assert_eq!(err("(a))"), (ErrorKind::UnexpectedClose, 1, 4));
    assert_eq!(err("\n )"), (ErrorKind::UnexpectedClose, 2, 2));
}

#[test]
fn depth_limit() {
    let mut s = String::new();
    for _ in 0..MAX_DEPTH {
        s.push('(');
    }
    for _ in 0..MAX_DEPTH {
        s.push(')');
    }
    assert!(render(&s).is_ok());
    let mut deep = String::from("(");
    deep.push_str(&s);
    deep.push(')');
    assert_eq!(err(&deep), (ErrorKind::TooDeep, 1, MAX_DEPTH as u32 + 1));
    // A hostile depth fails fast, without recursion.
    let huge = "(".repeat(1_000_000);
    assert_eq!(err(&huge).0, ErrorKind::TooDeep);
}

#[test]
fn invalid_characters() {
    assert_eq!(err("(a \x01)"), (ErrorKind::InvalidCharacter('\x01'), 1, 4));
    assert_eq!(err("ab\x7f"), (ErrorKind::InvalidCharacter('\x7f'), 1, 3));
    assert_eq!(
        err("\n\u{e9}t\u{e9}"),
        (ErrorKind::InvalidCharacter('\u{e9}'), 2, 1)
    );
    // Non-ASCII inside an atom, a string or a comment is fine.
    assert_eq!(
        ok("(caf\u{e9} 'n\u{e9}e' # \u{e9}\x01\n)"),
        "([caf\u{e9}][n\u{e9}e])"
    );
}

#[test]
fn invalid_utf8() {
    let e = Reader::from_bytes(b"(a)\n(b \xff)").unwrap_err();
    assert_eq!(
        e,
        Error {
            kind: ErrorKind::InvalidUtf8,
            pos: Pos { line: 2, column: 4 }
        }
    );
    assert!(Reader::from_bytes(b"(a)").is_ok());
}

#[test]
fn error_display_has_line_and_column() {
    let e = render("(a\n 'x").unwrap_err();
    assert_eq!(
        std::format!("{e}"),
        "line 2, column 2: string is never closed"
    );
    let _: &dyn core::error::Error = &e;
}

#[test]
fn atom_views() {
    let a = first_atom(r"'a\tb'");
    assert_eq!(a.raw(), r"a\tb");
    assert_eq!(a.as_plain(), None);
    assert_eq!(a.decoded_len(), 3);
    let mut buf = [0u8; 3];
    assert_eq!(a.decode_into(&mut buf), Ok("a\tb"));
    let mut small = [0u8; 2];
    assert_eq!(a.decode_into(&mut small), Err(BufferTooSmall { needed: 3 }));
    assert!(a.eq_str("a\tb"));
    assert!(!a.eq_str("a\\tb"));
    assert!(a.starts_with("a\t"));
    assert!(!a.starts_with("a\tbc"));
    assert_eq!(std::format!("{a}"), "a\tb");
    // A bare atom never decodes escapes.
    let b = first_atom(r"a\tb");
    assert_eq!(b.as_plain(), Some(r"a\tb"));
    assert!(first_atom("''").is_empty());
}

#[test]
fn span_reader_keeps_positions() {
    let text = "(k\n  (x (y 'z')))";
    let mut r = Reader::new(text);
    let mut q = IgnoreWarnings;
    r.next_event(&mut q).unwrap();
    r.next_event(&mut q).unwrap();
    let Ok(Some(Event::Open(p))) = r.next_event(&mut q) else {
        panic!()
    };
    let span = r.skip_list(p, &mut q).unwrap();
    assert_eq!(span.text, "(x (y 'z'))");
    assert_eq!(span.pos, Pos { line: 2, column: 3 });
    let mut sub = span.reader();
    sub.next_event(&mut q).unwrap();
    let Ok(Some(Event::Atom(x))) = sub.next_event(&mut q) else {
        panic!()
    };
    assert_eq!(x.pos(), Some(Pos { line: 2, column: 4 }));
    assert_eq!(
        r.next_event(&mut q),
        Ok(Some(Event::Close(Pos {
            line: 2,
            column: 14
        })))
    );
}

#[cfg(feature = "alloc")]
mod owned {
    use super::super::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    fn atom(s: &str) -> Value {
        Value::Atom(s.to_string())
    }

    #[test]
    fn parse_all_builds_trees() {
        let mut ws = Vec::new();
        let v = parse_all("(a 'b\\.') x (c (d))", &mut ws).unwrap();
        assert_eq!(
            v,
            vec![
                Value::List(vec![atom("a"), atom("b\\.")]),
                atom("x"),
                Value::List(vec![atom("c"), Value::List(vec![atom("d")])]),
            ]
        );
        assert_eq!(ws.len(), 1);
        assert_eq!(parse_all("", &mut ws).unwrap(), vec![]);
    }

    #[test]
    fn parse_one_and_trailing_garbage() {
        let mut q = IgnoreWarnings;
        assert_eq!(
            parse_one(" (a b) # c\n", &mut q).unwrap().to_string(),
            "(a b)"
        );
        let e = parse_one("(a b)\n  junk", &mut q).unwrap_err();
        assert_eq!(
            e,
            Error {
                kind: ErrorKind::TrailingInput,
                pos: Pos { line: 2, column: 3 }
            }
        );
        let e = parse_one(" # nothing", &mut q).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Empty);
        assert_eq!(parse_one("'x y'", &mut q).unwrap(), atom("x y"));
    }

    #[test]
    fn child_value_as_xend() {
        let mut q = IgnoreWarnings;
        let v = parse_one("(xend-config (a 1) (b 2) (a 3))", &mut q).unwrap();
        assert_eq!(v.child_value("a"), Some(&atom("1")));
        assert_eq!(v.child_value("z"), None);
    }

    #[test]
    fn display_round_trips() {
        let mut q = IgnoreWarnings;
        let v = parse_one(r"(k 'a b' 'it\'s' '\\' '' plain-1.2:/x)", &mut q).unwrap();
        let shown = v.to_string();
        assert_eq!(shown, r"(k 'a b' 'it\'s' '\\' '' plain-1.2:/x)");
        assert_eq!(parse_one(&shown, &mut q).unwrap(), v);
    }
}

/// Random texts over an alphabet of the tricky characters: the reader
/// never panics, positions stay inside the text, and (under `alloc`) what
/// parses prints back to an equal tree.
#[test]
fn random_texts_never_panic() {
    const ALPHABET: &[&str] = &[
        "(", ")", "'", "\"", "\\", "#", "\n", " ", "a", "x", "4", "7", "f", ";", "é", "\x01",
        "\\x", "\\0", "\\.",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut parsed = 0;
    for _ in 0..20_000 {
        let len = (next() % 24) as usize;
        let mut text = String::new();
        for _ in 0..len {
            text.push_str(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
        }
        let lines = text.split('\n').count() as u32;
        match render(&text) {
            Ok(_) => parsed += 1,
            Err(e) => {
                assert!(e.pos.line >= 1 && e.pos.line <= lines, "{text:?}: {e}");
                assert!(e.pos.column >= 1, "{text:?}: {e}");
            }
        }
        #[cfg(feature = "alloc")]
        if let Ok(values) = parse_all(&text, &mut IgnoreWarnings) {
            for v in values {
                let shown = std::string::ToString::to_string(&v);
                assert_eq!(parse_one(&shown, &mut IgnoreWarnings), Ok(v), "{text:?}");
            }
        }
    }
    // The alphabet is not so hostile that nothing parses.
    assert!(parsed > 1000, "{parsed}");
}

#[cfg(feature = "alloc")]
#[test]
fn display_escapes_controls_in_octal() {
    let v = Value::Atom(String::from("a\x0bb\x7f"));
    let shown = std::string::ToString::to_string(&v);
    assert_eq!(shown, r"'a\013b\177'");
    let mut ws = Vec::new();
    assert_eq!(parse_one(&shown, &mut ws), Ok(v));
    assert!(ws.is_empty());
}
