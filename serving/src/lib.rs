//! The serving layer (not built yet).
//!
//! It will answer creators' queries by merging batch counts for hours before the
//! watermark with speed counts after it, saying which part came from where
//! (DESIGN §5.4). Until then this crate holds no code, on purpose.
