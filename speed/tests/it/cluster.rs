//! Speed and its readers on a Redis Cluster of real `redis-server`
//! processes: three masters with a replica each. A master is killed
//! mid-stream; its replica takes over, and the counts still equal the truth
//! with nothing lost or counted twice.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use counters::conn::key_slot;
use testkit::redis::RedisCluster;

use crate::harness::{PARTITIONS, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_fails_over_and_counts_stay_exact() {
    let mut cluster = RedisCluster::start(3, 1).expect("a 3-master Redis Cluster");
    let s = Setup::with_url(cluster.url()).await;
    // The partitions' hash tags spread over the masters.
    let masters: std::collections::BTreeSet<u16> = (0..PARTITIONS)
        .map(|p| cluster.master_of(key_slot(format!("{{p{p}}}"))).unwrap())
        .collect();
    assert!(
        masters.len() >= 2,
        "partitions on one master only: {masters:?}"
    );

    let mut truth = s.produce_generated(20_000, 21).await;
    let mut c = s.config();
    c.batch_max = 50;
    let run = s.start(c);
    let high = s
        .kafka
        .high_watermarks(&s.topic, PARTITIONS)
        .await
        .expect("watermarks");

    // kill -9 the master of partition 0's keys while its batches are
    // applied: once a tenth of the partition is.
    let victim = cluster.master_of(key_slot("{p0}")).unwrap();
    let mut conn = s.redis_conn().await;
    let keys = s.keys();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let stored = counters::read::stored_offsets(&mut conn, &keys, 1)
            .await
            .unwrap();
        let p0 = stored[0].unwrap_or(0);
        if p0 > high[0] / 10 {
            cluster.kill(victim);
            break p0;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partition 0 is applied"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        at_kill < high[0],
        "killed mid-partition: {at_kill} of {} applied",
        high[0]
    );
    cluster
        .wait_healthy(Duration::from_secs(60))
        .expect("a replica is promoted");
    assert_ne!(
        cluster.master_of(key_slot("{p0}")).unwrap(),
        victim,
        "partition 0's slot moved to the promoted replica"
    );
    // More traffic after the failover (with its own exact re-sends).
    s.produce_generated_into(5_000, 22, &mut truth).await;
    s.produce_generated_into(5_000, 23, &mut truth).await;
    s.wait_caught_up(Duration::from_secs(120)).await;
    s.assert_exact(&truth).await;
    assert!(run.ready.get().is_ok(), "speed recovered by itself");
    // The cluster client retries a script on the promoted replica by
    // itself (the script is fenced by offset, so a retry of an applied
    // batch skips it); a batch the new master never saw shows as a rewind.
    eprintln!(
        "after the failover: {} redis errors, {} rewinds",
        run.metric("viewcount_speed_redis_errors_total"),
        run.metric("viewcount_speed_rewinds_total")
    );
    run.stop().await;

    // What serving reads: a video's hours in one pipeline (split by slot on
    // the cluster), equal to the full scan of every master.
    let partitions = counters::read::stored_partitions(&mut conn, &keys)
        .await
        .unwrap()
        .expect("the speed layer records the partition count");
    let all = s.counts().await;
    let hours: Vec<DateTime<Utc>> = all.keys().map(|(_, h)| *h).collect();
    let (from, to) = (
        *hours.iter().min().unwrap(),
        *hours.iter().max().unwrap() + chrono::Duration::hours(1),
    );
    let videos = ["v00001", "v00002", "v00050"];
    let read = counters::read::videos_once(&mut conn, &keys, &videos, from, to, partitions, true)
        .await
        .unwrap();
    for (v, got) in videos.iter().zip(&read.hours) {
        let scanned: BTreeMap<DateTime<Utc>, counters::Counts> = all
            .iter()
            .filter(|((video, _), _)| video == v)
            .map(|((_, h), c)| (*h, *c))
            .collect();
        assert!(!scanned.is_empty(), "{v} has views");
        assert_eq!(got, &scanned, "{v}: pipelined read vs scan");
    }
    let viewers = read.viewers.expect("viewers asked for");
    assert!(viewers.iter().all(|&n| n > 0), "{viewers:?}");
    assert_eq!(read.applied_at.len(), PARTITIONS as usize);
    assert!(read.applied_at.iter().all(Option::is_some));
}
