//! Ingest against a real Kafka-protocol broker (embedded mock cluster, or the
//! external broker of `VIEWCOUNT_TEST_KAFKA`).

mod broker_down;
mod harness;
mod http_errors;
mod readback;
mod shutdown;
mod signed;
