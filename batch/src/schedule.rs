//! `viewcount batch schedule`: the dirty run ([`crate::dirty`]) at a fixed
//! interval, so late views reach the authoritative numbers without anyone
//! rerunning by hand. `viewcount up` runs the same loop.

use std::sync::Arc;

use chrono::Utc;
use object_store::ObjectStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Result;
use crate::dirty::{Plan, run_dirty};
use crate::run::{RunOptions, RunReport};

/// The scheduler's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    runs: Counter,
    failures: Counter,
    dirty_hours: Gauge,
    last_success: Gauge,
    last_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// Registers the scheduler's metrics in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "batch_scheduled_runs",
            "Batch runs the scheduler completed and published",
            m.runs.clone(),
        );
        r.register(
            "batch_schedule_failures",
            "Scheduled rounds that failed (retried at the next tick)",
            m.failures.clone(),
        );
        r.register(
            "batch_dirty_pending",
            "Hours with late or uncovered data found at the start of the last round",
            m.dirty_hours.clone(),
        );
        r.register(
            "batch_last_success_timestamp_seconds",
            "Unix time the last scheduled round finished without error",
            m.last_success.clone(),
        );
        r.register(
            "batch_last_round_seconds",
            "How long the last scheduled round took",
            m.last_seconds.clone(),
        );
        m
    }
}

/// One scheduled round: plan, run, publish. Logs and counts; errors are
/// returned for the caller to log and retry at the next tick.
pub async fn round(
    store: Arc<dyn ObjectStore>,
    opts: &RunOptions,
    metrics: &Metrics,
) -> Result<(Plan, Vec<RunReport>)> {
    let clock = std::time::Instant::now();
    let out = run_dirty(store, opts, &|_, _, _| {}).await;
    metrics.last_seconds.set(clock.elapsed().as_secs_f64());
    match &out {
        Ok((plan, reports)) => {
            metrics.runs.inc_by(reports.len() as u64);
            metrics.dirty_hours.set(plan.dirty.len() as i64);
            metrics.last_success.set(Utc::now().timestamp());
            for r in reports {
                tracing::info!(
                    run = %r.manifest.run_id,
                    from = %r.manifest.from,
                    to = %r.manifest.to,
                    seconds = r.manifest.seconds,
                    views = r.manifest.rows.views,
                    watermark = ?r.published.as_ref().and_then(|p| p.watermark),
                    "scheduled batch run published"
                );
            }
        }
        Err(e) => {
            metrics.failures.inc();
            tracing::warn!(error = %e, "scheduled batch round failed; retrying at the next tick");
        }
    }
    out
}

/// The dirty run on a schedule: a round at start, then one every `every`,
/// and one as soon as possible when [`Scheduler::run_now`] asks. Rounds
/// never overlap.
#[derive(Debug)]
pub struct Scheduler {
    store: Arc<dyn ObjectStore>,
    opts: RunOptions,
    every: std::time::Duration,
    metrics: Metrics,
    kick: tokio::sync::Notify,
    rounds: tokio::sync::watch::Sender<Rounds>,
}

/// Rounds started and finished, and the last one's error.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    /// Rounds started.
    pub started: u64,
    /// Rounds finished (with or without error).
    pub finished: u64,
    /// The last finished round's error, if it failed.
    pub last_error: Option<String>,
    /// The last finished round's plan, if it succeeded.
    pub last_plan: Option<Plan>,
}

impl Scheduler {
    /// A scheduler of dirty runs with `opts` (its range is ignored).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        opts: RunOptions,
        every: std::time::Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            opts,
            every,
            metrics,
            kick: tokio::sync::Notify::new(),
            rounds: tokio::sync::watch::channel(Rounds::default()).0,
        })
    }

    /// Rounds so far.
    pub fn rounds(&self) -> Rounds {
        self.rounds.borrow().clone()
    }

    /// Runs rounds until `stop`; a round in progress finishes (its publish
    /// is one write) before this returns.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
                () = self.kick.notified() => {}
            }
            self.rounds.send_modify(|r| r.started += 1);
            // Errors are logged and counted inside; the next tick retries.
            let out = round(self.store.clone(), &self.opts, &self.metrics).await;
            self.rounds.send_modify(|r| {
                r.finished += 1;
                match out {
                    Ok((plan, _)) => {
                        r.last_error = None;
                        r.last_plan = Some(plan);
                    }
                    Err(e) => r.last_error = Some(e.to_string()),
                }
            });
        }
    }

    /// Asks for a round now and waits until one that started after this
    /// call has finished; its error, if it failed. Needs [`Scheduler::run`]
    /// running.
    pub async fn run_now(&self) -> Result<(), String> {
        let mut rx = self.rounds.subscribe();
        let target = rx.borrow().started + 1;
        self.kick.notify_one();
        let done = rx
            .wait_for(|r| r.finished >= target)
            .await
            .map_err(|_| "the scheduler stopped".to_owned())?;
        match &done.last_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}
