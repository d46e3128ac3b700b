//! The loop's steps over a [`SourceGuest`] and a [`SinkGuest`]: what a host
//! calls so that the order of guest calls documented on the traits holds.
//!
//! Each function is one step; the host keeps control of I/O and time in
//! between (it encodes each [`Batch`] as a `PAGE_DATA` record, sends it,
//! and reports it with [`Precopy::record_batch`]).

use super::{or_into, set_all, Decision, Error, Precopy, PrecopyConfig, PrecopyPolicy};
use crate::guest::{PageType, Pfn, SinkGuest, SourceGuest, PAGE_SIZE};
use crate::time::Instant;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::fmt;

/// A step failed in the pre-copy bookkeeping or in the guest backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveError<E> {
    /// The loop's own error (a caller mistake).
    Precopy(Error),
    /// The backend's error.
    Guest(E),
    /// The backend returned a batch inconsistent with its page types (data
    /// pages counted differently, or a buffer of the wrong size).
    BatchMismatch,
    /// A received batch's pages could not be had from their
    /// [`PageSource`] (the link failed while they were read).
    NoData,
}

impl<E> From<Error> for DriveError<E> {
    fn from(e: Error) -> Self {
        DriveError::Precopy(e)
    }
}

impl<E: fmt::Debug> fmt::Display for DriveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Precopy(e) => write!(f, "{e}"),
            DriveError::Guest(e) => write!(f, "guest backend: {e:?}"),
            DriveError::BatchMismatch => f.write_str("guest returned an inconsistent batch"),
            DriveError::NoData => f.write_str("the batch's pages did not arrive"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for DriveError<E> {}

/// Buffers for one batch, lent by the caller. The batch is bounded by the
/// shortest of them (`data` counts in pages) and by
/// [`super::MAX_BATCH_SIZE`].
#[derive(Debug)]
pub struct BatchBuf<'a> {
    /// Room for the pfns.
    pub pfns: &'a mut [Pfn],
    /// Room for their types.
    pub types: &'a mut [PageType],
    /// Room for the packed page contents.
    pub data: &'a mut [u8],
}

/// One batch read from the guest: the content of one `PAGE_DATA` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The pfns, ascending.
    pub pfns: &'a [Pfn],
    /// Their types.
    pub types: &'a [PageType],
    /// The packed contents of the pages that have data.
    pub data: &'a [u8],
}

impl Batch<'_> {
    /// Bytes of the `PAGE_DATA` record this batch becomes: record header,
    /// page-data header, pfn entries, page contents.
    pub fn record_len(&self) -> usize {
        16 + self.pfns.len() * 8 + self.data.len()
    }
}

/// One batch where its pages are: lent by the guest
/// ([`SourceGuest::lend_pages`]) or copied into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pages<'a> {
    /// The pfns, ascending.
    pub pfns: &'a [Pfn],
    /// Their types.
    pub types: &'a [PageType],
    /// The contents of the pages that have data, in order, as runs of
    /// whole pages.
    pub runs: &'a [&'a [u8]],
}

impl Pages<'_> {
    /// Bytes of page contents.
    pub fn data_len(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }
}

/// Whether `runs` are whole pages, as many as `types` says have data.
fn runs_match(types: &[PageType], runs: &[&[u8]]) -> bool {
    let with_data = types.iter().filter(|t| t.has_data()).count();
    runs.iter().all(|r| r.len() % PAGE_SIZE == 0)
        && runs.iter().map(|r| r.len() / PAGE_SIZE).sum::<usize>() == with_data
}

fn guest<T, E>(r: Result<T, E>) -> Result<T, DriveError<E>> {
    r.map_err(DriveError::Guest)
}

/// Starts a live migration: enables the dirty log, marks every pfn dirty
/// in `bitmap`, and returns the loop at round 1.
pub fn start_live<G: SourceGuest, P: PrecopyPolicy>(
    g: &mut G,
    bitmap: &mut [u64],
    config: PrecopyConfig,
    policy: P,
    now: Instant,
) -> Result<Precopy<P>, DriveError<G::Error>> {
    let info = guest(g.info())?;
    set_all(bitmap, info.p2m_size)?;
    guest(g.enable_logdirty())?;
    Ok(Precopy::live(info.p2m_size, config, policy, now))
}

/// Starts an offline migration: suspends the guest, marks every pfn dirty,
/// and returns the loop in its final round.
pub fn start_offline<G: SourceGuest, P: PrecopyPolicy>(
    g: &mut G,
    bitmap: &mut [u64],
    config: PrecopyConfig,
    policy: P,
    now: Instant,
) -> Result<Precopy<P>, DriveError<G::Error>> {
    let info = guest(g.info())?;
    set_all(bitmap, info.p2m_size)?;
    guest(g.suspend())?;
    Ok(Precopy::offline(info.p2m_size, config, policy, now))
}

/// Reads the next batch of the current round from the guest into `buf`.
/// `None`: the round is done (call [`end_live_round`] or
/// [`Precopy::finish`]).
pub fn read_batch<'b, G: SourceGuest, P: PrecopyPolicy>(
    pc: &mut Precopy<P>,
    g: &mut G,
    bitmap: &[u64],
    buf: BatchBuf<'b>,
) -> Result<Option<Batch<'b>>, DriveError<G::Error>> {
    let BatchBuf { pfns, types, data } = buf;
    let room = pfns.len().min(types.len()).min(data.len() / PAGE_SIZE);
    let n = pc.next_batch(bitmap, &mut pfns[..room])?;
    if n == 0 {
        return Ok(None);
    }
    let pfns: &'b [Pfn] = pfns;
    let pfns = &pfns[..n];
    let data = copy_pages(g, pfns, &mut types[..n], &mut data[..n * PAGE_SIZE])?;
    let types: &'b [PageType] = types;
    Ok(Some(Batch {
        pfns,
        types: &types[..n],
        data,
    }))
}

/// Copies a batch with [`SourceGuest::read_pages`] and checks the count:
/// the packed contents of the pages that have data.
fn copy_pages<'d, G: SourceGuest>(
    g: &mut G,
    pfns: &[Pfn],
    types: &mut [PageType],
    data: &'d mut [u8],
) -> Result<&'d [u8], DriveError<G::Error>> {
    let k = guest(g.read_pages(pfns, types, data))?;
    let with_data = types.iter().filter(|t| t.has_data()).count();
    if k != with_data {
        return Err(DriveError::BatchMismatch);
    }
    let data: &'d [u8] = data;
    data.get(..k.saturating_mul(PAGE_SIZE))
        .ok_or(DriveError::BatchMismatch)
}

/// Takes the next batch of the current round and hands it to `send` with
/// the pages where they are: lent by the guest, or, when it cannot lend
/// them, copied into `buf.data` with [`SourceGuest::read_pages`]. Returns
/// what `send` returned, or `None` when the round is done (call
/// [`end_live_round`] or [`Precopy::finish`]).
pub fn send_batch<G: SourceGuest, P: PrecopyPolicy, R>(
    pc: &mut Precopy<P>,
    g: &mut G,
    bitmap: &[u64],
    buf: BatchBuf<'_>,
    send: impl FnOnce(Pages<'_>) -> R,
) -> Result<Option<R>, DriveError<G::Error>> {
    let BatchBuf { pfns, types, data } = buf;
    let room = pfns.len().min(types.len()).min(data.len() / PAGE_SIZE);
    let n = pc.next_batch(bitmap, &mut pfns[..room])?;
    if n == 0 {
        return Ok(None);
    }
    let pfns = &pfns[..n];
    let types = &mut types[..n];
    let mut send = Some(send);
    let mut sent = None;
    let mut mismatch = false;
    let lent = guest(g.lend_pages(pfns, types, &mut |types, runs| {
        let Some(send) = send.take() else {
            return;
        };
        if types.len() != pfns.len() || !runs_match(types, runs) {
            mismatch = true;
            return;
        }
        sent = Some(send(Pages { pfns, types, runs }));
    }))?;
    if lent {
        return match sent {
            Some(r) if !mismatch => Ok(Some(r)),
            _ => Err(DriveError::BatchMismatch),
        };
    }
    // Not lent: `send` must not have been called.
    let Some(send) = send else {
        return Err(DriveError::BatchMismatch);
    };
    let runs = [copy_pages(g, pfns, types, &mut data[..n * PAGE_SIZE])?];
    let types: &[PageType] = types;
    Ok(Some(send(Pages {
        pfns,
        types,
        runs: &runs,
    })))
}

/// Ends a live round: collects the pages dirtied during it into `bitmap`
/// and returns the policy's decision.
pub fn end_live_round<G: SourceGuest, P: PrecopyPolicy>(
    pc: &mut Precopy<P>,
    g: &mut G,
    bitmap: &mut [u64],
    now: Instant,
) -> Result<Decision, DriveError<G::Error>> {
    let dirty = guest(g.clean_dirty(bitmap))?;
    Ok(pc.end_round(now, dirty)?)
}

/// After a `StopAndCopy` decision: suspends the guest, adds the pages
/// dirtied since the last round (read into `scratch`) to `bitmap`, and
/// starts the final round. Returns the number of pages it will send.
pub fn suspend_for_final<G: SourceGuest, P: PrecopyPolicy>(
    pc: &mut Precopy<P>,
    g: &mut G,
    bitmap: &mut [u64],
    scratch: &mut [u64],
    now: Instant,
) -> Result<u64, DriveError<G::Error>> {
    guest(g.suspend())?;
    guest(g.clean_dirty(scratch))?;
    let n = or_into(bitmap, scratch, pc.p2m_size())?;
    pc.begin_final(now, n)?;
    Ok(n)
}

/// Applies one received batch to the sink: populate, then write. `data`
/// must hold exactly the pages of `types` that have data.
pub fn apply_batch<S: SinkGuest>(
    sink: &mut S,
    pfns: &[Pfn],
    types: &[PageType],
    data: &[u8],
) -> Result<(), DriveError<S::Error>> {
    let with_data = types.iter().filter(|t| t.has_data()).count();
    if pfns.len() != types.len() || data.len() != with_data * PAGE_SIZE {
        return Err(DriveError::BatchMismatch);
    }
    guest(sink.populate(pfns, types))?;
    guest(sink.write_pages(pfns, types, data))
}

/// Where the pages of a received batch that have data come from: bytes
/// in memory, or a reader that puts them where they go (the link, read
/// straight into the guest's memory).
pub trait PageSource {
    /// Bytes it has left (whole pages).
    fn bytes_left(&self) -> usize;
    /// All of them, when they are in memory.
    fn as_slice(&self) -> Option<&[u8]>;
    /// Fills `runs` (whole pages) with its next pages, in order. `false`:
    /// they could not be had, and the batch fails.
    fn fill(&mut self, runs: &mut [&mut [u8]]) -> bool;
}

impl PageSource for &[u8] {
    fn bytes_left(&self) -> usize {
        self.len()
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }

    fn fill(&mut self, runs: &mut [&mut [u8]]) -> bool {
        for run in runs.iter_mut() {
            let Some((head, rest)) = self.split_at_checked(run.len()) else {
                return false;
            };
            run.copy_from_slice(head);
            *self = rest;
        }
        true
    }
}

/// Applies one received batch whose zero pages travelled as markers: of
/// the pages that have data, in order, those whose bit is set in `zeros`
/// (bit `k % 8` of byte `k / 8`) are zeros and the others come from
/// `data`. Populates the batch, then lets the sink clear the zero pages
/// itself ([`SinkGuest::zero_pages`]); the pages from `data` land where
/// the sink lends them ([`SinkGuest::lend_pages_mut`]) when `data` is a
/// reader, and otherwise with one [`SinkGuest::write_pages`]. A sink that
/// cannot clear pages gets the zeros written with the rest. Sizes are
/// checked before anything is written.
#[cfg(feature = "alloc")]
pub fn apply_elided_batch<S: SinkGuest>(
    sink: &mut S,
    pfns: &[Pfn],
    types: &[PageType],
    zeros: &[u8],
    data: &mut dyn PageSource,
    rebuild: &mut Vec<u8>,
) -> Result<(), DriveError<S::Error>> {
    if pfns.len() != types.len() {
        return Err(DriveError::BatchMismatch);
    }
    let with_data = types.iter().filter(|t| t.has_data()).count();
    let zero = |k: usize| zeros.get(k / 8).is_some_and(|b| b & (1 << (k % 8)) != 0);
    let nr_zero = (0..with_data).filter(|&k| zero(k)).count();
    if zeros.len() < with_data.div_ceil(8) || data.bytes_left() != (with_data - nr_zero) * PAGE_SIZE
    {
        return Err(DriveError::BatchMismatch);
    }
    guest(sink.populate(pfns, types))?;
    if nr_zero == 0 {
        return write_from(sink, pfns, types, &|_| false, data, rebuild);
    }
    // The pages with data, split by the markers.
    let (mut z_pfns, mut z_types) = (Vec::with_capacity(nr_zero), Vec::with_capacity(nr_zero));
    let rest = pfns.len() - nr_zero;
    let (mut d_pfns, mut d_types) = (Vec::with_capacity(rest), Vec::with_capacity(rest));
    let mut k = 0;
    for (&pfn, &t) in pfns.iter().zip(types) {
        if t.has_data() && zero(k) {
            z_pfns.push(pfn);
            z_types.push(t);
        } else {
            d_pfns.push(pfn);
            d_types.push(t);
        }
        k += usize::from(t.has_data());
    }
    if guest(sink.zero_pages(&z_pfns, &z_types))? {
        return write_from(sink, &d_pfns, &d_types, &|_| false, data, rebuild);
    }
    write_from(sink, pfns, types, &zero, data, rebuild)
}

/// Writes the pages of a populated batch that have data: the `k`-th of
/// them is zeros where `zero(k)`, else the next page of `data`. A reader's
/// pages go where the sink lends them; otherwise (or when the sink does
/// not lend) the batch is written with one `write_pages`, from `data`
/// itself when it is in memory and has all the pages.
#[cfg(feature = "alloc")]
fn write_from<S: SinkGuest>(
    sink: &mut S,
    pfns: &[Pfn],
    types: &[PageType],
    zero: &dyn Fn(usize) -> bool,
    data: &mut dyn PageSource,
    rebuild: &mut Vec<u8>,
) -> Result<(), DriveError<S::Error>> {
    let with_data = types.iter().filter(|t| t.has_data()).count();
    let whole = data.bytes_left() == with_data * PAGE_SIZE;
    if whole {
        if let Some(bytes) = data.as_slice() {
            return guest(sink.write_pages(pfns, types, bytes));
        }
    }
    if data.as_slice().is_none() {
        let mut filled = true;
        let lent = guest(sink.lend_pages_mut(pfns, types, &mut |runs| {
            filled = fill_pages(runs, zero, data);
            filled
        }))?;
        if lent {
            return if filled {
                Ok(())
            } else {
                Err(DriveError::NoData)
            };
        }
    }
    // Every byte of the buffer is written below: no need to clear it.
    rebuild.resize(with_data * PAGE_SIZE, 0);
    if !fill_pages(&mut [&mut rebuild[..]], zero, data) {
        return Err(DriveError::NoData);
    }
    guest(sink.write_pages(pfns, types, rebuild))
}

/// Fills the pages of `runs` (runs of whole pages), in order: the `k`-th
/// with zeros where `zero(k)`, the others from `data` in one call.
#[cfg(feature = "alloc")]
fn fill_pages(
    runs: &mut [&mut [u8]],
    zero: &dyn Fn(usize) -> bool,
    data: &mut dyn PageSource,
) -> bool {
    let pages: usize = runs.iter().map(|r| r.len() / PAGE_SIZE).sum();
    if !(0..pages).any(zero) {
        return data.fill(runs);
    }
    // The stretches of pages that come from `data`.
    let mut from_data: Vec<&mut [u8]> = Vec::new();
    let mut k = 0;
    for run in runs.iter_mut() {
        let mut rest: &mut [u8] = run;
        while !rest.is_empty() {
            let kind = zero(k);
            let n = (k..k + rest.len() / PAGE_SIZE)
                .take_while(|&i| zero(i) == kind)
                .count()
                .max(1);
            // A run that is not whole pages is the sink's mistake: refused.
            let Some((head, tail)) = core::mem::take(&mut rest).split_at_mut_checked(n * PAGE_SIZE)
            else {
                return false;
            };
            match kind {
                true => head.fill(0),
                false => from_data.push(head),
            }
            rest = tail;
            k += n;
        }
    }
    data.fill(&mut from_data)
}
