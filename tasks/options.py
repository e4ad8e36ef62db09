"""The task heads' training options that the command line lists: importable without timm, so that
``mlcodec --help`` and every command that is not a task command start without loading it."""

from __future__ import annotations

STEMS = ("synthesis", "learned")  # latent heads' stems: the codec's frozen g_s[:2], or learned

# Peak learning rates of the one-cycle schedule, by task (both input domains): the best of the
# probes on the synthetic benchmark for both sides alike (docs/experiments/task-heads.md).
DEFAULT_LR = {"cls": 2e-3, "det": 2e-3, "seg": 4e-3}
# AdamW weight decay (on every parameter), by task, for both input domains (pixel-det is YOLO with
# ultralytics' own). Strong decay, because on the synthetic benchmark the latent heads fitted the
# training set far better than they generalised; 1.0 was the best of the probes, 3.0 collapsed the
# segmenter (docs/experiments/task-heads.md).
DEFAULT_WEIGHT_DECAY = {"cls": 1.0, "det": 1.0, "seg": 1.0}
