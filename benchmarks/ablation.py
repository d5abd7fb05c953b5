"""The paper's ablations, and two of our own components, re-run on our data; writes docs/ABLATION.md
and docs/ablation.json.

    python benchmarks/ablation.py [--datasets synthetic,darpa98] [--seeds 0,1,2]
                                  [--only "attention vs plain GCN,..."] [--epochs-per-stage E]
                                  [--darpa-every K] [--darpa-max-edges N] [--darpa-epochs-per-stage E]
                                  [--synthetic-users N] [--synthetic-days D] [--out-dir docs] [--merge]
                                  [--in-process]

Each ablation trains the claimed-better variant and its alternative with the same data, split,
curriculum and seeds, and compares test-window average precision, ROC-AUC and TPR at 1 % FPR
(threshold from validation scores), next to the change the paper claims. Variants shared by
several rows (the full model) are trained once per seed; "Fisher vs tail_sum combination" scores
the full model's very parts both ways (no second training). Our own rows: the rate head against
the filtered mean alone (``HybridConfig(rate_head=False)``), and Fisher's combination of the score
parts against the sum of their tail CDFs. The same study runs in Dagster as ``ablation_job``.

Datasets (as in ``make bench-quality``): synthetic, where seed s generates the data and seeds the
model; darpa98 with the ``detect`` split. DARPA is made affordable: by default every 10th line of
the stream (455,434 edges over the whole span, so the split and its attacks stay; about 14
trainings x 3 seeds of under a minute each on 2 cores instead of several minutes each on the
4.55 M-edge stream), with the curriculum's default epochs; ``--darpa-every 1`` runs the whole
stream, ``--darpa-epochs-per-stage`` shortens training instead. The report states what was used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from anomaly_pipeline.experiments import (
    ABLATIONS,
    DataOptions,
    ablation_names,
    ablation_report,
    run_isolated,
    timestamped,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
ABLATION_DATASETS = ("synthetic", "darpa98")
DARPA_EVERY = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(ABLATION_DATASETS),
                        help=f"comma-separated subset of {', '.join(ABLATION_DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default=None, help="comma-separated ablation names: " + "; ".join(ablation_names()))
    parser.add_argument("--epochs-per-stage", type=int, default=None,
                        help="epochs per curriculum stage on every dataset (default: the curriculum's)")
    parser.add_argument("--darpa-every", type=int, default=DARPA_EVERY,
                        help=f"every K-th DARPA line (default {DARPA_EVERY}; 1 = the whole stream)")
    parser.add_argument("--darpa-max-edges", type=int, default=None, help="first N DARPA lines only")
    parser.add_argument("--darpa-epochs-per-stage", type=int, default=None,
                        help="epochs per curriculum stage on DARPA (overrides --epochs-per-stage there)")
    parser.add_argument("--synthetic-users", type=int, default=None, help="SyntheticConfig.n_users (quick run)")
    parser.add_argument("--synthetic-days", type=int, default=None, help="SyntheticConfig.days (quick run)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other datasets' tables already in OUT_DIR/ablation.json")
    parser.add_argument("--in-process", action="store_true",
                        help="run every dataset in this process (default: each in its own, for its own peak memory)")
    args = parser.parse_args()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = set(datasets) - set(ABLATION_DATASETS)
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}; choose from {', '.join(ABLATION_DATASETS)}")
    ablations = ABLATIONS
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        unknown = set(wanted) - set(ablation_names())
        if unknown:
            raise SystemExit(f"unknown ablations {sorted(unknown)}; choose from: {'; '.join(ablation_names())}")
        ablations = tuple(a for a in ABLATIONS if a.name in wanted)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    synthetic = {k: v for k, v in (("n_users", args.synthetic_users), ("days", args.synthetic_days)) if v}

    command = ("python benchmarks/ablation.py " + " ".join(sys.argv[1:])).strip()
    started = time.perf_counter()
    tables = {}
    for name in datasets:
        darpa = name == "darpa98"
        options = DataOptions(max_edges=args.darpa_max_edges if darpa else None,
                              every=args.darpa_every if darpa else 1, synthetic=synthetic)
        epochs = args.darpa_epochs_per_stage if darpa and args.darpa_epochs_per_stage else args.epochs_per_stage
        note = ""
        if darpa and (options.every > 1 or options.max_edges):
            note = ("DARPA subset to keep the study affordable (see benchmarks/ablation.py); "
                    "`--darpa-every 1` runs the whole stream.")
        timestamped(f"== {name}: {len(ablations)} ablations, seeds {', '.join(map(str, seeds))}"
                    + ("" if args.in_process else " (own process, so that its peak memory is its own)"))
        job = (ablation_report, name, options, [a.name for a in ablations], seeds, epochs, note)
        try:
            report = job[0](*job[1:]) if args.in_process else run_isolated(*job)
        except ValueError as error:
            raise SystemExit(str(error)) from error
        report.pop("measured")
        tables[name] = {**report, "command": command,
                        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}

    previous = args.out_dir / "ablation.json"
    if args.merge and previous.exists():
        kept = json.loads(previous.read_text()).get("datasets", {})
        tables = {**{k: v for k, v in kept.items() if k not in tables}, **tables}
    tables = dict(sorted(tables.items(), key=lambda kv: ABLATION_DATASETS.index(kv[0])
                         if kv[0] in ABLATION_DATASETS else 99))
    md = ["# Ablations", "",
          "Written by `make ablation` (`benchmarks/ablation.py`) from its run, with `ablation.json` beside it: do "
          "not edit by hand. Per dataset:", "",
          *(f"- {name}: `{t['command']}` at {t['generated_at']}, {t['seconds']:,.0f} s, peak memory "
            f"{t['peak_rss_gb']} GB" for name, t in tables.items()), ""]
    for name, t in tables.items():
        md += [f"## {name}", "", t["markdown"], ""]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ABLATION.md").write_text("\n".join(md))
    write_json(args.out_dir / "ablation.json", {"generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                                "command": command, "datasets": tables})
    timestamped(f"wrote {args.out_dir / 'ABLATION.md'} and ablation.json in {time.perf_counter() - started:.0f} s")
    print("\n".join(md))


if __name__ == "__main__":
    main()
