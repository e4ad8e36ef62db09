"""Latent adapters: a pretrained pixel classifier (a judge) that reads codec latents, no decoding.

A judge is cut where its features reach a stride the latent can reach
(:meth:`mlcodec.tasks.judges.Judge.split`): its front (stem and early stages at high resolution,
most of its time) is replaced by a small trainable network from ``y_hat`` to those features, and
the pretrained rest (the tail) runs unchanged, frozen or optionally fine-tuned::

    head, meta = load_adapter("runs/adapter/latent-adapter.safetensors")
    logits = adapter_logits(head, codec, streams)   # (N, 1000) from the bitstreams' latents

The latent is cropped to the image's own extent first (:func:`crop_latent`: a 224 px image
gives 14x14 cells, not the 16x16 the codec pads to), so the tail sees the grid its front would
have made.

Training: :mod:`mlcodec.tasks.adapter_train` (``mlcodec train-head --task adapter``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models._efficientnet_blocks import InvertedResidual
from torch import Tensor, nn

import mlcodec
from mlcodec.checkpoint import atomic_path

from .heads import LATENT_STRIDE, synthesis_layout
from .judges import Judge, create_judge

HEAD_NAME = "latent-adapter"


def crop_latent(y: Tensor, image_size: tuple[int, int]) -> Tensor:
    """``y`` (``(..., C, h, w)``, padded by the codec) cropped to the cells an ``(H, W)`` image
    covers: ``ceil(H / 16) x ceil(W / 16)``."""
    h, w = (math.ceil(s / LATENT_STRIDE) for s in image_size)
    if y.shape[-2] < h or y.shape[-1] < w:
        raise ValueError(f"a latent of {tuple(y.shape[-2:])} cells cannot hold a {image_size} image")
    return y[..., :h, :w]


class LatentAdapter(nn.Module):
    """``y_hat`` -> a judge's features at image stride ``16 >> stages``: the codec's own first
    ``stages`` synthesis stages (``synthesis``, a :func:`~mlcodec.tasks.heads.synthesis_prefix`,
    frozen and saved with the adapter; none at stride 16), a 3x3 convolution to ``width``,
    ``depth`` inverted residual blocks (timm's, 5x5 depthwise, expansion ``expansion``, ReLU6)
    and a 1x1 projection + batch norm to the judge's ``out_channels``, scaled by the judge's own
    per-channel feature statistics."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 48, depth: int = 2,
                 expansion: float = 4.0, synthesis: nn.Sequential | None = None):
        super().__init__()
        self.synthesis = synthesis.requires_grad_(False) if synthesis is not None else None
        cin = synthesis[-2].out_channels if synthesis is not None else in_channels
        self.stem = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(*[InvertedResidual(width, width, dw_kernel_size=5, exp_ratio=expansion,
                                                       act_layer=nn.ReLU6) for _ in range(depth)])
        self.out = nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        # the judge's feature statistics per channel (set from the teacher before training, saved):
        # the network predicts standardised features, which these map to the judge's scale
        self.register_buffer("feature_mean", torch.zeros(1, out_channels, 1, 1))
        self.register_buffer("feature_scale", torch.ones(1, out_channels, 1, 1))

    def set_feature_statistics(self, features: Tensor) -> None:
        """Per-channel mean and spread of the teacher's ``(N, C, H, W)`` features."""
        flat = features.float().transpose(0, 1).flatten(1)
        self.feature_mean.copy_(flat.mean(1).view(1, -1, 1, 1))
        self.feature_scale.copy_(flat.std(1).clamp_min(1e-3).view(1, -1, 1, 1))

    @property
    def synthesis_stages(self) -> int:
        return 0 if self.synthesis is None else len(self.synthesis) // 2

    @property
    def synthesis_channels(self) -> int:
        return 0 if self.synthesis is None else self.synthesis[-2].out_channels

    @property
    def stride(self) -> int:
        return LATENT_STRIDE >> self.synthesis_stages

    def forward(self, y: Tensor) -> Tensor:
        if self.synthesis is not None:
            with torch.no_grad():
                y = self.synthesis(y)
        return self.out(self.blocks(self.stem(y))) * self.feature_scale + self.feature_mean


class AdapterHead(nn.Module):
    """A :class:`LatentAdapter` and the judge's tail: cropped latents in, the judge's logits out."""

    input = "latent"

    def __init__(self, adapter: LatentAdapter, tail: nn.Module, tune_tail: bool = False):
        super().__init__()
        self.adapter = adapter
        self.tail = tail.requires_grad_(tune_tail)
        self.tune_tail = tune_tail

    def train(self, mode: bool = True) -> AdapterHead:
        super().train(mode)
        if not self.tune_tail:  # a frozen tail keeps its batch-norm statistics
            self.tail.eval()
        return self

    def forward(self, y: Tensor) -> Tensor:
        return self.tail(self.adapter(y))


def save_adapter(head: AdapterHead, path: str | Path, meta: dict[str, Any],
                 dtype: torch.dtype | None = None) -> Path:
    """The adapter's weights (and the tail's, when fine-tuned) with the recipe as metadata;
    floating-point tensors in ``dtype`` when given (``torch.float16`` for a fixture)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in head.state_dict().items() if head.tune_tail or k.startswith("adapter.")}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"head": json.dumps(HEAD_NAME), **{k: json.dumps(v) for k, v in meta.items()}})
    return path


def build_head(judge: Judge, in_channels: int, recipe: dict[str, Any], synthesis: nn.Sequential | None,
               tune_tail: bool = False) -> AdapterHead:
    """A fresh adapter head for ``judge`` from a recipe's ``stride``, ``width``, ``depth`` and
    ``expansion``; ``synthesis`` is the codec's synthesis prefix that reaches that stride
    (:func:`synthesis_prefix`; None at stride 16)."""
    stride = int(recipe["stride"])
    stages = 0 if synthesis is None else len(synthesis) // 2
    if LATENT_STRIDE >> stages != stride:
        raise ValueError(f"a stride-{stride} adapter needs {int(math.log2(LATENT_STRIDE // stride))} codec "
                         f"synthesis stage(s), not {stages}")
    _, tail, channels = judge.split(stride)
    adapter = LatentAdapter(in_channels, channels, int(recipe["width"]), int(recipe["depth"]),
                            float(recipe["expansion"]), synthesis)
    return AdapterHead(adapter, tail, tune_tail)


def adapter_metadata(path: str | Path) -> dict[str, Any]:
    """An adapter checkpoint's metadata (judge, codec, recipe, ...) without loading its weights.
    Raises FileNotFoundError, or ValueError for a file that is not a latent-adapter checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No adapter checkpoint at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    if meta.get("head") != HEAD_NAME:
        raise ValueError(f"{path} is not a latent-adapter checkpoint (head {meta.get('head')!r})")
    return meta


def load_adapter(path: str | Path, judge: Judge | None = None) -> tuple[AdapterHead, dict[str, Any]]:
    """An adapter head from its checkpoint, with its judge's tail (the judge is rebuilt from its
    registry name and weights unless given)."""
    meta = adapter_metadata(path)
    judge = judge or create_judge(meta["judge"], meta.get("judge_weights"))
    if judge.name != meta["judge"]:
        raise ValueError(f"{path} adapts {meta['judge']}, not {judge.name}")
    cin, syn = int(meta["in_channels"]), int(meta.get("synthesis_channels", 0))
    stages = int(meta.get("synthesis_stages", 0))
    head = build_head(judge, cin, meta["recipe"], synthesis_layout(cin, syn, stages) if stages else None,
                      bool(meta.get("tune_tail", False)))
    state = load_file(str(path))
    missing = set(head.state_dict()) - set(state)
    try:
        if any(k.startswith("adapter.") for k in missing):
            raise RuntimeError(f"missing {sorted(missing)[0]}")
        head.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit this version's adapter "
                         f"({str(e).splitlines()[0]}); retrain it with `mlcodec train-head --task adapter`") from e
    return head.eval(), meta


def check_codec(meta: dict[str, Any], codec: mlcodec.Codec, quality: float) -> None:
    """Refuse latents of another codec or other weights than the adapter was trained on."""
    accepted = {f.hex() for f in codec.fingerprints(quality)}
    base = lambda name: name.partition(":")[0].partition("@")[0]  # noqa: E731 (releases: fingerprints decide)
    if base(meta["codec"]) != base(codec.config.name) or not accepted & set(meta["fingerprints"]):
        raise ValueError(f"this adapter was trained on {meta['codec']} latents (weights "
                         f"{', '.join(meta['fingerprints'])}), not {codec.config.name} "
                         f"({codec.fingerprint(quality).hex()}): train one for this codec with "
                         "`mlcodec train-head --task adapter`")


@torch.no_grad()
def adapter_logits(head: AdapterHead, codec: mlcodec.Codec, streams: Sequence[bytes],
                   batch_size: int = 32) -> Tensor:
    """The judge's logits on ``streams`` through the adapter, from their latents (no image decode)."""
    from mlcodec.bitstream import read_header

    out = []
    for i in range(0, len(streams), batch_size):
        part = streams[i : i + batch_size]
        ys = [crop_latent(y, tuple(read_header(s).original_size)) for y, s in zip(codec.decode_latents(part), part)]
        if len({tuple(y.shape) for y in ys}) == 1:
            out.append(head(torch.stack(ys)))
        else:  # images of several sizes: one at a time
            out += [head(y[None]) for y in ys]
    return torch.cat(out).float()
