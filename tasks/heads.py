"""Task networks: heads on the codec latent and the pixel-domain references they are compared to.

Latent heads take the dequantized latent ``y_hat`` (``C x H/16 x W/16``) straight from the entropy
decoder. Their trunk is a timm ResNet whose pixel stem (7x7/2 conv + max-pool, 4x down) is swapped
for a 2x *up*-sampling of the latent, so ``layer1`` works at image stride 8, ``layer2`` at 16 and
so on. By default that upsampling is the codec's own first synthesis stage (5x5/2 transposed conv +
inverse GDN, ``g_s[:2]``), frozen, followed by a learned 3x3 conv (:class:`SynthesisStem`): the
codec spreads a shape's outline over the channel patterns of 2-4 latent cells, and its synthesis
already knows how to unfold them. On the synthetic benchmark that stem beat a learned transposed
conv on all three tasks for a little more time per epoch (docs/experiments/task-heads.md); the
learned stem remains (``stem="learned"``) for codecs whose synthesis does not start that way. A
full ResNet-18 with a stride-1 latent stem memorised the training set, so the lighter ResNet-10t
stopping at ``layer3`` is kept (``layer2`` for the segmenter), and every head trains with strong
weight decay (``options.DEFAULT_WEIGHT_DECAY``).
Pixel references are the usual models on decoded RGB: a timm ResNet-10t classifier, a timm
ResNet-10t + FPN segmenter, and (in :mod:`mlcodec.tasks.yolo`) an ultralytics YOLO detector. Both
sides use the same timm family so the comparison is of inputs, not of networks.

Every network returns raw outputs; losses and decoding live in :mod:`mlcodec.tasks.losses`.
"""

from __future__ import annotations

import copy
import functools

import timm
import torch
import torch.nn.functional as F
from compressai.layers import GDN
from compressai.models.utils import deconv
from torch import Tensor, nn

LATENT_STRIDE = 16
TRUNK_STRIDE = LATENT_STRIDE // 2  # image stride of layer1 after the upsampling stem


def synthesis_layers(in_channels: int, channels: int) -> nn.Sequential:
    """The layout of a codec's first synthesis stage: 5x5/2 transposed conv + inverse GDN (the
    ``g_s[:2]`` of Ballé et al.'s and Minnen et al.'s models), latent stride 16 -> stride 8."""
    return nn.Sequential(deconv(in_channels, channels), GDN(channels, inverse=True))


def synthesis_prefix(g_s: nn.Module, stages: int) -> nn.Sequential:
    """A frozen copy of a codec's first ``stages`` synthesis stages, each laid out as
    :func:`synthesis_layers` (latent stride 16 to ``16 >> stages``). Raises ValueError when
    ``g_s`` does not start that way."""
    layers = list(g_s.children())[: 2 * stages] if isinstance(g_s, nn.Sequential) else []
    ok = stages >= 1 and len(layers) == 2 * stages and all(
        isinstance(conv, nn.ConvTranspose2d) and conv.stride == (2, 2) and conv.kernel_size == (5, 5)
        and isinstance(gdn, GDN) and gdn.inverse for conv, gdn in zip(layers[::2], layers[1::2]))
    if not ok:
        raise ValueError(f"this codec's synthesis transform does not start with {stages} stage(s) of a "
                         "5x5 stride-2 transposed convolution and an inverse GDN")
    return copy.deepcopy(nn.Sequential(*layers)).requires_grad_(False)  # copies the values


def synthesis_layout(in_channels: int, channels: int, stages: int = 1) -> nn.Sequential:
    """An empty :func:`synthesis_prefix` of that shape, to load a saved one into."""
    return nn.Sequential(*synthesis_layers(in_channels, channels),
                         *[m for _ in range(stages - 1) for m in synthesis_layers(channels, channels)])


def synthesis_stage(g_s: nn.Module) -> nn.Sequential:
    """A detached copy of a codec's first synthesis stage (``g_s[:2]``) for a :class:`SynthesisStem`.

    Raises ValueError when ``g_s`` does not start like :func:`synthesis_layers` (a stride-2
    transposed convolution and an inverse GDN): such a codec's heads need ``stem="learned"``.
    """
    try:
        return synthesis_prefix(g_s, 1)
    except ValueError as e:
        raise ValueError(f"{e}; train its heads with stem='learned'") from None


class SynthesisStem(nn.Module):
    """The codec's own first synthesis stage, frozen, then a learned 3x3 convolution to the trunk
    width: stride-8 features the codec already knows how to draw images from.

    The frozen stage is saved with the head, so a checkpoint stands alone; it is not trained (no
    gradients, not decayed) and runs under ``no_grad``.
    """

    def __init__(self, stage: nn.Sequential, width: int):
        super().__init__()
        self.stage = stage.requires_grad_(False)
        self.proj = nn.Conv2d(stage[0].out_channels, width, 3, 1, 1, bias=False)

    @property
    def channels(self) -> int:
        return self.stage[0].out_channels

    def forward(self, y: Tensor) -> Tensor:
        with torch.no_grad():
            f = self.stage(y)
        return self.proj(f)


def latent_trunk(in_channels: int, arch: str = "resnet10t", synthesis: nn.Sequential | None = None) -> nn.Module:
    """A timm ResNet whose pixel stem is replaced by a 2x upsampling of the latent: the codec's
    frozen first synthesis stage (``synthesis``, see :func:`synthesis_stage`) + a 3x3 conv, or,
    without it, a learned 4x4 transposed convolution."""
    net = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
    width = net.bn1.num_features  # conv1 may be a deep stem (the "t" variants)
    if synthesis is None:
        net.conv1 = nn.ConvTranspose2d(in_channels, width, 4, 2, 1, bias=False)
    else:
        if synthesis[0].in_channels != in_channels:
            raise ValueError(f"the synthesis stage reads {synthesis[0].in_channels} latent channels, "
                             f"not {in_channels}")
        net.conv1 = SynthesisStem(synthesis, width)
    net.maxpool = nn.Identity()
    return net


def synthesis_channels(head: nn.Module) -> int:
    """Channels of a latent head's frozen synthesis stage (0: a learned stem), for checkpoints."""
    stem = getattr(getattr(head, "trunk", None), "conv1", None)
    return stem.channels if isinstance(stem, SynthesisStem) else 0


def _stages(net: nn.Module, x: Tensor, n: int = 3) -> list[Tensor]:
    """Outputs of ``layer1..layer<n>`` of a timm ResNet."""
    x = net.act1(net.bn1(net.conv1(x)))
    x = net.maxpool(x)
    outs = []
    for name in ("layer1", "layer2", "layer3", "layer4")[:n]:
        x = getattr(net, name)(x)
        outs.append(x)
    return outs


@functools.lru_cache(maxsize=32)
def _bilinear_matrix(n: int, factor: int) -> Tensor:
    """``(n * factor, n)``: 1-D bilinear upsampling (``align_corners=False``, torch's rule)."""
    src = ((torch.arange(n * factor, dtype=torch.float64) + 0.5) / factor - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w1 = src - i0
    a = torch.zeros(n * factor, n, dtype=torch.float64)
    rows = torch.arange(n * factor)
    a.index_put_((rows, i0), 1 - w1, accumulate=True)
    a.index_put_((rows, i1), w1, accumulate=True)
    return a


def upsample_bilinear(x: Tensor, factor: int) -> Tensor:
    """``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)`` as two small
    matrix products (same values to float rounding). Its backward is matrix products too, where
    torch's CPU bilinear backward is a scatter: on the latent segmenter's stride-8 logits it took a
    quarter of a training step."""
    h, w = x.shape[-2:]
    ah = _bilinear_matrix(h, factor).to(x.device, x.dtype)
    aw = _bilinear_matrix(w, factor).to(x.device, x.dtype)
    return ah @ x @ aw.T


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FPNDecoder(nn.Module):
    """Top-down fusion of ResNet stages, then learned 2x upsamplings down to ``out_stride``."""

    def __init__(self, in_channels: list[int], in_strides: list[int], width: int, out_stride: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.smooth = _conv_bn(width, width)
        ups, stride = [], in_strides[0]
        while stride > out_stride:
            ups.append(nn.Sequential(nn.ConvTranspose2d(width, width, 4, 2, 1), nn.BatchNorm2d(width),
                                     nn.ReLU(inplace=True), _conv_bn(width, width)))
            stride //= 2
        self.up = nn.Sequential(*ups)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            x = lat(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        return self.up(self.smooth(x))


class LatentClassifier(nn.Module):
    """Image classification from the latent: ResNet trunk up to ``layer3`` (image stride 32),
    global average pool, linear. (``layer4`` at stride 64 only added capacity to memorise.)"""

    input = "latent"

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resnet10t",
                 synthesis: nn.Sequential | None = None):
        super().__init__()
        self.trunk = latent_trunk(in_channels, arch, synthesis)
        self.trunk.layer4 = nn.Identity()  # unused
        self.fc = nn.Linear(self.trunk.layer3[-1].conv2.out_channels, num_classes)

    def forward(self, y: Tensor) -> Tensor:
        return self.fc(_stages(self.trunk, y)[2].mean((2, 3)))


class PixelClassifier(nn.Module):
    """The pixel reference: a timm ResNet (random init, no downloads) up to ``layer3`` (image
    stride 16), global average pool, linear — the latent classifier's design on RGB. (The stock
    ResNet-10t with ``layer4`` reached top-1 0.23 on the synthetic benchmark, memorising it.)"""

    input = "pixel"

    def __init__(self, num_classes: int, arch: str = "resnet10t"):
        super().__init__()
        self.trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        self.trunk.layer4 = nn.Identity()  # unused
        self.fc = nn.Linear(self.trunk.layer3[-1].conv2.out_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(_stages(self.trunk, x)[2].mean((2, 3)))


class _DenseBase(nn.Module):
    """A trunk + FPN decoder over its first ``len(strides)`` stages (image strides ``strides``),
    producing a feature map at ``out_stride`` (image pixels)."""

    def __init__(self, trunk: nn.Module, strides: list[int], width: int, out_stride: int):
        super().__init__()
        self.depth = len(strides)
        for i in range(self.depth + 1, 5):  # unused by the decoder
            setattr(trunk, f"layer{i}", nn.Identity())
        self.trunk = trunk
        chans = [getattr(trunk, f"layer{i}")[-1].conv2.out_channels for i in range(1, self.depth + 1)]
        self.decoder = FPNDecoder(chans, strides, width, out_stride)
        self.out_stride = out_stride

    def features(self, x: Tensor) -> Tensor:
        return self.decoder(_stages(self.trunk, x, self.depth))


class LatentSegmenter(_DenseBase):
    """Semantic segmentation from the latent: FPN over ``layer1``/``layer2`` at stride 8/16,
    logits at ``out_stride`` (8), bilinear to full resolution.

    ``layer3`` (stride 32) is left out: without it the head was as good and faster on the
    synthetic benchmark; what held the three-stage head back was generalisation, not reach, and
    the coarsest grid is now the pixel reference's. Logits stay at stride 8: the latent holds
    stride-16 detail, and neither a learned 2x upsampling to stride 4 nor the codec's own second
    synthesis stage (frozen ``g_s[2:4]``) refining them gained anything for their extra time
    (probes in docs/experiments/task-heads.md).
    """

    input = "latent"

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resnet10t", width: int = 64,
                 out_stride: int = TRUNK_STRIDE, synthesis: nn.Sequential | None = None):
        s = TRUNK_STRIDE
        super().__init__(latent_trunk(in_channels, arch, synthesis), [s, 2 * s], width, out_stride)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def logits(self, y: Tensor) -> Tensor:
        """Class logits at ``out_stride`` (what the training loss upsamples, see
        :func:`~mlcodec.tasks.losses.segmentation_loss`)."""
        return self.classifier(self.features(y))

    def forward(self, y: Tensor) -> Tensor:
        return upsample_bilinear(self.logits(y), self.out_stride)


class PixelSegmenter(_DenseBase):
    """The pixel reference segmenter: timm ResNet-10t (stock stem) with the same FPN decoder."""

    input = "pixel"

    def __init__(self, num_classes: int, arch: str = "resnet10t", width: int = 64):
        trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        super().__init__(trunk, [4, 8, 16], width, out_stride=4)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits at ``out_stride`` (4)."""
        return self.classifier(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return upsample_bilinear(self.logits(x), self.out_stride)


def _add_fcos_outputs(net: nn.Module, width: int, num_classes: int) -> None:
    """FCOS-style outputs per cell (a tower, class logits, box distances ``(l, t, r, b)`` in pixels
    and a centerness logit) as attributes of ``net``; :func:`_fcos_outputs` runs them and
    :func:`mlcodec.tasks.losses.detection_loss` / :func:`~mlcodec.tasks.losses.decode_boxes` turn
    them into a loss and boxes."""
    net.tower = nn.Sequential(_conv_bn(width, width), _conv_bn(width, width))
    net.cls = nn.Conv2d(width, num_classes, 3, 1, 1)
    net.box = nn.Conv2d(width, 4, 3, 1, 1)
    net.ctr = nn.Conv2d(width, 1, 3, 1, 1)
    nn.init.constant_(net.cls.bias, -4.6)  # prior 1% foreground (focal-loss init)
    net.num_classes = num_classes


def _fcos_outputs(net: nn.Module, f: Tensor) -> dict[str, Tensor]:
    f = net.tower(f)
    return {"cls": net.cls(f), "box": F.softplus(net.box(f)) * net.out_stride,
            "ctr": net.ctr(f), "stride": torch.tensor(net.out_stride)}


class LatentDetector(_DenseBase):
    """Anchor-free (FCOS-style) detection from the latent at image stride ``out_stride``."""

    input = "latent"

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resnet10t", width: int = 96,
                 out_stride: int = 8, synthesis: nn.Sequential | None = None):
        s = TRUNK_STRIDE
        super().__init__(latent_trunk(in_channels, arch, synthesis), [s, 2 * s, 4 * s], width, out_stride)
        _add_fcos_outputs(self, width, num_classes)

    def forward(self, y: Tensor) -> dict[str, Tensor]:
        return _fcos_outputs(self, self.features(y))


class PixelDetector(_DenseBase):
    """The latent detector's design on RGB (``pixel-fcos``): timm ResNet-10t (stock stem),
    ``layer1``-``layer3`` at strides 4/8/16, the same FPN and FCOS outputs at stride 8. A pixel
    detector of this package's own, trainable by ``train-head`` and usable as a frozen expert in
    codec training (YOLO, ``pixel-det``, trains only through ultralytics)."""

    input = "pixel"

    def __init__(self, num_classes: int, arch: str = "resnet10t", width: int = 96, out_stride: int = 8):
        trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        super().__init__(trunk, [4, 8, 16], width, out_stride)
        _add_fcos_outputs(self, width, num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return _fcos_outputs(self, self.features(x))


def pixel_features(model: nn.Module, x: Tensor) -> Tensor:
    """A pixel reference's ``layer3`` features (image stride 16, the codec latent's grid): what
    codec training aligns the latent with (MTCE)."""
    return _stages(model.trunk, x, 3)[2]
