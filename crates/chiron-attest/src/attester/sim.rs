//! The simulated platform: an Ed25519 key standing in for the hardware's attestation key and a
//! secret standing in for its sealing key, both in an ordinary file.
//!
//! **INSECURE, for development only.** Whoever can read the file can forge evidence and unseal
//! every model. Verifiers refuse it unless their policy opts in by a method named dangerous.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use chiron_proto::evidence::TeeKind;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::{Platform, Statement};
use crate::binding::ReportData;
use crate::error::AttesterError;
use crate::sim_statement;

/// First bytes of a simulated platform key file; also a warning to anyone who opens it.
const FILE_MAGIC: &[u8] = b"chiron simulated platform v1 - INSECURE, development only\n";
const FILE_LEN: usize = FILE_MAGIC.len() + 32 + 32;

/// Conventional file name for a simulated platform's keys.
pub const FILE_NAME: &str = "sim-platform.key";

/// A simulated TEE platform measuring one runtime binary.
///
/// Both secrets are wiped when the platform is dropped; `Debug` shows the public key only.
#[derive(ZeroizeOnDrop)]
pub struct SimPlatform {
    signing: SigningKey,
    sealing_secret: [u8; 32],
    #[zeroize(skip)]
    measurement: [u8; 32],
}

impl SimPlatform {
    /// A fresh platform from the operating system's random number generator, measuring a
    /// runtime whose SHA-256 is `measurement`.
    pub fn generate(measurement: [u8; 32]) -> Self {
        let mut seed = Zeroizing::new([0; 32]);
        OsRng.fill_bytes(&mut *seed);
        let mut platform = Self {
            signing: SigningKey::from_bytes(&seed),
            sealing_secret: [0; 32],
            measurement,
        };
        // Filled in place, so no other copy is left to wipe.
        OsRng.fill_bytes(&mut platform.sealing_secret);
        platform
    }

    /// Loads the platform keys stored at `path`, or creates them there readable only by their
    /// owner (mode 0600 on Unix), measuring a runtime whose SHA-256 is `measurement`.
    ///
    /// Keeping the keys in a file lets sealed models survive restarts, as on real hardware.
    /// **INSECURE**: anyone who can read the file can forge evidence and unseal every model.
    pub fn load_or_create(
        path: impl AsRef<Path>,
        measurement: [u8; 32],
    ) -> Result<Self, AttesterError> {
        let path = path.as_ref();
        let fail = |reason: String| AttesterError::SimPlatform {
            path: path.to_path_buf(),
            reason,
        };
        match create_new_private(path) {
            Ok(mut file) => {
                let platform = Self::generate(measurement);
                let mut contents = Zeroizing::new(Vec::with_capacity(FILE_LEN));
                contents.extend_from_slice(FILE_MAGIC);
                contents.extend_from_slice(Zeroizing::new(platform.signing.to_bytes()).as_ref());
                contents.extend_from_slice(&platform.sealing_secret);
                file.write_all(&contents)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| fail(e.to_string()))?;
                Ok(platform)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Sized for one byte more than a valid file, so reading never reallocates
                // (which would leave an unwiped copy of the keys behind).
                let mut contents = Zeroizing::new(Vec::with_capacity(FILE_LEN + 1));
                File::open(path)
                    .and_then(|f| f.take(FILE_LEN as u64 + 1).read_to_end(&mut contents))
                    .map_err(|e| fail(e.to_string()))?;
                Self::parse_file(&contents, measurement).map_err(|r| fail(r.to_owned()))
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    fn parse_file(contents: &[u8], measurement: [u8; 32]) -> Result<Self, &'static str> {
        let keys = contents
            .strip_prefix(FILE_MAGIC)
            .ok_or("it does not start with the simulated platform header")?;
        let (seed, sealing_secret) = keys
            .split_first_chunk::<32>()
            .and_then(|(seed, rest)| Some((seed, <[u8; 32]>::try_from(rest).ok()?)))
            .ok_or("it has the wrong length")?;
        Ok(Self {
            signing: SigningKey::from_bytes(seed),
            sealing_secret,
            measurement,
        })
    }

    /// The platform's Ed25519 public key, which verifiers must list in their policy.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The runtime measurement this platform vouches for.
    pub fn measurement(&self) -> [u8; 32] {
        self.measurement
    }

    /// A statement over `report_data` for an arbitrary measurement: for tests that need
    /// evidence of another build.
    pub fn statement_for(&self, measurement: &[u8; 32], report_data: &ReportData) -> Vec<u8> {
        let key = self.public_key();
        let signature =
            self.signing
                .sign(&sim_statement::signed_bytes(&key, measurement, report_data));
        let mut out = Vec::with_capacity(sim_statement::LEN);
        out.extend_from_slice(&key);
        out.extend_from_slice(measurement);
        out.extend_from_slice(report_data);
        out.extend_from_slice(&signature.to_bytes());
        out
    }
}

impl Platform for SimPlatform {
    fn tee(&self) -> TeeKind {
        TeeKind::Sim
    }

    fn attest(&self, report_data: &ReportData) -> Result<Statement, AttesterError> {
        Ok(Statement {
            bytes: self.statement_for(&self.measurement, report_data),
            endorsements: Vec::new(),
        })
    }

    fn sealing_secret(&self) -> Result<Zeroizing<[u8; 32]>, AttesterError> {
        Ok(Zeroizing::new(self.sealing_secret))
    }
}

impl fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPlatform")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

/// Creates `path`, failing if it exists; owner-only permissions from the first byte on Unix.
fn create_new_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_persists_and_is_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        let created = SimPlatform::load_or_create(&path, [1; 32])?;
        let loaded = SimPlatform::load_or_create(&path, [1; 32])?;
        assert_eq!(created.public_key(), loaded.public_key());
        assert_eq!(*created.sealing_secret()?, *loaded.sealing_secret()?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        let debug = format!("{created:?}");
        assert!(!debug.contains(&hex::encode(*created.sealing_secret()?)));

        std::fs::write(&path, b"not a platform")?;
        assert!(matches!(
            SimPlatform::load_or_create(&path, [1; 32]),
            Err(AttesterError::SimPlatform { .. })
        ));
        let mut long = FILE_MAGIC.to_vec();
        long.extend_from_slice(&[0; 65]);
        std::fs::write(&path, &long)?;
        assert!(matches!(
            SimPlatform::load_or_create(&path, [1; 32]),
            Err(AttesterError::SimPlatform { .. })
        ));
        Ok(())
    }
}
