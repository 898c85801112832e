"""benchmarks/sampling_floor.py measures the right thing: on a linear logit its relative variance
per draw has a closed form (W + 1 for W words at the optimum without the control variate, 0 with
it) and its homogeneity is 1."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest
import torch

from captum_entropy import ConvergenceWarning, EntropyAttribution

from .test_fixed_draws import LinearLogit

ROOT = Path(__file__).resolve().parents[1]


def _floor(monkeypatch, exact_jacobian: int, control_variate: bool = True) -> dict:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    floor = importlib.import_module("sampling_floor")
    model = LinearLogit(tokens=6, dims=8, seed=1)
    x = torch.randn(1, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ea = EntropyAttribution(model, model.emb)
    with floor.FitSpy() as spy, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # polish="always": on a linear feature the closed form on the averaged curvature is the optimum
        ea.attribute_result(x, feature_std=torch.tensor(1.0), max_sigma=1e3, tolerance=0.05,
                            exact_jacobian=exact_jacobian, polish="always", max_steps=200)
    (args, _, fit), = spy.calls
    g, d, seconds = floor.gradient_batches(args, fit, chunks=256, antithetic=False, seed=3,
                                             control_variate=control_variate)
    assert g.shape == (256, 1, 6) and seconds > 0
    free = args[1][0] & ~fit.saturated[0, :, 0]
    return floor.sentence_floor(g[:, 0], d[:, 0], free)


def test_without_the_control_variate_a_linear_logit_has_w_plus_one(monkeypatch):
    row = _floor(monkeypatch, exact_jacobian=0)
    assert 5.5 <= row["v"] <= 8.5, row  # W + 1 = 7 (256 batches: the variance to about ±9 %)
    assert abs(row["h"] - 1.0) < 0.1, row
    assert row["draws_0.05"] == pytest.approx(row["v"] / (4 * row["h"] ** 2 * 0.05**2))


def test_with_the_control_variate_a_linear_logit_has_no_sampling_noise(monkeypatch):
    row = _floor(monkeypatch, exact_jacobian=64)
    assert row["v"] < 1e-6 and abs(row["h"] - 1.0) < 1e-6, row


def test_the_floor_without_the_control_variate_drops_it_where_the_jacobian_is_known(monkeypatch):
    row = _floor(monkeypatch, exact_jacobian=64, control_variate=False)
    assert 5.5 <= row["v"] <= 8.5, row  # as without the exact Jacobian: W + 1 = 7


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    floor = importlib.import_module("sampling_floor")
    assert floor.median([4.0, 1.0, 3.0, 2.0]) == 2.5
