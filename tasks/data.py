"""Targets and loaders for the task heads, on the shards the compression job writes.

Targets come from each sample's JSON (see :mod:`mlcodec.data.shard_fields`): ``label`` for
classification, ``boxes`` + ``labels`` (category ids) for detection, ``segmentation`` (COCO
polygons or RLE, decoded with pycocotools) for the semantic map. Category ids map to contiguous
0-based classes through the manifest's ``category_ids`` (COCO sources) or are 0-based already.

Pixel references read image shards written by
:func:`mlcodec.integrations.webdataset.write_image_shards` (JPEG/WebP/AVIF bytes + the same JSON), so the two sides of every comparison read the same samples the same way.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mlcodec.data.shard_fields import decode_target
from mlcodec.inspect import shard_files

TASKS = ("cls", "det", "seg")
# Pixel inputs are scaled to roughly zero mean, unit variance (no pretrained statistics apply).
PIXEL_MEAN, PIXEL_STD = 0.45, 0.25


@dataclass(frozen=True)
class TaskSpec:
    """What a head predicts: ``num_outputs`` channels (seg: classes + background)."""

    task: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...] = ()
    #: classification: the image-level field holding the class (``label``; e.g. ``colour`` for
    #: the synthetic benchmark's unseen task)
    label_key: str = "label"

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) + (1 if self.task == "seg" else 0)

    def class_index(self, category_id: int) -> int:
        return self.category_ids.index(category_id) if self.category_ids else int(category_id)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "class_names": list(self.class_names),
                "category_ids": list(self.category_ids), "label_key": self.label_key}

    @staticmethod
    def from_json(d: dict[str, Any]) -> TaskSpec:
        return TaskSpec(d["task"], tuple(d["class_names"]), tuple(d.get("category_ids", ())),
                        d.get("label_key", "label"))


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return task


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{shard_dir}: no manifest.json (write shards with `mlcodec shard`)")
    return json.loads(path.read_text())


def make_spec(source_names: Sequence[str], label_names: dict[str, Sequence[str]], task: str,
              label_key: str = "label", category_ids: Sequence[int] = ()) -> TaskSpec:
    """The spec of ``task`` over a source with class names ``source_names`` (COCO category ids
    ``category_ids``) and further image-level labels ``label_names`` (key -> names);
    ``label_key`` picks the classification label (its classes are 0-based, no category ids)."""
    check_task(task)
    if label_key != "label":
        if task != "cls":
            raise ValueError(f"--label {label_key} applies to classification, not {task}")
        if label_key not in label_names:
            raise ValueError(f"the data has no image-level label {label_key!r} "
                             f"(it has: label{''.join(', ' + k for k in label_names)})")
        return TaskSpec(task, tuple(label_names[label_key]), (), label_key)
    if not source_names:
        raise ValueError(f"the data lists no class names; task {task!r} needs them")
    return TaskSpec(task, tuple(source_names), tuple(category_ids))


def spec_from_manifest(manifest: dict[str, Any], task: str, label_key: str = "label") -> TaskSpec:
    src = manifest.get("source", {})
    return make_spec(manifest.get("class_names") or [], src.get("label_names", {}), task, label_key,
                     src.get("category_ids", ()))


def shard_urls(dirs: Sequence[str | Path]) -> list[str]:
    """The shards of each folder in order; a folder without any is an error."""
    return [str(p) for d in dirs for p in shard_files([d])]


def semantic_map(target: dict[str, Any], spec: TaskSpec, h: int, w: int) -> np.ndarray:
    """``(h, w)`` int64: 0 background, ``class + 1`` under each instance (later ones on top)."""
    from pycocotools import mask as mask_utils

    out = np.zeros((h, w), np.int64)
    for seg, cat in zip(target.get("segmentation", []), target.get("labels", [])):
        if not seg:
            continue
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        out[mask_utils.decode(rle).astype(bool)] = spec.class_index(cat) + 1
    return out


def task_targets(targets: Sequence[dict[str, Any]], spec: TaskSpec, sizes: Tensor) -> Any:
    """Batch targets for ``spec.task``: a label tensor, a list of box dicts, or ``(B, H, W)`` maps.

    ``sizes`` are the original image sizes ``(B, 2)`` (H, W) (the collated ``image_sizes``);
    segmentation maps are padded to the
    largest with ``-1`` (ignored by the loss and metrics).
    """
    if spec.task == "cls":
        try:
            return torch.tensor([int(t[spec.label_key]) for t in targets])
        except KeyError as e:
            raise ValueError(f"classification needs a {spec.label_key!r} in every sample's target") from e
    if spec.task == "det":
        return [{"boxes": torch.tensor(t.get("boxes", []), dtype=torch.float32).reshape(-1, 4),
                 "labels": torch.tensor([spec.class_index(c) for c in t.get("labels", [])],
                                        dtype=torch.long)} for t in targets]
    hmax, wmax = (int(v) for v in sizes.max(0).values)
    maps = torch.full((len(targets), hmax, wmax), -1, dtype=torch.long)
    for i, (t, (h, w)) in enumerate(zip(targets, sizes.tolist())):
        maps[i, :h, :w] = torch.from_numpy(semantic_map(t, spec, h, w))
    return maps


# -- pixel shards -------------------------------------------------------------------------------

def image_to_tensor(im: Image.Image) -> Tensor:
    """RGB ``uint8`` image -> normalised float ``3 x H x W`` (the pixel references' input)."""
    t = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    return (t.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


class _DecodeImages:
    """webdataset stage: image bytes (any Pillow format) -> normalised tensor + target."""

    def __call__(self, src):
        for s in src:
            ext = next((k for k in ("jpg", "jpeg", "webp", "avif", "png") if k in s), None)
            if ext is None:
                raise ValueError(f"sample {s.get('__key__')} in {s.get('__url__')} holds no image")
            im = Image.open(io.BytesIO(s[ext]))
            yield {"__key__": s["__key__"], "image": image_to_tensor(im), "target": decode_target(s),
                   "size": (im.height, im.width)}


def pixel_dataset(urls: Sequence[str], shuffle: int = 0, seed: int = 0):
    """A dataset over image shards, split and shuffled per epoch as the latent loader's
    (``set_epoch``), the shard order shuffled too."""
    from mlcodec.integrations.latent_loader import LatentDataset

    return LatentDataset(list(urls), shuffle=shuffle, shardshuffle=True, seed=seed,
                         stage=_DecodeImages())


def make_loader(dirs: Sequence[str | Path], input: str, batch_size: int, shuffle: int = 0,
                workers: int = 0, seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over latent shards (``input="latent"``) or image shards (``"pixel"``)."""
    from mlcodec.integrations.latent_loader import collate_padded, latent_dataset

    urls = shard_urls(dirs)
    if input == "latent":
        # shards of one codec spec decode with it (trained weights: ``NAME:WEIGHTS``), else each
        # bitstream's own codec with the packaged weights
        specs = {read_manifest(d).get("codec") for d in dirs}
        codec = specs.pop() if len(specs) == 1 else None
        ds = latent_dataset(urls, output="latent", codec=codec, shuffle=shuffle, seed=seed)
    elif input == "pixel":
        ds = pixel_dataset(urls, shuffle=shuffle, seed=seed)
    else:
        raise ValueError(f"input must be 'latent' or 'pixel', not {input!r}")
    key = "latent" if input == "latent" else "image"
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                       collate_fn=functools.partial(collate_padded, key=key))
