//! relocd-hypercall: Xen 4.17's toolstack ABI and the only `unsafe` doorway
//! from relocd to Xen.
//!
//! Empty for now: the privcmd backend and the domctl/sysctl mirrors arrive
//! with the Xen backend. Every `unsafe` block added here carries a
//! `// SAFETY:` comment (enforced by `clippy::undocumented_unsafe_blocks`).
#![deny(unsafe_op_in_unsafe_fn)]

/// The domctl interface version of Xen 4.17 (`XEN_DOMCTL_INTERFACE_VERSION`).
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;
