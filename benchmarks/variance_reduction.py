"""Which variance reduction lowers the sampling floor on a prediction?

The floor (``benchmarks/sampling_floor.py``) is set by ``v``, the relative variance per draw of
the gradient estimate ``ĝ_p = ∂D̂/∂log σ_p`` at the answer. This script measures ``v`` for the
library's estimate (:class:`~captum_entropy.objective.SampledDistortion`) under other designs of
a batch of 64 standard normal draws and other control variates, each unbiased (only the variance
can differ), over ``--chunks`` batches each:

* draws: ``independent`` (0.1's default); ``antithetic`` (32 draws and their negatives, the
  default on a logit since 0.2); ``sobol`` (randomised quasi-Monte Carlo: a scrambled Sobol
  sequence through the normal quantile, coordinates ordered coordinate-major, the first
  coordinate of every token first, in antithetic pairs, each batch its own scrambling);
  ``sobol, rotated`` (the same, each token's draw reflected so that its first coordinate lies
  along that token's clean Jacobian, where a linear feature reads it);
* control variates: ``clean J`` (the default: the exact Jacobian at the sentence,
  ``‖J·(σ⊙ε)‖²`` with its closed-form mean); ``averaged J`` (the same form on the Jacobian
  averaged over 256 noisy points at the answer's σ, from draws of their own: by Stein's lemma
  the best linear predictor of the change, frozen, so its mean is still in closed form);
  ``none``.

Beside ``v``, the share of the change ``f(x + σ⊙ε) − f(x)`` each linear predictor explains
(``R² = 1 − E[(Δ − J·σ⊙ε)²]/E[Δ²]`` on the antithetic batches): how much a control variate built on
it can remove. σ is the default's answer stored with docs/findings.md
(``benchmarks/results/findings/<model>-output-*.safetensors``, the first held-out test
sentences, predicted logit, noise on the real tokens); ``v`` is the median over each sentence's
words below the cap, and a ratio is an arm's ``v`` over the default arm's, per sentence, then
the median. No timing: every arm costs the same passes (but ``averaged J``'s 256 pilot draws).

    python benchmarks/variance_reduction.py --models transformer,lstm,cnn,minilm --sentences 4 --chunks 24 --json benchmarks/results/variance_reduction.json
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import torch

from captum_entropy import EntropyAttribution
from captum_entropy.layerwise import LayerExplanation
from captum_entropy.objective import Linearization, SampledDistortion, linearize, noise
from common import DEFAULT_0_1, covering, write_json
from sampling_floor import BATCH, FitSpy, median

ARMS = (("independent", "clean J"), ("antithetic", "clean J"), ("antithetic", "none"), ("antithetic", "averaged J"),
        ("sobol", "clean J"), ("sobol, rotated", "clean J"))
DEFAULT_ARM = "antithetic / clean J"
PILOT = 256  # noisy points behind the averaged Jacobian
FINDINGS = Path(__file__).parent / "results" / "findings"


def sobol_normal(n: int, dim: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """``n`` scrambled Sobol points in ``dim`` dimensions, mapped to standard normal coordinates."""
    points = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed).draw(n).to(dtype)
    return math.sqrt(2) * torch.erfinv(2 * points.clamp(1e-7, 1 - 1e-7) - 1)


def quasi_noise(mask: torch.Tensor, shape: tuple[int, int, int], seed: int, dtype: torch.dtype,
                directions: torch.Tensor | None) -> torch.Tensor:
    """(B, S, T, K) Sobol draws in antithetic pairs, padding 0; ``directions`` (B, T, K) unit
    vectors: each token's draw is reflected so that its first coordinate lies along them."""
    s, t, k = shape
    out = torch.zeros((mask.shape[0], s, t, k), dtype=dtype)
    for b in range(mask.shape[0]):
        valid = mask[b]
        w = int(valid.sum())
        z = sobol_normal(s // 2, w * k, seed * 7919 + b, dtype).reshape(s // 2, k, w).transpose(1, 2)
        if directions is not None:
            reflect = torch.zeros_like(directions[b][valid])
            reflect[:, 0] = 1
            reflect = reflect - directions[b][valid]
            reflect = reflect / reflect.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            z = z - 2 * reflect * (z * reflect).sum(-1, keepdim=True)
        out[b][:, valid] = torch.cat([z, -z])
    return out


def stored_answer(name: str, n: int, mask: torch.Tensor) -> torch.Tensor:
    """log σ (B, T, 1) of the first ``n`` sentences' predicted logit from the findings' chunks."""
    first = LayerExplanation.load(covering(FINDINGS, f"{name}-output", ".safetensors")[0])
    t = min(mask.shape[1], first.mask.shape[1])
    if (len(first.mask) < n or not torch.equal(first.mask[:n, :t].bool(), mask[:, :t].bool())
            or first.mask[:n, t:].any() or mask[:, t:].any()):
        raise SystemExit(f"{name}: the stored answer's tokens differ from these {n} sentences'")
    u = torch.zeros(mask.shape, dtype=torch.float32)
    u[:, :t] = first.log_sigma[0, :n, :t].float()
    return u.nan_to_num(0.0)[..., None]  # padding: NaN on disk


def averaged_jacobian(values, mask, feature_fn, sigma, dtype) -> torch.Tensor:
    """(B, T, K) the feature's gradient averaged over :data:`PILOT` noisy points (own draws)."""
    b, t, k = values.shape
    rows = torch.arange(b)
    gens = [torch.Generator().manual_seed(777 + i) for i in range(b)]
    total = torch.zeros((b, t, k), dtype=dtype)
    for _ in range(PILOT // BATCH):
        eps = noise(gens, rows, mask, (BATCH, t, k), dtype, True)
        x = (values[:, None].to(dtype) + sigma[:, None] * eps).reshape(-1, t, k).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(feature_fn(x, rows.repeat_interleave(BATCH))[:, 0].sum(), x)
        total += grad.reshape(b, BATCH, t, k).sum(1)
    return (total / PILOT).masked_fill(~mask[:, :, None], 0.0)


def model_arms(name: str, n: int, chunks: int) -> dict:
    from seed_agreement import held_out

    zm, stats, ids, mask, pred = held_out(name, n)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    with FitSpy() as spy, warnings.catch_warnings():  # one step: only the arguments are wanted
        warnings.simplefilter("ignore")
        ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=stats,
                            **{**DEFAULT_0_1, "max_steps": 1})
    (args, _, _), = spy.calls
    values, _, feature_fn, clean, feature_mask, max_sigma, _, settings = args[:8]
    mask = mask.bool()  # noise on the real tokens, as the stored answers were made
    dtype = torch.promote_types(values.dtype, torch.float32)
    b, t, k = values.shape
    gens = [torch.Generator().manual_seed(i) for i in range(b)]
    lin = linearize(values, feature_mask, feature_fn, gens, settings.exact_jacobian, settings.n_probes,
                    settings.per_element, dtype)
    lin.a = lin.a.masked_fill(~mask[:, :, None], 0.0)
    u = stored_answer(name, n, mask)
    sigma = u.exp()
    jac_bar = averaged_jacobian(values, mask, feature_fn, sigma, dtype)
    jacobians = {"clean J": lin.jac[:, 0], "averaged J": jac_bar}
    variates = {"none": Linearization(lin.a, lin.a_se, None, lin.has_jac), "clean J": lin,
                "averaged J": Linearization(jac_bar.pow(2).sum(-1, keepdim=True), lin.a_se, jac_bar[:, None], lin.has_jac)}
    directions = lin.jac[:, 0] / lin.jac[:, 0].norm(dim=-1, keepdim=True).clamp_min(1e-30)
    free = mask & (u[..., 0] < torch.log(max_sigma.to(dtype)).reshape(-1, 1) - 1e-3)
    rows = torch.arange(b)
    out = {"model": name, "sentences": n, "chunks": chunks, "r2": {}}
    explained = {key: [] for key in jacobians}
    for design, variate in ARMS:
        dist = SampledDistortion(values, clean, feature_fn, variates[variate], dtype)
        gens = [torch.Generator().manual_seed(10_000 + i) for i in range(b)]
        grads = []
        for c in range(chunks):
            if design in ("independent", "antithetic"):
                eps = noise(gens, rows, mask, (BATCH, t, k), dtype, antithetic=design == "antithetic")
            else:
                eps = quasi_noise(mask, (BATCH, t, k), c + 1, dtype, directions if "rotated" in design else None)
            with torch.enable_grad():
                leaf = u.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(dist(leaf, rows, eps).sum(), leaf)
            grads.append(g[..., 0])
            if (design, variate) == ("antithetic", "none"):  # the same draws for both predictors
                with torch.no_grad():
                    shift = sigma[:, None] * eps
                    feat = feature_fn((values[:, None] + shift).reshape(-1, t, k), rows.repeat_interleave(BATCH))
                    delta = feat[:, 0].reshape(b, BATCH) - clean[:, 0, None]
                    for key, jac in jacobians.items():
                        rest = delta - torch.einsum("btk,bstk->bs", jac, shift)
                        explained[key].append(torch.stack([rest.pow(2).sum(1), delta.pow(2).sum(1)]))
        g = torch.stack(grads)
        v = [median(BATCH * g[:, i][:, free[i]].var(0) / g[:, i][:, free[i]].mean(0).pow(2)) for i in range(b)]
        arm = f"{design} / {variate}"
        out[arm] = {"v": [round(x, 2) for x in v], "median_v": round(median(v), 1)}
        print(name, arm, out[arm], flush=True)
    for key, parts in explained.items():
        rest, total = torch.stack(parts).sum(0)
        out["r2"][key] = [round(float(x), 3) for x in 1 - rest / total]
    base = out[DEFAULT_ARM]["v"]
    for design, variate in ARMS:
        arm = out[f"{design} / {variate}"]
        arm["median_ratio_to_default"] = round(median([x / y for x, y in zip(arm["v"], base)]), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="transformer,lstm,cnn,minilm")
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=24, help="batches of 64 draws per arm")
    parser.add_argument("--json", default=None, help="write the results here")
    a = parser.parse_args()
    results = [model_arms(name, a.sentences, a.chunks) for name in a.models.split(",")]
    arms = [f"{d} / {c}" for d, c in ARMS]
    print("| model | " + " | ".join(arms) + " | R² clean J | R² averaged J |")
    print("|---" * (len(arms) + 3) + "|")
    for r in results:
        r2 = [", ".join(f"{x:.2f}" for x in r["r2"][key]) for key in ("clean J", "averaged J")]
        print(f"| {r['model']} ({r['sentences']}) | "
              + " | ".join(f"{r[a]['median_v']} ({r[a]['median_ratio_to_default']}×)" for a in arms)
              + f" | {r2[0]} | {r2[1]} |")
    if a.json:
        write_json(a.json, results)


if __name__ == "__main__":
    main()
