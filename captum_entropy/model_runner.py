"""The model, run for an explanation: ``forward_func`` on chosen rows with the layer's value replaced
and a feature captured (:class:`ModelRunner`), on inputs in Captum's format."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from .checks import CleanWatch, explain_failure
from .hooks import capture, capture_all, first_tensor, on_module_start, replace, stoppable


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
