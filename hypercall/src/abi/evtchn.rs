//! `xen/event_channel.h`: `event_channel_op` commands and the argument
//! structures relocd issues.

use super::xen::DomId;
use crate::plain::plain_data;

/// `evtchn_port_t`.
pub type EvtchnPort = u32;

/// `event_channel_op` commands (`EVTCHNOP_*`).
pub mod cmd {
    /// `EVTCHNOP_bind_interdomain`
    pub const BIND_INTERDOMAIN: u32 = 0;
    /// `EVTCHNOP_bind_virq`
    pub const BIND_VIRQ: u32 = 1;
    /// `EVTCHNOP_bind_pirq`
    pub const BIND_PIRQ: u32 = 2;
    /// `EVTCHNOP_close`: closes a port of the *calling* domain (there is no
    /// domain field), so a toolstack cannot close a port of the domain it
    /// builds with it.
    pub const CLOSE: u32 = 3;
    /// `EVTCHNOP_send`
    pub const SEND: u32 = 4;
    /// `EVTCHNOP_status`
    pub const STATUS: u32 = 5;
    /// `EVTCHNOP_alloc_unbound`
    pub const ALLOC_UNBOUND: u32 = 6;

    /// The C name of a command without its `EVTCHNOP_` prefix, for
    /// messages.
    pub const fn name(cmd: u32) -> Option<&'static str> {
        Some(match cmd {
            BIND_INTERDOMAIN => "bind_interdomain",
            BIND_VIRQ => "bind_virq",
            BIND_PIRQ => "bind_pirq",
            CLOSE => "close",
            SEND => "send",
            STATUS => "status",
            ALLOC_UNBOUND => "alloc_unbound",
            _ => return None,
        })
    }
}

/// `struct evtchn_alloc_unbound`: allocates a fresh port in `dom` that
/// `remote_dom` may later bind to (`EVTCHNOP_bind_interdomain`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    /// The domain the port is allocated in (`DOMID_SELF` or, for a
    /// privileged caller, any domain).
    pub dom: DomId,
    /// The domain allowed to bind to it.
    pub remote_dom: DomId,
    /// Out: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_close`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnClose {
    /// The caller's own port to close.
    pub port: EvtchnPort,
}

plain_data! {
    EvtchnAllocUnbound { dom, remote_dom, port }
    EvtchnClose { port }
}

const _: () = assert!(core::mem::size_of::<EvtchnAllocUnbound>() == 8);
const _: () = assert!(core::mem::size_of::<EvtchnClose>() == 4);
