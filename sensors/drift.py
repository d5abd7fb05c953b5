"""drift_retrain_sensor: turns a drifted drift measurement into one retrain run.

It reads the materialization metadata of both drift assets: ``daily_drift_report`` (one per
scored day, partitioned) and ``drift_report`` (the training graph's newest-24-h check). The
cursor holds the last storage id seen per asset, so a tick only looks at measurements it has not
handled; among those it acts on the newest drifted one (older ones are superseded: one retrain
covers them). The drift_report that a retrain started by this sensor measures itself is ignored,
so a retrain never triggers the next one. The run_key names the drift partition (or materialization) and the champion version,
so even a lost cursor cannot start a second run for the same drift of the same champion: Dagster
never launches two runs with one run_key from a sensor.
"""


import json

import dagster as dg

from anomaly_pipeline.alerts import AlertSink

from .jobs import retrain_job

DRIFT_ASSET = dg.AssetKey("drift_report")
DAILY_DRIFT_ASSET = dg.AssetKey("daily_drift_report")
WATCHED = (DAILY_DRIFT_ASSET, DRIFT_ASSET)


def _metadata_value(entry: dg.EventLogEntry, key: str, default=None):
    materialization = entry.asset_materialization
    value = materialization.metadata.get(key) if materialization else None
    return value.value if value is not None else default


def _read_cursor(raw: str | None) -> dict[str, int]:
    """{asset name: last handled storage id}; an old plain-number cursor applies to drift_report."""
    if not raw:
        return {}
    if raw.strip().isdigit():
        return {DRIFT_ASSET.to_user_string(): int(raw)}
    return {str(k): int(v) for k, v in json.loads(raw).items()}


def _started_by_this_sensor(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id) if run_id else None
    return run is not None and run.tags.get("dagster/sensor_name") == "drift_retrain_sensor"


def drift_run_key(record: dg.EventLogRecord, version: str) -> str:
    """``drift-<day>-champion-v<version>`` for a daily partition, ``drift-<storage id>-model-v<version>`` otherwise."""
    if record.partition_key:
        return f"drift-{record.partition_key}-champion-v{version}"
    return f"drift-{record.storage_id}-model-v{version}"


@dg.sensor(
    name="drift_retrain_sensor",
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Reads daily_drift_report's and drift_report's new materializations; when the newest "
    "drifted one reaches its threshold it alerts and requests retrain_job once per (drift partition, "
    "champion version).",
)
def drift_retrain_sensor(context: dg.SensorEvaluationContext):
    cursor = _read_cursor(context.cursor)
    new: list[dg.EventLogRecord] = []
    for key in WATCHED:
        after = cursor.get(key.to_user_string())
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=False
        ).records
        if records:
            cursor[key.to_user_string()] = max(r.storage_id for r in records)
        new.extend(records)
    if new:
        context.update_cursor(json.dumps(cursor, sort_keys=True))
    # A retrain this sensor started re-measures drift_report on the data it was just trained on;
    # reacting to that would retrain again and again on the same data.
    own = [r for r in new if _started_by_this_sensor(context.instance, r.run_id)]
    new = [r for r in new if r not in own]
    if not new:
        seen = any(context.instance.fetch_materializations(k, limit=1).records for k in WATCHED)
        ignored = f" ({len(own)} measurement(s) by retrain runs this sensor started ignored)" if own else ""
        return dg.SkipReason(
            ("drift measurement already handled" if seen else "no drift report has been materialized yet") + ignored
        )
    drifted = []
    for record in sorted(new, key=lambda r: r.storage_id, reverse=True):
        entry = record.event_log_entry
        share = float(_metadata_value(entry, "drift_share", 0.0))
        threshold = float(_metadata_value(entry, "drift_share_threshold", 0.5))
        if share >= threshold:
            drifted.append((record, share, threshold))
    if not drifted:
        shares = ", ".join(
            f"{r.partition_key or r.asset_key.to_user_string()} {float(_metadata_value(r.event_log_entry, 'drift_share', 0.0)):.3f}"
            for r in new[:5]
        )
        return dg.SkipReason(f"no drift: drift share below threshold in {len(new)} new measurement(s) ({shares})")
    record, share, threshold = drifted[0]
    entry = record.event_log_entry
    # daily_drift_report: the champion that scored the day; drift_report: the version just registered.
    version = str(_metadata_value(entry, "model_version", "unknown"))
    columns = _metadata_value(entry, "drifted_columns", "")
    where = f"day {record.partition_key}" if record.partition_key else f"{record.asset_key.to_user_string()} {record.storage_id}"
    run_key = drift_run_key(record, version)
    context.log.warning(f"drift share {share:.3f} >= {threshold:.3f} on {where} (champion v{version}): requesting retrain")
    already = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    if already:  # a tick that lost its cursor: the daemon will not launch it again, so do not alert again
        context.log.info(f"run_key {run_key} already has run {already[0].run_id}; no second alert")
        return dg.RunRequest(run_key=run_key, tags={"trigger": "drift", "drift_share": f"{share:.3f}",
                                                    "model_version": version,
                                                    "drift_partition": record.partition_key or "none"})
    AlertSink.from_env(log=context.log).send(
        "drift",
        f"drift share {share:.3f} >= {threshold:.3f} on {where}; retraining requested",
        {"drift_share": share, "threshold": threshold, "drifted_columns": columns, "partition": record.partition_key,
         "asset": record.asset_key.to_user_string(), "model_version": version, "run_key": run_key,
         "report": _metadata_value(entry, "mlflow_artifact", "")},
    )
    return dg.RunRequest(
        run_key=run_key,
        tags={"trigger": "drift", "drift_share": f"{share:.3f}", "model_version": version,
              "drift_partition": record.partition_key or "none"},
    )
