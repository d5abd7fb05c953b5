"""Runs on one state folder (issue 13): one at a time, dead ones marked failed.

Real processes, a real sqlite Dagster instance under the folder, a real ``kill -9``: the holder of
the run lock and the "killed run" are subprocesses of this test.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from anomaly_pipeline import settings
from anomaly_pipeline.cli import main
from anomaly_pipeline.runlock import hold_home, read_holder
from assets.resources import LocalStateIOManager
from assets.run_guard import RUN_PID_TAG, sweep_dead_runs
from assets.runner import RunInProgress, dagster_instance, run_full_pipeline

REPO = Path(__file__).resolve().parent.parent

HOLD_LOCK = """
import sys, time
from anomaly_pipeline.runlock import hold_home
with hold_home(sys.argv[1], "anomaly-pipeline run"):
    print("held", flush=True)
    time.sleep(600)
"""

# A run that is busy in its step when it is killed: it stays STARTED in the instance.
SLOW_RUN = """
import sys, time
import dagster as dg
from anomaly_pipeline import settings
from assets.runner import dagster_instance

@dg.asset
def slow_asset() -> int:
    print("running", flush=True)
    time.sleep(600)
    return 1

dg.materialize([slow_asset], instance=dagster_instance(settings.state_paths(sys.argv[1])))
"""


def _start(script: str, home: Path, ready: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, str(home)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline()
    assert line.strip() == ready, f"the helper process did not start: {line!r}"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)  # reaped: no zombie keeps the pid
    proc.stdout.close()


@dg.asset
def probe_value() -> int:
    return 1


def test_a_second_run_on_one_folder_is_refused_until_the_first_dies(tmp_path: Path, capsys):
    home = tmp_path / "home"
    holder = _start(HOLD_LOCK, home, "held")
    try:
        started = time.perf_counter()
        status = main(["--home", str(home), "run", "--days", "3"])
        refused_in = time.perf_counter() - started
        err = capsys.readouterr().err
        assert status == 2 and refused_in < 5.0
        assert len(err.strip().splitlines()) == 1
        assert f"pid {holder.pid}" in err and "started 20" in err and f"kill {holder.pid}" in err
        assert "another run is using the state folder" in err

        # A step of a run Dagster launched (UI, schedule, sensor) refuses to touch the values too.
        io_manager = LocalStateIOManager(base_dir=str(home / "data"), lock_home=str(home))
        result = dg.materialize([probe_value], resources={"io_manager": io_manager}, raise_on_error=False)
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data.error.message
        assert f"pid {holder.pid}" in failure
    finally:
        _kill(holder)

    # The kernel released the dead holder's lock: nothing to clean up by hand, the next run proceeds.
    assert dg.materialize([probe_value], resources={"io_manager": io_manager}).success
    events = tmp_path / "events.csv.gz"
    assert main(["generate", "--out", str(tmp_path / "events.csv"), "--users", "10", "--days", "3"]) == 0
    whole = gzip.compress((tmp_path / "events.csv").read_bytes())
    events.write_bytes(whole[: len(whole) // 2])  # a truncated gzip: the run stops after reading it
    capsys.readouterr()
    status = main(["--home", str(home), "run", "--input", str(events)])
    err = capsys.readouterr().err
    assert status == 2 and "the input is incomplete" in err and "another run" not in err
    runs = dagster_instance(settings.state_paths(home)).get_runs()
    assert len(runs) == 1 and runs[0].tags[RUN_PID_TAG] == str(os.getpid())
    assert read_holder(home).pid is None  # released at the end of the run


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path: Path):
    with hold_home(tmp_path, "outer"), hold_home(tmp_path, "inner"):  # the CLI, then its own steps
        assert read_holder(tmp_path).command == "outer"
        out = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], capture_output=True, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert out.returncode != 0 and "HomeBusy" in out.stderr and f"pid {os.getpid()}" in out.stderr
    with hold_home(tmp_path, "again"):
        pass


def test_a_killed_run_is_marked_failed_and_a_live_one_is_left_alone(tmp_path: Path):
    home = tmp_path / "home"
    killed = _start(SLOW_RUN, home, "running")
    _kill(killed)
    instance = dagster_instance(settings.state_paths(home))
    (dead_run,) = instance.get_runs()
    assert dead_run.status == dg.DagsterRunStatus.STARTED  # nothing reported the kill

    live = _start(SLOW_RUN, home, "running")
    try:
        swept = sweep_dead_runs(instance)
        assert [(d.run_id, d.pid) for d in swept] == [(dead_run.run_id, killed.pid)]
        assert instance.get_run_by_id(dead_run.run_id).status == dg.DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(dead_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        message = failure[0].event_log_entry.dagster_event.message
        assert f"pid {killed.pid}" in message and "is gone" in message and "--resume" in message
        live_run = next(r for r in instance.get_runs() if r.run_id != dead_run.run_id)
        assert instance.get_run_by_id(live_run.run_id).status == dg.DagsterRunStatus.STARTED

        # The sensor does the same sweep in the daemon; with only a live run in progress it marks nothing.
        from sensors.dead_runs import dead_run_sensor

        skip = dead_run_sensor(dg.build_sensor_context(instance=instance))
        assert "every run in progress has a live process" in skip.skip_message
        # `anomaly-pipeline run` refuses while that launched run uses the folder, naming it.
        with pytest.raises(RunInProgress, match=f"{live_run.run_id}.*pid {live.pid}"):
            run_full_pipeline(str(home))
    finally:
        _kill(live)
    assert [d.pid for d in sweep_dead_runs(instance)] == [live.pid]


def test_an_instance_yaml_written_by_an_earlier_version_gets_run_monitoring(tmp_path: Path):
    paths = settings.state_paths(tmp_path).ensure()
    (paths.dagster_home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
        "  config:\n    max_concurrent_runs: 2\ntelemetry:\n  enabled: false\n")
    instance = dagster_instance(paths)
    assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "anomaly-pipeline/state", "value": "training", "limit": 1} in limits
    from sensors.jobs import full_pipeline_job, retrain_job

    assert full_pipeline_job.tags["anomaly-pipeline/state"] == retrain_job.tags["anomaly-pipeline/state"] == "training"
