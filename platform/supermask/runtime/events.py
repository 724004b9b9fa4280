"""An append-only JSON-lines log of what happened to each task during a run (started, resumed, stored).

Workers on any node append to one file on the run's (shared) storage; each line is one small
`write` with O_APPEND, so lines from concurrent writers do not interleave. It is how a user (and
the tests) can tell that every task was learned exactly once across crashes and restarts.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


def log_event(path: Path, event: str, **fields) -> None:
    """Append one event line to the run's log."""
    record = {"time": time.time(), "event": event, "pid": os.getpid(), "host": socket.gethostname(), **fields}
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def append_records(path: Path, records: list[dict]) -> None:
    """Append records as JSON lines in one write (e.g. a probe's K records to the run's metrics.jsonl)."""
    if not records:
        return
    data = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_events(path: Path) -> list[dict]:
    """Every complete event line of a run's log (a line torn by a crash is skipped)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
