"""Shard-job throughput: the local writer (in process, worker processes) against the Ray Data job.

Same N random 256x256 crops of the offline photos, same codec and quality, fresh output folders;
images/s over the whole job (Ray: from ``ray.init`` to the manifest, start-up included), and a
check that every runner wrote the same samples: same tar members, byte for byte (the tar headers'
timestamps differ).

    python -m benchmarks.shard_job [--n 600] [--quality 0.5] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from mlcodec.data.sources import IterableSource


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2, help="processes / Ray actors")
    ap.add_argument("--maxcount", type=int, default=96)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    args = ap.parse_args()
    import ray

    from benchmarks.common import crops
    from mlcodec.integrations.ray import write_shards_ray
    from mlcodec.integrations.webdataset import write_shards

    torch.set_num_threads(1)
    dirs = [args.photos] if Path(args.photos).is_dir() else []
    source = IterableSource([(im, 0) for im in crops(args.n, args.size, dirs)])
    work = Path(tempfile.mkdtemp(prefix="mlcodec-shard-bench-"))
    common = dict(quality=args.quality, maxcount=args.maxcount, batch_size=16, progress=False)
    runs = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        m = fn(work / name)
        runs[name] = (time.perf_counter() - t0, m)

    timed("local, in process", lambda out: write_shards(source, out, **common))
    timed(f"local, {args.workers} processes", lambda out: write_shards(source, out, workers=args.workers, **common))

    def with_ray(out):
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            return write_shards_ray(source, out, num_actors=args.workers, **common)
        finally:
            ray.shutdown()

    timed(f"ray data, {args.workers} actors", with_ray)
    print(f"{args.n} images {args.size}x{args.size}, quality {args.quality}, shards of {args.maxcount}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'runner':<24} {'seconds':>8} {'img/s':>7} {'mean bpp':>9}  same samples as in process")
    ref = sorted((work / "local, in process").glob("*.tar*"))
    for name, (dt, m) in runs.items():
        same = all(_members(work / name / p.name) == _members(p) for p in ref)
        print(f"{name:<24} {dt:>8.1f} {args.n / dt:>7.1f} {m.mean_bpp:>9.4f}  {same}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
