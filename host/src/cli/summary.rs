//! The summary a migration or a save prints at the end: rounds, pages and
//! bytes sent, bandwidth, downtime, total time; and the number formats the
//! other commands share.

use crate::api::{Outcome, TransferSummary};
use serde_json::Value;

pub use crate::units::{format_bytes, format_count, format_rate};

/// A duration in milliseconds: `12.3 ms` below a second, `1.42 s` above.
pub fn format_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".to_owned()
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// The summary for people: a headline, then one figure a line.
pub fn transfer_text(headline: &str, s: &TransferSummary) -> String {
    let mut rows = vec![
        ("rounds", s.rounds.to_string()),
        ("pages sent", format_count(s.pages_sent)),
        (
            "bytes sent",
            format!(
                "{} ({} bytes)",
                format_bytes(s.bytes_sent),
                format_count(s.bytes_sent)
            ),
        ),
        ("bandwidth", format!("{:.1} MiB/s", s.bandwidth_mib_s)),
        ("downtime", format_ms(s.downtime_ms)),
        ("total time", format_ms(s.total_ms)),
    ];
    if s.throttle_percent > 0 {
        rows.push((
            "throttled",
            format!(
                "up to {} % of its CPU time ({} step{})",
                s.throttle_percent,
                s.throttle_steps,
                if s.throttle_steps == 1 { "" } else { "s" }
            ),
        ));
    }
    let mut out = format!("{headline}\n");
    for (name, value) in rows {
        out.push_str(&format!("  {name:<11} {value}\n"));
    }
    out
}

/// The daemon's outcome as one JSON object (`{"kind":"migrated",…}`), with
/// `extra` fields the client adds (where to, which file).
pub fn outcome_json(outcome: &Outcome, extra: &[(&str, Value)]) -> Value {
    let mut value = serde_json::to_value(outcome).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for (key, v) in extra {
            map.insert((*key).to_owned(), v.clone());
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> TransferSummary {
        TransferSummary {
            domain: "web1".into(),
            rounds: 4,
            pages_sent: 300_000,
            bytes_sent: 1_228_800_000,
            downtime_ms: 12.34,
            total_ms: 1420.0,
            bandwidth_mib_s: 812.25,
            ..TransferSummary::default()
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(64 << 20), "64.0 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(format_rate(64 << 20), "64.0 MiB/s");
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1000), "1,000");
        assert_eq!(format_count(262_144), "262,144");
        assert_eq!(format_count(1_234_567_890), "1,234,567,890");
        assert_eq!(format_ms(12.34), "12.3 ms");
        assert_eq!(format_ms(1420.0), "1.42 s");
        assert_eq!(format_ms(f64::NAN), "-");
    }

    #[test]
    fn text_summary_has_every_figure() {
        let text = transfer_text("migrated web1 to hostb:8002", &summary());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "migrated web1 to hostb:8002");
        assert_eq!(lines[1], "  rounds      4");
        assert_eq!(lines[2], "  pages sent  300,000");
        assert_eq!(lines[3], "  bytes sent  1.1 GiB (1,228,800,000 bytes)");
        assert_eq!(lines[4], "  bandwidth   812.2 MiB/s");
        assert_eq!(lines[5], "  downtime    12.3 ms");
        assert_eq!(lines[6], "  total time  1.42 s");
        assert_eq!(lines.len(), 7);
        // Auto-converge says how far it went.
        let throttled = TransferSummary {
            throttle_percent: 80,
            throttle_steps: 3,
            ..summary()
        };
        let text = transfer_text("migrated web1", &throttled);
        assert_eq!(
            text.lines().last(),
            Some("  throttled   up to 80 % of its CPU time (3 steps)")
        );
    }

    #[test]
    fn json_summary_carries_the_required_keys() {
        let v = outcome_json(
            &Outcome::Migrated(summary()),
            &[("host", Value::from("hostb"))],
        );
        for key in [
            "rounds",
            "pages_sent",
            "bytes_sent",
            "downtime_ms",
            "total_ms",
            "bandwidth_mib_s",
            "zero_pages",
            "throttle_percent",
            "throttle_steps",
        ] {
            assert!(v.get(key).is_some_and(Value::is_number), "{key} in {v}");
        }
        assert_eq!(v["kind"], "migrated");
        assert_eq!(v["domain"], "web1");
        assert_eq!(v["host"], "hostb");
        assert_eq!(v["pages_sent"], 300_000);
    }
}
