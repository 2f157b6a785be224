//! The owner's dataset as the host and the enclave read it.
//!
//! The first byte picks the mode:
//! * 0: the rest is a container from the host: `read_dataset_header`, `decrypt_dataset` and
//!   `decrypt_dataset_in_place` (which must agree)
//!   under a fixed key (then `TrainingData::from_plaintext` on anything that decrypts);
//! * 1: the rest is a postcard `DatasetHeader` followed by a plaintext body, fed to
//!   `DatasetHeader::validate` / `plaintext_len` and `TrainingData::from_plaintext`, and
//!   batches are read back from whatever parses;
//! * 2: the same header and body are encrypted with `encrypt_dataset`, optionally damaged
//!   (one byte flipped, cut short or extended, as chosen by the input), and decrypted: an
//!   intact container must round-trip, a damaged one must be refused.

use chiron_crypto::dataset::container_len;
use chiron_crypto::{
    DataKey, decrypt_dataset, decrypt_dataset_in_place, encrypt_dataset, read_dataset_header,
};
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_sandbox::{Split, TrainingData};

use super::{enc, must, with_mode};

const KEY: [u8; 32] = [0x5a; 32];
/// Bodies above this are not built in mode 2 (keeps executions fast; still several chunks).
const MAX_BUILT_BODY: u64 = 300 * 1024;

fn exercise(header: DatasetHeader, body: Vec<u8>) {
    let Ok(data) = TrainingData::from_plaintext(header, body) else {
        return;
    };
    for split in [Split::Train, Split::Valid] {
        let count = data.count(split);
        for i in [0, count / 2, count.saturating_sub(1), count, u32::MAX] {
            let valid = i < count;
            assert_eq!(data.labels(split, &[i]).is_some(), valid);
            // A single example always fits a tensor here: the headers that reach this point
            // describe bodies of at most MAX_BUILT_BODY or the input's own length.
            assert_eq!(data.features(split, &[i]).is_some(), valid);
        }
    }
    let _ = data.header();
}

fn split_header(bytes: &[u8]) -> Option<(DatasetHeader, &[u8])> {
    postcard::take_from_bytes::<DatasetHeader>(bytes).ok()
}

/// The `dataset` property (layout in the module documentation).
pub fn dataset(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = DataKey::from_bytes(KEY);
    match mode % 3 {
        0 => {
            let header = read_dataset_header(rest);
            // Decrypting in place agrees with decrypting into a fresh buffer, either way.
            let in_place = decrypt_dataset_in_place(&key, rest.to_vec());
            let copied = decrypt_dataset(&key, rest);
            match (&copied, &in_place) {
                (Ok(a), Ok(b)) => assert!(a.0 == b.0 && *a.1 == *b.1),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("the two decryptions disagree"),
            }
            if let Ok((h, body)) = copied {
                // Decrypting authenticates the same header the unauthenticated read saw.
                assert_eq!(header.ok().as_ref(), Some(&h));
                exercise(h, body.to_vec());
            }
        }
        1 => {
            let Some((header, body)) = split_header(rest) else {
                return;
            };
            if header.validate().is_ok() {
                assert!(header.plaintext_len().is_ok());
                let _ = header.feature_len();
                let _ = header.total_count();
            } else {
                assert!(header.plaintext_len().is_err());
            }
            exercise(header, body.to_vec());
        }
        _ => build(&key, rest),
    }
}

/// Mode 2: encrypt, damage, decrypt.
fn build(key: &DataKey, rest: &[u8]) {
    let Some((header, tail)) = split_header(rest) else {
        return;
    };
    let Ok(len) = header.plaintext_len() else {
        return;
    };
    let Some(len) = usize::try_from(len)
        .ok()
        .filter(|&len| len as u64 <= MAX_BUILT_BODY)
    else {
        return;
    };
    // Damage descriptor: 1 byte kind, 4 bytes position; the rest repeats as the body.
    let (damage, source) = tail.split_at(tail.len().min(5));
    let body: Vec<u8> = if source.is_empty() {
        vec![0; len]
    } else {
        source.iter().copied().cycle().take(len).collect()
    };
    let mut container = Vec::new();
    let written = must(
        encrypt_dataset(key, &header, body.as_slice(), &mut container),
        "encrypting a valid header and a body of its length",
    );
    assert_eq!(written, container.len() as u64);
    assert_eq!(container_len(&header).ok(), Some(written));
    let kind = damage.first().copied().unwrap_or(0);
    let at = damage
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0)
        % container.len();
    let damaged = match kind % 4 {
        0 => false,
        1 => {
            container[at] ^= 1 << (kind >> 5);
            true
        }
        2 => {
            container.truncate(at);
            true
        }
        _ => {
            container.push(kind);
            true
        }
    };
    match decrypt_dataset(key, &container) {
        Ok((h, plain)) => {
            assert!(!damaged, "a damaged container decrypted");
            assert_eq!(h, header);
            assert_eq!(plain.as_slice(), body.as_slice());
            exercise(h, plain.to_vec());
        }
        Err(e) => assert!(damaged, "an intact container was refused: {e}"),
    }
}

fn tabular() -> DatasetHeader {
    DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![3],
        encoding: ElementEncoding::F32,
        classes: 2,
        train_count: 2,
        valid_count: 1,
    }
}

fn image() -> DatasetHeader {
    DatasetHeader {
        kind: DatasetKind::Image,
        dims: vec![1, 2, 2],
        encoding: ElementEncoding::U8Unit,
        classes: 3,
        train_count: 3,
        valid_count: 0,
    }
}

/// A valid body for `header`: labels `i % classes`, then a byte pattern.
fn body(header: &DatasetHeader) -> Vec<u8> {
    let len = must(header.plaintext_len(), "a seed header is valid") as usize;
    let count = header.total_count() as u32;
    let mut body: Vec<u8> = (0..count)
        .flat_map(|i| (i % header.classes).to_le_bytes())
        .collect();
    let labels = body.len();
    body.extend((labels..len).map(|i| (i * 37) as u8));
    body
}

/// A small tabular header for other targets' seeds.
pub(crate) fn seed_header() -> DatasetHeader {
    tabular()
}

/// A small image header for other targets' seeds.
pub(crate) fn seed_image_header() -> DatasetHeader {
    image()
}

/// For a tabular and an image dataset: the container (mode 0), the plaintext (mode 1) and
/// the inputs to an intact and a damaged build (mode 2).
pub fn seeds_dataset() -> Vec<Vec<u8>> {
    let key = DataKey::from_bytes(KEY);
    let mut seeds = Vec::new();
    for header in [tabular(), image()] {
        let body = body(&header);
        let mut container = Vec::new();
        must(
            encrypt_dataset(&key, &header, body.as_slice(), &mut container),
            "a seed dataset encrypts",
        );
        seeds.push(with_mode(0, &container));
        let mut plain = enc(&header);
        plain.extend_from_slice(&body);
        seeds.push(with_mode(1, &plain));
        for damage in [[0, 0, 0, 0, 0], [1, 9, 0, 0, 0]] {
            let mut build = enc(&header);
            build.extend_from_slice(&damage);
            build.extend_from_slice(&body);
            seeds.push(with_mode(2, &build));
        }
    }
    seeds
}
