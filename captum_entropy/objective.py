"""The objective's pieces, for :mod:`captum_entropy.optim`: the linearised problem and the sampled distortion.

* the linearisation: ``‖Ĵ_p‖²`` per parameter from one batched backward pass (exact Jacobian
  or Hutchinson), and its closed-form optimum under the σ cap (water-filling);
* the distortion ``D̂(u)`` of the normalised feature on given noise draws, with the linear part
  in closed form where the exact Jacobian is known (a control variate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

FeatureFn = Callable[[Tensor, Tensor], Tensor]
"""``feature_fn(x, rows) -> (R, M)``: normalised feature of rows ``x`` (R, T, K); ``rows[r]``
is the sentence that row ``r`` belongs to."""
RELATIVE_SPREAD_FLOOR = 1e-2  # the control variate's weight is 0 where its term's spread is below this share of its mean


@dataclass
class Linearization:
    a: Tensor  # (B, T, Ks) ‖Ĵ_p‖²: the linear distortion per unit σ² of each parameter
    a_se: Tensor  # (B, T, Ks) its Monte-Carlo standard error (0 where exact)
    jac: Tensor | None  # (B, M, T, K) exact Jacobian (zeros for sentences without it)
    has_jac: Tensor  # (B,) bool


def linearize(
    values: Tensor, feature_mask: Tensor, feature_fn: FeatureFn, generators: Sequence[torch.Generator],
    exact_jacobian: int, n_probes: int, per_element: bool, dtype: torch.dtype,
) -> Linearization:
    """Jacobian norms of the normalised feature from one batched backward pass.

    A sentence whose feature has at most ``exact_jacobian`` (unpadded) elements gets one-hot
    probes (its exact Jacobian); a larger one ``n_probes`` Rademacher probes (Hutchinson, the
    lowest-variance choice). Probes cover only the sentence's own feature elements.
    """
    b, t, k = values.shape
    dev = values.device
    m = feature_mask.shape[1]
    probes, rows, exact = [], [], []
    for i in range(b):
        idx = feature_mask[i].nonzero().flatten()
        exact.append(len(idx) <= exact_jacobian)
        n_rows = len(idx) if exact[-1] else n_probes
        p = torch.zeros((n_rows, m), device=dev, dtype=dtype)
        if exact[-1]:
            p[torch.arange(len(idx), device=dev), idx] = 1.0
        else:
            signs = torch.randint(0, 2, (n_rows, len(idx)), generator=generators[i], device=dev)
            p[:, idx] = signs.to(dtype) * 2 - 1
        probes.append(p)
        rows.append(torch.full((n_rows,), i, dtype=torch.long, device=dev))
    rows_t = torch.cat(rows)
    with torch.enable_grad():
        x = values.detach()[rows_t].clone().requires_grad_(True)
        feat = feature_fn(x, rows_t)
        (grad,) = torch.autograd.grad((feat * torch.cat(probes).to(feat.dtype)).sum(), x)
    grad = grad.to(dtype)
    sq = grad.pow(2)
    if not per_element:
        sq = sq.sum(-1, keepdim=True)
    a, a_se, jacs = [], [], []
    n_out = max([len(r) for r, ex in zip(rows, exact) if ex] or [0])
    for part, g, ex in zip(sq.split([len(r) for r in rows]), grad.split([len(r) for r in rows]), exact):
        if ex:
            a.append(part.sum(0))
            a_se.append(torch.zeros_like(part[0]))
            jacs.append(torch.cat([g, g.new_zeros((n_out - len(g), t, k))]))
        else:
            a.append(part.mean(0))
            a_se.append(part.std(0) / math.sqrt(len(part)))
            jacs.append(grad.new_zeros((n_out, t, k)))
    has_jac = torch.tensor(exact, device=dev)
    jac = torch.stack(jacs) if has_jac.any() else None
    return Linearization(torch.stack(a), torch.stack(a_se), jac, has_jac)


def water_level(g: Tensor, room: Tensor, valid: Tensor, budget: Tensor) -> Tensor:
    """The common gradient level ``c`` at which the linear model spends exactly ``budget``.

    Each parameter ``p`` with gradient ``g_p = ∂D/∂u_p`` and headroom ``room_p = log cap − u_p``
    contributes ``c/2`` to D after the step ``½·log(c/g_p)``, or ``h_p = ½·g_p·e^{2·room_p}`` if
    that step would pass the cap. Solves ``Σ_p min(c/2, h_p) = budget`` per row (exact, by
    sorting); ``inf`` where every parameter fits at the cap.
    """
    g64 = g.double().clamp_min(0).flatten(1)
    h = 0.5 * g64 * torch.exp(2 * room.double().flatten(1).clamp_max(300))
    h = torch.where(valid.flatten(1), h, torch.full_like(h, math.inf))
    hs, _ = torch.sort(h, dim=1)
    n = valid.flatten(1).sum(1, keepdim=True).double()
    ranks = torch.arange(hs.shape[1], device=g.device, dtype=torch.float64)[None]
    finite = torch.where(torch.isfinite(hs), hs, torch.zeros_like(hs))
    before = torch.cumsum(finite, 1) - finite  # Σ of the k smallest (k = rank)
    half_c = (budget.double()[:, None] - before) / (n - ranks).clamp_min(1)
    prev = torch.cat([torch.full_like(hs[:, :1], -math.inf), hs[:, :-1]], 1)
    ok = (ranks < n) & (half_c > 0) & (prev <= half_c) & (half_c <= hs)
    first = torch.where(ok, ranks, torch.full_like(ranks, math.inf)).amin(1)
    level = torch.full((g.shape[0],), math.inf, dtype=torch.float64, device=g.device)
    found = torch.isfinite(first)
    level[found] = 2 * half_c[found].gather(1, first[found].long()[:, None])[:, 0]
    return level.to(g.dtype)


def step_to_level(g: Tensor, level: Tensor, max_jump: float) -> Tensor:
    """``½·log(c/g_p)``: the step of log σ that brings ``g_p`` to ``c`` under the linear model."""
    ratio = level.reshape(-1, *([1] * (g.dim() - 1))) / g.clamp_min(torch.finfo(g.dtype).tiny)
    return (0.5 * torch.log(ratio)).nan_to_num(nan=0.0, posinf=max_jump).clamp(-max_jump, max_jump)


def linear_solution(
    a: Tensor, valid: Tensor, log_cap: Tensor, tolerance: Tensor | None = None, pull: Tensor | None = None
) -> Tensor:
    """log σ that solves the linearised problem ``D = Σ_p a_p σ_p²`` exactly, caps included.

    Constrained (``tolerance`` τ per row): ``σ_p² = c / (2·a_p)`` with ``c`` water-filled so that
    ``D = τ`` (without caps: ``σ_p² = τ / (P·a_p)``, P parameters). Penalised (``pull`` w/P per
    row): ``σ_p² = pull / (2·a_p)``. Either way capped at ``log_cap``.

    >>> a = torch.tensor([[[4.0], [1.0]]])
    >>> valid = torch.ones(1, 2, 1, dtype=torch.bool)
    >>> linear_solution(a, valid, torch.tensor(10.0), tolerance=torch.tensor([0.5])).exp()
    tensor([[[0.2500],
             [0.5000]]])
    """
    cap = log_cap.expand_as(a)
    g = 2 * a * torch.exp(2 * cap)  # ∂D/∂u at the cap
    if tolerance is not None:
        level = water_level(g, torch.zeros_like(a), valid, tolerance)
    else:
        level = pull.to(a.dtype)
    step = step_to_level(g, level, max_jump=math.inf)
    return torch.where(valid, torch.minimum(cap + step, cap), cap)


def noise(generators: Sequence[torch.Generator], rows: Tensor, mask: Tensor, shape: tuple[int, ...], dtype,
          antithetic: bool = False) -> Tensor:
    """Standard normal noise (len(rows), S, T, K), drawn from each sentence's own generator.

    Only the sentence's valid tokens get draws, padding stays 0, so a sentence draws the same
    numbers whether it is padded or not. ``antithetic``: S/2 draws and their negatives (S even):
    in ``‖f(x + σε) − f(x)‖²`` the product of the linear and the quadratic part of the change is
    odd in ε and cancels within each pair.
    """
    s, t, k = shape
    out = torch.zeros((len(rows), s, t, k), device=mask.device, dtype=dtype)
    n = s // 2 if antithetic else s
    for j, b in enumerate(rows.tolist()):
        valid = mask[b]
        draw = torch.randn((n, int(valid.sum()), k), generator=generators[b], device=mask.device, dtype=dtype)
        out[j][:, valid] = torch.cat([draw, -draw]) if antithetic else draw
    return out


class SampledDistortion:
    """``D̂(u)`` on given draws, with the control variate where the exact Jacobian is known.

    ``D̂ = β·Σ_p a_p σ_p² + mean_s(‖Δ_s‖² − β·‖J(σ⊙ε_s)‖²)``: the linear part in closed form and
    only the rest sampled, with ``β = Cov/Var`` of the two sampled terms (the variance-optimal
    weight, estimated from the same draws, in [0, 1]).
    """

    def __init__(self, values: Tensor, clean: Tensor, feature_fn: FeatureFn, lin: Linearization, dtype) -> None:
        self.values, self.clean, self.feature_fn, self.lin, self.dtype = values, clean, feature_fn, lin, dtype
        self.kept: tuple[Tensor, Tensor] | None = None

    def __call__(self, u: Tensor, rows: Tensor, eps: Tensor, keep: bool = False) -> Tensor:
        """``D̂`` per row; ``keep``: also keep the noisy inputs (A·S, T, K), in the graph, and the
        changes of the feature (A, S, M), detached, as ``self.kept`` (for :class:`AveragedJacobian`)."""
        a, s, t, k = eps.shape
        sigma = torch.exp(u)  # (A, T, Ks)
        shift = sigma[:, None] * eps  # (A, S, T, K)
        noisy = (self.values[rows, None].to(self.dtype) + shift).reshape(-1, t, k)
        rep = rows.repeat_interleave(s)
        change = self.feature_fn(noisy.to(self.values.dtype), rep).to(self.dtype) - self.clean[rep].to(self.dtype)
        self.kept = (noisy, change.detach().reshape(a, s, -1)) if keep else None
        sq = change.pow(2).sum(-1).reshape(a, s)
        if self.lin.jac is None:
            return sq.mean(1)
        jac = self.lin.jac[rows]  # (A, M, T, K), zeros where not exact
        linear_sq = torch.einsum("amtk,astk->asm", jac, shift).pow(2).sum(-1)
        exact_linear = (self.lin.a[rows] * sigma.pow(2)).flatten(1).sum(1)
        # the control variate's weight: 1 where the feature is linear at this noise, towards 0
        # where the linear model no longer predicts it (it would then add variance, not remove it).
        # Where the linear term barely varies over the draws (two antithetic pairs can draw it
        # nearly equal) the ratio is rounding noise, which batching changes: there (spread below
        # 1 % of its mean, where the control variate has almost no variance to remove) the weight
        # is 0. A hard threshold, not a smooth floor: a real feature's spread is far above it
        # (a logit's: about √2 × its mean), so its answers stay the same bit for bit
        with torch.no_grad():
            dx, dl = sq - sq.mean(1, keepdim=True), linear_sq - linear_sq.mean(1, keepdim=True)
            spread = (dl * dl).sum(1)
            varies = spread > s * (RELATIVE_SPREAD_FLOOR * linear_sq.mean(1)).pow(2)
            weight = ((dx * dl).sum(1) / spread.clamp_min(torch.finfo(dl.dtype).tiny)).clamp(0.0, 1.0)
            weight = torch.where(varies, weight, torch.zeros_like(weight))
            weight = weight * self.lin.has_jac[rows]
        return weight * exact_linear + (sq - weight[:, None] * linear_sq).mean(1)


class AveragedJacobian:
    """The control variate on the Jacobian averaged over the noise rather than the clean one.

    By Stein's lemma ``E[∇f(x + σ⊙ε)]`` is the best linear predictor of the change
    ``f(x + σ⊙ε) − f(x)``; where the feature bends within the noise (ReLU, max-pooling,
    saturation) it predicts the change better than the Jacobian at the sentence, and the control
    variate removes more of the variance (``benchmarks/variance_reduction.py``). It is averaged
    over the noisy points of *earlier* steps (an exponential moving average, ``decay`` per step),
    so within a step it is fixed: the estimate of ``D`` and of its gradient stays unbiased, and
    its mean ``Σ_p ‖J̄_p‖² σ_p²`` stays in closed form. Sentences whose feature is one number (a
    logit) only: there the gradient at each noisy point is read off the backward pass the step
    makes anyway (``∂D̂/∂x̃_s = (2/S)·Δ_s·∇f(x̃_s)``); others keep the clean Jacobian.

    ``dist`` (with the exact Jacobian of some sentence: ``dist.lin.jac`` set) gets its own copy of
    the linearisation, which :meth:`update` overwrites row by row.
    """

    def __init__(self, dist: SampledDistortion, mask: Tensor, feature_mask: Tensor, per_element: bool,
                 decay: float) -> None:
        lin = dist.lin
        self.single = lin.has_jac & (feature_mask.sum(1) == 1)
        self.mask, self.per_element, self.decay = mask[:, :, None], per_element, decay
        dist.lin = Linearization(lin.a.clone(), lin.a_se, lin.jac.clone(), lin.has_jac)
        self.dist = dist
        self.total = torch.zeros_like(lin.jac[:, 0])  # (B, T, K)
        self.weight = torch.zeros(len(self.single), dtype=lin.a.dtype, device=lin.a.device)

    def update(self, rows: Tensor, grad_input: Tensor, change: Tensor) -> None:
        """Fold in one step's noisy gradients: ``grad_input`` is ``∂D̂/∂x̃`` on the inputs and
        ``change`` the changes that :class:`SampledDistortion` kept (``keep=True``); rows without a
        one-number feature are left as they are."""
        a, s, _ = change.shape
        take = self.single[rows]
        delta = change.sum(-1)  # (A, S): the one element's change
        grad = grad_input.reshape(a, s, *grad_input.shape[1:]).to(delta.dtype)
        # ∇f = ∂D̂/∂x̃ · S/(2Δ). A draw whose change is 0 or lost in rounding counts as a zero
        # gradient: right where the feature is flat there (a dead ReLU), a small error elsewhere,
        # and never a bias of D̂ (any fixed Jacobian keeps it unbiased); the mean is over all S
        usable = delta.abs() > 1e-3 * delta.pow(2).mean(1, keepdim=True).sqrt()
        factor = torch.where(usable, s / (2 * delta.where(usable, torch.ones_like(delta))), torch.zeros_like(delta))
        mean = (grad * factor[:, :, None, None]).mean(1)
        rows, mean = rows[take], mean[take]
        self.total[rows] = self.decay * self.total[rows] + (1 - self.decay) * mean
        self.weight[rows] = self.decay * self.weight[rows] + (1 - self.decay)
        jac = (self.total[rows] / self.weight[rows][:, None, None]).masked_fill(~self.mask[rows], 0.0)
        self.dist.lin.jac[rows, 0] = jac  # the one element's row (linearize puts it first)
        sq = jac.pow(2)  # (R, T, K)
        self.dist.lin.a[rows] = sq if self.per_element else sq.sum(-1, keepdim=True)
