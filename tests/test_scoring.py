"""The daily scoring path on a real Dagster instance and a real MLflow store: each partition is
scored with whatever `@champion` points at, alerts are ranked, drift is measured against the
champion's training reference and kept in MLflow, and the drift sensor reads it."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from anomaly_pipeline import registry, settings
from anomaly_pipeline.alerts import WEBHOOK_ENV
from assets.resources import EventSourceResource
from sensors.drift import drift_retrain_sensor

TINY_SOURCE = EventSourceResource(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0)
TRAIN_CONFIG = {
    "ops": {
        "hybrid_model": {"config": {"epochs_per_stage": 1, "hidden": 16}},
        "graph_windows": {"config": {"history": 4}},
        "baseline_models": {"config": {"baselines": ["heuristic_rules"]}},
        # This file tests scoring, not the gate (tests/test_registry.py does): a margin of -1 lets
        # the tiny model register whatever its average precision.
        "model_evaluation": {"config": {"gate_margin": -1.0}},
    }
}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A state folder with version 1 trained on 5 tiny days, the instance, definitions and windows."""
    from definitions import build_definitions, local_resources

    home = settings.state_paths(tmp_path_factory.mktemp("scoring") / "state").ensure().home
    resources = local_resources(str(home))
    resources["event_source"] = TINY_SOURCE
    defs = build_definitions(resources)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("full_pipeline_job").execute_in_process(
        instance=instance, run_config={**QUIET, **TRAIN_CONFIG})
    config = registry.RegistryConfig.from_state(settings.state_paths(home))
    return home, defs, instance, config, result.asset_value("registered_model"), result.asset_value("graph_windows")


def _score(defs: dg.Definitions, instance: dg.DagsterInstance, day: str, **ops) -> dict[str, dict]:
    result = defs.resolve_job_def("daily_scoring_job").execute_in_process(
        instance=instance, partition_key=day, run_config={**QUIET, "ops": ops}, raise_on_error=True)
    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        assert mat.partition == day
        meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return meta


def test_registration_logs_card_gx_summary_reference_and_commit(trained) -> None:
    _, _, _, config, v1, _ = trained
    client = registry.configure(config)
    assert v1.version == "1" and "champion" in v1.aliases
    artifacts = {a.path for a in client.list_artifacts(v1.run_id)}
    assert {"model_card.md", "validation", "reference", "evaluation"} <= artifacts
    card = Path(client.download_artifacts(v1.run_id, "model_card.md")).read_text()
    assert card.startswith("# Model card: anomaly-pipeline-hybrid version 1")
    assert "## Known limits" in card and "data window: 2026-01-05" in card
    gx = mlflow.artifacts.load_dict(f"runs:/{v1.run_id}/validation/gx_summary.json")
    assert gx["rows_read"] == gx["rows_valid"] + gx["rows_quarantined"] > 1000
    assert gx["quarantine_check_passed"] is True and "gx_summary" in gx
    version = client.get_model_version(config.model_name, "1")
    assert version.tags["git_commit"] == registry.git_commit()
    assert version.tags["gate_passed"] == "true"
    reference = registry.load_drift_reference(client, config, "1")
    assert "anomaly_score" in reference and len(reference) > 1000


def test_registration_logs_the_warm_start_history_with_the_weights(trained) -> None:
    """The version carries its training events for the service's warm start, verified like the weights."""
    from anomaly_pipeline.streaming import load_champion

    _, _, instance, config, v1, windows = trained
    champion = load_champion(config)
    assert champion.version == v1.version and champion.history_note is None
    history = champion.history
    # Five tiny days: all of them are within the 30 days kept, in time order, without labels.
    assert len(history) == len(windows.events)
    assert history["event_id"].tolist() == windows.events.sort_values("ts", kind="stable")["event_id"].tolist()
    assert history["label"].isna().all() and history["label_detail"].isna().all()
    meta = instance.fetch_materializations(dg.AssetKey("registered_model"), limit=1).records[0] \
        .asset_materialization.metadata
    assert meta["warm_history_events"].value == len(windows.events)


def test_the_champion_is_rescored_on_the_challengers_test_window(trained) -> None:
    from assets.registry import _champion_score_on_test_window

    _, _, _, config, v1, windows = trained
    client = registry.configure(config)
    # Version 1 is champion; asked to compare it with a newer version on this run's test window, the
    # champion loaded from MLflow must reproduce the average precision model_evaluation measured.
    context = dg.build_asset_context()
    score = _champion_score_on_test_window(context, client, config, windows, new_version="99")
    recorded = float(client.get_model_version(config.model_name, v1.version).tags["eval_average_precision"])
    assert score == pytest.approx(recorded, abs=1e-6)
    assert _champion_score_on_test_window(context, client, config, windows, new_version="1") is None


def test_a_partition_is_scored_with_the_champion_and_alerts_are_ranked(trained, monkeypatch) -> None:
    home, defs, instance, config, v1, _ = trained
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    client = registry.configure(config)
    # Version 2: the same weights registered again. It is the newest version and challenger, but
    # not champion, so scoring must keep using version 1.
    v2 = registry.register_version(client, config, v1.run_id)
    assert v2.aliases == ["challenger"] and registry.champion_version(client, config.model_name) == "1"

    backfill = [_score(defs, instance, day) for day in ("2026-01-07", "2026-01-08")]  # a two-day backfill
    meta = backfill[-1]
    assert meta["scored_events"]["model_uri"] == "models:/anomaly-pipeline-hybrid@champion"
    assert meta["scored_events"]["model_version"] == "1"
    # The champion was trained on 01-05 .. 01-09: the day's history is its warm history before the day.
    assert meta["scored_events"]["history_source"] == "champion_warm_history"
    assert meta["scored_events"]["history"].startswith("champion warm history v1: ")
    assert meta["scored_events"]["history_events"] == meta["scored_events"]["warm_history_events"] > 0
    assert meta["daily_events"]["rows_read"] == meta["daily_events"]["rows_valid"] + meta["daily_events"]["rows_quarantined"]
    data = settings.state_paths(home).data_dir / "daily"
    scored = pd.read_parquet(data / "scored_events" / "2026-01-08.parquet")
    day = pd.to_datetime(scored["ts"], utc=True)
    assert (day >= pd.Timestamp("2026-01-08", tz="UTC")).all() and (day < pd.Timestamp("2026-01-09", tz="UTC")).all()
    assert len(scored) == meta["scored_events"]["events_scored"] > 500
    alerts = pd.read_parquet(data / "alerts" / "2026-01-08.parquet")
    assert len(alerts) == meta["alerts"]["alerts"] > 0
    assert {"score", "threshold", "rank", "model_version", "event_id", "raw_ref"} <= set(alerts.columns)
    assert (alerts["score"] > alerts["threshold"]).all() and set(alerts["model_version"]) == {"1"}
    assert alerts["rank"].is_monotonic_increasing and alerts["score"].is_monotonic_decreasing
    assert alerts["rank"].iloc[0] == 1

    # Promote version 2 by hand and re-run the same partition: now it is scored with version 2.
    registry.force_promote(client, config, "2", reason="test: champion moves", actor="pytest")
    rescored = _score(defs, instance, "2026-01-08")
    assert rescored["scored_events"]["model_version"] == "2"
    assert set(pd.read_parquet(data / "alerts" / "2026-01-08.parquet")["model_version"]) == {"2"}
    registry.rollback(client, config, reason="test: back to 1")
    assert _score(defs, instance, "2026-01-08")["scored_events"]["model_version"] == "1"


def test_daily_drift_is_in_mlflow_and_drives_the_sensor(trained, monkeypatch) -> None:
    _, defs, instance, config, _, _ = trained
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    earlier = dg.build_sensor_context(instance=instance)
    drift_retrain_sensor(earlier)  # the days scored by the other tests are handled: start after them
    # A threshold no real day reaches (every column drifted) -> no retrain.
    strict = _score(defs, instance, "2026-01-07",
                    daily_drift_report={"config": {"drift_share_threshold": 1.0}})["daily_drift_report"]
    assert 0.0 <= strict["drift_share"] < 1.0
    assert strict["champion_version"] == registry.champion_version(registry.configure(config), config.model_name)
    assert Path(strict["report_html"]).stat().st_size > 10_000
    client = registry.configure(config)
    html = [a.path for a in client.list_artifacts(strict["mlflow_run_id"], "drift")]
    assert "drift/drift_2026-01-07.html" in html and strict["mlflow_artifact"].endswith("drift_2026-01-07.html")
    assert "score" in strict["score_drift"] and "drifted" in strict["score_drift"]
    assert isinstance(strict["drifted_columns_list"], list)
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("daily_drift_report"), "daily_drift_share_below_threshold")])
    assert check, "the drift check was not recorded"

    context = dg.build_sensor_context(instance=instance, cursor=earlier.cursor)
    skip = drift_retrain_sensor(context)
    assert isinstance(skip, dg.SkipReason) and "no drift" in skip.skip_message

    # The same day measured with a threshold it reaches -> one retrain request for this champion.
    low = _score(defs, instance, "2026-01-07", daily_drift_report={"config": {"drift_share_threshold": 0.01}})
    assert low["daily_drift_report"]["drift_share"] >= 0.01
    request = drift_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"drift-2026-01-07-champion-v{low['daily_drift_report']['champion_version']}"


def test_scoring_without_a_champion_says_what_to_do(trained, tmp_path) -> None:
    from definitions import build_definitions, local_resources

    home = settings.state_paths(tmp_path / "empty").ensure().home
    resources = local_resources(str(home))
    resources["event_source"] = TINY_SOURCE
    defs = build_definitions(resources)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.Failure, match="has no partition 2026-01-08"):
        defs.resolve_job_def("daily_scoring_job").execute_in_process(
            instance=instance, partition_key="2026-01-08", run_config=QUIET,
            asset_selection=[dg.AssetKey("scored_events"), dg.AssetKey("alerts")])
    with pytest.raises(dg.Failure, match="no 'champion' version yet"):
        defs.resolve_job_def("daily_scoring_job").execute_in_process(
            instance=instance, partition_key="2026-01-08", run_config=QUIET)


def test_an_empty_day_is_its_own_outcome_not_a_failure(trained) -> None:
    _, defs, instance, _, _, _ = trained
    # The tiny source covers 2026-01-05 .. 01-09; the default partitions run to 01-14.
    result = defs.resolve_job_def("daily_scoring_job").execute_in_process(
        instance=instance, partition_key="2026-01-12", run_config=QUIET, raise_on_error=False)
    assert result.success
    materialized = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert set(materialized) == {"daily_events"}  # scoring and drift skipped, not failed
    meta = materialized["daily_events"].event_specific_data.materialization.metadata
    assert meta["rows_read"].value == 0 and meta["dagster/row_count"].value == 0
    assert meta["outcome"].value.startswith("no events for 2026-01-12 in synthetic")
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.description.startswith("no events for 2026-01-12")


def test_partitions_follow_the_source_and_scoring_shows_its_model_in_the_lineage() -> None:
    from assets.scoring import partition_days
    from definitions import defs

    assert partition_days({}) == ("2026-01-05", "2026-01-15")  # the embedded default's ten days
    assert partition_days({"ANOMALY_PIPELINE_EVENTS_PATH": "/data/conn.log",
                           "ANOMALY_PIPELINE_PARTITION_START": "2026-03-01"}) == ("2026-03-01", None)
    assert partition_days({"ANOMALY_PIPELINE_PARTITION_START": "2026-03-01",
                           "ANOMALY_PIPELINE_PARTITION_END": "2026-04-01"}) == ("2026-03-01", "2026-04-01")
    keys = defs.resolve_job_def("daily_scoring_job").partitions_def.get_partition_keys()
    assert keys[0] == "2026-01-05" and keys[-1] == "2026-01-14"
    graph = defs.resolve_asset_graph()
    for key in ("scored_events", "alerts"):
        assert dg.AssetKey("registered_model") in graph.get(dg.AssetKey(key)).parent_keys


def test_a_simulated_week_of_schedules_and_sensors_has_no_failed_run(trained) -> None:
    """Every schedule and sensor turned on, ticking once a day for a week inside the source's days and
    a week long after them: every tick runs successfully or skips with its reason."""
    from datetime import datetime, timedelta

    from sensors.ticks import run_sensor_tick

    _, defs, instance, _, _, _ = trained
    # Drift is not what this test is about (test_daily_drift_is_in_mlflow_and_drives_the_sensor is):
    # a threshold no day reaches keeps the drift sensor from retraining after every run.
    never = {"config": {"drift_share_threshold": 1.0}}
    fast = {**QUIET, "ops": {**TRAIN_CONFIG["ops"], "drift_report": never}}
    daily = {**QUIET, "ops": {"daily_drift_report": never}}
    sensors = ["drift_retrain_sensor", "new_data_sensor"]
    cursors: dict[str, str | None] = {}
    skipped: list[str] = []
    launched: list[str] = []
    for first in (datetime(2026, 1, 7, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)):
        for offset in range(7):
            day = first + timedelta(days=offset)
            # The daily schedule ticks at 01:00 every day, the weekly one at 03:00 on Mondays.
            due = [("daily_scoring_schedule", 1)] + ([("weekly_retrain_schedule", 3)] if day.weekday() == 0 else [])
            for name, hour in due:
                schedule = defs.resolve_schedule_def(name)
                when = day + timedelta(hours=hour)
                context = dg.build_schedule_context(
                    instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def(),
                    resources={k: defs.resources[k] for k in schedule.required_resource_keys})
                data = schedule.evaluate_tick(context)
                if not data.run_requests:
                    skipped.append(f"{name} {when:%Y-%m-%d}: {data.skip_message}")
                for request in data.run_requests or []:
                    run = defs.resolve_job_def(schedule.job_name).execute_in_process(
                        instance=instance, partition_key=request.partition_key, raise_on_error=False,
                        run_config=daily if request.partition_key else fast, tags=request.tags)
                    launched.append(f"{name} {when:%Y-%m-%d}")
                    assert run.success, f"{name} at {when} failed"
            for name in sensors:
                outcome = run_sensor_tick(defs, name, instance, cursors.get(name), run_config=fast)
                cursors[name] = outcome.cursor
                assert all(status == "SUCCESS" for status in outcome.statuses.values()), outcome.describe()
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert not failed, [r.job_name for r in failed]
    assert any(s.startswith("daily_scoring_schedule 2026-11-2") and "no partition for" in s for s in skipped)
    assert sum(n.startswith("daily_scoring_schedule") for n in launched) == 7  # 2026-01-06 .. 01-12
    assert any(n.startswith("weekly_retrain_schedule") for n in launched)  # Monday 2026-01-12

