//! The apply script on a real redis-server, call by call: a batch that
//! starts past what Redis has applied is refused as a gap, so no record is
//! skipped while the offset moves past it.

use chrono::{DateTime, Duration, Utc};
use counters::apply::{Applied, PartitionBatch, Record, Retention, SCRIPT};
use counters::keys::KeySpace;
use infra::redis::RedisServer;
use schemas::{ReceivedEvent, RuleSet};

fn rec(offset: i64) -> Record {
    let now: DateTime<Utc> = Utc::now();
    let e = schemas::parse_event(
        &serde_json::json!({"event_id": uuid::Uuid::new_v4().to_string(), "video_id": "v1",
                "user_id": "u1", "occurred_at": schemas::time::format_timestamp(&now),
                "watch_seconds": 40, "revenue_eligible": true}),
        &schemas::ValidationContext::at(now),
    )
    .unwrap();
    Record {
        offset,
        event: ReceivedEvent::new(e, now),
    }
}

async fn apply(
    conn: &mut counters::conn::RedisConn,
    keys: &KeySpace,
    records: &[Record],
    span: (i64, i64),
    allow_gap: bool,
) -> Applied {
    let ret = Retention {
        dedup_window: Duration::hours(48),
        counters: Duration::days(35),
    };
    let call = PartitionBatch::build(keys, 0, records, span, allow_gap, &RuleSet::default(), &ret);
    let script = redis::Script::new(SCRIPT);
    let mut inv = script.prepare_invoke();
    for k in &call.keys {
        inv.key(k);
    }
    for a in call.args() {
        inv.arg(a);
    }
    let reply: Vec<i64> = inv.invoke_async(conn).await.unwrap();
    Applied::from_reply(&reply).unwrap()
}

#[tokio::test]
async fn a_batch_past_the_stored_offset_is_a_gap_even_before_the_first_write() {
    let redis = RedisServer::start().expect("redis-server");
    let mut conn = counters::conn::connect_reader(&redis.url()).await.unwrap();
    let keys = KeySpace::new("t:", 8);
    // Nothing applied yet: a first batch that starts at 5 would skip 0..5.
    let late: Vec<Record> = (5..8).map(rec).collect();
    let a = apply(&mut conn, &keys, &late, (5, 8), false).await;
    assert_eq!((a.counted, a.gap_at), (0, Some(0)), "{a:?}");
    // From 0 it applies; then a batch that jumps ahead is refused again.
    let first: Vec<Record> = (0..3).map(rec).collect();
    let a = apply(&mut conn, &keys, &first, (0, 3), false).await;
    assert_eq!((a.counted, a.stored, a.gap_at), (3, 3, None), "{a:?}");
    let a = apply(&mut conn, &keys, &late, (5, 8), false).await;
    assert_eq!((a.counted, a.stored, a.gap_at), (0, 3, Some(3)), "{a:?}");
    // Only a gap the consumer accepts (records deleted by retention) moves on.
    let a = apply(&mut conn, &keys, &late, (5, 8), true).await;
    assert_eq!((a.counted, a.stored, a.gap_at), (3, 8, None), "{a:?}");
}
