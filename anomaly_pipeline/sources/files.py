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

``ts`` may be an ISO-8601 string (naive values are taken as UTC; 8 digits such as ``20240301`` are
ISO's basic date format) or epoch seconds (a JSON number or a numeric string); it is converted
to UTC. The file's own ``source`` and ``raw_ref`` values, if any, are replaced: the
provenance of a row read here is this file and line.

Each ``parse_error`` message starts with a stable category followed by ``:`` and the detail
(``"bad number: column bytes_out value 'lots' is not a number"``); several problems in one row
are joined with ``"; "``. Validation counts quarantine reasons by that category.

One record never aborts a file: JSON nested deeper than the parser's recursion limit, a number
JSON cannot represent (``NaN``, ``Infinity``, ``1e400``: non-finite numbers are quarantined,
never turned into null), or any other exception while converting a chunk becomes a row with a
``parse_error`` for exactly the record that raised it (the chunk is bisected until the record is
found; the other rows convert as usual). A compressed file that ends early (a truncated gzip or
zip member) keeps every line read before the break and ends with one more row, at the line
after the last complete one, whose ``parse_error`` starts with ``"truncated input:"``
(``TRUNCATED_CATEGORY``); ``detect`` and ``run`` refuse such an input with exit status 2.
"""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
# What a decompressing stream raises when the file ends early or is corrupt: gzip raises
# EOFError when truncated, BadGzipFile (an OSError) or zlib.error when corrupt; zip members
# raise BadZipFile (CRC) or EOFError.
STREAM_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, zipfile.BadZipFile)
TRUNCATED_CATEGORY = "truncated input"
UNREADABLE_CATEGORY = "unreadable record"


class TruncatedInput(OSError):
    """The (compressed) input ended early or is corrupt after ``lines_read`` complete lines.

    Readers catch it, keep the rows before the break and add one quarantine row for the break
    (``truncation_reason``); it reaches a caller only from format sniffing.
    """

    def __init__(self, path: Path | str, lines_read: int, cause: BaseException) -> None:
        self.lines_read = lines_read
        self.cause = cause
        super().__init__(f"{path}: {truncation_reason(lines_read, cause)}")


def truncation_reason(lines_read: int, cause: BaseException) -> str:
    """The parse_error of the row that stands for a break in a compressed stream."""
    # No "; " inside: validation splits a parse_error at "; " into one problem each.
    cause_text = str(cause).replace("; ", ", ")
    return (
        f"{TRUNCATED_CATEGORY}: the stream ends early or is corrupt after line {lines_read} "
        f"({type(cause).__name__}: {cause_text}), the {lines_read} lines before the break were read and the "
        "rest of the file is missing - the file is probably truncated: fetch or copy it again"
    )


def unreadable_reason(exc: BaseException) -> str:
    """The parse_error of a record whose conversion raised ``exc`` (one record, not the file)."""
    text = str(exc).replace("\n", " ").replace("; ", ", ")
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{UNREADABLE_CATEGORY}: {type(exc).__name__}: {text}"


class NonFiniteNumber(ValueError):
    """A JSON text used ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON, Python accepts them)."""


def _reject_constant(name: str) -> Any:
    raise NonFiniteNumber(
        f"non-finite number: {name} is not a number JSON can hold (write null for a missing value)"
    )


# One decoder for every JSON line: the C scanner with NaN / Infinity rejected instead of
# silently becoming a float that later reads as null.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that rejects NaN / Infinity; raises ValueError (incl. UnicodeDecodeError,
    NonFiniteNumber) or RecursionError (nesting beyond the interpreter's recursion limit)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return _JSON_DECODER.decode(text)


def json_reason(exc: BaseException) -> str:
    """The parse_error of a line the JSON decoder rejected (syntax, NaN, nesting)."""
    if isinstance(exc, NonFiniteNumber):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested deeper than the parser's recursion limit"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return f"invalid JSON: {exc}"


def check_reader_args(
    path: str | Path,
    chunk_rows: int,
    max_line_bytes: int,
    *,
    noun: str = "input",
    hint: str = "check the path (data sets are read in place, e.g. from $ANOMALY_PIPELINE_DATA_DIR)",
) -> Path:
    """Validate the arguments every reader takes; raise at the call, not while iterating."""
    path = Path(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
    if not path.is_file():
        raise FileNotFoundError(f"{noun} file not found: {path} (resolved: {path.resolve()}); {hint}")
    return path


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
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = check_reader_args(
        path, chunk_rows, max_line_bytes, noun="event", hint="check the path, or pass a directory's files one by one"
    )
    if fmt == "auto":
        fmt = _detect_format(path, max_line_bytes)
    # Argument and existence errors above are raised at the call; the rest while iterating.
    return _iterate(path, fmt, chunk_rows, max_line_bytes)


def _iterate(path: Path, fmt: str, chunk_rows: int, max_line_bytes: int) -> Iterator[pd.DataFrame]:
    reader = _csv_chunks if fmt == "csv" else _jsonl_chunks
    with _open_binary(path) as handle:
        lines = lines_until_break(_physical_lines(handle, path, max_line_bytes))
        yield from reader(path, lines, chunk_rows, max_line_bytes)


def lines_until_break(lines: Iterator[tuple[bytes, int]]) -> Iterator[tuple[bytes | None, Any]]:
    """``lines`` as they come; a break in the stream becomes one last item ``(None, reason)``.

    The readers turn that item into the row that quarantines the break, after the rows of
    every line read before it.
    """
    try:
        yield from lines
    except TruncatedInput as exc:
        yield None, truncation_reason(exc.lines_read, exc.cause)


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
        try:
            for line, _overflow in _physical_lines(handle, path, max_line_bytes):
                stripped = line.lstrip()
                if stripped:
                    return "jsonl" if stripped.startswith(b"{") else "csv"
        except TruncatedInput as exc:
            raise schema.SchemaError(f"{exc}; no complete line to detect the format from") from exc
    raise schema.SchemaError(
        f"{path}: cannot detect the format of an empty file with an unknown extension; "
        "pass fmt='csv' or fmt='jsonl', or name it .csv / .jsonl"
    )


def _physical_lines(handle: IO[bytes], path: Path, max_line_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yield ``(content, length)`` per physical line, line break (LF or CRLF) removed.

    ``length`` is the line's full length in bytes without the line break. For a line longer
    than ``max_line_bytes`` only its first ``max_line_bytes + 2`` bytes are returned; the rest
    is read and discarded in bounded pieces, so one huge line never sits in memory.
    """
    # +2: a line of exactly max_line_bytes plus CRLF still arrives in one read.
    limit = max_line_bytes + 2
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
            elif len(line) < limit:  # the last line of the file, without a line break
                yield line, len(line)
            else:
                yield line, len(line) + _skip_rest_of_line(readline, limit, line)
    except STREAM_ERRORS as exc:
        raise TruncatedInput(path, line_no, exc) from exc


def _skip_rest_of_line(readline: Any, limit: int, start: bytes) -> int:
    """Read up to the end of an over-long line; return how many content bytes were skipped."""
    skipped = 0
    previous = start
    while True:
        piece = readline(limit)
        if not piece:
            return skipped
        if piece.endswith(b"\n"):
            skipped += len(piece) - 1
            # Do not count the CR of a CRLF, even when it ended the previous piece.
            if piece.endswith(b"\r\n") or (piece == b"\n" and previous.endswith(b"\r")):
                skipped -= 1
            return skipped
        skipped += len(piece)
        previous = piece


# --------------------------------------------------------------------------------------------
# Line loops: a fast path for good lines, a slow path that says exactly what is wrong
# --------------------------------------------------------------------------------------------


# Marks a CSV row whose text splits on every comma: it is split for the whole chunk at once
# (one join and one split), instead of allocating a list per line.
_SPLIT_LATER: list[Any] = []


class _Chunk:
    """The lines of one chunk: fields per good line, reason and excerpt per bad line."""

    def __init__(self, first_line: int) -> None:
        self.first_line = first_line  # 1-based physical line number of the chunk's first row
        # Per row: the field values, _SPLIT_LATER, or None for a bad line.
        self.rows: list[list[Any] | None] = []
        self.texts: list[str | None] = []  # decoded line (to split, or to excerpt if a value fails)
        self.bad: dict[int, tuple[str, str]] = {}  # position -> (reason, excerpt)

    def add_bad(self, reason: str, raw: bytes) -> None:
        self.bad[len(self.rows)] = (reason, excerpt(raw))
        self.rows.append(None)
        self.texts.append(None)

    def next_first_line(self) -> int:
        return self.first_line + len(self.rows)


def _line_problem(content: bytes, total: int, max_line_bytes: int) -> str | None:
    """Why a physical line cannot be a record at the byte level, or None."""
    if total > max_line_bytes:
        return f"line too long: {total} bytes, more than max_line_bytes={max_line_bytes}"
    if not content or content.isspace():
        return "empty line"
    nul = content.find(b"\x00")
    if nul >= 0:
        return f"binary data: NUL byte at byte offset {nul}"
    return None


def _decode_or_reason(content: bytes) -> tuple[str | None, str | None]:
    try:
        return content.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8: {exc.reason} at byte offset {exc.start}"


def _csv_chunks(
    path: Path, lines: Iterator[tuple[bytes, int]], chunk_rows: int, max_line_bytes: int
) -> Iterator[pd.DataFrame]:
    first = next(lines, None)
    if first is not None and first[0] is None:  # the stream broke before the header line ended
        chunk = _Chunk(first_line=1)
        chunk.add_bad(first[1], b"")
        yield _build_guarded(chunk, _INPUT_COLUMNS, path.name, "file:csv", typed_values=True)
        return
    columns = _read_csv_header(path, first, max_line_bytes)
    n_columns = len(columns)
    commas = n_columns - 1
    chunk = _Chunk(first_line=2)  # the header is line 1
    rows, texts = chunk.rows, chunk.texts
    for content, total in lines:
        if content is None:  # a break in a compressed stream: its own row, then the end
            chunk.add_bad(total, b"")
            break
        # Fast path, a few C-level string operations per good line: this is where the
        # >= 100k lines/s budget is spent. Anything unusual takes the slow path below.
        text: str | None = None
        if total <= max_line_bytes and b"\x00" not in content:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None and '"' not in text and text.count(",") == commas:
            rows.append(_SPLIT_LATER)
            texts.append(text)
        else:
            # Slow path: quoted fields, or something is wrong and the reason must be precise.
            parsed = _csv_slow(content, total, n_columns, max_line_bytes)
            if isinstance(parsed, str):
                chunk.add_bad(parsed, content)
            else:
                rows.append(parsed[0])
                texts.append(parsed[1])
        if len(rows) >= chunk_rows:
            yield _build_guarded(chunk, columns, path.name, "file:csv", typed_values=False)
            chunk = _Chunk(chunk.next_first_line())
            rows, texts = chunk.rows, chunk.texts
    if rows:
        yield _build_guarded(chunk, columns, path.name, "file:csv", typed_values=False)


def _csv_slow(content: bytes, total: int, n_columns: int, max_line_bytes: int) -> tuple[list[str], str] | str:
    """Parse one CSV line with the csv module; return ``(fields, text)`` or the reason it is bad."""
    problem = _line_problem(content, total, max_line_bytes)
    if problem is not None:
        return problem
    text, problem = _decode_or_reason(content)
    if text is None:
        return problem or "not valid UTF-8"
    try:
        fields = next(csv.reader((text,), strict=True))
    except csv.Error as exc:
        return f"malformed CSV: {exc}"
    if len(fields) != n_columns:
        return f"wrong column count: expected {n_columns} columns (as in the header), got {len(fields)}"
    return fields, text


def _read_csv_header(path: Path, first: tuple[bytes, int] | None, max_line_bytes: int) -> tuple[str, ...]:
    fix = (
        "the first line must name canonical columns, e.g. 'event_id,ts,event_type,user,src_host'; "
        f"required: {', '.join(FILE_REQUIRED_COLUMNS)}; allowed: {', '.join(schema.EVENT_COLUMNS)}"
    )
    if first is None:
        raise schema.SchemaError(f"{path}: empty file, no CSV header line; {fix}")
    content, total = first
    if total > max_line_bytes or b"\x00" in content:
        raise schema.SchemaError(f"{path}: line 1 is not a readable CSV header (binary or too long); {fix}")
    try:
        text = content.decode("utf-8-sig")  # tolerate a byte-order mark from spreadsheet exports
    except UnicodeDecodeError as exc:
        raise schema.SchemaError(f"{path}: the CSV header is not valid UTF-8 ({exc}); {fix}") from exc
    if not text.strip():
        raise schema.SchemaError(f"{path}: line 1 (the CSV header) is empty; {fix}")
    try:
        names = [name.strip() for name in next(csv.reader((text,), strict=True))]
    except csv.Error as exc:
        raise schema.SchemaError(f"{path}: the CSV header cannot be parsed ({exc}); {fix}") from exc
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
        raise schema.SchemaError(f"{path}: the CSV header has {'; '.join(problems)}; {fix}")
    return tuple(names)


def _jsonl_chunks(
    path: Path, lines: Iterator[tuple[bytes, int]], chunk_rows: int, max_line_bytes: int
) -> Iterator[pd.DataFrame]:
    columns = _INPUT_COLUMNS
    allowed = frozenset(schema.EVENT_COLUMNS)
    loads = loads_strict
    chunk = _Chunk(first_line=1)
    rows, texts = chunk.rows, chunk.texts
    for content, total in lines:
        if content is None:  # a break in a compressed stream: its own row, then the end
            chunk.add_bad(total, b"")
            break
        reason = _line_problem(content, total, max_line_bytes)
        if reason is None:
            text, reason = _decode_or_reason(content)
            if text is not None:
                try:
                    obj = loads(text)
                except (ValueError, RecursionError) as exc:  # syntax, NaN / Infinity, nesting
                    reason = json_reason(exc)
                else:
                    reason = _json_object_problem(obj, allowed)
                    if reason is None:
                        get = obj.get
                        rows.append([get(c) for c in columns])
                        texts.append(text)
        if reason is not None:
            chunk.add_bad(reason, content)
        if len(rows) >= chunk_rows:
            yield _build_guarded(chunk, columns, path.name, "file:jsonl", typed_values=True)
            chunk = _Chunk(chunk.next_first_line())
            rows, texts = chunk.rows, chunk.texts
    if rows:
        yield _build_guarded(chunk, columns, path.name, "file:jsonl", typed_values=True)


def _json_object_problem(obj: Any, allowed: frozenset[str]) -> str | None:
    if type(obj) is not dict:
        kind = _JSON_TYPE_NAMES.get(type(obj), type(obj).__name__)
        hint = " (JSON Lines expected: one object per line, not one array)" if kind == "array" else ""
        return f"JSON not an object: got {kind}{hint}"
    unknown = obj.keys() - allowed
    if unknown:
        return f"unknown field: {sorted(unknown)} not in the event contract"
    return None


# --------------------------------------------------------------------------------------------
# Vectorised conversion of one chunk
# --------------------------------------------------------------------------------------------

_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object", list: "array", bool: "boolean", str: "string", int: "number", float: "number",
    type(None): "null",
}  # fmt: skip


class _Errors:
    """Per-row error messages; several problems in one row are joined with ``"; "``."""

    def __init__(self, initial: list[str | None]) -> None:
        self.messages = initial
        self.rows: list[int] = []  # positions that got a message here (the initial ones aside)

    def add(self, mask: np.ndarray, values: pd.Series, template: str, *, quote: bool = True) -> None:
        """Append ``template`` (``{value}`` = the row's value) to each row where ``mask`` is true."""
        for pos in np.flatnonzero(mask):
            value = values.iat[pos]
            message = template.format(value=_show(value) if quote else value)
            current = self.messages[pos]
            self.messages[pos] = message if current is None else f"{current}; {message}"
            self.rows.append(int(pos))


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _build_guarded(
    chunk: _Chunk, columns: tuple[str, ...], file_name: str, source: str, *, typed_values: bool
) -> pd.DataFrame:
    """``_build_frame``, but an exception raised by one record fails that record, not the file.

    The vectorised conversion of a chunk either succeeds as a whole or raises; when it raises,
    the chunk is bisected until the single record that raises is found (``log2(rows)`` levels
    per bad record), which becomes a row with an ``unreadable record`` parse_error.
    """
    try:
        return _build_frame(chunk, columns, file_name, source, typed_values=typed_values)
    except MemoryError:
        raise
    except Exception as exc:  # one record's value broke a vectorised conversion
        n = len(chunk.rows)
        if n == 1:
            single = _Chunk(chunk.first_line)
            single.add_bad(unreadable_reason(exc), (chunk.texts[0] or "").encode())
            return _build_frame(single, columns, file_name, source, typed_values=typed_values)
        half = n // 2
        parts = [_sub_chunk(chunk, 0, half), _sub_chunk(chunk, half, n)]
        return pd.concat(
            [_build_guarded(part, columns, file_name, source, typed_values=typed_values) for part in parts],
            ignore_index=True,
        )


def _sub_chunk(chunk: _Chunk, start: int, stop: int) -> _Chunk:
    """Rows ``[start, stop)`` of ``chunk`` as a chunk of their own (same line numbers)."""
    part = _Chunk(chunk.first_line + start)
    part.rows = chunk.rows[start:stop]
    part.texts = chunk.texts[start:stop]
    part.bad = {pos - start: value for pos, value in chunk.bad.items() if start <= pos < stop}
    return part


def _build_frame(
    chunk: _Chunk, columns: tuple[str, ...], file_name: str, source: str, *, typed_values: bool
) -> pd.DataFrame:
    """Turn one chunk of split lines into a conformed canonical frame.

    ``typed_values`` is true for JSON, whose values may be numbers, booleans, null or nested
    objects; CSV values are always strings, where ``""`` means null.
    """
    n = len(chunk.rows)
    errors: list[str | None] = [None] * n
    excerpts: list[str | None] = [None] * n
    for pos, (reason, text) in chunk.bad.items():
        errors[pos] = reason
        excerpts[pos] = text
    parsed = np.ones(n, dtype=bool)
    parsed[list(chunk.bad)] = False
    matrix = _field_matrix(chunk, len(columns), typed_values)
    if not typed_values:
        matrix[matrix == ""] = None  # an empty CSV field is null; one 2-D pass for all columns
    # Null masks for all columns in one pass; converters update them as they null bad values.
    present_2d = ~pd.isna(matrix)
    err = _Errors(errors)
    out: dict[str, pd.Series] = {}
    for j, name in enumerate(columns):
        if name not in _INPUT_COLUMNS:
            continue  # source / raw_ref in the file: replaced by this file's provenance below
        values = pd.Series(matrix[:, j], copy=False)
        present = present_2d[:, j]
        if name in FILE_REQUIRED_COLUMNS:
            err.add(parsed & ~present, values, f"missing required field: {name!r} is absent or empty")
        if name in _TS_COLUMNS:
            out[name] = _convert_timestamp(name, values, present, err, typed_values)
        elif name in _FLOAT_COLUMNS or name in _INT_BOUNDS:
            out[name] = _convert_number(name, values, present, err, typed_values)
        elif name in _BOOL_COLUMNS:
            out[name] = _convert_bool(name, values, present, err, typed_values)
        else:
            out[name] = _convert_string(name, values, present, err, typed_values)

    failed = ~parsed
    failed[err.rows] = True
    frame = pd.DataFrame(out, index=pd.RangeIndex(n), copy=False)
    # A row with any problem keeps no half-parsed values: every field is null; the reason and
    # the excerpt say what the line was.
    if failed.any():
        for name in frame.columns:
            if name != "event_id":
                frame[name] = frame[name].where(~failed)
    first = chunk.first_line
    refs = pd.Series([f"{file_name}:{line}" for line in range(first, first + n)], dtype=object)
    event_id = frame["event_id"] if "event_id" in frame.columns else pd.Series([None] * n, dtype=object)
    frame["event_id"] = event_id.where(event_id.notna(), refs)
    frame["raw_ref"] = refs
    frame["source"] = source
    for pos in np.flatnonzero(failed & parsed):
        # Split fine, but a value failed to convert: excerpt the decoded line.
        excerpts[pos] = (chunk.texts[pos] or "")[:EXCERPT_CHARS].translate(_CONTROL_ESCAPES)
    frame["parse_error"] = pd.Series(err.messages, dtype=object)
    frame["raw_excerpt"] = pd.Series(excerpts, dtype=object)
    return schema.conform(frame)


def _field_matrix(chunk: _Chunk, n_columns: int, typed_values: bool) -> np.ndarray:
    """The chunk's field values as an ``(n_rows, n_columns)`` object array, None for bad rows."""
    rows = chunk.rows
    if typed_values:
        # DataFrame(list of lists, dtype=object) transposes in C and, unlike np.array, never
        # unpacks a nested JSON value (a list or object) into extra dimensions.
        empty_row = [None] * n_columns
        return pd.DataFrame([r if r is not None else empty_row for r in rows], dtype=object).to_numpy()
    later = [i for i, r in enumerate(rows) if r is _SPLIT_LATER]
    if len(later) == len(rows):  # the common case: every line split on plain commas
        flat = ",".join(chunk.texts).split(",")  # type: ignore[arg-type]
        return np.array(flat, dtype=object).reshape(len(rows), n_columns)
    matrix = np.full((len(rows), n_columns), None, dtype=object)
    if later:
        flat = ",".join([chunk.texts[i] for i in later]).split(",")  # type: ignore[misc]
        matrix[later] = np.array(flat, dtype=object).reshape(len(later), n_columns)
    for i, r in enumerate(rows):
        if r is not None and r is not _SPLIT_LATER:
            matrix[i, :] = np.array(r, dtype=object)  # a quoted line, parsed by the csv module
    return matrix


def _type_errors(
    name: str,
    values: pd.Series,
    present: np.ndarray,
    err: _Errors,
    allowed: tuple[type, ...],
    expected: str,
) -> tuple[pd.Series, np.ndarray]:
    """JSON only: flag values of the wrong JSON type and null them so conversion can proceed."""
    kinds = values.map(type)
    bad = present & ~kinds.isin(allowed).to_numpy()
    if bad.any():
        kind_names = kinds.map(lambda k: _JSON_TYPE_NAMES.get(k, k.__name__))
        err.add(bad, kind_names, f"bad value: column {name} expects {expected}, got {{value}}", quote=False)
        values = values.where(~bad, None)
        present = present & ~bad
    return values, present


def _convert_string(
    name: str, values: pd.Series, present: np.ndarray, err: _Errors, typed: bool
) -> pd.Series:
    if typed:
        values, present = _type_errors(name, values, present, err, (str, int, float), "a string")
        is_number = values.map(lambda v: isinstance(v, int | float)).to_numpy(dtype=bool)
        if is_number.any():
            # JSON numbers in a text column (e.g. a numeric event_id) are kept as their text.
            values = values.where(~is_number, values.map(str))
    return values


def _to_float(values: pd.Series, all_strings: bool) -> np.ndarray:
    """Values (str, int, float or None) as float64, NaN where missing or not a number."""
    if all_strings:
        try:
            # Fastest path: Arrow parses the strings in C++ without Python float objects.
            arrow = pa.array(values.to_numpy(), type=pa.string(), from_pandas=True)
            return pc.cast(arrow, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # some value Arrow does not read as a number: the paths below find which
    try:
        # numpy calls float() per element in C, several times faster than to_numeric. float()
        # also accepts surrounding whitespace and digit underscores.
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        # At least one value is not a number: the slow path puts NaN exactly there.
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _convert_number(
    name: str, values: pd.Series, present: np.ndarray, err: _Errors, typed: bool
) -> pd.Series:
    if typed:
        values, present = _type_errors(name, values, present, err, (str, int, float), "a number")
    numbers = _to_float(values, all_strings=not typed)
    bad = present & np.isnan(numbers)
    err.add(bad, values, f"bad number: column {name} value {{value}} is not a number")
    infinite = present & np.isinf(numbers)
    err.add(infinite, values, f"bad number: column {name} value {{value}} is not a finite number")
    numbers = np.where(infinite, np.nan, numbers)
    if name in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[name]
        with np.errstate(invalid="ignore"):
            not_int = ~np.isnan(numbers) & ((np.mod(numbers, 1) != 0) | (numbers < lo) | (numbers > hi))
        dtype = schema.EVENT_DTYPES[name]
        err.add(
            not_int,
            values,
            f"bad number: column {name} value {{value}} is not an integer in the {dtype} range [{lo}, {hi}]",
        )
        numbers = np.where(not_int, np.nan, numbers)
    return pd.Series(numbers, index=values.index)


def _convert_bool(name: str, values: pd.Series, present: np.ndarray, err: _Errors, typed: bool) -> pd.Series:
    if typed:
        values, present = _type_errors(name, values, present, err, (bool, str, int), "true/false")
    flags = values.map(_BOOL_LOOKUP)  # dict lookup: True/False/1/0 and the common spellings
    missed = present & flags.isna().to_numpy()
    if missed.any():
        # Rare spellings: any case, surrounding whitespace.
        flags[missed] = values[missed].map(lambda v: _BOOL_WORDS.get(str(v).strip().lower()))
    bad = present & flags.isna().to_numpy()
    err.add(bad, values, f"bad boolean: column {name} value {{value}} is not true/false")
    return flags.astype(object).where(~bad, None)


# ``True == 1`` in Python, so booleans and 0/1 numbers share entries with their spellings.
_BOOL_LOOKUP: dict[Any, bool] = {
    **_BOOL_WORDS, **{k.upper(): v for k, v in _BOOL_WORDS.items()}, **{k.title(): v for k, v in _BOOL_WORDS.items()},
    True: True, False: False,
}  # fmt: skip


def _convert_timestamp(
    name: str, values: pd.Series, present: np.ndarray, err: _Errors, typed: bool
) -> pd.Series:
    """ISO-8601 strings (naive means UTC) or epoch seconds (numbers or numeric strings) to UTC."""
    if typed:
        values, present = _type_errors(
            name, values, present, err, (str, int, float), "an ISO-8601 string or epoch seconds"
        )
    # Assemble nanoseconds since the epoch in one int64 array (int64 min is NaT), then wrap it
    # once: assigning Timestamps element-wise into a Series would be far slower.
    nanos = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)
    # Most files use one notation: parse everything as ISO-8601 first (fast), then try the
    # values that failed as epoch seconds (to_numeric on ISO strings would be slow).
    # Numbers (JSON) are never taken as ISO; a string of 8 digits is (basic format, 20240101).
    iso = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    iso_ok = iso.notna().to_numpy()
    nanos[iso_ok] = iso.astype("datetime64[ns, UTC]").array.asi8[iso_ok]
    rest = present & ~iso_ok
    if rest.any():
        epoch = np.full(len(values), np.nan)
        epoch[rest] = _to_float(values[rest], all_strings=False)
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
            # Split whole and fractional seconds so float rounding never shifts a whole second.
            seconds = epoch[ok_epoch]
            whole = np.floor(seconds)
            frac_ns = np.round((seconds - whole) * 1e9).astype(np.int64)
            nanos[ok_epoch] = whole.astype(np.int64) * 1_000_000_000 + frac_ns
        not_parsed = rest & ~is_epoch
        err.add(
            not_parsed,
            values,
            f"bad timestamp: column {name} value {{value}} is not ISO-8601 or epoch seconds",
        )
    return pd.Series(pd.DatetimeIndex(nanos.view("M8[ns]")).tz_localize("UTC"), index=values.index)
