"""Attribution methods as one kind of thing: ``method(task) -> word scores``, higher = more important.

A :class:`Task` is one batch of sentences on one model: token ids, mask, the predicted class, the
word grouping. Every method returns per-token scores (B, T) that :func:`word_scores` turns into
word scores: summed over a word's pieces (additive attributions: a word's contribution is its
pieces' sum), averaged over them (EntropyAttribution: kept information per piece, so a word the
tokenizer cut in two is not ranked above a one-piece word of the same σ), or one value per word
(the perturbation methods that switch whole words). Built in: EntropyAttribution at the predicted logit and at
the last hidden layer, Captum's LayerIntegratedGradients, Saliency (gradient norm),
InputXGradient, DeepLift, GradientShap (all on the embedding layer), FeatureAblation, Occlusion,
KernelShap and Lime (words on and off, ids replaced by padding), and a seeded random baseline.
Any Captum class, instance or ``captum.attr`` name is added with :func:`captum_method`; any
callable ``task -> Tensor`` with :func:`register`.
One idea, the methods' registry, in one module (so over ~400 lines): each method is a few lines,
and they share the task, the word scores and the registry.

>>> from captum_entropy.evaluate.methods import METHODS, resolve
>>> sorted(METHODS)[:3]
['deeplift', 'entropy', 'entropy_layer']
>>> resolve("Saliency").name            # a captum.attr class by name
'Saliency'
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .._deprecated import renamed
from .._names import OUTPUT
from ..words import WordGrouping


@dataclass
class Task:
    """One batch to explain: ``zoo_model`` (a :class:`~captum_entropy.zoo.ZooModel`), ids and mask
    (B, T), ``target`` the predicted class per sentence, ``groupings`` per sentence, σ_S for
    the entropy methods (``feature_std``), a ``seed`` and per-method ``settings``."""

    zoo_model: Any
    ids: Tensor
    mask: Tensor
    target: Tensor
    groupings: list[WordGrouping]
    feature_std: Any = None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    offset: int = 0  # the dataset index of the first sentence (per-sentence seeds)

    @property
    def stats(self) -> Any:
        """Deprecated spelling of :attr:`feature_std`."""
        renamed("Task.stats", "Task.feature_std")
        return self.feature_std

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
        return fmask - fmask.min(dim=1, keepdim=True).values

    def sentence_seed(self, b: int) -> int:
        """The seed of sentence ``b``: from ``seed`` and its dataset index, not its batch."""
        return (self.seed * 1_000_003 + self.offset + b) % (2**63)

    def word_index(self) -> Tensor:
        """(B, T): the word index of each token (0-based), -1 for specials and padding; a
        feature mask for perturbation methods is this + 1 (0 = never perturbed)."""
        rows = [list(g.word_of) + [-1] * (self.ids.shape[1] - len(g.word_of)) for g in self.groupings]
        return torch.tensor(rows, dtype=torch.long, device=self.ids.device)


WORD_REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class Method:
    """A named attribution method: ``fn(task)`` gives (B, T) token scores or, with
    ``per_word=True``, (B, T) scores constant over each word's tokens (one value per word).
    ``reduce``: how token scores become a word's score, ``"sum"`` or ``"mean"`` over its pieces."""

    name: str
    fn: Callable[[Task], Tensor]
    per_word: bool = False
    reduce: str = "sum"

    def __post_init__(self) -> None:
        if self.reduce not in WORD_REDUCTIONS:
            raise ValueError(f"reduce must be one of {WORD_REDUCTIONS}, got {self.reduce!r}")

    def __call__(self, task: Task) -> list[Tensor]:
        return word_scores(self.fn(task), task.groupings, self.per_word, self.reduce)


def word_scores(scores: Tensor, groupings: list[WordGrouping], per_word: bool = False,
                reduce: str = "sum") -> list[Tensor]:
    """Per sentence, the (W,) word scores: the sum (``reduce="mean"``: the mean) over a word's
    tokens, or, ``per_word``, the value at its first token."""
    if reduce not in WORD_REDUCTIONS:
        raise ValueError(f"reduce must be one of {WORD_REDUCTIONS}, got {reduce!r}")
    scores = scores.detach().float().cpu()
    out = []
    for b, g in enumerate(groupings):
        row = scores[b, : len(g.word_of)]
        if per_word:
            out.append(torch.stack([row[span[0]] for span in g.spans()]) if g.n_words else row[:0])
        else:
            row = torch.nan_to_num(row, nan=0.0)
            out.append(g.mean(row) if reduce == "mean" else g.aggregate(row))
    return out


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's and numpy's global generators inside the block, restoring them after (Captum's
    sampling methods draw from both); the caller's random state is left as it was."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            np.random.set_state(state)


class _Forward(nn.Module):
    """``zoo_model.forward`` as an nn.Module (Captum's DeepLift needs one)."""

    def __init__(self, zoo_model: Any) -> None:
        super().__init__()
        self.inner = zoo_model.model
        self._forward = zoo_model.forward

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self._forward(ids, mask)


# -- the methods ---------------------------------------------------------------------------------

def _entropy(task: Task, layer: str | None, **overrides: Any) -> Tensor:
    from ..attr import EntropyAttribution
    from ..errors import ConvergenceWarning

    zm = task.zoo_model
    module = None if layer is None else zm.layers[layer]
    std = None if task.feature_std is None else task.feature_std[OUTPUT if layer is None else layer]
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = ea.attribute_result(task.ids, target=None if layer else task.target, additional_forward_args=(task.mask,),
                            feature_std=std, mask=task.mask,
                            **{"show_progress": False, "seed": task.seed, **task.settings.get("entropy", {}), **overrides})
    return result.token_kept


def entropy_logit(task: Task) -> Tensor:
    """EntropyAttribution at the predicted class's logit: kept information per token (nats);
    registered with ``reduce="mean"`` (a word scores the mean over its pieces)."""
    return _entropy(task, None)


def entropy_linearized(task: Task) -> Tensor:
    """EntropyAttribution's linearised closed form at the predicted logit (``method="linearized"``:
    one backward pass, the σ of a feature linear in the noise, i.e. Jacobian norms): the arm that
    says where the optimised σ departs from the linear answer, and whether that helps."""
    return _entropy(task, None, method="linearized")


def entropy_layer(task: Task) -> Tensor:
    """EntropyAttribution at the last hidden layer's output (all tokens)."""
    return _entropy(task, list(task.zoo_model.layers)[-1])


def _layer_attr(task: Task, cls: Any, reduce: str, baseline: bool = False, init: dict | None = None,
                layer: nn.Module | None = None, **kwargs: Any) -> Tensor:
    """A Captum layer method on ``layer`` (default: the embedding): ids in, (B, T) attributions at
    the layer's output reduced over its dimensions (the first tensor of a tuple output)."""
    forward = _Forward(task.zoo_model) if cls.__name__ == "LayerDeepLift" else task.forward
    attr = cls(forward, task.embedding if layer is None else layer, **(init or {}))
    if baseline:
        kwargs["baselines"] = task.padded()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # DeepLift on non-linearities it does not know
        a = attr.attribute(task.ids, target=task.target, additional_forward_args=(task.mask,), **kwargs)
    a = a[0] if isinstance(a, tuple) else a
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
    """GradientShap on the embedding output: 16 samples between the input and its own
    all-padding sentence's embedding, summed over dimensions; seeded per sentence."""
    from captum.attr import GradientShap

    forward = _from_embeddings(task)
    with torch.no_grad():
        emb, base = task.embedding(task.ids).detach(), task.embedding(task.padded()).detach()
    rows = []
    for b in range(task.ids.shape[0]):  # its own baseline only (Captum draws baselines across rows)
        sl = slice(b, b + 1)
        with _seeded(task.sentence_seed(b)):
            rows.append(GradientShap(forward).attribute(emb[sl], baselines=base[sl], n_samples=16, target=task.target[sl],
                                                        additional_forward_args=(task.ids[sl], task.mask[sl])))
    return torch.cat(rows).sum(-1)


def _perturbation(task: Task, attr: Any, **kwargs: Any) -> Tensor:
    """A Captum perturbation method over words: one sentence at a time (Lime and KernelShap take
    one example), each seeded on its own; baseline the all-padding sentence. Batch-shaped tensors
    among ``kwargs`` are sliced per sentence."""
    kwargs.setdefault("feature_mask", task.feature_mask())
    kwargs.setdefault("baselines", task.padded())
    B, rows = task.ids.shape[0], []
    for b in range(B):
        sl = slice(b, b + 1)
        per = {k: v[sl] if isinstance(v, Tensor) and v.dim() and v.shape[0] == B else v for k, v in kwargs.items()}
        with _seeded(task.sentence_seed(b)):
            rows.append(attr.attribute(task.ids[sl], target=task.target[sl], additional_forward_args=(task.mask[sl],),
                                       **per).float())
    return torch.cat(rows)


def _occlusion(task: Task, attr: Any, **kwargs: Any) -> Tensor:
    """Captum's Occlusion over single tokens (an id replaced by padding), the batch at once."""
    kwargs.setdefault("sliding_window_shapes", (1,))
    kwargs.setdefault("baselines", task.padded())
    return attr.attribute(task.ids, target=task.target, additional_forward_args=(task.mask,), **kwargs).float()


def feature_ablation(task: Task) -> Tensor:
    """FeatureAblation: each word's ids replaced by padding, the drop of the predicted logit."""
    from captum.attr import FeatureAblation

    return _perturbation(task, FeatureAblation(task.forward))


def occlusion(task: Task) -> Tensor:
    """Occlusion with a 1-token window (a token's id replaced by padding)."""
    from captum.attr import Occlusion

    return _occlusion(task, Occlusion(task.forward))


def kernel_shap(task: Task) -> Tensor:
    """KernelShap over words (64 coalitions, seeded per sentence)."""
    from captum.attr import KernelShap

    return _perturbation(task, KernelShap(task.forward), n_samples=64)


def lime(task: Task) -> Tensor:
    """Lime over words (64 samples, seeded per sentence)."""
    from captum.attr import Lime

    return _perturbation(task, Lime(task.forward), n_samples=64)


def random_scores(task: Task) -> Tensor:
    """Seeded uniform noise: the baseline every method must beat."""
    rows = [torch.rand(task.ids.shape[1], generator=torch.Generator().manual_seed(task.sentence_seed(b)))
            for b in range(task.ids.shape[0])]
    return torch.stack(rows)


METHODS: dict[str, Method] = {}


def register(name: str, fn: Callable[[Task], Tensor], per_word: bool = False, reduce: str = "sum") -> Method:
    """Add a method under ``name`` (``fn(task) -> (B, T) scores``; ``reduce`` over a word's
    pieces: ``"sum"`` or ``"mean"``) and return it."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a method needs a non-empty name, got {name!r}")
    METHODS[name] = Method(name, fn, per_word, reduce)
    return METHODS[name]


register("entropy", entropy_logit, reduce="mean")  # kept per piece: fair across piece counts
register("entropy_layer", entropy_layer, reduce="mean")
register("entropy_linearized", entropy_linearized, reduce="mean")
for _name, _fn, _pw in (("layer_ig", layer_ig, False), ("saliency", saliency, False),
                        ("input_x_gradient", input_x_gradient, False), ("deeplift", deeplift, False),
                        ("gradient_shap", gradient_shap, False), ("feature_ablation", feature_ablation, True),
                        ("occlusion", occlusion, False), ("kernel_shap", kernel_shap, True), ("lime", lime, True),
                        ("random", random_scores, True)):
    register(_name, _fn, _pw)


def captum_method(method: Any, name: str | None = None, reduce: str = "sum", **attribute_kwargs: Any) -> Method:
    """A Captum attribution class, instance or ``captum.attr`` name as a :class:`Method`.

    Layer methods (``Layer*``) are built on the model's embedding and take the ids (baseline:
    the all-padding sentence, where they take one); perturbation methods (FeatureAblation, Lime,
    KernelShap, ShapleyValueSampling, ...) switch whole words to padding, Occlusion single
    tokens; gradient methods on inputs (Saliency, IntegratedGradients, DeepLift, ...) get the
    embedding output as their input. ``reduce``: ``"sum"`` or ``"norm"`` over the embedding
    dimensions. An instance must be built on the task's model: a layer method on
    ``(zoo_model.forward, zoo_model.embedding)``, a perturbation method on ``zoo_model.forward``
    (called with ids and mask), an input method on a function of ``(embeddings, ids, mask)``.
    Wrappers (NoiseTunnel) are used as instances only."""
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
    if isinstance(method, type) and issubclass(cls, ca.NoiseTunnel):
        raise ValueError("NoiseTunnel wraps another attribution: pass an instance, e.g. "
                         "NoiseTunnel(IntegratedGradients(forward)) with forward(embeddings, ids, mask)")
    layer = issubclass(cls, ca.LayerAttribution)
    occlusion = issubclass(cls, ca.Occlusion)
    perturbation = issubclass(cls, ca.PerturbationAttribution) and not layer and not occlusion
    needs_module = "DeepLift" in cls.__name__  # Captum's DeepLift family hooks an nn.Module
    takes = set(inspect.signature(cls.attribute).parameters)

    def build(task: Task) -> Any:
        if not isinstance(method, type):
            return method
        if layer:
            return cls(_Forward(task.zoo_model) if needs_module else task.forward, task.embedding)
        if perturbation or occlusion:
            return cls(task.forward)
        forward = _from_embeddings(task)
        return cls(_EmbeddingForward(task, forward) if needs_module else forward)

    def run(task: Task) -> Tensor:
        attr, kw = build(task), dict(attribute_kwargs)
        if perturbation:
            return _perturbation(task, attr, **kw)
        if occlusion:
            return _occlusion(task, attr, **kw)
        with _seeded(task.sentence_seed(0)):
            if layer:
                if "baselines" in takes:
                    kw.setdefault("baselines", task.padded())
                a = attr.attribute(task.ids, target=task.target, additional_forward_args=(task.mask,), **kw)
            else:
                emb = task.embedding(task.ids).detach().requires_grad_()
                a = attr.attribute(emb, target=task.target, additional_forward_args=(task.ids, task.mask), **kw)
        a = a[0] if isinstance(a, tuple) else a
        return a.norm(dim=-1) if reduce == "norm" else a.sum(-1)

    return Method(name or cls.__name__, run, perturbation)


class _EmbeddingForward(nn.Module):
    """``(embeddings, ids, mask) -> logits`` as an nn.Module (Captum's DeepLift needs one)."""

    def __init__(self, task: Task, forward: Callable[..., Tensor]) -> None:
        super().__init__()
        self.inner = task.zoo_model.model
        self._forward = forward

    def forward(self, emb: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        return self._forward(emb, ids, mask)


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
        return [Method(n, resolve(m).fn, resolve(m).per_word, resolve(m).reduce) for n, m in spec.items()]
    if isinstance(spec, (str, Method)) or not hasattr(spec, "__iter__"):
        spec = [spec]
    return [resolve(m) for m in spec]
