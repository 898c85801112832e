"""Newton's check of other optima (``starts`` > 1): the redundancy toy, its mirror images, a unique
optimum left alone, batching, bad input."""

import warnings

import pytest
import torch

from captum_entropy import EntropyAttribution
from captum_entropy.evaluate.known import RedundantEvidence, redundant_sentences

from .test_fixed_draws import LinearLogit, assert_mirror_flagged, mirrored_sentence, redundant_result

TAU = 0.2


def checked(x: torch.Tensor, **kw):
    model = RedundantEvidence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EntropyAttribution(model, model.emb).attribute_result(
            x, feature_std=torch.tensor(1.0), max_sigma=10.0, **{"tolerance": TAU, **kw})  # the defaults: starts=3 on a logit


def fresh(x: torch.Tensor, sigma: torch.Tensor) -> tuple[float, float]:
    """Mean log σ and D of one answer on 8192 fresh antithetic draws."""
    eps = torch.randn(4096, *x.shape, generator=torch.Generator().manual_seed(5))
    eps = torch.cat([eps, -eps])
    model = RedundantEvidence()
    with torch.no_grad():
        d = float((model(x[None] + sigma[None] * eps) - model(x[None])).pow(2).mean())
    return float(sigma.log().mean()), d


@pytest.mark.parametrize("steps", [20, 50, 100, 200])
def test_without_the_check_newton_keeps_both_redundant_words_partly(steps):
    """The premise: Newton's answer without the check is a point that keeps words 2 and 5 partly
    (neither at the cap), however long it runs."""
    res = checked(redundant_sentences(RedundantEvidence()), starts=1, max_steps=steps)
    assert not res.saturated[:, [2, 5]].any(), res.sigma[:, [2, 5], 0]
    assert not res.ambiguous.any() and res.ambiguity_gap.isnan().all()


def test_the_check_keeps_one_word_as_well_as_the_fixed_draw_solver_and_flags_the_other():
    x = redundant_sentences(RedundantEvidence())
    res, ref = checked(x), redundant_result()
    assert (res.saturated[:, 2] ^ res.saturated[:, 5]).all(), res.sigma[:, [2, 5], 0]  # never a common σ
    for b in range(len(x)):
        (obj, d), (obj_ref, _) = fresh(x[b], res.sigma[b]), fresh(x[b], ref.sigma[b])
        assert abs(d / TAU - 1) < 0.1, d  # feasible on fresh draws
        assert obj >= obj_ref - 0.02, (b, obj, obj_ref)  # as good as the fixed-draw solver's optimum
    # sentence 0: keeping either word alone reaches τ (test_fixed_draws measures the premise): flagged,
    # the alternative keeps the word the answer forgets
    assert bool(res.ambiguous[0]) and 0 <= float(res.ambiguity_gap[0]) <= 0.1
    assert res.trades[0, [2, 5]].all() and not res.trades[0, [0, 1, 3, 4, 6, 7, 8, 9]].any()
    assert bool(res.alternative_sigma[0, 5, 0] < 9.0) == bool(res.saturated[0, 5])
    # sentence 1: the other word alone cannot reach τ: not flagged
    assert not bool(res.ambiguous[1])


@pytest.mark.parametrize("b", [0, 1])
def test_the_check_flags_the_mirror_optimum_from_independent_draws(b):
    """Word 5 a copy of word 2: two mirror optima. (The fixed-draw solver misses the one of
    sentence 0: a strict xfail in test_fixed_draws.)"""
    assert_mirror_flagged(checked(mirrored_sentence(b), antithetic=False))


@pytest.mark.parametrize("b", [0, 1])
def test_the_check_flags_the_mirror_optimum_with_the_defaults(b):
    """Antithetic pairs: Newton's long steps down once dragged the words at the cap (the ignored
    words, gradient 0) along, and it ended at neither mirror image; now only a row the free words
    cannot bring to τ brings them down (test_optimizer's hidden saturation is that row)."""
    assert_mirror_flagged(checked(mirrored_sentence(b)))


def test_a_unique_optimum_is_left_alone():
    model = LinearLogit(tokens=6, dims=8, seed=1)
    x = torch.randn(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ea = EntropyAttribution(model, model.emb)
    kw = dict(feature_std=torch.tensor(1.0), max_sigma=1e3, tolerance=0.05, max_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain, check = ea.attribute_result(x, starts=1, **kw), ea.attribute_result(x, **kw)
    assert torch.equal(plain.sigma, check.sigma) and torch.equal(plain.log_sigma_se, check.log_sigma_se)
    assert not check.ambiguous.any()
    assert (check.ambiguity_gap > 0.1).all()  # the pushed points score far below the answer


def test_the_check_runs_inside_no_grad_with_the_same_answer():
    """Captum's metrics call attribute() inside torch.no_grad(); the check's solves differentiate."""
    x = redundant_sentences(RedundantEvidence())
    with torch.no_grad():
        inside = checked(x)
    outside = checked(x)
    assert torch.equal(inside.sigma, outside.sigma) and torch.equal(inside.ambiguous, outside.ambiguous)
    assert inside.saturated[:, [2, 5]].any(1).all()  # the check ran: one redundant word at the cap


def test_batched_equals_alone():
    x = redundant_sentences(RedundantEvidence())
    together = checked(x)
    for b in range(len(x)):
        alone = checked(x[b : b + 1])
        assert torch.allclose(together.sigma[b], alone.sigma[0], rtol=1e-5)
        assert bool(together.ambiguous[b]) == bool(alone.ambiguous[0])


@pytest.mark.parametrize("kw, match", [
    ({"starts": 3, "entropy_weight": 1.0, "tolerance": None}, r"starts=3 checks a Newton answer .* pass tolerance"),
    ({"starts": 3, "per_element": True}, r"starts=3 checks a Newton answer .* per_element=False, or leave starts unset"),
    ({"starts": 0}, r"starts must be an int >= 1 or None \(the solver's default\), got 0"),
])
def test_bad_settings_name_the_fix(kw, match):
    x = redundant_sentences(RedundantEvidence())[:1]
    with pytest.raises(ValueError, match=match):
        checked(x, **kw)


def test_every_checked_toy_sentence_has_a_runner_up_and_its_gap():
    res = checked(redundant_sentences(RedundantEvidence()))
    assert torch.isfinite(res.ambiguity_gap).all() and res.trades.any(1).all()
