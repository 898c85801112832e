"""`make demo`: which words does a fine-tuned BERT keep, at every layer and at its prediction?

1. fetch the polarity corpus (Pang & Lee) into the cache and split it (seeded);
2. train `minilm` (all-MiniLM-L6-v2 + a classifier head, 1 epoch) or load its checkpoint;
3. explain a few held-out test sentences with EntropyAttribution: noise on the embedding
   output, the feature = each encoder layer's output (all tokens) and the predicted logit;
   feature statistics fitted on training sentences make the numbers comparable;
4. print a table, and write an HTML report, a PNG figure and the results (safetensors).

    python -m captum_entropy.demo [--sentences 3] [--out out/demo] [--max-steps 150]
"""

from __future__ import annotations

import argparse
import html
import os
import time
from pathlib import Path

import torch

from . import EntropyAttribution, EntropyResult, FeatureStats


def main(argv: list[str] | None = None) -> None:
    from .zoo import load, load_polarity

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=3, help="how many test sentences to explain")
    parser.add_argument("--out", default="out/demo", help="folder for the report, the figure and the results")
    parser.add_argument("--stats-sentences", type=int, default=256, help="training sentences for feature statistics")
    parser.add_argument("--max-steps", type=int, default=100,
                        help="most refinement steps per feature (the table says how many features converged)")
    args = parser.parse_args(argv)
    test = load_polarity("test")[: args.sentences]
    zm = load("minilm")
    print(f"minilm (all-MiniLM-L6-v2 fine-tuned on polarity): test accuracy {zm.test_accuracy:.3f}")

    train = load_polarity("train")[: args.stats_sentences]
    batches = [zm.tokenize([e.text for e in train[i : i + 64]]) for i in range(0, len(train), 64)]
    features = {**zm.layers, "output": None}
    stats = FeatureStats().fit(zm.forward, batches, layers=features, mask_index=1, model_name="minilm")

    ids, mask = zm.tokenize([e.text for e in test])
    with torch.no_grad():
        pred = zm.forward(ids, mask).argmax(-1)
    common = dict(additional_forward_args=(mask,), mask=mask, max_steps=args.max_steps)
    start = time.perf_counter()
    layer_results = EntropyAttribution(zm.forward, zm.embedding, target_layer=list(zm.layers.values())).explain(
        ids, feature_std=[stats[n] for n in zm.layers], **common)
    # the same default objective (tolerance) for the hidden layers and the predicted logit
    output_result = EntropyAttribution(zm.forward, zm.embedding).explain(
        ids, target=pred, feature_std=stats["output"], **common)
    took = time.perf_counter() - start
    results = dict(zip(zm.layers, layer_results)) | {"output": output_result}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, res in results.items():
        res.save(out / f"{name}.safetensors")
    words = [zm.tokens(ids[b]) for b in range(len(test))]
    _print_table(results, words, test, pred, zm.label_names)
    report = _write_html(results, words, test, pred, zm.label_names, out / "report.html")
    figure = _figure(results, words[0], out / "layers_x_words.png")
    print(f"{len(results)} features x {len(test)} sentences explained in {took:.1f} s")
    print(f"report: {report}\nfigure: {figure}\nresults: {out}/<feature>.safetensors")


def _per_dim(res: EntropyResult, b: int, n: int) -> torch.Tensor:
    return res.token_entropy[b, :n] / res.n_dims


def _print_table(results, words, examples, pred, labels) -> None:
    print("\nword entropy H(X_i|s) per embedding dimension (nats); low = the feature keeps the word;"
          " * = the 3 best kept in that column; 'output' = the predicted logit\n")
    for b, example in enumerate(examples):
        n = len(words[b])
        print(f"\"{example.text}\"  label: {labels[example.label]}, predicted: {labels[int(pred[b])]}")
        table = torch.stack([_per_dim(r, b, n) for r in results.values()])
        best = table.argsort(dim=1)[:, :3]
        print(f"{'token':>14} " + " ".join(f"{name:>8}" for name in results))
        for i, w in enumerate(words[b]):
            cells = [f"{float(table[c, i]):7.3f}" + ("*" if i in best[c] else " ") for c in range(len(results))]
            print(f"{w[:14]:>14} " + " ".join(cells))
        conv = sum(int(r.converged[b]) for r in results.values())
        print(f"  converged on {conv}/{len(results)} features\n")


def _write_html(results, words, examples, pred, labels, path: Path) -> Path:
    rows = []
    for b, example in enumerate(examples):
        rows.append(f"<h3>{html.escape(example.text)}</h3><p>label <b>{labels[example.label]}</b>, "
                    f"predicted <b>{labels[int(pred[b])]}</b></p><table>")
        for name, res in results.items():
            imp = res.importance()[b, : len(words[b])]
            cells = "".join(
                f'<td style="background: rgba(0, 110, 220, {float(v):.2f})" title="{float(h):.3f} nats/dim">'
                f"{html.escape(w)}</td>"
                for w, v, h in zip(words[b], imp, _per_dim(res, b, len(words[b])))
            )
            rows.append(f"<tr><th>{name}</th>{cells}</tr>")
        rows.append("</table>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>captum_entropy demo</title>"
        "<style>body{font-family:sans-serif} td{padding:3px 5px} th{text-align:right;padding-right:8px}</style>"
        "<h1>Information each feature keeps about each word</h1>"
        "<p>minilm, noise on the embedding output; darker = more of the word kept (importance = "
        "entropy of a fully forgotten word minus the word's entropy, scaled per row). Hover for nats per dimension.</p>"
        + "\n".join(rows)
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _figure(results, words, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(words)
    table = torch.stack([_per_dim(r, 0, n) for r in results.values()]).numpy()
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.45 * len(results) + 1.8))
    im = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n), words, rotation=60, ha="right")
    ax.set_yticks(range(len(results)), list(results))
    fig.colorbar(im, ax=ax, label="entropy per dimension (nats); dark = kept")
    ax.set_title("Information each feature keeps about each word (minilm)")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    main()
