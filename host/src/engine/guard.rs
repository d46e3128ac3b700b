//! Wrappers that let the engine follow what a session does to its guest
//! and its connection: the source guest's pauses go to the backend's marks
//! (so a stopping daemon resumes what it paused), and everything a session
//! touches stops dead when the engine "crashes" ([`super::Engine::crash`]),
//! as it would if the process died.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relocd_core::guest::{GuestInfo, PageType, Pfn, SinkGuest, SourceGuest};

use crate::backend::sim::SimBackend;
use crate::backend::sim::{SimFault, SimSink, SimSource};
use crate::session::Link;

/// Set once the engine simulates its own death: from then on no guest
/// operation, journal write or socket I/O of its sessions has any effect.
pub(crate) type Crashed = Arc<AtomicBool>;

fn dead(c: &Crashed) -> bool {
    c.load(Ordering::SeqCst)
}

/// A TCP connection that fails every call once the engine crashed.
#[derive(Debug)]
pub(crate) struct GuardedLink {
    pub(crate) stream: TcpStream,
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
            stream: self.stream.try_clone()?,
            crashed: self.crashed.clone(),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(t)
    }
    fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
    fn close_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// The source guest of a migration: marks its suspend with the backend,
/// and does nothing once the engine crashed.
pub(crate) struct TrackedSource {
    pub(crate) inner: SimSource,
    pub(crate) backend: Arc<SimBackend>,
    pub(crate) crashed: Crashed,
}

impl TrackedSource {
    fn live(&self) -> Result<(), SimFault> {
        if dead(&self.crashed) {
            Err(SimFault::Other)
        } else {
            Ok(())
        }
    }
}

impl SourceGuest for TrackedSource {
    type Error = SimFault;

    fn info(&self) -> Result<GuestInfo, SimFault> {
        self.live()?;
        self.inner.info()
    }
    fn enable_logdirty(&mut self) -> Result<(), SimFault> {
        self.live()?;
        self.inner.enable_logdirty()
    }
    fn disable_logdirty(&mut self) -> Result<(), SimFault> {
        self.live()?;
        self.inner.disable_logdirty()
    }
    fn peek_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, SimFault> {
        self.live()?;
        self.inner.peek_dirty(bitmap)
    }
    fn clean_dirty(&mut self, bitmap: &mut [u64]) -> Result<u64, SimFault> {
        self.live()?;
        self.inner.clean_dirty(bitmap)
    }
    fn read_pages(
        &mut self,
        pfns: &[Pfn],
        types: &mut [PageType],
        data: &mut [u8],
    ) -> Result<usize, SimFault> {
        self.live()?;
        self.inner.read_pages(pfns, types, data)
    }
    fn pause(&mut self) -> Result<(), SimFault> {
        self.suspend()
    }
    fn unpause(&mut self) -> Result<(), SimFault> {
        self.resume()
    }
    fn suspend(&mut self) -> Result<(), SimFault> {
        self.live()?;
        // Marked first: a daemon stopping now resumes it.
        self.backend
            .mark_paused_by_migration(self.inner.guest().domid());
        self.inner.suspend()
    }
    fn resume(&mut self) -> Result<(), SimFault> {
        self.live()?;
        self.inner.resume()?;
        self.backend.clear(self.inner.guest().domid());
        Ok(())
    }
    fn vcpu_context(&mut self, vcpu: u32, buf: &mut [u8]) -> Result<usize, SimFault> {
        self.live()?;
        self.inner.vcpu_context(vcpu, buf)
    }
    fn destroy(&mut self) -> Result<(), SimFault> {
        self.live()?;
        let domid = self.inner.guest().domid();
        self.inner.destroy()?;
        self.backend.clear(domid);
        Ok(())
    }
}

/// The guest a destination builds; does nothing once the engine crashed.
pub(crate) struct TrackedSink {
    pub(crate) inner: SimSink,
    pub(crate) crashed: Crashed,
}

impl TrackedSink {
    fn live(&self) -> Result<(), SimFault> {
        if dead(&self.crashed) {
            Err(SimFault::Other)
        } else {
            Ok(())
        }
    }
}

impl SinkGuest for TrackedSink {
    type Error = SimFault;

    fn populate(&mut self, pfns: &[Pfn], types: &[PageType]) -> Result<(), SimFault> {
        self.live()?;
        self.inner.populate(pfns, types)
    }
    fn write_pages(
        &mut self,
        pfns: &[Pfn],
        types: &[PageType],
        data: &[u8],
    ) -> Result<(), SimFault> {
        self.live()?;
        self.inner.write_pages(pfns, types, data)
    }
    fn set_vcpu_context(&mut self, vcpu: u32, blob: &[u8]) -> Result<(), SimFault> {
        self.live()?;
        self.inner.set_vcpu_context(vcpu, blob)
    }
    fn complete(&mut self) -> Result<(), SimFault> {
        self.live()?;
        self.inner.complete()
    }
    fn unpause(&mut self) -> Result<(), SimFault> {
        self.live()?;
        self.inner.unpause()
    }
    fn destroy(&mut self) -> Result<(), SimFault> {
        self.live()?;
        self.inner.destroy()
    }
}
