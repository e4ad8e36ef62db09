"""The task heads' training options that the command line lists: importable without timm, so that
``mlcodec --help`` and every command that is not a task command start without loading it."""

from __future__ import annotations

STEMS = ("synthesis", "learned")  # latent heads' stems: the codec's frozen g_s[:2], or learned

# Peak learning rates of the one-cycle schedule, by task (both input domains). On the synthetic
# benchmark (16-epoch runs, full-resolution loss): 2e-3 beat 1e-3 for both segmenters (val mIoU
# latent 0.46 vs 0.39, pixel 0.76 vs 0.56), and 4e-3 beat 2e-3 for both again (latent 0.606 vs
# 0.574, pixel 0.799 vs 0.750).
DEFAULT_LR = {"cls": 2e-3, "det": 2e-3, "seg": 4e-3}
# AdamW weight decay (on every parameter), by task, for both input domains (pixel-det is YOLO with
# ultralytics' own). On the synthetic benchmark the latent heads fitted the training set far better
# than they generalised (segmenter: train mIoU 0.82, val 0.615; classifier: training loss 0.006,
# val top-1 0.82). In probes (latent heads, the benchmark's epochs) raising it from 0.05 lifted the
# best val mIoU 0.622 -> 0.639 (0.3) -> 0.699 (1.0), top-1 0.823 -> 0.885 and mAP 0.436 -> 0.452
# (1.0); at 3.0 the segmenter collapsed (0.12); 1.0 with norms and biases left undecayed (timm's
# parameter groups) gave 0.66.
DEFAULT_WEIGHT_DECAY = {"cls": 1.0, "det": 1.0, "seg": 1.0}
