"""``mlcodec verify``: decode every sample as a data loader's worker would, and list the failures.

Streams of formats 1 and 2 derive their entropy model from a floating-point hyper-synthesis, so a
sample written on one machine (thread count, CPU, device) can fail its symbol checksum on another.
``verify`` decodes each sample's latent with one torch thread, in batches like the loader's
``decode_batch``, and reports every ``.mlc`` file or shard key that fails, with the reason; a
batch that fails is decoded sample by sample to name the culprits. Samples of format 3 (integer
hyper-synthesis) decode alike everywhere; the summary counts the samples of each format, since
format-2 samples that pass here may still fail elsewhere (re-encode them with ``mlcodec reencode``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mlcodec.bitstream import PORTABLE_VERSIONS, Bitstream, BitstreamError, unpack
from mlcodec.codecs.decoding import decode_each
from mlcodec.registry import CodecCache


@dataclass(frozen=True)
class Failure:
    where: str  # a file path, or "SHARD key KEY"
    reason: str


@dataclass
class VerifyReport:
    samples: int = 0
    failures: list[Failure] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)  # format version -> samples

    def summary(self) -> str:
        formats = ", ".join(f"format {v}: {n}" for v, n in sorted(self.versions.items()))
        text = (f"verified {self.samples} samples ({formats or 'none'}): "
                f"{self.samples - len(self.failures)} decode, {len(self.failures)} fail")
        old = sum(n for v, n in self.versions.items() if v not in PORTABLE_VERSIONS)
        if old:
            text += (f"; {old} samples of formats before 3 are not portable across thread counts, "
                     f"CPUs or devices even where they pass: re-encode them (mlcodec reencode)")
        return text


@dataclass(frozen=True)
class _Item:
    where: str
    data: bytes


def _items(paths: Sequence[str | Path]) -> Iterator[_Item]:
    from mlcodec.inspect import iter_samples, shard_files

    files, shards = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.mlc"))
            shards += shard_files([p]) if not found else []
            files += found
        elif p.suffix == ".mlc":
            files.append(p)
        elif p.is_file():
            shards.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    for f in files:
        yield _Item(str(f), f.read_bytes())
    for s in iter_samples(shards):
        if "mlc" not in s.fields:
            raise BitstreamError(f"{s.shard} key {s.key}: no .mlc bitstream in the sample")
        yield _Item(f"{s.shard} key {s.key}", s.fields["mlc"])


def verify(paths: Sequence[str | Path], codec: str | None = None, batch: int = 32,
           progress: bool = True, threads: int = 1) -> VerifyReport:
    """Decode every sample under ``paths`` (``.mlc`` files or folders, tar shards or shard folders)
    with ``threads`` torch threads; see the module docstring."""
    from mlcodec.inspect import shard_manifest, weights_spec

    spec = codec or next(filter(None, (weights_spec(shard_manifest(p)) for p in paths)), None)
    codecs = CodecCache(spec)
    report = VerifyReport()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pending: list[tuple[_Item, Bitstream]] = []
        bar = tqdm(desc="verify", unit="sample", disable=not progress)
        for item in _items(paths):
            report.samples += 1
            bar.update(1)
            try:
                bs = unpack(item.data)
            except BitstreamError as e:
                report.failures.append(Failure(item.where, str(e)))
                continue
            report.versions[bs.header.version] += 1
            pending.append((item, bs))
            if len(pending) == batch:
                _decode_batch(pending, codecs, report)
                pending = []
        if pending:
            _decode_batch(pending, codecs, report)
        bar.close()
    finally:
        torch.set_num_threads(old_threads)
    return report


def _decode_batch(batch: list[tuple[_Item, Bitstream]], codecs: CodecCache, report: VerifyReport) -> None:
    by_codec: dict[tuple[int, bytes], list[tuple[_Item, Bitstream]]] = {}
    for item, bs in batch:  # by codec and weights: the fingerprint picks the release
        by_codec.setdefault((bs.header.codec_id, bs.header.fingerprint), []).append((item, bs))
    for group in by_codec.values():
        try:
            codec = codecs(group[0][1])
        except (BitstreamError, ValueError, FileNotFoundError, RuntimeError) as e:
            report.failures += [Failure(item.where, f"no codec to decode it: {e}") for item, _ in group]
            continue
        results, batch_error = decode_each(codec.decode_latents, [bs for _, bs in group])
        failed = [Failure(item.where, str(r)) for (item, _), r in zip(group, results)
                  if isinstance(r, Exception)]
        if batch_error is not None and not failed:
            failed = [Failure(item.where, "fails when decoded in a batch with the other samples listed "
                              "here, decodes alone") for item, _ in group]
        report.failures += failed
