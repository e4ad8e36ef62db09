"""Task heads that read mlcodec latents, and the pixel-domain references they are measured against.

One table of heads, like the codecs' registry::

    from mlcodec.tasks import create_head, list_heads
    from mlcodec.tasks.heads import synthesis_stage
    g_s = codec.synthesis_transform(quality)  # the codec the latents came from
    head = create_head("latent-cls", spec, in_channels=96, synthesis=synthesis_stage(g_s))

Training: ``mlcodec train-head``; evaluation against bitrate: ``mlcodec eval`` (see README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from torch import nn

from .data import TaskSpec


@dataclass(frozen=True)
class HeadConfig:
    name: str
    task: str  # cls | det | seg | adapter
    input: str  # latent | pixel
    description: str
    #: (spec, latent channels, the codec's first synthesis stage or None) -> module;
    #: None: trained by ultralytics
    builder: Callable[[TaskSpec, int, nn.Sequential | None], nn.Module] | None


def _heads() -> ModuleType:
    """:mod:`mlcodec.tasks.heads`, imported when a head is built: it loads timm, which the CLI
    does not need to start."""
    from . import heads

    return heads


_HEADS: dict[str, HeadConfig] = {c.name: c for c in (
    HeadConfig("latent-cls", "cls", "latent", "timm ResNet-10t trunk, latent stem, avg-pool + linear",
               lambda spec, cin, syn: _heads().LatentClassifier(cin, spec.num_outputs, synthesis=syn)),
    HeadConfig("latent-det", "det", "latent", "timm ResNet-10t trunk + FPN, FCOS-style at stride 8",
               lambda spec, cin, syn: _heads().LatentDetector(cin, spec.num_outputs, synthesis=syn)),
    HeadConfig("latent-seg", "seg", "latent", "timm ResNet-10t layer1-2 + FPN, logits at stride 8",
               lambda spec, cin, syn: _heads().LatentSegmenter(cin, spec.num_outputs, synthesis=syn)),
    HeadConfig("pixel-cls", "cls", "pixel", "timm ResNet-10t stages 1-3 on RGB, avg-pool + linear",
               lambda spec, cin, syn: _heads().PixelClassifier(spec.num_outputs)),
    HeadConfig("pixel-seg", "seg", "pixel", "timm ResNet-10t + the same FPN decoder on RGB",
               lambda spec, cin, syn: _heads().PixelSegmenter(spec.num_outputs)),
    HeadConfig("pixel-det", "det", "pixel", "ultralytics YOLOv8n from its yaml (no downloads)", None),
    HeadConfig("latent-adapter", "adapter", "latent", "a pretrained judge reading latents: the codec's "
               "first synthesis stages and a small network to its stride-4 features, then its own rest "
               "(mlcodec.tasks.adapter)", None),
    HeadConfig("pixel-fcos", "det", "pixel", "timm ResNet-10t + FPN on RGB, FCOS-style at stride 8",
               lambda spec, cin, syn: _heads().PixelDetector(spec.num_outputs)),
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


def create_head(name: str, spec: TaskSpec, in_channels: int = 96,
                synthesis: nn.Sequential | None = None) -> nn.Module:
    """Build a randomly initialised head (or reference) for ``spec``'s task and classes.

    ``synthesis``: for latent heads, the codec's first synthesis stage
    (:func:`mlcodec.tasks.heads.synthesis_stage`), used frozen as the stem; without it the stem
    is a learned upsampling (lower accuracy, see :mod:`mlcodec.tasks.heads`).
    """
    cfg = head_config(name)
    if cfg.builder is None and cfg.task == "adapter":
        raise ValueError(f"{name!r} is built from a pretrained judge: mlcodec.tasks.adapter "
                         "(mlcodec train-head --task adapter --judge NAME)")
    if synthesis is not None and cfg.input != "latent":
        raise ValueError(f"{name!r} reads pixels: a synthesis stage only applies to latent heads")
    if cfg.task != spec.task:
        raise ValueError(f"head {name!r} is for task {cfg.task!r}, not {spec.task!r}")
    if cfg.builder is None:
        raise ValueError(f"{name!r} is trained by ultralytics: use mlcodec.tasks.yolo")
    return cfg.builder(spec, in_channels, synthesis)


__all__ = ["HeadConfig", "TaskSpec", "create_head", "default_head", "head_config", "list_heads"]
