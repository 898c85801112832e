"""Two seeds' answers on a zoo model's held-out sentences: the workload, the pair of runs, and
what they say together (used by fixed_draws_status.py, sampling_floor.py, variance_reduction.py).

- :func:`held_out`: a zoo model, its cached σ_S, its first ``n`` held-out test sentences and
  its predictions; :func:`warm_lig_seconds`: a warm ``LayerIntegratedGradients(n_steps=50)``
  on them (the cost yardstick);
- :func:`seed_pair`: ``attribute_result`` for seeds 0 and 1 and their Spearman per sentence;
- :func:`agreement`: what the error bars promise across the seeds;
- :func:`held_back`: what holds back a sentence whose seeds disagree;
- :func:`seed_summary`: all of it in the fields the JSON lines of the benchmarks carry.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from captum_entropy import EntropyAttribution
from common import spearman


def held_out(name: str, n: int, first: int = 0, device: str | torch.device | None = None):
    """The zoo model ``name``, its cached σ_S, ``n`` held-out test sentences from sentence
    ``first`` on (ids, mask) and its predictions on them; with ``device``, the model and the
    sentences there (σ_S stays where the cache holds it: the library moves it)."""
    from captum_entropy.explainer import feature_stats
    from captum_entropy.zoo import load, load_polarity

    zm = load(name, progress=False)
    ids, mask = zm.tokenize([e.text for e in load_polarity("test")[first:first + n]])
    if device is not None:
        zm.model.to(device)
        ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        pred = zm.forward(ids, mask).argmax(-1)
    return zm, feature_stats(zm), ids, mask, pred


def _sync(t: torch.Tensor) -> None:
    """Wait for ``t``'s device (CUDA runs asynchronously: a clock read too early times the launch)."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


def warm_lig_seconds(zm, ids: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> float:
    """Seconds of ``LayerIntegratedGradients(n_steps=50)`` on the predicted logit of the batch,
    warm: the fastest of three calls after a small warm-up call."""
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(zm.forward, zm.embedding)
    lig.attribute(ids[:2], target=pred[:2], additional_forward_args=(mask[:2],), n_steps=5)  # warm-up
    t_lig = math.inf
    for _ in range(3):
        _sync(ids)
        start = time.perf_counter()
        lig.attribute(ids, target=pred, additional_forward_args=(mask,), n_steps=50)
        _sync(ids)
        t_lig = min(t_lig, time.perf_counter() - start)
    return t_lig


def seed_pair(ea: EntropyAttribution, ids: torch.Tensor, **kwargs):
    """``ea.attribute_result(ids, **kwargs)`` for seeds 0 and 1 (warnings silenced): both results,
    the seconds seed 0 took, and the Spearman of σ between them over each sentence's real tokens."""
    runs, seconds = [], []
    for seed in (0, 1):
        _sync(ids)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(ea.attribute_result(ids, seed=seed, **kwargs))
        _sync(ids)
        seconds.append(time.perf_counter() - start)
    r0, r1 = runs
    rho = [spearman(r0.sigma[b][r0.mask[b]], r1.sigma[b][r0.mask[b]]) for b in range(len(r0.mask))]
    return r0, r1, seconds[0], rho


def agreement(r0, r1) -> dict:
    """What the error bars promise across seeds: of the word pairs seed 0 orders (95 % intervals
    apart), the share seed 1's σ puts in the same order, and the share seed 1 orders the other
    way with its own intervals apart; the share of all pairs seed 0 orders; the between-seed SD of
    log σ (SD of the difference over √2) over the across-word SD, median over sentences."""
    pairs = ordered = same = against = 0
    ratios = []
    for b in range(len(r0.mask)):
        m = r0.mask[b]
        u0, u1 = r0.sigma[b][m].log().mean(-1), r1.sigma[b][m].log().mean(-1)
        o0, o1 = r0.ordered()[b][m][:, m], r1.ordered()[b][m][:, m]
        n = int(m.sum())
        pairs += n * (n - 1) // 2
        ordered += int(o0.sum())
        same += int((o0 & (u1[:, None] < u1[None, :])).sum())  # ordered() means: i has the lower σ
        against += int((o0 & o1.T).sum())
        if n > 2 and float(u0.std()) > 0:
            ratios.append(float((u0 - u1).std() / math.sqrt(2) / u0.std()))
    ratios.sort()
    return {"pairs_ordered_by_seed0": round(ordered / max(pairs, 1), 3),
            "same_order_by_seed1": round(same / ordered, 3) if ordered else None,
            "ordered_the_other_way_by_seed1": round(against / ordered, 3) if ordered else None,
            "between_seed_sd_over_word_sd_median": round(ratios[len(ratios) // 2], 3) if ratios else None}


def held_back(r0, r1, rho: list[float], below: float = 0.90, sims: int = 400) -> list[dict]:
    """What holds back each sentence whose seed-0-vs-seed-1 Spearman ``rho`` is below ``below``
    (point 4(b) of the issue: "flat objective" or "several optima"):

    - ``several optima``: either seed flags the sentence ambiguous (its check found another
      answer within the gap);
    - ``flat objective``: the two answers agree within their error bars (χ² of
      Δ log σ / √(SE₀² + SE₁²) over the words neither run saturates and both measured, p ≥ 0.01),
      so the order of the words closer than their error bars is the draws';
      ``expected_spearman`` is the median Spearman of two answers drawn from the error bars
      around the seeds' mean (``sims`` times). A p near 1 says the error bars are *wider* than
      the seeds' disagreement: the verdict then rests on the answers being close, and the
      expected Spearman understates the agreement;
    - ``not settled``: the answers differ beyond their error bars (the error bars are too narrow
      there, or a run stopped before the optimum);
    - ``no free word``: every word is at the cap in one run or has no measured error bar.

    Words at the cap in one run only are left out of the χ² (a disagreement it does not see)."""
    from scipy.stats import chi2

    gen = torch.Generator().manual_seed(0)
    out = []
    for b, value in enumerate(rho):
        if not value < below:
            continue
        s0, s1 = r0.log_sigma_se[b].mean(-1), r1.log_sigma_se[b].mean(-1)
        measured = torch.isfinite(s0) & torch.isfinite(s1) & ((s0 ** 2 + s1 ** 2) > 0)
        free = r0.mask[b] & ~r0.saturated[b] & ~r1.saturated[b] & measured
        row = {"sentence": b, "words": int(r0.mask[b].sum()), "spearman": round(float(value), 3)}
        if not bool(free.any()):
            out.append({**row, "expected_spearman": None, "chi2_p": None, "held_back_by": "no free word"})
            continue
        l0, l1 = r0.sigma[b][free].log().mean(-1), r1.sigma[b][free].log().mean(-1)
        s0, s1 = s0[free], s1[free]
        p = float(chi2.sf(float(((l0 - l1) ** 2 / (s0 ** 2 + s1 ** 2)).sum()), int(free.sum())))
        mid = (l0 + l1) / 2
        mid, s0, s1 = mid.cpu(), s0.cpu(), s1.cpu()  # the draws come from a CPU generator, whatever the device
        draws = [spearman(mid + s0 * torch.randn(len(mid), generator=gen), mid + s1 * torch.randn(len(mid), generator=gen))
                 for _ in range(sims)]
        verdict = ("several optima" if bool(r0.ambiguous[b]) or bool(r1.ambiguous[b])
                   else "flat objective" if p >= 0.01 else "not settled")
        out.append({**row, "expected_spearman": round(float(torch.tensor(draws).nanmedian()), 3),
                    "chi2_p": round(p, 3), "held_back_by": verdict})
    return out


def seed_summary(r0, r1, rho: list[float]) -> dict:
    """Seed 0 against seed 1 on a batch, as the precision and draws parts print it: Spearman
    (mean, worst, per sentence), the median standard error of seed 0's free words' log σ,
    :func:`agreement` and :func:`held_back`."""
    se = r0.log_sigma_se[r0.mask & ~r0.saturated][:, 0]
    return {"mean_spearman": round(sum(rho) / len(rho), 3), "worst_spearman": round(min(rho), 3),
            "spearman_per_sentence": [round(float(v), 3) for v in rho],
            "median_se_log_sigma": round(float(se.median()), 3), **agreement(r0, r1), "below_0.90": held_back(r0, r1, rho)}
