//! CSV tables: one example per row, one label column and numeric feature columns.
//!
//! The column names are on one line (the first, unless [`CsvHeader`] says otherwise), or on
//! none, when the columns are known by position as `0`, `1`, .... scikit-learn's bundled CSVs
//! (`iris.csv`, `wine_data.csv`, `breast_cancer.csv`) are of the second kind behind a first
//! line of counts and class names (`150,4,setosa,versicolor,virginica`), which is skipped:
//! [`CsvHeader::Positional`] with `skip: 1`. Taken for column names, such a line would name
//! the columns wrongly without any error, so it is recognised and refused with the flags that
//! read the file. Labels are strings or integers; features finite
//! numbers, standardised per column with the training split's statistics. The file may be
//! gzip-compressed (recognised by its magic bytes), as scikit-learn's `digits.csv.gz` is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chiron_proto::dataset::DatasetKind;
use flate2::read::MultiGzDecoder;

use super::{
    ConvertError, ConvertOptions, Examples, Format, GZIP_MAGIC, Inputs, LabelledInputs,
    MAX_INPUT_LEN, PlainDataset, Standardizer, Values, check_options,
};

/// Where a CSV file's column names are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvHeader {
    /// Line `row` (counted from 0, empty lines not counted) names the columns; the lines
    /// before it are skipped.
    Named {
        /// The header row.
        row: usize,
    },
    /// No line names the columns: they are named `0`, `1`, ... by position. The first `skip`
    /// lines hold no data and are skipped.
    Positional {
        /// Leading lines to skip.
        skip: usize,
    },
}

impl Default for CsvHeader {
    /// The first line names the columns.
    fn default() -> Self {
        Self::Named { row: 0 }
    }
}

impl CsvHeader {
    /// The layout the command line's `--csv-header-row N` and `--csv-no-header` describe:
    /// line `N` (default 0) names the columns; with `no_header`, no line does, and
    /// `--csv-header-row N` then marks lines 0 to `N` as a header that holds no names, to be
    /// skipped (scikit-learn's line of counts: `--csv-no-header --csv-header-row 0`).
    pub fn from_flags(header_row: Option<usize>, no_header: bool) -> Self {
        match (no_header, header_row) {
            (false, row) => Self::Named {
                row: row.unwrap_or(0),
            },
            (true, None) => Self::Positional { skip: 0 },
            (true, Some(row)) => Self::Positional {
                skip: row.saturating_add(1),
            },
        }
    }
}

/// A CSV table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvFile {
    /// The file, raw or gzip-compressed.
    pub path: PathBuf,
    /// The label column's name (its position, `"0"`, `"1"`, ..., without a header row).
    /// Training and evaluation need it; prediction ignores this column when the file has it.
    pub label_column: Option<String>,
    /// Where the column names are.
    pub header: CsvHeader,
}

impl CsvFile {
    /// A table whose first line names the columns.
    pub fn new(path: impl Into<PathBuf>, label_column: Option<&str>) -> Self {
        Self {
            path: path.into(),
            label_column: label_column.map(str::to_owned),
            header: CsvHeader::default(),
        }
    }

    fn label_column(&self) -> Result<&str, ConvertError> {
        self.label_column
            .as_deref()
            .ok_or_else(|| ConvertError::NoLabels {
                path: self.path.clone(),
                what: "name the label column (with --csv-no-header, its position: 0, 1, ...)",
            })
    }
}

impl Format for CsvFile {
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        check_options(opts)?;
        let path = &self.path;
        let table = read_table(
            path,
            self.header,
            Label::Required(self.label_column()?),
            None,
            opts.limit,
        )?;
        let class_names = class_names_of(&table.labels);
        if class_names.len() < 2 {
            return Err(ConvertError::TooFewClasses {
                path: path.clone(),
                classes: class_names.len(),
            });
        }
        let index = class_index(&class_names);
        let labels = table
            .labels
            .iter()
            .map(|l| index.get(l.as_str()).copied().unwrap_or(0))
            .collect();
        Examples {
            kind: DatasetKind::Tabular,
            dims: vec![u32::try_from(table.feature_names.len()).unwrap_or(u32::MAX)],
            values: Values::F32(table.values),
            labels,
        }
        .into_dataset(path, class_names, Some(table.feature_names), opts)
    }

    fn load_labelled(
        &self,
        class_names: &[String],
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        let path = &self.path;
        let table = read_table(
            path,
            self.header,
            Label::Required(self.label_column()?),
            standardizer.map(|s| s.columns.as_slice()),
            limit,
        )?;
        let index = class_index(class_names);
        let mut labels = Vec::with_capacity(table.labels.len());
        for (label, &line) in table.labels.iter().zip(&table.lines) {
            let Some(&class) = index.get(label.as_str()) else {
                return Err(ConvertError::UnknownLabel {
                    path: path.clone(),
                    line,
                    value: label.clone(),
                    classes: class_names.to_vec(),
                });
            };
            labels.push(class);
        }
        let (dims, features) = table.into_features(standardizer);
        Ok(LabelledInputs {
            dims,
            features,
            labels,
        })
    }

    fn load_unlabelled(
        &self,
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        let table = read_table(
            &self.path,
            self.header,
            Label::Ignored(self.label_column.as_deref()),
            standardizer.map(|s| s.columns.as_slice()),
            limit,
        )?;
        let (dims, features) = table.into_features(standardizer);
        Ok(Inputs { dims, features })
    }
}

/// What the label column is to the reading at hand.
#[derive(Clone, Copy)]
enum Label<'a> {
    /// It must be there, and every row needs a label.
    Required(&'a str),
    /// Not a feature if the file has it (a prediction reads the test table as it is).
    Ignored(Option<&'a str>),
}

/// A parsed table: feature columns by name, raw values, label texts and their line numbers.
struct Table {
    feature_names: Vec<String>,
    values: Vec<f32>,
    /// Empty when the label column was ignored.
    labels: Vec<String>,
    lines: Vec<u64>,
}

impl Table {
    /// The features' dims and values, standardised when a standardizer is given (which
    /// picked the table's columns, so the widths agree).
    fn into_features(self, standardizer: Option<&Standardizer>) -> (Vec<u32>, Vec<f32>) {
        let width = self.feature_names.len();
        let mut features = self.values;
        if let Some(s) = standardizer {
            for row in features.chunks_exact_mut(width.max(1)) {
                s.apply(row);
            }
        }
        (vec![u32::try_from(width).unwrap_or(u32::MAX)], features)
    }
}

/// Errors past [`MAX_INPUT_LEN`] bytes, so that a huge or runaway-compressed file stops the
/// parser instead of filling the memory.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::FileTooLarge, "input too large")
        })?;
        Ok(n)
    }
}

/// Opens a file for the CSV parser, decompressing it if it starts with the gzip magic.
fn open(path: &Path) -> Result<Box<dyn Read>, ConvertError> {
    let io = |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let gzip = file.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
    let inner: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(Capped {
        inner,
        left: MAX_INPUT_LEN,
    }))
}

/// Reads a CSV table. `features` picks the feature columns by name (in that order), or, when
/// `None`, every column but the label in file order.
fn read_table(
    path: &Path,
    header: CsvHeader,
    label: Label<'_>,
    features: Option<&[String]>,
    limit: Option<usize>,
) -> Result<Table, ConvertError> {
    let csv_err = |source: ::csv::Error| match source.kind() {
        ::csv::ErrorKind::Io(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
            ConvertError::TooLarge {
                path: path.to_path_buf(),
            }
        }
        _ => ConvertError::Csv {
            path: path.to_path_buf(),
            source,
        },
    };
    let empty = || ConvertError::Empty {
        path: path.to_path_buf(),
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        // Widths are checked here, to say which line is at fault and why.
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(open(path)?);
    let mut record = ::csv::StringRecord::new();
    let mut index = 0u64;
    // Reads the next record; gives its 1-based line (its record count should the parser
    // not know the position).
    let mut next = |record: &mut ::csv::StringRecord| -> Result<Option<u64>, ConvertError> {
        if !reader.read_record(record).map_err(csv_err)? {
            return Ok(None);
        }
        index += 1;
        Ok(Some(record.position().map_or(index, ::csv::Position::line)))
    };

    let (skip, named) = match header {
        CsvHeader::Named { row } => (row, true),
        CsvHeader::Positional { skip } => (skip, false),
    };
    for _ in 0..skip {
        next(&mut record)?.ok_or_else(empty)?;
    }
    let mut header_line = None;
    if named {
        header_line = Some(next(&mut record)?.ok_or_else(empty)?);
    }
    let header_names: Vec<String> = record.iter().map(str::to_owned).collect();
    let Some(first_line) = next(&mut record)? else {
        return Err(empty());
    };
    let names: Vec<String> = match header_line {
        Some(header_line) => {
            if let Some((examples, features, classes)) = count_line(&header_names, record.len()) {
                return Err(ConvertError::CountLine {
                    path: path.to_path_buf(),
                    line: header_line,
                    examples,
                    features,
                    classes,
                });
            }
            if record.len() != header_names.len() {
                return Err(ConvertError::HeaderWidth {
                    path: path.to_path_buf(),
                    header_line,
                    header_fields: header_names.len(),
                    line: first_line,
                    fields: record.len(),
                });
            }
            header_names
        }
        None => (0..record.len()).map(|i| i.to_string()).collect(),
    };
    let hint = match header_line {
        Some(line) => format!(
            " (the names of line {line}; if the column names are on another line, give \
             --csv-header-row N, lines counted from 0; if no line names the columns, give \
             --csv-no-header and name the columns by position, 0, 1, ...)"
        ),
        None => format!(
            " (without a header row the columns are named by position, 0 to {})",
            names.len().saturating_sub(1)
        ),
    };
    let columns = Columns::pick(path, &names, label, features, &hint)?;
    if limit == Some(0) {
        return Err(empty());
    }

    let mut table = Table {
        feature_names: columns.features.iter().map(|&i| names[i].clone()).collect(),
        values: Vec::new(),
        labels: Vec::new(),
        lines: Vec::new(),
    };
    let mut line = first_line;
    loop {
        if record.len() != names.len() {
            return Err(ConvertError::RaggedRow {
                path: path.to_path_buf(),
                line,
                fields: record.len(),
                expected: names.len(),
            });
        }
        let cell = |i: usize| record.get(i).unwrap_or("");
        if let Some(at) = columns.label {
            let text = cell(at);
            if text.is_empty() {
                return Err(ConvertError::EmptyLabel {
                    path: path.to_path_buf(),
                    line,
                });
            }
            table.labels.push(text.to_owned());
        }
        for &i in &columns.features {
            let text = cell(i);
            match text.parse::<f32>() {
                Ok(x) if x.is_finite() => table.values.push(x),
                _ => {
                    return Err(ConvertError::NotNumeric {
                        path: path.to_path_buf(),
                        line,
                        column: names[i].clone(),
                        value: text.to_owned(),
                    });
                }
            }
        }
        table.lines.push(line);
        if limit.is_some_and(|l| table.lines.len() >= l) {
            break;
        }
        match next(&mut record)? {
            Some(l) => line = l,
            None => break,
        }
    }
    Ok(table)
}

/// The counts and class names of scikit-learn's first line (`150,4,setosa,versicolor,virginica`:
/// examples, features, class names), if `fields` is one for rows of `width` fields: the label
/// column follows the features.
fn count_line(fields: &[String], width: usize) -> Option<(u64, u64, Vec<String>)> {
    let [examples, features, classes @ ..] = fields else {
        return None;
    };
    let examples = examples.parse().ok()?;
    let features: u64 = features.parse().ok()?;
    let names_only = classes
        .iter()
        .all(|c| !c.is_empty() && c.parse::<f64>().is_err());
    (classes.len() >= 2 && names_only && features.checked_add(1) == Some(width as u64))
        .then(|| (examples, features, classes.to_vec()))
}

/// The columns a reading uses, by position.
struct Columns {
    /// The label column, when it is read.
    label: Option<usize>,
    /// The feature columns, in feature order.
    features: Vec<usize>,
}

impl Columns {
    fn pick(
        path: &Path,
        names: &[String],
        label: Label<'_>,
        features: Option<&[String]>,
        hint: &str,
    ) -> Result<Self, ConvertError> {
        let mut seen = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            if seen.insert(name.as_str(), i).is_some() {
                return Err(ConvertError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: name.clone(),
                    hint: hint.to_owned(),
                });
            }
        }
        let missing = |column: &str| ConvertError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_owned(),
            available: names.to_vec(),
            hint: hint.to_owned(),
        };
        let (label_at, read_label) = match label {
            Label::Required(name) => (Some(*seen.get(name).ok_or_else(|| missing(name))?), true),
            Label::Ignored(name) => (name.and_then(|n| seen.get(n).copied()), false),
        };
        let picked: Vec<usize> = match features {
            None => (0..names.len()).filter(|&i| Some(i) != label_at).collect(),
            Some(wanted) => {
                let mut picked = Vec::with_capacity(wanted.len());
                for name in wanted {
                    picked.push(*seen.get(name.as_str()).ok_or_else(|| missing(name))?);
                }
                if let Some(extra) =
                    (0..names.len()).find(|i| Some(*i) != label_at && !picked.contains(i))
                {
                    return Err(ConvertError::UnexpectedColumn {
                        path: path.to_path_buf(),
                        column: names[extra].clone(),
                        expected: wanted.to_vec(),
                    });
                }
                picked
            }
        };
        if picked.is_empty() {
            return Err(ConvertError::NoFeatures {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            label: label_at.filter(|_| read_label),
            features: picked,
        })
    }
}

/// Class index of each class name.
fn class_index(class_names: &[String]) -> HashMap<&str, u32> {
    class_names
        .iter()
        .zip(0u32..)
        .map(|(name, i)| (name.as_str(), i))
        .collect()
}

/// The distinct label values in class order: numerically if all are integers, else by text.
pub(super) fn class_names_of(labels: &[String]) -> Vec<String> {
    let distinct: Vec<&String> = labels.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let as_ints: Option<BTreeMap<i128, &String>> = distinct
        .iter()
        .map(|s| s.parse::<i128>().ok().map(|v| (v, *s)))
        .collect();
    match as_ints {
        // Distinct texts can parse to one integer ("1", "01"); then fall back to text order.
        Some(ints) if ints.len() == distinct.len() => ints.into_values().cloned().collect(),
        _ => distinct.into_iter().cloned().collect(),
    }
}

/// Converts a CSV table whose first line names the columns.
///
/// `label_column` names the class column; its values (strings or integers) become class
/// indices in sorted order (numeric order when all are integers), returned as
/// [`PlainDataset::class_names`]. Every other column must hold finite numbers. The result is a
/// [`DatasetKind::Tabular`] dataset of [`ElementEncoding::F32`] values standardised per column
/// with the training split's mean and standard deviation, returned as
/// [`PlainDataset::standardizer`]. [`CsvFile`] reads other header layouts.
///
/// [`ElementEncoding::F32`]: chiron_proto::dataset::ElementEncoding::F32
pub fn from_csv(
    path: &Path,
    label_column: &str,
    opts: &ConvertOptions,
) -> Result<PlainDataset, ConvertError> {
    CsvFile::new(path, Some(label_column)).load_training(opts)
}

/// Reads an owner's held-out CSV table (first line naming the columns) as query inputs, the
/// first `limit` rows.
///
/// Labels are mapped with the training `class_names` (an unknown label is an error). With a
/// `standardizer`, the feature columns are picked by its column names (so their order in the
/// file may differ, but no other column may appear) and standardised; without one, every
/// column but the label is a feature, in file order, unchanged.
pub fn load_csv_inputs(
    path: &Path,
    label_column: &str,
    class_names: &[String],
    standardizer: Option<&Standardizer>,
    limit: Option<usize>,
) -> Result<LabelledInputs, ConvertError> {
    CsvFile::new(path, Some(label_column)).load_labelled(class_names, standardizer, limit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use chiron_proto::dataset::ElementEncoding;

    use super::super::from_idx;
    use super::super::test_support::{Scratch, body_f32, body_labels, iris_csv, no_split};
    use super::*;

    #[test]
    fn converts_the_real_iris_table() {
        let opts = ConvertOptions {
            valid_fraction: 0.2,
            limit: None,
            shuffle_seed: Some(1),
        };
        let data = from_csv(&iris_csv(), "species", &opts).unwrap();
        let h = &data.header;
        assert_eq!(h.kind, DatasetKind::Tabular);
        assert_eq!(h.dims, vec![4]);
        assert_eq!(h.encoding, ElementEncoding::F32);
        assert_eq!(h.classes, 3);
        assert_eq!((h.train_count, h.valid_count), (120, 30));
        assert_eq!(data.body.len(), 150 * 4 + 150 * 4 * 4);
        assert_eq!(data.body.len() as u64, h.plaintext_len().unwrap());
        assert_eq!(data.class_names, ["setosa", "versicolor", "virginica"]);

        let labels = body_labels(&data);
        for class in 0..3 {
            assert_eq!(labels.iter().filter(|&&l| l == class).count(), 50);
        }
        // Shuffled: the validation split is not a single class.
        assert!(labels[120..].iter().any(|&l| l != labels[120]));

        let s = data.standardizer.as_ref().unwrap();
        assert_eq!(
            s.columns,
            ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        );
        // Near the whole table's published means (5.84, 3.05, 3.76, 1.20) and SDs.
        for ((m, sd), (pm, psd)) in
            s.mean
                .iter()
                .zip(&s.std)
                .zip([(5.84, 0.83), (3.05, 0.43), (3.76, 1.76), (1.20, 0.76)])
        {
            assert!((m - pm).abs() < 0.2 && (sd - psd).abs() < 0.15, "{m} {sd}");
        }
        // The training split is standardised exactly; validation only approximately.
        let features = body_f32(&data);
        for c in 0..4 {
            let col: Vec<f64> = features[..120 * 4]
                .iter()
                .skip(c)
                .step_by(4)
                .map(|&x| f64::from(x))
                .collect();
            let mean = col.iter().sum::<f64>() / 120.0;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 120.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "column {c}: {mean} {var}"
            );
        }

        // Query inputs from the same file are the same rows, transformed the same way.
        let inputs =
            load_csv_inputs(&iris_csv(), "species", &data.class_names, Some(s), None).unwrap();
        assert_eq!(inputs.dims, vec![4]);
        assert_eq!(inputs.len(), 150);
        assert_eq!(inputs.labels[..50], [0; 50]);
        assert_eq!(inputs.labels[100..], [2; 50]);
        let key = |l: u32, r: &[f32]| (l, r.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        let mut from_body: Vec<_> = labels
            .iter()
            .zip(features.chunks_exact(4))
            .map(|(&l, r)| key(l, r))
            .collect();
        let mut from_inputs: Vec<_> = inputs
            .labels
            .iter()
            .zip(inputs.features.chunks_exact(4))
            .map(|(&l, r)| key(l, r))
            .collect();
        from_body.sort();
        from_inputs.sort();
        assert_eq!(from_body, from_inputs);

        let first =
            load_csv_inputs(&iris_csv(), "species", &data.class_names, Some(s), Some(10)).unwrap();
        assert_eq!(first.features[..], inputs.features[..40]);
    }

    #[test]
    fn integer_labels_sort_numerically_and_constant_columns_survive() {
        let dir = Scratch::new();
        let path = dir.write(
            "t.csv",
            b"x,k,label\n1.5,7,10\n2.5,7,9\n-1,7,2\n4e0,7,10\n 3 ,7, 9\n",
        );
        let data = from_csv(&path, "label", &no_split()).unwrap();
        assert_eq!(data.class_names, ["2", "9", "10"]);
        assert_eq!(body_labels(&data), [2, 1, 0, 2, 1]);
        let s = data.standardizer.unwrap();
        assert_eq!(s.columns, ["x", "k"]);
        assert_eq!(s.std[1], 1.0);
        assert!((s.mean[0] - 2.0).abs() < 1e-6);
        let mut row = [2.0, 7.0];
        s.apply(&mut row);
        assert_eq!(row, [0.0, 0.0]);
    }

    #[test]
    fn bad_csv_cells_are_named_by_line_and_column() {
        let dir = Scratch::new();
        let text = std::fs::read_to_string(iris_csv()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[37] = "5.0,3.2,1.2,abc,setosa";
        let bad = dir.write("bad.csv", lines.join("\n").as_bytes());
        let err = from_csv(&bad, "species", &no_split()).unwrap_err();
        match &err {
            ConvertError::NotNumeric {
                line,
                column,
                value,
                ..
            } => {
                assert_eq!(
                    (*line, column.as_str(), value.as_str()),
                    (38, "petal_width", "abc")
                );
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("bad.csv") && text.contains("line 38"),
            "{text}"
        );

        for cell in ["nan", "inf", "", "1e40"] {
            let path = dir.write("c.csv", format!("a,y\n1,p\n{cell},q\n").as_bytes());
            let err = from_csv(&path, "y", &no_split()).unwrap_err();
            assert!(
                matches!(err, ConvertError::NotNumeric { line: 3, .. }),
                "{cell}: {err}"
            );
        }

        let ragged = dir.write("r.csv", b"a,b,y\n1,2,p\n1,q\n");
        let err = from_csv(&ragged, "y", &no_split()).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::RaggedRow {
                    line: 3,
                    fields: 2,
                    expected: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("line 3 has 2 fields"), "{err}");

        // A header line narrower than the rows is a misplaced header: say which flags help.
        let wide = dir.write("w.csv", b"2,1,p\n1,2,3,0\n");
        let err = from_csv(&wide, "y", &no_split()).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::HeaderWidth {
                    header_line: 1,
                    header_fields: 3,
                    line: 2,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("--csv-header-row N") && text.contains("--csv-no-header"),
            "{text}"
        );

        let empty_label = dir.write("e.csv", b"a,y\n1,p\n2,\n");
        let err = from_csv(&empty_label, "y", &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::EmptyLabel { line: 3, .. }),
            "{err}"
        );

        let dup = dir.write("d.csv", b"a,a,y\n1,2,p\n");
        let err = from_csv(&dup, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::DuplicateColumn { .. }), "{err}");

        let header_only = dir.write("h.csv", b"a,y\n");
        let err = from_csv(&header_only, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Empty { .. }), "{err}");

        let one_class = dir.write("o.csv", b"a,y\n1,p\n2,p\n");
        let err = from_csv(&one_class, "y", &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::TooFewClasses { classes: 1, .. }),
            "{err}"
        );

        let label_only = dir.write("lo.csv", b"y\np\nq\n");
        let err = from_csv(&label_only, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::NoFeatures { .. }), "{err}");
    }

    #[test]
    fn a_missing_label_column_lists_the_header() {
        let err = from_csv(&iris_csv(), "class", &no_split()).unwrap_err();
        match &err {
            ConvertError::MissingColumn {
                column, available, ..
            } => {
                assert_eq!(column, "class");
                assert_eq!(available.len(), 5);
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("species")
                && text.contains("names of line 1")
                && text.contains("--csv-header-row N")
                && text.contains("--csv-no-header"),
            "{text}"
        );

        // scikit-learn's copy has no header row: its first row is counts and class names.
        let dir = Scratch::new();
        let headerless = dir.write(
            "sk.csv",
            b"150,4,setosa,versicolor,virginica\n5.1,3.5,1.4,0.2,0\n",
        );
        let err = from_csv(&headerless, "species", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::CountLine { .. }), "{err}");

        // A data row taken for the header: its numbers repeat, and the hint says why.
        let bare = dir.write("bare.csv", b"0,0,5,1\n0,1,3,2\n");
        let err = from_csv(&bare, "3", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::DuplicateColumn { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("names of line 1")
                && text.contains("--csv-header-row N")
                && text.contains("--csv-no-header"),
            "{text}"
        );

        let err = from_csv(&dir.0.join("absent.csv"), "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Io { .. }), "{err}");
        assert!(err.to_string().contains("absent.csv"), "{err}");
        let err = from_idx(&dir.0.join("absent"), &dir.0.join("absent"), &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Io { .. }), "{err}");
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn query_tables_are_matched_to_the_training_columns() {
        let dir = Scratch::new();
        let train = dir.write("train.csv", b"a,b,y\n0,10,p\n2,30,q\n");
        let data = from_csv(&train, "y", &no_split()).unwrap();
        let s = data.standardizer.as_ref().unwrap();

        // Columns in another order are picked by name.
        let query = dir.write("q.csv", b"y,b,a\nq,30,2\np,20,1\n");
        let inputs = load_csv_inputs(&query, "y", &data.class_names, Some(s), None).unwrap();
        assert_eq!(inputs.labels, [1, 0]);
        assert_eq!(inputs.features, [1.0, 1.0, 0.0, 0.0]);

        // Without a standardizer: every other column, raw.
        let raw = load_csv_inputs(&query, "y", &data.class_names, None, None).unwrap();
        assert_eq!(raw.features, [30.0, 2.0, 20.0, 1.0]);

        let unknown = dir.write("u.csv", b"a,b,y\n1,2,r\n");
        let err = load_csv_inputs(&unknown, "y", &data.class_names, Some(s), None).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnknownLabel { line: 2, .. }),
            "{err}"
        );

        let extra = dir.write("x.csv", b"a,b,c,y\n1,2,3,p\n");
        let err = load_csv_inputs(&extra, "y", &data.class_names, Some(s), None).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnexpectedColumn { .. }),
            "{err}"
        );

        let lacking = dir.write("m.csv", b"a,y\n1,p\n");
        let err = load_csv_inputs(&lacking, "y", &data.class_names, Some(s), None).unwrap_err();
        assert!(matches!(err, ConvertError::MissingColumn { .. }), "{err}");
    }

    #[test]
    fn column_names_may_be_on_a_later_line_or_on_none() {
        let dir = Scratch::new();
        let late = dir.write(
            "late.csv",
            b"# exported 2024\nunits: cm\n\na,b,y\n1,10,p\n3,30,q\n",
        );
        let at = |row| CsvFile {
            path: late.clone(),
            label_column: Some("y".into()),
            header: CsvHeader::Named { row },
        };
        // Empty lines do not count.
        let data = at(2).load_training(&no_split()).unwrap();
        assert_eq!(data.class_names, ["p", "q"]);
        assert_eq!(data.standardizer.as_ref().unwrap().columns, ["a", "b"]);
        assert_eq!(body_f32(&data), [-1.0, -1.0, 1.0, 1.0]);
        let err = at(9).load_training(&no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Empty { .. }), "{err}");

        let bare = dir.write("bare.csv", b"1,10,p\n3,30,q\n2,20,p\n");
        let positional = |label: Option<&str>| CsvFile {
            path: bare.clone(),
            label_column: label.map(str::to_owned),
            header: CsvHeader::from_flags(None, true),
        };
        let data = positional(Some("2")).load_training(&no_split()).unwrap();
        assert_eq!(data.header.total_count(), 3);
        assert_eq!(data.standardizer.as_ref().unwrap().columns, ["0", "1"]);
        let err = positional(Some("y"))
            .load_training(&no_split())
            .unwrap_err();
        assert!(
            err.to_string().contains("named by position, 0 to 2"),
            "{err}"
        );
        let err = positional(None).load_training(&no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::NoLabels { .. }), "{err}");

        // Prediction: the label column is ignored when named, and a feature when not.
        let s = data.standardizer.as_ref();
        let inputs = positional(Some("2")).load_unlabelled(s, Some(2)).unwrap();
        assert_eq!(inputs.dims, [2]);
        assert_eq!(inputs.len(), 2);
        // Rows 1 and 3 of three, standardised: ∓√1.5 in both columns.
        for (x, want) in inputs.features.iter().zip([-1.0, -1.0, 1.0, 1.0]) {
            assert!((x - want * 1.5f32.sqrt()).abs() < 1e-6, "{x}");
        }
        let raw = positional(None).load_unlabelled(None, None);
        assert!(matches!(raw, Err(ConvertError::NotNumeric { line: 1, .. })));

        assert_eq!(
            CsvHeader::from_flags(None, false),
            CsvHeader::Named { row: 0 }
        );
        assert_eq!(
            CsvHeader::from_flags(Some(3), false),
            CsvHeader::Named { row: 3 }
        );
        assert_eq!(
            CsvHeader::from_flags(Some(0), true),
            CsvHeader::Positional { skip: 1 }
        );
    }

    #[test]
    fn only_a_line_of_counts_and_class_names_is_taken_for_one() {
        let fields = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            count_line(&fields("178,13,class_0,class_1,class_2"), 14),
            Some((178, 13, fields("class_0,class_1,class_2")))
        );
        for (line, width) in [
            ("178,13,class_0,class_1,class_2", 13),
            ("178,13,class_0", 14),
            ("178,13,0,1", 14),
            ("a,b,y", 3),
            ("0,1,2,3", 4),
            ("178,13,,x", 14),
        ] {
            assert_eq!(count_line(&fields(line), width), None, "{line}");
        }
    }

    #[test]
    fn prediction_tables_need_no_label_column() {
        let dir = Scratch::new();
        let train = dir.write("train.csv", b"a,b,y\n0,10,p\n2,30,q\n");
        let data = from_csv(&train, "y", &no_split()).unwrap();
        let s = data.standardizer.as_ref();
        let without = CsvFile::new(dir.write("q.csv", b"b,a\n30,2\n20,1\n"), Some("y"));
        let inputs = without.load_unlabelled(s, None).unwrap();
        assert_eq!(inputs.features, [1.0, 1.0, 0.0, 0.0]);
        let with = CsvFile::new(dir.write("l.csv", b"y,b,a\nq,30,2\np,20,1\n"), Some("y"));
        assert_eq!(with.load_unlabelled(s, None).unwrap(), inputs);
        // Unnamed, the label column is one column too many.
        let err = CsvFile::new(with.path.clone(), None)
            .load_unlabelled(s, None)
            .unwrap_err();
        assert!(
            matches!(err, ConvertError::UnexpectedColumn { .. }),
            "{err}"
        );
        let err = without
            .load_labelled(&data.class_names, s, None)
            .unwrap_err();
        assert!(matches!(err, ConvertError::MissingColumn { .. }), "{err}");
    }

    #[test]
    fn gzip_tables_read_as_raw_ones() {
        let dir = Scratch::new();
        let raw = std::fs::read(iris_csv()).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&raw).unwrap();
        let gz = dir.write("iris.csv.gz", &enc.finish().unwrap());
        let a = from_csv(&iris_csv(), "species", &no_split()).unwrap();
        let b = from_csv(&gz, "species", &no_split()).unwrap();
        assert_eq!(a.body, b.body);
        assert_eq!(a.standardizer, b.standardizer);
    }
}
