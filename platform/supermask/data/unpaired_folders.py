"""Unpaired image folders for translation: `trainA/ trainB/ testA/ testB/`, as CycleGAN's datasets ship.

A user brings two domains (cats and dogs, faces, ...) as image files; each is decoded with Pillow
(which torchvision and matplotlib already require; torchvision.io's decoders are deprecated), its
shorter side resized to the resolution with antialiasing and the centre cropped square, as float32
(3, R, R) in [0, 1]. A GIF gives its first frame.
Files are read in sorted order, so a folder always loads the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
LAYOUT = "trainA/ trainB/ testA/ testB/ (domain A = X, domain B = Y)"


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside `folder`, sorted by name."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"no folder {path}; an unpaired dataset is laid out as {LAYOUT}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return files


def load_image(path: str | os.PathLike[str], resolution: int) -> torch.Tensor:
    """One image file as float32 (3, R, R) in [0, 1]: shorter side resized to R, centre cropped."""
    with Image.open(path) as opened:
        rgb = np.asarray(opened.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    img = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    h, w = img.shape[-2:]
    scale = resolution / min(h, w)
    size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
    img = F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return img[0, :, top : top + resolution, left : left + resolution].clamp(0.0, 1.0).contiguous()


def load_domain(folder: str | os.PathLike[str], resolution: int, limit: int | None = None) -> torch.Tensor:
    """Every image of one folder (the first `limit` by name), as float32 (N, 3, R, R)."""
    files = image_files(folder)[:limit]
    return torch.stack([load_image(p, resolution) for p in files])


def load_unpaired_folders(
    root: str | os.PathLike[str], resolution: int, split: str = "train", limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Domains A (X) and B (Y) of one split ('train' or 'test') of a folder laid out as trainA/ trainB/ testA/ testB/."""
    if split not in ("train", "test"):
        raise ValueError(f"split: got {split!r}; allowed: train, test")
    base = Path(root)
    return (
        load_domain(base / f"{split}A", resolution, limit),
        load_domain(base / f"{split}B", resolution, limit),
    )
