"""Does a change to the core change real answers? σ of the defaults on every zoo feature, saved
before and after, then compared row by row.

Run it once on the old code and once on the new (same machine, same torch), then compare:

    python benchmarks/same_answers.py save out/answers-old.npz     # on the old commit
    python benchmarks/same_answers.py save out/answers-new.npz     # on the new one
    python benchmarks/same_answers.py compare out/answers-old.npz out/answers-new.npz

``save`` runs the defaults (seed 0) on the first held-out test sentences of every zoo model
(``--sentences``, MiniLM ``--minilm-sentences``): every hidden layer and the prediction (the
predicted class's logit; MiniLM's pooled output too). ``compare`` prints, per feature, how many
sentences are identical bit for bit and the largest |Δ log σ|. Answers go to ``.npz`` (no pickle).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from captum_entropy import EntropyAttribution  # noqa: E402
from captum_entropy.zoo import load, load_polarity  # noqa: E402
from common import zoo_feature_std  # noqa: E402


def features(zm):
    """``name -> module`` (None: the predicted logit) of every feature the defaults explain."""
    out = dict(zm.layers)
    if zm.name == "minilm":
        out["pooled"] = zm.model.bert.pooler
    out["logit"] = None
    return out


def save(path: Path, models: list[str], sentences: int, minilm_sentences: int) -> None:
    answers = {}
    for name in models:
        zm = load(name)
        n = minilm_sentences if name == "minilm" else sentences
        ids, mask = zm.tokenize([e.text for e in load_polarity("test")[:n]])
        with torch.no_grad():
            pred = zm.forward(ids, mask).argmax(-1)
        for feature, module in features(zm).items():
            ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = ea.attribute_result(ids, target=pred if module is None else None, additional_forward_args=(mask,),
                                          mask=mask, feature_std=zoo_feature_std(zm, module))
            answers[f"{name}/{feature}"] = res.sigma.detach().cpu().double().numpy()
            print(f"{name}/{feature}: {n} sentences, {time.perf_counter() - start:.1f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:  # atomically: a killed run leaves no half-written file under the name
        np.savez(f, **answers)
    os.replace(part, path)
    print(f"wrote {path}")


def compare(old: Path, new: Path) -> None:
    a, b = np.load(old), np.load(new)
    for key in a.files:
        if key not in b.files:
            print(f"{key}: only in {old}")
            continue
        x, y = a[key], b[key]
        changed = [i for i in range(len(x)) if not np.array_equal(x[i], y[i], equal_nan=True)]
        with np.errstate(invalid="ignore"):
            worst = np.nanmax(np.abs(np.log(x) - np.log(y)))
        print(f"{key}: {len(x) - len(changed)}/{len(x)} sentences identical bit for bit, max |Δ log σ| {worst:.4g}")
        for i in changed:  # mean log σ over the sentence's real tokens (NaN: padding)
            print(f"  sentence {i}: mean log σ {np.nanmean(np.log(x[i])):.3f} -> {np.nanmean(np.log(y[i])):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="σ of the defaults on every zoo feature, to an .npz")
    s.add_argument("path", type=Path)
    s.add_argument("--models", default="cnn,lstm,transformer,minilm")
    s.add_argument("--sentences", type=int, default=8)
    s.add_argument("--minilm-sentences", type=int, default=4)
    c = sub.add_parser("compare", help="two saved .npz files, feature by feature")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    args = parser.parse_args()
    if args.command == "save":
        save(args.path, args.models.split(","), args.sentences, args.minilm_sentences)
    else:
        compare(args.old, args.new)


if __name__ == "__main__":
    main()
