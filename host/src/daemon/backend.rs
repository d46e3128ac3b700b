//! What the daemon drives: the hypervisor [`Backend`] (what domains exist)
//! and the long-running [`Operations`] (migrate, save, restore, resolve).
//!
//! Both are trait objects the daemon holds; the management socket turns each
//! [`Request`](super::control::Request) into one call. Every method has a
//! default that answers [`ErrorKind::NotImplemented`](super::control::ErrorKind::NotImplemented), so a backend or an
//! engine implements only what it can do and the CLI gets a typed error for
//! the rest, never a hang.

use crate::api::{
    CommandError, DomainInfo, MigrateRequest, ProgressSink, ResolveRequest, RestoreRequest,
    SaveRequest, SimCreateRequest, TransferSummary,
};

/// The hypervisor, as the daemon sees it. Implemented by the simulated
/// hypervisor (`sim`) and, later, by Xen.
pub trait Backend: Send + Sync {
    /// The backend's name (`sim`, `xen`), reported by `Ping`.
    fn name(&self) -> &str;

    /// Every domain, in a stable order. A domain whose migration outcome is
    /// unknown here is reported as
    /// [`DomainState::InDoubt`](super::control::DomainState::InDoubt).
    fn list(&self) -> Vec<DomainInfo>;

    /// Creates a simulated guest (`relocd sim create`). Only the sim backend
    /// has this.
    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        let _ = req;
        Err(CommandError::not_implemented(&format!(
            "sim create with the {} backend",
            self.name()
        )))
    }

    /// The daemon is stopping: resume every guest this backend paused for a
    /// migration that has not passed its point of no return, so no guest is
    /// left paused. Called once, after the listeners stopped and the
    /// sessions ended or timed out.
    fn shutdown(&self) {}
}

/// A backend with no domains: the daemon's frame, before a hypervisor is
/// plugged in.
#[derive(Clone, Debug)]
pub struct EmptyBackend {
    name: String,
}

impl EmptyBackend {
    /// An empty backend reporting `name`.
    pub fn new(name: &str) -> EmptyBackend {
        EmptyBackend {
            name: name.to_owned(),
        }
    }
}

impl Backend for EmptyBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn list(&self) -> Vec<DomainInfo> {
        Vec::new()
    }
}

/// The long-running commands. The migration engine implements this over a
/// [`Backend`], the [`Journal`](super::journal::Journal) and the core's
/// protocol state machines.
pub trait Operations: Send + Sync {
    /// Moves a domain to another host (`relocd migrate`).
    fn migrate(
        &self,
        req: &MigrateRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let _ = (req, progress);
        Err(CommandError::not_implemented("migrate"))
    }

    /// Writes a domain to a file (`relocd save`).
    fn save(
        &self,
        req: &SaveRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<TransferSummary, CommandError> {
        let _ = (req, progress);
        Err(CommandError::not_implemented("save"))
    }

    /// Starts a domain from a file (`relocd restore`).
    fn restore(
        &self,
        req: &RestoreRequest,
        progress: &mut dyn ProgressSink,
    ) -> Result<DomainInfo, CommandError> {
        let _ = (req, progress);
        Err(CommandError::not_implemented("restore"))
    }

    /// Settles an in-doubt domain (`relocd resolve`).
    fn resolve(&self, req: &ResolveRequest) -> Result<(), CommandError> {
        let _ = req;
        Err(CommandError::not_implemented("resolve"))
    }

    /// The daemon is stopping: abort commands that have not passed their
    /// point of no return. Called before [`Backend::shutdown`].
    fn shutdown(&self) {}
}

/// No long-running commands: each answers "not implemented yet".
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOperations;

impl Operations for NoOperations {}
