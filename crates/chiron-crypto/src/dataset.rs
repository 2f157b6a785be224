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
//! * Each chunk's nonce depends only on its index, so chunks are sealed and opened in
//!   parallel; decryption still reports the lowest-numbered chunk that fails.
//! * A fresh random nonce prefix per container means reusing a data key for two datasets does
//!   not reuse nonces (the probability of a collision stays negligible for a handful of uses;
//!   the intended use is one key per dataset).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use chiron_proto::dataset::{DatasetHeader, HeaderError};
use rand::RngCore;
use rand::rngs::OsRng;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::error::CryptoError;

/// Plaintext bytes per chunk (the last chunk may be shorter).
pub const CHUNK_LEN: usize = 64 * 1024;
/// Chunks encrypted or decrypted as one unit of work (1 MiB of plaintext).
const BATCH_CHUNKS: usize = 16;
/// Most threads one container is encrypted or decrypted on.
const MAX_THREADS: usize = 8;

const MAGIC: [u8; 8] = *b"CHIRONDS";
const VERSION: u16 = 1;
/// Largest encoded header accepted; a valid header is a few dozen bytes.
const MAX_HEADER_LEN: usize = 4096;
/// The STREAM BE32 construction spends 5 of AES-GCM's 12 nonce bytes on counter and flag.
const NONCE_PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
/// A full chunk in the container: ciphertext and tag.
const SLOT_LEN: usize = CHUNK_LEN + TAG_LEN;
/// magic + version + header_len.
const FIXED_PREAMBLE_LEN: usize = 8 + 2 + 4;

/// The symmetric key that encrypts one dataset.
///
/// The owner generates it, keeps it, and releases it only over an attested channel to an enclave
/// whose evidence passed the owner's policy.
///
/// Wiped when dropped; `Debug` does not show it.
#[derive(Clone, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        // Filled in place, so no other copy is left to wipe.
        let mut key = Self([0; 32]);
        OsRng.fill_bytes(&mut key.0);
        key
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

    /// The `aes-gcm` cipher, for checking the format against `aead::stream`.
    #[cfg(test)]
    fn cipher(&self) -> aes_gcm::Aes256Gcm {
        use aes_gcm::aead::KeyInit;
        aes_gcm::Aes256Gcm::new(&self.0.into())
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
    plaintext_len: u64,
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
            plaintext_len,
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

    /// The chunks' ciphertext and tags. Lengths come from a validated header (at most
    /// `MAX_PLAINTEXT_LEN`), far from overflowing; checked all the same.
    fn ciphertext_len(self) -> Result<u64, CryptoError> {
        self.chunks
            .checked_mul(TAG_LEN as u64)
            .and_then(|tags| self.plaintext_len.checked_add(tags))
            .ok_or_else(too_large)
    }
}

/// A size that overflows: only a header far beyond `MAX_PLAINTEXT_LEN` could describe one.
fn too_large() -> CryptoError {
    CryptoError::DatasetHeaderInvalid(HeaderError::TooLarge(u64::MAX))
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
    Layout::new(plaintext_len)
        .ciphertext_len()?
        .checked_add((preamble.len() + NONCE_PREFIX_LEN) as u64)
        .ok_or_else(too_large)
}

/// Encrypts a dataset body under `key`, streaming from `body` to `out`.
///
/// `body` must produce exactly `header.plaintext_len()` bytes; anything else is an error, so a
/// container always agrees with its header. Returns the number of bytes written.
/// On error, `out` holds a partial container that must be discarded.
///
/// The body is read and written in batches of 16 chunks (1 MiB), sealed in place; above one
/// batch they are sealed on up to 8 threads (as many as the machine has) while the calling
/// thread reads the next batches and writes the finished ones in order.
pub fn encrypt_dataset(
    key: &DataKey,
    header: &DatasetHeader,
    mut body: impl Read,
    mut out: impl Write,
) -> Result<u64, CryptoError> {
    let plaintext_len = header.plaintext_len()?;
    let layout = Layout::new(plaintext_len);
    // STREAM BE32 numbers chunks with a 32-bit counter.
    if layout.chunks - 1 > u64::from(u32::MAX) {
        return Err(CryptoError::Encrypt);
    }
    let preamble = encode_preamble(header)?;
    let mut nonce_prefix = [0; NONCE_PREFIX_LEN];
    OsRng.fill_bytes(&mut nonce_prefix);

    out.write_all(&preamble)?;
    out.write_all(&nonce_prefix)?;
    let mut written = (preamble.len() + NONCE_PREFIX_LEN) as u64;

    let cipher = ChunkCipher::new(key, nonce_prefix, &preamble).ok_or(CryptoError::Encrypt)?;
    let mut reader = BodyReader {
        body: &mut body,
        layout,
        consumed: 0,
    };
    let threads = worker_threads(layout.chunks.div_ceil(BATCH_CHUNKS as u64));
    written += if threads <= 1 {
        seal_in_turn(&cipher, &mut reader, &mut out)?
    } else {
        seal_in_parallel(&cipher, &mut reader, &mut out, threads)?
    };
    if read_full(&mut body, &mut [0])? != 0 {
        return Err(CryptoError::DatasetBodyTooLong {
            expected: plaintext_len,
        });
    }
    out.flush()?;
    Ok(written)
}

/// One batch of consecutive chunks laid out as they are in the container: each chunk's
/// plaintext followed by room for its tag, sealed in place.
struct Batch {
    /// Index of the batch's first chunk.
    first: u64,
    /// Chunks in the batch.
    count: u64,
    /// Ciphertext-sized buffer; only `used` bytes of it belong to the batch. It holds
    /// plaintext between reading and sealing (and after an error), so it is wiped when dropped.
    buf: Zeroizing<Vec<u8>>,
    used: usize,
}

/// Reads a dataset body into batches, checking that it is as long as its header says.
struct BodyReader<'r, R> {
    body: &'r mut R,
    layout: Layout,
    consumed: u64,
}

impl<R: Read> BodyReader<'_, R> {
    /// Fills `buf` with the plaintext of the batch starting at chunk `first`.
    fn fill(&mut self, first: u64, mut buf: Zeroizing<Vec<u8>>) -> Result<Batch, CryptoError> {
        let count = (self.layout.chunks - first).min(BATCH_CHUNKS as u64);
        // At most BATCH_CHUNKS slots.
        buf.resize(count as usize * SLOT_LEN, 0);
        let mut used = 0;
        for (index, slot) in (first..first + count).zip(buf.chunks_mut(SLOT_LEN)) {
            let want = self.layout.plaintext_len(index);
            let got = read_full(self.body, &mut slot[..want])?;
            self.consumed += got as u64;
            if got < want {
                return Err(CryptoError::DatasetBodyTooShort {
                    expected: self.layout.plaintext_len,
                    found: self.consumed,
                });
            }
            used += want + TAG_LEN;
        }
        Ok(Batch {
            first,
            count,
            buf,
            used,
        })
    }
}

/// Encrypts batch after batch on the calling thread (small bodies, or a single core).
fn seal_in_turn<R: Read>(
    cipher: &ChunkCipher<'_>,
    reader: &mut BodyReader<'_, R>,
    out: &mut impl Write,
) -> Result<u64, CryptoError> {
    let mut buf = Zeroizing::new(Vec::new());
    let mut written = 0;
    let mut next = 0;
    while next < reader.layout.chunks {
        let mut batch = reader.fill(next, buf)?;
        cipher.seal_batch(reader.layout, &mut batch)?;
        out.write_all(&batch.buf[..batch.used])?;
        written += batch.used as u64;
        next += batch.count;
        buf = batch.buf;
    }
    Ok(written)
}

/// Encrypts batches on `threads` worker threads; the calling thread reads batches ahead and
/// writes sealed ones in order, reusing their buffers. At most `threads + 1` batches are
/// between reading and writing at any time.
fn seal_in_parallel<R: Read>(
    cipher: &ChunkCipher<'_>,
    reader: &mut BodyReader<'_, R>,
    out: &mut impl Write,
    threads: usize,
) -> Result<u64, CryptoError> {
    let layout = reader.layout;
    let (jobs, job_queue) = mpsc::channel::<Batch>();
    let job_queue = Mutex::new(job_queue);
    let (done, sealed) = mpsc::channel::<Result<Batch, CryptoError>>();
    std::thread::scope(|scope| {
        let mut workers = 0;
        for _ in 0..threads {
            let (job_queue, done) = (&job_queue, done.clone());
            let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                loop {
                    // Bind the job first so that the queue is unlocked while sealing.
                    let job = job_queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv();
                    let Ok(mut batch) = job else { break };
                    let result = cipher.seal_batch(layout, &mut batch).map(|()| batch);
                    if done.send(result).is_err() {
                        break;
                    }
                }
            });
            workers += usize::from(spawned.is_ok());
        }
        drop(done);
        // Dropping `jobs` and `sealed` on the way out (success or error) stops the workers
        // before the scope joins them.
        let (jobs, sealed) = (jobs, sealed);
        if workers == 0 {
            return seal_in_turn(cipher, reader, out);
        }
        let ahead = (workers as u64 + 1) * BATCH_CHUNKS as u64;
        let mut spare: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut waiting = BTreeMap::new();
        let (mut next_read, mut next_write) = (0, 0);
        let mut written = 0;
        while next_write < layout.chunks {
            // A batch for every worker and one queued, so no worker waits on the reader.
            while next_read - next_write < ahead && next_read < layout.chunks {
                let batch = reader.fill(next_read, spare.pop().unwrap_or_default())?;
                next_read += batch.count;
                jobs.send(batch).map_err(|_| CryptoError::Encrypt)?;
            }
            // The batch at `next_write` has been sent and not yet received.
            let batch = sealed.recv().map_err(|_| CryptoError::Encrypt)??;
            waiting.insert(batch.first, batch);
            while let Some(batch) = waiting.remove(&next_write) {
                out.write_all(&batch.buf[..batch.used])?;
                written += batch.used as u64;
                next_write += batch.count;
                spare.push(batch.buf);
            }
        }
        Ok(written)
    })
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

/// How many threads to spread `batches` batches over.
fn worker_threads(batches: u64) -> usize {
    let available = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    available
        .min(MAX_THREADS)
        .min(usize::try_from(batches).unwrap_or(usize::MAX))
}

/// AES-256-GCM under one container's key, nonce prefix and associated data: the STREAM BE32
/// construction, with each chunk sealed or opened independently of the others.
///
/// The chunks use ring's AES-GCM (stitched AES-NI/CLMUL code), about three times the speed of
/// the `aes-gcm` crate on the same core; the container format is the one `aead::stream`'s
/// `EncryptorBE32` writes (a test checks both directions).
struct ChunkCipher<'a> {
    key: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    aad: &'a [u8],
}

impl<'a> ChunkCipher<'a> {
    /// `None` only if ring refuses a 32-byte AES-256 key, which it does not.
    fn new(key: &DataKey, nonce_prefix: [u8; NONCE_PREFIX_LEN], aad: &'a [u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, &key.0).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
            nonce_prefix,
            aad,
        })
    }

    /// The nonce of chunk `index`: prefix ‖ index (u32 big-endian) ‖ last-chunk flag, as
    /// `aead::stream::StreamBE32` builds it. `None` past the 32-bit counter.
    fn nonce(&self, index: u64, last: bool) -> Option<Nonce> {
        let counter = u32::try_from(index).ok()?;
        let mut nonce = [0; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&counter.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        Some(Nonce::assume_unique_for_key(nonce))
    }

    /// Seals the chunks of `batch` in place: each slot's plaintext becomes ciphertext and
    /// its last [`TAG_LEN`] bytes receive the tag.
    fn seal_batch(&self, layout: Layout, batch: &mut Batch) -> Result<(), CryptoError> {
        let slots = batch.buf[..batch.used].chunks_mut(SLOT_LEN);
        for (index, slot) in (batch.first..).zip(slots) {
            let last = index + 1 == layout.chunks;
            let nonce = self.nonce(index, last).ok_or(CryptoError::Encrypt)?;
            let (text, tag) = slot.split_at_mut(slot.len() - TAG_LEN);
            let sealed = self
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(self.aad), text)
                .map_err(|_| CryptoError::Encrypt)?;
            tag.copy_from_slice(sealed.as_ref());
        }
        Ok(())
    }

    /// Authenticates one chunk (ciphertext ‖ tag) and decrypts it into `out`, which is
    /// exactly as long as its plaintext. On failure `out` holds no plaintext (ring zeroes it).
    fn open(&self, index: u64, last: bool, chunk: &[u8], out: &mut [u8]) -> Result<(), ()> {
        let nonce = self.nonce(index, last).ok_or(())?;
        let (text, tag) = chunk.split_at(chunk.len() - TAG_LEN);
        let tag = Tag::try_from(tag).map_err(|_| ())?;
        out.copy_from_slice(text);
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(self.aad), tag, out, 0..)
            .map(|_| ())
            .map_err(|_| ())
    }

    /// Authenticates one chunk's slot (ciphertext ‖ tag) and decrypts it in place: the
    /// plaintext ends up in the slot's first `slot.len() - TAG_LEN` bytes.
    fn open_in_place(&self, index: u64, last: bool, slot: &mut [u8]) -> Result<(), ()> {
        let nonce = self.nonce(index, last).ok_or(())?;
        let at = slot.len().checked_sub(TAG_LEN).ok_or(())?;
        let (text, tag) = slot.split_at_mut(at);
        let tag = Tag::try_from(&*tag).map_err(|_| ())?;
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(self.aad), tag, text, 0..)
            .map(|_| ())
            .map_err(|_| ())
    }
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

/// Authenticates and decrypts a whole container, returning its header and plaintext body
/// (wiped when dropped; so is any plaintext decrypted before a failure).
///
/// Fails on the first chunk that does not authenticate, naming it, and on any container whose
/// length disagrees with its (authenticated) header. The first chunk is checked alone; once it
/// has authenticated the header, the rest are decrypted straight into the returned body in
/// batches of 16 chunks on up to 8 threads (as many as the machine has).
pub fn decrypt_dataset(
    key: &DataKey,
    container: &[u8],
) -> Result<(DatasetHeader, Zeroizing<Vec<u8>>), CryptoError> {
    let parsed = parse(container)?;
    let layout = Layout::new(parsed.plaintext_len);
    // `chunks` is a suffix of `container`: the difference is the preamble and nonce.
    let expected_len = layout
        .ciphertext_len()?
        .checked_add((container.len() - parsed.chunks.len()) as u64)
        .ok_or_else(too_large)?;
    let found_len = container.len() as u64;
    let cipher = ChunkCipher::new(key, parsed.nonce_prefix, parsed.aad)
        .ok_or(CryptoError::DatasetChunk { index: 0 })?;

    let first_len = layout.plaintext_len(0);
    let Some((first, rest)) = parsed.chunks.split_at_checked(first_len + TAG_LEN) else {
        return Err(CryptoError::DatasetTruncated {
            expected: expected_len,
            found: found_len,
        });
    };
    // Nothing is sized by the unauthenticated header's claim: chunk 0 goes into a chunk-sized
    // buffer, and the body is allocated only once the header is authentic and the container
    // is exactly as long as it implies.
    let mut first_plain = Zeroizing::new(vec![0; first_len]);
    cipher
        .open(0, layout.chunks == 1, first, &mut first_plain)
        .map_err(|()| CryptoError::DatasetChunk { index: 0 })?;
    check_len(expected_len, found_len)?;

    // The container holds the whole body, so its length bounds the allocation (and the
    // conversion cannot fail).
    let body_len =
        usize::try_from(parsed.plaintext_len).map_err(|_| CryptoError::DatasetDecryptedLength {
            expected: parsed.plaintext_len,
            found: 0,
        })?;
    // Zeroed allocation maps pages lazily: each worker faults in the part it writes.
    let mut body = Zeroizing::new(vec![0; body_len]);
    let (body_first, body_rest) = body.split_at_mut(first_len);
    body_first.copy_from_slice(&first_plain);
    open_in_parallel(&cipher, layout, rest, body_rest)?;
    Ok((parsed.header, body))
}

/// [`decrypt_dataset`], in the container's own memory: each chunk is opened where it lies
/// (on the same threads), then the plaintexts are moved down over the preamble and the tags,
/// and the buffer, cut to the body, is returned. No second buffer as large as the dataset is
/// allocated, so the peak memory is the container's, not twice it. On failure the container,
/// partly decrypted, is wiped.
pub fn decrypt_dataset_in_place(
    key: &DataKey,
    container: Vec<u8>,
) -> Result<(DatasetHeader, Zeroizing<Vec<u8>>), CryptoError> {
    let mut container = Zeroizing::new(container);
    let (header, plaintext_len, aad, nonce_prefix, chunks_at) = {
        let parsed = parse(&container)?;
        let chunks_at = container.len() - parsed.chunks.len();
        (
            parsed.header,
            parsed.plaintext_len,
            parsed.aad.to_vec(),
            parsed.nonce_prefix,
            chunks_at,
        )
    };
    let layout = Layout::new(plaintext_len);
    let expected_len = layout
        .ciphertext_len()?
        .checked_add(chunks_at as u64)
        .ok_or_else(too_large)?;
    let found_len = container.len() as u64;
    let cipher =
        ChunkCipher::new(key, nonce_prefix, &aad).ok_or(CryptoError::DatasetChunk { index: 0 })?;

    // Chunk 0 alone first, as `decrypt_dataset` does: nothing is sized by the header before
    // it is authentic.
    let first_len = layout.plaintext_len(0);
    let first_end = chunks_at + first_len + TAG_LEN;
    let Some(first) = container.get_mut(chunks_at..first_end) else {
        return Err(CryptoError::DatasetTruncated {
            expected: expected_len,
            found: found_len,
        });
    };
    cipher
        .open_in_place(0, layout.chunks == 1, first)
        .map_err(|()| CryptoError::DatasetChunk { index: 0 })?;
    check_len(expected_len, found_len)?;
    let rest = container.get_mut(first_end..).unwrap_or_default();
    open_batches(rest.chunks_mut(BATCH_CHUNKS * SLOT_LEN), |first, slots| {
        for (index, slot) in (first..).zip(slots.chunks_mut(SLOT_LEN)) {
            cipher
                .open_in_place(index, index + 1 == layout.chunks, slot)
                .map_err(|()| index)?;
        }
        Ok(())
    })?;

    // Each chunk's plaintext moves down to its place in the body; a destination never lies
    // past its source, so moving them in order overwrites only what was already moved.
    for index in 0..layout.chunks {
        // Both fit in usize: they are offsets in the container, which is in memory.
        let from = chunks_at + index as usize * SLOT_LEN;
        let to = index as usize * CHUNK_LEN;
        let len = layout.plaintext_len(index);
        container.copy_within(from..from + len, to);
    }
    // The length is at most the container's, so it fits.
    container.truncate(plaintext_len as usize);
    Ok((header, container))
}

/// The chunks (index runs, in order, merged) that hold any byte of `ranges` of a body laid
/// out as `layout`. `None` when a range is empty, outside the body, or there is none.
fn chunks_holding(layout: Layout, ranges: &[Range<u64>]) -> Option<Vec<Range<u64>>> {
    let chunk = CHUNK_LEN as u64;
    let mut runs: Vec<Range<u64>> = ranges
        .iter()
        .map(|r| {
            (r.start < r.end && r.end <= layout.plaintext_len)
                .then(|| r.start / chunk..(r.end - 1) / chunk + 1)
        })
        .collect::<Option<_>>()?;
    if runs.is_empty() {
        return None;
    }
    runs.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last) if run.start <= last.end => last.end = last.end.max(run.end),
            _ => merged.push(run),
        }
    }
    Some(merged)
}

/// The ciphertext bytes (chunks and tags) of chunk run `run`, and where they start after
/// the preamble.
fn run_slots(layout: Layout, run: &Range<u64>) -> Range<u64> {
    let start = run.start * SLOT_LEN as u64;
    let end = if run.end == layout.chunks {
        (run.end - 1) * SLOT_LEN as u64 + layout.last_len as u64 + TAG_LEN as u64
    } else {
        run.end * SLOT_LEN as u64
    };
    start..end
}

/// The byte ranges of a container that carry the plaintext `select` picks from its body
/// (given the container's public header): the preamble first (magic, version, header and
/// nonce prefix), then every chunk that holds a byte of it, in order. Only `head`, the
/// container's first bytes (at least its preamble: 4 KiB and a little more always do), is
/// read. What it returns is what [`decrypt_dataset_part`] takes, back to back.
pub fn dataset_part_ranges(
    head: &[u8],
    select: impl FnOnce(&DatasetHeader) -> Option<Vec<Range<u64>>>,
) -> Result<Vec<Range<u64>>, CryptoError> {
    let parsed = parse(head)?;
    let preamble = (head.len() - parsed.chunks.len()) as u64;
    let layout = Layout::new(parsed.plaintext_len);
    let ranges = select(&parsed.header).ok_or(CryptoError::DatasetPartInvalid)?;
    let runs = chunks_holding(layout, &ranges).ok_or(CryptoError::DatasetPartInvalid)?;
    let mut out = Vec::with_capacity(runs.len() + 1);
    out.push(0..preamble);
    out.extend(runs.iter().map(|run| {
        let slots = run_slots(layout, run);
        preamble + slots.start..preamble + slots.end
    }));
    Ok(out)
}

/// The longest container head [`dataset_part_ranges`] may need.
pub const MAX_PREAMBLE_LEN: usize = FIXED_PREAMBLE_LEN + MAX_HEADER_LEN + NONCE_PREFIX_LEN;

/// Authenticates and decrypts a part of a container (its preamble and the chunks holding
/// the plaintext `select` picks, back to back, as [`dataset_part_ranges`] lists them), and
/// returns the container's header and the picked plaintext, `select`'s ranges in order,
/// back to back (wiped when dropped).
///
/// Each chunk is checked at its own index, with the container's header as associated data:
/// a chunk from another place or another container, a changed header, or a part of the wrong
/// length fails, as with [`decrypt_dataset`].
pub fn decrypt_dataset_part(
    key: &DataKey,
    part: &[u8],
    select: impl FnOnce(&DatasetHeader) -> Option<Vec<Range<u64>>>,
) -> Result<(DatasetHeader, Zeroizing<Vec<u8>>), CryptoError> {
    // One copy of the part, decrypted in place: no more memory than a buffer of the runs'
    // plaintext and another of the picked ranges would take.
    decrypt_dataset_part_in_place(key, part.to_vec(), select)
}

/// [`decrypt_dataset_part`], in the part's own memory: each chunk is opened where it lies
/// and its plaintext moved down behind the one before, then the picked ranges are moved to
/// the front (when `select` lists them in ascending order, as a shard's are; otherwise they
/// are copied out). No second buffer as large as the part is allocated. On failure the
/// part, partly decrypted, is wiped.
pub fn decrypt_dataset_part_in_place(
    key: &DataKey,
    part: Vec<u8>,
    select: impl FnOnce(&DatasetHeader) -> Option<Vec<Range<u64>>>,
) -> Result<(DatasetHeader, Zeroizing<Vec<u8>>), CryptoError> {
    let mut part = Zeroizing::new(part);
    let plan = plan_part(&part, select)?;
    let aad = part[..plan.aad_len].to_vec();
    let cipher = ChunkCipher::new(key, plan.nonce_prefix, &aad)
        .ok_or(CryptoError::DatasetChunk { index: 0 })?;
    let layout = plan.layout;
    let mut starts = Vec::with_capacity(plan.runs.len());
    let (mut read, mut written) = (plan.chunks_at, 0);
    for run in &plan.runs {
        starts.push(written);
        for index in run.clone() {
            let len = layout.plaintext_len(index);
            let end = read + len + TAG_LEN;
            let slot = part
                .get_mut(read..end)
                .ok_or(CryptoError::DatasetChunk { index })?;
            cipher
                .open_in_place(index, index + 1 == layout.chunks, slot)
                .map_err(|()| CryptoError::DatasetChunk { index })?;
            // Behind everything opened so far: never past this chunk's own start.
            part.copy_within(read..read + len, written);
            (read, written) = (end, written + len);
        }
    }
    let ascending = plan.ranges.windows(2).all(|w| w[0].end <= w[1].start);
    if !ascending {
        let picked = pick(&plan, &starts, &part[..written])?;
        return Ok((plan.header, picked));
    }
    // Each range's bytes lie at or after the bytes of the ranges before it, so moving them
    // to the front in order overwrites only what was already moved.
    let mut out = 0;
    for range in &plan.ranges {
        let (from, len) = locate(&plan, &starts, range)?;
        if from + len > written {
            return Err(CryptoError::DatasetPartInvalid);
        }
        part.copy_within(from..from + len, out);
        out += len;
    }
    part.truncate(out);
    Ok((plan.header, part))
}

/// What a part must hold, from its (unauthenticated) header and `select`'s ranges, its
/// length already checked against it.
struct PartPlan {
    header: DatasetHeader,
    layout: Layout,
    /// The picked plaintext ranges, in `select`'s order.
    ranges: Vec<Range<u64>>,
    /// The chunk runs that hold them, in order.
    runs: Vec<Range<u64>>,
    /// Magic, version and header: the chunks' associated data, the part's first bytes.
    aad_len: usize,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Where the chunks start.
    chunks_at: usize,
}

fn plan_part(
    part: &[u8],
    select: impl FnOnce(&DatasetHeader) -> Option<Vec<Range<u64>>>,
) -> Result<PartPlan, CryptoError> {
    let parsed = parse(part)?;
    let layout = Layout::new(parsed.plaintext_len);
    let ranges = select(&parsed.header).ok_or(CryptoError::DatasetPartInvalid)?;
    let runs = chunks_holding(layout, &ranges).ok_or(CryptoError::DatasetPartInvalid)?;
    let expected: u64 = runs
        .iter()
        .map(|run| run_slots(layout, run))
        .map(|slots| slots.end - slots.start)
        .sum();
    let found = parsed.chunks.len() as u64;
    if found != expected {
        return Err(CryptoError::DatasetPartLength {
            expected: expected + (part.len() as u64 - found),
            found: part.len() as u64,
        });
    }
    Ok(PartPlan {
        aad_len: parsed.aad.len(),
        nonce_prefix: parsed.nonce_prefix,
        chunks_at: part.len() - parsed.chunks.len(),
        header: parsed.header,
        layout,
        ranges,
        runs,
    })
}

/// Where `range` of the body lies in the runs' plaintext laid back to back (run `i` from
/// `starts[i]`), and its length.
fn locate(
    plan: &PartPlan,
    starts: &[usize],
    range: &Range<u64>,
) -> Result<(usize, usize), CryptoError> {
    let chunk = CHUNK_LEN as u64;
    // Every range lies in one run: the runs were made from the ranges.
    let (run, start) = plan
        .runs
        .iter()
        .zip(starts)
        .find(|(run, _)| run.start * chunk <= range.start && range.end <= run.end * chunk)
        .ok_or(CryptoError::DatasetPartInvalid)?;
    let offset = usize::try_from(range.start - run.start * chunk).map_err(|_| too_large())?;
    let len = usize::try_from(range.end - range.start).map_err(|_| too_large())?;
    Ok((start + offset, len))
}

/// The picked ranges copied out of the runs' plaintext (`plain`), in `select`'s order.
fn pick(
    plan: &PartPlan,
    starts: &[usize],
    plain: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let picked_len: u64 = plan.ranges.iter().map(|r| r.end - r.start).sum();
    let mut picked = Zeroizing::new(Vec::with_capacity(
        usize::try_from(picked_len).map_err(|_| too_large())?,
    ));
    for range in &plan.ranges {
        let (from, len) = locate(plan, starts, range)?;
        picked.extend_from_slice(
            plain
                .get(from..from + len)
                .ok_or(CryptoError::DatasetPartInvalid)?,
        );
    }
    Ok(picked)
}

/// Decrypts chunks 1.. of `layout` (`chunks`: their ciphertext and tags back to back) into
/// `out`, reporting the lowest-numbered chunk that fails, as a decryption in order would.
fn open_in_parallel(
    cipher: &ChunkCipher<'_>,
    layout: Layout,
    chunks: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let batches = chunks
        .chunks(BATCH_CHUNKS * SLOT_LEN)
        .zip(out.chunks_mut(BATCH_CHUNKS * CHUNK_LEN));
    open_batches(batches, |first, (sealed, plain)| {
        let pieces = sealed.chunks(SLOT_LEN).zip(plain.chunks_mut(CHUNK_LEN));
        for (index, (chunk, out)) in (first..).zip(pieces) {
            let last = index + 1 == layout.chunks;
            cipher.open(index, last, chunk, out).map_err(|()| index)?;
        }
        Ok(())
    })
}

/// Runs `open` over `batches` of [`BATCH_CHUNKS`] chunks each, the first starting at chunk 1,
/// on as many threads as there are batches (up to the machine's cores and [`MAX_THREADS`]).
/// `open` returns the index of a chunk that failed; the lowest such index is the error.
fn open_batches<B: Send>(
    batches: impl ExactSizeIterator<Item = B> + Send,
    open: impl Fn(u64, B) -> Result<(), u64> + Sync,
) -> Result<(), CryptoError> {
    let batch_count = batches.len();
    let queue = Mutex::new((1..).step_by(BATCH_CHUNKS).zip(batches));
    let failed = AtomicU64::new(u64::MAX);
    let work = || {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((first, batch)) = next else {
                break;
            };
            // Batches are handed out in order, so one after a known failure cannot hold
            // the first failing chunk.
            if first > failed.load(Ordering::Relaxed) {
                break;
            }
            if let Err(index) = open(first, batch) {
                failed.fetch_min(index, Ordering::Relaxed);
            }
        }
    };
    let threads = worker_threads(batch_count as u64);
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A helper that cannot be started leaves its share to the others.
            let _ = std::thread::Builder::new().spawn_scoped(scope, work);
        }
        work();
    });
    match failed.into_inner() {
        u64::MAX => Ok(()),
        index => Err(CryptoError::DatasetChunk { index }),
    }
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

    /// [`decrypt_dataset`] and [`decrypt_dataset_in_place`] on `container`, which must agree:
    /// the same header and body, or the same error.
    fn decrypt_both(
        key: &DataKey,
        container: &[u8],
    ) -> Result<(DatasetHeader, Zeroizing<Vec<u8>>), CryptoError> {
        let copied = decrypt_dataset(key, container);
        let in_place = decrypt_dataset_in_place(key, container.to_vec());
        match (&copied, &in_place) {
            (Ok(a), Ok(b)) => assert!(a.0 == b.0 && *a.1 == *b.1, "different plaintexts"),
            (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
            _ => panic!(
                "one decrypted, the other did not: {:?} / {:?}",
                copied.as_ref().map(|_| ()),
                in_place.as_ref().map(|_| ())
            ),
        }
        in_place
    }

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

    /// The bytes of `container` in `ranges`, back to back: a dataset part as the host sends it.
    fn gather(container: &[u8], ranges: &[Range<u64>]) -> Vec<u8> {
        ranges
            .iter()
            .flat_map(|r| container[r.start as usize..r.end as usize].iter().copied())
            .collect()
    }

    #[test]
    fn a_part_carries_just_the_chunks_of_the_plaintext_picked() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (body, container) = encrypt(&key, &four_chunks())?;
        // Bytes in chunk 0, across chunks 1 and 2, and in the last one: chunks 0, 1-2 and 3,
        // which merge into one run; then just chunk 1 and the short last chunk.
        // The last, out of order: picked in `select`'s order all the same.
        let picks = [
            vec![10..20, 70_000..140_000, 258_990..259_000],
            vec![65_536..65_540, 200_000..259_000],
            vec![200_000..259_000, 65_536..65_540],
        ];
        let chunks_start = chunks_start(&container)?;
        for pick in picks {
            let head = &container[..container.len().min(MAX_PREAMBLE_LEN)];
            let ranges = dataset_part_ranges(head, |_| Some(pick.clone()))?;
            assert_eq!(ranges[0], 0..chunks_start as u64);
            let part = gather(&container, &ranges);
            assert!(part.len() < container.len() || pick[0].start == 10);
            let (header, picked) = decrypt_dataset_part(&key, &part, |_| Some(pick.clone()))?;
            assert_eq!(header, four_chunks());
            let expected: Vec<u8> = pick
                .iter()
                .flat_map(|r| body[r.start as usize..r.end as usize].iter().copied())
                .collect();
            assert_eq!(picked.as_slice(), expected.as_slice());
        }
        Ok(())
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of one range each, on purpose
    fn a_part_that_is_not_what_it_claims_fails() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (_, container) = encrypt(&key, &four_chunks())?;
        let pick = || Some(vec![65_536..65_540]);
        let ranges = dataset_part_ranges(&container, |_| pick())?;
        let part = gather(&container, &ranges);
        assert!(decrypt_dataset_part(&key, &part, |_| pick()).is_ok());
        // Chunk 2 in chunk 1's place: it fails at its claimed index.
        let start = chunks_start(&container)?;
        let mut moved = part.clone();
        moved[start..].copy_from_slice(&container[start + 2 * SLOT_LEN..start + 3 * SLOT_LEN]);
        assert!(matches!(
            decrypt_dataset_part(&key, &moved, |_| pick()),
            Err(CryptoError::DatasetChunk { index: 1 })
        ));
        // Cut short, or with a byte more.
        assert!(matches!(
            decrypt_dataset_part(&key, &part[..part.len() - 1], |_| pick()),
            Err(CryptoError::DatasetPartLength { .. })
        ));
        let mut longer = part.clone();
        longer.push(0);
        assert!(matches!(
            decrypt_dataset_part(&key, &longer, |_| pick()),
            Err(CryptoError::DatasetPartLength { .. })
        ));
        // The same place in another container under the same key, or the wrong key.
        let (_, other) = encrypt(&key, &four_chunks())?;
        let mut spliced = part.clone();
        spliced[start..].copy_from_slice(&other[start + SLOT_LEN..start + 2 * SLOT_LEN]);
        assert!(decrypt_dataset_part(&key, &spliced, |_| pick()).is_err());
        assert!(decrypt_dataset_part(&DataKey::generate(), &part, |_| pick()).is_err());
        // Nothing, or something beyond the body, is no part at all.
        for bad in [vec![], vec![5..5], vec![0..259_001]] {
            assert!(matches!(
                dataset_part_ranges(&container, |_| Some(bad.clone())),
                Err(CryptoError::DatasetPartInvalid)
            ));
        }
        Ok(())
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
            let (got_header, got_body) = decrypt_both(&key, &container)?;
            assert_eq!(got_header, h);
            assert_eq!(*got_body, body);
        }
        Ok(())
    }

    /// The chunks are exactly what `aead::stream`'s BE32 STREAM produces, in both directions,
    /// across a batch boundary and with a short last chunk.
    #[test]
    fn chunks_match_the_reference_stream() -> Result<(), Box<dyn std::error::Error>> {
        use aes_gcm::aead::Payload;
        use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
        let failed = |_| "the reference STREAM refused";
        let key = DataKey::generate();
        // 34 examples of 65 535 bytes: 2 × BATCH_CHUNKS + 1 full chunks and a short one.
        let h = header(65_531, 2 * BATCH_CHUNKS as u32 + 2);
        let (body, container) = encrypt(&key, &h)?;
        assert_eq!(
            Layout::new(body.len() as u64).chunks,
            2 * BATCH_CHUNKS as u64 + 2
        );
        assert!(Layout::new(body.len() as u64).last_len < CHUNK_LEN);
        let parsed = parse(&container)?;
        let mut decryptor = DecryptorBE32::from_aead(key.cipher(), &parsed.nonce_prefix.into());
        let mut plain = Vec::new();
        let mut chunks = parsed.chunks.chunks(SLOT_LEN).peekable();
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_some() {
                plain.extend(
                    decryptor
                        .decrypt_next(Payload {
                            msg: chunk,
                            aad: parsed.aad,
                        })
                        .map_err(failed)?,
                );
            } else {
                plain.extend(
                    decryptor
                        .decrypt_last(Payload {
                            msg: chunk,
                            aad: parsed.aad,
                        })
                        .map_err(failed)?,
                );
                break;
            }
        }
        assert_eq!(plain, body);

        // And a container built by the reference encryptor decrypts here.
        let prefix = [9; NONCE_PREFIX_LEN];
        let mut encryptor = EncryptorBE32::from_aead(key.cipher(), &prefix.into());
        let mut reference = parsed.aad.to_vec();
        reference.extend_from_slice(&prefix);
        let mut pieces = body.chunks(CHUNK_LEN).peekable();
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_some() {
                reference.extend(
                    encryptor
                        .encrypt_next(Payload {
                            msg: piece,
                            aad: parsed.aad,
                        })
                        .map_err(failed)?,
                );
            } else {
                reference.extend(
                    encryptor
                        .encrypt_last(Payload {
                            msg: piece,
                            aad: parsed.aad,
                        })
                        .map_err(failed)?,
                );
                break;
            }
        }
        assert_eq!(*decrypt_both(&key, &reference)?.1, body);
        Ok(())
    }

    /// A failure deep in a large container names the first failing chunk, however the
    /// batches were spread over threads.
    #[test]
    fn parallel_decryption_names_the_first_failure() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let h = header(65_532, 5 * BATCH_CHUNKS as u32 + 3);
        let (body, container) = encrypt(&key, &h)?;
        assert_eq!(*decrypt_both(&key, &container)?.1, body);
        let start = chunks_start(&container)?;
        for bad_chunks in [
            vec![BATCH_CHUNKS + 1],
            vec![4 * BATCH_CHUNKS, 3 * BATCH_CHUNKS + 7, 5 * BATCH_CHUNKS + 2],
            vec![5 * BATCH_CHUNKS + 2, 2],
        ] {
            let mut bad = container.clone();
            for &i in &bad_chunks {
                bad[start + i * SLOT_LEN + 3] ^= 1;
            }
            let first = bad_chunks.iter().min().copied().unwrap_or_default() as u64;
            match decrypt_both(&key, &bad) {
                Err(CryptoError::DatasetChunk { index }) => assert_eq!(index, first),
                other => panic!("{bad_chunks:?}: {:?}", other.map(|_| ())),
            }
        }
        Ok(())
    }

    /// A reader that hands out a few bytes at a time still fills whole chunks.
    #[test]
    fn encrypts_from_a_trickling_reader() -> Result<(), CryptoError> {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let key = DataKey::generate();
        let h = header(65_532, 3 * BATCH_CHUNKS as u32);
        let body = body_for(&h)?;
        let mut container = Vec::new();
        encrypt_dataset(&key, &h, Trickle(&body), &mut container)?;
        assert_eq!(*decrypt_both(&key, &container)?.1, body);
        let short = &body[..body.len() - 1];
        assert!(matches!(
            encrypt_dataset(&key, &h, Trickle(short), io::sink()),
            Err(CryptoError::DatasetBodyTooShort { .. })
        ));
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
                assert!(decrypt_both(&key, &bad).is_err(), "flip {bit:#x} at {i}");
            }
        }
        Ok(())
    }

    #[test]
    fn every_truncation_is_detected() -> Result<(), CryptoError> {
        let key = DataKey::generate();
        let (_, container) = encrypt(&key, &header(1, 3))?;
        for len in 0..container.len() {
            assert!(decrypt_both(&key, &container[..len]).is_err(), "{len}");
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
            decrypt_both(&key, &bad),
            Err(CryptoError::DatasetBadMagic)
        ));

        let mut bad = container.clone();
        bad[9] ^= 1;
        assert!(matches!(
            decrypt_both(&key, &bad),
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
            decrypt_both(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 0 })
        ));

        let mut bad = container.clone();
        bad[start - 1] ^= 1; // nonce prefix
        assert!(matches!(
            decrypt_both(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 0 })
        ));

        let mut bad = container.clone();
        bad[start + 2 * full + 5] ^= 1; // body of chunk 2
        assert!(matches!(
            decrypt_both(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 2 })
        ));

        let mut bad = container.clone();
        bad[start + 3 * full - 1] ^= 1; // tag of chunk 2
        assert!(matches!(
            decrypt_both(&key, &bad),
            Err(CryptoError::DatasetChunk { index: 2 })
        ));

        let last = container.len() - 1;
        let mut bad = container.clone();
        bad[last] ^= 1; // tag of the last chunk
        assert!(matches!(
            decrypt_both(&key, &bad),
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
            decrypt_both(&key, &swapped),
            Err(CryptoError::DatasetChunk { index: 1 })
        ));

        let mut dropped = container[..chunk(1).start].to_vec();
        dropped.extend_from_slice(&container[chunk(1).end..]);
        assert!(matches!(
            decrypt_both(&key, &dropped),
            Err(CryptoError::DatasetTruncated { .. })
        ));

        // Cut exactly at a chunk boundary.
        assert!(matches!(
            decrypt_both(&key, &container[..chunk(2).end]),
            Err(CryptoError::DatasetTruncated { .. })
        ));

        let mut appended = container.clone();
        appended.extend_from_slice(b"junk");
        assert!(matches!(
            decrypt_both(&key, &appended),
            Err(CryptoError::DatasetTrailingData { extra: 4 })
        ));

        // A duplicated chunk in place of its successor.
        let mut repeated = container.clone();
        repeated[chunk(2)].copy_from_slice(&container[chunk(1)]);
        assert!(matches!(
            decrypt_both(&key, &repeated),
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
