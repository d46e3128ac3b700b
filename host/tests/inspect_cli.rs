//! `relocd inspect` as a user runs it: the binary on a file and on stdin,
//! in each framing, damaged streams, and `--json`.

use relocd_core::stream::page_data::{PageType, PfnEntry};
use relocd_core::stream::writer::{Framing, Sink, StreamWriter};
use relocd_core::stream::x86::TscInfoRepr;
use relocd_core::stream::x86_pv::PvInfoRepr;
use relocd_core::stream::{DomainHeaderRepr, DomainType, RecordType};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// An in-memory sink (the core implements `Sink` for `Vec` only with
/// embedded-io's `alloc` feature).
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Sink for Bytes {
    type Error = std::convert::Infallible;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(())
    }
}

fn pv_stream(framing: Framing) -> Vec<u8> {
    let dom = DomainHeaderRepr {
        domain_type: DomainType::X86Pv,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    };
    let mut w = match framing {
        Framing::Xl => StreamWriter::new_xl(Bytes::default(), b"{\"name\":\"g\"}\0", dom).unwrap(),
        f => StreamWriter::new(Bytes::default(), f, dom).unwrap(),
    };
    w.pv_info(PvInfoRepr::X86_64).unwrap();
    w.static_data_end().unwrap();
    w.p2m_frames(0, 0x1ff, &[0x2000]).unwrap();
    let pfns = [
        PfnEntry {
            pfn: 0x10,
            page_type: PageType::NoTab,
        },
        PfnEntry {
            pfn: 0x11,
            page_type: PageType::PageTable {
                level: 4,
                pinned: true,
            },
        },
        PfnEntry {
            pfn: 0x12,
            page_type: PageType::XTab,
        },
    ];
    let page = [0x5au8; 4096];
    w.page_data(&pfns, &[&page, &page]).unwrap();
    w.tsc_info(TscInfoRepr {
        mode: 0,
        khz: 2_000_000,
        nsec: 1,
        incarnation: 0,
    })
    .unwrap();
    w.shared_info(&[0u8; 4096]).unwrap();
    for id in 0..2 {
        w.vcpu(RecordType::X86PvVcpuBasic, id, &[1u8; 64]).unwrap();
    }
    w.end().unwrap();
    w.finish().unwrap().0
}

fn relocd(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relocd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // A reader that stops early (damaged stream) closes the pipe.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relocd-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_framing_from_a_file_and_from_stdin() {
    for (framing, format) in [
        (Framing::Libxc, "libxc stream"),
        (Framing::Libxl, "libxl stream"),
        (Framing::Xl, "xl save file"),
    ] {
        let bytes = pv_stream(framing);
        let file = tmp(&format!("{framing:?}"), &bytes);
        let a = relocd(&["inspect", file.to_str().unwrap()], None);
        let b = relocd(&["inspect", "-"], Some(&bytes));
        for o in [&a, &b] {
            let (out, err) = text(o);
            assert_eq!(o.status.code(), Some(0), "{framing:?}: {out}\n{err}");
            assert!(out.contains(&format!("format: {format}")), "{out}");
            assert!(
                out.contains("domain header: x86 PV, page shift 12"),
                "{out}"
            );
            assert!(out.contains("X86_PV_INFO"), "{out}");
            assert!(
                out.contains("pfns 0x10-0x12: 3 (2 with data) NOTAB 1 XTAB 1 L4TAB_PIN 1")
                    || out.contains("pfns 0x10-0x12: 3 (2 with data) NOTAB 1 L4TAB_PIN 1 XTAB 1"),
                "{out}"
            );
            assert!(out.contains("vcpus: 2"), "{out}");
            assert!(out.contains(&format!("bytes: {}", bytes.len())), "{out}");
            assert!(err.is_empty(), "{err}");
        }
        assert_eq!(a.stdout, b.stdout, "{framing:?}: file and stdin differ");
        if framing == Framing::Xl {
            let (out, _) = text(&a);
            assert!(out.contains("xl header: mandatory flags 0x3"), "{out}");
            assert!(out.contains("libxl header: version 2"), "{out}");
        }
    }
}

#[test]
fn truncated_stream_reports_the_offset_and_keeps_what_was_read() {
    let bytes = pv_stream(Framing::Libxl);
    let cut = bytes.len() - 100;
    let o = relocd(&["inspect", "-"], Some(&bytes[..cut]));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains(&format!("at byte {cut}: truncated")), "{err}");
    assert!(
        out.contains(&format!("error: at byte {cut}: truncated")),
        "{out}"
    );
    assert!(out.contains("PAGE_DATA"), "what was read is printed: {out}");
    assert!(out.contains("(incomplete)"), "{out}");
}

#[test]
fn corrupted_marker_reports_the_offset() {
    let mut bytes = pv_stream(Framing::Libxc);
    bytes[3] = 0; // inside the image header's all-ones marker
    let file = tmp("corrupt", &bytes);
    let o = relocd(&["inspect", file.to_str().unwrap()], None);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    // Not recognised as a libxc stream any more.
    assert!(err.contains("at byte 0:"), "{err}");

    // A page-type nibble 0x5 (reserved) in the PAGE_DATA pfn array.
    let mut bytes = pv_stream(Framing::Libxc);
    let pd = find_record(&bytes, 1);
    let word = pd + 16 + 8; // record header, count+reserved, then pfn 0
    bytes[word + 7] = 0x50;
    let o = relocd(&["inspect", "-", "--json"], Some(&bytes));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["offset"], word as u64);
    assert_eq!(v["error"]["reason"], "reserved page type 0x5");
    assert!(v["records"].as_array().unwrap().len() >= 3);
}

/// Offset of the first libxc record of `rtype` in a bare libxc stream.
fn find_record(bytes: &[u8], rtype: u32) -> usize {
    let mut pos = 24 + 16;
    loop {
        let t = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if t == rtype {
            return pos;
        }
        pos += 8 + len.div_ceil(8) * 8;
    }
}

#[test]
fn json_parses_with_headers_records_and_totals() {
    let bytes = pv_stream(Framing::Xl);
    let o = relocd(&["--json", "inspect", "-"], Some(&bytes));
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "xl");
    assert_eq!(v["headers"]["domain"]["type"], "x86 PV");
    assert_eq!(v["headers"]["image"]["version"], 3);
    assert_eq!(v["headers"]["xl"]["mandatory_flags"], 3);
    let recs = v["records"].as_array().unwrap();
    let pd = recs.iter().find(|r| r["name"] == "PAGE_DATA").unwrap();
    assert_eq!(pd["pages"]["count"], 3);
    assert_eq!(pd["pages"]["types"]["L4TAB_PIN"], 1);
    assert_eq!(v["totals"]["vcpus"], 2);
    assert_eq!(v["totals"]["bytes"], bytes.len() as u64);
    assert_eq!(v["totals"]["records"], recs.len() as u64);
    assert!(v.get("error").is_none());

    // Not a stream at all: still one JSON document.
    let o = relocd(
        &["inspect", "--json", "-"],
        Some(b"hello, world, not a stream"),
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["offset"], 0);
    assert!(v["format"].is_null());
}

#[test]
fn missing_file_is_an_io_error_and_help_describes_the_command() {
    let o = relocd(&["inspect", "/nonexistent/relocd-stream"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = relocd(&["inspect", "--help"], None);
    let (out, _) = text(&o);
    assert!(
        out.contains("FILE|-") && out.contains("--strict") && out.contains("Exit status"),
        "{out}"
    );
}

/// An HVM-style image (what the sim backend saves) carries its vCPUs in
/// HVM_CONTEXT: inspect says so rather than `vcpus: 0`.
#[test]
fn vcpus_in_hvm_context_are_not_reported_as_zero() {
    let dom = DomainHeaderRepr {
        domain_type: DomainType::X86Hvm,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    };
    let mut w = StreamWriter::new_xl(Bytes::default(), b"{\"name\":\"g\"}\0", dom).unwrap();
    w.static_data_end().unwrap();
    let page = [0x5au8; 4096];
    let pfn = PfnEntry {
        pfn: 0,
        page_type: PageType::NoTab,
    };
    w.page_data(&[pfn], &[&page]).unwrap();
    w.hvm_params(&[]).unwrap();
    w.hvm_context(&[0u8; 16]).unwrap();
    w.end().unwrap();
    let bytes = w.finish().unwrap().0;
    let o = relocd(&["inspect", "-"], Some(&bytes));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("vcpus: in HVM_CONTEXT (not counted)"),
        "{text}"
    );
    let o = relocd(&["inspect", "--json", "-"], Some(&bytes));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["totals"]["vcpus"].is_null(), "{v}");
}
