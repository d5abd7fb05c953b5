"""GraphSAINT-style edge sampler: budget, preference for low-degree nodes, unbiased normalisation."""

from __future__ import annotations

import torch

from anomaly_pipeline.sampling import edge_probabilities, horvitz_thompson_sum, sample_edges


def _star_plus_chain():
    # A hub (0) with 40 spokes, plus a chain 41-42-43-44 of low-degree nodes.
    src = torch.tensor([0] * 40 + [41, 42, 43])
    dst = torch.tensor(list(range(1, 41)) + [42, 43, 44])
    return src, dst, 45


def test_expected_kept_edges_match_the_budget_and_low_degree_edges_are_favoured():
    src, dst, n = _star_plus_chain()
    prob = edge_probabilities(src, dst, n, budget=10)
    assert abs(float(prob.sum()) - 10) < 1e-4
    assert prob[-1] > prob[0]  # chain edge vs hub spoke


def test_horvitz_thompson_estimate_is_unbiased_per_node():
    src, dst, n = _star_plus_chain()
    values = torch.arange(len(src), dtype=torch.float64) + 1.0
    truth = torch.zeros(n, dtype=torch.float64).index_add_(0, dst, values)
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(n, dtype=torch.float64)
    trials = 20000
    for _ in range(trials):
        kept, prob = sample_edges(src, dst, n, budget=12, generator=gen)
        total += horvitz_thompson_sum(values[kept], prob.double(), dst[kept], n)
    estimate = total / trials
    assert torch.allclose(estimate, truth, rtol=0.05, atol=0.05)


def test_training_samples_large_snapshot_batches(small_windows):
    from anomaly_pipeline.models.hybrid import HybridConfig, HybridGNNLSTM
    from anomaly_pipeline.training import GraphTensors

    model = HybridGNNLSTM(HybridConfig(hidden=8, history=4))
    full = GraphTensors(small_windows, torch.device("cpu"))
    sampled = GraphTensors(small_windows, torch.device("cpu"), sample_edges_above=50)
    model.train()
    a = sampled.snapshot_embeddings(model, 0, 24)
    model.eval()
    b = sampled.snapshot_embeddings(model, 0, 24)  # no sampling outside training
    c = full.snapshot_embeddings(model, 0, 24)
    assert a.emb.shape == b.emb.shape
    torch.testing.assert_close(b.emb, c.emb)
