"""A pretrained judge as an expert of the unified objective: its terms, its rows, its options."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("efficientnet_lite_pytorch", reason="the judges extra is not installed: "
                    "pip install 'mlcodec[judges]'")

from mlcodec.models.gained_hyperprior import DEFAULT_LAMBDAS, GainedMeanScaleHyperprior  # noqa: E402
from mlcodec.tasks.judges import create_judge  # noqa: E402
from mlcodec.tasks.unified import UnifiedConfig, UnifiedObjective  # noqa: E402

JUDGE = "efficientnet-lite0"


class FixedCrops:
    """The same batch of uint8 crops every step (a fixed batch for a falling-loss test)."""

    def __init__(self, n: int, size: int = 224) -> None:
        import skimage.data

        photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)  # 512 px
        self.batch = torch.stack([photo[:, 40 * k : 40 * k + size, 100 : 100 + size] for k in range(n)])

    def batches(self, batch_size: int, seed: int):
        while True:
            yield self.batch[:batch_size]


def _model() -> GainedMeanScaleHyperprior:
    torch.manual_seed(0)
    model = GainedMeanScaleHyperprior(N=16, M=16, num_levels=len(DEFAULT_LAMBDAS))
    model.init_gains(list(DEFAULT_LAMBDAS))
    return model


def test_judge_stages_are_one_pass_of_the_judge():
    judge = create_judge(JUDGE)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    feats, logits = judge.stages(x)
    assert {s: tuple(f.shape[1:]) for s, f in feats.items()} == {4: (24, 56, 56), 8: (40, 28, 28),
                                                                 16: (112, 14, 14)}
    with torch.no_grad():
        assert torch.allclose(logits, judge.model(judge.normalise(x)), atol=1e-5)
        front, _, _ = judge.split(16)
        assert torch.allclose(feats[16], front(judge.normalise(x)), atol=1e-5)


def test_a_judge_expert_pulls_the_packaged_codec_towards_the_judge_on_a_fixed_batch():
    import mlcodec

    model = mlcodec.create_codec("mlcodec-hyperprior").model.train()
    obj = UnifiedObjective(UnifiedConfig(experts=(), judge=JUDGE, judge_batch=2, embed=16, prototypes=8),
                           photos=FixedCrops(2))
    obj.setup(model, "cpu")
    opt = torch.optim.Adam(list(model.parameters()) + list(obj.parameters()), lr=1e-4)
    seen = []
    for _ in range(8):
        loss, terms = obj.loss(model, torch.Generator().manual_seed(0), DEFAULT_LAMBDAS)
        # no procedural scene is coded when only a judge is given
        assert set(terms) == {"rd_judge", "kl_judge", "feat_judge", "align_judge", "bank", "diffusion"}
        assert all(math.isfinite(float(v)) for v in terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append({k: float(v) for k, v in terms.items()})
    # the judge's gradients reach the codec: its prediction and features on the decoded crops
    # move towards those on the originals
    assert seen[-1]["kl_judge"] < 0.5 * seen[0]["kl_judge"]
    assert seen[-1]["feat_judge"] < 0.75 * seen[0]["feat_judge"]
    assert not any(p.requires_grad for p in obj.judge.model.parameters())
    assert not [k for k in obj.state_dict() if k.startswith("judge")]  # frozen, never checkpointed
    assert obj.adapters["judge"].out_channels == 112  # the latent aligns to the stride-16 features


def test_the_judge_kl_is_zero_for_a_perfect_decode_and_positive_otherwise():
    obj = UnifiedObjective(UnifiedConfig(experts=(), judge=JUDGE, judge_batch=2, mtce=False, bank=False,
                                         diffusion=False), photos=FixedCrops(2))

    class Lossless(torch.nn.Module):  # decodes every image exactly, with a latent of the right grid
        M = 16

        def forward(self, x, q):
            from mlcodec.models.gained_hyperprior import ForwardOutput

            b, _, h, w = x.shape
            ones = torch.ones(b, 16, h // 16, w // 16)
            return ForwardOutput(x.clone(), ones, torch.ones(b, 16, h // 64, w // 64), ones)

    obj.setup(Lossless(), "cpu")
    _, terms = obj.loss(Lossless(), torch.Generator().manual_seed(0), DEFAULT_LAMBDAS)
    assert set(terms) == {"rd_judge", "kl_judge"}  # row A1: the logit KL alone
    assert float(terms["kl_judge"]) == pytest.approx(0.0, abs=1e-6)
    model = _model()
    _, terms = obj.loss(model, torch.Generator().manual_seed(0), DEFAULT_LAMBDAS)
    assert float(terms["kl_judge"]) > 1e-3


def test_the_control_codes_the_same_photos_without_running_the_judge():
    cfg = UnifiedConfig(experts=(), judge=JUDGE, judge_batch=2, task_weight=0.0, mtce=False, bank=False,
                        diffusion=False)
    assert cfg.row == "F"
    obj = UnifiedObjective(cfg, photos=FixedCrops(2))
    assert obj.judge is None
    model = _model()
    obj.setup(model, "cpu")
    loss, terms = obj.loss(model, torch.Generator().manual_seed(0), DEFAULT_LAMBDAS)
    assert set(terms) == {"rd_judge"} and loss.item() == float(terms["rd_judge"]) > 0
    assert not list(obj.parameters())


def test_a_judge_without_feature_stages_is_refused_up_front(tmp_path):
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="declares no feature stages.*efficientnet-lite0"):
        UnifiedObjective(UnifiedConfig(experts=(), judge="timm:resnet10t",
                                       judge_weights=str(tmp_path / "w.safetensors")))
    with pytest.raises(ValueError, match="multiple of 16"):
        UnifiedObjective(UnifiedConfig(experts=(), judge=JUDGE, judge_size=200))


def test_train_codec_takes_a_judge_without_procedural_experts(monkeypatch, tmp_path, capsys):
    import mlcodec.train
    from mlcodec.cli import main

    seen = {}
    monkeypatch.setattr(mlcodec.train, "train", lambda cfg, objective: seen.update(cfg=cfg, objective=objective) or tmp_path)
    assert main(["train-codec", "--objective", "unified", "--judge", JUDGE, "--judge-batch", "3", "--data",
                 str(tmp_path), "--no-skimage", "--no-bank", "--no-diffusion", "-o", str(tmp_path)]) == 0
    cfg = seen["objective"].cfg
    assert cfg.experts == () and cfg.judge == JUDGE and cfg.judge_batch == 3 and cfg.row == "A2"
    assert cfg.judge_photos == (str(tmp_path),) and not cfg.judge_skimage and not cfg.scenes_used
    assert seen["objective"].metadata()["unified"]["judge"] == JUDGE
    assert main(["train-codec", "--objective", "unified", "--judge-weights", "w.safetensors", "-o", str(tmp_path)]) == 2
    assert "give the judge too" in capsys.readouterr().err


def test_judge_crops_come_from_training_photos_only(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    obj = UnifiedObjective(UnifiedConfig(experts=(), judge=JUDGE, judge_photos=(str(tmp_path),),
                                         judge_skimage=False, task_weight=0.0, mtce=False, bank=False,
                                         diffusion=False))
    obj.prepare()
    assert len(obj.photos.photos) == 1 and obj.data is None  # no scenes generated
    batch = next(obj.photos.batches(2, seed=0))
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.uint8
