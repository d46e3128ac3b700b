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
//!   dom0 or driver domain) and `hypercall_page` (feature `page`; a bare
//!   PV/PVH domain's hypercall page, no std: domctl, sysctl and memory_op).
//! - [`anon`] (feature `privcmd`): zero-filled anonymous memory, for the
//!   simulated hypervisor's guests.
//! - `residency` (feature `residency`, default; Linux): `madvise` on
//!   read-only file mappings, to give back pages start-up left resident.
//! - `fake` (feature `fake`): an in-memory Xen for tests above the trait.
//!
//! Code above this crate is generic over [`Hypervisor`] and calls the
//! wrappers; tests plug in the fake, a dom0 plugs in privcmd:
//!
//! ```
//! use relocd_hypercall::fake::{FakeDomain, FakeXen};
//! use relocd_hypercall::{Hypervisor, XenOps};
//!
//! fn dirty_pages(xen: &impl Hypervisor, domid: u16) -> Result<u32, relocd_hypercall::Error> {
//!     let pages = xen.maximum_gpfn(domid)? + 1;
//!     let mut bitmap = vec![0u8; pages.div_ceil(8) as usize];
//!     Ok(xen.logdirty_peek(domid, &mut bitmap, pages)?.dirty_count)
//! }
//!
//! let xen = FakeXen::new();
//! xen.add_domain(FakeDomain::pv(1, 256, 1));
//! xen.logdirty_enable(1)?;
//! xen.guest_write(1, 42, 0, b"hello");
//! assert_eq!(dirty_pages(&xen, 1)?, 1);
//! xen.pause(1)?;
//! assert_eq!(&xen.domain_info(1)?.xl_state(), b"--p---");
//! // In dom0: relocd_hypercall::backend::privcmd::Privcmd::open()?
//! # Ok::<(), relocd_hypercall::Error>(())
//! ```
//!
//! Every `unsafe` block carries a `// SAFETY:` comment and every `unsafe`
//! trait or function a `# Safety` section (enforced by clippy's
//! `undocumented_unsafe_blocks` and `missing_safety_doc`).
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod abi;
#[cfg(feature = "privcmd")]
pub mod anon;
pub mod backend;
pub mod calls;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod hypervisor;
mod ops;
mod plain;
#[cfg(all(feature = "residency", target_os = "linux"))]
pub mod residency;
pub mod xsm;

pub use abi::domctl::VcpuMsr;
pub use abi::domctl::XEN_DOMCTL_INTERFACE_VERSION;
pub use abi::sysctl::XEN_SYSCTL_INTERFACE_VERSION;
pub use abi::xen::{DomId, XenPfn, PAGE_SIZE};
pub use error::{errno, Device, Error, ErrorKind, Op};
pub use hypervisor::{BufData, ForeignPages, GuestBuf, Hypervisor, Prot};
pub use ops::{
    DomainInfo, ExtVcpuContext, ShadowStats, XenOps, DOMAIN_LIST_BATCH, PFINFO_BATCH_MAX,
};
pub use plain::{slice_as_bytes, slice_as_bytes_mut, PlainData};
