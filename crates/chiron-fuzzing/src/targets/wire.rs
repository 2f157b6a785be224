//! Frames between the host and an enclave: `chiron_proto::wire::read_frame` for `HostFrame`
//! (what the enclave reads from the untrusted host) and `EnclaveFrame` (what the host reads
//! from the enclave), reading frame after frame from one stream the way the enclave's frame
//! loop does, and re-encoding whatever decodes. No mode byte: the input is the stream.

use chiron_proto::wire::{EnclaveFrame, FrameError, HostFrame, MAX_FRAME, read_frame, write_frame};
use serde::{Serialize, de::DeserializeOwned};

use super::must;

fn drain<T: DeserializeOwned + Serialize>(mut stream: &[u8]) {
    // Each successful read consumes at least the 4-byte length, so this ends.
    loop {
        match read_frame::<T>(&mut stream) {
            Ok(frame) => {
                let mut out = Vec::new();
                must(write_frame(&mut out, &frame), "a decoded frame re-encodes");
                let back: T = must(
                    read_frame(&mut out.as_slice()),
                    "a re-encoded frame decodes",
                );
                let mut again = Vec::new();
                must(write_frame(&mut again, &back), "a decoded frame re-encodes");
                assert_eq!(out, again, "frame encoding is not stable");
            }
            Err(FrameError::TooLarge(len)) => {
                assert!(len > MAX_FRAME);
                return;
            }
            Err(_) => return,
        }
    }
}

/// The `wire` property: the input is a stream of frames, read as both directions.
pub fn wire(data: &[u8]) {
    drain::<HostFrame>(data);
    drain::<EnclaveFrame>(data);
}

/// Every host frame in one stream, and every enclave frame in another.
pub fn seeds_wire() -> Vec<Vec<u8>> {
    let mut host = Vec::new();
    for frame in [
        HostFrame::GetEvidence {
            nonce: [1; 32],
            context: [2; 32],
        },
        HostFrame::StartTraining {
            job_id: "job-1".into(),
            sealed_request: vec![3; 80],
            program: b"\0asm\x01\0\0\0".to_vec(),
            dataset_len: 1234,
            parameter_server: Some("127.0.0.1:7000".into()),
        },
        HostFrame::StartParameterServer {
            job_id: "job-1".into(),
            sealed_request: vec![3; 80],
        },
        HostFrame::ResumeParameterServer {
            job_id: "job-1".into(),
            checkpoint: vec![9; 70],
        },
        HostFrame::DatasetPart(vec![4; 40]),
        HostFrame::LoadModel {
            job_id: "job-1".into(),
            sealed_model: vec![5; 50],
            program: vec![6; 8],
            counter: Some(vec![8; 53]),
        },
        HostFrame::Query {
            sealed: vec![7; 60],
        },
        HostFrame::CounterStored { version: 2 },
    ] {
        must(write_frame(&mut host, &frame), "a seed frame encodes");
    }
    let mut enclave = Vec::new();
    for frame in [
        EnclaveFrame::Evidence(vec![1; 30]),
        EnclaveFrame::Event {
            seq: 3,
            ciphertext: vec![2; 272],
        },
        EnclaveFrame::Trained {
            sealed_model: vec![3; 64],
        },
        EnclaveFrame::Ready,
        EnclaveFrame::PeersAt { port: 7001 },
        EnclaveFrame::Served,
        EnclaveFrame::Checkpoint {
            round: 40,
            paced: true,
            sealed: vec![8; 60],
        },
        EnclaveFrame::StoreCounter {
            version: 2,
            sealed: vec![5; 53],
        },
        EnclaveFrame::Answer(vec![4; 20]),
        EnclaveFrame::Failed {
            public: "program failed".into(),
        },
    ] {
        must(write_frame(&mut enclave, &frame), "a seed frame encodes");
    }
    vec![host, enclave]
}
