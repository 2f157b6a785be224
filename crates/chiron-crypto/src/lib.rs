//! Chiron cryptography: everything that keeps the owner's data and the provider's model
//! confidential while they pass through machines neither trusts (DESIGN.md, "Attestation and
//! keys").
//!
//! Each module counters one threat from the untrusted platform:
//!
//! * [`dataset`]: the host stores and serves the owner's dataset. Chunked AES-256-GCM STREAM
//!   encryption under a [`DataKey`] keeps it confidential and detects any modification,
//!   reordering, truncation or header edit, naming the failing chunk.
//! * [`attest`]: the host could run a modified runtime, or an old one, or replay old evidence.
//!   [`attest::verify`] checks signed evidence (platform, measurement, role, nonce, job) against
//!   the owner's [`Policy`] before any secret leaves the owner. The simulated platform is
//!   **insecure** and accepted only on explicit, dangerously named opt-in.
//! * [`channel`]: secrets for a verified enclave cross the host. HPKE seals them to the
//!   enclave's attested ephemeral key, and the enclave's answers come back under a
//!   [`ResponseKey`] whose counter-derived nonces expose replay and reordering.
//! * [`seal`]: models and checkpoints outlive the enclave process on the host's disks. A
//!   [`SealingKey`] derived from the platform secret and the runtime measurement means only the
//!   same runtime on the same platform can open them, and only for the job they belong to.
//!
//! [`CryptoError`] covers the first three; [`AttestationError`] says why evidence was refused.

#![forbid(unsafe_code)]

mod aead;
pub mod attest;
pub mod channel;
pub mod dataset;
mod error;
pub mod seal;

pub use attest::{
    AttestationError, Policy, SimPlatform, VerifiedEnclave, measure_bytes, measure_file, verify,
};
pub use channel::{EnclaveKeypair, ResponseKey, seal_to_enclave};
pub use dataset::{DataKey, decrypt_dataset, encrypt_dataset, read_dataset_header};
pub use error::CryptoError;
pub use seal::SealingKey;
