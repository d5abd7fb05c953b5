"""Windows Security events exported as JSON Lines into the event contract.

One event per line, in either of two shapes:

* flat: ``{"EventID": 4624, "TimeCreated": "...", "Computer": "...", "TargetUserName": ...}``
  (the EventData fields next to the System ones; ``EventId`` / ``Id`` and ``MachineName``
  are accepted as aliases, ``RecordId`` / ``EventRecordID`` as the record number);
* nested, as XML-to-JSON converters write it: ``{"Event": {"System": {...}, "EventData":
  {...}}}``, where ``EventID`` may be ``4624``, ``"4624"`` or ``{"#text": "4624"}``,
  ``TimeCreated`` a string or ``{"SystemTime": ...}`` / ``{"@SystemTime": ...}``, and
  ``EventData`` either a name -> value object or ``{"Data": [{"@Name": ..., "#text": ...}]}``.

``TimeCreated`` is ISO-8601 (naive means UTC; 7 fractional digits are fine), PowerShell's
``/Date(<ms>)/``, or an epoch number (milliseconds when above 1e11, else seconds).

Supported events and mapping (``-`` and empty values are null):

======  ===================================  ==============================================
id      meaning                              mapping
======  ===================================  ==============================================
4624    logon success                        auth, success=true
4625    logon failure                        auth, success=false
4688    process creation                     process_start
4768    Kerberos TGT request                 auth, auth_type=kerberos, success=Status 0x0
4769    Kerberos service ticket request      auth, auth_type=kerberos, success=Status 0x0
======  ===================================  ==============================================

* 4624 / 4625: user = TargetUserName, src_host = WorkstationName, else IpAddress (the client),
  dst_host = Computer (where the logon happened), logon_type = LogonType (2 interactive,
  3 network, 4 batch, 5 service, 7 unlock, 8 network, 10 remote_interactive, 11 interactive,
  ...), auth_type = AuthenticationPackageName (Kerberos, NTLM, Negotiate; MSV1_0 -> ntlm).
* 4688: user = TargetUserName (the new process's account, Windows 10+), else
  SubjectUserName; src_host = Computer; process = the base name of NewProcessName
  (``C:\\Windows\\System32\\cmd.exe`` -> ``cmd.exe``, case kept).
* 4768 / 4769: user = TargetUserName (a ``user@REALM`` form is cut to ``user``),
  src_host = IpAddress (``::ffff:10.0.0.5`` -> ``10.0.0.5``), dst_host = Computer (the domain
  controller; 4769's ServiceName is not mapped).

Any other EventID (and a record without one) is a row with ``parse_error``
``"unsupported event: ..."``. The event id is ``windows:<Computer>:<EventRecordID>`` when both
are present, else ``windows:<file name>:<line>``. Windows logs carry no ground-truth label:
label stays null. Rows keep file order. Lines in = rows out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly_pipeline.sources import _common as common

ADAPTER = "windows"
EVENT_IDS: dict[int, str] = {
    4624: "logon success",
    4625: "logon failure",
    4688: "process creation",
    4768: "Kerberos TGT request",
    4769: "Kerberos service ticket request",
}
_SUPPORTED = ", ".join(str(i) for i in EVENT_IDS)
_ID_KEYS = ("EventID", "EventId", "Id")
_RECORD_KEYS = ("EventRecordID", "RecordId", "RecordNumber")
_DOTNET_DATE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/")


def iter_windows(
    path: str | Path,
    *,
    chunk_rows: int = common.DEFAULT_CHUNK_ROWS,
    max_line_bytes: int = common.DEFAULT_MAX_LINE_BYTES,
    member: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream Windows Security events (JSON Lines; plain, gzip or zip) as canonical chunks.

    Args:
        path: the export, one event object per line (flat or ``{"Event": ...}``).
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
        mapper=windows_record,
        chunk_rows=chunk_rows,
        max_line_bytes=max_line_bytes,
        ts_unit="ms",
        member=member,
    )


def read_windows(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The whole file as one table (concatenated ``iter_windows`` chunks); kwargs as there."""
    chunks = list(iter_windows(path, **kwargs))
    return pd.concat(chunks, ignore_index=True) if chunks else common.empty_raw_events()


def looks_like_windows(obj: dict[str, Any]) -> bool:
    """True for a flat event with an EventID or a nested ``{"Event": {"System": ...}}``."""
    event = obj.get("Event")
    if isinstance(event, dict) and isinstance(event.get("System"), dict):
        return True
    return any(k in obj for k in ("EventID", "EventId")) and ("TimeCreated" in obj or "Computer" in obj)


def windows_record(obj: dict[str, Any]) -> tuple[Any, ...]:
    """One event as the values of ``_common.JSON_FIELDS``; RecordError when unsupported."""
    fields = _flatten(obj)
    event_id = _event_id(fields)
    if event_id is None:
        raise common.RecordError("unsupported event: no EventID (not a Windows event?)")
    if event_id not in EVENT_IDS:
        raise common.RecordError(
            f"unsupported event: EventID {event_id} is not one of {_SUPPORTED} (logon, process "
            "creation and Kerberos events)"
        )
    ts = _time(fields.get("TimeCreated"))
    computer = _text(fields.get("Computer")) or _text(fields.get("MachineName"))
    record = next((_text(fields.get(k)) for k in _RECORD_KEYS if fields.get(k) is not None), None)
    values: dict[str, Any] = {
        "event_id": f"{ADAPTER}:{computer}:{record}" if computer and record else None,
        "ts": ts,
    }
    if event_id in (4624, 4625):
        values.update(
            event_type="auth",
            user=_text(fields.get("TargetUserName")),
            src_host=_text(fields.get("WorkstationName")) or _ip(fields.get("IpAddress")),
            dst_host=computer,
            logon_type=_logon_type(fields.get("LogonType")),
            auth_type=common.auth_type_of(_text(fields.get("AuthenticationPackageName"))),
            success=event_id == 4624,
        )
    elif event_id == 4688:
        values.update(
            event_type="process_start",
            user=_text(fields.get("TargetUserName")) or _text(fields.get("SubjectUserName")),
            src_host=computer,
            process=_basename(_text(fields.get("NewProcessName"))),
        )
    else:  # 4768, 4769
        user = _text(fields.get("TargetUserName"))
        values.update(
            event_type="auth",
            user=(user.split("@", 1)[0] or None) if user else None,
            src_host=_ip(fields.get("IpAddress")),
            dst_host=computer,
            auth_type="kerberos",
            success=_status_ok(fields.get("Status")),
        )
    return tuple(map(values.get, common.JSON_FIELDS))


# --------------------------------------------------------------------------------------------


def _flatten(obj: dict[str, Any]) -> dict[str, Any]:
    """System and EventData fields of either shape in one flat dict (EventData wins)."""
    event = obj.get("Event")
    if not isinstance(event, dict):
        return obj
    flat: dict[str, Any] = {}
    system = event.get("System")
    if isinstance(system, dict):
        for key, value in system.items():
            flat[key.lstrip("@")] = value
    data = event.get("EventData")
    if isinstance(data, dict):
        items = data.get("Data")
        if isinstance(items, dict):  # xmltodict gives a lone <Data> element as an object
            items = [items]
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    name = item.get("@Name", item.get("Name"))
                    value = next((item[k] for k in ("#text", "text", "Value", "value") if k in item), None)
                    if isinstance(name, str):
                        flat[name] = value
        else:
            flat.update({k: v for k, v in data.items() if not k.startswith("@")})
    return flat


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        for key in ("#text", "text", "value", "Value", "SystemTime", "@SystemTime"):
            if key in value:
                return value[key]
        return None
    return value


def _event_id(fields: dict[str, Any]) -> int | None:
    for key in _ID_KEYS:
        if key in fields:
            value = _unwrap(fields[key])
            number = common.whole_number(value)
            if number is not None:
                return number
            raise common.RecordError(
                f"bad value: field {key} value {common.show(value)} is not an event number"
            )
    return None


def _time(value: Any) -> Any:
    """TimeCreated as an ISO string or epoch milliseconds (see the module docstring)."""
    value = _unwrap(value)
    if value is None:
        raise common.RecordError("missing required field: TimeCreated is absent")
    if isinstance(value, bool):
        raise common.RecordError(f"bad timestamp: TimeCreated value {common.show(value)} is not a time")
    if isinstance(value, int | float):
        return value if abs(value) > 1e11 else value * 1000
    if isinstance(value, str):
        match = _DOTNET_DATE.fullmatch(value.strip())
        if match:
            return int(match.group(1))
        return value
    raise common.RecordError(f"bad timestamp: TimeCreated value {common.show(value)} is not a time")


def _text(value: Any) -> str | None:
    value = _unwrap(value)
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = str(value).strip()
    return None if text in ("", "-") else text


def _ip(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    return text[7:] if text.lower().startswith("::ffff:") else text


def _logon_type(value: Any) -> str | None:
    value = _unwrap(value)
    if value is None:
        return None
    number = common.whole_number(value)
    if number is None:
        raise common.RecordError(f"bad value: field LogonType value {common.show(value)} is not a number")
    return common.logon_type_of(number)


def _status_ok(value: Any) -> bool | None:
    value = _unwrap(value)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value == 0
    text = str(value).strip().lower()
    if text in ("", "-"):
        return None
    try:
        return int(text, 16 if text.startswith("0x") else 10) == 0
    except ValueError:
        raise common.RecordError(
            f"bad value: field Status value {common.show(value)} is not a status code"
        ) from None


def _basename(path: str | None) -> str | None:
    if path is None:
        return None
    return path.replace("\\", "/").rsplit("/", 1)[-1] or None


__all__ = ["ADAPTER", "EVENT_IDS", "iter_windows", "looks_like_windows", "read_windows", "windows_record"]
