//! The owner's dataset as the host and the enclave read it.
//!
//! The first byte picks the mode:
//! * 0: the rest is a container from the host: `read_dataset_header` and `decrypt_dataset`
//!   under a fixed key (then `TrainingData::from_plaintext` on anything that decrypts);
//! * 1: the rest is a postcard `DatasetHeader` followed by a plaintext body, fed to
//!   `DatasetHeader::validate` / `plaintext_len` and `TrainingData::from_plaintext`, and
//!   batches are read back from whatever parses;
//! * 2: the same header and body are encrypted with `encrypt_dataset`, optionally damaged
//!   (one byte flipped, cut short or extended, as chosen by the input), and decrypted: an
//!   intact container must round-trip, a damaged one must be refused.
#![no_main]

use chiron_crypto::{DataKey, decrypt_dataset, encrypt_dataset, read_dataset_header};
use chiron_proto::dataset::DatasetHeader;
use chiron_sandbox::{Split, TrainingData};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x5a; 32];
/// Bodies above this are not built in mode 2 (keeps executions fast; still several chunks).
const MAX_BUILT_BODY: u64 = 300 * 1024;

fn exercise(header: DatasetHeader, body: Vec<u8>) {
    let Ok(data) = TrainingData::from_plaintext(header, body) else {
        return;
    };
    for split in [Split::Train, Split::Valid] {
        let count = data.count(split);
        let indices: Vec<u32> = [0, count / 2, count.saturating_sub(1), count, u32::MAX]
            .into_iter()
            .collect();
        for &i in &indices {
            let valid = i < count;
            assert_eq!(data.features(split, &[i]).is_some(), valid);
            assert_eq!(data.labels(split, &[i]).is_some(), valid);
        }
    }
    let _ = data.header();
}

fn split_header(bytes: &[u8]) -> Option<(DatasetHeader, &[u8])> {
    postcard::take_from_bytes::<DatasetHeader>(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = DataKey::from_bytes(KEY);
    match mode % 3 {
        0 => {
            let header = read_dataset_header(rest);
            if let Ok((h, body)) = decrypt_dataset(&key, rest) {
                // Decrypting authenticates the same header the unauthenticated read saw.
                assert_eq!(header.ok().as_ref(), Some(&h));
                exercise(h, body);
            }
        }
        1 => {
            let Some((header, body)) = split_header(rest) else {
                return;
            };
            if header.validate().is_ok() {
                let len = header.plaintext_len().ok();
                assert!(len.is_some());
                let _ = header.feature_len();
                let _ = header.total_count();
            } else {
                assert!(header.plaintext_len().is_err());
            }
            exercise(header, body.to_vec());
        }
        _ => {
            let Some((header, tail)) = split_header(rest) else {
                return;
            };
            let Ok(len) = header.plaintext_len() else {
                return;
            };
            if len > MAX_BUILT_BODY {
                return;
            }
            // Damage descriptor: 1 byte kind, 4 bytes position; the rest repeats as the body.
            let (damage, source) = tail.split_at(tail.len().min(5));
            let mut body = Vec::with_capacity(len as usize);
            if !source.is_empty() {
                while (body.len() as u64) < len {
                    let take = (len as usize - body.len()).min(source.len());
                    body.extend_from_slice(&source[..take]);
                }
            } else {
                body.resize(len as usize, 0);
            }
            let mut container = Vec::new();
            let written = encrypt_dataset(&key, &header, body.as_slice(), &mut container)
                .expect("encrypting a valid header and a body of its length must work");
            assert_eq!(written, container.len() as u64);
            assert_eq!(
                chiron_crypto::dataset::container_len(&header).ok(),
                Some(written)
            );
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
            match decrypt_dataset(&key, &container) {
                Ok((h, plain)) => {
                    assert!(!damaged, "a damaged container decrypted");
                    assert_eq!(h, header);
                    assert_eq!(plain, body);
                    exercise(h, plain);
                }
                Err(e) => assert!(damaged, "an intact container was refused: {e}"),
            }
        }
    }
});
