//! Labelled traffic mixed into the organic stream: patterns of invalid
//! traffic (what fraud rules must catch) and organic hard cases (what they
//! must leave alone), each an episode of events with its own parameters.
//!
//! An episode is generated whole when the generator's draw picks it, and
//! its events are emitted one after another; their `occurred_at` spread
//! over the episode's own duration from the generator's current position,
//! moved earlier if needed so that none is past the end of the span (the
//! last organic events' time). Every event carries its [`Label`]; a
//! re-send of it carries the same label.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::vocab::{COUNTRIES, DEVICES, ORGANIC_REFERRER, QUALITIES, video_id};
use crate::{Error, Result};

/// What produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    /// Ordinary viewing: a random user, a Zipf-popular video.
    Organic,
    /// Organic hard case: a burst of a popular video's real fans (distinct
    /// users, organic watch times) within minutes, as at a premiere.
    Fans,
    /// Organic hard case: one account shared by a household, on several
    /// devices at once, over a few hours (a video now and then twice).
    Household,
    /// Organic hard case: one user watching video after video for hours.
    Binge,
    /// Organic hard case: a class on one network (one device kind,
    /// country, referrer and quality) watching one lecture, most to its
    /// end, starting within minutes.
    Classroom,
    /// Organic hard case: a clip shared from one external link, several
    /// hundred distinct people arriving in a front-loaded burst over tens
    /// of minutes with that link's referrer, mostly on phones in one
    /// country: many bounce before the billable minimum, the rest watch
    /// up to a minute and a half, few see an ad.
    SharedLink,
    /// Organic hard case: a trending short (31–45 s, no ads) watched by
    /// many distinct people over hours, mostly on phones, almost all to
    /// its end, a few leaving early, some looping it once in the same
    /// session.
    TrendingShort,
    /// Invalid: one user replaying one video far past organic behaviour,
    /// a fresh session each time, near-identical watch times.
    RepeatLoop,
    /// Invalid: many fresh user ids sharing one fingerprint (device,
    /// country, referrer, quality, a narrow band of watch times) viewing a
    /// few videos in a burst.
    BotFarm,
    /// Invalid: one user reporting more watch time within an hour than an
    /// hour holds on any plausible number of devices.
    ImpossibleWatch,
    /// Invalid: a burst of views of one video from many users, each
    /// watching just past the billable minimum, with no ad impressions.
    ZeroEngagement,
    /// Invalid: a scheduler, its views coming back every few minutes
    /// (within 2 % of the period) for hours, from one account dripping over
    /// a few videos, or from a fresh account a beat on one video: under
    /// every hourly and daily limit.
    Scheduler,
}

impl Label {
    /// Every label: plain organic first (the generator's draws rely on it),
    /// then the organic hard cases, then the invalid patterns.
    pub const ALL: [Label; 12] = [
        Label::Organic,
        Label::Fans,
        Label::Household,
        Label::Binge,
        Label::Classroom,
        Label::SharedLink,
        Label::TrendingShort,
        Label::RepeatLoop,
        Label::BotFarm,
        Label::ImpossibleWatch,
        Label::ZeroEngagement,
        Label::Scheduler,
    ];

    /// The label's name in truth files and label files.
    pub fn name(self) -> &'static str {
        match self {
            Label::Organic => "organic",
            Label::Fans => "organic_fans",
            Label::Household => "organic_household",
            Label::Binge => "organic_binge",
            Label::Classroom => "organic_classroom",
            Label::SharedLink => "organic_shared_link",
            Label::TrendingShort => "organic_trending_short",
            Label::RepeatLoop => "repeat_loop",
            Label::BotFarm => "bot_farm",
            Label::ImpossibleWatch => "impossible_watch",
            Label::ZeroEngagement => "zero_engagement",
            Label::Scheduler => "scheduler",
        }
    }

    /// Whether the event is invalid traffic (its views should be filtered).
    pub fn is_invalid(self) -> bool {
        matches!(
            self,
            Label::RepeatLoop
                | Label::BotFarm
                | Label::ImpossibleWatch
                | Label::ZeroEngagement
                | Label::Scheduler
        )
    }

    /// How many invalid patterns there are (the fraud ratio's split).
    pub fn invalid_patterns() -> usize {
        Self::ALL.iter().filter(|l| l.is_invalid()).count()
    }

    /// How many organic hard cases there are (the hard-case ratio's split).
    pub fn hard_cases() -> usize {
        Self::ALL.len() - 1 - Self::invalid_patterns()
    }

    /// The episodes the generator can start, in draw order: every label
    /// but plain organic.
    fn episode(i: usize) -> Label {
        Self::ALL[i + 1]
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much labelled traffic, and each pattern's parameters. With both
/// ratios 0 (the default) the generator's events are exactly those of a
/// generator without this mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Fraction of events that are invalid traffic, split evenly over the
    /// invalid patterns.
    pub fraud_ratio: f64,
    /// Fraction of events from organic hard cases, split evenly over
    /// them.
    pub hard_case_ratio: f64,
    /// Views of one repeat loop.
    pub loop_views: u32,
    /// Minutes one repeat loop lasts.
    pub loop_minutes: u32,
    /// User ids of one bot farm.
    pub farm_bots: u32,
    /// Videos one bot farm views.
    pub farm_videos: u32,
    /// Views of each of those videos by each bot.
    pub farm_views_per_bot: u32,
    /// Minutes one bot farm's burst lasts.
    pub farm_minutes: u32,
    /// Views of one impossible-watch user within an hour.
    pub impossible_views: u32,
    /// Least watch seconds of each of those views (at most 3 600).
    pub impossible_min_watch: u32,
    /// Views of one zero-engagement burst.
    pub zero_views: u32,
    /// Minutes one zero-engagement burst lasts.
    pub zero_minutes: u32,
    /// Views of one fans' burst.
    pub fan_views: u32,
    /// Minutes one fans' burst lasts.
    pub fan_minutes: u32,
    /// Views of one household session.
    pub household_views: u32,
    /// Devices of one household (1 to 5).
    pub household_devices: u32,
    /// Hours one household session lasts.
    pub household_hours: u32,
    /// Videos of one binge.
    pub binge_views: u32,
    /// Hours one binge lasts at most.
    pub binge_hours: u32,
    /// Views of one scheduler.
    pub sched_views: u32,
    /// Minutes between one scheduler's views.
    pub sched_minutes: u32,
    /// Videos one scheduler drips over.
    pub sched_videos: u32,
    /// Pupils of one class.
    pub class_views: u32,
    /// Minutes over which a class starts watching.
    pub class_minutes: u32,
    /// Views of one clip shared from a link.
    pub link_views: u32,
    /// Minutes over which a shared link's views arrive.
    pub link_minutes: u32,
    /// Views of one trending short, loops included.
    pub short_views: u32,
    /// Hours over which a trending short's viewers arrive.
    pub short_hours: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            fraud_ratio: 0.0,
            hard_case_ratio: 0.0,
            loop_views: 40,
            loop_minutes: 60,
            farm_bots: 30,
            farm_videos: 2,
            farm_views_per_bot: 2,
            farm_minutes: 15,
            impossible_views: 12,
            impossible_min_watch: 1_800,
            zero_views: 60,
            zero_minutes: 5,
            fan_views: 150,
            fan_minutes: 20,
            household_views: 12,
            household_devices: 3,
            household_hours: 2,
            binge_views: 20,
            binge_hours: 4,
            sched_views: 16,
            sched_minutes: 15,
            sched_videos: 3,
            class_views: 30,
            class_minutes: 10,
            link_views: 300,
            link_minutes: 40,
            short_views: 400,
            short_hours: 4,
        }
    }
}

/// The labels an episode can have: all but plain organic.
pub(crate) const EPISODES: usize = Label::ALL.len() - 1;

/// The billable minimum the patterns aim just past (the default rules').
const MIN_BILLABLE_WATCH: u32 = 30;

/// User numbers each bot farm has for its accounts (past the organic
/// users: farm `n` numbers them from `users + n * FARM_ACCOUNTS`).
const FARM_ACCOUNTS: u32 = 10_000;

impl Mix {
    /// Sets one parameter by its field name (`loop_views=60`), for
    /// `viewcount gen --pattern`.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "--pattern {assignment}: expected NAME=NUMBER, e.g. loop_views=60"
            ))
        })?;
        let n: u32 = value.trim().parse().map_err(|_| {
            Error::Config(format!(
                "--pattern {assignment}: {value} is not a whole number"
            ))
        })?;
        let (_, slot) = self
            .params()
            .into_iter()
            .find(|(name, _)| *name == key.trim())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--pattern {assignment}: no parameter {}; known: {}",
                    key.trim(),
                    Self::names().join(", ")
                ))
            })?;
        *slot = n;
        Ok(())
    }

    /// Every parameter, by the name [`Mix::set`] knows it by.
    fn params(&mut self) -> [(&'static str, &mut u32); 26] {
        [
            ("loop_views", &mut self.loop_views),
            ("loop_minutes", &mut self.loop_minutes),
            ("farm_bots", &mut self.farm_bots),
            ("farm_videos", &mut self.farm_videos),
            ("farm_views_per_bot", &mut self.farm_views_per_bot),
            ("farm_minutes", &mut self.farm_minutes),
            ("impossible_views", &mut self.impossible_views),
            ("impossible_min_watch", &mut self.impossible_min_watch),
            ("zero_views", &mut self.zero_views),
            ("zero_minutes", &mut self.zero_minutes),
            ("fan_views", &mut self.fan_views),
            ("fan_minutes", &mut self.fan_minutes),
            ("household_views", &mut self.household_views),
            ("household_devices", &mut self.household_devices),
            ("household_hours", &mut self.household_hours),
            ("binge_views", &mut self.binge_views),
            ("binge_hours", &mut self.binge_hours),
            ("sched_views", &mut self.sched_views),
            ("sched_minutes", &mut self.sched_minutes),
            ("sched_videos", &mut self.sched_videos),
            ("class_views", &mut self.class_views),
            ("class_minutes", &mut self.class_minutes),
            ("link_views", &mut self.link_views),
            ("link_minutes", &mut self.link_minutes),
            ("short_views", &mut self.short_views),
            ("short_hours", &mut self.short_hours),
        ]
    }

    /// The parameter names [`Mix::set`] knows.
    pub fn names() -> [&'static str; 26] {
        Mix::default().params().map(|(name, _)| name)
    }

    pub(crate) fn check(&self, videos: u32) -> Result<()> {
        for (name, v) in [
            ("fraud ratio", self.fraud_ratio),
            ("hard case ratio", self.hard_case_ratio),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::Config(format!(
                    "{name} must be at least 0 and below 1, got {v}"
                )));
            }
        }
        if self.fraud_ratio + self.hard_case_ratio >= 1.0 {
            return Err(Error::Config(format!(
                "fraud ratio + hard case ratio must be below 1 (organic traffic needs a share), got {}",
                self.fraud_ratio + self.hard_case_ratio
            )));
        }
        let mut copy = *self;
        if let Some((name, _)) = copy.params().into_iter().find(|(_, v)| **v == 0) {
            return Err(Error::Config(format!(
                "pattern parameter {name} must be at least 1"
            )));
        }
        if !(1..=5).contains(&self.household_devices) {
            return Err(Error::Config(format!(
                "household_devices must be 1 to 5 (the device kinds), got {}",
                self.household_devices
            )));
        }
        if !(MIN_BILLABLE_WATCH..=3_600).contains(&self.impossible_min_watch) {
            return Err(Error::Config(format!(
                "impossible_min_watch must be {MIN_BILLABLE_WATCH} to 3600 seconds, got {}",
                self.impossible_min_watch
            )));
        }
        if self.farm_bots > FARM_ACCOUNTS {
            return Err(Error::Config(format!(
                "farm_bots must be at most {FARM_ACCOUNTS}, got {}",
                self.farm_bots
            )));
        }
        if self.farm_videos > videos {
            return Err(Error::Config(format!(
                "farm_videos ({}) exceeds the videos generated ({videos})",
                self.farm_videos
            )));
        }
        Ok(())
    }

    /// Events of one episode of `label`.
    fn size(&self, label: Label) -> u64 {
        u64::from(match label {
            Label::Organic => 1,
            Label::Fans => self.fan_views,
            Label::Household => self.household_views,
            Label::Binge => self.binge_views,
            Label::RepeatLoop => self.loop_views,
            Label::BotFarm => {
                return u64::from(self.farm_bots)
                    * u64::from(self.farm_videos)
                    * u64::from(self.farm_views_per_bot);
            }
            Label::ImpossibleWatch => self.impossible_views,
            Label::ZeroEngagement => self.zero_views,
            Label::Scheduler => self.sched_views,
            Label::Classroom => self.class_views,
            Label::SharedLink => self.link_views,
            Label::TrendingShort => self.short_views,
        })
    }

    /// Each episode's chance per roll of the generator, so that each
    /// pattern's share of *events* is its ratio's share: a roll that starts
    /// an episode emits its size in events, any other roll one event.
    pub(crate) fn chances(&self) -> [f64; EPISODES] {
        let share = |l: Label| {
            if l.is_invalid() {
                self.fraud_ratio / Label::invalid_patterns() as f64
            } else {
                self.hard_case_ratio / Label::hard_cases() as f64
            }
        };
        // Events per roll on average: 1 / (1 - sum share (L - 1) / L).
        let extra: f64 = Label::ALL[1..]
            .iter()
            .map(|&l| {
                let size = self.size(l) as f64;
                share(l) * (size - 1.0) / size
            })
            .sum();
        let per_roll = 1.0 / (1.0 - extra);
        std::array::from_fn(|i| {
            let l = Label::episode(i);
            share(l) * per_roll / self.size(l) as f64
        })
    }
}

/// The episode a roll picks under `chances` ([`Mix::chances`]), if any:
/// `roll` is counted from the end of the other kinds' share.
pub(crate) fn pick(chances: &[f64; EPISODES], roll: f64) -> Option<Label> {
    let mut edge = 0.0;
    for (l, p) in Label::ALL[1..].iter().zip(chances) {
        edge += p;
        if roll < edge {
            return Some(*l);
        }
    }
    None
}

/// The learning platform a class follows its lecture's link from.
const CLASS_REFERRER: &str = "https://learn.example.edu/course/1";

/// The external link a shared clip's viewers follow.
const LINK_REFERRER: &str = "https://t.co/c1ipSh4re";

/// The device kind most of a shared link's and a trending short's viewers
/// watch on.
const MOBILE: &str = DEVICES[1];

/// Organic events' one referrer, and a bot farm's other choice.
const REFERRERS: [&str; 2] = [ORGANIC_REFERRER, "https://example.net/promo"];

/// One view of an episode.
#[derive(Debug, Default)]
pub(crate) struct View {
    user: String,
    video: String,
    at: DateTime<Utc>,
    watch: u32,
    eligible: bool,
    session: Option<String>,
    device: Option<&'static str>,
    country: Option<&'static str>,
    quality: Option<&'static str>,
    referrer: Option<&'static str>,
    ads: Option<u32>,
}

impl View {
    fn json(self, rng: &mut ChaCha8Rng) -> Value {
        let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let mut e = json!({
            "event_id": id.hyphenated().to_string(),
            "video_id": self.video,
            "user_id": self.user,
            "occurred_at": schemas::event::format_timestamp(&self.at),
            "watch_seconds": self.watch.min(86_400),
            "revenue_eligible": self.eligible,
        });
        self.set_optional(&mut e);
        e
    }

    /// Sets the optional fields this view has on `e`.
    pub(crate) fn set_optional(self, e: &mut Value) {
        let mut opt = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                e[k] = v;
            }
        };
        opt("session_id", self.session.map(Value::from));
        opt("device", self.device.map(Value::from));
        opt("country", self.country.map(Value::from));
        opt("quality", self.quality.map(Value::from));
        opt("referrer", self.referrer.map(Value::from));
        opt("ad_impressions", self.ads.map(Value::from));
    }
}

/// An organic view's optional fields (session, device, country, quality,
/// referrer, ad impressions) for user number `user`, drawn in this order:
/// the plain generator's event streams depend on it.
pub(crate) fn organic_optional(r: &mut ChaCha8Rng, user: u32) -> View {
    View {
        session: r
            .random_bool(0.8)
            .then(|| format!("s{user}-{}", r.random_range(0..8u32))),
        device: r
            .random_bool(0.9)
            .then(|| DEVICES[r.random_range(0..DEVICES.len())]),
        country: r
            .random_bool(0.7)
            .then(|| COUNTRIES[r.random_range(0..COUNTRIES.len())]),
        quality: r
            .random_bool(0.5)
            .then(|| QUALITIES[r.random_range(0..QUALITIES.len())]),
        referrer: r.random_bool(0.3).then_some(ORGANIC_REFERRER),
        ads: r.random_bool(0.4).then(|| r.random_range(0..4u32)),
        ..View::default()
    }
}

/// What an episode draws from the generator.
pub(crate) struct Draw<'a> {
    pub rng: &'a mut ChaCha8Rng,
    /// A Zipf-popular video's id.
    pub video: &'a mut dyn FnMut(&mut ChaCha8Rng) -> String,
    /// An organic watch time.
    pub watch: &'a mut dyn FnMut(&mut ChaCha8Rng) -> u32,
    pub users: u32,
    pub videos: u32,
    pub revenue_ratio: f64,
    /// Where the generator is, and the end of its span.
    pub at: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Episodes started so far (names a bot farm's accounts).
    pub serial: u64,
}

impl Draw<'_> {
    /// `usual` with probability `p`, else any of `from` (which may be
    /// `usual` again).
    fn mostly<T: Copy>(&mut self, p: f64, usual: T, from: &[T]) -> T {
        if self.rng.random_bool(p) {
            usual
        } else {
            self.pick(from)
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.random_range(0..from.len())]
    }

    fn user(&mut self) -> u32 {
        self.rng.random_range(0..self.users)
    }

    /// Where an episode lasting `d` starts: here, or earlier so that it
    /// ends by the end of the span (at the start if it is longer).
    fn window(&self, d: Duration) -> DateTime<Utc> {
        self.at.min(self.end - d).max(self.start)
    }

    /// `n` distinct users (each again in turn past the pool's size).
    fn people(&mut self, n: u32) -> Vec<u32> {
        sample(self.rng, self.users as usize, n.min(self.users) as usize)
            .into_iter()
            .map(|u| u as u32)
            .collect()
    }

    /// A moment in `[t0, t0 + d)` from a burst fading from `t0` (an
    /// exponential over `d` cut at `decay` mean lifetimes), not past the
    /// end of the span.
    fn fading(&mut self, t0: DateTime<Utc>, d: Duration, decay: f64) -> DateTime<Utc> {
        let us = d.num_microseconds().unwrap_or(i64::MAX).max(1);
        let u: f64 = self.rng.random();
        let f = -(1.0 - u * (1.0 - (-decay).exp())).ln() / decay;
        let t = t0 + Duration::microseconds(((us as f64 * f) as i64).clamp(0, us - 1));
        t.min(self.end - Duration::microseconds(1)).max(self.start)
    }

    /// A moment in `[t0, t0 + d)`, not past the end of the span.
    fn within(&mut self, t0: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
        let us = d.num_microseconds().unwrap_or(i64::MAX).max(1);
        let t = t0 + Duration::microseconds(self.rng.random_range(0..us));
        t.min(self.end - Duration::microseconds(1)).max(self.start)
    }
}

/// The events of one episode of `label`, in `occurred_at` order.
pub(crate) fn episode(mix: &Mix, label: Label, d: &mut Draw<'_>) -> Vec<Value> {
    let minutes = |m: u32| Duration::minutes(i64::from(m));
    let mut views: Vec<View> = Vec::new();
    match label {
        Label::Organic => {}
        Label::RepeatLoop => {
            let span = minutes(mix.loop_minutes);
            let t0 = d.window(span);
            let user = d.user();
            let video = (d.video)(d.rng);
            let watch = d.rng.random_range(35..70u32);
            let device = d.pick(&DEVICES);
            let country = d.pick(&COUNTRIES);
            for i in 0..mix.loop_views {
                views.push(View {
                    user: format!("u{user}"),
                    video: video.clone(),
                    at: d.within(t0, span),
                    watch: watch + d.rng.random_range(0..3u32),
                    eligible: true,
                    session: Some(format!("s{user}-loop{}-{i}", d.serial)),
                    device: Some(device),
                    country: Some(country),
                    ..View::default()
                });
            }
        }
        Label::BotFarm => {
            let span = minutes(mix.farm_minutes);
            let t0 = d.window(span);
            let targets: Vec<u32> = sample(
                d.rng,
                d.videos as usize,
                (mix.farm_videos as usize).min(d.videos as usize),
            )
            .into_iter()
            .map(|v| v as u32 + 1)
            .collect();
            let device = d.pick(&DEVICES);
            let country = d.pick(&COUNTRIES);
            let quality = d.pick(&QUALITIES);
            let referrer = d.pick(&REFERRERS);
            let watch = d
                .rng
                .random_range(MIN_BILLABLE_WATCH + 1..MIN_BILLABLE_WATCH + 15);
            for bot in 0..mix.farm_bots {
                // Fresh accounts, numbered past the organic users.
                let user = format!(
                    "u{}",
                    u64::from(d.users) + d.serial * u64::from(FARM_ACCOUNTS) + u64::from(bot)
                );
                for &v in &targets {
                    for k in 0..mix.farm_views_per_bot {
                        views.push(View {
                            user: user.clone(),
                            video: video_id(v),
                            at: d.within(t0, span),
                            watch: watch + d.rng.random_range(0..3u32),
                            eligible: true,
                            session: Some(format!("{user}-{k}")),
                            device: Some(device),
                            country: Some(country),
                            quality: Some(quality),
                            referrer: Some(referrer),
                            ..View::default()
                        });
                    }
                }
            }
        }
        Label::ImpossibleWatch => {
            // Within one UTC hour (the span's end may cut it short).
            let hour = Duration::hours(1);
            let t0 = schemas::rules::hour_bucket(d.window(hour)).max(d.start);
            let span = (schemas::rules::hour_bucket(t0) + hour).min(d.end) - t0;
            let user = d.user();
            for i in 0..mix.impossible_views {
                let video = (d.video)(d.rng);
                let device = d.pick(&DEVICES);
                views.push(View {
                    user: format!("u{user}"),
                    video,
                    at: d.within(t0, span),
                    watch: d.rng.random_range(mix.impossible_min_watch..=3_600),
                    eligible: true,
                    session: Some(format!("s{user}-w{}-{i}", d.serial)),
                    device: Some(device),
                    ..View::default()
                });
            }
        }
        Label::ZeroEngagement => {
            let span = minutes(mix.zero_minutes);
            let t0 = d.window(span);
            let video = (d.video)(d.rng);
            for _ in 0..mix.zero_views {
                let user = d.user();
                let device = d.pick(&DEVICES);
                views.push(View {
                    user: format!("u{user}"),
                    video: video.clone(),
                    at: d.within(t0, span),
                    watch: d
                        .rng
                        .random_range(MIN_BILLABLE_WATCH..MIN_BILLABLE_WATCH + 3),
                    eligible: true,
                    device: Some(device),
                    ads: Some(0),
                    ..View::default()
                });
            }
        }
        Label::Scheduler => {
            let period = minutes(mix.sched_minutes);
            let period_us = period.num_microseconds().unwrap_or(i64::MAX);
            let t0 = d.window(period * mix.sched_views.saturating_sub(1) as i32);
            let user = d.user();
            // Half of them post each beat from a fresh account, to one
            // video, with one device and country.
            let rotate = d.rng.random_bool(0.5);
            let videos: Vec<String> = (0..if rotate { 1 } else { mix.sched_videos })
                .map(|_| (d.video)(d.rng))
                .collect();
            let device = d.pick(&DEVICES);
            let country = d.pick(&COUNTRIES);
            for i in 0..mix.sched_views {
                let user = if rotate {
                    u64::from(d.users) + d.serial * u64::from(FARM_ACCOUNTS) + u64::from(i)
                } else {
                    u64::from(user)
                };
                // Each beat within 2 % of the period from its place.
                let jitter = d.rng.random_range(-period_us / 50..=period_us / 50);
                let at = t0 + Duration::microseconds(period_us * i64::from(i) + jitter);
                views.push(View {
                    user: format!("u{user}"),
                    video: videos[i as usize % videos.len()].clone(),
                    at: at.min(d.end - Duration::microseconds(1)).max(d.start),
                    watch: d
                        .rng
                        .random_range(MIN_BILLABLE_WATCH + 1..MIN_BILLABLE_WATCH + 20),
                    eligible: true,
                    session: Some(format!("s{user}-sched{}-{i}", d.serial)),
                    device: Some(device),
                    country: rotate.then_some(country),
                    ..View::default()
                });
            }
        }
        Label::Classroom => {
            let span = minutes(mix.class_minutes);
            let t0 = d.window(span + Duration::hours(1));
            let video = (d.video)(d.rng);
            let lecture = d.rng.random_range(900..3_600u32);
            let device = d.pick(&DEVICES);
            let country = d.pick(&COUNTRIES);
            let quality = d.pick(&QUALITIES);
            for _ in 0..mix.class_views {
                let user = d.user();
                // Most watch to the end; some leave early.
                let watch = if d.rng.random_bool(0.8) {
                    lecture
                } else {
                    d.rng.random_range(MIN_BILLABLE_WATCH..lecture)
                };
                views.push(View {
                    user: format!("u{user}"),
                    video: video.clone(),
                    at: d.within(t0, span),
                    watch,
                    eligible: true,
                    session: Some(format!("s{user}-class{}", d.serial)),
                    device: Some(device),
                    country: Some(country),
                    quality: Some(quality),
                    referrer: Some(CLASS_REFERRER),
                    ads: Some(d.rng.random_range(0..3u32)),
                });
            }
        }
        Label::SharedLink => {
            let span = minutes(mix.link_minutes);
            let t0 = d.window(span);
            let video = (d.video)(d.rng);
            let country = d.pick(&COUNTRIES);
            let quality = d.pick(&QUALITIES);
            // The first post, then a re-share or two later on: each a
            // burst fading within minutes; most come with the first.
            let reshares: Vec<Duration> = (0..d.rng.random_range(1..=2))
                .map(|_| span * d.rng.random_range(15..70) / 100)
                .collect();
            let people = d.people(mix.link_views);
            for i in 0..mix.link_views {
                let user = people[i as usize % people.len()];
                let at = if d.rng.random_bool(0.75) {
                    d.fading(t0, span, 6.0)
                } else {
                    let from = reshares[d.rng.random_range(0..reshares.len())];
                    d.fading(t0 + from, span - from, 4.0)
                };
                // Many bounce; the rest spread up to a minute and a half.
                let watch = if d.rng.random_bool(0.35) {
                    d.rng.random_range(1..MIN_BILLABLE_WATCH)
                } else {
                    d.rng.random_range(MIN_BILLABLE_WATCH..=90)
                };
                let device = d.mostly(0.85, MOBILE, &DEVICES);
                let country = d.mostly(0.9, country, &COUNTRIES);
                let quality = d.mostly(0.85, quality, &QUALITIES);
                views.push(View {
                    user: format!("u{user}"),
                    video: video.clone(),
                    at,
                    watch,
                    eligible: true,
                    session: Some(format!("s{user}-link{}", d.serial)),
                    device: Some(device),
                    country: Some(country),
                    quality: Some(quality),
                    referrer: Some(LINK_REFERRER),
                    ads: Some(u32::from(d.rng.random_bool(0.2))),
                });
            }
        }
        Label::TrendingShort => {
            let span = Duration::hours(i64::from(mix.short_hours));
            // Room past the last arrival for its loop.
            let t0 = d.window(span + Duration::minutes(2));
            let video = (d.video)(d.rng);
            let length = d.rng.random_range(31..=45u32);
            // Trending in one region first: most share its country and
            // the quality its networks give.
            let country = d.pick(&COUNTRIES);
            let quality = d.pick(&QUALITIES);
            let people = d.people(mix.short_views);
            // First views not looped yet, by their place in `views`.
            let mut unlooped: Vec<usize> = Vec::new();
            let mut viewers = 0;
            for _ in 0..mix.short_views {
                let whole = length - d.rng.random_range(0..=1u32);
                // Some watch it again straight away, in the same session.
                if !unlooped.is_empty() && d.rng.random_bool(0.15) {
                    let first = &views[unlooped.swap_remove(d.rng.random_range(0..unlooped.len()))];
                    let gap = i64::from(first.watch) + d.rng.random_range(1..=10);
                    let again = View {
                        user: first.user.clone(),
                        video: video.clone(),
                        at: (first.at + Duration::seconds(gap))
                            .min(d.end - Duration::microseconds(1)),
                        watch: whole,
                        eligible: true,
                        session: first.session.clone(),
                        device: first.device,
                        country: first.country,
                        quality: first.quality,
                        referrer: first.referrer,
                        ads: Some(0),
                    };
                    views.push(again);
                    continue;
                }
                let user = people[viewers % people.len()];
                viewers += 1;
                // Almost all to its end; a few leave early.
                let watch = if d.rng.random_bool(0.92) {
                    whole
                } else {
                    d.rng.random_range(1..length - 1)
                };
                let device = d.mostly(0.9, MOBILE, &DEVICES);
                let country = d.mostly(0.8, country, &COUNTRIES);
                let quality = d.mostly(0.8, quality, &QUALITIES);
                unlooped.push(views.len());
                views.push(View {
                    user: format!("u{user}"),
                    video: video.clone(),
                    // Most come while it trends, fewer after.
                    at: d.fading(t0, span, 3.0),
                    watch,
                    eligible: true,
                    session: Some(format!("s{user}-short{}", d.serial)),
                    device: Some(device),
                    country: Some(country),
                    quality: Some(quality),
                    referrer: d.rng.random_bool(0.3).then_some(ORGANIC_REFERRER),
                    ads: Some(0),
                });
            }
        }
        Label::Fans => {
            let span = minutes(mix.fan_minutes);
            let t0 = d.window(span);
            let video = video_id(d.rng.random_range(1..=d.videos.min(3)));
            for _ in 0..mix.fan_views {
                let user = d.user();
                let watch = (d.watch)(d.rng);
                let at = d.within(t0, span);
                views.push(organic_view(d, user, video.clone(), at, watch, None));
            }
        }
        Label::Household => {
            let span = Duration::hours(i64::from(mix.household_hours));
            let t0 = d.window(span);
            let user = d.user();
            let devices: Vec<&'static str> =
                sample(d.rng, DEVICES.len(), mix.household_devices as usize)
                    .into_iter()
                    .map(|i| DEVICES[i])
                    .collect();
            let mut last: Option<String> = None;
            for i in 0..mix.household_views {
                // A child watches the same video again now and then.
                let video = match &last {
                    Some(v) if d.rng.random_bool(0.25) => v.clone(),
                    _ => (d.video)(d.rng),
                };
                last = Some(video.clone());
                let watch = ((d.watch)(d.rng) * 3).min(3_600);
                let device = devices[i as usize % devices.len()];
                let at = d.within(t0, span);
                views.push(organic_view(d, user, video, at, watch, Some(device)));
            }
        }
        Label::Binge => {
            let limit = Duration::hours(i64::from(mix.binge_hours));
            let user = d.user();
            let device = d.pick(&DEVICES);
            let mut at = d.window(limit);
            let until = (at + limit).min(d.end);
            for _ in 0..mix.binge_views {
                let video = (d.video)(d.rng);
                let watch = d.rng.random_range(120..900u32);
                if at >= until {
                    break;
                }
                views.push(organic_view(d, user, video, at, watch, Some(device)));
                at += Duration::seconds(i64::from(watch) + d.rng.random_range(5..60));
            }
        }
    }
    views.sort_by_key(|v| v.at);
    views.into_iter().map(|v| v.json(d.rng)).collect()
}

/// A view with organic optional fields, as the generator's own have them
/// (`device`, if given, in place of a drawn one).
fn organic_view(
    d: &mut Draw<'_>,
    user: u32,
    video: String,
    at: DateTime<Utc>,
    watch: u32,
    device: Option<&'static str>,
) -> View {
    let optional = organic_optional(d.rng, user);
    View {
        user: format!("u{user}"),
        video,
        at,
        watch,
        eligible: d.rng.random_bool(d.revenue_ratio),
        device: device.or(optional.device),
        ..optional
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::SeedableRng;
    use rand_distr::{Distribution, Exp, Zipf};

    use super::*;

    fn ts(v: &Value) -> DateTime<Utc> {
        v["occurred_at"].as_str().unwrap().parse().unwrap()
    }

    fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
        v.get(k).and_then(Value::as_str)
    }

    fn watch(v: &Value) -> u64 {
        v["watch_seconds"].as_u64().unwrap()
    }

    /// An episode of `label` under `mix`, from a generator 2 hours into a
    /// 6-hour span of 1 000 users and 100 videos.
    fn one(mix: &Mix, label: Label, seed: u64) -> (Vec<Value>, DateTime<Utc>, DateTime<Utc>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let zipf = Zipf::new(100.0, 1.1).unwrap();
        let exp: Exp<f64> = Exp::new(1.0 / 90.0).unwrap();
        let start: DateTime<Utc> = "2026-11-21T00:00:00Z".parse().unwrap();
        let end = start + Duration::hours(6);
        let mut d = Draw {
            rng: &mut rng,
            video: &mut |r: &mut ChaCha8Rng| video_id(zipf.sample(r) as u32),
            watch: &mut |r: &mut ChaCha8Rng| Distribution::<f64>::sample(&exp, r).round() as u32,
            users: 1_000,
            videos: 100,
            revenue_ratio: 0.8,
            at: start + Duration::hours(2),
            start,
            end,
            serial: 3,
        };
        (episode(mix, label, &mut d), start, end)
    }

    /// Checks that every event of an episode is valid; the events.
    fn valid(events: &[Value]) -> Vec<schemas::ViewEvent> {
        let ctx = schemas::ValidationContext::at("2026-11-21T06:00:00Z".parse().unwrap());
        events
            .iter()
            .map(|e| schemas::parse_event(e, &ctx).unwrap_or_else(|r| panic!("{e}: {r}")))
            .collect()
    }

    #[test]
    fn a_repeat_loop_is_one_user_one_video_fresh_sessions_alike_watch() {
        let mix = Mix::default();
        let (e, ..) = one(&mix, Label::RepeatLoop, 1);
        valid(&e);
        assert_eq!(e.len(), mix.loop_views as usize);
        let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
        let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
        let sessions: BTreeSet<_> = e.iter().map(|v| s(v, "session_id")).collect();
        assert_eq!((users.len(), videos.len(), sessions.len()), (1, 1, e.len()));
        let w: Vec<u64> = e.iter().map(watch).collect();
        assert!(
            w.iter().max().unwrap() - w.iter().min().unwrap() <= 2,
            "{w:?}"
        );
        let span = ts(e.last().unwrap()) - ts(&e[0]);
        assert!(span <= Duration::minutes(i64::from(mix.loop_minutes)));
        assert!(e.iter().all(|v| v["revenue_eligible"] == json!(true)));
    }

    #[test]
    fn a_bot_farm_is_fresh_accounts_sharing_one_fingerprint() {
        let mix = Mix::default();
        let (e, ..) = one(&mix, Label::BotFarm, 2);
        valid(&e);
        assert_eq!(
            e.len(),
            (mix.farm_bots * mix.farm_videos * mix.farm_views_per_bot) as usize
        );
        let users: BTreeSet<&str> = e.iter().filter_map(|v| s(v, "user_id")).collect();
        assert_eq!(users.len(), mix.farm_bots as usize);
        // Numbered past the 1 000 organic users: accounts made for the farm.
        assert!(
            users
                .iter()
                .all(|u| u[1..].parse::<u64>().unwrap() >= 1_000)
        );
        for k in ["device", "country", "quality", "referrer"] {
            let values: BTreeSet<_> = e.iter().map(|v| s(v, k)).collect();
            assert_eq!(values.len(), 1, "{k}: {values:?}");
            assert!(values.iter().all(Option::is_some), "{k} is always set");
        }
        let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
        assert_eq!(videos.len(), mix.farm_videos as usize);
        let w: Vec<u64> = e.iter().map(watch).collect();
        assert!(w.iter().max().unwrap() - w.iter().min().unwrap() <= 2);
        assert!(*w.iter().min().unwrap() > u64::from(MIN_BILLABLE_WATCH));
        let span = ts(e.last().unwrap()) - ts(&e[0]);
        assert!(span <= Duration::minutes(i64::from(mix.farm_minutes)));
    }

    #[test]
    fn impossible_watch_is_more_than_four_devices_can_hold_in_an_hour() {
        let mix = Mix::default();
        let (e, ..) = one(&mix, Label::ImpossibleWatch, 3);
        valid(&e);
        let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
        assert_eq!(users.len(), 1);
        assert!(ts(e.last().unwrap()) - ts(&e[0]) < Duration::hours(1));
        let total: u64 = e.iter().map(watch).sum();
        assert!(total > 4 * 3_600, "{total}");
        let hours: BTreeSet<i64> = e.iter().map(|v| ts(v).timestamp() / 3_600).collect();
        assert_eq!(hours.len(), 1, "one UTC hour");
    }

    #[test]
    fn zero_engagement_is_a_burst_just_past_the_billable_minimum_without_ads() {
        let mix = Mix::default();
        let (e, ..) = one(&mix, Label::ZeroEngagement, 4);
        valid(&e);
        assert_eq!(e.len(), mix.zero_views as usize);
        let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
        assert_eq!(videos.len(), 1);
        assert!(e.iter().all(|v| (30..33).contains(&watch(v))));
        assert!(e.iter().all(|v| v["ad_impressions"] == json!(0)));
        assert!(ts(e.last().unwrap()) - ts(&e[0]) <= Duration::minutes(5));
    }

    #[test]
    fn a_scheduler_keeps_its_beat_under_every_other_limit() {
        let mix = Mix::default();
        let rotated: BTreeSet<bool> = (6..14)
            .map(|seed| scheduler_keeps_its_beat(&mix, seed))
            .collect();
        assert_eq!(rotated.len(), 2, "both kinds of scheduler occur");
    }

    /// Checks one scheduler; whether it rotated accounts.
    fn scheduler_keeps_its_beat(mix: &Mix, seed: u64) -> bool {
        let (e, ..) = one(mix, Label::Scheduler, seed);
        let views = valid(&e);
        assert_eq!(e.len(), mix.sched_views as usize);
        let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
        let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
        assert!(videos.len() <= mix.sched_videos as usize);
        // One account over a few videos, or an account a beat on one.
        assert!(
            users.len() == 1 || (users.len() == e.len() && videos.len() == 1),
            "{users:?} {videos:?}"
        );
        let period = Duration::minutes(i64::from(mix.sched_minutes));
        for pair in e.windows(2) {
            let gap = ts(&pair[1]) - ts(&pair[0]);
            assert!((gap - period).abs() <= period / 25, "gap {gap}");
        }
        // Past the reference rules, only the metronome catches it.
        let rules = schemas::RuleSet::default();
        assert!(views.iter().all(|v| rules.is_billable(v)));
        let metronome = Some(schemas::fraud::FraudRule::Metronome);
        assert_eq!(
            schemas::fraud::decide(&rules, &views),
            vec![metronome; e.len()]
        );
        let without = schemas::RuleSet {
            metronome_views: 0,
            ..rules
        };
        assert!(
            schemas::fraud::decide(&without, &views)
                .iter()
                .all(Option::is_none)
        );
        users.len() > 1
    }

    #[test]
    fn a_class_shares_a_fingerprint_and_its_lecture_and_passes_the_rules() {
        let mix = Mix::default();
        for seed in 20..24 {
            let (e, ..) = one(&mix, Label::Classroom, seed);
            let views = valid(&e);
            assert_eq!(e.len(), mix.class_views as usize);
            let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
            let prints: BTreeSet<_> = e
                .iter()
                .map(|v| {
                    (
                        s(v, "device"),
                        s(v, "country"),
                        s(v, "quality"),
                        s(v, "referrer"),
                    )
                })
                .collect();
            assert_eq!((videos.len(), prints.len()), (1, 1));
            let lecture = e.iter().map(watch).max().unwrap();
            let whole = e.iter().filter(|v| watch(v) == lecture).count();
            assert!(whole > e.len() / 2, "{whole} watched it all");
            let rules = schemas::RuleSet::default();
            let d = schemas::fraud::decide(&rules, &views);
            assert!(d.iter().all(Option::is_none), "{d:?}");
            // Rules v2's bot farm, of any watch time, cut those who
            // finished (ten or more in an hour: all of them, or those of
            // the one of two hours the class started in that holds more).
            let v2 = schemas::RuleSet {
                bot_farm_max_watch_seconds: 0,
                bot_farm_share_percent: 0,
                ..rules
            };
            let cut = schemas::fraud::decide(&v2, &views).iter().flatten().count();
            assert!(cut >= 10, "{cut} of {whole}");
        }
    }

    /// The current rules remove at most 2 % of a hard case's billable
    /// views (the held-out target), where rules v2 (any farm share) removed
    /// more.
    fn passes_the_rules(views: &[schemas::ViewEvent], what: &str) {
        let rules = schemas::RuleSet::default();
        let billable = views.iter().filter(|v| rules.is_billable(v)).count();
        let cut = schemas::fraud::decide(&rules, views)
            .iter()
            .flatten()
            .count();
        assert!(cut * 50 <= billable, "{what}: {cut} of {billable} cut");
        let v2 = schemas::RuleSet {
            bot_farm_share_percent: 0,
            ..rules
        };
        let cut_v2 = schemas::fraud::decide(&v2, views).iter().flatten().count();
        assert!(cut_v2 > cut, "{what}: rules v2 cut {cut_v2}, now {cut}");
    }

    #[test]
    fn a_shared_link_is_a_front_loaded_burst_from_one_referrer_with_spread_watch() {
        let mix = Mix::default();
        assert!(DEVICES.contains(&MOBILE));
        for seed in 30..34 {
            let (e, ..) = one(&mix, Label::SharedLink, seed);
            let views = valid(&e);
            passes_the_rules(&views, "a shared link");
            assert_eq!(e.len(), mix.link_views as usize);
            let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
            let referrers: BTreeSet<_> = e.iter().map(|v| s(v, "referrer")).collect();
            assert_eq!(videos.len(), 1);
            assert_eq!(referrers, BTreeSet::from([Some(LINK_REFERRER)]));
            let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
            assert_eq!(users.len(), e.len(), "distinct people");
            // Most share one fingerprint; most are on phones.
            let mut prints: BTreeMap<_, usize> = BTreeMap::new();
            for v in &e {
                let print = (s(v, "device"), s(v, "country"), s(v, "quality"));
                *prints.entry(print).or_default() += 1;
            }
            let common = prints.values().max().unwrap();
            assert!(*common > e.len() / 2, "{prints:?}");
            let mobile = e.iter().filter(|v| s(v, "device") == Some(MOBILE)).count();
            assert!(mobile > e.len() * 3 / 4, "{mobile} on phones");
            // A good share bounce; the rest spread over 30–90 s.
            let bounced = e.iter().filter(|v| watch(v) < 30).count();
            assert!(bounced > e.len() / 5 && bounced < e.len() / 2, "{bounced}");
            let rest: Vec<u64> = e.iter().map(watch).filter(|w| *w >= 30).collect();
            assert!(rest.iter().all(|w| *w <= 90), "{rest:?}");
            let low = rest.iter().filter(|w| **w < 60).count();
            assert!(
                low > rest.len() / 3 && low < rest.len() * 2 / 3,
                "{low} of {} under a minute",
                rest.len()
            );
            // Some have one ad, most none.
            let ads: Vec<u64> = e
                .iter()
                .map(|v| v["ad_impressions"].as_u64().unwrap())
                .collect();
            let one_ad = ads.iter().filter(|a| **a == 1).count();
            assert!(ads.iter().all(|a| *a <= 1));
            assert!(one_ad > 0 && one_ad < e.len() / 2, "{one_ad} with an ad");
            assert!(e.iter().all(|v| v["revenue_eligible"] == json!(true)));
            // Within its minutes, front-loaded.
            let (first, last) = (ts(&e[0]), ts(e.last().unwrap()));
            let span = Duration::minutes(i64::from(mix.link_minutes));
            assert!(last - first < span);
            let early = e.iter().filter(|v| ts(v) - first < span / 3).count();
            assert!(early > e.len() / 2, "{early} in the first third");
        }
    }

    #[test]
    fn a_trending_short_is_watched_whole_by_many_some_looping_without_ads() {
        let mix = Mix::default();
        for seed in 40..44 {
            let (e, ..) = one(&mix, Label::TrendingShort, seed);
            // The rules still cut much of it (a dense burst under 35 s
            // without ads, one band of one fingerprint): BENCHMARKS.md
            // measures it as a hard case not yet met.
            valid(&e);
            assert_eq!(e.len(), mix.short_views as usize);
            let videos: BTreeSet<_> = e.iter().map(|v| s(v, "video_id")).collect();
            assert_eq!(videos.len(), 1);
            assert!(e.iter().all(|v| v["ad_impressions"] == json!(0)));
            assert!(e.iter().all(|v| v["revenue_eligible"] == json!(true)));
            let length = e.iter().map(watch).max().unwrap();
            assert!((31..=45).contains(&length), "{length}");
            let whole = e.iter().filter(|v| watch(v) + 1 >= length).count();
            assert!(whole > e.len() * 4 / 5, "{whole} watched it all");
            assert!(whole < e.len(), "a few leave early");
            let mobile = e.iter().filter(|v| s(v, "device") == Some(MOBILE)).count();
            assert!(mobile > e.len() * 3 / 4, "{mobile} on phones");
            // Many people; some watch it twice, in one session, shortly.
            let mut by_user: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
            for v in &e {
                by_user.entry(s(v, "user_id").unwrap()).or_default().push(v);
            }
            assert!(by_user.len() > e.len() * 3 / 4, "{} people", by_user.len());
            let loops: Vec<&Vec<&Value>> = by_user.values().filter(|v| v.len() > 1).collect();
            assert!(
                !loops.is_empty() && loops.len() < e.len() / 4,
                "{}",
                loops.len()
            );
            for views in loops {
                assert_eq!(views.len(), 2);
                assert_eq!(s(views[0], "session_id"), s(views[1], "session_id"));
                let done = ts(views[0]) + Duration::seconds(watch(views[0]) as i64);
                let gap = ts(views[1]) - done;
                assert!(
                    gap > Duration::zero() && gap <= Duration::seconds(10),
                    "{gap}"
                );
            }
            // Over its hours, not within minutes.
            let span = ts(e.last().unwrap()) - ts(&e[0]);
            let hours = Duration::hours(i64::from(mix.short_hours));
            assert!(
                span > hours / 2 && span < hours + Duration::minutes(2),
                "{span}"
            );
        }
    }

    #[test]
    fn fans_are_many_users_of_a_top_video_with_organic_watch() {
        let mix = Mix::default();
        let (e, ..) = one(&mix, Label::Fans, 5);
        valid(&e);
        let videos: BTreeSet<_> = e.iter().filter_map(|v| s(v, "video_id")).collect();
        assert_eq!(videos.len(), 1);
        assert!(["v00001", "v00002", "v00003"].contains(videos.first().unwrap()));
        let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
        assert!(users.len() > e.len() * 4 / 5, "{} users", users.len());
        // Organic watch: spread out, many under the billable minimum.
        let short = e.iter().filter(|v| watch(v) < 30).count();
        assert!(short > e.len() / 10 && short < e.len() / 2, "{short}");
    }

    #[test]
    fn a_household_is_one_account_on_several_devices_within_what_they_can_watch() {
        let mix = Mix::default();
        for seed in 0..20 {
            let (e, ..) = one(&mix, Label::Household, 100 + seed);
            valid(&e);
            let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
            assert_eq!(users.len(), 1);
            let devices: BTreeSet<_> = e.iter().map(|v| s(v, "device")).collect();
            assert!(devices.len() <= mix.household_devices as usize);
            let mut per_hour: BTreeMap<i64, u64> = BTreeMap::new();
            for v in &e {
                *per_hour.entry(ts(v).timestamp() / 3_600).or_default() += watch(v);
            }
            assert!(
                per_hour
                    .values()
                    .all(|w| *w <= u64::from(mix.household_devices) * 3_600),
                "{per_hour:?}"
            );
        }
    }

    #[test]
    fn a_binge_is_one_user_watching_videos_one_after_another() {
        let mix = Mix::default();
        let (e, _, end) = one(&mix, Label::Binge, 7);
        valid(&e);
        assert!(e.len() > 1);
        let users: BTreeSet<_> = e.iter().map(|v| s(v, "user_id")).collect();
        assert_eq!(users.len(), 1);
        for pair in e.windows(2) {
            let done = ts(&pair[0]) + Duration::seconds(watch(&pair[0]) as i64);
            assert!(ts(&pair[1]) >= done, "views do not overlap");
        }
        assert!(ts(e.last().unwrap()) < end);
    }

    #[test]
    fn episodes_stay_inside_the_span() {
        let mix = Mix::default();
        for &label in &Label::ALL[1..] {
            for seed in 0..5 {
                let (e, start, end) = one(&mix, label, 200 + seed);
                assert!(e.iter().all(|v| ts(v) >= start && ts(v) < end), "{label}");
            }
        }
    }

    #[test]
    fn pattern_parameters_are_set_by_name_and_bad_ones_named() {
        let mut mix = Mix::default();
        mix.set("loop_views=60").unwrap();
        mix.set(" farm_bots = 50 ").unwrap();
        assert_eq!((mix.loop_views, mix.farm_bots), (60, 50));
        let e = mix.set("loops=3").unwrap_err().to_string();
        assert!(
            e.contains("no parameter loops") && e.contains("binge_hours"),
            "{e}"
        );
        let e = mix.set("loop_views=many").unwrap_err().to_string();
        assert!(e.contains("not a whole number"), "{e}");
        let e = mix.set("loop_views").unwrap_err().to_string();
        assert!(e.contains("NAME=NUMBER"), "{e}");
        assert_eq!(Mix::names().len(), 26);
        for name in Mix::names() {
            Mix::default().set(&format!("{name}=30")).unwrap();
        }
        mix.set("household_devices=6").unwrap();
        assert!(mix.check(100).is_err());
        let bad = Mix {
            fraud_ratio: 1.0,
            ..Mix::default()
        };
        assert!(bad.check(100).is_err());
        let bad = Mix {
            fraud_ratio: 0.5,
            hard_case_ratio: 0.5,
            ..Mix::default()
        };
        let e = bad.check(100).unwrap_err().to_string();
        assert!(e.contains("below 1"), "{e}");
    }

    #[test]
    fn chances_give_each_pattern_its_share_of_events() {
        let mix = Mix {
            fraud_ratio: 0.08,
            hard_case_ratio: 0.09,
            ..Mix::default()
        };
        let p = mix.chances();
        // Expected events per draw: one, or an episode's size.
        let per_draw: f64 = 1.0 - p.iter().sum::<f64>()
            + Label::ALL[1..]
                .iter()
                .zip(p)
                .map(|(l, p)| p * mix.size(*l) as f64)
                .sum::<f64>();
        for (l, p) in Label::ALL[1..].iter().zip(p) {
            let share = p * mix.size(*l) as f64 / per_draw;
            let want = if l.is_invalid() {
                0.08 / Label::invalid_patterns() as f64
            } else {
                0.09 / Label::hard_cases() as f64
            };
            assert!((share - want).abs() < 1e-12, "{l}: {share}");
        }
        assert_eq!(Mix::default().chances(), [0.0; EPISODES]);
        assert_eq!(pick(&Mix::default().chances(), 0.0), None);
    }
}
