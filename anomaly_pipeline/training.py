"""Training and scoring of the hybrid GNN-LSTM detector over ``GraphWindows``.

Self-supervised, no labels needed. An event's likelihood factorises into three parts, and its
anomaly score is the sum of their surprisals (in nats):

* ``p(hour | source)``: the source's smoothed, causal hour-of-day profile (counted, not learnt);
* ``p(destination | source, time, history)``: temporal link prediction against negatives that
  replace the destination with another node of the same type (pair history recomputed, so the
  model cannot cheat on stale features);
* ``p(attributes | source, destination, history)``: Bernoulli outcome and protocol flags and
  Student-t volume and pair-rhythm attributes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F

from anomaly_pipeline.graph import (
    ATTRIBUTE_CONTEXT,
    BINARY_ATTRIBUTES,
    CONTINUOUS_ATTRIBUTES,
    EVENT_FEATURES,
    LINK_INPUTS,
    NODE_TYPES,
    ONE_SIDED_FLAGS,
    RELATIONS,
    UPPER_SIDED,
    GraphWindows,
)
from anomaly_pipeline.models.hybrid import HybridConfig, HybridGNNLSTM, message_passing_relations
from anomaly_pipeline.rates import ASPECTS, expected_count, rate_surprise
from anomaly_pipeline.sampling import normalise_edge_counts, sample_edges

if TYPE_CHECKING:
    from anomaly_pipeline.distributed import DistributedContext

_F = {name: i for i, name in enumerate(EVENT_FEATURES)}
LINK_IDX = [_F[n] for n in LINK_INPUTS]
ATTR_CTX_IDX = [_F[n] for n in ATTRIBUTE_CONTEXT]
BINARY_IDX = [_F[n] for n in BINARY_ATTRIBUTES]
CONTINUOUS_IDX = [_F[n] for n in CONTINUOUS_ATTRIBUTES]
# The event features the decoder reads (``_decode_rows``): rows equal on these decode alike, whatever
# the features only the count parts read (hour profile share, service share).
DECODER_IDX = sorted({*LINK_IDX, *ATTR_CTX_IDX, *BINARY_IDX, *CONTINUOUS_IDX})
ONE_SIDED_FLAG_MASK = np.array([n in ONE_SIDED_FLAGS for n in BINARY_ATTRIBUTES])
UPPER_SIDED_MASK = np.array([n in UPPER_SIDED for n in CONTINUOUS_ATTRIBUTES])
RATE_PARTS = tuple(f"rate_{aspect}" for aspect in ASPECTS)
SCORE_PARTS = ("hour_surprise", "link_surprise", "attribute_surprise", "service_surprise", *RATE_PARTS,
               "supervised_attack")
_PART = {name: j for j, name in enumerate(SCORE_PARTS)}


@dataclass(frozen=True)
class CurriculumStage:
    """One named stage of training.

    negatives: ``random`` (uniform destinations of the right type: easy), ``hard`` (destinations
    drawn by popularity among nodes of the right type: plausible but unseen edges) or ``mixed``
    (one of each). history: how many past snapshots the temporal encoder sees in this stage (None
    = the model's full history), so early stages learn on short windows. multi_scale: whether the
    coarse (daily) history joins the fine one in this stage (when the model has it), so early
    stages can train on the short scale alone. adversarial_eps: size of a sign-gradient
    perturbation of the standardised event features (0 = off).
    """

    name: str
    epochs: int
    negatives: str = "random"
    history: int | None = None
    adversarial_eps: float = 0.0
    multi_scale: bool = True

    def __post_init__(self) -> None:
        if self.negatives not in ("random", "hard", "mixed"):
            raise ValueError(f"stage {self.name}: negatives must be random, hard or mixed, got {self.negatives!r}")
        if self.epochs < 1:
            raise ValueError(f"stage {self.name}: epochs must be >= 1")


DEFAULT_CURRICULUM: tuple[CurriculumStage, ...] = (
    CurriculumStage("short_windows_random_negatives", epochs=2, negatives="random", history=2, multi_scale=False),
    CurriculumStage("hard_negatives", epochs=2, negatives="hard", multi_scale=False),
    CurriculumStage("full_multiscale_sequences", epochs=2, negatives="mixed"),
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; epochs are per curriculum stage, over the training buckets."""

    stages: tuple[CurriculumStage, ...] = DEFAULT_CURRICULUM
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    chunk_buckets: int = 12
    max_events_per_chunk: int = 4096
    # Events per gradient step (a chunk's events are split into steps of this size), and the
    # fewest steps an epoch takes: a small log (a day of one host) otherwise gets one step per epoch.
    batch_events: int = 1024
    min_steps_per_epoch: int = 40
    patience: int = 2
    # Multi-task: weight of the supervised attack head, trained on labelled training events
    # (0 = off, fully self-supervised). When on, its -log(1 - p(attack)) joins the score.
    supervised_weight: float = 0.0
    # Joint end-to-end training (default) or sequential: the first stage trains the spatial
    # encoder and the decoder with the temporal path frozen, later stages freeze the spatial
    # encoder and train the temporal path, fusion and decoder.
    joint: bool = True
    # Snapshot batches with more edges than this are edge-sampled (GraphSAINT) in training.
    sample_edges_above: int | None = 200_000
    # bfloat16 autocast on CUDA ("auto"); CPU always runs float32, deterministic under the seed.
    mixed_precision: str = "auto"
    seed: int = 0
    device: str = "auto"

    @property
    def epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def with_epochs_per_stage(self, epochs: int) -> TrainConfig:
        """The same curriculum with every stage ``epochs`` long."""
        from dataclasses import replace

        return replace(self, stages=tuple(replace(st, epochs=epochs) for st in self.stages))

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class EpochStats:
    epoch: int  # counted over all stages
    stage: str
    stage_epoch: int
    train_loss: float
    validation_loss: float
    validation_link_auc: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SnapshotBatch:
    """Embeddings of the active rows of snapshots ``k_lo .. k_hi - 1`` plus one learned "absent"
    row per node type appended at the end; ``keys`` (k * N + node) are sorted for lookup.
    ``coarse``: the same for the coarse snapshots these buckets' coarse histories need (multi-scale),
    None when the coarse scale is off."""

    emb: Tensor  # [R + n_types, d]
    keys: Tensor  # [R]
    coarse: SnapshotBatch | None = None


class _SnapshotSet:
    """One time scale's sparse snapshots as tensors (active rows, edges), embedded on demand."""

    def __init__(self, snaps, n_snapshots: int, n_nodes: int, node_type: Tensor, device: torch.device) -> None:
        self.n_snapshots = n_snapshots
        self.n_nodes = n_nodes
        self.device = device
        self.act_ptr = snaps.act_ptr
        act_k = np.repeat(np.arange(n_snapshots), np.diff(snaps.act_ptr))
        self.act_key = torch.from_numpy(act_k * n_nodes + snaps.act_node).to(device)
        self.act_x = torch.from_numpy(snaps.act_x).to(device)
        self.act_type = node_type[torch.from_numpy(snaps.act_node).to(device)]
        self.snap_ptr = snaps.snap_ptr
        snap_k = np.repeat(np.arange(n_snapshots), np.diff(snaps.snap_ptr))
        # Edge endpoints as global active-row indices.
        self.snap_src_row = torch.from_numpy(snaps.act_ptr[snap_k] + snaps.snap_src_row).to(device)
        self.snap_dst_row = torch.from_numpy(snaps.act_ptr[snap_k] + snaps.snap_dst_row).to(device)
        self.snap_rel = torch.from_numpy(snaps.snap_rel).to(device)
        self.snap_attr = torch.from_numpy(snaps.snap_attr).to(device)

    def embed(self, model: HybridGNNLSTM, k_lo: int, k_hi: int, sample_above: int | None,
              generator: torch.Generator) -> SnapshotBatch:
        lo, hi = max(k_lo, 0), max(min(k_hi, self.n_snapshots), max(k_lo, 0))
        r0, r1 = int(self.act_ptr[lo]), int(self.act_ptr[hi])
        d = model.config.hidden
        emb = torch.zeros(r1 - r0, d, device=self.device)
        if r1 > r0:
            x, rtype = self.act_x[r0:r1], self.act_type[r0:r1]
            local = torch.empty(r1 - r0, dtype=torch.long, device=self.device)
            masks, x_dict = {}, {}
            for i, t in enumerate(NODE_TYPES):
                m = rtype == i
                count = int(m.sum())
                if count:
                    masks[t] = m
                    local[m] = torch.arange(count, device=self.device)
                    x_dict[t] = x[m]
            e0, e1 = int(self.snap_ptr[lo]), int(self.snap_ptr[hi])
            src_row = self.snap_src_row[e0:e1] - r0
            dst_row = self.snap_dst_row[e0:e1] - r0
            rel, attr = self.snap_rel[e0:e1], self.snap_attr[e0:e1]
            if model.training and sample_above and e1 - e0 > sample_above:
                kept, prob = sample_edges(src_row.cpu(), dst_row.cpu(), r1 - r0, sample_above, generator=generator)
                kept, prob = kept.to(self.device), prob.to(self.device)
                src_row, dst_row, rel = src_row[kept], dst_row[kept], rel[kept]
                attr = attr[kept].clone()
                attr[:, 0] = normalise_edge_counts(attr[:, 0], prob)
            edge_index, edge_attr = {}, {}
            for r, (s_t, name, d_t) in enumerate(RELATIONS):
                m = rel == r
                if not bool(m.any()):
                    continue
                s_local, d_local = local[src_row[m]], local[dst_row[m]]
                edge_index[(s_t, name, d_t)] = torch.stack([s_local, d_local])
                edge_index[(d_t, f"rev_{name}", s_t)] = torch.stack([d_local, s_local])
                edge_attr[(s_t, name, d_t)] = attr[m]
                edge_attr[(d_t, f"rev_{name}", s_t)] = attr[m]
            h = model.spatial(x_dict, edge_index, edge_attr)
            for t, m in masks.items():
                emb[m] = h[t]
        return SnapshotBatch(emb=torch.cat([emb, model.spatial.absent], dim=0), keys=self.act_key[r0:r1])


def _lookup(batch: SnapshotBatch, steps: Tensor, node: Tensor, n_nodes: int, node_type: Tensor) -> Tensor:
    """Embeddings of ``node`` at snapshot ``steps`` ([U, L]); inactive or before the data: "absent"."""
    key = steps * n_nodes + node.unsqueeze(1)
    n_rows = len(batch.keys)
    if n_rows:
        pos = torch.searchsorted(batch.keys, key).clamp(max=n_rows - 1)
        found = (batch.keys[pos] == key) & (steps >= 0)
    else:
        pos = torch.zeros_like(key)
        found = torch.zeros_like(key, dtype=torch.bool)
    absent = n_rows + node_type[node].unsqueeze(1).expand_as(key)
    return batch.emb[torch.where(found, pos, absent)]


class GraphTensors:
    """``GraphWindows`` as tensors on one device, with helpers to batch snapshots of both scales."""

    def __init__(self, windows: GraphWindows, device: torch.device, sample_edges_above: int | None = None,
                 seed: int = 0) -> None:
        self.windows = windows
        # GraphSAINT-style edge sampling of batches with more edges than this, in training only.
        self.sample_edges_above = sample_edges_above
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.device = device
        self.n_nodes = windows.n_nodes
        self.n_buckets = windows.n_buckets
        type_id = windows.nodes["node_type"].map({t: i for i, t in enumerate(NODE_TYPES)}).to_numpy(np.int64)
        self.node_type = torch.from_numpy(type_id).to(device)
        self.fine = _SnapshotSet(windows, windows.n_buckets, self.n_nodes, self.node_type, device)
        self.coarse = None
        self.coarse_of_bucket = None
        if windows.coarse is not None:
            c = windows.coarse
            self.coarse = _SnapshotSet(c, c.n_snapshots, self.n_nodes, self.node_type, device)
            self.coarse_of_bucket = torch.from_numpy(c.of_bucket).to(device)
        # Precomputed coarse embeddings for scoring (no gradients), see ``freeze_coarse``.
        self._frozen_coarse: SnapshotBatch | None = None

    def uses_coarse(self, model: HybridGNNLSTM) -> bool:
        return self.coarse is not None and model.config.multi_scale

    def _coarse_range(self, model: HybridGNNLSTM, k_lo: int, k_hi: int) -> tuple[int, int]:
        """Coarse snapshots the histories of fine buckets ``k_lo .. k_hi`` need."""
        of = self.windows.coarse.of_bucket
        c_lo = int(of[min(max(k_lo, 0), self.n_buckets - 1)]) - model.config.coarse_history
        return c_lo, int(of[min(max(k_hi, 0), self.n_buckets - 1)])

    def freeze_coarse(self, model: HybridGNNLSTM, k_lo: int = 0, k_hi: int | None = None) -> None:
        """Embed once the coarse snapshots that buckets ``k_lo .. k_hi`` need (inference): chunks
        then share them instead of re-embedding the same days again and again."""
        if self.uses_coarse(model):
            c_lo, c_hi = self._coarse_range(model, k_lo, self.n_buckets - 1 if k_hi is None else k_hi)
            self._frozen_coarse = self.coarse.embed(model, c_lo, c_hi, None, self.generator)

    def snapshot_embeddings(self, model: HybridGNNLSTM, k_lo: int, k_hi: int, coarse: bool = True) -> SnapshotBatch:
        """Spatial embeddings of the active nodes of snapshots ``k_lo .. k_hi - 1`` and, with the
        coarse scale on, of the coarse snapshots the histories of buckets ``k_lo .. k_hi`` need."""
        batch = self.fine.embed(model, k_lo, k_hi, self.sample_edges_above, self.generator)
        if coarse and self.uses_coarse(model):
            if self._frozen_coarse is not None:
                batch.coarse = self._frozen_coarse
            else:
                batch.coarse = self.coarse.embed(model, *self._coarse_range(model, k_lo, k_hi),
                                                 self.sample_edges_above, self.generator)
        return batch

    def sequences(self, batch: SnapshotBatch, bucket: Tensor, node: Tensor, history: int) -> Tensor:
        """[U, L, d]: for each (bucket b, node v), its embeddings in snapshots b - L .. b - 1;
        a snapshot where the node was inactive (or before the data starts) gives "absent"."""
        steps = bucket.unsqueeze(1) - history + torch.arange(history, device=self.device).unsqueeze(0)
        return _lookup(batch, steps, node, self.n_nodes, self.node_type)

    def coarse_sequences(self, batch: SnapshotBatch, bucket: Tensor, node: Tensor, history: int) -> Tensor | None:
        """[U, Lc, d]: each (bucket b, node v)'s embeddings in the ``history`` completed coarse
        snapshots before the one holding b (None when the batch has no coarse scale)."""
        if batch.coarse is None or self.coarse_of_bucket is None:
            return None
        current = self.coarse_of_bucket[bucket]
        steps = current.unsqueeze(1) - history + torch.arange(history, device=self.device).unsqueeze(0)
        return _lookup(batch.coarse, steps, node, self.n_nodes, self.node_type)


class PairHistory:
    """Counts of earlier events per key (a pair or a node), for any event position."""

    def __init__(self, keys: np.ndarray) -> None:
        self.n = len(keys)
        self.sorted = np.sort(keys.astype(np.int64) * self.n + np.arange(self.n))

    def prior_count(self, keys: np.ndarray, position: np.ndarray) -> np.ndarray:
        base = keys.astype(np.int64) * self.n
        return np.searchsorted(self.sorted, base + position) - np.searchsorted(self.sorted, base)


_SERVICE_SPAN = 65537 * 8  # service codes (port + 1) * 8 + protocol stay below this


class NegativeSampler:
    """Builds corrupted copies of observed events (see module docstring)."""

    def __init__(self, windows: GraphWindows, rng: np.random.Generator, upto: int | None = None) -> None:
        """``upto``: negatives are made for the first ``upto`` events only (default all), so the
        histories hold those (training and validation: 8 % of DARPA's events, not all 4.5 M)."""
        self.w = windows
        self.rng = rng
        n = windows.n_nodes
        m = len(windows.event_src) if upto is None else int(upto)
        src, dst, ctx = windows.event_src[:m], windows.event_dst[:m], windows.event_ctx[:m]
        self.pairs = PairHistory(src * n + dst)
        self.ctx_pairs = PairHistory(np.where(ctx >= 0, ctx * n + dst, -1))
        self.dsts = PairHistory(dst)
        self.services = None
        if windows.event_service is not None:
            service = windows.event_service[:m]
            self.services = PairHistory(np.where(service >= 0, dst * _SERVICE_SPAN + service, -1))
        types = windows.nodes["node_type"].to_numpy()
        self.type_ids = {t: np.flatnonzero(types == t) for t in NODE_TYPES}
        self.dst_type = types[dst]
        train = windows.split_index("train")
        degree = np.bincount(windows.event_dst[train], minlength=n).astype(float) ** 0.75 + 1e-3
        self.popularity = {t: degree[ids] / degree[ids].sum() for t, ids in self.type_ids.items() if len(ids)}

    def corrupt_destination(self, idx: np.ndarray, hard: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Replace each event's destination by another node of the same type: uniformly (easy) or,
        with ``hard``, in proportion to popularity (degree^0.75), which gives plausible edges."""
        w, n = self.w, self.w.n_nodes
        new_dst = w.event_dst[idx].copy()
        for t in NODE_TYPES:
            m = self.dst_type[idx] == t
            if m.any() and len(self.type_ids[t]):
                p = self.popularity[t] if hard else None
                new_dst[m] = self.rng.choice(self.type_ids[t], size=int(m.sum()), p=p)
        x = w.event_x[idx].copy()
        pair_prior = self.pairs.prior_count(w.event_src[idx] * n + new_dst, idx)
        ctx = w.event_ctx[idx]
        ctx_prior = self.ctx_pairs.prior_count(np.where(ctx >= 0, ctx * n + new_dst, -1), idx)
        x[:, _F["pair_first_seen"]] = pair_prior == 0
        x[:, _F["context_pair_first_seen"]] = (ctx >= 0) & (ctx_prior == 0)
        x[:, _F["dst_first_seen"]] = self.dsts.prior_count(new_dst, idx) == 0
        if self.services is not None:
            service = w.event_service[idx]
            prior = self.services.prior_count(np.where(service >= 0, new_dst * _SERVICE_SPAN + service, -1), idx)
            x[:, _F["service_first_seen"]] = (service >= 0) & (prior == 0)
        return new_dst, x


def _decode_rows(
    model: HybridGNNLSTM,
    gt: GraphTensors,
    batch: SnapshotBatch,
    bucket: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    ctx: np.ndarray,
    rel: np.ndarray,
    x: np.ndarray,
    history: int | None = None,
    x_delta: Tensor | None = None,
    log_rate: np.ndarray | None = None,
    parts_only: bool = False,
) -> dict[str, Tensor]:
    """Everything the model says about rows (events or negatives) whose history snapshots are in
    ``batch``: link logits [B], binary-flag surprisal [B, Tb] and continuous-attribute surprisal
    [B, Tc] (nats), attribute means [B, Tc] (standardised), supervised attack logits [B], and the
    time attention [3, B, L] of source, destination and context. ``x_delta`` perturbs the
    standardised event features. ``parts_only``: only what ``decoded_parts`` reads."""
    dev = gt.device
    n = gt.n_nodes
    nodes = torch.from_numpy(np.concatenate([src, dst, np.maximum(ctx, 0)])).to(dev)
    buckets = torch.from_numpy(bucket).to(dev).repeat(3)
    uniq, inverse = torch.unique(buckets * n + nodes, return_inverse=True)
    seq = gt.sequences(batch, uniq // n, uniq % n, history or model.config.history)
    coarse_seq = gt.coarse_sequences(batch, uniq // n, uniq % n, model.config.coarse_history)
    fused, time_weights = model.node_states(seq, coarse_seq)
    h = fused[inverse].view(3, len(src), -1)
    xs = (torch.from_numpy(x).to(dev) - model.event_mean) / model.event_std
    if x_delta is not None:
        xs = xs + x_delta
    has_ctx = torch.from_numpy(ctx >= 0).to(dev)
    rel_t = torch.from_numpy(rel).to(dev)
    use_rate = log_rate is not None and model.config.rate_head
    logit, flag_logits, mean, log_var, correction = model.decoder(
        h[0], h[1], h[2], has_ctx, rel_t, xs[:, LINK_IDX], xs[:, ATTR_CTX_IDX],
        torch.from_numpy(log_rate).float().to(dev) if use_rate else None,
    )
    flags = torch.from_numpy(x[:, BINARY_IDX]).to(dev)
    target = xs[:, CONTINUOUS_IDX]
    flag_nll = F.binary_cross_entropy_with_logits(flag_logits, flags, reduction="none")
    # Scored surprise: one-sided flags count only when raised, upper-sided volumes only above the
    # expected value, and a continuous attribute's surprise is its excess over the most likely value.
    one_sided = torch.from_numpy(ONE_SIDED_FLAG_MASK).to(dev)
    flag_surprise = torch.where(one_sided, flag_nll * flags, flag_nll)
    excess = _attribute_excess_per_dim(mean, log_var, target)
    upper = torch.from_numpy(UPPER_SIDED_MASK).to(dev)
    excess = torch.where(upper & (target <= mean), torch.zeros_like(excess), excess)
    # The supervised head counts only when it was trained (its weight, stored on the model, > 0);
    # scoring skips it otherwise (training keeps it, so the random stream of dropout is unchanged).
    if model.training or model.supervised_weight.item() != 0:
        attack_logit = model.supervised(model.decoder.context(h[0], h[1], h[2], has_ctx, rel_t), xs[:, LINK_IDX])
    else:
        attack_logit = torch.zeros_like(logit)
    out = {
        "link_logit": logit,
        "flag_surprise": flag_surprise,
        "attribute_excess": excess,
        "rate_log_correction": correction,
        "attack_logit": attack_logit,
    }
    if not parts_only:
        out["flag_nll"] = flag_nll
        out["attribute_nll"] = _attribute_nll_per_dim(mean, log_var, target)
        out["attribute_mean"] = mean
        out["time_attention"] = time_weights[inverse].view(3, len(src), -1)
    return out


def log_expected_rates(windows: GraphWindows, idx: np.ndarray) -> np.ndarray:
    """[len(idx), S * A]: log1p of each aspect's filtered expected count at each time scale, the
    rate head's input."""
    r = windows.rates
    if r is None:
        return np.zeros((len(idx), len(ASPECTS)), np.float32)
    return np.log1p(expected_count(r.total[idx], r.t[idx])).reshape(len(idx), -1).astype(np.float32)


STUDENT_T_DOF = 4.0
_T_CONST = (
    -math.lgamma((STUDENT_T_DOF + 1) / 2) + math.lgamma(STUDENT_T_DOF / 2) + 0.5 * math.log(STUDENT_T_DOF * math.pi)
)


def _attribute_excess_per_dim(mean: Tensor, log_var: Tensor, target: Tensor) -> Tensor:
    """Per-attribute surprise of ``target`` beyond the most likely value (nats, >= 0): the
    Student-t negative log-likelihood minus its value at the mean."""
    z2 = (target - mean) ** 2 * torch.exp(-log_var)
    return 0.5 * (STUDENT_T_DOF + 1) * torch.log1p(z2 / STUDENT_T_DOF)


def _attribute_nll_per_dim(mean: Tensor, log_var: Tensor, target: Tensor) -> Tensor:
    """Per-row, per-attribute negative log-likelihood (nats) of ``target`` under independent
    Student-t distributions (4 degrees of freedom, scale ``exp(log_var / 2)``).

    Heavy tails on purpose: a Gaussian head grows overconfident on near-deterministic attributes
    (duration given volume) and then one benign outlier dimension swamps every other signal.
    """
    z2 = (target - mean) ** 2 * torch.exp(-log_var)
    return _T_CONST + 0.5 * log_var + 0.5 * (STUDENT_T_DOF + 1) * torch.log1p(z2 / STUDENT_T_DOF)


def _chunks(windows: GraphWindows, lo_bucket: int, hi_bucket: int, size: int) -> list[tuple[int, int]]:
    return [(c, min(c + size, hi_bucket)) for c in range(lo_bucket, hi_bucket, size)]


def _chunk_loss(
    model: HybridGNNLSTM,
    gt: GraphTensors,
    sampler: NegativeSampler,
    idx: np.ndarray,
    c0: int,
    c1: int,
    stage: CurriculumStage,
    supervised_weight: float = 0.0,
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    w = gt.windows
    L = stage.history or model.config.history
    batch = gt.snapshot_embeddings(model, c0 - L, c1 - 1, coarse=stage.multi_scale)
    b, s, d, c, r = (w.event_bucket[idx], w.event_src[idx], w.event_dst[idx], w.event_ctx[idx], w.event_rel[idx])
    kinds = {"random": (False, False), "hard": (True, True), "mixed": (False, True)}[stage.negatives]
    dsts, xs = [d], [w.event_x[idx]]
    for hard in kinds:
        neg_dst, neg_x = sampler.corrupt_destination(idx, hard=hard)
        dsts.append(neg_dst)
        xs.append(neg_x)
    k = len(kinds) + 1
    rows = (np.tile(b, k), np.tile(s, k), np.concatenate(dsts), np.tile(c, k), np.tile(r, k),
            np.concatenate(xs).astype(np.float32))
    labels = torch.cat([torch.ones(len(idx)), torch.zeros(len(kinds) * len(idx))]).to(gt.device)
    n = len(idx)
    n_attr = len(BINARY_ATTRIBUTES) + len(CONTINUOUS_ATTRIBUTES)

    event_labels = torch.from_numpy(np.nan_to_num(w.labels[idx], nan=-1.0)).float().to(gt.device)
    labelled = event_labels >= 0

    # The positives' rates (negatives share them: the rate head is only trained on positives).
    log_rate = np.tile(log_expected_rates(w, idx), (k, 1))
    rate_target = None
    if w.rates is not None and model.config.rate_head:
        mu = expected_count(w.rates.total[idx], w.rates.t[idx])
        rate_target = (torch.from_numpy(np.log(np.maximum(mu, 1e-12))).float().to(gt.device),
                       torch.from_numpy(w.rates.count[idx]).float().to(gt.device),
                       torch.from_numpy(mu > 0).to(gt.device))

    def loss_for(x_delta: Tensor | None) -> tuple[Tensor, Tensor]:
        out = _decode_rows(model, gt, batch, *rows, history=L, x_delta=x_delta, log_rate=log_rate)
        logits, attack_logit = out["link_logit"], out["attack_logit"]
        attr_nll = out["flag_nll"].sum(-1) + out["attribute_nll"].sum(-1)
        link_loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss = link_loss + model.config.attribute_weight * attr_nll[:n].mean() / n_attr
        if rate_target is not None and bool(rate_target[2].any()):
            # Poisson likelihood of each aspect's observed count under the corrected expectation.
            log_mu, count, known = rate_target
            log_lambda = log_mu + out["rate_log_correction"][:n, None, :]
            rate_nll = torch.exp(log_lambda) - count * log_lambda
            loss = loss + model.config.rate_weight * rate_nll[known].mean()
        if supervised_weight > 0 and bool(labelled.any()):
            # Attacks are rare: weigh positives by the inverse label frequency of the batch.
            y = event_labels[labelled]
            pos_weight = ((1 - y).sum() / y.sum().clamp(min=1.0)).clamp(max=100.0)
            loss = loss + supervised_weight * F.binary_cross_entropy_with_logits(
                attack_logit[:n][labelled], y, pos_weight=pos_weight
            )
        return loss, logits

    if stage.adversarial_eps > 0 and model.training:
        # Sign-gradient (FGSM) perturbation of the event features: train on the clean and the
        # perturbed batch so scores do not hinge on tiny feature changes.
        delta = torch.zeros(len(rows[0]), len(EVENT_FEATURES), device=gt.device, requires_grad=True)
        clean, logits = loss_for(delta)
        (grad,) = torch.autograd.grad(clean, delta, retain_graph=True)
        perturbed, _ = loss_for(stage.adversarial_eps * grad.sign())
        loss = 0.5 * (clean + perturbed)
    else:
        loss, logits = loss_for(None)
    return loss, logits.detach().cpu().numpy(), labels.cpu().numpy()


def _auc(scores: np.ndarray, target: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(target, scores)) if 0 < target.sum() < len(target) else float("nan")


CHECKPOINT_FILE = "checkpoint.pt"
# The code whose change makes an unfinished training's checkpoint meaningless.
_TRAINING_CODE = ("training.py", "graph.py", "models/hybrid.py", "rates.py")


def training_fingerprint(windows: GraphWindows, model_config: HybridConfig, train_config: TrainConfig,
                         **extra: object) -> str:
    """SHA-256 (hex) of what a training's outcome depends on: the windows' data and split, the model
    and training configs (``extra``: further settings, e.g. the alert FPR), and the training code.

    A checkpoint is resumed only under the same fingerprint: a checkpoint written for other data, other
    settings or other code would silently mix two trainings.
    """
    import anomaly_pipeline

    digest = hashlib.sha256()
    configs = {"model": model_config.to_dict(), "train": asdict(train_config), "window": asdict(windows.config),
               "extra": extra, "n_buckets": windows.n_buckets, "version": anomaly_pipeline.__version__,
               "meta": {k: v for k, v in windows.meta.items() if k.endswith("_bucket")}}
    digest.update(json.dumps(configs, sort_keys=True, default=str).encode())
    for name in ("event_src", "event_dst", "event_ctx", "event_rel", "event_bucket", "event_x", "split",
                 "snap_ptr", "snap_src", "snap_dst", "snap_rel", "act_ptr", "act_node", "act_x"):
        array = np.ascontiguousarray(getattr(windows, name))
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.data)
    package = Path(anomaly_pipeline.__file__).parent
    for relative in _TRAINING_CODE:
        digest.update((package / relative).read_bytes())
    return digest.hexdigest()


def checkpoint_epochs(checkpoint_dir: str | Path, fingerprint: str | None = None) -> int | None:
    """Epochs an unfinished training in ``checkpoint_dir`` has done; None when there is no
    checkpoint there, or (with ``fingerprint``) when it belongs to another training."""
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if fingerprint is not None and saved.get("fingerprint") != fingerprint:
        return None
    return len(saved["history"])


def _set_trainable(model: HybridGNNLSTM, joint: bool, stage_index: int) -> None:
    """Joint: everything trains. Sequential: stage 0 trains the spatial encoder (temporal path
    frozen), later stages train the temporal path (spatial encoder frozen)."""
    spatial_phase = stage_index == 0
    for name, param in model.named_parameters():
        if joint:
            param.requires_grad_(True)
        elif name.startswith("spatial."):
            param.requires_grad_(spatial_phase)
        elif name.startswith(("temporal.", "coarse_temporal.", "scale_attn.", "fusion.", "concat.")):
            param.requires_grad_(not spatial_phase)
        else:
            param.requires_grad_(True)


def train_hybrid(
    windows: GraphWindows,
    model_config: HybridConfig = HybridConfig(),
    train_config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    init_state: dict[str, Tensor] | None = None,
    distributed: DistributedContext | None = None,
    fingerprint: str | None = None,
) -> tuple[HybridGNNLSTM, list[EpochStats]]:
    """Train through the curriculum's stages on the training split; each stage early-stops on the
    validation split's loss and hands its best weights to the next.

    With ``checkpoint_dir``, a checkpoint is written after every epoch and, if one is already
    there, training resumes from it (same stage, next epoch, same random state), so a killed
    training continues where it stopped. With ``fingerprint`` (``training_fingerprint``) the
    checkpoint records it, and one written under another fingerprint is refused (ValueError), never
    resumed. ``init_state`` starts from trained weights (fine-tuning);
    feature standardisation is always re-estimated on this data's training split.
    ``distributed`` (``anomaly_pipeline.distributed``, under ``torchrun``): this rank trains on its
    shard of the training chunks, gradients and validation results are averaged over the ranks.
    Returns the best model and the per-epoch history.
    """
    torch.manual_seed(train_config.seed)
    rng = np.random.default_rng(train_config.seed)
    device = train_config.resolved_device()
    # The model's horizons follow the data's windows; without a coarse scale it is single-scale.
    horizons = {"history": windows.config.history, "coarse_history": windows.config.coarse_history,
                "multi_scale": model_config.multi_scale and windows.coarse is not None,
                "rate_scales": windows.rates.count.shape[1] if windows.rates is not None else model_config.rate_scales}
    if any(getattr(model_config, k) != v for k, v in horizons.items()):
        model_config = HybridConfig(**{**model_config.to_dict(), **horizons})
    model = HybridGNNLSTM(model_config).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    train_idx = windows.split_index("train")
    if len(train_idx) == 0:
        raise ValueError("the training split is empty: provide more days of events or raise train_fraction")
    x_train = windows.event_x[train_idx]
    model.supervised_weight.fill_(train_config.supervised_weight)
    model.event_mean.copy_(torch.from_numpy(x_train.mean(axis=0)))
    model.event_std.copy_(torch.from_numpy(x_train.std(axis=0) + 1e-3))
    gt = GraphTensors(windows, device, train_config.sample_edges_above, train_config.seed)
    use_amp = device.type == "cuda" and train_config.mixed_precision in ("auto", "bf16")
    sampler = NegativeSampler(windows, rng, upto=int(np.searchsorted(windows.event_bucket,
                                                                       windows.meta["validation_end_bucket"])))
    optimiser = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay)

    train_end = windows.meta["train_end_bucket"]
    val_end = windows.meta["validation_end_bucket"]
    train_chunks = _chunks(windows, 0, train_end, train_config.chunk_buckets)
    val_chunks = _chunks(windows, train_end, val_end, train_config.chunk_buckets)

    def events_in(c0: int, c1: int, cap: int) -> np.ndarray:
        lo, hi = np.searchsorted(windows.event_bucket, [c0, c1])
        idx = np.arange(lo, hi)
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, size=cap, replace=False))
        return idx

    history: list[EpochStats] = []
    state = {"stage": 0, "stage_epoch": 0, "best_loss": math.inf, "stale": 0}
    best_state = None
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=True)
        if fingerprint is not None and saved.get("fingerprint") != fingerprint:
            raise ValueError(
                f"the checkpoint {checkpoint} belongs to another training (other data, settings or code); "
                "delete it, or give this training its own checkpoint folder"
            )
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        best_state = saved["best_model"]
        state = saved["state"]
        history = [EpochStats(**h) for h in saved["history"]]
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(
            {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "best_model": best_state,
             "state": state, "history": [h.to_dict() for h in history], "rng": rng.bit_generator.state,
             "torch_rng": torch.get_rng_state(), "fingerprint": fingerprint},
            tmp,
        )
        tmp.replace(checkpoint)  # atomic: a kill mid-write leaves the previous checkpoint intact

    while state["stage"] < len(train_config.stages):
        stage = train_config.stages[state["stage"]]
        if state["stage_epoch"] >= stage.epochs or state["stale"] >= train_config.patience:
            # Stage done: the next one starts from this stage's best weights.
            if best_state is not None:
                model.load_state_dict(best_state)
            state = {"stage": state["stage"] + 1, "stage_epoch": 0, "best_loss": math.inf, "stale": 0}
            best_state = None
            continue
        started = time.perf_counter()
        _set_trainable(model, train_config.joint, state["stage"])
        model.train()
        losses = []
        order = (rng.permutation(len(train_chunks)) if distributed is None
                 else distributed.shard_train_chunks(train_chunks, windows.event_bucket, len(history)))
        steps = []
        while True:
            for ci in order:
                c0, c1 = train_chunks[ci]
                idx = events_in(c0, c1, train_config.max_events_per_chunk)
                n_steps = max(1, int(np.ceil(len(idx) / train_config.batch_events)))
                steps.extend((c0, c1, part) for part in np.array_split(rng.permutation(idx), n_steps) if len(part))
            if len(steps) >= train_config.min_steps_per_epoch or not steps:
                break
            order = rng.permutation(order)
        for c0, c1, idx in steps:
            idx = np.sort(idx)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, _, _ = _chunk_loss(model, gt, sampler, idx, c0, c1, stage, train_config.supervised_weight)
            optimiser.zero_grad()
            loss.backward()
            if distributed is not None:
                distributed.average_gradients(model)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            losses.append(loss.item())
        model.eval()
        val_losses, val_scores, val_targets = [], [], []
        with torch.no_grad():
            # Fixed negatives and sample for validation so epochs compare like with like.
            val_rng = np.random.default_rng(train_config.seed + 1)
            sampler.rng = val_rng
            for c0, c1 in (val_chunks if distributed is None else distributed.shard(val_chunks)):
                lo, hi = np.searchsorted(windows.event_bucket, [c0, c1])
                idx = np.arange(lo, hi)
                if len(idx) > train_config.max_events_per_chunk:
                    idx = np.sort(val_rng.choice(idx, size=train_config.max_events_per_chunk, replace=False))
                if len(idx) == 0:
                    continue
                loss, logits, target = _chunk_loss(model, gt, sampler, idx, c0, c1, stage)
                val_losses.append(float(loss))
                val_scores.append(logits)
                val_targets.append(target)
            sampler.rng = rng
        if distributed is not None:
            losses, val_losses, val_scores, val_targets = distributed.gather_epoch(
                losses, val_losses, val_scores, val_targets)
        val_loss = float(np.mean(val_losses)) if val_losses else float(np.mean(losses))
        val_auc = _auc(np.concatenate(val_scores), np.concatenate(val_targets)) if val_scores else float("nan")
        state["stage_epoch"] += 1
        stats = EpochStats(len(history) + 1, stage.name, state["stage_epoch"],
                           float(np.mean(losses)) if losses else float("nan"), val_loss, val_auc,
                           time.perf_counter() - started)
        history.append(stats)
        if val_loss < state["best_loss"] - 1e-4:
            state["best_loss"], state["stale"] = val_loss, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            state["stale"] += 1
        save_checkpoint()
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    return model, history


def decoded_parts(model: HybridGNNLSTM, windows: GraphWindows, sel: np.ndarray, out: dict[str, Tensor],
                  inverse: np.ndarray | None = None) -> np.ndarray:
    """[len(sel), len(SCORE_PARTS)]: every score part (nats) of events ``sel`` from the model's
    decoded outputs ``out`` (``_decode_rows`` with ``log_rate=log_expected_rates(windows, sel)``):
    one row per event, or with ``inverse`` one per distinct row, event i's being ``inverse[i]``
    (each output is reduced on the distinct rows, then spread to the events)."""
    w = windows

    def per_event(values: Tensor) -> np.ndarray:
        values = values.cpu().numpy()
        return values if inverse is None else values[inverse]

    parts = np.zeros((len(sel), len(SCORE_PARTS)))
    parts[:, _PART["hour_surprise"]] = -np.log(w.event_x[sel, _F["src_hour_profile_share"]].clip(1e-6, 1.0))
    parts[:, _PART["link_surprise"]] = per_event(F.softplus(-out["link_logit"]))
    parts[:, _PART["attribute_surprise"]] = per_event(out["flag_surprise"].sum(-1) + out["attribute_excess"].sum(-1))
    # The service among those its destination was seen to offer (``graph.service_share``).
    parts[:, _PART["service_surprise"]] = -np.log(w.event_x[sel, _F["service_open_share"]].astype(np.float64)
                                                  .clip(1e-30, 1.0))
    if w.rates is not None:
        correction = out["rate_log_correction"]
        correction = 0.0 if correction is None else per_event(correction).astype(np.float64)[:, None, :]
        # The strongest burst over the time scales, per aspect.
        r0 = _PART[RATE_PARTS[0]]
        parts[:, r0:r0 + len(ASPECTS)] = rate_surprise(w.rates.count[sel], w.rates.total[sel], w.rates.t[sel],
                                                     correction).max(axis=1)
    # -log(1 - p(attack)), only when the supervised head was trained (weight stored on the model).
    weight = model.supervised_weight.item()
    if weight != 0:
        parts[:, -1] = weight * per_event(F.softplus(out["attack_logit"]))
    return parts


def _distinct_rows(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """First position of each distinct row of ``columns`` (1-D or 2-D arrays of 4-byte values,
    aligned) and, per row, the index of its distinct row. Rows compare bit for bit."""
    parts = [np.ascontiguousarray(c).reshape(len(c), -1).view(np.int32) for c in columns]
    packed = np.ascontiguousarray(np.concatenate(parts, axis=1))
    # A random projection of each row's 32-bit words as its hash, grouped with a hash table, then
    # checked bit for bit: faster than sorting the rows. Should two different rows ever share a
    # projection, the check fails and the rows are sorted instead. einsum, not ``@``: numpy's BLAS
    # threads keep spinning after a product and took the cores from torch's decoder (half speed).
    weights = np.random.default_rng(0).random(packed.shape[1]) + 0.5
    inverse, _ = pd.factorize(np.einsum("ij,j->i", packed.view(np.uint32), weights))
    # factorize numbers the hashes in order of appearance: a row opens a group where its code
    # exceeds every earlier one.
    first = np.flatnonzero(np.r_[True, inverse[1:] > np.maximum.accumulate(inverse)[:-1]])
    if np.array_equal(packed[first[inverse]], packed):
        return first, inverse
    keys = packed.view(np.dtype((np.void, packed.dtype.itemsize * packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


@torch.inference_mode()
def score_components(
    model: HybridGNNLSTM, windows: GraphWindows, idx: np.ndarray | None = None, chunk_buckets: int = 24,
    dedupe: bool = True, reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Per event, the surprisal (nats) of each factor in ``SCORE_PARTS``: [len(idx), len(SCORE_PARTS)].

    Events whose model inputs are identical (bucket, endpoints, relation, event features and
    expected rates, bit for bit; common in floods and scans) are decoded once (``dedupe``): the
    decoder is a function of its row alone, so their outputs are the same. The per-event parts
    that do not go through the model (hour profile, rate surprise) are computed per event.

    ``reduce`` (a row-wise function of a parts array, e.g. ``HybridDetector.combine``): applied to
    each chunk's parts as soon as they are decoded, and its [len(idx)] values returned instead of
    the parts; the [n, len(SCORE_PARTS)] float64 array of millions of events is never held."""
    model.eval()
    device = next(model.parameters()).device
    gt = GraphTensors(windows, device)
    n_events = len(windows.event_src)
    idx = np.arange(n_events) if idx is None else np.asarray(idx, dtype=np.int64)
    # Events are scored in window order, each once; ``idx`` in that order already (a split's
    # index) is used as it is, anything else is sorted and its rows put back at the end. No
    # per-event map of the whole windows: on DARPA those arrays cost 0.1-0.2 s of page faults.
    ordered = bool(np.all(idx[1:] > idx[:-1]))
    events, back = (idx, None) if ordered else np.unique(idx, return_inverse=True)
    parts = np.full((len(events), len(SCORE_PARTS)) if reduce is None else len(events), np.nan)
    L = model.config.history
    w = windows
    if len(events):
        gt.freeze_coarse(model, int(windows.event_bucket[events[0]]), int(windows.event_bucket[events[-1]]))

    def finish(rows: slice, inputs: _SliceInputs, out: dict[str, Tensor]) -> None:
        with torch.inference_mode():  # thread-local: the worker needs its own
            decoded = decoded_parts(model, w, inputs.sel, out, inputs.inverse)
            parts[rows] = decoded if reduce is None else reduce(decoded)

    def embed(chunk: int) -> SnapshotBatch:
        with torch.inference_mode():
            c0, c1, _ = chunks[chunk]
            return gt.snapshot_embeddings(model, c0 - L, c1 - 1)

    # A flood puts a million events in a day's chunk: they are decoded in slices of at most
    # ``SCORE_SLICE_EVENTS`` against the chunk's embeddings, so the per-event arrays stay small
    # (and in cache: DARPA's test window scored in 4.5-4.8 s in slices of 65,536, 5.0-5.5 s in
    # slices of 262,144 and 5.7-6.0 s in whole chunks).
    chunks = []  # (first bucket, end bucket, slices of ``events``' rows), for chunks with events
    for c0, c1 in _chunks(windows, 0, windows.n_buckets, chunk_buckets):
        lo, hi = np.searchsorted(events, np.searchsorted(windows.event_bucket, [c0, c1]))
        if lo < hi:
            chunks.append((c0, c1, [slice(s0, min(s0 + SCORE_SLICE_EVENTS, hi))
                                    for s0 in range(lo, hi, SCORE_SLICE_EVENTS)]))
    slices = [(c, rows) for c, (_, _, in_chunk) in enumerate(chunks) for rows in in_chunk]
    # Three stages, so that the model never waits for numpy: a worker gathers slice k + 1's
    # inputs and finds its distinct rows while the model decodes slice k, then turns slice k's
    # outputs into parts while the model decodes slice k + 1; it also embeds the next chunk's
    # snapshots ahead. DARPA's test window, first / second call in a process: 4.3 / 4.1 s in one
    # thread, 4.2 / 3.9 s in stages, 4.0 / 3.6 s with the embeddings ahead.
    pool = ThreadPoolExecutor(1, thread_name_prefix="score-parts")
    # The worker keeps one core busy: torch gets the others (on 2 cores: 4.2 / 3.9 s -> 4.05 /
    # 3.7 s; two torch threads and the worker fought over two cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        if slices:
            ready = pool.submit(_slice_inputs, w, events[slices[0][1]], dedupe)
            embedding = pool.submit(embed, 0)
        finishing = None
        for k, (c, rows) in enumerate(slices):
            if k == 0 or c != slices[k - 1][0]:  # the chunk's first slice
                batch = embedding.result()
                if c + 1 < len(chunks):
                    embedding = pool.submit(embed, c + 1)
            inputs = ready.result()
            if k + 1 < len(slices):
                ready = pool.submit(_slice_inputs, w, events[slices[k + 1][1]], dedupe)
            out = _decode_rows(model, gt, batch, *inputs.ids, inputs.x, log_rate=inputs.log_rate, parts_only=True)
            if finishing is not None:
                finishing.result()
            finishing = pool.submit(finish, rows, inputs, out)
        if finishing is not None:
            finishing.result()
    finally:
        pool.shutdown()
        torch.set_num_threads(threads)
    return parts if back is None else parts[back]


SCORE_SLICE_EVENTS = 65_536


@dataclass
class _SliceInputs:
    """The model's inputs for events ``sel`` (``_decode_rows``' arguments): one row per event, or
    with ``inverse`` one per distinct row (``ids``, ``x`` and ``log_rate`` of those rows), event
    i's row being ``inverse[i]`` (``decoded_parts``' argument)."""

    sel: np.ndarray
    ids: list[np.ndarray]  # bucket, source, destination, context, relation
    x: np.ndarray
    log_rate: np.ndarray
    inverse: np.ndarray | None = None


def _slice_inputs(w: GraphWindows, sel: np.ndarray, dedupe: bool) -> _SliceInputs:
    """Events ``sel``'s model inputs and, with ``dedupe``, only their distinct ones (bucket,
    endpoints, relation, decoder features and expected rates, bit for bit)."""
    x = w.event_x[sel].astype(np.float32, copy=False)
    log_rate = log_expected_rates(w, sel)
    columns = (w.event_bucket, w.event_src, w.event_dst, w.event_ctx, w.event_rel)
    if dedupe and max(len(w.event_src), w.n_buckets, w.n_nodes) < 2**31 - 1:
        ids = [a[sel].astype(np.int32) for a in columns]
        first, inverse = _distinct_rows([*ids, x[:, DECODER_IDX], log_rate])
        if len(first) < len(sel):
            rows = sel[first]
            return _SliceInputs(sel, [a[rows] for a in columns], x[first], log_rate[first], inverse)
    return _SliceInputs(sel, [a[sel] for a in columns], x, log_rate)


def score_events(
    model: HybridGNNLSTM, windows: GraphWindows, idx: np.ndarray | None = None, chunk_buckets: int = 24
) -> np.ndarray:
    """Anomaly score ``-log p(event)`` (nats) for events ``idx`` (default: all); higher is stranger."""
    return score_components(model, windows, idx, chunk_buckets).sum(axis=1)


__all__ = [
    "DEFAULT_CURRICULUM",
    "CurriculumStage",
    "EpochStats",
    "GraphTensors",
    "TrainConfig",
    "message_passing_relations",
    "SCORE_PARTS",
    "decoded_parts",
    "log_expected_rates",
    "score_components",
    "score_events",
    "train_hybrid",
    "training_fingerprint",
    "checkpoint_epochs",
]
