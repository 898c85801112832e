"""benchmarks/gpu_kit.py: MiniLM's checkpoint travels to a GPU machine with only the word-embedding
rows its sentences use; the rebuilt state must hold those rows and every other weight exactly,
and zeros elsewhere."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kit(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("gpu_kit")


def test_the_rows_that_travel_come_back_exactly_and_the_rest_are_zero(kit, tmp_path):
    from captum_entropy._io import load_tensors, save_tensors

    gen = torch.Generator().manual_seed(0)
    state = {kit.ROWS: torch.randn(50, 8, generator=gen), "bert.pooler.dense.weight": torch.randn(8, 8, generator=gen)}
    used = torch.tensor([0, 3, 7, 49])
    path = save_tensors(tmp_path / "packed.safetensors", kit.keep_rows(state, used), {"name": "minilm", "x": 1})
    packed, meta = load_tensors(path)
    assert packed["rows.values"].shape == (4, 8) and meta == {"name": "minilm", "x": 1}
    rebuilt = kit.all_rows(packed)
    assert set(rebuilt) == set(state)
    assert torch.equal(rebuilt["bert.pooler.dense.weight"], state["bert.pooler.dense.weight"])
    assert torch.equal(rebuilt[kit.ROWS][used], state[kit.ROWS][used])
    others = torch.ones(50, dtype=torch.bool)
    others[used] = False
    assert rebuilt[kit.ROWS].shape == (50, 8) and not rebuilt[kit.ROWS][others].any()
