//! The names a peer's certificate vouches for: the DNS and IP entries of its
//! subject alternative name extension, read from the certificate's DER
//! (RFC 5280, section 4.2.1.6) with checked lengths.
//!
//! Only certificates that rustls has already verified against the CA are
//! read here, but the reader treats its input as hostile all the same: a
//! malformed certificate gives no names, never a panic, and at most
//! [`MAX_NAMES`] names are kept.

use std::net::IpAddr;

/// The most names kept from one certificate.
pub const MAX_NAMES: usize = 64;

/// The subject alternative names hosts-allow is matched against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    /// `dNSName` entries, lower case, as written (wildcards included).
    pub dns: Vec<String>,
    /// `iPAddress` entries.
    pub ip: Vec<IpAddr>,
}

impl CertNames {
    /// No name at all.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ip.is_empty()
    }
}

impl std::fmt::Display for CertNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for n in &self.dns {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            f.write_str(n)?;
        }
        for ip in &self.ip {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{ip}")?;
        }
        Ok(())
    }
}

/// One DER element: its tag, its contents and what follows it. Single-byte
/// tags and definite lengths of at most four bytes (DER's only forms for a
/// certificate); anything else is `None`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // a multi-byte tag: not in a certificate's path here
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(n..)?)
    };
    let value = rest.get(..len)?;
    Some((tag, value, rest.get(len..)?))
}

/// The elements of a constructed value, in order (stops at the first
/// malformed one).
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = tlv(input)?;
        input = rest;
        Some((tag, value))
    })
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// `[2] IMPLICIT IA5String` (dNSName).
const DNS_NAME: u8 = 0x82;
/// `[7] IMPLICIT OCTET STRING` (iPAddress).
const IP_ADDRESS: u8 = 0x87;

/// The DNS and IP subject alternative names of the DER certificate `der`;
/// empty when it has none or cannot be read.
pub fn cert_names(der: &[u8]) -> CertNames {
    let mut names = CertNames::default();
    let Some(san) = subject_alt_name(der) else {
        return names;
    };
    let Some((SEQUENCE, general_names, _)) = tlv(san) else {
        return names;
    };
    for (tag, value) in elements(general_names) {
        if names.dns.len() + names.ip.len() >= MAX_NAMES {
            break;
        }
        match tag {
            DNS_NAME => {
                if let Ok(s) = std::str::from_utf8(value) {
                    if !s.is_empty() && s.len() <= 253 && s.is_ascii() {
                        names.dns.push(s.to_ascii_lowercase());
                    }
                }
            }
            IP_ADDRESS => {
                if let Ok(v4) = <[u8; 4]>::try_from(value) {
                    names.ip.push(IpAddr::from(v4));
                } else if let Ok(v6) = <[u8; 16]>::try_from(value) {
                    names.ip.push(IpAddr::from(v6));
                }
            }
            _ => {}
        }
    }
    names
}

/// The contents of the subjectAltName extension's OCTET STRING.
fn subject_alt_name(der: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (_, exts) = elements(tbs).find(|(tag, _)| *tag == EXTENSIONS)?;
    let (SEQUENCE, exts, _) = tlv(exts)? else {
        return None;
    };
    for (tag, ext) in elements(exts) {
        if tag != SEQUENCE {
            continue;
        }
        let mut parts = elements(ext);
        let Some((OID, oid)) = parts.next() else {
            continue;
        };
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        // An optional `critical` BOOLEAN, then the OCTET STRING.
        return parts.find(|(t, _)| *t == OCTET_STRING).map(|(_, v)| v);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        assert_eq!(tlv(&[]), None);
        assert_eq!(tlv(&[0x30]), None);
        assert_eq!(tlv(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(tlv(&[0x30, 0x85, 0, 0, 0, 0, 1]), None);
        assert_eq!(
            tlv(&[0x30, 0x81, 0x02, 7, 8, 9]),
            Some((0x30, &[7u8, 8][..], &[9u8][..]))
        );
        assert_eq!(tlv(&[0x1f, 0x01, 0]), None);
        assert_eq!(
            cert_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            CertNames::default()
        );
    }

    #[test]
    fn names_display() {
        let n = CertNames {
            dns: vec!["hosta.example.org".into()],
            ip: vec![IpAddr::from([192, 0, 2, 1])],
        };
        assert_eq!(n.to_string(), "hosta.example.org, 192.0.2.1");
        assert_eq!(CertNames::default().to_string(), "none");
    }
}
