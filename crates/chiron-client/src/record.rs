//! The owner's record of a job on their own machine: the ticket file.
//!
//! A ticket holds the job's event key and query token, which exist nowhere else: it is written
//! once, never over an existing file, readable by its owner only, and lost work follows from
//! losing it. Next to it the CLI keeps what it learns of the job (its metrics and the curve
//! pictures), named after the ticket.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use chiron_proto::inputs::InputSpec;
use chiron_proto::owner::PrivateTerms;

use crate::convert::Standardizer;
use crate::owner::JobTicket;

/// The owner's local record of a job: the ticket plus what is needed to encode queries and
/// read answers back.
#[derive(Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The job's ticket (its secrets included).
    pub ticket: JobTicket,
    /// The program the job trains, as checked before the upload; `None` in older tickets.
    #[serde(default)]
    pub program: Option<ProgramRecord>,
    /// The name of each class index, as the training data named them.
    pub class_names: Vec<String>,
    /// The standardisation of a table's columns; `None` for images.
    pub standardizer: Option<Standardizer>,
    /// A private job's answer time, within which every answer must be ready.
    #[serde(default)]
    pub private_answer_ms: Option<u32>,
    /// The epochs the owner allowed (for progress); `None` in older tickets.
    #[serde(default)]
    pub epochs: Option<u32>,
    /// A private job's progress is released once this time has passed (Unix seconds): its
    /// start plus its time budget. `None` for a live job and in older tickets.
    #[serde(default)]
    pub private_until_unix: Option<u64>,
}

/// The program a job trains, as the owner's client checked it before the upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramRecord {
    /// The program's id (the SHA-256 of its module).
    pub id: String,
    /// The datasets the program declares it takes (`None`: it declares none, so any).
    pub inputs: Option<InputSpec>,
}

/// Why a ticket file could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The file could not be read or written.
    #[error("cannot {what} ticket {}: {source}", path.display())]
    Io {
        /// `"read"` or `"write"`.
        what: &'static str,
        /// The ticket file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A ticket already exists there: its query token would be lost for good.
    #[error(
        "{} already holds a job's ticket, whose query token cannot be recovered once \
         overwritten; give another --ticket path or move that file away",
        path.display()
    )]
    Exists {
        /// The ticket file.
        path: PathBuf,
    },
    /// The file is not a ticket, or was damaged.
    #[error("{} is not a Chiron ticket, or it is damaged: {detail}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        detail: String,
    },
}

impl OwnerRecord {
    /// The record of a job just started: its `ticket`, the `program` it trains, what the
    /// training data's conversion kept (`class_names`, `standardizer`), the `epochs` allowed
    /// and, for a private job (`private`), when its progress is released: now plus its
    /// `time_budget_secs`.
    pub fn started(
        ticket: JobTicket,
        program: ProgramRecord,
        class_names: Vec<String>,
        standardizer: Option<Standardizer>,
        epochs: u32,
        time_budget_secs: u32,
        private: Option<&PrivateTerms>,
    ) -> Self {
        let now = unix_now();
        Self {
            ticket,
            program: Some(program),
            class_names,
            standardizer,
            private_answer_ms: private.map(|terms| terms.answer_ms),
            epochs: Some(epochs),
            private_until_unix: private.map(|_| now + u64::from(time_budget_secs)),
        }
    }

    /// How long until a private job's progress is released; `None` for a live job, an older
    /// ticket, or once due.
    pub fn private_wait(&self) -> Option<std::time::Duration> {
        let until = self.private_until_unix?;
        let now = unix_now();
        (until > now).then(|| std::time::Duration::from_secs(until - now))
    }

    /// Reads the ticket at `path`.
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        let text = std::fs::read(path).map_err(|source| RecordError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| RecordError::Damaged {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Refuses a `path` that already exists: checked before anything is uploaded, and again
    /// (atomically) by [`OwnerRecord::save_new`].
    pub fn check_free(path: &Path) -> Result<(), RecordError> {
        if path.exists() {
            return Err(RecordError::Exists {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Writes the ticket to a new file at `path`, readable by its owner only; never over an
    /// existing file.
    pub fn save_new(&self, path: &Path) -> Result<(), RecordError> {
        use std::io::Write;
        let io = |source| RecordError::Io {
            what: "write",
            path: path.to_path_buf(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                RecordError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e)
            }
        })?;
        file.write_all(&bytes).map_err(io)
    }

    /// The class name of class index `class` (its index, for a name the record lacks).
    pub fn class_name(&self, class: u32) -> String {
        self.class_names
            .get(class as usize)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}

/// Seconds since the Unix epoch (0 on a clock set before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tickets in `dir` (not its subfolders), by file name: every `.json` file that reads as a
/// ticket. Other JSON files are skipped, so a folder of notebooks and data is fine.
pub fn tickets_in(dir: &Path) -> Result<Vec<(PathBuf, OwnerRecord)>, RecordError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RecordError::Io {
        what: "read",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .filter_map(|path| OwnerRecord::load(&path).ok().map(|record| (path, record)))
        .collect())
}

/// A file next to the ticket at `ticket`, named after it: `run.json` with `metrics.csv` gives
/// `run.metrics.csv`.
pub fn beside(ticket: &Path, suffix: &str) -> PathBuf {
    let stem = ticket
        .file_stem()
        .map_or_else(|| "chiron-job".into(), |s| s.to_string_lossy().into_owned());
    ticket.with_file_name(format!("{stem}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_beside_a_ticket_are_named_after_it() {
        assert_eq!(
            beside(Path::new("runs/fashion.json"), "metrics.csv"),
            Path::new("runs/fashion.metrics.csv")
        );
        assert_eq!(
            beside(Path::new("chiron-job.json"), "curve.svg"),
            Path::new("chiron-job.curve.svg")
        );
    }
}
