"""Hugging Face ``datasets``: Dataset -> mlcodec shards, and reading shards back with datasets.

Reading needs no mlcodec code at all (the ``.mlc`` field arrives as bytes)::

    ds = datasets.load_dataset("webdataset", data_files={"train": "shards/shard-*.tar"}, split="train")
    codec = mlcodec.codec_for(ds[0]["mlc"]); latent = codec.decode_latent(ds[0]["mlc"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlcodec.data.sources import Source, SourceSample


def load_local(path: str | Path):
    """A Dataset from a ``save_to_disk`` folder or local parquet file(s), without the hub."""
    import datasets

    p = Path(path)
    if p.is_dir() and (p / "dataset_info.json").exists():
        return datasets.load_from_disk(str(p))
    files = sorted(str(f) for f in p.glob("*.parquet")) if p.is_dir() else [str(p)]
    if not files:
        raise FileNotFoundError(f"{path}: neither a save_to_disk folder nor parquet files")
    return datasets.load_dataset("parquet", data_files=files, split="train")


class HFSource(Source):
    """Rows of a ``datasets.Dataset``: an image column plus label columns as the target."""

    def __init__(self, dataset: Any, image_column: str = "image",
                 label_columns: Sequence[str] = ("label",), name: str = "hf") -> None:
        missing = [c for c in (image_column, *label_columns) if c not in dataset.column_names]
        if missing:
            raise ValueError(f"dataset has no column(s) {missing}; columns: {dataset.column_names}")
        names: list[str] = []
        if len(label_columns) == 1:
            feature = dataset.features[label_columns[0]]
            names = list(getattr(feature, "names", None) or [])
        super().__init__(name=name, class_names=names)
        self.dataset, self.image_column, self.label_columns = dataset, image_column, tuple(label_columns)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> SourceSample:
        row = self.dataset[i]
        target = {c: row[c] for c in self.label_columns}
        if len(self.label_columns) == 1 and isinstance(row[self.label_columns[0]], int):
            target = {"label": row[self.label_columns[0]]}
        return SourceSample(f"{i:09d}", row[self.image_column], target, f"row {i}")

    def origin(self, i: int) -> str:
        return f"{self.name} row {i}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image_column": self.image_column,
                "label_columns": list(self.label_columns)}


def dataset_to_shards(dataset: Any, out_dir: str | Path, image_column: str = "image",
                      label_columns: Sequence[str] = ("label",), **kwargs: Any):
    """Compress a ``datasets.Dataset`` into mlcodec shards (see ``write_shards`` for kwargs)."""
    from .webdataset import write_shards

    return write_shards(HFSource(dataset, image_column, label_columns), out_dir, **kwargs)
