//! The object store and its layout (DESIGN §6), Hive-style so outside engines
//! read it as is:
//!
//! | path | what |
//! |---|---|
//! | `raw/dt=YYYY-MM-DD/hour=HH/p{P}-{first}-{last}.parquet` | archived events of one event-hour from one Kafka partition's offset range |
//! | `archive/meta.json` | what the archive reads: topic, partition count, Kafka cluster id, the rule set it validates with |
//! | `archive/progress/p{P}.json` | per partition: next offset to archive, and the time up to which everything received is archived |
//! | `views/run={id}/part-0.parquet` | a batch run's counts per video per hour |
//! | `filtered/run={id}/part-0.parquet` | a batch run's filtered views per video, hour and rule |
//! | `runs/{id}.json` | a run's manifest |
//! | `published/{seq}.json` | the published state: which run owns each hour, and the watermark |
//! | `CURRENT` | names the latest published state (one atomic write publishes) |
//! | `catalog/{sha256}.csv` | an imported video catalog, its bytes as given |
//! | `catalog/CURRENT` | names the catalog in force |

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Opens `file:///abs/dir` (created if missing) or `s3://bucket[/prefix]`,
/// the latter configured by the standard `AWS_*` variables of the process
/// (see [`open_with`]).
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>> {
    open_with(url, std::env::vars())
}

/// Opens `url` like [`open`], taking `AWS_*` settings from `vars` instead
/// of the process environment: `AWS_ENDPOINT` (an S3-compatible server),
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP` (`true` for an `http://`
/// endpoint), and the rest `object_store` knows.
///
/// Create-only writes (published states, ledger entries) stay create-only
/// on S3: `PutMode::Create` is sent as `If-None-Match: *`, which AWS S3,
/// MinIO and R2 honour (a store that ignores it would let two publishers
/// both win; `AWS_CONDITIONAL_PUT=disabled` makes such writes fail instead).
pub fn open_with(
    url: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Arc<dyn ObjectStore>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!(
                "store URL {url:?} names no bucket; use s3://bucket or s3://bucket/prefix"
            )));
        }
        let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in vars {
            if !key.starts_with("AWS_") {
                continue;
            }
            if let Ok(k) = key
                .to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>()
            {
                builder = builder.with_config(k, value);
            }
        }
        // The bucket comes from the URL, whatever the environment says.
        builder = builder.with_bucket_name(bucket);
        let s3 = builder.build().map_err(|e| {
            Error::Config(format!(
                "store {url:?}: {e}; set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT with AWS_ALLOW_HTTP=true for a local S3-compatible server)"
            ))
        })?;
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Ok(Arc::new(s3));
        }
        return Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(Error::Config(format!(
                "store URL {url:?} must be absolute, like file:///var/lib/viewcount"
            )));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| Error::Config(format!("cannot create store directory {path}: {e}")))?;
        let fs = LocalFileSystem::new_with_prefix(path)
            .map_err(|e| Error::Config(format!("store {url:?}: {e}")))?;
        return Ok(Arc::new(fs));
    }
    Err(Error::Config(format!(
        "store URL {url:?} is not supported; use file:///absolute/dir or s3://bucket/prefix"
    )))
}

/// `file://$PWD/data`, the default store.
pub fn default_url() -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/tmp".into());
    format!("file://{}/data", cwd.display())
}

/// Directory of one event-hour's raw files.
pub fn raw_hour_dir(hour: DateTime<Utc>) -> Path {
    Path::from(format!(
        "raw/dt={}/hour={:02}",
        hour.date_naive().format("%Y-%m-%d"),
        hour.hour()
    ))
}

/// A raw file: one event-hour, one partition, one offset range.
pub fn raw_file(hour: DateTime<Utc>, partition: i32, first: i64, last: i64) -> Path {
    raw_hour_dir(hour).join(format!("p{partition:04}-{first:020}-{last:020}.parquet"))
}

/// Parses `raw/dt=YYYY-MM-DD/hour=HH/...` back into the hour.
pub fn raw_file_hour(path: &Path) -> Option<DateTime<Utc>> {
    let mut parts = path.parts();
    if parts.next()?.as_ref() != "raw" {
        return None;
    }
    let day = parts.next()?.as_ref().strip_prefix("dt=")?.to_owned();
    let hour: u32 = parts.next()?.as_ref().strip_prefix("hour=")?.parse().ok()?;
    let d = NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(hour, 0, 0)?.and_utc())
}

/// Progress object of a partition.
pub fn progress(partition: i32) -> Path {
    Path::from(format!("archive/progress/p{partition:04}.json"))
}

/// The archive's metadata object.
pub fn archive_meta() -> Path {
    Path::from("archive/meta.json")
}

/// A run's output file.
pub fn views_file(run_id: &str) -> Path {
    Path::from(format!("views/run={run_id}/part-0.parquet"))
}

/// A run's filtered views by rule ([`crate::filtered`]).
pub fn filtered_file(run_id: &str) -> Path {
    Path::from(format!("filtered/run={run_id}/part-0.parquet"))
}

/// A run's manifest.
pub fn manifest(run_id: &str) -> Path {
    Path::from(format!("runs/{run_id}.json"))
}

/// A published state.
pub fn published(seq: u64) -> Path {
    Path::from(format!("published/{seq:010}.json"))
}

/// A catalog file, by the SHA-256 of its bytes.
pub fn catalog_file(sha256: &str) -> Path {
    Path::from(format!("catalog/{sha256}.csv"))
}

/// The pointer to the catalog in force.
pub fn catalog_current() -> Path {
    Path::from("catalog/CURRENT")
}

/// The pointer to the latest published state.
pub fn current() -> Path {
    Path::from("CURRENT")
}

/// Parquet settings fixed so the same rows give the same bytes.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_created_by(format!("viewcount {}", env!("CARGO_PKG_VERSION")))
        .set_max_row_group_row_count(Some(1_000_000))
        .build()
}

/// Encodes batches as one Parquet file.
pub fn parquet_bytes(
    schema: arrow::datatypes::SchemaRef,
    batches: &[arrow::array::RecordBatch],
) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(writer_properties()))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(Bytes::from(buf))
}

/// Column `name` of `batch`, read from the file called `file` ("the views
/// file"): it must be there with `schema`'s type for it and no nulls, else
/// an error naming the column (a file from elsewhere is refused, never a
/// panic).
pub fn checked_column<'b>(
    batch: &'b arrow::array::RecordBatch,
    schema: &arrow::datatypes::Schema,
    name: &str,
    file: &str,
) -> Result<&'b arrow::array::ArrayRef> {
    use arrow::array::Array;
    let field = schema
        .field_with_name(name)
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Corrupt(format!("{file} has no column {name:?}")))?;
    if col.data_type() != field.data_type() {
        return Err(Error::Corrupt(format!(
            "column {name:?} of {file} is {}, expected {}",
            col.data_type(),
            field.data_type()
        )));
    }
    if col.null_count() > 0 {
        return Err(Error::Corrupt(format!(
            "column {name:?} of {file} has nulls"
        )));
    }
    Ok(col)
}

/// Hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads an object that another names by its SHA-256 (`named_by`, for the
/// error), hashing it as it streams in: the bytes returned are the bytes
/// hashed, never a second read. A mismatch, or a missing object, is
/// [`Error::Corrupt`] naming the object, both hashes and what names it:
/// nothing downstream ever uses bytes that are not the ones recorded.
pub async fn get_verified(
    store: &dyn ObjectStore,
    path: &Path,
    sha256: &str,
    named_by: &str,
) -> Result<Bytes> {
    use futures::TryStreamExt;
    let got = match store.get(path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::Corrupt(format!(
                "{path}, which {named_by} names, is missing from the store; restore it, or rerun what wrote it"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut hasher = Sha256::new();
    let mut bytes = bytes::BytesMut::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.try_next().await? {
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    let found = hex::encode(hasher.finalize());
    if found != sha256 {
        return Err(Error::Corrupt(format!(
            "{path} has SHA-256 {found}, not the {sha256} that {named_by} records: it changed after it was written; \
             restore it, or rerun what wrote it (`viewcount batch run` over its hours)"
        )));
    }
    Ok(bytes.freeze())
}

/// [`get_verified`] of a JSON object.
pub async fn get_json_verified<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
    sha256: &str,
    named_by: &str,
) -> Result<T> {
    let bytes = get_verified(store, path, sha256, named_by).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{path} is not valid JSON for its kind: {e}")))
}

/// Writes `bytes` to `path` (whole-object put: readers never see half a file).
pub async fn put(store: &dyn ObjectStore, path: &Path, bytes: Bytes) -> Result<()> {
    store.put(path, PutPayload::from(bytes)).await?;
    Ok(())
}

/// Reads an object's bytes, `None` when absent.
pub async fn get_bytes(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>> {
    match store.get(path).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads a JSON object, `None` when absent.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<T>> {
    match store.get(path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                Error::Corrupt(format!("{path} is not valid JSON for its kind: {e}"))
            })?))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes a JSON object (pretty, trailing newline); returns the SHA-256 of
/// the bytes written, for whatever names the object.
pub async fn put_json<T: serde::Serialize>(
    store: &dyn ObjectStore,
    path: &Path,
    v: &T,
) -> Result<String> {
    let bytes = json_bytes(v)?;
    let sha = sha256(&bytes);
    put(store, path, bytes).await?;
    Ok(sha)
}

/// The bytes [`put_json`] writes.
pub fn json_bytes<T: serde::Serialize>(v: &T) -> Result<Bytes> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Corrupt(e.to_string()))?;
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_round_trip() {
        let h: DateTime<Utc> = "2026-11-21T07:00:00Z".parse().unwrap();
        let p = raw_file(h, 3, 10, 99);
        assert_eq!(
            p.as_ref(),
            "raw/dt=2026-11-21/hour=07/p0003-00000000000000000010-00000000000000000099.parquet"
        );
        assert_eq!(raw_file_hour(&p), Some(h));
        assert_eq!(raw_file_hour(&Path::from("views/x")), None);
    }
}
