"""What the probes cost in the platform's own loop: the same stacked search with and without them.

    PYTHONPATH=platform nice -n 15 .venv/bin/python benchmarks/probe_overhead.py [--steps 100]
        [--every 25 50] [--device cuda] [--out benchmarks/results/probe_overhead.json]

For each spec (PermutedMNIST on fc1024 as `supermask run tasks/permuted_mnist.yaml` learns it, and the
formal-language stream over the frozen random transformer) two identical StackedSearches of K tasks
are stepped one step each in turn (the order alternating), one with the SearchProbe hook (the spec's
`probes` section, at the cadence given) and one without, so a busy machine slows both alike.
Overhead = (time with - time without) / time without; the probe's own clock (SearchProbe.seconds over
the rest of the search's time) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from supermask.config.spec import load_spec
from supermask.core.search_probe import SearchProbe
from supermask.recipes.recipe import Recipe, Workbench

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("probe_overhead")
SPECS = ("tasks/permuted_mnist.yaml", "tasks/formal_languages.yaml")


def measure(path: str, steps: int, tasks: int, device: str, every: int) -> dict:
    recipe = Recipe.from_spec(load_spec(ROOT / path, [f"search.iterations={steps}", f"probes.every={every}"]))
    bench = Workbench(recipe, device)
    ts = list(range(tasks))
    probed, plain = bench.new_search(ts), bench.new_search(ts)
    probe = SearchProbe(probed, recipe.probes)
    probe.start()
    every = recipe.probes.every
    seconds = {"with": 0.0, "without": 0.0}
    for _ in range(2):  # warm-up steps, untimed
        probed.run_step([probe])
        plain.run_step()
    runs = (("with", probed, [probe]), ("without", plain, []))
    while not probed.done:  # one step of each in turn, the order alternating, so load hits both alike
        for key, search, hooks in runs if probed.step % 2 == 0 else runs[::-1]:
            started = time.perf_counter()
            search.run_step(hooks)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[key] += time.perf_counter() - started
    row = {
        "spec": path,
        "arch": recipe.base.arch,
        "masked_weights": recipe.num_weights,
        "stacked_tasks": tasks,
        "steps": steps,
        "every": every,
        "probe_batch": recipe.probes.batch,
        "seconds_with": seconds["with"],
        "seconds_without": seconds["without"],
        "overhead": (seconds["with"] - seconds["without"]) / seconds["without"],
        "probe_clock_overhead": probe.overhead(),
        "probes": probe.probes,
    }
    log.info(
        "%s (K=%d, %d steps, a probe every %d): %.1f s with probes, %.1f s without: overhead %.1f%% "
        "(the probe's own clock: %.1f%%)",
        path, tasks, steps, every, seconds["with"], seconds["without"], 100 * row["overhead"],
        100 * row["probe_clock_overhead"],
    )  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=3, help="tasks searched as one stack")
    parser.add_argument("--every", type=int, nargs="+", default=[25], help="probe cadences to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/probe_overhead.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()
    rows = [
        measure(path, args.steps, args.tasks, args.device, every) for path in SPECS for every in args.every
    ]
    result = {
        "device": args.device,
        "device_name": device_name or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
