"""Resources of the asset layer: where events come from, where state lives, the MLflow client.

Each is a small ``ConfigurableResource`` over the domain library; ``definitions.py`` picks the
instances per environment, so no asset contains an ``if local`` branch.
"""


import pickle
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
import pandas as pd
from pydantic import Field

from anomaly_pipeline import settings


class StateResource(dg.ConfigurableResource):
    """The project's state folder (``ANOMALY_PIPELINE_HOME``): reports, checkpoints, models."""

    home: str = Field(description="the state folder (ANOMALY_PIPELINE_HOME)")

    @property
    def paths(self) -> settings.StatePaths:
        return settings.state_paths(self.home).ensure()

    def run_dir(self, kind: str, run_id: str) -> Path:
        """A folder for one run's files of one kind, e.g. ``reports/<run_id>``."""
        path = self.paths.home / kind / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path


class EventSourceResource(dg.ConfigurableResource):
    """Which events ``raw_events`` reads: the synthetic generator (default) or a file.

    ``kind='file'`` reads ``path`` (gzip allowed) in ``file_format``: ``auto`` (detected from the
    first lines), ``canonical``, ``lanl``, ``zeek``, ``darpa``, ``ocsf`` or ``windows``; with LANL,
    ``redteam_path`` joins the red-team labels. Unparseable lines are kept as rows with their
    reason and go to quarantine downstream.
    """

    kind: Literal["synthetic", "file"] = Field(default="synthetic", description="synthetic (the embedded generator) or file")
    path: str | None = Field(default=None, description="the log file for kind=file (gzip allowed)")
    file_format: str = Field(default="auto", description="auto (detected from the first lines), canonical, lanl, zeek, darpa, ocsf or windows")
    redteam_path: str | None = Field(default=None, description="LANL red-team file whose lines label the events")
    seed: int = Field(default=7, description="synthetic: random seed")
    n_users: int = Field(default=120, description="synthetic: users")
    n_servers: int = Field(default=30, description="synthetic: servers")
    days: int = Field(default=10, description="synthetic: days from 2026-01-05")
    events_per_user_day: float = Field(default=60.0, description="synthetic: mean events per user and day")
    attacks: bool = Field(default=True, description="synthetic: insert the five attack campaigns")
    drift_start_day: int | None = Field(default=None, description="synthetic: day the reorganisation drift starts (unset = none)")

    def describe(self) -> str:
        if self.kind == "file":
            return f"file {self.path} ({self.file_format})"
        drift = f", drift from day {self.drift_start_day}" if self.drift_start_day is not None else ""
        return f"synthetic seed={self.seed} users={self.n_users} servers={self.n_servers} days={self.days}{drift}"

    def load(self) -> pd.DataFrame:
        if self.kind == "file":
            from anomaly_pipeline.sources.formats import read_events

            if not self.path:
                raise dg.Failure("event_source kind='file' needs a path: set resources.event_source.config.path")
            extra = {"redteam": self.redteam_path} if self.redteam_path else {}
            return read_events(self.path, fmt=self.file_format, **extra)
        from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

        return generate_events(
            SyntheticConfig(
                seed=self.seed,
                n_users=self.n_users,
                n_servers=self.n_servers,
                days=self.days,
                events_per_user_day=self.events_per_user_day,
                attacks=self.attacks,
                drift_start_day=self.drift_start_day,
            )
        )


# The MLflow UI's workflow that shows an experiment's training runs (its default is "genai").
MLFLOW_UI_WORKFLOW = "machine_learning"


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry (a project-owned resource over the MLflow client)."""

    tracking_uri: str = Field(description="MLflow tracking store: sqlite:///... locally, http://host:5000 in production")
    registry_uri: str | None = Field(default=None, description="model registry store; unset = the tracking store")
    artifact_location: str | None = Field(
        default=None, description="artifact root of a new experiment (a local folder or an object-store URI)")
    experiment: str = Field(default="anomaly-pipeline", description="MLflow experiment of the training and drift runs")
    model_name: str = Field(default=settings.MODEL_NAME, description="registered model name the champion lives under")
    ui_url: str | None = Field(
        default=None, description="MLflow UI the Dagster metadata links to; unset = the tracking server when it is "
        "http(s), else nothing (locally `anomaly-pipeline ui` serves it at http://127.0.0.1:5000)")

    def registry_config(self) -> Any:
        from anomaly_pipeline.registry import RegistryConfig

        return RegistryConfig(
            tracking_uri=self.tracking_uri,
            registry_uri=self.registry_uri,
            experiment=self.experiment,
            artifact_location=self.artifact_location,
            model_name=self.model_name,
        )

    def client(self) -> Any:
        from anomaly_pipeline.registry import configure

        return configure(self.registry_config())

    @property
    def ui_base(self) -> str | None:
        """Where the MLflow UI answers, or None when there is none to link to."""
        if self.ui_url:
            return self.ui_url.rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            parts = urlsplit(self.tracking_uri)  # never hand out a link with the server's credentials
            host = parts.netloc.rsplit("@", 1)[-1]
            return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")
        return None

    def links(self, *, run_id: str | None = None, experiment_id: str | None = None, version: str | None = None,
              artifact: str | None = None) -> dict[str, dg.MetadataValue]:
        """Dagster metadata links into the MLflow UI: the run, the model version page, and an
        artifact served by the tracking server (``get-artifact``, so an HTML report opens in the
        browser). Empty when no UI is known."""
        base = self.ui_base
        if base is None:
            return {}
        out: dict[str, dg.MetadataValue] = {}
        # MLflow 3's UI opens every experiment in its GenAI view (traces) unless the link names the
        # model-training workflow; with it, the experiment opens on its training runs.
        ml = f"?workflowType={MLFLOW_UI_WORKFLOW}"
        if experiment_id:
            out["mlflow_experiment_url"] = dg.MetadataValue.url(f"{base}/#/experiments/{experiment_id}{ml}")
        if run_id and experiment_id:
            out["mlflow_run_url"] = dg.MetadataValue.url(f"{base}/#/experiments/{experiment_id}/runs/{run_id}{ml}")
        if version:
            out["mlflow_model_version_url"] = dg.MetadataValue.url(
                f"{base}/#/models/{quote(self.model_name)}/versions/{version}{ml}")
        if run_id and artifact:
            out["mlflow_artifact_url"] = dg.MetadataValue.url(
                f"{base}/get-artifact?path={quote(artifact)}&run_uuid={run_id}")
        return out


class LocalStateIOManager(dg.ConfigurableIOManager):
    """Stores asset values under the state folder: DataFrames as Parquet, anything else pickled.

    Pickles here are the pipeline's own intermediate values on the local disk; models leave the
    pipeline only through MLflow as state dicts plus JSON (no pickled code).
    """

    base_dir: str = Field(description="folder asset values are stored in")
    lock_home: str | None = Field(
        default=None, description="state folder whose run lock `anomaly-pipeline run` holds; while another process "
        "holds it, reading or writing a value fails instead of mixing two runs' data (unset = no check)")

    def _check_no_other_run(self) -> None:
        if self.lock_home is None:
            return
        from anomaly_pipeline.runlock import HomeBusy, check_home_free

        try:
            check_home_free(self.lock_home)
        except HomeBusy as busy:
            raise dg.Failure(str(busy)) from None

    def _path(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> Path:
        key = context.asset_key.path if context.has_asset_key else [context.name]
        path = Path(self.base_dir).joinpath(*key).with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        self._check_no_other_run()
        if isinstance(obj, pd.DataFrame):
            path = self._path(context, ".parquet")
            obj.to_parquet(path, index=False)
            self._path(context, ".pickle").unlink(missing_ok=True)
        else:
            path = self._path(context, ".pickle")
            with path.open("wb") as fh:
                pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
            self._path(context, ".parquet").unlink(missing_ok=True)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        self._check_no_other_run()
        parquet = self._path(context, ".parquet")
        if parquet.exists():
            return pd.read_parquet(parquet)
        path = self._path(context, ".pickle")
        if not path.exists():
            raise dg.Failure(
                f"no stored value for {context.asset_key.to_user_string()} at {path}; "
                "materialize that upstream asset first"
            )
        with path.open("rb") as fh:
            return pickle.load(fh)
