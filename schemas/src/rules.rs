//! Counting rules (DESIGN §4) and the one rule set: the stateless parts,
//! shared by ingest, speed, archive and batch.
//!
//! Dedup (first occurrence of an `event_id` wins) and the batch-only
//! invalid-traffic rules ([`crate::fraud`]) need state and live in their
//! layers; their parameters are here so that one version number covers them
//! all.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::ViewEvent;

/// Version of the counting rules. Bump it whenever any rule below changes
/// meaning; batch manifests record it so old runs stay explainable.
///
/// 2: the invalid-traffic rules of [`crate::fraud`] beside v1's daily cap.
/// A v1 manifest's rule set reads back with them off, so it decides as v1.
/// 3: `token_replay`, on views whose signed playback token ingest verified,
/// and `impossible_watch` judging concurrent views
/// (`impossible_watch_devices`) instead of one hour's watch time
/// (`impossible_watch_seconds`, now 0). A v2 manifest's rule set reads back
/// with the new parameters off and its own hour limit, so it decides as v2.
/// Rules v3 also judge rhythm (`metronome`) and leave long views out of
/// bot farms (`bot_farm_max_watch_seconds`), count a farm only where its
/// watch times cluster (`bot_farm_share_percent`); a v3 manifest from
/// before them reads back with them off.
pub const RULES_VERSION: u32 = 3;

/// Every configurable parameter of validation and counting, in one place.
///
/// Ingest, speed, archive and batch all take this one value (with the `cli`
/// feature it is also the binary's flags, with the same names and
/// `VIEWCOUNT_*` variables for every command: its doc comments are their
/// help), so no configuration can make one layer accept what another
/// rejects. Ingest stamps the acceptance limits it used on every Kafka
/// record ([`LIMITS_HEADER`]); a consumer whose limits are narrower refuses
/// to run rather than drop accepted views ([`RuleSet::check_limits_header`]).
/// Batch manifests record the whole set and the run id hashes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(deny_unknown_fields, default)]
pub struct RuleSet {
    /// Accept `occurred_at` up to this far after its receipt (a duration
    /// like 5m). Every layer must run with the same value.
    #[cfg_attr(feature = "cli", arg(id = "max_future", long = "max-future", env = "VIEWCOUNT_MAX_FUTURE", value_name = "DURATION", default_value = "5m", value_parser = parse_seconds))]
    pub max_future_seconds: u32,
    /// Accept `occurred_at` up to this far before its receipt: the
    /// late-data horizon (a duration like 30d). Every layer must run with
    /// the same value.
    #[cfg_attr(feature = "cli", arg(id = "late_horizon", long = "late-horizon", env = "VIEWCOUNT_LATE_HORIZON", value_name = "DURATION", default_value = "30d", value_parser = parse_seconds))]
    pub late_horizon_seconds: u32,
    /// A view is billable when revenue-eligible and watched at least this
    /// many seconds.
    #[cfg_attr(feature = "cli", arg(id = "billable_min_watch", long = "billable-min-watch", env = "VIEWCOUNT_BILLABLE_MIN_WATCH", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.billable_min_watch_seconds))]
    pub billable_min_watch_seconds: u32,
    /// Batch rule `daily_cap`: at most this many billable views per user,
    /// video and UTC day.
    #[cfg_attr(feature = "cli", arg(id = "fraud_cap", long = "fraud-cap", env = "VIEWCOUNT_FRAUD_CAP", value_name = "VIEWS", default_value_t = RuleSet::DEFAULT.fraud_cap_per_user_video_day))]
    pub fraud_cap_per_user_video_day: u32,
    /// Batch rule `impossible_watch` as rules v2 judged it: a user's views
    /// starting in one UTC hour that report more watch seconds than this in
    /// all are filtered (0: off, the default since rules v3, which judge
    /// concurrency instead: --impossible-watch-devices).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "impossible_watch", long = "impossible-watch", env = "VIEWCOUNT_IMPOSSIBLE_WATCH", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.impossible_watch_seconds))]
    pub impossible_watch_seconds: u32,
    /// Batch rule `impossible_watch`: a user's views of a UTC day that are
    /// in progress while more than this many of the user's views are (each
    /// from `occurred_at` for its watch time, within its day) are filtered:
    /// more devices at once than one person plausibly runs (0: off).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "impossible_watch_devices", long = "impossible-watch-devices", env = "VIEWCOUNT_IMPOSSIBLE_WATCH_DEVICES", value_name = "VIEWS", default_value_t = RuleSet::DEFAULT.impossible_watch_devices))]
    pub impossible_watch_devices: u32,
    /// Batch rule `repeat_loop`: this many billable views of one video by
    /// one user in one UTC hour are all filtered (0: off).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "repeat_loop_views", long = "repeat-loop-views", env = "VIEWCOUNT_REPEAT_LOOP_VIEWS", value_name = "VIEWS", default_value_t = RuleSet::DEFAULT.repeat_loop_views))]
    pub repeat_loop_views: u32,
    /// Batch rule `bot_farm`: this many users viewing one video in one UTC
    /// hour with one device, country, referrer, quality and watch band are
    /// all filtered (0: off).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "bot_farm_accounts", long = "bot-farm-accounts", env = "VIEWCOUNT_BOT_FARM_ACCOUNTS", value_name = "USERS", default_value_t = RuleSet::DEFAULT.bot_farm_accounts))]
    pub bot_farm_accounts: u32,
    /// Batch rule `bot_farm`: the width in seconds of its watch bands.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "bot_farm_watch_band", long = "bot-farm-watch-band", env = "VIEWCOUNT_BOT_FARM_WATCH_BAND", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.bot_farm_watch_band_seconds))]
    pub bot_farm_watch_band_seconds: u32,
    /// Batch rule `bot_farm`: views watched this many seconds or more are
    /// never a farm's (a class or an office on one network that watches a
    /// lecture to its end shares one fingerprint and one band; a farm
    /// paying a bot this long per view is no cheaper than the viewers it
    /// fakes). 0: no bound, as in rules v2.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "bot_farm_max_watch", long = "bot-farm-max-watch", env = "VIEWCOUNT_BOT_FARM_MAX_WATCH", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.bot_farm_max_watch_seconds))]
    pub bot_farm_max_watch_seconds: u32,
    /// Batch rule `bot_farm`: a band is a farm's only when its accounts are
    /// at least this share, in percent, of the accounts viewing its video
    /// in its hour with its fingerprint (farm candidates): a farm's watch
    /// times cluster in a band, a crowd from one link spreads over many.
    /// 0: any share, as in rules v2.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "bot_farm_share", long = "bot-farm-share", env = "VIEWCOUNT_BOT_FARM_SHARE", value_name = "PERCENT", default_value_t = RuleSet::DEFAULT.bot_farm_share_percent))]
    pub bot_farm_share_percent: u32,
    /// Batch rule `zero_engagement`: this many views of one video with no
    /// ad impression and under --zero-engagement-watch seconds, within
    /// --zero-engagement-window of each other in one UTC hour, are all
    /// filtered (0: off).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "zero_engagement_views", long = "zero-engagement-views", env = "VIEWCOUNT_ZERO_ENGAGEMENT_VIEWS", value_name = "VIEWS", default_value_t = RuleSet::DEFAULT.zero_engagement_views))]
    pub zero_engagement_views: u32,
    /// Batch rule `zero_engagement`: the watch seconds below which a view
    /// without ad impressions is a candidate.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "zero_engagement_watch", long = "zero-engagement-watch", env = "VIEWCOUNT_ZERO_ENGAGEMENT_WATCH", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.zero_engagement_watch_seconds))]
    pub zero_engagement_watch_seconds: u32,
    /// Batch rule `zero_engagement`: the burst's window, in seconds (how
    /// close, either side, the burst's views must be to each view).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "zero_engagement_window", long = "zero-engagement-window", env = "VIEWCOUNT_ZERO_ENGAGEMENT_WINDOW", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.zero_engagement_window_seconds))]
    pub zero_engagement_window_seconds: u32,
    /// Batch rule `token_replay`: at most this many billable views per
    /// verified playback (signed token), video and UTC day; the views
    /// after them are filtered (0: off).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "token_replay_views", long = "token-replay-views", env = "VIEWCOUNT_TOKEN_REPLAY_VIEWS", value_name = "VIEWS", default_value_t = RuleSet::DEFAULT.token_replay_views))]
    pub token_replay_views: u32,
    /// Batch rule `metronome`: a user's billable views of a UTC day that
    /// come back at a steady rhythm, this many in a row, are all filtered
    /// (0: off; else at least 3, as a rhythm needs two gaps).
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "metronome_views", long = "metronome-views", env = "VIEWCOUNT_METRONOME_VIEWS", value_name = "VIEWS", default_value_t = RuleSet::DEFAULT.metronome_views))]
    pub metronome_views: u32,
    /// Batch rule `metronome`: how far, in percent of the gap before it, a
    /// gap between two views' starts may differ and still keep the rhythm.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "metronome_jitter", long = "metronome-jitter", env = "VIEWCOUNT_METRONOME_JITTER", value_name = "PERCENT", default_value_t = RuleSet::DEFAULT.metronome_jitter_percent))]
    pub metronome_jitter_percent: u32,
    /// Batch rule `metronome`: the least idle time, in seconds, between the
    /// end of one view (its start plus its watch time) and the start of the
    /// next for the two to be beats of a rhythm: views one after another
    /// (a child's cartoon on repeat, a binge) never are.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(id = "metronome_idle", long = "metronome-idle", env = "VIEWCOUNT_METRONOME_IDLE", value_name = "SECONDS", default_value_t = RuleSet::DEFAULT.metronome_idle_seconds))]
    pub metronome_idle_seconds: u32,
}

/// A duration flag (`30d`, `5m`, `300s`, or bare seconds) as whole seconds.
#[cfg(feature = "cli")]
fn parse_seconds(s: &str) -> Result<u32, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration like 30d, 5m or 300s: {e}"))?,
    };
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: give whole seconds"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{s:?} is too long (at most 136 years)"))
}

/// The Kafka record header in which ingest states the acceptance limits it
/// validated the record with: `late_horizon_seconds,max_future_seconds`.
pub const LIMITS_HEADER: &str = "vc-limits";

impl RuleSet {
    /// The defaults, as a constant (the flags' defaults read them).
    pub const DEFAULT: RuleSet = RuleSet {
        max_future_seconds: 5 * 60,
        late_horizon_seconds: 30 * 24 * 3600,
        billable_min_watch_seconds: 30,
        fraud_cap_per_user_video_day: 10,
        impossible_watch_seconds: 0,
        impossible_watch_devices: 4,
        repeat_loop_views: 5,
        bot_farm_accounts: 10,
        bot_farm_watch_band_seconds: 5,
        bot_farm_max_watch_seconds: 300,
        bot_farm_share_percent: 25,
        zero_engagement_views: 20,
        zero_engagement_watch_seconds: 35,
        zero_engagement_window_seconds: 300,
        token_replay_views: 3,
        metronome_views: 6,
        metronome_jitter_percent: 10,
        metronome_idle_seconds: 60,
    };
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RuleSet {
    /// Whether a (first-seen) view is billable, before the fraud cap.
    pub fn is_billable(&self, event: &ViewEvent) -> bool {
        event.revenue_eligible && event.watch_seconds >= self.billable_min_watch_seconds
    }

    /// Checks the parameters that only make sense together: `Err` names the
    /// setting and what to give instead.
    pub fn check(&self) -> Result<(), String> {
        if self.bot_farm_accounts > 0 && self.bot_farm_watch_band_seconds == 0 {
            return Err(format!(
                "the bot-farm rule is on ({} accounts) but its watch band is 0 s; \
                 give --bot-farm-watch-band of at least 1 s, or --bot-farm-accounts 0 to turn the rule off",
                self.bot_farm_accounts
            ));
        }
        if self.zero_engagement_views > 0 && self.zero_engagement_watch_seconds == 0 {
            return Err(format!(
                "the zero-engagement rule is on ({} views) but its watch bound is 0 s, so no view is a candidate; \
                 give --zero-engagement-watch above --billable-min-watch, or --zero-engagement-views 0 to turn it off",
                self.zero_engagement_views
            ));
        }
        if self.bot_farm_share_percent > 100 {
            return Err(format!(
                "--bot-farm-share is {} %, but it is a share of a whole: give 0 to 100 (0 turns it off)",
                self.bot_farm_share_percent
            ));
        }
        if (1..3).contains(&self.metronome_views) {
            return Err(format!(
                "--metronome-views is {}, but a rhythm needs at least 3 views (two gaps to compare); \
                 give 3 or more, or 0 to turn the metronome rule off",
                self.metronome_views
            ));
        }
        if self.metronome_views > 0 && self.metronome_jitter_percent > 100 {
            return Err(format!(
                "--metronome-jitter is {} %, but a gap more than 100 % off the one before it keeps no rhythm; \
                 give 0 to 100",
                self.metronome_jitter_percent
            ));
        }
        Ok(())
    }

    /// How far in the future of its receipt an event may have occurred.
    pub fn max_future(&self) -> Duration {
        Duration::seconds(self.max_future_seconds.into())
    }

    /// How far in the past of its receipt an event may have occurred.
    pub fn late_horizon(&self) -> Duration {
        Duration::seconds(self.late_horizon_seconds.into())
    }

    /// The value of [`LIMITS_HEADER`] for records accepted under this set.
    pub fn limits_header(&self) -> String {
        format!("{},{}", self.late_horizon_seconds, self.max_future_seconds)
    }

    /// Checks a record's [`LIMITS_HEADER`] against this set: a consumer must
    /// accept at least what ingest accepted, else it would silently drop
    /// accepted views. `Err` names both sides and what to change.
    pub fn check_limits_header(&self, header: &[u8]) -> Result<(), String> {
        let parsed = std::str::from_utf8(header).ok().and_then(|s| {
            let (h, f) = s.split_once(',')?;
            Some((h.parse::<u32>().ok()?, f.parse::<u32>().ok()?))
        });
        let Some((horizon, future)) = parsed else {
            return Err(format!(
                "record header {LIMITS_HEADER}={:?} is not `late_horizon_seconds,max_future_seconds`",
                String::from_utf8_lossy(header)
            ));
        };
        if horizon > self.late_horizon_seconds || future > self.max_future_seconds {
            return Err(format!(
                "ingest accepted this record with a late horizon of {horizon} s and a max future of {future} s, \
                 but this layer runs with {} s and {} s, so it would drop views ingest answered 202 for; \
                 start every layer with the same --late-horizon and --max-future (VIEWCOUNT_LATE_HORIZON, VIEWCOUNT_MAX_FUTURE)",
                self.late_horizon_seconds, self.max_future_seconds
            ));
        }
        Ok(())
    }
}

/// The counting bucket: the start of the UTC hour of `t`.
pub fn hour_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    // Rounding a valid UTC time down to the hour cannot overflow.
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// The start of the UTC day of `t` (the fraud cap's window).
pub fn day_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::days(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_truncate_in_utc() {
        let t: DateTime<Utc> = "2026-11-21T13:59:59.999999Z".parse().unwrap();
        assert_eq!(hour_bucket(t).to_rfc3339(), "2026-11-21T13:00:00+00:00");
        assert_eq!(day_bucket(t).to_rfc3339(), "2026-11-21T00:00:00+00:00");
    }

    /// The default rule set's JSON without `fields`, as a manifest written
    /// before they existed has it.
    fn without(fields: &[&str]) -> serde_json::Map<String, serde_json::Value> {
        let mut json = serde_json::to_value(RuleSet::default()).unwrap();
        let map = json.as_object_mut().unwrap();
        for field in fields {
            assert!(map.remove(*field).is_some(), "no field {field}");
        }
        map.clone()
    }

    #[test]
    fn a_rule_set_from_before_rules_v3_reads_back_as_v2() {
        let mut v2 = without(&[
            "token_replay_views",
            "impossible_watch_devices",
            "bot_farm_max_watch_seconds",
            "bot_farm_share_percent",
            "metronome_views",
            "metronome_jitter_percent",
            "metronome_idle_seconds",
        ]);
        v2.insert("impossible_watch_seconds".into(), 14_400.into());
        let rules: RuleSet = serde_json::from_value(serde_json::Value::Object(v2)).unwrap();
        assert_eq!(
            rules,
            RuleSet {
                token_replay_views: 0,
                impossible_watch_devices: 0,
                impossible_watch_seconds: 14_400,
                bot_farm_max_watch_seconds: 0,
                bot_farm_share_percent: 0,
                metronome_views: 0,
                metronome_jitter_percent: 0,
                metronome_idle_seconds: 0,
                ..RuleSet::default()
            }
        );
    }

    #[test]
    fn a_rule_set_from_before_the_metronome_reads_back_without_it() {
        let v3 = without(&[
            "metronome_views",
            "metronome_jitter_percent",
            "metronome_idle_seconds",
            "bot_farm_max_watch_seconds",
        ]);
        let rules: RuleSet = serde_json::from_value(serde_json::Value::Object(v3)).unwrap();
        assert_eq!(rules.metronome_views, 0, "the rule is off: {rules:?}");
        assert_eq!(
            rules.bot_farm_max_watch_seconds, 0,
            "farms of any watch time"
        );
        let alone = RuleSet {
            impossible_watch_devices: 0,
            ..rules
        };
        assert!(!alone.late_views_reach_back());
        assert!(
            RuleSet {
                metronome_views: 6,
                ..alone
            }
            .late_views_reach_back(),
            "a late view can break or make a rhythm earlier in its day"
        );
        for views in [1, 2] {
            let bad = RuleSet {
                metronome_views: views,
                ..RuleSet::default()
            };
            assert!(bad.check().unwrap_err().contains("--metronome-views"));
        }
        let ok = RuleSet {
            metronome_views: 3,
            ..RuleSet::default()
        };
        assert_eq!(ok.check(), Ok(()));
    }

    #[test]
    fn a_rule_set_from_before_the_farm_share_reads_back_without_it() {
        let old = without(&["bot_farm_share_percent"]);
        let rules: RuleSet = serde_json::from_value(serde_json::Value::Object(old)).unwrap();
        assert_eq!(
            rules,
            RuleSet {
                bot_farm_share_percent: 0,
                ..RuleSet::default()
            }
        );
        let bad = RuleSet {
            bot_farm_share_percent: 101,
            ..RuleSet::default()
        };
        assert!(
            bad.check().unwrap_err().contains("--bot-farm-share"),
            "{bad:?}"
        );
    }

    #[test]
    fn a_rule_set_from_before_rules_v2_reads_back_as_v1() {
        let v1 = r#"{"max_future_seconds":300,"late_horizon_seconds":2592000,"billable_min_watch_seconds":30,"fraud_cap_per_user_video_day":10}"#;
        let rules: RuleSet = serde_json::from_str(v1).unwrap();
        // v1's daily cap alone: every later rule reads back off.
        assert_eq!(
            rules,
            RuleSet {
                impossible_watch_seconds: 0,
                impossible_watch_devices: 0,
                repeat_loop_views: 0,
                bot_farm_accounts: 0,
                bot_farm_watch_band_seconds: 0,
                bot_farm_max_watch_seconds: 0,
                bot_farm_share_percent: 0,
                zero_engagement_views: 0,
                zero_engagement_watch_seconds: 0,
                zero_engagement_window_seconds: 0,
                token_replay_views: 0,
                metronome_views: 0,
                metronome_jitter_percent: 0,
                metronome_idle_seconds: 0,
                ..RuleSet::default()
            }
        );
        let round: RuleSet =
            serde_json::from_str(&serde_json::to_string(&RuleSet::default()).unwrap()).unwrap();
        assert_eq!(round, RuleSet::default());
        assert_eq!(RuleSet::default().check(), Ok(()));
        let bad = RuleSet {
            bot_farm_watch_band_seconds: 0,
            ..RuleSet::default()
        };
        assert!(bad.check().unwrap_err().contains("--bot-farm-watch-band"));
    }

    /// The flags' defaults are the rule set's, and durations parse as
    /// whole seconds.
    #[cfg(feature = "cli")]
    #[test]
    fn the_flags_default_to_the_rule_set() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            rules: RuleSet,
        }
        let parse = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|f| f.rules)
        };
        assert_eq!(parse(&[]).unwrap(), RuleSet::default());
        let r = parse(&[
            "--late-horizon",
            "60d",
            "--max-future",
            "600",
            "--fraud-cap",
            "3",
        ])
        .unwrap();
        assert_eq!(
            (
                r.late_horizon_seconds,
                r.max_future_seconds,
                r.fraud_cap_per_user_video_day
            ),
            (60 * 86_400, 600, 3)
        );
        assert!(parse(&["--late-horizon", "1.5s"]).is_err());
        assert!(parse(&["--max-future", "soon"]).is_err());
    }

    #[test]
    fn a_consumer_must_accept_at_least_what_ingest_accepted() {
        let ingest = RuleSet {
            late_horizon_seconds: 60 * 86_400,
            ..RuleSet::default()
        };
        let header = ingest.limits_header();
        assert_eq!(ingest.check_limits_header(header.as_bytes()), Ok(()));
        let narrow = RuleSet::default();
        let err = narrow.check_limits_header(header.as_bytes()).unwrap_err();
        assert!(
            err.contains("5184000 s") && err.contains("--late-horizon"),
            "{err}"
        );
        // Wider consumers are fine (widen consumers first, then ingest).
        assert_eq!(
            ingest.check_limits_header(narrow.limits_header().as_bytes()),
            Ok(())
        );
        assert!(narrow.check_limits_header(b"junk").is_err());
    }
}
