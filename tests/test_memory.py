"""Every command on a 4096 x 4096 image stays within 1.5 GB (10^9 bytes), its PSNR report
included: measured as the largest resident set of the command's process, in a fresh process with
the default threads (benchmarks/peak_memory.py measures the other commands and worker trees)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

BOUND = 1.5e9
#: runs argv[1:], then prints its children's largest resident set in bytes (Linux reports KiB)
WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(r)")


def peak_rss(argv: list[str]) -> int:
    res = subprocess.run([sys.executable, "-c", WRAP, *argv], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return int(res.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units are Linux's")
def test_compress_and_decode_of_a_4096_px_image_stay_within_1_5_gb(tmp_path):
    import skimage.data

    # a photo with texture everywhere, so that nearly every latent symbol is coded
    big = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((4096, 4096), Image.BICUBIC), np.int16)
    big = big + np.random.default_rng(0).normal(0, 6, big.shape).astype(np.int16)
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(tmp_path / "big.png")
    del big
    cli = [sys.executable, "-m", "mlcodec"]
    compress = peak_rss([*cli, "compress", str(tmp_path / "big.png"), "-o", str(tmp_path / "c"), "-q"])
    decode = peak_rss([*cli, "decode", str(tmp_path / "c" / "big.mlc"), "-o", str(tmp_path / "d"), "-q"])
    assert Image.open(tmp_path / "d" / "big.png").size == (4096, 4096)
    print(f"peak RSS: compress {compress / 1e9:.3f} GB, decode {decode / 1e9:.3f} GB")
    assert compress <= BOUND, f"compress peaked at {compress / 1e9:.3f} GB"
    assert decode <= BOUND, f"decode peaked at {decode / 1e9:.3f} GB"
