//! Number formats shared by the commands, the daemon and the backends
//! (sizes and rates in binary units, counts with separators).

/// Bytes in binary units with one decimal (`512 B`, `64.0 MiB`, `1.0 GiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // f64 is exact enough for one decimal of any u64.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// A rate in bytes per second (`64.0 MiB/s`).
pub fn format_rate(bytes_per_s: u64) -> String {
    format!("{}/s", format_bytes(bytes_per_s))
}

/// A count with thousands separators (`262,144`).
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size in MiB, as capacity messages give it: `129 MiB`, or with one
/// decimal when it is not a whole number (`63.5 MiB`).
pub fn format_mib(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_mib() {
        assert_eq!(format_mib(129 << 20), "129 MiB");
        assert_eq!(format_mib((63 << 20) + (1 << 19)), "63.5 MiB");
        assert_eq!(format_mib(0), "0 MiB");
        assert_eq!(format_bytes(64 << 20), "64.0 MiB");
        assert_eq!(format_count(262_144), "262,144");
    }
}
