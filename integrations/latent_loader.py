"""Streaming mlcodec shards into training: a webdataset pipeline of latents or images.

The decode stage batches across samples (``decode_batch``): entropy decoding is per image, the
hyper-synthesis (and, for ``output="image"``, the synthesis) runs once per batch of latents of one
codec, shape and quality. It sorts the incoming (shuffled) samples into such batches first, so a
stream that mixes qualities still decodes in full batches, and hands them on in their incoming
order. Every stage is a small picklable object, so the pipeline works in DataLoader workers;
shards are split per node (``RANK``/``WORLD_SIZE`` or torch.distributed) and per worker.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

import mlcodec
from mlcodec.bitstream import Bitstream, BitstreamError, unpack
from mlcodec.data.shard_fields import decode_label, decode_target

log = logging.getLogger(__name__)


class CorruptSampleError(ValueError):
    """A sample in a shard could not be decoded; names the shard and the key."""


class DecodeStage:
    """webdataset stage: raw samples -> ``{"__key__", "latent"|"image", "target", "cls"?}``."""

    def __init__(self, output: str = "latent", codec: str | None = None, decode_batch: int = 16,
                 on_error: str = "raise", device: str = "cpu") -> None:
        if output not in ("latent", "image"):
            raise ValueError(f"output must be 'latent' or 'image', got {output!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.output, self.codec_name, self.decode_batch = output, codec, decode_batch
        self.on_error, self.device = on_error, device
        self.skipped = 0
        self._codecs: dict[int, mlcodec.Codec] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_codecs": {}}  # codecs are rebuilt in each worker

    def _codec(self, bs: Bitstream) -> mlcodec.Codec:
        cid = bs.header.codec_id
        if cid not in self._codecs:
            codec = mlcodec.codec_for(bs, device=self.device) if self.codec_name is None \
                else mlcodec.create_codec(self.codec_name, device=self.device)
            self._codecs[cid] = codec
        return self._codecs[cid]

    def _decode(self, streams: list[Bitstream]) -> list[torch.Tensor]:
        codec = self._codec(streams[0])
        if self.output == "latent":
            return codec.decode_latents(streams)
        from torchvision.transforms.functional import pil_to_tensor

        return [pil_to_tensor(im) for im in codec.decompress_batch(streams)]

    def _fail(self, sample: dict[str, Any], err: Exception) -> None:
        where = f"shard {sample.get('__url__', '?')} key {sample.get('__key__', '?')}"
        if self.on_error == "raise":
            raise CorruptSampleError(f"{where}: {err}") from err
        self.skipped += 1
        warnings.warn(f"skipping {where}: {err} ({self.skipped} skipped so far)", stacklevel=2)

    def _emit(self, sample: dict[str, Any], bs: Bitstream, value: torch.Tensor) -> dict[str, Any]:
        out = {"__key__": sample["__key__"], self.output: value, "target": decode_target(sample),
               "size": tuple(bs.header.original_size)}
        label = decode_label(sample)
        if label is not None:
            out["cls"] = label
        return out

    def _flush(self, pending: list[tuple[int, dict[str, Any], Bitstream]],
               ready: dict[int, dict[str, Any] | None]) -> None:
        """Decode ``pending`` (sequence numbers, samples, unpacked bitstreams) together into
        ``ready``; if that fails, find the culprit(s) one by one (``None`` marks a skipped one)."""
        try:
            values = self._decode([bs for _, _, bs in pending])
        except (BitstreamError, KeyError, ValueError):
            values = None
        if values is not None:
            for (i, s, bs), v in zip(pending, values):
                ready[i] = self._emit(s, bs, v)
            return
        for i, s, bs in pending:
            try:
                ready[i] = self._emit(s, bs, self._decode([bs])[0])
            except (BitstreamError, KeyError, ValueError) as e:
                ready[i] = None
                self._fail(s, e)

    def __call__(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Unpack each sample's bitstream (checking its CRC) as it arrives and queue it with
        others of its codec, latent shape, quality and format; a queue is decoded when it holds
        ``decode_batch`` samples. Samples come out in the order they came in, so training batches
        mix qualities as the shuffled stream does. At most ``8 * decode_batch`` samples are held
        back: beyond that the queue holding the oldest is decoded as it is, so a stream of many
        different shapes keeps flowing."""
        groups: dict[tuple, list[tuple[int, dict[str, Any], Bitstream]]] = {}
        ready: dict[int, dict[str, Any] | None] = {}
        received = emitted = 0
        for sample in src:
            try:
                if "mlc" not in sample:
                    raise KeyError("sample has no .mlc bitstream")
                bs = unpack(sample["mlc"])
            except (BitstreamError, KeyError, ValueError) as e:
                self._fail(sample, e)
                continue
            h = bs.header
            key = (h.codec_id, h.latent_shape, h.quality, h.version)
            group = groups.setdefault(key, [])
            group.append((received, sample, bs))
            received += 1
            if len(group) >= self.decode_batch:
                self._flush(groups.pop(key), ready)
            while True:
                while emitted in ready:
                    out = ready.pop(emitted)
                    emitted += 1
                    if out is not None:
                        yield out
                if received - emitted <= 8 * self.decode_batch:
                    break
                oldest = min(groups, key=lambda k: groups[k][0][0])  # it holds sample `emitted`
                self._flush(groups.pop(oldest), ready)
        for key in sorted(groups, key=lambda k: groups[k][0][0]):
            self._flush(groups[key], ready)
        for i in range(emitted, received):
            out = ready.pop(i)
            if out is not None:
                yield out


def _shard_error_handler(on_error: str):
    import webdataset as wds

    def handler(exn: Exception) -> bool:
        if on_error == "skip":
            warnings.warn(f"skipping unreadable shard data: {exn}", stacklevel=2)
            return True
        if isinstance(exn, CorruptSampleError):
            return wds.reraise_exception(exn)
        raise CorruptSampleError(f"unreadable shard data: {exn}") from exn

    return handler


def latent_dataset(
    urls: str | Sequence[str],
    output: str = "latent",
    codec: str | None = None,
    shuffle: int = 0,
    shardshuffle: bool | int = False,
    epoch_length: int | None = None,
    decode_batch: int = 16,
    on_error: str = "raise",
    seed: int = 0,
):
    """A webdataset pipeline over mlcodec shards, for ``torch.utils.data.DataLoader``.

    Args:
        urls: shard paths/URLs (brace patterns allowed) or a list of them.
        output: ``"latent"`` yields the dequantized latent ``y_hat`` (no synthesis transform);
            ``"image"`` yields decoded ``uint8`` image tensors ``3xHxW``.
        codec: decode with this codec (a registered name, or ``NAME:WEIGHTS`` for trained
            weights); by default the one each bitstream names, with its packaged weights.
        shuffle: sample shuffle buffer size (0 = no shuffling).
        shardshuffle: shuffle the shard order each epoch (``True`` or a buffer size).
        epoch_length: make the dataset this many samples long per epoch (``with_epoch``).
        decode_batch: samples decoded together (batched hyper-synthesis / synthesis).
        on_error: ``"raise"`` (default) stops with the shard and key of a corrupt sample;
            ``"skip"`` drops it with a warning.

    Samples are dicts ``{"__key__", "latent" or "image", "target", "cls" (if labelled)}``; use
    :func:`collate_padded` to batch samples of different sizes.
    """
    import webdataset as wds

    if isinstance(urls, str):
        urls = [urls]
    urls = [u for pattern in urls for u in wds.shardlists.expand_urls(pattern)]
    stages: list[Any] = [wds.SimpleShardList(urls, seed=seed)]
    if shardshuffle:
        stages.append(wds.shuffle(100 if shardshuffle is True else int(shardshuffle), seed=seed))
    stages += [wds.split_by_node, wds.split_by_worker,
               wds.tarfile_to_samples(handler=_shard_error_handler(on_error))]
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(DecodeStage(output, codec, decode_batch, on_error))
    pipeline = wds.DataPipeline(*stages)
    return pipeline.with_epoch(epoch_length) if epoch_length else pipeline


def pad_stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(B, C, H, W)`` of ``C x h x w`` tensors zero-padded bottom/right to the largest h, w."""
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    batch = tensors[0].new_zeros((len(tensors), tensors[0].shape[0], h, w))
    for i, t in enumerate(tensors):
        batch[i, :, : t.shape[-2], : t.shape[-1]] = t
    return batch


def collate_padded(samples: Sequence[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
    """Stack latents/images of different sizes by zero-padding to the largest (bottom/right).

    Returns ``{key: (B, C, H, W), "sizes": (B, 2) unpadded tensor H, W, "image_sizes": (B, 2)
    H, W of the original images, "keys", "targets", "cls"?}``.
    """
    if not samples:
        raise ValueError("collate_padded needs at least one sample")
    key = key or ("latent" if "latent" in samples[0] else "image")
    tensors = [s[key] for s in samples]
    out = {key: pad_stack(tensors), "sizes": torch.tensor([t.shape[-2:] for t in tensors]),
           "keys": [s["__key__"] for s in samples], "targets": [s["target"] for s in samples]}
    if all("size" in s for s in samples):  # original image (H, W), also for latents
        out["image_sizes"] = torch.tensor([s["size"] for s in samples])
    if all("cls" in s for s in samples):
        out["cls"] = torch.tensor([s["cls"] for s in samples])
    return out
