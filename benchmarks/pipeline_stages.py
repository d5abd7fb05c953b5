"""Wall time and throughput of each pipeline stage on the synthetic default, median of N runs.

    python benchmarks/pipeline_stages.py [--repeats 3] [--users 120] [--days 10] [--epochs-per-stage 2]

Prints a Markdown table. The machine is shared and noisy: quote medians, not single runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=120)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--epochs-per-stage", type=int, default=2)
    args = parser.parse_args()

    from anomaly_pipeline.detectors import HybridDetector, IsolationForestDetector
    from anomaly_pipeline.graph import build_graph_windows
    from anomaly_pipeline.sources.files import read_event_file
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
    from anomaly_pipeline.training import TrainConfig
    from anomaly_pipeline.validation import validate_events

    times: dict[str, list[float]] = {}
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            events, t = _timed(lambda: generate_events(SyntheticConfig(n_users=args.users, days=args.days)))
            times.setdefault("generate (synthetic)", []).append(t)
            rows["generate (synthetic)"] = len(events)
            csv = Path(tmp) / "events.csv"
            events.drop(columns=["source", "raw_ref"]).to_csv(csv, index=False)
            raw, t = _timed(lambda: read_event_file(csv))
            times.setdefault("ingest (CSV file adapter)", []).append(t)
            rows["ingest (CSV file adapter)"] = len(raw)
            result, t = _timed(lambda: validate_events(raw))
            times.setdefault("validate (Great Expectations)", []).append(t)
            rows["validate (Great Expectations)"] = result.rows_read
            windows, t = _timed(lambda: build_graph_windows(events))
            times.setdefault("graph_windows", []).append(t)
            rows["graph_windows"] = len(windows.events)
            train_idx = windows.split_index("train")
            hybrid, t = _timed(lambda: HybridDetector(train_config=TrainConfig().with_epochs_per_stage(args.epochs_per_stage)).fit(windows))
            times.setdefault(f"train hybrid (<= {3 * args.epochs_per_stage} epochs)", []).append(t)
            rows[f"train hybrid (<= {3 * args.epochs_per_stage} epochs)"] = len(train_idx)
            all_idx = np.arange(len(windows.events))
            _, t = _timed(lambda: hybrid.decision_function(windows, all_idx))
            times.setdefault("score hybrid (all events)", []).append(t)
            rows["score hybrid (all events)"] = len(all_idx)
            _, t = _timed(lambda: IsolationForestDetector().fit(windows, train_idx))
            times.setdefault("fit Isolation Forest", []).append(t)
            rows["fit Isolation Forest"] = len(train_idx)

    print(f"| stage | rows | median s (of {args.repeats}) | min s | max s | rows/s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for stage, values in times.items():
        med = statistics.median(values)
        print(f"| {stage} | {rows[stage]:,} | {med:.2f} | {min(values):.2f} | {max(values):.2f} | {rows[stage] / med:,.0f} |")


if __name__ == "__main__":
    main()
