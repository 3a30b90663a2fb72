//! Organic traffic: the baseline and the hard cases, real people whose
//! views look like abuse to a naive rule and must be kept.

use chrono::Duration;
use rand::Rng;

use crate::Pattern;
use crate::world::{
    Country, Draft, Fingerprint, HOUR, IdStyle, Kind, Play, Rng8, SITE, World, alnum, country,
    exponential, hex, lognormal, one, organic_country, organic_device, organic_referrer, pick,
    quality_for, word,
};

/// Organic watch time of a video `duration` seconds long: some bounce,
/// some finish, the rest stop somewhere in between.
fn watch_time(rng: &mut Rng8, duration: u32) -> u32 {
    let d = duration.max(1);
    if rng.random_bool(0.22) {
        rng.random_range(2..=29u32).min(d)
    } else if rng.random_bool(0.35) {
        (f64::from(d) * rng.random_range(0.92..=1.0)) as u32
    } else {
        ((f64::from(d) * rng.random_range(0.08..0.92)) as u32).max(3)
    }
}

/// Ads shown in an organic view: a pre-roll most of the time, a mid-roll
/// per ten minutes, none for ad blockers or unmonetised videos; 0 to 3.
fn ads(rng: &mut Rng8, watch: u32, monetised: bool, kind: Kind) -> u32 {
    if !monetised || watch < 15 || rng.random_bool(0.12) {
        return 0;
    }
    if kind == Kind::Short {
        return u32::from(rng.random_bool(0.25));
    }
    (u32::from(rng.random_bool(0.7)) + watch / 600).min(3)
}

/// Whether an organic view of `video` may earn money: monetised videos,
/// less the odd view the platform excludes (subscribers, kids' settings).
fn eligible(rng: &mut Rng8, w: &World, video: usize) -> bool {
    w.videos[video].monetised && rng.random_bool(0.96)
}

/// The plain organic baseline: `views` views in sessions of active users,
/// diurnal by each user's home time zone, Zipf-like video popularity.
pub(crate) fn baseline(w: &mut World, rng: &mut Rng8, views: u64) {
    let mut made = 0u64;
    while made < views {
        let u = w.users[w.active_user(rng)].clone();
        let device = if rng.random_bool(0.85) {
            u.device
        } else {
            organic_device(rng)
        };
        let session = rng.random_bool(0.9).then(|| World::session(rng));
        let country = u.reports_country.then_some(u.home.code);
        let quality = rng.random_bool(0.96).then(|| quality_for(rng, device));
        let mut t = w.diurnal(rng, u.home.offset);
        let length = 1 + (exponential(rng, 1.6) as u32).min(11);
        let mut video = w.popular_video(rng);
        let mut referrer = {
            let related = w.videos[w.popular_video(rng)].id.clone();
            organic_referrer(rng, &related)
        };
        for _ in 0..length {
            if made >= views || !w.contains(t) {
                break;
            }
            let v = &w.videos[video];
            let (duration, monetised, kind) = (v.duration, v.monetised, v.kind);
            let watch = watch_time(rng, duration);
            let fp = Fingerprint {
                device,
                country,
                referrer: referrer.clone(),
                quality,
            };
            let draft = Draft {
                video,
                user: u.id.clone(),
                session: session.clone(),
                at: t,
                watch,
                fp: fp.clone(),
                revenue_eligible: eligible(rng, w, video),
                ads: ads(rng, watch, monetised, kind),
                play: Play::Fresh,
            };
            let playback = w.emit(rng, Pattern::OrganicBaseline, draft);
            made += 1;
            t += Duration::seconds(i64::from(watch) + rng.random_range(2..40));
            // Now and then the viewer plays it again in the same player: the
            // same playback.
            if made < views && w.contains(t) && rng.random_bool(0.03) {
                let again = watch_time(rng, duration).max(10);
                let draft = Draft {
                    video,
                    user: u.id.clone(),
                    session: session.clone(),
                    at: t,
                    watch: again,
                    fp,
                    revenue_eligible: eligible(rng, w, video),
                    ads: ads(rng, again, monetised, kind),
                    play: playback.map_or(Play::Fresh, Play::Same),
                };
                w.emit(rng, Pattern::OrganicBaseline, draft);
                made += 1;
                t += Duration::seconds(i64::from(again) + rng.random_range(2..40));
            }
            // The next view: autoplay or a click on a related video, often
            // the same creator's.
            let prev = w.videos[video].id.clone();
            referrer = rng.random_bool(0.6).then(|| format!("{SITE}/watch/{prev}"));
            video = if rng.random_bool(0.3) {
                let same = w.catalogue_of(w.videos[video].creator);
                one(rng, &same)
            } else {
                w.popular_video(rng)
            };
        }
    }
}

/// One episode of an organic hard case.
pub(crate) fn episode(w: &mut World, rng: &mut Rng8, pattern: Pattern) {
    match pattern {
        Pattern::ClassroomLecture => classroom(w, rng),
        Pattern::SharedLinkBurst => shared_link(w, rng),
        Pattern::TrendingShortNoAds => trending_short(w, rng),
        Pattern::LongLiveStream => live_stream(w, rng),
        Pattern::ChildRewatch => child_rewatch(w, rng),
        Pattern::WatchParty => watch_party(w, rng),
        _ => {}
    }
}

/// A class or an office on one network: one country, one device type, one
/// referrer (the course page), one quality, starting together and watching
/// about as long.
fn classroom(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::ClassroomLecture;
    let place = organic_country(rng);
    let video = w.video_in(rng, 0.0, 1.0, |v| {
        v.kind != Kind::Short && v.duration >= 600
    });
    let length = w.videos[video].duration.max(600);
    let accounts = rng.random_range(20..=60);
    let device = pick(
        rng,
        &[
            (schemas::Device::Web, 70),
            (schemas::Device::Tv, 10),
            (schemas::Device::Mobile, 20),
        ],
    );
    let quality = quality_for(rng, device);
    let referrer = if rng.random_bool(0.7) {
        format!(
            "https://lms.{}-{}.example/course/{}/unit/{}",
            word(rng),
            word(rng),
            rng.random_range(100..9_999),
            rng.random_range(1..30)
        )
    } else {
        format!(
            "https://intranet.{}.example/training/{}",
            word(rng),
            alnum(rng, 6)
        )
    };
    let start = w.local_hours(rng, place.offset, 8, 16);
    let spread = rng.random_range(30..=240);
    let base = f64::from(length) * rng.random_range(0.85..=1.0);
    let jitter = rng.random_range(3.0..=40.0);
    let ads = if w.videos[video].monetised {
        rng.random_range(0..=1)
    } else {
        0
    };
    let leavers = rng.random_range(0.0..=0.15);
    for _ in 0..accounts {
        let user = w.local_user(rng, place.code);
        let mut watch = base + rng.random_range(-jitter..=jitter);
        if rng.random_bool(leavers) {
            watch *= rng.random_range(0.3..0.8);
        }
        let draft = Draft {
            video,
            user,
            session: Some(World::session(rng)),
            at: start + Duration::seconds(rng.random_range(0..=spread)),
            watch: watch.max(60.0) as u32,
            fp: Fingerprint {
                device,
                country: Some(place.code),
                referrer: Some(referrer.clone()),
                quality: Some(quality),
            },
            revenue_eligible: rng.random_bool(0.97),
            ads,
            play: Play::Fresh,
        };
        w.emit(rng, p, draft);
    }
}

/// A clip shared from one link: hundreds of distinct people within the
/// hour from one external referrer, short watch times, few ads.
fn shared_link(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::SharedLinkBurst;
    let video = w.video_in(rng, 0.05, 1.0, |v| v.kind != Kind::Long);
    let referrer = match rng.random_range(0..4) {
        0 => format!("https://t.co/{}", alnum(rng, 10)),
        1 => format!(
            "https://www.reddit.com/r/{}/comments/{}/",
            word(rng),
            alnum(rng, 6).to_lowercase()
        ),
        2 => format!(
            "https://discord.com/channels/{}/{}",
            rng.random_range(10u64.pow(15)..10u64.pow(16)),
            rng.random_range(10u64.pow(15)..10u64.pow(16))
        ),
        _ => format!("https://www.facebook.com/groups/{}/", word(rng)),
    };
    let users = rng.random_range(150..=900);
    let lasting = rng.random_range(20.0..=60.0) * 60.0;
    let decay = lasting / rng.random_range(2.0..=5.0);
    let home = organic_country(rng);
    let local = rng.random_range(0.6..=0.9);
    let t0 = w.diurnal(rng, home.offset);
    let newcomers = rng.random_range(0.1..=0.4);
    let short_share = rng.random_range(0.25..=0.55);
    for _ in 0..users {
        let place = if rng.random_bool(local) {
            home
        } else {
            organic_country(rng)
        };
        let user = if rng.random_bool(newcomers) {
            w.fresh_user(rng, IdStyle::Mimic)
        } else {
            w.local_user(rng, place.code)
        };
        let device = pick(
            rng,
            &[
                (schemas::Device::Mobile, 75),
                (schemas::Device::Web, 22),
                (schemas::Device::Other, 3),
            ],
        );
        let watch = if rng.random_bool(short_share) {
            rng.random_range(4..30)
        } else {
            rng.random_range(30..=70)
        };
        let dt = exponential(rng, decay).min(lasting);
        let draft = Draft {
            video,
            user,
            session: Some(World::session(rng)),
            at: t0 + Duration::milliseconds((dt * 1000.0) as i64),
            watch,
            fp: Fingerprint {
                device,
                country: Some(place.code),
                referrer: Some(referrer.clone()),
                quality: Some(quality_for(rng, device)),
            },
            revenue_eligible: rng.random_bool(0.95),
            ads: u32::from(rng.random_bool(0.12)),
            play: Play::Fresh,
        };
        w.emit(rng, p, draft);
    }
}

/// A trending short without ads: many people watch it through once or
/// loop it, just over the billable minimum, no ad in any view.
fn trending_short(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::TrendingShortNoAds;
    let video = w.video_in(rng, 0.0, 0.6, |v| v.kind == Kind::Short);
    let length = rng.random_range(31..=44u32);
    let users = rng.random_range(200..=1_200);
    let hours = rng.random_range(3.0..=14.0);
    let t0 = w.at(rng.random_range(0.0..(w.span() - hours * HOUR as f64).max(1.0)));
    let peak = rng.random_range(0.2..=0.6);
    let loopers = rng.random_range(0.05..=0.2);
    for _ in 0..users {
        // Rising to a peak and fading: a triangular arrival time.
        let (a, b) = (rng.random_range(0.0..1.0f64), rng.random_range(0.0..1.0f64));
        let x = if a < peak {
            (a * peak).sqrt()
        } else {
            1.0 - ((1.0 - a) * (1.0 - peak)).sqrt()
        };
        let mut t = t0 + Duration::milliseconds(((x * hours * HOUR as f64 + b) * 1000.0) as i64);
        let place = organic_country(rng);
        let user = w.local_user(rng, place.code);
        let device = pick(
            rng,
            &[
                (schemas::Device::Mobile, 85),
                (schemas::Device::Web, 10),
                (schemas::Device::Tv, 5),
            ],
        );
        let fp = Fingerprint {
            device,
            country: Some(place.code),
            referrer: rng.random_bool(0.2).then(|| format!("{SITE}/shorts")),
            quality: Some(quality_for(rng, device)),
        };
        let loops = if rng.random_bool(loopers) {
            rng.random_range(2..=3)
        } else {
            1
        };
        let mut play = Play::Fresh;
        for k in 0..loops {
            let watch = if rng.random_bool(0.1) {
                rng.random_range(5..length)
            } else {
                length - rng.random_range(0..=1)
            };
            let draft = Draft {
                video,
                user: user.clone(),
                session: None,
                at: t,
                watch,
                fp: fp.clone(),
                revenue_eligible: true,
                ads: 0,
                play: play.clone(),
            };
            let id = w.emit(rng, p, draft);
            // A loop of the player is the same playback, once.
            play = match (k, id) {
                (0, Some(id)) => Play::Same(id),
                _ => Play::Fresh,
            };
            t += Duration::seconds(i64::from(watch) + 1);
        }
    }
}

/// A long live stream: a few hundred people each watching one view of one
/// to six hours, some on a second device at the same time.
fn live_stream(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::LongLiveStream;
    let video = w.video_in(rng, 0.0, 0.5, |v| v.kind == Kind::Long);
    let stream = rng.random_range(2 * HOUR..=8 * HOUR) as f64;
    let home = organic_country(rng);
    let local = rng.random_range(0.5..=0.8);
    let start = w.local_hours(rng, home.offset, 17, 22);
    let users = rng.random_range(150..=600);
    let second_device = rng.random_range(0.05..=0.15);
    let early = rng.random_range(0.5..=0.8);
    for _ in 0..users {
        let place = if rng.random_bool(local) {
            home
        } else {
            organic_country(rng)
        };
        let user = w.local_user(rng, place.code);
        let latest = stream - HOUR as f64;
        let join = if rng.random_bool(early) {
            rng.random_range(0.0..(30.0 * 60.0f64).min(latest))
        } else {
            rng.random_range(0.0..latest)
        };
        let most = (stream - join).min(6.0 * HOUR as f64);
        let watch = lognormal(rng, 2.5 * HOUR as f64, 0.5).clamp(HOUR as f64, most);
        let device = organic_device(rng);
        let at = start + Duration::seconds(join as i64);
        let view = |w: &mut World, rng: &mut Rng8, device, at, watch: f64| {
            let draft = Draft {
                video,
                user: user.clone(),
                session: Some(World::session(rng)),
                at,
                watch: watch as u32,
                fp: Fingerprint {
                    device,
                    country: Some(place.code),
                    referrer: rng.random_bool(0.3).then(|| format!("{SITE}/live")),
                    quality: Some(quality_for(rng, device)),
                },
                revenue_eligible: rng.random_bool(0.97),
                ads: ((watch / 1_800.0) as u32).min(4),
                play: Play::Fresh,
            };
            w.emit(rng, p, draft);
        };
        view(w, rng, device, at, watch);
        if rng.random_bool(second_device) {
            let other = if device == schemas::Device::Tv {
                schemas::Device::Mobile
            } else {
                schemas::Device::Tv
            };
            let later = rng.random_range(0.0..(watch * 0.5));
            let second = (watch - later) * rng.random_range(0.3..=1.0);
            view(
                w,
                rng,
                other,
                at + Duration::seconds(later as i64),
                second.max(300.0),
            );
        }
    }
}

/// A child rewatching a cartoon: one account, one video, six to fifteen
/// views over a day, some back to back, on a tablet or a TV.
fn child_rewatch(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::ChildRewatch;
    let video = w.video_in(rng, 0.0, 1.0, |v| {
        v.kind == Kind::Regular && (240..=720).contains(&v.duration)
    });
    let length = w.videos[video].duration.clamp(240, 720);
    let u = w.users[rng.random_range(0..w.users.len())].clone();
    let device = if rng.random_bool(0.5) {
        schemas::Device::Tv
    } else {
        schemas::Device::Mobile
    };
    let quality = quality_for(rng, device);
    let views = rng.random_range(6..=15);
    let mut t = w.local_hours(rng, u.home.offset, 7, 9);
    let country = u.reports_country.then_some(u.home.code);
    let ads_on = w.videos[video].monetised && rng.random_bool(0.5);
    let mut made = 0;
    while made < views {
        let run = rng.random_range(1..=5).min(views - made);
        let session = World::session(rng);
        let mut play = Play::Fresh;
        for _ in 0..run {
            let watch = if rng.random_bool(0.75) {
                length.saturating_sub(rng.random_range(0..=3))
            } else {
                (f64::from(length) * rng.random_range(0.4..0.9)) as u32
            };
            let draft = Draft {
                video,
                user: u.id.clone(),
                session: Some(session.clone()),
                at: t,
                watch,
                fp: Fingerprint {
                    device,
                    country,
                    referrer: None,
                    quality: Some(quality),
                },
                revenue_eligible: rng.random_bool(0.97),
                ads: if ads_on { rng.random_range(0..=1) } else { 0 },
                play: play.clone(),
            };
            let id = w.emit(rng, p, draft);
            // The player's replay button keeps the playback, now and then.
            play = match id {
                Some(id) if play == Play::Fresh && rng.random_bool(0.3) => Play::Same(id),
                _ => Play::Fresh,
            };
            t += Duration::seconds(i64::from(watch) + rng.random_range(2..=20));
            made += 1;
        }
        t += Duration::seconds(rng.random_range(30 * 60..=3 * HOUR));
        if w.secs(t) >= w.span() {
            break;
        }
    }
}

/// Friends at a watch party: five to twelve accounts, one video, starting
/// within a minute, one country and quality, watching in sync.
fn watch_party(w: &mut World, rng: &mut Rng8) {
    let p = Pattern::WatchParty;
    let video = w.video_in(rng, 0.0, 1.0, |v| {
        v.kind != Kind::Short && (1_200..=3_600).contains(&v.duration)
    });
    let length = w.videos[video].duration.max(600);
    let place: Country = if rng.random_bool(0.8) {
        organic_country(rng)
    } else {
        country("US")
    };
    let friends = rng.random_range(5..=12);
    let start = w.local_hours(rng, place.offset, 19, 23);
    let quality = one(rng, &["720p", "1080p"]);
    let party = format!("{SITE}/party/{}", hex(rng, 8));
    let base = f64::from(length) * rng.random_range(0.9..=1.0);
    let ads = if w.videos[video].monetised {
        rng.random_range(0..=3)
    } else {
        0
    };
    for _ in 0..friends {
        let user = w.local_user(rng, place.code);
        let draft = Draft {
            video,
            user,
            session: Some(World::session(rng)),
            at: start + Duration::milliseconds(rng.random_range(0..60_000)),
            watch: (base + rng.random_range(-10.0..=10.0)) as u32,
            fp: Fingerprint {
                device: organic_device(rng),
                country: Some(place.code),
                referrer: Some(party.clone()),
                quality: Some(quality),
            },
            revenue_eligible: rng.random_bool(0.97),
            ads,
            play: Play::Fresh,
        };
        w.emit(rng, p, draft);
    }
}
