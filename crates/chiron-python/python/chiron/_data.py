"""The owner's data as the Rust client takes it: C-ordered element bytes with a shape and an
element type, column names for a table, and labels as integers or names.

Only the hand-over is done here; the conversion itself (layout, splits, standardisation,
class names, every check) is `chiron_client::convert::arrays`, the same code as the CLI's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Union

import numpy as np

from ._native import InputError

#: Element types handed over as they are; other numeric types become float64 first.
_PASSED = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Features:
    """A features array ready for the Rust client."""

    data: bytes
    """The elements, C order."""
    shape: List[int]
    """The array's shape: examples first."""
    dtype: str
    """NumPy's name of the element type (``dtype.str``: ``|u1``, ``<f4``, ``<f8``)."""
    columns: Optional[List[str]]
    """A table's column names (a DataFrame's), else None."""


def _is_pandas(obj: Any, kind: str) -> bool:
    cls = type(obj)
    return cls.__module__.split(".")[0] == "pandas" and cls.__name__ == kind


def features_payload(features: Any) -> Features:
    """Turns a NumPy array (a table ``[n, columns]``, images ``[n, H, W]``, ``[n, C, H, W]``
    or ``[n, H, W, C]``) or a pandas DataFrame of numeric columns into bytes, shape, element
    type and column names. ``uint8`` images stay pixels (read ``/ 255`` as IDX pixels are);
    other numeric types are passed as float64 unless they are float32 already."""
    columns: Optional[List[str]] = None
    if _is_pandas(features, "DataFrame"):
        import pandas as pd

        numeric = pd.api.types.is_numeric_dtype
        bad = [str(c) for c, t in features.dtypes.items() if not numeric(t)]
        if bad:
            raise InputError(
                f"features: columns {bad} are not numeric: drop them or encode them as "
                "numbers (the features are numeric columns; the label goes in labels)"
            )
        columns = [str(c) for c in features.columns]
        array = features.to_numpy(dtype=np.float64, na_value=np.nan)
    elif _is_pandas(features, "Series"):
        raise InputError(
            "features: a Series is one column; give a DataFrame (series.to_frame()) or an "
            "array of shape (n, columns)"
        )
    else:
        array = np.asarray(features)
    if array.dtype not in _PASSED:
        if array.dtype.kind in "biuf":
            array = array.astype(np.float64)
        else:
            raise InputError(
                f"features: elements of type {array.dtype} are not numbers: give uint8 "
                "(image pixels), float32 or float64"
            )
    array = np.ascontiguousarray(array)
    return Features(array.tobytes(), [int(d) for d in array.shape], array.dtype.str, columns)


def _label_name(value: Any) -> str:
    """A label's name; an empty one for a missing value (refused by the conversion)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (np.integer, np.bool_)):
        return str(int(value))
    return str(value)


def labels_payload(labels: Any) -> Union[List[int], List[str]]:
    """One label per example from a NumPy array, a list or a pandas Series: integers as
    integers, anything else by name. The classes are then the distinct labels in sorted
    order, numerically when all are integers, as for a CSV file's label column."""
    if _is_pandas(labels, "Series"):
        array = labels.to_numpy()
    elif _is_pandas(labels, "DataFrame"):
        if labels.shape[1] != 1:
            raise InputError("labels: give one column (a Series), not a DataFrame")
        array = labels.iloc[:, 0].to_numpy()
    else:
        array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InputError(
            f"labels: shape {tuple(array.shape)}: give one label per example, shape (n,)"
        )
    kind = array.dtype.kind
    if kind in "iub":
        return [int(v) for v in array.astype(np.int64)]
    if kind == "f":
        raise InputError(
            "labels: floats are not class labels: give integers (y.astype(int)) or names"
        )
    return [_label_name(v) for v in array.tolist()]


def integer_classes(class_names: List[str]) -> bool:
    """Whether every class is named by an integer, as when the labels were integers."""
    try:
        return [str(int(n)) for n in class_names] == class_names
    except ValueError:
        return False


def class_values(answers: List[str], class_names: List[str]) -> np.ndarray:
    """Answered class names as an array: integers when every class of the model is named by
    an integer (labels given as integers come back as integers), else strings."""
    if class_names and integer_classes(class_names):
        return np.array([int(a) for a in answers], dtype=np.int64)
    return np.array(answers, dtype=str)
