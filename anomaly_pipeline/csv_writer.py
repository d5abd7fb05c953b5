"""A CSV writer that writes what ``DataFrame.to_csv(index=False, float_format=...)`` writes, byte for
byte, without formatting every cell in Python.

Why: ``detect`` writes millions of ranked rows; pandas formats each float with ``float_format % x``
in a Python loop and hands every row to the ``csv`` module, which took longer than scoring them.
Here each float column formats only its distinct values (scores repeat a lot in floods, and
``calibrated_tail`` takes at most a few hundred values), every other column becomes Arrow text,
and rows are joined with Arrow compute kernels in blocks of rows (bounded memory).

The rules reproduced (pandas 2 on CPython 3.11, ``csv.QUOTE_MINIMAL``, ``lineterminator``
``os.linesep``): a missing value is an empty cell; a cell is quoted when it holds the delimiter,
a double quote or ``\\n`` (``\\r`` alone is not quoted), quotes inside doubled; integers as
``str(int)``; the header quoted by the same rule. A column of any other kind (booleans, dates,
objects that are not text) makes ``write_csv`` hand the whole table to pandas instead, so the
output is always what ``to_csv`` writes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

BLOCK_ROWS = 250_000
Formatter = Callable[[pd.Series], pa.Array]
_NEEDS_QUOTES = '[,"\n]'


class _Unsupported(TypeError):
    """A column this writer does not format exactly as pandas would."""


def _float_text(values: np.ndarray, float_format: str) -> pa.Array:
    """``float_format % v`` per value (null for NaN), formatting each distinct bit pattern once."""
    values = values.astype(np.float64, copy=False)
    uniques, inverse = np.unique(values.view(np.int64), return_inverse=True)
    text = [None if math.isnan(v) else float_format % v for v in uniques.view(np.float64).tolist()]
    return pa.array(text, pa.string()).take(pa.array(inverse.reshape(-1).astype(np.int32)))


def _column_text(column: pd.Series, float_format: str) -> pa.Array:
    """The cells of ``column`` as Arrow text, null where pandas writes an empty cell."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return _float_text(column.to_numpy(), float_format)
        if dtype.kind in "iu":
            return pa.array(column.to_numpy()).cast(pa.string())
        if dtype.kind == "O":
            try:
                return pa.array(column.to_numpy(), type=pa.string(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise _Unsupported(f"column {column.name!r} holds objects that are not text") from exc
        raise _Unsupported(f"column {column.name!r} has dtype {dtype}")
    if isinstance(dtype, pd.StringDtype):
        return pa.array(column.array, type=pa.string())
    if isinstance(dtype, pd.core.arrays.integer.IntegerDtype):
        return pa.array(column.array).cast(pa.string())
    if isinstance(dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(dtype.categories.dtype):
        categories = pa.array(dtype.categories.to_numpy(), type=pa.string(), from_pandas=True)
        codes = pa.array(column.cat.codes.to_numpy(), mask=column.isna().to_numpy())
        return categories.take(codes)
    raise _Unsupported(f"column {column.name!r} has dtype {dtype}")


def _quoted(text: pa.Array) -> pa.Array:
    """``QUOTE_MINIMAL``: cells with a delimiter, quote or newline quoted, their quotes doubled."""
    needs = pc.fill_null(pc.match_substring_regex(text, _NEEDS_QUOTES), False)
    if not pc.any(needs).as_py():
        return text
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, text)


def _block_bytes(frame: pd.DataFrame, float_format: str, formatters: Mapping[str, Formatter]) -> memoryview:
    """The rows of ``frame`` as CSV lines (no header)."""
    cells = [
        pc.fill_null(_quoted(formatters[name](frame[name]) if name in formatters
                             else _column_text(frame[name], float_format)), "")
        for name in frame.columns
    ]
    lines = pc.binary_join_element_wise(*cells, ",")
    lines = pc.binary_join_element_wise(lines, "", os.linesep)  # each line + the line terminator
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]]


def write_csv(frame: pd.DataFrame, out: str | Path, float_format: str, block_rows: int = BLOCK_ROWS,
              formatters: Mapping[str, Formatter] | None = None) -> None:
    """``frame.to_csv(out, index=False, float_format=float_format)``, byte for byte, vectorised.

    ``formatters``: column name -> function from a block of that column to its Arrow text (null for
    an empty cell), applied block by block, so a column's text never exists for every row at once
    (``write_table`` formats ``ts`` so); the pandas path applies it to the whole column."""
    formatters = dict(formatters or {})
    header = _quoted(pa.array([str(name) for name in frame.columns], pa.string())).to_pylist()
    try:
        with open(out, "wb") as handle:
            handle.write((",".join(header) + os.linesep).encode())
            for lo in range(0, len(frame), block_rows):
                handle.write(_block_bytes(frame.iloc[lo:lo + block_rows], float_format, formatters))
    except _Unsupported:  # rewritten whole by pandas
        frame = frame.assign(**{name: pd.Series(fmt(frame[name]).to_numpy(zero_copy_only=False), index=frame.index,
                                                dtype=object)
                                for name, fmt in formatters.items()})
        frame.to_csv(out, index=False, float_format=float_format, chunksize=200_000)


__all__ = ["write_csv"]
