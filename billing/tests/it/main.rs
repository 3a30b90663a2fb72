//! Billing and the ledger against a real object store (a temp dir), real
//! batch runs over archived Parquet, and real signing keys.

mod crash;
mod ledger;
mod report;
mod world;
