"""Ingest throughput of each format adapter: file -> canonical rows -> validated rows.

    python benchmarks/ingest_throughput.py [--repeats 3] [--lanl-lines 2000000] [--scale 1.0]
                                           [--no-validate] [--engine vectorised|gx] [--data-dir DIR]
                                           [--only TEXT ...] [--read-ahead]

Writes realistic samples to a temporary directory (LANL auth: 2,000,000 lines as plain text,
gzip, and plain with one damaged line per 100,000; a Zeek conn.log as TSV and as JSON Lines;
OCSF and Windows Security JSON Lines) and uses the real DARPA edge stream
(``darpa98/darpa_original.zip``, 4,554,344 lines, read from the zip) when the shared data folder
has it, else a generated DARPA file. For each input it times

* the adapter alone: every chunk read and conformed (events per second), and
* the adapter plus ``validate_events`` on each chunk (validated events per second; skipped for
  the gzip / damaged LANL variants, whose validation cost equals the plain file's),

as the median of ``--repeats`` runs, and prints a Markdown table. ``--only lanl darpa`` times
only the inputs whose name contains one of the words (case-insensitive), for quick before/after
comparisons on a busy machine. ``--read-ahead`` reads the next chunk in a background thread while
the current one is validated (an experiment, not what the pipeline does: Arrow's CSV parsing
and compute functions release the GIL, so on 2 idle cores the wall time could approach the
larger of reading and validating instead of their sum; on a loaded machine it gained nothing). ``--engine`` picks the
validation engine (``validate_events``): ``vectorised`` (default; row checks over whole
columns, GX validates each chunk's representative rows) or ``gx`` (GX evaluates every row, the
old path, ~8x slower). Target (issue 15): adapter + validate_events >= 1,000,000 events/s for
LANL auth and the DARPA csv on 2 idle cores. The machine is shared and
noisy: the header shows the CPU count and the load average before and after, and the process
CPU time is reported next to the wall time (Arrow's CSV parsing uses both cores, so CPU time
can exceed wall time on an idle machine and wall time exceeds CPU time under load).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_pipeline.sources.darpa import iter_darpa
from anomaly_pipeline.sources.lanl import iter_lanl
from anomaly_pipeline.sources.ocsf import iter_ocsf
from anomaly_pipeline.sources.windows import iter_windows
from anomaly_pipeline.sources.zeek import iter_zeek
from anomaly_pipeline.validation import ValidationPolicy, validate_events

REPO = Path(__file__).resolve().parents[1]
ENGINE = ["vectorised"]  # set from --engine
READ_AHEAD = [False]  # set from --read-ahead
# DARPA is from 1998 and the Zeek samples from 2024; the generated LANL epoch is 2026.
POLICY = ValidationPolicy(
    ts_min=pd.Timestamp("1990-01-01", tz="UTC"), ts_max=pd.Timestamp("2030-01-01", tz="UTC")
)


@dataclass
class Case:
    name: str
    path: Path
    lines: int
    reader: Callable[[Path], Iterator[pd.DataFrame]]
    validate: bool = True


# --------------------------------------------------------------------------------------------
# Sample generators (vectorised: a few seconds per million lines)
# --------------------------------------------------------------------------------------------


def _write_rows(
    path: Path, columns: list[np.ndarray], sep: str = ",", header: str = "", footer: str = ""
) -> None:
    n = len(columns[0])
    with path.open("w", encoding="utf-8") as out:
        out.write(header)
        for start in range(0, n, 200_000):
            part = [c[start : start + 200_000] for c in columns]
            out.write("\n".join(sep.join(r) for r in zip(*part, strict=True)) + "\n")
        out.write(footer)


def make_lanl_auth(path: Path, n: int, rng: np.random.Generator) -> None:
    """LANL-like auth lines: heavy-tailed computers and users, LANL's type vocabularies."""
    users = np.array(
        [f"U{i}@DOM1" for i in range(12_000)]
        + [f"C{i}$@DOM1" for i in range(8_000)]
        + ["ANONYMOUS LOGON@C586"]
    )
    comps = np.array([f"C{i}" for i in range(17_000)])
    auth = np.array(["Kerberos", "NTLM", "Negotiate", "?", "MICROSOFT_AUTHENTICATION_PACKAGE_V1_0"])
    logon = np.array(["Network", "Service", "Batch", "Interactive", "?", "Unlock", "RemoteInteractive"])
    orient = np.array(["LogOn", "LogOff", "TGS", "TGT", "AuthMap"])
    time_s = np.sort(rng.integers(1, 5_000_000, n)).astype(str)
    src_user = users[rng.zipf(1.5, n) % len(users)]
    columns = [
        time_s,
        src_user,
        np.where(rng.random(n) < 0.8, src_user, users[rng.integers(0, len(users), n)]),
        comps[rng.zipf(1.3, n) % len(comps)],
        comps[rng.zipf(1.3, n) % len(comps)],
        auth[rng.choice(5, n, p=[0.45, 0.2, 0.15, 0.15, 0.05])],
        logon[rng.choice(7, n, p=[0.6, 0.15, 0.05, 0.05, 0.1, 0.03, 0.02])],
        orient[rng.choice(5, n, p=[0.5, 0.35, 0.08, 0.05, 0.02])],
        np.where(rng.random(n) < 0.02, "Fail", "Success"),
    ]
    _write_rows(path, columns)


def damage(path: Path, out: Path, every: int) -> int:
    """Copy ``path`` with every ``every``-th line cut short (a wrong field count); return how many."""
    lines = path.read_bytes().split(b"\n")
    damaged = 0
    for i in range(every - 1, len(lines) - 1, every):
        lines[i] = lines[i][: len(lines[i]) // 2]
        damaged += 1
    out.write_bytes(b"\n".join(lines))
    return damaged


def make_zeek_tsv(path: Path, n: int, rng: np.random.Generator) -> None:
    ts = 1709251200 + np.sort(rng.uniform(0, 86_400, n)) + rng.exponential(2.0, n)  # not sorted
    proto = np.array(["tcp", "udp", "icmp"])[rng.choice(3, n, p=[0.7, 0.27, 0.03])]
    hosts = np.array([f"10.0.{i // 250}.{i % 250}" for i in range(2_000)])
    external = np.array([f"93.184.{i // 250}.{i % 250}" for i in range(20_000)])
    ports = np.array(["443", "80", "53", "22", "445", "3389", "8080"])
    label = np.array(["Benign", "Malicious", "Background"])[rng.choice(3, n, p=[0.6, 0.1, 0.3])]
    columns = [
        np.char.mod("%.6f", ts),
        np.char.add("C", rng.integers(10**15, 10**16, n).astype(str)),
        hosts[rng.integers(0, len(hosts), n)],
        rng.integers(1024, 65535, n).astype(str),
        external[rng.zipf(1.4, n) % len(external)],
        ports[rng.integers(0, len(ports), n)],
        proto,
        np.where(proto == "tcp", "ssl", "-"),
        np.char.mod("%.6f", rng.exponential(3.0, n)),
        rng.integers(0, 100_000, n).astype(str),
        rng.integers(0, 1_000_000, n).astype(str),
        np.full(n, "SF"),
        np.full(n, "T"),
        np.full(n, "F"),
        np.full(n, "0"),
        np.full(n, "ShADadfF"),
        rng.integers(1, 100, n).astype(str),
        rng.integers(40, 100_000, n).astype(str),
        rng.integers(0, 100, n).astype(str),
        rng.integers(0, 1_000_000, n).astype(str),
        np.full(n, "(empty)"),
        label,
        np.where(label == "Malicious", "C&C", "(empty)"),
    ]
    fields = [
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "proto",
        "service",
        "duration",
        "orig_bytes",
        "resp_bytes",
        "conn_state",
        "local_orig",
        "local_resp",
        "missed_bytes",
        "history",
        "orig_pkts",
        "orig_ip_bytes",
        "resp_pkts",
        "resp_ip_bytes",
        "tunnel_parents",
        "label",
        "detailedlabel",
    ]
    header = (
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
        f"#open\t2024-03-01-00-00-00\n#fields\t{chr(9).join(fields)}\n#types\t{chr(9).join(['string'] * len(fields))}\n"
    )
    _write_rows(
        path,
        [np.asarray(c) for c in columns],
        sep="\t",
        header=header,
        footer="#close\t2024-03-02-00-00-00\n",
    )


def make_zeek_json(path: Path, n: int, rng: np.random.Generator) -> None:
    with path.open("w") as out:
        for i in range(n):
            record = {
                "ts": 1709251200 + i * 0.05,
                "uid": f"C{i:016d}",
                "id.orig_h": f"10.0.0.{i % 250}",
                "id.orig_p": 40000 + i % 20000,
                "id.resp_h": f"93.184.{i % 7}.{i % 250}",
                "id.resp_p": 443,
                "proto": "tcp",
                "duration": 1.25,
                "orig_bytes": 1000 + i % 5000,
                "resp_bytes": 20000,
                "orig_pkts": 10,
                "resp_pkts": 12,
                "conn_state": "SF",
            }
            out.write(json.dumps(record) + "\n")


def make_darpa(path: Path, n: int, rng: np.random.Generator) -> None:
    ips = np.array([f"172.016.{i // 256:03d}.{i % 256:03d}" for i in range(25_000)])
    minute = np.sort(rng.integers(0, 55 * 1440, n))
    stamps = (pd.Timestamp("1998-06-01") + pd.to_timedelta(minute, unit="min")).strftime("%m/%d/%Y-%H:%M")
    label = np.where(rng.random(n) < 0.6, "neptune", "-")
    _write_rows(
        path, [ips[rng.zipf(1.3, n) % len(ips)], ips[rng.zipf(1.3, n) % len(ips)], np.asarray(stamps), label]
    )


def make_ocsf(path: Path, n: int, rng: np.random.Generator) -> None:
    with path.open("w") as out:
        for i in range(n):
            t = 1709251200000 + i * 100
            kind = i % 3
            if kind == 0:
                record = {
                    "class_uid": 3002, "activity_id": 1, "time": t, "metadata": {"uid": f"a{i}", "version": "1.1.0"},
                    "user": {"name": f"user{i % 500}"}, "src_endpoint": {"ip": f"10.0.0.{i % 250}"},
                    "dst_endpoint": {"hostname": f"srv{i % 40}"}, "auth_protocol_id": 2, "logon_type_id": 3,
                    "status_id": 1,
                }  # fmt: skip
            elif kind == 1:
                record = {
                    "class_uid": 4001, "activity_id": 6, "time": t, "src_endpoint": {"ip": f"10.0.0.{i % 250}"},
                    "dst_endpoint": {"ip": f"93.184.216.{i % 250}", "port": 443},
                    "connection_info": {"protocol_name": "tcp"},
                    "traffic": {"bytes_out": 1000, "bytes_in": 20000, "packets": 30}, "duration": 1500,
                }  # fmt: skip
            else:
                record = {
                    "class_uid": 1007, "activity_id": 1, "time": t, "device": {"hostname": f"ws{i % 300}"},
                    "actor": {"user": {"name": f"user{i % 500}"}}, "process": {"name": "cmd.exe", "pid": i},
                }  # fmt: skip
            out.write(json.dumps(record) + "\n")


def make_windows(path: Path, n: int, rng: np.random.Generator) -> None:
    with path.open("w") as out:
        for i in range(n):
            stamp = (pd.Timestamp("2024-03-01", tz="UTC") + pd.Timedelta(milliseconds=100 * i)).isoformat()
            if i % 2:
                record = {
                    "EventID": 4624, "TimeCreated": stamp, "Computer": f"ws{i % 300}.corp.local",
                    "EventRecordID": i, "TargetUserName": f"user{i % 500}", "LogonType": 3,
                    "IpAddress": f"10.0.0.{i % 250}", "WorkstationName": f"WS{i % 300}",
                    "AuthenticationPackageName": "Kerberos",
                }  # fmt: skip
            else:
                record = {
                    "Event": {
                        "System": {"EventID": 4688, "TimeCreated": {"SystemTime": stamp},
                                   "Computer": f"ws{i % 300}.corp.local", "EventRecordID": i},
                        "EventData": {"SubjectUserName": f"user{i % 500}",
                                      "NewProcessName": "C:\\Windows\\System32\\cmd.exe"},
                    }
                }  # fmt: skip
            out.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def read_ahead(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The chunks of ``chunks``, each read in a background thread while the caller works on the
    one before (at most one chunk waits); the reader's errors are raised here."""
    waiting: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: tuple[str, object]) -> bool:  # False once the consumer has stopped
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(("chunk", chunk)):
                    return
            offer(("end", None))
        except BaseException as exc:  # handed to the consumer
            offer(("error", exc))

    thread = threading.Thread(target=produce, name="ingest-bench-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = waiting.get()
            if kind == "end":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the reader's file, once its thread is done with it


def run_once(case: Case, validate: bool) -> tuple[float, float, int, int, int]:
    """(wall s, cpu s, rows, valid, quarantined) for one pass over the input."""
    rows = valid = quarantined = 0
    wall, cpu = time.perf_counter(), time.process_time()
    chunks = case.reader(case.path)
    for chunk in read_ahead(chunks) if READ_AHEAD[0] and validate else chunks:
        rows += len(chunk)
        if validate:
            result = validate_events(chunk, POLICY, engine=ENGINE[0])
            valid += result.rows_valid
            quarantined += result.rows_quarantined
    return time.perf_counter() - wall, time.process_time() - cpu, rows, valid, quarantined


def measure(case: Case, repeats: int, validate: bool) -> dict[str, float | int | str]:
    out: dict[str, float | int | str] = {}
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu, rows, _, _ = run_once(case, validate=False)
        walls.append(wall)
        cpus.append(cpu)
    if rows != case.lines:
        raise AssertionError(f"{case.name}: {rows} rows from {case.lines} lines")
    wall = statistics.median(walls)
    out.update(rows=rows, wall=wall, cpu=statistics.median(cpus), rate=rows / wall)
    if validate and case.validate:
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu, rows, valid, quarantined = run_once(case, validate=True)
            walls.append(wall)
            cpus.append(cpu)
        wall = statistics.median(walls)
        out.update(vwall=wall, vcpu=statistics.median(cpus), vrate=rows / wall, valid=valid, quarantined=quarantined)
    return out


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--lanl-lines", type=int, default=2_000_000, help="generated LANL auth lines")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the other generated sizes")
    parser.add_argument("--no-validate", action="store_true", help="time the adapters only")
    parser.add_argument("--engine", choices=["vectorised", "gx"], default="vectorised", help="validation engine")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("ANOMALY_PIPELINE_DATA_DIR", REPO.parent / "shared" / "datasets")),
        help="shared datasets folder (for the real DARPA zip)",
    )
    parser.add_argument(
        "--read-ahead", action="store_true", help="read the next chunk in a thread while validating (experiment)"
    )
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="TEXT", help="time only inputs whose name contains one of these"
    )
    args = parser.parse_args()
    ENGINE[0] = args.engine
    READ_AHEAD[0] = args.read_ahead
    rng = np.random.default_rng(7)
    sizes = {
        k: max(1000, int(v * args.scale))
        for k, v in {"zeek": 500_000, "json": 200_000, "darpa": 2_000_000}.items()
    }

    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        auth = folder / "auth.txt"
        make_lanl_auth(auth, args.lanl_lines, rng)
        auth_gz = folder / "auth.txt.gz"
        with auth.open("rb") as src, gzip.open(auth_gz, "wb", compresslevel=6) as dst:
            while block := src.read(1 << 24):
                dst.write(block)
        damaged_auth = folder / "auth_damaged.txt"
        n_damaged = damage(auth, damaged_auth, 100_000)
        zeek_tsv = folder / "conn.log"
        make_zeek_tsv(zeek_tsv, sizes["zeek"], rng)
        zeek_json = folder / "conn.json"
        make_zeek_json(zeek_json, sizes["json"], rng)
        ocsf = folder / "ocsf.jsonl"
        make_ocsf(ocsf, sizes["json"], rng)
        windows = folder / "security.jsonl"
        make_windows(windows, sizes["json"], rng)
        darpa = args.data_dir / "darpa98" / "darpa_original.zip"
        if darpa.is_file():
            darpa_case = Case("DARPA edge stream (real, read from the zip)", darpa, 4_554_344, iter_darpa)
        else:
            generated = folder / "darpa.csv"
            make_darpa(generated, sizes["darpa"], rng)
            darpa_case = Case("DARPA edge stream (generated csv)", generated, sizes["darpa"], iter_darpa)
        print(f"samples written in {time.perf_counter() - started:.0f} s to {folder}", flush=True)

        n = args.lanl_lines
        cases = [
            Case("LANL auth", auth, n, lambda p: iter_lanl(p, kind="auth")),
            Case("LANL auth, gzip", auth_gz, n, lambda p: iter_lanl(p, kind="auth"), validate=False),
            Case(
                f"LANL auth, {n_damaged} damaged lines (1 per 100k)",
                damaged_auth,
                n,
                lambda p: iter_lanl(p, kind="auth"),
                validate=False,
            ),
            Case("Zeek conn.log TSV", zeek_tsv, sizes["zeek"], iter_zeek),
            Case("Zeek conn.log JSON", zeek_json, sizes["json"], iter_zeek),
            darpa_case,
            Case("OCSF JSON (3002/4001/1007)", ocsf, sizes["json"], iter_ocsf),
            Case("Windows Security JSON (4624/4688)", windows, sizes["json"], iter_windows),
        ]
        if args.only:
            cases = [c for c in cases if any(w.lower() in c.name.lower() for w in args.only)]
        if not args.no_validate:
            # One-time setup (GX's context, data source and the suite, ~0.3-0.5 s per process)
            # is not throughput: pay it before the first timed case, not inside it.
            validate_events(next(iter(iter_lanl(auth, kind="auth", chunk_rows=1000))), POLICY, engine=args.engine)
        load_before = _load()
        results = []
        for case in cases:
            print(f"timing {case.name} ...", flush=True)
            results.append((case, measure(case, args.repeats, validate=not args.no_validate)))
        load_after = _load()

    print()
    print(
        f"Ingest throughput, median of {args.repeats} runs; validation engine {args.engine}"
        f"{', next chunk read ahead in a thread' if args.read_ahead else ''}; {os.cpu_count()} CPUs; "
        f"load average (1/5/15 min) {load_before} before, {load_after} after."
    )
    print()
    print(
        "| input | lines | adapter only: events/s | wall s | CPU s | adapter + validate_events: events/s "
        "| wall s | CPU s | valid | quarantined |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case, r in results:
        if "vrate" in r:
            tail = f"{r['vrate']:,.0f} | {r['vwall']:.2f} | {r['vcpu']:.2f} | {r['valid']:,} | {r['quarantined']:,}"
        else:
            tail = "- | - | - | - | -"
        print(
            f"| {case.name} | {r['rows']:,} | {r['rate']:,.0f} | {r['wall']:.2f} | {r['cpu']:.2f} | {tail} |"
        )


if __name__ == "__main__":
    main()
