"""Quality runs over seeds, the ablation study, and its Dagster job, on small synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anomaly_pipeline.experiments import (
    ABLATIONS,
    ablation_markdown,
    check_targets,
    make_detector,
    quality_markdown,
    run_ablation,
    run_quality,
)
from anomaly_pipeline.graph import WindowConfig


@pytest.fixture(scope="module")
def quality(small_windows):
    return run_quality("synthetic-small", small_windows, ["hybrid_gnn_lstm", "heuristic_rules", "midas_r"],
                       seeds=(0, 1), target_fprs=(0.001, 0.01), epochs_per_stage=1, log=lambda _: None)


def test_quality_run_reports_mean_and_spread_over_seeds(quality):
    s = quality.summary()
    assert set(s["detector"]) == {"hybrid_gnn_lstm", "heuristic_rules", "midas_r"}
    assert (s["seeds"] == 2).all() and len(s) == 3 * 2  # detectors x target FPRs
    hybrid = quality.rows[quality.rows["detector"] == "hybrid_gnn_lstm"]
    assert hybrid["seed"].nunique() == 2
    # Seeds really change the hybrid (initialisation, negatives); rules are deterministic.
    assert hybrid.groupby("seed")["average_precision"].first().nunique() == 2
    rules = s[s["detector"] == "heuristic_rules"]
    assert (rules["average_precision_std"] == 0).all()
    payload = quality.to_json()
    entry = payload["models"]["hybrid_gnn_lstm"]
    assert set(entry["roc_auc"]) == {"mean", "std"}
    assert set(entry["at_fpr"]) == {"0.001", "0.01"}
    assert set(entry["at_fpr"]["0.01"]) == {"tpr", "fpr", "precision", "recall", "f1"}
    json.dumps(payload)  # serialisable as docs/results.json


def test_targets_and_markdown_are_computed_from_the_run(quality):
    targets = check_targets(quality, fpr=0.001)
    ratio = targets["tpr_ratio_vs_best_heuristic"]
    s = quality.summary().set_index(["detector", "target_fpr"])
    assert ratio["hybrid_tpr"] == pytest.approx(s.loc[("hybrid_gnn_lstm", 0.001), "tpr_mean"])
    assert targets["average_precision_vs_best_baseline"]["best_baseline"] in {"heuristic_rules", "midas_r"}
    md = quality_markdown(quality)
    assert "| hybrid_gnn_lstm |" in md and "±" in md and "TPR @ 0.001 FPR" in md


def test_unknown_detector_names_list_the_choices():
    with pytest.raises(ValueError, match="choose from .*midas_f"):
        make_detector("deep_magic", 0)


def test_ablation_compares_both_variants_next_to_the_claim(small_events):
    chosen = tuple(a for a in ABLATIONS if a.name == "multi-scale vs single-scale")
    table = run_ablation("synthetic-small", small_events, WindowConfig(history=4), chosen, seeds=(0,),
                         epochs_per_stage=1, log=lambda _: None)
    row = table.iloc[0]
    assert row["paper_claim"] == "+18%" and row["alternative"] == "multi_scale=False"
    better, alt = row["average_precision_better_mean"], row["average_precision_alternative_mean"]
    assert 0 < better <= 1 and 0 < alt <= 1
    assert row["average_precision_change_pct"] == pytest.approx(100 * (better - alt) / alt)
    assert "multi-scale vs single-scale | +18%" in ablation_markdown(table)


def test_ablation_job_runs_in_dagster(tmp_path):
    from assets.experiments import ablation_job
    from assets.resources import StateResource

    result = ablation_job.execute_in_process(
        run_config={"ops": {"run_ablation_study": {"config": {
            "ablations": ["bidirectional vs unidirectional"], "seeds": [0], "epochs_per_stage": 1,
            "synthetic_seed": 3, "n_users": 30, "n_servers": 8, "days": 5}}}},
        resources={"state": StateResource(home=str(tmp_path))},
    )
    assert result.success
    report = Path(result.output_for_node("run_ablation_study"))
    assert report.is_relative_to(tmp_path)
    assert "bidirectional vs unidirectional | +20%" in report.read_text()
    rows = json.loads(report.with_name("ablation.json").read_text())["rows"]
    assert len(rows) == 1 and np.isfinite(rows[0]["average_precision_better_mean"])


class _Oracle:
    """Scores the truth: every attack above every benign event (to check the latency metric)."""

    name = "oracle"
    threshold_ = 0.5

    def fit(self, windows, idx):
        return self

    def decision_function(self, windows, idx):
        return np.nan_to_num(windows.labels[idx], nan=0.0) + 1e-9 * np.arange(len(idx))


def test_campaign_latency_is_zero_for_a_detector_that_alerts_on_every_attack(small_windows):
    from anomaly_pipeline.evaluation import evaluate_detectors

    # 5 % of validation events is more than the validation window's attack share (2.2 %): the
    # threshold falls among benign scores, so every test attack alerts from its first event on.
    report = evaluate_detectors(small_windows, [_Oracle()], (0.05,))
    latency = report.campaign_latency
    assert len(latency) > 0 and (latency["attack_events"] > 0).all()
    assert (latency["detected_events"] == latency["attack_events"]).all()
    assert (latency["latency_hours"] == 0).all()
