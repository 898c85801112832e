"""Attribution methods as one kind of thing: ``method(task) -> word scores``, higher = more important.

A :class:`Task` is one batch of sentences on one model: token ids, mask, the predicted class, the
word grouping. Every method returns per-token scores (B, T) that :func:`word_scores` sums into
words, or per-word scores directly. Built in: EntropyAttribution at the predicted logit and at
the last hidden layer, Captum's LayerIntegratedGradients, Saliency (gradient norm),
InputXGradient, DeepLift, GradientShap (all on the embedding layer), FeatureAblation, Occlusion,
KernelShap and Lime (words on and off, ids replaced by padding), and a seeded random baseline.
Any Captum class, instance or ``captum.attr`` name is added with :func:`captum_method`; any
callable ``task -> Tensor`` with :func:`register`.

>>> from captum_entropy.evaluate.methods import METHODS, resolve
>>> sorted(METHODS)[:3]
['deeplift', 'entropy', 'entropy_layer']
>>> resolve("Saliency").name            # a captum.attr class by name
'Saliency'
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..words import WordGrouping


@dataclass
class Task:
    """One batch to explain: ``zoo_model`` (a :class:`~captum_entropy.zoo.ZooModel`), ids and mask
    (B, T), ``target`` the predicted class per sentence, ``groupings`` per sentence, σ_S for
    the entropy methods (``stats``), a ``seed`` and per-method ``settings``."""

    zoo_model: Any
    ids: Tensor
    mask: Tensor
    target: Tensor
    groupings: list[WordGrouping]
    stats: Any = None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def forward(self) -> Callable[[Tensor, Tensor], Tensor]:
        return self.zoo_model.forward

    @property
    def embedding(self) -> nn.Module:
        return self.zoo_model.embedding

    @property
    def pad_id(self) -> int:
        return int(self.zoo_model.pad_token_id)

    def padded(self) -> Tensor:
        """The ids with every word token replaced by padding (specials kept): the baseline of
        the perturbation and path methods, so switching off a word removes only that word."""
        return torch.where(self.word_index() >= 0, torch.full_like(self.ids, self.pad_id), self.ids)

    def feature_mask(self) -> Tensor:
        """(B, T) Captum feature groups: one per word, numbered from 0 (specials and padding
        share a group of their own when there are any; the baseline leaves them unchanged)."""
        fmask = self.word_index() + 1
        return fmask - fmask.min()

    def word_index(self) -> Tensor:
        """(B, T): the word index of each token (0-based), -1 for specials and padding; a
        feature mask for perturbation methods is this + 1 (0 = never perturbed)."""
        rows = [list(g.word_of) + [-1] * (self.ids.shape[1] - len(g.word_of)) for g in self.groupings]
        return torch.tensor(rows, dtype=torch.long, device=self.ids.device)


@dataclass(frozen=True)
class Method:
    """A named attribution method: ``fn(task)`` gives (B, T) token scores or, with
    ``per_word=True``, (B, T) scores constant over each word's tokens (one value per word)."""

    name: str
    fn: Callable[[Task], Tensor]
    per_word: bool = False

    def __call__(self, task: Task) -> list[Tensor]:
        return word_scores(self.fn(task), task.groupings, self.per_word)


def word_scores(scores: Tensor, groupings: list[WordGrouping], per_word: bool = False) -> list[Tensor]:
    """Per sentence, the (W,) word scores: the sum over a word's tokens (or, ``per_word``,
    the value at its first token)."""
    scores = scores.detach().float().cpu()
    out = []
    for b, g in enumerate(groupings):
        row = scores[b, : len(g.word_of)]
        if per_word:
            out.append(torch.stack([row[span[0]] for span in g.spans()]) if g.n_words else row[:0])
        else:
            out.append(g.aggregate(torch.nan_to_num(row, nan=0.0)))
    return out


class _Forward(nn.Module):
    """``zoo_model.forward`` as an nn.Module (Captum's DeepLift needs one)."""

    def __init__(self, zoo_model: Any) -> None:
        super().__init__()
        self.inner = zoo_model.model
        self._forward = zoo_model.forward

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self._forward(ids, mask)


# -- the methods ---------------------------------------------------------------------------------

def _entropy(task: Task, layer: str | None) -> Tensor:
    from ..attr import EntropyAttribution
    from ..errors import ConvergenceWarning

    zm = task.zoo_model
    module = None if layer is None else zm.layers[layer]
    std = None if task.stats is None else task.stats["output" if layer is None else layer]
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = ea.explain(task.ids, target=None if layer else task.target, additional_forward_args=(task.mask,),
                            feature_std=std, mask=task.mask, seed=task.seed,
                            **{"show_progress": False, **task.settings.get("entropy", {})})
    return result.kept_information


def entropy_logit(task: Task) -> Tensor:
    """EntropyAttribution at the predicted class's logit: kept information per token (nats)."""
    return _entropy(task, None)


def entropy_layer(task: Task) -> Tensor:
    """EntropyAttribution at the last hidden layer's output (all tokens)."""
    return _entropy(task, list(task.zoo_model.layers)[-1])


def _layer_attr(task: Task, cls: Any, reduce: str, baseline: bool = False, init: dict | None = None,
                **kwargs: Any) -> Tensor:
    """A Captum layer method on the embedding (ids in, attributions at the embedding output)."""
    forward = _Forward(task.zoo_model) if cls.__name__ == "LayerDeepLift" else task.forward
    attr = cls(forward, task.embedding, **(init or {}))
    if baseline:
        kwargs["baselines"] = task.padded()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # DeepLift on non-linearities it does not know
        a = attr.attribute(task.ids, target=task.target, additional_forward_args=(task.mask,), **kwargs)
    return a.norm(dim=-1) if reduce == "norm" else a.sum(-1)


def layer_ig(task: Task) -> Tensor:
    """LayerIntegratedGradients on the embedding, all-padding baseline, summed over dimensions."""
    from captum.attr import LayerIntegratedGradients

    return _layer_attr(task, LayerIntegratedGradients, "sum", baseline=True, n_steps=32)


def saliency(task: Task) -> Tensor:
    """The gradient's L2 norm at each token's embedding (Saliency on the embedding output)."""
    from captum.attr import LayerGradientXActivation

    return _layer_attr(task, LayerGradientXActivation, "norm", init={"multiply_by_inputs": False})


def input_x_gradient(task: Task) -> Tensor:
    """InputXGradient on the embedding output, summed over dimensions."""
    from captum.attr import LayerGradientXActivation

    return _layer_attr(task, LayerGradientXActivation, "sum")


def deeplift(task: Task) -> Tensor:
    """DeepLift on the embedding, all-padding baseline, summed over dimensions."""
    from captum.attr import LayerDeepLift

    return _layer_attr(task, LayerDeepLift, "sum", baseline=True)


def gradient_shap(task: Task) -> Tensor:
    """GradientShap on the embedding output: 16 samples between the input and the all-padding
    sentence's embedding (Gaussian jitter 0.0), summed over dimensions; seeded."""
    from captum.attr import GradientShap

    torch.manual_seed(task.seed)
    emb = task.embedding(task.ids).detach()
    with torch.no_grad():
        base = task.embedding(task.padded()).detach()
    a = GradientShap(_from_embeddings(task)).attribute(emb, baselines=base, n_samples=16, target=task.target,
                                                       additional_forward_args=(task.ids, task.mask))
    return a.sum(-1)


def _perturbation(task: Task, cls: Any, **kwargs: Any) -> Tensor:
    attr = cls(task.forward)
    fmask = task.feature_mask()
    rows = []
    for b in range(task.ids.shape[0]):  # Lime / KernelShap take one example at a time
        sl = slice(b, b + 1)
        a = attr.attribute(task.ids[sl], baselines=task.padded()[sl], target=task.target[sl],
                           additional_forward_args=(task.mask[sl],), feature_mask=fmask[sl], **kwargs)
        rows.append(a.float())
    return torch.cat(rows)


def feature_ablation(task: Task) -> Tensor:
    """FeatureAblation: each word's ids replaced by padding, the drop of the predicted logit."""
    from captum.attr import FeatureAblation

    return _perturbation(task, FeatureAblation)


def occlusion(task: Task) -> Tensor:
    """Occlusion with a 1-token window (a token's id replaced by padding)."""
    from captum.attr import Occlusion

    attr = Occlusion(task.forward)
    return attr.attribute(task.ids, sliding_window_shapes=(1,), baselines=task.padded(), target=task.target,
                          additional_forward_args=(task.mask,)).float()


def kernel_shap(task: Task) -> Tensor:
    """KernelShap over words (64 coalitions, seeded)."""
    from captum.attr import KernelShap

    torch.manual_seed(task.seed)
    return _perturbation(task, KernelShap, n_samples=64)


def lime(task: Task) -> Tensor:
    """Lime over words (64 samples, seeded)."""
    from captum.attr import Lime

    torch.manual_seed(task.seed)
    return _perturbation(task, Lime, n_samples=64)


def random_scores(task: Task) -> Tensor:
    """Seeded uniform noise: the baseline every method must beat."""
    g = torch.Generator().manual_seed(task.seed)
    return torch.rand(task.ids.shape, generator=g)


METHODS: dict[str, Method] = {}


def register(name: str, fn: Callable[[Task], Tensor], per_word: bool = False) -> Method:
    """Add a method under ``name`` (``fn(task) -> (B, T) scores``) and return it."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a method needs a non-empty name, got {name!r}")
    METHODS[name] = Method(name, fn, per_word)
    return METHODS[name]


for _name, _fn, _pw in (("entropy", entropy_logit, False), ("entropy_layer", entropy_layer, False),
                        ("layer_ig", layer_ig, False), ("saliency", saliency, False),
                        ("input_x_gradient", input_x_gradient, False), ("deeplift", deeplift, False),
                        ("gradient_shap", gradient_shap, False), ("feature_ablation", feature_ablation, True),
                        ("occlusion", occlusion, False), ("kernel_shap", kernel_shap, True), ("lime", lime, True),
                        ("random", random_scores, True)):
    register(_name, _fn, _pw)


def captum_method(method: Any, name: str | None = None, reduce: str = "sum", **attribute_kwargs: Any) -> Method:
    """A Captum attribution class, instance or ``captum.attr`` name as a :class:`Method`.

    Layer methods (``Layer*``) are built on the model's embedding and take the ids; perturbation
    methods (FeatureAblation, Lime, KernelShap, ShapleyValueSampling, ...) switch whole words to
    padding; gradient methods on inputs (Saliency, IntegratedGradients, NoiseTunnel, ...) get
    the embedding output as their input. ``reduce``: ``"sum"`` or ``"norm"`` over the embedding
    dimensions. An instance must have been built on the task's model (its forward, its layer)."""
    import captum.attr as ca

    if reduce not in ("sum", "norm"):
        raise ValueError(f"reduce must be 'sum' or 'norm', got {reduce!r}")
    if isinstance(method, str):
        if not isinstance(getattr(ca, method, None), type):
            raise ValueError(f"captum.attr has no attribution class {method!r} (e.g. 'Saliency', "
                             "'LayerIntegratedGradients', 'FeatureAblation')")
        method = getattr(ca, method)
    cls = method if isinstance(method, type) else type(method)
    if not issubclass(cls, ca.Attribution):
        raise TypeError(f"{cls.__name__} is not a Captum Attribution")
    label = name or cls.__name__

    def build(task: Task) -> Any:
        if not isinstance(method, type):
            return method
        if issubclass(cls, ca.LayerAttribution):
            return cls(task.forward, task.embedding)
        return cls(task.forward if issubclass(cls, ca.PerturbationAttribution) else _from_embeddings(task))

    def run(task: Task) -> Tensor:
        attr, kw = build(task), dict(attribute_kwargs)
        if issubclass(cls, ca.PerturbationAttribution) and not issubclass(cls, ca.LayerAttribution):
            kw.setdefault("feature_mask", task.feature_mask())
            kw.setdefault("baselines", task.padded())
            rows = [attr.attribute(task.ids[b:b + 1], target=task.target[b:b + 1],
                                   additional_forward_args=(task.mask[b:b + 1],),
                                   **{**kw, "feature_mask": kw["feature_mask"][b:b + 1],
                                      "baselines": kw["baselines"][b:b + 1]})
                    for b in range(task.ids.shape[0])]
            return torch.cat(rows).float()
        if issubclass(cls, ca.LayerAttribution):
            a = attr.attribute(task.ids, target=task.target, additional_forward_args=(task.mask,), **kw)
        else:
            emb = task.embedding(task.ids).detach().requires_grad_()
            a = attr.attribute(emb, target=task.target, additional_forward_args=(task.ids, task.mask), **kw)
        a = a[0] if isinstance(a, tuple) else a
        return a.norm(dim=-1) if reduce == "norm" else a.sum(-1)

    per_word = issubclass(cls, ca.PerturbationAttribution) and not issubclass(cls, (ca.LayerAttribution, ca.Occlusion))
    return Method(label, run, per_word)


def _from_embeddings(task: Task) -> Callable[..., Tensor]:
    """``(embeddings, ids, mask) -> logits``: the model with its embedding output replaced."""
    from ..hooks import replace

    def forward(emb: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        with replace(task.embedding, lambda _: emb):
            return task.forward(ids, mask)

    return forward


def resolve(method: Any) -> Method:
    """A :class:`Method` from a registered name, a ``captum.attr`` class name, a Captum class or
    instance, a callable ``task -> scores``, or a Method."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str):
        if method in METHODS:
            return METHODS[method]
        try:
            return captum_method(method)
        except ValueError:
            raise ValueError(f"unknown method {method!r}: use one of {sorted(METHODS)}, a captum.attr class "
                             "name, a Captum attribution, or register(name, fn)") from None
    try:
        import captum.attr as ca

        if isinstance(method, ca.Attribution) or (isinstance(method, type) and issubclass(method, ca.Attribution)):
            return captum_method(method)
    except ImportError:
        pass
    if callable(method):
        return Method(getattr(method, "__name__", "custom"), method)
    raise TypeError(f"cannot use {type(method).__name__} as an attribution method")


def methods_from(spec: Any) -> list[Method]:
    """A list of methods from names / objects (a mapping name -> method renames them)."""
    if isinstance(spec, Mapping):
        return [Method(n, resolve(m).fn, resolve(m).per_word) for n, m in spec.items()]
    if isinstance(spec, (str, Method)) or not hasattr(spec, "__iter__"):
        spec = [spec]
    return [resolve(m) for m in spec]
