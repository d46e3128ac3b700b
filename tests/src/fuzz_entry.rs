//! The bodies of the fuzz targets in `fuzz/`, kept here so that
//! `tests/tests/fuzz_corpus.rs` replays every corpus file through exactly the
//! code the fuzzer ran. Each function must return for any input: a panic is
//! the bug the fuzzer looks for.

use relocd_core::{config, sxp};

/// sxp: the pull reader over arbitrary bytes, then the owned tree; a tree
/// that parsed must print back to text that parses to the same tree.
pub fn sxp(data: &[u8]) {
    let Ok(mut reader) = sxp::Reader::from_bytes(data) else {
        return;
    };
    let mut warnings = Vec::new();
    let mut events = 0usize;
    while let Ok(Some(_)) = reader.next_event(&mut warnings) {
        events += 1;
    }
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(tree) = sxp::parse_all(text, &mut sxp::IgnoreWarnings) {
        let printed: Vec<String> = tree.iter().map(ToString::to_string).collect();
        let again = sxp::parse_all(&printed.join(" "), &mut sxp::IgnoreWarnings)
            .expect("printed sxp must parse again");
        assert_eq!(tree, again, "sxp print/parse round trip changed the tree");
        assert!(events > 0 || tree.is_empty());
    }
}

/// config: the relocation settings and a generic key lookup.
pub fn config(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let mut warnings = Vec::new();
    if let Ok(cfg) = config::RelocationConfig::parse(text, &mut warnings) {
        // Every string setting decodes.
        let _ = cfg.hosts_allow.to_owned_string();
        let _ = cfg.address.to_owned_string();
    }
    let _ = config::get(text, "relocd-anything", &mut sxp::IgnoreWarnings);
}

/// An in-memory [`Sink`](relocd_core::stream::writer::Sink) (the core
/// implements `Sink` for `Vec` only with embedded-io's `alloc` feature).
#[derive(Debug, Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl relocd_core::stream::writer::Sink for Bytes {
    type Error = core::convert::Infallible;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(())
    }
}
