"""Wall time of the default optimiser against the authors' loop and LayerIntegratedGradients.

Everything on the fine-tuned zoo ``minilm`` (noise on its embedding module), held-out test
sentences sorted by length in buckets of ``--bucket``, σ_S (feature_std) from 256 training
sentences, all timings from one process on one machine: read the ratios.

1. **MiniLM layer 3 (all tokens), against the ``guan2019`` preset run one sentence at a time**
   (the authors' loop: 5000 steps, one draw). The default and ``method="linearized"`` run on
   ``--sentences`` sentences; the authors' loop on the first ``--guan-sentences`` of them (it
   costs minutes per sentence), and a long reference run of the default objective on those
   too, so the accuracy of each method is measured against the same reference (mean Spearman
   of σ, median |Δ log σ|): a ratio "at equal accuracy" compares methods whose accuracy is at
   least the authors' loop's.
2. **The predicted logit, against LayerIntegratedGradients(n_steps=50)** on the same batches
   and targets (``--as-0.1``: with 0.1's default on a prediction, as the stored row was made).
3. **Six layers in one call against six single-layer calls** on the same sentences.

    python benchmarks/speed.py [--sentences 32] [--guan-sentences 4] [--parts 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch
from captum.attr import LayerIntegratedGradients

from captum_entropy import EntropyAttribution
from captum_entropy.zoo import load, load_polarity
from common import add_as_0_1, default_arm, median_abs_dlog, spearman, timed, write_json, zoo_feature_std

REFERENCE = dict(n_samples=32, max_steps=200, check_every=100, early_stop=False, curvature_decay=0.9, seed=99)


def buckets(zm, n, size):
    texts = sorted((e.text for e in load_polarity("test")[:n]), key=lambda t: len(zm.tokenize([t])[0][0]))
    return [zm.tokenize(texts[i : i + size]) for i in range(0, len(texts), size)]


def accuracy(sigmas, refs, masks):
    """Mean Spearman of σ per sentence, and the median |Δ log σ| over all their tokens."""
    pairs = [(sigma[b][mask[b]].flatten(), ref[b][mask[b]].flatten())
             for sigma, ref, mask in zip(sigmas, refs, masks) for b in range(len(mask))]
    rho = torch.tensor([spearman(a, r) for a, r in pairs])
    dlog = median_abs_dlog(torch.cat([a for a, _ in pairs]), torch.cat([r for _, r in pairs]), lower=True)
    return round(float(rho.mean()), 3), round(dlog, 4)


def part_guan(zm, args):
    layer = zm.layers["layer3"]
    std = zoo_feature_std(zm, layer)
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=layer)
    data = buckets(zm, args.sentences, args.bucket)
    common = lambda ids, mask: dict(additional_forward_args=(mask,), feature_std=std)  # noqa: E731
    t_default = t_linear = 0.0
    for ids, mask in data:
        t_default += timed(lambda: ea.attribute_result(ids, **common(ids, mask)))[1]
        t_linear += timed(lambda: ea.attribute_result(ids, **common(ids, mask), method="linearized"))[1]
    # the authors' loop, one sentence at a time, and a reference for the accuracy of every method
    singles = [(ids[b : b + 1, : int(mask[b].sum())], mask[b : b + 1, : int(mask[b].sum())])
               for ids, mask in data for b in range(len(ids))][: args.guan_sentences]
    rows = {"default": [], "linearized": [], "guan2019": [], "reference": []}
    t_guan = 0.0
    for ids, mask in singles:
        res, took = timed(lambda: ea.attribute_result(ids, **common(ids, mask), preset="guan2019"))
        t_guan += took
        rows["guan2019"].append(res.sigma)
        rows["default"].append(ea.attribute_result(ids, **common(ids, mask)).sigma)
        rows["linearized"].append(ea.attribute_result(ids, **common(ids, mask), method="linearized").sigma)
        rows["reference"].append(ea.attribute_result(ids, **common(ids, mask), **REFERENCE).sigma)
    masks = [m.bool() for _, m in singles]
    per = {
        "default": t_default / args.sentences, "linearized": t_linear / args.sentences,
        "guan2019": t_guan / len(singles),
    }
    out = {"part": "minilm layer 3 vs guan2019", "sentences": args.sentences, "guan_sentences": len(singles),
           "seconds_per_sentence": {k: round(v, 3) for k, v in per.items()},
           "guan2019_over_default": round(per["guan2019"] / per["default"], 1),
           "guan2019_over_linearized": round(per["guan2019"] / per["linearized"], 1)}
    for name in ("default", "linearized", "guan2019"):
        out[f"{name}_vs_reference"] = accuracy(rows[name], rows["reference"], masks)
    return out


def part_logit(zm, args):
    std = zoo_feature_std(zm, None)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    lig = LayerIntegratedGradients(zm.forward, zm.embedding)
    t_ours = t_lig = 0.0
    converged = []
    for ids, mask in buckets(zm, args.logit_sentences, args.bucket):
        with torch.no_grad():
            pred = zm.forward(ids, mask).argmax(-1)
        res, took = timed(lambda: ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=std,
                                                      **default_arm(args)))
        t_ours += took
        converged += res.converged.tolist()
        t_lig += timed(lambda: lig.attribute(ids, target=pred, additional_forward_args=(mask,), n_steps=50))[1]
    return {"part": "predicted logit vs LayerIntegratedGradients(n_steps=50)", "sentences": args.logit_sentences,
            "seconds": {"default": round(t_ours, 2), "lig": round(t_lig, 2)}, "ratio": round(t_ours / t_lig, 1),
            "converged": round(sum(converged) / len(converged), 3)}


def part_layers(zm, args):
    layers = list(zm.layers.values())
    stds = [zoo_feature_std(zm, m) for m in layers]
    data = buckets(zm, args.layer_sentences, args.bucket)
    together = EntropyAttribution(zm.forward, zm.embedding, target_layer=layers)
    t_one = sum(timed(lambda: together.attribute_result(ids, additional_forward_args=(mask,), feature_std=stds))[1]
                for ids, mask in data)
    t_six = 0.0
    for layer, std in zip(layers, stds):
        ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=layer)
        t_six += sum(timed(lambda: ea.attribute_result(ids, additional_forward_args=(mask,), feature_std=std))[1]
                     for ids, mask in data)
    return {"part": "six layers in one call vs six calls", "sentences": args.layer_sentences,
            "seconds": {"one_call": round(t_one, 2), "six_calls": round(t_six, 2)}, "ratio": round(t_one / t_six, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--guan-sentences", type=int, default=4)
    parser.add_argument("--logit-sentences", type=int, default=8)
    parser.add_argument("--layer-sentences", type=int, default=8)
    parser.add_argument("--bucket", type=int, default=8)
    parser.add_argument("--parts", default="1,2,3")
    add_as_0_1(parser, "part 2")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.manual_seed(0)
    warnings.simplefilter("ignore")
    zm = load("minilm")
    parts = {"1": part_guan, "2": part_logit, "3": part_layers}
    results = []
    for key in args.parts.split(","):
        results.append(parts[key](zm, args))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
