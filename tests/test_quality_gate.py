"""The blocking quality gate: a deliberately degraded model is not registered, let alone champion."""

from __future__ import annotations

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from anomaly_pipeline import settings
from assets.resources import EventSourceResource
from assets.runner import QualityGateFailed, dagster_instance, run_full_pipeline

TINY_SOURCE = EventSourceResource(seed=3, n_users=30, n_servers=8, days=5, events_per_user_day=40.0)


def _config(learning_rate: float, gate_margin: float) -> dict:
    return {"ops": {
        "hybrid_model": {"config": {"epochs_per_stage": 1, "hidden": 16, "learning_rate": learning_rate}},
        "graph_windows": {"config": {"history": 4}},
        "model_evaluation": {"config": {"gate_margin": gate_margin}},
    }}


def test_degraded_model_is_blocked_and_the_champion_stays(tmp_path):
    home = str(tmp_path)
    # A first model through an open gate becomes version 1 and champion.
    first = run_full_pipeline(home, run_config=_config(3e-3, -1.0), resources={"event_source": TINY_SOURCE})
    assert first["model_version"] == "1" and "champion" in first["aliases"]

    # Degraded on purpose: a learning rate of 0 leaves the network at its random initialisation.
    # With the real gate (margin 0) the run must stop before registration.
    with pytest.raises(QualityGateFailed, match="NOT registered") as failed:
        run_full_pipeline(home, run_config=_config(0.0, 0.0), resources={"event_source": TINY_SOURCE})
    assert "hybrid AP" in failed.value.reason and "fail" in failed.value.reason

    client = MlflowClient(tracking_uri=first["mlflow_tracking_uri"])
    versions = client.search_model_versions(f"name='{first['registered_model']}'")
    assert [str(v.version) for v in versions] == ["1"]  # nothing new was registered
    assert str(client.get_model_version_by_alias(first["registered_model"], "champion").version) == "1"

    # The Dagster instance records the failed blocking check and the failed run.
    instance = dagster_instance(settings.state_paths(home))
    run = instance.get_run_by_id(failed.value.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    check_key = dg.AssetCheckKey(dg.AssetKey("model_evaluation"), "hybrid_beats_baselines")
    records = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1)
    evaluation = records[0].event.dagster_event.event_specific_data
    assert records[0].run_id == failed.value.run_id and evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    materialized = instance.fetch_materializations(dg.AssetKey("registered_model"), limit=5).records
    assert {r.run_id for r in materialized} == {first["dagster_run_id"]}
