"""Datasets as users have them: bad files, compact and gzipped shards, epochs that reshuffle."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcodec.cli import main
from mlcodec.data.sources import IterableSource
from mlcodec.integrations.webdataset import latent_dataset, write_shards


@pytest.fixture()
def messy(tmp_path):
    """An ImageFolder with 5 good images (one CMYK JPEG, one PNG named .jpg), a truncated PNG and a
    text file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "messy"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    arr = lambda: rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(arr()).save(root / "a" / "good0.png")
    Image.fromarray(arr()).save(root / "a" / "good1.png")
    Image.fromarray(arr()).convert("CMYK").save(root / "a" / "cmyk.jpg", quality=90)
    Image.fromarray(arr()).save(root / "b" / "really_png.jpg", format="PNG")
    Image.fromarray(arr()).save(root / "b" / "good2.png")
    buf = io.BytesIO()
    Image.fromarray(arr()).save(buf, format="PNG")
    (root / "b" / "truncated.png").write_bytes(buf.getvalue()[:200])
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def test_shard_skips_and_lists_bad_files_and_codes_every_good_one(tmp_path, messy, capsys):
    out = tmp_path / "out"
    assert main(["shard", str(messy), "-o", str(out), "-q", "--maxcount", "2"]) == 0
    text = capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["samples"] == 5 and m["source"]["samples"] == 6  # samples + skipped = the source
    assert [Path(s["path"]).name for s in m["skipped"]] == ["truncated.png"]
    assert m["skipped"][0]["reason"]
    assert [Path(p).name for p in m["ignored_files"]] == ["notes.txt"]
    assert "skipped" in text and "truncated.png" in text and "notes.txt" in text
    keys = [s["__key__"] for s in latent_dataset(out)]
    assert len(keys) == len(set(keys)) == 5
    assert any("cmyk" in k for k in keys) and any("really_png" in k for k in keys)


def test_on_error_raise_stops_with_one_line_and_exit_2(tmp_path, messy, capsys):
    assert main(["shard", str(messy), "-o", str(tmp_path / "o"), "-q", "--on-error", "raise"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated.png" in err[0]
    assert main(["compress", str(messy), "-o", str(tmp_path / "c"), "-q", "--on-error", "raise"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated.png" in err[0]


def test_compress_skips_bad_files_and_prints_bpp_and_psnr(tmp_path, messy, capsys):
    assert main(["compress", str(messy), "-o", str(tmp_path / "c"), "-q"]) == 0
    out = capsys.readouterr().out
    assert len(list((tmp_path / "c").rglob("*.mlc"))) == 5
    assert "skipped" in out and "truncated.png" in out and "1 files that are not images" in out
    assert "compressed 5 images" in out and "bpp" in out and "PSNR" in out


def test_bad_arguments_are_refused_before_any_work(tmp_path, messy):
    with pytest.raises(SystemExit) as e:
        main(["shard", str(messy), "-o", str(tmp_path / "o"), "--quality", "1.5"])
    assert e.value.code == 2 and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="maxcount"):
        from mlcodec.data.sources import ImageFolderSource
        write_shards(ImageFolderSource(messy), tmp_path / "p", maxcount=0, progress=False)
    assert not (tmp_path / "p").exists()


def _payload_and_shard_bytes(out: Path) -> tuple[int, int]:
    m = json.loads((out / "manifest.json").read_text())
    return m["bitstream_bytes"], m["shard_bytes"]


@pytest.mark.parametrize("gzip", [False, True, None])
def test_shards_carry_no_pax_headers_and_gzip_reads_everywhere(tmp_path, gzip, capsys):
    """Plain and gzipped shards (the default, None) carry integer mtimes and read everywhere."""
    rng = np.random.default_rng(1)
    items = [(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), i % 3) for i in range(12)]
    out = tmp_path / "s"
    m = write_shards(IterableSource(items), out, maxcount=5, progress=False, gzip=gzip)
    assert all(name.endswith(".tar" if gzip is False else ".tar.gz") for name in m.shards)
    for name in m.shards:
        with tarfile.open(out / name) as tf:
            members = tf.getmembers()
            assert members and all(not t.pax_headers and float(t.mtime).is_integer() for t in members)
    payload, total = _payload_and_shard_bytes(out)
    assert total <= (3.0 * payload + 3 * 10240 if gzip is False else 1.1 * payload)  # tar end blocks
    assert len(list(latent_dataset(out))) == 12  # the loader, through the folder's manifest
    assert main(["-q", "verify", str(out)]) == 0
    assert main(["-q", "decode", str(out), "-o", str(tmp_path / "png"), "--sample", "4"]) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 5  # 4 samples + the contact sheet
    capsys.readouterr()


def test_latent_dataset_names_a_missing_shard(tmp_path):
    rng = np.random.default_rng(2)
    write_shards(IterableSource([(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), 0)]),
                 tmp_path / "s", progress=False)
    with pytest.raises(FileNotFoundError, match="no shard at .*shard-000001.tar.gz"):
        latent_dataset(str(tmp_path / "s" / "shard-{000000..000003}.tar.gz"))
    with pytest.warns(UserWarning, match="repeats them"):
        latent_dataset(tmp_path / "s", epoch_length=10)


def _epochs(ds, workers: int, epochs: int, use_set_epoch: bool = True) -> list[list[str]]:
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    orders = []
    for e in range(epochs):
        if use_set_epoch:
            ds.set_epoch(e)
        orders.append([s["__key__"] for s in loader])
    return orders


@pytest.mark.parametrize("workers", [0, 2])
def test_epochs_reshuffle_and_repeat_for_a_seed(tmp_path, workers):
    rng = np.random.default_rng(3)
    items = [(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), i) for i in range(24)]
    write_shards(IterableSource(items), tmp_path / "s", maxcount=4, progress=False)
    make = lambda: latent_dataset(tmp_path / "s", shuffle=8, shardshuffle=True, seed=5)  # noqa: E731
    a = _epochs(make(), workers, 2)
    keys = sorted(f"{i:09d}" for i in range(24))
    assert all(sorted(o) == keys for o in a)  # every sample exactly once per epoch
    assert a[0] != a[1]
    assert _epochs(make(), workers, 2) == a  # same seed and epoch: same order
    if workers == 0:  # without set_epoch, the dataset counts its own passes
        assert _epochs(make(), 0, 2, use_set_epoch=False) == a


def test_shard_workers_exit_when_the_job_is_killed(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "imgs" / "x"
    src.mkdir(parents=True)
    for i in range(200):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src / f"{i:03d}.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mlcodec", "-q", "shard", str(tmp_path / "imgs"),
                             "-o", str(out), "--workers", "2", "--maxcount", "8", "--batch-size", "4"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)

    def children() -> list[int]:
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:
                kids.append(int(stat.parent.name))
        return kids

    deadline = time.time() + 240
    while time.time() < deadline and not (out / "progress.jsonl").exists():
        time.sleep(0.05)
    kids = children()
    assert kids, "no worker processes seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while time.time() - t0 < 3 and any(Path(f"/proc/{k}").exists() and
                                        "Z" not in Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1][:3]
                                        for k in kids):
        time.sleep(0.05)
    alive = [k for k in kids if Path(f"/proc/{k}").exists()
             and "Z" not in Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1][:3]]
    assert not alive and time.time() - t0 < 2.0
    time.sleep(0.5)  # the resource tracker notices the job's end too
    err = proc.stderr.read()
    assert b"Traceback" not in err and b"leaked" not in err, err.decode()[-500:]
