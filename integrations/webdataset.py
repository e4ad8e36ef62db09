# One module of this size on purpose: the shard job's writer, its journal and resume, and its
# worker pool share the job's state (job.json, progress.jsonl, the .tmp renames), and the Ray job
# (ray.py) must stay byte for byte in step with them; split, the invariants would span files.
"""WebDataset shards of mlcodec bitstreams: a resumable writer job and loaders.

One sample per image, nothing pickled (fields: :mod:`mlcodec.data.shard_fields`). Beside the shards:
``manifest.json`` (codec, fingerprint, quality, counts, bytes, mean bpp, class names, source, the
source files left out and why) once the job is complete, and ``progress.jsonl`` with one line per
finished shard. Tar members carry a fixed integer mtime: the same samples give the same bytes,
and no PAX header (1 KB a member) is written for a float one. Shards are gzipped (``.tar.gz``) by
default: tar's 512-byte header and padding per member are most of a small sample's bytes, and
gzip removes them (BENCHMARKS.md, "Shard bytes");
webdataset, HF datasets and every reader here take them as they are. ``gzip=False`` writes plain
``.tar``; a job resumed in an existing folder keeps the setting it was started with.
A shard is written under a ``.tmp`` name and renamed when closed, and only then journaled, so a
killed job is resumed by rerunning it: finished shards are kept, the partial one is rewritten from
its first sample, and every sample ends up in exactly one shard.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

import mlcodec
from mlcodec.bitstream import read_header
from mlcodec.data.shard_fields import decode_target, encode_sample
from mlcodec.data.sources import Source

from .latent_loader import (CorruptSampleError, DecodeStage, LatentDataset, collate_padded,
                            latent_dataset, resolve_shards)

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-%06d.tar"
GZIP_SHARD_PATTERN = "shard-%06d.tar.gz"
#: the mtime of every tar member (2026-01-01): fixed, so the same samples give the same shard
#: bytes, and an integer, so tarfile writes no PAX header for it
SHARD_MTIME = 1767225600
ON_ERROR = ("raise", "skip")


def shard_pattern(gzip: bool = False) -> str:
    return GZIP_SHARD_PATTERN if gzip else SHARD_PATTERN
MANIFEST = "manifest.json"
PROGRESS = "progress.jsonl"
JOB = "job.json"


@dataclass(frozen=True)
class ShardRecord:
    shard: str
    start: int  # first source index in the shard
    end: int  # one past the last
    bytes: int  # bitstream bytes
    pixels: int
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason} left out


@dataclass(frozen=True)
class Manifest:
    codec: str
    codec_id: int
    fingerprint: str
    quality: float
    samples: int
    shards: list[str]
    bitstream_bytes: int
    shard_bytes: int
    mean_bpp: float
    class_names: list[str]
    source: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}: unreadable
    ignored_files: list[str] = field(default_factory=list)  # files in the source that are not images


def journaled_shards(out: Path) -> list[ShardRecord]:
    """Finished shards recorded in ``progress.jsonl`` whose files exist, in journal order."""
    path = out / PROGRESS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(ShardRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                break  # a torn last line: the shard it names is not counted
    return [r for r in records if (out / r.shard).exists()]


def _read_progress(out: Path) -> list[ShardRecord]:
    kept: list[ShardRecord] = []
    for r in journaled_shards(out):  # the contiguous prefix of the source
        if r.start != (kept[-1].end if kept else 0):
            break
        kept.append(r)
    return kept


def journal_shard(out: Path, rec: ShardRecord) -> None:
    """Append a finished shard to ``progress.jsonl`` (after its file was renamed into place)."""
    with open(out / PROGRESS, "a") as f:
        f.write(json.dumps(asdict(rec)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_manifest(out: Path, codec: mlcodec.Codec, fingerprint: str, quality: float,
                   records: list[ShardRecord], source: Source) -> Manifest:
    """Check that the shards hold every sample of ``source`` once and write ``manifest.json``."""
    records = sorted(records, key=lambda r: r.start)
    covered = sum(r.end - r.start for r in records)
    skipped = [s for r in records for s in r.skipped]
    contiguous = all(a.end == b.start for a, b in zip(records, records[1:]))
    if covered != len(source) or not contiguous or (records and records[0].start != 0):
        raise RuntimeError(f"{out}: the shards hold {covered} samples (contiguous: {contiguous}), "
                           f"the source {len(source)}; rerun the job to finish it")
    manifest = Manifest(
        codec=codec.name, codec_id=codec.config.codec_id, fingerprint=fingerprint,
        quality=float(quality), samples=covered - len(skipped), shards=[r.shard for r in records],
        bitstream_bytes=sum(r.bytes for r in records),
        shard_bytes=sum((out / r.shard).stat().st_size for r in records),
        mean_bpp=8 * sum(r.bytes for r in records) / max(sum(r.pixels for r in records), 1),
        class_names=source.class_names, source=source.describe(), skipped=skipped,
        ignored_files=[str(p) for p in getattr(source, "ignored", [])],
    )
    (out / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1))
    return manifest


def begin_job(out: Path, source: Source, codec: str, quality: float,
              **settings: Any) -> tuple[mlcodec.Codec, str]:
    """The learned codec and its fingerprint for a shard job in ``out``: records the job's
    settings (or refuses a folder made with other ones) and removes half-written ``.tmp`` shards."""
    if mlcodec.codec_config(codec).kind != "learned":
        raise ValueError(f"shards hold latent bitstreams: {codec!r} is a pixel codec; "
                         f"choose one of {mlcodec.list_codecs(kind='learned')}")
    c = mlcodec.create_codec(codec)
    fingerprint = c.fingerprint(quality).hex()  # type: ignore[attr-defined]
    base, sep, weights = c.name.partition(":")  # a release (NAME@N) is its fingerprint's business
    _check_job(out, {"codec": base.partition("@")[0] + sep + weights, "fingerprint": fingerprint, "quality": float(quality),
                     **settings, "source": source.describe()})
    for stale in out.glob("*.tmp"):
        stale.unlink()
    return c, fingerprint


def _check_job(out: Path, job: dict[str, Any]) -> None:
    path = out / JOB
    if path.exists():
        old = json.loads(path.read_text())
        if old != job:
            diff = {k: (old.get(k), job.get(k)) for k in set(old) | set(job) if old.get(k) != job.get(k)}
            hint = (" (the codec's weights changed since it began: finish it with the release "
                    "that began it, --codec NAME@N)") if "fingerprint" in diff else ""
            raise ValueError(
                f"{out} holds a shard job with other settings {diff}{hint}; "
                f"use another output folder or delete it"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(job, indent=1, sort_keys=True))


@dataclass(frozen=True)
class Encoded:
    """One source index of a batch: its sample and bitstream, or why it was left out."""

    index: int
    sample: Any = None
    data: bytes = b""
    skipped: dict[str, str] | None = None


def _encode_batch(codec: mlcodec.Codec, source: Source, indexes: list[int], quality: float,
                  on_error: str = "raise") -> list[Encoded]:
    """Read and encode ``indexes`` of ``source``; a sample that cannot be read or coded stops the
    job (``on_error="raise"``: a ValueError naming it) or is left out with its reason."""
    def fail(i: int, e: Exception) -> Encoded:
        where = source.origin(i)
        if on_error == "raise":
            raise ValueError(f"{where}: {e} (on_error='skip' / --on-error skip leaves such files "
                             f"out and lists them in manifest.json)") from e
        log.warning("skipping %s: %s", where, e)
        return Encoded(i, skipped={"path": where, "reason": str(e).splitlines()[0]})

    read: list[Encoded] = []
    for i in indexes:
        try:
            read.append(Encoded(i, sample=source[i]))
        except (OSError, ValueError, TypeError) as e:
            read.append(fail(i, e))
    good = [r for r in read if r.skipped is None]
    try:
        datas = codec.compress_batch([r.sample.image for r in good], quality)
        coded = {r.index: Encoded(r.index, r.sample, d) for r, d in zip(good, datas)}
    except (TypeError, ValueError):
        coded = {}
        for r in good:  # find the samples at fault
            try:
                coded[r.index] = Encoded(r.index, r.sample, codec.compress(r.sample.image, quality))
            except (TypeError, ValueError) as e:
                coded[r.index] = fail(r.index, e)
    return [coded.get(r.index, r) for r in read]


@dataclass
class _Tally:
    """What the shard being written holds so far: payload bytes, pixels, the samples left out."""

    bytes: int = 0
    pixels: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    def add(self, e: Encoded, write: Callable[[dict[str, Any]], None]) -> None:
        """Write ``e``'s sample with ``write`` (or note why it was left out), then count it."""
        if e.skipped is not None:
            self.skipped.append(e.skipped)
            return
        write(encode_sample(e.sample.key, e.data, e.sample.target))
        h, w = read_header(e.data).original_size
        self.bytes += len(e.data)
        self.pixels += h * w

    def record(self, name: str, start: int, end: int) -> ShardRecord:
        """The finished shard's record; the tally starts again for the next shard."""
        rec = ShardRecord(name, start, end, self.bytes, self.pixels, self.skipped)
        self.bytes, self.pixels, self.skipped = 0, 0, []
        return rec


def write_shard_range(codec: mlcodec.Codec, source: Source, start: int, end: int, path: Path,
                      quality: float, batch_size: int = 16, on_error: str = "raise",
                      gzip: bool = False) -> ShardRecord:
    """Encode samples ``start:end`` into the shard ``path`` (written as ``.tmp``, then renamed)."""
    import webdataset as wds

    tmp = path.with_name(path.name + ".tmp")
    tally = _Tally()
    with wds.TarWriter(str(tmp), mtime=SHARD_MTIME, compress=gzip) as tar:
        for i in range(start, end, batch_size):
            for e in _encode_batch(codec, source, list(range(i, min(i + batch_size, end))), quality,
                                   on_error):
                tally.add(e, tar.write)
    os.replace(tmp, path)
    return tally.record(path.name, start, end)


def resolve_gzip(out: Path, gzip: bool | None) -> bool:
    """``gzip=None``: what the job in ``out`` was started with (plain tar before gzip existed),
    else gzip."""
    if gzip is not None:
        return bool(gzip)
    path = out / JOB
    return bool(json.loads(path.read_text()).get("gzip", False)) if path.exists() else True


def check_job_args(quality: float, maxcount: int, batch_size: int, workers: int = 0,
                   on_error: str = "raise") -> None:
    """Every argument of a shard job, checked before any work or ``job.json``."""
    from mlcodec.codecs.base import check_quality

    check_quality(quality)
    for name, value, least in (("maxcount", maxcount, 1), ("batch_size", batch_size, 1),
                               ("workers", workers, 0)):
        if int(value) < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def write_shards(
    source: Source,
    out_dir: str | Path,
    codec: str = mlcodec.DEFAULT_CODEC,
    quality: float = mlcodec.DEFAULT_QUALITY,
    maxcount: int = 1000,
    maxsize: int = 256 * 2**20,
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = True,
    on_error: str = "skip",
    gzip: bool | None = None,
) -> Manifest:
    """Compress ``source`` into shards in ``out_dir`` (resuming a job killed midway).

    ``workers > 0`` encodes in that many processes (each with its own codec and torch thread);
    shards are written in source order either way. ``on_error="skip"`` (the default) leaves out
    a file that cannot be read or coded and lists it in the manifest's ``skipped`` (samples +
    skipped = the source's length); ``"raise"`` stops at the first one. Shards are ``.tar.gz``
    unless ``gzip=False`` (``None``: gzip, or what a job resumed in ``out_dir`` used).
    """
    import webdataset as wds

    check_job_args(quality, maxcount, batch_size, workers, on_error)
    out = Path(out_dir)
    gzip = resolve_gzip(out, gzip)
    settings: dict[str, Any] = {"maxcount": maxcount, "maxsize": maxsize}
    if gzip:
        settings["gzip"] = True
    c, fingerprint = begin_job(out, source, codec, quality, **settings)
    done = _read_progress(out)
    start = done[-1].end if done else 0
    records = list(done)
    state = {"start": start, "index": start}  # the shard being written: first and next index
    tally = _Tally()

    def post(tmp_name: str) -> None:  # ShardWriter closed a shard (before the next sample's write)
        tmp = Path(tmp_name)
        if state["index"] == state["start"]:  # ShardWriter opens a file before any sample
            tmp.unlink(missing_ok=True)
            return
        final = tmp.with_suffix("")  # drop ".tmp"
        os.replace(tmp, final)
        rec = tally.record(final.name, state["start"], state["index"])
        journal_shard(out, rec)
        records.append(rec)
        state["start"] = state["index"]

    batches = [list(range(i, min(i + batch_size, len(source)))) for i in range(start, len(source), batch_size)]
    bar = tqdm(total=len(source), initial=start, unit="img", desc="shard", disable=not progress)
    writer = wds.ShardWriter(str(out / (shard_pattern(gzip) + ".tmp")), maxcount=maxcount,
                             maxsize=maxsize, post=post, start_shard=len(done), verbose=0,
                             mtime=SHARD_MTIME, compress=gzip)
    try:
        for encoded in _encoded(c, source, batches, quality, codec, workers, on_error):
            for e in encoded:  # a skipped sample is counted in the shard being written
                tally.add(e, writer.write)
                state["index"] += 1  # after the write, which may close a shard first (post)
            bar.update(len(encoded))
            total_bytes = sum(r.bytes for r in records) + tally.bytes
            total_pixels = sum(r.pixels for r in records) + tally.pixels
            bar.set_postfix(bpp=f"{8 * total_bytes / max(total_pixels, 1):.3f}")
        writer.close()
    finally:
        bar.close()
    return write_manifest(out, c, fingerprint, quality, records, source)


# Per-process state of pool workers (set once by the pool initializer).
_WORKER: dict[str, Any] = {}


def _die_with_parent(parent: int) -> None:
    """End this worker as soon as the job's process dies (``kill -9`` included): on Linux the
    kernel kills it (``PR_SET_PDEATHSIG``), elsewhere a thread polls the parent."""
    import signal
    import sys

    if hasattr(signal, "SIGPIPE"):
        # the kernel closes a killed job's end of the result pipe before it signals the workers:
        # a worker sending a result in that window ends quietly on SIGPIPE instead of printing
        # a BrokenPipeError traceback (the job is gone; nothing reads the result)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it died before the call
                os._exit(1)
            return
    import threading
    import time

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=poll, daemon=True).start()


def _init_worker(source: Source, codec_name: str, parent: int) -> None:
    import torch

    _die_with_parent(parent)
    torch.set_num_threads(1)
    _WORKER.update(source=source, codec=mlcodec.create_codec(codec_name))


def _worker_encode(args: tuple[list[int], float, str]):
    indexes, quality, on_error = args
    return _encode_batch(_WORKER["codec"], _WORKER["source"], indexes, quality, on_error)


def _encoded(codec, source, batches, quality, codec_name, workers, on_error) -> Iterator[list]:
    if workers <= 0:
        for b in batches:
            yield _encode_batch(codec, source, b, quality, on_error)
        return
    import multiprocessing as mp

    # The pool's semaphores are registered with multiprocessing's resource tracker, a process of
    # its own that outlives a killed job and warns as it removes them; the warning says nothing
    # a user can act on, so the tracker (started with the pool, inheriting the environment)
    # ignores it. Nothing else is filtered.
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(
        filter(None, [before, "ignore::UserWarning:multiprocessing.resource_tracker"]))
    try:
        pool = mp.get_context("spawn").Pool(workers, _init_worker, (source, codec_name, os.getpid()))
    finally:
        if before is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = before
    with pool:
        yield from pool.imap(_worker_encode, [(b, quality, on_error) for b in batches])


def write_image_shards(source: Source, out_dir: str | Path, codec: str = "jpeg", quality: float = 0.9,
                       maxcount: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Shards of ``codec`` image files (e.g. JPEG q90) with the same keys and JSON targets as the
    latent shards, plus a ``manifest.json``. Not resumable: an interrupted job is rerun whole."""
    import webdataset as wds

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = mlcodec.create_codec(codec)
    if c.config.kind != "pixel":
        raise ValueError(f"{codec!r} is not a pixel codec; latent shards come from `mlcodec shard`")
    ext = c.config.file_extension.lstrip(".")
    total_bytes = total_pixels = 0
    with wds.ShardWriter(str(out / SHARD_PATTERN), maxcount=maxcount, verbose=0,
                         mtime=SHARD_MTIME) as w:
        for i in tqdm(range(len(source)), desc=f"{codec} shards", unit="img", disable=not progress):
            s = source[i]
            data = c.compress(s.image, quality)
            w.write(encode_sample(s.key, data, s.target, ext=ext))
            width, height = Image.open(io.BytesIO(data)).size  # header only
            total_bytes += len(data)
            total_pixels += width * height
    manifest = {"codec": codec, "quality": quality, "samples": len(source), "bitstream_bytes": total_bytes,
                "mean_bpp": 8 * total_bytes / max(total_pixels, 1), "class_names": source.class_names,
                "source": source.describe()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


__all__ = ["CorruptSampleError", "DecodeStage", "LatentDataset", "Manifest", "ShardRecord", "collate_padded",
           "decode_target", "encode_sample", "latent_dataset", "resolve_gzip", "resolve_shards",
           "write_image_shards", "write_shards"]
