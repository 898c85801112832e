"""Batched optimiser of the per-word noise scale σ. Knows no model: it takes callables.

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

Update rules:

* ``"newton"`` (default): that step on common random numbers (the same ``n_samples`` draws
  for the current point and the proposal), accepted only if it improves the objective on those
  draws (penalised: the loss; constrained: the entropy after rescaling both points to
  ``D = τ``); a rejected step halves the step length. A linear feature is solved in one step;
  where the feature is non-linear the curvature is re-measured at the current σ. A feature with
  at most ``exact_jacobian`` elements gets its exact Jacobian once, and the linear part of the
  distortion is then computed in closed form (a control variate): only the non-linear remainder
  is sampled.
* ``"adam"``: Adam on the parameter, the reference's choice (penalised objective only).

Convergence is a stationarity test: ``r_p = ½·log(c/g_p)`` (the step that would still be taken;
at the cap only its negative part) averaged over a window of ``check_every`` steps has an RMS
below ``tol``. Every sentence owns a ``torch.Generator``: its probes and noise draws do not
depend on which other sentences share the batch, so batching never changes an answer.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import torch
from torch import Tensor

from .fixed_draws import FixedDrawProblem, FixedDrawSettings, SolveSettings, explain_sentence
from .objective import FeatureFn, SampledDistortion, linear_solution, linearize, noise, step_to_level, water_level

_IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
SATURATION = 0.99  # σ at or above this share of the cap counts as "fully forgotten"
STOP_REASONS = ("converged", "max_steps", "linearized")
SMALL_FEATURE_SAMPLES = 64  # default draws per step for a small fixed-size feature (else 16)
UPDATES = ("newton", "fixed_draws", "adam")
TIE_TOLERANCE = 1e-5  # relative: a distortion this close to τ is at τ; entropies this close are equal


@dataclass(frozen=True)
class OptimSettings:
    """Knobs of :func:`fit_sigma`. Defaults are the fast, converging mode.

    Attributes:
        method: ``"optimize"`` (the linearised warm start, then refinement on the real
            feature) or ``"linearized"`` (the closed form of the linearised problem only: one
            batched backward pass, exact where the feature is linear in the noise).
        per_element: one σ per embedding element (True) or one per token (False, the paper).
        n_samples: noise draws per sentence per step (extra batch rows). ``None``:
            :data:`SMALL_FEATURE_SAMPLES` (64) for a fixed-size feature of at most
            ``exact_jacobian`` elements (a logit, a probability: one number per draw carries
            little about each word), else 16.
        max_steps: most refinement steps per sentence.
        check_every: window (steps) of the stationarity test and of iterate averaging.
        tol: a sentence converges when the RMS of the window-mean step ``½·log(c/g)`` is below
            ``tol`` (0.02 ≈ 2 % in σ).
        early_stop: stop updating (and computing) a sentence once it has converged.
        init: ``"linear"`` warm start from the linearised closed form, or ``"random"``
            (θ ~ N(0, 1), σ = cap·sigmoid(θ), as in the reference).
        n_probes: Rademacher vector–Jacobian products per sentence for the Hutchinson estimate
            of the Jacobian norms (features with more than ``exact_jacobian`` elements).
        exact_jacobian: a feature with at most this many elements gets its exact Jacobian
            (one backward row per element) and the control variate.
        update: the solver. ``"newton"`` (default): stochastic Newton steps on fresh draws.
            ``"fixed_draws"``: the sample-average solver of :mod:`captum_entropy.fixed_draws`
            (tolerance objective, one σ per token: draws fixed per sentence, a KKT test,
            per-word error bars, several optima; experimental, see docs/method.md). ``"adam"``: the
            authors' choice (penalised objective only; uses ``lr``).
        max_jump: largest change of log σ per step (newton update).
        curvature_decay: the newton update steps with an exponential moving average of the
            measured curvature ``g_p / (2σ_p²)`` (bias-corrected; 0 = this step's draws only).
        lr: Adam learning rate on the parameter (log σ, or θ for the sigmoid form).
        lr_decay_steps: Adam's lr is divided by ``sqrt(1 + step / lr_decay_steps)``; ``None``: constant.
        parametrization: ``"log"`` (σ = exp(u), projected onto σ ≤ cap) or ``"sigmoid"``
            (σ = cap · sigmoid(θ), the reference; Adam only).
        select: ``"average"`` (mean of log σ over the last window) or ``"min_loss"`` (the
            state after the step with the lowest single-sample loss, the reference; Adam only).
        n_draws: fixed_draws: the draws a sentence starts with (antithetic pairs, even).
        max_draws: fixed_draws: the draws are doubled up to this many while the median
            standard error of the free words' log σ is above ``precision``.
        precision: fixed_draws: the target median standard error of log σ (0.1 ≈ 10 % in σ).
        starts: fixed_draws: solves per sentence: from the linearised σ, then with each of the
            ``starts − 1`` most-kept words pushed to the cap (other optima).
        ambiguity_gap: fixed_draws: another optimum within this many nats per dimension of
            the best makes the sentence ``ambiguous``.
        continuation: fixed_draws: fractions of τ solved first from the linearised start
            (exact as τ → 0), e.g. ``(0.25,)``; ``()`` starts at τ.
        max_iter: fixed_draws: most iterations of one solve.
    """

    method: str = "optimize"
    per_element: bool = False
    n_samples: int | None = None
    max_steps: int = 100
    check_every: int = 5
    tol: float = 0.02
    early_stop: bool = True
    init: str = "linear"
    n_probes: int = 16
    exact_jacobian: int = 64
    update: str = "newton"
    max_jump: float = 1.0
    curvature_decay: float = 0.5
    lr: float = 0.05
    lr_decay_steps: float | None = 50.0
    parametrization: str = "log"
    select: str = "average"
    n_draws: int = FixedDrawSettings.n_draws
    max_draws: int = FixedDrawSettings.max_draws
    precision: float = FixedDrawSettings.precision
    starts: int = FixedDrawSettings.starts
    ambiguity_gap: float = FixedDrawSettings.ambiguity_gap
    continuation: tuple[float, ...] = FixedDrawSettings.continuation
    max_iter: int = SolveSettings.max_iter

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        def positive_int(name: str, low: int = 1) -> None:
            v = getattr(self, name)
            default = next(f.default for f in fields(self) if f.name == name)
            need(_is_int(v) and v >= low, f"{name} must be an int >= {low}, got {v!r} (the default is {default})")

        reals = ("lr", "tol", "max_jump", "curvature_decay") + (() if self.lr_decay_steps is None else ("lr_decay_steps",))
        for name in reals:
            v = getattr(self, name)
            need(_is_real(v), f"{name} must be a number, got {v!r}")
        for name in ("per_element", "early_stop"):
            need(_is_bool(getattr(self, name)), f"{name} must be True or False, got {getattr(self, name)!r}")

        for name in ("max_steps", "check_every", "n_probes", "max_iter", "starts"):
            positive_int(name)
        positive_int("n_draws", 2)
        need(self.n_draws % 2 == 0, f"n_draws must be even (antithetic pairs), got {self.n_draws}")
        need(_is_int(self.max_draws) and self.max_draws >= self.n_draws,
             f"max_draws must be an int >= n_draws ({self.n_draws}), got {self.max_draws!r}")
        for name in ("precision", "ambiguity_gap"):
            v = getattr(self, name)
            need(_is_real(v) and math.isfinite(v) and v > 0, f"{name} must be a positive number, got {v!r}")
        need(isinstance(self.continuation, (tuple, list)) and all(_is_real(f) and 0 < f < 1 for f in self.continuation),
             f"continuation must be a tuple of fractions of τ in (0, 1), e.g. (0.25,) or (), got {self.continuation!r}")
        need(self.n_samples is None or (_is_int(self.n_samples) and self.n_samples >= 1),
             f"n_samples must be an int >= 1 or None (automatic, the default), got {self.n_samples!r}")
        positive_int("exact_jacobian", 0)
        need(
            self.method in ("optimize", "linearized"),
            f"method must be 'optimize' or 'linearized', got {self.method!r}"
            + (" (an integration rule of IntegratedGradients; this method has no path)" if self.method in _IG_RULES else ""),
        )
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr!r}")
        need(
            math.isfinite(self.tol) and self.tol > 0,
            f"tol must be a positive number, got {self.tol!r}: it is the threshold of the stationarity test "
            "(the RMS step in log σ still to take), which tol=0 can never pass; to run all max_steps "
            "pass early_stop=False",
        )
        need(self.lr_decay_steps is None or self.lr_decay_steps > 0, f"lr_decay_steps must be > 0 or None, got {self.lr_decay_steps!r}")
        need(self.init in ("linear", "random"), f"init must be 'linear' or 'random', got {self.init!r}")
        need(self.parametrization in ("log", "sigmoid"), f"parametrization must be 'log' or 'sigmoid', got {self.parametrization!r}")
        need(self.select in ("average", "min_loss"), f"select must be 'average' or 'min_loss', got {self.select!r}")
        need(self.update in UPDATES, f"update must be one of {UPDATES}, got {self.update!r}")
        need(
            self.update == "adam" or (self.parametrization == "log" and self.select == "average"),
            f"update={self.update!r} works on log σ: parametrization='sigmoid' and "
            "select='min_loss' need update='adam'",
        )
        need(math.isfinite(self.max_jump) and self.max_jump > 0, f"max_jump must be > 0, got {self.max_jump!r}")
        need(0 <= self.curvature_decay < 1, f"curvature_decay must be in [0, 1), got {self.curvature_decay!r}")


def _is_int(v: object) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def _is_real(v: object) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def _is_bool(v: object) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"


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
        settings: see :class:`OptimSettings`.
        tolerance: (B,) τ, the constrained objective: the largest allowed ``D``.
        entropy_weight: (B,) ``w``, the penalised objective ``D − w·mean_p log σ_p``.
        progress: called with the number of steps done after each step.

    Exactly one of ``tolerance`` and ``entropy_weight`` is given.
    """
    if (tolerance is None) == (entropy_weight is None):
        raise ValueError("give exactly one of tolerance (constrained) and entropy_weight (penalised)")
    s = settings
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

    if s.method == "optimize" and s.update == "fixed_draws":
        if tolerance is None or s.per_element:
            raise ValueError("update='fixed_draws' solves the tolerance objective with one σ per token: pass "
                             "tolerance (not entropy_weight) and per_element=False, or use update='newton'")
        return _fixed_draws(values, mask, feature_fn, clean, lin, u_lin, lin_se, log_cap, valid, generators, s,
                            budget, progress)
    state = _State(b, s, u0, dev, dtype, residual if s.update == "newton" else None)
    if s.method == "optimize":
        dist = SampledDistortion(values, clean, feature_fn, lin, dtype)
        run = _newton if s.update == "newton" else _adam
        run(state, dist, generators, mask, valid, log_cap, budget, pull, s, progress)
    else:
        state.reason[:] = STOP_REASONS.index("linearized")

    with torch.no_grad():
        u = state.result()
        sigma, saturated = _answer(u, log_cap, valid)
    nan = lambda x: x.masked_fill(~valid, math.nan)  # noqa: E731
    return SigmaFit(
        sigma=sigma, saturated=saturated, steps=state.steps, converged=state.converged, stop_reason=state.reason,
        stationarity=state.stat, distortion=state.dist, losses=state.losses, init_sigma=nan(torch.exp(u0)),
        linear_sigma=nan(torch.exp(u_lin)), linear_log_se=nan(lin_se),
        log_sigma_se=nan(lin_se if s.method == "linearized" else torch.full_like(u, math.nan)),
        ambiguous=torch.zeros(b, dtype=torch.bool, device=dev), ambiguity_gap=torch.full((b,), math.nan, dtype=dtype, device=dev),
        alternative_sigma=sigma.clone(), trades=torch.zeros((b, t), dtype=torch.bool, device=dev),
        n_draws=torch.full((b,), 0 if s.method == "linearized" else (s.n_samples or 0), dtype=torch.long, device=dev),
    )


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
    fd = FixedDrawSettings(
        n_draws=s.n_draws, max_draws=s.max_draws, precision=s.precision, starts=s.starts,
        ambiguity_gap=s.ambiguity_gap, continuation=tuple(s.continuation),
        solve=SolveSettings(tol=s.tol, max_iter=s.max_iter, radius=s.max_jump),
    )
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

    def __init__(self, b: int, s: OptimSettings, u0: Tensor, dev, dtype, residual: Callable | None = None) -> None:
        self.s, self.residual = s, residual
        self.u = u0.clone()
        zeros = lambda: torch.zeros_like(u0)  # noqa: E731
        self.u_win, self.r_win, self.r2_win = zeros(), zeros(), zeros()  # sums over the current window
        self.u_acc, self.r_acc = zeros(), zeros()  # sums since the last drifting window
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
        g: Tensor | None = None, d: Tensor | None = None,
    ) -> None:
        """Book one step of ``rows``; at a window's end, update the averages and the test.

        ``g`` and ``d`` (Newton): the measured gradient and distortion, averaged for the
        stationarity test, where the gap ``½·log(D̄/τ)`` counts like one more parameter's step.
        """
        if g is not None:
            self.g_win[rows] += g.masked_fill(~valid[rows], 0.0)
            self.d_win[rows] += d
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
        self.n_acc[full] = self.n_acc[full] * keep[:, 0, 0] + w
        self.g_acc[full] = self.g_acc[full] * keep + self.g_win[full]
        self.d_acc[full] = self.d_acc[full] * keep[:, 0, 0] + self.d_win[full]
        n = self.n_acc[full]
        if self.residual is not None:
            # the step still to take by the *averaged* gradient and distortion: a log of the mean,
            # not a mean of logs of noisy single steps (which is biased by their noise)
            r_bar, gap = self.residual(full, self.u_acc[full] / n[:, None, None], self.g_acc[full] / n[:, None, None],
                                       self.d_acc[full] / n)
            self.stat[full] = (rms(r_bar.masked_fill(~valid, 0.0).pow(2)).pow(2) + gap.pow(2)).sqrt()
        else:  # the penalised objective (Adam): no distortion budget, so no gap
            self.stat[full] = rms((self.r_acc[full] / n[:, None, None]).pow(2))
        done = full[self.stat[full] < self.s.tol]
        self.converged[done] = True
        self.reason[done] = STOP_REASONS.index("converged")
        for t in (self.u_win, self.r_win, self.r2_win, self.g_win, self.d_win):
            t[full] = 0.0
        self.in_window[full] = 0
        if self.s.early_stop:
            self.active = self.active[~self.converged[self.active]]

    def result(self) -> Tensor:
        if self.best_u is not None:  # select="min_loss"
            return self.best_u
        # a sentence that never completed a window keeps its latest iterate
        averaged = self.u_acc / self.n_acc.clamp_min(1)[:, None, None]
        return torch.where((self.n_acc > 0)[:, None, None], averaged, self.u)


def _stationarity_step(g: Tensor, level: Tensor, room: Tensor) -> Tensor:
    """``r_p``: the step of log σ still to take, up to the cap (at the cap only a push down counts).

    Not limited by ``max_jump``: a sentence that cannot move fast enough is not stationary."""
    return torch.minimum(step_to_level(g, level, math.inf), room.clamp_min(0.0))


def _free(u: Tensor, log_cap: Tensor, ok: Tensor) -> Tensor:
    """Parameters below the cap; all of a row's parameters if none is (a row stuck at the cap)."""
    free = (u < log_cap - 1e-6) & ok
    return torch.where(free.flatten(1).any(1)[:, None, None], free, ok)


def _rescale(u: Tensor, shift: Tensor, log_cap: Tensor, ok: Tensor, max_jump: float) -> Tensor:
    """Shift the free parameters' log σ by ``shift`` (per row), under the cap.

    Parameters at the cap stay there, unless the shift is down by the whole trust region: then
    the free words alone cannot bring D to τ, and the words at the cap, whose noise may hold it
    up (a feature saturated by their noise has no gradient to show it), come down with them.
    """
    moves = _free(u, log_cap, ok) | (ok & (shift <= -max_jump + 1e-9)[:, None, None])
    return torch.where(moves, torch.minimum(u + shift[:, None, None], log_cap), u)


def _newton(state: _State, dist: SampledDistortion, generators, mask, valid, log_cap, budget, pull, s, progress) -> None:
    b, t, ks = state.u.shape
    k = dist.values.shape[-1]
    alpha = torch.ones(b, dtype=state.u.dtype, device=state.u.device)
    tiny = torch.finfo(state.u.dtype).tiny
    curv = torch.zeros_like(state.u)  # EMA of g / (2σ²): the quadratic coefficient a_p
    beta = s.curvature_decay
    for step in range(s.max_steps):
        rows = state.active
        if len(rows) == 0:
            break
        eps = noise(generators, rows, mask, (s.n_samples, t, k), state.u.dtype)
        cap, ok = log_cap[rows], valid[rows]
        with torch.enable_grad():
            leaf = state.u[rows].detach().requires_grad_(True)
            d0 = dist(leaf, rows, eps)
            _check_finite(d0, rows, step)
            (g,) = torch.autograd.grad(d0.sum(), leaf)
        with torch.no_grad():
            d0, g = d0.detach(), g.masked_fill(~ok, 0.0)
            u = state.u[rows]
            n_seen = state.steps[rows].to(u.dtype)[:, None, None]
            curv[rows] = beta * curv[rows] + (1 - beta) * g / (2 * torch.exp(2 * u))
            g_smooth = (2 * torch.exp(2 * u) * curv[rows] / (1 - beta ** (n_seen + 1))).masked_fill(~ok, 0.0)
            if budget is not None:
                level = water_level(g_smooth, cap - u, ok, budget[rows])
                # the current point rescaled to D = τ along u + s (first order in s)
                slope = g.masked_fill(~_free(u, cap, ok), 0.0).flatten(1).sum(1) / d0.clamp_min(tiny)
                s_cur = (torch.log(budget[rows] / d0.clamp_min(tiny)) / slope.clamp_min(tiny)).clamp(-s.max_jump, s.max_jump)
                current = _rescale(u, s_cur, cap, ok, s.max_jump)
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
                d2 = dist(_rescale(proposal, s1, cap, ok, s.max_jump), rows, eps)
                _check_finite(d2, rows, step)
                log_d1, log_d2 = torch.log(d1.clamp_min(tiny)), torch.log(d2.clamp_min(tiny))
                # decisions read "at τ" within TIE_TOLERANCE: a draw that lands on τ (the secant often
                # does) must not be decided by float rounding, which differs with the batch's size
                near = TIE_TOLERANCE * tau
                bracket = ((d1 - tau) * (d2 - tau) <= 0) | ((d1 - tau).abs() <= near) | ((d2 - tau).abs() <= near)
                rise = torch.where((log_d2 - log_d1).abs() > 1e-12, log_d2 - log_d1, torch.ones_like(log_d1))
                frac = torch.where(bracket, ((torch.log(tau) - log_d1) / rise).clamp(0.0, 1.0), (s1 > 0).to(s1.dtype))
                eligible = bracket | ((d1 <= tau + near) & (d2 <= tau + near))
                candidate = torch.where(ok, _rescale(proposal, s1 * frac, cap, ok, s.max_jump), cap)
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
            state.record(rows, step, r, loss, d_new, valid, g=g, d=d0)
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
