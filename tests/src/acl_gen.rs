//! hosts-allow cases for the CPython differential test and the bench:
//! patterns from a grammar of the Python `re` constructs relocd supports
//! (plus host-name pieces), inputs biased to hit and to just miss, and
//! CPython's `re` as the oracle.

use std::io::Write;
use std::process::{Command, Stdio};

use relocd_core::acl::{Decision, MatchedOn};
use serde_json::{json, Value};

/// splitmix64: small, seedable, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const PIECES: &[&str] = &[
    "host",
    "node",
    "web",
    "db",
    "xen",
    "example",
    "org",
    "net",
    "local",
    "localhost",
    "a",
    "b",
    "x",
    "10",
    "192",
    "168",
    "0",
    "1",
    "255",
    "dom0",
];

/// (pattern text, a string it matches)
const ATOMS: &[(&str, &str)] = &[
    (r"\.", "."),
    (".", "q"),
    ("[a-z]", "m"),
    ("[0-9]", "7"),
    ("[^.]", "x"),
    ("[a-f0-9]", "c"),
    ("[.-]", "-"),
    ("[[:alpha:]]", "a]"),
    ("[]a]", "a"),
    ("[a-]", "-"),
    ("[^a-c]", "d"),
    (r"[\d.]", "3"),
    (r"[\w-]", "_"),
    (r"\d", "5"),
    (r"\w", "k"),
    (r"\D", "x"),
    (r"\W", "."),
    (r"\S", "z"),
    (r"\s", "s"),
    (r"\x2e", "."),
    (r"\x41", "A"),
    (r"\u0061", "a"),
    (r"\U00000062", "b"),
    (r"\056", "."),
    (r"\0", "0"),
    (r"\-", "-"),
    (r"\u212a", "k"),
    (r"\u0131", "i"),
    (r"\u017f", "s"),
    (r"\u0130", "i"),
    ("é", "e"),
    ("a{x}", "a{x}"),
    ("x{}", "x{}"),
    ("b{1,c", "b{1,c"),
    ("(?#note)", ""),
    ("]", "]"),
    ("}", "}"),
];

const FLAGS: &[&str] = &[
    "(?i)", "(?a)", "(?s)", "(?m)", "(?ai)", "(?x)", "(?im)", "(?u)",
];
const SCOPED: &[&str] = &[
    "(?:", "(", "(?i:", "(?-i:", "(?s:", "(?a:", "(?m:", "(?ai:", "(?u:",
];

/// Constructs Python accepts or rejects that relocd must refuse.
const HOSTILE: &[&str] = &[
    r"(a)\1",
    "(?=a)",
    "(?!a)",
    "(?<=a)",
    "(?<!a)",
    "(?>a)",
    "a*+",
    "a++",
    r"\q",
    "(?P=x)",
    "a{3,2}",
    "(?i)",
    "[z-a]",
    "(?#",
    "(?P<1>a)",
    "\\",
    ")",
    "(?Z)",
    "(?(1)a|b)",
    "**",
    "[",
    "(?L)",
    "(?-a:x)",
    r"\8",
    r"\400",
    r"\x4",
    "a{4294967296}",
];

struct Gen<'r> {
    rng: &'r mut Rng,
    groups: usize,
}

impl Gen<'_> {
    fn atom(&mut self, depth: usize) -> (String, String) {
        let r = self.rng.below(100);
        if r < 45 {
            let p = *self.rng.pick(PIECES);
            (p.to_string(), p.to_string())
        } else if r < 80 || depth > 2 {
            let (p, s) = *self.rng.pick(ATOMS);
            (p.to_string(), s.to_string())
        } else {
            let open = *self.rng.pick(SCOPED);
            let open = if open == "(" && self.rng.chance(30) {
                self.groups += 1;
                format!("(?P<g{}>", self.groups)
            } else {
                open.to_string()
            };
            let (a, sa) = self.seq(depth + 1);
            if self.rng.chance(40) {
                let (b, sb) = self.seq(depth + 1);
                let s = if self.rng.chance(50) { sa } else { sb };
                (format!("{open}{a}|{b})"), s)
            } else {
                (format!("{open}{a})"), sa)
            }
        }
    }

    fn quantified(&mut self, depth: usize) -> (String, String) {
        let (p, s) = self.atom(depth);
        if p.starts_with("(?#") || !self.rng.chance(30) {
            return (p, s);
        }
        let (q, lo, hi) = match self.rng.below(8) {
            0 => ("*".to_string(), 0, 3),
            1 => ("+".to_string(), 1, 3),
            2 => ("?".to_string(), 0, 1),
            3 => {
                let m = self.rng.below(3);
                (format!("{{{m}}}"), m, m)
            }
            4 => {
                let m = self.rng.below(2);
                let n = m + self.rng.below(3);
                (format!("{{{m},{n}}}"), m, n)
            }
            5 => {
                let n = self.rng.below(3);
                (format!("{{,{n}}}"), 0, n)
            }
            6 => {
                let m = self.rng.below(3);
                (format!("{{{m},}}"), m, m + 2)
            }
            _ => ("{,}".to_string(), 0, 2),
        };
        let lazy = if self.rng.chance(20) { "?" } else { "" };
        let k = lo + self.rng.below(hi - lo + 1);
        // A multi-char atom must be grouped to be repeated as a whole.
        let p = if p.chars().count() > 1
            && !p.starts_with('(')
            && !p.starts_with('[')
            && !p.starts_with('\\')
        {
            format!("(?:{p})")
        } else {
            p
        };
        (format!("{p}{q}{lazy}"), s.repeat(k))
    }

    fn seq(&mut self, depth: usize) -> (String, String) {
        let n = 1 + self.rng.below(if depth == 0 { 5 } else { 3 });
        let (mut p, mut s) = (String::new(), String::new());
        for i in 0..n {
            if i > 0 && self.rng.chance(10) {
                p.push_str(self.rng.pick::<&str>(&[r"\b", r"\B", "^", "$"]));
            }
            let (a, b) = self.quantified(depth);
            p.push_str(&a);
            s.push_str(&b);
        }
        (p, s)
    }

    fn pattern(&mut self) -> (String, String) {
        self.groups = 0;
        let mut p = String::new();
        if self.rng.chance(15) {
            p.push_str(self.rng.pick::<&str>(FLAGS));
        }
        if self.rng.chance(50) {
            p.push_str(self.rng.pick::<&str>(&["^", r"\A"]));
        }
        let (body, s) = self.seq(0);
        p.push_str(&body);
        if self.rng.chance(50) {
            p.push_str(self.rng.pick::<&str>(&["$", r"\Z", r"\b", r"$"]));
        }
        if self.rng.chance(6) {
            // Hostile: a refused construct or a Python syntax error.
            let h = *self.rng.pick(HOSTILE);
            let cut: Vec<usize> = p.char_indices().map(|(i, _)| i).chain([p.len()]).collect();
            let at = *self.rng.pick(&cut);
            p.insert_str(at, h);
        }
        (p, s)
    }
}

/// One decision to make: setting `setting`, peer address `ip`, peer name.
#[derive(Debug, Clone)]
pub struct Case {
    /// Index into [`Corpus::settings`].
    pub setting: usize,
    /// The address text.
    pub ip: String,
    /// The FQDN, when known.
    pub name: Option<String>,
}

/// Settings (each a list of patterns) and the cases run against them.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// Each setting's patterns, none empty, none containing white space.
    pub settings: Vec<Vec<String>>,
    /// The cases.
    pub cases: Vec<Case>,
}

impl Corpus {
    /// A setting's text as xend-config.sxp holds it.
    pub fn setting_text(&self, i: usize) -> String {
        self.settings[i].join(" ")
    }
}

fn plausible_name(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if t.is_empty() {
        "x".to_string()
    } else {
        t
    }
}

fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut b: Vec<u8> = s.bytes().collect();
    if b.is_empty() {
        return "y".to_string();
    }
    let i = rng.below(b.len());
    match rng.below(4) {
        0 => b[i] = *rng.pick(b"abz09.-_X"),
        1 => {
            b.remove(i);
        }
        2 => b.insert(i, *rng.pick(b"abz09.-_X")),
        _ => b.make_ascii_uppercase(),
    }
    String::from_utf8(b).unwrap_or_default()
}

/// `n_settings` settings of 1–4 patterns with `per_setting` cases each, from
/// `seed`; the xend-config.sxp seed example comes first.
pub fn generate(seed: u64, n_settings: usize, per_setting: usize) -> Corpus {
    let mut rng = Rng::new(seed);
    let mut c = Corpus::default();
    c.settings.push(vec![
        r"^localhost$".to_string(),
        r"^localhost\.localdomain$".to_string(),
    ]);
    for (ip, name) in [
        ("127.0.0.1", Some("localhost")),
        ("127.0.0.1", Some("localhost.localdomain")),
        ("127.0.0.1", Some("localhost.localdomain.evil.example")),
        ("192.0.2.1", Some("localhostx")),
        ("192.0.2.1", None),
    ] {
        c.cases.push(Case {
            setting: 0,
            ip: ip.into(),
            name: name.map(String::from),
        });
    }
    for _ in 1..n_settings {
        let k = 1 + rng.below(4);
        let mut pats = Vec::new();
        let mut samples = Vec::new();
        for _ in 0..k {
            let mut g = Gen {
                rng: &mut rng,
                groups: 0,
            };
            let (p, s) = g.pattern();
            pats.push(if p.is_empty() { "x".to_string() } else { p });
            samples.push(plausible_name(&s));
        }
        let si = c.settings.len();
        c.settings.push(pats);
        for _ in 0..per_setting {
            let s = rng.pick(&samples).clone();
            let name = match rng.below(10) {
                0 => None,
                1 => Some(format!("{s}.evil.example")),
                2 | 3 => Some(plausible_name(&mutate(&mut rng, &s))),
                4 => Some(format!("{}.{}", rng.pick(PIECES), rng.pick(PIECES))),
                5 => Some(s.to_ascii_uppercase()),
                _ => Some(s.clone()),
            };
            let ip = match rng.below(6) {
                0 => format!("10.0.{}.{}", rng.below(3), rng.below(256)),
                1 => format!("192.168.{}.{}", rng.below(2), rng.below(256)),
                2 => "127.0.0.1".to_string(),
                3 => "fe80::1%eth0".to_string(),
                4 if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') => s.clone(),
                _ => format!(
                    "{}.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    rng.below(256),
                    rng.below(256)
                ),
            };
            c.cases.push(Case {
                setting: si,
                ip,
                name,
            });
        }
    }
    c
}

/// A verdict: the first admitting pattern and what it matched, or `None`.
pub type Verdict = Option<(usize, MatchedOn)>;

/// relocd's verdict in the oracle's terms.
pub fn verdict(d: Decision) -> Verdict {
    match d {
        Decision::Admitted { pattern, on } => Some((pattern, on)),
        Decision::AdmitAll | Decision::Refused { .. } => None,
    }
}

/// What CPython said.
#[derive(Debug, Clone)]
pub struct Oracle {
    /// Per setting, per pattern: whether `re.compile` accepted it.
    pub compiles: Vec<Vec<bool>>,
    /// Per case; `None` when a pattern of its setting does not compile.
    pub verdicts: Vec<Option<Verdict>>,
}

const ORACLE_PY: &str = r#"
import json, re, sys, warnings
warnings.simplefilter("ignore")
req = json.load(sys.stdin)
compiles, compiled = [], []
for pats in req["settings"]:
    ok, cs = [], []
    for p in pats:
        try:
            cs.append(re.compile(p)); ok.append(True)
        except Exception:
            cs.append(None); ok.append(False)
    compiles.append(ok); compiled.append(cs)
verdicts = []
for si, ip, name in req["cases"]:
    cs = compiled[si]
    if any(c is None for c in cs):
        verdicts.append(None); continue
    v = [-1, ""]
    for i, c in enumerate(cs):
        if name is not None and c.match(name):
            v = [i, "name"]; break
        if c.match(ip):
            v = [i, "ip"]; break
    verdicts.append(v)
json.dump({"version": sys.version, "compiles": compiles, "verdicts": verdicts}, sys.stdout)
"#;

fn run_python(script: &str, input: &Value) -> Value {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed: it is the oracle for hosts-allow");
    let body = serde_json::to_vec(input).expect("JSON encoding");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().expect("python3 output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python3");
    assert!(out.status.success(), "python3 failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

fn request(corpus: &Corpus) -> Value {
    let cases: Vec<Value> = corpus
        .cases
        .iter()
        .map(|c| json!([c.setting, c.ip, c.name]))
        .collect();
    json!({ "settings": corpus.settings, "cases": cases })
}

/// Runs every case through CPython's `re` in one python3 process.
pub fn python_oracle(corpus: &Corpus) -> Oracle {
    let v = run_python(ORACLE_PY, &request(corpus));
    let version = v["version"].as_str().unwrap_or("");
    assert!(
        version.starts_with("3.11"),
        "the oracle is CPython 3.11's re; found python {version}"
    );
    let compiles = v["compiles"]
        .as_array()
        .expect("compiles")
        .iter()
        .map(|s| {
            s.as_array()
                .expect("list")
                .iter()
                .map(|b| b.as_bool().expect("bool"))
                .collect()
        })
        .collect();
    let verdicts = v["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .map(|x| {
            if x.is_null() {
                return None;
            }
            let i = x[0].as_i64().expect("index");
            Some(if i < 0 {
                None
            } else {
                let on = if x[1] == "name" {
                    MatchedOn::Name
                } else {
                    MatchedOn::Ip
                };
                Some((i as usize, on))
            })
        })
        .collect();
    Oracle { compiles, verdicts }
}

const BENCH_PY: &str = r#"
import json, re, sys, time, warnings
warnings.simplefilter("ignore")
req = json.load(sys.stdin)
compiled = [[re.compile(p) for p in pats] for pats in req["settings"]]
cases = [(compiled[si], ip, name or "") for si, ip, name in req["cases"]]
rounds, admitted, t0 = 0, 0, time.perf_counter_ns()
while True:
    for ps, ip, name in cases:
        if any(p.match(name) or p.match(ip) for p in ps):
            admitted += 1
    rounds += 1
    elapsed = time.perf_counter_ns() - t0
    if elapsed > req["min_ns"]:
        break
json.dump({"decisions": rounds * len(cases), "ns": elapsed, "admitted": admitted // rounds}, sys.stdout)
"#;

/// CPython's speed on `corpus` (every setting must compile in Python):
/// (decisions made, nanoseconds taken, admitted per round).
pub fn python_bench(corpus: &Corpus, min_ns: u64) -> (u64, u64, u64) {
    let mut req = request(corpus);
    req["min_ns"] = json!(min_ns);
    let v = run_python(BENCH_PY, &req);
    let get = |k: &str| v[k].as_u64().expect("number");
    (get("decisions"), get("ns"), get("admitted"))
}
