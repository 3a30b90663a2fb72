//! Benchmark harnesses (load harnesses with one-command runners in
//! `scripts/bench`). Figures go to `BENCHMARKS.md`; nothing here asserts on
//! wall-clock time.
//!
//! - `ingest-bench`: ingest throughput vs the direct-produce ceiling.
//! - `speed-bench`: speed-layer throughput vs Redis-side ceilings, freshness
//!   under steady load, dedup memory per remembered id.
//! - `batch-bench`: the batch job's throughput vs DuckDB over the same
//!   archive.
//! - `serve-bench`: the serving API's latency under open-loop load vs the
//!   `/healthz` floor, the batch index's memory, a reload under load.
//! - `billing-bench`: a month's report over a million video-hours, `ledger
//!   verify` over ten thousand entries, proof checks, each beside a floor.
//!
//! - `fraud-bench`: the invalid-traffic rules' recall and false positives
//!   per pattern on a labelled month, and rules v2's batch time beside v1's.
//!
//! This library holds what the harnesses share: statistics, machine facts,
//! writing raw archive files and rewriting their section of `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use schemas::ArchivedEvent;
use schemas::archive::to_record_batch;

/// Raw archive rows by (hour, Kafka partition), as the archive files them.
pub type RawBuffer = BTreeMap<(DateTime<Utc>, i32), Vec<ArchivedEvent>>;

/// Writes and empties `buf`: one raw archive file per (hour, partition)
/// chunk, named by its offsets as the archive names them. Returns the
/// files written.
pub async fn write_raw(
    store: &dyn object_store::ObjectStore,
    buf: &mut RawBuffer,
) -> anyhow::Result<usize> {
    let taken = std::mem::take(buf);
    let n = taken.len();
    for ((hour, p), rows) in taken {
        let first = rows.first().map_or(0, |r| r.kafka_offset);
        let last = rows.last().map_or(0, |r| r.kafka_offset);
        let bytes =
            store::layout::parquet_bytes(schemas::raw_schema(), &[to_record_batch(&rows)?])?;
        store::layout::put(store, &store::layout::raw_file(hour, p, first, last), bytes).await?;
    }
    Ok(n)
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// (min, max) of `v`.
pub fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

/// Peak resident set of this process (`VmHWM`), in MiB: measured in a
/// child process per operation, it is that operation's own.
pub fn peak_rss_mib() -> f64 {
    batch::memory::peak_rss().map_or(0.0, |b| b as f64 / 1048576.0)
}

/// "N cores (CPU model)".
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores ({model})")
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// (markers included) in `path` with `section`, or appends it.
pub fn replace_section(path: &Path, name: &str, section: &str) -> std::io::Result<()> {
    let (b, e) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let new = match (old.find(&b), old.find(&e)) {
        (Some(i), Some(j)) if i < j => {
            let end = (j + e.len() + 1).min(old.len());
            format!("{}{}{}", &old[..i], section, &old[end..])
        }
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(path, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 3.0));
    }

    #[test]
    fn sections_are_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        std::fs::write(&p, "# B\n\n<!-- a:begin -->\nold\n<!-- a:end -->\ntail\n").unwrap();
        replace_section(&p, "a", "<!-- a:begin -->\nnew\n<!-- a:end -->\n").unwrap();
        replace_section(&p, "b", "<!-- b:begin -->\nb\n<!-- b:end -->\n").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            s,
            "# B\n\n<!-- a:begin -->\nnew\n<!-- a:end -->\ntail\n\n<!-- b:begin -->\nb\n<!-- b:end -->\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
