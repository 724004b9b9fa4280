"""GANimorph at the source's resolution (128 px) on one GPU, in under 8 minutes: dilated vs patch discriminator.

    .venv/bin/python benchmarks/toy_shapes_gpu.py                 # on a machine with one CUDA GPU (an H100: ~7 min)
    .venv/bin/python benchmarks/toy_shapes_gpu.py --smoke         # a seconds-long check of the script on the CPU

Generates the toy data at 128 px on every CPU core, then trains each configuration (default: the dilated
and the patch discriminator, MS-SSIM + L1 cycle loss, width 32, 3 blocks per group as the source) for
at most `--steps` generator steps or its share of `--train-seconds`, whichever comes first, with TF32
matmuls. Every `--eval-every` steps and at the end it scores `--test-size` held-out pairs both ways
(outline Hausdorff distances, symmetric and one-sided, the fraction with a polygon, against the
identity and truth references). Writes benchmarks/results/toy_shapes_gpu.json (naming the GPU) and one
sample grid per configuration in docs/toy_shapes/gpu-*.png. Nothing here has run on a GPU yet: the
numbers in the JSON are the first ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from supermask.core.translation import TranslationSettings, TranslationTrainer, UnpairedImages
from supermask.core.translation.evaluation import (
    DIRECTIONS,
    TranslationTestSet,
    evaluate_translation,
    references,
    sample_grid,
)
from supermask.data.toy_shapes import POLYGON_CHANNEL, ToyShapes, ToyShapesConfig
from supermask.recipes.translation import save_png

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("toy_shapes_gpu")


def _draw(job: tuple[int, int, str, str, int]) -> np.ndarray:
    resolution, seed, split, domain, index = job
    toy = ToyShapes(ToyShapesConfig(resolution=resolution, seed=seed))
    return toy.image(toy.shape(split, index), domain)


def generate(resolution: int, seed: int, train: int, test: int) -> tuple[UnpairedImages, TranslationTestSet]:
    """The toy data, rendered on every core (about 2 ms per 32 px image, 30 ms per 128 px one)."""
    jobs = (
        [(resolution, seed, "train_x", "x", i) for i in range(train)]
        + [(resolution, seed, "train_y", "y", i) for i in range(train)]
        + [(resolution, seed, "test", d, i) for d in ("x", "y") for i in range(test)]
    )
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        images = np.stack(pool.map(_draw, jobs, chunksize=16))
    toy = ToyShapes(ToyShapesConfig(resolution=resolution, seed=seed))
    shapes = [toy.shape("test", i) for i in range(test)]
    t = torch.from_numpy(images)
    data = UnpairedImages(t[:train], t[train : 2 * train])
    test_set = TranslationTestSet(
        t[2 * train : 2 * train + test],
        t[2 * train + test :],
        [s.regular_polygon() for s in shapes],
        [s.deformed_polygon() for s in shapes],
        channel=POLYGON_CHANNEL,
        paired=True,
    )
    return data, test_set


def plain(value):
    """NaN (no polygon detected anywhere) as JSON null, recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def train_one(
    settings: TranslationSettings, args, data: UnpairedImages, test: TranslationTestSet, budget: float
) -> dict:
    """Train one configuration for its steps or `budget` seconds of training, measuring it on the way."""
    trainer = TranslationTrainer(settings, args.device)
    disc = settings.discriminator

    def xy(imgs):
        return trainer.translate(imgs, "xy")

    def yx(imgs):
        return trainer.translate(imgs, "yx")

    evals: list[dict] = []
    clock = {"began": time.perf_counter(), "paused": 0.0}

    def on_step(m: dict) -> None:
        if trainer.step % args.eval_every == 0:
            t0 = time.perf_counter()
            s = evaluate_translation(xy, yx, test)
            evals.append({"step": trainer.step, **{d: s[d]["symmetric_mean"] for d in DIRECTIONS}})
            log.info(
                "%s step %d: X->Y %.3f Y->X %.3f",
                disc,
                trainer.step,
                evals[-1]["x_to_y"],
                evals[-1]["y_to_x"],
            )
            clock["paused"] += time.perf_counter() - t0

    def out_of_time() -> bool:
        return time.perf_counter() - clock["began"] - clock["paused"] > budget

    trainer.run(data, args.steps, on_step=on_step, should_stop=out_of_time)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - clock["began"] - clock["paused"]
    scores = evaluate_translation(xy, yx, test)
    png = Path(args.docs) / f"gpu-{args.resolution}px-{disc}-{args.cycle}-seed{args.seed}.png"
    save_png(sample_grid(xy, yx, test, 6), png)
    log.info(
        "%s: %d steps in %.0f s: X->Y %.3f, Y->X %.3f",
        disc,
        trainer.step,
        seconds,
        scores["x_to_y"]["symmetric_mean"],
        scores["y_to_x"]["symmetric_mean"],
    )
    return {
        "discriminator": disc,
        "settings": settings.to_dict(),
        "steps": trainer.step,
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, trainer.step),
        "scores": scores,
        "evals": evals,
        "samples_png": str(png),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--discriminators", nargs="+", default=["dilated", "patch"])
    parser.add_argument("--cycle", default="ms_ssim_l1", choices=["ms_ssim_l1", "l1"])
    parser.add_argument("--width", type=int, default=32, help="generator base width (the source: 64)")
    parser.add_argument("--disc-width", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--steps", type=int, default=3000, help="most generator steps per configuration")
    parser.add_argument(
        "--train-seconds", type=float, default=330.0, help="training time shared by the configurations"
    )
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run that checks the script")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/toy_shapes_gpu.json"))
    parser.add_argument("--docs", default=str(ROOT / "docs/toy_shapes"))
    args = parser.parse_args()
    if args.smoke:
        args.resolution, args.width, args.disc_width, args.blocks, args.batch = 32, 2, 2, 1, 2
        args.steps, args.train_seconds, args.eval_every, args.train_size, args.test_size = 4, 60.0, 2, 8, 4
        args.device = "cpu"
        args.out, args.docs = "/tmp/toy_shapes_gpu_smoke.json", "/tmp/toy_shapes_gpu_smoke"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("toy_shapes_gpu: no CUDA GPU here; pass --smoke for a CPU check of the script")
    torch.set_float32_matmul_precision("high")  # TF32 on GPUs that have it
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    data, test = generate(args.resolution, args.seed, args.train_size, args.test_size)
    data = UnpairedImages(data.x.to(args.device), data.y.to(args.device))
    data_seconds = time.perf_counter() - started
    log.info(
        "data: %d + %d images, %d test pairs at %d px in %.1f s",
        len(data.x),
        len(data.y),
        len(test.x),
        args.resolution,
        data_seconds,
    )
    refs = references(test)
    budget = args.train_seconds / len(args.discriminators)
    runs = []
    for disc in args.discriminators:
        settings = TranslationSettings(
            resolution=args.resolution,
            seed=args.seed,
            width=args.width,
            disc_width=args.disc_width,
            blocks=args.blocks,
            discriminator=disc,
            cycle_loss=args.cycle,
            batch_size=args.batch,
            lr=args.lr,
            steps=args.steps,
        )
        runs.append(train_one(settings, args, data, test, budget))
    result = {
        "benchmark": "toy_shapes_gpu",
        "command": " ".join(["benchmarks/toy_shapes_gpu.py", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
        "args": vars(args),
        "data_seconds": data_seconds,
        "references": refs,
        "runs": runs,
        "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plain(result), indent=1, allow_nan=False))
    log.info("wrote %s in %.0f s", out, result["total_seconds"])


if __name__ == "__main__":
    main()
