"""A shard of the mask store as a Ray actor: it owns one MaskFile and is the only writer of that file."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnschedulableError, RayTaskError

from supermask.core.records.packing import TaskMask
from supermask.store.errors import MaskFileError, StoreLockedError
from supermask.store.maskfile import MaskFile

logger = logging.getLogger(__name__)

NAMESPACE = "supermask"  # shard actors are named in this namespace, so every job and worker finds them
LOCK_WAIT_S = 10.0  # how long a starting shard waits for a dying predecessor to release its file


class ShardUnavailableError(MaskFileError):
    """A shard actor that is gone for good (its store was closed); open the store again."""


@ray.remote
class ShardActor:
    """One shard of a mask store: owns one MaskFile, opened in __init__ so a restart rebuilds its index."""

    def __init__(self, path: str, compact_bytes: int | None = None) -> None:
        self._error: Exception | None = None
        self._file: MaskFile | None = None
        kwargs = {} if compact_bytes is None else {"compact_bytes": compact_bytes}
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                self._file = MaskFile(path, **kwargs)
                return
            except StoreLockedError as e:
                if time.monotonic() > deadline:
                    self._error = e
                    return
                logger.warning("waiting for %s to be released by its previous owner", path)
                time.sleep(0.5)
            except Exception as e:  # kept and raised by every call, so callers get it as its own type
                self._error = e
                return

    def _open(self) -> MaskFile:
        if self._error is not None:
            raise self._error
        if self._file is None:
            raise ShardUnavailableError("this shard was closed; open the store again with MaskStore.open")
        return self._file

    def ping(self) -> int:
        """The pid, once the shard file is open (raises what opening it raised)."""
        self._open()
        return os.getpid()

    # Every method may be re-run after a crash (the actor runs with max_task_retries=-1), and that is
    # safe: put is idempotent (the same mask again returns False), deleting a deleted mask returns
    # False, export overwrites its own output, and the rest only read. Every whole record read is
    # checked against its record checksum; sums and scores check the bits checksum.
    def put(self, mask: TaskMask, overwrite: bool = False) -> bool:
        return self._open().put(mask, overwrite=overwrite)

    def put_many(self, masks: list[TaskMask], overwrite: bool = False) -> list[bool]:
        f = self._open()
        return [f.put(m, overwrite=overwrite) for m in masks]

    def get(self, task_id: str, fingerprint: str | None = None) -> TaskMask:
        return self._open().get(task_id, fingerprint=fingerprint)

    def get_many(self, ids: list[str], fingerprint: str | None = None) -> list[TaskMask]:
        return self._open().get_many(ids, fingerprint=fingerprint)

    def get_weights_many(self, ids: list[str], fingerprint: str | None = None) -> list:
        return self._open().get_weights_many(ids, fingerprint=fingerprint)

    def delete(self, task_id: str) -> bool:
        return self._open().delete(task_id)

    def list(self) -> list[str]:
        return self._open().list()

    def contains_many(self, ids: list[str]) -> list[bool]:
        f = self._open()
        return [t in f for t in ids]

    def stats(self) -> dict:
        return self._open().stats()

    def describe(self, ids: list[str] | None = None) -> dict[str, dict]:
        return self._open().describe(ids)

    def verify(self) -> dict:
        """The VerifyReport as a plain dict: file, checked, ok, problems."""
        v = self._open().verify()
        return {
            "file": str(v.path),
            "checked": v.checked,
            "ok": v.ok,
            "problems": [str(p) for p in v.problems],
        }

    def mask_sum(
        self, fingerprint: str | None = None, ids: list[str] | None = None
    ) -> tuple[list[np.ndarray], int]:
        return self._open().mask_sum(fingerprint, ids=ids)

    def query_scores(
        self,
        queries: list[np.ndarray] | np.ndarray,
        chunk: int = 64,
        fingerprint: str | None = None,
        ids: list[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores) of this shard's masks (or these ids): only k x Q numbers travel back."""
        return self._open().query_scores(queries, chunk, fingerprint=fingerprint, ids=ids)

    def export(self, dest: str) -> int:
        return self._open().export(dest, overwrite=True)

    def close(self) -> None:
        """Compact and close the shard file; later calls raise ShardUnavailableError."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def shard_actor_name(root: str | os.PathLike[str], shard: int) -> str:
    """The Ray actor name of one shard of the store at `root` (the same in every process)."""
    digest = hashlib.blake2b(str(Path(root).expanduser().resolve()).encode(), digest_size=16).hexdigest()
    return f"supermask-shard-{digest[:10]}-{shard}"


def wait_shards(refs: Any, what: str) -> Any:
    """ray.get of shard calls, raising a shard's own exception (MaskNotFoundError, ...) rather than Ray's."""
    try:
        return ray.get(refs)
    except (RayTaskError, ActorDiedError, ActorUnschedulableError) as e:
        if isinstance(refs, list):  # fetch the rest too, so that Ray does not log their errors as unhandled
            for ref in refs:
                try:
                    ray.get(ref)
                except Exception:
                    pass
        if isinstance(e, RayTaskError) and isinstance(e.cause, Exception):
            logger.debug("%s failed in a shard: %s", what, e)
            raise e.cause from None
        if isinstance(e, RayTaskError):
            raise
        raise ShardUnavailableError(
            f"{what}: a shard actor is gone for good ({str(e).splitlines()[0]}); if the store was closed, "
            "MaskStore.open(root) starts new shard actors that read the shard files: nothing stored is lost"
        ) from e
