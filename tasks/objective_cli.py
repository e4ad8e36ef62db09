"""``mlcodec train-codec --objective unified|tasks``: the options and factories the core CLI loads
through the ``mlcodec.objectives`` entry point (the core never imports :mod:`mlcodec.tasks`).

Both objectives train on task scenes; the options they share (``--tasks``, ``--task-weight``,
``--scenes``, ``--scene-seed``, ``--scene-batch``) are declared once, whichever plugin comes first,
with no default of their own: each objective fills in its configuration's default.
"""

from __future__ import annotations

import argparse
from typing import Any

from mlcodec.objective import CodecObjective


def _add_shared_options(group: argparse._ArgumentGroup) -> None:
    """The task-scene options both objectives take, added once to ``train-codec``'s parser."""
    if "--scenes" in group._option_string_actions:  # the other objective declared them
        return
    group.add_argument("--tasks", help="seen tasks (unified: cls,seg,det, each with an --expert; "
                       "tasks: cls,seg)")
    group.add_argument("--task-weight", type=float, help="weight of the task terms against "
                       "rate-distortion (default: the objective's configuration)")
    group.add_argument("--scenes", type=int, help="procedural task scenes generated up front, or at most "
                       "this many samples of --task-data (default: unified 4000, tasks 12000)")
    group.add_argument("--scene-seed", type=int, help="seed of the scenes (default 1000; the task "
                       "benchmark uses seeds 0 and 1: keep it apart)")
    group.add_argument("--scene-batch", type=int, help="task images per step (default: unified 8, tasks 32)")


def _given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """The options the user gave, as configuration fields (``field="option_dest"``)."""
    return {field: getattr(args, dest) for field, dest in names.items() if getattr(args, dest, None) is not None}


class UnifiedPlugin:
    help = ("MTCE + DIKL (mlcodec.tasks.unified): frozen pixel experts per seen task, latent "
            "alignment adapters, a memory bank and a latent denoiser, all in training only")

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        _add_shared_options(group)
        group.add_argument("--expert", action="append", default=[], metavar="TASK=PATH",
                           help="a frozen pixel model per seen task (train-head on lossless PNG "
                                "shards: pixel-cls, pixel-seg, pixel-fcos)")
        group.add_argument("--judge", metavar="NAME", help="a pretrained judge (mlcodec.tasks.judges, e.g. "
                           "efficientnet-lite0) as an expert on dataset-like crops of the --data photos; "
                           "with no --tasks, the procedural experts are left out")
        group.add_argument("--judge-weights", metavar="FILE", help="the judge's weights file, where it needs one")
        group.add_argument("--judge-batch", type=int, help="photo crops through the judge per step (default 4)")
        group.add_argument("--no-mtce", action="store_true", help="ablation: no alignment or balancing")
        group.add_argument("--no-bank", action="store_true", help="ablation: no memory bank")
        group.add_argument("--no-diffusion", action="store_true", help="ablation: no denoiser")

    def from_args(self, args: argparse.Namespace) -> CodecObjective:
        from .unified import UnifiedConfig, UnifiedObjective

        if args.judge_weights and not args.judge:
            raise ValueError("--judge-weights is the weights file of a --judge NAME; give the judge too")
        tasks = [t for t in (args.tasks or ("" if args.judge else "cls,seg,det")).split(",") if t]
        given = dict(e.split("=", 1) for e in args.expert if "=" in e)
        bad = [e for e in args.expert if "=" not in e]
        if bad:
            raise ValueError(f"--expert takes TASK=PATH, not {bad[0]!r}")
        missing = [t for t in tasks if t not in given]
        if missing:
            raise ValueError(f"no --expert for {', '.join(missing)}: train one per seen task with "
                             "`mlcodec train-head --head pixel-... ` on lossless PNG image shards")
        judge = {"judge": args.judge, "judge_weights": args.judge_weights or "", "judge_photos": tuple(args.data),
                 "judge_skimage": not args.no_skimage} if args.judge else {}
        cfg = UnifiedConfig(experts=tuple((t, given[t]) for t in tasks), mtce=not args.no_mtce,
                            bank=not args.no_bank, diffusion=not args.no_diffusion, **judge,
                            **_given(args, task_weight="task_weight", scenes="scenes", scene_seed="scene_seed",
                                     scene_batch="scene_batch", judge_batch="judge_batch"))
        return UnifiedObjective(cfg)


class TasksPlugin:
    help = ("task losses of latent heads trained alongside the codec (mlcodec.tasks.codec_tuning: "
            "the multi-task half of MTCE, without experts or DIKL)")

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        _add_shared_options(group)
        group.add_argument("--task-data", metavar="DIR", help="tasks: an ImageFolder dataset (labels for "
                           "cls) instead of procedural scenes")
        group.add_argument("--task-coco", metavar="JSON", help="tasks: a COCO instances file (masks for "
                           "seg, image labels for cls), with --task-images")
        group.add_argument("--task-images", metavar="DIR", help="tasks: the images of --task-coco")
        group.add_argument("--scene-size", type=int, help="tasks: task images resized to this square "
                           "(default 128)")
        group.add_argument("--head-lr", type=float, help="tasks: the heads' learning rate (default 2e-3)")
        group.add_argument("--task-workers", type=int, help="tasks: processes preparing the task data "
                           "(default 0: all cores)")

    def from_args(self, args: argparse.Namespace) -> CodecObjective:
        from mlcodec.data.sources import CocoSource, ImageFolderSource

        from .codec_tuning import TaskObjective, TaskTuning

        if args.task_coco and not args.task_images:
            raise ValueError("--task-coco needs --task-images DIR")
        source = (CocoSource(args.task_coco, args.task_images) if args.task_coco
                  else ImageFolderSource(args.task_data) if args.task_data else None)
        tasks = {"tasks": tuple(t for t in args.tasks.split(",") if t)} if args.tasks else {}
        cfg = TaskTuning(**tasks, **_given(args, task_weight="task_weight", scenes="scenes",
                                           scene_seed="scene_seed", scene_batch="scene_batch",
                                           scene_size="scene_size", head_lr="head_lr",
                                           workers="task_workers"))
        return TaskObjective(cfg, source)


UNIFIED = UnifiedPlugin()
TASKS = TasksPlugin()
