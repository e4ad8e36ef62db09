"""Task networks: heads on the codec latent and the pixel-domain references they are compared to.

Latent heads take the dequantized latent ``y_hat`` (``C x H/16 x W/16``) straight from the entropy
decoder. Their trunk is a timm ResNet whose pixel stem (7x7/2 conv + max-pool, 4x down) is swapped
for a learned 2x *up*-sampling of the latent (4x4 transposed conv over its channels), so ``layer1``
works at image stride 8, ``layer2`` at 16 and so on. Shapes at stride 16 live in the channel
patterns of 2-4 latent cells. In a 12-epoch probe on the synthetic benchmark (1,600 training
images) a full ResNet-18 with a stride-1 latent stem memorised the training set and stayed near
chance on validation (top-1 0.2); the upsampling stem, the lighter ResNet-10t and stopping at
``layer3`` brought it to 0.45-0.5. Pixel references are the usual
models on decoded RGB: a timm ResNet-10t classifier, a timm ResNet-10t + FPN segmenter, and (in
:mod:`mlcodec.tasks.yolo`) an ultralytics YOLO detector. Both sides use the same timm family so
the comparison is of inputs, not of networks.

Every network returns raw outputs; losses and decoding live in :mod:`mlcodec.tasks.losses`.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LATENT_STRIDE = 16
TRUNK_STRIDE = LATENT_STRIDE // 2  # image stride of layer1 after the upsampling stem


def latent_trunk(in_channels: int, arch: str = "resnet10t") -> nn.Module:
    """A timm ResNet with the pixel stem replaced by a 2x upsampling of the latent."""
    net = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
    width = net.bn1.num_features  # conv1 may be a deep stem (the "t" variants)
    net.conv1 = nn.ConvTranspose2d(in_channels, width, 4, 2, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _stages(net: nn.Module, x: Tensor, n: int = 3) -> list[Tensor]:
    """Outputs of ``layer1..layer<n>`` of a timm ResNet."""
    x = net.act1(net.bn1(net.conv1(x)))
    x = net.maxpool(x)
    outs = []
    for name in ("layer1", "layer2", "layer3", "layer4")[:n]:
        x = getattr(net, name)(x)
        outs.append(x)
    return outs


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

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resnet10t"):
        super().__init__()
        self.trunk = latent_trunk(in_channels, arch)
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
    """A trunk + FPN decoder producing a feature map at ``out_stride`` (image pixels)."""

    def __init__(self, trunk: nn.Module, strides: list[int], width: int, out_stride: int):
        super().__init__()
        trunk.layer4 = nn.Identity()  # unused: the decoder reads layer1..layer3
        self.trunk = trunk
        chans = [getattr(trunk, f"layer{i}")[-1].conv2.out_channels for i in (1, 2, 3)]
        self.decoder = FPNDecoder(chans, strides, width, out_stride)
        self.out_stride = out_stride

    def features(self, x: Tensor) -> Tensor:
        return self.decoder(_stages(self.trunk, x))


class LatentSegmenter(_DenseBase):
    """Semantic segmentation from the latent: FPN over stages at stride 8/16/32, logits at
    ``out_stride`` (8), bilinear to full resolution.

    The latent holds stride-16 detail: a further learned 2x upsampling to stride 4 (the pixel
    reference's output stride) cost 1.45x the training time per epoch for no gain (val mIoU
    0.389 vs 0.394 at stride 8, 16 epochs on the synthetic benchmark).
    """

    input = "latent"

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resnet10t", width: int = 64,
                 out_stride: int = TRUNK_STRIDE):
        s = TRUNK_STRIDE
        super().__init__(latent_trunk(in_channels, arch), [s, 2 * s, 4 * s], width, out_stride)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, y: Tensor) -> Tensor:
        logits = self.classifier(self.features(y))
        return F.interpolate(logits, scale_factor=self.out_stride, mode="bilinear", align_corners=False)


class PixelSegmenter(_DenseBase):
    """The pixel reference segmenter: timm ResNet-10t (stock stem) with the same FPN decoder."""

    input = "pixel"

    def __init__(self, num_classes: int, arch: str = "resnet10t", width: int = 64):
        trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        super().__init__(trunk, [4, 8, 16], width, out_stride=4)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.classifier(self.features(x))
        return F.interpolate(logits, scale_factor=self.out_stride, mode="bilinear", align_corners=False)


class LatentDetector(_DenseBase):
    """Anchor-free (FCOS-style) detection from the latent at image stride ``out_stride``.

    Outputs per cell: class logits, box distances ``(l, t, r, b)`` in pixels and a centerness
    logit; :func:`mlcodec.tasks.losses.detection_loss` and :func:`~mlcodec.tasks.losses.decode_boxes`
    turn them into a loss and boxes.
    """

    input = "latent"

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resnet10t", width: int = 96,
                 out_stride: int = 8):
        s = TRUNK_STRIDE
        super().__init__(latent_trunk(in_channels, arch), [s, 2 * s, 4 * s], width, out_stride)
        self.tower = nn.Sequential(_conv_bn(width, width), _conv_bn(width, width))
        self.cls = nn.Conv2d(width, num_classes, 3, 1, 1)
        self.box = nn.Conv2d(width, 4, 3, 1, 1)
        self.ctr = nn.Conv2d(width, 1, 3, 1, 1)
        nn.init.constant_(self.cls.bias, -4.6)  # prior 1% foreground (focal-loss init)
        self.num_classes = num_classes

    def forward(self, y: Tensor) -> dict[str, Tensor]:
        f = self.tower(self.features(y))
        return {"cls": self.cls(f), "box": F.softplus(self.box(f)) * self.out_stride,
                "ctr": self.ctr(f), "stride": torch.tensor(self.out_stride)}
