//! CIFAR-10 and CIFAR-100 in their binary version (`data_batch_1.bin`, ..., `test_batch.bin`;
//! `train.bin`, `test.bin`).
//!
//! A file is a run of fixed-size records with no header: a CIFAR-10 record is one label byte
//! then 3072 pixel bytes, a CIFAR-100 record two label bytes (the coarse class of 20, then the
//! fine class of 100) then 3072 pixel bytes. The pixels are a 32×32 colour image,
//! channel-planar (the red plane, the green, the blue), which is already the `[3, 32, 32]`
//! layout of an example. Several batch files are read one after the other as one dataset.
//! With no magic number to check, a file is checked by its length (a whole number of records)
//! and its labels (within the variant's classes). Files may be gzip-compressed.

use std::path::{Path, PathBuf};

use chiron_proto::dataset::DatasetKind;

use super::{
    ConvertError, ConvertOptions, Examples, Format, Inputs, LabelledInputs, MAX_INPUT_LEN,
    PlainDataset, Standardizer, Values, check_options, check_query_labels, numeric_class_names,
    numeric_classes, read_maybe_gzip, scaled_pixels,
};

/// Pixel bytes of one record: 3 channels of 32×32.
const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR variant the files are, and for CIFAR-100 which of its labels to learn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CifarLabels {
    /// CIFAR-10: 10 classes, one label byte per record.
    #[default]
    Cifar10,
    /// CIFAR-100's 100 fine classes (its second label byte).
    Cifar100Fine,
    /// CIFAR-100's 20 coarse classes, the superclasses (its first label byte).
    Cifar100Coarse,
}

impl CifarLabels {
    /// Label bytes before each record's pixels.
    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100Fine | Self::Cifar100Coarse => 2,
        }
    }

    /// Which of the label bytes is the label.
    fn label_at(self) -> usize {
        match self {
            Self::Cifar10 | Self::Cifar100Coarse => 0,
            Self::Cifar100Fine => 1,
        }
    }

    fn classes(self) -> u32 {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100Fine => 100,
            Self::Cifar100Coarse => 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Cifar10 => "CIFAR-10",
            Self::Cifar100Fine => "CIFAR-100 fine",
            Self::Cifar100Coarse => "CIFAR-100 coarse",
        }
    }
}

/// CIFAR binary batch files, read in the order given as one dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarFiles {
    /// The batch files.
    pub files: Vec<PathBuf>,
    /// The variant, and the labels to learn.
    pub labels: CifarLabels,
}

/// The records read: labels and pixels, in file order.
struct Records {
    labels: Vec<u32>,
    pixels: Vec<u8>,
}

impl CifarFiles {
    /// The path errors name when no single file is at fault.
    fn path(&self) -> PathBuf {
        self.files
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("(no CIFAR files given)"))
    }

    /// Reads the first `limit` records of the files.
    fn read(&self, limit: Option<usize>) -> Result<Records, ConvertError> {
        let variant = self.labels;
        let record_len = variant.label_bytes() + PIXELS;
        let mut out = Records {
            labels: Vec::new(),
            pixels: Vec::new(),
        };
        for path in &self.files {
            if limit.is_some_and(|l| out.labels.len() >= l) {
                break;
            }
            let bytes = read_maybe_gzip(path)?;
            check_length(path, bytes.len(), variant)?;
            for (record, chunk) in (0u64..).zip(bytes.chunks_exact(record_len)) {
                if limit.is_some_and(|l| out.labels.len() >= l) {
                    break;
                }
                let label = chunk[variant.label_at()];
                if u32::from(label) >= variant.classes() {
                    return Err(ConvertError::CifarLabel {
                        path: path.clone(),
                        record,
                        label,
                        variant: variant.name(),
                        classes: variant.classes(),
                    });
                }
                out.labels.push(u32::from(label));
                out.pixels
                    .extend_from_slice(&chunk[variant.label_bytes()..]);
            }
            if out.pixels.len() as u64 > MAX_INPUT_LEN {
                return Err(ConvertError::TooLarge { path: path.clone() });
            }
        }
        if out.labels.is_empty() {
            return Err(ConvertError::Empty { path: self.path() });
        }
        Ok(out)
    }
}

/// Checks that a file is a whole number of records, saying so when it would be one of the
/// other variant.
fn check_length(path: &Path, len: usize, variant: CifarLabels) -> Result<(), ConvertError> {
    let ten = variant == CifarLabels::Cifar10;
    let record_len = (variant.label_bytes() + PIXELS) as u64;
    let other_len = if ten { record_len + 1 } else { record_len - 1 };
    let len = len as u64;
    if len.is_multiple_of(record_len) {
        return Ok(());
    }
    Err(ConvertError::CifarLength {
        path: path.to_path_buf(),
        len,
        record_len,
        records: len / record_len,
        variant: if ten { "CIFAR-10" } else { "CIFAR-100" },
        hint: match (len.is_multiple_of(other_len), ten) {
            (true, true) => "; the length fits CIFAR-100 records: choose CIFAR-100",
            (true, false) => "; the length fits CIFAR-10 records: choose CIFAR-10",
            (false, _) => "",
        },
    })
}

impl Format for CifarFiles {
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        check_options(opts)?;
        let records = self.read(opts.limit)?;
        let path = self.path();
        let classes = numeric_classes(&path, &records.labels)?;
        Examples {
            kind: DatasetKind::Image,
            dims: vec![3, 32, 32],
            values: Values::U8(records.pixels),
            labels: records.labels,
        }
        .into_dataset(&path, numeric_class_names(classes), None, opts)
    }

    fn load_labelled(
        &self,
        class_names: &[String],
        _standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        let records = self.read(limit)?;
        check_query_labels(&self.path(), &records.labels, class_names)?;
        Ok(LabelledInputs {
            dims: vec![3, 32, 32],
            features: scaled_pixels(&records.pixels),
            labels: records.labels,
        })
    }

    fn load_unlabelled(
        &self,
        _standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        let records = self.read(limit)?;
        Ok(Inputs {
            dims: vec![3, 32, 32],
            features: scaled_pixels(&records.pixels),
        })
    }
}
