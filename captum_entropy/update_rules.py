"""The stochastic refinement of log σ on fresh draws: the per-sentence state (window averages,
the stationarity test) and the two update rules that move it, Newton and Adam.

Update rules (called by :func:`~captum_entropy.optim.fit_sigma`, whose docstring has the
objectives and their optimality condition):

* ``"newton"`` (default): the step ``u_p += ½·log(c / g_p)`` on common random numbers (the same
  ``n_samples`` draws for the current point and the proposal), accepted only if it improves the
  objective on those draws (penalised: the loss; constrained: the entropy after rescaling both
  points to ``D = τ``); a rejected step halves the step length. A linear feature is solved in
  one step; where the feature is non-linear the curvature is re-measured at the current σ. A
  feature with at most ``exact_jacobian`` elements gets its exact Jacobian once, and the linear
  part of the distortion is then computed in closed form (a control variate): only the
  non-linear remainder is sampled.
* ``"adam"``: Adam on the parameter, the reference's choice (penalised objective only).

Convergence is a stationarity test: ``r_p = ½·log(c/g_p)`` (the step that would still be taken;
at the cap only its negative part) averaged over a window of ``check_every`` steps has an RMS
below ``tol``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ._names import Z95
from .objective import AveragedJacobian, SampledDistortion, noise, step_to_level, water_level
from .optim_settings import STOP_REASONS, TIE_TOLERANCE, OptimSettings


MIN_AVERAGED = 5  # fewer averaged Newton steps than this: no polished answer, no error bar


def log_sigma_se(a_bar: Tensor, a_se: Tensor, u: Tensor, log_cap: Tensor) -> Tensor:
    """The standard error of log σ = ``u`` from the averaged curvature ``ā ± se_ā`` (σ² ∝ 1/a at
    the answer). Where the curvature's 95 % interval excludes 0 (``ā > 1.96·se_ā``) the delta
    method, ``½·se_ā/ā``; elsewhere the draws cannot tell the word's curvature from 0, so nothing
    but the cap bounds its σ: the interval reaches the cap, ``(cap − u)/1.96``, and is never
    narrower than the delta method's at that boundary, ``½/1.96`` (dividing by an ā near 0 gave
    errors of 1e35). NaN where the curvature is not measured.

    >>> a = torch.tensor([1.0, 0.1, -0.2]); se_a = torch.tensor([0.1, 0.1, 0.1])
    >>> log_sigma_se(a, se_a, torch.zeros(3), torch.full((3,), 2.0))   # delta; at 0; below 0
    tensor([0.0500, 1.0204, 1.0204])
    """
    delta = 0.5 * a_se / a_bar.clamp_min(torch.finfo(a_bar.dtype).tiny)
    reach = torch.clamp_min((log_cap - u) / Z95, 0.5 / Z95)
    se = torch.where(a_bar > Z95 * a_se, delta, reach)
    return se.masked_fill(a_bar.isnan() | a_se.isnan(), math.nan)


class _State:
    """Per-sentence iterate, running averages, the stationarity test, and flags.

    Steps are booked in windows of ``check_every``. The answer and the test use the average over
    every window after the last one that still *drifted* (its mean step larger than three
    standard errors of its own noise, or far smaller than the average so far, which then still
    holds a transient; the first window counts as drifting unless it passes the test at once).
    So a sentence whose steps are dominated by sampling noise keeps averaging: its σ gets more
    precise with every step, and it converges once the averaged step is below ``tol``, not when
    one lucky window is.
    """

    def __init__(self, b: int, s: OptimSettings, u0: Tensor, dev, dtype, residual: Callable | None = None,
                 log_cap: Tensor | None = None) -> None:
        self.s, self.residual, self.log_cap = s, residual, log_cap
        self.u = u0.clone()
        zeros = lambda: torch.zeros_like(u0)  # noqa: E731
        self.u_win, self.r_win, self.r2_win = zeros(), zeros(), zeros()  # sums over the current window
        self.u_acc, self.r_acc = zeros(), zeros()  # sums since the last drifting window
        # the measured curvature a = g/(2σ²) at each step (Newton), for the polished answer and its
        # error bars (:meth:`curvature`): its sum, sum of squares and lag-one products per window,
        # and over the later half of the windows, by doubling: ``a_cur`` from window ``a_start``
        # on, ``a_old`` the block before it; ``a_cur`` starts afresh once it is as long as the
        # windows before it, so the two together always hold the last ½ to ¾ of the windows
        sums = lambda: torch.zeros((3, *u0.shape), dtype=u0.dtype, device=u0.device)  # noqa: E731
        self.a_win, self.a_cur, self.a_old = sums(), sums(), sums()
        self.a_counts = torch.zeros((b, 2), dtype=dtype, device=dev)  # steps in a_cur, a_old
        self.a_start = torch.zeros(b, dtype=torch.long, device=dev)  # window index where a_cur starts
        self.a_prev = zeros()
        # the measured gradient and distortion, for the stationarity test on their averages
        self.g_win, self.g_acc = zeros(), zeros()
        self.d_win = torch.zeros(b, dtype=dtype, device=dev)
        self.d_acc = torch.zeros(b, dtype=dtype, device=dev)
        self.n_acc = torch.zeros(b, dtype=dtype, device=dev)
        self.fresh = torch.zeros(b, dtype=torch.bool, device=dev)
        self.in_window = torch.zeros(b, dtype=torch.long, device=dev)
        self.steps = torch.zeros(b, dtype=torch.long, device=dev)
        self.converged = torch.zeros(b, dtype=torch.bool, device=dev)
        self.reason = torch.full((b,), STOP_REASONS.index("max_steps"), dtype=torch.long, device=dev)
        self.stat = torch.full((b,), math.nan, dtype=dtype, device=dev)
        self.dist = torch.full((b,), math.nan, dtype=dtype, device=dev)
        self.losses = torch.full((b, s.max_steps), math.nan, dtype=dtype, device=dev)
        self.active = torch.arange(b, device=dev)
        self.best_loss = torch.full((b,), math.inf, dtype=dtype, device=dev)
        self.best_u: Tensor | None = None

    def record(
        self, rows: Tensor, step: int, r: Tensor, loss: Tensor, dist: Tensor, valid: Tensor,
        g: Tensor | None = None, d: Tensor | None = None, a: Tensor | None = None,
    ) -> None:
        """Book one step of ``rows``; at a window's end, update the averages and the test.

        ``g``, ``d`` and ``a`` (Newton): the measured gradient, distortion and curvature
        ``g/(2σ²)`` at the point the step started from; ``g`` and ``d`` are averaged for the
        stationarity test, where the gap ``½·log(D̄/τ)`` counts like one more parameter's step.
        """
        if g is not None:
            self.g_win[rows] += g.masked_fill(~valid[rows], 0.0)
            self.d_win[rows] += d
        if a is not None:
            a = a.masked_fill(~valid[rows], 0.0)
            self.a_win[:, rows] += torch.stack([a, a * a, a * self.a_prev[rows]])
            self.a_prev[rows] = a
        self.steps[rows] += 1
        self.losses[rows, step] = loss
        self.dist[rows] = dist
        r = r.clamp(-10.0, 10.0).masked_fill(~valid[rows], 0.0)
        self.u_win[rows] += self.u[rows]
        self.r_win[rows] += r
        self.r2_win[rows] += r * r
        self.in_window[rows] += 1
        full = rows[self.in_window[rows] == self.s.check_every]
        if len(full):
            self._close_window(full, valid[full])

    def _close_window(self, full: Tensor, valid: Tensor) -> None:
        w = self.s.check_every
        count = valid.flatten(1).sum(1).clamp_min(1)
        rms = lambda x: (x.flatten(1).sum(1) / count).sqrt()  # noqa: E731
        mean_r = self.r_win[full] / w
        var = (self.r2_win[full] - w * mean_r.pow(2)).clamp_min(0) / max(w - 1, 1)
        drift, noise = rms(mean_r.pow(2)), rms(var / w)
        # a transient left in the average (its mean step far larger than this window's) restarts it too
        history = rms(((self.r_acc[full] + self.r_win[full]) / (self.n_acc[full, None, None] + w)).pow(2))
        restart = (drift > 3 * noise) | (2 * drift < history) | (self.n_acc[full] == 0)
        # the window that restarted the average drifted (or was the first): drop it from the
        # average as soon as a later window follows it
        keep = (~restart & ~self.fresh[full]).to(mean_r.dtype)[:, None, None]
        self.fresh[full] = restart
        self.u_acc[full] = self.u_acc[full] * keep + self.u_win[full]
        self.r_acc[full] = self.r_acc[full] * keep + self.r_win[full]
        self.a_cur[:, full] += self.a_win[:, full]
        self.a_counts[full, 0] += w
        windows = self.steps[full] // w  # closed so far, this one included
        renew = full[(windows - self.a_start[full]) >= self.a_start[full].clamp_min(1)]
        self.a_old[:, renew], self.a_cur[:, renew] = self.a_cur[:, renew], 0.0
        self.a_counts[renew, 1], self.a_counts[renew, 0] = self.a_counts[renew, 0], 0.0
        self.a_start[renew] = self.steps[renew] // w
        self.n_acc[full] = self.n_acc[full] * keep[:, 0, 0] + w
        self.g_acc[full] = self.g_acc[full] * keep + self.g_win[full]
        self.d_acc[full] = self.d_acc[full] * keep[:, 0, 0] + self.d_win[full]
        n = self.n_acc[full]
        precise = torch.zeros_like(restart)  # the precision stop (Newton, ``precision`` set)
        if self.residual is not None:
            # the step still to take by the *averaged* gradient and distortion: a log of the mean,
            # not a mean of logs of noisy single steps (which is biased by their noise)
            r_bar, gap = self.residual(full, self.u_acc[full] / n[:, None, None], self.g_acc[full] / n[:, None, None],
                                       self.d_acc[full] / n)
            self.stat[full] = (rms(r_bar.masked_fill(~valid, 0.0).pow(2)).pow(2) + gap.pow(2)).sqrt()
            if self.s.precision is not None:
                precise = ~restart & self._precise(full, valid, r_bar)
        else:  # the penalised objective (Adam): no distortion budget, so no gap
            self.stat[full] = rms((self.r_acc[full] / n[:, None, None]).pow(2))
        done = full[precise | (self.stat[full] < self.s.tol)]
        self.converged[done] = True
        self.reason[done] = STOP_REASONS.index("converged")
        for t in (self.u_win, self.r_win, self.r2_win, self.g_win, self.d_win):
            t[full] = 0.0
        self.a_win[:, full] = 0.0
        self.in_window[full] = 0
        if self.s.early_stop:
            self.active = self.active[~self.converged[self.active]]

    def _precise(self, full: Tensor, valid: Tensor, r_bar: Tensor) -> Tensor:
        """Newton with ``precision`` set: the free words' median standard error of log σ
        (:meth:`curvature`, over the later windows) is at most ``precision``, and every word's
        remaining step by the averaged measurements, ``r̄_p`` (at the cap only a push down), is
        within ``tol`` plus three of its own standard errors of zero. With a window that did not
        drift (the caller's test) this stops a sentence whose steps are noise around a fixed point
        once its answer is that precise, where the stationarity test alone (the RMS of ``r̄`` below
        ``tol``) waits for the noise to average away below ``tol``; a word still on its way
        (its ``r̄_p`` many errors from 0, at the cap or not) holds the sentence back.
        """
        a_bar, a_se, _ = self.curvature()
        u_bar = self.u_acc[full] / self.n_acc[full].clamp_min(1)[:, None, None]
        se = log_sigma_se(a_bar[full], a_se[full], u_bar, self.log_cap[full])
        free = valid & (u_bar < self.log_cap[full] - 1e-6)
        median = torch.nanmedian(se.masked_fill(~free, math.nan).flatten(1), dim=1).values
        settled = ((r_bar.abs() <= self.s.tol + 3 * se) | ~valid).flatten(1).all(1)
        return free.flatten(1).any(1) & (median <= self.s.precision) & settled

    def result(self) -> Tensor:
        if self.best_u is not None:  # select="min_loss"
            return self.best_u
        # a sentence that never completed a window keeps its latest iterate
        averaged = self.u_acc / self.n_acc.clamp_min(1)[:, None, None]
        return torch.where((self.n_acc > 0)[:, None, None], averaged, self.u)

    def curvature(self) -> tuple[Tensor, Tensor, Tensor]:
        """The averaged measurements behind the polished answer (Newton), per sentence:
        ``(ā, se_ā, homogeneity)``.

        ``ā``: the mean over the averaged steps of the measured curvature ``a_p = g_p/(2σ_p²)``
        (unbiased for a linear feature wherever it was measured, so, unlike the iterates, whose
        steps are logs of noisy ratios, it carries no bias from the draws' noise). ``se_ā``: its
        standard error: the variance over the steps over n, times ``(1 + ρ)/(1 − ρ)`` for a
        lag-one autocorrelation ρ pooled over the sentence's parameters (an AR(1) effective
        sample size; fresh draws every step make ρ small). ``homogeneity``: ``½·Σ_p ḡ_p / D̄``,
        1 where D grows like σ² (a linear feature), the budget's correction elsewhere. NaN rows:
        fewer than :data:`MIN_AVERAGED` steps averaged.
        """
        total = self.a_cur + self.a_old
        steps = self.a_counts.sum(1)
        n = steps[:, None, None]
        m = n.clamp_min(1)
        mean = total[0] / m
        var = ((total[1] / m - mean * mean) * n / (n - 1).clamp_min(1)).clamp_min(0.0)
        cov = total[2] / m - mean * mean
        tiny = torch.finfo(mean.dtype).tiny
        spread = var.flatten(1).sum(1)
        # no spread at all (a linear feature under its control variate): no correlation to correct for
        rho = torch.where(spread > 0, cov.flatten(1).sum(1) / spread.clamp_min(tiny), torch.zeros_like(spread))
        rho = rho.clamp(0.0, 0.9)
        se = (var / m * ((1 + rho) / (1 - rho))[:, None, None]).sqrt()
        homogeneity = 0.5 * self.g_acc.flatten(1).sum(1) / self.d_acc.clamp_min(tiny)
        enough = steps >= MIN_AVERAGED
        nan = torch.full_like(mean, math.nan)
        return (torch.where(enough[:, None, None], mean, nan), torch.where(enough[:, None, None], se, nan),
                torch.where(enough, homogeneity, torch.full_like(homogeneity, math.nan)))


def _stationarity_step(g: Tensor, level: Tensor, room: Tensor) -> Tensor:
    """``r_p``: the step of log σ still to take, up to the cap (at the cap only a push down counts).

    Not limited by ``max_jump``: a sentence that cannot move fast enough is not stationary."""
    return torch.minimum(step_to_level(g, level, math.inf), room.clamp_min(0.0))


def _free(u: Tensor, log_cap: Tensor, ok: Tensor) -> Tensor:
    """Parameters below the cap; all of a row's parameters if none is (a row stuck at the cap)."""
    free = (u < log_cap - 1e-6) & ok
    return torch.where(free.flatten(1).any(1)[:, None, None], free, ok)


def _rescale(u: Tensor, shift: Tensor, log_cap: Tensor, ok: Tensor, max_jump: float, held_up: Tensor) -> Tensor:
    """Shift the free parameters' log σ by ``shift`` (per row), under the cap.

    Parameters at the cap stay there, unless the shift is down by the whole trust region and the
    row is ``held_up`` (:func:`_held_up`): then the free words alone cannot bring D to τ, and the
    words at the cap, whose noise holds it up (a feature saturated by their noise has no gradient
    to show it), come down with them. A word at the cap is not dragged down merely because the
    free words need a long step.
    """
    drag = (shift <= -max_jump + 1e-9) & held_up
    moves = _free(u, log_cap, ok) | (ok & drag[:, None, None])
    return torch.where(moves, torch.minimum(u + shift[:, None, None], log_cap), u)


def _held_up(dist: SampledDistortion, u: Tensor, free: Tensor, rows: Tensor, eps: Tensor, budget: Tensor,
             asks: Tensor) -> Tensor:
    """Rows (of those that ``asks``) whose free words cannot bring D to τ however far they go
    down: D on the same draws with the free words' noise removed is still above τ. Only those rows
    let :func:`_rescale` bring words at the cap down."""
    held = torch.zeros_like(asks)
    if asks.any():
        sub = asks.nonzero().squeeze(1)
        quiet = torch.where(free[sub], torch.full_like(u[sub], -math.inf), u[sub])
        held[sub] = dist(quiet, rows[sub], eps[sub]) > budget[sub]
    return held


def _newton(state: _State, dist: SampledDistortion, generators, mask, valid, log_cap, budget, pull, s, progress,
            feature_mask: Tensor) -> None:
    b, t, ks = state.u.shape
    averaged = None
    if s.control_variate == "averaged" and dist.lin.jac is not None:
        averaged = AveragedJacobian(dist, mask, feature_mask, s.per_element, s.curvature_decay)
    k = dist.values.shape[-1]
    alpha = torch.ones(b, dtype=state.u.dtype, device=state.u.device)
    tiny = torch.finfo(state.u.dtype).tiny
    curv = torch.zeros_like(state.u)  # EMA of g / (2σ²): the quadratic coefficient a_p
    beta = s.curvature_decay
    for step in range(s.max_steps):
        rows = state.active
        if len(rows) == 0:
            break
        eps = noise(generators, rows, mask, (s.n_samples, t, k), state.u.dtype, s.antithetic)
        cap, ok = log_cap[rows], valid[rows]
        with torch.enable_grad():
            leaf = state.u[rows].detach().requires_grad_(True)
            track = averaged is not None and bool(averaged.single[rows].any())
            d0 = dist(leaf, rows, eps, keep=track)
            _check_finite(d0, rows, step)
            kept = dist.kept
            g, *grad_input = torch.autograd.grad(d0.sum(), [leaf] + ([kept[0]] if track else []))
        with torch.no_grad():
            d0, g = d0.detach(), g.masked_fill(~ok, 0.0)
            u = state.u[rows]
            n_seen = state.steps[rows].to(u.dtype)[:, None, None]
            curv[rows] = beta * curv[rows] + (1 - beta) * g / (2 * torch.exp(2 * u))
            g_smooth = (2 * torch.exp(2 * u) * curv[rows] / (1 - beta ** (n_seen + 1))).masked_fill(~ok, 0.0)
            if budget is not None:
                level = water_level(g_smooth, cap - u, ok, budget[rows])
                # the current point rescaled to D = τ along u + s (first order in s)
                free = _free(u, cap, ok)
                slope = g.masked_fill(~free, 0.0).flatten(1).sum(1) / d0.clamp_min(tiny)
                s_cur = (torch.log(budget[rows] / d0.clamp_min(tiny)) / slope.clamp_min(tiny)).clamp(-s.max_jump, s.max_jump)
            else:
                level = pull[rows]
                current = u
            r = _stationarity_step(g, level, cap - u)
            proposal = torch.minimum(u + alpha[rows, None, None] * step_to_level(g_smooth, level, s.max_jump), cap)
            proposal = torch.where(ok, proposal, cap)
            d1 = dist(proposal, rows, eps)
            _check_finite(d1, rows, step)
            if budget is not None:
                # secant on log D along the proposal's own scale, then compare entropies at D = τ;
                # a candidate counts only where the draws show it within the tolerance
                tau = budget[rows]
                s1 = (0.5 * torch.log(tau / d1.clamp_min(tiny))).clamp(-s.max_jump, s.max_jump)
                # only a row with a word at the cap and a rescaling that takes the whole trust region asks
                capped = (ok & ~free).flatten(1).any(1)
                held_up = _held_up(dist, u, free, rows, eps, tau, capped & (torch.minimum(s_cur, s1) <= -s.max_jump + 1e-9))
                current = _rescale(u, s_cur, cap, ok, s.max_jump, held_up)
                d2 = dist(_rescale(proposal, s1, cap, ok, s.max_jump, held_up), rows, eps)
                _check_finite(d2, rows, step)
                log_d1, log_d2 = torch.log(d1.clamp_min(tiny)), torch.log(d2.clamp_min(tiny))
                # decisions read "at τ" within TIE_TOLERANCE: a draw that lands on τ (the secant often
                # does) must not be decided by float rounding, which differs with the batch's size
                near = TIE_TOLERANCE * tau
                bracket = ((d1 - tau) * (d2 - tau) <= 0) | ((d1 - tau).abs() <= near) | ((d2 - tau).abs() <= near)
                rise = torch.where((log_d2 - log_d1).abs() > 1e-12, log_d2 - log_d1, torch.ones_like(log_d1))
                frac = torch.where(bracket, ((torch.log(tau) - log_d1) / rise).clamp(0.0, 1.0), (s1 > 0).to(s1.dtype))
                eligible = bracket | ((d1 <= tau + near) & (d2 <= tau + near))
                candidate = torch.where(ok, _rescale(proposal, s1 * frac, cap, ok, s.max_jump, held_up), cap)
                better = eligible & (_mean(candidate, ok) >= _mean(current, ok) - TIE_TOLERANCE)
                loss = -_mean(torch.where(better[:, None, None], candidate, current), ok)
                d_new = torch.where(better, budget[rows], d0)
            else:
                candidate = proposal
                loss0 = d0 - pull[rows] * _sum(u, ok)
                loss1 = d1 - pull[rows] * _sum(proposal, ok)
                better = loss1 <= loss0
                loss = torch.minimum(loss0, loss1)
                d_new = torch.where(better, d1, d0)
            new_u = torch.where(better[:, None, None], candidate, current)
            alpha[rows] = torch.where(better, (2 * alpha[rows]).clamp_max(1.0), 0.5 * alpha[rows])
            state.u[rows] = torch.where(ok, new_u, cap)
            state.record(rows, step, r, loss, d_new, valid, g=g, d=d0, a=g / (2 * torch.exp(2 * u)))
            if track:  # after this step's last use of its draws: the next step's variate
                averaged.update(rows, grad_input[0], kept[1])
        if progress is not None:
            progress(step + 1)


def _adam(state: _State, dist: SampledDistortion, generators, mask, valid, log_cap, budget, pull, s, progress) -> None:
    b, t, ks = state.u.shape
    k = dist.values.shape[-1]
    sigmoid = s.parametrization == "sigmoid"
    # the parameter: u itself, or θ with σ = cap·sigmoid(θ)
    ratio = torch.exp(state.u - log_cap).clamp(1e-6, 1 - 1e-6)
    param = (torch.log(ratio) - torch.log1p(-ratio)) if sigmoid else state.u.clone()
    m, v = torch.zeros_like(param), torch.zeros_like(param)
    t_adam = torch.zeros(b, dtype=param.dtype, device=param.device)
    if s.select == "min_loss":
        state.best_u = state.u.clone()
    to_u = (lambda p, rows: log_cap[rows] + torch.nn.functional.logsigmoid(p)) if sigmoid else (lambda p, rows: p)
    for step in range(s.max_steps):
        rows = state.active
        if len(rows) == 0:
            break
        eps = noise(generators, rows, mask, (s.n_samples, t, k), state.u.dtype)
        ok = valid[rows]
        with torch.enable_grad():
            leaf = param[rows].detach().requires_grad_(True)
            u = torch.where(ok, to_u(leaf, rows), log_cap[rows])
            d = dist(u, rows, eps)
            _check_finite(d, rows, step)
            loss = d - pull[rows] * _sum(u, ok)
            (gp,) = torch.autograd.grad(loss.sum(), leaf)
        with torch.no_grad():
            u = u.detach()
            # ∂D/∂u from ∂L/∂param: L = D − pull·Σu, so ∂D/∂u = ∂L/∂u + pull
            du_dparam = torch.sigmoid(-leaf.detach()) if sigmoid else torch.ones_like(u)
            g = (gp / du_dparam.clamp_min(1e-12) + pull[rows, None, None]).masked_fill(~ok, 0.0)
            r = _stationarity_step(g, pull[rows], log_cap[rows] - u)
            lr = s.lr if s.lr_decay_steps is None else s.lr / math.sqrt(1.0 + step / s.lr_decay_steps)
            gp = gp.masked_fill(~ok, 0.0)
            t_adam[rows] += 1
            m[rows] = 0.9 * m[rows] + 0.1 * gp
            v[rows] = 0.999 * v[rows] + 0.001 * gp * gp
            tt = t_adam[rows][:, None, None]
            param[rows] -= lr * (m[rows] / (1 - 0.9**tt)) / ((v[rows] / (1 - 0.999**tt)).sqrt() + 1e-8)
            if not sigmoid:
                param[rows] = torch.minimum(param[rows], log_cap[rows])
            state.u[rows] = torch.where(ok, to_u(param[rows], rows), log_cap[rows])
            if state.best_u is not None:
                better = loss.detach() < state.best_loss[rows]
                state.best_loss[rows[better]] = loss.detach()[better]
                state.best_u[rows[better]] = state.u[rows[better]]
            state.record(rows, step, r, loss.detach(), d.detach(), valid)
        if progress is not None:
            progress(step + 1)


def _sum(u: Tensor, ok: Tensor) -> Tensor:
    return u.masked_fill(~ok, 0.0).flatten(1).sum(1)


def _mean(u: Tensor, ok: Tensor) -> Tensor:
    return _sum(u, ok) / ok.flatten(1).sum(1).clamp_min(1)


def _check_finite(d: Tensor, rows: Tensor, step: int) -> None:
    if not torch.isfinite(d).all():
        bad = rows[~torch.isfinite(d)].tolist()
        raise FloatingPointError(
            f"the distortion became non-finite at step {step} for sentence(s) {bad}; the feature "
            "probably overflows under noise: lower max_sigma, or pass feature_std"
        )
