"""Input-pipeline throughput: latent shards vs pixel shards, same images, same machine.

Builds N 256x256 crops of the offline photos, writes (a/b) mlcodec shards and pixel WebDataset
shards in (c) JPEG q90, (d) WebP q90 and (e) PNG, then times a DataLoader over each: (a)
``output="latent"``, (b) ``output="image"``, (c-e) PIL decode + ToTensor. Every pipeline runs
``--rounds`` times, taking turns, and the median counts (a VM's speed drifts between runs).
``--also`` adds a latent row per further codec (for example a narrower hyper-synthesis).
Reports images/s for num_workers 0 and 2 (one torch thread per process) and bytes on disk.

    python -m benchmarks.loader_throughput [--n 2000] [--quality 0.5] [--rounds 3] [--no-image]
        [--also NAME:WEIGHTS ...]
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

import mlcodec
from mlcodec.integrations.webdataset import SHARD_MTIME
from mlcodec.data.sources import IterableSource

from benchmarks.common import crops, machine, write_report


#: the pixel formats a loader is compared with: shard field and PIL save options
PIXEL_FORMATS = {"(c) JPEG q90": ("jpg", {"format": "JPEG", "quality": 90, "subsampling": "4:2:0"}),
                 "(d) WebP q90": ("webp", {"format": "WEBP", "quality": 90}),
                 "(e) PNG": ("png", {"format": "PNG"})}


PIXEL_ROW = " shards, PIL+ToTensor"
JPEG_ROW = "(c) JPEG q90" + PIXEL_ROW  # the reference of every ratio


def pixel_shards(images, out: Path, maxcount: int, field: str, options: dict) -> None:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=maxcount, verbose=0, mtime=SHARD_MTIME) as w:
        for i, im in enumerate(images):
            buf = io.BytesIO()
            im.save(buf, **options)
            w.write({"__key__": f"{i:09d}", field: buf.getvalue(), "cls": b"0"})


class PixelDecode:
    def __init__(self, field: str) -> None:
        self.field = field

    def __call__(self, src):
        from torchvision.transforms.functional import to_tensor

        for s in src:
            yield {"__key__": s["__key__"], "image": to_tensor(Image.open(io.BytesIO(s[self.field])).convert("RGB")),
                   "cls": int(s["cls"])}


def pixel_dataset(urls, field: str):
    import webdataset as wds

    return wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker,
                            wds.tarfile_to_samples(), PixelDecode(field))


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
    ap.add_argument("--batch", type=int, default=32, help="DataLoader batch")
    ap.add_argument("--decode-batch", type=int, default=None,
                    help="latents decoded per hyper-synthesis call (default: the loader's own default)")
    ap.add_argument("--workdir", default="/tmp/mlcodec-bench")
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--codec", default=mlcodec.DEFAULT_CODEC,
                    help="the learned codec of the latent shards, e.g. NAME:WEIGHTS for a student")
    ap.add_argument("--also", nargs="*", default=[], metavar="NAME[:WEIGHTS]",
                    help="more learned codecs, each a latent row of its own (output=latent)")
    ap.add_argument("--no-image", action="store_true", help="skip (b), output=image (slow)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of every pipeline, taking turns; the median counts")
    ap.add_argument("--out", default="benchmarks/results/loader_throughput.json")
    args = ap.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    from mlcodec.integrations.webdataset import latent_dataset, write_shards

    work = Path(args.workdir)
    dirs = [args.photos] if Path(args.photos).is_dir() else []
    images = crops(args.n, args.size, dirs)
    maxcount = 250

    def latent_shards(codec: str):
        # one folder per set of weights (its fingerprint), so a release change writes new shards
        fingerprint = mlcodec.create_codec(codec).fingerprint(args.quality).hex()  # type: ignore[attr-defined]
        folder = work / f"latent-q{args.quality}-{fingerprint[:8]}"
        reused = (folder / "manifest.json").exists()
        t0 = time.perf_counter()
        manifest = write_shards(IterableSource([(im, 0) for im in images]), folder, codec=codec,
                                quality=args.quality, maxcount=maxcount, progress=False)
        return folder, manifest, reused, time.perf_counter() - t0

    lat_dir, m, reused, enc_time = latent_shards(args.codec)
    lat_urls = sorted(str(p) for p in lat_dir.glob("*.tar*"))
    decode = {} if args.decode_batch is None else {"decode_batch": args.decode_batch}
    pipelines = [("(a) latent shards, output=latent",
                  lambda: latent_dataset(lat_urls, output="latent", codec=args.codec, **decode), lat_dir)]
    for k, codec in enumerate(args.also):
        folder, extra, _, _ = latent_shards(codec)
        urls = sorted(str(p) for p in folder.glob("*.tar*"))
        print(f"(a{k + 2}) is {codec}: {extra.mean_bpp:.3f} bpp")
        pipelines.append((f"(a{k + 2}) latent shards, output=latent",
                          lambda u=urls, c=codec: latent_dataset(u, output="latent", codec=c, **decode),
                          folder))
    if not args.no_image:
        pipelines.append(("(b) latent shards, output=image",
                          lambda: latent_dataset(lat_urls, output="image", codec=args.codec, **decode),
                          lat_dir))
    for label, (field, options) in PIXEL_FORMATS.items():
        folder = work / field
        if not list(folder.glob("*.tar")):
            pixel_shards(images, folder, maxcount, field, options)
        urls = sorted(str(p) for p in folder.glob("*.tar"))
        pipelines.append((f"{label}{PIXEL_ROW}", lambda u=urls, f=field: pixel_dataset(u, f), folder))
    print(f"{args.n} images {args.size}x{args.size}; {args.codec} latent shards at quality {args.quality}: "
          f"{m.mean_bpp:.3f} bpp ("
          + ("reused: written by an earlier run)" if reused else f"shard job {args.n / enc_time:.1f} img/s)"))
    decode_batch = args.decode_batch or inspect.signature(latent_dataset).parameters["decode_batch"].default
    print(f"DataLoader batch {args.batch}, decode batch {decode_batch}, 1 torch thread per process; "
          f"median of {args.rounds} rounds, pipelines taking turns")
    print(f"{'pipeline':<34} {'bytes on disk':>14} {'workers':>7} {'img/s':>8} {'vs (c)':>7}")
    rows = []
    for workers in (0, 2):
        runs: dict[str, list[float]] = {name: [] for name, _, _ in pipelines}
        for _ in range(args.rounds):
            for name, make, _ in pipelines:
                runs[name].append(throughput(make(), workers, args.batch, args.n))
        ref = statistics.median(runs[JPEG_ROW])
        for name, _, folder in pipelines:
            r = statistics.median(runs[name])
            rows.append({"pipeline": name, "bytes": du(folder), "workers": workers, "img_s": r,
                         "rounds": runs[name], "vs_jpeg": r / ref})
            print(f"{name:<34} {du(folder):>14} {workers:>7} {r:>8.1f} {r / ref:>6.2f}x")
    jpeg_bytes = du(work / "jpg")
    print("bytes against JPEG q90 shards: " + ", ".join(
        f"{name.split(' shards')[0]} {du(folder) / jpeg_bytes:.2f}x" for name, _, folder in pipelines
        if not name.startswith("(b)")))
    write_report({"n": args.n, "size": args.size, "quality": args.quality, "codec": args.codec,
                  "also": args.also,
                  "bpp": m.mean_bpp, "batch": args.batch, "decode_batch": decode_batch, "rounds": args.rounds,
                  "machine": machine(), "rows": rows}, args.out, started)


if __name__ == "__main__":
    main()
