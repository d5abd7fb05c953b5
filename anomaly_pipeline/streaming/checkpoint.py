"""Where a ``stream`` left off, so that a restarted scorer neither re-reads nor re-alerts.

A small JSON file under ``$ANOMALY_PIPELINE_HOME/stream/`` per input (a file, or a Kafka topic and
group): the position after the last micro-batch the scorer finished (scored, alerts written), and
the ids of the alerts it sent. The position is a byte offset for JSON lines (a byte boundary is a
record boundary) and a count of records for every other format (CSV, Zeek TSV or JSON, LANL,
DARPA, OCSF, Windows, gzip or not: a restart re-reads the file up to that record without scoring
it, because their readers need the header and cannot start mid-file, and gzip cannot seek). The
first bytes of the file are kept too, so a file replaced by another (rotated, rewritten) is read
from its start instead of from a position that means nothing there. The source saves the
position only when the scorer asks for the next batch, i.e. after the previous one is done; a
scorer killed in between re-reads that one batch on restart, and the alert ids drop the alerts it
had already sent (at least once for events, at most once for alerts). Kafka keeps its own offsets
(committed after each batch, see ``sources.KafkaSource``); its checkpoint holds the alert ids only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from pathlib import Path

MAX_ALERT_IDS = 200_000  # about 6 MB of JSON; older alerts are long out of any re-read batch
HEAD_BYTES = 4096  # the file's first bytes identify it across restarts


def file_head(path: Path) -> list:
    """``[length, sha256]`` of the first ``HEAD_BYTES`` bytes of ``path``."""
    with path.open("rb") as handle:
        data = handle.read(HEAD_BYTES)
    return [len(data), hashlib.sha256(data).hexdigest()]


class StreamCheckpoint:
    """The position and the sent alert ids of one input, saved atomically (write, then rename)."""

    def __init__(self, path: Path, max_alert_ids: int = MAX_ALERT_IDS) -> None:
        self.path = path
        self.offset = 0  # bytes (JSON lines)
        self.rows = 0  # records (every other file format)
        self.head: list | None = None  # file_head of the input when the position was saved
        self._order: deque[str] = deque(maxlen=max_alert_ids)
        self._sent: set[str] = set()
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.offset = int(saved.get("offset", 0))
            self.rows = int(saved.get("rows", 0))
            self.head = saved.get("head")
            for alert_id in saved.get("alert_ids", []):
                self._remember(alert_id)

    @classmethod
    def for_input(cls, home: Path, kind: str, name: str) -> StreamCheckpoint:
        """The checkpoint of input ``name`` (a resolved file path, or ``topic@group``) of ``kind``."""
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return cls(home / "stream" / f"{kind}-{digest}.json")

    def _remember(self, alert_id: str) -> None:
        if len(self._order) == self._order.maxlen:
            self._sent.discard(self._order[0])
        self._order.append(alert_id)
        self._sent.add(alert_id)

    def claim(self, alert_id: str) -> bool:
        """True the first time ``alert_id`` is seen (send it), False for an alert already sent."""
        if alert_id in self._sent:
            return False
        self._remember(alert_id)
        return True

    def same_file(self, path: Path) -> bool:
        """Whether ``path`` still starts with the bytes it had when the position was saved (a file
        that only grew does; a replaced one does not)."""
        if self.head is None:
            return True
        length, digest = self.head
        with path.open("rb") as handle:
            data = handle.read(length)
        return len(data) == length and hashlib.sha256(data).hexdigest() == digest

    def rewind(self) -> None:
        """Read the input from its start again (alerts already sent stay unsent)."""
        self.offset, self.rows, self.head = 0, 0, None

    def save(self, offset: int | None = None, rows: int | None = None, head: list | None = None) -> None:
        """Write the position (each part unchanged when None) and the alert ids; a crash leaves
        the old file."""
        if offset is not None:
            self.offset = offset
        if rows is not None:
            self.rows = rows
        if head is not None:
            self.head = head
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        with scratch.open("w", encoding="utf-8") as handle:
            json.dump({"offset": self.offset, "rows": self.rows, "head": self.head, "alert_ids": list(self._order)},
                      handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.path)
