"""Norm growth and saturation of tiny transformers on formal languages: trained weights and supermasks.

    .venv/bin/python benchmarks/norm_growth.py [--quick] [--out benchmarks/results/norm_growth.json]
        [--docs docs/norm_growth]

Trains small causal transformers (weights trained directly, a plain loop with the core probes as
hooks) on formal-language membership streams and measures:

1. norm against step under SGD, Adam and AdamW (a small grid of learning rate and weight decay), with
   the R^2 of fits against t, sqrt(t) and t^(1/4);
2. the first-version claim: the achievable training accuracy is varied (label noise, language, model
   width) and the norm where training levels off is set against the training accuracy reached;
3. saturation (cosine and argmax agreement at c = 1000) against step, the sweep c = 1..10 at the start
   and end, and the attention census (keys with weight > 1e-5 per head at c = 1000);
4. the same probes on supermask searches (top-k and threshold masks) over the frozen random transformer;
5. the probes' overhead as a share of step time.

Writes JSON, PNG plots and report.md. CPU only, one thread; the full setting runs in well under an hour
on 2 cores, --quick in a few minutes.
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

from supermask.core.masks import MaskSpec, build_mask_method
from supermask.core.nets import BaseSpec, build_base
from supermask.core.probes import Probe, ProbeConfig, base_runner, module_runner, norm_fits, probe_overhead
from supermask.core.transformer import attention_census, trainable_copy
from supermask.data.formal_languages import FormalLanguageStream

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


def optimizer_grid(full: bool) -> tuple[Run, ...]:
    if not full:
        return (
            Run("trained", optimizer="sgd", lr=0.5),
            Run("trained", optimizer="adam", lr=1e-3),
            Run("trained", optimizer="adamw", lr=1e-3, weight_decay=0.1),
        )
    grid = [Run("trained", optimizer="sgd", lr=lr) for lr in (0.1, 0.5)]
    grid += [Run("trained", optimizer="adam", lr=lr) for lr in (1e-3, 3e-3)]
    grid += [
        Run("trained", optimizer="adamw", lr=lr, weight_decay=wd)
        for lr, wd in ((1e-3, 0.01), (1e-3, 0.1), (3e-3, 0.1))
    ]
    grid += [
        replace(r, language="dyck2") for r in grid if r.lr in (0.5, 1e-3) and r.weight_decay in (0.0, 0.1)
    ]
    return tuple(grid)


def claim_grid(full: bool) -> tuple[Run, ...]:
    optimizers = [("sgd", 0.5), ("adam", 1e-3)] if full else [("sgd", 0.5)]
    noises = (0.0, 0.1, 0.2, 0.3, 0.4) if full else (0.0, 0.2, 0.4)
    languages = (
        ("anbn", "dyck1", "dyck2", "anbncn", "counting", "parity") if full else ("anbn", "dyck2", "parity")
    )
    widths = (8, 16, 32, 64) if full else (8, 32)
    runs = []
    for opt, lr in optimizers:
        base = Run("trained", optimizer=opt, lr=lr, group="claim")
        runs += [replace(base, language="dyck1", label_noise=n) for n in noises]
        if opt == "sgd":  # the claim is about gradient descent; Adam gets the noise and width arms only
            runs += [replace(base, language=lang) for lang in languages if lang != "dyck1"]
        runs += [replace(base, language="dyck2", d_model=d) for d in widths if d != 32 or opt != "sgd"]
    return tuple(runs)


def mask_grid(full: bool) -> tuple[Run, ...]:
    runs = [
        Run("topk", optimizer="sgd", lr=0.1, group="masks"),
        Run("topk", language="dyck2", optimizer="sgd", lr=0.1, group="masks"),
    ]
    if full:
        runs += [
            Run("threshold", optimizer="adam", lr=1e-2, group="masks"),
            Run("topk", language="anbn", optimizer="sgd", lr=0.1, group="masks"),
        ]
    return tuple(runs)


def setting(full: bool) -> Setting:
    if full:
        return Setting(
            2000, 25, 1000, 1000, 64, 32, optimizer_grid(True), claim_grid(True), mask_grid(True), 300
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


def base_spec(run: Run, stream: FormalLanguageStream, init: str) -> BaseSpec:
    options = {
        "vocab_size": stream.vocab_size,
        "d_model": run.d_model,
        "heads": 2,
        "layers": 2,
        "d_ff": 4 * run.d_model,
        "causal": True,
        "pool": "last",
        "output": "sequence",
    }
    return BaseSpec("transformer", run.seed, init, 2, None, options, stream.input_shape)


def make_optimizer(run: Run, params) -> torch.optim.Optimizer:
    if run.optimizer == "sgd":
        return torch.optim.SGD(params, lr=run.lr, momentum=0.9 if run.kind != "trained" else 0.0)
    if run.optimizer == "adam":
        return torch.optim.Adam(params, lr=run.lr)
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


class Learner:
    """One run's model, its trained tensors and what the probe sees, trained or mask-searched."""

    def __init__(self, run: Run, s: Setting) -> None:
        self.run, self.s = run, s
        self.stream = make_stream(run, s)
        self.task = self.stream.task(0)
        self.clean_train_y = make_stream(run, s, label_noise=0.0).task(0).train_y
        self.pad = self.stream.pad_id
        self.probe_x = trim(self.task.train_x[: s.probe_batch], self.pad)
        keep = self.probe_x != self.stream.pad_id
        if run.kind == "trained":
            self.net = trainable_copy(build_base(base_spec(run, self.stream, "kaiming_normal")).net)
            self.names = [n for n, _ in self.net.named_parameters()]
            self.params = list(self.net.parameters())
            runner = module_runner(
                self.net, self.probe_x, self.names, hidden=self.net.hidden_names(), keep=keep
            )
            self.probe = Probe(runner, names=self.names, config=ProbeConfig(every=s.probe_every))
            self.method = None
        else:
            self.base = build_base(base_spec(run, self.stream, "signed_constant"))
            self.net = self.base.net
            density = 0.5 if run.kind == "topk" else None
            self.method = build_mask_method(
                MaskSpec(run.kind, density=density), self.base.layer_shapes, seed=run.seed
            )
            self.names = list(self.base.masked_names)
            self.params = list(self.method.scores)
            runner = base_runner(self.base, self.probe_x, hidden=self.net.hidden_names(), keep=keep)
            self.probe = Probe(
                runner, names=self.names, frozen=self.base.weights(), config=ProbeConfig(every=s.probe_every)
            )
        self.optimizer = make_optimizer(run, self.params)
        self.generator = torch.Generator().manual_seed(run.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method is None:
            return self.net(x)
        return self.base(x, self.method())

    def train_step(self) -> tuple[float, float]:
        idx = torch.randint(0, len(self.task.train_x), (self.s.batch_size,), generator=self.generator)
        x, y = trim(self.task.train_x[idx], self.pad), self.task.train_y[idx]
        logits = self.forward(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.method is not None:
            self.method.after_step()
        return float(loss.detach()), float((logits.argmax(-1) == y).float().mean())

    @torch.no_grad()
    def effective(self) -> list[torch.Tensor]:
        if self.method is None:
            return [p.detach() for p in self.params]
        return [w * m for w, m in zip(self.base.weights(), self.method(), strict=True)]

    @torch.no_grad()
    def observe(self, step: int) -> dict[str, float]:
        masks = None if self.method is None else [m.detach() for m in self.method()]
        return self.probe.observe(step, self.params, masks=masks)

    @torch.no_grad()
    def census(self, scale: float = SCALE) -> dict:
        params = dict(zip(self.names, self.effective(), strict=True))
        return attention_census(self.net, self.probe_x, params, scale=scale).to_dict()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model = self.forward
        test_len = (self.task.test_x != self.stream.pad_id).sum(1) - 1
        longer = test_len > 16
        x, y, pad = self.task.test_x, self.task.test_y, self.pad
        return {
            "train_accuracy": accuracy(model, self.task.train_x, self.task.train_y, pad),
            "train_accuracy_clean": accuracy(model, self.task.train_x, self.clean_train_y, pad),
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


def train(run: Run, s: Setting) -> dict:
    torch.manual_seed(run.seed)
    learner = Learner(run, s)
    started = time.perf_counter()
    start_census, start_census_unscaled = learner.census(), learner.census(1.0)
    start_sweep = learner.probe.sweep(learner.effective())
    window: list[tuple[float, float]] = []
    curve = {"step": [], "loss": [], "accuracy": []}
    for step in range(s.steps + 1):
        if learner.probe.due(step) or step == s.steps:
            learner.observe(step)
            if window:
                curve["step"].append(step)
                curve["loss"].append(float(np.mean([w[0] for w in window])))
                curve["accuracy"].append(float(np.mean([w[1] for w in window])))
                window = []
        if step == s.steps:
            break
        window.append(learner.train_step())
    seconds = time.perf_counter() - started
    steps, norms = learner.probe.series("norm")
    result = {
        "run": asdict(run),
        "name": run.name,
        "seconds": seconds,
        "parameters": int(sum(p.numel() for p in learner.params)),
        "history": [{k: v for k, v in h.items() if "/" not in k} for h in learner.probe.history],
        "layers_start": {k: v for k, v in learner.probe.history[0].items() if "/" in k},
        "layers_end": {k: v for k, v in learner.probe.history[-1].items() if "/" in k},
        "curve": curve,
        "fits": norm_fits(steps, norms),
        "levelling": levelling(steps, norms),
        "saturation_start": {k: v for k, v in learner.probe.history[0].items() if k.startswith("saturation")},
        "saturation_end": {k: v for k, v in learner.probe.history[-1].items() if k.startswith("saturation")},
        "sweep_start": start_sweep,
        "sweep_end": learner.probe.sweep(learner.effective()),
        "census_start": start_census,
        "census_start_unscaled": start_census_unscaled,
        "census_end": learner.census(),
        "census_end_unscaled": learner.census(1.0),
        **learner.evaluate(),
    }
    log.info(
        "%-44s %5.1fs  train %.3f  test %.3f  norm %.2f -> %.2f  sat cos %.3f -> %.3f  agree %.3f -> %.3f",
        run.name, seconds, result["train_accuracy"], result["test_accuracy"], norms[0], norms[-1],
        result["saturation_start"]["saturation_cosine"], result["saturation_end"]["saturation_cosine"],
        result["saturation_start"]["saturation_agreement"], result["saturation_end"]["saturation_agreement"],
    )  # fmt: skip
    return result


def _worker_init() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)


def train_all(s: Setting, workers: int) -> dict[Run, dict]:
    """Train every distinct run of the setting once (a run in two groups is trained once), in `workers` processes."""
    runs = list(dict.fromkeys(replace(r, group="") for r in (*s.optimizer_runs, *s.claim_runs, *s.mask_runs)))
    if workers <= 1:
        return {r: train(r, s) for r in runs}
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_worker_init) as pool:
        return dict(zip(runs, pool.starmap(train, [(r, s) for r in runs]), strict=True))


def overhead(s: Setting) -> list[dict]:
    """The probes' time as a share of the training steps' time, for a trained run and a mask search."""
    rows = []
    for run in (Run("trained", optimizer="adam", lr=1e-3), Run("topk", optimizer="sgd", lr=0.1)):
        for every in (10, 25):
            learner = Learner(run, s)
            timing = probe_overhead(learner.train_step, learner.observe, steps=s.overhead_steps, every=every)
            rows.append(
                {"kind": run.kind, "probe_batch": s.probe_batch, "batch_size": s.batch_size, **timing}
            )
            log.info("overhead %-8s every %2d: %.1f%% (step %.2f ms, probe %.2f ms)", run.kind, every,
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
    parser.add_argument("--quick", action="store_true", help="the small setting (a few minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/norm_growth.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/norm_growth")
    parser.add_argument("--workers", type=int, default=1, help="training processes (one torch thread each)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    s = setting(full=not args.quick)
    started = time.perf_counter()
    results = {
        "setting": "quick" if args.quick else "full",
        "command": " ".join(["benchmarks/norm_growth.py", *(["--quick"] if args.quick else []), *([f"--workers {args.workers}"] if args.workers > 1 else [])]),
        "workers": args.workers,
        "config": {k: v for k, v in asdict(s).items() if not k.endswith("_runs")},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "overhead": overhead(s),  # measured first, alone
    }  # fmt: skip
    done = train_all(s, args.workers)
    for group, runs in (("optimizers", s.optimizer_runs), ("claim", s.claim_runs), ("masks", s.mask_runs)):
        results[group] = [{**done[replace(r, group="")], "run": asdict(r)} for r in runs]
    results["claim_correlation"] = correlations(results["claim"])
    results["claim_correlation_by_optimizer"] = {
        opt: correlations([r for r in results["claim"] if r["run"]["optimizer"] == opt])
        for opt in sorted({r["run"]["optimizer"] for r in results["claim"]})
    }
    results["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(results), indent=1))
    from norm_growth_report import write_report  # beside this script

    write_report(results, args.docs)
    log.info("wrote %s and %s in %.0f s", args.out, args.docs / "report.md", results["seconds"])


if __name__ == "__main__":
    main()
