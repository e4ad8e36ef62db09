"""Mask decay (mlcodec.mask_decay): the schedule, exact pruning, checkpoints, and both loops."""

import numpy as np
import pytest
import torch
from PIL import Image

import mlcodec
from mlcodec.mask_decay import HyperMaskDecay, MaskDecaySchedule
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior, hyper_synthesis_layers
from mlcodec.train import TrainConfig, train
from mlcodec.weights import load_weights, read_metadata


def _h_s(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return hyper_synthesis_layers(8, 12, kernel=1)  # hidden 12 and 18


def test_schedule_masks_then_prunes_to_the_same_function():
    h_s = _h_s()
    decay = HyperMaskDecay(h_s, MaskDecaySchedule((5, 7), select=0.2, end=0.6))
    z = torch.randn(3, 8, 4, 4)
    h_s.train()
    for _ in range(3):  # the running activity the choice reads
        h_s(z)
    decay.update(0.1)
    assert decay.removed is None and all(bool((m == 1).all()) for m in decay.masks)
    assert float(decay.penalty().detach()) > 0  # before the choice: the sparsity term
    decay.update(0.4)  # halfway through the decay
    assert [len(r) for r in decay.removed] == [12 - 5, 18 - 7]
    assert all(torch.allclose(m[r], torch.tensor(0.5)) for m, r in zip(decay.masks, decay.removed))
    assert float(decay.penalty()) == 0
    with pytest.raises(RuntimeError, match="has not finished"):
        decay.prune()
    decay.update(0.6)
    h_s.eval()
    with torch.no_grad():
        masked = h_s(z)
        assert decay.prune() == (5, 7)
        assert h_s[0].weight.shape == (8, 5, 5, 5) and h_s[2].weight.shape == (5, 7, 5, 5)
        assert h_s[4].weight.shape == (24, 7, 1, 1)
        torch.testing.assert_close(h_s(z), masked)  # the removed channels were zero


def test_the_least_active_channels_are_removed():
    """A channel that never varies (bias far below zero: a LeakyReLU constant) goes first."""
    h_s = _h_s()
    with torch.no_grad():
        h_s[0].bias[3] = -1e4
    decay = HyperMaskDecay(h_s, MaskDecaySchedule((11, 18)))
    h_s.train()
    h_s(torch.randn(2, 8, 4, 4))
    decay.update(0.5)
    assert decay.removed[0].tolist() == [3] and decay.removed[1].numel() == 0


def test_state_round_trip_and_bad_schedules():
    h_s = _h_s()
    decay = HyperMaskDecay(h_s, MaskDecaySchedule((6, 9)))
    h_s.train()
    h_s(torch.randn(2, 8, 4, 4))
    decay.update(0.3)
    other = HyperMaskDecay(_h_s(1), MaskDecaySchedule((6, 9)))
    other.load_state_dict(decay.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.removed, decay.removed))
    assert all(torch.equal(a, b) for a, b in zip(other.masks, decay.masks))
    with pytest.raises(ValueError, match="has only"):
        HyperMaskDecay(_h_s(), MaskDecaySchedule((13, 9)))
    with pytest.raises(ValueError, match="select < end"):
        MaskDecaySchedule((4, 4), select=0.7, end=0.5)


def _photos(tmp_path):
    rng = np.random.default_rng(3)
    data = tmp_path / "photos"
    data.mkdir()
    yy, xx = np.mgrid[:320, :320]
    smooth = np.stack([xx % 97 * 2, yy % 61 * 4, (xx + yy) % 128 * 2], -1)
    im = (smooth + rng.integers(0, 24, (320, 320, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(im).save(data / "a.png")
    return data


def test_mask_decay_in_the_hyper_synthesis_loop_codes_exactly(tmp_path):
    """--distill-hyper --mask-decay: the teacher's own h_s narrowed, the rest kept, exported with
    integer tables whose streams decode to the numpy reference's latent bit for bit."""
    data = _photos(tmp_path)
    base = dict(data=(str(data),), use_skimage=False, N=16, M=16, batch_size=4, patch=64, progress=False)
    teacher_path = train(TrainConfig(out=str(tmp_path / "t"), steps=3, **base))
    path = train(TrainConfig(out=str(tmp_path / "s"), steps=40, lr=1e-3, init=str(teacher_path),
                             distill_hyper=True, distill_loss="rate", mask_decay=(10, 15), **base))
    arch = read_metadata(path)["architecture"]
    assert arch["hyper_hidden"] == [10, 15]
    assert read_metadata(path)["config"]["mask_decay"] == [10, 15]
    student, teacher = GainedMeanScaleHyperprior(**arch), GainedMeanScaleHyperprior(
        **read_metadata(teacher_path)["architecture"])
    load_weights(student, path)
    load_weights(teacher, teacher_path)
    assert student.h_s[2].weight.shape == (10, 15, 5, 5)
    assert torch.equal(student.g_a[0].weight, teacher.g_a[0].weight)
    codec = mlcodec.create_codec(f"mlcodec-hyperprior:{path}")
    img = Image.open(data / "a.png").crop((0, 0, 200, 136))
    stream = codec.compress(img, 0.5)
    assert codec.decompress(stream).size == (200, 136)
    assert np.array_equal(codec.decode_latent(stream).numpy(), codec.reference_latent(stream))
    with pytest.raises(ValueError, match="give one of them"):
        train(TrainConfig(out=str(tmp_path / "x"), steps=2, init=str(teacher_path), distill_hyper=True,
                          distill_hidden=8, mask_decay=(8, 8), **base))


def test_mask_decay_in_the_codec_loop_resumes(tmp_path):
    """train-codec --mask-decay: the masks' state rides in the checkpoint, a rerun resumes it, the
    export is pruned; a checkpoint written without masks is refused."""
    data = _photos(tmp_path)
    cfg = dict(out=str(tmp_path / "run"), data=(str(data),), use_skimage=False, N=16, M=16,
               batch_size=2, patch=64, save_every=2, progress=False, mask_decay=(9, 20))
    train(TrainConfig(**{**cfg, "steps": 2}))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["mask_decay"]["mask0"].shape == (16,)
    path = train(TrainConfig(**{**cfg, "steps": 6}))  # resumes at step 2
    assert read_metadata(path)["architecture"]["hyper_hidden"] == [9, 20]
    assert read_metadata(path)["training"]["steps_run"] == 6
    codec = mlcodec.create_codec(f"mlcodec-hyperprior:{path}")
    img = Image.open(data / "a.png").crop((0, 0, 90, 70))
    assert codec.decompress(codec.compress(img, 0.3)).size == (90, 70)
    plain = {**cfg, "out": str(tmp_path / "plain"), "mask_decay": (), "steps": 2}
    train(TrainConfig(**plain))
    with pytest.raises(ValueError, match="without --mask-decay"):
        train(TrainConfig(**{**plain, "mask_decay": (9, 20), "steps": 4}))


def test_fresh_hyper_synthesis_trains_in_the_codec_loop(tmp_path):
    """train-codec --init W --fresh-hyper H1 H2: the baseline mask decay is measured against, the
    loaded weights with a new h_s of those widths, trained with the rest and exported exactly."""
    data = _photos(tmp_path)
    base = dict(data=(str(data),), use_skimage=False, N=16, M=16, batch_size=2, patch=64, progress=False)
    teacher_path = train(TrainConfig(out=str(tmp_path / "t"), steps=2, **base))
    path = train(TrainConfig(out=str(tmp_path / "f"), steps=3, init=str(teacher_path), fresh_hyper=(6, 10),
                             **base))
    arch = read_metadata(path)["architecture"]
    assert arch["hyper_hidden"] == [6, 10] and read_metadata(path)["config"]["fresh_hyper"] == [6, 10]
    model = GainedMeanScaleHyperprior(**arch)
    load_weights(model, path)
    assert model.h_s[0].weight.shape[1] == 6 and model.h_s[2].weight.shape[:2] == (6, 10)
    codec = mlcodec.create_codec(f"mlcodec-hyperprior:{path}")
    stream = codec.compress(Image.open(data / "a.png").crop((0, 0, 100, 80)), 0.5)
    assert np.array_equal(codec.decode_latent(stream).numpy(), codec.reference_latent(stream))
    with pytest.raises(ValueError, match="give --init"):
        train(TrainConfig(out=str(tmp_path / "x"), steps=1, fresh_hyper=(6, 10), **base))
    with pytest.raises(ValueError, match="does not combine"):
        train(TrainConfig(out=str(tmp_path / "y"), steps=1, init=str(teacher_path), fresh_hyper=(6, 10),
                          mask_decay=(4, 4), **base))
