import numpy as np
import pytest
import torch
from PIL import Image

from mlcodec.codecs.hyperprior import GainedHyperpriorCodec
from mlcodec.data.sources import CocoSource, ImageFolderSource
from mlcodec.data.synthetic import CLASS_NAMES, SyntheticScenes, export_all
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.registry import codec_config
from mlcodec.tasks.codec_tuning import (TaskObjective, TaskTuning, build_heads, scene_pool, source_pool,
                                        task_losses)
from mlcodec.train import TrainConfig, export, train
from mlcodec.weights import load_weights, read_metadata


def test_scene_pool_matches_the_generator():
    data = scene_pool(6, 64, seed=5, workers=2)
    images, labels, semantic = data.images, data.labels, data.semantic
    assert data.num_classes == len(CLASS_NAMES)
    assert images.shape == (6, 3, 64, 64) and images.dtype == torch.uint8
    assert labels.shape == (6,) and semantic.shape == (6, 64, 64)
    ref = SyntheticScenes(6, 64, seed=5)
    for i in (0, 5):
        s = ref[i]
        assert torch.equal(images[i].permute(1, 2, 0), torch.from_numpy(np.array(s.image)))
        assert labels[i] == s.label
        assert torch.equal(semantic[i], torch.from_numpy(s.semantic))


def test_task_losses_reach_the_analysis_transform():
    torch.manual_seed(0)
    model = GainedMeanScaleHyperprior(N=16, M=16)
    heads = build_heads(("cls", "seg"), model.M, num_classes=8)
    data = scene_pool(2, 64, seed=0, workers=1)
    out = model(data.images.float() / 255, torch.tensor([0.2, 0.8]))
    losses = task_losses(heads, out.latent, data.labels, data.semantic.long())
    assert set(losses) == {"cls", "seg"}
    sum(losses.values()).backward()
    assert model.g_a[0].weight.grad.abs().sum() > 0  # through the straight-through rounding
    assert model.log_gain.grad.abs().sum() > 0
    assert model.g_s[0].weight.grad is None  # the task losses do not touch the synthesis
    with pytest.raises(ValueError, match="not \\['det'\\]"):
        build_heads(("cls", "det"), 16, 8)


def test_forward_latent_is_what_the_codec_decodes():
    torch.manual_seed(0)
    model = GainedMeanScaleHyperprior(N=16, M=16).eval()
    model.update(force=True)
    codec = GainedHyperpriorCodec(codec_config("mlcodec-hyperprior"), model)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        fwd = model(torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255,
                    torch.tensor([0.5]))
    decoded = codec.decode_latent(codec.compress(img, 0.5))
    # the training pass rounds around the means as the coder does; symbols past the coder's
    # range are clipped there, so compare the bulk
    close = (fwd.latent[0] - decoded).abs() < 1e-3
    assert close.float().mean() > 0.99


def test_the_task_objective_resumes_and_exports_loadable_weights(tmp_path):
    """``train-codec --objective tasks`` (the one training loop with the task objective): resumes
    from its checkpoint, records the tuning and the recipe it started from, moves the codec."""
    torch.manual_seed(0)
    init = tmp_path / "init.safetensors"
    export(GainedMeanScaleHyperprior(N=16, M=16), TrainConfig(N=16, M=16), init)
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photos / "0.png")
    tuning = TaskTuning(scenes=8, scene_size=64, scene_batch=2, workers=1)
    cfg = TrainConfig(out=str(tmp_path / "run"), init=str(init), N=16, M=16, data=(str(photos),),
                      use_skimage=False, batch_size=1, patch=64, steps=2, lr=tuning.codec_lr,
                      save_every=1, progress=False)
    train(cfg, TaskObjective(tuning))
    path = train(TrainConfig(**{**cfg.__dict__, "steps": 3}), TaskObjective(tuning))  # resumes at step 2
    assert int(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]) == 3
    meta = read_metadata(path)
    assert meta["training"]["steps_run"] == 3 and meta["task_tuning"]["tasks"] == ["cls", "seg"]
    assert meta["objective"] == "tasks" and meta["init_recipe"] == read_metadata(init)["config"]
    assert meta["config"]["lambdas"] == list(TrainConfig().lambdas)
    model = GainedMeanScaleHyperprior(**meta["architecture"])
    load_weights(model, path)
    before = GainedMeanScaleHyperprior(N=16, M=16)
    load_weights(before, init)
    assert not torch.equal(model.g_a[0].weight, before.g_a[0].weight)
    with pytest.raises(ValueError, match="not \\['det'\\]"):
        TaskObjective(TaskTuning(tasks=("det",)))


def test_train_codec_builds_the_task_objective_from_its_options():
    from mlcodec.cli import build_parser
    from mlcodec.objective import objective_plugins

    args = build_parser().parse_args(["train-codec", "--objective", "tasks", "--tasks", "seg",
                                      "--task-weight", "0.5", "--scenes", "10", "--head-lr", "1e-3"])
    obj = objective_plugins()["tasks"].load().from_args(args)
    assert obj.cfg == TaskTuning(tasks=("seg",), task_weight=0.5, scenes=10, head_lr=1e-3)
    # the options both objectives share are declared once; the unified objective reads them too
    args = build_parser().parse_args(["train-codec", "--objective", "unified", "--tasks", "cls",
                                      "--expert", "cls=e.safetensors", "--scenes", "7"])
    assert (args.scenes, args.tasks, args.scene_batch) == (7, "cls", None)
    with pytest.raises(ValueError, match="no --expert for cls, seg"):
        objective_plugins()["unified"].load().from_args(
            build_parser().parse_args(["train-codec", "--objective", "unified", "--tasks", "cls,seg"]))


def test_source_pool_reads_labels_and_masks_of_a_dataset(tmp_path):
    export_all(tmp_path, 4, 1, size=64, formats=("coco", "imagefolder"))
    coco = CocoSource(tmp_path / "coco/train/annotations.json", tmp_path / "coco/train/images")
    data = source_pool(coco, 32, ("cls", "seg"), limit=3, workers=1)
    assert data.images.shape == (3, 3, 32, 32) and data.num_classes == len(CLASS_NAMES)
    ref = SyntheticScenes(4, 64, seed=0)
    for i, k in enumerate((0, 2, 3)):  # 3 of 4, evenly spaced
        scene = ref[k]
        assert data.labels[i] == scene.label
        want = np.asarray(Image.fromarray(scene.semantic).resize((32, 32), Image.NEAREST))
        assert (data.semantic[i].numpy() == want).mean() > 0.97  # RLE round trip, then nearest
    folder = ImageFolderSource(tmp_path / "imagefolder/train")
    assert source_pool(folder, 32, ("cls",), workers=1).labels.tolist() == \
        [folder[i].target["label"] for i in range(len(folder))]
    with pytest.raises(ValueError, match="has no 'segmentation'.*drop seg"):
        source_pool(folder, 32, ("cls", "seg"), workers=1)
