"""Runs on one state folder: dead runs marked failed, live training runs found.

A run whose process was killed (``kill -9``, OOM killer, a closed laptop lid that never woke)
stays STARTED in Dagster's storage: nothing reports its end. Dagster's run monitoring asks the
run launcher whether a run worker is alive, but the local (default) launcher cannot answer, and
``anomaly-pipeline run`` executes in process with no launcher at all. So the project looks for
itself: every run records the process that executes it (``RUN_PID_TAG`` / ``RUN_HOST_TAG`` for
the CLI; Dagster's own "pid" engine event for launched runs), and a run in progress whose process
is gone is reported failed with ``DagsterInstance.report_run_failed``, which the UI and the
run-failure sensor see like any other failure.
"""


import os
import socket
from dataclasses import dataclass

import dagster as dg
from dagster._core.launcher import DefaultRunLauncher

RUN_PID_TAG = "anomaly-pipeline/pid"
RUN_HOST_TAG = "anomaly-pipeline/host"
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# Jobs that write nothing the training graph reads (day partitions only).
INDEPENDENT_JOBS = frozenset({"daily_scoring_job"})


def process_tags() -> dict[str, str]:
    """Tags naming this process, for a run it executes in process."""
    return {RUN_PID_TAG: str(os.getpid()), RUN_HOST_TAG: socket.gethostname()}


@dataclass(frozen=True)
class DeadRun:
    """A run that was in progress though its process is gone, now reported failed."""

    run_id: str
    job_name: str
    pid: int
    host: str
    message: str


def _process_alive(pid: int, not_started_after: float | None) -> bool:
    """Whether process ``pid`` runs on this machine and is the one that started by then (a pid
    reused by a later process does not count; a zombie is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        import psutil  # installed with torch_geometric; without it a reused pid counts as alive
    except ImportError:
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return not_started_after is None or process.create_time() <= not_started_after + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[int, str] | None:
    """(pid, host) of the process executing ``run``, or None when it cannot be known here.

    The CLI's tags first; else the first engine event with a pid (the run worker a launcher
    started, or the process that executed the run in process), trusted as this machine's only
    when the instance launches runs as local processes (the default launcher)."""
    if RUN_PID_TAG in run.tags:
        return int(run.tags[RUN_PID_TAG]), run.tags.get(RUN_HOST_TAG, "?")
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return None
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        event = record.event_log_entry.dagster_event
        pid = event.engine_event_data.metadata.get("pid") if event is not None and event.engine_event_data else None
        if pid is not None:
            return int(pid.value), socket.gethostname()
    return None


def sweep_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Report every in-progress run whose process is gone as failed; return them.

    Only processes of this machine are judged (a run recorded on another host is left alone).
    """
    host = socket.gethostname()
    dead: list[DeadRun] = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        process = run_process(instance, run)
        if process is None or process[1] != host:
            continue
        pid = process[0]
        started = record.start_time or record.create_timestamp.timestamp()
        if _process_alive(pid, started):
            continue
        message = (f"the process executing this run (pid {pid} on {host}) is gone: it was killed or crashed "
                   f"while the run was {run.status.value}; anomaly-pipeline marked the run failed. Start it "
                   "again (`anomaly-pipeline run --resume` continues the training from its last checkpoint)")
        instance.report_run_failed(run, message)
        dead.append(DeadRun(run.run_id, run.job_name, pid, host, message))
    return dead


def live_training_runs(instance: dg.DagsterInstance, exclude_run_id: str | None = None) -> list[dg.DagsterRun]:
    """Runs in progress that may read or write the training graph's values (anything but the
    day-partitioned scoring job). Call ``sweep_dead_runs`` first so dead ones are not counted."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    return [r for r in runs if r.job_name not in INDEPENDENT_JOBS and r.run_id != exclude_run_id]
