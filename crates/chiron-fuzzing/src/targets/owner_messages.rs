//! Messages between the data owner and an enclave, and the host API bodies.
//!
//! The first byte picks the mode:
//! * 0: postcard decode of `TrainRequest` and `QueryRequest` (what an enclave reads after
//!   opening the owner's HPKE message), and `OwnerEvent::from_padded` on the raw bytes and on
//!   the bytes zero-padded to the event size (what the owner reads after opening an event);
//! * 1: `QueryAnswer::decode` for every answer policy, with a batch size from the input;
//! * 2: the encrypted open paths on arbitrary ciphertext: `EnclaveKeypair::open` (HPKE) with
//!   the train and query labels, and `ResponseKey::open` at a counter from the input;
//! * 3: the same paths on authentic ciphertext: the rest is sealed to the enclave (and under
//!   the response key), opened, and the plaintext decoded as the enclave and owner do;
//! * 4: JSON decode of the host API bodies (`chiron_proto::api`).

use std::sync::OnceLock;

use chiron_crypto::{EnclaveKeypair, ResponseKey, seal_to_enclave};
use chiron_proto::api::{
    ApiError, CreateJob, DatasetCreated, Events, JobCreated, JobState, JobStatus, ProgramCreated,
};
use chiron_proto::owner::{
    AnswerPolicy, MAX_QUERY_BATCH, OwnerEvent, PrivateTerms, QUERY_INFO, QueryAnswer, QueryRequest,
    TRAIN_INFO, TrainRequest,
};
use chiron_proto::wire::EVENT_PLAINTEXT_LEN;
use serde::Serialize;

use super::{enc, must, with_mode};

const RESPONSE_KEY: [u8; 32] = [0x77; 32];
const AAD: &[u8] = b"job-fuzz";

fn enclave() -> &'static EnclaveKeypair {
    static KEYPAIR: OnceLock<EnclaveKeypair> = OnceLock::new();
    KEYPAIR.get_or_init(EnclaveKeypair::generate)
}

fn decode_requests(bytes: &[u8]) {
    if let Ok(request) = postcard::from_bytes::<TrainRequest>(bytes) {
        let _ = request.answers.width();
        if let Some(terms) = request.private {
            let _ = terms.validate();
            let _ = (terms.memory_bytes(), terms.model_bytes());
        }
    }
    if let Ok(query) = postcard::from_bytes::<QueryRequest>(bytes) {
        let _ = query.inputs.len().checked_sub(query.count as usize);
    }
}

fn decode_event(bytes: &[u8]) {
    if let Ok(event) = OwnerEvent::from_padded(bytes) {
        assert_eq!(bytes.len(), EVENT_PLAINTEXT_LEN);
        let padded = event.to_padded();
        assert_eq!(padded.len(), EVENT_PLAINTEXT_LEN);
        let back = must(OwnerEvent::from_padded(&padded), "a padded event decodes");
        // Compare encodings: a NaN metric is not equal to itself.
        assert_eq!(
            postcard::to_allocvec(&back).ok(),
            postcard::to_allocvec(&event).ok()
        );
    }
}

fn decode_answers(bytes: &[u8], count: usize) {
    for policy in [
        AnswerPolicy::Label,
        AnswerPolicy::TopK(0),
        AnswerPolicy::TopK(3),
        AnswerPolicy::TopK(u8::MAX),
        AnswerPolicy::Scored(2),
        AnswerPolicy::Scored(u8::MAX),
    ] {
        if let Some(answer) = QueryAnswer::decode(bytes, count, policy) {
            assert_eq!(answer.classes.len(), count * policy.width());
            let scores = if policy.has_scores() {
                count * policy.width()
            } else {
                0
            };
            assert_eq!(answer.scores.len(), scores);
            assert_eq!(answer.encode(), bytes);
        }
    }
}

fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut event = bytes[..bytes.len().min(EVENT_PLAINTEXT_LEN)].to_vec();
    event.resize(EVENT_PLAINTEXT_LEN, 0);
    event
}

/// The `owner_messages` property (layout in the module documentation).
pub fn owner_messages(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => {
            decode_requests(rest);
            decode_event(rest);
            decode_event(&padded(rest));
        }
        1 => {
            let Some((&count, answer)) = rest.split_first() else {
                return;
            };
            // The batch size is the owner's own (at most MAX_QUERY_BATCH); the bytes are not.
            let count = usize::from(count) * 4 % (MAX_QUERY_BATCH as usize + 1);
            decode_answers(answer, count);
            decode_answers(answer, answer.len() / 4);
        }
        2 => {
            let keypair = enclave();
            for info in [TRAIN_INFO, QUERY_INFO] {
                if let Ok((plain, _)) = keypair.open(info, AAD, rest) {
                    panic!("forged HPKE message opened ({} bytes)", plain.len());
                }
            }
            let counter = rest
                .first_chunk::<8>()
                .map_or(0, |b| u64::from_le_bytes(*b));
            let key = ResponseKey::from_bytes(RESPONSE_KEY);
            assert!(
                key.open(counter, AAD, rest).is_err(),
                "forged response opened"
            );
        }
        3 => {
            let keypair = enclave();
            let info = if mode & 0x10 == 0 {
                TRAIN_INFO
            } else {
                QUERY_INFO
            };
            let (sealed, owner_key) = must(
                seal_to_enclave(&keypair.public_key(), info, AAD, rest),
                "sealing to the enclave",
            );
            let (plain, enclave_key) =
                must(keypair.open(info, AAD, &sealed), "opening our own seal");
            assert_eq!(plain.as_slice(), rest);
            assert_eq!(owner_key.to_bytes(), enclave_key.to_bytes());
            decode_requests(&plain);
            // The enclave answers under the response key; the owner opens and decodes.
            let event = padded(rest);
            let counter = u64::from(mode);
            let ct = enclave_key.seal(counter, AAD, &event);
            let opened = must(
                owner_key.open(counter, AAD, &ct),
                "opening our own response",
            );
            decode_event(&opened);
            assert!(owner_key.open(counter + 1, AAD, &ct).is_err());
            let answer = enclave_key.seal(0, AAD, rest);
            let opened = must(owner_key.open(0, AAD, &answer), "opening our own answer");
            decode_answers(&opened, opened.len() / 4);
        }
        _ => {
            let _ = serde_json::from_slice::<ProgramCreated>(rest);
            let _ = serde_json::from_slice::<DatasetCreated>(rest).map(|d| d.header.validate());
            let _ = serde_json::from_slice::<CreateJob>(rest);
            let _ = serde_json::from_slice::<JobCreated>(rest);
            let _ = serde_json::from_slice::<JobStatus>(rest);
            let _ = serde_json::from_slice::<Events>(rest);
            let _ = serde_json::from_slice::<ApiError>(rest);
        }
    }
}

/// A host API body as a mode-4 seed.
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    with_mode(
        4,
        &must(serde_json::to_vec(value), "a seed API body encodes"),
    )
}

/// Requests, events and answers in the clear (modes 0, 1, 3), a request sealed to a fresh
/// enclave key (mode 2) and host API bodies (mode 4).
pub fn seeds_owner_messages() -> Vec<Vec<u8>> {
    let request = TrainRequest {
        data_key: [1; 32],
        program_digest: [2; 32],
        epochs: 3,
        time_budget_secs: 600,
        seed: [4; 32],
        answers: AnswerPolicy::TopK(3),
        query_budget: 100,
        query_token_digest: [5; 32],
        private: None,
        distributed: None,
        keep_last_save: true,
    };
    let mut private = request.clone();
    private.private = Some(PrivateTerms {
        memory_mib: 512,
        model_mib: 8,
        answer_ms: 100,
    });
    let query = QueryRequest {
        token: [6; 32],
        count: 2,
        inputs: vec![0.5, -1.0, 2.0, 0.0],
    };
    let events = [
        OwnerEvent::Started {
            train_count: 10,
            valid_count: 2,
        },
        OwnerEvent::Metric {
            name: "loss".into(),
            epoch: 1,
            value: 0.25,
        },
        OwnerEvent::Finished {
            parameters: 1000,
            peak_memory_mib: 64,
        },
        OwnerEvent::Failed {
            detail: "out of memory".into(),
        },
        OwnerEvent::Padding,
    ];
    let mut seeds = vec![
        with_mode(0, &enc(&request)),
        with_mode(0, &enc(&query)),
        with_mode(3, &enc(&request)),
        with_mode(0, &enc(&private)),
        with_mode(0x13, &enc(&query)),
    ];
    for event in &events {
        seeds.push(with_mode(0, &event.to_padded()));
        seeds.push(with_mode(3, &enc(event)));
    }
    for answer in [
        QueryAnswer {
            classes: vec![1, 0, 2, 2, 1, 0],
            scores: Vec::new(),
        },
        QueryAnswer {
            classes: vec![1, 0, 2, 2],
            scores: vec![0.5, 0.25, 0.75, 0.125],
        },
    ] {
        seeds.push(with_mode(1, &[[0].as_slice(), &answer.encode()].concat()));
    }
    // Sealed to another key than the target's: it must not open (mode 2).
    let (sealed, _) = must(
        seal_to_enclave(
            &EnclaveKeypair::generate().public_key(),
            TRAIN_INFO,
            AAD,
            &enc(&request),
        ),
        "sealing a seed request",
    );
    seeds.push(with_mode(2, &sealed));
    seeds.extend([
        json(&ProgramCreated {
            program_id: "ab12".into(),
            policy: chiron_proto::manifest::ProgramPolicy {
                declared: false,
                manifest: chiron_proto::manifest::Manifest::DEFAULT,
                inputs: None,
            },
        }),
        json(&DatasetCreated {
            dataset_id: "d1".into(),
            header: super::dataset::seed_header(),
        }),
        json(&CreateJob {
            program_id: "p".into(),
            dataset_id: "d".into(),
            workers: Some(2),
        }),
        json(&JobCreated { job_id: "j".into() }),
        json(&JobStatus {
            job_id: "j".into(),
            state: JobState::Running,
            error: None,
            events: 3,
        }),
        json(&Events {
            state: JobState::Succeeded,
            events: vec![(0, "AAAA".into()), (1, "AQID".into())],
        }),
        json(&ApiError {
            error: "no such job".into(),
        }),
    ]);
    seeds
}
