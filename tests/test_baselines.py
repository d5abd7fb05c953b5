"""Baselines: heuristic rules, One-Class SVM and MIDAS / MIDAS-R / MIDAS-F behind the detector interface."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from anomaly_pipeline.baselines import (
    CountMinSketch,
    HeuristicRulesDetector,
    MidasDetector,
    OneClassSVMDetector,
    distinct_destinations,
    failure_burst,
    fan_out,
    first_seen_logon,
    midas_scores,
    rare_process,
    read_darpa_edges,
    recent_failures,
)
from anomaly_pipeline.baselines.midas import glibc_rand
from anomaly_pipeline.detectors import predict
from anomaly_pipeline.schema import conform

T0 = pd.Timestamp("2026-01-05 09:00", tz="UTC")


def make_events(rows: list[dict]) -> pd.DataFrame:
    """Canonical events from dicts with ``s`` = seconds after T0; sorted by time like GraphWindows.events."""
    frame = pd.DataFrame(rows)
    frame["ts"] = T0 + pd.to_timedelta(frame.pop("s"), unit="s")
    frame["event_id"] = [f"t:{i}" for i in range(len(frame))]
    frame["raw_ref"] = frame["event_id"]
    return conform(frame, source="test").sort_values("ts", kind="stable").reset_index(drop=True)


def auth(s: float, user: str | None, src: str, dst: str, success: bool = True) -> dict:
    return {"s": s, "event_type": "auth", "user": user, "src_host": src, "dst_host": dst, "success": success}


def flow(s: float, src: str, dst: str) -> dict:
    return {"s": s, "event_type": "network_flow", "src_host": src, "dst_host": dst}


def proc(s: float, host: str, process: str, user: str = "u1") -> dict:
    return {"s": s, "event_type": "process_start", "src_host": host, "process": process, "user": user}


def random_events(seed: int, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hosts = [f"H{i}" for i in range(12)]
    rows = []
    for s in np.sort(rng.integers(0, 3600, n)):  # whole seconds: many ties
        kind = rng.integers(3)
        h, d = rng.choice(hosts, 2)
        if kind == 0:
            rows.append(auth(s, f"u{rng.integers(5)}", h, d, success=bool(rng.random() < 0.6)))
        elif kind == 1:
            rows.append(flow(s, h, d))
        else:
            rows.append(proc(s, h, f"p{rng.integers(6)}.exe"))
    return make_events(rows)


# ---- heuristic rules ----------------------------------------------------------------------


def test_fan_out_fires_on_a_scan_not_on_steady_traffic():
    # Benign: a host talks to the same 5 servers all hour. Attack: 30 new hosts in 10 minutes.
    benign = [flow(s, "WS1", f"SRV{(s // 20) % 5}") for s in range(0, 3600, 20)]
    scan = [flow(1800 + 20 * i, "WS9", f"H{i:02d}") for i in range(30)]
    events = make_events(benign + scan)
    hits = fan_out(events, max_destinations=20, window_s=600)
    from_scanner = (events["src_host"] == "WS9").to_numpy()
    assert not hits[~from_scanner].any()
    # Destinations 21..30 of the scan (10 events) push the count past 20.
    assert hits[from_scanner].sum() == 10
    assert distinct_destinations(events, window_s=600)[from_scanner].max() == 30
    # The same 30 hosts spread over 5 hours never exceed 20 within 10 minutes.
    slow = make_events(benign + [flow(600 * i, "WS9", f"H{i:02d}") for i in range(30)])
    assert not fan_out(slow, max_destinations=20, window_s=600).any()


def test_failure_burst_fires_on_brute_force_not_on_typos():
    typos = [auth(600 * i, "u1", "WS1", "DC1", success=False) for i in range(3)]
    typos += [auth(600 * i + 5, "u1", "WS1", "DC1") for i in range(3)]
    brute = [auth(3000 + 12 * i, f"u{i}", "WS9", "DC1", success=False) for i in range(10)]  # 10 in 2 min
    brute.append(auth(3125, "u3", "WS9", "DC1", success=True))  # the guess that worked
    events = make_events(typos + brute)
    hits = failure_burst(events, min_failures=5, window_s=300)
    from_attacker = (events["src_host"] == "WS9").to_numpy()
    assert not hits[~from_attacker].any()
    # Failures 5..10 fire, and so does the success right after them.
    assert hits[from_attacker].sum() == 7
    assert bool(hits[-1]) and bool(events["success"].iloc[-1])
    assert recent_failures(events, window_s=300)[from_attacker].max() == 10


def test_first_seen_logon_fires_once_per_new_pair():
    events = make_events(
        [
            auth(0, "u1", "WS1", "SRV1"),  # new pair
            auth(60, "u1", "WS1", "SRV1"),
            auth(120, "u1", "WS2", "SRV1"),  # same account and host from elsewhere: known
            auth(180, "u1", "WS1", "SRV2", success=False),  # new pair, failed
            auth(240, "u1", "WS1", "SRV2"),  # still new: a failure does not make a pair familiar
            auth(300, "u1", "WS1", "SRV2"),
            auth(360, "u2", "WS1", "SRV1"),  # new account on a known host
            flow(420, "WS1", "SRV3"),  # not an authentication
        ]
    )
    assert first_seen_logon(events).tolist() == [True, False, False, True, True, False, True, False]


def test_rare_process_fires_on_first_runs_of_rare_binaries():
    common = [proc(60 * i, f"H{i}", "agent.exe") for i in range(8)]  # spreads to 8 hosts
    repeat = [proc(600 + i, "H0", "agent.exe") for i in range(5)]
    tool = [proc(900, "H5", "mimikatz.exe"), proc(901, "H5", "Mimikatz.exe")]
    events = make_events(common + repeat + tool)
    hits = rare_process(events, max_hosts=3)
    assert hits.tolist() == [True] * 3 + [False] * 5 + [False] * 5 + [True, False]


def test_vectorised_windows_match_a_direct_count():
    events = random_events(seed=5)
    t = (events["ts"] - events["ts"].iloc[0]).dt.total_seconds().to_numpy()
    src, dst = events["src_host"].to_numpy(), events["dst_host"].astype(object).to_numpy()
    is_fail = ((events["event_type"] == "auth") & (events["success"] == False)).fillna(False).to_numpy()  # noqa: E712
    got_dest = distinct_destinations(events, window_s=300)
    got_fail = recent_failures(events, window_s=120)
    for i in range(len(events)):
        before = np.arange(i + 1)
        same = before[(src[before] == src[i]) & (t[i] - t[before] < 300)]
        expected = len({dst[j] for j in same if isinstance(dst[j], str)}) if isinstance(dst[i], str) else 0
        assert got_dest[i] == expected, i
        fails = before[(src[before] == src[i]) & is_fail[before] & (t[i] - t[before] < 120)]
        assert got_fail[i] == len(fails), i


def test_rules_are_causal():
    events = random_events(seed=11)
    detector = HeuristicRulesDetector(fan_out_destinations=3, failure_burst_count=2)
    full = detector.rule_hits(events)
    cut = len(events) // 2
    prefix = detector.rule_hits(events.iloc[:cut].reset_index(drop=True))
    assert full.to_numpy().any(axis=0).all(), "every rule should fire somewhere in this stream"
    np.testing.assert_array_equal(full.to_numpy()[:cut], prefix.to_numpy())


def test_rules_reject_unsorted_events_and_unknown_rules():
    events = make_events([auth(0, "u1", "WS1", "SRV1"), auth(60, "u1", "WS1", "SRV1")])
    with pytest.raises(ValueError, match="sorted by ts"):
        first_seen_logon(events.iloc[::-1])
    with pytest.raises(ValueError, match="unknown"):
        HeuristicRulesDetector(["first_seen_logon", "impossible_travel"])


# ---- MIDAS ---------------------------------------------------------------------------------


def test_glibc_rand_and_hash_match_the_cpp():
    # glibc rand() after srand(1) (srand(0) is the same); hash values printed by the authors'
    # CountMinSketch(2, 2719) after srand(0).
    assert glibc_rand(0, 4) == [1804289383, 846930886, 1681692777, 1714636915]
    assert glibc_rand(42, 2) == [71876166, 708592740]
    sketch = CountMinSketch.seeded(2, 2719, seed=0)
    a = np.array([0, 1, 25524, 123456, -5, 2147483647])
    b = np.array([0, 2, 17, 654321, 3, 2147483647])
    expected = [[452, 2887], [17, 4784], [210, 4051], [1760, 4409], [1677, 5333], [1370, 4940]]
    assert sketch.index(a, b).tolist() == expected


def test_count_min_sketch_never_under_counts():
    rng = np.random.default_rng(0)
    keys = rng.zipf(1.3, 20_000) % 5000
    sketch = CountMinSketch.seeded(2, 97, seed=3)  # small: many collisions
    sketch.add(keys)
    distinct, true_counts = np.unique(keys, return_counts=True)
    estimate = sketch.query(distinct)
    assert (estimate >= true_counts).all()
    assert (estimate > true_counts).any()  # collisions do happen at this size
    roomy = CountMinSketch.seeded(4, 100_003, seed=3)
    roomy.add(keys)
    assert np.mean(roomy.query(distinct) == true_counts) > 0.99


def _sequential_midas(src, dst, t, variant, rows, buckets, alpha, threshold, seed):
    """A direct edge-by-edge transcription of the authors' C++ cores (float32 state)."""
    rand = iter(glibc_rand(seed, 6 * rows))
    kinds = 1 if variant == "midas" else 3
    sketches = [CountMinSketch.from_rand(rows, buckets, rand) for _ in range(kinds)]
    index = [
        sk.index(*args)
        for sk, args in zip(
            sketches, [(src, dst), (src, np.zeros_like(src)), (dst, np.zeros_like(dst))], strict=False
        )
    ]
    cur = [np.zeros(rows * buckets, np.float32) for _ in range(kinds)]
    tot = [np.zeros(rows * buckets, np.float32) for _ in range(kinds)]
    last_score = [np.zeros(rows * buckets, np.float32) for _ in range(kinds)]
    f32 = np.float32
    now, reciprocal, out = 1, f32(0), []
    for e in range(len(src)):
        te = int(t[e])
        if now < te:
            for k in range(kinds):
                if variant == "midas":
                    cur[k][:] = 0
                else:
                    if variant == "midas_f":
                        merge = last_score[k] < f32(threshold)
                        tot[k] += np.where(merge, cur[k], tot[k] * reciprocal)
                    cur[k] *= f32(alpha)
            reciprocal = f32(1) / f32(te - 1)
            now = te
        scores = []
        for k in range(kinds):
            i = index[k][e]
            cur[k][i] += f32(1)
            if variant != "midas_f":
                tot[k][i] += f32(1)
            a, s, tf = cur[k][i].min(), tot[k][i].min(), f32(te)
            if variant == "midas_f":
                score = 0.0 if s == 0 else float(a + s - a * tf) ** 2 / float(s * (tf - f32(1)))
                last_score[k][i] = score
            else:
                score = 0.0 if s == 0 or tf == 1 else float((a - s / tf) * tf) ** 2 / float(s * (tf - f32(1)))
            scores.append(f32(score))
        out.append(max(scores))
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("variant", ["midas", "midas_r", "midas_f"])
def test_midas_matches_an_edge_by_edge_transcription_of_the_cpp(variant):
    rng = np.random.default_rng(7)
    n = 3000
    src = rng.integers(0, 40, n)
    dst = rng.integers(0, 40, n)
    src[1500:1700], dst[1500:1700] = 3, 5  # a burst of one edge
    t = np.sort(rng.integers(1, 120, n))
    t[2000:2010] = t[1990]  # late edges: the C++ puts them in the current tick
    got = midas_scores(src, dst, t, variant=variant, rows=2, buckets=31, threshold=50.0, seed=4)
    want = _sequential_midas(src, dst, t, variant, 2, 31, 0.5, 50.0, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _steady_stream(ticks: int, per_tick: int = 20, seed: int = 0) -> tuple[list, list, list]:
    rng = np.random.default_rng(seed)
    src, dst, t = [], [], []
    for tick in range(1, ticks + 1):
        src += list(rng.integers(0, 50, per_tick))
        dst += list(rng.integers(50, 100, per_tick))
        t += [tick] * per_tick
    return src, dst, t


def test_midas_r_scores_a_burst_above_steady_traffic():
    src, dst, t = _steady_stream(60)
    n_steady = len(src)
    src += [7] * 100  # one edge repeated 100 times in tick 61
    dst += [77] * 100
    t += [61] * 100
    scores = midas_scores(np.array(src), np.array(dst), np.array(t), variant="midas_r", buckets=1024)
    steady = scores[n_steady // 2 : n_steady]  # after the warm-up ticks
    burst = scores[n_steady:]
    assert burst[10:].min() > steady.max()
    assert np.all(np.diff(burst) > 0)  # each copy in the same tick raises the count seen


def _repeated_edge(burst_tick: int | None, copies: int = 300, ticks: int = 120) -> tuple[np.ndarray, ...]:
    """Edge 1 -> 2 once per tick, ``copies`` times in ``burst_tick``."""
    per_tick = np.ones(ticks, dtype=np.int64)
    if burst_tick is not None:
        per_tick[burst_tick - 1] = copies
    t = np.repeat(np.arange(1, ticks + 1), per_tick)
    return np.ones_like(t), np.full_like(t, 2), t


def test_midas_f_keeps_a_burst_out_of_the_totals():
    burst, quiet = _repeated_edge(burst_tick=5), _repeated_edge(burst_tick=None)
    after = {"burst": (burst[2] >= 20) & (burst[2] < 60), "quiet": (quiet[2] >= 20) & (quiet[2] < 60)}
    rise = {}
    for variant in ("midas_r", "midas_f"):
        with_burst = midas_scores(*burst, variant=variant, buckets=1024, threshold=1e3)
        without = midas_scores(*quiet, variant=variant, buckets=1024, threshold=1e3)
        assert with_burst[burst[2] == 5].max() > 1e3  # the burst itself is flagged by both
        rise[variant] = with_burst[after["burst"]].mean() - without[after["quiet"]].mean()
    # MIDAS-R's totals absorbed the 300 copies, so later ordinary ticks look anomalously quiet;
    # MIDAS-F left the flagged ticks out of its totals.
    assert rise["midas_r"] > 2.0
    assert rise["midas_f"] < 0.3 * rise["midas_r"]


def test_midas_scores_are_causal_and_validate_input():
    src, dst, t = (np.array(x) for x in _steady_stream(30, seed=2))
    for variant in ("midas", "midas_r", "midas_f"):
        full = midas_scores(src, dst, t, variant=variant)
        np.testing.assert_array_equal(
            full[:300], midas_scores(src[:300], dst[:300], t[:300], variant=variant)
        )
    with pytest.raises(ValueError, match="unknown MIDAS variant"):
        midas_scores(src, dst, t, variant="midas_x")
    with pytest.raises(ValueError, match="equal length"):
        midas_scores(src, dst[:-1], t)
    with pytest.raises(ValueError, match="32-bit"):
        midas_scores(src + 2**31, dst, t)


# ---- the detector interface ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: HeuristicRulesDetector(),
        lambda: HeuristicRulesDetector({"failure_burst": 2.0}),
        lambda: OneClassSVMDetector(max_fit_rows=1000),
        lambda: MidasDetector("midas_r"),
        lambda: MidasDetector("midas_f"),
    ],
)
def test_detector_interface(make, small_windows):
    detector = make()
    train, test = small_windows.split_index("train"), small_windows.split_index("test")
    assert detector.threshold_ is None
    assert detector.fit(small_windows, train) is detector
    assert isinstance(detector.threshold_, float) and np.isfinite(detector.threshold_)
    scores = detector.decision_function(small_windows, test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    flags = predict(detector, small_windows, test)
    assert flags.shape == (len(test),) and set(np.unique(flags)) <= {0, 1}


def test_detector_names():
    assert HeuristicRulesDetector().name == "heuristic_rules"
    assert HeuristicRulesDetector(["fan_out"]).name == "rule_fan_out"
    assert OneClassSVMDetector().name == "one_class_svm"
    assert [MidasDetector(v).name for v in ("midas", "midas_r", "midas_f")] == ["midas", "midas_r", "midas_f"]


def test_midas_detector_ticks_are_minutes_from_the_start(small_windows):
    detector = MidasDetector("midas_r")
    ticks = detector.ticks(small_windows)
    minutes = (small_windows.events["ts"] - small_windows.events["ts"].iloc[0]).dt.total_seconds() // 60
    np.testing.assert_array_equal(ticks, minutes.to_numpy().astype(np.int64) + 1)
    idx = np.arange(0, len(ticks), 7)
    np.testing.assert_array_equal(
        detector.decision_function(small_windows, idx), detector.stream_scores(small_windows)[idx]
    )


# ---- DARPA sample --------------------------------------------------------------------------

DATA_DIR = Path(
    os.environ.get("ANOMALY_PIPELINE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
DARPA_ZIP = DATA_DIR / "darpa98" / "darpa_original.zip"


@pytest.mark.skipif(not DARPA_ZIP.exists(), reason=f"DARPA edge stream not found at {DARPA_ZIP}")
def test_midas_r_on_a_darpa_sample():
    stream = read_darpa_edges(DARPA_ZIP, nrows=200_000)
    assert len(stream.label) == 200_000 and stream.t[0] == 1 and (np.diff(stream.t) >= 0).all()
    assert 0 < stream.label.sum() < len(stream.label)
    scores = midas_scores(stream.src, stream.dst, stream.t, variant="midas_r")
    assert roc_auc_score(stream.label, scores) > 0.8
