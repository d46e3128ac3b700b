//! The bodies of the fuzz targets in `fuzz/`, kept here so that
//! `tests/tests/fuzz_corpus.rs` replays every corpus file through exactly the
//! code the fuzzer ran. Each function must return for any input: a panic is
//! the bug the fuzzer looks for.

use relocd_core::{config, stream, sxp};

/// sxp: the pull reader over arbitrary bytes, then the owned tree; a tree
/// that parsed must print back to text that parses to the same tree.
pub fn sxp(data: &[u8]) {
    let Ok(mut reader) = sxp::Reader::from_bytes(data) else {
        return;
    };
    let mut warnings = Vec::new();
    let mut events = 0usize;
    while let Ok(Some(_)) = reader.next_event(&mut warnings) {
        events += 1;
    }
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(tree) = sxp::parse_all(text, &mut sxp::IgnoreWarnings) {
        let printed: Vec<String> = tree.iter().map(ToString::to_string).collect();
        let again = sxp::parse_all(&printed.join(" "), &mut sxp::IgnoreWarnings)
            .expect("printed sxp must parse again");
        assert_eq!(tree, again, "sxp print/parse round trip changed the tree");
        assert!(events > 0 || tree.is_empty());
    }
}

/// config: the relocation settings and a generic key lookup.
pub fn config(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let mut warnings = Vec::new();
    if let Ok(cfg) = config::RelocationConfig::parse(text, &mut warnings) {
        // Every string setting decodes.
        let _ = cfg.hosts_allow.to_owned_string();
        let _ = cfg.address.to_owned_string();
    }
    let _ = config::get(text, "relocd-anything", &mut sxp::IgnoreWarnings);
}

/// An in-memory [`Sink`](relocd_core::stream::writer::Sink) (the core
/// implements `Sink` for `Vec` only with embedded-io's `alloc` feature).
#[derive(Debug, Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl relocd_core::stream::writer::Sink for Bytes {
    type Error = core::convert::Infallible;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(())
    }
}

/// A small deterministic generator of push sizes, seeded from the input.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self, max: usize) -> usize {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        // Mostly small pieces, sometimes large ones.
        let r = (self.0 >> 8) as usize;
        let cap = if r & 3 == 0 { max } else { 64 };
        1 + r % cap.clamp(1, max.max(1))
    }
}

/// The outcome of one decode: the record headers seen and the verdict.
type Decoded = (
    Vec<stream::reader::RecordInfo>,
    Result<(), stream::Error>,
    u64,
);

fn decode_chunked(data: &[u8], opts: stream::reader::Options, seed: u32) -> Decoded {
    use stream::reader::{Decoder, Event, Totals};
    let mut d = Decoder::new(opts);
    let mut chunks = Chunks(seed);
    let mut records = Vec::new();
    let mut totals = Totals::default();
    let mut pos = 0usize;
    let mut guard = 0usize;
    let result = loop {
        guard += 1;
        assert!(
            guard < 16 * data.len() + 1024,
            "decoder made no progress at {pos}"
        );
        let end = data.len().min(pos + chunks.next(4096));
        let piece = &data[pos..end];
        let step = match d.push(piece) {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        assert!(step.consumed <= piece.len());
        pos += step.consumed;
        assert_eq!(d.offset(), pos as u64, "offset tracks consumption");
        match &step.event {
            Some(ev) => {
                totals.observe(ev);
                if let Event::Record(r) = ev {
                    records.push(*r);
                }
            }
            None if pos >= data.len() => {
                // Drain events still due, then the verdict.
                let r = loop {
                    match d.push(&[]) {
                        Ok(s) => match &s.event {
                            Some(ev) => {
                                totals.observe(ev);
                                if let Event::Record(r) = ev {
                                    records.push(*r);
                                }
                            }
                            None => break d.finish(),
                        },
                        Err(e) => break Err(e),
                    }
                };
                break r;
            }
            None => assert_eq!(step.consumed, piece.len(), "no event: all consumed"),
        }
    };
    if let Err(e) = &result {
        assert!(
            e.offset <= data.len() as u64,
            "error offset {e} past the input"
        );
    }
    (records, result, totals.bytes)
}

/// The decoder over `prefix ++ data`: in random push sizes derived from
/// the input, with default and strict options. Verdicts and record headers
/// do not depend on the push sizes; every record header reported is found
/// at its offset in the input; strict never accepts what default refuses;
/// an accepted stream ends with its last record.
fn stream_with_prefix(prefix: &[u8], data: &[u8]) {
    let seed = data
        .iter()
        .take(4)
        .fold(0u32, |a, b| a.rotate_left(8) ^ u32::from(*b));
    let mut input = prefix.to_vec();
    input.extend_from_slice(data);
    let mut verdicts = [false; 2];
    for (i, opts) in [
        stream::reader::Options::default(),
        stream::reader::Options::STRICT,
    ]
    .into_iter()
    .enumerate()
    {
        let (recs, result, bytes) = decode_chunked(&input, opts, seed);
        let (recs1, result1, _) = decode_chunked(&input, opts, !seed);
        assert_eq!(result, result1, "verdict depends on push sizes");
        assert_eq!(recs, recs1, "records depend on push sizes");
        let mut whole = Vec::new();
        let whole_result = stream::reader::decode_all(&input, opts, input.len().max(1), |ev| {
            if let stream::reader::Event::Record(r) = ev {
                whole.push(*r);
            }
        });
        assert_eq!(result, whole_result, "one push vs many");
        assert_eq!(recs, whole, "one push vs many: records");
        for r in &recs {
            let at = usize::try_from(r.offset).expect("offset fits");
            let hdr = input
                .get(at..at + 8)
                .expect("record header inside the input");
            let mut emitted = [0u8; 8];
            let n = stream::writer::emit_record(&mut emitted, r.rtype, &[]).expect("header");
            assert_eq!(n, 8);
            assert_eq!(hdr[..4], emitted[..4], "record type re-encodes");
            assert_eq!(
                hdr[4..8],
                r.length.to_le_bytes(),
                "record length re-encodes"
            );
        }
        if result.is_ok() {
            assert_eq!(
                bytes,
                input.len() as u64,
                "accepted stream ends with its last record"
            );
        }
        verdicts[i] = result.is_ok();
    }
    assert!(
        !verdicts[1] || verdicts[0],
        "strict accepted what default refused"
    );
}

/// stream_libxc: a bare libxc stream (the marker is supplied, the rest is
/// the input).
pub fn stream_libxc(data: &[u8]) {
    stream_with_prefix(&[0xff; 8], data);
}

/// stream_libxl: a libxl stream (the `LibxlFmt` ident is supplied).
pub fn stream_libxl(data: &[u8]) {
    stream_with_prefix(b"LibxlFmt", data);
}

/// stream_xl: an xl save file (the 32-byte magic is supplied).
pub fn stream_xl(data: &[u8]) {
    stream_with_prefix(&stream::xlfile::MAGIC, data);
}

/// inspect: `relocd inspect`'s code path over arbitrary bytes with a read
/// buffer size taken from the input, text and JSON. The JSON document
/// always parses, and the outcome matches the decoder's verdict.
pub fn inspect(data: &[u8]) {
    use relocd::inspect::{inspect_with, Outcome};
    let buf_len = 1 + data.first().map_or(0, |b| usize::from(*b) * 37);
    let mut buf = vec![0u8; buf_len];
    let opts = if data.get(1).is_some_and(|b| b & 1 == 1) {
        stream::reader::Options::STRICT
    } else {
        stream::reader::Options::default()
    };
    let verdict = stream::reader::decode_all(data, opts, 4096, |_| {});
    let mut text = Vec::new();
    let outcome = inspect_with(&mut &data[..], &mut buf, &mut text, false, opts);
    match (&outcome, &verdict) {
        (Outcome::Complete, Ok(())) => {}
        (Outcome::Damaged(e), Err(v)) => assert_eq!(e, v, "inspect and decoder disagree"),
        (o, v) => panic!("inspect {o:?} vs decoder {v:?}"),
    }
    let mut json = Vec::new();
    let outcome = inspect_with(&mut &data[..], &mut buf, &mut json, true, opts);
    let doc: serde_json::Value = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("inspect --json wrote invalid JSON: {e}"));
    assert!(doc["records"].is_array());
    match outcome {
        Outcome::Complete => assert!(doc.get("error").is_none()),
        Outcome::Damaged(e) => assert_eq!(doc["error"]["offset"], e.offset),
        Outcome::Io(e, _) => panic!("inspect on a slice: {e}"),
    }
}

/// hosts_allow: compile arbitrary setting text; when it compiles, admit a
/// few inputs derived from it through the owned setting and through its
/// serialized form, which must agree. Input: `setting\0peer\0peer…`.
pub fn hosts_allow(data: &[u8]) {
    use relocd_core::acl::{AlignedBytes, HostsAllow, HostsAllowRef};
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let setting = parts.next().unwrap_or("");
    let Ok((owned, _warnings)) = HostsAllow::compile(setting) else {
        return;
    };
    let bytes = owned.to_bytes();
    let aligned = AlignedBytes::copy_from(&bytes);
    let loaded = HostsAllowRef::from_bytes(aligned.as_bytes())
        .unwrap_or_else(|e| panic!("a compiled setting must load: {e:?}"));
    let mut peers: Vec<&str> = parts.collect();
    peers.extend(setting.split_whitespace().take(4));
    peers.extend(["127.0.0.1", "localhost", "", "::1", "host.example.org"]);
    for (i, peer) in peers.iter().enumerate() {
        let fqdn = peers.get(i + 1).copied();
        for name in [None, fqdn] {
            assert_eq!(
                owned.admit(peer, name),
                loaded.admit(peer, name),
                "owned and serialized disagree on {peer:?} / {name:?}"
            );
        }
    }
}

/// control_msg: arbitrary bytes as a relocation control frame body (and
/// the first four as a frame header); what decodes re-encodes to a frame
/// that decodes to the same message.
pub fn control_msg(data: &[u8]) {
    use relocd_core::protocol::msg;
    if let Some(h) = data.get(..msg::FRAME_HEADER_LEN) {
        let mut header = [0u8; msg::FRAME_HEADER_LEN];
        header.copy_from_slice(h);
        if let Ok(n) = msg::frame_len(header, msg::MAX_CONTROL_FRAME_LEN) {
            assert!(n > 0 && n <= msg::MAX_CONTROL_FRAME_LEN);
        }
    }
    let Ok(m) = msg::decode(data) else {
        return;
    };
    let mut out = vec![0u8; data.len() + 64];
    let n = msg::encode(&m, &mut out).unwrap_or_else(|e| panic!("{} re-encodes: {e:?}", m.name()));
    let body = &out[msg::FRAME_HEADER_LEN..n];
    assert_eq!(
        u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
        body.len()
    );
    assert!(body.len() <= data.len(), "re-encoding is never longer");
    let again =
        msg::decode(body).unwrap_or_else(|e| panic!("re-encoded {} decodes: {e:?}", m.name()));
    assert_eq!(again, m, "control message round trip");
}

/// Seeds for the stream targets: small valid streams written by
/// `StreamWriter` (PV and HVM, libxc, libxl and xl framing), as
/// `(target, name, bytes)` with the prefix the target supplies removed.
pub fn stream_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use stream::page_data::{PageType, PfnEntry};
    use stream::writer::{Framing, StreamWriter};
    use stream::x86::{HvmParam, TscInfoRepr};
    use stream::x86_pv::PvInfoRepr;
    use stream::{DomainHeaderRepr, DomainType, RecordType};
    let tsc = TscInfoRepr {
        mode: 0,
        khz: 1_000_000,
        nsec: 5,
        incarnation: 1,
    };
    let mut out = Vec::new();
    for (framing, target, prefix) in [
        (Framing::Libxc, "stream_libxc", 8),
        (Framing::Libxl, "stream_libxl", 8),
        (Framing::Xl, "stream_xl", 32),
    ] {
        for guest in [DomainType::X86Pv, DomainType::X86Hvm] {
            for with_page in [false, true] {
                let dom = DomainHeaderRepr {
                    domain_type: guest,
                    page_shift: 12,
                    xen_major: 4,
                    xen_minor: 17,
                };
                let mut w = match framing {
                    Framing::Xl => StreamWriter::new_xl(Bytes::default(), b"{}\0", dom),
                    f => StreamWriter::new(Bytes::default(), f, dom),
                }
                .expect("header");
                let pv = guest == DomainType::X86Pv;
                if pv {
                    w.pv_info(PvInfoRepr::X86_64).expect("pv_info");
                }
                w.cpuid_policy(&[1; 24]).expect("cpuid");
                w.msr_policy(&[0; 16]).expect("msr");
                w.static_data_end().expect("sde");
                if pv {
                    w.p2m_frames(0, 0xf, &[0x20]).expect("p2m");
                }
                let mut pfns = vec![
                    PfnEntry {
                        pfn: 3,
                        page_type: PageType::XTab,
                    },
                    PfnEntry {
                        pfn: 4,
                        page_type: PageType::Broken,
                    },
                ];
                let page = [0x42u8; 4096];
                let mut pages: Vec<&[u8]> = Vec::new();
                if with_page {
                    pfns.push(PfnEntry {
                        pfn: 5,
                        page_type: if pv {
                            PageType::PageTable {
                                level: 4,
                                pinned: true,
                            }
                        } else {
                            PageType::NoTab
                        },
                    });
                    pages.push(&page);
                }
                w.page_data(&pfns, &pages).expect("page_data");
                w.tsc_info(tsc).expect("tsc");
                if pv {
                    w.shared_info(&[0; 4096]).expect("shared_info");
                    w.vcpu(RecordType::X86PvVcpuBasic, 0, &[7; 16])
                        .expect("vcpu");
                } else {
                    w.hvm_params(&[HvmParam { index: 2, value: 9 }])
                        .expect("params");
                    w.hvm_context(&[9; 12]).expect("context");
                }
                w.end().expect("end");
                let bytes = w.finish().expect("finish").0;
                let name = format!(
                    "seed-{}-{}",
                    if pv { "pv" } else { "hvm" },
                    if with_page { "page" } else { "nodata" }
                );
                out.push((target, name.clone(), bytes[prefix..].to_vec()));
                if target == "stream_libxc" || target == "stream_xl" {
                    out.push(("inspect", format!("{name}-{target}"), bytes));
                }
            }
        }
    }
    out
}

/// cert_names: the subject alternative names of a peer's certificate, read
/// from arbitrary DER: never more than the bound, never a panic.
pub fn cert_names(data: &[u8]) {
    let names = relocd::tls::cert_names(data);
    assert!(names.dns.len() + names.ip.len() <= relocd::tls::MAX_NAMES);
    assert!(names.dns.iter().all(|n| !n.is_empty() && n.len() <= 253));
}
