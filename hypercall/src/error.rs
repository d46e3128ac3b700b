//! The one error type: which operation failed, and Xen's (or the kernel's)
//! errno.

use core::fmt;

/// Errno values, as Xen's `public/errno.h` and Linux on x86 both number them.
pub mod errno {
    /// `EPERM`
    pub const EPERM: i32 = 1;
    /// `ENOENT`
    pub const ENOENT: i32 = 2;
    /// `ESRCH`
    pub const ESRCH: i32 = 3;
    /// `EINTR`
    pub const EINTR: i32 = 4;
    /// `EIO`
    pub const EIO: i32 = 5;
    /// `ENXIO`
    pub const ENXIO: i32 = 6;
    /// `E2BIG`
    pub const E2BIG: i32 = 7;
    /// `EBADF`
    pub const EBADF: i32 = 9;
    /// `EAGAIN`
    pub const EAGAIN: i32 = 11;
    /// `ENOMEM`
    pub const ENOMEM: i32 = 12;
    /// `EACCES`
    pub const EACCES: i32 = 13;
    /// `EFAULT`
    pub const EFAULT: i32 = 14;
    /// `EBUSY`
    pub const EBUSY: i32 = 16;
    /// `EEXIST`
    pub const EEXIST: i32 = 17;
    /// `ENODEV`
    pub const ENODEV: i32 = 19;
    /// `ENOTTY`: the descriptor is not a privcmd device.
    pub const ENOTTY: i32 = 25;
    /// `EINVAL`
    pub const EINVAL: i32 = 22;
    /// `ENOSPC`
    pub const ENOSPC: i32 = 28;
    /// `ERANGE`
    pub const ERANGE: i32 = 34;
    /// `ENOSYS`
    pub const ENOSYS: i32 = 38;
    /// `EOPNOTSUPP`
    pub const EOPNOTSUPP: i32 = 95;
    /// `ENOBUFS`: a caller array is too short for Xen's answer.
    pub const ENOBUFS: i32 = 105;

    /// The symbolic name of an errno, when it is one of the above.
    pub const fn name(e: i32) -> Option<&'static str> {
        Some(match e {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            ESRCH => "ESRCH",
            EINTR => "EINTR",
            EIO => "EIO",
            ENXIO => "ENXIO",
            E2BIG => "E2BIG",
            EBADF => "EBADF",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            ENODEV => "ENODEV",
            ENOTTY => "ENOTTY",
            EINVAL => "EINVAL",
            ENOSPC => "ENOSPC",
            ERANGE => "ERANGE",
            ENOSYS => "ENOSYS",
            EOPNOTSUPP => "EOPNOTSUPP",
            ENOBUFS => "ENOBUFS",
            _ => return None,
        })
    }
}

/// A device node a doorway opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Device {
    /// `/dev/xen/privcmd` (or `/proc/xen/privcmd` on old kernels).
    Privcmd,
    /// `/dev/xen/hypercall`, the locked hypercall buffers.
    HypercallBuffers,
}

/// The operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening a device node.
    Open(Device),
    /// Allocating a hypercall buffer.
    AllocBuffer,
    /// A domctl, by command number.
    Domctl(u32),
    /// A sysctl, by command number.
    Sysctl(u32),
    /// A `memory_op`, by command number.
    MemoryOp(u32),
    /// `mmuext_op`.
    MmuextOp,
    /// `mmu_update`.
    MmuUpdate,
    /// Mapping a foreign domain's pages, or using a page of such a mapping.
    MapForeign,
    /// Another hypercall, by number.
    Hypercall(u64),
    /// The hypercall-page doorway (bare PV/PVH domain).
    HypercallPage,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Open(Device::Privcmd) => f.write_str("opening /dev/xen/privcmd"),
            Op::Open(Device::HypercallBuffers) => f.write_str("opening /dev/xen/hypercall"),
            Op::AllocBuffer => f.write_str("allocating a hypercall buffer"),
            Op::Domctl(c) => match crate::abi::domctl::cmd::name(c) {
                Some(n) => write!(f, "domctl {n}"),
                None => write!(f, "domctl {c}"),
            },
            Op::Sysctl(c) => match crate::abi::sysctl::cmd::name(c) {
                Some(n) => write!(f, "sysctl {n}"),
                None => write!(f, "sysctl {c}"),
            },
            Op::MemoryOp(c) => match crate::abi::memory::cmd::name(c) {
                Some(n) => write!(f, "memory_op {n}"),
                None => write!(f, "memory_op {c}"),
            },
            Op::MmuextOp => f.write_str("mmuext_op"),
            Op::MmuUpdate => f.write_str("mmu_update"),
            Op::MapForeign => f.write_str("foreign mapping"),
            Op::Hypercall(n) => write!(f, "hypercall {n}"),
            Op::HypercallPage => f.write_str("hypercall page"),
        }
    }
}

/// What kind of failure an [`Error`] is, in the manner of `embedded-io`'s
/// `ErrorKind`: enough to decide what to do without reading errnos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such domain, vCPU, page or device (`ESRCH`, `ENOENT`).
    NotFound,
    /// Not privileged enough (`EPERM`, `EACCES`).
    PermissionDenied,
    /// An argument Xen refused (`EINVAL`, `E2BIG`, `ERANGE`, `ENOBUFS`).
    InvalidInput,
    /// Already exists (`EEXIST`).
    AlreadyExists,
    /// Not built into this Xen, kernel or doorway (`ENOSYS`, `EOPNOTSUPP`,
    /// `ENODEV`, `ENXIO`, `ENOTTY`).
    Unsupported,
    /// Out of memory (`ENOMEM`, `ENOSPC`).
    OutOfMemory,
    /// Busy or try again (`EBUSY`, `EAGAIN`, `EINTR`).
    Busy,
    /// A buffer Xen could not reach (`EFAULT`).
    BadAddress,
    /// Anything else.
    Other,
}

/// A failed operation: what was attempted and the errno it failed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    /// The operation.
    pub op: Op,
    /// The errno (positive).
    pub errno: i32,
    /// The domain the operation acted on, when the doorway knew it (see
    /// [`Error::on`]).
    pub domain: Option<crate::DomId>,
}

impl Error {
    /// An error of `op` with `errno` (its sign is ignored: Xen returns
    /// `-errno`).
    pub const fn new(op: Op, errno: i32) -> Self {
        Error {
            op,
            errno: errno.wrapping_abs(),
            domain: None,
        }
    }

    /// The same error, noting that the operation acted on domain `domid`
    /// (reserved ids such as `DOMID_SELF` are not noted).
    pub const fn on(self, domid: crate::DomId) -> Self {
        Error {
            domain: if domid < crate::abi::xen::DOMID_FIRST_RESERVED {
                Some(domid)
            } else {
                self.domain
            },
            ..self
        }
    }

    /// Whether Xen's security policy refused the operation: `EACCES` (a
    /// FLASK denial: the AVC refused a permission) or `EPERM` (the default
    /// XSM policy: only a privileged domain may) from a hypercall that XSM
    /// checks, a domctl, sysctl, memory, mmu, event-channel or grant-table
    /// operation, or a foreign mapping.
    pub const fn denied_by_policy(&self) -> bool {
        let checked = matches!(
            self.op,
            Op::Domctl(_)
                | Op::Sysctl(_)
                | Op::MemoryOp(_)
                | Op::MmuextOp
                | Op::MmuUpdate
                | Op::MapForeign
                | Op::Hypercall(_)
        );
        checked && matches!(self.errno, errno::EACCES | errno::EPERM)
    }

    /// The FLASK permission (`class:permission`, as Xen's policy and the
    /// AVC messages of `xl dmesg` name it) that Xen 4.17's FLASK module
    /// checks for this operation, where one operation has one.
    pub const fn flask_permission(&self) -> Option<&'static str> {
        crate::xsm::flask_permission(self.op)
    }

    /// The kind of failure.
    pub const fn kind(&self) -> ErrorKind {
        use errno::*;
        match self.errno {
            ESRCH | ENOENT => ErrorKind::NotFound,
            EPERM | EACCES => ErrorKind::PermissionDenied,
            EINVAL | E2BIG | ERANGE | ENOBUFS => ErrorKind::InvalidInput,
            EEXIST => ErrorKind::AlreadyExists,
            ENOSYS | EOPNOTSUPP | ENODEV | ENXIO | ENOTTY => ErrorKind::Unsupported,
            ENOMEM | ENOSPC => ErrorKind::OutOfMemory,
            EBUSY | EAGAIN | EINTR => ErrorKind::Busy,
            EFAULT => ErrorKind::BadAddress,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denied_by_policy() {
            write!(
                f,
                "denied by Xen's security policy (XSM/FLASK): {}",
                self.op
            )?;
            match (self.op, self.domain) {
                // domain 0 asks Xen to pick the new domain's id
                (Op::Domctl(crate::abi::domctl::cmd::CREATEDOMAIN), Some(0)) => {
                    f.write_str(" of a new domain")?
                }
                (_, Some(d)) => write!(f, " on domain {d}")?,
                _ => {}
            }
            if let Some(p) = self.flask_permission() {
                write!(f, " (needs FLASK permission {p})")?;
            }
            return if self.errno == errno::EPERM {
                f.write_str(
                    "; EPERM: without a FLASK policy, Xen lets only a privileged domain do this \
                     (in a driver domain, Linux's privcmd also refuses hypercalls unless \
                     xen-privcmd is loaded with unrestricted=1)",
                )
            } else {
                f.write_str("; `xl dmesg` shows the AVC denial")
            };
        }
        write!(f, "{} failed: ", self.op)?;
        match errno::name(self.errno) {
            Some(n) => write!(f, "{n} ({})", self.errno)?,
            None => write!(f, "errno {}", self.errno)?,
        }
        match (self.op, self.kind()) {
            (Op::Open(_), ErrorKind::NotFound) => f.write_str(
                "; no Xen here: this is not a Xen domain, or the xen_privcmd module is not loaded",
            ),
            (Op::Open(_), ErrorKind::PermissionDenied) => {
                f.write_str("; relocd must run as root in dom0 or a privileged driver domain")
            }
            _ => Ok(()),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_errnos() {
        let k = |e| Error::new(Op::Domctl(5), e).kind();
        assert_eq!(k(errno::ESRCH), ErrorKind::NotFound);
        assert_eq!(k(-errno::EPERM), ErrorKind::PermissionDenied);
        assert_eq!(k(errno::E2BIG), ErrorKind::InvalidInput);
        assert_eq!(k(errno::EOPNOTSUPP), ErrorKind::Unsupported);
        assert_eq!(k(errno::ENOMEM), ErrorKind::OutOfMemory);
        assert_eq!(k(errno::EAGAIN), ErrorKind::Busy);
        assert_eq!(k(errno::EFAULT), ErrorKind::BadAddress);
        assert_eq!(k(errno::ENOTTY), ErrorKind::Unsupported);
        assert_eq!(k(errno::EEXIST), ErrorKind::AlreadyExists);
        assert_eq!(k(errno::ENOBUFS), ErrorKind::InvalidInput);
        assert_eq!(k(errno::EIO), ErrorKind::Other);
        // Xen returns -errno; the sign is dropped.
        assert_eq!(Error::new(Op::MmuUpdate, -22).errno, 22);
    }

    #[test]
    fn messages_name_the_operation_and_errno() {
        let e = Error::new(
            Op::Domctl(crate::abi::domctl::cmd::SHADOW_OP),
            errno::EOPNOTSUPP,
        );
        assert_eq!(e.to_string(), "domctl shadow_op failed: EOPNOTSUPP (95)");
        let e = Error::new(Op::Sysctl(99), 200);
        assert_eq!(e.to_string(), "sysctl 99 failed: errno 200");
        let e = Error::new(Op::Open(Device::Privcmd), errno::ENOENT);
        assert!(
            e.to_string()
                .starts_with("opening /dev/xen/privcmd failed: ENOENT (2); no Xen here"),
            "{e}"
        );
        let e = Error::new(Op::MemoryOp(14), errno::ESRCH);
        assert_eq!(e.to_string(), "memory_op maximum_gpfn failed: ESRCH (3)");
    }

    #[test]
    fn a_policy_denial_names_operation_domain_and_permission() {
        use crate::abi::domctl::cmd;
        let e = Error::new(Op::Domctl(cmd::PAUSEDOMAIN), -errno::EACCES).on(7);
        assert!(e.denied_by_policy());
        assert_eq!(
            e.to_string(),
            "denied by Xen's security policy (XSM/FLASK): domctl pausedomain on domain 7 \
             (needs FLASK permission domain:pause); `xl dmesg` shows the AVC denial"
        );
        // the default policy's EPERM
        let e = Error::new(Op::MemoryOp(crate::abi::memory::cmd::POPULATE_PHYSMAP), 1).on(3);
        assert!(e.to_string().starts_with(
            "denied by Xen's security policy (XSM/FLASK): memory_op populate_physmap on domain 3 \
             (needs FLASK permission mmu:adjust); EPERM"
        ), "{e}");
        // no domain known, no permission known: still the policy's refusal
        let e = Error::new(Op::Domctl(cmd::GDBSX_GUESTMEMIO), errno::EACCES);
        assert_eq!(
            e.to_string(),
            "denied by Xen's security policy (XSM/FLASK): domctl gdbsx_guestmemio; `xl dmesg` shows the AVC denial"
        );
        // DOMID_SELF is not a domain to name
        assert_eq!(e.on(crate::abi::xen::DOMID_SELF).domain, None);
        // opening privcmd as a user is not Xen's policy
        let e = Error::new(Op::Open(Device::Privcmd), errno::EACCES);
        assert!(!e.denied_by_policy());
        assert!(
            e.to_string()
                .starts_with("opening /dev/xen/privcmd failed: EACCES"),
            "{e}"
        );
        // other errnos keep their form
        assert!(!Error::new(Op::MmuUpdate, errno::EINVAL).denied_by_policy());
    }

    #[test]
    fn the_fake_s_denials_carry_the_domain_acted_on() {
        use crate::fake::{FakeDomain, FakeXen};
        use crate::XenOps;
        let x = FakeXen::new();
        x.add_domain(FakeDomain::pv(7, 4, 1));
        x.fail_on(
            Op::Domctl(crate::abi::domctl::cmd::PAUSEDOMAIN),
            errno::EACCES,
        );
        let e = x.pause(7).unwrap_err();
        assert_eq!(e.domain, Some(7));
        assert!(
            e.to_string().contains("domctl pausedomain on domain 7"),
            "{e}"
        );
        x.fail_on(Op::MapForeign, errno::EACCES);
        let e = crate::Hypervisor::map_foreign(&x, 7, &[0], crate::Prot::Read).unwrap_err();
        assert!(
            e.to_string()
                .contains("foreign mapping on domain 7 (needs FLASK permission mmu:map_read"),
            "{e}"
        );
    }
}
