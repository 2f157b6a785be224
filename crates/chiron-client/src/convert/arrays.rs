//! Arrays held in memory: the owner's features and labels handed over as C-ordered element
//! bytes with a shape and an element type, as a Python client passes a NumPy array
//! (`np.ascontiguousarray(x).tobytes()`, `x.shape`, `x.dtype.str`) or a pandas DataFrame
//! (its values, and its column names).
//!
//! The features have one example per row of their first axis, laid out as the NumPy files
//! of [`super::numpy`] are:
//!
//! - `[n, columns]`: a table, standardised per column with the training split's statistics,
//!   as CSV tables are; its columns named (a DataFrame's column names) or known by position
//!   (`0`, `1`, ...);
//! - `[n, height, width]`: one-channel images;
//! - `[n, channels, height, width]` or `[n, height, width, channels]`: images, channels first
//!   when the second axis has 1 to 4 entries, else last when the fourth has.
//!
//! Elements are `uint8`, `float32` or `float64`, in either byte order ([`Dtype`]). Images of
//! `uint8` are stored as bytes read `/ 255`, as IDX pixels are; images of floats as `f32`
//! values, unchanged. Every float must be finite (as a `float32`).
//!
//! The labels ([`Labels`]) are integers or names, one per example. The classes are the
//! distinct values in sorted order, numerically when all are integers: the rule of the CSV
//! path, so that a table read with pandas trains the model its CSV file would.
//!
//! Errors name the arrays as `features` and `labels` where the file formats name a file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chiron_proto::dataset::DatasetKind;

use super::{
    ConvertError, ConvertOptions, Examples, Inputs, LabelledInputs, PlainDataset, Standardizer,
    Values, check_options, query_values,
};

/// What errors call the features array.
pub const FEATURES: &str = "features";
/// What errors call the labels.
pub const LABELS: &str = "labels";

fn features_path() -> PathBuf {
    PathBuf::from(FEATURES)
}

fn labels_path() -> PathBuf {
    PathBuf::from(LABELS)
}

fn unsupported(what: &'static str, reason: String) -> ConvertError {
    ConvertError::NpyUnsupported {
        path: PathBuf::from(what),
        what,
        reason,
    }
}

/// An array's element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `uint8`.
    U8,
    /// `float32`, in the byte order given.
    F32 {
        /// Most significant byte first.
        big_endian: bool,
    },
    /// `float64`, in the byte order given.
    F64 {
        /// Most significant byte first.
        big_endian: bool,
    },
}

impl Dtype {
    /// Reads an element type as NumPy's `dtype.str` writes it (`|u1`, `<f4`, `>f8`, ...; no
    /// byte-order mark, or `=`, means this machine's) or by its name (`uint8`, `float32`,
    /// `float64`).
    pub fn parse(text: &str) -> Result<Self, ConvertError> {
        let native_big = cfg!(target_endian = "big");
        let (big_endian, code) = match text.as_bytes().first() {
            Some(b'<') => (false, &text[1..]),
            Some(b'>') => (true, &text[1..]),
            Some(b'|' | b'=') => (native_big, &text[1..]),
            _ => (native_big, text),
        };
        match code {
            "u1" | "uint8" => Ok(Self::U8),
            "f4" | "float32" => Ok(Self::F32 { big_endian }),
            "f8" | "float64" => Ok(Self::F64 { big_endian }),
            _ => Err(unsupported(
                FEATURES,
                format!(
                    "elements of type {text:?}: give uint8 (image pixels), float32 or float64 \
                     (x.astype(np.float32))"
                ),
            )),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F32 { .. } => 4,
            Self::F64 { .. } => 8,
        }
    }

    /// One element's value; `b` holds [`Dtype::size`] bytes.
    fn value(self, b: &[u8]) -> f64 {
        let word = |big: bool| {
            let fold = |v: u64, &byte: &u8| (v << 8) | u64::from(byte);
            if big {
                b.iter().fold(0, fold)
            } else {
                b.iter().rev().fold(0, fold)
            }
        };
        match self {
            Self::U8 => f64::from(b[0]),
            Self::F32 { big_endian } => f64::from(f32::from_bits(word(big_endian) as u32)),
            Self::F64 { big_endian } => f64::from_bits(word(big_endian)),
        }
    }
}

/// A C-ordered array's element bytes, shape and element type, checked to agree.
#[derive(Clone, Copy, Debug)]
pub struct ArrayView<'a> {
    bytes: &'a [u8],
    shape: &'a [usize],
    dtype: Dtype,
}

impl<'a> ArrayView<'a> {
    /// The array whose `shape` elements of type `dtype` are `bytes`, in C order (the last
    /// axis varying fastest). Refuses bytes of another length than the shape describes.
    pub fn new(bytes: &'a [u8], shape: &'a [usize], dtype: Dtype) -> Result<Self, ConvertError> {
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |len, &d| len.checked_mul(d));
        if expected != Some(bytes.len()) {
            return Err(unsupported(
                FEATURES,
                format!(
                    "{} bytes are not an array of shape {shape:?} of {}-byte elements",
                    bytes.len(),
                    dtype.size()
                ),
            ));
        }
        Ok(Self {
            bytes,
            shape,
            dtype,
        })
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Examples: the length of the first axis.
    pub fn count(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }
}

/// The class of each example, as the owner's data names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    /// Integer labels (a NumPy integer array, a pandas column of integers).
    Integers(Vec<i64>),
    /// Named labels (strings); an empty name is refused.
    Names(Vec<String>),
}

impl Labels {
    /// Number of labels.
    pub fn len(&self) -> usize {
        match self {
            Self::Integers(v) => v.len(),
            Self::Names(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label `i` as its class name would spell it.
    fn text(&self, i: usize) -> String {
        match self {
            Self::Integers(v) => v[i].to_string(),
            Self::Names(v) => v[i].clone(),
        }
    }

    /// Refuses an empty name among the first `n`.
    fn check_names(&self, n: usize) -> Result<(), ConvertError> {
        if let Self::Names(names) = self
            && let Some(i) = names.iter().take(n).position(String::is_empty)
        {
            return Err(unsupported(
                LABELS,
                format!("example {i} has no label (an empty name, None or NaN)"),
            ));
        }
        Ok(())
    }
}

/// The class names of `labels`: their distinct values in sorted order, numerically when all
/// are integers (or all names spell integers), else by text. The CSV path's rule, so that
/// the same label column gives the same classes in either form.
pub fn class_names_of(labels: &Labels) -> Vec<String> {
    match labels {
        Labels::Integers(values) => values
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(i64::to_string)
            .collect(),
        Labels::Names(names) => super::csv::class_names_of(names),
    }
}

/// The class index of each of the first `n` labels among `class_names`; a label outside
/// them is refused.
fn class_indices(
    labels: &Labels,
    n: usize,
    class_names: &[String],
) -> Result<Vec<u32>, ConvertError> {
    let index: HashMap<&str, u32> = class_names.iter().map(String::as_str).zip(0u32..).collect();
    (0..n)
        .map(|i| {
            let text = labels.text(i);
            index.get(text.as_str()).copied().ok_or_else(|| {
                unsupported(
                    LABELS,
                    format!(
                        "example {i} has label {text:?}, which is not one of the model's \
                         classes {class_names:?}"
                    ),
                )
            })
        })
        .collect()
}

fn check_counts(features: &ArrayView<'_>, labels: &Labels) -> Result<(), ConvertError> {
    if features.count() != labels.len() {
        return Err(ConvertError::CountMismatch {
            images_path: features_path(),
            images: features.count() as u64,
            labels_path: labels_path(),
            labels: labels.len() as u64,
        });
    }
    Ok(())
}

/// How a features array's axes make examples (arrays from Python and `.npy` files alike).
pub(super) struct Layout {
    pub(super) kind: DatasetKind,
    /// Shape of one example, channels first for images.
    pub(super) dims: Vec<u32>,
    /// The channel axis is last in the array and must move first.
    pub(super) channels_last: bool,
}

impl Layout {
    /// The layout of an array of `shape`; `unsupported` makes the error for a shape that
    /// holds no examples, naming the array as its source does.
    pub(super) fn of(
        shape: &[usize],
        unsupported: impl Fn(&'static str, String) -> ConvertError,
    ) -> Result<Self, ConvertError> {
        let (kind, dims, channels_last) = match shape {
            [_, w] => (DatasetKind::Tabular, vec![*w], false),
            [_, h, w] => (DatasetKind::Image, vec![1, *h, *w], false),
            [_, a, h, w] => {
                let channels = |d: usize| (1..=4).contains(&d);
                if channels(*a) {
                    (DatasetKind::Image, vec![*a, *h, *w], false)
                } else if channels(*w) {
                    (DatasetKind::Image, vec![*w, *a, *h], true)
                } else {
                    return Err(unsupported(
                        FEATURES,
                        format!(
                            "shape {shape:?}: neither the second nor the last axis can be \
                             colour channels (1 to 4)"
                        ),
                    ));
                }
            }
            _ => {
                return Err(unsupported(
                    FEATURES,
                    format!(
                        "shape {shape:?} has {} axes; features need one example per row of \
                         their first axis: shape (n, columns) for a table, (n, height, width), \
                         (n, channels, height, width) or (n, height, width, channels) for images",
                        shape.len()
                    ),
                ));
            }
        };
        let dims = dims
            .iter()
            .map(|&d| {
                u32::try_from(d).map_err(|_| {
                    unsupported(
                        FEATURES,
                        format!("shape {shape:?}: axis of {d} is too long"),
                    )
                })
            })
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(Self {
            kind,
            dims,
            channels_last,
        })
    }

    pub(super) fn width(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// The first `n` examples' values: bytes for `uint8` images, else finite `f32` values; the
/// channel axis moved first.
fn decode(features: &ArrayView<'_>, layout: &Layout, n: usize) -> Result<Values, ConvertError> {
    let width = layout.width();
    if n == 0 || width == 0 {
        return Err(ConvertError::Empty {
            path: features_path(),
        });
    }
    let size = features.dtype.size();
    let bytes = &features.bytes[..n * width * size];
    if layout.kind == DatasetKind::Image && features.dtype == Dtype::U8 {
        return Ok(Values::U8(if layout.channels_last {
            to_channels_first(bytes, &layout.dims)
        } else {
            bytes.to_vec()
        }));
    }
    let mut values = Vec::with_capacity(n * width);
    for (i, b) in bytes.chunks_exact(size).enumerate() {
        let value = features.dtype.value(b);
        let x = value as f32;
        if !x.is_finite() {
            return Err(unsupported(
                FEATURES,
                format!(
                    "example {} holds {value}, not a finite float32 number",
                    i / width
                ),
            ));
        }
        values.push(x);
    }
    Ok(Values::F32(if layout.channels_last {
        to_channels_first(&values, &layout.dims)
    } else {
        values
    }))
}

/// `[n, h, w, c]` to `[n, c, h, w]`; `dims` is `[c, h, w]`.
fn to_channels_first<T: Copy>(values: &[T], dims: &[u32]) -> Vec<T> {
    let (c, plane) = (dims[0] as usize, dims[1] as usize * dims[2] as usize);
    let mut out = Vec::with_capacity(values.len());
    for example in values.chunks_exact((c * plane).max(1)) {
        for channel in 0..c {
            out.extend(example.iter().skip(channel).step_by(c.max(1)).copied());
        }
    }
    out
}

/// Checks a table's column names: one per column, each once.
fn check_columns(columns: &[String], width: usize) -> Result<(), ConvertError> {
    if columns.len() != width {
        return Err(unsupported(
            FEATURES,
            format!(
                "{} column names for a table of {width} columns",
                columns.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for column in columns {
        if !seen.insert(column.as_str()) {
            return Err(ConvertError::DuplicateColumn {
                path: features_path(),
                column: column.clone(),
                hint: String::new(),
            });
        }
    }
    Ok(())
}

/// The column names of `layout`'s examples, checked; `None` for images and for tables known
/// by position.
fn table_columns(
    layout: &Layout,
    columns: Option<&[String]>,
) -> Result<Option<Vec<String>>, ConvertError> {
    match (layout.kind, columns) {
        (_, None) => Ok(None),
        (DatasetKind::Tabular, Some(columns)) => {
            check_columns(columns, layout.width())?;
            Ok(Some(columns.to_vec()))
        }
        (_, Some(_)) => Err(unsupported(
            FEATURES,
            "column names go with a table (n, columns), not with images".into(),
        )),
    }
}

/// Converts a training set held in arrays: `features` as the [module](self) describes,
/// `columns` naming a table's columns (the standardizer keeps them; `None`: `0`, `1`, ...),
/// and one label per example. The first `opts.limit` examples are taken, shuffled and split
/// as `opts` says, and laid out as the body the owner encrypts, exactly as the file formats
/// do: [`PlainDataset::class_names`] follows [`class_names_of`], and a table comes with its
/// [`PlainDataset::standardizer`].
pub fn from_arrays(
    features: &ArrayView<'_>,
    columns: Option<&[String]>,
    labels: &Labels,
    opts: &ConvertOptions,
) -> Result<PlainDataset, ConvertError> {
    check_options(opts)?;
    check_counts(features, labels)?;
    let layout = Layout::of(features.shape(), unsupported)?;
    let columns = table_columns(&layout, columns)?;
    let n = opts
        .limit
        .map_or(features.count(), |l| l.min(features.count()));
    let values = decode(features, &layout, n)?;
    labels.check_names(n)?;
    let taken = match labels {
        Labels::Integers(v) => Labels::Integers(v[..n].to_vec()),
        Labels::Names(v) => Labels::Names(v[..n].to_vec()),
    };
    let class_names = class_names_of(&taken);
    if class_names.len() < 2 {
        return Err(ConvertError::TooFewClasses {
            path: labels_path(),
            classes: class_names.len(),
        });
    }
    let label_values = class_indices(&taken, n, &class_names)?;
    Examples {
        kind: layout.kind,
        dims: layout.dims,
        values,
        labels: label_values,
    }
    .into_dataset(Path::new(FEATURES), class_names, columns, opts)
}

/// Whether `columns` are the names of columns known by position: `0`, `1`, ...
fn positional(columns: &[String]) -> bool {
    columns
        .iter()
        .enumerate()
        .all(|(i, c)| c.parse::<usize>() == Ok(i))
}

/// A table's rows with their columns picked and ordered as `wanted` names them.
fn select_columns(
    values: Vec<f32>,
    given: &[String],
    wanted: &[String],
) -> Result<Vec<f32>, ConvertError> {
    if given == wanted {
        return Ok(values);
    }
    if let Some(extra) = given.iter().find(|c| !wanted.contains(c)) {
        return Err(ConvertError::UnexpectedColumn {
            path: features_path(),
            column: extra.clone(),
            expected: wanted.to_vec(),
        });
    }
    let picks = wanted
        .iter()
        .map(|name| {
            given
                .iter()
                .position(|g| g == name)
                .ok_or_else(|| ConvertError::MissingColumn {
                    path: features_path(),
                    column: name.clone(),
                    available: given.to_vec(),
                    hint: String::new(),
                })
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let width = given.len().max(1);
    Ok(values
        .chunks_exact(width)
        .flat_map(|row| picks.iter().map(move |&p| row[p]))
        .collect())
}

/// Query inputs without labels, encoded as the training conversion encoded its examples:
/// pixels `/ 255`, a table's columns standardised by `standardizer` (what the training
/// conversion kept, [`PlainDataset::standardizer`]). A table with named `columns` has them
/// picked by the standardizer's names, in its order, whatever their order here; a column it
/// lacks or does not know is refused. Check the shape against the model's with
/// [`check_query_dims`](super::check_query_dims) before querying.
pub fn inputs_from_array(
    features: &ArrayView<'_>,
    columns: Option<&[String]>,
    standardizer: Option<&Standardizer>,
) -> Result<Inputs, ConvertError> {
    let layout = Layout::of(features.shape(), unsupported)?;
    let columns = table_columns(&layout, columns)?;
    let mut dims = layout.dims.clone();
    let mut values = decode(features, &layout, features.count())?;
    if let (Some(given), Some(s), Values::F32(table)) = (&columns, standardizer, &mut values)
        && layout.kind == DatasetKind::Tabular
        && !positional(&s.columns)
    {
        *table = select_columns(std::mem::take(table), given, &s.columns)?;
        dims = vec![u32::try_from(s.columns.len()).unwrap_or(u32::MAX)];
    }
    let values = query_values(
        Path::new(FEATURES),
        layout.kind,
        &dims,
        values,
        standardizer,
    )?;
    Ok(Inputs {
        dims,
        features: values,
    })
}

/// Query inputs with their true labels, encoded as [`inputs_from_array`] encodes them; each
/// label must be one of `class_names` (what the training conversion kept,
/// [`PlainDataset::class_names`]), by name or, for integers, by the name they spell.
pub fn labelled_from_arrays(
    features: &ArrayView<'_>,
    columns: Option<&[String]>,
    labels: &Labels,
    class_names: &[String],
    standardizer: Option<&Standardizer>,
) -> Result<LabelledInputs, ConvertError> {
    check_counts(features, labels)?;
    labels.check_names(labels.len())?;
    let label_values = class_indices(labels, labels.len(), class_names)?;
    let inputs = inputs_from_array(features, columns, standardizer)?;
    Ok(LabelledInputs {
        dims: inputs.dims,
        features: inputs.features,
        labels: label_values,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Read;

    use chiron_proto::dataset::ElementEncoding;

    use super::super::test_support::{Scratch, body_f32, body_labels, no_split};
    use super::super::{check_query_dims, from_csv, from_idx};
    use super::*;

    fn f64_bytes(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const LE_F64: Dtype = Dtype::F64 { big_endian: false };

    #[test]
    fn element_types_read_as_numpy_names_them() {
        assert_eq!(Dtype::parse("|u1").unwrap(), Dtype::U8);
        assert_eq!(Dtype::parse("uint8").unwrap(), Dtype::U8);
        assert_eq!(
            Dtype::parse("<f4").unwrap(),
            Dtype::F32 { big_endian: false }
        );
        assert_eq!(
            Dtype::parse(">f8").unwrap(),
            Dtype::F64 { big_endian: true }
        );
        for bad in ["<i8", "O", "<U5", ""] {
            let err = Dtype::parse(bad).unwrap_err();
            assert!(err.to_string().contains("float32"), "{err}");
        }
        // Big-endian floats read right.
        let data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let shape = [1, 2];
        let view = ArrayView::new(&data, &shape, Dtype::F32 { big_endian: true }).unwrap();
        let inputs = inputs_from_array(&view, None, None).unwrap();
        assert_eq!(inputs.features, [1.5, -2.0]);
    }

    #[test]
    fn bytes_must_fill_the_shape() {
        let data = [0u8; 10];
        let err = ArrayView::new(&data, &[3, 4], Dtype::U8).unwrap_err();
        assert!(err.to_string().contains("shape [3, 4]"), "{err}");
        assert!(ArrayView::new(&data, &[usize::MAX, 4], Dtype::U8).is_err());
        assert!(ArrayView::new(&data, &[2, 5], Dtype::U8).is_ok());
    }

    /// A table as a DataFrame gives it: the same dataset as its CSV file, byte for byte.
    #[test]
    fn a_table_converts_as_its_csv_file_does() {
        let rows: [(f64, f64, &str); 6] = [
            (5.1, 3.5, "setosa"),
            (7.0, 3.2, "versicolor"),
            (6.3, 3.3, "virginica"),
            (4.9, 3.0, "setosa"),
            (6.4, 3.2, "versicolor"),
            (5.8, 2.7, "virginica"),
        ];
        let scratch = Scratch::new();
        let mut csv = String::from("sepal_length,sepal_width,species\n");
        for (a, b, c) in rows {
            csv += &format!("{a},{b},{c}\n");
        }
        let path = scratch.write("t.csv", csv.as_bytes());
        let opts = ConvertOptions {
            valid_fraction: 0.34,
            limit: None,
            shuffle_seed: Some(3),
        };
        let from_file = from_csv(&path, "species", &opts).unwrap();

        let values: Vec<f64> = rows.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
        let bytes = f64_bytes(&values);
        let shape = [6, 2];
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let columns = names(&["sepal_length", "sepal_width"]);
        let labels = Labels::Names(rows.iter().map(|r| r.2.to_owned()).collect());
        let from_arrays = from_arrays(&view, Some(&columns), &labels, &opts).unwrap();
        assert_eq!(from_arrays.header, from_file.header);
        assert_eq!(from_arrays.body, from_file.body);
        assert_eq!(from_arrays.class_names, from_file.class_names);
        assert_eq!(from_arrays.standardizer, from_file.standardizer);

        // Queries: columns picked by name, whatever their order; labels by class name.
        let swapped: Vec<f64> = rows.iter().flat_map(|(a, b, _)| [*b, *a]).collect();
        let bytes = f64_bytes(&swapped);
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let reordered = names(&["sepal_width", "sepal_length"]);
        let queried = labelled_from_arrays(
            &view,
            Some(&reordered),
            &labels,
            &from_arrays.class_names,
            from_arrays.standardizer.as_ref(),
        )
        .unwrap();
        let from_file_inputs = super::super::load_csv_inputs(
            &path,
            "species",
            &from_file.class_names,
            from_file.standardizer.as_ref(),
            None,
        )
        .unwrap();
        assert_eq!(queried, from_file_inputs);
    }

    #[test]
    fn classes_follow_the_csv_rule() {
        let ints = Labels::Integers(vec![10, 9, 2, 9]);
        assert_eq!(class_names_of(&ints), names(&["2", "9", "10"]));
        let texts = Labels::Names(names(&["10", "9", "2"]));
        assert_eq!(class_names_of(&texts), names(&["2", "9", "10"]));
        let mixed = Labels::Names(names(&["b", "a", "10"]));
        assert_eq!(class_names_of(&mixed), names(&["10", "a", "b"]));
        // Integer labels and their names give one class set, so queries may use either.
        let bytes = f64_bytes(&[1.0, 2.0, 3.0, 4.0]);
        let shape = [4, 1];
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let data = from_arrays(
            &view,
            None,
            &Labels::Integers(vec![7, 3, 7, 3]),
            &no_split(),
        )
        .unwrap();
        assert_eq!(data.class_names, names(&["3", "7"]));
        assert_eq!(body_labels(&data), [1, 0, 1, 0]);
        assert_eq!(data.standardizer.unwrap().columns, names(&["0"]));
        let by_name = Labels::Names(names(&["3", "7", "7", "3"]));
        let q = labelled_from_arrays(&view, None, &by_name, &data.class_names, None).unwrap();
        assert_eq!(q.labels, [0, 1, 1, 0]);
    }

    /// Fashion-MNIST images as a NumPy array read from the IDX files: the IDX path's dataset.
    #[test]
    fn images_convert_as_their_idx_files_do() {
        let (images, labels) = super::super::test_support::fashion_test_files();
        let gunzip = |path: &Path| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let n = 200;
        let pixels = gunzip(&images)[16..16 + n * 784].to_vec();
        let label_bytes = gunzip(&labels)[8..8 + n].to_vec();
        let opts = ConvertOptions {
            valid_fraction: 0.1,
            limit: Some(n),
            shuffle_seed: Some(0),
        };
        let from_file = from_idx(&images, &labels, &opts).unwrap();
        let shape = [n, 28, 28];
        let view = ArrayView::new(&pixels, &shape, Dtype::U8).unwrap();
        let ints = Labels::Integers(label_bytes.iter().map(|&l| i64::from(l)).collect());
        let from_arrays = from_arrays(&view, None, &ints, &opts).unwrap();
        assert_eq!(from_arrays.header, from_file.header);
        assert_eq!(from_arrays.header.encoding, ElementEncoding::U8Unit);
        assert_eq!(from_arrays.body, from_file.body);
        assert_eq!(from_arrays.class_names, from_file.class_names);
        assert!(from_arrays.standardizer.is_none());

        // Queries: pixels / 255, as the IDX path reads them.
        let idx_inputs = super::super::load_idx_inputs(&images, &labels, Some(n)).unwrap();
        let queried =
            labelled_from_arrays(&view, None, &ints, &from_arrays.class_names, None).unwrap();
        assert_eq!(queried, idx_inputs);
        check_query_dims(&queried.dims, &from_arrays.header).unwrap();
        // The same images flattened to a table are refused before any query.
        let flat = [n, 784];
        let view = ArrayView::new(&pixels, &flat, Dtype::U8).unwrap();
        let inputs = inputs_from_array(&view, None, None).unwrap();
        let err = check_query_dims(&inputs.dims, &from_arrays.header).unwrap_err();
        assert!(err.to_string().contains("no query was sent"), "{err}");
    }

    #[test]
    fn channels_last_images_move_their_channels_first() {
        // Two 5×2 RGB images, channels last.
        let pixels: Vec<u8> = (0..60).collect();
        let shape = [2, 5, 2, 3];
        let view = ArrayView::new(&pixels, &shape, Dtype::U8).unwrap();
        let data = from_arrays(&view, None, &Labels::Integers(vec![0, 1]), &no_split()).unwrap();
        assert_eq!(data.header.dims, [3, 5, 2]);
        let body = &data.body[8..];
        for (e, c, p) in [(0, 0, 0), (0, 1, 0), (0, 2, 9), (1, 1, 4)] {
            // Example e, channel c, pixel p (row-major over 5×2).
            assert_eq!(body[e * 30 + c * 10 + p], (e * 30 + p * 3 + c) as u8);
        }
        // Float images keep their values.
        let floats: Vec<u8> = (0..60)
            .flat_map(|v| (f64::from(v) / 10.0).to_le_bytes())
            .collect();
        let view = ArrayView::new(&floats, &shape, LE_F64).unwrap();
        let data = from_arrays(&view, None, &Labels::Integers(vec![0, 1]), &no_split()).unwrap();
        assert_eq!(data.header.encoding, ElementEncoding::F32);
        // Example 0, channel 0, pixel 1: element 3.
        assert!((body_f32(&data)[1] - 0.3).abs() < 1e-6);
    }

    #[test]
    fn unusable_inputs_are_refused() {
        let bytes = f64_bytes(&[1.0, f64::NAN, 3.0, 4.0]);
        let shape = [2, 2];
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let labels = Labels::Integers(vec![0, 1]);
        let err = from_arrays(&view, None, &labels, &no_split()).unwrap_err();
        assert!(err.to_string().contains("not a finite float32"), "{err}");

        let bytes = f64_bytes(&[1.0, 2.0, 3.0, 4.0, 1e300, 0.0]);
        let shape = [3, 2];
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let err = from_arrays(&view, None, &Labels::Integers(vec![0, 1, 0]), &no_split());
        assert!(err.is_err(), "beyond float32");

        let bytes = f64_bytes(&[1.0, 2.0, 3.0, 4.0]);
        let shape = [2, 2];
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let err = from_arrays(&view, None, &Labels::Integers(vec![0]), &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::CountMismatch { .. }), "{err}");
        let err = from_arrays(&view, None, &Labels::Integers(vec![4, 4]), &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::TooFewClasses { .. }), "{err}");
        let empty = Labels::Names(names(&["a", ""]));
        let err = from_arrays(&view, None, &empty, &no_split()).unwrap_err();
        assert!(err.to_string().contains("example 1 has no label"), "{err}");
        let twice = names(&["x", "x"]);
        let err = from_arrays(&view, Some(&twice), &labels, &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::DuplicateColumn { .. }), "{err}");
        let one = names(&["x"]);
        assert!(from_arrays(&view, Some(&one), &labels, &no_split()).is_err());
        let opts = ConvertOptions {
            valid_fraction: 0.7,
            ..no_split()
        };
        let err = from_arrays(&view, None, &labels, &opts).unwrap_err();
        assert!(matches!(err, ConvertError::ValidFraction(_)), "{err}");

        let flat = [4];
        let view = ArrayView::new(&bytes, &flat, LE_F64).unwrap();
        let err = inputs_from_array(&view, None, None).unwrap_err();
        assert!(err.to_string().contains("1 axes"), "{err}");
        let none = [0, 2];
        let view = ArrayView::new(&[], &none, LE_F64).unwrap();
        let err = inputs_from_array(&view, None, None).unwrap_err();
        assert!(matches!(err, ConvertError::Empty { .. }), "{err}");
    }

    #[test]
    fn queries_must_match_the_training_table() {
        let bytes = f64_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let shape = [3, 2];
        let view = ArrayView::new(&bytes, &shape, LE_F64).unwrap();
        let columns = names(&["a", "b"]);
        let data = from_arrays(
            &view,
            Some(&columns),
            &Labels::Names(names(&["x", "y", "x"])),
            &no_split(),
        )
        .unwrap();
        let s = data.standardizer.as_ref();
        // A column the model does not know, or one it lacks.
        let other = names(&["a", "c"]);
        let err = inputs_from_array(&view, Some(&other), s).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnexpectedColumn { .. }),
            "{err}"
        );
        let wide_shape = [2, 3];
        let wide = ArrayView::new(&bytes, &wide_shape, LE_F64).unwrap();
        let err = inputs_from_array(&wide, None, s).unwrap_err();
        assert!(matches!(err, ConvertError::WidthMismatch { .. }), "{err}");
        let narrow_shape = [6, 1];
        let narrow = ArrayView::new(&bytes, &narrow_shape, LE_F64).unwrap();
        let err = inputs_from_array(&narrow, Some(&names(&["a"])), s).unwrap_err();
        assert!(matches!(err, ConvertError::MissingColumn { .. }), "{err}");
        // A label the model was not trained on.
        let err = labelled_from_arrays(
            &view,
            None,
            &Labels::Names(names(&["x", "z", "x"])),
            &data.class_names,
            s,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"z\""), "{err}");
        // Standardised as the training split was.
        let inputs = inputs_from_array(&view, Some(&columns), s).unwrap();
        assert_eq!(inputs.features, body_f32(&data));
    }
}
