"""Defaults that the command line shows in its help, in a module with no heavy imports.

``anomaly-pipeline --help`` and every argument error must answer at once, before torch, Dagster
or MLflow load (seconds each). The modules that use these values (``detect``, ``service``) import
them from here, so the help text and the behaviour cannot disagree.
"""

from __future__ import annotations

# detect: the protocol of ``anomaly_pipeline.detect``
DEFAULT_TRAIN_FRACTION = 0.3  # share of the input's time span used for training and early stopping
DEFAULT_TS_MIN = "1990-01-01"  # before DARPA 1998, the oldest data set this project reads
DEFAULT_EXPLAIN_TOP = 20

# serve: the HTTP scoring service (``anomaly_pipeline.service``)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 20_000
API_TOKEN_ENV = "ANOMALY_PIPELINE_API_TOKEN"  # set: every route but /healthz needs "Authorization: Bearer <it>"
ALLOWED_HOSTS_ENV = "ANOMALY_PIPELINE_ALLOWED_HOSTS"  # Host header names the service answers, comma-separated
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_MEMORY_DAYS = 30.0  # how long the streaming state remembers pairs, hour profiles and event ids

# Warm start: the champion's recent training events, stored in its registered data folder (so the
# version's SHA-256 digest covers them) and replayed through the streaming state when ``serve`` or
# ``stream`` starts. The newest ``WARM_HISTORY_DAYS`` of them, at most ``WARM_HISTORY_MAX_EVENTS``
# (the newest; about 27 bytes an event in Parquet on the synthetic default), replayed in pieces of
# ``WARM_REPLAY_CHUNK_EVENTS`` so the buffer never holds more than the model's horizon plus a piece.
WARM_HISTORY_DAYS = DEFAULT_MEMORY_DAYS
WARM_HISTORY_MAX_EVENTS = 1_000_000
WARM_REPLAY_CHUNK_EVENTS = 250_000

# Input formats by name (the readers are ``sources.formats.FORMATS``; a test keeps the two equal),
# with what a file of that format looks like, for error messages.
FORMAT_DESCRIPTIONS: dict[str, str] = {
    "canonical": "the event contract's CSV (header with ts and event_type) or JSON lines",
    "lanl": "LANL auth, proc, flows or dns lines (comma-separated, no header)",
    "zeek": "a Zeek conn.log (TSV starting with #separator / #fields lines, or JSON lines with id.orig_h)",
    "darpa": "the DARPA 1998 / MIDAS edge stream (src,dst,MM/DD/YYYY-HH:MM,label)",
    "ocsf": "OCSF JSON lines (class_uid 3002, 4001 or 1007)",
    "windows": "Windows Security events as JSON lines (EventID 4624, 4625, 4688, 4768, 4769)",
}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMAT_DESCRIPTIONS)
