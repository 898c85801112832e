"""Where the fixed-draw solver (``update="fixed_draws"``, experimental) stands, against the default.

1. **The redundancy toy** (``captum_entropy.evaluate.known.RedundantEvidence``: two words carry the same
   evidence, the output saturates; τ = 0.2, cap 10): σ of words 2 and 5 and the objective (mean
   log σ) of each solver's answer, its distortion scored on 8192 fresh antithetic draws.
2. **The zoo ``minilm``'s predicted logit** on the first ``--sentences`` held-out test sentences
   (σ_S from the library's cached 256 training sentences): share of sentences whose KKT test
   passed, median standard error of log σ, draws used, ambiguous sentences, seed 0 against
   seed 1 (mean Spearman of σ over real tokens), wall time against
   ``LayerIntegratedGradients(n_steps=50)`` on the same batch and targets, in one process.

    python benchmarks/fixed_draws_status.py [--sentences 4] [--parts toy,minilm]

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


def part_minilm(n: int) -> dict:
    from captum.attr import LayerIntegratedGradients

    from captum_entropy.explainer import feature_stats
    from captum_entropy.zoo import load, load_polarity

    zm = load("minilm", progress=False)
    stats = feature_stats(zm)
    ids, mask = zm.tokenize([e.text for e in load_polarity("test")[:n]])
    with torch.no_grad():
        pred = zm.forward(ids, mask).argmax(-1)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    lig = LayerIntegratedGradients(zm.forward, zm.embedding)
    start = time.perf_counter()
    lig.attribute(ids, target=pred, additional_forward_args=(mask,), n_steps=50)
    t_lig = time.perf_counter() - start
    runs, times = [], []
    for seed in (0, 1):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=stats, seed=seed,
                                   update="fixed_draws"))
        times.append(time.perf_counter() - start)
    r0, r1 = runs
    rho = [spearman(r0.sigma[b][r0.mask[b]], r1.sigma[b][r0.mask[b]]) for b in range(n)]
    se = r0.log_sigma_se[r0.mask & ~r0.saturated][:, 0]
    return {
        "part": f"minilm predicted logit, {n} held-out sentences, update='fixed_draws' (defaults otherwise)",
        "kkt_passed": f"{int(r0.converged.sum())}/{n}", "median_se_log_sigma": round(float(se.median()), 3),
        "draws": r0.n_draws.tolist(), "ambiguous": r0.ambiguous.tolist(),
        "seed0_vs_seed1_spearman": [None if math.isnan(v) else round(float(v), 3) for v in rho],
        "seconds": {"fixed_draws_seed0": round(times[0], 1), "lig_n_steps_50": round(t_lig, 2)},
        "ratio_to_lig": round(times[0] / t_lig, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--parts", default="toy,minilm")
    args = parser.parse_args()
    torch.manual_seed(0)
    parts = args.parts.split(",")
    if "toy" in parts:
        print(json.dumps(part_toy()))
    if "minilm" in parts:
        print(json.dumps(part_minilm(args.sentences)))


if __name__ == "__main__":
    main()
