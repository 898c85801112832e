"""The explanation of a batch at every layer: :class:`LayerExplanation` (words × features
entropies in one result object), which shows itself (``show``, ``plot``, ``to_html``), saves and
loads (safetensors + JSON), and puts its rows beside Captum's other methods in ``visualize_text``;
:func:`~captum_entropy.explain_layers` (:mod:`.layerwise`) makes one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ._deprecated import renamed, renamed_init_keyword
from ._io import load_tensors, save_tensors
from ._names import OUTPUT, OUTPUT_DEPTH  # noqa: F401  (re-exported)
from .readings import UNITS, WordReadings  # noqa: F401  (UNITS: re-exported)
from .words import WordGrouping

_PER_SENTENCE = ("mask", "max_sigma", "prediction", "probability", "target")  # (B, ...)
_OPTIONAL = ("log_sigma_se", "ambiguous", "ambiguity_gap", "linear_log_sigma")  # older files lack them
_PER_LAYER = ("token_entropy", "token_kept", "log_sigma", "saturated", "converged", "stationarity", "distortion",
              "steps") + _OPTIONAL  # (L, B, ...)
_TENSORS = tuple(k for k in _PER_LAYER if k not in _OPTIONAL) + _PER_SENTENCE  # every saved file has these


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
        log_sigma_se: (L, B, T) standard error of ``log_sigma`` from the noise draws (0 at the
            cap, NaN where not measured); the words' error bars
            (:meth:`~captum_entropy.readings.WordReadings.word_kept_se`).
        ambiguous, ambiguity_gap: (L, B) another optimum within ``ambiguity_gap`` nats/dim keeps
            other words (the check of other optima: the default on a prediction, ``starts``, or
            ``update="fixed_draws"``; False / NaN where not checked).
        linear_log_sigma: (L, B, T) like ``log_sigma`` for the linearised closed form
            (``method="linearized"``, one Jacobian: Saliency's regime); ``log_sigma`` minus it is
            how far the answer departs from a Jacobian norm (NaN in files saved before it).
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
    log_sigma_se: Tensor | None = None
    ambiguous: Tensor | None = None
    ambiguity_gap: Tensor | None = None
    linear_log_sigma: Tensor | None = None

    def __post_init__(self) -> None:
        shape = self.converged.shape
        if self.log_sigma_se is None:
            self.log_sigma_se = torch.full(self.log_sigma.shape, math.nan)
        if self.ambiguous is None:
            self.ambiguous = torch.zeros(shape, dtype=torch.bool)
        if self.ambiguity_gap is None:
            self.ambiguity_gap = torch.full(shape, math.nan)
        if self.linear_log_sigma is None:
            self.linear_log_sigma = torch.full(self.log_sigma.shape, math.nan)

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
        save_tensors(path, {k: getattr(self, k) for k in _TENSORS + _OPTIONAL}, meta)

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
            **{k: tensors[k] for k in _TENSORS}, **{k: tensors[k] for k in _OPTIONAL if k in tensors},
        )

    def select(self, features: Sequence[str]) -> "LayerExplanation":
        """The same sentences at a subset of the features."""
        idx = [self._layer_index(n) for n in features]
        per_layer = {k: getattr(self, k)[idx] for k in _PER_LAYER}
        rest = {k: getattr(self, k) for k in ("model", "texts", "groupings", "n_dims", "label_names", "settings")
                + _PER_SENTENCE}
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
        pad = {"token_entropy": math.nan, "token_kept": 0.0, "log_sigma": math.nan, "saturated": False, "mask": False,
               "log_sigma_se": math.nan, "linear_log_sigma": math.nan}

        def cat(key: str) -> Tensor:
            dim = 0 if key in _PER_SENTENCE else 1
            ts = [getattr(p, key) for p in parts]
            if key in pad:
                ts = [torch.nn.functional.pad(t, (0, width - t.shape[-1]), value=pad[key]) for t in ts]
            return torch.cat(ts, dim)

        return cls(model=first.model, features=list(first.features), depth=list(first.depth),
                   texts=[t for p in parts for t in p.texts],
                   groupings=[g.padded(width) for p in parts for g in p.groupings],
                   n_dims=first.n_dims, label_names=list(first.label_names), settings=dict(first.settings),
                   **{k: cat(k) for k in _TENSORS + _OPTIONAL})

    def take(self, sentences: Sequence[int]) -> "LayerExplanation":
        """The sentences at ``sentences`` (indices, in that order)."""
        idx = torch.as_tensor(list(sentences), dtype=torch.long)
        per_sentence = {k: getattr(self, k)[idx] for k in _PER_SENTENCE}
        per_layer = {k: getattr(self, k)[:, idx] for k in _PER_LAYER}
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


def __getattr__(name: str) -> Any:
    if name == "explain_layers":  # its old home; it now lives beside Explainer (a deprecated path, not a dependency)
        import importlib

        renamed("captum_entropy.analysis.explain_layers", "captum_entropy.explain_layers (captum_entropy.layerwise)")
        return importlib.import_module(f"{__package__}.layerwise").explain_layers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

