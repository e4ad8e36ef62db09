# One script of this size on purpose: a resumable, staged benchmark (experts, references, codec
# rows, heads, evaluation) whose stages share the rows' specs and the digests that key what is kept.
"""MTCE + DIKL ablation: one probe recipe for every codec row, offline, on the synthetic benchmark.

Rows (codecs): A0 the packaged MSE codec (pinned by its weights fingerprint), A1 naive joint task
loss, A2 + MTCE, A3 + DIKL, A4 MTCE + DIKL (the shipped recipe), A5 DIKL without the memory bank,
A6 the memory bank without diffusion, LOO: A4 trained with cls + seg experts only (det left
out), and F, the fine-tune control: the same steps with rate-distortion alone (task weight 0, no
DIKL), which tells what fine-tuning on the scenes does by itself. Every trained row starts from
the packaged weights with the same steps, data and seed.

Stages (each skipped when its output exists, and every model resumes from its last finished epoch
or checkpointed step, so a killed run resumes where it stopped):

1. ``data``: train/val scenes (seeds 0 and 1) as COCO with image labels and colours; lossless PNG
   image shards of both.
2. ``experts``: frozen pixel experts for codec training (seed 0: pixel-cls, pixel-seg,
   pixel-fcos), each trained when the first row that sees its task trains (so two processes
   with disjoint ``--rows`` can share a machine: ``--rows LOO`` needs no detection expert).
3. ``codecs``: ``mlcodec.train.train`` with :class:`mlcodec.tasks.unified.UnifiedObjective`; then
   the *evaluation references* (seed 1, the experts' recipe, plus pixel-cls on the colour label).
   Codec training never sees the references; the colour task is in no codec's training (the
   unseen task).
4. per row: latent shards of the training scenes (mixed qualities), latent heads for cls, seg,
   det and colour (the same epochs and seeds for every row; seeds 0 and 1 for A0 and A4).
5. ``evaluate_codecs`` over the val scenes at qualities 0.1-0.9, per row, task and head seed:
   latent heads and decode + frozen evaluation reference; each result is kept with the digests of
   what it measured, so a killed run resumes and a run with more rows evaluates only the new ones.
6. BD-rate against A0 per task and domain; where the curves do not overlap, the fixed-grid gain
   (each curve's metric interpolated linearly in log-bpp at the other's rates, in points of
   0.01); PSNR and MS-SSIM BD-rate against A0 on the held-out photos; encode/decode time.

    python -m benchmarks.unified --work runs/unified-bench [--rows A0,A1,A2,A4,LOO] [--steps 1000]

On two cores, the stages that do not depend on each other run as two 1-thread processes, e.g. the
codec rows beside the evaluation references (A0 is the packaged codec: nothing to train), then the
full run, which finds everything trained and evaluates:

    python -m benchmarks.unified --work runs/unified-cpu --rows A4,F,A1,A2,A3,A5,A6,LOO --until codecs --threads 1
    python -m benchmarks.unified --work runs/unified-cpu --rows A0 --until references --threads 1

``--packaged-a4`` takes row A4 from the first release of ``mlcodec-unified`` (``@1``, trained by
this script's A4 recipe; release 2 was trained on real photos by ``scripts/unified_release.sh``)
instead of training it again; its shards, heads and kept evaluations live in
``WORK/rows/A4-packaged``, apart from a retrained A4's.

Experts and evaluation references kept as fixtures (``--export-fixtures``: float16, with their
recipe, in ``benchmarks/fixtures/unified-{experts,references}-TASK.safetensors``) are restored
instead of trained when the recipe (scenes, size, epochs, seed) is the same, so a new machine skips
hours of training. ``--until experts`` trains the experts of ``--expert-tasks`` alone (two
processes can train different ones side by side), for ``train-codec --objective unified --expert``
outside this script too (``scripts/unified_release.sh``):

    python -m benchmarks.unified --work runs/unified-cpu --until experts --expert-tasks seg --threads 1

A run with ``--references trained`` evaluates while a reference still trains: that task gets its
latent rows now, and a later run adds its decode + reference rows (the kept latent rows of rows
already evaluated are measured again, as their key names the reference).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

import mlcodec  # noqa: E402
from mlcodec.data.sources import CocoSource  # noqa: E402
from mlcodec.data.synthetic import export_all  # noqa: E402
from mlcodec.integrations.webdataset import write_image_shards, write_shards  # noqa: E402
from mlcodec.metrics import bd_rate  # noqa: E402
from mlcodec.registry import codec_config, pretrained_path  # noqa: E402
from mlcodec.tasks.data import make_spec  # noqa: E402
from mlcodec.tasks.evaluate import curves, evaluate_codecs  # noqa: E402
from mlcodec.tasks.metrics import PRIMARY  # noqa: E402
from mlcodec.tasks.train import train_head  # noqa: E402
from mlcodec.tasks.unified import UnifiedConfig, UnifiedObjective  # noqa: E402
from mlcodec.train import TrainConfig, train  # noqa: E402
from mlcodec.weights import read_metadata  # noqa: E402
from benchmarks.common import (FIXTURES, fixture_digest, held_out_photos, measure, recipe_digest, restore_fixture,
                               write_fixture)  # noqa: E402
from benchmarks.task_rd import Subset  # noqa: E402

BASE = "mlcodec-hyperprior"
QUALITIES = (0.1, 0.3, 0.5, 0.7, 0.9)
#: row -> (mtce, bank, diffusion, seen tasks)
ROWS = {
    "F": (False, False, False, ()),  # the fine-tune control: rate-distortion only (task weight 0)
    "A1": (False, False, False, ("cls", "seg", "det")),
    "A2": (True, False, False, ("cls", "seg", "det")),
    "A3": (False, True, True, ("cls", "seg", "det")),
    "A4": (True, True, True, ("cls", "seg", "det")),
    "A5": (True, False, True, ("cls", "seg", "det")),
    "A6": (True, True, False, ("cls", "seg", "det")),
    "LOO": (True, True, True, ("cls", "seg")),
}
EXPERT_HEADS = {"cls": "pixel-cls", "seg": "pixel-seg", "det": "pixel-fcos"}
#: epochs of the experts and references by task: the task benchmark's pixel references (2,400
#: scenes: top-1 0.97 after 30 epochs, mIoU 0.87 after 16). Shorter runs leave weak experts: 20
#: epochs on 1,000 scenes gave top-1 0.27 (the classifier sits at chance for ~8 epochs), 8 gave
#: mIoU 0.12, 10 gave pixel-fcos mAP 0.02 (BENCHMARKS.md, the first CPU-scale run)
EXPERT_EPOCHS = {"cls": 30, "seg": 16, "det": 30}
#: epochs of the latent heads by evaluation task: the task benchmark's latent heads (24 / 16 / 12,
#: where their validation metric levelled off); colour as cls
HEAD_EPOCHS = {"cls": 24, "seg": 16, "det": 12, "colour": 24}
#: evaluation tasks: (name, task, label key)
EVAL_TASKS = (("cls", "cls", "label"), ("seg", "seg", "label"), ("det", "det", "label"),
              ("colour", "cls", "colour"))


def grid_gain(ref: list[dict], test: list[dict], metric: str) -> dict[str, float] | None:
    """Points (0.01 of the metric) by which ``test`` beats ``ref`` at common bitrates: each curve's
    metric interpolated linearly in log-bpp at the other's rates inside the common range; the
    minimum and mean over those rates. None when the rate ranges do not overlap."""
    def interp(pts, at):
        lb = np.log([p["bpp"] for p in pts])
        return np.interp(np.log(at), lb, [p[metric] for p in pts])

    lo = max(min(p["bpp"] for p in ref), min(p["bpp"] for p in test))
    hi = min(max(p["bpp"] for p in ref), max(p["bpp"] for p in test))
    diffs = [100 * (p[metric] - interp(ref, p["bpp"])) for p in test if lo <= p["bpp"] <= hi]
    diffs += [100 * (interp(test, p["bpp"]) - p[metric]) for p in ref if lo <= p["bpp"] <= hi]
    if not diffs:
        return None
    return {"min": float(min(diffs)), "mean": float(np.mean(diffs))}


def compare(ref: list[dict], test: list[dict], metric: str) -> dict:
    """BD-rate of ``test`` against ``ref`` (None where none exists) and the fixed-grid gain."""
    try:
        bd = bd_rate([p["bpp"] for p in ref], [p[metric] for p in ref],
                     [p["bpp"] for p in test], [p[metric] for p in test])
    except ValueError:
        bd = None
    return {"bd_rate": bd, "grid": grid_gain(ref, test, metric)}


def fmt(c: dict | None) -> str:
    if c is None:
        return "-"
    grid = c["grid"]
    g = "" if grid is None else f" [{grid['min']:+.1f}/{grid['mean']:+.1f}]"
    return ("n/a" if c["bd_rate"] is None else f"{c['bd_rate']:+.1f}%") + g


def photo_line(label: str, pts: list[dict], a0: list[dict] | None) -> str:
    """``label`` and a row's photo points (bpp/PSNR per quality), with its PSNR and MS-SSIM
    BD-rate against ``a0``'s points where given."""
    line = f"{label} bpp/PSNR " + " ".join(f"{p['bpp']:.3f}/{p['psnr']:.2f}" for p in pts)
    for m in ("psnr", "ms_ssim") if a0 is not None else ():
        try:
            v = bd_rate([p["bpp"] for p in a0], [p[m] for p in a0], [p["bpp"] for p in pts],
                        [p[m] for p in pts])
            line += f" | {m} BD-rate {v:+.1f}%"
        except ValueError:
            line += f" | {m} BD-rate n/a"
    return line


def digest(path: str | Path) -> str:
    """SHA-256 of a file (a head's or a reference's weights), for keying kept evaluations."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_recipe(out: Path, recipe: dict) -> None:
    """A row resumes, or is reused once trained, only with the recipe it started with
    (``out/recipe.json``); a trained row without one was not made by this script."""
    path = out / "recipe.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != recipe:
            diff = {k: (old.get(k), v) for k, v in recipe.items() if old.get(k) != v}
            raise SystemExit(f"{out} was started with another recipe {diff} (was, now); "
                             f"use another --work or --tag, or delete {out}")
    elif (out / "weights.safetensors").exists():
        raise SystemExit(f"{out} holds weights but no recipe.json; delete it or use another --tag")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recipe, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/unified-bench")
    ap.add_argument("--out", default="benchmarks/results/unified.json")
    ap.add_argument("--rows", default="A0,F,A1,A2,A3,A4,A5,A6,LOO")
    ap.add_argument("--train", type=int, default=2400, help="benchmark training scenes (seed 0)")
    ap.add_argument("--val", type=int, default=300, help="benchmark validation scenes (seed 1)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--expert-epochs", type=int, help=f"default by task: {EXPERT_EPOCHS}")
    ap.add_argument("--head-epochs", type=int, help=f"default by task: {HEAD_EPOCHS}")
    ap.add_argument("--steps", type=int, default=1000, help="codec training steps per row")
    ap.add_argument("--minutes", type=float, default=0.0, help="codec training time per row (0: steps)")
    ap.add_argument("--scenes", type=int, default=2000, help="codec training scenes (seed 1000)")
    ap.add_argument("--scene-batch", type=int, default=8)
    ap.add_argument("--photo-batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=UnifiedConfig.codec_lr,
                    help="codec learning rate (chosen with --task-weight on the dev split)")
    ap.add_argument("--task-weight", type=float, default=UnifiedConfig.task_weight,
                    help="the balanced task terms against rate-distortion (chosen on the dev split: "
                         "benchmarks/studies/unified_dev.py)")
    ap.add_argument("--dikl-weight", type=float, default=UnifiedConfig.dikl_weight)
    ap.add_argument("--tag", default="", help="suffix of the rows' codec folders (WORK/codecs/ROW+TAG): "
                    "a recipe variant for benchmarks/studies/unified_dev.py beside the benchmark's own rows")
    ap.add_argument("--eval-tasks", default=",".join(t[0] for t in EVAL_TASKS),
                    help="evaluation tasks whose references and heads train and evaluate (all by default): "
                         "two processes can train references of different tasks side by side")
    ap.add_argument("--packaged-a4", action="store_true",
                    help="row A4 is mlcodec-unified@1 (trained by this script's A4 recipe, "
                         "BENCHMARKS.md) instead of a codec trained again in WORK/codecs/A4")
    ap.add_argument("--seed-rows", "--two-seeds", dest="two_seeds", default="A0,A4",
                    help="rows whose latent heads train with --head-seeds seeds (the others: seed 0)")
    ap.add_argument("--head-seeds", type=int, default=2,
                    help="seeds 0..N-1 of the --seed-rows rows' latent heads; the evaluation reference "
                         "scores the seed-0 run only (its decoded figures do not depend on the head)")
    ap.add_argument("--photos", default=str(Path.home() / ".cache/mlcodec/photos"))
    ap.add_argument("--references", choices=("train", "trained", "none"), default="train",
                    help="evaluation references: train those missing; use only those already trained "
                    "(a task whose reference is still training gets latent rows only, and its "
                    "decode + reference rows are added by a later run); none (latent heads only)")
    ap.add_argument("--no-references", dest="references", action="store_const", const="none",
                    help="the same as --references none")
    ap.add_argument("--expert-tasks", default=",".join(EXPERT_HEADS),
                    help="with --until experts or --export-fixtures: the tasks whose experts train or "
                         "are written")
    ap.add_argument("--until", choices=("experts", "codecs", "references", "heads", "end"), default="end",
                    help="stop after a stage: experts (those of --expert-tasks), codecs (the experts and the rows' codecs: a GPU lease), "
                         "references (also the evaluation references), heads (also the rows' latent "
                         "heads), end (also the evaluation and the report)")
    ap.add_argument("--device", default="cpu",
                    help="where the experts, codecs, references and latent heads train (cpu, cuda); "
                         "shards, evaluation, photos and speed run on the CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-fixtures", action="store_true",
                    help="write the trained experts of --expert-tasks and evaluation references of "
                         "--eval-tasks as float16 fixtures (benchmarks/fixtures/unified-KIND-TASK.safetensors, "
                         "with their recipe), training nothing, and stop; a later run on any machine "
                         "restores a model from its fixture instead of training it, when the recipe "
                         "(scenes, size, epochs, seed) is the same")
    args = ap.parse_args()
    expert_tasks = args.expert_tasks.split(",")
    if unknown := set(expert_tasks) - set(EXPERT_HEADS):
        raise SystemExit(f"--expert-tasks: unknown {sorted(unknown)}; choose from {list(EXPERT_HEADS)}")
    eval_names = set(args.eval_tasks.split(","))
    eval_tasks = [t for t in EVAL_TASKS if t[0] in eval_names]
    if unknown := eval_names - {t[0] for t in EVAL_TASKS}:
        raise SystemExit(f"--eval-tasks: unknown {sorted(unknown)}; choose from {[t[0] for t in EVAL_TASKS]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # an epoch a line
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    t0 = time.time()

    def stamp(what: str) -> None:
        print(f"[{time.time() - t0:.0f}s] {what}", flush=True)

    # 1. data, made when a stage first needs it (a run of codec rows with trained experts does not)
    @functools.cache
    def data() -> tuple[CocoSource, CocoSource]:
        if not (work / "coco/val/annotations.json").exists():
            export_all(work, args.train, args.val, size=args.size, formats=("coco",))
        train_src = CocoSource(work / "coco/train/annotations.json", work / "coco/train/images")
        val_src = CocoSource(work / "coco/val/annotations.json", work / "coco/val/images")
        for split, src in (("train", train_src), ("val", val_src)):
            if not (work / f"png/{split}/manifest.json").exists():
                write_image_shards(src, work / f"png/{split}", "png", progress=False)
        stamp("data ready")
        return train_src, val_src

    # 2. experts (seed 0, codec training) and evaluation references (seed 1, never in training)
    def pixel_out(kind: str, task: str, label: str = "label") -> Path:
        return work / kind / (task if label == "label" else label)

    def pixel_model_trained(kind: str, task: str, head: str, label: str = "label") -> bool:
        return (pixel_out(kind, task, label) / f"{head}.history.json").exists()  # written when training ends

    def pixel_recipe(task: str, head: str, seed: int, label: str) -> dict:
        return {"head": head, "task": task, "label": label, "seed": seed, "train": args.train,
                "val": args.val, "size": args.size, "epochs": args.expert_epochs or EXPERT_EPOCHS[task]}

    def fixture_path(kind: str, task: str, label: str) -> Path:
        return FIXTURES / f"unified-{kind}-{pixel_out(kind, task, label).name}.safetensors"

    def restored(kind: str, task: str, head: str, seed: int, label: str = "label") -> bool:
        """Trained, or restored now from its fixture made by this recipe."""
        out = pixel_out(kind, task, label)
        if not pixel_model_trained(kind, task, head, label):
            fixture = fixture_path(kind, task, label)
            extra = restore_fixture(fixture, out / f"{head}.safetensors", pixel_recipe(task, head, seed, label))
            if extra is not None:
                (out / f"{head}.history.json").write_text(json.dumps(extra["history"], indent=1))
                stamp(f"{kind} {head} ({label}) seed {seed} restored from {fixture}")
        return pixel_model_trained(kind, task, head, label)

    def pixel_model(kind: str, task: str, head: str, seed: int, label: str = "label") -> str:
        out = pixel_out(kind, task, label)
        path = out / f"{head}.safetensors"
        if not restored(kind, task, head, seed, label):
            data()
            r = train_head(task, [work / "png/train"], [work / "png/val"], out, head=head,
                           epochs=args.expert_epochs or EXPERT_EPOCHS[task], seed=seed, progress=False,
                           label_key=label, device=args.device)
            stamp(f"{kind} {head} ({label}) seed {seed}: best {r.best(task):.4f}")
        return str(path)

    def expert(task: str) -> str:  # trained when a codec row first needs it
        return pixel_model("experts", task, EXPERT_HEADS[task], 0)

    wanted = {**{t: (t, h, "label") for t, h in EXPERT_HEADS.items()}, "colour": ("cls", "pixel-cls", "colour")}
    if args.export_fixtures:  # what is trained (or restored), as float16 fixtures; nothing trains
        for kind, seed, names in (("experts", 0, expert_tasks), ("references", 1, eval_names)):
            for name, (task, head, label) in wanted.items():
                if name not in names or not restored(kind, task, head, seed, label):
                    continue
                dst, recipe = fixture_path(kind, task, label), pixel_recipe(task, head, seed, label)
                if fixture_digest(dst) == recipe_digest(recipe):
                    stamp(f"{dst} already holds {kind} {name} of this recipe")
                    continue
                out = pixel_out(kind, task, label)
                history = json.loads((out / f"{head}.history.json").read_text())
                write_fixture(out / f"{head}.safetensors", dst, recipe, {"history": history})
                stamp(f"wrote {dst} ({dst.stat().st_size} bytes)")
        return
    if args.until == "experts":
        for task in expert_tasks:
            stamp(f"expert {task}: {expert(task)}")
        return

    def row_dir(row: str) -> Path:  # shards, heads and kept evaluations of a row
        return work / "rows" / (row + args.tag + ("-packaged" if row == "A4" and args.packaged_a4 else ""))

    # 3. codecs
    packaged = str(pretrained_path(codec_config(BASE)))
    rows = args.rows.split(",")
    specs = {"A0": BASE}
    for row in rows:
        if row == "A0":
            continue
        if row == "A4" and args.packaged_a4:
            specs[row] = "mlcodec-unified@1"
            continue
        mtce, bank, diffusion, seen = ROWS[row]
        out = work / "codecs" / (row + args.tag)
        weights = out / "weights.safetensors"
        task_weight = 0.0 if row == "F" else args.task_weight
        recipe = {"steps": args.steps, "minutes": args.minutes, "lr": args.lr,
                  "task_weight": task_weight, "scenes": args.scenes, "size": args.size,
                  "batches": [args.scene_batch, args.photo_batch]}
        if args.dikl_weight != UnifiedConfig.dikl_weight:  # recipes written before the option stay valid
            recipe["dikl_weight"] = args.dikl_weight
        check_recipe(out, recipe)
        if not weights.exists():
            cfg = UnifiedConfig(experts=tuple((t, expert(t)) for t in seen), mtce=mtce, bank=bank,
                                diffusion=diffusion, scenes=args.scenes, scene_size=args.size,
                                scene_batch=args.scene_batch, task_weight=task_weight,
                                dikl_weight=args.dikl_weight, codec_lr=args.lr)  # as recorded
            photo_dirs = (args.photos,) if Path(args.photos).is_dir() else ()  # held-out ones excluded
            tc = TrainConfig(out=str(out), data=photo_dirs, init=packaged, steps=args.steps,
                             minutes=args.minutes, batch_size=args.photo_batch, patch=args.size,
                             lr=args.lr, seed=0, save_every=50, device=args.device, progress=False,
                             lambdas=tuple(read_metadata(packaged)["config"]["lambdas"]))
            train(tc, UnifiedObjective(cfg))
            stamp(f"codec {row} trained")
        specs[row] = f"{BASE}:{weights.resolve()}"

    if args.until == "codecs":
        return
    train_src, val_src = data()
    refs: dict[str, str | None] = {"cls": None, "seg": None, "det": None, "colour": None}
    if args.references != "none":
        for name, (task, head, label) in wanted.items():
            if name not in eval_names:  # only the evaluated tasks' references
                continue
            if args.references == "train" or restored("references", task, head, 1, label):
                refs[name] = pixel_model("references", task, head, 1, label)
            else:
                stamp(f"reference for {name} not trained yet: latent rows only")
    if args.until == "references":
        return

    # 4. latent shards and heads per row
    two = set(args.two_seeds.split(","))
    heads: dict[tuple[str, int], dict[str, str]] = {}
    for row in rows:
        spec = specs[row]
        base = row_dir(row)
        train_dirs = []
        for k, q in enumerate(QUALITIES):
            d = base / f"shards/train-q{q}"
            write_shards(Subset(train_src, list(range(k, len(train_src), len(QUALITIES)))), d, codec=spec,
                         quality=q, progress=False)
            train_dirs.append(d)
        write_shards(val_src, base / "shards/val-q0.5", codec=spec, quality=0.5, progress=False)
        for seed in (range(args.head_seeds) if row in two else (0,)):
            got = {}
            for name, task, label in eval_tasks:
                out = base / f"heads-seed{seed}" / name
                path = out / f"latent-{task}.safetensors"
                if not (out / f"latent-{task}.history.json").exists():
                    r = train_head(task, train_dirs, [base / "shards/val-q0.5"], out,
                                   epochs=args.head_epochs or HEAD_EPOCHS[name],
                                   seed=seed, progress=False, label_key=label, device=args.device)
                    stamp(f"{row} latent {name} seed {seed}: best {r.best(task):.4f}")
                got[name] = str(path)
            heads[(row, seed)] = got
    if args.until == "heads":
        return

    # 5. evaluation, per row, task and head seed, each kept in WORK/rows/ROW/eval-seedS/TASK.json
    # with what it measured (codec, head and reference digests), so a killed run resumes and a
    # later run with more rows evaluates only the new ones; the photos likewise (speed is not kept:
    # times compare only within one run)
    def kept(path: Path, key: dict, compute, what: str):
        """``compute()``, or what ``path`` kept from an earlier run that measured the same ``key``."""
        old = json.loads(path.read_text()) if path.exists() else {}
        if old.get("key") == key:
            return old["value"]
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")  # written whole, then renamed: a killed run leaves no half file
        tmp.write_text(json.dumps({"key": key, "value": value}, indent=1))
        tmp.replace(path)
        stamp(what)
        return value

    codecs = {row: mlcodec.create_codec(specs[row]) for row in {"A0", *rows}}  # built once, used to the end
    fingerprints = {row: c.fingerprint(0.5).hex() for row, c in codecs.items()}  # type: ignore[attr-defined]
    results: dict = {"args": vars(args), "specs": specs, "tasks": {}, "a0_fingerprint": fingerprints["A0"]}
    for name, task, label in eval_tasks:
        spec_t = make_spec(val_src.class_names, val_src.label_names, task, label, val_src.category_ids)
        per_seed = {}
        for seed in range(max(args.head_seeds, 1)):
            got: list[dict] = []
            ref = refs[name] if seed == 0 else None
            ref_digest = ref and digest(ref)
            for row in rows:
                if (row, seed) not in heads:
                    continue
                key = {"codec": specs[row], "fingerprint": fingerprints[row],
                       "head": digest(heads[(row, seed)][name]), "reference": ref_digest,
                       "qualities": list(QUALITIES), "val": args.val}
                measured = kept(row_dir(row) / f"eval-seed{seed}" / f"{name}.json", key,
                                lambda: evaluate_codecs(task, val_src, spec_t, [specs[row]], QUALITIES,
                                                        latent_head=[(specs[row], heads[(row, seed)][name])],
                                                        pixel_reference=ref, progress=False)["rows"],
                                f"evaluated {row} {name} seed {seed}")
                # the uncompressed reference row is the same in every row's run: keep it once
                got += [r for r in measured if r["codec"] != "uncompressed" or
                        not any(g["codec"] == "uncompressed" for g in got)]
            if got:
                per_seed[seed] = got
        results["tasks"][name] = per_seed

    # 6. photos and speed
    photos = held_out_photos(args.photos)
    scenes = [val_src[i].image for i in range(min(len(val_src), 64))]
    results["photos"], results["speed"] = {}, {}
    for row in rows:
        codec = codecs[row]
        key = {"fingerprint": fingerprints[row], "qualities": list(QUALITIES),
               "photos": [[p.name, p.image.width, p.image.height] for p in photos]}
        results["photos"][row] = kept(row_dir(row) / "photos.json", key,
                                      lambda: [measure(codec, photos, q) for q in QUALITIES],
                                      f"{row} measured on the photos")
        t = time.perf_counter()
        datas = codec.compress_batch(scenes, quality=0.5)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        codec.decompress_batch(datas)
        dec = time.perf_counter() - t
        results["speed"][row] = {"encode_ms": 1000 * enc / len(scenes), "decode_ms": 1000 * dec / len(scenes)}
    stamp("photos and speed measured")
    report(results, rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


def mean_curve(runs: list[list[dict]], metric: str) -> list[dict]:
    """The point-wise mean of one codec's curves from several head seeds (the same bitstreams, so
    the same rates)."""
    assert all([p["bpp"] for p in r] == [p["bpp"] for p in runs[0]] for r in runs), \
        "the head seeds of one codec share their rates"
    return [{"bpp": pts[0]["bpp"], metric: float(np.mean([p[metric] for p in pts]))} for pts in zip(*runs)]


def spread(values: list[float | None]) -> str:
    """``mean ± sd (n)`` of the BD-rates that exist; the missing ones counted apart."""
    have = [v for v in values if v is not None]
    text = "n/a" if not have else (f"{np.mean(have):+.1f}%" if len(have) == 1 else
                                   f"{np.mean(have):+.1f}% ± {np.std(have, ddof=1):.1f} (n={len(have)})")
    return text + (f", {len(values) - len(have)} n/a" if len(have) < len(values) else "")


def seed_report(results: dict, rows: list[str]) -> None:
    """For the rows whose latent heads have several seeds: how far the same codec's heads are
    apart (each seed against seed 0: the heads' noise floor for every latent figure); each row
    against A0 seed by seed (seed s against A0's seed s: mean ± sd over seeds); and each row's
    mean curve over its seeds against A0's."""
    specs = results["specs"]
    lines = []
    for name, per_seed in results["tasks"].items():
        metric = PRIMARY["cls" if name == "colour" else name]
        seeds = sorted(per_seed, key=int)
        if len(seeds) < 2:
            continue
        # each row's latent curve for every seed that has it
        by_seed = [curves(per_seed[k]) for k in seeds]
        runs = {r: [c[k] for c in by_seed if k in c] for r in rows if (k := f"{specs[r]}/latent") in by_seed[0]}
        runs = {r: rs for r, rs in runs.items() if len(rs) >= 2}
        if not runs:
            continue
        lines.append(f"{name:<6} each seed against seed 0 of the same codec: " + " | ".join(
            f"{r} " + " ".join(fmt(compare(rs[0], b, metric)) for b in rs[1:]) for r, rs in runs.items()))
        if "A0" not in runs:
            continue
        a0 = runs["A0"]
        for r, rs in runs.items():
            if r == "A0":
                continue
            paired = [compare(a, b, metric)["bd_rate"] for a, b in zip(a0, rs)]
            mean = compare(mean_curve(a0, metric), mean_curve(rs, metric), metric)
            lines.append(f"{name:<6} {r} against A0, seed by seed: {spread(paired)} | "
                         f"mean of {len(rs)} seeds against A0's {len(a0)}: {fmt(mean)}")
    if lines:
        print("\nlatent heads of several seeds: BD-rate of each seed's heads against seed 0's (the same "
              "codec: the heads' noise); each row against A0 seed by seed; and the rows' mean curves")
        print("\n".join(lines))


def report(results: dict, rows: list[str]) -> None:
    specs = results["specs"]
    print("\nBD-rate against A0 (negative: fewer bits for the same metric); [min/mean points gained at "
          "common rates, 0.01 of the metric]")
    for name, per_seed in results["tasks"].items():
        metric = PRIMARY["cls" if name == "colour" else name]
        for seed, rws in sorted(per_seed.items(), key=lambda kv: int(kv[0])):
            cs = curves(rws)
            for domain in ("latent", "pixel"):
                ref = cs.get(f"{specs['A0']}/{domain}")
                if ref is None:
                    continue
                line = f"{name:<6} {domain:<6} seed {seed}: A0 {metric} " + \
                    "/".join(f"{p[metric]:.3f}" for p in ref)
                for row in rows[1:] if rows[0] == "A0" else rows:
                    test = cs.get(f"{specs[row]}/{domain}")
                    if test is not None and row != "A0":
                        line += f" | {row} {fmt(compare(ref, test, metric))}"
                print(line)
    seed_report(results, rows)
    print("\nper row, val scenes at the qualities " + ", ".join(map(str, QUALITIES)) + " (bpp):")
    for name, per_seed in results["tasks"].items():
        metric = PRIMARY["cls" if name == "colour" else name]
        cs = curves(per_seed[min(per_seed, key=int)])
        for row in rows:
            for domain in ("latent", "pixel"):
                pts = cs.get(f"{specs[row]}/{domain}")
                if pts:
                    print(f"  {name:<6} {row:<4} {domain:<6} " + " ".join(
                        f"{p['bpp']:.3f}:{p[metric]:.3f}" for p in pts))
    print("\nheld-out photos against A0 (BD-rate) and speed (64 val scenes, batch, this machine):")
    a0 = results["photos"]["A0"] if "A0" in results["photos"] else None
    for row in rows:
        line = photo_line(f"{row:<4}", results["photos"][row], a0 if row != "A0" else None)
        s = results["speed"][row]
        print(line + f" | encode {s['encode_ms']:.1f} ms, decode {s['decode_ms']:.1f} ms per image")


if __name__ == "__main__":
    main()
