//! A xenstore client that speaks the wire protocol itself (no libxenstore).
//!
//! Every message, request or reply, is a 16-byte little-endian header
//! followed by `len` payload bytes:
//!
//! ```text
//!  0        4        8        12       16
//!  +--------+--------+--------+--------+---------------------------+
//!  | type   | req_id | tx_id  | len    | payload (len <= 4096)     |
//!  +--------+--------+--------+--------+---------------------------+
//! ```
//!
//! A reply carries the request's type and `req_id`, or type `ERROR` with
//! an errno name (`"ENOENT\0"`) as its payload. Paths are sent with a
//! trailing NUL; `READ` replies with the raw value, `DIRECTORY` with the
//! children's names, each NUL-terminated; `WRITE` sends `path\0value` and
//! gets `"OK\0"`.
//!
//! [`Header`] and the payload helpers are pure; [`Xenstore`] drives any
//! byte stream ([`Read`] + [`Write`]): xenstored's Unix socket
//! ([`SOCKET_PATH`]) or the kernel's `/dev/xen/xenbus` ([`XENBUS_PATH`]),
//! opened by [`Xenstore::open`]. Replies longer than [`PAYLOAD_MAX`] are
//! refused before anything is allocated for them.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

/// xenstored's socket in dom0 (`/var/run` is a link to `/run` on Linux).
pub const SOCKET_PATH: &str = "/run/xenstored/socket";
/// The same, under its historical name.
pub const SOCKET_PATH_VAR: &str = "/var/run/xenstored/socket";
/// The kernel's xenbus device (talks to xenstored over the shared ring).
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";

/// `XENSTORE_PAYLOAD_MAX`: the longest payload either side may send.
pub const PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`: the longest absolute path xenstored accepts.
pub const ABS_PATH_MAX: usize = 3072;

/// The header's byte ranges.
mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const REQ_ID: Range<usize> = 4..8;
    pub const TX_ID: Range<usize> = 8..12;
    pub const LEN: Range<usize> = 12..16;
}

/// Bytes in a message header.
pub const HEADER_LEN: usize = field::LEN.end;
const _: () = assert!(HEADER_LEN == 16);

/// A message type (`enum xsd_sockmsg_type`); open, so a reply of a type
/// this client does not know is still reported faithfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// `XS_DIRECTORY` (1)
    Directory,
    /// `XS_READ` (2)
    Read,
    /// `XS_WATCH_EVENT` (15): a watch fired; not a reply.
    WatchEvent,
    /// `XS_ERROR` (16): the payload names the errno.
    Error,
    /// `XS_WRITE` (11)
    Write,
    /// `XS_INTRODUCE` (8)
    Introduce,
    /// `XS_RELEASE` (9)
    Release,
    /// `XS_MKDIR` (12)
    Mkdir,
    /// `XS_RM` (13)
    Rm,
    /// `XS_SET_PERMS` (14)
    SetPerms,
    /// `XS_RESUME` (18): the domain was resumed after a cancelled suspend.
    Resume,
    /// Any other type.
    Unknown(u32),
}

impl From<u32> for MsgType {
    fn from(v: u32) -> Self {
        match v {
            1 => MsgType::Directory,
            2 => MsgType::Read,
            11 => MsgType::Write,
            8 => MsgType::Introduce,
            9 => MsgType::Release,
            12 => MsgType::Mkdir,
            13 => MsgType::Rm,
            14 => MsgType::SetPerms,
            18 => MsgType::Resume,
            15 => MsgType::WatchEvent,
            16 => MsgType::Error,
            other => MsgType::Unknown(other),
        }
    }
}

impl From<MsgType> for u32 {
    fn from(t: MsgType) -> u32 {
        match t {
            MsgType::Directory => 1,
            MsgType::Read => 2,
            MsgType::Write => 11,
            MsgType::Introduce => 8,
            MsgType::Release => 9,
            MsgType::Mkdir => 12,
            MsgType::Rm => 13,
            MsgType::SetPerms => 14,
            MsgType::Resume => 18,
            MsgType::WatchEvent => 15,
            MsgType::Error => 16,
            MsgType::Unknown(other) => other,
        }
    }
}

/// A message header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message type.
    pub ty: MsgType,
    /// Echoed by xenstored in the reply.
    pub req_id: u32,
    /// Transaction id (0: none).
    pub tx_id: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

fn le_u32(b: &[u8; HEADER_LEN], r: core::ops::Range<usize>) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[r]);
    u32::from_le_bytes(w)
}

impl Header {
    /// Decodes a header; refuses a payload length above [`PAYLOAD_MAX`].
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
        let h = Header {
            ty: MsgType::from(le_u32(b, field::TYPE)),
            req_id: le_u32(b, field::REQ_ID),
            tx_id: le_u32(b, field::TX_ID),
            len: le_u32(b, field::LEN),
        };
        if h.len as usize > PAYLOAD_MAX {
            return Err(ProtocolError::TooLong(h.len));
        }
        Ok(h)
    }

    /// Encodes the header.
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[field::TYPE].copy_from_slice(&u32::from(self.ty).to_le_bytes());
        b[field::REQ_ID].copy_from_slice(&self.req_id.to_le_bytes());
        b[field::TX_ID].copy_from_slice(&self.tx_id.to_le_bytes());
        b[field::LEN].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// What xenstored's `ERROR` reply names (the errno strings of
/// `xsd_errors`); open, the unknown ones keep their text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreErrno {
    /// `ENOENT`: no such node.
    NoEntry,
    /// `EACCES`: permission denied.
    Access,
    /// `EINVAL`: a malformed request.
    Invalid,
    /// `EEXIST`
    Exists,
    /// `E2BIG`: the request or its answer is too big.
    TooBig,
    /// `EAGAIN`: a transaction must be retried.
    Again,
    /// `ENOSPC`: quota exceeded.
    NoSpace,
    /// `ENOSYS`: not supported.
    NotSupported,
    /// Another name, up to 15 bytes of it.
    Other([u8; 15], u8),
}

impl StoreErrno {
    /// Reads the payload of an `ERROR` reply (`"ENOENT\0"`).
    pub fn parse(payload: &[u8]) -> StoreErrno {
        let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
        match name {
            b"ENOENT" => StoreErrno::NoEntry,
            b"EACCES" => StoreErrno::Access,
            b"EINVAL" => StoreErrno::Invalid,
            b"EEXIST" => StoreErrno::Exists,
            b"E2BIG" => StoreErrno::TooBig,
            b"EAGAIN" => StoreErrno::Again,
            b"ENOSPC" => StoreErrno::NoSpace,
            b"ENOSYS" => StoreErrno::NotSupported,
            other => {
                let mut b = [0u8; 15];
                let n = other.len().min(b.len());
                b[..n].copy_from_slice(&other[..n]);
                StoreErrno::Other(b, n as u8)
            }
        }
    }

    /// The errno's name as xenstored sent it.
    pub fn name(&self) -> &str {
        match self {
            StoreErrno::NoEntry => "ENOENT",
            StoreErrno::Access => "EACCES",
            StoreErrno::Invalid => "EINVAL",
            StoreErrno::Exists => "EEXIST",
            StoreErrno::TooBig => "E2BIG",
            StoreErrno::Again => "EAGAIN",
            StoreErrno::NoSpace => "ENOSPC",
            StoreErrno::NotSupported => "ENOSYS",
            StoreErrno::Other(b, n) => {
                let b = b.get(..usize::from(*n)).unwrap_or(&[]);
                std::str::from_utf8(b).unwrap_or("(not UTF-8)")
            }
        }
    }
}

impl fmt::Debug for StoreErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreErrno({})", self.name())
    }
}

impl fmt::Display for StoreErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The other side broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A reply announced more than [`PAYLOAD_MAX`] bytes.
    #[error("reply of {0} bytes (more than {PAYLOAD_MAX})")]
    TooLong(u32),
    /// A reply to another request (`req_id`).
    #[error("reply to request {got}, expected {want}")]
    WrongRequest {
        /// The id sent.
        want: u32,
        /// The id in the reply.
        got: u32,
    },
    /// A reply of another type than the request's.
    #[error("reply of type {got}, expected {want}")]
    WrongType {
        /// The request's type.
        want: u32,
        /// The reply's.
        got: u32,
    },
    /// A WRITE answered with something other than `OK`.
    #[error("WRITE answered without OK")]
    NotOk,
    /// Too many watch events before the reply.
    #[error("too many watch events before the reply")]
    TooManyEvents,
}

/// What a domain may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing (`n`).
    None,
    /// Read (`r`).
    Read,
    /// Write (`w`).
    Write,
    /// Read and write (`b`).
    Both,
}

impl Access {
    fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }
}

/// One entry of a node's permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub domid: u16,
    /// What it may do (for the first entry: what everyone else may do).
    pub access: Access,
}

/// A xenstore request failed.
#[derive(Debug, thiserror::Error)]
pub enum XenstoreError {
    /// Neither xenstored's socket nor the xenbus device could be opened.
    #[error("no xenstore here ({SOCKET_PATH}: {socket}; {XENBUS_PATH}: {xenbus})")]
    Unavailable {
        /// Why the socket could not be opened.
        socket: io::Error,
        /// Why the device could not be opened.
        #[source]
        xenbus: io::Error,
    },
    /// The path or value does not fit one message, or holds a NUL.
    #[error("bad path or value for xenstore: {0}")]
    BadRequest(&'static str),
    /// xenstored answered with an error.
    #[error("xenstore {op} {path}: {errno}{}", store_hint(*errno))]
    Store {
        /// The request (`READ`, `DIRECTORY`, `WRITE`).
        op: &'static str,
        /// Its path.
        path: String,
        /// The errno xenstored named.
        errno: StoreErrno,
    },
    /// The reply broke the protocol.
    #[error("xenstore protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// Reading or writing the connection failed.
    #[error("xenstore connection: {0}")]
    Io(#[from] io::Error),
}

/// What an errno of xenstored's means for relocd.
fn store_hint(errno: StoreErrno) -> &'static str {
    match errno {
        StoreErrno::Access => {
            " (denied by xenstored's permissions: outside dom0, relocd's domain must be \
             privileged in xenstored, e.g. C xenstored's --priv-domid; see docs/driver-domain.md)"
        }
        _ => "",
    }
}

impl XenstoreError {
    /// The errno xenstored named, when it answered with one.
    pub fn store_errno(&self) -> Option<StoreErrno> {
        match self {
            XenstoreError::Store { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Watch events skipped while waiting for one reply, at most.
const MAX_EVENTS_SKIPPED: usize = 64;

/// A byte stream to xenstored.
pub trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

/// A xenstore connection: one request at a time, no transactions.
pub struct Xenstore<T: Transport> {
    t: T,
    next_req: u32,
    via: String,
}

/// Names the xenstore to use instead of the search of [`Xenstore::open`]:
/// a Unix socket's path, or a device (`/dev/xen/xenbus`).
pub const XENSTORE_ENV: &str = "RELOCD_XENSTORE";

impl Xenstore<Box<dyn Transport>> {
    /// Connects to xenstored's socket when present, else opens
    /// `/dev/xen/xenbus`; `RELOCD_XENSTORE=PATH` picks one.
    pub fn open() -> Result<Self, XenstoreError> {
        use std::os::unix::net::UnixStream;
        if let Some(path) = std::env::var_os(XENSTORE_ENV) {
            let path = std::path::PathBuf::from(path);
            let via = path.display().to_string();
            return match UnixStream::connect(&path) {
                Ok(s) => Ok(Xenstore::new(Box::new(s) as Box<dyn Transport>).via(&via)),
                Err(socket) => match open_device(&path) {
                    Ok(f) => Ok(Xenstore::new(Box::new(f) as Box<dyn Transport>).via(&via)),
                    Err(xenbus) => Err(XenstoreError::Unavailable { socket, xenbus }),
                },
            };
        }
        let socket = match UnixStream::connect(SOCKET_PATH) {
            Ok(s) => return Ok(Xenstore::new(Box::new(s) as Box<dyn Transport>).via(SOCKET_PATH)),
            Err(e) => match UnixStream::connect(SOCKET_PATH_VAR) {
                Ok(s) => {
                    return Ok(Xenstore::new(Box::new(s) as Box<dyn Transport>).via(SOCKET_PATH_VAR))
                }
                Err(_) => e,
            },
        };
        match open_device(Path::new(XENBUS_PATH)) {
            Ok(f) => Ok(Xenstore::new(Box::new(f) as Box<dyn Transport>).via(XENBUS_PATH)),
            Err(xenbus) => Err(XenstoreError::Unavailable { socket, xenbus }),
        }
    }
}

fn open_device(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

impl<T: Transport> Xenstore<T> {
    /// A client over an open byte stream.
    pub fn new(t: T) -> Self {
        Xenstore {
            t,
            next_req: 1,
            via: "a caller's stream".to_owned(),
        }
    }

    fn via(mut self, path: &str) -> Self {
        path.clone_into(&mut self.via);
        self
    }

    /// Where the connection goes ([`SOCKET_PATH`], [`XENBUS_PATH`], ...).
    pub fn via_path(&self) -> &str {
        &self.via
    }

    /// The value at `path`.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, XenstoreError> {
        let p = path_payload(path)?;
        self.request(MsgType::Read, "READ", path, &p)
    }

    /// The value at `path` as text (invalid UTF-8 replaced).
    pub fn read_string(&mut self, path: &str) -> Result<String, XenstoreError> {
        Ok(String::from_utf8_lossy(&self.read(path)?).into_owned())
    }

    /// The names of `path`'s children.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, XenstoreError> {
        let p = path_payload(path)?;
        let reply = self.request(MsgType::Directory, "DIRECTORY", path, &p)?;
        Ok(split_names(&reply))
    }

    /// Sets `path` to `value` (creating it).
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XenstoreError> {
        let mut p = path_payload(path)?;
        if p.len() + value.len() > PAYLOAD_MAX {
            return Err(XenstoreError::BadRequest("value longer than a message"));
        }
        p.extend_from_slice(value);
        let reply = self.request(MsgType::Write, "WRITE", path, &p)?;
        if reply.split(|&b| b == 0).next() != Some(b"OK") {
            return Err(ProtocolError::NotOk.into());
        }
        Ok(())
    }

    /// Removes `path` and everything under it; a path that is not there is
    /// not an error.
    pub fn rm(&mut self, path: &str) -> Result<(), XenstoreError> {
        let p = path_payload(path)?;
        match self.request(MsgType::Rm, "RM", path, &p) {
            Err(e) if e.store_errno() == Some(StoreErrno::NoEntry) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Creates `path` (and its parents) with an empty value; an existing
    /// node is left alone.
    pub fn mkdir(&mut self, path: &str) -> Result<(), XenstoreError> {
        let p = path_payload(path)?;
        self.request(MsgType::Mkdir, "MKDIR", path, &p).map(|_| ())
    }

    /// Sets the permissions of `path`: `perms[0]` is the owner (who may
    /// do anything) and what everyone else may do; the others grant
    /// single domains access (xenstore's `n`/`r`/`w`/`b` letters).
    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), XenstoreError> {
        if perms.is_empty() {
            return Err(XenstoreError::BadRequest("no permissions"));
        }
        let mut p = path_payload(path)?;
        for perm in perms {
            p.push(perm.access.letter());
            p.extend_from_slice(perm.domid.to_string().as_bytes());
            p.push(0);
        }
        if p.len() > PAYLOAD_MAX {
            return Err(XenstoreError::BadRequest(
                "permissions longer than a message",
            ));
        }
        self.request(MsgType::SetPerms, "SET_PERMS", path, &p)
            .map(|_| ())
    }

    /// Introduces domain `domid` to xenstored: its store ring is machine
    /// frame `mfn`, its end of the store event channel `port`.
    pub fn introduce(&mut self, domid: u16, mfn: u64, port: u32) -> Result<(), XenstoreError> {
        let what = domid.to_string();
        let p = format!("{domid}\0{mfn}\0{port}\0").into_bytes();
        self.request(MsgType::Introduce, "INTRODUCE", &what, &p)
            .map(|_| ())
    }

    /// Tells xenstored to forget domain `domid` (after it was destroyed).
    pub fn release(&mut self, domid: u16) -> Result<(), XenstoreError> {
        let p = path_payload(&domid.to_string())?;
        self.request(MsgType::Release, "RELEASE", &domid.to_string(), &p)
            .map(|_| ())
    }

    /// Tells xenstored that domain `domid` runs again after a cancelled
    /// suspend (`XS_RESUME`), so that its next shutdown is reported again.
    pub fn resume_domain(&mut self, domid: u16) -> Result<(), XenstoreError> {
        let p = path_payload(&domid.to_string())?;
        self.request(MsgType::Resume, "RESUME", &domid.to_string(), &p)
            .map(|_| ())
    }

    fn request(
        &mut self,
        ty: MsgType,
        op: &'static str,
        path: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, XenstoreError> {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l as usize <= PAYLOAD_MAX)
            .ok_or(XenstoreError::BadRequest("request longer than a message"))?;
        let h = Header {
            ty,
            req_id,
            tx_id: 0,
            len,
        };
        // One write a message: the xenbus device takes whole messages best.
        let mut msg = Vec::with_capacity(HEADER_LEN + payload.len());
        msg.extend_from_slice(&h.emit());
        msg.extend_from_slice(payload);
        self.t.write_all(&msg)?;
        self.t.flush()?;
        for _ in 0..MAX_EVENTS_SKIPPED {
            let mut hb = [0u8; HEADER_LEN];
            self.t.read_exact(&mut hb)?;
            let r = Header::parse(&hb)?;
            let mut body = vec![0u8; r.len as usize];
            self.t.read_exact(&mut body)?;
            if r.ty == MsgType::WatchEvent {
                continue;
            }
            if r.req_id != req_id {
                return Err(ProtocolError::WrongRequest {
                    want: req_id,
                    got: r.req_id,
                }
                .into());
            }
            return match r.ty {
                MsgType::Error => Err(XenstoreError::Store {
                    op,
                    path: path.to_owned(),
                    errno: StoreErrno::parse(&body),
                }),
                t if t == ty => Ok(body),
                t => Err(ProtocolError::WrongType {
                    want: ty.into(),
                    got: t.into(),
                }
                .into()),
            };
        }
        Err(ProtocolError::TooManyEvents.into())
    }
}

/// `path` with its trailing NUL, checked.
fn path_payload(path: &str) -> Result<Vec<u8>, XenstoreError> {
    if path.is_empty() || path.len() > ABS_PATH_MAX {
        return Err(XenstoreError::BadRequest("path empty or too long"));
    }
    if path.as_bytes().contains(&0) {
        return Err(XenstoreError::BadRequest("NUL in path"));
    }
    let mut p = Vec::with_capacity(path.len() + 1);
    p.extend_from_slice(path.as_bytes());
    p.push(0);
    Ok(p)
}

/// The names of a DIRECTORY reply (`a\0b\0`).
fn split_names(reply: &[u8]) -> Vec<String> {
    reply
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory xenstored: answers READ, DIRECTORY and WRITE from a
    //! map, over a [`super::Transport`].
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// The store's contents, shared with the test.
    pub type Store = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

    /// The fake's end of the connection.
    pub struct FakeXenstored {
        pub store: Store,
        inbuf: Vec<u8>,
        out: std::collections::VecDeque<u8>,
        /// Replies to the next requests are replaced by these raw bytes.
        pub canned: Vec<Vec<u8>>,
        /// Sends a watch event before each reply.
        pub events_first: bool,
    }

    impl FakeXenstored {
        pub fn new(entries: &[(&str, &str)]) -> Self {
            let store = entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            FakeXenstored {
                store: Arc::new(Mutex::new(store)),
                inbuf: Vec::new(),
                out: Default::default(),
                canned: Vec::new(),
                events_first: false,
            }
        }

        fn reply(&mut self, ty: MsgType, req_id: u32, body: &[u8]) {
            let h = Header {
                ty,
                req_id,
                tx_id: 0,
                len: body.len() as u32,
            };
            self.out.extend(h.emit());
            self.out.extend(body);
        }

        fn serve(&mut self) {
            while self.inbuf.len() >= HEADER_LEN {
                let hb: [u8; HEADER_LEN] = self.inbuf[..HEADER_LEN].try_into().unwrap();
                let h = Header::parse(&hb).unwrap();
                let end = HEADER_LEN + h.len as usize;
                if self.inbuf.len() < end {
                    return;
                }
                let body: Vec<u8> = self.inbuf.drain(..end).skip(HEADER_LEN).collect();
                if !self.canned.is_empty() {
                    let raw = self.canned.remove(0);
                    self.out.extend(raw);
                    continue;
                }
                if self.events_first {
                    self.reply(MsgType::WatchEvent, 0, b"/x\0tok\0");
                }
                let mut parts = body.splitn(2, |&b| b == 0);
                let path = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
                let rest = parts.next().unwrap_or(&[]).to_vec();
                let store = self.store.clone();
                let mut store = store.lock().unwrap();
                match h.ty {
                    MsgType::Read => match store.get(&path) {
                        Some(v) => {
                            let v = v.clone();
                            self.reply(MsgType::Read, h.req_id, &v)
                        }
                        None => self.reply(MsgType::Error, h.req_id, b"ENOENT\0"),
                    },
                    MsgType::Directory => {
                        let prefix = format!("{path}/");
                        let mut names: Vec<&str> = store
                            .keys()
                            .filter_map(|k| k.strip_prefix(&prefix))
                            .map(|k| k.split('/').next().unwrap())
                            .collect();
                        names.dedup();
                        if names.is_empty() && !store.contains_key(&path) {
                            self.reply(MsgType::Error, h.req_id, b"ENOENT\0");
                        } else {
                            let mut b = Vec::new();
                            for n in names {
                                b.extend_from_slice(n.as_bytes());
                                b.push(0);
                            }
                            self.reply(MsgType::Directory, h.req_id, &b);
                        }
                    }
                    MsgType::Write => {
                        store.insert(path, rest);
                        self.reply(MsgType::Write, h.req_id, b"OK\0");
                    }
                    MsgType::Rm => {
                        let prefix = format!("{path}/");
                        let had = store.len();
                        store.retain(|k, _| *k != path && !k.starts_with(&prefix));
                        if store.len() == had {
                            self.reply(MsgType::Error, h.req_id, b"ENOENT\0");
                        } else {
                            self.reply(MsgType::Rm, h.req_id, b"OK\0");
                        }
                    }
                    MsgType::Resume => self.reply(MsgType::Resume, h.req_id, b"OK\0"),
                    MsgType::Mkdir => {
                        store.entry(path).or_default();
                        self.reply(MsgType::Mkdir, h.req_id, b"OK\0");
                    }
                    MsgType::SetPerms => {
                        if store.contains_key(&path) {
                            store.insert(format!("perms:{path}"), rest);
                            self.reply(MsgType::SetPerms, h.req_id, b"OK\0");
                        } else {
                            self.reply(MsgType::Error, h.req_id, b"ENOENT\0");
                        }
                    }
                    MsgType::Introduce | MsgType::Release => {
                        store.insert(format!("{:?}:{path}", h.ty), rest);
                        self.reply(h.ty, h.req_id, b"OK\0");
                    }
                    _ => self.reply(MsgType::Error, h.req_id, b"EINVAL\0"),
                }
            }
        }
    }

    impl Write for FakeXenstored {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inbuf.extend_from_slice(buf);
            self.serve();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for FakeXenstored {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.out.len());
            for (d, s) in buf.iter_mut().zip(self.out.drain(..n)) {
                *d = s;
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeXenstored;
    use super::*;

    /// READ of `/local/domain/0/name`, request id 7, as it goes on the wire.
    static READ_REQUEST: [u8; 37] = [
        0x02, 0x00, 0x00, 0x00, // XS_READ
        0x07, 0x00, 0x00, 0x00, // req_id
        0x00, 0x00, 0x00, 0x00, // tx_id
        0x15, 0x00, 0x00, 0x00, // len 21
        b'/', b'l', b'o', b'c', b'a', b'l', b'/', b'd', b'o', b'm', b'a', b'i', b'n', b'/', b'0',
        b'/', b'n', b'a', b'm', b'e', 0,
    ];

    #[test]
    fn header_emit_and_parse_match_the_wire_bytes() {
        let h = Header {
            ty: MsgType::Read,
            req_id: 7,
            tx_id: 0,
            len: 21,
        };
        assert_eq!(h.emit(), READ_REQUEST[..HEADER_LEN]);
        let hb: [u8; HEADER_LEN] = READ_REQUEST[..HEADER_LEN].try_into().unwrap();
        assert_eq!(Header::parse(&hb), Ok(h));
        assert_eq!(
            path_payload("/local/domain/0/name").unwrap(),
            READ_REQUEST[HEADER_LEN..]
        );
    }

    #[test]
    fn header_refuses_a_payload_over_the_maximum() {
        let mut h = Header {
            ty: MsgType::Read,
            req_id: 1,
            tx_id: 0,
            len: PAYLOAD_MAX as u32,
        };
        assert!(Header::parse(&h.emit()).is_ok());
        h.len += 1;
        assert_eq!(Header::parse(&h.emit()), Err(ProtocolError::TooLong(4097)));
    }

    #[test]
    fn message_types_are_an_open_enum() {
        for v in 0..40u32 {
            assert_eq!(u32::from(MsgType::from(v)), v);
        }
        assert_eq!(MsgType::from(2), MsgType::Read);
        assert_eq!(MsgType::from(99), MsgType::Unknown(99));
    }

    #[test]
    fn error_names_parse_and_keep_unknown_text() {
        assert_eq!(StoreErrno::parse(b"ENOENT\0"), StoreErrno::NoEntry);
        assert_eq!(StoreErrno::parse(b"EACCES"), StoreErrno::Access);
        let e = StoreErrno::parse(b"EQUOTA\0");
        assert_eq!(e.name(), "EQUOTA");
        assert_eq!(StoreErrno::parse(&[b'E'; 40]).name().len(), 15);
        assert_eq!(StoreErrno::parse(b"").name(), "");
    }

    #[test]
    fn read_directory_and_write_round_trip() {
        let fake = FakeXenstored::new(&[
            ("/local/domain/0/name", "Domain-0"),
            ("/local/domain/3/name", "e2e-guest"),
            ("/local/domain/3/memory/target", "131072"),
        ]);
        let store = fake.store.clone();
        let mut xs = Xenstore::new(fake);
        assert_eq!(xs.read_string("/local/domain/3/name").unwrap(), "e2e-guest");
        assert_eq!(xs.directory("/local/domain").unwrap(), ["0", "3"]);
        assert_eq!(xs.directory("/local/domain/3").unwrap(), ["memory", "name"]);
        xs.write("/local/domain/3/name", b"renamed").unwrap();
        assert_eq!(store.lock().unwrap()["/local/domain/3/name"], b"renamed");
        assert_eq!(xs.read("/local/domain/3/name").unwrap(), b"renamed");
    }

    #[test]
    fn a_missing_node_is_a_typed_enoent() {
        let mut xs = Xenstore::new(FakeXenstored::new(&[]));
        let e = xs.read("/local/domain/9/name").unwrap_err();
        assert_eq!(e.store_errno(), Some(StoreErrno::NoEntry));
        assert_eq!(e.to_string(), "xenstore READ /local/domain/9/name: ENOENT");
        // the connection still works afterwards
        assert!(xs.directory("/nowhere").is_err());
    }

    #[test]
    fn watch_events_before_the_reply_are_skipped() {
        let mut fake = FakeXenstored::new(&[("/a", "1")]);
        fake.events_first = true;
        let mut xs = Xenstore::new(fake);
        assert_eq!(xs.read("/a").unwrap(), b"1");
    }

    #[test]
    fn bad_replies_are_protocol_errors() {
        let reply = |ty: MsgType, req_id: u32, len: u32, body: &[u8]| {
            let mut b = Header {
                ty,
                req_id,
                tx_id: 0,
                len,
            }
            .emit()
            .to_vec();
            b.extend_from_slice(body);
            b
        };
        let mut fake = FakeXenstored::new(&[]);
        fake.canned = vec![
            reply(MsgType::Read, 1, 5000, &[]),
            reply(MsgType::Read, 99, 1, b"x"),
            reply(MsgType::Directory, 3, 1, b"x"),
            reply(MsgType::Write, 4, 3, b"NO\0"),
            reply(MsgType::Read, 5, 10, b"short"),
        ];
        let mut xs = Xenstore::new(fake);
        assert!(matches!(
            xs.read("/a"),
            Err(XenstoreError::Protocol(ProtocolError::TooLong(5000)))
        ));
        assert!(matches!(
            xs.read("/a"),
            Err(XenstoreError::Protocol(ProtocolError::WrongRequest {
                want: 2,
                got: 99
            }))
        ));
        assert!(matches!(
            xs.read("/a"),
            Err(XenstoreError::Protocol(ProtocolError::WrongType {
                want: 2,
                got: 1
            }))
        ));
        assert!(matches!(
            xs.write("/a", b"v"),
            Err(XenstoreError::Protocol(ProtocolError::NotOk))
        ));
        match xs.read("/a") {
            Err(XenstoreError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_that_do_not_fit_are_refused_before_sending() {
        let mut xs = Xenstore::new(FakeXenstored::new(&[]));
        assert!(matches!(xs.read(""), Err(XenstoreError::BadRequest(_))));
        assert!(matches!(
            xs.read("/a\0b"),
            Err(XenstoreError::BadRequest(_))
        ));
        let long = "/".repeat(ABS_PATH_MAX + 1);
        assert!(matches!(xs.read(&long), Err(XenstoreError::BadRequest(_))));
        let value = vec![b'v'; PAYLOAD_MAX];
        assert!(matches!(
            xs.write("/a", &value),
            Err(XenstoreError::BadRequest(_))
        ));
    }
}
