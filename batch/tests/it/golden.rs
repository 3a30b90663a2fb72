//! Pinned bytes: the raw archive files, the run id and the views Parquet of
//! a fixed small archive. "Same inputs ⇒ same bytes" is a promise to every
//! reader of published runs (DESIGN §6); a dependency bump (parquet, arrow,
//! serde_json, sha2) or an edit that changes any of these bytes fails here,
//! loudly, instead of silently republishing every hour under new ids.
//!
//! When a change is deliberate, bump `CODE_VERSION` (the crate version) so
//! new runs get new ids, and update the constants with the values the
//! failure prints.

use batch::run::{Engine, RunOptions};
use chrono::{DateTime, Duration, Utc};
use schemas::{ArchivedEvent, ReceivedEvent, RuleSet, ValidationContext};
use serde_json::json;

use crate::hard_cases::write;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// 24 events over two hours of one day, three videos, with an exact
/// re-send, a conflicting copy, an invalid row and a non-billable view.
fn rows() -> Vec<ArchivedEvent> {
    let base = at("2026-11-20T10:00:00Z");
    let received = at("2026-11-20T12:00:00Z");
    let mut out = Vec::new();
    for i in 0..24u32 {
        let id = uuid::Uuid::from_u128(0x1000 + u128::from(i % 21));
        let video = format!("v{}", i % 3);
        let occurred = base + Duration::minutes(i64::from(i) * 5);
        let watch = if i == 7 { 10 } else { 30 + i };
        let country = if i == 9 { "us" } else { "US" };
        let json = json!({
            "event_id": id.to_string(), "video_id": video, "user_id": format!("u{}", i % 5),
            "occurred_at": schemas::event::format_timestamp(&occurred),
            "watch_seconds": watch, "revenue_eligible": i % 4 != 0,
        });
        let rcv = received + Duration::seconds(i64::from(i));
        let mut e = schemas::parse_event(&json, &ValidationContext::at(rcv)).unwrap();
        // Invalid in the archive: what an older, laxer ingest let in.
        e.country = Some(country.into());
        out.push(ArchivedEvent {
            received: ReceivedEvent::new(e, rcv),
            kafka_partition: (i % 2) as i32,
            kafka_offset: i64::from(i),
        });
    }
    out
}

// The raw files changed when the archive gained playback_token, playback
// and playback_id (null here), and with them the run id; the views and
// filtered bytes did not.
const GOLDEN_RUN_ID: &str = "21b528b737390cda";
const GOLDEN_INPUTS: &[(&str, &str)] = &[
    (
        "raw/dt=2026-11-20/hour=10/p0000-00000000000000000000-00000000000000000010.parquet",
        "70bcbd66bbfb029118e75b63e1284a1a1baa6a137aae1217b93888c3e0d20238",
    ),
    (
        "raw/dt=2026-11-20/hour=10/p0001-00000000000000000001-00000000000000000011.parquet",
        "2226fb65ef8408f2935bb20d6da0018672f33b57f626209c2ba60e6ef84f0db8",
    ),
    (
        "raw/dt=2026-11-20/hour=11/p0000-00000000000000000012-00000000000000000022.parquet",
        "adc64cac0d4dcd0c480b8f401036caf611333df4f74be95fb8f4bae8ce9e8aa4",
    ),
    (
        "raw/dt=2026-11-20/hour=11/p0001-00000000000000000013-00000000000000000023.parquet",
        "da47fa138035bd56c3c9c81154bba3047ee1db419c8526733efa0519d3b65c5c",
    ),
];
const GOLDEN_OUTPUTS: &[(&str, &str)] = &[
    (
        "views/run=21b528b737390cda/part-0.parquet",
        "b87feab1812dc4b7c156c6bfd9b1111f452bcf6a99df6876ace2947e716911c8",
    ),
    (
        "filtered/run=21b528b737390cda/part-0.parquet",
        "0ad4273e58d6fd72de01a70f74f010c4597d9b3ad29bec5ec4581994e51fdb95",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_archive_gives_pinned_bytes_and_run_id() {
    for engine in [Engine::Native, Engine::Sql] {
        let dir = tempfile::tempdir().unwrap();
        let store = store::layout::open(&format!("file://{}", dir.path().display())).unwrap();
        write(store.as_ref(), &rows(), 0).await;
        let opts = RunOptions {
            allow_incomplete: true,
            compute: crate::harness::compute(engine),
            rules: RuleSet::default(),
            ..RunOptions::new(at("2026-11-20T00:00:00Z"), at("2026-11-21T00:00:00Z"))
        };
        let m = batch::run::run(store.clone(), &opts, &|_, _, _| {})
            .await
            .unwrap()
            .manifest;
        let inputs: Vec<(&str, &str)> = m
            .inputs
            .iter()
            .map(|i| (i.path.as_str(), i.sha256.as_str()))
            .collect();
        let outputs: Vec<(&str, &str)> = m
            .outputs
            .iter()
            .map(|o| (o.path.as_str(), o.sha256.as_str()))
            .collect();
        let got = format!(
            "run id {:?}\ninputs {inputs:?}\noutputs {outputs:?}",
            m.run_id
        );
        assert_eq!(
            inputs, GOLDEN_INPUTS,
            "raw archive bytes changed ({engine:?}):\n{got}"
        );
        assert_eq!(
            m.run_id, GOLDEN_RUN_ID,
            "run id changed ({engine:?}):\n{got}"
        );
        assert_eq!(
            outputs, GOLDEN_OUTPUTS,
            "views bytes changed ({engine:?}):\n{got}"
        );
        assert_eq!(
            (
                m.rows.input,
                m.rows.invalid,
                m.rows.duplicates,
                m.rows.conflicting_ids
            ),
            (24, 1, 3, 3),
            "{:?}",
            m.rows
        );
    }
}
