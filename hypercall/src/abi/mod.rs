//! Xen 4.17's toolstack ABI for x86_64, as `#[repr(C)]` mirrors.
//!
//! Every structure is [`PlainData`](crate::PlainData): C's implicit padding
//! is an explicit `_padN` field, so the bytes handed to Xen are always
//! initialised. Each size is pinned by a compile-time assertion, and the
//! test `tests/abi_layout.rs` compares every size and field offset with the
//! C headers of Debian's `libxen-dev`. Guest handles are `u64` addresses
//! (`XEN_GUEST_HANDLE_64`).

pub mod domctl;
pub mod evtchn;
pub mod grant_table;
pub mod memory;
pub mod privcmd;
pub mod sysctl;
pub mod xen;
