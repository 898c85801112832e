"""One line for the common case: ``explain(model, tokenizer, "text")``.

For a zoo model (by name) or any Hugging Face sequence classifier: fits (or loads from the
cache) σ_S, the features' std, of every layer and of the output, explains the sentences at
every layer and at the predicted class, groups sub-word tokens into words and returns a
:class:`~captum_entropy.analysis.LayerExplanation` that can ``show()``, ``plot()``,
``save_html()`` and ``save()``.

    >>> from captum_entropy import explain                       # doctest: +SKIP
    >>> explain("minilm", texts="a dull, dull movie .").show()   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn

from ._deprecated import renamed, renamed_keyword
from ._names import OUTPUT
from .analysis import LayerExplanation
from .layerwise import explain_layers
from .settings import Unset, given
from .stats import FeatureStats

STATS_SENTENCES = 256  # training sentences of the polarity corpus behind the default σ_S


class Explainer:
    """A model made ready for :meth:`__call__`: its wrapper, layers and σ_S (the features' std).

    Args:
        model: a zoo name (``"minilm"``, ``"cnn"``, ...), a :class:`~captum_entropy.zoo.ZooModel`,
            or a Hugging Face ``*ForSequenceClassification`` (then pass ``tokenizer``).
        tokenizer: the Hugging Face tokenizer of ``model``.
        layers: ``"all"`` (every hidden layer), a list of layer names, or ``()`` for none.
        output: also explain the predicted class's logit.
        feature_std: σ_S, the features' std over data: a :class:`FeatureStats` with every layer
            and ``"output"``, a path to a saved one, or ``None``: fitted on ``feature_std_texts``
            (default: the first 256 training sentences of the embedded polarity corpus) and
            cached per model.
        feature_std_texts: sentences to fit σ_S on.
        **settings: defaults for every call (``max_steps``, ``tolerance``, ``show_progress``, ...).
    """

    def __init__(self, model: Any, tokenizer: Any = None, layers: str | Sequence[str] = "all", output: bool = True,
                 feature_std: FeatureStats | str | Path | None = None, feature_std_texts: Sequence[str] | None = None,
                 **settings: Any) -> None:
        feature_std = renamed_keyword("Explainer", "stats", "feature_std", settings.pop("stats", None), feature_std)
        feature_std_texts = renamed_keyword("Explainer", "stats_texts", "feature_std_texts",
                                            settings.pop("stats_texts", None), feature_std_texts)
        self.zoo_model = as_zoo_model(model, tokenizer)
        known = list(self.zoo_model.layers)
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"layers must be 'all', a list of names from {known}, or (); got {layers!r}")
            names = known
        else:
            names = list(layers)
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"unknown layer(s) {unknown}; {self.zoo_model.name} has {known}")
        self.layers = {n: self.zoo_model.layers[n] for n in known if n in names}
        self.output = output
        self.settings = settings
        if isinstance(feature_std, (str, Path)):
            feature_std = FeatureStats.load(feature_std)
        self.feature_std = feature_std if feature_std is not None else feature_stats(self.zoo_model, feature_std_texts)
        needed = list(self.layers) + ([OUTPUT] if output else [])
        missing = [n for n in needed if n not in self.feature_std.std_]
        if missing:
            raise ValueError(f"feature_std (σ_S) lacks {missing} (it has {sorted(self.feature_std.std_)}); "
                             "fit it on every layer and 'output', or pass feature_std=None to fit it here")

    @property
    def stats(self) -> FeatureStats:
        """Deprecated spelling of :attr:`feature_std`."""
        renamed("Explainer.stats", "Explainer.feature_std")
        return self.feature_std

    def __call__(self, texts: str | Sequence[str], **settings: Any) -> LayerExplanation:
        """Explain ``texts`` (one sentence or a list) at every chosen layer and the prediction."""
        texts = check_texts(texts)
        zm = self.zoo_model
        ids, mask, groups = zm.encode(texts)
        device = _device(zm.model)
        ids, mask = ids.to(device), mask.to(device)
        return explain_layers(
            zm.forward, zm.embedding, ids, layers=self.layers, output=self.output, additional_forward_args=(mask,),
            feature_std=self.feature_std, groupings=groups, texts=texts, model_name=zm.name,
            label_names=list(zm.label_names), **{"mask": mask, **self.settings, **settings},
        )


def explain(model: Any, tokenizer: Any = None, texts: str | Sequence[str] | None = None, *,
            layers: str | Sequence[str] = "all", output: bool = True,
            feature_std: FeatureStats | str | Path | None = None, feature_std_texts: Sequence[str] | None = None,
            tolerance: float | None= Unset.tolerance, method: Literal["optimize", "linearized"] = Unset.method, max_steps: int = Unset.max_steps,
            n_samples: int | None= Unset.n_samples, seed: int = Unset.seed, internal_batch_size: int | None = Unset.internal_batch_size,
            show_progress: bool= Unset.show_progress, **settings: Any) -> LayerExplanation:
    """``Explainer(model, tokenizer, ...)(texts)``: every layer and the prediction, by word.

    ``tokenizer`` may be left out for a zoo model (``explain("cnn", texts=[...])``); a string in
    its place is taken as the texts.

    Args:
        model, tokenizer: a zoo name (``"minilm"``, ``"cnn"``, ...), a ZooModel, or a Hugging
            Face ``*ForSequenceClassification`` and its tokenizer.
        texts: one sentence or a list.
        layers: ``"all"`` hidden layers, a list of their names, or ``()``; output: also the
            predicted class's logit.
        feature_std, feature_std_texts: σ_S (a FeatureStats or a saved one), or the sentences to
            fit it on (default: 256 training sentences of the embedded corpus, cached).
        tolerance, method, max_steps, n_samples, seed, internal_batch_size, show_progress: as
            in :meth:`EntropyAttribution.attribute`; ``**settings``: any other field of
            :class:`~captum_entropy.Settings` (``preset="guan2019"`` included).
    """
    if texts is None and isinstance(tokenizer, (str, list, tuple)):
        tokenizer, texts = None, tokenizer
    if texts is None:
        raise TypeError("explain() needs texts: explain(model, tokenizer, 'a sentence') or texts=[...]")
    chosen = given(tolerance=tolerance, method=method, max_steps=max_steps, n_samples=n_samples, seed=seed,
                   internal_batch_size=internal_batch_size, show_progress=show_progress)
    return Explainer(model, tokenizer, layers=layers, output=output, feature_std=feature_std,
                     feature_std_texts=feature_std_texts, **settings)(texts, **chosen)


def as_zoo_model(model: Any, tokenizer: Any = None):
    """A :class:`~captum_entropy.zoo.ZooModel` for a zoo name, a ZooModel, or a HF classifier."""
    from .zoo import ZooModel, from_hf_classifier, load
    from .zoo.registry import MODEL_NAMES

    if isinstance(model, ZooModel):
        return model
    if isinstance(model, str):
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown zoo model {model!r}; choose one of {MODEL_NAMES}, or pass a Hugging Face "
                             "classifier and its tokenizer")
        return load(model)
    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} needs its tokenizer: explain(model, tokenizer, texts)")
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        return from_hf_classifier(model, tokenizer, name=str(name))
    raise TypeError(f"model must be a zoo name, a ZooModel or a Hugging Face classifier, got {type(model).__name__}")


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """A non-empty list of non-blank sentences (a clear error otherwise)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no sentences to explain: the list is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"sentence {i} is a {type(t).__name__}, not a str")
        if not t.strip():
            raise ValueError(f"sentence {i} is empty or only whitespace; remove it")
    return texts


def feature_stats(zm: Any, texts: Sequence[str] | None = None, batch_size: int = 64) -> FeatureStats:
    """σ_S of every layer of ``zm`` and of its output, fitted on ``texts`` (default: the first
    :data:`STATS_SENTENCES` polarity training sentences) and cached per model and data."""
    from .zoo import cache_dir, load_polarity

    if texts is None:
        texts = [e.text for e in load_polarity("train")[:STATS_SENTENCES]]
    texts = check_texts(texts)
    if len(texts) < 2:
        raise ValueError("fitting σ_S (the features' std) needs at least 2 sentences")
    key = hashlib.sha256((fingerprint(zm.model) + "\n".join(texts)).encode()).hexdigest()[:16]
    path = cache_dir() / "stats" / f"{zm.name.replace('/', '_')}-{key}.safetensors"
    if path.is_file():
        try:
            return FeatureStats.load(path)
        except Exception as err:  # a damaged cache entry is refitted, never trusted
            warnings.warn(f"cached σ_S (features' std) {path} is unreadable ({type(err).__name__}); refitting",
                          stacklevel=2)
            path.unlink(missing_ok=True)
    device = _device(zm.model)
    batches = []
    for i in range(0, len(texts), batch_size):
        ids, mask = zm.tokenize(texts[i:i + batch_size])
        batches.append((ids.to(device), mask.to(device)))
    stats = FeatureStats().fit(zm.forward, batches, layers={**zm.layers, OUTPUT: None}, mask_index=1,
                               model_name=zm.name)
    try:
        stats.save(path)
    except OSError as err:  # a read-only or full cache costs a refit next time, nothing else
        warnings.warn(f"could not cache σ_S (the features' std) in {path.parent} ({err}); it will be refitted "
                      "next time (set CAPTUM_ENTROPY_CACHE to a writable folder)", stacklevel=2)
    return stats


def fingerprint(model: nn.Module) -> str:
    """A cheap identity of a model's weights (names, shapes and two sums per tensor)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach()
            sums = (float(t.double().sum()), float(t.double().abs().sum())) if t.numel() else (0.0, 0.0)
            h.update(f"{name}{tuple(t.shape)}{t.dtype}{sums[0]:.10e}{sums[1]:.10e}".encode())
    return h.hexdigest()


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
