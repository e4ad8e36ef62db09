"""The fields of an mlcodec shard sample: writer and reader side by side so they cannot drift.

In the core because both the shard writer/loader (``mlcodec.integrations``) and the core's shard
inspection (:mod:`mlcodec.inspect`) read them.

    __key__     "00000042_cat_img_0042"
    mlc         the packed .mlc bitstream (CRC-protected)
    cls         the class label as ASCII text (when the target has "label")
    json        the whole target dict (boxes, labels, segmentation, ...) as UTF-8 JSON; left out
                when the target is only a label (``cls`` holds it, and each tar member costs
                0.5-1 KB of header and padding next to bitstreams of a few KB)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def encode_sample(key: str, data: bytes, target: dict[str, Any], ext: str = "mlc") -> dict[str, Any]:
    """The webdataset sample for one compressed image (nothing pickled); ``ext`` names the
    bitstream field (``jpg``/``webp``/``avif`` in image shards written for pixel references)."""
    sample: dict[str, Any] = {"__key__": key, ext: data}
    if "label" in target:
        sample["cls"] = str(int(target["label"])).encode()
    if set(target) != {"label"}:
        sample["json"] = json.dumps(target, sort_keys=True).encode()
    return sample


def decode_target(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The target dict back from a raw sample or its fields (empty when it has none)."""
    if "json" in sample:
        return json.loads(sample["json"].decode())
    return {"label": int(sample["cls"])} if "cls" in sample else {}


def decode_label(sample: Mapping[str, Any]) -> int | None:
    """The class label of a raw sample, or None when it is unlabelled."""
    return int(sample["cls"]) if "cls" in sample else None
