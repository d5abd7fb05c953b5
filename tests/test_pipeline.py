"""The whole asset graph, materialized in-process on a real Dagster instance, real MLflow
(sqlite), real Great Expectations and Evidently, on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from anomaly_pipeline import settings
from anomaly_pipeline.summary import REQUIRED_KEYS
from assets.resources import EventSourceResource
from assets.runner import dagster_instance, run_full_pipeline

TINY_SOURCE = EventSourceResource(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0)
FAST_CONFIG = {
    "ops": {
        "hybrid_model": {"config": {"epochs_per_stage": 1, "hidden": 16}},
        "graph_windows": {"config": {"history": 4}},
        # This file tests the plumbing with a barely trained model, so the quality gate is opened
        # here; tests/test_quality_gate.py tests that the gate blocks.
        "model_evaluation": {"config": {"gate_margin": -1.0}},
        # A low threshold so the drift sensor has something to react to.
        "drift_report": {"config": {"drift_share_threshold": 0.01}},
    }
}


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    home = tmp_path_factory.mktemp("state")
    first = run_full_pipeline(str(home), run_config=FAST_CONFIG, resources={"event_source": TINY_SOURCE})
    second = run_full_pipeline(str(home), run_config=FAST_CONFIG, resources={"event_source": TINY_SOURCE})
    return home, first, second


def test_summary_has_every_key_and_reconciles(pipeline_runs):
    home, first, _ = pipeline_runs
    written = json.loads(settings.state_paths(home).summary_file.read_text())
    assert set(REQUIRED_KEYS) <= set(written)
    assert first["events_ingested"] + first["events_quarantined"] == first["events_read"] > 1000
    assert set(first["metrics"]) == {
        "hybrid_gnn_lstm", "heuristic_rules", "isolation_forest", "one_class_svm", "midas_r", "midas_f"
    }
    for metrics in first["metrics"].values():
        assert 0.0 <= metrics["roc_auc"] <= 1.0 and 0.0 < metrics["average_precision"] <= 1.0
    assert 0.0 <= first["drift_share"] <= 1.0
    assert first["mlflow_tracking_uri"].startswith("sqlite:///")


def test_rerun_adds_a_model_version_with_metrics_and_aliases(pipeline_runs):
    _, first, second = pipeline_runs
    assert (int(first["model_version"]), int(second["model_version"])) == (1, 2)
    client = MlflowClient(tracking_uri=second["mlflow_tracking_uri"])
    # challenger moved to the newest version.
    assert "challenger" in second["aliases"]
    assert "challenger" not in client.get_model_version(second["registered_model"], "1").aliases
    version = client.get_model_version(second["registered_model"], second["model_version"])
    run = client.get_run(version.run_id)
    assert {"roc_auc", "average_precision", "eval/isolation_forest/roc_auc", "drift_share"} <= set(run.data.metrics)
    assert run.data.tags["dagster_run_id"] == second["dagster_run_id"]
    assert version.tags["promotion_decision"] in {"promoted", "kept_champion", "gate_failed"}
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "evaluation")}
    assert "evaluation/roc_pr.png" in artifacts and "evaluation/comparison.md" in artifacts
    drift = [a.path for a in client.list_artifacts(version.run_id, "drift")]
    assert drift and drift[0].endswith(".html")


def test_registered_model_loads_and_scores_canonical_events(pipeline_runs, small_events):
    _, _, second = pipeline_runs
    mlflow.set_tracking_uri(second["mlflow_tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{second['registered_model']}/{second['model_version']}")
    from anomaly_pipeline.mlflow_model import to_model_input

    sample = small_events.head(3000)
    scored = model.predict(to_model_input(sample))
    assert len(scored) == len(sample)
    assert scored["score"].notna().all() and scored["alert"].dtype == bool


def test_dagster_instance_records_runs_checks_and_metadata(pipeline_runs):
    home, first, second = pipeline_runs
    instance = dagster_instance(settings.state_paths(home))
    for run_id in (first["dagster_run_id"], second["dagster_run_id"]):
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    record = instance.fetch_materializations(dg.AssetKey("validated_events"), limit=1).records[0]
    meta = record.event_log_entry.asset_materialization.metadata
    assert meta["rows_read"].value == meta["rows_valid"].value + meta["rows_quarantined"].value
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("validated_events"), "quarantine_rate_below_threshold")]
    )
    assert check, "the quarantine check was not recorded"


def test_drift_sensor_requests_one_retrain_per_drift_materialization(pipeline_runs):
    from sensors.drift import drift_retrain_sensor

    home, _, second = pipeline_runs
    instance = dagster_instance(settings.state_paths(home))
    context = dg.build_sensor_context(instance=instance)
    request = drift_retrain_sensor(context)
    assert isinstance(request, dg.RunRequest), f"expected a RunRequest, got {request}"
    assert request.run_key.endswith(f"model-v{second['model_version']}")
    assert request.tags["trigger"] == "drift"
    # The next tick with the advanced cursor starts nothing: no storm of runs.
    again = dg.build_sensor_context(instance=instance, cursor=context.cursor)
    result = drift_retrain_sensor(again)
    assert isinstance(result, dg.SkipReason) and "already handled" in result.skip_message


def test_mlflow_tells_a_model_training_story_and_dagster_links_to_it(pipeline_runs):
    home, _, second = pipeline_runs
    client = MlflowClient(tracking_uri=second["mlflow_tracking_uri"])
    version = client.get_model_version(second["registered_model"], second["model_version"])
    run = client.get_run(version.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    # A model-training experiment; MLflow 3's UI still opens every experiment on its GenAI overview
    # unless the link names the training workflow, which every link the project hands out does.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "hybrid GNN-LSTM" in experiment.tags["mlflow.note.content"]
    assert run.data.tags["mlflow.note.content"].startswith("Hybrid GNN-LSTM trained by Dagster run")
    contexts = {d.tags[0].value for d in run.inputs.dataset_inputs}
    assert contexts == {"training", "validation", "test"}
    assert all(d.dataset.source_type and d.dataset.schema for d in run.inputs.dataset_inputs)
    assert any(k.startswith("train/") for k in run.data.metrics) and "eval/hybrid_gnn_lstm/roc_auc" in run.data.metrics
    instance = dagster_instance(settings.state_paths(home))
    meta = instance.fetch_materializations(dg.AssetKey("registered_model"), limit=1).records[0] \
        .event_log_entry.asset_materialization.metadata
    base, ml = "http://127.0.0.1:5000", "?workflowType=machine_learning"
    assert meta["mlflow_model_version_url"].value == \
        f"{base}/#/models/{second['registered_model']}/versions/{second['model_version']}{ml}"
    assert meta["mlflow_run_url"].value == f"{base}/#/experiments/{run.info.experiment_id}/runs/{version.run_id}{ml}"
    assert meta["mlflow_experiment_url"].value == f"{base}/#/experiments/{run.info.experiment_id}{ml}"
    drift = instance.fetch_materializations(dg.AssetKey("drift_report"), limit=1).records[0] \
        .event_log_entry.asset_materialization.metadata
    assert drift["mlflow_artifact_url"].value.startswith(f"{base}/get-artifact?path=drift/")
    assert drift["verdict"].value.endswith("is informational only.")
    validated = instance.fetch_materializations(dg.AssetKey("validated_events"), limit=1).records[0]
    assert validated.event_log_entry.asset_materialization.metadata["dagster/row_count"].value > 1000


def test_a_copied_state_folder_writes_nothing_under_the_old_one(pipeline_runs, tmp_path):
    import shutil

    home, _, _ = pipeline_runs
    copy = tmp_path / "moved"
    shutil.copytree(home, copy, symlinks=True)
    before = {p: p.stat().st_mtime_ns for p in Path(home).rglob("*") if p.is_file()}
    third = run_full_pipeline(str(copy), run_config=FAST_CONFIG, resources={"event_source": TINY_SOURCE})
    after = {p: p.stat().st_mtime_ns for p in Path(home).rglob("*") if p.is_file()}
    assert after == before, "a run on the copy wrote under the original state folder"
    client = MlflowClient(tracking_uri=third["mlflow_tracking_uri"])
    run = client.get_run(client.get_model_version(third["registered_model"], third["model_version"]).run_id)
    assert run.info.artifact_uri.startswith((copy / "mlartifacts").resolve().as_uri())
    # Versions registered before the move still load, from the copy.
    mlflow.set_tracking_uri(third["mlflow_tracking_uri"])
    assert mlflow.pyfunc.load_model(f"models:/{third['registered_model']}/1") is not None
