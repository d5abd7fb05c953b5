"""The one place that assembles the Dagster code location (workspace.yaml points here).

Resources are chosen per environment in one dictionary (``ANOMALY_PIPELINE_ENV``); assets never
branch on the environment: ``local`` (the embedded default) or ``production`` (MLflow server,
shared volumes, Postgres-backed Dagster instance from DAGSTER_HOME; see infra/README.md).
"""

from __future__ import annotations

import os

import dagster as dg

from anomaly_pipeline import settings
from assets import evaluation, features, ingestion, monitoring, registry, scoring, training, validation
from assets.experiments import ablation_job
from assets.resources import EventSourceResource, LocalStateIOManager, MlflowResource, StateResource
from sensors.alerts import quality_gate_alert_sensor, run_failure_alert_sensor
from sensors.dead_runs import dead_run_sensor
from sensors.drift import drift_retrain_sensor
from sensors.jobs import daily_scoring_job, full_pipeline_job, retrain_job
from sensors.new_data import new_data_sensor
from sensors.schedules import daily_scoring_schedule, weekly_retrain_schedule

MLFLOW_UI_ENV = "ANOMALY_PIPELINE_MLFLOW_UI_URL"


def local_resources(home: str | None = None) -> dict[str, object]:
    """Everything under ANOMALY_PIPELINE_HOME: sqlite MLflow, Parquet/pickle values, reports."""
    paths = settings.state_paths(home).ensure()
    return {
        # Values are shared between runs: a launched run's steps refuse while `anomaly-pipeline run`
        # holds the folder (one training run at a time; the queue's tag limit covers launched runs).
        "io_manager": LocalStateIOManager(base_dir=str(paths.data_dir), lock_home=str(paths.home)),
        "state": StateResource(home=str(paths.home)),
        "event_source": EventSourceResource(),
        "mlflow_resource": MlflowResource(
            tracking_uri=paths.mlflow_tracking_uri, artifact_location=str(paths.mlflow_artifacts),
            # `anomaly-pipeline ui` serves the MLflow UI here (and sets the variable for other ports).
            ui_url=os.environ.get(MLFLOW_UI_ENV, "http://127.0.0.1:5000"),
        ),
    }


def production_resources() -> dict[str, object]:
    """The same resources over production services, all from environment variables
    (``settings.ProductionSettings``): the MLflow tracking server, shared volumes for asset values
    and reports, the telemetry file (synthetic when unset). Dagster's storage is the instance's."""
    prod = settings.ProductionSettings.from_env()
    source = (EventSourceResource(kind="file", path=prod.events_path, file_format=prod.events_format)
              if prod.events_path else EventSourceResource())
    return {
        "io_manager": LocalStateIOManager(base_dir=str(prod.storage_dir)),
        "state": StateResource(home=str(prod.home)),
        "event_source": source,
        "mlflow_resource": MlflowResource(
            tracking_uri=prod.mlflow_tracking_uri, registry_uri=prod.mlflow_registry_uri,
            artifact_location=prod.artifact_location,
        ),
    }


RESOURCES_BY_ENV = {"local": local_resources, "production": production_resources}

all_assets = dg.load_assets_from_modules(
    [ingestion, validation, features, training, evaluation, registry, monitoring, scoring]
)
all_asset_checks = dg.load_asset_checks_from_modules([validation, evaluation, monitoring, scoring])


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    env = os.environ.get("ANOMALY_PIPELINE_ENV", "local")
    if resources is None:
        if env not in RESOURCES_BY_ENV:
            raise ValueError(f"ANOMALY_PIPELINE_ENV={env!r} is not one of {sorted(RESOURCES_BY_ENV)}")
        resources = RESOURCES_BY_ENV[env]()
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_asset_checks,
        jobs=[full_pipeline_job, retrain_job, daily_scoring_job, ablation_job],
        schedules=[weekly_retrain_schedule, daily_scoring_schedule],
        sensors=[drift_retrain_sensor, new_data_sensor, run_failure_alert_sensor, quality_gate_alert_sensor,
                 dead_run_sensor],
        resources=resources,
    )


defs = build_definitions()
