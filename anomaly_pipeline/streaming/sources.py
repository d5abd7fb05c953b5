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
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from anomaly_pipeline import schema

MAX_RECORD_BYTES = 64 * 1024
EXCERPT = 200


def _quarantine_row(ref: str, source: str, reason: str, raw: Any) -> dict[str, Any]:
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return {"raw_ref": ref, "source": source, "stage": "stream", "reason": reason, "raw_excerpt": text[:EXCERPT],
            "event_id": str(raw.get("event_id")) if isinstance(raw, dict) and raw.get("event_id") else None}


def _problem(record: dict[str, Any]) -> str | None:
    """What is wrong with one record, in words, or None."""
    for name in ("ts", "event_type"):
        if record.get(name) in (None, ""):
            return f"required field '{name}' is missing or empty"
    if record["event_type"] not in schema.EVENT_TYPES:
        return f"event_type {record['event_type']!r} is not one of {', '.join(schema.EVENT_TYPES)}"
    unknown = set(record) - set(schema.EVENT_COLUMNS)
    if unknown:
        return f"unknown field(s) {sorted(unknown)}; the event contract has {', '.join(schema.EVENT_COLUMNS)}"
    for name in ("dst_port", "bytes_out", "bytes_in", "packets", "duration_s"):
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"field '{name}' must be a number, got {value!r}"
        if value < 0:
            return f"field '{name}' must be >= 0, got {value}"
    if record.get("success") is not None and not isinstance(record["success"], bool):
        return f"field 'success' must be true or false, got {record['success']!r}"
    return None


def records_to_events(records: Iterable[Any], source: str = "stream", first_ref: int = 0,
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical events and quarantine rows for raw records (dicts or JSON strings).

    A record is quarantined (not raised) when it is not a JSON object, lacks ``ts`` or
    ``event_type``, has an unknown field or a value of the wrong type, or a time that cannot be
    read; the reason names the field.
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
        # Times in one vectorised pass; a record whose time cannot be read is quarantined.
        ts = pd.to_datetime(pd.Series([r["ts"] for r in good], dtype=object), utc=True, errors="coerce",
                            format="ISO8601")
        unreadable = ts.isna().to_numpy()
        if unreadable.any():
            for k in np.flatnonzero(unreadable):
                bad.append(_quarantine_row(refs[k], source, f"field 'ts' {good[k]['ts']!r} is not a time; use "
                                           "ISO 8601, e.g. 2026-01-05T09:00:00Z", good[k]))
            keep = ~unreadable
            good = [r for r, k in zip(good, keep, strict=True) if k]
            refs = [r for r, k in zip(refs, keep, strict=True) if k]
            ts = ts[keep].reset_index(drop=True)
    quarantine = pd.DataFrame(bad, columns=list(schema.QUARANTINE_COLUMNS)) if bad else schema.empty_quarantine()
    if not good:
        return schema.empty_events(), quarantine
    frame = pd.DataFrame(good)
    frame["ts"] = ts.to_numpy()
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


def _batched_lines(lines: Iterator[str], max_batch: int, max_wait_s: float) -> Iterator[Batch]:
    batch: list[str] = []
    first = 0.0
    for line in lines:
        if line.strip():
            if not batch:
                first = time.monotonic()
            batch.append(line)
        if batch and (len(batch) >= max_batch or time.monotonic() - first >= max_wait_s):
            yield Batch(records=batch, arrived=first)
            batch = []
    if batch:
        yield Batch(records=batch, arrived=first)


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
        return _batched_lines(lines, self.max_batch, self.max_wait_s)


class FileSource:
    """Any supported format (``formats.detect_format``) read in chunks; with ``follow``, lines
    appended later are read too (written with the file's header lines to a scratch file and
    parsed by the same reader, so every adapter works on a growing file)."""

    def __init__(self, path: str | Path, fmt: str = "auto", *, follow: bool = False, chunk_rows: int = 2000,
                 poll_s: float = 0.2, stop_after_idle_s: float | None = None) -> None:
        from anomaly_pipeline.sources.formats import detect_format

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist; give an event file (any supported format) or '-'")
        self.fmt = detect_format(self.path) if fmt == "auto" else fmt
        self.follow, self.chunk_rows, self.poll_s, self.stop_after_idle_s = follow, chunk_rows, poll_s, stop_after_idle_s

    def __iter__(self) -> Iterator[Batch]:
        from anomaly_pipeline.sources.formats import iter_events

        if self.fmt == "canonical" and self.path.suffix in (".jsonl", ".json", ".ndjson"):
            with self.path.open(encoding="utf-8", errors="replace") as handle:
                yield from LineSource(handle, follow=self.follow, max_batch=self.chunk_rows, poll_s=self.poll_s,
                                      stop_after_idle_s=self.stop_after_idle_s)
            return
        size = self.path.stat().st_size
        for chunk in iter_events(self.path, self.fmt, chunk_rows=self.chunk_rows):
            arrived = time.monotonic()
            events, quarantine = split_raw_chunk(chunk)
            yield Batch(events=events, quarantine=quarantine, arrived=arrived)
        if self.follow:
            yield from self._follow_tail(size)

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

    def _follow_tail(self, offset: int) -> Iterator[Batch]:
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
                        events, quarantine = split_raw_chunk(chunk)
                        yield Batch(events=events, quarantine=quarantine, arrived=time.monotonic())
                finally:
                    os.unlink(scratch)
            elif self.stop_after_idle_s is not None and time.monotonic() - idle_since > self.stop_after_idle_s:
                return
            time.sleep(self.poll_s)


class KafkaSource:
    """JSON events from a Kafka topic (confluent-kafka), one message per event.

    ``stop_after_idle_s``: end the stream after that long without a message (tests, replays);
    None follows the topic until interrupted.
    """

    def __init__(self, topic: str, *, bootstrap_servers: str | None = None, group_id: str = "anomaly-pipeline-stream",
                 max_batch: int = 2000, max_wait_s: float = 0.2, stop_after_idle_s: float | None = None,
                 extra_config: dict[str, Any] | None = None) -> None:
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
        config = {"bootstrap.servers": servers, "group.id": group_id, "auto.offset.reset": "earliest",
                  "enable.auto.commit": True, **(extra_config or {})}
        self.consumer = Consumer(config)
        self.consumer.subscribe([topic])
        self.topic, self.max_batch, self.max_wait_s, self.stop_after_idle_s = topic, max_batch, max_wait_s, stop_after_idle_s

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
                elif self.stop_after_idle_s is not None and time.monotonic() - idle_since > self.stop_after_idle_s:
                    return
        finally:
            self.consumer.close()
