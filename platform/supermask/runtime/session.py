"""Connecting to Ray: an embedded local instance by default, or the cluster `--address` names.

The console stays for progress bars and results: Ray's own informational lines (worker output,
Train's per-report lines, its controller's housekeeping) go to a log file in the run folder instead,
and only warnings and errors reach the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ray

log = logging.getLogger(__name__)

# Cap the embedded instance's object store: masks are small and this machine is shared.
DEFAULT_OBJECT_STORE_BYTES = int(os.environ.get("SUPERMASK_OBJECT_STORE_BYTES", 512 * 1024**2))
RAY_LOGGERS = ("ray", "ray.train", "ray.tune", "ray.data")


@dataclass
class Session:
    """The Ray a command runs on: its resources, and how long starting (or joining) it took."""

    resources: dict = field(default_factory=dict)
    start_seconds: float = 0.0


@contextlib.contextmanager
def _ray_logs_to(log_file: Path | None) -> Iterator[None]:
    """Send Ray's Python loggers to `log_file` (everything) and to the console (warnings and up)."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, [h.level for h in logger.handlers]))
        for h in logger.handlers:
            h.setLevel(max(h.level, logging.WARNING))
            h.addFilter(_not_for_the_console)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, levels in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            for h, lv in zip(logger.handlers, levels, strict=False):
                h.setLevel(lv)
                h.removeFilter(_not_for_the_console)
        handler.close()


# Warnings Ray prints on every start that ask nothing of a user of an embedded instance: they go to
# the log file only. (Token authentication stays on; the warning merely announces it.)
QUIET_WARNINGS = ("Token authentication is enabled",)


def _not_for_the_console(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in QUIET_WARNINGS)


def job_runtime_env() -> dict:
    """The runtime environment of this program's Ray jobs (embedded or on a cluster).

    Ray Train's controller polls its worker group every 2 s by default, and a run's start and end each
    wait for those polls: on a 2-core machine a 2-task run finished 2 to 6 s sooner with 0.25 s
    (measured in pairs, against noise of a few seconds). Polling every 0.25 s (a remote call per worker) costs little; set
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S to choose another interval. It is set in this process too (unless
    set already), so the processes of an embedded Ray start with it.
    """
    interval = os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    return {
        "env_vars": {
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": interval,
        }
    }


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    *,
    log_file: Path | None = None,
    quiet: bool = True,
) -> Iterator[Session]:
    """Start (or join) Ray for the length of a command.

    With `quiet`, the output of Ray's worker processes is not forwarded to this terminal (it stays in
    Ray's session logs); `log_file` collects Ray's driver-side log lines.
    """
    if ray.is_initialized():
        yield Session(ray.cluster_resources())
        return
    env = job_runtime_env()
    started = time.perf_counter()
    with _ray_logs_to(log_file):
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=not quiet)
            log.info("connected to Ray at %s", address)
        else:
            ray.init(
                address="local",  # a new instance, never whatever `ray start` cluster this machine runs
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                object_store_memory=DEFAULT_OBJECT_STORE_BYTES,
                runtime_env=env,
                log_to_driver=not quiet,
            )
            log.info("started an embedded local Ray")
        try:
            yield Session(ray.cluster_resources(), time.perf_counter() - started)
        finally:
            ray.shutdown()
