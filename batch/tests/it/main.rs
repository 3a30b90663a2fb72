//! The archive and batch layers against a real broker and a real object store
//! (local directory), compared with the generator's truth.

mod duckdb;
mod engines;
mod faults;
mod golden;
mod hard_cases;
mod harness;
mod pipeline;
mod reconcile;
mod replay;
mod rules;
mod s3;
