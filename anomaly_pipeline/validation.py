"""Validate raw events with Great Expectations 1.x and quarantine what fails.

Great Expectations (GX) is called directly (dagster-ge does not support GX 1.x): an ephemeral
context, a pandas data source, a dataframe asset with a whole-dataframe batch definition, and an
``ExpectationSuite`` built in code from the event contract (``schema``). The batch is validated
with ``result_format="COMPLETE"``, which lists the index of every failing row, so each failing
row goes to the quarantine table with its ``raw_ref`` and a reason naming the expectation, the
column and the value (``dst_port=70000 outside [0, 65535]``).

Rows that ingestion could not parse (``parse_error`` set) are quarantined before GX, with stage
``"parse"``. A parsed row whose ``event_id`` an earlier parsed row of the table already has is
dropped knowingly: quarantined with stage ``"duplicate"`` and the first row's ``raw_ref`` in the
reason (the first occurrence is kept and validated), and counted in ``rows_duplicate``. The
counts always reconcile: rows read = rows valid + rows quarantined (duplicates included).

Expectations, in contract terms:

* schema: the columns are exactly ``schema.EVENT_COLUMNS`` (plus the order helper below);
* types: every column has the contract dtype (checked by GX at numpy/pandas type level);
* required columns (``schema.REQUIRED_COLUMNS``) are not null;
* ``ts`` lies in ``[ts_min, ts_max]``;
* order, robust to single records: rows are compared within their file (the part of
  ``raw_ref`` before its last ``:``), in table order, and no single row can make its
  neighbours look out of order. With ``W = order_window`` and ``T = order_tolerance_s``:

  - a row's *confirmed* time is the smaller of its ``ts`` and the (lower) median ``ts`` of the
    ``W`` rows after it; a time later rows do not confirm cannot raise it;
  - behind: a row fails when its ``ts`` lies more than ``T`` seconds behind the latest
    confirmed time of the earlier rows (helper column ``ts_behind_s``);
  - ahead: a row fails when its ``ts`` lies more than ``T`` seconds ahead of both the (upper)
    median of the ``W`` rows after it and that of the ``W`` rows before it (helper column
    ``ts_ahead_s``): a lone future-dated line is rejected by itself and moves nothing. It takes
    two witnesses: a file's first row with a single row after it is not blamed (one row's word
    against another's).

  The old rule (behind the running maximum of every earlier ``ts``) let one plausible but
  future-dated line raise the maximum, so every later line was quarantined and the bad line
  itself passed. Now moving the reference takes more than half of the (up to ``W``) rows after
  a row: a run of more than ``W / 2`` consecutive rows in the body of a file, which is what a
  real jump in time looks like (near a file's end, where fewer rows follow, a majority of those;
  never a single row, nor two). A row with
  no later row in its file (the last one) cannot be found ahead; a file's first row has no
  earlier rows, so only the rows after it can refute it. Rows whose ``ts`` is null or out of
  range take no part (the range check already rejects them);
* categorical domains (``schema.CATEGORICAL_DOMAINS``; nulls allowed);
* numeric ranges: byte, packet and duration columns in ``[0, 1e13]``, ``dst_port`` in
  ``[0, 65535]``; ``label`` in ``{0, 1}``.

A failed table-level expectation (columns or a column dtype) cannot be pinned to rows, so every
parsed row is quarantined with that reason.

Engines. The suite above is the contract and GX validates every batch with it; the question is
only who finds the failing rows. ``engine="gx"`` lets GX evaluate every row
(``result_format="COMPLETE"``, ~6 us a row, most of it GX hashing the frame and computing its
metrics). ``engine="vectorised"`` (the default) evaluates each row-level expectation over whole
columns with numpy (the same comparisons GX makes: nulls excluded from ranges and sets, NaN in a
Float64 column a value that fails its range) and builds reasons for the failing rows only; GX
then validates the batch's *representative rows* with the same suite: every column's first
null, the smallest and largest value of each numeric and time column, the first row of every
distinct categorical value, and the first failing row of every expectation. The columns and
dtypes are the batch's own, so GX's table-level verdicts and observed values are the batch's,
and a batch fails an expectation exactly when one of these rows does. The expectations table
takes ``success`` and ``details`` from GX and ``unexpected_count`` / ``unexpected_percent``
(GX's formula) from the vectorised checks. Where GX's verdict on the representatives and the
vectorised verdict differ, where GX raises, or where the columns or dtypes are off the contract
(every row is quarantined then anyway), the batch is validated by GX on every row instead; the
result's ``engine`` says which engine produced it. ``tests/test_validation_engines.py`` and the
fuzz suite compare both engines on crafted bad tables and files: same valid rows, same
quarantine (rows, stages, reasons, excerpts), same counts and expectations table.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from anomaly_pipeline import schema

logger = logging.getLogger(__name__)

ORDER_HELPER_COLUMN = "ts_behind_s"  # seconds behind the confirmed time of earlier rows
AHEAD_HELPER_COLUMN = "ts_ahead_s"  # seconds ahead of the rows before and after it
HELPER_COLUMNS: tuple[str, ...] = (ORDER_HELPER_COLUMN, AHEAD_HELPER_COLUMN)
DEFAULT_ORDER_WINDOW = 31
DEFAULT_TS_MIN = pd.Timestamp("2000-01-01", tz="UTC")
DEFAULT_TS_MAX_AHEAD = pd.Timedelta(days=1)  # ts_max default: now + this
NUMERIC_MAX = 1e13  # bytes / packets / seconds; larger is a unit or parsing error, not traffic
PORT_RANGE = (0, 65535)
LABEL_VALUES = (0, 1)
EXCERPT_CHARS = 200
STAGE_PARSE = "parse"
STAGE_DUPLICATE = "duplicate"
STAGE_VALIDATION = "validation"
ENGINE_VECTORISED = "vectorised"
ENGINE_GX = "gx"
ENGINES: tuple[str, ...] = (ENGINE_VECTORISED, ENGINE_GX)
_TS_DTYPE = pd.DatetimeTZDtype("ns", "UTC")
_NAT = np.iinfo(np.int64).min

# Contract dtype -> the ``type_`` GX's pandas type check compares with ``dtype.type``:
# Int32Dtype().type is numpy.int32, StringDtype().type is str, a tz-aware datetime64 column's
# type is pandas.Timestamp (a naive one's is numpy.datetime64, so naive ts fails), and so on.
_GX_TYPES: dict[str, str] = {
    "string": "str",
    "datetime64[ns, UTC]": "Timestamp",
    "Int32": "int32",
    "Int8": "int8",
    "Float64": "float64",
    "boolean": "bool_",
}
_NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    **{name: (0.0, NUMERIC_MAX) for name in schema.NUMERIC_COLUMNS},
    "dst_port": (float(PORT_RANGE[0]), float(PORT_RANGE[1])),
}
_RESULT_FORMAT: dict[str, Any] = {
    # COMPLETE lists every failing row's index (the default RangeIndex, so positions). GX's
    # alternative, unexpected_index_column_names, builds one dict per failing row with
    # DataFrame.at, which is slow when many rows fail, and adds nothing we need here.
    "result_format": "COMPLETE",
    # GX would otherwise render a pandas filter expression listing every failing index.
    "return_unexpected_index_query": False,
}
EXPECTATION_COLUMNS: tuple[str, ...] = (
    "expectation",
    "column",
    "success",
    "unexpected_count",
    "unexpected_percent",
    "details",
)


@dataclass
class ValidationPolicy:
    """What counts as valid beyond the contract's types.

    Attributes:
        ts_min: earliest accepted event time (UTC; naive means UTC); None means 2000-01-01.
        ts_max: latest accepted event time; None means now + 1 day at validation time.
        order_tolerance_s: how far, in seconds, a row's ts may lie behind the confirmed time of
            the earlier rows of its file, or ahead of the rows around it (module docstring).
        order_window: how many following rows confirm a row's time (their median); a run of
            more than half this many rows can move the order reference, fewer cannot.
    """

    ts_min: pd.Timestamp | None = None
    ts_max: pd.Timestamp | None = None
    order_tolerance_s: float = 3600.0
    order_window: int = DEFAULT_ORDER_WINDOW

    def resolve(self, now: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The ``(ts_min, ts_max)`` bounds in UTC, defaults filled in."""
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        ts_min = _utc(self.ts_min) if self.ts_min is not None else DEFAULT_TS_MIN
        ts_max = _utc(self.ts_max) if self.ts_max is not None else now + DEFAULT_TS_MAX_AHEAD
        if ts_min > ts_max:
            raise ValueError(f"ValidationPolicy: ts_min {ts_min} is after ts_max {ts_max}")
        if not self.order_tolerance_s >= 0:
            raise ValueError(
                f"ValidationPolicy: order_tolerance_s must be >= 0, got {self.order_tolerance_s}"
            )
        if self.order_window < 1:
            raise ValueError(f"ValidationPolicy: order_window must be >= 1, got {self.order_window}")
        return ts_min, ts_max


@dataclass
class ValidationResult:
    """Valid rows, quarantined rows and what GX found.

    Attributes:
        valid: rows that passed, ``schema.EVENT_COLUMNS`` only (envelope dropped), index reset.
        quarantined: ``schema.QUARANTINE_COLUMNS``, one row per rejected input row, input order.
        rows_read / rows_valid / rows_quarantined: counts; read = valid + quarantined.
        rows_duplicate: quarantined rows that repeat an earlier row's event_id (stage
            ``"duplicate"``), part of ``rows_quarantined``.
        expectations: one row per expectation: expectation, column, success, unexpected_count,
            unexpected_percent (GX's: 0-100, of the non-null values checked; 0 when none),
            details (the observed value of a table-level check, or the error GX raised).
        gx_success: GX's overall outcome on the parsed rows (True for an empty table).
        policy: the bounds used (ISO strings) and the order tolerance in seconds.
        reason_counts: how many quarantined rows hit each reason category, most frequent
            first: ``"parse: <kind>"`` (the text of a parse error before its ``:``),
            ``"duplicate: event_id"`` and ``"validation: <expectation>(<column>)"``. A row that failed several checks counts
            once in each, so the counts may add up to more than ``rows_quarantined``.
        engine: ``"vectorised"`` or ``"gx"``: which engine produced this result (``validate_events``).
    """

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    rows_read: int
    rows_valid: int
    rows_quarantined: int
    expectations: pd.DataFrame
    gx_success: bool
    policy: dict[str, Any] = field(default_factory=dict)
    reason_counts: dict[str, int] = field(default_factory=dict)
    rows_duplicate: int = 0
    engine: str = ENGINE_GX

    @property
    def quarantine_rate(self) -> float:
        """Quarantined / read, 0.0 for an empty input."""
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary: counts, quarantine rate, expectations, reasons."""
        expectations = [
            {
                "expectation": str(row.expectation),
                "column": None if pd.isna(row.column) else str(row.column),
                "success": bool(row.success),
                "unexpected_count": int(row.unexpected_count),
                "unexpected_percent": _json_float(row.unexpected_percent),
                "details": None if pd.isna(row.details) else str(row.details),
            }
            for row in self.expectations.itertuples(index=False)
        ]
        return {
            "rows_read": int(self.rows_read),
            "rows_valid": int(self.rows_valid),
            "rows_quarantined": int(self.rows_quarantined),
            "rows_duplicate": int(self.rows_duplicate),
            "quarantine_rate": float(self.quarantine_rate),
            "gx_success": bool(self.gx_success),
            "engine": self.engine,
            "policy": dict(self.policy),
            "expectations": expectations,
            "quarantine_reasons": {str(k): int(v) for k, v in self.reason_counts.items()},
        }


def validate_events(
    raw: pd.DataFrame, policy: ValidationPolicy | None = None, *, engine: str = ENGINE_VECTORISED
) -> ValidationResult:
    """Validate a raw event table with GX; split it into valid rows and quarantine.

    Args:
        raw: events with ``schema.EVENT_COLUMNS`` (as ``schema.conform`` makes them), with or
            without the envelope columns ``parse_error`` / ``raw_excerpt``. Row order matters
            for the order-tolerance check (file order).
        policy: time bounds and order tolerance; defaults as in ``ValidationPolicy``.
        engine: ``"vectorised"`` (default): row-level checks over whole columns, GX validates
            the batch's representative rows (module docstring, "Engines"); ``"gx"``: GX
            evaluates every row (``result_format="COMPLETE"``). Both give the same valid rows,
            quarantine, reasons and expectations table; ``ValidationResult.engine`` says which
            one produced the result (the vectorised engine hands a batch it cannot take to GX).

    Returns:
        A ``ValidationResult``; every input row is in exactly one of ``valid`` and
        ``quarantined``.

    Raises:
        RuntimeError: GX raised an error on a table whose columns and dtypes follow the
            contract (a bug here or in GX, not a data problem).
        ValueError: an unknown engine.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    policy = policy if policy is not None else ValidationPolicy()
    ts_min, ts_max = policy.resolve()
    if not (isinstance(raw.index, pd.RangeIndex) and raw.index.start == 0 and raw.index.step == 1):
        raw = raw.reset_index(drop=True)
    n_read = len(raw)

    parse_error = _column_or_null(raw, "parse_error")
    parse_failed = parse_error.notna().to_numpy()
    early = _early_reasons(raw, parse_error, parse_failed)  # raw row -> (stage, reason)
    kept = np.ones(n_read, dtype=bool)
    kept[list(early)] = False
    columns = [c for c in raw.columns if c not in schema.ENVELOPE_COLUMNS]
    if kept.all():
        # No copy: the frame shares the input's column arrays (it is only read, never written).
        frame = pd.DataFrame({c: raw[c] for c in columns}, copy=False)
    else:
        frame = raw.loc[kept, columns].reset_index(drop=True)  # GX reports failing rows by position
    positions = np.flatnonzero(kept)  # row of ``raw`` for each row of ``frame``
    behind, ahead = _order_offsets(frame, ts_min, ts_max, policy.order_window)
    frame[ORDER_HELPER_COLUMN] = behind
    frame[AHEAD_HELPER_COLUMN] = ahead

    suite_key = (tuple(frame.columns), ts_min.value, ts_max.value, float(policy.order_tolerance_s),
                 int(policy.order_window))
    checks = _checks_for(frame, suite_key, ts_min, ts_max, policy.order_tolerance_s, policy.order_window)
    outcome = _vectorised(frame, checks, suite_key) if engine == ENGINE_VECTORISED else None
    if outcome is not None:
        row_reasons, expectations, gx_success = outcome
        table_reasons: list[tuple[str, str]] = []
        used = ENGINE_VECTORISED
    else:
        gx_result = _run_gx(frame, checks, suite_key)
        row_reasons, table_reasons, expectations = _interpret(frame, checks, gx_result)
        gx_success = bool(gx_result.success)
        used = ENGINE_GX

    n_frame = len(frame)
    failed = np.zeros(n_frame, dtype=bool)
    reasons: dict[int, str] = {}
    categories: Counter[str] = Counter()
    if table_reasons:
        # Nothing can be pinned to rows: every parsed row carries the table-level reasons.
        failed[:] = True
        table_text = "; ".join(text for _, text in table_reasons)
        reasons = dict.fromkeys(range(n_frame), table_text)
        for category in {c for c, _ in table_reasons}:
            categories[category] = n_frame
        valid = schema.empty_events()
    else:
        for pos, found in row_reasons.items():
            failed[pos] = True
            reasons[pos] = "; ".join(text for _, text in found)
            categories.update({c for c, _ in found})
        valid = _valid_rows(frame, failed)
    for message in parse_error[parse_failed]:
        categories.update(
            {f"{STAGE_PARSE}: {part.split(':', 1)[0].strip()}" for part in str(message).split("; ")}
        )
    n_duplicate = sum(1 for stage, _ in early.values() if stage == STAGE_DUPLICATE)
    if n_duplicate:
        categories[f"{STAGE_DUPLICATE}: event_id"] = n_duplicate

    quarantined = _quarantine_table(raw, early, positions, failed, reasons)
    result = ValidationResult(
        valid=valid,
        quarantined=quarantined,
        rows_read=n_read,
        rows_valid=len(valid),
        rows_quarantined=len(quarantined),
        expectations=expectations,
        gx_success=gx_success,
        policy={
            "ts_min": ts_min.isoformat(),
            "ts_max": ts_max.isoformat(),
            "order_tolerance_s": float(policy.order_tolerance_s),
            "order_window": int(policy.order_window),
        },
        reason_counts=dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
        rows_duplicate=n_duplicate,
        engine=used,
    )
    if result.rows_read != result.rows_valid + result.rows_quarantined:
        # Not an ``assert``: the reconciliation must hold under ``python -O`` too.
        raise AssertionError(
            f"validation lost rows: read {result.rows_read} != valid {result.rows_valid} "
            f"+ quarantined {result.rows_quarantined}"
        )
    logger.info(
        "validated %d rows: %d valid, %d quarantined (%.2f%%; %d duplicate event ids), GX success=%s",
        result.rows_read,
        result.rows_valid,
        result.rows_quarantined,
        100 * result.quarantine_rate,
        result.rows_duplicate,
        result.gx_success,
    )
    return result


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------


class _Values:
    """The validated frame's columns as object arrays, converted once, on first use.

    Describing a failing row reads one value per failed check; indexing a DataFrame per row
    would cost microseconds each, which adds up to many seconds when a whole file fails.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._frame[name].to_numpy(dtype=object, na_value=None)
        return self._cache[name]


@dataclass(frozen=True)
class _Check:
    """One expectation and how to say, for a failing row, what was wrong."""

    expectation: gxe.Expectation
    column: str | None
    describe: Callable[[_Values, int], str]  # (column values, row position) -> what is wrong

    @property
    def name(self) -> str:
        return str(self.expectation.expectation_type)

    @property
    def key(self) -> tuple[str, str | None]:
        return self.name, self.column


def _build_checks(
    frame: pd.DataFrame, ts_min: pd.Timestamp, ts_max: pd.Timestamp, tolerance_s: float, window: int
) -> list[_Check]:
    """The expectation suite for ``frame``, built from the contract.

    Column expectations are added only for columns that exist: a missing column is reported
    once by the columns-match-set expectation instead of once per expectation as a GX error.
    """
    present = set(frame.columns)
    checks = [
        _Check(
            gxe.ExpectTableColumnsToMatchSet(
                column_set=[*schema.EVENT_COLUMNS, *HELPER_COLUMNS], exact_match=True
            ),
            None,
            _no_row,
        )
    ]
    for col in schema.COLUMNS:
        if col.name in present:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeOfType(column=col.name, type_=_GX_TYPES[col.dtype]),
                    col.name,
                    _describe_type(col.name, col.dtype),
                )
            )
    for name in schema.REQUIRED_COLUMNS:
        if name in present:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToNotBeNull(column=name),
                    name,
                    lambda v, i, n=name: f"{n} is null (required)",
                )
            )
    if "ts" in present:
        checks.append(
            _Check(
                gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=ts_min, max_value=ts_max),
                "ts",
                lambda v, i: f"ts={_show(v['ts'][i])} outside [{ts_min.isoformat()}, {ts_max.isoformat()}]",
            )
        )
        checks.append(
            _Check(
                gxe.ExpectColumnValuesToBeBetween(column=ORDER_HELPER_COLUMN, max_value=tolerance_s),
                ORDER_HELPER_COLUMN,
                lambda v, i: (
                    f"ts={_show(v['ts'][i])} is {v[ORDER_HELPER_COLUMN][i]:.0f} s behind the time "
                    f"confirmed by the earlier rows of its file (tolerance {tolerance_s:g} s)"
                ),
            )
        )
        checks.append(
            _Check(
                gxe.ExpectColumnValuesToBeBetween(column=AHEAD_HELPER_COLUMN, max_value=tolerance_s),
                AHEAD_HELPER_COLUMN,
                lambda v, i: (
                    f"ts={_show(v['ts'][i])} is {v[AHEAD_HELPER_COLUMN][i]:.0f} s ahead of the rows of its "
                    f"file before it and of the median of the {window} after it (tolerance {tolerance_s:g} s): "
                    "a time the later rows do not confirm"
                ),
            )
        )
    for name, domain in schema.CATEGORICAL_DOMAINS.items():
        if name in present:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(domain)),
                    name,
                    lambda v, i, n=name, d=domain: f"{n}={_show(v[n][i])} not one of {', '.join(d)}",
                )
            )
    for name, (lo, hi) in _NUMERIC_RANGES.items():
        if name in present:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi),
                    name,
                    lambda v, i, n=name, lo=lo, hi=hi: f"{n}={_show(v[n][i])} outside [{lo:g}, {hi:g}]",
                )
            )
    if "label" in present:
        checks.append(
            _Check(
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(LABEL_VALUES)),
                "label",
                lambda v, i: f"label={_show(v['label'][i])} not one of {', '.join(map(str, LABEL_VALUES))}",
            )
        )
    return checks


def _checks_for(
    frame: pd.DataFrame,
    key: tuple[Any, ...],
    ts_min: pd.Timestamp,
    ts_max: pd.Timestamp,
    tolerance_s: float,
    window: int,
) -> list[_Check]:
    """``_build_checks``, cached by ``key`` (the frame's columns and the policy's values).

    Building ~40 GX expectations costs tens of milliseconds; a stream of chunks validated with
    one policy builds them once.
    """
    with _GX_LOCK:
        checks = _CHECKS.get(key)
        if checks is None:
            checks = _build_checks(frame, ts_min, ts_max, tolerance_s, window)
            if len(_CHECKS) >= _CACHE_SIZE:
                _CHECKS.pop(next(iter(_CHECKS)))
                _SUITES.pop(next(iter(_SUITES)), None)
            _CHECKS[key] = checks
        return checks


_GX_LOCK = threading.RLock()
_CACHE_SIZE = 8
_CHECKS: dict[tuple[Any, ...], list[_Check]] = {}
_SUITES: dict[tuple[Any, ...], gx.ExpectationSuite] = {}
_GX_BATCHES: list[Any] = []  # the batch definition, made once per process


def _run_gx(
    frame: pd.DataFrame, checks: list[_Check], key: tuple[Any, ...], result_format: dict[str, Any] | None = None
) -> Any:
    """Validate ``frame`` against the checks' expectations; GX's ExpectationSuiteValidationResult.

    One ephemeral context, pandas data source, dataframe asset and whole-dataframe batch
    definition serve every call (creating them costs ~0.1 s), and the suite of each ``key`` is
    built once; every call still gets its own batch and its own validation.
    """
    with _GX_LOCK:
        if not _GX_BATCHES:
            context = gx.get_context(
                mode="ephemeral",
                project_config=DataContextConfig(
                    analytics_enabled=False,
                    # GX draws a tqdm bar per validation on stderr; noise in logs and test output.
                    progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
                    store_backend_defaults=InMemoryStoreBackendDefaults(),
                ),
            )
            data_source = context.data_sources.add_pandas(name="anomaly_pipeline")
            asset = data_source.add_dataframe_asset(name="raw_events")
            _GX_BATCHES.append(asset.add_batch_definition_whole_dataframe(name="whole_frame"))
        suite = _SUITES.get(key)
        if suite is None:
            suite = gx.ExpectationSuite(name="event_contract")
            for check in checks:
                suite.add_expectation(check.expectation)
            _SUITES[key] = suite
        batch = _GX_BATCHES[0].get_batch(batch_parameters={"dataframe": frame})
        with _configurations_memoised():
            return batch.validate(suite, result_format=result_format or _RESULT_FORMAT)


# GX 1.x rebuilds an expectation's ``configuration`` (a pydantic ``.dict()``, a regex on the class
# name and a new ExpectationConfiguration) on every read, and reads it once per keyword while
# it builds the metric graph: ~70 times per expectation and validation, about half of GX's
# fixed ~0.12 s per batch. While ``_run_gx`` validates (under ``_GX_LOCK``), each expectation
# object's configuration is built once: the objects live only inside that one validation and
# GX does not change them there (nor the configurations it reads). Outside it, and in any
# other thread or context, the property is GX's own.
_GX_CONFIGURATION = gxe.Expectation.configuration
_CONFIGURATION_MEMO: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar(
    "anomaly_pipeline_gx_configurations", default=None
)


def _memoised_configuration(expectation: Any) -> Any:
    memo = _CONFIGURATION_MEMO.get()
    if memo is None:
        return _GX_CONFIGURATION.fget(expectation)
    found = memo.get(id(expectation))
    if found is None or found[0] is not expectation:
        # The memo holds the object too, so its id cannot be reused by another one meanwhile.
        found = memo[id(expectation)] = (expectation, _GX_CONFIGURATION.fget(expectation))
    return found[1]


@contextlib.contextmanager
def _configurations_memoised() -> Iterator[None]:
    token = _CONFIGURATION_MEMO.set({})
    try:
        yield
    finally:
        _CONFIGURATION_MEMO.reset(token)


gxe.Expectation.configuration = property(_memoised_configuration, doc=_GX_CONFIGURATION.__doc__)


# --------------------------------------------------------------------------------------------
# The vectorised engine
# --------------------------------------------------------------------------------------------

_CONTRACT_DTYPES: dict[str, Any] = {
    **{name: pd.api.types.pandas_dtype(dtype) for name, dtype in schema.EVENT_DTYPES.items()},
    **{name: np.dtype(np.float64) for name in HELPER_COLUMNS},
}
_BETWEEN = "expect_column_values_to_be_between"
_IN_SET = "expect_column_values_to_be_in_set"
_NOT_NULL = "expect_column_values_to_not_be_null"
_TABLE_LEVEL = ("expect_table_columns_to_match_set", "expect_column_values_to_be_of_type")


class _Columns:
    """Per-column facts for the vectorised checks, computed once per column on first use."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.n = len(frame)
        self._nulls: dict[str, np.ndarray] = {}
        self._distinct: dict[str, tuple[np.ndarray, np.ndarray, list[Any]]] = {}

    def distinct(self, name: str) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """A string column's (codes, first position of each code, value of each code).

        Codes number the distinct *objects* (pointers): adapters repeat one Python object per
        distinct value, so this costs a few ns per row where hashing every string costs ~60.
        Equal values held by different objects get different codes, which only means their
        value is looked at more than once.
        """
        if name not in self._distinct:
            values = self.frame[name].array._ndarray  # StringArray: str or pd.NA objects
            codes, _ = pd.factorize(_pointers(values))
            running = np.maximum.accumulate(codes) if len(codes) else codes
            firsts = np.flatnonzero(np.diff(running, prepend=-1) > 0)  # first row of each code
            self._distinct[name] = (codes, firsts, list(values[firsts]))
        return self._distinct[name]

    def nulls(self, name: str) -> np.ndarray:
        if name not in self._nulls:
            dtype = self.frame[name].dtype
            array = self.frame[name].array
            if isinstance(dtype, pd.StringDtype):
                # A StringArray holds str or the pd.NA singleton (its constructor and setitem
                # make every missing value pd.NA), so a null is a pointer to pd.NA.
                self._nulls[name] = _pointers(array._ndarray) == id(pd.NA)
            elif isinstance(dtype, pd.DatetimeTZDtype):
                self._nulls[name] = array.asi8 == _NAT
            elif isinstance(array, pd.arrays.BooleanArray | pd.arrays.IntegerArray | pd.arrays.FloatingArray):
                self._nulls[name] = np.asarray(array._mask)
            else:
                self._nulls[name] = np.isnan(np.asarray(array, dtype=np.float64))
        return self._nulls[name]

    def numbers(self, name: str) -> np.ndarray:
        array = self.frame[name].array
        if isinstance(array, pd.arrays.IntegerArray | pd.arrays.FloatingArray):
            return np.asarray(array._data)
        return np.asarray(array, dtype=np.float64)


def _pointers(values: np.ndarray) -> np.ndarray:
    """The addresses of the objects in an object array, as int64 (read, nothing changed)."""
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    values = np.ascontiguousarray(values)
    buffer = (ctypes.c_int64 * n).from_address(values.ctypes.data)
    return np.frombuffer(buffer, dtype=np.int64).copy()


def _follows_contract(frame: pd.DataFrame) -> bool:
    """The columns are exactly the contract's plus the helpers, each with its exact dtype."""
    if set(frame.columns) != set(_CONTRACT_DTYPES) or len(frame.columns) != len(_CONTRACT_DTYPES):
        return False
    for name, dtype in frame.dtypes.items():
        expected = _CONTRACT_DTYPES[name]
        if dtype != expected or type(dtype) is not type(expected):
            return False
        if isinstance(dtype, pd.StringDtype) and (
            dtype.storage != "python" or not isinstance(frame[name].array, pd.arrays.StringArray)
        ):
            return False
    return True


def _unexpected(check: _Check, columns: _Columns) -> np.ndarray | None:
    """The rows that fail a row-level expectation, as GX decides it; None for table-level ones.

    Raises KeyError for an expectation this engine does not evaluate.
    """
    name, col = check.name, check.column
    if name in _TABLE_LEVEL:
        return None
    expectation = check.expectation
    if name == _NOT_NULL:
        return columns.nulls(col)
    if name == _IN_SET:
        value_set = set(expectation.value_set)
        if isinstance(columns.frame[col].dtype, pd.StringDtype):
            codes, _, values = columns.distinct(col)
            bad = np.array([v is not pd.NA and v not in value_set for v in values] + [False], dtype=bool)
            return bad[codes]
        data = columns.numbers(col)
        return ~columns.nulls(col) & ~np.isin(data, list(value_set))
    if name == _BETWEEN:
        lo, hi = expectation.min_value, expectation.max_value
        null = columns.nulls(col)
        if isinstance(columns.frame[col].dtype, pd.DatetimeTZDtype):
            data = columns.frame[col].array.asi8
            lo = None if lo is None else pd.Timestamp(lo).value
            hi = None if hi is None else pd.Timestamp(hi).value
        else:
            data = columns.numbers(col)
        inside = np.ones(columns.n, dtype=bool)
        with np.errstate(invalid="ignore"):
            if lo is not None:
                inside &= data >= lo
            if hi is not None:
                inside &= data <= hi
        return ~null & ~inside
    raise KeyError(name)


def _representatives(columns: _Columns, masks: dict[tuple[str, str | None], np.ndarray | None]) -> np.ndarray:
    """The rows GX validates for a batch: for every column its first null, the smallest and the
    largest value of the numeric and time columns, the first row of each distinct value of the
    categorical columns, and the first failing row of every row-level expectation. A batch
    fails an expectation exactly when one of these rows does."""
    frame, n = columns.frame, columns.n
    picks: set[int] = {0} if n else set()
    for name in frame.columns:
        null = columns.nulls(name)
        first_null = int(np.argmax(null)) if n else 0
        if n and null[first_null]:
            picks.add(first_null)
        dtype = frame[name].dtype
        if name in schema.CATEGORICAL_DOMAINS:
            picks.update(columns.distinct(name)[1][:_MAX_DISTINCT].tolist())
        elif isinstance(dtype, pd.DatetimeTZDtype) or name in _NUMERIC_RANGES or name in HELPER_COLUMNS or name == "label":
            present = np.flatnonzero(~null)
            if len(present):
                data = frame[name].array.asi8 if isinstance(dtype, pd.DatetimeTZDtype) else columns.numbers(name)
                values = data[present]
                picks.update((int(present[np.argmin(values)]), int(present[np.argmax(values)])))
                if name == "label":
                    _, first = np.unique(values, return_index=True)
                    picks.update(present[first[:_MAX_DISTINCT]].tolist())
    for mask in masks.values():
        if mask is not None and n:
            first = int(np.argmax(mask))
            if mask[first]:
                picks.add(first)
    return np.array(sorted(picks), dtype=np.int64)


_MAX_DISTINCT = 1000


def _vectorised(
    frame: pd.DataFrame, checks: list[_Check], key: tuple[Any, ...]
) -> tuple[dict[int, list[tuple[str, str]]], pd.DataFrame, bool] | None:
    """Row reasons, expectations table and GX's outcome, with the row-level checks vectorised.

    Returns None when this engine cannot decide the batch the way GX would (columns or dtypes
    off the contract, an expectation it does not evaluate, GX disagreeing with a vectorised
    verdict on the representative rows, GX raising): the caller then runs GX on every row.
    """
    if not _follows_contract(frame):
        return None
    columns = _Columns(frame)
    try:
        masks = {check.key: _unexpected(check, columns) for check in checks}
    except KeyError as exc:
        logger.warning("vectorised validation does not evaluate %s; GX validates every row", exc)
        return None
    sample = frame.take(_representatives(columns, masks)).reset_index(drop=True)
    # BASIC: success and the observed values of the table-level checks, no row lists (the
    # counts come from the vectorised checks); ~30% less GX time than COMPLETE.
    gx_result = _run_gx(sample, checks, key, {"result_format": "BASIC"})
    by_key = {check.key: check for check in checks}
    order = {check.key: i for i, check in enumerate(checks)}
    records = []
    n = len(frame)
    for result in sorted(gx_result.results, key=lambda r: order[_result_key(r)]):
        check = by_key[_result_key(result)]
        body = result.result or {}
        error = _exception_message(result.exception_info)
        mask = masks[check.key]
        if mask is None:  # table-level: GX's own figures (the sample has the frame's columns and dtypes)
            count = int(body.get("unexpected_count") or 0)
            percent = float(body.get("unexpected_percent") or 0.0)
            consistent = bool(result.success) and error is None
        else:
            count = int(np.count_nonzero(mask))
            if check.name == _NOT_NULL:
                denominator = n
            else:
                denominator = n - int(np.count_nonzero(columns.nulls(check.column)))
            percent = count / denominator * 100 if denominator > 0 else 0.0
            consistent = error is None and bool(result.success) == (count == 0)
        if not consistent:
            logger.warning(
                "GX on the representative rows disagrees with the vectorised check %s(%s) (GX success=%s, "
                "%d failing rows, error %s); GX validates every row of this batch",
                check.name, check.column, result.success, count, error,
            )
            return None
        records.append(
            {
                "expectation": check.name,
                "column": check.column,
                "success": bool(result.success),
                "unexpected_count": count,
                "unexpected_percent": percent,
                "details": error or _details(body),
            }
        )
    expectations = pd.DataFrame.from_records(records, columns=list(EXPECTATION_COLUMNS))
    row_reasons: dict[int, list[tuple[str, str]]] = {}
    failing = [m for m in masks.values() if m is not None and m.any()]
    if failing:
        rows = np.flatnonzero(np.logical_or.reduce(failing))
        values = _Values(frame.take(rows).reset_index(drop=True))
        for check in checks:
            mask = masks[check.key]
            if mask is None:
                continue
            label = check.name if check.column is None else f"{check.name}({check.column})"
            category = f"{STAGE_VALIDATION}: {label}"
            for local in np.flatnonzero(mask[rows]).tolist():
                text = f"{check.name}: {check.describe(values, local)}"
                row_reasons.setdefault(int(rows[local]), []).append((category, text))
    return row_reasons, expectations, bool(gx_result.success)


def _valid_rows(frame: pd.DataFrame, failed: np.ndarray) -> pd.DataFrame:
    """The rows that passed, contract columns only, as ``schema.conform`` makes them."""
    names = list(schema.EVENT_COLUMNS)
    if failed.any():
        valid = frame.loc[~failed, names].reset_index(drop=True)
    else:
        # No copy (``frame[names]`` copies every column, ~15 ms per 500k rows): the frame's
        # columns are the input's own arrays, which validation never writes.
        valid = pd.DataFrame({name: frame[name] for name in names}, copy=False)
    if all(str(valid[c].dtype) == schema.EVENT_DTYPES[c] for c in names):
        return valid
    return schema.conform(valid)


# --------------------------------------------------------------------------------------------
# Reading GX's results
# --------------------------------------------------------------------------------------------


def _interpret(
    frame: pd.DataFrame, checks: list[_Check], gx_result: Any
) -> tuple[dict[int, list[tuple[str, str]]], list[tuple[str, str]], pd.DataFrame]:
    """Per-row reasons, table-level reasons and the expectations table from GX's result.

    Reasons are ``(category, text)`` pairs; the category is ``"validation: <label>"``.
    """
    by_key = {check.key: check for check in checks}
    order = {check.key: i for i, check in enumerate(checks)}
    values = _Values(frame)
    row_reasons: dict[int, list[tuple[str, str]]] = {}
    table_reasons: list[tuple[str, str]] = []
    errors: list[str] = []
    records = []
    # GX does not return results in suite order; sort them so reasons read in a stable order.
    results = sorted(gx_result.results, key=lambda r: order[_result_key(r)])
    for result in results:
        check = by_key[_result_key(result)]
        body = result.result or {}
        error = _exception_message(result.exception_info)
        details = error or _details(body)
        records.append(
            {
                "expectation": check.name,
                "column": check.column,
                "success": bool(result.success),
                "unexpected_count": int(body.get("unexpected_count") or 0),
                "unexpected_percent": float(body.get("unexpected_percent") or 0.0),
                "details": details,
            }
        )
        if result.success:
            continue
        label = check.name if check.column is None else f"{check.name}({check.column})"
        category = f"{STAGE_VALIDATION}: {label}"
        if error is not None:
            errors.append(f"{label}: {error}")
        elif "unexpected_index_list" in body:
            for pos in body["unexpected_index_list"]:
                text = f"{check.name}: {check.describe(values, int(pos))}"
                row_reasons.setdefault(int(pos), []).append((category, text))
        else:
            table_reasons.append((category, f"{check.name}: {_table_failure_text(check, frame)}"))
    if errors:
        if not table_reasons:
            raise RuntimeError(
                "Great Expectations failed to evaluate expectations on a table with the contract's "
                f"columns and dtypes: {' | '.join(errors)}"
            )
        # A column with the wrong dtype (already a table-level failure) can make GX's value
        # checks raise; every row is quarantined for the dtype, so these are only reported.
        logger.warning(
            "GX could not evaluate %d expectation(s) after a schema failure: %s", len(errors), errors
        )
    expectations = pd.DataFrame.from_records(records, columns=list(EXPECTATION_COLUMNS))
    return row_reasons, table_reasons, expectations


def _result_key(result: Any) -> tuple[str, str | None]:
    config = result.expectation_config
    return str(config.type), config.kwargs.get("column")


def _exception_message(info: dict[str, Any] | None) -> str | None:
    """GX's exception text, whether ``info`` is flat or keyed by metric (both shapes occur)."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [str(e.get("exception_message")) for e in entries if e.get("raised_exception")]
    return "; ".join(messages) if messages else None


def _details(body: dict[str, Any]) -> str | None:
    if "observed_value" in body:
        return f"observed {json.dumps(body['observed_value'], default=str)}"
    return None


def _table_failure_text(check: _Check, frame: pd.DataFrame) -> str:
    if check.column is None:  # the columns-match-set expectation
        expected = {*schema.EVENT_COLUMNS, *HELPER_COLUMNS}
        missing = sorted(expected - set(frame.columns))
        extra = sorted(set(frame.columns) - expected)
        return f"columns do not match the contract: missing {missing}, unexpected {extra}"
    dtype = schema.EVENT_DTYPES.get(check.column, "?")
    return f"column {check.column} has dtype {frame[check.column].dtype}, the contract says {dtype}"


def _no_row(values: _Values, pos: int) -> str:
    return "table-level expectation"


def _describe_type(name: str, dtype: str) -> Callable[[_Values, int], str]:
    def describe(values: _Values, pos: int) -> str:
        value = values[name][pos]
        return f"{name}={_show(value)} is a {type(value).__name__}, the contract says {dtype}"

    return describe


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _order_offsets(
    frame: pd.DataFrame, ts_min: pd.Timestamp, ts_max: pd.Timestamp, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds each row lies behind / ahead of its file's robust time reference (module docstring).

    NaN where ts is null, out of ``[ts_min, ts_max]`` or not a tz-aware datetime column (the
    type and range expectations report those rows), and where there is nothing to compare with.

    A file whose rows all have a usable ts, in non-decreasing order (the usual case: LANL,
    DARPA), needs no rolling medians: the medians of the rows before / after a row are the rows
    at fixed offsets, so its offsets are computed with index arithmetic (``_sorted_offsets``,
    equal to the rolling computation value for value; ``tests/test_validation.py`` checks it).
    The other files take the rolling computation (``_rolling_offsets``), which gives the same
    result on a subset of whole files as on the full table (files are independent).
    """
    n = len(frame)
    if "ts" not in frame.columns or not isinstance(frame["ts"].dtype, pd.DatetimeTZDtype):
        return np.full(n, np.nan), np.full(n, np.nan)
    seconds = _usable_seconds(frame, ts_min, ts_max)
    files = _file_codes(frame)
    behind, ahead = np.full(n, np.nan), np.full(n, np.nan)
    if n == 0:
        return behind, ahead
    if files.max(initial=0) == 0:
        segments = [np.arange(n)]
    else:
        order = np.argsort(files, kind="stable")
        cuts = np.flatnonzero(np.diff(files[order])) + 1
        segments = np.split(order, cuts)
    rolling: list[np.ndarray] = []
    for rows in segments:
        values = seconds[rows]
        if len(values) and not np.isnan(values).any() and (len(values) < 2 or (np.diff(values) >= 0).all()):
            behind[rows], ahead[rows] = _sorted_offsets(values, window)
        else:
            rolling.append(rows)
    if rolling:
        rows = np.sort(np.concatenate(rolling))
        behind[rows], ahead[rows] = _rolling_offsets(seconds[rows], files[rows], window)
    return behind, ahead


def _usable_seconds(frame: pd.DataFrame, ts_min: pd.Timestamp, ts_max: pd.Timestamp) -> np.ndarray:
    """Seconds since the epoch of each row's ts; NaN where null or outside ``[ts_min, ts_max]``."""
    ts = frame["ts"]
    if ts.dtype != _TS_DTYPE:
        ts = ts.dt.tz_convert("UTC").astype(_TS_DTYPE)
    nanos = ts.array.asi8
    usable = (nanos != _NAT) & (nanos >= ts_min.value) & (nanos <= ts_max.value)
    return np.where(usable, nanos / 1e9, np.nan)


def _sorted_offsets(seconds: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``_rolling_offsets`` of one file whose seconds are all usable and non-decreasing.

    With ``k`` values sorted ascending, the lower / upper medians are the values at ``(k-1)//2``
    and ``k//2``, so every rolling statistic is a value at an offset from the row.
    """
    n = len(seconds)
    idx = np.arange(n)
    after = np.minimum(window, n - 1 - idx)  # how many rows follow (up to window)
    before = np.minimum(window, idx)
    has_after = after >= 1
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    lower[has_after] = seconds[(idx + 1 + (after - 1) // 2)[has_after]]
    upper[has_after] = seconds[(idx + 1 + after // 2)[has_after]]
    confirmed = np.minimum(seconds, lower)
    # The latest confirmed time of the earlier rows; NaN (the last row) is skipped.
    prior = np.full(n, np.nan)
    if n > 1:
        running = np.fmax.accumulate(confirmed)
        prior[1:] = running[:-1]
    behind = prior - seconds
    upper_before = np.full(n, np.nan)
    has_before = before >= 1
    upper_before[has_before] = seconds[(idx - before + before // 2)[has_before]]
    upper = np.where((after >= 2) | ((after >= 1) & has_before), upper, np.nan)
    with np.errstate(invalid="ignore"):
        ahead = np.minimum(seconds - upper, np.where(has_before, seconds - upper_before, np.inf))
    return behind, np.where(np.isinf(ahead), np.nan, ahead)


def _rolling_offsets(seconds: np.ndarray, files: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Behind / ahead offsets with rolling medians per file (any order, NaN for unusable ts)."""
    lower, upper, count = _window_medians(seconds[::-1], files[::-1], window)
    lower, upper, count = lower[::-1], upper[::-1], count[::-1]  # of the rows after each row
    confirmed = np.minimum(seconds, lower)  # NaN when unusable or nothing follows
    prior = _earlier_max(confirmed, files)
    behind = prior - seconds
    # Ahead: of more than half the rows after it (upper median) and of more than half the rows
    # before it, with two witnesses at least (one row cannot refute another).
    _, upper_before, count_before = _window_medians(seconds, files, window)
    upper = np.where((count >= 2) | ((count >= 1) & (count_before >= 1)), upper, np.nan)
    with np.errstate(invalid="ignore"):
        ahead = np.minimum(seconds - upper, np.where(count_before >= 1, seconds - upper_before, np.inf))
    return behind, np.where(np.isinf(ahead), np.nan, ahead)


def _file_codes(frame: pd.DataFrame) -> np.ndarray:
    """The file of each row as a code (0 for the first file seen, 1 for the next, ...).

    The file is ``raw_ref`` without its last ``:`` part (one file when the column is absent).
    Rows of the first row's file are recognised by two cheap Arrow tests (they start with its
    ``file:`` and hold no other ``:``); only the other rows take the regex (~0.3 us a row).
    """
    n = len(frame)
    if "raw_ref" not in frame.columns or n == 0:
        return np.zeros(n, dtype=np.int64)
    column = frame["raw_ref"].array
    if isinstance(column, pd.arrays.StringArray):  # str / pd.NA objects: Arrow reads them as they are
        refs = pa.array(column._ndarray, type=pa.string(), from_pandas=True)
    else:
        refs = pa.array(frame["raw_ref"].to_numpy(dtype=object, na_value=None), type=pa.string())
    first = refs[0].as_py()
    rest = np.ones(n, dtype=bool)
    if first is not None and ":" in first:
        prefix = first.rpartition(":")[0] + ":"
        same = pc.and_(pc.starts_with(refs, prefix), pc.equal(pc.count_substring(refs, ":"), prefix.count(":")))
        rest = ~np.asarray(same.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        if not rest.any():
            return np.zeros(n, dtype=np.int64)
    if not rest.all():
        refs = refs.filter(pa.array(rest))  # the first file's rows are code 0, these 1, 2, ...
    # Arrow's regex runs in C++; pandas' str.rsplit takes about 1 s per 150k rows.
    files = pc.replace_substring_regex(refs, pattern=":[^:]*$", replacement="").fill_null("")
    codes = np.asarray(pc.dictionary_encode(files).indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    if rest.all():
        return codes
    out = np.zeros(n, dtype=np.int64)
    out[rest] = codes + 1
    return out


def _window_medians(
    seconds: np.ndarray, files: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the lower and upper median of the (non-NaN) values of the ``window`` rows of its
    file just before it in the given order, and how many there are (0 and NaN when none).

    Called on the reversed table, the rows before are the rows after. Lower and upper medians (no
    averaging of the two middle values) keep the checks conservative: the confirmed time never
    rises above what at least half the later rows reach, and a row is "ahead" only of a strict
    majority.
    """
    n = len(seconds)
    if n == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    series = pd.Series(seconds)
    rolling = series.groupby(files, sort=False).rolling(window, min_periods=1)

    def shifted(stat: pd.Series) -> np.ndarray:  # exclude the row itself: it is never its own witness
        stat = stat.reset_index(level=0, drop=True).sort_index()
        return stat.groupby(files, sort=False).shift(1).to_numpy(dtype=np.float64)

    lower = shifted(rolling.quantile(0.5, interpolation="lower"))
    upper = shifted(rolling.quantile(0.5, interpolation="higher"))
    count = np.nan_to_num(shifted(rolling.count()), nan=0.0)
    return lower, upper, count


def _earlier_max(values: np.ndarray, files: np.ndarray) -> np.ndarray:
    """Per row, the maximum of the non-NaN values of the earlier rows of its file (NaN if none)."""
    if len(values) == 0:
        return np.empty(0)
    series = pd.Series(values)
    running = series.groupby(files, sort=False).cummax()
    running = running.groupby(files, sort=False).ffill()
    return running.groupby(files, sort=False).shift(1).to_numpy(dtype=np.float64)


def _early_reasons(
    raw: pd.DataFrame, parse_error: pd.Series, parse_failed: np.ndarray
) -> dict[int, tuple[str, str]]:
    """Rows quarantined before GX: parse errors, then repeats of an earlier row's event_id.

    Only parsed rows count for duplicates; the first row with an id is kept (and validated),
    every later one is dropped with the first one's raw_ref in its reason.
    """
    early = {int(i): (STAGE_PARSE, str(parse_error.iat[i])) for i in np.flatnonzero(parse_failed)}
    if "event_id" not in raw.columns:
        return early
    ids = raw["event_id"].where(~parse_failed) if parse_failed.any() else raw["event_id"]
    array = ids.array
    # The object hashtable on the StringArray's own values: no copy, no NA conversion.
    values = array._ndarray if isinstance(array, pd.arrays.StringArray) else ids.to_numpy(dtype=object)
    repeat = pd.Series(values, copy=False).duplicated(keep="first").to_numpy()
    if not repeat.any():
        return early
    repeat &= ids.notna().to_numpy()
    if not repeat.any():
        return early
    refs = raw["raw_ref"] if "raw_ref" in raw.columns else pd.Series(pd.NA, index=raw.index)
    first_ref = pd.Series(refs.to_numpy(), index=ids.to_numpy())
    first_ref = first_ref[~first_ref.index.duplicated(keep="first") & ~pd.isna(first_ref.index)]
    for i in np.flatnonzero(repeat).tolist():
        event_id = ids.iat[i]
        early[i] = (
            STAGE_DUPLICATE,
            f"duplicate event_id: {_show(event_id)} was already read at {first_ref.get(event_id)}; "
            "this repeat is dropped and the first one kept",
        )
    return early


def _column_or_null(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(pd.NA, index=frame.index, dtype="string")


def _quarantine_table(
    raw: pd.DataFrame,
    early: dict[int, tuple[str, str]],
    positions: np.ndarray,
    failed: np.ndarray,
    reasons: dict[int, str],
) -> pd.DataFrame:
    """Quarantine rows in input order: parse failures, duplicates and validation failures."""
    if not early and not failed.any():
        return schema.empty_quarantine()
    stage = np.full(len(raw), None, dtype=object)
    reason = np.full(len(raw), None, dtype=object)
    for row, (row_stage, text) in early.items():
        stage[row] = row_stage
        reason[row] = text
    failed_positions = positions[failed]
    stage[failed_positions] = STAGE_VALIDATION
    reason[failed_positions] = [reasons[int(i)] for i in np.flatnonzero(failed)]
    keep = np.flatnonzero(pd.notna(stage))

    excerpts = _column_or_null(raw, "raw_excerpt").to_numpy(dtype=object, na_value=None)[keep]
    # A row that parsed has no excerpt from ingestion (or came from an adapter without one):
    # show its fields instead.
    render = np.flatnonzero(pd.isna(excerpts) & (stage[keep] != STAGE_PARSE))
    if len(render):
        excerpts[render] = _render_rows(raw, keep[render])

    def column(name: str) -> list[Any]:
        if name not in raw.columns:
            return [None] * len(keep)
        return list(raw[name].to_numpy(dtype=object, na_value=None)[keep])

    table = pd.DataFrame(
        {
            "raw_ref": column("raw_ref"),
            "source": column("source"),
            "stage": list(stage[keep]),
            "reason": list(reason[keep]),
            "raw_excerpt": list(excerpts),
            "event_id": column("event_id"),
        },
        columns=list(schema.QUARANTINE_COLUMNS),
    )
    return table.astype("string")


def _render_rows(raw: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """``name=value, ...`` of each row's non-null contract fields, at most ``EXCERPT_CHARS`` long.

    Built column by column with vectorised string operations: a whole file can fail a
    table-level check, and formatting 150k rows one value at a time takes many seconds.
    """
    text: pd.Series | None = None
    for name in schema.EVENT_COLUMNS:
        if name in ("source", "raw_ref") or name not in raw.columns:
            continue
        column = raw[name].iloc[rows].reset_index(drop=True)
        if isinstance(column.dtype, pd.StringDtype) or column.dtype == object:
            shown = "'" + column.astype("string") + "'"
        elif isinstance(column.dtype, pd.DatetimeTZDtype):
            shown = column.map(lambda t: t.isoformat(), na_action="ignore").astype("string")
        else:
            shown = column.astype("string")
        part = name + "=" + shown  # stays NA where the value is null
        if text is None:
            text = part
        else:
            joined = text + ", " + part
            text = joined.where(part.notna() & text.notna(), text.where(text.notna(), part))
    if text is None:
        return np.full(len(rows), "", dtype=object)
    return text.fillna("").str.slice(0, EXCERPT_CHARS).to_numpy(dtype=object)


def _show(value: Any) -> str:
    """A value as a person reads it: 70000 not 70000.0, ISO timestamps, strings quoted."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "null"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _json_float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
