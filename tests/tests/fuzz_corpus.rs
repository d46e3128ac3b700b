//! Replays every file of `fuzz/corpus/<target>/` through the fuzz target's
//! body, so inputs the fuzzer found (and the seeds) stay regression tests in
//! the ordinary test run.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap();
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target}: {} panicked", file.display());
    }
}

#[test]
fn sxp_corpus() {
    replay("sxp", relocd_tests::fuzz_entry::sxp);
}

#[test]
fn config_corpus() {
    replay("config", relocd_tests::fuzz_entry::config);
}

#[test]
fn stream_libxc_corpus() {
    replay("stream_libxc", relocd_tests::fuzz_entry::stream_libxc);
}

#[test]
fn stream_libxl_corpus() {
    replay("stream_libxl", relocd_tests::fuzz_entry::stream_libxl);
}

#[test]
fn stream_xl_corpus() {
    replay("stream_xl", relocd_tests::fuzz_entry::stream_xl);
}

#[test]
fn inspect_corpus() {
    replay("inspect", relocd_tests::fuzz_entry::inspect);
}

#[test]
fn hosts_allow_corpus() {
    replay("hosts_allow", relocd_tests::fuzz_entry::hosts_allow);
}

#[test]
fn control_msg_corpus() {
    replay("control_msg", relocd_tests::fuzz_entry::control_msg);
}

#[test]
fn cert_names_corpus() {
    replay("cert_names", relocd_tests::fuzz_entry::cert_names);
    // The seed is a real certificate: its names are read.
    let seed = std::fs::read(corpus("cert_names")[0].clone()).unwrap();
    let names = relocd::tls::cert_names(&seed);
    assert_eq!(names.dns, ["hosta.example.org"]);
    assert_eq!(names.ip.len(), 2, "{names:?}");
}

/// The stream seeds in `fuzz/corpus/` are what the writer produces today
/// (`RELOCD_WRITE_SEEDS=1` rewrites them), and each is a complete stream.
#[test]
fn stream_seeds_are_the_writers_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = std::env::var_os("RELOCD_WRITE_SEEDS").is_some();
    for (target, name, bytes) in relocd_tests::fuzz_entry::stream_seeds() {
        let file = root.join(target).join(&name);
        if write {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(on_disk, bytes, "{} differs from the writer", file.display());
    }
    use relocd_core::protocol::msg::{encode, Msg, FRAME_HEADER_LEN};
    for (name, m) in [
        ("seed-admitted", Msg::Admitted),
        (
            "seed-image",
            Msg::Image(b"\xff\xff\xff\xff\xff\xff\xff\xffXENF"),
        ),
        ("seed-commit", Msg::Commit),
        ("seed-suspended", Msg::Suspended),
    ] {
        let mut out = [0u8; 64];
        let n = encode(&m, &mut out).unwrap();
        let body = &out[FRAME_HEADER_LEN..n];
        let file = root.join("control_msg").join(name);
        if write {
            std::fs::write(&file, body).unwrap();
        }
        assert_eq!(std::fs::read(&file).unwrap(), body, "{}", file.display());
    }
}

/// Truncating small valid streams (every framing, PV and HVM) at every
/// byte: never a panic, always `Truncated` at the cut, whatever the push
/// size.
#[test]
fn stream_seeds_truncated_at_every_byte() {
    use relocd_core::stream::reader::{decode_all, Options};
    use relocd_core::stream::{Error, ErrorKind};
    let mut cuts = 0;
    for (target, name, bytes) in relocd_tests::fuzz_entry::stream_seeds() {
        if target != "inspect" {
            continue;
        }
        decode_all(&bytes, Options::STRICT, 5, |_| {}).unwrap();
        for cut in 0..bytes.len() {
            for chunk in [1, 13, 4096] {
                if chunk == 1 && cut % 61 != 0 {
                    continue; // byte-at-a-time on a sample of cuts: the same path, slower
                }
                let e = decode_all(&bytes[..cut], Options::default(), chunk, |_| {})
                    .expect_err("a truncated stream is refused");
                assert_eq!(
                    e,
                    Error::new(cut as u64, ErrorKind::Truncated),
                    "{name}: cut {cut} chunk {chunk}"
                );
            }
            cuts += 1;
        }
    }
    assert!(cuts > 20_000, "{cuts}");
}
