"""dead_run_sensor: runs whose process died are marked failed instead of staying STARTED forever.

The local run launcher cannot tell Dagster's run monitoring whether a run worker is alive, so a
run worker killed with ``kill -9`` (or by the OOM killer) would leave its run STARTED. This sensor
runs the same sweep as ``anomaly-pipeline run`` does at start (``assets.run_guard``). Under the
Kubernetes launcher Dagster's own run monitoring does this job; the sweep then judges only runs
that name a process of the machine it runs on.
"""


import dagster as dg

from assets.run_guard import sweep_dead_runs


@dg.sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs in progress whose process is gone (killed, crashed) as failed, with the pid in "
    "the message; run_failure_alert_sensor then alerts on them like on any failed run.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    dead = sweep_dead_runs(context.instance)
    if not dead:
        return dg.SkipReason("every run in progress has a live process")
    for run in dead:
        context.log.warning(f"run {run.run_id} ({run.job_name}) marked failed: pid {run.pid} on {run.host} is gone")
    return dg.SkipReason(f"marked {len(dead)} run(s) failed: {', '.join(r.run_id[:8] for r in dead)}")
