"""Procedural scenes for offline task benchmarks: classification, detection and segmentation.

Each scene draws 0-3 small distractor objects and then one large main object of
:data:`CLASS_NAMES` (shape decides the class; colour, texture, size, rotation and position are
random) over a crop of a natural photo or a procedural texture. Objects occlude the ones drawn
before them; every target is computed from the *visible* pixels:

* ``label`` — the class of the main object (image-level label, 0-based; it is drawn last, so it
  is never occluded, and it is the last object in the lists below),
* ``boxes`` (xyxy pixels), ``labels`` (0-based) and ``masks`` (``K x H x W`` bool) per object,
* ``semantic`` — ``H x W`` uint8, 0 background, ``c + 1`` for class ``c``,
* ``colour`` — the hue bin (:data:`COLOUR_NAMES`) of the main object's base colour: a label that
  none of the others determines, for measuring a task a codec was never trained for.

Scene ``i`` of a generator depends only on ``(seed, i)``, so any subset can be regenerated. The
exporters write the layouts real datasets come in — ImageFolder, COCO instances JSON (RLE masks)
and YOLO — so benchmarks run through the same sources and loaders as user data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES = ("circle", "ellipse", "square", "triangle", "star", "ring", "cross", "hexagon")
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient")
#: hue bins of the main object's colour: the benchmark's *unseen* task (no shape, box or mask
#: label determines it, and no codec objective trains on it)
COLOUR_NAMES = ("red", "yellow", "green", "cyan", "blue", "magenta")
_BACKGROUND_PHOTOS = ("rocket", "coffee", "chelsea", "astronaut", "hubble_deep_field",
                      "immunohistochemistry", "retina", "cat")
MIN_VISIBLE_PIXELS = 40


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    label: int
    boxes: np.ndarray  # (K, 4) float32 xyxy, pixels
    labels: np.ndarray  # (K,) int64, 0-based
    masks: np.ndarray  # (K, H, W) bool, visible pixels
    semantic: np.ndarray  # (H, W) uint8, 0 = background
    colour: int = -1  # hue bin of the main object's base colour (COLOUR_NAMES)

    def coco_target(self) -> dict:
        """The target as :class:`mlcodec.data.sources.CocoSource` yields it (1-based category ids)."""
        from pycocotools import mask as mask_utils

        segs = []
        for m in self.masks:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            segs.append({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
        return {"boxes": self.boxes.round(2).tolist(), "labels": (self.labels + 1).tolist(),
                "segmentation": segs, "iscrowd": [0] * len(self.labels), "label": self.label,
                "colour": self.colour}


class SyntheticScenes(Sequence[Scene]):
    """``count`` scenes of ``size x size`` pixels, deterministic by ``seed``.

    ``backgrounds``: ``"mixed"`` (half photo crops, half procedural), ``"photo"`` or ``"texture"``.
    """

    def __init__(self, count: int, size: int = 128, seed: int = 0, max_objects: int = 4,
                 backgrounds: str = "mixed") -> None:
        if count < 0 or size < 32:
            raise ValueError(f"need count >= 0 and size >= 32, got count={count}, size={size}")
        if backgrounds not in ("mixed", "photo", "texture"):
            raise ValueError(f"backgrounds must be mixed, photo or texture, not {backgrounds!r}")
        self.count, self.size, self.seed = count, size, seed
        self.max_objects, self.backgrounds = max_objects, backgrounds
        self._photos: list[np.ndarray] | None = None

    class_names = CLASS_NAMES

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Scene:  # type: ignore[override]
        if not 0 <= i < self.count:
            raise IndexError(f"scene {i} out of range (0..{self.count - 1})")
        rng = np.random.default_rng([self.seed, i])
        s = self.size
        use_photo = self.backgrounds == "photo" or (self.backgrounds == "mixed" and rng.random() < 0.5)
        canvas = self._photo_background(rng) if use_photo else _texture_background(rng, s)
        masks: list[np.ndarray] = []
        labels: list[int] = []
        n = int(rng.integers(1, self.max_objects + 1))
        hue = 0.0
        for k in range(n):
            c = int(rng.integers(len(CLASS_NAMES)))
            main = k == n - 1
            mask = _shape_mask(CLASS_NAMES[c], rng, s, (0.24, 0.34) if main else (0.06, 0.12))
            if mask.sum() < MIN_VISIBLE_PIXELS and not main:
                continue
            drawn: dict[str, float] = {}
            canvas = np.where(mask[..., None], _texture(rng, s, drawn=drawn), canvas)
            hue = drawn["hue"]
            masks = [m & ~mask for m in masks]
            masks.append(mask)
            labels.append(c)
        keep = [k for k, m in enumerate(masks) if m.sum() >= MIN_VISIBLE_PIXELS or k == len(masks) - 1]
        masks_a = np.stack([masks[k] for k in keep])
        labels_a = np.array([labels[k] for k in keep], dtype=np.int64)
        semantic = np.zeros((s, s), np.uint8)
        for m, c in zip(masks_a, labels_a):
            semantic[m] = c + 1
        boxes = np.array([_mask_box(m) for m in masks_a], dtype=np.float32)
        colour = int(hue * len(COLOUR_NAMES) + 0.5) % len(COLOUR_NAMES)
        return Scene(Image.fromarray(canvas.astype(np.uint8)), int(labels_a[-1]), boxes, labels_a,
                     masks_a, semantic, colour)

    def __iter__(self) -> Iterator[Scene]:
        return (self[i] for i in range(self.count))

    def _photo_background(self, rng: np.random.Generator) -> np.ndarray:
        if self._photos is None:
            import skimage.data

            self._photos = []
            for name in _BACKGROUND_PHOTOS:
                a = np.asarray(getattr(skimage.data, name)())
                self._photos.append(np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a[..., :3])
        photo = self._photos[int(rng.integers(len(self._photos)))]
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crop = crop.resize((self.size, self.size), Image.BILINEAR).filter(ImageFilter.GaussianBlur(1.5))
        out = np.asarray(crop, dtype=np.float32)
        out = out.mean((0, 1)) + 0.5 * (out - out.mean((0, 1)))  # halve the contrast: objects stand out
        return out[:, ::-1] if rng.random() < 0.5 else out


def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:s, 0:s].astype(np.float32)[::-1]  # x, y


def _colour(rng: np.random.Generator, drawn: dict[str, float] | None = None) -> np.ndarray:
    import colorsys

    hue = rng.random()
    if drawn is not None:
        drawn["hue"] = hue
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.4, 1.0), rng.uniform(0.35, 1.0)),
                    dtype=np.float32) * 255


def _texture(rng: np.random.Generator, s: int, contrast: float = 0.35,
             drawn: dict[str, float] | None = None) -> np.ndarray:
    """A random-coloured ``s x s x 3`` float texture (solid, stripes, checker, dots or gradient);
    the pattern mixes in a second colour at most ``contrast``, so a shape's outline stays the
    strongest edge. ``drawn`` receives the base colour's ``hue``."""
    a = _colour(rng, drawn)
    b = _colour(rng)
    b = a + contrast * (b - a)
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    x, y = _grid(s)
    theta, period = rng.uniform(0, math.pi), rng.uniform(4, 14)
    u = x * math.cos(theta) + y * math.sin(theta)
    if kind == "solid":
        t = np.zeros((s, s), np.float32)
    elif kind == "stripes":
        t = (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    elif kind == "checker":
        t = ((x // period + y // period) % 2).astype(np.float32)
    elif kind == "dots":
        t = ((np.mod(x, period) - period / 2) ** 2 + (np.mod(y, period) - period / 2) ** 2
             < (period / 4) ** 2).astype(np.float32)
    else:
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    return a * (1 - t[..., None]) + b * t[..., None]


def _texture_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Smooth multi-scale noise tinted by two colours, plus a faint random texture."""
    noise = np.zeros((s, s), np.float32)
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25)):
        low = rng.random((cells, cells)).astype(np.float32)
        noise += weight * np.asarray(Image.fromarray(low, mode="F").resize((s, s), Image.BICUBIC))
    noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-6)
    a, b = _colour(rng), _colour(rng)
    base = a * (1 - noise[..., None]) + b * noise[..., None]
    return 0.85 * base + 0.15 * _texture(rng, s)


def _disc(s: int, cx: float, cy: float, r: float) -> np.ndarray:
    x, y = _grid(s)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _polygon(s: int, points: np.ndarray) -> np.ndarray:
    im = Image.new("L", (s, s), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(im, dtype=bool)


def _shape_mask(name: str, rng: np.random.Generator, s: int,
                radius: tuple[float, float]) -> np.ndarray:
    """The mask of one object: radius a random fraction in ``radius`` of the side, random
    centre (the shape inside the image by at least half its radius) and rotation."""
    r = rng.uniform(*radius) * s
    cx, cy = rng.uniform(r * 0.5, s - r * 0.5, size=2)
    rot = rng.uniform(-0.35, 0.35)  # +-20 degrees: outlines stay distinct at small sizes

    def ring_points(n: int, radii: Sequence[float]) -> np.ndarray:
        ang = rot + np.arange(n) * 2 * math.pi / n
        rad = np.resize(np.asarray(radii, dtype=np.float64), n)
        return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)

    if name == "circle":
        return _disc(s, cx, cy, r)
    if name == "ellipse":
        x, y = _grid(s)
        u = (x - cx) * math.cos(rot) + (y - cy) * math.sin(rot)
        v = -(x - cx) * math.sin(rot) + (y - cy) * math.cos(rot)
        return (u / r) ** 2 + (v / (r * rng.uniform(0.35, 0.6))) ** 2 <= 1
    if name == "square":
        return _polygon(s, ring_points(4, [r]))
    if name == "triangle":
        return _polygon(s, ring_points(3, [r]))
    if name == "star":
        return _polygon(s, ring_points(10, [r, r * 0.42]))
    if name == "ring":
        return _disc(s, cx, cy, r) & ~_disc(s, cx, cy, r * rng.uniform(0.45, 0.65))
    if name == "cross":
        w = r * 0.36
        arm = np.array([[-r, -w], [r, -w], [r, w], [-r, w]])
        c, sn = math.cos(rot), math.sin(rot)
        rotm = np.array([[c, -sn], [sn, c]])
        bar1 = arm @ rotm.T + [cx, cy]
        bar2 = arm[:, ::-1] @ rotm.T + [cx, cy]
        return _polygon(s, bar1) | _polygon(s, bar2)
    if name == "hexagon":
        return _polygon(s, ring_points(6, [r]))
    raise ValueError(f"unknown shape {name!r}")


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# -- exporters ----------------------------------------------------------------------------------

def _save(image: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)  # PNG: lossless, so every codec starts from the same pixels
    return path.name


def export_imagefolder(scenes: SyntheticScenes, root: str | Path) -> Path:
    """``root/<class>/<index>.png`` (torchvision ImageFolder layout) with the image-level labels.

    Every class gets its folder, also one no scene of this split drew: ImageFolder numbers classes
    by the folders present, so a split without one would number the others differently."""
    root = Path(root)
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, sc in enumerate(scenes):
        _save(sc.image, root / CLASS_NAMES[sc.label] / f"{i:06d}.png")
    return root


def export_coco(scenes: SyntheticScenes, root: str | Path) -> Path:
    """``root/images/*.png`` and ``root/annotations.json`` (COCO instances, RLE masks, 1-based ids).

    Each ``images`` entry also carries the image-level ``label`` (0-based) and ``colour`` (named
    in the top-level ``label_names``), which :class:`~mlcodec.data.sources.CocoSource` passes
    through, so one shard set serves all tasks.
    """
    root = Path(root)
    images, anns = [], []
    for i, sc in enumerate(scenes):
        name = _save(sc.image, root / "images" / f"{i:06d}.png")
        images.append({"id": i, "file_name": name, "width": sc.image.width,
                       "height": sc.image.height, "label": sc.label, "colour": sc.colour})
        t = sc.coco_target()
        for box, cat, seg, m in zip(t["boxes"], t["labels"], t["segmentation"], sc.masks):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat,
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                         "area": int(m.sum()), "segmentation": seg, "iscrowd": 0})
    cats = [{"id": c + 1, "name": n} for c, n in enumerate(CLASS_NAMES)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats,
         "label_names": {"colour": list(COLOUR_NAMES)}}))
    return root / "annotations.json"


def export_yolo(splits: dict[str, SyntheticScenes], root: str | Path) -> Path:
    """Ultralytics layout: ``images/<split>/*.png``, ``labels/<split>/*.txt`` and ``data.yaml``."""
    root = Path(root)
    for split, scenes in splits.items():
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i, sc in enumerate(scenes):
            _save(sc.image, root / "images" / split / f"{i:06d}.png")
            s = sc.image.width
            lines = [f"{c} {(b[0] + b[2]) / 2 / s:.6f} {(b[1] + b[3]) / 2 / s:.6f} "
                     f"{(b[2] - b[0]) / s:.6f} {(b[3] - b[1]) / s:.6f}"
                     for b, c in zip(sc.boxes, sc.labels)]
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {c}: {n}" for c, n in enumerate(CLASS_NAMES))
    yaml = f"path: {root.resolve()}\n" + "".join(f"{s}: images/{s}\n" for s in splits)
    (root / "data.yaml").write_text(yaml + f"names:\n{names}\n")
    return root / "data.yaml"


def export_all(root: str | Path, train: int, val: int, size: int = 128, seed: int = 0,
               formats: Sequence[str] = ("imagefolder", "coco", "yolo")) -> dict[str, Path]:
    """Write train/val splits (seeds ``seed`` and ``seed + 1``) in each of ``formats``."""
    root = Path(root)
    splits = {"train": SyntheticScenes(train, size, seed), "val": SyntheticScenes(val, size, seed + 1)}
    out: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "imagefolder":
            for name, sc in splits.items():
                out[f"imagefolder/{name}"] = export_imagefolder(sc, root / "imagefolder" / name)
        elif fmt == "coco":
            for name, sc in splits.items():
                out[f"coco/{name}"] = export_coco(sc, root / "coco" / name)
        elif fmt == "yolo":
            out["yolo"] = export_yolo(splits, root / "yolo")
        else:
            raise ValueError(f"unknown format {fmt!r}: choose imagefolder, coco or yolo")
    return out
