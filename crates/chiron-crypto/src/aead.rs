//! One-shot AES-256-GCM with caller-chosen nonces, shared by [`crate::channel`] and
//! [`crate::seal`]. Nonce uniqueness is each caller's job; this module only keeps the
//! `aes-gcm` API details in one place.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

/// Bytes of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key))
}

/// Encrypts `plaintext`, returning ciphertext followed by the tag.
///
/// # Panics
///
/// If `plaintext` or `aad` exceeds AES-GCM's per-message limit of 64 GiB, the only case in which
/// the cipher refuses; no Chiron message comes near it.
#[allow(clippy::expect_used)]
pub(crate) fn seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buffer.extend_from_slice(plaintext);
    cipher(key)
        .encrypt_in_place(&Nonce::from(*nonce), aad, &mut buffer)
        .expect("AES-GCM refuses only messages above 64 GiB");
    buffer
}

/// Decrypts and authenticates ciphertext-then-tag; `None` when authentication fails.
///
/// The plaintext is wiped when the returned buffer is dropped. On failure the buffer still
/// holds ciphertext (the tag is checked before anything is decrypted).
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    cipher(key)
        .decrypt_in_place(&Nonce::from(*nonce), aad, &mut *buffer)
        .ok()?;
    Some(buffer)
}
