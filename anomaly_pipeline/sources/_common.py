"""Shared machinery of the format adapters (LANL, Zeek, DARPA, OCSF, Windows).

Every adapter streams its input in chunks and turns each physical line into exactly one output
row (metadata lines of a format, such as Zeek's ``#fields``, excepted and documented there).
A line that cannot become an event keeps its row, with every event field null and the envelope
columns ``parse_error`` (``"<category>: <detail>"``, as in ``files.py``) and ``raw_excerpt`` set,
so validation quarantines it with its ``raw_ref`` (``<file name>:<1-based line>``) and the counts
reconcile: lines in = rows out.

Two readers live here:

* delimited text (``iter_line_blocks`` + ``parse_delimited``): the input is cut into blocks of
  whole lines in binary; the good path checks a block with a few whole-block byte operations and
  parses it with Arrow's multi-threaded CSV reader, typed. Only when that fails does the block
  take the slow path: numpy finds the lines with a wrong field count, an empty line, NUL bytes,
  bad UTF-8 or a stray carriage return; each of those gets a precise reason in Python; the other
  lines are parsed as text and converted column by column, so a bad value marks only its row.
* JSON Lines (``iter_json_events``): one ``json.loads`` per line and a per-format record mapper;
  the columns are converted per chunk, vectorised.

Inputs may be plain, gzip (detected by magic bytes, whatever the name) or a zip archive (the
member is streamed, never extracted).

One record never aborts a file. A block or JSON chunk whose vectorised conversion raises is
bisected (``convert_guarded``, ``_json_chunk_guarded``) until the one line that raises is found;
it becomes a row with an ``unreadable record`` parse_error and the rest converts as usual. A
JSON record mapper's exception fails its own line. A compressed stream that breaks (truncated
gzip, corrupt zip member) keeps every complete line before the break and adds one row for the
break (``truncated input: ...``, see ``files.truncation_reason``), at the line number after the
last complete line; the partial line is that row's excerpt.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import io
import json
import queue
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from anomaly_pipeline import schema
from anomaly_pipeline.sources.files import (
    STREAM_ERRORS,
    _decode_or_reason,
    _line_problem,
    _open_binary,
    _physical_lines,
    check_reader_args,
    empty_raw_events,
    excerpt,
    json_reason,
    lines_until_break,
    loads_strict,
    truncation_reason,
    unreadable_reason,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAX_LINE_BYTES",
    "DICT",
    "EVENT_FIELDS",
    "INVALID",
    "JSON_FIELDS",
    "LOGON_TYPE_IDS",
    "DelimitedSpec",
    "LineBlock",
    "Parsed",
    "RecordError",
    "auth_type_of",
    "broken_chunk",
    "build_chunk",
    "check_common_args",
    "codes",
    "concat_chunks",
    "conformed",
    "convert_guarded",
    "dict_map",
    "dict_map_checked",
    "dict_map_float",
    "empty_raw_events",
    "first_lines",
    "iter_json_events",
    "iter_line_blocks",
    "logon_type_of",
    "numbers",
    "open_input",
    "parse_delimited",
    "protocol_of",
    "reject_rows",
    "show",
    "sort_by_ts",
    "unreadable_chunk",
    "whole_number",
]

# Rows per chunk: big enough that per-chunk costs vanish, small enough for bounded memory
# (peak RSS ~0.75 GB reading LANL auth at this size, ~1.1 KB per chunk row plus ~0.1 GB).
DEFAULT_CHUNK_ROWS = 500_000
DEFAULT_MAX_LINE_BYTES = 1_048_576
_READ_BYTES = 4 << 20  # one read from the (decompressed) stream
_ZIP_MAGIC = b"PK\x03\x04"
_NAT = np.iinfo(np.int64).min
_ARROW_BLOCK_BYTES = 4 << 20
DICT = pa.dictionary(pa.int32(), pa.string())

# Canonical columns an adapter may fill (source and raw_ref are set here).
EVENT_FIELDS: tuple[str, ...] = tuple(c for c in schema.EVENT_COLUMNS if c not in ("source", "raw_ref"))
_STRING_FIELDS = frozenset(n for n, d in schema.EVENT_DTYPES.items() if d == "string")
_FLOAT_FIELDS = frozenset(n for n, d in schema.EVENT_DTYPES.items() if d in ("Float64", "Int32", "Int8"))


def check_common_args(path: str | Path, chunk_rows: int, max_line_bytes: int) -> Path:
    """Validate the arguments every adapter takes; raise at the call, not while iterating."""
    return check_reader_args(path, chunk_rows, max_line_bytes)


def show(value: Any) -> str:
    """A raw value quoted for a reason message, at most 60 characters."""
    text = repr(value) if isinstance(value, str | bytes) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------
# Opening inputs
# --------------------------------------------------------------------------------------------


@contextmanager
def open_input(path: Path, member: str | None = None) -> Iterator[tuple[IO[bytes], str]]:
    """Open ``path`` for streaming; yield ``(binary stream, ref name)``.

    Gzip is detected by magic bytes. A zip archive is read member by member without
    extracting: ``member`` names it (required when the archive holds several files). The ref
    name is what ``raw_ref`` and default event ids use: the file name, or
    ``<archive name>/<member>`` for a zip member.
    """
    with path.open("rb") as probe:
        magic = probe.read(4)
    if magic == _ZIP_MAGIC:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            # A zip's index sits at its end: a cut or damaged archive cannot be opened at all.
            raise ValueError(
                f"{path}: starts like a zip archive but cannot be opened ({type(exc).__name__}: {exc}); "
                "it is probably truncated or corrupt - fetch or copy it again"
            ) from exc
        with archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
            if member is None:
                if len(names) != 1:
                    raise ValueError(
                        f"{path}: the zip archive holds {len(names)} files {names[:20]}; "
                        "pass member=<name> to choose one"
                    )
                member = names[0]
            elif member not in names:
                raise ValueError(f"{path}: no member {member!r} in the zip archive; members: {names[:20]}")
            with archive.open(member) as handle:
                yield handle, f"{path.name}/{member}"
        return
    if member is not None:
        raise ValueError(f"{path}: member={member!r} given, but the file is not a zip archive")
    with _open_binary(path) as handle:
        yield handle, path.name


# --------------------------------------------------------------------------------------------
# Blocks of whole lines
# --------------------------------------------------------------------------------------------


class LineBlock:
    """Whole physical lines read from a stream; where each one starts and ends, on demand.

    Attributes:
        data: the lines, each ending with ``\\n`` (one is added after a last line without it).
            An over-long line is held only as its first ``max_line_bytes + 2`` bytes.
        first_line: 1-based line number of the first line in the file.
        n_lines: how many lines ``data`` holds.
        overlong: block line index -> full length in bytes of a line cut at ``max_line_bytes``.
        broken: set on the one-line block that stands for a break in a compressed stream: the
            reason (``files.truncation_reason``); its line is the partial line, if any.
        starts / ends (computed on first use, one numpy pass): byte offsets of each line's
            content in ``data``; ``ends`` excludes the line break (LF or CRLF).
    """

    def __init__(
        self, data: bytes, first_line: int, n_lines: int, overlong: dict[int, int], broken: str | None = None
    ) -> None:
        self.data = data
        self.first_line = first_line
        self.n_lines = n_lines
        self.overlong = overlong
        self.broken = broken
        self._array: np.ndarray | None = None
        self._starts: np.ndarray | None = None
        self._ends: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """``data`` as a uint8 array (no copy)."""
        if self._array is None:
            self._array = np.frombuffer(self.data, dtype=np.uint8)
        return self._array

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            self._locate()
        return self._starts  # type: ignore[return-value]

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            self._locate()
        return self._ends  # type: ignore[return-value]

    def _locate(self) -> None:
        arr = self.array
        newlines = np.flatnonzero(arr == 10)
        if len(newlines) != self.n_lines:
            raise RuntimeError(
                f"block at line {self.first_line}: {len(newlines)} line breaks for {self.n_lines} lines"
            )
        starts = np.empty_like(newlines)
        if len(newlines):
            starts[0] = 0
            starts[1:] = newlines[:-1] + 1
        ends = newlines.copy()
        crlf = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
        ends[crlf] -= 1
        self._starts, self._ends = starts, ends

    def line(self, i: int) -> bytes:
        """Line ``i``'s content (no line break)."""
        return self.data[self.starts[i] : self.ends[i]]

    def line_length(self, i: int) -> int:
        """Line ``i``'s full length in bytes (the length before cutting, for an over-long line)."""
        return self.overlong.get(i, int(self.ends[i] - self.starts[i]))

    def max_line_length_at_most(self, limit: int) -> bool:
        """True when no line is longer than ``limit`` bytes (line break excluded).

        Without locating every line: a line longer than ``limit`` leaves some window of
        ``limit // 2 + 1`` bytes at a ``limit // 2`` stride without a line break, so a few
        ``bytes.find`` calls clear a block of short lines; only a doubt locates the lines.
        """
        if self._starts is None and limit >= 64:
            data, half = self.data, limit // 2
            if all(data.find(b"\n", i, i + half + 1) >= 0 for i in range(0, len(data), half)):
                return True
        lengths = self.ends - self.starts
        return not len(lengths) or int(lengths.max()) <= limit


def iter_line_blocks(
    handle: IO[bytes], *, chunk_rows: int, max_line_bytes: int, read_bytes: int = _READ_BYTES
) -> Iterator[LineBlock]:
    """Cut a binary stream into blocks of at most ``chunk_rows`` whole lines.

    Memory is bounded by the block size: a line that grows past ``max_line_bytes`` without a
    line break keeps only its first ``max_line_bytes + 2`` bytes (the rest is read and dropped)
    and is listed in ``LineBlock.overlong``. A last line without a line break is a line.
    When the stream breaks (``files.STREAM_ERRORS``), the complete lines before the break come
    in blocks as usual, then one last block of one line with ``broken`` set.
    """
    if isinstance(handle, gzip.GzipFile | zipfile.ZipExtFile):
        # Decompression releases the GIL: inflate the next pieces on another core meanwhile.
        with _Prefetcher(handle, read_bytes) as prefetched:
            yield from _line_blocks(prefetched, chunk_rows, max_line_bytes, read_bytes)
    else:
        yield from _line_blocks(handle, chunk_rows, max_line_bytes, read_bytes)


class _Prefetcher:
    """Reads ``handle`` in a background thread, at most ``depth`` pieces ahead (bounded memory).

    ``read`` returns the pieces in order (``b""`` at the end) and re-raises a read error.
    Leaving the ``with`` block stops and joins the thread before the caller closes ``handle``.
    """

    def __init__(self, handle: IO[bytes], size: int, depth: int = 4) -> None:
        self._handle = handle
        self._size = size
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anomaly-pipeline-prefetch", daemon=True)

    def __enter__(self) -> _Prefetcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a pending put
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _run(self) -> None:
        # read1: at most one decompression step per call. A plain read(size) that meets the end
        # of a truncated stream raises and drops everything it inflated in that call; read1
        # hands over what was inflated before the break, so those lines are kept.
        read = getattr(self._handle, "read1", self._handle.read)
        try:
            while not self._stop.is_set():
                piece = read(self._size)
                self._put(piece)
                if not piece:
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


def _line_blocks(handle: Any, chunk_rows: int, max_line_bytes: int, read_bytes: int) -> Iterator[LineBlock]:
    limit = max_line_bytes + 2
    pieces: list[bytes] = []
    counts: list[int] = []  # line breaks in each piece
    tail = 0  # bytes after the last line break in ``pieces``
    overlong: dict[int, int] = {}  # line index among the pending lines -> full length
    skip_head: bytes | None = None  # head of an over-long line being skipped
    skipped = 0
    first_line = 1

    def take(n_lines: int) -> LineBlock:
        """The first ``n_lines`` complete lines of ``pieces`` as a block; keep the rest."""
        nonlocal pieces, counts, overlong, first_line
        seen, k = 0, 0
        while seen + counts[k] < n_lines:  # the piece holding the n-th line break
            seen += counts[k]
            k += 1
        piece = pieces[k]
        pos = -1
        for _ in range(n_lines - seen):  # the wanted line break inside piece k
            pos = piece.index(b"\n", pos + 1)
        data = b"".join([*pieces[:k], piece[: pos + 1]])
        rest = piece[pos + 1 :]
        pieces = ([rest] if rest else []) + pieces[k + 1 :]
        counts = ([counts[k] - (n_lines - seen)] if rest else []) + counts[k + 1 :]
        block = LineBlock(data, first_line, n_lines, {i: v for i, v in overlong.items() if i < n_lines})
        overlong = {i - n_lines: v for i, v in overlong.items() if i >= n_lines}
        first_line += n_lines
        return block

    broken: BaseException | None = None
    while True:
        try:
            piece = handle.read(read_bytes)
        except STREAM_ERRORS as exc:
            broken = exc
            break
        if not piece:
            break
        if skip_head is not None:
            nl = piece.find(b"\n")
            if nl < 0:
                skipped += len(piece)
                continue
            overlong[sum(counts)] = skipped + nl - (1 if piece[:nl].endswith(b"\r") else 0)
            pieces.append(skip_head + b"\n")
            counts.append(1)
            skip_head = None
            piece = piece[nl + 1 :]
            tail = 0
        count = piece.count(b"\n")
        tail = len(piece) - piece.rfind(b"\n") - 1 if count else tail + len(piece)
        pieces.append(piece)
        counts.append(count)
        if tail > limit:
            # The current line is over-long: keep its head, drop the rest up to its line break.
            data = b"".join(pieces)
            start = data.rfind(b"\n") + 1
            skip_head = data[start : start + limit]
            skipped = len(data) - start
            pieces = [data[:start]] if start else []
            counts = [sum(counts)] if start else []
            tail = 0
        while sum(counts) >= chunk_rows:
            yield take(chunk_rows)
    if broken is not None:
        # The partial line at the break belongs to the break's row, not to a line of its own.
        partial = b""
        if skip_head is not None:
            partial = skip_head
        elif tail:
            data = b"".join(pieces)
            cut = data.rfind(b"\n") + 1
            partial = data[cut:]
            pieces, counts = ([data[:cut]], [sum(counts)]) if cut else ([], [])
        while sum(counts) > 0:
            yield take(min(chunk_rows, sum(counts)))
        reason = truncation_reason(first_line - 1, broken)
        yield LineBlock(partial[:limit].replace(b"\n", b" ") + b"\n", first_line, 1, {}, broken=reason)
        return
    if skip_head is not None:
        overlong[sum(counts)] = skipped
        pieces.append(skip_head + b"\n")
        counts.append(1)
        tail = 0
    if tail:  # the stream ended without a final line break
        pieces.append(b"\n")
        counts.append(1)
    while sum(counts) > 0:
        yield take(min(chunk_rows, sum(counts)))


# --------------------------------------------------------------------------------------------
# Delimited text: fast typed parse, precise slow path
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelimitedSpec:
    """How to read one delimited format.

    Attributes:
        what: the format's name in messages ("LANL auth").
        names: one name per field, in file order.
        types: Arrow type of each kept field (``pa.int64()``, ``pa.float64()``, ``pa.string()``,
            or ``DICT`` for a low-cardinality text field: Arrow then builds the dictionary
            while parsing, cheaper than encoding afterwards).
        sep: the field separator (one byte).
        null_values: field texts that mean null (Zeek's ``-``); empty means none.
    """

    what: str
    names: tuple[str, ...]
    types: dict[str, pa.DataType]
    sep: bytes = b","
    null_values: tuple[str, ...] = ()

    @property
    def sep_name(self) -> str:
        return {b",": "comma", b"\t": "tab"}.get(self.sep, repr(self.sep.decode()))


@dataclass
class Parsed:
    """Rows parsed from some lines of a block.

    Attributes:
        lines: block line index of each row (the selected lines, in order).
        ok: per row, True when it parsed; ``table`` holds exactly those rows, in order.
        table: the kept fields, typed as in the spec.
        errors: row -> parse_error text; excerpts: row -> raw_excerpt.
    """

    lines: np.ndarray
    ok: np.ndarray
    table: pa.Table
    errors: dict[int, str]
    excerpts: dict[int, str]

    def fail(self, rows: np.ndarray, reasons: Sequence[str], block: LineBlock) -> None:
        """Mark parsed rows (positions among all rows) as failed after the fact."""
        for row, reason in zip(rows.tolist(), reasons, strict=True):
            current = self.errors.get(row)
            self.errors[row] = reason if current is None else f"{current}; {reason}"
            self.excerpts.setdefault(row, excerpt(block.line(int(self.lines[row]))))
            self.ok[row] = False


def parse_delimited(
    block: LineBlock, spec: DelimitedSpec, max_line_bytes: int, select: np.ndarray | None = None
) -> Parsed:
    """Parse the lines of ``block`` (all, or those where ``select`` is true) with ``spec``.

    Good path: the whole selection goes to Arrow's CSV reader, typed. When a line is bad (wrong
    field count, empty, too long, NUL, bad UTF-8, stray CR) or a value does not convert, the
    slow path finds exactly which rows and why; every other row still parses. A number field
    that reads as NaN or infinity (``nan``, ``inf``, ``1e999``) fails its row: a value that is
    not a finite number is quarantined, never taken as null.
    """
    lines = np.arange(block.n_lines) if select is None else np.flatnonzero(select)
    n = len(lines)
    if n == 0:
        return Parsed(lines, np.ones(0, dtype=bool), _empty_table(spec), {}, {})
    if _block_looks_clean(block, lines, select, max_line_bytes):
        table = _arrow_parse(_line_bytes(block, lines, select), spec, typed=True)
        if table is not None and table.num_rows == n:
            return _reject_non_finite(Parsed(lines, np.ones(n, dtype=bool), table, {}, {}), spec, block)
    return _reject_non_finite(_parse_slow(block, lines, select, spec, max_line_bytes), spec, block)


def _reject_non_finite(parsed: Parsed, spec: DelimitedSpec, block: LineBlock) -> Parsed:
    """Fail the rows whose floating-point fields hold NaN or an infinity (present, not null)."""
    table = parsed.table
    bad = None
    messages: dict[int, list[str]] = {}
    for name, target in spec.types.items():
        if not pa.types.is_floating(target) or table[name].null_count == len(table[name]):
            continue
        # Null (an unset field) stays allowed; is_finite is null there, which fill_null keeps.
        wrong = pc.invert(pc.is_finite(table[name])).fill_null(False).to_numpy(zero_copy_only=False)
        wrong = np.asarray(wrong, dtype=bool)
        if not wrong.any():
            continue
        values = table[name].to_numpy(zero_copy_only=False)
        for pos in np.flatnonzero(wrong).tolist():
            messages.setdefault(pos, []).append(
                f"bad number: field {name} value {float(values[pos])!r} is not a finite number ({spec.what})"
            )
        bad = wrong if bad is None else bad | wrong
    if bad is None:
        return parsed
    rows = np.flatnonzero(bad)
    parsed.fail(np.flatnonzero(parsed.ok)[rows], ["; ".join(messages[int(r)]) for r in rows], block)
    parsed.table = table.filter(pa.array(~bad))
    return parsed


def _block_looks_clean(
    block: LineBlock, lines: np.ndarray, select: np.ndarray | None, max_line_bytes: int
) -> bool:
    """Whole-block checks that rule out every line-level problem except the field count.

    No over-long line, no NUL, valid UTF-8, no carriage return other than CRLF line ends.
    Cheap byte-level tests first; line positions only when a test is unsure.
    """
    if block.overlong:
        return False
    data = block.data
    if b"\x00" in data:
        return False
    # Empty lines need no test here: Arrow skips them, so the row count comes out short and the
    # caller takes the slow path (which names them).
    if b"\r" in data and data.count(b"\r") != np.count_nonzero(block.array[block.ends] == 13):
        return False  # a carriage return that does not end a line (CRLF ends are fine)
    if not block.max_line_length_at_most(max_line_bytes):
        return False
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _line_bytes(block: LineBlock, lines: np.ndarray, select: np.ndarray | None) -> bytes:
    """The bytes of the given lines (each with its line break), in order."""
    if select is None and len(lines) == block.n_lines:
        return block.data
    keep = np.zeros(block.n_lines, dtype=bool)
    keep[lines] = True
    # Runs of consecutive kept lines: few runs (a header, a handful of bad lines) are sliced.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    run_starts, run_ends = edges[0::2], edges[1::2]  # line index ranges [start, end)
    full_end = np.empty(block.n_lines, dtype=np.int64)
    full_end[:-1] = block.starts[1:]
    full_end[-1] = len(block.data)
    if len(run_starts) <= 4096:
        data = block.data
        return b"".join(
            data[block.starts[a] : full_end[b - 1]]
            for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True)
        )
    lengths = full_end - block.starts
    mask = np.repeat(keep, lengths)
    return block.array[mask].tobytes()


def _arrow_parse(data: bytes, spec: DelimitedSpec, *, typed: bool) -> pa.Table | None:
    """Parse with Arrow's CSV reader; None when Arrow rejects the data (slow path)."""
    kept = list(spec.types)
    types = spec.types if typed else dict.fromkeys(kept, pa.string())
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(spec.names), block_size=_ARROW_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                delimiter=spec.sep.decode(), quote_char=False, escape_char=False, newlines_in_values=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=kept,
                null_values=list(spec.null_values),
                strings_can_be_null=bool(spec.null_values),
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _empty_table(spec: DelimitedSpec) -> pa.Table:
    return pa.table({name: pa.array([], type=t) for name, t in spec.types.items()})


def _line_of(positions: np.ndarray, block: LineBlock) -> np.ndarray:
    """Block line index of each byte position."""
    full_end = np.empty(block.n_lines, dtype=np.int64)
    full_end[:-1] = block.starts[1:]
    full_end[-1] = len(block.data)
    return np.searchsorted(full_end, positions, side="right")


def _parse_slow(
    block: LineBlock, lines: np.ndarray, select: np.ndarray | None, spec: DelimitedSpec, max_line_bytes: int
) -> Parsed:
    arr = block.array
    n_block = block.n_lines
    suspect = np.zeros(n_block, dtype=bool)
    lengths = block.ends - block.starts
    suspect |= lengths == 0
    suspect |= lengths > max_line_bytes
    suspect[list(block.overlong)] = True
    for byte in (0, 13):
        hits = np.flatnonzero(arr == byte)
        if len(hits):
            if byte == 13:
                hits = hits[hits != block.ends[_line_of(hits, block)]]  # CR of a CRLF is fine
            suspect[_line_of(hits, block)] = True
    if not block.data.isascii():
        suspect[np.unique(_line_of(np.flatnonzero(arr >= 0x80), block))] = True
    seps = np.flatnonzero(arr == spec.sep[0])
    counts = np.searchsorted(seps, block.ends) - np.searchsorted(seps, block.starts)
    suspect |= counts != len(spec.names) - 1

    n = len(lines)
    ok = np.ones(n, dtype=bool)
    errors: dict[int, str] = {}
    excerpts: dict[int, str] = {}
    for row in np.flatnonzero(suspect[lines]).tolist():
        i = int(lines[row])
        content = block.line(i)
        reason = _line_reason(content, block.line_length(i), spec, max_line_bytes)
        if reason is not None:
            ok[row] = False
            errors[row] = reason
            excerpts[row] = excerpt(content)
    good_lines = lines[ok]
    if len(good_lines) == 0:
        return Parsed(lines, ok, _empty_table(spec), errors, excerpts)
    keep = np.zeros(n_block, dtype=bool)
    keep[good_lines] = True
    data = _line_bytes(block, good_lines, keep)
    table = _arrow_parse(data, spec, typed=True)
    if table is None:
        table = _arrow_parse(data, spec, typed=False)
        if table is None or table.num_rows != len(good_lines):
            raise RuntimeError(
                f"{spec.what}: Arrow could not parse lines {block.first_line}-"
                f"{block.first_line + n_block - 1} that passed the line checks; please report this "
                "with the file (a bug in the adapter)"
            )
        parsed = Parsed(lines, ok, table, errors, excerpts)
        return _convert_text_columns(parsed, spec, block)
    if table.num_rows != len(good_lines):
        raise RuntimeError(
            f"{spec.what}: parsed {table.num_rows} rows from {len(good_lines)} good lines at lines "
            f"{block.first_line}-{block.first_line + n_block - 1}; please report this (a bug in the adapter)"
        )
    return Parsed(lines, ok, table, errors, excerpts)


def _line_reason(content: bytes, total: int, spec: DelimitedSpec, max_line_bytes: int) -> str | None:
    """Why one line cannot be a record of ``spec``, or None when it is fine at the line level."""
    problem = _line_problem(content, total, max_line_bytes)
    if problem is not None:
        return problem
    text, problem = _decode_or_reason(content)
    if text is None:
        return problem
    if "\r" in text:
        return f"stray carriage return: CR inside the line at character {text.index(chr(13))}"
    got = text.count(spec.sep.decode()) + 1
    if got != len(spec.names):
        names = ",".join(spec.names) if len(spec.names) <= 10 else "see its header"
        return (
            f"wrong field count: expected {len(spec.names)} {spec.sep_name}-separated fields "
            f"({spec.what}: {names}), got {got}"
        )
    return None


def _convert_text_columns(parsed: Parsed, spec: DelimitedSpec, block: LineBlock) -> Parsed:
    """Convert text columns to the spec's types; a value that does not convert fails its row."""
    table = parsed.table
    good_rows = np.flatnonzero(parsed.ok)
    bad = np.zeros(table.num_rows, dtype=bool)
    messages: dict[int, list[str]] = {}
    columns: dict[str, pa.Array] = {}
    for name, target in spec.types.items():
        text = table[name].combine_chunks()
        if pa.types.is_string(target) or pa.types.is_dictionary(target):
            columns[name] = text
            continue
        values = text.to_numpy(zero_copy_only=False)
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        wrong = ~pd.isna(values) & np.isnan(numbers)
        kind = "a number"
        if pa.types.is_integer(target):
            with np.errstate(invalid="ignore"):
                wrong |= ~np.isnan(numbers) & ((np.mod(numbers, 1) != 0) | (np.abs(numbers) >= 2.0**63))
            kind = "a 64-bit integer"
        for pos in np.flatnonzero(wrong).tolist():
            messages.setdefault(pos, []).append(
                f"bad number: field {name} value {show(values[pos])} is not {kind} ({spec.what})"
            )
        bad |= wrong
        numbers[wrong] = np.nan
        if pa.types.is_integer(target):
            columns[name] = pa.array(numbers, mask=np.isnan(numbers), from_pandas=True).cast(target)
        else:
            columns[name] = pa.array(numbers, mask=np.isnan(numbers) & pd.isna(values), type=target)
    parsed.table = pa.table(columns)
    if bad.any():
        rows = np.flatnonzero(bad)
        parsed.fail(good_rows[rows], ["; ".join(messages[int(r)]) for r in rows], block)
        parsed.table = parsed.table.filter(pa.array(~bad))
    return parsed


# --------------------------------------------------------------------------------------------
# Column helpers
# --------------------------------------------------------------------------------------------


INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "INVALID"})()
"""What a vocabulary mapping returns for a value outside its closed vocabulary."""


def dict_map(column: pa.Array | pa.ChunkedArray, mapping: Callable[[str], Any] | None = None) -> np.ndarray:
    """A string column as an object array, ``mapping`` applied once per distinct value.

    Dictionary-encoding first means one Python object per distinct value (hosts, users, types
    repeat millions of times), and ``mapping`` (e.g. ``'?'`` -> None, a domain lookup) runs
    once per distinct value. Nulls stay None.
    """
    return dict_map_checked(column, mapping)[0]


def dict_map_checked(
    column: pa.Array | pa.ChunkedArray, mapping: Callable[[str], Any] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``dict_map`` plus a mask of the rows ``mapping`` sent to ``INVALID`` (None when none).

    Rows that map to ``INVALID`` hold None in the returned values.
    """
    if len(column) == 0:
        return np.empty(0, dtype=object), None
    uniques, indices = codes(column)
    if mapping is not None:
        uniques = [mapping(u) for u in uniques]
    bad_codes = [i for i, u in enumerate(uniques) if u is INVALID]
    lookup = np.empty(len(uniques) + 1, dtype=object)
    lookup[:-1] = uniques
    lookup[-1] = None
    invalid = None
    if bad_codes:
        lookup[bad_codes] = None
        invalid = np.isin(indices, bad_codes)
    return lookup[indices], invalid


def dict_map_float(column: pa.Array | pa.ChunkedArray, mapping: Callable[[str], float | None]) -> np.ndarray:
    """Like ``dict_map`` for a mapping to numbers: float64, NaN for null and for None."""
    if len(column) == 0:
        return np.empty(0, dtype=np.float64)
    uniques, indices = codes(column)
    mapped = [mapping(u) for u in uniques]
    lookup = np.array([np.nan if v is None else v for v in mapped] + [np.nan], dtype=np.float64)
    return lookup[indices]


def codes(column: pa.Array | pa.ChunkedArray) -> tuple[list[Any], np.ndarray]:
    """Distinct values (Python objects) and each row's index into them; nulls get ``len(values)``.

    A column Arrow already read as dictionary (``DICT`` in a ``DelimitedSpec``) is used as is.
    """
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        # dictionary_encode gives every chunk one shared dictionary; Arrow's CSV reader gives
        # each chunk its own, which unify_dictionaries merges (cheap: dictionaries are small).
        encoded = encoded.unify_dictionaries()
        dictionary = encoded.chunk(0).dictionary
        parts = [c.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False) for c in encoded.chunks]
        indices = np.concatenate(parts) if len(parts) > 1 else parts[0]
    else:
        dictionary = encoded.dictionary
        indices = encoded.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
    return dictionary.to_pylist(), indices


def numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as a writable float64 array, NaN for null."""
    if isinstance(column, pa.ChunkedArray) and column.num_chunks == 0:
        return np.empty(0, dtype=np.float64)
    out = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return out if out.flags.writeable else out.copy()


def _strings_from(prefix: str, numbers_: np.ndarray) -> np.ndarray:
    """``prefix + str(n)`` for each n, as an object array (Arrow builds the text in C++)."""
    if len(numbers_) == 0:
        return np.empty(0, dtype=object)
    text = pc.cast(pa.array(numbers_, type=pa.int64()), pa.string())
    return pc.binary_join_element_wise(prefix, text, "").to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------------------------
# Assembling a canonical chunk
# --------------------------------------------------------------------------------------------


def build_chunk(
    *,
    adapter: str,
    ref_name: str,
    line_numbers: np.ndarray,
    ok: np.ndarray,
    values: dict[str, np.ndarray],
    errors: dict[int, str],
    excerpts: dict[int, str],
) -> pd.DataFrame:
    """One canonical chunk: the contract's columns and dtypes plus ``parse_error`` / ``raw_excerpt``.

    Args:
        adapter: the ``source`` value and event id prefix.
        ref_name: the file name in ``raw_ref`` (``<ref_name>:<line>``).
        line_numbers: 1-based line number of every row.
        ok: per row, True when it became an event.
        values: canonical column -> values for the ok rows only, in order: object arrays for
            text and booleans (None = null), float64 for numbers and labels (NaN = null),
            int64 nanoseconds since the Unix epoch for ``ts``. ``event_id`` entries that are
            None fall back to ``<adapter>:<ref_name>:<line>``.
        errors / excerpts: row -> parse_error / raw_excerpt for the failed rows.
    """
    n = len(line_numbers)
    ok_rows = np.flatnonzero(ok)
    all_ok = len(ok_rows) == n

    def expand(given: Any, fill: Any, dtype: Any) -> np.ndarray:
        if all_ok and not np.isscalar(given):
            return np.asarray(given, dtype=dtype)
        full = np.full(n, fill, dtype=dtype)
        full[ok_rows] = given
        return full

    columns: dict[str, Any] = {}
    for col in schema.COLUMNS:
        name, dtype = col.name, col.dtype
        given = values.get(name)
        if name in ("event_id", "raw_ref", "source"):
            continue
        if dtype == "string" and (given is None or (all_ok and isinstance(given, str))):
            columns[name] = _constant_strings(given, n)  # all null, or one value for every row
        elif name == "ts":
            raw = np.full(n, _NAT, dtype=np.int64) if given is None else expand(given, _NAT, np.int64)
            columns[name] = _typed(raw, dtype)
        elif name in _FLOAT_FIELDS:
            raw = np.full(n, np.nan) if given is None else expand(given, np.nan, np.float64)
            columns[name] = _typed(raw, dtype)
        else:
            raw = np.full(n, None, dtype=object) if given is None else expand(given, None, object)
            columns[name] = _typed(raw, dtype)
    default_ids = _strings_from(f"{adapter}:{ref_name}:", line_numbers)
    ids = values.get("event_id")
    if ids is not None:
        ids = expand(ids, None, object)
        missing = pd.isna(ids)
        columns["event_id"] = _typed(np.where(missing, default_ids, ids), "string")
    else:
        columns["event_id"] = _str_only(default_ids)
    columns["source"] = _constant_strings(adapter, n)
    columns["raw_ref"] = _str_only(_strings_from(f"{ref_name}:", line_numbers))
    if errors:
        parse_error = np.full(n, None, dtype=object)
        raw_excerpt = np.full(n, None, dtype=object)
        for row, reason in errors.items():
            parse_error[row] = reason
            raw_excerpt[row] = excerpts.get(row)
        columns["parse_error"] = _typed(parse_error, "string")
        columns["raw_excerpt"] = _typed(raw_excerpt, "string")
    else:
        columns["parse_error"] = _constant_strings(None, n)
        columns["raw_excerpt"] = _constant_strings(None, n)
    ordered = {name: columns[name] for name in _CONTRACT_COLUMNS}
    return conformed(pd.DataFrame(ordered, copy=False), source=adapter)


_TEMPLATES: dict[tuple[str | None, int], pd.arrays.StringArray] = {}


def _constant_strings(value: str | None, n: int) -> pd.arrays.StringArray:
    """A string column holding ``value`` (None: null) in all ``n`` rows.

    Validating a million-row StringArray costs ~20 ms; a copy of a validated one ~4 ms, so the
    few constant columns of each chunk (all-null fields, event_type, source) copy a template.
    """
    key = (value, n)
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) >= 8:  # bounded: at most 8 arrays of one chunk's length
            _TEMPLATES.clear()
        filled = np.empty(n, dtype=object)
        # ndarray.fill stores the one object in every slot; np.full(n, "auth", dtype=object)
        # goes through a numpy str_ array and makes n separate str objects (slow, and n times
        # the memory).
        filled.fill(value)
        template = _TEMPLATES[key] = pd.arrays.StringArray(filled)
    return template.copy()


_NO_STRINGS = pd.arrays.StringArray(np.empty(0, dtype=object))


def _str_only(values: np.ndarray) -> pd.arrays.StringArray:
    """An object array that holds only ``str`` (Arrow made it, no nulls) as a StringArray.

    StringArray's constructor checks every value (~15-25 ns a row); these arrays cannot fail
    the check, so they are wrapped as they are (pandas' own path for backing data it trusts).
    """
    return _NO_STRINGS._from_backing_data(values)


def addresses(values: np.ndarray) -> np.ndarray:
    """The addresses of the objects in an object array, as int64 (a copy; nothing is changed).

    Comparing addresses tells the None / True / False singletons (or one shared object) apart
    from everything else without touching the objects: ~0.5 ns a row instead of ~20-50.
    """
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    values = np.ascontiguousarray(values)  # held here while its pointers are read
    buffer = (ctypes.c_int64 * n).from_address(values.ctypes.data)
    return np.frombuffer(buffer, dtype=np.int64).copy()


def _strings(values: np.ndarray) -> pd.arrays.StringArray:
    """A StringArray of an object array of str / None, checked once per distinct object.

    Adapters map text columns through a lookup of distinct values, so a column of a million
    rows holds a few thousand objects: those are checked (and None made pd.NA), and the rows
    only indexed. Columns with many distinct objects take StringArray's per-row check.
    """
    n = len(values)
    if n < 1024:
        return pd.arrays.StringArray(values)
    values = np.ascontiguousarray(values)
    codes, _ = pd.factorize(addresses(values))  # one code per distinct object
    if codes.max() >= n // 8:
        return pd.arrays.StringArray(values)
    running = np.maximum.accumulate(codes)
    distinct = values[np.flatnonzero(np.diff(running, prepend=-1) > 0)]  # one per code, in code order
    if not all(v is None or type(v) is str for v in distinct):
        return pd.arrays.StringArray(values)  # raises for what is not text, converts NaN
    lookup = np.empty(len(distinct), dtype=object)
    lookup[:] = [pd.NA if v is None else v for v in distinct]
    return _NO_STRINGS._from_backing_data(lookup[codes])


def _typed(values: np.ndarray, dtype: str) -> Any:
    """``values`` as a pandas array of the contract dtype ``dtype``, built without copying."""
    if dtype == "string":
        return _strings(values)  # str or None (-> NA) only
    if dtype.startswith("datetime64"):
        return pd.DatetimeIndex(values.view("M8[ns]")).tz_localize("UTC").array
    if dtype == "boolean":
        # Adapters map to the True / False / None singletons: compared by address, ~0.5 ns a row
        # where pd.isna and astype(bool) look at every object (~50 ns a row together).
        where = addresses(values)
        mask = where == id(None)
        flags = where == id(True)
        if not (mask | flags | (where == id(False))).all():  # other objects (np.bool_, NaN, ...)
            mask = pd.isna(values)
            flags = values.astype(bool) & ~mask  # None -> False, masked anyway
        return pd.arrays.BooleanArray(flags, mask)
    mask = np.isnan(values)
    if dtype == "Float64":
        return pd.arrays.FloatingArray(values, mask)
    if dtype in ("Int8", "Int16", "Int32", "Int64"):
        ints = np.where(mask, 0, values).astype(dtype.lower())
        if not np.array_equal(ints[~mask], values[~mask]):
            raise schema.SchemaError(f"values for a {dtype} column are not integers in its range")
        return pd.arrays.IntegerArray(ints, mask)
    raise schema.SchemaError(f"no builder for contract dtype {dtype!r}; extend _common._typed")


_CONTRACT_COLUMNS = [*schema.EVENT_COLUMNS, *schema.ENVELOPE_COLUMNS]


def conformed(frame: pd.DataFrame, *, source: str) -> pd.DataFrame:
    """``schema.conform(frame, source=source)``, without its two full copies when not needed.

    ``build_chunk`` builds every column in the contract's exact dtype, so conform would only
    copy the table twice (about 0.5 s per million rows, half the ingest budget). When the
    columns, order, dtypes and index already match the contract, the frame is returned as is
    (the result is equal to conform's, which the tests check); otherwise conform runs.
    """
    dtypes = frame.dtypes
    if (
        list(frame.columns) == _CONTRACT_COLUMNS
        and isinstance(frame.index, pd.RangeIndex)
        and frame.index.start == 0
        and frame.index.step == 1
        and all(str(dtypes[name]) == dtype for name, dtype in schema.EVENT_DTYPES.items())
        and all(str(dtypes[name]) == "string" for name in schema.ENVELOPE_COLUMNS)
    ):
        return frame
    return schema.conform(frame, source=source)


def sort_by_ts(chunk: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by ``ts`` (stable); rows without ts (parse errors) last, in line order."""
    nanos = chunk["ts"].array.asi8.copy()
    nanos[chunk["ts"].isna().to_numpy()] = np.iinfo(np.int64).max
    order = np.argsort(nanos, kind="stable")
    if (order == np.arange(len(order))).all():
        return chunk
    return chunk.take(order).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------


class RecordError(ValueError):
    """A JSON record that cannot become an event; the message is the row's ``parse_error``."""


# Order of the values a record mapper returns.
JSON_FIELDS: tuple[str, ...] = EVENT_FIELDS


def iter_json_events(
    path: Path,
    *,
    adapter: str,
    mapper: Callable[[dict[str, Any]], tuple[Any, ...]],
    chunk_rows: int,
    max_line_bytes: int,
    ts_unit: str,
    member: str | None = None,
    post: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream a JSON Lines file through ``mapper`` into canonical chunks.

    ``mapper`` gets each JSON object and returns one value per ``JSON_FIELDS`` entry (raw
    Python values: strings, numbers, booleans, None; ``ts`` as a number in ``ts_unit`` since
    the Unix epoch or an ISO-8601 string, naive meaning UTC) or raises ``RecordError``. Values
    are converted per chunk; a value that does not convert fails its row. Any other exception
    from the mapper fails its own line (``unreadable record: ...``), never the file; so do
    ``NaN`` / ``Infinity`` (JSON has neither) and nesting beyond the parser's recursion limit.
    """
    with open_input(path, member) as (handle, ref_name):
        rows: list[tuple[Any, ...]] = []
        texts: list[bytes] = []
        row_lines: list[int] = []
        bad: dict[int, tuple[int, str, str]] = {}  # position in chunk -> (line, reason, excerpt)
        lines = lines_until_break(_physical_lines(handle, path, max_line_bytes))
        for line_no, (content, total) in enumerate(lines, start=1):
            if content is None:  # the compressed stream broke: one row for the break, then the end
                bad[len(rows) + len(bad)] = (line_no, total, "")
                break
            reason = _json_line(content, total, max_line_bytes, mapper, rows)
            if reason is None:
                texts.append(content)
                row_lines.append(line_no)
            else:
                bad[len(rows) + len(bad)] = (line_no, reason, excerpt(content))
            if len(rows) + len(bad) >= chunk_rows:
                chunk = _json_chunk_guarded(adapter, ref_name, rows, texts, row_lines, bad, ts_unit)
                yield post(chunk) if post else chunk
                rows, texts, row_lines, bad = [], [], [], {}
        if rows or bad:
            chunk = _json_chunk_guarded(adapter, ref_name, rows, texts, row_lines, bad, ts_unit)
            yield post(chunk) if post else chunk


def _json_line(
    content: bytes,
    total: int,
    max_line_bytes: int,
    mapper: Callable[[dict[str, Any]], tuple[Any, ...]],
    rows: list[tuple[Any, ...]],
) -> str | None:
    """Map one JSON line, appending its values to ``rows``; the line's parse_error, or None."""
    if total > max_line_bytes or b"\x00" in content:
        return _line_problem(content, total, max_line_bytes)
    # Good path: the decoder reads the UTF-8 bytes; the precise reason for a bad line (empty,
    # binary, bad UTF-8, bad JSON) is worked out only when it fails.
    try:
        obj = loads_strict(content)
    except (ValueError, RecursionError) as exc:  # syntax, UTF-8, NaN / Infinity, nesting
        return _json_line_reason(content, total, max_line_bytes, exc)
    if type(obj) is not dict:
        return f"JSON not an object: got {type(obj).__name__}"
    try:
        values = mapper(obj)
    except RecordError as exc:
        return str(exc)
    except MemoryError:
        raise
    except Exception as exc:  # a value the mapper did not foresee: this record only
        return unreadable_reason(exc)
    if len(values) != len(JSON_FIELDS):
        return unreadable_reason(ValueError(f"the mapper gave {len(values)} values for {len(JSON_FIELDS)} fields"))
    rows.append(values)
    return None


def _json_line_reason(content: bytes, total: int, max_line_bytes: int, exc: BaseException) -> str:
    """The parse_error of a line the JSON decoder rejected, in files.py's categories."""
    problem = _line_problem(content, total, max_line_bytes)
    if problem is not None:
        return problem
    text, problem = _decode_or_reason(content)
    if text is None:
        return problem or "not valid UTF-8"
    return json_reason(exc)


def _json_chunk_guarded(
    adapter: str,
    ref_name: str,
    rows: list[tuple[Any, ...]],
    texts: list[bytes],
    row_lines: list[int],
    bad: dict[int, tuple[int, str, str]],
    ts_unit: str,
) -> pd.DataFrame:
    """``_json_chunk``; when its vectorised conversion raises, bisect to the record that does."""
    try:
        return _json_chunk(adapter, ref_name, rows, texts, row_lines, bad, ts_unit)
    except MemoryError:
        raise
    except Exception as exc:
        n = len(rows) + len(bad)
        if n == 1 and rows:
            return _json_chunk(adapter, ref_name, [], [], [], {0: (row_lines[0], unreadable_reason(exc),
                                                                   excerpt(texts[0]))}, ts_unit)
        if n <= 1:
            raise
        good_pos = [pos for pos in range(n) if pos not in bad]  # chunk position of each good row
        half = n // 2
        parts = []
        for start, stop in ((0, half), (half, n)):
            keep = [k for k, pos in enumerate(good_pos) if start <= pos < stop]
            parts.append(
                _json_chunk_guarded(
                    adapter,
                    ref_name,
                    [rows[k] for k in keep],
                    [texts[k] for k in keep],
                    [row_lines[k] for k in keep],
                    {pos - start: v for pos, v in bad.items() if start <= pos < stop},
                    ts_unit,
                )
            )
        return pd.concat(parts, ignore_index=True)


def _json_chunk(
    adapter: str,
    ref_name: str,
    rows: list[tuple[Any, ...]],
    texts: list[bytes],
    row_lines: list[int],
    bad: dict[int, tuple[int, str, str]],
    ts_unit: str,
) -> pd.DataFrame:
    n = len(rows) + len(bad)
    ok = np.ones(n, dtype=bool)
    ok[list(bad)] = False
    line_numbers = np.empty(n, dtype=np.int64)
    line_numbers[ok] = row_lines
    errors: dict[int, str] = {}
    excerpts: dict[int, str] = {}
    for pos, (line, reason, text) in bad.items():
        line_numbers[pos] = line
        errors[pos] = reason
        excerpts[pos] = text
    ok_rows = np.flatnonzero(ok)
    values: dict[str, np.ndarray] = {}
    failed = np.zeros(len(rows), dtype=bool)
    messages: dict[int, list[str]] = {}
    if rows:
        columns = list(zip(*rows, strict=True))
        for name, column in zip(JSON_FIELDS, columns, strict=True):
            if name == "ts":
                nanos, wrong = _json_timestamps(column, ts_unit)
                values[name] = nanos
                for pos in np.flatnonzero(wrong).tolist():
                    messages.setdefault(pos, []).append(
                        f"bad timestamp: value {show(column[pos])} is not ISO-8601 or epoch {ts_unit}"
                    )
                failed |= wrong
            elif name in _FLOAT_FIELDS:
                numbers_, wrong = _json_numbers(column, schema.EVENT_DTYPES[name])
                values[name] = numbers_
                for pos in np.flatnonzero(wrong).tolist():
                    messages.setdefault(pos, []).append(
                        f"bad number: field {name} value {show(column[pos])} is not a finite number"
                        + ("" if schema.EVENT_DTYPES[name] == "Float64" else " in the column's integer range")
                    )
                failed |= wrong
            else:
                objects, wrong = _json_objects(column, schema.EVENT_DTYPES[name])
                values[name] = objects
                for pos in np.flatnonzero(wrong).tolist():
                    messages.setdefault(pos, []).append(
                        f"bad value: field {name} value {show(column[pos])} is not a {schema.EVENT_DTYPES[name]}"
                    )
                failed |= wrong
        if failed.any():
            for pos in np.flatnonzero(failed).tolist():
                row = int(ok_rows[pos])
                errors[row] = "; ".join(messages[pos])
                excerpts[row] = excerpt(texts[pos])
            ok[ok_rows[failed]] = False
            values = {k: v[~failed] for k, v in values.items()}
    return build_chunk(
        adapter=adapter,
        ref_name=ref_name,
        line_numbers=line_numbers,
        ok=ok,
        values=values,
        errors=errors,
        excerpts=excerpts,
    )


_INT_RANGES = {"Int8": (-(2**7), 2**7 - 1), "Int32": (-(2**31), 2**31 - 1)}


def _json_numbers(column: Sequence[Any], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A mapper's numbers (or None) as float64 (NaN = null) and a mask of values that are not
    finite numbers (NaN, infinity, an int beyond float64, a non-number, a non-integer or an
    out-of-range value for an integer column): those rows fail, they are never nulled."""
    present = np.fromiter((v is not None for v in column), dtype=bool, count=len(column))
    try:
        numbers_ = np.array(column, dtype=np.float64)  # None -> NaN
        if numbers_.ndim != 1:
            raise ValueError("nested values")
    except (TypeError, ValueError, OverflowError):  # a text, a list, an int beyond float64
        numbers_ = np.array([_one_float(v) for v in column], dtype=np.float64)
    wrong = present & ~np.isfinite(numbers_)
    bool_values = np.fromiter((type(v) is bool for v in column), dtype=bool, count=len(column))
    wrong |= bool_values
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        with np.errstate(invalid="ignore"):
            wrong |= present & ((np.mod(numbers_, 1) != 0) | (numbers_ < lo) | (numbers_ > hi))
    numbers_[wrong] = np.nan
    return numbers_, wrong


def _one_float(value: Any) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return np.nan
    try:
        return float(value)
    except OverflowError:
        return np.nan


def _json_objects(column: Sequence[Any], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A mapper's text / boolean values as an object array and a mask of values of another type."""
    kind = str if dtype == "string" else bool
    values = np.array(column, dtype=object)
    if values.ndim != 1:  # nested values of equal length: numpy made a 2-D array of them
        values = np.empty(len(column), dtype=object)
        for i, value in enumerate(column):
            values[i] = value
    wrong = np.fromiter((v is not None and type(v) is not kind for v in column), dtype=bool, count=len(column))
    if wrong.any():
        values[wrong] = None
    return values, wrong


_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# Epoch values representable in datetime64[ns]: about 1678..2262.
_MAX_EPOCH_NS = 9.2e18


def _json_timestamps(column: Sequence[Any], unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (numbers in ``unit`` or ISO-8601 strings) as int64 ns; and a mask of bad ones.

    Integers are scaled exactly; floats are split into whole and fractional units so float
    rounding never shifts the whole part (1709287200123 ms stays .123000000).
    """
    n = len(column)
    nanos = np.full(n, _NAT, dtype=np.int64)
    per_unit = _UNIT_NS[unit]
    limit = _MAX_EPOCH_NS / per_unit
    kinds = [type(v) for v in column]
    ints = [i for i, k in enumerate(kinds) if k is int]  # bool is not a timestamp
    if ints:
        raw = [column[i] for i in ints]
        fine = [i for i, v in zip(ints, raw, strict=True) if abs(v) < limit]
        if fine:
            nanos[fine] = np.array([column[i] for i in fine], dtype=np.int64) * per_unit
    floats = np.array([i for i, k in enumerate(kinds) if k is float], dtype=np.int64)
    if len(floats):
        value = np.array([column[i] for i in floats], dtype=np.float64)
        fine = np.isfinite(value) & (np.abs(value) < limit)
        whole = np.floor(value[fine])
        frac = np.round((value[fine] - whole) * per_unit).astype(np.int64)
        nanos[floats[fine]] = whole.astype(np.int64) * per_unit + frac
    texts = [i for i, k in enumerate(kinds) if k is str]
    if texts:
        parsed = pd.to_datetime(
            pd.Series([column[i] for i in texts], dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        good = parsed.notna().to_numpy()
        idx = np.array(texts, dtype=np.int64)
        nanos[idx[good]] = parsed.astype("datetime64[ns, UTC]").array.asi8[good]
    return nanos, nanos == _NAT


def first_lines(path: Path, n: int = 20, max_bytes: int = 65536, member: str | None = None) -> list[bytes]:
    """Up to ``n`` non-empty lines from the start of ``path`` (decompressed), for sniffing."""
    out: list[bytes] = []
    pieces: list[bytes] = []
    with open_input(path, member) as (handle, _):
        # read1, like the block reader: a truncated gzip raises on the read that reaches the
        # break, and what the earlier reads returned is still there to sniff the format from.
        read = getattr(handle, "read1", handle.read)
        size = 0
        while size < max_bytes:
            try:
                piece = read(min(8192, max_bytes - size))
            except STREAM_ERRORS:
                break
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
    head = b"".join(pieces)
    for line in head.split(b"\n")[:-1] if b"\n" in head else [head]:
        line = line.rstrip(b"\r")
        if line.strip():
            out.append(line)
        if len(out) >= n:
            break
    return out


def broken_chunk(block: LineBlock, *, adapter: str, ref_name: str) -> pd.DataFrame:
    """The one-row chunk that quarantines a break in a compressed stream (``block.broken``)."""
    return build_chunk(
        adapter=adapter,
        ref_name=ref_name,
        line_numbers=np.array([block.first_line], dtype=np.int64),
        ok=np.zeros(1, dtype=bool),
        values={},
        errors={0: str(block.broken)},
        excerpts={0: excerpt(block.line(0))},
    )


def unreadable_chunk(block: LineBlock, line: int, exc: BaseException, *, adapter: str, ref_name: str) -> pd.DataFrame:
    """One row for block line ``line`` whose conversion raised ``exc``."""
    return build_chunk(
        adapter=adapter,
        ref_name=ref_name,
        line_numbers=np.array([block.first_line + line], dtype=np.int64),
        ok=np.zeros(1, dtype=bool),
        values={},
        errors={0: unreadable_reason(exc)},
        excerpts={0: excerpt(block.line(line))},
    )


def convert_guarded(
    convert: Callable[[np.ndarray | None], list[pd.DataFrame]],
    block: LineBlock,
    select: np.ndarray | None = None,
    *,
    adapter: str,
    ref_name: str,
    keep: tuple[type[Exception], ...] = (),
) -> list[pd.DataFrame]:
    """``convert(select)`` (the chunks of the selected lines of ``block``), one bad line isolated.

    A block is converted with whole-column operations, so one unexpected value could raise for
    all of it. When ``convert`` raises (anything but MemoryError and the ``keep`` types, which
    are file-level errors with their own message), the selected lines are bisected and converted
    again; a single line that still raises becomes an ``unreadable record`` row. The chunks come
    back in line order.
    """
    try:
        return convert(select)
    except MemoryError:
        raise
    except Exception as exc:
        if keep and isinstance(exc, keep):
            raise
        lines = np.arange(block.n_lines) if select is None else np.flatnonzero(select)
        if len(lines) == 0:
            raise
        if len(lines) == 1:
            return [unreadable_chunk(block, int(lines[0]), exc, adapter=adapter, ref_name=ref_name)]
        out: list[pd.DataFrame] = []
        for part in np.array_split(lines, 2):
            mask = np.zeros(block.n_lines, dtype=bool)
            mask[part] = True
            out.extend(convert_guarded(convert, block, mask, adapter=adapter, ref_name=ref_name, keep=keep))
        return out


def concat_chunks(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    """Chunks of one block as one (the usual case is a single chunk: no copy)."""
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def reject_rows(
    parsed: Parsed, block: LineBlock, values: dict[str, np.ndarray], mask: np.ndarray, reasons: Sequence[str]
) -> dict[str, np.ndarray]:
    """Fail the parsed rows where ``mask`` is true (``mask`` and ``values`` index the ok rows).

    Returns ``values`` without those rows; ``parsed`` records the reasons and excerpts.
    """
    if not mask.any():
        return values
    ok_rows = np.flatnonzero(parsed.ok)
    parsed.fail(ok_rows[mask], reasons, block)
    return {name: column if np.isscalar(column) else column[~mask] for name, column in values.items()}


# --------------------------------------------------------------------------------------------
# Vocabulary shared by the authentication formats (LANL, Windows, OCSF)
# --------------------------------------------------------------------------------------------

_AUTH_TYPE_NAMES: dict[str, str] = {
    "kerberos": "kerberos",
    "ntlm": "ntlm",
    "ntlmv1": "ntlm",
    "ntlmv2": "ntlm",
    "ntlm v1": "ntlm",
    "ntlm v2": "ntlm",
    # MSV1_0 is the package that performs NTLM (local accounts, NTLM credential validation).
    "msv1_0": "ntlm",
    "negotiate": "negotiate",
}
_LOGON_TYPE_NAMES: dict[str, str] = {
    "interactive": "interactive",
    "cachedinteractive": "interactive",
    "network": "network",
    "networkcleartext": "network",
    "remoteinteractive": "remote_interactive",
    "cachedremoteinteractive": "remote_interactive",
    "service": "service",
    "osservice": "service",
    "batch": "batch",
    "unlock": "unlock",
    "cachedunlock": "unlock",
}
# Windows logon type numbers; OCSF's logon_type_id uses the same numbers.
LOGON_TYPE_IDS: dict[int, str | None] = {
    0: "other",  # System
    1: "other",  # OCSF: System
    2: "interactive",
    3: "network",
    4: "batch",
    5: "service",
    7: "unlock",
    8: "network",  # NetworkCleartext
    9: "other",  # NewCredentials
    10: "remote_interactive",
    11: "interactive",  # CachedInteractive
    12: "remote_interactive",  # CachedRemoteInteractive
    13: "unlock",  # CachedUnlock
    99: "other",
}
UNKNOWN_TEXT = frozenset({"", "?", "-", "unknown", "n/a", "null", "none"})


def auth_type_of(name: str | None) -> str | None:
    """An authentication package / protocol name in the contract's domain (None if unknown).

    Kerberos, NTLM (and MICROSOFT_AUTHENTICATION_PACKAGE_V1_0 = MSV1_0, the NTLM package),
    Negotiate; ``?``, ``-``, empty, ``Unknown`` -> None; anything else -> ``"other"``.
    """
    if name is None:
        return None
    key = name.strip().lower()
    if key in UNKNOWN_TEXT:
        return None
    if key.startswith("microsoft_authentication_package"):
        return "ntlm"
    return _AUTH_TYPE_NAMES.get(key, "other")


def whole_number(value: Any) -> int | None:
    """An integer from a JSON value: an int, a float with no fraction, or ASCII digits; else None.

    Booleans, NaN, infinities, lists and text such as ``"²"`` (a digit to ``str.isdigit`` but
    not to ``int``) are not numbers here, so a caller can quarantine the record with a reason.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # False for NaN and infinities
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
    return None


def logon_type_of(name: str | int | None) -> str | None:
    """A logon type name (``RemoteInteractive``) or number (10) in the contract's domain.

    ``?``, ``-``, empty, ``Unknown`` -> None; a known name or number -> its domain value;
    anything else (e.g. NewCredentials) -> ``"other"``.
    """
    if name is None:
        return None
    if isinstance(name, int) and not isinstance(name, bool):
        return LOGON_TYPE_IDS.get(name, "other")
    key = str(name).strip().lower()
    if key in UNKNOWN_TEXT:
        return None
    if key.isascii() and key.isdigit():
        return LOGON_TYPE_IDS.get(int(key), "other")
    key = key.replace(" ", "").replace("_", "").replace("-", "")
    return _LOGON_TYPE_NAMES.get(key, "other")


def protocol_of(name: str | int | None) -> str | None:
    """A transport protocol name or IANA number in the contract's domain (tcp, udp, icmp, other)."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if key in UNKNOWN_TEXT:
        return None
    key = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp", "icmpv6": "icmp", "icmp6": "icmp"}.get(
        key, key
    )
    return key if key in ("tcp", "udp", "icmp") else "other"
