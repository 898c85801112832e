"""Model against model: the same sentences through several models, aligned by word.

Tokenizers differ (WordPiece pieces, whole words, ``<unk>``), so each model's words are mapped
onto a common segmentation of the sentence (:func:`~captum_entropy.words.align_words`); a unit
reads the mean of the model's words in it, each word the mean over its pieces (the readings of
:mod:`~captum_entropy.readings`), so neither a tokenizer's pieces nor its extra words ("isn", "'",
"t") make a unit look more kept. Values are per embedding dimension (models of different widths
share one scale) and, with σ_S (the features' std) fitted per model and layer, in units of the
features' own spread; depth is relative (layer / number of layers), so a 2-layer and a 6-layer
model share one axis.

>>> import torch
>>> from captum_entropy import explain_layers
>>> from captum_entropy.comparison import compare_models
>>> emb = torch.nn.Embedding(30, 8); head = torch.nn.Linear(8, 2)
>>> forward = lambda ids: head(emb(ids).mean(1))
>>> a = explain_layers(forward, emb, torch.tensor([[3, 4, 5]]), tokens=[["a", "good", "film"]],
...                    model_name="a", texts=["a good film"], max_steps=5)
>>> b = explain_layers(forward, emb, torch.tensor([[3, 4, 5]]), tokens=[["a", "good", "film"]],
...                    model_name="b", texts=["a good film"], max_steps=5)
>>> cmp = compare_models([a, b])
>>> cmp.models, cmp.units[0]
(['a', 'b'], ['a', 'good', 'film'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ._deprecated import renamed, renamed_init_keyword, renamed_keyword
from ._io import load_tensors, save_tensors
from ._names import OUTPUT
from .analysis import LayerExplanation
from .readings import share
from .words import align_words, aligned_words

_FORMAT = "captum_entropy.ModelComparison/2"  # /1: units read as sums over pieces and words


@renamed_init_keyword("mean_entropy", "mean_word_entropy")
@renamed_init_keyword("layers", "features")
@dataclass
class ModelComparison:
    """Several models' explanations of the same sentences on a common word segmentation.

    Attributes:
        models: model names.
        texts: the sentences (B).
        units: per sentence, the display strings of the aligned word units.
        features, depth: per model, its feature names and their relative depths (``layers``: the
            deprecated spelling of ``features``).
        entropy: per model, (L_m, B, U) entropy per dimension of each unit (the mean of the
            model's words in it, each :meth:`~captum_entropy.readings.WordReadings.word_entropy`),
            nats/dim (NaN where a unit has no word of that model, e.g. a truncated sentence, or
            past a sentence's last unit).
        mean_word_entropy: per model, (L_m, B) the mean entropy per dimension of a word of the
            sentence, over the model's own words (not the units: a model whose tokenizer
            splits "isn't" into three words would otherwise look as if it forgot more).
        share: per model, (L_m, B, U) each unit's kept information per dimension (the mean of
            the model's words in it, each ``word_kept``) over the sum over the sentence's units
            (rows sum to 1 over units; 1/U each if every unit is kept alike).
        converged: per model, (L_m, B).
        prediction, probability: per model, (B,).
        label_names: per model.
    """

    models: list[str]
    texts: list[str]
    units: list[list[str]]
    features: list[list[str]]
    depth: list[list[float]]
    entropy: list[Tensor]
    share: list[Tensor]
    mean_word_entropy: list[Tensor]
    converged: list[Tensor]
    prediction: list[Tensor]
    probability: list[Tensor]
    label_names: list[list[str]] = field(default_factory=list)

    @property
    def layers(self) -> list[list[str]]:
        """Deprecated spelling of :attr:`features`."""
        renamed("ModelComparison.layers", "ModelComparison.features")
        return self.features

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (f"ModelComparison(models={self.models}, sentences={len(self)}; .show(), .plot('depth'|'words'), "
                ".to_html(), .save())")

    def corpus_entropy(self) -> list[Tensor]:
        """Per model, (L_m,): the mean over sentences of :attr:`mean_word_entropy` (nats per dimension)."""
        return [e.mean(-1) for e in self.mean_word_entropy]

    def sentence_entropy(self) -> list[Tensor]:
        """Deprecated: the field :attr:`mean_word_entropy` (per model, (L_m, B): each sentence's mean
        word entropy per dimension, as :meth:`LayerExplanation.mean_word_entropy`)."""
        renamed("ModelComparison.sentence_entropy()", "ModelComparison.mean_word_entropy")
        return list(self.mean_word_entropy)

    @property
    def mean_entropy(self) -> list[Tensor]:
        """Deprecated spelling of :attr:`mean_word_entropy`."""
        renamed("ModelComparison.mean_entropy", "ModelComparison.mean_word_entropy")
        return self.mean_word_entropy

    def feature_index(self, m: int, feature: str | None = None) -> int:
        """Index of ``feature`` (default: the output if explained, else the last layer) in model ``m``."""
        names = self.features[m]
        feature = feature or (OUTPUT if OUTPUT in names else names[-1])
        if feature not in names:
            raise KeyError(f"{self.models[m]} has no feature {feature!r}; it has {names}")
        return names.index(feature)

    def show(self, file: Any = None) -> None:
        """Print, per model, corpus entropy against relative depth, then each sentence's shares."""
        from . import viz

        print(viz.comparison_table(self), file=file)

    def plot(self, kind: str = "depth", sentence: int = 0, **kwargs: Any):
        """``"depth"``: corpus entropy per dimension against relative depth, one line per model;
        ``"words"``: one sentence's units × models, share of kept information at the output."""
        from . import viz

        return viz.plot_comparison(self, kind, sentence, **kwargs)

    def to_html(self, **kwargs: Any) -> str:
        from . import viz

        return viz.comparison_html(self, **kwargs)

    def save_html(self, path: str | os.PathLike, **kwargs: Any) -> str:
        from . import viz

        return viz.write_text(path, self.to_html(**kwargs))

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file with JSON metadata; atomic."""
        tensors = {}
        for m in range(len(self.models)):
            for key in ("entropy", "share", "mean_word_entropy", "converged", "prediction", "probability"):
                tensors[f"{m}/{key}"] = getattr(self, key)[m]
        meta = {"format": _FORMAT, "models": self.models, "texts": self.texts, "units": self.units,
                "features": self.features, "depth": self.depth, "label_names": self.label_names}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelComparison":
        tensors, meta = load_tensors(path)
        if meta.get("format") == "captum_entropy.ModelComparison/1":
            raise ValueError(f"{path} was saved by an older captum_entropy whose units read sums over pieces and "
                             "words; compare the LayerExplanations again (compare_models) and save that")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved ModelComparison (format {meta.get('format')!r})")
        n = len(meta["models"])
        try:
            for m in range(n):  # files written before the rename
                if f"{m}/mean_entropy" in tensors:
                    tensors[f"{m}/mean_word_entropy"] = tensors.pop(f"{m}/mean_entropy")
            per = {key: [tensors[f"{m}/{key}"] for m in range(n)]
                   for key in ("entropy", "share", "mean_word_entropy", "converged", "prediction", "probability")}
        except KeyError as missing:
            raise ValueError(f"{path} lacks tensor {missing}: truncated or not written by ModelComparison.save") from None
        return cls(models=list(meta["models"]), texts=list(meta["texts"]), units=[list(u) for u in meta["units"]],
                   features=[list(x) for x in meta["features" if "features" in meta else "layers"]], depth=[list(map(float, d)) for d in meta["depth"]],
                   label_names=[list(x) for x in meta["label_names"]], **per)


def compare_models(explanations: Sequence[LayerExplanation]) -> ModelComparison:
    """Align several models' explanations of the same sentences by word (see module doc)."""
    if len(explanations) < 1:
        raise ValueError("compare_models needs at least one explanation")
    texts = explanations[0].texts
    for i, ex in enumerate(explanations[1:], 1):
        if len(ex) != len(texts) or (any(texts) and ex.texts != texts):
            raise ValueError(f"explanation {i} ({ex.model}) explains other sentences than explanation 0 "
                             f"({explanations[0].model}): compare explanations of the same texts, in the same order")
    n_b = len(texts) or len(explanations[0])
    units, maps = [], []
    for b in range(n_b):
        word_lists = [ex.words(b) for ex in explanations]
        maps.append(align_words(word_lists))
        units.append(aligned_words(word_lists))
    width = max((len(u) for u in units), default=0)
    entropy, shares = [], []
    for m, ex in enumerate(explanations):
        e = torch.full((len(ex.features), n_b, width), float("nan"))
        k = torch.full((len(ex.features), n_b, width), float("nan"))
        for b in range(n_b):
            we, wk = ex.word_entropy(b), ex.word_kept(b)  # per dimension, each word the mean over its pieces
            for u, idx in enumerate(maps[b][m]):
                if idx:
                    e[:, b, u] = we[:, idx].mean(-1)
                    k[:, b, u] = wk[:, idx].mean(-1)
        entropy.append(e)
        shares.append(share(k.nan_to_num(0.0)).where(~k.isnan(), k))
    return ModelComparison(
        models=[ex.model for ex in explanations], texts=list(texts) or [""] * n_b, units=units,
        features=[list(ex.features) for ex in explanations], depth=[list(ex.depth) for ex in explanations],
        entropy=entropy, share=shares, mean_word_entropy=[ex.mean_word_entropy() for ex in explanations],
        converged=[ex.converged for ex in explanations],
        prediction=[ex.prediction for ex in explanations], probability=[ex.probability for ex in explanations],
        label_names=[list(ex.label_names) for ex in explanations],
    )


def compare(models: Sequence[Any], texts: Sequence[str], feature_std_texts: Sequence[str] | None = None,
            **settings: Any) -> ModelComparison:
    """Explain ``texts`` with each model (zoo names or ZooModels; σ_S fitted per model and layer on
    ``feature_std_texts``) and compare them."""
    from .explainer import Explainer

    feature_std_texts = renamed_keyword("compare", "stats_texts", "feature_std_texts", settings.pop("stats_texts", None),
                                        feature_std_texts)
    return compare_models([Explainer(m, feature_std_texts=feature_std_texts)(texts, **settings) for m in models])
