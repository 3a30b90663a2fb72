//! This process's (or a child's) memory as the kernel counts it: peak
//! resident set (`VmHWM`) and the machine's memory, from `/proc`. Batch runs
//! record a peak per step; benchmarks measure children with it.

/// The peak resident set of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    status_kib("self", "VmHWM:").map(|k| k * 1024)
}

/// [`peak_rss`] of another process (a child a benchmark measures).
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:").map(|k| k * 1024)
}

/// Resets [`peak_rss`] to the current resident set, so the next reading is
/// the peak since now. False where the kernel does not allow it (then the
/// next reading is the process's peak so far).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A field of `/proc/<process>/status`, in KiB.
fn status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    kib(&status, field)
}

/// A field of `/proc/meminfo` (like `MemTotal:`), in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib(&info, field).map(|k| k * 1024)
}

fn kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
