"""Untrusted raw inputs → numpy arrays: feature rows, nested-list tensors and .npy bytes, checked item by item.

Every refusal is an InputError naming the row, feature or header field and what was expected; nothing is
allocated from a size the input declares before that size is checked. Imports numpy only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NUMBER_KINDS = "biuf"  # numpy kinds of bool, int, unsigned and float arrays
NPY_MAGIC = b"\x93NUMPY"


class InputError(ValueError):
    """The input does not fit the model's contract (shape, dtype, fields); the message says what was expected."""


def type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def number(value: Any, where: str) -> float:
    """A JSON/CSV value as a float that fits float32; InputError naming `where` otherwise."""
    if not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number, got {type_name(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result) or abs(result) > np.finfo(np.float32).max:
        raise InputError(f"{where}: {str(value)[:40]} is NaN, infinite or beyond the float32 range")
    return result


def feature_table(rows: Any, names: Sequence[str], defaults: Mapping[str, float]) -> np.ndarray:
    """Rows of raw features → float64 table [rows, features]: objects by feature name, or lists in `names` order.

    An object must name every feature that has no entry in `defaults` (the model contract's declared defaults).
    """
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise InputError(f"rows: expected a list of rows, got {type_name(rows)}")
    if len(rows) == 0:
        raise InputError("rows: empty; send at least one row")
    if isinstance(rows[0], Mapping):
        return table_from_objects(rows, names, defaults)
    return table_from_lists(rows, len(names))


def table_from_objects(rows: Sequence[Any], names: Sequence[str], defaults: Mapping[str, float]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    required = [name for name in names if name not in defaults]
    base = np.array([defaults.get(name, 0.0) for name in names], np.float64)
    table = np.empty((len(rows), len(names)), np.float64)
    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InputError(f"rows[{r}]: expected an object like rows[0], got {type_name(row)}")
        unknown = [k for k in row if k not in index]
        if unknown:
            raise InputError(f"rows[{r}]: unknown feature(s) {', '.join(map(repr, unknown[:5]))}; "
                             f"the model knows {len(names)} features, e.g. {', '.join(names[:4])}")
        missing = [name for name in required if name not in row]
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise InputError(f"rows[{r}]: missing {len(missing)} of the model's {len(names)} features: {shown} "
                             "(only features with a default in the model's contract may be left out)")
        table[r] = base
        for key, value in row.items():
            table[r, index[key]] = number(value, f"rows[{r}][{key!r}]")
    return table


def table_from_lists(rows: Sequence[Any], width: int) -> np.ndarray:
    table = numeric_array(rows)
    if table is not None and table.shape == (len(rows), width) and table.dtype.kind in NUMBER_KINDS:
        return checked_float(table, "rows")
    for r, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(f"rows[{r}]: expected a list of {width} numbers (or every row an object of features), "
                             f"got {type_name(row)}")
        if len(row) != width:
            raise InputError(f"rows[{r}]: {len(row)} values, the model takes {width} features (in the order of "
                             "its feature_names)")
    return np.array([[number(v, f"rows[{r}][{c}]") for c, v in enumerate(row)] for r, row in enumerate(rows)])


def numeric_array(nested: Any) -> np.ndarray | None:
    """`nested` as an array when numpy can make a rectangular one of it, else None (no dtype forced: strings stay
    strings and are refused by the caller rather than parsed)."""
    try:
        return np.array(nested)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        return None


def checked_float(table: np.ndarray, where: str) -> np.ndarray:
    """A numeric table as float64, refusing values that are not finite in float32."""
    table = table.astype(np.float64)
    bad = ~(np.abs(table) <= np.finfo(np.float32).max)
    if bad.any():
        position = [int(i) for i in np.argwhere(bad)[0]]
        raise InputError(f"{where}{position}: {table[tuple(position)]} is NaN, infinite or beyond the float32 range")
    return table


def standardize(raw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(raw - mean) / std`` in float32: the tabular scaling as cmsdl computes it outside a graph (the export parity
    check's reference, and the predictor's for models exported before the scaling moved into the graph)."""
    mean32, std32 = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    return ((np.asarray(raw, dtype=np.float32) - mean32) / std32).astype(np.float32)


def tensor_from_json(nested: Any, dtype: str, where: str = "inputs") -> np.ndarray:
    """A nested list of numbers (a model-ready tensor) as an array of `dtype`; integers must fit an integer dtype."""
    array = numeric_array(nested)
    if array is None or array.dtype.kind not in NUMBER_KINDS:
        raise InputError(f"{where}: expected a nested list of numbers (a rectangular tensor)")
    target = np.dtype(dtype)
    if target.kind in "iu":
        info = np.iinfo(target)
        if array.dtype.kind == "f" or (array.size and (array.min() < info.min or array.max() > info.max)):
            raise InputError(f"{where}: the model takes {dtype}; expected integers from {info.min} to {info.max}")
        return array.astype(target)
    if target.kind == "f":
        return checked_float(array, where).astype(target)
    return array.astype(target)


def load_npy(body: bytes) -> np.ndarray:
    """A .npy payload as an array (numbers only, no pickles); its header is checked against the body's length
    before anything is allocated."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"format version {version} (expected 1.0 or 2.0)")
        shape, fortran_order, dtype = read_header[version](stream)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise InputError(f"body: not a .npy array ({reason})") from None
    if dtype.kind not in NUMBER_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"body: .npy dtype {dtype.str!r}; expected a plain numeric dtype such as '<f4'")
    count = math.prod(shape)
    available = len(body) - stream.tell()
    if count * dtype.itemsize != available:
        raise InputError(f"body: .npy header declares shape {list(shape)} ({count * dtype.itemsize} bytes of "
                         f"{dtype.str}) but the body holds {available} bytes of data")
    array = np.frombuffer(body, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)

