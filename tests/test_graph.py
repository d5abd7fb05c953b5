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
    # u2 works around the clock on days 0-2, so the data covers every hour bin on those days.
    day0 = t0.normalize()
    rows += [{"ts": day0 + pd.Timedelta(days=d, hours=h, minutes=10), "event_type": "auth", "user": "u2",
              "src_host": "WS2", "dst_host": "SRV2", "success": True} for d in range(3) for h in range(1, 24, 3)]
    # A burst of 50 logons from u1 to SRV1 within one minute on day 3, at 21:00.
    rows += [{"ts": t0 + pd.Timedelta(days=3, hours=12, seconds=s), "event_type": "auth", "user": "u1",
              "src_host": "WS1", "dst_host": "SRV1", "success": True} for s in range(50)]
    w = build_graph_windows(_events(rows), WindowConfig(stride_hours=1, window_hours=2, history=2,
                                                        coarse_stride_hours=None))
    u1 = (w.events["user"] == "u1").to_numpy()
    share = w.event_x[u1, F["src_hour_profile_share"]]
    # Day 0: no earlier day. Day 2, 09:xx: 4 earlier events in the 09-12 bin over 2 covered days,
    # mean 4 / 16 per bin-day: (4 + 0.25) / 3 against 0.25 / 3 in each other bin (graph.hour_profile).
    assert share[0] == pytest.approx(1 / 8) and share[4] == pytest.approx(4.25 / 6)
    # The burst's own events never make its hour familiar: all 50 see 6 earlier-day events, none
    # at 21h over 3 covered days: 0.25 / 4 against (6 + 0.25) / 4 + 7 x 0.25 / 4.
    assert np.allclose(share[6:], 0.0625 / 2.0)
    from anomaly_pipeline.rates import rate_surprise

    z = rate_surprise(w.rates.count, w.rates.total, w.rates.t)[u1, 0]  # u1's events, the one-minute scale
    assert z[-1, 0] > 20 * max(z[:6, 0].max(), 1.0)  # the 50th logon of the minute is a burst (nats)
    assert (z[6:, 0][1:] >= z[6:, 0][:-1] - 1e-9).all()  # and it grows with the burst


def test_hour_profile_leaves_hours_the_data_never_covered_neutral():
    """A capture that starts late in the evening: the next morning's traffic of its only host is
    not 'rarely active at this hour', because nothing was observed at that hour before."""
    t0 = pd.Timestamp("2026-01-05 22:00", tz="UTC")
    rows = [{"ts": t0 + pd.Timedelta(minutes=5 * i), "event_type": "network_flow", "src_host": "WS1",
             "dst_host": f"198.51.100.{i % 7}", "bytes_out": 100.0} for i in range(20)]
    rows += [{"ts": t0 + pd.Timedelta(hours=12, minutes=i), "event_type": "network_flow", "src_host": "WS1",
              "dst_host": "198.51.100.1", "bytes_out": 100.0} for i in range(5)]
    w = build_graph_windows(_events(rows), WindowConfig(stride_hours=1, window_hours=2, history=2,
                                                        coarse_stride_hours=None))
    share = w.event_x[:, F["src_hour_profile_share"]]
    # Day 0 covered only 21-24h: WS1's 10:00 traffic on day 1 gets its overall rate, 1 / 8.
    assert share[-5:] == pytest.approx([1 / 8] * 5)
    from anomaly_pipeline.graph import hour_profile

    # Once a bin is covered and quiet, it is rare: 8 events in bin 7 on each of 2 days, bin 3
    # covered (by someone) on both days with none of this source's events.
    prior = np.array([[0, 0, 0, 0, 0, 0, 0, 16.0]])
    exposure = np.array([[0, 0, 0, 2, 0, 0, 0, 2.0]])
    profile = hour_profile(prior, exposure)
    assert profile.sum() == pytest.approx(1.0)
    assert profile[0, 3] == pytest.approx((4 / 3) / (4 / 3 + 20 / 3 + 6 * 4))


def _reference_node_ids(events: pd.DataFrame):
    """The former construction (issue 15): a node table from the typed names of ``_scored_edges``,
    sorted by (type, name), and per-event ids looked up one by one in a dict."""
    from anomaly_pipeline.graph import NODE_TYPES, _scored_edges

    edges = _scored_edges(events)
    usable = edges["src"].notna() & edges["dst"].notna() & (edges["relation"] != "")
    edges = edges[usable.to_numpy()].reset_index(drop=True)
    frames = [
        edges[["src", "src_type"]].set_axis(["name", "node_type"], axis=1),
        edges[["dst", "dst_type"]].set_axis(["name", "node_type"], axis=1),
        edges.loc[edges["ctx"].notna(), ["ctx", "ctx_type"]].set_axis(["name", "node_type"], axis=1),
    ]
    nodes = pd.concat(frames, ignore_index=True).drop_duplicates().reset_index(drop=True)
    nodes["type_order"] = nodes["node_type"].map({t: i for i, t in enumerate(NODE_TYPES)})
    nodes = nodes.sort_values(["type_order", "name"]).reset_index(drop=True).drop(columns="type_order")
    nodes["type_index"] = nodes.groupby("node_type").cumcount()
    key_to_id = {(t, n): i for i, (n, t) in enumerate(zip(nodes["name"], nodes["node_type"], strict=True))}

    def ids(name_col, type_col):
        return np.array([key_to_id.get((t, n), -1) if isinstance(n, str) else -1
                         for n, t in zip(edges[name_col].astype(object), edges[type_col], strict=True)], dtype=np.int64)

    return edges, nodes, ids("src", "src_type"), ids("dst", "dst_type"), ids("ctx", "ctx_type"), int((~usable).sum())


def _mixed_events() -> pd.DataFrame:
    """Every relation, missing names (a logon without destination, a process without host or
    user), internal and external flow destinations, unsorted times."""
    t0 = pd.Timestamp("2026-01-05 09:00", tz="UTC")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(400):
        ts = t0 + pd.Timedelta(minutes=int(rng.integers(0, 60 * 48)))
        kind = i % 7
        user = f"u{rng.integers(0, 6)}" if kind != 1 else None
        host, peer = f"WS{rng.integers(0, 5)}", f"SRV{rng.integers(0, 4)}"
        if kind in (0, 1):
            rows.append({"ts": ts, "event_type": "auth", "user": user, "src_host": host,
                         "dst_host": peer if i % 31 else None, "success": bool(i % 5), "auth_type": "ntlm"})
        elif kind in (2, 3):
            rows.append({"ts": ts, "event_type": "process_start", "user": user if kind == 2 else f"u{i % 3}",
                         "src_host": host if kind == 2 else None, "process": f"p{rng.integers(0, 4)}.exe"})
        else:
            dst = [f"10.0.0.{rng.integers(1, 4)}", f"198.51.100.{rng.integers(1, 4)}", peer][kind - 4]
            rows.append({"ts": ts, "event_type": "network_flow", "user": user if kind == 4 else None,
                         "src_host": host, "dst_host": dst, "dst_port": int(rng.integers(1, 5)) * 80,
                         "protocol": "tcp", "bytes_out": float(rng.integers(0, 5000))})
    rows.append({"ts": t0, "event_type": "process_start", "process": "orphan.exe"})  # no edge at all
    return _events(rows)


def test_vectorised_nodes_and_ids_match_the_former_per_event_lookup(small_events):
    """Issue 15: the node table and the per-event node ids come from one factorisation now; they
    are exactly those of the former dict lookup, on synthetic data and on every relation."""
    for events in (small_events, _mixed_events()):
        ordered = events.sort_values("ts", kind="stable").reset_index(drop=True)
        edges, nodes, src, dst, ctx, dropped = _reference_node_ids(ordered)
        w = build_graph_windows(events, WindowConfig(stride_hours=1, window_hours=2, history=2))
        pd.testing.assert_frame_equal(w.nodes, nodes)
        np.testing.assert_array_equal(w.event_src, src)
        np.testing.assert_array_equal(w.event_dst, dst)
        np.testing.assert_array_equal(w.event_ctx, ctx)
        assert w.meta["events_without_edge"] == dropped
        assert w.event_src.dtype == np.int64 and w.event_x.dtype == np.float32
        assert list(w.events["relation"]) == list(edges["relation"])
        if events is not small_events:
            assert set(w.events["relation"]) == {"logs_on", "runs", "starts", "flows_to", "flows_to_ext", "auth_to"}


def test_rates_hashed_per_node_equal_rates_hashed_per_event():
    """Rate state from node hashes computed once per node equals hashing every event's typed names."""
    from anomaly_pipeline.graph import event_rates

    events = _mixed_events().sort_values("ts", kind="stable").reset_index(drop=True)
    w = build_graph_windows(events, WindowConfig(stride_hours=1, window_hours=2, history=2))
    edges, *_ = _reference_node_ids(events)
    x = w.event_x
    per_event = event_rates(edges, w.event_rel, w.events["ts"], x[:, F["auth_failed"]],
                            (x[:, F["pair_first_seen"]] > 0).astype(np.int8))
    for name in ("count", "total", "t"):
        np.testing.assert_array_equal(getattr(w.rates, name), getattr(per_event, name))


def test_build_does_not_touch_the_callers_frame(small_events):
    """No copy of the event table is made when it is already in time order, and the columns the
    windows add (bucket, split, relation) do not appear in the caller's frame."""
    before = small_events.copy()
    w = build_graph_windows(small_events, WindowConfig(stride_hours=1, window_hours=2, history=2))
    pd.testing.assert_frame_equal(small_events, before)
    assert {"bucket", "split", "relation"} <= set(w.events.columns)


def test_rate_surprise_skips_the_incomplete_gamma_only_where_it_would_underflow():
    """The leading-term shortcut is exact: the same values as computing P(X >= count) for every
    count and falling back to the point mass where it underflows."""
    from scipy.special import gammainc, gammaln

    from anomaly_pipeline.rates import expected_count, rate_surprise

    rng = np.random.default_rng(0)
    n = 20_000
    count = np.exp(rng.uniform(0, 9, (n, 1, 4))).astype(np.float32)
    t = rng.integers(1, 100_000, (n, 1)).astype(np.float32)
    total = np.exp(rng.uniform(-3, 12, (n, 1, 4))).astype(np.float32)
    correction = rng.normal(0, 1, (n, 1, 4))
    mu = expected_count(total, t) * np.exp(correction)
    above = (mu > 0) & (count > mu)
    a, m = np.where(above, count.astype(np.float64), 1.0), np.where(above, mu, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        tail = gammainc(a, m)
        reference = np.where(np.isfinite(-np.log(tail)) & (tail > 1e-250), -np.log(tail),
                             gammaln(a + 1) + m - a * np.log(m))
    reference = np.where(above, np.maximum(reference, 0.0), 0.0)
    got = rate_surprise(count, total, t, correction)
    assert (got > 600).mean() > 0.2 and ((got > 0) & (got < 500)).mean() > 0.1  # both branches taken
    np.testing.assert_array_equal(got, reference)


def test_service_profile_counts_answered_connections_only():
    """A probe of a port nobody answered on stays unlikely however often it repeats (failed
    attempts never enter the profile); once the destination answered on a port, the next
    connection to it is ordinary; a port answered elsewhere is plausible on a new destination."""
    from anomaly_pipeline.graph import service_share

    code = {22: (22 + 1) * 8 + 1, 443: (443 + 1) * 8 + 1, 23: (23 + 1) * 8 + 1}
    # dst 0: a web server answering on 443 (10 connections); then 30 probes of port 23 on dst 0,
    # unanswered; then port 22 on dst 0 answered once and used again; then 443 on a new dst 1;
    # then an event without a port.
    dst = np.array([0] * 10 + [0] * 30 + [0, 0] + [1] + [0])
    service = np.array([code[443]] * 10 + [code[23]] * 30 + [code[22]] * 2 + [code[443]] + [-1])
    opened = np.array([True] * 10 + [False] * 30 + [True, True] + [True] + [True])
    nats = -np.log(service_share(dst, service, opened))
    probes = nats[10:40]
    assert probes.min() > 10 and np.ptp(probes) < 1e-9  # as unlikely on the 30th probe as on the first
    assert nats[41] < nats[40] - 5  # answered once: the next connection to port 22 is ordinary
    assert nats[5] < 0.2  # the web server's usual port
    assert nats[42] < 1.0  # 443 on a destination never seen: the port answers everywhere else
    assert nats[43] == 0.0  # no port, no service part


def test_snapshots_built_in_pieces_equal_one_piece(small_events, monkeypatch):
    """Issue 15: the per-bucket aggregates are built over pieces of events that end at bucket
    boundaries, so the peak holds one piece's role frames. The snapshots (both time scales) are
    bit for bit those of one piece over the whole stream."""
    import anomaly_pipeline.graph as graph

    config = WindowConfig(stride_hours=1, window_hours=3, history=2)
    whole = build_graph_windows(small_events, config)
    monkeypatch.setattr(graph, "SNAPSHOT_CHUNK_EVENTS", 997)  # dozens of pieces, none on a boundary
    pieces = graph._bucket_pieces(whole.event_bucket, 997)
    assert len(pieces) > 5 and pieces[0][0] == 0 and pieces[-1][1] == len(whole.event_bucket)
    assert all(whole.event_bucket[hi - 1] < whole.event_bucket[hi] for _, hi in pieces[:-1])
    chunked = build_graph_windows(small_events, config)
    for name in ("act_ptr", "act_node", "act_x", "snap_ptr", "snap_rel", "snap_src", "snap_dst", "snap_attr",
                 "snap_src_row", "snap_dst_row"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
        np.testing.assert_array_equal(getattr(chunked.coarse, name), getattr(whole.coarse, name), err_msg=name)


def test_clock_fields_from_integer_time_equal_pandas():
    """The hour and weekday features read the clock from the integer time; they equal ``ts.dt``,
    before 1970 too."""
    from anomaly_pipeline.graph import _utc_day_of_week, _utc_minute_of_day

    rng = np.random.default_rng(1)
    ts = pd.Series(pd.to_datetime(rng.integers(-2 * 10**18, 2 * 10**18, size=5000), utc=True))
    np.testing.assert_array_equal(_utc_minute_of_day(ts), (ts.dt.hour * 60 + ts.dt.minute).to_numpy())
    np.testing.assert_array_equal(_utc_day_of_week(ts), ts.dt.dayofweek.to_numpy())
