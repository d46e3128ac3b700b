//! relocd-hypercall: Xen 4.17's toolstack ABI and the only `unsafe` doorway
//! from relocd to Xen.
//!
//! - [`abi`]: `#[repr(C)]` mirrors of the domctl/sysctl (interface version
//!   0x15), memory_op, mmuext_op and mmu_update structures, each
//!   [`PlainData`], sizes pinned at compile time and every field offset
//!   checked against Debian's `libxen-dev` headers by `tests/abi_layout.rs`.
//! - [`Hypervisor`]: the raw calls, typed by their argument structures, with
//!   caller buffers described by [`GuestBuf`] (never raw addresses).
//! - [`XenOps`]: safe typed wrappers every `Hypervisor` has (domain info,
//!   pause/unpause/destroy, log-dirty, page types, vCPU context, …).
//! - [`backend`]: the doorways. `privcmd` (feature `privcmd`, default; Linux
//!   dom0 or driver domain) and `hypercall_page` (feature `page`; a stub that
//!   builds without std and answers "not available").
//! - `fake` (feature `fake`): an in-memory Xen for tests above the trait.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment and every `unsafe`
//! trait or function a `# Safety` section (enforced by clippy's
//! `undocumented_unsafe_blocks` and `missing_safety_doc`).
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod abi;
pub mod backend;
pub mod calls;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod hypervisor;
mod ops;
mod plain;

pub use abi::domctl::XEN_DOMCTL_INTERFACE_VERSION;
pub use abi::sysctl::XEN_SYSCTL_INTERFACE_VERSION;
pub use abi::xen::{DomId, XenPfn, PAGE_SIZE};
pub use error::{errno, Device, Error, ErrorKind, Op};
pub use hypervisor::{BufData, ForeignPages, GuestBuf, Hypervisor, Prot};
pub use ops::{DomainInfo, ShadowStats, XenOps, PFINFO_BATCH_MAX};
pub use plain::{slice_as_bytes, slice_as_bytes_mut, PlainData};
