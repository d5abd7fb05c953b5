"""Each component of the hybrid detector: shapes, masking, attention, and its ablation switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_pipeline.graph import NODE_TYPES
from anomaly_pipeline.models.hybrid import (
    FUSION_MODES,
    CrossAttentionFusion,
    HybridConfig,
    HybridGNNLSTM,
    SpatialEncoder,
    TemporalEncoder,
)
from anomaly_pipeline.training import GraphTensors


def test_temporal_attention_weights_sum_to_one_and_shapes():
    torch.manual_seed(0)
    for bidirectional in (True, False):
        enc = TemporalEncoder(HybridConfig(hidden=16, bidirectional=bidirectional))
        pooled, outputs, weights = enc(torch.randn(7, 5, 16))
        assert pooled.shape == (7, 16) and outputs.shape == (7, 5, 16) and weights.shape == (7, 5)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(7))
        assert enc.lstm.bidirectional is bidirectional


def test_fusion_gate_is_between_zero_and_one():
    fusion = CrossAttentionFusion(HybridConfig(hidden=16))
    fused, gate = fusion(torch.randn(4, 16), torch.randn(4, 16), torch.randn(4, 6, 16))
    assert fused.shape == (4, 16) and ((gate >= 0) & (gate <= 1)).all()


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_every_fusion_mode_gives_one_vector_per_node(mode):
    model = HybridGNNLSTM(HybridConfig(hidden=16, fusion=mode, history=4))
    fused, weights = model.node_states(torch.randn(3, 4, 16))
    assert fused.shape == (3, 16)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


def test_invalid_switches_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="hops must be 0 to 3"):
        HybridConfig(hops=4)
    with pytest.raises(ValueError, match="fusion must be one of"):
        HybridConfig(fusion="sum")


def _tiny_graph():
    x = {t: torch.randn(3, 29) for t in NODE_TYPES}
    rel = ("user", "logs_on", "host")
    rev = ("host", "rev_logs_on", "user")
    edges = {rel: torch.tensor([[0, 1], [0, 0]]), rev: torch.tensor([[0, 0], [0, 1]])}
    attrs = {k: torch.randn(2, 3) for k in edges}
    return x, edges, attrs


def test_homogeneous_variant_shares_weights():
    hetero = SpatialEncoder(HybridConfig(hidden=16, heterogeneous=True))
    homo = SpatialEncoder(HybridConfig(hidden=16, heterogeneous=False))
    n_hetero = sum(p.numel() for p in hetero.parameters())
    n_homo = sum(p.numel() for p in homo.parameters())
    assert n_homo < n_hetero / 4


def test_message_passing_depth_and_attention_switches():
    from anomaly_pipeline.graph import NODE_FEATURES

    x, edges, attrs = _tiny_graph()
    x = {t: torch.randn(3, len(NODE_FEATURES)) for t in NODE_TYPES}
    torch.manual_seed(0)
    no_graph = SpatialEncoder(HybridConfig(hidden=16, hops=0)).eval()
    one_hop = SpatialEncoder(HybridConfig(hidden=16, hops=1)).eval()
    plain = SpatialEncoder(HybridConfig(hidden=16, hops=1, attention=False)).eval()
    assert not any(type(m).__name__ == "GATConv" for m in plain.modules())
    assert any(type(m).__name__ == "GATConv" for m in one_hop.modules())
    with torch.no_grad():
        empty = {k: v[:, :0] for k, v in edges.items()}
        empty_attr = {k: v[:0] for k, v in attrs.items()}
        # Without message passing, edges change nothing; with one hop, host 0's neighbours matter.
        torch.testing.assert_close(no_graph(x, edges, attrs)["host"], no_graph(x, empty, empty_attr)["host"])
        assert not torch.allclose(one_hop(x, edges, attrs)["host"][0], one_hop(x, empty, empty_attr)["host"][0])


def test_history_lookup_masks_inactive_windows_with_the_absent_embedding(small_windows):
    model = HybridGNNLSTM(HybridConfig(hidden=16, history=4))
    gt = GraphTensors(small_windows, torch.device("cpu"))
    batch = gt.snapshot_embeddings(model, 0, 10)
    node = int(small_windows.act_node[0])  # active in snapshot 0
    seq = gt.sequences(batch, torch.tensor([1, 3]), torch.tensor([node, node]), history=4)
    assert seq.shape == (2, 4, 16)
    node_type = int(gt.node_type[node])
    absent = model.spatial.absent[node_type]
    # Bucket 1 looks at snapshots -3..0: the three before the data are absent, snapshot 0 is not.
    for step in range(3):
        torch.testing.assert_close(seq[0, step], absent)
    assert not torch.allclose(seq[0, 3], absent)
    assert np.isfinite(seq.detach().numpy()).all()
