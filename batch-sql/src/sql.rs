//! The SQL engine: the counting rules as DataFusion SQL over the raw Parquet.
//!
//! The same semantics as the native engine (`batch::count`), written as
//! the queries an analyst would write (and DuckDB or Spark would run over
//! the same files). It is the executable specification: a test holds its
//! output byte-identical to the native engine's, and a data engineer can
//! cross-check any run with `batch run --engine sql`, or run it on a
//! Ballista cluster with `--engine ballista` (crate `batch-cluster`).
//!
//! The whole run is one query: re-validate and fingerprint every raw row,
//! keep each event id's first copy with a `GROUP BY` and `first_value(…
//! ORDER BY` the copy order`)` (a hash aggregate, where a `ROW_NUMBER` per
//! event id sorted every raw row), number each (user, video, day)'s
//! billable views for the daily cap and each (verified playback, video,
//! day)'s for the replay rule, follow each user's day and each video's
//! day per fingerprint for the metronome (windows over the rows, no join:
//! `rhythm`), find what each other invalid-traffic rule
//! of [`schemas::fraud`] catches (a `GROUP BY … HAVING` per rule, window
//! counts for zero-engagement bursts) and join it in, and aggregate per
//! video and hour with
//! the viewer sketch as an aggregate function ([`crate::functions`]).

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::ObjectStore;
use schemas::RuleSet;
use schemas::dedup::{SQL_COPY_ORDER, SQL_EVENT_KEY};
use schemas::fraud::FraudRule;
use store::filtered::FilteredRow;
use store::manifest::{Input, Rows};
use store::views::{ViewRow, views_batch};

use batch::evidence::BillableEvent;
use batch::memory::Memory;
use batch::run::Computed;

use crate::functions::RAW_COLUMNS;
use crate::{Error, Result};

/// The metronome (`schemas::fraud::steady`) as common table expressions
/// over `viewed`, ending in `beats` with `beat` (1 for a beat), for each
/// grouping of `groups` (a prefix and the columns that, with the UTC day,
/// partition the rows; billable and not apart), in time and event id order.
///
/// Three levels, every grouping in each, to keep the plan shallow (Ballista
/// decodes plans with a recursion limit): the neighbours' times and watch
/// (`LAG` by one and two, `LEAD` by one); which links into and out of each
/// view are links, whether they break the rhythm of the link before, and
/// the links' chains (a running count of the breaks); and each chain's
/// length, counted once from the links' right ends and once from their left
/// ends, so that a view is a beat if the link into it or out of it is in a
/// chain long enough.
fn rhythm(rules: &RuleSet, groups: &[(&str, &str)]) -> String {
    let idle_us = i64::from(rules.metronome_idle_seconds) * 1_000_000;
    let jitter = rules.metronome_jitter_percent;
    let links = rules.metronome_views.saturating_sub(1);
    let window = |by: &str| format!("PARTITION BY {by}, m_day, billable");
    let ordered = |by: &str| format!("{} ORDER BY at_us, event_id", window(by));
    // Whether `a` (watched `w` seconds) and `b` after it are linked, and
    // whether gap `g` keeps the rhythm of gap `before` (null: no).
    let link = |a: &str, w: &str, b: &str| {
        format!("({b} - {a} > 0 AND {b} - ({a} + {w} * 1000000) >= {idle_us})")
    };
    let keeps =
        |g: &str, before: &str| format!("(100 * ABS({g} - {before}) <= {jitter} * {before})");
    let (mut neighbours, mut chained, mut beats) = (Vec::new(), Vec::new(), Vec::new());
    for (p, by) in groups {
        let w = ordered(by);
        neighbours.push(format!(
            "LAG(at_us, 1) OVER ({w}) AS {p}_a1, LAG(at_us, 2) OVER ({w}) AS {p}_a2,
                  LAG(watch_s, 1) OVER ({w}) AS {p}_w1, LAG(watch_s, 2) OVER ({w}) AS {p}_w2,
                  LEAD(at_us, 1) OVER ({w}) AS {p}_an"
        ));
        let (a1, a2, w1, w2, an) = (
            format!("{p}_a1"),
            format!("{p}_a2"),
            format!("{p}_w1"),
            format!("{p}_w2"),
            format!("{p}_an"),
        );
        let link_in = link(&a1, &w1, "at_us");
        let link_before = link(&a2, &w2, &a1);
        let link_out = link("at_us", "watch_s", &an);
        let gap_in = format!("(at_us - {a1})");
        let new_in = format!(
            "{link_in} AND NOT COALESCE({link_before} AND {}, FALSE)",
            keeps(&gap_in, &format!("({a1} - {a2})"))
        );
        let new_out = format!(
            "{link_out} AND NOT COALESCE({link_in} AND {}, FALSE)",
            keeps(&format!("({an} - at_us)"), &gap_in)
        );
        // The chain of the link out is a column of its own, not
        // `{p}_chain + next` in the partition: Ballista loses the input's
        // ordering of a computed partition key.
        chained.push(format!(
            "CASE WHEN {link_in} THEN 1 ELSE 0 END AS {p}_in,
                  CASE WHEN {link_out} THEN 1 ELSE 0 END AS {p}_out,
                  SUM(CASE WHEN {new_in} THEN 1 ELSE 0 END)
                    OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {p}_chain,
                  SUM(CASE WHEN {new_in} THEN 1 ELSE 0 END)
                    OVER ({w} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                    + CASE WHEN {new_out} THEN 1 ELSE 0 END AS {p}_chain_out"
        ));
        let part = window(by);
        beats.push(format!(
            "({p}_in = 1 AND SUM({p}_in) OVER ({part}, {p}_chain) >= {links})
                  OR ({p}_out = 1 AND SUM({p}_out) OVER ({part}, {p}_chain_out) >= {links})"
        ));
    }
    format!(
        ",
         neighbours AS (
           SELECT *, {}
           FROM (SELECT *, CAST(watch_seconds AS BIGINT) AS watch_s, at_us / 86400000000 AS m_day
                 FROM viewed)),
         chained AS (
           SELECT *, {}
           FROM neighbours),
         beats AS (
           SELECT *, CASE WHEN {} THEN 1 ELSE 0 END AS beat
           FROM chained)",
        neighbours.join(",\n                  "),
        chained.join(",\n                  "),
        beats.join("\n                  OR "),
    )
}

/// The rules as SQL common table expressions over the table `raw`, ending
/// in `capped`: one row per event (its winning copy) with `billable` (0 or
/// 1, before the invalid-traffic rules), `rule` (the name of the rule that
/// filtered it, else null), `filtered` (1 when a rule did), how many valid
/// `copies` it had and whether they `conflicting`ly disagreed. Each rule of
/// [`schemas::fraud`] is a table of what it catches, joined in; a rule that
/// is off has none.
fn ctes(rules: &RuleSet) -> String {
    let json = serde_json::to_string(rules)
        .unwrap_or_default()
        .replace('\'', "''");
    let fv = |col: &str| format!("first_value({col} ORDER BY {SQL_COPY_ORDER}) AS {col}");
    let band = rules.bot_farm_watch_band_seconds.max(1);
    let window_us = i64::from(rules.zero_engagement_window_seconds) * 1_000_000;
    // (rule, its table, how a view joins it, the column that is non-null
    // when it does), in attribution order; only the rules that are on.
    let mut caught: Vec<(FraudRule, String, String, &str)> = Vec::new();
    // Impossible watch: the views starting in an hour over rules v2's
    // limit, and the views in progress while more than the devices one
    // person runs are (a sweep over each user-day's span edges, views
    // ending before others start at one instant: `schemas::fraud::crowded`).
    let mut impossible: Vec<String> = Vec::new();
    if rules.impossible_watch_seconds > 0 {
        impossible.push(format!(
            "SELECT v.event_id FROM viewed v JOIN (
               SELECT uh, hour_us FROM viewed GROUP BY uh, hour_us
               HAVING SUM(CAST(watch_seconds AS BIGINT)) > {}) o
             ON v.uh = o.uh AND v.hour_us = o.hour_us",
            rules.impossible_watch_seconds
        ));
    }
    if rules.impossible_watch_devices > 0 {
        impossible.push(format!(
            "SELECT DISTINCT sp.event_id FROM spans sp JOIN (
               SELECT uh, d, t AS a, next AS b FROM (
                 SELECT uh, d, t,
                        SUM(step) OVER (PARTITION BY uh, d ORDER BY t, step
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS c,
                        LEAD(t) OVER (PARTITION BY uh, d ORDER BY t, step) AS next
                 FROM (SELECT uh, d, s AS t, 1 AS step FROM spans WHERE e > s
                       UNION ALL SELECT uh, d, e AS t, -1 AS step FROM spans WHERE e > s))
               WHERE c > {} AND next > t) c
             ON sp.uh = c.uh AND sp.d = c.d
             WHERE sp.e > sp.s AND c.a < sp.e AND sp.s < c.b",
            rules.impossible_watch_devices
        ));
    }
    if !impossible.is_empty() {
        caught.push((
            FraudRule::ImpossibleWatch,
            format!(
                "SELECT DISTINCT event_id FROM ({})",
                impossible.join(" UNION ALL ")
            ),
            "n.event_id = t.event_id".into(),
            "event_id",
        ));
    }
    if rules.repeat_loop_views > 0 {
        caught.push((
            FraudRule::RepeatLoop,
            format!(
                "SELECT video_id, hour_us, uh FROM viewed WHERE billable = 1
                 GROUP BY video_id, hour_us, uh HAVING COUNT(*) >= {}",
                rules.repeat_loop_views
            ),
            "n.video_id = t.video_id AND n.hour_us = t.hour_us AND n.uh = t.uh".into(),
            "uh",
        ));
    }
    if rules.zero_engagement_views > 0 {
        // A window may as well start at a candidate: count each start's
        // window, then a view is caught if a dense one started within the
        // window before it (peers included both times).
        caught.push((
            FraudRule::ZeroEngagement,
            format!(
                "SELECT event_id FROM (
                   SELECT event_id, MAX(CASE WHEN n >= {least} THEN 1 ELSE 0 END) OVER (
                     PARTITION BY video_id, hour_us ORDER BY at_us
                     RANGE BETWEEN {window_us} PRECEDING AND CURRENT ROW) AS dense
                   FROM (
                     SELECT event_id, video_id, hour_us, at_us, COUNT(*) OVER (
                       PARTITION BY video_id, hour_us ORDER BY at_us
                       RANGE BETWEEN CURRENT ROW AND {window_us} FOLLOWING) AS n
                     FROM viewed
                     WHERE billable = 1 AND ad_impressions = 0 AND watch_seconds < {watch}))
                 WHERE dense = 1",
                least = rules.zero_engagement_views,
                watch = rules.zero_engagement_watch_seconds,
            ),
            "n.event_id = t.event_id".into(),
            "event_id",
        ));
    }
    if rules.bot_farm_accounts > 0 {
        // Views watched past the bound are no farm's (0: any watch).
        let candidate = |c: &str| match rules.bot_farm_max_watch_seconds {
            0 => String::new(),
            max => format!(" AND {c}watch_seconds < {max}"),
        };
        let bands = format!(
            "SELECT video_id, hour_us, print, watch_seconds / {band} AS band,
                    COUNT(DISTINCT uh) AS accounts FROM viewed
             WHERE billable = 1{} GROUP BY video_id, hour_us, print, watch_seconds / {band}
             HAVING COUNT(DISTINCT uh) >= {}",
            candidate(""),
            rules.bot_farm_accounts
        );
        // A band is a farm's only when it holds its share of the accounts
        // of its (video, hour, fingerprint): clustered watch times.
        let table = match rules.bot_farm_share_percent {
            0 => bands,
            share => format!(
                "SELECT f.video_id, f.hour_us, f.print, f.band FROM ({bands}) f JOIN (
                   SELECT video_id, hour_us, print, COUNT(DISTINCT uh) AS crowd FROM viewed
                   WHERE billable = 1{} GROUP BY video_id, hour_us, print) g
                 ON f.video_id = g.video_id AND f.hour_us = g.hour_us AND f.print = g.print
                 WHERE f.accounts * 100 >= {share} * g.crowd",
                candidate("")
            ),
        };
        caught.push((
            FraudRule::BotFarm,
            table,
            format!(
                "n.video_id = t.video_id AND n.hour_us = t.hour_us AND n.print = t.print
                 AND n.watch_seconds / {band} = t.band{}",
                candidate("n.")
            ),
            "print",
        ));
    }
    // The replay rule ranks a verified playback's billable views of a
    // video and day as the daily cap ranks a user's (no join: a window).
    let replay = if rules.token_replay_views > 0 {
        format!(
            "\n                            WHEN n.ph IS NOT NULL AND n.prn > {} THEN '{}'",
            rules.token_replay_views,
            FraudRule::TokenReplay.name()
        )
    } else {
        String::new()
    };
    // The metronome follows each user's billable views of a day, and each
    // (video, day, fingerprint)'s, in windows over the rows (no join).
    let (metronome, source, beat) = if rules.metronome_views > 0 {
        (
            rhythm(rules, &[("u", "uh"), ("v", "video_id, print")]),
            "beats",
            format!(
                "\n                            WHEN n.beat = 1 THEN '{}'",
                FraudRule::Metronome.name()
            ),
        )
    } else {
        (String::new(), "viewed", String::new())
    };
    let mut tables = String::new();
    let mut joins = String::new();
    let mut cases = String::new();
    for (i, (rule, table, on, column)) in caught.iter().enumerate() {
        let name = rule.name();
        tables.push_str(&format!(",\n         rule_{name} AS ({table})"));
        joins.push_str(&format!(
            " LEFT JOIN rule_{name} t{i} ON {}",
            on.replace("t.", &format!("t{i}."))
        ));
        cases.push_str(&format!(" WHEN t{i}.{column} IS NOT NULL THEN '{name}'"));
    }
    format!(
        "valid AS (
           SELECT {SQL_EVENT_KEY} AS event_id, video_id, user_id, occurred_at, watch_seconds,
                  CASE WHEN revenue_eligible AND watch_seconds >= {min} THEN 1 ELSE 0 END AS billable,
                  received_at, kafka_partition, kafka_offset, ad_impressions,
                  vc_user_hash(user_id) AS uh,
                  CASE WHEN playback = 'verified' THEN vc_user_hash(playback_id) END AS ph,
                  vc_print({RAW_COLUMNS}, '{json}') AS print,
                  vc_payload_fp({RAW_COLUMNS}, '{json}') AS fp
           FROM raw WHERE vc_valid({RAW_COLUMNS}, '{json}')),
         firsts AS (
           SELECT event_id, {video}, {user}, {occurred}, {watch}, {billable}, {uh}, {ph}, {print}, {ads},
                  COUNT(*) AS copies,
                  CASE WHEN MIN(fp) <> MAX(fp) THEN 1 ELSE 0 END AS conflicting
           FROM valid GROUP BY event_id),
         viewed AS (
           SELECT *, CAST(date_trunc('hour', occurred_at) AS BIGINT) AS hour_us,
                  CAST(occurred_at AS BIGINT) AS at_us
           FROM firsts),
         spans AS (
           SELECT event_id, uh, s, LEAST(s + CAST(watch_seconds AS BIGINT), (s / 86400 + 1) * 86400) AS e,
                  s / 86400 AS d
           FROM (SELECT event_id, uh, watch_seconds, at_us / 1000000 AS s FROM viewed)){metronome},
         numbered AS (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, video_id, date_trunc('day', occurred_at), billable
                                        ORDER BY occurred_at, event_id) AS brn,
                  ROW_NUMBER() OVER (PARTITION BY ph, video_id, date_trunc('day', occurred_at), billable
                                     ORDER BY occurred_at, event_id) AS prn
           FROM {source}){tables},
         ruled AS (
           SELECT n.*, CASE WHEN n.billable = 0 THEN NULL{replay}{cases}
                            WHEN n.brn > {cap} THEN 'daily_cap'{beat} END AS rule
           FROM numbered n{joins}),
         capped AS (
           SELECT *, CASE WHEN rule IS NULL THEN 0 ELSE 1 END AS filtered FROM ruled)",
        min = rules.billable_min_watch_seconds,
        cap = rules.fraud_cap_per_user_video_day,
        replay = replay,
        metronome = metronome,
        source = source,
        beat = beat,
        video = fv("video_id"),
        user = fv("user_id"),
        occurred = fv("occurred_at"),
        watch = fv("watch_seconds"),
        billable = fv("billable"),
        uh = fv("uh"),
        ph = fv("ph"),
        print = fv("print"),
        ads = fv("ad_impressions"),
    )
}

/// The counting query: per video and hour of every event, the counts, the
/// viewer sketch, the copies and conflicting ids behind them, and the
/// filtered views by rule (in [`FraudRule::ALL`] order).
fn counts_sql(rules: &RuleSet) -> String {
    let by_rule: String = FraudRule::ALL
        .iter()
        .map(|r| {
            format!(
                ",\n                SUM(CASE WHEN rule = '{0}' THEN 1 ELSE 0 END) AS filtered_{0}",
                r.name()
            )
        })
        .collect();
    format!(
        "WITH {ctes}
         SELECT video_id, hour_us,
                COUNT(*) AS views,
                SUM(billable - filtered) AS billable_views,
                SUM(filtered) AS fraud_filtered,
                SUM(CAST(watch_seconds AS BIGINT)) AS watch_seconds,
                vc_sketch(user_id) AS sketch,
                SUM(copies) AS copies,
                SUM(conflicting) AS conflicting{by_rule}
         FROM capped
         GROUP BY video_id, hour_us
         ORDER BY video_id, hour_us",
        ctes = ctes(rules)
    )
}

/// The billable views of `videos` occurring in `[from, to)` that a run over
/// `inputs` with `rules` decides, each event once: the evidence behind a
/// statement line. Sorted by video, occurred_at, event id.
pub async fn billable_events(
    store: Arc<dyn ObjectStore>,
    inputs: &[Input],
    videos: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &RuleSet,
) -> Result<Vec<BillableEvent>> {
    if inputs.is_empty() || videos.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = crate::session::raw_session(
        store,
        inputs.iter().map(|i| i.path.as_str()),
        &Memory::default(),
    )
    .await?;
    let list = videos
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH {ctes}
         SELECT event_id, video_id, at_us, rule
         FROM capped
         WHERE billable = 1 AND video_id IN ({list})
           AND CAST(occurred_at AS BIGINT) >= {from_us} AND CAST(occurred_at AS BIGINT) < {to_us}
         ORDER BY video_id, occurred_at, event_id",
        ctes = ctes(rules),
        from_us = from.timestamp_micros(),
        to_us = to.timestamp_micros(),
    );
    let mut out = Vec::new();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    while let Some(b) = stream.try_next().await? {
        let id = b.column(0).as_string::<i32>();
        let v = b.column(1).as_string::<i32>();
        let t = b.column(2).as_primitive::<Int64Type>();
        let rule = b.column(3).as_string::<i32>();
        for i in 0..b.num_rows() {
            let filtered_by = if rule.is_null(i) {
                None
            } else {
                Some(FraudRule::from_name(rule.value(i)).ok_or_else(|| {
                    Error::Bug(format!("the rules SQL names no rule {:?}", rule.value(i)))
                })?)
            };
            out.push(BillableEvent {
                video_id: v.value(i).to_owned(),
                occurred_at_us: t.value(i),
                event_id: id.value(i).to_owned(),
                filtered_by,
            });
        }
    }
    Ok(out)
}

/// Counts hours `[from, to)` of `inputs` with `rules` in `ctx`, a session
/// (local or on a cluster) with the inputs as the table `raw` and the
/// rules' functions registered.
pub async fn compute(
    ctx: &SessionContext,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &RuleSet,
) -> Result<Computed> {
    let (from_us, to_us) = (from.timestamp_micros(), to.timestamp_micros());
    let mut rows = Rows::default();
    let mut out = Vec::new();
    let mut filtered = Vec::new();
    let (mut copies, mut firsts) = (0u64, 0u64);
    // One row per video and hour: small beside the rows they count.
    let batches = ctx.sql(&counts_sql(rules)).await?.collect().await?;
    for b in &batches {
        let v = b.column(0).as_string::<i32>();
        let h = b.column(1).as_primitive::<Int64Type>();
        let int = |c: usize| b.column(c).as_primitive::<Int64Type>();
        let (views, billable, fraud, watch) = (int(2), int(3), int(4), int(5));
        let sketch = b.column(6).as_binary::<i32>();
        let (n_copies, conflicting) = (int(7), int(8));
        let by_rule: Vec<_> = (0..FraudRule::ALL.len()).map(|r| int(9 + r)).collect();
        for i in 0..b.num_rows() {
            copies += n_copies.value(i) as u64;
            firsts += views.value(i) as u64;
            rows.conflicting_ids += conflicting.value(i) as u64;
            // Every event is counted (the fraud cap needs its whole day),
            // but only the range's hours are written.
            if h.value(i) < from_us || h.value(i) >= to_us {
                continue;
            }
            for (rule, n) in FraudRule::ALL.iter().zip(&by_rule) {
                if n.value(i) > 0 {
                    filtered.push(FilteredRow {
                        video_id: v.value(i).to_owned(),
                        hour_us: h.value(i),
                        rule: *rule,
                        views: n.value(i),
                    });
                }
            }
            out.push(ViewRow {
                video_id: v.value(i),
                hour_us: h.value(i),
                views: views.value(i),
                billable_views: billable.value(i),
                fraud_filtered: fraud.value(i),
                watch_seconds: watch.value(i),
                sketch: sketch.value(i).to_vec(),
            });
            rows.views += views.value(i) as u64;
            rows.billable_views += billable.value(i) as u64;
            rows.fraud_filtered += fraud.value(i) as u64;
            rows.output += 1;
        }
    }
    let input = ctx.sql("SELECT COUNT(*) FROM raw").await?.collect().await?;
    rows.input = input.first().map_or(0, |b| {
        b.column(0).as_primitive::<Int64Type>().value(0) as u64
    });
    rows.invalid = rows.input - copies;
    rows.duplicates = copies - firsts;
    let views = views_batch(out.into_iter())?;
    Ok(Computed {
        views,
        filtered,
        rows,
    })
}
