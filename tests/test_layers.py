"""The architecture as a test: imports point down the layers only, never in a cycle, and Ray stays in runtime/."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import supermask

PACKAGE = Path(supermask.__file__).parent
LAYERS = ["core", "data", "store", "config", "recipes", "runtime", "interface"]  # bottom to top
RAY_ALLOWED = {"runtime"}  # the only layer that talks to Ray


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(path: Path) -> set[str]:
    """Every module a file imports: at the top, inside functions, and under TYPE_CHECKING (an import only
    type checkers follow still ties the two modules together)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def internal_edges() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports_of(path) if m in mods and m != name} for name, path in mods.items()}


def test_every_module_belongs_to_a_layer():
    loose = [m for m in modules() if layer_of(m) is None and m not in ("supermask", "supermask.__main__")]
    assert not loose, f"modules outside the layer folders {LAYERS}: {loose}"


def test_imports_point_down_the_layers_only():
    upward = []
    for module, targets in internal_edges().items():
        here = layer_of(module)
        if here is None:
            continue  # the package facade and __main__ sit above every layer
        for target in targets:
            there = layer_of(target)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{module} ({here}) imports {target} ({there})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every import cycle found by a depth-first walk, as "a -> b -> a"."""
    state: dict[str, int] = {}
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(
                    " -> ".join(path[path.index(nxt) :] + [nxt]) if nxt in path else f"{node} -> {nxt}"
                )
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_cycles():
    found = cycles(internal_edges())
    assert not found, "import cycles:\n" + "\n".join(found)


def test_no_cycles_among_the_stores_modules_counting_every_import():
    """store/ and the runtime's store clients, counting imports under TYPE_CHECKING too (a type-only import
    that closes a circle still ties the two modules into one)."""
    clients = ("_store", "shard_actor", "shard_placement")
    mods = {m: p for m, p in modules().items() if layer_of(m) == "store" or m.endswith(clients)}
    edges = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        edges[name] = {m for m in found if m in mods and m != name}
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_ray_is_imported_only_by_the_runtime():
    offenders = [
        m
        for m, path in modules().items()
        if layer_of(m) not in (*RAY_ALLOWED, "interface", None)
        and any(i == "ray" or i.startswith("ray.") for i in imports_of(path))
    ]
    assert not offenders, f"these modules import Ray outside runtime/: {offenders}"


def test_the_checker_catches_an_upward_import(tmp_path):
    """The checks above can fail: a core module that imports the runtime is reported."""
    fake = tmp_path / "supermask"
    for layer in ("core", "runtime"):
        (fake / layer).mkdir(parents=True)
        (fake / layer / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "runtime" / "job.py").write_text("import supermask.core.nets\n")
    (fake / "core" / "nets.py").write_text("from supermask.runtime import job\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, fake
    try:
        with pytest.raises(AssertionError, match="supermask.core.nets .core. imports supermask.runtime"):
            test_imports_point_down_the_layers_only()
        with pytest.raises(AssertionError, match="import cycles"):
            test_no_import_cycles()
    finally:
        PACKAGE = saved


def test_the_checker_counts_imports_only_type_checkers_follow(tmp_path):
    """A cycle closed by an import under TYPE_CHECKING (or inside a function) is a cycle too."""
    fake = tmp_path / "supermask"
    (fake / "config").mkdir(parents=True)
    for init in (fake / "__init__.py", fake / "config" / "__init__.py"):
        init.write_text("")
    (fake / "config" / "spec.py").write_text("def load():\n    from supermask.config import checks\n")
    (fake / "config" / "checks.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from supermask.config.spec import load\n"
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, fake
    try:
        with pytest.raises(AssertionError, match="supermask.config.checks -> supermask.config.spec"):
            test_no_import_cycles()
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("name", supermask.__all__)
def test_public_api_names_resolve(name):
    assert getattr(supermask, name) is not None


def test_core_imports_without_ray_or_the_runtime():
    import subprocess
    import sys

    code = (
        "import sys, supermask\n"
        "from supermask import BaseSpec, build_base, MaskSpec, SearchConfig, search_mask, evaluate_mask, PackedMasks\n"
        "import supermask.recipes.recipe, supermask.config.spec\n"
        "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.') or m.startswith('supermask.runtime')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    importlib.import_module("supermask.interface.cli")


def test_the_store_actors_never_import_torch(tmp_path):
    """A shard actor of every store kind (and a store's client) needs only numpy and h5py, also when it
    replays its journal after a restart: importing torch there costs every store open seconds of start-up,
    competing with the Train workers that start beside it. (A reservoir imports torch to recover
    attractors, and only then.)"""
    import subprocess
    import sys

    code = f"""
import sys
from pathlib import Path
import numpy as np
import supermask.runtime.shard_actor, supermask.runtime.mask_store
import supermask.runtime.reservoir_store, supermask.runtime.translation_store
from supermask.core.records.packing import TaskMask, pack_masks
from supermask.core.records.translation import TranslationRecord
from supermask.store.maskfile import MaskFile
from supermask.store.reservoir_file import ReservoirFile
from supermask.store.translation_file import TranslationFile

root = Path({str(tmp_path)!r})
mask = TaskMask("m", pack_masks([np.ones((4, 4), bool)]), ["w"], [(4, 4)], [1.0], "base", {{}})
record = TranslationRecord("t", "supermask", {{}}, {{"g_xy/bits": np.zeros(4, np.uint8)}}, base_fingerprint="base")
reservoir = dict(dims=[8], rule="storkey", dtype="fp32", fingerprint="base")
for opened, put in (
    (lambda: MaskFile(root / "m.h5"), lambda f: f.put(mask)),
    (lambda: TranslationFile(root / "t.h5"), lambda f: f.put(record)),
    (lambda: ReservoirFile(root / "r.npz", **reservoir), lambda f: f.put_many([("p", [np.ones(8, bool)], {{}}, {{}})])),
):
    f = opened()
    put(f)
    f.close(compact=False)  # the record stays in the journal: opening again replays it
    f = opened()
    assert f.list() == [f.list()[0]] and f.verify().ok
    f.close()
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
