//! A relocation destination on loopback for the session tests: one
//! connection accepted and served by `run_dest` in a thread, offering the
//! features given, its journal in a directory of the test's.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::thread::{self, JoinHandle};

use relocd::backend::sim::SimSink;
use relocd::session::{run_dest, Clock, DestOptions, DestReport, FileJournal, SessionError};
use relocd_core::protocol::{AdmissionRequest, DestConfig, Features, RefuseReason};

/// Listens on a free loopback port; the thread serves the first
/// connection, building the guest with `admit`. The address to dial and
/// the thread, whose result is the destination's report.
pub fn spawn_dest(
    dir: &Path,
    features: Features,
    admit: impl FnMut(&AdmissionRequest) -> Result<SimSink, RefuseReason> + Send + 'static,
) -> (SocketAddr, JoinHandle<Result<DestReport, SessionError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let journal = dir.join("dest.journal");
    let mut admit = admit;
    let h = thread::spawn(move || {
        let (s, _) = listener.accept().expect("the source's connection");
        let mut j = FileJournal::open(&journal).expect("the destination's journal");
        let opts = DestOptions {
            config: DestConfig {
                features,
                ..DestConfig::default()
            },
            ..DestOptions::default()
        };
        run_dest(
            s,
            |req: &AdmissionRequest, _config: Option<&[u8]>| admit(req),
            &opts,
            &mut j,
            &Clock::new(),
        )
    });
    (addr, h)
}
