"""The default codec ``mlcodec-hyperprior`` and the CompressAI reference ``bmshj2018-hyperprior``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mlcodec import entropy
from mlcodec.bitstream import Bitstream
from mlcodec.codecs.base import CodecConfig
from mlcodec.codecs.learned import LatentCodec
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.weights import fingerprint


def _channel_indexes(shape: torch.Size) -> torch.Tensor:
    return torch.arange(shape[1], dtype=torch.int32).view(1, -1, 1, 1).expand(shape)


class _CoderTables:
    """CDF tables of a model's two entropy models, converted to lists once."""

    def __init__(self, model: nn.Module) -> None:
        self.z = entropy.CdfTables.from_model(model.entropy_bottleneck)
        self.y = entropy.CdfTables.from_model(model.gaussian_conditional)
        self.scale_bounds = model.gaussian_conditional.scale_table[:-1].clone()
        self.z_medians = model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)

    def scale_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """Same indexes as ``GaussianConditional.build_indexes``, by binary search."""
        return torch.searchsorted(self.scale_bounds, scales.contiguous()).to(torch.int32)


def _encode_strings(tables: _CoderTables, z_sym: torch.Tensor, y_sym: torch.Tensor,
                    y_idx: torch.Tensor) -> list[tuple[bytes, ...]]:
    z_idx = _channel_indexes(z_sym.shape)
    return [
        (entropy.encode([(z_sym[i], z_idx[i], tables.z), (y_sym[i], y_idx[i], tables.y)]),)
        for i in range(z_sym.shape[0])
    ]


def _decode_z(tables: _CoderTables, streams: Sequence[Bitstream], z_shape: tuple[int, ...]):
    decoders = [entropy.StreamDecoder(bs.strings[0]) for bs in streams]
    z_idx = _channel_indexes(torch.Size(z_shape))
    z_sym = torch.stack([d.decode(z_idx[0], tables.z) for d in decoders])
    return decoders, z_sym.float() + tables.z_medians


class GainedHyperpriorCodec(LatentCodec):
    """``mlcodec-hyperprior``: mean-scale hyperprior with gain units, one model for all qualities."""

    def __init__(self, config: CodecConfig, model: GainedMeanScaleHyperprior, device: str = "cpu"):
        super().__init__(config, device)
        self.model = model.to(self.device).eval()
        self.stride = model.stride
        self._fp = fingerprint(model)
        self._tables = _CoderTables(model)

    def fingerprint(self, quality: float) -> bytes:
        return self._fp

    def _q(self, quality: float, n: int) -> torch.Tensor:
        return torch.full((n,), quality, dtype=torch.float32, device=self.device)

    def _encode(self, x, quality):
        m, t = self.model, self._tables
        gain, _, hgain, inv_hgain = m.gains(self._q(quality, x.shape[0]))
        y_g = m.g_a(x) * gain
        z_g = m.h_a(y_g) * hgain
        z_sym = torch.round(z_g - t.z_medians).int()
        scales, means = m.hyper_synthesis(z_sym + t.z_medians, inv_hgain)
        y_sym = torch.round(y_g - means).int()
        strings = _encode_strings(t, z_sym.cpu(), y_sym.cpu(), t.scale_indexes(scales).cpu())
        return strings, tuple(y_g.shape[1:])

    def _decode(self, streams):
        m, t = self.model, self._tables
        c, h, w = streams[0].header.latent_shape
        q = self._q(streams[0].header.quality, len(streams))
        _, inv_gain, _, inv_hgain = m.gains(q)
        decoders, z_hat = _decode_z(t, streams, (1, m.N, h // 4, w // 4))
        scales, means = m.hyper_synthesis(z_hat.to(self.device), inv_hgain)
        idx = t.scale_indexes(scales).cpu()
        y_sym = torch.stack([d.decode(idx[i], t.y) for i, d in enumerate(decoders)])
        return (y_sym.to(self.device).float() + means) * inv_gain

    def _synthesize(self, y_hat, quality):
        return self.model.g_s(y_hat).clamp_(0, 1)


class Bmshj2018Codec(LatentCodec):
    """CompressAI's scale hyperprior (Ballé et al., ICLR 2018): one model per quality 1..8.

    ``quality`` in [0, 1] maps to CompressAI's levels by ``1 + round(7 * quality)``.
    """

    def __init__(self, config: CodecConfig, pretrained: bool, device: str = "cpu") -> None:
        super().__init__(config, device)
        self.pretrained = pretrained
        self._models: dict[int, tuple[nn.Module, _CoderTables, bytes]] = {}

    @staticmethod
    def level(quality: float) -> int:
        return 1 + round(7 * quality)

    def _model(self, quality: float):
        lvl = self.level(quality)
        if lvl not in self._models:
            from compressai.zoo import bmshj2018_hyperprior

            try:
                model = bmshj2018_hyperprior(quality=lvl, pretrained=self.pretrained)
            except Exception as e:  # noqa: BLE001 - network errors come in many types
                raise RuntimeError(
                    f"Could not fetch CompressAI's pretrained bmshj2018-hyperprior (quality {lvl}): "
                    f"{e}. It needs internet access once; use pretrained=False for random weights."
                ) from e
            model = model.to(self.device).eval()
            model.update(force=True)
            self._models[lvl] = (model, _CoderTables(model), fingerprint(model))
        return self._models[lvl]

    def fingerprint(self, quality: float) -> bytes:
        return self._model(quality)[2]

    def _encode(self, x, quality):
        m, t, _ = self._model(quality)
        y = m.g_a(x)
        z = m.h_a(torch.abs(y))
        z_sym = torch.round(z - t.z_medians).int()
        scales = m.h_s(z_sym + t.z_medians)
        y_sym = torch.round(y).int()
        strings = _encode_strings(t, z_sym.cpu(), y_sym.cpu(), t.scale_indexes(scales).cpu())
        return strings, tuple(y.shape[1:])

    def _decode(self, streams):
        m, t, _ = self._model(streams[0].header.quality)
        c, h, w = streams[0].header.latent_shape
        decoders, z_hat = _decode_z(t, streams, (1, m.N, h // 4, w // 4))
        idx = t.scale_indexes(m.h_s(z_hat.to(self.device))).cpu()
        return torch.stack([d.decode(idx[i], t.y) for i, d in enumerate(decoders)]).float().to(self.device)

    def _synthesize(self, y_hat, quality):
        return self._model(quality)[0].g_s(y_hat).clamp_(0, 1)
