//! Serving against the real pipeline: generated events through a Kafka
//! broker (librdkafka's mock cluster), the speed layer into a real
//! `redis-server`, the archive into Parquet, a real batch run published,
//! and the API answering over HTTP.

mod api;
mod auth;
mod dirty;
mod merge;
mod statements;
mod world;
