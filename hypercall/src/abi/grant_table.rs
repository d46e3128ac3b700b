//! `xen/grant_table.h`: `grant_table_op` commands, `gnttab_setup_table`,
//! the v1 grant entry and the `GNTST_*` status codes.

use super::xen::{DomId, GuestHandle};
use crate::error::errno;
use crate::plain::plain_data;

/// `grant_table_op` commands (`GNTTABOP_*`).
pub mod cmd {
    /// `GNTTABOP_map_grant_ref`
    pub const MAP_GRANT_REF: u32 = 0;
    /// `GNTTABOP_unmap_grant_ref`
    pub const UNMAP_GRANT_REF: u32 = 1;
    /// `GNTTABOP_setup_table`
    pub const SETUP_TABLE: u32 = 2;
    /// `GNTTABOP_dump_table`
    pub const DUMP_TABLE: u32 = 3;
    /// `GNTTABOP_transfer`
    pub const TRANSFER: u32 = 4;
    /// `GNTTABOP_copy`
    pub const COPY: u32 = 5;
    /// `GNTTABOP_query_size`
    pub const QUERY_SIZE: u32 = 6;

    /// The C name of a command without its `GNTTABOP_` prefix, for
    /// messages.
    pub const fn name(cmd: u32) -> Option<&'static str> {
        Some(match cmd {
            MAP_GRANT_REF => "map_grant_ref",
            UNMAP_GRANT_REF => "unmap_grant_ref",
            SETUP_TABLE => "setup_table",
            DUMP_TABLE => "dump_table",
            TRANSFER => "transfer",
            COPY => "copy",
            QUERY_SIZE => "query_size",
            _ => return None,
        })
    }
}

/// `struct gnttab_setup_table`: the frames of a domain's (shared, v1) grant
/// table, grown to at least `nr_frames` frames.
///
/// `frame_list` is a plain `XEN_GUEST_HANDLE(xen_pfn_t)`, which on x86_64
/// is one 8-byte pointer, like the tools' `XEN_GUEST_HANDLE_64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetupTable {
    /// The domain (`DOMID_SELF`, or any domain for a privileged caller).
    pub dom: DomId,
    /// Implicit C padding.
    pub _pad0: u16,
    /// How many frames to return (Xen grows the table to this many).
    pub nr_frames: u32,
    /// Out: a `GNTST_*` code ([`gntst`]).
    pub status: i16,
    /// Implicit C padding.
    pub _pad1: [u16; 3],
    /// `xen_pfn_t[nr_frames]`, out: the table's frames (machine frames for
    /// a PV domain, GFNs for a translated one).
    pub frame_list: GuestHandle,
}

/// `struct grant_entry_v1`: one entry of a v1 grant table (8 bytes; a
/// 4 KiB frame holds 512).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// `GTF_*` ([`gtf`]).
    pub flags: u16,
    /// The domain given access.
    pub domid: DomId,
    /// The frame (GFN; for a PV guest its MFN) shared.
    pub frame: u32,
}

plain_data! {
    GnttabSetupTable { dom, _pad0, nr_frames, status, _pad1, frame_list }
    GrantEntryV1 { flags, domid, frame }
}

const _: () = assert!(core::mem::size_of::<GnttabSetupTable>() == 24);
const _: () = assert!(core::mem::size_of::<GrantEntryV1>() == 8);

/// `GNTTAB_RESERVED_CONSOLE`: the grant entry a toolstack fills for the
/// console ring (for the console backend's domain).
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// `GNTTAB_RESERVED_XENSTORE`: the grant entry for the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// `GTF_*` bits of [`GrantEntryV1::flags`].
pub mod gtf {
    /// `GTF_invalid`
    pub const INVALID: u16 = 0;
    /// `GTF_permit_access`
    pub const PERMIT_ACCESS: u16 = 1;
    /// `GTF_accept_transfer`
    pub const ACCEPT_TRANSFER: u16 = 2;
    /// `GTF_readonly`
    pub const READONLY: u16 = 1 << 2;
    /// `GTF_reading`
    pub const READING: u16 = 1 << 3;
    /// `GTF_writing`
    pub const WRITING: u16 = 1 << 4;
}

/// `GNTST_*`: the status codes of grant-table operations.
pub mod gntst {
    use super::errno;

    /// `GNTST_okay`
    pub const OKAY: i16 = 0;
    /// `GNTST_general_error`
    pub const GENERAL_ERROR: i16 = -1;
    /// `GNTST_bad_domain`
    pub const BAD_DOMAIN: i16 = -2;
    /// `GNTST_bad_gntref`
    pub const BAD_GNTREF: i16 = -3;
    /// `GNTST_bad_handle`
    pub const BAD_HANDLE: i16 = -4;
    /// `GNTST_bad_virt_addr`
    pub const BAD_VIRT_ADDR: i16 = -5;
    /// `GNTST_bad_dev_addr`
    pub const BAD_DEV_ADDR: i16 = -6;
    /// `GNTST_no_device_space`
    pub const NO_DEVICE_SPACE: i16 = -7;
    /// `GNTST_permission_denied`
    pub const PERMISSION_DENIED: i16 = -8;
    /// `GNTST_bad_page`
    pub const BAD_PAGE: i16 = -9;
    /// `GNTST_bad_copy_arg`
    pub const BAD_COPY_ARG: i16 = -10;
    /// `GNTST_address_too_big`
    pub const ADDRESS_TOO_BIG: i16 = -11;
    /// `GNTST_eagain`
    pub const EAGAIN: i16 = -12;
    /// `GNTST_no_space`
    pub const NO_SPACE: i16 = -13;

    /// The errno a failed status is reported as (`None` for
    /// [`OKAY`]):
    ///
    /// | status | errno |
    /// |---|---|
    /// | `bad_domain` | `ESRCH` |
    /// | `permission_denied` | `EPERM` |
    /// | `bad_virt_addr`, `bad_dev_addr` | `EFAULT` |
    /// | `no_device_space`, `no_space` | `ENOSPC` |
    /// | `address_too_big` | `ERANGE` |
    /// | `eagain` | `EAGAIN` |
    /// | `general_error`, `bad_gntref`, `bad_handle`, `bad_page`, `bad_copy_arg` | `EINVAL` |
    /// | anything else | `EIO` |
    ///
    /// For `GNTTABOP_setup_table`, `general_error` means more frames than
    /// the domain's `max_grant_frames` were asked for, or the table could
    /// not grow to them: hence `EINVAL`.
    pub const fn to_errno(status: i16) -> Option<i32> {
        Some(match status {
            OKAY => return None,
            BAD_DOMAIN => errno::ESRCH,
            PERMISSION_DENIED => errno::EPERM,
            BAD_VIRT_ADDR | BAD_DEV_ADDR => errno::EFAULT,
            NO_DEVICE_SPACE | NO_SPACE => errno::ENOSPC,
            ADDRESS_TOO_BIG => errno::ERANGE,
            EAGAIN => errno::EAGAIN,
            GENERAL_ERROR | BAD_GNTREF | BAD_HANDLE | BAD_PAGE | BAD_COPY_ARG => errno::EINVAL,
            _ => errno::EIO,
        })
    }
}
