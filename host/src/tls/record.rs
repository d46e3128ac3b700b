//! TLS 1.3 record protection (RFC 8446 §5) after the handshake: rustls
//! makes the keys (and the new ones at each key update), this seals and
//! opens the records with aws-lc-rs in the connection's own buffers, so a
//! byte is copied at most once on each side besides the socket's own
//! copies (into the record it is sealed in; out of the record it was
//! opened in, unless it is decrypted straight into the reader's buffer)
//! and a whole write's records go to the socket in one system call.

use std::ops::Range;

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use rustls::{ConnectionTrafficSecrets, InvalidMessage, PeerMisbehaved};

/// A record header: type, legacy version, length.
pub(crate) const HEADER_LEN: usize = 5;
/// The AEAD tag of every suite TLS 1.3 has.
pub(crate) const TAG_LEN: usize = 16;
/// The most plaintext one record carries (2^14).
pub(crate) const MAX_PLAIN: usize = 1 << 14;
/// The most a protected record's body may be (2^14 + 256).
pub(crate) const MAX_BODY: usize = MAX_PLAIN + 256;
/// The largest record a peer may send.
pub(crate) const MAX_RECORD: usize = HEADER_LEN + MAX_BODY;
/// What sealing adds to a plaintext: header, inner content type, tag.
pub(crate) const OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;

/// Content types (the outer one of a protected record is always
/// application data; the inner one says what it is).
pub(crate) const ALERT: u8 = 21;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;

/// One direction's key, IV and record sequence number.
pub(crate) struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    /// The keys rustls derived, the next record being number `seq`.
    pub(crate) fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Keys, rustls::Error> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            #[allow(unreachable_patterns, reason = "the enum is non-exhaustive")]
            _ => {
                return Err(rustls::Error::General(
                    "the negotiated cipher suite has no record protection here".into(),
                ))
            }
        };
        let key = UnboundKey::new(alg, key.as_ref())
            .map_err(|_| rustls::Error::General("a traffic key of the wrong length".into()))?;
        let iv = <[u8; 12]>::try_from(iv.as_ref())
            .map_err(|_| rustls::Error::General("a traffic IV of the wrong length".into()))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The number of the next record.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The next record's nonce (the IV xor its sequence number), and the
    /// number moved on: no two records share one.
    fn next_nonce(&mut self, overflow: rustls::Error) -> Result<Nonce, rustls::Error> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(overflow)?;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// Seals the record that starts at `out[start]`: the caller left
/// `HEADER_LEN` bytes there and put at most [`MAX_PLAIN`] bytes of
/// plaintext after them; this appends the inner type `typ`, encrypts in
/// place, writes the header and appends the tag.
pub(crate) fn seal(
    keys: &mut Keys,
    out: &mut Vec<u8>,
    start: usize,
    typ: u8,
) -> Result<(), rustls::Error> {
    out.push(typ);
    let body = out.len() - start - HEADER_LEN + TAG_LEN;
    let len = u16::try_from(body).map_err(|_| rustls::Error::EncryptError)?;
    let [hi, lo] = len.to_be_bytes();
    let header = [APPLICATION_DATA, 3, 3, hi, lo];
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    let nonce = keys.next_nonce(rustls::Error::EncryptError)?;
    let tag = keys
        .key
        .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER_LEN..])
        .map_err(|_| rustls::Error::EncryptError)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// The length of the whole record whose header is `header` (checked:
/// protected, at most [`MAX_RECORD`], room for a tag and a type).
pub(crate) fn record_len(header: [u8; HEADER_LEN]) -> Result<usize, rustls::Error> {
    if header[0] != APPLICATION_DATA {
        return Err(rustls::Error::InvalidMessage(
            InvalidMessage::InvalidContentType,
        ));
    }
    let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if body > MAX_BODY {
        return Err(rustls::Error::InvalidMessage(
            InvalidMessage::MessageTooLarge,
        ));
    }
    if body < TAG_LEN + 1 {
        return Err(rustls::Error::DecryptError);
    }
    Ok(HEADER_LEN + body)
}

/// Opens the whole record `rec` (header included, its length checked by
/// [`record_len`]) in place: its inner content type and where its
/// plaintext lies in `rec`.
pub(crate) fn open(keys: &mut Keys, rec: &mut [u8]) -> Result<(u8, Range<usize>), rustls::Error> {
    let (header, body) = rec.split_at_mut(HEADER_LEN);
    let aad = [header[0], header[1], header[2], header[3], header[4]];
    let nonce = keys.next_nonce(rustls::Error::DecryptError)?;
    let plain = keys
        .key
        .open_in_place(nonce, Aad::from(aad), body)
        .map_err(|_| rustls::Error::DecryptError)?;
    let (typ, end) = inner(plain)?;
    Ok((typ, HEADER_LEN..HEADER_LEN + end))
}

/// Opens the whole record `rec` into `out` (at least as long as its body
/// less the tag: [`opened_len`]), leaving `rec` as it was: its inner
/// content type and the length of its plaintext at the start of `out`.
/// When it does not open, `out` holds garbage.
pub(crate) fn open_into(
    keys: &mut Keys,
    rec: &[u8],
    out: &mut [u8],
) -> Result<(u8, usize), rustls::Error> {
    let (header, body) = rec.split_at(HEADER_LEN);
    let aad = [header[0], header[1], header[2], header[3], header[4]];
    let Some(split) = body.len().checked_sub(TAG_LEN) else {
        return Err(rustls::Error::DecryptError);
    };
    let (cipher, tag) = body.split_at(split);
    let Some(out) = out.get_mut(..split) else {
        return Err(rustls::Error::DecryptError);
    };
    let nonce = keys.next_nonce(rustls::Error::DecryptError)?;
    keys.key
        .open_separate_gather(nonce, Aad::from(aad), cipher, tag, out)
        .map_err(|_| rustls::Error::DecryptError)?;
    inner(out)
}

/// How many bytes [`open_into`] writes for a record of `len` bytes.
pub(crate) fn opened_len(len: usize) -> usize {
    len.saturating_sub(HEADER_LEN + TAG_LEN)
}

/// The inner plaintext's content type and content length (it is content,
/// type, zeros).
fn inner(plain: &[u8]) -> Result<(u8, usize), rustls::Error> {
    let Some(end) = plain.iter().rposition(|&b| b != 0) else {
        return Err(rustls::Error::PeerMisbehaved(
            PeerMisbehaved::IllegalTlsInnerPlaintext,
        ));
    };
    if end > MAX_PLAIN {
        return Err(rustls::Error::PeerSentOversizedRecord);
    }
    Ok((plain[end], end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn keys(seq: u64) -> Keys {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7u8; 32]),
            iv: Iv::from([9u8; 12]),
        };
        Keys::new(seq, &secrets).unwrap()
    }

    fn sealed(k: &mut Keys, plain: &[u8], typ: u8) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        out.extend_from_slice(plain);
        seal(k, &mut out, 0, typ).unwrap();
        out
    }

    #[test]
    fn a_sealed_record_opens_to_its_plaintext_and_type() {
        let (mut tx, mut rx) = (keys(5), keys(5));
        for (plain, typ) in [(&b"pages"[..], APPLICATION_DATA), (&[1, 0][..], ALERT)] {
            let mut rec = sealed(&mut tx, plain, typ);
            assert_eq!(rec.len(), plain.len() + OVERHEAD);
            let header: [u8; HEADER_LEN] = rec[..HEADER_LEN].try_into().unwrap();
            assert_eq!(record_len(header).unwrap(), rec.len());
            let (t, r) = open(&mut rx, &mut rec).unwrap();
            assert_eq!((t, &rec[r]), (typ, plain));
        }
        assert_eq!((tx.seq(), rx.seq()), (7, 7));
    }

    #[test]
    fn a_record_opens_into_another_buffer_as_in_place() {
        let (mut tx, mut rx) = (keys(0), keys(0));
        let plain = (0..20_000u32).map(|i| i as u8).collect::<Vec<_>>();
        let rec = sealed(&mut tx, &plain[..MAX_PLAIN], APPLICATION_DATA);
        let mut out = vec![0u8; opened_len(rec.len())];
        let (t, n) = open_into(&mut rx, &rec, &mut out).unwrap();
        assert_eq!((t, &out[..n]), (APPLICATION_DATA, &plain[..MAX_PLAIN]));
        // Too short an output, or a damaged record: refused.
        let rec = sealed(&mut tx, b"abc", ALERT);
        assert!(open_into(&mut keys(1), &rec, &mut [0u8; 3]).is_err());
        let mut bad = rec.clone();
        bad[7] ^= 0x80;
        assert!(open_into(&mut keys(1), &bad, &mut out).is_err());
        let (t, n) = open_into(&mut rx, &rec, &mut out).unwrap();
        assert_eq!((t, &out[..n]), (ALERT, &b"abc"[..]));
    }

    #[test]
    fn a_record_out_of_sequence_or_altered_does_not_open() {
        let mut tx = keys(0);
        let mut first = sealed(&mut tx, b"one", APPLICATION_DATA);
        let mut second = sealed(&mut tx, b"two", APPLICATION_DATA);
        // Replayed, reordered: the sequence number is in the nonce.
        // (A record that fails is damaged in place: try a copy.)
        assert!(matches!(
            open(&mut keys(0), &mut second.clone()),
            Err(rustls::Error::DecryptError)
        ));
        let mut altered = first.clone();
        altered[HEADER_LEN] ^= 1;
        assert!(open(&mut keys(0), &mut altered).is_err());
        // The header is authenticated too.
        let mut header_changed = first.clone();
        header_changed[1] = 1;
        assert!(open(&mut keys(0), &mut header_changed).is_err());
        let mut rx = keys(0);
        assert!(open(&mut rx, &mut first).is_ok());
        assert!(open(&mut rx, &mut second).is_ok());
    }

    #[test]
    fn headers_a_peer_may_not_send_are_refused() {
        assert!(record_len([22, 3, 3, 0, 40]).is_err());
        assert!(record_len([23, 3, 3, 0, 16]).is_err());
        let too_big = u16::try_from(MAX_BODY + 1).unwrap().to_be_bytes();
        assert!(record_len([23, 3, 3, too_big[0], too_big[1]]).is_err());
        let max = u16::try_from(MAX_BODY).unwrap().to_be_bytes();
        assert_eq!(record_len([23, 3, 3, max[0], max[1]]).unwrap(), MAX_RECORD);
    }

    #[test]
    fn padding_is_stripped_and_all_zero_plaintext_refused() {
        let mut tx = keys(0);
        let mut rx = keys(0);
        let mut rec = sealed(&mut tx, b"x", APPLICATION_DATA);
        // Padding: zeros after the inner type (sealed with type 0, itself
        // padding).
        let mut padded = vec![0u8; HEADER_LEN];
        padded.extend_from_slice(b"x");
        padded.push(APPLICATION_DATA);
        padded.extend_from_slice(&[0, 0, 0]);
        let mut tx2 = keys(1);
        seal(&mut tx2, &mut padded, 0, 0).unwrap();
        let (t, r) = open(&mut rx, &mut rec).unwrap();
        assert_eq!((t, &rec[r]), (APPLICATION_DATA, &b"x"[..]));
        let (t, r) = open(&mut rx, &mut padded).unwrap();
        assert_eq!((t, &padded[r]), (APPLICATION_DATA, &b"x"[..]));
        let mut zeros = vec![0u8; HEADER_LEN + 4];
        seal(&mut tx2, &mut zeros, 0, 0).unwrap();
        assert!(matches!(
            open(&mut rx, &mut zeros),
            Err(rustls::Error::PeerMisbehaved(_))
        ));
    }
}
