//! `chiron._native`: the extension module behind the `chiron` Python package, for data owners
//! working in notebooks.
//!
//! It is a thin layer over `chiron_client`: the same attestation, sealing, event decryption
//! and queries as the `chiron` CLI ([`chiron_client::owner`]), the same ticket files
//! ([`chiron_client::record::OwnerRecord`]) and the same array conversion
//! ([`chiron_client::convert::arrays`]). Nothing of the protocol is done in Python: the
//! package's pure-Python part (`python/chiron/`) only turns NumPy arrays and pandas frames into
//! bytes, shapes and labels, and shows progress.
//!
//! Every failure is raised as a subclass of `chiron.ChironError` carrying the Rust error's
//! text.

use chiron_client::ClientError;
use chiron_client::convert::ConvertError;
use chiron_client::record::RecordError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

mod host;
mod job;

create_exception!(
    chiron,
    ChironError,
    PyException,
    "Any failure of the Chiron client; the subclasses say which kind."
);
create_exception!(
    chiron,
    AttestationError,
    ChironError,
    "The enclave's evidence does not satisfy the owner's trust policy: no secret was sent \
     (`job_id` names the job, when there is one)."
);
create_exception!(
    chiron,
    TermsRefused,
    ChironError,
    "The provider's extraction policy refuses the owner's terms (answers, query budget); \
     nothing was uploaded."
);
create_exception!(
    chiron,
    HostError,
    ChironError,
    "The host refused a request (`status` holds the HTTP status) or could not be reached \
     (`status` is None)."
);
create_exception!(
    chiron,
    InputError,
    ChironError,
    "The owner's data or arguments are unusable (shape, type, labels, columns, trust policy)."
);
create_exception!(
    chiron,
    TicketError,
    ChironError,
    "A job's ticket file cannot be written (one exists there already) or read."
);
create_exception!(
    chiron,
    TrainingFailed,
    ChironError,
    "The training job failed; the message is the enclave's detail for the owner."
);
create_exception!(
    chiron,
    TamperingError,
    ChironError,
    "An event or answer failed authentication: the host altered, reordered, dropped or \
     withheld it."
);

/// Why a call failed, before it becomes a Python exception.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A client operation failed.
    Client(ClientError),
    /// A client operation on job `job_id` failed (its id goes with the exception).
    InJob {
        /// The job.
        job_id: String,
        /// The failure.
        error: ClientError,
    },
    /// The owner's data does not convert.
    Convert(ConvertError),
    /// A ticket file cannot be read or written.
    Record(RecordError),
    /// An argument is unusable.
    Input(String),
    /// The program's policy refuses the terms.
    Terms(String),
    /// Anything else.
    Other(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<ConvertError> for Failure {
    fn from(e: ConvertError) -> Self {
        Self::Convert(e)
    }
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

/// The exception of a client error, and the HTTP status it carries.
fn client_error(e: &ClientError) -> (PyErr, Option<u16>) {
    let text = e.to_string();
    match e {
        ClientError::Http(_) => (HostError::new_err(text), None),
        ClientError::Host { status, .. } => (HostError::new_err(text), Some(*status)),
        ClientError::Attestation(_) | ClientError::MalformedEvidence => {
            (AttestationError::new_err(text), None)
        }
        ClientError::Terms(_) => (TermsRefused::new_err(text), None),
        ClientError::Input(_) => (InputError::new_err(text), None),
        ClientError::TamperedEvent(_)
        | ClientError::TamperedAnswer
        | ClientError::WithheldEvents => (TamperingError::new_err(text), None),
        _ => (ChironError::new_err(text), None),
    }
}

impl Failure {
    /// The Python exception: its class by kind, the Rust error's text as its message.
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let (err, status, job_id) = match self {
            Self::Client(e) => {
                let (err, status) = client_error(&e);
                (err, status, None)
            }
            Self::InJob { job_id, error } => {
                let (err, status) = client_error(&error);
                (err, status, Some(job_id))
            }
            Self::Convert(e) => (InputError::new_err(e.to_string()), None, None),
            // The CLI's words name its flag; these name the argument.
            Self::Record(RecordError::Exists { path }) => (
                TicketError::new_err(format!(
                    "{} already holds a job's ticket, whose query token cannot be recovered \
                     once overwritten; give another ticket= path or move that file away; \
                     nothing was uploaded",
                    path.display()
                )),
                None,
                None,
            ),
            Self::Record(e) => (TicketError::new_err(e.to_string()), None, None),
            Self::Input(text) => (InputError::new_err(text), None, None),
            Self::Terms(text) => (TermsRefused::new_err(text), None, None),
            Self::Other(text) => (ChironError::new_err(text), None, None),
        };
        let value = err.value(py);
        // Exceptions take attributes; a failure to set one only loses the detail.
        if value.is_instance_of::<HostError>() {
            let _ = value.setattr("status", status);
        }
        if let Some(job_id) = job_id {
            let _ = value.setattr("job_id", job_id);
        }
        err
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> Self {
        Python::attach(|py| failure.into_pyerr(py))
    }
}

/// The simulated measurement of an enclave runtime binary (hex SHA-256), as `chiron measure
/// BINARY` prints it: what a trust policy pins with `sim_measurement`.
#[pyfunction]
fn measure(path: std::path::PathBuf) -> PyResult<String> {
    chiron_attest::measure_file(&path)
        .map(hex::encode)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())).into())
}

/// The module `chiron._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ChironError", py.get_type::<ChironError>())?;
    m.add("AttestationError", py.get_type::<AttestationError>())?;
    m.add("TermsRefused", py.get_type::<TermsRefused>())?;
    m.add("HostError", py.get_type::<HostError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("TicketError", py.get_type::<TicketError>())?;
    m.add("TrainingFailed", py.get_type::<TrainingFailed>())?;
    m.add("TamperingError", py.get_type::<TamperingError>())?;
    m.add_class::<host::Host>()?;
    m.add_class::<host::Trust>()?;
    m.add_class::<job::Job>()?;
    m.add_function(wrap_pyfunction!(job::train, m)?)?;
    m.add_function(wrap_pyfunction!(measure, m)?)?;
    Ok(())
}
