"""Zero lost samples: format-3 shards read back identically under every reader setting.

Photo crops of 256x256 (the training and held-out photos alike: nothing is trained here) are
sharded at qualities 0.1, 0.2, ..., 0.9, once with ``--workers 0`` and once with ``--workers 2``.
Each dataset is read back through ``DataLoader(latent_dataset(..., output="latent"))`` with
``num_workers`` 0, 2 and 4 and main-process torch threads 1 and 2, and decoded again in fresh
processes at lower instruction sets (ATen, oneDNN and MKL together). Every sample's latent is
hashed; the table counts samples that came back, failures, and latents that differ from the
first reader's. For contrast, the same crops are also sharded in format 2 (the float
hyper-synthesis) with ``--workers 0`` and read the same ways.

    python -m benchmarks.exact_decode [--photos ~/.cache/mlcodec/photos] [--crops 1008]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

QUALITIES = [round(q, 1) for q in np.arange(0.1, 0.91, 0.1)]
ISAS = {"AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                 "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
        "default ISA": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                        "NUMBA_CPU_NAME": "generic"}}


def make_crops(photo_dirs: list[str], n: int, out: Path) -> None:
    """``n`` random 256x256 crops, one ImageFolder per quality (the shard job codes one quality)."""
    from mlcodec.data.photos import evaluation_photos, training_photos

    photos = [p.image for p in training_photos(photo_dirs) + evaluation_photos(photo_dirs)]
    photos = [p for p in photos if min(p.size) >= 256]
    rng = np.random.default_rng(0)
    per_q = -(-n // len(QUALITIES))
    for q in QUALITIES:
        d = out / f"q{int(q * 100):02d}" / f"q{int(q * 100):02d}"  # the class names the key
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_q):
            im = photos[int(rng.integers(len(photos)))]
            x, y = int(rng.integers(im.width - 255)), int(rng.integers(im.height - 255))
            im.crop((x, y, x + 256, y + 256)).save(d / f"{i:04d}.png")


def shard_all(crops: Path, out: Path, workers: int) -> list[str]:
    from mlcodec.cli import main

    tars = []
    for q in QUALITIES:
        dest = out / f"q{int(q * 100):02d}"
        assert main(["-q", "shard", str(crops / f"q{int(q * 100):02d}"), "-o", str(dest),
                     "--quality", str(q), "--workers", str(workers), "--maxcount", "64"]) == 0
        tars += sorted(str(p) for p in dest.glob("shard-*.tar*"))
    return tars


def read_hashes(tars: list[str], num_workers: int, threads: int) -> dict[str, str]:
    """Latent hashes by key, of the samples the loader yields (failing ones are skipped)."""
    from torch.utils.data import DataLoader

    from mlcodec.integrations.webdataset import latent_dataset

    torch.set_num_threads(threads)
    ds = latent_dataset(tars, output="latent", on_error="skip")
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    out = {}
    for s in loader:
        y = s["latent"].contiguous().numpy().astype("<f4")
        out[s["__key__"]] = hashlib.sha256(y.tobytes()).hexdigest()
    return out


def isa_hashes(tars: list[str], env: dict[str, str]) -> dict[str, str]:
    code = ("import json, sys, warnings; warnings.simplefilter('ignore');"
            "from benchmarks.exact_decode import read_hashes;"
            "print(json.dumps(read_hashes(json.loads(sys.argv[1]), 0, 1)))")
    res = subprocess.run([sys.executable, "-c", code, json.dumps(tars)], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent,
                         env={**os.environ, **env, "OMP_NUM_THREADS": "1"}, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--crops", type=int, default=1008)
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    args = ap.parse_args()
    dirs = [args.photos] if Path(args.photos).is_dir() else []
    work = Path(args.work or tempfile.mkdtemp(prefix="mlcodec-exact-"))
    make_crops(dirs, args.crops, work / "crops")
    datasets = {"format 3, --workers 0": shard_all(work / "crops", work / "v3w0", 0),
                "format 3, --workers 2": shard_all(work / "crops", work / "v3w2", 2)}
    from mlcodec.codecs.learned import LatentCodec

    LatentCodec.format_version = 2  # what releases before format 3 wrote
    datasets["format 2, --workers 0"] = shard_all(work / "crops", work / "v2w0", 0)
    LatentCodec.format_version = 3
    n = len(QUALITIES) * -(-args.crops // len(QUALITIES))
    print(f"{n} crops of 256x256 at qualities {QUALITIES[0]}..{QUALITIES[-1]}, in {work}; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"\n{'dataset':<24} {'reader':<28} {'samples':>7} {'lost':>5} {'latents ≠ first reader':>23}")
    for name, tars in datasets.items():
        first = None
        readers = [(f"DataLoader workers {w}, {t} thr", lambda w=w, t=t: read_hashes(tars, w, t))
                   for w in (0, 2, 4) for t in (1, 2)]
        readers += [(f"fresh process, {isa}", lambda e=env: isa_hashes(tars, e)) for isa, env in ISAS.items()]
        for label, read in readers:
            got = read()
            first = first or got
            differ = sum(1 for k, v in got.items() if first.get(k) not in (None, v))
            print(f"{name:<24} {label:<28} {len(got):>7} {n - len(got):>5} {differ:>23}")


if __name__ == "__main__":
    main()
