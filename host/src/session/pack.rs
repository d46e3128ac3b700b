//! Image chunks on the wire when both ends agreed on
//! [`Features::COMPRESS`](relocd_core::protocol::Features::COMPRESS) or
//! [`Features::ZERO_PAGES`](relocd_core::protocol::Features::ZERO_PAGES):
//! each chunk's payload is one tag octet, then
//!
//! | tag | rest | needs |
//! | --- | --- | --- |
//! | 0 | the chunk as it is | either |
//! | 1 | `u32` LE length of the chunk, then the chunk as an LZ4 block | COMPRESS |
//! | 2 | the chunk with its zero pages elided (below) | ZERO_PAGES |
//! | 3 | `u32` LE length of a tag-2 body, then that body as an LZ4 block | both |
//!
//! A tag-2 body is: `u32` LE length `p` of the chunk's prefix (the bytes
//! before its pages: the `PAGE_DATA` record's headers and pfn words), `u32`
//! LE number `n` of 4 KiB pages after it, a bitmap of `ceil(n / 8)` bytes
//! (bit `i % 8` of byte `i / 8` set: page `i` is all zeros; bits beyond
//! `n` clear), the `p` prefix bytes, then the pages that are not zeros, in
//! order. A chunk of pages sent uncompressed is tag 2 even with no zero
//! page: the receiver learns from the header where the pages begin and
//! reads them straight into the guest. It writes the zero pages itself
//! (or has the sink clear them), and never relies on memory the
//! hypervisor handed it being scrubbed.
//!
//! The sender compresses a chunk and keeps the result only when it saves
//! at least an eighth (a guest's free memory is mostly zero pages, its
//! working set often not compressible at all). The receiver bounds the
//! unpacked length by [`MAX_UNPACKED`] before it takes any memory, and
//! refuses a block that does not unpack to exactly the length announced,
//! a tag the session did not agree on, and a tag-2 body whose sizes do
//! not add up. The migration stream inside is Xen's libxc stream either
//! way: only the link sees the packing.

use relocd_core::guest::{is_zero_run, PAGE_SIZE};

/// Tag of a chunk sent as it is.
const RAW: u8 = 0;
/// Tag of an LZ4 block.
const LZ4: u8 = 1;
/// Tag of a chunk with its zero pages elided.
const ZERO: u8 = 2;
/// Tag of an LZ4 block of a chunk with its zero pages elided.
const ZERO_LZ4: u8 = 3;
/// Bytes of a tag-2 body before its bitmap: prefix length, page count.
const ZERO_HEADER_LEN: usize = 8;
/// The longest chunk a packed one may unpack to: what the protocol allows
/// an image chunk (4 MiB + 64 KiB).
pub const MAX_UNPACKED: usize = (4 << 20) + (64 << 10);

/// Why a packed chunk was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    /// No tag, an unknown tag, or a header cut short.
    #[error("packed image chunk: bad header")]
    Header,
    /// The announced length is above [`MAX_UNPACKED`].
    #[error("packed image chunk: unpacks to {0} bytes, more than allowed")]
    TooLong(u32),
    /// The LZ4 block is damaged or unpacks to another length.
    #[error("packed image chunk: damaged LZ4 block")]
    Damaged,
    /// A zero-elided chunk whose bitmap and bytes do not add up.
    #[error("packed image chunk: the zero-page bitmap does not match the pages sent")]
    Zeros,
}

/// The forms a session agreed on: which tags a packed chunk may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Forms {
    /// LZ4 blocks (`COMPRESS`).
    pub lz4: bool,
    /// Zero pages elided (`ZERO_PAGES`).
    pub zero: bool,
}

impl Forms {
    /// Whether chunks carry a tag octet at all.
    pub fn tagged(self) -> bool {
        self.lz4 || self.zero
    }
}

/// The tag octet of a chunk sent as it is.
pub const RAW_TAG: [u8; 1] = [RAW];

/// The tag octet of a zero-elided chunk sent uncompressed.
pub const ZERO_TAG: [u8; 1] = [ZERO];

/// Whether a page reads as all zeros. Looks at the first word first, so
/// a page with data is told at once; an OR over the rest otherwise, which
/// the compiler vectorises.
pub fn is_zero_page(page: &[u8]) -> bool {
    match page.get(..8) {
        Some(head) if head.iter().any(|&b| b != 0) => false,
        _ => page.iter().fold(0, |acc, &b| acc | b) == 0,
    }
}

/// The header of a tag-2 body (without the tag) for a chunk of
/// `prefix_len` bytes followed by the pages of `runs` (runs of whole
/// pages), into `out` (cleared first): lengths and the bitmap of zero
/// pages. Returns how many pages are zeros, or `None` when the lengths do
/// not fit the header (send the chunk as it is).
pub fn zero_header(prefix_len: usize, runs: &[&[u8]], out: &mut Vec<u8>) -> Option<usize> {
    out.clear();
    let n: usize = runs.iter().map(|r| r.len() / PAGE_SIZE).sum();
    let (Ok(p32), Ok(n32)) = (u32::try_from(prefix_len), u32::try_from(n)) else {
        return None;
    };
    out.extend_from_slice(&p32.to_le_bytes());
    out.extend_from_slice(&n32.to_le_bytes());
    out.resize(ZERO_HEADER_LEN + n.div_ceil(8), 0);
    let mut zeros = 0;
    let mut i = 0;
    for run in runs {
        // Zeros lent from the shared block are known without a read.
        let known = is_zero_run(run);
        for page in run.chunks_exact(PAGE_SIZE) {
            if known || is_zero_page(page) {
                out[ZERO_HEADER_LEN + i / 8] |= 1 << (i % 8);
                zeros += 1;
            }
            i += 1;
        }
    }
    Some(zeros)
}

/// The stretches of `runs` whose pages are not zeros by the bitmap of a
/// [`zero_header`], appended to `parts` in order: what follows the header
/// and the prefix on the wire, sent from where the pages are.
pub fn nonzero_runs<'a>(header: &[u8], runs: &[&'a [u8]], parts: &mut Vec<&'a [u8]>) {
    let bitmap = header.get(ZERO_HEADER_LEN..).unwrap_or_default();
    let zero = |i: usize| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
    // Page index of the first page of the run at hand.
    let mut base = 0;
    for run in runs {
        let n = run.len() / PAGE_SIZE;
        let mut i = 0;
        while i < n {
            if zero(base + i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && !zero(base + i) {
                i += 1;
            }
            parts.push(&run[start * PAGE_SIZE..i * PAGE_SIZE]);
        }
        base += n;
    }
}

/// Room a sender reuses from chunk to chunk: an LZ4 block, the gathered
/// input it is made from, a zero-page bitmap.
#[derive(Debug, Default)]
pub struct PackBufs {
    packed: Vec<u8>,
    scratch: Vec<u8>,
    zero_header: Vec<u8>,
}

/// Packs one image chunk, `head` followed by the pages of `runs` (runs of
/// whole pages, the end of a `PAGE_DATA` record), as a session that agreed
/// on `forms` sends it, and calls `emit` with the parts to send, in order,
/// and their length. Pages stay where they are unless LZ4 gathers them;
/// with `zero` the zero ones stay behind, named by a bitmap. Uncompressed,
/// a chunk of pages goes zero-elided (tag 2) even when none is zeros: its
/// header tells the receiver where the pages begin, so it can read them
/// straight into the guest. Returns what `emit` returned and how many
/// pages travel as zero markers.
pub fn pack_chunk<R>(
    forms: Forms,
    head: &[&[u8]],
    runs: &[&[u8]],
    bufs: &mut PackBufs,
    emit: impl FnOnce(&[&[u8]], usize) -> R,
) -> (R, usize) {
    let PackBufs {
        packed,
        scratch,
        zero_header: zh,
    } = bufs;
    let head_len: usize = head.iter().map(|p| p.len()).sum();
    let zeros = match forms.zero && !runs.is_empty() {
        true => zero_header(head_len, runs, zh),
        false => None,
    };
    // LZ4 gains nothing from an empty bitmap.
    let elide = zeros.is_some_and(|z| z > 0 || !forms.lz4);
    let zeros = zeros.filter(|_| elide).unwrap_or(0);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(head.len() + runs.len() + 8);
    let r = if elide {
        if !forms.lz4 {
            parts.push(&ZERO_TAG);
        }
        parts.push(zh);
        parts.extend_from_slice(head);
        nonzero_runs(zh, runs, &mut parts);
        if forms.lz4 {
            pack_zero(&parts, scratch, packed);
            emit(&[packed], packed.len())
        } else {
            let len = parts.iter().map(|p| p.len()).sum();
            emit(&parts, len)
        }
    } else {
        if forms.tagged() && !forms.lz4 {
            parts.push(&RAW_TAG);
        }
        parts.extend_from_slice(head);
        parts.extend_from_slice(runs);
        if forms.lz4 {
            pack(&parts, scratch, packed);
            emit(&[packed], packed.len())
        } else {
            let len = parts.iter().map(|p| p.len()).sum();
            emit(&parts, len)
        }
    };
    (r, zeros)
}

/// Packs the concatenation of `parts` into `out` (cleared first).
pub fn pack(parts: &[&[u8]], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    pack_as(parts, RAW, LZ4, scratch, out);
}

/// Packs the concatenation of `parts`, a tag-2 body, into `out` (cleared
/// first): as an LZ4 block (tag 3) when that saves enough, else as it is
/// (tag 2).
pub fn pack_zero(parts: &[&[u8]], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    pack_as(parts, ZERO, ZERO_LZ4, scratch, out);
}

fn pack_as(parts: &[&[u8]], raw: u8, lz4: u8, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    for p in parts {
        scratch.extend_from_slice(p);
    }
    out.clear();
    let worth = scratch.len() >= 512 && u32::try_from(scratch.len()).is_ok();
    if worth {
        out.push(lz4);
        out.extend_from_slice(&(scratch.len() as u32).to_le_bytes());
        let bound = lz4_flex::block::get_maximum_output_size(scratch.len());
        let at = out.len();
        out.resize(at + bound, 0);
        match lz4_flex::block::compress_into(scratch, &mut out[at..]) {
            Ok(n) if n + 5 <= scratch.len() - scratch.len() / 8 => {
                out.truncate(at + n);
                return;
            }
            _ => {}
        }
        out.clear();
    }
    out.push(raw);
    out.extend_from_slice(scratch);
}

/// Unpacks a chunk of a session that agreed on `forms`: the chunk itself,
/// borrowed from `packed` or rebuilt in `buf` (`scratch` holds an LZ4
/// block's tag-2 body on the way).
pub fn unpack<'a>(
    packed: &'a [u8],
    forms: Forms,
    buf: &'a mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<&'a [u8], UnpackError> {
    let (&tag, rest) = packed.split_first().ok_or(UnpackError::Header)?;
    match tag {
        RAW => Ok(rest),
        LZ4 if forms.lz4 => {
            unlz4(rest, MAX_UNPACKED, buf)?;
            Ok(&buf[..])
        }
        ZERO if forms.zero => {
            let (e, data) = read_zeros(rest)?;
            e.rebuild(data, buf);
            Ok(&buf[..])
        }
        ZERO_LZ4 if forms.lz4 && forms.zero => {
            unlz4(rest, MAX_ZERO_BODY, scratch)?;
            let (e, data) = read_zeros(scratch)?;
            e.rebuild(data, buf);
            Ok(&buf[..])
        }
        _ => Err(UnpackError::Header),
    }
}

/// The longest tag-2 body: a whole chunk with no page elided, its header
/// and a bitmap of every page it could hold.
const MAX_ZERO_BODY: usize =
    MAX_UNPACKED + ZERO_HEADER_LEN + (MAX_UNPACKED / PAGE_SIZE).div_ceil(8);

/// Unpacks an LZ4 block with its `u32` length into `buf`, at most `max`
/// bytes.
fn unlz4(rest: &[u8], max: usize, buf: &mut Vec<u8>) -> Result<(), UnpackError> {
    let len = rest.get(..4).ok_or(UnpackError::Header)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
    if len as usize > max {
        return Err(UnpackError::TooLong(len));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    let n = lz4_flex::block::decompress_into(&rest[4..], buf).map_err(|_| UnpackError::Damaged)?;
    if n != len as usize {
        return Err(UnpackError::Damaged);
    }
    Ok(())
}

/// A zero-elided chunk without its pages: `prefix`, then `pages` whole
/// pages of which those set in `bitmap` (bit `i % 8` of byte `i / 8`)
/// are zeros; the others travel after it, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elided<'a> {
    /// The bytes before the pages (record headers, pfn words).
    pub prefix: &'a [u8],
    /// Which pages are zeros.
    pub bitmap: &'a [u8],
    /// How many pages the chunk holds.
    pub pages: usize,
}

impl Elided<'_> {
    /// Pages that are not zeros.
    pub fn data_pages(&self) -> usize {
        let zeros: usize = self.bitmap.iter().map(|b| b.count_ones() as usize).sum();
        self.pages.saturating_sub(zeros)
    }

    /// The chunk as it was sent, with `data` (the pages that are not
    /// zeros), rebuilt into `out` (cleared first).
    pub fn rebuild(&self, data: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.prefix.len() + self.pages * PAGE_SIZE);
        out.extend_from_slice(self.prefix);
        let mut data = data.chunks_exact(PAGE_SIZE);
        for i in 0..self.pages {
            if self
                .bitmap
                .get(i / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
            {
                out.resize(out.len() + PAGE_SIZE, 0);
            } else {
                out.extend_from_slice(data.next().unwrap_or_default());
            }
        }
    }
}

/// Whether a chunk's payload, `tag`, is one a receiver can take apart
/// as it reads: zero-elided and uncompressed.
pub fn is_elided(tag: u8, forms: Forms) -> bool {
    tag == ZERO && forms.zero
}

/// Bytes of a tag-2 body's header (before its bitmap).
pub const ELIDED_HEADER_LEN: usize = ZERO_HEADER_LEN;

/// The length of a tag-2 body's head (header, bitmap, prefix: all that
/// comes before its pages) from the body's first [`ELIDED_HEADER_LEN`]
/// bytes; `None` when they are cut short or name more than a chunk may
/// hold.
pub fn elided_head_len(body: &[u8]) -> Option<usize> {
    let (prefix_len, n) = zero_lengths(body).ok()?;
    Some(ZERO_HEADER_LEN + n.div_ceil(8) + prefix_len)
}

/// A tag-2 body's prefix length and page count, bounded by
/// [`MAX_UNPACKED`].
fn zero_lengths(body: &[u8]) -> Result<(usize, usize), UnpackError> {
    let word = |at: usize| {
        body.get(at..at + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
            .ok_or(UnpackError::Header)
    };
    let (prefix_len, n) = (word(0)?, word(4)?);
    let total = (n as u64) * PAGE_SIZE as u64 + prefix_len as u64;
    if total > MAX_UNPACKED as u64 {
        return Err(UnpackError::TooLong(
            u32::try_from(total).unwrap_or(u32::MAX),
        ));
    }
    Ok((prefix_len, n))
}

/// Reads the head of a tag-2 body of `body_len` bytes from its start,
/// `body` (at least [`elided_head_len`] bytes; more are ignored): checks
/// its lengths and bitmap against the body's length. Returns the chunk
/// without its pages and the length of its head (the pages follow).
pub fn read_elided_head(body: &[u8], body_len: usize) -> Result<(Elided<'_>, usize), UnpackError> {
    let (prefix_len, n) = zero_lengths(body)?;
    let bm_len = n.div_ceil(8);
    let bitmap = body
        .get(ZERO_HEADER_LEN..ZERO_HEADER_LEN + bm_len)
        .ok_or(UnpackError::Header)?;
    // Bits beyond the last page must be clear.
    if n % 8 != 0 && bitmap.last().is_some_and(|&b| b >> (n % 8) != 0) {
        return Err(UnpackError::Zeros);
    }
    let head_len = ZERO_HEADER_LEN + bm_len + prefix_len;
    let prefix = body
        .get(ZERO_HEADER_LEN + bm_len..head_len)
        .ok_or(UnpackError::Header)?;
    let e = Elided {
        prefix,
        bitmap,
        pages: n,
    };
    if body_len.checked_sub(head_len) != Some(e.data_pages() * PAGE_SIZE) {
        return Err(UnpackError::Zeros);
    }
    Ok((e, head_len))
}

/// Reads a tag-2 body: checks its lengths and bitmap against what it
/// carries, the rebuilt length against [`MAX_UNPACKED`]. Returns the chunk
/// without its pages, and the pages that are not zeros.
fn read_zeros(body: &[u8]) -> Result<(Elided<'_>, &[u8]), UnpackError> {
    let (e, head_len) = read_elided_head(body, body.len())?;
    Ok((e, &body[head_len..]))
}

/// A chunk as [`unpack_elided`] hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpacked<'a> {
    /// The chunk itself.
    Whole(&'a [u8]),
    /// A chunk whose zero pages travelled as markers, not rebuilt, and
    /// its pages that are not zeros: the receiver applies them as it can
    /// (the libxc decoder lets the sink clear them itself).
    Elided(Elided<'a>, &'a [u8]),
}

/// [`unpack`], but a zero-elided chunk is handed over as it is read, not
/// rebuilt with its zero pages written out.
pub fn unpack_elided<'a>(
    packed: &'a [u8],
    forms: Forms,
    buf: &'a mut Vec<u8>,
    scratch: &'a mut Vec<u8>,
) -> Result<Unpacked<'a>, UnpackError> {
    match packed.first() {
        Some(&ZERO) if forms.zero => {
            let (e, data) = read_zeros(&packed[1..])?;
            Ok(Unpacked::Elided(e, data))
        }
        Some(&ZERO_LZ4) if forms.lz4 && forms.zero => {
            unlz4(&packed[1..], MAX_ZERO_BODY, scratch)?;
            let (e, data) = read_zeros(scratch)?;
            Ok(Unpacked::Elided(e, data))
        }
        _ => unpack(packed, forms, buf, &mut Vec::new()).map(Unpacked::Whole),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LZ4_ONLY: Forms = Forms {
        lz4: true,
        zero: false,
    };
    const BOTH: Forms = Forms {
        lz4: true,
        zero: true,
    };
    const ZERO_ONLY: Forms = Forms {
        lz4: false,
        zero: true,
    };

    fn round_trip(parts: &[&[u8]]) -> Vec<u8> {
        let (mut s, mut p, mut b) = (Vec::new(), Vec::new(), Vec::new());
        pack(parts, &mut s, &mut p);
        let whole: Vec<u8> = parts.concat();
        assert_eq!(unpack(&p, LZ4_ONLY, &mut b, &mut s).unwrap(), &whole[..]);
        p
    }

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A chunk of a prefix and `pages.len()` pages, page `i` zeros when
    /// `pages[i]`; sent zero-elided (as the source does) and rebuilt.
    fn zero_round_trip(zeros: &[bool], forms: Forms) -> (Vec<u8>, usize) {
        // Record headers and ascending pfn words, as the source sends.
        let prefix: Vec<u8> = (0..16 + 8 * zeros.len()).map(|i| (i / 8) as u8).collect();
        let mut pages = Vec::new();
        for (i, &z) in zeros.iter().enumerate() {
            if z {
                pages.extend_from_slice(&[0u8; PAGE_SIZE]);
            } else {
                pages.extend_from_slice(&noise(i as u64 + 10, PAGE_SIZE));
            }
        }
        // The pages as a guest lends them: runs of one, two, then the rest.
        let mut runs: Vec<&[u8]> = Vec::new();
        let mut rest = &pages[..];
        for k in [1, 2] {
            if rest.len() > k * PAGE_SIZE {
                let (run, after) = rest.split_at(k * PAGE_SIZE);
                runs.push(run);
                rest = after;
            }
        }
        runs.push(rest);
        let mut hdr = Vec::new();
        let n = zero_header(prefix.len(), &runs, &mut hdr).unwrap();
        assert_eq!(n, zeros.iter().filter(|&&z| z).count());
        let mut parts: Vec<&[u8]> = vec![&hdr, &prefix];
        nonzero_runs(&hdr, &runs, &mut parts);
        // No stretch crosses a run's end, and none holds a zero page.
        assert!(parts[2..].iter().all(|p| runs.iter().any(|r| {
            let (r0, p0) = (r.as_ptr() as usize, p.as_ptr() as usize);
            p0 >= r0 && p0 + p.len() <= r0 + r.len()
        })));
        let mut wire = Vec::new();
        if forms.lz4 {
            pack_zero(&parts, &mut Vec::new(), &mut wire);
        } else {
            wire.push(ZERO);
            for p in &parts {
                wire.extend_from_slice(p);
            }
        }
        let (mut b, mut s) = (vec![0xeeu8; 7], Vec::new());
        let whole = [&prefix[..], &pages[..]].concat();
        assert_eq!(unpack(&wire, forms, &mut b, &mut s).unwrap(), &whole[..]);
        // Read without rebuilding: the prefix, the bitmap, the pages that
        // are not zeros, borrowed from the wire (or the LZ4 block).
        let (mut b2, mut s2) = (Vec::new(), Vec::new());
        match unpack_elided(&wire, forms, &mut b2, &mut s2).unwrap() {
            Unpacked::Elided(e, data) => {
                assert_eq!(e.prefix, &prefix[..]);
                assert_eq!(e.pages, zeros.len());
                assert_eq!(data.len(), (zeros.len() - n) * PAGE_SIZE);
                assert_eq!(e.data_pages(), zeros.len() - n);
                let mut out = Vec::new();
                e.rebuild(data, &mut out);
                assert_eq!(out, whole);
            }
            Unpacked::Whole(c) => assert_eq!(c, &whole[..]),
        }
        (wire, n)
    }

    #[test]
    fn zeros_lent_from_the_shared_block_are_marked_as_zeros() {
        use relocd_core::guest::ZERO_RUN;
        let data = vec![7u8; PAGE_SIZE];
        let zeros_elsewhere = vec![0u8; PAGE_SIZE];
        let runs: [&[u8]; 3] = [&ZERO_RUN[..2 * PAGE_SIZE], &data, &zeros_elsewhere];
        let mut hdr = Vec::new();
        assert_eq!(zero_header(16, &runs, &mut hdr), Some(3));
        assert_eq!(hdr[ZERO_HEADER_LEN..], [0b1011]);
    }

    #[test]
    fn zero_pages_shrink_random_ones_go_as_they_are() {
        let zeros = vec![0u8; 1024 * 4096];
        let p = round_trip(&[b"record header", &zeros]);
        assert_eq!(p[0], LZ4);
        assert!(p.len() < zeros.len() / 100, "{}", p.len());
        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..64 * 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = round_trip(&[&random]);
        assert_eq!(p[0], RAW);
        assert_eq!(p.len(), random.len() + 1);
        // short chunks are not worth it
        assert_eq!(round_trip(&[b"END"])[0], RAW);
        assert_eq!(round_trip(&[]), [RAW]);
    }

    #[test]
    fn zero_pages_travel_as_bits() {
        // Mixed: zeros and data interleaved, runs at both ends.
        let mixed = [
            true, false, false, true, true, false, true, true, true, false,
        ];
        let (wire, n) = zero_round_trip(&mixed, ZERO_ONLY);
        assert_eq!(n, 6);
        assert_eq!(wire[0], ZERO);
        // Tag, lengths, 2 bitmap bytes, the prefix, 4 data pages.
        assert_eq!(wire.len(), 1 + 8 + 2 + 16 + 80 + 4 * PAGE_SIZE);
        // All zeros: headers only.
        let (wire, _) = zero_round_trip(&[true; 1024], ZERO_ONLY);
        assert_eq!(wire.len(), 1 + 8 + 128 + 16 + 8 * 1024);
        // With LZ4 on top (the data pages are noise, the pfn words too:
        // whichever form is smaller goes).
        let (wire, _) = zero_round_trip(&mixed, BOTH);
        assert!(matches!(wire[0], ZERO | ZERO_LZ4));
        let (wire, _) = zero_round_trip(&[true; 1024], BOTH);
        assert_eq!(wire[0], ZERO_LZ4);
        // A page with a single byte set far in is not a zero page.
        let mut page = [0u8; PAGE_SIZE];
        assert!(is_zero_page(&page));
        page[4000] = 1;
        assert!(!is_zero_page(&page));
    }

    #[test]
    fn forms_not_agreed_and_bad_bitmaps_are_refused() {
        let (wire, _) = zero_round_trip(&[true, false, true], ZERO_ONLY);
        let (mut b, mut s) = (Vec::new(), Vec::new());
        // Not agreed: a session without ZERO_PAGES refuses tag 2, one
        // without COMPRESS refuses tags 1 and 3.
        assert_eq!(
            unpack(&wire, LZ4_ONLY, &mut b, &mut s),
            Err(UnpackError::Header)
        );
        let (lz, _) = zero_round_trip(&[true; 64], BOTH);
        assert_eq!(
            unpack(&lz, ZERO_ONLY, &mut b, &mut s),
            Err(UnpackError::Header)
        );
        // A bitmap that claims one zero page more than was elided.
        let mut more = wire.clone();
        more[1 + 8] |= 0b010;
        assert_eq!(
            unpack(&more, ZERO_ONLY, &mut b, &mut s),
            Err(UnpackError::Zeros)
        );
        // A bit set beyond the last page.
        let mut beyond = wire.clone();
        beyond[1 + 8] |= 0b1000;
        assert_eq!(
            unpack(&beyond, ZERO_ONLY, &mut b, &mut s),
            Err(UnpackError::Zeros)
        );
        // A page count whose rebuilt chunk would exceed the bound: refused
        // before anything is taken.
        let mut huge = vec![ZERO, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut fresh = Vec::new();
        assert!(matches!(
            unpack(&huge, ZERO_ONLY, &mut fresh, &mut s),
            Err(UnpackError::TooLong(_))
        ));
        assert!(fresh.capacity() < 1024);
        // Cut short anywhere: a typed error, never a panic.
        for cut in 0..wire.len() {
            assert!(
                unpack(&wire[..cut], ZERO_ONLY, &mut b, &mut s).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn damaged_or_oversized_chunks_are_refused() {
        let (mut b, mut s) = (Vec::new(), Vec::new());
        assert_eq!(
            unpack(&[], LZ4_ONLY, &mut b, &mut s),
            Err(UnpackError::Header)
        );
        assert_eq!(
            unpack(&[7, 1, 2], BOTH, &mut b, &mut s),
            Err(UnpackError::Header)
        );
        assert_eq!(
            unpack(&[LZ4, 1, 2], LZ4_ONLY, &mut b, &mut s),
            Err(UnpackError::Header)
        );
        let mut huge = vec![LZ4];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            unpack(&huge, LZ4_ONLY, &mut b, &mut s),
            Err(UnpackError::TooLong(u32::MAX))
        );
        assert!(b.capacity() < 1024, "nothing taken for a refused length");
        let (mut s, mut p) = (Vec::new(), Vec::new());
        pack(&[&vec![0u8; 8192]], &mut s, &mut p);
        // announce one byte more than the block holds
        let mut wrong = p.clone();
        wrong[1] = wrong[1].wrapping_add(1);
        assert_eq!(
            unpack(&wrong, LZ4_ONLY, &mut b, &mut s),
            Err(UnpackError::Damaged)
        );
        // cut the block short
        assert_eq!(
            unpack(&p[..p.len() - 3], LZ4_ONLY, &mut b, &mut s),
            Err(UnpackError::Damaged)
        );
    }

    #[test]
    fn any_bytes_unpack_without_a_panic() {
        let mut x = 7u64;
        let (mut b, mut s) = (Vec::new(), Vec::new());
        for n in 0..2000usize {
            let mut v: Vec<u8> = (0..(n % 97))
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            if let Some(f) = v.first_mut() {
                *f %= 4;
            }
            if v.len() > 5 {
                v[1..5].copy_from_slice(&((n as u32) * 31).to_le_bytes());
            }
            if v.len() > 9 && n % 2 == 0 {
                v[5..9].copy_from_slice(&((n as u32) % 9).to_le_bytes());
            }
            let whole = unpack(&v, BOTH, &mut b, &mut s).map(<[u8]>::to_vec);
            // Read without rebuilding: the same verdict, the same chunk.
            let (mut b2, mut s2) = (Vec::new(), Vec::new());
            match unpack_elided(&v, BOTH, &mut b2, &mut s2) {
                Ok(Unpacked::Whole(c)) => assert_eq!(Ok(c.to_vec()), whole),
                Ok(Unpacked::Elided(e, data)) => {
                    let mut out = Vec::new();
                    e.rebuild(data, &mut out);
                    assert_eq!(Ok(out), whole);
                }
                Err(e) => assert_eq!(Err(e), whole),
            }
        }
    }
}
