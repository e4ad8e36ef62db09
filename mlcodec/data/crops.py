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
from collections.abc import Sequence
from dataclasses import dataclass

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


def dataset_crops(photo: Image.Image, name: str, n: int, size: int = 224,
                  scales: tuple[float, float] = (1.0, 3.0), jpeg: Sequence[int] = (),
                  jpeg_share: float = 0.0, seed: int = 0) -> list[Crop]:
    """``n`` crops of ``size`` x ``size`` px from ``photo`` at downscales drawn uniformly from
    ``scales``, deterministic by ``seed`` and ``name``.

    A factor is capped where the source box would not fit the photo (a 1000 px photo gives
    224 px crops at most 4.46x down). ``jpeg_share`` of the crops are JPEG-compressed at a
    quality drawn from ``jpeg`` before use."""
    if n < 0 or size < 1:
        raise ValueError(f"need n >= 0 and size >= 1, got n={n}, size={size}")
    lo, hi = scales
    if not 0 < lo <= hi:
        raise ValueError(f"scales must be 0 < low <= high, got {scales}")
    if jpeg_share > 0 and not jpeg:
        raise ValueError("jpeg_share > 0 needs jpeg qualities to draw from")
    photo = photo.convert("RGB")
    fit = min(photo.size) / size
    if fit < 1.0:
        raise ValueError(f"{name}: {photo.width}x{photo.height} is smaller than a {size} px crop")
    rng = random.Random(f"{seed}:{name}")
    crops = []
    for k in range(n):
        s = min(rng.uniform(lo, hi), fit)
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
        crops.append(Crop(name, k, s, box, q, im))
    return crops
