"""Other optima of a Newton answer: each most-kept word pushed to the cap, on fixed draws.

Newton's steps see each word alone (a diagonal model). Where two words carry the same evidence
they can settle on a point that keeps both partly: a point where every free word's gradient is
equal (a KKT point) that is not the best one. On the redundancy toy
(:class:`captum_entropy.evaluate.known.RedundantEvidence`) the answer stays there, keeping
words 2 and 5 partly, at 20, 50, 100 and 200 steps alike (tests/test_other_optima.py), about
0.1 nats per dimension below keeping one of them alone. The check below finds such points
with forward passes only; it does not replace the answer where it finds nothing better.

For one sentence, on ``draws`` fixed antithetic draws of its own (the plain sample average,
without the control variate, whose weight is tuned to one point):

1. the answer, *levelled* (every free word shifted by a common amount to ``D = τ``), and its
   merit (:func:`captum_entropy.fixed_draws.merit`);
2. for each of the ``starts − 1`` most-kept free words: the answer with that word at the cap,
   levelled: where the evidence is redundant, another word takes its place;
3. if a pushed point comes within reach of the answer (twice ``ambiguity_gap``), the answer
   and every pushed point within reach of the best so far are solved on the same draws
   (:func:`captum_entropy.fixed_draws.solve`): optima are compared with optima (the answer
   solved there leaves a saddle, or stays, and then the Newton answer is kept); the best
   optimum is the answer;
4. another candidate within ``ambiguity_gap`` of it that keeps other words makes the sentence
   ``ambiguous`` (:func:`captum_entropy.fixed_draw_answer.moved` says which words trade off).
   A replacing optimum is then solved on more draws until its median standard error is the
   precision target (:func:`captum_entropy.fixed_draw_answer.solve_to_precision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .fixed_draw_answer import FixedDrawSettings, moved, runner_up, solve_to_precision
from .fixed_draws import TIE, FixedDrawProblem, below_cap, merit, solve, standard_errors

LEVELS = 6  # most common shifts to bring D to τ
LEVEL_TOL = 0.01  # |log(D/τ)| that counts as on the surface (the merit's error is as large)


@dataclass
class Check:
    """One sentence's checked answer (vectors over its real tokens)."""

    u: Tensor  # log σ: the Newton answer, or a better optimum the check found
    se: Tensor  # its standard error of log σ (the Newton one where kept)
    replaced: bool  # a better optimum replaced the Newton answer
    ambiguous: bool
    gap: float  # merit gap to the runner-up (NaN: none found that keeps other words)
    alternative: Tensor  # log σ of the runner-up (= u if none)
    trades: Tensor  # bool: the words whose σ differs between the two


def level(problem: FixedDrawProblem, u: Tensor, cap: float, tau: float) -> tuple[Tensor, float]:
    """``u`` with every free word shifted by one amount until ``D = τ`` on the draws (a secant on
    ``log D`` against the shift, from the slope of a feature linear in the noise), and its merit."""
    free = below_cap(u, cap)
    if not free.any():
        free = torch.ones_like(free)
    d, slope = problem.evaluate(u, grad=False).d, 2.0  # d log D / d shift
    for _ in range(LEVELS):
        miss = math.log(tau / max(d, 1e-300))
        if abs(miss) < LEVEL_TOL:
            break
        t = max(-10.0, min(10.0, miss / slope))
        moved_u = torch.where(free, (u + t).clamp_max(cap), u)
        d_new = problem.evaluate(moved_u, grad=False).d
        if d > 0 and d_new > 0 and math.log(d_new / d) / t > 0.2:
            slope = math.log(d_new / d) / t
        u, d = moved_u, d_new
    return u, merit(u, d, tau)


def check_answer(problem: FixedDrawProblem, u: Tensor, se: Tensor, cap: float, tau: float,
                 s: FixedDrawSettings) -> Check:
    """Look for other optima around a Newton answer ``u`` (its standard errors ``se``) with
    ``s.starts − 1`` pushes; see the module docstring. ``problem`` holds the draws (its control
    variate is not used); a replacing optimum gets more of them, up to ``s.max_draws``, until its
    median standard error is ``s.precision``."""
    starts, ambiguity_gap = s.starts, s.ambiguity_gap
    problem.cap, problem.beta = cap, 0.0
    u = u.double().clamp_max(cap)
    levelled, m0 = level(problem, u, cap, tau)
    zero = torch.zeros_like(u)

    def solved(start: Tensor, m_start: float) -> tuple[Tensor, float, Tensor, bool]:
        """The fixed-draw optimum reached from ``start``, or ``start`` itself if none better."""
        ev, _, _, ok = solve(problem, start, cap, tau, s.solve)
        m_ev = merit(ev.u, ev.d, tau)
        return (ev.u, m_ev, standard_errors(ev, cap), True) if ok and m_ev >= m_start else (start, m_start, zero, False)

    free = below_cap(u, cap)
    pushed = []  # the answer with each of the most-kept free words at the cap, levelled
    for k in [int(i) for i in torch.argsort(u) if bool(free[i])][: max(starts - 1, 0)]:
        start = levelled.clone()
        start[k] = cap
        pushed.append(level(problem, start, cap, tau))
    # candidates: (log σ, merit on the draws, standard errors, solved by the fixed-draw solver)
    cands: list[tuple[Tensor, float, Tensor, bool]] = [(u, m0, se.double(), False)]
    if any(m > m0 - 2 * ambiguity_gap for _, m in pushed):
        # something within reach: compare optima with optima. The Newton answer solved on the same
        # draws stays where it is if it is an optimum (then the Newton answer, more precise, is
        # kept) and leaves a saddle
        v, m, se_v, ok = solved(levelled, m0)
        if ok and moved(v, u, se.double()).any():
            cands.append((v, m, se_v, ok))
    for start, m in pushed:
        best = max(c[1] for c in cands)
        cands.append(solved(start, m) if m > best - 2 * ambiguity_gap else (start, m, zero, False))
    top = max(range(len(cands)), key=lambda i: cands[i][1])
    if top != 0 and cands[top][1] <= m0 + TIE * (1 + abs(m0)):
        top = 0  # a tie keeps the Newton answer
    if top != 0 and not cands[top][3]:
        top = 0  # only a solved optimum replaces the answer
    u_best, m_best, se_best, _ = cands[top]
    if top != 0:  # the replacing optimum made as precise as the fixed-draw solver makes its answers
        ev, _, _, se_best, _ = solve_to_precision(problem, u_best, cap, tau, s)
        u_best = ev.u
    others = [(v, m_best - m) for i, (v, m, _, _) in enumerate(cands) if i != top]
    runner, gap, trades = runner_up(u_best, se_best, others)
    return Check(u=u_best, se=se_best, replaced=top != 0, ambiguous=not math.isnan(gap) and gap <= ambiguity_gap,
                 gap=gap, alternative=runner, trades=trades)
