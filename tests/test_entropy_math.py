import math

import pytest
import torch

from captum_entropy import (
    bits_to_nats,
    entropy_from_sigma,
    entropy_to_importance,
    linear_optimal_sigma,
    nats_to_bits,
    sigma_from_entropy,
)


def test_gaussian_entropy_closed_form():
    sigma = torch.tensor([0.1, 1.0, 3.0])
    expected = 0.5 * torch.log(2 * math.pi * math.e * sigma**2)
    assert torch.allclose(entropy_from_sigma(sigma), expected)
    assert torch.allclose(sigma_from_entropy(entropy_from_sigma(sigma)), sigma)


def test_entropy_difference_is_log_ratio():
    # METHOD.md: H_i − H_j = K·log(σ_i/σ_j) for K dims sharing one σ
    k, si, sj = 7, torch.tensor(0.3), torch.tensor(0.05)
    diff = k * entropy_from_sigma(si) - k * entropy_from_sigma(sj)
    assert torch.allclose(diff, k * torch.log(si / sj))


def test_units_round_trip():
    assert math.isclose(nats_to_bits(math.log(2.0)), 1.0)
    assert math.isclose(bits_to_nats(nats_to_bits(1.7)), 1.7)


def test_linear_optimal_sigma_maximises_entropy_at_the_tolerance():
    a, tau = torch.tensor([3.0, 0.5]), 0.4
    best = linear_optimal_sigma(a, tolerance=tau)
    assert torch.isclose((a * best**2).sum(), torch.tensor(tau))  # spends exactly the budget
    # on the constraint surface, any other split of the budget has less entropy
    share = torch.linspace(0.01, 0.99, 9801)
    s0, s1 = (share * tau / a[0]).sqrt(), ((1 - share) * tau / a[1]).sqrt()
    grid_best = share[(s0.log() + s1.log()).argmax()]
    assert abs(float(grid_best) - 0.5) < 1e-3 and torch.isclose(best[0] ** 2 * a[0], torch.tensor(tau / 2))


def test_linear_optimal_sigma_penalised_minimises_its_loss():
    a, lam = torch.tensor([3.0]), 0.4
    best = linear_optimal_sigma(a, entropy_weight=lam)
    grid = torch.linspace(0.01, 2.0, 20001)
    loss = grid**2 * a - lam * torch.log(grid)
    assert abs(float(grid[loss.argmin()]) - float(best)) < 1e-3


def test_importance_orders_inversely_and_keeps_padding():
    h = torch.tensor([[2.0, 1.0, 5.0, float("nan")]])
    imp = entropy_to_importance(h, max_entropy=torch.tensor([5.0]))
    assert torch.isnan(imp[0, 3])
    assert imp[0, 1] == 1.0 and imp[0, 2] == 0.0 and imp[0, 1] > imp[0, 0] > imp[0, 2]


def test_importance_is_measured_from_the_cap_as_the_result_does():
    """entropy_to_importance with the cap's entropy is EntropyResult.importance(); without it the
    reference is the row's largest entropy, which now warns."""
    from captum_entropy import EntropyResult

    sigma = torch.tensor([[[0.5], [2.0], [1.0]]])
    b, t = sigma.shape[:2]
    zeros = torch.zeros(b, t)
    res = EntropyResult(sigma=sigma, mask=torch.ones(b, t, dtype=torch.bool), max_sigma=torch.tensor([4.0]),
                        saturated=zeros.bool(), steps=torch.zeros(b), converged=torch.ones(b, dtype=torch.bool),
                        losses=torch.zeros(b, 1), init_sigma=sigma, stop_reason=torch.zeros(b), stationarity=torch.zeros(b),
                        distortion=torch.zeros(b), linear_sigma=sigma, linear_log_se=zeros, n_dims=4)
    torch.testing.assert_close(entropy_to_importance(res.token_entropy, max_entropy=res.max_token_entropy),
                               res.importance())
    with pytest.deprecated_call(match="max_entropy"):
        entropy_to_importance(res.token_entropy)
