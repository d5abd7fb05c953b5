"""Detect on one log file: read, validate, train on the first part of its time span, rank the rest.

The protocol (``anomaly-pipeline detect``, ``benchmarks/bench_darpa.py``, ``benchmarks/bench_zeek.py``):

1. read the file with its format adapter (``sources.formats.iter_events``; ``fmt="auto"`` sniffs),
   validate every chunk with Great Expectations (``validation.validate_events``) and count what
   is quarantined, with the most frequent reasons. The time bounds accept old data sets
   (``DEFAULT_TS_MIN`` = 1990-01-01, so DARPA 1998 passes);
2. cut the time span into hourly buckets (``graph.build_graph_windows``): the first
   ``0.8 * F`` of the buckets train the hybrid model, the next ``0.2 * F`` early-stop it
   (``F`` = ``train_fraction``), so nothing after the first ``F`` of the span is seen in training;
3. train ``detectors.HybridDetector`` with its default settings (no tuning per data set),
   reporting every epoch;
4. score every event after the first ``F`` (the test split) and rank it: rank 1 is the most
   anomalous; ``calibrated_tail`` is the share of validation events that scored at least as
   high (1 = ordinary, near 0 = rarer than anything in validation);
5. explain the top ``explain_top`` events with the model's own reasons (``explain.explain_events``);
6. with labels in the input, ROC-AUC and average precision over the scored events that carry
   a label (undefined, and said so, when only one class is there).

Events the graph cannot place (no source or no destination, ``meta['events_without_edge']``)
are not scored; their count is reported.

Chunked validation: each chunk the adapter yields (500,000 rows by default) is validated on its
own, which bounds memory on multi-million-line inputs; the order-tolerance check therefore
restarts at each chunk boundary. Event ids repeated across chunks are dropped after the last
chunk (kept once, the repeats quarantined as duplicates), as within a chunk.

A compressed input that ends early (truncated gzip, corrupt zip member) is refused after
reading: the lines before the break are read and counted, the break is quarantined, and
``detect_file`` raises ``DetectError`` saying where the file broke (``anomaly-pipeline detect``
exits with status 2): a model trained on part of a file without anyone noticing is worse than
no model.

This module also holds the catalogue of the public data sets the benchmarks use
(``KNOWN_DATASETS``), where they are looked for locally (``dataset_search_dirs``) and how they
are downloaded (``download_dataset``), for ``anomaly-pipeline datasets``.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import hashlib
import math
import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from anomaly_pipeline import schema, settings
from anomaly_pipeline.csv_writer import write_csv
from anomaly_pipeline.defaults import DEFAULT_EXPLAIN_TOP, DEFAULT_TS_MIN
from anomaly_pipeline.sources.formats import FORMATS, detect_format, iter_events

if TYPE_CHECKING:
    from anomaly_pipeline.validation import ValidationPolicy

MIN_EVENTS = 20  # fewer valid events than this cannot be split into train / validation / test
TOP_REASONS = 5
OUTPUT_COLUMNS: tuple[str, ...] = (
    "rank",
    "score",
    "calibrated_tail",
    "raw_ref",
    "ts",
    "event_type",
    "user",
    "src_host",
    "dst_host",
    "dst_port",
    "label",
    "label_detail",
    "reasons",
)
LABEL_COLUMNS = ("label", "label_detail")
UNDEFINED_ONE_CLASS = "undefined: one class only in the scored part"

Log = Callable[[str], None]


class DetectError(ValueError):
    """The input cannot go through the detect protocol; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------------------------


@dataclass
class ValidatedInput:
    """The valid events of a file and what was quarantined, over all its chunks."""

    path: Path
    fmt: str
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    rows_read: int
    reason_counts: dict[str, int]
    truncated: bool = False  # max_rows stopped reading before the end of the file
    rows_duplicate: int = 0

    @property
    def rows_valid(self) -> int:
        return len(self.valid)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)

    @property
    def input_break(self) -> str | None:
        """``raw_ref: reason`` of the row that quarantines a break in a compressed input, or None."""
        from anomaly_pipeline.sources.files import TRUNCATED_CATEGORY

        reasons = self.quarantined["reason"].astype("string")
        hit = reasons.str.startswith(TRUNCATED_CATEGORY).fillna(False).to_numpy()
        if not hit.any():
            return None
        row = self.quarantined.iloc[int(np.flatnonzero(hit)[0])]
        return f"{row['raw_ref']}: {row['reason']}"

    def quarantine_line(self, top: int = TOP_REASONS) -> str:
        """``"10 of 4,554,344 lines quarantined (0.00%); top reasons: ..."``."""
        rate = self.rows_quarantined / self.rows_read if self.rows_read else 0.0
        text = f"{self.rows_quarantined:,} of {self.rows_read:,} lines quarantined ({100 * rate:.2f}%)"
        if self.reason_counts:
            reasons = "; ".join(f"{reason}: {count:,}" for reason, count in list(self.reason_counts.items())[:top])
            text += f"; top reasons: {reasons}"
        return text


def read_validated(
    path: str | Path,
    fmt: str = "auto",
    *,
    policy: ValidationPolicy | None = None,
    max_rows: int | None = None,
    chunk_rows: int | None = None,
    compact: bool = False,
    **reader_kwargs: Any,
) -> ValidatedInput:
    """Read ``path`` with the ``fmt`` adapter and validate it chunk by chunk.

    Args:
        path: the input file.
        fmt: a name in ``FORMATS`` or ``"auto"``.
        policy: validation bounds; default ``ts_min`` = ``DEFAULT_TS_MIN``.
        max_rows: stop after this many input rows (lines), for quick runs.
        chunk_rows: rows per chunk for the adapter (its default when None).
        compact: hold the valid events in compact columns (``compact_events``) as soon as each
            chunk is validated, so the peak is the compact table plus one chunk.

    Raises:
        FileNotFoundError, DetectError (unknown format, format not detectable).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if fmt != "auto" and fmt not in FORMATS:
        raise DetectError(f"unknown format {fmt!r}; choose one of {', '.join(sorted(FORMATS))} or 'auto'")
    if fmt == "auto":
        try:
            fmt = detect_format(path, member=reader_kwargs.get("member"))
        except ValueError as exc:  # FormatDetectionError
            raise DetectError(f"{exc} (--format one of {', '.join(sorted(FORMATS))})") from exc
    from anomaly_pipeline.validation import (  # Great Expectations: slow import
        ValidationPolicy,
        validate_events,
    )

    policy = policy if policy is not None else ValidationPolicy(ts_min=pd.Timestamp(DEFAULT_TS_MIN, tz="UTC"))
    if chunk_rows is not None:
        reader_kwargs["chunk_rows"] = chunk_rows
    if max_rows is not None and "chunk_rows" not in reader_kwargs:
        reader_kwargs["chunk_rows"] = max(1, min(max_rows, 500_000))
    valid, quarantined = [], []
    reasons: Counter[str] = Counter()
    rows_read = 0
    truncated = False
    chunks: Iterator[pd.DataFrame] = iter_events(path, fmt, **reader_kwargs)
    if compact:
        # What exists now (the libraries' objects) is left out of the per-chunk collections, so
        # each one looks at the chunk's objects only (0.3 s each otherwise); back after reading.
        gc.freeze()
    try:
        for chunk in chunks:
            if max_rows is not None and rows_read + len(chunk) >= max_rows:
                truncated = rows_read + len(chunk) > max_rows or next(chunks, None) is not None
                chunk = chunk.iloc[: max_rows - rows_read]
            result = validate_events(chunk, policy)
            del chunk
            rows_read += result.rows_read
            valid.append(compact_events(result.valid) if compact else result.valid)
            quarantined.append(result.quarantined)
            reasons.update(result.reason_counts)
            del result
            if compact:
                release_memory()
            if max_rows is not None and rows_read >= max_rows:
                break
    finally:
        if compact:
            gc.unfreeze()
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    all_valid = _concat_compact(valid) if compact else _concat(valid, schema.empty_events())
    del valid
    all_quarantined = _concat(quarantined, schema.empty_quarantine())
    all_valid, repeats = _drop_repeated_ids(all_valid)
    if len(repeats):
        all_quarantined = pd.concat([all_quarantined, repeats], ignore_index=True)
        reasons["duplicate: event_id"] += len(repeats)
    return ValidatedInput(
        path=path,
        fmt=fmt,
        valid=all_valid,
        quarantined=all_quarantined,
        rows_read=rows_read,
        reason_counts=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        truncated=truncated,
        rows_duplicate=int(reasons.get("duplicate: event_id", 0)),
    )


# Text columns with few distinct values (names, types): categorical, one code per row.
CATEGORICAL_TEXT = ("event_type", "user", "src_host", "dst_host", "process", "protocol", "auth_type", "logon_type",
                    "label_detail", "source")
# Text columns with a distinct value per row: Arrow strings (one buffer, no Python object per row).
ROW_TEXT = ("event_id", "raw_ref")


def compact_events(events: pd.DataFrame) -> pd.DataFrame:
    """``events`` with the same values in compact columns: ``CATEGORICAL_TEXT`` categorical,
    ``ROW_TEXT`` Arrow-backed strings, the rest as they are.

    Why: Python string objects cost about 100 bytes a row per text column; DARPA's 4.5 M events
    took 4 GB that way. Everything downstream (graph windows, the detect table, the CSV writer)
    reads these columns through ``astype("string")`` or by value, so the results do not change."""
    columns = {}
    for name in events.columns:
        column = events[name]
        if name in CATEGORICAL_TEXT:
            column = column.astype("category")
        elif name in ROW_TEXT:
            column = column.astype("string[pyarrow]")
        columns[name] = column
    return pd.DataFrame(columns, index=events.index)


def release_memory(collect: bool = True) -> None:
    """Hand memory freed since the last call back to the system: Arrow's pool keeps freed blocks
    and glibc keeps freed heap pages. Why: a chunk's Python strings and Arrow buffers are garbage
    once compacted, but held on to they were 1.2 GB of DARPA's resident memory before the graph
    build added its own peak on top (on another libc, only Arrow's pool is released). Reference
    cycles (validation results, data frames) are collected first (``collect``; a full collection
    takes 0.3 s once the libraries are loaded), so their memory goes too."""
    if collect:
        gc.collect()
    pa.default_memory_pool().release_unused()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# glibc's mallopt parameter: blocks of at least this size are mapped on their own (mmap).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 16 << 20
# Free memory glibc may keep at the top of its heap instead of handing it back on every free.
HEAP_KEEP_BYTES = 64 << 20


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Have glibc map every block of ``threshold`` bytes or more on its own, so that it goes back
    to the system the moment it is freed; True when set (glibc only).

    Why: glibc raises its mapping threshold to the largest block freed so far (up to 32 MB), so
    the per-event arrays of a few million events (16 to 36 MB each, made and freed by the hundred
    while windows are built, a model trains and events are scored) come from the heap, where freed
    blocks are kept and fragment it. On DARPA's 4.5 M events (``detect``, alone on 2 cores):
    peak RSS 3.6 GB and 63 s without it, 3.1 GB and 66 s at 16 MB, 3.3 GB and 75 s at 4 MB (a
    fresh mapping per batch-sized block slows training and scoring).

    Setting the threshold also freezes glibc's trim threshold at its 128 kB default, so the heap's
    top was handed back and faulted in again with nearly every batch: scoring DARPA's test window
    took 0.8-1.9 s of system time in 0.4-1 M page faults. The heap keeps up to ``HEAP_KEEP_BYTES``
    free at its top instead (what glibc's own dynamic threshold would allow); ``release_memory``
    still trims it at the end of each phase. Scoring: 5.6 s -> 4.7 s on a first call, 4.4 -> 4.1 s
    on later ones."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))


@functools.cache
def _libc():
    """glibc (``malloc_trim``, ``mallopt``), loaded once; None on another libc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (both must exist)
    except (OSError, AttributeError):
        return None
    return libc


def _concat_compact(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``compact_events`` chunks as one table; categoricals keep the union of their categories (a
    plain ``pd.concat`` turns categoricals with different categories into Python objects)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return compact_events(schema.empty_events())
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    columns = {}
    for name in frames[0].columns:
        parts = [f[name] for f in frames]
        if isinstance(parts[0].dtype, pd.CategoricalDtype):
            columns[name] = pd.Series(pd.api.types.union_categoricals(parts, ignore_order=True), name=name)
        else:
            columns[name] = pd.concat(parts, ignore_index=True)
        for f in frames:  # each chunk's column is dropped as soon as it is copied
            del f[name]
    return pd.DataFrame(columns)


ID_HASH_PIECE = 500_000


def _repeated(ids: pd.Series) -> np.ndarray:
    """Per row, True where a row before it has the same id (missing ids never repeat).

    A 64-bit hash per id, hashed ``ID_HASH_PIECE`` ids at a time, then sorted: only rows whose
    hash some other row shares are compared by value. Factorising the ids instead built a table of
    every distinct id, 0.9 GB on DARPA's 4.5 M events, and took twice as long."""
    hashes = np.concatenate([
        pd.util.hash_array(ids.iloc[lo:lo + ID_HASH_PIECE].to_numpy(dtype=object, na_value=""), categorize=False)
        for lo in range(0, len(ids), ID_HASH_PIECE)
    ] or [np.zeros(0, np.uint64)])
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    del hashes
    shared = np.flatnonzero(ordered[1:] == ordered[:-1])
    repeat = np.zeros(len(ids), dtype=bool)
    if len(shared):
        rows = np.unique(order[np.concatenate([shared, shared + 1])])  # in file order
        values = ids.iloc[rows]
        repeat[rows] = (values.duplicated(keep="first") & values.notna()).to_numpy()
    return repeat


def _drop_repeated_ids(valid: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid events without ids an earlier chunk already had, and quarantine rows for the repeats."""
    repeat = _repeated(valid["event_id"])
    if not repeat.any():
        return valid, schema.empty_quarantine()
    first_ref = valid.drop_duplicates("event_id").set_index("event_id")["raw_ref"]
    rows = valid[repeat]
    quarantine = pd.DataFrame(
        {
            "raw_ref": rows["raw_ref"].to_numpy(),
            "source": rows["source"].to_numpy(),
            "stage": "duplicate",
            "reason": [
                f"duplicate event_id: {event_id!r} was already read at {first_ref.get(event_id)}; "
                "this repeat is dropped and the first one kept"
                for event_id in rows["event_id"].tolist()
            ],
            "raw_excerpt": pd.NA,
            "event_id": rows["event_id"].to_numpy(),
        },
        columns=list(schema.QUARANTINE_COLUMNS),
    ).astype("string")
    return valid[~repeat].reset_index(drop=True), quarantine


def _concat(frames: list[pd.DataFrame], empty: pd.DataFrame | None) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty if empty is not None else pd.DataFrame()
    return frames[0].reset_index(drop=True) if len(frames) == 1 else pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


# The event columns the detect table shows, and those besides them the explanations read.
TABLE_EVENT_COLUMNS = ("raw_ref", "ts", "event_type", "user", "src_host", "dst_host", "dst_port", "label",
                       "label_detail")
# ``raw_ref`` is "<file>:<line>" for every reader; ``_split_refs`` keeps it as these two columns.
_REF_FILE, _REF_LINE = "_raw_ref_file", "_raw_ref_line"
DETECT_EVENT_COLUMNS = (*TABLE_EVENT_COLUMNS, "protocol", _REF_FILE, _REF_LINE)


def _split_refs(events: pd.DataFrame) -> bool:
    """Replace ``raw_ref`` in place by ``_raw_ref_file`` (categorical) and ``_raw_ref_line``
    (int64) when every reference is ``<file>:<line>`` with one file (True), else leave it (False).

    Why: the text is 50 bytes an event (229 MB of DARPA's kept columns) and only the table, built
    last, shows it; ``_joined_refs`` gives the same strings back for the rows it needs. A line
    number without leading zeros makes the round trip exact. Read off the Arrow buffers (0.9 s on
    DARPA; a regular expression over the strings took 2.9 s)."""
    if "raw_ref" not in events.columns or not len(events):
        return False
    refs = events["raw_ref"]
    text = refs.array.__arrow_array__() if isinstance(refs.dtype, pd.StringDtype) and refs.dtype.storage == "pyarrow" \
        else pa.chunked_array([pa.array(refs.astype("string").to_numpy(dtype=object, na_value=None), pa.string())])
    if text.null_count:
        return False
    file_name: bytes | None = None
    lines = []
    for chunk in text.chunks:
        if len(chunk) == 0:
            continue
        split = _file_and_line(chunk, file_name)
        if split is None:
            return False
        file_name, chunk_lines = split
        lines.append(chunk_lines)
    events[_REF_FILE] = pd.Categorical.from_codes(np.zeros(len(events), np.int8), [file_name.decode()])
    events[_REF_LINE] = np.concatenate(lines)
    del events["raw_ref"]
    return True


def _file_and_line(chunk: pa.Array, file_name: bytes | None) -> tuple[bytes, np.ndarray] | None:
    """The file every ``<file>:<line>`` of ``chunk`` (not empty) names (``file_name`` when given)
    and the line numbers, from the string buffers; None when a reference has another shape."""
    if pa.types.is_large_string(chunk.type):
        offset_type = np.int64
    elif pa.types.is_string(chunk.type):
        offset_type = np.int32
    else:
        return None
    n = len(chunk)
    _, offsets_buf, data_buf = chunk.buffers()
    offsets = np.frombuffer(offsets_buf, offset_type)[chunk.offset: chunk.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    colons = np.flatnonzero(data[offsets[0]:offsets[-1]] == ord(":")) + offsets[0]
    last = np.searchsorted(colons, ends) - 1  # each reference's last colon
    if (last < 0).any():
        return None
    colon = colons[last]
    width = ends - colon - 1  # digits after it
    if (colon < starts).any() or (width < 1).any() or (width > 18).any():
        return None
    # One file: every prefix is the first reference's.
    prefix_len = int(colon[0] - starts[0])
    name = data[starts[0]:colon[0]].tobytes()
    if (file_name is not None and name != file_name) or ((colon - starts) != prefix_len).any():
        return None
    for j, byte in enumerate(name):  # byte by byte: no [n, prefix] index array
        if (data[starts + j] != byte).any():
            return None
    line = np.zeros(n, np.int64)
    for j in range(int(width.max())):
        has = width > j
        digit = data[np.where(has, colon + 1 + j, colon)].astype(np.int64) - ord("0")
        if ((digit < 0) | (digit > 9))[has].any():
            return None
        line = np.where(has, line * 10 + digit, line)
    if ((data[colon + 1] == ord("0")) & (width > 1)).any():  # a leading zero would not round-trip
        return None
    return name, line


def _joined_refs(files: pd.Series, lines: pd.Series) -> pd.Series:
    """``<file>:<line>`` of ``_split_refs``' columns, as Arrow strings (index reset)."""
    codes = files.cat.codes.to_numpy().astype(np.int32)
    names = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(list(files.cat.categories), pa.string()))
    text = pc.binary_join_element_wise(pc.cast(names, pa.string()), pc.cast(pa.array(lines.to_numpy()), pa.string()),
                                       ":")
    return pd.Series(pd.arrays.ArrowStringArray(text))



@dataclass
class DetectResult:
    """What ``detect_file`` did and found.

    Attributes:
        table: one row per scored event, ``OUTPUT_COLUMNS`` (label columns only with labels),
            sorted by rank.
        input: what was read; once the windows are built its ``valid`` table keeps only the
            ``label`` column and ``windows.events`` only ``DETECT_EVENT_COLUMNS`` (the other
            columns are about 100 bytes an event that nothing after the build reads).
        metrics: ``roc_auc`` / ``average_precision`` (None when undefined), ``metrics_note``,
            counts of scored, labelled, attack and benign events.
        timings: seconds per stage and ``score_events_per_s``.
    """

    table: pd.DataFrame
    input: ValidatedInput
    windows: Any  # GraphWindows; None when detect_file ran with keep_windows=False
    detector: Any  # HybridDetector
    has_labels: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    history: list[Any] = field(default_factory=list)


def window_config_for(train_fraction: float):  # -> WindowConfig
    """Train on the first ``0.8 F``, early-stop on the next ``0.2 F`` of the time span."""
    from anomaly_pipeline.graph import WindowConfig

    if not 0 < train_fraction < 1:
        raise DetectError(f"--train-fraction must lie strictly between 0 and 1, got {train_fraction}")
    return WindowConfig(train_fraction=0.8 * train_fraction, validation_fraction=0.2 * train_fraction)


def build_windows(valid: pd.DataFrame, train_fraction: float, log: Log = print):
    """Graph windows with the detect split; DetectError when a split would be empty."""
    from anomaly_pipeline.graph import build_graph_windows

    config = window_config_for(train_fraction)
    if len(valid) < MIN_EVENTS:
        raise DetectError(
            f"only {len(valid)} valid events: at least {MIN_EVENTS} are needed to train on the first "
            f"{train_fraction:.0%} of the time span and score the rest; give a longer log"
        )
    windows = build_graph_windows(valid, config)
    counts = {name: len(windows.split_index(name)) for name in ("train", "validation", "test")}
    span_h = (valid["ts"].max() - valid["ts"].min()).total_seconds() / 3600.0
    if min(counts.values()) == 0:
        empty = [name for name, n in counts.items() if n == 0]
        if windows.n_buckets < 3:
            what = "give a log that spans several hours (a day or more is better)"
        elif counts["test"] == 0:
            what = "lower --train-fraction, or give a log that spans more hours"
        else:
            what = "raise --train-fraction, or give a log that spans more hours"
        raise DetectError(
            f"too short a time span to split: the events span {span_h:.1f} h ({windows.n_buckets} hourly "
            f"bucket{'s' if windows.n_buckets != 1 else ''}) and with --train-fraction {train_fraction} the "
            f"{' and '.join(empty)} part{'s hold' if len(empty) > 1 else ' holds'} no events (train "
            f"{counts['train']:,}, validation {counts['validation']:,}, test {counts['test']:,}). Training uses "
            f"the first {0.8 * train_fraction:.0%} of the span's hourly buckets, early stopping the next "
            f"{0.2 * train_fraction:.0%}, scoring the rest: {what}"
        )
    dropped = int(windows.meta.get("events_without_edge", 0))
    log(
        f"windows: {windows.n_buckets} hourly buckets over {span_h:.1f} h; train {counts['train']:,} / "
        f"validation {counts['validation']:,} events (first {train_fraction:.0%} of the span), "
        f"scoring {counts['test']:,} events after it"
        + (f"; {dropped:,} events without a source or destination cannot be scored" if dropped else "")
    )
    return windows


def label_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """ROC-AUC and AP over the events with a label; None and a note when undefined."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=float)
    known = ~np.isnan(labels)
    y, s = labels[known].astype(int), np.asarray(scores, dtype=float)[known]
    s = np.where(np.isfinite(s), s, np.nanmin(s[np.isfinite(s)]) if np.isfinite(s).any() else 0.0)
    out: dict[str, Any] = {
        "scored": int(len(labels)),
        "labelled": int(known.sum()),
        "attack": int((y == 1).sum()),
        "benign": int((y == 0).sum()),
        "roc_auc": None,
        "average_precision": None,
        "metrics_note": "",
    }
    if out["labelled"] == 0:
        out["metrics_note"] = "undefined: no labelled events in the scored part"
    elif out["attack"] == 0 or out["benign"] == 0:
        out["metrics_note"] = f"{UNDEFINED_ONE_CLASS} ({out['attack']:,} attack, {out['benign']:,} benign)"
    else:
        out["roc_auc"] = float(roc_auc_score(y, s))
        out["average_precision"] = float(average_precision_score(y, s))
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    if metrics.get("roc_auc") is None:
        return f"ROC-AUC / AP: {metrics['metrics_note']}"
    base_rate = metrics["attack"] / metrics["labelled"]
    text = (
        f"ROC-AUC {metrics['roc_auc']:.4f}, average precision {metrics['average_precision']:.4f} "
        f"(attack share {base_rate:.3f}) over {metrics['labelled']:,} labelled of {metrics['scored']:,} scored events "
        f"({metrics['attack']:,} attack, {metrics['benign']:,} benign)"
    )
    train_share = metrics.get("train_attack_share")
    if metrics["roc_auc"] < 0.5 and train_share is not None and not math.isnan(train_share):
        text += (
            f"\nnote: ROC-AUC below 0.5 means attacks rank as more ordinary than benign events; "
            f"{train_share:.0%} of the labelled training events are attacks, so the self-supervised model "
            "learned them as normal behaviour"
        )
    return text


def format_epoch(stats, total: int) -> str:
    return (
        f"  epoch {stats.epoch}/{total} [{stats.stage} {stats.stage_epoch}] train loss {stats.train_loss:.4f}, "
        f"validation loss {stats.validation_loss:.4f}, validation link AUC {stats.validation_link_auc:.3f} "
        f"({stats.seconds:.1f} s)"
    )


def train_detector(windows, *, epochs_per_stage: int | None = None, seed: int = 0, log: Log = print):
    """``HybridDetector`` with default settings (or ``epochs_per_stage`` per curriculum stage),
    initialised and sampled from ``seed``."""
    from anomaly_pipeline.detectors import HybridDetector
    from anomaly_pipeline.training import TrainConfig

    train_config = TrainConfig(seed=seed)
    if epochs_per_stage is not None:
        train_config = train_config.with_epochs_per_stage(epochs_per_stage)
    total = train_config.epochs
    log(f"training the hybrid model: up to {total} epochs over {len(train_config.stages)} curriculum stages "
        f"(early stopping on validation), device {train_config.resolved_device()}")
    detector = HybridDetector(train_config=train_config, on_epoch=lambda s: log(format_epoch(s, total)))
    return detector.fit(windows)


def detect_file(
    path: str | Path,
    *,
    train_fraction: float,
    fmt: str = "auto",
    explain_top: int = DEFAULT_EXPLAIN_TOP,
    epochs_per_stage: int | None = None,
    seed: int = 0,
    ts_min: str | pd.Timestamp = DEFAULT_TS_MIN,
    max_rows: int | None = None,
    keep_windows: bool = True,
    log: Log = print,
) -> DetectResult:
    """Run the detect protocol (module docstring) on ``path``; see ``DetectResult``. ``seed``: the
    model's seed (the data and the split do not depend on it), so several runs give a seed spread.
    ``keep_windows=False``: the result's ``windows`` is None, and their memory is freed before
    the table is built (the CLI's ``detect``: it writes the table and needs nothing else)."""
    from anomaly_pipeline.explain import explain_events
    from anomaly_pipeline.validation import ValidationPolicy

    window_config_for(train_fraction)  # argument errors before reading anything
    map_large_blocks()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    policy = ValidationPolicy(ts_min=pd.Timestamp(ts_min, tz="UTC") if isinstance(ts_min, str) else ts_min)
    data = read_validated(path, fmt, policy=policy, max_rows=max_rows, compact=True)
    timings["read_validate_s"] = time.perf_counter() - started
    log(f"read {data.rows_read:,} lines of {data.path} as {data.fmt}"
        + (f" (stopped after {max_rows:,})" if data.truncated else "")
        + f": {data.rows_valid:,} valid events")
    log(data.quarantine_line())
    if data.input_break is not None:
        raise DetectError(
            f"{data.path} is incomplete: {data.input_break}. The {data.rows_read - 1:,} lines before the break were "
            "read and validated (counts above), but nothing was trained or scored on a partial file: fetch or "
            "copy it again"
        )
    if data.rows_valid == 0:
        hint = ""
        if any("(ts)" in reason for reason in data.reason_counts):
            hint = (f"; event times outside [{policy.resolve()[0].date()}, now + 1 day] were rejected: if the "
                    "file's times are right (e.g. seconds from 1970 in a relative capture), pass --ts-min")
        raise DetectError(f"no valid events in {data.path}: every line was quarantined (reasons above){hint}")
    # Ids were needed to drop repeats; nothing after reads them (explanations name an event by
    # its raw_ref). Deleted in place: 58 bytes an event on DARPA, before the build's peak.
    del data.valid["event_id"]
    _split_refs(data.valid)  # raw_ref as a file code and a line number until the table is built
    release_memory()  # the chunks' garbage, before the graph build adds its peak

    t = time.perf_counter()
    windows = build_windows(data.valid, train_fraction, log)
    has_labels = bool(windows.events["label"].notna().any()) or bool(data.valid["label"].notna().any())
    # From here on only the table's and the explanations' columns are read: the rest (and the
    # valid table's own references to them) go, 100 bytes an event.
    windows.events = windows.events[[c for c in windows.events.columns if c in DETECT_EVENT_COLUMNS]]
    data.valid = data.valid[["label"]]
    release_memory()  # the graph build's intermediates, before training and scoring add theirs
    timings["windows_s"] = time.perf_counter() - t

    t = time.perf_counter()
    detector = train_detector(windows, epochs_per_stage=epochs_per_stage, seed=seed, log=log)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    idx = windows.split_index("test")
    scores = detector.decision_function(windows, idx)
    release_memory(collect=False)  # scoring makes arrays, not reference cycles
    timings["score_s"] = time.perf_counter() - t
    timings["score_events_per_s"] = len(idx) / timings["score_s"] if timings["score_s"] > 0 else math.inf
    log(f"scored {len(idx):,} events in {timings['score_s']:.1f} s ({timings['score_events_per_s']:,.0f} events/s)")

    # Metrics first: their sorted copies come and go before the table exists.
    if has_labels:
        metrics = label_metrics(windows.labels[idx], scores)
        train_labels = windows.labels[np.concatenate([windows.split_index("train"), windows.split_index("validation")])]
        known = train_labels[~np.isnan(train_labels)]
        metrics["train_attack_share"] = float(known.mean()) if len(known) else float("nan")
    else:
        metrics = {
            "scored": len(idx), "roc_auc": None, "average_precision": None,
            "metrics_note": "no labels in the input: ROC-AUC / AP not computed",
        }
    # Rows in rank order, each column taken once in that order (no copy of the event table, no
    # reordering or column-selecting copy of the table afterwards).
    order = np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf)))
    ranked = idx[order]

    t = time.perf_counter()
    reasons = np.full(len(ranked), "", dtype=object)
    top = min(max(explain_top, 0), len(ranked))
    if top:
        explanations = explain_events(detector.model, windows, ranked[:top])
        reasons[:top] = ["; ".join(e.reasons) for e in explanations]
    timings["explain_s"] = time.perf_counter() - t
    events = windows.events
    if not keep_windows:
        # The model's inputs (event features, rates, snapshots: 0.9 GB on DARPA) go before the
        # table is built; the table needs only the event columns.
        windows = None
        release_memory(collect=False)

    columns: dict[str, Any] = {"rank": np.arange(1, len(ranked) + 1), "score": scores[order],
                               "calibrated_tail": detector.calibrate(scores[order])}
    for column in TABLE_EVENT_COLUMNS:
        if column in LABEL_COLUMNS and not has_labels:
            continue
        if column == "raw_ref" and _REF_FILE in events.columns:
            columns[column] = _joined_refs(events[_REF_FILE].take(ranked), events[_REF_LINE].take(ranked))
            continue
        values = events[column].take(ranked).reset_index(drop=True)
        # Arrow strings stay as they are (no Python string per row); the CSV writer reads them.
        columns[column] = values if column != "raw_ref" or isinstance(values.dtype, pd.StringDtype) \
            else values.astype("string")
    columns["reasons"] = reasons
    table = pd.DataFrame(columns, copy=False)
    del columns
    assert tuple(table.columns) == tuple(c for c in OUTPUT_COLUMNS if has_labels or c not in LABEL_COLUMNS)

    timings["total_s"] = time.perf_counter() - started
    return DetectResult(table, data, windows, detector, has_labels, metrics, timings, list(detector.history))


def write_table(table: pd.DataFrame, out: str | Path) -> Path:
    """The detect table as CSV (``ts`` in ISO 8601 UTC with microseconds, ``...Z``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # What ``to_csv`` writes, vectorised; ``ts`` formatted block by block (its text for millions of
    # rows at once took more memory than the scored table).
    write_csv(table, out, float_format="%.6g", formatters={"ts": _iso_utc})
    return out


def _iso_utc(ts: pd.Series) -> pa.Array:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (as strftime's ``%f``), null where missing, vectorised."""
    us = pd.to_datetime(ts, utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
    text = pa.array(np.datetime_as_string(us, unit="us"), pa.string(), mask=np.isnat(us))
    return pc.binary_join_element_wise(text, "Z", "")


# --------------------------------------------------------------------------------------------
# Known public data sets
# --------------------------------------------------------------------------------------------

DATA_DIR_ENV = "ANOMALY_PIPELINE_DATA_DIR"


@dataclass(frozen=True)
class KnownDataset:
    """A public data set the benchmarks use, as described in its folder's ``SOURCE.md``.

    ``relpath`` is where it lies below a data folder; ``url`` is the file it is downloaded
    from, ``origin`` the page that describes it; ``head_lines`` keeps only that many lines
    (the shared copy is an excerpt); ``sha256`` / ``size`` are those of the shared copy.
    """

    name: str
    relpath: str
    origin: str
    url: str
    description: str
    fmt: str
    size: int | None = None
    sha256: str | None = None
    head_lines: int | None = None


_MIDAS_COMMIT = "8193235187bfd44ff4188721d4be5a913b231edc"
_STRATO_COMMIT = "1c90a3692012ad7ee9c271241965da4e2799f957"
_STRATO_RAW = f"https://github.com/stratosphereips/security-datasets-for-testing/raw/{_STRATO_COMMIT}"
# Size and SHA-256 of the copies in ../shared/datasets (what a download must reproduce).
KNOWN_DATASETS: dict[str, KnownDataset] = {
    d.name: d
    for d in (
        KnownDataset(
            "darpa98",
            "darpa98/darpa_original.zip",
            "https://github.com/Stream-AD/MIDAS (data/DARPA/darpa_original.zip; DARPA 1998 IDS evaluation, MIT LL)",
            f"https://github.com/Stream-AD/MIDAS/raw/{_MIDAS_COMMIT}/data/DARPA/darpa_original.zip",
            "DARPA 1998 edge stream, 4,554,344 edges, labelled",
            "darpa",
            size=3_232_528,
            sha256="1137f89e3f20ae9cccf2ba8cd1e0d8790e4accaaaae17c5cdf101a89937cf47f",
        ),
        KnownDataset(
            "lanl-redteam",
            "lanl/redteam.txt.gz",
            "https://csr.lanl.gov/data/cyber1/ (copy: github.com/mariia-dream/lanl_data)",
            "https://github.com/mariia-dream/lanl_data/raw/ba07354f625f600daec3cd5c7bf532203c4d0678/redteam.txt.gz",
            "LANL red-team label file, 749 lines (the 12 GB auth.txt is not included)",
            "lanl",
            size=4_846,
            sha256="606635837c684ad11e464075ecf97bc5df325ff7d7f64614d2d8c8af18051669",
        ),
        KnownDataset(
            "stratosphere-008-mixed",
            "stratosphere/008-zeek-mixed.conn.log.labeled",
            "https://github.com/stratosphereips/security-datasets-for-testing (008-zeek-mixed)",
            f"{_STRATO_RAW}/008-zeek-mixed/data/conn.log.labeled",
            "Zeek conn.log, 24 h of one Windows host, 5,663 labelled flows",
            "zeek",
            size=895_488,
            sha256="d8ebdbd675c1659b4b283fcd26ad0dad8a2043ed6ca37f9806c11d99f24ba40f",
        ),
        KnownDataset(
            "stratosphere-001-malicious",
            "stratosphere/001-zeek-scenario-malicious.labeled-conn.log",
            "https://github.com/stratosphereips/security-datasets-for-testing (001-zeek-scenario-malicious)",
            f"{_STRATO_RAW}/001-zeek-scenario-malicious/labeled-conn.log",
            "Zeek conn.log, NjRAT infection, first 1,000 lines (992 labelled flows)",
            "zeek",
            size=146_618,
            sha256="0871016451ce1ebf8713bc0b117079c490615290cbff034b735d096b35722e82",
            head_lines=1000,
        ),
    )
}


def repo_shared_datasets() -> Path:
    """``../shared/datasets`` beside the checkout."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def dataset_search_dirs(home: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where data sets are looked for, in order: ``$ANOMALY_PIPELINE_DATA_DIR`` alone when set,
    else ``<state home>/data/datasets`` then ``../shared/datasets`` beside the checkout."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [Path(env).expanduser().resolve()]
    return [settings.state_paths(home).data_dir / "datasets", repo_shared_datasets()]


def download_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where ``download_dataset`` writes: ``$ANOMALY_PIPELINE_DATA_DIR``, else ``<state home>/data/datasets``."""
    return dataset_search_dirs(home)[0]


def unknown_dataset_message(name: str) -> str:
    return f"unknown data set {name!r}; known: {', '.join(KNOWN_DATASETS)} (anomaly-pipeline datasets list)"


def find_dataset(name: str, home: str | os.PathLike[str] | None = None) -> Path | None:
    """The local path of data set ``name`` (first search folder that has it), or None."""
    if name not in KNOWN_DATASETS:
        raise KeyError(unknown_dataset_message(name))
    for folder in dataset_search_dirs(home):
        candidate = folder / KNOWN_DATASETS[name].relpath
        if candidate.is_file():
            return candidate
    return None


def dataset_table(home: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per known data set: name, format, description, origin, url, local path."""
    rows = []
    for name, d in KNOWN_DATASETS.items():
        found = find_dataset(name, home)
        rows.append({"name": name, "format": d.fmt, "description": d.description, "origin": d.origin,
                     "url": d.url, "local": str(found) if found else "not found"})
    return pd.DataFrame(rows)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dataset(
    name: str,
    home: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Download data set ``name`` from its URL into ``download_dir()`` (urllib, streamed).

    Writes to ``<target>.part`` and renames when complete; refuses a Git LFS pointer in place
    of the data; checks the size (and SHA-256 when known) of the shared copy.
    """
    if name not in KNOWN_DATASETS:
        raise KeyError(unknown_dataset_message(name))
    d = KNOWN_DATASETS[name]
    target = download_dir(home) / d.relpath
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    progress = progress or (lambda text: print(text, end="", file=sys.stderr, flush=True))
    request = urllib.request.Request(d.url, headers={"User-Agent": "anomaly-pipeline"})
    got = 0
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            lines = 0
            while True:
                block = response.read(1 << 16)
                if not block:
                    break
                if d.head_lines is not None:
                    keep = _head(block, d.head_lines - lines)
                    lines += keep.count(b"\n")
                    out.write(keep)
                    got += len(block)
                    if lines >= d.head_lines:
                        break
                else:
                    out.write(block)
                    got += len(block)
                rate = got / max(time.perf_counter() - started, 1e-6) / 1e6
                of = f" of {total / 1e6:.1f} MB ({100 * got / total:.0f}%)" if total else " MB"
                progress(f"\r{name}: {got / 1e6:.1f}{of}, {rate:.1f} MB/s ")
        progress("\n")
        with part.open("rb") as handle:
            if handle.read(40).startswith(b"version https://git-lfs"):
                raise RuntimeError(f"{d.url} returned a Git LFS pointer, not the data")
        size = part.stat().st_size
        problem = None
        if d.size is not None and size != d.size:
            problem = f"{size:,} bytes where the known copy has {d.size:,}"
        elif d.sha256 is not None and _sha256(part) != d.sha256:
            problem = "its SHA-256 differs from the known copy's"
        if problem is not None:
            kept = target.with_name(target.name + ".unverified")
            part.replace(kept)
            raise RuntimeError(f"the download from {d.url} has {problem}; kept at {kept} for inspection")
        part.replace(target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return target


def _head(block: bytes, lines_left: int) -> bytes:
    """The start of ``block`` up to and including its ``lines_left``-th newline."""
    if lines_left <= 0:
        return b""
    pos = -1
    for _ in range(lines_left):
        pos = block.find(b"\n", pos + 1)
        if pos < 0:
            return block
    return block[: pos + 1]


__all__ = [
    "DEFAULT_TS_MIN",
    "KNOWN_DATASETS",
    "OUTPUT_COLUMNS",
    "DetectError",
    "DetectResult",
    "KnownDataset",
    "ValidatedInput",
    "build_windows",
    "dataset_search_dirs",
    "dataset_table",
    "detect_file",
    "download_dataset",
    "find_dataset",
    "format_metrics",
    "label_metrics",
    "read_validated",
    "train_detector",
    "window_config_for",
    "write_table",
]
