"""Periodic retraining and daily scoring."""


import dagster as dg

from .jobs import daily_scoring_job, retrain_job

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=retrain_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00 UTC, after the weekend's quiet traffic
    execution_timezone="UTC",
    description="Retrains the detector every week, whether or not drift was seen.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

# Each night at 01:00 UTC: score yesterday's partition with the champion and measure its drift.
daily_scoring_schedule = dg.build_schedule_from_partitioned_job(
    daily_scoring_job,
    name="daily_scoring_schedule",
    hour_of_day=1,
    description="Scores the previous UTC day with @champion, writes its alerts and drift report.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
