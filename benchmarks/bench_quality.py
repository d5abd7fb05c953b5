"""Every detector on the synthetic data and the DARPA 1998 stream, over seeds; regenerates
``docs/RESULTS.md`` and ``docs/results.json`` from the run (never edit them by hand).

    python benchmarks/bench_quality.py [--datasets synthetic,darpa98] [--seeds 0,1,2]
                                       [--darpa-max-edges N] [--epochs-per-stage E] [--out-dir docs]

Protocol (``anomaly_pipeline.evaluation``): time-ordered train / validation / test split; every
detector fits on the training window; alert thresholds at each target FPR come from validation
scores only; metrics on the later test window. The data stay fixed across seeds; every seeded
part of every detector changes.

* synthetic: the default generator configuration (the one ``make run`` uses), default windows
  (60 / 20 / 20 % of the time span).
* darpa98: ``../shared/datasets/darpa98`` (or ANOMALY_PIPELINE_DATA_DIR), read in place and
  validated with Great Expectations; the ``anomaly-pipeline detect`` split (train on the first
  16 %, early-stop on the next 4 % of the span, test on the remaining 80 %). The published
  MIDAS figures are on the whole stream (whole-stream runs of our MIDAS: ``make bench-midas``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from anomaly_pipeline.experiments import (
    DEFAULT_FPRS,
    all_detector_names,
    check_targets,
    dataset_events,
    quality_markdown,
    run_quality,
    targets_markdown,
    write_json,
)
from anomaly_pipeline.graph import build_graph_windows

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC_DETECTORS = ["hybrid_gnn_lstm", "hybrid_surprisal", "static_gnn", "lstm_only", "heuristic_rules", "rule_first_seen_logon",
                       "rule_rare_process", "rule_fan_out", "rule_failure_burst", "isolation_forest",
                       "one_class_svm", "midas_r", "midas_f"]
DARPA_DETECTORS = ["hybrid_gnn_lstm", "hybrid_surprisal", "static_gnn", "lstm_only", "isolation_forest", "one_class_svm", "midas_r",
                   "midas_f"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,darpa98")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--detectors", default=None, help=f"comma-separated subset of {', '.join(all_detector_names())}")
    parser.add_argument("--darpa-max-edges", type=int, default=None, help="first N DARPA lines only (quick run)")
    parser.add_argument("--epochs-per-stage", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other datasets' results already in OUT_DIR/results.json (each keeps its "
                        "own generation time and command)")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = set(datasets) - {"synthetic", "darpa98"}
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}; choose from synthetic, darpa98")
    chosen = args.detectors.split(",") if args.detectors else None

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    runs, timings = [], {}
    for name in datasets:
        t = time.perf_counter()
        try:
            events, window_config = dataset_events(name, args.darpa_max_edges, log)
        except ValueError as error:
            raise SystemExit(str(error)) from error
        windows = build_graph_windows(events, window_config)
        del events
        detectors = chosen or (SYNTHETIC_DETECTORS if name == "synthetic" else DARPA_DETECTORS)
        run = run_quality(name, windows, detectors, seeds, DEFAULT_FPRS, args.epochs_per_stage, log)
        if name == "darpa98" and args.darpa_max_edges:
            run.info["max_edges"] = args.darpa_max_edges
        timings[name] = time.perf_counter() - t
        run.info["seconds"] = round(timings[name], 1)
        runs.append(run)
        del windows

    command = "python benchmarks/bench_quality.py " + " ".join(sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run_meta = {"generated_at": generated, "command": command.strip(), "git_commit": git_commit(),
                "machine": machine, "peak_rss_gb": round(peak_rss_gb(), 2)}
    results = {r.dataset: {**r.to_json(), "targets": check_targets(r), "run": run_meta, "markdown": quality_markdown(r)}
               for r in runs}
    previous = args.out_dir / "results.json"
    if args.merge and previous.exists():
        kept = json.loads(previous.read_text()).get("datasets", {})
        results = {**{k: v for k, v in kept.items() if k not in results}, **results}
    payload = {**run_meta, "datasets": results}
    out_json = write_json(args.out_dir / "results.json", payload)
    md = [
        "# Results",
        "",
        "Written by `make bench-quality` (`benchmarks/bench_quality.py`) from its run, with `results.json` "
        "beside it: do not edit by hand. Per dataset:",
        "",
        *(f"- {name}: `{d['run']['command']}` at {d['run']['generated_at']} on {d['run']['machine']}, commit "
          f"{d['run']['git_commit']}, {d['info'].get('seconds', 'n/a')} s, peak memory {d['run']['peak_rss_gb']} GB"
          for name, d in results.items()),
        "",
        "Protocol: time-ordered train / validation / test; thresholds at each target false-positive rate "
        "from validation scores only; metrics on the test window; mean ± standard deviation over seeds "
        "(the data fixed, every seeded part of every detector re-drawn).",
        "",
        "## Targets",
        "",
    ]
    md += [targets_markdown(name, d["targets"]) for name, d in results.items()]
    for d in results.values():
        md += ["", d["markdown"]]
    md += ["", "Paper ablations: `make ablation` (docs/ABLATION.md).", ""]
    out_md = args.out_dir / "RESULTS.md"
    out_md.write_text("\n".join(md))
    log(f"wrote {out_md} and {out_json} in {time.perf_counter() - started:.0f} s")
    print("\n".join(md))


if __name__ == "__main__":
    main()
