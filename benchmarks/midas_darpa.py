"""MIDAS, MIDAS-R and MIDAS-F on the DARPA 1998 edge stream, next to the authors' C++ figures.

    python benchmarks/midas_darpa.py [--buckets 1024 2719] [--seeds 0] [--repeats 3] [--nrows N]

Reads ``$ANOMALY_PIPELINE_DATA_DIR/darpa98/darpa_original.zip`` in place (default data dir:
``<repo>/../shared/datasets``) with the authors' preprocessing (``read_darpa_edges``), scores the
4.55M edges in stream order and prints a Markdown table: ROC-AUC over the whole stream and over
the last 80% of edges (stream order = time order), and the scoring time (median of ``--repeats``
runs; reading the file is not included).

The C++ figures (``darpa98/SOURCE.md``) are those of the authors' code with its demo settings:
2 rows x 1024 buckets, MIDAS-F threshold 1e3, alpha 0.5. Compiling the authors' headers and
running them with ``srand(0)`` gives exactly those figures (0.905 / 0.951 / 0.986, last 80%:
0.943 / 0.984), so the reference columns apply to the 1024-bucket rows; the library default is
2719 buckets (the authors' later wrappers), for which there is no published figure. ROC-AUC
depends on the hash seed (``--seeds`` prints the median and range over several).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from anomaly_pipeline.baselines.midas import VARIANTS, midas_scores, read_darpa_edges

# Authors' C++ on this file (darpa98/SOURCE.md), 2 rows x 1024 buckets.
CPP_WHOLE = {"midas": 0.905, "midas_r": 0.951, "midas_f": 0.986}
CPP_LAST80 = {"midas_r": 0.943, "midas_f": 0.982}
CPP_SECONDS = {"midas": 0.06, "midas_r": 0.23, "midas_f": 0.7}
CPP_BUCKETS = 1024
LABELS = {"midas": "MIDAS", "midas_r": "MIDAS-R", "midas_f": "MIDAS-F"}


def default_data_dir() -> Path:
    """``$ANOMALY_PIPELINE_DATA_DIR``, else ``<repo>/../shared/datasets``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return Path(os.environ.get("ANOMALY_PIPELINE_DATA_DIR", default))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} [{min(values):.4f}-{max(values):.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="folder holding darpa98/darpa_original.zip"
    )
    parser.add_argument("--buckets", type=int, nargs="+", default=[CPP_BUCKETS, 2719])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=1e3, help="MIDAS-F threshold")
    parser.add_argument("--alpha", type=float, default=0.5, help="MIDAS-R / MIDAS-F decay per tick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="hash seeds (srand) for ROC-AUC")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (first seed)")
    parser.add_argument("--nrows", type=int, default=None, help="read only the first N edges")
    args = parser.parse_args()

    path = (args.data_dir or default_data_dir()) / "darpa98" / "darpa_original.zip"
    started = time.perf_counter()
    stream = read_darpa_edges(path, nrows=args.nrows)
    load_s = time.perf_counter() - started
    n = len(stream.label)
    cut = int(0.2 * n)  # the last 80% of edges in stream (time) order
    print(
        f"Read {n:,} edges ({int(stream.label.sum()):,} attack, {len(np.unique(stream.t)):,} ticks) "
        f"from {path} in {load_s:.1f} s.\n"
    )
    several = len(args.seeds) > 1
    seed_cols = " over seeds |" if several else ""
    print(
        f"| variant | rows x buckets | ROC-AUC (all), seed {args.seeds[0]} |{seed_cols} C++ "
        f"| ROC-AUC (last 80%), seed {args.seeds[0]} |{seed_cols} C++ | time (s, median) | C++ time (s) |"
    )
    print("|---" * (8 + 2 * several) + "|")
    for buckets in args.buckets:
        for variant in VARIANTS:
            whole, last80, seconds = [], [], []
            for i, seed in enumerate(args.seeds):
                for _ in range(args.repeats if i == 0 else 1):
                    started = time.perf_counter()
                    scores = midas_scores(
                        stream.src,
                        stream.dst,
                        stream.t,
                        variant=variant,
                        rows=args.rows,
                        buckets=buckets,
                        alpha=args.alpha,
                        threshold=args.threshold,
                        seed=seed,
                    )
                    if i == 0:
                        seconds.append(time.perf_counter() - started)
                whole.append(roc_auc_score(stream.label, scores))
                last80.append(roc_auc_score(stream.label[cut:], scores[cut:]))
            reference = buckets == CPP_BUCKETS and args.rows == 2 and args.nrows is None
            cpp_whole = f"{CPP_WHOLE[variant]:.3f}" if reference else "n/a"
            cpp_last = f"{CPP_LAST80[variant]:.3f}" if reference and variant in CPP_LAST80 else "n/a"
            cpp_time = f"{CPP_SECONDS[variant]:.2f}" if reference else "n/a"
            spread_whole = f" {_spread(whole)} |" if several else ""
            spread_last = f" {_spread(last80)} |" if several else ""
            print(
                f"| {LABELS[variant]} | {args.rows} x {buckets} | {whole[0]:.4f} |{spread_whole} {cpp_whole} "
                f"| {last80[0]:.4f} |{spread_last} {cpp_last} | {statistics.median(seconds):.2f} | {cpp_time} |",
                flush=True,
            )
    print(
        f"\nROC-AUC over seeds: median [min-max] over {args.seeds}; time: median of {args.repeats} runs "
        f"of seed {args.seeds[0]}, scoring only (this machine: {os.cpu_count()} CPUs)."
    )


if __name__ == "__main__":
    main()
