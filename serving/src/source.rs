//! What serving answers from, kept current without a restart: the batch
//! index and the catalog in one [`Snapshot`], swapped whole, and the tokens
//! file.
//!
//! A request takes one snapshot and answers from it alone, so the batch
//! part, the watermark `W` that splits it from the speed part, and the
//! catalog all come from one moment: no hour is counted twice or missed
//! while a reload lands. A reload builds the new snapshot completely beside
//! the old one (which keeps serving) and then swaps one pointer. A failed
//! reload keeps the old snapshot, is reported on `/readyz` and as a metric,
//! and is tried again at the next tick.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use store::catalog::Catalog;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::tokens::Tokens;
use crate::{BatchIndex, Result};

/// The batch index and the catalog, as of one reload.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The published batch counts and their watermark.
    pub index: Arc<BatchIndex>,
    /// The catalog in force (`None`: none imported; every video is then
    /// unattributed).
    pub catalog: Option<Arc<Catalog>>,
}

impl Snapshot {
    /// The creator owning `video` (`None`: unattributed).
    pub fn owner(&self, video: &str) -> Option<&str> {
        self.catalog.as_ref().and_then(|c| c.creator_of(video))
    }
}

#[derive(Debug, Default)]
struct Status {
    loaded: bool,
    failure: Option<String>,
}

/// The current [`Snapshot`] of a store, reloaded when `CURRENT` or
/// `catalog/CURRENT` changes.
#[derive(Debug)]
pub struct Source {
    store: Arc<dyn ObjectStore>,
    current: ArcSwap<Snapshot>,
    status: Mutex<Status>,
    metrics: Metrics,
}

impl Source {
    /// The store read.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// A source over `store`, empty until the first [`Source::refresh`].
    pub fn new(store: Arc<dyn ObjectStore>, metrics: Metrics) -> Self {
        Self {
            store,
            current: ArcSwap::from_pointee(Snapshot::default()),
            status: Mutex::new(Status::default()),
            metrics,
        }
    }

    /// The snapshot in force. Answer a request from one call of this.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Loads what changed since the last refresh (the published state, the
    /// catalog, or both) and swaps it in, in one step. `Ok(true)` if
    /// something was swapped. On error the old snapshot stays.
    pub async fn refresh(&self) -> Result<bool> {
        let r = self.try_refresh().await;
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(_) => {
                st.loaded = true;
                st.failure = None;
            }
            Err(e) => {
                if st.failure.is_none() {
                    tracing::warn!(error = %e, "serving: reload failed; the previous state keeps serving, retrying");
                }
                st.failure = Some(e.to_string());
            }
        }
        r
    }

    async fn try_refresh(&self) -> Result<bool> {
        let store = self.store.as_ref();
        let old = self.snapshot();
        let state = store::state::current(store).await.inspect_err(|_| {
            self.metrics.reloaded("state", "failed");
        })?;
        let pointer = store::catalog::current_pointer(store)
            .await
            .inspect_err(|_| self.metrics.reloaded("catalog", "failed"))?;
        let state_changed = state.as_ref().map(|s| s.seq) != old.index.seq();
        let catalog_changed =
            pointer.as_ref().map(|p| &p.sha256) != old.catalog.as_ref().map(|c| &c.sha256);
        if !state_changed && !catalog_changed {
            return Ok(false);
        }
        let index = match (&state, state_changed) {
            (Some(s), true) => {
                // Decoding the views and building the index is seconds of
                // CPU for millions of video-hours: off the request workers,
                // on a blocking thread, so answers keep flowing meanwhile.
                let (st, state) = (self.store.clone(), s.clone());
                let rt = tokio::runtime::Handle::current();
                let index = tokio::task::spawn_blocking(move || {
                    rt.block_on(BatchIndex::load_state(st.as_ref(), &state))
                })
                .await
                .map_err(|e| crate::Error::Config(format!("the index load stopped: {e}")))?
                .inspect_err(|_| self.metrics.reloaded("state", "failed"))?;
                self.metrics.reloaded("state", "ok");
                tracing::info!(
                    seq = s.seq,
                    watermark = ?s.watermark,
                    videos = index.videos(),
                    video_hours = index.video_hours(),
                    "serving: published state loaded"
                );
                Arc::new(index)
            }
            (None, true) => Arc::new(BatchIndex::default()),
            (_, false) => old.index.clone(),
        };
        let catalog = if catalog_changed {
            let c = store::catalog::current(store)
                .await
                .inspect_err(|_| self.metrics.reloaded("catalog", "failed"))?
                .map(Arc::new);
            self.metrics.reloaded("catalog", "ok");
            if let Some(c) = &c {
                tracing::info!(sha256 = %c.sha256, videos = c.len(), "serving: catalog loaded");
            }
            c
        } else {
            old.catalog.clone()
        };
        self.metrics.index(&index);
        self.current.store(Arc::new(Snapshot { index, catalog }));
        Ok(true)
    }

    /// For `/readyz`: not ready until the first load succeeded; then
    /// degraded (still serving the previous state) while reloads fail.
    pub fn loaded(&self) -> std::result::Result<(), String> {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match (&st.failure, st.loaded) {
            (_, true) => Ok(()),
            (Some(f), false) => Err(format!("cannot load the published state: {f}")),
            (None, false) => Err("loading the published state".into()),
        }
    }

    /// For `/readyz`: the last reload's failure, if it failed.
    pub fn reload_failure(&self) -> std::result::Result<(), String> {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &st.failure {
            Some(f) if st.loaded => Err(format!(
                "reload failing, still serving the previous state: {f}"
            )),
            _ => Ok(()),
        }
    }

    /// Refreshes every `every` until `cancel`.
    pub async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            let _ = self.refresh().await;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// The tokens file, reloaded when its bytes change. A file that no longer
/// parses keeps the previous tokens in force (and says so in the log and
/// a metric) until it is fixed.
#[derive(Debug)]
pub struct TokensFile {
    path: PathBuf,
    tokens: ArcSwap<Tokens>,
    hash: Mutex<[u8; 32]>,
    /// What is wrong with the file now, if anything (`/readyz` degraded).
    problem: Mutex<Option<String>>,
    metrics: Metrics,
}

impl TokensFile {
    /// Reads and checks the file at `path`: an error if it cannot be read
    /// or is not valid (a service must not start without its tokens).
    pub fn open(path: PathBuf, metrics: Metrics) -> std::result::Result<Self, String> {
        store::secret::check_private(&path, "the tokens file")?;
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read the tokens file {}: {e}; create one with `viewcount token create`",
                path.display()
            )
        })?;
        let tokens = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path,
            tokens: ArcSwap::from_pointee(tokens),
            hash: Mutex::new(Sha256::digest(&bytes).into()),
            problem: Mutex::new(None),
            metrics,
        })
    }

    /// Tokens from memory (for tests and embedding).
    pub fn fixed(tokens: Tokens, metrics: Metrics) -> Self {
        Self {
            path: PathBuf::new(),
            tokens: ArcSwap::from_pointee(tokens),
            hash: Mutex::new([0; 32]),
            problem: Mutex::new(None),
            metrics,
        }
    }

    /// `Err` saying what is wrong with the file now (for `/readyz`).
    pub fn problem(&self) -> std::result::Result<(), String> {
        match &*self.problem.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(p) => Err(p.clone()),
        }
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// No token is valid from now on, because `why`.
    fn revoke_all(&self, why: String) {
        tracing::warn!(path = %self.path.display(), "serving: {why}");
        self.tokens.store(Arc::new(Tokens::default()));
        self.metrics.reloaded("tokens", "emptied");
        self.set_problem(Some(why));
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.load_full()
    }

    /// Rereads the file; swaps the tokens in if it changed and is valid.
    /// A file that is gone or empty revokes every token (that is what its
    /// owner left); only a broken one (unreadable, not valid) keeps the
    /// previous tokens. Each of the three shows on `/readyz` (degraded)
    /// until the file is right again.
    pub fn refresh(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let mut last = self.hash.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if *last != [0xff; 32] {
                    self.revoke_all(format!(
                        "the tokens file {} is gone: every token is refused until it is back",
                        self.path.display()
                    ));
                    *last = [0xff; 32];
                }
                return;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "serving: cannot reread the tokens file; the previous tokens stay in force");
                self.metrics.reloaded("tokens", "failed");
                self.set_problem(Some(format!(
                    "cannot read the tokens file {} ({e}); the previous tokens stay in force",
                    self.path.display()
                )));
                return;
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if *last == hash {
            return;
        }
        if let Err(why) = store::secret::check_private(&self.path, "the tokens file") {
            tracing::warn!("serving: {why}; the previous tokens stay in force");
            self.metrics.reloaded("tokens", "failed");
            self.set_problem(Some(format!("{why}; the previous tokens stay in force")));
            // Not remembered: read again once it is fixed.
            return;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            self.revoke_all(format!(
                "the tokens file {} is empty: every token is refused",
                self.path.display()
            ));
            *last = hash;
            return;
        }
        match parse(&bytes) {
            Ok(t) => {
                tracing::info!(path = %self.path.display(), tokens = t.len(), "serving: tokens file reloaded");
                self.tokens.store(Arc::new(t));
                self.metrics.reloaded("tokens", "ok");
                self.set_problem(None);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "serving: the tokens file changed but is not valid; the previous tokens stay in force");
                self.metrics.reloaded("tokens", "failed");
                self.set_problem(Some(format!(
                    "the tokens file {} is not valid ({e}); the previous tokens stay in force",
                    self.path.display()
                )));
            }
        }
        // Remember it either way: an invalid file is reported once, not
        // every tick, and is read again when it changes.
        *last = hash;
    }

    /// Refreshes every `every` until `cancel`.
    pub async fn run(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => self.refresh(),
            }
        }
    }
}

fn parse(bytes: &[u8]) -> std::result::Result<Tokens, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    Tokens::parse(text).map_err(|e| e.to_string())
}

/// Now, to the microsecond (how fresh answers are is measured from it).
pub(crate) fn now() -> DateTime<Utc> {
    schemas::time::truncate_to_micros(Utc::now())
}
