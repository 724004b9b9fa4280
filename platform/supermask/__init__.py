"""supermask: continual learning with binary supermasks over one frozen, randomly initialised network.

The names users need, importable without Ray:

    from supermask import BaseSpec, build_base, SearchConfig, search_mask, evaluate_mask
    from supermask import build_stream, load_spec, MaskFile
"""

__version__ = "0.1.0"

from supermask.core.masks import MASK_METHODS, build_mask_method, layer_densities  # noqa: E402
from supermask.core.nets import ARCHITECTURES, BaseNetwork, BaseSpec, build_base  # noqa: E402
from supermask.core.packing import TaskMask, pack_masks, unpack_masks  # noqa: E402
from supermask.core.search import SearchConfig, evaluate_mask, search_mask  # noqa: E402
from supermask.data import STREAMS, build_stream  # noqa: E402
from supermask.spec import Spec, SpecError, load_spec  # noqa: E402
from supermask.store.maskfile import MaskFile  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "MASK_METHODS",
    "STREAMS",
    "BaseNetwork",
    "BaseSpec",
    "MaskFile",
    "SearchConfig",
    "Spec",
    "SpecError",
    "TaskMask",
    "__version__",
    "build_base",
    "build_mask_method",
    "build_stream",
    "evaluate_mask",
    "layer_densities",
    "load_spec",
    "pack_masks",
    "search_mask",
    "unpack_masks",
]
