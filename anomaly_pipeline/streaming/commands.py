"""The ``stream`` and ``serve`` subcommands of ``anomaly-pipeline`` (and the ``make stream-demo`` replay)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from anomaly_pipeline.streaming.scorer import ChampionModel, StreamScorer, load_champion
from anomaly_pipeline.streaming.state import StreamConfig


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def alert_threshold(detector: Any, threshold: float | None, tail: float | None) -> float | None:
    """The explicit threshold, else the score above which a share ``tail`` of the model's
    validation events lie (never below the model's own threshold), else None (the model's)."""
    if threshold is not None or tail is None:
        return threshold
    if detector.calibration_ is None:
        raise ValueError("--alert-tail needs a model with calibration quantiles; pass --threshold instead")
    if not 0 < tail < 1:
        raise ValueError(f"--alert-tail must lie strictly between 0 and 1, got {tail}")
    points = len(detector.calibration_) - 1
    return max(float(detector.calibration_[int(round((1 - tail) * points))]), float(detector.threshold_))


def _scorer(args: argparse.Namespace, model: ChampionModel, alert_out: Any = None, *,
            log_alerts: bool = True) -> StreamScorer:
    from anomaly_pipeline.alerts import AlertSink

    sink = AlertSink.from_env()
    if not log_alerts and not sink.webhook_url:
        sink = None  # the demo prints incidents; a log line per alert would bury them
    threshold = alert_threshold(model.detector, args.threshold, args.alert_tail)
    scorer = StreamScorer(model, stream_config=StreamConfig(window=model.window, memory_days=args.memory_days),
                          threshold=threshold, sink=sink, alert_out=alert_out,
                          incident_horizon_s=args.incident_horizon_hours * 3600.0, log=_log)
    _log(f"alert threshold {scorer.threshold:.2f}")
    return scorer


def _champion(args: argparse.Namespace) -> ChampionModel:
    from anomaly_pipeline import settings
    from anomaly_pipeline.registry import RegistryConfig

    model = load_champion(RegistryConfig.from_state(settings.state_paths(args.home)))
    _log(f"model: {model.uri} (threshold {model.detector.threshold_:.2f}, {model.window.stride_hours:g} h buckets, "
         f"history {model.window.history})")
    return model


def _cmd_stream(args: argparse.Namespace) -> int:
    from anomaly_pipeline.streaming.sources import FileSource, KafkaSource, LineSource

    try:
        model = _champion(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = open(args.alerts, "a", encoding="utf-8") if args.alerts else sys.stdout  # noqa: SIM115 - closed below
    try:
        scorer = _scorer(args, model, alert_out=out)
        if args.kafka_topic:
            source: Any = KafkaSource(args.kafka_topic, bootstrap_servers=args.kafka_bootstrap)
            name = "kafka"
        elif args.input in (None, "-"):
            source, name = LineSource(sys.stdin, max_batch=args.max_batch, max_wait_s=args.max_wait_s), "stdin"
        else:
            source = FileSource(args.input, args.format, follow=args.follow, chunk_rows=args.max_batch)
            name = "file"
        try:
            scorer.run(source, source_name=name)
        finally:
            scorer.close()  # explanations finished, alerts delivered to the sink
        if args.incidents_out:
            with open(args.incidents_out, "w", encoding="utf-8") as handle:
                json.dump([i.to_dict() for i in scorer.incidents.incidents.values()], handle, indent=2, default=str)
            _log(f"incidents: {args.incidents_out}")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _log("stopped")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from anomaly_pipeline.service import create_app

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _log(f"warning: binding to {args.host}: the service has no authentication; put it behind one")
    try:
        model = _champion(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app = create_app(_scorer(args, model), max_body_bytes=args.max_body_bytes)
    _log(f"serving on http://{args.host}:{args.port} (OpenAPI: /docs)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.scorer.close()
    return 0


def _cmd_stream_demo(args: argparse.Namespace) -> int:
    """Replay a synthetic day with an attack through the service and print the incidents."""
    import httpx

    from anomaly_pipeline.service import create_app, serve_in_thread
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events

    data = SyntheticConfig(seed=args.seed, n_users=args.users, n_servers=10, days=args.days)
    events = generate_events(data).sort_values("ts", kind="stable").reset_index(drop=True)
    try:
        model = _champion(args)
    except RuntimeError as exc:
        _log(f"{exc}\nno champion: training a small stand-in model on the first {args.days - 2} synthetic days "
             "(a minute or so; `make run` trains and promotes the real one)")
        model = _stand_in_model(events, args.days - 2)
    day = events["ts"].dt.floor("1D")
    days = sorted(day.unique())
    replay = events[day >= days[-2]]  # a warm-up day, then the attack day
    records = replay.assign(ts=replay["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_json(orient="records")
    records = json.loads(records)
    scorer = _scorer(args, model, log_alerts=False)
    server, thread, port = serve_in_thread(create_app(scorer))
    base = f"http://127.0.0.1:{port}"
    _log(f"service on {base}: replaying {len(records):,} events of {days[-2].date()} and {days[-1].date()} "
         f"({int(replay['label'].fillna(0).sum())} of them attack steps) in batches of {args.max_batch:,}")
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=120) as client:
        for lo in range(0, len(records), args.max_batch):
            response = client.post("/events", json={"events": records[lo : lo + args.max_batch]})
            response.raise_for_status()
        scorer.flush_explanations()
        incidents = client.get("/incidents").json()
        metrics = client.get("/metrics").text
    _log(f"scored {len(records):,} events in {time.monotonic() - started:.1f} s; {scorer.metrics.alerts:,} alerts")
    # Most evidence first: the sum of an incident's alert scores (many strange steps beat one).
    weight = {i.incident_id: sum(a["score"] for a in i.alerts) for i in scorer.incidents.incidents.values()}
    top = sorted(incidents, key=lambda i: -weight[i["incident_id"]])[: args.top]
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
    from anomaly_pipeline.service import DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threshold", type=float, default=None, help="alert above this score (default: the model's)")
        p.add_argument("--alert-tail", type=float, default=None,
                       help="alert on the rarest share of events instead: e.g. 0.002 = scores above all but "
                            "0.2%% of the model's validation events")
        p.add_argument("--memory-days", type=float, default=30.0, help="first-seen look-back in days (default 30)")
        p.add_argument("--incident-horizon-hours", type=float, default=4.0,
                       help="alerts sharing entities within this many hours form one incident (default 4)")
        p.add_argument("--max-batch", type=int, default=2000, help="largest micro-batch (events)")

    stream = sub.add_parser("stream", help="score a live event stream with the @champion model",
                            description="Score events from stdin ('-'), a file (any supported format, --follow "
                                        "to tail it) or a Kafka topic in micro-batches; alerts as JSON lines.")
    stream.add_argument("input", nargs="?", default="-", help="event file, or '-' for JSON lines on stdin")
    stream.add_argument("--format", default="auto", help="input format of a file (default: detected)")
    stream.add_argument("--follow", action="store_true", help="keep reading the file as it grows")
    stream.add_argument("--kafka-topic", default=None, help="read this Kafka topic instead (needs the kafka extra)")
    stream.add_argument("--kafka-bootstrap", default=None, help="brokers (default $KAFKA_BOOTSTRAP_SERVERS)")
    stream.add_argument("--alerts", default=None, help="append alerts (JSON lines) here instead of stdout")
    stream.add_argument("--incidents-out", default=None, help="write the incidents (JSON) here at the end")
    stream.add_argument("--max-wait-s", type=float, default=0.2, help="longest wait to fill a micro-batch (s)")
    common(stream)
    stream.set_defaults(func=_cmd_stream)

    serve = sub.add_parser("serve", help="HTTP scoring service: POST /events, alerts, incidents, metrics")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    common(serve)
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("stream-demo", help="replay a synthetic day with an attack through the service")
    demo.add_argument("--days", type=int, default=6, help="synthetic days (the last one is replayed)")
    demo.add_argument("--users", type=int, default=60)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--top", type=int, default=5, help="incidents to print")
    demo.add_argument("--keep-serving", action="store_true", help="keep the service up to browse incident pages")
    common(demo)
    demo.set_defaults(alert_tail=0.002)
    demo.set_defaults(func=_cmd_stream_demo)
