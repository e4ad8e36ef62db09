"""Does compression change a real ImageNet model's predictions? EfficientNet-Lite0's top-1
agreement with itself on held-out dataset-like crops, per bit, for each codec.

The protocol (`mlcodec crops` runs the same on a user's photos): every held-out photo
(`mlcodec.data.photos`, full resolution) gives ``--per-photo`` 224 px crops, each of the photo
downscaled by a factor drawn from 1-3 (antialiased), as ImageNet/COCO-style sets store images.
Two sets are scored:

* ``confident``: the ``--keep`` crops the judge is surest of (top probability at least
  ``--min-confidence``): on unsure crops any change flips the answer. With ``--max-per-photo N``
  at most N of them come from one photo (the issue's protocol has no cap: of the 120 held-out
  confident crops, 84 are of one photo, scikit-image's coffee, which the judge calls espresso);
* ``random``: ``--keep`` crops drawn at random from all of them.

BD-rates are against WebP with a 95% paired bootstrap over crops (`mlcodec.metrics.bootstrap_bd_rate`).
Crops of one photo are not independent, so the interval over crops is narrower than one over
photos would be; the header prints how many crops of each set come from each photo.

    python -m benchmarks.judge_agreement [--photos ~/.cache/mlcodec/photos] \
        [--out benchmarks/results/judge_agreement.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import random
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import machine, write_report
from mlcodec.data.crops import dataset_crops
from mlcodec.data.photos import evaluation_photos
from mlcodec.tasks.judge_eval import confident_subset, evaluate_judge, judge_bd_rates
from mlcodec.tasks.judges import create_judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--judge", default="efficientnet-lite0")
    ap.add_argument("--per-photo", type=int, default=84)
    ap.add_argument("--keep", type=int, default=120)
    ap.add_argument("--min-confidence", type=float, default=0.56)
    ap.add_argument("--max-per-photo", type=int, default=0,
                    help="at most this many confident crops from one photo (0: no cap)")
    ap.add_argument("--codecs", default="mlcodec-hyperprior,mlcodec-unified,webp,jpeg",
                    help="codec names, or LABEL=NAME (F=mlcodec-hyperprior:runs/F/weights.safetensors)")
    ap.add_argument("--qualities", default="0,0.05,0.1,0.2,0.35,0.5,0.7,0.9")
    ap.add_argument("--sets", default="confident,random")
    ap.add_argument("--against", default="webp", help="comma-separated codecs (names or labels) the "
                    "BD-rates are taken against, each with its paired interval (e.g. webp,F for "
                    "an ablation's rows against its control)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/judge_agreement.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    photos = evaluation_photos([args.photos] if os.path.isdir(args.photos) else [], max_side=10**6)
    crops = [c for p in photos if min(p.image.size) >= 224
             for c in dataset_crops(p.image, p.name, args.per_photo, 224, (1.0, 3.0), seed=args.seed)]
    judge = create_judge(args.judge)
    conf = torch.cat([judge.logits([c.image for c in crops[i : i + 64]]) for i in range(0, len(crops), 64)])
    conf = conf.softmax(1).max(1).values.tolist()
    sets = {
        "confident": confident_subset(conf, [c.photo for c in crops], args.keep, args.min_confidence,
                                      args.max_per_photo),
        "random": sorted(random.Random(args.seed).sample(range(len(crops)), min(args.keep, len(crops)))),
    }
    lowest = min((conf[i] for i in sets["confident"]), default=0.0)
    print(f"{len(photos)} held-out photos, {len(crops)} crops; confident set {len(sets['confident'])} "
          f"(the surest, p >= {args.min_confidence}; the least sure of them p = {lowest:.2f}; from "
          f"{len({crops[i].photo for i in sets['confident']})} photos)", flush=True)
    qualities = [float(q) for q in args.qualities.split(",")]
    report = {"command": " ".join(["python", *sys.argv]), "date": datetime.date.today().isoformat(),
              "machine": f"{machine()}, {args.threads} threads",
              "judge": args.judge, "photos": [p.name for p in photos], "crops": len(crops),
              "min_confidence": args.min_confidence, "least_sure_confident": lowest, "sets": {}}
    for set_name in args.sets.split(","):
        idx = sets[set_name]
        result = evaluate_judge(judge, [crops[i].image for i in idx], args.codecs.split(","), qualities,
                                confident=args.min_confidence, progress=False)
        bd = {ref: judge_bd_rates(result, ref, resamples=args.bootstrap, seed=args.seed)
              for ref in args.against.split(",")}
        report["sets"][set_name] = {"images": len(idx), "photos": sorted({crops[i].photo for i in idx}),
                                    "rows": result["rows"], **{f"bd_rates_vs_{ref}": b for ref, b in bd.items()}}
        per_photo = collections.Counter(crops[i].photo for i in idx)
        report["sets"][set_name]["crops_per_photo"] = dict(per_photo.most_common())
        print(f"\n== {set_name}: {len(idx)} crops from {len(per_photo)} photos "
              f"({', '.join(f'{Path(k).stem} {v}' for k, v in per_photo.most_common())})")
        print(f"{'codec':<20} {'q':>5} {'bpp':>6} {'agree':>6} {'top5':>6} {'KL':>6}")
        for r in result["rows"]:
            print(f"{r['codec']:<20} {r['quality']:>5.2f} {r['bpp']:>6.3f} {r['agree']:>6.3f} "
                  f"{r['top5']:>6.3f} {r['kl']:>6.3f}")
        for ref, by_codec in bd.items():
            for codec, by_metric in by_codec.items():
                for metric in ("agree", "top5"):
                    b = by_metric[metric]
                    text = (f"n/a ({b['error']})" if "error" in b else
                            f"{b['bd_rate']:+.1f}% [{b['ci'][0]:+.1f}, {b['ci'][1]:+.1f}] over {metric} "
                            f"{b['metric_range'][0]:.3f}-{b['metric_range'][1]:.3f} "
                            f"({b['bpp_range'][0]:.3f}-{b['bpp_range'][1]:.3f} bpp; "
                            f"{b['no_overlap']}/{b['resamples']} resamples without overlap)")
                    print(f"BD-rate vs {ref:<5} {codec:<20} {metric:<6} {text}")
        sys.stdout.flush()
    write_report(report, args.out, t0)


if __name__ == "__main__":
    main()
