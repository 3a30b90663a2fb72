//! Long-running tasks of a process, watched: a task that ends on an error,
//! panics, or returns before it was asked to stop is never silent. It is
//! logged at error, counted in `task_stopped{task}`, and its readiness flag
//! turns not ready with the reason, so `/readyz` fails naming it.
//!
//! Tasks retry what may pass (a store or broker outage) themselves; what
//! reaches the supervisor is the end of a task.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{OpsBuilder, ReadyFlag};

type Labels = Vec<(String, String)>;

/// Spawns and watches a process' long-running tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    stopped: Family<Labels, Counter>,
    stopping: CancellationToken,
}

impl Supervisor {
    /// Registers `task_stopped` in `ops`.
    pub fn register(ops: &mut OpsBuilder) -> Self {
        let stopped = Family::<Labels, Counter>::default();
        ops.registry().register(
            "task_stopped",
            "Long-running tasks that ended on an error, a panic or unasked (each one also fails /readyz)",
            stopped.clone(),
        );
        Self {
            stopped,
            stopping: CancellationToken::new(),
        }
    }

    /// The process is stopping: from now on a task that ends is the ordered
    /// stop, not a failure (an error still is one).
    pub fn stopping(&self) {
        self.stopping.cancel();
    }

    /// Runs `task` as `name` with readiness `flag` (see the module).
    pub fn spawn<E>(
        &self,
        name: &'static str,
        flag: ReadyFlag,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> JoinHandle<Result<(), E>>
    where
        E: Display + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) if this.stopping.is_cancelled() => Ok(()),
                Ok(Ok(())) => {
                    this.failed(name, &flag, "it ended without being asked to stop");
                    Ok(())
                }
                Ok(Err(e)) => {
                    this.failed(name, &flag, &e);
                    Err(e)
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    this.failed(name, &flag, format_args!("it panicked: {what}"));
                    std::panic::resume_unwind(panic)
                }
            }
        })
    }

    fn failed(&self, name: &str, flag: &ReadyFlag, why: impl Display) {
        tracing::error!(task = name, error = %why, "a long-running task stopped");
        self.stopped
            .get_or_create(&vec![("task".to_owned(), name.to_owned())])
            .inc();
        flag.set_not_ready(format!("the {name} task stopped: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_fails_panics_or_ends_unasked_is_loud() {
        let mut ops = OpsBuilder::new();
        let s = Supervisor::register(&mut ops);
        let ops = ops.build();
        let failing = ReadyFlag::new("starting");
        failing.set_ready();
        let r = s
            .spawn("archive", failing.clone(), async { Err("disk full") })
            .await
            .unwrap();
        assert_eq!(r, Err("disk full"));
        assert_eq!(
            failing.get(),
            Err("the archive task stopped: disk full".to_owned())
        );

        let panicking = ReadyFlag::new("starting");
        let joined = s
            .spawn("speed", panicking.clone(), async {
                if panicking_input() {
                    panic!("index out of bounds");
                }
                Ok::<(), String>(())
            })
            .await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(
            panicking.get(),
            Err("the speed task stopped: it panicked: index out of bounds".to_owned())
        );

        let quitting = ReadyFlag::new("starting");
        s.spawn("scheduler", quitting.clone(), async {
            Ok::<(), String>(())
        })
        .await
        .unwrap()
        .unwrap();
        assert!(quitting.get().unwrap_err().contains("without being asked"));
        let metrics = ops.render_metrics();
        for task in ["archive", "speed", "scheduler"] {
            assert!(
                metrics.contains(&format!(
                    "viewcount_task_stopped_total{{task=\"{task}\"}} 1"
                )),
                "{metrics}"
            );
        }

        // After the stop is asked for, ending is the ordered stop.
        s.stopping();
        let asked = ReadyFlag::new("starting");
        asked.set_ready();
        s.spawn("archive", asked.clone(), async { Ok::<(), String>(()) })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(asked.get(), Ok(()));
    }

    fn panicking_input() -> bool {
        std::hint::black_box(true)
    }
}
