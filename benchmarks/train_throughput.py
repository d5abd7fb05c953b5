"""Training and scoring throughput of the hybrid detector at several graph sizes.

    python benchmarks/train_throughput.py [--repeats 3] [--sizes small,medium,large] [--device cpu|cuda|auto]

Each measurement runs in a fresh subprocess so peak resident memory (ru_maxrss) belongs to it.
Prints a Markdown table of medians: events/s and windows/s for training (per epoch) and scoring,
and peak memory. On a machine with CUDA, `--device auto` adds GPU rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

SIZES = {
    "small": {"n_users": 40, "n_servers": 10, "days": 5},
    "medium": {"n_users": 120, "n_servers": 30, "days": 10},
    "large": {"n_users": 400, "n_servers": 80, "days": 10},
}

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
from anomaly_pipeline.graph import build_graph_windows
from anomaly_pipeline.training import TrainConfig, score_events, train_hybrid
size, device = json.loads(sys.argv[1]), sys.argv[2]
w = build_graph_windows(generate_events(SyntheticConfig(**size)))
cfg = TrainConfig(device=device, patience=99).with_epochs_per_stage(1)
t = time.perf_counter(); model, hist = train_hybrid(w, train_config=cfg); train_s = time.perf_counter() - t
if device == "cuda": torch.cuda.synchronize()
n_train_events = sum(min(cfg.max_events_per_chunk, int(c)) for c in np.bincount(
    w.event_bucket[w.split_index("train")] // cfg.chunk_buckets))
t = time.perf_counter(); score_events(model, w); score_s = time.perf_counter() - t
print(json.dumps({"events": len(w.events), "windows": w.n_buckets, "nodes": w.n_nodes,
    "epochs": len(hist), "train_s": train_s, "train_events_per_epoch": n_train_events,
    "train_windows_per_epoch": int(w.meta["train_end_bucket"]), "score_s": score_s,
    "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    print("| device | size | events | windows | nodes | train events/s | train windows/s | score events/s "
          "| score windows/s | peak GB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for device in devices:
        for name in args.sizes.split(","):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(SIZES[name]), device],
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r0 = runs[0]
            per_epoch = [r["train_s"] / r["epochs"] for r in runs]
            score = [r["score_s"] for r in runs]
            med_epoch, med_score = statistics.median(per_epoch), statistics.median(score)
            print(f"| {device} | {name} | {r0['events']:,} | {r0['windows']} | {r0['nodes']:,} "
                  f"| {r0['train_events_per_epoch'] / med_epoch:,.0f} | {r0['train_windows_per_epoch'] / med_epoch:,.1f} "
                  f"| {r0['events'] / med_score:,.0f} | {r0['windows'] / med_score:,.0f} "
                  f"| {statistics.median(r['peak_gb'] for r in runs):.2f} |", flush=True)


if __name__ == "__main__":
    main()
