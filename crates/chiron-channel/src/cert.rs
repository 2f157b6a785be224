//! This enclave's side: a fresh key per connection and a self-signed certificate whose
//! extension carries evidence that binds that key.
//!
//! # The certificate
//!
//! - **Key**: a fresh Ed25519 key for every connection, generated inside the enclave and
//!   never written anywhere; it signs the TLS 1.3 handshake (`CertificateVerify`). Its
//!   signatures are always 64 bytes, so a handshake is the same size every time (ECDSA's DER
//!   signatures vary by a byte or two, at random, which a platform timing a private job's
//!   traffic would see as noise in every transcript).
//! - **Validity**: `not_before` = now − [`CLOCK_SKEW`], `not_after` = now + the identity's
//!   validity ([`DEFAULT_VALIDITY`], ten minutes, by default).
//! - **Extension** [`EVIDENCE_OID`] (not critical): `extnValue` holds a DER OCTET STRING whose
//!   content is the enclave's evidence (`chiron_proto::evidence::Evidence`) in its wire form
//!   (`Evidence::to_bytes`), for
//!   ```text
//!   enclave_public_key = SHA-256("chiron ra-tls key v1\0" || SubjectPublicKeyInfo DER)
//!   nonce              = SHA-256("chiron ra-tls validity v1\0" || not_before || not_after)
//!   context            = the job context (chiron_attest::context_digest of the job id)
//!   role               = ParameterServer or Worker
//!   ```
//!   (times as big-endian u64 seconds since the Unix epoch). The platform signs these through
//!   the report data (`chiron_attest::binding`), so the evidence vouches for exactly this
//!   certificate's key, for this validity window, in this role, for this job.
//!
//! - **Serial number**: 20 bytes from the SHA-256 of the key ([`serial_number`]), its first
//!   byte always in `0x40..=0x7f`, so that its DER encoding is always 22 bytes. (rcgen's
//!   default, the hash with the top bit cleared, loses a byte whenever the hash starts with
//!   `0x00` or `0x80` and the next is below `0x80`, about one certificate in 256, and a private
//!   job's transcript would show it.)
//!
//! Nothing else in the certificate is relied on: subject, serial number and the self-signature
//! carry no trust (the verifier checks the key binding and the handshake signature instead).
//!
//! # The OID
//!
//! [`EVIDENCE_OID`] is `1.3.6.1.4.1.32473.1.1.1`: arc `.1` (Chiron), `.1` (channels), `.1`
//! (evidence, version 1) under Private Enterprise Number 32473. **32473 is IANA's PEN for
//! documentation (RFC 5612), a placeholder**: Chiron has no PEN of its own yet. Register one
//! (free, <https://pen.iana.org>) and change this constant before a deployment that others
//! may meet. Changing it is a new runtime build, which every peer's policy must list anyway,
//! so no migration is needed. (A UUID arc, `2.25.<uuid>`, would need no registration, but
//! rcgen writes OID components as u64 only.)

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chiron_attest::attester::{self, Platform};
use chiron_proto::evidence::Role;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, PKCS_ED25519,
    PublicKeyData, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::error::ChannelError;

/// The OID of the certificate extension that carries the evidence (see the module
/// documentation: a placeholder arc until Chiron registers its own).
pub const EVIDENCE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 1, 1, 1];

/// [`EVIDENCE_OID`] in dotted form.
pub const EVIDENCE_OID_STRING: &str = "1.3.6.1.4.1.32473.1.1.1";

/// How long a channel certificate is valid by default, from the moment it is made.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(10 * 60);

/// How far `not_before` is set back, so that a peer whose clock is slightly behind accepts
/// the certificate.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The largest certificate this end issues. rustls refuses handshake messages over 64 KiB,
/// and the certificate travels in one (with a few bytes of framing). Evidence with DCAP
/// collateral is some 20–30 KiB; larger endorsements belong in the verifier's policy
/// (`Policy::with_endorsements`), not in every certificate.
pub const MAX_CERTIFICATE_LEN: usize = 63 * 1024;

/// Domain separation of the key binding.
const KEY_DOMAIN: &[u8] = b"chiron ra-tls key v1\0";
/// Domain separation of the validity binding.
const WINDOW_DOMAIN: &[u8] = b"chiron ra-tls validity v1\0";

/// The value the evidence's `enclave_public_key` takes for a certificate whose
/// SubjectPublicKeyInfo is `spki_der`.
pub fn key_binding(spki_der: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(KEY_DOMAIN);
    hasher.update(spki_der);
    hasher.finalize().into()
}

/// The value the evidence's `nonce` takes for a certificate valid from `not_before` to
/// `not_after` (seconds since the Unix epoch).
pub fn window_binding(not_before: u64, not_after: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(WINDOW_DOMAIN);
    hasher.update(not_before.to_be_bytes());
    hasher.update(not_after.to_be_bytes());
    hasher.finalize().into()
}

/// The serial number of the certificate for the key whose SubjectPublicKeyInfo is
/// `spki_der`: the first 20 bytes of its SHA-256 (unique per key, as RFC 5280 asks of an
/// issuer), the first byte forced into `0x40..=0x7f`, so that the number is positive and its
/// DER encoding neither drops a leading zero byte nor adds one: every certificate, and so
/// every handshake, is the same size.
pub fn serial_number(spki_der: &[u8]) -> [u8; 20] {
    let digest: [u8; 32] = Sha256::digest(spki_der).into();
    let mut serial = [0; 20];
    serial.copy_from_slice(&digest[..20]);
    serial[0] = 0x40 | (serial[0] & 0x3f);
    serial
}

/// The current time in seconds since the Unix epoch.
pub(crate) fn unix_now() -> Result<u64, ChannelError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| ChannelError::Clock)
}

/// This enclave as it presents itself on channels: its platform, its role and its job.
#[derive(Clone)]
pub struct LocalIdentity {
    platform: Arc<dyn Platform>,
    role: Role,
    context: [u8; 32],
    validity: Duration,
}

impl LocalIdentity {
    /// An enclave on `platform`, in `role`, serving the job whose context is `context`
    /// (`chiron_attest::context_digest` of the job id). Its certificates are valid for
    /// [`DEFAULT_VALIDITY`].
    pub fn new(platform: Arc<dyn Platform>, role: Role, context: [u8; 32]) -> Self {
        Self {
            platform,
            role,
            context,
            validity: DEFAULT_VALIDITY,
        }
    }

    /// How long each certificate is valid after it is made (default [`DEFAULT_VALIDITY`]).
    /// Peers refuse certificates valid for longer than their own limit
    /// (`PeerExpectation::max_validity`).
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// The role this enclave attests to.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A fresh key and certificate for one connection, valid from now.
    pub fn issue(&self) -> Result<AttestedCertificate, ChannelError> {
        let now = unix_now()?;
        let not_before = now.saturating_sub(CLOCK_SKEW.as_secs());
        let not_after = now
            .checked_add(self.validity.as_secs())
            .ok_or(ChannelError::Clock)?;
        AttestedCertificate::issue(
            self.platform.as_ref(),
            self.role,
            self.context,
            not_before,
            not_after,
        )
    }
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("tee", &self.platform.tee())
            .field("role", &self.role)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, for one connection. `Debug` shows no key.
pub struct AttestedCertificate {
    certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl AttestedCertificate {
    /// A fresh Ed25519 key and a certificate valid from `not_before` to `not_after` (seconds
    /// since the Unix epoch) carrying evidence from `platform` that binds the key, the
    /// window, `role` and `context`. [`LocalIdentity::issue`] calls this with the current
    /// time; tests call it to make certificates of other times.
    pub fn issue(
        platform: &dyn Platform,
        role: Role,
        context: [u8; 32],
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, ChannelError> {
        let rcgen_error = |e: rcgen::Error| ChannelError::Certificate(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(rcgen_error)?;
        let evidence = attester::evidence(
            platform,
            role,
            key_binding(&key.subject_public_key_info()),
            window_binding(not_before, not_after),
            context,
        )?;
        let evidence = evidence
            .to_bytes()
            .map_err(ChannelError::EvidenceEncoding)?;

        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(&serial_number(
            &key.subject_public_key_info(),
        )));
        params.not_before = certificate_time(not_before)?;
        params.not_after = certificate_time(not_after)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "chiron attested channel");
        params.distinguished_name = name;
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                EVIDENCE_OID,
                extension_value(&evidence),
            ));
        let certificate = params.self_signed(&key).map_err(rcgen_error)?;
        if certificate.der().len() > MAX_CERTIFICATE_LEN {
            return Err(ChannelError::CertificateTooLarge {
                len: certificate.der().len(),
                max: MAX_CERTIFICATE_LEN,
            });
        }
        Ok(Self {
            certificate: certificate.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// A certificate made elsewhere (DER) with its PKCS#8 private key (DER). For tests and
    /// tools; nothing here checks that the two belong together (rustls does when the
    /// handshake is set up).
    pub fn from_der(certificate: Vec<u8>, pkcs8_key: Vec<u8>) -> Self {
        Self {
            certificate: CertificateDer::from(certificate),
            key: PrivatePkcs8KeyDer::from(pkcs8_key),
        }
    }

    /// The certificate, DER-encoded.
    pub fn der(&self) -> &[u8] {
        self.certificate.as_ref()
    }

    /// The certificate and key in rustls' types.
    pub(crate) fn into_parts(self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        (self.certificate, PrivateKeyDer::Pkcs8(self.key))
    }
}

impl fmt::Debug for AttestedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestedCertificate")
            .field("certificate_len", &self.certificate.len())
            .finish_non_exhaustive()
    }
}

/// `seconds` since the Unix epoch as a certificate time.
fn certificate_time(seconds: u64) -> Result<time::OffsetDateTime, ChannelError> {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(ChannelError::Clock)
}

/// DER tag of an OCTET STRING.
const OCTET_STRING: u8 = 0x04;

/// The value (`extnValue` content) of the evidence extension for encoded evidence: the bytes
/// as a DER OCTET STRING (definite, minimal length).
pub fn extension_value(content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(content.len() + 10);
    out.push(OCTET_STRING);
    if len < 0x80 {
        // Short form; the cast cannot truncate.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[first..];
        // At most 8 length bytes (usize), so the count fits in the low seven bits.
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// The content of a DER OCTET STRING that spans all of `der`; `None` unless the encoding is
/// exactly what [`extension_value`] writes (definite, minimal length, nothing after it).
pub(crate) fn parse_der_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != OCTET_STRING {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, content) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let (len_bytes, content) = rest.split_at(count);
        if len_bytes[0] == 0 {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        (len, content)
    };
    (content.len() == len).then_some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input whose SHA-256 starts with `first`.
    fn input_hashing_to(first: u8) -> Vec<u8> {
        (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|input| Sha256::digest(input)[0] == first)
            .expect("a byte value is hit within a few thousand tries")
    }

    #[test]
    fn serial_numbers_keep_their_length_whatever_the_key_hashes_to() {
        // 0x00 and 0x80 are the first bytes that made rcgen's default serial a byte shorter.
        for first in [0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff] {
            let input = input_hashing_to(first);
            let serial = serial_number(&input);
            assert!((0x40..=0x7f).contains(&serial[0]), "{first:#04x}");
            assert_eq!(serial[1..], Sha256::digest(&input)[1..20], "{first:#04x}");
        }
    }

    #[test]
    fn octet_string_round_trips_at_every_length_form() {
        for len in [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 300_000] {
            let content = vec![0xa5; len];
            let der = extension_value(&content);
            assert_eq!(
                parse_der_octet_string(&der),
                Some(content.as_slice()),
                "{len}"
            );
        }
    }

    #[test]
    fn octet_string_refuses_non_minimal_or_trailing_encodings() {
        // Long form for a short length, a leading zero length byte, indefinite length, a
        // wrong tag, trailing bytes, a truncated body.
        for der in [
            &[0x04, 0x81, 0x05, 1, 2, 3, 4, 5][..],
            &[0x04, 0x82, 0x00, 0x80],
            &[0x04, 0x80, 0, 0],
            &[0x03, 0x01, 0],
            &[0x04, 0x01, 0, 0],
            &[0x04, 0x02, 0],
            &[],
        ] {
            assert_eq!(parse_der_octet_string(der), None, "{der:02x?}");
        }
    }

    #[test]
    fn bindings_separate_keys_and_windows() {
        assert_ne!(key_binding(b"a"), key_binding(b"b"));
        assert_ne!(window_binding(1, 2), window_binding(1, 3));
        assert_ne!(window_binding(1, 2), window_binding(2, 2));
    }
}
