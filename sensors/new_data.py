"""new_data_sensor: a log file dropped into the landing folder starts one retrain on that file.

The landing folder is ``$ANOMALY_PIPELINE_HOME/landing``. Write a file under a temporary name
(``*.part``, ``*.tmp`` or a leading dot) and rename it when complete: those names are ignored, so
a half-written file is never read. Each file is identified by name, size and modification time:
the same file twice starts one run; a replaced file (new size or time) starts another.
"""


import json
from pathlib import Path

import dagster as dg

from assets.resources import StateResource

from .jobs import retrain_job

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload")
MAX_REQUESTS_PER_TICK = 10


def landed_files(folder: Path) -> list[Path]:
    """Complete files in ``folder`` (not hidden, not being written), oldest first."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IGNORED_SUFFIXES)]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


@dg.sensor(
    name="new_data_sensor",
    job=retrain_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches $ANOMALY_PIPELINE_HOME/landing; each new or replaced log file (any supported format) "
    "requests one retrain_job run that reads that file as the event source.",
)
def new_data_sensor(context: dg.SensorEvaluationContext, state: StateResource):
    folder = state.paths.landing_dir
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for path in landed_files(folder):
        identity = file_identity(path)
        if seen.get(path.name) == identity:
            continue
        if len(requests) >= MAX_REQUESTS_PER_TICK:
            break  # the rest waits for the next tick, so one tick never floods the run queue
        seen[path.name] = identity
        context.log.info(f"new file in the landing folder: {path.name} ({identity})")
        requests.append(
            dg.RunRequest(
                run_key=f"landing-{path.name}-{identity}",
                run_config={"resources": {"event_source": {"config": {"kind": "file", "path": str(path)}}}},
                tags={"trigger": "new_data", "landing_file": path.name},
            )
        )
    if not requests:
        return dg.SkipReason(f"no new files in {folder}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
