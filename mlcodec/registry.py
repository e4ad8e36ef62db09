"""The one table of codec names (timm-style): ``create_codec``, ``list_codecs``, ``codec_for``.

A learned codec can be given weights of its own, from ``mlcodec train-codec`` (with or without an
objective), as ``NAME:WEIGHTS``::

    codec = create_codec("mlcodec-hyperprior:runs/tuned/weights.safetensors")

Such a spec works wherever a codec name does (shard jobs, loaders, ``--codec``); shard manifests
record it with the weights' absolute path, and the fingerprint in every bitstream still checks
that the weights are the ones it was written with.

Released weights stay addressable when a codec's weights are replaced: ``NAME@N`` is the N-th
release (``CodecConfig.earlier`` lists the packaged files of the earlier ones), and ``codec_for``
picks the release whose fingerprint a stream carries, so streams and shards written with earlier
weights keep decoding.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from importlib import resources
from pathlib import Path

from mlcodec.bitstream import Bitstream, BitstreamError, read_header
from mlcodec.codecs.base import Codec, CodecConfig


def _build_gained(config: CodecConfig, pretrained: bool, device: str) -> Codec:
    from mlcodec.codecs.hyperprior import GainedHyperpriorCodec
    from mlcodec.models import exact_calibration, exact_hyper
    from mlcodec.models.gained_hyperprior import DEFAULT_LAMBDAS, GainedMeanScaleHyperprior
    from mlcodec.weights import load_weights, read_metadata

    if pretrained:
        path = pretrained_path(config)
        arch = read_metadata(path)["architecture"]
        model = GainedMeanScaleHyperprior(**arch)  # type: ignore[arg-type]
        extra = load_weights(model, path)
        exact = exact_hyper.ExactTables.from_state_dict(extra) if extra else None
    else:  # random weights (tests): integer tables calibrated on random hyper-latents
        import torch

        model = GainedMeanScaleHyperprior(num_levels=len(DEFAULT_LAMBDAS))
        model.init_gains(list(DEFAULT_LAMBDAS))
        model.update(force=True)
        gen = torch.Generator().manual_seed(0)
        z = torch.randint(-8, 9, (2, model.N, 4, 4), generator=gen)
        exact = exact_calibration.integerize(model, [(z, q) for q in (0.0, 0.5, 1.0)])
    return GainedHyperpriorCodec(config, model, device, exact)


def _build_bmshj(config: CodecConfig, pretrained: bool, device: str) -> Codec:
    from mlcodec.codecs.hyperprior import Bmshj2018Codec

    return Bmshj2018Codec(config, pretrained, device)


def _build_pillow(config: CodecConfig, pretrained: bool, device: str) -> Codec:
    from mlcodec.codecs.pixel import PillowCodec

    return PillowCodec(config)


_CODECS: dict[str, CodecConfig] = {
    c.name: c
    for c in (
        CodecConfig("mlcodec-hyperprior", 1, "learned",
                    "Mean-scale hyperprior with gain units; one model for quality 0..1 (default). "
                    "@2: hyper-synthesis narrowed to 64x64 by mask decay (faster latent loading)",
                    _build_gained, weights="mlcodec-hyperprior.safetensors",
                    earlier=("mlcodec-hyperprior@1.safetensors",)),
        CodecConfig("mlcodec-unified", 3, "learned",
                    "mlcodec-hyperprior fine-tuned for people and machines (mlcodec.tasks.unified); "
                    "its own weights and codec id. @3: EfficientNet-Lite0 beside procedural seg/det "
                    "experts; @2: EfficientNet-Lite0 as the expert on real photos, quality 0 near "
                    "0.05 bpp; @1: procedural experts, MTCE + DIKL",
                    _build_gained, weights="mlcodec-unified.safetensors",
                    earlier=("mlcodec-unified@1.safetensors", "mlcodec-unified@2.safetensors")),
        CodecConfig("bmshj2018-hyperprior", 2, "learned",
                    "CompressAI's scale hyperprior (Balle 2018), 8 models; weights download once",
                    _build_bmshj),
        CodecConfig("jpeg", 101, "pixel", "Pillow JPEG, 4:2:0", _build_pillow, file_extension=".jpg"),
        CodecConfig("webp", 102, "pixel", "Pillow WebP (method 6)", _build_pillow, file_extension=".webp"),
        CodecConfig("avif", 103, "pixel", "Pillow AVIF, 4:2:0", _build_pillow, file_extension=".avif"),
        CodecConfig("png", 104, "pixel", "Pillow PNG, lossless (quality ignored): reference shards",
                    _build_pillow, file_extension=".png"),
    )
}
DEFAULT_CODEC = "mlcodec-hyperprior"


def list_codecs(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Registered codec names matching a glob ``pattern`` (and ``kind``: learned/pixel)."""
    return [n for n, c in _CODECS.items()
            if fnmatch.fnmatch(n, pattern) and (kind is None or c.kind == kind)]


def codec_config(name: str) -> CodecConfig:
    """The registry row of ``name``; for ``NAME:WEIGHTS``, a copy naming those weights (the name
    becomes ``NAME:/absolute/path``). Raises ValueError for an unknown name or a codec that takes
    no weights file, FileNotFoundError for a missing file."""
    base, sep, weights = name.partition(":")
    base, at, release = base.partition("@")
    try:
        config = _CODECS[base]
    except KeyError:
        raise ValueError(f"Unknown codec {base!r}; see mlcodec.list_codecs(): {list_codecs()}") from None
    if at:
        if sep:
            raise ValueError(f"{name!r}: give a release (NAME@N) or weights (NAME:WEIGHTS), not both")
        if not release.isdigit() or not 1 <= int(release) <= config.releases:
            raise ValueError(f"{name!r}: {base} has releases @1..@{config.releases}")
        n = int(release)
        files = (*config.earlier, config.weights)
        return dataclasses.replace(config, name=f"{base}@{n}", weights=files[n - 1])
    if not sep:
        return config
    if config.weights is None:
        raise ValueError(f"{base} takes no weights file (in {name!r}); only "
                         f"{', '.join(c.name for c in _CODECS.values() if c.weights)} do")
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path} (codec {name!r})")
    return dataclasses.replace(config, name=f"{base}:{path}", weights=str(path))


def pretrained_path(config: CodecConfig) -> Path:
    """The weights file of a learned codec: packaged, or the one a ``NAME:WEIGHTS`` spec names."""
    if config.weights is None:
        raise ValueError(f"{config.name} ships no weights in the package")
    if Path(config.weights).is_absolute():
        return Path(config.weights)
    path = Path(str(resources.files("mlcodec.pretrained") / config.weights))
    if not path.is_file():
        raise FileNotFoundError(
            f"Packaged weights {path} are missing; reinstall mlcodec or use pretrained=False"
        )
    return path


def create_codec(name: str = DEFAULT_CODEC, pretrained: bool = True, device: str = "cpu") -> Codec:
    """Build a registered codec, or ``NAME:WEIGHTS`` with weights of its own; ``pretrained=False``
    gives random weights (for tests)."""
    config = codec_config(name)
    return config.builder(config, pretrained, device)


def release_for(name: str, fingerprint: bytes, quality: float, pretrained: bool = True,
                device: str = "cpu") -> Codec:
    """The release of codec ``name`` whose weights write ``fingerprint`` at ``quality`` (as a shard
    manifest or a head records them): ``NAME`` for the newest, ``NAME@N`` for an earlier one, the
    current weights where none of the releases wrote it (whose decode, or the caller, then names
    the mismatch). ``NAME@N`` and ``NAME:WEIGHTS`` are built as they are."""
    if "@" in name or ":" in name or not pretrained:
        return create_codec(name, pretrained, device)
    config = codec_config(name)
    newest = create_codec(config.name, pretrained, device)  # the usual case: one build
    if config.releases == 1 or fingerprint in newest.fingerprints(quality):  # type: ignore[attr-defined]
        return newest
    for n in range(config.releases - 1, 0, -1):
        codec = create_codec(f"{config.name}@{n}", pretrained, device)
        if fingerprint in codec.fingerprints(quality):  # type: ignore[attr-defined]
            return codec
    return newest


def codec_for(data: bytes | Bitstream, pretrained: bool = True, device: str = "cpu") -> Codec:
    """The codec that wrote an ``.mlc`` bitstream (bytes or parsed): the codec id in its header
    names the codec, and its weights fingerprint the release (:func:`release_for`)."""
    header = data.header if isinstance(data, Bitstream) else read_header(data)
    for c in _CODECS.values():
        if c.codec_id == header.codec_id and c.kind == "learned":
            return release_for(c.name, header.fingerprint, header.quality, pretrained, device)
    raise BitstreamError(f"bitstream names codec id {header.codec_id}, which this mlcodec does not know")


class CodecCache:
    """The codecs that decode a run of streams, built once per codec id and weights fingerprint
    (a release): ``spec`` (e.g. ``NAME:WEIGHTS``) for every stream when given, else the codec each
    stream's header names (:func:`codec_for`). Used by the loader, ``mlcodec decode`` and
    ``mlcodec verify``."""

    def __init__(self, spec: str | None = None, device: str = "cpu") -> None:
        self.spec, self.device = spec, device
        self._codecs: dict[tuple[int, bytes], Codec] = {}

    def __call__(self, data: bytes | Bitstream) -> Codec:
        h = data.header if isinstance(data, Bitstream) else read_header(data)
        key = (h.codec_id, h.fingerprint)
        if key not in self._codecs:
            self._codecs[key] = create_codec(self.spec, device=self.device) if self.spec \
                else codec_for(data, device=self.device)
        return self._codecs[key]
