"""The fixed-draw (sample-average) solver: one sentence's σ on draws fixed once, with error bars.

One idea, the solver, in one module (so over ~400 lines): its problem, step, stopping test, error
bars and starts only make sense together.

The constrained problem of :mod:`captum_entropy.optim` (maximise ``mean_p log σ_p`` subject to
``D(σ) = τ`` and ``σ ≤ cap``) is solved on a fixed set of noise draws, so the objective is a
deterministic, smooth function of ``u = log σ``:

* **Draws.** ``n_draws`` standard-normal draws in antithetic pairs (``ε``, ``−ε``: the odd terms of
  the feature's expansion cancel; each pair side by side, so every even prefix is antithetic),
  from the sentence's own generator, so batching never changes an answer. Where the exact Jacobian ``J`` of the feature is known, its linear part is computed
  in closed form and only the rest is sampled (a control variate whose weight β is measured on
  the draws and frozen while a solve runs).
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
* **Error bars.** The delta method on the KKT conditions: the sampling error of the gradient and
  of ``D`` (over antithetic pairs) carried through their Jacobian gives a standard error of each
  ``log σ``. The draws grow (to the count the errors ask for, in doublings) until the median
  standard error of the free words is below ``precision`` on at least :data:`MIN_DRAWS` draws
  (fewer pairs under-cover), or ``max_draws`` is reached.
* **Several optima.** After the main solve, ``starts − 1`` more starts: the linearised σ with one
  of the most-kept words dropped to the cap (redundant evidence: another word takes its place),
  solved first on a prefix of the draws and abandoned while far below the best; one that ends
  within reach is solved on all the draws. The best objective wins; another optimum within
  ``ambiguity_gap`` nats per dimension (compared on the same draws without the control variate)
  that keeps different words makes the sentence ``ambiguous``, with the words that trade off
  and the gap.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

TIE = 1e-6  # relative: merits this close are equal
TRADE = 0.5  # |Δ log σ| between two optima that makes a word one "that trades off"


@dataclass
class Solution:
    """One sentence's fixed-draw answer (vectors over the sentence's real tokens)."""

    u: Tensor  # log σ
    se: Tensor  # standard error of log σ (0 at the cap)
    objective: float  # mean log σ at D = τ on the draws (nats per dimension, up to a constant)
    distortion: float
    kkt: float  # the KKT residual of the final point
    converged: bool
    iterations: int
    n_draws: int
    ambiguous: bool
    gap: float  # objective gap to the runner-up optimum (NaN if none was found)
    alternative: Tensor  # log σ of the runner-up optimum (= u if none)
    trades: Tensor  # bool: the words whose σ differs between the two optima
    merits: list[float]  # −objective per accepted iteration of the main start


def below_cap(u: Tensor, cap: float) -> Tensor:
    """The words free to move: log σ below the cap."""
    return u < cap - 1e-6


@dataclass
class _Eval:
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

    def evaluate(self, u: Tensor, grad: bool = True) -> _Eval:
        """``D̂`` at ``u`` (P,), and with ``grad`` its gradient, curvature and per-pair terms."""
        sq, lsq, r, x, sigma, ell, big_l = self._sampled(u, grad)
        beta = self.beta
        a = None if self.a is None else self.a * self.cv_words.double()
        exact = 0.0 if a is None else float((a * torch.exp(2 * u.double())).sum())
        d = beta * exact + float((sq - beta * lsq).double().mean())
        if not grad:
            return _Eval(u, d)
        sig = sigma[None, :]
        if self.m == 1:
            (zx,) = torch.autograd.grad(r.sum(), x)
            z = (zx[:, self.idx].to(self.dtype) * self.eps).sum(-1) * sig  # (S, P) ∂r_s/∂u_p
            gam = 2 * r.detach() * z  # ∂r_s²/∂u_p
        else:
            (zx,) = torch.autograd.grad((r * self.w).sum(), x, retain_graph=True)
            z = (zx[:, self.idx].to(self.dtype) * self.eps).sum(-1) * sig  # sketched: E[z zᵀ] = Jᵀ J
            (gx,) = torch.autograd.grad(r.pow(2).sum(), x)
            gam = (gx[:, self.idx].to(self.dtype) * self.eps).sum(-1) * sig
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
        return _Eval(u, d, g, h, psi / 2)


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


def standard_errors(ev: _Eval, cap: float) -> Tensor:
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


def _merit(u: Tensor, d: float, tau: float) -> float:
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
          merits: list[float] | None = None) -> tuple[_Eval, float, int, bool]:
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
        if _merit(trial.u, trial.d, tau) >= _merit(ev.u, ev.d, tau) - TIE * (1 + abs(_merit(ev.u, ev.d, tau))):
            ev = trial
            radius = min(2 * radius, 4.0) if big >= radius else radius
            if merits is not None:
                merits.append(-_merit(ev.u, ev.d, tau))
        else:
            radius /= 4
            if radius < 1e-4:
                break
    res = kkt_residual(ev.g, ev.u, cap, ev.d, tau)
    return ev, res, s.max_iter, res < s.tol


# -- the whole answer for one sentence ---------------------------------------------------------


@dataclass(frozen=True)
class FixedDrawSettings:
    """Knobs of :func:`explain_sentence` (see :class:`~captum_entropy.optim.OptimSettings`)."""

    n_draws: int = 32
    max_draws: int = 2048
    precision: float = 0.1
    starts: int = 2
    ambiguity_gap: float = 0.1
    continuation: tuple[float, ...] = (0.25,)
    solve: SolveSettings = SolveSettings()


MIN_DRAWS = 128  # the delta method's error bars need about 64 antithetic pairs to cover as stated
SEARCH_DRAWS = 256  # other starts are tried on at most this many of the draws first


def _precise(problem: FixedDrawProblem, u: Tensor, cap: float, tau: float, s: FixedDrawSettings,
             merits: list[float] | None = None) -> tuple[_Eval, float, bool, Tensor, int]:
    """Solve from ``u``, adding draws until the median standard error of the free words' log σ
    is at most ``precision`` on at least :data:`MIN_DRAWS` draws (or ``max_draws`` is reached).
    The draws grow at once to the count the error bars ask for (standard errors fall as
    1/√draws; rounded up to a doubling), not one doubling at a time. The control variate's
    weight is measured at the start of each solve and frozen while it runs."""
    iters = 0
    least = min(MIN_DRAWS, s.max_draws)
    while True:
        problem.measure_beta(u)
        ev, res, n_it, ok = solve(problem, u, cap, tau, s.solve, merits)
        iters += n_it
        se = standard_errors(ev, cap)
        free = below_cap(ev.u, cap)
        median = float(se[free].median()) if free.any() else 0.0
        n = problem.n_draws
        if (median <= s.precision and n >= least) or n * 2 > s.max_draws:
            return ev, res, ok, se, iters
        need = max(n * (median / s.precision) ** 2 if math.isfinite(median) else math.inf, least)
        target = n * 2
        while target < need and target * 2 <= s.max_draws:
            target *= 2
        problem.add_draws(target - n)
        u = ev.u


def _plain_gap(problem: FixedDrawProblem, best: Tensor, other: Tensor, tau: float) -> float:
    """The merit of ``best`` less that of ``other``, both on the same draws without the control
    variate (its weight and words are tuned to one point; with a word at the cap that it counts,
    the other point's estimate would be unbiased but very noisy)."""
    beta, problem.beta = problem.beta, 0.0
    try:
        return _merit(best, problem.evaluate(best, grad=False).d, tau) - _merit(other, problem.evaluate(other, grad=False).d, tau)
    finally:
        problem.beta = beta


def _moved(u: Tensor, ref: Tensor, se: Tensor) -> Tensor:
    """The words whose log σ differs between two answers by more than :data:`TRADE` and 3 SE."""
    return (u - ref).abs() > torch.maximum(torch.full_like(se, TRADE), 3 * se)


def explain_sentence(problem: FixedDrawProblem, u_lin: Tensor, cap: float, tau: float,
                     s: FixedDrawSettings) -> Solution:
    """Solve one sentence: continuation from the linearised σ, draws doubled to ``precision``,
    other starts for other optima, error bars."""
    problem.add_draws(s.n_draws)
    problem.cap = cap
    merits: list[float] = []
    u_lin = u_lin.double().clamp_max(cap)
    u, iters = u_lin, 0
    # continuation: the linearised answer is exact as τ → 0; solve at smaller tolerances first
    for frac in s.continuation:
        problem.measure_beta(u)
        ev, _, n_it, _ = solve(problem, u, cap, tau * frac, s.solve)
        iters += n_it
        u = ev.u + 0.5 * math.log(1.0 / frac)  # the linear model's answer at τ from the one at frac·τ
    best = _precise(problem, u, cap, tau, s, merits)
    iters += best[-1]
    # other starts: the linearised σ with one of the most-kept words dropped to the cap (where the
    # evidence is redundant, another word takes its place). Each is solved on a prefix of the
    # draws first, next to the best answer on the same prefix; only one that ends within reach
    # of it (twice the ambiguity gap) is made as precise as the first.
    free = below_cap(best[0].u, cap)
    order = torch.argsort(best[0].u)
    others: list[tuple[_Eval, float]] = []  # an optimum and its gap to the best, on the same draws
    search: FixedDrawProblem | None = None
    for k in range(min(s.starts - 1, int(free.sum()))):
        if search is None:
            search = problem.prefix(min(problem.n_draws, max(SEARCH_DRAWS, s.n_draws)))
            whole = search.n_draws == problem.n_draws
            ref = best[0] if whole else solve(search, best[0].u, cap, tau, s.solve)[0]
            se_search = best[3] * math.sqrt(problem.n_draws / search.n_draws)
        start = u_lin.clone()
        start[order[k]] = cap
        # a third of the iterations first: a start still far below the best by then (the merit
        # only rises) is abandoned; one within reach gets the rest
        short = replace(s.solve, max_iter=max(1, s.solve.max_iter // 3))
        ev_alt, _, n_it, ok_alt = solve(search, start, cap, tau, short)
        iters += n_it
        gap = _merit(ref.u, ref.d, tau) - _merit(ev_alt.u, ev_alt.d, tau)
        if not ok_alt and gap <= 2 * s.ambiguity_gap:
            ev_alt, _, n_it, ok_alt = solve(search, ev_alt.u, cap, tau, s.solve)
            iters += n_it
            gap = _merit(ref.u, ref.d, tau) - _merit(ev_alt.u, ev_alt.d, tau)
        if not ok_alt or not _moved(ev_alt.u, ref.u, se_search).any():
            continue  # it does not settle, or it is the same optimum
        if gap > 2 * s.ambiguity_gap:
            others.append((ev_alt, _plain_gap(search, ref.u, ev_alt.u, tau)))
            continue
        # within reach: solved on all the draws, like the best; only a better one gets more draws
        ev_full, _, n_it, ok_full = solve(problem, ev_alt.u, cap, tau, s.solve)
        iters += n_it
        if not ok_full:
            continue
        loser = ev_full
        if _merit(ev_full.u, ev_full.d, tau) > _merit(best[0].u, best[0].d, tau) + TIE:
            n_before = problem.n_draws
            new = _precise(problem, ev_full.u, cap, tau, s)
            iters += new[-1]
            if not new[2]:
                continue  # it does not settle once the draws grow: not an optimum
            loser = best[0]
            if problem.n_draws != n_before:  # the draws grew: the old best on them too
                loser, _, n_it, _ = solve(problem, best[0].u, cap, tau, s.solve)
                iters += n_it
            best = new
        if _moved(loser.u, best[0].u, best[3]).any():
            others.append((loser, _plain_gap(problem, best[0].u, loser.u, tau)))
    ev, res, ok, se, _ = best
    value = _merit(ev.u, ev.d, tau)
    runner, gap, trades = ev.u, math.nan, torch.zeros_like(ev.u, dtype=torch.bool)
    for other, this_gap in others:
        moved = _moved(other.u, ev.u, se)
        if moved.any() and (math.isnan(gap) or this_gap < gap):
            # below 0: the runner-up scores higher without the control variate; the two are level
            runner, gap, trades = other.u, max(this_gap, 0.0), moved
    ambiguous = not math.isnan(gap) and gap <= s.ambiguity_gap
    return Solution(
        u=ev.u, se=se, objective=value, distortion=ev.d, kkt=res, converged=ok, iterations=iters,
        n_draws=problem.n_draws, ambiguous=ambiguous, gap=gap, alternative=runner, trades=trades, merits=merits,
    )
