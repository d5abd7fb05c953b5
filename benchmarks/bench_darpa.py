"""The hybrid model on the DARPA 1998 edge stream, next to MIDAS-R and MIDAS-F on the same edges.

    python benchmarks/bench_darpa.py [--max-edges N] [--train-fraction 0.2] [--data-dir DIR]

Protocol (``anomaly_pipeline.detect``, as ``anomaly-pipeline detect``): the zip is read in place
with the DARPA adapter, in stream (file) order, and validated with Great Expectations (time
bounds from 1990; the 10 lines dated ``07/32/1998`` are parse errors and are quarantined, their
count is printed). The time span is cut into hourly buckets: the hybrid trains (default settings)
on the first ``0.8 F`` of them and early-stops on the next ``0.2 F`` (``F`` = ``--train-fraction``,
0.2: ``train_fraction=0.16, validation_fraction=0.04``), then scores every later edge.

MIDAS, MIDAS-R and MIDAS-F are computed in the same run with ``midas_scores`` on the authors'
preprocessing of the same file (``read_darpa_edges``: all lines, the 07/32 ones included, ticks
= distinct minutes), with the demo settings of the authors' C++ (2 rows x 1024 buckets, hash seed
0, MIDAS-F threshold 1e3, alpha 0.5). They are online and unsupervised, so they score the whole
stream; the table gives their ROC-AUC on exactly the edges the hybrid scores (matched by line
number), and over the whole stream and the last 80% of edges, next to the published C++ figures
(``darpa98/SOURCE.md``: 0.905 / 0.951 / 0.986 whole stream, MIDAS-R 0.943 and MIDAS-F 0.982 on
the last 80%).

Also printed: training time, scoring throughput (events/s), process CPU time and peak RSS of
the process after each stage (CPU time and RSS do not depend on other load on the machine; wall
times do). With
``--max-edges N`` only the first N lines are read (a quick run; the published figures then do
not apply to the "this run" columns).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_pipeline.baselines.midas import midas_scores, read_darpa_edges
from anomaly_pipeline.detect import (
    DEFAULT_TS_MIN,
    KNOWN_DATASETS,
    build_windows,
    dataset_search_dirs,
    find_dataset,
    read_validated,
    train_detector,
)
from anomaly_pipeline.validation import ValidationPolicy

CPP_WHOLE = {"midas": 0.905, "midas_r": 0.951, "midas_f": 0.986}
CPP_LAST80 = {"midas_r": 0.943, "midas_f": 0.982}
LABELS = {"midas": "MIDAS", "midas_r": "MIDAS-R", "midas_f": "MIDAS-F"}
ROWS, BUCKETS, SEED, THRESHOLD, ALPHA = 2, 1024, 0, 1e3, 0.5


def peak_rss_gb() -> float:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30) if sys.platform == "darwin" else peak / (1 << 20)


def stage_line(name: str, wall_s: float, cpu_before: float) -> str:
    """``name: wall, CPU (process, all threads), peak RSS so far``."""
    return (f"[stage] {name}: wall {wall_s:.1f} s, CPU {time.process_time() - cpu_before:.1f} s, "
            f"peak RSS so far {peak_rss_gb():.2f} GB")


def locate(data_dir: Path | None) -> Path:
    relpath = KNOWN_DATASETS["darpa98"].relpath
    if data_dir is not None:
        path = data_dir / relpath
        if not path.is_file():
            raise SystemExit(f"DARPA edge stream not found at {path}")
        return path
    found = find_dataset("darpa98")
    if found is None:
        dirs = ", ".join(str(d) for d in dataset_search_dirs())
        raise SystemExit(f"darpa98 not found in {dirs}: run `anomaly-pipeline datasets download darpa98` "
                         "or set ANOMALY_PIPELINE_DATA_DIR")
    return found


def line_numbers(raw_refs: pd.Series) -> np.ndarray:
    """1-based line numbers from ``raw_ref`` (``<archive>/<member>:<line>``)."""
    return raw_refs.astype(str).str.rsplit(":", n=1).str[1].astype(np.int64).to_numpy()


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding darpa98/darpa_original.zip")
    parser.add_argument("--max-edges", type=int, default=None, help="read only the first N lines (quick run)")
    parser.add_argument("--train-fraction", type=float, default=0.2,
                        help="share F of the time span for training (0.8 F) and early stopping (0.2 F)")
    parser.add_argument("--epochs-per-stage", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    path = locate(args.data_dir)
    F = args.train_fraction
    print(f"DARPA 1998 edge stream: {path}; protocol: train_fraction={0.8 * F:.2f}, "
          f"validation_fraction={0.2 * F:.2f} of the time span (hourly buckets), score every later edge; "
          f"{os.cpu_count()} CPUs" + (f"; first {args.max_edges:,} lines only" if args.max_edges else ""),
          flush=True)
    started = time.perf_counter()

    # ---- read and validate (the detect protocol) ----
    t, cpu = time.perf_counter(), time.process_time()
    data = read_validated(path, "darpa", policy=ValidationPolicy(ts_min=pd.Timestamp(DEFAULT_TS_MIN, tz="UTC")),
                          max_rows=args.max_edges)
    read_s = time.perf_counter() - t
    print(stage_line("read + validate", read_s, cpu), flush=True)
    print(f"read + validated {data.rows_read:,} lines in {read_s:.1f} s: {data.rows_valid:,} valid edges; "
          f"{data.quarantine_line()}", flush=True)
    if len(data.quarantined):
        refs = data.quarantined["raw_ref"].astype(str)
        print(f"  quarantined lines: {refs.iloc[0]} .. {refs.iloc[-1]}", flush=True)

    t, cpu = time.perf_counter(), time.process_time()
    windows = build_windows(data.valid, F, log=lambda line: print(line, flush=True))
    windows_s = time.perf_counter() - t
    print(stage_line("windows", windows_s, cpu), flush=True)
    del data  # the windows hold their own copy of the events
    edges = windows.events
    train_end = windows.t0 + pd.Timedelta(hours=windows.meta["train_end_bucket"] * windows.config.stride_hours)
    val_end = windows.t0 + pd.Timedelta(hours=windows.meta["validation_end_bucket"] * windows.config.stride_hours)
    print(f"built windows in {windows_s:.1f} s; training until {train_end}, early stopping until {val_end}", flush=True)

    # ---- hybrid ----
    t, cpu = time.perf_counter(), time.process_time()
    detector = train_detector(windows, epochs_per_stage=args.epochs_per_stage,
                              log=lambda line: print(line, flush=True))
    train_s = time.perf_counter() - t
    print(stage_line("training", train_s, cpu), flush=True)
    epochs_s = sum(stats.seconds for stats in detector.history)
    print(f"trained in {train_s:.1f} s: {len(detector.history)} epochs {epochs_s:.1f} s, the rest scoring the "
          "training and validation edges for the alert threshold and the calibration", flush=True)
    idx = windows.split_index("test")
    t, cpu = time.perf_counter(), time.process_time()
    hybrid = detector.decision_function(windows, idx)
    score_s = time.perf_counter() - t
    score_cpu = time.process_time() - cpu
    print(stage_line("scoring", score_s, cpu) + f"; {len(idx) / score_cpu:,.0f} edges per CPU second", flush=True)
    y = windows.labels[idx]
    if np.isnan(y).any():
        raise SystemExit("unlabelled DARPA edges in the scored part: the adapter should label every line")
    y = y.astype(int)
    print(f"hybrid scored {len(idx):,} edges in {score_s:.1f} s ({len(idx) / score_s:,.0f} edges/s)", flush=True)

    # ---- MIDAS family on the authors' preprocessing of the same lines ----
    stream = read_darpa_edges(path, nrows=args.max_edges)
    n = len(stream.label)
    positions = line_numbers(edges["raw_ref"].iloc[idx]) - 1  # scored edges -> stream positions
    if not np.array_equal(stream.label[positions], y):
        raise SystemExit("labels of the scored edges differ between the adapter and read_darpa_edges")
    cut = int(0.2 * n)
    rows = []
    for variant in ("midas", "midas_r", "midas_f"):
        t = time.perf_counter()
        scores = midas_scores(stream.src, stream.dst, stream.t, variant=variant, rows=ROWS, buckets=BUCKETS,
                              alpha=ALPHA, threshold=THRESHOLD, seed=SEED)
        seconds = time.perf_counter() - t
        rows.append({
            "name": f"{LABELS[variant]} ({ROWS} x {BUCKETS}, seed {SEED})",
            "auc": roc_auc_score(y, scores[positions]),
            "ap": average_precision_score(y, scores[positions]),
            "whole": roc_auc_score(stream.label, scores),
            "last80": roc_auc_score(stream.label[cut:], scores[cut:]),
            "cpp": f"{CPP_WHOLE[variant]:.3f} / {fmt(CPP_LAST80.get(variant), 3)}",
            "train": "none (online)",
            "rate": f"{n / seconds:,.0f} (whole stream)",
        })
    rows.insert(0, {
        "name": "hybrid GNN + LSTM (default settings)",
        "auc": roc_auc_score(y, hybrid),
        "ap": average_precision_score(y, hybrid),
        "whole": None,
        "last80": None,
        "cpp": "n/a",
        "train": f"{train_s:.1f} ({epochs_s:.1f} in epochs)",
        "rate": f"{len(idx) / score_s:,.0f}",
    })

    share = len(idx) / n
    print()
    print(f"Scored edges: {len(idx):,} of {n:,} lines ({share:.1%}; every edge after the first {F:.0%} of the "
          f"time span, from {edges['ts'].iloc[idx[0]]}), {int(y.sum()):,} attack ({y.mean():.1%}). "
          f"Quarantined lines are in the MIDAS stream but not among the scored edges.")
    if args.max_edges:
        print(f"Quick run on the first {args.max_edges:,} lines: the published C++ figures are for the full "
              "stream of 4,554,344 edges and do not apply to the 'this run' columns.")
    print()
    print("| detector | ROC-AUC, scored edges | AP, scored edges | ROC-AUC, whole stream (this run) "
          "| ROC-AUC, last 80% of edges (this run) | published C++ ROC-AUC, whole / last 80% "
          "| train time (s) | scoring edges/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {fmt(r['auc'])} | {fmt(r['ap'])} | {fmt(r['whole'])} | {fmt(r['last80'])} "
              f"| {r['cpp']} | {r['train']} | {r['rate']} |")
    print()
    print(f"Wall time {time.perf_counter() - started:.0f} s (read + validate {read_s:.0f} s, windows {windows_s:.0f} s, "
          f"training {train_s:.0f} s, hybrid scoring {score_s:.0f} s); process CPU {time.process_time():.0f} s; peak RSS {peak_rss_gb():.2f} GB; "
          f"device {detector.train_config.resolved_device()}.")


if __name__ == "__main__":
    main()
