"""registered_model: the trained hybrid logged to MLflow and registered with aliases."""


import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import mlflow

from anomaly_pipeline import registry
from anomaly_pipeline.graph import GraphWindows
from anomaly_pipeline.mlflow_model import model_signature, to_model_input

from .common import OWNERS
from .evaluation import ModelEvaluation
from .resources import MlflowResource, StateResource
from .training import TrainedHybrid

MODEL_CODE = Path(registry.__file__).with_name("mlflow_model.py")


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


@dg.asset(group_name="registry", kinds={"mlflow"}, owners=OWNERS)
def registered_model(
    context: dg.AssetExecutionContext,
    graph_windows: GraphWindows,
    hybrid_model: TrainedHybrid,
    model_evaluation: ModelEvaluation,
    mlflow_resource: MlflowResource,
    state: StateResource,
) -> dg.Output[RegisteredModel]:
    """The hybrid model in MLflow: parameters, per-epoch metrics, the evaluation table and plots,
    weights as a pyfunc (state dict + JSON, no pickle); a new version aliased `challenger`,
    and `champion` when the quality gate passes and it is at least as good as the champion."""
    config = mlflow_resource.registry_config()
    client = registry.configure(config)
    ts = graph_windows.events["ts"]
    train_ts = ts[graph_windows.events["split"] == "train"]
    tags = {"dagster_run_id": context.run_id, "data_window": f"{ts.min()}..{ts.max()}",
            "train_window": f"{train_ts.min()}..{train_ts.max()}"}
    work = state.run_dir("reports", context.run_id)
    with registry.training_run(config, run_name=f"hybrid-{context.run_id[:8]}", tags=tags) as run:
        mlflow.log_params({k: v for k, v in hybrid_model.params.items()})
        mlflow.log_params({f"window_{k}": v for k, v in graph_windows.config.__dict__.items()})
        for stats in hybrid_model.history:
            mlflow.log_metrics({"train_loss": stats.train_loss, "validation_loss": stats.validation_loss,
                                "validation_link_auc": stats.validation_link_auc,
                                f"stage.{stats.stage}.validation_loss": stats.validation_loss}, step=stats.epoch)
        # Stage boundaries: the first global epoch of each curriculum stage.
        boundaries = {h.stage: h.epoch for h in reversed(hybrid_model.history)}
        mlflow.set_tags({f"curriculum.stage_start.{name}": str(epoch) for name, epoch in boundaries.items()})
        for detector, values in model_evaluation.metrics.items():
            mlflow.log_metrics({f"{detector}.{k}": v for k, v in values.items()})
        hybrid_metrics = model_evaluation.metrics[model_evaluation.hybrid_name]
        mlflow.log_metrics({"roc_auc": hybrid_metrics["roc_auc"], "average_precision": hybrid_metrics["average_precision"],
                            "train_seconds": hybrid_model.train_seconds})
        mlflow.log_text(model_evaluation.markdown, "evaluation/comparison.md")
        mlflow.log_table(model_evaluation.table, "evaluation/comparison.json")
        mlflow.log_artifact(str(model_evaluation.plot_path), "evaluation")
        if hybrid_model.curve_path is not None:
            mlflow.log_artifact(str(hybrid_model.curve_path), "training")
        window_file = work / "window_config.json"
        window_file.write_text(json.dumps(graph_windows.config.__dict__))
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"detector": str(hybrid_model.path), "window_config": str(window_file)},
            signature=model_signature(),
            input_example=to_model_input(graph_windows.events.head(40)),
            pip_requirements=["anomaly-pipeline"],
        )
        run_id = run.info.run_id
    version = registry.register_version(client, config, run_id, "model", tags=tags,
                                        description=model_evaluation.gate_reason)
    decision = registry.promote(client, config, version.version, gate_passed=model_evaluation.gate_passed,
                                challenger_score=hybrid_metrics["average_precision"])
    aliases = registry.aliases_of(client, config.model_name, version.version)
    context.log.info(f"{config.model_name} version {version.version}: {decision.decision} ({decision.reason})")
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
            "mlflow_tracking_uri": config.tracking_uri,
            "model_uri": f"models:/{config.model_name}/{version.version}",
        },
    )
