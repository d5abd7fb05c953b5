"""The streaming scorer: incremental state equals a batch run, bounded memory, quarantine, @champion."""

from __future__ import annotations

import functools
import gc
import io
import json
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline.detectors import HybridDetector
from anomaly_pipeline.graph import EVENT_FEATURES, WindowConfig, build_graph_windows
from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
from anomaly_pipeline.streaming import ChampionModel, StreamConfig, StreamScorer, StreamState, load_champion
from anomaly_pipeline.streaming.sources import FileSource, LineSource, records_to_events
from anomaly_pipeline.training import TrainConfig, score_events

STREAM_DATA = SyntheticConfig(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0)
# Single time scale: the buffer then spans hours, not the coarse scale's week.
STREAM_WINDOW = WindowConfig(history=4, coarse_stride_hours=None)


@functools.lru_cache(maxsize=1)
def stream_events() -> pd.DataFrame:
    return generate_events(STREAM_DATA).sort_values("ts", kind="stable").reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def tiny_model() -> ChampionModel:
    """A small hybrid trained once per test session on the stream's own data."""
    windows = build_graph_windows(stream_events(), STREAM_WINDOW)
    detector = HybridDetector(HybridConfig(hidden=16, multi_scale=False), TrainConfig(seed=1).with_epochs_per_stage(1))
    detector.fit(windows)
    return ChampionModel(detector=detector, window=STREAM_WINDOW, uri="test:tiny")


def to_records(events: pd.DataFrame) -> list[dict]:
    """Events as the JSON objects a client would send."""
    frame = events.copy()
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.loads(frame.to_json(orient="records"))


def _stream_scores(events: pd.DataFrame, state: StreamState, model: ChampionModel, size: int) -> pd.Series:
    from anomaly_pipeline.training import score_components

    out: dict[str, float] = {}
    for lo in range(0, len(events), size):
        step = state.advance(events.iloc[lo : lo + size].copy())
        scores = score_components(model.detector.model, step.windows, step.new_positions).sum(axis=1)
        ids = step.windows.events["event_id"].astype(str).to_numpy()[step.new_positions]
        out.update(zip(ids, scores, strict=True))
    return pd.Series(out)


def test_incremental_state_equals_batch_recomputation_after_evictions():
    events, model = stream_events(), tiny_model()
    state = StreamState(StreamConfig(window=STREAM_WINDOW))
    streamed = _stream_scores(events, state, model, size=400)
    batch_windows = build_graph_windows(events, STREAM_WINDOW)
    batch = pd.Series(score_events(model.detector.model, batch_windows),
                      index=batch_windows.events["event_id"].astype(str).to_numpy())
    # Most of the stream was evicted on the way, yet every event's score is the batch score.
    assert state.evicted_total > 0.8 * len(events)
    assert len(streamed) == len(batch) == len(events)
    np.testing.assert_allclose(streamed.reindex(batch.index).to_numpy(), batch.to_numpy(), rtol=1e-5, atol=1e-4)
    # The features, too: the last state's windows equal the batch windows on the same events, every
    # buffered row (first-seen pair, source and service, the daily-causal hour profile, the pair
    # rhythm and prior means are all patched from the memory).
    last = state.windows
    pos = pd.Index(batch_windows.events["event_id"]).get_indexer(last.events["event_id"])
    assert (pos >= 0).all() and len(pos) > 100
    np.testing.assert_allclose(last.event_x, batch_windows.event_x[pos], rtol=1e-5, atol=1e-5)
    # The service profile counts answered connections only, remembered and buffered: its surprisal
    # (shares far below the absolute tolerance above) equals the batch one as well.
    col = EVENT_FEATURES.index("service_open_share")
    streamed_nats, batch_nats = -np.log(last.event_x[:, col]), -np.log(batch_windows.event_x[pos, col])
    assert batch_nats.max() > 10 and (batch_nats == 0).any()  # closed-port probes and port-less events
    np.testing.assert_allclose(streamed_nats, batch_nats, rtol=1e-5)


def _stream_rates(events: pd.DataFrame, state: StreamState, size: int) -> dict[str, np.ndarray]:
    """count, total and t of every new event as streamed, in the order of ``events``."""
    got: dict[str, dict[str, np.ndarray]] = {"count": {}, "total": {}, "t": {}}
    for lo in range(0, len(events), size):
        step = state.advance(events.iloc[lo : lo + size].copy())
        ids = step.windows.events["event_id"].astype(str).to_numpy()[step.new_positions]
        for name in got:
            values = getattr(step.windows.rates, name)[step.new_positions]
            got[name].update(zip(ids, values, strict=True))
    order = events["event_id"].astype(str)
    return {name: np.stack([d[i] for i in order]) for name, d in got.items()}


@pytest.mark.parametrize("size", [250, 977])
def test_streamed_rates_of_new_events_equal_a_batch_run(size: int):
    """One rate state carried across micro-batches: each new event's count, total and tick are the
    batch's, though most of the stream was evicted and micro-batches split ticks."""
    events = stream_events()
    state = StreamState(StreamConfig(window=STREAM_WINDOW))
    streamed = _stream_rates(events, state, size)
    batch = build_graph_windows(events, STREAM_WINDOW)
    pos = pd.Index(batch.events["event_id"].astype(str)).get_indexer(events["event_id"].astype(str))
    assert (pos >= 0).all() and state.evicted_total > 0.8 * len(events)
    for name in ("count", "total", "t"):
        np.testing.assert_allclose(streamed[name], getattr(batch.rates, name)[pos], rtol=1e-6, atol=1e-6,
                                   err_msg=name)
    # The ticks count from the stream's first event, not the buffer's: a rebuild over the buffer
    # alone would restart them.
    assert streamed["t"].max() == batch.rates.t.max() > 10 * 60 * StreamConfig(window=STREAM_WINDOW).horizon_buckets
    assert state.windows.rates.state is state.rate_state


def test_daily_hour_profile_counts_evicted_events_on_later_days_only():
    """Events evicted from the buffer on the current UTC day do not count for that day's hour
    profile share, but do on the next day; new sources and services are first seen once."""
    from anomaly_pipeline.graph import EVENT_FEATURES

    base = stream_events().iloc[:1].copy()
    day0 = pd.Timestamp("2026-03-02T01:00:00Z")
    times = [day0, day0 + pd.Timedelta(hours=1), day0 + pd.Timedelta(hours=12), day0 + pd.Timedelta(hours=24),
             day0 + pd.Timedelta(hours=25)]
    events = pd.concat([base] * len(times), ignore_index=True)
    events["ts"] = pd.Series(times)
    events["event_id"] = [f"e{i}" for i in range(len(times))]
    state = StreamState(StreamConfig(window=STREAM_WINDOW))
    f = {name: i for i, name in enumerate(EVENT_FEATURES)}
    rows = {}
    for i in range(len(times)):
        step = state.advance(events.iloc[[i]].copy())
        [p] = step.new_positions
        rows[i] = step.windows.event_x[p]
    batch = build_graph_windows(events, STREAM_WINDOW)
    assert state.evicted_total >= 2  # the day-0 events at 01:00 and 02:00 left the buffer by 13:00
    share = [float(rows[i][f["src_hour_profile_share"]]) for i in range(len(times))]
    # Day 0: no completed day yet (1 / 8). Day 1: three earlier events, two in the 00-03 bin and
    # one in 12-15, the only bins day 0 covered: rates (2 + 1.5) / 2 and (1 + 1.5) / 2 per day
    # against the mean 1.5 for the six bins nobody observed (graph.hour_profile).
    np.testing.assert_allclose(share, [1 / 8, 1 / 8, 1 / 8, 1.75 / 12, 1.75 / 12], rtol=1e-6)
    np.testing.assert_allclose(np.stack([rows[i] for i in range(len(times))]), batch.event_x, rtol=1e-5, atol=1e-5)
    assert [rows[i][f["src_first_seen"]] for i in range(len(times))] == [1, 0, 0, 0, 0]


def test_without_history_memory_the_buffer_alone_would_differ():
    """The memory matters: the buffer alone thinks routine pairs are first seen."""
    events = stream_events()
    state = StreamState(StreamConfig(window=STREAM_WINDOW))
    for lo in range(0, len(events), 1000):
        state.advance(events.iloc[lo : lo + 1000].copy())
    raw = build_graph_windows(state.buffer, STREAM_WINDOW)
    from anomaly_pipeline.graph import EVENT_FEATURES

    col = EVENT_FEATURES.index("pair_first_seen")
    assert raw.event_x[:, col].sum() > state.windows.event_x[:, col].sum()


def test_evicted_state_leaves_memory_and_the_buffer_stays_bounded():
    events, state = stream_events(), StreamState(StreamConfig(window=STREAM_WINDOW))
    first = events.iloc[:300].copy()
    state.advance(first)
    [held] = state.frames()
    ref = weakref.ref(held)
    del held, first
    sizes = []
    for lo in range(300, len(events), 300):
        last_batch = events.iloc[lo : lo + 300].copy()
        state.advance(last_batch)
        sizes.append(state.n_buffered)
    gc.collect()
    assert ref() is None, "the first micro-batch's frame is still referenced after its buckets expired"
    # Kept: the buckets the model reads before the oldest event of the latest micro-batch.
    horizon = pd.Timedelta(hours=STREAM_WINDOW.stride_hours * StreamConfig(window=STREAM_WINDOW).horizon_buckets)
    assert state.buffer["ts"].min() >= last_batch["ts"].min().floor("1h") - horizon
    # Bounded by the window: the buffer never holds more than a small slice of the stream.
    assert max(sizes) < 0.25 * len(events)
    # Memory keys expire: with a 1-day memory, keys of earlier days are forgotten.
    short = StreamState(StreamConfig(window=STREAM_WINDOW, memory_days=1.0))
    for lo in range(0, len(events), 1000):
        short.advance(events.iloc[lo : lo + 1000].copy())
    assert 0 < short.memory.n_keys() < state.memory.n_keys()


def test_malformed_events_are_quarantined_and_the_stream_goes_on():
    model = tiny_model()
    events = stream_events().iloc[:600]
    records = to_records(events)
    lines = [json.dumps(r) for r in records[:300]]
    lines += ["{not json", json.dumps({"ts": "yesterday-ish", "event_type": "auth"}), json.dumps([1, 2]),
              json.dumps({"event_type": "auth"}), json.dumps({**records[0], "bytes_out": "lots"}),
              json.dumps({**records[0], "colour": "red"})]
    lines += [json.dumps(r) for r in records[300:]]
    out = io.StringIO()
    scorer = StreamScorer(model, stream_config=StreamConfig(window=STREAM_WINDOW), alert_out=out)
    metrics = scorer.run(LineSource(io.StringIO("\n".join(lines) + "\n"), max_batch=100))
    assert metrics.events_quarantined == 6
    assert metrics.events_scored == 600
    reasons = [q["reason"] for q in scorer.quarantine]
    assert any("not JSON" in r for r in reasons)
    assert any("'ts'" in r and "ISO 8601" in r for r in reasons)
    assert any("required field 'ts'" in r for r in reasons)
    assert any("'bytes_out' must be a number" in r for r in reasons)
    assert any("unknown field(s) ['colour']" in r for r in reasons)
    # Alerts went out as JSON lines, one per alert, each with its event and incident.
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(alerts) == metrics.alerts
    assert all(a["score"] > scorer.threshold and a["incident_id"].startswith("INC-") for a in alerts)


def test_records_to_events_keeps_good_records_of_a_mixed_batch():
    good = to_records(stream_events().iloc[:3])
    events, quarantine = records_to_events([good[0], "nope", good[1], {"ts": "2026-01-05T00:00:00Z"}, good[2]])
    assert events["event_id"].tolist() == [g["event_id"] for g in good]
    assert quarantine["raw_ref"].tolist() == ["stream:2", "stream:4"]
    assert "event_type" in quarantine["reason"].iloc[1]


def test_record_checks_fast_paths_give_the_checks_answers():
    """``_problem``'s fast paths (text already found valid, plain numbers in range) skip only
    values the field's check passes: every bad value still gets the check's own reason, also
    after the same field's good values have warmed the caches."""
    from anomaly_pipeline.streaming.sources import _CHECKS, _problem

    base = {"ts": "2026-01-05T00:00:00Z", "event_type": "auth", "user": "alice", "src_host": "WS1",
            "bytes_out": 10.0, "dst_port": 443}
    assert _problem(base) is None and _problem(dict(base)) is None  # the second one takes the fast paths
    bad_values = {
        "user": [5, 5.0, True, "bad\nname", "carol\u2028"],
        "bytes_out": [float("nan"), float("inf"), -1.0, 1e14, "lots", True],
        "dst_port": [80.5, 70000, -1, "443", False],
        "event_type": ["teleport"],
    }
    for name, values in bad_values.items():
        for value in values:
            record = {**base, name: value}
            expected = _CHECKS[name](name, value)
            assert expected is not None, (name, value)
            assert _problem(record) == expected, (name, value)
    assert _problem({**base, "dst_port": 443.0, "bytes_out": 0}) is None


def test_file_source_reads_any_format_and_follows_growth(tmp_path: Path):
    events = stream_events().iloc[:200]
    path = tmp_path / "events.csv"
    events.iloc[:120].to_csv(path, index=False)
    source = FileSource(path, follow=True, stop_after_idle_s=0.6, poll_s=0.05)
    got, appended = [], False
    for batch in source:
        got.append(batch.events)
        if not appended:
            events.iloc[120:].to_csv(path, index=False, header=False, mode="a")
            appended = True
    read = pd.concat(got, ignore_index=True)
    assert source.fmt == "canonical"
    assert read["event_id"].tolist() == events["event_id"].tolist()


def _register_champion(tmp_path: Path, model: ChampionModel):
    from anomaly_pipeline import registry
    from anomaly_pipeline.mlflow_model import log_hybrid_model
    from anomaly_pipeline.pyfunc_loader import DIGEST_TAG

    config = registry.RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                     artifact_location=str(tmp_path / "artifacts"), experiment="stream-tests")
    client = registry.configure(config)
    det_dir = model.detector.save(tmp_path / "detector")
    with registry.training_run(config, "stream-test") as run:
        _, digest = log_hybrid_model(det_dir, model.window)
    version = registry.register_version(client, config, run.info.run_id, tags={DIGEST_TAG: digest})
    registry.promote(client, config, version.version, gate_passed=True, challenger_score=0.5)
    return config


def test_scorer_streams_with_the_champion_from_the_registry(tmp_path: Path):
    model = tiny_model()
    config = _register_champion(tmp_path, model)
    champion = load_champion(config)
    assert champion.uri.endswith("@champion")
    assert champion.window == STREAM_WINDOW
    assert champion.detector.threshold_ == pytest.approx(model.detector.threshold_)
    events = stream_events().iloc[:1500]
    ours = StreamScorer(model).process(to_records(events))
    theirs = StreamScorer(champion).process(to_records(events))
    assert theirs.scored == 1500
    np.testing.assert_allclose(theirs.scores["score"].to_numpy(), ours.scores["score"].to_numpy(), rtol=1e-5)


def test_load_champion_without_a_model_says_what_to_do(tmp_path: Path):
    from anomaly_pipeline.registry import RegistryConfig

    config = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}", artifact_location=str(tmp_path / "a"))
    with pytest.raises(RuntimeError, match="Train and promote a model first"):
        load_champion(config)


@pytest.mark.parametrize("size", [400, 1_333])
def test_cached_embeddings_of_closed_buckets_give_the_batch_scores(size: int):
    """Incremental path: the buffer keeps one window overlap, closed snapshots are embedded once and
    cached; every new event decoded against the cached node states scores as in a batch run."""
    from anomaly_pipeline.streaming.incremental import SnapshotCache

    events, model = stream_events(), tiny_model()
    net = model.detector.model
    config = StreamConfig(window=STREAM_WINDOW)
    state, cache = StreamState(config, incremental=True), SnapshotCache(net, config.stride_s)
    streamed: dict[str, float] = {}
    buffered = []
    for lo in range(0, len(events), size):
        step = state.advance(events.iloc[lo : lo + size].copy())
        gt = cache.update(step.windows, step.first_changed, step.newest)
        parts, _, _ = cache.score(gt, step.windows, step.new_positions)
        ids = step.windows.events["event_id"].astype(str).to_numpy()[step.new_positions]
        streamed.update(zip(ids, parts.sum(axis=1), strict=True))
        buffered.append(state.n_buffered - len(step.new_positions))
    batch_windows = build_graph_windows(events, STREAM_WINDOW)
    batch = pd.Series(score_events(net, batch_windows), index=batch_windows.events["event_id"].astype(str).to_numpy())
    assert len(streamed) == len(batch) == len(events)
    np.testing.assert_allclose(pd.Series(streamed).reindex(batch.index).to_numpy(), batch.to_numpy(),
                               rtol=1e-5, atol=1e-4)
    # Each closed snapshot was embedded once (the open one is not embedded until it closes), and
    # only the snapshots a later event can read are kept.
    assert cache.embedded == batch_windows.n_buckets - 1
    assert min(cache.snapshots) >= step.first_changed - STREAM_WINDOW.history
    # Besides the new events the buffer holds at most the window overlap and the open bucket:
    # not the model's history.
    per_bucket = len(events) / batch_windows.n_buckets
    assert np.mean(buffered) < (STREAM_WINDOW.overlap_buckets + 2) * per_bucket * 1.5
    assert state.evicted_total > 0.8 * len(events)


def test_the_scorer_explains_every_alert_with_the_model_and_alerts_as_a_batch_run():
    """Through ``StreamScorer``: the alerts are the batch run's, and each carries the model's
    explanation (temporal attention over its history, reasons) when it goes out."""
    from anomaly_pipeline.training import score_components

    events, model = stream_events(), tiny_model()
    out = io.StringIO()
    # A generous budget: this test checks that every alert gets the model's explanation, not the
    # speed of a shared test machine (the benchmark does: benchmarks/stream_latency.py).
    scorer = StreamScorer(model, stream_config=StreamConfig(window=STREAM_WINDOW), alert_out=out,
                          explain_budget_s=60.0)
    assert scorer.incremental
    reports = [scorer.process(to_records(events.iloc[lo : lo + 500])) for lo in range(0, len(events), 500)]
    streamed = pd.concat([r.scores for r in reports]).set_index("event_id")
    batch_windows = build_graph_windows(events, STREAM_WINDOW)
    batch = pd.Series(model.detector.combine(score_components(model.detector.model, batch_windows)),
                      index=batch_windows.events["event_id"].astype(str).to_numpy())
    scores = streamed["score"].reindex(batch.index).to_numpy()
    np.testing.assert_allclose(scores, batch.to_numpy(), atol=0.05)
    assert set(streamed.index[streamed["alert"]]) == set(batch.index[batch.to_numpy() > scorer.threshold])
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(alerts) == scorer.metrics.alerts > 0
    assert all(a["explanation"] == "model" for a in alerts)
    assert all(len(a["time_attention"]) == STREAM_WINDOW.history for a in alerts)
    assert all(abs(sum(t["weight"] for t in a["time_attention"]) - 1) < 1e-3 for a in alerts)
    assert any(t["active"] for a in alerts for t in a["time_attention"])
    assert any(a["neighbours"] for a in alerts)
    scorer.close()


def test_alerts_beyond_the_explanation_budget_say_why_they_have_no_model_explanation():
    events, model = stream_events(), tiny_model()
    out = io.StringIO()
    scorer = StreamScorer(model, stream_config=StreamConfig(window=STREAM_WINDOW), alert_out=out,
                          explain_budget_s=-1.0)
    scorer.run(LineSource(io.StringIO("\n".join(json.dumps(r) for r in to_records(events.iloc[:3000])) + "\n"),
                          max_batch=1000))
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    assert alerts and all(a["explanation"].startswith("features only: the model's explanations of this micro-batch "
                                                      "took their budget") for a in alerts)
    assert all(a["reasons"] for a in alerts)  # the feature reasons stay


def test_neighbour_attention_of_many_alerts_at_once_equals_one_at_a_time():
    """The explanation's graph attention, batched over a micro-batch's alerts (one GAT call per
    relation), ranks the same neighbours with the same weights as one alert at a time."""
    from anomaly_pipeline.streaming.incremental import SnapshotCache, node_keys

    events, model = stream_events(), tiny_model()
    config = StreamConfig(window=STREAM_WINDOW)
    state, cache = StreamState(config, incremental=True), SnapshotCache(model.detector.model, config.stride_s)
    for lo in range(0, 3000, 500):
        step = state.advance(events.iloc[lo : lo + 500].copy())
        cache.update(step.windows, step.first_changed, step.newest)
    keys = node_keys(step.windows)
    requests = [(k, keys[n]) for k in sorted(cache.snapshots)[-3:] for n in range(0, len(keys), 3)]
    many = cache.neighbour_attention_many(requests)
    found = 0
    for request in requests:
        one = cache.neighbour_attention(*request)
        assert [(a["peer"], a["relation"], a["direction"], a["events"]) for a in one] == \
            [(a["peer"], a["relation"], a["direction"], a["events"]) for a in many[request]]
        np.testing.assert_allclose([a["attention"] for a in one], [a["attention"] for a in many[request]], atol=1e-4)
        found += bool(one)
    assert found > 20
