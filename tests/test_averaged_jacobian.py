"""The control variate on the noise-averaged Jacobian (``control_variate="averaged"``)."""

import warnings

import pytest
import torch
from torch import nn

from captum_entropy import EntropyAttribution
from captum_entropy.objective import AveragedJacobian, Linearization, SampledDistortion, noise
from captum_entropy.optim_settings import OptimSettings

from .tiny_models import bert_logits


class Kinked(nn.Module):
    """One logit ``Σ_t relu(w·x_t)`` (B, 1): at ``x_t = 0`` the clean gradient is 0, while the
    noise sees ``w`` half of the time."""

    def __init__(self, dims: int = 6, seed: int = 0):
        super().__init__()
        self.emb = nn.Identity()
        self.register_buffer("w", torch.randn(dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))

    def forward(self, x):
        return torch.relu(self.emb(x) @ self.w).sum(-1, keepdim=True)


def _distortion(model, x, jac):
    """A :class:`SampledDistortion` of ``model`` at ``x`` (B, T, K) with the control variate on ``jac``."""
    b, t, k = x.shape
    with torch.no_grad():
        clean = model(x)
    a = jac.pow(2).sum(-1, keepdim=True)
    lin = Linearization(a, torch.zeros_like(a), jac[:, None], torch.ones(b, dtype=torch.bool))
    return SampledDistortion(x, clean, lambda z, rows: model(z), lin, torch.float64)


def test_the_averaged_jacobian_is_the_mean_gradient_over_the_noisy_points():
    """Read off the step's own backward pass (``∂D̂/∂x̃ = (2/S)·Δ·∇f``), it equals the gradient
    of the feature averaged over the same noisy points, computed directly."""
    model = Kinked()
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.ones(2, 4, dtype=torch.bool)
    dist = _distortion(model, x, torch.zeros_like(x))
    averaged = AveragedJacobian(dist, mask, torch.ones(2, 1, dtype=torch.bool), per_element=False, decay=0.0)
    rows = torch.arange(2)
    eps = noise([torch.Generator().manual_seed(i) for i in range(2)], rows, mask, (32, 4, 6), torch.float64)
    u = torch.full((2, 4, 1), -0.5, dtype=torch.float64, requires_grad=True)
    d = dist(u, rows, eps, keep=True)
    inputs, change = dist.kept
    (grad_input,) = torch.autograd.grad(d.sum(), inputs)
    averaged.update(rows, grad_input, change)
    z = (x[:, None] + u.detach().exp()[:, None] * eps).reshape(-1, 4, 6).requires_grad_(True)
    (direct,) = torch.autograd.grad(model(z).sum(), z)
    expected = direct.reshape(2, 32, 4, 6).mean(1)
    assert torch.allclose(dist.lin.jac[:, 0], expected, atol=1e-10)
    assert torch.allclose(dist.lin.a[..., 0], expected.pow(2).sum(-1), atol=1e-10)


def test_any_fixed_jacobian_keeps_the_estimate_unbiased_and_the_averaged_one_removes_more_variance():
    """The closed form of the control variate is exact for any fixed Jacobian, so ``D̂`` averages
    to the plain ``E[Δ²]``; at a kink (clean gradient 0) only the averaged Jacobian predicts the
    change, and the gradient estimate's variance falls by far."""
    model = Kinked()
    x = torch.zeros(1, 3, 6, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    rows = torch.arange(1)
    u = torch.tensor([[[-0.2], [0.1], [0.3]]], dtype=torch.float64)
    half_w = 0.5 * model.w.expand(1, 3, 6)  # E[∇relu(w·σε)] = w/2
    jacobians = {"clean": torch.zeros_like(x), "averaged": half_w,
                 "arbitrary": torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)}
    gen = torch.Generator().manual_seed(11)
    draws = [noise([gen], rows, mask, (64, 3, 6), torch.float64, antithetic=True) for _ in range(300)]
    est, grads = {}, {}
    for name, jac in jacobians.items():
        dist = _distortion(model, x, jac)
        values, gs = [], []
        for eps in draws:
            leaf = u.clone().requires_grad_(True)
            d = dist(leaf, rows, eps)
            (g,) = torch.autograd.grad(d.sum(), leaf)
            values.append(float(d.detach()))
            gs.append(g[0, :, 0])
        est[name], grads[name] = torch.tensor(values, dtype=torch.float64), torch.stack(gs)
    plain = est["clean"]  # a zero Jacobian: the control variate is off
    for name in ("averaged", "arbitrary"):
        diff = est[name].mean() - plain.mean()
        se = (est[name] - plain).std() / len(draws) ** 0.5
        assert abs(float(diff)) < 4 * float(se) + 1e-12, (name, float(diff), float(se))
        assert abs(float(grads[name].mean(0).sub(grads["clean"].mean(0)).abs().max())) < 0.05 * float(grads["clean"].mean(0).abs().min())
    assert (grads["averaged"].var(0) < 0.5 * grads["clean"].var(0)).all()  # per word (measured: 2.3–2.9× less)


def test_on_a_linear_logit_the_averaged_control_variate_gives_the_clean_answer():
    """The Jacobian of a linear feature is the same at every noisy point."""
    from tests.test_fixed_draws import LinearLogit

    model = LinearLogit(tokens=5, dims=4).float()
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    ea = EntropyAttribution(model, model.emb)
    kw = dict(feature_std=torch.tensor(1.0), max_sigma=10.0, seed=0)
    clean = ea.attribute_result(x, **kw)
    averaged = ea.attribute_result(x, control_variate="averaged", **kw)
    assert torch.allclose(clean.sigma, averaged.sigma, rtol=1e-5, atol=0)


def test_with_the_averaged_control_variate_a_batch_equals_each_sentence_alone(bert, bert_batch):
    ids, mask = bert_batch
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings)
    kw = dict(target=0, control_variate="averaged", max_steps=30, starts=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **kw)
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            alone = ea.attribute_result(ids[b : b + 1, :n], additional_forward_args=(mask[b : b + 1, :n],), **kw)
            assert torch.allclose(batched.sigma[b, :n], alone.sigma[0], rtol=1e-4, atol=0), b
            assert batched.steps[b] == alone.steps[0]
        plain = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **{**kw, "control_variate": "clean"})
    assert not torch.allclose(plain.sigma, batched.sigma, rtol=1e-4, atol=0)  # the option does something here


def test_control_variate_names_its_choices():
    with pytest.raises(ValueError, match=r"control_variate must be one of \('clean', 'averaged'\), got 'mean'"):
        OptimSettings(control_variate="mean")


def test_within_a_newton_step_every_distortion_sees_the_same_jacobian_and_the_update_comes_last(monkeypatch):
    """The variate is built from *earlier* steps only: a leak of this step's draws into its own
    later evaluations (d1, d2, the held-up test) would bias them, and no answer-level test sees it."""
    import captum_entropy.objective as objective

    events = []
    real_call, real_update = objective.SampledDistortion.__call__, objective.AveragedJacobian.update

    def call(self, u, rows, eps, keep=False):
        events.append(("keep" if keep else "eval", self.lin.jac.clone()))
        return real_call(self, u, rows, eps, keep)

    def update(self, rows, grad_input, change):
        events.append(("update", None))
        return real_update(self, rows, grad_input, change)

    monkeypatch.setattr(objective.SampledDistortion, "__call__", call)
    monkeypatch.setattr(objective.AveragedJacobian, "update", update)
    model = Kinked()
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        EntropyAttribution(model, model.emb).attribute_result(
            x, feature_std=torch.tensor(1.0), max_sigma=10.0, control_variate="averaged", max_steps=6, starts=1,
            early_stop=False)
    steps = []
    for kind, jac in events:
        if kind == "keep":
            steps.append([])
        steps[-1].append((kind, jac))
    assert len(steps) == 6
    for i, step in enumerate(steps):
        kinds = [k for k, _ in step]
        assert kinds[-1] == "update" and kinds.count("update") == 1 and "eval" in kinds, kinds
        first = step[0][1]
        assert all(torch.equal(jac, first) for k, jac in step if k != "update"), i
    assert not torch.equal(steps[0][0][1], steps[1][0][1])  # the update did change it between steps


def test_the_update_is_a_bias_corrected_moving_average_per_row_with_padding_and_per_element():
    """Two steps on a subset of rows, decay 0.5, a padded token, one σ per element: the
    Jacobian is (β(1−β)·m₁ + (1−β)·m₂) / (β(1−β) + (1−β)), 0 at padding, other rows untouched,
    and the closed form's coefficient its element-wise square."""
    b, t, k, s = 3, 4, 5, 16
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(b, t, k, generator=gen, dtype=torch.float64)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 3] = False
    start = torch.randn(b, t, k, generator=gen, dtype=torch.float64).masked_fill(~mask[:, :, None], 0.0)
    dist = _distortion(Kinked(dims=k), x, start)
    dist.lin.a = start.pow(2)  # per element
    averaged = AveragedJacobian(dist, mask, torch.ones(b, 1, dtype=torch.bool), per_element=True, decay=0.5)
    rows = torch.tensor([0, 1])
    means = []
    for step in range(2):
        eps = noise([torch.Generator().manual_seed(10 * step + i) for i in range(b)], rows, mask, (s, t, k), torch.float64)
        u = torch.full((2, t, k), -0.3, dtype=torch.float64, requires_grad=True)
        d = dist(u, rows, eps, keep=True)
        inputs, change = dist.kept
        (grad_input,) = torch.autograd.grad(d.sum(), inputs)
        z = (x[rows, None] + u.detach().exp()[:, None] * eps).reshape(-1, t, k).requires_grad_(True)
        (direct,) = torch.autograd.grad(Kinked(dims=k)(z).sum(), z)
        means.append(direct.reshape(2, s, t, k).mean(1))
        averaged.update(rows, grad_input, change)
    beta = 0.5
    expected = (beta * (1 - beta) * means[0] + (1 - beta) * means[1]) / (beta * (1 - beta) + (1 - beta))
    expected = expected.masked_fill(~mask[rows][:, :, None], 0.0)
    assert torch.allclose(dist.lin.jac[rows, 0], expected, atol=1e-10)
    assert torch.allclose(dist.lin.a[rows], expected.pow(2), atol=1e-10)
    assert (dist.lin.jac[1, 0, 3] == 0).all()
    assert torch.equal(dist.lin.jac[2, 0], start[2]) and torch.equal(dist.lin.a[2], start[2].pow(2))


def test_a_dead_region_counts_as_a_zero_gradient_so_the_average_is_steins():
    """At a ReLU's kink half the draws change nothing and have no gradient: the average over all
    draws is w/2 (Stein's E[∇f]), not w (the average over the draws that changed)."""
    model = Kinked(dims=6)
    x = torch.zeros(1, 1, 6, dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    dist = _distortion(model, x, torch.zeros_like(x))
    averaged = AveragedJacobian(dist, mask, torch.ones(1, 1, dtype=torch.bool), per_element=False, decay=0.0)
    rows = torch.arange(1)
    eps = noise([torch.Generator().manual_seed(0)], rows, mask, (4096, 1, 6), torch.float64, antithetic=True)
    u = torch.zeros(1, 1, 1, dtype=torch.float64, requires_grad=True)
    d = dist(u, rows, eps, keep=True)
    inputs, change = dist.kept
    (grad_input,) = torch.autograd.grad(d.sum(), inputs)
    averaged.update(rows, grad_input, change)
    assert torch.allclose(dist.lin.jac[0, 0, 0], 0.5 * model.w, atol=1e-12)  # antithetic: exactly half active


def test_the_averaged_control_variate_is_refused_where_no_newton_step_uses_it():
    from tests.test_fixed_draws import LinearLogit

    model = LinearLogit(tokens=3, dims=4).float()
    x = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(3))
    ea = EntropyAttribution(model, model.emb)
    for kw in ({"method": "linearized"}, {"update": "fixed_draws"}):
        with pytest.raises(ValueError, match="control_variate='averaged' is a setting of newton's steps"):
            ea.attribute_result(x, feature_std=torch.tensor(1.0), max_sigma=10.0, control_variate="averaged", **kw)
