"""The DARPA 1998 / MIDAS edge stream into the event contract.

The file distributed with the MIDAS code (``darpa_original.csv``, 4,554,344 lines, also shipped
as ``darpa_original.zip``) has no header and one edge per line::

    src_ip,dst_ip,MM/DD/YYYY-HH:MM,label

IPs are zero-padded dotted quads (``172.016.112.020``), kept exactly as written (they are node
names in the benchmark; normalising them would change nothing but cost time). Time has minute
resolution; the data set does not state a zone and the times are taken as UTC. ``label`` is
``-`` for normal traffic, otherwise the attack name.

Mapping: ``event_type="network_flow"``, src_host / dst_host = the IPs, ts = the minute,
label = 0 for ``-`` else 1 with label_detail = the attack name; every other field is null.
``raw_ref`` / event id are ``<file name>:<line>`` / ``darpa:<file name>:<line>``; for a zip
member the file name is ``<archive>/<member>``.

Impossible dates: 10 lines of the published file (lines 4,536,629-4,536,638, attack
``httptunnel-e``) carry the date ``07/32/1998`` (05:31-05:35), between ``07/31/1998-23:59`` and
``08/01/1998-00:00`` in the stream. By default they are parse_error rows ("not a calendar
date"), so 4,554,334 edges arrive in order. ``roll_over_days=True`` reads a day past the end of
its month as the next month (``07/32`` -> ``08/01``), keeping all 4,554,344 edges; those 10
then lie 5.5 hours ahead of the ``08/01`` lines that follow them, and validation's order check
(per file, 1 hour tolerance by default) quarantines those 10 lines: fewer than half its window
of 31 following lines, they cannot move the order reference for the lines after them.

Order: rows keep the stream (file) order, which is the order the published ROC-AUC figures
score in; nothing is sorted. Note that 1998 lies before validation's default ``ts_min``
(2000-01-01): validate DARPA events with ``ValidationPolicy(ts_min="1998-01-01")``.

Lines in = rows out: a line with a wrong field count, bad bytes or an unparseable time is a
row with ``parse_error`` / ``raw_excerpt``. Reading is vectorised: Arrow's CSV reader on blocks
of whole lines, times parsed once per distinct minute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from anomaly_pipeline.sources import _common as common

ADAPTER = "darpa"
TIME_FORMAT = "%m/%d/%Y-%H:%M"
NORMAL_LABEL = "-"
SPEC = common.DelimitedSpec(
    "DARPA edge stream",
    ("src", "dst", "time", "label"),
    {"src": pa.string(), "dst": pa.string(), "time": pa.string(), "label": pa.string()},
)


def iter_darpa(
    path: str | Path,
    *,
    chunk_rows: int = common.DEFAULT_CHUNK_ROWS,
    max_line_bytes: int = common.DEFAULT_MAX_LINE_BYTES,
    member: str | None = None,
    roll_over_days: bool = False,
) -> Iterator[pd.DataFrame]:
    """Stream the DARPA edge file (.csv, .csv.gz, or a .zip member, streamed) as canonical chunks.

    Args:
        path: ``darpa_original.csv``, ``.csv.gz`` or ``darpa_original.zip``.
        chunk_rows: most rows (lines) per chunk.
        max_line_bytes: longest accepted line in bytes.
        member: the member to read when the zip archive holds several files.
        roll_over_days: read a day past the end of its month (``07/32/1998``) as the first
            days of the next month; False (default) makes such a line a parse_error row.

    Yields:
        DataFrames with ``schema.EVENT_COLUMNS`` plus ``parse_error`` / ``raw_excerpt``, one row
        per line, in file (stream) order.

    Raises:
        FileNotFoundError: no such file. ValueError: bad arguments or zip member.
    """
    path = common.check_common_args(path, chunk_rows, max_line_bytes)
    return _iterate(path, chunk_rows, max_line_bytes, member, roll_over_days)


def read_darpa(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The whole stream as one table (concatenated ``iter_darpa`` chunks); kwargs as there."""
    chunks = list(iter_darpa(path, **kwargs))
    return pd.concat(chunks, ignore_index=True) if chunks else common.empty_raw_events()


def looks_like_darpa(line: bytes) -> bool:
    """True when ``line`` reads ``a,b,MM/DD/YYYY-HH:MM,label`` (digits where the time has them)."""
    fields = line.rstrip(b"\r").split(b",")
    if len(fields) != 4 or not fields[0] or not fields[1] or b" " in fields[0] + fields[1]:
        return False
    t = fields[2]
    digits = t[0:2] + t[3:5] + t[6:10] + t[11:13] + t[14:16]
    return len(t) == 16 and t[2:3] + t[5:6] + t[10:11] + t[13:14] == b"//-:" and digits.isdigit()


def _iterate(
    path: Path, chunk_rows: int, max_line_bytes: int, member: str | None, roll_over_days: bool
) -> Iterator[pd.DataFrame]:
    with common.open_input(path, member) as (handle, ref_name):
        for block in common.iter_line_blocks(handle, chunk_rows=chunk_rows, max_line_bytes=max_line_bytes):
            if block.broken:
                yield common.broken_chunk(block, adapter=ADAPTER, ref_name=ref_name)
                continue

            def convert(select: np.ndarray | None, block: common.LineBlock = block) -> list[pd.DataFrame]:
                return [_block_chunk(block, select, max_line_bytes, roll_over_days, ref_name)]

            yield common.concat_chunks(common.convert_guarded(convert, block, adapter=ADAPTER, ref_name=ref_name))


def _block_chunk(
    block: common.LineBlock, select: np.ndarray | None, max_line_bytes: int, roll_over_days: bool, ref_name: str
) -> pd.DataFrame:
    """The selected lines of ``block`` (all when ``select`` is None) as one canonical chunk."""
    parsed = common.parse_delimited(block, SPEC, max_line_bytes, select)
    table = parsed.table
    ts, bad_time = _minutes(table["time"], roll_over_days)
    label_text = common.dict_map(table["label"])
    normal = label_text == NORMAL_LABEL
    values: dict[str, Any] = {
        "event_type": "network_flow",
        "ts": ts,
        "src_host": common.dict_map(table["src"]),
        "dst_host": common.dict_map(table["dst"]),
        "label": np.where(normal, 0.0, 1.0),
        "label_detail": np.where(normal, None, label_text),
    }
    if bad_time is not None:
        raw = table["time"].to_numpy(zero_copy_only=False)
        reasons = [
            f"bad timestamp: field time value {common.show(raw[i])} is not a calendar date and time "
            "MM/DD/YYYY-HH:MM"
            for i in np.flatnonzero(bad_time).tolist()
        ]
        values = common.reject_rows(parsed, block, values, bad_time, reasons)
    return common.build_chunk(
        adapter=ADAPTER,
        ref_name=ref_name,
        line_numbers=block.first_line + parsed.lines,
        ok=parsed.ok,
        values=values,
        errors=parsed.errors,
        excerpts=parsed.excerpts,
    )


def _minutes(column: pa.ChunkedArray, roll_over_days: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Times as int64 ns since the Unix epoch, parsed once per distinct value; bad-row mask."""
    if len(column) == 0:
        return np.empty(0, dtype=np.int64), None
    text, indices = common.codes(column)
    parsed = pd.to_datetime(pd.Series(text, dtype=object), format=TIME_FORMAT, errors="coerce")
    lookup = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    failed = np.flatnonzero(parsed.isna().to_numpy())
    if roll_over_days and len(failed):
        for code in failed.tolist():
            rolled = _rolled_over(str(text[code]))
            if rolled is not None:
                lookup[code] = rolled
        failed = np.array([c for c in failed.tolist() if lookup[c] == _NAT], dtype=np.int64)
    lookup = np.append(lookup, 0)  # the code of a null (never produced: the field is text)
    nanos = lookup[indices]
    bad = np.isin(indices, failed) if len(failed) else None
    if bad is not None:
        nanos = np.where(bad, 0, nanos)
    return nanos, bad


_NAT = np.iinfo(np.int64).min
_TIME_RE = re.compile(r"(\d\d)/(\d\d)/(\d{4})-(\d\d):(\d\d)")


def _rolled_over(text: str) -> int | None:
    """``MM/DD/YYYY-HH:MM`` with a day past the month's end, as ns (``07/32`` -> ``08/01``)."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        return None
    month, day, year, hour, minute = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 99 and hour <= 23 and minute <= 59):
        return None
    start = pd.Timestamp(year=year, month=month, day=1, hour=hour, minute=minute)
    return int((start + pd.Timedelta(days=day - 1)).value)


__all__ = ["ADAPTER", "SPEC", "iter_darpa", "looks_like_darpa", "read_darpa"]
