//! A held-out evaluation suite for the invalid-traffic rules
//! ([`schemas::fraud`]): labelled view traffic, organic and invalid, for
//! measuring what the rules remove and what they wrongly remove.
//!
//! # How it was kept apart from the tuned generator
//!
//! The rules are tuned against `loadgen`'s patterns. A suite that shared its
//! author, code or parameter choices would measure how well the rules fit
//! that generator, not how well they detect abuse. This crate was written by
//! a different author from the description of the patterns only,
//! without reading `loadgen`'s patterns or generator, nor the rule
//! implementations (the fraud rules, the batch counts, the SQL); it knows
//! only the event contract, the validity limits and the thresholds of
//! [`schemas::RuleSet::DEFAULT`], which its adversaries use to stay just
//! under them. It has never been tuned against: no parameter here was
//! changed after seeing a detection figure. Any [`SuiteConfig::seed`] gives
//! a new draw of every episode's parameters, so a fresh suite can be made
//! for every evaluation run. Figures measured on it should be reported
//! separately from those on the tuning traffic.
//!
//! # Layout
//!
//! - `world`: the video catalogue (creators, durations, monetisation,
//!   Zipf-like popularity), the organic user pool, the time window, the
//!   fingerprints organic traffic shows, and the one place a view is
//!   emitted. Also what an adversary knows of the rules (`Limits`) and keeps
//!   under the bot-farm rule (`FarmGuard`).
//! - `organic`: the baseline and the organic hard cases.
//! - `invalid`: the invalid patterns.
//!
//! Each pattern draws from its own random stream (derived from the seed and
//! the pattern), so one pattern's draws do not move another's. Each hard
//! case and invalid pattern runs [`SuiteConfig::episodes_per_pattern`]
//! episodes; every episode draws its parameters from the ranges below, so no
//! single threshold separates a family from organic traffic.
//!
//! # Patterns
//!
//! "Popularity x–y%" is a video's popularity rank as a fraction of the
//! catalogue (0% the most viewed). Every invalid view except
//! `unsigned_script`'s is billable (revenue-eligible, at least 30 s).
//!
//! | name | kind | what it does | parameters per episode |
//! |---|---|---|---|
//! | `organic_baseline` | organic | Sessions of pool users by activity (log-normal), at diurnal local times of their home country; videos by Zipf popularity (s 1.05), 30% of next views the same creator's; a fresh playback per view, 3% rewatched in the same player (shared playback id). | [`SuiteConfig::organic_views`] views; 1–12 views per session; watch: 22% bounce 2–29 s, else full or 8–92% of the video; ads 0–3; 85% of videos monetised, 96% of their views eligible; mobile/web/tv/console/other 55/25/14/3/3; 24 countries, 3% unreported; quality by device; referrer 40% none, else site, search, social. |
//! | `classroom_lecture` | organic (hard) | A class or office on one network watches one lecture together: one country, one device type, one course-page referrer, one quality, similar watch times. | 20–60 pool accounts of one country; video ≥ 600 s; device web/mobile/tv 70/20/10; start local 08–16 h, arrivals within 30–240 s; watch 85–100% of length ± 3–40 s; 0–15% leave at 30–80%; ads 0 or 1 for all. |
//! | `shared_link_burst` | organic (hard) | A clip shared from one link: hundreds of distinct people from one external referrer within the hour, short watch times, few ads. | 150–900 users (10–40% new accounts); t.co, reddit, discord or facebook-group link; exponential arrivals over 20–60 min; 60–90% one country; 25–55% watch 4–29 s, the rest 30–70 s; 12% with one ad; 75% mobile. |
//! | `trending_short_no_ads` | organic (hard) | A trending short without ads: many people watching just over 30 s, no ad in any view, some looping it. | short length 31–44 s; 200–1200 users over 3–14 h, triangular arrivals peaking at 20–60%; watch the length (−0/1 s) 90%, else 5 s–length; 5–20% loop 2–3 times, the second loop in the same playback; ads 0; 85% mobile. |
//! | `long_live_stream` | organic (hard) | A long live stream: a few hundred people each with one view of one to six hours, some also on a second device. | stream 2–8 h from local 17–22 h; 150–600 users, 50–80% of one country; 50–80% join in the first 30 min; watch log-normal median 2.5 h, within 1 h–min(6 h, rest of stream); 5–15% add an overlapping view on a TV or phone; one ad per 30 min, at most 4. |
//! | `child_rewatch` | organic (hard) | A child rewatching a cartoon: one account, one video, many views in a day, some back to back, on a tablet or TV. | 6–15 views of a 240–720 s video in runs of 1–5 (2–20 s apart), runs 30 min–3 h apart from local 07–09 h; tv or mobile; watch the whole video (75%) or 40–90% of it; a replay keeps the playback 30% of the time; ads 0–1 on half the episodes. |
//! | `watch_party` | organic (hard) | Friends at a watch party: a few accounts start one video within a minute, one country and quality, watching in sync. | 5–12 pool accounts of one country; video 1200–3600 s; start local 19–23 h within 60 s; quality 720p or 1080p for all; one party-link referrer; watch 90–100% of length ± 10 s; the same 0–3 ads for all; devices mixed. |
//! | `bot_farm_under_threshold` | invalid | A bot farm that knows the bot-farm rule: fewer accounts per video-hour than it counts, a fingerprint per account, watch times jittered wider than its band, spread over hours and days. | 30–150 accounts, each its own device, exit country (of 2–6), referrer (of 1–4 or none), quality; 1–3 videos of popularity 10–70%; 8–30 distinct hours over 2–4 days; per video-hour 6–9 accounts (`bot_farm_accounts` − 4 … − 1); watch 35–120 s ± 10–30 s (2–6 bands); each account under the daily cap; ads 1 at 0–60%. |
//! | `catalogue_drip` | invalid | A drip across a back catalogue: a few accounts each viewing many of one creator's old videos at a low rate, never one video twice in a UTC day. | one creator (≥ 8 videos when one is found), its least popular 70%; 3–12 accounts with fixed fingerprints (1–3 countries); 10–45 views per account, gaps exponential with mean 1–5 h (≥ 10 min); half the episodes idle at local 01–07 h; watch 30–95% of the video (≥ 35 s); ads 0–2. |
//! | `rotating_accounts` | invalid | Rotating accounts: a fresh user id per view on one video at a steady, metronomic rate around the clock, fingerprints rotated per view. | video of popularity 5–60%; interval 120–600 s ± 0.5–5% for 1–2 days; 4–10 countries, 2–5 referrers and none; watch from 31–40 s over a 40–100 s range; ads 1 at 0–50%; a session id on half the episodes. |
//! | `fingerprint_fresh_ids` | invalid | Fresh ids per view from one device fingerprint: a trickle of minimal views spaced below the zero-engagement burst density and spread over videos so no video-hour makes a farm. | one device (mobile/web/other), country, referrer (none half the time), quality; 6–16 videos of popularity 10–80%; gap 40–180 s ± 10–30%, never under 34 s; 3–12 h; watch 30–34 s; ads 0. |
//! | `token_replay` | invalid | Token replay: one captured playback token replayed many times under fresh event ids and invented users. | 10–100 replays of one playback on one video of popularity 0–50% over 1–36 h; one fixed fingerprint or one per replay (1–5 countries); watch 30–200 s ± 5–40 s; ads 0–2. |
//! | `impossible_concurrency` | invalid | One account with many long views in progress at once, more players than a person runs. | 1–3 days; each 6–12 distinct videos started within 60–900 s, each watched 1–4 h; device per view; one country; one ad per 20 min, at most 3. |
//! | `loop_under_cap` | invalid | One account looping one video just under the repeat-loop count per hour and just under the daily cap per day, for many hours over several days. | video 35–300 s; 3–4 views an hour (`repeat_loop_views` − 2/− 1), 8–10 a UTC day (`fraud_cap_per_user_video_day` − 2 … − 0) over consecutive hours (as few as fit, up to 12); 2–7 days; fixed fingerprint; watch the video's length − 0–3 s; ads 1 at 30%. |
//! | `hidden_embed_autoplay` | invalid | A hidden muted autoplay embed on a third-party page: its real visitors each become a billable view they never saw, with the site's diurnal rhythm and one referrer, like a shared link. | 1–2 videos of popularity 20–90%; one page referrer; 1–4 days; peak 4–20 visitors an hour following a home country's day (50–80% local); fresh visitor ids; web 85%; one quality (360p or 480p); watch log-normal median 60–200 s, 31–1800 s; ads 1 at 0–15%. |
//! | `unsigned_script` | invalid | A script posting views without a player: no playback token (`playback_id` none), so ingest records them not revenue-eligible; none may be paid. | 1–3 videos; 5–40 invented accounts; 40–400 views over 1–8 h; watch 30–120 s; device other or web; quality 720p or none; no referrer; ads 0. |
//!
//! Invented user ids (bots, newcomers) never name a pool account; most look
//! like organic ones (`hu` and six digits), others are numeric, handles or
//! hex.

mod invalid;
mod organic;
mod world;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::world::World;

/// The longest window [`generate`] makes: every view must still be inside
/// the default 30-day late horizon when received an hour after the window.
pub const MAX_DAYS: u32 = 29;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteConfig {
    /// Seeds every draw: the same config gives the same views.
    pub seed: u64,
    /// The window's first instant.
    pub start: DateTime<Utc>,
    /// The window's length in days, 1 to [`MAX_DAYS`] (clamped).
    pub days: u32,
    /// Videos in the catalogue (at least 1).
    pub videos: u32,
    /// Accounts in the organic pool (at least 1).
    pub organic_users: u32,
    /// Views of the organic baseline (the hard cases come on top).
    pub organic_views: u64,
    /// Episodes of each hard case and invalid pattern.
    pub episodes_per_pattern: u32,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        Self {
            seed: 2026,
            // 2026-11-02T00:00:00Z.
            start: DateTime::from_timestamp(1_793_577_600, 0).unwrap_or(DateTime::UNIX_EPOCH),
            days: 7,
            videos: 400,
            organic_users: 20_000,
            organic_views: 60_000,
            episodes_per_pattern: 12,
        }
    }
}

/// The pattern a view was generated by: its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// Plain organic traffic.
    OrganicBaseline,
    /// A class or office watching one lecture together.
    ClassroomLecture,
    /// A clip shared from one link.
    SharedLinkBurst,
    /// A trending short without ads.
    TrendingShortNoAds,
    /// A long live stream, some viewers on two devices.
    LongLiveStream,
    /// A child rewatching a cartoon.
    ChildRewatch,
    /// Friends at a watch party.
    WatchParty,
    /// A bot farm under the bot-farm rule's thresholds.
    BotFarmUnderThreshold,
    /// A few accounts dripping over one creator's back catalogue.
    CatalogueDrip,
    /// A fresh account per view on one video, metronomic.
    RotatingAccounts,
    /// Fresh ids per view from one device fingerprint.
    FingerprintFreshIds,
    /// One playback token replayed under invented users.
    TokenReplay,
    /// One account with many long views at once.
    ImpossibleConcurrency,
    /// One account looping one video under the loop and daily caps.
    LoopUnderCap,
    /// A hidden autoplay embed on a third-party page.
    HiddenEmbedAutoplay,
    /// Views posted by a script without a playback token.
    UnsignedScript,
}

impl Pattern {
    /// Every pattern: organic baseline, organic hard cases, invalid.
    pub const ALL: [Pattern; 16] = [
        Pattern::OrganicBaseline,
        Pattern::ClassroomLecture,
        Pattern::SharedLinkBurst,
        Pattern::TrendingShortNoAds,
        Pattern::LongLiveStream,
        Pattern::ChildRewatch,
        Pattern::WatchParty,
        Pattern::BotFarmUnderThreshold,
        Pattern::CatalogueDrip,
        Pattern::RotatingAccounts,
        Pattern::FingerprintFreshIds,
        Pattern::TokenReplay,
        Pattern::ImpossibleConcurrency,
        Pattern::LoopUnderCap,
        Pattern::HiddenEmbedAutoplay,
        Pattern::UnsignedScript,
    ];

    /// The pattern's stable name (the table in the crate doc).
    pub fn name(self) -> &'static str {
        match self {
            Pattern::OrganicBaseline => "organic_baseline",
            Pattern::ClassroomLecture => "classroom_lecture",
            Pattern::SharedLinkBurst => "shared_link_burst",
            Pattern::TrendingShortNoAds => "trending_short_no_ads",
            Pattern::LongLiveStream => "long_live_stream",
            Pattern::ChildRewatch => "child_rewatch",
            Pattern::WatchParty => "watch_party",
            Pattern::BotFarmUnderThreshold => "bot_farm_under_threshold",
            Pattern::CatalogueDrip => "catalogue_drip",
            Pattern::RotatingAccounts => "rotating_accounts",
            Pattern::FingerprintFreshIds => "fingerprint_fresh_ids",
            Pattern::TokenReplay => "token_replay",
            Pattern::ImpossibleConcurrency => "impossible_concurrency",
            Pattern::LoopUnderCap => "loop_under_cap",
            Pattern::HiddenEmbedAutoplay => "hidden_embed_autoplay",
            Pattern::UnsignedScript => "unsigned_script",
        }
    }

    /// Whether the pattern's views are invalid traffic (should be removed).
    pub fn is_invalid(self) -> bool {
        self >= Pattern::BotFarmUnderThreshold
    }

    /// Whether the pattern is an organic hard case (must not be removed).
    pub fn is_hard_organic(self) -> bool {
        self != Pattern::OrganicBaseline && !self.is_invalid()
    }
}

/// One generated view and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldoutView {
    /// The view as a player (or a bot) sent it.
    pub event: schemas::ViewEvent,
    /// The playback id of the signed playback token ingest verified, `None`
    /// for an unsigned view (which is then not revenue-eligible).
    pub playback_id: Option<String>,
    /// What generated it.
    pub pattern: Pattern,
}

/// SplitMix64: a pattern's stream seed from the suite's, so each pattern's
/// draws are independent of the others'.
fn stream_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates the suite: every view valid when received at the window's end
/// plus an hour, sorted by `occurred_at` then `event_id`. Deterministic for
/// a config.
pub fn generate(cfg: &SuiteConfig) -> Vec<HeldoutView> {
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, 0));
    let mut world = World::new(cfg, &mut rng);
    for (stream, pattern) in (1u64..).zip(Pattern::ALL) {
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, stream));
        if pattern == Pattern::OrganicBaseline {
            organic::baseline(&mut world, &mut rng, cfg.organic_views);
            continue;
        }
        for _ in 0..cfg.episodes_per_pattern {
            if pattern.is_invalid() {
                invalid::episode(&mut world, &mut rng, pattern);
            } else {
                organic::episode(&mut world, &mut rng, pattern);
            }
        }
    }
    let mut views = world.into_views();
    views.sort_by_key(|v| (v.event.occurred_at, v.event.event_id));
    views
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use chrono::Duration;
    use schemas::{RuleSet, ValidationContext};

    use super::*;

    /// A smaller suite, so the tests stay quick; the default one is checked
    /// once for validity and coverage.
    fn small(seed: u64) -> SuiteConfig {
        SuiteConfig {
            seed,
            organic_users: 3_000,
            organic_views: 8_000,
            episodes_per_pattern: 3,
            ..SuiteConfig::default()
        }
    }

    fn received_at(cfg: &SuiteConfig) -> DateTime<Utc> {
        cfg.start + Duration::days(cfg.days.into()) + Duration::hours(1)
    }

    #[test]
    fn the_default_window_starts_on_2026_11_02() {
        assert_eq!(
            SuiteConfig::default().start.to_rfc3339(),
            "2026-11-02T00:00:00+00:00"
        );
    }

    #[test]
    fn the_same_config_gives_the_same_views() {
        let a = generate(&small(7));
        let b = generate(&small(7));
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_give_different_views() {
        let a = generate(&small(7));
        let b = generate(&small(8));
        assert_ne!(a, b);
        let ids: HashSet<_> = a.iter().map(|v| v.event.event_id).collect();
        assert!(b.iter().all(|v| !ids.contains(&v.event.event_id)));
    }

    #[test]
    fn views_are_sorted_and_event_ids_unique() {
        let views = generate(&small(11));
        assert!(views.windows(2).all(|w| {
            (w[0].event.occurred_at, w[0].event.event_id)
                < (w[1].event.occurred_at, w[1].event.event_id)
        }));
        let ids: HashSet<_> = views.iter().map(|v| v.event.event_id).collect();
        assert_eq!(ids.len(), views.len());
    }

    /// The default suite: every view valid when received an hour after the
    /// window, every pattern present, the baseline exactly its size.
    #[test]
    fn every_view_of_the_default_suite_is_valid_and_every_pattern_appears() {
        let cfg = SuiteConfig::default();
        let views = generate(&cfg);
        let ctx = ValidationContext::new(received_at(&cfg), &RuleSet::default());
        for v in &views {
            if let Err(r) = schemas::validate(&v.event, &ctx) {
                panic!("{} view {:?} is invalid: {r}", v.pattern.name(), v.event);
            }
            assert!(v.event.occurred_at >= cfg.start);
            assert!(v.event.occurred_at < cfg.start + Duration::days(cfg.days.into()));
            assert_eq!(v.event.schema_version, 2);
            assert_eq!(v.event.playback_token, None);
        }
        let mut by: BTreeMap<Pattern, usize> = BTreeMap::new();
        for v in &views {
            *by.entry(v.pattern).or_default() += 1;
        }
        for p in Pattern::ALL {
            assert!(
                by.get(&p).copied().unwrap_or(0) > 0,
                "{} is missing",
                p.name()
            );
        }
        assert_eq!(
            by[&Pattern::OrganicBaseline] as u64,
            cfg.organic_views,
            "{by:?}"
        );
        let ids: HashSet<_> = views.iter().map(|v| v.event.event_id).collect();
        assert_eq!(ids.len(), views.len());
    }

    /// Invalid views exist to be paid: billable, except the unsigned
    /// script's, which ingest records not revenue-eligible.
    #[test]
    fn invalid_views_are_billable_unless_unsigned() {
        let rules = RuleSet::default();
        for v in generate(&small(3)) {
            if v.playback_id.is_none() {
                assert!(!v.event.revenue_eligible, "{:?}", v);
                assert_eq!(v.pattern, Pattern::UnsignedScript);
            } else if v.pattern.is_invalid() {
                assert!(rules.is_billable(&v.event), "{:?}", v);
            }
            if v.pattern == Pattern::UnsignedScript {
                assert_eq!(v.playback_id, None);
            }
        }
    }

    /// Playbacks: organic views share one at most in pairs (a rewatch in
    /// the same player); a replayed token is one playback many times.
    #[test]
    fn playback_ids_are_shared_only_by_rewatches_and_replays() {
        let mut uses: BTreeMap<&str, (Pattern, usize)> = BTreeMap::new();
        let views = generate(&small(5));
        for v in &views {
            if let Some(id) = &v.playback_id {
                let e = uses.entry(id).or_insert((v.pattern, 0));
                assert_eq!(e.0, v.pattern, "playback {id} crosses patterns");
                e.1 += 1;
            }
        }
        for (pattern, n) in uses.values() {
            if *pattern == Pattern::TokenReplay {
                assert!((10..=100).contains(n), "{n}");
            } else {
                assert!(*n <= 2, "{} shares a playback {n} times", pattern.name());
            }
        }
    }

    /// The adversaries stay under the thresholds they know.
    #[test]
    fn adversaries_stay_under_the_loop_and_daily_caps() {
        let rules = RuleSet::DEFAULT;
        let mut hourly: BTreeMap<(String, String, i64), u32> = BTreeMap::new();
        let mut daily: BTreeMap<(String, String, i64), u32> = BTreeMap::new();
        for v in generate(&small(9)) {
            if !matches!(
                v.pattern,
                Pattern::LoopUnderCap | Pattern::CatalogueDrip | Pattern::BotFarmUnderThreshold
            ) {
                continue;
            }
            let t = v.event.occurred_at.timestamp();
            let key = |bucket| (v.event.user_id.clone(), v.event.video_id.clone(), bucket);
            *hourly.entry(key(t.div_euclid(3_600))).or_default() += 1;
            *daily.entry(key(t.div_euclid(86_400))).or_default() += 1;
        }
        assert!(hourly.values().all(|&n| n < rules.repeat_loop_views));
        assert!(
            daily
                .values()
                .all(|&n| n <= rules.fraud_cap_per_user_video_day)
        );
    }

    /// Degenerate configs still make valid views: one video, one account,
    /// a window not on an hour, more days than the late horizon allows.
    #[test]
    fn tiny_and_oversized_configs_stay_valid() {
        let odd_start = DateTime::from_timestamp(1_793_577_600 + 13 * 3_600 + 1_234, 0).unwrap();
        for cfg in [
            SuiteConfig {
                seed: 1,
                start: odd_start,
                days: 1,
                videos: 1,
                organic_users: 1,
                organic_views: 50,
                episodes_per_pattern: 2,
            },
            SuiteConfig {
                days: 40,
                organic_views: 2_000,
                organic_users: 500,
                episodes_per_pattern: 1,
                ..SuiteConfig::default()
            },
        ] {
            let views = generate(&cfg);
            let days = cfg.days.min(MAX_DAYS);
            let at = cfg.start + Duration::days(days.into()) + Duration::hours(1);
            let ctx = ValidationContext::new(at, &RuleSet::default());
            assert!(!views.is_empty());
            for v in &views {
                assert!(schemas::validate(&v.event, &ctx).is_ok(), "{v:?}");
            }
        }
    }

    #[test]
    fn patterns_are_classified_once() {
        let names: HashSet<_> = Pattern::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Pattern::ALL.len());
        let hard = Pattern::ALL.iter().filter(|p| p.is_hard_organic()).count();
        let invalid = Pattern::ALL.iter().filter(|p| p.is_invalid()).count();
        assert_eq!((hard, invalid), (6, 9));
        assert!(!Pattern::OrganicBaseline.is_invalid());
        assert!(!Pattern::OrganicBaseline.is_hard_organic());
    }
}
