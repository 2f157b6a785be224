"""An owner's notebook against a real host and real (simulated-TEE) enclaves: the `chiron`
package trains the example MLP on pandas and NumPy data, follows it, queries the model, and
refuses what must be refused before anything is spent. No mocks: real processes over real
sockets, real data."""

from __future__ import annotations

import gzip
import json
import os
import stat
import struct
import subprocess
import warnings
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import pandas as pd
import pytest

import chiron
import chiron._progress
from conftest import BIN, FASHION_DIR, IRIS_CSV, Service


def read_idx(images: Path, labels: Path, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """The first `count` examples of an IDX image/label pair (gzipped), as an owner would read
    them without any helper: `uint8` images `[n, rows, cols]` and `uint8` labels `[n]`."""
    with gzip.open(images, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803 and n >= count
        pixels = np.frombuffer(f.read(count * rows * cols), dtype=np.uint8)
    with gzip.open(labels, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        assert magic == 0x801 and n >= count
        classes = np.frombuffer(f.read(count), dtype=np.uint8)
    return pixels.reshape(count, rows, cols), classes


@pytest.fixture(scope="module")
def iris(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The notebook's first cells: read the table with pandas, train live, wait."""
    workdir = tmp_path_factory.mktemp("notebook")
    policy_file = workdir / "owner-policy.txt"
    policy_file.write_text(service.policy_text)
    host = chiron.Host(service.url, token=service.token)
    trust = chiron.Trust(policy=open(policy_file).read())
    df = pd.read_csv(IRIS_CSV)
    ticket = workdir / "iris-job.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = chiron.train(
            host,
            service.program_id,
            df.drop(columns="species"),
            df["species"],
            trust=trust,
            epochs=60,
            valid_fraction=0.2,
            live=True,
            ticket=ticket,
        )
    assert any(issubclass(w.category, chiron.LiveModeWarning) for w in caught)
    metrics = job.wait()
    yield {
        "host": host,
        "trust": trust,
        "policy_file": policy_file,
        "df": df,
        "ticket": ticket,
        "job": job,
        "metrics": metrics,
    }


def test_an_owner_trains_iris_from_pandas_in_a_notebook(service: Service, iris: dict) -> None:
    job: chiron.Job = iris["job"]
    df: pd.DataFrame = iris["df"]
    x, y = df.drop(columns="species"), df["species"]
    metrics = iris["metrics"]
    assert set(metrics) >= {"train_loss", "valid_accuracy"}, metrics
    assert metrics["valid_accuracy"] > 0.8, metrics
    assert len([p for p in job.history if p["name"] == "train_loss"]) == 60
    assert job.class_names == ["setosa", "versicolor", "virginica"]

    labels = job.predict(x)
    assert labels.shape == (150,) and labels.dtype.kind == "U"
    # Trained without scores: none to give, refused before any query.
    assert not job.scores
    with pytest.raises(chiron.InputError, match="scores=True"):
        job.predict(x, scores=True)
    accuracy = float((labels == y.to_numpy()).mean())
    assert accuracy > 0.8, accuracy

    report = job.evaluate(x, y)
    assert report["examples"] == 150
    assert report.accuracy == pytest.approx(accuracy)
    assert report.confusion_matrix.shape == (3, 3)
    assert report.confusion_matrix.sum() == 150
    assert set(report.precision) == set(job.class_names)
    assert "confusion matrix" in str(report)

    # The same figures as the CLI's `evaluate --json`, on the CSV file, with the same ticket
    # and the same policy file: the ticket is the CLI's format and the conversion the same.
    cli = subprocess.run(
        [
            str(BIN / "chiron"),
            "evaluate",
            "--json",
            "--host",
            service.url,
            "--ticket",
            str(iris["ticket"]),
            "--csv",
            str(IRIS_CSV),
            "--label-column",
            "species",
            "--policy",
            str(iris["policy_file"]),
        ],
        env=dict(os.environ, CHIRON_TOKEN=service.token),
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == dict(report)

    # The ticket is the owner's secret: readable by them only. The records sit beside it.
    ticket: Path = iris["ticket"]
    assert stat.S_IMODE(ticket.stat().st_mode) == 0o600
    for suffix in ("metrics.csv", "metrics.jsonl", "curves.svg", "curves.png"):
        assert ticket.with_name(f"iris-job.{suffix}").stat().st_size > 0, suffix
    status = subprocess.run(
        [str(BIN / "chiron"), "status", "--json", "--host", service.url, "--ticket", str(ticket)],
        env=dict(os.environ, CHIRON_TOKEN=service.token),
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "Succeeded"
    assert json.loads(status.stdout)["seed"] == job.seed

    # Re-attached from its ticket (in a new notebook, say): same events, same answers, even
    # with the columns in another order.
    again = chiron.Job.load(ticket, iris["host"], iris["trust"])
    assert again.job_id == job.job_id
    assert again.wait(progress=False) == metrics
    shuffled = x[["petal_width", "sepal_length", "petal_length", "sepal_width"]]
    assert (again.predict(shuffled) == labels).all()
    # Without a trust policy, no query enclave is attested, and no query sent.
    with pytest.raises(chiron.InputError, match="trust"):
        chiron.Job.load(ticket, iris["host"]).predict(x)


def test_fashion_images_as_a_numpy_array(service: Service, tmp_path: Path) -> None:
    images, labels = read_idx(
        FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz", 400
    )
    # Top-3 answers with their probabilities: the MLP's policy allows up to 10, with scores.
    job = chiron.train(
        service.host(),
        service.program_id,
        images,
        labels,
        trust=service.trust(),
        epochs=3,
        live=True,
        top_k=3,
        scores=True,
        ticket=tmp_path / "fashion.json",
        verbose=False,
    )
    metrics = job.wait(progress=False)
    assert "train_loss" in metrics
    assert job.class_names == [str(c) for c in range(10)]

    test_images, test_labels = read_idx(
        FASHION_DIR / "t10k-images-idx3-ubyte.gz", FASHION_DIR / "t10k-labels-idx1-ubyte.gz", 100
    )
    answers = job.predict(test_images)
    # Labels given as integers come back as integers, the k best classes per example.
    assert answers.shape == (100, 3) and answers.dtype == np.int64
    assert set(answers.ravel()) <= set(range(10))
    assert all(len(set(row)) == 3 for row in answers)
    # Channels first, as (n, 1, 28, 28): the same examples, the same answers.
    assert (job.predict(test_images[:, None]) == answers).all()
    # Each class with its probability: best first, and together at most the whole.
    assert job.scores
    classes, probabilities = job.predict(test_images, scores=True)
    assert (classes == answers).all()
    assert probabilities.shape == (100, 3) and probabilities.dtype == np.float32
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert (np.diff(probabilities, axis=1) <= 0).all()
    assert (probabilities.sum(axis=1) <= 1 + 1e-5).all()
    assert probabilities[:, 0].min() >= 1 / 10 - 1e-6, "the best of ten classes"
    report = job.evaluate(test_images, test_labels)
    assert report["examples"] == 100 and report["top_k"] == 3
    assert report.accuracy == pytest.approx(float((answers[:, 0] == test_labels).mean()))
    top3 = float((answers == test_labels[:, None]).any(axis=1).mean())
    assert report["top_k_accuracy"] == pytest.approx(top3)
    assert report.accuracy > 0.3, str(report)

    # Inputs of the wrong shape are refused before any query: the host relays no frame.
    queries, evidence = service.frames("host->enclave Query"), service.frames("GetEvidence")
    wrong_shapes = (
        test_images[:, :14, :],
        test_images.reshape(100, 784),
        test_images[:, None, :, :14],
    )
    for wrong in wrong_shapes:
        with pytest.raises(chiron.InputError, match="no query was sent"):
            job.predict(wrong)
        with pytest.raises(chiron.InputError, match="no query was sent"):
            job.evaluate(wrong, test_labels)
    with pytest.raises(chiron.InputError, match="holds 100 images but labels holds 99"):
        job.evaluate(test_images, test_labels[:99])
    with pytest.raises(chiron.InputError, match="not one of the model's classes"):
        job.evaluate(test_images, np.full(100, 11))
    assert service.frames("host->enclave Query") == queries
    assert service.frames("GetEvidence") == evidence


def test_a_wrong_trust_policy_fails_attestation_and_releases_nothing(
    service: Service, tmp_path: Path
) -> None:
    df = pd.read_csv(IRIS_CSV)
    x, y = df.drop(columns="species"), df["species"]
    host = service.host()
    key = (service.state / "sim-platform.key.pub").read_text().strip()
    measurement = chiron.measure(BIN / "chiron-enclave")
    starts = service.frames("host->enclave StartTraining")
    before = service.stored_datasets()
    cases = [
        # Another runtime build than the one running.
        (chiron.Trust(dangerous_sim_platform=key, sim_measurement="42" * 32), "measurement"),
        # A platform key that is not this host's: evidence it cannot have signed.
        (chiron.Trust(dangerous_sim_platform="07" * 32, sim_measurement=measurement), "platform"),
        # Hardware only: the simulated platform is refused.
        (chiron.Trust(snp_measurement="00" * 48), "insecure"),
    ]
    for i, (trust, words) in enumerate(cases):
        ticket = tmp_path / f"wrong-{i}.json"
        with pytest.raises(chiron.AttestationError, match=words) as caught:
            chiron.train(
                host, service.program_id, x, y, trust=trust, live=True, ticket=ticket,
                verbose=False,
            )
        assert "nothing was sent" in str(caught.value)
        # The data key never left: the job waits for it, no ticket was written, and the host
        # never relayed a training request to any enclave. Nor did the data: the job was
        # created on an upload still empty, and the enclave attested before any part is sent.
        assert host.job_status(caught.value.job_id)["state"] == "created"
        assert not ticket.exists()
    assert service.frames("host->enclave StartTraining") == starts
    assert service.stored_datasets() == before

    # A policy that accepts no enclave at all is refused before anything happens.
    with pytest.raises(chiron.InputError, match="no enclave would be accepted"):
        chiron.Trust(policy="# nothing pinned\n")
    with pytest.raises(chiron.InputError, match="policy line 2"):
        chiron.Trust(policy="\nsgx-mrenclave not-hex\n")


def test_an_existing_ticket_is_refused_before_anything_is_uploaded(
    service: Service, tmp_path: Path
) -> None:
    df = pd.read_csv(IRIS_CSV)
    ticket = tmp_path / "precious.json"
    ticket.write_text("the query token of an earlier job")
    before = service.stored_datasets()
    with pytest.raises(chiron.TicketError, match="already holds a job's ticket"):
        chiron.train(
            service.host(), service.program_id, df.drop(columns="species"), df["species"],
            trust=service.trust(), live=True, ticket=ticket,
        )
    assert ticket.read_text() == "the query token of an earlier job"
    assert service.stored_datasets() == before


def test_a_bad_token_gives_the_host_error(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHIRON_TOKEN", raising=False)
    df = pd.read_csv(IRIS_CSV)
    before = service.stored_datasets()
    for host in (chiron.Host(service.url, token="chiron_not-a-token"), chiron.Host(service.url)):
        with pytest.raises(chiron.HostError) as caught:
            chiron.train(
                host, service.program_id, df.drop(columns="species"), df["species"],
                trust=service.trust(), live=True, ticket=tmp_path / "t.json",
            )
        assert caught.value.status == 401, caught.value
        assert isinstance(caught.value, chiron.ChironError)
    assert service.stored_datasets() == before
    assert not (tmp_path / "t.json").exists()
    # No host there at all: the same class, without a status.
    with pytest.raises(chiron.HostError) as caught:
        chiron.Host("http://127.0.0.1:9", token=service.token).program(service.program_id)
    assert caught.value.status is None


def test_unusable_data_and_terms_are_refused_before_upload(
    service: Service, tmp_path: Path
) -> None:
    df = pd.read_csv(IRIS_CSV)
    x, y = df.drop(columns="species"), df["species"]
    host, trust = service.host(), service.trust()
    before = service.stored_datasets()

    def train(features: object, labels: object, **terms: object) -> None:
        chiron.train(
            host, service.program_id, features, labels, trust=trust, live=True,
            ticket=tmp_path / "t.json", verbose=False, **terms,
        )

    with pytest.raises(chiron.InputError, match="not numeric"):
        train(df, y)
    with pytest.raises(chiron.InputError, match="finite"):
        train(x.assign(sepal_length=np.nan), y)
    with pytest.raises(chiron.InputError, match="at least 2 are needed"):
        train(x, ["setosa"] * 150)
    with pytest.raises(chiron.InputError, match="floats are not class labels"):
        train(x, np.zeros(150))
    with pytest.raises(chiron.InputError, match="150 images but labels holds 149"):
        train(x, y[:149])
    with pytest.raises(chiron.InputError, match="example 3 has no label"):
        train(x, y.where(y.index != 3))
    with pytest.raises(chiron.InputError, match="axes"):
        train(np.zeros(150), y)
    with pytest.raises(chiron.InputError, match="validation fraction"):
        train(x, y, valid_fraction=0.7)
    with pytest.raises(chiron.TermsRefused, match="query_budget=") as caught:
        train(x, y, query_budget=10**12)
    assert "nothing was uploaded" in str(caught.value)
    with pytest.raises(chiron.TermsRefused, match="top_k"):
        train(x, y, top_k=11)
    assert service.stored_datasets() == before
    assert not (tmp_path / "t.json").exists()


def test_trust_takes_the_clis_keyword_forms(service: Service) -> None:
    measurement = subprocess.run(
        [str(BIN / "chiron"), "measure", str(BIN / "chiron-enclave")],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert chiron.measure(BIN / "chiron-enclave") == measurement
    by_keywords = chiron.Trust(
        dangerous_sim_platform=str(service.state / "sim-platform.key.pub"),
        sim_measurement=[measurement],
    )
    # The same rule the policy file holds.
    assert by_keywords.spec.strip() == service.policy_text.splitlines()[-1]
    with pytest.raises(chiron.InputError, match="bad value"):
        chiron.Trust(sgx_mrenclave="ab cd")
    with pytest.raises(chiron.InputError, match="sim_measurement"):
        chiron.Trust(dangerous_sim_platform="07" * 32)


def test_a_private_job_counts_down_then_says_it_was_cut_short(
    service: Service,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Without tqdm, progress is plain lines on stderr.
    monkeypatch.setattr(chiron._progress, "_tqdm", lambda: None)
    images, labels = read_idx(
        FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz", 1000
    )
    # Private (the default): the platform sees a 4 s job whatever happens in it; far more
    # epochs than fit, so the model kept is the program's last save.
    job = chiron.train(
        service.host(), service.program_id, images, labels, trust=service.trust(),
        epochs=1000, time_budget=4, ticket=tmp_path / "private.json", verbose=False,
    )
    metrics = job.wait(poll_interval=0.2)
    shown = capsys.readouterr().err
    assert "private: progress is released with the results in 0:0" in shown, shown
    assert "epoch 1/1000: train_loss = " in shown, shown
    assert "the time budget ran out before the program finished" in shown, shown
    assert "training finished: a model of" in shown, shown
    assert 0 < len([p for p in job.history if p["name"] == "train_loss"]) < 1000
    assert "train_loss" in metrics
    # Its model answers, each query after the private answer time.
    assert job.predict(images[:20]).shape == (20,)
