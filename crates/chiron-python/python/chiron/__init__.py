"""Chiron for data owners: train a provider's model on your data inside an attested enclave,
without the provider seeing the data, then query the model black-box.

>>> import chiron, pandas as pd
>>> host = chiron.Host("http://127.0.0.1:7700", token=OWNER_TOKEN)
>>> trust = chiron.Trust(policy=open("owner-policy.txt").read())
>>> df = pd.read_csv("iris.csv")
>>> job = chiron.train(host, program_id, df.drop(columns="species"), df["species"],
...                    trust=trust, epochs=60, valid_fraction=0.2, ticket="iris-job.json")
>>> job.wait()
>>> job.predict(df.drop(columns="species"))
>>> print(job.evaluate(df.drop(columns="species"), df["species"]))
>>> job = chiron.Job.load("iris-job.json", host, trust)

Everything that matters is the Rust client's (`chiron_client`), as the ``chiron`` CLI runs
it: attestation, encryption, sealing, event authentication, queries, data conversion and
the ticket files, which the CLI and this package read alike. Every error is a
`ChironError`.
"""

from __future__ import annotations

from ._job import Evaluation, Job, LIVE_WARNING, LiveModeWarning, train
from ._native import (
    AttestationError,
    ChironError,
    Host,
    HostError,
    InputError,
    TamperingError,
    TermsRefused,
    TicketError,
    TrainingFailed,
    Trust,
    measure,
)

__all__ = [
    "AttestationError",
    "ChironError",
    "Evaluation",
    "Host",
    "HostError",
    "InputError",
    "Job",
    "LIVE_WARNING",
    "LiveModeWarning",
    "TamperingError",
    "TermsRefused",
    "TicketError",
    "TrainingFailed",
    "Trust",
    "measure",
    "train",
]
