//! Decoder tests: literal streams from the spec, every rejection with its
//! offset, truncation at every byte, chunking, bounded memory.

use super::*;
use crate::stream::page_data::PageType;
use std::format;
use std::string::String;
use std::vec::Vec;

/// A small x86 PV stream, written out by hand from the spec's tables.
#[rustfmt::skip]
pub(crate) static PV_STREAM: [u8; 184] = [
    // 0: image header: marker, "XENF", version 3, options 0
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x58, 0x45, 0x4e, 0x46, 0x00, 0x00, 0x00, 0x03,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 24: domain header: x86 PV, page_shift 12, Xen 4.17
    0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00,
    // 40: X86_PV_INFO, 8 octets: width 8, levels 4
    0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
    0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 56: STATIC_DATA_END
    0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 64: X86_PV_P2M_FRAMES, 16 octets: pfns 0..=0x1ff in frame 0x2000
    0x03, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0x01, 0x00, 0x00,
    0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 88: PAGE_DATA, 24 octets: count 2, pfn 5 XTAB, pfn 6 XALLOC (no data)
    0x01, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0,
    0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0,
    // 120: X86_TSC_INFO, 24 octets: mode 0, 1 GHz, 0 ns, incarnation 1
    0x08, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x42, 0x0f, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 152: X86_PV_VCPU_BASIC, 13 octets: vcpu 0, 5 octets of context, 3 pad
    0x04, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x00, 0x00,
    // 176: END
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// Events as comparable text; data pieces are merged per record so that
/// the chunking of the input does not show.
pub(crate) fn events(input: &[u8], opts: Options, chunk: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut what = "";
    let flush = |out: &mut Vec<String>, data: &mut Vec<u8>, what: &str| {
        if !data.is_empty() {
            let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
            out.push(format!("{what}[{} sum {sum}]", data.len()));
            data.clear();
        }
    };
    decode_all(input, opts, chunk, |ev| match ev {
        Event::Body { data: d, .. } => {
            what = "body";
            data.extend_from_slice(d)
        }
        Event::PageData { data: d, .. } => {
            what = "pages";
            data.extend_from_slice(d)
        }
        Event::XlConfig { data: d, .. } => {
            what = "config";
            data.extend_from_slice(d)
        }
        other => {
            flush(&mut out, &mut data, what);
            out.push(format!("{other:?}"));
        }
    })?;
    flush(&mut out, &mut data, what);
    Ok(out)
}

fn err(input: &[u8], opts: Options) -> Error {
    decode_all(input, opts, 4096, |_| {}).unwrap_err()
}

#[test]
fn pv_stream_events() {
    let ev = events(&PV_STREAM, Options::STRICT, 4096).unwrap();
    let text = ev.join("\n");
    let want = [
        "Detected(Libxc)",
        "ImageHeader(ImageHeaderRepr { version: 3, big_endian: false })",
        "DomainHeader(DomainHeaderRepr { domain_type: X86Pv, page_shift: 12, xen_major: 4, xen_minor: 17 })",
        "Record(RecordInfo { layer: Libxc, rtype: 2, length: 8, offset: 40, skipped: false })",
        "PvInfo(PvInfoRepr { guest_width: 8, pt_levels: 4 })",
        "Record(RecordInfo { layer: Libxc, rtype: 16, length: 0, offset: 56, skipped: false })",
        "P2mFrames(P2mFramesRepr { start_pfn: 0, end_pfn: 511 })",
        "P2mFrame { index: 0, pfn: 8192 }",
        "PageDataHeader { count: 2 }",
        "Pfn { index: 0, entry: PfnEntry { pfn: 5, page_type: XTab } }",
        "Pfn { index: 1, entry: PfnEntry { pfn: 6, page_type: XAlloc } }",
        "TscInfo(TscInfoRepr { mode: 0, khz: 1000000, nsec: 0, incarnation: 1 })",
        "Vcpu(VcpuHeaderRepr { vcpu_id: 0 })",
        "body[5 sum 255]",
        "Record(RecordInfo { layer: Libxc, rtype: 0, length: 0, offset: 176, skipped: false })",
        "End",
    ];
    for w in want {
        assert!(text.contains(w), "missing {w} in\n{text}");
    }
    let records = ev.iter().filter(|e| e.starts_with("Record(")).count();
    let ends = ev.iter().filter(|e| e.starts_with("RecordEnd(")).count();
    assert_eq!((records, ends), (7, 7));
    assert_eq!(ev.last().map(String::as_str), Some("End"));
    let summary = ev.iter().find(|e| e.starts_with("PfnsDone")).unwrap();
    assert!(
        summary.contains("count: 2, data_pages: 0, min_pfn: 5, max_pfn: 6"),
        "{summary}"
    );
}

#[test]
fn chunking_does_not_matter() {
    let whole = events(&PV_STREAM, Options::default(), 1 << 20).unwrap();
    for chunk in [1, 2, 3, 5, 7, 8, 13] {
        assert_eq!(
            events(&PV_STREAM, Options::default(), chunk).unwrap(),
            whole,
            "chunk {chunk}"
        );
    }
}

#[test]
fn truncation_at_every_byte() {
    for cut in 0..PV_STREAM.len() {
        for chunk in [1, 7, 4096] {
            let e = decode_all(&PV_STREAM[..cut], Options::STRICT, chunk, |_| {}).unwrap_err();
            assert_eq!(e, Error::new(cut as u64, ErrorKind::Truncated), "cut {cut}");
        }
    }
}

#[test]
fn truncation_at_every_byte_of_an_xl_file() {
    let mut x = b"Xen saved domain, xl format\n \0 \r".to_vec();
    x.extend_from_slice(&[
        4, 3, 2, 1, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, b'{', b'}', 0, 7, 7,
    ]);
    x.extend_from_slice(&libxl_wrap(&HVM_STREAM));
    assert!(decode_all(&x, Options::STRICT, 3, |_| {}).is_ok());
    for cut in 0..x.len() {
        let e = decode_all(&x[..cut], Options::STRICT, 5, |_| {}).unwrap_err();
        assert_eq!(e, Error::new(cut as u64, ErrorKind::Truncated), "cut {cut}");
    }
}

#[test]
fn decoder_is_small() {
    assert!(
        core::mem::size_of::<Decoder>() <= 512,
        "{}",
        core::mem::size_of::<Decoder>()
    );
}

#[test]
fn failed_decoder_stays_failed() {
    let mut d = Decoder::new(Options::default());
    let e = d.push(b"notastream").unwrap_err();
    assert_eq!(e, Error::new(0, ErrorKind::UnknownFormat));
    assert_eq!(d.push(&PV_STREAM).unwrap_err(), e);
    assert_eq!(d.finish().unwrap_err(), e);
}

/// Copy of the PV stream with `f` applied.
fn pv(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = PV_STREAM.to_vec();
    f(&mut v);
    v
}

fn at(offset: u64, kind: ErrorKind) -> Error {
    Error::new(offset, kind)
}

#[test]
fn header_rejects() {
    let o = Options::default();
    assert_eq!(
        err(&pv(|v| v[8] = b'Y'), o),
        at(8, ErrorKind::BadImageId(0x5945_4e46))
    );
    assert_eq!(
        err(&pv(|v| v[15] = 1), o),
        at(12, ErrorKind::UnsupportedVersion(1))
    );
    assert_eq!(err(&pv(|v| v[17] = 1), o), at(16, ErrorKind::BigEndian));
    assert_eq!(
        err(&pv(|v| v[17] = 2), Options::STRICT),
        at(16, ErrorKind::ReservedNotZero)
    );
    assert_eq!(
        err(&pv(|v| v[24] = 3), o),
        at(24, ErrorKind::UnsupportedDomainType(3))
    );
    assert_eq!(
        err(&pv(|v| v[28] = 13), o),
        at(28, ErrorKind::UnsupportedPageShift(13))
    );
    assert_eq!(
        err(&pv(|v| v[30] = 1), Options::STRICT),
        at(30, ErrorKind::ReservedNotZero)
    );
    assert_eq!(err(&pv(|v| v.push(0)), o), at(184, ErrorKind::TrailingData));
}

#[test]
fn reserved_option_bits_ignored_without_strict() {
    let v = pv(|v| v[17] = 2);
    assert!(decode_all(&v, Options::default(), 64, |_| {}).is_ok());
}

#[test]
fn record_rejects() {
    let o = Options::default();
    // An unknown mandatory record instead of STATIC_DATA_END.
    assert_eq!(
        err(&pv(|v| v[56] = 0x13), o),
        at(56, ErrorKind::UnknownMandatoryRecord(0x13))
    );
    // Length above REC_LENGTH_MAX.
    assert_eq!(
        err(
            &pv(|v| v[60..64].copy_from_slice(&(REC_LENGTH_MAX + 1).to_le_bytes())),
            o
        ),
        at(60, ErrorKind::RecordTooLong(REC_LENGTH_MAX + 1))
    );
    // STATIC_DATA_END with a body.
    assert_eq!(
        err(&pv(|v| v[60] = 8), o),
        at(60, ErrorKind::BadRecordLength(0x10, 8))
    );
    // X86_PV_INFO with width 8 and 3 levels.
    assert_eq!(
        err(&pv(|v| v[49] = 3), o),
        at(48, ErrorKind::BadPvInfo(8, 3))
    );
    // P2M range reversed; then a frame count that does not fit the range.
    assert_eq!(
        err(
            &pv(|v| {
                v[72] = 0xff;
                v[73] = 0x02
            }),
            o
        )
        .kind,
        ErrorKind::BadP2mRange(0x2ff, 0x1ff)
    );
    assert_eq!(
        err(&pv(|v| v[77] = 0x02), o),
        at(68, ErrorKind::BadRecordLength(3, 16))
    );
    // PAGE_DATA count zero, too short for its count, reserved type, wrong length.
    assert_eq!(
        err(&pv(|v| v[96] = 0), o),
        at(96, ErrorKind::PageDataCountZero)
    );
    assert_eq!(
        err(&pv(|v| v[96] = 3), o),
        at(92, ErrorKind::BadRecordLength(1, 24))
    );
    assert_eq!(
        err(&pv(|v| v[111] = 0x70), o),
        at(104, ErrorKind::BadPageType(7))
    );
    assert_eq!(
        err(&pv(|v| v[111] = 0x00), o),
        at(92, ErrorKind::BadRecordLength(1, 24))
    );
    // Reserved pfn bits only matter in strict mode.
    let r = pv(|v| v[110] = 0x10);
    assert!(decode_all(&r, o, 64, |_| {}).is_ok());
    assert_eq!(
        err(&r, Options::STRICT),
        at(104, ErrorKind::ReservedNotZero)
    );
    // TSC info of the wrong size.
    assert_eq!(
        err(&pv(|v| v[124] = 0x10), o),
        at(124, ErrorKind::BadRecordLength(8, 16))
    );
    // Non-zero padding: ignored, except in strict mode (at the byte).
    let p = pv(|v| v[174] = 1);
    assert!(decode_all(&p, o, 64, |_| {}).is_ok());
    assert_eq!(err(&p, Options::STRICT), at(174, ErrorKind::PaddingNotZero));
    // END with a body.
    assert_eq!(
        err(&pv(|v| v[180] = 8), o),
        at(180, ErrorKind::BadRecordLength(0, 8))
    );
}

/// Replaces the record type at `off`.
fn retype(v: &mut [u8], off: usize, t: u32) {
    v[off..off + 4].copy_from_slice(&t.to_le_bytes());
}

#[test]
fn optional_records_are_skipped() {
    // TSC info turned into an unknown optional record: skipped, reported.
    let v = pv(|v| retype(v, 120, 0x8000_0042));
    assert_eq!(
        err(&v, Options::STRICT),
        at(120, ErrorKind::UnknownOptionalRecord(0x8000_0042))
    );
    let ev = events(&v, Options::default(), 5).unwrap();
    assert!(ev
        .iter()
        .any(|e| e.contains("rtype: 2147483714, length: 24, offset: 120, skipped: true")));
    assert!(!ev.iter().any(|e| e.starts_with("TscInfo")));
    // The same in the libxl layer.
    let mut l = libxl_wrap(&PV_STREAM);
    let mut opt = [0u8; 16];
    opt[..4].copy_from_slice(&0x8000_0007u32.to_le_bytes());
    opt[4] = 3;
    opt[8..11].copy_from_slice(b"abc");
    let end = l.len() - 8;
    l.splice(end..end, opt);
    assert_eq!(
        err(&l, Options::STRICT),
        at(208, ErrorKind::UnknownOptionalRecord(0x8000_0007))
    );
    let ev = events(&l, Options::default(), 3).unwrap();
    assert!(ev
        .iter()
        .any(|e| e.contains("layer: Libxl, rtype: 2147483655, length: 3")
            && e.contains("skipped: true")));
}

#[test]
fn order_rules() {
    let o = Options::default();
    let ooo = |off, r| at(off, ErrorKind::OutOfOrder(r));
    // Swap STATIC_DATA_END and X86_PV_INFO: PV_INFO after the end of static data.
    let mut v = PV_STREAM.to_vec();
    v.copy_within(40..56, 48);
    v[40..48].copy_from_slice(&PV_STREAM[56..64]);
    assert_eq!(err(&v, o), ooo(48, OrderRule::StaticAfterEnd));
    // P2M before PV_INFO: PV_INFO turned into an optional record.
    assert_eq!(
        err(&pv(|v| retype(v, 40, 0x8000_0002)), o),
        ooo(64, OrderRule::PvInfoFirst)
    );
    // PAGE_DATA before P2M: P2M turned into an optional record.
    assert_eq!(
        err(&pv(|v| retype(v, 64, 0x8000_0003)), o),
        ooo(88, OrderRule::P2mBeforePages)
    );
    // vCPU before PAGE_DATA.
    assert_eq!(
        err(&pv(|v| retype(v, 88, 0x8000_0001)), o),
        ooo(152, OrderRule::PagesBeforeVcpus)
    );
    // v3 content before STATIC_DATA_END: SDE turned optional.
    assert_eq!(
        err(&pv(|v| retype(v, 56, 0x8000_0010)), o),
        ooo(64, OrderRule::StaticDataEndFirst)
    );
    // A second STATIC_DATA_END, in place of END.
    let mut d = PV_STREAM.to_vec();
    retype(&mut d, 176, 0x10);
    assert_eq!(err(&d, o), at(176, ErrorKind::Duplicate(0x10)));
    // HVM records in a PV stream.
    assert_eq!(
        err(&pv(|v| retype(v, 152, 0x09)), o),
        at(152, ErrorKind::WrongGuestType(9))
    );
    // PAGE_DATA after a vCPU record: END turned into PAGE_DATA start.
    let mut a = PV_STREAM[..176].to_vec();
    a.extend_from_slice(&PV_STREAM[88..120]);
    a.extend_from_slice(&PV_STREAM[176..]);
    assert_eq!(err(&a, o), ooo(176, OrderRule::PagesAfterVcpus));
    // ...but fine after a CHECKPOINT.
    let mut c = PV_STREAM[..176].to_vec();
    c.extend_from_slice(&[0x0e, 0, 0, 0, 0, 0, 0, 0]);
    c.extend_from_slice(&PV_STREAM[88..120]);
    c.extend_from_slice(&PV_STREAM[152..]);
    assert!(decode_all(&c, o, 9, |_| {}).is_ok());
    // Strict refuses TOOLSTACK.
    let t = pv(|v| retype(v, 120, 0x0b));
    assert!(decode_all(&t, o, 9, |_| {}).is_ok());
    assert_eq!(
        err(&t, Options::STRICT),
        at(120, ErrorKind::Deprecated(0x0b))
    );
}

#[test]
fn version_2_infers_static_data_end() {
    // A v2 stream: version 2 and STATIC_DATA_END removed.
    let mut v = PV_STREAM.to_vec();
    v[15] = 2;
    v.drain(56..64);
    let ev = events(&v, Options::STRICT, 16).unwrap();
    let i = ev
        .iter()
        .position(|e| e == "StaticDataEndInferred")
        .unwrap();
    assert!(
        ev[i + 1].starts_with("Record(RecordInfo { layer: Libxc, rtype: 3,"),
        "{}",
        ev[i + 1]
    );
    // STATIC_DATA_END itself is refused in v2, as verify-stream-v2 does.
    let mut w = PV_STREAM.to_vec();
    w[15] = 2;
    assert_eq!(
        err(&w, Options::default()),
        at(56, ErrorKind::NotInVersion2(0x10))
    );
}

/// `libxl header, LIBXC_CONTEXT, stream, libxl END`, written by hand.
fn libxl_wrap(libxc: &[u8]) -> Vec<u8> {
    let mut v = b"LibxlFmt".to_vec();
    v.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0]);
    v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(libxc);
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    v
}

#[test]
fn libxl_and_xl_layers() {
    let l = libxl_wrap(&PV_STREAM);
    let ev = events(&l, Options::STRICT, 11).unwrap();
    assert_eq!(ev[0], "Detected(Libxl)");
    assert_eq!(
        ev[1],
        "LibxlHeader(HeaderRepr { big_endian: false, legacy: false })"
    );
    assert!(ev[2].contains("layer: Libxl, rtype: 1, length: 0, offset: 16"));
    assert!(ev
        .iter()
        .any(|e| e.contains("layer: Libxc, rtype: 0, length: 0, offset: 200")));
    assert!(ev
        .iter()
        .any(|e| e.contains("layer: Libxl, rtype: 0, length: 0, offset: 208")));
    assert_eq!(ev.last().unwrap(), "End");

    // An xl save file around it, config "{}\0" (JSON, STREAMv2).
    let mut x = b"Xen saved domain, xl format\n \0 \r".to_vec();
    x.extend_from_slice(&[
        4, 3, 2, 1, 3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, b'{', b'}', 0,
    ]);
    x.extend_from_slice(&l);
    let ev = events(&x, Options::STRICT, 5).unwrap();
    assert_eq!(ev[0], "Detected(Xl)");
    assert!(ev[1].starts_with("XlHeader(HeaderRepr { mandatory_flags: 3"));
    assert_eq!(ev[2], "XlConfigLength(3)");
    assert_eq!(
        ev[3],
        format!("config[3 sum {}]", u32::from(b'{') + u32::from(b'}'))
    );
    assert_eq!(
        ev[4],
        "LibxlHeader(HeaderRepr { big_endian: false, legacy: false })"
    );

    // xl rejects: unknown mandatory flag, legacy stream, short config.
    let mut bad = x.clone();
    bad[36] = 7;
    assert_eq!(
        err(&bad, Options::default()),
        at(36, ErrorKind::UnknownXlMandatoryFlags(4))
    );
    let mut legacy = x.clone();
    legacy[36] = 1;
    assert_eq!(
        err(&legacy, Options::default()),
        at(36, ErrorKind::LegacyStream)
    );
    let mut short = x.clone();
    short[48] = 9;
    assert_eq!(
        err(&short, Options::default()),
        at(48, ErrorKind::XlConfigTruncated)
    );

    // libxl rejects: END before the libxc stream, a second LIBXC_CONTEXT,
    // CHECKPOINT_END outside a checkpoint.
    let mut e = b"LibxlFmt".to_vec();
    e.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0]);
    e.extend_from_slice(&[0; 8]);
    assert_eq!(
        err(&e, Options::default()),
        at(16, ErrorKind::OutOfOrder(OrderRule::LibxcContextMissing))
    );
    let mut twice = l.clone();
    twice.truncate(208);
    twice.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        err(&twice, Options::default()),
        at(208, ErrorKind::OutOfOrder(OrderRule::LibxcContextTwice))
    );
    let mut ce = l.clone();
    ce[208] = 4;
    assert_eq!(
        err(&ce, Options::default()),
        at(208, ErrorKind::OutOfOrder(OrderRule::CheckpointEnd))
    );
    let mut ver = l.clone();
    ver[11] = 3;
    assert_eq!(
        err(&ver, Options::default()),
        at(8, ErrorKind::UnsupportedLibxlVersion(3))
    );
}

#[test]
fn libxl_checkpoint_hands_back_to_libxc() {
    // libxl: LIBXC_CONTEXT, libxc up to the vCPU, CHECKPOINT, then libxl
    // CHECKPOINT_END, then libxc records again (no headers), END, libxl END.
    let mut v = b"LibxlFmt".to_vec();
    v.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0]);
    v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&PV_STREAM[..176]);
    v.extend_from_slice(&[0x0e, 0, 0, 0, 0, 0, 0, 0]); // libxc CHECKPOINT
    v.extend_from_slice(&[0x03, 0, 0, 0, 0x0b, 0, 0, 0]); // EMULATOR_CONTEXT, 11
    v.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 0, b'q', b'm', b'u', 0, 0, 0, 0, 0]);
    v.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 0, 0]); // CHECKPOINT_END
    v.extend_from_slice(&PV_STREAM[88..120]); // PAGE_DATA
    v.extend_from_slice(&PV_STREAM[176..]); // libxc END
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // libxl END
    let ev = events(&v, Options::STRICT, 6).unwrap();
    assert!(ev
        .iter()
        .any(|e| e == "Emulator(EmulatorHeaderRepr { id: QemuUpstream, index: 0 })"));
    assert_eq!(ev.iter().filter(|e| e.starts_with("PfnsDone")).count(), 2);
    assert_eq!(ev.last().unwrap(), "End");
}

/// A small x86 HVM stream, written out by hand.
#[rustfmt::skip]
pub(crate) static HVM_STREAM: [u8; 160] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x58, 0x45, 0x4e, 0x46, 0x00, 0x00, 0x00, 0x03,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // x86 HVM
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00,
    // 40: X86_CPUID_POLICY: one leaf (24 octets)
    0x11, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
    0x0d, 0x00, 0x00, 0x00, 0x47, 0x65, 0x6e, 0x75,
    0x6e, 0x74, 0x65, 0x6c, 0x69, 0x6e, 0x65, 0x49,
    // 72: X86_MSR_POLICY: one entry (16 octets)
    0x12, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0xce, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 96: STATIC_DATA_END
    0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 104: HVM_PARAMS, one entry
    0x0a, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xf0, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 136: HVM_CONTEXT, 3 octets + 5 pad
    0x09, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
    0xaa, 0xbb, 0xcc, 0x00, 0x00, 0x00, 0x00, 0x00,
    // 152: END
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn hvm_stream() {
    let mut v = HVM_STREAM.to_vec();
    let ev = events(&v, Options::STRICT, 7).unwrap();
    assert!(ev
        .iter()
        .any(|e| e == "HvmParam(HvmParam { index: 1, value: 1044480 })"));
    assert!(ev
        .iter()
        .any(|e| e == &format!("body[3 sum {}]", 0xaa + 0xbb + 0xcc)));
    // HVM_CONTEXT before HVM_PARAMS, as Xen's saver writes it: accepted,
    // except in strict mode.
    let mut swapped = v[..104].to_vec();
    swapped.extend_from_slice(&v[136..152]);
    swapped.extend_from_slice(&v[104..136]);
    swapped.extend_from_slice(&v[152..]);
    assert!(decode_all(&swapped, Options::default(), 7, |_| {}).is_ok());
    assert_eq!(
        err(&swapped, Options::STRICT),
        at(
            104,
            ErrorKind::OutOfOrder(OrderRule::HvmParamsBeforeContext)
        )
    );
    // HVM_PARAMS count that does not match the length.
    let mut c = v.clone();
    c[112] = 2;
    assert_eq!(
        err(&c, Options::default()),
        at(108, ErrorKind::BadRecordLength(0x0a, 24))
    );
    // A PV record in an HVM stream.
    retype(&mut v, 136, 0x07);
    assert_eq!(
        err(&v, Options::default()),
        at(136, ErrorKind::WrongGuestType(7))
    );
}

#[test]
fn page_contents_come_in_pieces() {
    // PAGE_DATA with two NOTAB pages, built from the literal PV stream.
    let mut v = PV_STREAM[..88].to_vec();
    let mut rec = Vec::new();
    rec.extend_from_slice(&[0x01, 0, 0, 0]);
    rec.extend_from_slice(&(8u32 + 16 + 8192).to_le_bytes());
    rec.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    rec.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x00]);
    rec.extend_from_slice(&[0x11, 0, 0, 0, 0, 0, 0, 0x90]); // L1TAB_PIN
    rec.extend((0..8192u32).map(|i| (i % 251) as u8));
    v.extend_from_slice(&rec);
    v.extend_from_slice(&PV_STREAM[120..]);
    let mut pieces = 0;
    let mut bytes = Vec::new();
    let mut summary = None;
    decode_all(&v, Options::STRICT, 1000, |e| match e {
        Event::PageData { page, offset, data } => {
            assert!(data.len() <= 1000);
            assert_eq!(bytes.len(), *page as usize * 4096 + *offset as usize);
            bytes.extend_from_slice(data);
            pieces += 1;
        }
        Event::PfnsDone(s) => summary = Some(*s),
        _ => {}
    })
    .unwrap();
    assert_eq!(bytes, rec[32..]);
    assert!(pieces >= 9);
    let s = summary.unwrap();
    assert_eq!(
        (s.count, s.data_pages, s.min_pfn, s.max_pfn),
        (2, 2, 0x10, 0x11)
    );
    assert_eq!(s.type_counts[0], 1);
    assert_eq!(s.type_counts[9], 1);
    assert_eq!(PageType::from_nibble(9).name(), "L1TAB_PIN");
}

/// A host that applied a page area itself skips it; the decoder goes on
/// to the end of the stream. Anywhere else, or for another count, the
/// skip is refused and nothing changes.
#[test]
fn a_page_area_can_be_skipped_whole() {
    let mut v = PV_STREAM[..88].to_vec();
    v.extend_from_slice(&[0x01, 0, 0, 0]);
    v.extend_from_slice(&(8u32 + 16 + 8192).to_le_bytes());
    v.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x00]);
    v.extend_from_slice(&[0x11, 0, 0, 0, 0, 0, 0, 0x00]);
    let prefix = v.len();
    v.extend((0..8192u32).map(|i| (i % 251) as u8));
    v.extend_from_slice(&PV_STREAM[120..]);
    let mut d = Decoder::new(Options::STRICT);
    let mut input = &v[..prefix];
    assert_eq!(d.page_data_left(), None);
    assert!(!d.skip_page_data(8192));
    loop {
        if d.current_record().is_none() {
            assert!(!d.skip_page_data(8192));
        }
        let step = d.push(input).unwrap();
        input = &input[step.consumed..];
        if step.event.is_none() && input.is_empty() {
            break;
        }
    }
    assert_eq!(d.page_data_left(), Some(8192));
    assert!(!d.skip_page_data(4096));
    assert_eq!(d.offset(), prefix as u64);
    assert!(d.skip_page_data(8192));
    assert_eq!(d.offset(), prefix as u64 + 8192);
    let mut rest = &v[prefix + 8192..];
    loop {
        let step = d.push(rest).unwrap();
        assert!(!matches!(step.event, Some(Event::PageData { .. })));
        rest = &rest[step.consumed..];
        if step.event.is_none() && rest.is_empty() {
            break;
        }
    }
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic sweep; the fuzz target does the real work.
    let mut x = 0x1234_5678u32;
    for n in 0..2000 {
        let mut v = PV_STREAM.to_vec();
        for _ in 0..(n % 5 + 1) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % v.len();
            v[i] = (x >> 8) as u8;
        }
        let _ = decode_all(&v, Options::STRICT, (x % 64) as usize + 1, |_| {});
        let _ = decode_all(&v, Options::default(), 4096, |_| {});
    }
}

#[test]
fn totals_and_read_stream() {
    struct Dribble<'a>(&'a [u8]);
    impl embedded_io::ErrorType for Dribble<'_> {
        type Error = core::convert::Infallible;
    }
    impl embedded_io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> core::result::Result<usize, Self::Error> {
            let n = buf.len().min(self.0.len()).min(5);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut t = Totals::default();
    let mut buf = [0u8; 16];
    read_stream(&mut Dribble(&PV_STREAM), &mut buf, Options::STRICT, |e| {
        t.observe(e)
    })
    .unwrap();
    assert_eq!(t.records, 7);
    assert_eq!(t.libxc_by_type[1], 1);
    assert_eq!(t.pfns_by_type[0xf], 1);
    assert_eq!(t.pfns_by_type[0xe], 1);
    assert_eq!(t.data_pages, 0);
    assert_eq!(t.vcpus, 1);
    assert_eq!(t.bytes, PV_STREAM.len() as u64);
    // A damaged stream: the events before the damage were seen.
    let mut seen = 0;
    let e = read_stream(
        &mut Dribble(&PV_STREAM[..100]),
        &mut buf,
        Options::STRICT,
        |_| seen += 1,
    )
    .unwrap_err();
    assert_eq!(e, ReadError::Stream(Error::new(100, ErrorKind::Truncated)));
    assert!(seen > 5);
}
