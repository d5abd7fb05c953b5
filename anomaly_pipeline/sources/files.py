"""Read canonical event files (CSV or JSON Lines, optionally gzip) into the event contract.

The reader streams the file in binary, one physical line at a time, and emits chunks of at most
``chunk_rows`` rows, so memory stays bounded by the chunk size and ``max_line_bytes`` no matter
how large the file is.

Nothing is silently lost: every physical line after the CSV header (every line of a JSON Lines
file) becomes exactly one output row. A line that cannot be turned into an event keeps its row
with the envelope columns ``parse_error`` (why) and ``raw_excerpt`` (the start of the line) set
and every event field null, so validation can quarantine it with its ``raw_ref``
(``<file name>:<1-based line number>``) and the counts reconcile.

Formats:

* ``csv``: a header line of canonical column names (any subset that contains the required ones,
  in any order), then one record per physical line. Quoted fields are supported, but a quoted
  field may not contain a newline: one physical line is one record.
* ``jsonl``: one JSON object per line with canonical keys (unknown keys are an error, so a
  typo in a field name is visible instead of silently dropping data).

``ts`` may be an ISO-8601 string (naive values are taken as UTC) or epoch seconds; it is
converted to UTC. The file's own ``source`` and ``raw_ref`` values, if any, are replaced: the
provenance of a row read here is this file and line.

Each ``parse_error`` message starts with a stable category followed by ``:`` and the detail
(``"bad number: column bytes_out value 'lots' is not a number"``); several problems in one row
are joined with ``"; "``. Validation counts quarantine reasons by that category.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from anomaly_pipeline import schema

FORMATS: tuple[str, ...] = ("auto", "csv", "jsonl")
EXCERPT_CHARS = 200
_GZIP_MAGIC = b"\x1f\x8b"
_CSV_SUFFIXES = (".csv", ".csv.gz")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")

# Columns the reader fills itself (provenance); the file's values for them are ignored.
_READER_COLUMNS = ("source", "raw_ref")
# Required columns the file must supply (event_id falls back to file:line when absent).
FILE_REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    c for c in schema.REQUIRED_COLUMNS if c not in _READER_COLUMNS and c != "event_id"
)
_INPUT_COLUMNS: tuple[str, ...] = tuple(c for c in schema.EVENT_COLUMNS if c not in _READER_COLUMNS)
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(dtype.lower()).min), int(np.iinfo(dtype.lower()).max))
    for name, dtype in schema.EVENT_DTYPES.items()
    if dtype in ("Int8", "Int16", "Int32", "Int64")
}
_FLOAT_COLUMNS: tuple[str, ...] = tuple(n for n, d in schema.EVENT_DTYPES.items() if d == "Float64")
_BOOL_COLUMNS: tuple[str, ...] = tuple(n for n, d in schema.EVENT_DTYPES.items() if d == "boolean")
_TS_COLUMNS: tuple[str, ...] = tuple(n for n, d in schema.EVENT_DTYPES.items() if d.startswith("datetime64"))
_STRING_COLUMNS: tuple[str, ...] = tuple(n for n, d in schema.EVENT_DTYPES.items() if d == "string")
_BOOL_WORDS: dict[str, bool] = {
    "true": True, "t": True, "yes": True, "y": True, "1": True,
    "false": False, "f": False, "no": False, "n": False, "0": False,
}  # fmt: skip
# Epoch seconds representable as datetime64[ns] (about 1678..2262); beyond that the value is
# almost certainly in milliseconds or garbage, and pandas would overflow.
_MAX_EPOCH_S = 9.2e9
# C0 and C1 control characters (and DEL) are escaped in excerpts so a quarantine table or log
# line never carries raw terminal control sequences or NULs.
_CONTROL_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7F, 0xA0))}


def iter_event_file(
    path: str | Path,
    *,
    fmt: str = "auto",
    chunk_rows: int = 100_000,
    max_line_bytes: int = 1_048_576,
) -> Iterator[pd.DataFrame]:
    """Stream ``path`` as canonical event chunks (``schema.EVENT_COLUMNS`` + envelope columns).

    Args:
        path: the file; gzip is detected by its magic bytes, whatever the name.
        fmt: ``"csv"``, ``"jsonl"`` or ``"auto"`` (by extension, else by the first non-empty
            line: ``{`` means JSON Lines).
        chunk_rows: most rows (physical lines) per yielded chunk.
        max_line_bytes: longest accepted line in bytes, without the line break; a longer line
            becomes a ``parse_error`` row and is skipped without being held in memory.

    Yields:
        DataFrames passed through ``schema.conform`` with ``parse_error`` and ``raw_excerpt``
        kept; nothing is yielded for a header-only or empty file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        schema.SchemaError: the CSV header is missing, unreadable or not canonical, or the
            format cannot be detected.
        ValueError: an argument is out of range.
        OSError: the gzip stream is corrupt or truncated.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
    if not path.is_file():
        raise FileNotFoundError(
            f"event file not found: {path} (resolved: {path.resolve()}); check the path, "
            "or pass a directory's files one by one"
        )
    if fmt == "auto":
        fmt = _detect_format(path, max_line_bytes)
    reader = _CsvChunker if fmt == "csv" else _JsonlChunker
    with _open_binary(path) as handle:
        yield from reader(path, handle, chunk_rows, max_line_bytes).chunks()


def read_event_file(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The whole file as one canonical table (concatenation of ``iter_event_file``'s chunks).

    Keyword arguments are those of ``iter_event_file``. A header-only or empty file gives an
    empty table with the contract's columns and dtypes plus the envelope columns.
    """
    chunks = list(iter_event_file(path, **kwargs))
    if not chunks:
        return empty_raw_events()
    return pd.concat(chunks, ignore_index=True)


def empty_raw_events() -> pd.DataFrame:
    """An empty raw event table: the contract's columns plus the envelope columns."""
    frame = schema.empty_events()
    for env in schema.ENVELOPE_COLUMNS:
        frame[env] = pd.Series(dtype="string")
    return frame


def excerpt(raw: bytes, chars: int = EXCERPT_CHARS) -> str:
    """The first ``chars`` characters of ``raw`` for a human: bad UTF-8 replaced, controls escaped."""
    # 4 bytes is the longest UTF-8 sequence, so this prefix always holds ``chars`` characters.
    text = raw[: chars * 4].decode("utf-8", errors="replace")[:chars]
    return text.translate(_CONTROL_ESCAPES)


# --------------------------------------------------------------------------------------------
# File access and line splitting
# --------------------------------------------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    return path.open("rb")


def _detect_format(path: Path, max_line_bytes: int) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    with _open_binary(path) as handle:
        for line, _overflow in _physical_lines(handle, path, max_line_bytes):
            stripped = line.lstrip()
            if stripped:
                return "jsonl" if stripped.startswith(b"{") else "csv"
    raise schema.SchemaError(
        f"{path}: cannot detect the format of an empty file with an unknown extension; "
        "pass fmt='csv' or fmt='jsonl', or name it .csv / .jsonl"
    )


def _physical_lines(handle: IO[bytes], path: Path, max_line_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yield ``(content, total_length)`` per physical line, line break removed.

    For a line longer than ``max_line_bytes`` only the first ``max_line_bytes + 1`` bytes are
    returned and the rest is read and discarded in bounded pieces; ``total_length`` is the full
    length in bytes (without the line break), so the caller can tell and report it.
    """
    limit = max_line_bytes + 1
    readline = handle.readline
    line_no = 0
    try:
        while True:
            line = readline(limit)
            if not line:
                return
            line_no += 1
            if line.endswith(b"\n"):
                content = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                yield content, len(content)
                continue
            if len(line) < limit:  # last line of the file, without a line break
                yield line, len(line)
                continue
            # Over-long line: skip the remainder without holding it.
            total = len(line)
            while True:
                rest = readline(limit)
                if not rest:
                    break
                if rest.endswith(b"\n"):
                    total += len(rest) - 1
                    break
                total += len(rest)
            yield line, total
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise OSError(
            f"{path}: the file could not be read after line {line_no} ({exc}); "
            "it is probably a truncated or corrupt gzip file - fetch it again"
        ) from exc


# --------------------------------------------------------------------------------------------
# Chunk assembly
# --------------------------------------------------------------------------------------------


class _Chunker:
    """Shared machinery: collect one chunk of lines, then convert it with vectorised pandas."""

    fmt = ""

    def __init__(self, path: Path, handle: IO[bytes], chunk_rows: int, max_line_bytes: int) -> None:
        self.path = path
        self.handle = handle
        self.chunk_rows = chunk_rows
        self.max_line_bytes = max_line_bytes
        self.source = f"file:{self.fmt}"
        self.line_no = 0
        self.lines = self._lines()
        self.columns: tuple[str, ...] = _INPUT_COLUMNS
        self._reset()

    def _reset(self) -> None:
        self.first_line = self.line_no + 1
        # Per row: the split field values (None when the line never got that far), the decoded
        # text (for an excerpt if a later conversion fails), the error and the excerpt.
        self.rows: list[list[Any] | None] = []
        self.texts: list[str | None] = []
        self.errors: list[str | None] = []
        self.excerpts: list[str | None] = []

    def _bad(self, error: str, raw: bytes) -> None:
        self.rows.append(None)
        self.texts.append(None)
        self.errors.append(error)
        self.excerpts.append(excerpt(raw))

    def _decode(self, content: bytes, total: int) -> str | None:
        """Decode one line, or record why it cannot be an event and return None."""
        if total > self.max_line_bytes:
            self._bad(
                f"line too long: {total} bytes, more than max_line_bytes={self.max_line_bytes}",
                content,
            )
            return None
        if not content or content.isspace():
            self._bad("empty line", content)
            return None
        nul = content.find(b"\x00")
        if nul >= 0:
            self._bad(f"binary data: NUL byte at byte offset {nul}", content)
            return None
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._bad(f"not valid UTF-8: {exc.reason} at byte offset {exc.start}", content)
            return None

    def _lines(self) -> Iterator[tuple[bytes, int]]:
        for content, total in _physical_lines(self.handle, self.path, self.max_line_bytes):
            self.line_no += 1
            yield content, total

    def chunks(self) -> Iterator[pd.DataFrame]:
        for content, total in self.lines:
            text = self._decode(content, total)
            if text is not None:
                self._add(text, content)
            if len(self.errors) >= self.chunk_rows:
                yield self._flush()
        if self.errors:
            yield self._flush()

    def _add(self, text: str, content: bytes) -> None:
        raise NotImplementedError

    def _good(self, fields: list[Any], text: str) -> None:
        self.rows.append(fields)
        self.texts.append(text)
        self.errors.append(None)
        self.excerpts.append(None)

    def _flush(self) -> pd.DataFrame:
        frame = _build_frame(
            columns=self.columns,
            rows=self.rows,
            texts=self.texts,
            errors=self.errors,
            excerpts=self.excerpts,
            first_line=self.first_line,
            file_name=self.path.name,
            source=self.source,
            typed_values=self.fmt == "jsonl",
        )
        self._reset()
        return frame


class _CsvChunker(_Chunker):
    fmt = "csv"

    def __init__(self, path: Path, handle: IO[bytes], chunk_rows: int, max_line_bytes: int) -> None:
        super().__init__(path, handle, chunk_rows, max_line_bytes)
        self.columns = self._read_header()
        self.n_columns = len(self.columns)
        self._reset()  # the header is line 1; data rows start after it

    def _read_header(self) -> tuple[str, ...]:
        fix = (
            f"the first line must name canonical columns, e.g. 'event_id,ts,event_type,user,src_host'; "
            f"required: {', '.join(FILE_REQUIRED_COLUMNS)}; allowed: {', '.join(schema.EVENT_COLUMNS)}"
        )
        first = next(self.lines, None)
        if first is None:
            raise schema.SchemaError(f"{self.path}: empty file, no CSV header line; {fix}")
        content, total = first
        if total > self.max_line_bytes or b"\x00" in content:
            raise schema.SchemaError(f"{self.path}: line 1 is not a readable CSV header; {fix}")
        try:
            text = content.decode("utf-8-sig")  # tolerate a byte-order mark from Excel exports
        except UnicodeDecodeError as exc:
            raise schema.SchemaError(f"{self.path}: CSV header is not valid UTF-8 ({exc}); {fix}") from exc
        try:
            names = [name.strip() for name in next(csv.reader([text], strict=True))] if text.strip() else []
        except csv.Error as exc:
            raise schema.SchemaError(f"{self.path}: CSV header cannot be parsed ({exc}); {fix}") from exc
        if not names:
            raise schema.SchemaError(f"{self.path}: line 1 (the CSV header) is empty; {fix}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        unknown = [n for n in names if n not in schema.EVENT_COLUMNS]
        missing = [c for c in FILE_REQUIRED_COLUMNS if c not in names]
        problems = []
        if duplicates:
            problems.append(f"duplicate columns {duplicates}")
        if unknown:
            problems.append(f"unknown columns {unknown}")
        if missing:
            problems.append(f"missing required columns {missing}")
        if problems:
            raise schema.SchemaError(f"{self.path}: CSV header has {'; '.join(problems)}; {fix}")
        return tuple(names)

    def _add(self, text: str, content: bytes) -> None:
        # str.split is several times faster than the csv module; only quoted lines need it.
        if '"' in text:
            try:
                fields = next(csv.reader((text,), strict=True))
            except csv.Error as exc:
                self._bad(f"malformed CSV: {exc}", content)
                return
        else:
            fields = text.split(",")
        if len(fields) != self.n_columns:
            self._bad(
                f"wrong column count: expected {self.n_columns} columns (as in the header), "
                f"got {len(fields)}",
                content,
            )
            return
        self._good(fields, text)


class _JsonlChunker(_Chunker):
    fmt = "jsonl"
    _allowed = frozenset(schema.EVENT_COLUMNS)

    def _add(self, text: str, content: bytes) -> None:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            self._bad(f"invalid JSON: {exc.msg} at column {exc.colno}", content)
            return
        if type(obj) is not dict:
            kind = type(obj).__name__
            hint = " (JSON Lines expected: one object per line, not one array)" if kind == "list" else ""
            self._bad(f"JSON not an object: got {kind}{hint}", content)
            return
        unknown = obj.keys() - self._allowed
        if unknown:
            self._bad(f"unknown field: {sorted(unknown)} not in the event contract", content)
            return
        get = obj.get
        self._good([get(c) for c in self.columns], text)


# --------------------------------------------------------------------------------------------
# Vectorised conversion of one chunk
# --------------------------------------------------------------------------------------------


class _Errors:
    """Per-row error messages, appended in column order."""

    def __init__(self, initial: list[str | None]) -> None:
        self.messages = initial

    def add(self, mask: np.ndarray, values: pd.Series, template: str, *, quote: bool = True) -> None:
        """Append ``template`` (with ``{value}`` = the row's value) to each row where ``mask``."""
        for pos in np.flatnonzero(mask):
            value = values.iat[pos]
            message = template.format(value=_show(value) if quote else value)
            current = self.messages[pos]
            self.messages[pos] = message if current is None else f"{current}; {message}"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _build_frame(
    *,
    columns: tuple[str, ...],
    rows: list[list[Any] | None],
    texts: list[str | None],
    errors: list[str | None],
    excerpts: list[str | None],
    first_line: int,
    file_name: str,
    source: str,
    typed_values: bool,
) -> pd.DataFrame:
    """Turn one chunk of split lines into a conformed canonical frame.

    ``typed_values`` is true for JSON, whose values may be numbers, booleans, null or nested
    objects; CSV values are always strings, where ``""`` means null.
    """
    n = len(errors)
    n_columns = len(columns)
    parsed = np.fromiter((r is not None for r in rows), dtype=bool, count=n)
    empty_row = [None] * n_columns
    transposed = list(zip(*(r if r is not None else empty_row for r in rows), strict=True)) if n else []
    raw: dict[str, pd.Series] = {}
    for i, name in enumerate(columns):
        values = pd.Series(transposed[i] if transposed else [], dtype=object)
        if not typed_values:
            values = values.where(values != "", None)
        raw[name] = values
    err = _Errors(errors)
    out: dict[str, pd.Series] = {}
    for name in _INPUT_COLUMNS:
        if name not in raw:
            continue
        values = raw[name]
        if name in FILE_REQUIRED_COLUMNS:
            err.add(
                parsed & values.isna().to_numpy(),
                values,
                f"missing required field: {name!r} is absent or empty",
            )
        if name in _TS_COLUMNS:
            out[name] = _convert_timestamp(name, values, err, typed_values)
        elif name in _FLOAT_COLUMNS or name in _INT_BOUNDS:
            out[name] = _convert_number(name, values, err, typed_values)
        elif name in _BOOL_COLUMNS:
            out[name] = _convert_bool(name, values, err, typed_values)
        else:
            out[name] = _convert_string(name, values, err, typed_values)

    failed = np.fromiter((e is not None for e in err.messages), dtype=bool, count=n)
    frame = pd.DataFrame(out, index=pd.RangeIndex(n))
    # A row with any problem keeps no half-parsed values: every field is null, the reason and
    # the excerpt say what the line was.
    if failed.any():
        for name in frame.columns:
            if name != "event_id":
                frame[name] = frame[name].where(~failed)
    refs = [f"{file_name}:{line}" for line in range(first_line, first_line + n)]
    ref_series = pd.Series(refs, dtype=object)
    event_id = frame["event_id"] if "event_id" in frame.columns else pd.Series([None] * n, dtype=object)
    frame["event_id"] = event_id.where(event_id.notna(), ref_series)
    frame["raw_ref"] = ref_series
    frame["source"] = source
    for pos in np.flatnonzero(failed & parsed):
        # Structurally fine, but a value failed to convert: excerpt the decoded line.
        excerpts[pos] = (texts[pos] or "")[:EXCERPT_CHARS].translate(_CONTROL_ESCAPES)
    frame["parse_error"] = pd.Series(err.messages, dtype=object)
    frame["raw_excerpt"] = pd.Series(excerpts, dtype=object)
    return schema.conform(frame)


_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object", list: "array", bool: "boolean", str: "string", int: "number", float: "number",
}  # fmt: skip


def _type_errors(
    name: str, values: pd.Series, err: _Errors, allowed: tuple[type, ...], expected: str
) -> pd.Series:
    """JSON only: flag values of the wrong JSON type and null them so conversion can proceed."""
    kinds = values.map(type)
    bad = (~kinds.isin(allowed) & values.notna()).to_numpy()
    if bad.any():
        kind_names = kinds.map(lambda k: _JSON_TYPE_NAMES.get(k, k.__name__))
        err.add(bad, kind_names, f"bad value: column {name} expects {expected}, got {{value}}", quote=False)
        values = values.where(~bad, None)
    return values


def _convert_string(name: str, values: pd.Series, err: _Errors, typed: bool) -> pd.Series:
    if typed:
        values = _type_errors(name, values, err, (str, int, float), "a string")
        is_number = values.map(lambda v: isinstance(v, int | float)).to_numpy(dtype=bool)
        if is_number.any():
            # JSON numbers in a text column (e.g. a numeric event_id) are kept as their text.
            values = values.where(~is_number, values.map(str))
    return values


def _convert_number(name: str, values: pd.Series, err: _Errors, typed: bool) -> pd.Series:
    if typed:
        values = _type_errors(name, values, err, (str, int, float), "a number")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    present = values.notna().to_numpy()
    bad = present & numbers.isna().to_numpy()
    err.add(bad, values, f"bad number: column {name} value {{value}} is not a number")
    if name in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[name]
        arr = numbers.to_numpy()
        with np.errstate(invalid="ignore"):
            not_int = ~np.isnan(arr) & ((np.mod(arr, 1) != 0) | (arr < lo) | (arr > hi))
        dtype = schema.EVENT_DTYPES[name]
        err.add(
            not_int,
            values,
            f"bad number: column {name} value {{value}} is not an integer in the {dtype} range [{lo}, {hi}]",
        )
        numbers = numbers.where(~not_int)
    return numbers


def _convert_bool(name: str, values: pd.Series, err: _Errors, typed: bool) -> pd.Series:
    if typed:
        values = _type_errors(name, values, err, (bool, str, int), "true/false")
        flags = values.map(
            lambda v: v if isinstance(v, bool) or v is None else _BOOL_WORDS.get(str(v).strip().lower())
        )
    else:
        flags = values.str.strip().str.lower().map(_BOOL_WORDS)
    bad = (values.notna() & flags.isna()).to_numpy()
    err.add(bad, values, f"bad boolean: column {name} value {{value}} is not true/false")
    return flags.astype(object).where(~bad, None)


def _convert_timestamp(name: str, values: pd.Series, err: _Errors, typed: bool) -> pd.Series:
    """ISO-8601 strings (naive means UTC) or epoch seconds (numbers or numeric strings) to UTC."""
    if typed:
        values = _type_errors(name, values, err, (str, int, float), "an ISO-8601 string or epoch seconds")
    # Assemble nanoseconds since the epoch in one int64 array (NaT where unknown), then wrap it
    # once: assigning Timestamps element-wise into a Series would be far slower.
    nanos = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)  # int64 min is NaT
    present = values.notna().to_numpy()
    epoch = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    is_epoch = ~np.isnan(epoch)
    too_far = is_epoch & (np.abs(np.where(is_epoch, epoch, 0.0)) > _MAX_EPOCH_S)
    err.add(
        too_far,
        values,
        f"bad timestamp: column {name} value {{value}} is out of range for epoch seconds "
        "(milliseconds? the reader expects seconds)",
    )
    ok_epoch = is_epoch & ~too_far
    if ok_epoch.any():
        # Split whole and fractional seconds so float rounding does not shift whole seconds.
        seconds = epoch[ok_epoch]
        whole = np.floor(seconds)
        nanos[ok_epoch] = whole.astype(np.int64) * 1_000_000_000 + np.round((seconds - whole) * 1e9).astype(
            np.int64
        )
    is_text = present & ~is_epoch
    if is_text.any():
        parsed = pd.to_datetime(values[is_text], format="ISO8601", utc=True, errors="coerce")
        parsed_nanos = parsed.astype("datetime64[ns, UTC]").array.asi8
        nanos[is_text] = parsed_nanos
        bad = np.zeros(len(values), dtype=bool)
        bad[is_text] = parsed.isna().to_numpy()
        err.add(bad, values, f"bad timestamp: column {name} value {{value}} is not ISO-8601 or epoch seconds")
    return pd.Series(pd.DatetimeIndex(nanos.view("M8[ns]")).tz_localize("UTC"), index=values.index)
