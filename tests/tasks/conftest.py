"""Shared data of the task tests: a tiny synthetic COCO export with latent and JPEG image shards."""

import pytest

from mlcodec.data.sources import CocoSource
from mlcodec.data.synthetic import export_all
from mlcodec.integrations.webdataset import write_image_shards, write_shards
from mlcodec.tasks.data import TaskSpec

SIZE = 64


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """Tiny synthetic COCO export with latent shards (q=0.5) and JPEG q90 image shards."""
    root = tmp_path_factory.mktemp("bench")
    export_all(root, train=16, val=8, size=SIZE, seed=0, formats=("coco", "yolo"))
    src = {s: CocoSource(root / f"coco/{s}/annotations.json", root / f"coco/{s}/images")
           for s in ("train", "val")}
    for s, source in src.items():
        write_shards(source, root / f"latent-{s}", quality=0.5, progress=False)
        write_image_shards(source, root / f"jpeg-{s}", "jpeg", 0.9, progress=False)
    return root, src


@pytest.fixture(scope="session")
def size() -> int:
    """The bench's image side in pixels."""
    return SIZE


@pytest.fixture(scope="session")
def spec_of():
    """``spec_of(source, task)``: the task's spec over a source's classes."""
    def make(source, task):
        return TaskSpec(task, tuple(source.class_names), tuple(source.category_ids))
    return make
