"""Batched optimiser of the per-word noise scale σ: :func:`fit_sigma`. Knows no model: it takes callables.

For each sentence it works on ``u = log σ`` (one per token, or one per token element) with the
distortion ``D(u) = E_ε ‖f(x + σ⊙ε) − f(x)‖²`` of the *normalised* feature ``f`` (``feature_fn``
already divides by the feature std and by the square root of the number of feature elements, so
``D`` is the mean squared change of the normalised feature). Two objectives:

* **constrained** (default, ``tolerance=τ``): maximise the entropy ``Σ_p u_p`` subject to
  ``D(u) ≤ τ`` and ``σ ≤ cap``: the noise is as large as it can be while the feature moves by at
  most ``τ``. The same meaning for any feature kind and any sentence length.
* **penalised** (``entropy_weight``; the authors' loss): minimise ``D(u) − w·mean_p u_p``.

Both share one optimality condition. Write ``g_p = ∂D/∂u_p``. At the optimum every free
parameter has the same ``g_p = c`` (penalised: ``c = w/P``; constrained: ``c`` is whatever
makes ``D = τ``), and a parameter at the cap has ``g_p ≤ c`` (the entropy still pulls it up).
Under the local model ``D ≈ Σ_p a_p e^{2u_p}`` (exact for a linear feature) the step
``u_p += ½·log(c / g_p)`` lands on that point; the constrained ``c`` comes from water-filling
the budget ``τ`` over the parameters, capped ones first.

The loop lives here: the linearised warm start (:mod:`.objective`), then the refinement by a
stochastic update rule on fresh draws (:mod:`.update_rules`: Newton or Adam, the averaging and
the stationarity test) or, for ``update="fixed_draws"``, sentence by sentence by
:mod:`.fixed_draw_answer` (on :mod:`.fixed_draws`). The knobs and constants live in
:mod:`.optim_settings` and are importable from here too. Every sentence owns a ``torch.Generator``: its probes and noise draws do not
depend on which other sentences share the batch, so batching never changes an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from .fixed_draw_answer import SEARCH_DRAWS, FixedDrawSettings, explain_sentence
from .fixed_draws import FixedDrawProblem, SolveSettings
from .objective import FeatureFn, SampledDistortion, linear_solution, linearize, water_level
from .optim_settings import (
    SATURATION, SMALL_FEATURE_SAMPLES, STOP_REASONS, TIE_TOLERANCE, UPDATES, OptimSettings, _is_bool, _is_int, _is_real,
)
from .other_optima import check_answer
from .update_rules import _State, _adam, _newton, _stationarity_step, log_sigma_se

# the settings' names are re-exported (settings.py and result.py import them from here)
__all__ = ["SATURATION", "SMALL_FEATURE_SAMPLES", "STOP_REASONS", "TIE_TOLERANCE", "UPDATES", "OptimSettings",
           "SigmaFit", "fit_sigma", "_is_bool", "_is_int", "_is_real"]


@dataclass
class SigmaFit:
    """What :func:`fit_sigma` returns, one row per sentence (padding positions hold NaN)."""

    sigma: Tensor  # (B, T, Ks)
    saturated: Tensor  # bool, same shape as sigma: σ at the cap (word forgotten)
    steps: Tensor  # (B,) refinement steps taken
    converged: Tensor  # (B,) bool: the stationarity test passed
    stop_reason: Tensor  # (B,) index into STOP_REASONS
    stationarity: Tensor  # (B,) RMS of the last window-mean step ½·log(c/g) (NaN if never measured)
    distortion: Tensor  # (B,) the last measured D (mean squared change of the normalised feature)
    losses: Tensor  # (B, max_steps) objective per step: penalised loss, or −mean log σ (constrained)
    init_sigma: Tensor = field(repr=False)  # σ before the first step
    linear_sigma: Tensor = field(repr=False)  # the linearised closed form
    linear_log_se: Tensor = field(repr=False)  # Monte-Carlo standard error of log(linear_sigma)
    log_sigma_se: Tensor = field(repr=False)  # standard error of log σ from the draws (NaN: not measured)
    ambiguous: Tensor = field(repr=False)  # (B,) bool: another optimum within ambiguity_gap
    ambiguity_gap: Tensor = field(repr=False)  # (B,) objective gap to the runner-up optimum, nats/dim (NaN: none)
    alternative_sigma: Tensor = field(repr=False)  # σ of the runner-up optimum (= sigma if none)
    trades: Tensor = field(repr=False)  # (B, T) bool: words whose σ differs between the two optima
    n_draws: Tensor = field(repr=False)  # (B,) noise draws behind the answer (per step for newton/adam)


# -- the optimiser ------------------------------------------------------------------------------


def fit_sigma(
    values: Tensor,
    mask: Tensor,
    feature_fn: FeatureFn,
    clean: Tensor,
    feature_mask: Tensor,
    max_sigma: Tensor,
    generators: Sequence[torch.Generator],
    settings: OptimSettings = OptimSettings(),
    tolerance: Tensor | None = None,
    entropy_weight: Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> SigmaFit:
    """Learn σ for a batch of sentences.

    Args:
        values: clean layer values ``x`` (B, T, K) where the noise goes.
        mask: (B, T) bool, True for real tokens.
        feature_fn: normalised feature of noisy rows, see :data:`FeatureFn`.
        clean: ``feature_fn`` of the clean values, (B, M).
        feature_mask: (B, M) bool, the feature elements that belong to the sentence (not padding).
        max_sigma: the cap on σ per sentence (B,).
        generators: one ``torch.Generator`` per sentence, on ``values.device``.
        settings: see :class:`OptimSettings`; its automatic values are decided here for a
            feature of ``clean.shape[1]`` elements unless the caller decided them
            (:meth:`OptimSettings.for_feature`).
        tolerance: (B,) τ, the constrained objective: the largest allowed ``D``.
        entropy_weight: (B,) ``w``, the penalised objective ``D − w·mean_p log σ_p``.
        progress: called with the number of steps done after each step.

    Exactly one of ``tolerance`` and ``entropy_weight`` is given.
    """
    if (tolerance is None) == (entropy_weight is None):
        raise ValueError("give exactly one of tolerance (constrained) and entropy_weight (penalised)")
    s = settings.for_feature(small=clean.shape[1] <= settings.exact_jacobian, constrained=tolerance is not None)
    if s.control_variate == "averaged" and (s.method != "optimize" or s.update != "newton"):
        raise ValueError(f"control_variate='averaged' is a setting of newton's steps (method='optimize', update='newton'), "
                         f"got method={s.method!r}, update={s.update!r}: leave control_variate='clean' there")
    if s.update == "adam" and tolerance is not None:
        raise ValueError("update='adam' solves the penalised objective only: pass entropy_weight, or use update='newton'")
    b, t, k = values.shape
    dev = values.device
    dtype = torch.promote_types(values.dtype, torch.float32)
    ks = k if s.per_element else 1
    valid = mask[:, :, None].expand(b, t, ks)
    n_params = valid.flatten(1).sum(1).to(dtype)
    log_cap = torch.log(max_sigma.to(dev, dtype))[:, None, None].expand(b, t, ks)
    pull = None if entropy_weight is None else (entropy_weight.to(dev, dtype) / n_params)  # per parameter
    budget = None if tolerance is None else tolerance.to(dev, dtype)

    lin = linearize(values, feature_mask, feature_fn, generators, s.exact_jacobian, s.n_probes, s.per_element, dtype)
    lin.a = lin.a.masked_fill(~valid, 0.0)
    u_lin = linear_solution(lin.a, valid, log_cap, tolerance=budget, pull=pull)
    lin_se = 0.5 * lin.a_se / lin.a.clamp_min(torch.finfo(dtype).tiny)
    lin_se = torch.where(u_lin < log_cap, lin_se, torch.zeros_like(lin_se))
    if s.init == "linear":
        u0 = u_lin
    else:
        theta = torch.stack([torch.randn((t, ks), generator=g, device=dev, dtype=dtype) for g in generators])
        u0 = torch.where(valid, log_cap + torch.nn.functional.logsigmoid(theta), log_cap)

    def residual(rows: Tensor, u: Tensor, g: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """The remaining step and distortion gap at averaged measurements (the stationarity test)."""
        cap, ok = log_cap[rows], valid[rows]
        if budget is not None:
            level = water_level(g, cap - u, ok, budget[rows])
            gap = 0.5 * torch.log(d.clamp_min(torch.finfo(dtype).tiny) / budget[rows])
        else:
            level, gap = pull[rows], torch.zeros_like(d)
        return _stationarity_step(g.masked_fill(~ok, 0.0), level, cap - u), gap

    check = s.method == "optimize" and s.update == "newton" and (s.starts or 1) > 1
    if check and (tolerance is None or s.per_element):
        raise ValueError(f"starts={s.starts} checks a Newton answer for other optima of the tolerance objective with "
                         "one σ per token: pass tolerance (not entropy_weight) and per_element=False, or leave starts unset")
    if s.method == "optimize" and s.update == "fixed_draws":
        if tolerance is None or s.per_element:
            raise ValueError("update='fixed_draws' solves the tolerance objective with one σ per token: pass "
                             "tolerance (not entropy_weight) and per_element=False, or use update='newton'")
        return _fixed_draws(values, mask, feature_fn, clean, lin, u_lin, lin_se, log_cap, valid, generators, s,
                            budget, progress)
    state = _State(b, s, u0, dev, dtype, residual if s.update == "newton" else None, log_cap)
    if s.method == "optimize":
        dist = SampledDistortion(values, clean, feature_fn, lin, dtype)
        if s.update == "newton":
            _newton(state, dist, generators, mask, valid, log_cap, budget, pull, s, progress, feature_mask)
        else:
            _adam(state, dist, generators, mask, valid, log_cap, budget, pull, s, progress)
    else:
        state.reason[:] = STOP_REASONS.index("linearized")

    with torch.no_grad():
        u = state.result()
        sigma, saturated = _answer(u, log_cap, valid)
        se = lin_se if s.method == "linearized" else torch.full_like(u, math.nan)
        if s.method == "optimize" and s.update == "newton":
            exact = {"auto": lin.has_jac.bool(), "always": torch.ones(b, dtype=torch.bool, device=dev),
                     "never": torch.zeros(b, dtype=torch.bool, device=dev)}[s.polish]
            u, se = _polish(state, u, valid, log_cap, budget, pull, exact)
            sigma, saturated = _answer(u, log_cap, valid)
            se = se.masked_fill(saturated, 0.0)
    flags = _Flags.none(u)
    if check:
        u, se, flags = _check_optima(values, mask, feature_fn, clean, u, se, log_cap, generators, s, budget)
        sigma, saturated = _answer(u, log_cap, valid)
        se = se.masked_fill(saturated, 0.0)
    nan = lambda x: x.masked_fill(~valid, math.nan)  # noqa: E731
    return SigmaFit(
        sigma=sigma, saturated=saturated, steps=state.steps, converged=state.converged, stop_reason=state.reason,
        stationarity=state.stat, distortion=state.dist, losses=state.losses, init_sigma=nan(torch.exp(u0)),
        linear_sigma=nan(torch.exp(u_lin)), linear_log_se=nan(lin_se),
        log_sigma_se=nan(se), ambiguous=flags.ambiguous, ambiguity_gap=flags.gap,
        alternative_sigma=torch.where(flags.gap.isnan()[:, None, None], sigma, nan(torch.exp(flags.alternative))),
        trades=flags.trades,
        n_draws=torch.full((b,), 0 if s.method == "linearized" else (s.n_samples or 0), dtype=torch.long, device=dev),
    )


@dataclass
class _Flags:
    """Per sentence: what the check of other optima found (nothing, without it)."""

    ambiguous: Tensor  # (B,) bool
    gap: Tensor  # (B,) NaN where no runner-up was found
    alternative: Tensor  # (B, T, 1) log σ of the runner-up
    trades: Tensor  # (B, T) bool

    @staticmethod
    def none(u: Tensor) -> "_Flags":
        b, t = u.shape[:2]
        return _Flags(torch.zeros(b, dtype=torch.bool, device=u.device), torch.full((b,), math.nan, dtype=u.dtype, device=u.device),
                      u.clone(), torch.zeros((b, t), dtype=torch.bool, device=u.device))


def _fixed_draw_settings(s: OptimSettings) -> FixedDrawSettings:
    return FixedDrawSettings(
        n_draws=s.n_draws, max_draws=s.max_draws, starts=FixedDrawSettings.starts if s.starts is None else s.starts,
        precision=FixedDrawSettings.precision if s.precision is None else s.precision,
        ambiguity_gap=s.ambiguity_gap, continuation=tuple(s.continuation),
        solve=SolveSettings(tol=s.tol, max_iter=s.max_iter, radius=s.max_jump),
    )


def _check_optima(values, mask, feature_fn, clean, u, se, log_cap, generators, s, budget) -> tuple[Tensor, Tensor, _Flags]:
    """Each sentence's Newton answer checked for other optima on fixed draws of its own
    (:func:`captum_entropy.other_optima.check_answer`); a better optimum replaces it."""
    u, se, flags = u.clone(), se.clone(), _Flags.none(u)
    fd = _fixed_draw_settings(s)
    for i in range(values.shape[0]):
        idx = mask[i].nonzero().flatten()
        row = torch.tensor([i], device=values.device)
        problem = FixedDrawProblem(values[i : i + 1], idx, lambda x, row=row: feature_fn(x, row.expand(len(x))),
                                   clean[i], None, generators[i], torch.promote_types(values.dtype, torch.float32))
        problem.add_draws(SEARCH_DRAWS)
        res = check_answer(problem, u[i, idx, 0], se[i, idx, 0].nan_to_num(0.0), float(log_cap[i, 0, 0]),
                           float(budget[i]), fd)
        if res.replaced:
            u[i, idx, 0], se[i, idx, 0] = res.u.to(u.dtype), res.se.to(se.dtype)
        flags.ambiguous[i], flags.gap[i] = res.ambiguous, res.gap
        flags.alternative[i, idx, 0] = res.alternative.to(u.dtype)
        flags.trades[i, idx] = res.trades
    return u, se, flags


def _polish(state: _State, u: Tensor, valid: Tensor, log_cap: Tensor, budget: Tensor | None,
            pull: Tensor | None, exact: Tensor) -> tuple[Tensor, Tensor]:
    """The Newton answer from the averaged measurements, and its standard error of log σ.

    The averaged iterate carries a bias from the draws' noise: each step is the log of a noisy
    ratio, ``½·log(c/g_p)``, and the mean of a log is not the log of the mean (numbers in
    docs/method.md). For the rows in ``exact`` (``polish="auto"``: a fixed-size feature with its
    exact Jacobian, a logit or a probability; ``"always"``: every row) the answer is instead the
    closed form of the linear model on the *averaged* curvature ``ā_p``
    (:meth:`_State.curvature`): exact for a linear feature, and for any feature the point the
    noise-free steps stand still at (``u = linear_solution(a(u))``), up to the spread of the
    averaged iterates. The budget is corrected by the measured homogeneity ``½·Σ ḡ/D̄`` where D
    does not grow like σ². Not for a feature far from linear at the noise it takes: on MiniLM's
    pooled output the closed form scored 0.03 nats/dim worse than the iterate (docs/method.md).
    The error, every row: :func:`~captum_entropy.update_rules.log_sigma_se` (the delta method
    ``½·se(ā_p)/ā_p`` where ā_p is resolved from 0; up to the cap where not). Rows with fewer than
    :data:`~captum_entropy.update_rules.MIN_AVERAGED` averaged steps keep ``u`` and a NaN error.
    """
    a_bar, a_se, homogeneity = state.curvature()
    ok = torch.isfinite(homogeneity) & (homogeneity > 0)
    if not bool(ok.any()):
        return u, torch.full_like(u, math.nan)
    a_fill = torch.where(ok[:, None, None], a_bar, torch.ones_like(a_bar))
    if bool((ok & exact).any()):  # with polish="never" (the default) no row is exact: the iterate stays
        tolerance = None if budget is None else budget * torch.where(ok, homogeneity, torch.ones_like(homogeneity))
        polished = linear_solution(a_fill, valid, log_cap, tolerance=tolerance, pull=pull)
        u = torch.where((ok & exact)[:, None, None], polished, u)
    se = log_sigma_se(a_bar, a_se, u, log_cap)
    return u, torch.where(ok[:, None, None] & valid, se, torch.full_like(se, math.nan))


def _answer(u: Tensor, log_cap: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """σ (NaN on padding) and the saturation flags from log σ: within :data:`SATURATION` of the
    cap counts as at the cap, and is reported exactly there."""
    saturated = (u >= log_cap + math.log(SATURATION)) & valid
    sigma = torch.exp(torch.where(saturated, log_cap, u)).masked_fill(~valid, math.nan)
    if not torch.isfinite(sigma[valid]).all():
        raise FloatingPointError("σ became non-finite; this is a bug, please report it with the inputs")
    return sigma, saturated


def _fixed_draws(values, mask, feature_fn, clean, lin, u_lin, lin_se, log_cap, valid, generators, s, budget,
                 progress) -> SigmaFit:
    """Each sentence solved on its own fixed draws by :func:`captum_entropy.fixed_draws.explain_sentence`."""
    b, t, _ = values.shape
    dev = values.device
    dtype = torch.promote_types(values.dtype, torch.float32)
    fd = _fixed_draw_settings(s)
    nan_t = lambda: torch.full((b, t, 1), math.nan, dtype=dtype, device=dev)  # noqa: E731
    u_out, se_out, alt_out = nan_t(), nan_t(), nan_t()
    trades = torch.zeros((b, t), dtype=torch.bool, device=dev)
    scalars = {k: torch.full((b,), math.nan, dtype=dtype, device=dev) for k in ("kkt", "dist", "gap")}
    steps = torch.zeros(b, dtype=torch.long, device=dev)
    draws = torch.zeros(b, dtype=torch.long, device=dev)
    converged = torch.zeros(b, dtype=torch.bool, device=dev)
    ambiguous = torch.zeros(b, dtype=torch.bool, device=dev)
    losses = torch.full((b, s.max_steps), math.nan, dtype=dtype, device=dev)
    for i in range(b):
        idx = mask[i].nonzero().flatten()
        jac = lin.jac[i] if lin.jac is not None and bool(lin.has_jac[i]) else None
        row = torch.tensor([i], device=dev)
        problem = FixedDrawProblem(
            values[i : i + 1], idx, lambda x, row=row: feature_fn(x, row.expand(len(x))), clean[i], jac,
            generators[i], dtype,
        )
        sol = explain_sentence(problem, u_lin[i, idx, 0].double(), float(log_cap[i, 0, 0]), float(budget[i]), fd)
        u_out[i, idx, 0] = sol.u.to(dtype)
        se_out[i, idx, 0] = sol.se.to(dtype)
        alt_out[i, idx, 0] = sol.alternative.to(dtype)
        trades[i, idx] = sol.trades
        scalars["kkt"][i], scalars["dist"][i], scalars["gap"][i] = sol.kkt, sol.distortion, sol.gap
        steps[i], draws[i], converged[i], ambiguous[i] = sol.iterations, sol.n_draws, sol.converged, sol.ambiguous
        merits = torch.tensor(sol.merits[: s.max_steps], dtype=dtype)
        losses[i, : len(merits)] = merits
        if progress is not None:
            progress(i + 1)
    sigma, saturated = _answer(u_out, log_cap, valid)
    nan = lambda x: x.masked_fill(~valid, math.nan)  # noqa: E731
    reason = torch.where(converged, STOP_REASONS.index("converged"), STOP_REASONS.index("max_steps"))
    return SigmaFit(
        sigma=sigma, saturated=saturated, steps=steps, converged=converged, stop_reason=reason,
        stationarity=scalars["kkt"], distortion=scalars["dist"], losses=losses, init_sigma=nan(torch.exp(u_lin)),
        linear_sigma=nan(torch.exp(u_lin)), linear_log_se=nan(lin_se), log_sigma_se=nan(se_out.masked_fill(saturated, 0.0)),
        ambiguous=ambiguous, ambiguity_gap=scalars["gap"], alternative_sigma=nan(torch.exp(alt_out.clamp_max(log_cap))),
        trades=trades, n_draws=draws,
    )
