"""GraphSAINT-style edge sampling for snapshots too large for one pass (Zeng et al., ICLR 2020).

PyG's samplers need compiled extensions that do not install here, so this is written with torch
operations. The edge sampler keeps edge ``(u, v)`` independently with probability

    p_uv = min(1, budget * (1/deg(u) + 1/deg(v)) / sum_e (1/deg(u_e) + 1/deg(v_e)))

so about ``budget`` edges survive and edges at low-degree nodes (whose neighbourhoods would
otherwise vanish) are favoured. Normalisation: a kept edge stands for ``1 / p_uv`` edges, so
sums over kept edges weighted by ``1 / p_uv`` (Horvitz-Thompson) are unbiased estimates of the
sums over all edges; ``normalise_edge_counts`` applies that to the edge's log-count feature.
"""

from __future__ import annotations

import torch
from torch import Tensor


def edge_probabilities(src: Tensor, dst: Tensor, n_nodes: int, budget: int) -> Tensor:
    """Inclusion probability of each edge [E] for an expected ``budget`` kept edges."""
    degree = torch.bincount(torch.cat([src, dst]), minlength=n_nodes).clamp(min=1).float()
    weight = 1.0 / degree[src] + 1.0 / degree[dst]
    return (budget * weight / weight.sum()).clamp(max=1.0)


def sample_edges(
    src: Tensor, dst: Tensor, n_nodes: int, budget: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Indices of the kept edges and their inclusion probabilities."""
    prob = edge_probabilities(src, dst, n_nodes, budget)
    keep = torch.rand(len(prob), generator=generator, device=prob.device) < prob
    kept = torch.nonzero(keep, as_tuple=False).squeeze(1)
    return kept, prob[kept]


def horvitz_thompson_sum(values: Tensor, prob: Tensor, index: Tensor | None = None, size: int | None = None) -> Tensor:
    """Unbiased estimate of the sum of ``values`` over all edges from the kept ones, per ``index``
    (e.g. the destination node) when given."""
    weighted = values / prob.reshape(-1, *([1] * (values.dim() - 1)))
    if index is None:
        return weighted.sum(dim=0)
    out = torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, weighted)


def normalise_edge_counts(log_count: Tensor, prob: Tensor) -> Tensor:
    """The log-count feature of a kept edge, scaled to the ``1 / p`` edges it stands for."""
    return torch.log1p(torch.expm1(log_count) / prob)
