//! Memory of a batch run: the limit (`--memory-limit`), the native engine's
//! own accounting against it, and the process's peak resident set.
//!
//! The native engine counts what it holds (row keys, decoded user ids, hash
//! tables, file bytes in flight) in a [`Budget`]. When the rows read would
//! pass half the limit it spills them to local disk by partition and works
//! partition by partition (see [`crate::count`]); the output is the same
//! bytes either way. Peak RSS is the kernel's (`VmHWM`, read by
//! [`telemetry::process`]), reset per step where the kernel allows it, so a
//! step's figure is that step's own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// How much memory a run may use, and where it spills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Bytes the native engine keeps its working set under.
    pub limit: u64,
    /// Directory for spill files (a fresh subdirectory per run, removed
    /// after it); the system temp directory when unset.
    pub spill_dir: Option<PathBuf>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            limit: default_limit(),
            spill_dir: None,
        }
    }
}

/// The smallest limit accepted: below it a run would spend its time
/// spilling a few rows at a time.
pub const MIN_LIMIT: u64 = 1 << 20;

/// A quarter of the memory this process may use (the machine's, or its
/// cgroup's limit if lower), and at least 256 MiB: room for the run beside
/// the services a machine also runs.
pub fn default_limit() -> u64 {
    let machine = meminfo("MemTotal:");
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|s| s.trim().parse::<u64>().ok());
    let usable = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 4 << 30,
    };
    (usable / 4).max(256 << 20)
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` or `T` (binary
/// multiples; `KiB`, `MB`, `GiB`... are read the same way), like `6G`,
/// `512MiB` or `1.5G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!("{s:?} is not a size; give bytes or a number with K, M, G or T, like 6G or 512M")
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `bytes` for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A field of `/proc/meminfo`, in bytes.
fn meminfo(field: &str) -> Option<u64> {
    telemetry::process::meminfo(field)
}

/// What the engine holds, against its limit.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
    peak: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Holds `bytes` more.
    pub(crate) fn add(&self, bytes: u64) {
        let now = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Holds `bytes` less.
    pub(crate) fn sub(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The most held since the last call (or since the start), then starts
    /// the next step's peak from what is held now.
    pub(crate) fn take_peak(&self) -> u64 {
        self.peak.swap(self.used(), Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_multiples() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("6G"), Ok(6 << 30));
        assert_eq!(parse_size("6 gb"), Ok(6 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in ["", "G", "6X", "-1G", "1.2.3M", "6 G B"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("like 6G"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn the_budget_keeps_a_peak_per_step() {
        let b = Budget::new(100);
        b.add(60);
        b.add(30);
        b.sub(70);
        assert_eq!((b.used(), b.take_peak()), (20, 90));
        b.add(5);
        assert_eq!(b.take_peak(), 25, "the next step starts from what is held");
        b.sub(1000);
        assert_eq!(b.used(), 0, "never below zero");
    }

    #[test]
    fn the_default_limit_is_a_share_of_this_machine() {
        let limit = default_limit();
        assert!(limit >= 256 << 20, "{limit}");
        let total = meminfo("MemTotal:").expect("/proc/meminfo names MemTotal");
        assert!(limit <= total.max(1 << 30), "{limit} of {total}");
        assert!(telemetry::process::peak_rss().is_some_and(|p| p > 0));
    }
}
