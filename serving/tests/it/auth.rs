//! Who may read what: each role on each route, bad credentials, rate
//! limits, live-stream bounds and the tokens file reloaded.

use std::num::NonZeroU32;
use std::time::Duration;

use serving::api::ApiConfig;
use serving::tokens::{Role, new_token};

use crate::world::{World, totals};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_reads_what_it_may_and_nothing_else() {
    let w = World::new(1_500, 21).await;
    w.publish(w.first, w.end).await;
    let s = w
        .serve(ApiConfig {
            rate_per_second: None,
            ..ApiConfig::default()
        })
        .await;
    s.reload().await;
    let (a, b, u) = (&w.video_a, &w.video_b, &w.unattributed);
    let (ca, cb) = (&w.creator_a, &w.creator_b);
    // Per route: (path, status for admin/finance, for creator A, for creator B).
    let routes: Vec<(String, u16, u16, u16)> = vec![
        (format!("/v1/videos/{a}/views"), 200, 200, 403),
        (format!("/v1/videos/{b}/views"), 200, 403, 200),
        (format!("/v1/videos/{u}/views"), 200, 403, 403),
        (format!("/v1/videos/{a}/series"), 200, 200, 403),
        (format!("/v1/videos/{u}/series"), 200, 403, 403),
        (format!("/v1/videos/{a}"), 200, 200, 403),
        (format!("/v1/videos/{b}"), 200, 403, 200),
        (format!("/v1/videos/{u}"), 404, 403, 403),
        (format!("/v1/creators/{ca}/views"), 200, 200, 403),
        (format!("/v1/creators/{cb}/views"), 200, 403, 200),
        (format!("/v1/creators/{ca}/series"), 200, 200, 403),
        (format!("/v1/creators/{cb}/series"), 200, 403, 200),
    ];
    let secrets = &w.secrets;
    for (path, staff, for_a, for_b) in &routes {
        for (who, token, want) in [
            ("admin", &secrets.admin, staff),
            ("finance", &secrets.finance, staff),
            ("creator A", &secrets.creator_a, for_a),
            ("creator B", &secrets.creator_b, for_b),
        ] {
            let (status, _, body) = s.get(path, Some(token)).await;
            assert_eq!(status, *want, "{who} GET {path}: {body}");
            if status != 200 {
                assert!(body["error"]["code"].is_string(), "{who} {path}: {body}");
                assert!(body["error"]["message"].is_string(), "{who} {path}: {body}");
            }
        }
        for (why, header) in [
            ("no token", None),
            ("a wrong token", Some("vct_0000")),
            ("a token of another form", Some("Basic dXNlcjpwYXNz")),
        ] {
            let mut req = s.client.get(format!("{}{path}", s.base));
            if let Some(h) = header {
                req = req.header(
                    "authorization",
                    if h.starts_with("Basic") {
                        h.to_owned()
                    } else {
                        format!("Bearer {h}")
                    },
                );
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{why}: GET {path}");
            assert_eq!(
                r.headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{why}: GET {path}"
            );
        }
    }
    // A creator's own listing holds only their videos.
    let own = s
        .ok(&format!("/v1/creators/{ca}/views"), &secrets.creator_a)
        .await;
    for r in own["rows"].as_array().unwrap() {
        let v = r["video_id"].as_str().unwrap();
        assert_eq!(w.catalog.creator_of(v), Some(ca.as_str()), "{v}");
    }
    // The token never goes in a URL: a query token is an unknown parameter.
    let (status, _, body) = s
        .get(
            &format!("/v1/videos/{a}/views?token={}", secrets.creator_a),
            None,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    // Auth failures are metrics.
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("viewcount_serving_auth_failures_total{reason=\"scope\"}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_over_its_rate_is_told_when_to_come_back() {
    let w = World::new(500, 22).await;
    let s = w
        .serve(ApiConfig {
            rate_per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(3).unwrap(),
            ..ApiConfig::default()
        })
        .await;
    let path = format!("/v1/videos/{}", w.video_a);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let (status, headers, _) = s.get(&path, Some(&w.secrets.admin)).await;
        statuses.push(status);
        if status == 429 {
            retry_after = headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst: {statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After: {retry_after:?}"
    );
    // Another token has its own budget.
    let (status, _, _) = s.get(&path, Some(&w.secrets.finance)).await;
    assert_eq!(status, 200);
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("viewcount_serving_rate_limited_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_added_broken_revoked_emptied_and_deleted_take_effect_without_a_restart() {
    let w = World::new(300, 23).await;
    let s = w
        .serve(ApiConfig {
            live_every: Duration::from_millis(100),
            ..ApiConfig::default()
        })
        .await;
    let path = format!("/v1/videos/{}", w.video_a);
    let original = std::fs::read_to_string(w.tokens_path()).unwrap();
    let (secret, table) = new_token("added-later", Role::Finance, None).unwrap();
    assert_eq!(s.get(&path, Some(&secret)).await.0, 401);
    std::fs::write(w.tokens_path(), original.clone() + &table).unwrap();
    let wait_for = |secret: String, want: u16| {
        let (s, path) = (&s, &path);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let (status, _, _) = s.get(path, Some(&secret)).await;
                if status == want {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never {want}: {status}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let tokens_problem = || async {
        let (status, _, body) = s.get("/readyz", None).await;
        assert_eq!(
            status, 200,
            "a tokens problem degrades, never stops: {body}"
        );
        body["degraded"]["tokens"].as_str().map(str::to_owned)
    };
    wait_for(secret.clone(), 200).await;
    assert_eq!(tokens_problem().await, None);
    // A broken file keeps the tokens in force, and says so.
    std::fs::write(w.tokens_path(), "[[token]]\nname = 1\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.get(&path, Some(&secret)).await.0,
        200,
        "the previous tokens stay"
    );
    let problem = tokens_problem().await.expect("degraded");
    assert!(problem.contains("is not valid"), "{problem}");

    // A live stream of the token, then the token revoked: the file without
    // it. The request answers 401 and the open stream ends.
    let mut live = s
        .client
        .get(format!("{}/v1/videos/{}/live", s.base, w.video_a))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    std::fs::write(w.tokens_path(), &original).unwrap();
    wait_for(secret.clone(), 401).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(_chunk) = live.chunk().await.unwrap() {}
    })
    .await;
    assert!(ended.is_ok(), "the revoked token's stream is closed");
    assert_eq!(s.get(&path, Some(&w.secrets.admin)).await.0, 200);
    assert_eq!(tokens_problem().await, None);

    // An empty file and a deleted one revoke every token, and say so.
    std::fs::write(w.tokens_path(), "").unwrap();
    wait_for(w.secrets.admin.clone(), 401).await;
    assert!(tokens_problem().await.unwrap().contains("is empty"));
    std::fs::remove_file(w.tokens_path()).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.get(&path, Some(&w.secrets.admin)).await.0, 401);
    assert!(tokens_problem().await.unwrap().contains("is gone"));
    // Back, but readable by others: refused (it holds secrets), saying how
    // to fix it.
    std::fs::write(w.tokens_path(), &original).unwrap();
    let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
    std::fs::set_permissions(w.tokens_path(), mode(0o644)).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.get(&path, Some(&w.secrets.admin)).await.0, 401);
    assert!(tokens_problem().await.unwrap().contains("chmod 600"));
    // Owner-only: in force again.
    std::fs::set_permissions(w.tokens_path(), mode(0o600)).unwrap();
    wait_for(w.secrets.admin.clone(), 200).await;
    assert_eq!(tokens_problem().await, None);
}

/// Reads one Server-Sent Event's data from a streaming response.
async fn next_event(r: &mut reqwest::Response, buf: &mut String) -> serde_json::Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), r.chunk())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_streams_the_merged_total_and_are_bounded_per_token() {
    let w = World::new(800, 24).await;
    let s = w
        .serve(ApiConfig {
            live_per_token: 1,
            live_every: Duration::from_millis(100),
            ..ApiConfig::default()
        })
        .await;
    let live = format!("{}/v1/videos/{}/live", s.base, w.video_a);
    let mut r = s
        .client
        .get(&live)
        .bearer_auth(&w.secrets.creator_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let first = next_event(&mut r, &mut buf).await;
    let views = s
        .ok(
            &format!("/v1/videos/{}/views", w.video_a),
            &w.secrets.creator_a,
        )
        .await;
    assert_eq!(totals(&first), totals(&views), "{first}");
    // A second stream for the same token is refused; another token's is not.
    let second = s
        .client
        .get(&live)
        .bearer_auth(&w.secrets.creator_a)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let other = s
        .client
        .get(&live)
        .bearer_auth(&w.secrets.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);
    drop(other);
    // Another creator may not stream it.
    let (status, _, _) = s
        .get(
            &format!("/v1/videos/{}/live", w.video_a),
            Some(&w.secrets.creator_b),
        )
        .await;
    assert_eq!(status, 403);
    // New views arrive: the stream sends the new total.
    let mut more = loadgen::Generator::new(loadgen::GenConfig {
        events: 200,
        seed: 99,
        ..loadgen::GenConfig::default()
    })
    .unwrap()
    .accepted_at(chrono::Utc::now());
    more.retain(|e| e.event.video_id == w.video_a);
    assert!(!more.is_empty());
    w.producer
        .produce_all(&more, &schemas::RuleSet::default())
        .await
        .unwrap();
    let next = next_event(&mut r, &mut buf).await;
    assert!(
        next["views"].as_u64().unwrap() > first["views"].as_u64().unwrap(),
        "{first} then {next}"
    );
    // Shutdown closes the stream cleanly.
    s.cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match r.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.is_ok(),
            }
        }
    })
    .await
    .expect("the stream ends on shutdown");
    assert!(end, "a clean end of stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_asking_for_too_much_work_is_told_when_to_come_back() {
    let w = World::new(200, 25).await;
    let s = w
        .serve(ApiConfig {
            rate_per_second: None,
            cost_per_second: std::num::NonZeroU32::new(1_000),
            cost_burst: std::num::NonZeroU32::new(30_000).unwrap(),
            ..ApiConfig::default()
        })
        .await;
    let from = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let hours = |n: i64| {
        format!(
            "/v1/videos/{}/series?granularity=hour&from={}&to={}",
            w.video_a,
            schemas::event::format_timestamp(&from),
            schemas::event::format_timestamp(&(from + chrono::TimeDelta::hours(n)))
        )
    };
    // Three 9 999-point series fit the budget (computed off the request
    // workers, and right), the fourth is told when to come back.
    for _ in 0..3 {
        let body = s.ok(&hours(9_999), &w.secrets.admin).await;
        assert_eq!(body["points"].as_array().unwrap().len(), 9_999);
    }
    let (status, headers, body) = s.get(&hours(9_999), Some(&w.secrets.admin)).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget"),
        "{body}"
    );
    // Another token has its own budget; a cheap request is unaffected by it.
    let (status, _, _) = s.get(&hours(9_999), Some(&w.secrets.finance)).await;
    assert_eq!(status, 200);
    // The budget refills at its rate.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, _, body) = s.get(&hours(24), Some(&w.secrets.admin)).await;
    assert_eq!(status, 200, "{body}");
    // One request dearer than the whole budget: 400, asking for less.
    let small = w
        .serve(ApiConfig {
            cost_per_second: std::num::NonZeroU32::new(1_000),
            cost_burst: std::num::NonZeroU32::new(5_000).unwrap(),
            ..ApiConfig::default()
        })
        .await;
    let (status, _, body) = small.get(&hours(9_999), Some(&w.secrets.admin)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("9999 cells"),
        "{body}"
    );
}
