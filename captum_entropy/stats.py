"""σ_S (``feature_std``): the per-element std of a feature over a data sample.

Dividing the distortion by σ_S makes entropies comparable across sentences, layers and models.
For a per-token feature (B, T, D) the statistic is the std over sentences of the token-mean
feature, a D-vector broadcast over tokens; for a fixed-size feature (B, C) it is per element.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
>>> batches = [(torch.randint(0, 10, (8, 5)),) for _ in range(3)]
>>> stats = FeatureStats().fit(net, batches, layers={"linear": net[1]})
>>> stats["linear"].shape, stats.n_["linear"]
(torch.Size([3]), 24)
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._io import bad_file, load_tensors, save_tensors
from ._names import OUTPUT
from .checks import IdsWatch
from .hooks import capture_all, first_tensor, no_dropout, on_module_start, stoppable



class TinyStdWarning(UserWarning):
    """Some feature dimensions barely vary; their std was raised to a floor."""


def floor_std(std: Tensor, rel_floor: float, what: str = "feature_std") -> Tensor:
    """Raise entries below ``rel_floor × median(std)`` to that floor, with a warning.

    Real models have dimensions that never vary (MiniLM's last layer has one with std ≈ 1e-32);
    dividing by them would blow the loss up (the reference code returns NaN there). The median is
    the middle value (the mean of the two middle ones for an even count) of the positive entries
    that are not numerically zero next to the largest (at least its ``finfo(dtype).eps`` share),
    so any number of such dimensions is floored as long as one is not: ``[1, 1e-32]`` and
    ``[1, 1e-32, 1e-32]`` get the floor ``rel_floor``. If every entry is tiny (``1e-32`` everywhere)
    nothing is floored: there is no scale to floor against, and the caller's overflow check
    (:meth:`Feature.build`) says so. All zeros: the floor is ``rel_floor``.
    """
    positive = std[std > 0]
    if positive.numel():
        scale = positive[positive >= positive.max() * torch.finfo(std.dtype).eps].sort().values
        median = scale[(len(scale) - 1) // 2] / 2 + scale[len(scale) // 2] / 2  # halves first: no overflow
    else:
        median = std.new_tensor(1.0)
    floor = torch.clamp(median * rel_floor, min=torch.finfo(std.dtype).tiny)
    tiny = std < floor
    if tiny.any():
        warnings.warn(
            f"{what}: {int(tiny.sum())} of {std.numel()} dimensions have std below "
            f"{float(floor):.3g} ({rel_floor:g} × median); raised to that floor",
            TinyStdWarning,
            stacklevel=3,
        )
    return torch.where(tiny, floor, std)


def module_names(root: Any) -> dict[int, str]:
    """``id(module) -> qualified name`` for a module (or the module behind a bound method)."""
    module = root if isinstance(root, nn.Module) else getattr(root, "__self__", None)
    if not isinstance(module, nn.Module):  # a method of a wrapper that holds the model (ZooModel.forward)
        module = getattr(module, "model", None)
    if not isinstance(module, nn.Module):
        return {}
    return {id(m): name for name, m in module.named_modules()}


class FeatureStats:
    """Streaming per-element mean/std of features, scikit-learn style (``fit`` returns self).

    Args:
        rel_floor: stds below ``rel_floor × median`` are raised to that floor (with a warning;
            the median leaves out dimensions that are numerically zero, see :func:`floor_std`).

    Attributes (after ``fit``): ``std_``, ``mean_`` (dicts name -> tensor), ``n_`` (sentences
    seen per name), ``meta_`` (free-form metadata, e.g. the model's name).
    """

    def __init__(self, rel_floor: float = 1e-3) -> None:
        if not rel_floor > 0:
            raise ValueError(f"rel_floor must be > 0, got {rel_floor!r}")
        self.rel_floor = rel_floor
        self.std_: dict[str, Tensor] = {}
        self.mean_: dict[str, Tensor] = {}
        self.n_: dict[str, int] = {}
        self.meta_: dict[str, Any] = {}
        self._ids: dict[int, str] = {}

    def fit(
        self,
        forward_func: Callable[..., Any],
        batches: Iterable[Tensor | Sequence[Any]],
        layers: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module | None] | None = None,
        mask_index: int | None = None,
        model_name: str | None = None,
    ) -> "FeatureStats":
        """Fit on ``batches`` (each a tensor or a tuple of ``forward_func``'s positional args).

        Args:
            layers: whose outputs to describe; ``None`` is the model output (name ``"output"``);
                modules are named as in ``forward_func.named_modules()``; a dict names them.
            mask_index: position in each batch tuple of an attention mask (B, T); padded
                tokens are left out of the token mean.
            model_name: stored in ``meta_`` and in saved files.
        """
        named = self._name_layers(forward_func, layers)
        count: dict[str, int] = {}
        mean: dict[str, Tensor] = {}
        m2: dict[str, Tensor] = {}
        for i, batch in enumerate(batches):
            args = (batch,) if isinstance(batch, Tensor) else tuple(batch)
            mask = self._mask(args, mask_index) if mask_index is not None else None
            feats = self._features(forward_func, args, named, f"FeatureStats.fit, batch {i}")
            for name, feat in feats.items():
                x = self._per_sentence(feat, mask).double()
                if not torch.isfinite(x).all():
                    raise ValueError(
                        f"FeatureStats.fit: the feature {name!r} is NaN or inf in a batch: the model produces "
                        "non-finite values on these inputs; check them and the weights (a float16 model that "
                        "overflows needs float32)"
                    )
                n_b, mu_b = x.shape[0], x.mean(0)
                m2_b = ((x - mu_b) ** 2).sum(0)
                if name not in count:
                    count[name], mean[name], m2[name] = n_b, mu_b, m2_b
                    continue
                n_a = count[name]
                delta = mu_b - mean[name]
                tot = n_a + n_b
                mean[name] = mean[name] + delta * n_b / tot
                m2[name] = m2[name] + m2_b + delta**2 * n_a * n_b / tot
                count[name] = tot
        if not count:
            raise ValueError("FeatureStats.fit got no batches")
        for name in count:
            if count[name] < 2:
                raise ValueError(f"FeatureStats needs at least 2 sentences, {name!r} saw {count[name]}")
            self.n_[name] = count[name]
            self.mean_[name] = mean[name].float()
            self.std_[name] = (m2[name] / (count[name] - 1)).sqrt().float()
        self.meta_.update({"model_name": model_name})
        return self

    def __getitem__(self, name: str) -> Tensor:
        """The floored std for ``name`` (raises ``KeyError`` naming what is there)."""
        if name not in self.std_:
            if not self.std_:
                raise KeyError(
                    f"no statistics for {name!r}: this FeatureStats is empty; call .fit(...) or "
                    "FeatureStats.load(path) first"
                )
            raise KeyError(f"no statistics for {name!r}; fitted: {sorted(self.std_)} (fit it with layers= naming it)")
        return floor_std(self.std_[name], self.rel_floor, what=f"FeatureStats[{name!r}]")

    def name_of(self, module: nn.Module | None, names: Mapping[int, str] | None = None) -> str:
        """The name under which ``module``'s statistics are kept (``None`` -> ``"output"``).

        ``names`` maps ``id(module)`` to a name (see :func:`module_names`), for statistics
        loaded from disk.
        """
        if module is None:
            return OUTPUT
        name = self._ids.get(id(module)) or (names or {}).get(id(module))
        if name is None or name not in self.std_:
            raise ValueError(
                "cannot tell which statistics belong to this target_layer; pass feature_std=stats[NAME] "
                f"with NAME one of {sorted(self.std_)}"
            )
        return name

    def save(self, path: str | os.PathLike) -> None:
        """Save to one safetensors file (tensors + JSON metadata), written atomically."""
        tensors = {f"std/{k}": v for k, v in self.std_.items()} | {f"mean/{k}": v for k, v in self.mean_.items()}
        meta = {"n": self.n_, "rel_floor": self.rel_floor, **self.meta_}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Load what :meth:`save` wrote."""
        what = "a FeatureStats file"
        tensors, meta = load_tensors(path, what)
        rel_floor, n = meta.pop("rel_floor", 1e-3), meta.pop("n", {})
        if isinstance(rel_floor, bool) or not isinstance(rel_floor, (int, float)) or not rel_floor > 0:
            raise bad_file(path, what, f"its rel_floor is {rel_floor!r}, not a positive number")
        if not isinstance(n, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in n.values()):
            raise bad_file(path, what, f"its sentence counts 'n' are {n!r:.80}, not a dict of ints")
        wrong = [k for k in tensors if k.split("/", 1)[0] not in ("std", "mean") or "/" not in k]
        if wrong or not tensors:
            raise bad_file(path, what, f"its tensors are {sorted(tensors)[:8]}, not 'std/NAME' and 'mean/NAME'")
        stats = cls(rel_floor=rel_floor)
        stats.n_ = dict(n)
        stats.meta_ = meta
        for key, val in tensors.items():
            kind, name = key.split("/", 1)
            if not val.is_floating_point():
                raise bad_file(path, what, f"{key} is {val.dtype}, not floating point")
            (stats.std_ if kind == "std" else stats.mean_)[name] = val
        return stats

    # -- helpers ---------------------------------------------------------------------------

    def _name_layers(self, forward_func: Any, layers: Any) -> dict[str, nn.Module | None]:
        if layers is None:
            named: dict[str, nn.Module | None] = {OUTPUT: None}
        elif isinstance(layers, Mapping):
            named = dict(layers)
        else:
            mods = [layers] if isinstance(layers, nn.Module) else list(layers)
            ids = module_names(forward_func)
            named = {ids.get(id(m), f"layer{i}"): m for i, m in enumerate(mods)}
        self._ids.update({id(m): n for n, m in named.items() if m is not None})
        return named

    @staticmethod
    def _features(forward_func: Any, args: tuple, named: dict[str, nn.Module | None], where: str) -> dict[str, Tensor]:
        """The batch's features; token ids are checked before every ``nn.Embedding`` lookup and a
        forward that fails on too many tokens is explained, as in the attribution's clean pass."""
        store: dict[str, Tensor] = {}
        modules = {n: (m, False) for n, m in named.items() if m is not None}
        want_output = len(modules) < len(named)
        ids = args[0] if args else None
        watch = IdsWatch(ids.shape[1] if isinstance(ids, Tensor) and ids.dim() >= 2 else None)
        try:
            with torch.no_grad(), no_dropout(), capture_all(modules, store, stop=not want_output), on_module_start(watch):
                out = stoppable(lambda: forward_func(*args))
        except Exception as err:
            explained = err if getattr(err, "_captum_entropy", False) else watch.length_error(ids)
            if explained is None:
                raise
            raise type(explained)(f"{where}: {explained}") from (None if explained is err else err)
        missing = [n for n in modules if n not in store]
        if missing:
            raise ValueError(
                f"layers {missing} were never called by forward_func: pass modules that the model runs "
                "(not copies, or modules of another instance of the model)"
            )
        if want_output:
            store[OUTPUT] = first_tensor(out)
        return store

    @staticmethod
    def _mask(args: tuple, mask_index: int) -> Tensor:
        if not (-len(args) <= mask_index < len(args)) or not isinstance(args[mask_index], Tensor):
            raise ValueError(
                f"mask_index={mask_index} does not point at a tensor in a batch of {len(args)} item(s): it is the "
                "position of the attention mask in each batch tuple, e.g. 1 for (input_ids, attention_mask)"
            )
        m = args[mask_index]
        if m.is_complex() or not ((m == 0) | (m == 1)).all():
            raise ValueError(
                f"batch[{mask_index}] is not a 0/1 attention mask (it has values up to {float(m.abs().max()):g}): "
                "mask_index must point at the attention mask in each batch tuple, e.g. 1 for "
                "(input_ids, attention_mask)"
            )
        return m.bool()

    @staticmethod
    def _per_sentence(feat: Tensor, mask: Tensor | None) -> Tensor:
        feat = feat.float()
        if feat.dim() >= 3:
            if mask is not None and mask.shape == feat.shape[:2]:
                w = mask.to(feat.dtype).reshape(*mask.shape, *([1] * (feat.dim() - 2)))
                return (feat * w).sum(1) / w.sum(1).clamp_min(1)
            return feat.mean(1)
        return feat if feat.dim() == 2 else feat[:, None]

