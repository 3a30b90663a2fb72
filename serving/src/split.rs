//! The merge rule of DESIGN §5.4: hours before the batch watermark `W` come
//! from batch, hours from `W` on from the speed layer. Nothing else decides
//! which layer an hour comes from, so no hour is counted twice or missed,
//! even while `W` moves between requests.

use chrono::{DateTime, Utc};

/// The two parts of a range. Either may be empty (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// `[from, min(to, W))`, if not empty.
    pub batch: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// `[max(from, W), to)`, if not empty.
    pub speed: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Splits `[from, to)` at the watermark `w` (`None`: nothing published yet,
/// so all of it is speed's).
pub fn split(from: DateTime<Utc>, to: DateTime<Utc>, w: Option<DateTime<Utc>>) -> Parts {
    let nonempty = |a: DateTime<Utc>, b: DateTime<Utc>| (a < b).then_some((a, b));
    match w {
        None => Parts {
            batch: None,
            speed: nonempty(from, to),
        },
        Some(w) => Parts {
            batch: nonempty(from, to.min(w)),
            speed: nonempty(from.max(w), to),
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;

    fn hour(h: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(h * 3600, 0).single().unwrap()
    }

    proptest! {
        /// For any range and any watermark, each hour of the range is in
        /// exactly one part, and no hour outside it is in either.
        #[test]
        fn each_hour_is_counted_exactly_once(
            from in 0i64..500, len in 0i64..300, w in proptest::option::of(0i64..900),
        ) {
            let (f, t) = (hour(from), hour(from + len));
            let parts = split(f, t, w.map(hour));
            for h in (from - 5)..(from + len + 5) {
                let at = hour(h);
                let in_range = |p: Option<(DateTime<Utc>, DateTime<Utc>)>| {
                    p.is_some_and(|(a, b)| a <= at && at < b)
                };
                let n = u8::from(in_range(parts.batch)) + u8::from(in_range(parts.speed));
                let want = u8::from(f <= at && at < t);
                prop_assert_eq!(n, want, "hour {} of [{}, {}) with W {:?}", h, from, from + len, w);
                if let (true, Some(w)) = (in_range(parts.batch), w) {
                    prop_assert!(at < hour(w), "batch serves only hours before W");
                }
            }
        }
    }

    #[test]
    fn the_edges() {
        let (f, t) = (hour(10), hour(20));
        assert_eq!(
            split(f, t, Some(hour(15))),
            Parts {
                batch: Some((f, hour(15))),
                speed: Some((hour(15), t))
            }
        );
        assert_eq!(
            split(f, t, Some(f)),
            Parts {
                batch: None,
                speed: Some((f, t))
            }
        );
        assert_eq!(
            split(f, t, Some(t)),
            Parts {
                batch: Some((f, t)),
                speed: None
            }
        );
        assert_eq!(split(f, t, Some(t + Duration::days(9))).speed, None);
        assert_eq!(
            split(f, t, None),
            Parts {
                batch: None,
                speed: Some((f, t))
            }
        );
        assert_eq!(
            split(t, t, Some(f)),
            Parts {
                batch: None,
                speed: None
            }
        );
    }
}
