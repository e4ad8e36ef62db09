import numpy as np
import pytest
import torch
from PIL import Image

import mlcodec
from mlcodec.checkpoint import CheckpointError
from mlcodec.codecs.hyperprior import GainedHyperpriorCodec
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.registry import codec_config
from mlcodec.train import TrainConfig, lambda_for, train
from mlcodec.weights import load_weights, read_metadata


def test_lambda_interpolation_hits_levels():
    lambdas = (0.001, 0.01, 0.1)
    got = lambda_for(torch.tensor([0.0, 0.5, 1.0, 0.25]), lambdas)
    torch.testing.assert_close(got, torch.tensor([0.001, 0.01, 0.1, 0.001**0.5 * 0.01**0.5]))


def test_train_resume_export_and_load(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cfg = dict(out=str(tmp_path / "run"), data=(str(data),), use_skimage=False, N=16, M=16,
               steps=4, batch_size=2, patch=64, save_every=2)
    train(TrainConfig(**cfg))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert int(ckpt["step"]) == 4
    path = train(TrainConfig(**{**cfg, "steps": 6}))  # resumes at step 4
    assert int(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]) == 6
    meta = read_metadata(path)
    assert meta["architecture"] == {"N": 16, "M": 16, "num_levels": 7, "hyper_kernel": 3}
    model = GainedMeanScaleHyperprior(**meta["architecture"])
    load_weights(model, path)
    codec = GainedHyperpriorCodec(codec_config("mlcodec-hyperprior"), model)
    img = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    assert codec.decompress(codec.compress(img, 0.5)).size == (70, 50)
    # a checkpoint cut short (a copy interrupted, a disk full) is refused by name, not unpickled
    ckpt_path = tmp_path / "run" / "checkpoint.pt"
    ckpt_path.write_bytes(ckpt_path.read_bytes()[: ckpt_path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(ckpt_path)):
        train(TrainConfig(**{**cfg, "steps": 8}))


def test_the_schedule_warms_up_then_drops_for_the_last_fifth():
    from mlcodec.train import Budget

    b = Budget(steps=1000, minutes=0, start_step=0, warmup=100)
    assert [b.lr_scale(s) for s in (0, 49, 99, 500, 799)] == [0.01, 0.5, 1.0, 1.0, 1.0]
    assert b.lr_scale(800) == 0.1 and Budget(1000, 0, 0).lr_scale(0) == 1.0
    assert Budget(0, 0, 0).progress(0) == 1.0  # --steps 0 exports the initial weights


def test_a_fine_tune_keeps_the_packaged_codec_intact_at_its_first_step(tmp_path, photo):
    """Adam's first step moves every parameter by about lr whatever its gradient: from the
    packaged weights that alone cost 1.2-1.9 dB on held-out photos. The warm-up starts gently."""
    from mlcodec.metrics import psnr
    from mlcodec.registry import pretrained_path

    packaged = str(pretrained_path(codec_config("mlcodec-hyperprior")))
    lambdas = tuple(read_metadata(packaged)["config"]["lambdas"])  # the packaged levels, not remapped

    def psnr_at_q09(spec: str) -> float:
        codec = mlcodec.create_codec(spec)
        return psnr(photo, codec.decompress(codec.compress(photo, 0.9)))

    def after_one_step(warmup: int) -> float:
        w = train(TrainConfig(out=str(tmp_path / f"warmup{warmup}"), init=packaged, steps=1, batch_size=2,
                              patch=64, lr=1e-4, warmup=warmup, progress=False, lambdas=lambdas))
        return psnr_at_q09(f"mlcodec-hyperprior:{w}")

    before = psnr_at_q09("mlcodec-hyperprior")
    assert abs(after_one_step(TrainConfig.warmup) - before) < 0.1
    assert before - after_one_step(0) > 0.5


def test_training_reduces_loss():
    torch.manual_seed(0)
    from mlcodec.train import rd_loss

    model = GainedMeanScaleHyperprior(N=16, M=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 64, 64).cumsum(-1).div(64)  # smooth ramps: learnable
    q = torch.tensor([0.5, 0.5])
    losses = []
    for _ in range(30):
        loss, _, _ = rd_loss(model, x, q, (0.01, 0.02), bf16=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_remap_gains_interpolates_and_extrapolates_in_log_lambda():
    from mlcodec.train import remap_gains

    old = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    model = GainedMeanScaleHyperprior(16, 16, num_levels=7)
    model.init_gains(list(old))  # log-gain = 0.5 * log(lambda / 8): linear in log-lambda
    new = (0.5, 1.0, 3.0, 8.0, 20.0, 64.0, 128.0)
    remap_gains(model, old, new)
    expect = torch.tensor([0.5 * np.log(v / 8.0) for v in new], dtype=torch.float32)
    assert torch.allclose(model.log_gain[:, 0], expect, atol=1e-6)
    assert torch.allclose(model.log_inv_gain[:, 0], -expect, atol=1e-6)


def test_fine_tune_from_weights_with_new_lambdas(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(data / "0.png")
    base = dict(data=(str(data),), use_skimage=False, N=16, M=16, steps=2, batch_size=2, patch=64)
    first = train(TrainConfig(out=str(tmp_path / "a"), **base))
    lambdas = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064)
    second = train(TrainConfig(out=str(tmp_path / "b"), init=str(first), lambdas=lambdas, **base))
    meta = read_metadata(second)
    assert tuple(meta["config"]["lambdas"]) == lambdas and meta["config"]["init"] == str(first)


def test_distill_hyper_synthesis_into_1x1(tmp_path):
    """--distill-hyper: same transforms and gains, a 1x1 last h_s layer closer to the teacher."""
    from mlcodec.train import _teacher_hyper_input

    rng = np.random.default_rng(1)
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)).save(data / "a.png")
    base = dict(data=(str(data),), use_skimage=False, N=16, M=16, batch_size=2, patch=64)
    teacher_path = train(TrainConfig(out=str(tmp_path / "t"), steps=3, **base))
    student_path = train(TrainConfig(out=str(tmp_path / "s"), steps=60, lr=1e-3, init=str(teacher_path),
                                     distill_hyper=True, **{**base, "batch_size": 4}))
    assert read_metadata(student_path)["architecture"]["hyper_kernel"] == 1
    teacher, student = (GainedMeanScaleHyperprior(**read_metadata(p)["architecture"])
                        for p in (teacher_path, student_path))
    load_weights(teacher, teacher_path)
    load_weights(student, student_path)
    assert student.h_s[4].weight.shape == (32, 24, 1, 1)
    for name in ("g_a.0.weight", "g_s.6.weight", "h_a.0.weight", "log_gain", "log_inv_hyper_gain"):
        assert torch.equal(student.state_dict()[name], teacher.state_dict()[name])
    assert not torch.equal(student.h_s[2].weight, teacher.h_s[2].weight)  # h_s is retrained

    # The distilled h_s is closer to the teacher than where it started (the summed 3x3 kernel).
    start = torch.nn.Conv2d(24, 32, 1)
    with torch.no_grad():
        start.weight.copy_(teacher.h_s[4].weight.sum((2, 3), keepdim=True))
        start.bias.copy_(teacher.h_s[4].bias)
    torch.manual_seed(0)
    y = teacher.g_a(torch.rand(4, 3, 256, 256))
    with torch.no_grad():
        zin = _teacher_hyper_input(teacher, y, torch.rand(4))
        target = teacher.h_s(zin)
        err_start = (start(teacher.h_s[:4](zin)) - target).pow(2).mean()
        err_end = (student.h_s(zin) - target).pow(2).mean()
    assert err_end < 0.8 * err_start
    codec = GainedHyperpriorCodec(codec_config("mlcodec-hyperprior"), student)
    img = Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8))
    assert codec.decompress(codec.compress(img, 0.5)).size == (70, 40)


@pytest.mark.parametrize("loss", ["rate", "rate-ste"])
def test_a_narrow_student_trained_for_rate_codes_exactly(tmp_path, loss):
    """distill_hidden + distill_loss="rate" (or "rate-ste", the rounded symbols' bits): a narrower
    h_s, trained on the bits of y, exported with its own integer tables; it codes fewer bits than
    an untrained h_s of its shape, and its streams decode to the numpy int64 reference's latent
    bit for bit."""
    from mlcodec.models.gained_hyperprior import hyper_synthesis_layers
    from mlcodec.train import _teacher_hyper_input

    rng = np.random.default_rng(2)
    data = tmp_path / "photos"
    data.mkdir()
    yy, xx = np.mgrid[:320, :320]
    smooth = np.stack([xx % 97 * 2, yy % 61 * 4, (xx + yy) % 128 * 2], -1)
    Image.fromarray((smooth + rng.integers(0, 24, (320, 320, 3))).clip(0, 255).astype(np.uint8)).save(data / "a.png")
    base = dict(data=(str(data),), use_skimage=False, N=16, M=16, batch_size=4, patch=64)
    teacher_path = train(TrainConfig(out=str(tmp_path / "t"), steps=3, **base))
    student_path = train(TrainConfig(out=str(tmp_path / "s"), steps=80, lr=3e-3, init=str(teacher_path),
                                     distill_hyper=True, distill_hidden=8, distill_loss=loss, **base))
    arch = read_metadata(student_path)["architecture"]
    assert arch["hyper_hidden"] == 8 and arch["hyper_kernel"] == 1
    student = GainedMeanScaleHyperprior(**arch)
    load_weights(student, student_path)
    assert student.h_s[0].weight.shape == (16, 8, 5, 5) and student.h_s[4].weight.shape == (32, 8, 1, 1)

    torch.manual_seed(0)
    untrained = hyper_synthesis_layers(16, 16, 1, 8)
    x = torch.from_numpy(np.array(Image.open(data / "a.png"))[:256, :256]).permute(2, 0, 1)[None] / 255.0
    q = torch.full((1,), 0.5)

    def bits(h_s):
        with torch.no_grad():
            y_g = student.g_a(x) * student.gains(q)[0]
            s, m = h_s(_teacher_hyper_input(student, student.g_a(x), q)).chunk(2, 1)
            _, lik = student.gaussian_conditional(y_g, s, means=m, training=False)
        return float(-lik.log2().sum())

    assert bits(student.h_s) < 0.8 * bits(untrained)
    codec = mlcodec.create_codec(f"mlcodec-hyperprior:{student_path}")
    img = Image.open(data / "a.png").crop((0, 0, 200, 136))
    stream = codec.compress(img, 0.5)
    assert codec.decompress(stream).size == (200, 136)
    assert np.array_equal(codec.decode_latent(stream).numpy(), codec.reference_latent(stream))


def test_dataset_like_crops_train_and_are_recorded(tmp_path):
    """``crops="dataset"``: crops of photos downscaled 1-4x (some JPEG-compressed first) feed the
    same loop, and the weights' recipe says so; an unknown kind is refused."""
    from mlcodec.data.crops import DatasetCrops

    rng = np.random.default_rng(1)
    photos = [Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)) for _ in range(2)]
    a = next(DatasetCrops(photos, patch=64).batches(6, seed=3))
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a, next(DatasetCrops(photos, patch=64).batches(6, seed=3)))  # seeded
    data = tmp_path / "photos"
    data.mkdir()
    for i, im in enumerate(photos):
        im.save(data / f"{i}.png")
    cfg = dict(out=str(tmp_path / "run"), data=(str(data),), use_skimage=False, N=16, M=16, steps=2,
               batch_size=2, patch=64, crops="dataset", progress=False)
    path = train(TrainConfig(**cfg))
    assert read_metadata(path)["config"]["crops"] == "dataset"
    with pytest.raises(ValueError, match="crops must be"):
        train(TrainConfig(**{**cfg, "out": str(tmp_path / "bad"), "crops": "tiles"}))
    with pytest.raises(ValueError, match="multiple of 64"):  # 224 px crops cannot train the transforms
        train(TrainConfig(**{**cfg, "out": str(tmp_path / "bad"), "patch": 224}))
