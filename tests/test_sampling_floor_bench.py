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


def test_variance_reductions_quasi_random_draws_are_standard_normal_pairs_along_the_directions(monkeypatch):
    """benchmarks/variance_reduction.py's Sobol draws: antithetic pairs, padding 0, each
    coordinate standard normal across scramblings, and rotated so that a token's first
    coordinate lies along its direction (the reflection maps e₁ onto it)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    vr = importlib.import_module("variance_reduction")
    mask = torch.tensor([[True, True, True, False]])
    direction = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    eps = vr.quasi_noise(mask, (8, 4, 5), 1, torch.float64, direction)
    assert torch.equal(eps[0, 4:], -eps[0, :4]) and (eps[0, :, 3] == 0).all()
    plain = vr.quasi_noise(mask, (8, 4, 5), 1, torch.float64, None)
    along = (eps[0, :4, :3] * direction[0, None, :3]).sum(-1)
    assert torch.allclose(along, plain[0, :4, :3, 0], atol=1e-12)  # first coordinate → the direction
    assert torch.allclose(eps.norm(dim=-1), plain.norm(dim=-1), atol=1e-12)  # a reflection keeps lengths
    many = torch.cat([vr.quasi_noise(mask, (64, 4, 5), seed, torch.float64, None)[0, :32, :3] for seed in range(40)])
    assert abs(float(many.mean())) < 0.02 and abs(float(many.std()) - 1) < 0.02
