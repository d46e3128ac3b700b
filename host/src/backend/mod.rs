//! The hypervisors relocd drives, each a set of hooks of the one engine
//! ([`crate::engine`]): [`sim`], the simulated hypervisor, and [`xen`], a
//! real Xen through privcmd and xenstore. Nothing of the migration
//! algorithm lives here.

pub mod sim;
pub mod xen;
