//! Writer tests: the writer reproduces the hand-written streams byte for
//! byte, every record type against a literal vector, order refusals, and
//! writer → reader round trips over random streams.

use super::*;
use crate::stream::libxl::{CheckpointState, EmulatorId};
use crate::stream::page_data::PageType;
use crate::stream::reader::test::{events, HVM_STREAM, PV_STREAM};
use crate::stream::reader::{decode_all, Event, Options};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

fn pv_domain() -> DomainHeaderRepr {
    DomainHeaderRepr {
        domain_type: DomainType::X86Pv,
        page_shift: 12,
        xen_major: 4,
        xen_minor: 17,
    }
}

fn hvm_domain() -> DomainHeaderRepr {
    DomainHeaderRepr {
        domain_type: DomainType::X86Hvm,
        ..pv_domain()
    }
}

fn xtab(pfn: u64) -> PfnEntry {
    PfnEntry {
        pfn,
        page_type: PageType::XTab,
    }
}

/// Writes what the literal PV stream holds.
fn write_pv(w: &mut StreamWriter<Vec<u8>>) {
    w.pv_info(PvInfoRepr::X86_64).unwrap();
    w.static_data_end().unwrap();
    w.p2m_frames(0, 0x1ff, &[0x2000]).unwrap();
    w.page_data(
        &[
            xtab(5),
            PfnEntry {
                pfn: 6,
                page_type: PageType::XAlloc,
            },
        ],
        &[],
    )
    .unwrap();
    w.tsc_info(TscInfoRepr {
        mode: 0,
        khz: 1_000_000,
        nsec: 0,
        incarnation: 1,
    })
    .unwrap();
    w.vcpu(
        RecordType::X86PvVcpuBasic,
        0,
        &[0x11, 0x22, 0x33, 0x44, 0x55],
    )
    .unwrap();
    w.end().unwrap();
}

#[test]
fn writes_the_literal_pv_stream() {
    let mut w = StreamWriter::new(Vec::new(), Framing::Libxc, pv_domain()).unwrap();
    write_pv(&mut w);
    assert_eq!(w.written(), PV_STREAM.len() as u64);
    let out = w.finish().unwrap();
    assert_eq!(out, PV_STREAM);
}

#[test]
fn writes_the_literal_hvm_stream() {
    let mut w = StreamWriter::new(Vec::new(), Framing::Libxc, hvm_domain()).unwrap();
    w.cpuid_policy(&HVM_STREAM[48..72]).unwrap();
    w.msr_policy(&HVM_STREAM[80..96]).unwrap();
    w.static_data_end().unwrap();
    w.hvm_params(&[HvmParam {
        index: 1,
        value: 0xff000,
    }])
    .unwrap();
    w.hvm_context(&[0xaa, 0xbb, 0xcc]).unwrap();
    w.end().unwrap();
    assert_eq!(w.finish().unwrap(), HVM_STREAM);
}

#[test]
fn writes_libxl_and_xl_framing() {
    let mut w = StreamWriter::new(Vec::new(), Framing::Libxl, pv_domain()).unwrap();
    write_pv(&mut w);
    let emu = EmulatorHeaderRepr {
        id: EmulatorId::QemuUpstream,
        index: 0,
    };
    w.emulator_xenstore_data(emu, b"k\0v\0").unwrap();
    w.emulator_context(emu, b"QEVM").unwrap();
    let out = w.finish().unwrap();
    #[rustfmt::skip]
    let mut want: Vec<u8> = vec![
        b'L', b'i', b'b', b'x', b'l', b'F', b'm', b't', 0, 0, 0, 2, 0, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 0, // LIBXC_CONTEXT
    ];
    want.extend_from_slice(&PV_STREAM);
    #[rustfmt::skip]
    want.extend_from_slice(&[
        2, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, // EMULATOR_XENSTORE_DATA
        b'k', 0, b'v', 0, 0, 0, 0, 0,
        3, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, // EMULATOR_CONTEXT
        b'Q', b'E', b'V', b'M', 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, // libxl END
    ]);
    assert_eq!(out, want);
    let ev = events(&out, Options::STRICT, 3).unwrap();
    assert!(ev
        .iter()
        .any(|e| e == "Emulator(EmulatorHeaderRepr { id: QemuUpstream, index: 0 })"));

    let mut x = StreamWriter::new_xl(Vec::new(), b"{}\0", pv_domain()).unwrap();
    write_pv(&mut x);
    assert_eq!(x.written(), 48 + 7 + 24 + 184);
    let xo = x.finish().unwrap();
    assert_eq!(&xo[..32], b"Xen saved domain, xl format\n \0 \r");
    assert_eq!(
        &xo[32..55],
        &[4, 3, 2, 1, 3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, b'{', b'}', 0]
    );
    assert_eq!(&xo[55..xo.len() - 8], &want[..want.len() - 56]);
    assert_eq!(&xo[xo.len() - 8..], &[0; 8]);
    assert!(decode_all(&xo, Options::STRICT, 5, |_| {}).is_ok());
}

/// Each remaining record type: its literal bytes, and what emit_record
/// makes of its body.
#[test]
fn every_record_type_literal() {
    let page: Vec<u8> = (0..4096u32).map(|i| (i / 16) as u8).collect();
    #[rustfmt::skip]
    let cases: Vec<(u32, Vec<u8>, Vec<u8>)> = vec![
        // END, VERIFY, CHECKPOINT, STATIC_DATA_END: empty.
        (0x00, vec![], vec![0x00, 0, 0, 0, 0, 0, 0, 0]),
        (0x0d, vec![], vec![0x0d, 0, 0, 0, 0, 0, 0, 0]),
        (0x0e, vec![], vec![0x0e, 0, 0, 0, 0, 0, 0, 0]),
        (0x10, vec![], vec![0x10, 0, 0, 0, 0, 0, 0, 0]),
        // X86_PV_VCPU_EXTENDED, vcpu 1, 4 octets.
        (0x05, vec![1, 0, 0, 0, 0, 0, 0, 0, 9, 8, 7, 6],
         vec![0x05, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 8, 7, 6, 0, 0, 0, 0]),
        // X86_PV_VCPU_XSAVE, vcpu 2, 16 octets.
        (0x06, [&[2u8, 0, 0, 0, 0, 0, 0, 0][..], &[0xa5; 16]].concat(),
         [&[0x06u8, 0, 0, 0, 24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0][..], &[0xa5; 16]].concat()),
        // X86_PV_VCPU_MSRS, vcpu 0, one xen_domctl_vcpu_msr_t.
        (0x0c, vec![0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0xc0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
         vec![0x0c, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
              0x80, 0, 0, 0xc0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        // TOOLSTACK, 1 octet.
        (0x0b, vec![0x42], vec![0x0b, 0, 0, 0, 1, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 0, 0]),
        // CHECKPOINT_DIRTY_PFN_LIST, two pfns.
        (0x0f, vec![5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0],
         vec![0x0f, 0, 0, 0, 16, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]),
        // SHARED_INFO, one page.
        (0x07, page.clone(), [&[0x07u8, 0, 0, 0, 0, 0x10, 0, 0][..], &page].concat()),
    ];
    for (t, body, want) in &cases {
        let mut out = vec![0xeeu8; want.len()];
        assert_eq!(
            emit_record(&mut out, *t, &[body]),
            Ok(want.len()),
            "type {t:#x}"
        );
        assert_eq!(&out, want, "type {t:#x}");
        let mut small = vec![0u8; want.len() - 1];
        assert_eq!(
            emit_record(&mut small, *t, &[body]).unwrap_err().kind,
            ErrorKind::BufferTooSmall
        );
    }
    // The same records through the StreamWriter, read back in a PV stream
    // (VERIFY and CHECKPOINT where the spec allows them).
    let mut w = StreamWriter::new(Vec::new(), Framing::Libxc, pv_domain()).unwrap();
    w.pv_info(PvInfoRepr::X86_64).unwrap();
    w.static_data_end().unwrap();
    w.p2m_frames(0, 0x1ff, &[0x2000]).unwrap();
    w.page_data(&[xtab(5)], &[]).unwrap();
    w.verify().unwrap();
    w.page_data(&[xtab(5)], &[]).unwrap();
    w.shared_info(&page).unwrap();
    w.vcpu(RecordType::X86PvVcpuExtended, 1, &[9, 8, 7, 6])
        .unwrap();
    w.vcpu(RecordType::X86PvVcpuXsave, 2, &[0xa5; 16]).unwrap();
    w.vcpu(RecordType::X86PvVcpuMsrs, 0, &cases[6].1[8..])
        .unwrap();
    w.checkpoint().unwrap();
    w.toolstack(&[0x42]).unwrap();
    w.checkpoint_dirty_pfn_list(&[5, 6]).unwrap();
    w.optional(0x8000_0020, b"x").unwrap();
    w.end().unwrap();
    let out = w.finish().unwrap();
    let mut rest = &out[88 + 24 + 8 + 24..];
    for idx in [9usize, 4, 5, 6, 2, 7, 8] {
        let want = &cases[idx].2;
        assert_eq!(&rest[..want.len()], &want[..], "case {idx}");
        rest = &rest[want.len()..];
    }
    let ev = events(&out, Options::default(), 13).unwrap();
    for want in [
        "Vcpu(VcpuHeaderRepr { vcpu_id: 1 })",
        "Vcpu(VcpuHeaderRepr { vcpu_id: 2 })",
        "DirtyPfn(6)",
        "End",
    ] {
        assert!(ev.iter().any(|e| e == want), "{want}");
    }
    assert!(ev
        .iter()
        .any(|e| e.contains("rtype: 2147483680, length: 1") && e.contains("skipped: true")));
    // Strict readers refuse TOOLSTACK.
    assert_eq!(
        decode_all(&out, Options::STRICT, 64, |_| {})
            .unwrap_err()
            .kind,
        ErrorKind::Deprecated(0x0b)
    );

    // libxl CHECKPOINT_END and CHECKPOINT_STATE, literal.
    let mut o = [0u8; 16];
    assert_eq!(emit_record(&mut o, 4, &[]), Ok(8));
    assert_eq!(o[..8], [4, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(emit_record(&mut o, 5, &[&2u32.to_le_bytes()]), Ok(16));
    assert_eq!(o, [5, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    // ...and read back inside a libxl stream: after libxc's CHECKPOINT.
    let mut l = b"LibxlFmt".to_vec();
    l.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    l.extend_from_slice(&PV_STREAM[..176]);
    l.extend_from_slice(&[0x0e, 0, 0, 0, 0, 0, 0, 0]);
    l.extend_from_slice(&o);
    l.extend_from_slice(&[0; 8]);
    let ev = events(&l, Options::STRICT, 4).unwrap();
    assert!(ev.iter().any(|e| e == "CheckpointState(SvmReady)"));
    assert_eq!(CheckpointState::from(2), CheckpointState::SvmReady);
}

#[test]
fn writer_refuses_out_of_order() {
    let state = |e: WriteError<core::convert::Infallible>| match e {
        WriteError::Stream(s) => s.kind,
        WriteError::Io(_) => unreachable!(),
    };
    let mut w = StreamWriter::new(Vec::new(), Framing::Libxc, pv_domain()).unwrap();
    assert_eq!(
        state(w.static_data_end().unwrap_err()),
        ErrorKind::WriterState(OrderRule::PvInfoFirst)
    );
    assert_eq!(
        state(w.page_data(&[xtab(1)], &[]).unwrap_err()),
        ErrorKind::WriterState(OrderRule::StaticDataEndFirst)
    );
    assert_eq!(
        state(w.hvm_context(&[1]).unwrap_err()),
        ErrorKind::WrongGuestType(9)
    );
    w.pv_info(PvInfoRepr::X86_64).unwrap();
    assert_eq!(
        state(w.pv_info(PvInfoRepr::X86_64).unwrap_err()),
        ErrorKind::Duplicate(2)
    );
    w.static_data_end().unwrap();
    assert_eq!(
        state(w.cpuid_policy(&[0; 24]).unwrap_err()),
        ErrorKind::WriterState(OrderRule::StaticAfterEnd)
    );
    assert_eq!(
        state(w.page_data(&[xtab(1)], &[]).unwrap_err()),
        ErrorKind::WriterState(OrderRule::P2mBeforePages)
    );
    assert_eq!(
        state(w.p2m_frames(0, 0x1ff, &[1, 2]).unwrap_err()),
        ErrorKind::BadRecordLength(3, 24)
    );
    w.p2m_frames(0, 0x3ff, &[1, 2]).unwrap();
    assert_eq!(
        state(w.vcpu(RecordType::X86PvVcpuBasic, 0, &[1]).unwrap_err()),
        ErrorKind::WriterState(OrderRule::PagesBeforeVcpus)
    );
    let notab = PfnEntry {
        pfn: 1,
        page_type: PageType::NoTab,
    };
    assert_eq!(
        state(w.page_data(&[notab], &[]).unwrap_err()),
        ErrorKind::BadRecordLength(1, 16 + 4096)
    );
    assert_eq!(
        state(w.page_data(&[], &[]).unwrap_err()),
        ErrorKind::PageDataCountZero
    );
    let page = [0u8; 4096];
    w.page_data(&[notab], &[&page]).unwrap();
    w.vcpu(RecordType::X86PvVcpuBasic, 0, &[1]).unwrap();
    assert_eq!(
        state(w.page_data(&[notab], &[&page]).unwrap_err()),
        ErrorKind::WriterState(OrderRule::PagesAfterVcpus)
    );
    assert_eq!(
        state(
            w.emulator_context(
                EmulatorHeaderRepr {
                    id: EmulatorId::QemuUpstream,
                    index: 0
                },
                &[]
            )
            .unwrap_err()
        ),
        ErrorKind::WrongGuestType(0)
    );
    let before = w.written();
    assert_eq!(
        state(w.vcpu(RecordType::X86PvVcpuXsave, 0, &[1]).unwrap_err()),
        ErrorKind::BadRecordLength(6, 9)
    );
    assert_eq!(w.written(), before, "a refused call writes nothing");
    w.end().unwrap();
    assert_eq!(
        state(w.end().unwrap_err()),
        ErrorKind::WriterState(OrderRule::AfterEnd)
    );
    let out = w.finish().unwrap();
    assert!(decode_all(&out, Options::STRICT, 4096, |_| {}).is_ok());

    let mut h = StreamWriter::new(Vec::new(), Framing::Libxl, hvm_domain()).unwrap();
    h.static_data_end().unwrap();
    assert_eq!(
        state(h.hvm_context(&[1]).unwrap_err()),
        ErrorKind::WriterState(OrderRule::HvmParamsBeforeContext)
    );
    assert_eq!(
        state(h.shared_info(&page).unwrap_err()),
        ErrorKind::WrongGuestType(7)
    );
    assert!(h
        .emulator_context(
            EmulatorHeaderRepr {
                id: EmulatorId::QemuUpstream,
                index: 0
            },
            &[]
        )
        .is_err());
    assert!(matches!(
        StreamWriter::new(
            Vec::new(),
            Framing::Libxc,
            DomainHeaderRepr {
                page_shift: 16,
                ..pv_domain()
            }
        ),
        Err(WriteError::Stream(Error {
            kind: ErrorKind::UnsupportedPageShift(16),
            ..
        }))
    ));
}

#[test]
fn record_length_max() {
    let big = vec![0u8; REC_LENGTH_MAX as usize + 1];
    let mut sink: Vec<u8> = Vec::new();
    assert_eq!(
        write_record(&mut sink, 9, &[&big]).unwrap_err(),
        WriteError::Stream(Error::new(0, ErrorKind::RecordTooLong(REC_LENGTH_MAX + 1)))
    );
    assert!(sink.is_empty());
}

/// A random stream: guest type, framing, page batches, vCPU contexts.
#[derive(Debug, Clone)]
struct Plan {
    pv: bool,
    framing: u8,
    batches: Vec<Vec<(u64, u8)>>,
    vcpus: Vec<(u32, usize)>,
    checkpoints: u8,
    optional: Vec<u8>,
    seed: u8,
}

fn plan() -> impl Strategy<Value = Plan> {
    let nibble = prop_oneof![Just(0u8), 1u8..=4, 9u8..=12, 13u8..=15];
    let batch = prop::collection::vec((0u64..(1 << 52), nibble), 1..6);
    (
        any::<bool>(),
        0u8..3,
        prop::collection::vec(batch, 0..4),
        prop::collection::vec((0u32..64, 1usize..40), 0..4),
        0u8..3,
        prop::collection::vec(any::<u8>(), 0..20),
        any::<u8>(),
    )
        .prop_map(
            |(pv, framing, batches, vcpus, checkpoints, optional, seed)| Plan {
                pv,
                framing,
                batches,
                vcpus,
                checkpoints,
                optional,
                seed,
            },
        )
}

/// What the reader should see: pfn words and a page checksum per batch,
/// vCPU ids and context lengths.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    pfns: Vec<u64>,
    page_sum: u64,
    page_bytes: u64,
    vcpus: Vec<(u32, usize)>,
    params: Vec<u64>,
    skipped: usize,
    ends: usize,
}

fn write_plan(p: &Plan) -> (Vec<u8>, Seen) {
    let framing = [Framing::Libxc, Framing::Libxl, Framing::Xl][p.framing as usize];
    let dom = if p.pv { pv_domain() } else { hvm_domain() };
    let mut w = if framing == Framing::Xl {
        StreamWriter::new_xl(Vec::new(), b"{\"c_info\":{}}\0", dom).unwrap()
    } else {
        StreamWriter::new(Vec::new(), framing, dom).unwrap()
    };
    let mut seen = Seen::default();
    if p.pv {
        w.pv_info(PvInfoRepr::X86_64).unwrap();
    }
    w.cpuid_policy(&[p.seed; 48]).unwrap();
    w.msr_policy(&[p.seed; 16]).unwrap();
    if !p.optional.is_empty() {
        w.optional(0x8000_1000, &p.optional).unwrap();
        seen.skipped += 1;
    }
    w.static_data_end().unwrap();
    if p.pv {
        w.p2m_frames(0, 511, &[7]).unwrap();
    }
    for round in 0..=p.checkpoints {
        let mut page = [0u8; 4096];
        for (bi, batch) in p.batches.iter().enumerate() {
            let pfns: Vec<PfnEntry> = batch
                .iter()
                .map(|&(pfn, n)| PfnEntry {
                    pfn,
                    page_type: PageType::from_nibble(n),
                })
                .collect();
            let mut pages: Vec<Vec<u8>> = Vec::new();
            for (i, e) in pfns.iter().enumerate() {
                seen.pfns.push(e.to_word());
                if e.page_type.has_data() {
                    page.fill((p.seed as usize + bi + i + round as usize) as u8);
                    page[0] = i as u8;
                    seen.page_sum += page.iter().map(|&b| u64::from(b)).sum::<u64>();
                    seen.page_bytes += 4096;
                    pages.push(page.to_vec());
                }
            }
            let refs: Vec<&[u8]> = pages.iter().map(|v| v.as_slice()).collect();
            w.page_data(&pfns, &refs).unwrap();
        }
        w.tsc_info(TscInfoRepr::default()).unwrap();
        if p.pv {
            w.shared_info(&[p.seed; 4096]).unwrap();
            if !p.batches.is_empty() {
                for &(id, len) in &p.vcpus {
                    w.vcpu(RecordType::X86PvVcpuBasic, id, &vec![p.seed; len])
                        .unwrap();
                    seen.vcpus.push((id, len));
                }
            }
        } else {
            let params: Vec<HvmParam> = p
                .vcpus
                .iter()
                .map(|&(i, l)| HvmParam {
                    index: u64::from(i),
                    value: l as u64,
                })
                .collect();
            w.hvm_params(&params).unwrap();
            seen.params.extend(params.iter().map(|x| x.index));
            w.hvm_context(&[p.seed; 100]).unwrap();
        }
        if round < p.checkpoints {
            w.checkpoint().unwrap();
        }
    }
    w.end().unwrap();
    seen.ends = 1;
    (w.finish().unwrap(), seen)
}

fn read_back(bytes: &[u8], chunk: usize, opts: Options) -> Seen {
    let mut s = Seen::default();
    let mut in_vcpu = false;
    decode_all(bytes, opts, chunk, |e| match e {
        Event::Pfn { entry, .. } => s.pfns.push(entry.to_word()),
        Event::PageData { data, .. } => {
            s.page_sum += data.iter().map(|&b| u64::from(b)).sum::<u64>();
            s.page_bytes += data.len() as u64;
        }
        Event::Vcpu(v) => {
            s.vcpus.push((v.vcpu_id, 0));
            in_vcpu = true;
        }
        Event::Body { data, .. } if in_vcpu => {
            if let Some(last) = s.vcpus.last_mut() {
                last.1 += data.len();
            }
        }
        Event::RecordEnd(_) => in_vcpu = false,
        Event::HvmParam(p) => s.params.push(p.index),
        Event::Record(r) if r.skipped => s.skipped += 1,
        Event::End => s.ends += 1,
        _ => {}
    })
    .unwrap();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(p in plan(), chunk in 1usize..5000) {
        let (bytes, want) = write_plan(&p);
        let got = read_back(&bytes, chunk, Options::default());
        prop_assert_eq!(&got, &want);
        // Without optional records the stream also passes the strict checks.
        if p.optional.is_empty() {
            prop_assert_eq!(read_back(&bytes, chunk, Options::STRICT), want);
        } else {
            let e = decode_all(&bytes, Options::STRICT, chunk, |_| {}).unwrap_err();
            prop_assert_eq!(e.kind, ErrorKind::UnknownOptionalRecord(0x8000_1000));
        }
    }

    #[test]
    fn truncated_round_trip_is_an_error(p in plan(), cut in any::<prop::sample::Index>()) {
        let (bytes, _) = write_plan(&p);
        let cut = cut.index(bytes.len());
        let e = decode_all(&bytes[..cut], Options::default(), 777, |_| {}).unwrap_err();
        prop_assert_eq!(e, Error::new(cut as u64, ErrorKind::Truncated));
    }
}
