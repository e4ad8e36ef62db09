"""Dataset-like crops: what ImageNet- and COCO-style sets hold, cut from full-resolution photos.

Such sets store photos downscaled from the camera's resolution (a 4000 px photo becomes a
500 px JPEG) and loaders read 224-256 px crops of them. Downscaled content is denser than a crop
of the full-resolution photo: more edges and texture per pixel, which is where a codec trained
on smooth native-resolution crops loses. Each crop here is the photo downscaled by a random
factor (antialiased: Lanczos over the source box, so the crop equals a crop of the downscaled
photo) and cropped at a random place; optionally JPEG-compressed first, as web-scraped sets are.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Crop:
    """A crop and where it came from: ``box`` (left, top, right, bottom) in the source photo's
    pixels, ``scale`` the downscale factor, ``jpeg`` the source JPEG quality (0: none)."""

    photo: str
    index: int
    scale: float
    box: tuple[float, float, float, float]
    jpeg: int
    image: Image.Image


def sample_crop(photo: Image.Image, size: int, scales: tuple[float, float], rng: random.Random,
                jpeg: Sequence[int] = (), jpeg_share: float = 0.0) -> tuple[Image.Image, float, tuple, int]:
    """One ``size`` px crop of ``photo`` (RGB) downscaled by a factor drawn from ``scales`` (capped
    where the source box would not fit), at a random place, JPEG-compressed at a quality drawn from
    ``jpeg`` with probability ``jpeg_share``: ``(image, scale, box, jpeg quality or 0)``."""
    fit = min(photo.size) / size
    s = min(rng.uniform(*scales), fit)
    side = size * s
    left = rng.uniform(0.0, photo.width - side)
    top = rng.uniform(0.0, photo.height - side)
    box = (left, top, left + side, top + side)
    im = photo.resize((size, size), Image.LANCZOS, box=box, reducing_gap=None)
    q = 0
    if jpeg_share > 0 and rng.random() < jpeg_share:
        q = rng.choice(list(jpeg))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return im, s, box, q


def _check(size: int, scales: tuple[float, float], jpeg: Sequence[int], jpeg_share: float) -> None:
    lo, hi = scales
    if size < 1:
        raise ValueError(f"need size >= 1, got {size}")
    if not 0 < lo <= hi:
        raise ValueError(f"scales must be 0 < low <= high, got {scales}")
    if jpeg_share > 0 and not jpeg:
        raise ValueError("jpeg_share > 0 needs jpeg qualities to draw from")


def dataset_crops(photo: Image.Image, name: str, n: int, size: int = 224,
                  scales: tuple[float, float] = (1.0, 3.0), jpeg: Sequence[int] = (),
                  jpeg_share: float = 0.0, seed: int = 0) -> list[Crop]:
    """``n`` crops of ``size`` x ``size`` px from ``photo`` at downscales drawn uniformly from
    ``scales``, deterministic by ``seed`` and ``name``.

    A factor is capped where the source box would not fit the photo (a 1000 px photo gives
    224 px crops at most 4.46x down). ``jpeg_share`` of the crops are JPEG-compressed at a
    quality drawn from ``jpeg`` before use."""
    if n < 0:
        raise ValueError(f"need n >= 0, got {n}")
    _check(size, scales, jpeg, jpeg_share)
    photo = photo.convert("RGB")
    if min(photo.size) < size:
        raise ValueError(f"{name}: {photo.width}x{photo.height} is smaller than a {size} px crop")
    rng = random.Random(f"{seed}:{name}")
    crops = []
    for k in range(n):
        im, s, box, q = sample_crop(photo, size, scales, rng, jpeg, jpeg_share)
        crops.append(Crop(name, k, s, box, q, im))
    return crops


class DatasetCrops:
    """Endless training batches of dataset-like crops: what :func:`dataset_crops` cuts, drawn from
    many photos, with flips. Photos are kept with their long side at most ``max_side`` (Lanczos),
    the resolution the downscale factors start from."""

    def __init__(self, photos: Sequence[Image.Image], patch: int = 256, scales: tuple[float, float] = (1.0, 4.0),
                 jpeg: Sequence[int] = tuple(range(60, 96, 5)), jpeg_share: float = 0.3,
                 max_side: int = 2560) -> None:
        _check(patch, scales, jpeg, jpeg_share)
        self.patch, self.scales, self.jpeg, self.jpeg_share = patch, scales, tuple(jpeg), jpeg_share
        self.photos = []
        for im in photos:
            im = im.convert("RGB")
            if max(im.size) > max_side:
                k = max_side / max(im.size)
                im = im.resize((round(im.width * k), round(im.height * k)), Image.LANCZOS)
            if min(im.size) >= patch:
                self.photos.append(im)
        if not self.photos:
            raise ValueError(f"No training photo is at least {patch}px on its short side")

    def batches(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """Endless ``(B, 3, patch, patch)`` uint8 batches, deterministic by ``seed``."""
        rng = random.Random(seed)
        while True:
            crops = []
            for _ in range(batch_size):
                im = sample_crop(self.photos[rng.randrange(len(self.photos))], self.patch, self.scales, rng,
                                 self.jpeg, self.jpeg_share)[0]
                t = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
                crops.append(t.flip(2) if rng.random() < 0.5 else t)
            yield torch.stack(crops)
