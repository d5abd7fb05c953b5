"""registered_model: the trained hybrid logged to MLflow and registered with aliases."""


from dataclasses import dataclass, field

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from anomaly_pipeline import registry
from anomaly_pipeline.alerts import AlertSink
from anomaly_pipeline.drift import drift_frame
from anomaly_pipeline.graph import EVENT_FEATURES, GraphWindows
from anomaly_pipeline.mlflow_model import load_pyfunc, log_hybrid_model, to_model_input, warm_history_frame
from anomaly_pipeline.model_card import ModelCard
from anomaly_pipeline.pyfunc_loader import DIGEST_TAG
from anomaly_pipeline.redact import redact_url
from anomaly_pipeline.schema import EVENT_COLUMNS

from .common import OWNERS
from .evaluation import ModelEvaluation
from .resources import EventSourceResource, MlflowResource, StateResource
from .training import TrainedHybrid


@dataclass
class RegisteredModel:
    name: str
    version: str
    run_id: str
    aliases: list[str]
    decision: str
    reason: str
    tracking_uri: str
    extra: dict = field(default_factory=dict)


# Per detector, the figures worth a chart (the full table with thresholds and counts is the
# evaluation/comparison artifact): 58 single-bar charts, many of them zeros, helped nobody.
EVAL_METRICS = ("roc_auc", "average_precision", "tpr", "precision", "alerts_per_day")  # tpr etc. at the first FPR


@dg.asset(group_name="registry", kinds={"mlflow"}, owners=OWNERS)
def registered_model(
    context: dg.AssetExecutionContext,
    graph_windows: GraphWindows,
    hybrid_model: TrainedHybrid,
    model_evaluation: ModelEvaluation,
    mlflow_resource: MlflowResource,
    state: StateResource,
    event_source: EventSourceResource,
) -> dg.Output[RegisteredModel]:
    """The hybrid model in MLflow: parameters, per-epoch metrics, the evaluation table and plots,
    the Great Expectations summary, a model card, the drift reference (training features and
    scores), weights as a pyfunc (state dict + JSON, no pickle) with the newest 30 days of its
    events for the service's warm start (Parquet, covered by the weights' digest); a new version
    aliased `challenger`, and `champion` when the quality gate passes and it is at least as good
    as the champion."""
    config = mlflow_resource.registry_config()
    client = registry.configure(config)
    ts = graph_windows.events["ts"]
    train_ts = ts[graph_windows.events["split"] == "train"]
    tags = {"dagster_run_id": context.run_id, "data_window": f"{ts.min()}..{ts.max()}",
            "train_window": f"{train_ts.min()}..{train_ts.max()}", registry.GIT_COMMIT_TAG: registry.git_commit()}
    run_tags = {**tags, "mlflow.note.content": _run_description(context.run_id, tags, model_evaluation)}
    validation = _validation_summary(context)
    # The drift reference: this model's own scores and features on its training split.
    train_idx = graph_windows.split_index("train")
    reference = drift_frame(graph_windows, train_idx, hybrid_model.load().decision_function(graph_windows, train_idx))
    with registry.training_run(config, run_name=f"hybrid-{context.run_id[:8]}", tags=run_tags) as run:
        mlflow.log_params({k: v for k, v in hybrid_model.params.items()})
        mlflow.log_params({f"window_{k}": v for k, v in graph_windows.config.__dict__.items()})
        _log_datasets(graph_windows, event_source.describe())
        # Metric names are grouped by their prefix in the MLflow UI: the headline figures first,
        # training curves under train/, every detector's evaluation under eval/<detector>/.
        for stats in hybrid_model.history:
            mlflow.log_metrics({"train/loss": stats.train_loss, "train/validation_loss": stats.validation_loss,
                                "train/validation_link_auc": stats.validation_link_auc,
                                f"train/stage/{stats.stage}/validation_loss": stats.validation_loss}, step=stats.epoch)
        # Stage boundaries: the first global epoch of each curriculum stage.
        boundaries = {h.stage: h.epoch for h in reversed(hybrid_model.history)}
        mlflow.set_tags({f"curriculum.stage_start.{name}": str(epoch) for name, epoch in boundaries.items()})
        for detector, values in model_evaluation.metrics.items():
            mlflow.log_metrics({f"eval/{detector}/{k}": v for k, v in values.items() if k in EVAL_METRICS})
        hybrid_metrics = model_evaluation.metrics[model_evaluation.hybrid_name]
        mlflow.log_metrics({"roc_auc": hybrid_metrics["roc_auc"], "average_precision": hybrid_metrics["average_precision"],
                            "train_seconds": hybrid_model.train_seconds})
        mlflow.log_text(model_evaluation.markdown, "evaluation/comparison.md")
        mlflow.log_table(model_evaluation.table, "evaluation/comparison.json")
        mlflow.log_artifact(str(model_evaluation.plot_path), "evaluation")
        if hybrid_model.curve_path is not None:
            mlflow.log_artifact(str(hybrid_model.curve_path), "training")
        mlflow.log_dict(validation, "validation/gx_summary.json")
        registry.log_drift_reference(reference)
        card = ModelCard(
            model_name=config.model_name, version=None, data_window=tags["data_window"],
            train_window=tags["train_window"],
            events={s: int((graph_windows.events["split"] == s).sum()) for s in ("train", "validation", "test")},
            features=list(EVENT_FEATURES), metrics=model_evaluation.metrics, hybrid_name=model_evaluation.hybrid_name,
            gate_passed=model_evaluation.gate_passed, gate_reason=model_evaluation.gate_reason,
            params=hybrid_model.params, validation={k: v for k, v in validation.items() if k != "gx_summary"},
            lineage={"git_commit": tags[registry.GIT_COMMIT_TAG], "dagster_run_id": context.run_id,
                     "mlflow_run_id": run.info.run_id},
        )
        # The loader is the installed package (pyfunc_loader): no code in the artifact, and the
        # data's SHA-256 digest goes to the version's tags, checked on every load.
        # The newest events it saw, replayed by `serve` and `stream` before their first event.
        warm_history = warm_history_frame(graph_windows.events)
        mlflow.log_metric("warm_history_events", len(warm_history))
        # Requirements: every dependency pinned, the project as its own wheel by SHA-256 (kept in
        # the state folder's wheels/, not in the artifact store), never resolved from an index.
        _, digest = log_hybrid_model(hybrid_model.path, graph_windows.config,
                                     input_example=to_model_input(graph_windows.events.head(40)),
                                     wheelhouse=state.paths.home / "wheels", warm_history=warm_history)
        run_id = run.info.run_id
    version = registry.register_version(client, config, run_id, "model", tags={**tags, DIGEST_TAG: digest},
                                        description=model_evaluation.gate_reason)
    card.version = version.version
    client.log_text(run_id, card.to_markdown(), "model_card.md")  # logged once the version is known
    champion_score = _champion_score_on_test_window(context, client, config, graph_windows, version.version)
    decision = registry.promote(client, config, version.version, gate_passed=model_evaluation.gate_passed,
                                challenger_score=hybrid_metrics["average_precision"], champion_score=champion_score)
    aliases = registry.aliases_of(client, config.model_name, version.version)
    context.log.info(f"{config.model_name} version {version.version}: {decision.decision} ({decision.reason})")
    if decision.decision == "gate_failed":
        AlertSink.from_env(log=context.log).send(
            "quality_gate", f"{config.model_name} version {version.version} failed the quality gate",
            {"model_version": version.version, "reason": model_evaluation.gate_reason,
             "champion_version": decision.champion_version, "dagster_run_id": context.run_id},
        )
    return dg.Output(
        RegisteredModel(name=config.model_name, version=version.version, run_id=run_id, aliases=aliases,
                        decision=decision.decision, reason=decision.reason, tracking_uri=config.tracking_uri),
        metadata={
            "model_name": config.model_name,
            "model_version": version.version,
            "aliases": ", ".join(aliases) or "none",
            "promotion_decision": decision.decision,
            "promotion_reason": decision.reason,
            "mlflow_run_id": run_id,
            "mlflow_tracking_uri": redact_url(config.tracking_uri),
            **mlflow_resource.links(run_id=run_id, experiment_id=run.info.experiment_id, version=version.version),
            "model_uri": f"models:/{config.model_name}/{version.version}",
            "challenger_score": decision.challenger_score,
            "champion_version_before": decision.champion_version or "none",
            "champion_score_before": decision.champion_score if decision.champion_score is not None else "none",
            "champion_version_after": decision.champion_after or "none",
            "warm_history_events": len(warm_history),
            "warm_history_window": (f"{warm_history['ts'].iloc[0]}..{warm_history['ts'].iloc[-1]}"
                                    if len(warm_history) else "none"),
            "git_commit": tags[registry.GIT_COMMIT_TAG],
            "model_card": dg.MetadataValue.md(card.to_markdown()),
            "gx_validation": dg.MetadataValue.json(validation),
        },
    )


def _run_description(dagster_run_id: str, tags: dict[str, str], evaluation: ModelEvaluation) -> str:
    """The run's description in the MLflow UI (its note): what was trained on what, and the gate."""
    return (f"Hybrid GNN-LSTM trained by Dagster run {dagster_run_id} on {tags['train_window']} "
            f"(data {tags['data_window']}, commit {tags[registry.GIT_COMMIT_TAG][:12]}). Quality gate: "
            f"{evaluation.gate_reason}. The model card (model_card.md) and evaluation/comparison.md say more.")


def _log_datasets(graph_windows: GraphWindows, source: str) -> None:
    """The training, validation and test events as MLflow dataset inputs (schema, profile and digest;
    the rows stay in the pipeline's storage), so the run says what it learned from."""
    columns = [c for c in EVENT_COLUMNS if c in graph_windows.events.columns]
    for split in ("train", "validation", "test"):
        frame = graph_windows.events.loc[graph_windows.events["split"] == split, columns]
        dataset = mlflow.data.from_pandas(frame, source=source, name=f"events-{split}")
        mlflow.log_input(dataset, context="training" if split == "train" else split)


def _champion_score_on_test_window(
    context: dg.AssetExecutionContext, client, config, graph_windows: GraphWindows, new_version: str
) -> float | None:
    """Average precision of the current champion on this run's test window (the challenger's
    evaluation data), so promotion compares both models on the same events. None when there is
    no other champion, no labelled test event, or the champion cannot be loaded (then the
    champion's own recorded score is used and the version's tags say so)."""
    champion = registry.champion_version(client, config.model_name)
    if champion is None or champion == str(new_version):
        return None
    test_idx = graph_windows.split_index("test")
    labels = graph_windows.labels[test_idx]
    known = np.isfinite(labels)
    if not known.any() or len(np.unique(labels[known])) < 2:
        context.log.warning("the test window has no labelled attacks and benign events: champion not re-scored")
        return None
    try:
        _, model = load_pyfunc(f"models:/{config.model_name}@{registry.CHAMPION}")
    except Exception as exc:  # an old or broken champion must not block registering the challenger
        context.log.warning(f"champion version {champion} could not be loaded ({exc}); comparing with its recorded score")
        return None
    events = graph_windows.events
    start = events["ts"].iloc[test_idx].min()
    period = model.score_period(events[list(EVENT_COLUMNS)], start=start)
    by_id = pd.Series(period.scored["score"].to_numpy(), index=period.scored["event_id"].astype(str).to_numpy())
    by_id = by_id[~by_id.index.duplicated()]
    test_ids = events["event_id"].astype(str).to_numpy()[test_idx][known]
    scores = by_id.reindex(test_ids).to_numpy()
    scored = np.isfinite(scores)
    if scored.sum() < len(scores):
        context.log.warning(f"champion scored {int(scored.sum())} of {len(scores)} labelled test events")
    if not scored.any() or len(np.unique(labels[known][scored])) < 2:
        return None
    ap = float(average_precision_score(labels[known][scored].astype(int), scores[scored]))
    context.log.info(f"champion version {champion} on this test window: average_precision {ap:.4f}")
    return ap


def _validation_summary(context: dg.AssetExecutionContext) -> dict:
    """The newest Great Expectations outcome of validated_events (counts, and the expectations from
    the quarantine check's `gx_summary`), read from the Dagster instance; empty when never run."""
    instance = context.instance
    summary: dict = {}
    records = instance.fetch_materializations(dg.AssetKey("validated_events"), limit=1).records
    if records:
        meta = records[0].event_log_entry.asset_materialization.metadata
        for key in ("rows_read", "rows_valid", "rows_quarantined", "quarantine_rate", "gx_success"):
            if key in meta:
                summary[key] = meta[key].value
        summary["dagster_run_id"] = records[0].run_id
    check_key = dg.AssetCheckKey(dg.AssetKey("validated_events"), "quarantine_rate_below_threshold")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key]).get(check_key)
    if latest is not None and latest.event is not None and latest.event.dagster_event is not None \
            and hasattr(latest.event.dagster_event.event_specific_data, "passed"):
        evaluation = latest.event.dagster_event.event_specific_data
        summary["quarantine_check_passed"] = bool(getattr(evaluation, "passed", False))
        gx = getattr(evaluation, "metadata", {}).get("gx_summary")
        if gx is not None:
            summary["gx_summary"] = gx.value
    return summary
