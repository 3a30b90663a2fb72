//! What `viewcount up` prints while it runs: a summary every few seconds
//! of every layer, and the generated traffic that keeps it busy.

use crate::util::say;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use counters::keys::KeySpace;
use loadgen::{GenConfig, Generator, SendConfig, Truth};
use schemas::RuleSet;

/// Generated traffic at `rate` events per second until aborted: current
/// views, with the generator's share of re-sends, late (1 to 72 hours old,
/// so the scheduled batch has dirty hours to heal) and invalid events.
pub(super) async fn demo_traffic(
    base: String,
    rate: f64,
    signer: Option<std::sync::Arc<playback::PlaybackSigner>>,
) {
    let chunk = Duration::from_secs(5);
    let mut cfg = SendConfig::new(format!("{base}/v1/events"));
    cfg.rate = Some(rate);
    // About ten requests a second, so that a low rate is a trickle, not
    // one burst per chunk.
    cfg.batch_size = ((rate / 10.0).round() as usize).clamp(1, 100);
    for seed in 1_000u64.. {
        // Each chunk takes its whole span: `send` paces within a chunk,
        // this between them.
        let chunk_started = tokio::time::Instant::now();
        let now = Utc::now();
        let span = chrono::Duration::from_std(chunk).unwrap_or_default();
        let generator = Generator::new(GenConfig {
            events: ((rate * chunk.as_secs_f64()).ceil() as u64).max(1),
            seed,
            start: now - span,
            span,
            now,
            signer: signer.clone(),
            ..GenConfig::default()
        });
        let sent = match generator {
            Ok(g) => {
                let mut truth = Truth::new(RuleSet::default());
                loadgen::send(g, &cfg, &mut truth, |_| {}).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "demo traffic: sending failed; trying again in 5 s");
        }
        tokio::time::sleep_until(chunk_started + chunk).await;
    }
}

/// The live summary of `up`.
pub(super) struct Live<'a> {
    pub(super) store: Arc<dyn object_store::ObjectStore>,
    pub(super) store_url: &'a str,
    pub(super) redis_url: &'a str,
    pub(super) keys: &'a KeySpace,
    pub(super) ingest: &'a ingest::metrics::Metrics,
    pub(super) speed: &'a speed::Metrics,
    pub(super) scheduler: &'a batch::schedule::Scheduler,
    /// What `/readyz` reports: a failing check is the summary's first line.
    pub(super) ops: telemetry::Ops,
}

impl Live<'_> {
    /// Prints a summary every `every`, forever.
    pub(super) async fn run(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(failing) = self.ops.readiness().await {
                for (check, why) in failing {
                    say!("NOT READY {check}: {why}");
                }
            }
            match self.summary().await {
                Ok(text) => say!("{text}"),
                Err(e) => say!("[summary unavailable: {e:#}]"),
            }
        }
    }

    /// One summary. The ledger is verified anew each time (every entry's
    /// signature chain and every statement file re-hashed): "verifies" is
    /// said of the files as they are now, not as they were.
    async fn summary(&self) -> anyhow::Result<String> {
        use std::fmt::Write;
        let now = Utc::now();
        let opts = batch::run::RunOptions::new(now, now);
        let status = crate::status_cmd::gather(&crate::status_cmd::Sources {
            store: self.store.clone(),
            store_url: self.store_url,
            kafka: None,
            redis: Some((self.redis_url, self.keys)),
            opts: &opts,
        })
        .await?;
        let (accepted, rejected) = self.ingest.totals();
        let sp = self.speed.snapshot();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "── {} ──\nevents   {} in: {accepted} accepted, {rejected} rejected",
            now.format("%H:%M:%S"),
            accepted + rejected
        );
        let _ = writeln!(
            o,
            "speed    {} views counted, {} duplicates dropped ({} conflicting), {} dead-lettered; freshness {}",
            sp.counted,
            sp.duplicates,
            sp.conflicts,
            sp.dead_lettered,
            status
                .speed
                .as_ref()
                .and_then(|s| s.freshness_seconds)
                .map_or("-".to_owned(), |f| format!("{f:.1} s"))
        );
        let rounds = self.scheduler.rounds();
        let last = status
            .batch
            .last_run
            .as_ref()
            .map_or("none yet".to_owned(), |r| {
                format!(
                    "{} [{}, {}) in {:.2} s",
                    r.run_id,
                    r.from.format("%d %H:%M"),
                    r.to.format("%d %H:%M"),
                    r.seconds
                )
            });
        let _ = writeln!(
            o,
            "batch    watermark {}, last run {last}; {} scheduled round(s){}; dirty hours pending: {}",
            status.batch.watermark.map_or("none".to_owned(), |w| w
                .format("%Y-%m-%dT%H:%MZ")
                .to_string()),
            rounds.finished,
            rounds
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (last failed: {e})")),
            status.dirty.dirty.len()
        );
        let mut conn = counters::conn::connect_reader(self.redis_url).await?;
        let counted = counters::read::all_counts(&mut conn, self.keys).await?;
        let _ = writeln!(o, "top      {}", top_videos(&counted));
        let ledger = billing::ledger::Ledger::new(self.store.clone());
        let verified = match ledger.verify(None, None).await {
            Ok(v) => format!(
                "verifies ({} entries, {} files re-hashed)",
                v.entries, v.files
            ),
            Err(e) => format!("DOES NOT VERIFY: {e}"),
        };
        let log = ledger.read().await?;
        let statement = match log
            .entries
            .iter()
            .rev()
            .find(|e| e.kind == billing::ledger::Kind::Statement)
        {
            None => "none yet".to_owned(),
            Some(e) => {
                let totals = match billing::statement::entry_totals(self.store.as_ref(), e).await {
                    Ok(t) => format!("{} {} to {} creators", t.amount, t.currency, t.creators),
                    Err(err) => format!("TOTALS UNREADABLE: {err}"),
                };
                format!(
                    "{} {}{}: {totals} (entry {})",
                    e.period,
                    &e.statement_id[..e.statement_id.len().min(12)],
                    if e.provisional { " PROVISIONAL" } else { "" },
                    e.seq
                )
            }
        };
        let _ = write!(
            o,
            "billing  latest statement {statement}; ledger {verified}"
        );
        Ok(o)
    }
}

/// The five most viewed videos in the speed layer's counters, `v=views`.
pub(super) fn top_videos<H>(counted: &BTreeMap<(String, H), counters::read::Counts>) -> String {
    let mut per_video: BTreeMap<&str, u64> = BTreeMap::new();
    for ((video, _), c) in counted {
        *per_video.entry(video).or_default() += c.views;
    }
    let mut top: Vec<(&str, u64)> = per_video.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(v, n)| format!("{v}={n}"))
        .collect();
    top.join(" ")
}
