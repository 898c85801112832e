"""Wall time of EntropyAttribution against LayerIntegratedGradients and the guan2019 preset.

Tiny BERT built from a config (random weights), noise on the embedding module. Our feature is
encoder layer 2 (all tokens), the paper's main use; LayerIntegratedGradients attributes the
predicted logit, its usual use. All timings come from one run on one machine: report ratios.
For a per-token feature the default loss has the same optimum as the authors' mean loss, so
the σ of the default and of the guan2019 preset are compared directly (same cap).

    python benchmarks/bench_attribute.py [--sentences 8] [--tokens 16] [--guan-sentences 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import LayerIntegratedGradients
from scipy.stats import spearmanr
from transformers import BertConfig, BertForSequenceClassification

from captum_entropy import EntropyAttribution, FeatureStats


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--guan-sentences", type=int, default=2, help="sentences run one at a time with guan2019")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=128)
    model = BertForSequenceClassification(cfg).eval().to(dev)
    ids = torch.randint(5, 1000, (args.sentences, args.tokens), device=dev)
    mask = torch.ones_like(ids)
    f = lambda i, a: model(input_ids=i, attention_mask=a).logits
    with torch.no_grad():
        target = f(ids, mask).argmax(-1)
    data = [(torch.randint(5, 1000, (32, args.tokens), device=dev), torch.ones(32, args.tokens, dtype=torch.long, device=dev))
            for _ in range(4)]
    layer = model.bert.encoder.layer[1]
    std = FeatureStats().fit(f, data, layers={"layer2": layer}, mask_index=1)["layer2"]

    ea = EntropyAttribution(f, model.bert.embeddings, target_layer=layer)
    common = dict(additional_forward_args=(mask,), feature_std=std, max_sigma=0.5)
    ours, t_ours = timed(lambda: ea.explain(ids, **common))
    lig = LayerIntegratedGradients(f, model.bert.embeddings)
    _, t_lig = timed(lambda: lig.attribute(ids, target=target, additional_forward_args=(mask,), n_steps=50))
    k = args.guan_sentences
    guan, t_guan = timed(lambda: [
        ea.explain(ids[b : b + 1], additional_forward_args=(mask[b : b + 1],), feature_std=std, preset="guan2019")
        for b in range(k)
    ])
    per = lambda t, n: t / n
    print(f"device {dev}, tiny BERT (4 layers, hidden 128), {args.sentences} sentences x {args.tokens} tokens, "
          "noise on the embedding output, feature = encoder layer 2")
    print(f"EntropyAttribution default : {per(t_ours, args.sentences) * 1e3:9.1f} ms/sentence "
          f"(steps {ours.steps.float().mean():.0f} mean, converged {int(ours.converged.sum())}/{args.sentences})")
    print(f"LayerIntegratedGradients 50: {per(t_lig, args.sentences) * 1e3:9.1f} ms/sentence")
    print(f"guan2019 preset, 1 at a time: {per(t_guan, k) * 1e3:9.1f} ms/sentence ({k} sentences)")
    print(f"ratio default / LIG        : {t_ours / t_lig:.2f}")
    print(f"ratio guan2019 / default   : {per(t_guan, k) / per(t_ours, args.sentences):.1f}x slower")
    rho = [spearmanr(ours.sigma[b, :, 0].cpu(), guan[b].sigma[0, :, 0].cpu())[0] for b in range(k)]
    rel = [float((ours.sigma[b, :, 0] / guan[b].sigma[0, :, 0] - 1).abs().median()) for b in range(k)]
    print("default vs guan2019 σ, per sentence: Spearman", " ".join(f"{r:.3f}" for r in rho),
          "| median relative difference", " ".join(f"{r:.3f}" for r in rel))


if __name__ == "__main__":
    main()
