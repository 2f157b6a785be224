//! What every role's handler gets: the enclave's identity, its keys and its way back to
//! the host. The session (`crate::session`) makes it and dispatches to the roles, which
//! depend on this module and not on the session.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use chiron_attest::attester::{self, Platform};
use chiron_crypto::{EnclaveKeypair, SealingKey, Zeroizing};
use chiron_proto::evidence::{Role, TeeKind};
use chiron_proto::wire::{EnclaveFrame, FrameError, write_frame};
use chiron_sandbox::{AddressSpace, SandboxConfig};

/// What every request handler needs: identity, keys and the way back to the host.
pub struct Enclave {
    pub role: Role,
    pub platform: Arc<dyn Platform>,
    /// The platform's sealing secret, or `None` on a platform that offers none (TDX).
    pub(crate) sealing_secret: Option<Zeroizing<[u8; 32]>>,
    pub measurement: [u8; 32],
    pub keypair: EnclaveKeypair,
    /// The host connection's sending side.
    pub(crate) out: Arc<Mutex<TcpStream>>,
}

impl Enclave {
    /// Sends a frame to the host. Several threads may send (metrics arrive from inside the
    /// sandbox), so writes are serialised.
    pub fn send(&self, frame: &EnclaveFrame) -> Result<(), FrameError> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("writer poisoned"))?;
        write_frame(&mut *out, frame)
    }

    /// A handle for sending from a callback.
    pub fn sender(&self) -> Arc<Mutex<TcpStream>> {
        Arc::clone(&self.out)
    }

    /// The sandbox limits for this platform: under SGX, linear memories reserve only their
    /// maximum size, since the enclave's whole address space is its fixed enclave size.
    pub fn sandbox_config(&self) -> SandboxConfig {
        SandboxConfig {
            address_space: match self.platform.tee() {
                TeeKind::Sgx => AddressSpace::Compact,
                _ => AddressSpace::Reserved,
            },
            ..SandboxConfig::default()
        }
    }

    /// Whether a private job pads the process's peak resident memory. Not under SGX: the
    /// enclave (built without EDMM, see the Gramine manifest) is committed whole when it is
    /// created, so the host sees the same memory whatever the job does, and Gramine's
    /// `/proc/self/status` has no resident figures to pad against.
    pub fn pads_resident_memory(&self) -> bool {
        self.platform.tee() != TeeKind::Sgx
    }

    /// The key models are sealed under, or a public reason why this platform cannot seal.
    pub fn model_key(&self) -> Result<SealingKey, &'static str> {
        self.sealing_secret
            .as_ref()
            .map(|secret| crate::sealed::model_key(secret, &self.measurement))
            .ok_or("this TEE offers no sealing key, so models cannot be sealed or loaded here")
    }

    /// The key a parameter server seals its checkpoints under, if the platform can seal.
    pub fn checkpoint_key(&self) -> Option<SealingKey> {
        self.sealing_secret
            .as_ref()
            .map(|secret| crate::sealed::checkpoint_key(secret, &self.measurement))
    }

    /// The key a worker seals its ticket under, if the platform can seal.
    pub fn ticket_key(&self) -> Option<SealingKey> {
        self.sealing_secret
            .as_ref()
            .map(|secret| crate::sealed::ticket_key(secret, &self.measurement))
    }

    /// Evidence for the host's request: over `nonce`, for the job or model `context`.
    pub(crate) fn evidence(&self, nonce: [u8; 32], context: [u8; 32]) -> EnclaveFrame {
        let public_key = self.keypair.public_key();
        let evidence = attester::evidence(&*self.platform, self.role, public_key, nonce, context);
        let Ok(evidence) = evidence else {
            return EnclaveFrame::Failed {
                public: "the platform did not produce a statement".into(),
            };
        };
        match evidence.to_bytes() {
            Ok(bytes) => EnclaveFrame::Evidence(bytes),
            Err(_) => EnclaveFrame::Failed {
                public: "evidence could not be encoded".into(),
            },
        }
    }
}
