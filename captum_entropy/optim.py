"""Batched optimiser of the per-word noise scale σ. Knows no model: it takes callables.

For each sentence ``b`` it minimises (one independent problem per sentence, solved together)

    L_b(σ) = E_ε ‖f(x_b + σ⊙ε) − f(x_b)‖²  −  c_b · Σ_i mean_k log σ_ik

where ``f`` is the *normalised* feature (``feature_fn``; it already contains the division by the
feature std and the loss normalisation), ``i`` runs over the sentence's valid tokens and ``k``
over the ``K`` dimensions of a token (one shared σ per token, or one per element).

Two update rules:

* ``"fixed_point"`` (default): under the local quadratic model ``D ≈ Σ a_i σ_i²`` the
  optimum is ``σ_i² = c_i / (2 a_i)``. Each step estimates the curvature ``2a_i`` as
  ``(∂D/∂log σ_i) / σ_i²`` from that step's noise draws, keeps an exponential moving average of
  it, and moves log σ half-way towards the optimum it implies. Exact in one step for a linear
  feature (up to sampling noise), and it stays correct where the feature is non-linear
  because the curvature is re-measured at the current σ.
* ``"adam"``: plain Adam on the parameter (the reference's choice).

Every sentence owns a ``torch.Generator``: its probes and noise draws do not depend on which
other sentences share the batch, so batching never changes an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from .entropy import linear_optimal_sigma

FeatureFn = Callable[[Tensor, Tensor], Tensor]
"""``feature_fn(x, rows) -> (R, M)``: normalised feature of rows ``x`` (R, T, K); ``rows[r]``
is the sentence that row ``r`` belongs to."""

SATURATION = 0.99  # σ at or above this share of the cap counts as "fully forgotten"


@dataclass(frozen=True)
class OptimSettings:
    """Knobs of :func:`fit_sigma`. Defaults are the fast, converging mode.

    Attributes:
        per_element: one σ per embedding element (True) or one per token (False, the paper).
        n_samples: noise draws per sentence per step (extra batch rows).
        lr: Adam learning rate on the parameter (log σ, or θ for the sigmoid form).
        lr_decay_steps: lr is divided by ``sqrt(1 + step / lr_decay_steps)``; ``None``: constant.
        max_steps: most optimisation steps per sentence.
        check_every: window length (steps) for iterate averaging and the convergence check.
        tol: a sentence converges when the RMS difference between two consecutive window
            means of log σ is below ``tol`` (0.01 ≈ 1 % in σ).
        early_stop: stop updating (and computing) a sentence once it has converged.
        init: ``"linear"`` warm start from the linearised closed form (Hutchinson estimate of
            the Jacobian norms), or ``"random"`` (θ ~ N(0, 1) as in the reference).
        n_probes: random vector–Jacobian products per sentence for the warm start (a
            feature with at most this many elements gets its exact Jacobian instead).
        parametrization: ``"log"`` (σ = exp(u), projected onto σ ≤ cap) or ``"sigmoid"``
            (σ = cap · sigmoid(θ), the reference).
        select: ``"average"`` (mean of log σ over the last window) or ``"min_loss"`` (the
            state after the step with the lowest single-sample loss, the reference).
        update: ``"fixed_point"`` (curvature-based, default) or ``"adam"`` (uses ``lr``).
        curvature_decay: EMA factor of the curvature estimate (fixed-point update).
        damping: share of the way to the implied optimum taken per step (fixed-point update).
        max_jump: largest change of log σ per step (fixed-point update).
    """

    per_element: bool = False
    n_samples: int = 8
    lr: float = 0.05
    lr_decay_steps: float | None = 50.0
    max_steps: int = 400
    check_every: int = 25
    tol: float = 0.01
    early_stop: bool = True
    init: str = "linear"
    n_probes: int = 16
    parametrization: str = "log"
    select: str = "average"
    update: str = "fixed_point"
    curvature_decay: float = 0.95
    damping: float = 0.5
    max_jump: float = 1.0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        need(isinstance(self.n_samples, int) and self.n_samples >= 1, f"n_samples must be an int >= 1, got {self.n_samples!r}")
        need(isinstance(self.max_steps, int) and self.max_steps >= 1, f"max_steps must be an int >= 1, got {self.max_steps!r}")
        need(isinstance(self.check_every, int) and self.check_every >= 1, f"check_every must be an int >= 1, got {self.check_every!r}")
        need(isinstance(self.n_probes, int) and self.n_probes >= 1, f"n_probes must be an int >= 1, got {self.n_probes!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr!r}")
        need(self.tol >= 0, f"tol must be >= 0, got {self.tol!r}")
        need(self.lr_decay_steps is None or self.lr_decay_steps > 0, f"lr_decay_steps must be > 0 or None, got {self.lr_decay_steps!r}")
        need(self.init in ("linear", "random"), f"init must be 'linear' or 'random', got {self.init!r}")
        need(self.parametrization in ("log", "sigmoid"), f"parametrization must be 'log' or 'sigmoid', got {self.parametrization!r}")
        need(self.select in ("average", "min_loss"), f"select must be 'average' or 'min_loss', got {self.select!r}")
        need(self.update in ("fixed_point", "adam"), f"update must be 'fixed_point' or 'adam', got {self.update!r}")
        need(self.update == "adam" or self.parametrization == "log", "update='fixed_point' needs parametrization='log'")
        need(0 <= self.curvature_decay < 1, f"curvature_decay must be in [0, 1), got {self.curvature_decay!r}")
        need(0 < self.damping <= 1, f"damping must be in (0, 1], got {self.damping!r}")
        need(self.max_jump > 0, f"max_jump must be > 0, got {self.max_jump!r}")


@dataclass
class SigmaFit:
    """What :func:`fit_sigma` returns, one row per sentence (padding positions hold NaN)."""

    sigma: Tensor  # (B, T, K) or (B, T, 1)
    saturated: Tensor  # bool, same shape as sigma: σ at the cap (word forgotten)
    steps: Tensor  # (B,) steps taken
    converged: Tensor  # (B,) bool
    losses: Tensor  # (B, max_steps) loss per step, NaN after a sentence stopped
    init_sigma: Tensor = field(repr=False)  # σ before the first step


class _Adam:
    """Element-wise Adam whose rows (sentences) can be updated independently."""

    def __init__(self, like: Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0
        self.betas, self.eps = betas, eps

    def step(self, param: Tensor, grad: Tensor, rows: Tensor, lr: float) -> None:
        b1, b2 = self.betas
        self.t += 1
        m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.v[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.m[rows], self.v[rows] = m, v
        m_hat = m / (1 - b1**self.t)
        v_hat = v / (1 - b2**self.t)
        param[rows] -= lr * m_hat / (v_hat.sqrt() + self.eps)


def _to_sigma(param: Tensor, cap: Tensor, form: str) -> Tensor:
    return torch.exp(param) if form == "log" else cap * torch.sigmoid(param)


def _from_sigma(sigma: Tensor, cap: Tensor, form: str) -> Tensor:
    if form == "log":
        return torch.log(sigma)
    ratio = (sigma / cap).clamp(1e-6, 1 - 1e-6)
    return torch.log(ratio) - torch.log1p(-ratio)


def _noise(generators: Sequence[torch.Generator], rows: Tensor, mask: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Standard normal noise (len(rows), *shape[:-2]... ) drawn from each sentence's own generator.

    ``shape`` is ``(S, T, K)``; only the sentence's valid tokens get draws, padding stays 0, so
    a sentence draws the same numbers whether it is padded or not.
    """
    s, t, k = shape
    out = torch.zeros((len(rows), s, t, k), device=mask.device)
    for j, b in enumerate(rows.tolist()):
        valid = mask[b]
        n = int(valid.sum())
        draw = torch.randn((s, n, k), generator=generators[b], device=mask.device)
        out[j][:, valid] = draw
    return out


def _linear_init(
    values: Tensor, feature_mask: Tensor, feature_fn: FeatureFn, weight: Tensor, cap: Tensor,
    generators: Sequence[torch.Generator], settings: OptimSettings,
) -> Tensor:
    """σ from the linearised loss, with ``‖J_ik‖²`` from vector–Jacobian products.

    A sentence whose feature has at most ``n_probes`` (unpadded) elements gets its exact
    Jacobian (one-hot probes); a larger one a Hutchinson estimate with Rademacher probes, the
    lowest-variance choice. Probes cover only the sentence's own feature elements, so padding
    never changes its draws.
    """
    b, t, k = values.shape
    dev = values.device
    probes, rows, exact = [], [], []
    for i in range(b):
        idx = feature_mask[i].nonzero().flatten()
        m_i = len(idx)
        exact.append(m_i <= settings.n_probes)
        n_rows = m_i if exact[-1] else settings.n_probes
        p = torch.zeros((n_rows, feature_mask.shape[1]), device=dev)
        if exact[-1]:
            p[torch.arange(m_i, device=dev), idx] = 1.0
        else:
            signs = torch.randint(0, 2, (n_rows, m_i), generator=generators[i], device=dev)
            p[:, idx] = signs.float() * 2 - 1
        probes.append(p)
        rows.append(torch.full((n_rows,), i, dtype=torch.long, device=dev))
    rows_t = torch.cat(rows)
    x = values.detach()[rows_t].clone().requires_grad_(True)
    feat = feature_fn(x, rows_t)
    (grad,) = torch.autograd.grad((feat * torch.cat(probes).to(feat.dtype)).sum(), x)
    sq = grad.float().pow(2)
    jsq = torch.stack(
        [part.sum(0) if ex else part.mean(0) for part, ex in zip(sq.split([len(r) for r in rows]), exact)]
    )  # (B, T, K): ‖J_ik‖²
    if settings.per_element:
        sigma = linear_optimal_sigma(jsq, weight[:, None, None], n_dims=k)
    else:
        sigma = linear_optimal_sigma(jsq.sum(-1, keepdim=True), weight[:, None, None])
    return torch.minimum(torch.nan_to_num(sigma, nan=math.inf), cap[:, None, None]).clamp_min(1e-12 * cap[:, None, None])


def fit_sigma(
    values: Tensor,
    mask: Tensor,
    feature_fn: FeatureFn,
    clean: Tensor,
    feature_mask: Tensor,
    entropy_weight: Tensor,
    max_sigma: Tensor,
    generators: Sequence[torch.Generator],
    settings: OptimSettings = OptimSettings(),
    progress: Callable[[int], None] | None = None,
) -> SigmaFit:
    """Learn σ for a batch of sentences.

    Args:
        values: clean layer values ``x`` (B, T, K) where the noise goes.
        mask: (B, T) bool, True for real tokens.
        feature_fn: normalised feature of noisy rows, see :data:`FeatureFn`.
        clean: ``feature_fn`` of the clean values, (B, M).
        feature_mask: (B, M) bool, the feature elements that belong to the sentence (not padding).
        entropy_weight: ``c_b`` per sentence (B,).
        max_sigma: the cap on σ per sentence (B,).
        generators: one ``torch.Generator`` per sentence, on ``values.device``.
        settings: see :class:`OptimSettings`.
        progress: called with the number of steps done after each step.

    Returns:
        :class:`SigmaFit`.
    """
    s = settings
    b, t, k = values.shape
    dev = values.device
    ks = k if s.per_element else 1
    cap = max_sigma.float().to(dev)
    cap3 = cap[:, None, None]
    valid = mask[:, :, None].expand(b, t, ks)

    if s.init == "linear":
        sigma0 = _linear_init(values, feature_mask, feature_fn, entropy_weight, cap, generators, s)
    else:
        theta = torch.stack([torch.randn((t, ks), generator=g, device=dev) for g in generators])
        sigma0 = cap3 * torch.sigmoid(theta)
    sigma0 = torch.where(valid, sigma0, cap3.expand_as(sigma0))
    param = _from_sigma(sigma0, cap3, s.parametrization)
    log_cap = torch.log(cap3).expand_as(param)

    adam = _Adam(param)
    curv = torch.zeros_like(param)  # EMA of ∂D/∂u / σ² (= 2a under the local quadratic model)
    per_dim = entropy_weight.float()[:, None, None] / ks  # c_b / Ks: entropy pull per parameter
    losses = torch.full((b, s.max_steps), math.nan, device=dev)
    steps = torch.zeros(b, dtype=torch.long, device=dev)
    converged = torch.zeros(b, dtype=torch.bool, device=dev)
    window_sum = torch.zeros_like(param)
    prev_mean: Tensor | None = None
    final_log = torch.log(sigma0)
    best_loss = torch.full((b,), math.inf, device=dev)
    best_param = param.clone()
    active = torch.arange(b, device=dev)

    for step in range(s.max_steps):
        if len(active) == 0:
            break
        leaf = param[active].detach().requires_grad_(True)
        sigma = _to_sigma(leaf, cap3[active], s.parametrization)
        eps = _noise(generators, active, mask, (s.n_samples, t, k))  # (A, S, T, K)
        noisy = values[active, None].float() + sigma[:, None] * eps
        rows = active.repeat_interleave(s.n_samples)
        feat = feature_fn(noisy.reshape(-1, t, k).to(values.dtype), rows)
        dist = (feat.float() - clean[rows]).pow(2).sum(-1).reshape(len(active), s.n_samples).mean(1)
        log_sigma = torch.log(sigma).masked_fill(~valid[active], 0.0)
        entropy = log_sigma.mean(-1).sum(-1)
        loss = dist - entropy_weight[active] * entropy
        if not torch.isfinite(loss).all():
            bad = active[~torch.isfinite(loss)].tolist()
            raise FloatingPointError(
                f"the loss became non-finite at step {step} for sentence(s) {bad}; the feature "
                "probably overflows under noise: lower max_sigma or use feature_std"
            )
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        grad = grad.masked_fill(~valid[active], 0.0)
        lr = s.lr if s.lr_decay_steps is None else s.lr / math.sqrt(1.0 + step / s.lr_decay_steps)
        with torch.no_grad():
            if s.update == "adam":
                adam.step(param, grad, active, lr)
            else:
                sig2 = torch.exp(2 * leaf.detach())
                pull = per_dim[active].expand_as(sig2)
                ratio = (grad + pull) / sig2
                beta = s.curvature_decay
                curv[active] = beta * curv[active] + (1 - beta) * ratio
                est = curv[active] / (1 - beta ** (step + 1))
                target = torch.where(est > 0, 0.5 * torch.log(pull / est.clamp_min(1e-30)), log_cap[active])
                step_u = (target - param[active]).clamp(-s.max_jump, s.max_jump)
                param[active] += s.damping * step_u.masked_fill(~valid[active], 0.0)
            if s.parametrization == "log":
                param[active] = torch.minimum(param[active], log_cap[active])
            losses[active, step] = loss.detach()
            steps[active] += 1
            if s.select == "min_loss":
                better = loss.detach() < best_loss[active]
                improved = active[better]
                best_loss[improved] = loss.detach()[better]
                best_param[improved] = param[improved]
            window_sum[active] += torch.log(_to_sigma(param[active], cap3[active], s.parametrization))
            if (step + 1) % s.check_every == 0:
                mean = window_sum / s.check_every
                final_log[active] = mean[active]
                if prev_mean is not None:
                    sq = (mean - prev_mean).pow(2).masked_fill(~valid, 0.0).flatten(1).sum(1)
                    change = (sq / valid.flatten(1).sum(1)).sqrt()  # RMS change of log σ
                    done = active[change[active] < s.tol]
                    converged[done] = True
                    if s.early_stop:
                        active = active[~converged[active]]
                prev_mean = mean
                window_sum.zero_()
        if progress is not None:
            progress(step + 1)

    with torch.no_grad():
        if s.select == "min_loss":
            sigma = _to_sigma(best_param, cap3, s.parametrization)
        else:
            # sentences that never completed a window keep their latest state
            incomplete = steps < s.check_every
            final_log[incomplete] = torch.log(_to_sigma(param[incomplete], cap3[incomplete], s.parametrization))
            sigma = torch.exp(final_log)
        saturated = (sigma >= SATURATION * cap3) & valid
        if s.parametrization == "log":
            sigma = torch.where(saturated, cap3.expand_as(sigma), sigma)
        sigma = sigma.masked_fill(~valid, math.nan)
        sigma0 = sigma0.masked_fill(~valid, math.nan)
        if not torch.isfinite(sigma[valid]).all():
            raise FloatingPointError("σ became non-finite; this is a bug, please report it with the inputs")
    return SigmaFit(sigma=sigma, saturated=saturated, steps=steps, converged=converged, losses=losses, init_sigma=sigma0)
