//! NumPy arrays: `.npy` files and `.npz` archives of them.
//!
//! A `.npy` file is the magic `\x93NUMPY`, a version, a header (a Python dict literal giving
//! the element type `descr`, `fortran_order` and `shape`), then the elements in C order. A
//! `.npz` file is a zip archive (stored or deflated) of `.npy` files, one per array name, as
//! `np.savez` and `np.savez_compressed` write them.
//!
//! The features array has one example per row of its first axis:
//!
//! - `(n, columns)`: a table, any numeric type, standardised per column as CSV tables are;
//! - `(n, height, width)`: one-channel images;
//! - `(n, channels, height, width)` or `(n, height, width, channels)`: images, channels first
//!   when the second axis has 1 to 4 entries, else last when the fourth has.
//!
//! Images of `uint8` are stored as bytes read `/ 255`, as IDX pixels are; images of any other
//! numeric type as `f32` values, unchanged. The labels array holds one integer (any integer
//! type, or bool) per example, shape `(n,)` or `(n, 1)`. Both byte orders are read; Fortran
//! order, object, string, complex, date and structured types are refused.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use chiron_proto::dataset::DatasetKind;
use zip::ZipArchive;

use super::arrays::Layout;
use super::{
    ConvertError, ConvertOptions, Examples, Format, Inputs, LabelledInputs, MAX_INPUT_LEN,
    PlainDataset, Standardizer, Values, check_options, check_query_labels, numeric_class_names,
    numeric_classes, query_values, read_capped, read_maybe_gzip,
};

/// The first bytes of every `.npy` file.
const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Largest `.npy` header accepted; NumPy's own limit for reading untrusted files.
const MAX_HEADER_LEN: usize = 10_000;

/// Array names tried for the features when none is given.
const FEATURE_KEYS: [&str; 2] = ["x", "x_train"];
/// Array names tried for the labels when none is given.
const LABEL_KEYS: [&str; 2] = ["y", "y_train"];

/// A features `.npy` file and, for training and evaluation, a labels `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyFiles {
    /// The features array.
    pub features: PathBuf,
    /// The labels array; prediction needs none.
    pub labels: Option<PathBuf>,
}

/// A `.npz` archive holding a features array and, for training and evaluation, a labels array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpzFile {
    /// The archive.
    pub path: PathBuf,
    /// The features array's name; `None` tries `x`, then `x_train`.
    pub features_key: Option<String>,
    /// The labels array's name; `None` tries `y`, then `y_train`.
    pub labels_key: Option<String>,
}

impl Format for NpyFiles {
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        check_options(opts)?;
        let features = read_npy(&self.features, FEATURES)?;
        let labels = read_npy(self.labels_path()?, LABELS)?;
        training(features, labels, opts)
    }

    fn load_labelled(
        &self,
        class_names: &[String],
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        let features = read_npy(&self.features, FEATURES)?;
        let labels = read_npy(self.labels_path()?, LABELS)?;
        labelled(features, labels, class_names, standardizer, limit)
    }

    fn load_unlabelled(
        &self,
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        unlabelled(read_npy(&self.features, FEATURES)?, standardizer, limit)
    }
}

impl NpyFiles {
    fn labels_path(&self) -> Result<&Path, ConvertError> {
        self.labels
            .as_deref()
            .ok_or_else(|| ConvertError::NoLabels {
                path: self.features.clone(),
                what: "give the .npy file of labels that goes with these features",
            })
    }
}

impl Format for NpzFile {
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        check_options(opts)?;
        let mut archive = Npz::open(&self.path)?;
        let features = archive.array(self.features_key.as_deref(), &FEATURE_KEYS, FEATURES)?;
        let labels = archive.array(self.labels_key.as_deref(), &LABEL_KEYS, LABELS)?;
        training(features, labels, opts)
    }

    fn load_labelled(
        &self,
        class_names: &[String],
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        let mut archive = Npz::open(&self.path)?;
        let features = archive.array(self.features_key.as_deref(), &FEATURE_KEYS, FEATURES)?;
        let labels = archive.array(self.labels_key.as_deref(), &LABEL_KEYS, LABELS)?;
        labelled(features, labels, class_names, standardizer, limit)
    }

    fn load_unlabelled(
        &self,
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        let mut archive = Npz::open(&self.path)?;
        let features = archive.array(self.features_key.as_deref(), &FEATURE_KEYS, FEATURES)?;
        unlabelled(features, standardizer, limit)
    }
}

const FEATURES: &str = "features";
const LABELS: &str = "labels";

fn training(
    features: Array,
    labels: Array,
    opts: &ConvertOptions,
) -> Result<PlainDataset, ConvertError> {
    let decoded = decode_features(&features, opts.limit)?;
    check_counts(&features, &labels)?;
    let label_values = decode_labels(&labels, decoded.n)?;
    let classes = numeric_classes(&labels.path, &label_values)?;
    Examples {
        kind: decoded.kind,
        dims: decoded.dims,
        values: decoded.values,
        labels: label_values,
    }
    .into_dataset(&features.path, numeric_class_names(classes), None, opts)
}

fn labelled(
    features: Array,
    labels: Array,
    class_names: &[String],
    standardizer: Option<&Standardizer>,
    limit: Option<usize>,
) -> Result<LabelledInputs, ConvertError> {
    let decoded = decode_features(&features, limit)?;
    check_counts(&features, &labels)?;
    let label_values = decode_labels(&labels, decoded.n)?;
    check_query_labels(&labels.path, &label_values, class_names)?;
    let values = query_values(
        &features.path,
        decoded.kind,
        &decoded.dims,
        decoded.values,
        standardizer,
    )?;
    Ok(LabelledInputs {
        dims: decoded.dims,
        features: values,
        labels: label_values,
    })
}

fn unlabelled(
    features: Array,
    standardizer: Option<&Standardizer>,
    limit: Option<usize>,
) -> Result<Inputs, ConvertError> {
    let decoded = decode_features(&features, limit)?;
    let values = query_values(
        &features.path,
        decoded.kind,
        &decoded.dims,
        decoded.values,
        standardizer,
    )?;
    Ok(Inputs {
        dims: decoded.dims,
        features: values,
    })
}

fn check_counts(features: &Array, labels: &Array) -> Result<(), ConvertError> {
    let (n, m) = (features.count(), labels.count());
    if n != m {
        return Err(ConvertError::CountMismatch {
            images_path: features.path.clone(),
            images: n as u64,
            labels_path: labels.path.clone(),
            labels: m as u64,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// .npz

/// An open `.npz` archive.
struct Npz {
    path: PathBuf,
    zip: ZipArchive<File>,
}

impl Npz {
    fn open(path: &Path) -> Result<Self, ConvertError> {
        let file = File::open(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let zip = ZipArchive::new(file).map_err(|source| ConvertError::Zip {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            zip,
        })
    }

    /// The array names in the archive.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .zip
            .file_names()
            .filter_map(Result::ok)
            .map(|n| n.strip_suffix(".npy").unwrap_or(&n).to_owned())
            .collect();
        names.sort();
        names
    }

    /// Reads the array named `key`, or the first of `defaults` the archive holds.
    fn array(
        &mut self,
        key: Option<&str>,
        defaults: &[&str],
        what: &'static str,
    ) -> Result<Array, ConvertError> {
        let names = self.names();
        let wanted: Vec<&str> = match key {
            Some(k) => vec![k.strip_suffix(".npy").unwrap_or(k)],
            None => defaults.to_vec(),
        };
        let Some(found) = wanted.iter().find(|k| names.iter().any(|n| n == *k)) else {
            return Err(ConvertError::NpzKey {
                path: self.path.clone(),
                key: wanted.join(" or "),
                available: names,
                hint: match (key, what) {
                    (None, FEATURES) => "; name the features array",
                    (None, _) => "; name the labels array",
                    (Some(_), _) => "",
                },
            });
        };
        let member = format!("{found}.npy");
        let mut display = OsString::from(self.path.as_os_str());
        display.push(format!(":{member}"));
        let member_path = PathBuf::from(display);
        let zip_err = |source| ConvertError::Zip {
            path: member_path.clone(),
            source,
        };
        let entry = self.zip.by_name(&member).map_err(zip_err)?;
        if entry.size() > MAX_INPUT_LEN {
            return Err(ConvertError::TooLarge { path: member_path });
        }
        let bytes = read_capped(&member_path, entry)?;
        parse_npy(member_path, bytes, what)
    }
}

// ---------------------------------------------------------------------------------------------
// .npy

/// Element types read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Unsigned,
    Signed,
    Float,
}

/// A parsed `.npy` array.
struct Array {
    /// The file, named in errors.
    path: PathBuf,
    kind: Kind,
    /// Bytes per element.
    size: usize,
    big_endian: bool,
    shape: Vec<usize>,
    /// The file's bytes; the elements start at `data_start`.
    bytes: Vec<u8>,
    data_start: usize,
}

impl Array {
    /// Examples: the first axis.
    fn count(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
    }

    /// The elements' raw bytes, one slice per element.
    fn elements(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.data().chunks_exact(self.size)
    }

    /// An element as a number (exact for every type but 64-bit integers beyond 2⁵³).
    fn float(&self, b: &[u8]) -> f64 {
        match self.kind {
            Kind::Float if self.size == 4 => f64::from(f32::from_bits(self.uint(b) as u32)),
            Kind::Float => f64::from_bits(self.uint(b)),
            Kind::Signed => self.int(b) as f64,
            Kind::Bool | Kind::Unsigned => self.uint(b) as f64,
        }
    }

    /// An integer element, or `None` for floats.
    fn integer(&self, b: &[u8]) -> Option<i128> {
        match self.kind {
            Kind::Float => None,
            Kind::Signed => Some(i128::from(self.int(b))),
            Kind::Bool | Kind::Unsigned => Some(i128::from(self.uint(b))),
        }
    }

    fn uint(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        if self.big_endian {
            for &byte in b {
                v = (v << 8) | u64::from(byte);
            }
        } else {
            for &byte in b.iter().rev() {
                v = (v << 8) | u64::from(byte);
            }
        }
        v
    }

    fn int(&self, b: &[u8]) -> i64 {
        let bits = 8 * b.len() as u32;
        let v = self.uint(b);
        // Sign-extend from the element's width.
        if bits < 64 {
            ((v << (64 - bits)) as i64) >> (64 - bits)
        } else {
            v as i64
        }
    }

    fn unsupported(&self, what: &'static str, reason: String) -> ConvertError {
        ConvertError::NpyUnsupported {
            path: self.path.clone(),
            what,
            reason,
        }
    }
}

/// Reads and parses a `.npy` file (gzip-compressed or raw).
fn read_npy(path: &Path, what: &'static str) -> Result<Array, ConvertError> {
    parse_npy(path.to_path_buf(), read_maybe_gzip(path)?, what)
}

/// Parses a `.npy` file's bytes; `what` (`"features"` or `"labels"`) is the array's role.
fn parse_npy(path: PathBuf, bytes: Vec<u8>, what: &'static str) -> Result<Array, ConvertError> {
    let bad = |reason: String| ConvertError::Npy {
        path: path.clone(),
        reason,
    };
    if !bytes.starts_with(NPY_MAGIC) {
        return Err(bad(
            "it does not start with the .npy magic bytes (save arrays with np.save)".into(),
        ));
    }
    let major = bytes.get(6).copied().unwrap_or(0);
    let (len_at, len_size) = match major {
        1 => (8, 2),
        2 | 3 => (8, 4),
        other => return Err(bad(format!("format version {other} is not one of 1, 2, 3"))),
    };
    let header_start = len_at + len_size;
    let Some(len_bytes) = bytes.get(len_at..header_start) else {
        return Err(bad("it ends inside its header".into()));
    };
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |v, &b| (v << 8) | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(bad(format!(
            "its header claims {header_len} bytes, more than {MAX_HEADER_LEN}"
        )));
    }
    let data_start = header_start + header_len;
    let Some(header) = bytes.get(header_start..data_start) else {
        return Err(bad("it ends inside its header".into()));
    };
    let header = std::str::from_utf8(header).map_err(|_| bad("its header is not text".into()))?;
    let dict = parse_dict(header).map_err(|e| bad(format!("its header {header:?}: {e}")))?;
    let descr = match dict.get("descr") {
        Some(Value::Str(d)) => d.clone(),
        Some(_) => {
            return Err(ConvertError::NpyUnsupported {
                path,
                what,
                reason: "structured element types (records with fields) are not supported: \
                         save each field as its own array"
                    .into(),
            });
        }
        None => return Err(bad("its header has no 'descr'".into())),
    };
    if matches!(dict.get("fortran_order"), Some(Value::Bool(true))) {
        return Err(ConvertError::NpyUnsupported {
            path,
            what,
            reason: "Fortran (column-major) order is not supported: save \
                     np.ascontiguousarray(a) instead"
                .into(),
        });
    }
    let shape = match dict.get("shape") {
        Some(Value::Tuple(s)) => s.clone(),
        _ => return Err(bad("its header has no 'shape' tuple".into())),
    };
    let (kind, size, big_endian) =
        parse_descr(&descr).map_err(|reason| ConvertError::NpyUnsupported {
            path: path.clone(),
            what,
            reason,
        })?;
    let expected = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    let actual = bytes.len() - data_start;
    if actual != expected {
        return Err(bad(format!(
            "it holds {actual} bytes of data, but shape {shape:?} of {descr:?} needs {expected} \
             (truncated or corrupt)"
        )));
    }
    Ok(Array {
        path,
        kind,
        size,
        big_endian,
        shape,
        bytes,
        data_start,
    })
}

/// Element kind, size and byte order of a `descr` such as `<f4`, `|u1`, `>i8`.
fn parse_descr(descr: &str) -> Result<(Kind, usize, bool), String> {
    let (order, rest) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('|', descr),
    };
    let big_endian = match order {
        '>' => true,
        '=' => cfg!(target_endian = "big"),
        _ => false,
    };
    let mut chars = rest.chars();
    let code = chars.next().unwrap_or(' ');
    let size: Option<usize> = chars.as_str().parse().ok();
    let kind = match (code, size) {
        ('b', Some(1)) => Kind::Bool,
        ('u', Some(1 | 2 | 4 | 8)) => Kind::Unsigned,
        ('i', Some(1 | 2 | 4 | 8)) => Kind::Signed,
        ('f', Some(4 | 8)) => Kind::Float,
        ('f', _) => {
            return Err(format!(
                "element type {descr:?} is not supported: save it as float32 \
                 (a.astype(np.float32))"
            ));
        }
        ('O', _) => {
            return Err(format!(
                "element type {descr:?} holds Python objects, which cannot be read safely: \
                 save a numeric array (a.astype(np.float32), or np.int64 for labels)"
            ));
        }
        ('U' | 'S' | 'a', _) => {
            return Err(format!(
                "element type {descr:?} holds strings: save numbers (map class names to \
                 0, 1, ... and save the integers)"
            ));
        }
        _ => {
            return Err(format!(
                "element type {descr:?} is not supported: save integers or floats"
            ));
        }
    };
    Ok((kind, size.unwrap_or(1), big_endian))
}

/// A value of a `.npy` header dict.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    /// A list (a structured type's fields) or anything else not needed.
    Other,
}

/// Parses the header's Python dict literal, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (150, 4), }`.
fn parse_dict(text: &str) -> Result<std::collections::HashMap<String, Value>, String> {
    let mut p = Parser {
        s: text.trim().as_bytes(),
        at: 0,
    };
    let mut out = std::collections::HashMap::new();
    p.expect(b'{')?;
    loop {
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        let value = p.value()?;
        out.insert(key, value);
        p.skip_space();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", char::from(c), self.at))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.s.get(self.at) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at byte {}", self.at)),
        };
        let start = self.at + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or("a string is not closed")?;
        self.at = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec()).map_err(|e| e.to_string())
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        match self.s.get(self.at) {
            Some(b'\'' | b'"') => self.string().map(Value::Str),
            Some(b'(') => {
                self.at += 1;
                let mut dims = Vec::new();
                loop {
                    if self.eat(b')') {
                        break;
                    }
                    self.skip_space();
                    let start = self.at;
                    while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                        self.at += 1;
                    }
                    // Python 2 wrote long integers with an `L` suffix.
                    let digits = &self.s[start..self.at];
                    if self.s.get(self.at) == Some(&b'L') {
                        self.at += 1;
                    }
                    let dim = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<usize>().ok())
                        .ok_or_else(|| format!("expected a dimension at byte {start}"))?;
                    dims.push(dim);
                    if !self.eat(b',') {
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(Value::Tuple(dims))
            }
            Some(b'[') => {
                let mut depth = 0usize;
                while let Some(&c) = self.s.get(self.at) {
                    self.at += 1;
                    match c {
                        b'[' => depth += 1,
                        b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(Value::Other);
                            }
                        }
                        _ => {}
                    }
                }
                Err("a list is not closed".into())
            }
            _ => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    self.at += 1;
                }
                match &self.s[start..self.at] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"" => Err(format!("expected a value at byte {start}")),
                    _ => Ok(Value::Other),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arrays to examples

/// Features decoded from an array.
struct Decoded {
    kind: DatasetKind,
    dims: Vec<u32>,
    values: Values,
    /// Examples taken.
    n: usize,
}

fn decode_features(array: &Array, limit: Option<usize>) -> Result<Decoded, ConvertError> {
    let Layout {
        kind,
        dims,
        channels_last,
    } = Layout::of(&array.shape, |what, reason| array.unsupported(what, reason))?;
    let width: usize = dims.iter().map(|&d| d as usize).product();
    let n = limit.map_or(array.count(), |l| l.min(array.count()));
    if n == 0 || width == 0 {
        return Err(ConvertError::Empty {
            path: array.path.clone(),
        });
    }
    let elements = array.elements().take(n * width);
    let values = if kind == DatasetKind::Image && array.kind == Kind::Unsigned && array.size == 1 {
        let bytes: Vec<u8> = elements.map(|b| b[0]).collect();
        Values::U8(if channels_last {
            to_channels_first(&bytes, &dims)
        } else {
            bytes
        })
    } else {
        let mut values = Vec::with_capacity(n * width);
        for (i, b) in elements.enumerate() {
            let x = array.float(b) as f32;
            if !x.is_finite() {
                return Err(array.unsupported(
                    FEATURES,
                    format!(
                        "example {} holds {}, not a finite float32 number",
                        i / width,
                        array.float(b)
                    ),
                ));
            }
            values.push(x);
        }
        Values::F32(if channels_last {
            to_channels_first(&values, &dims)
        } else {
            values
        })
    };
    Ok(Decoded {
        kind,
        dims,
        values,
        n,
    })
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

/// The first `n` labels, checked to be class indices.
fn decode_labels(array: &Array, n: usize) -> Result<Vec<u32>, ConvertError> {
    match array.shape.as_slice() {
        [_] | [_, 1] => {}
        shape => {
            return Err(array.unsupported(
                LABELS,
                format!("shape {shape:?}: labels need one per example, shape (n,) or (n, 1)"),
            ));
        }
    }
    let mut labels = Vec::with_capacity(n);
    for (i, b) in array.elements().take(n).enumerate() {
        let Some(value) = array.integer(b) else {
            return Err(array.unsupported(
                LABELS,
                "labels are floats; class indices must be integers: save \
                 y.astype(np.int64)"
                    .into(),
            ));
        };
        let label = u32::try_from(value).map_err(|_| {
            array.unsupported(
                LABELS,
                format!("example {i} has label {value}; class indices run from 0"),
            )
        })?;
        labels.push(label);
    }
    Ok(labels)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A `.npy` file of format version 2.0 (a 4-byte header length), as NumPy writes when a
    /// header outgrows version 1.0's.
    fn npy_v2(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x02\x00".to_vec();
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn headers_as_numpy_writes_them_parse() {
        let dict = parse_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (150, 4), }   \n")
            .unwrap();
        assert_eq!(dict["descr"], Value::Str("<f8".into()));
        assert_eq!(dict["fortran_order"], Value::Bool(false));
        assert_eq!(dict["shape"], Value::Tuple(vec![150, 4]));
        // Python 2's long integers, a one-axis tuple, a structured type's list of fields.
        let dict =
            parse_dict("{\"descr\": [('a', '<i4')], \"shape\": (3L,), \"fortran_order\": True}")
                .unwrap();
        assert_eq!(dict["descr"], Value::Other);
        assert_eq!(dict["shape"], Value::Tuple(vec![3]));
        assert_eq!(dict["fortran_order"], Value::Bool(true));
        for broken in ["", "{'descr': '<f4'", "{'shape': (1, x)}", "{'descr: 1}"] {
            assert!(parse_dict(broken).is_err(), "{broken}");
        }

        // Version 2, big-endian floats, a scalar's empty shape.
        let data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let array = parse_npy(
            "v2.npy".into(),
            npy_v2(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }\n",
                &data,
            ),
            FEATURES,
        )
        .unwrap();
        let values: Vec<f64> = array.elements().map(|b| array.float(b)).collect();
        assert_eq!(values, [1.5, -2.0]);
        let scalar = parse_npy(
            "s.npy".into(),
            npy_v2(
                "{'descr': '<i2', 'fortran_order': False, 'shape': (), }\n",
                &[0xfe, 0xff],
            ),
            LABELS,
        )
        .unwrap();
        assert_eq!(scalar.count(), 1);
        assert_eq!(
            scalar
                .elements()
                .map(|b| scalar.integer(b))
                .collect::<Vec<_>>(),
            [Some(-2)]
        );
        assert!(decode_features(&scalar, None).is_err());
        assert!(decode_labels(&scalar, 1).is_err());

        // A header longer than NumPy itself accepts.
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = parse_npy("h.npy".into(), huge, FEATURES).err().unwrap();
        assert!(err.to_string().contains("more than 10000"), "{err}");
    }
}
