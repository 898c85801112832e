"""The optimiser's settings: :class:`OptimSettings` (every knob of :func:`~captum_entropy.optim.fit_sigma`,
validated on construction), its constants, and the number checks that :mod:`.settings` shares.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace

from .fixed_draw_answer import FixedDrawSettings
from .fixed_draws import SolveSettings

_IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
SATURATION = 0.99  # σ at or above this share of the cap counts as "fully forgotten"
STOP_REASONS = ("converged", "max_steps", "linearized")
SMALL_FEATURE_SAMPLES = 64  # default draws per step for a small fixed-size feature (else 16)
PREDICTION_PRECISION = 0.05  # the default precision target of newton on a small fixed-size feature
PREDICTION_STARTS = 3  # newton on a small fixed-size feature: the answer and two pushes (other optima)
UPDATES = ("newton", "fixed_draws", "adam")
POLISH = ("auto", "always", "never")
CONTROL_VARIATES = ("clean", "averaged")
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
            :data:`SMALL_FEATURE_SAMPLES` (64) for a *small* feature (fixed-size, at most
            ``exact_jacobian`` elements: a logit, a probability; one number per draw carries
            little about each word), else 16. Every automatic value is decided per feature by
            :meth:`for_feature`.
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
        polish: newton: where the answer is the closed form on the averaged curvature (unbiased
            where the averaged iterate is not, see ``captum_entropy.optim._polish``) rather than the
            averaged iterate: ``"never"`` (default, for now: every published number was made
            with it), ``"auto"`` (features with their exact Jacobian: a logit, a probability;
            measured closer to a long reference, docs/method.md) or ``"always"``.
        antithetic: newton: each step's ``n_samples`` draws in antithetic pairs (ε, −ε; needs an
            even ``n_samples``): the odd part of the sampled distortion cancels within a pair
            (measured in docs/performance.md). ``"auto"`` (default): pairs on a small feature,
            where the exact-Jacobian control variate takes out the linear part (without it, pairs
            measured worse: docs/performance.md), independent draws elsewhere.
        control_variate: newton, on a feature with its exact Jacobian: the Jacobian behind the
            control variate. ``"clean"`` (default): the Jacobian at the sentence. ``"averaged"``:
            on a one-number feature (a logit), the Jacobian averaged over the noisy points of the
            earlier steps (:class:`~captum_entropy.objective.AveragedJacobian`): the best linear
            predictor of the change where the feature bends within the noise; measured to remove
            more of the variance on the zoo's CNN and LSTM logits (docs/performance.md).
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
        max_draws: fixed_draws: the draws grow (in doublings) up to this many while the
            median standard error of the free words' log σ is above ``precision``, and never
            stop below 128 (the error bars' least count) unless this is lower.
        precision: the target median standard error of the free words' log σ (0.05 ≈ 5 % in σ).
            newton: a sentence also stops (converged) at a window without drift once it is this
            precise and every word's remaining step is within ``tol`` plus three of its standard
            errors of zero (``update_rules._State._precise``); ``None``: only the stationarity
            test; ``"auto"`` (default): :data:`PREDICTION_PRECISION` (0.05) on a small feature,
            ``None`` elsewhere. fixed_draws: the draws grow until it holds; ``None`` or ``"auto"``: 0.1.
        starts: fixed_draws: solves per sentence: from the linearised σ, then from it with each
            of the ``starts − 1`` most-kept words dropped to the cap (other optima); ``None``: 2.
            newton (tolerance objective, one σ per token): above 1, the answer is checked for
            other optima with each of its ``starts − 1`` most-kept words pushed to the cap, on
            fixed draws (:mod:`captum_entropy.other_optima`); ``None`` (default):
            :data:`PREDICTION_STARTS` (3) on a small feature, else 1 (no check).
        ambiguity_gap: fixed_draws, and newton's check of other optima: another optimum within
            this many nats per dimension of the best makes the sentence ``ambiguous``.
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
    polish: str = "never"
    antithetic: bool | str = "auto"
    control_variate: str = "clean"
    max_jump: float = 1.0
    curvature_decay: float = 0.5
    lr: float = 0.05
    lr_decay_steps: float | None = 50.0
    parametrization: str = "log"
    select: str = "average"
    n_draws: int = FixedDrawSettings.n_draws
    max_draws: int = FixedDrawSettings.max_draws
    precision: float | str | None = "auto"
    starts: int | None = None
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
        need(_is_bool(self.antithetic) or self.antithetic == "auto",
             f"antithetic must be True, False or 'auto' (the default: pairs where the control variate exists), "
             f"got {self.antithetic!r}")

        for name in ("max_steps", "check_every", "n_probes", "max_iter"):
            positive_int(name)
        need(self.starts is None or (_is_int(self.starts) and self.starts >= 1),
             f"starts must be an int >= 1 or None (the solver's default), got {self.starts!r}")
        positive_int("n_draws", 2)
        need(self.n_draws % 2 == 0, f"n_draws must be even (antithetic pairs), got {self.n_draws}")
        need(_is_int(self.max_draws) and self.max_draws >= self.n_draws,
             f"max_draws must be an int >= n_draws ({self.n_draws}), got {self.max_draws!r}")
        for name, v in (("precision", self.precision), ("ambiguity_gap", self.ambiguity_gap)):
            optional = ", None or 'auto' (the default)" if name == "precision" else ""
            need((optional and (v is None or v == "auto")) or (_is_real(v) and math.isfinite(v) and v > 0),
                 f"{name} must be a positive number{optional}, got {v!r}")
        need(isinstance(self.continuation, (tuple, list)) and all(_is_real(f) and 0 < f < 1 for f in self.continuation),
             f"continuation must be a tuple of fractions of τ in (0, 1), e.g. (0.25,) or (), got {self.continuation!r}")
        need(self.n_samples is None or (_is_int(self.n_samples) and self.n_samples >= 1),
             f"n_samples must be an int >= 1 or None (automatic, the default), got {self.n_samples!r}")
        need(not (self.antithetic is True and self.n_samples is not None and self.n_samples % 2),
             f"antithetic=True draws pairs: n_samples must be even, got {self.n_samples}")
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
        need(self.polish in POLISH, f"polish must be one of {POLISH}, got {self.polish!r}")
        need(self.control_variate in CONTROL_VARIATES,
             f"control_variate must be one of {CONTROL_VARIATES}, got {self.control_variate!r}")
        need(self.update in UPDATES, f"update must be one of {UPDATES}, got {self.update!r}")
        need(
            self.update == "adam" or (self.parametrization == "log" and self.select == "average"),
            f"update={self.update!r} works on log σ: parametrization='sigmoid' and "
            "select='min_loss' need update='adam'",
        )
        need(math.isfinite(self.max_jump) and self.max_jump > 0, f"max_jump must be > 0, got {self.max_jump!r}")
        need(0 <= self.curvature_decay < 1, f"curvature_decay must be in [0, 1), got {self.curvature_decay!r}")

    def for_feature(self, small: bool, constrained: bool) -> "OptimSettings":
        """These settings with every automatic value decided for one feature.

        ``small``: a fixed-size feature with its exact Jacobian (at most ``exact_jacobian``
        elements: a logit, a probability), so the control variate exists; ``constrained``: the
        tolerance objective. On such a feature newton draws 64 antithetic draws a step, stops at
        precision 0.05 (or the stationarity test, or ``max_steps``) and checks its answer for
        other optima (``starts=3``); elsewhere 16 independent draws and the stationarity test.
        Values set by hand are kept; deciding twice changes nothing.

        >>> OptimSettings().for_feature(small=True, constrained=True).precision
        0.05
        >>> OptimSettings().for_feature(small=False, constrained=True).antithetic
        False
        """
        n = self.n_samples if self.n_samples is not None else (SMALL_FEATURE_SAMPLES if small else 16)
        newton = small and self.method == "optimize" and self.update == "newton"
        starts = self.starts
        if starts is None and newton and constrained and not self.per_element:
            starts = PREDICTION_STARTS
        return replace(
            self, n_samples=n, starts=starts,
            antithetic=(newton and n % 2 == 0) if self.antithetic == "auto" else self.antithetic,
            precision=(PREDICTION_PRECISION if newton else None) if self.precision == "auto" else self.precision,
        )


def _is_int(v: object) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def _is_real(v: object) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def _is_bool(v: object) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"
