//! What `relocd --version` says: the package version, the protocols it
//! speaks (relocation sessions between hosts, the management socket) and
//! the Xen ABI it was built against.

use std::sync::LazyLock;

/// The Xen release whose toolstack ABI the hypercall crate mirrors.
pub const XEN_RELEASE: &str = "4.17";

static LONG: LazyLock<String> = LazyLock::new(|| {
    use relocd_core::protocol::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
    use relocd_hypercall::{XEN_DOMCTL_INTERFACE_VERSION, XEN_SYSCTL_INTERFACE_VERSION};
    let range = if PROTOCOL_VERSION_MIN == PROTOCOL_VERSION {
        format!("version {PROTOCOL_VERSION}")
    } else {
        format!("versions {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}")
    };
    format!(
        "{}\n\
         relocation protocol: {range}\n\
         management protocol: version {}\n\
         Xen ABI: Xen {XEN_RELEASE} (domctl interface {XEN_DOMCTL_INTERFACE_VERSION:#x}, \
         sysctl interface {XEN_SYSCTL_INTERFACE_VERSION:#x}); \
         streams: libxc v{}, libxl v{}, xl save files",
        env!("CARGO_PKG_VERSION"),
        crate::api::PROTOCOL_VERSION,
        relocd_core::stream::image::VERSION_3,
        relocd_core::stream::libxl::VERSION,
    )
});

/// The text after `relocd ` in `relocd --version`.
pub fn long() -> &'static str {
    LONG.as_str()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_protocol_range_and_the_xen_abi() {
        let text = super::long();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], env!("CARGO_PKG_VERSION"));
        let proto = relocd_core::protocol::PROTOCOL_VERSION;
        assert!(
            lines[1].starts_with("relocation protocol: version"),
            "{text}"
        );
        assert!(lines[1].contains(&proto.to_string()), "{text}");
        assert_eq!(lines[2], "management protocol: version 1");
        assert!(
            lines[3].contains("Xen 4.17 (domctl interface 0x15, sysctl interface 0x15)"),
            "{text}"
        );
    }
}
