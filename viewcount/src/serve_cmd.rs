//! `viewcount serve`: the serving API (DESIGN §6).

use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::Context;
use serving::ServeOptions;
use serving::api::ApiConfig;
use serving::speed_part::SpeedConfig;

use crate::batch_cmd::StoreFlag;
use crate::util::{HttpFlags, bind, shutdown_signal};

/// Serving flags shared by `serve` and `up`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeFlags {
    /// Requests per second each token may make (0: no limit).
    #[arg(long, env = "VIEWCOUNT_RATE_LIMIT", default_value_t = ApiConfig::DEFAULT_RATE)]
    pub(crate) rate_limit: u32,
    /// Requests a token may make at once above its rate.
    #[arg(long, env = "VIEWCOUNT_RATE_BURST", default_value_t = ApiConfig::DEFAULT_BURST)]
    pub(crate) rate_burst: u32,
    /// Work each token may ask for per second, in cells (a series costs its
    /// points × its videos; 0: no limit).
    #[arg(long, env = "VIEWCOUNT_COST_LIMIT", default_value_t = ApiConfig::DEFAULT_COST_PER_SECOND)]
    pub(crate) cost_limit: u32,
    /// Cells a token may ask for at once above that rate (and the most one
    /// request may cost).
    #[arg(long, env = "VIEWCOUNT_COST_BURST", default_value_t = ApiConfig::DEFAULT_COST_BURST)]
    pub(crate) cost_burst: u32,
    /// Open live streams each token may hold.
    #[arg(long, env = "VIEWCOUNT_LIVE_PER_TOKEN", default_value_t = ApiConfig::DEFAULT_LIVE_PER_TOKEN)]
    pub(crate) live_per_token: usize,
    /// Longest wait for Redis on a request before answering from batch alone.
    #[arg(long, env = "VIEWCOUNT_SPEED_TIMEOUT", default_value_t = SpeedConfig::DEFAULT_TIMEOUT.into())]
    pub(crate) speed_timeout: humantime::Duration,
    /// How often the published state, catalog and tokens file are checked for changes.
    #[arg(long, env = "VIEWCOUNT_RELOAD_EVERY", default_value_t = ServeOptions::DEFAULT_RELOAD_EVERY.into())]
    pub(crate) reload_every: humantime::Duration,
}

impl ServeFlags {
    pub(crate) fn options(&self, redis_url: &str, prefix: &str, tokens: PathBuf) -> ServeOptions {
        let api = ApiConfig {
            rate_per_second: NonZeroU32::new(self.rate_limit),
            burst: NonZeroU32::new(self.rate_burst).unwrap_or(NonZeroU32::MIN),
            live_per_token: self.live_per_token,
            cost_per_second: NonZeroU32::new(self.cost_limit),
            cost_burst: NonZeroU32::new(self.cost_burst).unwrap_or(NonZeroU32::MIN),
            ..ApiConfig::default()
        };
        let mut speed = SpeedConfig::new(redis_url);
        speed.prefix = prefix.to_owned();
        speed.timeout = self.speed_timeout.into();
        ServeOptions {
            api,
            speed,
            tokens,
            reload_every: self.reload_every.into(),
            http: telemetry::http::Limits::default(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreFlag,
    /// Redis URL of the speed layer: redis://host:port/, or
    /// redis+cluster://host:port,host:port,... for a Redis Cluster.
    #[arg(long, env = "VIEWCOUNT_REDIS_URL")]
    redis_url: String,
    /// Prefix of the speed layer's Redis keys.
    #[arg(long, env = "VIEWCOUNT_REDIS_PREFIX", default_value = speed::defaults::KEY_PREFIX)]
    redis_prefix: String,
    /// The tokens file (create tokens with `viewcount token create`).
    #[arg(long, env = "VIEWCOUNT_TOKENS")]
    tokens: PathBuf,
    /// HTTP listen address.
    #[arg(long, env = "VIEWCOUNT_LISTEN", default_value = crate::util::DEFAULT_LISTEN)]
    listen: String,
    /// A rate card for creators' estimated earnings (statements never use it).
    #[arg(long, env = "VIEWCOUNT_RATES")]
    rates: Option<PathBuf>,
    #[command(flatten)]
    flags: ServeFlags,
    #[command(flatten)]
    http: HttpFlags,
}

/// Reads and checks a rate card for serving's estimates.
pub(crate) fn rate_card(
    path: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<billing::RateCard>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the rate card {}", path.display()))?;
    let card = billing::RateCard::parse(&bytes).with_context(|| path.display().to_string())?;
    Ok(std::sync::Arc::new(card))
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let store = store::open(&a.store.url()).context("opening the object store")?;
    let listener = bind(&a.listen).await?;
    let mut options = a.flags.options(&a.redis_url, &a.redis_prefix, a.tokens);
    options.api.rates = a.rates.as_deref().map(rate_card).transpose()?;
    options.http = a.http.limits();
    serving::service::run(listener, store, options, shutdown_signal()).await?;
    Ok(())
}
