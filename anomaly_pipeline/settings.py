"""One path for state: everything the project writes lives under ``ANOMALY_PIPELINE_HOME``.

Default: ``.anomaly_pipeline/`` in the current working directory (the checkout; git-ignored).
Dagster's instance (sqlite), MLflow's tracking and registry store (sqlite) and artifact folder,
Parquet data and reports are all sub-folders, so deleting that one folder resets everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "ANOMALY_PIPELINE_HOME"
DEFAULT_HOME = ".anomaly_pipeline"
MODEL_NAME = "anomaly-pipeline-hybrid"


@dataclass(frozen=True)
class StatePaths:
    """Where each kind of state lives, all below ``home``."""

    home: Path

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def summary_file(self) -> Path:
        return self.home / "last_run_summary.json"

    def ensure(self) -> StatePaths:
        for path in (
            self.home,
            self.dagster_home,
            self.mlflow_artifacts,
            self.data_dir,
            self.reports_dir,
            self.checkpoints_dir,
            self.landing_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self


def state_paths(home: str | os.PathLike[str] | None = None) -> StatePaths:
    """State paths for ``home``, else ``$ANOMALY_PIPELINE_HOME``, else ``./.anomaly_pipeline``."""
    raw = home if home is not None else os.environ.get(HOME_ENV, DEFAULT_HOME)
    return StatePaths(Path(raw).expanduser().resolve())


# -- production ---------------------------------------------------------------------------------
# One switch: ANOMALY_PIPELINE_ENV=local (default, everything embedded under ANOMALY_PIPELINE_HOME)
# or production (the services below, from environment variables; infra/README.md lists them).
ENV_SWITCH = "ANOMALY_PIPELINE_ENV"
PRODUCTION_ENV = {
    "MLFLOW_TRACKING_URI": "MLflow tracking server, e.g. http://mlflow:5000 (required)",
    "MLFLOW_REGISTRY_URI": "model registry, when it is not the tracking server (optional)",
    "ANOMALY_PIPELINE_ARTIFACT_LOCATION": (
        "artifact root of a new experiment, e.g. s3://bucket/mlflow; unset = the server's "
        "proxied store (mlflow-artifacts:/), so workers need no object-store credentials (optional)"
    ),
    "ANOMALY_PIPELINE_HOME": "shared volume for reports, checkpoints and model files (required)",
    "ANOMALY_PIPELINE_STORAGE_DIR": "shared volume for asset values (Parquet/pickle); default $ANOMALY_PIPELINE_HOME/data",
    "ANOMALY_PIPELINE_EVENTS_PATH": "telemetry file the pipeline reads; unset = synthetic events (optional)",
    "ANOMALY_PIPELINE_EVENTS_FORMAT": "format of that file (auto, canonical, lanl, zeek, darpa, ocsf, windows)",
}

# Runs of the training graph carry this tag: the instance's queue runs them one at a time
# (infra/dagster.yaml, infra/production/dagster.yaml), because they share the asset values
# (Parquet / pickles) under the storage folder.
TRAINING_RUN_TAGS: dict[str, str] = {"anomaly-pipeline/state": "training"}

# Run tags that send a job to the GPU node pool under the Kubernetes run launcher (dagster-k8s):
# the run pod requests one GPU, the CPU and memory training needs, and tolerates the pool's taint.
# dagster-k8s merges a run's container_config shallowly onto the launcher's, so these resources
# replace the launcher's CPU-run defaults whole (tests/test_infra_files.py renders the merge).
# Ignored by other run launchers.
GPU_RUN_TAGS: dict[str, object] = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "node_selector": {"anomaly-pipeline/node-pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
}


@dataclass(frozen=True)
class ProductionSettings:
    """Where production state lives: the MLflow server, shared volumes, the telemetry source.

    Dagster's own storage (runs, events, schedules) is not here: it comes from the instance's
    ``dagster.yaml`` under ``DAGSTER_HOME`` (``infra/production/dagster.yaml``: Postgres).
    """

    mlflow_tracking_uri: str
    home: Path
    storage_dir: Path
    mlflow_registry_uri: str | None = None
    artifact_location: str | None = None
    events_path: str | None = None
    events_format: str = "auto"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ProductionSettings:
        """Read the settings from the environment; a missing or local-only value is an error that
        names the variable, because production silently falling back to sqlite loses models."""
        env = dict(os.environ if environ is None else environ)
        missing = [k for k in ("MLFLOW_TRACKING_URI", HOME_ENV) if not env.get(k)]
        if missing:
            raise ValueError(
                f"{ENV_SWITCH}=production needs {', '.join(missing)} set "
                f"(see infra/README.md); use {ENV_SWITCH}=local for the embedded setup"
            )
        tracking = env["MLFLOW_TRACKING_URI"]
        if tracking.startswith(("sqlite:", "file:")) or "://" not in tracking:
            raise ValueError(
                f"MLFLOW_TRACKING_URI={tracking!r} is a local store; production expects a tracking server "
                "(http://host:5000) or a database URI (postgresql://...)"
            )
        home = Path(env[HOME_ENV]).expanduser()
        return cls(
            mlflow_tracking_uri=tracking,
            home=home,
            storage_dir=Path(env.get("ANOMALY_PIPELINE_STORAGE_DIR") or home / "data").expanduser(),
            mlflow_registry_uri=env.get("MLFLOW_REGISTRY_URI") or None,
            artifact_location=env.get("ANOMALY_PIPELINE_ARTIFACT_LOCATION") or None,
            events_path=env.get("ANOMALY_PIPELINE_EVENTS_PATH") or None,
            events_format=env.get("ANOMALY_PIPELINE_EVENTS_FORMAT") or "auto",
        )
