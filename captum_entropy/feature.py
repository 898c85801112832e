"""The model side of an explanation: run the model with the layer replaced, and the feature to keep.

:class:`ModelRunner` runs ``forward_func`` on chosen rows with the layer's value replaced and a
feature captured; :class:`Feature` selects, normalises and masks that feature; the helpers find
the padding, the σ cap and each sentence's seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from captum._utils.common import _select_targets
from torch import Tensor, nn

from .checks import CleanWatch, explain_failure
from .errors import NotComparableWarning
from .hooks import capture, capture_all, first_tensor, on_module_start, replace, stoppable
from .settings import MAX_SIGMA_FACTOR, Settings
from ._names import OUTPUT
from .stats import FeatureStats, floor_std


def format_inputs(inputs: Any) -> tuple[Tensor, ...]:
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs) if isinstance(inputs, (tuple, list)) else None
    if not args or not all(isinstance(a, Tensor) for a in args):
        raise TypeError("inputs must be a tensor or a non-empty tuple of tensors (batch first)")
    return args


def _take_rows(obj: Any, rows: Tensor, batch: int) -> Any:
    """Index every tensor whose first dimension is the batch with ``rows``; leave the rest."""
    if isinstance(obj, Tensor):
        return obj[rows.to(obj.device)] if obj.dim() > 0 and obj.shape[0] == batch else obj
    if isinstance(obj, tuple):
        return tuple(_take_rows(o, rows, batch) for o in obj)
    if isinstance(obj, list):
        return [_take_rows(o, rows, batch) for o in obj]
    if isinstance(obj, dict):
        return {k: _take_rows(v, rows, batch) for k, v in obj.items()}
    return obj


def _target_rows(target: Any, rows: Tensor) -> Any:
    if isinstance(target, Tensor) and target.numel() > 1:
        return target[rows.to(target.device)]
    if isinstance(target, list):
        return [target[r] for r in rows.tolist()]
    return target


class ModelRunner:
    """Runs ``forward_func`` on chosen rows, with the layer's value replaced and a feature captured."""

    def __init__(self, forward_func, layer, on_input, args, extra, batch, amp):
        self.forward_func, self.layer, self.on_input = forward_func, layer, on_input
        self.args, self.extra, self.batch, self.amp = args, extra, batch, amp

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if device.type in ("cuda", "cpu") else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def clean(self, targets: list[nn.Module | None]) -> tuple[Tensor, list[Tensor]]:
        """One forward without noise: the layer's values and every target feature.

        A watcher sees every module start: it checks the token ids of every ``nn.Embedding``,
        counts the calls of ``layer`` and of each target, and ends the forward (when the model
        output is not needed) at the first module that starts after every target has run and
        does not contain one, so a target that is called again (a shared module) is caught.
        An error from inside the model is explained where the cause is recognised (inputs
        longer than the model accepts, ``amp`` on a half-precision model, ...)."""
        store: dict[Any, Tensor] = {}
        want = {"layer": (self.layer, self.on_input)}
        want.update({i: (m, False) for i, m in enumerate(targets) if m is not None})
        need_output = any(m is None for m in targets)
        tokens = self.args[0].shape[1] if self.args[0].dim() >= 2 else None
        watch = CleanWatch(self.layer, targets, want, store, stop=not need_output, tokens=tokens)
        try:
            with torch.no_grad(), self._autocast(self.args[0].device), capture_all(want, store), on_module_start(watch):
                out = stoppable(lambda: self.forward_func(*self.args, *self.extra))
        except Exception as err:
            if getattr(err, "_captum_entropy", False):
                raise
            explained = explain_failure(self, watch, store)
            if explained is None:
                raise
            raise explained from err
        if watch.layer_calls > 1:
            raise ValueError(
                f"layer ({type(self.layer).__name__}) is called {watch.layer_calls} times per forward (a shared or "
                "tied module): the noise would go on every call; pick a module that runs once per forward, or give "
                "each use its own module"
            )
        for i, m in enumerate(targets):
            if m is not None and watch.target_calls.get(id(m), 0) > 1:
                raise ValueError(
                    f"target_layer[{i}] ({type(m).__name__}) is called more than once per forward (a shared module, "
                    "e.g. ALBERT's shared layer or one activation module used twice), so it is not clear which call "
                    "is the feature; pick a module that runs once per forward (wrap the call you mean in its own "
                    "nn.Module), or explain the model output (target_layer=None)"
                )
        if "layer" not in store:
            raise ValueError(
                "layer was never called by forward_func: pass a module that the model runs "
                "(e.g. model.bert.embeddings or the nn.Embedding), not a copy or an unused module"
            )
        order = list(store)
        for i, m in enumerate(targets):
            if m is None:
                continue
            if i not in store:
                raise ValueError(
                    f"target_layer[{i}] ({type(m).__name__}) was never called by forward_func: pass a module "
                    "that the model runs (e.g. model.bert.encoder.layer[2]), not a copy (copy.deepcopy, another "
                    "instance of the model) or an unused module"
                )
            if order.index(i) < order.index("layer"):
                raise ValueError(
                    f"target_layer[{i}] ({type(m).__name__}) runs before layer, so it cannot depend on it: pick a "
                    "target_layer deeper in the model than layer (or a layer closer to the input)"
                )
        values = store["layer"].detach()
        self.layer_tail = tuple(values.shape[1:])
        if not values.is_floating_point():
            raise TypeError(self.not_float(values.dtype))
        if values.dim() < 2 or values.shape[0] != self.batch:
            raise ValueError(f"the layer's value has shape {tuple(values.shape)}; expected (batch={self.batch}, tokens, ...)")
        if not torch.isfinite(values).all():
            bad = (~torch.isfinite(values)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(
                f"the layer's {'input' if self.on_input else 'output'} contains NaN or inf for sentence(s) {bad[:10]} "
                "before any noise is added: check those inputs (NaN/inf in input embeddings?) and the model's "
                "weights (torch.isfinite(p).all() for p in model.parameters()); a float16 model that overflows "
                "needs float32"
            )
        feats = [first_tensor(out).detach() if m is None else store[i].detach() for i, m in enumerate(targets)]
        return values, feats

    def not_float(self, dtype: torch.dtype) -> str:
        return (
            f"the layer's {'input' if self.on_input else 'output'} is {dtype}, not floating point: "
            "noise needs embeddings (e.g. the nn.Embedding's output, not its input ids); if the model takes "
            "embeddings, pass them as a float tensor (integer and float inputs mixed up?)"
        )

    def ignores(self, mask: Tensor, values: Tensor, targets: list[nn.Module | None], clean: list[Tensor]) -> bool:
        """Does the model ignore the positions where ``mask`` is False? Large noise goes on the layer's
        value there (one forward); every target feature must stay unchanged on the real positions."""
        gen = torch.Generator(device=values.device).manual_seed(0)
        scale = 10 * float(values.float().std()) + 1.0
        noise = torch.randn(values.shape, generator=gen, device=values.device, dtype=values.dtype) * scale
        pad = (~mask).reshape(*mask.shape, *([1] * (values.dim() - 2)))
        store: dict[Any, Tensor] = {}
        want = {i: (m, False) for i, m in enumerate(targets) if m is not None}
        with torch.no_grad(), self._autocast(values.device), capture_all(want, store, stop=None not in targets):
            with replace(self.layer, lambda v: torch.where(pad, values + noise, values).to(v.dtype), self.on_input):
                out = stoppable(lambda: self.forward_func(*self.args, *self.extra))
        for i, (m, before) in enumerate(zip(targets, clean)):
            after = first_tensor(out) if m is None else store[i]
            if after.shape != before.shape:
                return False
            if after.dim() >= 2 and after.shape[:2] == mask.shape:  # per-token: the real positions only
                after, before = after[mask], before[mask]
            if not ((after - before).abs().max() <= 1e-4 * before.abs().max().clamp_min(1e-12)):
                return False
        return True

    def feature(self, x: Tensor, rows: Tensor, module: nn.Module | None) -> Tensor:
        """Raw feature of ``rows`` when the layer's value is replaced by ``x``."""
        args = _take_rows(self.args, rows, self.batch)
        extra = _take_rows(self.extra, rows, self.batch)

        def inject(v: Tensor) -> Tensor:
            if v.shape != x.shape:
                raise ValueError(
                    f"the layer produced shape {tuple(v.shape)} where {tuple(x.shape)} was expected; "
                    "is it called more than once per forward, or on inputs of another batch size?"
                )
            return x.to(v.dtype)

        store: dict[str, Tensor] = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._autocast(x.device))
            stack.enter_context(replace(self.layer, inject, on_input=self.on_input))
            if module is not None:
                stack.enter_context(capture(module, store, "f", stop=True))
            out = stoppable(lambda: self.forward_func(*args, *extra))
        return store["f"] if module is not None else first_tensor(out)


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
            f"target {_short(target)} does not select from a feature of shape {shape}: {str(err).rstrip('.!')}. "
            f"Pass {valid}, or one such target per sentence (a list of {shape[0]}, or a ({shape[0]},) tensor "
            "of ints), or None for the "
            "whole feature"
        ) from None


def _short(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"tensor of shape {tuple(obj.shape)} and dtype {str(obj.dtype).removeprefix('torch.')}"
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


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


def token_mask(
    cfg: Settings, args: tuple[Tensor, ...], extra: tuple, values3: Tensor, verify: Callable[[Tensor], bool]
) -> tuple[Tensor, str]:
    """The (B, T) mask of real tokens and where it came from.

    ``mask=`` or ``pad_token_id=`` when given; otherwise an attention mask found among the other
    inputs and ``additional_forward_args`` (Captum's habit: it travels with the inputs, so wrappers
    that repeat the batch keep it aligned), accepted only if ``verify`` shows that the model
    ignores the positions it marks as padding. Without one, every position is a real token.
    """
    batch, tokens = values3.shape[:2]
    if cfg.mask is not None:
        mask = torch.as_tensor(cfg.mask, device=values3.device)
        if mask.dim() == 2 and mask.shape[1] == tokens and mask.shape[0] != batch and batch % mask.shape[0] == 0:
            raise ValueError(
                f"mask has {mask.shape[0]} rows but the inputs {batch}: a wrapper (NoiseTunnel, sensitivity_max, "
                "...) repeated the batch and cannot repeat mask= with it; pass the attention mask in "
                "additional_forward_args instead (it is detected there and travels with the inputs)"
            )
        if mask.shape != (batch, tokens):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (batch, tokens) = {(batch, tokens)}")
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            odd = sorted({float(v) for v in mask[(mask != 0) & (mask != 1)].flatten()[:5].tolist()})
            raise ValueError(
                f"mask must hold 0/1 (or booleans), but it has values such as {odd}: pass the attention mask "
                "(1 = real token, 0 = padding), not the token ids or a float weighting"
            )
        mask, source = mask.bool(), "mask"
    elif cfg.pad_token_id is not None:
        if args[0].shape[:2] != (batch, tokens) or args[0].is_floating_point():
            raise ValueError("pad_token_id needs inputs[0] to be token ids of shape (batch, tokens); pass mask instead")
        mask, source = (args[0] != cfg.pad_token_id).to(values3.device), "pad_token_id"
    else:
        mask, source = torch.ones((batch, tokens), dtype=torch.bool, device=values3.device), "none"
        for where, candidate in _mask_candidates(args, extra, batch, tokens):
            empty = (~candidate.any(1)).nonzero().flatten().tolist()
            probe = candidate.clone()
            probe[empty] = True  # verify on the other rows; an all-padding row is an error below
            if probe.all():
                continue
            if verify(probe.to(values3.device)):
                if empty:
                    raise ValueError(
                        f"sentence(s) {empty[:10]} are all padding ({where}, the attention mask, is 0 on every "
                        "position): remove them from the batch"
                    )
                mask, source = candidate.to(values3.device), f"detected: {where}"
                break
    empty = (~mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"sentence(s) {empty[:10]} are all padding; remove them from the batch")
    return mask, source


def _mask_candidates(args: tuple[Tensor, ...], extra: tuple, batch: int, tokens: int) -> list[tuple[str, Tensor]]:
    """Tensors that look like an attention mask: (batch, tokens), 0/1, padding at one end of every row.

    A keyword named ``attention_mask`` (in a dict of ``additional_forward_args``) comes first.
    """
    found: list[tuple[int, str, Tensor]] = []
    named = [(f"inputs[{i}]", a) for i, a in enumerate(args) if i > 0]
    for i, a in enumerate(extra):
        if isinstance(a, Mapping):
            named += [(f"additional_forward_args[{i}][{k!r}]", v) for k, v in a.items()]
        else:
            named.append((f"additional_forward_args[{i}]", a))
    for where, t in named:
        if not isinstance(t, Tensor) or t.shape != (batch, tokens) or t.is_complex():
            continue
        m = t.detach()
        if not ((m == 0) | (m == 1)).all():
            continue
        m = m.bool()
        if m.all() or not m.any():
            continue
        right = (m[:, :-1] >= m[:, 1:]).all()  # ones, then padding
        left = (m[:, :-1] <= m[:, 1:]).all()  # padding, then ones
        if right or left:
            found.append((0 if "attention_mask" in where else 1, where, m))
    return [(w, m) for _, w, m in sorted(found, key=lambda x: x[0])]


def max_sigma(cfg: Settings, layer: nn.Module, on_input: bool, values3: Tensor, mask: Tensor) -> Tensor:
    batch = values3.shape[0]
    if cfg.max_sigma is not None:
        try:
            cap = torch.as_tensor(cfg.max_sigma, dtype=torch.float32, device=values3.device).expand(batch).clone()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"max_sigma must be a positive number or a ({batch},) tensor (one cap per sentence), got "
                f"{_short(cfg.max_sigma)}"
            ) from None
    elif isinstance(layer, nn.Embedding) and not on_input:
        cap = torch.full((batch,), MAX_SIGMA_FACTOR * float(layer.weight.detach().float().std()), device=values3.device)
    else:
        # 10 × the spread of the sentence's layer values (their root mean square if they are all
        # equal, e.g. a ReLU's output that is all zero but one constant)
        v = values3.float()
        scale = []
        for b in range(batch):
            real = v[b][mask[b]]
            std = real.std(unbiased=False)
            scale.append(std if std > 0 else real.pow(2).mean().sqrt())
        cap = MAX_SIGMA_FACTOR * torch.stack(scale)
        zero = (cap == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(
                f"the layer's value is all zeros for sentence(s) {zero[:10]}, so it gives no scale for the default "
                "cap on σ (10 × the std of the sentence's layer values): pass max_sigma="
            )
    if not (torch.isfinite(cap).all() and (cap > 0).all()):
        raise ValueError(
            f"max_sigma must be finite and positive, got {cap.tolist()[:10]}: pass a positive number (the largest "
            "noise std, in the layer's units), or leave it None for the default cap"
        )
    return cap


def sentence_seeds(args: tuple[Tensor, ...], mask: Tensor, seed: int) -> list[int]:
    """One seed per sentence from the run's seed and the sentence's own content (not its position)."""
    seeds = []
    for b in range(mask.shape[0]):
        h = hashlib.blake2b(str(int(seed)).encode(), digest_size=8)
        for a in args:
            row = a[b]
            if row.dim() >= 1 and row.shape[0] == mask.shape[1]:
                row = row[mask[b].to(row.device)]
            h.update(row.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        seeds.append(int.from_bytes(h.digest(), "little") & ((1 << 63) - 1))
    return seeds
