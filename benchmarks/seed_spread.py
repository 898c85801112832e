"""How much one pair of seeds says: one held-out sentence explained with several seeds (defaults,
predicted logit), and the Spearman of σ between every pair of them.

The seed agreement of docs/performance.md compares seed 0 with seed 1 per sentence. Where a
sentence's answer is not determined, that one number is itself a draw: another pair of seeds, or
any change that moves the random trajectory (a version, a machine's float rounding), gives
another. This prints the whole spread for one sentence, with each seed's error bars.

    python benchmarks/seed_spread.py --model minilm --sentence 1 --seeds 4 [--json FILE]

The sentence runs alone (batching never changes an answer); σ_S is the library's cached one
(256 training sentences), as everywhere in benchmarks/.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import torch

from captum_entropy import EntropyAttribution
from common import spearman, write_json


def spread(model: str, sentence: int, seeds: int) -> dict:
    """Seeds ``0 … seeds-1`` on held-out test sentence ``sentence`` of zoo ``model``'s predicted
    logit: per seed the seconds, the spread of log σ over the words and the median standard
    error; per pair the Spearman of σ over the real tokens; and their min, median and max."""
    from captum_entropy.explainer import feature_stats
    from captum_entropy.zoo import load, load_polarity

    zm = load(model, progress=False)
    text = load_polarity("test")[sentence].text
    ids, mask = zm.tokenize([text])
    with torch.no_grad():
        pred = zm.forward(ids, mask).argmax(-1)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    stats = feature_stats(zm)
    u, out = {}, {"part": f"{model} predicted logit, held-out test sentence {sentence}, {seeds} seeds (defaults)",
                  "text": text, "tokens": int(mask.sum()), "per_seed": {}}
    for seed in range(seeds):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=stats, seed=seed)
        m = r.mask[0]
        u[seed] = r.sigma[0][m].log().mean(-1)
        out["per_seed"][str(seed)] = {"seconds": round(time.perf_counter() - start, 1),
                                      "sd_log_sigma_over_words": round(float(u[seed].std(correction=0)), 3),
                                      "median_se_log_sigma": round(float(r.log_sigma_se[0][m].median()), 3),
                                      "steps": int(r.steps[0]), "ambiguous": bool(r.ambiguous[0])}
        print(seed, out["per_seed"][str(seed)], flush=True)
    pairs = {f"{a} vs {b}": round(spearman(u[a], u[b]), 3) for a, b in itertools.combinations(range(seeds), 2)}
    values = list(pairs.values())
    out["spearman_per_pair"] = pairs
    out["spearman_min_median_max"] = [min(values), round(statistics.median(values), 3), max(values)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--sentence", type=int, default=1, help="index into the held-out test split")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a pair)")
    torch.set_num_threads(2)
    out = spread(args.model, args.sentence, args.seeds)
    print({k: out[k] for k in ("part", "spearman_per_pair", "spearman_min_median_max")})
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
