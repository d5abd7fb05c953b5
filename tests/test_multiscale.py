"""Multi-scale windows: a coarse (daily) scale next to the fine one, without looking ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly_pipeline.graph import WindowConfig, build_graph_windows
from anomaly_pipeline.models.hybrid import FUSION_MODES, HybridConfig, HybridGNNLSTM
from anomaly_pipeline.training import CurriculumStage, GraphTensors, TrainConfig, score_events, train_hybrid


def test_coarse_snapshots_cover_each_day_and_map_every_bucket(small_windows):
    w = small_windows
    c = w.coarse
    assert c is not None and c.stride_hours == 24.0
    days = w.events["ts"].dt.floor("1D")
    assert c.n_snapshots == days.nunique()  # 5 synthetic days -> 5 daily snapshots
    # Every fine bucket maps to the day its start falls in; the map never goes backwards.
    starts = w.t0 + pd.to_timedelta(np.arange(w.n_buckets) * w.config.stride_hours, unit="h")
    expected = ((starts.floor("1D") - days.min()) / pd.Timedelta("1D")).astype(int)
    np.testing.assert_array_equal(c.of_bucket, expected)
    # A day's snapshot holds every node active that day: the out-degree feature counts its events.
    day_of_event = ((days - days.min()) / pd.Timedelta("1D")).astype(int).to_numpy()
    for day in range(c.n_snapshots):
        rows = slice(c.act_ptr[day], c.act_ptr[day + 1])
        active = set(c.act_node[rows].tolist())
        on_day = day_of_event == day
        assert set(w.event_src[on_day].tolist()) <= active and set(w.event_dst[on_day].tolist()) <= active


def test_coarse_scale_must_be_the_longer_one():
    with pytest.raises(ValueError, match="coarse_stride_hours"):
        WindowConfig(window_hours=2.0, coarse_stride_hours=1.0)
    single = WindowConfig(coarse_stride_hours=None)
    assert single.coarse_stride_hours is None


def test_scale_attention_weighs_both_scales_and_changes_the_output():
    torch.manual_seed(0)
    model = HybridGNNLSTM(HybridConfig(hidden=16, history=4, coarse_history=3)).eval()
    seq, coarse = torch.randn(5, 4, 16), torch.randn(5, 3, 16)
    single, w_single = model.node_states(seq)
    multi, w_multi = model.node_states(seq, coarse)
    assert multi.shape == (5, 16) and w_multi.shape == (5, 4)
    torch.testing.assert_close(w_single, w_multi)  # fine time attention is reported unchanged
    assert not torch.allclose(single, multi)  # the daily history is really used
    scales = torch.stack([model.temporal(seq)[0], model.coarse_temporal(coarse)[0]], dim=1)
    weights = torch.softmax(model.scale_attn(scales).squeeze(-1), dim=1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    for mode in FUSION_MODES:
        m = HybridGNNLSTM(HybridConfig(hidden=16, history=4, coarse_history=3, fusion=mode)).eval()
        assert m.node_states(seq, coarse)[0].shape == (5, 16)


def test_single_scale_switch_removes_the_coarse_path():
    model = HybridGNNLSTM(HybridConfig(hidden=16, multi_scale=False))
    assert not hasattr(model, "coarse_temporal")
    assert not any(name.startswith(("coarse_temporal.", "scale_attn.")) for name, _ in model.named_parameters())


def test_coarse_sequences_only_hold_completed_days(small_windows):
    w = small_windows
    model = HybridGNNLSTM(HybridConfig(hidden=16, history=4, coarse_history=2)).eval()
    gt = GraphTensors(w, torch.device("cpu"))
    with torch.no_grad():
        batch = gt.snapshot_embeddings(model, 0, w.n_buckets)
        bucket = torch.arange(w.n_buckets)
        node = torch.from_numpy(np.full(w.n_buckets, int(w.event_src[0])))
        seq = gt.coarse_sequences(batch, bucket, node, 2)
    assert seq.shape == (w.n_buckets, 2, 16)
    absent = model.spatial.absent[gt.node_type[node[0]]]
    first_day = np.flatnonzero(w.coarse.of_bucket == 0)
    # On the first day there is no completed day yet: both steps are "absent".
    assert torch.equal(seq[first_day], absent.expand(len(first_day), 2, 16))


def test_scores_do_not_depend_on_later_events(small_events):
    """No look-ahead at either scale: truncating the data after time T leaves every earlier
    event's score unchanged (the current day's coarse snapshot is never read)."""
    config = WindowConfig(history=3, coarse_history=2)
    full = build_graph_windows(small_events, config)
    stages = (CurriculumStage("only", epochs=1, negatives="mixed"),)
    model, _ = train_hybrid(full, HybridConfig(hidden=16), TrainConfig(stages=stages, max_events_per_chunk=512,
                                                                          device="cpu"))
    cut = full.events["ts"].iloc[int(len(full.events) * 0.7)].floor("1h") + pd.Timedelta(minutes=30)
    early = build_graph_windows(small_events[small_events["ts"] < cut], config)
    assert early.coarse.n_snapshots <= full.coarse.n_snapshots
    n = len(early.events)
    pd.testing.assert_series_equal(early.events["event_id"], full.events["event_id"].iloc[:n], check_names=False)
    np.testing.assert_allclose(score_events(model, early), score_events(model, full, np.arange(n)),
                               rtol=1e-4, atol=1e-4)
