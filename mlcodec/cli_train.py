"""``mlcodec train-codec`` and ``mlcodec integerize``: the weights' commands, apart from the
commands that code images (:mod:`mlcodec.cli`), which registers them."""

from __future__ import annotations

import argparse
import dataclasses

from mlcodec.registry import DEFAULT_CODEC, codec_config


def cmd_train_codec(args: argparse.Namespace) -> int:
    from mlcodec.train import TrainConfig, train

    cfg = TrainConfig(out=args.output, data=tuple(args.data), use_skimage=not args.no_skimage,
                      steps=args.steps, batch_size=args.batch_size, patch=args.patch, crops=args.crops,
                      lr=args.lr or 2e-4,
                      bf16=args.bf16, seed=args.seed, threads=args.threads, device=args.device,
                      progress=not args.quiet,
                      init=args.init or "", minutes=args.minutes, distill_hyper=args.distill_hyper,
                      distill_hidden=args.distill_hidden, distill_loss=args.distill_loss,
                      mask_decay=tuple(args.mask_decay or ()), fresh_hyper=tuple(args.fresh_hyper or ()),
                      **({"lambdas": tuple(args.lambdas)} if args.lambdas else {}),
                      **({"warmup": args.warmup} if args.warmup is not None else {}))
    objective = None
    if args.objective != "rd":
        from mlcodec.objective import objective_plugins

        objective = objective_plugins()[args.objective].load().from_args(args)
        if args.lr:
            objective.codec_lr = args.lr  # what the weights' metadata records
        else:  # a fine-tune: the objective's own codec rate
            cfg = dataclasses.replace(cfg, lr=objective.codec_lr)
        if not args.init:  # an objective fine-tunes: start from the packaged weights
            from mlcodec.registry import pretrained_path

            cfg = dataclasses.replace(cfg, init=str(pretrained_path(codec_config(DEFAULT_CODEC))))
    if cfg.init and not args.lambdas:  # keep the levels the weights were trained with
        from mlcodec.weights import read_metadata

        lambdas = read_metadata(cfg.init).get("config", {}).get("lambdas")
        if lambdas:
            cfg = dataclasses.replace(cfg, lambdas=tuple(lambdas))
    path = train(cfg, objective)
    print(f"weights written to {path}\nuse them as --codec mlcodec-hyperprior:{path}")
    return 0


def cmd_integerize(args: argparse.Namespace) -> int:
    from mlcodec.train import add_exact_tables

    out = add_exact_tables(args.weights, tuple(args.data), not args.no_skimage, args.output)
    print(f"weights with the integer hyper-synthesis (format 3) written to {out}")
    return 0


def register_train_codec(sub: argparse._SubParsersAction) -> None:
    """The ``train-codec`` command, with every installed objective's options."""
    t = sub.add_parser("train-codec", help="train the default codec's weights (see README)")
    t.add_argument("--data", nargs="*", default=[], help="photo folders (scripts/fetch_photos.sh)")
    t.add_argument("--no-skimage", action="store_true", help="leave out scikit-image's photos")
    t.add_argument("-o", "--output", default="runs/mlcodec-hyperprior",
                   help="run folder (checkpoints, weights); rerun to resume")
    t.add_argument("--steps", type=int, default=34000, help="training steps")
    t.add_argument("--batch-size", type=int, default=8, help="crops per step")
    t.add_argument("--patch", type=int, default=128, help="crop side in pixels")
    t.add_argument("--crops", choices=("photo", "dataset"), default="photo",
                   help="photo: crops of each photo at three fixed scales; dataset: crops of photos "
                        "downscaled 1-4x, 30%% JPEG-compressed first, as datasets store images")
    t.add_argument("--lr", type=float, help="peak learning rate (Adam; default 2e-4; with an "
                   "--objective other than rd, which fine-tunes, the objective's codec_lr)")
    t.add_argument("--warmup", type=int, help="steps of linear learning-rate warm-up (default 100, "
                   "TrainConfig's; a fine-tune without one loses quality in its first Adam steps)")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the transforms")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    t.add_argument("--init", help="fine-tune from these safetensors weights")
    t.add_argument("--lambdas", type=float, nargs="+",
                   help="rate-distortion weights of the quality levels, low to high (default: "
                        "those of --init's weights, else the built-in ones)")
    t.add_argument("--minutes", type=float, default=0.0, help="stop after this much training time")
    t.add_argument("--distill-hyper", action="store_true",
                   help="with --init: distill the hyper-synthesis into a 1x1 last layer (faster "
                        "latent decoding); --steps/--lr/--batch-size then apply to the distillation")
    t.add_argument("--distill-hidden", type=int, default=0, metavar="C",
                   help="with --distill-hyper: a student hyper-synthesis C channels wide, trained "
                        "from scratch (0: the teacher's widths)")
    t.add_argument("--distill-loss", choices=("match", "rate", "rate-ste"), default="match",
                   help="with --distill-hyper: match the teacher's scales and means, or minimise "
                        "the latent's bits under additive noise (rate) or of its rounded symbols, "
                        "the rounding passed straight through (rate-ste)")
    t.add_argument("--mask-decay", type=int, nargs=2, metavar=("H1", "H2"),
                   help="derive a narrower hyper-synthesis (H1, H2 hidden channels) by EVC mask "
                        "decay while training (with --distill-hyper: while the hyper-synthesis "
                        "alone trains); see mlcodec.mask_decay")
    t.add_argument("--fresh-hyper", type=int, nargs=2, metavar=("H1", "H2"),
                   help="with --init: replace the hyper-synthesis by a freshly initialised one "
                        "(H1, H2 hidden channels) and train the whole codec: the same width "
                        "trained alone, the baseline of --mask-decay")
    from mlcodec.objective import objective_plugins

    plugins = objective_plugins()
    t.add_argument("--objective", choices=["rd", *plugins], default="rd",
                   help="rd: rate + lambda * MSE on photos; others add terms of their own and "
                        "fine-tune (from --init, default the packaged weights)")
    for name, ep in plugins.items():
        plugin = ep.load()
        plugin.add_arguments(t.add_argument_group(f"--objective {name}", plugin.help))
    t.set_defaults(func=cmd_train_codec)


def register_integerize(sub: argparse._SubParsersAction) -> None:
    """The ``integerize`` command."""
    n = sub.add_parser("integerize", help="add the integer hyper-synthesis (bitstream format 3) to "
                                          "weights from an older train-codec")
    n.add_argument("weights", help="safetensors weights of mlcodec-hyperprior's architecture")
    n.add_argument("--data", nargs="*", default=[], help="calibration photo folders")
    n.add_argument("--no-skimage", action="store_true", help="leave out scikit-image's photos")
    n.add_argument("-o", "--output", help="output file (default: replace WEIGHTS)")
    n.set_defaults(func=cmd_integerize)
