//! Sealed blobs from the host's object store and the model encoding inside them.
//!
//! The first byte picks the mode:
//! * 0: `SealingKey::unseal` with a fixed key on the rest, and `Model::from_bytes` on what
//!   opens (only genuinely sealed seeds do: the fuzzer cannot forge AES-GCM);
//! * 1: `chiron_sandbox::Model::from_bytes` on the rest, and a re-encode round trip of any
//!   model that validates;
//! * 2: the rest is sealed with the fixed key, unsealed (must round-trip; with a different
//!   `aad` or one flipped bit, must fail), and the plaintext decoded as a `Model`.
#![no_main]

use chiron_crypto::SealingKey;
use chiron_sandbox::Model;
use libfuzzer_sys::fuzz_target;

const SECRET: [u8; 32] = [0x01; 32];
const MEASUREMENT: [u8; 32] = [0x02; 32];
const AAD: &[u8] = b"job-fuzz";

fn model(bytes: &[u8]) {
    let Ok(model) = Model::from_bytes(bytes) else {
        return;
    };
    let _ = format!("{model:?}");
    let count = model.parameter_count();
    let again = Model::from_bytes(&model.to_bytes()).expect("a valid model re-encodes validly");
    assert_eq!(again.parameter_count(), count);
    assert_eq!(again.tensors.len(), model.tensors.len());
    assert_eq!(again.meta, model.meta);
    assert_eq!(again.header, model.header);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = SealingKey::derive(&SECRET, &MEASUREMENT, b"model");
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
            let plain = key.unseal(AAD, &blob).expect("a sealed blob unseals");
            assert_eq!(plain, rest);
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
});
