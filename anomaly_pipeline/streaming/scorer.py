"""The streaming scorer: micro-batches in, scored events and alerts out, with its own metrics.

Each micro-batch: raw records are validated (malformed ones quarantined and counted), events
whose ``event_id`` was already scored within ``memory_days`` are dropped and counted (a client's
retry or a replayed file is not scored twice), the ``StreamState`` appends them and evicts what expired, the ``@champion`` model scores only the
new events, events above the threshold become alerts (JSON lines, the alert sink, and the
incident tracker, with the model's explanation), and the metrics (events/s, lag, alerts,
memory, wall and CPU seconds per phase) are updated.

A single-scale model streams incrementally (``streaming.incremental``): node embeddings of
closed buckets are computed once and cached, each micro-batch rebuilds only its new events plus
one window overlap and decodes them against the cached node states, and every alert carries the
model's explanation (reasons, temporal and graph attention) read off the same pass before it goes
out, within ``explain_budget_s`` per micro-batch (an alert beyond it says why it has none).

Warm start: before the first micro-batch, ``StreamScorer.warm_start`` replays the champion's
recent training events (logged with the model version, ``mlflow_model.warm_history_frame``)
through the state without scoring them, so first-seen pairs, hour profiles, pair rhythm, rates
and event ids know the training period: the first alerts are the ones a batch run over the
same history would raise. A model without that history starts cold, and the scorer says so
(``WarmStart``: a log line ``warm_start: none (<reason>)``, ``/healthz``, ``/metrics``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pandas as pd

from anomaly_pipeline.defaults import WARM_REPLAY_CHUNK_EVENTS
from anomaly_pipeline.graph import RELATIONS, WindowConfig
from anomaly_pipeline.redact import redact_text, redact_url
from anomaly_pipeline.streaming.sources import Batch, records_to_events
from anomaly_pipeline.streaming.state import StreamConfig, StreamState

Log = Callable[[str], None]
RELATIONS_NAMES = tuple(r[1] for r in RELATIONS)


@dataclass
class ChampionModel:
    """The detector to stream with, its window config and where it came from; ``history``: the
    events logged with it for a warm start (None: ``history_note`` says why there are none)."""

    detector: Any  # anomaly_pipeline.detectors.HybridDetector
    window: WindowConfig
    uri: str
    version: str | None = None
    history: pd.DataFrame | None = None
    history_note: str | None = None


def load_champion(registry_config: Any = None, alias: str = "champion") -> ChampionModel:
    """``models:/<name>@champion`` from the MLflow registry (``RegistryConfig.from_state()`` by
    default), unwrapped to the detector, the window config it was trained with and the events
    logged with it for a warm start.

    The alias is resolved to its version first and that version is loaded, so the version reported
    is the one that scores. Loaded with ``mlflow_model.load_pyfunc``: no code from the artifact
    runs, and data (weights and warm history) that differ from the version's recorded SHA-256 are
    refused (``ModelIntegrityError``)."""
    from mlflow import MlflowClient

    from anomaly_pipeline.mlflow_model import ARTIFACT_WARM_HISTORY, load_pyfunc
    from anomaly_pipeline.pyfunc_loader import ModelIntegrityError
    from anomaly_pipeline.registry import RegistryConfig, configure
    from anomaly_pipeline.schema import SchemaError

    config = registry_config or RegistryConfig.from_state()
    configure(config)
    uri = f"models:/{config.model_name}@{alias}"
    try:
        version = str(MlflowClient().get_model_version_by_alias(config.model_name, alias).version)
        _, inner = load_pyfunc(f"models:/{config.model_name}/{version}")
    except ModelIntegrityError:
        raise  # its message says what is wrong with the artifact and what to do
    except Exception as exc:  # MlflowException and friends: say what to do
        raise RuntimeError(
            f"cannot load {uri} from {redact_url(config.tracking_uri)}: {redact_text(str(exc))}. "
            "Train and promote a model first "
            "(`anomaly-pipeline run`), or point ANOMALY_PIPELINE_HOME at the state folder that has one"
        ) from exc
    history, note = None, None
    if not inner.has_warm_history:
        note = (f"{uri} (version {version}) was registered without a warm-start history ({ARTIFACT_WARM_HISTORY} "
                "in its data): register a new version (anomaly-pipeline run, or the retrain job) to start warm")
    else:
        try:
            history = inner.warm_history()
        except (SchemaError, ValueError, OSError) as exc:
            note = f"the warm-start history of {uri} (version {version}) cannot be read: {exc}"
    return ChampionModel(detector=inner.detector, window=inner.window_config, uri=uri, version=version,
                         history=history, history_note=note)


@dataclass
class WarmStart:
    """How the scorer started: ``warm`` (``events`` of the champion's history replayed, from
    ``first_ts`` to ``last_ts``, in ``seconds``) or ``none`` (``reason`` says why)."""

    status: str = "none"
    reason: str = "not warm-started yet"
    model_version: str | None = None
    events: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    seconds: float = 0.0

    @property
    def warm(self) -> bool:
        return self.status == "warm"

    def summary(self) -> str:
        """One line for people: what the state knows before the first event, or why nothing."""
        if not self.warm:
            return f"none ({self.reason})"
        version = f"version {self.model_version}" if self.model_version else "the model"
        return (f"warm ({self.events:,} events of {version}'s training history, {self.first_ts} .. "
                f"{self.last_ts}, replayed in {self.seconds:.1f} s)")

    def line(self) -> str:
        return f"warm_start: {self.summary()}"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "model_version": self.model_version,
                "history_events": self.events, "first_ts": self.first_ts, "last_ts": self.last_ts,
                "seconds": round(self.seconds, 3)}


def rss_bytes() -> int:
    """Resident memory of this process in bytes (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Metrics:
    """Counters and gauges of the scorer, exported as Prometheus text by the service."""

    events_received: int = 0
    events_scored: int = 0
    events_quarantined: int = 0
    events_late: int = 0
    events_unscorable: int = 0
    events_duplicate: int = 0  # event_ids already scored within memory_days: dropped, not scored again
    alerts: int = 0
    batches: int = 0
    last_batch_seconds: float = 0.0
    lag_seconds: float = 0.0  # arrival of the batch's first event -> its scores out
    event_time_lag_seconds: float = 0.0  # wall clock - newest event time (replays: large)
    started: float = field(default_factory=time.monotonic)
    phase_seconds: dict = field(default_factory=dict)  # parse, state, embed, score, alerts: total seconds
    # The same phases in CPU seconds of the scoring thread (what a shared machine does not inflate).
    phase_cpu_seconds: dict = field(default_factory=dict)
    _recent: deque = field(default_factory=lambda: deque(maxlen=600), repr=False)  # (t, n scored)

    def record(self, n: int) -> None:
        self._recent.append((time.monotonic(), n))

    def events_per_second(self, span_s: float = 10.0) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in self._recent if now - t <= span_s]
        if not recent:
            return 0.0
        elapsed = max(now - min(t for t, _ in recent), min(span_s, now - self.started), 1e-3)
        return sum(n for _, n in recent) / elapsed


@dataclass
class BatchReport:
    """What one micro-batch produced."""

    scored: int
    alerts: list[dict]
    quarantine: pd.DataFrame
    late: int
    seconds: float
    scores: pd.DataFrame  # event_id, ts, score, alert (the scored new events)
    duplicate_ids: list[str] = field(default_factory=list)  # event_ids dropped as already scored


class SeenEventIds:
    """The ``event_id`` of every event the scorer took in the last ``memory_days`` of event time.

    The event contract's ids are stable (source + position), so a re-sent batch (a client's retry,
    a file replayed) carries the same ids and must not be scored, alerted and counted twice. Ids
    are kept as 64-bit hashes in one sorted array per UTC day of event time: 8 bytes an event
    (about 2.6 MB for 30 days of the synthetic default's 11,000 events a day), and whole days are
    forgotten ``memory_days`` after the newest event, as the history memory forgets its keys. Two
    different ids share a hash with probability about n^2 / 2^65 (one in a million for 6 million ids).
    """

    def __init__(self, memory_days: float) -> None:
        self.memory_days = memory_days
        self._days: dict[int, np.ndarray] = {}  # UTC day number -> sorted uint64 hashes

    @staticmethod
    def _keys(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        ids = events["event_id"].astype(str).to_numpy(dtype=object)
        days = events["ts"].astype("int64").to_numpy() // (86_400 * 10**9)
        return pd.util.hash_array(ids), days

    def split(self, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(events not seen before, repeats): a repeat has the id of an event taken in earlier or of
        an earlier row of this batch."""
        if events.empty:
            return events, events.iloc[:0]
        keys, _ = self._keys(events)
        repeat = pd.Series(keys).duplicated().to_numpy()
        for known in self._days.values():  # any day: a re-sent event may carry a corrected time
            pos = np.minimum(np.searchsorted(known, keys), len(known) - 1)
            repeat |= known[pos] == keys
        if not repeat.any():
            return events, events.iloc[:0]
        return events[~repeat].reset_index(drop=True), events[repeat]

    def remember(self, events: pd.DataFrame) -> None:
        """Take ``events``' ids in, then forget the days that fell out of ``memory_days``."""
        if events.empty:
            return
        keys, days = self._keys(events)
        for day in np.unique(days).tolist():
            new = np.sort(keys[days == day])
            known = self._days.get(day)
            # Two sorted runs: the stable sort (timsort) merges them in linear time.
            self._days[day] = new if known is None else np.sort(np.concatenate([known, new]), kind="stable")
        oldest = int(days.max()) - int(np.ceil(self.memory_days))
        for day in [d for d in self._days if d < oldest]:
            del self._days[day]

    def __len__(self) -> int:
        return sum(len(v) for v in self._days.values())


class _SinkWorker:
    """Sends alerts to the sink off the scoring path (a slow webhook must not add latency)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.queue: queue.Queue = queue.Queue(maxsize=10_000)
        self.thread = threading.Thread(target=self._run, daemon=True, name="alert-sink")
        self.thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued, then stop."""
        self.queue.put(None)
        self.thread.join(timeout_s)

    def put(self, alert: dict) -> None:
        # When the sink is behind, the alert is still counted and in the JSON lines.
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(alert)

    def _run(self) -> None:
        while True:
            alert = self.queue.get()
            if alert is None:
                return
            title = (f"{alert['event']['how']} {alert['event']['who'] or ''} {alert['event']['from'] or ''} -> "
                     f"{alert['event']['to'] or ''} score {alert['score']:.2f}")
            self.sink.send("detection", title, alert)


class _ExplainWorker:
    """Explains alerts and refreshes blast radii off the scoring path (the alerts are already out);
    beyond ``max_jobs`` micro-batches of backlog the oldest are skipped (their alerts keep the
    feature reasons and say so), so explanations never hold back alerts."""

    def __init__(self, explain: Callable[..., None], max_jobs: int = 20) -> None:
        self.explain = explain
        self.queue: queue.Queue = queue.Queue(maxsize=max_jobs)
        self.thread = threading.Thread(target=self._run, daemon=True, name="alert-explainer")
        self.thread.start()

    def close(self, timeout_s: float = 60.0) -> None:
        self.join(timeout_s)
        self.queue.put(None)
        self.thread.join(timeout_s)

    def put(self, job: tuple, alerts: list[dict]) -> None:
        """Queue ``job``; when the backlog is full the oldest job gives way (newer alerts matter more)."""
        while True:
            try:
                self.queue.put_nowait(job)
                return
            except queue.Full:
                try:
                    old = self.queue.get_nowait()
                except queue.Empty:
                    continue
                for alert in old[2] if old is not None else []:
                    alert["explanation"] = "skipped: scorer busy"
                self.queue.task_done()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                self.queue.task_done()
                return
            try:
                self.explain(*job)
            except Exception as exc:  # noqa: BLE001 - an explanation must never stop the stream
                for alert in job[2]:
                    alert["explanation"] = f"failed: {exc}"
            finally:
                self.queue.task_done()


class StreamScorer:
    """Scores a stream in micro-batches with one detector (see module docstring)."""

    def __init__(self, model: ChampionModel, *, stream_config: StreamConfig | None = None,
                 threshold: float | None = None, sink: Any = None, alert_out: IO[str] | None = None,
                 explain_max: int = 5, explain: str = "async", incident_horizon_s: float = 4 * 3600.0,
                 log: Log | None = None, checkpoint: Any = None, explain_budget_s: float = 0.25) -> None:
        from anomaly_pipeline.incidents import IncidentTracker
        from anomaly_pipeline.streaming.incremental import SnapshotCache, uses_incremental

        self.model = model
        self.detector = model.detector
        self.stream_config = stream_config or StreamConfig(window=model.window)
        # A single-scale model streams on cached embeddings of closed snapshots (``incremental``):
        # the buffer holds one window overlap, not the model's history, and every alert gets the
        # model's explanation inline (batched, within ``explain_budget_s`` per micro-batch; beyond
        # it an alert says why it has none). A multi-scale model rebuilds its full horizon per
        # micro-batch and explains the ``explain_max`` top alerts off the scoring path.
        self.incremental = uses_incremental(model)
        self.state = StreamState(self.stream_config, incremental=self.incremental)
        self.cache = SnapshotCache(self.detector.model, self.stream_config.stride_s) if self.incremental else None
        self.explain_budget_s = explain_budget_s
        self.threshold = float(threshold if threshold is not None else self.detector.threshold_)
        self.alert_out = alert_out
        self.explain_max = explain_max
        self.metrics = Metrics()
        self.incidents = IncidentTracker(horizon_s=incident_horizon_s,
                                         window_s=self.stream_config.window.window_hours * 3600.0)
        self.alerts: deque[dict] = deque(maxlen=2_000)  # GET /alerts; the JSON lines have them all
        self.quarantine: deque[dict] = deque(maxlen=1_000)
        self.lock = threading.Lock()
        self.log = log or (lambda message: None)
        self._sink = _SinkWorker(sink) if sink is not None else None
        if explain not in ("async", "sync"):
            raise ValueError(f"explain must be 'async' or 'sync', got {explain!r}")
        self._explainer = _ExplainWorker(self._explain) if explain == "async" else None
        self._ref = 0
        self.seen = SeenEventIds(self.stream_config.memory_days)
        # checkpoint.StreamCheckpoint: alerts it already holds were sent before a restart.
        self.checkpoint = checkpoint
        self.warm = WarmStart()

    # -- before the first micro-batch --
    def warm_start(self, history: pd.DataFrame | None = None, *, cold_reason: str | None = None,
                   chunk_events: int = WARM_REPLAY_CHUNK_EVENTS) -> WarmStart:
        """Replay ``history`` (default: the model's, ``ChampionModel.history``) through the state
        without scoring or alerting: the events of its last ``memory_days`` in time order, in pieces
        of ``chunk_events`` so the buffer holds at most the model's horizon plus a piece. The
        history memory, the rate state and the seen event ids then hold what a batch run over
        that history would, and the model's copy of the events is released. ``cold_reason``:
        start cold on purpose (said in the result). Logs and returns ``self.warm``.

        Raises:
            RuntimeError: the scorer has already taken events in.
        """
        with self.lock:
            if self.metrics.events_received or self.state.n_buffered:
                raise RuntimeError("warm_start() must come before the first event: the state is no longer empty")
            self.warm = self._warm_start(history, cold_reason, chunk_events)
        self.log(self.warm.line())
        return self.warm

    def _warm_start(self, history: pd.DataFrame | None, cold_reason: str | None, chunk_events: int) -> WarmStart:
        started = time.monotonic()
        version = self.model.version
        if self.model.history is not None:
            # Replayed or not, the model's copy is not needed again: it would only hold memory.
            history = self.model.history if history is None else history
            self.model.history = None
            self.model.history_note = "its history was handed to an earlier scorer's warm start"
        if cold_reason is not None:
            return WarmStart(reason=cold_reason, model_version=version)
        if history is None:
            return WarmStart(reason=self.model.history_note or f"{self.model.uri} has no training history to replay",
                             model_version=version)
        if history.empty:
            return WarmStart(reason=f"the warm-start history of {self.model.uri} is empty", model_version=version)
        from anomaly_pipeline.schema import conform

        events = conform(history).sort_values("ts", kind="stable")  # labels dropped at logging come back as nulls
        newest = events["ts"].iloc[-1]
        events = events[events["ts"] >= newest - pd.Timedelta(days=self.stream_config.memory_days)]
        piece = max(chunk_events, 1)
        for lo in range(0, len(events), piece):
            chunk = events.iloc[lo : lo + piece].reset_index(drop=True)
            step = self.state.advance(chunk)
            self._cache_step(step)
            # As for a micro-batch: the ids of the events the state took in count as seen.
            refused = step.unplaced["event_id"] if step.unplaced is not None else chunk["event_id"].iloc[:0]
            self.seen.remember(chunk[~chunk["event_id"].isin(refused)] if len(refused) else chunk)
        return WarmStart(status="warm", reason=f"replayed the training history of {self.model.uri}",
                         model_version=version, events=len(events), first_ts=events["ts"].iloc[0].isoformat(),
                         last_ts=newest.isoformat(), seconds=time.monotonic() - started)

    # -- one micro-batch --
    def process(self, batch: Batch | Iterable[Any], source: str = "stream") -> BatchReport:
        """Validate, apply to the state, score the new events, raise alerts. Thread-safe."""
        if not isinstance(batch, Batch):
            batch = Batch(records=list(batch), arrived=time.monotonic())
        with self.lock:
            return self._process(batch, source)

    def _process(self, batch: Batch, source: str) -> BatchReport:
        from anomaly_pipeline.training import score_components

        started = time.monotonic()
        cpu = [time.thread_time()]
        arrived = batch.arrived or started
        if batch.records is not None:
            events, quarantine = records_to_events(batch.records, source, first_ref=self._ref)
            self._ref += len(batch.records)
        else:
            events = batch.events if batch.events is not None else pd.DataFrame()
            quarantine = batch.quarantine if batch.quarantine is not None else pd.DataFrame()
        m = self.metrics
        m.events_received += len(events) + len(quarantine)
        if len(quarantine):
            m.events_quarantined += len(quarantine)
            self.quarantine.extend(quarantine.astype(object).where(quarantine.notna(), None).to_dict("records"))
        events, repeats = self.seen.split(events)
        m.events_duplicate += len(repeats)
        duplicate_ids = repeats["event_id"].astype(str).tolist() if len(repeats) else []
        empty_scores = pd.DataFrame(columns=["event_id", "ts", "score", "alert"])
        if events.empty:
            return BatchReport(0, [], quarantine, 0, time.monotonic() - started, empty_scores, duplicate_ids)
        t_parsed = time.monotonic()
        cpu.append(time.thread_time())
        step = self.state.advance(events)
        t_state = time.monotonic()
        cpu.append(time.thread_time())
        unplaced = step.unplaced if step.unplaced is not None else events.iloc[:0]
        # A late or unplaced event was not taken in: sent again (corrected), it is not a repeat.
        refused = pd.concat([step.late["event_id"], unplaced["event_id"]])
        self.seen.remember(events[~events["event_id"].isin(refused)] if len(refused) else events)
        m.events_late += len(step.late)
        m.events_unscorable += step.unscorable
        rows = [pd.DataFrame({
            "raw_ref": step.late["raw_ref"], "source": step.late["source"], "stage": "stream",
            "reason": "late: older than the scorer's window (the state for it was already evicted)",
            "raw_excerpt": None, "event_id": step.late["event_id"]})] if len(step.late) else []
        if len(unplaced):
            rows.append(pd.DataFrame({
                "raw_ref": unplaced["raw_ref"], "source": unplaced["source"], "stage": "stream",
                "reason": unplaced_reasons(unplaced), "raw_excerpt": None, "event_id": unplaced["event_id"]}))
        if rows:
            refused_rows = pd.concat(rows, ignore_index=True)
            m.events_quarantined += len(refused_rows)
            self.quarantine.extend(refused_rows.astype(object).where(refused_rows.notna(), None).to_dict("records"))
            quarantine = pd.concat([quarantine, refused_rows], ignore_index=True) if len(quarantine) else refused_rows
        idx = step.new_positions
        gt = self._cache_step(step)
        t_embedded = time.monotonic()
        cpu.append(time.thread_time())
        if len(idx) == 0 or step.windows is None:
            return BatchReport(0, [], quarantine, len(step.late), time.monotonic() - started, empty_scores,
                               duplicate_ids)
        w = step.windows
        decoded = None
        if gt is not None:
            parts, out, b_abs = self.cache.score(gt, w, idx)
            decoded = (out, b_abs)
        else:
            parts = score_components(self.detector.model, w, idx)
        t_scored = time.monotonic()
        cpu.append(time.thread_time())
        # The detector's own combination of the score parts (its threshold is on that scale).
        combine = getattr(self.detector, "combine", None)
        scores = combine(parts) if combine is not None else parts.sum(axis=1)
        flagged = np.flatnonzero(scores > self.threshold)
        alerts = self._alerts(w, idx, scores, parts, flagged, decoded) if len(flagged) else []
        done = time.monotonic()
        cpu.append(time.thread_time())
        for j, (phase, seconds) in enumerate((("parse", t_parsed - started), ("state", t_state - t_parsed),
                                              ("embed", t_embedded - t_state), ("score", t_scored - t_embedded),
                                              ("alerts", done - t_scored))):
            m.phase_seconds[phase] = m.phase_seconds.get(phase, 0.0) + seconds
            m.phase_cpu_seconds[phase] = m.phase_cpu_seconds.get(phase, 0.0) + cpu[j + 1] - cpu[j]
        m.events_scored += len(idx)
        m.alerts += len(alerts)
        m.batches += 1
        m.last_batch_seconds = done - started
        m.lag_seconds = done - arrived
        newest = w.events["ts"].iloc[idx].max()
        m.event_time_lag_seconds = max(time.time() - newest.timestamp(), 0.0)
        m.record(len(idx))
        ev = w.events.iloc[idx]
        # The times as a datetime column (``.array``): ``to_numpy`` of a zoned column makes one
        # Timestamp object per event.
        table = pd.DataFrame({"event_id": ev["event_id"].astype(str).to_numpy(), "ts": ev["ts"].array,
                              "score": scores, "alert": scores > self.threshold})
        return BatchReport(len(idx), alerts, quarantine, len(step.late), done - started, table, duplicate_ids)

    def _cache_step(self, step: Any) -> Any:
        """Incremental: embed the snapshots ``step`` closed or changed; returns the windows as
        tensors for decoding (None on the full-buffer path or when nothing was taken in)."""
        if self.cache is None or step.windows is None or step.newest is None:
            return None
        return self.cache.update(step.windows, step.first_changed, step.newest)

    def _alerts(self, w: Any, idx: np.ndarray, scores: np.ndarray, parts: np.ndarray, flagged: np.ndarray,
                decoded: tuple | None = None) -> list[dict]:
        """Alerts for the flagged new events: out with the score, its parts and the feature
        reasons. Incremental (``decoded``: the decoder's outputs for ``idx``): the model's
        explanation of every alert is read off the same decoding, before the alerts go out. Else
        the model's explanations (attention) follow from the explanation worker (inline with
        ``explain="sync"``). The incidents' blast radius follows from the worker either way."""
        from anomaly_pipeline.training import SCORE_PARTS

        calibrated = self.detector.calibrate(scores[flagged]) if self.detector.calibration_ is not None else None
        part_log_p = self._part_log_pvalues(parts[flagged])
        alerts, positions, rows, touched = [], [], [], set()
        # The flagged events' rows in one take (a row at a time is slow on a wide frame).
        flagged_rows = w.events.iloc[idx[flagged]].to_dict("records")
        for j, i in enumerate(flagged.tolist()):
            pos = int(idx[i])
            row = flagged_rows[j]
            if self.checkpoint is not None and not self.checkpoint.claim(f"alert-{row['event_id']}"):
                continue  # sent before a restart: the re-read batch does not send it again
            summary = event_summary(row)
            reasons = feature_reasons(w, pos, self.stream_config.memory_days, row)
            if not reasons:  # a burst or an attribute the feature reasons do not cover: name the score's part
                reasons = [strongest_part_reason(summary, parts[i], None if part_log_p is None else part_log_p[j])]
            alert = {
                "alert_id": f"alert-{row['event_id']}",
                "event_id": str(row["event_id"]),
                "ts": row["ts"].isoformat(),
                "score": float(scores[i]),
                "threshold": self.threshold,
                "calibrated_tail": None if calibrated is None else float(calibrated[j]),
                "score_parts": {k: round(float(v), 4) for k, v in zip(SCORE_PARTS, parts[i], strict=True)},
                "event": summary,
                "reasons": reasons,
                "time_attention": [],
                "neighbours": [],
                "explanation": "pending",
                "label_detail": None if pd.isna(row.get("label_detail")) else str(row["label_detail"]),
            }
            with self.incidents.lock:
                incident = self.incidents.add(alert)
            alert["incident_id"] = incident.incident_id
            touched.add(incident.incident_id)
            alerts.append(alert)
            positions.append(pos)
            rows.append(i)
            self.alerts.append(alert)
        if decoded is not None:
            self._explain_decoded(w, idx, parts, decoded, alerts, rows)
        if alerts and self.checkpoint is not None:
            # At most once: the claimed ids are on disk before any alert goes out, so a kill after
            # this point (before the batch's position is saved) cannot send them again on restart.
            self.checkpoint.save()
        for alert in alerts:
            if self.alert_out is not None:
                self.alert_out.write(json.dumps(alert, default=str) + "\n")
            if self._sink is not None:
                self._sink.put(alert)
        if self.alert_out is not None:
            self.alert_out.flush()
        if decoded is not None:  # explained already: the worker refreshes the blast radii only
            job = (w, [], [], touched)
            self._explain(*job) if self._explainer is None else self._explainer.put(job, [])
            return alerts
        top = sorted(range(len(alerts)), key=lambda k: -alerts[k]["score"])[: self.explain_max]
        chosen = set(top)
        for k, alert in enumerate(alerts):
            if k not in chosen:
                alert["explanation"] = "features only"
        job = (w, [positions[k] for k in top], [alerts[k] for k in top], touched)
        if self._explainer is None:
            self._explain(*job)
        else:
            self._explainer.put(job, alerts)
        return alerts

    def _explain_decoded(self, w: Any, idx: np.ndarray, parts: np.ndarray, decoded: tuple, alerts: list[dict],
                         rows: list[int]) -> None:
        """The model's explanation of each of ``alerts`` (row ``rows[k]`` of ``idx``), read off the
        scoring pass's decoder outputs and the cached snapshots: reasons, the source's temporal
        attention and its neighbours' graph attention in the most attended window. Highest score
        first, until ``explain_budget_s`` is spent; the rest say so (``explain_max=0``: none)."""
        from anomaly_pipeline.explain import _reasons
        from anomaly_pipeline.streaming.incremental import node_keys
        from anomaly_pipeline.training import SCORE_PARTS

        if not alerts:
            return
        out, b_abs = decoded
        cache = self.cache
        model = self.detector.model
        names = w.nodes["name"].to_numpy()
        keys = node_keys(w)
        L, stride_s = cache.history, self.stream_config.stride_s
        days = f"in {self.stream_config.memory_days:g} days"
        started = time.monotonic()
        order = sorted(range(len(alerts)), key=lambda k: -alerts[k]["score"])
        weights_all = out["time_attention"][0].cpu().numpy()
        # The graph attention over each alert's source's neighbours in its most attended window,
        # for all the alerts in one pass (one GAT call per relation).
        top_of = {k: (int(b_abs[rows[k]]) - L + int(np.argmax(weights_all[rows[k]])), keys[int(w.event_src[idx[rows[k]]])])
                  for k in order}
        neighbours_of = cache.neighbour_attention_many(list(top_of.values())) if self.explain_max != 0 else {}
        for done, k in enumerate(order):
            alert, j = alerts[k], rows[k]
            if self.explain_max == 0:
                alert["explanation"] = "features only: model explanations are off (explain_max=0)"
                continue
            spent = time.monotonic() - started
            if spent > self.explain_budget_s:
                alert["explanation"] = (f"features only: the model's explanations of this micro-batch took their "
                                        f"budget ({self.explain_budget_s:g} s) on {done} higher-scored alerts")
                continue
            pos = int(idx[j])
            src, dst = int(w.event_src[pos]), int(w.event_dst[pos])
            dec_j = {name: out[name][j:j + 1] for name in ("attribute_nll", "attribute_mean")}
            part_values = dict(zip(SCORE_PARTS, map(float, parts[j]), strict=True))
            relation = RELATIONS_NAMES[int(w.event_rel[pos])]
            reasons = _reasons(model, w, pos, dec_j, names[src], names[dst], relation, part_values)
            b = int(b_abs[j])
            weights = weights_all[j]
            time_attention = []
            for step, weight in enumerate(weights):
                kb = b - L + step
                snap = cache.snapshots.get(kb)
                time_attention.append({
                    "window_end": str(pd.Timestamp((kb + 1) * stride_s, unit="s", tz="UTC")),
                    "weight": round(float(weight), 4), "active": bool(snap is not None and snap.row_of(keys[src]) >= 0)})
            neighbours = [dict(n) for n in neighbours_of[top_of[k]]]
            with self.incidents.lock:
                alert["reasons"] = [r.replace("in the data so far", days) for r in reasons] or alert["reasons"]
                alert["time_attention"] = time_attention
                alert["neighbours"] = neighbours
                alert["explanation"] = "model"

    def _part_log_pvalues(self, parts: np.ndarray) -> np.ndarray | None:
        """Each part's log tail probability among the validation events (what the Fisher score sums),
        or None for a detector without part calibration."""
        if getattr(self.detector, "part_quantiles_", None) is None:
            return None
        return self.detector.part_log_pvalues(np.nan_to_num(np.asarray(parts, dtype=float)))

    def _explain(self, w: Any, positions: list[int], alerts: list[dict], touched: set[str]) -> None:
        """The blast radius of the incidents the alerts touched, then the model's explanations for
        ``alerts`` (at ``positions`` of ``w``), one alert at a time."""
        from anomaly_pipeline.explain import explain_events

        with self.incidents.lock:
            found = [self.incidents.find(incident_id) for incident_id in touched]
            self.incidents.refresh_blasts([i for i in found if i is not None], w.events)
        days = f"in {self.stream_config.memory_days:g} days"
        for pos, alert in zip(positions, alerts, strict=True):
            [explanation] = explain_events(self.detector.model, w, np.asarray([pos], dtype=np.int64))
            with self.incidents.lock:
                alert["reasons"] = [r.replace("in the data so far", days) for r in explanation.reasons] or alert["reasons"]
                alert["time_attention"] = explanation.time_attention
                alert["neighbours"] = explanation.neighbours
                alert["explanation"] = "model"

    def close(self) -> None:
        """Finish the explanations and the alert deliveries queued so far, then stop the workers."""
        if self._explainer is not None:
            self._explainer.close()
            self._explainer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def flush_explanations(self, timeout_s: float = 60.0) -> None:
        """Wait until the explanation worker has caught up (tests, end of a replay)."""
        if self._explainer is not None:
            self._explainer.join(timeout_s)

    # -- a whole source --
    def run(self, source: Iterable[Batch], *, source_name: str = "stream", report_every_s: float = 10.0) -> Metrics:
        """Consume ``source`` until it ends, logging progress (events/s, lag, alerts) as it goes."""
        last = time.monotonic()
        for batch in source:
            self.process(batch, source_name)
            if time.monotonic() - last >= report_every_s:
                last = time.monotonic()
                self.log(self.progress_line())
        self.log(self.progress_line())
        return self.metrics

    def progress_line(self) -> str:
        m = self.metrics
        return (f"scored {m.events_scored:,} events ({m.events_per_second():,.0f}/s), lag {m.lag_seconds:.2f} s, "
                f"{m.alerts:,} alerts in {len(self.incidents.incidents):,} incidents, {m.events_quarantined:,} "
                f"quarantined, buffer {self.state.n_buffered:,} events, RSS {rss_bytes() / 2**20:,.0f} MiB")


# What the graph needs to place an event (``graph._scored_edges``): an edge with both ends.
PLACEMENT_RULES = {
    "auth": ("dst_host, and user or src_host", ("dst_host",), ("user", "src_host")),
    "process_start": ("process, and src_host or user", ("process",), ("src_host", "user")),
}
FLOW_RULE = ("src_host and dst_host", ("src_host", "dst_host"), ())


def unplaced_reasons(events: pd.DataFrame) -> list[str]:
    """Why each of ``events`` (canonical, dropped by ``graph.build_graph_windows``) cannot be
    scored: which fields its event type needs and which of them it lacks."""
    reasons = []
    for row in events.itertuples(index=False):
        words, needed, either = PLACEMENT_RULES.get(row.event_type, FLOW_RULE)
        missing = [name for name in needed if pd.isna(getattr(row, name))]
        if either and all(pd.isna(getattr(row, name)) for name in either):
            missing.append(" or ".join(either))
        reasons.append(f"cannot be placed in the graph: a {row.event_type} event needs {words}; "
                       f"missing {', '.join(missing) or 'a usable edge'}")
    return reasons


def event_summary(row: pd.Series) -> dict[str, Any]:
    """The attack-path view of one event: who, from where, to where, how, when."""

    def text(name: str) -> str | None:
        value = row.get(name)
        return None if value is None or pd.isna(value) else str(value)

    how = [text("event_type")]
    for name in ("auth_type", "logon_type", "process"):
        if text(name):
            how.append(text(name))
    if text("dst_port"):
        how.append(f"port {text('dst_port')}")
    if text("success") == "False":
        how.append("failed")
    return {"who": text("user"), "from": text("src_host"), "to": text("dst_host") or text("process"),
            "how": " ".join(h for h in how if h), "when": row["ts"].isoformat(), "event_type": text("event_type")}


# What each score part means, for the reason of an alert that no feature reason covers.
PART_WORDS = {
    "hour_surprise": "unusual hour for {src}",
    "link_surprise": "unlikely destination {dst} for {src}",
    "attribute_surprise": "unusual attributes of {src} -> {dst} (volume, outcome, protocol or rhythm)",
    "service_surprise": "a service {dst} was not seen to answer before",
    "rate_edge": "high rate of events {src} -> {dst}",
    "rate_source": "high rate of events from {src}",
    "rate_destination": "high rate of events to {dst}",
    "rate_source_relation": "high rate of {event_type} events from {src}",
    "supervised_attack": "resembles the labelled attacks the model was trained on",
}


def strongest_part_reason(event: dict[str, Any], parts: np.ndarray, log_pvalues: np.ndarray | None) -> str:
    """A reason from the score part that weighs most: the one with the smallest tail probability
    among the validation events when the detector is calibrated (the Fisher score's largest term),
    else the largest part in nats. The model's explanation may replace it later."""
    from anomaly_pipeline.training import SCORE_PARTS

    parts = np.nan_to_num(np.asarray(parts, dtype=float))
    k = int(np.argmin(log_pvalues)) if log_pvalues is not None else int(np.argmax(parts))
    name = SCORE_PARTS[k]
    words = PART_WORDS.get(name, "unusual {part}").format(
        src=event.get("from") or event.get("who") or "the source", dst=event.get("to") or "the destination",
        event_type=event.get("event_type") or "", part=name)
    if log_pvalues is None:
        return f"{words} ({name} {parts[k]:.1f} nats, the largest part of the score)"
    return (f"{words} ({name} {parts[k]:.1f} nats, reached by a share of {np.exp(log_pvalues[k]):.1g} of the "
            "validation events: the strongest part of the score)")


def feature_reasons(w: Any, pos: int, memory_days: float, row: dict[str, Any] | None = None) -> list[str]:
    """Plain reasons read off the event's features alone (no model pass): first-seen pair,
    destination, source and service, a rare hour for the source on earlier days, a failed logon
    or an unanswered connection."""
    from anomaly_pipeline.explain import service_reason
    from anomaly_pipeline.graph import EVENT_FEATURES, HOUR_BINS, RELATIONS

    f = {name: i for i, name in enumerate(EVENT_FEATURES)}
    x = w.event_x[pos]
    names = w.nodes["name"].to_numpy()
    src, dst = names[w.event_src[pos]], names[w.event_dst[pos]]
    relation = RELATIONS[int(w.event_rel[pos])][1]
    reasons = []
    if x[f["pair_first_seen"]] == 1:
        reasons.append(f"first {relation} from {src} to {dst} in {memory_days:g} days")
    if x[f["dst_first_seen"]] == 1:
        reasons.append(f"first time anyone reached {dst} in {memory_days:g} days")
    share = float(x[f["src_hour_profile_share"]])
    if share < 0.05:
        width = 24 // HOUR_BINS
        start = w.events["ts"].iloc[pos].hour // width * width
        reasons.append(f"{src} is rarely active between {start:02d}:00 and {start + width:02d}:00 "
                       f"({share:.1%} of its activity on earlier days falls in these hours, counting only hours the "
                       "data covered)")
    if x[f["src_first_seen"]] == 1:
        reasons.append(f"first event from {src} in {memory_days:g} days")
    # ``row``: the event's row of ``w.events`` when the caller has it (saves two lookups per alert).
    port, protocol = (row["dst_port"], row["protocol"]) if row is not None else (
        w.events["dst_port"].iloc[pos], w.events["protocol"].iloc[pos])
    closed = service_reason(port, protocol, dst, float(x[f["service_open_share"]]))
    if closed:
        reasons.append(closed)
    elif x[f["service_first_seen"]] == 1 and x[f["pair_first_seen"]] != 1:
        reasons.append(f"first use of port {port} on {dst} in {memory_days:g} days")
    if x[f["auth_failed"]] == 1:
        reasons.append("authentication failed" if w.events["event_type"].iloc[pos] == "auth"
                       else "connection not established")
    return reasons
