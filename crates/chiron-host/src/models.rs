//! Query enclaves: at most one per trained model, started on the first evidence request.
//!
//! Each model has a slot holding its query enclave behind an async mutex: requests to one
//! enclave are serialised (it is one connection), requests to different models are not.
//! Every conversation runs in a spawned task, so a client that disconnects half way cannot
//! leave the connection out of step.
//!
//! Query enclaves count against the limits (`max-query-enclaves`, per principal too), and
//! one that answered nothing for `query-idle-timeout-secs` is stopped; the model's next
//! evidence request starts another, and the owner's client re-attests to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use chiron_proto::wire::{EnclaveFrame, Frame, FrameError, HostFrame};
use thiserror::Error;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::enclave::{Enclave, EnclaveError, Role, clean_label};
use crate::ids::{JobId, ProgramId};
use crate::jobs::EVIDENCE_TIMEOUT;
use crate::launcher::Launcher;
use crate::limits::{Held, Limits, Pool, Refusal};
use crate::store::{self, Store, StoreError};

/// How long a query enclave may take to open a model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a model request failed.
#[derive(Debug, Error)]
pub enum ModelError {
    /// No query enclave is running for the model.
    #[error(
        "no query enclave is running for model {0}; fetch GET /v1/models/{0}/evidence?nonce=... \
         to start one, then seal the query to the key in that evidence"
    )]
    NotLoaded(JobId),
    /// The query enclave refused to load the model (label from the enclave).
    #[error("the query enclave could not load the model: {0}")]
    LoadRefused(String),
    /// The enclave refused the request (label from the enclave).
    #[error("{0}")]
    Refused(String),
    /// The query enclave failed or died; it was discarded.
    #[error("query enclave unavailable")]
    Unavailable,
    /// The enclave could not be started.
    #[error("could not start a query enclave: {0}")]
    Start(#[source] EnclaveError),
    /// The sealed model and program do not fit one frame.
    #[error("the sealed model and its program are too large to send to a query enclave")]
    TooLarge,
    /// The sealed model or program is missing from the store.
    #[error("the sealed model or program of model {0} is missing from the host's store")]
    Missing(JobId),
    /// A limit refuses another query enclave.
    #[error(transparent)]
    Limit(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task serving the request ended abnormally.
    #[error("internal error while serving the model")]
    Internal,
}

/// A model's running query enclave.
struct Running {
    enclave: Enclave,
    /// Whose model it serves.
    principal: String,
    /// When it last answered.
    used: Instant,
    /// Its place under the limits.
    _held: Held,
}

impl Running {
    async fn stop(self) {
        self.enclave.kill().await;
    }
}

type Slot = Arc<Mutex<Option<Running>>>;

/// The option that bounds one principal's query enclaves.
const PER_PRINCIPAL: &str = "max-query-enclaves-per-principal";

/// The query enclaves of all models.
pub struct Models {
    store: Store,
    launcher: Launcher,
    slots: StdMutex<HashMap<JobId, Slot>>,
    running: Arc<Pool>,
    idle: Duration,
}

impl Models {
    /// No query enclaves yet.
    pub fn new(store: Store, launcher: Launcher, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            store,
            launcher,
            slots: StdMutex::new(HashMap::new()),
            running: Pool::new(
                "query enclaves",
                (limits.max_query_enclaves, "max-query-enclaves"),
                (limits.max_query_enclaves_per_principal, PER_PRINCIPAL),
                "; a query enclave stops once it has answered nothing for \
                 `query-idle-timeout-secs`, retry then",
            ),
            idle: limits.query_idle_timeout(),
        })
    }

    /// Stops idle query enclaves, checking a few times per idle timeout, for as long as
    /// `self` lives.
    pub fn reap_idle(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = (self.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(this) = weak.upgrade() else { break };
                this.reap_once().await;
            }
        });
    }

    /// Every model's slot, taken under the map's lock and released at once, so that
    /// walking them waits on no request.
    fn snapshot(&self) -> Vec<(JobId, Slot)> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, slot)| (id.clone(), Arc::clone(slot)))
            .collect()
    }

    /// Stops `principal`'s query enclave that answered least recently among those not
    /// answering now; whether there was one.
    async fn stop_least_recent(&self, principal: &str) -> bool {
        let slots = self.snapshot();
        let mut oldest: Option<(Instant, JobId, Slot)> = None;
        for (id, slot) in slots {
            let Ok(guard) = slot.try_lock() else { continue };
            let Some(used) = guard
                .as_ref()
                .filter(|r| r.principal == principal)
                .map(|r| r.used)
            else {
                continue;
            };
            drop(guard);
            if oldest.as_ref().is_none_or(|(at, ..)| used < *at) {
                oldest = Some((used, id, slot));
            }
        }
        let Some((_, id, slot)) = oldest else {
            return false;
        };
        let Ok(mut guard) = slot.try_lock() else {
            return false;
        };
        match guard.take() {
            Some(running) => {
                info!("model {id} query enclave stopped: its owner's limit, least recently used");
                running.stop().await;
                true
            }
            None => false,
        }
    }

    /// Stops every query enclave idle for longer than the timeout; slots in use are left.
    async fn reap_once(&self) {
        let slots = self.snapshot();
        for (id, slot) in slots {
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            if guard
                .as_ref()
                .is_some_and(|r| r.used.elapsed() >= self.idle)
                && let Some(running) = guard.take()
            {
                info!("model {id} query enclave stopped: idle");
                running.stop().await;
            }
            if guard.is_none() {
                drop(guard);
                let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
                // Forget the slot unless a request picked it up meanwhile.
                if Arc::strong_count(&slot) == 2 {
                    slots.remove(&id);
                }
            }
        }
    }

    fn slot(&self, id: &JobId) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(id.clone()).or_default())
    }

    /// Evidence from the model's query enclave, starting it (and loading the model) first if
    /// none is running. The caller has checked that the job succeeded.
    pub async fn evidence(
        self: &Arc<Self>,
        principal: &str,
        id: &JobId,
        program_id: &ProgramId,
        nonce: [u8; 32],
    ) -> Result<Vec<u8>, ModelError> {
        let this = Arc::clone(self);
        let slot = self.slot(id);
        let id = id.clone();
        let program_id = program_id.clone();
        let principal = principal.to_owned();
        tokio::spawn(async move {
            let mut guard = slot.lock_owned().await;
            if guard.is_none() {
                let held = match this.running.take(&principal, 1) {
                    Ok(held) => held,
                    // At their own limit, the principal's least recently used enclave that
                    // is not answering makes way; its model's next evidence request starts
                    // it again.
                    Err(refusal) if refusal.option == PER_PRINCIPAL => {
                        if !this.stop_least_recent(&principal).await {
                            return Err(refusal.into());
                        }
                        this.running.take(&principal, 1)?
                    }
                    Err(refusal) => return Err(refusal.into()),
                };
                *guard = Some(Running {
                    enclave: this.start(&id, &program_id).await?,
                    principal: principal.clone(),
                    used: Instant::now(),
                    _held: held,
                });
            }
            let Some(running) = guard.as_mut() else {
                return Err(ModelError::Internal);
            };
            let answer = running
                .enclave
                .evidence(nonce, id.context(), EVIDENCE_TIMEOUT)
                .await;
            running.used = Instant::now();
            match answer {
                Ok(evidence) => Ok(evidence),
                Err(EnclaveError::Refused(label)) => Err(ModelError::Refused(label)),
                Err(e) => {
                    discard(&id, guard.take(), &e).await;
                    Err(ModelError::Unavailable)
                }
            }
        })
        .await
        .map_err(|_| ModelError::Internal)?
    }

    /// Sends a sealed query to the model's query enclave; returns the encrypted answer.
    pub async fn query(
        self: &Arc<Self>,
        id: &JobId,
        sealed: Vec<u8>,
    ) -> Result<Vec<u8>, ModelError> {
        let this = Arc::clone(self);
        let slot = self.slot(id);
        let id = id.clone();
        tokio::spawn(async move {
            let mut guard = slot.lock_owned().await;
            let Some(running) = guard.as_mut() else {
                return Err(ModelError::NotLoaded(id));
            };
            running.used = Instant::now();
            let enclave = &mut running.enclave;
            let mut answer = enclave
                .request(&HostFrame::Query { sealed }, QUERY_TIMEOUT)
                .await;
            // Write-ahead: the enclave asks for its query counter to be stored before it
            // answers a query that spends the budget.
            if let Ok(EnclaveFrame::StoreCounter { version, sealed }) = answer {
                if let Err(e) = this
                    .store
                    .put(&store::counter_path(&id), sealed.into())
                    .await
                {
                    // Without an acknowledgement the enclave waits: it cannot stay in step.
                    discard(&id, guard.take(), &EnclaveError::Unexpected("StoreCounter")).await;
                    return Err(e.into());
                }
                answer = enclave
                    .request(&HostFrame::CounterStored { version }, QUERY_TIMEOUT)
                    .await;
            }
            match answer {
                Ok(EnclaveFrame::Answer(bytes)) => Ok(bytes),
                Ok(EnclaveFrame::Failed { public }) => {
                    Err(ModelError::Refused(clean_label(&public)))
                }
                Ok(other) => {
                    let e = EnclaveError::Unexpected(other.kind());
                    discard(&id, guard.take(), &e).await;
                    Err(ModelError::Unavailable)
                }
                // Nothing was written: the enclave is still in step.
                Err(EnclaveError::Frame(FrameError::TooLarge(_))) => Err(ModelError::TooLarge),
                Err(e) => {
                    discard(&id, guard.take(), &e).await;
                    Err(ModelError::Unavailable)
                }
            }
        })
        .await
        .map_err(|_| ModelError::Internal)?
    }

    /// Starts a query enclave and loads the model into it.
    async fn start(&self, id: &JobId, program_id: &ProgramId) -> Result<Enclave, ModelError> {
        let sealed_model = self
            .store
            .get(&store::model_path(id))
            .await?
            .ok_or_else(|| ModelError::Missing(id.clone()))?;
        let program = self
            .store
            .get(&store::program_path(program_id))
            .await?
            .ok_or_else(|| ModelError::Missing(id.clone()))?;
        // The latest counter state the model's query enclaves asked to store, if any.
        let counter = self.store.get(&store::counter_path(id)).await?;
        let mut enclave = self
            .launcher
            .spawn(Role::Query)
            .await
            .map_err(ModelError::Start)?;
        let load = HostFrame::LoadModel {
            job_id: id.to_string(),
            sealed_model: sealed_model.to_vec(),
            program: program.to_vec(),
            counter: counter.map(|c| c.to_vec()),
        };
        drop((sealed_model, program));
        let answer = enclave.request(&load, LOAD_TIMEOUT).await;
        drop(load);
        match answer {
            Ok(EnclaveFrame::Ready) => {
                info!("model {id} query enclave ready");
                Ok(enclave)
            }
            Ok(EnclaveFrame::Failed { public }) => {
                let label = clean_label(&public);
                info!("model {id} query enclave failed: {label}");
                enclave.kill().await;
                Err(ModelError::LoadRefused(label))
            }
            Ok(other) => {
                warn!(
                    "model {id} query enclave discarded: unexpected {}",
                    other.kind()
                );
                enclave.kill().await;
                Err(ModelError::Unavailable)
            }
            Err(EnclaveError::Frame(FrameError::TooLarge(_))) => {
                enclave.kill().await;
                Err(ModelError::TooLarge)
            }
            Err(e) => {
                warn!("model {id} query enclave discarded: {e}");
                enclave.kill().await;
                Err(ModelError::Unavailable)
            }
        }
    }
}

/// Drops a broken query enclave.
async fn discard(id: &JobId, running: Option<Running>, why: &EnclaveError) {
    warn!("model {id} query enclave discarded: {why}");
    if let Some(running) = running {
        running.stop().await;
    }
}
