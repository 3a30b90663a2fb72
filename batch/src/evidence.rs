//! The events behind the counts: the billable views of some videos as the
//! native engine decides them, each with the rule that removed it, if any.
//!
//! `billing explain` traces a payout down to event ids with this: the same
//! read, dedup and rules as the run whose manifest it is given (the very
//! inputs, each checked against the SHA-256 the run recorded, and the rule
//! set it recorded), within the same memory limit, spilling as a run does.
//! The SQL specification has the same function (crate `batch-sql`); a test
//! holds the two to the same list.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use schemas::RuleSet;
use schemas::fraud::FraudRule;
use store::manifest::Input;
use uuid::Uuid;

use crate::count::{self, Wanted};
use crate::memory::Memory;
use crate::run::{check_unchanged, input_metas};
use crate::{Error, Result};

/// A billable view as the rules decide it: which event, and which rule,
/// if any, filtered it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BillableEvent {
    /// The video.
    pub video_id: String,
    /// `occurred_at`, microseconds since the epoch.
    pub occurred_at_us: i64,
    /// The event id (lower case, hyphenated).
    pub event_id: String,
    /// The rule that filtered it (not paid), if one did.
    pub filtered_by: Option<FraudRule>,
}

/// The billable views of `videos` occurring in `[from, to)` that a run over
/// `inputs` with `rules` decides, each event once: the evidence behind a
/// statement line. Every input must still have the checksum recorded for
/// it (a `corrupt` error names the one that changed). Sorted by video,
/// occurred_at, event id.
pub async fn billable_events(
    store: Arc<dyn ObjectStore>,
    inputs: &[Input],
    videos: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rules: &RuleSet,
    memory: &Memory,
) -> Result<Vec<BillableEvent>> {
    if inputs.is_empty() || videos.is_empty() {
        return Ok(Vec::new());
    }
    let files = input_metas(inputs)?;
    let wanted = Wanted {
        videos: videos.iter().cloned().collect::<BTreeSet<_>>(),
        from_us: from.timestamp_micros(),
        to_us: to.timestamp_micros(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let io = tokio::runtime::Handle::current();
    let (rules, memory) = (*rules, memory.clone());
    let (from_us, to_us) = (wanted.from_us, wanted.to_us);
    let task = tokio::task::spawn_blocking(move || {
        count::count(
            &io,
            store,
            &files,
            from_us,
            to_us,
            &rules,
            &memory,
            Some(&wanted),
            &tx,
        )
    });
    while rx.recv().await.is_some() {}
    let counted = task
        .await
        .map_err(|e| Error::Input(format!("the counting engine failed: {e}")))??;
    check_unchanged(inputs, &counted.inputs)?;
    let mut out: Vec<BillableEvent> = counted
        .evidence
        .iter()
        .map(|d| BillableEvent {
            video_id: counted.video_names[d.video as usize].to_string(),
            occurred_at_us: d.occurred_at,
            event_id: Uuid::from_u64_pair(d.id[0], d.id[1])
                .hyphenated()
                .to_string(),
            filtered_by: d.rule,
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}
