"""Time-ordered evaluation of detectors on the same split.

Protocol: detectors fit on the training split; each one's alert threshold is the score quantile
on the *validation* split at a target false-positive rate (validation scores only, never a label);
metrics are computed on the *test* split, which comes after both in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from anomaly_pipeline.detectors import Detector, threshold_at_fpr
from anomaly_pipeline.graph import GraphWindows


@dataclass
class EvaluationReport:
    """One row per (detector, target FPR) plus the raw test scores for plots."""

    table: pd.DataFrame
    test_labels: np.ndarray
    test_scores: dict[str, np.ndarray] = field(default_factory=dict)
    campaign_latency: pd.DataFrame = field(default_factory=pd.DataFrame)

    def metrics(self) -> dict[str, dict[str, float]]:
        """Per detector: roc_auc, average_precision and the threshold metrics at the first FPR."""
        out: dict[str, dict[str, float]] = {}
        for name, rows in self.table.groupby("detector", sort=False):
            first = rows.iloc[0]
            out[str(name)] = {
                k: float(first[k])
                for k in ("roc_auc", "average_precision", "tpr", "fpr", "precision", "recall", "f1", "alerts_per_day")
            }
        return out

    def markdown(self) -> str:
        cols = ["detector", "roc_auc", "average_precision", "target_fpr", "threshold", "tpr", "fpr",
                "precision", "f1", "alerts_per_day"]
        return _markdown_table(self.table[cols])

    def plot_curves(self, path: str | Path) -> Path:
        """ROC and precision-recall curves of every detector on the test split, as one PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.5))
        y = self.test_labels
        for name, scores in self.test_scores.items():
            fpr, tpr, _ = roc_curve(y, scores)
            prec, rec, _ = precision_recall_curve(y, scores)
            ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, scores):.3f})")
            ax_pr.plot(rec, prec, label=f"{name} (AP {average_precision_score(y, scores):.3f})")
        ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax_roc.set(xscale="log", xlim=(1e-4, 1), xlabel="false-positive rate (log)", ylabel="true-positive rate",
                   title="ROC on the test window")
        ax_pr.set(xlabel="recall", ylabel="precision", title=f"Precision-recall (attack share {y.mean():.4f})")
        for ax in (ax_roc, ax_pr):
            ax.legend(loc="best", fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _markdown_table(frame: pd.DataFrame) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if np.isfinite(v) else "n/a"
        return str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def evaluate_detectors(
    windows: GraphWindows,
    detectors: list[Detector],
    target_fprs: tuple[float, ...] = (0.01,),
) -> EvaluationReport:
    """Score validation and test events with every (fitted) detector and compare them."""
    val_idx = windows.split_index("validation")
    test_idx = windows.split_index("test")
    y = windows.labels[test_idx]
    known = np.isfinite(y)
    if not known.any() or np.nansum(y) == 0 or np.nansum(y) == known.sum():
        raise ValueError(
            "the test window needs labelled attacks and benign events to compute ROC-AUC and AP; "
            "use a source with labels (the synthetic generator with attacks enabled) or more days"
        )
    test_idx, y = test_idx[known], y[known].astype(int)
    days = max((windows.events["ts"].iloc[test_idx].max() - windows.events["ts"].iloc[test_idx].min()).total_seconds()
               / 86400.0, 1 / 24)

    rows, test_scores = [], {}
    for det in detectors:
        val_scores = det.decision_function(windows, val_idx)
        scores = det.decision_function(windows, test_idx)
        test_scores[det.name] = scores
        auc, ap = float(roc_auc_score(y, scores)), float(average_precision_score(y, scores))
        for fpr_target in target_fprs:
            thr = threshold_at_fpr(val_scores, fpr_target)
            alert = scores > thr
            tp = int((alert & (y == 1)).sum())
            fp = int((alert & (y == 0)).sum())
            fn = int((~alert & (y == 1)).sum())
            tn = int((~alert & (y == 0)).sum())
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            rows.append(
                {
                    "detector": det.name,
                    "roc_auc": auc,
                    "average_precision": ap,
                    "target_fpr": fpr_target,
                    "threshold": thr,
                    "tpr": recall,
                    "fpr": fp / (fp + tn) if fp + tn else 0.0,
                    "precision": precision,
                    "recall": recall,
                    "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                    "alerts_per_day": float(alert.sum()) / days,
                    "test_events": len(y),
                    "test_attacks": int(y.sum()),
                }
            )
    report = EvaluationReport(table=pd.DataFrame(rows), test_labels=y, test_scores=test_scores)
    report.campaign_latency = _campaign_latency(windows, test_idx, report)
    return report


def _campaign_latency(windows: GraphWindows, test_idx: np.ndarray, report: EvaluationReport) -> pd.DataFrame:
    """Per detector and campaign: time from the first attack event in test to the first alert."""
    events = windows.events.iloc[test_idx]
    detail = events["label_detail"].astype("string")
    campaign = detail.str.split(":").str[0]
    # Integer nanoseconds once: a tz-aware column converts to one Python object per row otherwise.
    ts_ns = pd.DatetimeIndex(events["ts"]).asi8
    masks = {name: (campaign == name).fillna(False).to_numpy() for name in sorted(campaign.dropna().unique())}
    rows = []
    first_rows = report.table.groupby("detector", sort=False).head(1)
    for _, r in first_rows.iterrows():
        scores = report.test_scores[r["detector"]]
        alerted = scores > r["threshold"]
        for name, m in masks.items():
            hits = ts_ns[m & alerted]
            rows.append(
                {
                    "detector": r["detector"],
                    "campaign": name,
                    "attack_events": int(m.sum()),
                    "detected_events": int(len(hits)),
                    "latency_hours": float((hits.min() - ts_ns[m].min()) / 3.6e12) if len(hits) else float("nan"),
                }
            )
    return pd.DataFrame(rows)
