//! Benchmark harnesses (load harnesses with one-command runners in `scripts/`).
//! Figures go to `BENCHMARKS.md`; nothing here asserts on wall-clock time.
//!
//! - `ingest-bench`: ingest throughput vs the direct-produce ceiling.
