"""GANimorph on the toy shape-deformation data: train, measure outline Hausdorff distances, draw samples.

    .venv/bin/python benchmarks/toy_shapes.py --steps 1000                     # one configuration
    .venv/bin/python benchmarks/toy_shapes.py --ablation --jobs 2              # 3 discriminators x 2 cycle losses x seeds
    .venv/bin/python benchmarks/toy_shapes.py --supermask --jobs 2             # trained vs supermask generators

Each configuration trains one unpaired translation task (both directions) on `--train-size` images per
domain for `--steps` generator steps, measuring it every `--eval-every` steps and at the end: it
translates `--test-size` held-out pairs both ways and scores the outlines of the translations against
the true polygons (Hausdorff distances in unit-square coordinates, read from the images, never
annotated). Two references put the numbers in scale: `identity` (the input returned unchanged: what
drawing no shape change scores; for X -> Y it is about the best a translation blind to the grid can
do, since the deformations average to none) and `truth` (the true target image: the outline
extraction's own error).

Every configuration keeps a checkpoint and, once finished, its result in `--work-dir`, so a rerun
(after a kill, or with more seeds) trains only what is missing. Writes JSON (default
benchmarks/results/toy_shapes.json), a sample grid per configuration and, for several
configurations, a bar chart (default docs/toy_shapes/): each grid row is input, translation, cycle
reconstruction and truth, for X -> Y on the left and Y -> X on the right.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from supermask.core.masks import MaskSpec
from supermask.core.translation import TranslationSettings, TranslationTrainer, UnpairedImages
from supermask.core.translation.evaluation import (
    DIRECTIONS,
    TranslationTestSet,
    evaluate_translation,
    references,
    sample_grid,
)
from supermask.core.translation.records import record_from_trainer
from supermask.data.toy_shapes import POLYGON_CHANNEL, ToyShapes, ToyShapesConfig
from supermask.recipes.checkpoints import load_checkpoint, save_checkpoint
from supermask.recipes.translation import save_png

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("toy_shapes")
STATS = ("symmetric_mean", "truth_to_output_mean", "output_to_truth_mean", "detected_fraction")


def load_data(args) -> tuple[UnpairedImages, TranslationTestSet, dict]:
    """The training images and test pairs, generated once and cached in the work folder."""
    cache = (
        Path(args.work_dir)
        / f"data-{args.resolution}px-seed{args.data_seed}-{args.train_size}-{args.test_size}.pt"
    )
    toy = ToyShapes(ToyShapesConfig(resolution=args.resolution, seed=args.data_seed))
    if cache.exists():
        saved = load_checkpoint(cache)
    else:
        train_x, train_y = toy.unpaired(args.train_size)
        test_x, test_y, shapes = toy.test_pairs(args.test_size)
        saved = {
            "train_x": torch.from_numpy(train_x),
            "train_y": torch.from_numpy(train_y),
            "test_x": torch.from_numpy(test_x),
            "test_y": torch.from_numpy(test_y),
            "regular": torch.from_numpy(
                np.stack(
                    [
                        np.pad(s.regular_polygon(), ((0, 7 - s.sides), (0, 0)), constant_values=np.nan)
                        for s in shapes
                    ]
                )
            ),
            "deformed": torch.from_numpy(
                np.stack(
                    [
                        np.pad(s.deformed_polygon(), ((0, 7 - s.sides), (0, 0)), constant_values=np.nan)
                        for s in shapes
                    ]
                )
            ),
        }
        save_checkpoint(saved, cache)

    def polygons(t: torch.Tensor) -> list[np.ndarray]:
        return [p[~np.isnan(p).any(axis=1)] for p in t.numpy()]

    test = TranslationTestSet(
        saved["test_x"],
        saved["test_y"],
        polygons(saved["regular"]),
        polygons(saved["deformed"]),
        channel=POLYGON_CHANNEL,
        paired=True,
    )
    return UnpairedImages(saved["train_x"], saved["train_y"]), test, dataclasses.asdict(toy.config)


def config_name(c: dict, resolution: int) -> str:
    method = "trained" if c["method"] == "trained" else f"supermask{c['density']:g}"
    return f"{resolution}px-{method}-w{c['width']}-{c['discriminator']}-{c['cycle']}-seed{c['seed']}"


def run_config(c: dict, args) -> dict:
    """Train one configuration (resuming from its checkpoint) and measure it; the result is cached."""
    torch.set_num_threads(args.threads)
    name = config_name(c, args.resolution)
    work = Path(args.work_dir)
    done = work / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, test, _ = load_data(args)
    settings = TranslationSettings(
        resolution=args.resolution,
        seed=c["seed"],
        width=c["width"],
        disc_width=c["disc_width"],
        blocks=args.blocks,
        activation=args.activation,
        discriminator=c["discriminator"],
        cycle_loss=c["cycle"],
        batch_size=args.batch,
        lr=args.lr,
        steps=args.steps,
        method=c["method"],
        free_params=args.free_params,
        mask_discriminator=not args.trained_discriminator,
    )
    mask = MaskSpec("topk", c["density"]) if c["method"] == "supermask" else None
    trainer = TranslationTrainer(settings, mask=mask)
    ckpt = work / f"{name}.pt"
    state = load_checkpoint(ckpt)
    evals, spent = [], 0.0
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        evals, spent = state["evals"], state["seconds"]
        log.info("%s: resumed at step %d", name, trainer.step)
    xy = lambda imgs: trainer.translate(imgs, "xy")  # noqa: E731
    yx = lambda imgs: trainer.translate(imgs, "yx")  # noqa: E731
    started, last_save = time.perf_counter(), time.perf_counter()

    def on_step(m: dict) -> None:
        nonlocal last_save
        step = trainer.step
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            scores = evaluate_translation(xy, yx, test.head(args.eval_size))
            evals.append(
                {
                    "step": step,
                    "hausdorff_score": scores["hausdorff_score"],
                    **{d: scores[d]["symmetric_mean"] for d in DIRECTIONS},
                }
            )
            log.info(
                "%s step %d: X->Y %.3f Y->X %.3f (g_loss %.3f)",
                name,
                step,
                evals[-1]["x_to_y"],
                evals[-1]["y_to_x"],
                m["g_loss"],
            )
        if time.perf_counter() - last_save > args.checkpoint_seconds:
            state = {
                "trainer": trainer.state_dict(),
                "evals": evals,
                "seconds": spent + time.perf_counter() - started,
            }
            save_checkpoint(state, ckpt)
            last_save = time.perf_counter()

    trainer.run(data, args.steps, on_step=on_step)
    seconds = spent + time.perf_counter() - started
    scores = evaluate_translation(xy, yx, test)
    evals.append(
        {
            "step": trainer.step,
            "hausdorff_score": scores["hausdorff_score"],
            **{d: scores[d]["symmetric_mean"] for d in DIRECTIONS},
        }
    )
    png = Path(args.docs) / f"{name}.png"
    save_png(sample_grid(xy, yx, test, args.samples, scale=max(1, 128 // args.resolution)), png)
    record = record_from_trainer(trainer, name)
    result = {
        "name": name,
        "config": c,
        "settings": settings.to_dict(),
        "steps": trainer.step,
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, trainer.step),
        "bytes_per_task": record.nbytes,
        "generator_weights": sum(
            p.numel() for n, p in trainer.g_xy.named_parameters() if n.endswith("weight")
        )
        * 2
        if c["method"] == "trained"
        else sum(p.numel() for n, p in trainer.g_xy.net.named_parameters() if n in trainer.g_xy.masked_names)
        * 2,
        "scores": scores,
        "evals": evals,
        "samples_png": str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png),
    }
    done.write_text(json.dumps(plain(result), indent=1))
    ckpt.unlink(missing_ok=True)
    log.info(
        "%s: X->Y %.3f, Y->X %.3f in %.0f s",
        name,
        scores["x_to_y"]["symmetric_mean"],
        scores["y_to_x"]["symmetric_mean"],
        seconds,
    )
    return plain(result)


def group_key(r: dict) -> tuple:
    c = r["config"]
    return (
        c["method"],
        c["density"] if c["method"] == "supermask" else None,
        c["width"],
        c["discriminator"],
        c["cycle"],
    )


def table(runs: list[dict]) -> list[dict]:
    """Mean and spread (standard deviation over seeds) of each configuration, seeds pooled."""
    rows = []
    for _key, group in itertools.groupby(
        sorted(runs, key=lambda r: str(group_key(r))), key=lambda r: str(group_key(r))
    ):
        group = list(group)
        c = group[0]["config"]
        row = {k: c[k] for k in ("method", "density", "width", "discriminator", "cycle")}
        row["seeds"] = [g["config"]["seed"] for g in group]
        row["bytes_per_task"] = group[0]["bytes_per_task"]
        row["seconds_per_step"] = float(np.mean([g["seconds_per_step"] for g in group]))
        for d in DIRECTIONS:
            for stat in STATS:
                values = np.array(
                    [np.nan if g["scores"][d][stat] is None else g["scores"][d][stat] for g in group],
                    dtype=np.float64,
                )
                ok = np.isfinite(values)
                row[f"{d}/{stat}"] = float(values[ok].mean()) if ok.any() else None
                row[f"{d}/{stat}_spread"] = float(values[ok].std()) if ok.any() else None
        values = np.array([g["scores"]["hausdorff_score"] for g in group])
        row["hausdorff_score"], row["hausdorff_score_spread"] = float(values.mean()), float(values.std())
        rows.append(row)
    return rows


def markdown(rows: list[dict], refs: dict) -> str:
    """The table as Markdown, with the identity and truth references first."""
    lines = [
        "| configuration | seeds | X->Y symmetric | X->Y truth->output | X->Y found | Y->X symmetric | Y->X truth->output | Y->X found | bytes per task |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ref in ("identity", "truth"):
        r = refs[ref]
        lines.append(
            f"| {ref} (reference) | - | {r['x_to_y']['symmetric_mean']:.3f} | {r['x_to_y']['truth_to_output_mean']:.3f} | "
            f"{r['x_to_y']['detected_fraction']:.2f} | {r['y_to_x']['symmetric_mean']:.3f} | "
            f"{r['y_to_x']['truth_to_output_mean']:.3f} | {r['y_to_x']['detected_fraction']:.2f} | - |"
        )

    def cell(row, key, digits=3):
        v, s = row.get(key), row.get(f"{key}_spread")
        return "n/a" if v is None else f"{v:.{digits}f} +- {s:.{digits}f}"

    for row in rows:
        method = "trained" if row["method"] == "trained" else f"supermask {row['density']:g}"
        lines.append(
            f"| {method} w{row['width']} {row['discriminator']} {row['cycle']} | {len(row['seeds'])} | "
            f"{cell(row, 'x_to_y/symmetric_mean')} | {cell(row, 'x_to_y/truth_to_output_mean')} | "
            f"{cell(row, 'x_to_y/detected_fraction', 2)} | {cell(row, 'y_to_x/symmetric_mean')} | "
            f"{cell(row, 'y_to_x/truth_to_output_mean')} | {cell(row, 'y_to_x/detected_fraction', 2)} | {row['bytes_per_task']:,} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], refs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    labels = [
        ("trained" if r["method"] == "trained" else f"mask {r['density']:g}")
        + f" w{r['width']}\n{r['discriminator']}\n{r['cycle'].replace('_', ' ')}"
        for r in rows
    ]
    for ax, d in zip(axes, DIRECTIONS, strict=True):
        means = [r[f"{d}/symmetric_mean"] or np.nan for r in rows]
        spreads = [r[f"{d}/symmetric_mean_spread"] or 0.0 for r in rows]
        colours = [
            "#4477aa"
            if r["discriminator"] == "dilated"
            else "#cc6677"
            if r["discriminator"] == "patch"
            else "#999933"
            for r in rows
        ]
        ax.bar(range(len(rows)), means, yerr=spreads, color=colours, capsize=3)
        ax.axhline(
            refs["identity"][d]["symmetric_mean"],
            color="black",
            ls="--",
            lw=1,
            label="identity (no shape change)",
        )
        ax.axhline(
            refs["truth"][d]["symmetric_mean"], color="grey", ls=":", lw=1, label="truth (extraction error)"
        )
        ax.set_xticks(range(len(rows)), labels, fontsize=6)
        ax.set_title(f"{'X -> Y (needs the grid read)' if d == 'x_to_y' else 'Y -> X'}")
    axes[0].set_ylabel("symmetric Hausdorff, mean +- sd over seeds")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plain(value):
    """NaN (no polygon detected anywhere) as JSON null, recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def configurations(args) -> list[dict]:
    if args.ablation:
        grid = itertools.product(
            ["trained"], [args.width], ["dilated", "patch", "global"], ["ms_ssim_l1", "l1"], args.seeds
        )
    elif args.supermask:
        grid = itertools.chain(
            itertools.product(["trained"], [args.width], ["dilated"], ["ms_ssim_l1"], args.seeds),
            itertools.product(["supermask"], args.mask_widths, ["dilated"], ["ms_ssim_l1"], args.seeds),
        )
    else:
        grid = itertools.product(args.methods, [args.width], args.discriminators, args.cycle, args.seeds)
    return [
        {
            "method": m,
            "width": w,
            "disc_width": args.disc_width * w // args.width,
            "discriminator": d,
            "cycle": c,
            "seed": s,
            "density": args.density,
        }
        for m, w, d, c, s in grid
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000, help="generator steps per configuration")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=4, help="generator base width (the source: 64)")
    parser.add_argument("--disc-width", type=int, default=4, help="discriminator base width (the source: 64)")
    parser.add_argument("--blocks", type=int, default=1, help="blocks per group (the source: 3)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the source: 2e-4)")
    parser.add_argument("--activation", default="leaky_relu", choices=["leaky_relu", "relu"])
    parser.add_argument("--methods", nargs="+", default=["trained"], choices=["trained", "supermask"])
    parser.add_argument("--density", type=float, default=0.5, help="supermask: fraction of weights kept")
    parser.add_argument("--free-params", default="affine", choices=["affine", "none"])
    parser.add_argument(
        "--trained-discriminator", action="store_true", help="supermask: train the discriminators"
    )
    parser.add_argument(
        "--discriminators", nargs="+", default=["dilated"], choices=["dilated", "patch", "global"]
    )
    parser.add_argument("--cycle", nargs="+", default=["ms_ssim_l1"], choices=["ms_ssim_l1", "l1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--ablation", action="store_true", help="3 discriminators x 2 cycle losses x --seeds, trained"
    )
    parser.add_argument(
        "--supermask", action="store_true", help="trained vs supermask generators (dilated, MS-SSIM)"
    )
    parser.add_argument(
        "--mask-widths",
        nargs="+",
        type=int,
        default=[4, 8],
        help="--supermask: widths of the frozen networks",
    )
    parser.add_argument("--train-size", type=int, default=1000, help="training images per domain")
    parser.add_argument("--test-size", type=int, default=100, help="held-out pairs scored at the end")
    parser.add_argument(
        "--eval-every", type=int, default=250, help="steps between measurements (0: at the end)"
    )
    parser.add_argument("--eval-size", type=int, default=50, help="held-out pairs scored on the way")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=6, help="rows in each sample grid")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per configuration")
    parser.add_argument("--jobs", type=int, default=1, help="configurations trained at once (processes)")
    parser.add_argument("--checkpoint-seconds", type=float, default=60.0)
    parser.add_argument(
        "--work-dir",
        default=str(ROOT / "runs/benchmarks/toy_shapes"),
        help="checkpoints and finished configurations",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/toy_shapes.json"))
    parser.add_argument("--docs", default=str(ROOT / "docs/toy_shapes"))
    parser.add_argument("--plot", default=None, help="bar chart PNG (default: DOCS/<out name>.png)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    _, test, data_config = load_data(args)
    refs = references(test)
    log.info(
        "identity: X->Y %.3f, Y->X %.3f",
        refs["identity"]["x_to_y"]["symmetric_mean"],
        refs["identity"]["y_to_x"]["symmetric_mean"],
    )
    configs = configurations(args)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(run_config, configs, [args] * len(configs)))
    else:
        runs = [run_config(c, args) for c in configs]
    rows = table(runs)
    result = {
        "benchmark": "toy_shapes",
        "command": " ".join(["benchmarks/toy_shapes.py", *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "docs", "work_dir", "plot")},
        "device": f"CPU ({platform.processor() or platform.machine()}), {args.threads} torch thread(s) per configuration, {args.jobs} at once",
        "machine": {"platform": platform.platform(), "cpus": multiprocessing.cpu_count()},
        "torch": torch.__version__,
        "data": {**data_config, "train_size": args.train_size, "test_size": args.test_size},
        "references": plain(refs),
        "runs": runs,
        "table": rows,
        "markdown": markdown(rows, refs),
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plain(result), indent=1, allow_nan=False) + "\n")
    if len(rows) > 1:
        png = Path(args.plot) if args.plot else Path(args.docs) / f"{out.stem}.png"
        plot(rows, refs, png, f"{result['command']} ({args.steps} steps, {args.resolution} px)")
    print(result["markdown"])
    log.info("wrote %s in %.0f s", out, result["total_seconds"])


if __name__ == "__main__":
    main()
