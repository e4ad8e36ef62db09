"""Offline photo sets for training and evaluating codecs.

Two sources need no internet beyond the package registries: the colour photos bundled with
scikit-image, and Debian's wallpaper packages (``scripts/fetch_photos.sh`` unpacks them). A fixed
list of photos is held out of training so that rate-distortion is measured on unseen images.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# scikit-image photos bundled with the wheel (no download needed).
SKIMAGE_TRAIN = ("rocket", "hubble_deep_field", "retina", "immunohistochemistry")
SKIMAGE_HELD_OUT = ("astronaut", "chelsea", "coffee")
# Wallpaper photos (file stems) kept out of training; see scripts/fetch_photos.sh.
FILES_HELD_OUT = ("LadyBird", "YellowFlower", "Storm", "Garden", "Bridge_by_Sander_Klootwijk",
                  "Dragonfly_by_Bolly", "Kleiber_by_Lukas_Baubkus")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Photo:
    name: str
    image: Image.Image


def _skimage_photos(names: Sequence[str]) -> list[Photo]:
    import skimage.data

    return [Photo(n, Image.fromarray(getattr(skimage.data, n)()).convert("RGB")) for n in names]


def list_image_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"No image file or folder at {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _file_photos(dirs: Sequence[str | Path], held_out: bool) -> list[Photo]:
    photos = []
    for d in dirs:
        for path in list_image_files(d):
            if (path.stem in FILES_HELD_OUT) == held_out:
                photos.append(Photo(path.stem, Image.open(path).convert("RGB")))
    return photos


def training_photos(dirs: Sequence[str | Path] = (), use_skimage: bool = True) -> list[Photo]:
    """Training photos: the non-held-out scikit-image photos plus every image under ``dirs``."""
    photos = _skimage_photos(SKIMAGE_TRAIN) if use_skimage else []
    return photos + _file_photos(dirs, held_out=False)


def evaluation_photos(dirs: Sequence[str | Path] = (), max_side: int = 512) -> list[Photo]:
    """Held-out photos resized so the long side is at most ``max_side`` (Lanczos)."""
    return shrunk(_skimage_photos(SKIMAGE_HELD_OUT) + _file_photos(dirs, held_out=True), max_side)


def shrunk(photos: Sequence[Photo], max_side: int) -> list[Photo]:
    """``photos`` resized so the long side is at most ``max_side`` (Lanczos; smaller ones kept)."""
    out = []
    for p in photos:
        im = p.image
        scale = max_side / max(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        out.append(Photo(p.name, im))
    return out


class RandomCrops:
    """Endless random crops with flips from a few photos, each kept at several scales.

    Large wallpapers are downscaled (short side in ``short_sides``) so crops show photo-scale
    detail and source JPEG artifacts are averaged away.
    """

    def __init__(
        self, photos: Sequence[Photo], patch: int = 128, short_sides: Sequence[int] = (384, 512, 768)
    ) -> None:
        if not photos:
            raise ValueError("No training photos: run scripts/fetch_photos.sh or pass --data DIR")
        self.patch = patch
        self.arrays: list[torch.Tensor] = []
        for p in photos:
            for side in short_sides:
                im = p.image
                scale = side / min(im.size)
                if scale > 1.0:
                    if side != short_sides[0]:
                        continue
                    scale = 1.0
                w, h = round(im.width * scale), round(im.height * scale)
                if min(w, h) < patch:
                    continue
                arr = np.asarray(im.resize((w, h), Image.LANCZOS) if scale != 1.0 else im)
                self.arrays.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        if not self.arrays:
            raise ValueError(f"No training photo is at least {patch}px on its short side")

    def batches(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """Endless ``(B, 3, patch, patch)`` uint8 batches, deterministic by ``seed``."""
        rng = random.Random(seed)
        p = self.patch
        while True:
            crops = []
            for _ in range(batch_size):
                a = self.arrays[rng.randrange(len(self.arrays))]
                top, left = rng.randint(0, a.shape[1] - p), rng.randint(0, a.shape[2] - p)
                c = a[:, top : top + p, left : left + p]
                if rng.random() < 0.5:
                    c = c.flip(2)
                crops.append(c)
            yield torch.stack(crops)  # uint8; the trainer converts on its device
