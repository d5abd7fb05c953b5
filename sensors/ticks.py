"""Evaluate a sensor tick in-process, the way the Dagster daemon does, and run what it requests.

``dagster dev`` (``make ui``) runs the daemon, which evaluates each running sensor every
``minimum_interval_seconds``, keeps its cursor, skips a RunRequest whose run_key this sensor
already launched, and launches the rest. ``run_sensor_tick`` does the same steps in the current
process on any instance, so the drift demo and the tests exercise the real sensor, cursor and
run_key de-duplication without a daemon (runs execute in-process, one after another).
"""


from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass
class TickOutcome:
    """What one tick did: the skip reason or the requests, which were launched or de-duplicated."""

    sensor: str
    cursor: str | None
    skip_reason: str | None = None
    requested: list[str] = field(default_factory=list)  # run keys asked for
    launched: dict[str, str] = field(default_factory=dict)  # run key -> run id
    statuses: dict[str, str] = field(default_factory=dict)  # run id -> final status
    deduplicated: list[str] = field(default_factory=list)  # run keys that already had a run

    def describe(self) -> str:
        if self.skip_reason is not None:
            return f"{self.sensor}: skipped ({self.skip_reason})"
        parts = [f"{self.sensor}: requested {len(self.requested)} run(s)"]
        parts += [f"launched {key} as run {run_id} ({self.statuses.get(run_id, '?')})"
                  for key, run_id in self.launched.items()]
        parts += [f"not launched {key}: a run with this run_key exists already" for key in self.deduplicated]
        return "; ".join(parts)


def existing_run_ids(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> list[str]:
    """Runs this sensor already launched for ``run_key`` (the daemon's de-duplication rule)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}))
    return [r.run_id for r in runs]


def run_sensor_tick(
    defs: dg.Definitions,
    sensor_name: str,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
    *,
    execute: bool = True,
    run_config: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> TickOutcome:
    """One tick of ``sensor_name`` from ``defs`` on ``instance``, starting from ``cursor``.

    Requests whose run_key already has a run from this sensor are not launched again. With
    ``execute`` the others run in-process now (``run_config`` is merged under each request's own),
    tagged with the run_key and sensor name as the daemon tags them; a failed run is reported in
    ``statuses``, not raised.
    """
    sensor = defs.resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=sensor_name,
                                      resources=_sensor_resources(defs, sensor))
    data = sensor.evaluate_tick(context)
    outcome = TickOutcome(sensor=sensor_name, cursor=data.cursor if data.cursor is not None else cursor)
    if not data.run_requests:
        outcome.skip_reason = data.skip_message or "no run requested"
        return outcome
    for request in data.run_requests:
        key = request.run_key or ""
        outcome.requested.append(key)
        if key and existing_run_ids(instance, sensor_name, key):
            outcome.deduplicated.append(key)
            continue
        if not execute:
            continue
        job_name = request.job_name or sensor.job_name
        job = defs.resolve_job_def(job_name)
        tags = {**request.tags, SENSOR_NAME_TAG: sensor_name, **({RUN_KEY_TAG: key} if key else {})}
        config = _merge(dict(run_config or {}), dict(request.run_config or {}))
        if log:
            log(f"{sensor_name}: launching {job_name} for run_key {key}")
        result = job.execute_in_process(instance=instance, run_config=config, tags=tags,
                                        partition_key=request.partition_key, raise_on_error=False)
        outcome.launched[key] = result.run_id
        outcome.statuses[result.run_id] = instance.get_run_by_id(result.run_id).status.value
    return outcome


def alert_failed_run(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Evaluate run_failure_alert_sensor for ``run_id`` as the daemon would; False if the run did not fail."""
    from .alerts import run_failure_alert_sensor

    run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.FAILURE:
        return False
    failure = next((e.dagster_event for e in instance.all_logs(run_id)
                    if e.dagster_event is not None and e.dagster_event.is_run_failure), None)
    if failure is None:
        return False
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_instance=instance, dagster_run=run, dagster_event=failure
    ).for_run_failure()
    run_failure_alert_sensor(context)
    return True


def _sensor_resources(defs: dg.Definitions, sensor: dg.SensorDefinition) -> dict[str, Any]:
    """The resources ``sensor`` asks for, from ``defs`` (what the daemon hands a sensor)."""
    available = dict(defs.resources or {})
    return {key: available[key] for key in sensor.required_resource_keys if key in available}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
