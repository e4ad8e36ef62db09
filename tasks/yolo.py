"""The pixel-domain detection reference: ultralytics YOLO built from its yaml, trained offline.

Training goes through ultralytics' own trainer on a YOLO-layout dataset (``mlcodec synth`` writes
one); nothing is downloaded (``YOLO_OFFLINE=1``, ``pretrained=False``, no plots, AMP off). The
trained weights are exported to safetensors and rebuilt from the same yaml for inference, which
runs the network and ultralytics' NMS directly on image tensors.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor

from mlcodec.checkpoint import atomic_path

DEFAULT_YAML = "yolov8n.yaml"


def _offline() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")


def train_yolo(data_yaml: str | Path, out: str | Path, epochs: int = 10, imgsz: int = 128,
               batch: int = 32, model_yaml: str = DEFAULT_YAML, workers: int = 2, seed: int = 0,
               class_names: Sequence[str] = (), device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train on ``data_yaml`` and write ``out/pixel-det.safetensors``; returns timing and paths.
    ``device``: ``"cpu"`` or a CUDA device (``"cuda"``, ``"cuda:1"``), in full precision
    (``amp=False``) on either."""
    _offline()
    from ultralytics import YOLO

    from .train import resolve_device

    dev = resolve_device(device)
    yolo_device = "cpu" if dev.type == "cpu" else str(dev.index or 0)  # ultralytics' spelling
    out = Path(out)
    y = YOLO(model_yaml)
    t0 = time.perf_counter()
    y.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=yolo_device,
            workers=workers, amp=False, plots=False, pretrained=False, project=str(out.resolve()),
            name="yolo", exist_ok=True, seed=seed, verbose=False)
    seconds = time.perf_counter() - t0
    model = y.model.float().cpu()
    names = list(class_names) or [model.names[i] for i in sorted(model.names)]
    path = out / "pixel-det.safetensors"
    meta = {"head": "pixel-det", "yaml": model_yaml, "nc": len(names), "class_names": names,
            "imgsz": imgsz, "epochs": epochs, "train_seconds": seconds}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
    return {"checkpoint": str(path), "train_seconds": seconds, "epochs": epochs,
            "history": yolo_history(out / "yolo" / "results.csv")}


def yolo_history(results_csv: str | Path) -> list[dict[str, float]]:
    """Per-epoch ``epoch``, ``seconds`` (ultralytics' cumulative ``time``: training *and* its
    validation), ``map`` and ``map_50`` (ultralytics' own validator) from its ``results.csv``;
    empty when the file is missing."""
    import csv

    path = Path(results_csv)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    return [{"epoch": int(float(r["epoch"])), "seconds": float(r.get("time") or "nan"),
             "map": float(r["metrics/mAP50-95(B)"]), "map_50": float(r["metrics/mAP50(B)"])}
            for r in rows]


class YoloDetector:
    """Inference with exported weights: ``predict_images(images) -> [{"boxes","scores","labels"}]``."""

    input = "pixel"

    def __init__(self, path: str | Path, conf: float = 0.001, iou: float = 0.6, max_det: int = 100):
        _offline()
        from safetensors import safe_open
        from ultralytics.nn.tasks import DetectionModel

        with safe_open(str(path), framework="pt") as f:
            self.meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        self.model = DetectionModel(self.meta["yaml"], nc=self.meta["nc"], verbose=False)
        self.model.load_state_dict(load_file(str(path)))
        self.model.eval()
        self.conf, self.iou, self.max_det = conf, iou, max_det

    @torch.no_grad()
    def predict_images(self, images: Sequence[Image.Image]) -> list[dict[str, Tensor]]:
        from ultralytics.utils.nms import non_max_suppression

        ts = [torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
              for im in images]
        h = max(t.shape[1] for t in ts)
        w = max(t.shape[2] for t in ts)
        h32, w32 = -(-h // 32) * 32, -(-w // 32) * 32  # the network's stride
        x = torch.stack([F.pad(t.float() / 255, (0, w32 - t.shape[2], 0, h32 - t.shape[1]), value=0.447)
                         for t in ts])
        preds = non_max_suppression(self.model(x), self.conf, self.iou, max_det=self.max_det)
        return [{"boxes": p[:, :4], "scores": p[:, 4], "labels": p[:, 5].long()} for p in preds]
