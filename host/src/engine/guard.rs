//! Wrappers that let the engine follow what a session does to its guest
//! and its connection, for every backend: a source guest's suspend is
//! marked (so a stopping daemon resumes what it stopped), and everything a
//! session touches stops dead once the engine "crashes"
//! ([`super::Engine::crash`]), as it would if the process died.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use relocd_core::guest::{
    GuestInfo, PageType, Pfn, RecordPoint, SchedParams, SinkGuest, SourceGuest,
};

use crate::journal::{Journal, JournalEntry, JournalSched};
use crate::session::{Conn, Link};

/// Set once the engine simulates its own death: from then on no guest
/// operation, journal write or socket I/O of its sessions has any effect.
pub(crate) type Crashed = Arc<AtomicBool>;

fn dead(c: &Crashed) -> bool {
    c.load(Ordering::SeqCst)
}

/// The names of the guests the engine's sessions have stopped and not yet
/// handed over, resumed or destroyed: a daemon that stops resumes them.
pub(crate) type Stopped = Arc<Mutex<BTreeSet<String>>>;

pub(crate) fn lock(s: &Stopped) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection (TCP or TLS) that fails every call once the engine crashed.
#[derive(Debug)]
pub(crate) struct GuardedLink {
    pub(crate) stream: Conn,
    pub(crate) crashed: Crashed,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the daemon is gone")
}

impl Read for GuardedLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if dead(&self.crashed) {
            return Err(gone());
        }
        self.stream.read(buf)
    }
}

impl Write for GuardedLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if dead(&self.crashed) {
            return Err(gone());
        }
        self.stream.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if dead(&self.crashed) {
            return Err(gone());
        }
        self.stream.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Link for GuardedLink {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(GuardedLink {
            stream: Link::try_clone(&self.stream)?,
            crashed: self.crashed.clone(),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        Link::set_read_timeout(&self.stream, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        Link::set_write_timeout(&self.stream, t)
    }
    fn shutdown(&self) {
        Link::shutdown(&self.stream);
    }
    fn close_write(&self) {
        Link::close_write(&self.stream);
    }
}

/// A guest call that failed: the backend's error, or the engine is gone.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Tracked<E> {
    /// The engine crashed ([`super::Engine::crash`]).
    Gone,
    /// The guest's own scheduling parameters could not be journaled, so
    /// it was not throttled.
    Journal,
    /// The backend's own error.
    Guest(E),
}

impl<E: fmt::Display> fmt::Display for Tracked<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tracked::Gone => f.write_str("the daemon is gone"),
            Tracked::Journal => {
                f.write_str("the guest's scheduling parameters could not be journaled")
            }
            Tracked::Guest(e) => e.fmt(f),
        }
    }
}

/// The source guest of a migration or save: its suspend is marked with
/// the engine, and it does nothing once the engine crashed.
pub(crate) struct TrackedSource<S> {
    pub(crate) inner: S,
    pub(crate) name: String,
    pub(crate) stopped: Stopped,
    pub(crate) crashed: Crashed,
    /// Whether this command stopped the guest (and so must restart it on
    /// a failure).
    pub(crate) suspended: bool,
    /// Where the guest's own scheduling parameters are journaled before
    /// the first throttle: the journal and the session's `prepared`
    /// record, which is written again with them.
    pub(crate) sched_journal: Option<(Arc<Journal>, JournalEntry)>,
}

impl<S: SourceGuest> TrackedSource<S> {
    pub(crate) fn new(inner: S, name: &str, stopped: Stopped, crashed: Crashed) -> Self {
        TrackedSource {
            inner,
            name: name.to_owned(),
            stopped,
            crashed,
            suspended: false,
            sched_journal: None,
        }
    }

    fn live(&self) -> Result<(), Tracked<S::Error>> {
        if dead(&self.crashed) {
            Err(Tracked::Gone)
        } else {
            Ok(())
        }
    }

    fn mark(&mut self) {
        // Marked first: a daemon stopping now resumes it.
        self.suspended = true;
        lock(&self.stopped).insert(self.name.clone());
    }

    fn unmark(&mut self) {
        self.suspended = false;
        lock(&self.stopped).remove(&self.name);
    }

    /// Forgets the mark without touching the guest (it is handed over, or
    /// in doubt).
    pub(crate) fn forget(&mut self) {
        self.unmark();
    }
}

impl<S: SourceGuest> SourceGuest for TrackedSource<S> {
    type Error = Tracked<S::Error>;

    fn info(&self) -> Result<GuestInfo, Self::Error> {
        self.live()?;
        self.inner.info().map_err(Tracked::Guest)
    }
    fn enable_logdirty(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.enable_logdirty().map_err(Tracked::Guest)
    }
    fn disable_logdirty(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.disable_logdirty().map_err(Tracked::Guest)
    }
    fn peek_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, Self::Error> {
        self.live()?;
        self.inner.peek_dirty(bitmap).map_err(Tracked::Guest)
    }
    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, Self::Error> {
        self.live()?;
        self.inner.clean_dirty(bitmap).map_err(Tracked::Guest)
    }
    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, Self::Error> {
        self.live()?;
        self.inner
            .read_pages(pfns, types, data)
            .map_err(Tracked::Guest)
    }
    fn lend_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        f: &mut relocd_core::guest::LendFn<'_>,
    ) -> Result<bool, Self::Error> {
        self.live()?;
        self.inner
            .lend_pages(pfns, types, f)
            .map_err(Tracked::Guest)
    }
    fn pause(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.mark();
        self.inner.pause().map_err(Tracked::Guest)
    }
    fn unpause(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.unpause().map_err(Tracked::Guest)?;
        self.unmark();
        Ok(())
    }
    fn suspend(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.mark();
        self.inner.suspend().map_err(Tracked::Guest)
    }
    fn resume(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.resume().map_err(Tracked::Guest)?;
        self.unmark();
        Ok(())
    }
    fn vcpu_context(&mut self, vcpu: u32, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.live()?;
        self.inner.vcpu_context(vcpu, buf).map_err(Tracked::Guest)
    }
    fn destroy(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.destroy().map_err(Tracked::Guest)?;
        self.unmark();
        Ok(())
    }
    fn stream_records(
        &mut self,
        at: RecordPoint,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.stream_records(at, out).map_err(Tracked::Guest)
    }
    fn sched_params(&mut self) -> Result<Option<SchedParams>, Self::Error> {
        self.live()?;
        self.inner.sched_params().map_err(Tracked::Guest)
    }
    fn throttle(&mut self, percent: u8) -> Result<bool, Self::Error> {
        self.live()?;
        if percent > 0 {
            // Durable before the guest is slowed: a daemon killed from
            // here on has the next one give the guest its own back.
            if let Some((journal, mut entry)) = self.sched_journal.take() {
                if let Some(own) = self.inner.sched_params().map_err(Tracked::Guest)? {
                    entry.sched = Some(JournalSched {
                        weight: own.weight,
                        cap: own.cap,
                    });
                    if let Err(e) = journal.record(&entry) {
                        tracing::error!(error = %e, "journal");
                        self.sched_journal = Some((journal, entry));
                        return Err(Tracked::Journal);
                    }
                }
            }
        }
        self.inner.throttle(percent).map_err(Tracked::Guest)
    }
}

/// The guest a destination or a restore builds; does nothing once the
/// engine crashed.
pub(crate) struct TrackedSink<S> {
    pub(crate) inner: S,
    pub(crate) crashed: Crashed,
    /// The `relocd status` entry its pages are counted in (an incoming
    /// session's; a restore reports its progress itself).
    pub(crate) status: Option<super::inflight::Handle>,
}

impl<S: SinkGuest> TrackedSink<S> {
    fn live(&self) -> Result<(), Tracked<S::Error>> {
        if dead(&self.crashed) {
            Err(Tracked::Gone)
        } else {
            Ok(())
        }
    }
}

impl<S: SinkGuest> SinkGuest for TrackedSink<S> {
    type Error = Tracked<S::Error>;

    fn populate(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.populate(pfns, types).map_err(Tracked::Guest)
    }
    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
    ) -> Result<(), Self::Error> {
        self.live()?;
        self.inner
            .write_pages(pfns, types, data)
            .map_err(Tracked::Guest)?;
        if let Some(s) = &self.status {
            s.wrote(pfns.len() as u64, data.len() as u64);
        }
        Ok(())
    }
    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<(), Self::Error> {
        self.live()?;
        self.inner
            .set_vcpu_context(vcpu, blob)
            .map_err(Tracked::Guest)
    }
    fn complete(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.complete().map_err(Tracked::Guest)?;
        if let Some(s) = &self.status {
            s.phase(crate::api::Phase::Committing);
        }
        Ok(())
    }
    fn unpause(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.unpause().map_err(Tracked::Guest)
    }
    fn destroy(&mut self) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.destroy().map_err(Tracked::Guest)
    }
    fn record(&mut self, rtype: u32, body: &[u8]) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.record(rtype, body).map_err(Tracked::Guest)
    }
    fn set_sched_params(&mut self, params: SchedParams) -> Result<(), Self::Error> {
        self.live()?;
        self.inner.set_sched_params(params).map_err(Tracked::Guest)
    }
}
