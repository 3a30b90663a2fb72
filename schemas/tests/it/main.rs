//! Integration tests of the event contract.

mod json_schema;
mod roundtrip;
mod strategies;
