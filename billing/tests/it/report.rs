//! `billing report` / `finalize` end to end: archive → batch → statement →
//! ledger, checked against the generator's truth × the rates.

use std::collections::BTreeMap;

use billing::Error;
use billing::ledger::{Appended, Kind, Ledger, NewEntry};
use billing::statement::{self, Finalized, LineKind, Period, ReportOptions};
use chrono::{Duration, NaiveDate, TimeDelta};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::world::{RATES, World, at, parse_csv};

fn opts(period: &str, provisional: bool) -> ReportOptions {
    ReportOptions {
        period: Period::parse(period).unwrap(),
        provisional,
        grace: ReportOptions::DEFAULT_GRACE,
        operator: "test".into(),
    }
}

async fn read(w: &World, path: &str) -> Vec<u8> {
    w.store
        .get(&Path::from(path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Events from Oct 28 to Nov 2, published through Nov 2.
/// October's traffic archived, before any batch run.
async fn october_archived() -> World {
    let mut w = World::new().await;
    w.archive(
        6_000,
        1,
        at("2026-10-28T00:00:00Z"),
        Duration::days(5),
        at("2026-11-02T00:30:00Z"),
    )
    .await;
    w
}

/// Runs and publishes the batch over [`october_archived`]'s days.
async fn batch_october(w: &World) {
    w.batch(at("2026-10-28T00:00:00Z"), at("2026-11-02T00:00:00Z"))
        .await;
}

async fn october() -> World {
    let w = october_archived().await;
    batch_october(&w).await;
    w
}

#[tokio::test]
async fn a_statement_is_truth_times_rates_and_is_recorded_once() {
    let w = october().await;
    let october = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();

    // The watermark (Nov 2 00:00) has not passed Nov 1 + 72 h.
    let err = statement::report(
        w.store.clone(),
        &w.key,
        RATES.as_bytes(),
        &opts("2026-10", false),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotReady(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("2026-11-02T00:00:00+00:00")
            && msg.contains("48 hours short")
            && msg.contains("--provisional"),
        "{msg}"
    );
    assert!(
        Ledger::new(w.store.clone())
            .read()
            .await
            .unwrap()
            .entries
            .is_empty()
    );

    // With a grace of 0 the month is billable.
    let final_opts = ReportOptions {
        grace: TimeDelta::zero(),
        ..opts("2026-10", false)
    };
    let r = statement::report(w.store.clone(), &w.key, RATES.as_bytes(), &final_opts)
        .await
        .unwrap();
    assert_eq!(r.entry, Appended::New(0));
    let dir = r.statement.dir();
    let csv = read(&w, &format!("{dir}/statement.csv")).await;
    let got: BTreeMap<(String, String, i64), (i64, i64)> = parse_csv(&csv)
        .into_iter()
        .map(|(c, v, cpm, views, cents, kind, reference)| {
            assert_eq!((kind.as_str(), reference.as_str()), ("views", ""));
            ((c, v, cpm), (views, cents))
        })
        .collect();
    let want = w.expected(october);
    assert!(want.len() > 20, "a real statement: {} lines", want.len());
    assert!(
        want.keys().any(|k| k.2 == 4_125_000)
            && want
                .keys()
                .any(|k| k.0 == "creator-0001" && k.2 == 2_500_000),
        "the mid-month rate change gives two lines for creator-0001"
    );
    assert_eq!(got, want);

    // Totals: creator totals are sums of rounded lines, the total their sum.
    let json: serde_json::Value =
        serde_json::from_slice(&read(&w, &format!("{dir}/statement.json")).await).unwrap();
    let total_cents: i64 = want.values().map(|v| v.1).sum();
    assert_eq!(
        json["total"],
        format!("{}.{:02}", total_cents / 100, total_cents % 100)
    );
    assert_eq!(json["provisional"], false);
    let mut filtered_views = 0;
    for c in json["creators"].as_array().unwrap() {
        let id = c["creator_id"].as_str().unwrap();
        let cents: i64 = want
            .iter()
            .filter(|(k, _)| k.0 == id)
            .map(|(_, v)| v.1)
            .sum();
        assert_eq!(
            c["total"],
            format!("{}.{:02}", cents / 100, cents % 100),
            "{id}"
        );
        // What the invalid-traffic rules removed, per video and rule.
        let filtered = c["filtered_views"].as_u64().unwrap();
        assert_eq!(filtered, w.october_filtered(id, |_| true), "{id}");
        let by_rule: u64 = c["filtered"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["by_rule"].as_object().unwrap().values())
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(by_rule, filtered, "{id}");
        filtered_views += filtered;
    }
    assert!(filtered_views > 0, "the month has filtered views");
    // Unattributed videos are listed, not paid.
    let un = parse_csv(&read(&w, &format!("{dir}/unattributed.csv")).await);
    let un: BTreeMap<String, i64> = un
        .into_iter()
        .map(|r| {
            assert_eq!((r.0.as_str(), r.2, r.4), ("", 0, 0));
            (r.1, r.3)
        })
        .collect();
    assert_eq!(un, w.expected_unattributed(october));
    assert!(!un.is_empty());

    // The manifest names every file's hash, and the ledger entry each path's.
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&w, &format!("{dir}/manifest.json")).await).unwrap();
    assert_eq!(manifest["provisional"], false);
    for (name, sha) in manifest["files"].as_object().unwrap() {
        let bytes = read(&w, &format!("{dir}/{name}")).await;
        assert_eq!(
            store::layout::sha256(&bytes),
            sha.as_str().unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        manifest["inputs"]["hours"].as_object().unwrap().len(),
        4 * 24
    );
    let log = Ledger::new(w.store.clone()).read().await.unwrap();
    assert_eq!(log.entries.len(), 1);
    assert_eq!(log.entries[0].files.len(), 8);
    assert!(!log.entries[0].provisional);
    // The entry (which every line proof embeds) commits to the totals but
    // does not show them: only the currency and the line count are public.
    let entry: serde_json::Value = serde_json::from_slice(&log.bytes[0]).unwrap();
    assert!(entry.get("totals").is_none(), "{entry}");
    let sealed = &entry["sealed_totals"];
    assert_eq!(
        sealed.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["currency", "lines", "sha256"]
    );
    assert_eq!(sealed["lines"], want.len());
    let totals_bytes = read(&w, &format!("{dir}/totals.json")).await;
    assert_eq!(
        sealed["sha256"].as_str().unwrap(),
        store::layout::sha256(&totals_bytes)
    );
    let file: serde_json::Value = serde_json::from_slice(&totals_bytes).unwrap();
    assert_eq!(file["salt"].as_str().unwrap().len(), 64);
    assert_eq!(
        file["totals"]["amount"].as_str().unwrap(),
        json["total"].as_str().unwrap()
    );
    let totals = statement::entry_totals(w.store.as_ref(), &log.entries[0])
        .await
        .unwrap();
    assert_eq!(totals.amount, json["total"].as_str().unwrap());
    // It commits to the rules of every run it counts, salted (the file's
    // hash is in the entry; the thresholds are not).
    let rules = statement::entry_rules(w.store.as_ref(), &log.entries[0])
        .await
        .unwrap()
        .expect("a rules.json");
    let runs: std::collections::BTreeSet<&str> = manifest["inputs"]["hours"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        rules
            .runs
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        runs
    );
    for r in rules.runs.values() {
        assert_eq!(
            (r.rules_version, r.rules),
            (schemas::RULES_VERSION, schemas::RuleSet::default())
        );
    }
    assert_eq!(rules.salt.len(), 64);
    assert_ne!(
        rules.salt,
        file["salt"].as_str().unwrap(),
        "a salt of its own"
    );
    let rules_bytes = read(&w, &format!("{dir}/rules.json")).await;
    assert_eq!(
        log.entries[0].files[&format!("{dir}/rules.json")],
        store::layout::sha256(&rules_bytes)
    );
    assert!(
        !String::from_utf8_lossy(&log.bytes[0]).contains("repeat_loop"),
        "the entry holds no threshold"
    );
    // A rules.json that misstates a run's rules, even with its hash in the
    // entry, is refused by the deep verify.
    let mut forged = rules.clone();
    if let Some(r) = forged.runs.values_mut().next() {
        r.rules.repeat_loop_views += 1;
    }
    let rules_path = object_store::path::Path::from(format!("{dir}/rules.json"));
    let forged_bytes = serde_json::to_vec_pretty(&forged).unwrap();
    w.store
        .put(&rules_path, forged_bytes.clone().into())
        .await
        .unwrap();
    let mut forged_log = Ledger::new(w.store.clone()).read().await.unwrap();
    forged_log.entries[0]
        .files
        .insert(rules_path.to_string(), store::layout::sha256(&forged_bytes));
    let err = statement::verify_deep(w.store.as_ref(), &forged_log, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("are not the ones the run's manifest records"),
        "{err}"
    );
    w.store
        .put(&rules_path, rules_bytes.clone().into())
        .await
        .unwrap();
    statement::verify_deep(w.store.as_ref(), &log, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        totals.creators,
        json["creators"].as_array().unwrap().len() as u64
    );

    // Same inputs: same id, nothing new written.
    let again = statement::report(w.store.clone(), &w.key, RATES.as_bytes(), &final_opts)
        .await
        .unwrap();
    assert_eq!(again.statement.id, r.statement.id);
    assert_eq!(again.entry, Appended::Existing(0));
    assert_eq!(again.statement.csv(false).unwrap(), csv);
    assert_eq!(
        Ledger::new(w.store.clone())
            .read()
            .await
            .unwrap()
            .entries
            .len(),
        1
    );

    let v = Ledger::new(w.store.clone())
        .verify(None, None)
        .await
        .unwrap();
    assert_eq!((v.entries, v.files), (1, 8));
    let log = Ledger::new(w.store.clone()).read().await.unwrap();
    let deep = statement::verify_deep(w.store.as_ref(), &log, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(deep.statements, 1);

    // An entry signed with the key whose totals are not what its lines add
    // up to (here a format-1 entry, its totals in the clear) is a log that
    // verifies, and a statement `--deep` refuses.
    let mut forged = log.entries[0].clone();
    let mut t = statement::entry_totals(w.store.as_ref(), &forged)
        .await
        .unwrap();
    t.billable_views += 1;
    forged.totals = Some(t);
    forged.sealed_totals = None;
    Ledger::new(w.store.clone())
        .append(&w.key, NewEntry { entry: forged }, |_| None)
        .await
        .unwrap();
    Ledger::new(w.store.clone())
        .verify(None, None)
        .await
        .unwrap();
    let log = Ledger::new(w.store.clone()).read().await.unwrap();
    let err = statement::verify_deep(w.store.as_ref(), &log, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("its lines add up to") && err.to_string().contains("entry 1"),
        "{err}"
    );
}

#[tokio::test]
async fn provisional_is_labelled_everywhere_and_cannot_be_finalized() {
    let w = october().await;
    let r = statement::report(
        w.store.clone(),
        &w.key,
        RATES.as_bytes(),
        &opts("2026-10", true),
    )
    .await
    .unwrap();
    let dir = r.statement.dir();
    for file in ["statement.json", "manifest.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&read(&w, &format!("{dir}/{file}")).await).unwrap();
        assert_eq!(v["provisional"], true, "{file}");
    }
    let log = Ledger::new(w.store.clone()).read().await.unwrap();
    assert!(log.entries[0].provisional);
    // Provisional and final statements of the same numbers are different statements.
    let f = statement::report(
        w.store.clone(),
        &w.key,
        RATES.as_bytes(),
        &ReportOptions {
            grace: TimeDelta::zero(),
            ..opts("2026-10", false)
        },
    )
    .await
    .unwrap();
    assert_ne!(f.statement.id, r.statement.id);
    assert_eq!(f.entry, Appended::New(1));
    // Finalize takes the latest; a provisional latest is refused.
    let p2 = statement::report(
        w.store.clone(),
        &w.key,
        b"currency = \"USD\"\ndefault_cpm = \"3\"\n",
        &opts("2026-10", true),
    )
    .await
    .unwrap();
    assert_eq!(p2.entry, Appended::New(2));
    let err = statement::finalize(
        w.store.clone(),
        &w.key,
        Period::parse("2026-10").unwrap(),
        "t",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("is provisional and cannot be finalized"),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_reports_record_one_statement() {
    let w = october().await;
    let o = ReportOptions {
        grace: TimeDelta::zero(),
        ..opts("2026-10", false)
    };
    let runs = (0..4).map(|_| statement::report(w.store.clone(), &w.key, RATES.as_bytes(), &o));
    let results = futures::future::join_all(runs).await;
    let mut new = 0;
    for r in &results {
        let r = r.as_ref().unwrap();
        if matches!(r.entry, Appended::New(_)) {
            new += 1;
        }
        assert_eq!(r.statement.id, results[0].as_ref().unwrap().statement.id);
    }
    assert_eq!(new, 1);
    let log = Ledger::new(w.store.clone()).read().await.unwrap();
    assert_eq!(log.entries.len(), 1);
    Ledger::new(w.store.clone())
        .verify(None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn late_events_after_finalization_become_adjustments() {
    let mut w = october().await;
    let oct = Period::parse("2026-10").unwrap();
    let final_opts = ReportOptions {
        grace: TimeDelta::zero(),
        ..opts("2026-10", false)
    };
    let first = statement::report(w.store.clone(), &w.key, RATES.as_bytes(), &final_opts)
        .await
        .unwrap();
    let fin = statement::finalize(w.store.clone(), &w.key, oct, "finance")
        .await
        .unwrap();
    assert_eq!(
        fin,
        Finalized::New {
            entry: 1,
            statement: 0
        }
    );
    assert_eq!(
        statement::finalize(w.store.clone(), &w.key, oct, "finance")
            .await
            .unwrap(),
        Finalized::Already(1)
    );
    let before = w.expected(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());

    // Late views for Oct 31 arrive on Nov 3; the batch recomputes that day.
    w.archive(
        1_500,
        2,
        at("2026-10-31T00:00:00Z"),
        Duration::hours(24),
        at("2026-11-03T00:00:00Z"),
    )
    .await;
    w.batch(at("2026-10-31T00:00:00Z"), at("2026-11-02T00:00:00Z"))
        .await;

    // October is never reissued.
    let err = statement::report(w.store.clone(), &w.key, RATES.as_bytes(), &final_opts)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("was finalized in ledger entry 1"),
        "{err}"
    );

    // November's statement carries the difference at October's rates.
    let nov = statement::report(
        w.store.clone(),
        &w.key,
        RATES.as_bytes(),
        &opts("2026-11", true),
    )
    .await
    .unwrap();
    let after = w.expected(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
    let mut want: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    for (k, (v, _)) in &after {
        want.insert(k.clone(), *v);
    }
    for (k, (v, _)) in &before {
        *want.entry(k.clone()).or_default() -= v;
    }
    want.retain(|_, v| *v != 0);
    assert!(!want.is_empty(), "late views changed October");
    let adjustments: BTreeMap<(String, String, i64), i64> =
        parse_csv(&nov.statement.csv(false).unwrap())
            .into_iter()
            .filter(|r| r.5 == "adjustment")
            .map(|r| {
                assert_eq!(r.6, "0", "references October's statement entry");
                let cents =
                    crate::world::half_even_div(i128::from(r.3) * i128::from(r.2), 10_000_000);
                assert_eq!(r.4, cents, "amount = delta × October's rate");
                ((r.0, r.1, r.2), r.3)
            })
            .collect();
    assert_eq!(adjustments, want);
    assert!(
        nov.statement
            .lines
            .iter()
            .any(|l| l.kind == LineKind::Views),
        "November's own views"
    );
    let log = Ledger::new(w.store.clone()).read().await.unwrap();
    let entry = &log.entries[2];
    assert_eq!(
        (entry.kind, entry.references.clone()),
        (Kind::Statement, vec![0])
    );

    // Adjustments sum back: October as paid plus the adjustments is October now.
    let paid: i64 = before.values().map(|v| v.0).sum::<i64>() + want.values().sum::<i64>();
    assert_eq!(paid, after.values().map(|v| v.0).sum::<i64>());
    assert_ne!(first.statement.id, nov.statement.id);
    Ledger::new(w.store.clone())
        .verify(None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn explain_lists_exactly_the_billable_events_of_each_line() {
    // October, and a video of creator-0001's whose every view is a repeat
    // loop (six by one user in one hour): all removed, so it has no line.
    let mut w = october_archived().await;
    w.add_video("vAllRemoved", "creator-0001").await;
    let looped: Vec<schemas::ReceivedEvent> = (0..6)
        .map(|i| {
            let e = schemas::ViewEvent {
                event_id: uuid::Uuid::from_u128(0xa11_4e30_0ed0 + i),
                video_id: "vAllRemoved".into(),
                user_id: "looper".into(),
                session_id: None,
                occurred_at: at("2026-10-29T14:00:00Z") + Duration::minutes(i as i64 * 7),
                watch_seconds: 60,
                device: schemas::Device::Web,
                country: None,
                referrer: None,
                quality: None,
                revenue_eligible: true,
                ad_impressions: 1,
                schema_version: 1,
                playback_token: None,
            };
            schemas::ReceivedEvent::new(e, at("2026-11-02T00:30:00Z"))
        })
        .collect();
    w.write(&looped).await;
    batch_october(&w).await;
    let o = ReportOptions {
        grace: TimeDelta::zero(),
        ..opts("2026-10", false)
    };
    statement::report(w.store.clone(), &w.key, RATES.as_bytes(), &o)
        .await
        .unwrap();
    let want = w.expected(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
    let creators: std::collections::BTreeSet<String> = want.keys().map(|k| k.0.clone()).collect();
    let mut all_ids = std::collections::BTreeSet::new();
    let mut filtered_total = 0u64;
    for creator in &creators {
        let mut out = Vec::new();
        let e = explain::explain(
            w.store.clone(),
            &explain::ExplainOptions {
                creator: creator.clone(),
                period: Period::parse("2026-10").unwrap(),
                video: None,
                all: true,
                memory: Default::default(),
            },
            &mut out,
        )
        .await
        .unwrap();
        let mut events: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut kinds = std::collections::BTreeSet::new();
        let mut filtered = 0u64;
        let mut unpaid: Vec<(String, u64)> = Vec::new();
        let mut looped_listed = 0;
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            kinds.insert(v["record"].as_str().unwrap().to_owned());
            if v["record"] == "unpaid_video" {
                unpaid.push((
                    v["video_id"].as_str().unwrap().to_owned(),
                    v["filtered_views"].as_u64().unwrap(),
                ));
            }
            if v["record"] == "filtered" && v["video_id"] == "vAllRemoved" {
                assert_eq!(v["rule"], "repeat_loop", "{v}");
                looped_listed += 1;
            }
            if v["record"] == "filtered" {
                let rule = v["rule"].as_str().unwrap();
                assert!(
                    schemas::fraud::FraudRule::from_name(rule).is_some(),
                    "{rule}"
                );
                assert!(
                    all_ids.insert(v["event_id"].as_str().unwrap().to_owned()),
                    "each event once, paid or filtered"
                );
                filtered += 1;
            }
            if v["record"] == "event" {
                *events
                    .entry((
                        v["video_id"].as_str().unwrap().to_owned(),
                        v["cpm"].as_str().unwrap().to_owned(),
                    ))
                    .or_default() += 1;
                assert!(
                    all_ids.insert(v["event_id"].as_str().unwrap().to_owned()),
                    "each event once"
                );
            }
        }
        for k in ["statement", "line", "hour", "run", "input", "event"] {
            assert!(kinds.contains(k), "{creator}: a {k} record");
        }
        let mine: BTreeMap<(String, String), i64> = want
            .iter()
            .filter(|(k, _)| &k.0 == creator)
            .map(|(k, v)| {
                let cpm = if k.2 == 4_125_000 { "4.125" } else { "2.50" };
                ((k.1.clone(), cpm.to_owned()), v.0)
            })
            .collect();
        assert_eq!(events, mine, "{creator}");
        assert_eq!(e.events as i64, mine.values().sum::<i64>());
        // Every view of the creator's videos the rules removed in the month
        // is listed, with its rule: of paid videos, and of one with no line.
        assert_eq!(e.filtered_events, filtered, "{creator}");
        assert_eq!(filtered, w.october_filtered(creator, |_| true), "{creator}");
        assert_eq!(
            (e.unpaid_videos, unpaid),
            if creator == "creator-0001" {
                (1, vec![("vAllRemoved".to_owned(), 6)])
            } else {
                (0, vec![])
            },
            "{creator}"
        );
        assert_eq!(
            looped_listed,
            if creator == "creator-0001" { 6 } else { 0 },
            "the repeat loop's six views, each under its rule"
        );
        filtered_total += filtered;
    }
    assert!(filtered_total > 0, "the world's traffic has filtered views");
    // Without --all: a sample, the same totals.
    let creator = creators.iter().next().unwrap();
    let mut out = Vec::new();
    let e = explain::explain(
        w.store.clone(),
        &explain::ExplainOptions {
            creator: creator.clone(),
            period: Period::parse("2026-10").unwrap(),
            video: None,
            all: false,
            memory: Default::default(),
        },
        &mut out,
    )
    .await
    .unwrap();
    let listed = String::from_utf8(out)
        .unwrap()
        .matches("\"record\":\"event\"")
        .count() as u64;
    assert!(listed <= e.events && listed > 0);
    let err = explain::explain(
        w.store.clone(),
        &explain::ExplainOptions {
            creator: "nobody".into(),
            period: Period::parse("2026-10").unwrap(),
            video: None,
            all: false,
            memory: Default::default(),
        },
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no line for creator"), "{err}");

    // A raw file changed after the run: explain refuses to trace through it.
    let run = store::state::current(w.store.as_ref())
        .await
        .unwrap()
        .unwrap()
        .hours
        .values()
        .next()
        .unwrap()
        .clone();
    let m: store::Manifest =
        store::layout::get_json(w.store.as_ref(), &store::layout::manifest(&run))
            .await
            .unwrap()
            .unwrap();
    let victim = &m.inputs[m.inputs.len() / 2].path;
    let mut bytes = read(&w, victim).await;
    bytes.extend_from_slice(b"trailing");
    store::layout::put(w.store.as_ref(), &Path::from(victim.as_str()), bytes.into())
        .await
        .unwrap();
    let err = explain::explain(
        w.store.clone(),
        &explain::ExplainOptions {
            creator: creator.clone(),
            period: Period::parse("2026-10").unwrap(),
            video: None,
            all: false,
            memory: Default::default(),
        },
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains(victim.as_str())
            && err.to_string().contains("changed after the run"),
        "{err}"
    );
}
