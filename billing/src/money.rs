//! The one rounding rule (DESIGN §5.6): a line pays billable views × CPM /
//! 1000, rounded half-even to cents; every total is a sum of rounded lines.

use rust_decimal::{Decimal, RoundingStrategy};

/// Most decimal places a rate may have.
pub const CPM_MAX_SCALE: u32 = 6;

/// Cents.
pub const AMOUNT_SCALE: u32 = 2;

/// What `views` billable views pay at `cpm`, rounded half-even to cents.
/// `views` may be negative (an adjustment). `None` only past Decimal's
/// range (about 7.9 × 10²⁸), which no real statement reaches.
pub fn line_amount(views: i64, cpm: Decimal) -> Option<Decimal> {
    let exact = Decimal::from(views)
        .checked_mul(cpm)?
        .checked_div(Decimal::ONE_THOUSAND)?;
    Some(round_cents(exact))
}

/// `exact` rounded half-even to cents, written with two decimals: the one
/// rounding rule.
pub fn round_cents(exact: Decimal) -> Decimal {
    let mut cents =
        exact.round_dp_with_strategy(AMOUNT_SCALE, RoundingStrategy::MidpointNearestEven);
    cents.rescale(AMOUNT_SCALE);
    cents
}

/// Sum of amounts, written with two decimals.
pub fn sum<'a>(amounts: impl IntoIterator<Item = &'a Decimal>) -> Option<Decimal> {
    let mut total = Decimal::ZERO;
    for a in amounts {
        total = total.checked_add(*a)?;
    }
    total.rescale(AMOUNT_SCALE);
    Some(total)
}

/// An amount as statements write it: always two decimals (`12.30`, `0.00`,
/// `-1.05`).
pub fn format_amount(d: Decimal) -> String {
    let mut d = d;
    d.rescale(AMOUNT_SCALE);
    if d.is_zero() {
        // Never "-0.00".
        return "0.00".to_owned();
    }
    d.to_string()
}

/// A rate as statements write it: as the rate card gave it, trailing zeros
/// kept to two places (`2.50`, `5.125`).
pub fn format_cpm(d: Decimal) -> String {
    let mut d = d.normalize();
    if d.scale() < AMOUNT_SCALE {
        d.rescale(AMOUNT_SCALE);
    }
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn half_even_at_the_half_cent() {
        // 1 view at 5.000 CPM = 0.005 → 0.00 (0 is even); 3 views = 0.015 → 0.02.
        assert_eq!(format_amount(line_amount(1, d("5")).unwrap()), "0.00");
        assert_eq!(format_amount(line_amount(3, d("5")).unwrap()), "0.02");
        assert_eq!(format_amount(line_amount(5, d("5")).unwrap()), "0.02");
        assert_eq!(format_amount(line_amount(7, d("5")).unwrap()), "0.04");
        assert_eq!(format_amount(line_amount(-3, d("5")).unwrap()), "-0.02");
        assert_eq!(format_amount(line_amount(-1, d("5")).unwrap()), "0.00");
        assert_eq!(format_amount(line_amount(1234, d("2.50")).unwrap()), "3.08");
        assert_eq!(format_amount(line_amount(1000, d("2.5")).unwrap()), "2.50");
        assert_eq!(format_cpm(d("2.5")), "2.50");
        assert_eq!(format_cpm(d("5.125000")), "5.125");
        assert_eq!(format_cpm(d("4")), "4.00");
    }

    proptest! {
        /// At every x.xx5 boundary the rounding goes to the even cent, and
        /// nowhere else does it move by half a cent or more.
        #[test]
        fn rounding_is_half_even_and_within_half_a_cent(views in -10_000_000i64..10_000_000, cpm_milli in 0u32..100_000_000) {
            let cpm = Decimal::new(i64::from(cpm_milli), 6);
            let exact = Decimal::from(views) * cpm / Decimal::ONE_THOUSAND;
            let got = line_amount(views, cpm).unwrap();
            let diff = (got - exact).abs();
            let half = Decimal::new(5, 3);
            prop_assert!(diff <= half);
            if diff == half {
                let cents = (got * Decimal::ONE_HUNDRED).trunc();
                prop_assert!(cents % Decimal::TWO == Decimal::ZERO, "{exact} -> {got}");
            }
            prop_assert_eq!(got.scale(), AMOUNT_SCALE);
        }

        /// A total is exactly the sum of its rounded lines, however they
        /// are grouped.
        #[test]
        fn totals_are_sums_of_rounded_lines(lines in proptest::collection::vec((0i64..1_000_000, 0u32..10_000_000), 0..50)) {
            let amounts: Vec<Decimal> = lines.iter().map(|&(v, c)| line_amount(v, Decimal::new(i64::from(c), 6)).unwrap()).collect();
            let total = sum(&amounts).unwrap();
            let (a, b) = amounts.split_at(amounts.len() / 2);
            prop_assert_eq!(total, sum(a).unwrap() + sum(b).unwrap());
            let cents: i128 = amounts.iter().map(|x| (x * Decimal::ONE_HUNDRED).trunc().mantissa()).sum();
            prop_assert_eq!((total * Decimal::ONE_HUNDRED).trunc().mantissa(), cents);
        }

        /// An adjustment of +d then −d sums back to zero.
        #[test]
        fn adjustments_sum_back(views in 0i64..10_000_000, cpm_milli in 0u32..100_000_000) {
            let cpm = Decimal::new(i64::from(cpm_milli), 6);
            let a = line_amount(views, cpm).unwrap();
            let b = line_amount(-views, cpm).unwrap();
            prop_assert_eq!(a + b, Decimal::ZERO);
        }
    }
}
