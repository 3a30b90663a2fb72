//! The speed layer against a real Kafka-protocol broker and a real redis-server.

mod cluster;
mod exact;
mod faults;
mod harness;
mod poison;
mod script;
