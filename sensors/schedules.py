"""Periodic retraining."""


import dagster as dg

from .jobs import retrain_job

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00 UTC, after the weekend's quiet traffic
    execution_timezone="UTC",
    description="Retrains the detector every week, whether or not drift was seen.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
