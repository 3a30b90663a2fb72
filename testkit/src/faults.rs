//! Faults at the object store's boundary: a real store (local directory,
//! S3, memory) wrapped so that chosen operations fail, as a full disk, a
//! dropped connection or a process killed between two writes would leave
//! them. Everything else passes through to the real store untouched.
//!
//! A crash between two writes is the first write succeeding and the second
//! failing: the caller sees an error and stops, and the store holds exactly
//! what a `kill -9` at that point would have left.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Which operations a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Writes (puts, multipart uploads, copies).
    Put,
    /// Reads (gets, range reads).
    Get,
    /// Listings.
    List,
}

#[derive(Debug)]
struct Fault {
    op: Op,
    /// A path the fault hits: exactly this one, or (ending in `/`) any
    /// under it.
    path: String,
    /// Matching operations let through before the fault starts.
    skip: usize,
    /// Matching operations failed, from then on (`usize::MAX`: all).
    times: usize,
}

impl Fault {
    fn hits(&self, op: Op, path: &Path) -> bool {
        op == self.op
            && if self.path.ends_with('/') {
                path.as_ref().starts_with(&self.path)
            } else {
                path.as_ref() == self.path
            }
    }
}

/// A store whose operations fail where told; see the module.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Vec<Fault>>,
    injected: Mutex<Vec<String>>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    /// `inner`, with no fault yet.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            faults: Mutex::new(Vec::new()),
            injected: Mutex::new(Vec::new()),
        })
    }

    /// After `skip` matching operations succeed, the next `times` fail
    /// (`usize::MAX`: every one until [`Self::clear`]). `path` is an exact
    /// path, or a prefix ending in `/`.
    pub fn fail(&self, op: Op, path: &str, skip: usize, times: usize) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Fault {
                op,
                path: path.to_owned(),
                skip,
                times,
            });
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The operations failed so far (`op path`), oldest first.
    pub fn injected(&self) -> Vec<String> {
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check(&self, op: Op, path: &Path) -> Result<()> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        for f in faults.iter_mut().filter(|f| f.hits(op, path)) {
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            if f.times == 0 {
                continue;
            }
            if f.times != usize::MAX {
                f.times -= 1;
            }
            self.injected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{op:?} {path}"));
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected fault: {op:?} {path} failed").into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check(Op::Put, location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check(Op::Put, location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check(Op::Get, location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.check(Op::Get, location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let at = prefix.cloned().unwrap_or_default();
        match self.check(Op::List, &at) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.check(Op::List, &prefix.cloned().unwrap_or_default())?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check(Op::Put, to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
