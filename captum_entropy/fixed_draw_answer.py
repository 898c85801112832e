"""One sentence's fixed-draw answer: the draws grown to a precision, other starts, the ambiguity flag.

Built on the one-start solver of :mod:`captum_entropy.fixed_draws`:

* **Precision.** The draws grow (to the count the error bars of
  :func:`~captum_entropy.fixed_draws.standard_errors` ask for, in doublings) until the median
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

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .fixed_draws import TIE, FixedDrawProblem, SolveSettings, Evaluation, merit, below_cap, solve, standard_errors

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


def solve_to_precision(problem: FixedDrawProblem, u: Tensor, cap: float, tau: float, s: FixedDrawSettings,
             merits: list[float] | None = None) -> tuple[Evaluation, float, bool, Tensor, int]:
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
    d_best = problem.evaluate(best, grad=False, beta=0.0).d
    d_other = problem.evaluate(other, grad=False, beta=0.0).d
    return merit(best, d_best, tau) - merit(other, d_other, tau)


def moved(u: Tensor, ref: Tensor, se: Tensor) -> Tensor:
    """The words whose log σ differs between two answers by more than :data:`TRADE` and 3 SE."""
    return (u - ref).abs() > torch.maximum(torch.full_like(se, TRADE), 3 * se)


def runner_up(best: Tensor, se: Tensor, others: list[tuple[Tensor, float]]) -> tuple[Tensor, float, Tensor]:
    """Of ``others`` (log σ, merit gap below ``best``), the closest that keeps other words
    (:func:`moved`): its log σ, its gap (NaN if none) and the words that trade off. A gap below
    0 (the other scores higher on draws it was not chosen on) counts as 0: the two are level."""
    runner, gap, trades = best, math.nan, torch.zeros_like(best, dtype=torch.bool)
    for u, this_gap in others:
        words = moved(u, best, se)
        if words.any() and (math.isnan(gap) or this_gap < gap):
            runner, gap, trades = u, max(this_gap, 0.0), words
    return runner, gap, trades


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
    best = solve_to_precision(problem, u, cap, tau, s, merits)
    iters += best[-1]
    # other starts: the linearised σ with one of the most-kept words dropped to the cap (where the
    # evidence is redundant, another word takes its place). Each is solved on a prefix of the
    # draws first, next to the best answer on the same prefix; only one that ends within reach
    # of it (twice the ambiguity gap) is made as precise as the first.
    n_starts = min(s.starts - 1, int(below_cap(best[0].u, cap).sum()))
    order = torch.argsort(best[0].u)
    others: list[tuple[Evaluation, float]] = []  # an optimum and its gap to the best, on the same draws
    if n_starts > 0:
        search = problem.prefix(min(problem.n_draws, max(SEARCH_DRAWS, s.n_draws)))
        ref = best[0] if search.n_draws == problem.n_draws else solve(search, best[0].u, cap, tau, s.solve)[0]
        se_search = best[3] * math.sqrt(problem.n_draws / search.n_draws)
    # a third of the iterations first: a start still far below the best by then (the merit only
    # rises) is abandoned; one within reach gets the rest
    short = replace(s.solve, max_iter=max(1, s.solve.max_iter // 3))
    for k in range(n_starts):
        start = u_lin.clone()
        start[order[k]] = cap
        ev_alt, _, n_it, ok_alt = solve(search, start, cap, tau, short)
        iters += n_it
        if not ok_alt and merit(ref.u, ref.d, tau) - merit(ev_alt.u, ev_alt.d, tau) <= 2 * s.ambiguity_gap:
            ev_alt, _, n_it, ok_alt = solve(search, ev_alt.u, cap, tau, s.solve)
            iters += n_it
        gap = merit(ref.u, ref.d, tau) - merit(ev_alt.u, ev_alt.d, tau)
        if not ok_alt or not moved(ev_alt.u, ref.u, se_search).any():
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
        if merit(ev_full.u, ev_full.d, tau) > merit(best[0].u, best[0].d, tau) + TIE:
            n_before = problem.n_draws
            new = solve_to_precision(problem, ev_full.u, cap, tau, s)
            iters += new[-1]
            if not new[2]:
                continue  # it does not settle once the draws grow: not an optimum
            loser = best[0]
            if problem.n_draws != n_before:  # the draws grew: the old best on them too
                loser, _, n_it, _ = solve(problem, best[0].u, cap, tau, s.solve)
                iters += n_it
            best = new
        if moved(loser.u, best[0].u, best[3]).any():
            others.append((loser, _plain_gap(problem, best[0].u, loser.u, tau)))
    ev, res, ok, se, _ = best
    value = merit(ev.u, ev.d, tau)
    runner, gap, trades = runner_up(ev.u, se, [(other.u, this_gap) for other, this_gap in others])
    ambiguous = not math.isnan(gap) and gap <= s.ambiguity_gap
    return Solution(
        u=ev.u, se=se, objective=value, distortion=ev.d, kkt=res, converged=ok, iterations=iters,
        n_draws=problem.n_draws, ambiguous=ambiguous, gap=gap, alternative=runner, trades=trades, merits=merits,
    )
