//! `viewcount gen`: seeded synthetic traffic.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use loadgen::{GenConfig, GenEvent, Generator, SendConfig, SendReport, Truth};
use schemas::RuleSet;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// POST the events to this ingest base URL (e.g. http://127.0.0.1:8080).
    #[arg(long, conflicts_with = "out")]
    target: Option<String>,
    /// Write the events as NDJSON to this file ("-" for stdout) instead of sending.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the ground truth (per video per hour, from accepted events) as JSON here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Write a video catalog (CSV for `viewcount catalog import`) matching
    /// the generated videos here: creators own a Zipf-skewed number of them;
    /// 1 in 20 (v00003 among them) is left out, so unattributed views occur.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// RNG seed: the same seed and --start give the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events in all (duplicates and invalid ones included).
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Distinct videos (popularity is Zipf-skewed over them).
    #[arg(long, default_value_t = 100)]
    videos: u32,
    /// Distinct users.
    #[arg(long, default_value_t = 1_000)]
    users: u32,
    /// Zipf exponent of video popularity.
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// occurred_at of the first on-time event (RFC 3339); default: now minus --span.
    #[arg(long)]
    start: Option<DateTime<Utc>>,
    /// On-time events are spread over this long after --start.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    span: Duration,
    /// Fraction of exact re-sends of earlier events.
    #[arg(long, default_value_t = 0.10)]
    duplicate_ratio: f64,
    /// Fraction of events 1 to 72 hours late.
    #[arg(long, default_value_t = 0.05)]
    late_ratio: f64,
    /// Fraction of invalid events, spread over every kind of rule.
    #[arg(long, default_value_t = 0.02)]
    invalid_ratio: f64,
    /// Fraction of valid events that are revenue-eligible.
    #[arg(long, default_value_t = 0.8)]
    revenue_ratio: f64,
    /// Mean watch time in seconds (exponential).
    #[arg(long, default_value_t = 90.0)]
    watch_mean: f64,
    /// Fraction of events that are labelled invalid traffic: repeat loops,
    /// bot farms, impossible watch time and zero-engagement bursts, in equal
    /// shares.
    #[arg(long, default_value_t = 0.0)]
    fraud_ratio: f64,
    /// Fraction of events from organic hard cases: fans' bursts on a
    /// popular video, household accounts shared across devices, binges,
    /// classrooms, clips shared from one link, trending shorts without
    /// ads, in equal shares.
    /// Default: the --fraud-ratio (so false positives are measured too).
    #[arg(long)]
    hard_case_ratio: Option<f64>,
    /// One parameter of a pattern, NAME=N (repeat the flag for more), e.g.
    /// loop_views=60 or farm_bots=50; every name is listed in the error
    /// for an unknown one and in the README.
    #[arg(long = "pattern", value_name = "NAME=N")]
    patterns: Vec<String>,
    /// Write the labelled events here as CSV (event_id,label): every event
    /// of invalid traffic or of an organic hard case, once; an event not
    /// listed is plain organic.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Offered load in events per second when sending (default: as fast as ingest answers).
    #[arg(long)]
    rate: Option<f64>,
    /// Events per request when sending.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Requests in flight when sending.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Sign every event as the platform's player service would, with this
    /// playback signing key (`viewcount token playback-keygen`): schema
    /// version 2 with a playback token, one playback per view. Without it
    /// events are unsigned, and an ingest that requires signed events
    /// rejects them.
    #[arg(long, env = "VIEWCOUNT_PLAYBACK_SIGNING_KEY", value_name = "FILE")]
    sign_with: Option<PathBuf>,
}

impl Args {
    pub(crate) fn gen_config(&self) -> anyhow::Result<GenConfig> {
        let span = chrono::Duration::from_std(self.span).context("span out of range")?;
        let now = Utc::now();
        let mut mix = loadgen::Mix {
            fraud_ratio: self.fraud_ratio,
            hard_case_ratio: self.hard_case_ratio.unwrap_or(self.fraud_ratio),
            ..loadgen::Mix::default()
        };
        for p in &self.patterns {
            mix.set(p)?;
        }
        let signer = match &self.sign_with {
            None => None,
            Some(path) => Some(std::sync::Arc::new(crate::util::read_playback_signer(
                path,
            )?)),
        };
        Ok(GenConfig {
            seed: self.seed,
            videos: self.videos,
            users: self.users,
            zipf_exponent: self.zipf,
            events: self.events,
            start: self.start.unwrap_or(now - span),
            span,
            duplicate_ratio: self.duplicate_ratio,
            late_ratio: self.late_ratio,
            invalid_ratio: self.invalid_ratio,
            revenue_ratio: self.revenue_ratio,
            watch_mean_seconds: self.watch_mean,
            now,
            mix,
            signer,
        })
    }
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    if let Some(path) = &a.catalog {
        write_catalog(path, a.videos, a.seed)?;
        if a.target.is_none() && a.out.is_none() {
            return Ok(());
        }
    }
    let generator = Generator::new(a.gen_config()?)?;
    let mut truth = Truth::new(RuleSet::default());
    let mut labels = match &a.labels {
        Some(path) => Some(LabelFile::create(path)?),
        None => None,
    };
    let events = generator.inspect(|e| {
        if let Some(l) = labels.as_mut() {
            l.write(e);
        }
    });
    match (&a.target, &a.out) {
        (Some(target), None) => {
            let report = send_to(target, &a, events, &mut truth).await?;
            eprintln!("{}", summary(&report));
        }
        (None, Some(out)) => write_ndjson(out, events, &mut truth)?,
        _ => bail!(
            "say where the events go: --target http://HOST:PORT or --out FILE (\"-\" for stdout)"
        ),
    }
    if let (Some(l), Some(path)) = (labels, &a.labels) {
        let n = l.finish()?;
        eprintln!("labels: {n} labelled events written to {}", path.display());
    }
    if let Some(path) = &a.truth {
        let json = serde_json::to_vec_pretty(&truth.to_file())?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "truth: {} views in {} video-hours written to {}",
            truth.views(),
            truth.rows().len(),
            path.display()
        );
    }
    Ok(())
}

/// Sends `generator`'s events to ingest at `target`, with a progress bar on a terminal.
pub(crate) async fn send_to(
    target: &str,
    a: &Args,
    events: impl Iterator<Item = GenEvent> + Send,
    truth: &mut Truth,
) -> anyhow::Result<SendReport> {
    let url = format!("{}/v1/events", target.trim_end_matches('/'));
    let mut cfg = SendConfig::new(url);
    cfg.batch_size = a.batch_size;
    cfg.concurrency = a.concurrency;
    cfg.rate = a.rate;
    let bar = ProgressBar::new(a.events);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = loadgen::send(events, &cfg, truth, |r| {
        bar.set_position(r.events);
        bar.set_message(format!("accepted {} rejected {}", r.accepted, r.rejected));
    })
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

pub(crate) fn summary(r: &SendReport) -> String {
    let by_field: Vec<String> = r
        .rejected_by_field
        .iter()
        .map(|(f, n)| format!("{f}={n}"))
        .collect();
    format!(
        "sent {} events in {} requests in {:.1}s ({:.0} events/s): accepted {}, rejected {} [{}], retries {}",
        r.events,
        r.requests,
        r.elapsed.as_secs_f64(),
        r.events as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.accepted,
        r.rejected,
        by_field.join(" "),
        r.retries
    )
}

/// The catalog file matching `videos` generated videos, and how many
/// videos and creators it lists.
pub(crate) fn catalog_csv(videos: u32, seed: u64) -> anyhow::Result<(Vec<u8>, usize, usize)> {
    let rows = loadgen::catalog(&loadgen::CatalogConfig::for_videos(videos, seed))?;
    let bytes = store::catalog::to_csv(
        rows.iter()
            .map(|r| [r.video_id.as_str(), r.creator_id.as_str(), r.title.as_str()]),
    );
    let creators: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.creator_id.as_str()).collect();
    Ok((bytes, rows.len(), creators.len()))
}

/// Writes the catalog matching `videos` generated videos to `path`.
fn write_catalog(path: &PathBuf, videos: u32, seed: u64) -> anyhow::Result<()> {
    let (bytes, listed, creators) = catalog_csv(videos, seed)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "catalog: {listed} of {videos} videos, {creators} creators, written to {} (import it with `viewcount catalog import`)",
        path.display()
    );
    Ok(())
}

fn write_ndjson(
    out: &PathBuf,
    events: impl Iterator<Item = GenEvent>,
    truth: &mut Truth,
) -> anyhow::Result<()> {
    let mut w: Box<dyn Write> = if out.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let f =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    // What ingest would accept if it received the events now.
    let ctx = schemas::ValidationContext::at(Utc::now());
    for e in events {
        serde_json::to_writer(&mut w, &e.value)?;
        w.write_all(b"\n")?;
        if let Ok(ev) = schemas::parse_event(&e.value, &ctx) {
            truth.record_labelled(&ev, e.label);
        }
    }
    w.flush()?;
    Ok(())
}

/// `--labels`: each labelled event's id and label, as generated.
struct LabelFile {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    written: u64,
    failed: Option<std::io::Error>,
}

impl LabelFile {
    fn create(path: &PathBuf) -> anyhow::Result<Self> {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(f);
        out.write_all(b"event_id,label\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            out,
            path: path.clone(),
            written: 0,
            failed: None,
        })
    }

    /// Lists `e` if it is a first copy of a labelled event (re-sends and
    /// events that break the contract are not views of their own).
    fn write(&mut self, e: &GenEvent) {
        if e.label == loadgen::Label::Organic
            || !matches!(e.kind, loadgen::Kind::Valid | loadgen::Kind::Late)
            || self.failed.is_some()
        {
            return;
        }
        let Some(id) = e.value.get("event_id").and_then(|v| v.as_str()) else {
            return;
        };
        match writeln!(self.out, "{id},{}", e.label) {
            Ok(()) => self.written += 1,
            Err(err) => self.failed = Some(err),
        }
    }

    /// Flushes; the events listed.
    fn finish(mut self) -> anyhow::Result<u64> {
        if let Some(e) = self.failed.take() {
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(self.written)
    }
}
