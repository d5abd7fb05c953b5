"""LANL "Comprehensive, Multi-Source Cyber-Security Events" (Kent, 2015) into the event contract.

The data set (https://csr.lanl.gov/data/cyber1/) is four comma-separated files without a header,
one event per line, plus the red-team file that labels some authentications:

==========  =====================================================================================
kind        fields
==========  =====================================================================================
auth        time, source user@domain, destination user@domain, source computer, destination
            computer, authentication type, logon type, authentication orientation,
            success/failure
proc        time, user@domain, computer, process name, start/end
flows       time, duration, source computer, source port, destination computer, destination port,
            protocol, packet count, byte count
dns         time, source computer, computer resolved
redteam     time, user@domain, source computer, destination computer (labels, see below)
==========  =====================================================================================

``time`` is whole seconds since the data set's own, undisclosed epoch; ``ts = epoch + time``
with a configurable ``epoch`` (default ``DEFAULT_EPOCH`` = 2026-01-01 00:00 UTC, so the 58 days
of the data set fall in a range validation accepts by default; only differences in time carry
meaning). Mapping, per kind:

* auth -> ``event_type="auth"``: user = source user@domain (kept whole, as in the red-team
  file), src_host / dst_host = source / destination computer, auth_type and logon_type mapped
  to the contract's domains (``?`` -> null; MICROSOFT_AUTHENTICATION_PACKAGE_V1_0 -> ntlm;
  CachedInteractive -> interactive, NetworkCleartext -> network, NewCredentials and other
  rare values -> other), success = ``Success`` / ``Fail`` (``?`` -> null). The destination user
  and the orientation (LogOn, LogOff, TGS, TGT, AuthMap, ...) have no column in the contract and
  are not kept: every orientation is an ``auth`` event.
* proc -> ``event_type="process_start"`` for ``Start`` lines: user, src_host = the computer,
  process = the process name. ``End`` lines have no event type in the contract: they become
  rows with ``parse_error`` ``"unsupported event: ..."`` (so they are counted and quarantined,
  never silently dropped).
* flows -> ``event_type="network_flow"``: src_host / dst_host, dst_port (numeric ports only;
  LANL anonymises uncommon ports as ``N<number>``, which become null), protocol by IANA number
  (6 tcp, 17 udp, 1 icmp, else other), packets = packet count, bytes_out = byte count (LANL
  gives one byte count per flow, counted from the source; bytes_in stays null), duration_s.
* dns -> ``event_type="dns"``: src_host = source computer, dst_host = computer resolved.

Labels: with ``redteam`` (the path of redteam.txt[.gz], or the tuples from ``load_redteam``),
an auth event whose (time, source user, source computer, destination computer) appears in the
red-team file gets ``label=1, label_detail="redteam"``; every other event label 0 (the
red-team file is the data set's complete list of known attack events). Without ``redteam``
labels are null.

Lines in = rows out: a line that cannot be parsed (wrong field count, empty, bad bytes, a
non-integer time, an unknown success/failure or start/end value) is a row with ``parse_error``
and ``raw_excerpt``; ``raw_ref`` and the event id are ``<file name>:<line>`` and
``lanl:<file name>:<line>`` (LANL has no event ids). Rows keep file order (LANL files are
sorted by time). Parsing is vectorised (Arrow's multi-threaded CSV reader on blocks of whole
lines, see ``_common``); only lines that fail take a per-line path.
"""

from __future__ import annotations

import gzip
from collections.abc import Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from anomaly_pipeline.sources import _common as common

ADAPTER = "lanl"
KINDS: tuple[str, ...] = ("auth", "proc", "flows", "dns")
DEFAULT_EPOCH = pd.Timestamp("2026-01-01", tz="UTC")
REDTEAM_DETAIL = "redteam"

RedTeam = frozenset[tuple[int, str, str, str]]

_S = pa.string()
_I = pa.int64()
_F = pa.float64()
_D = common.DICT  # low-cardinality text: Arrow builds the dictionary while parsing
SPECS: dict[str, common.DelimitedSpec] = {
    "auth": common.DelimitedSpec(
        "LANL auth",
        (
            "time",
            "source user@domain",
            "destination user@domain",
            "source computer",
            "destination computer",
            "authentication type",
            "logon type",
            "authentication orientation",
            "success/failure",
        ),
        {
            "time": _I,
            "source user@domain": _D,
            "source computer": _D,
            "destination computer": _D,
            "authentication type": _D,
            "logon type": _D,
            "success/failure": _D,
        },
    ),
    "proc": common.DelimitedSpec(
        "LANL proc",
        ("time", "user@domain", "computer", "process name", "start/end"),
        {"time": _I, "user@domain": _S, "computer": _S, "process name": _S, "start/end": _D},
    ),
    "flows": common.DelimitedSpec(
        "LANL flows",
        (
            "time",
            "duration",
            "source computer",
            "source port",
            "destination computer",
            "destination port",
            "protocol",
            "packet count",
            "byte count",
        ),
        {
            "time": _I,
            "duration": _F,
            "source computer": _S,
            "destination computer": _S,
            "destination port": _S,
            "protocol": _D,
            "packet count": _F,
            "byte count": _F,
        },
    ),
    "dns": common.DelimitedSpec(
        "LANL dns",
        ("time", "source computer", "computer resolved"),
        {"time": _I, "source computer": _S, "computer resolved": _S},
    ),
}


def iter_lanl(
    path: str | Path,
    *,
    kind: str = "auto",
    chunk_rows: int = common.DEFAULT_CHUNK_ROWS,
    epoch: str | datetime | pd.Timestamp = DEFAULT_EPOCH,
    redteam: str | Path | Collection[tuple[int, str, str, str]] | None = None,
    max_line_bytes: int = common.DEFAULT_MAX_LINE_BYTES,
    member: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream one LANL file (auth, proc, flows or dns; plain, gzip or zip) as canonical chunks.

    Args:
        path: the file, e.g. ``auth.txt.gz``.
        kind: ``"auth"``, ``"proc"``, ``"flows"``, ``"dns"`` or ``"auto"`` (from the file name,
            else from the first line's shape).
        chunk_rows: most rows (lines) per yielded chunk. Memory follows it, not the file
            size: peak RSS measured on auth was ~0.35 GB at 100,000, ~0.75 GB at the default
            500,000 and ~1.2 GB at 1,000,000 (the yielded chunk, the one being built, Arrow).
        epoch: the instant LANL's ``time`` 0 stands for (naive means UTC).
        redteam: red-team labels: a path to redteam.txt[.gz], or tuples
            ``(time, user@domain, source computer, destination computer)`` from
            ``load_redteam``; None leaves labels null.
        max_line_bytes: longest accepted line in bytes (longer lines become parse_error rows).
        member: the file inside a zip archive, when ``path`` is one with several members.

    Yields:
        DataFrames with ``schema.EVENT_COLUMNS`` and the envelope columns ``parse_error`` /
        ``raw_excerpt``, one row per line, in file order.

    Raises:
        FileNotFoundError: ``path`` (or the red-team path) does not exist.
        ValueError: a bad argument, the kind cannot be detected, or the red-team file is
            malformed (its message names the line).
    """
    path = common.check_common_args(path, chunk_rows, max_line_bytes)
    if kind == "auto":
        kind = detect_lanl_kind(path, member=member)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or 'auto', got {kind!r}")
    epoch_ns = _epoch_ns(epoch)
    labels: RedTeam | None
    if redteam is None:
        labels = None
    elif isinstance(redteam, str | Path):
        labels = load_redteam(redteam)
    else:
        labels = frozenset(redteam)
    return _iterate(path, kind, chunk_rows, epoch_ns, labels, max_line_bytes, member)


def read_lanl(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The whole file as one table (concatenated ``iter_lanl`` chunks); kwargs as there."""
    chunks = list(iter_lanl(path, **kwargs))
    return pd.concat(chunks, ignore_index=True) if chunks else common.empty_raw_events()


def load_redteam(path: str | Path) -> RedTeam:
    """The red-team events as ``(time, user@domain, source computer, destination computer)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not ``time,user@domain,source,destination`` (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"red-team file not found: {path}; pass the path of redteam.txt or redteam.txt.gz"
        )
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    out: set[tuple[int, str, str, str]] = set()
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            fields = text.split(",")
            if len(fields) != 4 or not (fields[0].strip().isascii() and fields[0].strip().isdigit()):
                raise ValueError(
                    f"{path}:{line_no}: not a red-team line 'time,user@domain,source computer,"
                    f"destination computer': {text[:100]!r}"
                )
            out.add((int(fields[0]), fields[1], fields[2], fields[3]))
    return frozenset(out)


def detect_lanl_kind(path: str | Path, *, member: str | None = None) -> str:
    """``auth``, ``proc``, ``flows`` or ``dns``: from the file name, else from the first line.

    Raises:
        ValueError: the file is the red-team file, or neither the name nor the first line tells.
    """
    path = Path(path)
    name = (member or path.name).lower()
    if "redteam" in name:
        raise ValueError(
            f"{path} is the red-team label file, not an event file; pass it as redteam=... "
            "when reading auth.txt"
        )
    for kind, word in (("auth", "auth"), ("proc", "proc"), ("flows", "flow"), ("dns", "dns")):
        if word in name:
            return kind
    lines = common.first_lines(path, n=1, member=member)
    guess = lanl_kind_of_line(lines[0]) if lines else None
    if guess is None:
        first = lines[0][:100] if lines else b"(empty file)"
        raise ValueError(
            f"{path}: cannot tell which LANL file this is from its name or first line {first!r}; "
            f"pass kind= one of {KINDS}"
        )
    return guess


def lanl_kind_of_line(line: bytes) -> str | None:
    """The LANL kind a line looks like, or None."""
    fields = line.rstrip(b"\r").split(b",")
    if not fields[0].isdigit():
        return None
    if len(fields) == 9:
        if b"@" in fields[1]:
            return "auth"
        if fields[1].isdigit():
            return "flows"
    if len(fields) == 5 and b"@" in fields[1] and fields[4] in (b"Start", b"End"):
        return "proc"
    if len(fields) == 3 and b"@" not in line:
        return "dns"
    return None


# --------------------------------------------------------------------------------------------


def _epoch_ns(epoch: str | datetime | pd.Timestamp) -> int:
    stamp = pd.Timestamp(epoch)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value)


def _iterate(
    path: Path,
    kind: str,
    chunk_rows: int,
    epoch_ns: int,
    labels: RedTeam | None,
    max_line_bytes: int,
    member: str | None,
) -> Iterator[pd.DataFrame]:
    spec = SPECS[kind]
    redteam_times = np.array(sorted({t for t, *_ in labels}), dtype=np.int64) if labels else None
    with common.open_input(path, member) as (handle, ref_name):
        for block in common.iter_line_blocks(handle, chunk_rows=chunk_rows, max_line_bytes=max_line_bytes):
            if block.broken:
                yield common.broken_chunk(block, adapter=ADAPTER, ref_name=ref_name)
                continue

            def convert(select: np.ndarray | None, block: common.LineBlock = block) -> list[pd.DataFrame]:
                return [_block_chunk(block, select, kind, spec, epoch_ns, labels, redteam_times, max_line_bytes,
                                     ref_name)]

            chunks = common.convert_guarded(convert, block, adapter=ADAPTER, ref_name=ref_name)
            yield common.concat_chunks(chunks)


def _block_chunk(
    block: common.LineBlock,
    select: np.ndarray | None,
    kind: str,
    spec: common.DelimitedSpec,
    epoch_ns: int,
    labels: RedTeam | None,
    redteam_times: np.ndarray | None,
    max_line_bytes: int,
    ref_name: str,
) -> pd.DataFrame:
    """The selected lines of ``block`` (all when ``select`` is None) as one canonical chunk."""
    convert = {"auth": _auth, "proc": _proc, "flows": _flows, "dns": _dns}[kind]
    parsed = common.parse_delimited(block, spec, max_line_bytes, select)
    time, reasons = _seconds(parsed.table, epoch_ns)
    values = convert(parsed.table, spec, reasons)
    values["ts"] = epoch_ns + time * _NS
    values["_time"] = time
    reject = common.addresses(reasons) != id(None)  # a reason (str) where a row is rejected
    values = common.reject_rows(parsed, block, values, reject, list(reasons[reject]))
    time = values.pop("_time")
    if labels is not None:
        label = np.zeros(len(time), dtype=np.float64)
        if kind == "auth" and redteam_times is not None and len(redteam_times):
            label = _redteam_labels(values, time, labels, redteam_times)
        values["label"] = label
        values["label_detail"] = np.where(label == 1, REDTEAM_DETAIL, None)
    return common.build_chunk(
        adapter=ADAPTER,
        ref_name=ref_name,
        line_numbers=block.first_line + parsed.lines,
        ok=parsed.ok,
        values=values,
        errors=parsed.errors,
        excerpts=parsed.excerpts,
    )


_NS = 1_000_000_000


def _seconds(table: pa.Table, epoch_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """LANL's time (int64 seconds, 0 where unusable) and a reason per row (None when fine).

    A time whose ``epoch + time`` does not fit datetime64[ns] (about 1678-2262) is unusable.
    """
    column = table["time"]
    time = np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    reasons = np.full(len(time), None, dtype=object)
    if column.null_count:
        reasons[column.is_null().to_numpy(zero_copy_only=False)] = "missing required field: time is empty"
    lo = (np.iinfo(np.int64).min + 1 - epoch_ns) // _NS + 1
    hi = (np.iinfo(np.int64).max - epoch_ns) // _NS - 1
    if len(time) and (time.min() < lo or time.max() > hi):
        for i in np.flatnonzero((time < lo) | (time > hi)).tolist():
            reasons[i] = (
                f"bad timestamp: time {int(time[i])} s is out of range for epoch + time (years 1678-2262)"
            )
        time = np.where((time < lo) | (time > hi), 0, time)
    return time, reasons


def _unknown_to_none(value: str) -> str | None:
    return None if value in ("?", "") else value


def _success(value: str) -> Any:
    return {"Success": True, "Fail": False, "?": None}.get(value, common.INVALID)


def _start_end(value: str) -> Any:
    return {"Start": "process_start", "End": _END}.get(value, common.INVALID)


_END = "End"
_END_REASON = (
    "unsupported event: process End (the event contract has process_start only; "
    "End lines are kept as quarantined rows so the counts reconcile)"
)


def _vocabulary(
    table: pa.Table, field: str, mapping: Any, allowed: str, spec: common.DelimitedSpec, reasons: np.ndarray
) -> np.ndarray:
    """Map a closed-vocabulary field; rows with another value get a reason (and None)."""
    values, invalid = common.dict_map_checked(table[field], mapping)
    if invalid is not None:
        raw = table[field].to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(invalid).tolist():
            text = f"bad value: field {field} value {common.show(raw[i])} is not {allowed} ({spec.what})"
            reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"
    return values


def _auth(table: pa.Table, spec: common.DelimitedSpec, reasons: np.ndarray) -> dict[str, Any]:
    return {
        "event_type": "auth",
        "user": common.dict_map(table["source user@domain"], _unknown_to_none),
        "src_host": common.dict_map(table["source computer"], _unknown_to_none),
        "dst_host": common.dict_map(table["destination computer"], _unknown_to_none),
        "auth_type": common.dict_map(table["authentication type"], common.auth_type_of),
        "logon_type": common.dict_map(table["logon type"], common.logon_type_of),
        "success": _vocabulary(table, "success/failure", _success, "Success, Fail or ?", spec, reasons),
    }


def _proc(table: pa.Table, spec: common.DelimitedSpec, reasons: np.ndarray) -> dict[str, Any]:
    event_type = _vocabulary(table, "start/end", _start_end, "Start or End", spec, reasons)
    end = event_type == _END
    if end.any():
        reasons[end & pd.isna(reasons)] = _END_REASON
    return {
        "event_type": event_type,
        "user": common.dict_map(table["user@domain"], _unknown_to_none),
        "src_host": common.dict_map(table["computer"], _unknown_to_none),
        "process": common.dict_map(table["process name"], _unknown_to_none),
    }


def _port(value: str) -> float | None:
    if value.isascii() and value.isdigit():
        port = int(value)
        return float(port) if port <= 65535 else None
    return None  # N<number>: an anonymised port


def _flows(table: pa.Table, spec: common.DelimitedSpec, reasons: np.ndarray) -> dict[str, Any]:
    return {
        "event_type": "network_flow",
        "src_host": common.dict_map(table["source computer"], _unknown_to_none),
        "dst_host": common.dict_map(table["destination computer"], _unknown_to_none),
        "dst_port": common.dict_map_float(table["destination port"], _port),
        "protocol": common.dict_map(table["protocol"], common.protocol_of),
        "packets": common.numbers(table["packet count"]),
        "bytes_out": common.numbers(table["byte count"]),
        "duration_s": common.numbers(table["duration"]),
    }


def _dns(table: pa.Table, spec: common.DelimitedSpec, reasons: np.ndarray) -> dict[str, Any]:
    return {
        "event_type": "dns",
        "src_host": common.dict_map(table["source computer"], _unknown_to_none),
        "dst_host": common.dict_map(table["computer resolved"], _unknown_to_none),
    }


def _redteam_labels(
    values: dict[str, np.ndarray], time: np.ndarray, labels: RedTeam, redteam_times: np.ndarray
) -> np.ndarray:
    """1.0 where (time, user, source, destination) is a red-team event, else 0.0."""
    label = np.zeros(len(time), dtype=np.float64)
    user, src, dst = values["user"], values["src_host"], values["dst_host"]
    # Only rows at a red-team second can match: a vectorised isin leaves a handful to compare.
    for i in np.flatnonzero(np.isin(time, redteam_times)).tolist():
        if (int(time[i]), user[i], src[i], dst[i]) in labels:
            label[i] = 1.0
    return label


__all__ = [
    "ADAPTER",
    "DEFAULT_EPOCH",
    "KINDS",
    "SPECS",
    "detect_lanl_kind",
    "iter_lanl",
    "lanl_kind_of_line",
    "load_redteam",
    "read_lanl",
]
