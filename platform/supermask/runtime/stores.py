"""The store clients by store kind: what a learner's records are kept in (learners name the kinds they use).

`open_client(kind, root, **options)` opens (creating if absent) the store of that kind at `root`:
"masks" (exact masks and trained weights; options: num_shards), "reservoir" (Hopfield reservoirs;
options: spec, dims, fingerprint), "translation" (translation records; options: num_shards).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from supermask.core.registry import Registry
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.reservoir_store import ReservoirStore
from supermask.runtime.translation_store import TranslationStore

STORE_CLIENTS: Registry[Callable[..., Any]] = Registry("store kind")
STORE_CLIENTS.register("masks")(MaskStore.open)
STORE_CLIENTS.register("reservoir")(ReservoirStore.open)
STORE_CLIENTS.register("translation")(TranslationStore.open)


def open_client(kind: str, root: str | os.PathLike[str], **options: Any) -> Any:
    """The client of the store of this kind at `root`; close it when done."""
    return STORE_CLIENTS.get(kind)(root, **options)
