"""Every detector, the hybrid model and the baselines, behind one small interface.

Like scikit-learn and PyOD: hyper-parameters in ``__init__``, ``fit`` on the training events,
``decision_function`` where higher is more anomalous, ``predict`` against a threshold learned on
fit data. Inputs are a ``GraphWindows`` plus the positions of the events to use, so the
evaluation loops over detectors without special cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from sklearn.ensemble import IsolationForest

from anomaly_pipeline.graph import EVENT_FEATURES, NODE_FEATURES, GraphWindows
from anomaly_pipeline.models.hybrid import HybridConfig, HybridGNNLSTM
from anomaly_pipeline.training import SCORE_PARTS, EpochStats, TrainConfig, score_components, train_hybrid

WEIGHTS_FILE = "state_dict.pt"
CALIBRATION_POINTS = 1001
CONFIG_FILE = "detector.json"
# How the hybrid's score parts (``training.SCORE_PARTS``: hour, link, attribute and rate surprises,
# the supervised head) become one score, without any weight learned from labels:
# ``fisher`` (default): each part becomes its upper-tail probability among the unlabelled
# validation window's values of that part, and the score is Fisher's sum of -log p over the parts.
# Beyond the top ``TAIL_SHARE`` of the validation values the tail follows the model itself: every
# part is a surprisal in nats (-log of a model probability), and under the model the chance of a
# surprisal at least s falls as exp(-s) in the tail (exactly for exponential tails, up to
# polynomial factors for the Gaussian, Student-t and Poisson ones), so each nat past the tail
# start divides p by e. An event far beyond anything in validation keeps rising instead of tying
# at the validation maximum, and a handful of validation values bunched at the top (a small or
# quiet validation window) cannot make a slightly larger value look astronomically rare, as an
# exponential fitted to those few values did (measured in README.md, "How defaults
# were chosen"). A value of 0 (a one-sided part that saw nothing surprising) has p = 1 and adds
# nothing.
# The parts in ``MODEL_SCALE_PARTS`` skip the validation step and enter at their own scale (p =
# exp(-part)): see there.
# ``tail_sum`` adds each part's empirical CDF instead; ``surprisal`` adds the raw nats.
COMBINATIONS = ("fisher", "tail_sum", "surprisal")
TAIL_SHARE = 0.05
# Parts that are the -log of a predictive probability from counts with a fixed prior (no learned
# weight, no overdispersed count model), whose history keeps out the very events they score: the
# service part counts only connections that were answered (``graph.service_share``). Ranking them
# among validation values would let those events back in through the calibration: on a host that
# is probed all day, closed-port probes are most of any window, so their rank says "ordinary" and
# the profile's conditional merge is undone (Stratosphere 008: the part alone ranks attacks at
# ROC-AUC 0.995, ranked among validation values the Fisher sum drops to 0.64-0.76). Their p is the
# model's own, exp(-part); a part that is 0 (an event without a service) adds nothing.
MODEL_SCALE_PARTS: tuple[str, ...] = ("service_surprise",)
# Far below one p-value step: only orders events that tie on every part.
TIE_BREAK = 1e-6


class Detector(Protocol):
    name: str
    threshold_: float | None

    def fit(self, windows: GraphWindows, idx: np.ndarray) -> Detector: ...

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray: ...


def threshold_at_fpr(scores: np.ndarray, target_fpr: float) -> float:
    """Score above which a fraction ``target_fpr`` of ``scores`` (assumed benign) lie."""
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        raise ValueError("no finite scores to set a threshold from")
    return float(np.quantile(scores, 1.0 - target_fpr))


def predict(detector: Detector, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
    """1 where the detector's score passes its fitted threshold."""
    if detector.threshold_ is None:
        raise RuntimeError(f"{detector.name}: call fit() before predict()")
    return (detector.decision_function(windows, idx) > detector.threshold_).astype(np.int8)


def _log_parts(parts: np.ndarray) -> np.ndarray:
    """Score parts (nats, NaN as 0) on the log1p scale their tails are calibrated on."""
    return np.log1p(np.clip(np.nan_to_num(np.asarray(parts, dtype=float)), 0.0, None))


class HybridDetector:
    """The GNN-LSTM hybrid (``anomaly_pipeline.models.hybrid``) as a detector."""

    name = "hybrid_gnn_lstm"

    def __init__(
        self,
        model_config: HybridConfig = HybridConfig(),
        train_config: TrainConfig = TrainConfig(),
        fit_fpr: float = 0.01,
        on_epoch: Callable[[EpochStats], None] | None = None,
        checkpoint_dir: str | Path | None = None,
        combination: str = "fisher",
        checkpoint_fingerprint: str | None = None,
    ) -> None:
        """``checkpoint_dir``: a checkpoint per epoch, resumed from when present (``train_hybrid``);
        ``checkpoint_fingerprint`` (``training.training_fingerprint``): a checkpoint of another
        training there is refused instead of resumed."""
        if combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {COMBINATIONS}, got {combination!r}")
        self.combination = combination
        self.part_quantiles_: np.ndarray | None = None  # [parts, CALIBRATION_POINTS] of log1p(part)
        self.tail_start_: np.ndarray | None = None  # [parts] log1p(part) where the model's tail starts
        self.model_config = model_config
        self.train_config = train_config
        self.fit_fpr = fit_fpr
        self.on_epoch = on_epoch
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_fingerprint = checkpoint_fingerprint
        self.model: HybridGNNLSTM | None = None
        self.history: list[EpochStats] = []
        self.threshold_: float | None = None
        self.calibration_: np.ndarray | None = None

    def fit(self, windows: GraphWindows, idx: np.ndarray | None = None) -> HybridDetector:
        # Baselines built from this class train on the windows' own split too (idx ignored);
        # training uses the windows' own time split (train, early stopping on validation).
        self.model, self.history = train_hybrid(
            windows, self.model_config, self.train_config, self.on_epoch, checkpoint_dir=self.checkpoint_dir,
            fingerprint=self.checkpoint_fingerprint,
        )
        self.model_config = self.model.config
        return self._fit_thresholds(windows, idx)

    def _fit_thresholds(self, windows: GraphWindows, idx: np.ndarray | None) -> HybridDetector:
        train_idx = windows.split_index("train") if idx is None else idx
        # Each score part's distribution on the validation window (unlabelled, after training in
        # time) for the tail_sum combination; no label is used.
        val_idx = windows.split_index("validation")
        parts = score_components(self.model, windows, val_idx if len(val_idx) else train_idx)
        self.fit_part_tails(parts)
        self.threshold_ = threshold_at_fpr(self.decision_function(windows, train_idx), self.fit_fpr)
        # Calibration: where a score falls among validation scores (the later, unseen period),
        # from the parts already computed above.
        reference = self.combine(parts)
        self.calibration_ = np.quantile(reference[np.isfinite(reference)], np.linspace(0, 1, CALIBRATION_POINTS))
        return self

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """Share of validation events that scored at least as high (1 = ordinary, ~0 = rarer
        than anything in validation): comparable across models and retrains."""
        if self.calibration_ is None:
            raise RuntimeError("HybridDetector: fit() before calibrate()")
        rank = np.searchsorted(self.calibration_, np.asarray(scores, dtype=float), side="left")
        return 1.0 - rank / len(self.calibration_)

    def fine_tune(self, windows: GraphWindows, epochs: int = 2) -> HybridDetector:
        """Adapt a trained (or loaded) model to new data: a short run from its current weights,
        then new thresholds and calibration on the new data. For a new environment, where a
        model trained elsewhere scores out of the box but should learn local habits."""
        if self.model is None:
            raise RuntimeError("HybridDetector: fine_tune() needs a trained or loaded model")
        from dataclasses import replace

        from anomaly_pipeline.training import CurriculumStage

        stage = CurriculumStage("fine_tune", epochs=epochs, negatives="mixed")
        self.train_config = replace(self.train_config, stages=(stage,))
        init = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        self.model, self.history = train_hybrid(windows, self.model_config, self.train_config, self.on_epoch,
                                                init_state=init)
        return self._fit_thresholds(windows, None)

    def fit_part_tails(self, parts: np.ndarray) -> HybridDetector:
        """Learn each part's distribution on unlabelled reference events (the validation window):
        quantiles of log1p(part), and where its top ``TAIL_SHARE`` (the model's tail) starts."""
        values = _log_parts(parts)
        grid = np.linspace(0, 1, CALIBRATION_POINTS)
        self.part_quantiles_ = np.stack([np.quantile(values[:, j], grid) for j in range(values.shape[1])])
        self.tail_start_ = np.quantile(values, 1.0 - TAIL_SHARE, axis=0)
        return self

    @staticmethod
    def _model_scale(j: int) -> bool:
        return SCORE_PARTS[j] in MODEL_SCALE_PARTS

    def part_log_pvalues(self, parts: np.ndarray) -> np.ndarray:
        """[n, parts]: log of each part's upper-tail probability among the reference values (see
        ``COMBINATIONS``), in log space so that nothing underflows or ties far beyond the
        reference; 0 for a part that is constant on the reference events."""
        return self._log_pvalues(_log_parts(parts))

    def _log_pvalues(self, values: np.ndarray) -> np.ndarray:
        """``part_log_pvalues`` of parts already on the log1p scale (``_log_parts``)."""
        if self.part_quantiles_ is None or self.tail_start_ is None:
            raise RuntimeError("HybridDetector: fit() before part_pvalues()")
        out = np.zeros(values.shape)
        for j, q in enumerate(self.part_quantiles_):
            if self._model_scale(j):
                out[:, j] = -np.expm1(values[:, j])  # the part itself, nats: p = exp(-part)
                continue
            if q[-1] <= q[0]:
                continue  # constant on the reference (the supervised head when it was not trained)
            x = values[:, j]
            u = self.tail_start_[j]
            share = max(1.0 - np.searchsorted(q, u, "left") / len(q), 0.5 / len(q))
            # Share of reference values >= x below the tail start; beyond it one factor e per nat.
            column = np.log(np.maximum(1.0 - np.searchsorted(q, x, "left") / len(q), share))
            tail = x > u
            if tail.any():
                column[tail] = np.log(share) - (np.expm1(x[tail]) - np.expm1(u))
            out[:, j] = column
        return out

    def part_pvalues(self, parts: np.ndarray) -> np.ndarray:
        """``exp(part_log_pvalues)``: probabilities (far tails underflow to 0 here, not there)."""
        return np.exp(self.part_log_pvalues(parts))

    def combine(self, parts: np.ndarray) -> np.ndarray:
        """One score per row of ``parts`` ([n, len(SCORE_PARTS)] nats), higher = stranger."""
        parts = np.nan_to_num(np.asarray(parts, dtype=float))
        if self.combination == "surprisal" or self.part_quantiles_ is None:
            return parts.sum(axis=1)
        values = _log_parts(parts)
        tie_break = TIE_BREAK * values.sum(axis=1)
        log_p = self._log_pvalues(values)
        if self.combination == "fisher":
            return -log_p.sum(axis=1) + tie_break
        return (1.0 - np.exp(log_p)).sum(axis=1) + tie_break

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("HybridDetector: call fit() or load() before scoring")
        # Combined chunk by chunk (``combine`` is row-wise): no parts array of every event.
        return score_components(self.model, windows, idx, reduce=self.combine)

    def save(self, directory: str | Path) -> Path:
        """Weights as a plain state dict plus JSON config: loading executes no pickled code."""
        if self.model is None:
            raise RuntimeError("HybridDetector: nothing to save before fit()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(
            json.dumps(
                {
                    "detector": self.name,
                    "model_config": self.model_config.to_dict(),
                    "threshold": self.threshold_,
                    "calibration_quantiles": None if self.calibration_ is None else self.calibration_.tolist(),
                    "fit_fpr": self.fit_fpr,
                    "combination": self.combination,
                    "part_quantiles": None if self.part_quantiles_ is None else self.part_quantiles_.tolist(),
                    "tail_start": None if self.tail_start_ is None else self.tail_start_.tolist(),
                    "score_parts": list(SCORE_PARTS),
                    "node_features": list(NODE_FEATURES),
                    "event_features": list(EVENT_FEATURES),
                },
                indent=2,
            )
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> HybridDetector:
        directory = Path(directory)
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if meta.get("event_features") != list(EVENT_FEATURES) or meta.get("node_features") != list(NODE_FEATURES):
            raise ValueError(
                f"model at {directory} was trained with different features than this code computes; "
                "retrain it with this version of anomaly-pipeline"
            )
        det = cls(HybridConfig(**meta["model_config"]), fit_fpr=meta["fit_fpr"],
                  combination=meta.get("combination", "fisher"))
        if meta.get("score_parts", list(SCORE_PARTS)) != list(SCORE_PARTS):
            raise ValueError(
                f"model at {directory} scores the parts {meta.get('score_parts')}, this code {list(SCORE_PARTS)}; "
                "retrain it with this version of anomaly-pipeline"
            )
        if meta.get("part_quantiles") is not None:
            det.part_quantiles_ = np.asarray(meta["part_quantiles"], dtype=float)
        if meta.get("tail_start") is not None:
            det.tail_start_ = np.asarray(meta["tail_start"], dtype=float)
        det.model = HybridGNNLSTM(det.model_config)
        state = torch.load(directory / WEIGHTS_FILE, map_location=device, weights_only=True)
        det.model.load_state_dict(state)
        det.model.to(device).eval()
        det.threshold_ = meta["threshold"]
        if meta.get("calibration_quantiles") is not None:
            det.calibration_ = np.asarray(meta["calibration_quantiles"], dtype=float)
        return det


def static_gnn_detector(train_config: TrainConfig = TrainConfig(), **model_kwargs) -> HybridDetector:
    """Baseline: the spatial encoder alone (no LSTM): the latest snapshot's embeddings only."""
    det = HybridDetector(HybridConfig(fusion="spatial_only", **model_kwargs), train_config)
    det.name = "static_gnn"
    return det


def lstm_only_detector(train_config: TrainConfig = TrainConfig(), **model_kwargs) -> HybridDetector:
    """Baseline: the temporal encoder alone (no message passing): each entity's own features."""
    det = HybridDetector(HybridConfig(hops=0, **model_kwargs), train_config)
    det.name = "lstm_only"
    return det


class IsolationForestDetector:
    """Isolation Forest (scikit-learn) on the per-event features, no graph, no sequence."""

    name = "isolation_forest"

    def __init__(self, n_estimators: int = 200, max_samples: int = 4096, fit_fpr: float = 0.01, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.fit_fpr = fit_fpr
        self.seed = seed
        self.forest: IsolationForest | None = None
        self.threshold_: float | None = None

    def fit(self, windows: GraphWindows, idx: np.ndarray) -> IsolationForestDetector:
        x = windows.event_x[idx]
        self.forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(x)),
            random_state=self.seed,
            n_jobs=1,
        ).fit(x)
        self.threshold_ = threshold_at_fpr(self.decision_function(windows, idx), self.fit_fpr)
        return self

    def decision_function(self, windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
        if self.forest is None:
            raise RuntimeError("IsolationForestDetector: call fit() before scoring")
        return -self.forest.score_samples(windows.event_x[idx])
