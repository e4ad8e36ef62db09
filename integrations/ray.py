"""Compression as a Ray Data job, for datasets that outgrow one machine.

:func:`write_shards_ray` cuts the source into fixed shards of ``maxcount`` samples (shard ``k``
holds samples ``k * maxcount`` up to ``(k + 1) * maxcount``) and maps the shards over a pool of
Ray actors: each actor builds the codec once, then encodes and writes whole shards. The driver
journals every shard an actor reports and writes ``manifest.json`` at the end, so the output is
the same layout as :func:`mlcodec.integrations.webdataset.write_shards` and reads with the same
loaders. The bitstreams are the same bytes too, when ``maxcount`` is a multiple of
``batch_size``.

Requirements and behaviour:

* ``out_dir`` and the source's files must be visible at the same path on every node (a shared
  file system); the source object itself is sent to the actors, so it must pickle.
* Resumable: a shard is written under a ``.tmp`` name, renamed when complete, and journaled by the
  driver; rerunning the same call skips journaled shards and redoes the rest, so every sample
  ends up in exactly one shard.
* Shards are split by count only (``maxsize`` is not applied: a shard's size is only known after
  it is encoded). A folder started by the local job cannot be resumed by this one (the shard
  boundaries differ); the job settings in ``job.json`` say which runner made it.

    ray.init()  # or ray.init(address="auto") on a cluster
    write_shards_ray(ImageFolderSource("train/"), "/shared/shards", quality=0.5)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlcodec
from mlcodec.data.sources import Source

from .webdataset import (Manifest, ShardRecord, resolve_gzip, begin_job, check_job_args, journal_shard,
                         journaled_shards, shard_pattern, write_manifest, write_shard_range)


class _ShardEncoder:
    """Ray Data actor: ``{"shard": [k, ...]}`` batches in, one record per written shard out."""

    def __init__(self, source: Source, codec: str, quality: float, maxcount: int, out_dir: str,
                 batch_size: int, threads: int, device: str, on_error: str, gzip: bool) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.source, self.quality, self.maxcount = source, quality, maxcount
        self.out, self.batch_size = Path(out_dir), batch_size
        self.on_error, self.gzip = on_error, gzip
        self.codec = mlcodec.create_codec(codec, device=device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows: dict[str, list] = {f: [] for f in ShardRecord.__dataclass_fields__}
        for k in batch["shard"]:
            k = int(k)
            start, end = k * self.maxcount, min((k + 1) * self.maxcount, len(self.source))
            rec = write_shard_range(self.codec, self.source, start, end,
                                    self.out / (shard_pattern(self.gzip) % k), self.quality,
                                    self.batch_size, self.on_error, self.gzip)
            for f in rows:  # the skipped list travels as JSON text (one column of strings)
                rows[f].append(json.dumps(rec.skipped) if f == "skipped" else getattr(rec, f))
        return rows


def write_shards_ray(
    source: Source,
    out_dir: str | Path,
    codec: str = mlcodec.DEFAULT_CODEC,
    quality: float = mlcodec.DEFAULT_QUALITY,
    maxcount: int = 1000,
    batch_size: int = 16,
    num_actors: int | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    progress: bool = True,
    on_error: str = "skip",
    gzip: bool | None = None,
) -> Manifest:
    """Compress ``source`` into shards in ``out_dir`` with a pool of Ray actors (resumable).

    Args:
        num_actors: actors encoding in parallel; by default one per ``cpus_per_actor`` CPUs of
            the Ray cluster (at most one per shard left to write).
        cpus_per_actor: CPUs reserved per actor; it also sets the actor's torch threads.
        gpus_per_actor: set 1 (or a fraction) to encode on GPUs; the codec then runs on ``cuda``.

    Ray must be initialised by the caller (``ray.init(...)``) or it starts a local instance.
    """
    import ray
    from tqdm import tqdm

    check_job_args(quality, maxcount, batch_size, 0, on_error)
    out = Path(out_dir)
    gzip = resolve_gzip(out, gzip)
    settings: dict[str, Any] = {"runner": "ray", "maxcount": maxcount}
    if gzip:
        settings["gzip"] = True
    c, fingerprint = begin_job(out, source, codec, quality, **settings)
    n_shards = -(-len(source) // maxcount)
    done = {r.shard: r for r in journaled_shards(out)}
    todo = [k for k in range(n_shards) if shard_pattern(gzip) % k not in done]
    records = list(done.values())
    if todo:
        if num_actors is None:
            cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else 1
            num_actors = max(1, int(cpus // max(cpus_per_actor, 1e-9)))
        num_actors = max(1, min(num_actors, len(todo)))
        ds = ray.data.from_items([{"shard": k} for k in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            _ShardEncoder, batch_size=1,
            fn_constructor_args=(source, codec, quality, maxcount, str(out), batch_size,
                                 max(1, int(cpus_per_actor)), "cuda" if gpus_per_actor else "cpu",
                                 on_error, gzip),
            compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
        )
        bar = tqdm(total=len(source), initial=sum(r.end - r.start for r in records), unit="img",
                   desc="shard (ray)", disable=not progress)
        try:
            for row in ds.iter_rows():
                rec = ShardRecord(str(row["shard"]), int(row["start"]), int(row["end"]),
                                  int(row["bytes"]), int(row["pixels"]), json.loads(row["skipped"]))
                journal_shard(out, rec)
                records.append(rec)
                bar.update(rec.end - rec.start)
                nbytes, pixels = sum(r.bytes for r in records), sum(r.pixels for r in records)
                bar.set_postfix(bpp=f"{8 * nbytes / max(pixels, 1):.3f}")
        finally:
            bar.close()
    return write_manifest(out, c, fingerprint, quality, records, source)


__all__ = ["write_shards_ray"]
