"""drift_retrain_sensor: turns a drifted drift_report materialization into one retrain run."""


import dagster as dg

from .jobs import retrain_job

DRIFT_ASSET = dg.AssetKey("drift_report")


def _metadata_value(entry: dg.EventLogEntry, key: str, default=None):
    materialization = entry.asset_materialization
    value = materialization.metadata.get(key) if materialization else None
    return value.value if value is not None else default


@dg.sensor(
    name="drift_retrain_sensor",
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Reads drift_report's latest materialization; when its drift_share reaches the threshold "
    "it requests retrain_job once per (drift materialization, model version).",
)
def drift_retrain_sensor(context: dg.SensorEvaluationContext):
    records = context.instance.fetch_materializations(DRIFT_ASSET, limit=1).records
    if not records:
        return dg.SkipReason("drift_report has never been materialized")
    record = records[0]
    storage_id = record.storage_id
    if context.cursor and int(context.cursor) >= storage_id:
        return dg.SkipReason(f"drift materialization {storage_id} already handled")
    entry = record.event_log_entry
    share = float(_metadata_value(entry, "drift_share", 0.0))
    threshold = float(_metadata_value(entry, "drift_share_threshold", 0.5))
    version = str(_metadata_value(entry, "model_version", "unknown"))
    context.update_cursor(str(storage_id))
    if share < threshold:
        return dg.SkipReason(f"drift share {share:.3f} below threshold {threshold:.3f}")
    context.log.warning(f"drift share {share:.3f} >= {threshold:.3f} (model v{version}): requesting retrain")
    return dg.RunRequest(
        run_key=f"drift-{storage_id}-model-v{version}",
        tags={"trigger": "drift", "drift_share": f"{share:.3f}", "model_version": version},
    )
