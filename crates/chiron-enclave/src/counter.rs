//! The model's query counter: how many inputs the model has answered over its life, sealed by
//! the query enclave and stored by the host next to the model, so that the owner's query
//! budget holds across query-enclave restarts.
//!
//! # Protocol
//!
//! - On `LoadModel` the host supplies the latest sealed counter it stored for the model
//!   (`None` before the model's first query). The enclave opens it with the model-sealing key
//!   and the model's binding (below), and refuses the load if it does not open: a tampered
//!   state, or one that belongs to another model, fails authentication.
//! - Write-ahead: before a query that spends `n` inputs is run, the enclave seals the state
//!   `(version + 1, used + n)`, sends it to the host (`StoreCounter`), and waits for the
//!   host's `CounterStored` of that version. Only then does `predict` run and the answer
//!   leave. The state in memory is advanced when it is sent, whatever the host does next, so
//!   no input is ever answered that a stored state does not count (if the host stored it).
//! - An enclave serves one model, loaded once: a second `LoadModel` is refused, so nothing
//!   in a running enclave can be reset.
//!
//! # Binding
//!
//! The associated data is `"chiron/v1 query counter\0" ‖ SHA-256(sealed model blob) ‖ job id`,
//! under the model-sealing key of this runtime measurement and platform: a counter opens only
//! for the exact sealed model it was written for, and never as a model (another AAD, and a
//! fixed 20-byte plaintext `"CHQC" ‖ version ‖ used`, little-endian).
//!
//! # What a host that rolls back its store gains
//!
//! The enclave has no trusted memory across processes, so it cannot tell the latest stored
//! state from an older one the host kept (or from none at all, which reads as version 0).
//! Let `U_k` be the count sealed in version `k`. Write-ahead gives `answered ≤ U_latest` at
//! every moment. A host that restarts the enclave with version `v < latest` makes it start
//! from `U_v`, so the model can answer `budget − U_v` more inputs, and the total ever
//! answered is at most `U_latest + budget − U_v`: the rollback gains at most `U_latest − U_v`
//! inputs beyond the budget, the inputs counted since version `v` (those answered since, plus
//! at most one query of at most `MAX_QUERY_BATCH` inputs whose state was stored but whose
//! answer never left). Nothing else is regained: every state counts every input answered
//! before it, since a state is written before the query it counts runs. The host cannot forge a lower count than one of the states the
//! enclave gave it (they are authenticated), nor move a count between models. It can repeat
//! the rollback, though: every restart with the initial state (or with no state) grants the
//! whole budget again, so the total answered over `r` rollbacks is at most
//! `budget × (r + 1)`, and only a rollback-protected monotonic counter (a TPM NV counter, a
//! counter service in another attested enclave) removes `r`. A rollback needs the platform's
//! cooperation and helps only the owner (the budget protects the provider's model from the
//! owner): the platform gains no answer itself, because every answer is encrypted under a
//! key only the querying owner holds.

use chiron_crypto::SealingKey;
use sha2::{Digest, Sha256};

/// Domain label at the start of every counter's associated data.
const AAD_PREFIX: &[u8] = b"chiron/v1 query counter\0";
/// First bytes of a counter's plaintext.
const MAGIC: [u8; 4] = *b"CHQC";
/// Plaintext length: magic, version, used.
const PLAINTEXT_LEN: usize = 4 + 8 + 8;

/// A counter state: `used` inputs answered (or about to be) as of `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterState {
    /// Incremented by one with every state written; 0 is the state before any query.
    pub version: u64,
    /// Inputs the model has answered over its life, this state's query included.
    pub used: u64,
}

/// The sealing key and binding of one model's counter.
pub struct CounterSeal {
    key: SealingKey,
    aad: Vec<u8>,
}

/// Why a stored counter was refused.
#[derive(Debug, thiserror::Error)]
#[error("the model's query counter state failed authentication")]
pub struct CounterRefused;

impl CounterSeal {
    /// The seal of the counter of the model sealed in `sealed_model` for `job_id`.
    pub fn new(key: SealingKey, job_id: &str, sealed_model: &[u8]) -> Self {
        let mut aad = AAD_PREFIX.to_vec();
        aad.extend_from_slice(&Sha256::digest(sealed_model));
        aad.extend_from_slice(job_id.as_bytes());
        Self { key, aad }
    }

    /// Seals a state.
    pub fn seal(&self, state: CounterState) -> Vec<u8> {
        let mut plaintext = Vec::with_capacity(PLAINTEXT_LEN);
        plaintext.extend_from_slice(&MAGIC);
        plaintext.extend_from_slice(&state.version.to_le_bytes());
        plaintext.extend_from_slice(&state.used.to_le_bytes());
        self.key.seal(&self.aad, &plaintext)
    }

    /// Opens a stored state; `None` stands for the state before the first query.
    pub fn open(&self, stored: Option<&[u8]>) -> Result<CounterState, CounterRefused> {
        let Some(blob) = stored else {
            return Ok(CounterState {
                version: 0,
                used: 0,
            });
        };
        let plaintext = self
            .key
            .unseal(&self.aad, blob)
            .map_err(|_| CounterRefused)?;
        let plaintext: &[u8; PLAINTEXT_LEN] = plaintext
            .as_slice()
            .try_into()
            .map_err(|_| CounterRefused)?;
        let (magic, rest) = plaintext.split_at(4);
        let (version, used) = rest.split_at(8);
        if magic != MAGIC {
            return Err(CounterRefused);
        }
        let word = |bytes: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            u64::from_le_bytes(word)
        };
        Ok(CounterState {
            version: word(version),
            used: word(used),
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::derive(&[1; 32], &[2; 32], b"model")
    }

    #[test]
    fn a_counter_opens_only_for_its_own_model() {
        let seal = CounterSeal::new(key(), "job-a", b"sealed model a");
        let state = CounterState {
            version: 7,
            used: 123,
        };
        let blob = seal.seal(state);
        assert_eq!(seal.open(Some(&blob)).expect("opens"), state);
        assert_eq!(
            seal.open(None).expect("initial"),
            CounterState {
                version: 0,
                used: 0
            }
        );
        // Same size whatever the count.
        assert_eq!(
            blob.len(),
            seal.seal(CounterState {
                version: u64::MAX,
                used: u64::MAX
            })
            .len()
        );
        for other in [
            CounterSeal::new(key(), "job-b", b"sealed model a"),
            CounterSeal::new(key(), "job-a", b"sealed model b"),
            CounterSeal::new(
                SealingKey::derive(&[1; 32], &[3; 32], b"model"),
                "job-a",
                b"sealed model a",
            ),
        ] {
            assert!(other.open(Some(&blob)).is_err());
        }
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(seal.open(Some(&bad)).is_err(), "byte {i}");
        }
        // A model blob sealed under the same key does not open as a counter.
        let model = key().seal(b"job-a", &[0; PLAINTEXT_LEN]);
        assert!(seal.open(Some(&model)).is_err());
    }
}
