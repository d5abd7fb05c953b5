"""Checks of the command line's arguments and input files, and its one-line user errors.

Only the standard library loads here (the format sniff imports the readers, pandas, when it runs),
so ``anomaly-pipeline`` can refuse a typo, a missing file or a file in the wrong format within a
second, before torch, Dagster or MLflow load. ``cli`` and ``streaming.commands`` share these.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from anomaly_pipeline.defaults import FORMAT_DESCRIPTIONS, FORMAT_NAMES


class UsageError(Exception):
    """A mistake in the command line or in its input that the user can fix: printed as one line
    (what is wrong and what to do) on stderr, exit status 2, never a traceback."""


def one_line(text: str) -> str:
    """``text`` on one line (messages from libraries may carry newlines)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


# Library messages speak Python ("pass fmt='tsv'"); the command line has --format and file names.
_CLI_WORDS: tuple[tuple[str, str], ...] = (
    (r";? ?pass fmt='tsv' or fmt='json' if you are sure", ""),
    (r" ?\(for JSON logs pass fmt='json'\)", ""),
    (r"pass fmt='csv' or fmt='jsonl', or name it", "name it"),
    (r"pass it as iter_lanl\(\.\.\., redteam=path\)", "pass a LANL auth, proc, flows or dns file instead"),
    (r"[Pp]ass fmt= explicitly", "pass --format NAME"),
    (r"pass fmt= one of them", "pass --format with one of them"),
    (r"pass fmt=", "pass --format NAME (one of " + ", ".join(FORMAT_NAMES) + ")"),
    (r"\bfmt=", "--format "),
)


def cli_words(message: str) -> str:
    """A reader's or detector's error message in the words of the command line, on one line."""
    text = one_line(message)
    for pattern, replacement in _CLI_WORDS:
        text = re.sub(pattern, replacement, text)
    return text


# -- argument types: checked while parsing, so a bad value fails before anything is imported --
def arg_int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def arg_fraction(text: str) -> float:
    """A share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value:g}")
    return value


def arg_positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value:g}")
    return value


def arg_port(text: str) -> int:
    value = arg_int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port lies between 1 and 65535, got {value}")
    return value


def arg_date(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date or time in ISO 8601 (e.g. 1998-06-01), got {text!r}") from None
    return text


def add_format_option(parser: argparse.ArgumentParser, what: str = "input format") -> None:
    """``--format`` with the supported names (the same list for every command)."""
    parser.add_argument("--format", default="auto", choices=["auto", *FORMAT_NAMES], metavar="FORMAT",
                        help=f"{what}: auto (detected from the first lines; default), " + ", ".join(FORMAT_NAMES))


# -- cheap checks of input and output paths, before the heavy imports --
def check_input_file(path: str | Path, fmt: str = "auto") -> Path:
    """``path`` when it is a readable, non-empty file that fits ``fmt``; else ``UsageError``.

    The format is sniffed from the first lines (``sources.formats.detect_format``: pandas, no
    torch), so ``--format zeek`` on a CSV fails here, in words, and says which ``--format`` fits.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"input file not found: {path}; check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass one log file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied")
    if path.stat().st_size == 0:
        raise UsageError(f"{path} is empty (0 bytes): there are no events to read; pass a log file with events")
    from anomaly_pipeline.sources.formats import FormatDetectionError, detect_format

    try:
        looks_like: tuple[str, ...] = (detect_format(path),)
    except FormatDetectionError as exc:
        if fmt == "auto":
            raise UsageError(cli_words(str(exc))) from None
        looks_like = tuple(exc.candidates)  # empty: fits nothing we know; the reader decides
    if fmt == "auto" or not looks_like or fmt in looks_like:
        return path
    what = FORMAT_DESCRIPTIONS.get(looks_like[0], looks_like[0]) if len(looks_like) == 1 else " or ".join(looks_like)
    tries = " or ".join(f"--format {name}" for name in looks_like)
    raise UsageError(f"--format {fmt} expects {FORMAT_DESCRIPTIONS[fmt]}; {path.name} looks like {what}: "
                     f"try {tries} (or leave --format out to detect it)")


def check_output_file(path: str | Path) -> Path:
    """``path`` when a file can be written there (checked now, not after an hour of training)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder; name the file to write, e.g. {path / 'scored.csv'}")
    existing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write {path}: {existing} is not a writable folder; choose another --output")
    return path


def synthetic_config(**options: int | None):  # -> SyntheticConfig
    """The synthetic data set for these options, or ``UsageError`` in the options' own names."""
    from anomaly_pipeline.sources.synthetic import SyntheticConfig

    try:
        return SyntheticConfig(**options)
    except ValueError as exc:
        text = str(exc).removeprefix("invalid SyntheticConfig: ").replace(" or None", " (or leave it out)")
        for name in options:
            text = re.sub(rf"\b{name}\b", "--" + name.removeprefix("n_").replace("_", "-"), text)
        raise UsageError(f"synthetic data: {text}") from None
