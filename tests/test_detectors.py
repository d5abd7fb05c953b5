"""The hybrid detector and the baseline: training, scores, thresholds, safe save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly_pipeline.detectors import (
    MODEL_SCALE_PARTS,
    TAIL_SHARE,
    HybridDetector,
    IsolationForestDetector,
    predict,
)
from anomaly_pipeline.evaluation import evaluate_detectors
from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.training import SCORE_PARTS, TrainConfig, score_components


@pytest.fixture(scope="module")
def trained(small_windows):
    epochs = []
    det = HybridDetector(HybridConfig(hidden=16), TrainConfig(seed=1).with_epochs_per_stage(1), on_epoch=epochs.append)
    det.fit(small_windows)
    return det, epochs


def test_training_reports_progress_and_learns_links(trained):
    det, epochs = trained
    assert 1 <= len(epochs) <= 3
    assert all(np.isfinite(e.train_loss) for e in epochs)
    # Link prediction on held-out validation events is better than chance.
    assert max(e.validation_link_auc for e in epochs) > 0.6


def test_scores_are_finite_and_sum_of_parts(trained, small_windows):
    det, _ = trained
    idx = small_windows.split_index("test")
    scores = det.decision_function(small_windows, idx)
    parts = score_components(det.model, small_windows, idx)
    assert parts.shape == (len(idx), len(SCORE_PARTS))
    assert np.isfinite(scores).all()
    assert 0 < predict(det, small_windows, idx).mean() < 0.2
    # fisher: each part's upper-tail probability among validation values, -log summed.
    val_parts = score_components(det.model, small_windows, small_windows.split_index("validation"))
    v, t = np.log1p(np.clip(val_parts, 0, None)), np.log1p(np.clip(parts, 0, None))
    inside = np.ones(len(idx), dtype=bool)
    expected = np.zeros(len(idx))
    for j in range(parts.shape[1]):
        if SCORE_PARTS[j] in MODEL_SCALE_PARTS:
            expected += np.clip(parts[:, j], 0, None)  # at the model's own scale: p = exp(-part)
        elif v[:, j].max() > v[:, j].min():
            expected += -np.log((v[:, j][None, :] >= t[:, j][:, None]).mean(axis=1).clip(1e-12))
            inside &= t[:, j] <= det.tail_start_[j]  # below the exponential tail: empirical p-values
    assert inside.sum() > 10
    np.testing.assert_allclose(scores[inside], expected[inside], atol=0.05, rtol=0.05)
    # Beyond the validation maximum the score keeps rising instead of tying: one factor e per nat.
    calibrated = [SCORE_PARTS[j] not in MODEL_SCALE_PARTS for j in range(parts.shape[1])]
    j = int(np.argmax(np.where(calibrated, np.ptp(v, axis=0), -1)))  # a calibrated part that varies
    steps = np.array([1.0, 3.0, 40.0])
    beyond = np.zeros((3, parts.shape[1]))
    beyond[:, j] = np.expm1(v[:, j].max()) + steps  # nats past the validation maximum
    log_p = det.part_log_pvalues(beyond)[:, j]
    assert log_p[2] < log_p[1] < log_p[0]  # no tie at the maximum: further out is rarer
    np.testing.assert_allclose(np.diff(log_p), -np.diff(steps))
    assert log_p[0] < np.log(TAIL_SHARE) - 0.9  # at least one nat past the tail start
    tail_sum = HybridDetector(combination="tail_sum")
    tail_sum.model, tail_sum.part_quantiles_ = det.model, det.part_quantiles_
    tail_sum.tail_start_ = det.tail_start_
    ts_scores = tail_sum.decision_function(small_windows, idx)
    rank = np.corrcoef(np.argsort(np.argsort(ts_scores)), np.argsort(np.argsort(scores)))[0, 1]
    assert (ts_scores >= 0).all() and rank > 0.5  # the two combinations order events alike
    surprisal = HybridDetector(combination="surprisal")
    surprisal.model = det.model
    np.testing.assert_allclose(surprisal.decision_function(small_windows, idx), parts.sum(axis=1), rtol=1e-5)


def test_unknown_combination_is_refused():
    with pytest.raises(ValueError, match="tail_sum"):
        HybridDetector(combination="max")


def test_attacks_score_higher_than_benign_events(trained, small_windows):
    det, _ = trained
    report = evaluate_detectors(small_windows, [det, IsolationForestDetector().fit(small_windows, small_windows.split_index("train"))])
    hybrid = report.metrics()[det.name]
    assert hybrid["roc_auc"] > 0.75, report.markdown()
    assert set(report.table["detector"]) == {"hybrid_gnn_lstm", "isolation_forest"}
    assert (report.table["threshold"] > 0).all()


def test_save_load_roundtrip_without_pickle(trained, small_windows, tmp_path):
    det, _ = trained
    det.save(tmp_path)
    meta = json.loads((tmp_path / "detector.json").read_text())
    assert meta["model_config"]["hidden"] == 16
    # The weights are a plain state dict: loadable with weights_only=True.
    state = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = HybridDetector.load(tmp_path)
    idx = small_windows.split_index("test")[:500]
    np.testing.assert_allclose(loaded.decision_function(small_windows, idx), det.decision_function(small_windows, idx), rtol=1e-5)


def test_loading_a_model_with_other_features_is_refused(trained, tmp_path):
    det, _ = trained
    det.save(tmp_path)
    meta = json.loads((tmp_path / "detector.json").read_text())
    meta["event_features"] = meta["event_features"][:-1]
    (tmp_path / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="retrain"):
        HybridDetector.load(tmp_path)


def test_calibration_maps_scores_to_validation_tail_shares(trained, small_windows):
    det, _ = trained
    val = det.decision_function(small_windows, small_windows.split_index("validation"))
    tail = det.calibrate(val)
    assert ((tail >= 0) & (tail <= 1)).all()
    # About 1% of validation events sit in the top 1% tail.
    assert np.mean(tail <= 0.01) == pytest.approx(0.01, abs=0.01)
    assert det.calibrate(np.array([val.max() + 100.0]))[0] == 0.0


def test_fine_tune_adapts_a_trained_model_to_another_environment(trained, tmp_path):
    from anomaly_pipeline.graph import build_graph_windows
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

    det, _ = trained
    det.save(tmp_path)
    other = build_graph_windows(generate_events(SyntheticConfig(seed=11, n_users=25, n_servers=6, days=5)))
    loaded = HybridDetector.load(tmp_path)
    before = loaded.decision_function(other, other.split_index("test"))
    assert np.isfinite(before).all()  # behavioural features: scores a new environment out of the box
    loaded.train_config = TrainConfig(max_events_per_chunk=1024)
    loaded.fine_tune(other, epochs=1)
    assert [h.stage for h in loaded.history] == ["fine_tune"]
    after = loaded.decision_function(other, other.split_index("test"))
    assert np.isfinite(after).all() and not np.allclose(before, after)
    assert loaded.threshold_ is not None and loaded.calibration_ is not None


def test_static_gnn_and_lstm_only_baselines_share_the_interface(small_windows):
    from anomaly_pipeline.detectors import lstm_only_detector, static_gnn_detector

    cfg = TrainConfig(max_events_per_chunk=1024).with_epochs_per_stage(1)
    for make, name in ((static_gnn_detector, "static_gnn"), (lstm_only_detector, "lstm_only")):
        det = make(cfg, hidden=16).fit(small_windows, small_windows.split_index("train"))
        assert det.name == name and det.threshold_ is not None
        scores = det.decision_function(small_windows, small_windows.split_index("test"))
        assert np.isfinite(scores).all()
    assert static_gnn_detector().model_config.fusion == "spatial_only"
    assert lstm_only_detector().model_config.hops == 0


def test_scores_combined_per_chunk_equal_combining_all_parts(trained, small_windows):
    """Issue 15: ``decision_function`` combines each chunk's parts as they are decoded
    (``score_components(reduce=...)``); the scores are those of combining the parts of every
    event at once, bit for bit, in the caller's (unsorted) order."""
    det, _ = trained
    idx = np.random.default_rng(0).permutation(small_windows.split_index("test"))
    np.testing.assert_array_equal(det.decision_function(small_windows, idx),
                                  det.combine(score_components(det.model, small_windows, idx)))


def test_deduplicated_scoring_equals_scoring_every_event(trained, small_events):
    """Issue 15: events with identical model inputs (a flood repeats the same edge in the same
    minute) are decoded once; every event's parts equal those of decoding each event on its own,
    to float32 rounding (the decoder sees a different batch size)."""
    from anomaly_pipeline.graph import WindowConfig, build_graph_windows
    from anomaly_pipeline.training import DECODER_IDX, _distinct_rows

    det, _ = trained
    flows = small_events[small_events["event_type"] == "network_flow"]
    # Five floods to new external addresses, 40 flows each in the same minute without volumes:
    # from the third flow of a flood on, the flows' model inputs are identical.
    flood = flows.iloc[len(flows) // 2: len(flows) // 2 + 5].copy()
    flood["dst_host"] = [f"198.51.100.{200 + i}" for i in range(len(flood))]
    for column in ("bytes_out", "bytes_in", "packets", "duration_s"):
        flood[column] = pd.NA
    copies = [flood.assign(event_id=flood["event_id"] + f"-{i}", raw_ref=flood["raw_ref"] + f"-{i}")
              for i in range(40)]
    events = pd.concat([small_events, *copies], ignore_index=True)
    w = build_graph_windows(events, WindowConfig(stride_hours=1, window_hours=2, history=det.model.config.history,
                                                 train_fraction=0.6, validation_fraction=0.2))
    idx = np.arange(len(w.event_src))
    x = w.event_x[:, DECODER_IDX]
    first, inverse = _distinct_rows([w.event_bucket.astype(np.int32), w.event_src.astype(np.int32), x])
    assert len(first) < len(idx) - 100  # the flood's repeats are duplicates
    np.testing.assert_array_equal(x[first][inverse], x)
    fast = score_components(det.model, w, idx)
    each = score_components(det.model, w, idx, dedupe=False)
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, each, rtol=1e-5, atol=1e-5)


def test_scoring_in_event_slices_equals_scoring_whole_chunks(trained, small_windows, monkeypatch):
    """Issue 15: a chunk's events are decoded in slices of ``SCORE_SLICE_EVENTS`` (a flood would
    otherwise make per-event arrays of a million rows); the parts equal those of whole chunks, to
    float32 rounding (the decoder sees another batch size), and the combined scores too."""
    import anomaly_pipeline.training as training

    det, _ = trained
    idx = small_windows.split_index("test")
    whole = score_components(det.model, small_windows, idx)
    monkeypatch.setattr(training, "SCORE_SLICE_EVENTS", 97)
    assert len(idx) > 20 * 97
    sliced = score_components(det.model, small_windows, idx)
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(det.decision_function(small_windows, idx), det.combine(whole), rtol=1e-5, atol=1e-4)


def test_scoring_events_in_any_order_gives_each_its_own_row(trained, small_windows, monkeypatch):
    """``score_components`` scores a split's index (in window order) without a per-event map; any
    other order, with repeats, gets each event's own row back, and the threads it borrows for its
    worker are given back."""
    import torch

    import anomaly_pipeline.training as training

    det, _ = trained
    monkeypatch.setattr(training, "SCORE_SLICE_EVENTS", 97)  # many slices and chunks in flight
    idx = small_windows.split_index("test")
    ordered = score_components(det.model, small_windows, idx)
    threads = torch.get_num_threads()
    shuffled = np.random.default_rng(0).permutation(np.concatenate([idx, idx[:50]]))
    again = score_components(det.model, small_windows, shuffled)
    assert torch.get_num_threads() == threads
    row = {int(e): i for i, e in enumerate(idx)}
    np.testing.assert_allclose(again, ordered[[row[int(e)] for e in shuffled]], rtol=1e-5, atol=1e-5)
    assert score_components(det.model, small_windows, idx[:0]).shape == (0, ordered.shape[1])
