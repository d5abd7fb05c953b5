"""Real-time scoring: streaming state, the micro-batch scorer and its event sources.

The names below load on first use (PEP 562), not when the package is imported: the command line
imports ``streaming.commands`` to build its parser, and that must not pull in pandas, the graph
code or the model before the arguments are checked.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ChampionModel": "scorer",
    "StreamScorer": "scorer",
    "load_champion": "scorer",
    "FileSource": "sources",
    "KafkaSource": "sources",
    "LineSource": "sources",
    "records_to_events": "sources",
    "StreamConfig": "state",
    "StreamState": "state",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
