"""Input-pipeline throughput: latent shards vs JPEG shards, same images, same machine.

Builds N 256x256 crops of the offline photos, writes (a/b) mlcodec shards and (c) JPEG q90
WebDataset shards, then times a DataLoader over each: (a) ``output="latent"``, (b)
``output="image"``, (c) PIL decode + ToTensor. Reports images/s for num_workers 0 and 2 and
bytes on disk.

    python -m benchmarks.loader_throughput [--n 2000] [--quality 0.5] [--workdir /tmp/mlcodec-bench]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from pathlib import Path

import torch
from PIL import Image

import mlcodec
from mlcodec.integrations.webdataset import SHARD_MTIME
from mlcodec.data.sources import IterableSource

from benchmarks.common import crops


def jpeg_shards(images, out: Path, maxcount: int) -> None:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=maxcount, verbose=0, mtime=SHARD_MTIME) as w:
        for i, im in enumerate(images):
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=90, subsampling="4:2:0")
            w.write({"__key__": f"{i:09d}", "jpg": buf.getvalue(), "cls": b"0"})


class JpegDecode:
    def __call__(self, src):
        from torchvision.transforms.functional import to_tensor

        for s in src:
            yield {"__key__": s["__key__"], "image": to_tensor(Image.open(io.BytesIO(s["jpg"])).convert("RGB")),
                   "cls": int(s["cls"])}


def jpeg_dataset(urls):
    import webdataset as wds

    return wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker,
                            wds.tarfile_to_samples(), JpegDecode())


def _init(_):
    torch.set_num_threads(1)


def throughput(dataset, workers: int, batch: int, n: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                         worker_init_fn=_init if workers else None,
                                         collate_fn=lambda b: len(b), persistent_workers=False)
    t0 = time.perf_counter()
    count = sum(loader)
    dt = time.perf_counter() - t0
    assert count == n, (count, n)
    return count / dt


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.tar*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workdir", default="/tmp/mlcodec-bench")
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--codec", default=mlcodec.DEFAULT_CODEC,
                    help="the learned codec of the latent shards, e.g. NAME:WEIGHTS for a student")
    ap.add_argument("--no-image", action="store_true", help="skip (b), output=image (slow)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from mlcodec.integrations.webdataset import latent_dataset, write_shards

    work = Path(args.workdir)
    dirs = [args.photos] if Path(args.photos).is_dir() else []
    images = crops(args.n, args.size, dirs)
    maxcount = 250
    tag = "" if args.codec == mlcodec.DEFAULT_CODEC else "-" + hashlib.sha1(args.codec.encode()).hexdigest()[:8]
    lat_dir, jpg_dir = work / f"latent-q{args.quality}{tag}", work / "jpeg-q90"
    reused = (lat_dir / "manifest.json").exists()
    t0 = time.perf_counter()
    m = write_shards(IterableSource([(im, 0) for im in images]), lat_dir, codec=args.codec,
                     quality=args.quality, maxcount=maxcount, progress=False)
    enc_time = time.perf_counter() - t0
    if not list(jpg_dir.glob("*.tar")):
        jpeg_shards(images, jpg_dir, maxcount)
    lat_urls = sorted(str(p) for p in lat_dir.glob("*.tar*"))
    jpg_urls = sorted(str(p) for p in jpg_dir.glob("*.tar"))
    print(f"{args.n} images {args.size}x{args.size}; {args.codec} latent shards at quality {args.quality}: "
          f"{m.mean_bpp:.3f} bpp ("
          + ("reused: written by an earlier run)" if reused else f"shard job {args.n / enc_time:.1f} img/s)"))
    print(f"{'pipeline':<34} {'bytes on disk':>14} {'workers':>7} {'img/s':>8} {'vs (c)':>7}")
    rows = []
    for workers in (0, 2):
        ref = throughput(jpeg_dataset(jpg_urls), workers, args.batch, args.n)
        for name, ds, folder in (
            ("(a) latent shards, output=latent", latent_dataset(lat_urls, output="latent", decode_batch=args.batch), lat_dir),
            ("(b) latent shards, output=image", latent_dataset(lat_urls, output="image", decode_batch=args.batch), lat_dir),
            ("(c) JPEG q90 shards, PIL+ToTensor", None, jpg_dir),
        ):
            if args.no_image and name.startswith("(b)"):
                continue
            r = ref if ds is None else throughput(ds, workers, args.batch, args.n)
            rows.append((name, du(folder), workers, r, r / ref))
            print(f"{name:<34} {du(folder):>14} {workers:>7} {r:>8.1f} {r / ref:>6.2f}x")
    print(f"bytes: latent shards {du(lat_dir) / du(jpg_dir):.2f}x of JPEG q90 shards")


if __name__ == "__main__":
    main()
