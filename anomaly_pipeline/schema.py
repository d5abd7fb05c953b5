"""The canonical event contract: one table every source adapter produces.

Columns follow ARCHITECTURE.md ("The event contract") and OCSF names where natural. Every
adapter returns a pandas DataFrame with exactly ``EVENT_COLUMNS`` in this order and these dtypes
(``empty_events()`` / ``conform()`` make that true), so validation, graph construction and
scoring never special-case a source.

Ingestion adds two envelope columns to the raw table, ``parse_error`` and ``raw_excerpt``:
a record that could not be parsed is kept as a row (with its ``raw_ref``) instead of being
dropped, so the counts always reconcile (read = valid + quarantined).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

EVENT_TYPES: tuple[str, ...] = ("auth", "process_start", "network_flow", "dns", "file_access")
AUTH_TYPES: tuple[str, ...] = ("kerberos", "ntlm", "negotiate", "other")
LOGON_TYPES: tuple[str, ...] = ("interactive", "network", "remote_interactive", "service", "batch", "unlock", "other")
PROTOCOLS: tuple[str, ...] = ("tcp", "udp", "icmp", "other")


@dataclass(frozen=True)
class Column:
    """One column of the contract: name, pandas dtype and what it means (with units)."""

    name: str
    dtype: str
    required: bool
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("event_id", "string", True, "stable id: source + position, so reprocessing dedups"),
    Column("ts", "datetime64[ns, UTC]", True, "event time, UTC"),
    Column("event_type", "string", True, f"one of {', '.join(EVENT_TYPES)}"),
    Column("user", "string", False, "acting user or account"),
    Column("src_host", "string", False, "source computer or IP"),
    Column("dst_host", "string", False, "destination computer, IP or external endpoint"),
    Column("process", "string", False, "process or executable name"),
    Column("dst_port", "Int32", False, "destination port, 0-65535"),
    Column("protocol", "string", False, f"one of {', '.join(PROTOCOLS)}"),
    Column("auth_type", "string", False, f"one of {', '.join(AUTH_TYPES)}"),
    Column("logon_type", "string", False, f"one of {', '.join(LOGON_TYPES)}"),
    Column("success", "boolean", False, "authentication outcome, or whether a flow's connection was established"),
    Column("bytes_out", "Float64", False, "bytes sent by the source, >= 0"),
    Column("bytes_in", "Float64", False, "bytes received by the source, >= 0"),
    Column("packets", "Float64", False, "packets in the flow, >= 0"),
    Column("duration_s", "Float64", False, "flow duration in seconds, >= 0"),
    Column("label", "Int8", False, "1 attack, 0 benign, null unknown"),
    Column("label_detail", "string", False, "campaign / attack name / stage"),
    Column("source", "string", True, "adapter name"),
    Column("raw_ref", "string", True, "file:line (1-based) or generator position of the raw record"),
)

EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS)
EVENT_DTYPES: dict[str, str] = {c.name: c.dtype for c in COLUMNS}
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
NUMERIC_COLUMNS: tuple[str, ...] = ("bytes_out", "bytes_in", "packets", "duration_s")
CATEGORICAL_DOMAINS: dict[str, tuple[str, ...]] = {
    "event_type": EVENT_TYPES,
    "auth_type": AUTH_TYPES,
    "logon_type": LOGON_TYPES,
    "protocol": PROTOCOLS,
}

# Envelope columns carried by raw_events only (see module docstring).
ENVELOPE_COLUMNS: tuple[str, ...] = ("parse_error", "raw_excerpt")
QUARANTINE_COLUMNS: tuple[str, ...] = ("raw_ref", "source", "stage", "reason", "raw_excerpt", "event_id")


class SchemaError(ValueError):
    """A table does not follow the event contract; the message names the column and the fix."""


def empty_events() -> pd.DataFrame:
    """An empty canonical event table with the contract's dtypes."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in COLUMNS})


def conform(frame: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Return ``frame`` with exactly the contract's columns, order and dtypes.

    Missing optional columns are added as nulls; a missing required column or a value that
    cannot be cast raises ``SchemaError`` naming the column. Extra columns are dropped, except
    the ingestion envelope columns, which are kept at the end.
    """
    out = {}
    n = len(frame)
    for col in COLUMNS:
        if col.name not in frame.columns:
            if col.required and not (col.name == "source" and source is not None):
                raise SchemaError(
                    f"column '{col.name}' is required by the event contract but missing; "
                    f"present columns: {sorted(frame.columns)}"
                )
            values = pd.Series([source] * n if col.name == "source" else [pd.NA] * n, index=frame.index)
        else:
            values = frame[col.name]
        if str(values.dtype) == col.dtype:
            out[col.name] = values  # already the contract's type (to_datetime would still walk the values)
            continue
        try:
            if col.dtype.startswith("datetime64"):
                values = pd.to_datetime(values, utc=True)
                values = values.astype(col.dtype)
            else:
                values = values.astype(col.dtype)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"column '{col.name}' cannot be read as {col.dtype}: {exc}") from exc
        out[col.name] = values
    result = pd.DataFrame(out, index=frame.index)
    for env in ENVELOPE_COLUMNS:
        if env in frame.columns:
            result[env] = frame[env].astype("string")
    return result.reset_index(drop=True)


def empty_quarantine() -> pd.DataFrame:
    """An empty quarantine table: which record, from where, why it was rejected."""
    return pd.DataFrame({c: pd.Series(dtype="string") for c in QUARANTINE_COLUMNS})


def describe_contract() -> str:
    """The contract as a Markdown table (shown in the Dagster UI and the README)."""
    lines = ["| column | dtype | required | meaning |", "|---|---|---|---|"]
    for c in COLUMNS:
        lines.append(f"| {c.name} | {c.dtype} | {'yes' if c.required else ''} | {c.description} |")
    return "\n".join(lines)


def label_array(events: pd.DataFrame) -> np.ndarray:
    """Labels as a float array with NaN for unknown (1 attack, 0 benign)."""
    return events["label"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
