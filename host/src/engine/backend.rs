//! What the engine asks of a hypervisor: the [`Backend`] trait, Xen's
//! `save_ops`/`restore_ops` idea one level up.
//!
//! The engine runs one flow for each command (migrate, receive, save,
//! restore, resolve, start-up settling) and calls these hooks where the
//! hypervisor is involved. A backend holds nothing of the algorithm: it
//! finds domains, opens the core's [`SourceGuest`] on one, builds a
//! [`SinkGuest`] for an admitted guest, says what it can host, and acts on
//! a named domain when the journal or the operator says so.
//!
//! | hook | when | how often |
//! | --- | --- | --- |
//! | [`find`](Backend::find), [`check_source`](Backend::check_source) | migrate, save: before anything is touched | once a command |
//! | [`open_source`](Backend::open_source) | migrate, save: after the checks, before the journal's `prepared` | once a command |
//! | [`save_config`](Backend::save_config) | save: before the guest is touched | once |
//! | [`admit`](Backend::admit) | receive, restore: before anything is created | once |
//! | [`create_sink`](Backend::create_sink) | receive, restore: once admitted | once |
//! | [`saved`](Backend::saved), [`restored`](Backend::restored) | after the file is complete / the restored guest runs | once |
//! | [`settle`](Backend::settle) | start-up (journal), `relocd resolve`, daemon stop | once a domain |
//! | [`start_up`](Backend::start_up) | start-up, after the journal's settling | once |
//! | [`restore_sched`](Backend::restore_sched) | start-up (journal): a source session left throttled | once a domain |

use relocd_core::guest::{GuestType, SchedParams, SinkGuest, SourceGuest};
use relocd_core::protocol::RefuseReason;

use crate::api::{CommandError, DomainInfo, ErrorKind, SimCreateRequest};
use crate::units::format_mib;

/// A domain a command names, as the engine handles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// The backend's domain id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its UUID (all zeros: it has none).
    pub uuid: [u8; 16],
    /// Its memory in bytes.
    pub memory_bytes: u64,
}

/// A guest to be built here: by an incoming migration (from the peer's
/// admission request) or by a restore (from the file's configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGuest {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// PV or HVM-style.
    pub guest_type: GuestType,
    /// Its memory in bytes.
    pub memory_bytes: u64,
    /// Its vCPUs.
    pub vcpus: u32,
    /// Its configuration as libxl's JSON (without a trailing NUL): what the
    /// source sent with its admission request, or what the file carries.
    /// The backend recreates the devices it names ([`crate::devices`]),
    /// or refuses the guest; it never builds it without them.
    pub config: Option<Vec<u8>>,
}

pub use crate::session::Refusal;

/// The engine's wordings of a refusal (one for each cause, sizes in MiB).
impl Refusal {
    /// Not enough memory here for `name`.
    pub fn no_memory(name: &str, needed: u64, free: u64) -> Refusal {
        Refusal::new(
            RefuseReason::NoCapacity,
            format!(
                "not enough free memory for {name} (needs {}, has {})",
                format_mib(needed),
                format_mib(free)
            ),
        )
    }

    /// A domain called `name` exists here already.
    pub fn name_taken(name: &str) -> Refusal {
        Refusal::new(
            RefuseReason::NameTaken,
            format!("a domain called {name} exists already"),
        )
    }

    /// A device of `name` cannot be set up here: `what` names the device
    /// and the reason (`vif 0: bridge xenbr0 does not exist here`).
    pub fn device(name: &str, what: &str) -> Refusal {
        Refusal::new(RefuseReason::DeviceUnavailable, format!("{name}: {what}"))
    }

    /// `name` has devices this backend does not recreate.
    pub fn unsupported_devices(name: &str, devices: &[String], why: &str) -> Refusal {
        Refusal::new(
            RefuseReason::Unsupported,
            format!("{name} has devices {why}: {}", devices.join(", ")),
        )
    }

    /// The refusal as a local command's error (restore).
    pub fn into_command_error(self) -> CommandError {
        let kind = match self.reason {
            RefuseReason::NameTaken => ErrorKind::Exists,
            RefuseReason::Invalid => ErrorKind::BadRequest,
            RefuseReason::ShuttingDown => ErrorKind::ShuttingDown,
            _ => ErrorKind::Refused,
        };
        CommandError::new(kind, self.to_string())
    }
}

/// What a source guest is opened for: the checks differ (a save file
/// carries the guest's configuration for whoever restores it; a
/// migration sends it to a peer that must be able to recreate its
/// devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `relocd migrate`.
    Migrate,
    /// `relocd save`.
    Save,
}

/// What the engine asks [`Backend::settle`] to do to a named domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// A source guest whose session did not commit (or `resolve --resume`):
    /// it runs here again (a cancelled suspend on Xen), log-dirty off.
    Resume,
    /// A source guest whose commit was sent but not acknowledged: it stays
    /// stopped here until the operator decides.
    Hold,
    /// `resolve --discard`: the destination runs it; the copy here goes.
    Discard,
    /// An incoming guest whose commit was journaled: it runs.
    Start,
    /// An incoming guest that never committed: the half-built, never-run
    /// copy goes (a running domain of that name is left alone).
    DestroyIncoming,
}

/// What [`Backend::settle`] found and did, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Done as asked.
    Done,
    /// Nothing to do: the domain was already in the state asked for (or
    /// not one this action touches).
    Unchanged,
    /// There is no domain of that name.
    Gone,
}

/// A hypervisor as the engine drives it (module doc).
pub trait Backend: Send + Sync + 'static {
    /// The source guest of a migration or a save.
    type Source<'a>: SourceGuest<Error: std::fmt::Display>
    where
        Self: 'a;
    /// The guest an incoming migration or a restore builds.
    type Sink<'a>: SinkGuest<Error: std::fmt::Display>
    where
        Self: 'a;

    /// The backend's name (`sim`, `xen`).
    fn name(&self) -> &'static str;

    /// Every domain, in a stable order (the engine marks the in-doubt ones).
    fn list(&self) -> Result<Vec<DomainInfo>, CommandError>;

    /// The domain a command names: by name or by id, as the backend's own
    /// tool resolves them. [`ErrorKind::NotFound`] when there is none.
    fn find(&self, domain: &str) -> Result<Domain, CommandError>;

    /// Refuses a domain this backend cannot move or save for `purpose`
    /// (the control domain, a guest type or devices it does not handle),
    /// before anything is touched. The default allows every domain.
    fn check_source(&self, d: &Domain, purpose: Purpose) -> Result<(), CommandError> {
        let _ = (d, purpose);
        Ok(())
    }

    /// Opens the source guest of a migration or save of `d`. Nothing about
    /// the guest changes yet (no pause, no log-dirty).
    fn open_source(&self, d: &Domain) -> Result<Self::Source<'_>, CommandError>;

    /// The xl configuration (libxl JSON, NUL-terminated) a save file
    /// carries for `d`.
    fn save_config(&self, d: &Domain) -> Vec<u8>;

    /// Whether `g` could be built here now: its type, its name, the memory
    /// it needs. Creates nothing.
    fn admit(&self, g: &NewGuest) -> Result<(), Refusal>;

    /// Builds the empty, paused domain `g` is received or restored into.
    fn create_sink(&self, g: &NewGuest) -> Result<Self::Sink<'_>, Refusal>;

    /// A save of `d` is complete; `destroyed`: the guest is gone here
    /// (forget what the toolstack keeps of it).
    fn saved(&self, d: &Domain, destroyed: bool) {
        let _ = (d, destroyed);
    }

    /// A restored guest runs; `config` is the file's xl configuration
    /// (without its NUL), to keep where the backend's toolstack looks.
    fn restored(&self, g: &NewGuest, config: &[u8]) {
        let _ = (g, config);
    }

    /// Tidies what a killed daemon may have left outside any domain (Xen:
    /// the device backends of domains that are gone); runs once when the
    /// engine starts, after the journal's settling. The default does
    /// nothing.
    fn start_up(&self) {}

    /// Acts on the domain called `name` (the start-up settling of the
    /// journal, `relocd resolve`, the daemon's stop).
    fn settle(&self, name: &str, action: Settle) -> Result<Settled, CommandError>;

    /// Gives the domain called `name` back the scheduling parameters
    /// (weight, cap) a source session journaled before auto-converge
    /// throttled it: the start-up settling of a session a killed daemon
    /// left open. The default has no scheduler to set
    /// ([`Settled::Unchanged`]).
    fn restore_sched(&self, name: &str, params: SchedParams) -> Result<Settled, CommandError> {
        let _ = (name, params);
        Ok(Settled::Unchanged)
    }

    /// Creates a simulated guest (`relocd sim create`); only the sim
    /// backend has this.
    fn sim_create(&self, req: &SimCreateRequest) -> Result<DomainInfo, CommandError> {
        let _ = req;
        Err(CommandError::not_implemented(&format!(
            "sim create with the {} backend",
            self.name()
        )))
    }
}
