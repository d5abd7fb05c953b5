"""Which adapter reads which input: the format registry, format sniffing, one-call reading.

``FORMATS`` maps a format name to its streaming reader; every reader takes the path plus
keyword options (all take ``chunk_rows``) and yields canonical chunks (``schema.EVENT_COLUMNS``
plus the envelope columns ``parse_error`` / ``raw_excerpt``):

=========  ====================================================================
name       reader
=========  ====================================================================
canonical  ``files.iter_event_file``: the contract's own CSV / JSON Lines
lanl       ``lanl.iter_lanl``: LANL auth / proc / flows / dns (+ red-team labels)
zeek       ``zeek.iter_zeek``: Zeek conn.log, TSV or JSON (+ Stratosphere labels)
darpa      ``darpa.iter_darpa``: the DARPA 1998 / MIDAS edge stream
ocsf       ``ocsf.iter_ocsf``: OCSF Authentication / Network / Process Activity
windows    ``windows.iter_windows``: Windows Security 4624/4625/4688/4768/4769
=========  ====================================================================

``detect_format`` looks at the first lines (decompressed; gzip and zip are fine) and returns
the one format they fit, or raises ``FormatDetectionError`` naming the candidates (several fit,
or the lines disagree) or saying that none fits; pass ``fmt=`` explicitly then.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly_pipeline import schema
from anomaly_pipeline.sources import _common as common
from anomaly_pipeline.sources.darpa import iter_darpa, looks_like_darpa
from anomaly_pipeline.sources.files import FILE_REQUIRED_COLUMNS, iter_event_file
from anomaly_pipeline.sources.lanl import iter_lanl, lanl_kind_of_line
from anomaly_pipeline.sources.ocsf import iter_ocsf, looks_like_ocsf
from anomaly_pipeline.sources.windows import iter_windows, looks_like_windows
from anomaly_pipeline.sources.zeek import iter_zeek

FormatReader = Callable[..., Iterator[pd.DataFrame]]

FORMATS: dict[str, FormatReader] = {
    "canonical": iter_event_file,
    "lanl": iter_lanl,
    "zeek": iter_zeek,
    "darpa": iter_darpa,
    "ocsf": iter_ocsf,
    "windows": iter_windows,
}
SAMPLE_LINES = 20
_ZEEK_HEADERS = (
    b"#separator",
    b"#set_separator",
    b"#empty_field",
    b"#unset_field",
    b"#path",
    b"#open",
    b"#fields",
    b"#types",
    b"#close",
)
_CANONICAL = frozenset(schema.EVENT_COLUMNS)


class FormatDetectionError(ValueError):
    """The format of an input cannot be told from its first lines.

    Attributes:
        candidates: the formats that fit (empty when none does).
    """

    def __init__(self, message: str, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


def detect_format(path: str | Path, *, sample_lines: int = SAMPLE_LINES, member: str | None = None) -> str:
    """The name in ``FORMATS`` that the first ``sample_lines`` non-empty lines of ``path`` fit.

    Rules: a first line that is a Zeek ``#`` header means zeek; a canonical CSV header (contract column names
    including the required ones) means canonical; JSON objects are OCSF when they have
    ``class_uid``, Windows when they have ``EventID`` (or ``{"Event": {"System": ...}}``),
    Zeek when they have ``id.orig_h`` / ``uid``, canonical when every key is a contract column;
    comma lines are DARPA when they read ``a,b,MM/DD/YYYY-HH:MM,label``, LANL when they have
    the shape of auth (9 fields, ``@`` in the second), flows (9, numeric second), proc (5) or
    dns (3). Lines that fit nothing (a damaged line) are skipped, but at least half of the
    sampled lines must fit.

    Raises:
        FileNotFoundError: no such file.
        FormatDetectionError: no format or several fit; the message names them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    lines = common.first_lines(path, n=sample_lines, member=member)
    if not lines:
        raise FormatDetectionError(f"{path}: empty file, nothing to detect the format from; pass fmt=")
    if _canonical_header(lines[0]):
        return "canonical"
    if lines[0].lstrip().startswith(_ZEEK_HEADERS):
        return "zeek"  # a Zeek TSV header is decisive; its data lines are plain TSV
    agreed: set[str] | None = None
    seen: set[str] = set()
    fitting = 0
    for line in lines:
        found = _candidates(line)
        if not found:
            continue
        fitting += 1
        seen |= found
        agreed = found if agreed is None else agreed & found
    # A damaged line or two may fit nothing; most of a real file's first lines fit its format.
    if agreed is None or fitting * 2 < len(lines):
        hint = ""
        fields = lines[0].split(b",")
        if len(fields) == 4 and b"@" in fields[1]:
            hint = " (it looks like LANL's redteam.txt: that is a label file, pass it as iter_lanl(..., redteam=path))"
        raise FormatDetectionError(
            f"{path}: the first lines fit none of the formats {sorted(FORMATS)}{hint}; "
            f"first line: {lines[0][:120]!r}. Pass fmt= explicitly if you know the format",
        )
    if len(agreed) == 1:
        return next(iter(agreed))
    candidates = tuple(sorted(agreed or seen))
    why = "several formats fit" if agreed else "the first lines fit different formats"
    raise FormatDetectionError(
        f"{path}: cannot tell the format: {why}: {', '.join(candidates)}; pass fmt= one of them",
        candidates,
    )


def iter_events(path: str | Path, fmt: str = "auto", **kwargs: Any) -> Iterator[pd.DataFrame]:
    """Stream ``path`` with the reader of ``fmt`` (``"auto"``: ``detect_format``).

    Keyword arguments go to the reader (e.g. ``chunk_rows``, ``redteam`` for LANL).
    """
    if fmt == "auto":
        fmt = detect_format(path, member=kwargs.get("member"))
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)} or 'auto'")
    return FORMATS[fmt](path, **kwargs)


def read_events(path: str | Path, fmt: str = "auto", **kwargs: Any) -> pd.DataFrame:
    """The whole input as one raw event table (``iter_events``'s chunks concatenated).

    An input without rows gives an empty table with the contract's columns plus the envelope.
    """
    chunks = list(iter_events(path, fmt, **kwargs))
    if not chunks:
        return common.empty_raw_events()
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


# --------------------------------------------------------------------------------------------


def _canonical_header(line: bytes) -> bool:
    names = [n.strip().strip('"') for n in line.decode("utf-8-sig", errors="replace").split(",")]
    return set(names) <= _CANONICAL and all(c in names for c in FILE_REQUIRED_COLUMNS)


def _candidates(line: bytes) -> set[str]:
    stripped = line.lstrip()
    if stripped.startswith(b"#"):
        return {"zeek"} if stripped.startswith(_ZEEK_HEADERS) else set()
    if stripped.startswith(b"{"):
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):  # bad JSON or UTF-8, or nested beyond the recursion limit
            return set()
        if not isinstance(obj, dict):
            return set()
        found = set()
        if looks_like_ocsf(obj):
            found.add("ocsf")
        if looks_like_windows(obj):
            found.add("windows")
        if "id.orig_h" in obj or (isinstance(obj.get("id"), dict) and "orig_h" in obj["id"]):
            found.add("zeek")
        if obj and set(obj) <= _CANONICAL and "ts" in obj:
            found.add("canonical")
        return found
    found = set()
    if looks_like_darpa(stripped):
        found.add("darpa")
    if lanl_kind_of_line(stripped) is not None:
        found.add("lanl")
    return found


__all__ = ["FORMATS", "FormatDetectionError", "detect_format", "iter_events", "read_events"]
