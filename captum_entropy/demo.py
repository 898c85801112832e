"""`make demo`: which words does a fine-tuned BERT keep, at every layer and at its prediction?

1. fetch the polarity corpus (Pang & Lee) into the cache and split it (seeded);
2. train `minilm` (all-MiniLM-L6-v2 + a classifier head, 1 epoch) or load its checkpoint;
3. pick varied held-out test sentences the model classifies correctly (both classes, short and
   long) and explain them with :class:`~captum_entropy.Explainer`: noise on the embedding
   output, the feature = each encoder layer's output (all tokens) and the predicted logit, with
   σ_S (the features' std) fitted on training sentences so numbers are comparable;
4. print the words × layers table, and write an HTML report, one heatmap per sentence, the
   depth curves and the results (safetensors).

    python -m captum_entropy.demo [--sentences 3] [--out out/demo] [--max-steps 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def pick_sentences(zm, examples, count: int, min_words: int = 6, max_words: int = 24) -> list:
    """``count`` correctly classified examples, alternating classes, spread over lengths.

    Among the correctly classified sentences of ``min_words``..``max_words`` words, each class's
    are sorted by length and taken at evenly spaced quantiles, then interleaved by class."""
    texts = [e.text for e in examples]
    preds = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            ids, mask = zm.tokenize(texts[i:i + 64])
            preds += zm.forward(ids, mask).argmax(-1).tolist()
    ok = [e for e, p in zip(examples, preds) if p == e.label and min_words <= len(e.text.split()) <= max_words]
    by_class = [sorted((e for e in ok if e.label == c), key=lambda e: len(e.text.split())) for c in (1, 0)]
    picked = []
    for k in range(count):
        pool = by_class[k % 2] or by_class[(k + 1) % 2]
        n_here = (count + 1 - k % 2) // 2
        j = k // 2
        if pool:
            picked.append(pool[min(len(pool) - 1, int((j + 0.5) * len(pool) / max(n_here, 1)))])
    return picked


def main(argv: list[str] | None = None) -> None:
    from .explainer import Explainer
    from .viz import save_figure
    from .zoo import load, load_polarity

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=3, help="how many test sentences to explain")
    parser.add_argument("--out", default="out/demo", help="folder for the report, the figures and the results")
    parser.add_argument("--max-steps", type=int, default=100, help="most optimisation steps per feature")
    args = parser.parse_args(argv)

    print("loading minilm (all-MiniLM-L6-v2 fine-tuned on polarity; trained here on first use, ~3 min) ...", flush=True)
    zm = load("minilm")
    print(f"minilm: test accuracy {zm.test_accuracy:.3f}", flush=True)
    chosen = pick_sentences(zm, load_polarity("test"), args.sentences)
    print("σ_S (the features' std) of every layer and the output, on 256 training sentences (cached) ...", flush=True)
    explainer = Explainer(zm, max_steps=args.max_steps, show_progress=True)
    print(f"explaining {len(chosen)} sentences at {len(zm.layers)} layers and the predicted logit ...", flush=True)
    start = time.perf_counter()
    ex = explainer([e.text for e in chosen])
    took = time.perf_counter() - start
    ex.show()

    out = Path(args.out)
    paths = [ex.save_html(out / "report.html"), save_figure(ex.plot("depth"), out / "depth.png")]
    paths += [save_figure(ex.plot("heatmap", sentence=b), out / f"sentence{b}.png") for b in range(len(ex))]
    ex.save(out / "explanation.safetensors")
    paths.append(str(out / "explanation.safetensors"))
    conv = int(ex.converged.sum())
    print(f"{len(ex.features)} features x {len(ex)} sentences explained in {took:.1f} s; "
          f"{conv} of {ex.converged.numel()} feature-sentence pairs passed the convergence test")
    print("written:\n  " + "\n  ".join(paths))


if __name__ == "__main__":
    main()
