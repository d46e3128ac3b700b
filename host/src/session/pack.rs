//! Image chunks on the wire when both ends agreed on
//! [`Features::COMPRESS`](relocd_core::protocol::Features::COMPRESS): each
//! chunk's payload is one tag octet, then
//!
//! | tag | rest |
//! | --- | --- |
//! | 0 | the chunk as it is |
//! | 1 | `u32` LE length of the chunk, then the chunk as an LZ4 block |
//!
//! The sender compresses a chunk and keeps the result only when it saves
//! at least an eighth (a guest's free memory is mostly zero pages, its
//! working set often not compressible at all). The receiver bounds the
//! unpacked length by [`MAX_UNPACKED`] before it takes any memory, and
//! refuses a block that does not unpack to exactly the length announced.
//! The migration stream inside is Xen's libxc stream either way: only the
//! link sees the packing.

/// Tag of a chunk sent as it is.
const RAW: u8 = 0;
/// Tag of an LZ4 block.
const LZ4: u8 = 1;
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
}

/// Packs the concatenation of `parts` into `out` (cleared first).
pub fn pack(parts: &[&[u8]], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    scratch.clear();
    for p in parts {
        scratch.extend_from_slice(p);
    }
    out.clear();
    let worth = scratch.len() >= 512 && u32::try_from(scratch.len()).is_ok();
    if worth {
        out.push(LZ4);
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
    out.push(RAW);
    out.extend_from_slice(scratch);
}

/// Unpacks a chunk: the chunk itself, borrowed from `packed` or unpacked
/// into `buf`.
pub fn unpack<'a>(packed: &'a [u8], buf: &'a mut Vec<u8>) -> Result<&'a [u8], UnpackError> {
    let (&tag, rest) = packed.split_first().ok_or(UnpackError::Header)?;
    match tag {
        RAW => Ok(rest),
        LZ4 => {
            let len = rest.get(..4).ok_or(UnpackError::Header)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            if len as usize > MAX_UNPACKED {
                return Err(UnpackError::TooLong(len));
            }
            buf.clear();
            buf.resize(len as usize, 0);
            let n = lz4_flex::block::decompress_into(&rest[4..], buf)
                .map_err(|_| UnpackError::Damaged)?;
            if n != len as usize {
                return Err(UnpackError::Damaged);
            }
            Ok(&buf[..])
        }
        _ => Err(UnpackError::Header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(parts: &[&[u8]]) -> Vec<u8> {
        let (mut s, mut p, mut b) = (Vec::new(), Vec::new(), Vec::new());
        pack(parts, &mut s, &mut p);
        let whole: Vec<u8> = parts.concat();
        assert_eq!(unpack(&p, &mut b).unwrap(), &whole[..]);
        p
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
    fn damaged_or_oversized_chunks_are_refused() {
        let mut b = Vec::new();
        assert_eq!(unpack(&[], &mut b), Err(UnpackError::Header));
        assert_eq!(unpack(&[7, 1, 2], &mut b), Err(UnpackError::Header));
        assert_eq!(unpack(&[LZ4, 1, 2], &mut b), Err(UnpackError::Header));
        let mut huge = vec![LZ4];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(unpack(&huge, &mut b), Err(UnpackError::TooLong(u32::MAX)));
        assert!(b.capacity() < 1024, "nothing taken for a refused length");
        let (mut s, mut p) = (Vec::new(), Vec::new());
        pack(&[&vec![0u8; 8192]], &mut s, &mut p);
        // announce one byte more than the block holds
        let mut wrong = p.clone();
        wrong[1] = wrong[1].wrapping_add(1);
        assert_eq!(unpack(&wrong, &mut b), Err(UnpackError::Damaged));
        // cut the block short
        assert_eq!(unpack(&p[..p.len() - 3], &mut b), Err(UnpackError::Damaged));
    }

    #[test]
    fn any_bytes_unpack_without_a_panic() {
        let mut x = 7u64;
        let mut b = Vec::new();
        for n in 0..2000usize {
            let mut v: Vec<u8> = (0..(n % 97))
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            if let Some(f) = v.first_mut() {
                *f %= 3;
            }
            if v.len() > 5 {
                v[1..5].copy_from_slice(&((n as u32) * 31).to_le_bytes());
            }
            let _ = unpack(&v, &mut b);
        }
    }
}
