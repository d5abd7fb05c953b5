"""``anomaly-pipeline``: everything a user does outside the Dagster UI.

    anomaly-pipeline run          materialize every asset on the embedded default, print a summary
    anomaly-pipeline ui           Dagster UI and MLflow UI on 127.0.0.1
    anomaly-pipeline generate     write synthetic telemetry to a CSV / JSON-lines file
    anomaly-pipeline models list  registered versions with aliases, scores and decisions
    anomaly-pipeline summary      print the last run's summary again

The ``run`` and ``ui`` commands hand over to the Dagster layer (``assets/``, ``definitions.py``);
everything else in this package is plain Python.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from anomaly_pipeline import settings


def _cmd_run(args: argparse.Namespace) -> int:
    from anomaly_pipeline.summary import format_summary
    from assets.resources import EventSourceResource
    from assets.runner import run_full_pipeline

    source = EventSourceResource(
        kind="file" if args.input else "synthetic",
        path=args.input,
        seed=args.seed,
        n_users=args.users,
        n_servers=args.servers,
        days=args.days,
        drift_start_day=args.drift_start_day,
    )
    run_config = {"ops": {"hybrid_model": {"config": {"epochs_per_stage": args.epochs_per_stage}}}}
    print(f"materializing every asset on {source.describe()} (state: {settings.state_paths(args.home).home})",
          flush=True)
    summary = run_full_pipeline(args.home, run_config=run_config, resources={"event_source": source})
    print(format_summary(summary))
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from assets.runner import dagster_instance

    paths = settings.state_paths(args.home).ensure()
    dagster_instance(paths)  # writes the instance's dagster.yaml on first use
    env = {**os.environ, settings.HOME_ENV: str(paths.home), "DAGSTER_HOME": str(paths.dagster_home)}
    root = Path(__file__).resolve().parent.parent
    mlflow_cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", paths.mlflow_tracking_uri,
                  "--default-artifact-root", str(paths.mlflow_artifacts), "--host", "127.0.0.1",
                  "--port", str(args.mlflow_port)]
    dagster_cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(root / "workspace.yaml"),
                   "-h", "127.0.0.1", "-p", str(args.dagster_port)]
    print(f"Dagster UI: http://127.0.0.1:{args.dagster_port}   MLflow UI: http://127.0.0.1:{args.mlflow_port}")
    print("Ctrl-C stops both.", flush=True)
    procs = [subprocess.Popen(mlflow_cmd, env=env, cwd=root), subprocess.Popen(dagster_cmd, env=env, cwd=root)]
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
        return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

    events = generate_events(
        SyntheticConfig(seed=args.seed, n_users=args.users, days=args.days, drift_start_day=args.drift_start_day)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = events.drop(columns=["source", "raw_ref"])
    if out.suffix in (".jsonl", ".ndjson"):
        frame.to_json(out, orient="records", lines=True, date_format="iso")
    else:
        frame.to_csv(out, index=False)
    print(f"wrote {len(events):,} events ({int(events['label'].sum())} attack events) to {out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from anomaly_pipeline.registry import RegistryConfig, configure, list_versions

    config = RegistryConfig.from_state(settings.state_paths(args.home))
    client = configure(config)
    versions = list_versions(client, config.model_name)
    if versions.empty:
        print(f"no versions of {config.model_name} yet: run `make run` first")
        return 0
    print(versions.to_string(index=False))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from anomaly_pipeline.summary import format_summary

    path = settings.state_paths(args.home).summary_file
    if not path.exists():
        print(f"no run summary at {path}: run `make run` first", file=sys.stderr)
        return 1
    print(format_summary(json.loads(path.read_text())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomaly-pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help=f"state folder (default ${settings.HOME_ENV} or ./.anomaly_pipeline)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize every asset and print a summary")
    run.add_argument("--input", default=None, help="canonical CSV / JSON-lines file instead of synthetic data")
    run.add_argument("--users", type=int, default=120)
    run.add_argument("--servers", type=int, default=30)
    run.add_argument("--days", type=int, default=10)
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--epochs-per-stage", type=int, default=None, help="override every curriculum stage's epochs")
    run.add_argument("--drift-start-day", type=int, default=None)
    run.set_defaults(func=_cmd_run)

    ui = sub.add_parser("ui", help="Dagster UI and MLflow UI on 127.0.0.1")
    ui.add_argument("--dagster-port", type=int, default=3000)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=_cmd_ui)

    gen = sub.add_parser("generate", help="write synthetic telemetry to a file")
    gen.add_argument("--out", required=True, help="path ending in .csv or .jsonl")
    gen.add_argument("--users", type=int, default=120)
    gen.add_argument("--days", type=int, default=10)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--drift-start-day", type=int, default=None)
    gen.set_defaults(func=_cmd_generate)

    models = sub.add_parser("models", help="registered model versions")
    models.add_argument("action", choices=["list"])
    models.set_defaults(func=_cmd_models)

    summary = sub.add_parser("summary", help="print the last run's summary")
    summary.set_defaults(func=_cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
