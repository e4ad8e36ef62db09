"""Task heads that read mlcodec latents, and the pixel-domain references they are measured against.

One table of heads, like the codecs' registry::

    from mlcodec.tasks import create_head, list_heads
    head = create_head("latent-cls", spec, in_channels=96)

Training: ``mlcodec train-head``; evaluation against bitrate: ``mlcodec eval`` (see README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .data import TaskSpec
from .heads import (LatentClassifier, LatentDetector, LatentSegmenter, PixelClassifier,
                    PixelSegmenter)


@dataclass(frozen=True)
class HeadConfig:
    name: str
    task: str  # cls | det | seg
    input: str  # latent | pixel
    description: str
    builder: Callable[[TaskSpec, int], nn.Module] | None  # None: trained by ultralytics


_HEADS: dict[str, HeadConfig] = {c.name: c for c in (
    HeadConfig("latent-cls", "cls", "latent", "timm ResNet-10t trunk, latent stem, avg-pool + linear",
               lambda spec, cin: LatentClassifier(cin, spec.num_outputs)),
    HeadConfig("latent-det", "det", "latent", "timm ResNet-10t trunk + FPN, FCOS-style at stride 8",
               lambda spec, cin: LatentDetector(cin, spec.num_outputs)),
    HeadConfig("latent-seg", "seg", "latent", "timm ResNet-10t trunk + FPN, logits at stride 8",
               lambda spec, cin: LatentSegmenter(cin, spec.num_outputs)),
    HeadConfig("pixel-cls", "cls", "pixel", "timm ResNet-10t stages 1-3 on RGB, avg-pool + linear",
               lambda spec, cin: PixelClassifier(spec.num_outputs)),
    HeadConfig("pixel-seg", "seg", "pixel", "timm ResNet-10t + the same FPN decoder on RGB",
               lambda spec, cin: PixelSegmenter(spec.num_outputs)),
    HeadConfig("pixel-det", "det", "pixel", "ultralytics YOLOv8n from its yaml (no downloads)", None),
)}


def list_heads(task: str | None = None, input: str | None = None) -> list[str]:
    return [n for n, c in _HEADS.items() if (task is None or c.task == task)
            and (input is None or c.input == input)]


def head_config(name: str) -> HeadConfig:
    try:
        return _HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; available: {', '.join(_HEADS)}") from None


def default_head(task: str, input: str = "latent") -> str:
    return f"{input}-{task}"


def create_head(name: str, spec: TaskSpec, in_channels: int = 96) -> nn.Module:
    """Build a randomly initialised head (or reference) for ``spec``'s task and classes."""
    cfg = head_config(name)
    if cfg.task != spec.task:
        raise ValueError(f"head {name!r} is for task {cfg.task!r}, not {spec.task!r}")
    if cfg.builder is None:
        raise ValueError(f"{name!r} is trained by ultralytics: use mlcodec.tasks.yolo")
    return cfg.builder(spec, in_channels)


__all__ = ["HeadConfig", "TaskSpec", "create_head", "default_head", "head_config", "list_heads"]
