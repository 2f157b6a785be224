//! IDX files, the format of MNIST and Fashion-MNIST.
//!
//! An IDX file is a big-endian magic number (two zero bytes, an element type, a rank), one
//! big-endian `u32` per dimension, then the elements. Images are unsigned bytes of rank 3,
//! `[count, rows, cols]` (magic `0x00000803`); labels unsigned bytes of rank 1, `[count]`
//! (magic `0x00000801`). Either file may be gzip-compressed, as MNIST is distributed;
//! compression is recognised by its magic bytes, not by the file name.

use std::path::{Path, PathBuf};

use chiron_proto::dataset::{DatasetKind, MAX_DIM};

use super::{
    ConvertError, ConvertOptions, Examples, Format, Inputs, LabelledInputs, PlainDataset,
    Standardizer, Values, check_options, check_query_labels, numeric_class_names, numeric_classes,
    read_maybe_gzip, scaled_pixels,
};

/// IDX magic of an image file: unsigned bytes, three dimensions `[count, rows, cols]`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of a label file: unsigned bytes, one dimension `[count]`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// An IDX image file and, for training and evaluation, its label file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxFiles {
    /// The images (magic `0x00000803`).
    pub images: PathBuf,
    /// The labels (magic `0x00000801`); prediction needs none.
    pub labels: Option<PathBuf>,
}

impl IdxFiles {
    fn labels(&self) -> Result<&Path, ConvertError> {
        self.labels
            .as_deref()
            .ok_or_else(|| ConvertError::NoLabels {
                path: self.images.clone(),
                what: "give the IDX label file that goes with these images",
            })
    }
}

impl Format for IdxFiles {
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        from_idx(&self.images, self.labels()?, opts)
    }

    fn load_labelled(
        &self,
        class_names: &[String],
        _standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        let labels = self.labels()?;
        let inputs = load_idx_inputs(&self.images, labels, limit)?;
        check_query_labels(labels, &inputs.labels, class_names)?;
        Ok(inputs)
    }

    fn load_unlabelled(
        &self,
        _standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        let img = read_images(&self.images)?;
        let n = taken(&self.images, img.dims[0], limit)?;
        Ok(Inputs {
            dims: image_dims(&img),
            features: scaled(&img, n),
        })
    }
}

/// One parsed IDX file: its dimensions and the bytes after the header.
struct Idx {
    dims: Vec<u32>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl Idx {
    fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads an IDX file of unsigned bytes with the given magic and checks its exact length.
fn read_idx(path: &Path, magic: u32, what: &'static str) -> Result<Idx, ConvertError> {
    let bytes = read_maybe_gzip(path)?;
    let short = |dims: Vec<u32>, expected: u64| ConvertError::IdxLength {
        path: path.to_path_buf(),
        dims,
        expected,
        actual: bytes.len() as u64,
    };
    let rank = (magic & 0xff) as usize;
    let header_len = 4 + 4 * rank;
    let Some(found) = be_u32(&bytes, 0) else {
        return Err(short(Vec::new(), header_len as u64));
    };
    if found != magic {
        let other = if magic == IDX_IMAGES_MAGIC {
            IDX_LABELS_MAGIC
        } else {
            IDX_IMAGES_MAGIC
        };
        return Err(ConvertError::IdxMagic {
            path: path.to_path_buf(),
            what,
            expected: magic,
            found,
            hint: if found == other {
                " (are the image and label files swapped?)"
            } else {
                ""
            },
        });
    }
    let dims: Option<Vec<u32>> = (0..rank).map(|i| be_u32(&bytes, 4 + 4 * i)).collect();
    let Some(dims) = dims else {
        return Err(short(Vec::new(), header_len as u64));
    };
    let data_len = dims
        .iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(u64::from(d)));
    let expected = data_len.saturating_add(header_len as u64);
    if bytes.len() as u64 != expected {
        return Err(short(dims, expected));
    }
    Ok(Idx {
        dims,
        bytes,
        data_start: header_len,
    })
}

/// Reads an IDX image file and checks that its images have a usable shape.
fn read_images(images: &Path) -> Result<Idx, ConvertError> {
    let img = read_idx(images, IDX_IMAGES_MAGIC, "images")?;
    let (rows, cols) = (img.dims[1], img.dims[2]);
    if rows == 0 || cols == 0 || rows > MAX_DIM || cols > MAX_DIM {
        return Err(ConvertError::IdxShape {
            path: images.to_path_buf(),
            dims: img.dims.clone(),
        });
    }
    Ok(img)
}

/// How many of `count` examples the `limit` takes; none is an error.
fn taken(path: &Path, count: u32, limit: Option<usize>) -> Result<usize, ConvertError> {
    let n = limit.map_or(count as usize, |l| l.min(count as usize));
    if n == 0 {
        return Err(ConvertError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(n)
}

fn image_dims(img: &Idx) -> Vec<u32> {
    vec![1, img.dims[1], img.dims[2]]
}

/// The first `n` images' pixels scaled to `0.0..=1.0`.
fn scaled(img: &Idx, n: usize) -> Vec<f32> {
    scaled_pixels(&img.data()[..n * img.dims[1] as usize * img.dims[2] as usize])
}

/// Reads and cross-checks an image/label IDX pair, keeping the first `limit` examples.
/// Returns the images, the labels and the example count taken.
fn read_idx_pair(
    images: &Path,
    labels: &Path,
    limit: Option<usize>,
) -> Result<(Idx, Vec<u32>, usize), ConvertError> {
    let img = read_images(images)?;
    let lab = read_idx(labels, IDX_LABELS_MAGIC, "labels")?;
    let count = img.dims[0];
    if count != lab.dims[0] {
        return Err(ConvertError::CountMismatch {
            images_path: images.to_path_buf(),
            images: u64::from(count),
            labels_path: labels.to_path_buf(),
            labels: u64::from(lab.dims[0]),
        });
    }
    let n = taken(images, count, limit)?;
    let labels_taken = lab.data()[..n].iter().map(|&l| u32::from(l)).collect();
    Ok((img, labels_taken, n))
}

/// Converts an MNIST-style IDX image/label pair (each gzip-compressed or raw).
///
/// The images file must have magic `0x00000803` (unsigned bytes, `[count, rows, cols]`), the
/// labels file `0x00000801` (unsigned bytes, `[count]`); the counts must agree and each file
/// must be exactly as long as its header says. The result is an [`DatasetKind::Image`] dataset
/// of dims `[1, rows, cols]`, [`ElementEncoding::U8Unit`], with `max label + 1` classes, each
/// of which must occur.
///
/// [`ElementEncoding::U8Unit`]: chiron_proto::dataset::ElementEncoding::U8Unit
pub fn from_idx(
    images: &Path,
    labels: &Path,
    opts: &ConvertOptions,
) -> Result<PlainDataset, ConvertError> {
    check_options(opts)?;
    let (img, label_values, n) = read_idx_pair(images, labels, opts.limit)?;
    let classes = numeric_classes(labels, &label_values)?;
    let dims = image_dims(&img);
    let len = n * img.dims[1] as usize * img.dims[2] as usize;
    let mut bytes = img.bytes;
    bytes.truncate(img.data_start + len);
    // Drop the header in place rather than copying up to 16 GiB of pixels.
    bytes.drain(..img.data_start);
    Examples {
        kind: DatasetKind::Image,
        dims,
        values: Values::U8(bytes),
        labels: label_values,
    }
    .into_dataset(images, numeric_class_names(classes), None, opts)
}

/// Reads an owner's held-out IDX image/label pair (e.g. `t10k-*`) as query inputs: pixels
/// scaled to `0.0..=1.0` (`/ 255`, as the enclave decodes [`ElementEncoding::U8Unit`]), dims
/// `[1, rows, cols]`, the first `limit` examples.
///
/// [`ElementEncoding::U8Unit`]: chiron_proto::dataset::ElementEncoding::U8Unit
pub fn load_idx_inputs(
    images: &Path,
    labels: &Path,
    limit: Option<usize>,
) -> Result<LabelledInputs, ConvertError> {
    let (img, labels, n) = read_idx_pair(images, labels, limit)?;
    Ok(LabelledInputs {
        dims: image_dims(&img),
        features: scaled(&img, n),
        labels,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use super::super::test_support::{
        Scratch, body_labels, fashion_test_files, iris_csv, no_split,
    };
    use chiron_proto::dataset::ElementEncoding;

    use super::super::{from_csv, read_maybe_gzip};
    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn gunzip(path: &Path) -> Vec<u8> {
        read_maybe_gzip(path).unwrap()
    }

    #[test]
    fn converts_real_fashion_mnist_test_images() {
        let (images, labels) = fashion_test_files();
        let opts = ConvertOptions {
            valid_fraction: 0.1,
            limit: Some(1000),
            shuffle_seed: None,
        };
        let data = from_idx(&images, &labels, &opts).unwrap();
        let h = &data.header;
        assert_eq!(h.kind, DatasetKind::Image);
        assert_eq!(h.dims, vec![1, 28, 28]);
        assert_eq!(h.encoding, ElementEncoding::U8Unit);
        assert_eq!(h.classes, 10);
        assert_eq!((h.train_count, h.valid_count), (900, 100));
        assert_eq!(data.body.len(), 1000 * 4 + 1000 * 784);
        assert_eq!(data.body.len() as u64, h.plaintext_len().unwrap());
        assert_eq!(
            data.class_names,
            (0..10).map(|c| c.to_string()).collect::<Vec<_>>()
        );
        assert!(data.standardizer.is_none());

        // File order is kept without a seed: the known first labels of the t10k set.
        let labels_in_body = body_labels(&data);
        assert_eq!(labels_in_body[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
        let mut histogram = [0usize; 10];
        for &l in &labels_in_body {
            histogram[l as usize] += 1;
        }
        assert!(
            histogram.iter().all(|&c| (70..=130).contains(&c)),
            "{histogram:?}"
        );

        // The pixels are the query loader's values, unscaled.
        let inputs = load_idx_inputs(&images, &labels, Some(1000)).unwrap();
        let pixels = &data.body[4000..];
        assert!(
            pixels
                .iter()
                .zip(&inputs.features)
                .all(|(&p, &f)| (f32::from(p) / 255.0 - f).abs() < 1e-7)
        );
        assert_eq!(inputs.labels, labels_in_body);
    }

    #[test]
    fn shuffling_is_seeded_and_keeps_images_with_their_labels() {
        let (images, labels) = fashion_test_files();
        let opts = ConvertOptions {
            valid_fraction: 0.2,
            limit: Some(300),
            shuffle_seed: Some(7),
        };
        let a = from_idx(&images, &labels, &opts).unwrap();
        let b = from_idx(&images, &labels, &opts).unwrap();
        assert_eq!(a.body, b.body);
        assert_eq!((a.header.train_count, a.header.valid_count), (240, 60));
        let plain = from_idx(
            &images,
            &labels,
            &ConvertOptions {
                shuffle_seed: None,
                ..opts
            },
        )
        .unwrap();
        assert_ne!(a.body, plain.body);

        let inputs = load_idx_inputs(&images, &labels, Some(300)).unwrap();
        let rows: Vec<(u32, Vec<u8>)> = inputs
            .features
            .chunks_exact(784)
            .zip(&inputs.labels)
            .map(|(r, &l)| (l, r.iter().map(|&f| (f * 255.0).round() as u8).collect()))
            .collect();
        let mut shuffled: Vec<(u32, Vec<u8>)> = body_labels(&a)
            .into_iter()
            .zip(a.body[1200..].chunks_exact(784).map(<[u8]>::to_vec))
            .collect();
        let mut original = rows.clone();
        assert_ne!(shuffled, original);
        shuffled.sort();
        original.sort();
        assert_eq!(shuffled, original);
    }

    #[test]
    fn loads_the_whole_real_test_set_as_query_inputs() {
        let (images, labels) = fashion_test_files();
        let inputs = load_idx_inputs(&images, &labels, None).unwrap();
        assert_eq!(inputs.len(), 10_000);
        assert_eq!(inputs.dims, vec![1, 28, 28]);
        assert_eq!(inputs.feature_len(), 784);
        assert_eq!(inputs.features.len(), 10_000 * 784);
        assert!(inputs.features.iter().all(|x| (0.0..=1.0).contains(x)));
        assert!(inputs.labels.iter().all(|&l| l < 10));
        let batches: Vec<_> = inputs.batches(3000).collect();
        assert_eq!(batches.len(), 4);
        assert_eq!(batches[3].0.len(), 1000 * 784);
        assert_eq!(batches[3].1.len(), 1000);
    }

    #[test]
    fn raw_and_gzip_idx_files_read_the_same() {
        let dir = Scratch::new();
        let img = idx(
            IDX_IMAGES_MAGIC,
            &[3, 2, 2],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        );
        let lab = idx(IDX_LABELS_MAGIC, &[3], &[0, 2, 1]);
        let raw = from_idx(&dir.write("i", &img), &dir.write("l", &lab), &no_split()).unwrap();
        let gz = from_idx(
            &dir.write("i.gz", &gzip(&img)),
            &dir.write("l.gz", &gzip(&lab)),
            &no_split(),
        )
        .unwrap();
        assert_eq!(raw.body, gz.body);
        assert_eq!(raw.header, gz.header);
        assert_eq!(raw.header.classes, 3);
        let mut expected = Vec::new();
        for l in [0u32, 2, 1] {
            expected.extend_from_slice(&l.to_le_bytes());
        }
        expected.extend(0..12u8);
        assert_eq!(raw.body, expected);
    }

    #[test]
    fn truncated_or_padded_idx_files_are_refused_by_name() {
        let dir = Scratch::new();
        let (images, labels) = fashion_test_files();
        let mut raw = gunzip(&labels);
        raw.pop();
        let cut = dir.write("cut-labels", &raw);
        let err = from_idx(&images, &cut, &no_split()).unwrap_err();
        assert!(
            matches!(
                &err,
                ConvertError::IdxLength {
                    expected: 10_008,
                    actual: 10_007,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("cut-labels") && text.contains("truncated"),
            "{text}"
        );

        raw.extend_from_slice(&[0, 0]);
        let long = dir.write("long-labels", &raw);
        let err = load_idx_inputs(&images, &long, Some(5)).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdxLength { actual: 10_009, .. }),
            "{err}"
        );

        // A gzip stream cut short is an I/O error naming the file.
        let compressed = std::fs::read(&labels).unwrap();
        let cut_gz = dir.write("cut.gz", &compressed[..compressed.len() / 2]);
        let err = from_idx(&images, &cut_gz, &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Io { .. }), "{err}");
        assert!(err.to_string().contains("cut.gz"), "{err}");

        // Shorter than the header itself.
        let tiny = dir.write("tiny", &[0, 0, 8]);
        let err = from_idx(&tiny, &labels, &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdxLength { actual: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_magic_is_refused_and_swapped_files_are_spotted() {
        let (images, labels) = fashion_test_files();
        let err = from_idx(&labels, &images, &no_split()).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::IdxMagic {
                    found: IDX_LABELS_MAGIC,
                    expected: IDX_IMAGES_MAGIC,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("t10k-labels-idx1-ubyte.gz") && text.contains("swapped"),
            "{text}"
        );

        let dir = Scratch::new();
        let floats = dir.write("floats", &idx(0x0000_0D03, &[1, 1, 1], &[0; 4]));
        let err = from_idx(&floats, &labels, &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdxMagic { found: 0x0d03, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("swapped"), "{err}");
    }

    #[test]
    fn count_mismatch_and_single_class_are_refused() {
        let dir = Scratch::new();
        let img = dir.write("i", &idx(IDX_IMAGES_MAGIC, &[3, 1, 2], &[0; 6]));
        let lab4 = dir.write("l4", &idx(IDX_LABELS_MAGIC, &[4], &[0, 1, 0, 1]));
        let err = from_idx(&img, &lab4, &no_split()).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::CountMismatch {
                    images: 3,
                    labels: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3 images") && err.to_string().contains("4 labels"));

        let one = dir.write("l1", &idx(IDX_LABELS_MAGIC, &[3], &[0, 0, 0]));
        let err = from_idx(&img, &one, &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::TooFewClasses { classes: 1, .. }),
            "{err}"
        );

        // A label of 57 among classes 0 and 1 would make 58 classes, 55 of them empty.
        let typo = dir.write("typo", &idx(IDX_LABELS_MAGIC, &[3], &[0, 1, 57]));
        let err = from_idx(&img, &typo, &no_split()).unwrap_err();
        assert!(
            matches!(&err, ConvertError::LabelGaps { max: 57, missing, .. } if missing.len() == 55),
            "{err}"
        );
        assert!(
            err.to_string().contains(
                "labels run to 57, but 55 of the classes 0 to 57 never occur (2, 3, 4, 5, 6, …)"
            ),
            "{err}"
        );

        let flat = dir.write("flat", &idx(IDX_IMAGES_MAGIC, &[3, 0, 2], &[]));
        let lab3 = dir.write("l3", &idx(IDX_LABELS_MAGIC, &[3], &[0, 1, 0]));
        let err = from_idx(&flat, &lab3, &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::IdxShape { .. }), "{err}");

        let err = from_idx(
            &img,
            &lab3,
            &ConvertOptions {
                limit: Some(0),
                ..no_split()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ConvertError::Empty { .. }), "{err}");
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let (images, labels) = fashion_test_files();
        for f in [0.5, -0.1, f32::NAN] {
            let opts = ConvertOptions {
                valid_fraction: f,
                ..no_split()
            };
            assert!(matches!(
                from_idx(&images, &labels, &opts),
                Err(ConvertError::ValidFraction(_))
            ));
            assert!(matches!(
                from_csv(&iris_csv(), "species", &opts),
                Err(ConvertError::ValidFraction(_))
            ));
        }
    }
}
