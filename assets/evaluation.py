"""model_evaluation: every detector on the same time-ordered test window, plus the quality gate."""


from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from anomaly_pipeline.evaluation import evaluate_detectors
from anomaly_pipeline.graph import GraphWindows

from .common import OWNERS, md_image, md_table
from .resources import StateResource
from .training import TrainedHybrid


class EvaluationConfig(dg.Config):
    """Alert thresholds are set on validation scores at these false-positive rates."""

    target_fprs: list[float] = Field(default_factory=lambda: [0.01, 0.001], description="false-positive rates on validation scores at which alert thresholds (and TPR/precision) are reported")
    gate_margin: float = Field(
        default=0.0,
        description="the hybrid's AP must exceed every baseline's AP by this much (absolute); a failing gate "
        "blocks registration",
    )


@dataclass
class ModelEvaluation:
    table: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    markdown: str
    plot_path: Path
    campaign_latency: pd.DataFrame
    gate_passed: bool
    gate_reason: str
    hybrid_name: str
    extra: dict = field(default_factory=dict)


def _top_alerts_explained(hybrid, graph_windows: GraphWindows, test_scores, n: int = 10) -> pd.DataFrame:
    """The n highest-scoring test events with the model's own reasons, for analysts."""
    import numpy as np

    from anomaly_pipeline.explain import explain_events

    test_idx = graph_windows.split_index("test")
    known = np.isfinite(graph_windows.labels[test_idx])
    test_idx = test_idx[known]
    order = np.argsort(-test_scores)[:n]
    top = test_idx[order]
    explanations = explain_events(hybrid.model, graph_windows, top)
    events = graph_windows.events.iloc[top]
    return pd.DataFrame(
        {
            "ts": events["ts"].astype(str).to_numpy(),
            "relation": events["relation"].to_numpy(),
            "user": events["user"].astype(str).to_numpy(),
            "src_host": events["src_host"].astype(str).to_numpy(),
            "dst_host": events["dst_host"].astype(str).to_numpy(),
            "score": np.round(test_scores[order], 4),
            "surprisal_nats": [round(e.score, 2) for e in explanations],
            "truth": events["label_detail"].fillna("benign").astype(str).to_numpy(),
            "reasons": ["; ".join(e.reasons) or "(combined surprise)" for e in explanations],
        }
    )


@dg.asset(
    group_name="evaluation",
    kinds={"scikitlearn", "pytorch"},
    owners=OWNERS,
    check_specs=[
        dg.AssetCheckSpec(
            "hybrid_beats_baselines",
            asset="model_evaluation",
            description="Quality gate (blocking): the hybrid model's average precision on the test window must "
            "exceed every baseline's by gate_margin; when it does not, registered_model does not run, so a "
            "worse model is never registered, let alone made champion.",
            blocking=True,
        )
    ],
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    graph_windows: GraphWindows,
    hybrid_model: TrainedHybrid,
    baseline_models: list,
    state: StateResource,
):
    """ROC-AUC, average precision, and TPR / FPR / precision / F1 at thresholds chosen on the
    validation window only, for the hybrid model and every baseline, on the later test window."""
    hybrid = hybrid_model.load()
    report = evaluate_detectors(graph_windows, [hybrid, *baseline_models], tuple(config.target_fprs))
    plot = report.plot_curves(state.run_dir("reports", context.run_id) / "roc_pr.png")
    metrics = report.metrics()
    hybrid_ap = metrics[hybrid.name]["average_precision"]
    best_name, best_ap = max(((n, m["average_precision"]) for n, m in metrics.items() if n != hybrid.name),
                             key=lambda item: item[1])
    passed = hybrid_ap >= best_ap + config.gate_margin
    reason = (f"hybrid AP {hybrid_ap:.4f} vs best baseline {best_name} AP {best_ap:.4f} "
              f"(margin {config.gate_margin}): {'pass' if passed else 'fail'}")
    context.log.info(reason)
    evaluation = ModelEvaluation(
        table=report.table, metrics=metrics, markdown=report.markdown(), plot_path=plot,
        campaign_latency=report.campaign_latency, gate_passed=passed, gate_reason=reason, hybrid_name=hybrid.name,
    )
    top_alerts = _top_alerts_explained(hybrid, graph_windows, report.test_scores[hybrid.name])
    evaluation.extra["top_alerts"] = top_alerts
    yield dg.Output(
        evaluation,
        metadata={
            "comparison": dg.MetadataValue.md(evaluation.markdown),
            "top_alerts_explained": md_table(top_alerts, 10),
            "curves": md_image(plot, "ROC and precision-recall on the test window"),
            "campaign_detection": md_table(report.campaign_latency.round(2), 40),
            "hybrid_roc_auc": metrics[hybrid.name]["roc_auc"],
            "hybrid_average_precision": hybrid_ap,
            "best_baseline": best_name,
            "best_baseline_average_precision": best_ap,
            "test_events": int(report.table["test_events"].iloc[0]),
            "test_attacks": int(report.table["test_attacks"].iloc[0]),
            "gate_passed": passed,
            "gate_reason": reason,
        },
    )
    yield dg.AssetCheckResult(
        check_name="hybrid_beats_baselines",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"hybrid_average_precision": hybrid_ap, "best_baseline": best_name,
                  "best_baseline_average_precision": best_ap, "margin": config.gate_margin},
        description=reason,
    )
