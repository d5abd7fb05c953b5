"""The hybrid detector as an MLflow pyfunc, logged as *model from code*.

MLflow loads this file and the model's artifacts (a state dict and JSON configs): no pickled
Python object is ever unpickled, so loading a registered model executes only this project's code.
Input: canonical events (see ``anomaly_pipeline.schema``) covering the history to score against;
output: one row per scored event with ``event_id``, ``score`` (higher is stranger) and ``alert``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

ARTIFACT_DETECTOR = "detector"
ARTIFACT_WINDOWS = "window_config"


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


class HybridPyfunc(PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's context type
        from anomaly_pipeline.detectors import HybridDetector
        from anomaly_pipeline.graph import WindowConfig

        self.detector = HybridDetector.load(context.artifacts[ARTIFACT_DETECTOR])
        self.window_config = WindowConfig(**json.loads(Path(context.artifacts[ARTIFACT_WINDOWS]).read_text()))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ANN001
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


def load_pyfunc(model_uri: str) -> tuple[Any, HybridPyfunc]:
    """``mlflow.pyfunc.load_model(model_uri)`` and the project's model inside it.

    Raises:
        ValueError: the URI points at a model that is not this project's hybrid detector.
    """
    loaded = mlflow.pyfunc.load_model(model_uri)
    inner = loaded.unwrap_python_model()
    if not hasattr(inner, "score_period"):
        raise ValueError(
            f"{model_uri} is a {type(inner).__name__} without score_period: either not the project's hybrid "
            "detector or one logged by an older version of this code; retrain (retrain_job) and promote the new version"
        )
    return loaded, inner


mlflow.models.set_model(HybridPyfunc())
