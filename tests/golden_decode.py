"""Decode the golden streams and print their latents' hashes as JSON (run by tests/test_exact.py
in fresh processes, under other thread counts and instruction sets)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

GOLDEN = Path(__file__).parent / "data" / "golden"
#: streams of the released ``mlcodec-unified`` weights (fingerprint 8affb51d...), kept decodable
GOLDEN_UNIFIED = Path(__file__).parent / "data" / "golden-unified"


def golden_files(folder: Path = GOLDEN) -> list[Path]:
    return sorted(folder.glob("*.mlc"))


def decode_hashes(batch: int, folder: Path = GOLDEN, device: str = "cpu") -> dict[str, str]:
    """Latent hashes of every golden stream in ``folder``, decoded ``batch`` streams per
    ``decode_latents`` call (the codec groups each call by shape and quality, so the 16 64x64
    crops form real batches) by the codec their headers name (``codec_for``), on ``device``."""
    import mlcodec

    files = golden_files(folder)
    codec = mlcodec.codec_for(files[0].read_bytes(), device=device)
    out = {}
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        for f, y in zip(chunk, codec.decode_latents([f.read_bytes() for f in chunk])):
            out[f.name] = hashlib.sha256(y.cpu().contiguous().numpy().astype("<f4").tobytes()).hexdigest()
    return out


if __name__ == "__main__":
    threads, batch = int(sys.argv[1]), int(sys.argv[2])
    folder = Path(sys.argv[3]) if len(sys.argv) > 3 else GOLDEN
    torch.set_num_threads(threads)
    hashes = decode_hashes(batch, folder)
    import numba  # after the decode, which imported it for its kernels

    print(json.dumps({"threads": torch.get_num_threads(), "hashes": hashes,
                      "capability": torch.backends.cpu.get_cpu_capability(),
                      "numba_cpu": numba.config.CPU_NAME or "host"}))
