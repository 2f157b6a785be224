//! Who may call the host: principals and their API tokens.
//!
//! An operator issues each owner and provider a bearer token with `chiron-host principal
//! add`. The store keeps only the token's SHA-256 (`principals/<hex>.json`), so a copy of the
//! store lets no one call the API. Tokens were chosen over client certificates because every
//! owner's secrets are already protected end to end by attestation and sealing: the token
//! only says which principal is calling, for ownership and limits, and a bearer token is what
//! the owner's client, `curl` and load balancers carry without a PKI of their own.
//!
//! The host keeps the table in memory and reloads it from the store every [`REFRESH`], and
//! at most once per [`MISS_REFRESH`] when a token is not found, so a principal added while
//! the host runs can call at once (its first request may wait for that reload) and one
//! revoked is refused within [`REFRESH`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use object_store::path::Path;
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::warn;

use crate::store::{Store, StoreError};

/// How often the host reloads the principals from the store.
pub const REFRESH: Duration = Duration::from_secs(5);
/// The shortest time between two reloads caused by unknown tokens, so that a flood of bad
/// tokens costs the store at most one listing per interval.
pub const MISS_REFRESH: Duration = Duration::from_secs(1);
/// Every token starts with this, so a leaked one is easy to recognise and scan for.
const TOKEN_PREFIX: &str = "chiron_";
/// Longest principal name.
const MAX_NAME: usize = 64;

/// What a principal may do.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Uploads datasets, runs jobs on them and queries the models.
    Owner,
    /// Registers programs.
    Provider,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Owner => "owner",
            Role::Provider => "provider",
        })
    }
}

/// A principal's stored record (keyed by its token's hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// The name the operator gave it: unique, `[a-z0-9_-]`, at most 64 characters.
    pub name: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its unique name; what jobs, datasets and models record as their owner.
    pub name: String,
    roles: Vec<Role>,
}

impl Principal {
    /// Whether it may act in `role`.
    pub fn is(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Why an admin operation or an authentication failed.
#[derive(Debug, Error)]
pub enum PrincipalError {
    /// The name does not fit the rules.
    #[error("principal names are 1 to {MAX_NAME} characters of a-z, 0-9, `-` and `_`, not `{0}`")]
    BadName(String),
    /// The name is taken, now or before.
    #[error(
        "a principal named `{0}` exists or existed: names are never reused, since what a \
         principal created stays owned by its name; pick another"
    )]
    Exists(String),
    /// No such principal.
    #[error("no principal named `{0}`")]
    Unknown(String),
    /// A principal needs a role.
    #[error("give the principal at least one role (--role owner, --role provider)")]
    NoRole,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The principals table.
pub struct Principals {
    store: Store,
    table: StdMutex<Table>,
    reload: tokio::sync::Mutex<()>,
}

struct Table {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
    loaded: Instant,
}

fn prefix() -> Path {
    Path::from("principals")
}

/// Where a revoked principal's name is kept, so that it is never given again.
fn revoked_path(name: &str) -> Path {
    Path::from(format!("revoked-principals/{name}.json"))
}

fn record_path(hash: &[u8; 32]) -> Path {
    Path::from(format!("principals/{}.json", hex::encode(hash)))
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn check_name(name: &str) -> Result<(), PrincipalError> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'));
    if fits {
        Ok(())
    } else {
        Err(PrincipalError::BadName(name.to_owned()))
    }
}

/// Every stored principal record with its token hash.
async fn read_all(store: &Store) -> Result<Vec<([u8; 32], PrincipalRecord)>, StoreError> {
    let mut out = Vec::new();
    for path in store.list(&prefix()).await? {
        let Some(stem) = path.filename().and_then(|name| name.strip_suffix(".json")) else {
            continue;
        };
        let Some(hash) = hex::decode(stem)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        else {
            warn!("skipping principal record {path}: not named by a token hash");
            continue;
        };
        match store.get_json::<PrincipalRecord>(&path).await {
            Ok(Some(record)) if check_name(&record.name).is_ok() => out.push((hash, record)),
            Ok(Some(_)) => warn!("skipping principal record {path}: malformed name"),
            Ok(None) => {}
            Err(e) => warn!("skipping principal record {path}: {e}"),
        }
    }
    Ok(out)
}

/// Issues a principal a fresh token; returns the token, which is shown once and never
/// stored.
pub async fn add(store: &Store, name: &str, roles: &[Role]) -> Result<String, PrincipalError> {
    check_name(name)?;
    if roles.is_empty() {
        return Err(PrincipalError::NoRole);
    }
    if read_all(store).await?.iter().any(|(_, r)| r.name == name)
        || store.exists(&revoked_path(name)).await?
    {
        return Err(PrincipalError::Exists(name.to_owned()));
    }
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let record = PrincipalRecord {
        name: name.to_owned(),
        roles,
    };
    store
        .put_json(&record_path(&token_hash(&token)), &record)
        .await?;
    Ok(token)
}

/// Revokes every token of the principal `name`; the name stays taken.
pub async fn revoke(store: &Store, name: &str) -> Result<(), PrincipalError> {
    let mut found = false;
    for (hash, record) in read_all(store).await? {
        if record.name == name {
            if !found {
                store.put_json(&revoked_path(name), &record).await?;
            }
            store.delete(&record_path(&hash)).await?;
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(PrincipalError::Unknown(name.to_owned()))
    }
}

/// The stored principals, by name.
pub async fn list(store: &Store) -> Result<Vec<PrincipalRecord>, PrincipalError> {
    let mut records: Vec<_> = read_all(store).await?.into_iter().map(|(_, r)| r).collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

impl Principals {
    /// Loads the table from the store.
    pub async fn load(store: Store) -> Result<Arc<Self>, StoreError> {
        let by_hash = Self::read(&store).await?;
        Ok(Arc::new(Self {
            store,
            table: StdMutex::new(Table {
                by_hash,
                loaded: Instant::now(),
            }),
            reload: tokio::sync::Mutex::new(()),
        }))
    }

    async fn read(store: &Store) -> Result<HashMap<[u8; 32], Arc<Principal>>, StoreError> {
        Ok(read_all(store)
            .await?
            .into_iter()
            .map(|(hash, record)| {
                let principal = Principal {
                    name: record.name,
                    roles: record.roles,
                };
                (hash, Arc::new(principal))
            })
            .collect())
    }

    fn lookup(&self, hash: &[u8; 32]) -> (Option<Arc<Principal>>, Instant) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        (table.by_hash.get(hash).cloned(), table.loaded)
    }

    /// When the table was last read from the store.
    fn loaded(&self) -> Instant {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .loaded
    }

    /// Reloads the table if it is older than `age`; concurrent callers share one reload.
    async fn reload_if_older(&self, age: Duration) {
        let _one = self.reload.lock().await;
        if self.loaded().elapsed() < age {
            return;
        }
        match Self::read(&self.store).await {
            Ok(by_hash) => {
                *self.table.lock().unwrap_or_else(PoisonError::into_inner) = Table {
                    by_hash,
                    loaded: Instant::now(),
                };
            }
            Err(e) => warn!("reloading the principals failed, keeping the last table: {e}"),
        }
    }

    /// Reloads the table every [`REFRESH`], for as long as the table lives.
    pub fn keep_fresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(this) = weak.upgrade() else { break };
                this.reload_if_older(Duration::ZERO).await;
            }
        });
    }

    /// The principal whose token this is, if any. A token not in the table waits for the
    /// next reload (at most [`MISS_REFRESH`] after the last), so that one issued a moment ago
    /// is known while a flood of bad tokens costs the store one listing per interval.
    pub async fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let hash = token_hash(token);
        let (found, loaded) = self.lookup(&hash);
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(MISS_REFRESH.saturating_sub(loaded.elapsed())).await;
        self.reload_if_older(MISS_REFRESH).await;
        self.lookup(&hash).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_local(dir.path()).expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn an_issued_token_authenticates_its_principal_and_no_other_string_does() {
        let (_dir, store) = store();
        let token = add(&store, "acme-owner", &[Role::Owner])
            .await
            .expect("add");
        let principals = Principals::load(store.clone()).await.expect("load");
        let principal = principals.authenticate(&token).await.expect("known");
        assert_eq!(principal.name, "acme-owner");
        assert!(principal.is(Role::Owner) && !principal.is(Role::Provider));
        let mut altered = token.clone();
        altered.pop();
        altered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(principals.authenticate(&altered).await.is_none());
        assert!(principals.authenticate("").await.is_none());
        assert!(
            principals
                .authenticate(&token[TOKEN_PREFIX.len()..])
                .await
                .is_none()
        );
        // Only the hash is stored.
        for path in store.list(&prefix()).await.expect("list") {
            let bytes = store.get(&path).await.expect("get").expect("present");
            assert!(!String::from_utf8_lossy(&bytes).contains(&token[TOKEN_PREFIX.len()..]));
        }
    }

    #[tokio::test]
    async fn names_are_unique_and_checked_and_revocation_takes_effect() {
        let (_dir, store) = store();
        let token = add(&store, "p1", &[Role::Provider, Role::Owner, Role::Owner])
            .await
            .expect("add");
        assert!(matches!(
            add(&store, "p1", &[Role::Owner]).await,
            Err(PrincipalError::Exists(_))
        ));
        for bad in ["", "P1", "a/b", "../x", &"x".repeat(65)] {
            assert!(matches!(
                add(&store, bad, &[Role::Owner]).await,
                Err(PrincipalError::BadName(_))
            ));
        }
        assert!(matches!(
            add(&store, "p2", &[]).await,
            Err(PrincipalError::NoRole)
        ));
        let listed = list(&store).await.expect("list");
        assert_eq!(
            listed,
            [PrincipalRecord {
                name: "p1".into(),
                roles: vec![Role::Owner, Role::Provider]
            }]
        );
        let principals = Principals::load(store.clone()).await.expect("load");
        assert!(principals.authenticate(&token).await.is_some());
        revoke(&store, "p1").await.expect("revoke");
        assert!(matches!(
            revoke(&store, "p1").await,
            Err(PrincipalError::Unknown(_))
        ));
        // The running table forgets it at its next reload.
        principals.reload_if_older(Duration::ZERO).await;
        assert!(principals.authenticate(&token).await.is_none());
        // Its name is never given again: its jobs, datasets and models stay its own.
        assert!(matches!(
            add(&store, "p1", &[Role::Owner]).await,
            Err(PrincipalError::Exists(_))
        ));
    }

    #[tokio::test]
    async fn a_principal_added_while_the_host_runs_is_known_at_once() {
        let (_dir, store) = store();
        let principals = Principals::load(store.clone()).await.expect("load");
        let token = add(&store, "late", &[Role::Owner]).await.expect("add");
        assert!(principals.authenticate(&token).await.is_some());
    }
}
