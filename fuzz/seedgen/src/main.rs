//! Writes a few valid inputs for each fuzz target into `<dir>/<target>/seed-*`.
//!
//! Usage: `chiron-fuzz-seedgen <corpus dir>`. The layouts (leading mode byte, fixed keys)
//! match the targets in `fuzz_targets/`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use chiron_crypto::{
    DataKey, EnclaveKeypair, SealingKey, SimPlatform, encrypt_dataset, seal_to_enclave,
};
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_proto::evidence::Role;
use chiron_proto::owner::{
    AnswerPolicy, OwnerEvent, PrivateTerms, QueryAnswer, QueryRequest, TRAIN_INFO, TrainRequest,
};
use chiron_proto::wire::{EnclaveFrame, HostFrame, write_frame};
use serde::Serialize;

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Same fields, in the same order, as `chiron_sandbox::Model`, so postcard encodes it alike
/// (this keeps wasmtime out of the seed generator's build).
#[derive(Serialize)]
struct Model {
    header: Option<DatasetHeader>,
    tensors: Vec<(Vec<usize>, Vec<f32>)>,
    meta: Vec<u8>,
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("seed encodes")
}

fn tabular() -> DatasetHeader {
    DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![3],
        encoding: ElementEncoding::F32,
        classes: 2,
        train_count: 2,
        valid_count: 1,
    }
}

fn image() -> DatasetHeader {
    DatasetHeader {
        kind: DatasetKind::Image,
        dims: vec![1, 2, 2],
        encoding: ElementEncoding::U8Unit,
        classes: 3,
        train_count: 3,
        valid_count: 0,
    }
}

fn body(header: &DatasetHeader) -> Vec<u8> {
    let n = header.total_count() as u32;
    let mut body: Vec<u8> = (0..n)
        .flat_map(|i| (i % header.classes).to_le_bytes())
        .collect();
    let rest = header.plaintext_len().expect("valid header") as usize - body.len();
    body.extend((0..rest).map(|i| (i * 37) as u8));
    body
}

fn evidence() -> Seeds {
    let platform = SimPlatform::generate();
    let mut seeds = Seeds::new();
    for (name, role) in [("train", Role::Train), ("query", Role::Query)] {
        let e = platform.issue(role, [0x11; 32], [0x22; 32], [0x33; 32], [0x44; 32]);
        let bytes = e.to_bytes().expect("evidence encodes");
        seeds.push((name, with_mode(0, &bytes)));
        seeds.push((name, with_mode(0x0f, &bytes)));
    }
    seeds
}

fn dataset() -> Seeds {
    let key = DataKey::from_bytes([0x5a; 32]);
    let mut seeds = Seeds::new();
    for header in [tabular(), image()] {
        let body = body(&header);
        let mut container = Vec::new();
        encrypt_dataset(&key, &header, body.as_slice(), &mut container).expect("encrypts");
        seeds.push(("container", with_mode(0, &container)));
        let mut plain = enc(&header);
        plain.extend_from_slice(&body);
        seeds.push(("plain", with_mode(1, &plain)));
        let mut build = enc(&header);
        build.extend_from_slice(&[1, 9, 0, 0, 0]);
        build.extend_from_slice(&body);
        seeds.push(("build", with_mode(2, &build)));
    }
    seeds
}

fn wire() -> Seeds {
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
        },
        HostFrame::DatasetPart(vec![4; 40]),
        HostFrame::LoadModel {
            job_id: "job-1".into(),
            sealed_model: vec![5; 50],
            program: vec![6; 8],
        },
        HostFrame::Query {
            sealed: vec![7; 60],
        },
    ] {
        write_frame(&mut host, &frame).expect("frame encodes");
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
        EnclaveFrame::Answer(vec![4; 20]),
        EnclaveFrame::Failed {
            public: "program failed".into(),
        },
    ] {
        write_frame(&mut enclave, &frame).expect("frame encodes");
    }
    vec![("host", host), ("enclave", enclave)]
}

fn owner_messages() -> Seeds {
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
    };
    let private = TrainRequest {
        private: Some(PrivateTerms {
            memory_mib: 512,
            model_mib: 8,
            answer_ms: 100,
        }),
        ..request.clone()
    };
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
        ("train", with_mode(0, &enc(&request))),
        ("query", with_mode(0, &enc(&query))),
        ("train", with_mode(3, &enc(&request))),
        ("private", with_mode(0, &enc(&private))),
        ("query", with_mode(0x13, &enc(&query))),
    ];
    for event in &events {
        seeds.push(("event", with_mode(0, &event.to_padded())));
        seeds.push(("event", with_mode(3, &enc(event))));
    }
    let answer = QueryAnswer {
        classes: vec![1, 0, 2, 2, 1, 0],
    }
    .encode();
    seeds.push(("answer", with_mode(1, &[[0].as_slice(), &answer].concat())));
    let keypair = EnclaveKeypair::generate();
    let (sealed, _) = seal_to_enclave(
        &keypair.public_key(),
        TRAIN_INFO,
        b"job-fuzz",
        &enc(&request),
    )
    .expect("seals");
    seeds.push(("sealed", with_mode(2, &sealed)));
    let header = serde_json::to_string(&tabular()).expect("json");
    for json in [
        r#"{"program_id":"ab12"}"#.to_owned(),
        format!(r#"{{"dataset_id":"d1","header":{header}}}"#),
        r#"{"program_id":"p","dataset_id":"d"}"#.to_owned(),
        r#"{"job_id":"j","state":"Running","error":null,"events":3}"#.to_owned(),
        r#"{"state":"Succeeded","events":[[0,"AAAA"],[1,"AQID"]]}"#.to_owned(),
        r#"{"error":"no such job"}"#.to_owned(),
    ] {
        seeds.push(("api", with_mode(4, json.as_bytes())));
    }
    seeds
}

fn sealed() -> Seeds {
    let key = SealingKey::derive(&[0x01; 32], &[0x02; 32], b"model");
    let model = Model {
        header: Some(tabular()),
        tensors: vec![
            (vec![3, 2], Arc::new(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
            (vec![2], Arc::new(vec![0.0, 1.0])),
        ],
        meta: b"mlp 3-2".to_vec(),
    };
    let encoded = enc(&model);
    vec![
        ("blob", with_mode(0, &key.seal(b"job-fuzz", &encoded))),
        ("model", with_mode(1, &encoded)),
        ("model", with_mode(2, &encoded)),
    ]
}

/// The smallest module `Sandbox::load` accepts: exports `memory`, `chiron_train` and
/// `chiron_predict`, imports nothing.
fn wasm_load() -> Seeds {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type () -> ()
    wasm.extend_from_slice(&[0x03, 0x03, 0x02, 0x00, 0x00]); // two functions of type 0
    wasm.extend_from_slice(&[0x05, 0x03, 0x01, 0x00, 0x01]); // one memory, 1 page
    let mut exports = vec![0x03];
    for (name, kind, index) in [
        ("memory", 2u8, 0u8),
        ("chiron_train", 0, 0),
        ("chiron_predict", 0, 1),
    ] {
        exports.push(name.len() as u8);
        exports.extend_from_slice(name.as_bytes());
        exports.extend_from_slice(&[kind, index]);
    }
    wasm.push(0x07);
    wasm.push(exports.len() as u8);
    wasm.extend_from_slice(&exports);
    wasm.extend_from_slice(&[0x0a, 0x07, 0x02, 0x02, 0x00, 0x0b, 0x02, 0x00, 0x0b]); // bodies
    vec![("minimal", wasm)]
}

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: chiron-fuzz-seedgen <corpus dir>");
        std::process::exit(2);
    };
    let targets: [(&str, fn() -> Seeds); 6] = [
        ("evidence", evidence),
        ("dataset", dataset),
        ("wire", wire),
        ("owner_messages", owner_messages),
        ("sealed", sealed),
        ("wasm_load", wasm_load),
    ];
    for (target, make) in targets {
        let out = Path::new(&dir).join(target);
        fs::create_dir_all(&out).expect("create corpus dir");
        for (i, (name, bytes)) in make().into_iter().enumerate() {
            fs::write(out.join(format!("seed-{name}-{i}")), bytes).expect("write seed");
        }
    }
}
