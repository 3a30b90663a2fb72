//! DataFusion over the store: the raw files as a table, for the SQL engine
//! and for reconcile.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::{Error, Result};

/// The URL DataFusion reads the store under.
pub const DATAFUSION_URL: &str = "vc://store/";

/// A DataFusion session (one partition per core) over `store`, with the raw
/// files at `paths` registered as the table `raw` (the raw archive schema).
pub async fn raw_session<'a>(
    store: Arc<dyn ObjectStore>,
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<datafusion::prelude::SessionContext> {
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    let config = SessionConfig::new()
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let ctx = SessionContext::new_with_config(config);
    let url = url::Url::parse(DATAFUSION_URL).map_err(|e| Error::Bug(e.to_string()))?;
    ctx.register_object_store(&url, store);
    let urls: Vec<String> = paths
        .into_iter()
        .map(|p| format!("{DATAFUSION_URL}{}", Path::from(p)))
        .collect();
    let raw = ctx
        .read_parquet(
            urls,
            ParquetReadOptions::default().schema(&schemas::raw_schema()),
        )
        .await?;
    ctx.register_table("raw", raw.into_view())?;
    Ok(ctx)
}
