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
