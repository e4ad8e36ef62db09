"""Write the golden format-3 streams in ``tests/data/golden`` and their latents' hashes.

Run once per format and per released weights, and commit the output: ``golden`` holds
``mlcodec-hyperprior@1``'s streams, ``golden-hyperprior-2`` those of ``@2`` (``--codec
mlcodec-hyperprior@2 --out tests/data/golden-hyperprior-2``), ``golden-unified`` those of
``mlcodec-unified@1`` (``--codec mlcodec-unified@1 --out tests/data/golden-unified``) and
``golden-unified-2`` of ``@2`` (``--codec mlcodec-unified@2 --out tests/data/golden-unified-2``) and
``golden-unified-3`` of ``@3`` (``--codec mlcodec-unified@3 --out tests/data/golden-unified-3``), kept so
that retrained weights never orphan them. The tests decode these files under other thread counts,
batch sizes and instruction sets, and expect the latents recorded here bit for bit. Re-running on another machine or device
adds streams written there (``--tag``); existing files are never rewritten.

The images are crops of scikit-image's astronaut (a held-out photo) and a procedural gradient:
16 crops of 64x64 at quality 0.5 (decoded as batches of 1, 7 and 16), and single streams of other
sizes, qualities and a grayscale image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

import mlcodec

HERE = Path(__file__).parent / "golden"


def sources() -> list[tuple[str, Image.Image, float]]:
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(2026)
    out = []
    for i in range(16):
        y, x = rng.integers(0, 512 - 64, 2)
        out.append((f"crop64_q50_{i:02d}", Image.fromarray(photo[y:y + 64, x:x + 64]), 0.5))
    out.append(("photo160x96_q10", Image.fromarray(photo[100:196, 200:360]), 0.1))
    out.append(("photo70x130_q90", Image.fromarray(photo[50:180, 300:370]), 0.9))
    out.append(("photo256_q70", Image.fromarray(photo[128:384, 128:384]), 0.7))
    out.append(("gray64_q30", Image.fromarray(photo[:64, :64]).convert("L"), 0.3))
    ramp = np.linspace(0, 255, 128 * 128 * 3).reshape(128, 128, 3).astype(np.uint8)
    out.append(("ramp128_q03", Image.fromarray(ramp), 0.03))
    return out


def latent_hash(y: torch.Tensor) -> str:
    return hashlib.sha256(y.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--codec", default=mlcodec.DEFAULT_CODEC)
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args()
    codec = mlcodec.create_codec(args.codec, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    index_path = args.out / "golden.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name, image, q in sources():
        file = f"{args.tag}_{name}.mlc"
        if file in index:
            continue
        data = codec.compress(image, q)
        (args.out / file).write_bytes(data)
        index[file] = {"latent_sha256": latent_hash(codec.decode_latent(data).cpu()),
                       "codec": args.codec, "fingerprint": codec.fingerprint(q).hex(),
                       "written_on": f"{args.device}, {platform.machine()}, torch {torch.__version__}"}
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    print(f"{len(index)} golden streams in {args.out}")


if __name__ == "__main__":
    main()
