"""Explanations come from the model: score parts, time attention, graph attention, reasons."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_pipeline.detectors import HybridDetector
from anomaly_pipeline.explain import explain_events
from anomaly_pipeline.models.hybrid import HybridConfig
from anomaly_pipeline.training import CurriculumStage, TrainConfig, score_components


@pytest.fixture(scope="module")
def detector(small_windows):
    cfg = TrainConfig(stages=(CurriculumStage("one", epochs=1),), max_events_per_chunk=1024, chunk_buckets=24)
    return HybridDetector(HybridConfig(hidden=16, history=4), cfg).fit(small_windows)


def test_explanations_add_up_and_attend(detector, small_windows):
    test = small_windows.split_index("test")
    scores = detector.decision_function(small_windows, test)
    top = test[np.argsort(-scores)[:5]]
    explanations = explain_events(detector.model, small_windows, top)
    parts = score_components(detector.model, small_windows, top)
    for ex, p, i in zip(explanations, parts, top, strict=True):
        assert ex.event_id == small_windows.events["event_id"].iloc[i]
        assert ex.score == pytest.approx(p.sum(), rel=1e-3, abs=1e-3)
        weights = [t["weight"] for t in ex.time_attention]
        assert len(weights) == 4 and sum(weights) == pytest.approx(1.0, abs=1e-3)
        assert all(0 <= n["attention"] <= 1 for n in ex.neighbours)
        assert ex.to_dict()["reasons"] == ex.reasons


def test_first_seen_logon_is_explained_in_words(detector, small_windows):
    from anomaly_pipeline.graph import EVENT_FEATURES, RELATION_INDEX

    f = EVENT_FEATURES.index("pair_first_seen")
    test = small_windows.split_index("test")
    first = test[(small_windows.event_x[test, f] == 1) & (small_windows.event_rel[test] == RELATION_INDEX["logs_on"])]
    assert len(first), "the synthetic test window should contain first-seen logons"
    ex = explain_events(detector.model, small_windows, first[:1])[0]
    assert any(r.startswith("first logs_on from") for r in ex.reasons)
