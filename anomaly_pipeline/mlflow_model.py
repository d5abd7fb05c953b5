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


class HybridPyfunc(PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001 - MLflow's context type
        from anomaly_pipeline.detectors import HybridDetector
        from anomaly_pipeline.graph import WindowConfig

        self.detector = HybridDetector.load(context.artifacts[ARTIFACT_DETECTOR])
        self.window_config = WindowConfig(**json.loads(Path(context.artifacts[ARTIFACT_WINDOWS]).read_text()))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ANN001
        from anomaly_pipeline.graph import build_graph_windows
        from anomaly_pipeline.schema import conform

        events = conform(pd.DataFrame(model_input), source="mlflow")
        windows = build_graph_windows(events, self.window_config)
        scores = self.detector.decision_function(windows, np.arange(len(windows.event_src)))
        return pd.DataFrame(
            {
                "event_id": windows.events["event_id"].astype(str).to_numpy(),
                "score": scores,
                "alert": scores > float(self.detector.threshold_),
            }
        )


mlflow.models.set_model(HybridPyfunc())
