//! The world every pattern draws from: the video catalogue, the organic
//! user pool, the time window, the fingerprints organic traffic shows, and
//! the one place a view is emitted (so ids are unique and times stay inside
//! the window whatever a pattern computes).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use schemas::{Device, RuleSet, ViewEvent};
use uuid::Uuid;

use crate::{HeldoutView, Pattern, SuiteConfig};

/// Every pattern's random stream.
pub(crate) type Rng8 = ChaCha8Rng;

/// Seconds in a day and an hour.
pub(crate) const DAY: i64 = 86_400;
pub(crate) const HOUR: i64 = 3_600;

/// The site's own pages, as referrers of internal navigation.
pub(crate) const SITE: &str = "https://viewcount.example";

/// Countries organic traffic comes from: code, UTC offset in whole hours
/// (the diurnal rhythm follows local time), weight.
const COUNTRIES: [(&str, i64, u32); 24] = [
    ("US", -5, 22),
    ("IN", 5, 14),
    ("BR", -3, 8),
    ("GB", 0, 6),
    ("DE", 1, 5),
    ("JP", 9, 5),
    ("MX", -6, 5),
    ("ID", 7, 5),
    ("FR", 1, 4),
    ("CA", -5, 3),
    ("PH", 8, 3),
    ("NG", 1, 2),
    ("TR", 3, 2),
    ("KR", 9, 2),
    ("ES", 1, 2),
    ("IT", 1, 2),
    ("AU", 10, 2),
    ("VN", 7, 2),
    ("PL", 1, 1),
    ("EG", 2, 1),
    ("AR", -3, 1),
    ("ZA", 2, 1),
    ("NL", 1, 1),
    ("SE", 1, 1),
];

/// Relative activity by local hour of day: quiet at night, a lunchtime
/// shoulder, the peak in the evening.
const DIURNAL: [u32; 24] = [
    20, 12, 8, 6, 6, 9, 16, 26, 34, 38, 40, 43, 48, 48, 46, 47, 52, 62, 76, 88, 92, 84, 63, 38,
];

const DEVICES: [(Device, u32); 5] = [
    (Device::Mobile, 55),
    (Device::Web, 25),
    (Device::Tv, 14),
    (Device::Console, 3),
    (Device::Other, 3),
];

/// How busy local hour `hour` is, relative to the busiest (1.0).
pub(crate) fn diurnal_weight(hour: i64) -> f64 {
    let peak = DIURNAL.iter().copied().max().unwrap_or(1);
    let at = usize::try_from(hour.rem_euclid(24)).unwrap_or(0);
    f64::from(DIURNAL[at]) / f64::from(peak)
}

/// Words for handle-style ids and invented site names.
const WORDS: [&str; 24] = [
    "nova", "pixel", "maple", "river", "delta", "echo", "lumen", "orbit", "cedar", "falcon",
    "quartz", "tango", "ember", "harbor", "juniper", "koala", "lotus", "mango", "nimbus", "onyx",
    "prairie", "saffron", "tundra", "willow",
];

/// A weighted choice; `items` is never empty and its weights never all zero.
pub(crate) fn pick<T: Copy>(rng: &mut Rng8, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut at = rng.random_range(0..total.max(1));
    for (item, w) in items {
        if at < *w {
            return *item;
        }
        at -= w;
    }
    items[items.len() - 1].0
}

/// A uniform choice from a non-empty slice.
pub(crate) fn one<T: Copy>(rng: &mut Rng8, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// A log-normal draw with this median; `sigma` is the spread of its log.
pub(crate) fn lognormal(rng: &mut Rng8, median: f64, sigma: f64) -> f64 {
    LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng))
}

/// An exponential draw with this mean.
pub(crate) fn exponential(rng: &mut Rng8, mean: f64) -> f64 {
    Exp::new(1.0 / mean.max(1e-9)).map_or(mean, |d| d.sample(rng))
}

/// `n` random lowercase hex digits.
pub(crate) fn hex(rng: &mut Rng8, n: usize) -> String {
    let v: u128 = rng.random();
    format!("{v:032x}")[..n.min(32)].to_owned()
}

/// `n` random ASCII letters and digits (link shorteners, post ids).
pub(crate) fn alnum(rng: &mut Rng8, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| char::from(one(rng, A))).collect()
}

/// A word for an invented name.
pub(crate) fn word(rng: &mut Rng8) -> &'static str {
    one(rng, &WORDS)
}

/// A sampler over weights by cumulative sum (Zipf ranks, user activity).
struct Cdf(Vec<f64>);

impl Cdf {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut sum = 0.0;
        Self(
            weights
                .into_iter()
                .map(|w| {
                    sum += w;
                    sum
                })
                .collect(),
        )
    }

    fn sample(&self, rng: &mut Rng8) -> usize {
        let total = self.0.last().copied().unwrap_or(0.0);
        let at = rng.random_range(0.0..1.0) * total;
        self.0.partition_point(|&c| c <= at).min(self.0.len() - 1)
    }
}

/// A country organic traffic comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Country {
    pub(crate) code: &'static str,
    /// Whole hours east of UTC.
    pub(crate) offset: i64,
}

/// A weighted organic country.
pub(crate) fn organic_country(rng: &mut Rng8) -> Country {
    let weighted: Vec<((&'static str, i64), u32)> =
        COUNTRIES.iter().map(|&(c, o, w)| ((c, o), w)).collect();
    let (code, offset) = pick(rng, &weighted);
    Country { code, offset }
}

/// The country with this code (UTC when unknown).
pub(crate) fn country(code: &'static str) -> Country {
    let offset = COUNTRIES.iter().find(|c| c.0 == code).map_or(0, |c| c.1);
    Country { code, offset }
}

/// A weighted organic device.
pub(crate) fn organic_device(rng: &mut Rng8) -> Device {
    pick(rng, &DEVICES)
}

/// A quality a player on `device` plausibly streams at.
pub(crate) fn quality_for(rng: &mut Rng8, device: Device) -> &'static str {
    let table: &[(&'static str, u32)] = match device {
        Device::Mobile => &[
            ("240p", 4),
            ("360p", 18),
            ("480p", 30),
            ("720p", 36),
            ("1080p", 12),
        ],
        Device::Web => &[
            ("360p", 8),
            ("480p", 16),
            ("720p", 34),
            ("1080p", 36),
            ("1440p", 6),
        ],
        Device::Tv => &[("720p", 18), ("1080p", 52), ("2160p", 30)],
        Device::Console => &[("1080p", 60), ("2160p", 40)],
        Device::Other => &[("360p", 30), ("480p", 40), ("720p", 30)],
    };
    pick(rng, table)
}

/// An organic first referrer: often none (an app), the site itself,
/// search, social.
pub(crate) fn organic_referrer(rng: &mut Rng8, related: &str) -> Option<String> {
    let kind = pick(
        rng,
        &[
            (0, 40),
            (1, 15),
            (2, 8),
            (3, 14),
            (4, 9),
            (5, 3),
            (6, 3),
            (7, 3),
            (8, 2),
            (9, 2),
            (10, 1),
        ],
    );
    match kind {
        0 => None,
        1 => Some(format!("{SITE}/")),
        2 => Some(format!("{SITE}/feed/subscriptions")),
        3 => Some(format!("{SITE}/watch/{related}")),
        4 => Some("https://www.google.com/".to_owned()),
        5 => Some(format!("https://t.co/{}", alnum(rng, 10))),
        6 => Some(format!("https://www.reddit.com/r/{}/", word(rng))),
        7 => Some("https://www.facebook.com/".to_owned()),
        8 => Some("https://l.instagram.com/".to_owned()),
        9 => Some("https://www.bing.com/".to_owned()),
        _ => Some("https://news.ycombinator.com/".to_owned()),
    }
}

/// What a view shows of where it came from: the fields a bot rotates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint {
    pub(crate) device: Device,
    pub(crate) country: Option<&'static str>,
    pub(crate) referrer: Option<String>,
    pub(crate) quality: Option<&'static str>,
}

/// How an invented user id looks. Adversaries mostly imitate organic ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdStyle {
    /// `hu` and six digits, as organic accounts are.
    Mimic,
    /// `u` and nine digits.
    Numeric,
    /// A word, an underscore and digits.
    Handle,
    /// `usr-` and twelve hex digits.
    Hex,
}

impl IdStyle {
    /// The style of an adversary's ids: usually organic-looking.
    pub(crate) fn adversary(rng: &mut Rng8) -> Self {
        pick(
            rng,
            &[
                (IdStyle::Mimic, 60),
                (IdStyle::Numeric, 15),
                (IdStyle::Handle, 15),
                (IdStyle::Hex, 10),
            ],
        )
    }
}

/// How a view starts: its playback token, as ingest verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Play {
    /// A new playback (the player was issued a token).
    Fresh,
    /// The playback with this id (a rewatch in the same player, or a replay).
    Same(String),
    /// No verified token: never billable.
    Unsigned,
}

/// One view as a pattern describes it.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) video: usize,
    pub(crate) user: String,
    pub(crate) session: Option<String>,
    pub(crate) at: DateTime<Utc>,
    pub(crate) watch: u32,
    pub(crate) fp: Fingerprint,
    pub(crate) revenue_eligible: bool,
    pub(crate) ads: u32,
    pub(crate) play: Play,
}

/// The kind of a video, which bounds its duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Short,
    Regular,
    Long,
}

/// One video of the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct Video {
    pub(crate) id: String,
    pub(crate) creator: u32,
    pub(crate) duration: u32,
    pub(crate) kind: Kind,
    pub(crate) monetised: bool,
    /// Popularity rank, 0 the most viewed.
    pub(crate) rank: usize,
}

/// One organic account of the pool.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) home: Country,
    /// Whether the user's player reports a country (most do).
    pub(crate) reports_country: bool,
    pub(crate) device: Device,
}

/// The catalogue, the pool, the window and the views emitted so far.
pub(crate) struct World {
    pub(crate) start: DateTime<Utc>,
    /// Whole days in the window.
    pub(crate) days: i64,
    /// The last instant a view may occur at (the window's end, exclusive,
    /// less a millisecond).
    last: DateTime<Utc>,
    pub(crate) videos: Vec<Video>,
    /// Video indexes by popularity rank.
    by_rank: Vec<usize>,
    ranks: Cdf,
    pub(crate) users: Vec<User>,
    activity: Cdf,
    by_country: HashMap<&'static str, Vec<usize>>,
    /// Every user id handed out, so an invented id never names an existing
    /// account.
    taken_users: HashSet<String>,
    event_ids: HashSet<Uuid>,
    playback_ids: HashSet<String>,
    /// The first number of invented `hu` ids (past the pool).
    mimic_from: u32,
    views: Vec<HeldoutView>,
}

impl World {
    /// Builds the catalogue and the pool from `rng`.
    pub(crate) fn new(cfg: &SuiteConfig, rng: &mut Rng8) -> Self {
        let days = i64::from(cfg.days.clamp(1, crate::MAX_DAYS));
        let start = cfg.start;
        let last = start + Duration::seconds(days * DAY) - Duration::milliseconds(1);

        let n = usize::try_from(cfg.videos.max(1)).unwrap_or(usize::MAX);
        let mut ranks: Vec<usize> = (0..n).collect();
        ranks.shuffle(rng);
        let mut videos = Vec::with_capacity(n);
        let (mut creator, mut left) = (0u32, rng.random_range(5..=60));
        for (i, &rank) in ranks.iter().enumerate() {
            if left == 0 {
                creator += 1;
                left = rng.random_range(5..=60);
            }
            left -= 1;
            let kind = pick(
                rng,
                &[(Kind::Short, 20), (Kind::Regular, 65), (Kind::Long, 15)],
            );
            let duration = match kind {
                Kind::Short => rng.random_range(15..=60),
                Kind::Regular => lognormal(rng, 480.0, 0.6).clamp(120.0, 1_500.0) as u32,
                Kind::Long => rng.random_range(1_500..=5_400),
            };
            videos.push(Video {
                id: format!("hv{i:05}"),
                creator,
                duration,
                kind,
                monetised: rng.random_bool(0.85),
                rank,
            });
        }
        let mut by_rank = vec![0; n];
        for (i, v) in videos.iter().enumerate() {
            by_rank[v.rank] = i;
        }
        let ranks = Cdf::new((1..=n).map(|r| 1.0 / (r as f64).powf(1.05)));

        let pool = cfg.organic_users.max(1);
        let mut users = Vec::with_capacity(usize::try_from(pool).unwrap_or(0));
        let mut weights = Vec::with_capacity(users.capacity());
        let mut by_country: HashMap<&'static str, Vec<usize>> = HashMap::new();
        let mut taken_users = HashSet::new();
        for i in 0..pool {
            let home = organic_country(rng);
            let id = format!("hu{i:06}");
            taken_users.insert(id.clone());
            by_country.entry(home.code).or_default().push(users.len());
            users.push(User {
                id,
                home,
                reports_country: rng.random_bool(0.97),
                device: organic_device(rng),
            });
            weights.push(lognormal(rng, 1.0, 1.0));
        }
        Self {
            start,
            days,
            last,
            videos,
            by_rank,
            ranks,
            users,
            activity: Cdf::new(weights),
            by_country,
            taken_users,
            event_ids: HashSet::new(),
            playback_ids: HashSet::new(),
            mimic_from: pool,
            views: Vec::new(),
        }
    }

    /// The views emitted, in emission order.
    pub(crate) fn into_views(self) -> Vec<HeldoutView> {
        self.views
    }

    /// `secs` after the window's start (milliseconds kept).
    pub(crate) fn at(&self, secs: f64) -> DateTime<Utc> {
        self.start + Duration::milliseconds((secs * 1000.0) as i64)
    }

    /// Whether `t` is inside the window.
    pub(crate) fn contains(&self, t: DateTime<Utc>) -> bool {
        (self.start..=self.last).contains(&t)
    }

    /// Seconds since the window's start.
    pub(crate) fn secs(&self, t: DateTime<Utc>) -> f64 {
        (t - self.start).num_milliseconds() as f64 / 1000.0
    }

    /// The window's length in seconds.
    pub(crate) fn span(&self) -> f64 {
        (self.days * DAY) as f64
    }

    /// An instant on day `day` of the window at `local` seconds after local
    /// midnight in a place `offset` hours east of UTC, moved a day when that
    /// falls outside the window.
    pub(crate) fn local(&self, day: i64, offset: i64, local: f64) -> DateTime<Utc> {
        let mut s = (day * DAY) as f64 + local - (offset * HOUR) as f64;
        if s < 0.0 {
            s += DAY as f64;
        }
        if s >= self.span() {
            s -= DAY as f64;
        }
        self.at(s)
    }

    /// A random instant of the window with the diurnal rhythm of a place
    /// `offset` hours east of UTC.
    pub(crate) fn diurnal(&self, rng: &mut Rng8, offset: i64) -> DateTime<Utc> {
        let day = rng.random_range(0..self.days);
        let hours: Vec<(i64, u32)> = (0i64..).zip(DIURNAL).collect();
        let hour = pick(rng, &hours);
        let local = (hour * HOUR) as f64 + rng.random_range(0.0..HOUR as f64);
        self.local(day, offset, local)
    }

    /// A local time of day in `[from_hour, to_hour)` on a random day.
    pub(crate) fn local_hours(
        &self,
        rng: &mut Rng8,
        offset: i64,
        from_hour: i64,
        to_hour: i64,
    ) -> DateTime<Utc> {
        let day = rng.random_range(0..self.days);
        let local = rng.random_range((from_hour * HOUR) as f64..(to_hour * HOUR) as f64);
        self.local(day, offset, local)
    }

    /// A video by popularity (Zipf over ranks).
    pub(crate) fn popular_video(&self, rng: &mut Rng8) -> usize {
        self.by_rank[self.ranks.sample(rng)]
    }

    /// A video whose popularity rank is in `[lo, hi)` as fractions of the
    /// catalogue (0 the most popular), satisfying `keep` when one of a few
    /// tries does.
    pub(crate) fn video_in(
        &self,
        rng: &mut Rng8,
        lo: f64,
        hi: f64,
        keep: impl Fn(&Video) -> bool,
    ) -> usize {
        let n = self.videos.len();
        let a = ((lo * n as f64) as usize).min(n - 1);
        let b = ((hi * n as f64) as usize).clamp(a + 1, n);
        let mut chosen = self.by_rank[rng.random_range(a..b)];
        for _ in 0..40 {
            if keep(&self.videos[chosen]) {
                break;
            }
            chosen = self.by_rank[rng.random_range(a..b)];
        }
        chosen
    }

    /// The videos of `creator`, least popular first.
    pub(crate) fn catalogue_of(&self, creator: u32) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.videos.len())
            .filter(|&i| self.videos[i].creator == creator)
            .collect();
        v.sort_by_key(|&i| std::cmp::Reverse(self.videos[i].rank));
        v
    }

    /// A pool user, weighted by activity.
    pub(crate) fn active_user(&self, rng: &mut Rng8) -> usize {
        self.activity.sample(rng)
    }

    /// A pool user living in `code`, or an invented organic-looking one
    /// when the pool has none there.
    pub(crate) fn local_user(&mut self, rng: &mut Rng8, code: &'static str) -> String {
        match self.by_country.get(code) {
            Some(v) if !v.is_empty() => self.users[one(rng, v)].id.clone(),
            _ => self.fresh_user(rng, IdStyle::Mimic),
        }
    }

    /// A user id no account has had.
    pub(crate) fn fresh_user(&mut self, rng: &mut Rng8, style: IdStyle) -> String {
        loop {
            let id = match style {
                IdStyle::Mimic => {
                    let lo = self.mimic_from.min(999_000);
                    format!("hu{:06}", rng.random_range(lo..1_000_000))
                }
                IdStyle::Numeric => format!("u{:09}", rng.random_range(0..1_000_000_000u32)),
                IdStyle::Handle => {
                    format!("{}_{}", word(rng), rng.random_range(10..100_000u32))
                }
                IdStyle::Hex => format!("usr-{}", hex(rng, 12)),
            };
            if self.taken_users.insert(id.clone()) {
                return id;
            }
        }
    }

    /// A playback id never issued before.
    pub(crate) fn fresh_playback(&mut self, rng: &mut Rng8) -> String {
        loop {
            let id = format!("pb_{}", hex(rng, 24));
            if self.playback_ids.insert(id.clone()) {
                return id;
            }
        }
    }

    /// A new session id.
    pub(crate) fn session(rng: &mut Rng8) -> String {
        format!("s_{}", hex(rng, 16))
    }

    /// Emits one view of `pattern`; returns its playback id. Watch times and
    /// ad counts are kept inside their limits, and an unsigned view is
    /// recorded never billable, as ingest records it.
    /// A view outside the window is dropped (patterns check
    /// [`World::contains`] first where it matters), so every view emitted
    /// is valid when received just after the window.
    pub(crate) fn emit(&mut self, rng: &mut Rng8, pattern: Pattern, d: Draft) -> Option<String> {
        if !self.contains(d.at) {
            return None;
        }
        let mut event_id = Uuid::from_u128(rng.random());
        while !self.event_ids.insert(event_id) {
            event_id = Uuid::from_u128(rng.random());
        }
        let playback_id = match d.play {
            Play::Fresh => Some(self.fresh_playback(rng)),
            Play::Same(id) => Some(id),
            Play::Unsigned => None,
        };
        let video = &self.videos[d.video.min(self.videos.len() - 1)];
        let event = ViewEvent {
            event_id,
            video_id: video.id.clone(),
            user_id: d.user,
            session_id: d.session,
            occurred_at: d.at,
            watch_seconds: d.watch.min(schemas::validate::MAX_WATCH_SECONDS),
            device: d.fp.device,
            country: d.fp.country.map(str::to_owned),
            referrer: d.fp.referrer,
            quality: d.fp.quality.map(str::to_owned),
            revenue_eligible: d.revenue_eligible && playback_id.is_some(),
            ad_impressions: d.ads.min(schemas::validate::MAX_AD_IMPRESSIONS),
            schema_version: schemas::event::SCHEMA_VERSION,
            playback_token: None,
        };
        self.views.push(HeldoutView {
            event,
            playback_id: playback_id.clone(),
            pattern,
        });
        playback_id
    }
}

/// What an adversary who knows [`RuleSet::DEFAULT`] stays under. A rule
/// that is off (0) is given a generous stand-in so the arithmetic holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Billable from this many watch seconds.
    pub(crate) billable: u32,
    /// Most billable views of one user, video and day not capped.
    pub(crate) daily: u32,
    /// Most views of one user and video in an hour not called a loop.
    pub(crate) hourly: u32,
    /// Most look-alike accounts per video-hour not called a farm.
    pub(crate) farm: u32,
    /// The bot-farm watch band, seconds.
    pub(crate) band: u32,
    /// Fewest views of one video within the window that make a burst.
    pub(crate) burst: u32,
    /// Watch seconds below which a view without ads is a burst candidate.
    pub(crate) burst_watch: u32,
    /// The burst window either side of a view, seconds.
    pub(crate) burst_window: u32,
}

impl Limits {
    pub(crate) fn known() -> Self {
        let r = RuleSet::DEFAULT;
        let or = |v: u32, off: u32| if v == 0 { off } else { v };
        Self {
            billable: r.billable_min_watch_seconds,
            daily: or(r.fraud_cap_per_user_video_day, 48),
            hourly: or(r.repeat_loop_views, 13).saturating_sub(1).max(1),
            farm: or(r.bot_farm_accounts, 40).saturating_sub(1).max(2),
            band: r.bot_farm_watch_band_seconds.max(1),
            burst: or(r.zero_engagement_views, 60),
            burst_watch: or(
                r.zero_engagement_watch_seconds,
                r.billable_min_watch_seconds + 5,
            ),
            burst_window: r.zero_engagement_window_seconds.max(1),
        }
    }

    /// The smallest spacing between views of one video that keeps fewer
    /// than a burst's worth inside any burst window either side of a view.
    pub(crate) fn burst_gap(&self) -> f64 {
        let span = 2.0 * f64::from(self.burst_window);
        span / f64::from(self.burst.saturating_sub(2).max(1)) + 1.0
    }
}

/// What a farm operator keeps to stay under the bot-farm rule: how many
/// look-alike views each video-hour already has per fingerprint and watch
/// band.
pub(crate) struct FarmGuard {
    counts: HashMap<(usize, i64, Fingerprint, u32), u32>,
    limits: Limits,
}

impl FarmGuard {
    pub(crate) fn new() -> Self {
        Self {
            counts: HashMap::new(),
            limits: Limits::known(),
        }
    }

    fn key(&self, d: &Draft, band: u32) -> (usize, i64, Fingerprint, u32) {
        (
            d.video,
            d.at.timestamp().div_euclid(HOUR),
            d.fp.clone(),
            band,
        )
    }

    fn count(&self, d: &Draft, band: u32) -> u32 {
        self.counts.get(&self.key(d, band)).copied().unwrap_or(0)
    }

    /// Whether `d` keeps every watch window of the band's width (whatever
    /// its alignment: any such window lies in two adjacent aligned bands)
    /// under the farm size.
    pub(crate) fn admits(&self, d: &Draft) -> bool {
        let b = d.watch / self.limits.band;
        let here = self.count(d, b);
        let below = if b > 0 { self.count(d, b - 1) } else { 0 };
        let above = self.count(d, b + 1);
        here + below < self.limits.farm && here + above < self.limits.farm
    }

    pub(crate) fn record(&mut self, d: &Draft) {
        let b = d.watch / self.limits.band;
        *self.counts.entry(self.key(d, b)).or_default() += 1;
    }
}
