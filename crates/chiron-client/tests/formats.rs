//! The owner's data formats on real data: the first Fashion-MNIST training images, written as
//! image folders, CIFAR batches and NumPy arrays, must give the labels and pixels the IDX
//! files give; scikit-learn's own layout of the Iris table must give the Iris dataset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chiron_client::convert::{
    self, CifarFiles, CifarLabels, ConvertError, ConvertOptions, CsvFile, CsvHeader, DataSource,
    Format, IdxFiles, ImageFolder, Inputs, NpyFiles, NpzFile, PlainDataset,
};
use chiron_proto::dataset::{DatasetKind, ElementEncoding};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Where the set-up installs Fashion-MNIST (Debian package `dataset-fashion-mnist`), as
/// `chiron_tests::FASHION_DIR` says.
const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Examples taken from Fashion-MNIST: the first 30 training images hold all ten classes.
const N: usize = 30;
const SIDE: usize = 28;
const PIXELS: usize = SIDE * SIDE;

fn fashion_train() -> IdxFiles {
    let dir = Path::new(FASHION_DIR);
    IdxFiles {
        images: dir.join("train-images-idx3-ubyte.gz"),
        labels: Some(dir.join("train-labels-idx1-ubyte.gz")),
    }
}

fn no_split() -> ConvertOptions {
    ConvertOptions {
        valid_fraction: 0.0,
        limit: None,
        shuffle_seed: None,
    }
}

fn limit(n: usize) -> ConvertOptions {
    ConvertOptions {
        limit: Some(n),
        ..no_split()
    }
}

fn body_labels(data: &PlainDataset) -> Vec<u32> {
    let n = data.header.total_count() as usize;
    data.body[..n * 4]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn body_features(data: &PlainDataset) -> &[u8] {
    &data.body[data.header.total_count() as usize * 4..]
}

fn body_f32(data: &PlainDataset) -> Vec<f32> {
    body_features(data)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The first `N` Fashion-MNIST training examples, read by the IDX reader: the reference
/// every other format is checked against.
struct Fashion {
    data: PlainDataset,
    labels: Vec<u32>,
    images: Vec<Vec<u8>>,
}

fn fashion() -> Fashion {
    let data = fashion_train()
        .load_training(&limit(N))
        .expect("Fashion-MNIST is installed");
    let labels = body_labels(&data);
    let images = body_features(&data)
        .chunks_exact(PIXELS)
        .map(<[u8]>::to_vec)
        .collect();
    let mut classes = labels.clone();
    classes.sort_unstable();
    classes.dedup();
    assert_eq!(classes, (0..10).collect::<Vec<_>>());
    Fashion {
        data,
        labels,
        images,
    }
}

fn scaled(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

// ---------------------------------------------------------------------------------------------
// Image folders

/// Writes example `i` as `dir/<label>/<i>.<ext>` with `save`, returns the file.
fn write_class_file(dir: &Path, label: u32, i: usize, ext: &str) -> PathBuf {
    let class = dir.join(label.to_string());
    std::fs::create_dir_all(&class).unwrap();
    class.join(format!("{i:03}.{ext}"))
}

fn gray(pixels: &[u8]) -> image::GrayImage {
    image::GrayImage::from_raw(SIDE as u32, SIDE as u32, pixels.to_vec()).unwrap()
}

fn write_png_folder(dir: &Path, f: &Fashion) {
    for (i, (label, pixels)) in f.labels.iter().zip(&f.images).enumerate() {
        gray(pixels)
            .save(write_class_file(dir, *label, i, "png"))
            .unwrap();
    }
}

/// The order an image folder takes the examples in: class by class in turn, each class's
/// files by name (here by their index in the IDX file).
fn round_robin(labels: &[u32]) -> Vec<usize> {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let longest = by_class.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|k| by_class.values().filter_map(move |v| v.get(k).copied()))
        .collect()
}

#[test]
fn png_class_folders_give_the_idx_pixels_and_labels() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    write_png_folder(tmp.path(), &f);
    // Not images, or hidden: skipped.
    std::fs::write(tmp.path().join("3/notes.txt"), "not an image").unwrap();
    std::fs::create_dir_all(tmp.path().join(".thumbnails")).unwrap();
    let folder = ImageFolder {
        dir: tmp.path().to_path_buf(),
    };
    let source = DataSource::ImageFolder(folder.clone());

    let data = source.load_training(&no_split()).unwrap();
    let h = &data.header;
    assert_eq!(h.kind, DatasetKind::Image);
    assert_eq!(h.dims, [1, 28, 28]);
    assert_eq!(h.encoding, ElementEncoding::U8Unit);
    assert_eq!(h.classes, 10);
    assert_eq!(h.total_count(), N as u64);
    assert_eq!(data.class_names, f.data.class_names);
    assert!(data.standardizer.is_none());
    let order = round_robin(&f.labels);
    let expected_labels: Vec<u32> = order.iter().map(|&i| f.labels[i]).collect();
    let expected_pixels: Vec<u8> = order.iter().flat_map(|&i| f.images[i].clone()).collect();
    assert_eq!(body_labels(&data), expected_labels);
    assert_eq!(body_features(&data), expected_pixels);

    // The first ten examples are one of each class.
    let ten = source.load_training(&limit(10)).unwrap();
    assert_eq!(body_labels(&ten), (0..10).collect::<Vec<_>>());

    let labelled = source.load_labelled(&data.class_names, None, None).unwrap();
    assert_eq!(labelled.dims, [1, 28, 28]);
    assert_eq!(labelled.labels, expected_labels);
    assert_eq!(labelled.features, scaled(&expected_pixels));

    // Prediction reads every image by sorted path: class "0" first, by file name.
    let mut by_path: Vec<usize> = (0..N).collect();
    by_path.sort_by_key(|&i| (f.labels[i], i));
    let unlabelled = source.load_unlabelled(None, Some(12)).unwrap();
    assert_eq!(unlabelled.len(), 12);
    assert_eq!(unlabelled.feature_len(), PIXELS);
    let first: Vec<u8> = by_path[..12]
        .iter()
        .flat_map(|&i| f.images[i].clone())
        .collect();
    assert_eq!(unlabelled.features, scaled(&first));
    let files = folder.image_files().unwrap();
    assert_eq!(files.len(), N);
    assert!(files[0].ends_with(format!("0/{:03}.png", by_path[0])));
}

#[test]
fn colour_and_jpeg_images_are_read() {
    let f = fashion();
    // One colour image among grayscale ones: every image becomes three equal planes.
    let tmp = TempDir::new().unwrap();
    write_png_folder(tmp.path(), &f);
    let colour = 17;
    let rgb = image::RgbImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
        let p = f.images[colour][y as usize * SIDE + x as usize];
        image::Rgb([p, p, p])
    });
    rgb.save(write_class_file(
        tmp.path(),
        f.labels[colour],
        colour,
        "png",
    ))
    .unwrap();
    let folder = ImageFolder {
        dir: tmp.path().to_path_buf(),
    };
    let data = folder.load_training(&no_split()).unwrap();
    assert_eq!(data.header.dims, [3, 28, 28]);
    let order = round_robin(&f.labels);
    for (example, &i) in body_features(&data).chunks_exact(3 * PIXELS).zip(&order) {
        for plane in example.chunks_exact(PIXELS) {
            assert_eq!(plane, f.images[i].as_slice());
        }
    }

    // JPEG is lossy: same labels, nearly the same pixels; the extension's case is free.
    let tmp = TempDir::new().unwrap();
    for (i, (label, pixels)) in f.labels.iter().zip(&f.images).enumerate() {
        let ext = if i % 2 == 0 { "jpg" } else { "JPEG" };
        let mut file = std::fs::File::create(write_class_file(tmp.path(), *label, i, ext)).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 95)
            .encode_image(&gray(pixels))
            .unwrap();
    }
    let folder = ImageFolder {
        dir: tmp.path().to_path_buf(),
    };
    let inputs = folder
        .load_labelled(&f.data.class_names, None, None)
        .unwrap();
    assert_eq!(inputs.dims, [1, 28, 28]);
    assert_eq!(
        inputs.labels,
        order.iter().map(|&i| f.labels[i]).collect::<Vec<_>>()
    );
    for (got, &i) in inputs.features.chunks_exact(PIXELS).zip(&order) {
        let error: f32 = got
            .iter()
            .zip(scaled(&f.images[i]))
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / PIXELS as f32;
        assert!(error < 4.0 / 255.0, "image {i}: mean error {error}");
    }
}

#[test]
fn bad_image_folders_are_refused_by_name() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    write_png_folder(tmp.path(), &f);
    let folder = || {
        DataSource::ImageFolder(ImageFolder {
            dir: tmp.path().to_path_buf(),
        })
    };

    // A query folder whose class the model never saw.
    let query = TempDir::new().unwrap();
    gray(&f.images[0])
        .save(write_class_file(query.path(), 57, 0, "png"))
        .unwrap();
    let err = DataSource::ImageFolder(ImageFolder {
        dir: query.path().to_path_buf(),
    })
    .load_labelled(&f.data.class_names, None, None)
    .unwrap_err();
    assert!(
        matches!(&err, ConvertError::UnknownClassFolder { class, .. } if class == "57"),
        "{err}"
    );

    // One image cropped to 27 columns.
    let odd = write_class_file(tmp.path(), 4, 999, "png");
    let cropped: Vec<u8> = f.images[0]
        .chunks_exact(SIDE)
        .flat_map(|row| row[..27].to_vec())
        .collect();
    image::GrayImage::from_raw(27, 28, cropped)
        .unwrap()
        .save(&odd)
        .unwrap();
    let err = folder().load_training(&no_split()).unwrap_err();
    assert!(
        matches!(&err, ConvertError::ImageSize { path, width: 27, height: 28, first_width: 28, .. } if path == &odd),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("999.png") && text.contains("27×28") && text.contains("28×28"),
        "{text}"
    );
    std::fs::remove_file(&odd).unwrap();

    // Not an image at all, under an image's name.
    let fake = write_class_file(tmp.path(), 4, 998, "png");
    std::fs::write(&fake, "id,label\n1,2\n").unwrap();
    let err = folder().load_training(&no_split()).unwrap_err();
    assert!(
        matches!(&err, ConvertError::Image { path, .. } if path == &fake),
        "{err}"
    );
    std::fs::remove_file(&fake).unwrap();

    // An empty class folder.
    std::fs::create_dir_all(tmp.path().join("10")).unwrap();
    let err = folder().load_training(&no_split()).unwrap_err();
    assert!(
        matches!(&err, ConvertError::NoImages { path, .. } if path.ends_with("10")),
        "{err}"
    );

    // A single class, or none.
    let one = TempDir::new().unwrap();
    let err = DataSource::ImageFolder(ImageFolder {
        dir: one.path().to_path_buf(),
    })
    .load_training(&no_split())
    .unwrap_err();
    assert!(matches!(err, ConvertError::NoImages { .. }), "{err}");
    gray(&f.images[0])
        .save(write_class_file(one.path(), 0, 0, "png"))
        .unwrap();
    let err = DataSource::ImageFolder(ImageFolder {
        dir: one.path().to_path_buf(),
    })
    .load_training(&no_split())
    .unwrap_err();
    assert!(
        matches!(err, ConvertError::TooFewClasses { classes: 1, .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// CIFAR

/// A CIFAR record of a Fashion-MNIST image: padded to 32×32 with a 2-pixel black border, the
/// gray plane repeated for red, green and blue.
fn cifar_pixels(image: &[u8]) -> Vec<u8> {
    let mut plane = vec![0u8; 32 * 32];
    for (y, row) in image.chunks_exact(SIDE).enumerate() {
        plane[(y + 2) * 32 + 2..(y + 2) * 32 + 2 + SIDE].copy_from_slice(row);
    }
    plane.repeat(3)
}

/// CIFAR batch files, the examples up to each of `ends` in one, with the label bytes
/// `label_bytes` gives.
fn write_cifar(
    dir: &Path,
    f: &Fashion,
    ends: &[usize],
    label_bytes: impl Fn(u32) -> Vec<u8>,
) -> Vec<PathBuf> {
    let mut start = 0;
    let mut files = Vec::new();
    for (b, &end) in ends.iter().enumerate() {
        let mut bytes = Vec::new();
        for i in start..end {
            bytes.extend(label_bytes(f.labels[i]));
            bytes.extend(cifar_pixels(&f.images[i]));
        }
        let path = dir.join(format!("data_batch_{}.bin", b + 1));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
        start = end;
    }
    files
}

#[test]
fn cifar_batches_give_the_idx_labels_and_pixels() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    let files = write_cifar(tmp.path(), &f, &[20, N], |l| vec![l as u8]);
    let source = DataSource::Cifar(CifarFiles {
        files: files.clone(),
        labels: CifarLabels::Cifar10,
    });
    let data = source.load_training(&no_split()).unwrap();
    assert_eq!(data.header.kind, DatasetKind::Image);
    assert_eq!(data.header.dims, [3, 32, 32]);
    assert_eq!(data.header.encoding, ElementEncoding::U8Unit);
    assert_eq!(data.class_names, f.data.class_names);
    assert_eq!(body_labels(&data), f.labels);
    let expected: Vec<u8> = f.images.iter().flat_map(|i| cifar_pixels(i)).collect();
    assert_eq!(body_features(&data), expected);

    // A limit reaching into the second file.
    let some = source.load_training(&limit(25)).unwrap();
    assert_eq!(body_labels(&some), f.labels[..25]);
    let labelled = source
        .load_labelled(&data.class_names, None, Some(25))
        .unwrap();
    assert_eq!(labelled.labels, f.labels[..25]);
    assert_eq!(labelled.features, scaled(&expected[..25 * 3072]));
    let unlabelled = source.load_unlabelled(None, None).unwrap();
    assert_eq!(unlabelled.len(), N);
    assert_eq!(unlabelled.features, scaled(&expected));

    // CIFAR-100: coarse then fine label bytes; coarse here is the label halved.
    let tmp100 = TempDir::new().unwrap();
    let files100 = write_cifar(tmp100.path(), &f, &[N], |l| vec![l as u8 / 2, l as u8]);
    let fine = DataSource::Cifar(CifarFiles {
        files: files100.clone(),
        labels: CifarLabels::Cifar100Fine,
    })
    .load_training(&no_split())
    .unwrap();
    assert_eq!(body_labels(&fine), f.labels);
    assert_eq!(body_features(&fine), expected);
    let coarse = DataSource::Cifar(CifarFiles {
        files: files100.clone(),
        labels: CifarLabels::Cifar100Coarse,
    })
    .load_training(&no_split())
    .unwrap();
    assert_eq!(coarse.header.classes, 5);
    assert_eq!(
        body_labels(&coarse),
        f.labels.iter().map(|l| l / 2).collect::<Vec<_>>()
    );
    // Fine labels asked of a model that knows the five coarse classes.
    let err = DataSource::Cifar(CifarFiles {
        files: files100.clone(),
        labels: CifarLabels::Cifar100Fine,
    })
    .load_labelled(&coarse.class_names, None, None)
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConvertError::LabelOutOfRange {
                example: 0,
                label: 9,
                classes: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_cifar_files_are_refused_with_the_record_count() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    let files = write_cifar(tmp.path(), &f, &[20, N], |l| vec![l as u8]);
    let cifar = |files: Vec<PathBuf>, labels| DataSource::Cifar(CifarFiles { files, labels });

    // Cut short by 100 bytes: 9 whole records of the second file's 10.
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() - 100]).unwrap();
    let err = cifar(files.clone(), CifarLabels::Cifar10)
        .load_training(&no_split())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConvertError::CifarLength {
                records: 9,
                record_len: 3073,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("data_batch_2.bin")
            && text.contains("9 whole records")
            && text.contains("truncated"),
        "{text}"
    );
    std::fs::write(&files[1], &bytes).unwrap();

    // CIFAR-10 files read as CIFAR-100.
    let err = cifar(files.clone(), CifarLabels::Cifar100Fine)
        .load_training(&no_split())
        .unwrap_err();
    assert!(err.to_string().contains("choose CIFAR-10"), "{err}");

    // A label byte no CIFAR-10 class has.
    let mut bad = bytes.clone();
    bad[3 * 3073] = 57;
    std::fs::write(&files[1], &bad).unwrap();
    let err = cifar(files.clone(), CifarLabels::Cifar10)
        .load_training(&no_split())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConvertError::CifarLabel {
                record: 3,
                label: 57,
                ..
            }
        ),
        "{err}"
    );

    // Only two classes among the first records leave gaps below the largest label: 9, 0, 0.
    let err = cifar(files[..1].to_vec(), CifarLabels::Cifar10)
        .load_training(&limit(3))
        .unwrap_err();
    assert!(
        matches!(err, ConvertError::LabelGaps { max: 9, .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// NumPy

/// A `.npy` file (format version 1.0) of `data`, which must be `shape` elements of `descr`.
fn npy(descr: &str, shape: &[usize], fortran: bool, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, as NumPy does.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn labels_i64(labels: &[u32]) -> Vec<u8> {
    labels
        .iter()
        .flat_map(|&l| i64::from(l).to_le_bytes())
        .collect()
}

fn pixels_of(f: &Fashion) -> Vec<u8> {
    f.images.concat()
}

#[test]
fn npy_arrays_give_the_idx_dataset() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let x = write("x.npy", npy("|u1", &[N, 28, 28], false, &pixels_of(&f)));
    let y = write("y.npy", npy("<i8", &[N], false, &labels_i64(&f.labels)));
    let source = |features: &Path, labels: Option<&Path>| {
        DataSource::Npy(NpyFiles {
            features: features.to_path_buf(),
            labels: labels.map(Path::to_path_buf),
        })
    };
    let data = source(&x, Some(&y)).load_training(&no_split()).unwrap();
    assert_eq!(data.header, f.data.header);
    assert_eq!(data.body, f.data.body);
    assert_eq!(data.class_names, f.data.class_names);

    // Shuffled and split the same way as the IDX files.
    let opts = ConvertOptions {
        valid_fraction: 0.2,
        limit: Some(25),
        shuffle_seed: Some(3),
    };
    let idx = fashion_train().load_training(&opts).unwrap();
    assert_eq!(
        source(&x, Some(&y)).load_training(&opts).unwrap().body,
        idx.body
    );

    // Big-endian 16-bit labels, and labels of shape (n, 1).
    let be: Vec<u8> = f
        .labels
        .iter()
        .flat_map(|&l| (l as i16).to_be_bytes())
        .collect();
    let y_be = write("y_be.npy", npy(">i2", &[N, 1], false, &be));
    assert_eq!(
        source(&x, Some(&y_be))
            .load_training(&no_split())
            .unwrap()
            .body,
        f.data.body
    );

    // Channels first (n, 1, h, w) is the same; channels last (n, h, w, 3) gives three planes.
    let x_nchw = write(
        "x_nchw.npy",
        npy("|u1", &[N, 1, 28, 28], false, &pixels_of(&f)),
    );
    assert_eq!(
        source(&x_nchw, Some(&y))
            .load_training(&no_split())
            .unwrap()
            .body,
        f.data.body
    );
    let nhwc: Vec<u8> = pixels_of(&f).iter().flat_map(|&p| [p, p, p]).collect();
    let x_nhwc = write("x_nhwc.npy", npy("|u1", &[N, 28, 28, 3], false, &nhwc));
    let colour = source(&x_nhwc, Some(&y))
        .load_training(&no_split())
        .unwrap();
    assert_eq!(colour.header.dims, [3, 28, 28]);
    for (example, image) in body_features(&colour)
        .chunks_exact(3 * PIXELS)
        .zip(&f.images)
    {
        assert_eq!(example, image.repeat(3));
    }

    // float32 images stay unscaled floats: already the query loader's values.
    let floats: Vec<u8> = scaled(&pixels_of(&f))
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let x_f32 = write("x_f32.npy", npy("<f4", &[N, 28, 28], false, &floats));
    let float_data = source(&x_f32, Some(&y)).load_training(&no_split()).unwrap();
    assert_eq!(float_data.header.kind, DatasetKind::Image);
    assert_eq!(float_data.header.encoding, ElementEncoding::F32);
    assert!(float_data.standardizer.is_none());
    let idx_inputs = fashion_train()
        .load_labelled(&f.data.class_names, None, Some(N))
        .unwrap();
    assert_eq!(body_f32(&float_data), idx_inputs.features);

    // Query inputs, with and without labels.
    let labelled = source(&x, Some(&y))
        .load_labelled(&data.class_names, None, Some(N))
        .unwrap();
    assert_eq!(labelled, idx_inputs);
    let unlabelled = source(&x, None).load_unlabelled(None, Some(N)).unwrap();
    assert_eq!(unlabelled, Inputs::from(idx_inputs.clone()));
    let err = source(&x, None).load_training(&no_split()).unwrap_err();
    assert!(matches!(err, ConvertError::NoLabels { .. }), "{err}");
}

#[test]
fn bad_npy_arrays_are_refused_with_what_to_do() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let x = write("x.npy", npy("|u1", &[N, 28, 28], false, &pixels_of(&f)));
    let y = write("y.npy", npy("<i8", &[N], false, &labels_i64(&f.labels)));
    let train = |features: &Path, labels: &Path| {
        DataSource::Npy(NpyFiles {
            features: features.to_path_buf(),
            labels: Some(labels.to_path_buf()),
        })
        .load_training(&no_split())
        .unwrap_err()
    };
    let says = |err: ConvertError, words: &[&str]| {
        let text = err.to_string();
        assert!(words.iter().all(|w| text.contains(w)), "{text}");
        err
    };

    let float_labels: Vec<u8> = f
        .labels
        .iter()
        .flat_map(|&l| f64::from(l).to_le_bytes())
        .collect();
    let y_float = write("y_float.npy", npy("<f8", &[N], false, &float_labels));
    let err = says(
        train(&x, &y_float),
        &["y_float.npy", "labels", "astype(np.int64)"],
    );
    assert!(matches!(
        err,
        ConvertError::NpyUnsupported { what: "labels", .. }
    ));

    let strings = write("s.npy", npy("<U5", &[N], false, &vec![0; N * 20]));
    says(train(&x, &strings), &["s.npy", "strings"]);
    let objects = write("o.npy", npy("|O", &[N], false, &vec![0; N * 8]));
    says(train(&objects, &y), &["o.npy", "Python objects"]);
    let fortran = write(
        "fortran.npy",
        npy("|u1", &[N, 28, 28], true, &pixels_of(&f)),
    );
    says(
        train(&fortran, &y),
        &["fortran.npy", "Fortran", "ascontiguousarray"],
    );
    let mut cut = npy("|u1", &[N, 28, 28], false, &pixels_of(&f));
    cut.truncate(cut.len() - 5);
    let cut = write("cut.npy", cut);
    let err = says(train(&cut, &y), &["cut.npy", "truncated"]);
    assert!(matches!(err, ConvertError::Npy { .. }));
    let not_npy = write("x.csv", b"1,2\n3,4\n".to_vec());
    says(train(&not_npy, &y), &["x.csv", "np.save"]);
    let flat = write("flat.npy", npy("|u1", &[N * PIXELS], false, &pixels_of(&f)));
    says(train(&flat, &y), &["flat.npy", "features", "(n, columns)"]);

    let y29 = write(
        "y29.npy",
        npy("<i8", &[N - 1], false, &labels_i64(&f.labels[..N - 1])),
    );
    let err = train(&x, &y29);
    assert!(
        matches!(
            err,
            ConvertError::CountMismatch {
                images: 30,
                labels: 29,
                ..
            }
        ),
        "{err}"
    );
    let mut typo = f.labels.clone();
    typo[5] = 57;
    let y_typo = write("y_typo.npy", npy("<i8", &[N], false, &labels_i64(&typo)));
    let err = train(&x, &y_typo);
    assert!(
        matches!(err, ConvertError::LabelGaps { max: 57, .. }),
        "{err}"
    );
    let negative: Vec<u8> = f
        .labels
        .iter()
        .map(|&l| l as i8 - 1)
        .flat_map(i8::to_le_bytes)
        .collect();
    let y_neg = write("y_neg.npy", npy("|i1", &[N], false, &negative));
    says(train(&x, &y_neg), &["y_neg.npy", "label -1"]);
    // A label of four billion is refused before anything is sized by it.
    let mut huge: Vec<u8> = f.labels.iter().flat_map(|&l| l.to_le_bytes()).collect();
    huge[..4].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    let y_huge = write("y_huge.npy", npy("<u4", &[N], false, &huge));
    let err = says(train(&x, &y_huge), &["y_huge.npy", "4000000001"]);
    assert!(matches!(err, ConvertError::Header { .. }), "{err}");
}

#[test]
fn npz_archives_stored_or_deflated() {
    let f = fashion();
    let tmp = TempDir::new().unwrap();
    let x = npy("|u1", &[N, 28, 28], false, &pixels_of(&f));
    let y = npy("<i8", &[N], false, &labels_i64(&f.labels));
    let archive = |name: &str, method, members: &[(&str, &[u8])]| {
        let path = tmp.path().join(name);
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (member, bytes) in members {
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            zip.start_file(*member, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    };
    let npz = |path: PathBuf, features: Option<&str>, labels: Option<&str>| {
        DataSource::Npz(NpzFile {
            path,
            features_key: features.map(str::to_owned),
            labels_key: labels.map(str::to_owned),
        })
    };

    // np.savez: stored, keys x and y.
    let stored = archive(
        "stored.npz",
        zip::CompressionMethod::Stored,
        &[("x.npy", &x), ("y.npy", &y)],
    );
    let data = npz(stored.clone(), None, None)
        .load_training(&no_split())
        .unwrap();
    assert_eq!(data.body, f.data.body);
    // np.savez_compressed with Keras's names.
    let deflated = archive(
        "deflated.npz",
        zip::CompressionMethod::Deflated,
        &[("x_train.npy", &x), ("y_train.npy", &y)],
    );
    assert!(
        std::fs::metadata(&deflated).unwrap().len() < std::fs::metadata(&stored).unwrap().len()
    );
    let data = npz(deflated.clone(), None, None)
        .load_training(&no_split())
        .unwrap();
    assert_eq!(data.body, f.data.body);
    let inputs = npz(deflated.clone(), None, None)
        .load_unlabelled(None, Some(7))
        .unwrap();
    assert_eq!(inputs.features, scaled(&pixels_of(&f)[..7 * PIXELS]));

    // Other names, given.
    let named = archive(
        "named.npz",
        zip::CompressionMethod::Deflated,
        &[("images.npy", &x), ("targets.npy", &y)],
    );
    let data = npz(named.clone(), Some("images"), Some("targets.npy"))
        .load_labelled(&f.data.class_names, None, None)
        .unwrap();
    assert_eq!(data.labels, f.labels);
    let err = npz(named.clone(), Some("images"), None)
        .load_training(&no_split())
        .unwrap_err();
    assert!(
        matches!(&err, ConvertError::NpzKey { key, available, .. }
            if key == "y or y_train" && available == &["images", "targets"]),
        "{err}"
    );
    assert!(err.to_string().contains("name the labels array"), "{err}");

    let err = npz(tmp.path().join("x.npy"), None, None)
        .load_training(&no_split())
        .unwrap_err();
    assert!(matches!(err, ConvertError::Io { .. }), "{err}");
    std::fs::write(tmp.path().join("x.npy"), &x).unwrap();
    let err = npz(tmp.path().join("x.npy"), None, None)
        .load_training(&no_split())
        .unwrap_err();
    assert!(matches!(err, ConvertError::Zip { .. }), "{err}");
}

#[test]
fn a_float64_table_is_standardised_like_its_csv() {
    let iris = iris_csv();
    let opts = ConvertOptions {
        valid_fraction: 0.2,
        limit: None,
        shuffle_seed: Some(1),
    };
    let from_csv = convert::from_csv(&iris, "species", &opts).unwrap();
    let text = std::fs::read_to_string(&iris).unwrap();
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        for cell in &cells[..4] {
            values.extend(cell.parse::<f64>().unwrap().to_le_bytes());
        }
        let class = from_csv
            .class_names
            .iter()
            .position(|c| c == cells[4])
            .unwrap();
        labels.push(class as u32);
    }
    let tmp = TempDir::new().unwrap();
    let x = tmp.path().join("x.npy");
    let y = tmp.path().join("y.npy");
    std::fs::write(&x, npy("<f8", &[150, 4], false, &values)).unwrap();
    let y_u8: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    std::fs::write(&y, npy("|u1", &[150], false, &y_u8)).unwrap();
    let source = DataSource::Npy(NpyFiles {
        features: x.clone(),
        labels: Some(y.clone()),
    });
    let data = source.load_training(&opts).unwrap();
    assert_eq!(data.header, from_csv.header);
    assert_eq!(body_labels(&data), body_labels(&from_csv));
    assert_eq!(data.class_names, ["0", "1", "2"]);
    let s = data.standardizer.as_ref().unwrap();
    assert_eq!(s.columns, ["0", "1", "2", "3"]);
    let t = from_csv.standardizer.as_ref().unwrap();
    for (a, b) in s.mean.iter().chain(&s.std).zip(t.mean.iter().chain(&t.std)) {
        assert!((a - b).abs() < 1e-6, "{a} {b}");
    }
    for (a, b) in body_f32(&data).iter().zip(body_f32(&from_csv)) {
        assert!((a - b).abs() < 1e-5, "{a} {b}");
    }
    let inputs = source.load_unlabelled(Some(s), None).unwrap();
    let csv_inputs =
        convert::load_csv_inputs(&iris, "species", &from_csv.class_names, Some(t), None).unwrap();
    for (a, b) in inputs.features.iter().zip(&csv_inputs.features) {
        assert!((a - b).abs() < 1e-5, "{a} {b}");
    }

    // Three columns for a model of four.
    let three: Vec<u8> = values
        .chunks_exact(32)
        .flat_map(|row| row[..24].to_vec())
        .collect();
    std::fs::write(&x, npy("<f8", &[150, 3], false, &three)).unwrap();
    let err = source
        .load_labelled(&data.class_names, Some(s), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConvertError::WidthMismatch {
                found: 3,
                expected: 4,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// scikit-learn's CSVs

fn iris_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iris.csv")
}

/// scikit-learn's own `iris.csv` (`sklearn/datasets/data/iris.csv`), rebuilt byte for byte
/// from the shipped copy, whose README says only its first line and class column changed.
fn sklearn_iris(classes: &[&str]) -> Vec<u8> {
    let text = std::fs::read_to_string(iris_csv()).unwrap();
    let species = ["setosa", "versicolor", "virginica"];
    let rows: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (features, name) = line.rsplit_once(',').unwrap();
            let class = species.iter().position(|s| *s == name).unwrap();
            (class < classes.len()).then(|| format!("{features},{class}\n"))
        })
        .collect();
    let mut out = format!("{},4,{}\n", rows.len(), classes.join(","));
    out.extend(rows);
    out.into_bytes()
}

#[test]
fn scikit_learn_csvs_read_with_the_header_flags() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("iris.csv");
    let original = sklearn_iris(&["setosa", "versicolor", "virginica"]);
    // The SHA-256 the shipped copy's README gives for scikit-learn's file.
    assert_eq!(
        hex::encode(Sha256::digest(&original)),
        "f13ffa8fdd56fd8e6c8d16d4081a3fbd3114bcd0aae4256c43205169cd9d1449"
    );
    std::fs::write(&path, &original).unwrap();

    // As a plain CSV, its line of counts would be taken for column names: it is recognised,
    // and the error says which flags read it.
    for label in ["species", "4"] {
        let err = convert::from_csv(&path, label, &no_split()).unwrap_err();
        assert!(
            matches!(&err, ConvertError::CountLine { line: 1, examples: 150, features: 4, classes, .. }
                if classes == &["setosa", "versicolor", "virginica"]),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("--csv-no-header --csv-header-row 0"),
            "{err}"
        );
    }

    let sklearn = CsvFile {
        path: path.clone(),
        label_column: Some("4".into()),
        header: CsvHeader::from_flags(Some(0), true),
    };
    let opts = ConvertOptions {
        valid_fraction: 0.2,
        limit: None,
        shuffle_seed: Some(1),
    };
    let data = DataSource::Csv(sklearn.clone())
        .load_training(&opts)
        .unwrap();
    let named = convert::from_csv(&iris_csv(), "species", &opts).unwrap();
    // The same examples, classes in the same order (0, 1, 2 as setosa, versicolor, virginica).
    assert_eq!(data.header, named.header);
    assert_eq!(data.body, named.body);
    assert_eq!(data.class_names, ["0", "1", "2"]);
    let s = data.standardizer.as_ref().unwrap();
    assert_eq!(s.columns, ["0", "1", "2", "3"]);
    assert_eq!(s.mean, named.standardizer.as_ref().unwrap().mean);

    let labelled = DataSource::Csv(sklearn.clone())
        .load_labelled(&data.class_names, Some(s), None)
        .unwrap();
    assert_eq!(labelled.len(), 150);
    // For prediction, the named label column is left out.
    let unlabelled = DataSource::Csv(sklearn.clone())
        .load_unlabelled(Some(s), None)
        .unwrap();
    assert_eq!(unlabelled, Inputs::from(labelled.clone()));

    // Two classes: the count line is one field shorter than the rows.
    let two = tmp.path().join("two.csv");
    std::fs::write(&two, sklearn_iris(&["setosa", "versicolor"])).unwrap();
    let err = convert::from_csv(&two, "4", &no_split()).unwrap_err();
    assert!(
        matches!(&err, ConvertError::CountLine { examples: 100, classes, .. } if classes.len() == 2),
        "{err}"
    );
    let data = DataSource::Csv(CsvFile {
        path: two,
        ..sklearn
    })
    .load_training(&no_split())
    .unwrap();
    assert_eq!((data.header.classes, data.header.total_count()), (2, 100));

    // A title line instead of the header: refused as ragged, with the flags named.
    let text = std::fs::read_to_string(iris_csv()).unwrap();
    let (names, rows) = text.split_once('\n').unwrap();
    let titled = tmp.path().join("titled.csv");
    std::fs::write(
        &titled,
        format!("Fisher's Iris data (1936)\n{names}\n{rows}"),
    )
    .unwrap();
    let err = convert::from_csv(&titled, "species", &no_split()).unwrap_err();
    assert!(
        matches!(
            err,
            ConvertError::HeaderWidth {
                header_line: 1,
                header_fields: 1,
                line: 2,
                fields: 5,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("titled.csv")
            && text.contains("--csv-header-row N")
            && text.contains("--csv-no-header"),
        "{text}"
    );
    let at_row_1 = CsvFile {
        path: titled,
        label_column: Some("species".into()),
        header: CsvHeader::from_flags(Some(1), false),
    };
    let opts = ConvertOptions::default();
    assert_eq!(
        at_row_1.load_training(&opts).unwrap().body,
        convert::from_csv(&iris_csv(), "species", &opts)
            .unwrap()
            .body
    );
}

#[test]
fn idx_images_without_labels_are_prediction_inputs() {
    let train = fashion_train();
    let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let labelled = DataSource::Idx(train.clone())
        .load_labelled(&classes, None, Some(100))
        .unwrap();
    let images_only = DataSource::Idx(IdxFiles {
        labels: None,
        ..train
    });
    let inputs = images_only.load_unlabelled(None, Some(100)).unwrap();
    assert_eq!(inputs.len(), 100);
    assert_eq!(inputs.dims, [1, 28, 28]);
    assert_eq!(inputs, Inputs::from(labelled));
    assert_eq!(
        inputs.batches(40).map(|b| b.len()).collect::<Vec<_>>(),
        [40 * PIXELS, 40 * PIXELS, 20 * PIXELS]
    );
    for err in [
        images_only.load_training(&no_split()).unwrap_err(),
        images_only.load_labelled(&[], None, None).unwrap_err(),
    ] {
        assert!(matches!(err, ConvertError::NoLabels { .. }), "{err}");
        assert!(err.to_string().contains("label file"), "{err}");
    }
}
