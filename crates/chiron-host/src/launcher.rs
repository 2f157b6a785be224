//! Where enclaves run: one launcher per place, behind one trait.
//!
//! [`local::Processes`] starts each enclave as a process on this machine (the default, and
//! what the tests use); [`kubernetes::Pods`] starts each as a pod of a Kubernetes cluster,
//! in a confidential-VM runtime class. Either way the host gets the same thing back, an
//! [`Enclave`]: a connection to speak frames over, the address its peers reach it at, and an
//! [`Instance`] that stops it. Nothing the launcher learns is trusted: the owner attests
//! every enclave, and enclaves attest each other.

pub mod kubernetes;
pub mod local;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::enclave::{Enclave, EnclaveError, Role};

/// Starts enclaves somewhere.
pub trait Launch: Send + Sync + std::fmt::Debug {
    /// Checks, before any job, that enclaves can be started; the error says what to fix.
    fn init_platform(&self) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Starts an enclave in `role` and connects to it.
    fn spawn(&self, role: Role) -> BoxFuture<'_, Result<Enclave, EnclaveError>>;

    /// Starts one of a distributed job's `workers` worker enclaves. A launcher that places
    /// them on one machine gives each its share of the cores, so that they do not take
    /// each other's; by default, as [`Launch::spawn`]. The share changes only the speed:
    /// the engine computes the same values on any number of threads.
    fn spawn_worker(&self, workers: u32) -> BoxFuture<'_, Result<Enclave, EnclaveError>> {
        let _ = workers;
        self.spawn(Role::Worker)
    }

    /// Where the host's relay for a distributed job's peer traffic listens: an address the
    /// enclaves can reach.
    fn relay_bind(&self) -> SocketAddr;

    /// The address enclaves are told for a relay listening on `port`.
    fn relay_address(&self, port: u16) -> String;
}

/// A launcher, cheap to clone.
#[derive(Clone, Debug)]
pub struct Launcher(Arc<dyn Launch>);

impl Launcher {
    /// Wraps a launcher.
    pub fn new(launch: impl Launch + 'static) -> Self {
        Self(Arc::new(launch))
    }

    /// See [`Launch::init_platform`].
    pub async fn init_platform(&self) -> anyhow::Result<()> {
        self.0.init_platform().await
    }

    /// See [`Launch::spawn`].
    pub async fn spawn(&self, role: Role) -> Result<Enclave, EnclaveError> {
        self.0.spawn(role).await
    }

    /// See [`Launch::spawn_worker`].
    pub async fn spawn_worker(&self, workers: u32) -> Result<Enclave, EnclaveError> {
        self.0.spawn_worker(workers).await
    }

    /// See [`Launch::relay_bind`].
    pub fn relay_bind(&self) -> SocketAddr {
        self.0.relay_bind()
    }

    /// See [`Launch::relay_address`].
    pub fn relay_address(&self, port: u16) -> String {
        self.0.relay_address(port)
    }
}

/// What stops a running enclave.
#[derive(Debug)]
pub enum Instance {
    /// A process on this machine (killed when dropped, too).
    Process(tokio::process::Child),
    /// A pod (deleted when dropped, too).
    Pod(kubernetes::Pod),
}

impl Instance {
    /// Stops the enclave and, for a process, waits for it.
    pub async fn kill(&mut self) {
        match self {
            Self::Process(child) => {
                let _ = child.kill().await;
            }
            Self::Pod(pod) => pod.delete().await,
        }
    }
}
