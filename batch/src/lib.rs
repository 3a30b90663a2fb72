//! The batch layer (not built yet; issue 4).
//!
//! It will recompute the authoritative per-video per-hour counts from the raw
//! Parquet archive with DataFusion, write them deterministically under `views/`
//! with a run manifest, and publish a run by one atomic `CURRENT` write
//! (DESIGN §5.3). Until then this crate holds no code, on purpose.
