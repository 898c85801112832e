"""One check for "the model is untouched and no hook is left", shared by the tests.

``snapshot(*models)`` records, for every model: which module sits under each name, every
parameter (the same object, its value, dtype, device, ``requires_grad`` and ``.grad``), every
buffer, the ``training`` flag of every module, and every hook dict of every module and parameter
(forward, forward-pre, backward, backward-pre, their ``*_with_kwargs`` / ``*_always_called``
companions, state-dict hooks: each dict attribute whose name holds "hook"), plus torch's global
module hooks. ``Snapshot.assert_unchanged()`` then fails, naming each difference, if anything
differs: weights must be equal bit for bit (NaN where there was NaN), hook dicts must hold the very
same hooks (none added, none removed).

``hooks_on(*models)`` lists the hooks present now, for tests that also demand none at all.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def same_tensor(a: Tensor | None, b: Tensor | None) -> bool:
    """Exactly equal: same dtype, shape and device, equal values, NaN in the same places."""
    if a is None or b is None:
        return a is None and b is None
    if (a.dtype, a.shape, a.device) != (b.dtype, b.shape, b.device):
        return False
    if a.is_floating_point() or a.is_complex():
        nan = a.isnan()
        return torch.equal(nan, b.isnan()) and torch.equal(a.masked_fill(nan, 0), b.masked_fill(nan, 0))
    return torch.equal(a, b)


def _module_hooks(module: nn.Module) -> dict[str, dict]:
    """Every hook dict of one module, copied (its keys are the handles' ids, its values the hooks)."""
    return {attr: dict(value) for attr, value in vars(module).items() if "hook" in attr and isinstance(value, dict)}


def _tensor_hooks(tensor: Tensor) -> dict[str, dict]:
    return {attr: dict(getattr(tensor, attr, None) or {}) for attr in TENSOR_HOOKS}


def _global_hooks() -> dict[str, dict]:
    """torch's global module hooks (``register_module_forward_hook`` and friends), copied."""
    return {name: dict(value) for name, value in vars(torch_module).items()
            if name.startswith("_global_") and "hook" in name and isinstance(value, dict)}


def hooks_on(*models: nn.Module) -> dict[str, int]:
    """``{"model<i>.<module>.<hook dict>": count}`` for every non-empty hook dict of every module and
    parameter of ``models``; ``{}`` when there is none."""
    left = {}
    for i, model in enumerate(models):
        for name, module in model.named_modules(remove_duplicate=False):
            for attr, hooks in _module_hooks(module).items():
                if hooks:
                    left[f"model{i}.{name or '(root)'}.{attr}"] = len(hooks)
        for name, param in model.named_parameters(remove_duplicate=False):
            for attr, hooks in _tensor_hooks(param).items():
                if hooks:
                    left[f"model{i}.{name}.{attr}"] = len(hooks)
    return left


class _ModelState:
    """Everything about one model that a call must leave as it was."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = list(model.named_modules(remove_duplicate=False))
        self.params = list(model.named_parameters(remove_duplicate=False))
        self.values = {n: p.detach().clone() for n, p in self.params}
        self.grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in self.params}
        self.requires_grad = {n: p.requires_grad for n, p in self.params}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers(remove_duplicate=False)}
        self.state_keys = list(model.state_dict().keys())
        self.training = {n: m.training for n, m in self.modules}
        self.module_hooks = {n: _module_hooks(m) for n, m in self.modules}
        self.param_hooks = {n: _tensor_hooks(p) for n, p in self.params}

    def differences(self, label: str) -> list[str]:
        """What differs between ``self.model`` now and when this state was taken."""
        now = _ModelState(self.model)
        out: list[str] = []

        def names(what: str, a: dict | list, b: dict | list) -> bool:
            same = list(a) == list(b)
            if not same:
                out.append(f"{label}: the {what} changed: {sorted(set(a) ^ set(b))[:5] or 'their order'}")
            return same

        if names("modules", [n for n, _ in self.modules], [n for n, _ in now.modules]):
            out += [f"{label}: module {n or '(root)'} was replaced"
                    for (n, m), (_, m2) in zip(self.modules, now.modules) if m is not m2]
        if names("parameters", self.values, now.values):
            out += [f"{label}: parameter {n} was replaced" for (n, p), (_, p2) in zip(self.params, now.params) if p is not p2]
            out += [f"{label}: weights changed: {n}" for n in self.values if not same_tensor(self.values[n], now.values[n])]
            out += [f"{label}: {n}.grad changed" for n in self.grads if not same_tensor(self.grads[n], now.grads[n])]
            out += [f"{label}: {n}.requires_grad changed" for n in self.requires_grad
                    if self.requires_grad[n] != now.requires_grad[n]]
            out += [f"{label}: hooks on parameter {n} changed: {self.param_hooks[n]} -> {now.param_hooks[n]}"
                    for n in self.param_hooks if self.param_hooks[n] != now.param_hooks[n]]
        if names("buffers", self.buffers, now.buffers):
            out += [f"{label}: buffer {n} changed" for n in self.buffers if not same_tensor(self.buffers[n], now.buffers[n])]
        names("state_dict keys", self.state_keys, now.state_keys)
        out += [f"{label}: training flag of {n or '(root)'} changed" for n in self.training
                if n in now.training and self.training[n] != now.training[n]]
        for n, hooks in self.module_hooks.items():
            for attr in sorted(set(hooks) | set(now.module_hooks.get(n, {}))):
                then, after = hooks.get(attr, {}), now.module_hooks.get(n, {}).get(attr, {})
                if then != after:
                    out.append(f"{label}: {n or '(root)'}.{attr} held {len(then)} hook(s), now {len(after)}"
                               + ("" if len(then) != len(after) else " (different ones)"))
        return out


class Snapshot:
    """The state of some models (and torch's global hooks) at one moment; see the module docstring."""

    def __init__(self, models: tuple[nn.Module, ...]) -> None:
        self.models = models
        self._states = [_ModelState(m) for m in models]
        self._global_hooks = _global_hooks()

    def differences(self) -> list[str]:
        """Every difference between now and the moment of the snapshot (empty: untouched)."""
        out = [d for i, state in enumerate(self._states) for d in state.differences(f"model {i} ({type(state.model).__name__})")]
        now = _global_hooks()
        out += [f"global {name} held {len(self._global_hooks.get(name, {}))} hook(s), now {len(now.get(name, {}))}"
                for name in sorted(set(now) | set(self._global_hooks)) if now.get(name, {}) != self._global_hooks.get(name, {})]
        return out

    def assert_unchanged(self) -> None:
        """Fail, naming every difference, unless the models and the global hooks are as they were."""
        diffs = self.differences()
        assert not diffs, "the model was touched:\n" + "\n".join(diffs)


def snapshot(*models: nn.Module) -> Snapshot:
    """Record ``models`` (and torch's global hooks) now; call ``.assert_unchanged()`` after the call."""
    return Snapshot(models)


