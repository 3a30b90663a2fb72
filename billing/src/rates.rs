//! The rate card (DESIGN §6): what a thousand billable views pay, per
//! creator and date.
//!
//! ```toml
//! currency = "USD"
//! default_cpm = "2.50"          # decimal string: currency units per 1 000 billable views
//!
//! [[override]]
//! creator_id = "c0042"
//! cpm = "4.00"
//! effective_from = 2026-01-01   # TOML local date, UTC, inclusive
//! effective_to = 2026-07-01     # optional, exclusive
//! ```
//!
//! Rates are decimal strings, never TOML floats (a float cannot hold
//! `0.10` exactly). A card is identified by the SHA-256 of its bytes, which
//! billing records beside every statement. Every error names the line.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;
use toml::Spanned;

use crate::money::CPM_MAX_SCALE;

/// A parsed, valid rate card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The rate where no override applies.
    pub default_cpm: Decimal,
    /// Overrides per creator, sorted by `effective_from`, never overlapping.
    overrides: BTreeMap<String, Vec<Override>>,
}

/// One creator's rate over a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The rate.
    pub cpm: Decimal,
    /// First day (UTC) it applies.
    pub effective_from: NaiveDate,
    /// First day it no longer applies; `None`: open-ended.
    pub effective_to: Option<NaiveDate>,
}

/// Why a rate card is refused: the line (from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateError {
    /// Line in the file, from 1.
    pub line: usize,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate card line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for RateError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    currency: Spanned<String>,
    default_cpm: Spanned<toml::Value>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<RawOverride>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    creator_id: Spanned<String>,
    cpm: Spanned<toml::Value>,
    effective_from: Spanned<toml::value::Datetime>,
    #[serde(default)]
    effective_to: Option<Spanned<toml::value::Datetime>>,
}

impl RateCard {
    /// Parses and checks a rate card file.
    pub fn parse(bytes: &[u8]) -> Result<Self, RateError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RateError {
            line: line_of(&bytes[..e.valid_up_to()], e.valid_up_to()),
            message: "the file is not UTF-8".into(),
        })?;
        let line = |offset: usize| line_of(text.as_bytes(), offset);
        let raw: RawCard = toml::from_str(text).map_err(|e| RateError {
            line: e.span().map_or(1, |s| line(s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let at = |s: &std::ops::Range<usize>, message: String| RateError {
            line: line(s.start),
            message,
        };
        let currency = raw.currency.get_ref();
        if !CURRENCIES.contains(&currency.as_str()) {
            return Err(at(
                &raw.currency.span(),
                format!(
                    "unknown currency {currency:?}: use an ISO 4217 code such as \"USD\" or \"EUR\""
                ),
            ));
        }
        let default_cpm =
            cpm(&raw.default_cpm, "default_cpm").map_err(|m| at(&raw.default_cpm.span(), m))?;
        let mut overrides: BTreeMap<String, Vec<(Override, usize)>> = BTreeMap::new();
        for o in &raw.overrides {
            let row = line(o.span().start);
            let o = o.get_ref();
            let creator = o.creator_id.get_ref();
            store::catalog::check_creator_id(creator)
                .map_err(|m| at(&o.creator_id.span(), format!("creator_id: {m}")))?;
            let cpm = cpm(&o.cpm, "cpm").map_err(|m| at(&o.cpm.span(), m))?;
            let from = date(&o.effective_from).map_err(|m| at(&o.effective_from.span(), m))?;
            let to = match &o.effective_to {
                Some(t) => {
                    let d = date(t).map_err(|m| at(&t.span(), m))?;
                    if d <= from {
                        return Err(at(
                            &t.span(),
                            format!(
                                "effective_to ({d}) must be after effective_from ({from}): it is exclusive"
                            ),
                        ));
                    }
                    Some(d)
                }
                None => None,
            };
            overrides.entry(creator.clone()).or_default().push((
                Override {
                    cpm,
                    effective_from: from,
                    effective_to: to,
                },
                row,
            ));
        }
        let mut checked = BTreeMap::new();
        for (creator, mut list) in overrides {
            list.sort_by_key(|(o, _)| o.effective_from);
            for pair in list.windows(2) {
                let (a, a_line) = &pair[0];
                let (b, b_line) = &pair[1];
                if a.effective_to.is_none_or(|end| end > b.effective_from) {
                    let (first, second) = if a_line < b_line {
                        (a_line, b_line)
                    } else {
                        (b_line, a_line)
                    };
                    return Err(RateError {
                        line: *second,
                        message: format!(
                            "this override for creator {creator:?} overlaps the one at line {first} \
                             ({} to {}); give the earlier one an effective_to no later than {}",
                            a.effective_from,
                            a.effective_to
                                .map_or_else(|| "open end".to_owned(), |d| d.to_string()),
                            b.effective_from
                        ),
                    });
                }
            }
            checked.insert(creator, list.into_iter().map(|(o, _)| o).collect());
        }
        Ok(Self {
            sha256: store::layout::sha256(bytes),
            currency: currency.clone(),
            default_cpm,
            overrides: checked,
        })
    }

    /// The rate in force for `creator` on `day` (UTC).
    pub fn cpm(&self, creator: &str, day: NaiveDate) -> Decimal {
        self.overrides
            .get(creator)
            .and_then(|list| {
                list.iter()
                    .find(|o| o.effective_from <= day && o.effective_to.is_none_or(|end| day < end))
            })
            .map_or(self.default_cpm, |o| o.cpm)
    }

    /// Overrides of one creator.
    pub fn overrides_of(&self, creator: &str) -> &[Override] {
        self.overrides.get(creator).map_or(&[], Vec::as_slice)
    }
}

/// Line (from 1) of byte `offset` in `text`.
fn line_of(text: &[u8], offset: usize) -> usize {
    1 + text[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn cpm(v: &Spanned<toml::Value>, key: &str) -> Result<Decimal, String> {
    let s = match v.get_ref() {
        toml::Value::String(s) => s,
        toml::Value::Float(_) | toml::Value::Integer(_) => {
            return Err(format!(
                "{key} must be a decimal string like \"2.50\", not a TOML number (a float cannot hold money exactly)"
            ));
        }
        other => {
            return Err(format!(
                "{key} must be a decimal string like \"2.50\", not a {}",
                other.type_str()
            ));
        }
    };
    parse_cpm(s).map_err(|why| format!("{key} {s:?}: {why}"))
}

/// Parses a rate: plain decimal digits with an optional fraction of at most
/// [`CPM_MAX_SCALE`] places, not negative.
pub fn parse_cpm(s: &str) -> Result<Decimal, String> {
    if s.starts_with('-') {
        return Err("a rate cannot be negative".into());
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || (s.contains('.') && frac.is_empty()) || !digits(frac) {
        return Err(
            "not a decimal number; write digits with an optional fraction, like \"2.50\"".into(),
        );
    }
    if frac.len() > CPM_MAX_SCALE as usize {
        return Err(format!(
            "at most {CPM_MAX_SCALE} decimal places are supported"
        ));
    }
    if int.len() > 12 {
        return Err("too large: at most 12 integer digits".into());
    }
    Decimal::from_str(s).map_err(|e| format!("not a decimal number: {e}"))
}

fn date(v: &Spanned<toml::value::Datetime>) -> Result<NaiveDate, String> {
    let dt = v.get_ref();
    match (dt.date, dt.time, dt.offset) {
        (Some(d), None, None) => {
            NaiveDate::from_ymd_opt(d.year.into(), d.month.into(), d.day.into())
                .ok_or_else(|| format!("{dt} is not a calendar date"))
        }
        _ => Err(format!(
            "{dt} must be a TOML local date like 2026-01-01 (a whole UTC day), without a time"
        )),
    }
}

/// Active ISO 4217 currency codes.
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> RateError {
        RateCard::parse(s.as_bytes()).unwrap_err()
    }

    const CARD: &str = r#"currency = "USD"
default_cpm = "2.50"

[[override]]
creator_id = "c1"
cpm = "4.00"
effective_from = 2026-01-01
effective_to = 2026-07-01

[[override]]
creator_id = "c1"
cpm = "5.125"
effective_from = 2026-07-01
"#;

    #[test]
    fn rates_by_creator_and_day() {
        let card = RateCard::parse(CARD.as_bytes()).unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(card.cpm("c1", d("2025-12-31")).to_string(), "2.50");
        assert_eq!(card.cpm("c1", d("2026-01-01")).to_string(), "4.00");
        assert_eq!(card.cpm("c1", d("2026-06-30")).to_string(), "4.00");
        assert_eq!(card.cpm("c1", d("2026-07-01")).to_string(), "5.125");
        assert_eq!(card.cpm("c2", d("2026-07-01")).to_string(), "2.50");
        assert_eq!(card.sha256, store::layout::sha256(CARD.as_bytes()));
    }

    #[test]
    fn every_error_names_its_line() {
        let e = err("currency = \"USD\"\ndefault_cpm = \"2.50\"\nbonus = 1\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("bonus"), "{e}");

        let e = err("currency = \"XXQ\"\ndefault_cpm = \"2.50\"\n");
        assert_eq!(
            (e.line, e.message.contains("unknown currency")),
            (1, true),
            "{e}"
        );

        let e = err("currency = \"USD\"\ndefault_cpm = \"-1.00\"\n");
        assert_eq!((e.line, e.message.contains("negative")), (2, true), "{e}");

        let e = err("currency = \"USD\"\ndefault_cpm = 2.5\n");
        assert_eq!(
            (e.line, e.message.contains("decimal string")),
            (2, true),
            "{e}"
        );

        let e = err("currency = \"USD\"\ndefault_cpm = \"2,50\"\n");
        assert_eq!(
            (e.line, e.message.contains("not a decimal")),
            (2, true),
            "{e}"
        );

        let e = err("currency = \"USD\"\ndefault_cpm = \"1e3\"\n");
        assert_eq!(e.line, 2, "{e}");

        let overlapping = format!(
            "{CARD}\n[[override]]\ncreator_id = \"c1\"\ncpm = \"1.00\"\neffective_from = 2026-03-01\neffective_to = 2026-04-01\n"
        );
        let e = err(&overlapping);
        assert_eq!(e.line, 15, "{e}");
        assert!(e.message.contains("overlaps the one at line 4"), "{e}");

        let e = err(
            "currency = \"USD\"\ndefault_cpm = \"2.50\"\n[[override]]\ncreator_id = \"c1\"\ncpm = \"1\"\neffective_from = 2026-03-01T00:00:00Z\n",
        );
        assert_eq!((e.line, e.message.contains("local date")), (6, true), "{e}");

        let e = err(
            "currency = \"USD\"\ndefault_cpm = \"2.50\"\n[[override]]\ncreator_id = \"c1\"\ncpm = \"1\"\neffective_from = 2026-03-01\neffective_to = 2026-03-01\n",
        );
        assert_eq!(
            (e.line, e.message.contains("after effective_from")),
            (7, true),
            "{e}"
        );

        let e = err("currency = \"USD\"\n");
        assert!(e.message.contains("default_cpm"), "{e}");

        let e = err("currency = \"USD\"\ndefault_cpm = \"0.0000001\"\n");
        assert!(e.message.contains("decimal places"), "{e}");
    }
}
