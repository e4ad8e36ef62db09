import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

import mlcodec
from mlcodec.bitstream import read_header
from mlcodec.cli import main
from mlcodec.data.sources import CocoSource, ImageFolderSource, IterableSource
from mlcodec.integrations.webdataset import (CorruptSampleError, collate_padded, latent_dataset,
                                             write_shards)


def _img(rng, h=40, w=56):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _read(out, **kw):
    return list(latent_dataset(out, **kw))  # the folder: its manifest's shards


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "eel"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            _img(rng, 30 + i, 40).save(tmp_path / "imgs" / c / f"{c}.{i}.png")
    return tmp_path / "imgs"


def test_image_folder_round_trip(tmp_path, folder):
    src = ImageFolderSource(folder)
    m = write_shards(src, tmp_path / "out", maxcount=4, progress=False)
    assert (m.samples, len(m.shards), m.class_names) == (9, 3, ["cat", "dog", "eel"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["samples"] == 9
    got = {s["__key__"]: s for s in _read(tmp_path / "out")}
    for i in range(len(src)):
        ref = src[i]
        s = got[ref.key]
        assert s["cls"] == ref.target["label"] and s["target"] == ref.target
        assert s["latent"].shape == (96, 4, 4)


def test_coco_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(3):
        _img(rng, 64, 80).save(tmp_path / "images" / f"im{i}.jpg")
        images.append({"id": 10 + i, "file_name": f"im{i}.jpg", "width": 80, "height": 64})
        for j in range(i + 1):
            anns.append({"id": 100 * i + j, "image_id": 10 + i, "category_id": 1 + j % 2,
                         "bbox": [1.5 * j, 2.0, 10.25, 20.0], "area": 205.0, "iscrowd": 0,
                         "segmentation": [[1.5 * j, 2, 11.75 + j, 2, 11.75, 22]]})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "ball"}, {"id": 2, "name": "box"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    src = CocoSource(tmp_path / "ann.json", tmp_path / "images")
    write_shards(src, tmp_path / "out", progress=False)
    got = {s["__key__"]: s["target"] for s in _read(tmp_path / "out")}
    assert len(got) == 3
    for i in range(3):
        ref = src[i].target
        assert got[src[i].key] == ref
        assert len(ref["boxes"]) == i + 1 and ref["boxes"][0] == [0.0, 2.0, 10.25, 22.0]


def test_iterable_and_hf_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    from mlcodec.integrations.hf import dataset_to_shards

    rng = np.random.default_rng(2)
    items = [(_img(rng), {"label": i % 2, "note": f"n{i}"}) for i in range(5)]
    write_shards(IterableSource(items), tmp_path / "it", progress=False)
    got = sorted(_read(tmp_path / "it"), key=lambda s: s["__key__"])
    assert [s["target"] for s in got] == [t for _, t in items]

    ds = datasets.Dataset.from_dict(
        {"image": [im for im, _ in items], "label": [t["label"] for _, t in items]},
        features=datasets.Features({"image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["a", "b"])}))
    m = dataset_to_shards(ds, tmp_path / "hf", progress=False)
    assert m.class_names == ["a", "b"]
    # read back with Hugging Face datasets alone (offline, local files)
    shards = [str(p) for p in sorted((tmp_path / "hf").glob("*.tar.gz"))]  # gzip, the default
    back = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert len(back) == 5
    codec = mlcodec.codec_for(back[0]["mlc"])
    assert codec.decode_latent(back[0]["mlc"]).shape == (96, 4, 4)
    assert sorted(int(r["cls"]) if isinstance(r["cls"], (int, str, bytes)) else r["cls"] for r in back) \
        == sorted(t["label"] for _, t in items)


def test_kill_and_resume_gives_each_sample_once(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "imgs" / "only"
    src.mkdir(parents=True)
    n = 40
    for i in range(n):
        _img(rng, 32, 32).save(src / f"{i:03d}.png")
    out = tmp_path / "out"
    args = ["-q", "shard", str(tmp_path / "imgs"), "-o", str(out), "--maxcount", "4", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mlcodec.cli", *args], env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        prog = out / "progress.jsonl"
        if prog.exists() and len(prog.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "job finished before it could be killed"
    done_before = len((out / "progress.jsonl").read_text().splitlines())
    assert main(args) == 0
    lines = (out / "progress.jsonl").read_text().splitlines()
    assert len(lines) == n // 4 and len(lines) > done_before
    keys = [s["__key__"] for s in _read(out)]
    assert len(keys) == n and len(set(keys)) == n
    assert not list(out.glob("*.tmp"))


def test_dataloader_two_workers_two_nodes(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    items = [(_img(rng, 32, 32), i) for i in range(32)]
    write_shards(IterableSource(items), tmp_path / "s", maxcount=4, progress=False)
    urls = sorted(str(p) for p in (tmp_path / "s").glob("*.tar.gz"))
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = latent_dataset(urls, shuffle=8, shardshuffle=True, decode_batch=4, seed=5)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_padded)
        node = [k for b in loader for k in b["keys"]]
        assert len(node) == 16
        seen += node
    assert sorted(seen) == sorted(f"{i:09d}" for i in range(32))
    with pytest.raises(ValueError, match="WORLD_SIZE=2.*seed=N"):  # ranks could not agree on an order
        latent_dataset(urls, shuffle=8, shardshuffle=True)


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("reshuffle") / "s"
    rng = np.random.default_rng(5)
    write_shards(IterableSource([(_img(rng, 32, 32), i) for i in range(24)]), out, maxcount=3, progress=False)
    return out


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, False), (2, True)])
def test_every_epoch_reads_each_sample_once_in_a_new_order(small_shards, workers, persistent):
    """No seed: like DataLoader(shuffle=True), each epoch reshuffles without set_epoch, also with
    workers restarted every epoch (they agree on the shard order through the loader's base seed)."""
    ds = latent_dataset(small_shards, shuffle=6, shardshuffle=True, decode_batch=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate_padded,
                                         persistent_workers=persistent)
    epochs = [[k for b in loader for k in b["keys"]] for _ in range(2)]
    for keys in epochs:
        assert sorted(keys) == [f"{i:09d}" for i in range(24)]
    assert epochs[0] != epochs[1]


def test_a_seed_gives_a_reproducible_order_that_set_epoch_advances(small_shards):
    def read(epoch: int) -> list[str]:
        ds = latent_dataset(small_shards, shuffle=6, shardshuffle=True, decode_batch=3, seed=11)
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_padded)
        return [k for b in loader for k in b["keys"]]

    first = read(0)
    assert read(0) == first and sorted(first) == [f"{i:09d}" for i in range(24)]
    assert read(1) != first


def test_corrupt_samples_name_shard_and_key(tmp_path):
    rng = np.random.default_rng(5)
    write_shards(IterableSource([(_img(rng), i) for i in range(6)]), tmp_path / "s", progress=False,
                 gzip=False)  # plain tar, to rewrite one member's bytes
    shard = tmp_path / "s" / "shard-000000.tar"
    members = []
    with tarfile.open(shard) as tf:
        for m in tf.getmembers():
            members.append((m, tf.extractfile(m).read()))
    with tarfile.open(shard, "w") as tf:
        for m, data in members:
            if m.name == "000000003.mlc":
                data = bytearray(data)
                data[len(data) // 2] ^= 0x55
                data = bytes(data)
            tf.addfile(m, __import__("io").BytesIO(data))
    with pytest.raises(CorruptSampleError, match=r"shard-000000.tar key 000000003: .*CRC32"):
        _read(tmp_path / "s")
    with pytest.warns(UserWarning, match="skipping shard .* key 000000003"):
        got = _read(tmp_path / "s", on_error="skip")
    assert sorted(s["__key__"] for s in got) == [f"{i:09d}" for i in (0, 1, 2, 4, 5)]
    with pytest.raises(CorruptSampleError, match="key 000000000: .*not bmshj2018-hyperprior"):
        list(latent_dataset(str(shard), codec="bmshj2018-hyperprior", decode_batch=1))
    # a truncated shard
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptSampleError):
        _read(tmp_path / "s")


def test_image_output_and_variable_sizes(tmp_path):
    rng = np.random.default_rng(6)
    items = [(_img(rng, 20 + 30 * i, 50), i) for i in range(3)]
    write_shards(IterableSource(items), tmp_path / "s", progress=False)
    got = sorted(_read(tmp_path / "s", output="image"), key=lambda s: s["__key__"])
    assert [tuple(s["image"].shape) for s in got] == [(3, 20, 50), (3, 50, 50), (3, 80, 50)]
    assert got[0]["image"].dtype == torch.uint8
    b = collate_padded(got)
    assert b["image"].shape == (3, 3, 80, 50) and b["sizes"].tolist() == [[20, 50], [50, 50], [80, 50]]


def test_shard_job_refuses_other_settings_and_pixel_codecs(tmp_path):
    rng = np.random.default_rng(7)
    src = IterableSource([(_img(rng), 0)])
    write_shards(src, tmp_path / "s", quality=0.5, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        write_shards(src, tmp_path / "s", quality=0.7, progress=False)
    with pytest.raises(ValueError, match="pixel codec"):
        write_shards(src, tmp_path / "j", codec="jpeg", progress=False)
    # a job begun before the default's weights changed: refused with the new ones, resumed with its release
    write_shards(src, tmp_path / "r", codec="mlcodec-hyperprior@1", progress=False)
    with pytest.raises(ValueError, match=r"weights changed since it began.*--codec NAME@N"):
        write_shards(src, tmp_path / "r", progress=False)
    write_shards(src, tmp_path / "r", codec="mlcodec-hyperprior@1", progress=False)


def test_decode_shards_for_inspection(tmp_path):
    rng = np.random.default_rng(8)
    items = [(_img(rng, 64, 64), {"boxes": [[4, 4, 30, 40]], "labels": [1],
                                  "segmentation": [[[4, 4, 30, 4, 30, 40]]]}) for _ in range(5)]
    write_shards(IterableSource(items, class_names=["a", "b"]), tmp_path / "s", progress=False)
    assert main(["-q", "decode", str(tmp_path / "s"), "-o", str(tmp_path / "png"), "--first", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "png").glob("0*.png")) == [f"{i:09d}.png" for i in range(3)]
    sheet = Image.open(tmp_path / "png" / "contact_sheet.png")
    assert sheet.size == (2 * 192, 2 * (192 + 14))
    assert main(["-q", "decode", str(tmp_path / "s" / "shard-000000.tar.gz"), "-o", str(tmp_path / "k"),
                 "--keys", "000000004"]) == 0
    assert [p.name for p in (tmp_path / "k").glob("0*.png")] == ["000000004.png"]
    assert main(["decode", str(tmp_path / "s"), "-o", str(tmp_path / "x"), "--keys", "nope"]) == 2


def test_plain_webdataset_recipe(tmp_path):
    import webdataset as wds

    rng = np.random.default_rng(9)
    write_shards(IterableSource([(_img(rng), i) for i in range(3)]), tmp_path / "s", progress=False)
    urls = [str(p) for p in sorted((tmp_path / "s").glob("*.tar.gz"))]
    codec = mlcodec.create_codec()
    ds = wds.WebDataset(urls, nodesplitter=wds.split_by_node, shardshuffle=False).map(
        lambda s: (codec.decode_latent(s["mlc"]), int(s["cls"])))
    got = list(ds)
    assert [c for _, c in got] == [0, 1, 2] and got[0][0].shape == (96, 4, 4)


def test_label_only_samples_skip_the_json_member():
    from mlcodec.data.shard_fields import decode_target, encode_sample

    s = encode_sample("k", b"x", {"label": 3})
    assert set(s) == {"__key__", "mlc", "cls"} and decode_target(s) == {"label": 3}
    s = encode_sample("k", b"x", {"label": 3, "boxes": [[0, 0, 1, 1]]})
    assert decode_target(s) == {"label": 3, "boxes": [[0, 0, 1, 1]]} and s["cls"] == b"3"
    assert decode_target(encode_sample("k", b"x", {})) == {}


def _raw_samples(folder):
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("shard-*.tar*"))
    return list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))


def test_decode_stage_sorts_a_mixed_stream_into_full_batches(tmp_path):
    from mlcodec.integrations.latent_loader import DecodeStage

    rng = np.random.default_rng(8)
    items = [(_img(rng), i) for i in range(10)]
    write_shards(IterableSource(items[0::2]), tmp_path / "lo", quality=0.2, progress=False)
    write_shards(IterableSource(items[1::2]), tmp_path / "hi", quality=0.8, progress=False)
    lo, hi = _raw_samples(tmp_path / "lo"), _raw_samples(tmp_path / "hi")
    for s in hi:
        s["__key__"] = "hi" + s["__key__"]
    mixed = [s for pair in zip(lo, hi) for s in pair]  # qualities alternate, as after a shuffle
    stage, calls = DecodeStage(decode_batch=2), []
    decode = stage._decode
    stage._decode = lambda streams: calls.append([bs.header.quality for bs in streams]) or decode(streams)
    out = list(stage(iter(mixed)))
    assert [s["__key__"] for s in out] == [s["__key__"] for s in mixed]  # order kept
    got = {s["__key__"]: s["latent"] for s in out}
    assert all(len(set(c)) == 1 for c in calls)  # one quality per decode call
    assert sorted(len(c) for c in calls) == [1, 1, 2, 2, 2, 2]  # 5 per quality: 2 + 2 + 1
    codec = mlcodec.create_codec("mlcodec-hyperprior")
    for s in mixed:
        assert torch.equal(got[s["__key__"]], codec.decode_latent(s["mlc"]))


def test_decode_stage_keeps_flowing_when_no_batch_fills(tmp_path):
    from mlcodec.integrations.latent_loader import DecodeStage

    rng = np.random.default_rng(9)
    consumed: list[str] = []

    def source():
        for s in raw:
            consumed.append(s["__key__"])
            yield s

    items = [(_img(rng, 10 + 64 * i, 24), i) for i in range(20)]  # 20 latent shapes
    write_shards(IterableSource(items), tmp_path / "t", progress=False)
    raw = _raw_samples(tmp_path / "t")
    out = DecodeStage(decode_batch=2)(source())
    first = next(out)
    assert len(consumed) == 17  # 8 * decode_batch samples are held back at most
    assert [first["__key__"]] + [s["__key__"] for s in out] == [s["__key__"] for s in raw]


def test_reencode_turns_format_2_shards_into_format_3_and_verify_tells_them_apart(
        tmp_path, folder, monkeypatch, capsys):
    """A dataset sharded by a release that wrote format 2 is written again from its source, with
    the job's codec, quality and shard size; verify counts each folder's formats."""
    from mlcodec.codecs.learned import LatentCodec
    from mlcodec.inspect import iter_samples, shard_files

    with monkeypatch.context() as m:
        m.setattr(LatentCodec, "format_version", 2)  # what the old release wrote
        assert main(["shard", str(folder), "-o", str(tmp_path / "old"), "--quality", "0.3",
                     "--maxcount", "4", "-q"]) == 0
    assert main(["-q", "verify", str(tmp_path / "old")]) == 0
    assert "format 2: 9" in capsys.readouterr().out
    assert main(["-q", "reencode", str(tmp_path / "old"), "-o", str(tmp_path / "new")]) == 0
    assert "bitstream format 3" in capsys.readouterr().out
    assert main(["-q", "verify", str(tmp_path / "new")]) == 0
    assert "verified 9 samples (format 3: 9): 9 decode, 0 fail" in capsys.readouterr().out
    old = {s.key: s for s in iter_samples(shard_files([tmp_path / "old"]))}
    new = {s.key: s for s in iter_samples(shard_files([tmp_path / "new"]))}
    assert old.keys() == new.keys() and len(shard_files([tmp_path / "new"])) == 3
    for k in old:
        assert old[k].target == new[k].target
        hv = [read_header(s.fields["mlc"]) for s in (old[k], new[k])]
        assert (hv[0].version, hv[1].version) == (2, 3) and hv[0].quality == hv[1].quality
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    assert manifest["quality"] == pytest.approx(0.3) and manifest["samples"] == 9
    with pytest.raises(ValueError, match="another folder"):
        from mlcodec.integrations.reencode import reencode_shards
        reencode_shards(tmp_path / "old", tmp_path / "old")
