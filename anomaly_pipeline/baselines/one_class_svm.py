"""One-Class SVM (Schölkopf et al. 2001, scikit-learn) on the standardised per-event features."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from anomaly_pipeline.baselines._common import fitted_threshold
from anomaly_pipeline.graph import GraphWindows


class OneClassSVMDetector:
    """One-Class SVM on ``windows.event_x`` (features ``EVENT_FEATURES``), no graph, no sequence.

    Features are standardised with the mean and standard deviation of the fit sample. The SVM
    is trained on at most ``max_fit_rows`` fit events drawn at random (kernel SVMs scale
    quadratically); ``nu`` bounds the fraction of training events treated as outliers. The score is
    the negated signed distance to the separating surface: higher = more anomalous.
    """

    name = "one_class_svm"

    def __init__(
        self,
        nu: float = 0.05,
        kernel: str = "rbf",
        gamma: str | float = "scale",
        max_fit_rows: int = 5000,
        fit_fpr: float = 0.01,
        seed: int = 0,
    ) -> None:
        if not 0 < nu <= 1:
            raise ValueError(f"nu must be in (0, 1], got {nu}")
        self.nu = nu
        self.kernel = kernel
        self.gamma = gamma
        self.max_fit_rows = max_fit_rows
        self.fit_fpr = fit_fpr
        self.seed = seed
        self.scaler: StandardScaler | None = None
        self.svm: OneClassSVM | None = None
        self.threshold_: float | None = None

    def fit(self, windows: GraphWindows, idx: np.ndarray) -> OneClassSVMDetector:
        idx = np.asarray(idx)
        if len(idx) == 0:
            raise ValueError("OneClassSVMDetector: no fit events (idx is empty)")
        rng = np.random.default_rng(self.seed)
        sample = idx if len(idx) <= self.max_fit_rows else rng.choice(idx, self.max_fit_rows, replace=False)
        x = windows.event_x[np.sort(sample)].astype(np.float64)
        self.scaler = StandardScaler().fit(x)
        self.svm = OneClassSVM(nu=self.nu, kernel=self.kernel, gamma=self.gamma).fit(self.scaler.transform(x))
        self.threshold_ = fitted_threshold(self.decision_function(windows, idx), self.fit_fpr)
        return self

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        if self.svm is None or self.scaler is None:
            raise RuntimeError("OneClassSVMDetector: call fit() before scoring")
        x = self.scaler.transform(windows.event_x[np.asarray(idx)].astype(np.float64))
        return -self.svm.decision_function(x)
