"""The default codec ``mlcodec-hyperprior`` and the CompressAI reference ``bmshj2018-hyperprior``."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mlcodec import entropy
from mlcodec.allocator import release_freed_memory
from mlcodec.bitstream import Bitstream, BitstreamError
from mlcodec.codecs.base import CodecConfig
from mlcodec.codecs.learned import LatentCodec
from mlcodec.models import exact_hyper, exact_reference
from mlcodec.models.exact_hyper import MEAN_FRAC_BITS, ExactHyperSynthesis, ExactTables
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.tiling import tiled_analysis, tiled_synthesis
from mlcodec.weights import fingerprint


#: Latent symbols whose scale index is at most this are not entropy-coded, per format version.
#: Index 5 is sigma <= 0.204: such a symbol is zero but with probability ~ 2 * Phi(-0.5 / 0.204)
#: = 1.4% at most, yet they are about half of all symbols, and the coder's cost is per symbol
#: (docs/experiments/input-pipeline.md). The encoder sets them to zero (the predicted
#: mean); the decoder knows which they are from the hyperprior. Version 1 coded every symbol;
#: version 3 skips as 2 does, with indexes from the integer hyper-synthesis.
SKIP_INDEX = {1: -1, 2: 5, 3: 5}


def _channel_indexes(shape: torch.Size) -> torch.Tensor:
    return torch.arange(shape[1], dtype=torch.int32).view(1, -1, 1, 1).expand(shape)


class _CoderTables:
    """CDF tables of a model's two entropy models, converted to lists once."""

    def __init__(self, model: nn.Module) -> None:
        self.z = entropy.CdfTables.from_model(model.entropy_bottleneck)
        self.y = entropy.CdfTables.from_model(model.gaussian_conditional)
        self.scale_bounds = model.gaussian_conditional.scale_table[:-1].clone().float().cpu()
        self.z_medians = model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        b = self.scale_bounds.numpy()
        log_b = np.log(b.astype(np.float64))
        self._log_b0, self._step = float(log_b[0]), float(log_b[-1] - log_b[0]) / (len(b) - 1)
        self._log_spaced = len(b) > 1 and bool(np.allclose(np.diff(log_b), self._step, rtol=1e-4))
        self._padded_bounds = np.concatenate([[-np.inf], b, [np.inf, np.inf]]).astype(np.float32)

    def scale_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """Same indexes as ``GaussianConditional.build_indexes``: how many bounds are below.

        For a log-spaced table (CompressAI's and ours) a logarithm guesses the bin to within
        one, and three comparisons with the table make it exact: twice as fast as a binary
        search, and equal to it bit for bit (streams of either rule decode the same).
        """
        s = scales.detach().float().cpu().contiguous()
        if not self._log_spaced:
            return torch.searchsorted(self.scale_bounds, s).to(torch.int32)
        x, b = s.numpy(), self._padded_bounds
        e = np.clip(x, b[1] * 0.5, b[-3] * 2.0)
        np.log(e, out=e)
        e -= self._log_b0
        e *= 1.0 / self._step
        e = np.clip(e.astype(np.int32), 0, len(b) - 4)  # the guess, within one of the bin
        idx = (b[e] < x).astype(np.int32)
        idx += b[e + 1] < x
        idx += b[e + 2] < x
        idx += e - 1
        return torch.from_numpy(idx)


def _trimmer(latent: torch.Tensor, stride: int = 1, pixels: int = 1 << 14) -> Callable[[], None]:
    """:func:`release_freed_memory` for latents of more than ``pixels`` positions (``stride`` latent
    pixels per position of ``latent``), else nothing: between the latent-side steps of a large
    image, each leaves tens of MB of temporaries that the process would otherwise keep
    (:func:`mlcodec.allocator.keep_freed_memory`) on top of the next step's peak."""
    big = latent.shape[0] * latent.shape[-2] * latent.shape[-1] * stride * stride > pixels
    return release_freed_memory if big else (lambda: None)


def _symbol_checksum(symbols: np.ndarray) -> bytes:
    """Adler-32 of the coded latent symbols (int32, little-endian), 4 bytes."""
    return struct.pack("<I", zlib.adler32(np.ascontiguousarray(symbols, dtype="<i4").data))  # no copy


def _encode_strings(tables: _CoderTables, z_sym: torch.Tensor, y_sym: torch.Tensor,
                    y_idx: torch.Tensor, version: int) -> list[tuple[bytes, ...]]:
    """Per image: one rANS string (``z``, then the symbols of ``y`` that format ``version`` codes)
    and, from version 2, the checksum of those symbols."""
    z_idx = _channel_indexes(z_sym.shape)
    coded = y_idx > SKIP_INDEX[version]
    out = []
    for i in range(z_sym.shape[0]):
        y_coded = y_sym[i][coded[i]]
        rans = entropy.encode([(z_sym[i], z_idx[i], tables.z), (y_coded, y_idx[i][coded[i]], tables.y)])
        out.append((rans,) if version == 1 else (rans, _symbol_checksum(y_coded.numpy())))
    return out


def _decode_z(tables: _CoderTables, streams: Sequence[Bitstream], z_shape: tuple[int, ...]):
    """The rANS decoders (positioned after ``z``) and the integer symbols of ``z``."""
    for i, bs in enumerate(streams):
        expected = 1 if bs.header.version == 1 else 2
        if len(bs.strings) != expected:
            raise BitstreamError(f"bitstream {i}: format {bs.header.version} has {expected} "
                                 f"string(s), this one {len(bs.strings)}")
    z_idx = _channel_indexes(torch.Size(z_shape))
    decoders, z = [], []
    for i, bs in enumerate(streams):
        try:
            decoders.append(entropy.StreamDecoder(bs.strings[0]))
            z.append(decoders[-1].decode(z_idx[0], tables.z))
        except entropy.RansError as e:
            raise BitstreamError(f"bitstream {i}: hyper-latent: {e}") from None
    return decoders, torch.stack(z)


def _decode_y(tables: _CoderTables, decoders: list[entropy.StreamDecoder], y_idx: torch.Tensor,
              streams: Sequence[Bitstream]) -> torch.Tensor:
    """The integer symbols of ``y``; those the stream's format leaves out are zero.

    From format 2 the decoded symbols must match the encoder's checksum. They do not when the
    decoder picked other CDF tables than the encoder, i.e. computed other scales: then the rANS
    stream desynchronises and yields garbage that the container's CRC cannot see.
    """
    version = streams[0].header.version
    idx = y_idx.numpy()
    y_sym = np.empty(idx.shape, dtype=np.int32)
    for i, d in enumerate(decoders):
        try:
            full, values = d.decode_skipping(idx[i], tables.y, SKIP_INDEX[version])
            ok = version < 2 or _symbol_checksum(values) == streams[i].strings[1]
            why = "fails its checksum"
        except entropy.RansError as e:  # a desynchronised stream may run out of words first
            ok, why = False, f"does not decode ({e})"
        if not ok:
            if version >= 3:
                raise BitstreamError(f"bitstream {i}: the latent {why}: the stream is damaged "
                                     f"(its CRC passed)")
            raise BitstreamError(
                f"bitstream {i}: the latent {why}: this machine computed "
                f"other entropy-model scales than the encoder did (format {version} uses a "
                f"floating-point hyperprior: e.g. another thread count, CPU or device); decode "
                f"it where it was encoded, or re-encode the data in format 3 (mlcodec reencode)"
            )
        y_sym[i] = full.reshape(idx.shape[1:])
    return torch.from_numpy(y_sym)


class GainedHyperpriorCodec(LatentCodec):
    """``mlcodec-hyperprior``: mean-scale hyperprior with gain units, one model for all qualities.

    With integer tables (``exact``, stored in the weights file) it writes format 3, whose entropy
    parameters every machine computes alike; without them (weights from before format 3) format 2.
    It reads formats 1 and 2 through the float hyper-synthesis, as they were written.
    """

    def __init__(self, config: CodecConfig, model: GainedMeanScaleHyperprior, device: str = "cpu",
                 exact: ExactTables | None = None):
        super().__init__(config, device)
        self.model = model.to(self.device).eval()
        self.stride = model.stride
        self._fp_float = fingerprint(model)
        self._tables = _CoderTables(model)
        self.exact = exact
        if exact is None:
            self.format_version = 2
            self._fp = self._fp_float
        else:
            self._fp = fingerprint(model, exact.state_dict())
            self._hyper = ExactHyperSynthesis(exact, model.h_s[0].weight, model.log_inv_hyper_gain,
                                              model.log_inv_gain, self.device)

    def fingerprint(self, quality: float) -> bytes:
        return self.stream_fingerprint(quality, self.format_version)

    def fingerprints(self, quality: float) -> tuple[bytes, ...]:
        return tuple(dict.fromkeys((self.fingerprint(quality), self._fp, self._fp_float)))

    def stream_fingerprint(self, quality: float, version: int) -> bytes:
        return self._fp if version >= 3 else self._fp_float

    def _q(self, quality: float, n: int) -> torch.Tensor:
        return torch.full((n,), quality, dtype=torch.float32, device=self.device)

    def _encode(self, x, quality):
        m, t = self.model, self._tables
        gain, _, hgain, inv_hgain = m.gains(self._q(quality, x.shape[0]))
        y_g = tiled_analysis(m.g_a, x, tile=self.tile) * gain
        trim = _trimmer(y_g)
        z_sym = m.hyper_symbols(y_g, hgain).int()
        if self.format_version >= 3:
            idx, means = self._hyper(z_sym, quality)
            trim()
            y_sym = torch.round(y_g - means.to(y_g.dtype) * 2.0**-MEAN_FRAC_BITS).int()
        else:
            scales, means = m.hyper_synthesis(z_sym + t.z_medians, inv_hgain)
            idx = t.scale_indexes(scales)
            y_sym = torch.round(y_g - means).int()
        latent_shape = tuple(y_g.shape[1:])
        del means, y_g
        trim()
        strings = _encode_strings(t, z_sym.cpu(), y_sym.cpu(), idx.cpu(), self.format_version)
        trim()
        return strings, latent_shape

    def _decode(self, streams):
        m, t = self.model, self._tables
        c, h, w = streams[0].header.latent_shape
        quality, version = streams[0].header.quality, streams[0].header.version
        decoders, z_sym = _decode_z(t, streams, (1, m.N, h // 4, w // 4))
        if version >= 3:
            trim = _trimmer(z_sym, 4)
            idx, means = self._hyper(z_sym, quality)
            trim()
            y_sym = _decode_y(t, decoders, idx.cpu(), streams)
            del idx
            trim()
            return self._hyper.dequantize(y_sym.to(self.device), means, quality)
        _, inv_gain, _, inv_hgain = m.gains(self._q(quality, len(streams)))
        z_hat = z_sym.float() + t.z_medians
        scales, means = m.hyper_synthesis(z_hat.to(self.device), inv_hgain)
        y_sym = _decode_y(t, decoders, t.scale_indexes(scales), streams)
        return (y_sym.to(self.device).float() + means) * inv_gain

    def _synthesize(self, y_hat, quality):
        return tiled_synthesis(self.model.g_s, y_hat, tile=self.tile)

    def synthesis_transform(self, quality: float) -> nn.Module:
        return self.model.g_s

    def reference_latent(self, data: bytes) -> np.ndarray:
        """The decoded latent of a format-3 stream through the numpy int64 reference of the integer
        hyper-synthesis (:func:`mlcodec.models.exact_reference.reference_params`) and numpy float64
        dequantization: what :meth:`decode_latent` must equal bit for bit. Slow; for tests."""
        (bs,) = self._parse([data])
        if bs.header.version < 3 or self.exact is None:
            raise BitstreamError(f"only format-3 streams have an integer reference, this one is "
                                 f"format {bs.header.version}")
        m, t, q = self.model, self._tables, bs.header.quality
        c, h, w = bs.header.latent_shape
        decoders, z_sym = _decode_z(t, [bs], (1, m.N, h // 4, w // 4))
        idx, means = exact_reference.reference_params(self.exact, m.h_s[0].weight, m.log_inv_hyper_gain,
                                                  m.log_inv_gain, z_sym.numpy(), q)
        y_sym = _decode_y(t, decoders, torch.from_numpy(idx), [bs]).numpy()
        ig = exact_hyper.quality_constants(m.log_inv_hyper_gain, m.log_inv_gain, q).inv_gain.numpy()
        y = y_sym.astype(np.float64) + means.astype(np.float64) * 2.0**-MEAN_FRAC_BITS
        return (y * ig.reshape(1, -1, 1, 1)).astype(np.float32)[0]


class Bmshj2018Codec(LatentCodec):
    """CompressAI's scale hyperprior (Ballé et al., ICLR 2018): one model per quality 1..8.

    ``quality`` in [0, 1] maps to CompressAI's levels by ``1 + round(7 * quality)``. It keeps
    CompressAI's floating-point hyper-synthesis and so writes format 2: its streams are not
    portable across thread counts, CPUs or devices (the symbol checksum detects a mismatch).
    """

    format_version = 2

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
        y = tiled_analysis(m.g_a, x, tile=self.tile)
        z = m.h_a(torch.abs(y))
        z_sym = torch.round(z - t.z_medians).int()
        scales = m.h_s(z_sym + t.z_medians)
        y_sym = torch.round(y).int()
        strings = _encode_strings(t, z_sym.cpu(), y_sym.cpu(), t.scale_indexes(scales),
                                 self.format_version)
        return strings, tuple(y.shape[1:])

    def _decode(self, streams):
        m, t, _ = self._model(streams[0].header.quality)
        c, h, w = streams[0].header.latent_shape
        decoders, z_sym = _decode_z(t, streams, (1, m.N, h // 4, w // 4))
        idx = t.scale_indexes(m.h_s((z_sym.float() + t.z_medians).to(self.device)))
        return _decode_y(t, decoders, idx, streams).float().to(self.device)

    def _synthesize(self, y_hat, quality):
        return tiled_synthesis(self._model(quality)[0].g_s, y_hat, tile=self.tile)

    def synthesis_transform(self, quality: float) -> nn.Module:
        return self._model(quality)[0].g_s
