"""Every detector on four datasets over seeds, in one report; regenerates ``docs/RESULTS.md`` and
``docs/results.json`` from the run (never edit them by hand).

    python benchmarks/bench_quality.py [--datasets synthetic,darpa98,lanl_style,zeek008] [--seeds 0,1,2]
                                       [--detectors NAME,...] [--epochs-per-stage E] [--out-dir docs] [--merge]
                                       [--in-process]
                                       [--darpa-max-edges N] [--darpa-every K] [--lanl-scale S]
                                       [--synthetic-users N] [--synthetic-days D]

The last five options shrink a dataset for a quick run; the report says so next to its numbers.

Protocol (``anomaly_pipeline.evaluation``): time-ordered train / validation / test split; every
detector fits on the training window; alert thresholds at each target FPR come from validation
scores only; metrics on the later test window. Mean ± standard deviation over seeds.

* synthetic: seed s generates the data (``SyntheticConfig(seed=s)``, the default size) and seeds
  every detector, so 3 seeds are 3 data sets with matching model seeds; default windows (60 / 20 /
  20 % of the time span).
* darpa98: ``../shared/datasets/darpa98`` (or ANOMALY_PIPELINE_DATA_DIR), read in place and
  validated with Great Expectations; the ``anomaly-pipeline detect`` split (train on the first
  16 %, early-stop on the next 4 % of the span, test on the remaining 80 %). The published
  MIDAS figures are on the whole stream (whole-stream runs of our MIDAS: ``make bench-midas``).
* lanl_style: ``make bench-lanl-style``'s data and protocol: a LANL-format background (seed 0,
  scale 1.0, ~0.83M lines) around the 749 real red-team lines, labelled by the LANL adapter's
  join; Euler split (train on the hours before the first red-team event, the last 15 % of them
  validation; every later event is test).
* zeek008: Stratosphere 008 (``stratosphere/008-zeek-mixed.conn.log.labeled``, 5,663 flows) read
  with the zeek adapter and validated as ``anomaly-pipeline detect`` does; train fraction 0.3.

The data sets other than synthetic stay fixed across seeds; every seeded part of every detector
changes. Detectors: the hybrid and every baseline the data support (the heuristic rules where
there are authentication or process events; Isolation Forest, One-Class SVM, MIDAS-R, MIDAS-F,
static GNN, LSTM only everywhere). For the hybrid, each score part's ROC-AUC and AP on the test
window. Targets: the issue's bars (``experiments.check_targets``), met or missed with the numbers.
Progress is logged per dataset, seed and detector with timings; wall time and peak memory are
recorded per dataset, each dataset running in its own process (``--in-process`` to share one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from anomaly_pipeline.experiments import (
    DATASETS,
    DEFAULT_FPRS,
    DataOptions,
    all_detector_names,
    quality_report,
    run_isolated,
    targets_markdown,
    timestamped,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent

PROTOCOLS = {
    "synthetic": "seed s generates the data (SyntheticConfig(seed=s)) and seeds every detector; default windows "
                 "(train 60 %, validation 20 %, test the last 20 % of the span)",
    "darpa98": "the DARPA 1998 stream (4,554,344 lines; 10 quarantined) read in place, the `anomaly-pipeline detect` "
               "split (train 16 %, early stop 4 %, test the remaining 80 % of the span); data fixed across seeds",
    "lanl_style": "`make bench-lanl-style`'s LANL-format background (seed 0, scale 1.0) around the 749 real red-team "
                  "lines; Euler split (train on the hours before the first red-team event, the last 15 % of them "
                  "validation, every later event test); data fixed across seeds",
    "zeek008": "Stratosphere 008 (5,663 Zeek flows of one Windows host) read and validated as `anomaly-pipeline "
               "detect` does, train fraction 0.3 (train 24 %, early stop 6 %, test the remaining 70 %); data fixed "
               "across seeds",
}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_options(name: str, args: argparse.Namespace) -> DataOptions:
    synthetic = {}
    if args.synthetic_users:
        synthetic["n_users"] = args.synthetic_users
    if args.synthetic_days:
        synthetic["days"] = args.synthetic_days
    return DataOptions(
        max_edges=args.darpa_max_edges if name == "darpa98" else None,
        every=args.darpa_every if name == "darpa98" else 1,
        synthetic=synthetic,
        lanl_scale=args.lanl_scale,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {', '.join(DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--detectors", default=None,
                        help=f"comma-separated subset of {', '.join(all_detector_names())} (default: every detector "
                        "the dataset supports)")
    parser.add_argument("--epochs-per-stage", type=int, default=None,
                        help="epochs per curriculum stage for the hybrid family (quick run; default: the curriculum's)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other datasets' results already in OUT_DIR/results.json (each keeps its "
                        "own generation time and command)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every dataset in this process (default: each in its own, so that the peak memory "
                        "recorded for a dataset is its own)")
    quick = parser.add_argument_group("quick runs (the report marks the subset)")
    quick.add_argument("--darpa-max-edges", type=int, default=None, help="first N DARPA lines only")
    quick.add_argument("--darpa-every", type=int, default=1,
                       help="every K-th DARPA line (a subset over the whole stream, so the split keeps its attacks)")
    quick.add_argument("--lanl-scale", type=float, default=1.0, help="LANL-style background size (1.0 ~ 0.83M lines)")
    quick.add_argument("--synthetic-users", type=int, default=None, help="SyntheticConfig.n_users (default 120)")
    quick.add_argument("--synthetic-days", type=int, default=None, help="SyntheticConfig.days (default 10)")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}; choose from {', '.join(DATASETS)}")
    chosen = [d.strip() for d in args.detectors.split(",")] if args.detectors else None
    if chosen and set(chosen) - set(all_detector_names()):
        raise SystemExit(f"unknown detectors {sorted(set(chosen) - set(all_detector_names()))}; choose from "
                         f"{', '.join(all_detector_names())}")

    command = ("python benchmarks/bench_quality.py " + " ".join(sys.argv[1:])).strip()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    commit = git_commit()
    started = time.perf_counter()
    results = {}
    for name in datasets:
        timestamped(f"== {name}: seeds {', '.join(map(str, seeds))}"
                    + ("" if args.in_process else " (own process, so that its peak memory is its own)"))
        job = (quality_report, name, data_options(name, args), seeds, chosen, DEFAULT_FPRS, args.epochs_per_stage)
        try:
            report = job[0](*job[1:]) if args.in_process else run_isolated(*job)
        except ValueError as error:
            raise SystemExit(str(error)) from error
        measured = report.pop("measured")
        run_meta = {"generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
                    "git_commit": commit, "machine": machine, "seconds": measured["seconds"],
                    "peak_rss_gb": measured["peak_rss_gb"], "own_process": not args.in_process}
        results[name] = {**report, "protocol": PROTOCOLS[name], "run": run_meta}

    previous = args.out_dir / "results.json"
    if args.merge and previous.exists():
        kept = json.loads(previous.read_text()).get("datasets", {})
        results = {**{k: v for k, v in kept.items() if k not in results}, **results}
    results = dict(sorted(results.items(), key=lambda kv: DATASETS.index(kv[0]) if kv[0] in DATASETS else 99))
    payload = {"generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
               "git_commit": commit, "machine": machine, "datasets": results}
    out_json = write_json(args.out_dir / "results.json", payload)
    md = [
        "# Results",
        "",
        "Written by `make bench-quality` (`benchmarks/bench_quality.py`) from its run, with `results.json` "
        "beside it: do not edit by hand. Per dataset, the command, when, where, wall time and peak memory:",
        "",
        *(f"- {name}: `{d['run']['command']}` at {d['run']['generated_at']} on {d['run']['machine']}, commit "
          f"{d['run']['git_commit']}, {d['run'].get('seconds', d['info'].get('seconds', 'n/a'))} s, peak memory "
          f"{d['run']['peak_rss_gb']} GB" for name, d in results.items()),
        "",
        "Protocol: time-ordered train / validation / test; thresholds at each target false-positive rate "
        "from validation scores only; metrics on the test window; mean ± standard deviation over seeds.",
        "",
        *(f"- {name}: {d.get('protocol', '')}" for name, d in results.items()),
        "",
        "## Targets",
        "",
        "The issue's bar: DARPA hybrid ROC-AUC >= 0.985 (mean over 3 seeds, std <= 0.01); Zeek 008 ROC-AUC >= 0.90; "
        "LANL-style hybrid AP >= 1.5 x the best baseline's; synthetic hybrid AP >= 1.2 x every other detector's "
        "(static_gnn and lstm_only included) and TPR at 0.1 % FPR >= 4 x the best single rule's.",
        "",
    ]
    md += [line for name, d in results.items() if (line := targets_markdown(name, d["targets"]))]
    md += ["", "## Per dataset"]
    for d in results.values():
        md += ["", d["markdown"]]
    md += ["", "Paper ablations: `make ablation` (docs/ABLATION.md).", ""]
    out_md = args.out_dir / "RESULTS.md"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(md))
    timestamped(f"wrote {out_md} and {out_json} in {time.perf_counter() - started:.0f} s")
    print("\n".join(md))


if __name__ == "__main__":
    main()
