"""The sampling floor of σ on a prediction: how many noise draws an average of the default's
gradient estimate needs for a given precision of log σ, and what that costs against
``LayerIntegratedGradients(n_steps=50)``.

For each of the first ``--sentences`` held-out test sentences of a zoo model, at the default's
answer σ (predicted logit; 0.1's default, ``common.DEFAULT_0_1``: independent draws, the
stationarity test, no check, as the stored results were made), the script takes the library's own estimate of the
gradient ``ĝ_p = ∂D̂/∂log σ_p`` (:class:`captum_entropy.objective.SampledDistortion`: the exact-
Jacobian control variate included, as a Newton step takes it) on ``--chunks`` fresh batches of
64 draws (the default's batch; plain, in antithetic pairs, and plain without the control
variate, to show what the control variate removes), and measures per word

* ``v``: the relative variance of the estimate per draw, ``64·Var(ĝ_p)/ḡ_p²`` over the batches;
* and per sentence the homogeneity ``h = ½·Σ_p ḡ_p/D̄`` (1: D grows like σ², a linear feature;
  below 1: the feature saturates and D is flatter in σ).

Model of the error (a fixed point ``g_p = c`` of a separable ``D ≈ Σ_p φ_p`` with
``φ_p ∝ σ_p^{2h}``; first order): after N draws SE(log σ_p) ≈ ½·sqrt(v/N)/h, so a precision p
needs ``N(p) = v/(4·h²·p²)`` draws, whatever update rule averages this estimate (Newton, Adam,
a sample-average solve). Every "median" is the median (of an even count, the mean of the two
middle values). The default averages only its later steps, so its own draws (steps ×
64) overstate what its answer rests on. The script prints, per sentence and as medians, v, h, N(0.05),
N(0.1), the seconds those draws take at the measured cost of one gradient batch, that time
against a warm LIG(50) on the same sentences, and the standard error of log σ reachable within
10× LIG; and, as a check of the model, the default's reported SE against ½·sqrt(v/N) with N its
own draws (steps × 64).

    python benchmarks/sampling_floor.py --models transformer,lstm,cnn --sentences 8 --json benchmarks/results/sampling_floor_word_models.json
    python benchmarks/sampling_floor.py --models minilm --sentences 4 --chunks 32 --json benchmarks/results/sampling_floor_minilm.json
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

import captum_entropy.attr as attr_module
from captum_entropy import EntropyAttribution
from captum_entropy.objective import SampledDistortion, linearize, noise
from common import DEFAULT_0_1, write_json

BATCH = 64  # draws per gradient estimate: the default's per-step batch on a logit
PRECISIONS = (0.05, 0.1)
KINDS = ("plain", "antithetic", "plain_without_control_variate")


class FitSpy:
    """Wraps ``fit_sigma`` as :mod:`captum_entropy.attr` calls it, keeping its inputs and answer."""

    def __init__(self) -> None:
        self.real, self.calls = attr_module.fit_sigma, []

    def __enter__(self) -> "FitSpy":
        def spy(*args, **kwargs):
            fit = self.real(*args, **kwargs)
            self.calls.append((args, kwargs, fit))
            return fit

        attr_module.fit_sigma = spy
        return self

    def __exit__(self, *exc) -> None:
        attr_module.fit_sigma = self.real


def gradient_batches(args: tuple, fit, chunks: int, antithetic: bool, seed: int,
                     control_variate: bool = True) -> tuple:
    """``chunks`` estimates of ``(ĝ, D̂)`` at the fit's σ, each on ``BATCH`` fresh draws, and the
    seconds one estimate takes for the whole batch of sentences; ``args``: what ``fit_sigma``
    was called with (:class:`FitSpy`). ``control_variate=False``: the plain sampled distortion."""
    values, mask, feature_fn, clean, feature_mask, max_sigma, generators, settings = args[:8]
    dtype = torch.promote_types(values.dtype, torch.float32)
    b, t, k = values.shape
    gens = [torch.Generator(device=values.device).manual_seed(seed + i) for i in range(b)]
    lin = linearize(values, feature_mask, feature_fn, gens, settings.exact_jacobian, settings.n_probes,
                    settings.per_element, dtype)
    valid = mask[:, :, None]
    lin.a = lin.a.masked_fill(~valid, 0.0)
    if not control_variate:
        lin.jac = None
    dist = SampledDistortion(values, clean, feature_fn, lin, dtype)
    u = torch.log(fit.sigma.to(dtype)).nan_to_num(0.0)
    rows = torch.arange(b, device=values.device)
    grads, dists = [], []
    start = time.perf_counter()
    for _ in range(chunks):
        eps = noise(gens, rows, mask, (BATCH, t, k), dtype, antithetic)
        with torch.enable_grad():
            leaf = u.detach().requires_grad_(True)
            d = dist(leaf, rows, eps)
            (g,) = torch.autograd.grad(d.sum(), leaf)
        grads.append(g[..., 0].masked_fill(~mask, 0.0))
        dists.append(d.detach())
    seconds = (time.perf_counter() - start) / chunks
    return torch.stack(grads), torch.stack(dists), seconds


def median(x) -> float:
    """The median (of an even count the mean of the two middle values)."""
    return float(torch.quantile(torch.as_tensor(x, dtype=torch.float64), 0.5))


def sentence_floor(g: torch.Tensor, d: torch.Tensor, free: torch.Tensor) -> dict:
    """v (median over the free words), h, and the draws N(p) for one sentence; ``g`` (C, T)."""
    g_bar, d_bar = g.mean(0), d.mean()
    h = float(0.5 * g_bar.sum() / d_bar)
    v = median(BATCH * g[:, free].var(0) / g_bar[free].pow(2))
    return {"v": float(v), "h": h, **{f"draws_{p}": float(v / (4 * h * h * p * p)) for p in PRECISIONS}}


def model_floor(name: str, n: int, chunks: int) -> dict:
    from seed_agreement import held_out, warm_lig_seconds

    zm, stats, ids, mask, pred = held_out(name, n)
    t_lig = warm_lig_seconds(zm, ids, mask, pred)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    with FitSpy() as spy, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=stats, **DEFAULT_0_1)
        t_default = time.perf_counter() - start
    (args, _, fit), = spy.calls
    mask_t = args[1]
    out = {"model": name, "sentences": n, "chunks": chunks, "warm_lig_seconds": round(t_lig, 3),
           "default_seconds": round(t_default, 2)}
    for kind, antithetic, cv in (("plain", False, True), ("antithetic", True, True),
                                 ("plain_without_control_variate", False, False)):
        g, d, sec = gradient_batches(args, fit, chunks, antithetic, seed=10_000, control_variate=cv)
        rows = []
        for b in range(n):
            free = mask_t[b] & ~fit.saturated[b, :, 0]
            row = sentence_floor(g[:, b], d[:, b], free)
            reported = median(fit.log_sigma_se[b, :, 0][free])
            used = int(fit.steps[b]) * BATCH
            row.update(reported_se=float(reported), model_se=float(0.5 * math.sqrt(row["v"] / used)),
                       model_se_over_h=float(0.5 * math.sqrt(row["v"] / used) / row["h"]))
            rows.append(row)
        per_draw = sec / (BATCH * n)  # seconds of one draw's gradient, one sentence
        med = lambda key: median([r[key] for r in rows])  # noqa: E731
        summary = {"median_v": round(med("v"), 1), "median_h": round(med("h"), 3),
                   "seconds_per_batch_of_64_all_sentences": round(sec, 3)}
        for p in PRECISIONS:
            floor = sum(r[f"draws_{p}"] for r in rows) * per_draw
            summary[f"median_draws_p{p}"] = round(med(f"draws_{p}"))
            summary[f"floor_seconds_p{p}"] = round(floor, 2)
            summary[f"floor_vs_warm_lig_p{p}"] = round(floor / t_lig, 1)
        # the precision reachable within 10× LIG: N = 10·t_lig/per_draw/n draws a sentence
        budget = 10 * t_lig / per_draw / n
        summary["draws_in_10x_lig"] = round(budget)
        summary["median_se_at_10x_lig"] = round(median([0.5 * math.sqrt(r["v"] / budget) / r["h"] for r in rows]), 3)
        summary["median_reported_se"] = round(med("reported_se"), 3)
        summary["median_model_se"] = round(med("model_se"), 3)
        summary["median_model_se_over_h"] = round(med("model_se_over_h"), 3)
        out[kind] = {
            **summary, "per_sentence": [{k: round(x, 4) for k, x in r.items()} for r in rows]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="transformer,lstm,cnn")
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=16, help="batches of 64 draws per estimate of the variance")
    parser.add_argument("--json", default=None, help="write the results here")
    a = parser.parse_args()
    results = []
    for name in a.models.split(","):
        res = model_floor(name, a.sentences, a.chunks)
        print({k: v for k, v in res.items() if k not in KINDS})
        for kind in KINDS:
            print(" ", kind, {k: v for k, v in res[kind].items() if k != "per_sentence"})
        results.append(res)
    if a.json:
        write_json(a.json, results)


if __name__ == "__main__":
    main()
