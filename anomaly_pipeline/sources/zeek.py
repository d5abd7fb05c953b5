"""Zeek ``conn.log`` (TSV with ``#`` headers, or JSON Lines) into the event contract.

TSV: the header lines ``#separator`` (``\\x09``), ``#set_separator``, ``#empty_field``
(``(empty)``), ``#unset_field`` (``-``), ``#path``, ``#open``, ``#fields``, ``#types`` and the
trailing ``#close`` are read, not turned into rows; the unset and empty markers mean null. A
``#fields`` line in the middle of the file (logs concatenated with ``cat``) switches the layout
from there on. Stratosphere's labelled captures append ``label`` and ``detailedlabel`` to
``#fields`` (tab-separated, as in /work/shared/datasets/stratosphere); the IoT-23 variant whose
last ``#fields`` entry is ``tunnel_parents   label   detailed-label`` (space-separated inside
one tab field, and likewise in the data lines) is read too.

JSON Lines: one object per line as Zeek's JSON writer emits it (``"id.orig_h"`` keys; a nested
``"id": {"orig_h": ...}`` object is accepted too); ``ts`` is epoch seconds or an ISO-8601 string.

Mapping (``event_type="network_flow"``): id.orig_h -> src_host, id.resp_h -> dst_host,
id.resp_p -> dst_port (null for ICMP, where Zeek puts the ICMP code there), proto -> protocol
(tcp, udp, icmp, else other), orig_bytes / resp_bytes -> bytes_out / bytes_in,
orig_pkts + resp_pkts -> packets (null only when both are unset), duration -> duration_s,
ts (epoch seconds, microsecond precision) -> ts, conn_state -> success (``CONN_ESTABLISHED``: the
handshake completed, True; ``CONN_FAILED``: the attempt went unanswered or was rejected, False;
midstream or responder-only states such as OTH: null). Labels, when the columns exist: ``label``
Benign -> 0, Malicious -> 1, anything else (Background, unset) -> null; ``detailedlabel`` /
``detailed-label`` -> label_detail. The event id is ``zeek:<uid>`` (Zeek's connection uid),
or ``zeek:<file name>:<line>`` when the uid is unset; ``raw_ref`` is ``<file name>:<line>``.

Order: real captures are not sorted by ts (Zeek writes a connection when it ends). With
``sort=True`` (default) every yielded chunk is sorted by ts (stable; parse-error rows last), so
a file of at most ``chunk_rows`` lines, read as one chunk, comes out fully sorted. A bigger
file is sorted within each chunk only, in chunk order: the disorder left across chunk borders is
the capture's own (at most about the longest connection's duration), which validation's order
tolerance (``ValidationPolicy.order_tolerance_s``, per file) is there to absorb; raise
``chunk_rows`` to sort more at once. ``sort=False`` keeps file order.

Lines in = rows out, header lines excepted: every data line is one row; a line with a wrong
field count, bad bytes, an unparseable number or an unset ts is a row with ``parse_error``.
Note that the Stratosphere NjRAT capture (001-...labeled-conn.log) holds timestamps relative
to the capture start (19.98 s ...), i.e. 1970-01-01 in UTC: validation's default ``ts_min``
quarantines them; validate it with ``ValidationPolicy(ts_min="1970-01-01")``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from anomaly_pipeline import schema
from anomaly_pipeline.sources import _common as common

ADAPTER = "zeek"
FORMATS: tuple[str, ...] = ("auto", "tsv", "json")
LABEL_FIELDS: tuple[str, ...] = ("label",)
DETAIL_FIELDS: tuple[str, ...] = ("detailedlabel", "detailed-label", "detailed_label")
LABEL_VALUES: dict[str, int] = {"benign": 0, "malicious": 1}
_TYPES: dict[str, pa.DataType] = {
    "ts": pa.float64(),
    "uid": pa.string(),
    "id.orig_h": pa.string(),
    "id.resp_h": pa.string(),
    "id.resp_p": pa.float64(),
    "proto": common.DICT,
    "conn_state": common.DICT,
    "duration": pa.float64(),
    "orig_bytes": pa.float64(),
    "resp_bytes": pa.float64(),
    "orig_pkts": pa.float64(),
    "resp_pkts": pa.float64(),
    **dict.fromkeys(LABEL_FIELDS + DETAIL_FIELDS, common.DICT),
}
REQUIRED_FIELDS: tuple[str, ...] = ("ts", "id.orig_h", "id.resp_h")
# Zeek's conn_state as the connection's outcome (Zeek's conn.log documentation): established
# connections, and attempts that got no answer (S0, SH: SYN then nothing or FIN, RSTOS0: SYN then
# RST) or were rejected (REJ). Other states (OTH, RSTRH, SHR) saw no SYN from the originator.
CONN_ESTABLISHED: frozenset[str] = frozenset({"SF", "S1", "S2", "S3", "RSTO", "RSTR"})
CONN_FAILED: frozenset[str] = frozenset({"S0", "REJ", "RSTOS0", "SH"})


def conn_success(state: str) -> bool | None:
    """True for an established connection, False for an unanswered or rejected attempt, else None."""
    state = state.strip().upper()
    if state in CONN_ESTABLISHED:
        return True
    if state in CONN_FAILED:
        return False
    return None
_MAX_EPOCH_S = 9.2e9  # datetime64[ns] ends in 2262


def iter_zeek(
    path: str | Path,
    *,
    fmt: str = "auto",
    chunk_rows: int = common.DEFAULT_CHUNK_ROWS,
    sort: bool = True,
    max_line_bytes: int = common.DEFAULT_MAX_LINE_BYTES,
    member: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream a Zeek conn.log (TSV or JSON Lines; plain, gzip or zip) as canonical chunks.

    Args:
        path: the log.
        fmt: ``"tsv"``, ``"json"`` or ``"auto"`` (first non-empty line: ``#`` -> TSV,
            ``{`` -> JSON).
        chunk_rows: most lines per chunk (header lines included); also the sort window.
        sort: sort each chunk by ts (see the module docstring); False keeps file order.
        max_line_bytes: longest accepted line in bytes.
        member: the member to read from a zip archive with several files.

    Yields:
        DataFrames with ``schema.EVENT_COLUMNS`` plus ``parse_error`` / ``raw_excerpt``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a bad argument or an undetectable format.
        schema.SchemaError (while iterating): a ``#fields`` header without ts, id.orig_h and
            id.resp_h. A data line before any ``#fields`` header is a row with a parse_error.
    """
    path = common.check_common_args(path, chunk_rows, max_line_bytes)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt == "auto":
        fmt = detect_zeek_format(path, member=member)
    if fmt == "json":
        return common.iter_json_events(
            path,
            adapter=ADAPTER,
            mapper=_json_record,
            chunk_rows=chunk_rows,
            max_line_bytes=max_line_bytes,
            ts_unit="s",
            member=member,
            post=common.sort_by_ts if sort else None,
        )
    return _iterate_tsv(path, chunk_rows, sort, max_line_bytes, member)


def read_zeek(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The whole log as one table (concatenated ``iter_zeek`` chunks); kwargs as there.

    With ``sort=True`` only each chunk is sorted; sort the result by ts for a fully sorted table.
    """
    chunks = list(iter_zeek(path, **kwargs))
    return pd.concat(chunks, ignore_index=True) if chunks else common.empty_raw_events()


def detect_zeek_format(path: str | Path, *, member: str | None = None) -> str:
    """``"tsv"`` or ``"json"`` from the first of the first 20 non-empty lines that starts with ``#`` or
    ``{``; ValueError when none does.

    Without a complete line (an empty file, or a compressed one that breaks before its first
    line ends) there is nothing to tell apart: ``"tsv"``, whose reader yields no row for an
    empty file and one row for the break.
    """
    lines = _sample_lines(Path(path), member)
    if not lines:
        return "tsv"
    for line in lines:  # the first line that looks like either decides; a damaged one is skipped
        if line.lstrip().startswith(b"#"):
            return "tsv"
        if line.lstrip().startswith(b"{"):
            return "json"
    first = lines[0][:100]
    raise ValueError(
        f"{path}: not a Zeek log: the first line {first!r} is neither a '#' header (TSV) nor a "
        "JSON object; pass fmt='tsv' or fmt='json' if you are sure"
    )


def _sample_lines(path: Path, member: str | None, n: int = 20, max_lines: int = 1000) -> list[bytes]:
    """Up to ``n`` non-empty lines of at most 64 KiB from the first ``max_lines`` lines of ``path``.

    Over-long lines (a damaged one of a megabyte) are skipped, not taken as the first line, and
    a stream that breaks ends the sample.
    """
    from anomaly_pipeline.sources.files import TruncatedInput, _physical_lines

    out: list[bytes] = []
    with common.open_input(path, member) as (handle, _):
        try:
            for k, (line, total) in enumerate(_physical_lines(handle, path, 65536)):
                if k >= max_lines or len(out) >= n:
                    break
                if total <= 65536 and line.strip():
                    out.append(line)
        except TruncatedInput:
            pass
    return out


# --------------------------------------------------------------------------------------------
# TSV
# --------------------------------------------------------------------------------------------


class _Layout:
    """The header state of a TSV log: separator, null markers and the current field layout."""

    def __init__(self) -> None:
        self.sep = b"\t"
        self.unset = "-"
        self.empty = "(empty)"
        self.spec: common.DelimitedSpec | None = None
        self.merged: tuple[str, tuple[str, ...]] | None = None  # IoT-23: one field, several names
        self.names: tuple[str, ...] = ()

    def read_header(self, line: bytes, path: Path, line_no: int) -> None:
        text = line.decode("utf-8", errors="replace")
        if text.startswith("#separator"):
            value = text[len("#separator") :].strip()
            self.sep = _unescape(value).encode()
            if len(self.sep) != 1:
                raise schema.SchemaError(
                    f"{path}:{line_no}: #separator {value!r} is not one byte; only single-byte separators are supported"
                )
            return
        parts = text.split(self.sep.decode())
        key, values = parts[0], parts[1:]
        if key == "#unset_field" and values:
            self.unset = values[0]
        elif key == "#empty_field" and values:
            self.empty = values[0]
        elif key == "#fields":
            self._set_fields(values, path, line_no)

    def _set_fields(self, names: list[str], path: Path, line_no: int) -> None:
        self.merged = None
        flat: list[str] = []
        for name in names:
            sub = name.split()
            if len(sub) > 1:
                self.merged = (name, tuple(sub))
            flat.extend(sub)
        missing = [f for f in REQUIRED_FIELDS if f not in flat]
        if missing:
            raise schema.SchemaError(
                f"{path}:{line_no}: the #fields header lacks {missing}; a conn.log needs "
                f"{list(REQUIRED_FIELDS)} (is this another Zeek log, e.g. dns.log?)"
            )
        self.names = tuple(flat)
        types = {n: t for n, t in _TYPES.items() if n in names}
        if self.merged is not None:
            types[self.merged[0]] = pa.string()
        self.spec = common.DelimitedSpec(
            "Zeek conn.log",
            tuple(names),
            types,
            sep=self.sep,
            null_values=(self.unset, self.empty),
        )


def _unescape(value: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _iterate_tsv(
    path: Path, chunk_rows: int, sort: bool, max_line_bytes: int, member: str | None
) -> Iterator[pd.DataFrame]:
    layout = _Layout()
    with common.open_input(path, member) as (handle, ref_name):
        for block in common.iter_line_blocks(handle, chunk_rows=chunk_rows, max_line_bytes=max_line_bytes):
            if block.broken:
                yield common.broken_chunk(block, adapter=ADAPTER, ref_name=ref_name)
                continue
            nonempty = block.ends > block.starts
            meta = np.zeros(block.n_lines, dtype=bool)
            meta[nonempty] = block.array[block.starts[nonempty]] == ord("#")
            meta_lines = np.flatnonzero(meta)
            # Segments of data lines between header lines, each read with the layout before it.
            bounds = [0, *(int(i) for i in meta_lines), block.n_lines]
            chunks = []
            for k in range(len(bounds) - 1):
                start = bounds[k] + (1 if k > 0 else 0)
                if k > 0:
                    i = bounds[k]
                    layout.read_header(block.line(i), path, block.first_line + i)
                stop = bounds[k + 1]
                if stop <= start:
                    continue
                select = np.zeros(block.n_lines, dtype=bool)
                select[start:stop] = True
                if layout.spec is None:  # each such line is a row saying why, not the file's end
                    chunks.append(_headless(block, select, ref_name))
                    continue
                chunks.extend(_segment_guarded(block, select, layout, ref_name, max_line_bytes))
            if not chunks:
                continue
            chunk = chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)
            yield common.sort_by_ts(chunk) if sort else chunk


_HEADLESS = (
    "no #fields header before this line: a Zeek TSV log starts with #separator / #fields lines (was the "
    "header cut off? for JSON logs pass fmt='json')"
)


def _headless(block: common.LineBlock, select: np.ndarray, ref_name: str) -> pd.DataFrame:
    """Rows for data lines that come before any ``#fields`` header (no layout to read them with)."""
    lines = np.flatnonzero(select)
    return common.build_chunk(
        adapter=ADAPTER,
        ref_name=ref_name,
        line_numbers=block.first_line + lines,
        ok=np.zeros(len(lines), dtype=bool),
        values={},
        errors=dict.fromkeys(range(len(lines)), _HEADLESS),
        excerpts={k: common.excerpt(block.line(int(i))) for k, i in enumerate(lines)},
    )


def _segment_guarded(
    block: common.LineBlock, select: np.ndarray, layout: _Layout, ref_name: str, max_line_bytes: int
) -> list[pd.DataFrame]:
    """``_segment``, with a line whose conversion raises isolated into its own quarantine row."""

    def convert(part: np.ndarray | None) -> list[pd.DataFrame]:
        return [_segment(block, select if part is None else part, layout, ref_name, max_line_bytes)]

    return common.convert_guarded(convert, block, select, adapter=ADAPTER, ref_name=ref_name,
                                  keep=(schema.SchemaError,))


def _segment(
    block: common.LineBlock, select: np.ndarray, layout: _Layout, ref_name: str, max_line_bytes: int
) -> pd.DataFrame:
    assert layout.spec is not None
    parsed = common.parse_delimited(block, layout.spec, max_line_bytes, select)
    columns = {name: parsed.table[name] for name in parsed.table.column_names}
    reasons = np.full(parsed.table.num_rows, None, dtype=object)
    if layout.merged is not None:
        _split_merged(columns, layout, reasons)
    values = _values(columns, parsed.table.num_rows, reasons)
    reject = pd.notna(reasons)
    values = common.reject_rows(parsed, block, values, reject, list(reasons[reject]))
    return common.build_chunk(
        adapter=ADAPTER,
        ref_name=ref_name,
        line_numbers=block.first_line + parsed.lines,
        ok=parsed.ok,
        values=values,
        errors=parsed.errors,
        excerpts=parsed.excerpts,
    )


def _split_merged(columns: dict[str, Any], layout: _Layout, reasons: np.ndarray) -> None:
    """IoT-23: split the space-separated field (``(empty)   Malicious   C&C``) into its names."""
    assert layout.merged is not None
    name, sub_names = layout.merged
    merged = pc.utf8_trim_whitespace(columns.pop(name))
    counts = pc.list_value_length(pc.split_pattern_regex(merged, r"\s+")).to_numpy(zero_copy_only=False)
    wrong = pd.notna(counts) & (counts != len(sub_names))
    for i in np.flatnonzero(wrong).tolist():
        reasons[i] = (
            f"wrong field count: field {name!r} should hold {len(sub_names)} space-separated values, "
            f"got {int(counts[i])}"
        )
    # Rows with the wrong count (failed above) are read as all-unset so the split stays aligned.
    filler = pa.scalar(" ".join([layout.unset] * len(sub_names)))
    parts = pc.split_pattern_regex(pc.if_else(pa.array(wrong), filler, merged), r"\s+")
    null_values = pa.array([layout.unset, layout.empty])
    for j, sub in enumerate(sub_names):
        if sub not in _TYPES:
            continue
        element = pc.list_element(parts, j)
        element = pc.if_else(pc.is_in(element, value_set=null_values), pa.scalar(None, pa.string()), element)
        if pa.types.is_floating(_TYPES[sub]):
            element = pa.array(pd.to_numeric(element.to_numpy(zero_copy_only=False), errors="coerce"))
        columns[sub] = element


def _values(columns: dict[str, Any], n: int, reasons: np.ndarray) -> dict[str, Any]:
    def num(name: str) -> np.ndarray:
        return common.numbers(columns[name]) if name in columns else np.full(n, np.nan)

    def text(name: str) -> np.ndarray | None:
        return common.dict_map(columns[name]) if name in columns else None

    ts = num("ts")
    unset = np.isnan(ts)
    if unset.any():
        reasons[unset & pd.isna(reasons)] = "missing required field: ts is unset"
    with np.errstate(invalid="ignore"):
        too_far = ~unset & ~(np.abs(ts) < _MAX_EPOCH_S)
    for i in np.flatnonzero(too_far).tolist():
        reasons[i] = f"bad timestamp: ts {ts[i]!r} is out of range for epoch seconds (1678-2262)"
    unset |= too_far
    protocol = common.dict_map(columns["proto"], common.protocol_of) if "proto" in columns else None
    port = num("id.resp_p")
    bad_port = ~np.isnan(port) & ((port < 0) | (port > 65535) | (np.mod(port, 1) != 0))
    port[bad_port] = np.nan
    if protocol is not None:
        port[protocol == "icmp"] = np.nan
    orig_pkts, resp_pkts = num("orig_pkts"), num("resp_pkts")
    packets = np.where(
        np.isnan(orig_pkts) & np.isnan(resp_pkts), np.nan, np.nan_to_num(orig_pkts) + np.nan_to_num(resp_pkts)
    )
    values: dict[str, Any] = {
        "event_type": "network_flow",
        "ts": np.round(np.where(unset, 0.0, ts) * 1e6).astype(np.int64) * 1000,
        "src_host": text("id.orig_h"),
        "dst_host": text("id.resp_h"),
        "dst_port": port,
        "protocol": protocol,
        "bytes_out": num("orig_bytes"),
        "bytes_in": num("resp_bytes"),
        "packets": packets,
        "duration_s": num("duration"),
    }
    if "conn_state" in columns:
        values["success"] = common.dict_map(columns["conn_state"], conn_success)
    if "uid" in columns:
        # Nulls (unset uid) stay null and fall back to zeek:<file>:<line>.
        values["event_id"] = pc.binary_join_element_wise("zeek:", columns["uid"], "").to_numpy(
            zero_copy_only=False
        )
    label_name = next((f for f in LABEL_FIELDS if f in columns), None)
    if label_name is not None:
        values["label"] = common.dict_map_float(columns[label_name], _label)
    detail_name = next((f for f in DETAIL_FIELDS if f in columns), None)
    if detail_name is not None:
        values["label_detail"] = text(detail_name)
    return {k: v for k, v in values.items() if v is not None}


def _label(value: str) -> float | None:
    code = LABEL_VALUES.get(value.strip().lower())
    return None if code is None else float(code)


# --------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------


def _json_record(obj: dict[str, Any]) -> tuple[Any, ...]:
    nested = obj.get("id") if isinstance(obj.get("id"), dict) else {}

    def get(key: str) -> Any:
        if key in obj:
            return obj[key]
        if key.startswith("id.") and nested:
            return nested.get(key[3:])
        return None

    ts = obj.get("ts")
    if ts is None:
        raise common.RecordError("missing required field: ts is absent")
    proto = get("proto")
    protocol = common.protocol_of(proto) if isinstance(proto, str | int) else None
    port = _json_number(get("id.resp_p"), "id.resp_p")
    if port is not None and (protocol == "icmp" or not (0 <= port <= 65535) or port != int(port)):
        port = None
    orig_pkts = _json_number(get("orig_pkts"), "orig_pkts")
    resp_pkts = _json_number(get("resp_pkts"), "resp_pkts")
    packets = None if orig_pkts is None and resp_pkts is None else (orig_pkts or 0.0) + (resp_pkts or 0.0)
    label_text = next((obj[f] for f in LABEL_FIELDS if f in obj), None)
    detail = next((obj[f] for f in DETAIL_FIELDS if f in obj), None)
    uid = obj.get("uid")
    values = {
        "event_id": f"zeek:{uid}" if isinstance(uid, str) and uid else None,
        "ts": ts,
        "event_type": "network_flow",
        "src_host": _json_text(get("id.orig_h")),
        "dst_host": _json_text(get("id.resp_h")),
        "dst_port": port,
        "protocol": protocol,
        "bytes_out": _json_number(get("orig_bytes"), "orig_bytes"),
        "bytes_in": _json_number(get("resp_bytes"), "resp_bytes"),
        "packets": packets,
        "duration_s": _json_number(get("duration"), "duration"),
        "success": conn_success(state) if isinstance(state := get("conn_state"), str) else None,
        "label": _label(label_text) if isinstance(label_text, str) else None,
        "label_detail": _json_text(detail),
    }
    return tuple(map(values.get, common.JSON_FIELDS))


def _json_text(value: Any) -> str | None:
    if value is None or value in ("-", "(empty)", ""):
        return None
    return str(value)


def _json_number(value: Any, name: str) -> float | None:
    if value is None or value == "-":
        return None
    if isinstance(value, bool):
        raise common.RecordError(f"bad number: field {name} value {common.show(value)} is not a number")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise common.RecordError(
            f"bad number: field {name} value {common.show(value)} is not a number"
        ) from None


__all__ = ["ADAPTER", "FORMATS", "detect_zeek_format", "iter_zeek", "read_zeek"]
