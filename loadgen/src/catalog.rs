//! A video catalog that matches the generated videos ([`crate::Generator`]
//! names them by popularity rank), for demos, tests and benchmarks.
//!
//! Creators own a Zipf-skewed number of videos (a few own many, most own
//! one or two), assigned by a seeded draw, so the same settings give the same
//! catalog. A few videos are deliberately left out, among them a popular
//! one, so unattributed views occur and are seen being reported.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

use crate::{Error, Result};

/// One catalog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRow {
    /// As [`crate::Generator::video_id`] names it.
    pub video_id: String,
    /// `creator-NNNN`.
    pub creator_id: String,
    /// A readable title.
    pub title: String,
}

/// How a generated catalog is shaped.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// RNG seed.
    pub seed: u64,
    /// Videos generated (ranks `1..=videos`).
    pub videos: u32,
    /// Creators to spread them over.
    pub creators: u32,
    /// Zipf exponent of videos per creator.
    pub zipf_exponent: f64,
    /// Every video whose rank is `3 (mod left_out_every)` is left out
    /// (rank 3 is popular, so unattributed views show in any demo); 0 leaves
    /// none out.
    pub left_out_every: u32,
}

impl CatalogConfig {
    /// A catalog for `videos` generated videos: one creator per 5 videos
    /// (at least one), 1 in 20 videos left out.
    pub fn for_videos(videos: u32, seed: u64) -> Self {
        Self {
            seed,
            videos,
            creators: (videos / 5).max(1),
            zipf_exponent: 1.0,
            left_out_every: 20,
        }
    }
}

/// The catalog's rows, sorted by video id.
pub fn catalog(cfg: &CatalogConfig) -> Result<Vec<CatalogRow>> {
    if cfg.creators == 0 {
        return Err(Error::Config("a catalog needs at least one creator".into()));
    }
    let zipf = Zipf::new(f64::from(cfg.creators), cfg.zipf_exponent)
        .map_err(|e| Error::Config(format!("catalog zipf exponent: {e}")))?;
    // Its own stream ("catalog"), apart from the events drawn with the seed.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0063_6174_616c_6f67);
    let mut rows = Vec::new();
    for rank in 1..=cfg.videos {
        // Draw for every rank, so leaving one out does not move the others.
        let creator = zipf.sample(&mut rng) as u32;
        if cfg.left_out_every > 0 && rank % cfg.left_out_every == 3 % cfg.left_out_every {
            continue;
        }
        let video_id = crate::Generator::video_id(rank);
        rows.push(CatalogRow {
            title: format!("Video {rank} of creator {creator}"),
            video_id,
            creator_id: format!("creator-{creator:04}"),
        });
    }
    rows.sort_by(|a, b| a.video_id.cmp(&b.video_id));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn deterministic_skewed_and_leaves_a_popular_video_out() {
        let cfg = CatalogConfig::for_videos(1_000, 7);
        let rows = catalog(&cfg).unwrap();
        assert_eq!(rows, catalog(&cfg).unwrap(), "same settings, same catalog");
        assert_eq!(rows.len(), 950, "1 in 20 left out");
        assert!(!rows.iter().any(|r| r.video_id == "v00003"));
        assert!(rows.iter().any(|r| r.video_id == "v00001"));
        let mut per_creator: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rows {
            *per_creator.entry(&r.creator_id).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_creator.values().copied().collect();
        counts.sort_unstable();
        let (top, median) = (counts[counts.len() - 1], counts[counts.len() / 2]);
        assert!(top >= 10 * median, "skewed: top {top}, median {median}");
        let other_seed = catalog(&CatalogConfig::for_videos(1_000, 8)).unwrap();
        assert_ne!(rows, other_seed);
    }
}
