"""Dataset sources for compression jobs: each yields :class:`SourceSample` in a stable order.

A source has a length and random access by index, so a resumed job can start at any sample and
parallel workers can load images themselves. Targets are plain JSON-able dicts:

* ``{"label": int}`` for classification (ImageFolder),
* ``{"boxes": [[x0, y0, x1, y1], ...], "labels": [...], "segmentation": [...], "iscrowd": [...]}``
  for COCO detection/segmentation (boxes in pixels, xyxy; labels are category ids; segmentation
  exactly as in the JSON), plus ``"label"`` when the images entry has an image-level label, and
  each further image-level label named in the JSON's top-level ``label_names`` (e.g.
  ``{"colour": ["red", ...]}``),
* anything JSON-able for a Python iterable of ``(image, target)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mlcodec.data.photos import IMAGE_SUFFIXES


@dataclass(frozen=True)
class SourceSample:
    key: str  # unique, stable, webdataset-safe (no dots)
    image: Any  # PIL image, array or tensor (loaded lazily by sources that read files)
    target: dict[str, Any]
    origin: str = ""  # file path or index, for error messages


@dataclass
class Source:
    """Random-access source: ``len(source)``, ``source[i]``, class names and a description."""

    name: str
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> SourceSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "name": self.name, "samples": len(self)}

    def origin(self, i: int) -> str:
        """Where item ``i`` comes from (a file path, a row), for reports; reads nothing."""
        return f"{self.name} item {i}"


def _safe_key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except OSError as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e


class ImageFolderSource(Source):
    """``root/<class>/<image>`` (torchvision ImageFolder layout); labels follow sorted class names."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"No image folder at {self.root}")
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not classes:
            raise ValueError(f"{self.root}: no class subfolders (expected root/<class>/<image>)")
        super().__init__(name=str(self.root), class_names=classes)
        found = [(p, label) for label, c in enumerate(classes)
                 for p in sorted((self.root / c).rglob("*")) if p.is_file()]
        self.files = [(p, label) for p, label in found if p.suffix.lower() in IMAGE_SUFFIXES]
        #: files under the class folders that are not images (by suffix): left out, reported
        self.ignored = [p for p, _ in found if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not self.files:
            raise ValueError(f"{self.root}: no images under the class folders")

    def __len__(self) -> int:
        return len(self.files)

    def origin(self, i: int) -> str:
        return str(self.files[i][0])

    def __getitem__(self, i: int) -> SourceSample:
        path, label = self.files[i]
        key = f"{i:08d}_" + _safe_key(path.relative_to(self.root).with_suffix("").as_posix())
        return SourceSample(key, _open_rgb(path), {"label": label}, str(path))


class CocoSource(Source):
    """COCO instances JSON plus its image folder: boxes (xyxy), labels, segmentation, iscrowd."""

    def __init__(self, annotations: str | Path, images: str | Path) -> None:
        self.annotations, self.images = Path(annotations), Path(images)
        try:
            coco = json.loads(self.annotations.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.annotations}: not a readable COCO JSON: {e}") from e
        cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
        super().__init__(name=str(self.annotations), class_names=[c["name"] for c in cats])
        self.category_ids = [c["id"] for c in cats]
        #: further image-level labels (key -> class names), from the JSON's ``label_names``
        self.label_names: dict[str, list[str]] = dict(coco.get("label_names", {}))
        self.items = sorted(coco["images"], key=lambda im: im["id"])
        self.anns: dict[int, list[dict]] = {im["id"]: [] for im in self.items}
        for a in sorted(coco.get("annotations", []), key=lambda a: a["id"]):
            self.anns.setdefault(a["image_id"], []).append(a)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "category_ids": self.category_ids, "images": str(self.images),
                **({"label_names": self.label_names} if self.label_names else {})}

    def origin(self, i: int) -> str:
        return str(self.images / self.items[i]["file_name"])

    def __getitem__(self, i: int) -> SourceSample:
        info = self.items[i]
        anns = self.anns.get(info["id"], [])
        target = {
            "image_id": info["id"],
            "boxes": [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                       a["bbox"][1] + a["bbox"][3]] for a in anns],
            "labels": [a["category_id"] for a in anns],
            "segmentation": [a.get("segmentation") for a in anns],
            "iscrowd": [a.get("iscrowd", 0) for a in anns],
        }
        for k in ("label", *self.label_names):  # optional image-level classes (synthetic writes them)
            if k in info:
                target[k] = int(info[k])
        path = self.images / info["file_name"]
        key = f"{i:08d}_" + _safe_key(Path(info["file_name"]).with_suffix("").as_posix())
        return SourceSample(key, _open_rgb(path), target, str(path))


class IterableSource(Source):
    """Any iterable of ``(image, target)``; targets must be JSON-able (an int becomes a label)."""

    def __init__(self, items: Iterable[tuple[Any, Any]], name: str = "iterable",
                 class_names: Sequence[str] = ()) -> None:
        super().__init__(name=name, class_names=list(class_names))
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> SourceSample:
        image, target = self.items[i]
        if isinstance(target, int):
            target = {"label": target}
        elif not isinstance(target, dict):
            target = {"target": target}
        return SourceSample(f"{i:09d}", image, target, f"item {i}")
