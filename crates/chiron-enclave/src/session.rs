//! One host connection: evidence on request, then the role's work, dispatched to the
//! role's module (`train`, `query`, `ps`; `worker` through `train`). The roles depend on
//! `crate::identity`, not on this module.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use chiron_attest::attester::Platform;
use chiron_crypto::{EnclaveKeypair, Zeroizing};
use chiron_proto::evidence::Role;
use chiron_proto::wire::{EnclaveFrame, FrameError, HostFrame, read_frame};

use crate::identity::Enclave;
use crate::{ps, query, train};

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
                    events_from,
                },
            ) if !trained => {
                trained = true;
                let start = train::Start {
                    job_id,
                    request: train::Source::Ticket {
                        sealed: ticket,
                        events_from,
                    },
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
