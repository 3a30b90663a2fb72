//! DataFusion over the store: the raw files as a table, for the SQL engine
//! (on this machine or on a Ballista cluster) and its evidence queries.

use std::sync::Arc;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use object_store::ObjectStore;
use object_store::path::Path;

use crate::{Error, Result};
use batch::memory::Memory;

/// The URL DataFusion reads the store under, in this process and in every
/// process of a Ballista cluster (each registers its own handle on the same
/// store there).
pub const DATAFUSION_URL: &str = "vc://store/";

/// [`DATAFUSION_URL`] parsed.
pub fn store_url() -> url::Url {
    url::Url::parse(DATAFUSION_URL).expect("DATAFUSION_URL is a valid URL")
}

/// A DataFusion session (one partition per core) over `store`, with the raw
/// files at `paths` as the table `raw` and the rules' functions registered.
/// Its operators share `memory.limit` (DataFusion's fair spill pool) and
/// spill to `memory.spill_dir`; one that cannot spill and does not fit fails
/// the query with DataFusion's "resources exhausted", naming the limit.
pub async fn raw_session<'a>(
    store: Arc<dyn ObjectStore>,
    paths: impl IntoIterator<Item = &'a str>,
    memory: &Memory,
) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            usize::try_from(memory.limit).unwrap_or(usize::MAX),
        )))
        .with_temp_file_path(memory.spill_dir.clone().unwrap_or_else(std::env::temp_dir))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    register_raw(&ctx, store, paths).await?;
    Ok(ctx)
}

/// Registers `store` under [`DATAFUSION_URL`], the raw files at `paths` as
/// the table `raw` (the raw archive schema) and the rules' functions
/// ([`crate::functions::register_functions`]) with `ctx`.
pub async fn register_raw<'a>(
    ctx: &SessionContext,
    store: Arc<dyn ObjectStore>,
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    ctx.register_object_store(&store_url(), store);
    let urls: Vec<String> = paths
        .into_iter()
        .map(|p| format!("{DATAFUSION_URL}{}", Path::from(p)))
        .collect();
    if urls.is_empty() {
        return Err(Error::Bug("a raw session over no files".into()));
    }
    let raw = ctx
        .read_parquet(
            urls,
            ParquetReadOptions::default().schema(&schemas::raw_schema()),
        )
        .await?;
    ctx.register_table("raw", raw.into_view())?;
    crate::functions::register_functions(&mut ctx.clone())?;
    Ok(())
}
