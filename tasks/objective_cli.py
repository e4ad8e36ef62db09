"""``mlcodec train-codec --objective unified``: the options and factory the core CLI loads through
the ``mlcodec.objectives`` entry point (the core never imports :mod:`mlcodec.tasks`)."""

from __future__ import annotations

import argparse

from mlcodec.objective import CodecObjective


class UnifiedPlugin:
    help = ("MTCE + DIKL (mlcodec.tasks.unified): frozen pixel experts per seen task, latent "
            "alignment adapters, a memory bank and a latent denoiser, all in training only")

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--tasks", default="cls,seg,det",
                           help="seen tasks, each with an --expert (cls, seg, det)")
        group.add_argument("--expert", action="append", default=[], metavar="TASK=PATH",
                           help="a frozen pixel model per seen task (train-head on lossless PNG "
                                "shards: pixel-cls, pixel-seg, pixel-fcos)")
        group.add_argument("--no-mtce", action="store_true", help="ablation: no alignment or balancing")
        group.add_argument("--no-bank", action="store_true", help="ablation: no memory bank")
        group.add_argument("--no-diffusion", action="store_true", help="ablation: no denoiser")
        group.add_argument("--task-weight", type=float, default=None,
                           help="weight of the balanced task terms against rate-distortion "
                                "(default: UnifiedConfig's, chosen on the dev split)")
        group.add_argument("--scenes", type=int, default=4000,
                           help="procedural task scenes generated up front (seed --scene-seed)")
        group.add_argument("--scene-seed", type=int, default=1000,
                           help="the task benchmark uses seeds 0 and 1: keep it apart")
        group.add_argument("--scene-batch", type=int, default=8, help="task scenes per step")

    def from_args(self, args: argparse.Namespace) -> CodecObjective:
        from .unified import UnifiedConfig, UnifiedObjective

        tasks = [t for t in args.tasks.split(",") if t]
        given = dict(e.split("=", 1) for e in args.expert if "=" in e)
        bad = [e for e in args.expert if "=" not in e]
        if bad:
            raise ValueError(f"--expert takes TASK=PATH, not {bad[0]!r}")
        missing = [t for t in tasks if t not in given]
        if missing:
            raise ValueError(f"no --expert for {', '.join(missing)}: train one per seen task with "
                             "`mlcodec train-head --head pixel-... ` on lossless PNG image shards")
        weight = {} if args.task_weight is None else {"task_weight": args.task_weight}
        cfg = UnifiedConfig(experts=tuple((t, given[t]) for t in tasks), mtce=not args.no_mtce,
                            bank=not args.no_bank, diffusion=not args.no_diffusion, scenes=args.scenes,
                            scene_seed=args.scene_seed, scene_batch=args.scene_batch, **weight)
        return UnifiedObjective(cfg)


UNIFIED = UnifiedPlugin()
