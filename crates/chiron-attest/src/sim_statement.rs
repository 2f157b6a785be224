//! The simulated platform's statement: the layout both sides of the simulation share.
//!
//! ```text
//! platform key (32) || measurement (32) || report data (64) || Ed25519 signature (64)
//! ```
//!
//! The signature covers a domain-separation prefix and the first three fields. INSECURE by
//! design: the signing key is a file on the host.

/// Length of a simulated statement.
pub const LEN: usize = 32 + 32 + 64 + 64;

/// Prefix of the signed bytes, so this signature can never be taken for any other.
const DOMAIN: &[u8] = b"chiron simulated platform statement v1\0";

/// The bytes the platform signs.
pub fn signed_bytes(
    platform_key: &[u8; 32],
    measurement: &[u8; 32],
    report_data: &[u8; 64],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 128);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(platform_key);
    out.extend_from_slice(measurement);
    out.extend_from_slice(report_data);
    out
}

/// A statement split into its fields.
#[cfg(feature = "verifier")]
pub struct Parts<'a> {
    /// The platform's Ed25519 public key.
    pub platform_key: &'a [u8; 32],
    /// The runtime measurement.
    pub measurement: &'a [u8; 32],
    /// The report data.
    pub report_data: &'a [u8; 64],
    /// The signature.
    pub signature: &'a [u8; 64],
}

/// Splits a statement, or `None` if it has the wrong length.
#[cfg(feature = "verifier")]
pub fn parse(statement: &[u8]) -> Option<Parts<'_>> {
    let (platform_key, rest) = statement.split_first_chunk::<32>()?;
    let (measurement, rest) = rest.split_first_chunk::<32>()?;
    let (report_data, rest) = rest.split_first_chunk::<64>()?;
    let signature = <&[u8; 64]>::try_from(rest).ok()?;
    Some(Parts {
        platform_key,
        measurement,
        report_data,
        signature,
    })
}
