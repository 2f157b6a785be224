//! The simulated platform's statements (INSECURE: development and tests only).

use chiron_proto::evidence::TeeKind;
use ed25519_dalek::{Signature, VerifyingKey};

use super::StatementVerifier;
use crate::claims::{Identity, PlatformClaims};
use crate::error::AttestationError;
use crate::policy::Policy;
use crate::sim_statement;

/// Verifies statements of a simulated platform the policy names.
#[derive(Clone, Copy, Debug)]
pub struct SimVerifier;

impl StatementVerifier for SimVerifier {
    fn verify_statement(
        &self,
        statement: &[u8],
        _endorsements: &[u8],
        policy: &Policy,
    ) -> Result<PlatformClaims, AttestationError> {
        let parts = sim_statement::parse(statement).ok_or_else(|| {
            AttestationError::Malformed(format!(
                "a simulated statement is {} bytes, this one {}",
                sim_statement::LEN,
                statement.len()
            ))
        })?;
        if !policy
            .accepted_sim_platforms()
            .any(|key| key == parts.platform_key)
        {
            return Err(AttestationError::UntrustedPlatform {
                platform_key: hex::encode(parts.platform_key),
            });
        }
        let key = VerifyingKey::from_bytes(parts.platform_key).map_err(|_| {
            AttestationError::Malformed("the platform key is not an Ed25519 public key".into())
        })?;
        let signed =
            sim_statement::signed_bytes(parts.platform_key, parts.measurement, parts.report_data);
        key.verify_strict(&signed, &Signature::from_bytes(parts.signature))
            .map_err(|_| AttestationError::BadSignature {
                tee: TeeKind::Sim,
                detail: "Ed25519 signature invalid".into(),
            })?;
        Ok(PlatformClaims {
            report_data: *parts.report_data,
            identity: Identity::Sim {
                platform_key: *parts.platform_key,
                measurement: *parts.measurement,
            },
        })
    }
}

/// The platform key a simulated statement names, in hex, for error messages (whether or not
/// the statement is valid).
pub(crate) fn platform_key_hex(statement: &[u8]) -> String {
    statement
        .first_chunk::<32>()
        .map_or_else(|| "(none)".to_owned(), hex::encode)
}
