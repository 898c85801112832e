"""The fixed-draw (sample-average) solver, one start: a sentence's σ on draws fixed once.

Its problem, step, stopping test and error bars only make sense together.
:mod:`captum_entropy.fixed_draw_answer` builds one sentence's whole answer from it (the draws
grown to a precision, other starts, the ambiguity flag).

The constrained problem of :mod:`captum_entropy.optim` (maximise ``mean_p log σ_p`` subject to
``D(σ) = τ`` and ``σ ≤ cap``) is solved on a fixed set of noise draws, so the objective is a
deterministic, smooth function of ``u = log σ``:

* **Draws.** ``n_draws`` standard-normal draws in antithetic pairs (``ε``, ``−ε``: the odd terms of
  the feature's expansion cancel; each pair side by side, so every even prefix is antithetic),
  from the sentence's own generator, so batching never changes an answer. Where the exact
  Jacobian ``J`` of the feature is known, its linear part is computed in closed form and only
  the rest is sampled (a control variate whose weight β is measured on the draws and frozen
  while a solve runs).
* **Steps.** Each evaluation runs the draws through the model once, forward and backward, and
  gives the distortion, its gradient and a Gauss–Newton curvature that sees interactions between
  words: one backward pass yields every draw's Jacobian ``z_s = ∂r_s/∂u`` (a draw is a batch
  row), so ``H = mean_s(2·z_s z_sᵀ + diag(∂r_s²/∂u))``, exact for a feature linear in the noise.
  The step solves the quadratic model exactly (the constraint is a quadratic, the bounds an
  active set: words at the cap are released when the KKT sign says so), inside a trust region,
  then moves every free word by one common shift to land on ``D = τ`` (one more forward) and is
  accepted only if the merit (mean log σ less ``|log(D/τ)|``, an exact penalty) improves.
* **Stopping.** A KKT test on the fixed-draw objective: the RMS over words of ``½·log(c/g_p)``
  (``c`` the free words' common gradient; at the cap only a push down counts) together with
  ``½·log(D/τ)`` below ``tol``.
* **Error bars.** The delta method on the KKT conditions (:func:`standard_errors`): the sampling
  error of the gradient and of ``D`` (over antithetic pairs) carried through their Jacobian gives a
  standard error of each ``log σ``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

TIE = 1e-6  # relative: merits this close are equal


def below_cap(u: Tensor, cap: float) -> Tensor:
    """The words free to move: log σ below the cap."""
    return u < cap - 1e-6


@dataclass
class Evaluation:
    u: Tensor
    d: float
    g: Tensor | None = None
    h: Tensor | None = None
    psi: Tensor | None = None  # (pairs, P + 1): per-pair sampled gradient and distortion


class FixedDrawProblem:
    """The distortion of one sentence on fixed draws: values, gradients, curvature.

    Args:
        values: (1, T, K) clean layer value of the sentence (T may include padding).
        idx: (P,) positions of its real tokens.
        feature_fn: ``feature_fn(x (R, T, K)) -> (R, M)`` the normalised feature.
        clean: (M,) the normalised clean feature.
        jac: (M, T, K) exact Jacobian of the normalised feature, or None.
        generator: the sentence's own generator.
        dtype: float dtype of the computation (float32 or float64).
    """

    def __init__(self, values: Tensor, idx: Tensor, feature_fn: Callable[[Tensor], Tensor], clean: Tensor,
                 jac: Tensor | None, generator: torch.Generator, dtype: torch.dtype) -> None:
        self.values, self.idx, self.feature_fn, self.gen, self.dtype = values, idx, feature_fn, generator, dtype
        self.clean = clean.to(dtype)
        self.m = clean.shape[-1]
        self.k = values.shape[-1]
        self.jac = None if jac is None else jac[:, idx].to(dtype)  # (M, P, K)
        self.a = None if self.jac is None else self.jac.pow(2).sum((0, 2)).double()  # (P,)
        self.eps = torch.empty((0, len(idx), self.k), device=values.device, dtype=dtype)
        self.w = torch.empty((0, self.m), device=values.device, dtype=dtype)
        self.beta = 0.0
        self.cap = math.inf  # log of the σ cap, set by explain_sentence (words at it stay out of the control variate)
        self.cv_words = torch.ones(len(idx), device=values.device, dtype=dtype)  # words in the control variate
        self._pairs = torch.empty((0,), dtype=torch.long, device=values.device)  # pair index of each draw

    @property
    def n_draws(self) -> int:
        return self.eps.shape[0]

    def add_draws(self, n: int) -> None:
        """Append ``n`` draws: ``n/2`` antithetic pairs (ε, −ε) sharing a Rademacher sketch vector,
        each pair's two draws side by side, so every even prefix of the draws is antithetic too."""
        half = n // 2
        dev = self.values.device
        e = torch.randn((half, len(self.idx), self.k), generator=self.gen, device=dev, dtype=self.dtype)
        if self.m == 1:
            w = torch.ones((half, 1), device=dev, dtype=self.dtype)
        else:
            w = torch.randint(0, 2, (half, self.m), generator=self.gen, device=dev).to(self.dtype) * 2 - 1
        self.eps = torch.cat([self.eps, torch.stack([e, -e], 1).flatten(0, 1)])
        self.w = torch.cat([self.w, w.repeat_interleave(2, 0)])
        base = self._pairs.max() + 1 if len(self._pairs) else 0
        self._pairs = torch.cat([self._pairs, (torch.arange(half, device=dev) + base).repeat_interleave(2)])

    def prefix(self, n: int) -> "FixedDrawProblem":
        """The same problem on its first ``n`` draws (even: whole antithetic pairs; a copy that
        does not grow with this one), sharing the rest, the control variate's frozen weight included."""
        part = copy.copy(self)
        part.eps, part.w, part._pairs = self.eps[:n], self.w[:n], self._pairs[:n]
        return part

    def measure_beta(self, u: Tensor) -> None:
        """Freeze the control variate's weight at ``u`` (Cov/Var of the two sampled terms, in [0, 1])."""
        if self.jac is None:
            self.beta = 0.0
            return
        # words at the cap are far outside the linear regime: the linear term is theirs to miss
        self.cv_words = below_cap(u, self.cap).to(self.dtype)
        sq, lsq = self._sampled(u, grad=False)[:2]
        dx, dl = sq - sq.mean(), lsq - lsq.mean()
        beta = float(((dx * dl).sum() / (dl * dl).sum().clamp_min(1e-300)).clamp(0.0, 1.0))
        self.beta = beta if math.isfinite(beta) else 0.0

    def _noisy(self, u: Tensor) -> tuple[Tensor, Tensor]:
        sigma = torch.exp(u).to(self.dtype)  # (P,)
        shift = sigma[None, :, None] * self.eps  # (S, P, K)
        x = self.values.to(self.dtype).expand(self.n_draws, -1, -1).clone()
        x[:, self.idx] = x[:, self.idx] + shift
        return x, sigma

    def _sampled(self, u: Tensor, grad: bool):
        x, sigma = self._noisy(u)
        if grad:
            x.requires_grad_(True)
        with torch.enable_grad() if grad else torch.no_grad():
            r = self.feature_fn(x.to(self.values.dtype)).to(self.dtype) - self.clean[None]  # (S, M)
        sq = r.detach().pow(2).sum(-1)
        if self.jac is not None:
            ell = torch.einsum("mpk,spk->spm", self.jac, self.eps) * (sigma * self.cv_words)[None, :, None]  # (S, P, M)
            big_l = ell.sum(1)  # (S, M)
            lsq = big_l.pow(2).sum(-1)
        else:
            ell = big_l = None
            lsq = torch.zeros_like(sq)
        return sq, lsq, r, x, sigma, ell, big_l

    def evaluate(self, u: Tensor, grad: bool = True, beta: float | None = None) -> Evaluation:
        """``D̂`` at ``u`` (P,), and with ``grad`` its gradient, curvature and per-pair terms.
        ``beta`` overrides the control variate's frozen weight for this call (0: the plain
        sample average)."""
        sq, lsq, r, x, sigma, ell, big_l = self._sampled(u, grad)
        beta = self.beta if beta is None else beta
        a = None if self.a is None else self.a * self.cv_words.double()
        exact = 0.0 if a is None else float((a * torch.exp(2 * u.double())).sum())
        d = beta * exact + float((sq - beta * lsq).double().mean())
        if not grad:
            return Evaluation(u, d)
        sig = sigma[None, :]
        with torch.enable_grad():  # the sums below join r's graph, also inside a caller's torch.no_grad()
            if self.m == 1:
                (zx,) = torch.autograd.grad(r.sum(), x)
            else:
                (zx,) = torch.autograd.grad((r * self.w).sum(), x, retain_graph=True)
                (gx,) = torch.autograd.grad(r.pow(2).sum(), x)
        z = (zx[:, self.idx].to(self.dtype) * self.eps).sum(-1) * sig  # (S, P) ∂r_s/∂u_p (m > 1: sketched, E[z zᵀ] = Jᵀ J)
        gam = 2 * r.detach() * z if self.m == 1 else (gx[:, self.idx].to(self.dtype) * self.eps).sum(-1) * sig
        z, gam = z.double(), gam.double()
        n = self.n_draws
        per_draw = gam
        h = (2 * z.T @ z + torch.diag(gam.sum(0))) / n
        if ell is not None and beta > 0:
            ell_w = (ell * self.w[:, None, :]).sum(-1).double()  # (S, P)
            l_ell = 2 * (big_l[:, None, :] * ell).sum(-1).double()  # ∂‖L_s‖²/∂u_p
            per_draw = gam - beta * l_ell
            h = h - beta * (2 * ell_w.T @ ell_w + torch.diag(l_ell.sum(0))) / n
            h = h + torch.diag(beta * 4 * a * torch.exp(2 * u.double()))
        g = per_draw.mean(0)
        if a is not None and beta > 0:
            g = g + beta * 2 * a * torch.exp(2 * u.double())
        sampled_d = (sq - beta * lsq).double()
        pairs = self._pairs
        n_pairs = int(pairs.max()) + 1
        psi = torch.zeros((n_pairs, len(u) + 1), dtype=torch.float64, device=u.device)
        psi[:, :-1].index_add_(0, pairs, per_draw)
        psi[:, -1].index_add_(0, pairs, sampled_d)
        return Evaluation(u, d, g, h, psi / 2)


# -- the quadratic model -----------------------------------------------------------------------


def _psd(h: Tensor) -> Tensor:
    """``h`` with its eigenvalues floored at a small share of the largest (a positive-definite model)."""
    h = torch.nan_to_num(0.5 * (h + h.T), nan=0.0, posinf=0.0, neginf=0.0)
    try:
        lam, vec = torch.linalg.eigh(h)
    except RuntimeError:  # ill-conditioned beyond LAPACK: keep the diagonal
        return torch.diag(h.diagonal().abs().clamp_min(max(float(h.diagonal().abs().max()) * 1e-6, 1e-12)))
    floor = max(float(lam.abs().max()) * 1e-6, 1e-12)  # absolute floor: a flat objective (H = 0) too
    return (vec * lam.clamp_min(floor)) @ vec.T


def model_step(g: Tensor, h: Tensor, d: float, tau: float, room: Tensor) -> Tensor:
    """The step Δ that maximises ``Σ Δ`` under ``d + gᵀΔ + ½ΔᵀhΔ ≤ τ`` and ``Δ ≤ room``.

    Exact for the quadratic model (``h`` positive definite). Free words: ``Δ_F = w·h_FF⁻¹1 − q``
    and the model is ``m_min + ½·w²·1ᵀh_FF⁻¹1``, so ``w`` comes in closed form. Words are pinned at
    their bound when the step would pass it and released when the KKT sign (the entropy pulls
    them up less than the distortion costs) says so.
    """
    p_n = len(g)
    pinned = room <= 1e-9
    delta = torch.zeros_like(g)
    for _ in range(2 * p_n + 2):
        free = ~pinned
        delta = torch.where(pinned, room, torch.zeros_like(room))
        if not free.any():
            if d + float(g @ room) + 0.5 * float(room @ h @ room) <= tau:
                break
            # every word at its bound and the model still above τ: free the one that buys the most
            pinned = pinned & ~(torch.arange(p_n, device=g.device) == int(g.argmax()))
            continue
        hff = h[free][:, free]
        b = g[free] + h[free][:, pinned] @ room[pinned]
        chol, info = torch.linalg.cholesky_ex(hff)
        jitter = 1e-12
        while int(info) != 0 and jitter < 1e6:  # rounding at the floor: add to the diagonal until it factors
            chol, info = torch.linalg.cholesky_ex(hff + jitter * (1 + float(hff.diagonal().abs().max())) * torch.eye(len(hff), dtype=hff.dtype, device=hff.device))
            jitter *= 100
        p = torch.cholesky_solve(torch.ones_like(b)[:, None], chol)[:, 0]
        q = torch.cholesky_solve(b[:, None], chol)[:, 0]
        c0 = d + float(g[pinned] @ room[pinned]) + 0.5 * float(room[pinned] @ h[pinned][:, pinned] @ room[pinned])
        m_min = c0 - 0.5 * float(b @ q)
        s = float(p.sum())
        w = math.sqrt(max(2 * (tau - m_min) / s, 0.0))
        delta[free] = w * p - q
        over = free & (delta > room + 1e-12)
        if over.any():
            # pin the word that passes its bound by the largest share of its way
            ratio = torch.where(over, (delta - room) / (delta.abs() + 1e-300), torch.full_like(delta, -1.0))
            pinned = pinned | (torch.arange(p_n, device=g.device) == int(ratio.argmax()))
            continue
        # a pinned word whose distortion cost exceeds the entropy's pull (1/w per unit) comes down;
        # where τ is out of the model's reach (w = 0) every pinned word that holds D up does
        slope = g + h @ delta
        pull = 1.0 - slope / w if w > 0 else -slope
        release = pinned & (pull < -1e-9)
        if not release.any():
            break
        pinned = pinned & ~(torch.arange(p_n, device=g.device) == int(torch.where(release, pull, torch.ones_like(pull)).argmin()))
    return delta if bool(torch.isfinite(delta).all()) else torch.zeros_like(delta)  # no step rather than a NaN one


def kkt_residual(g: Tensor, u: Tensor, cap: float, d: float, tau: float) -> float:
    """RMS over words of ``½·log(c/g_p)`` (at the cap only a push down) with ``½·log(D/τ)``.

    ``c`` is the free words' common gradient (their geometric mean): zero at a KKT point."""
    gap = 0.5 * math.log(max(d, 1e-300) / tau)
    free = below_cap(u, cap)
    g = g.clamp_min(1e-300)
    if not free.any():
        return abs(min(gap, 0.0)) if d <= tau * (1 + 1e-6) else abs(gap)
    c = torch.exp(torch.log(g[free]).mean())
    r = 0.5 * torch.log(c / g)
    r = torch.where(free, r, r.clamp_max(0.0)).clamp(-10.0, 10.0)
    return math.sqrt(float(r.pow(2).mean()) + gap * gap)


def standard_errors(ev: Evaluation, cap: float) -> Tensor:
    """Delta-method standard error of every log σ from the KKT conditions ``g_F = c·1``, ``D = τ``.

    The per-pair sampled gradient and distortion carry the sampling error; their Jacobian in
    ``(u_F, c)`` is ``[[H_FF, −1], [g_Fᵀ, 0]]``. Words at the cap get 0."""
    u, h, g, psi = ev.u, _psd(ev.h), ev.g, ev.psi
    free = below_cap(u, cap)
    se = torch.zeros_like(u, dtype=torch.float64)
    nf = int(free.sum())
    n = psi.shape[0]
    if nf == 0 or n < 2:
        return se
    kmat = torch.zeros((nf + 1, nf + 1), dtype=torch.float64, device=u.device)
    kmat[:nf, :nf] = h[free][:, free]
    kmat[:nf, nf] = -1.0
    kmat[nf, :nf] = g[free]
    cols = torch.cat([free.nonzero().flatten(), torch.tensor([len(u)], device=u.device)])
    centred = psi[:, cols] - psi[:, cols].mean(0)
    try:
        infl = torch.linalg.solve(kmat, centred.T)  # (nf + 1, n)
    except RuntimeError:
        return torch.full_like(se, math.inf)
    var = infl.pow(2).sum(1) / (n * (n - 1))
    se[free] = var[:nf].sqrt()
    return se


def _secant(h: Tensor, step: Tensor, dg: Tensor) -> Tensor:
    """``h`` corrected so that it maps the last step to the change of gradient it caused (a
    Powell-damped BFGS update): the model learns the curvature the Gauss–Newton part misses."""
    hs = h @ step
    shs = float(step @ hs)
    if shs <= 1e-300:
        return h
    sy = float(step @ dg)
    theta = 1.0 if sy >= 0.2 * shs else 0.8 * shs / (shs - sy)
    y = theta * dg + (1 - theta) * hs
    sy = float(step @ y)
    out = h - torch.outer(hs, hs) / shs + torch.outer(y, y) / sy if sy > 1e-12 * shs else h
    return out if bool(torch.isfinite(out).all()) else h


# -- one start ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolveSettings:
    tol: float = 0.01
    max_iter: int = 40
    radius: float = 1.0


def merit(u: Tensor, d: float, tau: float) -> float:
    """Mean log σ, less twice the distance to D = τ in the same units: maximal on the constraint
    surface. (A common shift ``t`` of every word raises the mean by ``t`` and ``½·log(D/τ)`` by
    about ``t``, so a weight of 1 would make points above the surface look as good as points on
    it; twice that is an exact penalty.)"""
    return float(u.mean()) - abs(math.log(max(d, 1e-300) / tau))


def _to_level(problem: FixedDrawProblem, u: Tensor, cap: float, tau: float, radius: float) -> Tensor:
    """Shift every free word by ``½·log(τ/D)`` (one forward pass), under the cap."""
    d = problem.evaluate(u, grad=False).d
    t = max(-radius, min(radius, 0.5 * math.log(tau / max(d, 1e-300))))
    free = below_cap(u, cap)
    if not free.any():
        free = torch.ones_like(free)
    return torch.where(free, (u + t).clamp_max(cap), u)


def solve(problem: FixedDrawProblem, u0: Tensor, cap: float, tau: float, s: SolveSettings,
          merits: list[float] | None = None) -> tuple[Evaluation, float, int, bool]:
    """Trust-region SQP from ``u0`` on the problem's current draws. Returns the final evaluation,
    its KKT residual, the iterations taken and whether the KKT test passed."""
    ev = problem.evaluate(_to_level(problem, u0.clamp_max(cap), cap, tau, radius=10.0), grad=True)
    radius = s.radius
    pair: tuple[Tensor, Tensor] | None = None  # the last step and its change of gradient
    for it in range(s.max_iter):
        res = kkt_residual(ev.g, ev.u, cap, ev.d, tau)
        if res < s.tol:
            return ev, res, it, True
        h = _psd(ev.h)
        if pair is not None:
            h = _psd(_secant(h, *pair))  # a secant pair of tiny or odd curvature must not leave h indefinite
        step = model_step(ev.g, h, ev.d, tau, cap - ev.u)
        big = float(step.abs().max())
        if big > radius:
            step = step * (radius / big)
        u1 = (ev.u + step).clamp_max(cap)
        u2 = _to_level(problem, u1, cap, tau, radius=radius)
        trial = problem.evaluate(u2, grad=True)
        pair = (trial.u - ev.u, trial.g - ev.g)
        if merit(trial.u, trial.d, tau) >= merit(ev.u, ev.d, tau) - TIE * (1 + abs(merit(ev.u, ev.d, tau))):
            ev = trial
            radius = min(2 * radius, 4.0) if big >= radius else radius
            if merits is not None:
                merits.append(-merit(ev.u, ev.d, tau))
        else:
            radius /= 4
            if radius < 1e-4:
                break
    res = kkt_residual(ev.g, ev.u, cap, ev.d, tau)
    return ev, res, s.max_iter, res < s.tol
