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
    ///
    /// The ticket appears whole or not at all: it is written and synced under a temporary name
    /// in the same folder, then linked to `path` in one step that fails if `path` exists. A
    /// client killed mid-write (an owner's Ctrl-C, a closed terminal) so never leaves an empty
    /// or partial ticket where the job's only copy of its keys should be.
    pub fn save_new(&self, path: &Path) -> Result<(), RecordError> {
        use std::io::Write;
        let io = |source| RecordError::Io {
            what: "write",
            path: path.to_path_buf(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        // `tempfile` creates the file readable by its owner only (0600 on Unix).
        let mut draft = tempfile::Builder::new()
            .prefix(".chiron-ticket-")
            .suffix(".partial")
            .tempfile_in(folder_of(path))
            .map_err(io)?;
        draft.write_all(&bytes).map_err(io)?;
        draft.as_file().sync_all().map_err(io)?;
        draft.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                RecordError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e.error)
            }
        })?;
        Ok(())
    }

    /// The class name of class index `class` (its index, for a name the record lacks).
    pub fn class_name(&self, class: u32) -> String {
        self.class_names
            .get(class as usize)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}

/// The folder holding `path`: a bare file name's is the working folder, which `Path::parent`
/// gives as an empty path.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
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
    use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
    use chiron_proto::owner::AnswerPolicy;

    fn record(job: usize) -> OwnerRecord {
        let ticket = JobTicket {
            job_id: format!("job-{job}"),
            header: DatasetHeader {
                kind: DatasetKind::Tabular,
                dims: vec![4],
                encoding: ElementEncoding::U8Unit,
                classes: 3,
                train_count: 150,
                valid_count: 0,
            },
            answers: AnswerPolicy::Label,
            event_key: [7; 32],
            query_token: [9; 32],
            seed: None,
        };
        let program = ProgramRecord {
            id: "ab".repeat(32),
            inputs: None,
        };
        // Class names long enough that the ticket takes many bytes to write.
        let names = (0..2000).map(|i| format!("class-{i}")).collect();
        OwnerRecord::started(ticket, program, names, None, 3, 60, None)
    }

    /// Only the ticket itself is left in `dir`: no draft under a temporary name.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_ticket_is_seen_whole_or_not_at_all() {
        // An owner's script (or `chiron attach`) may read the ticket the moment it appears,
        // as the client may be killed the moment it is written: it must never be caught
        // empty or half-written.
        let dir = tempfile::tempdir().expect("tmp");
        for job in 0..50 {
            let path = dir.path().join(format!("job-{job}.json"));
            let watcher = {
                let path = path.clone();
                std::thread::spawn(move || {
                    loop {
                        match std::fs::read(&path) {
                            Ok(bytes) => {
                                return serde_json::from_slice::<OwnerRecord>(&bytes).is_ok();
                            }
                            Err(_) => std::hint::spin_loop(),
                        }
                    }
                })
            };
            record(job).save_new(&path).expect("saved");
            assert!(
                watcher.join().expect("watcher"),
                "job {job}: a partial ticket was seen"
            );
            let back = OwnerRecord::load(&path).expect("loads");
            assert_eq!(back.ticket.job_id, format!("job-{job}"));
        }
        assert_eq!(files_in(dir.path()).len(), 50, "{:?}", files_in(dir.path()));
    }

    #[test]
    fn a_ticket_never_replaces_another() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("run.json");
        record(1).save_new(&path).expect("saved");
        let err = record(2).save_new(&path).expect_err("refused");
        assert!(matches!(err, RecordError::Exists { .. }), "{err}");
        assert_eq!(
            OwnerRecord::load(&path).expect("loads").ticket.job_id,
            "job-1"
        );
        assert_eq!(files_in(dir.path()), ["run.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
        }
    }

    #[test]
    fn a_bare_ticket_name_is_drafted_in_the_working_folder() {
        assert_eq!(folder_of(Path::new("run.json")), Path::new("."));
        assert_eq!(folder_of(Path::new("runs/run.json")), Path::new("runs"));
        assert_eq!(folder_of(Path::new("/run.json")), Path::new("/"));
    }
}
