//! The one error type for dataset encryption, attested channel messages and sealing.
//!
//! Messages say what failed and, where it helps, what probably happened, because the person
//! reading them is usually a data owner or operator with no way to look inside the enclave.
//! Authentication failures deliberately do not say *which* of the possible causes applied:
//! an AEAD cannot tell, and guessing would mislead.

use std::io;

use chiron_proto::dataset::HeaderError;
use thiserror::Error;

/// Why an encryption, decryption, sealing or key operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The input does not start with the encrypted-dataset magic bytes.
    #[error("not a Chiron encrypted dataset (bad magic bytes)")]
    DatasetBadMagic,
    /// The container was written by an incompatible version.
    #[error(
        "encrypted dataset format version {found} is not supported (this build reads version {supported})"
    )]
    DatasetVersion {
        /// Version found in the container.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The encoded header is larger than any valid header.
    #[error("encrypted dataset header is {len} bytes, above the {max}-byte limit")]
    DatasetHeaderTooLarge {
        /// Declared header length.
        len: u64,
        /// Largest accepted length.
        max: usize,
    },
    /// The header bytes do not decode.
    #[error("encrypted dataset header is malformed: {0}")]
    DatasetHeaderMalformed(#[source] postcard::Error),
    /// The header decodes but cannot describe a dataset.
    #[error("encrypted dataset header is invalid: {0}")]
    DatasetHeaderInvalid(#[from] HeaderError),
    /// A chunk did not authenticate under the data key.
    #[error(
        "dataset chunk {index} failed authentication: the ciphertext was modified or the key is wrong"
    )]
    DatasetChunk {
        /// Zero-based index of the first chunk that failed.
        index: u64,
    },
    /// The container is shorter than its header implies.
    #[error(
        "dataset ends before its final chunk: expected {expected} bytes, found {found} (the file was cut short or a chunk was removed)"
    )]
    DatasetTruncated {
        /// Length the header implies.
        expected: u64,
        /// Length actually present.
        found: u64,
    },
    /// Bytes follow the final chunk.
    #[error("encrypted dataset has {extra} unexpected bytes after its final chunk")]
    DatasetTrailingData {
        /// How many bytes follow the final chunk.
        extra: u64,
    },
    /// The part of a container asked for holds nothing, or lies outside the body.
    #[error("the requested part of the dataset is empty or outside it")]
    DatasetPartInvalid,
    /// A part of a container is not exactly the preamble and the chunks it should carry.
    #[error("the dataset part is {found} bytes, not the {expected} its header implies")]
    DatasetPartLength {
        /// Length the header and the selection imply.
        expected: u64,
        /// Length actually present.
        found: u64,
    },
    /// The plaintext body given to the encryptor is shorter than the header describes.
    #[error("dataset body is {found} bytes but its header describes {expected} bytes")]
    DatasetBodyTooShort {
        /// Length the header describes.
        expected: u64,
        /// Length the reader produced.
        found: u64,
    },
    /// The plaintext body given to the encryptor is longer than the header describes.
    #[error("dataset body is longer than the {expected} bytes its header describes")]
    DatasetBodyTooLong {
        /// Length the header describes.
        expected: u64,
    },
    /// Decryption produced a body whose length disagrees with the header (a bug, not an attack:
    /// every chunk authenticated).
    #[error("decrypted dataset is {found} bytes but its header describes {expected} bytes")]
    DatasetDecryptedLength {
        /// Length the header describes.
        expected: u64,
        /// Length produced.
        found: u64,
    },
    /// Reading the plaintext or writing the container failed.
    #[error("I/O error while encrypting a dataset: {0}")]
    Io(#[from] io::Error),
    /// An AEAD refused to encrypt (input beyond the cipher's limits).
    #[error("encryption failed: the input exceeds the cipher's limits")]
    Encrypt,
    /// A key was given with the wrong length.
    #[error("a {what} must be {expected} bytes, got {found}")]
    KeyLength {
        /// Which key.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// The enclave public key cannot be used for key agreement.
    #[error(
        "the enclave public key is unusable for key agreement (a low-order point); the evidence that carried it is bogus"
    )]
    ChannelBadEnclaveKey,
    /// A sealed channel message is too short to hold an encapsulated key and a tag.
    #[error("message to the enclave is {len} bytes, too short to be a sealed message")]
    ChannelTooShort {
        /// Length received.
        len: usize,
    },
    /// A sealed channel message did not open.
    #[error(
        "message to the enclave failed to open: it was modified, sealed to another enclave key, or sealed with a different info or aad"
    )]
    ChannelOpen,
    /// An enclave response did not open at the expected counter.
    #[error(
        "enclave response {counter} failed authentication: it was modified, replayed, reordered, or belongs to another session"
    )]
    ResponseOpen {
        /// The counter the caller expected.
        counter: u64,
    },
    /// The blob does not start with the sealed-blob magic bytes.
    #[error("not a Chiron sealed blob (bad magic bytes)")]
    SealedBadMagic,
    /// The blob was sealed by an incompatible version.
    #[error(
        "sealed blob format version {found} is not supported (this build reads version {supported})"
    )]
    SealedVersion {
        /// Version found in the blob.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// The blob is too short to be a sealed blob.
    #[error("sealed blob is {len} bytes, too short to be a sealed blob")]
    SealedTooShort {
        /// Length received.
        len: usize,
    },
    /// The blob did not authenticate under this sealing key.
    #[error(
        "sealed blob failed to unseal: it was modified, sealed for a different job or model (aad), or sealed by a different runtime measurement or platform"
    )]
    Unseal,
}
