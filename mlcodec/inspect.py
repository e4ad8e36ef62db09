"""Look at compressed shards as a person would: decoded PNGs and a contact sheet with targets.

Reads WebDataset tar shards with the standard library's ``tarfile`` (the core does not depend on
the webdataset integration); samples are grouped by key, the ``.mlc`` field decoded, and boxes
(``target["boxes"]``, xyxy pixels) and polygon segmentations drawn over the image.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mlcodec.data.shard_fields import decode_target

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


@dataclass(frozen=True)
class ShardSample:
    shard: str
    key: str
    fields: dict[str, bytes]

    @property
    def target(self) -> dict[str, Any]:
        return decode_target(self.fields)


SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_shard(path: str | Path) -> bool:
    return str(path).endswith(SHARD_SUFFIXES)


def shard_files(paths: Sequence[str | Path]) -> list[Path]:
    """The shards given: files, or the ``.tar``/``.tar.gz`` files of folders, in name order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and is_shard(f))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such shard or folder: {p}")
    if not out:
        raise FileNotFoundError(f"no .tar or .tar.gz shards in {' '.join(map(str, paths))}")
    return out


def shard_manifest(path: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a shard folder, or beside a shard file; empty if there is none."""
    p = Path(path)
    m = (p if p.is_dir() else p.parent) / "manifest.json"
    return json.loads(m.read_text()) if m.exists() else {}


def weights_spec(manifest: dict[str, Any]) -> str | None:
    """The manifest's codec when it names trained weights (``NAME:WEIGHTS``): the shards decode
    with those; else None (each bitstream's own codec, packaged weights)."""
    codec = manifest.get("codec", "")
    return codec if ":" in codec else None


def iter_samples(shards: Sequence[Path]) -> Iterator[ShardSample]:
    """Samples of tar shards in order (files grouped by key = name up to the first dot)."""
    for shard in shards:
        try:
            with tarfile.open(shard) as tf:
                key, fields = None, {}
                for m in tf:
                    if not m.isfile():
                        continue
                    base = m.name.rsplit("/", 1)[-1]
                    k, _, ext = base.partition(".")
                    k = m.name[: len(m.name) - len(base)] + k
                    if k != key and key is not None:
                        yield ShardSample(str(shard), key, fields)
                        fields = {}
                    key = k
                    fields[ext] = tf.extractfile(m).read()  # type: ignore[union-attr]
                if key is not None:
                    yield ShardSample(str(shard), key, fields)
        except tarfile.TarError as e:
            raise ValueError(f"{shard}: unreadable shard: {e}") from e


def draw_target(image: Image.Image, target: dict[str, Any], class_names: Sequence[str] = ()) -> Image.Image:
    """A copy of ``image`` with boxes, polygons and class names drawn on it."""
    im = image.convert("RGB")
    draw = ImageDraw.Draw(im, "RGBA")
    labels = target.get("labels", [])
    for i, seg in enumerate(target.get("segmentation") or []):
        colour = PALETTE[(labels[i] if i < len(labels) else i) % len(PALETTE)]
        if isinstance(seg, list):
            for poly in seg:
                if len(poly) >= 6:
                    draw.polygon(list(map(float, poly)), fill=(*colour, 90))
    for i, box in enumerate(target.get("boxes") or []):
        label = labels[i] if i < len(labels) else None
        colour = PALETTE[(label if label is not None else i) % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        if label is not None:
            name = class_names[label] if 0 <= label < len(class_names) else str(label)
            draw.text((float(box[0]) + 2, float(box[1]) + 1), name, fill=colour)
    if "label" in target:
        label = target["label"]
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        draw.text((3, 3), name, fill=(255, 255, 255))
    return im


def contact_sheet(images: Sequence[Image.Image], captions: Sequence[str], cell: int = 192) -> Image.Image:
    """A grid of thumbnails (long side ``cell``) with a caption under each."""
    cols = max(1, math.ceil(math.sqrt(len(images))))
    rows = max(1, math.ceil(len(images) / cols))
    sheet = Image.new("RGB", (cols * cell, rows * (cell + 14)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (im, cap) in enumerate(zip(images, captions)):
        thumb = im.copy()
        thumb.thumbnail((cell, cell))
        x, y = (i % cols) * cell, (i // cols) * (cell + 14)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 3, y + cell + 1), cap[:32], fill=(220, 220, 220))
    return sheet
