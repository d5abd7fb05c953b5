"""Quality runs over seeds and datasets, the targets, the ablation study and its Dagster job, and
both benchmark scripts, on tiny data: small synthetic sets, every 1500th DARPA line (3,037 edges
over the whole stream), a sparse LANL-style background, the 5,663-line Zeek capture."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_pipeline import experiments
from anomaly_pipeline.detect import find_dataset, window_config_for
from anomaly_pipeline.detectors import HybridDetector
from anomaly_pipeline.experiments import (
    ABLATIONS,
    CachedHybrid,
    DataOptions,
    QualityRun,
    ablation_markdown,
    campaign_metrics,
    campaigns_of_test_window,
    check_targets,
    default_detectors,
    labelled_test_index,
    make_detector,
    part_metrics,
    quality_data,
    quality_markdown,
    run_ablation,
    run_quality,
    targets_markdown,
)
from anomaly_pipeline.graph import WindowConfig
from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
from anomaly_pipeline.training import SCORE_PARTS, TrainConfig, score_components

ROOT = Path(__file__).resolve().parents[1]
SMALL_SYNTHETIC = {"n_users": 30, "n_servers": 8, "days": 5, "events_per_user_day": 40.0}
TINY_SYNTHETIC = {"n_users": 15, "n_servers": 5, "days": 4, "events_per_user_day": 20.0}
DARPA_EVERY = 1500  # 3,037 edges spread over the whole stream: the detect split keeps its attacks
TINY_LANL = DataOptions(lanl_scale=0.01, lanl_events_per_user_day=2.0, lanl_machine_events_per_computer_day=0.5)


def _have(name: str) -> bool:
    return find_dataset(name) is not None


needs_darpa = pytest.mark.skipif(not _have("darpa98"), reason="DARPA 1998 stream not found (../shared/datasets)")
needs_zeek = pytest.mark.skipif(not _have("stratosphere-008-mixed"), reason="Stratosphere 008 capture not found")
needs_redteam = pytest.mark.skipif(not _have("lanl-redteam"), reason="LANL red-team file not found")
quiet = lambda _: None  # noqa: E731


# ---------------------------------------------------------------------------------------------
# Quality runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quality(small_windows):
    return run_quality("synthetic", small_windows,
                       ["hybrid_gnn_lstm", "hybrid_tail_sum", "heuristic_rules", "rule_rare_process", "midas_r"],
                       seeds=(0, 1), target_fprs=(0.001, 0.01), epochs_per_stage=1, log=quiet)


def test_quality_run_reports_mean_and_spread_over_seeds(quality):
    s = quality.summary()
    assert list(s["detector"].unique()) == ["hybrid_gnn_lstm", "hybrid_tail_sum", "heuristic_rules",
                                            "rule_rare_process", "midas_r"]
    assert (s["seeds"] == 2).all() and len(s) == 5 * 2  # detectors x target FPRs
    hybrid = quality.rows[quality.rows["detector"] == "hybrid_gnn_lstm"]
    assert hybrid["seed"].nunique() == 2
    # Seeds really change the hybrid (initialisation, negatives); rules on fixed data are deterministic.
    assert hybrid.groupby("seed")["average_precision"].first().nunique() == 2
    rules = s[s["detector"] == "heuristic_rules"]
    assert (rules["average_precision_std"] == 0).all()
    assert (quality.rows["score_seconds"] >= 0).all() and (hybrid["fit_seconds"] > 0).all()
    payload = quality.to_json()
    entry = payload["models"]["hybrid_gnn_lstm"]
    assert set(entry["roc_auc"]) == {"mean", "std"}
    assert set(entry["at_fpr"]) == {"0.001", "0.01"}
    assert set(entry["at_fpr"]["0.01"]) == {"tpr", "fpr", "precision", "recall", "f1"}
    json.dumps(payload, allow_nan=False)  # serialisable as docs/results.json


def test_combination_variant_scores_the_hybrids_own_model(quality):
    rows = quality.rows.drop_duplicates(["detector", "seed"]).set_index(["detector", "seed"])
    for seed in (0, 1):
        # No second training; a different combination of the same parts gives a different ranking.
        assert rows.loc[("hybrid_tail_sum", seed), "fit_seconds"] == 0.0
        assert rows.loc[("hybrid_tail_sum", seed), "roc_auc"] != rows.loc[("hybrid_gnn_lstm", seed), "roc_auc"]
    assert set(quality.parts["detector"]) == {"hybrid_gnn_lstm"}  # parts for the hybrid only


def test_hybrid_score_parts_are_reported_per_seed(quality):
    parts = quality.parts
    assert len(parts) == 2 * len(SCORE_PARTS)
    assert list(parts[parts["seed"] == 0]["part"]) == list(SCORE_PARTS)
    assert parts["roc_auc"].between(0, 1).all() and parts["average_precision"].between(0, 1).all()
    # Each attack is led by at most one part; the supervised head is off (weight 0): constant.
    assert (parts.groupby("seed")["lead_share"].sum() <= 1 + 1e-9).all()
    supervised = parts[parts["part"] == "supervised_attack"]
    assert supervised["constant"].all() and np.allclose(supervised["roc_auc"], 0.5)
    summary = quality.parts_summary().set_index("part")
    assert summary.loc["link_surprise", "roc_auc_mean"] == pytest.approx(
        parts[parts["part"] == "link_surprise"]["roc_auc"].mean())
    json_parts = quality.to_json()["models"]["hybrid_gnn_lstm"]["score_parts"]
    assert list(json_parts) == list(SCORE_PARTS) and json_parts["supervised_attack"]["constant"] is True
    md = quality_markdown(quality)
    assert "| rate_edge |" in md and "| supervised_attack (constant: off) |" in md and "leads on attacks" in md


def test_cached_views_and_part_metrics_match_direct_scoring(small_windows, monkeypatch):
    det = HybridDetector(train_config=TrainConfig(seed=0).with_epochs_per_stage(1)).fit(small_windows)
    idx = labelled_test_index(small_windows)
    y = small_windows.labels[idx].astype(int)
    direct = score_components(det.model, small_windows, idx)
    calls = []
    real = experiments.score_components
    monkeypatch.setattr(experiments, "score_components", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = experiments._PartsCache(det.model)
    fisher, tail = CachedHybrid(det, cache), CachedHybrid(det, cache, "tail_sum", name="tail")
    assert np.allclose(fisher.decision_function(small_windows, idx), det.combine(direct))
    assert tail.threshold_ is None and det.combination == "fisher"  # the view copies, never mutates
    tail_direct = HybridDetector(combination="tail_sum")
    tail_direct.part_quantiles_, tail_direct.tail_start_ = det.part_quantiles_, det.tail_start_
    assert np.allclose(tail.decision_function(small_windows, idx), tail_direct.combine(direct))
    rows = {r["part"]: r for r in part_metrics(fisher, small_windows)}
    assert len(calls) == 1  # one scoring pass served both views and the part metrics
    j = SCORE_PARTS.index("link_surprise")
    assert rows["link_surprise"]["roc_auc"] == pytest.approx(roc_auc_score(y, direct[:, j]))
    assert rows["link_surprise"]["average_precision"] == pytest.approx(average_precision_score(y, direct[:, j]))


def test_unknown_detector_names_list_the_choices():
    with pytest.raises(ValueError, match="choose from .*midas_f"):
        make_detector("deep_magic", 0)


def test_default_detectors_follow_the_event_types(small_events):
    synthetic = default_detectors(small_events)
    assert synthetic[0] == "hybrid_gnn_lstm" and {"static_gnn", "lstm_only", "midas_r", "midas_f",
                                                  "isolation_forest", "one_class_svm"} <= set(synthetic)
    assert {"heuristic_rules", "rule_first_seen_logon", "rule_rare_process", "rule_fan_out",
            "rule_failure_burst"} <= set(synthetic)
    flows = small_events.assign(event_type="network_flow")
    assert not any(d.endswith("rules") or d.startswith("rule_") for d in default_detectors(flows))
    auth_only = small_events.assign(event_type="auth")
    assert "rule_first_seen_logon" in default_detectors(auth_only)
    assert "rule_rare_process" not in default_detectors(auth_only)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def test_synthetic_data_are_generated_per_seed():
    data = quality_data("synthetic", DataOptions(synthetic=SMALL_SYNTHETIC), quiet)
    assert data.per_seed and data.subset.startswith("SyntheticConfig(n_users=30")
    run = run_quality("synthetic", data, ["heuristic_rules", "midas_r"], seeds=(0, 1), log=quiet)
    per_seed = run.info["per_seed"]
    for seed in (0, 1):
        expected = generate_events(SyntheticConfig(seed=seed, **SMALL_SYNTHETIC))
        assert per_seed[str(seed)]["events"] == len(expected)
    assert per_seed["0"]["events"] != per_seed["1"]["events"]
    # Rules run on each seed's own data: their numbers differ between seeds.
    rules = run.rows[run.rows["detector"] == "heuristic_rules"].drop_duplicates("seed")
    assert rules["average_precision"].nunique() == 2
    md = quality_markdown(run)
    assert "2 data sets, seed s generating the data" in md and "**Subset: SyntheticConfig(n_users=30" in md
    # Per campaign: every campaign of each seed's test window, one AP per (seed, detector, campaign),
    # each the AP of that campaign's attacks against all benign test events.
    windows = data.windows(1)
    campaigns = campaigns_of_test_window(windows)
    y = windows.labels[labelled_test_index(windows)]
    assert set(campaigns[y == 0]) == {""} and len(set(campaigns[y == 1])) >= 3
    seed1 = run.campaigns[(run.campaigns["seed"] == 1) & (run.campaigns["detector"] == "midas_r")]
    assert sorted(seed1["campaign"]) == sorted(set(campaigns[y == 1]))
    assert seed1["attacks"].sum() == int(y.sum())
    det = make_detector("midas_r", 1).fit(windows, windows.split_index("train"))
    direct = {r["campaign"]: r["average_precision"] for r in campaign_metrics(det, windows, campaigns)}
    assert direct == pytest.approx(dict(zip(seed1["campaign"], seed1["average_precision"], strict=True)))
    assert "Per campaign: AP of each model's score" in md
    assert set(run.to_json()["models"]["heuristic_rules"]["campaigns"]) == set(campaigns[y == 1])


@pytest.fixture(scope="module")
def darpa_small():
    if not _have("darpa98"):
        pytest.skip("DARPA 1998 stream not found")
    return quality_data("darpa98", DataOptions(every=DARPA_EVERY), quiet)


@needs_darpa
def test_darpa_subset_spans_the_stream_with_the_detect_split(darpa_small):
    windows = darpa_small.windows(0)
    assert len(windows.events) == 3_037 and darpa_small.subset == "every 1500th line"
    lines = windows.events["raw_ref"].astype(str).str.rsplit(":", n=1).str[1].astype(int)
    assert ((lines - 1) % DARPA_EVERY == 0).all()  # stream positions 0, 1500, 3000, ...
    assert windows.config.train_fraction == window_config_for(0.2).train_fraction
    assert windows.events["ts"].min() < pd.Timestamp("1998-06-02", tz="UTC")
    assert windows.events["ts"].max() > pd.Timestamp("1998-07-31", tz="UTC")
    test = windows.labels[labelled_test_index(windows)]
    assert 0 < test.sum() < len(test)
    assert default_detectors(windows.events) == ["hybrid_gnn_lstm", "static_gnn", "lstm_only", "isolation_forest",
                                                 "one_class_svm", "midas_r", "midas_f"]


@needs_darpa
def test_darpa_head_too_short_to_split_says_so():
    data = quality_data("darpa98", DataOptions(max_edges=5_000), quiet)
    with pytest.raises(ValueError, match=r"darpa98 \(first 5,000 lines\): the validation split holds no events"):
        data.windows(0)


@needs_zeek
def test_zeek008_is_read_and_split_as_detect_does():
    from anomaly_pipeline.detect import build_windows, read_validated

    windows = quality_data("zeek008", log=quiet).windows(0)
    reference = build_windows(read_validated(find_dataset("stratosphere-008-mixed"), "zeek").valid, 0.3, quiet)
    assert len(windows.events) == 5_663
    for split in ("train", "validation", "test"):
        assert len(windows.split_index(split)) == len(reference.split_index(split))


@needs_redteam
def test_lanl_style_uses_the_euler_split_around_the_real_red_team():
    windows = quality_data("lanl_style", TINY_LANL, quiet).windows(0)
    labels = windows.labels
    before = np.concatenate([windows.split_index("train"), windows.split_index("validation")])
    assert len(before) > 0 and np.nansum(labels[before]) == 0  # nothing of the red team before test
    assert np.nansum(labels[windows.split_index("test")]) == 749  # every real red-team line, labelled
    assert "rule_rare_process" not in default_detectors(windows.events)  # auth events only
    assert "rule_first_seen_logon" in default_detectors(windows.events)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def _run(dataset: str, scores: dict[str, list[tuple[float, float, float]]]) -> QualityRun:
    """A run with (ROC-AUC, AP, TPR at 0.001 FPR) per detector and seed."""
    rows = []
    for det, per_seed in scores.items():
        for seed, (auc, ap, tpr) in enumerate(per_seed):
            for fpr in (0.001, 0.01):
                rows.append({"detector": det, "seed": seed, "target_fpr": fpr, "roc_auc": auc,
                             "average_precision": ap, "tpr": tpr, "fpr": fpr, "precision": 0.5, "recall": tpr,
                             "f1": 0.5, "alerts_per_day": 1.0, "fit_seconds": 1.0, "score_seconds": 1.0})
    seeds = tuple(range(len(next(iter(scores.values())))))
    return QualityRun(dataset, pd.DataFrame(rows), seeds, (0.001, 0.01))


def test_darpa_target_needs_mean_std_and_three_seeds():
    met = check_targets(_run("darpa98", {"hybrid_gnn_lstm": [(0.99, 0.9, 0.5), (0.985, 0.9, 0.5), (0.995, 0.9, 0.5)],
                                         "midas_f": [(0.999, 0.99, 0.9)] * 3}))
    assert len(met) == 1 and met[0]["met"] and met[0]["value"] == pytest.approx(0.99)
    assert "hybrid ROC-AUC 0.9900 ± 0.0041 over 3 seed(s)" in met[0]["detail"]
    spread = check_targets(_run("darpa98", {"hybrid_gnn_lstm": [(0.97, 0.9, 0.5), (0.99, 0.9, 0.5), (1.0, 0.9, 0.5)]}))
    assert not spread[0]["met"] and spread[0]["std"] > 0.01
    two = check_targets(_run("darpa98", {"hybrid_gnn_lstm": [(0.99, 0.9, 0.5)] * 2}))
    assert not two[0]["met"] and "only 2 seed(s) run" in two[0]["detail"]
    assert targets_markdown("darpa98", two).endswith("**missed**")


def test_zeek_and_lanl_targets():
    assert check_targets(_run("zeek008", {"hybrid_gnn_lstm": [(0.91, 0.5, 0.1)] * 3}))[0]["met"]
    low = check_targets(_run("zeek008", {"hybrid_gnn_lstm": [(0.89, 0.5, 0.1)] * 3}))
    assert not low[0]["met"] and "(target >= 0.9)" in low[0]["detail"]
    lanl = {"hybrid_gnn_lstm": [(0.9, 0.30, 0.1)] * 3, "hybrid_tail_sum": [(0.9, 0.9, 0.1)] * 3,
            "midas_f": [(0.9, 0.20, 0.1)] * 3, "rule_first_seen_logon": [(0.6, 0.05, 0.0)] * 3}
    t = check_targets(_run("lanl_style", lanl))[0]
    # The hybrid's own combination variant is no baseline; 0.30 / 0.20 = 1.5 meets the bar exactly.
    assert t["best_baseline"] == "midas_f" and t["ratio"] == pytest.approx(1.5) and t["met"]
    lanl["midas_f"] = [(0.9, 0.21, 0.1)] * 3
    assert not check_targets(_run("lanl_style", lanl))[0]["met"]


def test_synthetic_targets_against_every_detector_and_the_best_single_rule():
    scores = {"hybrid_gnn_lstm": [(0.95, 0.30, 0.40)] * 3, "static_gnn": [(0.95, 0.24, 0.2)] * 3,
              "lstm_only": [(0.95, 0.20, 0.2)] * 3, "heuristic_rules": [(0.6, 0.1, 0.5)] * 3,
              "rule_rare_process": [(0.55, 0.05, 0.10)] * 3, "rule_failure_burst": [(0.55, 0.05, 0.05)] * 3}
    ap, tpr = check_targets(_run("synthetic", scores))
    assert ap["best_baseline"] == "static_gnn" and ap["ratio"] == pytest.approx(1.25) and ap["met"]
    # The combined rules detector is not a single rule: 0.40 vs rule_rare_process's 0.10 is 4x.
    assert tpr["best_rule"] == "rule_rare_process" and tpr["ratio"] == pytest.approx(4.0) and tpr["met"]
    scores["lstm_only"] = [(0.95, 0.26, 0.2)] * 3
    scores["rule_failure_burst"] = [(0.55, 0.05, 0.11)] * 3
    ap, tpr = check_targets(_run("synthetic", scores))
    assert not ap["met"] and ap["best_baseline"] == "lstm_only"
    assert not tpr["met"] and tpr["best_rule"] == "rule_failure_burst"
    md = targets_markdown("synthetic", [ap, tpr])
    assert md.count("**missed**") == 2 and "the best single rule (rule_failure_burst) 0.110" in md


# ---------------------------------------------------------------------------------------------
# Ablations
# ---------------------------------------------------------------------------------------------


def test_ablation_rows_for_our_components_on_per_seed_data():
    generated: list[int] = []

    def events(seed: int) -> pd.DataFrame:
        generated.append(seed)
        return generate_events(SyntheticConfig(seed=seed, **TINY_SYNTHETIC))

    chosen = tuple(a for a in ABLATIONS if a.name in ("rate head vs filtered mean only",
                                                      "Fisher vs tail_sum combination"))
    lines: list[str] = []
    table = run_ablation("synthetic", events, WindowConfig(history=4), chosen, seeds=(0, 1), epochs_per_stage=1,
                         log=lines.append)
    assert generated == [0, 1] and table.attrs["data_per_seed"] is True  # each seed's data made once
    trainings = [line for line in lines if "/4]" in line]
    assert len(trainings) == 6  # 2 trainings per seed (full, rate_head=False); the full one scored 2 ways
    assert sum("scored tail_sum" in line for line in trainings) == 2
    rate, fisher = table.set_index("ablation").loc[[c.name for c in chosen]].to_dict("records")
    assert rate["paper_claim"] == fisher["paper_claim"] == "ours"
    assert rate["alternative"] == "rate_head=False" and fisher["alternative"] == "combination=tail_sum"
    # The same trained full models on the claimed-better side of both rows.
    assert rate["average_precision_better_mean"] == fisher["average_precision_better_mean"]
    assert rate["average_precision_better_std"] > 0  # two data sets, two models
    assert fisher["roc_auc_alternative_mean"] != fisher["roc_auc_better_mean"]
    better, alt = rate["average_precision_better_mean"], rate["average_precision_alternative_mean"]
    assert 0 < better <= 1 and 0 < alt <= 1
    assert rate["average_precision_change_pct"] == pytest.approx(100 * (better - alt) / alt)
    md = ablation_markdown(table)
    assert "Fisher vs tail_sum combination | ours" in md and "data generated per seed" in md


def test_ablation_job_runs_in_dagster(tmp_path):
    from assets.experiments import ablation_job
    from assets.resources import StateResource

    result = ablation_job.execute_in_process(
        run_config={"ops": {"run_ablation_study": {"config": {
            "ablations": ["bidirectional vs unidirectional"], "seeds": [0], "epochs_per_stage": 1,
            "synthetic_seed": 3, "n_users": 15, "n_servers": 5, "days": 4}}}},
        resources={"state": StateResource(home=str(tmp_path))},
    )
    assert result.success
    report = Path(result.output_for_node("run_ablation_study"))
    assert report.is_relative_to(tmp_path)
    assert "bidirectional vs unidirectional | +20%" in report.read_text()
    rows = json.loads(report.with_name("ablation.json").read_text())["rows"]
    assert len(rows) == 1 and np.isfinite(rows[0]["average_precision_better_mean"])


# ---------------------------------------------------------------------------------------------
# The benchmark scripts, end to end on tiny data
# ---------------------------------------------------------------------------------------------


def _script(monkeypatch, name: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(ROOT / "benchmarks" / name), run_name="__main__")


@needs_darpa
@needs_zeek
def test_bench_quality_writes_one_report_for_several_datasets(tmp_path, monkeypatch, capfd):
    _script(monkeypatch, "bench_quality.py", "--datasets", "darpa98,zeek008", "--seeds", "0,1",
            "--detectors", "hybrid_gnn_lstm,midas_f,rule_fan_out", "--epochs-per-stage", "1",
            "--darpa-every", str(DARPA_EVERY), "--out-dir", str(tmp_path))
    payload = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN
    assert list(payload["datasets"]) == ["darpa98", "zeek008"]
    for d in payload["datasets"].values():
        # Rules need auth / process events: skipped on flows.
        assert list(d["models"]) == ["hybrid_gnn_lstm", "midas_f"]
        assert d["models"]["hybrid_gnn_lstm"]["seeds"] == 2
        assert list(d["models"]["hybrid_gnn_lstm"]["score_parts"]) == list(SCORE_PARTS)
        assert d["run"]["seconds"] > 0 and d["run"]["peak_rss_gb"] > 0
        assert len(d["targets"]) == 1 and isinstance(d["targets"][0]["met"], bool)
    darpa = payload["datasets"]["darpa98"]
    assert darpa["info"]["subset"] == "every 1500th line" and darpa["info"]["epochs_per_stage"] == 1
    assert not darpa["targets"][0]["met"]  # 2 seeds: the bar asks for 3
    zeek = payload["datasets"]["zeek008"]
    auc = zeek["models"]["hybrid_gnn_lstm"]["roc_auc"]["mean"]
    assert zeek["targets"][0]["met"] == (auc >= 0.90) and zeek["info"]["events"] == 5_663
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in md and f"- zeek008: hybrid ROC-AUC {auc:.4f}" in md
    assert "### darpa98" in md and "### zeek008" in md and "**Subset: every 1500th line**" in md
    assert md.count("score parts on the test window") == 2
    # Progress with timings, from each dataset's own process.
    out = capfd.readouterr().out
    assert "[zeek008 seed 1] hybrid_gnn_lstm: ROC-AUC" in out and "== darpa98 done in" in out
    assert all(d["run"]["own_process"] for d in payload["datasets"].values())


@needs_darpa
def test_ablation_script_reports_the_darpa_subset(tmp_path, monkeypatch):
    _script(monkeypatch, "ablation.py", "--datasets", "darpa98", "--seeds", "0", "--only",
            "Fisher vs tail_sum combination", "--darpa-epochs-per-stage", "1", "--darpa-every", str(DARPA_EVERY),
            "--out-dir", str(tmp_path))
    payload = json.loads((tmp_path / "ablation.json").read_text())
    darpa = payload["datasets"]["darpa98"]
    assert darpa["events"] == 3_037 and darpa["subset"] == "every 1500th line" and darpa["epochs_per_stage"] == 1
    assert [r["ablation"] for r in darpa["rows"]] == ["Fisher vs tail_sum combination"]
    md = (tmp_path / "ABLATION.md").read_text()
    assert "## darpa98" in md and "**Subset: every 1500th line.**" in md and "1 epoch(s) per curriculum stage" in md
