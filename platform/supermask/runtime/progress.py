"""The progress display of a run: a bar in tasks that follows the workers' events (stored tasks, and the
share of its steps each block in progress has taken; a block's tasks finish together)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from supermask.runtime.events import read_events

_BAR = "{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class LearningProgress:
    """A context manager that polls the run's events once a second and moves the bar."""

    def __init__(self, task_ids: list[str], events: Path, label: str, enabled: bool) -> None:
        self.task_ids, self.events = set(task_ids), events
        self.bar = tqdm(total=len(task_ids), desc=label, unit="task", disable=not enabled, bar_format=_BAR)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._since = time.time()
        self.bar.set_postfix_str("starting Ray Train workers")

    def started(self, name: str, blocks: list[list[int]]) -> None:
        self.bar.set_postfix_str(f"{len(blocks)} block(s) of up to {max(map(len, blocks))} task(s) on {name}")

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._update()

    def _update(self) -> None:
        events = [e for e in read_events(self.events) if e["time"] >= self._since]
        stored = [e for e in events if e["event"] == "task_stored" and e["task"] in self.task_ids]
        done = {e["task"] for e in stored}
        blocks = {e["first"]: e for e in events if e["event"] == "block_progress"}
        partial = sum(b["tasks"] * b["step"] / b["steps"] for first, b in blocks.items() if first not in done)
        self.bar.n = round(len(done) + partial, 2)
        if stored:
            self.bar.set_postfix_str(f"{stored[-1]['task']} {stored[-1].get('summary') or ''}".rstrip())
        self.bar.refresh()

    def __enter__(self) -> LearningProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()
