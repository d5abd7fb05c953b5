"""Run the full pipeline in-process on the persistent Dagster instance and summarise it.

Used by ``anomaly-pipeline run`` (``make run``) and the end-to-end test. The run is recorded in
the instance under ``$ANOMALY_PIPELINE_HOME/dagster``, so the Dagster UI shows it afterwards.
"""


import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg

from anomaly_pipeline import settings
from anomaly_pipeline.summary import write_summary

INSTANCE_TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "dagster.yaml"


def dagster_instance(paths: settings.StatePaths) -> dg.DagsterInstance:
    """The project's sqlite-backed Dagster instance (DAGSTER_HOME inside the state folder)."""
    paths.ensure()
    instance_yaml = paths.dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, instance_yaml)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    return dg.DagsterInstance.get()


def run_full_pipeline(
    home: str | None = None,
    run_config: dict[str, Any] | None = None,
    resources: dict[str, object] | None = None,
) -> dict[str, Any]:
    """Materialize every asset, then return (and write) the run summary."""
    from definitions import build_definitions, local_resources

    paths = settings.state_paths(home).ensure()
    os.environ[settings.HOME_ENV] = str(paths.home)
    res = local_resources(str(paths.home))
    res.update(resources or {})
    defs = build_definitions(res)
    job = defs.resolve_job_def("full_pipeline_job")
    started = time.perf_counter()
    config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    result = job.execute_in_process(instance=dagster_instance(paths), run_config=config, raise_on_error=True)
    seconds = time.perf_counter() - started

    meta: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    evaluation = result.asset_value("model_evaluation")
    registered = result.asset_value("registered_model")
    drift = result.asset_value("drift_report")
    summary = {
        "events_read": meta["raw_events"]["rows_read"],
        "events_ingested": meta["validated_events"]["rows_valid"],
        "events_quarantined": meta["quarantined_events"]["rows_quarantined"],
        "registered_model": registered.name,
        "model_version": registered.version,
        "aliases": registered.aliases,
        "promotion_decision": registered.decision,
        "promotion_reason": registered.reason,
        "metrics": evaluation.metrics,
        "gate_passed": evaluation.gate_passed,
        "gate_reason": evaluation.gate_reason,
        "drift_share": drift["drift_share"],
        "drifted_columns": drift["drifted_columns"],
        "mlflow_tracking_uri": registered.tracking_uri,
        "mlflow_run_id": registered.run_id,
        "dagster_run_id": result.run_id,
        "wall_seconds": round(seconds, 1),
        "summary_file": str(paths.summary_file),
    }
    write_summary(summary, paths.summary_file)
    return summary
