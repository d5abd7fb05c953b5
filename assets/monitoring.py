"""drift_report: Evidently on features and scores, newest window against the training reference."""


import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from pydantic import Field

from anomaly_pipeline import registry
from anomaly_pipeline.drift import compute_drift, drift_frame
from anomaly_pipeline.graph import GraphWindows

from .common import OWNERS, md_table
from .registry import RegisteredModel
from .resources import MlflowResource, StateResource
from .scoring import drift_verdict
from .training import TrainedHybrid


class DriftConfig(dg.Config):
    """The newest `current_hours` of events are compared with the training split."""

    current_hours: float = Field(default=24.0, description="the newest hours of events compared with the training split")
    # Measured on the synthetic default (14 monitored columns): 0.143 both without drift
    # (pair_first_seen, anomaly_score) and with the reorganisation switch on from day 8 (hour_sin,
    # hour_cos), so the share alone does not separate them yet; 0.2 = three or more columns.
    drift_share_threshold: float = Field(default=0.2, description="share of drifted columns at or above which the data counts as drifted (Evidently's own dataset_drift verdict uses 0.5; this threshold is the one that alerts and retrains)")


@dg.asset(
    group_name="monitoring",
    kinds={"evidently"},
    owners=OWNERS,
    check_specs=[dg.AssetCheckSpec("drift_share_below_threshold", asset="drift_report",
                                   description="Warns when the share of drifted columns passes the threshold.")],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    graph_windows: GraphWindows,
    hybrid_model: TrainedHybrid,
    registered_model: RegisteredModel,
    mlflow_resource: MlflowResource,
    state: StateResource,
):
    """Evidently data-drift report of event features and anomaly scores: the newest window of
    events against the model's training reference. `drift_share` drives the drift sensor."""
    ts = graph_windows.events["ts"]
    newest = ts >= ts.max() - pd.Timedelta(hours=config.current_hours)
    ref_idx = graph_windows.split_index("train")
    cur_idx = np.flatnonzero(newest.to_numpy())
    detector = hybrid_model.load()
    scores = detector.decision_function(graph_windows, np.concatenate([ref_idx, cur_idx]))
    reference = drift_frame(graph_windows, ref_idx, scores[: len(ref_idx)])
    current = drift_frame(graph_windows, cur_idx, scores[len(ref_idx):])
    out_dir = state.run_dir("reports", context.run_id)
    result = compute_drift(reference, current, out_dir, drift_share_threshold=config.drift_share_threshold)
    registry.configure(mlflow_resource.registry_config())
    with mlflow.start_run(run_id=registered_model.run_id) as run:
        mlflow.log_artifact(str(result.html_path), "drift")
        mlflow.log_metric("drift_share", result.drift_share)
        experiment_id = run.info.experiment_id
    context.log.info(f"drift share {result.drift_share:.3f}: drifted {result.drifted_columns}")
    yield dg.Output(
        result.metadata(),
        metadata={
            "drift_share": result.drift_share,
            "drift_share_threshold": config.drift_share_threshold,
            "dataset_drift": result.dataset_drift,
            "verdict": drift_verdict(result.drift_share, config.drift_share_threshold, result.dataset_drift),
            "drifted_columns": ", ".join(result.drifted_columns) or "none",
            "n_columns": result.n_columns,
            "reference_window": f"{ts.iloc[ref_idx].min()} .. {ts.iloc[ref_idx].max()}",
            "current_window": f"{ts.iloc[cur_idx].min()} .. {ts.iloc[cur_idx].max()}",
            "report_html": dg.MetadataValue.path(str(result.html_path)),
            "report_file_url": dg.MetadataValue.url(result.html_path.resolve().as_uri()),
            "mlflow_artifact": f"runs:/{registered_model.run_id}/drift/{result.html_path.name}",
            **mlflow_resource.links(run_id=registered_model.run_id, experiment_id=experiment_id,
                                    artifact=f"drift/{result.html_path.name}"),
            "champion_version": registered_model.version if "champion" in registered_model.aliases else "see registry",
            "model_version": registered_model.version,
            "column_scores": md_table(result.column_scores.round(4), 40),
        },
    )
    passed = result.drift_share < config.drift_share_threshold
    yield dg.AssetCheckResult(
        check_name="drift_share_below_threshold",
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"drift_share": result.drift_share, "threshold": config.drift_share_threshold},
        description=f"drift share {result.drift_share:.3f} vs threshold {config.drift_share_threshold}",
    )
