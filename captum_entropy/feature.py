"""The feature to keep: :class:`Feature` selects the Captum target, resolves σ_S, masks padding
out of per-token features and normalises (the mean squared change in units of σ_S).

The rest of the model side lives beside it and is importable from here too: the model runner
(:mod:`.model_runner`), the padding mask (:mod:`.padding`), the σ cap (:mod:`.sigma_cap`) and
each sentence's seed (:mod:`.seeds`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from captum._utils.common import _select_targets
from torch import Tensor, nn

from ._describe import short
from .errors import NotComparableWarning
from .model_runner import ModelRunner, format_inputs
from ._names import OUTPUT
from .padding import token_mask
from .seeds import sentence_seeds
from .sigma_cap import max_sigma
from .stats import FeatureStats, floor_std

__all__ = ["Feature", "ModelRunner", "format_inputs", "max_sigma", "sentence_seeds", "token_mask"]


@dataclass
class Feature:
    """One feature to preserve: how to select, normalise and mask it."""

    module: nn.Module | None
    name: str
    target: Any
    denom: Tensor  # (B, *feature) normaliser of the selected feature
    fmask: Tensor  # (B, *feature) 1 for elements in the loss, 0 for padding
    clean: Tensor  # (B, M) normalised clean feature
    shape: tuple[int, ...]
    per_token: bool  # the feature has a token axis (padding is masked out of it)

    @classmethod
    def build(cls, module, raw, target, cfg, idx, mask, names, n_targets: int | None = None) -> "Feature":
        name = OUTPUT if module is None else names.get(id(module), f"target_layer[{idx}]")
        if module is not None and raw.dim() >= 3 and raw.shape[1] == mask.shape[1] and _is_index(target):
            raise ValueError(
                f"target={target!r} with target_layer={name} (output shape {tuple(raw.shape)}) is ambiguous: "
                f"Captum reads it as index {target!r} along dim 1 of that output, i.e. a token position, not a "
                "class. To explain a class of the model output, use target_layer=None with this target; to "
                "select token positions of the layer, pass tuples, e.g. target=(3,)"
            )
        feat = _as_2d(_select(raw, target))
        feat = feat.to(torch.promote_types(feat.dtype, torch.float32))
        if feat.shape[0] != mask.shape[0]:
            raise ValueError(f"the feature has batch size {feat.shape[0]}, the inputs {mask.shape[0]}")
        fmask = torch.ones_like(feat)
        per_token = feat.dim() >= 3 and feat.shape[1] == mask.shape[1]
        if per_token:  # per-token feature: drop padding
            fmask = fmask * mask.reshape(*mask.shape, *([1] * (feat.dim() - 2))).to(feat.dtype)
        bad = (~torch.isfinite(feat) & (fmask > 0)).flatten(1).any(1)
        if bad.any():
            raise ValueError(
                f"the feature {name} is NaN or inf for sentence(s) {bad.nonzero().flatten().tolist()[:10]} before any "
                "noise is added: the model itself produces non-finite values on these inputs; check the inputs and "
                "the weights (a float16 model that overflows needs float32)"
            )
        std = _resolve_std(cfg.feature_std, module, idx, raw, target, names, n_targets)
        given = std is not None
        if std is None:
            warnings.warn(
                "feature_std not given: each sentence's feature is divided by its own root mean square "
                "(as in the authors' code), so entropies are not comparable across sentences, layers or "
                "models; fit FeatureStats and pass feature_std=",
                NotComparableWarning,
                stacklevel=4,
            )
            ms = (feat.pow(2) * fmask).flatten(1).sum(1) / fmask.flatten(1).sum(1)
            if not (ms > 0).all():
                raise ValueError("the feature is all zeros for some sentence; pass feature_std")
            std = ms.sqrt().reshape(-1, *([1] * (feat.dim() - 1))).expand_as(feat)
        # D = mean over the sentence's feature elements of the squared change in units of σ_S
        count = fmask.flatten(1).sum(1)
        denom = std * count.sqrt().reshape(-1, *([1] * (feat.dim() - 1)))
        clean = (feat / denom * fmask).flatten(1)
        limit = torch.finfo(clean.dtype).max ** 0.4  # float32: 2.6e15; squared changes must not overflow
        if given and not bool(clean.abs().max() <= limit):
            raise ValueError(
                f"feature_std is too small for the feature {name}: it goes down to {float(std.min()):.3g} while the "
                f"feature reaches {float(feat.abs().max()):.3g}, so the normalised feature reaches "
                f"{float(clean.abs().max()):.3g} and its squared change overflows "
                f"{str(clean.dtype).removeprefix('torch.')}. "
                "A dimension that barely varies over data needs a floor: raise the smallest entries (e.g. "
                "feature_std.clamp_min(1e-3 * feature_std.max())), or fit FeatureStats on more varied sentences"
            )
        return cls(module, name, target, denom, fmask, clean, tuple(feat.shape[1:]), per_token)

    def feature(self, run: ModelRunner, x: Tensor, rows: Tensor) -> Tensor:
        raw = run.feature(x.reshape(len(rows), *run.layer_tail), rows, self.module)
        feat = _as_2d(_select(raw, _target_rows(self.target, rows)))
        return (feat.to(self.denom.dtype) / self.denom[rows] * self.fmask[rows]).flatten(1)


def _target_rows(target: Any, rows: Tensor) -> Any:
    if isinstance(target, Tensor) and target.numel() > 1:
        return target[rows.to(target.device)]
    if isinstance(target, list):
        return [target[r] for r in rows.tolist()]
    return target


def _is_index(target: Any) -> bool:
    """An int target (or one int per row): Captum's position along dim 1 of the feature."""
    if isinstance(target, bool):
        return False
    if isinstance(target, int):
        return True
    if isinstance(target, Tensor):
        return not target.is_floating_point() and target.dim() <= 1
    return isinstance(target, list) and bool(target) and all(isinstance(t, int) for t in target)


def _as_2d(feat: Tensor) -> Tensor:
    """A scalar feature per sentence (B,) becomes (B, 1): one element, width 1."""
    return feat[:, None] if feat.dim() == 1 else feat


def _select(raw: Tensor, target: Any) -> Tensor:
    try:
        return _select_targets(raw, target)
    except (IndexError, AssertionError, RuntimeError) as err:
        shape = tuple(raw.shape)
        if len(shape) == 2:
            valid = f"an int class index in [0, {shape[1]})"
        else:
            valid = f"a tuple of {len(shape) - 1} indices into the dimensions {shape[1:]} after the batch"
        raise ValueError(
            f"target {short(target)} does not select from a feature of shape {shape}: {str(err).rstrip('.!')}. "
            f"Pass {valid}, or one such target per sentence (a list of {shape[0]}, or a ({shape[0]},) tensor "
            "of ints), or None for the "
            "whole feature"
        ) from None


def _resolve_std(feature_std, module, idx, raw, target, names, n_targets=None) -> Tensor | None:
    std = feature_std
    if isinstance(std, (list, tuple)):
        if n_targets is not None and len(std) != n_targets:
            raise ValueError(
                f"feature_std is a list of {len(std)} but there "
                f"{'is 1 target layer' if n_targets == 1 else f'are {n_targets} target layers'}: "
                "a list gives one std per target layer; for per-element stds of one feature pass a tensor "
                "(torch.tensor([...]))"
            )
        std = std[idx]
    if isinstance(std, FeatureStats):
        std = std[std.name_of(module, names)]
    elif isinstance(std, Mapping):
        key = module if module in std else (OUTPUT if module is None else names.get(id(module)))
        if key not in std:
            keys = sorted(k if isinstance(k, str) else type(k).__name__ for k in std)
            raise ValueError(
                f"feature_std has no entry for {OUTPUT if module is None else key!r} (its keys: {keys}): key it by "
                f"the target module or its name, {OUTPUT!r} for the model output"
            )
        std = std[key]
    if std is None:
        return None
    dtype = torch.promote_types(raw.dtype, torch.float32)
    try:
        std = torch.as_tensor(std, device=raw.device).to(dtype)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"feature_std must be a tensor (or number), a FeatureStats, a dict keyed by target module or name, "
            f"or a list with one per target layer; got {type(std).__name__}"
        ) from None
    if not torch.isfinite(std).all() or (std <= 0).any():
        bad = int((~torch.isfinite(std) | (std <= 0)).sum())
        raise ValueError(
            f"feature_std must be finite and positive everywhere (it divides the distortion); {bad} of "
            f"{std.numel()} entries are zero, negative, NaN or inf: pass the std of the feature over data "
            "(FeatureStats().fit(...) floors tiny entries), or clamp it, e.g. feature_std.clamp_min(1e-6)"
        )
    try:
        full = std.expand(raw.shape[1:]) if std.dim() <= raw.dim() - 1 else None
    except RuntimeError:
        full = None
    if full is None:
        raise ValueError(
            f"feature_std of shape {tuple(std.shape)} does not broadcast to the feature's shape "
            f"{tuple(raw.shape[1:])} (per sentence, before target selection): pass one std per element of "
            f"that shape, or one that broadcasts to it (e.g. ({raw.shape[-1]},) for the last dimension); "
            "FeatureStats fitted on the same layer has the right shape"
        )
    std = floor_std(std, 1e-3)
    return _as_2d(_select(std.expand(raw.shape), target)).to(dtype)
