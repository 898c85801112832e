"""Is a prediction in its Taylor regime at the noise σ is fitted at? What the distortion is made of.

For each of the first ``--sentences`` held-out test sentences of a zoo model, the predicted
logit ``f`` and noise ``v = σ⊙ε`` on the embedding output, at the linearised σ (``--at
linearized``: the closed form the optimiser starts from, ``method="linearized"``) or at the
default's answer (``--at answer``: ``attribute_result`` with the defaults, seed 0), on
``--draws`` draws ε, each at scales 1, ½ and ¼, in antithetic pairs (forward passes only).
With ``δf(v) = f(x + v) − f(x)``, its odd part
``o(v) = (δf(v) − δf(−v))/2`` (the linear term and the other odd orders) and its even part
``e(v) = (δf(v) + δf(−v))/2`` (the quadratic term and the other even orders):

* ``mean_change``: the logit's systematic change at scale 1, ``mean(δf)``, over its RMS
  ``sqrt(mean(δf²))`` (signed); ``mean_share`` = its square, the share of the distortion that is
  the systematic change (the rest is the spread over the draws);
* ``odd_linearity``: ``sd o(v) / (2·sd o(v/2))``, 1 where the odd part is the linear term (what
  the exact-Jacobian control variate removes), below 1 where the feature saturates, above 1
  where the odd part grows faster than linearly;
* ``even_scaling``: ``sd e(v) / (4·sd e(v/2))``, 1 where the even part scales as a quadratic term;
* ``even_corr``: the correlation over draws of ``e(v)`` with ``e(v/2)``, 1 where each draw's
  even change at scale 1 follows its change at scale ½ (with ``even_scaling`` near 1: where a
  control variate built on the Hessian at the sentence could take it out);

and the same ratios one scale down (``*_half``: ½ against ¼). These are necessary conditions
of a Taylor regime, not proofs of one (the ratios compare spreads, not draw by draw).

    python benchmarks/taylor_regime.py --sentences 4 --json benchmarks/results/taylor_regime.json                 # ~2 min
    python benchmarks/taylor_regime.py --sentences 4 --at answer --json benchmarks/results/taylor_regime_answer.json
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


def noisy_logits(zm, ids: torch.Tensor, mask: torch.Tensor, target: int, v: torch.Tensor) -> torch.Tensor:
    """The predicted logit for each noise row of ``v`` (S, T, K) added to the embedding output."""
    shift = {}
    hook = zm.embedding.register_forward_hook(lambda module, inputs, out: out + shift["v"])
    try:
        with torch.no_grad():
            out = []
            for i in range(0, len(v), CHUNK):
                shift["v"] = v[i:i + CHUNK]
                n = len(shift["v"])
                out.append(zm.forward(ids.expand(n, -1), mask.expand(n, -1))[:, target])
    finally:
        hook.remove()
    return torch.cat(out)


def sentence(zm, stats, ids: torch.Tensor, mask: torch.Tensor, target: int, draws: int, seed: int,
             at: str = "linearized") -> dict:
    """The ratios of the module's docstring for one sentence (``ids``, ``mask``: (1, T), no padding)."""
    ea = EntropyAttribution(zm.forward, zm.embedding)
    how = {"method": "linearized"} if at == "linearized" else {"seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ea.attribute_result(ids, target=torch.tensor([target]), additional_forward_args=(mask,), feature_std=stats,
                                **how)
    real = mask[0].bool()
    with torch.no_grad():
        k = zm.embedding(ids).shape[-1]
        f0 = zm.forward(ids, mask)[0, target]
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(draws, ids.shape[1], k, generator=gen) * real[None, :, None]
    v = eps * r.sigma[0][None]
    odd, even = {}, {}
    for scale in SCALES:  # δf(±scale·v)
        up, down = (noisy_logits(zm, ids, mask, target, sign * scale * v) - f0 for sign in (1, -1))
        odd[scale], even[scale] = (up - down) / 2, (up + down) / 2
    plain = odd[1.0] + even[1.0]  # δf(v)
    mean_change = float(plain.mean() / plain.pow(2).mean().sqrt())
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    return {"tokens": int(real.sum()), "mean_change": round(mean_change, 3), "mean_share": round(mean_change ** 2, 3),
            "odd_linearity": round(float(odd[1.0].std() / (2 * odd[0.5].std())), 3),
            "odd_linearity_half": round(float(odd[0.5].std() / (2 * odd[0.25].std())), 3),
            "even_scaling": round(float(even[1.0].std() / (4 * even[0.5].std())), 3),
            "even_scaling_half": round(float(even[0.5].std() / (4 * even[0.25].std())), 3),
            "even_corr": round(corr(even[1.0], even[0.5]), 3),
            "even_corr_half": round(corr(even[0.5], even[0.25]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,cnn,lstm,transformer")
    parser.add_argument("--at", choices=("linearized", "answer"), default="linearized",
                        help="the σ the noise is drawn at: the linearised closed form, or the default's answer")
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {"draws": args.draws, "scales": list(SCALES), "at": args.at, "models": {}}
    for name in args.models.split(","):
        zm, stats, ids, mask, pred = held_out(name, args.sentences)
        rows = []
        for b in range(args.sentences):
            m = mask[b].bool()
            keep = int(m.nonzero().max()) + 1  # the sentence alone, without the batch's padding
            one = sentence(zm, stats, ids[b:b + 1, :keep], mask[b:b + 1, :keep], int(pred[b]), args.draws, b, args.at)
            rows.append({"sentence": b, **one})
            print(json.dumps({"model": name, **rows[-1]}), flush=True)
        # medians over sentences (of an even count: the mean of the two middle values)
        medians = {f"median_{k}": round(statistics.median(r[k] for r in rows), 3)
                   for k in rows[0] if k not in ("sentence", "tokens")}
        out["models"][name] = {"sentences": rows, **medians}
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
