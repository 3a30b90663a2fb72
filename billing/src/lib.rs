//! Billing (not built yet).
//!
//! It will turn batch counts into creator payment statements with exact decimal
//! money and record each in an append-only, hash-chained audit ledger
//! (DESIGN §5.6, §5.7). Until then this crate holds no code, on purpose.
