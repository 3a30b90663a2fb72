//! What a creator earns in a period, as serving shows it: the figures of
//! the period's statement, and until the period is final an estimate from
//! the merged batch + speed billable views, both by the statement's own
//! money rule (one line per video and rate in force, each rounded half-even
//! to cents, totals the sums of rounded lines: [`crate::money`]).
//!
//! Serving counts the views (it owns the merge); the money is decided
//! here, once, so an estimate rounds as the statement that replaces it will.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::money;
use crate::rates::RateCard;
use crate::statement::{Period, RecordedLine};
use crate::{Error, Result};

/// One video's billable views and what they pay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Billable views (an adjustment may take some back).
    pub billable_views: i64,
    /// The sum of the video's rounded line amounts.
    pub amount: Decimal,
}

/// A creator's figures per video on a recorded statement: its lines of
/// each video summed (views, and rounded amounts as recorded).
pub fn statement_figures(
    lines: &[RecordedLine],
    creator: &str,
) -> Result<BTreeMap<String, Figures>> {
    let mut out: BTreeMap<String, Figures> = BTreeMap::new();
    for r in lines
        .iter()
        .filter(|r| r.line.creator_id.as_deref() == Some(creator))
    {
        let l = &r.line;
        let amount = l.amount.ok_or_else(|| {
            Error::Tampered(format!(
                "the statement line of {} for {creator} has no amount",
                l.video_id
            ))
        })?;
        let f = out.entry(l.video_id.clone()).or_default();
        f.billable_views = f
            .billable_views
            .checked_add(l.billable_views)
            .ok_or_else(|| {
                Error::Tampered(format!("the billable views of {} overflow", l.video_id))
            })?;
        f.amount = money::sum([&f.amount, &amount])
            .ok_or_else(|| Error::Tampered(format!("the amounts of {} overflow", l.video_id)))?;
    }
    Ok(out)
}

/// The stretches of `period` over which `creator`'s rate is constant:
/// `[from, to)` and the cpm in force, in time order.
pub fn rate_stretches(
    rates: &RateCard,
    creator: &str,
    period: Period,
) -> Vec<(DateTime<Utc>, DateTime<Utc>, Decimal)> {
    let (start, end) = (period.start(), period.end());
    let mut cuts: Vec<DateTime<Utc>> = vec![start, end];
    for o in rates.overrides_of(creator) {
        for d in [Some(o.effective_from), o.effective_to]
            .into_iter()
            .flatten()
        {
            let t = d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            if t > start && t < end {
                cuts.push(t);
            }
        }
    }
    cuts.sort();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| (w[0], w[1], rates.cpm(creator, w[0].date_naive())))
        .collect()
}

/// An estimate being gathered: billable views per (video, cpm), as the
/// statement's lines will hold them.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    lines: BTreeMap<(String, Decimal), i64>,
}

impl Estimate {
    /// Adds `views` billable views of `video` at `cpm`.
    pub fn add(&mut self, video: &str, cpm: Decimal, views: i64) {
        *self
            .lines
            .entry((video.to_owned(), cpm.normalize()))
            .or_default() += views;
    }

    /// What `video` would be paid: its views, and the sum of its lines'
    /// rounded amounts.
    pub fn figures(&self, video: &str) -> Result<Figures> {
        let mut f = Figures::default();
        for ((_, cpm), &views) in self.lines.iter().filter(|((v, _), _)| v == video) {
            let amount = money::line_amount(views, *cpm).ok_or_else(|| {
                Error::Input(format!("{views} views at {cpm} overflow the decimal range"))
            })?;
            f.billable_views += views;
            f.amount = money::sum([&f.amount, &amount])
                .ok_or_else(|| Error::Input(format!("the amounts of {video} overflow")))?;
        }
        Ok(f)
    }
}

/// The sum of amounts, or an error naming what overflowed: a money total
/// never silently becomes a number.
pub fn total<'a>(amounts: impl IntoIterator<Item = &'a Decimal>, what: &str) -> Result<Decimal> {
    money::sum(amounts).ok_or_else(|| Error::Input(format!("{what} overflows the decimal range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn an_estimate_rounds_per_line_as_the_statement_will() {
        let mut e = Estimate::default();
        // 1 view at 2.50 is 0.0025 → 0.00; twice in one line is 0.005 → 0.00
        // (half-even); at two rates they are two lines.
        e.add("v1", d("2.50"), 1);
        e.add("v1", d("2.5"), 1);
        e.add("v1", d("7.00"), 3);
        let f = e.figures("v1").unwrap();
        assert_eq!(f.billable_views, 5);
        assert_eq!(f.amount, d("0.02"), "0.005 → 0.00 and 0.021 → 0.02");
        assert_eq!(e.figures("v2").unwrap(), Figures::default());
        let mut huge = Estimate::default();
        huge.add("v1", Decimal::MAX, i64::MAX);
        assert!(
            huge.figures("v1").is_err(),
            "an overflow is an error, not 0.00"
        );
    }

    #[test]
    fn totals_that_overflow_are_errors() {
        assert!(total([&Decimal::MAX, &Decimal::MAX], "the total").is_err());
        assert_eq!(total([&d("1.10"), &d("2.20")], "t").unwrap(), d("3.30"));
    }
}
