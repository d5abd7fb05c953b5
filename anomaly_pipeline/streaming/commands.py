"""The ``stream`` and ``serve`` subcommands of ``anomaly-pipeline`` (and the ``make stream-demo`` replay).

Arguments and input files are checked before the scorer, the model or MLflow are imported, so a
mistake answers in a second with one line (``cli_checks.UsageError``, exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from anomaly_pipeline.cli_checks import (
    UsageError,
    add_format_option,
    arg_fraction,
    arg_int_at_least,
    arg_port,
    arg_positive,
    check_input_file,
    cli_words,
    synthetic_config,
)
from anomaly_pipeline.defaults import (
    ALLOWED_HOSTS_ENV,
    API_TOKEN_ENV,
    DEFAULT_HOST,
    DEFAULT_MEMORY_DAYS,
    DEFAULT_PORT,
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
)

if TYPE_CHECKING:
    from anomaly_pipeline.streaming.scorer import ChampionModel, StreamScorer


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def alert_threshold(detector: Any, threshold: float | None, tail: float | None) -> float | None:
    """The explicit threshold, else the score above which a share ``tail`` of the model's
    validation events lie (never below the model's own threshold), else None (the model's)."""
    if threshold is not None or tail is None:
        return threshold
    if detector.calibration_ is None:
        raise ValueError("--alert-tail needs a model with calibration quantiles; pass --threshold instead")
    if not 0 < tail < 1:  # the CLI checks this while parsing; library callers get it here
        raise ValueError(f"--alert-tail must lie strictly between 0 and 1, got {tail}")
    points = len(detector.calibration_) - 1
    return max(float(detector.calibration_[int(round((1 - tail) * points))]), float(detector.threshold_))


def _scorer(args: argparse.Namespace, model: ChampionModel, alert_out: Any = None, *,
            log_alerts: bool = True, cold_reason: str | None = None) -> StreamScorer:
    """The scorer for ``model``, warm-started from the champion's training history (unless
    ``--cold`` or ``cold_reason``): its state knows that period before the first event."""
    from anomaly_pipeline.alerts import AlertSink
    from anomaly_pipeline.streaming.scorer import StreamScorer
    from anomaly_pipeline.streaming.state import StreamConfig

    sink = AlertSink.from_env()
    if not log_alerts and not sink.webhook_url:
        sink = None  # the demo prints incidents; a log line per alert would bury them
    threshold = alert_threshold(model.detector, args.threshold, args.alert_tail)
    scorer = StreamScorer(model, stream_config=StreamConfig(window=model.window, memory_days=args.memory_days),
                          threshold=threshold, sink=sink, alert_out=alert_out,
                          incident_horizon_s=args.incident_horizon_hours * 3600.0, log=_log)
    _log(f"alert threshold {scorer.threshold:.2f}")
    if cold_reason is None and getattr(args, "cold", False):
        cold_reason = "--cold given: the state starts empty, so early events look new"
    scorer.warm_start(cold_reason=cold_reason)  # logs "warm_start: warm (...)" or "warm_start: none (why)"
    return scorer


def _champion(args: argparse.Namespace) -> ChampionModel:
    """The champion, or ``UsageError`` saying how to get one (train and promote, or --home)."""
    from anomaly_pipeline import settings
    from anomaly_pipeline.registry import RegistryConfig
    from anomaly_pipeline.streaming.scorer import load_champion

    try:
        model = load_champion(RegistryConfig.from_state(settings.state_paths(args.home)))
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    _log(f"model: {model.uri} (threshold {model.detector.threshold_:.2f}, {model.window.stride_hours:g} h buckets, "
         f"history {model.window.history})")
    return model


def _check_stream_args(args: argparse.Namespace) -> None:
    """Cheap checks of ``stream``'s arguments (before the model loads)."""
    if args.kafka_topic:
        if args.input not in (None, "-") or args.follow:
            raise UsageError("--kafka-topic reads Kafka; leave out the input file and --follow")
    elif args.input not in (None, "-"):
        check_input_file(args.input, args.format)
    elif args.follow or args.format != "auto":
        raise UsageError("--follow and --format apply to an input file; stdin carries JSON lines")
    if args.threshold is not None and args.alert_tail is not None:
        raise UsageError("give --threshold or --alert-tail, not both")


def _checkpoint(args: argparse.Namespace) -> Any:
    """The input's ``StreamCheckpoint`` under the home (None for stdin: nothing to resume)."""
    from pathlib import Path

    from anomaly_pipeline import settings
    from anomaly_pipeline.streaming.checkpoint import StreamCheckpoint

    home = settings.state_paths(args.home).home
    if args.kafka_topic:
        return StreamCheckpoint.for_input(home, "kafka", f"{args.kafka_topic}@anomaly-pipeline-stream")
    if args.input in (None, "-"):
        return None
    checkpoint = StreamCheckpoint.for_input(home, "file", str(Path(args.input).resolve()))
    if args.from_start:
        checkpoint.rewind()  # re-read everything; alerts already sent stay unsent
    return checkpoint


def _cmd_stream(args: argparse.Namespace) -> int:
    _check_stream_args(args)
    from anomaly_pipeline.streaming.sources import FileSource, KafkaSource, LineSource

    model = _champion(args)
    checkpoint = _checkpoint(args)
    out = open(args.alerts, "a", encoding="utf-8") if args.alerts else sys.stdout  # noqa: SIM115 - closed below
    try:
        scorer = _scorer(args, model, alert_out=out)
        scorer.checkpoint = checkpoint
        if args.kafka_topic:
            source: Any = KafkaSource(args.kafka_topic, bootstrap_servers=args.kafka_bootstrap, checkpoint=checkpoint)
            name = "kafka"
        elif args.input in (None, "-"):
            source, name = LineSource(sys.stdin, max_batch=args.max_batch, max_wait_s=args.max_wait_s), "stdin"
        else:
            source = FileSource(args.input, args.format, follow=args.follow, chunk_rows=args.max_batch,
                                checkpoint=checkpoint, max_wait_s=args.max_wait_s)
            name = "file"
            position = source.position()
            if position is not None:
                _log(f"resuming {args.input} at {position} ({checkpoint.path}; --from-start to re-read)")
        try:
            scorer.run(source, source_name=name)
        finally:
            scorer.close()  # explanations finished, alerts delivered to the sink
        if args.incidents_out:
            with open(args.incidents_out, "w", encoding="utf-8") as handle:
                json.dump([i.to_dict() for i in scorer.incidents.incidents.values()], handle, indent=2, default=str)
            _log(f"incidents: {args.incidents_out}")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # a source or the sink refused: say why
        print(f"error: {cli_words(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _log("stopped")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def api_token() -> str | None:
    """``$ANOMALY_PIPELINE_API_TOKEN``, or None when it is unset or blank."""
    return os.environ.get(API_TOKEN_ENV, "").strip() or None


def allowed_hosts(bind: str, given: str | None) -> list[str]:
    """The ``Host`` header names the service answers: ``given`` (comma-separated), else
    ``$ANOMALY_PIPELINE_ALLOWED_HOSTS``, else the loopback names when bound to loopback, or the bind
    address itself when it is one address. Bound to every interface (0.0.0.0, ::) nothing can be
    guessed: ``UsageError`` asking for the names clients use."""
    raw = given if given is not None else os.environ.get(ALLOWED_HOSTS_ENV, "")
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
            raise UsageError(f"--allowed-hosts: {name!r} is not a host name or a '*.example.com' pattern")
    if names:
        return names
    if bind in ("127.0.0.1", "localhost", "::1"):
        return list(LOOPBACK_HOSTS)
    if bind in ("0.0.0.0", "::", ""):
        raise UsageError(f"bound to every interface ({bind or 'all'}), the service needs the names clients reach it "
                         f"by: --allowed-hosts scorer.example.com,10.0.0.5 (or ${ALLOWED_HOSTS_ENV}); '*' accepts any")
    return [f"[{bind}]" if ":" in bind else bind]


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.threshold is not None and args.alert_tail is not None:
        raise UsageError("give --threshold or --alert-tail, not both")
    hosts = allowed_hosts(args.host, args.allowed_hosts)
    _check_port_free(args.host, args.port)
    import uvicorn

    token = api_token()
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        _log(f"warning: binding to {args.host} without ${API_TOKEN_ENV}: anyone who reaches the port can read "
             "alerts and send events; set a token or put the service behind an authenticating proxy")
    app = serve_app(args, token=token, allowed_hosts=hosts)
    _log(f"answering Host {', '.join(hosts)}; " + ("bearer token required" if token else "no token required"))
    _log(f"serving on http://{args.host}:{args.port} (OpenAPI: /docs)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.scorer.close()
    return 0


def serve_app(args: argparse.Namespace, *, token: str | None = None,
              allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> Any:
    """The app ``serve`` runs for ``args`` (its parsed command line): the champion loaded, the
    scorer warm-started from its training history, the FastAPI app around them."""
    from anomaly_pipeline.service import create_app

    model = _champion(args)
    return create_app(_scorer(args, model), max_body_bytes=args.max_body_bytes, api_token=token,
                      allowed_hosts=allowed_hosts)


def _check_port_free(host: str, port: int) -> None:
    """``UsageError`` when ``host:port`` cannot be bound (in use, or not an address of this machine),
    found before the model loads instead of after."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UsageError(f"--host {host} is not an address of this machine; use 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


def _cmd_stream_demo(args: argparse.Namespace) -> int:
    """Replay a synthetic day with an attack through the service and print the incidents."""
    if args.threshold is not None:
        args.alert_tail = None  # an explicit threshold replaces the demo's default tail
    data = synthetic_config(seed=args.seed, n_users=args.users, n_servers=10, days=args.days)
    import httpx

    from anomaly_pipeline.service import create_app, serve_in_thread
    from anomaly_pipeline.sources.synthetic import generate_events

    events = generate_events(data).sort_values("ts", kind="stable").reset_index(drop=True)
    try:
        model = _champion(args)
    except UsageError as exc:
        _log(f"{exc}\nno champion: training a small stand-in model on the first {args.days - 2} synthetic days "
             "(a minute or so; `make run` trains and promotes the real one)")
        model = _stand_in_model(events, args.days - 2)
    day = events["ts"].dt.floor("1D")
    days = sorted(day.unique())
    replay = events[day >= days[-2]]  # a warm-up day, then the attack day
    records = replay.assign(ts=replay["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_json(orient="records")
    records = json.loads(records)
    # The demo's synthetic world is not the champion's training data (other entities, and days that
    # overlap it): it warms up on its own first replayed day instead.
    scorer = _scorer(args, model, log_alerts=False,
                     cold_reason="stream-demo replays its own synthetic days, a warm-up day first")
    token = api_token()
    server, thread, port = serve_in_thread(create_app(scorer, api_token=token))
    base = f"http://127.0.0.1:{port}"
    _log(f"service on {base}: replaying {len(records):,} events of {days[-2].date()} and {days[-1].date()} "
         f"({int(replay['label'].fillna(0).sum())} of them attack steps) in batches of {args.max_batch:,}")
    started = time.monotonic()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
        for lo in range(0, len(records), args.max_batch):
            response = client.post("/events", json={"events": records[lo : lo + args.max_batch]})
            response.raise_for_status()
        scorer.flush_explanations()
        incidents = client.get("/incidents").json()
        metrics = client.get("/metrics").text
    _log(f"scored {len(records):,} events in {time.monotonic() - started:.1f} s; {scorer.metrics.alerts:,} alerts")
    top = sorted(incidents, key=lambda i: -i["evidence"])[: args.top]  # Incident.evidence: most first
    print(f"\n{len(incidents)} incidents; the {len(top)} with the most evidence (sum of alert scores):\n")
    for summary in top:
        incident = scorer.incidents.incidents[summary["incident_id"]]
        d = incident.to_dict()
        labels = {a.get("label_detail") for a in incident.alerts if a.get("label_detail")}
        print(f"{d['incident_id']}  {d['first_ts']} .. {d['last_ts']}  {d['n_alerts']} alerts, max score "
              f"{d['max_score']:.2f}  accounts {', '.join(d['entities']['accounts']) or '-'}"
              + (f"  [ground truth: {', '.join(sorted(labels))}]" if labels else ""))
        for step in d["attack_path"][:6]:
            print(f"    {step['when'][:19]}  {step['who'] or '-'} {step['from'] or '-'} -> {step['to'] or '-'} "
                  f"({step['how']}) {step['score']:.2f}: {'; '.join(step['reasons'][:2])}")
        reach = sum(row["n_reached"] for row in d["blast_radius"])
        print(f"    blast radius: {reach} entities reached by {len(d['blast_radius'])} compromised accounts/hosts")
    # The synthetic data is labelled: say which attack campaigns the alerts caught.
    attacks = replay[replay["label"].fillna(0).astype(int) == 1]
    caught = {a["event_id"] for a in scorer.alerts if a.get("label_detail")}
    print("\nground truth (synthetic labels), attack steps alerted per campaign:")
    for campaign, group in attacks.groupby(attacks["label_detail"].str.split(":").str[0]):
        hit = group["event_id"].isin(caught).sum()
        print(f"    {campaign}: {hit} of {len(group)}")
    print("\n" + "\n".join(line for line in metrics.splitlines() if not line.startswith("#")))
    if args.keep_serving:
        _log(f"incident pages: {base}/incidents/<id>.html; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            thread.join()
    server.should_exit = True
    thread.join(timeout=10)
    scorer.close()
    return 0


def _stand_in_model(events: Any, train_days: int) -> ChampionModel:
    from anomaly_pipeline.detectors import HybridDetector
    from anomaly_pipeline.graph import WindowConfig, build_graph_windows
    from anomaly_pipeline.models.hybrid import HybridConfig
    from anomaly_pipeline.streaming.scorer import ChampionModel
    from anomaly_pipeline.training import TrainConfig

    window = WindowConfig(coarse_stride_hours=None)
    cutoff = events["ts"].dt.floor("1D").min() + __import__("pandas").Timedelta(days=train_days)
    windows = build_graph_windows(events[events["ts"] < cutoff], window)
    detector = HybridDetector(HybridConfig(hidden=32, multi_scale=False), TrainConfig(seed=0).with_epochs_per_stage(2),
                              on_epoch=lambda s: _log(f"  epoch {s.epoch} ({s.stage}): validation loss "
                                                      f"{s.validation_loss:.3f}"))
    detector.fit(windows)
    return ChampionModel(detector=detector, window=window, uri="stand-in (trained by stream-demo, not registered)")


def add_stream_commands(sub: Any) -> None:
    """Register ``stream``, ``serve`` and ``stream-demo`` on the CLI's subparsers."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threshold", type=float, default=None, help="alert above this score (default: the model's)")
        p.add_argument("--alert-tail", type=arg_fraction, default=None,
                       help="alert on the rarest share of events instead: e.g. 0.002 = scores above all but "
                            "0.2%% of the model's validation events (between 0 and 1)")
        p.add_argument("--memory-days", type=arg_positive, default=DEFAULT_MEMORY_DAYS,
                       help="how long first-seen pairs, hour profiles and event ids are remembered, in days "
                            f"(default {DEFAULT_MEMORY_DAYS:g})")
        p.add_argument("--incident-horizon-hours", type=arg_positive, default=4.0,
                       help="alerts sharing entities within this many hours form one incident (default 4)")
        p.add_argument("--max-batch", type=arg_int_at_least(1), default=2000,
                       help="largest micro-batch in events (default 2000)")

    def cold(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cold", action="store_true",
                       help="start with an empty state instead of replaying the champion's training history "
                            "(the default warm start); for replaying old data: warm, events already in that "
                            "history count as duplicates and events older than it are refused as late")

    stream = sub.add_parser("stream", help="score a live event stream with the @champion model",
                            description="Score events from stdin ('-'), a file (any supported format, --follow "
                                        "to tail it) or a Kafka topic in micro-batches with the @champion model, "
                                        "its state warmed up with the champion's training events (--cold: empty); "
                                        "alerts as JSON lines on stdout (or --alerts), progress on stderr.")
    stream.add_argument("input", nargs="?", default="-", help="event file, or '-' for JSON lines on stdin (default)")
    add_format_option(stream, "format of the input file")
    stream.add_argument("--follow", action="store_true", help="keep reading the file as it grows")
    stream.add_argument("--from-start", action="store_true",
                        help="read a JSON-lines file from its start, not from where the last stream of it stopped "
                             "(alerts already sent are still not sent again)")
    stream.add_argument("--kafka-topic", default=None, help="read this Kafka topic instead (needs the kafka extra)")
    stream.add_argument("--kafka-bootstrap", default=None, help="brokers (default $KAFKA_BOOTSTRAP_SERVERS)")
    stream.add_argument("--alerts", default=None, help="append alerts (JSON lines) here instead of stdout")
    stream.add_argument("--incidents-out", default=None, help="write the incidents (JSON) here at the end")
    stream.add_argument("--max-wait-s", type=arg_positive, default=0.2,
                        help="longest wait to fill a micro-batch from stdin, in seconds (default 0.2)")
    common(stream)
    cold(stream)
    stream.set_defaults(func=_cmd_stream)

    serve = sub.add_parser(
        "serve", help="HTTP scoring service: POST /events, alerts, incidents, metrics",
        description="Serve the @champion model over HTTP, its state warmed up with the champion's training "
        "events (--cold: empty): POST /events scores a batch; / links the incident "
        "index (/incidents), alerts, API docs (/docs, no CDN needed), metrics (Prometheus) and /healthz. It binds "
        f"to 127.0.0.1 unless --host says otherwise; with ${API_TOKEN_ENV} set every route but /healthz needs "
        "'Authorization: Bearer <token>'.")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})")
    serve.add_argument("--allowed-hosts", default=None,
                       help="Host header names to answer, comma-separated ('*.example.com' patterns, '*' for any); "
                            f"others get 400 (default ${ALLOWED_HOSTS_ENV}, else localhost and 127.0.0.1 on "
                            "loopback or the --host address; required with 0.0.0.0)")
    serve.add_argument("--port", type=arg_port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    serve.add_argument("--max-body-bytes", type=arg_int_at_least(1024), default=MAX_BODY_BYTES,
                       help=f"largest request body; larger ones get 413 (default {MAX_BODY_BYTES:,})")
    common(serve)
    cold(serve)
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser(
        "stream-demo", help="replay a synthetic day with an attack through the service",
        description="Generate synthetic days, start the service in process, replay the last two days through "
        "POST /events and print the incidents with the most evidence and which attack steps were alerted. "
        "Uses @champion, or trains a small stand-in model when there is none.")
    demo.add_argument("--days", type=arg_int_at_least(1), default=6,
                      help="synthetic days; the last two are replayed (default 6, at least 3)")
    demo.add_argument("--users", type=arg_int_at_least(1), default=60, help="user accounts (default 60, at least 10)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the synthetic data (default 7)")
    demo.add_argument("--top", type=arg_int_at_least(1), default=5, help="incidents to print (default 5)")
    demo.add_argument("--keep-serving", action="store_true", help="keep the service up to browse incident pages")
    common(demo)
    demo.set_defaults(alert_tail=0.002)
    demo.set_defaults(func=_cmd_stream_demo)
