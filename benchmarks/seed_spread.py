"""How much one pair of seeds says: one held-out sentence explained with several seeds (defaults,
predicted logit), and the Spearman of σ between every pair of them.

The seed agreement of docs/performance.md compares seed 0 with seed 1 per sentence. Where a
sentence's answer is not determined, that one number is itself a draw: another pair of seeds, or
any change that moves the random trajectory (a version, a machine's float rounding), gives
another. This prints the whole spread for one sentence, with each seed's error bars; with
``--batch N`` also seed 0's answer for the sentence in a batch with the test sentences before it
(N in all), against its answer alone: the rounding of a batch's other matrix shapes, carried
through the noisy steps.

    python benchmarks/seed_spread.py --model minilm --sentence 1 --seeds 4 [--batch 2] [--json FILE]

The seeds run on the sentence alone (in a batch its answer moves by the rounding ``--batch``
measures); σ_S is the library's cached one (256 training sentences), as everywhere in benchmarks/.
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
from seed_agreement import held_out


def _log_sigma(ea, batch: tuple, row: int, stats, seed: int, **settings):
    """log σ of sentence ``row``'s real tokens in ``batch`` = (ids, mask, predictions) (predicted
    logit, defaults unless ``settings``) and the result."""
    ids, mask, pred = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ea.attribute_result(ids, target=pred, additional_forward_args=(mask,), feature_std=stats, seed=seed,
                                **settings)
    return r.sigma[row][r.mask[row]].log().mean(-1), r


def spread(model: str, sentence: int, seeds: int, batch: int = 1) -> dict:
    """Seeds ``0 … seeds-1`` on held-out test sentence ``sentence`` of zoo ``model``'s predicted
    logit: per seed the seconds, the spread of log σ over the words and the median standard
    error; per pair the Spearman of σ over the real tokens; and their min, median and max."""
    from captum_entropy.zoo import load_polarity

    zm, stats, ids, mask, pred = held_out(model, 1, sentence)
    alone_batch = (ids, mask, pred)
    ea = EntropyAttribution(zm.forward, zm.embedding)
    u, out = {}, {"part": f"{model} predicted logit, held-out test sentence {sentence}, {seeds} seeds (defaults)",
                  "text": load_polarity("test")[sentence].text, "per_seed": {}, "tokens": int(mask.sum())}
    for seed in range(seeds):
        start = time.perf_counter()
        u[seed], r = _log_sigma(ea, alone_batch, 0, stats, seed)
        m = r.mask[0]
        out["per_seed"][str(seed)] = {"seconds": round(time.perf_counter() - start, 1),
                                      "sd_log_sigma_over_words": round(float(u[seed].std(correction=0)), 3),
                                      "median_se_log_sigma": round(float(r.log_sigma_se[0][m].median()), 3),
                                      "steps": int(r.steps[0]), "ambiguous": bool(r.ambiguous[0])}
        print(seed, out["per_seed"][str(seed)], flush=True)
    pairs = {f"{a} vs {b}": round(spearman(u[a], u[b]), 3) for a, b in itertools.combinations(range(seeds), 2)}
    values = list(pairs.values())
    out["spearman_per_pair"] = pairs
    out["spearman_min_median_max"] = [min(values), round(statistics.median(values), 3), max(values)]
    if batch > 1:
        batched_batch = held_out(model, batch, sentence - batch + 1)[2:]
        growth = {}  # how the rounding grows: the linearised start, 5 steps, the default's answer
        for label, settings in (("linearized", {"method": "linearized"}), ("5 steps", {"max_steps": 5}), ("default", {})):
            alone = u[0] if label == "default" else _log_sigma(ea, alone_batch, 0, stats, 0, **settings)[0]
            batched = _log_sigma(ea, batched_batch, batch - 1, stats, 0, **settings)[0]
            diff = (batched - alone).abs()
            growth[label] = {"max_abs_dlog_sigma": float(f"{float(diff.max()):.2g}"),
                             "median_abs_dlog_sigma": float(f"{float(diff.median()):.2g}"),
                             "spearman": round(spearman(batched, alone), 3)}
        out[f"seed_0_in_a_batch_of_{batch}_against_alone"] = growth
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--sentence", type=int, default=1, help="index into the held-out test split")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1,
                        help="also seed 0 in a batch of this many test sentences (the sentence last) against alone")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a pair)")
    if not 1 <= args.batch <= args.sentence + 1:
        parser.error(f"--batch must be between 1 and {args.sentence + 1} (the sentence and the test sentences before it)")
    torch.set_num_threads(2)
    out = spread(args.model, args.sentence, args.seeds, args.batch)
    print({k: v for k, v in out.items() if k not in ("text", "per_seed")})
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
