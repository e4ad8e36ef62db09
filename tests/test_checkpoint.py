"""Checkpoints and weights are written atomically; a damaged checkpoint is refused by name."""

import os

import pytest
import torch

from mlcodec.checkpoint import CheckpointError, atomic_path, load_checkpoint, save_checkpoint


def test_save_and_load_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": torch.tensor(7), "note": "x"}
    save_checkpoint(state, tmp_path / "sub" / "ckpt.pt")
    back = load_checkpoint(tmp_path / "sub" / "ckpt.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and int(back["step"]) == 7
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]  # no temporary file left behind
    assert (tmp_path / "sub" / "ckpt.pt").stat().st_mode & 0o777 == 0o644


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a checkpo")
            raise KeyboardInterrupt  # the kill arrives during the save
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert int(load_checkpoint(path)["step"]) == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a zip" * 50,
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"{path}.*delete it"):
        load_checkpoint(path)


def test_resume_run_returns_the_same_runs_checkpoint_and_refuses_another(tmp_path):
    from mlcodec.checkpoint import resume_run

    path = tmp_path / "run.resume.pt"
    run = {"lr": 0.001, "epochs": 4, "seed": 0}
    assert resume_run(path, run) is None
    save_checkpoint({"run": run, "epoch": 2, "w": torch.ones(3)}, path)
    state = resume_run(path, dict(run))
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.ones(3))
    with pytest.raises(ValueError, match=r"checkpoint of another run \(it differs in epochs, lr\)"):
        resume_run(path, {**run, "lr": 0.01, "epochs": 5})
