//! Messages to an attested enclave (HPKE, RFC 9180) and its answers back.
//!
//! An enclave proves in its attestation evidence that it holds the private half of an ephemeral
//! X25519 key. The owner seals secrets (data keys, queries) to that public key, so only that
//! enclave process can read them, however many untrusted hops carry the bytes. The suite is
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, in base mode.
//!
//! Each sealed message also yields a [`ResponseKey`], exported from the HPKE context, which the
//! enclave uses to encrypt what it sends back (event streams, query answers). Its nonces are
//! derived from a message counter, so the host cannot replay, drop-and-shift or reorder the
//! answers without the owner noticing.
//!
//! Sealed message layout: `enc (32 bytes) ‖ ChaCha20-Poly1305 ciphertext ‖ tag (16 bytes)`.
//! The suite is fixed; a future suite must use different `info` labels.

use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, HpkeError, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::aead;
use crate::error::CryptoError;

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

/// Bytes of the encapsulated key at the start of a sealed message.
pub const ENCAPSULATED_KEY_LEN: usize = 32;
const HPKE_TAG_LEN: usize = 16;
/// HPKE exporter context for the response key.
const RESPONSE_EXPORT_LABEL: &[u8] = b"chiron response";

/// The enclave's ephemeral key pair; it lives and dies with one enclave process.
///
/// The private key is wiped when the pair is dropped: it is an x25519-dalek `StaticSecret`,
/// which zeroizes itself with that crate's `zeroize` feature (turned on by this crate's
/// manifest). `Debug` shows the public key only.
pub struct EnclaveKeypair {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl EnclaveKeypair {
    /// A fresh key pair from the operating system's random number generator.
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair(&mut HpkeRng);
        Self {
            secret,
            public: public.to_bytes().into(),
        }
    }

    /// The public key to place in attestation evidence.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Opens a message sealed with [`seal_to_enclave`] to this key pair, returning the plaintext
    /// (wiped when dropped) and the key for answering the sender.
    ///
    /// `info` and `aad` must equal the sender's.
    pub fn open(
        &self,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, ResponseKey), CryptoError> {
        let Some((enc, ciphertext)) = sealed
            .split_first_chunk::<ENCAPSULATED_KEY_LEN>()
            .filter(|(_, ct)| ct.len() >= HPKE_TAG_LEN)
        else {
            return Err(CryptoError::ChannelTooShort { len: sealed.len() });
        };
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|_| CryptoError::ChannelOpen)?;
        let mut context =
            hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, &self.secret, &enc, info)
                // A low-order `enc` fails decapsulation: a forged message, not our key's fault.
                .map_err(|_| CryptoError::ChannelOpen)?;
        let plaintext = Zeroizing::new(
            context
                .open(ciphertext, aad)
                .map_err(|_| CryptoError::ChannelOpen)?,
        );
        // Exported straight into the key, so no other copy is left to wipe.
        let mut response = ResponseKey([0; 32]);
        context
            .export(RESPONSE_EXPORT_LABEL, &mut response.0)
            .map_err(|_| CryptoError::ChannelOpen)?;
        Ok((plaintext, response))
    }
}

// The private key's own `Drop` wipes it (see the type's documentation); the crate's tests check
// that it has one.
impl ZeroizeOnDrop for EnclaveKeypair {}

impl fmt::Debug for EnclaveKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnclaveKeypair")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// Seals `plaintext` to the enclave holding `enclave_pk`, returning the sealed message and the
/// key with which to open the enclave's answers.
///
/// Call this only with a public key taken from evidence that passed verification.
/// `info` names the purpose (for example `b"chiron data key"`); `aad` binds public context
/// such as a job id. Both must be given again to [`EnclaveKeypair::open`].
pub fn seal_to_enclave(
    enclave_pk: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, ResponseKey), CryptoError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(enclave_pk)
        .map_err(|_| CryptoError::ChannelBadEnclaveKey)?;
    let (enc, mut context) =
        hpke::setup_sender::<Aead, Kdf, Kem, _>(&OpModeS::Base, &pk, info, &mut HpkeRng).map_err(
            |e| match e {
                HpkeError::EncapError => CryptoError::ChannelBadEnclaveKey,
                _ => CryptoError::Encrypt,
            },
        )?;
    let ciphertext = context
        .seal(plaintext, aad)
        .map_err(|_| CryptoError::Encrypt)?;
    let mut response = ResponseKey([0; 32]);
    context
        .export(RESPONSE_EXPORT_LABEL, &mut response.0)
        .map_err(|_| CryptoError::Encrypt)?;
    let mut sealed = Vec::with_capacity(ENCAPSULATED_KEY_LEN + ciphertext.len());
    sealed.extend_from_slice(&enc.to_bytes());
    sealed.extend_from_slice(&ciphertext);
    Ok((sealed, response))
}

/// The key for the enclave's answers to one sealed message.
///
/// Only the enclave seals with it and only the owner opens with it: the nonce is the counter,
/// so two parties sealing under one key would reuse nonces. The enclave must never seal two
/// messages under the same counter (count up from 0); the owner opens message `n` with
/// counter `n`, which rejects replayed, reordered or dropped-and-shifted messages.
///
/// Wiped when dropped; `Debug` does not show it.
#[derive(Clone, ZeroizeOnDrop)]
pub struct ResponseKey([u8; 32]);

/// Length of the salt of a resumed event stream ([`ResponseKey::resumed`]).
pub const RESUME_SALT_LEN: usize = 32;

impl ResponseKey {
    /// Wraps key bytes the owner persisted, e.g. to resume reading an event stream.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for the owner to persist.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The key of an event stream taken over by a replacement enclave: HKDF-SHA256 of this
    /// key with the `salt` the replacement drew at random and sends in clear. The
    /// replacement cannot know which counters the lost enclave used under this key, so it
    /// counts from 0 under a key of its own; the owner, who holds this key, derives the
    /// same one from the salt.
    pub fn resumed(&self, salt: &[u8; RESUME_SALT_LEN]) -> Self {
        let mut key = [0u8; 32];
        // 32 bytes are far below HKDF-SHA256's limit of 255 × 32: this cannot fail.
        let _ = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &self.0)
            .expand(b"chiron/v1 resumed event stream", &mut key);
        Self(key)
    }

    /// Encrypts answer number `counter` (AES-256-GCM, ciphertext followed by a 16-byte tag).
    ///
    /// # Panics
    ///
    /// If `pt` or `aad` exceeds AES-GCM's 64 GiB message limit.
    pub fn seal(&self, counter: u64, aad: &[u8], pt: &[u8]) -> Vec<u8> {
        aead::seal(&self.0, &nonce(counter), aad, pt)
    }

    /// Decrypts answer number `counter`; fails unless it was sealed under that very counter,
    /// key and `aad`. The plaintext is wiped when the returned buffer is dropped.
    pub fn open(
        &self,
        counter: u64,
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        aead::open(&self.0, &nonce(counter), aad, ct).ok_or(CryptoError::ResponseOpen { counter })
    }
}

impl fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseKey(<redacted>)")
    }
}

/// The AES-GCM nonce for answer `counter`: four zero bytes, then the counter big-endian.
fn nonce(counter: u64) -> [u8; aead::NONCE_LEN] {
    let mut nonce = [0; aead::NONCE_LEN];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

/// The operating system's RNG, presented through the `rand_core` 0.9 traits `hpke` 0.13 wants
/// (the workspace's `rand` 0.8 implements the 0.6 traits).
struct HpkeRng;

impl hpke::rand_core::RngCore for HpkeRng {
    fn next_u32(&mut self) -> u32 {
        rand::RngCore::next_u32(&mut rand::rngs::OsRng)
    }

    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut rand::rngs::OsRng)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, dst);
    }
}

impl hpke::rand_core::CryptoRng for HpkeRng {}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] = b"chiron test";
    const AAD: &[u8] = b"job-1";

    #[test]
    fn round_trip_and_shared_response_key() -> Result<(), CryptoError> {
        let enclave = EnclaveKeypair::generate();
        let (sealed, owner_key) = seal_to_enclave(&enclave.public_key(), INFO, AAD, b"secret")?;
        assert_eq!(sealed.len(), ENCAPSULATED_KEY_LEN + 6 + HPKE_TAG_LEN);
        let (plaintext, enclave_key) = enclave.open(INFO, AAD, &sealed)?;
        assert_eq!(*plaintext, b"secret");
        assert_eq!(owner_key.to_bytes(), enclave_key.to_bytes());

        let answer = enclave_key.seal(0, AAD, b"epoch 1 done");
        assert_eq!(*owner_key.open(0, AAD, &answer)?, b"epoch 1 done");
        Ok(())
    }

    #[test]
    fn empty_plaintext_round_trips() -> Result<(), CryptoError> {
        let enclave = EnclaveKeypair::generate();
        let (sealed, _) = seal_to_enclave(&enclave.public_key(), INFO, AAD, b"")?;
        assert_eq!(*enclave.open(INFO, AAD, &sealed)?.0, b"");
        Ok(())
    }

    #[test]
    fn wrong_info_aad_or_key_fail() -> Result<(), CryptoError> {
        let enclave = EnclaveKeypair::generate();
        let (sealed, _) = seal_to_enclave(&enclave.public_key(), INFO, AAD, b"secret")?;
        assert!(matches!(
            enclave.open(b"other", AAD, &sealed),
            Err(CryptoError::ChannelOpen)
        ));
        assert!(matches!(
            enclave.open(INFO, b"job-2", &sealed),
            Err(CryptoError::ChannelOpen)
        ));
        assert!(matches!(
            EnclaveKeypair::generate().open(INFO, AAD, &sealed),
            Err(CryptoError::ChannelOpen)
        ));
        Ok(())
    }

    #[test]
    fn every_bit_flip_and_truncation_fails() -> Result<(), CryptoError> {
        let enclave = EnclaveKeypair::generate();
        let (sealed, _) = seal_to_enclave(&enclave.public_key(), INFO, AAD, b"secret")?;
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(enclave.open(INFO, AAD, &bad).is_err(), "byte {i}");
        }
        for len in 0..sealed.len() {
            assert!(
                enclave.open(INFO, AAD, &sealed[..len]).is_err(),
                "len {len}"
            );
        }
        assert!(matches!(
            enclave.open(
                INFO,
                AAD,
                &sealed[..ENCAPSULATED_KEY_LEN + HPKE_TAG_LEN - 1]
            ),
            Err(CryptoError::ChannelTooShort { .. })
        ));
        Ok(())
    }

    #[test]
    fn low_order_enclave_key_is_refused() {
        // The all-zero X25519 point has small order: the shared secret would be all zero.
        assert!(matches!(
            seal_to_enclave(&[0; 32], INFO, AAD, b"secret"),
            Err(CryptoError::ChannelBadEnclaveKey)
        ));
    }

    #[test]
    fn responses_are_bound_to_counter_aad_and_key() -> Result<(), CryptoError> {
        let key = ResponseKey::from_bytes([7; 32]);
        let first = key.seal(0, AAD, b"event 0");
        let second = key.seal(1, AAD, b"event 1");
        assert_eq!(*key.open(1, AAD, &second)?, b"event 1");
        // Replaying event 0 as event 1, or event 1 as event 0, fails.
        assert!(matches!(
            key.open(1, AAD, &first),
            Err(CryptoError::ResponseOpen { counter: 1 })
        ));
        assert!(key.open(0, AAD, &second).is_err());
        assert!(key.open(0, b"job-2", &first).is_err());
        assert!(
            ResponseKey::from_bytes([8; 32])
                .open(0, AAD, &first)
                .is_err()
        );
        for i in 0..first.len() {
            let mut bad = first.clone();
            bad[i] ^= 0x80;
            assert!(key.open(0, AAD, &bad).is_err(), "byte {i}");
        }
        assert!(key.open(0, AAD, &first[..15]).is_err());
        assert_eq!(format!("{key:?}"), "ResponseKey(<redacted>)");
        Ok(())
    }
}
