"""The evaluation page's analysis tables, read from the stored rows (no attribution computed):
where EntropyAttribution departs from another ranking and which is more faithful there, whether a
method's top words push the prediction the same way, and its verdicts on the one-word questions.
Used by benchmarks/evaluation.py."""

from __future__ import annotations

import math

import numpy as np

from captum_entropy.evaluate import REMOVALS, Evaluation
from captum_entropy.evaluate.faithfulness import HIGHER_IS_BETTER, _kendall, cancellation
from captum_entropy.evaluate.statistics import bootstrap_ci, paired_wilcoxon
from common import format_ci


METHODS = ("entropy", "entropy_linearized", "entropy_layer", "saliency", "input_x_gradient", "layer_ig", "deeplift", "gradient_shap",
           "feature_ablation", "occlusion", "kernel_shap", "lime", "random")


DEPARTURE_METRICS = ("comprehensiveness", "comprehensiveness_abs", "comprehensiveness_logodds", "sufficiency",
                     "sufficiency_abs", "sufficiency_logodds", "deletion_aopc", "deletion_aopc_abs",
                     "deletion_aopc_logodds", "loo_tau", "loo_tau_abs", "loo_tau_logodds")


def departures(ev: Evaluation, other: str = "saliency", removal: str = "delete", width: int | None = None) -> list[str]:
    """Where EntropyAttribution's ranking departs most from ``other``'s (``"saliency"``, or
    ``"entropy_linearized"``: the linearised σ; the lowest third of Kendall τ between their word
    scores), which of the two is more faithful (signed and magnitude metrics, paired). With ``width``
    (the embedding's width) and the linearised σ as ``other``, also how far the σ's themselves move,
    in nats per dimension."""
    rows = {(r["method"], r["sentence"]): r for r in ev.rows if r["removal"] == removal}
    taus = {s: _kendall(np.asarray(rows[("entropy", s)]["scores"]), np.asarray(rows[(other, s)]["scores"]))
            for (m, s) in rows if m == "entropy" and (other, s) in rows}
    finite = {s: t for s, t in taus.items() if math.isfinite(t)}
    if len(finite) < 10:
        return []
    cut = np.quantile(list(finite.values()), 1 / 3)
    low = sorted(s for s, t in finite.items() if t <= cut)
    q = np.quantile(list(finite.values()), [0.25, 0.5, 0.75])
    out = [f"τ(entropy, {other}) over {len(finite)} sentences: median {q[1]:.2f} (quartiles {q[0]:.2f}, {q[2]:.2f})"]
    if other == "entropy_linearized" and width:  # kept nats over the width = −mean log σ + const
        delta = [np.subtract(rows[("entropy", s)]["scores"], rows[(other, s)]["scores"]) / width for s in finite]
        g = np.quantile([np.mean(np.abs(d)) for d in delta], [0.25, 0.5, 0.75])
        spread = np.median([np.std(d) for d in delta])
        out[-1] += (f"; a word's log σ (mean over the {width} dimensions) differs from the linearised one by "
                    f"{g[1]:.2f} nats in the median sentence (mean |Δ| over its words; quartiles {g[0]:.2f}, "
                    f"{g[2]:.2f}); the SD of Δ over a sentence's words, the part that reorders them (a shift of the whole "
                    f"sentence does not), is {spread:.2f} in the median sentence")
    out[-1] += f"; the third where they differ most (τ ≤ {cut:.2f}, n = {len(low)}):"
    out.append("")
    out += [f"| metric | entropy | {other} | shift (Hodges–Lehmann) | p (Wilcoxon) |", "|---|---|---|---|---|"]
    for metric in [m for m in DEPARTURE_METRICS if m in rows[("entropy", low[0])]]:
        a = [rows[("entropy", s)][metric] for s in low]
        b = [rows[(other, s)][metric] for s in low]
        diff, p, n = paired_wilcoxon(a, b)
        out.append(f"| {metric} {'↑' if HIGHER_IS_BETTER[metric] else '↓'} | {format_ci(*bootstrap_ci(a))} | "
                   f"{format_ci(*bootstrap_ci(b))} | {diff:+.3f} | {p:.2g} |")
    return out + [""]


def cancellation_section(ev: Evaluation, removal: str = "delete") -> list[str]:
    """Do the top words' single-word effects cancel? Per method, from the stored word scores and
    leave-one-out effects (``faithfulness.cancellation``; no model run), paired against entropy."""
    rows = [r for r in ev.rows if r["removal"] == removal]
    per = {}
    for r in rows:
        per.setdefault(r["method"], {})[r["sentence"]] = cancellation(r["scores"], r["loo"])
    if "entropy" not in per:
        return []
    sentences = sorted(per["entropy"])
    out = [f"Do the top words push the same way? For the top 10–50 % of each method's words (words {removal}d "
           "one at a time, first order): **cancellation** 1 − |Σ LOO| / Σ |LOO| over the top words (0: they "
           "all push one way; a set-removal metric sees about |Σ LOO|) and **share** Σ |LOO| over them / over "
           "all words (the unsigned question without the cancellation); mean [95 % interval], and the paired "
           "shift entropy − method (Hodges–Lehmann, Wilcoxon p):", "",
           "| method | cancellation | entropy − method | share ↑ | entropy − method |", "|---|---|---|---|---|"]
    for m in [m for m in METHODS if m in per]:
        cells = []
        for k in (0, 1):
            mine = [per[m].get(s, (math.nan, math.nan))[k] for s in sentences]
            ref = [per["entropy"][s][k] for s in sentences]
            shift, pv, _ = paired_wilcoxon(ref, mine)
            cells += [format_ci(*bootstrap_ci([v for v in mine if math.isfinite(v)])),
                      "–" if m == "entropy" else f"{shift:+.3f} (p {pv:.2g})"]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out + [""]


def embedding_width(zm) -> int:
    """The width of the embedding output a zoo model's noise goes on (one forward, hooked)."""
    import torch

    ids, mask, _ = zm.encode(["a"])
    seen = []
    hook = zm.embedding.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    try:
        with torch.no_grad():
            zm.forward(ids, mask)
    finally:
        hook.remove()
    return int(seen[0])


TAU_METRICS = ("loo_tau", "loo_tau_abs", "loo_tau_logodds")


def single_word_verdicts(wtl) -> list[str]:
    """Entropy's verdict on each τ against leave-one-out (the one-word-at-a-time questions),
    per removal and method: W / T / L."""
    metrics = [m for m in TAU_METRICS if m in set(wtl.metric)]
    cols = [(r, m) for r in REMOVALS for m in metrics]
    out = ["The one-word-at-a-time questions: EntropyAttribution's verdict on each τ against leave-one-out "
           "(W win, T tie, L loss; the same tests as above):", "",
           "| against | " + " | ".join(f"{r}: {m}" for r, m in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    letter = {"win": "W", "tie": "T", "loss": "L"}
    for other in [m for m in METHODS if m != "entropy" and m in set(wtl.other)]:
        g = wtl[wtl.other == other].set_index(["removal", "metric"]).verdict
        out.append(f"| {other} | " + " | ".join(letter.get(g.get((r, m)), "–") for r, m in cols) + " |")
    return out + [""]
