"""Norm growth and saturation of tiny transformers on formal languages: trained weights and supermasks.

    PYTHONPATH=platform nice -n 15 .venv/bin/python benchmarks/norm_growth.py [--quick] [--workers 2]
        [--device cuda] [--out benchmarks/results/norm_growth.json] [--docs docs/norm_growth]

Measures, on formal-language membership streams (strings of length 2-16 for training, 2-32 for testing):

1. norm against step of trained causal transformers under SGD, Adam and AdamW (a 3 x 3 grid of learning
   rate and weight decay each, `GRID`), with the R^2 of fits against t, sqrt(t) and t^(1/4);
2. the first-version claim: the achievable training accuracy is varied (label noise, language, model
   width) and the norm where training levels off is set against the training accuracy reached;
3. saturation (cosine and argmax agreement at c = 1000) against step, the sweep c = 1..10 at the start
   and end, and the attention census (keys with weight > 1e-5 per head at c = 1000);
4. the same probes on supermask searches over the frozen random transformer, run by the platform
   itself: one StackedSearch per mask method over a stack of languages, probed by core.probes.search_probe's
   SearchProbe exactly as `supermask run` probes it;
5. the probes' overhead as a share of step time, for both.

The trained transformers use this script's own training loop (`LocalTrainedRun`: plain torch.optim
over every parameter, the core probes as hooks), because the platform's trained-weight methods are
not part of it yet; once they are, part 1-3 can run through `StackedSearch` like part 4.

Writes JSON, PNG plots and report.md. One torch thread per process; --workers runs that many processes.
The default (grid) setting is 40 trained runs of 1200 steps and one stack of 4 mask searches: 14 minutes
in one process on the shared 2-core CPU at a load average of 1-3 (expect up to about 40 at a heavy
load); --quick runs 3 optimizer runs instead of the grid and a smaller claim arm, in 400 steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from supermask.config.spec import spec_from_dict
from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.bases.transformer import attention_census, trainable_copy
from supermask.core.evaluate import evaluate_mask
from supermask.core.probes.probe import FIT_FORMS, Probe, ProbeConfig, norm_fits, probe_overhead
from supermask.core.probes.runner import stacked_runner
from supermask.core.probes.search_probe import SearchProbe, probe_batch
from supermask.data.formal_languages import FormalLanguageStream
from supermask.recipes.recipe import Recipe, Workbench

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("norm_growth")
SCALE = 1000.0


@dataclass(frozen=True)
class Run:
    """One training run: what is learned, by what, on which model."""

    kind: str  # "trained" or a mask method ("topk", "threshold")
    language: str = "dyck1"
    optimizer: str = "sgd"
    lr: float = 0.5
    weight_decay: float = 0.0
    d_model: int = 32
    label_noise: float = 0.0
    group: str = "optimizers"
    seed: int = 0

    @property
    def name(self) -> str:
        parts = [self.kind, self.language, self.optimizer, f"lr{self.lr:g}"]
        if self.weight_decay:
            parts.append(f"wd{self.weight_decay:g}")
        if self.d_model != 32:
            parts.append(f"d{self.d_model}")
        if self.label_noise:
            parts.append(f"noise{self.label_noise:g}")
        return "-".join(parts)


@dataclass(frozen=True)
class Setting:
    """The size of the experiment: steps, data and which runs."""

    steps: int
    probe_every: int
    train_size: int
    test_size: int
    batch_size: int
    probe_batch: int
    optimizer_runs: tuple[Run, ...]
    claim_runs: tuple[Run, ...]
    mask_runs: tuple[Run, ...]
    overhead_steps: int


GRID = {  # the App. F-style grid: learning rate x weight decay per optimizer (AdamW: decoupled decay)
    "sgd": ((0.1, 0.5, 1.0), (0.0, 1e-3, 1e-2)),
    "adam": ((3e-4, 1e-3, 3e-3), (0.0, 1e-3, 1e-2)),
    "adamw": ((3e-4, 1e-3, 3e-3), (1e-2, 1e-1, 1.0)),
}


def optimizer_grid(full: bool) -> tuple[Run, ...]:
    if not full:
        return (
            Run("trained", optimizer="sgd", lr=0.5),
            Run("trained", optimizer="adam", lr=1e-3),
            Run("trained", optimizer="adamw", lr=1e-3, weight_decay=0.1),
        )
    return tuple(
        Run("trained", optimizer=opt, lr=lr, weight_decay=wd)
        for opt, (lrs, wds) in GRID.items()
        for lr in lrs
        for wd in wds
    )


def claim_grid(full: bool) -> tuple[Run, ...]:
    """Runs whose achievable training accuracy differs: label noise, language, width (GD, and Adam)."""
    noises = (0.0, 0.1, 0.2, 0.3, 0.4) if full else (0.0, 0.2, 0.4)
    languages = ("anbn", "dyck2", "anbncn", "counting", "parity") if full else ("anbn", "dyck2", "parity")
    widths = (8, 64) if full else (8,)
    sgd = Run("trained", optimizer="sgd", lr=0.5, group="claim")
    runs = [replace(sgd, language="dyck1", label_noise=n) for n in noises]
    runs += [replace(sgd, language=lang) for lang in languages]
    runs += [replace(sgd, language="dyck2", d_model=d) for d in widths]
    if full:  # Adam gets the noise arm only
        adam = Run("trained", optimizer="adam", lr=1e-3, group="claim")
        runs += [replace(adam, language="dyck1", label_noise=n) for n in (0.0, 0.2, 0.4)]
    return tuple(runs)


def mask_grid(full: bool) -> tuple[Run, ...]:
    """Stacked searches: each run's languages ("+"-joined) are the tasks of one StackedSearch."""
    return (Run("topk", language="dyck1+dyck2+anbn+parity", optimizer="sgd", lr=0.1, group="masks"),)


def setting(full: bool) -> Setting:
    """The grid setting (under an hour on a loaded 2-core machine) or the quick one (a few minutes)."""
    if full:
        return Setting(
            1200, 60, 500, 500, 64, 32, optimizer_grid(True), claim_grid(True), mask_grid(True), 100
        )
    return Setting(400, 20, 500, 500, 64, 32, optimizer_grid(False), claim_grid(False), mask_grid(False), 100)


def make_stream(run: Run, s: Setting, label_noise: float | None = None) -> FormalLanguageStream:
    return FormalLanguageStream(
        num_tasks=1,
        seed=run.seed,
        languages=[run.language],
        train_lengths=(2, 16),
        test_lengths=(2, 32),
        train_size=s.train_size,
        test_size=s.test_size,
        label_noise=run.label_noise if label_noise is None else label_noise,
    )


def transformer_options(run: Run) -> dict:
    return {
        "d_model": run.d_model,
        "heads": 2,
        "layers": 2,
        "d_ff": 4 * run.d_model,
        "causal": True,
        "pool": "last",
    }


def base_spec(run: Run, stream: FormalLanguageStream, init: str) -> BaseSpec:
    spec = BaseSpec("transformer", run.seed, init, None, None, transformer_options(run))
    return stream.resolve_base(spec)


def make_optimizer(run: Run, params) -> torch.optim.Optimizer:
    if run.optimizer == "sgd":  # weight decay: L2, added to the gradient
        return torch.optim.SGD(params, lr=run.lr, weight_decay=run.weight_decay)
    if run.optimizer == "adam":
        return torch.optim.Adam(params, lr=run.lr, weight_decay=run.weight_decay)
    if run.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=run.lr, weight_decay=run.weight_decay)
    raise ValueError(f"unknown optimizer {run.optimizer!r}")


def trim(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Drop the columns that are padding in every row (padding only follows real tokens)."""
    return x[:, : int((x != pad).sum(1).max())]


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, pad: int) -> float:
    if len(x) == 0:
        return float("nan")
    correct = sum(
        int((model(trim(x[i : i + 256], pad)).argmax(-1) == y[i : i + 256]).sum())
        for i in range(0, len(x), 256)
    )
    return correct / len(x)


class LocalTrainedRun:
    """A transformer whose weights are trained by this script's own loop (plain torch.optim over every
    parameter), probed by the core probes as a stack of one task."""

    def __init__(self, run: Run, s: Setting, device: str = "cpu") -> None:
        self.run, self.s, self.device = run, s, device
        self.stream = make_stream(run, s)
        task = self.stream.task(0)
        self.train_x, self.train_y = task.train_x.to(device), task.train_y.to(device)
        self.test_x, self.test_y = task.test_x.to(device), task.test_y.to(device)
        self.clean_train_y = make_stream(run, s, label_noise=0.0).task(0).train_y.to(device)
        self.pad = self.stream.pad_id
        self.probe_x = trim(self.train_x[: s.probe_batch], self.pad)
        self.net = trainable_copy(build_base(base_spec(run, self.stream, "kaiming_normal")).net).to(device)
        self.names = [n for n, _ in self.net.named_parameters()]
        self.params = list(self.net.parameters())
        runner = stacked_runner(self.net, self.probe_x[None], self.names, hidden=self.net.hidden_names())
        keep = (self.probe_x != self.pad)[None]
        config = ProbeConfig(every=s.probe_every)
        self.probe = Probe(runner, names=self.names, keep=keep, hidden=self.net.hidden_names(), config=config)
        self.optimizer = make_optimizer(run, self.params)
        self.generator = torch.Generator().manual_seed(run.seed)

    def train_step(self) -> tuple[float, float]:
        idx = torch.randint(0, len(self.train_x), (self.s.batch_size,), generator=self.generator).to(
            self.device
        )
        x, y = trim(self.train_x[idx], self.pad), self.train_y[idx]
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), float((logits.argmax(-1) == y).float().mean())

    def observe(self, step: int) -> dict[str, float]:
        return self.probe.observe(step, [p[None] for p in self.params])[0]

    def sweep(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.probe.sweep([p.detach()[None] for p in self.params]).items()}

    @torch.no_grad()
    def census(self, scale: float = SCALE) -> dict:
        params = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}
        return attention_census(self.net, self.probe_x, params, scale=scale).to_dict()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model, pad = self.net, self.pad
        longer = (self.test_x != pad).sum(1) - 1 > 16
        x, y = self.test_x, self.test_y
        return {
            "train_accuracy": accuracy(model, self.train_x, self.train_y, pad),
            "train_accuracy_clean": accuracy(model, self.train_x, self.clean_train_y, pad),
            "test_accuracy": accuracy(model, x, y, pad),
            "test_accuracy_in_length": accuracy(model, x[~longer], y[~longer], pad),
            "test_accuracy_longer": accuracy(model, x[longer], y[longer], pad),
        }


def levelling(steps: np.ndarray, norms: np.ndarray) -> dict[str, float]:
    """Where the norm ends up: the mean of the last 10% of probes, and whether it has levelled off.

    Levelled off: under 5% of the whole change from the start happened in the last quarter of the
    steps (a sqrt(t) law puts 13% there, a linear one 25%), and the norm moved by more than 1% at all.
    """
    tail = norms[int(0.9 * len(norms)) :]
    quarter = norms[int(0.75 * len(norms))]
    plateau = float(tail.mean())
    change = float(norms[-1] - norms[0])
    share = float((norms[-1] - quarter) / change) if change else float("nan")
    moved = abs(change) > 0.01 * float(norms[0])
    return {
        "initial_norm": float(norms[0]),
        "plateau_norm": plateau,
        "growth_ratio": plateau / float(norms[0]),
        "growth": plateau - float(norms[0]),
        "last_quarter_share": share,
        "levelled_off": bool(moved and abs(share) < 0.05),
    }


def summarise(run: Run, name: str, history: list[dict], seconds: float, parameters: int, **extra) -> dict:
    """One run's (or one stacked task's) result: its probe history, norm fits and saturation ends."""
    steps = np.array([h["step"] for h in history])
    norms = np.array([h["norm"] for h in history])
    result = {
        "run": asdict(run),
        "name": name,
        "seconds": seconds,
        "parameters": parameters,
        "history": [{k: v for k, v in h.items() if "/" not in k and k != "task"} for h in history],
        "layers_start": {k: v for k, v in history[0].items() if "/" in k},
        "layers_end": {k: v for k, v in history[-1].items() if "/" in k},
        "fits": norm_fits(steps, norms)
        if len(norms) >= 3
        else {f: dict.fromkeys(("intercept", "slope", "r2"), math.nan) for f in FIT_FORMS},
        "levelling": levelling(steps, norms),
        "saturation_start": {k: v for k, v in history[0].items() if k.startswith("saturation")},
        "saturation_end": {k: v for k, v in history[-1].items() if k.startswith("saturation")},
        **extra,
    }
    log.info(
        "%-44s %5.1fs  train %.3f  test %.3f  norm %.2f -> %.2f  sat cos %.3f -> %.3f  agree %.3f -> %.3f",
        name, seconds, result["train_accuracy"], result["test_accuracy"], norms[0], norms[-1],
        *(result[f"saturation_{end}"].get(key, math.nan)
          for key in ("saturation_cosine", "saturation_agreement") for end in ("start", "end")),
    )  # fmt: skip
    return result


def train(run: Run, s: Setting, device: str = "cpu") -> list[dict]:
    """A trained run with the local loop: [its result]."""
    torch.manual_seed(run.seed)
    learner = LocalTrainedRun(run, s, device)
    started = time.perf_counter()
    start = {"census_start": learner.census(), "census_start_unscaled": learner.census(1.0)}
    start["sweep_start"] = learner.sweep()
    window: list[tuple[float, float]] = []
    curve = {"step": [], "loss": [], "accuracy": []}
    last_finite: tuple[int, list[torch.Tensor]] | None = None
    diverged = None
    for step in range(s.steps + 1):
        if learner.probe.due(step) or step == s.steps:
            if not math.isfinite(learner.observe(step).get("norm", math.nan)):
                # Diverged: a parameter became inf or NaN. The run stops; what follows (census, sweep,
                # accuracy) is of the last probed finite state, and the result says so.
                learner.probe.history[0].pop()
                diverged = {"last_finite_step": last_finite[0], "detected_at_step": step}
                with torch.no_grad():
                    for p, kept in zip(learner.params, last_finite[1], strict=True):
                        p.copy_(kept)
                log.info("%s diverged between steps %d and %d", run.name, last_finite[0], step)
                break
            last_finite = (step, [p.detach().clone() for p in learner.params])
            if window:
                curve["step"].append(step)
                curve["loss"].append(float(np.mean([w[0] for w in window])))
                curve["accuracy"].append(float(np.mean([w[1] for w in window])))
                window = []
        if step == s.steps:
            break
        window.append(learner.train_step())
    seconds = time.perf_counter() - started
    end = {
        "census_end": learner.census(),
        "census_end_unscaled": learner.census(1.0),
        "sweep_end": learner.sweep(),
    }
    parameters = int(sum(p.numel() for p in learner.params))
    extra = {**start, **end, "curve": curve, **learner.evaluate(), "diverged": diverged}
    return [summarise(run, run.name, learner.probe.history[0], seconds, parameters, **extra)]


def mask_recipe(run: Run, s: Setting) -> Recipe:
    """The platform's recipe of a stacked mask search over the run's languages (one task each)."""
    languages = run.language.split("+")
    mask = {"method": run.kind, **({"density": 0.5} if run.kind == "topk" else {})}
    spec = spec_from_dict(
        {
            "name": f"norm-growth-{run.kind}",
            "stream": {
                "name": "formal_languages",
                "num_tasks": len(languages),
                "seed": run.seed,
                "options": {
                    "languages": languages,
                    "train_lengths": [2, 16],
                    "test_lengths": [2, 32],
                    "train_size": s.train_size,
                    "test_size": s.test_size,
                },
            },
            "base": {
                "arch": "transformer",
                "seed": run.seed,
                "init": "signed_constant",
                "options": transformer_options(run),
            },
            "mask": mask,
            "search": {
                "optimizer": run.optimizer,
                "lr": run.lr,
                "momentum": 0.9,
                "schedule": "constant",
                "iterations": s.steps,
                "batch_size": s.batch_size,
                "seed": run.seed,
            },
            "probes": {"every": s.probe_every, "batch": s.probe_batch},
        }
    )
    return Recipe.from_spec(spec)


def search_masks(run: Run, s: Setting, device: str = "cpu") -> list[dict]:
    """A stacked mask search run by the platform (StackedSearch + SearchProbe): one result per task."""
    torch.manual_seed(run.seed)
    bench = Workbench(mask_recipe(run, s), device)
    ts = list(range(bench.recipe.stream.num_tasks))
    search = bench.new_search(ts)
    probe = SearchProbe(search, bench.recipe.probes)
    net, names = bench.base.net, bench.base.masked_names
    tokens = probe_batch(search, s.probe_batch)

    def effective() -> list[torch.Tensor]:
        with torch.no_grad():
            return [w * m for w, m in zip(bench.base.weights(), search.method(), strict=True)]

    def census(k: int, scale: float) -> dict:
        params = {n: e[k] for n, e in zip(names, effective(), strict=True)}
        return attention_census(net, tokens[k], params, scale=scale).to_dict()

    def sweeps() -> list[dict]:
        values = probe.probe.sweep(effective())
        return [{key: float(v[k]) for key, v in values.items()} for k in ts]

    started = time.perf_counter()
    start = [{"census_start": census(k, SCALE), "census_start_unscaled": census(k, 1.0)} for k in ts]
    sweep_start = sweeps()
    probe.start()
    while not search.done:  # stepped here rather than by search.run(), which would finalize the masks
        search.run_step([probe])
    end = [{"census_end": census(k, SCALE), "census_end_unscaled": census(k, 1.0)} for k in ts]
    sweep_end = sweeps()
    seconds = time.perf_counter() - started
    masks = search.results()
    results = []
    for k, (t, mask) in enumerate(zip(ts, masks, strict=True)):
        task = bench.task(t)
        longer = (task.test_x != bench.stream.pad_id).sum(1) - 1 > 16

        def acc(x, y, mask=mask):
            return evaluate_mask(bench.base, mask, x, y, num_classes=2, device=device).real_classes

        language = bench.stream.language(t).name
        extra = {
            **start[k],
            **end[k],
            "sweep_start": sweep_start[k],
            "sweep_end": sweep_end[k],
            "curve": mask.metrics["train_curve"],
            "train_accuracy": acc(task.train_x, task.train_y),
            "train_accuracy_clean": acc(task.train_x, task.train_y),
            "test_accuracy": acc(task.test_x, task.test_y),
            "test_accuracy_in_length": acc(task.test_x[~longer], task.test_y[~longer]),
            "test_accuracy_longer": acc(task.test_x[longer], task.test_y[longer]),
            "stacked_tasks": len(ts),
            "probe_seconds": probe.seconds,
            "search_seconds": search.seconds,
            "probe_overhead": probe.overhead(),
        }
        name = f"{run.kind}-{language}-{run.optimizer}-lr{run.lr:g}"
        parameters = int(sum(w.numel() for w in bench.base.weights()))
        results.append(summarise(run, name, probe.probe.history[k], seconds, parameters, **extra))
    return results


def learn(run: Run, s: Setting, device: str) -> list[dict]:
    return train(run, s, device) if run.kind == "trained" else search_masks(run, s, device)


def _worker_init() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)


def learn_all(s: Setting, workers: int, device: str) -> dict[Run, list[dict]]:
    """Learn every distinct run of the setting once (a run in two groups once), in `workers` processes;
    the mask stacks, the longest jobs, go first."""
    runs = list(dict.fromkeys(replace(r, group="") for r in (*s.mask_runs, *s.optimizer_runs, *s.claim_runs)))
    if workers <= 1:
        return {r: learn(r, s, device) for r in runs}
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_worker_init) as pool:
        done = pool.starmap(learn, [(r, s, device) for r in runs], chunksize=1)
    return dict(zip(runs, done, strict=True))


def overhead(s: Setting, device: str) -> list[dict]:
    """The probes' time as a share of the training steps' time in the local trained loop."""
    rows = []
    run = Run("trained", optimizer="adam", lr=1e-3)
    for every in (10, 25):
        learner = LocalTrainedRun(run, s, device)
        timing = probe_overhead(learner.train_step, learner.observe, steps=s.overhead_steps, every=every)
        rows.append(
            {
                "kind": "trained (local loop)",
                "probe_batch": s.probe_batch,
                "batch_size": s.batch_size,
                **timing,
            }
        )
        log.info("overhead trained every %2d: %.1f%% (step %.2f ms, probe %.2f ms)", every,
                 100 * timing["overhead"], 1e3 * timing["step_seconds"], 1e3 * timing["probe_seconds"])  # fmt: skip
    return rows


def ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def correlations(runs: list[dict]) -> dict:
    acc = np.array([r["train_accuracy"] for r in runs])
    out = {"n": len(runs)}
    for key in ("plateau_norm", "growth_ratio", "growth"):
        y = np.array([r["levelling"][key] for r in runs])
        out[key] = {
            "pearson": float(np.corrcoef(acc, y)[0, 1]),
            "spearman": float(np.corrcoef(ranks(acc), ranks(y))[0, 1]),
        }
    return out


def json_safe(value):
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 optimizer runs, not the grid (a few minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/norm_growth.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/norm_growth")
    parser.add_argument("--workers", type=int, default=1, help="training processes (one torch thread each)")
    parser.add_argument("--device", default="cpu", help="torch device of every run, e.g. cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    s = setting(full=not args.quick)
    started = time.perf_counter()
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU only"
    results = {
        "setting": "quick" if args.quick else "grid",
        "command": " ".join(["benchmarks/norm_growth.py", *(["--quick"] if args.quick else []), *([f"--workers {args.workers}"] if args.workers > 1 else []), *([f"--device {args.device}"] if args.device != "cpu" else [])]),
        "workers": args.workers,
        "config": {k: v for k, v in asdict(s).items() if not k.endswith("_runs")},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "device": args.device, "device_name": device_name},
        "overhead": overhead(s, args.device),  # measured first, alone
    }  # fmt: skip
    done = learn_all(s, args.workers, args.device)
    for group, runs in (("optimizers", s.optimizer_runs), ("claim", s.claim_runs), ("masks", s.mask_runs)):
        results[group] = [{**r, "run": asdict(run)} for run in runs for r in done[replace(run, group="")]]
    for run in s.mask_runs:  # the platform's own measure: probe time over the rest of the stacked search
        r = done[replace(run, group="")][0]
        results["overhead"].append(
            {
                "kind": f"{run.kind} masks, stack of {r['stacked_tasks']} (StackedSearch + SearchProbe)",
                "every": float(s.probe_every),
                "step_seconds": (r["search_seconds"] - r["probe_seconds"]) / s.steps,
                "probe_seconds": r["probe_seconds"] / max(s.steps // s.probe_every, 1),
                "overhead": r["probe_overhead"],
            }
        )
    finite = [r for r in results["claim"] if not r.get("diverged")]  # a diverged run has no end norm
    results["claim_correlation"] = correlations(finite)
    results["claim_correlation_by_optimizer"] = {
        opt: correlations([r for r in finite if r["run"]["optimizer"] == opt])
        for opt in sorted({r["run"]["optimizer"] for r in finite})
    }
    results["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(results), indent=1))
    from norm_growth_report import write_report  # beside this script

    write_report(results, args.docs)
    log.info("wrote %s and %s in %.0f s", args.out, args.docs / "report.md", results["seconds"])


if __name__ == "__main__":
    main()
