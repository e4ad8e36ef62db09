"""Benchmark fixtures (benchmarks/common.py): float16 copies of trained models, restored only for
the recipe that made them."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchmarks.common import FIXTURES, fixture_digest, recipe_digest, restore_fixture, write_fixture


def test_a_fixture_restores_only_for_its_recipe(tmp_path):
    weights = {"w": torch.linspace(-3, 3, 12).reshape(3, 4) / 7, "steps": torch.tensor([5], dtype=torch.int64)}
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"head": json.dumps("pixel-seg")})
    recipe = {"head": "pixel-seg", "epochs": 16, "seed": 0}
    fixture = write_fixture(tmp_path / "model.safetensors", tmp_path / "fixture.safetensors", recipe, {"best": 0.5})
    assert load_file(str(fixture))["w"].dtype == torch.float16
    assert fixture_digest(fixture) == recipe_digest(recipe)
    assert fixture_digest(tmp_path / "absent.safetensors") is None

    assert restore_fixture(fixture, tmp_path / "other.safetensors", {**recipe, "epochs": 8}) is None
    assert not (tmp_path / "other.safetensors").exists()
    assert restore_fixture(fixture, tmp_path / "restored.safetensors", recipe) == {"best": 0.5}
    restored = load_file(str(tmp_path / "restored.safetensors"))
    assert restored["w"].dtype == torch.float32 and torch.equal(restored["w"], weights["w"].half().float())
    assert torch.equal(restored["steps"], weights["steps"])
    with safe_open(str(tmp_path / "restored.safetensors"), framework="pt") as f:
        assert f.metadata() == {"head": json.dumps("pixel-seg")}  # the fixture keys are gone


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("unified-*.safetensors")), ids=lambda p: p.name)
def test_committed_fixtures_carry_the_digest_of_their_recipe(path):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert recipe_digest(json.loads(meta["fixture_recipe"])) == fixture_digest(path)
