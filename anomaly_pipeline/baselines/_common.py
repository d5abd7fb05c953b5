"""What every baseline detector shares."""

from __future__ import annotations

import numpy as np


def fitted_threshold(scores: np.ndarray, target_fpr: float) -> float:
    """``detectors.threshold_at_fpr``, imported on use: ``detectors`` may import the baselines."""
    from anomaly_pipeline.detectors import threshold_at_fpr

    return threshold_at_fpr(scores, target_fpr)
