"""Periodic retraining and daily scoring."""


from datetime import timedelta

import dagster as dg
from mlflow.exceptions import MlflowException

from anomaly_pipeline.registry import CHAMPION
from assets.resources import EventSourceResource, MlflowResource
from assets.scoring import daily_partitions

from .jobs import daily_scoring_job, retrain_job

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00 UTC, after the weekend's quiet traffic
    execution_timezone="UTC",
    description="Retrains the detector every week, whether or not drift was seen.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.schedule(
    name="daily_scoring_schedule",
    job=daily_scoring_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    description="Scores the previous UTC day with @champion, writes its alerts and drift report. Skips, "
    "saying why, a day outside the source's partitions or a registry without a champion.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def daily_scoring_schedule(
    context: dg.ScheduleEvaluationContext, event_source: EventSourceResource, mlflow_resource: MlflowResource
) -> dg.RunRequest | dg.SkipReason:
    """Each night at 01:00 UTC: yesterday's partition, if the source has that day and a champion exists.

    A tick on a day the partitions do not cover (the embedded default's ten days are long past) or
    before any model was promoted is a skip with its reason, never a run that fails every night.
    """
    now = context.scheduled_execution_time
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    keys = daily_partitions.get_partition_keys(current_time=now)
    if day not in keys:
        covered = f"{keys[0]} to {keys[-1]}" if keys else "no day yet"
        return dg.SkipReason(
            f"no partition for {day}: the daily partitions cover {covered} ({event_source.describe()}); "
            "point the source at live data and set ANOMALY_PIPELINE_PARTITION_START (README: daily scoring)"
        )
    reg = mlflow_resource.registry_config()
    try:
        mlflow_resource.client().get_model_version_by_alias(reg.model_name, CHAMPION)
    except MlflowException as exc:
        return dg.SkipReason(
            f"no @champion of {reg.model_name} to score {day} with ({type(exc).__name__}): run `make run` or "
            "materialize registered_model, and promote a version if the gate refused it"
        )
    return dg.RunRequest(run_key=f"daily-{day}", partition_key=day, tags={"trigger": "schedule"})
