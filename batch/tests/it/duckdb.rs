//! Outside engines read the archive and the views as they are: DuckDB (from
//! PyPI; `scripts/test` installs it) over the Hive-partitioned raw files and
//! the views file, checking types, partition columns and counts.

use std::process::Command;

use loadgen::Truth;
use schemas::RuleSet;

use crate::harness::Setup;

const SCRIPT: &str = r#"
import json, sys, duckdb
root = sys.argv[1]; views = sys.argv[2]
con = duckdb.connect()
raw = f"read_parquet('{root}/raw/*/*/*.parquet', hive_partitioning = true)"
types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {raw}").fetchall()}
vtypes = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{views}')").fetchall()}
rows, distinct = con.execute(f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {raw}").fetchone()
# The partition columns agree with occurred_at.
mismatched = con.execute(f"""SELECT COUNT(*) FROM {raw}
  WHERE strftime(occurred_at AT TIME ZONE 'UTC', '%Y-%m-%d') <> CAST(dt AS VARCHAR)
     OR CAST(strftime(occurred_at AT TIME ZONE 'UTC', '%H') AS INTEGER) <> CAST(hour AS INTEGER)""").fetchone()[0]
vrows, vviews, vbill, vfraud, vwatch = con.execute(
  f"SELECT COUNT(*), SUM(views), SUM(billable_views), SUM(fraud_filtered), SUM(watch_seconds) FROM read_parquet('{views}')").fetchone()
print(json.dumps({"types": types, "view_types": vtypes, "rows": rows, "distinct": distinct,
                  "partition_mismatches": mismatched, "view_rows": vrows, "views": int(vviews),
                  "billable": int(vbill), "fraud": int(vfraud), "watch": int(vwatch)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_raw_and_views_with_the_contract_types() {
    let s = Setup::new().await;
    let mut truth = Truth::new(RuleSet::default());
    s.produce(2_000, 31, &mut truth).await;
    let archive = s.archive("archive");
    s.wait_archived().await;
    archive.stop().await;
    let report = s.run_batch(&truth).await;

    let root = s.root();
    let views = root.join(&report.manifest.outputs[0].path);
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&root)
        .arg(&views)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "duckdb check failed (is the duckdb Python package installed? scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["types"];
    assert_eq!(t["event_id"], "VARCHAR");
    assert_eq!(t["occurred_at"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(t["received_at"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(t["watch_seconds"], "INTEGER");
    assert_eq!(t["revenue_eligible"], "BOOLEAN");
    assert_eq!(t["kafka_partition"], "INTEGER");
    assert_eq!(t["kafka_offset"], "BIGINT");
    assert!(
        t.get("dt").is_some() && t.get("hour").is_some(),
        "Hive partition columns: {t}"
    );
    assert_eq!(v["partition_mismatches"], 0);
    assert_eq!(v["rows"], truth.accepted_events());
    assert_eq!(v["distinct"], truth.views());
    let vt = &v["view_types"];
    assert_eq!(vt["hour"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(vt["views"], "BIGINT");
    assert_eq!(vt["unique_viewers_sketch"], "BLOB");
    let rows = truth.rows();
    assert_eq!(v["view_rows"], rows.len());
    assert_eq!(v["views"], truth.views());
    let fraud: u64 = rows.iter().map(|r| r.fraud_filtered).sum();
    let billable: u64 = rows.iter().map(|r| r.billable_views).sum::<u64>() - fraud;
    assert_eq!(v["billable"], billable);
    assert_eq!(v["fraud"], fraud);
    assert_eq!(
        v["watch"],
        rows.iter().map(|r| r.watch_seconds).sum::<u64>()
    );
}
