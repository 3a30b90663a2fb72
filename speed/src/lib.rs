//! The speed layer (not built yet; issue 3).
//!
//! It will consume `view-events`, deduplicate by `event_id` and increment
//! per-video per-hour counters in Redis with one atomic script per batch, storing
//! the consumed offsets in the same script so restarts are effectively-once
//! (DESIGN §5.2). Until then this crate holds no code, on purpose: nothing here
//! pretends to count.
