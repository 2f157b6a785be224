//! Why a channel could not be opened, or why it stopped.
//!
//! One enum for the crate. Every message names the check that failed and never carries
//! payload bytes: what the channel carries may be derived from an owner's data.

use chiron_attest::{AttestationError, AttesterError};
use chiron_proto::evidence::EvidenceError;
use thiserror::Error;

use crate::records::RecordKind;

/// Why a channel failed. See the module documentation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChannelError {
    // --- This enclave's certificate -------------------------------------------------------
    /// This enclave's platform could not produce evidence for its certificate.
    #[error("this enclave could not attest its channel key: {0}")]
    Attester(#[from] AttesterError),
    /// This enclave's evidence could not be encoded.
    #[error("this enclave's evidence cannot be encoded: {0}")]
    EvidenceEncoding(#[source] EvidenceError),
    /// The certificate or its key could not be made.
    #[error("cannot make the channel certificate: {0}")]
    Certificate(String),
    /// The certificate would be too large for a TLS handshake message.
    #[error(
        "the channel certificate would be {len} bytes, above the {max}-byte limit of a TLS \
         handshake message; give large endorsements to the verifier's policy instead"
    )]
    CertificateTooLarge {
        /// The certificate's length.
        len: usize,
        /// The largest certificate issued.
        max: usize,
    },
    /// The clock is outside the range a certificate can express.
    #[error("the clock reads a time no certificate can carry")]
    Clock,

    // --- The peer's certificate ------------------------------------------------------------
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer presented a chain; an attested channel certificate stands alone.
    #[error(
        "the peer presented {0} certificates besides its own; an attested certificate stands alone"
    )]
    UnexpectedIntermediates(usize),
    /// The peer's certificate is not a DER X.509 certificate.
    #[error("the peer's certificate is not a well-formed X.509 certificate")]
    MalformedCertificate,
    /// The peer's certificate carries no Chiron evidence extension.
    #[error("the peer's certificate carries no attestation evidence (extension {oid})", oid = crate::cert::EVIDENCE_OID_STRING)]
    MissingEvidence,
    /// The peer's certificate carries the evidence extension more than once.
    #[error("the peer's certificate carries the attestation evidence extension more than once")]
    DuplicateEvidence,
    /// The evidence extension's value is not a DER OCTET STRING.
    #[error("the peer's evidence extension is not a DER OCTET STRING")]
    MalformedExtension,
    /// The evidence in the peer's certificate cannot be decoded.
    #[error("the evidence in the peer's certificate cannot be decoded: {0}")]
    MalformedEvidence(#[source] EvidenceError),
    /// The peer's certificate is not valid yet.
    #[error("the peer's certificate is valid only from {not_before} (Unix time), it is now {now}")]
    NotYetValid {
        /// Start of the certificate's validity, seconds since the Unix epoch.
        not_before: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The peer's certificate has expired.
    #[error("the peer's certificate expired at {not_after} (Unix time), it is now {now}")]
    Expired {
        /// End of the certificate's validity, seconds since the Unix epoch.
        not_after: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The peer's certificate claims a longer validity than this end accepts.
    #[error("the peer's certificate is valid for {seconds} s, longer than the {max} s accepted")]
    ValidityTooLong {
        /// The certificate's validity, in seconds.
        seconds: u64,
        /// The longest validity accepted, in seconds.
        max: u64,
    },
    /// The evidence was refused: wrong platform, measurement, role or job, or forged.
    #[error("the peer's evidence was refused: {0}")]
    Attestation(#[source] AttestationError),
    /// The evidence is authentic but was made for another validity window than the
    /// certificate's: it was moved from another certificate.
    #[error(
        "the peer's evidence does not vouch for its certificate's validity window (evidence moved from another certificate)"
    )]
    WindowNotBound,
    /// The evidence is authentic but vouches for another key than the certificate's.
    #[error(
        "the peer's evidence vouches for another key than its certificate's (evidence moved from another certificate)"
    )]
    KeyNotBound,

    // --- The connection --------------------------------------------------------------------
    /// The peer refused this end (its verifier failed) or broke off the handshake.
    #[error("the peer refused the channel (TLS alert {alert})")]
    PeerRefused {
        /// The TLS alert the peer sent, as rustls names it.
        alert: String,
    },
    /// The handshake did not complete in time.
    #[error("the handshake did not complete within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The peer did not confirm the handshake as the protocol requires.
    #[error("the peer did not confirm the handshake")]
    NoConfirmation,
    /// The TLS library refused a configuration or a handshake.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[source] std::io::Error),

    // --- Records ---------------------------------------------------------------------------
    /// A record size outside what a channel allows.
    #[error("a record of {size} bytes is outside the allowed {min}..={max} bytes")]
    InvalidRecordSize {
        /// The size asked for.
        size: usize,
        /// The smallest record allowed.
        min: usize,
        /// The largest record allowed.
        max: usize,
    },
    /// A payload to send does not fit in one record.
    #[error("a payload of {length} bytes does not fit in a record ({capacity} bytes)")]
    PayloadTooLarge {
        /// The payload's length.
        length: usize,
        /// A record's payload capacity.
        capacity: usize,
    },
    /// A received record's header claims more payload than a record holds.
    #[error("a record claims {length} bytes of payload, more than the {capacity} a record holds")]
    RecordTooLong {
        /// The length the header claims.
        length: u32,
        /// A record's payload capacity.
        capacity: usize,
    },
    /// A record arrived out of order: replayed, reordered, or one was dropped.
    #[error(
        "record {found} arrived where record {expected} was due (replayed, reordered or dropped)"
    )]
    OutOfSequence {
        /// The sequence number due.
        expected: u64,
        /// The sequence number received.
        found: u64,
    },
    /// A record of a kind this version does not know.
    #[error("a record of unknown kind {0}")]
    UnknownKind(u8),
    /// A record's padding is not all zero.
    #[error("a record's padding is not zero")]
    NonZeroPadding,
    /// A control record (cover, close) carries a payload.
    #[error("a {kind:?} record carries {length} bytes of payload; it must carry none")]
    ControlPayload {
        /// The record's kind.
        kind: RecordKind,
        /// The payload length it claims.
        length: u32,
    },
    /// A record of a message does not have the length the message's public size implies.
    #[error("record {index} of a message carries {found} bytes, {expected} expected")]
    MessageLength {
        /// The record's index in the message.
        index: usize,
        /// The payload length implied by the message's size.
        expected: usize,
        /// The payload length received.
        found: usize,
    },
    /// The peer closed the channel (a close record) while a message was expected.
    #[error("the peer closed the channel")]
    Closed,
    /// The stream ended without a close record, at or inside a record.
    #[error("the channel ended without a close record (truncated)")]
    Truncated,
    /// The sequence numbers of this direction are exhausted.
    #[error("the channel's sequence numbers are exhausted")]
    SequenceExhausted,
}

impl ChannelError {
    /// The error for an I/O failure on a TLS stream: a TLS alert from the peer becomes
    /// [`ChannelError::PeerRefused`], an early end [`ChannelError::Truncated`].
    pub(crate) fn from_io(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            return Self::Truncated;
        }
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::AlertReceived(alert)) => Self::PeerRefused {
                alert: format!("{alert:?}"),
            },
            Some(tls) => Self::Tls(tls.clone()),
            None => Self::Io(error),
        }
    }
}
