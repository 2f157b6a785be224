//! The object store: ciphertext datasets, programs, sealed models and job records.
//!
//! Everything goes through `object_store` (a local directory by default). Object paths are
//! built only from parsed ids (see [`crate::ids`]), so a request cannot name a path outside
//! its own directory.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{DatasetId, JobId, ProgramId};

/// A store operation that failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The backend failed (disk full, permissions, ...).
    #[error("object store failed: {0}")]
    Backend(#[from] object_store::Error),
    /// A stored record does not decode.
    #[error("stored record {path} is corrupt: {source}")]
    Corrupt {
        /// The record's path.
        path: String,
        /// Why it does not decode.
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("record could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Where a program's wasm lives.
pub fn program_path(id: &ProgramId) -> Path {
    Path::from(format!("programs/{id}.wasm"))
}

/// Where a dataset container lives.
pub fn dataset_path(id: &DatasetId) -> Path {
    Path::from(format!("datasets/{id}.bin"))
}

/// Where a dataset uploaded in several parts lists them ([`DatasetParts`]): the parts stay
/// where the upload stored them, so that completing an upload copies nothing.
pub fn dataset_parts_path(id: &DatasetId) -> Path {
    Path::from(format!("datasets/{id}.parts.json"))
}

/// A dataset container kept as the parts of its upload.
#[derive(Debug, Serialize, Deserialize)]
pub struct DatasetParts {
    /// Each part's object and length, in order from the container's first byte.
    pub parts: Vec<(String, u64)>,
}

/// Where a stored dataset container's bytes are: one object, or its upload's parts in
/// order. Read it with [`Store::dataset_ranges`].
#[derive(Clone, Debug)]
pub struct StoredDataset {
    pieces: Vec<(Path, u64)>,
    size: u64,
}

impl StoredDataset {
    /// The container's length.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Where a dataset's owner is recorded ([`DatasetOwner`]), written before the container.
pub fn dataset_owner_path(id: &DatasetId) -> Path {
    Path::from(format!("datasets/{id}.owner.json"))
}

/// Who uploaded a dataset.
#[derive(Debug, Serialize, Deserialize)]
pub struct DatasetOwner {
    /// The principal's name.
    pub principal: String,
}

/// Whether the dataset exists and `principal` uploaded it; for anyone else it does not
/// exist.
pub async fn dataset_owned_by(
    store: &Store,
    id: &DatasetId,
    principal: &str,
) -> Result<bool, StoreError> {
    let owner: Option<DatasetOwner> = store.get_json(&dataset_owner_path(id)).await?;
    if owner.is_none_or(|owner| owner.principal.is_empty() || owner.principal != principal) {
        return Ok(false);
    }
    Ok(store.dataset(id).await?.is_some())
}

/// Where a job's sealed model lives.
pub fn model_path(id: &JobId) -> Path {
    Path::from(format!("models/{id}.sealed"))
}

/// Where a distributed job's latest parameter-server checkpoint lives (sealed to the
/// runtime; each replaces the one before).
pub fn checkpoint_path(id: &JobId) -> Path {
    Path::from(format!("checkpoints/{id}.sealed"))
}

/// Where a job's model's sealed query counter lives (the latest state the query enclave
/// asked the host to store; see `HostFrame::LoadModel`).
pub fn counter_path(id: &JobId) -> Path {
    Path::from(format!("models/{id}.counter"))
}

/// Where a job's record lives.
pub fn job_path(id: &JobId) -> Path {
    Path::from(format!("jobs/{id}.json"))
}

/// Where event `seq` of a job's stream lives (its ciphertext, as the enclave sent it).
pub fn event_path(id: &JobId, seq: u64) -> Path {
    Path::from(format!("events/{id}/{seq:020}.bin"))
}

/// The prefix under which a job's events live.
pub fn events_of(id: &JobId) -> Path {
    Path::from(format!("events/{id}"))
}

/// The prefix under which job records live.
pub fn jobs_prefix() -> Path {
    Path::from("jobs")
}

/// A handle on the object store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
}

/// A stored object opened for streaming.
pub struct ObjectStream {
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes, in order.
    pub bytes: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

impl Store {
    /// Opens (creating it if needed) a store rooted at a local directory.
    pub fn open_local(dir: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let local = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(local)))
    }

    /// Opens the store a URL names, through `object_store`'s own builders: `file:///path`
    /// (created if needed), or `s3://bucket[/prefix]` with `options` (`KEY=VALUE`, the
    /// builder's configuration keys) over the `AWS_*` environment variables.
    pub fn open_url(url: &str, options: &[String]) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let parsed = url::Url::parse(url).context("not a URL")?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("a file URL must name an absolute path"))?;
                Self::open_local(&dir)
            }
            "s3" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                for option in options {
                    let (key, value) = option
                        .split_once('=')
                        .with_context(|| format!("`{option}` is not KEY=VALUE"))?;
                    let key = key
                        .parse::<object_store::aws::AmazonS3ConfigKey>()
                        .with_context(|| format!("`{key}` is not an S3 store option"))?;
                    builder = builder.with_config(key, value);
                }
                let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
                // `s3://bucket/prefix`: everything under the prefix.
                let prefix = parsed.path().trim_matches('/');
                Ok(Self::new(if prefix.is_empty() {
                    store
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
                }))
            }
            other => anyhow::bail!("no object store for `{other}://` (file:// or s3://)"),
        }
    }

    /// Wraps any object store backend.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    /// Writes an object in one go (atomically on the local backend).
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Reads a whole object, `None` when it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>, StoreError> {
        match self.inner.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A stored dataset container, `None` when there is none.
    pub async fn dataset(&self, id: &DatasetId) -> Result<Option<StoredDataset>, StoreError> {
        let whole = dataset_path(id);
        if let Some(size) = self.size(&whole).await? {
            return Ok(Some(StoredDataset {
                pieces: vec![(whole, size)],
                size,
            }));
        }
        let Some(manifest) = self
            .get_json::<DatasetParts>(&dataset_parts_path(id))
            .await?
        else {
            return Ok(None);
        };
        let pieces: Vec<(Path, u64)> = manifest
            .parts
            .into_iter()
            .map(|(path, len)| (Path::from(path), len))
            .collect();
        let size = pieces.iter().map(|(_, len)| len).sum();
        Ok(Some(StoredDataset { pieces, size }))
    }

    /// Streams ranges of a dataset container (each within it), back to back, across its
    /// pieces. Nothing is read until the stream is: a missing piece is the stream's first
    /// error.
    pub fn dataset_ranges(&self, dataset: &StoredDataset, ranges: Vec<Range<u64>>) -> ObjectStream {
        let size = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        let mut reads = Vec::new();
        for range in ranges {
            let mut at = 0u64;
            for (path, len) in &dataset.pieces {
                let (start, end) = (range.start.max(at), range.end.min(at + len));
                if start < end {
                    reads.push((path.clone(), start - at..end - at));
                }
                at += len;
            }
        }
        let inner = Arc::clone(&self.inner);
        let bytes = futures::stream::iter(reads)
            .then(move |(path, range)| {
                let inner = Arc::clone(&inner);
                async move {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(range)),
                        ..GetOptions::default()
                    };
                    inner
                        .get_opts(&path, options)
                        .await
                        .map(|r| r.into_stream())
                }
            })
            .try_flatten()
            .boxed();
        ObjectStream { size, bytes }
    }

    /// An object's first `len` bytes (all of it, if shorter), `None` when it does not exist.
    pub async fn get_head(&self, path: &Path, len: u64) -> Result<Option<Bytes>, StoreError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..len)),
            ..GetOptions::default()
        };
        match self.inner.get_opts(path, options).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A whole dataset container, streamed.
    pub fn dataset_stream(&self, dataset: &StoredDataset) -> ObjectStream {
        self.dataset_ranges(dataset, std::iter::once(0..dataset.size).collect())
    }

    /// A dataset container's first `len` bytes (all of it, if shorter).
    pub async fn dataset_head(
        &self,
        dataset: &StoredDataset,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        let parts: Vec<Bytes> = self
            .dataset_ranges(dataset, std::iter::once(0..len.min(dataset.size)).collect())
            .bytes
            .try_collect()
            .await?;
        Ok(parts.concat().into())
    }

    /// Moves an object (on the local backend, a rename).
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        self.inner.rename(from, to).await?;
        Ok(())
    }

    /// An object's size, `None` when it does not exist.
    pub async fn size(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        match self.inner.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &Path) -> Result<bool, StoreError> {
        match self.inner.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a streaming upload; nothing is visible at `path` until it is finished.
    pub async fn writer(&self, path: &Path) -> Result<WriteMultipart, StoreError> {
        Ok(WriteMultipart::new(self.inner.put_multipart(path).await?))
    }

    /// Writes a JSON record.
    pub async fn put_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(StoreError::Encode)?;
        self.put(path, Bytes::from(bytes)).await
    }

    /// Reads a JSON record, `None` when it does not exist.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.get(path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: path.to_string(),
                source,
            })
    }

    /// Deletes an object; deleting one that does not exist is not an error.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Paths of all objects under a prefix.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>, StoreError> {
        let metas: Vec<_> = self.inner.list(Some(prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|meta| meta.location).collect())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        n: u32,
    }

    #[tokio::test]
    async fn local_store_round_trips_objects_and_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_local(&dir.path().join("objects")).expect("open");
        let id = JobId::random();

        assert_eq!(store.get(&model_path(&id)).await.expect("get"), None);
        assert!(!store.exists(&model_path(&id)).await.expect("head"));
        store
            .put(&model_path(&id), Bytes::from_static(b"sealed"))
            .await
            .expect("put");
        assert!(store.exists(&model_path(&id)).await.expect("head"));
        assert_eq!(
            store.get(&model_path(&id)).await.expect("get").as_deref(),
            Some(&b"sealed"[..])
        );
        assert!(
            dir.path()
                .join(format!("objects/models/{id}.sealed"))
                .is_file()
        );

        store
            .put_json(&job_path(&id), &Rec { n: 7 })
            .await
            .expect("put json");
        let back: Option<Rec> = store.get_json(&job_path(&id)).await.expect("get json");
        assert_eq!(back, Some(Rec { n: 7 }));
        assert_eq!(
            store.list(&jobs_prefix()).await.expect("list"),
            vec![job_path(&id)]
        );

        store
            .put(&job_path(&id), Bytes::from_static(b"{not json"))
            .await
            .expect("put");
        assert!(matches!(
            store.get_json::<Rec>(&job_path(&id)).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn streaming_upload_appears_only_when_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_local(dir.path()).expect("open");
        let id = DatasetId::random();
        let path = dataset_path(&id);
        let mut writer = store.writer(&path).await.expect("writer");
        writer.write(&[1u8; 1000]);
        writer.put(Bytes::from(vec![2u8; 10]));
        assert!(!store.exists(&path).await.expect("head"));
        writer.finish().await.expect("finish");
        let dataset = store.dataset(&id).await.expect("get").expect("exists");
        let stream = store.dataset_stream(&dataset);
        assert_eq!(stream.size, 1010);
        let parts: Vec<Bytes> = stream.bytes.try_collect().await.expect("read");
        assert_eq!(parts.concat().len(), 1010);

        let aborted = store
            .writer(&dataset_path(&DatasetId::random()))
            .await
            .expect("writer");
        aborted.abort().await.expect("abort");
        assert_eq!(
            store
                .list(&Path::from("datasets"))
                .await
                .expect("list")
                .len(),
            1
        );
    }
}
