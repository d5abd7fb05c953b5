"""LANL-style benchmark: the real LANL red-team events in a synthetic LANL-format background.

    python benchmarks/bench_lanl_style.py [--scale 1.0] [--quick] [--out DIR] [--seed 0]

1. ``generate_lanl_style_auth`` writes ``auth.txt.gz`` (LANL auth format; background users,
   computers and events scale with ``--scale``; 1.0 = 1000 + 104 users, 2000 + 305 computers,
   ~0.83M lines over days 0-30) around the 749 real red-team lines of
   ``$ANOMALY_PIPELINE_DATA_DIR/lanl/redteam.txt.gz`` (default data dir ``<repo>/../shared/datasets``).
2. The LANL adapter reads it with ``redteam=`` the real file, so labels come from its join on
   (time, user, source computer, destination computer), exactly as on real LANL.
3. Validation, hourly graph windows, then the Euler protocol (edge level): train on the hours
   before the first red-team event, the last ~15 % of them (at least 1 hour) as validation for
   early stopping and thresholds; every later event is test (positives: red-team lines).
4. ROC-AUC and average precision on test for the hybrid GNN-LSTM (``HybridDetector()`` default
   settings) and the baselines, as a Markdown table, next to the published figures on the real
   LANL background (not comparable: different background, different scale).

``--quick`` = ``--scale 0.2`` and one epoch per curriculum stage for the hybrid (a smoke run of a
few minutes on 2 CPU cores); ``--scale`` alone keeps the hybrid's default epochs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_pipeline.baselines.midas import MidasDetector
from anomaly_pipeline.baselines.rules import HeuristicRulesDetector
from anomaly_pipeline.detectors import HybridDetector, IsolationForestDetector
from anomaly_pipeline.evaluation import evaluate_detectors
from anomaly_pipeline.experiments import euler_window_config
from anomaly_pipeline.graph import build_graph_windows
from anomaly_pipeline.sources.lanl import DEFAULT_EPOCH, load_redteam, read_lanl
from anomaly_pipeline.sources.lanl_style import generate_lanl_style_auth, read_redteam_lines
from anomaly_pipeline.training import TrainConfig
from anomaly_pipeline.validation import ValidationPolicy, validate_events

PUBLISHED = (
    ("Euler (GCN+GRU), Euler (NDSS 2022)", "0.991", "0.052"),
    ("ARGUS, ARGUS (IEEE S&P 2024)", "0.998", "0.32"),
)
BASE_USERS, BASE_COMPUTERS = 1000, 2000


def default_data_dir() -> Path:
    """``$ANOMALY_PIPELINE_DATA_DIR``, else ``<repo>/../shared/datasets``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return Path(os.environ.get("ANOMALY_PIPELINE_DATA_DIR", default))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=None, help="background size (1.0 ~ 0.83M lines)")
    parser.add_argument("--quick", action="store_true", help="scale 0.2, one epoch per hybrid stage")
    parser.add_argument("--out", type=Path, default=None, help="folder for auth.txt.gz (default: a temp dir)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding lanl/redteam.txt.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-hybrid", action="store_true", help="baselines only")
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else (0.2 if args.quick else 1.0)

    redteam = (args.data_dir or default_data_dir()) / "lanl" / "redteam.txt.gz"
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lanl_style_") as tmp:
        out_dir = args.out or Path(tmp)
        path = out_dir / "auth.txt.gz"
        t = time.perf_counter()
        summary = generate_lanl_style_auth(
            path,
            redteam,
            seed=args.seed,
            background_users=max(10, int(BASE_USERS * scale)),
            background_computers=max(20, int(BASE_COMPUTERS * scale)),
        )
        timings["generate"] = time.perf_counter() - t
        print(f"Wrote {summary['lines']:,} lines ({summary['background_lines']:,} background, "
              f"{summary['redteam_lines']} red-team, {summary['users']} users, {summary['computers']} computers, "
              f"days 0-{summary['days'] - 1}) to {path} in {timings['generate']:.1f} s.")

        t = time.perf_counter()
        raw = read_lanl(path, kind="auth", redteam=redteam)
        timings["read"] = time.perf_counter() - t
    red_lines = read_redteam_lines(redteam)
    distinct = len(load_redteam(redteam))
    matched = int((raw["label"] == 1).sum())
    matched_distinct = len(raw.loc[raw["label"] == 1, ["ts", "user", "src_host", "dst_host"]].drop_duplicates())
    print(f"Red-team join: {matched} of the file's {len(red_lines)} red-team lines labelled "
          f"({matched_distinct} of {distinct} distinct tuples).")

    t = time.perf_counter()
    policy = ValidationPolicy(ts_min=DEFAULT_EPOCH - pd.Timedelta(days=1),
                              ts_max=DEFAULT_EPOCH + pd.Timedelta(days=summary["days"] + 1))
    result = validate_events(raw, policy)
    timings["validate"] = time.perf_counter() - t
    print(f"Validation: {result.rows_valid:,} valid, {result.rows_quarantined:,} quarantined.")
    events = result.valid

    t = time.perf_counter()
    config, train_b, val_b = euler_window_config(events, int(red_lines["time"].min()))
    windows = build_graph_windows(events, config)
    timings["windows"] = time.perf_counter() - t
    counts = {s: len(windows.split_index(s)) for s in ("train", "validation", "test")}
    test_pos = int(np.nansum(windows.labels[windows.split_index("test")]))
    print(f"Euler split: train {train_b} h ({counts['train']:,} events), validation {val_b} h "
          f"({counts['validation']:,}), test {windows.n_buckets - train_b - val_b} h ({counts['test']:,}, "
          f"{test_pos} red-team); red-team events outside test: "
          f"{int(np.nansum(windows.labels)) - test_pos}.\n")

    train_idx = windows.split_index("train")
    detectors: list = []
    if not args.skip_hybrid:
        train_config = TrainConfig().with_epochs_per_stage(1) if args.quick else TrainConfig()
        t = time.perf_counter()
        detectors.append(HybridDetector(train_config=train_config).fit(windows))
        timings["fit hybrid"] = time.perf_counter() - t
    for det in (HeuristicRulesDetector(), MidasDetector("midas_r"), MidasDetector("midas_f"),
                IsolationForestDetector()):
        t = time.perf_counter()
        detectors.append(det.fit(windows, train_idx))
        timings[f"fit {det.name}"] = time.perf_counter() - t
    t = time.perf_counter()
    report = evaluate_detectors(windows, detectors, target_fprs=(0.01,))
    timings["score + evaluate"] = time.perf_counter() - t

    print("Measured (LANL-style synthetic background, real red-team lines; test = after the first "
          "red-team event; threshold at 1% FPR on validation):\n")
    print(report.markdown())
    print("\nPublished, measured on the real LANL background, NOT comparable (different background "
          "and scale):\n")
    print("| model, paper | roc_auc | average_precision |\n|---|---|---|")
    for name, auc, ap in PUBLISHED:
        print(f"| {name} | {auc} | {ap} |")
    print(f"\nTimings (s, {os.cpu_count()} CPUs): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
