"""Every layer at once: :func:`explain_layers` runs :class:`~captum_entropy.EntropyAttribution`
for every requested hidden layer (one call: the clean pass, the padding check and the seeds are
shared) and for the model's prediction, groups sub-word tokens into words (:mod:`.words`) and
returns a :class:`~captum_entropy.LayerExplanation`. The orchestration beside
:class:`~captum_entropy.Explainer`, which calls it for zoo and Hugging Face models.

>>> import torch
>>> from captum_entropy import explain_layers
>>> emb = torch.nn.Embedding(30, 8); enc = torch.nn.Linear(8, 8); head = torch.nn.Linear(8, 2)
>>> forward = lambda ids: head(torch.tanh(enc(emb(ids))).mean(1))
>>> ex = explain_layers(forward, emb, torch.tensor([[3, 4, 5]]), layers={"enc": enc},
...                     tokens=[["a", "good", "film"]], max_steps=20, tolerance=0.05)
>>> ex.features, ex.word_entropy(0).shape        # the hidden layer and the prediction, × 3 words
(['enc', 'output'], torch.Size([2, 3]))
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._names import OUTPUT
from .analysis import LayerExplanation, relative_depth
from .errors import ConvergenceWarning, NotComparableWarning
from .result import EntropyResult
from .words import WordGrouping, group_tokens


def explain_layers(
    forward_func: Callable[..., Any],
    embedding: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    layers: Mapping[str, nn.Module] | None = None,
    output: bool = True,
    target: Any = None,
    additional_forward_args: Any = None,
    feature_std: Any = None,
    tokens: Sequence[Sequence[str]] | None = None,
    groupings: Sequence[WordGrouping] | None = None,
    texts: Sequence[str] | None = None,
    model_name: str = "model",
    label_names: Sequence[str] = (),
    **settings: Any,
) -> LayerExplanation:
    """Explain ``inputs`` at every layer of ``layers`` and (``output=True``) at the prediction.

    Args:
        forward_func: ``(*inputs, *additional_forward_args) -> class scores (B, C)`` (or any
            output, with ``target``).
        embedding: the module whose output gets the noise.
        layers: ordered ``name -> module`` of hidden layers (shallow to deep). All of them are
            optimised in one :class:`EntropyAttribution` call.
        output: also explain the model output at ``target``.
        target: Captum target of the output feature; ``None``: the predicted class per sentence.
        feature_std: a :class:`~captum_entropy.FeatureStats` holding every layer's name and
            ``"output"`` (or a dict name -> tensor). ``None``: self-normalised, with a warning.
        tokens: per sentence, the token strings of every position (padding may be left out);
            grouped into words with :func:`~captum_entropy.words.group_tokens`. Or pass
            ``groupings`` directly. Neither: every position is its own word ``"#t"``.
        texts, model_name, label_names: stored in the result for display.
        **settings: any :class:`~captum_entropy.Settings` field (``tolerance``, ``max_steps``,
            ``mask``, ``show_progress``, ...).
    """
    from .attr import EntropyAttribution

    layers = dict(layers or {})
    if not layers and not output:
        raise ValueError("nothing to explain: pass layers= or output=True")
    if OUTPUT in layers:
        raise ValueError(f"{OUTPUT!r} names the model output; rename that hidden layer")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    extra = additional_forward_args if isinstance(additional_forward_args, tuple) else (
        () if additional_forward_args is None else (additional_forward_args,))
    with torch.no_grad():
        scores = forward_func(*args, *extra)
    prediction, probability = _prediction(scores, args[0].shape[0])
    if output and target is None:
        if (prediction < 0).any():
            raise ValueError(f"the model output has shape {tuple(getattr(scores, 'shape', ()))}, not (batch, classes): "
                             "pass target= (Captum semantics) or output=False")
        target = prediction.to(args[0].device)
    std = _std_lookup(feature_std)
    results: list[EntropyResult] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if layers:
            ea = EntropyAttribution(forward_func, embedding, target_layer=list(layers.values()))
            results += ea.attribute_result(inputs, additional_forward_args=additional_forward_args,
                                  feature_std=None if std is None else [std(n) for n in layers], **settings)
        if output:
            ea = EntropyAttribution(forward_func, embedding)
            results.append(ea.attribute_result(inputs, target=target, additional_forward_args=additional_forward_args,
                                      feature_std=None if std is None else std(OUTPUT), **settings))
    names = list(layers) + ([OUTPUT] if output else [])
    _rewarn(caught, names, results)
    mask = results[0].mask
    groupings = list(groupings) if groupings is not None else _groupings(tokens, mask)
    if len(groupings) != mask.shape[0]:
        raise ValueError(f"{len(groupings)} word groupings for {mask.shape[0]} sentences")
    target_t = torch.full((mask.shape[0],), -1, dtype=torch.long)
    if output and isinstance(target, (int, Tensor)):
        target_t = torch.as_tensor(target, dtype=torch.long).cpu().expand(mask.shape[0]).clone()
    return LayerExplanation(
        model=model_name, features=names, depth=relative_depth(names),
        texts=list(texts) if texts is not None else [""] * mask.shape[0], groupings=groupings,
        token_entropy=torch.stack([r.token_entropy for r in results]).float().cpu(),
        token_kept=torch.stack([r.token_kept for r in results]).float().cpu(),
        log_sigma=torch.stack([r.sigma.log().mean(-1) for r in results]).float().cpu(),
        mask=mask.cpu(), max_sigma=results[0].max_sigma.float().cpu(),
        saturated=torch.stack([r.saturated for r in results]).cpu(),
        converged=torch.stack([r.converged for r in results]).cpu(),
        stationarity=torch.stack([r.stationarity for r in results]).float().cpu(),
        distortion=torch.stack([r.distortion for r in results]).float().cpu(),
        steps=torch.stack([r.steps for r in results]).cpu(),
        prediction=prediction, probability=probability, target=target_t, n_dims=results[0].n_dims,
        label_names=list(label_names), settings={"features": {n: r.settings for n, r in zip(names, results)}},
        log_sigma_se=torch.stack([r.log_sigma_se.mean(-1) for r in results]).float().cpu(),
        ambiguous=torch.stack([r.ambiguous for r in results]).cpu(),
        ambiguity_gap=torch.stack([r.ambiguity_gap for r in results]).float().cpu(),
        linear_log_sigma=torch.stack([r.linear_sigma.log().mean(-1) for r in results]).float().cpu(),
    )


def _rewarn(caught: list, names: list[str], results: list[EntropyResult]) -> None:
    """Warnings of the run, with one summary per kind instead of one per feature and feature
    names instead of module positions."""
    seen = set()
    for w in caught:
        if issubclass(w.category, (ConvergenceWarning, NotComparableWarning)):
            continue
        if (w.category, str(w.message)) not in seen:
            seen.add((w.category, str(w.message)))
            warnings.warn(w.message, w.category, stacklevel=3)
    if any(issubclass(w.category, NotComparableWarning) for w in caught):
        warnings.warn("explained without feature_std: every feature is self-normalised, so numbers are not "
                      "comparable across sentences, layers or models; fit FeatureStats and pass feature_std=",
                      NotComparableWarning, stacklevel=3)
    failed = {n: (~r.converged).nonzero().flatten().tolist() for n, r in zip(names, results)}
    failed = {n: rows for n, rows in failed.items() if rows}
    if failed and any(issubclass(w.category, ConvergenceWarning) for w in caught):
        listed = "; ".join(f"{n}: sentence(s) {rows[:8]}{' ...' if len(rows) > 8 else ''}" for n, rows in failed.items())
        warnings.warn(f"not converged ({listed}); raise max_steps or n_samples, or check .converged "
                      "(marked in show(), plot() and the HTML)", ConvergenceWarning, stacklevel=3)
    capped = [n for n, r in zip(names, results) if bool(((r.saturated | ~r.mask).all(1)).any())]
    if capped:
        warnings.warn(f"{capped}: every word of some sentence is at the σ cap (fully forgotten); lower the "
                      "tolerance or raise max_sigma", ConvergenceWarning, stacklevel=3)


def _prediction(scores: Any, batch: int) -> tuple[Tensor, Tensor]:
    scores = getattr(scores, "logits", scores)
    if isinstance(scores, Tensor) and scores.dim() == 2 and scores.shape[0] == batch and scores.is_floating_point():
        prob = scores.float().softmax(-1)
        top = prob.max(-1)
        return top.indices.cpu(), top.values.cpu()
    return torch.full((batch,), -1, dtype=torch.long), torch.full((batch,), math.nan)


def _std_lookup(feature_std: Any) -> Callable[[str], Tensor] | None:
    if feature_std is None:
        return None
    if isinstance(feature_std, Mapping):
        def from_dict(name: str) -> Tensor:
            if name not in feature_std:
                raise KeyError(f"feature_std has no entry {name!r}; it has {sorted(feature_std)}")
            return feature_std[name]
        return from_dict
    if hasattr(feature_std, "std_"):
        return feature_std.__getitem__
    raise TypeError(f"feature_std must be a FeatureStats or a dict name -> tensor, got {type(feature_std).__name__}")


def _groupings(tokens: Sequence[Sequence[str]] | None, mask: Tensor) -> list[WordGrouping]:
    out = []
    for b in range(mask.shape[0]):
        row = mask[b].tolist()
        if tokens is None:
            toks = [f"#{t}" for t in range(len(row))]
        else:
            toks = list(tokens[b]) + [""] * (len(row) - len(tokens[b]))
            if len(toks) != len(row):
                raise ValueError(f"sentence {b} has {len(tokens[b])} tokens for {len(row)} positions")
        out.append(group_tokens(toks, mask=row, scheme="auto" if tokens is not None else "word"))
    return out
