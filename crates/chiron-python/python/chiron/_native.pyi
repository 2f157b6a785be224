"""Type stubs of the extension module `chiron._native` (Rust, PyO3)."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

_Words = Union[str, Sequence[str]]

class ChironError(Exception): ...
class AttestationError(ChironError):
    job_id: str
class TermsRefused(ChironError): ...
class HostError(ChironError):
    status: Optional[int]
class InputError(ChironError): ...
class TicketError(ChironError): ...
class TrainingFailed(ChironError): ...
class TamperingError(ChironError): ...

class Host:
    def __init__(self, url: Optional[str] = ..., token: Optional[str] = ...) -> None: ...
    @property
    def url(self) -> str: ...
    def register(self, wasm: Union[bytes, str, PathLike[str]]) -> str: ...
    def program(self, program_id: str) -> Dict[str, Any]: ...
    def job_status(self, job_id: str) -> Dict[str, Any]: ...

class Trust:
    def __init__(
        self,
        policy: Optional[str] = ...,
        *,
        sgx_mrenclave: Optional[_Words] = ...,
        sgx_mrsigner: Optional[Tuple[str, int, int]] = ...,
        tdx_mrtd: Optional[_Words] = ...,
        tdx_rtmrs: Optional[str] = ...,
        snp_measurement: Optional[_Words] = ...,
        snp_min_tcb: Optional[str] = ...,
        snp_allow_smt: bool = ...,
        accept_tcb_status: Optional[_Words] = ...,
        accept_advisory: Optional[_Words] = ...,
        endorsements: Optional[_Words] = ...,
        dangerous_sim_platform: Optional[str] = ...,
        sim_measurement: Optional[_Words] = ...,
    ) -> None: ...
    @property
    def spec(self) -> str: ...

class Job:
    @staticmethod
    def load(path: Union[str, PathLike[str]], host: Host, trust: Optional[Trust] = ...) -> Job: ...
    def set_trust(self, trust: Trust) -> None: ...
    @property
    def job_id(self) -> str: ...
    @property
    def ticket(self) -> str: ...
    @property
    def class_names(self) -> List[str]: ...
    @property
    def epochs(self) -> Optional[int]: ...
    @property
    def scores(self) -> bool: ...
    @property
    def seed(self) -> Optional[str]: ...
    @property
    def answer_width(self) -> int: ...
    @property
    def input_shape(self) -> Tuple[str, List[int]]: ...
    @property
    def private_answer_ms(self) -> Optional[int]: ...
    @property
    def notes(self) -> List[str]: ...
    def private_wait_secs(self) -> Optional[int]: ...
    def poll(self) -> Dict[str, Any]: ...
    def history(self) -> List[Dict[str, Any]]: ...
    def write_records(self) -> List[str]: ...
    def predict(
        self,
        features: bytes,
        shape: List[int],
        dtype: str,
        columns: Optional[List[str]] = ...,
        batch: int = ...,
        trust: Optional[Trust] = ...,
    ) -> Tuple[List[str], int, List[float]]: ...
    def evaluate(
        self,
        features: bytes,
        shape: List[int],
        dtype: str,
        columns: Optional[List[str]],
        labels: Union[List[int], List[str]],
        batch: int = ...,
        trust: Optional[Trust] = ...,
    ) -> Tuple[str, str]: ...

def train(
    host: Host,
    program_id: str,
    features: bytes,
    shape: List[int],
    dtype: str,
    columns: Optional[List[str]],
    labels: Union[List[int], List[str]],
    trust: Trust,
    *,
    ticket: str,
    epochs: int = ...,
    valid_fraction: float = ...,
    live: bool = ...,
    time_budget: Optional[int] = ...,
    top_k: Optional[int] = ...,
    scores: bool = ...,
    query_budget: Optional[int] = ...,
    seed: Optional[str] = ...,
    shuffle_seed: int = ...,
    limit: Optional[int] = ...,
    keep_last_save: bool = ...,
    private_memory_mib: Optional[int] = ...,
    private_model_mib: Optional[int] = ...,
    private_answer_ms: Optional[int] = ...,
) -> Job: ...
def measure(path: Union[str, PathLike[str]]) -> str: ...
