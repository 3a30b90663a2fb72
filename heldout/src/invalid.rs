//! Invalid traffic: adversaries that know [`schemas::RuleSet::DEFAULT`]
//! ([`Limits::known`]) and stay just under its thresholds where they can.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::Pattern;
use crate::world::{
    DAY, Draft, FarmGuard, Fingerprint, HOUR, IdStyle, Kind, Limits, Play, Rng8, SITE, World,
    alnum, diurnal_weight, exponential, lognormal, one, organic_country, organic_device,
    organic_referrer, pick, quality_for, word,
};

/// One episode of an invalid pattern.
pub(crate) fn episode(w: &mut World, rng: &mut Rng8, pattern: Pattern) {
    match pattern {
        Pattern::BotFarmUnderThreshold => bot_farm(w, rng),
        Pattern::CatalogueDrip => catalogue_drip(w, rng),
        Pattern::RotatingAccounts => rotating_accounts(w, rng),
        Pattern::FingerprintFreshIds => fingerprint_fresh_ids(w, rng),
        Pattern::TokenReplay => token_replay(w, rng),
        Pattern::ImpossibleConcurrency => impossible_concurrency(w, rng),
        Pattern::LoopUnderCap => loop_under_cap(w, rng),
        Pattern::HiddenEmbedAutoplay => hidden_embed(w, rng),
        Pattern::UnsignedScript => unsigned_script(w, rng),
        _ => {}
    }
}

/// The videos of `v` once each, in first-drawn order.
fn distinct(mut v: Vec<usize>) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(*x));
    v
}

/// A few countries an operator's proxies exit in.
fn exits(rng: &mut Rng8, lo: usize, hi: usize) -> Vec<&'static str> {
    let n = rng.random_range(lo..=hi);
    (0..n).map(|_| organic_country(rng).code).collect()
}

/// A few referrers an operator fakes, `None` among them.
fn fake_referrers(w: &World, rng: &mut Rng8, lo: usize, hi: usize) -> Vec<Option<String>> {
    let n = rng.random_range(lo..=hi);
    let mut v = vec![None];
    for _ in 0..n {
        let related = w.videos[w.popular_video(rng)].id.clone();
        v.push(organic_referrer(rng, &related));
    }
    v
}

/// An organic-looking fingerprint from the operator's sets.
fn rotated(
    rng: &mut Rng8,
    countries: &[&'static str],
    referrers: &[Option<String>],
) -> Fingerprint {
    let device = organic_device(rng);
    Fingerprint {
        device,
        country: Some(one(rng, countries)),
        referrer: referrers[rng.random_range(0..referrers.len())].clone(),
        quality: Some(quality_for(rng, device)),
    }
}

/// A random start of a run `length` seconds long that fits the window.
fn run_start(w: &World, rng: &mut Rng8, length: f64) -> DateTime<Utc> {
    w.at(rng.random_range(0.0..(w.span() - length).max(1.0)))
}

/// A bot farm that knows the bot-farm rule: under its account count per
/// video-hour, a fingerprint per account, watch times jittered wider than
/// its band, spread over several hours and days.
fn bot_farm(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::BotFarmUnderThreshold;
    let l = Limits::known();
    let style = IdStyle::adversary(rng);
    let countries = exits(rng, 2, 6);
    let referrers = fake_referrers(w, rng, 1, 4);
    let pool = rng.random_range(30..=150);
    let accounts: Vec<(String, Fingerprint)> = (0..pool)
        .map(|_| {
            let fp = rotated(rng, &countries, &referrers);
            (w.fresh_user(rng, style), fp)
        })
        .collect();
    let targets = distinct(
        (0..rng.random_range(1..=3))
            .map(|_| w.video_in(rng, 0.1, 0.7, |v| v.monetised && v.kind != Kind::Short))
            .collect(),
    );
    let span_days = rng.random_range(2..=4).min(w.days);
    let first_day = rng.random_range(0..=w.days - span_days);
    let mut hours: Vec<i64> = (first_day * 24..(first_day + span_days) * 24).collect();
    hours.shuffle(rng);
    hours.truncate(rng.random_range(8..=30));
    let fewest = rng.random_range(l.farm.saturating_sub(3).max(1)..=l.farm);
    let base: f64 = rng.random_range(35.0..=120.0);
    let band = f64::from(l.band);
    let jitter = rng.random_range(2.0 * band..=6.0 * band);
    let ad_rate = rng.random_range(0.0..=0.6);
    let mut guard = FarmGuard::new();
    let mut daily: HashMap<(usize, usize, i64), u32> = HashMap::new();
    for &video in &targets {
        for &h in &hours {
            let k = rng.random_range(fewest..=l.farm) as usize;
            for a in rand::seq::index::sample(rng, accounts.len(), k.min(accounts.len())) {
                let at = w.at((h * HOUR) as f64 + rng.random_range(0.0..HOUR as f64));
                let day = at.timestamp().div_euclid(DAY);
                let seen = daily.entry((a, video, day)).or_default();
                if *seen + 1 >= l.daily {
                    continue;
                }
                let watch =
                    (base + rng.random_range(-jitter..=jitter)).max(f64::from(l.billable) + 1.0);
                let draft = Draft {
                    video,
                    user: accounts[a].0.clone(),
                    session: Some(World::session(rng)),
                    at,
                    watch: watch as u32,
                    fp: accounts[a].1.clone(),
                    revenue_eligible: true,
                    ads: u32::from(rng.random_bool(ad_rate)),
                    play: Play::Fresh,
                };
                if guard.admits(&draft) {
                    guard.record(&draft);
                    *seen += 1;
                    w.emit(rng, p, draft);
                }
            }
        }
    }
}

/// A drip across a back catalogue: a few accounts each viewing many of one
/// creator's old videos at a low rate, never one video twice in a day.
fn catalogue_drip(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::CatalogueDrip;
    let l = Limits::known();
    // A creator with a catalogue worth dripping on, when one of a few tries
    // finds one.
    let mut catalogue = Vec::new();
    for _ in 0..20 {
        let creator = w.videos[rng.random_range(0..w.videos.len())].creator;
        catalogue = w.catalogue_of(creator);
        if catalogue.len() >= 8 {
            break;
        }
    }
    let old = (catalogue.len() * 7).div_ceil(10).max(1);
    catalogue.truncate(old);
    let style = IdStyle::adversary(rng);
    let countries = exits(rng, 1, 3);
    let channel = format!("{SITE}/channel/{}", alnum(rng, 8));
    let accounts = rng.random_range(3..=12);
    let mean_gap = rng.random_range(1.0..=5.0) * HOUR as f64;
    let sleeps = rng.random_bool(0.5);
    let offset = organic_country(rng).offset;
    for _ in 0..accounts {
        let user = w.fresh_user(rng, style);
        let device = organic_device(rng);
        let fp = Fingerprint {
            device,
            country: Some(one(rng, &countries)),
            referrer: rng.random_bool(0.5).then(|| channel.clone()),
            quality: Some(quality_for(rng, device)),
        };
        let most = rng.random_range(10..=45);
        let mut order = catalogue.clone();
        order.shuffle(rng);
        let mut last_day: HashMap<usize, i64> = HashMap::new();
        let mut t = w.at(rng.random_range(0.0..DAY as f64));
        let (mut made, mut next) = (0, 0usize);
        while made < most && w.contains(t) {
            let local_hour = (t.timestamp() + offset * HOUR)
                .div_euclid(HOUR)
                .rem_euclid(24);
            let day = t.timestamp().div_euclid(DAY);
            let video = order[next % order.len()];
            if last_day.get(&video) == Some(&day) {
                next += 1;
            } else if !(sleeps && (1..7).contains(&local_hour)) {
                next += 1;
                last_day.insert(video, day);
                let d = w.videos[video].duration;
                let watch = (f64::from(d) * rng.random_range(0.3..=0.95)) as u32;
                let draft = Draft {
                    video,
                    user: user.clone(),
                    session: Some(World::session(rng)),
                    at: t,
                    watch: watch.max(l.billable + 5),
                    fp: fp.clone(),
                    revenue_eligible: true,
                    ads: rng.random_range(0..=2),
                    play: Play::Fresh,
                };
                w.emit(rng, p, draft);
                made += 1;
            }
            t += Duration::seconds(exponential(rng, mean_gap).max(600.0) as i64);
        }
    }
}

/// Rotating accounts: a fresh user id per view on one video, at a steady,
/// metronomic rate all day and night, fingerprints rotated per view.
fn rotating_accounts(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::RotatingAccounts;
    let l = Limits::known();
    let video = w.video_in(rng, 0.05, 0.6, |v| v.monetised);
    let style = IdStyle::adversary(rng);
    let countries = exits(rng, 4, 10);
    let referrers = fake_referrers(w, rng, 2, 5);
    let interval = rng.random_range(120.0..=600.0f64).max(l.burst_gap());
    let wobble = rng.random_range(0.005..=0.05);
    let length = (rng.random_range(1..=2).min(w.days) * DAY) as f64;
    let lo = f64::from(l.billable + rng.random_range(1..=10));
    let width = f64::from(l.band) * rng.random_range(8.0..=20.0);
    let ad_rate = rng.random_range(0.0..=0.5);
    let sessions = rng.random_bool(0.5);
    let t0 = run_start(w, rng, length);
    let mut guard = FarmGuard::new();
    let mut s = 0.0;
    while s < length {
        let at = t0 + Duration::milliseconds((s * 1000.0) as i64);
        s += interval * (1.0 + rng.random_range(-wobble..=wobble));
        if !w.contains(at) {
            break;
        }
        let mut draft = Draft {
            video,
            user: String::new(),
            session: sessions.then(|| World::session(rng)),
            at,
            watch: rng.random_range(lo..lo + width) as u32,
            fp: rotated(rng, &countries, &referrers),
            revenue_eligible: true,
            ads: u32::from(rng.random_bool(ad_rate)),
            play: Play::Fresh,
        };
        for _ in 0..8 {
            if guard.admits(&draft) {
                break;
            }
            draft.fp = rotated(rng, &countries, &referrers);
        }
        if guard.admits(&draft) {
            guard.record(&draft);
            draft.user = w.fresh_user(rng, style);
            w.emit(rng, p, draft);
        }
    }
}

/// Fresh ids per view from one device fingerprint: a steady trickle of
/// minimal views (billable, too short to count as engaged, no ads) spaced
/// below the zero-engagement burst density and spread over videos so no
/// video-hour makes a farm.
fn fingerprint_fresh_ids(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::FingerprintFreshIds;
    let l = Limits::known();
    let device = pick(
        rng,
        &[
            (schemas::Device::Mobile, 50),
            (schemas::Device::Web, 35),
            (schemas::Device::Other, 15),
        ],
    );
    let fp = Fingerprint {
        device,
        country: Some(organic_country(rng).code),
        referrer: if rng.random_bool(0.5) {
            None
        } else {
            let related = w.videos[w.popular_video(rng)].id.clone();
            organic_referrer(rng, &related)
        },
        quality: Some(quality_for(rng, device)),
    };
    let mut targets = distinct(
        (0..rng.random_range(6..=16))
            .map(|_| w.video_in(rng, 0.1, 0.8, |v| v.monetised))
            .collect(),
    );
    let style = IdStyle::adversary(rng);
    let min_gap = l.burst_gap();
    let gap = rng.random_range(min_gap.max(40.0)..=180.0);
    let wobble = rng.random_range(0.1..=0.3);
    let length = rng.random_range(3.0..=12.0) * HOUR as f64;
    let hi = l.burst_watch.max(l.billable + 1);
    let sessions = rng.random_bool(0.3);
    let t0 = run_start(w, rng, length);
    let mut guard = FarmGuard::new();
    let mut s = 0.0;
    while s < length {
        let at = t0 + Duration::milliseconds((s * 1000.0) as i64);
        s += (gap * (1.0 + rng.random_range(-wobble..=wobble))).max(min_gap);
        if !w.contains(at) {
            break;
        }
        targets.shuffle(rng);
        let watch = rng.random_range(l.billable..hi);
        let admitted = targets.iter().copied().find_map(|video| {
            let d = Draft {
                video,
                user: String::new(),
                session: None,
                at,
                watch,
                fp: fp.clone(),
                revenue_eligible: true,
                ads: 0,
                play: Play::Fresh,
            };
            guard.admits(&d).then_some(d)
        });
        if let Some(mut d) = admitted {
            guard.record(&d);
            d.user = w.fresh_user(rng, style);
            d.session = sessions.then(|| World::session(rng));
            w.emit(rng, p, d);
        }
    }
}

/// Token replay: one captured playback token replayed many times under
/// fresh event ids and invented users.
fn token_replay(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::TokenReplay;
    let l = Limits::known();
    let video = w.video_in(rng, 0.0, 0.5, |v| v.monetised);
    let captured = w.fresh_playback(rng);
    let replays = rng.random_range(10..=100);
    let length = rng.random_range(1.0..=36.0) * HOUR as f64;
    let style = IdStyle::adversary(rng);
    let countries = exits(rng, 1, 5);
    let referrers = fake_referrers(w, rng, 0, 2);
    let fixed = rng
        .random_bool(0.5)
        .then(|| rotated(rng, &countries, &referrers));
    let base: f64 = rng.random_range(30.0..=200.0);
    let jitter = rng.random_range(5.0..=40.0);
    let t0 = run_start(w, rng, length);
    let mut at: Vec<f64> = (0..replays)
        .map(|_| rng.random_range(0.0..length))
        .collect();
    at.sort_by(f64::total_cmp);
    for s in at {
        let watch = (base + rng.random_range(-jitter..=jitter)).max(f64::from(l.billable) + 1.0);
        let draft = Draft {
            video,
            user: w.fresh_user(rng, style),
            session: rng.random_bool(0.5).then(|| World::session(rng)),
            at: t0 + Duration::milliseconds((s * 1000.0) as i64),
            watch: watch as u32,
            fp: fixed
                .clone()
                .unwrap_or_else(|| rotated(rng, &countries, &referrers)),
            revenue_eligible: true,
            ads: rng.random_range(0..=2),
            play: Play::Same(captured.clone()),
        };
        w.emit(rng, p, draft);
    }
}

/// One account with many long views in progress at once, more players
/// than a person runs.
fn impossible_concurrency(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::ImpossibleConcurrency;
    let style = IdStyle::adversary(rng);
    let user = w.fresh_user(rng, style);
    let home = organic_country(rng);
    let sessions = rng.random_range(1..=3).min(w.days);
    let mut days: Vec<i64> = (0..w.days).collect();
    days.shuffle(rng);
    for &day in days.iter().take(sessions as usize) {
        let start = w.local(day, home.offset, rng.random_range(0.0..DAY as f64));
        let n = rng.random_range(6..=12);
        let spread = rng.random_range(60..=900);
        let mut videos: Vec<usize> = Vec::new();
        while videos.len() < n {
            let v = w.video_in(rng, 0.0, 1.0, |v| v.monetised && v.kind != Kind::Short);
            if !videos.contains(&v) || videos.len() >= w.videos.len() {
                videos.push(v);
            }
        }
        for video in videos {
            let device = organic_device(rng);
            let watch = rng.random_range(HOUR..=4 * HOUR) as u32;
            let draft = Draft {
                video,
                user: user.clone(),
                session: Some(World::session(rng)),
                at: start + Duration::seconds(rng.random_range(0..=spread)),
                watch,
                fp: Fingerprint {
                    device,
                    country: Some(home.code),
                    referrer: rng.random_bool(0.5).then(|| format!("{SITE}/")),
                    quality: Some(quality_for(rng, device)),
                },
                revenue_eligible: true,
                ads: (watch / 1_200).min(3),
                play: Play::Fresh,
            };
            w.emit(rng, p, draft);
        }
    }
}

/// One account looping one video: just under the repeat-loop count in each
/// hour it runs, just under the daily cap each day, for many hours over
/// several days.
fn loop_under_cap(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::LoopUnderCap;
    let l = Limits::known();
    let style = IdStyle::adversary(rng);
    let user = w.fresh_user(rng, style);
    let video = w.video_in(rng, 0.1, 0.9, |v| {
        v.monetised && (35..=300).contains(&v.duration)
    });
    let length = w.videos[video].duration.clamp(l.billable + 5, 300);
    let per_hour = l.hourly.saturating_sub(rng.random_range(0..=1)).max(1);
    let per_day = l.daily.saturating_sub(rng.random_range(0..=2)).max(1);
    let device = organic_device(rng);
    let fp = Fingerprint {
        device,
        country: Some(organic_country(rng).code),
        referrer: None,
        quality: Some(quality_for(rng, device)),
    };
    // Whole UTC days inside the window, so the per-day count is the rule's.
    let begin = w.start.timestamp();
    let first = begin.div_euclid(DAY) + i64::from(begin.rem_euclid(DAY) != 0);
    let last = (begin + w.days * DAY).div_euclid(DAY) - 1;
    let span = rng.random_range(2..=7).min(last - first + 1).max(1);
    let from = rng.random_range(first..=(last - span + 1).max(first));
    for day in from..from + span {
        let fewest = per_day.div_ceil(per_hour);
        let hours = rng.random_range(fewest..=per_day.clamp(fewest, 12));
        let mut counts = vec![1u32; hours as usize];
        let mut left = per_day.saturating_sub(hours);
        while left > 0 {
            let h = rng.random_range(0..counts.len());
            if counts[h] < per_hour {
                counts[h] += 1;
                left -= 1;
            }
        }
        let first_hour = rng.random_range(0..=24 - i64::from(hours));
        let session = World::session(rng);
        for (i, &c) in counts.iter().enumerate() {
            let hour = day * DAY + (first_hour + i as i64) * HOUR;
            let step = HOUR as f64 / f64::from(c);
            for k in 0..c {
                let s = f64::from(k) * step + rng.random_range(0.0..step * 0.5);
                let at = DateTime::<Utc>::from_timestamp_millis(hour * 1000 + (s * 1000.0) as i64)
                    .unwrap_or(w.start);
                let draft = Draft {
                    video,
                    user: user.clone(),
                    session: Some(session.clone()),
                    at,
                    watch: length.saturating_sub(rng.random_range(0..=3)),
                    fp: fp.clone(),
                    revenue_eligible: true,
                    ads: u32::from(rng.random_bool(0.3)),
                    play: Play::Fresh,
                };
                w.emit(rng, p, draft);
            }
        }
    }
}

/// A hidden, muted autoplay embed on a third-party site: its real visitors
/// each become a billable view they never saw, with the site's diurnal
/// rhythm and one referrer, like a link shared organically.
fn hidden_embed(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::HiddenEmbedAutoplay;
    let l = Limits::known();
    let targets = distinct(
        (0..rng.random_range(1..=2))
            .map(|_| w.video_in(rng, 0.2, 0.9, |v| v.monetised && v.kind != Kind::Short))
            .collect(),
    );
    let page = format!(
        "https://{}-{}.example/{}/{}",
        word(rng),
        word(rng),
        word(rng),
        alnum(rng, 8).to_lowercase()
    );
    let home = organic_country(rng);
    let local = rng.random_range(0.5..=0.8);
    let span = rng.random_range(1..=4).min(w.days);
    let first = rng.random_range(0..=w.days - span);
    let peak = rng.random_range(4.0..=20.0);
    let quality = one(rng, &["360p", "480p"]);
    let median = rng.random_range(60.0..=200.0);
    let ad_rate = rng.random_range(0.0..=0.15);
    let style = if rng.random_bool(0.5) {
        IdStyle::Mimic
    } else {
        IdStyle::Hex
    };
    for h in first * 24..(first + span) * 24 {
        let local_hour = h + home.offset;
        let rate = peak * diurnal_weight(local_hour) * rng.random_range(0.8..=1.2);
        let visitors = rate.round() as u32;
        for _ in 0..visitors {
            let device = if rng.random_bool(0.85) {
                schemas::Device::Web
            } else {
                schemas::Device::Mobile
            };
            let code = if rng.random_bool(local) {
                home.code
            } else {
                organic_country(rng).code
            };
            let watch = lognormal(rng, median, 0.7).clamp(f64::from(l.billable) + 1.0, 1_800.0);
            let draft = Draft {
                video: one(rng, &targets),
                user: w.fresh_user(rng, style),
                session: Some(World::session(rng)),
                at: w.at((h * HOUR) as f64 + rng.random_range(0.0..HOUR as f64)),
                watch: watch as u32,
                fp: Fingerprint {
                    device,
                    country: Some(code),
                    referrer: Some(page.clone()),
                    quality: Some(quality),
                },
                revenue_eligible: true,
                ads: u32::from(rng.random_bool(ad_rate)),
                play: Play::Fresh,
            };
            w.emit(rng, p, draft);
        }
    }
}

/// A script posting views without a player: no playback token, so ingest
/// records them never billable. The product must pay none of them.
fn unsigned_script(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::UnsignedScript;
    let targets = distinct(
        (0..rng.random_range(1..=3))
            .map(|_| w.video_in(rng, 0.0, 1.0, |v| v.monetised))
            .collect(),
    );
    let style = IdStyle::adversary(rng);
    let users: Vec<String> = (0..rng.random_range(5..=40))
        .map(|_| w.fresh_user(rng, style))
        .collect();
    let countries = exits(rng, 1, 4);
    let views = rng.random_range(40..=400);
    let length = rng.random_range(1.0..=8.0) * HOUR as f64;
    let t0 = run_start(w, rng, length);
    let quality = rng.random_bool(0.5).then_some("720p");
    for _ in 0..views {
        let draft = Draft {
            video: one(rng, &targets),
            user: users[rng.random_range(0..users.len())].clone(),
            session: None,
            at: t0 + Duration::milliseconds((rng.random_range(0.0..length) * 1000.0) as i64),
            watch: rng.random_range(30..=120),
            fp: Fingerprint {
                device: one(rng, &[schemas::Device::Other, schemas::Device::Web]),
                country: Some(one(rng, &countries)),
                referrer: None,
                quality,
            },
            revenue_eligible: true,
            ads: 0,
            play: Play::Unsigned,
        };
        w.emit(rng, p, draft);
    }
}
