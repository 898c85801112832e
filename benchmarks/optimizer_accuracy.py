"""Does the default optimiser reach the optimum of its objective on real features?

For each feature kind (MiniLM layer 3 and layer 6 of all tokens, MiniLM's pooled output, the
predicted logit of the fine-tuned zoo ``minilm``, the LSTM's and the CNN's predicted logit) on
the first ``--sentences`` held-out test sentences, with feature statistics fitted on 256
training sentences:

* **default**: ``EntropyAttribution(...).explain(...)`` with default settings;
* **reference**: the same objective, a long many-sample run (``--ref-samples`` draws per step,
  ``--ref-steps`` steps, no early stop, σ averaged over the last ``--ref-window`` steps,
  another seed);
* **objective**: each answer scored on one fresh set of ``--eval-draws`` common noise draws:
  σ is rescaled along ``log σ + s`` until the distortion equals the tolerance, and its mean
  log σ (the entropy the objective maximises, per dimension) is compared.

Sentences are sorted by length and explained in buckets of ``--bucket`` (each bucket padded to
its own longest sentence), the same buckets for every method. Per sentence it records Spearman
of σ against the reference, |Δ log σ|, the objective gap, convergence, words at the cap, and the
same for the linearised closed form; per feature it prints the summary the issue asks for. The
per-sentence rows go to ``--json``.

    python benchmarks/optimizer_accuracy.py [--sentences 32] [--features minilm-logit,cnn-logit]
    python benchmarks/optimizer_accuracy.py --quick        # 4 sentences, short reference
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import torch
from scipy.stats import spearmanr

from captum_entropy import EntropyAttribution, FeatureStats
from captum_entropy.feature import Feature, ModelRunner, max_sigma
from captum_entropy.settings import DEFAULT_TOLERANCE, Settings
from captum_entropy.hooks import no_dropout
from captum_entropy.zoo import load, load_polarity

DEFAULT_OVERRIDES = eval("dict(" + os.environ.get("CE_DEFAULT", "") + ")")
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
    run = ModelRunner(zm.forward, zm.embedding, False, (ids,), (mask,), ids.shape[0], False)
    with torch.no_grad(), no_dropout():
        values, feats = run.clean([module])
        v3 = values.reshape(values.shape[0], values.shape[1], -1)
        valid = mask.bool()
        problem = Feature.build(module, feats[0], target, cfg, 0, valid, {})
        log_cap = max_sigma(cfg, zm.embedding, False, v3, valid).log()
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


def per_sentence(sigma, ref, mask):
    rho, dlog = [], []
    for b in range(len(mask)):
        a, r = sigma[b][mask[b]].flatten(), ref[b][mask[b]].flatten()
        rho.append(float(spearmanr(a.numpy(), r.numpy())[0]) if a.std() > 0 and r.std() > 0 else float("nan"))
        dlog.append(float((a.log() - r.log()).abs().median()))
    return rho, dlog


def feature_stats(zm, module):
    train = load_polarity("train")[:256]
    batches = [zm.tokenize([e.text for e in train[i : i + 64]]) for i in range(0, len(train), 64)]
    stats = FeatureStats().fit(zm.forward, batches, layers={"f": module} if module is not None else None, mask_index=1)
    return stats["f" if module is not None else "output"]


def run_feature(name, zm, module_of, args):
    module = module_of(zm) if module_of else None
    std = feature_stats(zm, module)
    texts = sorted((e.text for e in load_polarity("test")[: args.sentences]), key=lambda t: len(zm.tokenize([t])[0][0]))
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
    rows, seconds = [], 0.0
    for start in range(0, len(texts), args.bucket):
        ids, mask = zm.tokenize(texts[start : start + args.bucket])
        with torch.no_grad():
            pred = zm.forward(ids, mask).argmax(-1)
        target = pred if module is None else None
        common = dict(target=target, additional_forward_args=(mask,), mask=mask, feature_std=std)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            default = ea.explain(ids, **common, **DEFAULT_OVERRIDES)
            seconds += time.perf_counter() - t0
            ref = ea.explain(
                ids, **common, n_samples=args.ref_samples, max_steps=args.ref_steps, check_every=args.ref_window,
                early_stop=False, curvature_decay=0.9, seed=99,
            )
        valid = mask.bool()
        rho, dlog = per_sentence(default.sigma, ref.sigma, valid)
        rho_lin, dlog_lin = per_sentence(default.linear_sigma, ref.sigma, valid)
        scores = entropy_at_tolerance(
            zm, module, ids, mask, target, std, [default.sigma, ref.sigma, default.linear_sigma], DEFAULT_TOLERANCE,
            args.eval_draws,
        )
        for b in range(len(ids)):
            n_words = int(valid[b].sum())
            capped = int((default.saturated[b] & valid[b]).sum())
            rows.append({
                "feature": name, "words": n_words, "spearman": rho[b], "median_abs_dlog": dlog[b],
                "objective_gap": float(scores[0][b] - scores[1][b]),
                "objective_vs_linearized": float(scores[0][b] - scores[2][b]),
                "converged": bool(default.converged[b]), "steps": int(default.steps[b]),
                "stationarity": float(default.stationarity[b]), "ref_stationarity": float(ref.stationarity[b]),
                "words_at_cap": capped, "linearized_spearman": rho_lin[b], "linearized_median_abs_dlog": dlog_lin[b],
            })
        print(f"  {name}: {len(rows)}/{len(texts)} sentences", flush=True)
    return rows, seconds


def summary(name, rows, seconds):
    n = len(rows)
    t = lambda key: torch.tensor([r[key] for r in rows], dtype=torch.float64)  # noqa: E731
    words = t("words")
    capped = t("words_at_cap")
    return {
        "feature": name, "sentences": n, "default_seconds": round(seconds, 1),
        "spearman_mean": round(float(t("spearman").nanmean()), 3),
        "median_abs_dlog": round(float(t("median_abs_dlog").median()), 4),
        "objective_not_worse": round(float((t("objective_gap") >= -0.005).double().mean()), 3),
        "objective_gap_median": round(float(t("objective_gap").median()), 4),
        "default_minus_linearized_median": round(float(t("objective_vs_linearized").median()), 4),
        "converged": round(float(t("converged").mean()), 3), "mean_steps": round(float(t("steps").mean()), 1),
        "words_at_cap": round(float(capped.sum() / words.sum()), 3),
        "sentences_all_at_cap": round(float((capped == words).double().mean()), 3),
        "sentences_none_at_cap": round(float((capped == 0).double().mean()), 3),
        "linearized_spearman_mean": round(float(t("linearized_spearman").nanmean()), 3),
        "linearized_median_abs_dlog": round(float(t("linearized_median_abs_dlog").median()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--bucket", type=int, default=8, help="sentences per batch (sorted by length)")
    parser.add_argument("--features", default=",".join(FEATURES))
    parser.add_argument("--ref-samples", type=int, default=32)
    parser.add_argument("--ref-steps", type=int, default=300)
    parser.add_argument("--ref-window", type=int, default=100)
    parser.add_argument("--eval-draws", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="4 sentences, short reference (a smoke run)")
    parser.add_argument("--json", help="write the per-sentence rows and the summaries to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.sentences, args.ref_steps, args.ref_window, args.ref_samples, args.eval_draws = 4, 40, 20, 16, 32
    torch.manual_seed(0)
    models, out = {}, {"settings": vars(args), "summaries": [], "rows": []}
    for name in args.features.split(","):
        zoo_name, module_of = FEATURES[name]
        if zoo_name not in models:
            models[zoo_name] = load(zoo_name)
        rows, seconds = run_feature(name, models[zoo_name], module_of, args)
        out["rows"] += rows
        out["summaries"].append(summary(name, rows, seconds))
        print(json.dumps(out["summaries"][-1]), flush=True)
        if args.json:  # after every feature, so a long run keeps what it has
            with open(args.json + ".tmp", "w") as fh:
                json.dump(out, fh, indent=1)
            os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
