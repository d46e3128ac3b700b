//! relocd-core: the migration logic of relocd, with no I/O and no clock.
//!
//! The crate is `#![no_std]` unconditionally and needs no allocator unless
//! the `alloc` feature is on. CI builds it for `x86_64-unknown-none` with no
//! features to prove that.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod acl;
pub mod config;
pub mod guest;
pub mod precopy;
pub mod protocol;
pub mod pv;
pub mod stream;
pub mod sxp;
pub mod time;
