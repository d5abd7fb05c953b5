"""Alert sensors: failed runs and failed quality gates go to the alert sink (log + webhook).

Drift alerts are sent by drift_retrain_sensor when it requests a retrain. A failed asset check
does not fail a run, so the quality gate is watched here through the check's own records.
"""


import dagster as dg

from anomaly_pipeline.alerts import AlertSink

QUALITY_GATE = dg.AssetCheckKey(dg.AssetKey("model_evaluation"), "hybrid_beats_baselines")


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    monitor_all_code_locations=False,
    description="Sends every failed run of this code location to the alert sink (log and webhook).",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    failure = context.failure_event
    message = failure.message if failure is not None else "no failure event"
    failed_steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
    AlertSink.from_env(log=context.log).send(
        "run_failure",
        f"run {run.run_id[:8]} of {run.job_name} failed",
        {"run_id": run.run_id, "job": run.job_name, "message": message, "failed_steps": failed_steps,
         "tags": {k: v for k, v in run.tags.items() if not k.startswith(".dagster")}},
    )


@dg.sensor(
    name="quality_gate_alert_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Alerts when the model_evaluation quality gate (hybrid_beats_baselines) fails; once per evaluation.",
)
def quality_gate_alert_sensor(context: dg.SensorEvaluationContext):
    latest = _latest_evaluation(context.instance)
    if latest is None:
        return dg.SkipReason("the quality gate has not been evaluated yet")
    if context.cursor and int(context.cursor) >= latest.id:
        return dg.SkipReason(f"quality gate evaluation {latest.id} already handled")
    context.update_cursor(str(latest.id))
    evaluation = latest.event.dagster_event.event_specific_data
    if getattr(evaluation, "passed", True):
        return dg.SkipReason(f"quality gate passed in run {latest.run_id[:8]}")
    metadata = {k: v.value for k, v in (getattr(evaluation, "metadata", None) or {}).items()}
    description = getattr(evaluation, "description", None) or "the hybrid model did not beat the baselines"
    AlertSink.from_env(log=context.log).send(
        "quality_gate",
        f"quality gate failed in run {latest.run_id[:8]}: {description}",
        {"run_id": latest.run_id, "check": QUALITY_GATE.to_user_string(), "description": description,
         "metadata": metadata},
    )
    return dg.SkipReason(f"quality gate failed in run {latest.run_id[:8]}: alert sent")


def _latest_evaluation(instance: dg.DagsterInstance):
    """The newest *completed* evaluation of the gate (planned or skipped executions have no verdict)."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    history = instance.event_log_storage.get_asset_check_execution_history(QUALITY_GATE, limit=20)
    for record in history:  # newest first
        if record.status in done and record.event is not None and record.event.dagster_event is not None:
            return record
    return None
