"""Where the fixed-draw solver (``update="fixed_draws"``, experimental) stands, against the default.

1. **The redundancy toy** (``captum_entropy.evaluate.known.RedundantEvidence``: two words carry the same
   evidence, the output saturates; τ = 0.2, cap 10): σ of words 2 and 5 and the objective (mean
   log σ) of each solver's answer, its distortion scored on 8192 fresh antithetic draws.
2. **A zoo model's predicted logit** (``minilm``, ``transformer``, ``lstm``, ``cnn``) on the first
   ``--sentences`` held-out test sentences (σ_S from the library's cached 256 training
   sentences), for each rule in ``--updates``: share of sentences that converged (the KKT test for
   fixed_draws), seed 0 against seed 1 (Spearman of σ over real tokens), wall time against
   ``LayerIntegratedGradients(n_steps=50)`` on the same batch and targets, in one process; for
   fixed_draws also the median standard error of log σ, the draws used, ambiguous sentences.

    python benchmarks/fixed_draws_status.py [--sentences 4] [--parts calibration,toy,minilm,cnn] [--updates fixed_draws,newton]

3. **Calibration** (``--parts calibration``): how often the 95 % intervals cover the closed form of
   a linear logit sampled without the control variate, on 32 to 256 draws.

Prints one JSON object per part.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch

from captum_entropy import EntropyAttribution
from captum_entropy.evaluate.known import RedundantEvidence, redundant_sentences
from common import spearman


def fresh_objective(model, x, sigma, draws: int = 8192) -> tuple[float, float]:
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(draws // 2, *x.shape, generator=g)
    eps = torch.cat([eps, -eps])
    with torch.no_grad():
        d = float((model(x[None] + sigma[None] * eps) - model(x[None])).pow(2).mean())
    return round(float(sigma.log().mean()), 3), round(d, 4)


def part_toy() -> dict:
    model = RedundantEvidence()
    x = redundant_sentences(model)
    ea = EntropyAttribution(model, model.emb)
    out = {"part": "redundancy toy (tau=0.2, cap 10; objective = mean log sigma, D on 8192 fresh draws)"}
    for update in ("newton", "fixed_draws"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ea.attribute_result(x, feature_std=torch.tensor(1.0), max_sigma=10.0, tolerance=0.2, update=update)
        out[update] = [
            {"sigma_2": round(float(res.sigma[b, 2, 0]), 3), "sigma_5": round(float(res.sigma[b, 5, 0]), 3),
             "objective_and_D": fresh_objective(model, x[b], res.sigma[b]), "converged": bool(res.converged[b]),
             "ambiguous": bool(res.ambiguous[b])}
            for b in range(len(x))
        ]
    return out


def part_calibration(seeds: int = 60) -> dict:
    """Coverage of the 95 % intervals on a linear logit ``Σ_i w_i·x_i`` (5 words, 8 dims) sampled
    without the control variate, where the answer is known in closed form, by number of draws."""
    from captum_entropy.fixed_draw_answer import FixedDrawSettings, explain_sentence
    from captum_entropy.fixed_draws import FixedDrawProblem
    from captum_entropy.objective import linear_solution

    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 8, generator=g, dtype=torch.float64)
    x = torch.randn(1, 5, 8, generator=g, dtype=torch.float64)
    tau, cap = 0.05, 1e3
    f = lambda z: (z * w).sum((1, 2))[:, None]  # noqa: E731
    a = w.pow(2).sum(-1)
    truth = linear_solution(a[None, :, None], torch.ones(1, 5, 1, dtype=torch.bool),
                            torch.tensor(math.log(cap), dtype=torch.float64),
                            tolerance=torch.tensor([tau], dtype=torch.float64))[0, :, 0]
    out = {"part": f"95 % interval coverage on a sampled linear logit (5 words x {seeds} draw sets)"}
    for n in (32, 64, 128, 256):
        covered = 0
        for seed in range(seeds):
            problem = FixedDrawProblem(x, torch.arange(5), f, f(x)[0], None, torch.Generator().manual_seed(seed),
                                       torch.float64)
            sol = explain_sentence(problem, truth, math.log(cap), tau,
                                   FixedDrawSettings(n_draws=n, max_draws=n, starts=1, continuation=()))
            covered += int(((sol.u - truth).abs() <= 1.96 * sol.se).sum())
        out[f"draws_{n}"] = round(covered / (5 * seeds), 3)
    return out


def part_model(name: str, n: int, updates: tuple[str, ...] = ("fixed_draws",)) -> dict:
    """A zoo model's predicted logit on its first ``n`` held-out test sentences: per update rule,
    seed 0 against seed 1 and the wall time against LayerIntegratedGradients(n_steps=50)."""
    from captum.attr import LayerIntegratedGradients

    from captum_entropy.explainer import feature_stats
    from captum_entropy.zoo import load, load_polarity

    zm = load(name, progress=False)
    stats = feature_stats(zm)
    ids, mask = zm.tokenize([e.text for e in load_polarity("test")[:n]])
    with torch.no_grad():
        pred = zm.forward(ids, mask).argmax(-1)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    lig = LayerIntegratedGradients(zm.forward, zm.embedding)
    start = time.perf_counter()
    lig.attribute(ids, target=pred, additional_forward_args=(mask,), n_steps=50)
    t_lig = time.perf_counter() - start
    out = {"part": f"{name} predicted logit, {n} held-out sentences (defaults otherwise)",
           "lig_n_steps_50_seconds": round(t_lig, 2)}
    for update in updates:
        runs, times = [], []
        for seed in (0, 1):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs.append(ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=stats,
                                                seed=seed, update=update))
            times.append(time.perf_counter() - start)
        r0, r1 = runs
        rho = [spearman(r0.sigma[b][r0.mask[b]], r1.sigma[b][r0.mask[b]]) for b in range(n)]
        finite = [v for v in rho if not math.isnan(v)]
        row = {"converged": f"{int(r0.converged.sum())}/{n}",
               "seed0_vs_seed1_spearman": [None if math.isnan(v) else round(float(v), 3) for v in rho],
               "mean_spearman": round(sum(finite) / len(finite), 3) if finite else None,
               "seconds_seed0": round(times[0], 1), "ratio_to_lig": round(times[0] / t_lig, 1)}
        if update == "fixed_draws":
            se = r0.log_sigma_se[r0.mask & ~r0.saturated][:, 0]
            row.update(median_se_log_sigma=round(float(se.median()), 3) if se.numel() else None,
                       draws=r0.n_draws.tolist(), ambiguous=r0.ambiguous.tolist())
        out[update] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--parts", default="toy,minilm", help="calibration, toy and any of minilm, transformer, lstm, cnn")
    parser.add_argument("--updates", default="fixed_draws", help="update rules to compare, e.g. fixed_draws,newton")
    args = parser.parse_args()
    torch.manual_seed(0)
    parts = args.parts.split(",")
    if "calibration" in parts:
        print(json.dumps(part_calibration()))
    if "toy" in parts:
        print(json.dumps(part_toy()))
    for name in ("minilm", "transformer", "lstm", "cnn"):
        if name in parts:
            updates = tuple(args.updates.split(","))
            print(json.dumps(part_model(name, args.sentences, updates)), flush=True)


if __name__ == "__main__":
    main()
