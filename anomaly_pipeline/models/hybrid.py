"""The hybrid GNN-LSTM detector's modules: spatial encoder, temporal encoder, fusion, decoder.

Shapes use S snapshots, N nodes, U (node, bucket) sequences, B scored events, d = ``hidden``.
The model scores an event (a typed edge at a time) by how likely it finds it given the graph
snapshots before it: the anomaly score is ``-log p(event)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, HeteroConv, SAGEConv

from anomaly_pipeline.graph import (
    ATTRIBUTE_CONTEXT,
    BINARY_ATTRIBUTES,
    CONTINUOUS_ATTRIBUTES,
    EDGE_FEATURES,
    EVENT_FEATURES,
    LINK_INPUTS,
    NODE_FEATURES,
    NODE_TYPES,
    RELATIONS,
)
from anomaly_pipeline.rates import ASPECTS

EdgeType = tuple[str, str, str]


def message_passing_relations() -> list[EdgeType]:
    """Each relation plus its reverse, so every node type receives messages."""
    rels: list[EdgeType] = []
    for s, r, d in RELATIONS:
        rels.append((s, r, d))
        rels.append((d, f"rev_{r}", s))
    return rels


FUSION_MODES = ("cross_attention", "concat", "early", "spatial_only")


@dataclass(frozen=True)
class HybridConfig:
    """Architecture hyper-parameters (saved with the weights; the model is rebuilt from them)."""

    hidden: int = 32
    gat_heads: int = 2
    # Message-passing layers (0 to 3): the first is graph attention (or plain GCN-style mean
    # aggregation when ``attention`` is off), the rest GCN-style mean aggregation. 0 = no graph:
    # the temporal encoder sees only each node's own features (the LSTM-only ablation).
    hops: int = 2
    attention: bool = True
    heterogeneous: bool = True  # one weight set per relation type; False shares one across all
    bidirectional: bool = True
    # How the spatial view (latest snapshot) and the temporal view (LSTM over the history) meet:
    # cross_attention (late, gated; default), concat (late, plain concatenation), early (the
    # LSTM's last output only: spatial information enters only through the sequence),
    # spatial_only (static GNN ablation: no LSTM).
    fusion: str = "cross_attention"
    history: int = 6
    # Multi-scale windows: a second LSTM with its own time attention reads each node's coarse
    # (daily) history, and a learned attention over the two scales weighs them per node.
    multi_scale: bool = True
    coarse_history: int = 7
    decoder_hidden: int = 64
    dropout: float = 0.1
    attribute_weight: float = 0.5  # weight of the attribute likelihood in the training loss
    # Rate head: from the fused states, time and the filtered rates, a bounded correction (in log
    # space, at most ``rate_correction_max`` either way) of each aspect's expected count
    # (``anomaly_pipeline.rates``), so the network can learn office hours and busy servers while a
    # burst far above its history stays surprising. Off: the filtered mean is the expectation.
    rate_head: bool = True
    rate_scales: int = 1  # time scales of the rate state (set from the data's windows in training)
    rate_weight: float = 0.5  # weight of the rate head's Poisson loss in training
    rate_correction_max: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.hops <= 3:
            raise ValueError(f"hops must be 0 to 3, got {self.hops}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.hidden % 2:
            raise ValueError(f"hidden must be even (bidirectional LSTM halves), got {self.hidden}")

    def to_dict(self) -> dict:
        return asdict(self)


class SpatialEncoder(nn.Module):
    """Heterogeneous message passing over one batch of snapshots (a disjoint union).

    Layer 1 is graph attention (GAT, Velickovic et al. 2018) with edge features, one weight set
    per relation type; further layers are GCN-style mean aggregation (SAGEConv) for multi-hop
    context. Residual connections and LayerNorm keep embeddings stable. Switches (ablations):
    ``attention=False`` makes layer 1 mean aggregation too, ``heterogeneous=False`` shares one
    weight set across relations and node types, ``hops`` sets the depth (0 = no message passing).

    Shapes:
        x_dict[t]: [S * n_t, len(NODE_FEATURES)] -> out[t]: [S * n_t, hidden]
    """

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        d = config.hidden
        self.config = config
        if config.heterogeneous:
            self.input_proj = nn.ModuleDict({t: nn.Linear(len(NODE_FEATURES), d) for t in NODE_TYPES})
        else:
            shared = nn.Linear(len(NODE_FEATURES), d)
            self.input_proj = nn.ModuleDict({t: shared for t in NODE_TYPES})
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for layer in range(config.hops):

            def make_conv(layer: int = layer) -> nn.Module:
                if layer == 0 and config.attention:
                    return GATConv(
                        (d, d), d, heads=config.gat_heads, concat=False, edge_dim=len(EDGE_FEATURES),
                        add_self_loops=False,
                    )
                return SAGEConv((d, d), d, aggr="mean")

            if config.heterogeneous:
                convs = {rel: make_conv() for rel in message_passing_relations()}
            else:
                one = make_conv()
                convs = {rel: one for rel in message_passing_relations()}
            self.convs.append(HeteroConv(convs, aggr="sum"))
            self.norms.append(nn.ModuleDict({t: nn.LayerNorm(d) for t in NODE_TYPES}))
        self.dropout = nn.Dropout(config.dropout)
        # Embedding of a node in a window where it did nothing, one per node type.
        self.absent = nn.Parameter(0.1 * torch.randn(len(NODE_TYPES), d))

    def forward(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        edge_attr_dict: dict[EdgeType, Tensor],
    ) -> dict[str, Tensor]:
        h = {t: torch.relu(self.input_proj[t](x)) for t, x in x_dict.items()}
        for layer, (conv, norms) in enumerate(zip(self.convs, self.norms, strict=True)):
            attends = layer == 0 and self.config.attention
            kwargs = {"edge_attr_dict": edge_attr_dict} if attends else {}
            out = conv(h, edge_index_dict, **kwargs)
            h = {t: norms[t](h[t] + self.dropout(torch.relu(out[t])) if t in out else h[t]) for t in h}
        return h


class TemporalEncoder(nn.Module):
    """Bidirectional LSTM over each node's last ``history`` snapshot embeddings, with attention
    over time steps (Bahdanau-style additive attention).

    Shapes:
        seq: [U, L, hidden] -> (pooled [U, hidden], outputs [U, L, hidden], weights [U, L])
    """

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        d = config.hidden
        per_dir = d // 2 if config.bidirectional else d
        self.lstm = nn.LSTM(d, per_dir, batch_first=True, bidirectional=config.bidirectional)
        self.attn = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

    def forward(self, seq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs, _ = self.lstm(seq)
        weights = torch.softmax(self.attn(outputs).squeeze(-1), dim=1)
        pooled = torch.einsum("ul,uld->ud", weights, outputs)
        return pooled, outputs, weights


class CrossAttentionFusion(nn.Module):
    """Late fusion: the spatial embedding attends over the temporal outputs (cross-attention),
    then a learned gate weighs spatial against temporal per dimension (adaptive weighting).

    Shapes:
        spatial [U, d], temporal [U, d], outputs [U, L, d] -> fused [U, d], gate [U, d]
    """

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        d = config.hidden
        self.cross = nn.MultiheadAttention(d, num_heads=2, batch_first=True)
        self.temporal_proj = nn.Linear(2 * d, d)
        self.gate = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, spatial: Tensor, temporal: Tensor, outputs: Tensor) -> tuple[Tensor, Tensor]:
        attended, _ = self.cross(spatial.unsqueeze(1), outputs, outputs, need_weights=False)
        temporal_repr = self.temporal_proj(torch.cat([temporal, attended.squeeze(1)], dim=-1))
        gate = torch.sigmoid(self.gate(torch.cat([spatial, temporal_repr], dim=-1)))
        return self.norm(gate * spatial + (1 - gate) * temporal_repr), gate


class SupervisedHead(nn.Module):
    """Logit that an event is an attack, from the same representation as the link head; trained
    only where labels exist (multi-task with the self-supervised objectives)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        d, hd = config.hidden, config.decoder_hidden
        self.mlp = nn.Sequential(nn.Linear(3 * d + 8 + len(LINK_INPUTS), hd), nn.ReLU(), nn.Linear(hd, 1))

    def forward(self, z: Tensor, link_x: Tensor) -> Tensor:
        return self.mlp(torch.cat([z, link_x], dim=-1)).squeeze(-1)


class EventDecoder(nn.Module):
    """Two heads over an event's source, destination and context representations.

    * link head: logit that the (source, destination, relation) edge is real at this time, against
      corrupted destinations (temporal link prediction);
    * attribute head: Bernoulli outcome and protocol flags, and independent Student-t
      distributions over the standardised volume and pair-rhythm attributes, given the structure,
      so a failure, an unusual volume or a machine-like rhythm on a familiar edge is unlikely;
    * rate head: a bounded log correction of each aspect's filtered expected count per tick
      (``anomaly_pipeline.rates``) from the same context, time and those expectations.

    Shapes: h_* [B, d], has_ctx [B] bool, rel [B] long, link_x [B, len(LINK_INPUTS)],
    attr_ctx [B, len(ATTRIBUTE_CONTEXT)] -> link logit [B], binary attribute logits [B, Tb],
    continuous attribute mean and log-variance [B, Tc]
    """

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        d, hd = config.hidden, config.decoder_hidden
        self.rel_emb = nn.Embedding(len(RELATIONS), 8)
        self.no_context = nn.Parameter(torch.zeros(d))
        self.link = nn.Sequential(
            nn.Linear(3 * d + 8 + len(LINK_INPUTS), hd),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(hd, hd),
            nn.ReLU(),
            nn.Linear(hd, 1),
        )
        self.attribute = nn.Sequential(
            nn.Linear(3 * d + 8 + len(ATTRIBUTE_CONTEXT), hd),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(hd, hd),
            nn.ReLU(),
            nn.Linear(hd, len(BINARY_ATTRIBUTES) + 2 * len(CONTINUOUS_ATTRIBUTES)),
        )
        self.rate_correction_max = config.rate_correction_max
        self.rate = nn.Sequential(
            nn.Linear(3 * d + 8 + len(LINK_INPUTS) + config.rate_scales * len(ASPECTS), hd),
            nn.ReLU(),
            nn.Linear(hd, len(ASPECTS)),
        )

    def forward(
        self, h_src: Tensor, h_dst: Tensor, h_ctx: Tensor, has_ctx: Tensor, rel: Tensor, link_x: Tensor, attr_ctx: Tensor,
        log_rate: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """log_rate [B, S * A]: log1p of each aspect's filtered expected count at each time scale;
        returns, last, the rate head's log correction of each aspect's expectations [B, A] (the
        same at every scale; None without ``log_rate``)."""
        z = self.context(h_src, h_dst, h_ctx, has_ctx, rel)
        logit = self.link(torch.cat([z, link_x], dim=-1)).squeeze(-1)
        out = self.attribute(torch.cat([z, attr_ctx], dim=-1))
        nb = len(BINARY_ATTRIBUTES)
        mean, log_var = out[:, nb:].chunk(2, dim=-1)
        correction = None
        if log_rate is not None:
            raw = self.rate(torch.cat([z, link_x, log_rate], dim=-1))
            correction = self.rate_correction_max * torch.tanh(raw / self.rate_correction_max)
        return logit, out[:, :nb], mean, log_var.clamp(-3.0, 6.0), correction

    def context(self, h_src: Tensor, h_dst: Tensor, h_ctx: Tensor, has_ctx: Tensor, rel: Tensor) -> Tensor:
        """[B, 3d + 8]: source, destination, context (or the learned "no context") and relation."""
        h_ctx = torch.where(has_ctx.unsqueeze(-1), h_ctx, self.no_context.expand_as(h_ctx))
        return torch.cat([h_src, h_dst, h_ctx, self.rel_emb(rel)], dim=-1)


class HybridGNNLSTM(nn.Module):
    """Spatial encoder + temporal encoder + fusion + decoder, trained jointly end to end."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config
        self.spatial = SpatialEncoder(config)
        self.temporal = TemporalEncoder(config)
        if config.multi_scale:
            self.coarse_temporal = TemporalEncoder(config)
            self.scale_attn = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.Tanh(),
                                            nn.Linear(config.hidden, 1, bias=False))
        self.fusion = CrossAttentionFusion(config)
        self.concat = nn.Sequential(nn.Linear(2 * config.hidden, config.hidden), nn.ReLU())
        self.decoder = EventDecoder(config)
        self.supervised = SupervisedHead(config)
        self.register_buffer("event_mean", torch.zeros(len(EVENT_FEATURES)))
        self.register_buffer("event_std", torch.ones(len(EVENT_FEATURES)))
        # Weight of the supervised head's -log(1 - p(attack)) in the score (0: not trained).
        self.register_buffer("supervised_weight", torch.zeros(()))

    def node_states(self, seq: Tensor, coarse_seq: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Fused representation from a node's history of snapshot embeddings.

        seq: [U, L, d], oldest first; the last step is the most recent snapshot (the spatial view).
        coarse_seq: [U, Lc, d] the node's completed coarse (daily) snapshots, oldest first, or None
        for a single scale. Returns fused [U, d] and the fine time attention weights [U, L].
        """
        mode = self.config.fusion
        if mode == "spatial_only":
            return seq[:, -1], torch.nn.functional.one_hot(
                torch.full((len(seq),), seq.shape[1] - 1, device=seq.device), seq.shape[1]
            ).float()
        pooled, outputs, weights = self.temporal(seq)
        temporal = outputs[:, -1] if mode == "early" else pooled
        if coarse_seq is not None and self.config.multi_scale:
            coarse_pooled, coarse_outputs, _ = self.coarse_temporal(coarse_seq)
            scales = torch.stack([temporal, coarse_pooled], dim=1)  # [U, 2, d]
            scale_weights = torch.softmax(self.scale_attn(scales).squeeze(-1), dim=1)
            temporal = torch.einsum("us,usd->ud", scale_weights, scales)
            outputs = torch.cat([coarse_outputs, outputs], dim=1)  # cross-attention sees both scales
        if mode == "early":
            return temporal, weights
        if mode == "concat":
            return self.concat(torch.cat([seq[:, -1], temporal], dim=-1)), weights
        fused, _ = self.fusion(seq[:, -1], temporal, outputs)
        return fused, weights
