"""Does the default optimiser reach the optimum of its objective on real features?

For each feature kind (MiniLM layer 3 and layer 6 of all tokens, MiniLM's pooled output, the
predicted logit of the fine-tuned zoo ``minilm``, the LSTM's and the CNN's predicted logit) on
held-out test sentences, with feature statistics fitted on training sentences:

* **default**: ``EntropyAttribution(...).explain(...)`` with default settings, timed;
* **reference**: the same objective, a long many-sample run (``--ref-samples`` draws per step,
  ``--ref-steps`` steps, no early stop, σ averaged over the last ``--ref-window`` steps);
* **objective**: both answers scored on one fresh set of ``--eval-draws`` common noise draws:
  each σ is rescaled along ``log σ + s`` until the distortion equals the tolerance, and its mean
  log σ (the entropy the objective maximises, per dimension) is compared.

Prints per feature: the default's wall time (and, for a logit, LayerIntegratedGradients with
``n_steps=50`` on the same batch and target, timed in the same process), mean Spearman of σ against the reference, median |Δ log σ|, the share of
sentences whose objective is no worse than the reference's (within 0.005 nats per dimension),
convergence, the share of words at the cap, and the share of sentences where every word or no
word is at the cap; then the linearised closed form against the same reference.

    python benchmarks/optimizer_accuracy.py [--sentences 32] [--features minilm-logit,cnn-logit]
    python benchmarks/optimizer_accuracy.py --quick        # 4 sentences, short reference
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch
from scipy.stats import spearmanr

from captum_entropy import EntropyAttribution, FeatureStats
from captum_entropy.attr import DEFAULT_TOLERANCE, Settings, _Problem, _Runner, _max_sigma
from captum_entropy.hooks import no_dropout
from captum_entropy.zoo import load, load_polarity

FEATURES = {  # name: (zoo model, target module getter or None for the predicted logit)
    "minilm-layer3": ("minilm", lambda zm: zm.layers["layer3"]),
    "minilm-layer6": ("minilm", lambda zm: zm.layers["layer6"]),
    "minilm-pooled": ("minilm", lambda zm: zm.model.bert.pooler),
    "minilm-logit": ("minilm", None),
    "lstm-logit": ("lstm", None),
    "cnn-logit": ("cnn", None),
}


def entropy_at_tolerance(zm, module, ids, mask, target, std, sigmas, tau, draws, seed=1234):
    """Mean log σ after rescaling each σ to distortion = τ on common draws (one value per σ, row)."""
    cfg = Settings.from_kwargs(feature_std=std, mask=mask)
    run = _Runner(zm.forward, zm.embedding, False, (ids,), (mask,), ids.shape[0], False)
    with torch.no_grad(), no_dropout():
        values, feats = run.clean([module])
        v3 = values.reshape(values.shape[0], values.shape[1], -1)
        valid = mask.bool()
        problem = _Problem.build(module, feats[0], target, cfg, 0, valid, {})
        log_cap = _max_sigma(cfg, zm.embedding, False, v3, valid).log()
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn((draws, *v3.shape), generator=gen) * valid[None, :, :, None]
        rows = torch.arange(v3.shape[0])

        def distortion(u):
            total = torch.zeros(v3.shape[0])
            for chunk in eps.split(16):
                x = v3[None] + torch.exp(u)[None] * chunk
                f = torch.stack([problem.feature(run, xi, rows) for xi in x])
                total += (f - problem.clean[None]).pow(2).sum(-1).sum(0)
            return total / draws

        scores = []
        for sigma in sigmas:
            u = torch.where(valid[..., None], sigma.log(), log_cap[:, None, None])
            shift = lambda s: torch.minimum(u + s[:, None, None], log_cap[:, None, None])  # noqa: E731
            s0, d0 = torch.zeros(len(u)), distortion(u)
            s1 = 0.5 * torch.log(tau / d0)
            d1 = distortion(shift(s1))
            for _ in range(4):  # secant on log D
                rise = torch.log(d1) - torch.log(d0)
                s2 = torch.where(rise.abs() > 1e-9, s1 + (math.log(tau) - torch.log(d1)) * (s1 - s0) / rise, s1)
                s0, d0, s1 = s1, d1, s2
                d1 = distortion(shift(s1))
            final = shift(s1)
            scores.append(torch.stack([final[b][valid[b]].mean() for b in range(len(u))]))
    return scores


def compare(sigma, ref, mask):
    rho, dlog = [], []
    for b in range(len(mask)):
        a, r = sigma[b][mask[b]].flatten(), ref[b][mask[b]].flatten()
        rho.append(spearmanr(a.numpy(), r.numpy())[0] if a.std() > 0 and r.std() > 0 else float("nan"))
        dlog.append((a.log() - r.log()).abs())
    return float(torch.tensor(rho).nanmean()), float(torch.cat(dlog).median())


def run_feature(name, zm, module_of, stats_cache, args):
    test = load_polarity("test")[: args.sentences]
    ids, mask = zm.tokenize([e.text for e in test])
    with torch.no_grad():
        pred = zm.forward(ids, mask).argmax(-1)
    module = module_of(zm) if module_of else None
    key = (zm.name, name)
    if key not in stats_cache:
        train = load_polarity("train")[:256]
        batches = [zm.tokenize([e.text for e in train[i : i + 64]]) for i in range(0, len(train), 64)]
        stats_cache[key] = FeatureStats().fit(zm.forward, batches, layers={"f": module}, mask_index=1)
    std = stats_cache[key]["f" if module is not None else "output"]
    target = pred if module is None else None
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
    common = dict(target=target, additional_forward_args=(mask,), mask=mask, feature_std=std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        default = ea.explain(ids, **common)
        took = time.perf_counter() - start
        ref = ea.explain(
            ids, **common, n_samples=args.ref_samples, max_steps=args.ref_steps, check_every=args.ref_window,
            early_stop=False, curvature_decay=0.9, seed=99,
        )
    lig_seconds = None
    if module is None:  # the predicted logit: LayerIntegratedGradients(n_steps=50) on the same batch and target
        from captum.attr import LayerIntegratedGradients

        start = time.perf_counter()
        LayerIntegratedGradients(zm.forward, zm.embedding).attribute(
            ids, target=pred, additional_forward_args=(mask,), n_steps=50
        )
        lig_seconds = round(time.perf_counter() - start, 2)
    valid = mask.bool()
    rho, dlog = compare(default.sigma, ref.sigma, valid)
    rho_lin, dlog_lin = compare(default.linear_sigma, ref.sigma, valid)
    scores = entropy_at_tolerance(
        zm, module, ids, mask, target, std, [default.sigma, ref.sigma, default.linear_sigma], DEFAULT_TOLERANCE, args.eval_draws
    )
    gap = scores[0] - scores[1]
    capped = default.saturated[valid].float().mean()
    all_or_none = ((default.saturated | ~valid).all(1) | ~(default.saturated & valid).any(1)).float().mean()
    return {
        "feature": name, "sentences": len(test), "seconds": round(took, 2), "lig_seconds": lig_seconds,
        "spearman": round(rho, 3), "median_abs_dlog": round(dlog, 4),
        "objective_not_worse": round(float((gap >= -0.005).float().mean()), 3),
        "objective_gap_median": round(float(gap.median()), 4),
        "objective_vs_linearized_median": round(float((scores[0] - scores[2]).median()), 4),
        "converged": round(float(default.converged.float().mean()), 3),
        "mean_steps": round(float(default.steps.float().mean()), 1),
        "ref_converged": round(float(ref.converged.float().mean()), 3),
        "words_at_cap": round(float(capped), 3), "sentences_all_or_none_at_cap": round(float(all_or_none), 3),
        "linearized_spearman": round(rho_lin, 3), "linearized_median_abs_dlog": round(dlog_lin, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--ref-samples", type=int, default=32)
    parser.add_argument("--ref-steps", type=int, default=300)
    parser.add_argument("--ref-window", type=int, default=100)
    parser.add_argument("--eval-draws", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="4 sentences, short reference (a smoke run)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.sentences, args.ref_steps, args.ref_window, args.ref_samples, args.eval_draws = 4, 40, 20, 16, 32
    torch.manual_seed(0)
    models, stats, rows = {}, {}, []
    for name in args.features.split(","):
        zoo_name, module_of = FEATURES[name]
        if zoo_name not in models:
            models[zoo_name] = load(zoo_name)
        row = run_feature(name, models[zoo_name], module_of, stats, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
