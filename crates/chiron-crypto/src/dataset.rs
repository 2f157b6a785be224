//! Chunked dataset encryption: the owner encrypts locally, only an attested enclave decrypts.
//!
//! The untrusted host stores and serves the container, so it can cut it short, drop, repeat or
//! reorder pieces of it, splice two uploads together, or edit the public header to make the
//! enclave misread the body. The container is built so that each of these is detected:
//!
//! ```text
//! magic      "CHIRONDS"                       8 bytes
//! version    u16 big-endian (1)               2 bytes
//! header_len u32 big-endian                   4 bytes
//! header     postcard(DatasetHeader)          header_len bytes
//! nonce      random STREAM nonce prefix       7 bytes
//! chunks     AES-256-GCM STREAM (BE32)        ⌈len / 64 KiB⌉ chunks, each 64 KiB + 16-byte tag,
//!                                             the last one shorter and flagged as last
//! ```
//!
//! * Everything before the nonce (magic, version, header) is the associated data of every
//!   chunk, so the public header cannot be changed without the first chunk failing.
//! * STREAM puts the chunk index and a last-chunk flag in each nonce, so a reordered, repeated
//!   or dropped chunk fails authentication, and so does a container cut at a chunk boundary
//!   (its new final chunk was not encrypted as last).
//! * The chunk layout follows from the header's plaintext length, so once the first chunk has
//!   authenticated the header, a wrong container length is reported as truncation or trailing
//!   data without decrypting the rest.
//! * A fresh random nonce prefix per container means reusing a data key for two datasets does
//!   not reuse nonces (the probability of a collision stays negligible for a handful of uses;
//!   the intended use is one key per dataset).

use std::fmt;
use std::io::{self, Read, Write};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use chiron_proto::dataset::DatasetHeader;
use rand::RngCore;
use rand::rngs::OsRng;

use crate::error::CryptoError;

/// Plaintext bytes per chunk (the last chunk may be shorter).
pub const CHUNK_LEN: usize = 64 * 1024;

const MAGIC: [u8; 8] = *b"CHIRONDS";
const VERSION: u16 = 1;
/// Largest encoded header accepted; a valid header is a few dozen bytes.
const MAX_HEADER_LEN: usize = 4096;
/// The STREAM BE32 construction spends 5 of AES-GCM's 12 nonce bytes on counter and flag.
const NONCE_PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
/// magic + version + header_len.
const FIXED_PREAMBLE_LEN: usize = 8 + 2 + 4;

/// The symmetric key that encrypts one dataset.
///
/// The owner generates it, keeps it, and releases it only over an attested channel to an enclave
/// whose evidence passed the owner's policy.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut key = [0; 32];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// Wraps existing key bytes (for example, received over an attested channel).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Wraps key bytes of unchecked length, as read off a channel.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = <[u8; 32]>::try_from(bytes).map_err(|_| CryptoError::KeyLength {
            what: "data key",
            expected: 32,
            found: bytes.len(),
        })?;
        Ok(Self(key))
    }

    /// The key bytes, for the owner to store or to send to a verified enclave.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// How a plaintext of a given length is cut into chunks.
#[derive(Clone, Copy)]
struct Layout {
    chunks: u64,
    last_len: usize,
}

impl Layout {
    fn new(plaintext_len: u64) -> Self {
        let chunk = CHUNK_LEN as u64;
        // An empty body is still one (empty, last) chunk, so it is still authenticated.
        let chunks = plaintext_len.div_ceil(chunk).max(1);
        let last_len = plaintext_len - (chunks - 1) * chunk;
        // last_len <= CHUNK_LEN, so the conversion is lossless.
        Self {
            chunks,
            last_len: last_len as usize,
        }
    }

    fn plaintext_len(self, index: u64) -> usize {
        if index + 1 == self.chunks {
            self.last_len
        } else {
            CHUNK_LEN
        }
    }

    fn ciphertext_len(self, plaintext_len: u64) -> u64 {
        plaintext_len + self.chunks * TAG_LEN as u64
    }
}

/// The magic, version and encoded header: the associated data of every chunk.
fn encode_preamble(header: &DatasetHeader) -> Result<Vec<u8>, CryptoError> {
    let encoded = postcard::to_allocvec(header).map_err(CryptoError::DatasetHeaderMalformed)?;
    if encoded.len() > MAX_HEADER_LEN {
        return Err(CryptoError::DatasetHeaderTooLarge {
            len: encoded.len() as u64,
            max: MAX_HEADER_LEN,
        });
    }
    let mut preamble = Vec::with_capacity(FIXED_PREAMBLE_LEN + encoded.len());
    preamble.extend_from_slice(&MAGIC);
    preamble.extend_from_slice(&VERSION.to_be_bytes());
    // Bounded by MAX_HEADER_LEN above.
    preamble.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    preamble.extend_from_slice(&encoded);
    Ok(preamble)
}

/// The exact size of the container [`encrypt_dataset`] writes for `header`, for callers that
/// must announce a length before uploading.
pub fn container_len(header: &DatasetHeader) -> Result<u64, CryptoError> {
    let plaintext_len = header.plaintext_len()?;
    let preamble = encode_preamble(header)?;
    Ok(preamble.len() as u64
        + NONCE_PREFIX_LEN as u64
        + Layout::new(plaintext_len).ciphertext_len(plaintext_len))
}

/// Encrypts a dataset body under `key`, streaming from `body` to `out`.
///
/// `body` must produce exactly `header.plaintext_len()` bytes; anything else is an error, so a
/// container always agrees with its header. Returns the number of bytes written.
/// On error, `out` holds a partial container that must be discarded.
pub fn encrypt_dataset(
    key: &DataKey,
    header: &DatasetHeader,
    mut body: impl Read,
    mut out: impl Write,
) -> Result<u64, CryptoError> {
    let plaintext_len = header.plaintext_len()?;
    let layout = Layout::new(plaintext_len);
    let preamble = encode_preamble(header)?;
    let mut nonce_prefix = [0; NONCE_PREFIX_LEN];
    OsRng.fill_bytes(&mut nonce_prefix);

    out.write_all(&preamble)?;
    out.write_all(&nonce_prefix)?;
    let mut written = (preamble.len() + NONCE_PREFIX_LEN) as u64;

    let mut encryptor = EncryptorBE32::from_aead(key.cipher(), &nonce_prefix.into());
    let mut buffer = Vec::with_capacity(CHUNK_LEN + TAG_LEN);
    let mut consumed = 0u64;
    for index in 0..layout.chunks {
        let want = layout.plaintext_len(index);
        buffer.clear();
        buffer.resize(want, 0);
        let got = read_full(&mut body, &mut buffer)?;
        consumed += got as u64;
        if got < want {
            return Err(CryptoError::DatasetBodyTooShort {
                expected: plaintext_len,
                found: consumed,
            });
        }
        if index + 1 == layout.chunks {
            encryptor
                .encrypt_last_in_place(&preamble, &mut buffer)
                .map_err(|_| CryptoError::Encrypt)?;
            out.write_all(&buffer)?;
            written += buffer.len() as u64;
            break;
        }
        encryptor
            .encrypt_next_in_place(&preamble, &mut buffer)
            .map_err(|_| CryptoError::Encrypt)?;
        out.write_all(&buffer)?;
        written += buffer.len() as u64;
    }
    if read_full(&mut body, &mut [0])? != 0 {
        return Err(CryptoError::DatasetBodyTooLong {
            expected: plaintext_len,
        });
    }
    out.flush()?;
    Ok(written)
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A container split into its parts; nothing in it is authenticated yet.
struct Parsed<'a> {
    header: DatasetHeader,
    plaintext_len: u64,
    /// Magic, version and header bytes: the associated data of every chunk.
    aad: &'a [u8],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    chunks: &'a [u8],
}

fn parse(container: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    let found = container.len() as u64;
    let Some((magic, rest)) = container.split_first_chunk::<8>() else {
        return Err(CryptoError::DatasetBadMagic);
    };
    if *magic != MAGIC {
        return Err(CryptoError::DatasetBadMagic);
    }
    let truncated = |expected: usize| CryptoError::DatasetTruncated {
        expected: expected as u64,
        found,
    };
    let (version, rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| truncated(FIXED_PREAMBLE_LEN))?;
    let version = u16::from_be_bytes(*version);
    if version != VERSION {
        return Err(CryptoError::DatasetVersion {
            found: version,
            supported: VERSION,
        });
    }
    let (header_len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| truncated(FIXED_PREAMBLE_LEN))?;
    let header_len = u32::from_be_bytes(*header_len);
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|&len| len <= MAX_HEADER_LEN)
        .ok_or(CryptoError::DatasetHeaderTooLarge {
            len: u64::from(header_len),
            max: MAX_HEADER_LEN,
        })?;
    let aad_len = FIXED_PREAMBLE_LEN + header_len;
    let (header_bytes, rest) = rest
        .split_at_checked(header_len)
        .ok_or_else(|| truncated(aad_len + NONCE_PREFIX_LEN))?;
    let (header, unread) = postcard::take_from_bytes::<DatasetHeader>(header_bytes)
        .map_err(CryptoError::DatasetHeaderMalformed)?;
    if !unread.is_empty() {
        return Err(CryptoError::DatasetHeaderMalformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    let plaintext_len = header.plaintext_len()?;
    let (nonce_prefix, chunks) = rest
        .split_first_chunk::<NONCE_PREFIX_LEN>()
        .ok_or_else(|| truncated(aad_len + NONCE_PREFIX_LEN))?;
    Ok(Parsed {
        header,
        plaintext_len,
        aad: &container[..aad_len],
        nonce_prefix: *nonce_prefix,
        chunks,
    })
}

/// Reads and validates the public header of a container, without the key.
///
/// The header is not authenticated by this call: the host may have altered it. Use it to plan
/// (sizes, model family), and rely on [`decrypt_dataset`], which authenticates it, for anything
/// that matters.
pub fn read_dataset_header(container: &[u8]) -> Result<DatasetHeader, CryptoError> {
    parse(container).map(|parsed| parsed.header)
}

/// Authenticates and decrypts a whole container, returning its header and plaintext body.
///
/// Fails on the first chunk that does not authenticate, naming it, and on any container whose
/// length disagrees with its (authenticated) header.
pub fn decrypt_dataset(
    key: &DataKey,
    container: &[u8],
) -> Result<(DatasetHeader, Vec<u8>), CryptoError> {
    let parsed = parse(container)?;
    let layout = Layout::new(parsed.plaintext_len);
    let expected_len = (container.len() - parsed.chunks.len()) as u64
        + layout.ciphertext_len(parsed.plaintext_len);
    let found_len = container.len() as u64;

    let mut decryptor = DecryptorBE32::from_aead(key.cipher(), &parsed.nonce_prefix.into());
    // Sized by what is present, never by the unauthenticated header's claim.
    let mut body = Vec::with_capacity(parsed.chunks.len());
    let mut buffer = Vec::with_capacity(CHUNK_LEN + TAG_LEN);
    let mut rest = parsed.chunks;
    let truncated = CryptoError::DatasetTruncated {
        expected: expected_len,
        found: found_len,
    };
    let last = layout.chunks - 1;
    for index in 0..=last {
        let chunk_len = layout.plaintext_len(index) + TAG_LEN;
        let Some((chunk, tail)) = rest.split_at_checked(chunk_len) else {
            return Err(truncated);
        };
        rest = tail;
        buffer.clear();
        buffer.extend_from_slice(chunk);
        if index == last {
            // Consumes the decryptor: nothing may follow the last chunk.
            decryptor
                .decrypt_last_in_place(parsed.aad, &mut buffer)
                .map_err(|_| CryptoError::DatasetChunk { index })?;
            body.extend_from_slice(&buffer);
            if index == 0 {
                check_len(expected_len, found_len)?;
            }
            break;
        }
        decryptor
            .decrypt_next_in_place(parsed.aad, &mut buffer)
            .map_err(|_| CryptoError::DatasetChunk { index })?;
        body.extend_from_slice(&buffer);
        // The first chunk authenticated the header, so the layout it implies is now trusted:
        // report a wrong length before spending time on the remaining chunks.
        if index == 0 {
            check_len(expected_len, found_len)?;
        }
    }
    if body.len() as u64 != parsed.plaintext_len {
        return Err(CryptoError::DatasetDecryptedLength {
            expected: parsed.plaintext_len,
            found: body.len() as u64,
        });
    }
    Ok((parsed.header, body))
}

fn check_len(expected: u64, found: u64) -> Result<(), CryptoError> {
    if found < expected {
        Err(CryptoError::DatasetTruncated { expected, found })
    } else if found > expected {
        Err(CryptoError::DatasetTrailingData {
            extra: found - expected,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chiron_proto::dataset::{DatasetKind, ElementEncoding};

    use super::*;

    /// A tabular header whose body is `count × (4 + columns)` bytes.
    fn header(columns: u32, count: u32) -> DatasetHeader {
        DatasetHeader {
            kind: DatasetKind::Tabular,
            dims: vec![columns],
            encoding: ElementEncoding::U8Unit,
            classes: 2,
            train_count: count,
            valid_count: 0,
        }
    }

    fn body_for(header: &DatasetHeader) -> Result<Vec<u8>, CryptoError> {
        let len = header.plaintext_len()? as usize;
        Ok((0..len).map(|i| (i * 7 + i / 251) as u8).collect())
    }

    fn encrypt(key: &DataKey, header: &DatasetHeader) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let body = body_for(header)?;
        let mut out = Vec::new();
        let written = encrypt_dataset(key, header, body.as_slice(), &mut out)?;
        assert_eq!(written, out.len() as u64);
        assert_eq!(container_len(header)?, written);
        Ok((body, out))
    }

    /// (header, where the first chunk starts) for a container.
    fn chunks_start(container: &[u8]) -> Result<usize, CryptoError> {
        Ok(container.len() - parse(container)?.chunks.len())
    }

    /// 259 000 bytes: three full chunks and a partial fourth.
    fn four_chunks() -> DatasetHeader {
        header(255, 1000)
    }

    #[test]
    fn round_trips_at_awkward_sizes() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        // 5 bytes; exactly one chunk; exactly two chunks; one byte over a chunk; four chunks.
        for h in [
            header(1, 1),
            header(252, 256),
            header(252, 512),
            header(65_533, 1),
            four_chunks(),
        ] {
            let (body, container) = encrypt(&key, &h)?;
            assert_eq!(read_dataset_header(&container)?, h);
            let (got_header, got_body) = decrypt_dataset(&key, &container)?;
            assert_eq!(got_header, h);
            assert_eq!(got_body, body);
        }
        Ok(())
    }

    #[test]
    fn layout_matches_chunk_boundaries() {
        let l = Layout::new(CHUNK_LEN as u64);
        assert_eq!((l.chunks, l.last_len), (1, CHUNK_LEN));
        let l = Layout::new(CHUNK_LEN as u64 + 1);
        assert_eq!((l.chunks, l.last_len), (2, 1));
        let l = Layout::new(0);
        assert_eq!((l.chunks, l.last_len), (1, 0));
    }

    #[test]
    fn every_single_byte_flip_is_detected() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (_, container) = encrypt(&key, &header(1, 3))?;
        for i in 0..container.len() {
            for bit in [0x01, 0x80] {
                let mut bad = container.clone();
                bad[i] ^= bit;
                assert!(decrypt_dataset(&key, &bad).is_err(), "flip {bit:#x} at {i}");
            }
        }
        Ok(())
    }

    #[test]
    fn every_truncation_is_detected() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (_, container) = encrypt(&key, &header(1, 3))?;
        for len in 0..container.len() {
            assert!(decrypt_dataset(&key, &container[..len]).is_err(), "{len}");
        }
        Ok(())
    }

    #[test]
    fn tampering_names_the_failing_part() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (_, container) = encrypt(&key, &four_chunks())?;
        let start = chunks_start(&container)?;
        let full = CHUNK_LEN + TAG_LEN;

        let mut bad = container.clone();
        bad[0] ^= 1;
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetBadMagic)
        ));

        let mut bad = container.clone();
        bad[9] ^= 1;
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetVersion { found: 0, .. })
        ));

        // A still-valid header with another class count: only authentication catches it.
        let mut forged = four_chunks();
        forged.classes = 3;
        let mut bad = encode_preamble(&forged)?;
        assert_eq!(bad.len(), start - NONCE_PREFIX_LEN);
        bad.extend_from_slice(&container[start - NONCE_PREFIX_LEN..]);
        assert_eq!(read_dataset_header(&bad)?, forged);
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 0 })
        ));

        let mut bad = container.clone();
        bad[start - 1] ^= 1; // nonce prefix
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 0 })
        ));

        let mut bad = container.clone();
        bad[start + 2 * full + 5] ^= 1; // body of chunk 2
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 2 })
        ));

        let mut bad = container.clone();
        bad[start + 3 * full - 1] ^= 1; // tag of chunk 2
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 2 })
        ));

        let last = container.len() - 1;
        let mut bad = container.clone();
        bad[last] ^= 1; // tag of the last chunk
        assert!(matches!(
            decrypt_dataset(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 3 })
        ));

        assert!(matches!(
            decrypt_dataset(&DataKey::generate(), &container),
            Err(CryptoError::DatasetChunk { index: 0 })
        ));
        Ok(())
    }

    #[test]
    fn reordering_dropping_cutting_and_appending_are_detected() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (_, container) = encrypt(&key, &four_chunks())?;
        let start = chunks_start(&container)?;
        let full = CHUNK_LEN + TAG_LEN;
        let chunk = |i: usize| start + i * full..start + (i + 1) * full;

        let mut swapped = container.clone();
        swapped[chunk(1)].copy_from_slice(&container[chunk(2)]);
        swapped[chunk(2)].copy_from_slice(&container[chunk(1)]);
        assert!(matches!(
            decrypt_dataset(&key, &swapped),
            Err(CryptoError::DatasetChunk { index: 1 })
        ));

        let mut dropped = container[..chunk(1).start].to_vec();
        dropped.extend_from_slice(&container[chunk(1).end..]);
        assert!(matches!(
            decrypt_dataset(&key, &dropped),
            Err(CryptoError::DatasetTruncated { .. })
        ));

        // Cut exactly at a chunk boundary.
        assert!(matches!(
            decrypt_dataset(&key, &container[..chunk(2).end]),
            Err(CryptoError::DatasetTruncated { .. })
        ));

        let mut appended = container.clone();
        appended.extend_from_slice(b"junk");
        assert!(matches!(
            decrypt_dataset(&key, &appended),
            Err(CryptoError::DatasetTrailingData { extra: 4 })
        ));

        // A duplicated chunk in place of its successor.
        let mut repeated = container.clone();
        repeated[chunk(2)].copy_from_slice(&container[chunk(1)]);
        assert!(matches!(
            decrypt_dataset(&key, &repeated),
            Err(CryptoError::DatasetChunk { index: 2 })
        ));
        Ok(())
    }

    #[test]
    fn truncation_error_reads_well() {
        let e = CryptoError::DatasetTruncated {
            expected: 10,
            found: 5,
        };
        assert!(
            e.to_string()
                .starts_with("dataset ends before its final chunk")
        );
        let e = CryptoError::DatasetChunk { index: 3 };
        assert_eq!(
            e.to_string(),
            "dataset chunk 3 failed authentication: the ciphertext was modified or the key is wrong"
        );
    }

    #[test]
    fn body_must_match_the_header() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let h = four_chunks();
        let mut body = body_for(&h)?;
        body.push(0);
        assert!(matches!(
            encrypt_dataset(&key, &h, body.as_slice(), io::sink()),
            Err(CryptoError::DatasetBodyTooLong { .. })
        ));
        body.truncate(body.len() - 2);
        assert!(matches!(
            encrypt_dataset(&key, &h, body.as_slice(), io::sink()),
            Err(CryptoError::DatasetBodyTooShort {
                expected: 259_000,
                found: 258_999
            })
        ));
        let mut invalid = h.clone();
        invalid.train_count = 0;
        assert!(matches!(
            encrypt_dataset(&key, &invalid, body.as_slice(), io::sink()),
            Err(CryptoError::DatasetHeaderInvalid(_))
        ));
        Ok(())
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for input in [
            &b""[..],
            b"CHIRONDS",
            b"CHIRONDS\0\x01\xff\xff\xff\xff",
            b"CHIRONDS\0\x01\0\0\0\x05abc",
        ] {
            assert!(read_dataset_header(input).is_err());
            assert!(decrypt_dataset(&DataKey::generate(), input).is_err());
        }
    }

    #[test]
    fn keys_do_not_leak_through_debug() {
        let key = DataKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{key:?}"), "DataKey(<redacted>)");
        assert!(DataKey::from_slice(&[0; 31]).is_err());
        assert!(DataKey::from_slice(&key.to_bytes()).is_ok());
    }
}
