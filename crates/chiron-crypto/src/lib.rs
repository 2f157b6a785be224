//! Chiron cryptography: everything that keeps the owner's data and the provider's model
//! confidential while they pass through machines neither trusts (DESIGN.md, "Attestation and
//! keys").
//!
//! Each module counters one threat from the untrusted platform:
//!
//! * [`dataset`]: the host stores and serves the owner's dataset. Chunked AES-256-GCM STREAM
//!   encryption under a [`DataKey`] keeps it confidential and detects any modification,
//!   reordering, truncation or header edit, naming the failing chunk.
//! * [`channel`]: secrets for a verified enclave cross the host. HPKE seals them to the
//!   enclave's attested ephemeral key, and the enclave's answers come back under a
//!   [`ResponseKey`] whose counter-derived nonces expose replay and reordering.
//! * [`seal`]: models and checkpoints outlive the enclave process on the host's disks. A
//!   [`SealingKey`] derived from the platform's sealing secret (which only the TEE hardware
//!   derives, for this code identity: `chiron-attest`) and the runtime measurement means only
//!   the same runtime on the same platform can open them, and only for the job they belong to.
//!
//! Attestation (evidence, policy, verification) lives in `chiron-attest`. [`CryptoError`]
//! covers the modules here.
//!
//! Every secret is wiped from memory when it is dropped: the key types ([`DataKey`],
//! [`ResponseKey`], [`SealingKey`], [`EnclaveKeypair`]'s private key) zeroize
//! themselves, and decrypted plaintext comes back as [`Zeroizing`] buffers. The key types'
//! `Debug` output shows no secret.

#![forbid(unsafe_code)]

mod aead;
pub mod channel;
pub mod dataset;
mod error;
pub mod seal;

pub use channel::{EnclaveKeypair, ResponseKey, seal_to_enclave};
pub use dataset::{
    DataKey, dataset_part_ranges, decrypt_dataset, decrypt_dataset_in_place, decrypt_dataset_part,
    decrypt_dataset_part_in_place, encrypt_dataset, read_dataset_header,
};
pub use error::CryptoError;
pub use seal::SealingKey;
/// The wrapper decrypted plaintext comes back in: it wipes its contents when dropped.
pub use zeroize::Zeroizing;

#[cfg(test)]
mod tests {
    use zeroize::ZeroizeOnDrop;

    use super::*;

    /// Compiles only for types that wipe themselves when dropped.
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}

    #[test]
    fn every_secret_is_wiped_on_drop() {
        wiped_on_drop::<DataKey>();
        wiped_on_drop::<EnclaveKeypair>();
        wiped_on_drop::<ResponseKey>();
        wiped_on_drop::<SealingKey>();
        wiped_on_drop::<Zeroizing<Vec<u8>>>();
        // hpke's X25519 private key is a plain `[u8; 32]` newtype unless x25519-dalek's
        // `zeroize` feature gives it a wiping `Drop` (it implements no marker trait).
        assert!(std::mem::needs_drop::<
            <hpke::kem::X25519HkdfSha256 as hpke::Kem>::PrivateKey,
        >());
    }
}
