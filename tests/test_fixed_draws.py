"""The fixed-draw solver: closed forms, several optima, error bars, batching and seeds."""

import math

import pytest
import torch
from torch import nn

from captum_entropy import EntropyAttribution
from captum_entropy.evaluate.known import RedundantEvidence as Redundant
from captum_entropy.evaluate.known import redundant_sentences
from captum_entropy.fixed_draw_answer import MIN_DRAWS, FixedDrawSettings, explain_sentence
from captum_entropy.fixed_draws import FixedDrawProblem, SolveSettings, _psd, _secant, model_step
from captum_entropy.objective import linear_solution
from tests.test_optimizer import HiddenSaturation


class LinearLogit(nn.Module):
    """One logit ``Σ_i w_i·x_i`` (x_i ∈ R^K): D is exactly ``Σ_i ‖w_i‖²σ_i²``."""

    def __init__(self, tokens: int = 6, dims: int = 4, seed: int = 0):
        super().__init__()
        self.emb = nn.Identity()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(tokens, dims, generator=g, dtype=torch.float64))

    def forward(self, x):
        return (self.emb(x) * self.w).sum((1, 2))[:, None]


def closed_form(w: torch.Tensor, tau: float, cap: float) -> torch.Tensor:
    a = w.pow(2).sum(-1)
    valid = torch.ones(1, len(a), 1, dtype=torch.bool)
    return linear_solution(a[None, :, None], valid, torch.tensor(math.log(cap), dtype=torch.float64),
                           tolerance=torch.tensor([tau], dtype=torch.float64))[0, :, 0]


def problem_for(f, x, seed: int, exact_jacobian: bool) -> FixedDrawProblem:
    """A FixedDrawProblem for the one sentence x (T, K) under f (R, T, K) -> (R, M)."""
    x = x[None].double()
    clean = f(x)[0]
    jac = None
    if exact_jacobian:
        xx = x.clone().requires_grad_(True)
        rows = [torch.autograd.grad(f(xx)[0, m], xx, retain_graph=True)[0][0] for m in range(len(clean))]
        jac = torch.stack(rows)
    return FixedDrawProblem(x, torch.arange(x.shape[1]), f, clean, jac, torch.Generator().manual_seed(seed),
                            torch.float64)


def test_linear_feature_closed_form_from_a_start_far_from_it():
    model, tau, cap = LinearLogit(), 0.05, 10.0
    x = torch.randn(6, 4, dtype=torch.float64)
    truth = closed_form(model.w, tau, cap)
    start = truth + torch.tensor([1.5, -2.0, 0.7, -0.3, 2.5, -1.0], dtype=torch.float64)  # far, some past the cap
    sol = explain_sentence(problem_for(model, x, 0, True), start, math.log(cap), tau,
                           FixedDrawSettings(continuation=(), solve=SolveSettings(tol=1e-5)))
    assert sol.converged
    torch.testing.assert_close(sol.u, truth, atol=1e-3, rtol=0)
    assert float(sol.se.max()) < 1e-6  # the control variate makes a linear feature exact: no sampling error


def test_words_at_the_cap_are_released_by_the_kkt_sign():
    """A word whose slot is pinned at the cap while the budget needs it is brought down."""
    g = torch.tensor([1.0, 1.0, 4.0], dtype=torch.float64)
    h = torch.diag(2 * g)  # the linear feature's curvature in log σ
    room = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # word 2 sits at the cap
    step = model_step(g, h, d=3.0, tau=1.0, room=room)
    assert step[2] < 0  # it costs most: it comes down, it is not dragged and not left up
    new = g * torch.exp(2 * step)  # the linear model's distortion per word after the step
    assert abs(float(new.sum()) / 2 - 1.0) < 0.3


def test_a_flat_or_indefinite_model_gives_a_step_not_a_crash():
    """H = 0 (the draws see no curvature) or an indefinite H (a secant update gone wrong: it
    crashed a MiniLM solve in cholesky) still gives a finite step."""
    g = torch.tensor([1e-3, 0.0, 2e-3], dtype=torch.float64)
    room = torch.ones(3, dtype=torch.float64)
    for h in (_psd(torch.zeros(3, 3, dtype=torch.float64)), -torch.eye(3, dtype=torch.float64)):
        assert torch.isfinite(model_step(g, h, d=0.2, tau=0.05, room=room)).all()
    # a secant pair with no curvature (step ⟂ change of gradient) leaves h as it was, finite
    h = torch.eye(3, dtype=torch.float64)
    bent = _secant(h, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.isfinite(_psd(bent)).all()
    assert torch.isfinite(_psd(torch.full((3, 3), math.inf, dtype=torch.float64))).all()


def test_error_bars_are_calibrated_on_a_linear_feature_sampled_without_the_control_variate():
    """Without the exact Jacobian the answer on the solver's least draws (MIN_DRAWS = 128, 64
    antithetic pairs) scatters around the closed form: the 95 % interval from the delta method
    covers it 90–99 % of the time. (On 32 draws it covered 85 %: why the solver never stops
    below MIN_DRAWS.)"""
    model, tau, cap = LinearLogit(tokens=5, dims=8, seed=1), 0.05, 1e3
    x = torch.randn(5, 8, dtype=torch.float64)
    truth = closed_form(model.w, tau, cap)
    covered, total = 0, 0
    settings = FixedDrawSettings(n_draws=MIN_DRAWS, max_draws=MIN_DRAWS, starts=1, continuation=())
    for seed in range(60):
        sol = explain_sentence(problem_for(model, x, seed, False), truth, math.log(cap), tau, settings)
        assert sol.converged
        covered += int(((sol.u - truth).abs() <= 1.96 * sol.se).sum())
        total += len(truth)
    assert 0.90 <= covered / total <= 0.99, covered / total


def test_the_draws_grow_to_the_least_count_the_error_bars_need_and_every_prefix_is_antithetic():
    model = LinearLogit(tokens=5, dims=8, seed=1)
    x = torch.randn(5, 8, dtype=torch.float64)
    problem = problem_for(model, x, 0, False)
    sol = explain_sentence(problem, closed_form(model.w, 0.05, 1e3), math.log(1e3), 0.05,
                           FixedDrawSettings(n_draws=32, precision=10.0, starts=1, continuation=()))
    assert sol.n_draws == MIN_DRAWS  # a loose precision is met on 32 draws, but their error bars are not trusted
    for n in (2, 34, 96):
        eps = problem.prefix(n).eps
        torch.testing.assert_close(eps[0::2], -eps[1::2])


def redundant_result(x: torch.Tensor | None = None):
    """The default fixed-draw answer on the toy's sentences (or ``x``), τ = 0.2, cap 10."""
    model = Redundant()
    x = redundant_sentences(model) if x is None else x
    return EntropyAttribution(model, model.emb).attribute_result(x, feature_std=torch.tensor(1.0), max_sigma=10.0, tolerance=0.2,
                                                        update="fixed_draws")


def test_the_fixed_draw_solver_runs_inside_no_grad_with_the_same_answer():
    """Captum's metrics call attribute() inside torch.no_grad(); the solver differentiates."""
    x = redundant_sentences(Redundant())[:1]
    with torch.no_grad():
        inside = redundant_result(x)
    assert torch.equal(inside.sigma, redundant_result(x).sigma)


def test_redundant_evidence_keeps_one_word_never_a_common_sigma():
    res = redundant_result()
    kept2, kept5 = res.saturated[:, 2], res.saturated[:, 5]
    assert (kept2 ^ kept5).all(), res.sigma[:, [2, 5], 0]  # exactly one of the two is forgotten
    others = [0, 1, 3, 4, 6, 7, 8, 9]
    assert res.saturated[:, others].all()
    assert res.converged.all()


def single_keep_floor(model, x, keep: int) -> float:
    """D (on 8192 fresh antithetic draws) when every word but ``keep`` is at the cap (10) and
    ``keep`` is noiseless: the least distortion of an answer that keeps that word alone."""
    eps = torch.randn(4096, *x.shape, generator=torch.Generator().manual_seed(5))
    eps = torch.cat([eps, -eps])
    sigma = torch.full((x.shape[0], 1), 10.0)
    sigma[keep] = 0.0
    with torch.no_grad():
        return float((model(x[None] + sigma[None] * eps) - model(x[None])).pow(2).mean())


def test_redundant_evidence_is_not_flagged_where_the_other_word_alone_cannot_reach_tau():
    """On sentences 1 and 2 keeping the other word alone cannot reach τ = 0.2 (its floor 0.27 /
    0.30 on fresh draws): one optimum, no flag. (Sentence 0 is borderline, floors 0.125 and
    0.17, objectives 1.94 and 1.88: whether its draws see the second optimum depends on them,
    so it is not asserted.)"""
    res = redundant_result()
    model = Redundant()
    x = redundant_sentences(model)
    for b in (1, 2):
        kept = 2 if bool(res.saturated[b, 5]) else 5
        assert single_keep_floor(model, x[b], 7 - kept) > 0.25  # the premise, measured
        assert not bool(res.ambiguous[b])


def mirrored_sentence(b: int) -> torch.Tensor:
    """Sentence ``b`` of the toy with word 5 a copy of word 2: the two optima are mirror images."""
    x = redundant_sentences(Redundant())[b : b + 1].clone()
    x[:, 5] = x[:, 2]
    return x


def assert_mirror_flagged(res) -> None:
    assert bool(res.ambiguous[0]) and 0 <= float(res.ambiguity_gap[0]) < 0.1
    assert res.trades[0, [2, 5]].all() and not res.trades[0, [0, 1, 3, 4, 6, 7, 8, 9]].any()
    assert bool(res.saturated[0, 2]) != bool(res.saturated[0, 5])  # one word kept, never a common σ
    alt_kept5 = bool(res.alternative_sigma[0, 5, 0] < 9.0)
    assert alt_kept5 == bool(res.saturated[0, 5])  # the alternative keeps the word the answer forgets


def test_redundant_evidence_flags_the_mirror_optimum():
    model = Redundant()
    x = mirrored_sentence(1)[0]
    assert single_keep_floor(model, x, 2) < 0.15  # the premise: each word alone reaches τ = 0.2 easily
    assert_mirror_flagged(redundant_result(mirrored_sentence(1)))


@pytest.mark.xfail(strict=True, reason="measured: the second start (word 5 dropped to the cap from the linearised "
                   "σ) releases word 5 again and ends at a common σ (0.73/0.74, gap 0.17), not at the mirror "
                   "optimum; issue 21 point 2 is open")
def test_redundant_evidence_flags_the_mirror_optimum_on_the_other_sentence():
    assert_mirror_flagged(redundant_result(mirrored_sentence(0)))


def tiny_classifier():
    torch.manual_seed(0)
    emb = nn.Embedding(30, 8)
    head = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = emb, head

        def forward(self, ids, mask):
            h = self.emb(ids) * mask[..., None]
            return self.head(h.sum(1) / mask.sum(1, keepdim=True))

    return Model().eval()


def test_batched_equals_alone_and_seeds_agree_within_their_error_bars():
    model = tiny_classifier()
    ids = torch.tensor([[3, 5, 7, 9, 0], [4, 8, 12, 0, 0], [1, 2, 3, 4, 5]])
    mask = (ids > 0).long()
    mask[2] = 1
    ea = EntropyAttribution(model, model.emb)
    kw = dict(target=1, feature_std=torch.ones(2), additional_forward_args=(mask,), update="fixed_draws")
    batch = ea.attribute_result(ids, **kw)
    for b in range(3):
        n = int(mask[b].sum())
        alone = ea.attribute_result(ids[b : b + 1, :n], target=1, feature_std=torch.ones(2), additional_forward_args=(mask[b : b + 1, :n],), update="fixed_draws")
        torch.testing.assert_close(alone.sigma[0], batch.sigma[b, :n], rtol=1e-5, atol=0)
        assert bool(alone.ambiguous[0]) == bool(batch.ambiguous[b])
    other = ea.attribute_result(ids, **kw, seed=1)
    m = batch.mask
    z = (batch.sigma.log() - other.sigma.log())[m].abs() / (batch.log_sigma_se[m] ** 2 + other.log_sigma_se[m] ** 2).sqrt().clamp_min(1e-9)
    assert float((z < 3).float().mean()) >= 0.9
    assert (batch.n_draws >= 32).all() and batch.converged.all()


def test_a_converged_answer_is_feasible_on_fresh_draws_and_a_cut_short_one_is_not_converged():
    model = HiddenSaturation()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 8, generator=g) * 0.3
    x[:, 0] = 0.0
    ea = EntropyAttribution(model, model.emb)
    kw = dict(feature_std=torch.tensor(0.5), max_sigma=3.0, update="fixed_draws")
    res = ea.attribute_result(x, **kw)
    eps = torch.randn(4000, 4, 8, generator=torch.Generator().manual_seed(7))
    for b in range(3):
        with torch.no_grad():
            d = float(((model(x[b][None] + res.sigma[b][None] * eps) - model(x[b][None])) ** 2).mean() / 0.25)
        if bool(res.converged[b]):
            assert d < 2 * 0.05, (b, d)
    with pytest.warns(Warning):
        short = ea.attribute_result(x, **kw, max_iter=1, continuation=(), starts=1)
    assert not (short.converged & (short.steps > 1)).any()
