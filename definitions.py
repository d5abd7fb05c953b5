"""The one place that assembles the Dagster code location (workspace.yaml points here).

Resources are chosen per environment in one dictionary (``ANOMALY_PIPELINE_ENV``); assets never
branch on the environment. Only ``local`` (the embedded default) exists so far.
"""

from __future__ import annotations

import os

import dagster as dg

from anomaly_pipeline import settings
from assets import evaluation, features, ingestion, monitoring, registry, training, validation
from assets.resources import EventSourceResource, LocalStateIOManager, MlflowResource, StateResource
from sensors.drift import drift_retrain_sensor
from sensors.jobs import full_pipeline_job, retrain_job
from sensors.schedules import weekly_retrain_schedule


def local_resources(home: str | None = None) -> dict[str, object]:
    """Everything under ANOMALY_PIPELINE_HOME: sqlite MLflow, Parquet/pickle values, reports."""
    paths = settings.state_paths(home).ensure()
    return {
        "io_manager": LocalStateIOManager(base_dir=str(paths.data_dir)),
        "state": StateResource(home=str(paths.home)),
        "event_source": EventSourceResource(),
        "mlflow_resource": MlflowResource(
            tracking_uri=paths.mlflow_tracking_uri, artifact_location=str(paths.mlflow_artifacts)
        ),
    }


RESOURCES_BY_ENV = {"local": local_resources}

all_assets = dg.load_assets_from_modules([ingestion, validation, features, training, evaluation, registry, monitoring])
all_asset_checks = dg.load_asset_checks_from_modules([validation, evaluation, monitoring])


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    env = os.environ.get("ANOMALY_PIPELINE_ENV", "local")
    if resources is None:
        if env not in RESOURCES_BY_ENV:
            raise ValueError(f"ANOMALY_PIPELINE_ENV={env!r} is not one of {sorted(RESOURCES_BY_ENV)}")
        resources = RESOURCES_BY_ENV[env]()
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_asset_checks,
        jobs=[full_pipeline_job, retrain_job],
        schedules=[weekly_retrain_schedule],
        sensors=[drift_retrain_sensor],
        resources=resources,
    )


defs = build_definitions()
