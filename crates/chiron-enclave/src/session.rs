//! One host connection: evidence on request, then the role's work.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use chiron_attest::attester::{self, Platform};
use chiron_crypto::{EnclaveKeypair, SealingKey, Zeroizing};
use chiron_proto::evidence::{Role, TeeKind};
use chiron_proto::wire::{EnclaveFrame, FrameError, HostFrame, read_frame, write_frame};
use chiron_sandbox::{AddressSpace, SandboxConfig};

use crate::{ps, query, train};

/// What every request handler needs: identity, keys and the way back to the host.
pub struct Enclave {
    pub role: Role,
    pub platform: Arc<dyn Platform>,
    /// The platform's sealing secret, or `None` on a platform that offers none (TDX).
    sealing_secret: Option<Zeroizing<[u8; 32]>>,
    pub measurement: [u8; 32],
    pub keypair: EnclaveKeypair,
    out: Arc<Mutex<TcpStream>>,
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

    fn evidence(&self, nonce: [u8; 32], context: [u8; 32]) -> EnclaveFrame {
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

/// Serves the host until it disconnects.
pub fn serve(
    stream: TcpStream,
    role: Role,
    platform: Box<dyn Platform>,
    sealing_secret: Option<Zeroizing<[u8; 32]>>,
    measurement: [u8; 32],
    peer_listen: &str,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = stream.try_clone()?;
    let enclave = Enclave {
        role,
        platform: Arc::from(platform),
        sealing_secret,
        measurement,
        keypair: EnclaveKeypair::generate(),
        out: Arc::new(Mutex::new(stream)),
    };
    let mut query_state: Option<query::Serving> = None;
    // A training enclave (or worker, or parameter server) runs one job: a second start would
    // reuse the owner's event key at counters it already used.
    let mut trained = false;
    loop {
        let frame: HostFrame = match read_frame(&mut input) {
            Ok(frame) => frame,
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let reply = match (role, frame) {
            (_, HostFrame::GetEvidence { nonce, context }) => {
                Some(enclave.evidence(nonce, context))
            }
            (
                Role::Train | Role::Worker,
                HostFrame::StartTraining {
                    job_id,
                    sealed_request,
                    program,
                    dataset_len,
                    parameter_server,
                },
            ) if !trained => {
                trained = true;
                let start = train::Start {
                    job_id,
                    request: train::Source::Owner(sealed_request),
                    program,
                    dataset_len,
                    parameter_server,
                };
                Some(train::run(&enclave, start, &mut input))
            }
            (
                Role::Worker,
                HostFrame::ResumeWorker {
                    job_id,
                    ticket,
                    program,
                    dataset_len,
                    parameter_server,
                },
            ) if !trained => {
                trained = true;
                let start = train::Start {
                    job_id,
                    request: train::Source::Ticket(ticket),
                    program,
                    dataset_len,
                    parameter_server: Some(parameter_server),
                };
                Some(train::run(&enclave, start, &mut input))
            }
            (
                Role::ParameterServer,
                HostFrame::StartParameterServer {
                    job_id,
                    sealed_request,
                },
            ) if !trained => {
                trained = true;
                let start = ps::Start {
                    job_id,
                    from: ps::Source::Owner(sealed_request),
                    listen: peer_listen.to_owned(),
                };
                Some(ps::run(&enclave, start))
            }
            (Role::ParameterServer, HostFrame::ResumeParameterServer { job_id, checkpoint })
                if !trained =>
            {
                trained = true;
                let start = ps::Start {
                    job_id,
                    from: ps::Source::Checkpoint(checkpoint),
                    listen: peer_listen.to_owned(),
                };
                Some(ps::run(&enclave, start))
            }
            (Role::Train | Role::Worker, HostFrame::StartTraining { .. })
            | (Role::Worker, HostFrame::ResumeWorker { .. })
            | (
                Role::ParameterServer,
                HostFrame::StartParameterServer { .. } | HostFrame::ResumeParameterServer { .. },
            ) => Some(EnclaveFrame::Failed {
                public: "this enclave has already run its job".into(),
            }),
            // A query enclave serves one model, loaded once: a second load would start its
            // budget and replay set afresh.
            (Role::Query, HostFrame::LoadModel { .. }) if query_state.is_some() => {
                Some(EnclaveFrame::Failed {
                    public: "a model is already loaded".into(),
                })
            }
            (
                Role::Query,
                HostFrame::LoadModel {
                    job_id,
                    sealed_model,
                    program,
                    counter,
                },
            ) => Some(
                match query::Serving::load(
                    &enclave,
                    &job_id,
                    &sealed_model,
                    &program,
                    counter.as_deref(),
                ) {
                    Ok(serving) => {
                        query_state = Some(serving);
                        EnclaveFrame::Ready
                    }
                    Err(public) => EnclaveFrame::Failed {
                        public: public.to_owned(),
                    },
                },
            ),
            (Role::Query, HostFrame::Query { sealed }) => Some(match query_state.as_mut() {
                Some(serving) => serving.answer(&enclave, &sealed, &mut input),
                None => EnclaveFrame::Failed {
                    public: "no model loaded".into(),
                },
            }),
            _ => Some(EnclaveFrame::Failed {
                public: "request not valid for this enclave's role".into(),
            }),
        };
        if let Some(reply) = reply {
            enclave.send(&reply)?;
        }
    }
}
