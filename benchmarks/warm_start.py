"""How long `anomaly-pipeline serve` takes to start warm, and what the warm start costs in memory.

Registers a champion the way ``registered_model`` does (weights plus the newest 30 days of its
training events as the warm history) in a scratch home, trained briefly on the synthetic default
(10 days, 120 users, about 108,000 events, the default multi-scale windows: its weights do not
change the cost of a start), then starts ``anomaly-pipeline serve`` as a separate process, warm and
``--cold``, and measures the time from launch until ``/healthz`` answers, the warm start's own
replay time, and the resident memory once up.

    .venv/bin/python benchmarks/warm_start.py                  # a scratch home under /tmp
    .venv/bin/python benchmarks/warm_start.py --home ~/.ap      # a home with a champion (or registers one there)
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _register(home: Path) -> None:
    from anomaly_pipeline import registry, settings
    from anomaly_pipeline.detectors import HybridDetector
    from anomaly_pipeline.graph import WindowConfig, build_graph_windows
    from anomaly_pipeline.mlflow_model import log_hybrid_model, warm_history_frame
    from anomaly_pipeline.models.hybrid import HybridConfig
    from anomaly_pipeline.pyfunc_loader import DIGEST_TAG
    from anomaly_pipeline.sources.synthetic import SyntheticConfig, generate_events
    from anomaly_pipeline.training import CurriculumStage, TrainConfig

    window = WindowConfig()
    windows = build_graph_windows(generate_events(SyntheticConfig()), window)
    quick = TrainConfig(stages=(CurriculumStage("quick", epochs=1, negatives="random"),), min_steps_per_epoch=5)
    detector = HybridDetector(HybridConfig(hidden=16), quick).fit(windows)
    config = registry.RegistryConfig.from_state(settings.state_paths(home))
    client = registry.configure(config)
    with registry.training_run(config, "warm-start-benchmark") as run:
        _, digest = log_hybrid_model(detector.save(home / "detector"), window,
                                     warm_history=warm_history_frame(windows.events))
    version = registry.register_version(client, config, run.info.run_id, tags={DIGEST_TAG: digest})
    registry.promote(client, config, version.version, gate_passed=True, challenger_score=0.5)


def _start(home: Path, *extra: str) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "anomaly_pipeline.cli", "--home", str(home), "serve", "--port", str(port), *extra]
    launched = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:  # serve's stderr, each line with its time since launch
        for line in process.stderr:
            lines.append(f"  {time.monotonic() - launched:5.1f} s  {line.rstrip()[:160]}")

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("serve exited:\n" + "\n".join(lines))
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        seconds = time.monotonic() - launched
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        rss = next(float(line.split()[1]) for line in metrics.splitlines()
                   if line.startswith("anomaly_stream_resident_memory_bytes"))
    finally:
        process.terminate()
        process.wait(30)
    return {"seconds_to_healthz": seconds, "warm_start": health["warm_start"], "rss_mib": rss / 2**20,
            "log": [line for line in lines if "ALERT" not in line]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None,
                        help="a home with a champion, or a new folder to register one in (default: a scratch folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warm-start-bench-") as scratch:
        home = args.home or Path(scratch) / "home"
        if not home.exists():
            started = time.monotonic()
            _register(home)
            print(f"champion registered in {time.monotonic() - started:.0f} s", flush=True)
        for label, extra in (("warm", ()), ("cold", ("--cold",))):
            result = _start(home, *extra)
            warm = result["warm_start"]
            print(f"{label}: /healthz answers {result['seconds_to_healthz']:.1f} s after launch; warm start "
                  f"{warm['status']} ({warm['history_events']:,} events in {warm['seconds']:.1f} s); "
                  f"RSS {result['rss_mib']:,.0f} MiB", flush=True)
            print("\n".join(result["log"]), flush=True)


if __name__ == "__main__":
    main()
