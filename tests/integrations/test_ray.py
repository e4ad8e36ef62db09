"""The Ray Data compression job: same shards and bitstreams as the local job, resumable."""

import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from mlcodec.data.sources import IterableSource
from mlcodec.integrations.webdataset import PROGRESS, latent_dataset, write_shards

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _source():
    rng = np.random.default_rng(3)
    items = [(Image.fromarray(rng.integers(0, 256, (24 + i % 3 * 8, 40, 3), dtype=np.uint8)), i % 4)
             for i in range(11)]
    return IterableSource(items, class_names=["a", "b", "c", "d"])


def _members(path):
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def test_shard_cli_with_ray(tmp_path):
    """Runs first, before the module's Ray instance: the CLI starts and stops its own."""
    from mlcodec.cli import main

    rng = np.random.default_rng(5)
    for c in ("x", "y"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    assert main(["--quiet", "shard", str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "--ray",
                 "--maxcount", "4", "--workers", "1"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["samples"], len(manifest["shards"]), manifest["class_names"]) == (6, 2, ["x", "y"])
    assert json.loads((tmp_path / "out" / "job.json").read_text())["runner"] == "ray"


def test_ray_job_matches_local_job_and_resumes(tmp_path, ray_local):
    from mlcodec.integrations.ray import write_shards_ray

    src = _source()
    local = write_shards(src, tmp_path / "local", maxcount=4, batch_size=2, progress=False)
    m = write_shards_ray(src, tmp_path / "ray", maxcount=4, batch_size=2, num_actors=2,
                         progress=False)
    assert (m.samples, m.shards, m.class_names) == (11, local.shards, ["a", "b", "c", "d"])
    assert (m.bitstream_bytes, m.mean_bpp) == (local.bitstream_bytes, local.mean_bpp)
    for shard in m.shards:  # the same samples, keys, targets and bitstream bytes
        assert _members(tmp_path / "ray" / shard) == _members(tmp_path / "local" / shard)
    keys = [s["__key__"] for s in latent_dataset(tmp_path / "ray")]
    assert sorted(keys) == sorted(src[i].key for i in range(len(src)))

    # Kill-like state: the last shard's file is gone and the middle one is only a .tmp; a rerun
    # writes exactly those two again and keeps the first one untouched.
    out = tmp_path / "ray"
    first = (out / m.shards[0]).stat().st_mtime_ns
    (out / m.shards[2]).unlink()
    (out / m.shards[1]).rename(out / (m.shards[1] + ".tmp"))
    (out / "manifest.json").unlink()
    again = write_shards_ray(src, out, maxcount=4, batch_size=2, num_actors=1, progress=False)
    assert again == m
    assert (out / m.shards[0]).stat().st_mtime_ns == first
    assert not list(out.glob("*.tmp"))
    journal = [json.loads(line)["shard"] for line in (out / PROGRESS).read_text().splitlines()]
    assert sorted(journal[3:]) == sorted(m.shards[1:])


def test_ray_job_refuses_a_folder_of_the_local_job(tmp_path, ray_local):
    from mlcodec.integrations.ray import write_shards_ray

    src = _source()
    write_shards(src, tmp_path / "out", maxcount=4, progress=False)
    with pytest.raises(ValueError, match="other settings.*runner"):
        write_shards_ray(src, tmp_path / "out", maxcount=4, progress=False)

