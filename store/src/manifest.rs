//! A run's manifest (`runs/<id>.json`): what it read, with which rules and
//! code, what it wrote, and how long each step took. Outside tools read it.

use chrono::{DateTime, Utc};
use schemas::RuleSet;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a run computes (both give byte-identical output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The native engine ([`crate::count`]): one read of each input, hash
    /// tables, all cores. The default.
    #[default]
    Native,
    /// The rules as DataFusion SQL ([`crate::sql`]): the executable
    /// specification, for cross-checking a run.
    Sql,
    /// The same SQL on a Ballista cluster (`batch scheduler` and `batch
    /// executor` processes).
    Ballista,
}

impl Engine {
    /// `native`, `sql` or `ballista`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Sql => "sql",
            Engine::Ballista => "ballista",
        }
    }

    /// Parses `native`, `sql` or `ballista`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(Engine::Native),
            "sql" => Ok(Engine::Sql),
            "ballista" => Ok(Engine::Ballista),
            other => Err(Error::Config(format!(
                "unknown engine {other:?}: use native (the default), sql or ballista"
            ))),
        }
    }
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Object path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Object path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Rows.
    pub rows: u64,
}

/// Row counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    /// Rows read from the archive (whole days).
    pub input: u64,
    /// Rows failing re-validation (dropped).
    pub invalid: u64,
    /// Rows removed as re-sends of an earlier `event_id`.
    pub duplicates: u64,
    /// Event ids seen with more than one payload (the earliest received wins).
    pub conflicting_ids: u64,
    /// Views counted in the run's hours.
    pub views: u64,
    /// Billable views after the fraud cap.
    pub billable_views: u64,
    /// Billable views removed by the fraud cap.
    pub fraud_filtered: u64,
    /// Output rows (video-hours).
    pub output: u64,
}

/// A run's manifest (`runs/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Run id: hash of inputs, range, rules and code version.
    pub run_id: String,
    /// Hours computed: `[from, to)`.
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Hours requested but not complete (skipped).
    pub skipped_incomplete_to: Option<DateTime<Utc>>,
    /// Counting rules version.
    pub rules_version: u32,
    /// Counting rules.
    pub rules: RuleSet,
    /// Code version.
    pub code_version: String,
    /// The engine that computed the run (not part of the run id: both
    /// engines give the same output).
    #[serde(default)]
    pub engine: Engine,
    /// Archive watermark when the run started.
    pub archive_watermark: Option<DateTime<Utc>>,
    /// Inputs, sorted by path.
    pub inputs: Vec<Input>,
    /// Outputs.
    pub outputs: Vec<Output>,
    /// Row counts.
    pub rows: Rows,
    /// When it ran (not part of the run id).
    pub started_at: DateTime<Utc>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Each step in the order they ran (`planning`; for the native engine
    /// `reading` (fetch, checksum, decode, validate), `deduplicating`,
    /// `counting` (fraud cap, aggregation); for the SQL engine `computing`;
    /// `writing`): wall time, and for the engine's steps memory and spill.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One step of a run. Manifests written before memory was recorded hold a
/// step as `["name", seconds]`; they still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StepRepr")]
pub struct Step {
    /// What the step did.
    pub name: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Peak resident set of the process during the step (the kernel's
    /// `VmHWM`, reset at the step's start): everything the process holds,
    /// not only the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The most the engine's own accounting held against `--memory-limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Bytes written to local spill files during the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spilled_bytes: Option<u64>,
}

impl Step {
    /// A step with its wall time only.
    pub fn timed(name: &str, seconds: f64) -> Self {
        Self {
            name: name.to_owned(),
            seconds,
            peak_rss_bytes: None,
            memory_bytes: None,
            spilled_bytes: None,
        }
    }
}

/// How a step is read: as written now, or as `["name", seconds]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum StepRepr {
    Full {
        name: String,
        seconds: f64,
        #[serde(default)]
        peak_rss_bytes: Option<u64>,
        #[serde(default)]
        memory_bytes: Option<u64>,
        #[serde(default)]
        spilled_bytes: Option<u64>,
    },
    Timed(String, f64),
}

impl From<StepRepr> for Step {
    fn from(r: StepRepr) -> Self {
        match r {
            StepRepr::Full {
                name,
                seconds,
                peak_rss_bytes,
                memory_bytes,
                spilled_bytes,
            } => Self {
                name,
                seconds,
                peak_rss_bytes,
                memory_bytes,
                spilled_bytes,
            },
            StepRepr::Timed(name, seconds) => Self::timed(&name, seconds),
        }
    }
}

impl Manifest {
    /// A manifest of run `run_id` over hours `[from, to)` with the default
    /// rules, no inputs and no outputs yet, started now: what a run fills
    /// in, and what tests and benchmarks that write a run by hand start from.
    pub fn new(run_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            run_id: run_id.to_owned(),
            from,
            to,
            skipped_incomplete_to: None,
            rules_version: schemas::RULES_VERSION,
            rules: RuleSet::default(),
            code_version: env!("CARGO_PKG_VERSION").to_owned(),
            engine: Engine::default(),
            archive_watermark: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            rows: Rows::default(),
            started_at: Utc::now(),
            seconds: 0.0,
            steps: Vec::new(),
        }
    }

    /// The output at `path`, which this manifest vouches for by hash.
    pub fn output(&self, path: &object_store::path::Path) -> Option<&Output> {
        self.outputs.iter().find(|o| o.path == path.as_ref())
    }

    /// Reads output `path` of this run, checked against the SHA-256 the
    /// manifest records ([`crate::layout::get_verified`]); `None` if the
    /// run has no such output (a run from before the file existed).
    pub async fn read_output(
        &self,
        store: &dyn object_store::ObjectStore,
        path: &object_store::path::Path,
    ) -> crate::Result<Option<bytes::Bytes>> {
        let Some(o) = self.output(path) else {
            return Ok(None);
        };
        let named_by = format!("run {}'s manifest", self.run_id);
        crate::layout::get_verified(store, path, &o.sha256, &named_by)
            .await
            .map(Some)
    }
}

/// Reads run `run_id`'s manifest, checked against `sha256`, the hash
/// `named_by` (a published state, a statement) recorded for it. Without a
/// hash (a state or statement written before manifests were hashed) it is
/// read as is; everything it names is still checked against it.
pub async fn load(
    store: &dyn object_store::ObjectStore,
    run_id: &str,
    sha256: Option<&str>,
    named_by: &str,
) -> crate::Result<Manifest> {
    let path = crate::layout::manifest(run_id);
    let m: Manifest = match sha256 {
        Some(sha) => crate::layout::get_json_verified(store, &path, sha, named_by).await?,
        None => crate::layout::get_json(store, &path).await?.ok_or_else(|| {
            crate::Error::Corrupt(format!(
                "{path}, which {named_by} names, is missing; rerun `viewcount batch run` over its hours"
            ))
        })?,
    };
    if m.run_id != run_id {
        return Err(crate::Error::Corrupt(format!(
            "{path} holds the manifest of run {}, not {run_id}",
            m.run_id
        )));
    }
    Ok(m)
}

/// Writes output file `path` of a run (`rows` rows) and returns what its
/// manifest records of it: size and SHA-256 of exactly the bytes written.
pub async fn put_output(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    bytes: bytes::Bytes,
    rows: u64,
) -> crate::Result<Output> {
    let out = Output {
        path: path.to_string(),
        size: bytes.len() as u64,
        sha256: crate::layout::sha256(&bytes),
        rows,
    };
    crate::layout::put(store, path, bytes).await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_in_both_forms_and_write_as_objects() {
        let old: Vec<Step> = serde_json::from_str(r#"[["planning", 0.5]]"#).unwrap();
        assert_eq!(old, vec![Step::timed("planning", 0.5)]);
        let step = Step {
            spilled_bytes: Some(7),
            ..Step::timed("reading", 1.0)
        };
        let json = serde_json::to_string(&step).unwrap();
        assert_eq!(
            json,
            r#"{"name":"reading","seconds":1.0,"spilled_bytes":7}"#
        );
        assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), step);
    }
}
