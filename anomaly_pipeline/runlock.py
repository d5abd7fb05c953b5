"""One run at a time per state folder: an OS lock on ``<home>/run.lock``.

``anomaly-pipeline run`` holds an exclusive ``fcntl.flock`` on the file for the whole run. The
kernel drops the lock when the holding process ends, however it ends (``kill -9`` included), so
a dead run never blocks the next one and there is no stale lock to delete by hand. The file's
text names the holder (pid, host, start time, command) for the refusal message; the lock itself,
not the text, decides. Locks are per open file, so a process that already holds the folder
(the CLI, then the Dagster steps it executes in process) is let through by ``_HELD``.

POSIX only (``fcntl``); on network file systems ``flock`` may not be enforced between machines,
so a state folder is one machine's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = "run.lock"

_HELD: dict[Path, tuple[int, int]] = {}  # lock file -> (descriptor, depth), this process only
_GUARD = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds a state folder, as its lock file says."""

    pid: int | None
    host: str
    started: str
    command: str

    def describe(self) -> str:
        if self.pid is None:
            return "a process that has not written its name yet (a run starting, or a Dagster step checking)"
        return f"pid {self.pid} on {self.host}, started {self.started} ({self.command})"


class HomeBusy(RuntimeError):
    """Another process holds the state folder's run lock."""

    def __init__(self, home: Path, holder: Holder) -> None:
        self.home, self.holder = home, holder
        stop = f"stop it (kill {holder.pid}; a killed run releases the folder by itself)" if holder.pid else "try again"
        super().__init__(
            f"another run is using the state folder {home}: {holder.describe()}; two runs on one folder would "
            f"overwrite each other's data, so wait for it to finish, {stop}, or use another --home"
        )


def _lock_path(home: str | os.PathLike[str]) -> Path:
    return Path(home).expanduser().resolve() / LOCK_FILE


def read_holder(home: str | os.PathLike[str]) -> Holder:
    """The holder recorded in the lock file (fields empty when it has none)."""
    try:
        saved = json.loads(_lock_path(home).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        saved = {}
    pid = saved.get("pid")
    return Holder(pid=int(pid) if isinstance(pid, int) else None, host=str(saved.get("host", "?")),
                  started=str(saved.get("started", "?")), command=str(saved.get("command", "?")))


def holds_home(home: str | os.PathLike[str]) -> bool:
    """Whether this process holds the run lock of ``home``."""
    with _GUARD:
        return _lock_path(home) in _HELD


@contextlib.contextmanager
def hold_home(home: str | os.PathLike[str], command: str) -> Iterator[Holder]:
    """Hold ``home``'s run lock for the ``with`` block; re-entrant within one process.

    Raises:
        HomeBusy: another process holds it (the message names it and says what to do).
    """
    path = _lock_path(home)
    with _GUARD:
        if path in _HELD:
            fd, depth = _HELD[path]
            _HELD[path] = (fd, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield read_holder(path.parent)
        finally:
            _release(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HomeBusy(path.parent, read_holder(path.parent)) from None
    holder = Holder(pid=os.getpid(), host=socket.gethostname(),
                    started=datetime.now(UTC).isoformat(timespec="seconds"), command=command)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder.__dict__).encode(), 0)
    with _GUARD:
        _HELD[path] = (fd, 1)
    try:
        yield holder
    finally:
        _release(path)


def _release(path: Path) -> None:
    with _GUARD:
        fd, depth = _HELD[path]
        if depth > 1:
            _HELD[path] = (fd, depth - 1)
            return
        del _HELD[path]
    os.ftruncate(fd, 0)  # nobody holds it now; the next holder writes its own name
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def check_home_free(home: str | os.PathLike[str]) -> None:
    """Raise ``HomeBusy`` when another process holds ``home``'s run lock; hold nothing.

    For steps of runs that Dagster launched (UI, schedules, sensors): they do not hold the lock
    for the whole run (a run's steps may be separate processes), but they must not write into a
    folder a CLI run is using. A shared probe, so two probes never refuse each other.
    """
    path = _lock_path(home)
    if holds_home(path.parent) or not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise HomeBusy(path.parent, read_holder(path.parent)) from None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
