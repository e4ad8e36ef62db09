"""Peak memory of every command on one large image (4096 x 4096 by default), workers included.

Each command runs in a fresh process with the default threads. Two figures per command:

* ``maxrss``: the largest resident set of any one process in the tree (what ``/usr/bin/time -v``
  reports for a single process), from ``getrusage(RUSAGE_CHILDREN)`` of a wrapper whose only
  children are the command's;
* ``tree PSS``: the peak, over samples every 20 ms, of the proportional set size summed over the
  command and all its descendants (shared library pages counted once across workers). Sampling can
  miss a spike shorter than 20 ms; ``maxrss`` cannot.

The bound (issue: 1.5 GB = 1.5e9 bytes) holds when both are at or under it.

    python -m benchmarks.peak_memory [--photo PATH] [--side 4096]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from PIL import Image

from benchmarks.common import machine

#: a wrapper that runs argv[1:] and prints its children's largest RSS in bytes (Linux: KiB units)
WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr); "
        "sys.exit(r)")

LOADER = """
import sys, torch
from mlcodec.integrations.webdataset import latent_dataset, collate_padded
ds = latent_dataset(sys.argv[1], output=sys.argv[2])
loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=int(sys.argv[3]), collate_fn=collate_padded)
n = sum(len(b["keys"]) for b in loader)
assert n == int(sys.argv[4]), n
"""


def tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAP, *argv], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    peak, done = [0], threading.Event()

    def sample() -> None:
        ps = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                # the wrapper itself is small: count only what it runs
                peak[0] = max(peak[0], sum(tree_pss(c) for c in ps.children()))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    maxrss = int(next(line.split()[1] for line in err.splitlines() if line.startswith("MAXRSS")))
    return {"maxrss_GB": maxrss / 1e9, "tree_pss_GB": peak[0] / 1e9, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", default=os.path.expanduser(
        "~/.cache/mlcodec/photos/lomiri/Infinite-Sea_by_Aury88.jpg"))
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    mlcodec = [sys.executable, "-m", "mlcodec"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = Image.open(args.photo).convert("RGB") if os.path.exists(args.photo) else None
        if src is None:  # offline fallback: a scikit-image photo, upscaled
            import skimage.data

            src = Image.fromarray(skimage.data.astronaut())
        (t / "folder" / "big").mkdir(parents=True)
        src.resize((args.side, args.side), Image.LANCZOS).save(t / "folder" / "big" / "img.png")
        png = str(t / "folder" / "big" / "img.png")
        jobs = {
            "compress (with its PSNR report)": [*mlcodec, "compress", png, "-o", str(t / "c")],
            "decode": [*mlcodec, "decode", str(t / "c" / "img.mlc"), "-o", str(t / "d")],
            "shard (--workers 0)": [*mlcodec, "shard", str(t / "folder"), "-o", str(t / "s0"), "--workers", "0", "-q"],
            "shard (--workers 2)": [*mlcodec, "shard", str(t / "folder"), "-o", str(t / "s2"), "--workers", "2", "-q"],
            "loader, output=latent, 0 workers": [sys.executable, "-c", LOADER, str(t / "s0"), "latent", "0", "1"],
            "loader, output=image, 0 workers": [sys.executable, "-c", LOADER, str(t / "s0"), "image", "0", "1"],
            "loader, output=image, 2 workers": [sys.executable, "-c", LOADER, str(t / "s0"), "image", "2", "1"],
        }
        for name, argv in jobs.items():
            rows[name] = measure(argv, env)
            r = rows[name]
            print(f"{name:<36} maxrss {r['maxrss_GB']:.3f} GB  tree PSS {r['tree_pss_GB']:.3f} GB  "
                  f"({r['seconds']:.0f} s)", flush=True)
    report = {"command": " ".join(["python", *sys.argv]), "date": datetime.date.today().isoformat(),
              "machine": machine(),
              "side": args.side, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
