"""GANimorph on the toy shape-deformation data: train, measure outline Hausdorff distances, draw samples.

    .venv/bin/python benchmarks/toy_shapes.py [--resolution 32] [--steps 400] [--width 8] [--batch 8]
    .venv/bin/python benchmarks/toy_shapes.py --ablation --steps 3000   # 3 discriminators x 2 cycle losses x 3 seeds

Each configuration trains one unpaired translation task (both directions) on `--train-size` images per
domain for `--steps` generator steps, then translates `--test-size` held-out pairs both ways and scores
the outlines of the translations against the true polygons (Hausdorff distances in unit-square
coordinates, read from the images, never annotated). Two references put the numbers in scale:
`identity` (the input returned unchanged: what drawing no deformation scores) and `truth` (the true
target image: the outline extraction's own error). Runs with --checkpoint-dir resume where they stopped.

Writes JSON (default benchmarks/results/toy_shapes.json) and one sample grid per configuration as PNG
(default docs/toy_shapes/): each row is input, translation, cycle reconstruction and truth, for X -> Y
on the left and Y -> X on the right.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from supermask.core.translation import TranslationSettings, TranslationTrainer, UnpairedImages, outline_scores
from supermask.data.toy_shapes import POLYGON_CHANNEL, ToyShapes, ToyShapesConfig

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("toy_shapes")


def summarise(images: torch.Tensor, polygons: list[np.ndarray]) -> dict[str, float]:
    return outline_scores(images, polygons, channel=POLYGON_CHANNEL).summary()


def evaluate(trainer: TranslationTrainer, x: torch.Tensor, y: torch.Tensor, shapes: list) -> dict:
    """Hausdorff distances of both translations to the true polygons."""
    fake_y = trainer.translate(x, "xy")
    fake_x = trainer.translate(y, "yx")
    return {
        "x_to_y": summarise(fake_y, [s.deformed_polygon() for s in shapes]),
        "y_to_x": summarise(fake_x, [s.regular_polygon() for s in shapes]),
        "cycle_l1_x": float((trainer.translate(fake_y, "yx") - x).abs().mean()),
        "cycle_l1_y": float((trainer.translate(fake_x, "xy") - y).abs().mean()),
    }


def references(x: torch.Tensor, y: torch.Tensor, shapes: list) -> dict:
    """What returning the input scores, and what the true images score (the extraction's floor)."""
    regular = [s.regular_polygon() for s in shapes]
    deformed = [s.deformed_polygon() for s in shapes]
    return {
        "identity": {"x_to_y": summarise(x, deformed), "y_to_x": summarise(y, regular)},
        "truth": {"x_to_y": summarise(y, deformed), "y_to_x": summarise(x, regular)},
    }


def sample_grid(
    trainer: TranslationTrainer, x: torch.Tensor, y: torch.Tensor, path: Path, scale: int
) -> None:
    """Rows of [x, G(x), F(G(x)), y_true | y, F(y), G(F(y)), x_true], upscaled, as one PNG."""
    fake_y, fake_x = trainer.translate(x, "xy"), trainer.translate(y, "yx")
    rec_x, rec_y = trainer.translate(fake_y, "yx"), trainer.translate(fake_x, "xy")
    gap = torch.full((x.shape[0], 3, x.shape[2], 2), 0.5)
    row = torch.cat([x, fake_y, rec_x, y, gap, gap, y, fake_x, rec_y, x], dim=3)
    row = F.pad(row, (0, 0, 0, 2), value=0.5)
    grid = torch.cat(list(row), dim=1)
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def run_config(settings: TranslationSettings, data: UnpairedImages, test, args, name: str) -> dict:
    trainer = TranslationTrainer(settings)
    ckpt = Path(args.checkpoint_dir) / f"{name}.pt" if args.checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        trainer.load_state_dict(torch.load(ckpt, weights_only=True))
        log.info("%s: resumed at step %d", name, trainer.step)
    curve: list[dict] = []
    started, first = time.perf_counter(), trainer.step

    def on_step(m: dict) -> None:
        if m["step"] % args.log_every == 0 or m["step"] == args.steps - 1:
            curve.append(m)
            log.info("%s step %d: %s", name, m["step"], {k: round(v, 4) for k, v in m.items() if k != "step"})
        if ckpt is not None and (m["step"] + 1) % args.checkpoint_every == 0:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(trainer.state_dict(), ckpt)

    trainer.run(data, args.steps, on_step=on_step)
    seconds = time.perf_counter() - started
    x, y, shapes = test
    scores = evaluate(trainer, x, y, shapes)
    png = Path(args.docs) / f"{name}.png"
    sample_grid(trainer, x[: args.samples], y[: args.samples], png, max(1, 128 // settings.resolution))
    log.info("%s: %s", name, json.dumps({k: scores[k] for k in ("x_to_y", "y_to_x")}))
    return {
        "name": name,
        "settings": settings.to_dict(),
        "steps": args.steps,
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, args.steps - first),
        "scores": scores,
        "curve": curve,
        "samples_png": str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png),
    }


def table(runs: list[dict]) -> list[dict]:
    """Mean and spread over seeds of each (discriminator, cycle loss) pair."""
    rows = []
    key = lambda r: (r["settings"]["discriminator"], r["settings"]["cycle_loss"])  # noqa: E731
    for (disc, cycle), group in itertools.groupby(sorted(runs, key=key), key=key):
        group = list(group)
        row = {"discriminator": disc, "cycle_loss": cycle, "seeds": [g["settings"]["seed"] for g in group]}
        for direction in ("x_to_y", "y_to_x"):
            for stat in ("symmetric_mean", "truth_to_output_mean", "detected_fraction"):
                values = np.array([g["scores"][direction][stat] for g in group], dtype=np.float64)
                row[f"{direction}/{stat}"] = float(np.nanmean(values)) if np.isfinite(values).any() else None
                row[f"{direction}/{stat}_spread"] = (
                    float(np.nanstd(values)) if np.isfinite(values).any() else None
                )
        rows.append(row)
    return rows


def plain(value):
    """NaN (no polygon detected anywhere) as JSON null, recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400, help="generator steps per configuration")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=8, help="generator base width (the source: 64)")
    parser.add_argument("--disc-width", type=int, default=8, help="discriminator base width (the source: 64)")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--activation", default="leaky_relu", choices=["leaky_relu", "relu"])
    parser.add_argument(
        "--discriminators", nargs="+", default=["dilated"], choices=["dilated", "patch", "global"]
    )
    parser.add_argument("--cycle", nargs="+", default=["ms_ssim_l1"], choices=["ms_ssim_l1", "l1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--ablation", action="store_true", help="all discriminators, both cycle losses, seeds 0 1 2"
    )
    parser.add_argument("--train-size", type=int, default=1000, help="training images per domain")
    parser.add_argument("--test-size", type=int, default=100, help="held-out pairs scored")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=6, help="rows in each sample grid")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/toy_shapes.json"))
    parser.add_argument("--docs", default=str(ROOT / "docs/toy_shapes"))
    args = parser.parse_args()
    if args.ablation:
        args.discriminators, args.cycle, args.seeds = (
            ["dilated", "patch", "global"],
            ["ms_ssim_l1", "l1"],
            [0, 1, 2],
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    toy = ToyShapes(ToyShapesConfig(resolution=args.resolution, seed=args.data_seed))
    train_x, train_y = toy.unpaired(args.train_size)
    data = UnpairedImages(torch.from_numpy(train_x), torch.from_numpy(train_y))
    test_x, test_y, shapes = toy.test_pairs(args.test_size)
    test = (torch.from_numpy(test_x), torch.from_numpy(test_y), shapes)
    log.info(
        "data: %d + %d training images, %d test pairs in %.1f s",
        len(train_x),
        len(train_y),
        len(shapes),
        time.perf_counter() - started,
    )
    refs = references(test[0], test[1], shapes)
    log.info("references: %s", json.dumps(refs))

    runs = []
    for disc, cycle, seed in itertools.product(args.discriminators, args.cycle, args.seeds):
        settings = TranslationSettings(
            resolution=args.resolution,
            seed=seed,
            width=args.width,
            disc_width=args.disc_width,
            blocks=args.blocks,
            activation=args.activation,
            discriminator=disc,
            cycle_loss=cycle,
            batch_size=args.batch,
        )
        name = f"{args.resolution}px-{disc}-{cycle}-seed{seed}"
        runs.append(run_config(settings, data, test, args, name))

    result = {
        "benchmark": "toy_shapes",
        "command": " ".join(["benchmarks/toy_shapes.py", *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "docs")},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
        },
        "torch": torch.__version__,
        "data": {**toy.config.__dict__, "train_size": args.train_size, "test_size": args.test_size},
        "references": refs,
        "runs": runs,
        "table": table(runs),
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plain(result), indent=1, allow_nan=False) + "\n")
    log.info("wrote %s in %.0f s", out, result["total_seconds"])


if __name__ == "__main__":
    main()
