"""The shard actor: one Ray actor per shard file of a store, its only writer, for every store kind.

A store kind is a file class in `store/` (`MaskFile`, `ReservoirFile`, `TranslationFile`, all
`store.shard_file.ShardFile`s); `ShardFiles` says which class and settings open a store's files, and
one `ShardActor` class hosts any of them. The file is opened in __init__, so an actor that Ray
restarts after a crash rebuilds its index from the file. Errors raised in a shard reach the caller
as their own types (MaskNotFoundError, FingerprintMismatchError, ...), through `wait_shards`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnschedulableError, RayTaskError

from supermask.store.errors import MaskFileError, StoreLockedError
from supermask.store.shard_file import ShardFile

logger = logging.getLogger(__name__)

NAMESPACE = "supermask"  # shard actors are named in this namespace, so every job and worker finds them
LOCK_WAIT_S = 10.0  # how long a starting shard waits for a dying predecessor to release its file


class ShardUnavailableError(MaskFileError):
    """A shard actor that is gone for good (its store was closed); open the store again."""


@dataclass(frozen=True)
class ShardFiles:
    """How the shard files of one store kind are named and opened (picklable: actors open them)."""

    actor_prefix: str  # "shard" (masks), "reservoir", "translation": actor names never mix kinds
    file_class: type[ShardFile]
    path_of: Callable[[Path, int], Path]  # (store root, shard) -> the shard's file
    settings: dict = field(default_factory=dict)  # keyword arguments of file_class

    def open(self, path: str) -> ShardFile:
        return self.file_class(path, **self.settings)

    def actor_name(self, root: str | os.PathLike[str], shard: int) -> str:
        """The Ray actor name of one shard of the store at `root` (the same in every process)."""
        digest = hashlib.blake2b(str(Path(root).expanduser().resolve()).encode(), digest_size=16).hexdigest()
        return f"supermask-{self.actor_prefix}-{digest[:10]}-{shard}"


@ray.remote
class ShardActor:
    """One shard of a store: owns one shard file, opened in __init__ so a restart rebuilds its index."""

    def __init__(self, files: ShardFiles, path: str) -> None:
        self._error: Exception | None = None
        self._file: ShardFile | None = None
        self._held: dict = {}  # what kind-specific calls keep between calls (a rebuilt base network, ...)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                self._file = files.open(path)
                return
            except StoreLockedError as e:
                if time.monotonic() > deadline:
                    self._error = e
                    return
                logger.warning("waiting for %s to be released by its previous owner", path)
                time.sleep(0.5)  # a killed predecessor's lock is released when its process is gone
            except Exception as e:  # kept and raised by every call, so callers get it as its own type
                self._error = e
                return

    def _open(self) -> ShardFile:
        if self._error is not None:
            raise self._error
        if self._file is None:
            raise ShardUnavailableError("this shard was closed; open the store again")
        return self._file

    def ping(self) -> int:
        """The pid, once the shard file is open (raises what opening it raised)."""
        self._open()
        return os.getpid()

    # Every method may be re-run after a crash (the actor runs with max_task_retries=-1), and that is
    # safe: put is idempotent (the same record again returns False), deleting a deleted record returns
    # False, export overwrites its own output, and the rest only read. Every whole record read is
    # checked against its record checksum; sums and scores check the bits checksum.
    def put_many(self, records: list, overwrite: bool = False) -> list[bool]:
        return self._open().put_many(records, overwrite=overwrite)

    def get_many(self, ids: list[str], fingerprint: str | None = None) -> list:
        return self._open().get_many(ids, fingerprint=fingerprint)

    def delete(self, task_id: str) -> bool:
        return self._open().delete(task_id)

    def list(self) -> list[str]:
        return self._open().list()

    def contains_many(self, ids: list[str]) -> list[bool]:
        return self._open().contains_many(ids)

    def describe(self, ids: list[str] | None = None) -> dict[str, dict]:
        return self._open().describe(ids)

    def stats(self) -> dict:
        return self._open().stats()

    def verify(self) -> dict:
        """The VerifyReport as a plain dict: file, checked, ok, problems."""
        return self._open().verify().as_dict()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One of the file kind's own calls (mask_sum, query_scores, export, ...), by name."""
        return getattr(self._open(), method)(*args, **kwargs)

    def run(self, function: Callable, *args: Any) -> Any:
        """function(file, held, *args): a kind's call that keeps state in the actor (`held`, a dict)."""
        return function(self._open(), self._held, *args)

    def close(self) -> None:
        """Compact and close the shard file; later calls raise ShardUnavailableError."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


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
            "opening it again (e.g. MaskStore.open(root)) starts new shard actors that read the shard files: "
            "nothing stored is lost"
        ) from e
