"""Decode the golden streams and print their latents' hashes as JSON (run by tests/test_exact.py
in fresh processes, under other thread counts and instruction sets)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"
#: streams of each released set of weights, kept decodable (tests/data/make_golden.py): folder ->
#: the release that wrote them
RELEASES = {
    DATA / "golden": "mlcodec-hyperprior@1",
    DATA / "golden-hyperprior-2": "mlcodec-hyperprior",  # the newest release: its plain name
    DATA / "golden-unified": "mlcodec-unified@1",
    DATA / "golden-unified-2": "mlcodec-unified@2",
    DATA / "golden-unified-3": "mlcodec-unified",
}
GOLDEN = DATA / "golden"


def golden_files(folder: Path = GOLDEN) -> list[Path]:
    return sorted(folder.glob("*.mlc"))


def expected_hashes(folder: Path) -> dict[str, str]:
    """The latent hashes ``golden.json`` records for ``folder``'s streams."""
    index = json.loads((folder / "golden.json").read_text())
    return {k: v["latent_sha256"] for k, v in index.items()}


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


if __name__ == "__main__":  # THREADS BATCH [FOLDER ...] (default: every release's folder)
    threads, batch = int(sys.argv[1]), int(sys.argv[2])
    folders = [Path(a) for a in sys.argv[3:]] or list(RELEASES)
    torch.set_num_threads(threads)
    hashes = {f.name: decode_hashes(batch, f) for f in folders}
    import numba  # after the decode, which imported it for its kernels

    print(json.dumps({"threads": torch.get_num_threads(), "hashes": hashes,
                      "capability": torch.backends.cpu.get_cpu_capability(),
                      "numba_cpu": numba.config.CPU_NAME or "host"}))
