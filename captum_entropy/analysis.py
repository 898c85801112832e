"""Every layer at once: words × layers entropies for a batch of sentences, in one result object.

:func:`explain_layers` runs :class:`~captum_entropy.EntropyAttribution` for every requested
hidden layer (one call: the clean pass, the padding check and the seeds are shared) and for the
model's prediction, groups sub-word tokens into words (:mod:`.words`) and returns a
:class:`LayerExplanation`, which shows itself (``show``, ``plot``, ``to_html``), saves and loads
(safetensors + JSON), and puts its rows beside Captum's other methods in ``visualize_text``.

>>> import torch
>>> from captum_entropy.analysis import explain_layers
>>> emb = torch.nn.Embedding(30, 8); enc = torch.nn.Linear(8, 8); head = torch.nn.Linear(8, 2)
>>> forward = lambda ids: head(torch.tanh(enc(emb(ids))).mean(1))
>>> ex = explain_layers(forward, emb, torch.tensor([[3, 4, 5]]), layers={"enc": enc},
...                     tokens=[["a", "good", "film"]], max_steps=20, tolerance=0.05)
>>> ex.features, ex.word_entropy(0).shape        # the hidden layer and the prediction, × 3 words
(['enc', 'output'], torch.Size([2, 3]))
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._deprecated import renamed, renamed_init_keyword
from ._io import load_tensors, save_tensors
from ._names import OUTPUT, OUTPUT_DEPTH  # noqa: F401  (re-exported)
from .errors import ConvergenceWarning, NotComparableWarning
from .readings import UNITS, WordReadings  # noqa: F401  (UNITS: re-exported)
from .result import EntropyResult
from .words import WordGrouping, group_tokens

_TENSORS = ("token_entropy", "token_kept", "log_sigma", "mask", "max_sigma", "saturated", "converged",
            "stationarity", "distortion", "steps", "prediction", "probability", "target")


@renamed_init_keyword("layers", "features")
@dataclass
class LayerExplanation(WordReadings):
    """Per-word entropies of a batch of sentences at several features (hidden layers, the prediction).

    Shapes: L features, B sentences, T token positions (padded). Token entropies are the paper's
    ``H(X_t|s)`` in nats (low = kept; NaN on padding); token kept information is
    ``log(max_sigma/σ)`` summed over the token's dimensions (≥ 0, 0 = forgotten, 0 on padding).
    Words are groups of tokens (:class:`~captum_entropy.words.WordGrouping`). A word's reading
    (:class:`~captum_entropy.readings.WordReadings`: ``word_kept``, ``word_entropy``, ...) is per
    dimension, the mean over its pieces, so a word the tokenizer cut in two reads like a one-piece
    word with the same σ; the sums over pieces are ``word_kept_total`` and ``word_entropy_total``.

    Attributes:
        model: the model's name.
        features: the explained features' names, shallow to deep (hidden layers' outputs, and
            ``"output"``: the predicted class's logit); ``layers`` is the deprecated spelling.
        depth: relative depth of each feature (layer l of N: l/N; the output: ``OUTPUT_DEPTH``).
        texts: the sentences (empty strings where unknown).
        groupings: per sentence, how its token positions form words.
        token_entropy, token_kept, log_sigma: (L, B, T); ``log_sigma`` is the mean of log σ
            over the token's dimensions.
        mask: (B, T) real tokens; max_sigma: (B,) the σ cap; saturated: (L, B, T) at the cap.
        converged, stationarity, distortion, steps: (L, B) per feature and sentence.
        prediction, probability: (B,) predicted class and its softmax probability (-1 / NaN
            when the model output is not a vector of class scores).
        target: (B,) the class whose logit the ``"output"`` feature is (-1 without one).
        n_dims: dimensions per token (K).
        label_names: class names (may be empty).
        settings: the settings of the run, JSON-serialisable.
    """

    model: str
    features: list[str]
    depth: list[float]
    texts: list[str]
    groupings: list[WordGrouping]
    token_entropy: Tensor
    token_kept: Tensor
    log_sigma: Tensor
    mask: Tensor
    max_sigma: Tensor
    saturated: Tensor
    converged: Tensor
    stationarity: Tensor
    distortion: Tensor
    steps: Tensor
    prediction: Tensor
    probability: Tensor
    target: Tensor
    n_dims: int
    label_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    # -- words: the readings are in .readings (WordReadings) ---------------------------------

    @property
    def layers(self) -> list[str]:
        """Deprecated spelling of :attr:`features` (a feature is a layer's output or the prediction)."""
        renamed("LayerExplanation.layers", "LayerExplanation.features")
        return self.features

    def __repr__(self) -> str:
        conv = int(self.converged.sum())
        return (f"LayerExplanation(model={self.model!r}, sentences={len(self)}, features={self.features}, "
                f"converged={conv}/{self.converged.numel()}; .show(), .plot(), .to_html(), .save())")

    def words(self, b: int) -> list[str]:
        """The words of sentence ``b``."""
        return list(self.groupings[b].words)

    # -- showing ---------------------------------------------------------------------------

    def show(self, sentences: Sequence[int] | None = None, unit: str = "nats", file: Any = None) -> None:
        """Print a words × features table per sentence (kept information per dimension, nats/dim;
        ~ = not converged, 0× = saturated)."""
        from . import viz

        print(viz.explanation_table(self, sentences, unit), file=file)

    def plot(self, kind: str = "heatmap", sentence: int = 0, **kwargs: Any):
        """A matplotlib figure: ``"heatmap"`` (words × features of one sentence) or ``"depth"``
        (sentence and corpus entropy against relative depth)."""
        from . import viz

        return viz.plot_explanation(self, kind, sentence, **kwargs)

    def to_html(self, **kwargs: Any) -> str:
        """One standalone HTML page (no Jupyter): every sentence, every feature, a legend."""
        from . import viz

        return viz.explanation_html(self, **kwargs)

    def save_html(self, path: str | os.PathLike, **kwargs: Any) -> str:
        """Write :meth:`to_html` to ``path`` atomically; returns the path."""
        from . import viz

        return viz.write_text(path, self.to_html(**kwargs))

    def _repr_html_(self) -> str:
        return self.to_html(full_page=False)

    def visualize_text_records(self, b: int, feature: str = OUTPUT, others: Mapping[str, Tensor] | None = None,
                               true_label: Any = None) -> list:
        """Rows for Captum's ``visualize_text``: ours at ``feature`` for sentence ``b`` (kept
        information per dimension, :meth:`word_kept`), then one per entry of ``others`` (name ->
        (T,) token attributions of another method, e.g.
        ``LayerIntegratedGradients(...).attribute(...).sum(-1)[b]``, summed over each word's
        pieces as additive attributions are), all in the same words and scaled to [-1, 1] per row."""
        from . import viz

        return viz.visualize_text_records(self, b, feature, others or {}, true_label)

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file (tensors) with JSON metadata (words, texts, settings); atomic."""
        meta = {
            "format": "captum_entropy.LayerExplanation/1", "model": self.model, "features": self.features,
            "depth": self.depth, "texts": self.texts, "n_dims": self.n_dims, "label_names": self.label_names,
            "settings": self.settings, "groupings": [g.to_dict() for g in self.groupings],
        }
        save_tensors(path, {k: getattr(self, k) for k in _TENSORS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LayerExplanation":
        """Load what :meth:`save` wrote (no pickle; nothing in the file is executed)."""
        tensors, meta = load_tensors(path)
        if meta.get("format") != "captum_entropy.LayerExplanation/1":
            raise ValueError(f"{path} is not a saved LayerExplanation (format {meta.get('format')!r})")
        missing = [k for k in _TENSORS if k not in tensors]
        if missing:
            raise ValueError(f"{path} lacks tensors {missing}: truncated or not written by LayerExplanation.save")
        return cls(
            model=str(meta["model"]), features=list(meta["features"] if "features" in meta else meta["layers"]), depth=[float(d) for d in meta["depth"]],
            texts=list(meta["texts"]), groupings=[WordGrouping.from_dict(g) for g in meta["groupings"]],
            n_dims=int(meta["n_dims"]), label_names=list(meta["label_names"]), settings=dict(meta["settings"]),
            **{k: tensors[k] for k in _TENSORS},
        )

    def select(self, features: Sequence[str]) -> "LayerExplanation":
        """The same sentences at a subset of the features."""
        idx = [self._layer_index(n) for n in features]
        per_layer = {k: getattr(self, k)[idx] for k in ("token_entropy", "token_kept", "log_sigma", "saturated",
                                                         "converged", "stationarity", "distortion", "steps")}
        rest = {k: getattr(self, k) for k in ("model", "texts", "groupings", "mask", "max_sigma", "prediction",
                                               "probability", "target", "n_dims", "label_names", "settings")}
        return LayerExplanation(features=[self.features[i] for i in idx], depth=[self.depth[i] for i in idx],
                                **per_layer, **rest)

    @classmethod
    def concat(cls, parts: Sequence["LayerExplanation"]) -> "LayerExplanation":
        """The sentences of ``parts`` (same model and features) in one result, padded to the longest."""
        if not parts:
            raise ValueError("nothing to concatenate: pass one LayerExplanation or more")
        first = parts[0]
        for p in parts[1:]:
            if (p.model, p.features, p.n_dims) != (first.model, first.features, first.n_dims):
                raise ValueError(f"cannot concatenate {p!r} with {first!r}: another model or other features")
        width = max(p.mask.shape[1] for p in parts)
        pad = {"token_entropy": math.nan, "token_kept": 0.0, "log_sigma": math.nan, "saturated": False, "mask": False}

        def cat(key: str) -> Tensor:
            dim = 0 if key in ("mask", "max_sigma", "prediction", "probability", "target") else 1
            ts = [getattr(p, key) for p in parts]
            if key in pad:
                ts = [torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=pad[key]) for t in ts]
            return torch.cat(ts, dim)

        return cls(model=first.model, features=list(first.features), depth=list(first.depth),
                   texts=[t for p in parts for t in p.texts],
                   groupings=[g.padded(width) for p in parts for g in p.groupings],
                   n_dims=first.n_dims, label_names=list(first.label_names), settings=dict(first.settings),
                   **{k: cat(k) for k in _TENSORS})

    def take(self, sentences: Sequence[int]) -> "LayerExplanation":
        """The sentences at ``sentences`` (indices, in that order)."""
        idx = torch.as_tensor(list(sentences), dtype=torch.long)
        per_sentence = {k: getattr(self, k)[idx] for k in ("mask", "max_sigma", "prediction", "probability", "target")}
        per_layer = {k: getattr(self, k)[:, idx] for k in _TENSORS if k not in per_sentence}
        return LayerExplanation(model=self.model, features=list(self.features), depth=list(self.depth),
                                texts=[self.texts[i] for i in idx.tolist()],
                                groupings=[self.groupings[i] for i in idx.tolist()], n_dims=self.n_dims,
                                label_names=list(self.label_names), settings=dict(self.settings),
                                **per_sentence, **per_layer)

    def _layer_index(self, name: str) -> int:
        if name not in self.features:
            raise KeyError(f"no feature {name!r}; this explanation has {self.features}")
        return self.features.index(name)


def relative_depth(names: Sequence[str]) -> list[float]:
    """Layer l of N hidden layers -> l/N; ``"output"`` -> :data:`OUTPUT_DEPTH`."""
    hidden = [n for n in names if n != OUTPUT]
    return [OUTPUT_DEPTH if n == OUTPUT else (hidden.index(n) + 1) / len(hidden) for n in names]


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
