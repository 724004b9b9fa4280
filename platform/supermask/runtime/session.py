"""Connecting to Ray: an embedded local instance by default, or the cluster `--address` names."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray

log = logging.getLogger(__name__)

# Cap the embedded instance's object store: masks are small and this machine is shared.
DEFAULT_OBJECT_STORE_BYTES = int(os.environ.get("SUPERMASK_OBJECT_STORE_BYTES", 512 * 1024**2))


@contextlib.contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[dict]:
    """Start (or join) Ray for the length of a command; yields the cluster's resources."""
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        log.info("connected to Ray at %s", address)
    else:
        ray.init(
            address="local",  # a new instance, never whatever `ray start` cluster this machine runs
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            object_store_memory=DEFAULT_OBJECT_STORE_BYTES,
            runtime_env=env,
            log_to_driver=True,
        )
        log.info("started an embedded local Ray")
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
