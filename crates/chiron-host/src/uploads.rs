//! Resumable dataset uploads: a container arrives in parts, each stored as an object of its
//! own as it arrives, so a broken connection or a host killed mid-upload loses at most the
//! part in flight, and the owner's client carries on from the stored offset.
//!
//! An upload `<id>` is `uploads/<id>/session.json` (its principal, declared length and start
//! time) and `uploads/<id>/<offset>.part` objects, each written in one atomic put. When the
//! parts reach the declared length the host checks the container's header and makes the parts
//! the dataset (the upload's id becomes the dataset's) without copying them: a lone part is
//! moved to `datasets/<id>.bin`, several are listed in `datasets/<id>.parts.json`
//! ([`store::DatasetParts`]) and read in order. Then the session goes. If the host dies
//! before that, the parts are still there, and the next status request or start completes
//! the upload again. Uploads older than the expiry are deleted at start and by a
//! sweep while the host runs; the owner may delete one sooner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use chiron_proto::api::{DatasetCreated, UploadStatus};
use chiron_proto::dataset::DatasetHeader;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::{info, warn};

use crate::ids::DatasetId;
use crate::limits::{Held, Pool, Refusal};
use crate::store::{self, Store, StoreError};

/// Largest part one request may carry.
pub const PART_LIMIT: usize = 16 << 20;
/// Smallest part but the last: it bounds the objects an upload leaves in the store.
pub const MIN_PART: usize = 64 << 10;
/// Bytes a first part must carry (or the whole container, if shorter) so that the header can
/// be checked before anything is stored.
pub const HEADER_PREFIX: usize = 8 << 10;

/// Why an upload request failed.
#[derive(Debug, Error)]
pub enum UploadError {
    /// No such upload for this principal (or it expired, or finished long ago).
    #[error("no upload {0}; open one with POST /v1/uploads")]
    Unknown(DatasetId),
    /// The part does not start where the stored bytes end.
    #[error(
        "this part starts at byte {sent}, but upload {id} holds {offset} bytes: send the part \
         that starts at {offset}"
    )]
    WrongOffset {
        /// The upload.
        id: DatasetId,
        /// Where the part claimed to start.
        sent: u64,
        /// Where it must start.
        offset: u64,
    },
    /// The part runs past the declared length.
    #[error("the part ends at byte {end}, past the declared length of {length}")]
    TooLong {
        /// Where it would end.
        end: u64,
        /// The declared length.
        length: u64,
    },
    /// A part too small, or a first part too short to hold the header.
    #[error("{0}")]
    BadPart(&'static str),
    /// The container's header is not valid, or does not match the declared length.
    #[error("not a valid encrypted dataset container ({0}); create one with the owner client")]
    BadContainer(String),
    /// The declared length is above the host's limit.
    #[error(
        "the dataset container would be {length} bytes, above this host's limit of {limit} \
         bytes (`max-dataset-bytes`)"
    )]
    TooLarge {
        /// The declared length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// A limit refuses another upload.
    #[error(transparent)]
    Limit(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The part's body broke off before its end.
    #[error("the part was cut off; ask where the upload stands and send from there")]
    Interrupted,
    /// The task assembling the dataset ended abnormally.
    #[error("assembling the dataset failed; ask where the upload stands and retry")]
    Internal,
}

/// An upload's stored description.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session {
    principal: String,
    length: u64,
    /// Seconds since the Unix epoch when it was opened.
    opened: u64,
}

/// An open upload, as the host holds it.
struct Open {
    principal: String,
    length: u64,
    /// When it was opened, seconds since the Unix epoch.
    opened: u64,
    /// One request at a time per upload; it holds the bytes stored, once known (read from
    /// the store's listing the first time after a start).
    stored: Arc<Mutex<Option<u64>>>,
    /// Its place under the limits, given back when it completes or expires.
    _held: Option<Held>,
}

/// The open uploads.
pub struct Uploads {
    store: Store,
    limit: u64,
    expiry: Duration,
    open: StdMutex<HashMap<DatasetId, Open>>,
    pool: Arc<Pool>,
}

fn session_path(id: &DatasetId) -> Path {
    Path::from(format!("uploads/{id}/session.json"))
}

fn part_path(id: &DatasetId, offset: u64) -> Path {
    Path::from(format!("uploads/{id}/{offset:020}.part"))
}

fn upload_prefix(id: &DatasetId) -> Path {
    Path::from(format!("uploads/{id}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Uploads {
    /// Loads the uploads a previous host left open, deleting those older than `expiry`.
    /// Each counts against `pool` again (over the limit if it must: they were accepted).
    pub async fn load(
        store: Store,
        limit: u64,
        expiry: Duration,
        pool: Arc<Pool>,
    ) -> Result<Self, StoreError> {
        let uploads = Self {
            store,
            limit,
            expiry,
            open: StdMutex::new(HashMap::new()),
            pool,
        };
        let mut ids = Vec::new();
        for path in uploads.store.list(&Path::from("uploads")).await? {
            let mut parts = path.parts();
            let (Some(_), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if name.as_ref() == "session.json"
                && let Ok(id) = DatasetId::parse(id.as_ref())
            {
                ids.push(id);
            }
        }
        for id in ids {
            let session: Session = match uploads.store.get_json(&session_path(&id)).await {
                Ok(Some(session)) => session,
                Ok(None) => continue,
                Err(e) => {
                    warn!("upload {id}: unreadable session, deleting it: {e}");
                    uploads.delete(&id).await?;
                    continue;
                }
            };
            if now().saturating_sub(session.opened) > expiry.as_secs() {
                info!("upload {id} expired; deleting its parts");
                uploads.delete(&id).await?;
                continue;
            }
            let held = uploads.pool.take(&session.principal, 1).ok();
            uploads.insert(&id, &session, held);
            // One the host completed just before it stopped only needs closing.
            if uploads.store.dataset(&id).await?.is_some() {
                uploads.close(&id).await?;
                continue;
            }
            // One that was complete when the host stopped is assembled now.
            let offset = uploads.offset(&id).await?;
            if offset == session.length
                && let Err(e) = uploads.assemble(&id, &session.principal).await
            {
                warn!("upload {id}: assembling after restart failed: {e}");
            }
        }
        Ok(uploads)
    }

    /// Deletes uploads older than the expiry, a few times per expiry, for as long as `self`
    /// lives.
    pub fn expire_old(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = (self.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(this) = weak.upgrade() else { break };
                let expiry = this.expiry.as_secs();
                let old: Vec<(DatasetId, Arc<Mutex<Option<u64>>>)> = this
                    .open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .filter(|(_, open)| now().saturating_sub(open.opened) > expiry)
                    .map(|(id, open)| (id.clone(), Arc::clone(&open.stored)))
                    .collect();
                for (id, stored) in old {
                    // One in use is left to its request.
                    let Ok(_one) = stored.try_lock() else {
                        continue;
                    };
                    info!("upload {id} expired; deleting its parts");
                    if let Err(e) = this.delete(&id).await {
                        warn!("upload {id}: deleting it failed: {e}");
                    }
                }
            }
        });
    }

    fn insert(&self, id: &DatasetId, session: &Session, held: Option<Held>) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.clone(),
                Open {
                    principal: session.principal.clone(),
                    length: session.length,
                    opened: session.opened,
                    stored: Arc::new(Mutex::new(None)),
                    _held: held,
                },
            );
    }

    /// Opens an upload of `length` bytes for `principal`.
    pub async fn create(&self, principal: &str, length: u64) -> Result<UploadStatus, UploadError> {
        if length > self.limit {
            return Err(UploadError::TooLarge {
                length,
                limit: self.limit,
            });
        }
        if length == 0 {
            return Err(UploadError::BadPart("a dataset container is never empty"));
        }
        let held = self.pool.take(principal, 1)?;
        let id = DatasetId::random();
        let session = Session {
            principal: principal.to_owned(),
            length,
            opened: now(),
        };
        self.store.put_json(&session_path(&id), &session).await?;
        self.insert(&id, &session, Some(held));
        info!("upload {id} opened");
        Ok(UploadStatus {
            upload_id: id.to_string(),
            length,
            offset: 0,
            dataset: None,
        })
    }

    /// Whether `principal` opened upload `id` and it is still open: a job may be created on
    /// it, so that the owner attests the job's enclave before sending the dataset.
    pub fn is_open(&self, principal: &str, id: &DatasetId) -> bool {
        self.find(principal, id).is_some()
    }

    /// The upload `id` if `principal` opened it and it is still open: its lock (holding the
    /// bytes stored) and declared length.
    fn find(&self, principal: &str, id: &DatasetId) -> Option<(Arc<Mutex<Option<u64>>>, u64)> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(id)
            .filter(|o| o.principal == principal)
            .map(|o| (Arc::clone(&o.stored), o.length))
    }

    /// Locks upload `id` of `principal`: `None` if it is not open (any more: it may have
    /// completed while this request waited for the lock).
    async fn lock(
        &self,
        principal: &str,
        id: &DatasetId,
    ) -> Result<Option<(OwnedMutexGuard<Option<u64>>, u64, u64)>, StoreError> {
        let Some((lock, length)) = self.find(principal, id) else {
            return Ok(None);
        };
        let mut guard = lock.lock_owned().await;
        if self.find(principal, id).is_none() {
            return Ok(None);
        }
        let stored = match *guard {
            Some(stored) => stored,
            None => {
                let stored = self.offset(id).await?;
                *guard = Some(stored);
                stored
            }
        };
        Ok(Some((guard, length, stored)))
    }

    /// Assembles a complete upload in a task of its own (holding the upload's lock), so that
    /// a client that disconnects cannot cut it short.
    async fn complete(
        self: &Arc<Self>,
        guard: OwnedMutexGuard<Option<u64>>,
        principal: &str,
        id: &DatasetId,
    ) -> Result<DatasetCreated, UploadError> {
        let (this, principal, id) = (Arc::clone(self), principal.to_owned(), id.clone());
        tokio::spawn(async move {
            let assembled = this.assemble(&id, &principal).await;
            drop(guard);
            assembled
        })
        .await
        .map_err(|_| UploadError::Internal)?
    }

    /// Deletes upload `id` of `principal` before it completes.
    pub async fn cancel(&self, principal: &str, id: &DatasetId) -> Result<(), UploadError> {
        let Some((_guard, ..)) = self.lock(principal, id).await? else {
            return Err(UploadError::Unknown(id.clone()));
        };
        self.delete(id).await?;
        info!("upload {id} deleted by its owner");
        Ok(())
    }

    /// Bytes stored: the parts that follow each other from 0.
    async fn offset(&self, id: &DatasetId) -> Result<u64, StoreError> {
        Ok(self
            .parts(id)
            .await?
            .last()
            .map_or(0, |(start, len)| start + len))
    }

    /// The stored parts that follow each other from 0, as `(start, length)`.
    async fn parts(&self, id: &DatasetId) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut found: Vec<(u64, Path)> = Vec::new();
        for path in self.store.list(&upload_prefix(id)).await? {
            let Some(start) = path
                .filename()
                .and_then(|name| name.strip_suffix(".part"))
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((start, path));
        }
        found.sort_by_key(|(start, _)| *start);
        let mut parts = Vec::new();
        let mut next = 0u64;
        for (start, path) in found {
            if start != next {
                break;
            }
            let Some(len) = self.store.size(&path).await? else {
                break;
            };
            parts.push((start, len));
            next = start + len;
        }
        Ok(parts)
    }

    /// Where upload `id` of `principal` stands; assembles it if all its parts are stored.
    pub async fn status(
        self: &Arc<Self>,
        principal: &str,
        id: &DatasetId,
    ) -> Result<UploadStatus, UploadError> {
        let Some((guard, length, offset)) = self.lock(principal, id).await? else {
            return self.finished(principal, id).await;
        };
        self.stands(guard, principal, id, length, offset).await
    }

    /// The answer for an open upload holding `offset` of its `length` bytes, completing it
    /// first when they are all there.
    async fn stands(
        self: &Arc<Self>,
        guard: OwnedMutexGuard<Option<u64>>,
        principal: &str,
        id: &DatasetId,
        length: u64,
        offset: u64,
    ) -> Result<UploadStatus, UploadError> {
        let dataset = if offset == length {
            Some(self.complete(guard, principal, id).await?)
        } else {
            None
        };
        Ok(UploadStatus {
            upload_id: id.to_string(),
            length,
            offset,
            dataset,
        })
    }

    /// An upload that is no longer open: complete if its dataset exists and is the caller's.
    async fn finished(&self, principal: &str, id: &DatasetId) -> Result<UploadStatus, UploadError> {
        if !store::dataset_owned_by(&self.store, id, principal).await? {
            return Err(UploadError::Unknown(id.clone()));
        }
        let Some(stored) = self.store.dataset(id).await? else {
            return Err(UploadError::Unknown(id.clone()));
        };
        let length = stored.size();
        Ok(UploadStatus {
            upload_id: id.to_string(),
            length,
            offset: length,
            dataset: Some(self.created(id, &stored).await?),
        })
    }

    /// What the upload of a stored dataset answers.
    async fn created(
        &self,
        id: &DatasetId,
        stored: &store::StoredDataset,
    ) -> Result<DatasetCreated, UploadError> {
        let head = self
            .store
            .dataset_head(stored, HEADER_PREFIX as u64)
            .await?;
        let header = chiron_crypto::read_dataset_header(&head)
            .map_err(|e| UploadError::BadContainer(e.to_string()))?;
        Ok(DatasetCreated {
            dataset_id: id.to_string(),
            header,
        })
    }

    /// Stores the part of upload `id` that starts at `offset`; the last part completes it.
    pub async fn put_part<S, E>(
        self: &Arc<Self>,
        principal: &str,
        id: &DatasetId,
        offset: u64,
        part: S,
    ) -> Result<UploadStatus, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let Some((mut guard, length, stored)) = self.lock(principal, id).await? else {
            // Completed already (its last part's answer may have been lost): say so.
            return self.finished(principal, id).await;
        };
        if offset != stored {
            return Err(UploadError::WrongOffset {
                id: id.clone(),
                sent: offset,
                offset: stored,
            });
        }
        let end = self.store_part(id, offset, length, part).await?;
        *guard = Some(end);
        self.stands(guard, principal, id, length, end).await
    }

    /// Streams a part into its object as it arrives (a first part's header is checked
    /// before anything is written); the object appears whole or not at all. Returns where
    /// the part ends.
    async fn store_part<S, E>(
        &self,
        id: &DatasetId,
        offset: u64,
        length: u64,
        mut part: S,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut received = Vec::new();
        let mut total = 0u64;
        let check = |total: u64| {
            if offset + total > length {
                Err(UploadError::TooLong {
                    end: offset + total,
                    length,
                })
            } else if total > PART_LIMIT as u64 {
                Err(UploadError::BadPart("a part is at most 16 MiB"))
            } else {
                Ok(())
            }
        };
        // A first part's header, before anything is stored.
        if offset == 0 {
            let needed = HEADER_PREFIX.min(usize::try_from(length).unwrap_or(usize::MAX));
            let mut prefix = BytesMut::new();
            while prefix.len() < needed {
                match part.next().await {
                    Some(Ok(chunk)) => prefix.extend_from_slice(&chunk),
                    Some(Err(_)) => return Err(UploadError::Interrupted),
                    None => break,
                }
            }
            total = prefix.len() as u64;
            check(total)?;
            check_header(&prefix, length)?;
            received.push(prefix.freeze());
        }
        let mut writer = self.store.writer(&part_path(id, offset)).await?;
        for chunk in received {
            writer.put(chunk);
        }
        while let Some(chunk) = part.next().await {
            let Ok(chunk) = chunk else {
                let _ = writer.abort().await;
                return Err(UploadError::Interrupted);
            };
            total += chunk.len() as u64;
            if let Err(e) = check(total) {
                let _ = writer.abort().await;
                return Err(e);
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(StoreError::from(e).into());
            }
            writer.put(chunk);
        }
        let end = offset + total;
        if total == 0 || (total < MIN_PART as u64 && end != length) {
            let _ = writer.abort().await;
            return Err(UploadError::BadPart(
                "every part but the last must be at least 64 KiB",
            ));
        }
        writer.finish().await.map_err(StoreError::from)?;
        Ok(end)
    }

    /// Makes the complete upload's parts the dataset: records its owner, then moves a lone
    /// part to the dataset object, or lists several in the dataset's manifest (copying
    /// nothing), and closes the upload. Done again after a crash, it finds the dataset made.
    async fn assemble(
        &self,
        id: &DatasetId,
        principal: &str,
    ) -> Result<DatasetCreated, UploadError> {
        if let Some(stored) = self.store.dataset(id).await? {
            self.close(id).await?;
            return self.created(id, &stored).await;
        }
        let parts = self.parts(id).await?;
        if parts.first().map(|(start, _)| *start) != Some(0) {
            return Err(UploadError::Unknown(id.clone()));
        }
        let Some(head) = self
            .store
            .get_head(&part_path(id, 0), HEADER_PREFIX as u64)
            .await?
        else {
            return Err(UploadError::Unknown(id.clone()));
        };
        let header = chiron_crypto::read_dataset_header(&head)
            .map_err(|e| UploadError::BadContainer(e.to_string()))?;
        let owner = store::DatasetOwner {
            principal: principal.to_owned(),
        };
        self.store
            .put_json(&store::dataset_owner_path(id), &owner)
            .await?;
        if let [(start, _)] = parts.as_slice() {
            self.store
                .rename(&part_path(id, *start), &store::dataset_path(id))
                .await?;
        } else {
            let manifest = store::DatasetParts {
                parts: parts
                    .iter()
                    .map(|(start, len)| (part_path(id, *start).to_string(), *len))
                    .collect(),
            };
            self.store
                .put_json(&store::dataset_parts_path(id), &manifest)
                .await?;
        }
        self.close(id).await?;
        info!("upload {id} complete; dataset {id} stored");
        Ok(DatasetCreated {
            dataset_id: id.to_string(),
            header,
        })
    }

    /// Ends a completed upload: its session goes, its parts stay as the dataset's.
    async fn close(&self, id: &DatasetId) -> Result<(), StoreError> {
        self.store.delete(&session_path(id)).await?;
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }

    /// Deletes an upload's session and parts, and forgets it.
    async fn delete(&self, id: &DatasetId) -> Result<(), StoreError> {
        for path in self.store.list(&upload_prefix(id)).await? {
            self.store.delete(&path).await?;
        }
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(())
    }
}

/// Checks that a first part holds a valid header for a container of `length` bytes.
pub fn check_header(first: &[u8], length: u64) -> Result<DatasetHeader, UploadError> {
    if first.len() < HEADER_PREFIX.min(usize::try_from(length).unwrap_or(usize::MAX)) {
        return Err(UploadError::BadPart(
            "the first part must hold the container's first 8 KiB (or all of it)",
        ));
    }
    let header = chiron_crypto::read_dataset_header(first)
        .map_err(|e| UploadError::BadContainer(e.to_string()))?;
    let expected = chiron_crypto::dataset::container_len(&header)
        .map_err(|e| UploadError::BadContainer(e.to_string()))?;
    if expected != length {
        return Err(UploadError::BadContainer(format!(
            "its header implies {expected} bytes, not the declared {length}"
        )));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chiron_crypto::DataKey;
    use chiron_proto::dataset::{DatasetKind, ElementEncoding};
    use futures::TryStreamExt;

    fn container(examples: u32) -> Vec<u8> {
        let header = DatasetHeader {
            kind: DatasetKind::Tabular,
            dims: vec![4],
            encoding: ElementEncoding::F32,
            classes: 3,
            train_count: examples,
            valid_count: 0,
        };
        let len = usize::try_from(header.plaintext_len().expect("len")).expect("fits");
        let body: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
        let mut out = Vec::new();
        chiron_crypto::encrypt_dataset(&DataKey::generate(), &header, body.as_slice(), &mut out)
            .expect("encrypt");
        out
    }

    /// A part's body as one chunk.
    fn once(bytes: &[u8]) -> futures::stream::Iter<std::vec::IntoIter<Result<Bytes, ()>>> {
        futures::stream::iter(vec![Ok(Bytes::copy_from_slice(bytes))])
    }

    fn read_back(parts: Vec<Bytes>) -> Vec<u8> {
        parts.concat()
    }

    async fn uploads(dir: &std::path::Path, limit: u64) -> Uploads {
        let store = Store::open_local(dir).expect("store");
        let pool = Pool::new(
            "uploads",
            (8, "max-uploads"),
            (2, "max-uploads-per-principal"),
            "",
        );
        Uploads::load(store, limit, Duration::from_secs(3600), pool)
            .await
            .expect("load")
    }

    #[tokio::test]
    async fn parts_resume_across_a_restart_and_assemble_the_exact_container() {
        let dir = tempfile::tempdir().expect("dir");
        let bytes = container(8000);
        let length = bytes.len() as u64;
        let first = Arc::new(uploads(dir.path(), 1 << 30).await);
        let opened = first.create("alice", length).await.expect("open");
        let id = DatasetId::parse(&opened.upload_id).expect("id");
        let cut = MIN_PART;
        first
            .put_part("alice", &id, 0, once(&bytes[..cut]))
            .await
            .expect("first part");
        // Another principal cannot see or add to it.
        assert!(matches!(
            first.status("bob", &id).await,
            Err(UploadError::Unknown(_))
        ));
        drop(first);

        // A new host finds it where it stood.
        let second = Arc::new(uploads(dir.path(), 1 << 30).await);
        let status = second.status("alice", &id).await.expect("status");
        assert_eq!((status.offset, status.length), (cut as u64, length));
        assert!(matches!(
            second
                .put_part("alice", &id, 0, once(&bytes[..cut]))
                .await,
            Err(UploadError::WrongOffset { offset, .. }) if offset == cut as u64
        ));
        let done = second
            .put_part("alice", &id, cut as u64, once(&bytes[cut..]))
            .await
            .expect("last part");
        let dataset = done.dataset.expect("complete");
        assert_eq!(dataset.dataset_id, id.to_string());
        // Two parts: the dataset lists them, and reads back as the container.
        let store = Store::open_local(dir.path()).expect("store");
        let dataset = store.dataset(&id).await.expect("read").expect("stored");
        assert_eq!(dataset.size(), length);
        let read: Vec<Bytes> = store
            .dataset_stream(&dataset)
            .bytes
            .try_collect()
            .await
            .expect("read");
        assert_eq!(read.concat(), bytes);
        let middle: Vec<Bytes> = store
            .dataset_ranges(&dataset, vec![cut as u64 - 5..cut as u64 + 5, 3..4])
            .bytes
            .try_collect()
            .await
            .expect("read");
        assert_eq!(
            read_back(middle),
            [&bytes[cut - 5..cut + 5], &bytes[3..4]].concat()
        );
        assert!(
            !dir.path()
                .join(format!("uploads/{id}/session.json"))
                .exists()
        );
        assert!(!dir.path().join(format!("datasets/{id}.bin")).exists());
        // Asking again after completion says so.
        let again = second.status("alice", &id).await.expect("status");
        assert_eq!(again.offset, length);
        assert!(again.dataset.is_some());
    }

    #[tokio::test]
    async fn bad_parts_are_refused_and_store_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let bytes = container(1000);
        let length = bytes.len() as u64;
        let uploads = Arc::new(uploads(dir.path(), 1 << 20).await);
        assert!(matches!(
            uploads.create("alice", 2 << 20).await,
            Err(UploadError::TooLarge { .. })
        ));
        let id = DatasetId::parse(
            &uploads
                .create("alice", length)
                .await
                .expect("open")
                .upload_id,
        )
        .expect("id");
        let mut junk = bytes.clone();
        junk[0] ^= 0xff;
        for (part, why) in [
            (junk[..HEADER_PREFIX].to_vec(), "tampered header"),
            (bytes[..100].to_vec(), "too short for the header"),
            (Vec::new(), "empty"),
        ] {
            let refused = uploads.put_part("alice", &id, 0, once(&part)).await;
            assert!(refused.is_err(), "{why}");
        }
        let wrong_length = uploads.create("alice", length + 1).await.expect("open");
        let other = DatasetId::parse(&wrong_length.upload_id).expect("id");
        let mislabelled = uploads.put_part("alice", &other, 0, once(&bytes)).await;
        assert!(
            matches!(mislabelled, Err(UploadError::BadContainer(_))),
            "{mislabelled:?}"
        );
        // A part cut off half way leaves nothing behind.
        let cut_off = futures::stream::iter(vec![
            Ok(Bytes::copy_from_slice(&bytes[..2 * HEADER_PREFIX])),
            Err(()),
        ]);
        assert!(matches!(
            uploads.put_part("alice", &id, 0, cut_off).await,
            Err(UploadError::Interrupted)
        ));
        assert_eq!(
            uploads.status("alice", &id).await.expect("status").offset,
            0
        );
        // A part but the last below the minimum stores nothing either.
        let short = uploads
            .put_part("alice", &id, 0, once(&bytes[..HEADER_PREFIX]))
            .await;
        assert!(matches!(short, Err(UploadError::BadPart(_))), "{short:?}");
        // The limit of two open uploads per principal holds, until one is deleted.
        assert!(matches!(
            uploads.create("alice", length).await,
            Err(UploadError::Limit(_))
        ));
        uploads.cancel("alice", &other).await.expect("deleted");
        assert!(matches!(
            uploads.status("alice", &other).await,
            Err(UploadError::Unknown(_))
        ));
        // A container in one part becomes the dataset object itself.
        let whole = uploads.create("alice", length).await.expect("room again");
        let whole = DatasetId::parse(&whole.upload_id).expect("id");
        let done = uploads
            .put_part("alice", &whole, 0, once(&bytes))
            .await
            .expect("one part");
        assert!(done.dataset.is_some());
        let stored = std::fs::read(dir.path().join(format!("datasets/{whole}.bin"))).expect("read");
        assert_eq!(stored, bytes);
    }
}
