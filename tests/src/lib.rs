//! Shared helpers for relocd's cross-crate integration tests (in `tests/tests/`).

pub mod acl_gen;
pub mod daemons;
pub mod fuzz_entry;
pub mod sim_dest;
pub mod sim_migrate;
pub mod tls_certs;
pub mod xen_utils;
