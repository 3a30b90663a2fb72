//! Statements and the ledger over HTTP: the role matrix, and a creator's
//! lines each proven offline with the public key alone.

use billing::ledger::{LogKey, Proven};
use billing::statement::{self, Period, ReportOptions};
use serving::api::ApiConfig;

use crate::world::World;

const RATES: &str = "currency = \"USD\"\ndefault_cpm = \"2.50\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_by_role_and_creator_lines_with_proofs() {
    let w = World::new(1_500, 23).await;
    w.publish(w.first, w.end).await;
    let (_, key) = LogKey::generate("test.local/ledger").unwrap();
    let period = Period::parse(&w.first.format("%Y-%m").to_string()).unwrap();
    let r = statement::report(
        w.store.clone(),
        &key,
        RATES.as_bytes(),
        &ReportOptions {
            period,
            provisional: true,
            grace: ReportOptions::DEFAULT_GRACE,
            operator: "test".into(),
        },
    )
    .await
    .unwrap();
    let id = r.statement.id.clone();
    let s = w
        .serve(ApiConfig {
            rate_per_second: None,
            rates: Some(std::sync::Arc::new(
                billing::RateCard::parse(RATES.as_bytes()).unwrap(),
            )),
            ..ApiConfig::default()
        })
        .await;
    let secrets = &w.secrets;
    let staff = [&secrets.admin, &secrets.finance];
    let creators = [
        (&secrets.creator_a, &w.creator_a),
        (&secrets.creator_b, &w.creator_b),
    ];

    // The list: everyone; totals for finance and admin only.
    for t in staff {
        let list = s.ok("/v1/statements", t).await;
        assert_eq!(list[0]["statement_id"], id.as_str());
        assert_eq!(list[0]["provisional"], true);
        assert_eq!(list[0]["final"], false);
        assert!(list[0]["total"].is_string(), "{list}");
    }
    for (t, _) in creators {
        let list = s.ok("/v1/statements", t).await;
        assert!(list[0]["total"].is_null(), "{list}");
    }

    // The whole statement for finance and admin, JSON and CSV.
    for t in staff {
        let body = s.ok(&format!("/v1/statements/{id}"), t).await;
        assert_eq!(
            (body["ledger_entry"].as_u64(), body["provisional"].as_bool()),
            (Some(0), Some(true))
        );
        assert!(body["creators"].as_array().unwrap().len() >= 2, "{body}");
        let r = s
            .client
            .get(format!("{}/v1/statements/{id}?format=csv", s.base))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let text = r.text().await.unwrap();
        assert!(text.starts_with(
            "creator_id,video_id,title,billable_views,cpm,amount,currency,kind,reference\n"
        ));
        assert_eq!(
            text.lines().count() as u64,
            r_lines(&r_statement_csv(&w, &id).await) + 1
        );
    }

    // A creator: their own lines only, each with a proof that checks offline
    // and shows nothing of the statement's totals (its entry seals them).
    let whole = s.ok("/v1/statements", staff[1]).await[0].clone();
    let statement_total = whole["total"].as_str().unwrap().to_owned();
    let mut seen = std::collections::BTreeSet::new();
    for (t, creator) in creators {
        let body = s.ok(&format!("/v1/statements/{id}"), t).await;
        for l in body["lines"].as_array().unwrap() {
            let entry_proof = l["proof"]["entry_proof"].as_str().unwrap();
            let Proven::Inclusion { entry, .. } =
                billing::ledger::check_proof(entry_proof.as_bytes(), &key.vkey, None).unwrap()
            else {
                panic!("not an inclusion proof: {entry_proof}")
            };
            let text = String::from_utf8(entry).unwrap();
            let entry: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                entry.get("totals").is_none() && entry["sealed_totals"]["sha256"].is_string(),
                "{entry}"
            );
            assert!(
                !text.contains(&format!("\"{statement_total}\"")),
                "the proof shows the statement total {statement_total}: {text}"
            );
        }
        assert_eq!(body["creator_id"], creator.as_str());
        assert_eq!(body["provisional"], true);
        let lines = body["lines"].as_array().unwrap();
        assert!(!lines.is_empty(), "{creator} has lines: {body}");
        for l in lines {
            let video = l["video_id"].as_str().unwrap();
            assert_eq!(w.catalog.creator_of(video), Some(creator.as_str()));
            assert!(
                seen.insert(video.to_owned()),
                "a line shown to one creator only"
            );
            let proof = serde_json::to_vec(&l["proof"]).unwrap();
            match billing::ledger::check_proof(&proof, &key.vkey, None).unwrap() {
                Proven::Line {
                    line,
                    statement_id,
                    provisional,
                    ..
                } => {
                    assert!(line.starts_with(&format!("{creator},{video},")), "{line}");
                    assert_eq!((statement_id.as_str(), provisional), (id.as_str(), true));
                }
                other => panic!("{other:?}"),
            }
        }
        let r = s
            .client
            .get(format!("{}/v1/statements/{id}?format=csv", s.base))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        assert_eq!(text.lines().count(), lines.len() + 1);
        assert!(
            text.lines()
                .skip(1)
                .all(|l| l.starts_with(&format!("{creator},"))),
            "{text}"
        );
        // The ledger itself is finance's.
        for path in ["/v1/ledger/entries", "/v1/ledger/entries/0/proof"] {
            let (status, _, body) = s.get(path, Some(t)).await;
            assert_eq!(status, 403, "{path}: {body}");
        }
        let (status, _, _) = s.get("/v1/ledger/checkpoint", Some(t)).await;
        assert_eq!(status, 200);
    }

    // The ledger for finance and admin; a proof from the API checks offline.
    for t in staff {
        let entries = s.ok("/v1/ledger/entries", t).await;
        assert_eq!(entries.as_array().unwrap().len(), 1);
        let proof = s
            .client
            .get(format!("{}/v1/ledger/entries/0/proof", s.base))
            .bearer_auth(t)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(matches!(
            billing::ledger::check_proof(proof.as_bytes(), &key.vkey, None).unwrap(),
            Proven::Inclusion {
                index: 0,
                size: 1,
                ..
            }
        ));
    }
    // Bad input: 400 naming the parameter; unknown: 404.
    for (path, status) in [
        ("/v1/statements/nothex".to_owned(), 400),
        (format!("/v1/statements/{id}?format=xml"), 400),
        (format!("/v1/statements/{id}?fromat=csv"), 400),
        (
            "/v1/statements/0123456789abcdef0123456789abcdef".to_owned(),
            404,
        ),
        ("/v1/ledger/entries/7/proof".to_owned(), 404),
        ("/v1/ledger/entries/x/proof".to_owned(), 400),
    ] {
        let (got, _, body) = s.get(&path, Some(&secrets.finance)).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    let (status, _, _) = s.get("/v1/statements", None).await;
    assert_eq!(status, 401);

    // Earnings: the statement's figures beside estimates (merged batch +
    // speed × the rate card), per video.
    let p = period.label();
    let (ca, cb) = (&w.creator_a, &w.creator_b);
    let e = s
        .ok(
            &format!("/v1/creators/{ca}/earnings?period={p}"),
            &secrets.creator_a,
        )
        .await;
    assert_eq!(e["statement"]["statement_id"], id.as_str());
    assert_eq!(e["statement"]["provisional"], true);
    let own = s
        .ok(&format!("/v1/statements/{id}"), &secrets.creator_a)
        .await;
    let listing = s
        .ok(
            &format!(
                "/v1/creators/{ca}/views?from={}&to={}&limit=10000",
                period.start().format("%Y-%m-%dT%H:%M:%SZ"),
                period.end().format("%Y-%m-%dT%H:%M:%SZ")
            ),
            &secrets.creator_a,
        )
        .await;
    assert_eq!(e["statement_total"], own["total"]);
    for v in e["videos"].as_array().unwrap() {
        let video = v["video_id"].as_str().unwrap();
        let lines: i64 = own["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["video_id"] == video)
            .map(|l| l["billable_views"].as_i64().unwrap())
            .sum();
        assert_eq!(
            v["statement"]["billable_views"].as_i64(),
            Some(lines),
            "{video}"
        );
        let merged = listing["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["video_id"] == video)
            .map_or(0, |r| r["billable_views"].as_i64().unwrap());
        assert_eq!(
            v["estimated"]["billable_views"].as_i64(),
            Some(merged),
            "{video}"
        );
        // 2.50 per 1 000, half-even to cents, in integers.
        let cents = crate::world::half_even(merged * 250, 1000);
        assert_eq!(
            v["estimated"]["amount"],
            format!("{}.{:02}", cents / 100, cents % 100),
            "{video}"
        );
    }
    let (status, _, body) = s
        .get(
            &format!("/v1/creators/{ca}/earnings?period={p}"),
            Some(&secrets.creator_b),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    s.ok(&format!("/v1/creators/{cb}/earnings"), &secrets.finance)
        .await;
    let (status, _, body) = s
        .get(
            &format!("/v1/creators/{ca}/earnings?period=2026-13"),
            Some(&secrets.finance),
        )
        .await;
    assert_eq!(
        (status, body["error"]["parameter"].as_str()),
        (400, Some("period")),
        "{body}"
    );
}

async fn r_statement_csv(w: &World, id: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    let log = billing::Ledger::new(w.store.clone()).read().await.unwrap();
    let e = log.statement(id).unwrap();
    let path =
        object_store::path::Path::from(format!("statements/{}/{id}/statement.csv", e.period));
    w.store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn r_lines(csv: &[u8]) -> u64 {
    billing::ledger::line_leaves(csv).len() as u64
}
