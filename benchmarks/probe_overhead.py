"""What the probes cost in the platform's own loop: the same stacked search with and without them.

    PYTHONPATH=platform nice -n 15 .venv/bin/python benchmarks/probe_overhead.py [--steps 100]
        [--every 25 50] [--repeats 5] [--specs tasks/permuted_mnist.yaml] [--device cuda]
        [--out benchmarks/results/probe_overhead.json]

For each spec (PermutedMNIST on fc1024 as `supermask run tasks/permuted_mnist.yaml` learns it, and the
formal-language stream over the frozen random transformer) two identical StackedSearches of K tasks
are stepped one step each in turn (the order alternating), one with the SearchProbe hook (the spec's
`probes` section, at the cadence given) and one without, so a busy machine slows both alike.
Overhead = (time with - time without) / time without; beside it a paired estimate robust to load
spikes (the probe steps' paired differences in full, the other steps' by their median paired
difference, over the median step without probes) and the probe's own clock (SearchProbe.seconds over
the rest of the search's time). Each (spec, cadence) is measured `--repeats` times, the repeats of all
rows interleaved, with fresh searches each time and the probed one made first in every other repeat
(two identical searches differ by a percent or two by where their memory lies); a row gives every
repeat and their median, min and max (a loaded machine moves single measurements by several points).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from supermask.config.spec import load_spec
from supermask.core.probes.search_probe import SearchProbe
from supermask.recipes.recipe import Recipe, Workbench

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("probe_overhead")
SPECS = ("tasks/permuted_mnist.yaml", "tasks/formal_languages.yaml")


def measure(path: str, steps: int, tasks: int, device: str, every: int, probed_first: bool = True) -> dict:
    recipe = Recipe.from_spec(load_spec(ROOT / path, [f"search.iterations={steps}", f"probes.every={every}"]))
    bench = Workbench(recipe, device)
    ts = list(range(tasks))
    first, second = bench.new_search(ts), bench.new_search(ts)
    probed, plain = (first, second) if probed_first else (second, first)
    probe = SearchProbe(probed, recipe.probes)
    probe.start()
    every = recipe.probes.every
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(2):  # warm-up steps, untimed
        probed.run_step([probe])
        plain.run_step()
    runs = (("with", probed, [probe]), ("without", plain, []))
    probe_steps = []  # indices (into times) of the steps that ended with a probe
    while not probed.done:  # one step of each in turn, the order alternating, so load hits both alike
        if probe.probe.due(probed.step + 1) or probed.step + 1 == probed.steps:
            probe_steps.append(len(times["with"]))
        for key, search, hooks in runs if probed.step % 2 == 0 else runs[::-1]:
            started = time.perf_counter()
            search.run_step(hooks)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - started)
    seconds = {key: sum(values) for key, values in times.items()}
    # Robust to load spikes that hit one step of a pair: the probe steps' paired differences in full,
    # every other step's by the median paired difference, over the median step without probes.
    diffs = [a - b for a, b in zip(times["with"], times["without"], strict=True)]
    others = [d for i, d in enumerate(diffs) if i not in probe_steps]
    extra = sum(diffs[i] for i in probe_steps) + len(others) * statistics.median(others)
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
        "paired_overhead": extra / (len(diffs) * statistics.median(times["without"])),
        "probe_clock_overhead": probe.overhead(),
        "probes": probe.probes,
        "probed_search_made_first": probed_first,
    }
    log.info(
        "%s (K=%d, %d steps, a probe every %d): %.1f s with probes, %.1f s without: overhead %.1f%% "
        "(paired, robust to spikes: %.1f%%; the probe's own clock: %.1f%%)",
        path, tasks, steps, every, seconds["with"], seconds["without"], 100 * row["overhead"],
        100 * row["paired_overhead"], 100 * row["probe_clock_overhead"],
    )  # fmt: skip
    return row


def summarise(repeats: list[dict]) -> dict:
    """One row of a (spec, cadence): the first repeat's description, every repeat's numbers, their spread."""
    row = {k: v for k, v in repeats[0].items() if k not in ("seconds_with", "seconds_without")}
    for key in ("overhead", "paired_overhead", "probe_clock_overhead"):
        values = [r[key] for r in repeats]
        row[key] = statistics.median(values)
        row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        row[f"{key}_repeats"] = values
    row["seconds_with"] = [r["seconds_with"] for r in repeats]
    row["seconds_without"] = [r["seconds_without"] for r in repeats]
    log.info(
        "%s every %d, %d repeats: overhead median %.1f%% (min %.1f%%, max %.1f%%); paired median %.1f%% "
        "(min %.1f%%, max %.1f%%); the probe's own clock median %.1f%%",
        row["spec"], row["every"], len(repeats), 100 * row["overhead"], 100 * row["overhead_min"],
        100 * row["overhead_max"], 100 * row["paired_overhead"], 100 * row["paired_overhead_min"],
        100 * row["paired_overhead_max"], 100 * row["probe_clock_overhead"],
    )  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=3, help="tasks searched as one stack")
    parser.add_argument("--every", type=int, nargs="+", default=[25], help="probe cadences to measure")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each (spec, cadence)")
    parser.add_argument("--specs", nargs="+", default=list(SPECS), help="task specs to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/probe_overhead.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()
    cases = [(path, every) for path in args.specs for every in args.every]
    repeats: dict[tuple[str, int], list[dict]] = {case: [] for case in cases}
    for r in range(args.repeats):  # interleaved, so a change in the machine's load spreads over every case
        for path, every in cases:
            repeats[path, every].append(measure(path, args.steps, args.tasks, args.device, every, r % 2 == 0))
    result = {
        "device": args.device,
        "device_name": device_name or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": "benchmarks/probe_overhead.py " + " ".join(sys.argv[1:]),
        "load_average_after": os.getloadavg(),
        "rows": [summarise(repeats[case]) for case in cases],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
