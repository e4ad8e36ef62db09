r"""Model selection for the unified codec on a development split, never on the evaluation data.

The ablation (``benchmarks/unified.py``) scores codecs on its validation scenes (seed 1) with
evaluation references (seed 1) and on the held-out photos. Choices of the recipe (a task weight,
say) are made here instead, on data the evaluation never uses:

* **dev scenes**: 300 synthetic scenes of seed 2000 (training scenes are seeds 0 and 1000,
  validation seed 1), written under ``WORK/coco/dev``;
* **tasks**: decode + the frozen seed-0 *experts*, i.e. the codec's own teachers. This favours
  the trained codecs (they learned what these networks need), which is why it is only a dev
  signal and the ablation scores with references of another seed;
* **people**: PSNR and MS-SSIM BD-rate against A0 on every third training photo (long side
  512 px). The codecs saw crops of these in training, as A0 did.

A variant of a row trains beside the benchmark's own under ``WORK/codecs/ROW+TAG``, e.g. the LOO
row with task weight 0.15, and the fine-tune control F (rate-distortion alone: what fine-tuning
by itself costs people) at learning rate 3e-5::

    python -m benchmarks.unified --work runs/unified-cpu --rows LOO --tag=-tw0.15 --task-weight 0.15 \
        --until codecs --steps 1000
    python -m benchmarks.unified --work runs/unified-cpu --rows F --tag=-lr3e-5 --lr 3e-5 \
        --until codecs --steps 1000
    python -m benchmarks.studies.unified_dev --work runs/unified-cpu --codecs LOO,LOO-tw0.15,F-lr3e-5 --tasks cls,seg

``--held-out`` measures people on the ablation's held-out photos instead of the dev photos: a
report on a codec about to ship, once its recipe is chosen, never an input to choosing one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


import mlcodec  # noqa: E402
from mlcodec.data.photos import Photo, training_photos  # noqa: E402
from mlcodec.data.sources import CocoSource  # noqa: E402
from mlcodec.data.synthetic import SyntheticScenes, export_coco  # noqa: E402
from mlcodec.tasks.data import make_spec  # noqa: E402
from mlcodec.tasks.evaluate import curves, evaluate_codecs  # noqa: E402
from mlcodec.tasks.metrics import PRIMARY  # noqa: E402
from benchmarks.common import held_out_photos, measure  # noqa: E402
from benchmarks.unified import BASE, EXPERT_HEADS, QUALITIES, compare, fmt, photo_line  # noqa: E402

DEV_SEED, DEV_SCENES = 2000, 300


def dev_photos(photo_dir: str, max_side: int = 512) -> list[Photo]:
    """Every third training photo file, long side ``max_side``."""
    out = []
    for p in training_photos([photo_dir], use_skimage=False)[::3]:
        im = p.image.copy()
        im.thumbnail((max_side, max_side))
        out.append(Photo(p.name, im))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/unified-bench")
    ap.add_argument("--codecs", required=True, help="folders under WORK/codecs, compared with A0")
    ap.add_argument("--tasks", default="cls,seg,det")
    ap.add_argument("--photos", default=str(Path.home() / ".cache/mlcodec/photos"))
    ap.add_argument("--held-out", action="store_true",
                    help="people on the held-out photos (a report on a chosen codec, never for choosing)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    dev = work / "coco/dev"
    if not (dev / "annotations.json").exists():
        export_coco(SyntheticScenes(DEV_SCENES, 128, DEV_SEED), dev)
    src = CocoSource(dev / "annotations.json", dev / "images")
    specs = {"A0": BASE, **{r: f"{BASE}:{(work / 'codecs' / r / 'weights.safetensors').resolve()}"
                            for r in args.codecs.split(",")}}

    print(f"dev scenes: {len(src)} of seed {DEV_SEED}; decode + frozen seed-0 expert (the codecs' "
          "teachers); BD-rate against A0 [min/mean points gained at common rates]")
    for task in [t for t in args.tasks.split(",") if t]:  # --tasks "": photos only
        spec = make_spec(src.class_names, src.label_names, task, "label", src.category_ids)
        expert = work / "experts" / task / f"{EXPERT_HEADS[task]}.safetensors"
        res = evaluate_codecs(task, src, spec, list(specs.values()), QUALITIES, pixel_reference=str(expert),
                              progress=False)
        cs, metric = curves(res["rows"]), PRIMARY[task]
        ref = cs[f"{BASE}/pixel"]
        for row, s in specs.items():
            pts = cs[f"{s}/pixel"]
            print(f"{task:<4} {row:<10} " + " ".join(f"{p['bpp']:.3f}:{p[metric]:.3f}" for p in pts)
                  + ("" if row == "A0" else f" | {fmt(compare(ref, pts, metric))}"), flush=True)

    if args.held_out:
        print("\nthe ablation's held-out photos (a report, never for choosing a recipe):")
        photos = held_out_photos(args.photos)
    else:
        photos = dev_photos(args.photos)
        print(f"\n{len(photos)} dev photos (training photos): " + ", ".join(p.name for p in photos))
    a0 = None
    for row, s in specs.items():
        codec = mlcodec.create_codec(s)
        pts = [measure(codec, photos, q) for q in QUALITIES]
        print(photo_line(f"{row:<10}", pts, a0), flush=True)
        a0 = a0 or pts  # the first row is A0


if __name__ == "__main__":
    main()
