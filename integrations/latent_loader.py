"""Streaming mlcodec shards into training: a webdataset pipeline of latents or images.

The decode stage batches across samples (``decode_batch``): entropy decoding is per image, the
hyper-synthesis (and, for ``output="image"``, the synthesis) runs once per batch of latents of one
codec, shape and quality. It sorts the incoming (shuffled) samples into such batches first, so a
stream that mixes qualities still decodes in full batches, and hands them on in their incoming
order. Every stage is a small picklable object, so the pipeline works in DataLoader workers;
shards are split per node (``RANK``/``WORLD_SIZE`` or torch.distributed) and per worker.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import mlcodec
from mlcodec import rans
from mlcodec.bitstream import Bitstream, BitstreamError, unpack
from mlcodec.codecs.decoding import decode_each
from mlcodec.data.shard_fields import decode_label, decode_target
from mlcodec.models import exact_kernels
from mlcodec.registry import CodecCache

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
        self._codecs = CodecCache(codec, device)
        # here, so that forked DataLoader workers inherit them instead of paying for them each: the
        # compiled entropy decoder and integer kernels, and the learned codecs' module (importing
        # compressai takes about 2 s; building a codec in a worker then takes 0.06 s)
        rans.load()
        exact_kernels.load()
        importlib.import_module("mlcodec.codecs.hyperprior")

    def __getstate__(self) -> dict[str, Any]:
        # codecs are rebuilt in each worker
        return {**self.__dict__, "_codecs": CodecCache(self.codec_name, self.device)}

    def _decode(self, streams: list[Bitstream]) -> list[torch.Tensor]:
        codec = self._codecs(streams[0])  # one per codec id and fingerprint (release)
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
        values, _ = decode_each(self._decode, [bs for _, _, bs in pending],
                                (BitstreamError, KeyError, ValueError))
        for (i, s, bs), v in zip(pending, values):
            if isinstance(v, Exception):
                ready[i] = None
                self._fail(s, v)
            else:
                ready[i] = self._emit(s, bs, v)

    def __call__(self, src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Unpack each sample's bitstream (checking its CRC) as it arrives and queue it with
        others of its codec and weights, latent shape, quality and format; a queue is decoded when
        it holds ``decode_batch`` samples. Samples come out in the order they came in, so training
        batches mix qualities as the shuffled stream does. At most ``8 * decode_batch`` samples are held
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
            key = (h.codec_id, h.fingerprint, h.latent_shape, h.quality, h.version)
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


def resolve_shards(urls: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard URLs from paths, brace patterns (``shard-{000000..000009}.tar``) and shard folders
    (their ``manifest.json`` order, or every ``.tar``/``.tar.gz`` in them). A local file that does
    not exist is a ``FileNotFoundError`` naming it; remote URLs (``pipe:``, ``http(s)://``,
    ``s3://``...) are passed on as they are."""
    import webdataset as wds

    from mlcodec.inspect import shard_files

    items = [urls] if isinstance(urls, (str, Path)) else list(urls)
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            manifest = p / "manifest.json"
            if manifest.exists():
                out += [str(p / name) for name in json.loads(manifest.read_text())["shards"]]
            else:
                out += [str(f) for f in shard_files([p])]
            continue
        for url in wds.shardlists.expand_urls(str(item)):
            if "://" not in url and not url.startswith("pipe:") and not Path(url).is_file():
                raise FileNotFoundError(f"no shard at {url} (from {item}); give existing shard "
                                        f"files, a pattern that matches them, or the shard folder")
            out.append(url)
    if not out:
        raise FileNotFoundError(f"no shards in {urls}")
    return out


class LatentDataset(torch.utils.data.IterableDataset):
    """The loader's dataset: a webdataset pipeline over mlcodec shards, rebuilt for each pass.

    Every DataLoader worker and every DDP rank must see the same shard order before the shards are
    split between them, or an epoch reads some shards twice and others never. So a pass draws its
    shard order (``shardshuffle``) from a base seed and the epoch only, never from the worker;
    the sample shuffle buffer adds the rank and the worker.

    * ``seed=None`` (default): each epoch reshuffles, as ``DataLoader(shuffle=True)`` does. The
      base is the DataLoader's per-epoch base seed (``get_worker_info().seed - id``: drawn anew
      for each epoch's workers, the same in all of them, from the DataLoader's ``generator``), or
      a draw from torch's generator in the main process with ``num_workers=0``. Under
      ``torch.distributed`` rank 0 draws one seed and broadcasts it when the dataset is built;
      then, as with ``DistributedSampler``, call :meth:`set_epoch` every epoch.
    * ``seed=N``: the order is reproducible; :meth:`set_epoch` advances it, the same on every
      rank. Without ``set_epoch`` a copy of the dataset still reshuffles on its next pass (with
      ``num_workers=0`` and ``persistent_workers=True``); workers that are restarted every epoch
      (the DataLoader's default) repeat the order unless told the epoch.
    """

    def __init__(self, urls: list[str], output: str = "latent", codec: str | None = None,
                 shuffle: int = 0, shardshuffle: bool = False, epoch_length: int | None = None,
                 decode_batch: int = 16, on_error: str = "raise", seed: int | None = None,
                 stage: Any = None) -> None:
        super().__init__()
        self.urls, self.shuffle, self.shardshuffle = list(urls), shuffle, bool(shardshuffle)
        self.epoch_length, self.on_error = epoch_length, on_error
        self.seed = shared_seed(seed) if (shuffle or shardshuffle) else seed
        # the last stage: mlcodec's decoding by default; image shards pass their own
        self.decode = stage if stage is not None else DecodeStage(output, codec, decode_batch, on_error)
        self.epoch = 0
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._passes = int(epoch), 0

    def base_seed(self) -> int:
        """The seed this pass's orders derive from: ``seed``, else the DataLoader's base seed of
        this epoch (the same in every worker), else a fresh draw (``num_workers=0``)."""
        if self.seed is not None:
            return self.seed
        info = torch.utils.data.get_worker_info()
        if info is not None:
            return int(info.seed) - int(info.id)
        return int(torch.empty((), dtype=torch.int64).random_().item())

    def shard_order(self, epoch: int, base: int | None = None) -> list[str]:
        urls = list(self.urls)
        if self.shardshuffle:
            random.Random(f"{self.seed if base is None else base}:{epoch}").shuffle(urls)
        return urls

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        epoch = self.epoch + self._passes
        self._passes += 1
        base = self.base_seed() if (self.shuffle or self.shardshuffle) else 0
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        stages: list[Any] = [wds.SimpleShardList(self.shard_order(epoch, base)), wds.split_by_node,
                             wds.split_by_worker,
                             wds.tarfile_to_samples(handler=_shard_error_handler(self.on_error))]
        if self.shuffle:
            stages.append(wds.shuffle(self.shuffle, seed=f"{base}:{epoch}:{rank}:{worker}"))
        stages.append(self.decode)
        pipeline = wds.DataPipeline(*stages)
        if self.epoch_length:
            pipeline = pipeline.with_epoch(self.epoch_length)
        yield from pipeline


def shared_seed(seed: int | None) -> int | None:
    """``seed``; with none under an initialised ``torch.distributed`` of several ranks, one seed
    drawn on rank 0 and broadcast, so every rank splits the same shard order. Several ranks
    known only from the environment (``WORLD_SIZE``) cannot agree on a draw: a seed is required."""
    if seed is not None:
        return seed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [int(torch.empty((), dtype=torch.int64).random_().item()) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return int(box[0])  # type: ignore[arg-type]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but torch.distributed is not initialised, so the "
            "ranks cannot agree on a shard order: pass the same seed=N on every rank and call "
            "dataset.set_epoch(epoch) at the start of each epoch")
    return None


def latent_dataset(
    urls: str | Path | Sequence[str | Path],
    output: str = "latent",
    codec: str | None = None,
    shuffle: int = 0,
    shardshuffle: bool = False,
    epoch_length: int | None = None,
    decode_batch: int = 16,
    on_error: str = "raise",
    seed: int | None = None,
) -> LatentDataset:
    """A dataset over mlcodec shards, for ``torch.utils.data.DataLoader``.

    Args:
        urls: shard files, brace patterns, shard folders (read through their manifest), or a
            list of them; a local file that does not exist is a ``FileNotFoundError``.
        output: ``"latent"`` yields the dequantized latent ``y_hat`` (no synthesis transform);
            ``"image"`` yields decoded ``uint8`` image tensors ``3xHxW``.
        codec: decode with this codec (a registered name, or ``NAME:WEIGHTS`` for trained
            weights); by default the one each bitstream names, with its packaged weights.
        shuffle: sample shuffle buffer size (0 = no shuffling).
        shardshuffle: shuffle the shard order, anew each epoch (see :class:`LatentDataset`).
        epoch_length: yield exactly this many samples per pass and per DataLoader worker,
            repeating the shards as often as that takes: the usual way to give every DDP rank the
            same number of batches. ``None`` (default): one pass over the shards.
        decode_batch: samples decoded together (batched hyper-synthesis / synthesis).
        on_error: ``"raise"`` (default) stops with the shard and key of a corrupt sample;
            ``"skip"`` drops it with a warning.
        seed: ``None`` (default): every epoch reshuffles, like ``DataLoader(shuffle=True)``
            (under DDP, call ``set_epoch``); ``N``: a reproducible order that ``set_epoch``
            advances, the same on every rank (see :class:`LatentDataset`).

    Samples are dicts ``{"__key__", "latent" or "image", "target", "cls" (if labelled)}``; use
    :func:`collate_padded` to batch samples of different sizes.
    """
    resolved = resolve_shards(urls)
    if epoch_length:
        known = _manifest_samples(urls)
        if known is not None and epoch_length > known:
            warnings.warn(f"epoch_length={epoch_length} is more than the {known} samples in the "
                          f"shards: each pass repeats them to fill it", stacklevel=2)
    return LatentDataset(resolved, output, codec, shuffle, shardshuffle, epoch_length, decode_batch,
                         on_error, seed)


def _manifest_samples(urls: str | Path | Sequence[str | Path]) -> int | None:
    """The samples the manifests of the given shard folders count, if every item is a folder."""
    items = [urls] if isinstance(urls, (str, Path)) else list(urls)
    total = 0
    for item in items:
        manifest = Path(item) / "manifest.json"
        if not manifest.is_file():
            return None
        total += int(json.loads(manifest.read_text()).get("samples", 0))
    return total


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
