//! The domain relocd runs in, found at start-up rather than assumed to be
//! dom0, so that relocd can run in a driver domain (see
//! `docs/driver-domain.md`).
//!
//! Two sources, in this order:
//!
//! 1. `/proc/xen/capabilities` (xenfs): Linux writes `control_d` there in
//!    the initial domain only, which is always domain 0. This answers in
//!    dom0 without a xenstore round trip, and without trusting a node that
//!    a toolstack writes.
//! 2. xenstore's relative path `domid`: xenstored resolves a relative path
//!    against the caller's home, `/local/domain/<caller>/`, where the
//!    toolstack that built the domain wrote its id (libxl writes `domid`
//!    for every domain it creates, `xen-init-dom0` for dom0). Over
//!    `/dev/xen/xenbus`, the home is the one of the domain whose ring it
//!    is: the answer is this domain's id, not a name to be looked up.
//!
//! Xen has no hypercall that returns the caller's id (`DOMID_SELF` is an
//! alias Xen resolves inside each call, and `getdomaininfo` answers for
//! the next domain at or above the one asked), so there is no third way
//! that does not guess.

use super::xenstore::{Transport, Xenstore, XenstoreError};
use relocd_hypercall::abi::xen::DOMID_FIRST_RESERVED;
use relocd_hypercall::DomId;

/// Where xenfs shows the domain's capabilities.
pub const CAPABILITIES_PATH: &str = "/proc/xen/capabilities";

/// How the domain was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundBy {
    /// `/proc/xen/capabilities` says `control_d`: domain 0.
    Capabilities,
    /// xenstore's `domid` in this domain's home.
    Xenstore,
}

/// The domain relocd runs in, and how that was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnDomain {
    /// Its id.
    pub domid: DomId,
    /// The source.
    pub found_by: FoundBy,
}

impl std::fmt::Display for OwnDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.found_by {
            FoundBy::Capabilities => write!(
                f,
                "domain {} (the control domain: {CAPABILITIES_PATH} says control_d)",
                self.domid
            ),
            FoundBy::Xenstore => {
                write!(f, "domain {} (xenstore's `domid` of its home)", self.domid)
            }
        }
    }
}

/// The domain could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OwnDomainError {
    /// Not the control domain, and xenstore could not say.
    #[error(
        "cannot tell which domain relocd runs in: {CAPABILITIES_PATH} does not say control_d \
         and xenstore's `domid` could not be read ({0}); the toolstack that built this domain \
         writes /local/domain/<id>/domid"
    )]
    Store(XenstoreError),
    /// xenstore's `domid` is not a domain id.
    #[error("xenstore's `domid` of this domain is {0:?}, not a domain id")]
    Bad(String),
}

/// Whether `capabilities` (the text of [`CAPABILITIES_PATH`]) names the
/// control domain: `control_d` among its comma- or space-separated words.
pub fn is_control_domain(capabilities: &str) -> bool {
    capabilities
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|w| w == "control_d")
}

/// The domain relocd runs in, from the text of [`CAPABILITIES_PATH`] (when
/// it could be read) and, when that does not settle it, `store`'s `domid`.
pub fn find<T: Transport>(
    capabilities: Option<&str>,
    store: impl FnOnce() -> Result<Xenstore<T>, XenstoreError>,
) -> Result<OwnDomain, OwnDomainError> {
    if capabilities.is_some_and(is_control_domain) {
        return Ok(OwnDomain {
            domid: 0,
            found_by: FoundBy::Capabilities,
        });
    }
    let text = store()
        .and_then(|mut xs| xs.read_string("domid"))
        .map_err(OwnDomainError::Store)?;
    let domid = text
        .trim()
        .parse::<DomId>()
        .ok()
        .filter(|d| *d < DOMID_FIRST_RESERVED)
        .ok_or_else(|| OwnDomainError::Bad(text.chars().take(32).collect()))?;
    Ok(OwnDomain {
        domid,
        found_by: FoundBy::Xenstore,
    })
}

/// [`find`] on this machine: [`CAPABILITIES_PATH`], then xenstore as
/// [`Xenstore::open`] reaches it.
pub fn find_here() -> Result<OwnDomain, OwnDomainError> {
    let caps = std::fs::read_to_string(CAPABILITIES_PATH).ok();
    find(caps.as_deref(), Xenstore::open)
}

#[cfg(test)]
mod tests {
    use super::super::xenstore::fake::FakeXenstored;
    use super::*;

    fn store(entries: &[(&str, &str)]) -> Result<Xenstore<FakeXenstored>, XenstoreError> {
        Ok(Xenstore::new(FakeXenstored::new(entries)))
    }

    #[test]
    fn the_control_domain_is_known_by_its_capabilities() {
        assert!(is_control_domain("control_d\n"));
        assert!(is_control_domain("foo,control_d"));
        assert!(!is_control_domain(""));
        assert!(!is_control_domain("control_domain"));
        // no xenstore needed in dom0
        let d = find::<FakeXenstored>(Some("control_d\n"), || panic!("xenstore asked in dom0"))
            .unwrap();
        assert_eq!(d.domid, 0);
        assert_eq!(d.found_by, FoundBy::Capabilities);
    }

    #[test]
    fn a_driver_domain_reads_its_id_from_its_xenstore_home() {
        // the fake resolves nothing: the relative path is asked as such
        let d = find(Some("\n"), || store(&[("domid", "7")])).unwrap();
        assert_eq!(
            d,
            OwnDomain {
                domid: 7,
                found_by: FoundBy::Xenstore
            }
        );
        assert!(d.to_string().starts_with("domain 7 "), "{d}");
        // no xenfs at all: xenstore still answers
        assert_eq!(
            find(None, || store(&[("domid", "12\n")])).unwrap().domid,
            12
        );
    }

    #[test]
    fn no_answer_or_a_bad_one_is_an_error_not_domain_0() {
        let e = find(Some(""), || store(&[])).unwrap_err();
        assert!(matches!(e, OwnDomainError::Store(_)), "{e}");
        assert!(e.to_string().contains("cannot tell which domain"), "{e}");
        for bad in ["", "x", "-1", "32752", "70000"] {
            let e = find(Some(""), || store(&[("domid", bad)])).unwrap_err();
            assert!(matches!(e, OwnDomainError::Bad(_)), "{bad}: {e}");
        }
    }
}
