"""The detect protocol on the Stratosphere Zeek captures: ROC-AUC and AP of the hybrid model.

    python benchmarks/bench_zeek.py [--train-fraction 0.3] [--data-dir DIR] [--output-dir DIR]

For each known ``stratosphere-*`` data set found locally (``anomaly-pipeline datasets list``;
``--data-dir`` holds ``stratosphere/...``), runs ``anomaly_pipeline.detect.detect_file`` exactly as
``anomaly-pipeline detect --train-fraction F`` does (default model settings, no tuning per
capture): read and validate, train on the first ``0.8 F`` of the time span and early-stop on the
next ``0.2 F``, score every later flow. Prints a Markdown table: events read, quarantined, scored,
attack share of the scored flows, ROC-AUC and AP over the scored flows that carry a label
("undefined: one class only in the scored part" when only one class is there), wall time. A
capture the protocol cannot run on (all lines quarantined, too short a time span) gets its
reason in the table instead of numbers. With ``--output-dir``, each ranked table is written as CSV.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from anomaly_pipeline.detect import (
    KNOWN_DATASETS,
    DetectError,
    dataset_search_dirs,
    detect_file,
    find_dataset,
    format_metrics,
    read_validated,
    write_table,
)
from anomaly_pipeline.validation import ValidationPolicy


def captures(data_dir: Path | None) -> list[tuple[str, Path]]:
    out = []
    for name, dataset in KNOWN_DATASETS.items():
        if not name.startswith("stratosphere-"):
            continue
        path = data_dir / dataset.relpath if data_dir is not None else find_dataset(name)
        if path is not None and path.is_file():
            out.append((name, path))
        else:
            print(f"{name}: not found (looked in {data_dir or ', '.join(map(str, dataset_search_dirs()))}); "
                  f"`anomaly-pipeline datasets download {name}` fetches it")
    return out


def why_not(path: Path, data, exc: DetectError) -> str:
    """A short table cell for a capture the protocol cannot run on."""
    if data.rows_valid:
        return str(exc).split(":", 1)[0] if "too short" in str(exc) else str(exc)[:120]
    top = next(iter(data.reason_counts), "?")
    text = f"all lines quarantined ({top})"
    if "(ts)" in top:
        # The times may be relative (seconds from 1970): say what the span would be if accepted.
        anytime = read_validated(path, "zeek", policy=ValidationPolicy(ts_min=pd.Timestamp(0, tz="UTC")))
        if anytime.rows_valid:
            ts = anytime.valid["ts"]
            hours = (ts.max() - ts.min()).total_seconds() / 3600
            text += (f"; its times run {ts.min()} .. {ts.max()} (relative to the capture start), "
                     f"{hours:.1f} h: too short to split into hourly buckets even if accepted")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-fraction", type=float, default=0.3)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding stratosphere/...")
    parser.add_argument("--output-dir", type=Path, default=None, help="write each ranked table here as CSV")
    parser.add_argument("--epochs-per-stage", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    rows = []
    for name, path in captures(args.data_dir):
        print(f"\n== {name}: {path}", flush=True)
        started = time.perf_counter()
        try:
            result = detect_file(path, train_fraction=args.train_fraction, epochs_per_stage=args.epochs_per_stage,
                                 log=lambda line: print(line, flush=True))
        except DetectError as exc:
            wall = time.perf_counter() - started
            print(f"cannot run the protocol: {exc}", flush=True)
            data = read_validated(path, "zeek")  # for the counts in the table
            rows.append([name, f"{data.rows_read:,}", f"{data.rows_quarantined:,}", "0", "n/a",
                         f"not run: {why_not(path, data, exc)}", "", f"{wall:.1f}"])
            continue
        wall = time.perf_counter() - started
        print(format_metrics(result.metrics), flush=True)
        if args.output_dir is not None:
            write_table(result.table, args.output_dir / f"{name}.csv")
        m = result.metrics
        share = f"{m['attack'] / m['labelled']:.3f}" if m.get("labelled") else "n/a"
        auc = f"{m['roc_auc']:.4f}" if m["roc_auc"] is not None else m["metrics_note"]
        ap = f"{m['average_precision']:.4f}" if m["average_precision"] is not None else ""
        rows.append([name, f"{result.input.rows_read:,}", f"{result.input.rows_quarantined:,}",
                     f"{len(result.table):,}", share, auc, ap, f"{wall:.1f}"])

    print(f"\nDetect protocol, train fraction {args.train_fraction} (training {0.8 * args.train_fraction:.0%}, "
          f"early stopping {0.2 * args.train_fraction:.0%} of the time span), default model settings, "
          f"{os.cpu_count()} CPUs.\n")
    print("| capture | events read | quarantined | scored | attack share (scored) | ROC-AUC | AP | wall time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
