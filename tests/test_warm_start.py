"""A fresh `serve` starts warm: it raises the alerts a batch run over the same day raises.

A small hybrid is trained on the first four days of the streaming tests' synthetic data and
registered as champion the way ``registered_model`` does (with its training events as the warm
history). The fifth day, after the training period, is scored in batch the way daily scoring does
(``HybridScorer.score_period`` over the earlier days and the day) and posted over real HTTP to a
service started as ``anomaly-pipeline serve`` starts it (``serve_app``); the alerted event ids
must be the same. Cold, the same service alerts on other events (everything looks new), and a
champion registered without a history makes the service say so.

Daily scoring (the ``daily_scoring_job`` materialized for that day) scores against the same
history by default: the champion's warm history, plus the daily events after its end; its alerts
are the batch run's and the warm service's, and its metadata names the history.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline import registry, settings
from anomaly_pipeline.cli import build_parser
from anomaly_pipeline.detectors import HybridDetector
from anomaly_pipeline.graph import build_graph_windows
from anomaly_pipeline.mlflow_model import (
    ARTIFACT_WARM_HISTORY,
    load_pyfunc,
    log_hybrid_model,
    warm_history_frame,
)
from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.pyfunc_loader import DIGEST_TAG
from anomaly_pipeline.service import serve_in_thread
from anomaly_pipeline.streaming import StreamScorer, load_champion
from anomaly_pipeline.streaming.commands import serve_app
from anomaly_pipeline.training import CurriculumStage, TrainConfig
from tests import test_streaming as tests_streaming
from tests.test_streaming import STREAM_WINDOW, stream_events, to_records

TRAIN_DAYS = 4
# One short stage: the equality below holds for any weights, so training only has to be real.
QUICK = TrainConfig(stages=(CurriculumStage("quick", epochs=1, negatives="random"),), min_steps_per_epoch=5, seed=1)


@functools.lru_cache(maxsize=1)
def _split() -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """(training events, the day after them, the day's start and end)."""
    events = stream_events()
    start = events["ts"].min().floor("1D") + pd.Timedelta(days=TRAIN_DAYS)
    end = start + pd.Timedelta(days=1)
    return events[events["ts"] < start], events[(events["ts"] >= start) & (events["ts"] < end)], start, end


@functools.lru_cache(maxsize=1)
def _trained() -> tuple[HybridDetector, pd.DataFrame]:
    """The detector and the events of its graph windows (what registered_model logs)."""
    windows = build_graph_windows(_split()[0], STREAM_WINDOW)
    detector = HybridDetector(HybridConfig(hidden=8, multi_scale=False), QUICK).fit(windows)
    return detector, windows.events


def _register_champion(home: Path, *, warm: bool, history_end: pd.Timestamp | None = None) -> registry.RegistryConfig:
    """The trained detector as the next version and champion of the registry under ``home``;
    ``history_end``: its warm history holds only the training events before it."""
    detector, events = _trained()
    config = registry.RegistryConfig.from_state(settings.state_paths(home))
    client = registry.configure(config)
    det_dir = detector.save(home / "detector")
    if history_end is not None:
        events = events[events["ts"] < history_end]
    with registry.training_run(config, "warm-start-test") as run:
        _, digest = log_hybrid_model(det_dir, STREAM_WINDOW, warm_history=warm_history_frame(events) if warm else None)
    version = registry.register_version(client, config, run.info.run_id, tags={DIGEST_TAG: digest})
    registry.promote(client, config, version.version, gate_passed=True, challenger_score=0.5)
    return config


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("warm") / "home"
    _register_champion(home, warm=True)
    return home


@pytest.fixture(scope="module")
def batch_alerts(champion_home: Path) -> pd.DataFrame:
    """The day scored in batch with the champion, as daily scoring does, with every earlier day as history."""
    train, day, start, end = _split()
    config = registry.RegistryConfig.from_state(settings.state_paths(champion_home))
    registry.configure(config)
    _, model = load_pyfunc(f"models:/{config.model_name}@champion")
    period = model.score_period(pd.concat([train, day], ignore_index=True), start, end)
    assert len(period.scored) == len(day)
    return period.scored


@contextlib.contextmanager
def _serve(home: Path, *extra: str) -> Iterator[httpx.Client]:
    """A real `serve` on a free port for the block's duration; a client to it."""
    args = build_parser().parse_args(["--home", str(home), "serve", *extra])
    server, thread, port = serve_in_thread(serve_app(args))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)


def _post_day(client: httpx.Client, batch_size: int = 500) -> tuple[set[str], int]:
    """POST the day in micro-batches as a client would; (alerted event ids, events scored)."""
    records = to_records(_split()[1])
    alerted, scored = set(), 0
    for lo in range(0, len(records), batch_size):
        response = client.post("/events", json={"events": records[lo : lo + batch_size]})
        assert response.status_code == 200, response.text
        scored += response.json()["scored"]
        alerted |= {a["event_id"] for a in response.json()["alerts"]}
    return alerted, scored


def _metrics(client: httpx.Client) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in client.get("/metrics").text.splitlines() if not line.startswith("#"))


def test_a_fresh_serve_raises_the_alerts_of_a_batch_run_over_the_same_day(champion_home, batch_alerts, capfd):
    with _serve(champion_home) as client:
        started = capfd.readouterr().err
        health = client.get("/healthz").json()
        alerted, scored = _post_day(client)
        metrics = _metrics(client)
        landing = client.get("/").text
    train = _split()[0]
    assert len(warm_history_frame(_trained()[1])) == len(train)  # every training event is in the history
    # The service says it started warm, from which version and on how much history.
    assert f"warm_start: warm ({len(train):,} events of version 1's training history" in started
    warm = health["warm_start"]
    assert warm["status"] == "warm" and warm["model_version"] == health["model_version"] == "1"
    assert warm["history_events"] == len(train) and warm["first_ts"] == train["ts"].min().isoformat()
    assert metrics['anomaly_stream_warm_start{model_version="1"}'] == "1"
    assert int(metrics["anomaly_stream_warm_history_events"]) == len(train)
    assert "warm start" in landing and f"warm ({len(train):,} events of version 1" in landing
    # The alerts: the same events as the batch run's, none more, none fewer.
    expected = set(batch_alerts.loc[batch_alerts["alert"], "event_id"].astype(str))
    assert scored == len(batch_alerts)
    assert len(expected) >= 5, "too few alerts on the day for the comparison to mean anything"
    # Exactly equal: the features are the batch run's to float32 rounding (see the test below), and
    # no score of the day lies within that rounding of the threshold.
    assert alerted == expected, f"service only: {sorted(alerted - expected)}; batch only: {sorted(expected - alerted)}"


def test_cold_the_same_service_alerts_on_other_events(champion_home, batch_alerts, capfd):
    """Why the warm start matters: without the training period the first-seen, hour-profile and rate
    features describe another history, and the alerts are not the batch run's."""
    with _serve(champion_home, "--cold") as client:
        assert "warm_start: none (--cold given" in capfd.readouterr().err
        assert client.get("/healthz").json()["warm_start"]["status"] == "none"
        alerted, _ = _post_day(client)
    expected = set(batch_alerts.loc[batch_alerts["alert"], "event_id"].astype(str))
    day = _split()[1]
    attacks = set(day.loc[day["label"].fillna(0).astype(int) == 1, "event_id"].astype(str))
    print(f"cold: {len(alerted)} alerts, {len(alerted & expected)} of them the batch run's {len(expected)}; attack "
          f"events alerted cold {len(alerted & attacks)}, in batch {len(expected & attacks)} of {len(attacks)}")
    # Cold, the state misjudges the day: most of the batch run's alerts are missing or others are raised.
    assert len(alerted ^ expected) > len(expected) // 2


def test_history_replayed_in_pieces_gives_the_batch_scores(champion_home, batch_alerts):
    """The replay is cut into pieces (bounded buffer); the day's scores are the batch's all the same."""
    champion = load_champion(registry.RegistryConfig.from_state(settings.state_paths(champion_home)))
    scorer = StreamScorer(champion, explain="sync", explain_max=0)
    warm = scorer.warm_start(chunk_events=1_500)
    assert warm.warm and champion.history is None  # released once replayed
    assert scorer.state.evicted_total > 0.5 * warm.events  # the pieces pushed the oldest into the memory
    with pytest.raises(RuntimeError, match="before the first event"):
        scorer.warm_start()
    got = []
    for lo in range(0, len(_split()[1]), 700):
        got.append(scorer.process(to_records(_split()[1].iloc[lo : lo + 700])).scores)
    streamed = pd.concat(got).set_index("event_id")
    batch = batch_alerts.set_index(batch_alerts["event_id"].astype(str))
    scores = streamed["score"].reindex(batch.index).to_numpy()
    # The score parts agree to float32 rounding (about 1e-6 nats: the stream adds remembered sums
    # to the buffer's, the batch sums once). The combined score reads each part's tail among 1,001
    # calibration quantiles, a step function: a part that lies within rounding of a quantile can
    # land one step away (a few thousandths here). Hence a tolerance on the score, none on the alerts.
    np.testing.assert_allclose(scores, batch["score"].to_numpy(), atol=0.05)
    assert (np.abs(scores - batch["score"].to_numpy()) > 1e-4).mean() < 0.01
    assert set(streamed.index[streamed["alert"]]) == set(batch.index[batch["alert"]])
    scorer.close()


def test_a_champion_without_history_starts_cold_and_says_why(tmp_path: Path, capfd):
    home = tmp_path / "home"
    _register_champion(home, warm=False)
    with _serve(home) as client:
        log = capfd.readouterr().err
        health = client.get("/healthz").json()
        metrics = _metrics(client)
        landing = client.get("/").text
    assert "warm_start: none (models:/" in log and "registered without a warm-start history" in log
    assert health["warm_start"]["status"] == "none"
    assert "registered without a warm-start history" in health["warm_start"]["reason"]
    assert metrics['anomaly_stream_warm_start{model_version="1"}'] == "0"
    assert metrics["anomaly_stream_warm_history_events"] == "0"
    assert "none (models:/" in landing


def test_a_modified_warm_history_is_refused_like_modified_weights(champion_home):
    """The history is one of the model's hashed data files: changed after registration, the
    champion does not load (and the service does not start on it)."""
    config = registry.RegistryConfig.from_state(settings.state_paths(champion_home))
    [path] = list(champion_home.rglob(ARTIFACT_WARM_HISTORY))
    original = path.read_bytes()
    frame = pd.read_parquet(path)
    frame.loc[0, "user"] = "attacker"
    try:
        frame.to_parquet(path, index=False)
        assert hashlib.sha256(path.read_bytes()).hexdigest() != hashlib.sha256(original).hexdigest()
        with pytest.raises(RuntimeError, match=rf"changed \['{ARTIFACT_WARM_HISTORY}'\].*modified after registration"):
            load_champion(config)
    finally:
        path.write_bytes(original)
    assert load_champion(config).history is not None


# --- daily scoring: the same history, the same alerts -------------------------------------------

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DAILY = ["daily_events", "scored_events", "alerts"]  # no drift: these champions log no drift reference


def _daily(home: Path, day: str, assets: list[str] = DAILY, **scoring) -> dict[str, dict]:
    """Materialize ``assets`` of the daily scoring job for ``day`` on a Dagster instance over
    ``home`` (the stream's synthetic days as the event source); their metadata by asset."""
    import dagster as dg

    from assets.resources import EventSourceResource
    from definitions import build_definitions, local_resources

    resources = local_resources(str(home))
    data = tests_streaming.STREAM_DATA
    resources["event_source"] = EventSourceResource(seed=data.seed, n_users=data.n_users, n_servers=data.n_servers,
                                                    days=data.days, events_per_user_day=data.events_per_user_day)
    ops = {"scored_events": {"config": scoring}} if scoring else {}
    result = build_definitions(resources).resolve_job_def("daily_scoring_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=day, run_config={**QUIET, "ops": ops},
        asset_selection=[dg.AssetKey(a) for a in assets])
    return {e.asset_key.to_user_string(): {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def _daily_alerts(home: Path, day: str) -> set[str]:
    return set(pd.read_parquet(settings.state_paths(home).data_dir / "daily" / "alerts" / f"{day}.parquet")["event_id"])


def _warm_service_alerts(home: Path, *days: pd.DataFrame) -> set[str]:
    """What the warm service raises on the last of ``days``, fed the earlier ones first: its
    scorer (``StreamScorer``, as ``serve`` builds it) warm-started from the champion's history."""
    scorer = StreamScorer(load_champion(registry.RegistryConfig.from_state(settings.state_paths(home))),
                          explain="sync", explain_max=0)
    assert scorer.warm_start().warm
    for day in days:
        scores = pd.concat([scorer.process(to_records(day.iloc[lo : lo + 700])).scores
                            for lo in range(0, len(day), 700)])
    scorer.close()
    return set(scores.loc[scores["alert"], "event_id"].astype(str))


def _day_key(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d")


def test_daily_scoring_raises_the_warm_services_alerts(champion_home, batch_alerts):
    """The champion's warm history ends where the day starts: daily scoring with the default config
    uses it as the history and alerts on the batch run's events (which the fresh serve above raises)."""
    train, day, start, _ = _split()
    meta = _daily(champion_home, _day_key(start))
    scored = meta["scored_events"]
    assert scored["history_source"] == "champion_warm_history"
    assert scored["history"] == (f"champion warm history v1: {len(train):,} events from {train['ts'].min().isoformat()} "
                                 f"to {train['ts'].max().isoformat()}, plus 0 daily events")
    assert meta["alerts"]["history"] == scored["history"]
    assert scored["warm_history_events"] == scored["history_events"] == len(train)
    assert scored["events_scored"] == meta["daily_events"]["rows_valid"] == len(day)
    expected = set(batch_alerts.loc[batch_alerts["alert"], "event_id"].astype(str))
    daily = _daily_alerts(champion_home, _day_key(start))
    assert daily == expected, f"daily only: {sorted(daily - expected)}; batch only: {sorted(expected - daily)}"

    # lookback_days stays an override, and says so; with one missing day the alerts are others.
    lookback = _daily(champion_home, _day_key(start), ["scored_events", "alerts"], lookback_days=1)["scored_events"]
    assert lookback["history_source"] == "lookback" and lookback["lookback_days"] == 1
    assert lookback["history"].startswith("lookback only: lookback_days=1 set in the run config; 0 daily events")
    assert lookback["history_missing_days"] == _day_key(start - pd.Timedelta(days=1))
    print(f"lookback_days=1 (no history): {len(_daily_alerts(champion_home, _day_key(start)))} alerts, "
          f"{len(_daily_alerts(champion_home, _day_key(start)) & expected)} of them the warm run's {len(expected)}")


def test_daily_scoring_adds_the_days_after_the_warm_history(tmp_path: Path, batch_alerts):
    """A champion whose warm history ends a day before the scored day: daily scoring adds that
    day's daily events (as the service would have streamed them) and raises the alerts of the warm
    service fed that day and then the scored one, which are the batch run's; a champion without a
    warm history falls back to the lookback and says why."""
    train, day, start, _ = _split()
    before = start - pd.Timedelta(days=1)
    home = tmp_path / "home"
    _register_champion(home, warm=True, history_end=before)
    _daily(home, _day_key(before), ["daily_events"])
    meta = _daily(home, _day_key(start))["scored_events"]
    warm, gap = train[train["ts"] < before], train[train["ts"] >= before]
    assert meta["history"] == (
        f"champion warm history v1: {len(warm):,} events from {warm['ts'].min().isoformat()} to "
        f"{warm['ts'].max().isoformat()}, plus {len(gap):,} daily events from {gap['ts'].min().isoformat()} to "
        f"{gap['ts'].max().isoformat()}")
    assert (meta["warm_history_events"], meta["daily_history_events"]) == (len(warm), len(gap))
    expected = set(batch_alerts.loc[batch_alerts["alert"], "event_id"].astype(str))
    assert _daily_alerts(home, _day_key(start)) == expected
    assert _warm_service_alerts(home, gap, day) == expected

    _register_champion(home, warm=False)  # version 2, champion, without a warm history
    fallback = _daily(home, _day_key(start), ["scored_events", "alerts"])["scored_events"]
    assert fallback["model_version"] == "2" and fallback["history_source"] == "lookback"
    assert fallback["history"] == (f"lookback only: champion v2 was registered without a warm-start history; "
                                   f"{len(gap):,} daily events of the previous 1 day(s)")
