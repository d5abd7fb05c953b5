"""OCSF 1.x events (JSON Lines) into the event contract.

One OCSF event object per line. Three classes map to the contract; any other ``class_uid``
becomes a row with ``parse_error`` ``"unsupported event: class_uid ..."`` (quarantined, counted):

=========================  ===============  =================================================
class                      event_type       notes
=========================  ===============  =================================================
3002 Authentication        auth             every activity (Logon, Logoff, tickets, ...)
4001 Network Activity      network_flow     every activity (Open, Close, Traffic, ...)
1007 Process Activity      process_start    activity_id 1 (Launch) only; other activities
                                            (Terminate, Open, Inject, ...) are unsupported rows
=========================  ===============  =================================================

Fields (OCSF names; the first present wins):

* ts: ``time`` (epoch milliseconds, OCSF's timestamp_t), else ``time_dt`` (ISO-8601).
* user: Authentication: ``user.name`` (the account authenticated), then ``actor.user.name``;
  other classes: ``actor.user.name``, then ``user.name`` (and ``process.user.name`` for
  Process Activity).
* src_host: ``src_endpoint.hostname | ip | name``; Process Activity: ``device.hostname | ip``
  (where the process runs) first.
* dst_host: ``dst_endpoint.hostname | ip | name``; Authentication falls back to
  ``device.hostname | ip`` (the device that logged the logon is its target).
* dst_port: ``dst_endpoint.port``. protocol: ``connection_info.protocol_name`` (or
  ``protocol_num``: 6 tcp, 17 udp, 1 icmp), else other.
* auth_type: ``auth_protocol`` (caption), else ``auth_protocol_id`` (1 NTLM, 2 Kerberos,
  0 Unknown -> null, others -> other). logon_type: ``logon_type`` (caption), else
  ``logon_type_id`` (0 Unknown -> null; 2 interactive, 3 network, 4 batch, 5 service,
  7 unlock, 8 network, 10 remote_interactive, 11 interactive, 12 remote_interactive,
  13 unlock, others -> other).
* success: ``status_id`` 1 Success -> true, 2 Failure -> false (else ``status`` caption);
  Authentication only.
* bytes_out / bytes_in / packets: ``traffic.bytes_out`` / ``traffic.bytes_in`` /
  ``traffic.packets`` (else ``packets_out + packets_in``). duration_s: ``duration`` (ms) / 1000,
  else ``(end_time - start_time)`` / 1000.
* process: ``process.name``, else the base name of ``process.file.name`` / ``process.file.path``.
* event id: ``ocsf:<metadata.uid>`` when present, else ``ocsf:<file name>:<line>``.

OCSF carries no ground-truth label: label and label_detail stay null. Rows keep file order.
Lines in = rows out: invalid JSON, a non-object, a missing time, a wrong value type or an
unsupported class / activity is a row with ``parse_error`` and ``raw_excerpt``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly_pipeline.sources import _common as common

ADAPTER = "ocsf"
CLASSES: dict[int, str] = {3002: "auth", 4001: "network_flow", 1007: "process_start"}
CLASS_NAMES: dict[int, str] = {3002: "Authentication", 4001: "Network Activity", 1007: "Process Activity"}
PROCESS_LAUNCH = 1
AUTH_PROTOCOL_IDS: dict[int, str | None] = {0: None, 1: "ntlm", 2: "kerberos"}
STATUS_IDS: dict[int, bool | None] = {0: None, 1: True, 2: False, 99: None}
_SUPPORTED = ", ".join(f"{uid} {name}" for uid, name in CLASS_NAMES.items())


def iter_ocsf(
    path: str | Path,
    *,
    chunk_rows: int = common.DEFAULT_CHUNK_ROWS,
    max_line_bytes: int = common.DEFAULT_MAX_LINE_BYTES,
    member: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream an OCSF JSON Lines file (plain, gzip or zip) as canonical chunks.

    Args:
        path: the file, one OCSF event object per line.
        chunk_rows: most rows (lines) per chunk.
        max_line_bytes: longest accepted line in bytes.
        member: the member to read from a zip archive with several files.

    Yields:
        DataFrames with ``schema.EVENT_COLUMNS`` plus ``parse_error`` / ``raw_excerpt``, one row
        per line, in file order.
    """
    path = common.check_common_args(path, chunk_rows, max_line_bytes)
    return common.iter_json_events(
        path,
        adapter=ADAPTER,
        mapper=ocsf_record,
        chunk_rows=chunk_rows,
        max_line_bytes=max_line_bytes,
        ts_unit="ms",
        member=member,
    )


def read_ocsf(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The whole file as one table (concatenated ``iter_ocsf`` chunks); kwargs as there."""
    chunks = list(iter_ocsf(path, **kwargs))
    return pd.concat(chunks, ignore_index=True) if chunks else common.empty_raw_events()


def ocsf_record(obj: dict[str, Any]) -> tuple[Any, ...]:
    """One OCSF event as the values of ``_common.JSON_FIELDS``; RecordError when unsupported."""
    class_uid = _int(obj.get("class_uid"), "class_uid")
    if class_uid is None:
        raise common.RecordError("unsupported event: no class_uid (not an OCSF event?)")
    if class_uid not in CLASSES:
        name = obj.get("class_name")
        shown = f" ({name})" if isinstance(name, str) else ""
        raise common.RecordError(
            f"unsupported event: class_uid {class_uid}{shown} is not one of {_SUPPORTED}"
        )
    event_type = CLASSES[class_uid]
    if class_uid == 1007:
        activity = _int(obj.get("activity_id"), "activity_id")
        if activity != PROCESS_LAUNCH:
            name = obj.get("activity_name")
            shown = f" ({name})" if isinstance(name, str) else ""
            raise common.RecordError(
                f"unsupported event: Process Activity activity_id {activity}{shown}; only 1 (Launch) "
                "maps to process_start"
            )
    ts = obj.get("time")
    if ts is None:
        ts = obj.get("time_dt")
    if ts is None:
        raise common.RecordError("missing required field: time (epoch ms) or time_dt is absent")
    if isinstance(ts, str) and ts.strip().lstrip("-").isascii() and ts.strip().lstrip("-").isdigit():
        ts = int(ts)

    src = _endpoint(obj.get("src_endpoint"))
    dst = _endpoint(obj.get("dst_endpoint"))
    device = _endpoint(obj.get("device"))
    actor_user = _text(_path(obj, "actor", "user", "name"))
    user = _text(_path(obj, "user", "name"))
    values: dict[str, Any] = {
        "event_id": _uid(obj),
        "ts": ts,
        "event_type": event_type,
    }
    if event_type == "auth":
        values["user"] = user or actor_user
        values["src_host"] = src
        values["dst_host"] = dst or device
        values["auth_type"] = _auth_type(obj)
        values["logon_type"] = _logon_type(obj)
        values["success"] = _success(obj)
    elif event_type == "process_start":
        values["user"] = actor_user or user or _text(_path(obj, "process", "user", "name"))
        values["src_host"] = device or src
        values["dst_host"] = dst
        values["process"] = _process(obj)
    else:
        values["user"] = actor_user or user
        values["src_host"] = src
        values["dst_host"] = dst
    dst_endpoint = obj.get("dst_endpoint")
    if isinstance(dst_endpoint, dict) and "port" in dst_endpoint:
        values["dst_port"] = _port(dst_endpoint["port"])
    if "connection_info" in obj:
        values["protocol"] = _protocol(obj)
    traffic = obj.get("traffic")
    if isinstance(traffic, dict):
        values["bytes_out"] = _number(traffic.get("bytes_out"), "traffic.bytes_out")
        values["bytes_in"] = _number(traffic.get("bytes_in"), "traffic.bytes_in")
        packets = _number(traffic.get("packets"), "traffic.packets")
        if packets is None:
            out_, in_ = (_number(traffic.get(k), f"traffic.{k}") for k in ("packets_out", "packets_in"))
            packets = None if out_ is None and in_ is None else (out_ or 0.0) + (in_ or 0.0)
        values["packets"] = packets
    if "duration" in obj or "start_time" in obj:
        values["duration_s"] = _duration(obj)
    return tuple(map(values.get, common.JSON_FIELDS))


def looks_like_ocsf(obj: dict[str, Any]) -> bool:
    """True for an object with OCSF's ``class_uid`` and a ``time`` / ``time_dt``."""
    return "class_uid" in obj and ("time" in obj or "time_dt" in obj or "metadata" in obj)


# --------------------------------------------------------------------------------------------


def _path(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = str(value).strip()
    return text or None


def _endpoint(endpoint: Any) -> str | None:
    if not isinstance(endpoint, dict):
        return None
    for key in ("hostname", "ip", "name"):
        text = _text(endpoint.get(key))
        if text is not None:
            return text
    return None


def _uid(obj: dict[str, Any]) -> str | None:
    uid = _text(_path(obj, "metadata", "uid"))
    return f"{ADAPTER}:{uid}" if uid else None


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    number = common.whole_number(value)
    if number is not None:
        return number
    raise common.RecordError(f"bad value: field {name} value {common.show(value)} is not an integer")


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise common.RecordError(f"bad number: field {name} value {common.show(value)} is not a number")


def _port(value: Any) -> float | None:
    port = _int(value, "dst_endpoint.port")
    if port is None:
        return None
    if not 0 <= port <= 65535:
        raise common.RecordError(f"bad value: field dst_endpoint.port value {port} is outside 0-65535")
    return float(port)


def _protocol(obj: dict[str, Any]) -> str | None:
    name = _text(_path(obj, "connection_info", "protocol_name"))
    if name is not None:
        return common.protocol_of(name)
    number = _int(_path(obj, "connection_info", "protocol_num"), "connection_info.protocol_num")
    return None if number is None or number < 0 else common.protocol_of(number)


def _auth_type(obj: dict[str, Any]) -> str | None:
    name = _text(obj.get("auth_protocol"))
    if name is not None:
        return common.auth_type_of(name)
    number = _int(obj.get("auth_protocol_id"), "auth_protocol_id")
    if number is None:
        return None
    return AUTH_PROTOCOL_IDS.get(number, "other")


def _logon_type(obj: dict[str, Any]) -> str | None:
    name = _text(obj.get("logon_type"))
    if name is not None:
        return common.logon_type_of(name)
    number = _int(obj.get("logon_type_id"), "logon_type_id")
    if number is None or number == 0:  # OCSF 0 is Unknown (Windows' 0 would be System)
        return None
    return common.logon_type_of(number)


def _success(obj: dict[str, Any]) -> bool | None:
    number = _int(obj.get("status_id"), "status_id")
    if number is not None:
        return STATUS_IDS.get(number)
    status = _text(obj.get("status"))
    if status is None:
        return None
    return {"success": True, "failure": False}.get(status.lower())


def _process(obj: dict[str, Any]) -> str | None:
    name = _text(_path(obj, "process", "name"))
    if name is not None:
        return name
    for key in ("name", "path"):
        text = _text(_path(obj, "process", "file", key))
        if text is not None:
            return text.replace("\\", "/").rsplit("/", 1)[-1] or None
    return None


def _duration(obj: dict[str, Any]) -> float | None:
    duration = _number(obj.get("duration"), "duration")
    if duration is not None:
        return duration / 1000.0
    start = _number(obj.get("start_time"), "start_time")
    end = _number(obj.get("end_time"), "end_time")
    if start is not None and end is not None and end >= start:
        return (end - start) / 1000.0
    return None


__all__ = ["ADAPTER", "CLASSES", "iter_ocsf", "looks_like_ocsf", "ocsf_record", "read_ocsf"]
