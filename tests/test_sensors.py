"""Sensors on a real Dagster instance: drift -> one retrain, new files, failed runs and gates -> alerts.

Drift measurements are reported to the instance as materializations of daily_drift_report (the
asset itself runs in test_scoring.py); the retrain they trigger really executes on tiny data.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from anomaly_pipeline import settings
from anomaly_pipeline.alerts import WEBHOOK_ENV
from assets.resources import EventSourceResource
from sensors.alerts import QUALITY_GATE, quality_gate_alert_sensor, run_failure_alert_sensor
from sensors.drift import drift_retrain_sensor
from sensors.ticks import existing_run_ids, run_sensor_tick
from tests.test_alerts import Webhook

TINY_SOURCE = EventSourceResource(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0)
FAST = {
    "ops": {
        "hybrid_model": {"config": {"epochs_per_stage": 1, "hidden": 16}},
        "graph_windows": {"config": {"history": 4}},
        "baseline_models": {"config": {"baselines": ["heuristic_rules", "isolation_forest"]}},
    }
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return settings.state_paths(tmp_path / "state").ensure().home


@pytest.fixture
def defs(home: Path) -> dg.Definitions:
    from definitions import build_definitions, local_resources

    resources = local_resources(str(home))
    resources["event_source"] = TINY_SOURCE
    return build_definitions(resources)


@pytest.fixture
def webhook(monkeypatch):
    with Webhook() as hook:
        monkeypatch.setenv(WEBHOOK_ENV, hook.url)
        yield hook


def _report_drift(instance: dg.DagsterInstance, day: str, share: float, version: str = "1") -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="daily_drift_report",
            partition=day,
            metadata={"drift_share": share, "drift_share_threshold": 0.2, "model_version": version,
                      "drifted_columns": "hour_sin, hour_cos" if share >= 0.2 else "none"},
        )
    )


def test_drift_sensor_fires_on_drift_only_and_alerts_the_webhook(webhook: Webhook) -> None:
    instance = dg.DagsterInstance.ephemeral()
    nothing = drift_retrain_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(nothing, dg.SkipReason) and "no drift report" in nothing.skip_message

    _report_drift(instance, "2026-01-08", 0.1)
    context = dg.build_sensor_context(instance=instance)
    quiet = drift_retrain_sensor(context)
    assert isinstance(quiet, dg.SkipReason) and "no drift" in quiet.skip_message
    assert "2026-01-08 0.100" in quiet.skip_message
    assert webhook.received == []  # no drift, no alert

    _report_drift(instance, "2026-01-13", 0.43)
    context = dg.build_sensor_context(instance=instance, cursor=context.cursor)
    request = drift_retrain_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "drift-2026-01-13-champion-v1"
    assert request.tags["trigger"] == "drift" and request.tags["drift_partition"] == "2026-01-13"
    [alert] = webhook.received
    assert alert["body"]["kind"] == "drift"
    assert alert["body"]["payload"]["partition"] == "2026-01-13"
    assert alert["body"]["payload"]["drift_share"] == pytest.approx(0.43)

    again = drift_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert isinstance(again, dg.SkipReason) and "already handled" in again.skip_message
    assert len(webhook.received) == 1

    # A new champion drifting on the same day is a new situation: a new run key.
    _report_drift(instance, "2026-01-13", 0.5, version="2")
    newer = drift_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert newer.run_key == "drift-2026-01-13-champion-v2"


def test_two_ticks_on_the_same_drift_start_one_retrain(defs: dg.Definitions, home: Path, monkeypatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    instance = dg.DagsterInstance.ephemeral()
    _report_drift(instance, "2026-01-13", 0.43)
    first = run_sensor_tick(defs, "drift_retrain_sensor", instance, None, run_config=FAST)
    assert first.requested == ["drift-2026-01-13-champion-v1"]
    [run_id] = first.launched.values()
    run = instance.get_run_by_id(run_id)
    assert run.job_name == "retrain_job" and run.tags["trigger"] == "drift"
    assert run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
    # It really retrained: the hybrid model was materialized in that run.
    assert instance.fetch_materializations(dg.AssetKey("hybrid_model"), limit=1).records[0].run_id == run_id

    second = run_sensor_tick(defs, "drift_retrain_sensor", instance, first.cursor, run_config=FAST)
    assert second.skip_reason and "already handled" in second.skip_reason
    if run.status == dg.DagsterRunStatus.SUCCESS:  # the retrain measured drift_report itself: not a trigger
        assert "retrain runs this sensor started ignored" in second.skip_reason
    lost_cursor = run_sensor_tick(defs, "drift_retrain_sensor", instance, None, run_config=FAST)
    assert lost_cursor.deduplicated == ["drift-2026-01-13-champion-v1"] and not lost_cursor.launched
    assert existing_run_ids(instance, "drift_retrain_sensor", "drift-2026-01-13-champion-v1") == [run_id]
    assert len(instance.get_runs(filters=dg.RunsFilter(job_name="retrain_job"))) == 1


def test_new_data_sensor_requests_one_retrain_per_landed_file(defs: dg.Definitions, home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    landing = settings.state_paths(home).landing_dir
    empty = run_sensor_tick(defs, "new_data_sensor", instance, None, execute=False)
    assert empty.skip_reason and "no new files" in empty.skip_reason

    (landing / "conn.log.part").write_text("still being written")
    (landing / "auth.csv").write_text("ts,event_type\n")
    sensor = defs.resolve_sensor_def("new_data_sensor")
    state = {"state": defs.resources["state"]}
    context = dg.build_sensor_context(instance=instance, resources=state, sensor_name="new_data_sensor")
    result = sensor.evaluate_tick(context)
    [request] = result.run_requests
    assert request.run_key.startswith("landing-auth.csv-")
    source_config = request.run_config["resources"]["event_source"]["config"]
    assert source_config == {"kind": "file", "path": str(landing / "auth.csv")}
    dg.validate_run_config(defs.resolve_job_def("retrain_job"), request.run_config)  # the job accepts it

    same = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources=state,
                                                        sensor_name="new_data_sensor"))
    assert not same.run_requests
    time.sleep(0.01)
    (landing / "auth.csv").write_text("ts,event_type\n2026-01-05T00:00:00Z,auth\n")  # replaced: new size
    replaced = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                                            resources=state, sensor_name="new_data_sensor"))
    assert len(replaced.run_requests) == 1 and replaced.run_requests[0].run_key != request.run_key
    assert set(json.loads(replaced.cursor)) == {"auth.csv"}


def test_failed_run_and_failed_quality_gate_reach_the_webhook(defs: dg.Definitions, webhook: Webhook) -> None:
    instance = dg.DagsterInstance.ephemeral()
    missing = {"resources": {"event_source": {"config": {"kind": "file", "path": "/nonexistent/events.csv"}}}}
    result = defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance, run_config=missing, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_run_failure)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_instance=instance, dagster_run=run,
        dagster_event=failure.dagster_event,
    ).for_run_failure()
    run_failure_alert_sensor(context)
    [alert] = webhook.received
    body = alert["body"]
    assert body["kind"] == "run_failure" and body["payload"]["run_id"] == run.run_id
    assert body["payload"]["job"] == "retrain_job" and "raw_events" in body["payload"]["failed_steps"]

    skip = quality_gate_alert_sensor(dg.build_sensor_context(instance=instance))
    assert "not been evaluated" in skip.skip_message
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=QUALITY_GATE.asset_key, check_name=QUALITY_GATE.name, passed=False,
                                description="hybrid AP 0.06 vs best baseline isolation_forest AP 0.07: fail",
                                metadata={"hybrid_average_precision": 0.06})
    )
    context = dg.build_sensor_context(instance=instance)
    sent = quality_gate_alert_sensor(context)
    assert "alert sent" in sent.skip_message
    gate = webhook.received[-1]["body"]
    assert gate["kind"] == "quality_gate" and "isolation_forest AP 0.07" in gate["title"]
    assert gate["payload"]["metadata"] == {"hybrid_average_precision": 0.06}
    again = quality_gate_alert_sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    assert "already handled" in again.skip_message and len(webhook.received) == 2


def test_definitions_carry_the_new_jobs_sensors_and_schedule() -> None:
    from definitions import defs as code_location

    assert code_location.resolve_job_def("daily_scoring_job").partitions_def is not None
    assert code_location.resolve_job_def("retrain_job").partitions_def is None
    names = {s.name for s in code_location.get_repository_def().sensor_defs}
    assert {"drift_retrain_sensor", "new_data_sensor", "run_failure_alert_sensor", "quality_gate_alert_sensor"} <= names
    schedule = code_location.resolve_schedule_def("daily_scoring_schedule")
    assert schedule.cron_schedule == "0 1 * * *" and schedule.job_name == "daily_scoring_job"
    assert os.environ.get("DAGSTER_HOME") is None or Path(os.environ["DAGSTER_HOME"]).name == "dagster"
