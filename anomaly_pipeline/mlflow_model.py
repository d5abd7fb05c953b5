"""The hybrid detector as an MLflow pyfunc, logged as *model from code*.

MLflow loads this file and the model's artifacts (a state dict and JSON configs): no pickled
Python object is ever unpickled, so loading a registered model executes only this project's code.
Input: canonical events (see ``anomaly_pipeline.schema``) covering the history to score against;
output: one row per scored event with ``event_id``, ``score`` (higher is stranger) and ``alert``.
"""

from __future__ import annotations

import json
from pathlib import Path

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
        from anomaly_pipeline.graph import build_graph_windows
        from anomaly_pipeline.schema import conform

        frame = pd.DataFrame(model_input)
        if "success" in frame and frame["success"].dtype == float:
            frame["success"] = frame["success"].map({1.0: True, 0.0: False})
        events = conform(frame, source="mlflow")
        windows = build_graph_windows(events, self.window_config)
        scores = self.detector.decision_function(windows, np.arange(len(windows.event_src)))
        return pd.DataFrame(
            {
                "event_id": windows.events["event_id"].astype(str).to_numpy(),
                "score": scores,
                "calibrated_tail": self.detector.calibrate(scores),
                "alert": scores > float(self.detector.threshold_),
            }
        )


mlflow.models.set_model(HybridPyfunc())
