"""benchmarks/seed_agreement.py's per-sentence diagnosis (point 4(b) of "Explaining a
prediction"): a sentence below 0.90 between seeds is put down to a flat objective when its two
answers agree within their error bars, to several optima when a seed flags it ambiguous, and
to an unsettled run when the answers differ beyond their error bars."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def agreement(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("seed_agreement")


def _result(log_sigma: torch.Tensor, se: float, ambiguous: bool = False) -> SimpleNamespace:
    """A one-sentence result with the fields held_back reads (one padded token at the end)."""
    w = len(log_sigma)
    return SimpleNamespace(mask=torch.tensor([[True] * w + [False]]),
                           sigma=torch.cat([log_sigma, torch.zeros(1)]).exp()[None, :, None],
                           log_sigma_se=torch.full((1, w + 1, 1), se), saturated=torch.zeros(1, w + 1, dtype=torch.bool),
                           ambiguous=torch.tensor([ambiguous]))


def _rho(agreement, r0, r1) -> list[float]:
    m = r0.mask[0]
    return [agreement.spearman(r0.sigma[0][m], r1.sigma[0][m])]


def test_words_closer_than_their_error_bars_are_a_flat_objective(agreement):
    gen = torch.Generator().manual_seed(0)
    truth = torch.linspace(-1.0, -0.8, 12)  # twelve words 0.018 apart, error bars 0.1
    r0, r1 = (_result(truth + 0.1 * torch.randn(12, generator=gen), 0.1) for _ in range(2))
    rho = _rho(agreement, r0, r1)
    assert rho[0] < 0.90
    (row,) = agreement.held_back(r0, r1, rho)
    assert row["held_back_by"] == "flat objective" and row["words"] == 12 and row["chi2_p"] >= 0.01
    assert row["expected_spearman"] < 0.90  # the error bars alone predict the shortfall
    assert agreement.held_back(r0, r1, [0.95]) == []  # a sentence at or above 0.90 is not listed


def test_answers_apart_beyond_their_error_bars_are_not_settled_or_several_optima(agreement):
    truth = torch.linspace(-3.0, 0.0, 10)  # well spread, error bars 0.01
    moved = truth.clone()
    moved[[0, 9]] = moved[[9, 0]]  # the other seed swaps the extremes: 300 SE apart
    r0, r1 = _result(truth, 0.01), _result(moved, 0.01)
    rho = _rho(agreement, r0, r1)
    (row,) = agreement.held_back(r0, r1, rho)
    assert row["held_back_by"] == "not settled" and row["chi2_p"] < 0.01
    assert row["expected_spearman"] > 0.95  # the error bars would have ordered them
    (row,) = agreement.held_back(r0, _result(moved, 0.01, ambiguous=True), rho)
    assert row["held_back_by"] == "several optima"


def test_words_without_a_measured_error_bar_are_left_out_and_none_left_is_said(agreement):
    truth = torch.linspace(-3.0, 0.0, 10)
    moved = truth.clone()
    moved[[0, 9]] = moved[[9, 0]]
    r0, r1 = _result(truth, 0.01), _result(moved, 0.01)
    rho = _rho(agreement, r0, r1)
    r0.log_sigma_se[0, [0, 9]] = float("nan")  # the two swapped words: no measured error bar
    (row,) = agreement.held_back(r0, r1, rho)
    assert row["held_back_by"] == "flat objective" and row["chi2_p"] > 0.99  # the other eight agree exactly
    r0.saturated[0, :10] = True
    (row,) = agreement.held_back(r0, r1, rho)
    assert row["held_back_by"] == "no free word" and row["chi2_p"] is None
