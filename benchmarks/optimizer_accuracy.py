"""Does the default optimiser reach the optimum of its objective on real features?

For each feature kind (MiniLM layer 3 and layer 6 of all tokens, MiniLM's pooled output, the
predicted logit of the fine-tuned zoo ``minilm``, the LSTM's and the CNN's predicted logit) on
the first ``--sentences`` held-out test sentences, with σ_S (feature_std) fitted on 256
training sentences:

* **default**: ``EntropyAttribution(...).attribute_result(...)`` with default settings
  (``--as-0.1``: with captum_entropy 0.1's default on a prediction, as the stored results were made);
* **reference**: the same objective, a long many-sample run of plain Newton (independent draws) (``--ref-samples`` draws per step,
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
import ast
import json
import math
import warnings

import torch

from captum_entropy import EntropyAttribution
from captum_entropy.feature import Feature, ModelRunner, max_sigma
from captum_entropy.hooks import no_dropout
from captum_entropy.settings import DEFAULT_TOLERANCE, Settings
from captum_entropy.zoo import load, load_polarity
from common import DEFAULT_0_1, add_as_0_1, default_arm, median_abs_dlog, spearman, timed, write_json, zoo_feature_std

FEATURES = {  # name: (zoo model, target module getter or None for the predicted logit)
    "minilm-layer3": ("minilm", lambda zm: zm.layers["layer3"]),
    "minilm-layer6": ("minilm", lambda zm: zm.layers["layer6"]),
    "minilm-pooled": ("minilm", lambda zm: zm.model.bert.pooler),
    "minilm-logit": ("minilm", None),
    "lstm-logit": ("lstm", None),
    "cnn-logit": ("cnn", None),
    "transformer-logit": ("transformer", None),
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
        eps = torch.randn((draws, *v3.shape), generator=gen).to(v3) * valid[None, :, :, None]
        rows = torch.arange(v3.shape[0], device=v3.device)

        def distortion(u):
            total = torch.zeros(v3.shape[0], dtype=v3.dtype, device=v3.device)
            for chunk in eps.split(16):
                x = v3[None] + torch.exp(u)[None] * chunk
                f = torch.stack([problem.feature(run, xi, rows) for xi in x])
                total += (f - problem.clean[None]).pow(2).sum(-1).sum(0)
            return total / draws

        scores = []
        for sigma in sigmas:
            u = torch.where(valid[..., None], sigma.log(), log_cap[:, None, None])
            shift = lambda s: torch.minimum(u + s[:, None, None], log_cap[:, None, None])  # noqa: E731
            s0, d0 = torch.zeros_like(u[:, 0, 0]), distortion(u)
            s1 = 0.5 * torch.log(tau / d0)
            d1 = distortion(shift(s1))
            for _ in range(4):  # secant on log D
                rise = torch.log(d1) - torch.log(d0)
                s2 = torch.where(rise.abs() > 1e-9, s1 + (math.log(tau) - torch.log(d1)) * (s1 - s0) / rise, s1)
                s0, d0, s1 = s1, d1, s2
                d1 = distortion(shift(s1))
            final = shift(s1)
            scores.append(torch.stack([final[b][valid[b]].mean() for b in range(len(u))]).cpu())
    return scores


def variant(text: str) -> tuple[str, dict]:
    label, _, pairs = text.partition(":")
    return label, {k: ast.literal_eval(v) for k, v in (p.split("=", 1) for p in pairs.split(",") if p)}


def per_sentence(sigma, ref, mask):
    """Per sentence: Spearman of σ against the reference, and the median |Δ log σ| over its tokens."""
    sigma, ref, mask = sigma.cpu(), ref.cpu(), mask.cpu()
    pairs = [(sigma[b][mask[b]], ref[b][mask[b]]) for b in range(len(mask))]
    return [spearman(a, r) for a, r in pairs], [median_abs_dlog(a, r, lower=True) for a, r in pairs]


def run_feature(name, zm, module_of, args):
    module = module_of(zm) if module_of else None
    std = zoo_feature_std(zm, module)
    texts = sorted((e.text for e in load_polarity("test")[: args.sentences]), key=lambda t: len(zm.tokenize([t])[0][0]))
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
    rows, seconds, ref_seconds, variant_seconds = [], 0.0, 0.0, {}
    for start in range(0, len(texts), args.bucket):
        ids, mask = (t.to(args.device) for t in zm.tokenize(texts[start : start + args.bucket]))
        with torch.no_grad():
            pred = zm.forward(ids, mask).argmax(-1)
        target = pred if module is None else None
        common = dict(target=target, additional_forward_args=(mask,), mask=mask, feature_std=std)
        default_kw = default_arm(args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default, took = timed(lambda: ea.attribute_result(ids, **common, **default_kw), args.device)
            seconds += took
            ref, took = timed(lambda: ea.attribute_result(  # the reference: plain long Newton, as always
                ids, **common, **DEFAULT_0_1, n_samples=args.ref_samples, max_steps=args.ref_steps, check_every=args.ref_window,
                early_stop=False, curvature_decay=0.9, seed=99,
            ), args.device)
            ref_seconds += took
            variants = {}
            for label, kwargs in args.variant:  # other settings, scored against the same reference
                variants[label], took = timed(lambda: ea.attribute_result(ids, **common, **{**default_kw, **kwargs}),
                                              args.device)
                variant_seconds[label] = variant_seconds.get(label, 0.0) + took
        valid = mask.bool().cpu()
        rho, dlog = per_sentence(default.sigma, ref.sigma, valid)
        rho_lin, dlog_lin = per_sentence(default.linear_sigma, ref.sigma, valid)
        scores = entropy_at_tolerance(
            zm, module, ids, mask, target, std, [default.sigma, ref.sigma, default.linear_sigma, *(v.sigma for v in variants.values())],
            DEFAULT_TOLERANCE,
            args.eval_draws,
        )
        for b in range(len(ids)):
            n_words = int(valid[b].sum())
            capped = int((default.saturated[b].cpu() & valid[b]).sum())
            rows.append({
                "feature": name, "words": n_words, "spearman": rho[b], "median_abs_dlog": dlog[b],
                "objective_gap": float(scores[0][b] - scores[1][b]),
                "objective_vs_linearized": float(scores[0][b] - scores[2][b]),
                "converged": bool(default.converged[b]), "steps": int(default.steps[b]),
                "stationarity": float(default.stationarity[b]), "stop_reason": default.stop_reasons[b], "ref_stationarity": float(ref.stationarity[b]),
                "words_at_cap": capped, "linearized_spearman": rho_lin[b], "linearized_median_abs_dlog": dlog_lin[b],
            })
            for k, (label, v) in enumerate(variants.items()):
                r_v, d_v = per_sentence(v.sigma, ref.sigma, valid)
                rows[-1][f"{label}/spearman"], rows[-1][f"{label}/median_abs_dlog"] = r_v[b], d_v[b]
                rows[-1][f"{label}/objective_gap"] = float(scores[3 + k][b] - scores[1][b])
                rows[-1][f"{label}/converged"] = bool(v.converged[b])
        print(f"  {name}: {len(rows)}/{len(texts)} sentences, default {seconds:.1f} s, reference {ref_seconds:.1f} s",
              flush=True)
    if variant_seconds:
        print(f"  {name}: variant seconds {json.dumps({k: round(v, 1) for k, v in variant_seconds.items()})}")
    return rows, seconds, variant_seconds


def summary(name, rows, seconds, variant_seconds=None):
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
        **{f"{label}/{stat}": value for label in sorted({k.split("/")[0] for k in rows[0] if "/" in k}) for stat, value in (
            ("spearman_mean", round(float(t(f"{label}/spearman").nanmean()), 3)),
            ("median_abs_dlog", round(float(t(f"{label}/median_abs_dlog").median()), 4)),
            ("objective_not_worse", round(float((t(f"{label}/objective_gap") >= -0.005).double().mean()), 3)),
            ("objective_gap_median", round(float(t(f"{label}/objective_gap").median()), 4)),
            ("converged", round(float(t(f"{label}/converged").mean()), 3)))},
        **{f"{label}/seconds": round(v, 1) for label, v in (variant_seconds or {}).items()},
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (the model and every tensor go there)")
    parser.add_argument("--variant", action="append", default=[], type=variant,
                        help="LABEL:key=value,...  other settings scored against the same reference, e.g. "
                             "steps400:max_steps=400 or a second reference seed:"
                             " ref7:n_samples=32,max_steps=800,check_every=400,early_stop=False,curvature_decay=0.9,seed=7")
    add_as_0_1(parser, "the default arm and the variants")
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
            models[zoo_name].model.to(args.device)
        rows, seconds, variant_seconds = run_feature(name, models[zoo_name], module_of, args)
        out["rows"] += rows
        out["summaries"].append(summary(name, rows, seconds, variant_seconds))
        print(json.dumps(out["summaries"][-1]), flush=True)
        if args.json:  # after every feature, so a long run keeps what it has
            write_json(args.json, out)


if __name__ == "__main__":
    main()
