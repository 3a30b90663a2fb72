//! Integration tests of the event contract.

mod columns;
mod json_schema;
mod roundtrip;
mod strategies;
