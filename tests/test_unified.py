"""The unified objective (MTCE + DIKL): its terms train, it stays out of the shipped codec."""

import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from mlcodec.data.synthetic import CLASS_NAMES, COLOUR_NAMES, SyntheticScenes, export_coco
from mlcodec.models.gained_hyperprior import DEFAULT_LAMBDAS, GainedMeanScaleHyperprior
from mlcodec.tasks import create_head
from mlcodec.tasks.codec_tuning import scene_pool
from mlcodec.tasks.data import TaskSpec, make_spec, task_targets
from mlcodec.tasks.train import save_head
from mlcodec.tasks.unified import UnifiedConfig, UnifiedObjective, load_experts
from mlcodec.train import TrainConfig, export, rd_loss, train
from mlcodec.weights import load_weights, read_metadata

EXPERTS = {"cls": "pixel-cls", "seg": "pixel-seg", "det": "pixel-fcos"}


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    torch.manual_seed(0)
    out = []
    for task, head in EXPERTS.items():
        spec = TaskSpec(task, CLASS_NAMES)
        save_head(create_head(head, spec), root / f"{head}.safetensors", head, spec, 3)
        out.append((task, str(root / f"{head}.safetensors")))
    return tuple(out)


def test_a_tiny_run_on_a_fixed_batch_lowers_the_loss_and_every_term_is_finite(experts):
    torch.manual_seed(0)
    model = GainedMeanScaleHyperprior(N=16, M=16, num_levels=len(DEFAULT_LAMBDAS))
    model.init_gains(list(DEFAULT_LAMBDAS))
    obj = UnifiedObjective(UnifiedConfig(experts=experts, scene_batch=4, embed=16, prototypes=8),
                           scene_pool(4, 64, seed=3, workers=1))
    obj.setup(model, "cpu")
    params = list(model.parameters()) + list(obj.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    photos = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    totals = []
    for _ in range(25):
        gen = torch.Generator().manual_seed(0)  # the same batch, qualities and noise every step
        rd, _, _ = rd_loss(model, photos, torch.tensor([0.2, 0.8]), DEFAULT_LAMBDAS, False)
        loss, terms = obj.loss(model, gen, DEFAULT_LAMBDAS)
        assert {"rd_scene", "task_cls", "task_seg", "task_det", "align_cls", "align_seg", "align_det",
                "bank", "diffusion"} == set(terms)
        assert all(math.isfinite(float(v)) for v in terms.values())
        total = rd + loss
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(math.isfinite(v) for v in totals)
    assert totals[-1] < 0.8 * totals[0]
    # the experts stay frozen, and are not parameters of the objective
    assert not any(p.requires_grad for e in obj.experts.values() for p in e.parameters())
    assert all(not k.startswith("experts") for k in obj.state_dict())


@pytest.mark.parametrize("flags,row,absent", [
    ((False, False, False), "A1", ("align_cls", "bank", "diffusion")),
    ((True, False, True), "A5", ("bank",)),
    ((True, True, False), "A6", ("diffusion",)),
])
def test_ablation_switches_drop_their_terms(experts, flags, row, absent):
    mtce, bank, diffusion = flags
    cfg = UnifiedConfig(experts=experts, mtce=mtce, bank=bank, diffusion=diffusion, scene_batch=2,
                        embed=16, prototypes=8)
    assert cfg.row == row
    obj = UnifiedObjective(cfg, scene_pool(2, 64, seed=3, workers=1))
    obj.setup(GainedMeanScaleHyperprior(N=16, M=16), "cpu")
    _, terms = obj.loss(GainedMeanScaleHyperprior(N=16, M=16), torch.Generator().manual_seed(0),
                        DEFAULT_LAMBDAS)
    assert not set(absent) & set(terms)
    assert ("log_vars.task_cls" in obj.state_dict()) == mtce


def test_the_fine_tune_control_is_rate_distortion_alone_and_needs_no_expert():
    cfg = UnifiedConfig(experts=(), mtce=False, bank=False, diffusion=False, task_weight=0.0, scene_batch=2)
    assert cfg.row == "F"
    obj = UnifiedObjective(cfg, scene_pool(2, 64, seed=3, workers=1))
    model = GainedMeanScaleHyperprior(N=16, M=16)
    obj.setup(model, "cpu")
    loss, terms = obj.loss(model, torch.Generator().manual_seed(0), DEFAULT_LAMBDAS)
    assert set(terms) == {"rd_scene"} and float(loss) == float(terms["rd_scene"]) > 0
    assert not list(obj.parameters())  # nothing trains beside the codec
    with pytest.raises(ValueError, match="at least one frozen expert"):
        UnifiedObjective(UnifiedConfig(experts=(), mtce=False, bank=False, diffusion=False))  # weight 0.3


def test_experts_must_be_pixel_models_of_their_task(experts, tmp_path):
    spec = TaskSpec("cls", CLASS_NAMES)
    save_head(create_head("latent-cls", spec, 16), tmp_path / "l.safetensors", "latent-cls", spec, 16)
    with pytest.raises(ValueError, match="must be a pixel model"):
        load_experts((("cls", str(tmp_path / "l.safetensors")),))
    with pytest.raises(ValueError, match="must be a pixel model"):
        load_experts((("seg", experts[0][1]),))  # a classifier given as the seg expert
    with pytest.raises(ValueError, match="not 'colour'"):
        load_experts((("colour", experts[0][1]),))


def test_training_modules_stay_out_of_the_exported_weights(experts, tmp_path, monkeypatch):
    torch.manual_seed(0)
    init = tmp_path / "init.safetensors"
    export(GainedMeanScaleHyperprior(N=16, M=16), TrainConfig(N=16, M=16), init)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photos / "0.png")
    cfg = TrainConfig(out=str(tmp_path / "run"), data=(str(photos),), use_skimage=False, init=str(init),
                      steps=2, batch_size=1, patch=64, save_every=1, progress=False, log_every=1)
    obj = UnifiedObjective(UnifiedConfig(experts=experts, scene_batch=2, embed=16, prototypes=8),
                           scene_pool(4, 64, seed=3, workers=1))
    path = train(cfg, obj)
    ckpt = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert any(k.startswith("bank.") for k in ckpt["objective"])  # resumable with its modules
    assert any(k.startswith("denoiser.") for k in ckpt["objective"])
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if k.split(".")[0] in ("bank", "denoiser", "adapters", "embed",
                                                          "bank_decoders", "log_vars")]
    meta = read_metadata(path)
    assert meta["unified"]["row"] == "A4" and meta["training"]["steps_run"] == 2
    assert len(meta["training"]["history"]) == 2

    def no_pickle(*a, **k):
        raise AssertionError("weights must load without pickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    model = GainedMeanScaleHyperprior(N=16, M=16)
    extra = load_weights(model, path)  # strict: nothing but the codec and its integer tables
    assert all(k.startswith("exact.") for k in extra)


def test_colour_is_an_image_label_no_other_target_determines(tmp_path):
    scenes = SyntheticScenes(40, 64, seed=7)
    colours = [s.colour for s in scenes]
    assert set(colours) <= set(range(len(COLOUR_NAMES))) and len(set(colours)) >= 4
    assert [s.colour for s in SyntheticScenes(40, 64, seed=7)] == colours  # deterministic
    # the same shape class comes in several colours: the shape label does not determine it
    by_shape: dict[int, set[int]] = {}
    for s in scenes:
        by_shape.setdefault(s.label, set()).add(s.colour)
    assert max(len(v) for v in by_shape.values()) >= 3
    from mlcodec.data.sources import CocoSource

    export_coco(SyntheticScenes(3, 64, seed=7), tmp_path)
    src = CocoSource(tmp_path / "annotations.json", tmp_path / "images")
    assert src.label_names == {"colour": list(COLOUR_NAMES)}
    assert [src[i].target["colour"] for i in range(3)] == colours[:3]
    spec = make_spec(src.class_names, src.label_names, "cls", "colour")
    assert spec.class_names == COLOUR_NAMES and TaskSpec.from_json(spec.to_json()) == spec
    sizes = torch.tensor([[64, 64]] * 3)
    assert task_targets([src[i].target for i in range(3)], spec, sizes).tolist() == colours[:3]
    with pytest.raises(ValueError, match="no image-level label 'texture'"):
        make_spec(src.class_names, src.label_names, "cls", "texture")
    with pytest.raises(ValueError, match="applies to classification"):
        make_spec(src.class_names, src.label_names, "seg", "colour")


def test_eval_compares_learned_codecs_each_with_its_own_head(tmp_path):
    import mlcodec
    from mlcodec.data.sources import IterableSource
    from mlcodec.tasks.evaluate import evaluate_codecs, load_latent_heads

    torch.manual_seed(0)
    other = tmp_path / "other.safetensors"
    export(GainedMeanScaleHyperprior(N=16, M=16), TrainConfig(N=16, M=16), other)
    spec_name = f"mlcodec-hyperprior:{other}"
    scenes = SyntheticScenes(4, 64, seed=2)
    src = IterableSource([(s.image, {"label": s.label, "colour": s.colour}) for s in scenes],
                         class_names=COLOUR_NAMES)
    spec = TaskSpec("cls", COLOUR_NAMES, (), "colour")
    heads = []
    for name, cin in (("mlcodec-hyperprior", 96), (spec_name, 16)):
        fp = mlcodec.create_codec(name).fingerprint(0.5).hex()
        heads.append(save_head(create_head("latent-cls", spec, cin), tmp_path / f"h{cin}.safetensors",
                               "latent-cls", spec, cin, {"codec": name, "fingerprint": fp}))
    result = evaluate_codecs("cls", src, spec, ["mlcodec-hyperprior", spec_name, "jpeg"], [0.3, 0.7],
                             latent_head=[heads[0], (spec_name, heads[1])], progress=False)
    latent = [(r["codec"], r["quality"]) for r in result["rows"] if r["domain"] == "latent"]
    want_other = f"mlcodec-hyperprior:{other.resolve()}"
    assert latent == [("mlcodec-hyperprior", 0.3), ("mlcodec-hyperprior", 0.7), (spec_name, 0.3), (spec_name, 0.7)]
    assert set(load_latent_heads(heads, "cls", "colour")) == {"mlcodec-hyperprior", want_other}
    with pytest.raises(ValueError, match="on 'colour', not cls on 'label'"):
        load_latent_heads(heads[0], "cls")
    with pytest.raises(ValueError, match="two latent heads"):
        load_latent_heads([heads[0], heads[0]], "cls", "colour")
    shapes = TaskSpec("cls", CLASS_NAMES)
    ref = save_head(create_head("pixel-cls", shapes), tmp_path / "ref.safetensors", "pixel-cls", shapes, 3)
    with pytest.raises(ValueError, match="reference on 'label', not cls on 'colour'"):
        evaluate_codecs("cls", src, spec, ["jpeg"], [0.5], pixel_reference=ref, progress=False)


def test_train_codec_cli_asks_for_an_expert_per_seen_task(capsys):
    from mlcodec.cli import main

    assert main(["train-codec", "--objective", "unified", "--tasks", "cls,seg", "--expert",
                 "cls=x.safetensors", "--steps", "1"]) == 2
    assert "no --expert for seg" in capsys.readouterr().err


@pytest.mark.parametrize("given, expected", [([], UnifiedConfig.codec_lr), (["--lr", "5e-5"], 5e-5)])
def test_train_codec_fine_tunes_at_the_objectives_codec_rate_unless_told(experts, monkeypatch, tmp_path,
                                                                           given, expected):
    import mlcodec.train
    from mlcodec.cli import main

    seen = {}
    monkeypatch.setattr(mlcodec.train, "train", lambda cfg, objective: seen.update(cfg=cfg, objective=objective) or tmp_path)
    monkeypatch.setattr(UnifiedObjective, "prepare", lambda self: None)
    expert_args = [a for t, p in experts for a in ("--expert", f"{t}={p}")]
    assert main(["train-codec", "--objective", "unified", *expert_args, "-o", str(tmp_path), *given]) == 0
    assert seen["cfg"].lr == expected and seen["cfg"].init  # from the packaged weights
    assert seen["objective"].metadata()["unified"]["codec_lr"] == expected


def test_mlcodec_unified_round_trips_and_decodes_alike_in_any_batch_and_thread_count(photo):
    import mlcodec
    from mlcodec.bitstream import read_header
    from mlcodec.metrics import psnr

    codec = mlcodec.create_codec("mlcodec-unified")
    default = mlcodec.create_codec("mlcodec-hyperprior")
    assert codec.config.codec_id not in (1, 2) and codec.config.kind == "learned"
    assert codec.fingerprint(0.5) != default.fingerprint(0.5)
    images = [photo, photo.crop((0, 0, 128, 96)), photo.transpose(Image.FLIP_LEFT_RIGHT).crop((40, 8, 232, 136))]
    # release 2 spans lambdas 0.0001-0.0932, so its 0.7 is about the default's 0.5 in rate
    datas = codec.compress_batch(images, quality=0.7)
    assert all(read_header(d).version == 3 for d in datas)  # the exact integer hyper-synthesis
    assert type(mlcodec.codec_for(datas[0])) is type(codec) and mlcodec.codec_for(datas[0]).name == "mlcodec-unified"
    decoded = codec.decompress_batch(datas)
    assert [im.size for im in decoded] == [im.size for im in images]
    assert psnr(images[0], decoded[0]) > 27
    together = codec.decode_latents(datas)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [codec.decode_latents([d])[0] for d in datas]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(together, alone):
        assert torch.equal(a, b)
    assert codec.compress(images[1], 0.7) == datas[1]  # encoding is deterministic
    with pytest.raises(ValueError, match="decode it with mlcodec.codec_for"):
        default.decompress(datas[0])
