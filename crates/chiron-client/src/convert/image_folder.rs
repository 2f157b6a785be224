//! Image folders: one subfolder per class, `dir/<class>/<image>.png|jpg|jpeg`, the layout of
//! torchvision's `ImageFolder` and of most image datasets unpacked by hand.
//!
//! Classes are the subfolders' names in sorted order; a class folder's images may sit in
//! further subfolders, and images beside the class folders are not read for training (for
//! prediction, every image under the folder is). Names starting with `.` are skipped (`.git`, `.DS_Store`), as are files
//! without a `.png`, `.jpg` or `.jpeg` extension (any case); the image format itself is told
//! by the file's content. All images must have one size. Grayscale images give one channel;
//! if any image has colour, every image gives three (grayscale ones repeated), and an alpha
//! channel is dropped. The examples are `[channels, height, width]` bytes, read as `/ 255`
//! like IDX pixels.
//!
//! Files are taken in a fixed order: sorted paths, and for training and evaluation one image
//! of each class in turn (the first image of every class, then the second, ...), so that the
//! first `limit` examples cover the classes evenly.

use std::path::{Path, PathBuf};

use chiron_proto::dataset::DatasetKind;
use image::{DynamicImage, ImageReader};

use super::{
    ConvertError, ConvertOptions, Examples, Format, Inputs, LabelledInputs, MAX_INPUT_LEN,
    PlainDataset, Standardizer, Values, check_options, scaled_pixels,
};

/// Folders deeper than this inside a class folder are not searched (a guard against
/// symbolic-link cycles).
const MAX_DEPTH: usize = 16;

/// A folder of images, one subfolder per class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFolder {
    /// The folder whose subfolders are the classes. For prediction, every image under it is
    /// read, in class folders or not.
    pub dir: PathBuf,
}

impl ImageFolder {
    /// The images a prediction reads ([`Format::load_unlabelled`]), in its order: every image
    /// under the folder, by sorted path.
    pub fn image_files(&self) -> Result<Vec<PathBuf>, ConvertError> {
        let mut files = Vec::new();
        walk(&self.dir, 0, &mut files)?;
        files.sort();
        Ok(files)
    }

    /// The images of each class folder, interleaved class by class.
    fn labelled_files(
        &self,
        classes: &[(String, PathBuf)],
        label_of: impl Fn(usize, &str, &Path) -> Result<u32, ConvertError>,
        limit: Option<usize>,
    ) -> Result<Vec<(u32, PathBuf)>, ConvertError> {
        let mut per_class = Vec::with_capacity(classes.len());
        for (i, (name, dir)) in classes.iter().enumerate() {
            let label = label_of(i, name, dir)?;
            let mut files = Vec::new();
            walk(dir, 0, &mut files)?;
            if files.is_empty() {
                return Err(ConvertError::NoImages {
                    path: dir.clone(),
                    what: "in this class folder (add some, or remove the folder)",
                });
            }
            files.sort();
            per_class.push((label, files.into_iter()));
        }
        if limit == Some(0) {
            return Err(ConvertError::Empty {
                path: self.dir.clone(),
            });
        }
        let mut taken = Vec::new();
        while limit.is_none_or(|l| taken.len() < l) {
            let before = taken.len();
            for (label, files) in &mut per_class {
                if limit.is_some_and(|l| taken.len() >= l) {
                    break;
                }
                if let Some(file) = files.next() {
                    taken.push((*label, file));
                }
            }
            if taken.len() == before {
                break;
            }
        }
        Ok(taken)
    }
}

impl Format for ImageFolder {
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        check_options(opts)?;
        let classes = class_dirs(&self.dir)?;
        if classes.len() < 2 {
            return Err(ConvertError::TooFewClasses {
                path: self.dir.clone(),
                classes: classes.len(),
            });
        }
        let files = self.labelled_files(&classes, |i, _, _| Ok(i as u32), opts.limit)?;
        let names = classes.into_iter().map(|(name, _)| name).collect();
        let labels = files.iter().map(|&(label, _)| label).collect();
        let (dims, pixels) = decode_all(&self.dir, files.iter().map(|(_, f)| f.as_path()))?;
        Examples {
            kind: DatasetKind::Image,
            dims,
            values: Values::U8(pixels),
            labels,
        }
        .into_dataset(&self.dir, names, None, opts)
    }

    fn load_labelled(
        &self,
        class_names: &[String],
        _standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        let classes = class_dirs(&self.dir)?;
        let files = self.labelled_files(
            &classes,
            |_, name, dir| {
                class_names
                    .iter()
                    .position(|c| c == name)
                    .map(|i| i as u32)
                    .ok_or_else(|| ConvertError::UnknownClassFolder {
                        path: dir.to_path_buf(),
                        class: name.to_owned(),
                        classes: class_names.to_vec(),
                    })
            },
            limit,
        )?;
        let (dims, pixels) = decode_all(&self.dir, files.iter().map(|(_, f)| f.as_path()))?;
        Ok(LabelledInputs {
            dims,
            features: scaled_pixels(&pixels),
            labels: files.into_iter().map(|(l, _)| l).collect(),
        })
    }

    fn load_unlabelled(
        &self,
        _standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        if limit == Some(0) {
            return Err(ConvertError::Empty {
                path: self.dir.clone(),
            });
        }
        let mut files = self.image_files()?;
        files.truncate(limit.unwrap_or(usize::MAX));
        let (dims, pixels) = decode_all(&self.dir, files.iter().map(PathBuf::as_path))?;
        Ok(Inputs {
            dims,
            features: scaled_pixels(&pixels),
        })
    }
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["png", "jpg", "jpeg"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// The entries of a folder, hidden ones left out.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let io = |source| ConvertError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if !hidden(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

/// Collects the image files under `dir`, searching its subfolders too.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), ConvertError> {
    for path in entries(dir)? {
        if path.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, depth + 1, out)?;
            }
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The class folders, sorted by name.
fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, ConvertError> {
    let mut classes = Vec::new();
    for path in entries(dir)? {
        if !path.is_dir() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(ConvertError::NotUtf8Name { path });
        };
        classes.push((name.to_owned(), path));
    }
    classes.sort();
    if classes.is_empty() {
        return Err(ConvertError::NoImages {
            path: dir.to_path_buf(),
            what: "in class folders: put each class's images in a subfolder named after the class",
        });
    }
    Ok(classes)
}

/// Pixels of images of one size, `[channels, height, width]` each, image after image.
struct Stack<'a> {
    dir: &'a Path,
    /// 1 while every image so far is grayscale, else 3.
    channels: usize,
    /// The first image and its size.
    first: Option<(PathBuf, u32, u32)>,
    pixels: Vec<u8>,
}

impl Stack<'_> {
    fn push(&mut self, path: &Path, img: &DynamicImage) -> Result<(), ConvertError> {
        let (width, height) = (img.width(), img.height());
        match &self.first {
            None => self.first = Some((path.to_path_buf(), width, height)),
            Some((first, w, h)) if (*w, *h) != (width, height) => {
                return Err(ConvertError::ImageSize {
                    path: path.to_path_buf(),
                    width,
                    height,
                    first: first.clone(),
                    first_width: *w,
                    first_height: *h,
                });
            }
            Some(_) => {}
        }
        let plane = width as usize * height as usize;
        let expand = self.channels == 1 && img.color().has_color();
        let channels = if expand { 3 } else { self.channels };
        let needed = self.pixels.len() / self.channels * channels + channels * plane;
        if needed as u64 > MAX_INPUT_LEN {
            return Err(ConvertError::TooLarge {
                path: self.dir.to_path_buf(),
            });
        }
        if expand {
            // Colour after grayscale: the images so far become three equal planes.
            let mut rgb = Vec::with_capacity(self.pixels.len() * 3);
            for gray in self.pixels.chunks_exact(plane.max(1)) {
                for _ in 0..3 {
                    rgb.extend_from_slice(gray);
                }
            }
            self.pixels = rgb;
            self.channels = 3;
        }
        if self.channels == 1 {
            self.pixels.extend_from_slice(img.to_luma8().as_raw());
        } else {
            // Interleaved RGB to channel-planar.
            let rgb = img.to_rgb8();
            let raw = rgb.as_raw();
            for c in 0..3 {
                self.pixels.extend(raw.iter().skip(c).step_by(3));
            }
        }
        Ok(())
    }
}

/// Decodes the images, in order, into one pixel buffer, with each image's dims.
fn decode_all<'p>(
    dir: &Path,
    files: impl IntoIterator<Item = &'p Path>,
) -> Result<(Vec<u32>, Vec<u8>), ConvertError> {
    let mut stack = Stack {
        dir,
        channels: 1,
        first: None,
        pixels: Vec::new(),
    };
    for path in files {
        let io = |source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        };
        let img = ImageReader::open(path)
            .map_err(io)?
            .with_guessed_format()
            .map_err(io)?
            .decode()
            .map_err(|source| ConvertError::Image {
                path: path.to_path_buf(),
                source,
            })?;
        stack.push(path, &img)?;
    }
    let Some((_, width, height)) = stack.first else {
        return Err(ConvertError::NoImages {
            path: dir.to_path_buf(),
            what: "under this folder",
        });
    };
    Ok((vec![stack.channels as u32, height, width], stack.pixels))
}
