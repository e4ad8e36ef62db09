"""What the benchmark scripts share: the held-out photos, dataset-like crops, a codec's rate and
distortion on photos, and the machine's name for the record.

The scripts are a package: run them from the repository root as ``python -m benchmarks.NAME``
(finished studies: ``python -m benchmarks.studies.NAME``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
from PIL import Image

import mlcodec
from mlcodec.data.photos import evaluation_photos, training_photos
from mlcodec.metrics import bpp, ms_ssim, psnr

#: the offline photos of scripts/fetch_photos.sh
PHOTOS = os.path.expanduser("~/.cache/mlcodec/photos")


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> str:
    """One line for a benchmark's record: processor, cores, torch."""
    import torch

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def held_out_photos(photo_dir: str, max_side: int = 512) -> list:
    """The held-out photos (long side ``max_side``): scikit-image's, and the wallpapers under
    ``photo_dir`` if it exists; prints which."""
    dirs = [photo_dir] if Path(photo_dir).is_dir() else []
    if not dirs:
        print(f"note: {photo_dir} not found (run scripts/fetch_photos.sh); scikit-image photos only")
    photos = evaluation_photos(dirs, max_side=max_side)
    print(f"{len(photos)} held-out photos: "
          + ", ".join(f"{p.name} {p.image.width}x{p.image.height}" for p in photos))
    return photos


def held_out_crops(photo_dir: str, per_photo: int = 12, size: int = 224,
                   scales: tuple[float, float] = (1.0, 3.0), seed: int = 0) -> list:
    """Dataset-like crops of the held-out photos at full resolution (``mlcodec crops``' protocol,
    no judge): ``per_photo`` crops of ``size`` px each, the photo downscaled by a factor drawn
    from ``scales``. Returned as photos named ``PHOTO_k``; prints how many."""
    from mlcodec.data.crops import dataset_crops
    from mlcodec.data.photos import Photo

    dirs = [photo_dir] if Path(photo_dir).is_dir() else []
    out = [Photo(f"{p.name}_{c.index}", c.image) for p in evaluation_photos(dirs, max_side=10**6)
           if min(p.image.size) >= size for c in dataset_crops(p.image, p.name, per_photo, size, scales, seed=seed)]
    print(f"{len(out)} dataset-like crops of {size} px (held-out photos downscaled {scales[0]:g}-{scales[1]:g}x)")
    return out


def measure(codec: mlcodec.Codec, photos, quality: float, with_ms_ssim: bool = True) -> dict[str, float]:
    images = [p.image for p in photos]
    datas = codec.compress_batch(images, quality=quality) if codec.config.kind == "learned" \
        else [codec.compress(im, quality) for im in images]
    decoded = codec.decompress_batch(datas)
    return {
        "quality": quality,
        "bpp": float(np.mean([bpp(len(d), im) for d, im in zip(datas, images)])),
        "psnr": float(np.mean([psnr(im, dec) for im, dec in zip(images, decoded)])),
        "ms_ssim": float(np.mean([ms_ssim(im, dec) for im, dec in zip(images, decoded)]))
        if with_ms_ssim else float("nan"),
    }


def crops(n: int, size: int, photo_dirs: list[str]) -> list[Image.Image]:
    photos = training_photos(photo_dirs) + evaluation_photos(photo_dirs, max_side=1024)
    rng = np.random.default_rng(0)
    out = []
    while len(out) < n:
        im = photos[len(out) % len(photos)].image
        scale = max(size / min(im.size), float(rng.uniform(0.3, 1.0)))
        im2 = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))))
        x, y = rng.integers(0, im2.width - size + 1), rng.integers(0, im2.height - size + 1)
        out.append(im2.crop((x, y, x + size, y + size)))
    return out


def write_report(report: dict, out: str, started: float) -> None:
    """Stamp ``report`` with the seconds since ``started`` (``time.perf_counter()``), write it
    to ``out`` as JSON and say so."""
    import json
    import time

    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1))
    print(f"\n{report['seconds']:.0f} s; wrote {out}")


#: experts, evaluation references and other trained inputs kept in git (fp16, DEVELOPERS.md budget)
FIXTURES = Path(__file__).parent / "fixtures"


def recipe_digest(recipe: dict) -> str:
    """16 hex digits naming a recipe (its JSON with sorted keys): a fixture is used only for it."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def write_fixture(src: str | Path, dst: str | Path, recipe: dict, extra: dict | None = None) -> Path:
    """``src`` (a safetensors file) as a float16 fixture at ``dst``: floating tensors halved, its
    metadata kept, plus ``recipe``, its digest and ``extra`` (JSON), under ``fixture_*`` keys."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: (t.half() if t.is_floating_point() else t) for k in f.keys() for t in [f.get_tensor(k)]}
    meta.update({"fixture_recipe": json.dumps(recipe), "fixture_digest": json.dumps(recipe_digest(recipe)),
                 "fixture_extra": json.dumps(extra or {})})
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)
    return Path(dst)


def fixture_digest(path: str | Path) -> str | None:
    """The recipe digest that fixture ``path`` was written with; None when there is no such file."""
    import json

    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("fixture_digest", "null"))


def restore_fixture(src: str | Path, dst: str | Path, recipe: dict) -> dict | None:
    """Write fixture ``src`` back as float32 at ``dst`` (its metadata as it was before
    :func:`write_fixture`) when it was made by ``recipe``; returns its extra metadata, or None
    (nothing written) when there is no such file or it was made by another recipe."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    if fixture_digest(src) != recipe_digest(recipe):
        return None
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: (t.float() if t.is_floating_point() else t) for k in f.keys() for t in [f.get_tensor(k)]}
    extra = json.loads(meta.get("fixture_extra", "{}"))
    meta = {k: v for k, v in meta.items() if not k.startswith("fixture_")}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)
    return extra
