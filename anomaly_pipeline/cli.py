"""``anomaly-pipeline``: everything a user does outside the Dagster UI.

    anomaly-pipeline run          materialize every asset on the embedded default, print a summary
                                  (--resume: continue a killed run's training from its checkpoint)
    anomaly-pipeline ui           Dagster UI and MLflow UI on 127.0.0.1
    anomaly-pipeline generate     write synthetic telemetry to a CSV / JSON-lines file
    anomaly-pipeline models list  registered versions with aliases, scores and decisions
    anomaly-pipeline models promote VERSION [--force --reason ...] / models rollback [--to VERSION]
    anomaly-pipeline summary      print the last run's summary again
    anomaly-pipeline detect       train on the first part of a log file, rank the rest into a CSV
    anomaly-pipeline datasets     known public data sets: list where they are, download them
    anomaly-pipeline stream       score a live stream (stdin, followed file, Kafka) with @champion
    anomaly-pipeline serve        HTTP scoring service on 127.0.0.1 (events, alerts, incidents, metrics)

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
from typing import NoReturn

# Only the standard library and these light modules load before the arguments and input files are
# checked: torch, Dagster and MLflow take seconds to import, and a typo must answer at once.
from anomaly_pipeline import settings
from anomaly_pipeline.cli_checks import (
    UsageError,
    add_format_option,
    arg_date,
    arg_fraction,
    arg_int_at_least,
    arg_port,
    check_input_file,
    check_output_file,
    cli_words,
    one_line,
    synthetic_config,
)
from anomaly_pipeline.defaults import DEFAULT_EXPLAIN_TOP, DEFAULT_TRAIN_FRACTION, DEFAULT_TS_MIN

PROG = "anomaly-pipeline"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block argparse prints first buries the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`\n")


def _cmd_run(args: argparse.Namespace) -> int:
    if args.input:
        check_input_file(args.input, args.format)
    elif args.format != "auto":
        raise UsageError("--format applies to --input; without --input the run uses synthetic data")
    else:
        synthetic_config(seed=args.seed, n_users=args.users, n_servers=args.servers, days=args.days,
                         drift_start_day=args.drift_start_day)

    from anomaly_pipeline.runlock import HomeBusy, hold_home

    home = settings.state_paths(args.home).home
    try:
        # Taken before the heavy imports: a second run on this folder is refused at once.
        with hold_home(home, "anomaly-pipeline run"):
            return _run_holding_home(args)
    except HomeBusy as busy:
        raise UsageError(str(busy)) from None


def _run_holding_home(args: argparse.Namespace) -> int:
    from anomaly_pipeline.summary import format_summary
    from assets.resources import EventSourceResource
    from assets.runner import InputIncomplete, QualityGateFailed, RunInProgress, run_full_pipeline

    source = EventSourceResource(
        kind="file" if args.input else "synthetic",
        path=args.input,
        file_format=args.format,
        seed=args.seed,
        n_users=args.users,
        n_servers=args.servers,
        days=args.days,
        drift_start_day=args.drift_start_day,
    )
    run_config = {"ops": {"hybrid_model": {"config": {"epochs_per_stage": args.epochs_per_stage,
                                                      "resume": args.resume}}}}
    paths = settings.state_paths(args.home)
    unfinished = sorted(paths.checkpoints_dir.glob("hybrid_model/*/checkpoint.pt"))
    if unfinished and not args.resume:
        print(f"note: an unfinished training (a killed run) left a checkpoint under {unfinished[0].parent.parent}; "
              "this run trains from epoch 1 (add --resume to continue it when data and config are the same)",
              flush=True)
    print(f"materializing every asset on {source.describe()} (state: {settings.state_paths(args.home).home})",
          flush=True)
    try:
        summary = run_full_pipeline(args.home, run_config=run_config, resources={"event_source": source})
    except QualityGateFailed as failed:
        print(f"run {failed.run_id or ''} stopped at the quality gate: {failed}", file=sys.stderr)
        return 3
    except InputIncomplete as incomplete:
        print(f"error: run {incomplete.run_id or ''} stopped: {incomplete}", file=sys.stderr)
        return 2
    except RunInProgress as busy:
        raise UsageError(str(busy)) from None
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
    # MLflow 3's UI opens on its GenAI view unless told the model-training workflow.
    print(f"Dagster UI: http://127.0.0.1:{args.dagster_port}   "
          f"MLflow UI: http://127.0.0.1:{args.mlflow_port}/#/experiments?workflowType=machine_learning")
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
    out = Path(args.out)
    if out.suffix not in (".csv", ".jsonl", ".ndjson"):
        raise UsageError(f"--out {out} must end in .csv (CSV) or .jsonl (JSON lines), the formats `detect` reads")
    check_output_file(out)
    config = synthetic_config(seed=args.seed, n_users=args.users, days=args.days, drift_start_day=args.drift_start_day)
    from anomaly_pipeline.sources.synthetic import generate_events

    events = generate_events(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = events.drop(columns=["source", "raw_ref"])
    if out.suffix in (".jsonl", ".ndjson"):
        frame.to_json(out, orient="records", lines=True, date_format="iso")
    else:
        frame.to_csv(out, index=False)
    print(f"wrote {len(events):,} events ({int(events['label'].sum())} attack events) to {out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    if args.action == "promote" and args.version is None:
        raise UsageError("models promote needs a VERSION: `anomaly-pipeline models list` shows them")
    if args.force and not (args.reason or "").strip():
        raise UsageError('models promote --force needs --reason "..." (it is recorded on the versions)')
    if args.action != "promote" and (args.force or args.version is not None):
        raise UsageError(f"VERSION and --force belong to `models promote`, not `models {args.action}`")

    from anomaly_pipeline import registry
    from anomaly_pipeline.registry import RegistryConfig, configure, list_versions

    config = RegistryConfig.from_state(settings.state_paths(args.home))
    client = configure(config)
    actor = os.environ.get("USER", "operator")
    try:
        if args.action == "promote":
            if args.force:
                decision = registry.force_promote(client, config, args.version, reason=args.reason or "", actor=actor)
            else:
                decision = registry.repromote(client, config, args.version)
            print(f"version {decision.version}: {decision.decision}: {decision.reason}")
            print(f"champion: version {decision.champion_after or 'none'}")
            return 0 if decision.decision in ("promoted", "forced") else 1
        if args.action == "rollback":
            done = registry.rollback(client, config, to_version=args.to, reason=args.reason or "", actor=actor)
            print(f"champion rolled back from version {done.from_version} to version {done.to_version} ({done.reason})")
            return 0
    except ValueError as exc:  # no such version, no champion to roll back: the registry says which
        raise UsageError(str(exc)) from None
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


def _cmd_detect(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    check_input_file(args.input, args.format)
    check_output_file(args.output)

    from anomaly_pipeline.detect import DetectError, detect_file, format_metrics, write_table

    try:
        result = detect_file(
            args.input,
            train_fraction=args.train_fraction,
            fmt=args.format,
            explain_top=args.explain_top,
            epochs_per_stage=args.epochs_per_stage,
            seed=args.seed,
            ts_min=args.ts_min,
            keep_windows=False,
            log=lambda line: print(line, flush=True),
        )
    except (DetectError, FileNotFoundError) as exc:  # DetectError: too short a span, nothing valid, ...
        raise UsageError(cli_words(str(exc))) from None
    out = write_table(result.table, args.output)
    print(f"wrote {len(result.table):,} ranked events to {out} (reasons for the top {min(args.explain_top, len(result.table))})")
    print(format_metrics(result.metrics))
    t = result.timings
    print(f"wall time {time.perf_counter() - started:.1f} s (read + validate {t['read_validate_s']:.1f} s, "
          f"windows {t['windows_s']:.1f} s, training {t['train_s']:.1f} s, scoring {t['score_s']:.1f} s, "
          f"explanations {t['explain_s']:.1f} s)")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    if args.action == "download" and not args.name:
        raise UsageError("datasets download needs a NAME: `anomaly-pipeline datasets list` shows them")

    from anomaly_pipeline.detect import (
        KNOWN_DATASETS,
        dataset_search_dirs,
        dataset_table,
        download_dataset,
        download_dir,
        unknown_dataset_message,
    )

    if args.action == "list":
        print("looked for in: " + ", ".join(str(p) for p in dataset_search_dirs(args.home)))
        for row in dataset_table(args.home).itertuples(index=False):
            print(f"\n{row.name}  ({row.format}) {row.description}\n  origin: {row.origin}\n  url:    {row.url}\n"
                  f"  local:  {row.local}")
        return 0
    if args.name not in KNOWN_DATASETS:
        raise UsageError(unknown_dataset_message(args.name))
    print(f"downloading {args.name} from {KNOWN_DATASETS[args.name].url} into {download_dir(args.home)}", flush=True)
    try:
        path = download_dataset(args.name, args.home, force=args.force)
    except (OSError, RuntimeError) as exc:
        print(f"error: download of {args.name} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; building it imports nothing heavy (``--help`` answers at once)."""
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help=f"state folder (default ${settings.HOME_ENV} or ./.anomaly_pipeline)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="materialize every asset and print a summary",
        description="Materialize every asset in process (ingest, validate, graph windows, train the hybrid and "
        "the baselines, evaluate, register in MLflow, drift report) on synthetic data or on --input, and print "
        "a summary (also written as JSON under the state folder). Exit status 3 when the quality gate stops "
        "the run before registration.")
    run.add_argument("--input", default=None, help="a log file (any supported format, gzip ok) instead of synthetic data")
    add_format_option(run, "format of --input")
    run.add_argument("--users", type=arg_int_at_least(1), default=120, help="synthetic: user accounts (default 120, at least 10)")
    run.add_argument("--servers", type=arg_int_at_least(1), default=30, help="synthetic: servers (default 30, at least 5)")
    run.add_argument("--days", type=arg_int_at_least(1), default=10, help="synthetic: days of telemetry (default 10, at least 3)")
    run.add_argument("--seed", type=int, default=7, help="synthetic: random seed; the same seed gives the same events (default 7)")
    run.add_argument("--epochs-per-stage", type=arg_int_at_least(1), default=None,
                     help="override every curriculum stage's epochs (default: the training config's)")
    run.add_argument("--drift-start-day", type=arg_int_at_least(1), default=None,
                     help="synthetic: day (1 .. days-1) from which a reorganisation drifts the data (default: no drift)")
    run.add_argument("--resume", action="store_true",
                     help="continue the training a killed run left unfinished, from its last epoch checkpoint, when "
                          "it was for the same data, options and code (else train from epoch 1, and say so)")
    run.set_defaults(func=_cmd_run)

    ui = sub.add_parser("ui", help="Dagster UI and MLflow UI on 127.0.0.1",
                        description="Start the Dagster UI and the MLflow UI on 127.0.0.1 over the state folder; "
                                    "Ctrl-C stops both.")
    ui.add_argument("--dagster-port", type=arg_port, default=3000, help="Dagster UI port (default 3000)")
    ui.add_argument("--mlflow-port", type=arg_port, default=5000, help="MLflow UI port (default 5000)")
    ui.set_defaults(func=_cmd_ui)

    gen = sub.add_parser("generate", help="write synthetic telemetry to a file",
                         description="Write the synthetic enterprise's telemetry (with labelled attack campaigns) "
                                     "to a CSV or JSON-lines file in the event contract, e.g. to try `detect`.")
    gen.add_argument("--out", required=True, help="file to write, ending in .csv or .jsonl")
    gen.add_argument("--users", type=arg_int_at_least(1), default=120, help="user accounts (default 120, at least 10)")
    gen.add_argument("--days", type=arg_int_at_least(1), default=10, help="days of telemetry (default 10, at least 3)")
    gen.add_argument("--seed", type=int, default=7, help="random seed; the same seed gives the same events (default 7)")
    gen.add_argument("--drift-start-day", type=arg_int_at_least(1), default=None,
                     help="day (1 .. days-1) from which a reorganisation drifts the data (default: no drift)")
    gen.set_defaults(func=_cmd_generate)

    models = sub.add_parser(
        "models", help="registered model versions: list, promote, rollback",
        description="List the registered versions with aliases, scores and promotion decisions; promote a "
        "version to champion (by the promotion rules, or --force with a --reason); roll the champion back.")
    models.add_argument("action", choices=["list", "promote", "rollback"], help="list, promote or rollback")
    models.add_argument("version", nargs="?", default=None, help="promote: the version to make champion")
    models.add_argument("--force", action="store_true",
                        help="promote: make it champion whatever the gate and scores said (needs --reason)")
    models.add_argument("--reason", default=None, help="why (recorded on the versions)")
    models.add_argument("--to", default=None, help="rollback: the version to restore (default: the previous champion)")
    models.set_defaults(func=_cmd_models)

    summary = sub.add_parser("summary", help="print the last run's summary",
                             description="Print the summary of the last `run` again (from the state folder).")
    summary.set_defaults(func=_cmd_summary)

    detect = sub.add_parser(
        "detect",
        help="train on the first part of a log file's time span, score and rank the rest into a CSV",
        description="Read and validate a log file, train the hybrid model (default settings) on the first "
        f"--train-fraction of its time span (default {DEFAULT_TRAIN_FRACTION:g}: 80%% of it training, 20%% early "
        "stopping), score every later event and write them ranked (1 = most anomalous) to a CSV; with labels, "
        "print ROC-AUC and average precision.",
    )
    detect.add_argument("--input", required=True, help="log file (canonical CSV / JSON lines, LANL, Zeek, DARPA, "
                        "OCSF, Windows; gzip and zip are read in place)")
    add_format_option(detect)
    detect.add_argument("--train-fraction", type=arg_fraction, default=DEFAULT_TRAIN_FRACTION,
                        help="share of the time span used for training and early stopping, strictly between 0 "
                             f"and 1 (default {DEFAULT_TRAIN_FRACTION:g})")
    detect.add_argument("--output", required=True, help="CSV to write (its folder is created)")
    detect.add_argument("--explain-top", type=arg_int_at_least(0), default=DEFAULT_EXPLAIN_TOP,
                        help=f"explain this many top-ranked events (default {DEFAULT_EXPLAIN_TOP})")
    detect.add_argument("--ts-min", type=arg_date, default=DEFAULT_TS_MIN,
                        help=f"earliest accepted event time, ISO 8601 (default {DEFAULT_TS_MIN})")
    detect.add_argument("--seed", type=int, default=0,
                        help="the model's random seed (default 0); the same seed and file give the same ranking, "
                             "other seeds show the spread")
    detect.add_argument("--epochs-per-stage", type=arg_int_at_least(1), default=None, help=argparse.SUPPRESS)
    detect.set_defaults(func=_cmd_detect)

    datasets = sub.add_parser("datasets", help="known public data sets: where they are, download them",
                              description="List the public data sets the benchmarks use (origin, URL, where a "
                                          "local copy was found), or download one into the state folder.")
    datasets.add_argument("action", choices=["list", "download"], help="list or download")
    datasets.add_argument("name", nargs="?", default=None, help="data set to download (see `datasets list`)")
    datasets.add_argument("--force", action="store_true", help="download again even if present")
    datasets.set_defaults(func=_cmd_datasets)

    from anomaly_pipeline.streaming.commands import add_stream_commands

    add_stream_commands(sub)  # stream, serve, stream-demo
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a ``UsageError`` becomes one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
