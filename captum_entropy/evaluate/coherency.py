"""Layer coherency: does a method rank the same words alike from one layer to the next?

For every pair of consecutive hidden layers, Kendall's τ between a method's word scores at the
two layers, per sentence. EntropyAttribution's scores at layer l are the kept information of
each word at that layer's output (every layer in one call); the gradient methods' layer
variants attribute to the layer's output (Captum's ``LayerIntegratedGradients`` with an
all-padding baseline, ``LayerGradientXActivation``), summed over its dimensions.

>>> from captum_entropy.evaluate.coherency import layer_coherency       # doctest: +SKIP
>>> layer_coherency("transformer", texts).groupby("method").tau.mean()  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from .._deprecated import renamed_keyword
from .faithfulness import _kendall
from .methods import Task, _layer_attr, word_scores

COHERENCY_METHODS = ("entropy", "layer_ig", "layer_gradient_x_activation")


def _gradient_layers(task: Task, method: str) -> list[list[torch.Tensor]]:
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    kind = {"layer_ig": (LayerIntegratedGradients, {"baseline": True, "n_steps": 32}),
            "layer_gradient_x_activation": (LayerGradientXActivation, {})}
    cls, kw = kind[method]
    return [word_scores(_layer_attr(task, cls, "sum", layer=module, **kw), task.groupings)
            for module in task.zoo_model.layers.values()]


def layer_coherency(model: Any, texts: Sequence[str], tokenizer: Any = None,
                    methods: Sequence[str] = COHERENCY_METHODS, feature_std: Any = None, batch_size: int = 16,
                    entropy_settings: dict | None = None, stats: Any = None):
    """A pandas DataFrame: model, method, sentence, the layer pair, Kendall's τ of the word
    scores at the two layers (NaN where a sentence has fewer than 2 words or a row is constant)."""
    import pandas as pd

    from ..explainer import Explainer, as_zoo_model, check_texts

    feature_std = renamed_keyword("layer_coherency", "stats", "feature_std", stats, feature_std)
    texts = check_texts(texts)
    zm = as_zoo_model(model, tokenizer)
    unknown = [m for m in methods if m not in COHERENCY_METHODS]
    if unknown:
        raise ValueError(f"layer coherency knows {COHERENCY_METHODS}, not {unknown}")
    names = list(zm.layers)
    if len(names) < 2:
        raise ValueError(f"{zm.name} has one hidden layer ({names}): coherency needs two or more")
    explainer = Explainer(zm, output=False, feature_std=feature_std, show_progress=False, **(entropy_settings or {})) \
        if "entropy" in methods else None
    rows, device = [], next(iter(zm.model.parameters())).device
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        ids, mask, groups = zm.encode(chunk)
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            target = zm.forward(ids, mask).argmax(-1)
        task = Task(zm, ids, mask, target, list(groups), offset=start)
        for method in methods:
            if method == "entropy":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ex = explainer(chunk)
                per_layer = [[ex.word_kept(b)[f] for b in range(len(chunk))] for f in range(len(names))]
            else:
                per_layer = _gradient_layers(task, method)
            for f in range(len(names) - 1):
                for b in range(len(chunk)):
                    tau = _kendall(per_layer[f][b].numpy(), per_layer[f + 1][b].numpy())
                    rows.append({"model": zm.name, "method": method, "sentence": start + b,
                                 "pair": f"{names[f]}→{names[f + 1]}", "tau": tau})
    df = pd.DataFrame(rows)
    df["tau"] = df["tau"].astype(float)
    return df


def coherency_summary(df) -> Any:
    """Mean τ per model, method and layer pair, with a 95 % bootstrap interval over sentences."""
    import pandas as pd

    from .statistics import bootstrap_ci

    out = []
    for (model, method, pair), g in df.groupby(["model", "method", "pair"], sort=False):
        v = g["tau"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        mean, lo, hi = bootstrap_ci(v) if v.size else (np.nan,) * 3
        out.append({"model": model, "method": method, "pair": pair, "tau": mean, "lo": lo, "hi": hi, "n": v.size})
    return pd.DataFrame(out)
