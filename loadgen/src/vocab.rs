//! What generated events are made of, shared by the organic traffic
//! (`generator`) and the labelled patterns (`patterns`): the devices,
//! countries, qualities and referrers they draw from, and how videos are
//! named.

/// Devices events report.
pub(crate) const DEVICES: [&str; 5] = ["web", "mobile", "tv", "console", "other"];
/// Countries events report.
pub(crate) const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "NG"];
/// Qualities events report.
pub(crate) const QUALITIES: [&str; 4] = ["360p", "720p", "1080p", "2160p"];
/// The referrer of organic traffic.
pub(crate) const ORGANIC_REFERRER: &str = "https://example.com/feed";

/// The video id for a popularity rank (1 = most popular).
pub(crate) fn video_id(rank: u32) -> String {
    format!("v{rank:05}")
}
