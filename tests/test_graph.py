"""Graph windows: typed edges, overlapping windows, causal features, time-ordered split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anomaly_pipeline.graph import (
    EVENT_FEATURES,
    NODE_FEATURES,
    RELATIONS,
    WindowConfig,
    build_graph_windows,
)
from anomaly_pipeline.schema import conform, empty_events

F = {n: i for i, n in enumerate(EVENT_FEATURES)}


def _events(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    frame["raw_ref"] = [f"test:{i + 1}" for i in range(len(frame))]
    return conform(frame, source="test")


def test_every_event_gets_a_typed_edge_and_nodes_have_types(small_windows):
    w = small_windows
    assert len(w.event_src) == len(w.events)
    assert w.meta["events_without_edge"] == 0
    types = w.nodes["node_type"].to_numpy()
    for r, (src_t, _, dst_t) in enumerate(RELATIONS):
        m = w.event_rel == r
        assert (types[w.event_src[m]] == src_t).all()
        assert (types[w.event_dst[m]] == dst_t).all()
    assert w.act_x.shape == (len(w.act_node), len(NODE_FEATURES)) and len(w.act_ptr) == w.n_buckets + 1
    assert w.event_x.shape == (len(w.events), len(EVENT_FEATURES))
    assert np.isfinite(w.act_x).all() and np.isfinite(w.event_x).all()


def test_split_is_time_ordered(small_windows):
    ts = small_windows.events["ts"]
    train = ts[small_windows.split == 0]
    val = ts[small_windows.split == 1]
    test = ts[small_windows.split == 2]
    assert train.max() < val.min() and val.max() < test.min()
    assert len(test) > 0 and small_windows.labels[small_windows.split == 2].sum() > 0


def test_windows_overlap_and_features_are_causal():
    t0 = pd.Timestamp("2026-01-05 09:00", tz="UTC")
    rows = [
        {"ts": t0, "event_type": "auth", "user": "u1", "src_host": "WS1", "dst_host": "SRV1", "success": True},
        {"ts": t0 + pd.Timedelta(minutes=90), "event_type": "auth", "user": "u1", "src_host": "WS1", "dst_host": "SRV1", "success": True},
        {"ts": t0 + pd.Timedelta(minutes=150), "event_type": "auth", "user": "u1", "src_host": "WS1", "dst_host": "SRV2", "success": False},
        {"ts": t0 + pd.Timedelta(hours=5), "event_type": "network_flow", "src_host": "WS1", "dst_host": "198.51.100.7", "bytes_out": 5e6},
    ]
    w = build_graph_windows(_events(rows), WindowConfig(stride_hours=1, window_hours=2, history=2))
    # First-seen is causal: the first u1 -> SRV1 logon is new, the second is not, SRV2 is new again.
    assert w.event_x[:, F["pair_first_seen"]].tolist() == [1.0, 0.0, 1.0, 1.0]
    # Source novelty (logons act as user u1, the flow as host WS1: a different source node), and the
    # hour profile counts completed days only (all four on one day).
    assert w.event_x[:, F["src_first_seen"]].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert w.event_x[:, F["src_hour_profile_share"]].tolist() == pytest.approx([1 / 8] * 4)
    # Rates: every event has a count per aspect; the second u1 -> SRV1 logon is 90 minutes later,
    # so its edge count is itself plus the first one's, decayed over 90 one-minute ticks.
    assert w.rates.count.shape == (4, 1, 4) and (w.rates.count >= 1).all()  # events x time scales x aspects
    assert w.rates.count[1, 0, 0] == pytest.approx(1.0, abs=1e-6)
    assert w.rates.total[1, 0, 0] == pytest.approx(1.0)  # the first logon's tick merged into the history
    assert w.event_x[2, F["auth_failed"]] == 1.0
    # The flow goes to a public address: an external node on a host -> external relation.
    assert w.nodes.set_index("name").loc["198.51.100.7", "node_type"] == "external"
    # Buckets of one hour; the 2-hour window ending with bucket 1 holds events of buckets 0 and 1.
    assert w.event_bucket.tolist() == [0, 1, 2, 5]
    k1 = slice(w.snap_ptr[1], w.snap_ptr[2])
    logon_edges = w.snap_rel[k1] == [r for r, rel in enumerate(RELATIONS) if rel[1] == "logs_on"][0]
    assert np.expm1(w.snap_attr[k1][logon_edges, 0]).round().sum() == 2  # both u1 -> SRV1 logons


def test_empty_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="0 rows"):
        build_graph_windows(empty_events())


def test_adaptive_windows_size_the_stride_by_event_density(small_events):
    dense = build_graph_windows(small_events, WindowConfig(adaptive_events_per_bucket=200))
    sparse = build_graph_windows(small_events, WindowConfig(adaptive_events_per_bucket=800))
    per_bucket = len(small_events) / dense.n_buckets
    assert 150 <= per_bucket <= 260
    assert sparse.config.stride_hours == pytest.approx(4 * dense.config.stride_hours, rel=0.1)
    # The window keeps its multiple of the stride (default 2x: 50% overlap).
    assert dense.config.window_hours == pytest.approx(2 * dense.config.stride_hours)


def test_hour_profile_counts_earlier_days_and_burst_rates_stand_out():
    t0 = pd.Timestamp("2026-01-05 09:00", tz="UTC")
    rows = [{"ts": t0 + pd.Timedelta(days=d, minutes=m), "event_type": "auth", "user": "u1", "src_host": "WS1",
             "dst_host": "SRV1", "success": True} for d in range(3) for m in (0, 30)]
    # A burst of 50 logons from u1 to SRV1 within one minute on day 3, at 21:00.
    rows += [{"ts": t0 + pd.Timedelta(days=3, hours=12, seconds=s), "event_type": "auth", "user": "u1",
              "src_host": "WS1", "dst_host": "SRV1", "success": True} for s in range(50)]
    w = build_graph_windows(_events(rows), WindowConfig(stride_hours=1, window_hours=2, history=2,
                                                        coarse_stride_hours=None))
    share = w.event_x[:, F["src_hour_profile_share"]]
    # Day 0: no earlier day. Day 2, 09:xx: 4 earlier events, all in the 09-12 bin: (4 + 1) / (4 + 8).
    assert share[0] == pytest.approx(1 / 8) and share[4] == pytest.approx(5 / 12)
    # The burst's own events never make its hour familiar: all 50 see 6 earlier-day events, none at 21h.
    assert np.allclose(share[6:], 1 / 14)
    from anomaly_pipeline.rates import rate_surprise

    z = rate_surprise(w.rates.count, w.rates.total, w.rates.t)[:, 0]  # the one-minute scale
    assert z[-1, 0] > 20 * max(z[:6, 0].max(), 1.0)  # the 50th logon of the minute is a burst (nats)
    assert (z[6:, 0][1:] >= z[6:, 0][:-1] - 1e-9).all()  # and it grows with the burst
