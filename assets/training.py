"""hybrid_model and baseline_models: detectors fit on the training split of graph_windows."""


import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import torch
from pydantic import Field

from anomaly_pipeline.detectors import (
    HybridDetector,
    IsolationForestDetector,
    lstm_only_detector,
    static_gnn_detector,
)
from anomaly_pipeline.graph import GraphWindows
from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.plots import plot_training_history
from anomaly_pipeline.training import (
    CHECKPOINT_FILE,
    DEFAULT_CURRICULUM,
    CurriculumStage,
    EpochStats,
    TrainConfig,
    checkpoint_epochs,
    training_fingerprint,
)

from .common import OWNERS, md_image, md_table
from .resources import StateResource


class CurriculumStageConfig(dg.Config):
    """One curriculum stage: negatives random | hard | mixed, optional shorter history (snapshots),
    optional adversarial feature perturbation (0 = off), coarse (daily) history on or off."""

    name: str = Field(description="stage name (shown in MLflow and the training plot)")
    epochs: int = Field(default=2, description="epochs of this stage")
    negatives: str = Field(default="random", description="negative sampling: random, hard (popular nodes of the right type: plausible but unseen edges) or mixed")
    history: int | None = Field(default=None, description="snapshots of history in this stage; unset = the window config's")
    adversarial_eps: float = Field(default=0.0, description="adversarial feature perturbation (0 = off)")
    multi_scale: bool = Field(default=True, description="coarse (daily) history on in this stage")


def _default_curriculum() -> list[CurriculumStageConfig]:
    return [
        CurriculumStageConfig(name=s.name, epochs=s.epochs, negatives=s.negatives, history=s.history,
                              adversarial_eps=s.adversarial_eps, multi_scale=s.multi_scale)
        for s in DEFAULT_CURRICULUM
    ]


class HybridTrainingConfig(dg.Config):
    """Hyper-parameters of the hybrid GNN-LSTM (shown in the Launchpad)."""

    curriculum: list[CurriculumStageConfig] = Field(default_factory=_default_curriculum,
                                                   description="the curriculum stages, trained in order")
    epochs_per_stage: int | None = Field(default=None, description="overrides every stage's epochs")
    hidden: int = Field(default=32, description="hidden width of every layer")
    hops: int = Field(default=2, description="GNN message-passing layers")
    gat_heads: int = Field(default=2, description="attention heads of the GAT layers")
    attention: bool = Field(default=True, description="GAT attention in the first message-passing layer (False = GCN layers only)")
    heterogeneous: bool = Field(default=True, description="per-relation message passing over the typed graph (False = one homogeneous graph)")
    bidirectional: bool = Field(default=True, description="bidirectional LSTM")
    fusion: str = Field(default="cross_attention", description="how graph and sequence states combine: cross_attention, concat, early or spatial_only")
    multi_scale: bool = Field(default=True, description="coarse (daily) history next to the fine one")
    learning_rate: float = Field(default=3e-3, description="Adam learning rate")
    supervised_weight: float = Field(default=0.0, description="multi-task attack head on labelled events; 0 = off")
    joint: bool = Field(default=True, description="joint end-to-end training; False = sequential")
    chunk_buckets: int = Field(default=12, description="snapshots per training chunk (memory bound)")
    max_events_per_chunk: int = Field(default=4096, description="scored events per chunk (memory bound)")
    patience: int = Field(default=2, description="epochs without validation improvement before a stage stops early")
    seed: int = Field(default=0, description="random seed (weights, sampling)")
    device: str = Field(default="auto", description="auto (CUDA when available), cpu or cuda")
    alert_fpr: float = Field(default=0.01, description="false-positive rate on validation scores that sets the alert threshold")
    min_steps_per_epoch: int = Field(default=40, description="fewest gradient steps an epoch takes (a small data set repeats its chunks)")
    resume: bool = Field(default=False, description="continue an unfinished training (a killed run) from its last "
                         "epoch checkpoint, when one exists for exactly this data, config and code; re-executing a "
                         "failed run resumes anyway. Off: such a checkpoint is discarded and training starts over")


@dataclass
class TrainedHybrid:
    """Where the trained weights are, and how training went."""

    path: Path
    history: list[EpochStats]
    threshold: float
    train_seconds: float
    params: dict = field(default_factory=dict)
    curve_path: Path | None = None

    def load(self) -> HybridDetector:
        return HybridDetector.load(self.path)


@dg.asset(group_name="training", kinds={"pytorch"}, owners=OWNERS, tags={"compute": "gpu-preferred"})
def hybrid_model(
    context: dg.AssetExecutionContext,
    config: HybridTrainingConfig,
    graph_windows: GraphWindows,
    state: StateResource,
) -> dg.Output[TrainedHybrid]:
    """The hybrid detector: GAT + GCN-style heterogeneous message passing per snapshot, a
    bidirectional LSTM with temporal attention over each entity's recent snapshots, cross-attention
    fusion with a learned gate, trained jointly by self-supervised temporal link prediction."""
    model_config = HybridConfig(
        hidden=config.hidden, gat_heads=config.gat_heads, hops=config.hops, attention=config.attention,
        heterogeneous=config.heterogeneous, bidirectional=config.bidirectional, fusion=config.fusion,
        history=graph_windows.config.history, multi_scale=config.multi_scale,
        coarse_history=graph_windows.config.coarse_history,
    )
    stages = tuple(
        CurriculumStage(name=st.name, epochs=config.epochs_per_stage or st.epochs, negatives=st.negatives,
                        history=st.history, adversarial_eps=st.adversarial_eps, multi_scale=st.multi_scale)
        for st in config.curriculum
    )
    train_config = TrainConfig(
        stages=stages, learning_rate=config.learning_rate, chunk_buckets=config.chunk_buckets,
        max_events_per_chunk=config.max_events_per_chunk, patience=config.patience, seed=config.seed,
        supervised_weight=config.supervised_weight, joint=config.joint,
        device=config.device, min_steps_per_epoch=config.min_steps_per_epoch,
    )

    def progress(stats: EpochStats) -> None:
        context.log.info(
            f"epoch {stats.epoch}/{train_config.epochs} ({stats.stage} {stats.stage_epoch}): train loss {stats.train_loss:.4f}, validation loss "
            f"{stats.validation_loss:.4f}, validation link AUC {stats.validation_link_auc:.4f} ({stats.seconds:.1f} s)"
        )

    started = time.perf_counter()
    fingerprint = training_fingerprint(graph_windows, model_config, train_config, alert_fpr=config.alert_fpr)
    resume = config.resume or context.run.parent_run_id is not None  # a re-execution continues
    checkpoint_dir, resumed_from, note = _checkpoint_for(state, fingerprint, resume)
    context.log.info(note)
    detector = HybridDetector(model_config, train_config, fit_fpr=config.alert_fpr, on_epoch=progress,
                              checkpoint_dir=checkpoint_dir, checkpoint_fingerprint=fingerprint)
    detector.fit(graph_windows)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing is left to resume
    seconds = time.perf_counter() - started
    path = detector.save(state.run_dir("models", context.run_id) / "hybrid")
    curve = plot_training_history(detector.history, state.run_dir("reports", context.run_id) / "training.png")
    history = pd.DataFrame([s.to_dict() for s in detector.history])
    best = history.loc[history["validation_loss"].idxmin()]
    n_params = sum(p.numel() for p in detector.model.parameters())
    params = {**model_config.to_dict(), **{k: v for k, v in train_config.__dict__.items() if k != "stages"},
              "curriculum": " > ".join(f"{st.name}({st.epochs}, {st.negatives})" for st in stages),
              "alert_fpr": config.alert_fpr}
    return dg.Output(
        TrainedHybrid(path=path, history=detector.history, threshold=float(detector.threshold_),
                      train_seconds=seconds, params=params, curve_path=curve),
        metadata={
            "epochs_run": len(history),
            "resumed_from_epoch": resumed_from,
            "checkpoint": note,
            "training_fingerprint": fingerprint[:16],
            "best_epoch": int(best["epoch"]),
            "best_validation_loss": float(best["validation_loss"]),
            "best_validation_link_auc": float(best["validation_link_auc"]),
            "train_seconds": round(seconds, 1),
            "parameters": int(n_params),
            "device": str(train_config.resolved_device()) + ("" if not torch.cuda.is_available() else f" ({torch.cuda.get_device_name()})"),
            "history": md_table(history.round(4)),
            "training_curves": md_image(curve, "Training curves"),
            "weights": dg.MetadataValue.path(str(path)),
        },
    )


CHECKPOINTS = "hybrid_model"  # under the state folder's checkpoints/: one folder per training fingerprint


def _checkpoint_for(state: StateResource, fingerprint: str, resume: bool) -> tuple[Path, int, str]:
    """The checkpoint folder of the training with ``fingerprint``, the epoch it resumes after (0 =
    from the start) and a sentence for the log and metadata.

    Checkpoints live under the state folder, not under the run, so a later run (``--resume``) or a
    re-execution finds the one a killed run left. Without ``resume`` a matching checkpoint is
    discarded; with it, a checkpoint of other data, settings or code is never used (the folder is
    named by the fingerprint and the file records it)."""
    root = state.paths.checkpoints_dir / CHECKPOINTS
    folder = root / fingerprint[:16]
    done = checkpoint_epochs(folder, fingerprint)
    if done and resume:
        return folder, done, f"resumed from epoch {done} (checkpoint {folder / CHECKPOINT_FILE})"
    if folder.exists():
        shutil.rmtree(folder)
    if done:
        return folder, 0, (f"an unfinished training of this data and config had reached epoch {done}; discarded "
                           "because resume is off (anomaly-pipeline run --resume, or resume: true, continues it); "
                           "training from epoch 1")
    others = sorted(p.parent.name for p in root.glob(f"*/{CHECKPOINT_FILE}")) if root.exists() else []
    if resume and others:
        return folder, 0, (f"no checkpoint matches this data, config and code (unfinished trainings of others: "
                           f"{', '.join(others)} under {root}); training from epoch 1")
    return folder, 0, "no unfinished training to resume; training from epoch 1" if resume else "training from epoch 1"


class BaselinesConfig(dg.Config):
    """Which baselines to fit (names: heuristic_rules, isolation_forest, one_class_svm, midas_r,
    midas_f, and the ablation baselines static_gnn and lstm_only, which train a network each)."""

    baselines: list[str] = Field(default_factory=lambda: ["heuristic_rules", "isolation_forest", "one_class_svm", "midas_r", "midas_f"], description="baselines fitted on the same split: heuristic_rules, isolation_forest, one_class_svm, midas_r, midas_f, static_gnn, lstm_only")


def _baseline(name: str):
    from anomaly_pipeline.baselines import HeuristicRulesDetector, MidasDetector, OneClassSVMDetector

    factories = {
        "heuristic_rules": HeuristicRulesDetector,
        "isolation_forest": IsolationForestDetector,
        "one_class_svm": OneClassSVMDetector,
        "midas_r": lambda: MidasDetector("midas_r"),
        "midas_f": lambda: MidasDetector("midas_f"),
        "static_gnn": static_gnn_detector,
        "lstm_only": lstm_only_detector,
    }
    if name not in factories:
        raise dg.Failure(f"unknown baseline {name!r}; choose from {sorted(factories)}")
    return factories[name]()


@dg.asset(group_name="training", kinds={"scikitlearn"}, owners=OWNERS)
def baseline_models(
    context: dg.AssetExecutionContext, config: BaselinesConfig, graph_windows: GraphWindows
) -> dg.Output[list]:
    """Baselines on the same split, same interface: heuristic rules as a security team writes them
    (first-seen logon, rare process, fan-out, failure bursts), Isolation Forest and One-Class SVM
    on the per-event features, and the streaming edge-anomaly references MIDAS-R and MIDAS-F."""
    train_idx = graph_windows.split_index("train")
    baselines, rows = [], []
    for name in config.baselines:
        started = time.perf_counter()
        detector = _baseline(name).fit(graph_windows, train_idx)
        seconds = time.perf_counter() - started
        baselines.append(detector)
        rows.append({"baseline": detector.name, "fit_seconds": round(seconds, 2), "threshold": detector.threshold_})
        context.log.info(f"fit {detector.name} on {len(train_idx)} training events in {seconds:.1f} s")
    return dg.Output(
        baselines,
        metadata={"baselines": md_table(pd.DataFrame(rows)), "training_events": len(train_idx)},
    )
