//! What every request shares: the API's limits and cadences, and the
//! [`App`] the handlers take as state.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::source::{Snapshot, Source, TokensFile};
use crate::speed_part::SpeedSource;

/// Limits and cadences of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests per second each token may make (`None`: no limit).
    pub rate_per_second: Option<NonZeroU32>,
    /// Requests a token may make at once above its rate.
    pub burst: NonZeroU32,
    /// Open live streams each token may hold.
    pub live_per_token: usize,
    /// How often a live stream looks for a change.
    pub live_every: Duration,
    /// Most points a series answer may hold.
    pub max_points: usize,
    /// Most rows a creator listing may return.
    pub max_limit: usize,
    /// The rate card for creators' *estimated* earnings (`None`: estimates
    /// are not offered). Statements never use it: billing reads its own.
    pub rates: Option<Arc<billing::RateCard>>,
}

impl ApiConfig {
    /// Default [`Self::rate_per_second`].
    pub const DEFAULT_RATE: u32 = 100;
    /// Default [`Self::burst`].
    pub const DEFAULT_BURST: u32 = 200;
    /// Default [`Self::live_per_token`].
    pub const DEFAULT_LIVE_PER_TOKEN: usize = 4;
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            rate_per_second: NonZeroU32::new(Self::DEFAULT_RATE),
            burst: NonZeroU32::new(Self::DEFAULT_BURST).unwrap_or(NonZeroU32::MIN),
            live_per_token: Self::DEFAULT_LIVE_PER_TOKEN,
            live_every: Duration::from_secs(1),
            max_points: 10_000,
            max_limit: 10_000,
            rates: None,
        }
    }
}

/// Everything a request may need, shared by all of them.
#[derive(Debug)]
pub struct App {
    pub(crate) source: Arc<Source>,
    pub(crate) tokens: Arc<TokensFile>,
    pub(crate) speed: Arc<SpeedSource>,
    pub(crate) config: ApiConfig,
    pub(crate) limiter: Option<DefaultKeyedRateLimiter<String>>,
    pub(crate) live_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub(crate) metrics: Metrics,
    pub(crate) cancel: CancellationToken,
}

impl App {
    /// The API over `source`, `tokens` and `speed`; live streams end when
    /// `cancel` fires.
    pub fn new(
        source: Arc<Source>,
        tokens: Arc<TokensFile>,
        speed: Arc<SpeedSource>,
        config: ApiConfig,
        metrics: Metrics,
        cancel: CancellationToken,
    ) -> Self {
        let limiter = config
            .rate_per_second
            .map(|r| RateLimiter::keyed(Quota::per_second(r).allow_burst(config.burst)));
        Self {
            source,
            tokens,
            speed,
            config,
            limiter,
            live_slots: Mutex::new(HashMap::new()),
            metrics,
            cancel,
        }
    }
}

impl App {
    /// The published state and catalog being served.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.source.snapshot()
    }

    /// The rate card for estimates, if configured.
    pub(crate) fn rates(&self) -> Option<&billing::RateCard> {
        self.config.rates.as_deref()
    }

    /// The object store served from.
    pub(crate) fn store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.source.store()
    }
}
