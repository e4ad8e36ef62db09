"""Writing a shard folder's dataset again (``mlcodec reencode``), from the source its job recorded.

Apart from :mod:`mlcodec.integrations.webdataset` because rebuilding a source may need every
source type, Hugging Face datasets included, while the shard writer needs none of them (and
:mod:`mlcodec.integrations.hf` writes shards through the writer: one direction, no cycle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlcodec.data.sources import Source

from .webdataset import JOB, MANIFEST, Manifest, write_shards


def source_from_description(desc: dict[str, Any]) -> Source:
    """Rebuild the source a shard job recorded (``job.json``'s ``source``), to re-encode it."""
    from mlcodec.data.sources import CocoSource, ImageFolderSource

    kind = desc.get("type")
    if kind == "ImageFolderSource":
        return ImageFolderSource(desc["name"])
    if kind == "CocoSource" and "images" in desc:
        return CocoSource(desc["name"], desc["images"])
    if kind == "HFSource":
        from .hf import HFSource, load_local  # imported here: HF datasets is a heavy import

        return HFSource(load_local(desc["name"]), image_column=desc["image_column"],
                        label_columns=tuple(desc["label_columns"]), name=desc["name"])
    raise ValueError(f"cannot rebuild the job's source from {desc}; name it again "
                     f"(mlcodec reencode OLD -o NEW SRC | --coco JSON --images DIR | --hf PATH)")


def reencode_shards(old_dir: str | Path, out_dir: str | Path, source: Source | None = None,
                    codec: str | None = None, **kwargs: Any) -> Manifest:
    """Write the dataset of the shard folder ``old_dir`` again into ``out_dir``, from its source,
    with the same codec, quality, shard sizes and container (tar or tar.gz; ``gzip`` overrides),
    in the current bitstream format (format 3 for codecs with an integer hyper-synthesis:
    portable across machines). ``source`` overrides the
    recorded one (e.g. a dataset that moved); it must have as many samples. Resumable like
    :func:`write_shards`, which takes the other ``kwargs`` (workers, batch_size, progress)."""
    old = Path(old_dir)
    path = old / JOB if (old / JOB).exists() else old / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{old} has neither {JOB} nor {MANIFEST}: not a shard folder "
                                f"written by mlcodec shard")
    job = json.loads(path.read_text())
    if Path(out_dir).resolve() == old.resolve():
        raise ValueError("write the re-encoded shards to another folder than the old ones")
    src = source if source is not None else source_from_description(job["source"])
    if len(src) != job["source"]["samples"]:
        raise ValueError(f"the source has {len(src)} samples, the job in {old} had "
                         f"{job['source']['samples']}: it is not the same dataset")
    name = codec or job["codec"]
    gzip = kwargs.pop("gzip", None)
    return write_shards(src, out_dir, codec=name, quality=job["quality"],
                        maxcount=job.get("maxcount", 1000), maxsize=job.get("maxsize", 256 * 2**20),
                        gzip=bool(job.get("gzip", False)) if gzip is None else gzip, **kwargs)
