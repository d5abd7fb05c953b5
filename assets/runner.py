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
import yaml
from dagster._core.errors import DagsterAssetCheckFailedError

from anomaly_pipeline import settings
from anomaly_pipeline.redact import redact_url
from anomaly_pipeline.runlock import hold_home
from anomaly_pipeline.summary import write_summary

INSTANCE_TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "dagster.yaml"


# What earlier versions wrote as the instance's dagster.yaml: such a file is replaced by the
# current template (queue limit for training runs, run monitoring); an edited one is kept.
_EARLIER_TEMPLATES = (
    {"run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                         "config": {"max_concurrent_runs": 2}}, "telemetry": {"enabled": False}},
)


def dagster_instance(paths: settings.StatePaths) -> dg.DagsterInstance:
    """The project's sqlite-backed Dagster instance (DAGSTER_HOME inside the state folder).

    Writes the instance's dagster.yaml from ``infra/dagster.yaml`` on first use, and over a file an
    earlier version wrote unchanged; a file someone edited gets only a missing ``run_monitoring``.
    """
    paths.ensure()
    instance_yaml = paths.dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, instance_yaml)
    else:
        current = yaml.safe_load(instance_yaml.read_text()) or {}
        if current in _EARLIER_TEMPLATES:
            shutil.copyfile(INSTANCE_TEMPLATE, instance_yaml)
        elif "run_monitoring" not in current:
            current["run_monitoring"] = yaml.safe_load(INSTANCE_TEMPLATE.read_text())["run_monitoring"]
            instance_yaml.write_text(yaml.safe_dump(current, sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    return dg.DagsterInstance.get()


class RunInProgress(RuntimeError):
    """A Dagster run that uses the training graph's values is in progress on this state folder."""

    def __init__(self, run: dg.DagsterRun, pid: int | None) -> None:
        self.run_id = run.run_id
        where = f", pid {pid}" if pid is not None else ""
        super().__init__(
            f"Dagster run {run.run_id} ({run.job_name}{where}) is {run.status.value} on this state folder and "
            "uses the same asset values; wait for it to finish, or terminate it in the Dagster UI (Runs), "
            "then run again"
        )


class QualityGateFailed(RuntimeError):
    """The blocking quality gate stopped the run before registration (nothing was registered)."""

    def __init__(self, reason: str, run_id: str | None = None) -> None:
        self.reason = reason
        self.run_id = run_id
        super().__init__(
            f"quality gate failed, so this model was NOT registered and the champion is unchanged: {reason}. "
            "See the hybrid_beats_baselines check and the model_evaluation comparison in the Dagster UI; train "
            "longer (anomaly-pipeline run --epochs-per-stage N), check the data, or set gate_margin in the "
            "model_evaluation config if the bar is wrong for this data."
        )


class InputIncomplete(RuntimeError):
    """The input file ends early (truncated or corrupt compressed stream): nothing was trained."""

    def __init__(self, detail: str, run_id: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(
            f"the input is incomplete, so the run stopped after reading it: {detail}. The lines before the "
            "break are in raw_events and the break is in quarantined_events; fetch or copy the file again"
        )


def _input_failure(instance: dg.DagsterInstance) -> InputIncomplete:
    check_key = dg.AssetCheckKey(dg.AssetKey("raw_events"), "input_is_complete")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key]).get(check_key)
    detail = "a compressed input ended early"
    run_id = None
    if latest is not None and latest.event is not None and latest.event.dagster_event is not None:
        evaluation = latest.event.dagster_event.event_specific_data
        breaks = getattr(evaluation, "metadata", {}).get("breaks")
        if breaks is not None and breaks.value:
            detail = str(breaks.value[0])
        run_id = latest.run_id
    return InputIncomplete(detail, run_id)


def _gate_failure(instance: dg.DagsterInstance) -> QualityGateFailed:
    records = instance.fetch_materializations(dg.AssetKey("model_evaluation"), limit=1).records
    if not records:
        return QualityGateFailed("the hybrid model did not beat every baseline")
    entry = records[0].event_log_entry
    meta = entry.asset_materialization.metadata
    reason = meta["gate_reason"].value if "gate_reason" in meta else "the hybrid model did not beat every baseline"
    return QualityGateFailed(str(reason), entry.run_id)


def run_full_pipeline(
    home: str | None = None,
    run_config: dict[str, Any] | None = None,
    resources: dict[str, object] | None = None,
) -> dict[str, Any]:
    """Materialize every asset, then return (and write) the run summary.

    One run at a time per state folder: the run holds the folder's lock (``runlock``), first
    reports runs whose process died as failed (``run_guard.sweep_dead_runs``), and refuses while a
    Dagster run launched from the UI, a schedule or a sensor is using the training graph.

    Raises ``QualityGateFailed`` when the blocking quality gate stops the run before registration,
    ``InputIncomplete`` when the input file ends early (a truncated compressed stream),
    ``runlock.HomeBusy`` when another process holds the folder, ``RunInProgress`` when a launched
    run is using it.
    """
    paths = settings.state_paths(home).ensure()
    with hold_home(paths.home, "anomaly-pipeline run"):
        return _run_locked(paths, run_config, resources)


def _run_locked(
    paths: settings.StatePaths, run_config: dict[str, Any] | None, resources: dict[str, object] | None
) -> dict[str, Any]:
    from definitions import build_definitions, local_resources

    from .run_guard import live_training_runs, process_tags, run_process, sweep_dead_runs

    os.environ[settings.HOME_ENV] = str(paths.home)
    res = local_resources(str(paths.home))
    res.update(resources or {})
    defs = build_definitions(res)
    job = defs.resolve_job_def("full_pipeline_job")
    started = time.perf_counter()
    config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    instance = dagster_instance(paths)
    for dead in sweep_dead_runs(instance):
        print(f"marked run {dead.run_id} ({dead.job_name}) failed: its process (pid {dead.pid}) is gone", flush=True)
    for run in live_training_runs(instance):
        process = run_process(instance, run)
        raise RunInProgress(run, process[0] if process else None)
    try:
        result = job.execute_in_process(instance=instance, run_config=config, raise_on_error=True,
                                        tags=process_tags())
    except DagsterAssetCheckFailedError as error:
        if "input_is_complete" in str(error):
            raise _input_failure(instance) from error
        if "hybrid_beats_baselines" not in str(error):
            raise
        raise _gate_failure(instance) from error
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
        "epochs_run": meta["hybrid_model"]["epochs_run"],
        "resumed_from_epoch": meta["hybrid_model"]["resumed_from_epoch"],
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
        "mlflow_tracking_uri": redact_url(registered.tracking_uri),
        "mlflow_run_id": registered.run_id,
        "dagster_run_id": result.run_id,
        "wall_seconds": round(seconds, 1),
        "summary_file": str(paths.summary_file),
    }
    write_summary(summary, paths.summary_file)
    return summary
