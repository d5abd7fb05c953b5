"""Data-parallel training of the hybrid detector over several processes (``torchrun``).

Why: one GPU (or one CPU box) stops being enough when the training split holds hundreds of
millions of edges. Every rank holds the same ``GraphWindows`` (the snapshots are needed as history
by every chunk) and the same initial weights (same seed); the *training chunks* (consecutive
time buckets, ``TrainConfig.chunk_buckets`` long) are sharded across ranks, each rank computes the
loss of its chunk, and the gradients are averaged over the ranks before every optimiser step, which
is exactly what ``DistributedDataParallel`` does. The model's forward pass is several calls
(spatial encoder per snapshot batch, temporal encoder, decoder), not one ``forward()``, so the
averaging is one flat ``all_reduce`` per step here rather than DDP's hooks; the arithmetic is the
same (sum of gradients / world size, parameters nobody used stay without gradient).

Validation chunks are sharded too and the per-chunk losses, link scores and targets are gathered,
so every rank computes the same validation loss and AUC and takes the same early-stopping
decision. Rank 0 writes the trained detector (same files as the pipeline: state dict + JSON).

Launch (CPU, gloo)::

    torchrun --standalone --nproc_per_node=2 -m anomaly_pipeline.distributed --users 120 --days 10 \\
        --out /tmp/ddp-model

On CUDA the backend is nccl and rank ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``. ``--windows`` reads
the pipeline's stored ``graph_windows`` value (``$ANOMALY_PIPELINE_HOME/data/graph_windows.pickle``)
instead of generating synthetic events.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from anomaly_pipeline.graph import GraphWindows, WindowConfig, build_graph_windows
from anomaly_pipeline.models.hybrid import HybridConfig, HybridGNNLSTM
from anomaly_pipeline.training import EpochStats, TrainConfig, train_hybrid

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class DistributedContext:
    """This process's place in the job (rank of world_size) plus the sharding and reductions the
    training loop needs. ``seed`` fixes the per-epoch chunk order, identical on every rank."""

    rank: int
    world_size: int
    seed: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_train_chunks(
        self, chunks: Sequence[tuple[int, int]], event_bucket: np.ndarray, epoch: int
    ) -> np.ndarray:
        """This rank's training chunks for ``epoch``, like ``DistributedSampler``: one permutation
        of the non-empty chunks (same on every rank, seeded by seed and epoch), padded by repeating
        its start so every rank takes the same number of optimiser steps, then every
        ``world_size``-th chunk from ``rank``. Empty chunks are left out up front because a rank
        that skipped a step would leave the others waiting in the gradient all-reduce."""
        bounds = np.asarray(chunks, dtype=np.int64).reshape(-1, 2)
        lo = np.searchsorted(event_bucket, bounds[:, 0])
        hi = np.searchsorted(event_bucket, bounds[:, 1])
        non_empty = np.flatnonzero(hi > lo)
        if len(non_empty) < self.world_size:
            raise ValueError(
                f"only {len(non_empty)} non-empty training chunks for {self.world_size} ranks: "
                "use fewer processes, a smaller chunk_buckets, or more days of events"
            )
        order = non_empty[np.random.default_rng([self.seed, epoch]).permutation(len(non_empty))]
        padded = np.concatenate([order, order[: (-len(order)) % self.world_size]])
        return padded[self.rank :: self.world_size]

    def shard(self, items: Sequence[T]) -> list[T]:
        """Every ``world_size``-th item from ``rank`` (validation chunks)."""
        return list(items[self.rank :: self.world_size])

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Average gradients over the ranks in one flat all-reduce. A parameter that no rank used
        in this step (a relation absent from every chunk) keeps ``grad=None``, as in one process."""
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return
        device = params[0].device
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params
        ])
        dist.all_reduce(present)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, used in zip(params, present.tolist(), strict=True):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone() if used > 0 else None
            offset += n

    def gather_epoch(
        self,
        train_losses: list[float],
        val_losses: list[float],
        val_scores: list[np.ndarray],
        val_targets: list[np.ndarray],
    ) -> tuple[list[float], list[float], list[np.ndarray], list[np.ndarray]]:
        """Every rank's per-chunk training losses and validation results, concatenated in rank
        order, so every rank computes the same epoch statistics and early-stopping decision."""
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, (train_losses, val_losses, val_scores, val_targets))
        out: tuple[list, list, list, list] = ([], [], [], [])
        for part in gathered:
            for dst, src in zip(out, part, strict=True):  # type: ignore[arg-type]
                dst.extend(src)
        return out

    def max_parameter_divergence(self, model: torch.nn.Module) -> float:
        """Largest absolute difference of any parameter between this rank and rank 0 (0.0 when the
        ranks stayed in lock-step, as they must: same start, same averaged updates)."""
        device = next(model.parameters()).device  # nccl needs CUDA tensors, gloo takes CPU ones
        flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
        reference = flat.clone()
        dist.broadcast(reference, src=0)
        diff = (flat - reference).abs().max().reshape(1).to(device)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff.item())


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(train_config: TrainConfig) -> tuple[DistributedContext, TrainConfig]:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT) and pin this rank's device; returns the context and the config with that device."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"distributed training needs the torchrun environment ({', '.join(missing)} not set): launch with "
            "`torchrun --standalone --nproc_per_node=N -m anomaly_pipeline.distributed ...`"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = train_config.resolved_device()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    ctx = DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), seed=train_config.seed)
    return ctx, replace(train_config, device=str(device))


@dataclass
class DistributedResult:
    """What one rank ends with: the model, the (identical on every rank) history, wall time, and
    how far its weights are from rank 0's (should be 0)."""

    model: HybridGNNLSTM
    history: list[EpochStats]
    seconds: float
    max_divergence: float


def train_distributed(
    windows: GraphWindows,
    model_config: HybridConfig,
    train_config: TrainConfig,
    ctx: DistributedContext,
    checkpoint_dir: str | Path | None = None,
) -> DistributedResult:
    """``train_hybrid`` on this rank's shard. Checkpoints, when asked for, go to one folder per
    rank (each rank's random state differs), so a killed job resumes on every rank."""
    def progress(stats: EpochStats) -> None:
        if ctx.is_main:
            log.info(
                "epoch %d (%s %d): train loss %.4f, validation loss %.4f, validation link AUC %.4f (%.1f s)",
                stats.epoch, stats.stage, stats.stage_epoch, stats.train_loss, stats.validation_loss,
                stats.validation_link_auc, stats.seconds,
            )

    rank_dir = Path(checkpoint_dir) / f"rank{ctx.rank}" if checkpoint_dir is not None else None
    started = time.perf_counter()
    model, history = train_hybrid(windows, model_config, train_config, on_epoch=progress,
                                  checkpoint_dir=rank_dir, distributed=ctx)
    seconds = time.perf_counter() - started
    return DistributedResult(model, history, seconds, ctx.max_parameter_divergence(model))


def save_detector(result: DistributedResult, windows: GraphWindows, train_config: TrainConfig,
                  out_dir: str | Path) -> Path:
    """Rank 0: thresholds and calibration as the pipeline sets them, then the detector's files
    (loadable with ``HybridDetector.load``) and ``training.json`` with history and timing."""
    from anomaly_pipeline.detectors import HybridDetector

    detector = HybridDetector(result.model.config, train_config)
    detector.model, detector.history = result.model, result.history
    detector._fit_thresholds(windows, None)
    path = detector.save(Path(out_dir))
    (path / "training.json").write_text(json.dumps(
        {"history": [h.to_dict() for h in result.history], "train_seconds": result.seconds,
         "world_size": dist.get_world_size() if dist.is_initialized() else 1,
         "max_parameter_divergence": result.max_divergence}, indent=2))
    return path


def _load_windows(args: argparse.Namespace) -> GraphWindows:
    if args.windows:
        path = Path(args.windows)
        if not path.exists():
            raise SystemExit(
                f"--windows {path} does not exist: materialize graph_windows first (its value is stored as "
                "$ANOMALY_PIPELINE_HOME/data/graph_windows.pickle) or omit --windows to use synthetic events"
            )
        with path.open("rb") as fh:
            windows = pickle.load(fh)  # the pipeline's own intermediate value (see LocalStateIOManager)
        if not isinstance(windows, GraphWindows):
            raise SystemExit(f"{path} holds a {type(windows).__name__}, not GraphWindows")
        return windows
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

    events = generate_events(SyntheticConfig(seed=args.seed, n_users=args.users, n_servers=args.servers,
                                             days=args.days))
    return build_graph_windows(events, WindowConfig(history=args.history))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m anomaly_pipeline.distributed",
        description="Data-parallel training of the hybrid detector; run under torchrun.",
    )
    parser.add_argument("--windows", help="pickled GraphWindows (the pipeline's graph_windows value)")
    parser.add_argument("--users", type=int, default=120)
    parser.add_argument("--servers", type=int, default=30)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--history", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic events")
    parser.add_argument("--epochs-per-stage", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--chunk-buckets", type=int, default=12)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--out", required=True, help="folder for the trained detector (written by rank 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    train_config = TrainConfig(chunk_buckets=args.chunk_buckets, device=args.device).with_epochs_per_stage(
        args.epochs_per_stage)
    ctx, train_config = init_from_env(train_config)
    try:
        windows = _load_windows(args)
        model_config = HybridConfig(hidden=args.hidden, history=windows.config.history)
        result = train_distributed(windows, model_config, train_config, ctx, args.checkpoint_dir)
        if ctx.is_main:
            path = save_detector(result, windows, train_config, args.out)
            last = result.history[-1]
            log.info("%d ranks, %d epochs in %.1f s, validation link AUC %.4f, weights in %s (divergence %.2g)",
                     ctx.world_size, len(result.history), result.seconds, last.validation_link_auc, path,
                     result.max_divergence)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
