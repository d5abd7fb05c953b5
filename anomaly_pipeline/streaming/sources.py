"""Where streamed events come from, behind one interface: an iterator of micro-batches of raw
records (dicts, JSON strings or already-read canonical frames).

* ``records_to_events``: raw records to canonical events plus quarantine rows (a malformed
  record is counted and kept with its reason; the stream goes on).
* ``LineSource``: JSON lines from stdin or a followed file (``tail -f``); ``FileSource``: any
  supported format (``sources.formats``) read in chunks, optionally followed as it grows.
* ``KafkaSource``: a Kafka topic through confluent-kafka (optional extra ``kafka``).
* The HTTP ingest endpoint is ``POST /events`` of ``anomaly_pipeline.service``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from anomaly_pipeline import schema
from anomaly_pipeline.streaming.checkpoint import file_head
from anomaly_pipeline.validation import LABEL_VALUES, NUMERIC_MAX, PORT_RANGE, ValidationPolicy

MAX_RECORD_BYTES = 64 * 1024
EXCERPT = 200
# Batch ingestion's numeric ranges (``validation``), checked one record at a time here.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    **{name: (0.0, NUMERIC_MAX) for name in schema.NUMERIC_COLUMNS},
    "dst_port": (float(PORT_RANGE[0]), float(PORT_RANGE[1])),
}
TEXT_FIELDS: tuple[str, ...] = tuple(c.name for c in schema.COLUMNS if c.dtype == "string")
# C0 and C1 controls (CR and LF forge log lines, NUL truncates C strings), the Unicode line and
# paragraph separators, and lone surrogates (JSON can spell "\ud800", UTF-8 cannot encode it, so
# every later JSON answer or log line that carries it fails).
UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with every unsafe character (``UNSAFE_CHARACTERS``) written as a ``\\uXXXX``
    escape: safe in a log line, an HTML page and UTF-8 JSON."""
    return UNSAFE_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _quarantine_row(ref: str, source: str, reason: str, raw: Any) -> dict[str, Any]:
    # json.dumps escapes control characters and surrogates (ensure_ascii); a raw line may hold them.
    text = printable(raw) if isinstance(raw, str) else json.dumps(raw, default=str)
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return {"raw_ref": ref, "source": source, "stage": "stream", "reason": reason, "raw_excerpt": text[:EXCERPT],
            "event_id": printable(str(event_id)) if event_id not in (None, "") else None}


# Text values already found valid, per field: names of users, hosts and processes repeat all the
# time, so most records skip the character scan. Bounded: cleared when it grows past the cap.
_TEXT_OK: dict[str, set[str]] = {}
_TEXT_OK_CAP = 50_000  # per field
_EVENT_COLUMNS = frozenset(schema.EVENT_COLUMNS)


def _text_problem(name: str, value: Any) -> str | None:
    if name == "event_id" and isinstance(value, int) and not isinstance(value, bool):
        return None  # numeric ids are read as text
    if not isinstance(value, str):
        return f"field '{name}' must be text, got {value!r}"
    known = _TEXT_OK.get(name)
    if known is not None and value in known:
        return None
    problem = _text_value_problem(name, value)
    if problem is None and name != "event_id":  # event ids do not repeat: not worth remembering
        if known is None:
            known = _TEXT_OK[name] = set()
        elif len(known) >= _TEXT_OK_CAP:
            known.clear()
        known.add(value)
    return problem


def _text_value_problem(name: str, value: str) -> str | None:
    bad = UNSAFE_CHARACTERS.search(value)
    if bad is not None:
        return (f"field '{name}' holds a control character or invalid Unicode (U+{ord(bad.group()):04X} at "
                f"position {bad.start()}); names of users, hosts and processes must be printable text")
    domain = schema.CATEGORICAL_DOMAINS.get(name)
    if domain is not None and value not in domain:
        return f"{name} {value!r} is not one of {', '.join(domain)}"
    return None


def _number_problem(name: str, value: Any) -> str | None:
    lo, hi = NUMBER_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"field '{name}' must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"field '{name}' must be a finite number, got {value}"
    if not lo <= value <= hi:
        return f"field '{name}' = {value:g} outside [{lo:g}, {hi:g}]"
    if name == "dst_port" and value != int(value):
        return f"field 'dst_port' must be a whole number, got {value}"
    return None


def _success_problem(name: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"field 'success' must be true or false, got {value!r}"


def _label_problem(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or value not in LABEL_VALUES:
        return f"field 'label' must be one of {', '.join(map(str, LABEL_VALUES))} or null, got {value!r}"
    return None


# The check of each contract field that has one (text before number before the rest, as the
# precedence of the fields' kinds): one dict probe per field of a record instead of a chain of tests.
_CHECKS: dict[str, Callable[[str, Any], str | None]] = {
    "label": _label_problem, "success": _success_problem,
    **dict.fromkeys(NUMBER_RANGES, _number_problem), **dict.fromkeys(TEXT_FIELDS, _text_problem),
}


def _problem(record: dict[str, Any]) -> str | None:
    """What is wrong with one record, in words, or None: the contract's fields, types, domains
    and batch validation's ranges (``validation``), one record at a time."""
    for name in ("ts", "event_type"):
        if record.get(name) in (None, ""):
            return f"required field '{name}' is missing or empty"
    if not isinstance(record["ts"], str):
        return f"field 'ts' must be an ISO 8601 time as text, e.g. 2026-01-05T09:00:00Z, got {record['ts']!r}"
    if not _EVENT_COLUMNS.issuperset(record):
        shown = sorted(printable(str(name)) for name in record.keys() - _EVENT_COLUMNS)
        return f"unknown field(s) {shown}; the event contract has {', '.join(schema.EVENT_COLUMNS)}"
    checks, known_text, ranges = _CHECKS, _TEXT_OK, NUMBER_RANGES
    for name, value in record.items():
        if value is None:
            continue
        # Fast paths, same answers as the checks: text already found valid for this field (a
        # str, not a subclass); a plain number inside its range (NaN and infinities fail the
        # comparison and go to the check), a port a whole number.
        kind = value.__class__
        if kind is str:
            known = known_text.get(name)
            if known is not None and value in known:
                continue
        elif kind is float or kind is int:
            bounds = ranges.get(name)
            if bounds is not None and bounds[0] <= value <= bounds[1] and (name != "dst_port" or value == int(value)):
                continue
        check = checks.get(name)
        if check is not None:
            problem = check(name, value)
            if problem is not None:
                return problem
    return None


def records_to_events(records: Iterable[Any], source: str = "stream", first_ref: int = 0,
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical events and quarantine rows for raw records (dicts or JSON strings).

    A record is quarantined (not raised) when it is not a JSON object, lacks ``ts`` or
    ``event_type``, has an unknown field, a value of the wrong type, outside its domain or batch
    validation's range (ports 0-65535, volumes 0-1e13 and finite, ``ts`` from 2000 to a day
    ahead), text with a control character or invalid Unicode, or a time that cannot be read; the
    reason names the field. Nothing from a refused record reaches the scorer's state, and the
    quarantine rows carry it escaped (``printable``).
    """
    good: list[dict[str, Any]] = []
    refs: list[str] = []
    bad: list[dict[str, Any]] = []
    for i, raw in enumerate(records, start=first_ref):
        ref = f"{source}:{i + 1}"
        record = raw
        if isinstance(raw, bytes | str):
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            if len(text) > MAX_RECORD_BYTES:
                bad.append(_quarantine_row(ref, source, f"record of {len(text)} bytes exceeds {MAX_RECORD_BYTES}", text))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                bad.append(_quarantine_row(ref, source, f"not JSON: {exc.msg} at column {exc.colno}", text))
                continue
            except RecursionError:  # thousands of nested brackets: refused, the stream goes on
                bad.append(_quarantine_row(ref, source, "not JSON: nested too deeply", text))
                continue
        if not isinstance(record, dict):
            bad.append(_quarantine_row(ref, source, f"not a JSON object but {type(record).__name__}", raw))
            continue
        problem = _problem(record)
        if problem is not None:
            bad.append(_quarantine_row(ref, source, problem, record))
            continue
        good.append(record)
        refs.append(ref)
    if good:
        # Times in one vectorised pass; a record whose time cannot be read, or lies outside batch
        # validation's time range, is quarantined.
        ts = pd.to_datetime(pd.Series([r["ts"] for r in good], dtype=object), utc=True, errors="coerce",
                            format="ISO8601")
        ts_min, ts_max = ValidationPolicy().resolve()
        unreadable = ts.isna().to_numpy()
        out_of_range = ~unreadable & ~ts.between(ts_min, ts_max).to_numpy()
        for k in np.flatnonzero(unreadable | out_of_range):
            reason = (f"field 'ts' {good[k]['ts']!r} is not a time; use ISO 8601, e.g. 2026-01-05T09:00:00Z"
                      if unreadable[k] else
                      f"field 'ts' {good[k]['ts']!r} outside [{ts_min.isoformat()}, {ts_max.isoformat()}]")
            bad.append(_quarantine_row(refs[k], source, reason, good[k]))
        if (unreadable | out_of_range).any():
            keep = ~(unreadable | out_of_range)
            good = [r for r, k in zip(good, keep, strict=True) if k]
            refs = [r for r, k in zip(refs, keep, strict=True) if k]
            ts = ts[keep].reset_index(drop=True)
    quarantine = pd.DataFrame(bad, columns=list(schema.QUARANTINE_COLUMNS)) if bad else schema.empty_quarantine()
    if not good:
        return schema.empty_events(), quarantine
    frame = pd.DataFrame(good)
    frame["ts"] = ts.array  # a datetime column: to_numpy of zoned times makes one Timestamp per event
    if "raw_ref" not in frame:
        frame["raw_ref"] = refs
    frame["raw_ref"] = frame["raw_ref"].fillna(pd.Series(refs))
    if "event_id" not in frame:
        frame["event_id"] = refs
    frame["event_id"] = frame["event_id"].fillna(pd.Series(refs)).astype(str)
    try:
        events = schema.conform(frame, source=source)
    except schema.SchemaError as exc:  # a value no single-field check caught: quarantine the batch
        rows = [_quarantine_row(r, source, str(exc), rec) for r, rec in zip(refs, good, strict=True)]
        return schema.empty_events(), pd.concat([quarantine, pd.DataFrame(rows)], ignore_index=True)
    if "source" in frame:
        events["source"] = events["source"].fillna(source)
    return events, quarantine


def split_raw_chunk(chunk: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A raw chunk of a format reader (with the ``parse_error`` envelope) as events + quarantine."""
    bad = chunk["parse_error"].notna() if "parse_error" in chunk else pd.Series(False, index=chunk.index)
    q = chunk[bad]
    quarantine = pd.DataFrame({
        "raw_ref": q["raw_ref"].astype("string"), "source": q["source"].astype("string"),
        "stage": "parse", "reason": q["parse_error"].astype("string"),
        "raw_excerpt": q.get("raw_excerpt", pd.Series(pd.NA, index=q.index)).astype("string"),
        "event_id": q["event_id"].astype("string"),
    }) if bad.any() else schema.empty_quarantine()
    events = schema.conform(chunk[~bad].drop(columns=[c for c in schema.ENVELOPE_COLUMNS if c in chunk]))
    ok = events["ts"].notna() & events["event_type"].isin(schema.EVENT_TYPES)
    if not ok.all():
        rows = events[~ok]
        quarantine = pd.concat([quarantine, pd.DataFrame({
            "raw_ref": rows["raw_ref"], "source": rows["source"], "stage": "stream",
            "reason": "missing ts or unknown event_type", "raw_excerpt": pd.NA, "event_id": rows["event_id"]})],
            ignore_index=True)
        events = events[ok].reset_index(drop=True)
    return events, quarantine


@dataclass
class Batch:
    """One micro-batch from a source: raw records, or canonical events already read."""

    records: list[Any] | None = None
    events: pd.DataFrame | None = None
    quarantine: pd.DataFrame | None = None
    arrived: float = 0.0  # time.monotonic() when the first record of the batch arrived
    position: int | None = None  # byte offset in the input file after the batch's last line


def _batched_lines(lines: Iterable[tuple[str, int | None]], max_batch: int, max_wait_s: float) -> Iterator[Batch]:
    """Micro-batches of ``(line, byte offset after it)``; each batch carries the offset of its last line."""
    batch: list[str] = []
    first = 0.0
    position = None
    for line, end in lines:
        if line.strip():
            if not batch:
                first = time.monotonic()
            batch.append(line)
        position = end
        if batch and (len(batch) >= max_batch or time.monotonic() - first >= max_wait_s):
            yield Batch(records=batch, arrived=first, position=position)
            batch = []
    if batch:
        yield Batch(records=batch, arrived=first, position=position)


def _file_lines(handle: IO[bytes], offset: int, follow: bool, poll_s: float,
                stop_after_idle_s: float | None) -> Iterator[tuple[str, int]]:
    """Lines of a binary ``handle`` from ``offset`` with the byte offset after each; with ``follow``,
    only complete lines (a line being written is read once its newline arrives) and ``("", offset)``
    on each idle poll, so the batcher can flush a partial batch."""
    idle_since = time.monotonic()
    pending = b""
    while True:
        chunk = handle.readline()
        if chunk:
            pending += chunk
            if pending.endswith(b"\n") or not follow:
                offset += len(pending)
                yield pending.decode("utf-8", "replace"), offset
                pending = b""
                idle_since = time.monotonic()
            continue
        if not follow or (stop_after_idle_s is not None and time.monotonic() - idle_since > stop_after_idle_s):
            if pending:
                yield pending.decode("utf-8", "replace"), offset + len(pending)
            return
        yield "", offset
        time.sleep(poll_s)


def _follow(handle: IO[str], poll_s: float, stop_after_idle_s: float | None) -> Iterator[str]:
    """Lines of ``handle`` as they are written (``tail -f``); an empty string on each idle poll
    so the batcher can flush a partial batch."""
    idle_since = time.monotonic()
    pending = ""
    while True:
        chunk = handle.readline()
        if chunk:
            pending += chunk
            if pending.endswith("\n"):
                yield pending
                pending = ""
                idle_since = time.monotonic()
            continue
        if stop_after_idle_s is not None and time.monotonic() - idle_since > stop_after_idle_s:
            if pending:
                yield pending
            return
        yield ""
        time.sleep(poll_s)


class LineSource:
    """JSON-lines events (the canonical contract) from stdin or a file, optionally followed."""

    def __init__(self, handle: IO[str], *, follow: bool = False, max_batch: int = 2000, max_wait_s: float = 0.2,
                 poll_s: float = 0.05, stop_after_idle_s: float | None = None) -> None:
        self.handle, self.follow = handle, follow
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.poll_s, self.stop_after_idle_s = poll_s, stop_after_idle_s

    def __iter__(self) -> Iterator[Batch]:
        lines = _follow(self.handle, self.poll_s, self.stop_after_idle_s) if self.follow else iter(self.handle)
        return _batched_lines(((line, None) for line in lines), self.max_batch, self.max_wait_s)


class FileSource:
    """Any supported format (``formats.detect_format``) read in chunks; with ``follow``, lines
    appended later are read too (written with the file's header lines to a scratch file and
    parsed by the same reader, so every adapter works on a growing file)."""

    def __init__(self, path: str | Path, fmt: str = "auto", *, follow: bool = False, chunk_rows: int = 2000,
                 poll_s: float = 0.2, stop_after_idle_s: float | None = None, checkpoint: Any = None,
                 max_wait_s: float = 0.2) -> None:
        """``checkpoint`` (``checkpoint.StreamCheckpoint``): the position after each micro-batch is
        saved once the scorer asks for the next one (the batch is scored and its alerts written),
        and a restart starts after it: JSON lines at its byte offset, every other format after its
        count of records (the records before are parsed again, not scored). A file that no longer
        starts as it did is read from its start."""
        from anomaly_pipeline.sources.formats import detect_format

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist; give an event file (any supported format) or '-'")
        self.fmt = detect_format(self.path) if fmt == "auto" else fmt
        self.follow, self.chunk_rows, self.poll_s, self.stop_after_idle_s = follow, chunk_rows, poll_s, stop_after_idle_s
        self.checkpoint, self.max_wait_s = checkpoint, max_wait_s

    @property
    def by_offset(self) -> bool:
        """Whether the position is a byte offset (JSON lines: a line boundary is a record
        boundary); else it is a count of records."""
        return self.fmt == "canonical" and self.path.suffix in (".jsonl", ".json", ".ndjson")

    def position(self) -> str | None:
        """Where a restart resumes, in words; None at the start."""
        cp = self.checkpoint
        if cp is None or not (cp.offset or cp.rows):
            return None
        if self.by_offset:
            return f"byte {cp.offset:,}"
        return f"record {cp.rows:,} (the records before it are parsed again, not scored)"

    def __iter__(self) -> Iterator[Batch]:
        from anomaly_pipeline.sources.formats import iter_events

        checkpoint = self.checkpoint
        head = None
        if checkpoint is not None:
            if not checkpoint.same_file(self.path):
                checkpoint.rewind()  # another file under the same name: its position means nothing
            head = file_head(self.path)
        if self.by_offset:
            start = checkpoint.offset if checkpoint is not None else 0
            if start > self.path.stat().st_size:
                start = 0  # the file was replaced by a shorter one: its position means nothing
            with self.path.open("rb") as handle:
                handle.seek(start)
                lines = _file_lines(handle, start, self.follow, self.poll_s, self.stop_after_idle_s)
                # A file read to its end fills each batch; only a followed file waits for lines.
                wait_s = self.max_wait_s if self.follow else float("inf")
                for batch in _batched_lines(lines, self.chunk_rows, wait_s):
                    yield batch
                    if checkpoint is not None:  # the scorer is done with the batch
                        checkpoint.save(batch.position, head=head)
            return
        size = self.path.stat().st_size
        counter = _RecordCounter(checkpoint, head)
        for chunk in iter_events(self.path, self.fmt, chunk_rows=self.chunk_rows):
            arrived = time.monotonic()
            chunk = counter.unseen(chunk)
            if chunk.empty:
                continue
            events, quarantine = split_raw_chunk(chunk)
            yield Batch(events=events, quarantine=quarantine, arrived=arrived)
            counter.done(len(chunk))  # the scorer asked for the next batch: this one is scored
        if self.follow:
            yield from self._follow_tail(size, counter)

    def _header(self) -> bytes:
        """Lines a reader needs before data lines: Zeek '#' lines, or a CSV header line."""
        with self.path.open("rb") as handle:
            first = handle.readline()
            if first.startswith(b"#"):
                header = first
                for line in handle:
                    if not line.startswith(b"#"):
                        break
                    header += line
                return header
            return first if self.path.suffix in (".csv", ".tsv") else b""

    def _follow_tail(self, offset: int, counter: _RecordCounter) -> Iterator[Batch]:
        from anomaly_pipeline.sources.formats import iter_events

        header = self._header()
        idle_since = time.monotonic()
        while True:
            with self.path.open("rb") as handle:
                handle.seek(offset)
                block = handle.read()
            cut = block.rfind(b"\n") + 1
            if cut:
                offset += cut
                idle_since = time.monotonic()
                fd, scratch = tempfile.mkstemp(suffix=self.path.suffix)
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(header + block[:cut])
                    for chunk in iter_events(scratch, self.fmt, chunk_rows=self.chunk_rows):
                        chunk = counter.unseen(chunk)
                        if chunk.empty:
                            continue
                        events, quarantine = split_raw_chunk(chunk)
                        yield Batch(events=events, quarantine=quarantine, arrived=time.monotonic())
                        counter.done(len(chunk))
                finally:
                    os.unlink(scratch)
            elif self.stop_after_idle_s is not None and time.monotonic() - idle_since > self.stop_after_idle_s:
                return
            time.sleep(self.poll_s)


class _RecordCounter:
    """Records of a file already scored before a restart are skipped; records scored now are
    counted into the checkpoint (``StreamCheckpoint.rows``)."""

    def __init__(self, checkpoint: Any, head: list | None) -> None:
        self.checkpoint, self.head = checkpoint, head
        self.skip = checkpoint.rows if checkpoint is not None else 0
        self.count = self.skip

    def unseen(self, chunk: pd.DataFrame) -> pd.DataFrame:
        if not self.skip:
            return chunk
        cut = min(self.skip, len(chunk))
        self.skip -= cut
        return chunk.iloc[cut:].reset_index(drop=True)

    def done(self, n: int) -> None:
        self.count += n
        if self.checkpoint is not None:
            self.checkpoint.save(rows=self.count, head=self.head)


class KafkaSource:
    """JSON events from a Kafka topic (confluent-kafka), one message per event.

    ``stop_after_idle_s``: end the stream after that long without a message (tests, replays);
    None follows the topic until interrupted.
    """

    def __init__(self, topic: str, *, bootstrap_servers: str | None = None, group_id: str = "anomaly-pipeline-stream",
                 max_batch: int = 2000, max_wait_s: float = 0.2, stop_after_idle_s: float | None = None,
                 extra_config: dict[str, Any] | None = None, checkpoint: Any = None, consumer: Any = None) -> None:
        """Offsets are committed by hand after each micro-batch is scored and its alerts written
        (``enable.auto.commit`` off: auto-commit would commit what was consumed, so a crash
        between consume and score lost those events). ``checkpoint`` keeps the sent alert ids;
        ``consumer``: an already configured one (anything with confluent-kafka's ``subscribe``,
        ``consume``, ``commit`` and ``close``)."""
        if consumer is None:
            consumer = self._consumer(bootstrap_servers, group_id, extra_config)
        self.consumer = consumer
        self.consumer.subscribe([topic])
        self.topic, self.max_batch, self.max_wait_s, self.stop_after_idle_s = topic, max_batch, max_wait_s, stop_after_idle_s
        self.checkpoint = checkpoint

    @staticmethod
    def _consumer(bootstrap_servers: str | None, group_id: str, extra_config: dict[str, Any] | None) -> Any:
        try:
            from confluent_kafka import Consumer
        except ImportError as exc:
            raise RuntimeError(
                "the Kafka source needs confluent-kafka: pip install 'anomaly-pipeline[kafka]' "
                "(or .venv/bin/pip install confluent-kafka)"
            ) from exc
        servers = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            raise ValueError("no Kafka brokers: pass --kafka-bootstrap or set KAFKA_BOOTSTRAP_SERVERS (host:port)")
        return Consumer({"bootstrap.servers": servers, "group.id": group_id, "auto.offset.reset": "earliest",
                         **(extra_config or {}), "enable.auto.commit": False})

    def __iter__(self) -> Iterator[Batch]:
        idle_since = time.monotonic()
        try:
            while True:
                messages = self.consumer.consume(num_messages=self.max_batch, timeout=self.max_wait_s)
                records = []
                for message in messages:
                    if message.error():
                        records.append(json.dumps({"kafka_error": str(message.error())}))
                    else:
                        records.append(message.value().decode("utf-8", "replace"))
                if records:
                    idle_since = time.monotonic()
                    yield Batch(records=records, arrived=time.monotonic())
                    # Resumed: the scorer is done with the batch (a crash never gets here).
                    self.consumer.commit(asynchronous=False)
                    if self.checkpoint is not None:
                        self.checkpoint.save()
                elif self.stop_after_idle_s is not None and time.monotonic() - idle_since > self.stop_after_idle_s:
                    return
        finally:
            self.consumer.close()
