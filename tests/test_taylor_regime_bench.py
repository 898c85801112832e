"""benchmarks/taylor_regime.py on features whose Taylor expansion is known: a logit quadratic in
the embeddings has an odd part that is exactly its linear term (ratio 1 between scales) and an
even part that is exactly its quadratic term (correlation 1 between scales)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def regime(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("taylor_regime")


def _zoo(curvature: float) -> SimpleNamespace:
    torch.manual_seed(0)
    embedding = nn.Embedding(12, 4)
    w, u = torch.randn(4), torch.randn(4)

    def forward(ids, mask):
        x = embedding(ids) * mask[..., None]
        logit = (x @ w).sum(1) + curvature * ((x @ u).sum(1)) ** 2
        return torch.stack([-logit, logit], 1)

    return SimpleNamespace(embedding=embedding, forward=forward)


def test_a_quadratic_logit_is_in_its_taylor_regime(regime):
    zm = _zoo(curvature=0.5)
    ids, mask = torch.tensor([[1, 5, 7, 2, 9]]), torch.ones(1, 5, dtype=torch.long)
    row = regime.sentence(zm, torch.tensor(1.0), ids, mask, target=1, draws=128, seed=0)
    assert row["tokens"] == 5
    for ratio in ("odd_linearity", "odd_linearity_half", "even_scaling", "even_scaling_half"):
        assert row[ratio] == pytest.approx(1.0, abs=1e-3), ratio
    assert row["even_corr"] == pytest.approx(1.0, abs=1e-4) and row["even_corr_half"] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < row["mean_share"] < 1.0 and row["mean_share"] == pytest.approx(row["mean_change"] ** 2, abs=2e-3)


def test_the_answer_is_measured_where_the_default_puts_sigma(regime):
    zm = _zoo(curvature=0.5)
    ids, mask = torch.tensor([[1, 5, 7, 2, 9]]), torch.ones(1, 5, dtype=torch.long)
    row = regime.sentence(zm, torch.tensor(1.0), ids, mask, target=1, draws=64, seed=0, at="answer")
    assert row["odd_linearity"] == pytest.approx(1.0, abs=1e-3) and row["even_corr"] == pytest.approx(1.0, abs=1e-4)


def test_a_logit_that_saturates_within_the_noise_is_not(regime):
    inner = _zoo(curvature=0.0)  # linear, then squashed hard: tanh(4·logit)
    zm = SimpleNamespace(embedding=inner.embedding, forward=lambda ids, mask: torch.tanh(4 * inner.forward(ids, mask)))
    ids, mask = torch.tensor([[1, 5, 7, 2, 9]]), torch.ones(1, 5, dtype=torch.long)
    row = regime.sentence(zm, torch.tensor(1.0), ids, mask, target=1, draws=128, seed=0)
    assert row["odd_linearity"] < 0.8 and row["even_corr"] < 0.9  # measured 0.51 and 0.57
