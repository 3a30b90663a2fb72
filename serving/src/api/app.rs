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
    /// Work per second each token may ask for, in cells (a series costs
    /// its points × its videos); `None`: no limit. Past it, 429 with
    /// `Retry-After`.
    pub cost_per_second: Option<NonZeroU32>,
    /// Cells a token may ask for at once above that rate (also the most
    /// one request may cost: more is a 400 asking for fewer points).
    pub cost_burst: NonZeroU32,
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
    /// Default [`Self::cost_per_second`]: two million cells (about a
    /// hundred full 10 000-point series of two videos) a second.
    pub const DEFAULT_COST_PER_SECOND: u32 = 2_000_000;
    /// Default [`Self::cost_burst`].
    pub const DEFAULT_COST_BURST: u32 = 20_000_000;
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
            cost_per_second: NonZeroU32::new(Self::DEFAULT_COST_PER_SECOND),
            cost_burst: NonZeroU32::new(Self::DEFAULT_COST_BURST).unwrap_or(NonZeroU32::MIN),
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
    /// Each token's work budget ([`ApiConfig::cost_per_second`]).
    pub(crate) cost_limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Heavy answers are computed off the request workers, as many at a
    /// time as there are cores (the rest wait), so that cheap requests
    /// and `/healthz` are never stuck behind them.
    pub(crate) heavy: Arc<Semaphore>,
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
        let cost_limiter = config
            .cost_per_second
            .map(|r| RateLimiter::keyed(Quota::per_second(r).allow_burst(config.cost_burst)));
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            source,
            tokens,
            speed,
            config,
            limiter,
            cost_limiter,
            heavy: Arc::new(Semaphore::new(cores)),
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
