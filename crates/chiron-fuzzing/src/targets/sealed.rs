//! Sealed blobs from the host's object store and the model encoding inside them.
//!
//! The first byte picks the mode:
//! * 0: `SealingKey::unseal` with a fixed key on the rest, and `Model::from_bytes` on what
//!   opens (only genuinely sealed seeds do: the fuzzer cannot forge AES-GCM);
//! * 1: `chiron_sandbox::Model::from_bytes` on the rest, and a re-encode round trip of any
//!   model that validates;
//! * 2: the rest is sealed with the fixed key, unsealed (must round-trip; with a different
//!   `aad` or one flipped bit, must fail), and the plaintext decoded as a `Model`.
//!
//! A model that `Model::from_bytes` accepts must be one the engine can hold: every tensor's
//! element count, computed with checked arithmetic, is its number of values and at most
//! the engine's limit. (Issue 10: a rank-4 tensor of dims 2^43 × 2^50 × 2^43 × 1 overflowed
//! the count, which panicked with overflow checks and wrapped to 0 without them, so an empty
//! tensor of that shape was accepted.)

use std::sync::Arc;

use chiron_crypto::SealingKey;
use chiron_proto::dataset::DatasetHeader;
use chiron_sandbox::Model;

use super::{must, with_mode};

const SECRET: [u8; 32] = [0x01; 32];
const MEASUREMENT: [u8; 32] = [0x02; 32];
const AAD: &[u8] = b"job-fuzz";
/// The engine's largest tensor, in elements (`chiron_engine`'s `MAX_ELEMENTS`).
const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

fn key() -> SealingKey {
    SealingKey::derive(&SECRET, &MEASUREMENT, b"model")
}

fn model(bytes: &[u8]) {
    let Ok(model) = Model::from_bytes(bytes) else {
        return;
    };
    let _ = format!("{model:?}");
    for (dims, values) in &model.tensors {
        let elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(
            elements,
            Some(values.len()),
            "an accepted tensor's shape {dims:?} does not count its {} values",
            values.len()
        );
        assert!(
            (1..=4).contains(&dims.len()) && values.len() <= MAX_TENSOR_ELEMENTS,
            "an accepted tensor of shape {dims:?} is beyond the engine's limits"
        );
    }
    if let Some(header) = &model.header {
        assert!(
            header.validate().is_ok(),
            "an accepted model's header is invalid"
        );
    }
    let count = model.parameter_count();
    let again = must(
        Model::from_bytes(&model.to_bytes()),
        "a valid model re-encodes validly",
    );
    assert_eq!(again.parameter_count(), count);
    assert_eq!(again.tensors.len(), model.tensors.len());
    assert_eq!(again.meta, model.meta);
    assert_eq!(again.header, model.header);
}

/// The `sealed` property (layout in the module documentation).
pub fn sealed(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = key();
    match mode % 3 {
        0 => {
            // Only a blob really sealed under this key and `aad` (such as the seed) opens;
            // its plaintext is then read as the query enclave reads a model.
            if let Ok(plain) = key.unseal(AAD, rest) {
                assert!(
                    key.unseal(b"", rest).is_err(),
                    "a blob opened under another aad"
                );
                model(&plain);
            }
        }
        1 => model(rest),
        _ => {
            let blob = key.seal(AAD, rest);
            let plain = must(key.unseal(AAD, &blob), "a sealed blob unseals");
            assert_eq!(plain.as_slice(), rest);
            assert!(key.unseal(b"other-job", &blob).is_err());
            let mut bad = blob.clone();
            let at = usize::from(mode) * 7 % bad.len();
            bad[at] ^= 0x80;
            assert!(key.unseal(AAD, &bad).is_err(), "a modified blob unsealed");
            let other = SealingKey::derive(&SECRET, &[0x03; 32], b"model");
            assert!(other.unseal(AAD, &blob).is_err());
            model(&plain);
        }
    }
}

/// A small model as a training enclave saves it: the real `chiron_sandbox::Model`.
fn seed_model(header: DatasetHeader) -> Model {
    Model {
        header: Some(header),
        tensors: vec![
            (vec![3, 2], Arc::new(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
            (vec![2], Arc::new(vec![0.0, 1.0])),
            (vec![1, 1, 2, 2], Arc::new(vec![-1.0, 0.5, 0.25, 2.0])),
        ],
        meta: b"mlp 3-2".to_vec(),
    }
}

/// A model trained on tabular and one trained on image data: sealed under the fixed key
/// (mode 0), in the clear (mode 1) and to be sealed by the target (mode 2).
pub fn seeds_sealed() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for header in [
        super::dataset::seed_header(),
        super::dataset::seed_image_header(),
    ] {
        let encoded = seed_model(header).to_bytes();
        seeds.push(with_mode(0, &key().seal(AAD, &encoded)));
        seeds.push(with_mode(1, &encoded));
        seeds.push(with_mode(2, &encoded));
    }
    seeds
}
