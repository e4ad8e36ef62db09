"""Files a killed job must never leave half-written: training checkpoints and weights.

Every such file is written beside its final path, flushed to disk (``fsync``) and renamed over
it (``os.replace``, atomic on POSIX and Windows), so a reader sees the old file or the new one,
never a mix. A checkpoint that is damaged all the same (a disk that lied, a copy cut short) is
reported by name with what to do, instead of an unpickling traceback.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names it and says what to do."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to; on a clean exit it is fsynced and
    renamed over ``path``, on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # the file keeps its permissions, a new one is readable by all (safetensors writes 0600)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # the rename itself reaches the disk with the folder's entry
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` of tensors and plain values, written atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint of tensors and plain values (``weights_only=True``: nothing is unpickled as
    an object); :class:`CheckpointError` naming the file if it is damaged."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CheckpointError(
            f"the checkpoint {path} is damaged (or holds more than tensors and plain values) and "
            f"cannot be resumed from ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}); delete it to start that run "
            "afresh, or restore it from a copy") from e


def resume_run(path: str | Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` to resume ``run`` from (None: there is none). Raises ValueError
    naming the differing settings when the checkpoint was written by another run (its ``run``
    entry), and :class:`CheckpointError` when it is damaged."""
    if not Path(path).exists():
        return None
    state = load_checkpoint(path)
    if state["run"] != run:
        diff = sorted(k for k in run if state["run"].get(k) != run[k])
        raise ValueError(f"{path} is the checkpoint of another run (it differs in {', '.join(diff)}); "
                         "delete it to start afresh, or train into another folder")
    return state

