"""Training, following and querying a job: `chiron.train`, `chiron.Job`, and the report of
`Job.evaluate`."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, overload

import numpy as np

from . import _native
from ._data import class_values, features_payload, labels_payload
from ._native import Host, InputError, TrainingFailed, Trust
from ._progress import Progress

#: What live mode gives away, said before anything is uploaded (the CLI's `--live` warning).
LIVE_WARNING = (
    "live=True discloses to the platform, and so to the provider, this job's run time, its "
    "number of progress events, the training enclave's peak memory, the sealed model's size "
    "and every query's latency; the provider's program chooses all of them and can make them "
    "depend on your data (tens of bits per job). Leave out live=True to keep them private."
)

PathLike = Union[str, "os.PathLike[str]"]


class LiveModeWarning(UserWarning):
    """A live job discloses timing and sizes to the platform (see `LIVE_WARNING`)."""


class Evaluation(dict):  # type: ignore[type-arg]
    """A model's figures on labelled inputs, through its black-box answers: the dict of
    ``chiron evaluate --json`` (``examples``, ``accuracy``, ``top_k``, ``top_k_accuracy``,
    ``out_of_range``, ``classes``: per class ``class``, ``support``, ``predicted``,
    ``precision``, ``recall``, ``f1``; ``confusion[truth][answered]``). ``str()`` gives the
    CLI's text report."""

    def __init__(self, report: Dict[str, Any], text: str) -> None:
        super().__init__(report)
        self.text = text

    @property
    def accuracy(self) -> float:
        """The share whose best answer was the true class."""
        return float(self["accuracy"])

    @property
    def precision(self) -> Dict[str, Optional[float]]:
        """Precision by class name (None for a class never answered)."""
        return {c["class"]: c["precision"] for c in self["classes"]}

    @property
    def recall(self) -> Dict[str, Optional[float]]:
        """Recall by class name (None for a class absent from the inputs)."""
        return {c["class"]: c["recall"] for c in self["classes"]}

    @property
    def confusion_matrix(self) -> np.ndarray:
        """``[truth, answered]`` counts, classes in the model's order."""
        return np.array(self["confusion"], dtype=np.int64)

    def __str__(self) -> str:
        return self.text

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)


class Job:
    """A training job and, once it succeeded, its model. Get one from `chiron.train`, or
    re-attach to one from its ticket with `Job.load`."""

    def __init__(self, native: _native.Job, host: Host) -> None:
        self._native = native
        self._host = host
        self._outcome: Optional[Dict[str, float]] = None
        self._failure: Optional[str] = None
        self._cut_short = False

    @classmethod
    def load(cls, ticket: PathLike, host: Host, trust: Optional[Trust] = None) -> "Job":
        """The job of a ticket file (written by `chiron.train` or by ``chiron train``);
        `trust` is what its model's query enclave must satisfy, for `predict` and
        `evaluate` (they also take it themselves)."""
        return cls(_native.Job.load(os.fspath(ticket), host, trust), host)

    @property
    def job_id(self) -> str:
        """The job's id at the host."""
        return self._native.job_id

    @property
    def ticket(self) -> Path:
        """The ticket file: it alone can read this job's results and query its model."""
        return Path(self._native.ticket)

    @property
    def class_names(self) -> List[str]:
        """The model's classes, in class-index order."""
        return self._native.class_names

    @property
    def scores(self) -> bool:
        """Whether the model's answers carry each class's probability (``scores=True``)."""
        return self._native.scores

    @property
    def seed(self) -> Optional[str]:
        """The training run's seed (hex): ``seed=`` trains the same model again."""
        return self._native.seed

    def status(self) -> Dict[str, Any]:
        """The job's public status at the host (``state``, ``error``, ``events``)."""
        return self._host.job_status(self.job_id)

    @property
    def history(self) -> List[Dict[str, Any]]:
        """Every metric read so far: ``{"epoch", "name", "value"}`` dicts (epochs from 0),
        ready for ``pandas.DataFrame(job.history)``."""
        return self._native.history()

    def metrics(self) -> Dict[str, float]:
        """The last value of each metric read so far."""
        last: Dict[str, float] = {}
        for point in self.history:
            last[point["name"]] = point["value"]
        return last

    def wait(
        self,
        *,
        progress: bool = True,
        timeout: Optional[float] = None,
        poll_interval: float = 0.25,
    ) -> Dict[str, float]:
        """Follows the job to its end, showing its progress (a bar with the epochs and the
        metrics, a line per epoch; a private job's countdown until its results are
        released), and returns the last value of each metric. Its metrics and training
        curves are then written beside the ticket, as the CLI does. Raises `TrainingFailed`
        with the enclave's detail when the job fails, `TimeoutError` after `timeout` seconds
        (the job goes on: call `wait` again)."""
        if self._outcome is not None:
            return dict(self._outcome)
        if self._failure is not None:
            raise self._failed(self._failure)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = Progress(self._native.epochs, enabled=progress)
        finished = False
        try:
            while True:
                slice_ = self._native.poll()
                self._show(bar, slice_["events"])
                if slice_["done"]:
                    if slice_["failure"] is not None:
                        self._failure = slice_["failure"]
                        self._write_records(bar)
                        raise self._failed(self._failure)
                    finished = True
                    self._write_records(bar)
                    self._outcome = self.metrics()
                    return dict(self._outcome)
                wait = self._native.private_wait_secs()
                if wait is not None:
                    bar.status(
                        "private: progress is released with the results in "
                        f"{wait // 60}:{wait % 60:02}",
                        plain=True,
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"job {self.job_id} has not ended after {timeout} s; it goes on: "
                        "call wait() again to follow it"
                    )
                time.sleep(poll_interval)
        finally:
            bar.close(finished and not self._cut_short)

    def _show(self, bar: Progress, events: List[Dict[str, Any]]) -> None:
        """Shows new events in order: one line per epoch's metrics, notes for the rest."""
        total = self._native.epochs
        pending: Dict[str, float] = {}
        pending_epoch = -1

        def flush() -> None:
            if pending:
                of = f"/{total}" if total is not None else ""
                shown = ", ".join(f"{k} = {v:.4f}" for k, v in pending.items())
                bar.note(f"epoch {pending_epoch + 1}{of}: {shown}")
                bar.epochs_done(pending_epoch + 1, dict(pending))
                bar.status("training")
                pending.clear()

        for event in events:
            kind = event["kind"]
            if kind == "metric":
                if event["epoch"] != pending_epoch:
                    flush()
                    pending_epoch = event["epoch"]
                pending[event["name"]] = event["value"]
                continue
            flush()
            if kind == "started":
                bar.status("training")
            elif kind == "progress":
                bar.status(f"epoch {event['epoch'] + 1}: step {event['step']}/{event['steps']}")
            elif kind == "cut_short":
                self._cut_short = True
                bar.note(
                    "the time budget ran out before the program finished: the model kept is "
                    "the one it saved last (see the metrics above)"
                )
            elif kind == "finished":
                bar.note(
                    f"training finished: a model of {event['parameters']} parameters sealed; "
                    f"the enclave's peak memory was {event['peak_memory_mib']} MiB"
                )
        flush()

    def _write_records(self, bar: Progress) -> None:
        written = self._native.write_records()
        if written:
            bar.note("records: " + ", ".join(os.fspath(p) for p in written))

    def _failed(self, detail: str) -> TrainingFailed:
        error = TrainingFailed(f"training failed: {detail}")
        error.detail = detail  # type: ignore[attr-defined]
        error.job_id = self.job_id  # type: ignore[attr-defined]
        return error

    @overload
    def predict(
        self,
        features: Any,
        *,
        batch: int = ...,
        trust: Optional[Trust] = ...,
        scores: Literal[False] = ...,
    ) -> np.ndarray: ...

    @overload
    def predict(
        self,
        features: Any,
        *,
        batch: int = ...,
        trust: Optional[Trust] = ...,
        scores: Literal[True],
    ) -> Tuple[np.ndarray, np.ndarray]: ...

    def predict(
        self,
        features: Any,
        *,
        batch: int = 250,
        trust: Optional[Trust] = None,
        scores: bool = False,
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """The model's answers on unlabelled examples (the same kind of array or DataFrame
        as for training), in queries of at most `batch` inputs: the class of each example,
        shape ``(n,)``, or its k best classes, shape ``(n, k)``, for a top-k model. Classes
        come back as the labels were given: integers, or names. With `scores` (for a model
        trained with ``scores=True``), also each class's probability, in an array of the
        same shape. Inputs of another shape than the training examples are refused before
        any query."""
        if scores and not self.scores:
            raise InputError(
                "this model's answers carry no scores: train with scores=True (where the "
                "program's policy allows them) to have them"
            )
        x = features_payload(features)
        names, width, probabilities = self._native.predict(
            x.data, x.shape, x.dtype, x.columns, batch=batch, trust=trust
        )
        answers = class_values(names, self.class_names)
        answers = answers if width == 1 else answers.reshape(-1, width)
        if not scores:
            return answers
        return answers, np.asarray(probabilities, dtype=np.float32).reshape(answers.shape)

    def evaluate(
        self,
        features: Any,
        labels: Any,
        *,
        batch: int = 250,
        trust: Optional[Trust] = None,
    ) -> Evaluation:
        """The model's accuracy, per-class precision and recall and confusion matrix on
        labelled examples, through black-box queries: the figures of ``chiron evaluate``."""
        x = features_payload(features)
        y = labels_payload(labels)
        report, text = self._native.evaluate(
            x.data, x.shape, x.dtype, x.columns, y, batch=batch, trust=trust
        )
        return Evaluation(json.loads(report), text)

    def __repr__(self) -> str:
        return f"chiron.Job(job_id={self.job_id!r}, ticket={os.fspath(self.ticket)!r})"


def train(
    host: Host,
    program_id: str,
    features: Any,
    labels: Any,
    *,
    trust: Trust,
    epochs: int = 3,
    valid_fraction: float = 0.1,
    live: bool = False,
    ticket: PathLike = "chiron-job.json",
    time_budget: Optional[int] = None,
    top_k: Optional[int] = None,
    scores: bool = False,
    query_budget: Optional[int] = None,
    seed: Union[str, bytes, None] = None,
    shuffle_seed: int = 0,
    limit: Optional[int] = None,
    keep_last_save: bool = True,
    private_memory_mib: Optional[int] = None,
    private_model_mib: Optional[int] = None,
    private_answer_ms: Optional[int] = None,
    verbose: bool = True,
) -> Job:
    """Trains the provider's program `program_id` on your examples, as ``chiron train``
    does: `features` is a NumPy array (a table ``[n, columns]``; images ``[n, H, W]`` or
    ``[n, C, H, W]``, ``uint8`` pixels read ``/ 255``) or a pandas DataFrame of numeric
    columns, `labels` one label per example (integers or names; the classes are the distinct
    labels, sorted). Refuses an existing `ticket` file and terms beyond the program's policy
    before anything is uploaded; encrypts the data here, uploads the ciphertext, checks the
    job's enclave against `trust` and only then releases the key to it; writes the ticket.

    `valid_fraction` of the examples (shuffled with `shuffle_seed`) are held out for
    validation metrics. The job is private unless `live`: the platform then sees only the
    figures sized from the dataset and the program's declared needs (or the
    ``private_*`` and `time_budget` given), and progress comes when the budget has passed.
    Returns the started `Job`: ``job.wait()`` follows it."""
    x = features_payload(features)
    y = labels_payload(labels)
    if live:
        warnings.warn(LIVE_WARNING, LiveModeWarning, stacklevel=2)
    if isinstance(seed, (bytes, bytearray)):
        seed = bytes(seed).hex()
    native = _native.train(
        host,
        program_id,
        x.data,
        x.shape,
        x.dtype,
        x.columns,
        y,
        trust,
        ticket=os.fspath(ticket),
        epochs=epochs,
        valid_fraction=valid_fraction,
        live=live,
        time_budget=time_budget,
        top_k=top_k,
        scores=scores,
        query_budget=query_budget,
        seed=seed,
        shuffle_seed=shuffle_seed,
        limit=limit,
        keep_last_save=keep_last_save,
        private_memory_mib=private_memory_mib,
        private_model_mib=private_model_mib,
        private_answer_ms=private_answer_ms,
    )
    if verbose:
        for note in native.notes:
            print(note)
    return Job(native, host)
