"""Is a prediction in its Taylor regime at the noise σ is fitted at? What the distortion is made of.

For each of the first ``--sentences`` held-out test sentences of a zoo model, the predicted
logit ``f`` and noise ``v = σ⊙ε`` on the embedding output at the linearised σ (the closed form
the optimiser starts from, ``method="linearized"``), on ``--draws`` draws ε, each at scales 1, ½
and ¼, in antithetic pairs (forward passes only). With ``δf(v) = f(x + v) − f(x)``, its odd part
``o(v) = (δf(v) − δf(−v))/2`` (the linear term and the other odd orders) and its even part
``e(v) = (δf(v) + δf(−v))/2`` (the quadratic term and the other even orders):

* ``mean_share``: the share of the distortion that is the logit's systematic change,
  ``mean(δf)² / mean(δf²)`` at scale 1 (the rest is its spread over the draws);
* ``odd_linearity``: ``sd o(v) / (2·sd o(v/2))``, 1 where the odd part is the linear term (what
  the exact-Jacobian control variate removes), below 1 where the feature saturates;
* ``even_corr``: the correlation over draws of ``e(v)`` with ``e(v/2)``, 1 where each draw's
  second-order change at scale 1 is its change at scale ½ magnified (where a control variate
  built on the Hessian at the sentence could take it out);

and the same two ratios one scale down (``*_half``: ½ against ¼). A ratio of mean even parts is
not reported: the mean is near zero on some sentences and its ratio then is noise.

    python benchmarks/taylor_regime.py --models minilm,cnn --sentences 4 --json benchmarks/results/taylor_regime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch

from captum_entropy import EntropyAttribution
from common import write_json
from seed_agreement import held_out

SCALES = (1.0, 0.5, 0.25)
CHUNK = 64  # draws per forward batch


def changes(zm, ids: torch.Tensor, mask: torch.Tensor, target: int, v: torch.Tensor) -> torch.Tensor:
    """δf of the predicted logit for each noise row of ``v`` (S, T, K) added to the embedding output."""
    shift = {"v": None}
    hook = zm.embedding.register_forward_hook(lambda module, inputs, out: out if shift["v"] is None else out + shift["v"])
    try:
        with torch.no_grad():
            f0 = zm.forward(ids, mask)[0, target]
            out = []
            for i in range(0, len(v), CHUNK):
                shift["v"] = v[i:i + CHUNK]
                n = len(shift["v"])
                out.append(zm.forward(ids.expand(n, -1), mask.expand(n, -1))[:, target] - f0)
    finally:
        hook.remove()
    return torch.cat(out)


def sentence(zm, stats, ids: torch.Tensor, mask: torch.Tensor, target: int, draws: int, seed: int) -> dict:
    ea = EntropyAttribution(zm.forward, zm.embedding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ea.attribute_result(ids, target=torch.tensor([target]), additional_forward_args=(mask,), feature_std=stats,
                                method="linearized")
    real = mask[0].bool()
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(draws, ids.shape[1], zm.embedding(ids).shape[-1], generator=gen) * real[None, :, None]
    v = eps * r.sigma[0][None]
    odd, even, plain = {}, {}, None
    for scale in SCALES:
        up, down = changes(zm, ids, mask, target, scale * v), changes(zm, ids, mask, target, -scale * v)
        odd[scale], even[scale] = (up - down) / 2, (up + down) / 2
        plain = up if scale == 1.0 else plain
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    return {"tokens": int(real.sum()),
            "mean_share": round(float(plain.mean() ** 2 / plain.pow(2).mean()), 3),
            "odd_linearity": round(float(odd[1.0].std() / (2 * odd[0.5].std())), 3),
            "odd_linearity_half": round(float(odd[0.5].std() / (2 * odd[0.25].std())), 3),
            "even_corr": round(corr(even[1.0], even[0.5]), 3),
            "even_corr_half": round(corr(even[0.5], even[0.25]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,cnn")
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {"draws": args.draws, "scales": list(SCALES), "models": {}}
    for name in args.models.split(","):
        zm, stats, ids, mask, pred = held_out(name, args.sentences)
        rows = []
        for b in range(args.sentences):
            m = mask[b].bool()
            keep = int(m.nonzero().max()) + 1  # the sentence alone, without the batch's padding
            rows.append({"sentence": b, **sentence(zm, stats, ids[b:b + 1, :keep], mask[b:b + 1, :keep], int(pred[b]),
                                                    args.draws, seed=b)})
            print(json.dumps({"model": name, **rows[-1]}), flush=True)
        med = lambda key: round(statistics.median(r[key] for r in rows), 3)  # of an even count: the two middle values' mean  # noqa: E731
        out["models"][name] = {"sentences": rows, **{f"median_{k}": med(k) for k in rows[0] if k not in ("sentence", "tokens")}}
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
