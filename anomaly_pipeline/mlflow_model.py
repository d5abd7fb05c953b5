"""The hybrid detector as an MLflow pyfunc whose loader is this installed package.

``log_hybrid_model`` logs a ``python_function`` model with ``loader_module`` =
``anomaly_pipeline.pyfunc_loader`` and a data folder (the detector's state dict and JSON
configs, the window config): no code travels with the artifact and nothing is unpickled, so
loading a registered model executes only the installed project (``pyfunc_loader`` explains the
integrity record). ``load_pyfunc`` is the one way the project loads a registered model: it reads
the MLmodel file first and refuses a model that would make MLflow run code from the artifact
(``python_model``, ``code`` paths, another loader), then checks the data against the SHA-256
tag of the model version, then loads.

The data folder may also hold ``warm_history.parquet``: the newest events the model was trained
on (``warm_history_frame``), which ``serve`` and ``stream`` replay through their state before the
first event arrives, so that the first alerts mean what batch alerts mean. It is data (Parquet, no
code) and one of the hashed files, so the version's digest covers it like the weights.

Input: canonical events (see ``anomaly_pipeline.schema``) covering the history to score against;
output: one row per scored event with ``event_id``, ``score`` (higher is stranger) and ``alert``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

ARTIFACT_DETECTOR = "detector"  # folder in the model's data: HybridDetector.save's files
ARTIFACT_WINDOWS = "window_config.json"
ARTIFACT_WARM_HISTORY = "warm_history.parquet"
PYFUNC = "python_function"
# Ground truth has no place in a deployed model's files: the warm history keeps every other column.
_WARM_DROPPED = ("label", "label_detail")


_FLOAT_COLUMNS = ("dst_port", "label", "bytes_out", "bytes_in", "packets", "duration_s", "success")


def to_model_input(events: pd.DataFrame) -> pd.DataFrame:
    """Canonical events in the model's plain input form: ISO-8601 ``ts`` strings, numbers (and
    ``success``) as floats with NaN for missing, everything else strings or None."""
    from anomaly_pipeline.schema import EVENT_COLUMNS

    frame = events.loc[:, list(EVENT_COLUMNS)].copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for column in _FLOAT_COLUMNS:
        frame[column] = frame[column].astype("Float64").astype(float)
    strings = [c for c in frame.columns if c not in _FLOAT_COLUMNS]
    frame[strings] = frame[strings].astype(object).where(frame[strings].notna(), None)
    return frame


def model_signature():  # noqa: ANN201 - mlflow.models.ModelSignature
    """Input: the event contract (required columns required, the rest optional); output: scores."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from anomaly_pipeline.schema import COLUMNS

    inputs = Schema(
        [ColSpec("double" if c.name in _FLOAT_COLUMNS else "string", c.name, required=c.required) for c in COLUMNS]
    )
    outputs = Schema([ColSpec("string", "event_id"), ColSpec("double", "score"), ColSpec("double", "calibrated_tail"),
                      ColSpec("boolean", "alert")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def warm_history_frame(events: pd.DataFrame, days: float | None = None, max_events: int | None = None) -> pd.DataFrame:
    """What a model keeps of its training events for a warm start: the events of the last ``days``
    (default ``defaults.WARM_HISTORY_DAYS``) before the newest one, at most ``max_events`` (default
    ``defaults.WARM_HISTORY_MAX_EVENTS``; the newest are kept), in time order, with the event
    contract's columns but the labels."""
    from anomaly_pipeline.defaults import WARM_HISTORY_DAYS, WARM_HISTORY_MAX_EVENTS
    from anomaly_pipeline.schema import EVENT_COLUMNS

    days = WARM_HISTORY_DAYS if days is None else days
    max_events = WARM_HISTORY_MAX_EVENTS if max_events is None else max_events
    columns = [c for c in EVENT_COLUMNS if c not in _WARM_DROPPED]
    frame = events.loc[:, columns].sort_values("ts", kind="stable")
    if len(frame):
        frame = frame[frame["ts"] >= frame["ts"].iloc[-1] - pd.Timedelta(days=days)]
    return frame.iloc[max(len(frame) - max_events, 0) :].reset_index(drop=True)


class HybridScorer:
    """The registered model as loaded: the detector, the window config it was trained with and,
    when it was logged with one, its warm-start history (``warm_history``)."""

    def __init__(self, detector: Any, window_config: Any, warm_history_bytes: bytes | None = None) -> None:
        self.detector = detector  # anomaly_pipeline.detectors.HybridDetector
        self.window_config = window_config  # anomaly_pipeline.graph.WindowConfig
        # The Parquet file as read right after the integrity check; parsed on demand (by the
        # service's warm start and by daily scoring's history; a batch `predict` never needs it).
        self._warm_history_bytes = warm_history_bytes

    @classmethod
    def from_directory(cls, data: str | Path) -> HybridScorer:
        """Load from a model's data folder (weights with ``torch.load(weights_only=True)``)."""
        from anomaly_pipeline.detectors import HybridDetector
        from anomaly_pipeline.graph import WindowConfig

        data = Path(data)
        detector = HybridDetector.load(data / ARTIFACT_DETECTOR)
        window_config = WindowConfig(**json.loads((data / ARTIFACT_WINDOWS).read_text()))
        history = data / ARTIFACT_WARM_HISTORY
        return cls(detector, window_config, history.read_bytes() if history.is_file() else None)

    @property
    def has_warm_history(self) -> bool:
        return self._warm_history_bytes is not None

    def warm_history(self) -> pd.DataFrame | None:
        """The events logged for a warm start (canonical, time order), or None when the model was
        logged without them.

        Raises:
            SchemaError: the file is not an event table of this version's contract.
        """
        import io

        from anomaly_pipeline.schema import conform

        if self._warm_history_bytes is None:
            return None
        frame = conform(pd.read_parquet(io.BytesIO(self._warm_history_bytes)))
        return frame.sort_values("ts", kind="stable").reset_index(drop=True)

    def get_raw_model(self) -> HybridScorer:
        """``PyFuncModel.get_raw_model()`` hands back this object."""
        return self

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from anomaly_pipeline.schema import conform

        frame = pd.DataFrame(model_input)
        if "success" in frame and frame["success"].dtype == float:
            frame["success"] = frame["success"].map({1.0: True, 0.0: False})
        events = conform(frame, source="mlflow")
        return self.score_period(events).scored[["event_id", "score", "calibrated_tail", "alert"]]

    def score_period(
        self, events: pd.DataFrame, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> PeriodScores:
        """Score the canonical ``events`` with ``ts`` in [``start``, ``end``), using every earlier
        event in ``events`` as history (graph windows need the preceding snapshots).

        Returns the scored events of the period (canonical columns plus ``score``,
        ``calibrated_tail``, ``alert``, ``rank`` (1 = most anomalous)) together with the graph
        windows and the period's positions in them, so the caller can read the same features the
        model saw (e.g. for drift) without building the windows twice.
        """
        from anomaly_pipeline.graph import build_graph_windows

        windows = build_graph_windows(events, self.window_config)
        ts = pd.to_datetime(windows.events["ts"], utc=True)
        mask = np.ones(len(ts), dtype=bool)
        if start is not None:
            mask &= (ts >= start).to_numpy()
        if end is not None:
            mask &= (ts < end).to_numpy()
        idx = np.flatnonzero(mask)
        scores = self.detector.decision_function(windows, idx) if len(idx) else np.zeros(0)
        threshold = float(self.detector.threshold_)
        scored = windows.events.iloc[idx].reset_index(drop=True).copy()
        scored["score"] = scores
        scored["calibrated_tail"] = self.detector.calibrate(scores) if len(idx) else np.zeros(0)
        scored["alert"] = scores > threshold
        scored["rank"] = pd.Series(scores).rank(ascending=False, method="first").astype("int64").to_numpy()
        return PeriodScores(scored=scored, windows=windows, index=idx, threshold=threshold)


@dataclass
class PeriodScores:
    """One period's scores: ``scored`` rows align with ``index`` (positions in ``windows``)."""

    scored: pd.DataFrame
    windows: Any  # anomaly_pipeline.graph.GraphWindows
    index: np.ndarray
    threshold: float


def log_hybrid_model(
    detector_dir: str | Path,
    window_config: Any,
    *,
    name: str = "model",
    input_example: pd.DataFrame | None = None,
    wheelhouse: str | Path | None = None,
    warm_history: pd.DataFrame | None = None,
) -> tuple[Any, str]:
    """Log the detector saved in ``detector_dir`` to the active MLflow run; no code in the artifact.

    ``warm_history``: the events ``serve`` and ``stream`` replay before their first event
    (``warm_history_frame`` of the training events), stored as Parquet among the hashed data
    files; None logs a model that starts cold (the service says so).

    The model's requirements (``project_wheel.model_requirements``) pin every dependency ``==`` the
    installed version and name the project only as a direct reference to its own wheel with the
    wheel's SHA-256, so no index can supply a package of the same name. The wheel is built from the
    running code into ``wheelhouse`` (the state folder's ``wheels/``), never into the artifact;
    with None it is built for its hash only. The MLmodel metadata records it (``project_wheel``).

    Returns MLflow's ``ModelInfo`` and the data digest to tag the model version with
    (``pyfunc_loader.DIGEST_TAG``; ``registry.register_version(..., tags=...)``).
    """
    from anomaly_pipeline import pyfunc_loader
    from anomaly_pipeline.project_wheel import model_requirements
    from anomaly_pipeline.schema import EVENT_COLUMNS

    requirements, wheel = model_requirements(wheelhouse)

    with tempfile.TemporaryDirectory(prefix="anomaly-pipeline-model-") as tmp:
        data = Path(tmp) / "hybrid"  # MLflow stores it as data/hybrid in the model folder
        shutil.copytree(detector_dir, data / ARTIFACT_DETECTOR)
        (data / ARTIFACT_WINDOWS).write_text(json.dumps(window_config.__dict__))
        if warm_history is not None:
            columns = [c for c in EVENT_COLUMNS if c in warm_history.columns and c not in _WARM_DROPPED]
            warm_history.loc[:, columns].to_parquet(data / ARTIFACT_WARM_HISTORY, index=False)
        hashes = pyfunc_loader.data_hashes(data)
        digest = pyfunc_loader.digest_of(hashes)
        info = mlflow.pyfunc.log_model(
            name=name,
            loader_module=pyfunc_loader.LOADER_MODULE,
            data_path=str(data),
            signature=model_signature(),
            input_example=input_example,
            pip_requirements=requirements,
            metadata={pyfunc_loader.METADATA_KEY: {"data_sha256": hashes, "data_digest": digest},
                      "project_wheel": wheel},
        )
    return info, digest


def load_pyfunc(model_uri: str) -> tuple[Any, HybridScorer]:
    """``mlflow.pyfunc.load_model(model_uri)`` and the project's scorer inside it, checked first.

    Before MLflow loads anything: the MLmodel must name this package's loader and no code
    (``ModelIntegrityError`` otherwise: loading it would run code stored in the artifact), and for
    a ``models:/`` URI the data's digest must equal the version's ``weights_sha256`` tag.

    Raises:
        ModelIntegrityError: the artifact would run its own code, or its data was modified.
    """
    from anomaly_pipeline import pyfunc_loader

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    conf = _pyfunc_conf(local, model_uri)
    recorded = pyfunc_loader.recorded_hashes(local)
    digest = pyfunc_loader.verify_data(local / conf["data"], recorded, "in its MLmodel file")
    expected = _registered_digest(model_uri)
    if expected is not None and expected != digest:
        raise pyfunc_loader.ModelIntegrityError(
            f"{model_uri}: the data's SHA-256 digest {digest} differs from the {pyfunc_loader.DIGEST_TAG} tag "
            f"recorded in the registry at registration ({expected}). Refusing to load it: the artifact (weights "
            "and MLmodel) was modified after registration. Register the model again from a trusted run (or roll "
            "the champion back: anomaly-pipeline models rollback)"
        )
    loaded = mlflow.pyfunc.load_model(str(local))
    return loaded, loaded.get_raw_model()


def _pyfunc_conf(local: Path, model_uri: str) -> dict[str, Any]:
    """The python_function flavor of the model at ``local``, refused unless it runs only our loader."""
    from mlflow.models import Model

    from anomaly_pipeline import pyfunc_loader

    conf = Model.load(str(local / "MLmodel")).flavors.get(PYFUNC) or {}
    loader = conf.get("loader_module")
    reasons = []
    if loader != pyfunc_loader.LOADER_MODULE:
        reasons.append(f"its loader is {loader!r}, not {pyfunc_loader.LOADER_MODULE!r}")
    if conf.get("code"):
        reasons.append(f"it asks for code from the artifact on sys.path ({conf['code']!r})")
    if any(key in conf for key in ("python_model", "cloudpickle_version")):
        reasons.append("it holds a python_model (code or a pickle stored in the artifact)")
    if not conf.get("data"):
        reasons.append("it has no data folder")
    if reasons:
        raise pyfunc_loader.ModelIntegrityError(
            f"{model_uri} is not a model this project loads: {'; '.join(reasons)}. Loading it would execute code "
            "stored with the model (or it is not the hybrid detector); models registered by older versions of "
            "anomaly-pipeline were logged that way - retrain (retrain_job) and promote the new version"
        )
    return conf


def _registered_digest(model_uri: str) -> str | None:
    """The ``weights_sha256`` tag of the version a ``models:/name/version`` or ``models:/name@alias``
    URI points at; None for other URIs.

    Raises:
        ModelIntegrityError: a registered version without the tag (not registered by this code).
    """
    from anomaly_pipeline import pyfunc_loader

    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri[len("models:/") :].strip("/")
    client = mlflow.MlflowClient()
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, number = ref.rsplit("/", 1)
        version = client.get_model_version(name, number)
    else:
        return None  # models:/<logged model id>: no registry record to compare with
    digest = (version.tags or {}).get(pyfunc_loader.DIGEST_TAG)
    if not digest:
        raise pyfunc_loader.ModelIntegrityError(
            f"{model_uri} (version {version.version}) has no {pyfunc_loader.DIGEST_TAG} tag, so its weights cannot "
            "be checked; it was not registered by this version of anomaly-pipeline: retrain and promote a new one"
        )
    return str(digest)
