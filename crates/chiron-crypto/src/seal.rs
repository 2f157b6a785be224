//! Sealing: encrypting models and checkpoints so they outlive the enclave process.
//!
//! Sealed blobs sit in the untrusted host's object store. The key is derived from the platform's
//! sealing secret and the runtime measurement, so only the same measured runtime on the same
//! platform can open them: a modified runtime (different measurement) or another machine
//! (different secret) derives a different key. The caller's `aad` (a job or model id) binds each
//! blob to what it belongs to, so the host cannot serve one job's model as another's.
//!
//! Blob layout: `"CHSL" ‖ version (1 byte) ‖ random 12-byte nonce ‖ AES-256-GCM ciphertext ‖ tag`.
//! The magic and version are authenticated along with `aad`.

use std::fmt;

use hkdf::Hkdf;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::aead;
use crate::error::CryptoError;

const MAGIC: [u8; 4] = *b"CHSL";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = MAGIC.len() + 1;
/// HKDF salt: separates sealing keys from any other use of the platform secret.
const SALT: &[u8] = b"chiron sealing key v1";

/// A key for sealing blobs to one runtime measurement on one platform, for one purpose.
///
/// Wiped when dropped; `Debug` does not show it.
#[derive(Clone, ZeroizeOnDrop)]
pub struct SealingKey([u8; 32]);

impl SealingKey {
    /// Derives the key with HKDF-SHA256 from the platform's sealing secret, keyed to the runtime
    /// `measurement` and a `purpose` label (for example `b"model"` or `b"checkpoint"`), so that
    /// keys for different purposes are independent.
    pub fn derive(platform_secret: &[u8; 32], measurement: &[u8; 32], purpose: &[u8]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), platform_secret);
        // Derived straight into the key, so no other copy is left to wipe.
        let mut key = Self([0; 32]);
        // The measurement has a fixed length, so `measurement ‖ purpose` is unambiguous.
        match hkdf.expand_multi_info(&[measurement, purpose], &mut key.0) {
            Ok(()) => key,
            // HKDF-SHA256 only refuses outputs longer than 255 × 32 bytes.
            Err(_) => unreachable!("HKDF-SHA256 always yields 32 bytes"),
        }
    }

    /// Seals `pt`, bound to `aad`, under a fresh random nonce.
    ///
    /// Random 96-bit nonces are safe for far more blobs than one key will ever seal
    /// (the usual bound is 2³² messages per key).
    ///
    /// # Panics
    ///
    /// If `pt` or `aad` exceeds AES-GCM's 64 GiB message limit.
    pub fn seal(&self, aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let mut nonce = [0; aead::NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = aead::seal(&self.0, &nonce, &bound_aad(aad), pt);
        let mut blob = Vec::with_capacity(PREFIX_LEN + nonce.len() + ciphertext.len());
        blob.extend_from_slice(&MAGIC);
        blob.push(VERSION);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        blob
    }

    /// Opens a blob made by [`SealingKey::seal`] with the same key and `aad`. The plaintext is
    /// wiped when the returned buffer is dropped.
    pub fn unseal(&self, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let too_short = || CryptoError::SealedTooShort { len: blob.len() };
        let (magic, rest) = blob.split_first_chunk::<4>().ok_or_else(too_short)?;
        if *magic != MAGIC {
            return Err(CryptoError::SealedBadMagic);
        }
        let (&version, rest) = rest.split_first().ok_or_else(too_short)?;
        if version != VERSION {
            return Err(CryptoError::SealedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let (nonce, ciphertext) = rest
            .split_first_chunk::<{ aead::NONCE_LEN }>()
            .filter(|(_, ct)| ct.len() >= aead::TAG_LEN)
            .ok_or_else(too_short)?;
        aead::open(&self.0, nonce, &bound_aad(aad), ciphertext).ok_or(CryptoError::Unseal)
    }
}

/// The AEAD associated data: the blob's magic and version, then the caller's `aad`.
fn bound_aad(aad: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(PREFIX_LEN + aad.len());
    bound.extend_from_slice(&MAGIC);
    bound.push(VERSION);
    bound.extend_from_slice(aad);
    bound
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [1; 32];
    const MEASUREMENT: [u8; 32] = [2; 32];

    fn key() -> SealingKey {
        SealingKey::derive(&SECRET, &MEASUREMENT, b"model")
    }

    #[test]
    fn round_trip() -> Result<(), CryptoError> {
        let blob = key().seal(b"job-1", b"weights");
        assert_eq!(*key().unseal(b"job-1", &blob)?, b"weights");
        assert_eq!(*key().unseal(b"job-1", &key().seal(b"job-1", b""))?, b"");
        // Fresh nonces: sealing twice gives different blobs.
        assert_ne!(blob, key().seal(b"job-1", b"weights"));
        Ok(())
    }

    #[test]
    fn other_runtime_platform_or_purpose_cannot_open() {
        let blob = key().seal(b"job-1", b"weights");
        for other in [
            SealingKey::derive(&SECRET, &[3; 32], b"model"),
            SealingKey::derive(&[4; 32], &MEASUREMENT, b"model"),
            SealingKey::derive(&SECRET, &MEASUREMENT, b"checkpoint"),
        ] {
            assert!(matches!(
                other.unseal(b"job-1", &blob),
                Err(CryptoError::Unseal)
            ));
        }
    }

    #[test]
    fn aad_swap_is_detected() {
        let blob = key().seal(b"job-1", b"weights");
        assert!(matches!(
            key().unseal(b"job-2", &blob),
            Err(CryptoError::Unseal)
        ));
    }

    #[test]
    fn flips_and_truncation_are_detected() {
        let blob = key().seal(b"job-1", b"weights");
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(key().unseal(b"job-1", &bad).is_err(), "byte {i}");
        }
        for len in 0..blob.len() {
            assert!(key().unseal(b"job-1", &blob[..len]).is_err(), "len {len}");
        }
        let mut bad = blob.clone();
        bad[0] ^= 1;
        assert!(matches!(
            key().unseal(b"job-1", &bad),
            Err(CryptoError::SealedBadMagic)
        ));
        let mut bad = blob.clone();
        bad[4] = 2;
        assert!(matches!(
            key().unseal(b"job-1", &bad),
            Err(CryptoError::SealedVersion { found: 2, .. })
        ));
        assert!(matches!(
            key().unseal(b"job-1", &blob[..PREFIX_LEN + 12 + 15]),
            Err(CryptoError::SealedTooShort { .. })
        ));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", key()), "SealingKey(<redacted>)");
    }
}
